//! The fence record: the highest token committed to one state file, kept in the repository's
//! working directory and locked with `flock` around each commit, so that writers on one machine
//! are serialized at the moment they land and a lower token never overwrites a higher one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::repo;
use crate::{Error, Lease, Result};

/// The highest token committed to one state file, kept in the repository's working directory.
pub(super) struct FenceRecord {
    path: PathBuf,
}

pub(super) struct LockedRecord {
    file: File,
    path: PathBuf,
}

impl FenceRecord {
    pub(super) fn new(work_dir: &Path, name: &str) -> Result<Self> {
        let dir = work_dir.join("fence");
        if !dir.is_dir() {
            if let Some(root) = work_dir.parent().and_then(Path::parent) {
                repo::work_dir(root)?;
            }
            std::fs::create_dir_all(&dir).map_err(|e| Error::CannotWrite {
                path: dir.clone(),
                source: e,
            })?;
        }
        Ok(FenceRecord {
            path: dir.join(name.replace('/', "%2F")),
        })
    }

    pub(super) fn read(&self) -> Result<u64> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => parse_record(&self.path, &s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::CannotWrite {
                path: self.path.clone(),
                source: e,
            }),
        }
    }

    /// Lock the record for one commit. `flock` could wait for ever behind a writer stopped
    /// mid-commit, so it is tried without blocking and retried on tokio's clock, until the lease
    /// is lost (76) or one TTL has passed (75): the record is held for microseconds by a
    /// writer that runs, so that long means the writer holding it is stuck.
    pub(super) async fn lock(&self, lease: &Lease) -> Result<LockedRecord> {
        let cannot = |e| Error::CannotWrite {
            path: self.path.clone(),
            source: e,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(cannot)?;
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

impl LockedRecord {
    pub(super) fn read(&mut self) -> Result<u64> {
        let mut s = String::new();
        self.file
            .rewind()
            .and_then(|()| self.file.read_to_string(&mut s))
            .map_err(|e| Error::internal(format!("fence record: {e}")))?;
        parse_record(&self.path, &s)
    }

    /// Overwrite in place with a fixed width (20 digits hold any u64), never truncating first:
    /// a crash mid-write cannot leave an empty record that would forget the committed token.
    pub(super) fn write(&mut self, token: u64) -> Result<()> {
        self.file
            .rewind()
            .and_then(|()| self.file.write_all(format!("{token:020}").as_bytes()))
            .map_err(|e| Error::internal(format!("fence record: {e}")))
    }
}

/// A fence record's token; empty (just created) is 0. Anything else unreadable is an error: a
/// record read as 0 would let a stale writer through.
fn parse_record(path: &Path, text: &str) -> Result<u64> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(0);
    }
    t.parse().map_err(|_| {
        Error::internal(format!(
            "fence record {} is damaged ({:?}); remove it only when no writer runs",
            path.display(),
            t.chars().take(40).collect::<String>()
        ))
    })
}
