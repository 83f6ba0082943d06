//! Test support: the shared test kit (`testkit/`: real redis-servers, throwaway repositories,
//! timed child processes, fixtures) plus what only this test binary can know: the path of the
//! `tractatus` binary cargo built for it, and the library's key layout.

// Not every test module uses every helper.
#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::process::Command;

pub use tractatus_testkit::{
    CRITICAL, Guard, HISTORY, KillPid, Ran, RedisServer, alive, answers_ping, cluster, fixture,
    free_port, instruction_history, run, run_timed, signal, wait_until,
};

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
