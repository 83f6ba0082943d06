//! The one-machine backend: a lock is an OS advisory lock (`flock`, through std's
//! `File::lock`) on a file under `.claude/.tractatus/locks/`. The kernel releases it when its
//! holder dies, so there is no TTL and no stale holder; the kernel also wakes the waiter.
//! Fencing tokens come from a counter file beside each lock, incremented under the lock. A
//! missing counter file (a new lock, or one whose file was removed) counts as the system clock
//! in microseconds, so tokens never restart lower: the same argument as Redis's counters (see
//! `lua/grant.lua`), with std's clock.
//!
//! A co-user can write into the lock directory, so every file in it is reached through the
//! directory's handle ([`DirHandle`]): a lock file is opened `O_NOFOLLOW | O_NONBLOCK`, must be
//! a regular file with one link, and a counter or holder record is read with a size cap. A
//! symlink, FIFO, device or hard link planted there is refused (73, naming it), never followed,
//! waited on or written through.

use std::ffi::{OsStr, OsString};
use std::fs::{File, TryLockError};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::dir_handle::{DirHandle, is_refusal};
use crate::error::{Error, Result};
use crate::holder::{HolderInfo, Identity};
use crate::options::AcquireOptions;

mod turn;
mod waits;

pub(crate) use turn::Joinable;
pub(crate) use waits::WaitRecord;

/// Local file locks in one directory, reached through its handle.
pub(crate) struct LocalBackend {
    dir: DirHandle,
}

/// A held local lock: the locked file and the token minted under it.
pub(crate) struct LocalGuard {
    file: File,
    /// The fencing token of this hold.
    pub token: u64,
    /// What lets a process join it (see `crate::join`); the lock file keeps its hash.
    pub secret: String,
}

impl LocalGuard {
    /// Unlock (closing the file does it too).
    pub(crate) fn release(self) -> Result<()> {
        let _ = self.file.set_len(0);
        self.file
            .unlock()
            .map_err(|e| Error::internal(format!("cannot unlock: {e}")))
    }
}

/// The file name a lock name maps to: `/` cannot appear in a file name, `%` cannot appear in a
/// lock name, so the mapping is one to one.
fn file_stem(name: &str) -> String {
    name.replace('/', "%2F")
}

/// The longest counter file: 20 digits and a newline are all a u64 takes.
const COUNTER_CAP: u64 = 64;

/// The longest holder record read back (a record is a few hundred bytes; a longer one was not
/// written by us and is shown as an unknown holder).
const HOLDER_CAP: u64 = 64 * 1024;

/// A failure of the lock files themselves: a planted link, FIFO, device or hard link, a damaged
/// file, permissions or a full disk are the user's to fix (73, nothing written), anything else is
/// ours (70).
fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    use std::io::ErrorKind::{PermissionDenied, QuotaExceeded, ReadOnlyFilesystem, StorageFull};
    if is_refusal(&e) {
        return Error::CannotWrite {
            path: path.to_owned(),
            source: e,
        };
    }
    match e.kind() {
        PermissionDenied | StorageFull | QuotaExceeded | ReadOnlyFilesystem => Error::CannotWrite {
            path: path.to_owned(),
            source: std::io::Error::new(e.kind(), format!("{what}: {e}")),
        },
        _ => Error::internal(format!("{what} {}: {e}", path.display())),
    }
}

impl LocalBackend {
    /// Locks kept in `dir` (created when missing), a directory the caller chose: symlinks on
    /// its own path are the caller's choice, nothing below it is followed.
    pub(crate) fn new(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        let handle = DirHandle::open_root(&dir).map_err(|e| io_err("cannot open", &dir, e))?;
        Ok(LocalBackend { dir: handle })
    }

    /// Locks kept in the directory `dir` (the repository's `.claude/.tractatus/locks`, reached
    /// from the root without following a symlink).
    pub(crate) fn at(dir: DirHandle) -> Self {
        LocalBackend { dir }
    }

    /// The directory holding the lock files.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn lock_file(name: &str) -> OsString {
        OsString::from(format!("{}.lock", file_stem(name)))
    }

    fn lock_path(&self, name: &str) -> PathBuf {
        self.dir.child_path(Self::lock_file(name))
    }

    fn fence_file(name: &str) -> OsString {
        OsString::from(format!("{}.fence", file_stem(name)))
    }

    /// A lock file, opened (created when missing) for locking and for its holder record.
    fn open_lock_file(&self, name: &str) -> Result<File> {
        self.dir
            .open_rw(&Self::lock_file(name), 0o666)
            .map_err(|e| io_err("cannot open", &self.lock_path(name), e))
    }

    /// The holder record of lock `name`, if it can be read as one.
    fn read_holder(&self, name: &str) -> Option<HolderInfo> {
        read_holder(&self.dir, &Self::lock_file(name))
    }

    pub(crate) async fn acquire(
        &self,
        name: &str,
        identity: &Identity,
        opts: &AcquireOptions,
        deadline: Instant,
    ) -> Result<LocalGuard> {
        let started = Instant::now();
        let path = self.lock_path(name);
        let file = self.open_lock_file(name)?;
        let file = match file.try_lock() {
            Ok(()) => file,
            Err(TryLockError::Error(e)) => return Err(io_err("cannot lock", &path, e)),
            Err(TryLockError::WouldBlock) => {
                let holder = self.read_holder(name);
                if let Some(p) = &opts.progress {
                    p.send_replace(holder.clone().map(crate::options::InTheWay::Holder));
                }
                let timeout = || Error::Timeout {
                    name: name.to_owned(),
                    waited_ms: started.elapsed().as_millis(),
                    holder: holder.clone().map(Box::new),
                    note: None,
                };
                if Instant::now() >= deadline {
                    return Err(timeout());
                }
                // The kernel wakes the blocked thread on release. If we give up first, the
                // thread's File is dropped on send failure, which unlocks it.
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::task::spawn_blocking(move || {
                    let r = file.lock().map(|()| file);
                    let _ = tx.send(r);
                });
                let wait = tokio::time::timeout_at(deadline, rx);
                // Issue 24 hook: a waiter holding other local locks walks for a cycle while the
                // kernel makes it wait (src/deadlock/local.rs).
                let got = match crate::deadlock::local::Watch::start(self, name, identity, opts)? {
                    Some(watch) => tokio::select! {
                        got = wait => got,
                        e = watch.run(deadline) => return Err(e),
                    },
                    None => wait.await,
                };
                match got {
                    Ok(Ok(Ok(file))) => file,
                    Ok(Ok(Err(e))) => return Err(io_err("cannot lock", &path, e)),
                    Ok(Err(_)) => return Err(Error::internal("lock thread vanished")),
                    Err(_) => return Err(timeout()),
                }
            }
        };
        self.take(name, file, identity)
    }

    /// Take any one of the locks `names` (the slots of a slot set, `display` its name in
    /// errors), trying them in turn from `start`; when all are held, wait for the first to
    /// be let go, up to `deadline`. Returns its index and guard.
    ///
    /// The wait is one `flock(2)` per lock, each on a thread of its own: the kernel
    /// wakes whichever lock is let go first, and that thread's lock is ours. The other
    /// threads stay parked (a thread in `flock` cannot be called back) until their lock is
    /// let go, then drop it at once: for a moment such a lock is held by nobody's command,
    /// and a waiter blocked on it is woken again by the kernel when it is dropped.
    pub(crate) async fn acquire_any(
        &self,
        display: &str,
        names: &[String],
        start: usize,
        identity: &Identity,
        opts: &AcquireOptions,
        deadline: Instant,
    ) -> Result<(usize, LocalGuard)> {
        let started = Instant::now();
        let n = names.len();
        let mut files = Vec::with_capacity(n);
        for name in names {
            files.push(Some(self.open_lock_file(name)?));
        }
        let mut holder = None;
        for k in 0..n {
            let i = (start + k) % n;
            let Some(file) = files[i].take() else {
                continue;
            };
            match file.try_lock() {
                Ok(()) => return Ok((i, self.take(&names[i], file, identity)?)),
                Err(TryLockError::Error(e)) => {
                    return Err(io_err("cannot lock", &self.lock_path(&names[i]), e));
                }
                Err(TryLockError::WouldBlock) => {
                    holder = holder.or_else(|| self.read_holder(&names[i]));
                    files[i] = Some(file);
                }
            }
        }
        if let Some(p) = &opts.progress {
            p.send_replace(holder.clone().map(crate::options::InTheWay::Holder));
        }
        let timeout = || Error::Timeout {
            name: display.to_owned(),
            waited_ms: started.elapsed().as_millis(),
            holder: holder.clone().map(Box::new),
            note: None,
        };
        if Instant::now() >= deadline {
            return Err(timeout());
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (i, file) in files.into_iter().enumerate() {
            let (Some(file), tx) = (file, tx.clone()) else {
                continue;
            };
            // A thread of its own, not tokio's blocking pool: the pool's threads are bounded
            // (512), and a slot whose wait sat queued there would never wake us. Once the
            // receiver is closed the send fails and drops the file: unlocked.
            std::thread::Builder::new()
                .name("slot-wait".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    let _ = tx.send((i, file.lock().map(|()| file)));
                })
                .map_err(|e| Error::internal(format!("cannot start a lock thread: {e}")))?;
        }
        drop(tx);
        let first = tokio::time::timeout_at(deadline, rx.recv()).await;
        // Whatever else was won meanwhile goes back at once.
        rx.close();
        while let Ok((_, other)) = rx.try_recv() {
            drop(other);
        }
        match first {
            Ok(Some((i, Ok(file)))) => Ok((i, self.take(&names[i], file, identity)?)),
            Ok(Some((i, Err(e)))) => Err(io_err("cannot lock", &self.lock_path(&names[i]), e)),
            Ok(None) => Err(Error::internal("lock threads vanished")),
            Err(_) => Err(timeout()),
        }
    }

    /// A lock just taken: mint its token and write its holder record.
    fn take(&self, name: &str, file: File, identity: &Identity) -> Result<LocalGuard> {
        let token = self.mint(name)?;
        let secret = crate::join::new_secret();
        let mut guard = LocalGuard {
            file,
            token,
            secret,
        };
        let hash = crate::join::secret_hash(&guard.secret);
        write_holder(&mut guard.file, identity, token, &hash)
            .map_err(|e| io_err("cannot write", &self.lock_path(name), e))?;
        Ok(guard)
    }

    /// Next token for `name`: counter file + 1, written back before use (under the lock). A
    /// counter at `u64::MAX` has no next token: it is refused as exhausted (73), never handed
    /// out again (the state file's fence would refuse the repeat as a lost lease, 76, which
    /// would send the user looking for another writer).
    fn mint(&self, name: &str) -> Result<u64> {
        let file = Self::fence_file(name);
        let last = self.read_counter(&file)?;
        let token = last.checked_add(1).ok_or_else(|| Error::CannotWrite {
            path: self.dir.child_path(&file),
            source: std::io::Error::other(format!(
                "the token counter is exhausted (it holds {last}, the largest token there is): \
                 it was damaged or set by hand. When no writer runs, remove it, and the fence \
                 records of the files this lock guards if they hold the same value \
                 (.claude/.tractatus/fence/); tokens then start again from the clock"
            )),
        })?;
        self.write_counter(&file, token)?;
        Ok(token)
    }

    /// Raise the counter of `name` to at least `floor` (after a reset, so new tokens pass the
    /// state files' fencing check).
    pub(crate) fn raise(&self, name: &str, floor: u64) -> Result<()> {
        let file = Self::fence_file(name);
        if self.read_counter(&file)? < floor {
            self.write_counter(&file, floor)?;
        }
        Ok(())
    }

    /// A token counter file: absent is the clock in microseconds (above every token handed out
    /// before it went missing, while fewer than one token per microsecond was minted and the
    /// clock did not go back); unreadable or damaged is an error (73: read as 0, it would hand
    /// out tokens again). Read with a cap, never through a link, never from a FIFO or device.
    fn read_counter(&self, file: &OsStr) -> Result<u64> {
        let path = self.dir.child_path(file);
        match self.dir.read_capped(file, COUNTER_CAP) {
            Ok(Some(bytes)) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| Error::CannotWrite {
                    path,
                    source: std::io::Error::other(
                        "the token counter is damaged (not a number); remove it only when no \
                         writer runs",
                    ),
                }),
            Ok(None) => Ok(clock_micros()),
            Err(e) => Err(io_err("cannot read", &path, e)),
        }
    }

    /// Replace a counter file whole (temp file, rename, both in the lock directory's handle: a
    /// link planted at its name is replaced, never followed), so a process that dies mid-write
    /// leaves the old value or the new one, never an empty file. Not fsynced (it would cost a
    /// millisecond per lock): after a power loss the counter may be an older value (every holder
    /// of that boot is gone by then; state files keep their own fence record) or, on filesystems
    /// without ext4's replace-by-rename ordering, damaged, which [`LocalBackend::read_counter`]
    /// refuses rather than read as 0.
    fn write_counter(&self, file: &OsStr, value: u64) -> Result<()> {
        let path = self.dir.child_path(file);
        // Readable by whoever may take the lock: 0666 less the umask.
        let (mut tmp, tmp_name) = self
            .dir
            .create_temp(".counter-", ".tmp", 0o666)
            .map_err(|e| io_err("cannot write", &path, e))?;
        let written = tmp
            .write_all(value.to_string().as_bytes())
            .and_then(|()| self.dir.rename(&tmp_name, file));
        if let Err(e) = written {
            let _ = self.dir.remove_file(&tmp_name);
            return Err(io_err("cannot write", &path, e));
        }
        Ok(())
    }

    /// Every lock currently held, with its holder.
    pub(crate) fn held(&self) -> Result<Vec<(String, HolderInfo)>> {
        let mut out = Vec::new();
        let entries = self
            .dir
            .entries()
            .map_err(|e| io_err("cannot list", self.dir.path(), e))?;
        for (file_name, _) in entries {
            let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".lock")) else {
                continue;
            };
            let Some(f) = open_regular(&self.dir, &file_name) else {
                continue;
            };
            if let Err(TryLockError::WouldBlock) = f.try_lock_shared() {
                let holder = read_holder(&self.dir, &file_name).unwrap_or_default();
                out.push((stem.replace("%2F", "/"), holder));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// The regular file `name` of `dir`, opened for reading (never a link, FIFO or device); `None`
/// when it is absent or anything else.
fn open_regular(dir: &DirHandle, name: &OsStr) -> Option<File> {
    let (file, stat) = dir.open_read(name).ok()??;
    let regular = rustix::fs::FileType::from_raw_mode(stat.st_mode).is_file();
    regular.then_some(file)
}

/// The system clock in microseconds since the Unix epoch (0 before it, which no clock shows).
fn clock_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn write_holder(file: &mut File, id: &Identity, token: u64, join: &str) -> std::io::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let info = serde_json::json!({
        "session": id.session, "host": id.host, "pid": id.pid, "command": id.command,
        "acquired_ms": now, "token": token, "pid_ns": id.pid_ns, "join": join,
    });
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(info.to_string().as_bytes())
}

fn read_holder(dir: &DirHandle, name: &OsStr) -> Option<HolderInfo> {
    read_record(dir, name).map(|r| r.0)
}

/// The holder record of a lock file, and the hash of its lease's secret.
fn read_record(dir: &DirHandle, name: &OsStr) -> Option<(HolderInfo, String)> {
    let bytes = dir.read_capped(name, HOLDER_CAP).ok()??;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let holder = HolderInfo {
        session: s("session"),
        host: s("host"),
        pid: n("pid") as u32,
        command: s("command"),
        acquired_ms: n("acquired_ms"),
        token: n("token"),
        // Namespace and boot id: a record on a shared disk is judged only where it was written.
        pid_ns: Some(s("pid_ns")).filter(|ns| !ns.is_empty()),
        ..Default::default()
    };
    Some((holder, s("join")))
}

/// Filesystem magic numbers (statfs `f_type`) of network and user-space filesystems, where an
/// advisory lock taken here may not be seen by another machine.
const NETWORK_FS: &[(i64, &str)] = &[
    (0x6969, "nfs"),
    (0x517B, "smb"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x6573_5546, "fuse"),
    (0x00C3_6400, "ceph"),
    (0x5346_414F, "afs"),
    (0x6B41_4653, "afs"),
    (0x0102_1997, "9p"),
    (0x4750_4653, "gpfs"),
    (0x0BD0_0BD0, "lustre"),
];

/// The name of the network filesystem type with magic number `magic`, if it is one.
pub(crate) fn network_fs_name(magic: i64) -> Option<&'static str> {
    NETWORK_FS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, n)| *n)
}

/// `Some(type)` when `path` sits on a network (or FUSE) filesystem.
pub(crate) fn network_filesystem(path: &Path) -> Option<&'static str> {
    let st = nix::sys::statfs::statfs(path).ok()?;
    #[allow(clippy::unnecessary_cast)]
    network_fs_name(st.filesystem_type().0 as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_counter_starts_from_the_clock_and_never_lower() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(tmp.path().to_path_buf()).unwrap();
        let before = clock_micros();
        let first = backend.mint("a/b").unwrap();
        assert!(first > before, "{first} not above the clock {before}");
        assert_eq!(backend.mint("a/b").unwrap(), first + 1);
        // The counter file is lost: the next token still comes above the last one.
        std::fs::remove_file(tmp.path().join(LocalBackend::fence_file("a/b"))).unwrap();
        let again = backend.mint("a/b").unwrap();
        assert!(again > first + 1, "{again} after {}", first + 1);
    }

    #[test]
    fn network_filesystems_are_told_from_local_ones() {
        assert_eq!(network_fs_name(0x6969), Some("nfs"));
        assert_eq!(network_fs_name(0xFF53_4D42), Some("cifs"));
        assert_eq!(network_fs_name(0x6573_5546), Some("fuse"));
        assert_eq!(network_fs_name(0xEF53), None, "ext4");
        assert_eq!(network_fs_name(0x0102_1994), None, "tmpfs");
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(network_filesystem(tmp.path()), None);
        assert_eq!(network_filesystem(Path::new("/dev/shm")), None);
    }
}
