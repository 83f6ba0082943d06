//! Test support: the shared test kit (`testkit/`: real redis-servers, throwaway repositories,
//! timed child processes, fixtures) plus what only this test binary can know: the path of the
//! `tractatus` binary cargo built for it, and the library's key layout.

// Not every test module uses every helper.
#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::process::Command;

mod held;
mod session_repo;

pub use held::{hold_until_let_go, let_go};
pub use session_repo::{SessionRepo, log_in};

pub use tractatus_testkit::{
    CRITICAL, Guard, HISTORY, KillPid, Ran, alive, answers_ping, as_attacker, child_named,
    epoch_ms, fixture, free_port, instruction_history, now_ns, parent_and_state, run, run_timed,
    run_to, signal, stderr_of, tree, wait_until,
};

/// The kit's [`tractatus_testkit::RedisServer`], marked as brand-new when started (what an
/// operator's `tractatus lock init` does) so its first grants skip the restart quarantine. A
/// [`tractatus_testkit::RedisServer::restart_empty`] is not marked: that is a real empty restart.
pub struct RedisServer(tractatus_testkit::RedisServer);

impl std::ops::Deref for RedisServer {
    type Target = tractatus_testkit::RedisServer;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for RedisServer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl RedisServer {
    /// Start a server (no persistence) and mark it initialized.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start a server with extra arguments (`--requirepass x`, ...) and mark it initialized.
    pub fn start_with(extra: &[&str]) -> Self {
        let server = RedisServer(tractatus_testkit::RedisServer::start_with(extra));
        let password = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| extra.get(i + 1));
        let url = match password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", server.port),
            None => server.url(),
        };
        assert_eq!(mark_initialized(&url), 1);
        server
    }
}

/// `n` independent masters, each marked initialized.
pub fn cluster(n: usize) -> Vec<RedisServer> {
    (0..n).map(|_| RedisServer::start()).collect()
}

/// `Coordinator::mark_initialized` on the Redis nodes of `urls` (comma-separated): how many
/// were marked.
pub fn mark_initialized(urls: &str) -> usize {
    use tractatus_lock::{Config, Coordinator, Identity, config::parse_nodes};
    let urls = urls.to_owned();
    // On a thread of its own: the caller may be a #[tokio::test], inside a runtime already.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let config = Config::new(parse_nodes(&[urls]).expect("urls"));
            let c = Coordinator::connect(config, Identity::current("test-kit"))
                .await
                .expect("connect");
            c.mark_initialized().await.expect("mark initialized")
        })
    })
    .join()
    .expect("marking thread")
}

/// A throwaway repository (the kit's [`tractatus_testkit::Repo`]) that also knows the Redis
/// keys of its locks.
pub struct Repo(tractatus_testkit::Repo);

impl std::ops::Deref for Repo {
    type Target = tractatus_testkit::Repo;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Repo {
    pub fn new() -> Self {
        Repo(tractatus_testkit::Repo::new())
    }

    /// The Redis keys of lock `name` in this repository's namespace (from the config file the
    /// first use wrote).
    pub fn keys(&self, name: &str) -> tractatus_lock::keys::LockKeys {
        tractatus_lock::keys::LockKeys::new(&self.namespace(), name)
    }
}

/// The `tractatus` binary with a clean environment (no TRACTATUS_* from outside), run in `dir`.
pub fn tractatus(dir: &Path) -> Command {
    tractatus_testkit::Cli::new(env!("CARGO_BIN_EXE_tractatus")).command(dir)
}

/// One try at a lock, no waiting: `tractatus --redis URL --wait 0 lock run LOCK -- true` in
/// `dir`, where `lock` is `["--name", NAME]` or `["--file", PATH]`. 0 when taken, 75 when held.
pub fn try_lock(dir: &Path, url: &str, lock: [&str; 2]) -> Ran {
    run(tractatus(dir)
        .args(["--redis", url, "--wait", "0", "lock", "run"])
        .args(lock)
        .args(["--", "true"]))
}

/// Each session's state in `session list --json`, sorted by id.
pub fn session_states(list: &serde_json::Value) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let text = |k: &str| s[k].as_str().unwrap().to_owned();
            (text("id"), text("state"))
        })
        .collect();
    all.sort();
    all
}

/// A master with one replica, both on loopback, its link up; the master marked initialized.
pub fn master_and_replica() -> (RedisServer, tractatus_testkit::RedisServer) {
    let master = RedisServer::start();
    let port = master.port.to_string();
    let replica = tractatus_testkit::RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    wait_until(
        std::time::Duration::from_secs(10),
        "the replica's link is up",
        || {
            tractatus_testkit::sentinel::replication_field(replica.port, "master_link_status")
                .as_deref()
                == Some("up")
        },
    );
    (master, replica)
}

/// The `tractatus` binary cargo built for this test binary.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tractatus"))
}
