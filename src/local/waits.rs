//! Wait-for edges of local locks (see `crate::deadlock`): a waiter that holds other locks keeps
//! its edge in a file of the lock directory, `<lock>.wait-<waiter id>`, `flock`ed for as long as
//! it waits, so the kernel says whether the edge still counts (a waiter that ended or died
//! holds no lock on it). Every file is reached through the directory's handle: never a link
//! followed, never a FIFO opened blocking, reads capped.
//!
//! A co-user can write files here, so an edge is believed only as far as the kernel backs it:
//! its file must be locked by the pid it names, and each lock it claims its tree holds must be
//! locked (`/proc/locks`) by that pid or one of its ancestors. A planted edge claiming another
//! tree's locks counts for nothing, so it cannot make a waiter give up.

use std::ffi::{OsStr, OsString};
use std::fs::{File, TryLockError};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;

use super::turn::flock_holder;
use super::{LocalBackend, file_stem, io_err, open_regular, read_record};
use crate::backend::WAIT_FOR_EDGES_MAX;
use crate::deadlock::walk::Hop;
use crate::deadlock::{EDGE_MAX, Edge, HeldBy};
use crate::error::Result;

/// A waiter's edge file, `flock`ed while it lives; removed when it is dropped.
pub(crate) struct WaitRecord {
    file: Option<File>,
    name: OsString,
    dir: crate::dir_handle::DirHandle,
}

impl Drop for WaitRecord {
    fn drop(&mut self) {
        // Removed first, then unlocked: a walker never sees our file unlocked and ours.
        let _ = self.dir.remove_file(&self.name);
        self.file.take();
    }
}

fn prefix(lock: &str) -> String {
    format!("{}.wait-", file_stem(lock))
}

impl LocalBackend {
    /// Record `edge` (its waiter waits for `edge.waits_for`) as a locked file of its own.
    pub(crate) fn record_wait(&self, edge: &Edge) -> Result<WaitRecord> {
        let name = OsString::from(format!("{}{}", prefix(&edge.waits_for), edge.waiter));
        let path = self.dir.child_path(&name);
        let mut file = self
            .dir
            .create_new(&name, 0o644)
            .map_err(|e| io_err("cannot create", &path, e))?;
        let dir = self
            .dir
            .try_clone()
            .map_err(|e| io_err("cannot open", &path, e))?;
        // From here on the file is removed again if anything fails.
        let mut record = WaitRecord {
            file: None,
            name,
            dir,
        };
        file.try_lock()
            .map_err(|e| io_err("cannot lock", &path, std::io::Error::other(e.to_string())))?;
        file.write_all(edge.text().as_bytes())
            .map_err(|e| io_err("cannot write", &path, e))?;
        record.file = Some(file);
        Ok(record)
    }

    /// Lock `name` as one hop of a walk reads it: who holds it (its token, believed only when
    /// the kernel says the recorded pid holds the lock) and the live edges of its waiters.
    pub(crate) fn read_waits(&self, name: &str) -> Option<Hop> {
        let holder = self.kernel_holder(name)?;
        let start = prefix(name);
        let mut edges = Vec::new();
        for (entry, _) in self.dir.entries().ok()? {
            let Some(waiter) = entry
                .as_bytes()
                .strip_prefix(start.as_bytes())
                .and_then(|w| std::str::from_utf8(w).ok())
            else {
                continue;
            };
            if let Some(edge) = self.live_edge(&entry, waiter) {
                edges.push(edge);
                if edges.len() >= WAIT_FOR_EDGES_MAX {
                    break;
                }
            }
        }
        Some(Hop {
            held_by: HeldBy::Token(holder.token),
            holder,
            edges,
        })
    }

    /// The holder record of lock `name` while it is locked by the pid the record names (the
    /// kernel's word, not the record's).
    fn kernel_holder(&self, name: &str) -> Option<crate::holder::HolderInfo> {
        let file_name = Self::lock_file(name);
        let f = open_regular(&self.dir, &file_name)?;
        // A lock on another open file description conflicts even within one process; dropping
        // `f` lets go of a shared lock taken when it was free.
        if !matches!(f.try_lock_shared(), Err(TryLockError::WouldBlock)) {
            return None;
        }
        let (holder, _) = read_record(&self.dir, &file_name)?;
        (flock_holder(&f) == Some(holder.pid)).then_some(holder)
    }

    /// The edge in file `entry` when its waiter still holds its lock on it, with only the
    /// holdings the kernel backs (see the module doc); `None` when none is.
    fn live_edge(&self, entry: &OsStr, waiter: &str) -> Option<Edge> {
        let (file, stat) = self.dir.open_read(entry).ok()??;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return None;
        }
        if !matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock)) {
            // Its waiter is gone (killed before it could remove it): tidy up once it is old
            // enough that it cannot be one just created and not yet locked.
            let age = now_secs().saturating_sub(stat.st_mtime);
            if age > STALE_EDGE_SECS {
                let _ = self.dir.remove_file(entry);
            }
            return None;
        }
        let mut text = String::new();
        (&file)
            .take(EDGE_MAX as u64 + 1)
            .read_to_string(&mut text)
            .ok()?;
        let mut edge = Edge::parse(waiter, &text)?;
        if flock_holder(&file) != Some(edge.pid) {
            return None;
        }
        edge.holding.retain(|h| {
            self.kernel_holder(&h.name)
                .is_some_and(|holder| holder.token == h.token && in_tree(holder.pid, edge.pid))
        });
        (!edge.holding.is_empty()).then_some(edge)
    }
}

/// How old an unlocked edge file must be before a walk removes it.
const STALE_EDGE_SECS: i64 = 60;

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How many parents are followed up from a waiter: deeper trees do not occur, and a loop in
/// `/proc` reads racing with exits must end.
const MAX_ANCESTORS: usize = 1024;

/// True when `pid` is `ancestor` or one of its descendants (`/proc` parents).
fn in_tree(ancestor: u32, pid: u32) -> bool {
    let mut p = pid;
    for _ in 0..MAX_ANCESTORS {
        if p == ancestor {
            return true;
        }
        match crate::sys::proc_stat(p) {
            Some(stat) if stat.ppid != 0 && stat.ppid != p => p = stat.ppid,
            _ => return false,
        }
    }
    false
}
