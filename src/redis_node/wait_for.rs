//! The wait-for edges of deadlock detection on a real Redis (`lua/wait_for.lua`): record a
//! waiter's edge, read a lock's owner and its waiters' live edges, log a `deadlock`.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::{RedisNode, text};
use crate::backend::{NodeError, WAIT_FOR_EDGES_MAX, WaitForRequest, WaitForView};
use crate::holder::HolderInfo;

static WAIT_FOR: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/wait_for.lua")));

/// How long a lock's edge hash lasts after its last write: far longer than a waiter's
/// registration (the edges' own lifetime), only so that a hash nobody writes goes away.
const EDGES_KEPT_MS: u64 = 60_000;

impl RedisNode {
    pub(super) async fn wait_for_edges(
        &self,
        req: &WaitForRequest,
    ) -> Result<WaitForView, NodeError> {
        let (k, by) = (&req.keys, &req.by);
        let reply: Value = self
            .call(|mut c| async move {
                WAIT_FOR
                    .key(&k.lease)
                    .key(&k.holder)
                    .key(&k.waiters)
                    .key(&k.waitfor)
                    .key(&k.log)
                    .arg(&req.waiter)
                    .arg(&req.edge)
                    .arg(EDGES_KEPT_MS)
                    .arg(&req.deadlock)
                    .arg(&by.session)
                    .arg(&by.host)
                    .arg(by.pid)
                    .arg(req.log_cap)
                    .arg(WAIT_FOR_EDGES_MAX)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        parse(reply).ok_or_else(|| NodeError::new("unexpected reply to wait_for"))
    }
}

fn parse(v: Value) -> Option<WaitForView> {
    let Value::Array(items) = v else { return None };
    let field = |i: usize| items.get(i).and_then(text);
    let holder = HolderInfo {
        session: field(1)?,
        host: field(2)?,
        pid: field(3)?.parse().unwrap_or(0),
        ..HolderInfo::default()
    };
    let edges = items
        .get(4..)?
        .chunks_exact(2)
        .filter_map(|kv| Some((text(&kv[0])?, text(&kv[1])?)))
        .take(WAIT_FOR_EDGES_MAX)
        .collect();
    Some(WaitForView {
        owner: field(0)?,
        holder,
        edges,
    })
}
