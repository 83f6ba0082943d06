//! `tractatus_lock`: leases on Redis (one node or a Redlock quorum of independent masters, or
//! local OS file locks with no Redis), fencing tokens checked where the write lands, and JSON
//! state files committed atomically under a lease.
//!
//! # Layout
//! - [`config`]: raw flags, environment and config file become a checked [`Config`].
//! - [`keys`]: the one place that knows the Redis key layout.
//! - [`node`]: the [`node::Node`] trait, the seam between quorum logic and Redis.
//! - [`redis_node`]: a node that is a real Redis, running the Lua scripts of `lua/`.
//! - [`quorum`]: Redlock arithmetic (majority, validity, drift) and monotonic fencing tokens.
//! - [`lease`]: [`Coordinator`] and [`Lease`]: acquire on events, renew, notice loss, release.
//! - [`local`]: the one-machine backend on `flock`.
//! - [`holder`]: who holds a lock, and whether a holder on this host is gone.
//! - [`repo`]: repository root, lock names of files, namespace and the config file.
//! - [`settings`]: precedence of flags, environment and config file.
//! - [`run`]: `lock run`: a child command supervised under leases.
//! - [`state`]: guarded JSON read-modify-write with atomic, fenced commits.
//! - [`ops`]: the operator's views: status, audit log, break.
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
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod holder;
pub mod keys;
pub mod lease;
pub mod local;
pub mod node;
pub mod ops;
pub mod quorum;
pub mod redis_node;
pub mod repo;
pub mod run;
pub mod settings;
pub mod state;
// TEMPORARY (h-node): replaced at integration
pub mod workspace;

pub use config::Config;
pub use error::{Error, Result};
pub use holder::{HolderInfo, Identity};
pub use lease::{AcquireOptions, Coordinator, FencingToken, Lease, LeaseState};
