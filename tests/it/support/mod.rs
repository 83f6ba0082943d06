//! Test support: real `redis-server` processes on free loopback ports, stopped (by pid) on drop;
//! throwaway repositories; the `tractatus` binary; waiting for conditions with a deadline.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// One `redis-server` on 127.0.0.1, no persistence, killed by pid when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

impl RedisServer {
    /// Start a server and wait until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start a server with extra arguments (`--requirepass x`, ...), marked as brand-new (what
    /// an operator's `lock init` does), so its first grants skip the restart quarantine; a
    /// [`Self::restart_empty`] is not marked.
    pub fn start_with(extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..5 {
            let mut server = RedisServer {
                child: None,
                port: free_port(),
                dir: tempfile::tempdir().expect("tempdir"),
                extra: extra.clone(),
            };
            if server.spawn() {
                server.mark_initialized();
                return server;
            }
        }
        panic!("could not start redis-server (is it installed? .ci/run installs it)");
    }

    /// Spawn on `self.port`; true once it answers PING, false if it died (port taken).
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ])
        .arg(self.dir.path())
        .args(&self.extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("redis-server not found: install it");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if self.answers_ping() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf.starts_with(b"+PONG") || buf.starts_with(b"-NOAUTH")))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Mark this server's current run as brand-new through the library (`lock init`).
    pub fn mark_initialized(&self) {
        let password = self
            .extra
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| self.extra.get(i + 1));
        let url = match password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => self.url(),
        };
        assert_eq!(mark_initialized(&url), 1);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn signal(&self, sig: Signal) {
        if let Some(c) = &self.child {
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// SIGSTOP: the server keeps its socket but answers nothing.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Kill and start again on the same port with no data (a restart without persistence).
    pub fn restart_empty(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Run one command through a raw RESP connection; returns the raw reply text.
    pub fn cmd(&self, args: &[&str]) -> String {
        let client = redis::Client::open(self.url()).expect("client");
        let mut conn = client.get_connection().expect("connection");
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        let v: redis::Value = c.query(&mut conn).expect("query");
        match v {
            redis::Value::Nil => "(nil)".into(),
            redis::Value::Int(n) => n.to_string(),
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::SimpleString(s) => s,
            redis::Value::Okay => "OK".into(),
            other => format!("{other:?}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// `Coordinator::mark_initialized` on the Redis nodes of `urls` (comma-separated): how many
/// were marked.
pub fn mark_initialized(urls: &str) -> usize {
    use tractatus_lock::{Config, Coordinator, Identity, config::parse_nodes};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let config = Config::new(parse_nodes(&[urls]).expect("urls"));
        let c = Coordinator::connect(config, Identity::current("test-kit"))
            .await
            .expect("connect");
        c.mark_initialized().await.expect("mark initialized")
    })
}

/// Start `n` independent servers.
pub fn cluster(n: usize) -> Vec<RedisServer> {
    (0..n).map(|_| RedisServer::start()).collect()
}

/// A throwaway repository: a temp dir with `.git/` and `.claude/`.
pub struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::create_dir_all(dir.path().join(".claude")).unwrap();
        Repo { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.file(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// The Redis keys of lock `name` in this repository's namespace (from the config file the
    /// first use wrote).
    pub fn keys(&self, name: &str) -> tractatus_lock::keys::LockKeys {
        let toml = std::fs::read_to_string(self.file(".claude/tractatus-lock.toml")).unwrap();
        let settings: toml::Table = toml.parse().unwrap();
        let ns = settings["namespace"].as_str().unwrap();
        tractatus_lock::keys::LockKeys::new(ns, name)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.file(rel)).unwrap()
    }
}

/// The `tractatus` binary with a clean environment (no TRACTATUS_* from outside), run in `dir`.
pub fn tractatus(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tractatus"));
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("TRACTATUS_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Output of a finished command, with its code (-1 when killed by a signal).
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

pub fn run(cmd: &mut Command) -> Ran {
    let start = Instant::now();
    let out = cmd.output().expect("spawn tractatus");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// Wait until `cond` holds, checking every few ms, failing the test after `limit`.
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

/// True while a process with this pid exists (and is not a zombie we have not reaped).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

pub fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

/// A child process that is killed (by pid) and reaped when dropped.
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

impl Guard {
    /// Wait (at most `limit`, else the test fails) for the process to exit; its exit code, or
    /// `None` when a signal ended it.
    pub fn wait_code(&mut self, limit: Duration) -> Option<i32> {
        let mut status = None;
        wait_until(limit, "the process exits", || {
            status = self.0.try_wait().unwrap();
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

/// A Tractatus-shaped `instruction-history.json` with `n` instructions of about 1 KB each,
/// laid out as Node's `JSON.stringify(x, null, 2)` writes it (n = 140 is about 150 KiB).
const QUADRANTS: [&str; 4] = ["STRATEGIC", "OPERATIONAL", "TACTICAL", "SYSTEM"];

pub fn instruction_history(n: usize) -> String {
    let instructions: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("inst_{i:03}"),
                "text": format!("Rule {i}: before changing any governance file, check the session state and record the change in the instruction history, so that a later session can audit why it was made and by whom. Never weaken a boundary without an explicit human decision recorded here."),
                "timestamp": "2026-10-01T12:00:00.000Z",
                "quadrant": QUADRANTS[i % 4],
                "persistence": "HIGH",
                "temporal_scope": "PERMANENT",
                "verification_required": "MANDATORY",
                "explicitness": 0.9,
                "source": "user",
                "session_id": "2026-10-01-001",
                "parameters": {"files": [".claude/instruction-history.json", ".claude/session-state.json"], "threshold": 0.75, "max_retries": 3},
                "active": true,
                "notes": "Added after a lost write during two concurrent sessions; keep until the lock is deployed everywhere."
            })
        })
        .collect();
    let doc = serde_json::json!({
        "version": "3.5",
        "last_updated": "2026-10-01T12:00:00.000Z",
        "description": "Persistent instruction database for Tractatus framework governance",
        "instructions": instructions,
    });
    tractatus_lock::state::to_node_json(&doc)
}

/// The committed fixtures under tests/fixtures.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .expect("fixture")
}

/// The critical section the mutual-exclusion tests run under a lock: a plain read-add-write of a
/// counter file (no atomic tricks), an O_EXCL marker that detects overlap, and the fencing token
/// appended to a list. `$1` is the directory holding `counter`.
pub const CRITICAL: &str = r#"
d="$1"
if ! (set -C; : > "$d/inside") 2>/dev/null; then echo overlap >> "$d/overlaps"; fi
n=$(cat "$d/counter")
echo $((n + 1)) > "$d/counter"
echo "$TRACTATUS_FENCING_TOKEN" >> "$d/tokens"
rm -f "$d/inside"
"#;

/// One try at a lock, no waiting: `tractatus --redis URL --wait 0 lock run LOCK -- true` in
/// `dir`, where `lock` is `["--name", NAME]` or `["--file", PATH]`. 0 when taken, 75 when held.
pub fn try_lock(dir: &Path, url: &str, lock: [&str; 2]) -> Ran {
    run(tractatus(dir)
        .args(["--redis", url, "--wait", "0", "lock", "run"])
        .args(lock)
        .args(["--", "true"]))
}
