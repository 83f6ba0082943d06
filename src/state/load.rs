//! Reading a state file from disk: only a regular file is read, and opening never waits. A FIFO
//! opened for reading blocks until a writer appears, and a device may never answer, so the file
//! is opened non-blocking and judged by `fstat` of what was opened (not of the path, which could
//! be swapped in between) before a byte is read. Also the compare-and-swap's question "does the
//! file still hold these bytes?", answered in chunks rather than with a second copy in memory.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::OFlag;

use crate::{Error, Result};

/// A state file's bytes and mode, as read.
#[derive(Debug)]
pub(super) struct Loaded {
    pub(super) bytes: Vec<u8>,
    pub(super) mode: u32,
}

/// Open `path` for reading without waiting, with its `fstat`; `None` when it does not exist.
fn open(path: &Path) -> std::io::Result<Option<(File, std::fs::Metadata)>> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    Ok(Some((file, meta)))
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "a special file"
    }
}

/// The file's bytes and mode; `None` when it does not exist. Anything but a regular file is bad
/// data (65).
pub(super) fn load(path: &Path) -> Result<Option<Loaded>> {
    let cannot =
        |e: std::io::Error| Error::bad_data(format!("cannot read {}: {e}", path.display()));
    let Some((mut file, meta)) = open(path).map_err(cannot)? else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Err(Error::bad_data(format!(
            "{} is {}, not a regular file; a state file must be a regular file; nothing written",
            path.display(),
            file_kind(&meta.file_type())
        )));
    }
    // Sized from fstat: growing a buffer by doubling would hold up to twice the file.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(cannot)?;
    Ok(Some(Loaded {
        bytes,
        mode: meta.permissions().mode(),
    }))
}

/// True when the file at `path` holds exactly `expected` (`None`: it does not exist). A file
/// that is no longer a regular file does not hold it.
pub(super) fn holds(path: &Path, expected: Option<&[u8]>) -> std::io::Result<bool> {
    let Some((mut file, meta)) = open(path)? else {
        return Ok(expected.is_none());
    };
    let Some(mut expected) = expected else {
        return Ok(false);
    };
    if !meta.is_file() || meta.len() != expected.len() as u64 {
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

    #[test]
    fn holds_compares_whole_contents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        assert!(holds(&p, None).unwrap());
        assert!(!holds(&p, Some(b"{}")).unwrap());
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &big).unwrap();
        assert!(holds(&p, Some(&big)).unwrap());
        assert!(!holds(&p, None).unwrap());
        let mut other = big.clone();
        other[150_000] ^= 1;
        assert!(!holds(&p, Some(&other)).unwrap());
        assert!(!holds(&p, Some(&big[..big.len() - 1])).unwrap());
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("missing")).unwrap().is_none());
        let e = load(dir.path()).unwrap_err();
        assert_eq!(e.exit_code(), 65);
        assert!(e.to_string().contains("a directory"), "{e}");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = load(&fifo).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        assert!(!holds(&fifo, None).unwrap());
    }
}
