//! The earlier holder's group: a holder whose lease expired while its command ran leaves a
//! guard on this host, named in its arguments with the host and the locks. The next holder of
//! those locks finds it here, waits for its group, and ends it once its time is over.

use nix::sys::signal::{Signal, kill};

use super::{GUARD_ARG, GUARD_NAME, group_pid};

/// Guards on this host, other than `except`, of an earlier holder of one of `locks`: their
/// group ids. A guard outlives its group only by moments, so a guard found means a group that
/// may still run.
pub(crate) fn guards_of(host: &str, locks: &[(&str, &str)], except: u32) -> Vec<u32> {
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
