//! The answers to one grant attempt as they come (see `Quorum::grant`).

use std::time::Duration;

use super::trace;
use crate::backend::{GrantReply, NodeError};
use crate::holder::HolderInfo;

/// The answers to one grant attempt so far.
pub(super) struct Tally {
    /// Per node: whether it answered yet.
    pub(super) answered: Vec<bool>,
    /// Nodes that granted, and the counter each minted.
    pub(super) granted: Vec<(usize, u64)>,
    /// Time left on the lease, and its holder, on each node that refused.
    pub(super) refused: Vec<(Duration, HolderInfo)>,
    /// The waiter first in line, as the first refusal that named one said.
    pub(super) head: Option<Box<HolderInfo>>,
    /// Each node that failed, and why.
    pub(super) causes: Vec<(String, String)>,
    /// Time left on the quarantine of each node in one.
    pub(super) quarantined: Vec<Duration>,
    /// Each node's answer as it came, for the debug trace only (see `trace`).
    pub(super) answers: Vec<(usize, String)>,
}

impl Tally {
    /// No answer yet from any of `n` nodes.
    pub(super) fn new(n: usize) -> Self {
        Tally {
            answered: vec![false; n],
            granted: Vec::new(),
            refused: Vec::new(),
            head: None,
            causes: Vec::new(),
            quarantined: Vec::new(),
            answers: Vec::new(),
        }
    }

    /// Count node `i`'s reply, which came `took` after the attempt started.
    pub(super) fn take(
        &mut self,
        i: usize,
        reply: Result<GrantReply, NodeError>,
        label: impl FnOnce() -> String,
        took: Duration,
    ) {
        self.answered[i] = true;
        if trace::on() {
            self.answers.push((i, trace::answer(&reply, took)));
        }
        match reply {
            Ok(GrantReply::Granted { token }) => self.granted.push((i, token)),
            Ok(GrantReply::Refused { pttl, holder, head }) => {
                self.head = self.head.take().or(head);
                self.refused.push((pttl, holder));
            }
            Ok(GrantReply::Quarantined { left }) => self.quarantined.push(left),
            Err(e) => self.causes.push((label(), e.cause)),
        }
    }

    /// Nodes that will not grant this attempt.
    pub(super) fn against(&self) -> usize {
        self.refused.len() + self.causes.len() + self.quarantined.len()
    }
}
