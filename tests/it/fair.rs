//! Fair hand-off (issue 10): waiters are granted in the order they first asked, on one master
//! and on three, and a waiter killed while queued does not hold up the next one.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Guard, RedisServer, Repo, cluster, signal, tractatus, wait_until};

const LOCK: &str = "q";

fn urls(servers: &[RedisServer]) -> String {
    servers
        .iter()
        .map(|s| s.url())
        .collect::<Vec<_>>()
        .join(",")
}

fn lock_run(repo: &Repo, urls: &str) -> Command {
    let mut c = tractatus(&repo.path());
    c.env("TRACTATUS_REDIS", urls).args([
        "--ttl", "10s", "--wait", "60s", "lock", "run", "--name", LOCK, "--",
    ]);
    c
}

/// A holder whose command runs until its stdin is closed; returned once it holds the lock.
fn holder(repo: &Repo, urls: &str) -> Guard {
    let marker = repo.file("held");
    let child = lock_run(repo, urls)
        .args(["sh", "-c", "touch \"$1\"; read x || true", "sh"])
        .arg(&marker)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Guard(child);
    wait_until(Duration::from_secs(10), "the holder holds the lock", || {
        marker.exists()
    });
    guard
}

/// Waiters registered on every master.
fn queued_everywhere(repo: &Repo, servers: &[RedisServer], n: usize) -> bool {
    let key = repo.keys(LOCK).waiters;
    servers
        .iter()
        .all(|s| s.cmd(&["ZCARD", &key]).parse::<usize>().ok() == Some(n))
}

/// A waiter that appends `label` to the file `order` once it holds the lock.
fn waiter(repo: &Repo, urls: &str, label: &str) -> Child {
    lock_run(repo, urls)
        .args(["sh", "-c", "echo \"$1\" >> \"$2\"", "sh", label])
        .arg(repo.file("order"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn release(mut holder: Guard) {
    drop(holder.0.stdin.take());
    let status = holder.0.wait().unwrap();
    assert!(status.success(), "holder: {status}");
}

fn granted_in_arrival_order(masters: usize) {
    let servers = cluster(masters);
    let urls = urls(&servers);
    let repo = Repo::new();
    let held = holder(&repo, &urls);
    let mut waiters = Vec::new();
    for i in 1..=5 {
        waiters.push(Guard(waiter(&repo, &urls, &i.to_string())));
        wait_until(Duration::from_secs(10), "the waiter is queued", || {
            queued_everywhere(&repo, &servers, i)
        });
    }
    release(held);
    for w in &mut waiters {
        let out = w.0.wait().unwrap();
        assert!(out.success(), "waiter: {out}");
    }
    let order = repo.read("order");
    assert_eq!(
        order.split_whitespace().collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5"],
        "not granted in the order they asked"
    );
}

#[test]
fn five_waiters_are_granted_in_the_order_they_asked_on_one_master() {
    granted_in_arrival_order(1);
}

#[test]
fn five_waiters_are_granted_in_the_order_they_asked_on_three_masters() {
    granted_in_arrival_order(3);
}

#[test]
fn a_waiter_killed_while_queued_does_not_hold_up_the_next_one() {
    let servers = cluster(3);
    let urls = urls(&servers);
    let repo = Repo::new();
    let held = holder(&repo, &urls);
    let first = waiter(&repo, &urls, "killed");
    wait_until(
        Duration::from_secs(10),
        "the first waiter is queued",
        || queued_everywhere(&repo, &servers, 1),
    );
    let mut second = Guard(waiter(&repo, &urls, "next"));
    wait_until(
        Duration::from_secs(10),
        "the second waiter is queued",
        || queued_everywhere(&repo, &servers, 2),
    );
    signal(first.id(), nix::sys::signal::Signal::SIGKILL);
    let mut first = first;
    first.wait().unwrap();
    let released = Instant::now();
    release(held);
    let out = second.0.wait().unwrap();
    let took = released.elapsed();
    let mut err = String::new();
    if let Some(mut e) = second.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(out.success(), "next waiter: {out} {err}");
    assert_eq!(repo.read("order").trim(), "next");
    assert!(
        took < Duration::from_millis(1500),
        "the dead waiter held the next one up for {took:?}"
    );
    let _ = std::io::stderr().flush();
}

/// Nanoseconds since the epoch, by the wall clock (`date +%s%N` reads the same one).
fn epoch_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn the_next_waiter_is_granted_within_100_ms_of_the_release_when_the_one_ahead_was_killed() {
    let servers = cluster(3);
    let urls = urls(&servers);
    let repo = Repo::new();
    let held = holder(&repo, &urls);
    let mut first = Guard(waiter(&repo, &urls, "killed"));
    wait_until(
        Duration::from_secs(10),
        "the first waiter is queued",
        || queued_everywhere(&repo, &servers, 1),
    );
    // The next one notes when it got the lock.
    let granted = repo.file("granted");
    let mut second = Guard(
        lock_run(&repo, &urls)
            .args(["sh", "-c", "date +%s%N > \"$1\"", "sh"])
            .arg(&granted)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until(
        Duration::from_secs(10),
        "the second waiter is queued",
        || queued_everywhere(&repo, &servers, 2),
    );
    signal(first.0.id(), nix::sys::signal::Signal::SIGKILL);
    first.0.wait().unwrap();
    // Released right after the kill: well inside the dead waiter's registration (800 ms).
    let released = epoch_nanos();
    release(held);
    let out = second.0.wait().unwrap();
    assert!(out.success(), "next waiter: {out}");
    let at: u128 = repo.read("granted").trim().parse().unwrap();
    let took = Duration::from_nanos(u64::try_from(at.saturating_sub(released)).unwrap());
    println!("release -> next grant (its command's first instant): {took:?}");
    assert!(
        took < Duration::from_millis(100),
        "the killed waiter held the next one up for {took:?}"
    );
}

#[test]
fn lock_status_lists_the_queue_in_order() {
    let servers = cluster(1);
    let urls = urls(&servers);
    let repo = Repo::new();
    let held = holder(&repo, &urls);
    let first = Guard(waiter(&repo, &urls, "1"));
    wait_until(
        Duration::from_secs(10),
        "the first waiter is queued",
        || queued_everywhere(&repo, &servers, 1),
    );
    let second = Guard(waiter(&repo, &urls, "2"));
    wait_until(
        Duration::from_secs(10),
        "the second waiter is queued",
        || queued_everywhere(&repo, &servers, 2),
    );
    let r = crate::support::run(tractatus(&repo.path()).args(["--redis", &urls, "lock", "status"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = |n: usize, pid: u32| {
        r.stdout.lines().any(|l| {
            l.trim_start().starts_with(&format!("{n}. session "))
                && l.contains(&format!(" pid {pid}, waiting "))
        })
    };
    assert!(
        r.stdout.contains(&format!("queue of {LOCK}:")),
        "{}",
        r.stdout
    );
    assert!(
        line(1, first.0.id()) && line(2, second.0.id()),
        "{}",
        r.stdout
    );
    release(held);
}
