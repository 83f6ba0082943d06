//! `lock status --watch`: the live view. On a terminal (crossterm): the alternate screen,
//! redrawn in place every interval with the holders (TTL counting down, hold so far), each
//! lock's queue, the slots, the live sessions and each Redis node's round trip; `q`, Esc or
//! Ctrl-C quits and leaves the terminal as it was. Elsewhere (a pipe, a file, a CI log) it
//! prints one plain snapshot per interval, each headed by its time, until stopped.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use crossterm::{cursor, execute, queue, terminal};
use tokio::sync::mpsc;
use tractatus_lock::session::SessionState;
use tractatus_lock::shown::field;
use tractatus_lock::stats::{NodeHealth, StatusReport};
use tractatus_lock::{Coordinator, Error, Result};

use crate::Context;
use crate::output::{self, format_time, human_duration};
use crate::stats::now_ms;

/// Shortest interval: a faster redraw only loads Redis.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

pub async fn run(ctx: &Context, interval: &str) -> Result<i32> {
    let interval = tractatus_lock::config::parse_duration(interval)?;
    if interval < MIN_INTERVAL {
        return Err(Error::usage(format!(
            "--interval {} ms is too short: at least {} ms",
            interval.as_millis(),
            MIN_INTERVAL.as_millis()
        )));
    }
    if ctx.json {
        return Err(Error::usage(
            "--watch draws for people; for JSON, run `lock status --json` once per interval",
        ));
    }
    let mut coordinator: Option<Coordinator> = None;
    if !(std::io::stdout().is_terminal() && std::io::stdin().is_terminal()) {
        loop {
            let frame = snapshot(ctx, &mut coordinator).await;
            output::out(&format!(
                "--- {} UTC\n{}",
                format_time(now_ms()),
                frame.join("\n")
            ))?;
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = tokio::signal::ctrl_c() => return Ok(0),
            }
        }
    }
    let screen = Screen::enter()?;
    let mut keys = key_reader();
    loop {
        let mut frame = snapshot(ctx, &mut coordinator).await;
        frame.insert(
            0,
            format!(
                "tractatus lock status --watch, every {}   {} UTC   q quits",
                human_interval(interval),
                format_time(now_ms())
            ),
        );
        screen.draw(&frame)?;
        let deadline = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                key = keys.recv() => match key {
                    Some(k) if quits(&k) => return Ok(0),
                    Some(_) => {}
                    // The reader stopped (the terminal is gone): nothing more to show.
                    None => return Ok(0),
                },
            }
        }
    }
}

fn quits(k: &KeyEvent) -> bool {
    matches!(
        k.code,
        KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc
    ) || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL))
}

fn human_interval(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Key presses, read on a thread of their own (crossterm's reads block); the thread ends
/// when the receiver is dropped or the terminal fails.
fn key_reader() -> mpsc::Receiver<KeyEvent> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        while !tx.is_closed() {
            match event::poll(Duration::from_millis(100)) {
                Ok(false) => {}
                Ok(true) => match event::read() {
                    Ok(Event::Key(k)) => {
                        if tx.blocking_send(k).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                Err(_) => return,
            }
        }
    });
    rx
}

/// The terminal in raw mode on the alternate screen, the cursor hidden; all three undone on
/// drop (a quit, an error, a panic), so the shell gets its terminal back as it was.
struct Screen;

impl Screen {
    fn enter() -> Result<Screen> {
        terminal::enable_raw_mode().map_err(tty)?;
        let screen = Screen;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )
        .map_err(tty)?;
        Ok(screen)
    }

    /// Redraw: each line cut to the terminal's width (raw mode needs its own `\r\n`).
    fn draw(&self, lines: &[String]) -> Result<()> {
        // A terminal that reports no size (a pseudo-terminal nobody sized) gets a usual one.
        let (cols, rows) = match terminal::size() {
            Ok((c, r)) if c > 0 && r > 0 => (c, r),
            _ => (120, 40),
        };
        let mut out = std::io::stdout().lock();
        queue!(
            out,
            cursor::MoveTo(0, 0),
            terminal::Clear(terminal::ClearType::All)
        )
        .map_err(tty)?;
        for line in lines.iter().take(usize::from(rows)) {
            let cut: String = line.chars().take(usize::from(cols)).collect();
            out.write_all(cut.as_bytes())
                .and_then(|()| out.write_all(b"\r\n"))
                .map_err(tty)?;
        }
        out.flush().map_err(tty)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

fn tty(e: std::io::Error) -> Error {
    Error::CannotWrite {
        path: std::path::PathBuf::from("the terminal"),
        source: e,
    }
}

/// One frame's lines: errors are shown in the frame (a node down is news, not an exit).
async fn snapshot(ctx: &Context, coordinator: &mut Option<Coordinator>) -> Vec<String> {
    if coordinator.is_none() {
        // The namespace appears with the first lock: look again until it does.
        *coordinator = ctx.observer().await.ok().flatten();
    }
    let mut lines = Vec::new();
    let backend = if ctx.ws.resolved().config.nodes.is_empty() {
        "local"
    } else {
        "redis"
    };
    let report = match coordinator.as_ref() {
        Some(c) => c.status().await.map(|locks| StatusReport {
            namespace: ctx.ws.resolved().namespace.name().map(str::to_owned),
            backend,
            locks,
        }),
        None => Ok(StatusReport {
            namespace: None,
            backend,
            locks: Vec::new(),
        }),
    };
    match report {
        Ok(r) => holders(&r, &mut lines),
        Err(e) => lines.push(format!(
            "locks: cannot read them: {}",
            field(&e.to_string())
        )),
    }
    match ctx.ws.sessions_observer() {
        Ok(Some(s)) => match s.list().await {
            Ok(all) => {
                let live: Vec<String> = all
                    .iter()
                    .filter(|s| s.state == SessionState::Live)
                    .map(|s| field(&s.entry.id))
                    .collect();
                lines.push(String::new());
                lines.push(format!("sessions: {} live  {}", live.len(), live.join(" ")));
            }
            Err(e) => lines.push(format!("sessions: {}", field(&e.to_string()))),
        },
        Ok(None) => {}
        Err(e) => lines.push(format!("sessions: {}", field(&e.to_string()))),
    }
    if let Some(c) = coordinator.as_ref() {
        nodes(&c.node_health().await, &mut lines);
    }
    lines
}

fn holders(r: &StatusReport, lines: &mut Vec<String>) {
    let ns = r.namespace.as_deref().unwrap_or("(none yet)");
    lines.push(format!("namespace {} ({})", field(ns), r.backend));
    if r.locks.is_empty() {
        lines.push("no locks held".to_owned());
        return;
    }
    let rows: Vec<Vec<String>> = r
        .locks
        .iter()
        .map(|l| crate::lock::status_row(l, false))
        .collect();
    table(
        &[
            "LOCK", "SESSION", "HOST", "PID", "HELD", "TTL", "WAITERS", "STATE", "COMMAND",
        ],
        &rows,
        lines,
    );
    let now = now_ms();
    for l in r.locks.iter().filter(|l| !l.queue.is_empty()) {
        lines.push(format!("queue of {}:", field(&l.name)));
        for (i, w) in l.queue.iter().enumerate() {
            lines.push(format!(
                "  {}. session {} on {} pid {}, waiting {}",
                i + 1,
                field(&w.session),
                field(&w.host),
                w.pid,
                human_duration(now.saturating_sub(w.since_ms))
            ));
        }
    }
    let mut sets: std::collections::BTreeMap<&str, Vec<u32>> = Default::default();
    for l in &r.locks {
        if let (Some(set), Some(i)) = (&l.slot_of, l.slot) {
            sets.entry(set.as_str()).or_default().push(i);
        }
    }
    for (set, held) in sets {
        lines.push(format!("slots of {}: {} held", field(set), held.len()));
    }
}

fn nodes(health: &[NodeHealth], lines: &mut Vec<String>) {
    if health.is_empty() {
        return;
    }
    lines.push(String::new());
    let rows: Vec<Vec<String>> = health
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                if n.up { "up".into() } else { "DOWN".into() },
                n.round_trip_ms
                    .map(|ms| format!("{ms:.1}ms"))
                    .unwrap_or_else(|| "-".into()),
                match n.quarantine_left_ms {
                    Some(0) => String::new(),
                    Some(ms) => format!("restart quarantine {} left", human_duration(ms)),
                    None => n.error.clone().unwrap_or_default(),
                },
            ]
        })
        .collect();
    table(&["NODE", "STATE", "ROUND TRIP", ""], &rows, lines);
}

/// A table as lines, every cell escaped and cut (`shown::field`), columns padded.
fn table(header: &[&str], rows: &[Vec<String>], lines: &mut Vec<String>) {
    let cells: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| field(h)).collect())
        .chain(rows.iter().map(|r| r.iter().map(|c| field(c)).collect()))
        .collect();
    let mut widths = vec![0; header.len()];
    for r in &cells {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in &cells {
        let padded: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        lines.push(padded.join("  ").trim_end().to_owned());
    }
}
