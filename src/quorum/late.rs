//! The grants of ended attempts that land late: which owners still have grants in flight, and
//! whether each was ended meanwhile (so that its grant is undone where it lands, unless that
//! node's own release of it answered afterwards).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// The owners of attempts with grants still in flight (see [`Quorum::settle`]), each with
/// whether it was ended (released or undone) meanwhile: a grant of an ended owner that lands
/// afterwards is undone on its node. Without that, such a grant stood as an orphan on one
/// master for a whole TTL, refused every other contender there, and left every wait needing
/// all the other masters to agree: with 8 tasks on 3 masters it was the slow mode of the
/// benchmark (0.21-0.37x of one master in the runs that had one, 2026-12-05; the late grant
/// answered 11 ms after its lease's release).
///
/// (issue 20) The release of an uncontended lease on 5 masters usually starts before the two
/// slowest grants have answered, so each of them landed "after the end" and was undone once
/// more, though the release right behind it on the same connection had already ended it: 2
/// extra script calls per acquire+release. So the end records which nodes answered it and
/// which said the lease was ours there, and a grant that landed before its node's release
/// answered "ours" (that release ran after it) is not undone again.
///
/// [`Quorum::settle`]: super::Quorum
#[derive(Default)]
pub(super) struct LateGrants(pub(super) Mutex<HashMap<String, Entry>>, Notify);

/// One owner's bookkeeping.
#[derive(Default)]
pub(super) struct Entry {
    /// Tasks still settling grants of this owner.
    tasks: usize,
    /// Ended (released or undone) since its last attempt.
    ended: bool,
    /// Nodes (bit i: node i) whose end of this owner answered, and those that said "ours".
    answered: u64,
    ours: u64,
    /// The end returned: no more answers come.
    done: bool,
}

/// How long a late grant waits for its node's release to answer: that release has its own
/// per-node deadline and marks the end done when it returns, so this only bounds a release
/// whose caller stopped polling it.
const RELEASE_ANSWER: Duration = Duration::from_secs(1);

/// Node `i`'s bit; none past the 64th (such a node's late grant is always undone).
fn bit(i: usize) -> u64 {
    u32::try_from(i)
        .ok()
        .and_then(|i| 1u64.checked_shl(i))
        .unwrap_or(0)
}

impl LateGrants {
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut map)
    }

    /// One more task settling grants of `owner`; `ended` when its attempt already failed.
    pub(super) fn start(&self, owner: &str, ended: bool) {
        self.with(|m| {
            let e = m.entry(owner.to_owned()).or_default();
            e.tasks += 1;
            e.ended |= ended;
        });
    }

    /// `owner` is being ended on every node: a grant of it that lands later must be undone.
    pub(super) fn end(&self, owner: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(owner) {
                e.ended = true;
                (e.answered, e.ours, e.done) = (0, 0, false);
            }
        });
    }

    /// Node `i` answered the end of `owner`; `ours` when the lease was ours there.
    pub(super) fn answered(&self, owner: &str, i: usize, ours: bool) {
        let known = self.with(|m| {
            m.get_mut(owner).map(|e| {
                e.answered |= bit(i);
                if ours {
                    e.ours |= bit(i);
                }
            })
        });
        if known.is_some() {
            self.1.notify_waiters();
        }
    }

    /// The end of `owner` returned.
    pub(super) fn ended_all(&self, owner: &str) {
        let known = self.with(|m| m.get_mut(owner).map(|e| e.done = true));
        if known.is_some() {
            self.1.notify_waiters();
        }
    }

    /// A new attempt under `owner` (a queued waiter keeps its owner id while refused): a grant
    /// of an earlier one that lands now counts as this one's.
    pub(super) fn revive(&self, owner: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(owner) {
                (e.ended, e.answered, e.ours, e.done) = (false, 0, 0, false);
            }
        });
    }

    pub(super) fn ended(&self, owner: &str) -> bool {
        self.with(|m| m.get(owner).is_some_and(|e| e.ended))
    }

    /// A grant of `owner` just landed on node `i` after its end began: whether it must be
    /// undone there. Not when node `i`'s end answers "ours": the lease was there when it ran,
    /// and it ended it (on one connection a release sent after the grant runs after it). Yes
    /// when it answers "not ours" (it ran before the grant landed), fails, does not answer
    /// before the end returns, or within [`RELEASE_ANSWER`]. Not either when a new attempt
    /// under this owner began meanwhile: the grant counts as that attempt's.
    ///
    /// What this does not catch: the grant sent a second time (a cluster connection resends
    /// after a lost reply) and landing again after an end that found the first copy. That copy
    /// stands on one master until its TTL, as every late grant did before the undo existed.
    pub(super) async fn must_undo(&self, owner: &str, i: usize) -> bool {
        let b = bit(i);
        if b == 0 {
            return true;
        }
        let wait = async {
            loop {
                let notified = self.1.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let undo = self.with(|m| {
                    m.get(owner).map_or(Some(true), |e| {
                        if e.answered & b != 0 {
                            Some(e.ours & b == 0)
                        } else if !e.ended {
                            // A new attempt under this owner: the grant counts as its.
                            Some(false)
                        } else if e.done {
                            Some(true)
                        } else {
                            None
                        }
                    })
                });
                if let Some(undo) = undo {
                    return undo;
                }
                notified.await;
            }
        };
        tokio::time::timeout(RELEASE_ANSWER, wait)
            .await
            .unwrap_or(true)
    }

    pub(super) fn finish(&self, owner: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(owner) {
                e.tasks = e.tasks.saturating_sub(1);
                if e.tasks == 0 {
                    m.remove(owner);
                }
            }
        });
    }
}
