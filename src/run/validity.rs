//! The leases' validity as `lock run` last saw it, and the deadline the guard is told from it
//! (SIGTERM, SIGKILL), worked out so that the command is gone before a lease can run out.

use std::time::Duration;

use tokio::time::Instant;

use crate::group::Group;
use crate::lease::{Lease, LeaseState};

/// The leases' validity as last seen while valid: a lease marked lost (say, at --max-hold)
/// may still be valid at the coordinator, and others can take it only once that runs out.
pub(super) struct Validity {
    pub(super) known: Vec<Option<Instant>>,
    /// Kept clear of the validity's end: SIGKILL and the kernel's cleanup take a moment.
    pub(super) safety: Duration,
    /// How often it is read again (a stale reading is earlier, never later, than the truth).
    pub(super) period: Duration,
}

impl Validity {
    pub(super) fn new(leases: &[Lease]) -> Self {
        let ttl = leases
            .iter()
            .map(Lease::ttl)
            .min()
            .unwrap_or(Duration::from_secs(1));
        let mut v = Validity {
            known: vec![None; leases.len()],
            safety: (ttl / 10).min(Duration::from_millis(200)),
            period: (ttl / 10).clamp(Duration::from_millis(10), Duration::from_millis(250)),
        };
        v.refresh(leases);
        v
    }

    pub(super) fn refresh(&mut self, leases: &[Lease]) {
        for (k, l) in self.known.iter_mut().zip(leases) {
            match l.state() {
                LeaseState::Valid { valid_until } => *k = Some(valid_until),
                LeaseState::Held => *k = None,
                LeaseState::Lost(_) => {}
            }
        }
    }

    /// The guard's deadline: (SIGTERM, SIGKILL), or `None` while no lease has a validity.
    ///
    /// The arithmetic, with `V` the first validity's end as last seen: `V` already lies
    /// `drift` (1% of the TTL + 2 ms) before the lease's TTL runs out at the coordinator, counted
    /// from before the renewal was sent. SIGKILL at `V - safety` (`safety` = min(TTL/10, 200 ms):
    /// delivery, the kernel's cleanup, the guard's wake-up), as we would send it. SIGTERM one
    /// look (`period`) after ours would come at `V - margin` (`margin` = min(TTL/4,
    /// --kill-grace)), so while we run we always act first, and a renewal we saw in time has
    /// reached the guard by then; never later than the SIGKILL. The command's grace under the
    /// guard, `margin - period - safety` (at least zero), and the SIGKILL lie inside the
    /// validity, and the drift stays between the group's end and the lease's.
    fn for_guard(&self, margin: Duration) -> Option<(Instant, Instant)> {
        let end = *self.known.iter().flatten().min()?;
        let kill = end.checked_sub(self.safety).unwrap_or(end);
        let term = end
            .checked_sub(margin)
            .map_or(kill, |t| t + self.period)
            .min(kill);
        Some((term, kill))
    }

    /// Tell the guard the deadline as it now stands.
    pub(super) fn tell(&self, group: &mut Group, margin: Duration) {
        if let Some((term, kill)) = self.for_guard(margin) {
            group.tell_deadline(term, kill);
        }
    }

    /// The last moment the command may still run: a little before the first validity ends.
    pub(super) fn last_moment(&self) -> Instant {
        self.known
            .iter()
            .flatten()
            .min()
            .map_or_else(far_future, |v| v.checked_sub(self.safety).unwrap_or(*v))
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validity(ttl: Duration, end: Instant) -> Validity {
        Validity {
            known: vec![Some(end), None],
            safety: (ttl / 10).min(Duration::from_millis(200)),
            period: (ttl / 10).clamp(Duration::from_millis(10), Duration::from_millis(250)),
        }
    }

    #[test]
    fn the_guard_acts_after_us_and_is_done_inside_the_validity() {
        let end = Instant::now() + Duration::from_secs(60);
        let ms = Duration::from_millis;
        // TTL 1 s, grace 5 s: we send SIGTERM 250 ms before the end; the guard one look
        // (100 ms) later, SIGKILL 100 ms before the end.
        let v = validity(Duration::from_secs(1), end);
        assert_eq!(v.for_guard(ms(250)), Some((end - ms(150), end - ms(100))));
        // TTL 30 s, grace 5 s: SIGTERM 4.75 s before the end, SIGKILL 200 ms before it.
        let v = validity(Duration::from_secs(30), end);
        assert_eq!(v.for_guard(ms(5000)), Some((end - ms(4750), end - ms(200))));
        // A grace shorter than a look: SIGTERM no later than SIGKILL.
        assert_eq!(v.for_guard(ms(100)), Some((end - ms(200), end - ms(200))));
        // No validity (local locks): no deadline.
        let none = Validity {
            known: vec![None],
            ..validity(Duration::from_secs(1), end)
        };
        assert_eq!(none.for_guard(ms(250)), None);
    }
}
