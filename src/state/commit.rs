//! The commit, through the handle of the file's directory that the read used: write a temp file
//! there (`O_EXCL`), give it the old file's owner, group and mode, fsync it, then, holding the
//! file's fence record, compare the file with the bytes read, check that the lease is still
//! valid and that no higher fencing token (nor an equal one of another lease) has committed,
//! record our token and owner hash, rename over the target, fsync the directory. Also the
//! cleanup of temp files that crashed writers left behind.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rustix::fs::FileType;

use super::StateFile;
use super::fence::FenceRecord;
use super::load::{self, Loaded};
use crate::dir_handle::DirHandle;
use crate::holder::{pid_namespace, process_start_ticks, this_host};
use crate::repo;
use crate::{Error, Lease, Result};

impl StateFile {
    fn temp_prefix(&self) -> String {
        format!(".{}.tractatus-", self.file_name.to_string_lossy())
    }

    /// Returns the length of the window between the last validity check and the rename. Every
    /// step goes through `dir`, the handle the file was read through: the temp file, its
    /// owner and mode, the compare, the rename and the directory's fsync.
    pub(super) async fn commit(
        &self,
        dir: Option<&DirHandle>,
        lease: &Lease,
        fence: &FenceRecord,
        read: Option<&Loaded>,
        bytes: &[u8],
    ) -> Result<Duration> {
        // Messages name the file and its directory relative to the repository root.
        let cannot = |e: std::io::Error| Error::CannotWrite {
            path: self.name.clone().into(),
            source: e,
        };
        let dir_path = match self.rel_dir.as_os_str().is_empty() {
            true => Path::new("the repository root").to_owned(),
            false => self.rel_dir.clone(),
        };
        let Some(dir) = dir else {
            return Err(cannot(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("its directory {} does not exist", dir_path.display()),
            )));
        };
        // The rename would replace a file its permissions keep us from writing (0444 in a
        // directory we may write): refuse, as `echo > file` would.
        if read.is_some() && !dir.may_write(&self.file_name).map_err(cannot)? {
            return Err(cannot(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "it is read-only for this user (its mode does not let us write it); the file \
                 was left as it is",
            )));
        }
        let pid = std::process::id();
        let start = process_start_ticks(pid).unwrap_or(0);
        let host = temp_owner_tag();
        let prefix = format!("{}{host}-{pid}-{start}-", self.temp_prefix());
        let (mut file, name) = dir
            .create_temp(&prefix, ".tmp", 0o600)
            .map_err(|e| cannot(in_dir(&dir_path, e)))?;
        let mut tmp = TempFile {
            dir,
            name,
            renamed: false,
        };
        file.write_all(bytes).map_err(cannot)?;
        // A replaced file keeps its owner and group where we may set them (root may; a member
        // of the file's group may keep the group), then its mode (after: chown clears setuid).
        // A new file gets what `open(2)` would give it (0666 less the umask), not 0600.
        if let Some(r) = read {
            keep_owner(&file, r.uid, r.gid);
        }
        let mode = read.map_or(0o666 & !repo::process_umask(), |r| r.mode);
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(cannot)?;
        file.sync_all().map_err(cannot)?;
        drop(file);

        let mut record = fence.lock(lease).await?;
        // Compare and swap: the file must still hold what we read. A writer whose lease was
        // broken or ran out may have committed in between (its token was above the record then),
        // or a program that takes no lock may have written it; writing over that would lose its
        // update, so we refuse and the change is redone on the new document. Bytes, not
        // metadata: a same-size rewrite within one coarse mtime tick would pass a stat check.
        let expected = read.map(|r| r.bytes.as_slice());
        if !load::holds(dir, &self.file_name, expected).map_err(cannot)? {
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
        dir.rename(&tmp.name, &self.file_name).map_err(cannot)?;
        let window = checked.elapsed();
        tmp.renamed = true;
        // The new document is in place and every reader sees it: a failed directory fsync
        // (only durability across a power loss is in doubt) must not report "nothing written".
        let _ = dir.sync();
        Ok(window)
    }

    /// Remove temp files of this state file whose writer is gone (crashed mid-commit), through
    /// `dir`. A temp file of a live writer, or of another host younger than the longest hold,
    /// is kept; only regular files are removed.
    pub(super) fn remove_abandoned_temp_files(&self, dir: &DirHandle, lease: &Lease) {
        let Ok(entries) = dir.entries() else {
            return;
        };
        let prefix = self.temp_prefix();
        let me = temp_owner_tag();
        let old_enough = lease_max_age(lease);
        for (entry, kind) in entries {
            if kind != FileType::RegularFile {
                continue;
            }
            let name = entry.to_string_lossy().into_owned();
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
                dir.stat(&entry)
                    .ok()
                    .flatten()
                    .and_then(|s| u64::try_from(s.st_mtime).ok())
                    .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t))
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > old_enough)
            };
            if gone {
                let _ = dir.remove_file(&entry);
            }
        }
    }
}

/// A temp file not yet renamed into place: removed (through its directory's handle) when the
/// commit stops before the rename.
struct TempFile<'a> {
    dir: &'a DirHandle,
    name: OsString,
    renamed: bool,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = self.dir.remove_file(&self.name);
        }
    }
}

/// Give the new file the old one's owner and group, as far as we may: both (root, or the
/// owner itself), else the group alone (a member of it), else neither (the file becomes the
/// writer's, as any replacement by rename makes it).
fn keep_owner(file: &std::fs::File, uid: u32, gid: u32) {
    use rustix::fs::{Gid, Uid, fchown};
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    if fchown(file, Some(uid), Some(gid)).is_err() {
        let _ = fchown(file, None, Some(gid));
    }
}

/// Why no temp file could be made in `dir`, naming the directory (the temp file's own name is
/// noise to the reader).
fn in_dir(dir: &Path, e: std::io::Error) -> std::io::Error {
    let what = if e.kind() == std::io::ErrorKind::NotFound {
        format!("its directory {} does not exist", dir.display())
    } else {
        format!("cannot create a file in {}: {e}", dir.display())
    };
    std::io::Error::new(e.kind(), what)
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
