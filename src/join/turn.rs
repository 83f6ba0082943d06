//! Joining, as the coordinator confirms it: the join on a majority (`lua/join.lua`) or on the
//! local lock files, and the turn among the joiners of one lease (see the parent module).

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::{Capability, ENV_VAR, Origin, secret_hash};
use crate::backend::{JoinReply, JoinRequest};
use crate::clock::{Deadline, Stamp, far_deadline};
use crate::coordinator::Backend;
use crate::keys::LockKeys;
use crate::local::Joinable;
use crate::quorum::{Quorum, validity};
use crate::{Coordinator, Error, Identity, Lease, Result};

/// How long a joiner waits between asks while another joiner has the turn, at most.
const TURN_POLL: Duration = Duration::from_millis(20);

/// How long [`Lease::join`] waits for its turn.
const IN_PROCESS_WAIT: Duration = Duration::from_secs(60);

/// A joiner's id: its pid and start time (so another joiner can tell it is gone, and one
/// nested under it that it is its ancestor), and random.
fn joiner_id(me: &Identity) -> String {
    format!(
        "{}-{}-{}",
        me.pid,
        me.pid_start.unwrap_or(0),
        uuid::Uuid::new_v4().simple()
    )
}

/// The pid and start time a joiner id names.
fn joiner_process(id: &str) -> Option<(u32, u64)> {
    let mut parts = id.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    Some((pid, start)).filter(|p| p.1 != 0)
}

/// True when the joiner `id` names (pid and start time, in our PID namespace: every joiner of
/// a lease is in its holder's tree) is no longer running.
fn joiner_is_gone(id: &str) -> bool {
    joiner_process(id)
        .is_some_and(|(pid, start)| crate::sys::process_start_ticks(pid) != Some(start))
}

/// How one join on the quorum ended.
pub(crate) enum Joined {
    /// A majority confirmed it and gave us the turn, until `valid_until`.
    Yes {
        valid_until: Deadline,
        ttl: Duration,
    },
    /// The lease ended (not that owner's on a majority).
    Ended,
    /// The owner matches, the secret or token does not (a majority says so).
    Mismatch,
    /// Another joiner has the turn.
    Busy { left: Duration, by: String },
    /// Too few answers.
    Undecided,
}

/// Ask every node to confirm `req` and give it the turn; see [`Joined`].
pub(crate) async fn join_on(q: &Quorum, req: &JoinRequest) -> Joined {
    let need = q.needed();
    let slack = q.nodes().len().saturating_sub(need);
    let start = Stamp::now();
    let mut pending: FuturesUnordered<_> = q.nodes().iter().map(|node| node.join(req)).collect();
    let (mut yes, mut ended, mut mismatch) = (0, 0, 0);
    let mut shortest: Option<(Duration, Duration)> = None;
    let mut busy: Option<(Duration, String)> = None;
    while let Some(reply) = pending.next().await {
        match reply {
            Ok(JoinReply::Joined { pttl, ttl }) => {
                yes += 1;
                let pttl = pttl.min(req.turn_ttl);
                shortest = Some(shortest.map_or((pttl, ttl), |(p, t)| (p.min(pttl), t.max(ttl))));
            }
            Ok(JoinReply::Ended) => ended += 1,
            Ok(JoinReply::Mismatch) => mismatch += 1,
            Ok(JoinReply::Busy { left, by }) => busy = Some((left, by)),
            Err(_) => {}
        }
        if yes >= need || yes + pending.len() < need {
            break;
        }
    }
    let elapsed = start.elapsed();
    if yes >= need
        && let Some((pttl, ttl)) = shortest
        && let Some(left) = validity(pttl, elapsed)
    {
        return Joined::Yes {
            valid_until: Deadline::new(start, elapsed + left),
            ttl,
        };
    }
    if mismatch > slack {
        Joined::Mismatch
    } else if ended + mismatch > slack {
        Joined::Ended
    } else if let Some((left, by)) = busy {
        Joined::Busy { left, by }
    } else {
        Joined::Undecided
    }
}

/// Give the turn back on every node (best effort: a node that misses it lets it lapse).
pub(crate) async fn leave_turn_on(q: &Quorum, req: &JoinRequest) {
    let all: FuturesUnordered<_> = q.nodes().iter().map(|node| node.leave_turn(req)).collect();
    let _ = all.collect::<Vec<_>>().await;
}

/// The refusal of a capability that names a standing lease with the wrong secret, token or
/// holder: forged or edited.
fn refused(name: &str) -> Error {
    Error::LeaseLost {
        name: name.to_owned(),
        reason: format!(
            "the capability in {ENV_VAR} does not match the lease that holds it (forged, \
             edited, or a holder record rewritten); nothing was joined"
        ),
    }
}

/// The work of [`Coordinator::scope`].
pub(crate) fn scope(coordinator: &Coordinator) -> String {
    match &coordinator.inner.backend {
        Backend::Redis(_) => format!("redis:{}", coordinator.inner.config.namespace),
        Backend::Local(local) => format!("local:{}", local.dir().display()),
    }
}

/// The work of [`Coordinator::join_within`].
pub(crate) async fn join_within(
    coordinator: &Coordinator,
    name: &str,
    capability: &Capability,
    wait: Duration,
) -> Result<Option<Lease>> {
    let Some(grant) = capability.find(&coordinator.scope(), name) else {
        return Ok(None);
    };
    if !grant.origin().is_self_or_ancestor() {
        return Ok(None);
    }
    // Under a joiner's turn: that joiner must be this process or an ancestor too (a
    // process it left behind works under nobody's turn any more).
    let parent = grant.turns.last().cloned().unwrap_or_default();
    if !parent.is_empty()
        && !joiner_process(&parent).is_some_and(|(pid, start)| {
            Origin {
                pid,
                start,
                ns: grant.ns.clone(),
            }
            .is_self_or_ancestor()
        })
    {
        return Ok(None);
    }
    let depth = grant.turns.len() + 1;
    let joiner = joiner_id(&coordinator.inner.identity);
    let deadline = far_deadline(Instant::now(), wait);
    let started = Instant::now();
    let timeout = || Error::Timeout {
        name: name.to_owned(),
        waited_ms: started.elapsed().as_millis(),
        holder: None,
        note: Some("another process that joined the same lease kept its turn".to_owned()),
    };
    match &coordinator.inner.backend {
        Backend::Redis(q) => {
            let mut req = JoinRequest {
                keys: LockKeys::new(&coordinator.inner.config.namespace, name),
                owner: grant.owner.clone(),
                secret_hash: secret_hash(&grant.secret),
                token: grant.token,
                joiner: joiner.clone(),
                depth,
                parent,
                turn_ttl: coordinator.inner.config.ttl,
                take_from: String::new(),
                place: crate::clock::epoch_micros(),
                by: coordinator.inner.identity.clone(),
                log_cap: coordinator.inner.config.log_cap,
            };
            // With several nodes, a refusal may follow turns taken on some of them: give
            // those back. One node that answered gave us nothing; one that did not may
            // have (Undecided).
            let several = q.nodes().len() > 1;
            loop {
                let outcome = join_on(q, &req).await;
                req.take_from.clear();
                let pause = match outcome {
                    Joined::Yes { valid_until, ttl } => {
                        return Ok(Some(Lease::joined_redis(
                            coordinator.clone(),
                            grant,
                            req,
                            ttl,
                            valid_until,
                        )));
                    }
                    Joined::Ended => {
                        if several {
                            leave_turn_on(q, &req).await;
                        }
                        return Ok(None);
                    }
                    Joined::Mismatch => {
                        if several {
                            leave_turn_on(q, &req).await;
                        }
                        return Err(refused(name));
                    }
                    Joined::Busy { left, by } => {
                        if several {
                            leave_turn_on(q, &req).await;
                        }
                        if joiner_is_gone(&by) {
                            req.take_from = by;
                            Duration::ZERO
                        } else {
                            left.min(TURN_POLL)
                        }
                    }
                    Joined::Undecided => {
                        leave_turn_on(q, &req).await;
                        TURN_POLL
                    }
                };
                if Instant::now() >= deadline {
                    // Out of the line, so that nobody waits behind a joiner that left.
                    leave_turn_on(q, &req).await;
                    return Err(timeout());
                }
                // Jitter, so that waiting joiners do not ask in step.
                let jitter =
                    Duration::from_micros(u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 20);
                let next = Instant::now() + pause / 2 + jitter;
                tokio::time::sleep_until(next.min(deadline)).await;
            }
        }
        Backend::Local(local) => {
            let hash = secret_hash(&grant.secret);
            let parent_pid = joiner_process(&parent).map(|p| p.0);
            let check = || match local.joinable(name, grant.pid, grant.token, &hash) {
                Joinable::Held
                    if parent_pid.is_some_and(|pid| !local.turn_held_by(name, depth - 1, pid)) =>
                {
                    Joinable::Ended
                }
                j => j,
            };
            match check() {
                Joinable::Ended => return Ok(None),
                Joinable::Forged => return Err(refused(name)),
                Joinable::Held => {}
            }
            let turn = local
                .take_turn(name, depth, deadline)
                .await?
                .ok_or_else(timeout)?;
            // The holder may have let go while we waited for the turn.
            match check() {
                Joinable::Held => Ok(Some(Lease::joined_local(
                    coordinator.clone(),
                    grant,
                    joiner,
                    turn,
                ))),
                Joinable::Ended => Ok(None),
                Joinable::Forged => Err(refused(name)),
            }
        }
    }
}

impl Lease {
    /// Another lease on this one, for more work under it in this process (say, a state file
    /// written under a lock the caller holds): same token, checked like any lease, and
    /// releasing it leaves this one held. Joins of one lease take turns: this waits (up to a
    /// minute) while another join of it is not released. Errors with [`Error::LeaseLost`]
    /// when this lease is no longer confirmed by the coordinator.
    pub async fn join(&self) -> Result<Lease> {
        self.check_valid()?;
        let capability = Capability::of(std::slice::from_ref(self));
        self.coordinator()
            .join_within(self.name(), &capability, IN_PROCESS_WAIT)
            .await?
            .ok_or_else(|| Error::LeaseLost {
                name: self.name().to_owned(),
                reason: "the coordinator no longer confirms it".to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joiner_whose_process_is_gone_is_told_from_a_live_one() {
        let me = Identity::current("t");
        assert!(!joiner_is_gone(&joiner_id(&me)));
        let start = me.pid_start.unwrap();
        assert!(joiner_is_gone(&format!("{}-{}-x", me.pid, start + 1)));
        assert!(!joiner_is_gone("garbage"));
    }
}
