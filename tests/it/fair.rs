//! Fair hand-off (issue 10): waiters are granted in the order they first asked, on one master
//! and on three, and a waiter killed while queued does not hold up the next one.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    Guard, RedisServer, Repo, cluster, hold_until_let_go, let_go, signal, tractatus, wait_until,
};

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
    hold_until_let_go(
        lock_run(repo, urls),
        &repo.file("held"),
        Duration::from_secs(10),
    )
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
    let_go(held);
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
    let_go(held);
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

/// When `member`'s registration in the line lapses (ms since the epoch) on the first of
/// `servers` where it does.
fn registration_lapses_at(repo: &Repo, servers: &[RedisServer], member: &str) -> u128 {
    let key = repo.keys(LOCK).waiters;
    servers
        .iter()
        .map(|s| {
            let score = s.cmd(&["ZSCORE", &key, member]);
            score
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("{member} not in line: {score}")) as u128
        })
        .min()
        .unwrap()
}

#[test]
fn the_next_waiter_is_granted_before_the_registration_of_the_killed_one_ahead_of_it_lapses() {
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
    let dead: Vec<String> = redis::cmd("ZRANGE")
        .arg(repo.keys(LOCK).waiters)
        .arg(0)
        .arg(-1)
        .query(
            &mut redis::Client::open(servers[0].url())
                .unwrap()
                .get_connection()
                .unwrap(),
        )
        .unwrap();
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
    // It stands in line at least until then (800 ms after its last heartbeat; the next one
    // may take it out as soon as it is seen dead, so this is read before the kill).
    let lapses = registration_lapses_at(&repo, &servers, &dead[0]);
    signal(first.0.id(), nix::sys::signal::Signal::SIGKILL);
    first.0.wait().unwrap();
    let released = epoch_nanos();
    let_go(held);
    let out = second.0.wait().unwrap();
    assert!(out.success(), "next waiter: {out}");
    let at: u128 = repo.read("granted").trim().parse().unwrap();
    let ms = |ns: u128| ns as f64 / 1e6;
    println!(
        "release -> next grant (its command's first instant): {:.1} ms; the dead waiter's \
         registration lapsed {:.1} ms after the release",
        ms(at.saturating_sub(released)),
        ms((lapses * 1_000_000).saturating_sub(released)),
    );
    // Granted while the dead waiter still stood first in line on every master: it was taken
    // out of the line, not waited out (the clocks are one: all on this machine).
    assert!(
        at < lapses * 1_000_000,
        "the next waiter was granted {:.1} ms after the killed one's registration lapsed: it \
         waited it out",
        ms(at - lapses * 1_000_000)
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
    let_go(held);
}
