//! Other processes as `/proc` shows them: a process's parent and state, and which child of a
//! given parent runs a given program. Reads only; `None` where a process is gone or unreadable.

/// The parent pid and state letter (`R`, `S`, `T`, `Z`, ...) of `pid`, from `/proc/PID/stat`.
/// The command name in parentheses may hold anything, so the fields are read after its last
/// `)`.
pub fn parent_and_state(pid: u32) -> Option<(u32, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = s.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((rest.next()?.parse().ok()?, state))
}

/// A live (not zombie) child of `parent` whose command name (`/proc/PID/comm`) is `comm`.
pub fn child_named(parent: u32, comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| {
            parent_and_state(pid).is_some_and(|(pp, st)| pp == parent && st != 'Z')
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == comm)
        })
}
