//! What the committed config file and the files it names may make another user's `tractatus`
//! do (issue 18, items 3, 9 and part of 11): a co-user (the attacker, another uid in the team's
//! group) writes `.claude/tractatus-lock.toml`, plants links and FIFOs; the victim runs
//! ordinary commands. The config file and the CA file are read without following a link below
//! the root, never wait, and are capped; credentials from the victim's environment go only to
//! endpoints the victim named or trusts; bad values are refused up front.
//!
//! Split by sub-feature (issue 22): the two-uid helpers and the recorder stay here; `files`
//! (the config and CA files), `credentials` (who receives a password), `values` (bad values).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tractatus_testkit::{SharedCheckout, Who, as_attacker};

use crate::support::{Guard, RedisServer, Repo, run, run_timed, tractatus, wait_until};

mod credentials;
mod files;
mod values;

const BIN: &str = env!("CARGO_BIN_EXE_tractatus");
const PASSWORD: &str = "hunter2 with spaces@%é";
const USERNAME: &str = "victim-acl-user";
/// Long enough that a hang shows as a kill, not as a slow pass.
const HANG_LIMIT: Duration = Duration::from_secs(10);
/// How fast a refusal of a planted file must come (the binary starts and stops well within it,
/// even on a loaded two-core CI machine).
const PROMPT: Duration = Duration::from_secs(1);

fn victim(co: &SharedCheckout) -> Command {
    co.command(Who::Victim, Path::new(BIN))
}

/// A Redis endpoint that is not one: it accepts every connection on loopback, records every
/// byte it receives and answers each read with a Redis error. Stopped on drop.
struct Recorder {
    port: u16,
    bytes: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().take(1000) {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let b = b.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut buf = [0u8; 4096];
                    for _ in 0..1000 {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                b.lock().unwrap().extend_from_slice(&buf[..n]);
                                let _ = conn.write_all(b"-ERR not a Redis\r\n");
                            }
                        }
                    }
                });
            }
        });
        Recorder { port, bytes, stop }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn received(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The password in any of the forms a client or an error could carry it: as is, percent-encoded,
/// and its distinctive first word.
fn shows_password(text: &[u8]) -> bool {
    contains(text, PASSWORD) || contains(text, "hunter2")
}
