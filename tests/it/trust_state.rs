//! State files in a shared checkout (issue 18, items 4 and 11): a co-user who swaps a
//! directory, or the state file itself, for a symlink while the victim's write runs can send
//! nothing outside the checkout, lose no acknowledged update, and copy no file it cannot read
//! into the shared one. Also the state file's own bytes, escapes and owner across a rewrite.
//!
//! The victim and the attacker are two uids in one group (`SharedCheckout`); the races are
//! forced, not hoped for: the victim's write waits on a FIFO or on a locked fence record while
//! the attacker swaps.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tractatus_testkit::couser::{ATTACKER_UID, TEAM_GID, VICTIM_UID};
use tractatus_testkit::{SharedCheckout, Who};

use crate::support::{Guard, Repo, bin, run, stderr_of, tractatus, wait_until};

/// A shell script run as `who` in the checkout's root; panics unless it exits 0.
fn shell(co: &SharedCheckout, who: Who, script: &str) {
    let r = run(co.command(who, Path::new("/bin/sh")).args(["-c", script]));
    assert!(r.ok(), "{who:?}: {script}: {}", r.describe());
}

/// A directory both users may write (signal files, logs), outside the checkout.
fn scratch() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// The attacker's trap: a directory outside the checkout that the attacker owns and lets
/// anyone write (where an escaped write would land), holding `files` as planted.
fn trap(co: &SharedCheckout, files: &[(&str, &str)]) -> PathBuf {
    let d = co.attacker_dir().join("trap");
    std::fs::create_dir(&d).unwrap();
    for (name, text) in files {
        std::fs::write(d.join(name), text).unwrap();
        chown(d.join(name), Some(ATTACKER_UID), Some(ATTACKER_UID)).unwrap();
        std::fs::set_permissions(d.join(name), std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    chown(&d, Some(ATTACKER_UID), Some(ATTACKER_UID)).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// Panics unless the trap holds exactly the files planted, byte for byte (no write landed
/// there, no temp file was left there).
fn assert_trap_untouched(trap: &Path, files: &[(&str, &str)]) {
    let mut names: Vec<String> = std::fs::read_dir(trap)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut planted: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
    planted.sort();
    assert_eq!(names, planted, "files appeared in the attacker's directory");
    for (name, text) in files {
        assert_eq!(
            std::fs::read_to_string(trap.join(name)).unwrap(),
            *text,
            "{name} in the attacker's directory was written"
        );
    }
}

#[test]
fn a_directory_swapped_for_a_symlink_mid_update_never_receives_the_write() {
    let co = SharedCheckout::new();
    let original = "{\n  \"v\": 1\n}\n";
    co.write_as(Who::Victim, ".claude/data/s.json", original);
    // The attacker's copy of the bytes read: a commit that compares by path would pass.
    let planted = [("s.json", original)];
    let trap = trap(&co, &planted);
    let signals = scratch();
    let (ready, go) = (signals.path().join("ready"), signals.path().join("go"));
    nix::unistd::mkfifo(&go, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    std::fs::set_permissions(&go, std::fs::Permissions::from_mode(0o666)).unwrap();
    let command = format!(
        "touch {}; read _ < {}; echo '{{\"v\": 2}}'",
        ready.display(),
        go.display()
    );
    let mut update = Guard(
        co.command(Who::Victim, bin())
            .args(["state", "update", ".claude/data/s.json", "--", "sh", "-c"])
            .arg(&command)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(20), "update's command runs", || {
        ready.exists()
    });
    shell(
        &co,
        Who::Attacker,
        &format!(
            "mv .claude/data .claude/data.moved && ln -s {} .claude/data",
            trap.display()
        ),
    );
    // Let the command finish: it is blocked opening the FIFO, so a non-blocking open for
    // writing succeeds once it is there.
    wait_until(
        Duration::from_secs(10),
        "the command reads the signal",
        || {
            OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(&go)
                .and_then(|mut f| f.write_all(b"go\n"))
                .is_ok()
        },
    );
    let code = update.wait_code(Duration::from_secs(30));
    let stderr = stderr_of(&mut update);
    assert_trap_untouched(&trap, &planted);
    co.assert_private_files_untouched();
    let moved = std::fs::read_to_string(co.file(".claude/data.moved/s.json")).unwrap();
    match code {
        // Committed through the directory it read: inside the checkout.
        Some(0) => assert_eq!(moved, "{\n  \"v\": 2\n}\n"),
        Some(c) => {
            assert!(c != 70 && c != 101, "{c}: {stderr}");
            assert_eq!(moved, original, "{stderr}");
        }
        None => panic!("killed by a signal: {stderr}"),
    }
}

/// The attacker's swap loop: `renameat2(RENAME_EXCHANGE)` of a directory and a symlink, until
/// the stop file appears (at most 60 s and 5 million swaps), leaving the directory where it
/// was. Prints the number of swaps.
const SWAP_LOOP: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
a, b, stop = b".claude/data", b".claude/swap", sys.argv[1]
n, start = 0, time.monotonic()
while n < 5_000_000 and time.monotonic() - start < 60 and not os.path.exists(stop):
    if libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0:
        sys.exit("renameat2: errno %d" % ctypes.get_errno())
    n += 1
if n % 2:
    libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)
print(n)
"#;

/// A python3 the attacker's uid can run (a pyenv shim under /root is not one).
fn python() -> &'static Path {
    ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("the swap loop needs a system python3 (/usr/bin/python3)")
}

#[test]
fn merges_under_a_rename_exchange_loop_lose_no_acknowledged_update_and_write_nothing_outside() {
    const MERGES: usize = 300;
    let co = SharedCheckout::new();
    co.write_as(Who::Victim, ".claude/data/s.json", "{}\n");
    let planted = [("s.json", "{}\n")];
    let trap = trap(&co, &planted);
    shell(
        &co,
        Who::Attacker,
        &format!("ln -s {} .claude/swap", trap.display()),
    );
    let scratch = scratch();
    let stop = scratch.path().join("stop");
    let mut swapper = Guard(
        co.command(Who::Attacker, python())
            .args(["-c", SWAP_LOOP])
            .arg(&stop)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let codes = scratch.path().join("codes");
    let script = format!(
        "i=1; while [ $i -le {MERGES} ]; do \
           {bin} state merge .claude/data/s.json \"{{\\\"k$i\\\": $i}}\" 2>>{err}; \
           echo \"$i $?\" >> {codes}; i=$((i + 1)); done",
        bin = bin().display(),
        err = scratch.path().join("err").display(),
        codes = codes.display(),
    );
    let merges = run(co
        .command(Who::Victim, Path::new("/bin/sh"))
        .args(["-c", &script]));
    std::fs::write(&stop, "").unwrap();
    let swapped = swapper.wait_code(Duration::from_secs(70));
    let mut swaps = String::new();
    std::io::Read::read_to_string(&mut swapper.0.stdout.take().unwrap(), &mut swaps).unwrap();
    let swap_err = stderr_of(&mut swapper);
    assert_eq!(swapped, Some(0), "the swap loop failed: {swap_err}");
    assert!(merges.ok(), "{}", merges.describe());
    let swaps: u64 = swaps.trim().parse().unwrap();
    assert!(swaps > 0, "the attacker never swapped");

    let err = std::fs::read_to_string(scratch.path().join("err")).unwrap_or_default();
    let mut acknowledged = Vec::new();
    for line in std::fs::read_to_string(&codes).unwrap().lines() {
        let (i, code) = line.split_once(' ').unwrap();
        let code: i32 = code.parse().unwrap();
        assert!(
            [0, 64, 65].contains(&code),
            "merge {i} exited {code}: {err}"
        );
        if code == 0 {
            acknowledged.push(i.parse::<u64>().unwrap());
        }
    }
    assert!(
        acknowledged.len() >= 10,
        "only {} merges committed: {err}",
        acknowledged.len()
    );
    assert!(
        co.file(".claude/data").is_dir() && !co.file(".claude/data").is_symlink(),
        "the loop left the directory swapped"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(co.file(".claude/data/s.json")).unwrap())
            .unwrap();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|i| doc[format!("k{i}")] != serde_json::json!(i))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged merges lost ({swaps} swaps): {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    assert_trap_untouched(&trap, &planted);
    co.assert_private_files_untouched();
    println!(
        "{} of {MERGES} merges committed, none lost, under {swaps} swaps",
        acknowledged.len()
    );
}

/// Every regular file under `dir` (symlinks not followed) that contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file()
                && String::from_utf8_lossy(&std::fs::read(&p).unwrap()).contains(needle)
            {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn a_state_file_swapped_for_a_link_to_an_unreadable_file_never_copies_that_file_in() {
    let co = SharedCheckout::new();
    let rel = ".claude/data/s.json";
    co.write_as(Who::Victim, rel, "{\"a\": 1}\n");
    // A first merge makes the working directory and the file's fence record.
    shell(
        &co,
        Who::Victim,
        &format!("{} state merge {rel} '{{\"a\": 2}}'", bin().display()),
    );
    // Held locked, the fence record stops the next merge between its read and its compare.
    let record = co.file(".claude/.tractatus/fence/.claude%2Fdata%2Fs.json");
    let fence = OpenOptions::new().read(true).open(&record).unwrap();
    fence.lock().unwrap();
    let mut merge = Guard(
        co.command(Who::Victim, bin())
            .args(["--ttl", "20s", "state", "merge", rel, "{\"b\": 2}"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let dir = co.file(".claude/data");
    wait_until(Duration::from_secs(20), "the merge waits to commit", || {
        std::fs::read_dir(&dir)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
    });
    let secret = co.private_file("secret.json");
    assert!(
        !run(co
            .command(Who::Attacker, Path::new("/bin/cat"))
            .arg(&secret))
        .ok(),
        "the attacker can read the victim's secret: the test proves nothing"
    );
    shell(
        &co,
        Who::Attacker,
        &format!(
            "ln -s {} .claude/data/link && mv -T .claude/data/link {rel}",
            secret.display()
        ),
    );
    let started = Instant::now();
    fence.unlock().unwrap();
    let code = merge.wait_code(Duration::from_secs(30));
    let stderr = stderr_of(&mut merge);
    println!("{code:?} after {:?}: {stderr}", started.elapsed());
    assert_ne!(code, Some(0), "the merge committed over the link: {stderr}");
    assert!(!matches!(code, Some(70) | Some(101) | None), "{stderr}");
    assert_eq!(
        files_containing(&co.root(), "victim's own"),
        Vec::<PathBuf>::new(),
        "the victim's secret was copied into the checkout"
    );
    assert!(
        std::fs::symlink_metadata(co.file(rel))
            .unwrap()
            .is_symlink()
    );
    co.assert_private_files_untouched();
}

#[test]
fn a_number_too_large_for_a_double_keeps_its_bytes_through_set_and_its_value_through_merge() {
    let repo = Repo::new();
    let text = "{\"big\": 1e400, \"neg\": [-1E+400], \"n\": 1}\n";
    // `set` and `append` edit the bytes read: what they were not asked to change keeps its
    // spelling. `merge` builds the document: the value is kept, spelled as serde_json does.
    for (args, big, neg) in [
        (vec!["set", "/n", "2"], "1e400", "-1E+400"),
        (vec!["append", "/neg", "4"], "1e400", "-1E+400"),
        (vec!["merge", "{\"m\": 3}"], "1e+400", "-1e+400"),
    ] {
        let rel = format!(".claude/{}.json", args[0]);
        repo.write(&rel, text);
        let r = run(tractatus(&repo.path())
            .args(["state", args[0], &rel])
            .args(&args[1..]));
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        let after = repo.read(&rel);
        assert!(
            after.contains(&format!("\"big\": {big},")),
            "{args:?}: {after}"
        );
        assert!(after.contains(&format!("\n    {neg}")), "{args:?}: {after}");
        assert!(!after.contains("null"), "{args:?}: {after}");
    }
    let r = run(tractatus(&repo.path()).args(["state", "get", ".claude/set.json", "/big"]));
    assert_eq!(r.stdout.trim(), "1e+400", "{}", r.stderr);
}

#[test]
fn a_lone_surrogate_in_the_file_is_bad_data_for_every_command_and_the_file_is_kept() {
    let repo = Repo::new();
    let rel = ".claude/cut.json";
    // What Node writes for a string cut between the halves of a surrogate pair.
    let text = "{\"s\": \"\\ud83d\", \"l\": []}\n";
    repo.write(rel, text);
    for args in [
        vec!["set", rel, "/n", "2"],
        vec!["append", rel, "/l", "1"],
        vec!["merge", rel, "{\"m\": 3}"],
        vec!["get", rel],
    ] {
        let r = run(tractatus(&repo.path()).arg("state").args(&args));
        assert_eq!(r.code, 65, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("not valid JSON"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(repo.read(rel), text, "{args:?}");
    }
}

#[test]
fn a_replaced_state_file_keeps_its_owner_and_group_where_the_writer_may_set_them() {
    let co = SharedCheckout::new();
    let rel = ".claude/owned.json";
    let owner = |p: &Path| {
        let meta = std::fs::metadata(p).unwrap();
        (meta.uid(), meta.gid(), meta.mode() & 0o7777)
    };
    co.write_as(Who::Victim, rel, "{}\n");
    // Another user may keep the group when it is in it, never give the file away: the file
    // becomes the writer's, as any replacement by rename makes it.
    let r = run(co
        .command(Who::Attacker, bin())
        .args(["state", "set", rel, "/a", "1"]));
    assert!(r.ok(), "{}", r.describe());
    assert_eq!(owner(&co.file(rel)), (ATTACKER_UID, TEAM_GID, 0o664));
    // Root may set both: the file stays the victim's, in a group the setgid directory would
    // not give it, with its mode.
    let other_gid = TEAM_GID + 7;
    chown(co.file(rel), Some(VICTIM_UID), Some(other_gid)).unwrap();
    std::fs::set_permissions(co.file(rel), std::fs::Permissions::from_mode(0o640)).unwrap();
    let r = run(tractatus(&co.root()).args(["state", "set", rel, "/a", "2"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(owner(&co.file(rel)), (VICTIM_UID, other_gid, 0o640));
    let text = std::fs::read_to_string(co.file(rel)).unwrap();
    assert!(text.contains("\"a\": 2"), "{text}");
}

#[test]
fn a_fence_record_planted_as_a_link_or_a_fifo_is_refused_at_once_and_nothing_is_touched() {
    let co = SharedCheckout::new();
    let rel = ".claude/s.json";
    co.write_as(Who::Victim, rel, "{}\n");
    // The working directory, as the attacker's own first use makes it.
    shell(
        &co,
        Who::Attacker,
        &format!("{} state get {rel}", bin().display()),
    );
    shell(&co, Who::Attacker, "mkdir -p .claude/.tractatus/fence");
    let record = ".claude/.tractatus/fence/.claude%2Fs.json";
    let diary = co.private_file("notes/diary.txt");
    for plant in [
        format!("ln -s {} {record}", diary.display()),
        format!("mkfifo {record}"),
    ] {
        shell(&co, Who::Attacker, &format!("rm -f {record} && {plant}"));
        let mut set = Guard(
            co.command(Who::Victim, bin())
                .args(["--wait", "2s", "state", "set", rel, "/a", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let code = set.wait_code(Duration::from_secs(20));
        let stderr = stderr_of(&mut set);
        assert_eq!(code, Some(73), "{plant}: {stderr}");
        assert!(stderr.contains("fence"), "{plant}: {stderr}");
        assert_eq!(std::fs::read_to_string(co.file(rel)).unwrap(), "{}\n");
        co.assert_private_files_untouched();
    }
}
