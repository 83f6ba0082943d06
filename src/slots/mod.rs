//! Slots: a counting semaphore made of leases ([`Coordinator::acquire_slot`], `lock run
//! --slots N`). Slot `i` of set `name` is a lock of its own, `name#i` (see
//! [`crate::keys::slot_lock_name`]): its own keys and hash tag, its own fencing counter, its
//! own holder record, renewal, takeover and process-group guard, exactly as any lock. Holding
//! one of N slots is holding one of these N locks.
//!
//! Taking a slot tries every slot once without waiting, from a random one (so waiters do not
//! all press on slot 0). When all are held it subscribes to every slot's release channel, then
//! tries them all again (a release between the two tries is not missed), then sleeps until a
//! release or eviction of some slot (it then tries that slot), or the earliest end of a
//! holder's lease (it then tries them all); see `wait`. A holder on this host can die without
//! a word (SIGKILL): while waiting, the holders seen on this host are watched in `/proc` every
//! 20 ms (no Redis call), and when one's process is gone and then its command's group too, the
//! slots are tried again at once and the gone holder is taken over, as any lock's. Slot
//! waiters do not queue: the woken ones race for the freed slot, so there is no first-come
//! order among them. While it waits, a waiter holds one pub/sub connection per slot and Redis.
//!
//! With local locks the wait is one blocking `flock` per slot (see `local`): the kernel wakes
//! the first slot let go.
//!
//! N belongs to each caller, not to the set: a run with N slots uses slots `0..N`, whatever N
//! others use, so two runs with different N never share a slot's lease, and the set admits at
//! most the largest N at once. `--slots 1` is slot 0 alone: an exclusive lock, but not the
//! plain lock `name` (which is another lock).

use std::time::Duration;

use tokio::time::Instant;

use crate::backend::GrantRequest;
use crate::clock::far_deadline;
use crate::config::check_lock_name;
use crate::coordinator::Backend;
use crate::error::{Error, Result};
use crate::holder::HolderInfo;
use crate::keys::{LockKeys, slot_lock_name};
use crate::quorum::{Attempt, Quorum};
use crate::{AcquireOptions, Coordinator, Lease};

#[cfg(test)]
mod fake;
mod wait;

/// Most slots one set may have: every slot a waiter watches costs it a subscription.
pub const MAX_SLOTS: u32 = 1024;

/// How often a waiter looks in `/proc` at the slots' holders on this host: such a holder may
/// die by SIGKILL, and nobody announces that. While a holder's process runs, a look reads one
/// `/proc` file; once it is gone and its group winds down, a look scans the processes.
const SAME_HOST_LOOK: Duration = Duration::from_millis(20);

/// How soon the slots are looked at again while some node's release channel is not listened
/// to (it did not answer the subscription).
const UNHEARD_LOOK: Duration = Duration::from_millis(250);

/// Check a slot count: 1 to [`MAX_SLOTS`].
pub fn check_slots(slots: u32) -> Result<()> {
    if slots == 0 || slots > MAX_SLOTS {
        return Err(Error::usage(format!(
            "bad slot count {slots}: use 1 to {MAX_SLOTS}"
        )));
    }
    Ok(())
}

/// Check a name `lock break` may take: a lock name, or a slot's (`name#i`).
pub fn check_lock_or_slot_name(name: &str) -> Result<()> {
    match crate::keys::parse_slot_lock_name(name) {
        Some((set, _)) => check_lock_name(set),
        None => check_lock_name(name),
    }
}

/// A number to start trying the slots at: random, so waiters spread over the slots.
fn random_start(slots: u32) -> u32 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(slots.max(1))) as u32
}

/// The work of [`Coordinator::acquire_slot`].
pub(crate) async fn acquire_slot(
    coordinator: &Coordinator,
    name: &str,
    slots: u32,
    opts: &AcquireOptions,
) -> Result<(u32, Lease)> {
    check_lock_name(name)?;
    check_slots(slots)?;
    let inherited = crate::join::Capability::inherited();
    if !inherited.is_empty() {
        for i in 0..slots {
            let slot = slot_lock_name(name, i);
            if let Some(joined) = coordinator.join_within(&slot, inherited, opts.wait).await? {
                return Ok((i, joined));
            }
        }
    }
    let deadline = far_deadline(Instant::now(), opts.wait);
    let start = random_start(slots);
    let got = match &coordinator.inner.backend {
        Backend::Local(local) => {
            let names: Vec<String> = (0..slots).map(|i| slot_lock_name(name, i)).collect();
            let id = &coordinator.inner.identity;
            let start = start as usize;
            local
                .acquire_any(name, &names, start, id, opts, deadline)
                .await
                .map(|(i, guard)| {
                    let lease = Lease::local(coordinator.clone(), &names[i], guard);
                    (i as u32, lease)
                })
        }
        Backend::Redis(quorum) => {
            wait::acquire_slot_redis(coordinator, quorum, name, slots, start, opts, deadline).await
        }
    };
    if let (Ok(_), Some(p)) = (&got, &opts.progress) {
        p.send_replace(None);
    }
    got.map_err(|e| match e {
        Error::Timeout {
            name,
            waited_ms,
            holder,
            note,
        } => {
            let all = format!("all {slots} slots held");
            Error::Timeout {
                name,
                waited_ms,
                holder,
                note: Some(note.map_or_else(|| all.clone(), |n| format!("{all}; {n}"))),
            }
        }
        e => e,
    })
}

/// One try at one slot, taking over a holder gone from this host.
async fn try_slot(
    coordinator: &Coordinator,
    quorum: &Quorum,
    lock: &str,
    keys: &LockKeys,
) -> std::result::Result<Lease, Tried> {
    let cfg = &coordinator.inner.config;
    // A takeover makes room; bounded, should another process take the slot each time.
    for _ in 0..3 {
        let secret = crate::join::new_secret();
        let req = GrantRequest {
            keys: keys.clone(),
            owner: uuid::Uuid::new_v4().simple().to_string(),
            join_hash: crate::join::secret_hash(&secret),
            ttl: cfg.ttl,
            identity: coordinator.inner.identity.clone(),
            // Slot waiters do not queue: a queue per slot would hold each slot for the
            // waiters that took another one meanwhile.
            waiter: None,
            waiter_ttl: Duration::ZERO,
            place: 0,
            log_cap: cfg.log_cap,
            quarantine: cfg.quarantine,
            floor: 0,
        };
        match quorum.grant(&req).await {
            Attempt::Granted { token, valid_until } => {
                return Ok(Lease::redis(
                    coordinator.clone(),
                    lock,
                    keys.clone(),
                    req.owner,
                    secret,
                    token,
                    valid_until,
                ));
            }
            Attempt::Held { pttl, holder, .. } => {
                if let Some(h) = &holder
                    && h.is_gone_from(&coordinator.inner.identity)
                    && coordinator.evict(quorum, keys, &h.owner, "takeover").await > 0
                {
                    continue;
                }
                return Err(Tried::Held { pttl, holder });
            }
            Attempt::Split { holder } => return Err(Tried::Split { holder }),
            Attempt::Quarantined { left, nodes } => {
                return Err(Tried::Quarantined { left, nodes });
            }
            Attempt::Unavailable { reachable, causes } => {
                return Err(Tried::Unavailable(Error::Unavailable {
                    reachable,
                    total: quorum.nodes().len(),
                    needed: quorum.needed(),
                    causes,
                }));
            }
        }
    }
    Err(Tried::Split { holder: None })
}

/// Why one try at one slot did not take it.
enum Tried {
    Held {
        pttl: Duration,
        holder: Option<HolderInfo>,
    },
    Split {
        holder: Option<HolderInfo>,
    },
    Quarantined {
        left: Duration,
        nodes: usize,
    },
    Unavailable(Error),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::{Config, Identity};

    fn local(dir: &std::path::Path, who: &str) -> Coordinator {
        Coordinator::local(Config::new(vec![]), Identity::current(who), dir.to_owned()).unwrap()
    }

    #[tokio::test]
    async fn local_slots_are_shared_out_one_each_and_the_next_waits_for_a_release() {
        let tmp = tempfile::tempdir().unwrap();
        let c = local(tmp.path(), "a");
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(
                c.acquire_slot("db", 3, &AcquireOptions::default())
                    .await
                    .unwrap(),
            );
        }
        let mut got: Vec<u32> = held.iter().map(|(i, _)| *i).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
        assert!(
            held.iter()
                .all(|(i, l)| l.name() == slot_lock_name("db", *i))
        );
        let err = c
            .acquire_slot("db", 3, &AcquireOptions::default())
            .await
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), 75, "{err}");
        let waiter = tokio::spawn({
            let c = c.clone();
            async move {
                c.acquire_slot("db", 3, &AcquireOptions::wait(Duration::from_secs(20)))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        let (freed, lease) = held.remove(1);
        lease.release().await.unwrap();
        let (i, lease) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("not woken by the release")
            .unwrap()
            .unwrap();
        assert_eq!(i, freed);
        lease.release().await.unwrap();
        for (_, l) in held {
            l.release().await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_local_waiter_on_more_slots_than_tokio_has_blocking_threads_hears_every_slot() {
        // 600 slots held, one waiter: the release of the last one must wake it (a wait queued
        // behind tokio's 512 blocking threads would never run).
        let tmp = tempfile::tempdir().unwrap();
        let c = local(tmp.path(), "a");
        let n = 600;
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(
                c.acquire_slot("db", n, &AcquireOptions::default())
                    .await
                    .unwrap(),
            );
        }
        let waiter = tokio::spawn({
            let c = c.clone();
            async move {
                c.acquire_slot("db", n, &AcquireOptions::wait(Duration::from_secs(20)))
                    .await
            }
        });
        // Time for the waiter to find every slot held and start its waits (nothing to await:
        // released earlier, the slot would be taken by its first round and prove nothing).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let last = held.iter().position(|(i, _)| *i == n - 1).unwrap();
        held.remove(last).1.release().await.unwrap();
        let (i, lease) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("not woken by the release of the last slot")
            .unwrap()
            .unwrap();
        assert_eq!(i, n - 1);
        drop(lease);
        drop(held);
    }

    fn slot_keys(c: &Coordinator, i: u32) -> LockKeys {
        LockKeys::new(&c.config().namespace, &slot_lock_name("db", i))
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_wakes_a_waiter_to_take_that_slot_trying_no_other() {
        let (c, fake) = fake::coordinator(Duration::from_secs(10));
        for i in 0..4 {
            fake.hold(&slot_keys(&c, i), &format!("o{i}"), Duration::from_secs(60));
        }
        let start = Instant::now();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move {
                let got = c
                    .acquire_slot("db", 4, &AcquireOptions::wait(Duration::from_secs(120)))
                    .await;
                (got, Instant::now())
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before: Vec<usize> = (0..4).map(|i| fake.grants(&slot_keys(&c, i))).collect();
        // It tried every slot, subscribed, and tried every slot again.
        assert_eq!(before, [2, 2, 2, 2]);
        assert!(fake.release_now(&slot_keys(&c, 2), "o2"));
        let (got, at) = waiter.await.unwrap();
        let (i, lease) = got.unwrap();
        assert_eq!((i, lease.name()), (2, "db#2"));
        assert_eq!(
            at - start,
            Duration::from_secs(1),
            "not taken at the release"
        );
        let after: Vec<usize> = (0..4).map(|i| fake.grants(&slot_keys(&c, i))).collect();
        assert_eq!(
            after,
            [2, 2, 3, 2],
            "a release made the waiter try other slots"
        );
        lease.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_never_released_is_taken_when_its_lease_ends() {
        let (c, fake) = fake::coordinator(Duration::from_secs(10));
        for i in 0..3 {
            let ttl = Duration::from_secs(if i == 1 { 3 } else { 60 });
            fake.hold(&slot_keys(&c, i), &format!("o{i}"), ttl);
        }
        let start = Instant::now();
        let (i, lease) = c
            .acquire_slot("db", 3, &AcquireOptions::wait(Duration::from_secs(30)))
            .await
            .unwrap();
        let waited = start.elapsed();
        assert_eq!(i, 1);
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_millis(3010),
            "{waited:?}"
        );
        lease.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_set_times_out_at_the_wait_saying_every_slot_is_held() {
        let (c, fake) = fake::coordinator(Duration::from_secs(10));
        for i in 0..2 {
            fake.hold(&slot_keys(&c, i), &format!("o{i}"), Duration::from_secs(60));
        }
        let start = Instant::now();
        let err = c
            .acquire_slot("db", 2, &AcquireOptions::wait(Duration::from_secs(5)))
            .await
            .err()
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(err.exit_code(), 75);
        let text = err.to_string();
        assert!(
            text.contains("'db'") && text.contains("all 2 slots held"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_bad_slot_count_or_name_is_a_usage_error() {
        let tmp = tempfile::tempdir().unwrap();
        let c = local(tmp.path(), "a");
        for (name, n) in [("db", 0), ("db", MAX_SLOTS + 1), ("db#1", 2), ("", 2)] {
            let err = c
                .acquire_slot(name, n, &AcquireOptions::default())
                .await
                .err()
                .unwrap();
            assert_eq!(err.exit_code(), 64, "{name} {n}: {err}");
        }
        assert!(check_lock_or_slot_name("db#3").is_ok());
        assert!(check_lock_or_slot_name("db#x").is_err());
    }
}
