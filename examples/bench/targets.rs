//! The targets of issue 20, judged from figures of this run (each MET or MISSED with its
//! ratio), and the page `docs/performance.md`: with `BENCH_MARKDOWN=<path>` the run rewrites
//! the part of that page between its `bench:begin` and `bench:end` markers (date, command,
//! load, the targets and every figure), leaving the prose around them alone.

use std::sync::Mutex;

use crate::Res;

/// One target: what it compares, the figures, the ratio and the bound it must keep.
struct Verdict {
    what: String,
    measured: String,
    ratio: f64,
    bound: Bound,
}

#[derive(Clone, Copy)]
enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

impl Verdict {
    fn met(&self) -> bool {
        match self.bound {
            Bound::AtMost(b) => self.ratio <= b,
            Bound::AtLeast(b) => self.ratio >= b,
        }
    }

    fn bound_text(&self) -> String {
        match self.bound {
            Bound::AtMost(b) => format!("<= {b}"),
            Bound::AtLeast(b) => format!(">= {b}"),
        }
    }

    fn word(&self) -> &'static str {
        if self.met() { "MET" } else { "MISSED" }
    }
}

static VERDICTS: Mutex<Vec<Verdict>> = Mutex::new(Vec::new());
/// Every latency line of the run: label, n, p50, p99, ratios.
static ROWS: Mutex<Vec<[String; 5]>> = Mutex::new(Vec::new());

fn judge(what: &str, measured: String, ratio: f64, bound: Bound) {
    if let Ok(mut v) = VERDICTS.lock() {
        v.push(Verdict {
            what: what.to_owned(),
            measured,
            ratio,
            bound,
        });
    }
}

/// A target met while `ratio` stays at or below `bound`.
pub(crate) fn at_most(what: &str, measured: String, ratio: f64, bound: f64) {
    judge(what, measured, ratio, Bound::AtMost(bound));
}

/// A target met while `ratio` stays at or above `bound`.
pub(crate) fn at_least(what: &str, measured: String, ratio: f64, bound: f64) {
    judge(what, measured, ratio, Bound::AtLeast(bound));
}

/// A count that must be zero.
pub(crate) fn zero(what: &str, count: usize, of: &str) {
    judge(
        what,
        format!("{count} {of}"),
        count as f64,
        Bound::AtMost(0.0),
    );
}

/// One figure for the page's table (every `print_latency` line lands here).
pub(crate) fn row(label: &str, n: usize, p50: String, p99: String, ratios: String) {
    if let Ok(mut r) = ROWS.lock() {
        r.push([label.trim().to_owned(), n.to_string(), p50, p99, ratios]);
    }
}

/// Print every target's verdict; with `BENCH_MARKDOWN` set, write the page's table.
pub(crate) fn finish(machine: &str, load_before: &str) -> Res<()> {
    let verdicts = VERDICTS.lock().map_err(|_| "poisoned")?;
    println!("\nTargets of issue 20 (ratios from this run)");
    for v in verdicts.iter() {
        println!(
            "  {:<6} {:<58} {:>7.2} (target {}): {}",
            v.word(),
            v.what,
            v.ratio,
            v.bound_text(),
            v.measured
        );
    }
    let met = verdicts.iter().filter(|v| v.met()).count();
    println!("  {met} of {} targets met", verdicts.len());
    let Some(path) = std::env::var_os("BENCH_MARKDOWN") else {
        return Ok(());
    };
    let rows = ROWS.lock().map_err(|_| "poisoned")?;
    let load_after = load_average();
    let mut md = String::new();
    md.push_str(&format!(
        "Run on {} (UTC). {machine}. Load average (1, 5, 15 min) {load_before} before the run, \
         {load_after} after it. Regenerate with:\n\n```sh\n{COMMAND}\n```\n\n",
        today()
    ));
    md.push_str(&format!(
        "### Targets of issue 20: {met} of {} met\n\n| target | ratio | bound | verdict | figures |\n|---|---|---|---|---|\n",
        verdicts.len()
    ));
    for v in verdicts.iter() {
        let word = if v.met() { "met" } else { "**MISSED**" };
        md.push_str(&format!(
            "| {} | {:.2} | {} | {word} | {} |\n",
            v.what,
            v.ratio,
            v.bound_text().replace('<', "&lt;").replace('>', "&gt;"),
            v.measured
        ));
    }
    md.push_str("\n### Every figure of the run\n\n| what | n | p50 | p99 | p50 against the floors |\n|---|---|---|---|---|\n");
    for r in rows.iter() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r[0], r[1], r[2], r[3], r[4]
        ));
    }
    splice(std::path::Path::new(&path), &md)?;
    println!(
        "  wrote the figures into {}",
        std::path::Path::new(&path).display()
    );
    Ok(())
}

/// The one command that regenerates the page.
const COMMAND: &str = "cargo build --release && BENCH_MARKDOWN=docs/performance.md cargo run --release --example bench";

const BEGIN: &str = "<!-- bench:begin (written by the benchmark; edits here are overwritten) -->";
const END: &str = "<!-- bench:end -->";

/// Put `md` between the markers of the page at `path` (appended with markers when it has none).
fn splice(path: &std::path::Path, md: &str) -> Res<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{BEGIN}\n{md}{END}");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + END.len()..]),
        _ => format!("{old}\n{block}\n"),
    };
    std::fs::write(path, new)?;
    Ok(())
}

/// `/proc/loadavg`'s first three fields.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "unknown".into())
}

/// Today's date, UTC, from `date` (no date crate for one line).
fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown date".into())
}
