//! The commit: write a temp file in the same directory, fsync it, give it the old file's mode,
//! then, holding the file's fence record, compare the file with the bytes read, check that the
//! lease is still valid and that no higher fencing token (nor an equal one of another lease)
//! has committed, record our token and owner hash, rename
//! over the target, fsync the directory. Also the cleanup of temp files that crashed writers
//! left behind.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::fence::FenceRecord;
use super::{StateFile, load};
use crate::holder::{pid_namespace, process_start_ticks, this_host};
use crate::repo;
use crate::{Error, Lease, Result};

impl StateFile {
    fn temp_prefix(&self) -> String {
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!(".{file_name}.tractatus-")
    }

    /// Returns the length of the window between the last validity check and the rename.
    pub(super) async fn commit(
        &self,
        lease: &Lease,
        fence: &FenceRecord,
        read: Option<&[u8]>,
        bytes: &[u8],
        mode: Option<u32>,
    ) -> Result<Duration> {
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let cannot = |e: std::io::Error| Error::CannotWrite {
            path: self.path.clone(),
            source: e,
        };
        let pid = std::process::id();
        let start = process_start_ticks(pid).unwrap_or(0);
        let host = temp_owner_tag();
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!("{}{host}-{pid}-{start}-", self.temp_prefix()))
            .suffix(".tmp")
            .rand_bytes(6)
            .tempfile_in(dir)
            .map_err(|e| cannot(in_dir(dir, e)))?;
        tmp.write_all(bytes).map_err(cannot)?;
        // Keep the file's mode; a new file gets what `open(2)` would give it (0666 less the
        // umask), not the temp file's 0600.
        let mode = mode.unwrap_or(0o666 & !repo::process_umask());
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(cannot)?;
        tmp.as_file().sync_all().map_err(cannot)?;

        let mut record = fence.lock(lease).await?;
        // Compare and swap: the file must still hold what we read. A writer whose lease was
        // broken or ran out may have committed in between (its token was above the record then),
        // or a program that takes no lock may have written it; writing over that would lose its
        // update, so we refuse and the change is redone on the new document. Bytes, not
        // metadata: a same-size rewrite within one coarse mtime tick would pass a stat check.
        if !load::holds(&self.path, read).map_err(cannot)? {
            return Err(Error::Conflict {
                name: self.name.clone(),
            });
        }
        let committed = record.read()?;
        // A token belongs to one lease: equal is as stale as lower, unless that same lease
        // (its holder, or a process that joined it) committed it.
        if !committed.admits(lease) {
            return Err(Error::Fenced {
                name: self.name.clone(),
                token: lease.token(),
                committed: committed.token,
            });
        }
        // Record first: if the check below fails, a token that never landed is on record, which
        // only refuses writers that are older still.
        record.write(lease)?;
        // The last check: from here to the rename is the window no lease can close.
        lease.check_valid()?;
        let checked = std::time::Instant::now();
        tmp.persist(&self.path).map_err(|e| cannot(e.error))?;
        let window = checked.elapsed();
        // The new document is in place and every reader sees it: a failed directory fsync
        // (only durability across a power loss is in doubt) must not report "nothing written".
        let _ = File::open(dir).and_then(|d| d.sync_all());
        Ok(window)
    }

    /// Remove temp files of this state file whose writer is gone (crashed mid-commit). A temp
    /// file of a live writer, or of another host younger than the longest hold, is kept.
    pub(super) fn remove_abandoned_temp_files(&self, lease: &Lease) {
        let Some(dir) = self.path.parent() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let prefix = self.temp_prefix();
        let me = temp_owner_tag();
        let old_enough = lease_max_age(lease);
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".tmp"))
            else {
                continue;
            };
            let mut parts = rest.rsplitn(4, '-');
            let (_rand, start, pid, host) =
                (parts.next(), parts.next(), parts.next(), parts.next());
            let (Some(start), Some(pid), Some(host)) = (start, pid, host) else {
                continue;
            };
            let same_host = host == me;
            let gone = if same_host {
                let pid: u32 = pid.parse().unwrap_or(0);
                pid != std::process::id()
                    && match process_start_ticks(pid) {
                        None => true,
                        Some(now) => start.parse::<u64>().ok() != Some(now),
                    }
            } else {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > old_enough)
            };
            if gone {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The temp file's own path in an error (tempfile adds it) is 200 characters of noise: name the
/// directory, which is what a missing or read-only directory is about.
fn in_dir(dir: &Path, e: std::io::Error) -> std::io::Error {
    let kind = e.kind();
    // tempfile wraps the OS error with the path; the OS error is its source.
    let os = e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| std::error::Error::source(inner))
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error)
    });
    let cause = match os {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => kind.to_string(),
    };
    let what = if kind == std::io::ErrorKind::NotFound {
        format!("its directory {} does not exist", dir.display())
    } else {
        format!("cannot create a file in {}: {cause}", dir.display())
    };
    std::io::Error::new(kind, what)
}

/// Who writes a temp file, in its name: the host name (letters, digits and dots kept) and the
/// PID namespace, so a pid in the name is judged only where it means the same process.
fn temp_owner_tag() -> String {
    let host: String = this_host()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{host}.{}", pid_namespace().unwrap_or_default())
}

/// How old another host's temp file must be before it is surely abandoned: no lease lasts
/// longer than the longest hold plus one TTL (other hosts are assumed to use the same settings,
/// and never less than the defaults).
fn lease_max_age(lease: &Lease) -> Duration {
    let c = lease.config();
    c.max_hold.max(crate::config::DEFAULT_MAX_HOLD) + c.ttl.max(crate::config::DEFAULT_TTL)
}
