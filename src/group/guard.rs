//! The guard's side: the process `tractatus __group-guard` that leads the command's group (see
//! the parent module). It runs no async runtime and reads no configuration: it starts on
//! every `lock run`, and blocking `poll(2)` on its stdin is all it needs. What it hears there
//! (deadlines, "done", or the end of the pipe when `tractatus` is gone) is [`Heard`].

use std::io::Write;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};

use super::{ACTIVE, GUARD_ARG, GUARD_NAME, IDLE, IDLE_NAME, POLL, group_pid};
use crate::sys::live_members;

/// What the guard writes on its stdout when a deadline passed with no renewal: it stopped the
/// group itself.
pub(super) const STOPPED: u8 = b'x';

/// What the guard writes on its stdout once dismissed, when it has left the group.
pub(super) const LEFT: u8 = b'L';

/// How long the guard sleeps at most before it reads the boot clock again: `poll(2)` times out
/// on a clock that stops during suspend, so after a resume it would wake late by the suspend.
const LOOK_AGAIN: Duration = Duration::from_millis(250);

/// The guard's `main`, when this process was started as one; `None` otherwise. Runs blocking
/// code only: it is its own process, started for this one wait.
pub fn guard_main() -> Option<u8> {
    // Read as OS strings: an argument that is not UTF-8 must not stop a real command.
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(GUARD_ARG)) {
        return None;
    }
    // "idle:GRACE" for a guard started before the lease was granted (see `Group::start`).
    let grace = args.next();
    let grace = grace.as_deref().and_then(|a| a.to_str()).unwrap_or("");
    let (idle, grace) = match grace.strip_prefix(IDLE) {
        Some(ms) => (true, ms),
        None => (false, grace),
    };
    let grace = grace
        .parse()
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(1));
    // The host, then the locks: namespace and name.
    let locks: Vec<std::ffi::OsString> = args.skip(1).collect();
    Some(guard(grace, idle, &locks))
}

/// Announce the locks in `args` (pairs of namespace and name) as guarded here, until this
/// guard ends (see [`super::earlier`]).
fn announce(args: &[std::ffi::OsString]) -> Option<Vec<std::os::unix::net::UnixDatagram>> {
    let locks: Vec<(&std::ffi::OsStr, &std::ffi::OsStr)> = args
        .chunks_exact(2)
        .map(|l| (l[0].as_os_str(), l[1].as_os_str()))
        .collect();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    super::earlier::announce(&locks, nonce)
}

fn guard(grace: Duration, mut idle: bool, locks: &[std::ffi::OsString]) -> u8 {
    use nix::sys::signal::SigSet;
    // Blocked, never handled: the signals stay with the command they were meant for, and stay
    // pending here for good (the guard starts nothing that would inherit the mask).
    let mut meant_for_the_command = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        meant_for_the_command.add(sig);
    }
    if meant_for_the_command.thread_block().is_err() {
        return 70;
    }
    // Not found by the next holder's look for an earlier group until told its lease is
    // granted: the look reads names first (`guards_of`), and this is not a guard's name.
    if idle && nix::sys::prctl::set_name(IDLE_NAME).is_err() {
        return 70;
    }
    // Held until the guard ends; a guard announces itself before its command may start.
    let mut _announced = Vec::new();
    if !idle {
        let Some(a) = announce(locks) else { return 70 };
        _announced = a;
    }
    let mut out = std::io::stdout();
    if out.write_all(b"r").and_then(|()| out.flush()).is_err() {
        return 70;
    }
    let stdin = std::io::stdin();
    let mut heard = Heard::default();
    loop {
        let wait = match (heard.deadline, boot_now()) {
            (Some((term, _)), Some(now)) => term.saturating_sub(now).min(LOOK_AGAIN),
            _ => LOOK_AGAIN,
        };
        heard.listen(stdin.as_fd(), wait);
        if heard.active && idle {
            // Named and announced as a guard before `tractatus` may start the command (it
            // waits for this).
            let Some(a) = announce(locks) else { return 70 };
            _announced = a;
            if nix::sys::prctl::set_name(GUARD_NAME).is_err()
                || out.write_all(&[ACTIVE]).and_then(|()| out.flush()).is_err()
            {
                return 70;
            }
            idle = false;
        }
        if heard.done {
            // `tractatus` is done and the group is empty. Leave the group for `tractatus`'s
            // own and say so: then the group has a member left only if a stranger joined it,
            // and `tractatus` can tell at once, without waiting for this process to end.
            use nix::unistd::{Pid, getpgid, getppid, setpgid};
            if getpgid(Some(getppid()))
                .and_then(|theirs| setpgid(Pid::from_raw(0), theirs))
                .is_ok()
            {
                let _ = out.write_all(&[LEFT]).and_then(|()| out.flush());
            }
            return 0;
        }
        if heard.gone {
            // `tractatus` is gone: end what it ran before its lease can run out.
            let _ = kill(group_pid(std::process::id()), Signal::SIGTERM);
            let mut until = boot_now().map(|now| now + grace);
            if let (Some(u), Some((_, kill_at))) = (until, heard.deadline) {
                until = Some(u.min(kill_at));
            }
            return end_group(until);
        }
        // Judged only after all that was sent is read: a guard that was stopped along with
        // the command (Ctrl-Z) finds newer deadlines waiting when it goes on.
        if let (Some((term, kill_at)), Some(now)) = (heard.deadline, boot_now())
            && now >= term
        {
            // No renewal reached us in time: `tractatus` is stopped or starved. Say so first
            // (it reads it once we are gone), then end the group inside the lease's validity.
            let said = format!("{} {}\n", STOPPED as char, now.as_millis());
            let _ = out.write_all(said.as_bytes()).and_then(|()| out.flush());
            let _ = kill(group_pid(std::process::id()), Signal::SIGTERM);
            return end_group(Some(kill_at));
        }
    }
}

/// `CLOCK_BOOTTIME`, the clock the deadlines are told on.
fn boot_now() -> Option<Duration> {
    crate::clock::boottime()
}

/// Wait until the group has no member but the guard, or `until` (boot clock; `None`: the
/// clock cannot be read, SIGKILL at once); then SIGKILL it, the guard with it: it must not keep
/// the group alive.
fn end_group(until: Option<Duration>) -> u8 {
    let me = std::process::id();
    while let (Some(until), Some(now)) = (until, boot_now())
        && now < until
    {
        if live_members(me, me) == 0 {
            return 0;
        }
        std::thread::sleep(POLL.min(until - now));
    }
    let _ = kill(group_pid(me), Signal::SIGKILL);
    0
}

/// What the guard has heard from `tractatus` on its stdin: lines `a` (the lease is granted: an
/// idle guard takes a guard's name), `v TERM KILL` (a deadline, ms of the boot clock) and `d`
/// (done), or the end of the pipe (`tractatus` is gone).
#[derive(Debug, Default, PartialEq)]
struct Heard {
    active: bool,
    deadline: Option<(Duration, Duration)>,
    done: bool,
    gone: bool,
    partial: Vec<u8>,
}

impl Heard {
    /// Wait up to `wait` for something to read, then read all there is without blocking.
    fn listen(&mut self, fd: std::os::fd::BorrowedFd<'_>, wait: Duration) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        // Bounded: more than a full pipe (64 KiB) of the short lines `tractatus` writes.
        for _ in 0..32 {
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => return,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => {
                    self.gone = true;
                    return;
                }
            }
            timeout = PollTimeout::ZERO;
            let mut buf = [0u8; 4096];
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) | Err(_) => {
                    self.gone = true;
                    return;
                }
                Ok(n) => self.take(&buf[..n]),
            }
            if self.done {
                return;
            }
        }
    }

    fn take(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            let mut words = text.split_whitespace();
            match words.next() {
                Some("d") => self.done = true,
                Some("a") => self.active = true,
                Some("v") => {
                    let mut ms = words
                        .filter_map(|w| w.parse().ok())
                        .map(Duration::from_millis);
                    if let (Some(term), Some(kill_at)) = (ms.next(), ms.next()) {
                        self.deadline = Some((term, kill_at));
                    }
                }
                _ => {}
            }
        }
        // Only `tractatus` writes here, in short lines; anything longer is not ours to keep.
        if self.partial.len() > 4096 {
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_reads_deadlines_and_done_across_broken_writes() {
        let mut h = Heard::default();
        h.take(b"v 1000 12");
        assert_eq!(h.deadline, None);
        h.take(b"00\nv 2000 2200\nx y\n");
        assert_eq!(
            h.deadline,
            Some((Duration::from_millis(2000), Duration::from_millis(2200)))
        );
        assert!(!h.done);
        assert!(!h.active);
        h.take(b"a\nd\n");
        assert!(h.active && h.done);
        let mut junk = Heard::default();
        junk.take(&[b'a'; 5000]);
        assert!(junk.partial.is_empty());
    }
}
