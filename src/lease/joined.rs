//! A lease joined from its holder (see `crate::join`): how one is made, and its keep-alive,
//! which renews nothing: it asks again whether the holder's lease stands (`lua/join.lua`) and
//! refreshes its turn among the joiners.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Hold, Lease, Standing, VALIDITY_RAN_OUT};
use crate::Coordinator;
use crate::backend::JoinRequest;
use crate::clock::Deadline;
use crate::coordinator::Backend;
use crate::join::{Grant, Joined, join_on};

impl Lease {
    /// A Redis lease joined from `grant` by `req` (the quorum just confirmed it and gave us
    /// the turn), valid until the deadline; `ttl` is the holder's.
    pub(crate) fn joined_redis(
        coordinator: Coordinator,
        grant: &Grant,
        req: JoinRequest,
        ttl: Duration,
        valid_until: Deadline,
    ) -> Self {
        let joiner = req.joiner.clone();
        Self::joined(
            coordinator,
            grant,
            joiner,
            Hold::JoinedRedis(Box::new(req)),
            Standing::Valid(valid_until),
            ttl,
        )
    }

    /// A local lock joined from `grant` (its holder just confirmed) by `joiner`, with our
    /// turn's flock.
    pub(crate) fn joined_local(
        coordinator: Coordinator,
        grant: &Grant,
        joiner: String,
        turn: std::fs::File,
    ) -> Self {
        let ttl = coordinator.inner.config.ttl;
        let hold = Hold::JoinedLocal {
            pid: grant.pid,
            _turn: turn,
        };
        Self::joined(coordinator, grant, joiner, hold, Standing::Held, ttl)
    }

    fn joined(
        coordinator: Coordinator,
        grant: &Grant,
        joiner: String,
        hold: Hold,
        standing: Standing,
        ttl: Duration,
    ) -> Self {
        let mut turns = grant.turns.clone();
        turns.push(joiner);
        Lease {
            coordinator,
            name: grant.name.clone(),
            token: grant.token,
            hold: Some(hold),
            state: watch::channel(standing).0,
            acquired: Instant::now(),
            keeper: None,
            probation: None,
            ttl,
            owner: grant.owner.clone(),
            secret: grant.secret.clone(),
            turns,
            origin: grant.origin(),
            joined: true,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }
}

/// One confirmation of a joined lease (see `lua/join.lua`), recorded in `state`. True when it
/// stands and the turn is still ours.
pub(super) async fn confirm_once(
    coordinator: &Coordinator,
    req: &JoinRequest,
    state: &watch::Sender<Standing>,
) -> bool {
    let Backend::Redis(q) = &coordinator.inner.backend else {
        return true;
    };
    let lost = match join_on(q, req).await {
        Joined::Yes { valid_until, .. } => {
            state.send_if_modified(|s| match s {
                Standing::Valid(d) if !d.has_passed() => {
                    *s = Standing::Valid(valid_until);
                    true
                }
                _ => false,
            });
            return true;
        }
        Joined::Undecided => return false,
        Joined::Ended | Joined::Mismatch => {
            "the lease it joined ended (released, expired or broken)"
        }
        Joined::Busy { .. } => "its turn among the lease's joiners lapsed and another took it",
    };
    state.send_replace(Standing::Lost(lost.into()));
    false
}

/// A joined lease's keep-alive: confirm it and refresh the turn every third of the turn's TTL
/// (every tenth after a failed ask), until it is lost.
pub(super) async fn keep_joined(
    coordinator: Coordinator,
    req: Box<JoinRequest>,
    state: watch::Sender<Standing>,
) {
    let mut pause = req.turn_ttl / 3;
    loop {
        tokio::time::sleep(pause).await;
        match &*state.borrow() {
            Standing::Valid(d) if d.has_passed() => {
                state.send_replace(Standing::Lost(VALIDITY_RAN_OUT.into()));
                return;
            }
            Standing::Valid(_) => {}
            _ => return,
        }
        pause = if confirm_once(&coordinator, &req, &state).await {
            req.turn_ttl / 3
        } else {
            req.turn_ttl / 10
        };
    }
}
