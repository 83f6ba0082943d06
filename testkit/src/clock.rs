//! The wall clock as the tests log it: time since the Unix epoch, the unit `tractatus` and the
//! shell scripts under test write (`date +%s%N`, `*_ms` fields), so that the two compare.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (what `date +%s%N` prints).
pub fn now_ns() -> u128 {
    since_epoch().as_nanos()
}

/// Milliseconds since the Unix epoch (what `tractatus` writes in its `*_ms` fields).
pub fn epoch_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
}
