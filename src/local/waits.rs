//! Wait-for edges of local locks (see `crate::deadlock`): a waiter that holds other locks keeps
//! its edge in a file of the lock directory, `<lock>.wait-<waiter id>`, `flock`ed for as long as
//! it waits, so the kernel says whether the edge still counts (a waiter that ended or died
//! holds no lock on it). Every file is reached through the directory's handle: never a link
//! followed, never a FIFO opened blocking, reads capped.

use std::ffi::{OsStr, OsString};
use std::fs::{File, TryLockError};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;

use super::turn::flock_holder;
use super::{LocalBackend, file_stem, io_err, open_regular, read_record};
use crate::deadlock::walk::Hop;
use crate::deadlock::{EDGE_MAX, Edge, HeldBy};
use crate::error::Result;
use crate::node::WAIT_FOR_EDGES_MAX;

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
        let file_name = Self::lock_file(name);
        let f = open_regular(&self.dir, &file_name)?;
        // A lock on another open file description conflicts even within one process; dropping
        // `f` lets go of a shared lock taken when it was free.
        if !matches!(f.try_lock_shared(), Err(TryLockError::WouldBlock)) {
            return None;
        }
        let (holder, _) = read_record(&self.dir, &file_name)?;
        if flock_holder(&f) != Some(holder.pid) {
            return None;
        }
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

    /// The edge in file `entry` when its waiter still holds its lock on it.
    fn live_edge(&self, entry: &OsStr, waiter: &str) -> Option<Edge> {
        let (file, stat) = self.dir.open_read(entry).ok()??;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return None;
        }
        if !matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock)) {
            return None;
        }
        let mut text = String::new();
        (&file)
            .take(EDGE_MAX as u64 + 1)
            .read_to_string(&mut text)
            .ok()?;
        Edge::parse(waiter, &text)
    }
}
