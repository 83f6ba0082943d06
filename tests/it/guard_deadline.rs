//! A `tractatus lock run` that stops being scheduled (SIGSTOP here; a debugger, a starved
//! machine) while its command runs on: the command's guard holds the lease's deadline and ends
//! the command before the lease runs out, so a holder on another host, granted once it has run
//! out, never writes beside it. Both commands append "<who> <ns since epoch>" lines to one log.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;

use crate::support::{Guard, RedisServer, Repo, run, signal, tractatus, wait_until};

/// The holder's command: a line every 100 ms, until stopped.
const OLD: &str = r#"while :; do echo "old $(date +%s%N)" >> "$1"; sleep 0.1; done"#;

/// The next holder's command: two lines, 0.3 s apart.
const NEW: &str =
    r#"echo "new $(date +%s%N)" >> "$1"; sleep 0.3; echo "new $(date +%s%N)" >> "$1""#;

/// The log's lines in file order: (who, ns since epoch).
fn lines(log: &std::path::Path) -> Vec<(String, u128)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (who, ns) = l.split_once(' ')?;
            Some((who.to_owned(), ns.parse().ok()?))
        })
        .collect()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn a_stopped_tractatus_has_its_command_ended_by_the_guard_before_another_host_takes_the_lock() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let log = repo.file("log");
    let mut holder = Guard(
        tractatus(&repo.path())
            .args(["--redis", &redis.url(), "--ttl", "1s"])
            .args(["lock", "run", "--name", "P", "--", "sh", "-c", OLD, "sh"])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "the command writes", || {
        lines(&log).len() >= 3
    });
    // Stopped: it renews no more, and tells its command's guard nothing more.
    signal(holder.0.id(), Signal::SIGSTOP);
    let stopped = now_ns();
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_HOST", "another-host")
        .args(["--redis", &redis.url(), "--wait", "20s"])
        .args(["lock", "run", "--name", "P", "--", "sh", "-c", NEW, "sh"])
        .arg(&log));
    assert_eq!(r.code, 0, "{}", r.stderr);

    let all = lines(&log);
    let first_new = all.iter().position(|(who, _)| who == "new").unwrap();
    let old_after = all[first_new..]
        .iter()
        .filter(|(who, _)| who == "old")
        .count();
    let last_old = all
        .iter()
        .filter(|(w, _)| w == "old")
        .map(|l| l.1)
        .max()
        .unwrap();
    let new_at = all[first_new].1;
    let ms = |ns: u128| ns.saturating_sub(stopped) as f64 / 1e6;
    println!(
        "after the SIGSTOP: the old command last wrote at +{:.0} ms, the new holder first wrote \
         at +{:.0} ms; {old_after} old lines after the new holder's first",
        ms(last_old),
        ms(new_at)
    );
    assert_eq!(
        old_after, 0,
        "the old command wrote after the new holder began"
    );
    assert!(
        last_old < new_at,
        "the old command wrote at +{:.0} ms, after the new holder's first line at +{:.0} ms",
        ms(last_old),
        ms(new_at)
    );

    signal(holder.0.id(), Signal::SIGCONT);
    let code = holder.wait_code(Duration::from_secs(10));
    let mut stderr = String::new();
    holder
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    println!("the stopped holder, continued: exit {code:?}, stderr: {stderr}");
    assert_eq!(code, Some(76), "{stderr}");
    assert!(
        stderr.contains("no renewal reached the command's guard")
            && stderr.contains("the guard stopped the command"),
        "{stderr}"
    );
}
