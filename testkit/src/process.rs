//! Child processes: run one to its exit, timed and bounded; keep one running and stop it by
//! pid when the test ends; wait on a condition with a deadline.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

/// How long [`run`] lets a command run before it kills it.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// How a command run to completion ended.
#[derive(Debug)]
pub struct Ran {
    /// Its exit code; -1 when a signal ended it, it timed out, or it never started.
    pub code: i32,
    /// Its exit status; `None` when it timed out or never started.
    pub status: Option<ExitStatus>,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr, or why there is no exit status.
    pub stderr: String,
    /// From just before spawn to its exit (not to the end of its output, which a descendant
    /// may hold open longer).
    pub elapsed: Duration,
}

impl Ran {
    /// Exited 0.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Its status and stderr on one line, for a failure report.
    pub fn describe(&self) -> String {
        match self.status {
            Some(s) => format!("{s}: {}", self.stderr.trim()),
            None => format!("no exit status: {}", self.stderr.trim()),
        }
    }
}

/// Run `cmd` to completion (stdin empty, stdout and stderr captured), panicking if it cannot
/// be spawned and killing it past [`RUN_LIMIT`].
pub fn run(cmd: &mut Command) -> Ran {
    match spawn_timed(cmd, RUN_LIMIT, None) {
        Ok(ran) => ran,
        Err(e) => panic!("cannot spawn {:?}: {e}", cmd.get_program()),
    }
}

/// Run `cmd` to completion (stdin empty, stdout and stderr captured), timing it from just
/// before spawn to its exit, and kill it if it runs past `limit`. A spawn failure is a `Ran`
/// with no status.
pub fn run_timed(cmd: &mut Command, limit: Duration) -> Ran {
    spawn_timed(cmd, limit, None).unwrap_or_else(cannot_spawn)
}

/// [`run`], with the command's stdout sent to `stdout` (a file, `/dev/full`, a pipe nobody
/// reads) instead of captured: [`Ran::stdout`] stays empty.
pub fn run_to(cmd: &mut Command, stdout: Stdio) -> Ran {
    spawn_timed(cmd, RUN_LIMIT, Some(stdout)).unwrap_or_else(cannot_spawn)
}

fn cannot_spawn(e: std::io::Error) -> Ran {
    Ran {
        code: -1,
        status: None,
        stdout: String::new(),
        stderr: format!("cannot spawn: {e}"),
        elapsed: Duration::ZERO,
    }
}

/// A helper thread waits for the exit with `waitid(WNOWAIT)`, which does not reap: only this
/// function reaps (through `Child`), so on a timeout the pid we kill is still certainly our
/// child and never a recycled one. Two more threads drain the pipes, so that a chatty child
/// never blocks on a full pipe and the exit is timed apart from its output.
fn spawn_timed(cmd: &mut Command, limit: Duration, stdout: Option<Stdio>) -> std::io::Result<Ran> {
    cmd.stdin(Stdio::null())
        .stdout(stdout.unwrap_or_else(Stdio::piped))
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
        let _ = tx.send(Instant::now());
    });
    let (status, elapsed, note) = match exited.recv_timeout(limit) {
        Ok(end) => (child.wait().ok(), end - start, None),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            (
                None,
                start.elapsed(),
                Some(format!("killed after {limit:?}")),
            )
        }
    };
    // A descendant may still hold a pipe; its output is not worth waiting long for.
    let grace = (start + limit)
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    let stdout = stdout.recv_timeout(grace).unwrap_or_default();
    let mut stderr = stderr.recv_timeout(grace).unwrap_or_default();
    if let Some(note) = note {
        stderr = format!("{note}; {stderr}");
    }
    Ok(Ran {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        status,
        stdout,
        stderr,
        elapsed,
    })
}

/// Read `pipe` to its end on a thread; the text arrives on the returned channel.
fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// Wait until `cond` holds, checking every few ms; panics (fails the test) after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// True while a process with this pid exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold anything.
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Send `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

/// A child process that is stopped (by pid) and reaped when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    /// SIGTERM first, so a `lock run` forwards it to its command and releases; SIGKILL if it
    /// is still there after 3 s.
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.0.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        if let Ok(None) = self.0.try_wait() {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if !matches!(self.0.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything `guard`'s child wrote to stderr (a piped one), read to its end; empty when it
/// was not piped or was read already.
pub fn stderr_of(guard: &mut Guard) -> String {
    let mut s = String::new();
    if let Some(e) = guard.0.stderr.as_mut() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

impl Guard {
    /// Wait (at most `limit`, else the test fails) for the process to exit; its exit code, or
    /// `None` when a signal ended it.
    pub fn wait_code(&mut self, limit: Duration) -> Option<i32> {
        let mut status = None;
        wait_until(limit, "the process exits", || {
            status = self.0.try_wait().expect("try_wait");
            status.is_some()
        });
        status.and_then(|s| s.code())
    }
}

/// A process the test did not spawn itself (a command started by `tractatus lock run`, left
/// behind when the test SIGKILLs its `tractatus`): SIGKILLed on drop if it still runs.
pub struct KillPid(pub u32);

impl Drop for KillPid {
    fn drop(&mut self) {
        if alive(self.0) {
            signal(self.0, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_timed_kills_a_command_past_its_limit() {
        let ran = run_timed(Command::new("sleep").arg("30"), Duration::from_millis(200));
        assert!(ran.status.is_none() && ran.code == -1, "{ran:?}");
        assert!(ran.stderr.starts_with("killed after"), "{ran:?}");
        assert!(ran.elapsed < Duration::from_secs(5), "{ran:?}");
    }

    #[test]
    fn run_timed_times_the_exit_not_a_descendant_holding_the_pipe() {
        let ran = run_timed(
            Command::new("sh").args(["-c", "sleep 2 & echo out; echo err >&2; exit 3"]),
            Duration::from_secs(20),
        );
        assert_eq!(
            (ran.code, ran.stdout.as_str(), ran.stderr.as_str()),
            (3, "out\n", "err\n")
        );
        assert!(ran.elapsed < Duration::from_secs(1), "{ran:?}");
    }

    #[test]
    fn a_command_that_cannot_start_has_no_status() {
        let ran = run_timed(&mut Command::new("/nonexistent/x"), Duration::from_secs(1));
        assert!(
            !ran.ok() && ran.stderr.starts_with("cannot spawn"),
            "{ran:?}"
        );
    }
}
