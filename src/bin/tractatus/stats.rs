//! `lock stats`: per lock, from the audit log, grants, wait and hold percentiles, contention,
//! lost leases, breaks, evictions and joins; on a terminal, a sparkline of each lock's waits.

use std::io::IsTerminal;

use tractatus_lock::stats::{LockStats, Summary, lock_stats, since};
use tractatus_lock::{Error, Result};

use crate::Context;
use crate::output::{self, human_duration};

/// Characters of the wait sparkline: the most recent waits, one a character.
const SPARK_WIDTH: usize = 40;

pub async fn run(ctx: &Context, since_text: Option<&str>, only: Option<&str>) -> Result<i32> {
    let now_ms = now_ms();
    let since_ms = match since_text {
        Some(t) => {
            now_ms.saturating_sub(tractatus_lock::config::parse_duration(t)?.as_millis() as u64)
        }
        None => 0,
    };
    let events = match ctx.observer().await? {
        Some(c) => c.audit(only).await?.ok_or_else(|| {
            Error::usage("no audit log without Redis: local locks keep no history")
        })?,
        None => Vec::new(),
    };
    let locks = lock_stats(&events, since(since_ms));
    if ctx.json {
        output::json(&serde_json::json!({
            "since_ms": (since_ms > 0).then_some(since_ms),
            "contended_ms": tractatus_lock::stats::CONTENDED_MS,
            "locks": locks,
        }))?;
        return Ok(0);
    }
    if locks.is_empty() {
        output::out("no lock events in the audit log for that choice")?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = locks.iter().map(row).collect();
    output::table(
        &[
            "LOCK",
            "GRANTS",
            "WAITED",
            "WAIT p50/p95/p99/max",
            "HOLD p50/p95/p99/max",
            "LOST",
            "BREAKS",
            "EVICTED",
            "JOINS",
        ],
        &rows,
    )?;
    if std::io::stdout().is_terminal() {
        output::out(
            "\nwaits, oldest to newest (each bar one grant, scaled to the lock's longest):",
        )?;
        let width = locks
            .iter()
            .map(|l| l.name.chars().count())
            .max()
            .unwrap_or(0);
        for l in locks.iter().filter(|l| !l.waits_ms.is_empty()) {
            output::out(&format!(
                "  {:width$}  {}",
                tractatus_lock::shown::field(&l.name),
                sparkline(&l.waits_ms)
            ))?;
        }
    }
    Ok(0)
}

fn row(l: &LockStats) -> Vec<String> {
    vec![
        l.name.clone(),
        l.grants.to_string(),
        format!("{:.0}%", l.contention * 100.0),
        percentiles(l.wait),
        percentiles(l.hold),
        l.lost_leases.to_string(),
        l.breaks.to_string(),
        l.evictions.to_string(),
        l.joins.to_string(),
    ]
}

fn percentiles(s: Option<Summary>) -> String {
    match s {
        None => "-".to_owned(),
        Some(s) => [s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms]
            .map(short_ms)
            .join(" / "),
    }
}

/// A wait or a hold: ms below a second (most waits), else as the tables show durations.
fn short_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        human_duration(ms)
    }
}

/// The last [`SPARK_WIDTH`] values as block characters, the largest a full block.
fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let recent = &values[values.len().saturating_sub(SPARK_WIDTH)..];
    let max = recent.iter().copied().max().unwrap_or(0).max(1);
    recent
        .iter()
        .map(|v| BARS[(v.saturating_mul(7) / max).min(7) as usize])
        .collect()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sparkline_scales_to_the_longest_wait() {
        assert_eq!(sparkline(&[0, 50, 100]), "▁▄█");
        assert_eq!(sparkline(&[0, 0]), "▁▁");
    }
}
