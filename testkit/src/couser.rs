//! Two users of one shared checkout, as a real team has them: a victim and an attacker, two
//! uids in one group, working in a setgid, group-writable repository (each with umask 002).
//! The victim also has a private directory outside the checkout (0700, files 0600) that the
//! attacker must never be able to make the victim's `tractatus` touch.
//!
//! Processes run as either user through `setpriv` (util-linux), so the tests that use this
//! need root. Without root [`SharedCheckout::new`] panics with a message that says so: a test
//! that silently passed without trying the attack would prove nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::run_timed;

/// The victim's uid.
pub const VICTIM_UID: u32 = 42_001;
/// The attacker's uid.
pub const ATTACKER_UID: u32 = 42_002;
/// The group both belong to, and the checkout's group.
pub const TEAM_GID: u32 = 42_000;

/// Who runs a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// The user whose files must stay untouched.
    Victim,
    /// The co-user who plants links, FIFOs and config lines.
    Attacker,
}

impl Who {
    /// The uid of this user.
    pub fn uid(self) -> u32 {
        match self {
            Who::Victim => VICTIM_UID,
            Who::Attacker => ATTACKER_UID,
        }
    }
}

/// A shared checkout (`root`, with `.git/` and `.claude/`, setgid and group-writable) and the
/// victim's private directory beside it, in one temp directory removed on drop.
pub struct SharedCheckout {
    dir: tempfile::TempDir,
    private_before: BTreeMap<PathBuf, Vec<u8>>,
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

impl SharedCheckout {
    /// A fresh shared checkout; panics when not run as root (`setpriv` needs it).
    pub fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test plays two users with setpriv and needs root: run it as root (CI does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        set_mode(dir.path(), 0o755);
        let root = dir.path().join("checkout");
        for d in [root.clone(), root.join(".git"), root.join(".claude")] {
            std::fs::create_dir_all(&d).expect("mkdir");
            chown(&d, Some(VICTIM_UID), Some(TEAM_GID)).expect("chown");
            set_mode(&d, 0o2775);
        }
        let private = dir.path().join("victim-private");
        std::fs::create_dir_all(private.join("notes")).expect("mkdir private");
        let files = [
            ("secret.json", "{\"token\": \"victim's own\"}\n"),
            ("notes/diary.txt", "dear diary\n"),
        ];
        let mut private_before = BTreeMap::new();
        for (rel, text) in files {
            let p = private.join(rel);
            std::fs::write(&p, text).expect("write private file");
            set_mode(&p, 0o600);
            chown(&p, Some(VICTIM_UID), Some(VICTIM_UID)).expect("chown");
            private_before.insert(p, text.as_bytes().to_vec());
        }
        for d in [private.join("notes"), private.clone()] {
            chown(&d, Some(VICTIM_UID), Some(VICTIM_UID)).expect("chown");
            set_mode(&d, 0o700);
        }
        SharedCheckout {
            dir,
            private_before,
        }
    }

    /// The checkout's root (canonical).
    pub fn root(&self) -> PathBuf {
        self.dir
            .path()
            .join("checkout")
            .canonicalize()
            .expect("canonical root")
    }

    /// `rel` under the root.
    pub fn file(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// The victim's private directory (outside the checkout, 0700).
    pub fn private_dir(&self) -> PathBuf {
        self.dir.path().join("victim-private")
    }

    /// A private file of the victim's: `secret.json` or `notes/diary.txt`.
    pub fn private_file(&self, rel: &str) -> PathBuf {
        self.private_dir().join(rel)
    }

    /// A directory the attacker owns, outside the checkout (for links into it, and as the
    /// place where a write that escaped would land).
    pub fn attacker_dir(&self) -> PathBuf {
        let d = self.dir.path().join("attacker");
        if !d.exists() {
            std::fs::create_dir_all(&d).expect("mkdir attacker");
            chown(&d, Some(ATTACKER_UID), Some(ATTACKER_UID)).expect("chown");
            set_mode(&d, 0o755);
        }
        d
    }

    /// Write `text` at `rel` in the checkout as `who` would (owner `who`, group the team's,
    /// 0664), making missing directories (setgid, 2775).
    pub fn write_as(&self, who: Who, rel: &str, text: &str) {
        let p = self.file(rel);
        let mut missing = Vec::new();
        let mut cur = p.parent().map(Path::to_path_buf);
        while let Some(d) = cur {
            if d.exists() {
                break;
            }
            missing.push(d.clone());
            cur = d.parent().map(Path::to_path_buf);
        }
        for d in missing.iter().rev() {
            std::fs::create_dir(d).expect("mkdir");
            chown(d, Some(who.uid()), Some(TEAM_GID)).expect("chown");
            set_mode(d, 0o2775);
        }
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        chown(&p, Some(who.uid()), Some(TEAM_GID)).expect("chown");
        set_mode(&p, 0o664);
    }

    /// Panics unless every private file of the victim holds exactly what it held at the start,
    /// and nothing was added to or removed from the private directory.
    pub fn assert_private_files_untouched(&self) {
        let mut now = BTreeMap::new();
        let mut stack = vec![self.private_dir()];
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d)
                .unwrap_or_else(|e| panic!("the victim's directory {} is gone: {e}", d.display()));
            for e in entries {
                let p = e.expect("entry").path();
                let meta = std::fs::symlink_metadata(&p).expect("stat");
                if meta.is_dir() {
                    stack.push(p);
                } else {
                    now.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
                }
            }
        }
        assert_eq!(
            now.keys().collect::<Vec<_>>(),
            self.private_before.keys().collect::<Vec<_>>(),
            "the victim's private directory gained or lost files"
        );
        for (p, before) in &self.private_before {
            assert_eq!(
                &now[p],
                before,
                "the victim's private file {} changed",
                p.display()
            );
        }
    }

    /// `program args...` as `who`: uid `who`, group the team's, umask 002, `HOME` in the temp
    /// directory, run in the checkout's root, with no `TRACTATUS_*` variable of ours.
    pub fn command(&self, who: Who, program: &Path) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", who.uid()))
            .arg(format!("--regid={TEAM_GID}"))
            .arg(format!("--groups={TEAM_GID}"))
            .args(["sh", "-c", "umask 002; exec \"$0\" \"$@\""])
            .arg(runnable(program))
            .current_dir(self.root())
            .env("HOME", self.dir.path());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TRACTATUS_") {
                cmd.env_remove(k);
            }
        }
        cmd
    }
}

/// How long [`as_attacker`] lets the attacker's command (an `ln`, a `mkfifo`, a write) run.
pub const ATTACKER_LIMIT: Duration = Duration::from_secs(30);

/// Run `program args...` as the attacker in `shared` and assert it succeeded: how the tests
/// plant links, FIFOs and files the way a co-user would.
pub fn as_attacker(shared: &SharedCheckout, program: &str, args: &[&str]) {
    let mut cmd = shared.command(Who::Attacker, Path::new(program));
    cmd.args(args);
    let ran = run_timed(&mut cmd, ATTACKER_LIMIT);
    assert!(
        ran.ok(),
        "{program} {args:?} as the attacker: {}",
        ran.describe()
    );
}

/// `program` as the other users can run it: itself when every directory above it lets anyone
/// through (`o+x`), else a copy (made once per test process, 0755) in a temp directory that
/// does. A checkout under `/root` (0700) would otherwise make every two-uid test fail with
/// "permission denied" instead of trying its attack.
pub fn runnable(program: &Path) -> PathBuf {
    let open_to_all = program.ancestors().skip(1).all(|d| {
        d.as_os_str().is_empty()
            || std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    });
    if open_to_all || !program.is_absolute() {
        return program.to_path_buf();
    }
    static COPIES: std::sync::Mutex<BTreeMap<PathBuf, PathBuf>> =
        std::sync::Mutex::new(BTreeMap::new());
    let mut copies = COPIES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    copies
        .entry(program.to_path_buf())
        .or_insert_with(|| {
            let dir = tempfile::Builder::new()
                .prefix("tractatus-couser-bin-")
                .tempdir()
                .expect("tempdir")
                .keep();
            set_mode(&dir, 0o755);
            let copy = dir.join(program.file_name().expect("a program file name"));
            std::fs::copy(program, &copy).expect("copy the program");
            set_mode(&copy, 0o755);
            copy
        })
        .clone()
}

impl Default for SharedCheckout {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_behind_a_closed_directory_is_copied_where_anyone_may_run_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let closed = dir.path().join("closed");
        std::fs::create_dir(&closed).expect("mkdir");
        let program = closed.join("prog");
        std::fs::write(&program, "#!/bin/sh\n").expect("write");
        set_mode(&program, 0o755);
        set_mode(&closed, 0o700);
        let copy = runnable(&program);
        assert_ne!(copy, program);
        assert_eq!(std::fs::read(&copy).expect("copy"), b"#!/bin/sh\n");
        assert_eq!(runnable(&program), copy, "copied once");
        set_mode(&closed, 0o755);
        assert_eq!(runnable(Path::new("/bin/sh")), Path::new("/bin/sh"));
    }
}
