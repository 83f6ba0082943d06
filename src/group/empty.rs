//! Whether the command's group is empty, learnt from events: every descendant of ours is, once
//! its parent is gone, our child (we are the subreaper), so "nothing of the command runs" is "no
//! child of ours but the guard", read from `/proc/self/task/*/children` and read again on each
//! SIGCHLD. A member that joined the group from elsewhere (a stranger) is found once the guard
//! is gone, when the group must have no member left; only then is every process looked at.

use std::time::Duration;

use nix::sys::signal::kill;
use tokio::time::Instant;

use super::{Group, POLL, group_pid, pid};
use crate::sys::{ProcStat, all_processes, live_members};

/// How long a wait for SIGCHLD lasts at most before the children are looked at again anyway:
/// a child started with no exit signal (`clone` with exit_signal 0) ends without one.
const LOOK_AT_CHILDREN: Duration = Duration::from_millis(100);

impl Group {
    /// The group's live members other than the guard, and our descendants that left the group;
    /// our zombie children among them are reaped on the way.
    pub(super) fn scan(&self) -> Vec<(u32, ProcStat)> {
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

    /// True when no descendant of ours runs any more, the guard aside; our zombie children are
    /// reaped on the way. Call once the command was reaped. A member that is not our
    /// descendant is not seen here: see [`Group::strangers_remain`].
    pub(crate) fn is_empty(&self) -> bool {
        match self.children_gone() {
            Some(gone) => gone,
            None => self.scan().is_empty(),
        }
    }

    /// Whether our children, the guard aside, are all gone; `None` when they cannot be listed.
    ///
    /// Every live descendant has a live ancestor among our children (a process whose parent
    /// ends is handed to us before that parent becomes a zombie). So a list with nothing but
    /// zombies in it is read again after they are reaped: the orphans they left are in the new
    /// list. Only we reap the children that are not tokio's, and only between two reads.
    fn children_gone(&self) -> Option<bool> {
        // The children seen ended (zombies, or reaped since): their orphans are ours by the
        // next read. The command's zombie stays until tokio reaps it; it is read again once.
        let mut ended: Vec<u32> = Vec::new();
        // Bounded: each round finds another child ended, or decides.
        for _ in 0..64 {
            let children = crate::sys::own_children()?;
            let mut newly_ended = false;
            for p in children.into_iter().filter(|p| *p != self.pgid) {
                match crate::sys::proc_stat(p) {
                    Some(s) if s.runs() => return Some(false),
                    _ if ended.contains(&p) => {}
                    stat => {
                        if stat.is_some() && Some(p) != self.cmd {
                            let _ = nix::sys::wait::waitpid(
                                pid(p),
                                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                            );
                        }
                        ended.push(p);
                        newly_ended = true;
                    }
                }
            }
            if !newly_ended {
                return Some(true);
            }
        }
        Some(false)
    }

    /// Wait until nothing of the command runs, or `until`; true when it emptied. Looked at
    /// again on each SIGCHLD (see [`Group::is_empty`]).
    pub(crate) async fn emptied_by(&mut self, until: Instant) -> bool {
        // Bounded by `until`; each round waits for a SIGCHLD, LOOK_AT_CHILDREN or POLL.
        loop {
            if self.is_empty() {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            let look = if self.children_listed {
                LOOK_AT_CHILDREN
            } else {
                POLL
            };
            let _ = tokio::time::timeout(look.min(until - now), self.child_ended.recv()).await;
        }
    }

    /// True while a process that is not our descendant is still in the group (it joined it on
    /// its own, with `setpgid`). Known for sure only once the guard has left the group (or is
    /// gone), when the group should have no member at all; until then every process is looked
    /// at.
    pub(crate) fn strangers_remain(&self) -> bool {
        let guard_gone = self.dismissed.is_some();
        if guard_gone && kill(group_pid(self.pgid), None) == Err(nix::errno::Errno::ESRCH) {
            return false;
        }
        live_members(self.pgid, self.pgid) > 0
    }

    /// Wait until no stranger is left in the group (see [`Group::strangers_remain`]), or
    /// `until`; true when none is. Polled: the kernel tells us nothing of them.
    pub(crate) async fn strangers_gone_by(&self, until: Instant) -> bool {
        loop {
            if !self.strangers_remain() {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            tokio::time::sleep(POLL.min(until - now)).await;
        }
    }
}
