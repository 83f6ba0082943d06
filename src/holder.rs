//! Who holds a lock: the metadata a grant records, and the identity of this process.
//! Also knows how to tell that a holder on this host is gone (its pid no longer runs, or now
//! runs another program), so a waiter need not wait out the TTL of a crashed holder.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The metadata recorded with a lease (`holder` hash in Redis, or the local lock file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HolderInfo {
    /// The holder's session id.
    pub session: String,
    /// The holder's host name.
    pub host: String,
    /// The holder's process id.
    pub pid: u32,
    /// The holder process' start time in clock ticks after boot (`/proc/<pid>/stat`), if known.
    #[serde(skip)]
    pub pid_start: Option<u64>,
    /// The holder's PID namespace and boot (`<inode>.<boot id>`, see [`pid_namespace`]), if
    /// known: its pid means something here only when ours is the same. A record written before
    /// the boot id was part of it (the inode alone) matches no namespace, so it is judged as a
    /// holder on another machine: a crashed holder of an older version is waited out (one TTL
    /// at most), where judging its pid could evict a live holder on a machine with our name.
    #[serde(skip)]
    pub pid_ns: Option<String>,
    /// The process group the holder's command runs in (`lock run`), 0 when none was recorded:
    /// while any process of it runs, the holder is not gone.
    #[serde(skip)]
    pub group: u32,
    /// The start time of the group's leader, in clock ticks after boot, if known.
    #[serde(skip)]
    pub group_start: Option<u64>,
    /// The command the holder runs, for display.
    pub command: String,
    /// When the lease was granted, ms since the Unix epoch by the coordinator's clock.
    pub acquired_ms: u64,
    /// The lease's TTL in ms.
    pub ttl_ms: u64,
    /// The fencing token of the lease.
    pub token: u64,
    /// The lease's owner id.
    #[serde(skip)]
    pub owner: String,
}

impl HolderInfo {
    /// Parse a flat `field, value, field, value` list as HGETALL returns it.
    pub fn from_fields(fields: &[(String, String)]) -> Self {
        let mut h = HolderInfo::default();
        for (k, v) in fields {
            match k.as_str() {
                "session" => h.session = v.clone(),
                "host" => h.host = v.clone(),
                "pid" => h.pid = v.parse().unwrap_or(0),
                "pid_start" => h.pid_start = v.parse().ok(),
                "pid_ns" => h.pid_ns = Some(v.clone()).filter(|v| !v.is_empty()),
                "group" => h.group = v.parse().unwrap_or(0),
                "group_start" => h.group_start = v.parse().ok(),
                "command" => h.command = v.clone(),
                "acquired_ms" => h.acquired_ms = v.parse().unwrap_or(0),
                "ttl_ms" => h.ttl_ms = v.parse().unwrap_or(0),
                "token" => h.token = v.parse().unwrap_or(0),
                "owner" => h.owner = v.clone(),
                _ => {}
            }
        }
        h
    }

    /// How long the lease has been held, by this host's wall clock (display only).
    pub fn held_for(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Duration::from_millis(now.saturating_sub(self.acquired_ms))
    }

    /// True when the holder ran on this host, in this PID namespace, in this boot, its process
    /// is gone (or the pid was reused by another program), and so is every process of its
    /// command's group (`lock run`: an orphaned command may still write). A holder on another
    /// host, in another PID namespace (a container beside us with the same host name), on
    /// another machine with our host name (another boot id), or whose namespace is not known,
    /// is never judged stale here: its lease runs out with its TTL.
    pub fn is_gone_from(&self, me: &Identity) -> bool {
        self.process_gone_from(me) && !self.group_runs()
    }

    /// True when the holder's own process is gone from this host (as [`Self::is_gone_from`]
    /// judges it) but its command's group still runs: it is not gone yet, but may be soon, so
    /// a waiter looks again before the lease's TTL is out.
    pub fn is_winding_down(&self, me: &Identity) -> bool {
        self.process_gone_from(me) && self.group_runs()
    }

    fn process_gone_from(&self, me: &Identity) -> bool {
        if self.host != me.host || self.pid == 0 {
            return false;
        }
        // The namespace's name carries the boot id: on a machine that only shares our host
        // name, the pid names some other process or none, and proves nothing.
        if self.pid_ns.is_none() || self.pid_ns != me.pid_ns {
            return false;
        }
        match process_start_ticks(self.pid) {
            None => !process_exists(self.pid),
            Some(now_start) => self.pid_start.is_some_and(|s| s != now_start),
        }
    }

    /// True while a process of the holder's command group runs. A group id cannot be taken by
    /// a new group while the old one has a member, so a live member is the holder's; when the
    /// leader's pid now names a later process, the recorded group ended already.
    fn group_runs(&self) -> bool {
        if self.group == 0 {
            return false;
        }
        let reused = match (process_start_ticks(self.group), self.group_start) {
            (Some(now), Some(then)) => now != then,
            _ => false,
        };
        !reused && crate::sys::group_alive(self.group)
    }
}

impl fmt::Display for HolderInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session {} on {} pid {}, for {:.1}s, token {}",
            crate::shown::field(&self.session),
            crate::shown::field(&self.host),
            self.pid,
            self.held_for().as_secs_f64(),
            self.token
        )
    }
}

/// Who this process is, as recorded when it takes a lease.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Session id: `TRACTATUS_SESSION_ID` when set, else a fresh UUID v7.
    pub session: String,
    /// This host's name.
    pub host: String,
    /// This process' id.
    pub pid: u32,
    /// This process' start time in clock ticks after boot.
    pub pid_start: Option<u64>,
    /// This process' PID namespace and boot (see [`pid_namespace`]).
    pub pid_ns: Option<String>,
    /// What the process is running, for display.
    pub command: String,
}

impl Identity {
    /// The identity of the current process, with the given command description.
    pub fn current(command: impl Into<String>) -> Self {
        let pid = std::process::id();
        Identity {
            session: session_id_from_env(),
            host: this_host(),
            pid,
            pid_start: process_start_ticks(pid),
            pid_ns: pid_namespace(),
            command: command.into(),
        }
    }
}

/// A fresh session id: a UUID v7 (time-ordered, unique across machines).
pub fn new_session_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn session_id_from_env() -> String {
    match std::env::var("TRACTATUS_SESSION_ID") {
        Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => new_session_id(),
    }
}

/// This host's name: `TRACTATUS_HOST` when set (containers that share a host name), else the
/// kernel's host name, else "unknown-host".
pub fn this_host() -> String {
    if let Ok(h) = std::env::var("TRACTATUS_HOST")
        && !h.trim().is_empty()
    {
        return h.trim().to_owned();
    }
    crate::sys::kernel_host_name().unwrap_or_else(|| "unknown-host".to_owned())
}

fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e != nix::errno::Errno::ESRCH,
    }
}

/// This process' PID namespace, named across machines and boots: `<inode>.<boot id>`, the
/// inode of `/proc/self/ns/pid` and `/proc/sys/kernel/random/boot_id`. Two machines with one
/// host name have the same root namespace inode but not the same boot id.
pub fn pid_namespace() -> Option<String> {
    crate::sys::pid_namespace()
}

/// Start time of a process in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
pub(crate) fn process_start_ticks(pid: u32) -> Option<u64> {
    crate::sys::process_start_ticks(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_not_gone_and_a_dead_pid_is() {
        let me = Identity::current("test");
        let alive = HolderInfo {
            host: me.host.clone(),
            pid: me.pid,
            pid_start: me.pid_start,
            pid_ns: me.pid_ns.clone(),
            ..Default::default()
        };
        assert!(me.pid_ns.is_some());
        assert!(!alive.is_gone_from(&me));
        let reused = HolderInfo {
            pid_start: me.pid_start.map(|s| s + 1),
            ..alive.clone()
        };
        assert!(reused.is_gone_from(&me));
        // The same pid in another PID namespace (a container with our host name) is not ours
        // to judge.
        let other_ns = HolderInfo {
            pid_ns: Some("1".into()),
            ..reused.clone()
        };
        assert!(!other_ns.is_gone_from(&me));
        // The same host name and namespace inode, another boot: another machine with our
        // name (cloned VMs, CI runners), or a record written before the boot id was recorded.
        let (inode, _) = me.pid_ns.as_deref().unwrap().split_once('.').unwrap();
        for ns in [format!("{inode}.0000-other-boot"), inode.to_owned()] {
            let twin = HolderInfo {
                pid_ns: Some(ns),
                ..reused.clone()
            };
            assert!(!twin.is_gone_from(&me));
            assert!(!twin.is_winding_down(&me));
        }
        let unknown_ns = HolderInfo {
            pid_ns: None,
            ..reused.clone()
        };
        assert!(!unknown_ns.is_gone_from(&me));
        // Its process is gone, but a process of its command's group runs: not gone yet.
        let our_group = nix::unistd::getpgrp().as_raw() as u32;
        let orphaned = HolderInfo {
            group: our_group,
            ..reused.clone()
        };
        assert!(!orphaned.is_gone_from(&me));
        assert!(orphaned.is_winding_down(&me));
        // A group whose leader's pid now names a later process ended long ago.
        let ended = HolderInfo {
            group: me.pid,
            group_start: me.pid_start.map(|s| s + 1),
            ..reused.clone()
        };
        assert!(ended.is_gone_from(&me));
        assert!(!ended.is_winding_down(&me));
        let elsewhere = HolderInfo {
            host: "another-host".into(),
            pid_start: Some(1),
            ..alive
        };
        assert!(!elsewhere.is_gone_from(&me));
    }
}
