//! The clock that lease validity is measured on: elapsed time that keeps counting while the
//! machine is suspended.
//!
//! Tokio's `Instant` (and std's) is `CLOCK_MONOTONIC`, which stops during system suspend: a
//! laptop that sleeps for an hour while holding a 30 s lease would wake up believing it still
//! holds it, while Redis let the lease expire long ago. `CLOCK_BOOTTIME` counts suspend. Tests
//! pause and advance tokio's clock instead, which `CLOCK_BOOTTIME` knows nothing of. So every
//! elapsed time here is the larger of the two: paused-time tests see tokio's clock, production
//! sees suspend. Reading either clock can only make a deadline come sooner, never later.

use std::time::Duration;

use nix::time::{ClockId, clock_gettime};
use tokio::time::Instant;

/// Time since boot including suspend; `None` where the clock cannot be read (then tokio's
/// clock alone is used).
pub(crate) fn boottime() -> Option<Duration> {
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?;
    Some(Duration::new(
        u64::try_from(ts.tv_sec()).ok()?,
        u32::try_from(ts.tv_nsec()).ok()?,
    ))
}

/// A moment, read on both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    at: Instant,
    boot: Option<Duration>,
}

impl Stamp {
    /// Now.
    pub(crate) fn now() -> Self {
        Stamp {
            at: Instant::now(),
            boot: boottime(),
        }
    }

    /// Time since this moment: the larger of tokio's elapsed time and the boot clock's.
    pub(crate) fn elapsed(&self) -> Duration {
        let suspended = match (self.boot, boottime()) {
            (Some(then), Some(now)) => now.saturating_sub(then),
            _ => Duration::ZERO,
        };
        self.at.elapsed().max(suspended)
    }
}

/// A point `after` a [`Stamp`]: passed once either clock says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline {
    start: Stamp,
    after: Duration,
}

impl Deadline {
    /// `after` from `start`.
    pub(crate) fn new(start: Stamp, after: Duration) -> Self {
        Deadline { start, after }
    }

    /// Time left; zero once passed.
    pub(crate) fn remaining(&self) -> Duration {
        self.after.saturating_sub(self.start.elapsed())
    }

    /// True once passed on either clock.
    pub(crate) fn has_passed(&self) -> bool {
        self.remaining().is_zero()
    }

    /// The deadline as a tokio `Instant` seen from now (for timers and display). A suspend
    /// after this call is not in it: re-read it rather than keep it.
    pub(crate) fn instant(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(self.remaining()).unwrap_or(now)
    }
}

/// `start + wait`, or a deadline about thirty years out when that overflows (`Duration::MAX`
/// means "wait for ever").
pub(crate) fn far_deadline(start: Instant, wait: Duration) -> Instant {
    start
        .checked_add(wait)
        .or_else(|| start.checked_add(Duration::from_secs(30 * 365 * 86_400)))
        .unwrap_or(start)
}

/// Microseconds since the epoch: a waiter's place in line (waiters on one host are ordered by
/// when they first asked; across hosts, up to the clocks' difference) and a token floor's clock.
pub(crate) fn epoch_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paused_time_counts_and_so_does_the_boot_clock() {
        let start = Stamp::now();
        let deadline = Deadline::new(start, Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(4)).await;
        // Tokio's clock leads the boot clock here (it was advanced, no real time passed).
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        assert_eq!(deadline.remaining(), Duration::from_secs(6));
        assert!(!deadline.has_passed());
        assert_eq!(deadline.instant(), Instant::now() + Duration::from_secs(6));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(deadline.has_passed());
        assert_eq!(deadline.instant(), Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn the_boot_clock_counts_when_tokio_s_clock_stands_still() {
        // Paused tokio time stands for a monotonic clock that stopped (a suspend): only the boot
        // clock moves, and the deadline passes by it.
        let start = Stamp::now();
        let deadline = Deadline::new(start, Duration::from_millis(30));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(start.at.elapsed(), Duration::ZERO);
        assert!(start.elapsed() >= Duration::from_millis(40));
        assert!(deadline.has_passed());
    }

    #[test]
    fn the_boot_clock_is_readable_on_linux() {
        assert!(boottime().is_some());
    }
}
