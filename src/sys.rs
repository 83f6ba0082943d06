//! What this crate asks of the operating system beyond files: a process' parent, process group,
//! run state and start time from `/proc/<pid>/stat`, its argument list, this process' umask,
//! PID namespace, boot id and host name. Linux only (`/proc`); one place so that a port, or a
//! fix to the parsing, happens once.

/// The fields of `/proc/<pid>/stat` this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Run state (field 3): `Z` for a zombie, which can no longer do anything but be reaped.
    pub(crate) state: char,
    /// Parent process id (field 4).
    pub(crate) ppid: u32,
    /// Process group id (field 5).
    pub(crate) pgrp: u32,
    /// Start time in clock ticks after boot (field 22): with the pid, it names one process
    /// for good, even after the pid is reused.
    pub(crate) start_ticks: u64,
}

/// Parse the text of `/proc/<pid>/stat`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let after = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split(' ').collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

impl ProcStat {
    /// False for a zombie (or a dead task): it runs no more code, so it writes nothing.
    pub(crate) fn runs(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// The argument list of a process (`/proc/<pid>/cmdline`); empty when it is gone or unreadable.
pub(crate) fn cmdline(pid: u32) -> Vec<String> {
    // Each argument ends in a NUL; empty arguments are kept, so positions hold.
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// `/proc/<pid>/stat` of a running process; `None` when it is gone (or unreadable).
pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    read_stat(rustix::fs::CWD, &format!("/proc/{pid}/stat"))
}

/// Read and parse one `stat` file (`path` under `dir`). One `read(2)` into a buffer on the
/// stack: the kernel hands the whole line over at once, and a scan of every process reads
/// hundreds of these, where `read_to_string`'s growing reads took five calls each.
fn read_stat<Fd: std::os::fd::AsFd>(dir: Fd, path: &str) -> Option<ProcStat> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(
        dir,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 2048];
    let n = rustix::io::read(&fd, &mut buf).ok()?;
    if n == buf.len() {
        // Longer than any stat line the kernel writes today: read the rest the slow way.
        let mut all = buf.to_vec();
        std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut all).ok()?;
        return parse_stat(std::str::from_utf8(&all).ok()?);
    }
    parse_stat(std::str::from_utf8(buf.get(..n)?).ok()?)
}

/// Start time of a process in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
pub(crate) fn process_start_ticks(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|s| s.start_ticks)
}

/// Every process id in `/proc`, each with its stat; processes that end meanwhile are left out.
/// Each is opened relative to one handle on `/proc`, and read in one call.
pub(crate) fn all_processes() -> Vec<(u32, ProcStat)> {
    let Ok(proc) = std::fs::File::open("/proc") else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, read_stat(&proc, &format!("{pid}/stat"))?)))
        .collect()
}

/// Live processes of group `pgid` other than `except` (zombies do not count).
pub(crate) fn live_members(pgid: u32, except: u32) -> usize {
    all_processes()
        .iter()
        .filter(|(p, s)| s.pgrp == pgid && *p != except && s.runs())
        .count()
}

/// True while some process of group `pgid` still runs (zombies do not count).
pub(crate) fn group_alive(pgid: u32) -> bool {
    pgid != 0 && live_members(pgid, 0) > 0
}

/// The processes whose name (`/proc/<pid>/comm`, at most 15 bytes: the base name of the file
/// they were started from) is `name`. Far cheaper than [`all_processes`]: the kernel writes a
/// name without working out the rest of a `stat` line, so a look for one kind of process
/// reads every name and only its own `stat` files.
pub(crate) fn processes_named(name: &str) -> Vec<u32> {
    use rustix::fs::{Mode, OFlags};
    let (Ok(proc), Ok(entries)) = (std::fs::File::open("/proc"), std::fs::read_dir("/proc")) else {
        return Vec::new();
    };
    let wanted = format!("{name}\n");
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
            let Ok(fd) = rustix::fs::openat(&proc, format!("{pid}/comm"), flags, Mode::empty())
            else {
                return false;
            };
            let mut buf = [0u8; 64];
            rustix::io::read(&fd, &mut buf).is_ok_and(|n| buf.get(..n) == Some(wanted.as_bytes()))
        })
        .collect()
}

/// This process's children, alive or zombie: the pids in `/proc/self/task/<tid>/children`
/// for each of its threads (a child belongs to the thread that started it, and an orphan
/// handed to us as the child subreaper to any live one). `None` when that cannot be read
/// (a kernel without `CONFIG_PROC_CHILDREN`) or the threads changed while it was read (a
/// thread that ends hands its children to another, which may have been read already).
///
/// The kernel warns that the list may miss a child when children are reaped while it is read;
/// the caller reaps only between two reads, so the list it gets is whole.
pub(crate) fn own_children() -> Option<Vec<u32>> {
    let threads = || -> Option<Vec<String>> {
        let mut t: Vec<String> = std::fs::read_dir("/proc/self/task")
            .ok()?
            .map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Option<_>>()?;
        t.sort_unstable();
        Some(t)
    };
    let before = threads()?;
    let mut children = Vec::new();
    for tid in &before {
        let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/children")).ok()?;
        for p in text.split_whitespace() {
            children.push(p.parse().ok()?);
        }
    }
    (threads()? == before).then_some(children)
}

/// This process's umask, from `/proc/self/status` (022 when it cannot be read). Reading it
/// this way does not change it, unlike `umask(2)`, which other threads could observe.
pub(crate) fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// This process' PID namespace, named so that the name means one namespace on one machine in
/// one boot: `<inode>.<boot id>`, the inode of `/proc/self/ns/pid` (`pid:[4026531836]`) and
/// [`boot_id`]. The inode alone is not enough: every machine's root namespace has the same one
/// (4026531836), so two machines with one host name (cloned VMs, CI runners all called
/// `runner`) would judge each other's pids. `None` when either part cannot be read: then no pid
/// is judged, and leases run out with their TTL.
pub(crate) fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let text = link.to_string_lossy();
    let inode = text.strip_prefix("pid:[")?.strip_suffix(']')?;
    if inode.is_empty() || !inode.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(format!("{inode}.{}", boot_id()?))
}

/// Where the kernel tells this boot's id: a random UUID made at boot, so it differs between
/// machines and between two boots of one machine.
const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// What stands in for the boot id in a debug build (the tests run the binary as "another
/// machine" with it). A release build never reads it: no setting makes a process claim
/// another boot.
pub(crate) const TEST_BOOT_ID_VAR: &str = "TRACTATUS_TEST_BOOT_ID";

/// This boot's id (see [`BOOT_ID_FILE`]), read once; `None` when it cannot be read or is not
/// 1 to 64 characters of hex digits and dashes (a UUID is 36).
pub(crate) fn boot_id() -> Option<String> {
    static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            let stand_in = std::env::var(TEST_BOOT_ID_VAR)
                .ok()
                .filter(|_| cfg!(debug_assertions));
            let raw = match stand_in {
                Some(id) => id,
                None => std::fs::read_to_string(BOOT_ID_FILE).ok()?,
            };
            let id = raw.trim();
            let ok = (1..=64).contains(&id.len())
                && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
            ok.then(|| id.to_owned())
        })
        .clone()
}

/// The kernel's host name, if it is readable and UTF-8.
pub(crate) fn kernel_host_name() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_parsed_after_a_command_name_with_spaces_and_parentheses() {
        let text = "4242 (a b) (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
                    1000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(text),
            Some(ProcStat {
                state: 'S',
                ppid: 17,
                pgrp: 4242,
                start_ticks: 987_654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x)"), None);
    }

    #[test]
    fn this_process_is_found_with_its_start_time() {
        let me = std::process::id();
        let stat = proc_stat(me).unwrap();
        assert_eq!(stat.ppid, nix::unistd::getppid().as_raw() as u32);
        assert_eq!(stat.pgrp, nix::unistd::getpgrp().as_raw() as u32);
        assert!(stat.runs());
        assert!(!cmdline(me).is_empty());
        assert!(all_processes().iter().any(|(p, s)| *p == me && *s == stat));
        assert!(umask() <= 0o777);
    }

    #[test]
    fn a_program_started_as_proc_self_exe_is_found_by_the_name_exe() {
        // The shell starts itself again through /proc/self/exe, as `lock run` starts its guard.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exec /proc/self/exe -c 'sleep 5; true'"])
            .spawn()
            .unwrap();
        let me = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !processes_named("exe").contains(&me) {
            assert!(std::time::Instant::now() < deadline, "never named exe");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!processes_named("exe").contains(&std::process::id()));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn our_children_are_listed() {
        // Other tests' threads come and go meanwhile: a read they disturbed is read again.
        let listed = || (0..100).find_map(|_| own_children()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(listed().contains(&child.id()));
        let _ = child.kill();
        let _ = child.wait();
        assert!(!listed().contains(&child.id()));
    }

    #[test]
    fn the_pid_namespace_is_named_with_the_boot_id() {
        let boot = boot_id().unwrap();
        assert_eq!(boot.len(), 36, "{boot}");
        let ns = pid_namespace().unwrap();
        let (inode, in_ns) = ns.split_once('.').unwrap();
        assert!(inode.parse::<u64>().is_ok(), "{ns}");
        assert_eq!(in_ns, boot);
    }
}
