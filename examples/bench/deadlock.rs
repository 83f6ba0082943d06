//! Section 6: deadlock detection (library, one Redis): what a caller that holds a lease pays
//! when it does not wait (nothing: no wait-for edge, no script), and how soon a cycle of two
//! waiters is found and broken, with the script calls it took.

use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tractatus_lock::{AcquireOptions, Coordinator};

use crate::redlock::script_calls;
use crate::stats::{Budget, Failures, Floors, Scale, Stats, note_truncated, print_latency};
use crate::{LOOP_BUDGET, LockKeys, Res, connect};

pub(crate) fn section_deadlock(rt: &Runtime, url: &str, floors: &Floors, scale: Scale) -> Res<()> {
    println!("\n6. Deadlock detection (library, one Redis)");
    rt.block_on(uncontended(url, floors, scale))?;
    rt.block_on(cycles(url, scale))?;
    Ok(())
}

/// Uncontended acquire+release holding nothing, and holding another lease: the same scripts.
async fn uncontended(url: &str, floors: &Floors, scale: Scale) -> Res<()> {
    let urls = [url.to_owned()];
    let c = connect(&urls, None).await?;
    let outer = c.try_acquire("bench/dl-outer").await?;
    let nested = AcquireOptions {
        holding: vec![outer.holding()],
        ..AcquireOptions::default()
    };
    let plain = AcquireOptions::default();
    let round = |opts: &AcquireOptions| {
        let (c, opts) = (c.clone(), opts.clone());
        async move {
            let t = Instant::now();
            c.acquire("bench/dl-inner", &opts).await?.release().await?;
            Ok::<_, tractatus_lock::Error>(t.elapsed())
        }
    };
    let n = scale.count(300, 20);
    let budget = Budget::new(LOOP_BUDGET);
    let (mut without, mut with, mut failures) = (Vec::new(), Vec::new(), Failures::default());
    let calls_before = script_calls(&urls).await?;
    for _ in 0..n {
        if budget.exhausted() {
            break;
        }
        match round(&plain).await {
            Ok(d) => without.push(d),
            Err(e) => failures.add(e),
        }
    }
    let calls_mid = script_calls(&urls).await?;
    for _ in 0..without.len() {
        match round(&nested).await {
            Ok(d) => with.push(d),
            Err(e) => failures.add(e),
        }
    }
    let calls_after = script_calls(&urls).await?;
    let (without, with) = (Stats::new(without), Stats::new(with));
    let per = |calls: u64, s: &Stats| calls as f64 / s.n().max(1) as f64;
    print_latency("acquire+release holding nothing", &without, &[floors.ping]);
    print_latency(
        "acquire+release holding another lease",
        &with,
        &[floors.ping],
    );
    println!(
        "    script calls per round: {:.2} holding nothing, {:.2} holding another lease \
         (no wait, so no wait-for edge and no walk)",
        per(calls_mid - calls_before, &without),
        per(calls_after - calls_mid, &with)
    );
    note_truncated("uncontended", without.n(), n);
    failures.print("acquire+release");
    outer.release().await?;
    Ok(())
}

/// Two waiters that each hold what the other waits for: time from the cycle closing (the
/// second wait starting) to the victim's error, and the script calls of the whole episode.
async fn cycles(url: &str, scale: Scale) -> Res<()> {
    let urls = [url.to_owned()];
    let (c1, c2) = (connect(&urls, None).await?, connect(&urls, None).await?);
    let n = scale.count(20, 5);
    let budget = Budget::new(LOOP_BUDGET);
    let (mut found, mut calls, mut failures) = (Vec::new(), Vec::new(), Failures::default());
    for _ in 0..n {
        if budget.exhausted() {
            break;
        }
        let before = script_calls(&urls).await?;
        match cycle(url, &c1, &c2).await {
            Ok(d) => found.push(d),
            Err(e) => failures.add(e),
        }
        calls.push(script_calls(&urls).await?.saturating_sub(before));
    }
    let found = Stats::new(found);
    print_latency("2-cycle: closed to victim's error", &found, &[]);
    let mean = calls.iter().sum::<u64>() as f64 / calls.len().max(1) as f64;
    println!(
        "    script calls per episode (both takes, both waits with their heartbeats' \
         record+walk, the victim's leave and log, the survivor's grant, all releases): {mean:.1}"
    );
    note_truncated("2-cycles", found.n(), n);
    failures.print("2-cycle");
    Ok(())
}

/// Until a waiter is registered in `name`'s queue (bounded: 2 s).
async fn queued(url: &str, name: &str) -> Res<()> {
    let key = LockKeys::new("default", name).waiters;
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let n: u64 = redis::cmd("ZCARD").arg(&key).query_async(&mut conn).await?;
        if n > 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(format!("no waiter queued for {name} within 2 s").into())
}

async fn cycle(url: &str, c1: &Coordinator, c2: &Coordinator) -> Res<Duration> {
    let a = c1.try_acquire("bench/dl-a").await?;
    let b = c2.try_acquire("bench/dl-b").await?;
    let wait = |c: &Coordinator, name: &'static str, held: &tractatus_lock::Lease| {
        let c = c.clone();
        let opts = AcquireOptions {
            holding: vec![held.holding()],
            ..AcquireOptions::wait(Duration::from_secs(10))
        };
        tokio::spawn(async move {
            let got = c.acquire(name, &opts).await;
            (got, Instant::now())
        })
    };
    let first = wait(c1, "bench/dl-b", &a);
    // The first waiter queues before the second closes the cycle.
    queued(url, "bench/dl-b").await?;
    let closed = Instant::now();
    let second = wait(c2, "bench/dl-a", &b);
    let (mut first, mut second) = (first, second);
    // The victim ends first; its side lets go, and then the other gets its lock.
    let (victim_is_first, (got, at)) = tokio::select! {
        r = &mut first => (true, r?),
        r = &mut second => (false, r?),
    };
    let took = match got {
        Err(e) if e.is_deadlock() => at.duration_since(closed),
        Err(e) => return Err(e.into()),
        Ok(_) => return Err("a wait in the cycle was granted before anyone gave up".into()),
    };
    let (victim_held, other, other_held) = if victim_is_first {
        (a, second, b)
    } else {
        (b, first, a)
    };
    victim_held.release().await?;
    let (got, _) = other.await?;
    got?.release().await?;
    other_held.release().await?;
    Ok(took)
}
