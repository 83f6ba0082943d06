//! The one place that knows the Redis key layout.
//!
//! Every key of one lock shares the hash tag `{<namespace>:<name>}`, so a lock's keys sit in one
//! hash slot. One key is node-wide: `tractatus:epoch`, read by the grant script in Redlock mode
//! (the restart quarantine). Each node is a standalone Redis master; a Redis Cluster is not a
//! supported node (the grant script would touch two slots and fail with CROSSSLOT).
//! Namespace and name are validated (see [`crate::config`]) and cannot contain `{`, `}` or glob
//! characters, so one namespace's pattern never matches another's keys.

/// The keys and the wake-up channel of one lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockKeys {
    /// String: the current owner id, with the lease's expiry.
    pub lease: String,
    /// Integer: the last fencing token minted on this node.
    pub fence: String,
    /// Hash: the holder's metadata.
    pub holder: String,
    /// Sorted set: waiters and their registration expiry.
    pub waiters: String,
    /// Stream: the lock's audit trail.
    pub log: String,
    /// Pub/sub channel announcing a release.
    pub channel: String,
    /// Node-wide: from when this node may grant (absent on a new or restarted-empty node).
    pub epoch: String,
}

const PREFIX: &str = "tractatus:{";

impl LockKeys {
    /// The keys of lock `name` in `namespace`.
    pub fn new(namespace: &str, name: &str) -> Self {
        let base = format!("{PREFIX}{namespace}:{name}}}");
        LockKeys {
            lease: format!("{base}:lease"),
            fence: format!("{base}:fence"),
            holder: format!("{base}:holder"),
            waiters: format!("{base}:waiters"),
            log: format!("{base}:log"),
            channel: format!("{base}:released"),
            epoch: "tractatus:epoch".to_owned(),
        }
    }
}

/// SCAN pattern matching the lease keys of every lock in `namespace`.
pub fn lease_pattern(namespace: &str) -> String {
    format!("{PREFIX}{namespace}:*}}:lease")
}

/// SCAN pattern matching the audit logs of every lock in `namespace`.
pub fn log_pattern(namespace: &str) -> String {
    format!("{PREFIX}{namespace}:*}}:log")
}

/// The lock name inside a key found by one of the patterns above, if it is of `namespace`.
pub fn name_from_key<'k>(namespace: &str, key: &'k str, suffix: &str) -> Option<&'k str> {
    key.strip_prefix(PREFIX)?
        .strip_prefix(namespace)?
        .strip_prefix(':')?
        .strip_suffix(suffix)?
        .strip_suffix('}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag_and_round_trip() {
        let k = LockKeys::new("ns1", ".claude/a.json");
        assert_eq!(k.lease, "tractatus:{ns1:.claude/a.json}:lease");
        assert_eq!(
            name_from_key("ns1", &k.lease, ":lease"),
            Some(".claude/a.json")
        );
        assert_eq!(name_from_key("ns", &k.lease, ":lease"), None);
        assert_eq!(name_from_key("ns1", &k.log, ":log"), Some(".claude/a.json"));
        assert_eq!(lease_pattern("ns1"), "tractatus:{ns1:*}:lease");
    }
}
