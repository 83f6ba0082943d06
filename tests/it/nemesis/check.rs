//! The nemesis' checker: reads the log ("<token> <ns since epoch> <pid> <n>" lines) and finds
//! overlapping holding intervals, tokens that do not rise in the order their intervals start,
//! a token that served two holders, and a lower token's line landing after a higher one's first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One holder, as its lines show it.
#[derive(Clone, Debug)]
pub(super) struct Interval {
    pub(super) token: u64,
    pub(super) pid: u32,
    pub(super) first: u128,
    pub(super) last: u128,
    pub(super) lines: usize,
}

/// What the checker found.
#[derive(Default)]
pub(super) struct Checked {
    pub(super) intervals: Vec<Interval>,
    pub(super) writes: usize,
    pub(super) malformed: usize,
    pub(super) violations: Vec<String>,
}

/// Read the log and check it (see the module doc).
pub(super) fn check(log: &Path) -> Checked {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out = Checked::default();
    let mut by_holder: BTreeMap<(u64, u32), Interval> = BTreeMap::new();
    let mut pids_of: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
    let mut highest_started: Option<u64> = None;
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split(' ').collect();
        let parsed = (f.len() == 4)
            .then(|| {
                Some((
                    f[0].parse::<u64>().ok()?,
                    f[1].parse::<u128>().ok()?,
                    f[2].parse::<u32>().ok()?,
                ))
            })
            .flatten();
        let Some((token, ns, pid)) = parsed else {
            out.malformed += 1;
            continue;
        };
        out.writes += 1;
        if let Some(h) = highest_started
            && token < h
        {
            out.violations.push(format!(
                "line {}: token {token} (pid {pid}) wrote after token {h} had started: {line:?}",
                n + 1
            ));
        }
        highest_started = highest_started.max(Some(token));
        pids_of.entry(token).or_default().insert(pid);
        let iv = by_holder.entry((token, pid)).or_insert(Interval {
            token,
            pid,
            first: ns,
            last: ns,
            lines: 0,
        });
        iv.first = iv.first.min(ns);
        iv.last = iv.last.max(ns);
        iv.lines += 1;
    }
    for (t, pids) in &pids_of {
        if pids.len() > 1 {
            out.violations.push(format!(
                "token {t} served {} holders: pids {pids:?}",
                pids.len()
            ));
        }
    }
    let mut ivs: Vec<Interval> = by_holder.into_values().collect();
    ivs.sort_by_key(|i| i.first);
    let mut reach: Option<&Interval> = None;
    for (k, iv) in ivs.iter().enumerate() {
        if let Some(r) = reach
            && r.last >= iv.first
        {
            out.violations.push(format!(
                "overlap: token {} pid {} [{}, {}] and token {} pid {} [{}, {}] ({} ns)",
                r.token,
                r.pid,
                r.first,
                r.last,
                iv.token,
                iv.pid,
                iv.first,
                iv.last,
                r.last - iv.first
            ));
        }
        if k > 0 && ivs[k - 1].token >= iv.token {
            let p = &ivs[k - 1];
            out.violations.push(format!(
                "grant order: token {} started at {} before token {} at {}",
                p.token, p.first, iv.token, iv.first
            ));
        }
        if reach.is_none_or(|r| iv.last > r.last) {
            reach = Some(iv);
        }
    }
    out.intervals = ivs;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_finds_an_overlap_a_late_lower_token_and_a_shared_token() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let ok = "5 100 1 0\n5 120 1 1\n7 130 2 0\n7 150 2 1\n";
        std::fs::write(&log, ok).unwrap();
        let c = check(&log);
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        assert_eq!((c.intervals.len(), c.writes), (2, 4));
        std::fs::write(
            &log,
            "5 100 1 0\n7 110 2 0\n5 120 1 1\n9 200 3 0\n9 210 4 0\nx\n",
        )
        .unwrap();
        let c = check(&log);
        let v = c.violations.join("\n");
        assert!(v.contains("wrote after token 7"), "{v}");
        assert!(v.contains("overlap: token 5"), "{v}");
        assert!(v.contains("token 9 served 2 holders"), "{v}");
        assert_eq!(c.malformed, 1);
    }
}
