//! Keeping a [`Lease`] alive: one renewal on demand, or a keeper renewing at a third of the TTL
//! in the background until release, loss or the longest hold, for every kind of lease (a joined
//! one asks again whether its holder's lease stands; a local one only minds the longest hold).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::joined::{confirm_once, keep_joined};
use super::{Hold, Lease, Standing, VALIDITY_RAN_OUT};
use crate::clock::far_deadline;
use crate::coordinator::{Backend, Coordinator};
use crate::error::Result;
use crate::keys::LockKeys;
use crate::quorum::Renewal;

impl Lease {
    /// Extend the lease once. Errors with [`Error::LeaseLost`](crate::Error::LeaseLost) when it is no longer ours.
    pub async fn renew(&self) -> Result<()> {
        if let Some(Hold::JoinedRedis(req)) = &self.hold {
            self.check_valid()?;
            confirm_once(&self.coordinator, req, &self.state).await;
            return self.check_valid();
        }
        let Some(Hold::Redis { keys, owner }) = &self.hold else {
            return self.check_valid();
        };
        self.check_valid()?;
        renew_once(&self.coordinator, keys, owner, self.ttl, &self.state).await;
        self.check_valid()
    }

    /// Renew in the background at a third of the TTL until released, lost, or held for
    /// `max_hold`. Loss is reported through [`Lease::lost`] and [`Lease::state`]. A local lock
    /// needs no renewal, but is lost all the same once held for `max_hold`: a hung command must
    /// not keep it for good there either.
    pub fn keep_alive(&mut self, max_hold: Duration) {
        if let Some(Hold::JoinedRedis(req)) = &self.hold {
            self.keeper = Some(tokio::spawn(keep_joined(
                self.coordinator.clone(),
                req.clone(),
                self.state.clone(),
            )));
            return;
        }
        let stop_at = far_deadline(self.acquired, max_hold);
        let state = self.state.clone();
        let (coordinator, keys, owner) = match &self.hold {
            Some(Hold::Redis { keys, owner }) => {
                (self.coordinator.clone(), keys.clone(), owner.clone())
            }
            Some(Hold::Local(_)) => {
                self.keeper = Some(tokio::spawn(async move {
                    tokio::time::sleep_until(stop_at).await;
                    state.send_if_modified(|s| {
                        let held = matches!(s, Standing::Held);
                        if held {
                            *s = Standing::Lost(max_hold_reached(max_hold));
                        }
                        held
                    });
                }));
                return;
            }
            _ => return,
        };
        let ttl = self.ttl;
        // A third of the TTL in, or sooner when less is left (a lease handed over on probation,
        // see `crate::handoff`, that its confirmation has not extended yet).
        let left = match &*self.state.borrow() {
            Standing::Valid(d) => d.remaining(),
            _ => ttl,
        };
        self.keeper = Some(tokio::spawn(async move {
            let mut next = Instant::now() + (ttl / 3).min(left / 2);
            loop {
                tokio::time::sleep_until(next).await;
                let now = Instant::now();
                let valid_until = match &*state.borrow() {
                    Standing::Valid(d) => *d,
                    _ => return,
                };
                if valid_until.has_passed() {
                    state.send_replace(Standing::Lost(VALIDITY_RAN_OUT.into()));
                    return;
                }
                if now >= stop_at {
                    state.send_replace(Standing::Lost(max_hold_reached(max_hold)));
                    return;
                }
                // Counted from the attempt's start, like the validity it buys: a slow renewal
                // must not push the next one later and later.
                let attempt = Instant::now();
                next = if renew_once(&coordinator, &keys, &owner, ttl, &state).await {
                    attempt + ttl / 3
                } else {
                    // Retry soon, but never past the end of validity.
                    (Instant::now() + ttl / 10).min(valid_until.instant())
                };
            }
        }));
    }
}

impl Lease {
    /// Take a lease a release handed us (see `crate::handoff`) off its probation: one renewal
    /// in the background, tried again a few times while the probation's validity lasts (a
    /// renewal that finds it gone marks it lost, as any renewal does). The caller has the lease
    /// at once; [`Lease::off_probation`] waits for the confirmation.
    pub(crate) fn confirm_handed(&mut self) {
        let Some(Hold::Redis { keys, owner }) = &self.hold else {
            return;
        };
        let (done, probation) = watch::channel(false);
        self.probation = Some(probation);
        let (coordinator, keys, owner) = (self.coordinator.clone(), keys.clone(), owner.clone());
        let (ttl, state) = (self.ttl, self.state.clone());
        tokio::spawn(async move {
            // Bounded: each renewal by the node timeout, the retries by the validity.
            for _ in 0..PROBATION_TRIES {
                let valid_until = match &*state.borrow() {
                    Standing::Valid(d) if !d.has_passed() => *d,
                    _ => break,
                };
                if renew_once(&coordinator, &keys, &owner, ttl, &state).await {
                    break;
                }
                tokio::time::sleep_until((Instant::now() + ttl / 10).min(valid_until.instant()))
                    .await;
            }
            done.send_replace(true);
        });
    }

    /// Resolves once a lease handed over by a release is off probation (confirmed with a whole
    /// TTL, or found lost, or its confirmation gave up); at once for every other lease. A
    /// `lock run` waits here before it tells its guard a deadline: a probation's would stop
    /// the command within a second.
    pub(crate) async fn off_probation(&self) {
        if let Some(p) = &self.probation {
            let mut p = p.clone();
            let _ = p.wait_for(|done| *done).await;
        }
    }
}

/// How many renewals confirm a handed lease at most before it is left to the keeper (or to
/// its probation's end).
const PROBATION_TRIES: usize = 4;

fn max_hold_reached(max_hold: Duration) -> String {
    format!(
        "held for the maximum of {} s (--max-hold); renewal stopped",
        max_hold.as_secs()
    )
}

/// One renewal on the quorum, recorded in `state`. True when it succeeded.
async fn renew_once(
    coordinator: &Coordinator,
    keys: &LockKeys,
    owner: &str,
    ttl: Duration,
    state: &watch::Sender<Standing>,
) -> bool {
    let Backend::Redis(q) = &coordinator.inner.backend else {
        return true;
    };
    match q.renew(keys, owner, ttl).await {
        Renewal::Renewed { valid_until } => {
            // A validity that already ran out (say, across a suspend) stays lost: work may have
            // stopped on it, and a late renewal must not bring the lease back.
            state.send_if_modified(|s| match s {
                Standing::Valid(d) if !d.has_passed() => {
                    *s = Standing::Valid(valid_until);
                    true
                }
                _ => false,
            });
            true
        }
        Renewal::Lost => {
            state.send_replace(Standing::Lost(
                "the coordinator says the lease is no longer ours (it expired or was taken)".into(),
            ));
            false
        }
        Renewal::Undecided { .. } => false,
    }
}
