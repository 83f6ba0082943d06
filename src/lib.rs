//! `tractatus_lock`: leases on Redis (one node or a Redlock quorum of independent masters, or
//! local OS file locks with no Redis), fencing tokens checked where the write lands, and JSON
//! state files committed atomically under a lease.
//!
//! # Layout
//! - [`config`]: raw flags, environment and config file become a checked [`Config`].
//! - [`keys`]: the one place that knows the Redis key layout.
//! - [`backend`]: the [`backend::Node`] and [`backend::NodeAdmin`] traits: the one seam to Redis
//!   (named `backend` so that "node" means the Node.js addon in `node/`).
//! - [`redis_node`]: a node that is a real Redis (one server or a Redis Cluster): every Redis
//!   command and the Lua of `lua/`.
//! - `clock`: elapsed time that counts system suspend, for lease validity.
//! - `quorum`: Redlock arithmetic (majority, validity, drift) and monotonic fencing tokens.
//! - `options`: [`AcquireOptions`]: how long to wait, and where wait feedback goes.
//! - `dir_handle`: files below the root through directory handles (never a symlink, never a
//!   FIFO, reads capped).
//! - `redact`: passwords out of every URL and text we show (re-exported by [`config`]).
//! - `connect`: building a [`Coordinator`]: Redis nodes (TLS included) or local file locks.
//! - `acquire`: the wait loop: release events, takeover of a gone holder, jitter, quarantine.
//! - `init`: marking brand-new Redis servers initialized, so they skip the restart quarantine.
//! - [`join`]: joining a lease an ancestor process holds (the capability in the environment).
//! - [`lease`]: a held [`Lease`]: token, renewal, loss and expiry, release.
//! - `local`: the one-machine backend on `flock` (`local/turn.rs`: joining a local lock and the
//!   joiners' turns).
//! - [`holder`]: who holds a lock, and whether a holder on this host is gone.
//! - [`workspace`]: the front ends' one entry: repository, settings, and the backend choice.
//! - [`repo`]: repository root, lock names of files, the private working directory.
//! - [`session`]: the live session registry, per-session state files, their cleanup and totals.
//! - [`settings`]: precedence of flags, environment and config file; the config file's schema
//!   and the namespace file.
//! - [`deadlock`]: wait-for edges beside the queue, the walk for a cycle, and its victim.
//! - `multi`: several locks at once ([`Coordinator::acquire_all`]).
//! - [`slots`]: one of N slots, a counting semaphore of leases ([`Coordinator::acquire_slot`]).
//! - `sys`: what is read from `/proc` (process start times, parents, umask) and the host name.
//! - [`group`]: the process group a `lock run` command runs in, and the guard that leads it.
//! - [`run`]: `lock run`: a child command supervised under leases.
//! - [`state`]: guarded JSON read-modify-write with atomic, fenced commits.
//! - [`ops`]: the operator's views: status, audit log, break.
//! - [`stats`]: wait and hold statistics from the audit log, and each node's health.
//! - [`shown`]: text from other processes and the environment, escaped and cut for display.
//! - [`error`]: the one error type and its exit codes.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> tractatus_lock::Result<()> {
//! use std::time::Duration;
//! use tractatus_lock::{AcquireOptions, Config, Coordinator, Identity, config::parse_nodes};
//!
//! let config = Config::new(parse_nodes(&["redis://127.0.0.1:6379"])?);
//! let coordinator = Coordinator::connect(config, Identity::current("demo")).await?;
//! let mut lease = coordinator
//!     .acquire("reports/daily", &AcquireOptions::wait(Duration::from_secs(5)))
//!     .await?;
//! lease.keep_alive(Duration::from_secs(600));
//! println!("fencing token {}", lease.token());
//! lease.release().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod acquire;
pub mod backend;
mod clock;
pub mod config;
mod connect;
mod coordinator;
pub mod deadlock;
mod dir_handle;
pub mod error;
pub mod group;
mod handoff;
pub mod holder;
mod init;
pub mod join;
pub mod keys;
pub mod lease;
mod local;
mod multi;
pub mod ops;
mod options;
mod quorum;
mod redact;
pub mod redis_node;
pub mod repo;
pub mod run;
pub mod session;
pub mod settings;
pub mod shown;
pub mod slots;
pub mod state;
pub mod stats;
mod sys;
pub mod workspace;

#[cfg(test)]
mod fake_node;

/// The README's Rust example, compiled as a doc-test so that it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use config::Config;
pub use coordinator::Coordinator;
pub use error::{Error, Result};
pub use holder::{HolderInfo, Identity};
pub use lease::{FencingToken, Lease, LeaseState};
pub use options::{AcquireOptions, Holding, WaitProgress};
