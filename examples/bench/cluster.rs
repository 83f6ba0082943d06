//! Section 5: a 3-master Redis Cluster beside one plain Redis, in the same run: uncontended
//! acquire+release (library: a URL that finds out it names a cluster node, and one that says
//! `?cluster=true`), `THREADS` contending tasks, and the CLI (a process per call, as a hook
//! runs it) uncontended and from `THREADS` processes at once. Every figure is also a ratio
//! against the plain Redis (target: within 1.3x).

use std::time::Duration;

use tokio::runtime::Runtime;
use tractatus_lock::keys::slot_of_tag;
use tractatus_testkit::{RedisCluster, RedisServer, Repo, run_timed};

use crate::children::{run_parallel, run_sequential};
use crate::cli::Cli;
use crate::contention::contend;
use crate::stats::{Budget, Failures, Floors, Scale, Stats, note_truncated, print_latency};
use crate::{CHILD_LIMIT, LOOP_BUDGET, Res, THREADS, acquire_release, connect};

pub(crate) fn section_cluster(
    rt: &Runtime,
    floors: &Floors,
    scale: Scale,
    cli: Option<&Cli>,
) -> Res<()> {
    println!("\n5. Redis Cluster (3 masters) beside 1 plain Redis");
    // Both fresh, so neither carries the keys and history of the sections before.
    let single = RedisServer::try_start(&[])?;
    let cluster = RedisCluster::try_start(3, 0)?;
    println!(
        "  servers:    plain {}; cluster {}",
        single.port,
        cluster.describe()
    );
    let plain = single.url();
    let plain = plain.as_str();
    let seed = cluster.url();
    let explicit = format!("{seed}?cluster=true");
    // A lock the URL's node does not serve: the worst case, every request goes elsewhere.
    let name = (0..)
        .map(|i| format!("bench/cluster-{i}"))
        .find(|n| cluster.master_of_slot(slot_of_tag(format!("default:{n}").as_bytes())) != 0)
        .ok_or("no lock name off the first master")?;
    let marked = rt.block_on(async {
        let c = connect(std::slice::from_ref(&seed), None).await?;
        connect(&[plain.to_owned()], None)
            .await?
            .mark_initialized()
            .await?;
        Ok::<_, crate::BoxError>(c.mark_initialized().await?)
    })?;
    println!("  lock init:  {marked} masters marked");
    rt.block_on(uncontended(plain, &seed, &explicit, &name, floors, scale))?;
    rt.block_on(contended(plain, &explicit, scale))?;
    match cli {
        Some(cli) => cli_runs(cli, &cluster, plain, floors, scale),
        None => println!("  CLI: skipped (no tractatus binary, see above)"),
    }
    Ok(())
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// Library acquire+release, interleaved so that all three see the same machine load.
async fn uncontended(
    plain: &str,
    seed: &str,
    explicit: &str,
    name: &str,
    floors: &Floors,
    scale: Scale,
) -> Res<()> {
    let one = connect(&[plain.to_owned()], None).await?;
    let found = connect(&[seed.to_owned()], None).await?;
    let said = connect(&[explicit.to_owned()], None).await?;
    let plain_name = "bench/cluster-plain";
    for _ in 0..20 {
        acquire_release(&one, plain_name).await?;
        acquire_release(&found, name).await?;
        acquire_release(&said, name).await?;
    }
    let n = scale.count(500, 20);
    let budget = Budget::new(LOOP_BUDGET);
    let (mut s1, mut sf, mut ss, mut failures) =
        (Vec::new(), Vec::new(), Vec::new(), Failures::default());
    for i in 0..n {
        if budget.exhausted() {
            break;
        }
        // Each goes first in turn: whoever follows another's release pays for its wake-ups.
        let mut order = [
            (&one, plain_name, &mut s1),
            (&found, name, &mut sf),
            (&said, name, &mut ss),
        ];
        order.rotate_left(i % 3);
        for (c, lock, into) in order {
            match acquire_release(c, lock).await {
                Ok(d) => into.push(d),
                Err(e) => failures.add(e),
            }
        }
    }
    let (s1, sf, ss) = (Stats::new(s1), Stats::new(sf), Stats::new(ss));
    print_latency("acquire+release, 1 plain Redis", &s1, &[floors.ping]);
    print_latency("acquire+release, cluster (found out)", &sf, &[floors.ping]);
    print_latency(
        "acquire+release, cluster (?cluster=true)",
        &ss,
        &[floors.ping],
    );
    println!(
        "    cluster / plain: p50 {:.2}x found out, {:.2}x ?cluster=true; p99 {:.2}x, {:.2}x \
         (target: within 1.3x)",
        ratio(sf.p50(), s1.p50()),
        ratio(ss.p50(), s1.p50()),
        ratio(sf.p99(), s1.p99()),
        ratio(ss.p99(), s1.p99())
    );
    note_truncated("cluster vs plain", s1.n().min(sf.n()).min(ss.n()), n);
    failures.print("acquire+release");
    Ok(())
}

/// `THREADS` tasks, each its own coordinator, on one lock: plain Redis, then the cluster.
async fn contended(plain: &str, cluster: &str, scale: Scale) -> Res<()> {
    let rounds = scale.count(200, 10);
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for _ in 0..THREADS {
        one.push(connect(&[plain.to_owned()], None).await?);
        many.push(connect(&[cluster.to_owned()], None).await?);
    }
    let one = contend(one, "bench/cluster-contended-plain", rounds).await?;
    let many = contend(many, "bench/cluster-contended", rounds).await?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (label, r) in [("1 plain Redis", &one), ("cluster      ", &many)] {
        println!(
            "    contended, {THREADS} tasks, {label}: {:7.1} ops/s; acquire p50 {:6.2} ms, p99 \
             {:6.2} ms; overlaps: {}",
            r.ops_per_s,
            ms(r.stats.p50()),
            ms(r.stats.p99()),
            r.overlaps
        );
    }
    println!(
        "    cluster / plain, contended: throughput {:.2}x (target >= 0.77x), acquire p50 \
         {:.2}x",
        many.ops_per_s / one.ops_per_s.max(1e-9),
        ratio(many.stats.p50(), one.stats.p50())
    );
    Ok(())
}

/// The CLI, a process per call: uncontended `lock run -- true`, then `THREADS` processes at
/// once on one lock, on the plain Redis and on the cluster.
fn cli_runs(cli: &Cli, cluster: &RedisCluster, plain: &str, floors: &Floors, scale: Scale) {
    let repo = Repo::new();
    let dir = repo.path();
    let lock_run = |url: &str, lock: &str| {
        let mut c = cli.command(&dir, Some(url));
        c.args(["lock", "run", "--name", lock, "--", "true"]);
        c
    };
    // The first run writes the repository's namespace, which decides the locks' slots.
    let first = run_timed(&mut lock_run(plain, "bench-cli"), CHILD_LIMIT);
    if !first.ok() {
        println!("  CLI: first run failed ({}); skipping", first.describe());
        return;
    }
    let ns = repo.namespace();
    let Some(name) = (0..1000)
        .map(|i| format!("bench-cli-{i}"))
        .find(|n| cluster.master_of_slot(slot_of_tag(format!("{ns}:{n}").as_bytes())) != 0)
    else {
        println!("  CLI: no lock name off the first master; skipping");
        return;
    };
    let (seed, explicit) = (cluster.url(), format!("{}?cluster=true", cluster.url()));
    let (seed, explicit, name) = (seed.as_str(), explicit.as_str(), name.as_str());
    let n = scale.count(100, 10);
    let mut seq = Vec::new();
    for url in [plain, seed, explicit] {
        let budget = Budget::new(LOOP_BUDGET);
        let (stats, failures) = run_sequential(n, &budget, |_| {}, |_| lock_run(url, name));
        failures.print("CLI lock runs");
        seq.push(stats);
    }
    print_latency("CLI lock run, 1 plain Redis", &seq[0], &[floors.spawn]);
    print_latency(
        "CLI lock run, cluster (found out)",
        &seq[1],
        &[floors.spawn],
    );
    print_latency(
        "CLI lock run, cluster (?cluster=true)",
        &seq[2],
        &[floors.spawn],
    );
    println!(
        "    cluster / plain, a process per call: p50 {:.2}x found out, {:.2}x ?cluster=true \
         (target: within 1.3x)",
        ratio(seq[1].p50(), seq[0].p50()),
        ratio(seq[2].p50(), seq[0].p50())
    );
    let each = scale.count(25, 2);
    let one = run_parallel(THREADS, each, |_, _| lock_run(plain, "bench-cli-contended"));
    let many = run_parallel(THREADS, each, |_, _| lock_run(seed, name));
    let rate = |p: &crate::children::Parallel| p.stats.n() as f64 / p.wall.as_secs_f64().max(1e-9);
    println!(
        "    {THREADS} processes at once on one lock: plain {:.1} runs/s, cluster {:.1} runs/s \
         ({:.2}x); per-run p50 {:.1} ms vs {:.1} ms ({:.2}x)",
        rate(&one),
        rate(&many),
        rate(&many) / rate(&one).max(1e-9),
        one.stats.p50().as_secs_f64() * 1000.0,
        many.stats.p50().as_secs_f64() * 1000.0,
        ratio(many.stats.p50(), one.stats.p50())
    );
    one.failures.print("plain contended runs");
    many.failures.print("cluster contended runs");
}
