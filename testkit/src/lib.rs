//! Test kit of `tractatus-lock`: what the integration tests (`tests/it`) and the benchmark
//! (`examples/bench`) both need to drive real processes.
//!
//! It owns real `redis-server` processes on free loopback ports ([`RedisServer`]), throwaway
//! repositories ([`Repo`]), the `tractatus` binary with a clean environment ([`Cli`]), child
//! processes that are timed, bounded and stopped by pid ([`run_timed`], [`Guard`], [`KillPid`]),
//! waiting on conditions with a deadline ([`wait_until`]) and the Tractatus-shaped fixtures.
//!
//! It deliberately does not depend on the `tractatus_lock` library, so that reorganising the
//! library's modules never breaks it; whatever needs library types (lock keys, say) stays in the
//! tests' own support module. Being test support, it panics on a broken environment (no
//! `redis-server`, no temp dir) with a message that says so; the fallible `try_` forms are there
//! for the benchmark, which reports instead.
//!
//! # Layout
//! - [`redis_server`]: [`RedisServer`], [`cluster`], [`free_port`], [`answers_ping`].
//! - [`redis_cluster`]: [`RedisCluster`], a real Redis Cluster (masters, replicas, slot moves).
//! - [`repo`]: [`Repo`], a temp directory with `.git/` and `.claude/`; [`tree`], the files
//!   under a directory.
//! - [`sentinel`]: [`SentinelGroup`], a master, its replica and three sentinels.
//! - [`process`]: [`run_timed`] and [`Ran`], [`Guard`] and [`stderr_of`], [`KillPid`],
//!   [`alive`], [`signal`], [`wait_until`].
//! - [`procfs`]: [`parent_and_state`] and [`child_named`], other processes as `/proc` shows them.
//! - [`clock`]: [`now_ns`] and [`epoch_ms`], the wall clock in the units the logs use.
//! - [`cli`]: [`Cli`], where the `tractatus` binary is and how to run it.
//! - [`couser`]: [`SharedCheckout`], a victim and an attacker (two uids, one group) in one
//!   setgid, group-writable checkout, run through `setpriv`; [`as_attacker`] plants as the
//!   co-user.
//! - [`fixtures`]: [`instruction_history`], [`instruction_history_varied`], [`fixture`],
//!   [`CRITICAL`], [`HISTORY`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod clock;
pub mod couser;
pub mod fixtures;
pub mod process;
pub mod procfs;
pub mod redis_cluster;
pub mod redis_server;
pub mod repo;
pub mod sentinel;

pub use cli::Cli;
pub use clock::{epoch_ms, now_ns};
pub use couser::{SharedCheckout, Who, as_attacker};
pub use fixtures::{CRITICAL, HISTORY, fixture, instruction_history, instruction_history_varied};
pub use process::{
    Guard, KillPid, RUN_LIMIT, Ran, alive, run, run_timed, run_to, signal, stderr_of, wait_until,
};
pub use procfs::{child_named, parent_and_state};
pub use redis_cluster::RedisCluster;
pub use redis_server::{RedisServer, answers_ping, cluster, free_port};
pub use repo::{Repo, tree};
pub use sentinel::SentinelGroup;

/// Re-exported so that users of [`signal`] need no `nix` dependency of their own.
pub use nix::sys::signal::Signal;
