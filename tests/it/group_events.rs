//! `lock run` learns that its command's group is empty from events (each child's end), not by
//! looking at every process now and then: it still never releases before the whole group is
//! gone, setsid and double-forked children and a process that joined the group from outside
//! included, and it releases as soon as the last of them ends. Every process appends a line
//! "<what> <ns since epoch>" to one log; the next holder's line must come after every line of
//! the first holder's processes, and each leftover ends only when the test says so, so the
//! order of the lines is the order of the events.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Guard, RedisServer, Repo, run, tractatus, wait_until};

/// A leftover of the holder's command: ignores SIGTERM, notes that it is ready, and ends (with
/// a line) only once the test creates its "go" file (at most 60 s). `$1`: its name, `$2`: the log.
const LEFTOVER: &str = r#"
trap '' TERM
touch "$2.ready.$1"
i=0
while [ ! -f "$2.go.$1" ] && [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done
echo "$1-gone $(date +%s%N)" >> "$2"
"#;

/// The holder's command: a setsid child, a double-forked grandchild (its parent exits at once)
/// and a plain background child; the command ends once all three are ready.
const COMMAND: &str = r#"
log=$1
setsid sh leftover.sh setsid "$log" &
sh -c 'sh leftover.sh double "$1" & exit 0' sh "$log"
sh leftover.sh plain "$log" &
i=0
while [ $i -lt 1000 ]; do
  [ -f "$log.ready.setsid" ] && [ -f "$log.ready.double" ] && [ -f "$log.ready.plain" ] && break
  sleep 0.01; i=$((i+1))
done
echo "command-exit $(date +%s%N)" >> "$log"
"#;

/// The next holder's command: one line.
const NEXT: &str = r#"echo "next $(date +%s%N)" >> "$1""#;

fn lines(log: &Path) -> Vec<(String, u128)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (what, ns) = l.split_once(' ')?;
            Some((what.to_owned(), ns.parse().ok()?))
        })
        .collect()
}

fn has(log: &Path, what: &str) -> bool {
    lines(log).iter().any(|(w, _)| w == what)
}

/// Err when `cond` turns true within `limit` (looked at every 10 ms): for what must not happen.
fn stays_false(limit: Duration, mut cond: impl FnMut() -> bool) -> Result<(), ()> {
    let until = std::time::Instant::now() + limit;
    while std::time::Instant::now() < until {
        if cond() {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if cond() { Err(()) } else { Ok(()) }
}

/// How many wait for lock G (`lock status`).
fn waiters(repo: &Repo, url: &str) -> u64 {
    let r = run(tractatus(&repo.path()).args(["--redis", url, "--json", "lock", "status"]));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
    v["locks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["name"] == "G")
        .and_then(|l| l["waiters"].as_u64())
        .unwrap_or(0)
}

/// Spawn the next holder and wait until it waits: the lock is still held.
fn queue_next(repo: &Repo, url: &str, log: &Path) -> Guard {
    let next = Guard(lock_run(repo, url, NEXT, log).spawn().unwrap());
    wait_until(Duration::from_secs(10), "the next holder waits", || {
        waiters(repo, url) >= 1
    });
    next
}

/// `lock run --name G` in `repo` on `url`, running `script` with `log` as its argument.
fn lock_run(repo: &Repo, url: &str, script: &str, log: &Path) -> Command {
    let mut c = tractatus(&repo.path());
    c.args(["--redis", url, "--wait", "30s", "--kill-grace", "60s"])
        .args(["lock", "run", "--name", "G", "--", "sh", "-c", script, "sh"])
        .arg(log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

#[test]
fn lock_run_releases_only_after_its_setsid_double_forked_and_background_children_end_and_then_at_once()
 {
    let redis = RedisServer::start();
    let repo = Repo::new();
    repo.write("leftover.sh", LEFTOVER);
    // Each kind of leftover is the last to end once.
    for (round, order) in [
        ["plain", "double", "setsid"],
        ["setsid", "plain", "double"],
        ["double", "setsid", "plain"],
    ]
    .into_iter()
    .enumerate()
    {
        let log = repo.file(&format!("log{round}"));
        let mut holder = Guard(
            lock_run(&repo, &redis.url(), COMMAND, &log)
                .spawn()
                .unwrap(),
        );
        wait_until(Duration::from_secs(10), "the command exits", || {
            has(&log, "command-exit")
        });
        // Queued behind the holder: it writes its line as soon as it is granted.
        let mut next = queue_next(&repo, &redis.url(), &log);
        for (i, who) in order.iter().enumerate() {
            std::fs::write(format!("{}.go.{who}", log.display()), "").unwrap();
            wait_until(Duration::from_secs(10), &format!("{who} ends"), || {
                has(&log, &format!("{who}-gone"))
            });
            if i < 2 {
                // A holder that judged its group empty now would release within milliseconds
                // (it learns of each end at once): 300 ms of it still holding show it did not.
                let still = order[i + 1..].join(" and ");
                stays_false(Duration::from_millis(300), || {
                    holder.0.try_wait().unwrap().is_some() || has(&log, "next")
                })
                .unwrap_or_else(|()| panic!("the lock was let go while {still} still ran"));
            }
        }
        // Well within the 60 s kill grace: the holder noticed the last end, it did not wait
        // the grace out.
        assert_eq!(holder.wait_code(Duration::from_secs(20)), Some(0));
        assert_eq!(next.wait_code(Duration::from_secs(20)), Some(0));

        let all = lines(&log);
        let seen: Vec<&str> = all.iter().map(|(w, _)| w.as_str()).collect();
        let mut expected = vec!["command-exit".to_owned()];
        expected.extend(order.iter().map(|w| format!("{w}-gone")));
        expected.push("next".into());
        println!("events in order: {seen:?}");
        assert_eq!(
            seen, expected,
            "the next holder ran before the first holder's group was gone"
        );
        // The audit log's release (ms, Redis clock, this machine) came after the last
        // leftover's last line, and (printed) how long after.
        let events =
            run(tractatus(&repo.path()).args(["--redis", &redis.url(), "--json", "lock", "log"]));
        let events: serde_json::Value = serde_json::from_str(&events.stdout).unwrap();
        let released_ms = events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "release")
            .nth(round * 2)
            .and_then(|e| e["at_ms"].as_u64())
            .expect("no release in the audit log") as u128;
        let last_ms = all[3].1 / 1_000_000;
        assert!(
            released_ms >= last_ms,
            "released at {released_ms} ms, before the last leftover's line at {last_ms} ms"
        );
        println!(
            "released {} ms after the last leftover ({}) wrote its last line (whole ms); the \
             next holder wrote {:.1} ms after it",
            released_ms - last_ms,
            order[2],
            all[4].1.saturating_sub(all[3].1) as f64 / 1e6,
        );
    }
}

/// A process of another parent that moves itself into the command's group (`setpgid`, from
/// the same session) is a member too: the lock waits for it. The kernel tells us nothing when
/// it ends (it is not our descendant), so this is the one case still judged by looking.
const STRANGER: &str = r#"
$SIG{TERM} = 'IGNORE';
my ($pgid, $log) = @ARGV;
setpgrp(0, $pgid) or die "setpgid: $!";
open(my $r, '>', "$log.ready.stranger") or die; close($r);
for (1 .. 6000) { last if -e "$log.go.stranger"; select(undef, undef, undef, 0.01); }
open(my $l, '>>', $log) or die; printf $l "stranger-gone %d\n", time() * 1e9; close($l);
"#;

/// The holder's command for the stranger: notes its process group, waits for "$1.done".
const WAITS: &str = r#"
cut -d' ' -f5 /proc/$$/stat > "$1.pgid"
i=0
while [ ! -f "$1.done" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done
echo "command-exit $(date +%s%N)" >> "$1"
"#;

#[test]
fn lock_run_waits_for_a_process_that_joined_its_group_from_outside() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let log = repo.file("log");
    let mut holder = Guard(lock_run(&repo, &redis.url(), WAITS, &log).spawn().unwrap());
    let pgid_file = format!("{}.pgid", log.display());
    wait_until(
        Duration::from_secs(10),
        "the command notes its group",
        || std::fs::read_to_string(&pgid_file).is_ok_and(|s| s.trim().parse::<u32>().is_ok()),
    );
    let pgid = std::fs::read_to_string(&pgid_file).unwrap();
    let mut stranger = Guard(
        Command::new("perl")
            .args(["-e", STRANGER, pgid.trim()])
            .arg(&log)
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "the stranger joined", || {
        Path::new(&format!("{}.ready.stranger", log.display())).exists()
    });
    std::fs::write(format!("{}.done", log.display()), "").unwrap();
    wait_until(Duration::from_secs(10), "the command exits", || {
        has(&log, "command-exit")
    });
    let mut next = queue_next(&repo, &redis.url(), &log);
    assert!(
        holder.0.try_wait().unwrap().is_none(),
        "the holder exited while the process that joined its group still ran"
    );
    std::fs::write(format!("{}.go.stranger", log.display()), "").unwrap();
    assert_eq!(stranger.wait_code(Duration::from_secs(20)), Some(0));
    assert_eq!(holder.wait_code(Duration::from_secs(20)), Some(0));
    assert_eq!(next.wait_code(Duration::from_secs(20)), Some(0));
    let order: Vec<String> = lines(&log).into_iter().map(|(w, _)| w).collect();
    println!("events in order: {order:?}");
    assert_eq!(
        order,
        ["command-exit", "stranger-gone", "next"],
        "the next holder ran while a member of the first holder's group still ran"
    );
}

/// The holder's command: a line, then it waits for "$1.go.holder" (at most 30 s).
const HOLDS: &str = r#"
echo "holder $(date +%s%N)" >> "$1"
i=0
while [ ! -f "$1.go.holder" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done
"#;

#[test]
fn a_waiters_guard_started_before_its_grant_is_no_earlier_holders_group_to_wait_for() {
    // A waiter's guard starts while it waits. The one granted first must not take the other
    // waiter's guard for an earlier holder's group left running: it would wait out its kill
    // grace (60 s here), then kill the other waiter's group.
    let redis = RedisServer::start();
    let repo = Repo::new();
    let log = repo.file("log");
    let mut holder = Guard(lock_run(&repo, &redis.url(), HOLDS, &log).spawn().unwrap());
    wait_until(Duration::from_secs(10), "the holder runs", || {
        has(&log, "holder")
    });
    let mut first = queue_next(&repo, &redis.url(), &log);
    let mut second = Guard(lock_run(&repo, &redis.url(), NEXT, &log).spawn().unwrap());
    wait_until(Duration::from_secs(10), "both wait", || {
        waiters(&repo, &redis.url()) >= 2
    });
    std::fs::write(format!("{}.go.holder", log.display()), "").unwrap();
    assert_eq!(holder.wait_code(Duration::from_secs(10)), Some(0));
    // Far below the 60 s grace.
    assert_eq!(first.wait_code(Duration::from_secs(20)), Some(0));
    assert_eq!(second.wait_code(Duration::from_secs(20)), Some(0));
    let order: Vec<String> = lines(&log).into_iter().map(|(w, _)| w).collect();
    assert_eq!(order, ["holder", "next", "next"]);
}

/// The guard `lock run` process `pid` started: its child started as `tractatus __group-guard`.
fn guard_of(pid: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .find(|c| {
            std::fs::read(format!("/proc/{c}/cmdline"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .any(|a| a == b"__group-guard")
        })
}

/// Whether the guard `guard` announces a lock: an abstract Unix socket of its pid in
/// `/proc/net/unix` (`@tractatus-guard/<lock>/<pid>.<nonce>`).
fn announced_by(guard: u32) -> bool {
    let mark = format!("/{guard}.");
    std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit(' ').next()?.strip_prefix("@tractatus-guard/"))
        .any(|name| name.contains(&mark))
}

#[test]
fn a_holders_guard_announces_its_lock_while_the_command_runs_and_a_waiters_guard_does_not() {
    // The next holder looks at every process for an earlier holder's guard only when one is
    // announced: a holder's guard must be, before its command runs; a waiter's must not be,
    // or every grant under contention would pay for the full look.
    let redis = RedisServer::start();
    let repo = Repo::new();
    let log = repo.file("log");
    let mut holder = Guard(lock_run(&repo, &redis.url(), HOLDS, &log).spawn().unwrap());
    wait_until(Duration::from_secs(10), "the holder runs", || {
        has(&log, "holder")
    });
    let holders_guard = guard_of(holder.0.id()).expect("the holder's guard runs");
    assert!(
        announced_by(holders_guard),
        "the holder's guard is announced"
    );
    let mut next = queue_next(&repo, &redis.url(), &log);
    let mut waiters_guard = None;
    wait_until(Duration::from_secs(10), "the waiter's guard runs", || {
        waiters_guard = guard_of(next.0.id());
        waiters_guard.is_some()
    });
    let waiters_guard = waiters_guard.unwrap_or_default();
    assert!(
        !announced_by(waiters_guard),
        "a waiter's guard is not announced"
    );
    std::fs::write(format!("{}.go.holder", log.display()), "").unwrap();
    assert_eq!(holder.wait_code(Duration::from_secs(10)), Some(0));
    assert_eq!(next.wait_code(Duration::from_secs(20)), Some(0));
    assert!(
        !announced_by(holders_guard),
        "a guard gone is no longer announced"
    );
}
