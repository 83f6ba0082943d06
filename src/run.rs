//! `lock run`: run a child command while holding leases. The child inherits stdin, stdout and
//! stderr untouched and gets `TRACTATUS_LOCK_NAME`, `TRACTATUS_FENCING_TOKEN` and
//! `TRACTATUS_SESSION_ID`. SIGTERM is forwarded to it; SIGINT and SIGHUP too, unless we are in
//! the foreground of our terminal, which then delivers them to the command itself.
//!
//! When renewal keeps failing, the command gets SIGTERM while the lease is still valid (once less
//! than `min(kill_grace, ttl/4)` is left, after about three quarters of a TTL of failed renewals),
//! and SIGKILL the moment the lease is lost; a lease lost outright (taken, broken, or noticed only
//! after this process was paused) gives SIGTERM at once and SIGKILL after the grace period. Both
//! signals go to the command and every process it started that is still its descendant (found in
//! `/proc`), so `sh -c` and `npm run` wrappers do not leave workers running without the lock.
//! Past that point only a fencing check at the storage can stop a late write.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use futures_util::future::select_all;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use crate::error::{Error, Result};
use crate::lease::{Lease, LeaseState};

/// How a supervised command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The command exited on its own: its exit code (128 + signal when killed by a signal).
    Exited(i32),
    /// A lease was lost (or was about to be, with renewal failing) while it ran; the command
    /// was terminated.
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
///
/// Refuses to start the command when a lease is no longer valid. `kill_grace` is the time
/// between SIGTERM and SIGKILL; the early SIGTERM on failing renewal comes at most half a TTL
/// before the lease would run out.
pub async fn supervise(
    leases: &[Lease],
    session_id: &str,
    argv: &[String],
    kill_grace: Duration,
) -> Result<RunOutcome> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::usage("no command given after --"))?;
    // Handlers first: a signal between spawn and here must not kill us with the child running.
    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::internal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(Error::internal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(Error::internal)?;
    for l in leases {
        l.check_valid()?;
    }
    let names: Vec<&str> = leases.iter().map(Lease::name).collect();
    let tokens: Vec<String> = leases.iter().map(|l| l.token().to_string()).collect();
    let mut child = Command::new(program)
        .args(args)
        .env("TRACTATUS_LOCK_NAME", names.join(","))
        .env("TRACTATUS_FENCING_TOKEN", tokens.join(","))
        .env("TRACTATUS_SESSION_ID", session_id)
        .env(crate::join::ENV_VAR, crate::join::command_env(leases))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::usage(format!("cannot run '{program}': {e}")))?;

    let lost = first_of(leases, |l| l.lost());
    // A quarter of the TTL: renewals run every third and retry every tenth, so by then at least
    // four attempts in a row have failed. A short stall must not cost the command its run.
    let margin = leases
        .iter()
        .map(|l| l.ttl() / 4)
        .min()
        .unwrap_or_default()
        .min(kill_grace);
    let expiring = first_of(leases, |l| {
        let f = l.expiring(margin);
        async move {
            f.await;
            String::new()
        }
    });
    tokio::pin!(lost, expiring);
    let mut warned: Option<String> = None;
    // On a hang-up the terminal is gone before we handle SIGHUP: decide from the start.
    let foreground_at_start = terminal_delivers_to_child();
    // The command and its descendants when it was first sent SIGTERM: killed at the end, so a
    // worker whose parent already exited is not missed.
    let mut tree: Vec<(u32, u64)> = Vec::new();
    loop {
        tokio::select! {
            // Loss first: if the child exits in the same instant, the lease was already gone.
            biased;
            (name, reason) = &mut lost => {
                // Warned earlier: its grace is over, the lease is gone, SIGKILL now. Lost
                // without warning (taken, broken, or we were paused): SIGTERM, then the grace.
                let left = if warned.is_some() {
                    Duration::ZERO
                } else {
                    tree = process_tree(&child);
                    signal_all(&tree, Signal::SIGTERM);
                    kill_grace
                };
                let _ = tokio::time::timeout(left, child.wait()).await;
                // Whatever is left of the command, and of what it started, dies now.
                tree.extend(process_tree(&child));
                signal_all(&tree, Signal::SIGKILL);
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Ok(RunOutcome::LeaseLost {
                    name,
                    reason: format!("{reason}; the command was terminated"),
                });
            }
            status = child.wait() => {
                let status = status.map_err(|e| Error::internal(format!("waiting for '{program}': {e}")))?;
                let code = exit_code(status);
                for l in leases {
                    if let LeaseState::Lost(reason) = l.state() {
                        signal_all(&tree, Signal::SIGKILL);
                        return Ok(RunOutcome::LeaseLost {
                            name: l.name().to_owned(),
                            reason: format!("{reason}; the command exited ({code}) about then"),
                        });
                    }
                }
                if let Some(name) = warned {
                    // Terminated for a lease about to run out: leave nothing of it running.
                    signal_all(&tree, Signal::SIGKILL);
                    return Ok(RunOutcome::LeaseLost {
                        name,
                        reason: "renewal kept failing and the lease was about to run out; the \
                                 command was sent SIGTERM"
                            .into(),
                    });
                }
                return Ok(RunOutcome::Exited(code));
            }
            (name, _) = &mut expiring, if warned.is_none() => {
                tree = process_tree(&child);
                signal_all(&tree, Signal::SIGTERM);
                warned = Some(name);
            }
            // A Ctrl-C or hang-up of the terminal whose foreground we are reaches the command by
            // itself (it shares our process group): forwarding it would deliver it twice.
            _ = sigint.recv() => if !terminal_delivers_to_child() { forward(&child, Signal::SIGINT) },
            _ = sigterm.recv() => forward(&child, Signal::SIGTERM),
            _ = sighup.recv() => if !foreground_at_start { forward(&child, Signal::SIGHUP) },
        }
    }
}

/// The first of the leases' futures to finish, with the lease's name; pending forever when
/// there are no leases.
async fn first_of<F, Fut>(leases: &[Lease], f: F) -> (String, String)
where
    F: Fn(&Lease) -> Fut,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    if leases.is_empty() {
        return std::future::pending().await;
    }
    let all = leases.iter().map(|l| {
        let name = l.name().to_owned();
        let fut = f(l);
        Box::pin(async move { (name, fut.await) })
    });
    select_all(all).await.0
}

/// The child and every process descending from it, each with its start time (so that a pid
/// reused by another program later is never signalled). Read from `/proc`; empty when the child
/// has been reaped.
fn process_tree(child: &Child) -> Vec<(u32, u64)> {
    let Some(root) = child.id() else {
        return Vec::new();
    };
    let all: Vec<(u32, u32, u64)> = crate::sys::all_processes()
        .into_iter()
        .map(|(pid, s)| (pid, s.ppid, s.start_ticks))
        .collect();
    let mut tree: Vec<(u32, u64)> = all
        .iter()
        .filter(|p| p.0 == root)
        .map(|p| (p.0, p.2))
        .collect();
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i].0;
        tree.extend(all.iter().filter(|p| p.1 == parent).map(|p| (p.0, p.2)));
        i += 1;
    }
    tree
}

/// Send `sig` to each process of `tree` that is still the same process (same start time).
fn signal_all(tree: &[(u32, u64)], sig: Signal) {
    for &(pid, start) in tree {
        if crate::sys::process_start_ticks(pid) == Some(start)
            && let Ok(raw) = i32::try_from(pid)
        {
            let _ = kill(Pid::from_raw(raw), sig);
        }
    }
}

/// True when we are in the foreground process group of our controlling terminal, so that the
/// terminal's SIGINT and SIGHUP reach the command (in our group) without us. Then a SIGINT sent
/// to `tractatus` alone (`kill -INT`) is not passed on either; SIGTERM always is.
fn terminal_delivers_to_child() -> bool {
    std::fs::File::open("/dev/tty")
        .ok()
        .and_then(|tty| nix::unistd::tcgetpgrp(&tty).ok())
        .is_some_and(|foreground| foreground == nix::unistd::getpgrp())
}

fn forward(child: &Child, sig: Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}
