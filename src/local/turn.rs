//! Joining a local lock (see `crate::join`): whether a capability names the lease that holds
//! it, judged by the kernel's lock table rather than the lock file a co-user can rewrite, and
//! the turns among the joiners of one lease (a `flock` on a turn file per nesting depth).

use std::ffi::OsString;
use std::fs::{File, TryLockError};
use std::io::Read;

use tokio::time::Instant;

use super::{LocalBackend, file_stem, io_err, open_regular, read_record};
use crate::error::{Error, Result};

/// Whether a local lock may be joined as a capability names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Joinable {
    /// Locked by that process, with that token and secret.
    Held,
    /// Not held, or held by another lease (its record names another pid or token).
    Ended,
    /// The record names that pid and token, but the kernel says another process holds the
    /// lock, or the secret does not match: the record was rewritten, or the capability forged.
    Forged,
}

impl LocalBackend {
    /// Whether lock `name` is held now by process `pid` under `token` with the secret whose
    /// hash is `secret_hash`: what a lease joined from that holder checks (the kernel, not a
    /// TTL, ends a local lease). The record in the lock file is writable by every co-user, so
    /// the pid it names is believed only when the kernel's lock table agrees.
    pub(crate) fn joinable(&self, name: &str, pid: u32, token: u64, secret_hash: &str) -> Joinable {
        let file_name = Self::lock_file(name);
        let Some(f) = open_regular(&self.dir, &file_name) else {
            return Joinable::Ended;
        };
        // A lock on another open file description conflicts even within one process, so this
        // sees the holder's lock wherever it runs. Dropping `f` lets go of a shared lock taken.
        if !matches!(f.try_lock_shared(), Err(TryLockError::WouldBlock)) {
            return Joinable::Ended;
        }
        let Some((holder, hash)) = read_record(&self.dir, &file_name) else {
            return Joinable::Ended;
        };
        if holder.pid != pid || holder.token != token {
            return Joinable::Ended;
        }
        if flock_holder(&f) != Some(pid) || hash != secret_hash {
            return Joinable::Forged;
        }
        Joinable::Held
    }

    /// The file whose `flock` is the turn among the joiners of lock `name` at nesting `depth`
    /// (see [`crate::keys::LockKeys::turn_at`]): `<lock>.join`, then `<lock>.join<depth>`.
    fn turn_file(name: &str, depth: usize) -> OsString {
        let suffix = if depth <= 1 {
            String::new()
        } else {
            depth.to_string()
        };
        OsString::from(format!("{}.join{suffix}", file_stem(name)))
    }

    /// True when process `pid` has the turn at `depth` among the joiners of lock `name`, as
    /// the kernel's lock table says.
    pub(crate) fn turn_held_by(&self, name: &str, depth: usize, pid: u32) -> bool {
        open_regular(&self.dir, &Self::turn_file(name, depth))
            .is_some_and(|f| flock_holder(&f) == Some(pid))
    }

    /// Take the turn among the joiners of lock `name` at nesting `depth` (a `flock` on its
    /// turn file), waiting up to `deadline`; `None` when it did not come. The kernel gives it
    /// up with the file, or when its process dies.
    pub(crate) async fn take_turn(
        &self,
        name: &str,
        depth: usize,
        deadline: Instant,
    ) -> Result<Option<File>> {
        let file_name = Self::turn_file(name, depth);
        let path = self.dir.child_path(&file_name);
        let file = self
            .dir
            .open_rw(&file_name, 0o666)
            .map_err(|e| io_err("cannot open", &path, e))?;
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(TryLockError::Error(e)) => return Err(io_err("cannot lock", &path, e)),
            Err(TryLockError::WouldBlock) => {}
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let r = file.lock().map(|()| file);
            let _ = tx.send(r);
        });
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(file))) => Ok(Some(file)),
            Ok(Ok(Err(e))) => Err(io_err("cannot lock", &path, e)),
            Ok(Err(_)) => Err(Error::internal("lock thread vanished")),
            Err(_) => Ok(None),
        }
    }
}

/// How many times [`flock_holder`] reads `/proc/locks` before it believes a lock is unlisted.
const TABLE_READS: usize = 4;

/// The process holding the exclusive `flock` on `file`, as the kernel's lock table
/// (`/proc/locks`) says: a record in the lock file can be rewritten by any co-user, this
/// cannot. `None` when no such lock is listed (or the table cannot be read).
///
/// The kernel makes the table a page of records per `read`, walking its list afresh by
/// position each time, so a lock released meanwhile that was listed before the holder's
/// shifts the holder's to a position already read: it goes missing from that reading. Small
/// reads (what a plain `read_to_string` starts with) make every record a seam; big ones leave
/// a seam per page, and a miss is read again. Every caller asks about a lock it saw held.
pub(super) fn flock_holder(file: &File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    // The kernel's encoding of a device number (glibc's gnu_dev_major / gnu_dev_minor).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    (0..TABLE_READS).find_map(|_| holder_listed(&wanted))
}

/// One reading of `/proc/locks`: the pid of the exclusive `flock` on the file `wanted` names
/// (`major:minor:inode`, as the table writes it).
fn holder_listed(wanted: &str) -> Option<u32> {
    let mut table = String::with_capacity(64 << 10);
    File::open("/proc/locks")
        .ok()?
        .take(16 << 20)
        .read_to_string(&mut table)
        .ok()?;
    // "1: FLOCK  ADVISORY  WRITE 16958 fe:00:10010766 0 EOF"; "1: -> FLOCK ..." lines are
    // processes blocked on it, not holders.
    table.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(3) == Some(&"WRITE") && f.get(5) == Some(&wanted))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    /// `/proc/locks` is produced a few records per `read`, and the kernel walks its list
    /// afresh by position at each one: a lock released between two reads, listed before ours,
    /// shifts ours to a position already read. Locks taken later are listed first, so locks
    /// coming and going in other threads (here) or processes (other joiners) do that.
    #[test]
    fn the_holder_of_a_lock_is_found_while_other_locks_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let held = File::create(dir.path().join("held")).unwrap();
        held.lock().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let churn: Vec<_> = (0..4)
            .map(|i| {
                let files: Vec<File> = (0..8)
                    .map(|j| File::create(dir.path().join(format!("churn{i}-{j}"))).unwrap())
                    .collect();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        files.iter().for_each(|f| f.lock().unwrap());
                        files.iter().for_each(|f| f.unlock().unwrap());
                    }
                })
            })
            .collect();
        let started = Instant::now();
        let (mut reads, mut misses) = (0, 0);
        while reads < 3000 && started.elapsed() < Duration::from_secs(5) {
            reads += 1;
            if flock_holder(&held) != Some(std::process::id()) {
                misses += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        churn.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(
            misses, 0,
            "the holder was missed in {misses} of {reads} reads"
        );
    }
}
