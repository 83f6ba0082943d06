//! Two machines with one host name (cloned VMs, CI runners all called `runner`): a holder
//! record from the other one names a pid that means nothing here, though host name and root
//! PID namespace inode match. The boot id tells them apart; "another machine" is a holder run
//! with another boot id (`TRACTATUS_TEST_BOOT_ID`, read by debug builds only).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::{Guard, RedisServer, Repo, alive, run, signal, tractatus, wait_until};

const HOST: &str = "runner";
/// A boot id that is not this machine's.
const OTHER_BOOT: &str = "00000000-0000-4000-8000-00000000beef";

/// A holder of lock "T" with a 3 s TTL, on host `HOST`, in boot `boot` (this machine's when
/// `None`), killed outright once its command runs; returns when its pid and its command's
/// group are gone from this machine, so only its record in Redis is left.
fn crashed_holder(repo: &Repo, url: &str, boot: Option<&str>) {
    let pidfile = repo.file("holder.pid");
    let mut c = tractatus(&repo.path());
    c.env("TRACTATUS_HOST", HOST);
    if let Some(b) = boot {
        c.env("TRACTATUS_TEST_BOOT_ID", b);
    }
    c.args(["--redis", url, "--ttl", "3s", "--kill-grace", "1s"])
        .args(["lock", "run", "--name", "T", "--"])
        .args(["sh", "-c", "echo $$ > \"$1\"; exec sleep 60", "sh"])
        .arg(&pidfile)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut holder = Guard(c.spawn().unwrap());
    wait_until(Duration::from_secs(10), "the holder's command runs", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
    });
    let cmd: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let guard = group_of(cmd);
    signal(holder.0.id(), Signal::SIGKILL);
    let _ = holder.0.wait();
    // Its guard ends the command, then itself.
    wait_until(Duration::from_secs(5), "the holder's group is gone", || {
        !alive(cmd) && !alive(guard)
    });
}

/// The process group of `pid` (field 5 of its stat).
fn group_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(2).unwrap().parse().unwrap()
}

/// A waiter on host `HOST` in this machine's boot: (exit code, how long it took, the lease's
/// PTTL in ms when it started).
fn waiter(repo: &Repo, redis: &RedisServer) -> (i32, Duration, u64) {
    let pttl: u64 = redis.cmd(&["PTTL", &repo.keys("T").lease]).parse().unwrap();
    let started = Instant::now();
    let r = run(tractatus(Path::new(&repo.path()))
        .env("TRACTATUS_HOST", HOST)
        .args(["--redis", &redis.url(), "--wait", "10s"])
        .args(["lock", "run", "--name", "T", "--", "true"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    (r.code, started.elapsed(), pttl)
}

#[test]
fn a_holder_on_another_machine_with_our_host_name_is_waited_out_not_evicted() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    crashed_holder(&repo, &redis.url(), Some(OTHER_BOOT));
    let (_, took, pttl) = waiter(&repo, &redis);
    println!("another boot: taken after {took:?}, the lease had {pttl} ms left");
    assert!(
        pttl > 1000,
        "the lease ran out before the waiter started: {pttl} ms"
    );
    assert!(
        took >= Duration::from_millis(pttl.saturating_sub(100)),
        "the waiter took over after {took:?} with {pttl} ms of the lease left: it judged \
         another machine's pid"
    );
}

#[test]
fn a_crashed_holder_of_this_machine_is_still_taken_over_at_once() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    crashed_holder(&repo, &redis.url(), None);
    let (_, took, pttl) = waiter(&repo, &redis);
    println!("this boot: taken after {took:?}, the lease had {pttl} ms left");
    assert!(
        pttl > 1000,
        "the lease ran out before the waiter started: {pttl} ms"
    );
    assert!(
        took < Duration::from_millis(pttl / 2),
        "the waiter waited {took:?} for a holder whose process is gone from this machine"
    );
}
