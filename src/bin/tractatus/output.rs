//! Everything the binary shows: stdout lines that never panic (a closed pipe or a full disk is
//! an error with an exit code, not a backtrace), stderr notes, tables, times, JSON, and the
//! terminal line that names the holder while we wait. Text that came from elsewhere (session
//! ids, host names, commands, lock names, error text quoting them) is shown only through
//! `tractatus_lock::shown`: escaped, and cut in tables. JSON output is exact JSON (it escapes
//! control characters by itself).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tractatus_lock::WaitProgress;
use tractatus_lock::shown::{escape, field};
use tractatus_lock::{Error, InTheWay, Result};

/// Write `text` and a newline to stdout, flushed; a failure (closed pipe, full disk) is
/// [`Error::CannotWrite`] (73) naming stdout.
pub fn out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush())
        .map_err(|source| Error::CannotWrite {
            path: PathBuf::from("stdout"),
            source,
        })
}

/// Print `value` as one pretty JSON document.
pub fn json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(Error::internal)?;
    out(&text)
}

/// One `tractatus: ...` line on stderr, escaped (an error may quote a holder's session or host,
/// a command, a server's reply): one line, whatever it quotes. Nothing to do if stderr is gone.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "tractatus: {}", escape(text));
}

/// A table with a header, columns padded to their widest cell. Every cell is escaped and cut
/// to `shown::FIELD_MAX` characters: a cell is one line, and the table stays readable.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let cells = |r: &[String]| r.iter().map(|c| field(c)).collect::<Vec<String>>();
    let header: Vec<String> = header.iter().map(|h| field(h)).collect();
    let rows: Vec<Vec<String>> = rows.iter().map(|r| cells(r)).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut text = line(&header, &widths);
    for r in &rows {
        text.push('\n');
        text.push_str(&line(r, &widths));
    }
    out(&text)
}

/// One table line: each cell padded to its column's width. Padded by hand: a width in a format
/// string is at most 65,535 and panics beyond it.
fn line(cells: &[String], widths: &[usize]) -> String {
    let mut text = String::new();
    for (c, w) in cells.iter().zip(widths) {
        if !text.is_empty() {
            text.push_str("  ");
        }
        text.push_str(c);
        text.extend(std::iter::repeat_n(
            ' ',
            w.saturating_sub(c.chars().count()),
        ));
    }
    text.trim_end().to_owned()
}

/// A duration for a table: `4.2s` under 10 s, `42s` under 10 min, `12m` under 3 h, `26h` under
/// 2 days, else `9d`.
pub fn human_duration(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 600_000 {
        format!("{}s", ms / 1000)
    } else if ms < 3 * HOUR_MS {
        format!("{}m", ms / 60_000)
    } else if ms < 2 * DAY_MS {
        format!("{}h", ms / HOUR_MS)
    } else {
        format!("{}d", ms / DAY_MS)
    }
}

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC, from ms since the epoch.
pub fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// While waiting on a terminal, one stderr line updated in place names the holder (or the
/// waiter first in line on a free lock). On Redis, a wait that has named nobody after
/// [`SILENT_WAIT`] (a server in its restart quarantine, or one that does not answer yet) is
/// said once on stderr, terminal or not: a hook's stderr reaches its log, and a stall of up to
/// the quarantine (10 s) should not be silent there.
pub struct WaitFeedback {
    progress: WaitProgress,
    /// The task showing the wait, and whether stderr is a terminal.
    task: Option<(tokio::task::JoinHandle<()>, bool)>,
}

/// How long a wait on Redis may name no holder before it is said (once).
const SILENT_WAIT: Duration = Duration::from_secs(1);

impl WaitFeedback {
    /// Start showing the wait for `what` (like `lock 'x'`): the holder (or the waiter first in
    /// line on a free lock) if stderr is a terminal, and on Redis (`redis`) a stall with nobody
    /// to name, once.
    pub fn start(what: &str, redis: bool) -> Self {
        let (tx, mut rx) = watch::channel::<Option<InTheWay>>(None);
        let terminal = std::io::stderr().is_terminal();
        let task = (terminal || redis).then(|| {
            let what = field(what);
            tokio::spawn(async move {
                let started = Instant::now();
                let mut shown = false;
                // Said only while nobody was ever named (a holder, or a waiter first in line
                // on a free lock): after a holder let go, the acquire reports "nobody" too, and
                // that is no stall.
                let mut noted = false;
                loop {
                    let changed =
                        tokio::time::timeout(Duration::from_millis(250), rx.changed()).await;
                    // Every sender gone: the wait is over one way or the other.
                    let closed = matches!(changed, Ok(Err(_)));
                    let mut err = std::io::stderr();
                    noted |= rx.borrow().is_some();
                    if redis
                        && !noted
                        && !closed
                        && rx.borrow().is_none()
                        && started.elapsed() >= SILENT_WAIT
                    {
                        noted = true;
                        let wipe = if shown { "\r\x1b[K" } else { "" };
                        let _ = writeln!(
                            err,
                            "{wipe}tractatus: waiting for {what} with no holder to name: a Redis \
                             server in its restart quarantine (it started empty or took over in a \
                             failover; up to the quarantine, 10 s by default) or one that does not \
                             answer yet"
                        );
                        shown = false;
                    }
                    if !terminal {
                        if closed {
                            break;
                        }
                        continue;
                    }
                    let waited = started.elapsed().as_secs_f64();
                    let line = rx.borrow().as_ref().map(|in_the_way| match in_the_way {
                        InTheWay::Holder(h) => format!(
                            "\rtractatus: waiting {waited:.1}s for {what}: held by session {} on \
                             {} pid {} for {:.1}s\x1b[K",
                            field(&h.session),
                            field(&h.host),
                            h.pid,
                            h.held_for().as_secs_f64()
                        ),
                        InTheWay::FirstInLine(w) => format!(
                            "\rtractatus: waiting {waited:.1}s for {what}: free, but session {} \
                             on {} pid {} is first in line\x1b[K",
                            field(&w.session),
                            field(&w.host),
                            w.pid
                        ),
                    });
                    match line {
                        Some(line) if !closed => {
                            let _ = err.write_all(line.as_bytes());
                            let _ = err.flush();
                            shown = true;
                        }
                        _ if shown || closed => {
                            // Acquired (or given up): wipe the line before the work writes.
                            if shown {
                                let _ = err.write_all(b"\r\x1b[K");
                            }
                            break;
                        }
                        _ => {}
                    }
                }
            })
        });
        WaitFeedback {
            progress: tx,
            task: task.map(|t| (t, terminal)),
        }
    }

    /// Where the library reports the holder.
    pub fn progress(&self) -> WaitProgress {
        self.progress.clone()
    }

    /// Stop, and wipe the line (on a terminal).
    pub fn finish(mut self) {
        if let Some((t, terminal)) = self.task.take() {
            t.abort();
            if terminal {
                let _ = std::io::stderr().write_all(b"\r\x1b[K");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_as_people_write_them() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_time(1_709_251_199_999), "2024-02-29 23:59:59.999");
        assert_eq!(human_duration(4_200), "4.2s");
        assert_eq!(human_duration(42_000), "42s");
        assert_eq!(human_duration(720_000), "12m");
        assert_eq!(human_duration(3 * HOUR_MS - 1), "179m");
        assert_eq!(human_duration(24 * HOUR_MS), "24h");
        assert_eq!(human_duration(2 * DAY_MS - 1), "47h");
        assert_eq!(human_duration(9 * DAY_MS + 5 * HOUR_MS), "9d");
    }

    #[test]
    fn a_line_pads_by_hand_past_the_format_width_limit() {
        let wide = "x".repeat(70_000);
        let text = line(&[wide.clone(), "b".into()], &[70_001, 1]);
        assert_eq!(text, format!("{wide}   b"));
    }
}
