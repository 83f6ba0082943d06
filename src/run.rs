//! `lock run`: run a child command while holding leases. The child inherits stdin, stdout and
//! stderr untouched and gets `TRACTATUS_LOCK_NAME`, `TRACTATUS_FENCING_TOKEN` and
//! `TRACTATUS_SESSION_ID`. SIGINT, SIGTERM and SIGHUP are forwarded to it. If a lease is lost
//! while it runs, it gets SIGTERM, then SIGKILL after a grace period.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use futures_util::future::select_all;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use crate::error::{Error, Result};
use crate::lease::Lease;

/// How a supervised command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The command exited on its own: its exit code (128 + signal when killed by a signal).
    Exited(i32),
    /// A lease was lost while it ran; the command was terminated.
    LeaseLost {
        /// The lost lock.
        name: String,
        /// Why it was lost.
        reason: String,
    },
}

/// The exit code of a finished process, shell style: 128 + N when killed by signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(70)
}

/// Run `argv` while `leases` are held and renewed; release nothing (the caller does).
pub async fn supervise(
    leases: &[Lease],
    session_id: &str,
    argv: &[String],
    kill_grace: Duration,
) -> Result<RunOutcome> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::usage("no command given after --"))?;
    let names: Vec<&str> = leases.iter().map(Lease::name).collect();
    let tokens: Vec<String> = leases.iter().map(|l| l.token().to_string()).collect();
    let mut child = Command::new(program)
        .args(args)
        .env("TRACTATUS_LOCK_NAME", names.join(","))
        .env("TRACTATUS_FENCING_TOKEN", tokens.join(","))
        .env("TRACTATUS_SESSION_ID", session_id)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::usage(format!("cannot run '{program}': {e}")))?;

    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::internal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(Error::internal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(Error::internal)?;
    let lost = async {
        if leases.is_empty() {
            std::future::pending::<(String, String)>().await
        } else {
            let all = leases.iter().map(|l| {
                let name = l.name().to_owned();
                let f = l.lost();
                Box::pin(async move { (name, f.await) })
            });
            select_all(all).await.0
        }
    };
    tokio::pin!(lost);
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| Error::internal(format!("waiting for '{program}': {e}")))?;
                return Ok(RunOutcome::Exited(exit_code(status)));
            }
            _ = sigint.recv() => forward(&child, Signal::SIGINT),
            _ = sigterm.recv() => forward(&child, Signal::SIGTERM),
            _ = sighup.recv() => forward(&child, Signal::SIGHUP),
            (name, reason) = &mut lost => {
                terminate(&mut child, kill_grace).await;
                return Ok(RunOutcome::LeaseLost { name, reason });
            }
        }
    }
}

fn forward(child: &Child, sig: Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`.
async fn terminate(child: &mut Child, grace: Duration) {
    forward(child, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}
