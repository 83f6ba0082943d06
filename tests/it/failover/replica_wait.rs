//! A grant waits for its replica and a shortfall stands and is logged; a grant sent twice
//! answers with its token again.

use super::*;

#[test]
fn a_grant_waits_for_its_replica_and_a_shortfall_stands_and_is_logged() {
    let (master, replica) = master_and_replica();
    let repo = Repo::new();
    let locked = |name: &str| {
        run(tractatus(&repo.path())
            .env("TRACTATUS_REDIS", master.url())
            .env("TRACTATUS_REDIS_WAIT_REPLICAS", "1")
            .env("TRACTATUS_REDIS_WAIT_TIMEOUT", "300ms")
            .args(["--wait", "0", "lock", "run", "--name", name, "--", "true"]))
    };
    let r = locked("W");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let quick = r.elapsed;
    // The replica stops answering: the grant waits the timeout, then stands, and the log says
    // the lease did not reach its replica.
    replica.pause();
    let r = locked("W");
    replica.resume();
    assert_eq!(r.code, 0, "{}", r.stderr);
    println!(
        "lock run with its replica: {quick:?}; with it paused: {:?}",
        r.elapsed
    );
    assert!(r.elapsed >= Duration::from_millis(300), "{:?}", r.elapsed);
    let log = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", master.url())
        .args(["--json", "lock", "log"]));
    assert_eq!(log.code, 0, "{}", log.stderr);
    let events: serde_json::Value = serde_json::from_str(&log.stdout).unwrap();
    let names: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.iter().filter(|e| **e == "unreplicated").count(),
        1,
        "{names:?}"
    );
}

#[tokio::test]
async fn a_grant_sent_twice_answers_granted_with_its_token_again() {
    // A cluster connection sends a request again after a dropped connection or a response
    // timeout, though the first one may have run: the second grant of the same owner must say
    // granted (same token), not "held by" the caller itself, which would leave it waiting on
    // its own lease for a TTL.
    use tractatus_lock::backend::{GrantReply, GrantRequest, Node};
    use tractatus_lock::redis_node::RedisNode;
    let server = RedisServer::start();
    let url = tractatus_lock::config::NodeUrl::parse(&server.url()).unwrap();
    let node = RedisNode::new(&url, Duration::from_secs(2), Duration::from_secs(2)).unwrap();
    let req = GrantRequest {
        keys: tractatus_lock::keys::LockKeys::new("twice", "L"),
        owner: "owner-1".into(),
        join_hash: String::new(),
        ttl: Duration::from_secs(5),
        identity: tractatus_lock::Identity::current("t"),
        waiter: None,
        waiter_ttl: Duration::from_secs(1),
        place: 0,
        log_cap: 100,
        quarantine: Duration::from_secs(5),
        floor: 0,
    };
    let first = node.grant(&req).await.unwrap();
    let GrantReply::Granted { token } = first else {
        panic!("first grant: {first:?}");
    };
    assert_eq!(
        node.grant(&req).await.unwrap(),
        GrantReply::Granted { token }
    );
    // Another owner is still refused.
    let other = GrantRequest {
        owner: "owner-2".into(),
        ..req
    };
    assert!(matches!(
        node.grant(&other).await.unwrap(),
        GrantReply::Refused { .. }
    ));
}
