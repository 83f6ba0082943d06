//! Servers that restart with their data but may have lost their last grants: a replica promoted
//! and then restarted before its first grant in a slot (issue 19, finding 7), and a master that
//! restarts from a snapshot older than its last grant (the class of `appendfsync everysec`).
//! Either keeps the lock's counter but not the last lease, and reads as a plain restart (a new
//! replication id, `second_repl_offset` -1). A second holder must not be granted while that
//! lease's TTL runs: the server grants nothing in a slot stamped under another replication id
//! until its uptime reaches the quarantine.
//!
//! The first holder's command and the second's append "<who> <ns since epoch> <token>" lines to
//! one log; the old master is lost (paused, or killed) while the first holder runs.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tractatus_testkit::sentinel::replication_field;

use crate::support::{Guard, Ran, RedisServer, Repo, run, tractatus, wait_until};

/// The TTL of every lease here; the quarantine is twice that.
const TTL: Duration = Duration::from_secs(1);
const QUARANTINE: &str = "2s";

/// The first holder's command: a line every 50 ms, until stopped.
const OLD: &str =
    r#"while :; do echo "old $(date +%s%N) $TRACTATUS_FENCING_TOKEN" >> "$1"; sleep 0.05; done"#;

/// The second holder's command: one line.
const NEW: &str = r#"echo "new $(date +%s%N) $TRACTATUS_FENCING_TOKEN" >> "$1""#;

/// The log's lines in file order: (who, ns since epoch, token).
fn lines(log: &Path) -> Vec<(String, u128, u64)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let who = f.next()?.to_owned();
            Some((who, f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// `lock run --name L` of `cmd` on `url` (TTL 1 s, quarantine 2 s, wait `wait`).
fn lock_run(repo: &Path, url: &str, wait: &str, cmd: &str) -> std::process::Command {
    let mut c = tractatus(repo);
    c.env("TRACTATUS_QUARANTINE", QUARANTINE)
        .args(["--redis", url, "--ttl", "1s", "--wait", wait])
        .args(["lock", "run", "--name", "L", "--", "sh", "-c", cmd, "sh"]);
    c
}

/// One grant and release of L on `url`, so the server knows L (its counter and its slot's stamp).
fn warm(repo: &Path, url: &str) {
    let r = run(&mut lock_run(repo, url, "5s", "true"));
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// The first holder of L on `url`, running [`OLD`] until its lease is lost; returns once its
/// command writes.
fn first_holder(repo: &Repo, url: &str, log: &Path) -> Guard {
    let holder = Guard(
        lock_run(&repo.path(), url, "5s", OLD)
            .arg(log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "the first holder writes", || {
        lines(log).len() >= 2
    });
    holder
}

/// The second holder of L on `url` (waiting up to 20 s), then the checks once the first holder
/// has ended (its lease lost: 76): the second began no earlier than one TTL after `lost_ns`
/// (when the old master was lost: the first lease was renewed there at the latest), no line of
/// the first holder came after the second's first one, and the second's token is the higher.
fn second_holder_waits_out_the_first_lease(
    repo: &Repo,
    url: &str,
    log: &Path,
    lost_ns: u128,
    mut first: Guard,
) {
    let r: Ran = run(lock_run(&repo.path(), url, "20s", NEW).arg(log));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(first.wait_code(Duration::from_secs(15)), Some(76));
    let all = lines(log);
    let first_new = all.iter().position(|l| l.0 == "new").unwrap();
    let old_after = all[first_new..].iter().filter(|l| l.0 == "old").count();
    let (new_at, new_token) = (all[first_new].1, all[first_new].2);
    let old_token = all.iter().find(|l| l.0 == "old").unwrap().2;
    let after = Duration::from_nanos(new_at.saturating_sub(lost_ns) as u64);
    println!(
        "the second holder began {after:?} after the old master was lost (TTL {TTL:?}); \
         {old_after} lines of the first holder after its first; tokens {old_token} then {new_token}"
    );
    assert!(
        after >= TTL,
        "a second holder was granted {after:?} after the old master was lost, while the first \
         lease's TTL ({TTL:?}) still ran"
    );
    assert_eq!(
        old_after, 0,
        "the first holder wrote after the second began"
    );
    assert!(new_token > old_token, "{old_token} then {new_token}");
}

#[test]
fn a_promoted_replica_restarted_with_its_data_waits_out_a_lease_it_never_received() {
    let master = RedisServer::start();
    let port = master.port.to_string();
    // Made a replica by command, not by argument, so that it restarts as a master.
    let mut replica = tractatus_testkit::RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    assert_eq!(replica.cmd(&["REPLICAOF", "127.0.0.1", &port]), "OK");
    wait_until(Duration::from_secs(10), "the replica's link is up", || {
        replication_field(replica.port, "master_link_status").as_deref() == Some("up")
    });
    let repo = Repo::new();
    let log = repo.file("log");
    warm(&repo.path(), &master.url());
    let fence = repo.keys("L").fence;
    wait_until(
        Duration::from_secs(10),
        "the replica has L's counter",
        || replica.cmd(&["GET", &fence]) == master.cmd(&["GET", &fence]),
    );
    // A replica with `appendonly yes` rewrites its append-only file after the full sync; killed
    // before that ends, it restarts without the synced data (seen under load).
    wait_until(
        Duration::from_secs(20),
        "the replica's append-only file holds the synced data",
        || {
            let info = replica.cmd(&["INFO", "persistence"]);
            ["aof_rewrite_in_progress:0", "aof_rewrite_scheduled:0"]
                .iter()
                .all(|want| info.lines().any(|l| l.trim() == *want))
        },
    );

    // Replication is cut (the replica promoted), and the old master grants L once more: a lease
    // the new master never received, as if granted just before the failover.
    assert_eq!(replica.cmd(&["REPLICAOF", "NO", "ONE"]), "OK");
    let holder = first_holder(&repo, &master.url(), &log);
    // The old master is lost; the promoted replica restarts on its append-only file before any
    // grant in L's slot.
    let lost = now_ns();
    master.pause();
    replica.kill();
    replica.restart();
    counter_survived(&repo, &replica);
    println!(
        "the promoted replica, restarted with its data: second_repl_offset {:?}",
        replication_field(replica.port, "second_repl_offset")
    );
    second_holder_waits_out_the_first_lease(&repo, &replica.url(), &log, lost, holder);
    master.resume();
}

/// L's counter came back with the data, and L's last lease did not.
fn counter_survived(repo: &Repo, server: &tractatus_testkit::RedisServer) {
    let keys = repo.keys("L");
    assert_ne!(
        server.cmd(&["GET", &keys.fence]),
        "(nil)",
        "the counter was lost"
    );
    assert_eq!(
        server.cmd(&["EXISTS", &keys.lease]),
        "0",
        "the last lease came back"
    );
}

#[test]
fn a_master_restarted_from_a_snapshot_older_than_its_last_grant_waits_that_lease_out() {
    let mut master = RedisServer::start();
    let repo = Repo::new();
    let log = repo.file("log");
    warm(&repo.path(), &master.url());
    // A snapshot that knows L, then a grant it lacks (what `appendfsync everysec` loses in a
    // crash: the last second of writes).
    assert_eq!(master.cmd(&["SAVE"]), "OK");
    let holder = first_holder(&repo, &master.url(), &log);
    let lost = now_ns();
    master.kill();
    master.restart();
    counter_survived(&repo, &master);
    second_holder_waits_out_the_first_lease(&repo, &master.url(), &log, lost, holder);
}
