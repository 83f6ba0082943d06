//! Reading a state file through its directory's handle: only a regular file is read, never
//! through a symlink, and opening never waits. A FIFO opened for reading blocks until a writer
//! appears, and a device may never answer, so the file is opened `O_NOFOLLOW | O_NONBLOCK` and
//! judged by `fstat` of what was opened (not of the path, which could be swapped in between)
//! before a byte is read. Also the compare-and-swap's question "does the file still hold these
//! bytes?", asked through the same handle and answered in chunks rather than with a second copy
//! in memory.

use std::ffi::OsStr;
use std::io::{ErrorKind, Read};
use std::path::Path;

use rustix::fs::{FileType, Stat};

use crate::dir_handle::{DirHandle, is_refused_link, kind_of};
use crate::{Error, Result};

/// A state file's bytes, mode and owner, as read.
#[derive(Debug)]
pub(super) struct Loaded {
    pub(super) bytes: Vec<u8>,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

fn is_regular(stat: &Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
}

/// The file `name` in `dir` (`path` names it in messages): its bytes, mode and owner; `None`
/// when it does not exist. A symlink, or anything but a regular file, is bad data (65).
pub(super) fn load(dir: &DirHandle, name: &OsStr, path: &Path) -> Result<Option<Loaded>> {
    let cannot = |e: std::io::Error| {
        if is_refused_link(&e) {
            Error::bad_data(format!("{e}; nothing written"))
        } else if e.kind() == ErrorKind::PermissionDenied {
            Error::CannotRead {
                path: path.to_owned(),
                source: e,
            }
        } else {
            Error::bad_data(format!("cannot read {}: {e}", path.display()))
        }
    };
    let Some((mut file, stat)) = dir.open_read(name).map_err(cannot)? else {
        return Ok(None);
    };
    if !is_regular(&stat) {
        return Err(Error::bad_data(format!(
            "{} is {}, not a regular file; a state file must be a regular file; nothing written",
            path.display(),
            kind_of(&stat)
        )));
    }
    // Sized from fstat: growing a buffer by doubling would hold up to twice the file.
    let mut bytes = Vec::with_capacity(usize::try_from(stat.st_size).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(cannot)?;
    Ok(Some(Loaded {
        bytes,
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid,
        gid: stat.st_gid,
    }))
}

/// True when the file `name` in `dir` holds exactly `expected` (`None`: it does not exist). A
/// file that is no longer a regular file (a symlink or a FIFO swapped in) does not hold it.
pub(super) fn holds(
    dir: &DirHandle,
    name: &OsStr,
    expected: Option<&[u8]>,
) -> std::io::Result<bool> {
    let opened = match dir.open_read(name) {
        Err(e) if is_refused_link(&e) => return Ok(false),
        other => other?,
    };
    let Some((mut file, stat)) = opened else {
        return Ok(expected.is_none());
    };
    let Some(mut expected) = expected else {
        return Ok(false);
    };
    if !is_regular(&stat) || stat.st_size as u64 != expected.len() as u64 {
        return Ok(false);
    }
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(expected.is_empty());
        }
        if n > expected.len() || chunk[..n] != expected[..n] {
            return Ok(false);
        }
        expected = &expected[n..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, DirHandle) {
        let tmp = tempfile::tempdir().unwrap();
        let h = DirHandle::open_root(&tmp.path().canonicalize().unwrap()).unwrap();
        (tmp, h)
    }

    #[test]
    fn holds_compares_whole_contents() {
        let (tmp, d) = dir();
        let n = OsStr::new("f.json");
        let p = tmp.path().join(n);
        assert!(holds(&d, n, None).unwrap());
        assert!(!holds(&d, n, Some(b"{}")).unwrap());
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &big).unwrap();
        assert!(holds(&d, n, Some(&big)).unwrap());
        assert!(!holds(&d, n, None).unwrap());
        let mut other = big.clone();
        other[150_000] ^= 1;
        assert!(!holds(&d, n, Some(&other)).unwrap());
        assert!(!holds(&d, n, Some(&big[..big.len() - 1])).unwrap());
        // A link to a file with the same bytes does not hold them: it is not our file.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("same"), &big).unwrap();
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(outside.path().join("same"), &p).unwrap();
        assert!(!holds(&d, n, Some(&big)).unwrap());
    }

    #[test]
    fn only_regular_files_are_read_and_never_through_a_link() {
        let (tmp, d) = dir();
        let at = |n: &str| tmp.path().join(n);
        assert!(
            load(&d, OsStr::new("missing"), &at("missing"))
                .unwrap()
                .is_none()
        );
        std::fs::create_dir(at("sub")).unwrap();
        let e = load(&d, OsStr::new("sub"), &at("sub")).unwrap_err();
        assert_eq!(e.exit_code(), 65);
        assert!(e.to_string().contains("a directory"), "{e}");
        nix::unistd::mkfifo(&at("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = load(&d, OsStr::new("fifo"), &at("fifo")).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        assert!(!holds(&d, OsStr::new("fifo"), None).unwrap());
        std::fs::write(at("real"), "{}").unwrap();
        std::os::unix::fs::symlink(at("real"), at("link")).unwrap();
        let e = load(&d, OsStr::new("link"), &at("link")).unwrap_err();
        assert_eq!(e.exit_code(), 65);
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }
}
