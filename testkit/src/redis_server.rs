//! Real `redis-server` processes this kit starts: loopback only, no persistence unless the
//! caller asks for it, ready once they answer PING, stopped by pid when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a server may take to answer its first PING.
const READY_LIMIT: Duration = Duration::from_secs(10);

/// One `redis-server` on 127.0.0.1 with its own data directory, SIGKILLed by pid and reaped
/// when dropped.
pub struct RedisServer {
    child: Option<Child>,
    /// The loopback port it listens on; it keeps it across restarts.
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

/// A loopback port that was free a moment ago (bind port 0, read it, close).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// True when a server on this loopback port answers a raw PING: `+PONG`, or `-NOAUTH` from a
/// server that wants a password (it is up all the same).
pub fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
}

/// Start `n` independent servers.
pub fn cluster(n: usize) -> Vec<RedisServer> {
    (0..n).map(|_| RedisServer::start()).collect()
}

impl RedisServer {
    /// Start a server and wait until it answers PING; panics when none can be started.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`start`](Self::start) with extra `redis-server` arguments (`--requirepass x`,
    /// `--appendonly yes`, ...); later arguments override the defaults.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::try_start(extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Start a server, or say why not. A port found free can be taken before the server binds
    /// it, so a failed start is retried on another port.
    pub fn try_start(extra: &[&str]) -> Result<Self, String> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut server = RedisServer {
                child: None,
                port: free_port().map_err(|e| format!("no free loopback port: {e}"))?,
                dir: tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?,
                extra: extra.clone(),
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = e,
            }
        }
        Err(format!("could not start redis-server: {last_error}"))
    }

    /// Spawn on `self.port` in `self.dir`; Ok once it answers PING.
    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot run redis-server (is it installed? .ci/run installs it): {e}")
            })?;
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("port {}: exited early ({status})", self.port));
            }
            if answers_ping(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "port {}: no PONG within {READY_LIMIT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's pid; 0 while it is killed.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
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

    /// SIGKILL and reap: a crash, nothing flushed.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill and start again on the same port with an empty data directory: a restart that lost
    /// everything, whatever persistence was asked for. Panics if it cannot come back.
    pub fn restart_empty(&mut self) {
        self.kill();
        self.dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temp dir: {e}"));
        self.respawn();
    }

    /// Shut down cleanly (SIGTERM, so a server with persistence writes it out) and start again
    /// on the same port, data directory and arguments; after [`Self::kill`] it only starts
    /// again (a crash followed by a restart on what reached the disk). Panics if it cannot come
    /// back.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = Pid::from_raw(c.id() as i32);
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + READY_LIMIT;
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.respawn();
    }

    /// Spawn on the same port until it answers; the old socket may take a moment to go.
    fn respawn(&mut self) {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("redis-server did not restart on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Run one command on a fresh connection; the reply as text (`(nil)`, an integer, a
    /// string, `OK`, or the debug form of anything else). Panics on any error.
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
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_keeps_the_port_and_persisted_data_and_restart_empty_loses_it() {
        let mut s = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
        let (port, pid) = (s.port, s.pid());
        assert_eq!(s.cmd(&["SET", "k", "v"]), "OK");
        s.restart();
        assert_eq!((s.port, s.cmd(&["GET", "k"]).as_str()), (port, "v"));
        assert_ne!(s.pid(), pid);
        s.restart_empty();
        assert_eq!((s.port, s.cmd(&["GET", "k"]).as_str()), (port, "(nil)"));
    }

    #[test]
    fn a_dropped_server_is_gone_and_a_killed_one_answers_nothing() {
        let mut s = RedisServer::start();
        let port = s.port;
        assert!(answers_ping(port));
        s.kill();
        assert_eq!(s.pid(), 0);
        assert!(!answers_ping(port));
        s.restart_empty();
        let pid = s.pid();
        drop(s);
        assert!(!crate::alive(pid));
    }
}
