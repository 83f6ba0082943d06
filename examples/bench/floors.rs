//! Section 1: the floors every other figure is compared with: a Redis PING round trip, a local
//! flock lock+unlock, and spawning `/bin/true`.

use std::process::Command;
use std::time::Instant;

use tokio::runtime::Runtime;

use crate::children::run_sequential;
use crate::stats::{Budget, Floor, Floors, Scale, Stats, print_latency};
use crate::{LOOP_BUDGET, Res};

pub(crate) fn section_floors(rt: &Runtime, url: &str, scale: Scale) -> Res<Floors> {
    println!("\n1. Floors");
    let n_ping = scale.count(2000, 20);
    let ping = rt.block_on(ping_floor(url, n_ping))?;
    print_latency("Redis PING round trip (async, sequential)", &ping, &[]);

    let flock = flock_floor(scale.count(2000, 20))?;
    print_latency("local flock lock+unlock (std File::lock)", &flock, &[]);

    let budget = Budget::new(LOOP_BUDGET);
    let (spawn, failures) = run_sequential(
        scale.count(100, 10),
        &budget,
        |_| {},
        |_| Command::new("/bin/true"),
    );
    print_latency("process spawn: /bin/true to exit", &spawn, &[]);
    failures.print("spawns of /bin/true");

    Ok(Floors {
        ping: Floor {
            name: "PING",
            p50: ping.p50(),
        },
        flock: Floor {
            name: "flock",
            p50: flock.p50(),
        },
        spawn: Floor {
            name: "spawn",
            p50: spawn.p50(),
        },
    })
}

async fn ping_floor(url: &str, n: usize) -> Res<Stats> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    // Warm up: the first round trips pay for cold caches and lazy setup.
    for _ in 0..50 {
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        samples.push(t.elapsed());
    }
    Ok(Stats::new(samples))
}

fn flock_floor(n: usize) -> Res<Stats> {
    let file = tempfile::tempfile()?;
    for _ in 0..50 {
        file.lock()?;
        file.unlock()?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        file.lock()?;
        file.unlock()?;
        samples.push(t.elapsed());
    }
    Ok(Stats::new(samples))
}
