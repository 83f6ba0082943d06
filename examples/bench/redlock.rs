//! Section 4: Redlock at library level:
//! uncontended acquire+release on 5 masters against 1, with the fan-out floor, the script calls
//! per round and the fencing counters.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::runtime::Runtime;
use tractatus_lock::Coordinator;

use crate::contention::contended;
use crate::stats::{Budget, Failures, Floors, Scale, Stats, note_truncated, print_latency};
use crate::{LOOP_BUDGET, LockKeys, Res, acquire_release, connect};

pub(crate) fn section_redlock(
    rt: &Runtime,
    urls: &[String],
    floors: &Floors,
    scale: Scale,
) -> Res<()> {
    println!("\n4. Redlock (library)");
    rt.block_on(five_versus_one(urls, floors, scale))?;
    rt.block_on(contended(urls, scale))?;
    Ok(())
}

/// The fencing counter of lock `name` on each master, `-` where it never granted it.
async fn fence_counters(urls: &[String], name: &str) -> Res<String> {
    let key = LockKeys::new("default", name).fence;
    let mut shown = Vec::with_capacity(urls.len());
    for url in urls {
        let mut conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let v: Option<u64> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        shown.push(v.map_or_else(|| "-".to_owned(), |v| v.to_string()));
    }
    Ok(shown.join(", "))
}

/// Uncontended acquire+release on 5 masters and on 1, interleaved so that both see the same
/// machine load.
async fn five_versus_one(urls: &[String], floors: &Floors, scale: Scale) -> Res<()> {
    // One lock name per coordinator: master 0 serves both, and a shared name would leave its
    // fencing counter ahead of the other four, costing the 5-master grants a raise each time.
    const ONE: &str = "bench/rl-1";
    const FIVE: &str = "bench/rl-5";
    let one = connect(&urls[..1], None).await?;
    let five = connect(urls, None).await?;
    for _ in 0..20 {
        acquire_release(&one, ONE).await?;
        acquire_release(&five, FIVE).await?;
    }
    let n = scale.count(500, 20);
    let budget = Budget::new(LOOP_BUDGET);
    let (mut s1, mut s5, mut failures) = (Vec::new(), Vec::new(), Failures::default());
    for _ in 0..n {
        if budget.exhausted() {
            break;
        }
        match acquire_release(&one, ONE).await {
            Ok(d) => s1.push(d),
            Err(e) => failures.add(format!("1 master: {e}")),
        }
        match acquire_release(&five, FIVE).await {
            Ok(d) => s5.push(d),
            Err(e) => failures.add(format!("5 masters: {e}")),
        }
    }
    let (s1, s5) = (Stats::new(s1), Stats::new(s5));
    print_latency("acquire+release, 1 master", &s1, &[floors.ping]);
    print_latency("acquire+release, 5 masters", &s5, &[floors.ping]);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "    5 masters / 1 master: p50 {:.2}x, p99 {:.2}x (target: p50 within 1.5x)",
        ratio(s5.p50(), s1.p50()),
        ratio(s5.p99(), s1.p99())
    );
    let (f1, f5, f5_all) = fanout_floor(urls, n).await?;
    print_latency("  floor: PING to 1 master", &f1, &[floors.ping]);
    print_latency("  floor: PING to 5 at once, 3rd reply", &f5, &[floors.ping]);
    print_latency(
        "  floor: PING to 5 at once, 5th reply",
        &f5_all,
        &[floors.ping],
    );
    // The machine's share: a grant waits for the 3rd reply, a release for every one.
    let machine = ratio(f5.p50() + f5_all.p50(), f1.p50() * 2);
    println!(
        "    the machine's floor for 5 masters / 1: (3rd reply + 5th reply) / (2 PINGs) = \
         {machine:.2}x"
    );
    println!(
        "    the same fan-out as raw PINGs on this machine: 5 / 1 = p50 {:.2}x (5 servers and \
         the client share {} cores, so fan-out costs CPU here, not only network)",
        ratio(f5.p50(), f1.p50()),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    crate::targets::at_most(
        "5 masters / 1 master, uncontended acquire+release p50",
        format!(
            "{} / {}; the bare PING fan-out in the same run, a grant's (3rd reply) plus a \
             release's (5th) against 2 PINGs to one: {machine:.2}x",
            crate::stats::shown(s5.p50()),
            crate::stats::shown(s1.p50()),
        ),
        ratio(s5.p50(), s1.p50()),
        1.5,
    );
    let k = scale.count(100, 10);
    let (c1, us1) = script_calls_per_round(&one, &urls[..1], ONE, k).await?;
    let (c5, us5) = script_calls_per_round(&five, urls, FIVE, k).await?;
    println!(
        "    script calls (EVALSHA) per acquire+release, summed over the masters: 1 master \
         {c1:.1}, 5 masters {c5:.1} (2 per master would be grant + release)"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "    time Redis spent in those scripts per acquire+release, summed over the masters: 1 \
         master {us1:.0} µs, 5 masters {us5:.0} µs; the 5 share {cores} cores with the client \
         here, so that alone is at least {:.0} µs of the 5-master p50 (masters on machines of \
         their own run it side by side)",
        us5 / cores as f64
    );
    println!(
        "    fencing counter of that lock on each of the 5 masters (raised to the token handed \
         out): {}",
        fence_counters(urls, FIVE).await?
    );
    note_truncated("5 vs 1", s1.n().min(s5.n()), n);
    failures.print("acquire+release");
    Ok(())
}

/// Script calls (each one a request and its reply) the masters served per uncontended
/// acquire+release of `c`, and the microseconds Redis spent in them, from `INFO commandstats`.
/// Background work such as fire-and-forget calls gets 50 ms to land before the second reading.
async fn script_calls_per_round(
    c: &Coordinator,
    urls: &[String],
    name: &str,
    k: usize,
) -> Res<(f64, f64)> {
    let before = script_stats(urls).await?;
    for _ in 0..k {
        acquire_release(c, name).await?;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = script_stats(urls).await?;
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / k as f64;
    Ok((per(after.0, before.0), per(after.1, before.1)))
}

/// EVAL and EVALSHA calls served so far, summed over the masters. (`total_commands_processed`
/// would also count every `redis.call` made inside the scripts.)
pub(crate) async fn script_calls(urls: &[String]) -> Res<u64> {
    Ok(script_stats(urls).await?.0)
}

/// EVAL and EVALSHA calls served so far and the microseconds Redis spent in them (`INFO
/// commandstats`), summed over the masters.
async fn script_stats(urls: &[String]) -> Res<(u64, u64)> {
    let mut total = (0, 0);
    for url in urls {
        let mut conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await?;
        let field = |line: &str, name: &str| -> u64 {
            line.split(',')
                .find_map(|kv| {
                    kv.split_once(name)
                        .filter(|(k, _)| k.ends_with(':') || k.is_empty())
                })
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0)
        };
        for l in info
            .lines()
            .filter(|l| l.starts_with("cmdstat_eval:") || l.starts_with("cmdstat_evalsha:"))
        {
            total.0 += field(l, "calls=");
            total.1 += field(l, "usec=");
        }
    }
    Ok(total)
}

/// The machine's floor for a Redlock round: PING one master, and PING all masters at once
/// until a majority answered (the rest are awaited untimed). Interleaved, like the library run.
async fn fanout_floor(urls: &[String], n: usize) -> Res<(Stats, Stats, Stats)> {
    let mut conns = Vec::with_capacity(urls.len());
    for url in urls {
        conns.push(
            redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?,
        );
    }
    let need = urls.len() / 2 + 1;
    let (mut one, mut most, mut all) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n + 20 {
        let (t1, _) = majority_ping(&conns[..1], 1).await?;
        let (t5, t5_all) = majority_ping(&conns, need).await?;
        // The first 20 rounds warm up.
        if i >= 20 {
            one.push(t1);
            most.push(t5);
            all.push(t5_all);
        }
    }
    Ok((Stats::new(one), Stats::new(most), Stats::new(all)))
}

/// PING every connection at once; the time until `need` replies came back, and until all did.
async fn majority_ping(
    conns: &[redis::aio::MultiplexedConnection],
    need: usize,
) -> Res<(Duration, Duration)> {
    let start = Instant::now();
    let mut pending: FuturesUnordered<_> = conns
        .iter()
        .map(|c| {
            let mut c = c.clone();
            async move { redis::cmd("PING").query_async::<String>(&mut c).await }
        })
        .collect();
    let (mut got, mut at) = (0, None);
    while let Some(reply) = pending.next().await {
        reply?;
        got += 1;
        if got == need {
            at = Some(start.elapsed());
        }
    }
    let at = at.ok_or("fewer PING replies than a majority")?;
    Ok((at, start.elapsed()))
}
