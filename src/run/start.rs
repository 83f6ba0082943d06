//! Before `lock run`'s command starts: its group, started while the leases are still being
//! acquired (the guard's start, an exec of this program, is then over before the lease begins),
//! and, once they are granted, the wait for an earlier holder's group on this host and the
//! group's record with the leases.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::Result;
use crate::group::Group;
use crate::lease::Lease;

/// The command's group, started while its leases are still to be acquired (see
/// [`start_group`]): the guard's start is then over before the lease is, instead of inside it.
pub struct StartedGroup {
    pub(super) group: Group,
    pub(super) grace: Duration,
    pub(super) locks: Vec<(String, String)>,
}

impl StartedGroup {
    /// The leases were not granted: let the guard go.
    pub async fn abandon(self) {
        self.group.finish().await;
    }
}

/// Start the group a `lock run` of `names` on `coordinator` will run its command in, before
/// acquiring them; hand it to [`supervise_started`](super::supervise_started). Its guard is idle until then: the next
/// holder of these locks does not take it for an earlier holder's.
pub async fn start_group(
    coordinator: &crate::Coordinator,
    names: &[String],
    kill_grace: Duration,
) -> Result<StartedGroup> {
    let grace = guard_grace(Some(coordinator.config().ttl), kill_grace);
    let scope = coordinator.guard_scope();
    let locks: Vec<(String, String)> = names.iter().map(|n| (scope.clone(), n.clone())).collect();
    let borrowed: Vec<(&str, &str)> = locks
        .iter()
        .map(|(s, n)| (s.as_str(), n.as_str()))
        .collect();
    let group = Group::start(grace, &crate::holder::this_host(), &borrowed, true).await?;
    Ok(StartedGroup {
        group,
        grace,
        locks,
    })
}

/// Should we die, the guard ends the group within a third of the TTL: well before a lease
/// renewed a third of a TTL ago runs out.
pub(super) fn guard_grace(ttl: Option<Duration>, kill_grace: Duration) -> Duration {
    ttl.map_or(kill_grace, |t| (t / 3).min(kill_grace))
}

/// Before the command starts: an earlier holder's group on this host is waited for (its lease
/// expired while it ran: the grant went over it), and the group is recorded with the leases.
pub(super) async fn prepare(
    leases: &[Lease],
    group: &Group,
    host: &str,
    locks: &[(&str, &str)],
    kill_grace: Duration,
) -> Result<()> {
    // Recorded while we look: the record only names our group for a same-host takeover, as
    // true now as after the look, and its round trip to the coordinator no longer waits for
    // the look (polled first, so the requests are out before the look begins).
    let record = futures_util::future::try_join_all(
        leases
            .iter()
            .filter(|l| !l.is_joined())
            .map(|l| l.record_group(group.pgid(), group.start_ticks())),
    );
    let earlier_gone = async {
        let started = Instant::now();
        loop {
            let earlier = crate::group::guards_of(host, locks, group.pgid());
            if earlier.is_empty() {
                return Ok(());
            }
            for l in leases {
                l.check_valid()?;
            }
            // Its lease is over: after the grace it gets no more time.
            if started.elapsed() >= kill_grace {
                for pgid in &earlier {
                    crate::group::kill_group(*pgid);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    futures_util::future::try_join(record, earlier_gone)
        .await
        .map(|_| ())
}
