//! The process group `lock run` puts its command in, and the guard that leads it. The guard is
//! a tiny process of this same binary (`tractatus __group-guard`), started in a new process
//! group before the command, so the group exists, and is recorded with the lease, before the
//! command runs. Its stdin is a pipe whose write end only `tractatus` holds: when `tractatus`
//! dies, even by SIGKILL, the pipe closes and the guard sends the group SIGTERM, then SIGKILL
//! within its grace (at most a third of the TTL, and never past the deadline below, so the group
//! is gone before the unrenewed lease runs out).
//!
//! The guard also holds the lease's deadline: `tractatus` tells it, after every look at its
//! leases, when to send SIGTERM and when SIGKILL should no renewal come (`Group::tell_deadline`,
//! times on `CLOCK_BOOTTIME`, which both processes read alike and which counts suspend). A
//! `tractatus` that is stopped (SIGSTOP, a debugger) or starved tells it nothing more, and the
//! guard alone ends the group before the lease's validity does; it says so on its stdout, and
//! `Group::finish` hands that on. The guard shrugs off SIGTERM, SIGINT, SIGHUP and SIGQUIT
//! (blocked: they are meant for the command). It runs no async runtime: it starts on every
//! `lock run`, and blocking `poll(2)` is all it needs.
//!
//! `tractatus` is the child subreaper, so orphans of the command come back to it, are still
//! counted and are reaped. A guard's arguments name its host and locks, so that the next holder
//! on this host can find a group left behind by an expired holder and wait for it.
//!
//! Whether the group is empty is learnt from events, not by looking at every process: every
//! descendant of ours is, once its parent is gone, our child (we are the subreaper), so while
//! any of them runs one of our children runs, and the end of each child reaches us as SIGCHLD.
//! So "nothing of the command runs" is "no child of ours but the guard" (our children are
//! listed in `/proc/self/task/*/children`, a few short files), looked at again on each SIGCHLD.
//! A process can also join the group without being ours (`setpgid` from elsewhere in the
//! session); that one is found once the guard has left the group (dismissed, it moves to our
//! group and says so, then ends, reaped after the release), when the group must have no member
//! left (`kill(-pgid, 0)`), and only then is every process looked at. When the command exits and
//! nothing else of it runs, the guard is dismissed and the leases released at once.
//!
//! A program that calls [`crate::run::supervise`] must call [`guard_main`] first thing in its
//! `main`, as `tractatus` does: the guard is that program started again.
//!
//! `lock run` starts the guard while it acquires its locks, idle: named `tractatus-idle`, not
//! `exe`, so that the next holder's look for an earlier holder's guard (which reads names
//! first) passes over a waiter's guard. Once the leases are granted the guard takes the name
//! `exe`, announces its locks (see `earlier`: the next holder looks at every process only when
//! a guard of its locks is announced) and says so, before the command starts. A guard started
//! for a held lease announces its locks at once. The guard's start (an exec of this program)
//! is then over before the lease begins.
//!
//! Layout: this file is `tractatus`'s side (start the guard, tell it deadlines, signal the
//! group, dismiss the guard); `empty` learns when the group is empty; `earlier` finds an earlier
//! holder's guard on this host; `guard` is the guard process's own side.

use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout, Command};
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal as signal_stream};
use tokio::time::Instant;

use crate::error::{Error, Result};

mod earlier;
mod empty;
mod guard;
pub(crate) use earlier::{guards_of, kill_group};
pub use guard::guard_main;
use guard::{LEFT, STOPPED};

/// The hidden first argument that makes `tractatus` a guard.
pub(crate) const GUARD_ARG: &str = "__group-guard";

/// Where the guard is started from: this very program, even if its file was replaced or
/// deleted since it started.
const GUARD_EXE: &str = "/proc/self/exe";

/// The kernel's name for a guard (`/proc/<pid>/comm`): the base name of [`GUARD_EXE`].
const GUARD_NAME: &std::ffi::CStr = c"exe";

/// What an idle guard calls itself (see [`Group::start`]): anything but [`GUARD_NAME`].
const IDLE_NAME: &std::ffi::CStr = c"tractatus-idle";

/// Before the grace in an idle guard's arguments.
const IDLE: &str = "idle:";

/// What an idle guard writes on its stdout once it bears a guard's name.
const ACTIVE: u8 = b'A';

/// How often a group is looked at while it is waited to empty when that cannot be learnt from
/// our children (a kernel without `/proc/<pid>/task/<tid>/children`, or a member that is not
/// our descendant): the kernel tells nobody but a parent when a process ends.
const POLL: Duration = Duration::from_millis(10);

/// The command's process group, led by its guard.
pub(crate) struct Group {
    guard: Child,
    /// Our end of the guard's stdin, non-blocking: a guard that is stopped (Ctrl-Z stops the
    /// whole group) must never stall us; a message it cannot take now is followed by a later one.
    to_guard: Option<OwnedFd>,
    /// The guard's stdout: its report once it has ended.
    from_guard: Option<ChildStdout>,
    /// The deadline last told the guard (SIGTERM, SIGKILL: ms of `CLOCK_BOOTTIME`).
    told: Option<(u64, u64)>,
    pgid: u32,
    start: Option<u64>,
    /// The command, once started: reaped by tokio, never by us.
    cmd: Option<u32>,
    /// Our terminal, when we handed its foreground to the group (given back at the end).
    tty: Option<std::fs::File>,
    /// SIGCHLD, made before the command starts so that no end of a child is missed: each
    /// descendant's end reaches us as one, its own or its parent's.
    child_ended: SignalStream,
    /// The guard's report, once it was dismissed (see [`Group::dismiss_guard`]).
    dismissed: Option<Option<Duration>>,
    /// Whether this kernel lists our children (`CONFIG_PROC_CHILDREN`); if not, every
    /// process is looked at, every [`POLL`].
    children_listed: bool,
    /// Whether the guard said it is ready (see [`Group::ready`]).
    ready: bool,
    /// For a guard started idle: whether it was told to take a guard's name.
    idle: Option<bool>,
}

impl Group {
    /// Become the child subreaper and start the guard in a new process group. `grace` is how
    /// long the guard waits between SIGTERM and SIGKILL should `tractatus` die; `locks` are
    /// (namespace, name) pairs, and `host` this host, written into its arguments.
    ///
    /// An `idle` guard is started before the leases are granted, so that its start (an exec
    /// of this program) is over by then. It does not bear a guard's name until
    /// [`Group::activate`]: a waiter's guard is no earlier holder's for the next holder's look
    /// (`guards_of`) to wait for.
    pub(crate) async fn start(
        grace: Duration,
        host: &str,
        locks: &[(&str, &str)],
        idle: bool,
    ) -> Result<Group> {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| Error::internal(format!("cannot become the child subreaper: {e}")))?;
        let child_ended = signal_stream(SignalKind::child())
            .map_err(|e| Error::internal(format!("cannot watch for SIGCHLD: {e}")))?;
        let mut c = Command::new(GUARD_EXE);
        let grace = grace.as_millis().to_string();
        c.arg(GUARD_ARG)
            .arg(if idle {
                format!("{IDLE}{grace}")
            } else {
                grace
            })
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
        let to_guard = guard
            .stdin
            .take()
            .and_then(|w| w.into_owned_fd().ok())
            .filter(|fd| set_nonblocking(fd).is_ok());
        let from_guard = guard.stdout.take();
        let pgid = guard.id().unwrap_or(0);
        if pgid == 0 || to_guard.is_none() || from_guard.is_none() {
            let _ = guard.start_kill();
            let _ = guard.wait().await;
            return Err(Error::internal("the group guard did not start"));
        }
        Ok(Group {
            guard,
            to_guard,
            from_guard,
            told: None,
            pgid,
            start: crate::sys::process_start_ticks(pgid),
            cmd: None,
            tty: None,
            child_ended,
            dismissed: None,
            children_listed: crate::sys::own_children().is_some(),
            ready: false,
            idle: idle.then_some(false),
        })
    }

    /// The leases are granted: an idle guard is to take a guard's name ([`Group::ready`]
    /// waits until it has). Nothing for a guard that was never idle.
    pub(crate) fn activate(&mut self) {
        if let (Some(told @ false), Some(fd)) = (self.idle.as_mut(), self.to_guard.as_ref()) {
            // Its pipe is empty while it is idle: the line goes whole, or the guard is gone.
            *told = nix::unistd::write(fd, b"a\n") == Ok(2);
        }
    }

    /// Wait until the guard is ready: its signals blocked, so that a signal to the group no
    /// longer ends it. Call before the command starts; until then the guard's own start (an
    /// exec of this program) overlaps our work: the look for an earlier holder's group and
    /// the group's record with the lease. Only then does the group take the terminal.
    pub(crate) async fn ready(&mut self) -> Result<()> {
        if self.ready {
            return Ok(());
        }
        let mut byte = [0u8; 1];
        let got = match self.from_guard.as_mut() {
            Some(out) => tokio::time::timeout(Duration::from_secs(5), out.read(&mut byte))
                .await
                .ok()
                .and_then(|r| r.ok()),
            None => None,
        };
        let mut fine = got == Some(1) && byte[0] == b'r';
        if fine && self.idle.is_some() {
            self.activate();
            let got = match (self.idle, self.from_guard.as_mut()) {
                (Some(true), Some(out)) => {
                    tokio::time::timeout(Duration::from_secs(5), out.read(&mut byte))
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                }
                _ => None,
            };
            fine = got == Some(1) && byte[0] == ACTIVE;
        }
        if !fine {
            let _ = self.guard.start_kill();
            return Err(Error::internal("the group guard did not start"));
        }
        self.ready = true;
        self.take_terminal();
        Ok(())
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

    /// Tell the guard its deadline: SIGTERM to the group at `term`, SIGKILL at `kill`, unless a
    /// later deadline comes first. Told again only when it moved; a guard that cannot take it
    /// now (its pipe is full while it is stopped) gets the next one.
    pub(crate) fn tell_deadline(&mut self, term: Instant, kill: Instant) {
        let (Some(boot), Some(fd)) = (crate::clock::boottime(), self.to_guard.as_ref()) else {
            return;
        };
        let now = Instant::now();
        // On the boot clock, rounded down: a deadline told early is safe, one told late is not.
        let at = |i: Instant| {
            u64::try_from((boot + i.saturating_duration_since(now)).as_millis()).unwrap_or(u64::MAX)
        };
        let deadline = (at(term), at(kill));
        // Read anew at every look, the same deadline comes out a millisecond either way: told
        // only when a renewal moved it, a few lines per TTL, so the pipe of a guard that is
        // stopped (Ctrl-Z) for minutes does not fill. Up to 5 ms off is well within the
        // deadline's own safety margin (a tenth of the TTL, see `run::Validity::for_guard`).
        let moved = |a: u64, b: u64| a.abs_diff(b) >= 5;
        if self
            .told
            .is_some_and(|(t, k)| !moved(t, deadline.0) && !moved(k, deadline.1))
        {
            return;
        }
        // One write below PIPE_BUF: the whole line or nothing.
        let line = format!("v {} {}\n", deadline.0, deadline.1);
        if nix::unistd::write(fd, line.as_bytes()) == Ok(line.len()) {
            self.told = Some(deadline);
        }
    }

    /// Let the guard go, and give the terminal back. Call once the group is empty. Returns
    /// when the guard had stopped the group itself because its deadline passed
    /// (`CLOCK_BOOTTIME`), `None` when it had not.
    pub(crate) async fn finish(mut self) -> Option<Duration> {
        let said = self.dismiss_guard().await;
        // A caller waits strangers out itself (see `run`); for any other, they end here.
        if self.strangers_remain() {
            self.signal(Signal::SIGKILL);
            let _ = self
                .strangers_gone_by(Instant::now() + Duration::from_secs(1))
                .await;
        }
        if let Some(tty) = self.tty.take() {
            give_back_terminal(&tty);
        }
        said
    }

    /// Let the guard go (once our descendants are gone) and wait until it has left the group
    /// (or ended); what [`Group::finish`] returns. Then a member left in the group is a
    /// stranger.
    pub(crate) async fn dismiss_guard(&mut self) -> Option<Duration> {
        if let Some(said) = self.dismissed {
            return said;
        }
        let said = self.end_guard().await;
        self.dismissed = Some(said);
        said
    }

    async fn end_guard(&mut self) -> Option<Duration> {
        if let Some(w) = self.to_guard.take() {
            let _ = nix::unistd::write(&w, b"d\n");
        }
        // What it says, until it has left the group (it then ends on its own, and is reaped
        // after the leases are released) or its stdout ends (it is gone).
        let mut said = Vec::new();
        let mut left = false;
        if let Some(out) = self.from_guard.as_mut() {
            let read = async {
                let mut buf = [0u8; 64];
                // Bounded: each read adds a byte at least, up to 256, or ends the loop.
                while said.len() < 256 {
                    match out.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => said.extend_from_slice(buf.get(..n).unwrap_or_default()),
                    }
                    if said.contains(&LEFT) {
                        left = true;
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
        }
        if !left
            && tokio::time::timeout(Duration::from_secs(2), self.guard.wait())
                .await
                .is_err()
        {
            let _ = self.guard.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.guard.wait()).await;
        }
        let text = String::from_utf8_lossy(&said);
        let at = text.split_once(STOPPED as char)?.1;
        Some(Duration::from_millis(
            at.split_whitespace().next()?.parse().ok()?,
        ))
    }
}

fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
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
