//! `lock init`: the operator marks brand-new Redis servers as initialized, so their first
//! grants do not wait out the restart quarantine (see `lua/grant.lua`). The mark names the
//! server's current run, so a server that later restarts empty is quarantined again.

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::coordinator::{Backend, Coordinator};
use crate::error::{Error, Result};

/// The work of [`Coordinator::mark_initialized`].
pub(crate) async fn mark_initialized(coordinator: &Coordinator) -> Result<usize> {
    let Backend::Redis(quorum) = &coordinator.inner.backend else {
        return Ok(0);
    };
    let nodes = quorum.nodes();
    let mut pending: FuturesUnordered<_> = nodes
        .iter()
        .map(|node| async move {
            let result = match node.admin() {
                Some(admin) => admin.mark_initialized().await.map_err(|e| e.cause),
                None => Err("this node cannot be marked".to_owned()),
            };
            (node.label(), result)
        })
        .collect();
    let (mut marked, mut nodes_marked, mut causes) = (0, 0, Vec::new());
    while let Some((label, result)) = pending.next().await {
        match result {
            Ok(run_ids) => {
                marked += run_ids.len();
                nodes_marked += 1;
            }
            Err(cause) => causes.push((label, cause)),
        }
    }
    if causes.is_empty() {
        Ok(marked)
    } else {
        Err(Error::Unavailable {
            reachable: nodes_marked,
            total: nodes.len(),
            needed: nodes.len(),
            causes,
        })
    }
}
