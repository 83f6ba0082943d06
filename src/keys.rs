//! The one place that knows the Redis key layout.
//!
//! Every key of one lock shares the hash tag `{<namespace>:<name>}`, so a lock's keys sit in one
//! hash slot and every script touches one slot only (what Redis Cluster requires). There is no
//! node-wide key: the one thing a node knows about itself, the restart-quarantine marker written
//! by `lock init`, is kept once per hash slot, as `tractatus:init:{<tag>}` where `<tag>` is a
//! short string whose slot is the slot of the lock ([`init_key`]), so the grant script reads the
//! marker of its own slot. The failover stamp ([`epoch_key`]) is kept per slot the same way.
//! Namespace and name are validated (see [`crate::config`]) and cannot contain `{`, `}` or glob
//! characters, so one namespace's pattern never matches another's keys.
//!
//! Slot `i` of a slot set `name` (`lock run --slots`, see `slots`) is a lock of its own named
//! `name#i` ([`slot_lock_name`]), so its keys share the tag `{<namespace>:name#i}`: no lock name
//! a user can give contains `#`, so no plain lock shares a slot's keys, and each slot's scripts
//! touch its own hash slot only (the slots of one set may spread over a cluster).
//!
//! # Finding a tag for a slot
//! A slot is CRC16/XMODEM of the hash tag, mod 16384. The tag of slot `s` is the first string,
//! in a fixed order over 3 characters of `[0-9a-zA-Z_-]` (262 144 candidates, every slot has
//! some), whose slot is `s`: one slot costs about 16 000 one-byte CRC steps on average (73 530
//! at worst; 8 µs on average, 27 µs at worst, in a release build), once per slot and process
//! (cached); all 16 384 are found in one walk. Both ways give the same tag, so `lock init` and
//! the grant script agree.

use std::sync::OnceLock;

/// The keys and the wake-up channel of one lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockKeys {
    /// String: the current owner id, with the lease's expiry.
    pub lease: String,
    /// Integer: the last fencing token minted on this node (seeded from the clock when missing,
    /// see `lua/grant.lua`).
    pub fence: String,
    /// Hash: the holder's metadata.
    pub holder: String,
    /// Sorted set: waiters and their registration expiry (a waiter's heartbeat moves it on).
    pub waiters: String,
    /// Sorted set: waiters and their place in line, a score each waiter chose once (see
    /// `lua/grant.lua`); a member whose registration in `waiters` lapsed is dropped.
    pub queue: String,
    /// Hash: who each queued waiter is (`session`, `host`, `pid`, since when, tab-separated),
    /// for `lock status`.
    pub waiting: String,
    /// Hash: the wait-for edges of the waiters of this lock whose process trees hold other
    /// locks (waiter id -> edge; see `crate::deadlock`), each live while its waiter's
    /// registration in `waiters` is.
    pub waitfor: String,
    /// Hash: what a release needs to hand the lease to each queued waiter (owner id, TTL,
    /// quarantine, secret hash, command, tab-separated; see `lua/release.lua`).
    pub handoff: String,
    /// String prefix of the waiters' hand-off boxes: the box of waiter `w` is `<handed>:<w>`
    /// ([`LockKeys::handed_box`]), a list to which a release that hands `w` the lease pushes
    /// the owner id and token (see `lua/release.lua`), read by `w` alone with `BLPOP`.
    pub handed: String,
    /// Stream: the lock's audit trail.
    pub log: String,
    /// Pub/sub channel announcing a release.
    pub channel: String,
    /// String: the owner id of the last lease released, kept for a minute, so that a release
    /// sent again answers as the first one did (see `lua/release.lua`).
    pub ended: String,
    /// String: the id of the joiner whose turn it is among the joiners of the lease (see
    /// `lua/join.lua`), expiring unless refreshed.
    pub turn: String,
    /// String, in the lock's hash slot but shared by every lock of that slot: the run id of the
    /// server run that `lock init` marked as brand-new (see [`init_key`]).
    pub init: String,
    /// Hash, in the lock's hash slot but shared by every lock of that slot: the replication id
    /// the slot was last granted under and, after a failover, until when the slot is in
    /// quarantine (see [`epoch_key`] and `lua/grant.lua`).
    pub epoch: String,
}

const PREFIX: &str = "tractatus:{";

/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

impl LockKeys {
    /// The keys of lock `name` in `namespace`.
    pub fn new(namespace: &str, name: &str) -> Self {
        let tag = format!("{namespace}:{name}");
        let base = format!("{PREFIX}{tag}}}");
        let slot = slot_of_tag(tag.as_bytes());
        LockKeys {
            lease: format!("{base}:lease"),
            fence: format!("{base}:fence"),
            holder: format!("{base}:holder"),
            waiters: format!("{base}:waiters"),
            queue: format!("{base}:queue"),
            waiting: format!("{base}:waiting"),
            waitfor: format!("{base}:waitfor"),
            handoff: format!("{base}:handoff"),
            handed: format!("{base}:handed"),
            log: format!("{base}:log"),
            channel: format!("{base}:released"),
            ended: format!("{base}:ended"),
            turn: format!("{base}:turn"),
            init: init_key(slot),
            epoch: epoch_key(slot),
        }
    }
}

impl LockKeys {
    /// The turn among the joiners at nesting `depth` (1: joiners of the holder; 2: joiners of
    /// a joiner, under its turn; ...): [`LockKeys::turn`], then `turn:<depth>`.
    pub(crate) fn turn_at(&self, depth: usize) -> String {
        if depth <= 1 {
            self.turn.clone()
        } else {
            format!("{}:{depth}", self.turn)
        }
    }

    /// The hand-off box of waiter `waiter`: in the lock's slot (the hash tag comes first), as
    /// `lua/release.lua` builds it from [`LockKeys::handed`].
    pub fn handed_box(&self, waiter: &str) -> String {
        format!("{}:{waiter}", self.handed)
    }

    /// The line for the turn at `depth`: sorted sets of the waiting joiners' places
    /// (`<turn>:queue`) and registration expiries (`<turn>:waiting`), in the lock's slot.
    pub(crate) fn turn_line_at(&self, depth: usize) -> [String; 2] {
        let turn = self.turn_at(depth);
        [format!("{turn}:queue"), format!("{turn}:waiting")]
    }
}

/// What separates a slot set's name from the slot's index in the slot's lock name.
pub(crate) const SLOT_MARK: char = '#';

/// The lock name of slot `index` of slot set `name`: `name#index`.
pub fn slot_lock_name(name: &str, index: u32) -> String {
    format!("{name}{SLOT_MARK}{index}")
}

/// The slot set and index of a slot's lock name (`name#index`, the index in plain decimal);
/// `None` for any other name.
pub(crate) fn parse_slot_lock_name(lock: &str) -> Option<(&str, u32)> {
    let (name, index) = lock.rsplit_once(SLOT_MARK)?;
    let plain = !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && (index == "0" || !index.starts_with('0'));
    if name.is_empty() || name.contains(SLOT_MARK) || !plain {
        return None;
    }
    Some((name, index.parse().ok()?))
}

/// The restart-quarantine marker of hash slot `slot` (0..16384).
pub fn init_key(slot: u16) -> String {
    format!("tractatus:init:{{{}}}", tag_for_slot(slot))
}

/// The failover stamp of hash slot `slot` (0..16384): a hash `{replid, until}` telling which
/// replication history (a master's `master_replid`) last granted in the slot, and until when
/// the slot refuses grants after a promoted replica took over (see `lua/grant.lua`). In the
/// slot's own hash tag, so the grant script of any lock of the slot may touch it.
pub fn epoch_key(slot: u16) -> String {
    format!("tractatus:epoch:{{{}}}", tag_for_slot(slot))
}

/// Every slot's marker, in slot order: what `lock init` writes on each node.
pub(crate) fn init_keys() -> Vec<String> {
    fill_all_tags();
    (0..SLOTS).map(init_key).collect()
}

/// The hash slot of a key whose hash tag (the text Redis hashes) is `tag`.
pub fn slot_of_tag(tag: &[u8]) -> u16 {
    crc16(tag) % SLOTS
}

/// CRC16/XMODEM (polynomial 0x1021, initial 0), the checksum Redis Cluster slots keys by.
pub(crate) fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0, |crc, &b| crc16_step(crc, b))
}

fn crc16_step(crc: u16, byte: u8) -> u16 {
    (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ byte)]
}

const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Characters of the tags: none of them is `{` or `}`.
const TAG_CHARS: &[u8; 64] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-";

/// Found tags, by slot.
static TAGS: [OnceLock<String>; SLOTS as usize] = [const { OnceLock::new() }; SLOTS as usize];

/// Walk the candidate tags in their fixed order, giving each with its slot to `found`, until it
/// returns true (or every candidate was seen).
fn walk_candidates(mut found: impl FnMut(u16, [u8; 3]) -> bool) {
    for &a in TAG_CHARS {
        let ca = crc16_step(0, a);
        for &b in TAG_CHARS {
            let cb = crc16_step(ca, b);
            for &c in TAG_CHARS {
                if found(crc16_step(cb, c) % SLOTS, [a, b, c]) {
                    return;
                }
            }
        }
    }
}

fn tag_for_slot(slot: u16) -> &'static str {
    let slot = slot % SLOTS;
    TAGS[usize::from(slot)].get_or_init(|| {
        let mut tag = String::new();
        walk_candidates(|s, t| {
            if s == slot {
                tag = String::from_utf8_lossy(&t).into_owned();
            }
            s == slot
        });
        tag
    })
}

/// Find every slot's tag in one walk (the first candidate of each slot, as [`tag_for_slot`]).
fn fill_all_tags() {
    let mut left = TAGS.iter().filter(|t| t.get().is_none()).count();
    walk_candidates(|s, t| {
        let cell = &TAGS[usize::from(s)];
        if cell.get().is_none() {
            let _ = cell.set(String::from_utf8_lossy(&t).into_owned());
            left -= 1;
        }
        left == 0
    });
}

/// The keys of one namespace's session registry (see [`crate::session`]). They share the hash
/// tag `{<namespace>#sessions}`, which no lock's tag can equal (a lock's holds a `:`, and `#` is
/// in neither namespaces nor lock names), so every registry command touches one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Hash: session id -> the entry (JSON: host, pid, repository, command, start time).
    pub entries: String,
    /// Sorted set: session id -> last activity, ms since the Unix epoch.
    pub active: String,
    /// Sorted set: session id -> when it ended, ms since the Unix epoch.
    pub ended: String,
}

impl SessionKeys {
    /// The registry keys of `namespace`.
    pub fn new(namespace: &str) -> Self {
        let base = format!("{PREFIX}{namespace}#sessions}}");
        SessionKeys {
            entries: format!("{base}:entries"),
            active: format!("{base}:active"),
            ended: format!("{base}:ended"),
        }
    }
}

/// SCAN pattern matching the lease keys of every lock in `namespace`.
pub(crate) fn lease_pattern(namespace: &str) -> String {
    format!("{PREFIX}{namespace}:*}}:lease")
}

/// SCAN pattern matching the audit logs of every lock in `namespace`.
pub(crate) fn log_pattern(namespace: &str) -> String {
    format!("{PREFIX}{namespace}:*}}:log")
}

/// The lock name inside a key found by one of the patterns above, if it is of `namespace`.
pub(crate) fn name_from_key<'k>(namespace: &str, key: &'k str, suffix: &str) -> Option<&'k str> {
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

    /// The hash tag Redis hashes: between the first `{` and the next `}`, when not empty.
    fn redis_slot(key: &str) -> u16 {
        let tag = key
            .find('{')
            .and_then(|open| {
                let rest = &key[open + 1..];
                rest.find('}').filter(|&n| n > 0).map(|n| &rest[..n])
            })
            .unwrap_or(key);
        slot_of_tag(tag.as_bytes())
    }

    #[test]
    fn a_slot_has_keys_of_its_own_that_no_plain_lock_name_shares() {
        let k = LockKeys::new("ns", &slot_lock_name("test-db", 3));
        assert_eq!(k.lease, "tractatus:{ns:test-db#3}:lease");
        assert_eq!(redis_slot(&k.fence), redis_slot(&k.lease));
        assert_eq!(redis_slot(&k.init), redis_slot(&k.lease));
        assert_eq!(name_from_key("ns", &k.lease, ":lease"), Some("test-db#3"));
        assert!(crate::config::check_lock_name("test-db#3").is_err());
        assert_eq!(parse_slot_lock_name("test-db#3"), Some(("test-db", 3)));
        assert_eq!(parse_slot_lock_name("a/b.c#0"), Some(("a/b.c", 0)));
        for not in [
            "test-db",
            "#3",
            "a#",
            "a#03",
            "a#-1",
            "a#b",
            "a#1#2",
            "a#99999999999",
        ] {
            assert_eq!(parse_slot_lock_name(not), None, "{not}");
        }
    }

    #[test]
    fn the_session_registry_keys_share_one_slot_apart_from_every_lock() {
        let k = SessionKeys::new("repo-1");
        assert_eq!(k.entries, "tractatus:{repo-1#sessions}:entries");
        assert_eq!(redis_slot(&k.active), redis_slot(&k.entries));
        assert_eq!(redis_slot(&k.ended), redis_slot(&k.entries));
        assert_eq!(name_from_key("repo-1", &k.entries, ":entries"), None);
    }

    #[test]
    fn crc16_is_the_one_redis_cluster_uses() {
        // The reference vectors of the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(redis_slot("foo"), 12182);
        assert_eq!(redis_slot("{user1000}.following"), redis_slot("user1000"));
        assert_eq!(redis_slot("tractatus:{ns:a}:lease"), redis_slot("ns:a"));
    }

    #[test]
    fn every_key_of_a_lock_and_its_init_marker_share_one_slot() {
        for name in ["a", ".claude/session-state.json", "W", "counter", "x/y/z"] {
            let k = LockKeys::new("repo-1", name);
            let slot = redis_slot(&k.lease);
            for key in [
                &k.fence,
                &k.holder,
                &k.waiters,
                &k.queue,
                &k.waiting,
                &k.waitfor,
                &k.handoff,
                &k.handed_box("0123456789abcdef0123456789abcdef"),
                &k.handed_box("{other}"),
                &k.log,
                &k.init,
                &k.epoch,
                &k.turn,
                &k.turn_at(3),
                &k.turn_line_at(1)[0],
                &k.turn_line_at(2)[1],
            ] {
                assert_eq!(redis_slot(key), slot, "{key} is not in the slot of {name}");
            }
        }
    }

    #[test]
    fn every_slot_has_a_marker_and_the_one_walk_agrees_with_the_per_slot_search() {
        let t = std::time::Instant::now();
        let slot = slot_of_tag(b"ns:lock");
        let single = init_key(slot);
        let one = t.elapsed();
        let t = std::time::Instant::now();
        let all = init_keys();
        println!(
            "tag of one slot: {one:?}; all {SLOTS} markers: {:?}",
            t.elapsed()
        );
        assert_eq!(all.len(), usize::from(SLOTS));
        assert_eq!(all[usize::from(slot)], single);
        for (s, key) in all.iter().enumerate() {
            assert_eq!(usize::from(redis_slot(key)), s, "{key}");
        }
        let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
    }
}
