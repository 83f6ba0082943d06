//! What a wait that ran out says stood in its way, besides the holder: masters in their
//! restart quarantine, or the waiter first in line on a free lock.

use std::time::Duration;

use crate::holder::HolderInfo;

/// Why a wait that ran out named no holder: the lock was free, and `w` first in line.
pub(crate) fn first_in_line_note(w: &HolderInfo) -> String {
    format!(
        "the lock was free but another waiter was first in line (session {} on {} pid {})",
        crate::shown::field(&w.session),
        crate::shown::field(&w.host),
        w.pid
    )
}

/// Why a wait ran out while Redis servers were in their restart quarantine.
pub(crate) fn quarantine_note(total: usize, quarantined: usize, left: Duration) -> String {
    let hint = "`tractatus lock init` marks brand-new servers so they need none";
    if total == 1 {
        format!(
            "Redis started (new, or restarted with or without its data) or took over in a \
             failover, and is in its restart quarantine (it grants again in {} ms; {hint})",
            left.as_millis()
        )
    } else {
        format!(
            "{quarantined} of {total} Redis masters started (new or restarted) or took over in a \
             failover, and are in their restart quarantine (the first grants again in {} ms; \
             {hint})",
            left.as_millis()
        )
    }
}
