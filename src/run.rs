//! `lock run`: run a child command while holding leases, and never let go of them while any
//! process of the command runs. The command runs in its own process group (see
//! [`crate::group`]), recorded with the leases, inherits stdin, stdout and stderr untouched and
//! gets `TRACTATUS_LOCK_NAME`, `TRACTATUS_FENCING_TOKEN` and `TRACTATUS_SESSION_ID` (and
//! `TRACTATUS_SLOT` under a slot, see [`crate::slots`]). SIGTERM and
//! SIGINT that reach `tractatus` go to the whole group; SIGHUP too, unless the group has the
//! terminal's foreground (handed to it when we had it), which then delivers it by itself.
//!
//! When the command exits, what it left running in its group (or orphaned to us, the child
//! subreaper) gets SIGTERM and, after the grace, SIGKILL; the leases are released only once
//! nothing is left. When renewal keeps failing, the group gets SIGTERM while the lease is still
//! valid (once less than `min(kill_grace, ttl/4)` is left) and SIGKILL just before the validity
//! ends; a lease lost outright (taken, broken, stopped at --max-hold, or noticed only after this
//! process was paused) gives SIGTERM at once and SIGKILL after the grace, but never later than
//! just before the validity last seen ends, so the next holder cannot start beside it. Past that
//! point only a fencing check at the storage can stop a late write.
//!
//! All of that needs this process to run. Should it be stopped (SIGSTOP, a debugger) or starved
//! while the command runs on, the group's guard ends the command on its own: after every look
//! at the leases it is told the deadline (`Validity::for_guard`), and a deadline that passes
//! with no later one is its cue. The run then ends with the lease lost (76), saying that the
//! guard stopped the command.
//!
//! Layout: this file supervises (start, signal forwarding, renewal, the end); `start` is what
//! comes before the command (the group started early, the wait for an earlier holder's group,
//! the group's record); `validity` is the leases' validity and the guard's deadline.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use futures_util::future::select_all;
use nix::sys::signal::Signal;
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::group::Group;
use crate::lease::{Lease, LeaseState};

mod start;
mod validity;
pub use start::{StartedGroup, start_group};
use start::{guard_grace, prepare};
use validity::Validity;

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

/// Run `argv` while `leases` are held and renewed; release nothing (the caller does, once this
/// returns: by then nothing of the command runs).
///
/// Refuses to start the command when a lease is no longer valid. `kill_grace` is the time
/// between SIGTERM and SIGKILL, never past the lease's validity; the early SIGTERM on failing
/// renewal comes at most a quarter of a TTL before the lease would run out. The calling
/// program must call [`crate::group::guard_main`] first in its `main` (the group's guard is
/// this program started again).
pub async fn supervise(
    leases: &[Lease],
    session_id: &str,
    argv: &[String],
    kill_grace: Duration,
) -> Result<RunOutcome> {
    supervise_with_env(leases, session_id, argv, kill_grace, &[]).await
}

/// [`supervise`], with `env` set on the command besides the `TRACTATUS_*` variables (`lock
/// run --slots` gives `TRACTATUS_SLOT`).
pub async fn supervise_with_env(
    leases: &[Lease],
    session_id: &str,
    argv: &[String],
    kill_grace: Duration,
    env: &[(&str, String)],
) -> Result<RunOutcome> {
    supervise_in(None, leases, session_id, argv, kill_grace, env).await
}

/// [`supervise`] in a group from [`start_group`] (a fresh one when the leases turned out to
/// need another: another TTL, other locks).
pub async fn supervise_started(
    group: StartedGroup,
    leases: &[Lease],
    session_id: &str,
    argv: &[String],
    kill_grace: Duration,
) -> Result<RunOutcome> {
    supervise_in(Some(group), leases, session_id, argv, kill_grace, &[]).await
}

async fn supervise_in(
    started: Option<StartedGroup>,
    leases: &[Lease],
    session_id: &str,
    argv: &[String],
    kill_grace: Duration,
    env: &[(&str, String)],
) -> Result<RunOutcome> {
    let checked = check_start(leases, argv);
    let (started, (program, args)) = match (checked, started) {
        (Ok(c), s) => (s, c),
        (Err(e), s) => {
            if let Some(s) = s {
                s.abandon().await;
            }
            return Err(e);
        }
    };
    // Handlers first: a signal between spawn and here must not kill us with the child running.
    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::internal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(Error::internal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(Error::internal)?;
    let ttl = leases.iter().map(Lease::ttl).min();
    let guard_grace = guard_grace(ttl, kill_grace);
    let host = crate::holder::this_host();
    // Each lock as the guards know it: namespace and coordinator (a lock of the same name in
    // another repository's clone or on another Redis is another lock), and name.
    let scopes: Vec<String> = leases.iter().map(Lease::guard_scope).collect();
    let locks: Vec<(&str, &str)> = leases
        .iter()
        .zip(&scopes)
        .map(|(l, scope)| (scope.as_str(), l.name()))
        .collect();
    let fits = started.as_ref().is_some_and(|s| {
        let mut theirs: Vec<(&str, &str)> = s
            .locks
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let mut ours = locks.clone();
        theirs.sort_unstable();
        ours.sort_unstable();
        s.grace == guard_grace && theirs == ours
    });
    let mut group = match started {
        Some(s) if fits => s.group,
        other => {
            if let Some(s) = other {
                s.abandon().await;
            }
            Group::start(guard_grace, &host, &locks, false).await?
        }
    };
    // Named as a guard from now on (waited for before the command starts, see `ready`).
    group.activate();
    // A joined lease is our ancestor's: its group (which we run in) is not an earlier holder's
    // to wait for, and its holder record keeps naming the ancestor's group.
    let own_locks: Vec<(&str, &str)> = leases
        .iter()
        .zip(&scopes)
        .filter(|(l, _)| !l.is_joined())
        .map(|(l, scope)| (scope.as_str(), l.name()))
        .collect();
    let prepared = match prepare(leases, &group, &host, &own_locks, kill_grace).await {
        Ok(()) => group.ready().await,
        Err(e) => Err(e),
    };
    if let Err(e) = prepared {
        group.finish().await;
        return Err(e);
    }
    // A lease a release handed us runs on probation until its confirmation lands (in the
    // background since the grant, usually done by now): the guard must be told a whole TTL's
    // deadline, not the probation's.
    for lease in leases.iter() {
        lease.off_probation().await;
    }
    // Lost before the command started (its confirmation found it gone): nothing to stop.
    if let Some(e) = leases.iter().find_map(|l| l.check_valid().err()) {
        group.finish().await;
        return Err(e);
    }
    // A quarter of the TTL: renewals run every third and retry every tenth, so by then at least
    // four attempts in a row have failed. A short stall must not cost the command its run.
    let margin = ttl.map(|t| t / 4).unwrap_or_default().min(kill_grace);
    let mut validity = Validity::new(leases);
    // The guard knows the deadline before there is a command to stop.
    validity.tell(&mut group, margin);
    let names: Vec<&str> = leases.iter().map(Lease::name).collect();
    let tokens: Vec<String> = leases.iter().map(|l| l.token().to_string()).collect();
    let spawned = Command::new(program)
        .args(args)
        .env("TRACTATUS_LOCK_NAME", names.join(","))
        .env("TRACTATUS_FENCING_TOKEN", tokens.join(","))
        .env("TRACTATUS_SESSION_ID", session_id)
        .env(crate::join::ENV_VAR, crate::join::command_env(leases))
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .process_group(i32::try_from(group.pgid()).unwrap_or(0))
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            group.finish().await;
            return Err(Error::usage(format!("cannot run '{program}': {e}")));
        }
    };
    group.set_command(child.id());

    let lost = first_of(leases, |l| l.lost());
    let expiring = first_of(leases, |l| {
        let f = l.expiring(margin);
        async move {
            f.await;
            String::new()
        }
    });
    tokio::pin!(lost, expiring);
    let mut tick = tokio::time::interval(validity.period);
    let mut warned: Option<String> = None;
    let mut lost_to: Option<(String, String)> = None;
    // When the group gets SIGKILL, if it still runs: set once the lease is in danger.
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    // When a SIGTERM sent to us was passed on: what is left of the command had it already.
    let mut terminated: Option<Instant> = None;
    // When we began to stop the command for the lease's sake (boot clock), to tell whether we
    // or the guard did it first.
    let mut stopping_since: Option<std::time::Duration> = None;
    let status = loop {
        let kill_timer = kill_at
            .filter(|_| !killed)
            .map(|k| k.min(validity.last_moment()));
        tokio::select! {
            // Loss first: if the child exits in the same instant, the lease was already gone.
            biased;
            (name, reason) = &mut lost, if lost_to.is_none() => {
                // Lost without warning (taken, broken, stopped at --max-hold, or we were
                // paused): SIGTERM, then the grace. Either way SIGKILL comes no later than
                // just before the validity last seen ends (at once when it has ended).
                if warned.is_none() {
                    group.signal(Signal::SIGTERM);
                }
                stopping_since = stopping_since.or_else(crate::clock::boottime);
                let at = Instant::now() + kill_grace;
                kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
                lost_to = Some((name, reason));
            }
            _ = sleep_until_some(kill_timer) => {
                group.signal(Signal::SIGKILL);
                killed = true;
            }
            status = child.wait() => break status,
            (name, _) = &mut expiring, if warned.is_none() && lost_to.is_none() => {
                group.signal(Signal::SIGTERM);
                stopping_since = stopping_since.or_else(crate::clock::boottime);
                kill_at = Some(validity.last_moment());
                warned = Some(name);
            }
            _ = tick.tick() => {
                validity.refresh(leases);
                validity.tell(&mut group, margin);
            }
            // Our group no longer has the terminal's foreground (the command's has), so a
            // SIGINT that reaches us was sent to us alone: pass it on. A hang-up of a terminal
            // whose foreground the command has reaches the command by itself.
            _ = sigint.recv() => group.signal(Signal::SIGINT),
            _ = sigterm.recv() => {
                group.signal(Signal::SIGTERM);
                terminated.get_or_insert_with(Instant::now);
            }
            _ = sighup.recv() => if !group.has_terminal() { group.signal(Signal::SIGHUP) },
        }
    };
    let lost_at_exit = leases.iter().find_map(|l| match l.state() {
        LeaseState::Lost(reason) => Some((l.name().to_owned(), reason)),
        _ => None,
    });
    // What the command started and left behind goes too, before the lock can be released.
    // In danger already: the deadline stands. Lost as it exited: no grace left. Told to stop:
    // the grace counts from then. Else the leftovers get SIGTERM and the grace.
    let mut leftovers_until: Option<Instant> = None;
    let mut leftovers_deadline = |group: &Group| {
        *leftovers_until.get_or_insert_with(|| match (kill_at, terminated) {
            (Some(k), _) => k,
            _ if lost_at_exit.is_some() => Instant::now(),
            (None, Some(t)) => t + kill_grace,
            (None, None) => {
                group.signal(Signal::SIGTERM);
                Instant::now() + kill_grace
            }
        })
    };
    if !group.is_empty() {
        let kill_at = leftovers_deadline(&group);
        // Bounded: SIGKILL at `until`, after which the kernel ends them.
        loop {
            validity.refresh(leases);
            validity.tell(&mut group, margin);
            let until = kill_at.min(validity.last_moment());
            if group
                .emptied_by(until.min(Instant::now() + validity.period))
                .await
            {
                break;
            }
            if !killed && Instant::now() >= until {
                group.signal(Signal::SIGKILL);
                killed = true;
            }
        }
    }
    // No descendant of ours runs: the guard goes, and what is left in its group then joined
    // it from elsewhere (rare; looked at by scanning every process). It goes the same way.
    let guard_stopped = group.dismiss_guard().await;
    if group.strangers_remain() {
        let kill_at = leftovers_deadline(&group);
        loop {
            validity.refresh(leases);
            let until = kill_at.min(validity.last_moment());
            if group
                .strangers_gone_by(until.min(Instant::now() + validity.period))
                .await
            {
                break;
            }
            if !killed && Instant::now() >= until {
                group.signal(Signal::SIGKILL);
                killed = true;
            }
        }
    }
    group.finish().await;
    let status = status.map_err(|e| Error::internal(format!("waiting for '{program}': {e}")))?;
    let code = exit_code(status);
    // The guard acted before we did (or we never did): we were stopped or starved, and no
    // renewal reached it in time. What we noticed later (the validity ran out) is its effect.
    if let Some(at) = guard_stopped
        && stopping_since.is_none_or(|ours| at < ours)
    {
        let name = leases
            .iter()
            .zip(&validity.known)
            .filter_map(|(l, v)| Some((l.name(), (*v)?)))
            .min_by_key(|(_, v)| *v)
            .map_or_else(|| names.join(","), |(n, _)| n.to_owned());
        return Ok(RunOutcome::LeaseLost {
            name,
            reason: "no renewal reached the command's guard before the lease's deadline (this \
                     tractatus process was stopped or starved, or renewal failed): the guard \
                     stopped the command (SIGTERM, then SIGKILL) before the lease could run out"
                .into(),
        });
    }
    if let Some((name, reason)) = lost_to {
        return Ok(RunOutcome::LeaseLost {
            name,
            reason: format!("{reason}; the command was terminated"),
        });
    }
    if let Some((name, reason)) = lost_at_exit {
        return Ok(RunOutcome::LeaseLost {
            name,
            reason: format!("{reason}; the command exited ({code}) about then"),
        });
    }
    if let Some(name) = warned {
        return Ok(RunOutcome::LeaseLost {
            name,
            reason: "renewal kept failing and the lease was about to run out; the command was \
                     sent SIGTERM"
                .into(),
        });
    }
    Ok(RunOutcome::Exited(code))
}

/// The command and its arguments, once every lease is found valid.
fn check_start<'a>(leases: &[Lease], argv: &'a [String]) -> Result<(&'a String, &'a [String])> {
    let split = argv
        .split_first()
        .ok_or_else(|| Error::usage("no command given after --"))?;
    for l in leases {
        l.check_valid()?;
    }
    Ok(split)
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
