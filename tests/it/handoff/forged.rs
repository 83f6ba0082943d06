//! The hand-off against other Redis clients: a forged release message hands nothing over, a
//! user that may only read and publish can neither fill a waiter's box nor be taken at its
//! word, and a lock user with exactly the ACL the threat model documents gets its hand-offs
//! (from the box, or without `@list` with its next attempt).

use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

/// The release message is a hint, never trusted: a client that may publish on the lock's
/// channel (and read Redis, where the waiter and owner ids are) names the waiter first in line,
/// its owner id and a token of its choosing. The waiter keeps waiting while the holder holds,
/// then runs under the token a real release minted.
#[test]
fn a_forged_hand_off_message_does_not_hand_the_lock_over() {
    let servers = cluster(1);
    let urls = urls(&servers);
    let repo = Repo::new();
    let (held, mut next) = holder_and_next(&repo, &servers, &urls, "10s");
    let keys = repo.keys(LOCK);
    let mut con = redis::Client::open(servers[0].url())
        .unwrap()
        .get_connection()
        .unwrap();
    let (first, owner) = first_in_line(&mut con, &keys);
    wait_until(Duration::from_secs(10), "the waiter listens", || {
        let subs: (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&keys.channel)
            .query(&mut con)
            .unwrap();
        subs.1 >= 1
    });
    let forged = 9_007_199_254_740_000_u64;
    publish_forged(
        &mut con,
        &keys.channel,
        &format!("{first} {owner} {forged}"),
    );
    neither_runs_nor_ends(&mut next.0, &repo.file("order"));
    let_go(held);
    let out = next.0.wait().unwrap();
    assert!(out.success(), "the waiter: {out}");
    let got = order(&repo);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_ne!(got[0].1, forged, "it ran under the forged token");
}

/// Publish the forged `message` on `channel`; somebody (the waiter) must hear it.
fn publish_forged(con: &mut redis::Connection, channel: &str, message: &str) {
    let heard: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(message)
        .query(con)
        .unwrap();
    assert!(heard >= 1, "nobody listened to the forged message");
}

/// A negative: for a second the waiter must neither run its command (which writes `ran`) nor
/// end.
fn neither_runs_nor_ends(waiter: &mut std::process::Child, ran: &std::path::Path) {
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(1) {
        assert!(
            !ran.exists(),
            "the waiter ran on a forged hand-off: {}",
            std::fs::read_to_string(ran).unwrap_or_default()
        );
        assert!(
            waiter.try_wait().unwrap().is_none(),
            "the waiter ended on a forged hand-off"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Who may only read and publish (an ACL user with `@read` and `@pubsub`) can neither put a
/// hand-off into a waiter's box nor make the waiter take one from a forged message.
#[test]
fn a_reader_that_may_publish_cannot_fill_a_waiters_box() {
    by_its_box(|| {
        let servers = cluster(1);
        let urls = urls(&servers);
        let repo = Repo::new();
        let held = holder(&repo, &urls, "10s");
        let next = traced_waiter(&repo, &servers, &urls);
        assert_eq!(
            servers[0].cmd(&[
                "ACL", "SETUSER", "reader", "on", ">pw", "~*", "&*", "+@read", "+@pubsub",
            ]),
            "OK"
        );
        let keys = repo.keys(LOCK);
        let reader_url = servers[0]
            .url()
            .replacen("redis://", "redis://reader:pw@", 1);
        let mut reader = redis::Client::open(reader_url)
            .unwrap()
            .get_connection()
            .unwrap();
        // What the reader sees: the waiter's id, and its owner id in the hand-off record.
        let (waiter, owner) = first_in_line(&mut reader, &keys);
        let forged = format!("{owner} 9007199254740000");
        let pushed: redis::RedisResult<i64> = redis::cmd("RPUSH")
            .arg(keys.handed_box(&waiter))
            .arg(&forged)
            .query(&mut reader);
        let refused = pushed.expect_err("a reader pushed into a waiter's box");
        assert!(
            refused.to_string().to_ascii_uppercase().contains("NOPERM"),
            "not refused for want of permission: {refused}"
        );
        publish_forged(&mut reader, &keys.channel, &format!("{waiter} {forged}"));
        // The waiter hears the message, looks in its box for a node timeout (250 ms), finds
        // nothing, and its renewal is refused: it waits on.
        let mut next = next;
        neither_runs_nor_ends(&mut next.child.0, &repo.file("ran"));
        next.let_go_after_an_attempt(held);
        let (out, err) = next.finish();
        assert!(out.success(), "the waiter: {out}: {err}");
        assert_ne!(repo.read("ran").trim(), "9007199254740000");
        err
    });
}

/// The ACL the threat model documents for the user `tractatus` connects as.
const LOCK_USER_ACL: &[&str] = &[
    "~tractatus:*",
    "&tractatus:*",
    "+@string",
    "+@hash",
    "+@sortedset",
    "+@list",
    "+@stream",
    "+@keyspace",
    "+@scripting",
    "+@transaction",
    "+time",
    "+info",
    "+ping",
    "+publish",
    "+subscribe",
    "+unsubscribe",
];

/// A holder and a traced waiter connecting as ACL user `locker` with `acl`; returns the
/// waiter's exit status and stderr, and the release message's token.
/// With `boxed`, the holder lets go once the waiter's box is open (else the hand-off may land
/// while the waiter subscribes, and its next attempt takes the lease first), between two of
/// its attempts.
fn hand_off_as(acl: &[&str], boxed: bool) -> (std::process::ExitStatus, String, String, Repo) {
    let servers = cluster(1);
    let mut setuser = vec!["ACL", "SETUSER", "locker", "reset", "on", ">pw"];
    setuser.extend_from_slice(acl);
    assert_eq!(servers[0].cmd(&setuser), "OK");
    let urls = urls(&servers);
    let repo = Repo::new();
    let as_locker = |mut c: Command| {
        c.env("TRACTATUS_REDIS_USERNAME", "locker")
            .env("TRACTATUS_REDIS_PASSWORD", "pw");
        c
    };
    let held = hold_until_let_go(
        as_locker(lock_run(&repo, &urls, "10s")),
        &repo.file("held"),
        Duration::from_secs(10),
    );
    let messages = listen(&servers[0], repo.keys(LOCK).channel);
    let mut next = Traced::new(Guard(
        traced(as_locker(lock_run(&repo, &urls, "10s")), &repo)
            .spawn()
            .unwrap(),
    ));
    wait_until(Duration::from_secs(10), "the waiter is queued", || {
        queued_everywhere(&repo, &servers, 1)
    });
    if boxed {
        wait_until(Duration::from_secs(10), "the waiter's box is open", || {
            boxes(&servers[0]).len() == 1
        });
        next.let_go_after_an_attempt(held);
    } else {
        let_go(held);
    }
    let (out, err) = next.finish();
    (out, err, the_hand_off_token(messages), repo)
}

/// The documented ACL is enough: the waiter is handed the lock from its box.
#[test]
fn a_lock_user_with_the_documented_acl_is_handed_the_lock_from_its_box() {
    by_its_box(|| {
        let (out, err, token, repo) = hand_off_as(LOCK_USER_ACL, true);
        assert!(out.success(), "the waiter: {out}: {err}");
        assert_eq!(repo.read("ran").trim(), token);
        err
    });
}

/// Without the list commands (no `BLPOP` for the box, no `RPUSH` into it) the release still
/// hands over, and the waiter takes the lease with its next attempt, under the release's token.
#[test]
fn a_lock_user_without_list_commands_takes_a_hand_off_with_its_next_attempt() {
    let acl: Vec<&str> = LOCK_USER_ACL
        .iter()
        .copied()
        .filter(|a| *a != "+@list")
        .collect();
    let (out, err, token, repo) = hand_off_as(&acl, false);
    assert!(out.success(), "the waiter: {out}: {err}");
    assert!(!err.contains("(its box)"), "{err}");
    assert_eq!(repo.read("ran").trim(), token);
}
