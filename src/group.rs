//! The process group `lock run` puts its command in, and the guard that leads it. The guard is
//! a tiny process of this same binary (`tractatus __group-guard`), started in a new process
//! group before the command, so the group exists, and is recorded with the lease, before the
//! command runs. Its stdin is a pipe whose write end only `tractatus` holds: when `tractatus`
//! dies, even by SIGKILL, the pipe closes and the guard sends the group SIGTERM, then SIGKILL
//! within its grace (at most a third of the TTL, so the group is gone before the unrenewed lease
//! runs out). The guard shrugs off SIGTERM, SIGINT, SIGHUP and SIGQUIT, which are meant for the
//! command. `tractatus` is the child subreaper, so orphans of the command come back to it, are
//! still counted and are reaped. A guard's arguments name its host and locks, so that the next
//! holder on this host can find a group left behind by an expired holder and wait for it.
//!
//! A program that calls [`crate::run::supervise`] must call [`guard_main`] first thing in its
//! `main`, as `tractatus` does: the guard is that program started again.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::sys::{ProcStat, all_processes};

/// The hidden first argument that makes `tractatus` a guard.
pub const GUARD_ARG: &str = "__group-guard";

/// How often a group is looked at while it is waited to empty: the kernel tells nobody but a
/// parent when a process ends, and the group's members are mostly not our children.
const POLL: Duration = Duration::from_millis(10);

/// The command's process group, led by its guard.
pub(crate) struct Group {
    guard: Child,
    to_guard: Option<ChildStdin>,
    pgid: u32,
    start: Option<u64>,
    /// The command, once started: reaped by tokio, never by us.
    cmd: Option<u32>,
    /// Our terminal, when we handed its foreground to the group (given back at the end).
    tty: Option<std::fs::File>,
}

impl Group {
    /// Become the child subreaper and start the guard in a new process group. `grace` is how
    /// long the guard waits between SIGTERM and SIGKILL should `tractatus` die; `locks` are
    /// (namespace, name) pairs, and `host` this host, written into its arguments.
    pub(crate) async fn start(
        grace: Duration,
        host: &str,
        locks: &[(&str, &str)],
    ) -> Result<Group> {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| Error::internal(format!("cannot become the child subreaper: {e}")))?;
        // This very program, even if its file was replaced or deleted since it started.
        let mut c = Command::new("/proc/self/exe");
        c.arg(GUARD_ARG)
            .arg(grace.as_millis().to_string())
            .arg(host);
        for (ns, name) in locks {
            c.arg(ns).arg(name);
        }
        let mut guard = c
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::internal(format!("cannot start the group guard: {e}")))?;
        let to_guard = guard.stdin.take();
        // Ready once its handlers are in place: a signal to the group must not end it.
        let mut ready = [0u8; 1];
        let got = match guard.stdout.take() {
            Some(mut out) => tokio::time::timeout(Duration::from_secs(5), out.read(&mut ready))
                .await
                .ok()
                .and_then(|r| r.ok()),
            None => None,
        };
        let pgid = guard.id().unwrap_or(0);
        if got != Some(1) || pgid == 0 {
            let _ = guard.start_kill();
            let _ = guard.wait().await;
            return Err(Error::internal("the group guard did not start"));
        }
        let mut group = Group {
            guard,
            to_guard,
            pgid,
            start: crate::sys::process_start_ticks(pgid),
            cmd: None,
            tty: None,
        };
        group.take_terminal();
        Ok(group)
    }

    /// The group's id (the guard's pid).
    pub(crate) fn pgid(&self) -> u32 {
        self.pgid
    }

    /// The guard's start time: with the group id, it names this group for good.
    pub(crate) fn start_ticks(&self) -> Option<u64> {
        self.start
    }

    /// Note the command's pid once it runs (it is tokio's to reap).
    pub(crate) fn set_command(&mut self, pid: Option<u32>) {
        self.cmd = pid;
    }

    /// When we lead our terminal's foreground, the group takes it: the command can read the
    /// terminal, and Ctrl-C reaches it straight from the terminal.
    fn take_terminal(&mut self) {
        let Ok(tty) = std::fs::File::open("/dev/tty") else {
            return;
        };
        let ours = nix::unistd::tcgetpgrp(tty.as_fd()).ok() == Some(nix::unistd::getpgrp());
        if ours && nix::unistd::tcsetpgrp(tty.as_fd(), pid(self.pgid)).is_ok() {
            self.tty = Some(tty);
        }
    }

    /// True when the terminal's foreground was handed to the group, so the terminal delivers
    /// its hang-up to the command itself.
    pub(crate) fn has_terminal(&self) -> bool {
        self.tty.is_some()
    }

    /// Send `sig` to the whole group (the guard ignores what it can) and to any descendant
    /// that left it.
    pub(crate) fn signal(&self, sig: Signal) {
        let _ = kill(group_pid(self.pgid), sig);
        for (p, s) in self.scan() {
            if s.pgrp != self.pgid && crate::sys::process_start_ticks(p) == Some(s.start_ticks) {
                let _ = kill(pid(p), sig);
            }
        }
    }

    /// The group's live members other than the guard, and our descendants that left the group;
    /// our zombie children among them are reaped on the way.
    fn scan(&self) -> Vec<(u32, ProcStat)> {
        let me = std::process::id();
        let all = all_processes();
        let mut ours: Vec<u32> = vec![me];
        let mut i = 0;
        while i < ours.len() {
            let parent = ours[i];
            ours.extend(
                all.iter()
                    .filter(|(p, s)| s.ppid == parent && *p != self.pgid)
                    .map(|(p, _)| *p),
            );
            i += 1;
        }
        let mut live = Vec::new();
        for (p, s) in all {
            if p == self.pgid || p == me || (s.pgrp != self.pgid && !ours.contains(&p)) {
                continue;
            }
            if s.runs() {
                live.push((p, s));
            } else if s.ppid == me && Some(p) != self.cmd {
                let _ = nix::sys::wait::waitpid(pid(p), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            }
        }
        live
    }

    /// True when nothing of the command runs any more.
    pub(crate) fn is_empty(&self) -> bool {
        self.scan().is_empty()
    }

    /// Wait until nothing of the command runs, or `until`; true when it emptied.
    pub(crate) async fn emptied_by(&self, until: Instant) -> bool {
        loop {
            if self.is_empty() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(POLL.min(until - Instant::now())).await;
        }
    }

    /// Let the guard go and give the terminal back. Call once the group is empty.
    pub(crate) async fn finish(mut self) {
        if let Some(mut w) = self.to_guard.take() {
            let _ = w.write_all(b"d").await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.guard.wait()).await;
        let _ = self.guard.start_kill();
        if let Some(tty) = self.tty.take() {
            give_back_terminal(&tty);
        }
    }
}

/// Make our own group the terminal's foreground again. We are in the background by then, and
/// a background process asking this gets SIGTTOU unless it blocks it: blocked on this thread,
/// for this call only (a blocked mask would be inherited by later children).
fn give_back_terminal(tty: &std::fs::File) {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old)).is_ok() {
        let _ = nix::unistd::tcsetpgrp(tty.as_fd(), nix::unistd::getpgrp());
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
}

/// The `-pgid` that `kill` takes to mean a whole group.
fn group_pid(pgid: u32) -> Pid {
    Pid::from_raw(-i32::try_from(pgid).unwrap_or(i32::MAX))
}

fn pid(p: u32) -> Pid {
    Pid::from_raw(i32::try_from(p).unwrap_or(i32::MAX))
}

/// Live processes of group `pgid` other than `except`.
fn live_members(pgid: u32, except: u32) -> usize {
    all_processes()
        .iter()
        .filter(|(p, s)| s.pgrp == pgid && *p != except && s.runs())
        .count()
}

/// SIGKILL to a whole group (an expired holder's, whose time is over).
pub(crate) fn kill_group(pgid: u32) {
    let _ = kill(group_pid(pgid), Signal::SIGKILL);
}

/// True while some process of group `pgid` still runs (zombies do not count).
pub(crate) fn group_alive(pgid: u32) -> bool {
    pgid != 0 && live_members(pgid, 0) > 0
}

/// Guards on this host, other than `except`, of an earlier holder of one of `locks`: their
/// group ids. A guard outlives its group only by moments, so a guard found means a group that
/// may still run.
pub(crate) fn guards_of(host: &str, locks: &[(&str, &str)], except: u32) -> Vec<u32> {
    all_processes()
        .into_iter()
        .filter(|(p, s)| *p != except && s.pgrp == *p && s.runs())
        .filter(|(p, _)| {
            let args = crate::sys::cmdline(*p);
            args.get(1).map(String::as_str) == Some(GUARD_ARG)
                && args.get(3).map(String::as_str) == Some(host)
                && args
                    .get(4..)
                    .unwrap_or_default()
                    .chunks(2)
                    .any(|l| locks.iter().any(|(ns, n)| l == [*ns, *n]))
        })
        .map(|(p, _)| p)
        .collect()
}

/// The guard's `main`, when this process was started as one; `None` otherwise. Runs blocking
/// code only: it is its own process, started for this one wait.
pub fn guard_main() -> Option<u8> {
    // Read as OS strings: an argument that is not UTF-8 must not stop a real command.
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(GUARD_ARG)) {
        return None;
    }
    let grace = args
        .next()
        .and_then(|a| a.to_str()?.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(1));
    Some(guard(grace))
}

fn guard(grace: Duration) -> u8 {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 70;
    };
    // Handlers that never run: the signals stay with the command they were meant for.
    let handlers = rt.block_on(async {
        [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::hangup(),
            SignalKind::quit(),
        ]
        .map(signal)
    });
    if handlers.iter().any(|h| h.is_err()) {
        return 70;
    }
    let mut out = std::io::stdout();
    if out.write_all(b"r").and_then(|()| out.flush()).is_err() {
        return 70;
    }
    let mut byte = [0u8; 1];
    if matches!(std::io::stdin().read(&mut byte), Ok(1)) {
        // `tractatus` is done and the group is empty.
        return 0;
    }
    // `tractatus` is gone: end what it ran before its lease can run out.
    let me = std::process::id();
    let _ = kill(group_pid(me), Signal::SIGTERM);
    let until = std::time::Instant::now() + grace;
    while std::time::Instant::now() < until {
        if live_members(me, me) == 0 {
            return 0;
        }
        std::thread::sleep(POLL);
    }
    // The guard goes with the group: it must not keep the group alive.
    let _ = kill(group_pid(me), Signal::SIGKILL);
    0
}
