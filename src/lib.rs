//! `tractatus_lock`: leases on Redis (one node or a Redlock quorum of independent masters, or
//! local OS file locks with no Redis), fencing tokens checked where the write lands, and JSON
//! state files committed atomically under a lease.
//!
//! # Public API
//! What an embedder may use, and all that `cargo doc` shows; every other module is
//! `pub(crate)`, or public and `#[doc(hidden)]` because this package's CLI, Node addon, testkit
//! or tests reach into it (no promise to anyone else).
//! - Front door: [`Workspace`] (repository, settings, backend choice) built from [`Flags`] (the
//!   one settings type of the CLI, the Node addon and the config file), and [`Identity`].
//! - Leases: [`Coordinator`] (its whole surface in one `impl`), [`Config`] with [`parse_nodes`]
//!   and [`parse_duration`], [`AcquireOptions`], [`WaitProgress`], [`InTheWay`], [`Holding`],
//!   [`Lease`], [`LeaseState`], [`FencingToken`].
//! - Guarded JSON state: [`StateFile`], [`Edit`], [`Pointer`], [`PendingWrite`],
//!   [`WriteOutcome`].
//! - The operator's records: [`LockStatus`] (with its wait-for [`Edge`]s), [`AuditEvent`],
//!   [`BreakOutcome`], [`NodeHealth`], [`HolderInfo`].
//! - Errors: [`Error`] (exit codes included) and [`Result`].
//!
//! # Layout
//! - `config`: raw flags, environment and config file become a checked [`Config`].
//! - `keys`: the one place that knows the Redis key layout.
//! - `backend`: the `backend::Node` and `backend::NodeAdmin` traits: the one seam to Redis
//!   (named `backend` so that "node" means the Node.js addon in `node/`).
//! - `redis_node`: a node that is a real Redis (one server or a Redis Cluster): every Redis
//!   command and the Lua of `lua/`.
//! - `clock`: elapsed time that counts system suspend, for lease validity.
//! - `quorum`: Redlock arithmetic (majority, validity, drift) and monotonic fencing tokens.
//! - `options`: [`AcquireOptions`]: how long to wait, and where wait feedback goes.
//! - `dir_handle`: files below the root through directory handles (never a symlink, never a
//!   FIFO, reads capped).
//! - `url`: Redis and Sentinel URLs as text, checked and shown without passwords (a leaf).
//! - `redact`: passwords out of every URL and text we show (re-exported by `config`).
//! - `coordinator`: the [`Coordinator`]'s whole surface in one `impl`, each method delegating to
//!   the module below that does the work.
//! - `connect`: building a [`Coordinator`]: Redis nodes (TLS included) or local file locks.
//! - `acquire`: the wait loop: release events, takeover of a gone holder, jitter, quarantine.
//! - `init`: marking brand-new Redis servers initialized, so they skip the restart quarantine.
//! - `join`: joining a lease an ancestor process holds (the capability in the environment).
//! - `lease`: a held [`Lease`]: token, renewal, loss and expiry, release.
//! - `local`: the one-machine backend on `flock` (`local/turn.rs`: joining a local lock and the
//!   joiners' turns).
//! - `holder`: who holds a lock, and whether a holder on this host is gone.
//! - `workspace`: the front ends' one entry: repository, settings, and the backend choice.
//! - `repo`: repository root, lock names of files, the private working directory.
//! - `session`: the live session registry, per-session state files, their cleanup and totals.
//! - `settings`: precedence of flags, environment and config file; the config file's schema
//!   and the namespace file.
//! - `deadlock`: wait-for edges beside the queue, the walk for a cycle, and its victim.
//! - `multi`: several locks at once ([`Coordinator::acquire_all`]).
//! - `slots`: one of N slots, a counting semaphore of leases ([`Coordinator::acquire_slot`]).
//! - `sys`: what is read from `/proc` (process start times, parents, umask) and the host name.
//! - `group`: the process group a `lock run` command runs in, and the guard that leads it.
//! - `run`: `lock run`: a child command supervised under leases.
//! - `state`: guarded JSON read-modify-write with atomic, fenced commits.
//! - `ops`: the operator's views: status, audit log, break.
//! - `stats`: wait and hold statistics from the audit log, and each node's health.
//! - `shown`: text from other processes and the environment, escaped and cut for display.
//! - `error`: the one error type and its exit codes.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> tractatus_lock::Result<()> {
//! use std::time::Duration;
//! use tractatus_lock::{AcquireOptions, Config, Coordinator, Identity, parse_nodes};
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
mod clock;
mod connect;
mod coordinator;
mod dir_handle;
mod handoff;
mod init;
mod join;
mod lease;
mod local;
mod multi;
mod options;
mod quorum;
mod redact;
mod sys;
mod url;

// The modules below are public only so that this package's CLI, its Node addon, its testkit and its
// tests can reach into them; they are hidden from the documentation because they are not a
// promise to anyone else. The public API is the re-exports at the end of this file.
#[doc(hidden)]
pub mod backend;
#[doc(hidden)]
pub mod config;
#[doc(hidden)]
pub mod deadlock;
#[doc(hidden)]
pub mod error;
#[doc(hidden)]
pub mod group;
#[doc(hidden)]
pub mod holder;
#[doc(hidden)]
pub mod keys;
#[doc(hidden)]
pub mod ops;
#[doc(hidden)]
pub mod redis_node;
#[doc(hidden)]
pub mod repo;
#[doc(hidden)]
pub mod run;
#[doc(hidden)]
pub mod session;
#[doc(hidden)]
pub mod settings;
#[doc(hidden)]
pub mod shown;
#[doc(hidden)]
pub mod slots;
#[doc(hidden)]
pub mod state;
#[doc(hidden)]
pub mod stats;
#[doc(hidden)]
pub mod workspace;

#[cfg(test)]
mod fake_node;

/// The README's Rust examples, compiled as doc-tests so that they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The library page's example (docs/library.md), compiled as a doc-test for the same reason.
#[cfg(doctest)]
#[doc = include_str!("../docs/library.md")]
pub struct LibraryDoctests;

// The public API: what an embedder needs, and no more (listed in the crate doc).
pub use config::{Config, parse_duration, parse_nodes};
pub use coordinator::Coordinator;
pub use deadlock::Edge;
pub use error::{Error, Result};
pub use holder::{HolderInfo, Identity};
pub use lease::{FencingToken, Lease, LeaseState};
pub use ops::{AuditEvent, BreakOutcome, LockStatus};
pub use options::{AcquireOptions, Holding, InTheWay, WaitProgress};
pub use settings::Flags;
pub use state::{Edit, PendingWrite, Pointer, StateFile, WriteOutcome};
pub use stats::NodeHealth;
pub use workspace::Workspace;
