//! The acquire/wait loop: try the quorum, and while the lock is held wait in line (a queue every
//! node orders alike, kept with a heartbeat; see `lua/grant.lua`) for a release that names us
//! (pub/sub), the holder's TTL, or a short jitter after a split vote; take over a holder on
//! this host whose process is gone, and take a waiter ahead of us on this host whose process is
//! gone out of the line; end a late grant of one of our own failed attempts; wait out a restart
//! quarantine (keeping our place in line); ride out a coordinator that
//! stops answering (reconnect, resubscribe) until the wait runs out; leave the waiter set when
//! giving up.
//!
//! Beside it: `give_up.rs` (a wait dropped midway leaves nothing behind) and `wake.rs` (the
//! release subscriptions and the pauses between attempts).

use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{Eviction, GrantRequest, WAITER_TTL};
use crate::clock::{Stamp, epoch_micros, far_deadline};
use crate::config::check_lock_name;
use crate::coordinator::{Backend, Coordinator};
use crate::error::{Error, Result};
use crate::handoff::handed_validity;
use crate::holder::HolderInfo;
use crate::keys::LockKeys;
use crate::lease::Lease;
use crate::options::{AcquireOptions, InTheWay};
use crate::quorum::{Attempt, Quorum, trace};

mod give_up;
mod notes;
mod wake;

use give_up::GiveUp;
use notes::first_in_line_note;
pub(crate) use notes::quarantine_note;
use wake::{Heard, Listening, RECONNECT_MAX, SPLIT_MAX, Wake, reconnect_backoff, split_backoff};

/// The work of [`Coordinator::try_acquire`].
pub(crate) async fn try_acquire(coordinator: &Coordinator, name: &str) -> Result<Lease> {
    coordinator.acquire(name, &AcquireOptions::default()).await
}

/// The work of [`Coordinator::acquire`].
pub(crate) async fn acquire(
    coordinator: &Coordinator,
    name: &str,
    opts: &AcquireOptions,
) -> Result<Lease> {
    check_lock_name(name)?;
    let inherited = crate::join::Capability::inherited();
    if !inherited.is_empty()
        && let Some(joined) = coordinator.join_within(name, inherited, opts.wait).await?
    {
        return Ok(joined);
    }
    let deadline = far_deadline(Instant::now(), opts.wait);
    let got = match &coordinator.inner.backend {
        Backend::Local(local) => local
            .acquire(name, &coordinator.inner.identity, opts, deadline)
            .await
            .map(|guard| Lease::local(coordinator.clone(), name, guard)),
        Backend::Redis(quorum) => acquire_redis(coordinator, quorum, name, opts, deadline).await,
    };
    if let (Ok(_), Some(p)) = (&got, &opts.progress) {
        // Nobody is in the way any more: feedback about a holder would be stale.
        p.send_replace(None);
    }
    got
}

async fn acquire_redis(
    coordinator: &Coordinator,
    quorum: &Quorum,
    name: &str,
    opts: &AcquireOptions,
    deadline: Instant,
) -> Result<Lease> {
    let cfg = &coordinator.inner.config;
    let started = Instant::now();
    let keys = LockKeys::new(&cfg.namespace, name);
    let waiter_id = uuid::Uuid::new_v4().simple().to_string();
    let mut wake = Wake::default();
    let mut last_holder: Option<HolderInfo> = None;
    let mut note: Option<String> = None;
    // Set while the last attempt found no quorum: what to report if the wait runs out so.
    let mut unreachable: Option<Error> = None;
    let mut jitter = split_backoff();
    let mut reconnect = reconnect_backoff();
    // A caller that will wait joins the queue with its first attempt, at the time it first
    // asked (see `lua/grant.lua`); one that will not wait never queues (a place it left
    // behind would hold the line up until it lapsed).
    let queue_me = !opts.wait.is_zero();
    let place = epoch_micros();
    let mut give_up = GiveUp::new(coordinator, &keys, &waiter_id);
    // Issue 24 hook: deadlock detection (src/deadlock). `None` unless the caller holds leases.
    let mut deadlock = coordinator.deadlock_watch(name, &waiter_id, place, opts);
    // The waiter first in line as the last refusal named it, and the ones we took out of
    // the line because their process is gone (each once: a node that cannot be told must
    // not make us spin).
    let mut head: Option<Box<HolderInfo>> = None;
    let mut removed: Vec<String> = Vec::new();
    // The owner id (and lease secret) of our attempts, kept while the attempts are refused:
    // it is also the one registered with our place in line, under which a release hands us
    // the lease (see `crate::handoff`). A new one after an attempt whose votes were undone.
    let mut ours: Option<(String, String)> = None;
    // The highest token the nodes that handed `ours` the lease named since the last attempt.
    let mut floor = 0;
    loop {
        let (owner, secret) = ours
            .get_or_insert_with(|| {
                (
                    uuid::Uuid::new_v4().simple().to_string(),
                    crate::join::new_secret(),
                )
            })
            .clone();
        let req = GrantRequest {
            keys: keys.clone(),
            owner,
            join_hash: crate::join::secret_hash(&secret),
            ttl: cfg.ttl,
            identity: coordinator.inner.identity.clone(),
            waiter: (queue_me || wake.registered).then(|| waiter_id.clone()),
            waiter_ttl: WAITER_TTL,
            place,
            log_cap: cfg.log_cap,
            // One Redis forgets as a Redlock master does: the same quarantine for both.
            quarantine: cfg.quarantine,
            // At least what a hand-off named, and over several masters the client's own
            // proposal (`crate::quorum::token_proposal`): its masters then mint one token and
            // the grant needs no raise round trip. (Taken out once for costing 3 masters under
            // contention; with the 3-master stall fixed it no longer does: 0.65-0.90x with it
            // against 0.63-0.75x without, alternating in one run, 2026-12-05.)
            floor: std::mem::take(&mut floor)
                .max(crate::quorum::token_proposal(quorum.nodes().len())),
        };
        // How long to wait before the next attempt, and whether a release event may cut it
        // short (not after a split vote: the other contenders' releases would wake everyone
        // at once and split the vote again).
        // Calls that came in meanwhile are answered by this attempt: left in the stream,
        // they would count towards the next wait and make us try before a majority released.
        wake.drain();
        give_up.attempting(&req);
        let sent = Stamp::now();
        let attempt = quorum.grant(&req).await;
        // Set when the trace is on: the attempt's outcome, completed with the pause below.
        let traced = trace::on().then(|| {
            format!(
                "wait {} at {}ms: attempt {} took {}ms: {}",
                trace::short(&waiter_id),
                started.elapsed().as_millis(),
                trace::short(&req.owner),
                sent.elapsed().as_millis(),
                trace::outcome(&attempt)
            )
        });
        give_up.answered(matches!(
            attempt,
            Attempt::Unavailable { .. } | Attempt::Split { .. } | Attempt::Quarantined { .. }
        ));
        if !matches!(attempt, Attempt::Held { .. }) {
            ours = None;
        }
        // The lease was free and another waiter first in line (`head`), the attempt said.
        let mut behind = false;
        // What stood in the way besides a holder, as the last attempt says (a quarantine
        // that ended since is no reason to give).
        if !matches!(attempt, Attempt::Quarantined { .. }) {
            note = None;
        }
        // A refusal: the token of the lease it named (0 if none), which a hand-off to us since
        // must exceed (see `Listening::box_above`).
        let refused_below = match &attempt {
            Attempt::Held { holder, .. } => Some(holder.as_ref().map_or(0, |h| h.token)),
            _ => None,
        };
        if !matches!(
            attempt,
            Attempt::Split { .. } | Attempt::Held { undone: true, .. }
        ) {
            // The back-off after a split grows only over splits in a row.
            jitter = split_backoff();
        }
        if !matches!(attempt, Attempt::Unavailable { .. }) {
            unreachable = None;
            reconnect = reconnect_backoff();
        }
        let (pause, wake_early) = match attempt {
            Attempt::Granted { token, valid_until } => {
                if req.waiter.is_some() && quorum.nodes().len() > 1 {
                    // A node that refused (it had not seen the release yet) still has us
                    // first in line and would grant nobody else until our place lapsed.
                    let (c, id) = (coordinator.clone(), waiter_id.clone());
                    let keys = keys.clone();
                    tokio::spawn(async move {
                        if let Backend::Redis(q) = &c.inner.backend {
                            q.leave(&keys, &id).await;
                        }
                    });
                }
                give_up.disarm();
                return Ok(Lease::redis(
                    coordinator.clone(),
                    name,
                    keys,
                    req.owner,
                    secret,
                    token,
                    valid_until,
                ));
            }
            Attempt::Unavailable { reachable, causes } => {
                // A blip (a restart, a failover) is ridden out until the wait runs out; the
                // subscriptions died with the connections, so they are made again.
                unreachable = Some(Error::Unavailable {
                    reachable,
                    total: quorum.nodes().len(),
                    needed: quorum.needed(),
                    causes,
                });
                wake.lost_all();
                (reconnect.next().unwrap_or(RECONNECT_MAX), false)
            }
            Attempt::Held {
                pttl,
                holder,
                head: first,
                undone,
            } => {
                head = first;
                behind = holder.is_none() && head.is_some();
                if let Some(w) = &head
                    && w.owner != waiter_id
                    && !removed.contains(&w.owner)
                    && w.is_gone_from(&coordinator.inner.identity)
                {
                    // A waiter on this host killed while queued: out of the line now, not
                    // when its registration lapses. While the lease is held, that is all;
                    // when it is free, we may be next.
                    removed.push(w.owner.clone());
                    // Within one node timeout: a silent node must not hold the wait up (the
                    // place lapses there by itself).
                    let _ =
                        tokio::time::timeout(cfg.node_timeout, quorum.leave(&keys, &w.owner)).await;
                    if let Some(t) = &traced {
                        trace::line(format_args!("{t}; took gone head out of line"));
                    }
                    if holder.as_ref().is_none_or(|h| h.owner.is_empty()) {
                        continue;
                    }
                }
                if let Some(h) = &holder
                    && give_up.abandoned(&h.owner)
                {
                    // A grant of an attempt of ours that was given up (a node answered too
                    // late) landed after its release: end it, rather than wait out our own
                    // orphan's TTL.
                    quorum.release(&keys, &h.owner, cfg.log_cap).await;
                    if let Some(t) = &traced {
                        trace::line(format_args!("{t}; ended our abandoned grant"));
                    }
                    continue;
                }
                if let Some(h) = &holder
                    && h.is_gone_from(&coordinator.inner.identity)
                    && coordinator.evict(quorum, &keys, &h.owner, "takeover").await > 0
                {
                    if let Some(t) = &traced {
                        trace::line(format_args!("{t}; took over a gone holder"));
                    }
                    continue;
                }
                // Issue 24 hook: a confirmed cycle of waiters through us, us its victim.
                if let Some(w) = deadlock.as_mut()
                    && let Some(e) = w.check(coordinator, quorum).await
                {
                    give_up.disarm();
                    // Leave the line, and end what a release may have handed us meanwhile
                    // (it would hold the lock up for its probation): within one node timeout,
                    // as every end of a wait (our place lapses by itself on a silent node).
                    let leaving = async {
                        quorum.leave(&keys, &waiter_id).await;
                        quorum.release(&keys, &req.owner, cfg.log_cap).await;
                    };
                    let _ = tokio::time::timeout(cfg.node_timeout, leaving).await;
                    return Err(e);
                }
                // Its process gone but its command's group still running: look again
                // soon, as the group may end well before the lease.
                let soon = holder
                    .as_ref()
                    .is_some_and(|h| h.is_winding_down(&coordinator.inner.identity));
                last_holder = holder.or(last_holder);
                // Wake a little after the holder's lease runs out, in case it never releases;
                // while queued, sooner: each attempt keeps our place in line alive.
                let mut pause = pttl + Duration::from_millis(1);
                if soon {
                    pause = pause.min(Duration::from_millis(50));
                }
                if wake.registered {
                    pause = pause.min(HEARTBEAT);
                }
                if undone {
                    // A node had granted us (free there, and we first in line) before the
                    // others refused; undoing it took us out of its line, and its undo
                    // called the next waiter there, who cannot go on one call. Waiting for
                    // calls here left every waiter asleep until the heartbeat, 200 ms
                    // and more with 8 tasks on 3 masters (2026-12-05): try again soon,
                    // which puts us back in line there too.
                    pause = pause.min(jitter.next().unwrap_or(SPLIT_MAX));
                }
                (pause, true)
            }
            Attempt::Split { holder } => {
                last_holder = holder.or(last_holder);
                (jitter.next().unwrap_or(Duration::from_millis(5)), false)
            }
            Attempt::Quarantined { left, nodes } => {
                // Retrying sooner would only burn tokens and audit entries on the others.
                note = Some(quarantine_note(quorum.nodes().len(), nodes, left));
                (left + Duration::from_millis(1), false)
            }
        };
        if let Some(t) = traced {
            trace::line(format_args!(
                "{t}; pause {}ms{}",
                pause.as_millis(),
                if wake_early {
                    " (a call may cut it)"
                } else {
                    ""
                }
            ));
        }
        let first_in_line = head.as_deref().filter(|_| behind);
        if let Some(p) = &opts.progress {
            p.send_replace(match first_in_line {
                Some(w) => Some(InTheWay::FirstInLine(w.clone())),
                None => last_holder.clone().map(InTheWay::Holder),
            });
        }
        let now = Instant::now();
        if now >= deadline {
            give_up.disarm();
            if queue_me || wake.registered {
                // We queued: leave, so nobody waits behind us and `lock status` stops
                // counting us; then end what a release may have handed us meanwhile. Within
                // one node timeout: a silent node would otherwise keep the wait past its end
                // (our place there lapses by itself, and its lease's probation ends).
                let leaving = async {
                    quorum.leave(&keys, &waiter_id).await;
                    if ours.is_some() {
                        quorum.release(&keys, &req.owner, cfg.log_cap).await;
                    }
                };
                let _ = tokio::time::timeout(cfg.node_timeout, leaving).await;
            }
            if trace::on() {
                trace::line(format_args!(
                    "wait {} gave up at {}ms (left the line by {}ms)",
                    trace::short(&waiter_id),
                    now.duration_since(started).as_millis(),
                    started.elapsed().as_millis()
                ));
            }
            if let Some(e) = unreachable {
                return Err(e);
            }
            return Err(Error::Timeout {
                name: name.to_owned(),
                waited_ms: now.duration_since(started).as_millis(),
                holder: last_holder.filter(|_| !behind).map(Box::new),
                note: first_in_line.map(first_in_line_note).or(note),
            });
        }
        if wake.live < quorum.needed() && unreachable.is_none() {
            // Subscribe before the next attempt, so a release between the two is not
            // missed. Attempt at once after a full subscription, or the first one (as
            // before this waiter subscribed, it may be free by now).
            let first = !wake.registered;
            let subscribing = Instant::now();
            wake.subscribe(quorum, &keys, &waiter_id).await;
            if trace::on() {
                trace::line(format_args!(
                    "wait {}: subscribed on {} of {} in {}ms{}",
                    trace::short(&waiter_id),
                    wake.live,
                    quorum.nodes().len(),
                    subscribing.elapsed().as_millis(),
                    if wake.boxed.is_live() {
                        ", hand-off box open"
                    } else {
                        ""
                    }
                ));
            }
            if first || wake.live >= quorum.needed() {
                continue;
            }
        }
        let heard = wake
            .listen(
                deadline.min(now + pause),
                wake_early,
                &Listening {
                    waiter: &waiter_id,
                    owner: &req.owner,
                    box_above: ours
                        .as_ref()
                        .filter(|(o, _)| *o == req.owner)
                        .and(refused_below),
                    head: head.as_deref(),
                    identity: &coordinator.inner.identity,
                    nodes: quorum.nodes().len(),
                    needed: quorum.needed(),
                    node_timeout: cfg.node_timeout,
                },
                &mut floor,
            )
            .await;
        // Handed the lease, our box says: ours at once, valid for the probation counted from
        // before our last attempt (the release granted after that attempt ran). One renewal,
        // in the background, takes it off probation (no grant, no queue, no raise); whoever
        // needs a whole TTL's validity (a `lock run` guard's deadline) waits for it
        // (`Lease::off_probation`). Too little of the probation left: the next attempt finds
        // out (it confirms a hand-off too). The release message alone is never trusted: any
        // client that may PUBLISH on the lock's channel (a read-only ACL user with `@pubsub`,
        // say) can name our waiter and owner ids, which every reader of Redis can see, with a
        // token of its choosing (test:
        // `handoff::forged::a_forged_hand_off_message_does_not_hand_the_lock_over`); without a
        // box, the next attempt's grant finds the lease ours and names its token.
        if let Heard::Handed(token) = heard
            && let Some(valid_until) = handed_validity(sent, cfg.ttl)
        {
            if trace::on() {
                trace::line(format_args!(
                    "wait {} at {}ms: handed the lease (its box)",
                    trace::short(&waiter_id),
                    started.elapsed().as_millis(),
                ));
            }
            give_up.disarm();
            let mut lease = Lease::redis(
                coordinator.clone(),
                name,
                keys,
                req.owner,
                secret,
                token,
                valid_until,
            );
            lease.confirm_handed();
            return Ok(lease);
        }
    }
}

/// The work of [`Coordinator::evict`].
pub(crate) async fn evict(
    coordinator: &Coordinator,
    quorum: &Quorum,
    keys: &LockKeys,
    expected_owner: &str,
    event: &'static str,
) -> usize {
    quorum
        .evict(&Eviction {
            keys: keys.clone(),
            expected_owner: expected_owner.to_owned(),
            event,
            by: coordinator.inner.identity.clone(),
            log_cap: coordinator.inner.config.log_cap,
        })
        .await
}

/// How often a queued waiter asks again (its heartbeat), well inside
/// [`WAITER_TTL`](crate::backend::WAITER_TTL) so a slow round trip or two does not cost it its
/// place.
const HEARTBEAT: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    //! The wait loop on fake nodes and tokio's paused clock: a wait of seconds costs nothing,
    //! and "at once" means no timer had to ring.

    use std::time::Duration;

    use tokio::time::Instant;

    use crate::fake_node::{Mode, coordinator};
    use crate::holder::HolderInfo;
    use crate::{AcquireOptions, Error};

    const TTL: Duration = Duration::from_secs(10);

    fn stranger() -> HolderInfo {
        HolderInfo {
            session: "s".into(),
            host: "elsewhere".into(),
            pid: 1,
            ..HolderInfo::default()
        }
    }

    /// A wait of two minutes for lock "L", in a task of its own.
    fn queued_waiter(
        c: &crate::Coordinator,
    ) -> tokio::task::JoinHandle<crate::Result<crate::Lease>> {
        let c = c.clone();
        tokio::spawn(async move {
            c.acquire("L", &AcquireOptions::wait(Duration::from_secs(120)))
                .await
        })
    }

    /// What a release that hands `owner` the lease does on `fake`: the lease is `owner`'s on
    /// probation, with `token`, and the box says so.
    fn hand_over(fake: &crate::fake_node::FakeNode, owner: &str, token: u64) {
        fake.state().lease = None;
        let handed = HolderInfo {
            token,
            ..HolderInfo::default()
        };
        fake.hold(owner, crate::handoff::PROBATION, handed);
        assert_eq!(fake.push_boxes(&format!("{owner} {token}")), 1);
    }

    /// Whatever a wait returned must be ours on the server, and stay valid past its
    /// confirmation.
    async fn held_on_the_server(
        lease: &crate::Lease,
        fake: &crate::fake_node::FakeNode,
        owner: &str,
    ) {
        lease.off_probation().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            matches!(lease.state(), crate::LeaseState::Valid { .. }) && fake.owner().is_some(),
            "the wait returned a lease (token {}) it does not hold: server owner {:?}, lease \
             state {:?}, releases asked {:?} (the box's owner: {owner})",
            lease.token(),
            fake.owner(),
            lease.state(),
            fake.state().releases
        );
    }

    /// A wait that found the master in its restart quarantine, then the lock free behind
    /// another waiter first in line, ends naming that waiter: not the quarantine that ended
    /// (kept from its attempt, it took precedence; found in review).
    #[tokio::test(start_paused = true)]
    async fn a_wait_that_ran_out_behind_a_waiter_names_it_not_an_ended_quarantine() {
        let (c, fakes) = coordinator(1, TTL);
        fakes[0].set(Mode::QuarantinedUntil(
            Instant::now() + Duration::from_millis(100),
        ));
        let ahead = Instant::now() + Duration::from_secs(60);
        fakes[0].state().waiters.insert("ahead".into(), (0, ahead));
        let got = c
            .acquire("L", &AcquireOptions::wait(Duration::from_millis(500)))
            .await;
        let Err(Error::Timeout { holder, note, .. }) = got else {
            panic!("not a timeout: {:?}", got.err());
        };
        assert!(holder.is_none(), "{holder:?}");
        let note = note.unwrap_or_default();
        assert!(
            note.contains("another waiter was first in line (session s-ahead on elsewhere"),
            "{note}"
        );
        assert!(
            fakes[0].state().grants >= 2,
            "it never asked after the quarantine"
        );
    }

    /// The box of an attempt that failed (a node silent for its timeout: `Attempt::Unavailable`)
    /// hands nothing over: the attempt's undo (`Quorum::grant`) and the wait's `GiveUp` (dropped
    /// as the wait returns) release that very owner. A release that handed that owner the lease
    /// meanwhile fills the box; taken from there (as it was, found in review), the wait returned
    /// a lease that was gone on the server (found lost by the confirmation). Now it waits on and
    /// returns a lease the server holds for it.
    #[tokio::test(start_paused = true)]
    async fn a_box_value_for_a_failed_attempt_is_not_taken_its_undo_ends_it() {
        let (c, fakes) = coordinator(1, TTL);
        fakes[0].hold("other", Duration::from_secs(60), stranger());
        let waiter = queued_waiter(&c);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            fakes[0].boxes.lock().unwrap().len(),
            1,
            "the box is not open"
        );
        let owner = fakes[0].state().last_owner.clone().unwrap();
        // The node stalls for one node timeout: the next heartbeat attempt (within 200 ms, same
        // owner id while refused) fails as Unavailable.
        fakes[0].set(Mode::Silent(c.inner.config.node_timeout));
        tokio::time::sleep(Duration::from_millis(201)).await;
        // Meanwhile the holder's release ran on the server: it handed the lease to the head's
        // registered owner (ours) and pushed it into the box.
        hand_over(&fakes[0], &owner, 77);
        fakes[0].set(Mode::Up);
        let lease = waiter.await.unwrap().unwrap();
        // Whatever the wait returned must be ours on the server, and stay valid.
        held_on_the_server(&lease, &fakes[0], &owner).await;
    }

    /// The same, with the release landing after the failed attempt's undo (the server
    /// stalled past the node timeout, then served the grant and its undo, then the holder's
    /// release): only the `GiveUp`'s release ends it. Here it lands before the background
    /// confirmation, which then finds the lease lost; in the other order the confirmation
    /// extends it to a whole TTL first, and the caller holds a lease valid for a TTL that the
    /// server has ended (and handed to the next waiter).
    #[tokio::test(start_paused = true)]
    async fn a_box_value_for_a_failed_attempt_is_not_taken_even_after_its_undo() {
        let (c, fakes) = coordinator(1, TTL);
        fakes[0].hold("other", Duration::from_secs(60), stranger());
        let waiter = queued_waiter(&c);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let owner = fakes[0].state().last_owner.clone().unwrap();
        let nt = c.inner.config.node_timeout;
        fakes[0].set(Mode::Silent(nt));
        // The heartbeat attempt goes out within 200 ms, times out, and its undo times out too:
        // Unavailable comes two node timeouts after it was sent. Just before that, the release.
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(200) + nt + Duration::from_millis(1)).await;
        assert!(Instant::now() - t0 < Duration::from_millis(200) + 2 * nt);
        fakes[0].set(Mode::Up);
        hand_over(&fakes[0], &owner, 77);
        let lease = waiter.await.unwrap().unwrap();
        held_on_the_server(&lease, &fakes[0], &owner).await;
    }

    /// A box value no newer than the lease the last refusal named is stale (handed to us,
    /// ended early and given on since, while the value waited in the box's connection): not
    /// taken. A newer one is.
    #[tokio::test(start_paused = true)]
    async fn a_box_value_older_than_the_refusing_lease_is_not_taken() {
        let (c, fakes) = coordinator(1, TTL);
        let holding = HolderInfo {
            token: 50,
            ..stranger()
        };
        fakes[0].hold("other", Duration::from_secs(60), holding);
        let waiter = queued_waiter(&c);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let owner = fakes[0].state().last_owner.clone().unwrap();
        assert_eq!(fakes[0].push_boxes(&format!("{owner} 50")), 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !waiter.is_finished(),
            "a stale box value handed the lease over"
        );
        hand_over(&fakes[0], &owner, 51);
        let lease = waiter.await.unwrap().unwrap();
        assert_eq!(lease.token(), 51);
        lease.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_woken_by_a_release_acquires_without_a_polling_delay() {
        let (c, fakes) = coordinator(1, TTL);
        fakes[0].hold("other", Duration::from_secs(60), stranger());
        let start = Instant::now();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move {
                let lease = c
                    .acquire("L", &AcquireOptions::wait(Duration::from_secs(120)))
                    .await;
                (lease, Instant::now())
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            fakes[0].state().waiters.len() == 1,
            "the waiter did not register"
        );
        let grants_before = fakes[0].state().grants;
        assert!(fakes[0].release_now("other"));
        let (lease, at) = waiter.await.unwrap();
        let lease = lease.unwrap();
        assert_eq!(
            at - start,
            Duration::from_secs(1),
            "the waiter did not take the lock the moment it was released"
        );
        assert_eq!(fakes[0].state().grants, grants_before + 1, "it polled");
        assert!(fakes[0].state().waiters.is_empty());
        lease.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_line_and_a_release_wakes_only_the_head() {
        let (c, fakes) = coordinator(1, TTL);
        fakes[0].hold("other", Duration::from_secs(60), stranger());
        let wait = |c: crate::Coordinator| {
            tokio::spawn(async move {
                c.acquire("L", &AcquireOptions::wait(Duration::from_secs(120)))
                    .await
            })
        };
        let first = wait(c.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = wait(c.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(fakes[0].state().waiters.len(), 2);
        let grants = fakes[0].state().grants;
        assert!(fakes[0].release_now("other"));
        let lease = first.await.unwrap().unwrap();
        assert_eq!(
            fakes[0].state().grants,
            grants + 1,
            "not only the head tried"
        );
        assert!(!second.is_finished(), "the second jumped the line");
        lease.release().await.unwrap();
        second.await.unwrap().unwrap().release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_head_of_the_line_holds_the_next_up_for_its_registration_only() {
        let (c, fakes) = coordinator(1, TTL);
        fakes[0].hold("other", Duration::from_secs(60), stranger());
        // A waiter first in line that stopped asking (its process died).
        fakes[0]
            .state()
            .waiters
            .insert("dead".into(), (0, Instant::now() + super::WAITER_TTL));
        let start = Instant::now();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move {
                c.acquire("L", &AcquireOptions::wait(Duration::from_secs(120)))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(fakes[0].release_now("other"));
        let lease = waiter.await.unwrap().unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= super::WAITER_TTL && waited <= super::WAITER_TTL + super::HEARTBEAT,
            "{waited:?}"
        );
        lease.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_granted_by_a_majority_leaves_the_line_of_the_node_that_refused() {
        let (c, fakes) = coordinator(3, TTL);
        // A stale copy on one master: it refuses, and queues us there.
        fakes[2].hold("other", Duration::from_secs(60), stranger());
        let lease = c
            .acquire("L", &AcquireOptions::wait(Duration::from_secs(30)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            fakes[2].state().waiters.is_empty(),
            "still first in line where it was refused: nobody else would be granted there"
        );
        lease.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_gone_holder_on_this_host_is_taken_over_at_once() {
        let (c, fakes) = coordinator(1, TTL);
        let me = c.identity().clone();
        // Our own pid, started at another time: a process that is gone, its pid reused.
        let gone = HolderInfo {
            session: "crashed".into(),
            host: me.host.clone(),
            pid: me.pid,
            pid_start: Some(me.pid_start.unwrap_or(0) + 1),
            pid_ns: me.pid_ns.clone(),
            ..HolderInfo::default()
        };
        fakes[0].hold("crashed", Duration::from_secs(60), gone);
        let start = Instant::now();
        let lease = c
            .acquire("L", &AcquireOptions::wait(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO, "waited for the TTL");
        assert_eq!(fakes[0].state().evictions, ["takeover"]);
        assert_ne!(fakes[0].owner().as_deref(), Some("crashed"));
        lease.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_holder_elsewhere_is_not_taken_over() {
        let (c, fakes) = coordinator(1, TTL);
        fakes[0].hold("other", Duration::from_secs(60), stranger());
        let err = c.try_acquire("L").await.err().unwrap();
        assert!(err.is_held(), "{err}");
        assert!(fakes[0].state().evictions.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_runs_out_times_out_and_leaves_the_waiter_set() {
        let (c, fakes) = coordinator(1, TTL);
        fakes[0].hold("other", Duration::from_secs(60), stranger());
        let start = Instant::now();
        let err = c
            .acquire("L", &AcquireOptions::wait(Duration::from_secs(5)))
            .await
            .err()
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(err.exit_code(), 75, "{err}");
        let Error::Timeout { holder, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(holder.as_ref().map(|h| h.owner.as_str()), Some("other"));
        let s = fakes[0].state();
        assert!(s.registrations > 0, "it never registered as a waiter");
        assert!(
            s.waiters.is_empty(),
            "still in the waiter set: {:?}",
            s.waiters
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_dropped_midway_leaves_the_waiter_set_at_once() {
        let (c, fakes) = coordinator(1, TTL);
        fakes[0].hold("other", Duration::from_secs(60), stranger());
        let opts = AcquireOptions::wait(Duration::from_secs(5));
        let wait = c.acquire("L", &opts);
        // Given up after a while, as an aborted Node call drops it.
        let given_up = tokio::time::timeout(Duration::from_millis(300), wait).await;
        assert!(given_up.is_err(), "the lock was granted");
        assert!(fakes[0].state().registrations > 0, "it never queued");
        // The leave is a task of its own: let it run, well inside the waiter TTL.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let s = fakes[0].state();
        assert!(
            s.waiters.is_empty(),
            "still in the waiter set: {:?}",
            s.waiters
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_never_releases_is_taken_over_when_its_ttl_ends() {
        let (c, fakes) = coordinator(1, TTL);
        fakes[0].hold("other", Duration::from_secs(3), stranger());
        let start = Instant::now();
        let lease = c
            .acquire("L", &AcquireOptions::wait(Duration::from_secs(30)))
            .await
            .unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_millis(3010),
            "{waited:?}"
        );
        lease.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_split_vote_is_released_everywhere_and_retried() {
        let (c, fakes) = coordinator(3, TTL);
        // One master held by someone else, one dropping our first request, one free: our one
        // vote is no majority.
        fakes[0].hold("other", Duration::from_secs(60), stranger());
        fakes[1].state().fail_grants = 1;
        let start = Instant::now();
        let lease = c
            .acquire("L", &AcquireOptions::wait(Duration::from_secs(30)))
            .await
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the retry waited for the holder: {:?}",
            start.elapsed()
        );
        let first_owner = fakes[2].state().releases.first().cloned().unwrap();
        for (i, f) in fakes.iter().enumerate() {
            assert!(
                f.state().releases.contains(&first_owner),
                "the split attempt was not released on master {i}"
            );
        }
        assert_ne!(fakes[2].owner(), Some(first_owner));
        assert!(fakes[1].owner().is_some() && fakes[1].owner() == fakes[2].owner());
        assert_eq!(fakes[0].owner().as_deref(), Some("other"));
        lease.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_quarantine_is_waited_out_without_retrying_meanwhile() {
        let (c, fakes) = coordinator(3, TTL);
        let until = Instant::now() + Duration::from_secs(2);
        fakes[1].set(Mode::QuarantinedUntil(until));
        fakes[2].set(Mode::QuarantinedUntil(until));
        let start = Instant::now();
        let lease = c
            .acquire("L", &AcquireOptions::wait(Duration::from_secs(10)))
            .await
            .unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_millis(2010),
            "{waited:?}"
        );
        assert!(
            fakes[0].state().grants <= 3,
            "retried during the quarantine: {} grants",
            fakes[0].state().grants
        );
        lease.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_quarantine_longer_than_the_wait_times_out_saying_why() {
        let (c, fakes) = coordinator(3, TTL);
        let until = Instant::now() + Duration::from_secs(20);
        fakes[1].set(Mode::QuarantinedUntil(until));
        fakes[2].set(Mode::QuarantinedUntil(until));
        let err = c
            .acquire("L", &AcquireOptions::wait(Duration::from_secs(1)))
            .await
            .err()
            .unwrap();
        let Error::Timeout { note, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(
            note.as_deref().unwrap_or("").contains("quarantine"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_redis_in_its_quarantine_is_waited_out_and_named_with_the_way_out() {
        let (c, fakes) = coordinator(1, TTL);
        let until = Instant::now() + Duration::from_secs(3);
        fakes[0].set(Mode::QuarantinedUntil(until));
        let err = c.try_acquire("L").await.err().unwrap();
        let Error::Timeout { note, .. } = &err else {
            panic!("{err:?}")
        };
        let note = note.as_deref().unwrap_or("");
        assert!(note.contains("Redis started (new, or restarted"), "{note}");
        assert!(note.contains("lock init"), "{note}");
        let lease = c
            .acquire("L", &AcquireOptions::wait(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(Instant::now(), until + Duration::from_millis(1));
        lease.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_rides_out_an_outage_and_is_woken_on_its_new_subscription() {
        let (c, fakes) = coordinator(1, TTL);
        fakes[0].hold("other", Duration::from_secs(60), stranger());
        let start = Instant::now();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move {
                let lease = c
                    .acquire("L", &AcquireOptions::wait(Duration::from_secs(120)))
                    .await;
                (lease, Instant::now())
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        fakes[0].set(Mode::Down);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !waiter.is_finished(),
            "the waiter gave up during the outage"
        );
        fakes[0].set(Mode::Up);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(fakes[0].release_now("other"));
        let (lease, at) = waiter.await.unwrap();
        lease.unwrap().release().await.unwrap();
        assert_eq!(
            at - start,
            Duration::from_secs(4),
            "not woken by the release after the outage"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_longer_than_the_wait_is_unavailable_when_the_wait_ends() {
        let (c, fakes) = coordinator(1, TTL);
        fakes[0].hold("other", Duration::from_secs(60), stranger());
        fakes[0].set(Mode::Down);
        let start = Instant::now();
        let err = c
            .acquire("L", &AcquireOptions::wait(Duration::from_secs(3)))
            .await
            .err()
            .unwrap();
        assert!(err.is_unavailable(), "{err}");
        assert_eq!(err.exit_code(), 69);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        let err = c.try_acquire("L").await.err().unwrap();
        assert!(err.is_unavailable(), "{err}");
    }
}
