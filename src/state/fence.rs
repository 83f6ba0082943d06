//! The fence record: the highest token committed to one state file, kept in the repository's
//! working directory and locked with `flock` around each commit, so that writers on one machine
//! are serialized at the moment they land and a lower token never overwrites a higher one.
//!
//! A token is spent by one lease, but a lease may commit more than once: its holder and the
//! processes that joined it (see `crate::join`) share its token. So the record also keeps a
//! short hash of the committing lease's owner id, and an equal token passes only with the same
//! hash; a lower token never does. The record is fixed width, 37 bytes:
//! `<token, 20 digits> <owner hash, 16 hex digits>`. A record written before the hash was kept
//! (the token alone, 20 digits or fewer) reads as that token with no hash: an equal token is
//! refused, as it always was. A binary from before the hash reads the new record as damaged
//! (70, nothing written): upgrade every writer of a repository together.

use std::ffi::OsString;
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::dir_handle::DirHandle;
use crate::repo;
use crate::{Error, Lease, Result};

/// A record is 37 bytes; anything much longer is not one of ours.
const RECORD_CAP: u64 = 64;

/// The highest token committed to one state file, kept in the repository's working directory
/// (`.claude/.tractatus/fence/`, reached through handles: never a symlink, a FIFO or a file
/// with a second hard link).
pub(super) struct FenceRecord {
    dir: Arc<DirHandle>,
    file_name: OsString,
    path: PathBuf,
}

pub(super) struct LockedRecord {
    file: File,
    path: PathBuf,
}

impl FenceRecord {
    pub(super) fn new(root: &DirHandle, name: &str) -> Result<Self> {
        let dir = repo::work_dir_at(root, Some("fence"))?;
        let file_name = OsString::from(name.replace('/', "%2F"));
        Ok(FenceRecord {
            path: dir.child_path(&file_name),
            dir: Arc::new(dir),
            file_name,
        })
    }

    fn cannot(&self, e: std::io::Error) -> Error {
        Error::CannotWrite {
            path: self.path.clone(),
            source: e,
        }
    }

    pub(super) fn read(&self) -> Result<Committed> {
        match self.dir.read_capped(&self.file_name, RECORD_CAP) {
            Ok(Some(bytes)) => parse_record(&self.path, &String::from_utf8_lossy(&bytes)),
            Ok(None) => Ok(Committed::default()),
            Err(e) => Err(self.cannot(e)),
        }
    }

    /// Lock the record for one commit. `flock` could wait for ever behind a writer stopped
    /// mid-commit, so it is tried without blocking and retried on tokio's clock, until the lease
    /// is lost (76) or one TTL has passed (75): the record is held for microseconds by a
    /// writer that runs, so that long means the writer holding it is stuck.
    pub(super) async fn lock(&self, lease: &Lease) -> Result<LockedRecord> {
        let cannot = |e| self.cannot(e);
        let file = self.dir.open_rw(&self.file_name, 0o666).map_err(cannot)?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(LockedRecord {
                        file,
                        path: self.path.clone(),
                    });
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(cannot(e)),
            }
            lease.check_valid()?;
            let waited = start.elapsed();
            if waited >= lease.ttl() {
                return Err(Error::Timeout {
                    name: lease.name().to_owned(),
                    waited_ms: waited.as_millis(),
                    holder: None,
                    note: Some(format!(
                        "its fence record {} stayed locked by another writer (one stopped \
                         mid-commit?)",
                        self.path.display()
                    )),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// What the fence record says: the last committed token, and the hash of the owner of the
/// lease that committed it (none in a record from before the hash was kept, or a new one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Committed {
    pub(super) token: u64,
    pub(super) tag: Option<u64>,
}

impl Committed {
    /// Whether `lease` may commit over this record: a higher token, or the same lease again.
    pub(super) fn admits(&self, lease: &Lease) -> bool {
        lease.token() > self.token
            || (lease.token() == self.token && self.tag == Some(lease.owner_tag()))
    }
}

impl LockedRecord {
    pub(super) fn read(&mut self) -> Result<Committed> {
        let mut bytes = Vec::new();
        self.file
            .rewind()
            .and_then(|()| (&self.file).take(RECORD_CAP).read_to_end(&mut bytes))
            .map_err(|e| Error::internal(format!("fence record: {e}")))?;
        parse_record(&self.path, &String::from_utf8_lossy(&bytes))
    }

    /// Overwrite in place with a fixed width (20 digits hold any u64, 16 hex digits the hash),
    /// never truncating first: a crash mid-write cannot leave an empty record that would
    /// forget the committed token. An old, shorter record is overwritten whole. Synced before
    /// the state file is renamed: after a power loss the record must not be older than the
    /// document, or a lower token would pass.
    pub(super) fn write(&mut self, lease: &Lease) -> Result<()> {
        let text = format!("{:020} {:016x}", lease.token(), lease.owner_tag());
        self.file
            .rewind()
            .and_then(|()| self.file.write_all(text.as_bytes()))
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::internal(format!("fence record: {e}")))
    }
}

/// A fence record; empty (just created) is token 0. Anything else unreadable is an error: a
/// record read as 0 would let a stale writer through.
fn parse_record(path: &Path, text: &str) -> Result<Committed> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(Committed::default());
    }
    let (token, tag) = match t.split_once(' ') {
        Some((token, tag)) if tag.len() == 16 => (token, Some(tag)),
        Some(_) => (t, Some("")),
        None => (t, None),
    };
    let damaged = || {
        Error::internal(format!(
            "fence record {} is damaged ({:?}); remove it only when no writer runs",
            path.display(),
            t.chars().take(40).collect::<String>()
        ))
    };
    let token = token.parse().map_err(|_| damaged())?;
    let tag = match tag {
        Some(h) => Some(u64::from_str_radix(h, 16).map_err(|_| damaged())?),
        None => None,
    };
    Ok(Committed { token, tag })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_old_and_new_are_read_and_damage_is_refused() {
        let p = Path::new("r");
        assert_eq!(parse_record(p, "").unwrap(), Committed::default());
        let old = parse_record(p, "00000000000000000042").unwrap();
        assert_eq!(
            old,
            Committed {
                token: 42,
                tag: None
            }
        );
        assert_eq!(parse_record(p, "7\n").unwrap().token, 7);
        let new = parse_record(p, "00000000000000000042 00000000deadbeef").unwrap();
        assert_eq!(
            new,
            Committed {
                token: 42,
                tag: Some(0xdead_beef)
            }
        );
        for bad in [
            "x",
            "42 beef",
            "42 zzzzzzzzzzzzzzzz",
            "-1",
            "42  00000000deadbeef",
        ] {
            assert!(parse_record(p, bad).is_err(), "{bad:?} read");
        }
        // An old binary writing its 20 digits over a new record leaves the old hash behind:
        // read as that token with a hash no lease of that token has.
        assert_eq!(
            parse_record(p, "00000000000000000043 00000000deadbeef")
                .unwrap()
                .token,
            43
        );
    }
}
