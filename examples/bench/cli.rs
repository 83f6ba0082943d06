//! The `tractatus` binary as the benchmark runs it, and the CLI part of section 2: `lock run
//! -- true` against `state merge` (the guarded write it should cost no more than 1.5x of), one
//! at a time (interleaved, so both see the same load) and from several processes at once.

use std::path::Path;
use std::process::Command;

use tractatus_testkit::{HISTORY, Repo, run_timed};

use crate::children::run_parallel;
use crate::stats::{Budget, Failures, Floors, Scale, Stats, note_truncated, print_latency, shown};
use crate::{CHILD_LIMIT, LOOP_BUDGET, Res, THREADS};

/// The `tractatus` binary of the same build profile as this example (found by the kit).
pub(crate) struct Cli(tractatus_testkit::Cli);

impl Cli {
    /// The binary beside this example, or `None` (and the CLI sections skipped) when it was not
    /// built: building it from here would fight with cargo's lock.
    pub(crate) fn locate() -> Option<Cli> {
        match tractatus_testkit::Cli::beside_examples() {
            Ok(cli) => {
                println!("cli:          {}", cli.path().display());
                Some(Cli(cli))
            }
            Err(bin) => {
                println!(
                    "cli:          {} not found: run `cargo build --release` first; \
                     the CLI sections are skipped",
                    bin.display()
                );
                None
            }
        }
    }

    /// `tractatus [--redis URL]` in `repo`, with no TRACTATUS_* variable from our environment,
    /// so that only what we pass decides the backend, namespace and timings.
    pub(crate) fn command(&self, repo: &Path, redis: Option<&str>) -> Command {
        let mut cmd = self.0.command(repo);
        if let Some(url) = redis {
            cmd.args(["--redis", url]);
        }
        cmd
    }

    fn lock_run_true(&self, repo: &Path, url: &str, name: &str) -> Command {
        let mut cmd = self.command(repo, Some(url));
        cmd.args(["lock", "run", "--name", name, "--", "true"]);
        cmd
    }

    /// `state merge` of a small object into a small state file under the file's lock.
    fn merge(&self, repo: &Path, url: &str, i: usize) -> Command {
        let mut cmd = self.command(repo, Some(url));
        cmd.args([
            "state",
            "merge",
            MERGED,
            &format!("{{\"message_count\": {i}}}"),
        ]);
        cmd
    }

    pub(crate) fn append(&self, repo: &Path, url: Option<&str>, id: &str) -> Command {
        let value = serde_json::json!({
            "id": id,
            "text": "Benchmark entry: appended through tractatus state append under the file's lock.",
        });
        let mut cmd = self.command(repo, url);
        cmd.args([
            "state",
            "append",
            HISTORY,
            "/instructions",
            &value.to_string(),
        ]);
        cmd
    }
}

/// The state file `state merge` writes.
const MERGED: &str = ".claude/session-state.json";

/// `lock run -- true` and `state merge` through the CLI: one at a time, interleaved, then from
/// several threads at once; each target judged.
pub(crate) fn lock_run_cli(cli: &Cli, url: &str, floors: &Floors, scale: Scale) -> Res<()> {
    let repo = Repo::new();
    let dir = repo.path();
    // The first runs write the repository's namespace and the state file: not measured.
    for mut first in [
        cli.lock_run_true(&dir, url, "bench-cli"),
        cli.merge(&dir, url, 0),
    ] {
        let ran = run_timed(&mut first, CHILD_LIMIT);
        if !ran.ok() {
            println!("  CLI: first run failed ({}); skipping", ran.describe());
            return Ok(());
        }
    }

    let n = scale.count(100, 10);
    let budget = Budget::new(LOOP_BUDGET);
    let (mut runs, mut merges) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut failures = Failures::default();
    for i in 0..n {
        if budget.exhausted() {
            break;
        }
        for (cmd, into) in [
            (cli.lock_run_true(&dir, url, "bench-cli"), &mut runs),
            (cli.merge(&dir, url, i), &mut merges),
        ] {
            let ran = run_timed(&mut { cmd }, CHILD_LIMIT);
            if ran.ok() {
                into.push(ran.elapsed);
            } else {
                failures.add(ran.describe());
            }
        }
    }
    let (runs, merges) = (Stats::new(runs), Stats::new(merges));
    print_latency(
        "CLI `lock run -- true`, uncontended",
        &runs,
        &[floors.spawn],
    );
    print_latency("CLI `state merge`, uncontended", &merges, &[floors.spawn]);
    note_truncated("CLI lock run + merge", runs.n().min(merges.n()), n);
    failures.print("lock runs and merges");
    let one = crate::stats::ratio(runs.p50(), merges.p50());
    crate::targets::at_most(
        "`lock run -- true` p50 / `state merge` p50, one at a time",
        format!("{} / {}", shown(runs.p50()), shown(merges.p50())),
        one,
        1.5,
    );

    let each = scale.count(25, 2);
    let par_runs = run_parallel(THREADS, each, |_, _| {
        cli.lock_run_true(&dir, url, "bench-cli-tp")
    });
    par_runs.print("lock-runs", &[floors.spawn]);
    let par_merges = run_parallel(THREADS, each, |t, i| cli.merge(&dir, url, t * 1000 + i));
    par_merges.print("merges", &[floors.spawn]);
    let rate = |p: &crate::children::Parallel| p.stats.n() as f64 / p.wall.as_secs_f64().max(1e-9);
    let (r_runs, r_merges) = (rate(&par_runs), rate(&par_merges));
    crate::targets::at_most(
        &format!(
            "`lock run -- true` / `state merge`, {THREADS} processes contending (time per op)"
        ),
        format!("{r_runs:.0} runs/s, {r_merges:.0} merges/s"),
        r_merges / r_runs.max(1e-9),
        1.5,
    );
    Ok(())
}
