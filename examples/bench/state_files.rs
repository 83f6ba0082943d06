//! Section 3: `state append` on a Tractatus-sized `instruction-history.json` through the CLI,
//! with one Redis and with no Redis, uncontended and from several threads.

use std::collections::HashSet;
use std::path::Path;

use tractatus_testkit::{HISTORY, Repo, instruction_history_varied, run_timed};

use crate::children::{run_parallel, run_sequential};
use crate::cli::Cli;
use crate::stats::{Budget, Floor, Floors, Scale, note_truncated, print_latency};
use crate::{CHILD_LIMIT, LOOP_BUDGET, Res, THREADS};

pub(crate) fn section_state_files(cli: &Cli, url: &str, floors: &Floors, scale: Scale) -> Res<()> {
    println!("\n3. State files (CLI, `state append` on {HISTORY})");
    let fixture = instruction_history_varied(140);
    println!(
        "  fixture: 140 instructions, {:.1} KiB, 2-space indentation",
        fixture.len() as f64 / 1024.0
    );

    let repo = Repo::new();
    append_uncontended(
        cli,
        &repo,
        Some(url),
        &fixture,
        scale,
        "append, 1 Redis, uncontended",
        &[floors.spawn, floors.ping],
    )?;
    append_throughput(cli, &repo, url, &fixture, scale, floors)?;

    // A repository of its own: its fencing record must not carry tokens from the Redis runs.
    let local = Repo::new();
    append_uncontended(
        cli,
        &local,
        None,
        &fixture,
        scale,
        "append, no Redis (flock), uncontended",
        &[floors.spawn],
    )?;
    Ok(())
}

/// Sequential appends, each timed from process start to exit. The file is put back to the
/// fixture every 20 runs so that it stays about the fixture's size.
fn append_uncontended(
    cli: &Cli,
    repo: &Repo,
    url: Option<&str>,
    fixture: &str,
    scale: Scale,
    label: &str,
    floors: &[Floor],
) -> Res<()> {
    std::fs::write(repo.file(HISTORY), fixture)?;
    let dir = repo.path();
    // Warm-up run (namespace file, fence record, page cache): not measured.
    let first = run_timed(&mut cli.append(&dir, url, "bench_warmup"), CHILD_LIMIT);
    if !first.ok() {
        println!("  {label}: warm-up failed ({}); skipped", first.describe());
        return Ok(());
    }
    let n = scale.count(100, 10);
    let budget = Budget::new(LOOP_BUDGET);
    let path = repo.file(HISTORY);
    let (stats, failures) = run_sequential(
        n,
        &budget,
        |i| {
            if i % 20 == 0 {
                let _ = std::fs::write(&path, fixture);
            }
        },
        |i| cli.append(&dir, url, &format!("bench_{i}")),
    );
    print_latency(label, &stats, floors);
    note_truncated(label, stats.n() + failures.count, n);
    failures.print("appends");
    Ok(())
}

fn append_throughput(
    cli: &Cli,
    repo: &Repo,
    url: &str,
    fixture: &str,
    scale: Scale,
    floors: &Floors,
) -> Res<()> {
    std::fs::write(repo.file(HISTORY), fixture)?;
    let dir = repo.path();
    let each = scale.count(10, 2);
    let id = |t: usize, i: usize| format!("tp_{t}_{i}");
    let par = run_parallel(THREADS, each, |t, i| cli.append(&dir, Some(url), &id(t, i)));
    par.print("appends", &[floors.spawn, floors.ping]);

    // Sanity, not an assertion: every append that exited 0 must be in the file.
    let expected: HashSet<String> = (0..THREADS)
        .flat_map(|t| (0..each).map(move |i| (t, i)))
        .map(|(t, i)| id(t, i))
        .collect();
    match count_ids(&repo.file(HISTORY), &expected) {
        Ok((found, total)) => println!(
            "  sanity: file parses; {found}/{} appended ids present ({} exited 0); \
             {total} instructions in the file",
            expected.len(),
            par.stats.n()
        ),
        Err(e) => println!("  sanity: the file does NOT parse or has no instructions: {e}"),
    }
    Ok(())
}

/// How many of `expected` ids are in the file's `/instructions`, and how many entries it has.
fn count_ids(path: &Path, expected: &HashSet<String>) -> Res<(usize, usize)> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let list = doc["instructions"]
        .as_array()
        .ok_or("no /instructions array")?;
    let found = list
        .iter()
        .filter_map(|e| e["id"].as_str())
        .filter(|id| expected.contains(*id))
        .count();
    Ok((found, list.len()))
}
