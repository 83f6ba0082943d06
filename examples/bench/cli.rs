//! The `tractatus` binary as the benchmark runs it, and the CLI part of section 2: `lock run`
//! uncontended and from several threads.

use std::path::Path;
use std::process::Command;

use tractatus_testkit::{HISTORY, Repo, run_timed};

use crate::children::{run_parallel, run_sequential};
use crate::stats::{Budget, Floors, Scale, note_truncated, print_latency};
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

/// `lock run -- true` through the CLI: uncontended, then from several threads at once.
pub(crate) fn lock_run_cli(cli: &Cli, url: &str, floors: &Floors, scale: Scale) -> Res<()> {
    let repo = Repo::new();
    let dir = repo.path();
    // The first run writes the repository's namespace into its config file: not measured.
    let first = run_timed(&mut cli.lock_run_true(&dir, url, "bench-cli"), CHILD_LIMIT);
    if !first.ok() {
        println!(
            "  CLI lock run: first run failed ({}); skipping",
            first.describe()
        );
        return Ok(());
    }

    let n = scale.count(100, 10);
    let budget = Budget::new(LOOP_BUDGET);
    let (stats, failures) = run_sequential(
        n,
        &budget,
        |_| {},
        |_| cli.lock_run_true(&dir, url, "bench-cli"),
    );
    print_latency(
        "CLI `lock run -- true`, uncontended",
        &stats,
        &[floors.spawn],
    );
    note_truncated("CLI lock run", stats.n() + failures.count, n);
    failures.print("lock runs");

    let each = scale.count(25, 2);
    let par = run_parallel(THREADS, each, |_, _| {
        cli.lock_run_true(&dir, url, "bench-cli-tp")
    });
    par.print("lock-runs", &[floors.spawn]);
    Ok(())
}
