//! `lock status --watch` in a pseudo-terminal and off one.

use super::*;

/// What `script` copied from the pseudo-terminal so far.
fn screen_text(out: &std::sync::Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&out.lock().unwrap()).into_owned()
}

/// The complete frames drawn so far (each starts with a clear-screen and ends with the nodes'
/// table).
fn frames(text: &str) -> Vec<String> {
    text.split("\x1b[2J")
        .filter(|f| f.contains("NODE"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn watch_in_a_terminal_shows_a_holder_come_and_go_and_q_restores_the_terminal() {
    use std::io::{Read, Write};
    let server = RedisServer::start();
    let url = server.url();
    let repo = Repo::new();
    // The namespace exists once something was locked.
    runs(&repo, &url, "warmup", 1);
    let cmd = format!(
        "exec {} --redis {} lock status --watch --interval 200ms",
        env!("CARGO_BIN_EXE_tractatus"),
        url
    );
    let mut c = std::process::Command::new("script");
    c.args(["-qfec", &cmd, "/dev/null"])
        .current_dir(repo.path())
        .env_remove("TRACTATUS_REDIS")
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watch = Guard(c.spawn().unwrap());
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stdout = watch.0.stdout.take().unwrap();
    let sink = out.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    wait_until(Duration::from_secs(20), "a frame with no lock held", || {
        frames(&screen_text(&out))
            .last()
            .is_some_and(|f| f.contains("no locks held"))
    });
    let held = gate(&repo, &url);
    wait_until(
        Duration::from_secs(20),
        "a frame showing the holder",
        || {
            frames(&screen_text(&out))
                .last()
                .is_some_and(|f| f.contains(LOCK) && f.contains("up"))
        },
    );
    let seen = frames(&screen_text(&out)).len();
    let_go(held);
    wait_until(
        Duration::from_secs(20),
        "a later frame without the holder",
        || {
            let all = frames(&screen_text(&out));
            all.len() > seen && all.last().is_some_and(|f| !f.contains(LOCK))
        },
    );
    watch.0.stdin.as_mut().unwrap().write_all(b"q").unwrap();
    let code = watch.wait_code(Duration::from_secs(10));
    reader.join().unwrap();
    assert_eq!(code, Some(0));
    // The terminal is handed back: after the last frame, the cursor is shown again and the
    // alternate screen left (raw mode is undone in the same drop).
    let text = screen_text(&out);
    let last_frame = text.rfind("\x1b[2J").unwrap();
    let tail = &text[last_frame..];
    assert!(
        tail.contains("\x1b[?25h"),
        "cursor not shown again: {tail:?}"
    );
    assert!(
        tail.contains("\x1b[?1049l"),
        "alternate screen not left: {tail:?}"
    );
}

#[test]
fn watch_off_a_terminal_prints_one_snapshot_per_interval() {
    let server = RedisServer::start();
    let url = server.url();
    let repo = Repo::new();
    runs(&repo, &url, "warmup", 1);
    let mut c = tractatus(&repo.path());
    c.env("TRACTATUS_REDIS", &url)
        .args(["lock", "status", "--watch", "--interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watch = Guard(c.spawn().unwrap());
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stdout = watch.0.stdout.take().unwrap();
    let sink = out.clone();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    wait_until(Duration::from_secs(20), "three snapshots", || {
        screen_text(&out).matches("--- ").count() >= 3
    });
    drop(watch);
    reader.join().unwrap();
    let text = screen_text(&out);
    assert!(text.contains("no locks held"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "terminal codes off a terminal: {text:?}"
    );
}
