//! The waiter's side of a server-side hand-off (see `lua/release.lua`): what a release message
//! and a hand-off box say, and when a waiter may take a lease handed to it without asking again.
//!
//! A queued waiter registers, with its place in line, the owner id and secret hash of its next
//! lease. A release that finds it first in line grants it the lease at once, on a short
//! probation TTL ([`PROBATION`]), pushes the owner id and token into the waiter's box (a list
//! only a client that may write can push to; the waiter reads it with `BLPOP` on a connection
//! of its own) and names the waiter, owner id and token in its message. The box is proof: the
//! waiter takes the lease from it with no round trip of its own, and one renewal in the
//! background takes it off probation before anyone uses a whole TTL's validity (a `lock run`
//! guard's deadline must not be the probation's). The message is only a hint: anyone who may
//! PUBLISH can send one, so a waiter without a box tries at once, and its grant finds the
//! lease its own and names the token. On several
//! masters the attempt a waiter makes once a majority called it confirms the hand-offs (each
//! node's grant finds the lease already that owner's and extends it to the TTL) and lifts the
//! tokens to the highest one named. (Releases over several masters hand nothing over for now:
//! see `Quorum::end`.)

use std::time::Duration;

use crate::backend::WAKE_ALL;
use crate::clock::{Deadline, Stamp};
use crate::quorum::validity;

/// How long a lease handed to a waiter lasts before the waiter confirms it: a waiter that died
/// after its last heartbeat holds the lock up this long at most, not a TTL. Above a heartbeat
/// and a slow round trip or two, so a live waiter confirms in time.
pub(crate) const PROBATION: Duration = Duration::from_millis(1000);

/// One release message, as a waiter reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    /// The waiter that should try now, or [`WAKE_ALL`].
    pub(crate) who: String,
    /// For a hand-off: the owner id the lease was granted under, and its token.
    pub(crate) handed: Option<(String, u64)>,
}

impl Call {
    /// `<waiter>`, `<waiter> <owner> <token>` or [`WAKE_ALL`]; anything else wakes everyone.
    pub(crate) fn parse(msg: &str) -> Call {
        let mut parts = msg.split(' ');
        let who = parts.next().unwrap_or(WAKE_ALL).to_owned();
        let handed = match (parts.next(), parts.next(), parts.next()) {
            (Some(owner), Some(token), None) => token
                .parse::<u64>()
                .ok()
                .filter(|_| !owner.is_empty())
                .map(|t| (owner.to_owned(), t)),
            _ => None,
        };
        Call { who, handed }
    }

    /// The token handed to `owner` of waiter `me`, if this message hands it the lease.
    pub(crate) fn handed_to(&self, me: &str, owner: &str) -> Option<u64> {
        match &self.handed {
            Some((o, token)) if self.who == me && o == owner => Some(*token),
            _ => None,
        }
    }
}

/// The token in a value of our box (`<owner> <token>`), if it hands the lease to `owner`.
pub(crate) fn boxed_token(value: &str, owner: &str) -> Option<u64> {
    let (o, token) = value.split_once(' ')?;
    (o == owner && !o.is_empty())
        .then(|| token.parse::<u64>().ok())
        .flatten()
}

/// Validity of a lease handed to us on one node, or `None` if too little is left to take it
/// from the box (the next attempt then finds out). `refused_at`: when we sent the attempt the node last refused; the
/// node granted after it ran that attempt, so the probation started after this moment.
pub(crate) fn handed_validity(refused_at: Stamp, ttl: Duration) -> Option<Deadline> {
    let probation = PROBATION.min(ttl);
    let elapsed = refused_at.elapsed();
    validity(probation, elapsed).map(|left| Deadline::new(refused_at, elapsed + left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_the_head_and_what_it_was_handed() {
        let c = Call::parse("w1 o1 1733371234567890");
        assert_eq!(c.who, "w1");
        assert_eq!(c.handed_to("w1", "o1"), Some(1_733_371_234_567_890));
        assert_eq!(c.handed_to("w1", "o2"), None, "another owner of ours");
        assert_eq!(c.handed_to("w2", "o1"), None, "another waiter");
        assert_eq!(Call::parse("w1").handed, None);
        assert_eq!(Call::parse(WAKE_ALL).who, WAKE_ALL);
        assert_eq!(
            Call::parse("w1 o1 x").handed,
            None,
            "a token that is no number"
        );
        assert_eq!(Call::parse("w1 o1 1 extra").handed, None);
    }

    #[test]
    fn a_box_value_hands_over_only_to_its_owner_and_with_a_number() {
        assert_eq!(boxed_token("o1 42", "o1"), Some(42));
        assert_eq!(boxed_token("o1 42", "o2"), None);
        assert_eq!(boxed_token("o1 x", "o1"), None);
        assert_eq!(boxed_token("o1 42 7", "o1"), None);
        assert_eq!(boxed_token(" 42", ""), None);
        assert_eq!(boxed_token("o1", "o1"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handed_lease_is_valid_for_the_probation_from_the_refusal_less_drift() {
        let at = Stamp::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let d = handed_validity(at, Duration::from_secs(30)).unwrap();
        // 1000 ms probation, 300 ms gone, drift 12 ms.
        assert_eq!(d.remaining(), Duration::from_millis(688));
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(handed_validity(at, Duration::from_secs(30)).is_none());
        // A TTL below the probation caps it.
        let at = Stamp::now();
        assert!(
            handed_validity(at, Duration::from_millis(100))
                .unwrap()
                .remaining()
                <= Duration::from_millis(100)
        );
    }
}
