//! The grants of ended attempts that land late: which owners still have grants in flight, and
//! whether each was ended meanwhile (so that its grant is undone where it lands).

/// The owners of attempts with grants still in flight (see [`Quorum::settle`]), each with
/// whether it was ended (released or undone) meanwhile: a grant of an ended owner that lands
/// afterwards is undone on its node. Without that, such a grant stood as an orphan on one
/// master for a whole TTL, refused every other contender there, and left every wait needing
/// all the other masters to agree: with 8 tasks on 3 masters it was the slow mode of the
/// benchmark (0.21-0.37x of one master in the runs that had one, 2026-12-05; the late grant
/// answered 11 ms after its lease's release).
#[derive(Default)]
pub(super) struct LateGrants(
    pub(super) std::sync::Mutex<std::collections::HashMap<String, (usize, bool)>>,
);

impl LateGrants {
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut std::collections::HashMap<String, (usize, bool)>) -> T,
    ) -> T {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut map)
    }

    /// One more task settling grants of `owner`; `ended` when its attempt already failed.
    pub(super) fn start(&self, owner: &str, ended: bool) {
        self.with(|m| {
            let e = m.entry(owner.to_owned()).or_insert((0, false));
            e.0 += 1;
            e.1 |= ended;
        });
    }

    /// `owner` is being ended on every node: a grant of it that lands later must be undone.
    pub(super) fn end(&self, owner: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(owner) {
                e.1 = true;
            }
        });
    }

    /// A new attempt under `owner` (a queued waiter keeps its owner id while refused): a grant
    /// of an earlier one that lands now counts as this one's.
    pub(super) fn revive(&self, owner: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(owner) {
                e.1 = false;
            }
        });
    }

    pub(super) fn ended(&self, owner: &str) -> bool {
        self.with(|m| m.get(owner).is_some_and(|e| e.1))
    }

    pub(super) fn finish(&self, owner: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(owner) {
                e.0 = e.0.saturating_sub(1);
                if e.0 == 0 {
                    m.remove(owner);
                }
            }
        });
    }
}
