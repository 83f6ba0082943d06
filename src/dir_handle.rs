//! Files below the repository root, reached through directory handles: the root is resolved and
//! opened once, and every directory under it is opened from its parent's handle with
//! `O_NOFOLLOW | O_DIRECTORY`, one component at a time (`openat`). Everything after that (read,
//! create, rename, delete, fsync) is relative to a handle, so the directory that was checked is
//! the directory that is written, and a symlink or a swapped directory planted by a co-user can
//! neither lead a write out of the checkout nor make us touch a file we did not mean.
//!
//! The rules, for every file of ours (state files, lock files, counters, fence records, the
//! config file, session directories):
//! - a symlink where a directory or a file should be is refused ([`is_refused_link`]), never
//!   followed;
//! - a file is opened `O_NOFOLLOW | O_NONBLOCK` and judged by `fstat` of what was opened: only a
//!   regular file is read or written, so a FIFO or a device never makes us wait;
//! - a file a co-user can replace is read with a size cap ([`DirHandle::read_capped`]);
//! - a file written in place (lock files, counters, fence records) must have one link, so a
//!   hard link planted to someone's file is not truncated through ours;
//! - removing a tree ([`DirHandle::remove_tree`]) crosses neither a symlink nor a mount point.
//!
//! Built on `rustix`'s `*at` calls; the crate forbids `unsafe`, and so does this file.
//!
//! Just over 500 lines, kept whole: every operation here is one rule (no link followed, no
//! FIFO waited on, reads capped, one link) applied to one handle, and a split would put the
//! rules on one side and the calls that must obey them on the other.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

/// An open directory, reached from the repository root without following a symlink.
#[derive(Debug)]
pub(crate) struct DirHandle {
    fd: OwnedFd,
    path: PathBuf,
}

/// The message of an error that refused a symlink (or something else that is not what we
/// expected) where a directory or file of ours should be.
const LINK_REFUSED: &str = "is a symbolic link; tractatus never follows a symlink below the repository root (a co-user may have planted it)";

/// True when `e` is the refusal of a symlink (or of a non-directory where a directory should
/// be) by this module: such errors are the caller's "bad data" or "cannot write", never retried.
pub(crate) fn is_refused_link(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
        || e.to_string().contains(LINK_REFUSED)
}

/// True when `e` is any refusal by this module: a symlink, a FIFO, device or directory where a
/// regular file should be, a second hard link, a file over its cap, a mount point. Such a file
/// was planted or damaged, never a passing failure: 73 for our bookkeeping, never retried.
pub(crate) fn is_refusal(e: &io::Error) -> bool {
    is_refused_link(e) || e.get_ref().is_some_and(|inner| inner.is::<Refused>())
}

/// True for the refusals of this module as they reach a reader by path (a link, not a regular
/// file, over a cap): `ErrorKind::Other` errors carrying the path, as against an error of the
/// OS. The config file, the password files and the CA file are judged so.
pub(crate) fn is_refusal_by_kind(e: &io::Error) -> bool {
    is_refused_link(e) || e.kind() == io::ErrorKind::Other
}

/// The message of a refusal, typed so that [`is_refusal`] knows it from the OS's errors.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(path: &Path, what: &str) -> io::Error {
    io::Error::other(Refused(format!("{} {what}", path.display())))
}

fn link_refused(path: &Path) -> io::Error {
    refused(path, LINK_REFUSED)
}

/// What kind of file a stat says, in words for an error message.
pub(crate) fn kind_of(stat: &Stat) -> &'static str {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        FileType::Unknown => "a special file",
    }
}

fn is_regular(stat: &Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
}

/// A single file name: no `/`, not `.` or `..`, not empty.
fn check_name(name: &OsStr) -> io::Result<&OsStr> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} is not a single file name", name),
        ));
    }
    Ok(name)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
const FILE_FLAGS: OFlags = OFlags::NOFOLLOW
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

impl DirHandle {
    /// The repository root at `root`, which the caller resolved once (canonical). The root's
    /// own path is the user's choice, so symlinks above it were followed by that resolution;
    /// nothing below it is.
    pub(crate) fn open_root(root: &Path) -> io::Result<DirHandle> {
        let fd = rustix::fs::openat(
            rustix::fs::CWD,
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(DirHandle {
            fd,
            path: root.to_path_buf(),
        })
    }

    /// The path this handle was reached by (for messages only: nothing is opened by it).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `name`'s path below this directory, for messages.
    pub(crate) fn child_path(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.path.join(name.as_ref())
    }

    /// Another handle on the same directory.
    pub(crate) fn try_clone(&self) -> io::Result<DirHandle> {
        Ok(DirHandle {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// The directory `rel` below this one (plain components only), each component opened with
    /// `O_NOFOLLOW | O_DIRECTORY`. `None` when a component does not exist. A symlink, or
    /// anything but a directory, on the way is an error naming its path.
    pub(crate) fn open_dir(&self, rel: &Path) -> io::Result<Option<DirHandle>> {
        self.walk(rel, None)
    }

    /// As [`DirHandle::open_dir`], creating missing directories with `mode` (less the umask;
    /// a setgid parent's group is inherited as the kernel does it).
    pub(crate) fn create_dir_all(&self, rel: &Path, mode: u32) -> io::Result<DirHandle> {
        self.walk(rel, Some(mode))?
            .ok_or_else(|| io::Error::other("directory vanished while it was made"))
    }

    fn walk(&self, rel: &Path, create: Option<u32>) -> io::Result<Option<DirHandle>> {
        let mut cur = self.try_clone()?;
        for c in rel.components() {
            let name = match c {
                Component::Normal(n) => n,
                Component::CurDir => continue,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{} is not a path below {}",
                            rel.display(),
                            self.path.display()
                        ),
                    ));
                }
            };
            let path = cur.path.join(name);
            let fd = match rustix::fs::openat(&cur.fd, name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => match create {
                    None => return Ok(None),
                    Some(mode) => {
                        match rustix::fs::mkdirat(&cur.fd, name, Mode::from_raw_mode(mode)) {
                            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                            Err(e) => return Err(e.into()),
                        }
                        rustix::fs::openat(&cur.fd, name, DIR_FLAGS, Mode::empty())
                            .map_err(|e| dir_open_error(&cur, name, &path, e))?
                    }
                },
                Err(e) => return Err(dir_open_error(&cur, name, &path, e)),
            };
            cur = DirHandle { fd, path };
        }
        Ok(Some(cur))
    }

    /// `lstat` of `name` in this directory; `None` when it does not exist.
    pub(crate) fn stat(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        match rustix::fs::statat(&self.fd, check_name(name)?, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => Ok(Some(s)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether this process may write the file `name` by its permissions (`faccessat` with
    /// `W_OK`: root may write anything), asked without opening it; a file that does not exist
    /// (any more) is no refusal.
    pub(crate) fn may_write(&self, name: &OsStr) -> io::Result<bool> {
        let access = rustix::fs::Access::WRITE_OK;
        match rustix::fs::accessat(&self.fd, check_name(name)?, access, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(true),
            Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM | rustix::io::Errno::ROFS) => {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The target of the symlink `name` in this directory, as written in the link (to judge
    /// where it leads, never to follow it); `None` when `name` is not a symlink.
    pub(crate) fn read_link(&self, name: &OsStr) -> io::Result<Option<PathBuf>> {
        match rustix::fs::readlinkat(&self.fd, check_name(name)?, Vec::new()) {
            Ok(target) => Ok(Some(PathBuf::from(OsStr::from_bytes(target.as_bytes())))),
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `fstat` of this directory.
    pub(crate) fn stat_self(&self) -> io::Result<Stat> {
        Ok(rustix::fs::fstat(&self.fd)?)
    }

    /// Open `name` for reading, never following a symlink and never waiting (a FIFO opens at
    /// once, and is then refused by the caller's look at the returned stat). `None` when it
    /// does not exist.
    pub(crate) fn open_read(&self, name: &OsStr) -> io::Result<Option<(File, Stat)>> {
        let flags = FILE_FLAGS | OFlags::RDONLY;
        let fd = match rustix::fs::openat(&self.fd, check_name(name)?, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => return Err(link_refused(&self.child_path(name))),
            Err(e) => return Err(e.into()),
        };
        let stat = rustix::fs::fstat(&fd)?;
        Ok(Some((File::from(fd), stat)))
    }

    /// The bytes of the regular file `name`, at most `cap` of them (more is an error that says
    /// so); `None` when it does not exist. A symlink, FIFO, device or directory is an error
    /// naming what it is.
    pub(crate) fn read_capped(&self, name: &OsStr, cap: u64) -> io::Result<Option<Vec<u8>>> {
        let Some((file, stat)) = self.open_read(name)? else {
            return Ok(None);
        };
        let path = self.child_path(name);
        if !is_regular(&stat) {
            return Err(refused(
                &path,
                &format!("is {}, not a regular file", kind_of(&stat)),
            ));
        }
        let mut bytes = Vec::new();
        file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > cap {
            return Err(refused(
                &path,
                &format!("is larger than {cap} bytes, more than it can be"),
            ));
        }
        Ok(Some(bytes))
    }

    /// Open or create the regular file `name` for reading and writing in place (a lock file,
    /// a counter, a fence record): never through a symlink, never a FIFO or device, never a
    /// file with a second hard link (writing it would write someone else's file too).
    pub(crate) fn open_rw(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let flags = FILE_FLAGS | OFlags::RDWR | OFlags::CREATE;
        let fd = match rustix::fs::openat(
            &self.fd,
            check_name(name)?,
            flags,
            Mode::from_raw_mode(mode),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::LOOP) => return Err(link_refused(&self.child_path(name))),
            Err(e) => return Err(e.into()),
        };
        let stat = rustix::fs::fstat(&fd)?;
        let path = self.child_path(name);
        if !is_regular(&stat) {
            return Err(refused(
                &path,
                &format!("is {}, not a regular file", kind_of(&stat)),
            ));
        }
        if stat.st_nlink > 1 {
            return Err(refused(
                &path,
                "has another hard link; tractatus writes its own files only",
            ));
        }
        // O_NONBLOCK was for the open; reads and writes of a regular file never wait on it.
        let file = File::from(fd);
        rustix::fs::fcntl_setfl(&file, OFlags::empty())?;
        Ok(file)
    }

    /// Create the new file `name` (`O_CREAT | O_EXCL | O_NOFOLLOW`) with `mode` (less the
    /// umask): it cannot be a file that was already there, nor a link.
    pub(crate) fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::NOCTTY
            | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(
            &self.fd,
            check_name(name)?,
            flags,
            Mode::from_raw_mode(mode),
        )?;
        Ok(File::from(fd))
    }

    /// A new file with a name made of `prefix`, random characters and `suffix`; returns it and
    /// its name.
    pub(crate) fn create_temp(
        &self,
        prefix: &str,
        suffix: &str,
        mode: u32,
    ) -> io::Result<(File, OsString)> {
        for _ in 0..16 {
            let rand = uuid::Uuid::new_v4().simple().to_string();
            let name = OsString::from(format!("{prefix}{}{suffix}", &rand[..12]));
            match self.create_new(&name, mode) {
                Ok(f) => return Ok((f, name)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("no free temp file name in {}", self.path.display()),
        ))
    }

    /// Rename `from` to `to`, both in this directory (atomic; `to` is replaced).
    pub(crate) fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::renameat(
            &self.fd,
            check_name(from)?,
            &self.fd,
            check_name(to)?,
        )?)
    }

    /// Rename `from` to `to`, both in this directory, unless `to` exists (as anything, a
    /// symlink included): then `AlreadyExists`, and `from` stays. Two first writers of one file
    /// thus agree on the first one's.
    pub(crate) fn rename_noreplace(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (from, to) = (check_name(from)?, check_name(to)?);
        #[cfg(target_os = "linux")]
        match rustix::fs::renameat_with(
            &self.fd,
            from,
            &self.fd,
            to,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Err(
                rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP,
            ) => {}
            r => return Ok(r?),
        }
        // Without renameat2 (another OS, or a filesystem without it): a new hard link fails
        // when `to` exists, whatever it is.
        rustix::fs::linkat(&self.fd, from, &self.fd, to, AtFlags::empty())?;
        self.remove_file(from)
    }

    /// Remove the file (or symlink: the link itself) `name`; absent is fine.
    pub(crate) fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, check_name(name)?, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The names in this directory (not `.` and `..`), with their types as the directory
    /// lists them (`lstat`'s view: a symlink is a symlink).
    pub(crate) fn entries(&self) -> io::Result<Vec<(OsString, FileType)>> {
        let mut dir = rustix::fs::Dir::read_from(&self.fd)?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let mut kind = entry.file_type();
            if kind == FileType::Unknown {
                kind = match self.stat(name)? {
                    Some(s) => FileType::from_raw_mode(s.st_mode),
                    None => continue,
                };
            }
            out.push((name.to_owned(), kind));
        }
        Ok(out)
    }

    /// Remove the directory `name` and everything in it, through handles: a symlink inside is
    /// removed as a link (never followed), and a directory on another device (a mount point)
    /// is neither entered nor removed; the removal then fails, naming it.
    pub(crate) fn remove_tree(&self, name: &OsStr) -> io::Result<()> {
        let dev = self.stat_self()?.st_dev;
        let Some(sub) = self.open_dir(Path::new(check_name(name)?))? else {
            return Ok(());
        };
        sub.empty_out(dev, 0)?;
        drop(sub);
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn empty_out(&self, dev: u64, depth: usize) -> io::Result<()> {
        if self.stat_self()?.st_dev != dev {
            return Err(refused(
                &self.path,
                "is a mount point; tractatus removes nothing on another filesystem",
            ));
        }
        if depth > 64 {
            return Err(refused(&self.path, "nests too deep to remove"));
        }
        for (name, kind) in self.entries()? {
            if kind == FileType::Directory {
                let Some(sub) = self.open_dir(Path::new(&name))? else {
                    continue;
                };
                sub.empty_out(dev, depth + 1)?;
                drop(sub);
                match rustix::fs::unlinkat(&self.fd, &name, AtFlags::REMOVEDIR) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            } else {
                self.remove_file(&name)?;
            }
        }
        Ok(())
    }

    /// fsync of the directory (a rename in it is durable after this).
    pub(crate) fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.fd)?)
    }

    /// The handle, for `*at` calls this module does not wrap.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The bytes of the regular file at `path`, which the user named and which may lie outside any
/// repository (a CA bundle in `/etc/ssl`): symlinks on the way are the user's and are followed,
/// but the file is opened `O_NONBLOCK` and judged by `fstat`, so a FIFO or a device is refused
/// at once, and it is read with the cap `cap`. A file inside the repository is read through
/// [`DirHandle`]s instead.
pub(crate) fn read_capped_path(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let flags = FILE_FLAGS.difference(OFlags::NOFOLLOW) | OFlags::RDONLY;
    let fd = rustix::fs::open(path, flags, Mode::empty())?;
    let stat = rustix::fs::fstat(&fd)?;
    if !is_regular(&stat) {
        return Err(refused(
            path,
            &format!("is {}, not a regular file", kind_of(&stat)),
        ));
    }
    let mut bytes = Vec::new();
    File::from(fd)
        .take(cap.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(refused(
            path,
            &format!("is larger than {cap} bytes, more than it can be"),
        ));
    }
    Ok(bytes)
}

/// Why a directory component could not be opened, with the path in words: `ELOOP` (a
/// symlink) and `ENOTDIR` (a file) are refusals, the rest the OS's error.
fn dir_open_error(
    parent: &DirHandle,
    name: &OsStr,
    path: &Path,
    e: rustix::io::Errno,
) -> io::Error {
    match e {
        rustix::io::Errno::LOOP => link_refused(path),
        rustix::io::Errno::NOTDIR => match parent.stat(name) {
            Ok(Some(s)) if FileType::from_raw_mode(s.st_mode) == FileType::Symlink => {
                link_refused(path)
            }
            Ok(Some(s)) => refused(path, &format!("is {}, not a directory", kind_of(&s))),
            _ => e.into(),
        },
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> (tempfile::TempDir, DirHandle) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let h = DirHandle::open_root(&root).unwrap();
        (tmp, h)
    }

    #[test]
    fn a_symlinked_directory_on_the_way_is_refused_not_followed() {
        let (tmp, root) = root();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("a")).unwrap();
        symlink(outside.path(), tmp.path().join("a/b")).unwrap();
        let e = root.open_dir(Path::new("a/b/c")).unwrap_err();
        assert!(is_refused_link(&e), "{e}");
        assert!(e.to_string().contains("a/b"), "{e}");
        let e = root.create_dir_all(Path::new("a/b/c"), 0o755).unwrap_err();
        assert!(is_refused_link(&e), "{e}");
        assert!(!outside.path().join("c").exists());
    }

    #[test]
    fn files_are_never_opened_through_a_link_nor_waited_on() {
        let (tmp, root) = root();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        symlink(&victim, tmp.path().join("lock")).unwrap();
        let e = root.open_rw(OsStr::new("lock"), 0o644).unwrap_err();
        assert!(is_refused_link(&e), "{e}");
        let e = root.read_capped(OsStr::new("lock"), 100).unwrap_err();
        assert!(is_refused_link(&e), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        nix::unistd::mkfifo(
            &tmp.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let e = root.read_capped(OsStr::new("fifo"), 100).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let e = root.open_rw(OsStr::new("fifo"), 0o644).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        std::fs::hard_link(&victim, tmp.path().join("hard")).unwrap();
        let e = root.open_rw(OsStr::new("hard"), 0o644).unwrap_err();
        assert!(e.to_string().contains("hard link"), "{e}");
        std::fs::write(tmp.path().join("big"), vec![b'x'; 1000]).unwrap();
        let e = root.read_capped(OsStr::new("big"), 999).unwrap_err();
        assert!(e.to_string().contains("larger than 999"), "{e}");
        assert_eq!(
            root.read_capped(OsStr::new("big"), 1000)
                .unwrap()
                .unwrap()
                .len(),
            1000
        );
        assert!(root.read_capped(OsStr::new("none"), 10).unwrap().is_none());
    }

    #[test]
    fn a_tree_is_removed_without_following_links_out_of_it() {
        let (tmp, root) = root();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "x").unwrap();
        std::fs::create_dir_all(tmp.path().join("t/u/v")).unwrap();
        std::fs::write(tmp.path().join("t/u/v/f"), "f").unwrap();
        symlink(outside.path(), tmp.path().join("t/u/link")).unwrap();
        root.remove_tree(OsStr::new("t")).unwrap();
        assert!(!tmp.path().join("t").exists());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("keep")).unwrap(),
            "x"
        );
    }

    #[test]
    fn temp_files_are_new_and_renamed_in_place() {
        let (tmp, root) = root();
        let (mut f, name) = root.create_temp(".x-", ".tmp", 0o600).unwrap();
        std::io::Write::write_all(&mut f, b"new").unwrap();
        root.rename(&name, OsStr::new("doc.json")).unwrap();
        root.sync().unwrap();
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("doc.json")).unwrap(),
            "new"
        );
        let names: Vec<_> = root.entries().unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(names, vec![OsString::from("doc.json")]);
    }

    #[test]
    fn a_rename_that_must_replace_nothing_replaces_nothing_not_even_a_link() {
        let (tmp, root) = root();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path().join("x"), tmp.path().join("taken")).unwrap();
        let (_, name) = root.create_temp(".t-", ".tmp", 0o600).unwrap();
        let e = root
            .rename_noreplace(&name, OsStr::new("taken"))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(!outside.path().join("x").exists());
        root.rename_noreplace(&name, OsStr::new("free")).unwrap();
        assert!(tmp.path().join("free").is_file());
        assert!(!tmp.path().join(&name).exists());
    }

    #[test]
    fn a_file_named_by_path_is_capped_and_never_waited_on() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_capped_path(&fifo, 10).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let e = read_capped_path(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.to_string().contains("a device"), "{e}");
        std::fs::write(tmp.path().join("f"), "12345").unwrap();
        symlink(tmp.path().join("f"), tmp.path().join("link")).unwrap();
        assert_eq!(
            read_capped_path(&tmp.path().join("link"), 5).unwrap(),
            b"12345"
        );
        let e = read_capped_path(&tmp.path().join("f"), 4).unwrap_err();
        assert!(e.to_string().contains("larger than 4 bytes"), "{e}");
    }
}
