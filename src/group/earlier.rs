//! The earlier holder's group: a holder whose lease expired while its command ran leaves a
//! guard on this host, named in its arguments with the host and the locks. The next holder of
//! those locks finds it here, waits for its group, and ends it once its time is over.
//!
//! Looking at every process is what that costs, and it is done inside the lease, on every
//! `lock run`. So a guard also announces itself: before its command may start, and until it
//! ends, it holds a Unix socket bound to an abstract name (no file) that says which locks it
//! guards ([`announce`]). The next holder reads the host's list of such sockets, one file
//! (`/proc/net/unix`), and looks at every process only when one announces a lock of its own.
//! A name anyone may bind: a stranger's only makes the look the full one again.

use std::ffi::OsStr;
use std::io::Read;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use nix::sys::signal::{Signal, kill};

use super::{GUARD_ARG, GUARD_NAME, group_pid};

/// Guards on this host, other than `except`, of an earlier holder of one of `locks`: their
/// group ids. A guard outlives its group only by moments, so a guard found means a group that
/// may still run.
pub(crate) fn guards_of(host: &str, locks: &[(&str, &str)], except: u32) -> Vec<u32> {
    let prefixes: Vec<String> = locks
        .iter()
        .map(|(ns, n)| prefix(ns.as_ref(), n.as_ref()))
        .collect();
    if announced(&prefixes, except) == Some(false) {
        return Vec::new();
    }
    // Started as /proc/self/exe, a guard is named "exe" (only a thread of its own can rename
    // it): the names are read first, and only those processes' stat and arguments.
    crate::sys::processes_named(&GUARD_NAME.to_string_lossy())
        .into_iter()
        .filter(|p| *p != except)
        .filter_map(|p| Some((p, crate::sys::proc_stat(p)?)))
        .filter(|(p, s)| s.pgrp == *p && s.runs())
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

/// SIGKILL to a whole group (an expired holder's, whose time is over).
pub(crate) fn kill_group(pgid: u32) {
    let _ = kill(group_pid(pgid), Signal::SIGKILL);
}

/// What a guard's announcement of lock `ns`/`name` begins with: the lock hashed (FNV-1a, 64
/// bits: the same in every build; two locks that collide only cost the full look).
fn prefix(ns: &OsStr, name: &OsStr) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ns.as_bytes().iter().chain(&[0]).chain(name.as_bytes()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("tractatus-guard/{h:016x}/")
}

/// Bind one socket per lock (pairs of namespace and name) to its announcement, this guard's
/// pid and `nonce` after the lock's [`prefix`] (a name guessed ahead cannot block ours). Held
/// by the guard until it ends; `None` when one cannot be bound (then the guard must not let
/// its command start: the next holder would not know to look).
pub(super) fn announce(locks: &[(&OsStr, &OsStr)], nonce: u128) -> Option<Vec<UnixDatagram>> {
    let me = std::process::id();
    locks
        .iter()
        .map(|(ns, name)| {
            let at = format!("{}{me}.{nonce:x}", prefix(ns, name));
            let addr = SocketAddr::from_abstract_name(at.as_bytes()).ok()?;
            UnixDatagram::bind_addr(&addr).ok()
        })
        .collect()
}

/// The most of `/proc/net/unix` read: a line per Unix socket of this network namespace.
const LIST_CAP: u64 = 16 << 20;

/// Whether a guard other than `except` announces one of `prefixes` (see [`announce`]); `None`
/// when that cannot be told (no list, or a longer one than [`LIST_CAP`]).
fn announced(prefixes: &[String], except: u32) -> Option<bool> {
    // Room for a few hundred sockets at once: the kernel hands over what fits in one read.
    let mut list = Vec::with_capacity(64 << 10);
    std::fs::File::open("/proc/net/unix")
        .ok()?
        .take(LIST_CAP + 1)
        .read_to_end(&mut list)
        .ok()?;
    if list.len() as u64 > LIST_CAP {
        return None;
    }
    let ours = format!("{except}.");
    let found = list
        .split(|b| *b == b'\n')
        // The path is the line's last field; an abstract one begins with '@'.
        .filter_map(|line| line.rsplit(|b| *b == b' ').next()?.strip_prefix(b"@"))
        .any(|name| {
            prefixes.iter().any(|p| {
                name.strip_prefix(p.as_bytes())
                    .is_some_and(|rest| !rest.starts_with(ours.as_bytes()))
            })
        });
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announced_lock_is_found_by_others_and_not_by_its_own_guard_nor_for_another_lock() {
        let (ns, name) = (OsStr::new("ns-of-this-test"), OsStr::new("lock-announced"));
        let nonce = u128::from(std::process::id()) << 64 | 7;
        let held = announce(&[(ns, name)], nonce).expect("an abstract socket binds");
        let me = std::process::id();
        let this = [prefix(ns, name)];
        assert_eq!(announced(&this, me.wrapping_add(1)), Some(true));
        assert_eq!(announced(&this, me), Some(false));
        let other = [prefix(ns, OsStr::new("another-lock"))];
        assert_eq!(announced(&other, me.wrapping_add(1)), Some(false));
        drop(held);
        assert_eq!(announced(&this, me.wrapping_add(1)), Some(false));
    }
}
