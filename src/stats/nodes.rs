//! Each Redis node as the operator's views show it: reachable or not, its round trip, and how
//! long its restart quarantine still refuses locks it does not know.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::coordinator::{Backend, Coordinator};
use crate::ops::admin_of;

/// One configured node, probed once.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeHealth {
    /// The node's URL, without its password.
    pub node: String,
    /// It answered.
    pub up: bool,
    /// Time the probe took, ms (null when it did not answer).
    pub round_trip_ms: Option<f64>,
    /// Time left of its restart quarantine, ms: 0 once its uptime reached the quarantine or when
    /// `lock init` marked this server run (null when it did not answer). A failover quarantine
    /// (per hash slot, after a promotion) is not shown.
    pub quarantine_left_ms: Option<u64>,
    /// Why it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The work of [`Coordinator::node_health`].
pub(crate) async fn node_health(coordinator: &Coordinator) -> Vec<NodeHealth> {
    let Backend::Redis(q) = &coordinator.inner.backend else {
        return Vec::new();
    };
    let quarantine = coordinator.inner.config.quarantine;
    let mut out = Vec::new();
    for node in q.nodes() {
        let node_label = node.label();
        let started = Instant::now();
        let answer = match admin_of(node.as_ref()) {
            Ok(admin) => admin.probe().await.map_err(|e| e.cause),
            Err(e) => Err(e.to_string()),
        };
        let took = started.elapsed();
        out.push(match answer {
            Ok(probe) => NodeHealth {
                node: node_label,
                up: true,
                round_trip_ms: Some(took.as_secs_f64() * 1000.0),
                // grant.lua counts the uptime from one second less (INFO's whole seconds);
                // a run `lock init` marked has no restart quarantine.
                quarantine_left_ms: Some(if probe.marked {
                    0
                } else {
                    quarantine
                        .saturating_sub(probe.uptime.saturating_sub(Duration::from_secs(1)))
                        .as_millis() as u64
                }),
                error: None,
            },
            Err(cause) => NodeHealth {
                node: node_label,
                up: false,
                round_trip_ms: None,
                quarantine_left_ms: None,
                error: Some(cause),
            },
        });
    }
    out
}
