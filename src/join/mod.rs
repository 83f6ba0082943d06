//! Joining a lease an ancestor holds, so that a command started under a lease (a hook wrapped
//! in `tractatus lock run`, `state update`'s command) can call `tractatus` again on the same
//! lock instead of waiting for its own parent.
//!
//! A holder hands its command a capability in the environment, [`ENV_VAR`]: for each lease
//! its scope (Redis namespace, or the local lock directory), name, fencing token, owner id (the
//! Redis lease value, which any Redis client can read), the holding process (pid, start time,
//! PID namespace) and the lease's **secret**: 256 random bits made at the grant, written
//! nowhere but this environment. Redis keeps only its SHA-256 in the holder record (`join`),
//! and so does a local lock file. [`crate::Coordinator::acquire`] joins a lease named there, instead
//! of waiting, only when both hold:
//! - the holding process, with the same start time and in our PID namespace, is this process
//!   or one of its ancestors (`/proc` parents): a copy of the capability given to a process
//!   outside the tree is worth nothing (the lock is acquired as usual), and neither is one
//!   whose holder is gone and whose pid was reused;
//! - the coordinator confirms it (`lua/join.lua`, on a majority, atomically with reading the
//!   lease): the lease is still that owner's, the secret's hash and the token match. For local
//!   locks: the lock file is locked, the kernel (`/proc/locks`) says by that pid, and its record
//!   names that token and the secret's hash. A lease that ended is no capability (acquired as
//!   usual); one that stands but whose secret, token or locking process does not match was
//!   forged or edited: refused, [`crate::Error::LeaseLost`] (76), since the caller claims to work
//!   under a lease it does not have.
//!
//! A joiner has no power over the lease: a join writes nothing of it (no renewal, no TTL, no
//! release); the joined lease's validity is what is left of the holder's, refreshed by asking
//! again. So a joiner that edits its capability can at worst be refused. Each join is in the
//! audit log (`join`, with the joiner's session, host and pid as `by`).
//!
//! Joiners of one lease take turns, among themselves and within one process alike: on Redis
//! the turn is a key in the lock's hash slot (`turn`, naming the lease and the joiner) taken by
//! the join script, lasting one TTL unless the joiner refreshes it (a joined lease's
//! keep-alive does, every third), and given up at release or drop; a waiting joiner asks again
//! every 10 to 15 ms, and takes over at once a turn whose joiner's process is gone (all joiners
//! run on the holder's host, in its PID namespace). Locally the turn is a `flock` on
//! `<lock>.join`, which the kernel gives up when its joiner dies. Turns nest: a joined lease's
//! command joins under its turn, one level deeper (`turn:<depth>`, `<lock>.join<depth>`), so a
//! nested `lock run` under a joiner does not wait for itself, while its own children still take
//! turns. The holder itself does not take turns: its own work and its joiners' are its to
//! order. On Redis waiting joiners are served in line (the order they first asked; a place
//! lapses a second after its joiner stops asking), so one that leaves and asks again at once
//! does not pass them; locally the kernel picks among waiters on the `flock`.
//!
//! A joined [`Lease`] has the holder's token and TTL, and its release leaves the holder's lease
//! held. Commits stay fenced: the fence record keeps a hash of the committing owner, so only
//! the same lease may commit again with an equal token (see `state/fence.rs`).
//!
//! Within one process (an embedder, the Node addon) nothing is inherited: join a lease you
//! hold with [`Lease::join`] (or write a state file under it with
//! [`crate::state::StateFile::write_under`]); two tasks of one process that each acquire
//! still exclude each other.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::{FencingToken, Identity, Lease};

pub(crate) mod turn;

pub(crate) use turn::{Joined, join_on, leave_turn_on};

/// The environment variable a holder sets on its command: the leases it may join.
pub(crate) const ENV_VAR: &str = "TRACTATUS_LEASE";

/// How many parents are followed up from a process before giving up: deeper trees than this
/// do not occur, and a loop in a `/proc` read racing with exits must end.
const MAX_ANCESTORS: usize = 1024;

/// A fresh secret for a lease: 256 random bits, hex.
pub(crate) fn new_secret() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // getrandom failing is not something a lock can work around; two v4 UUIDs (244 bits
        // from the same source through another path) are the fallback.
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        bytes[..16].copy_from_slice(a.as_bytes());
        bytes[16..].copy_from_slice(b.as_bytes());
    }
    hex(&bytes)
}

/// SHA-256 of a secret, hex: what Redis and lock files keep instead of it.
pub(crate) fn secret_hash(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The process holding a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) pid: u32,
    pub(crate) start: u64,
    pub(crate) ns: String,
}

impl Origin {
    pub(crate) fn of(identity: &Identity) -> Origin {
        Origin {
            pid: identity.pid,
            start: identity.pid_start.unwrap_or(0),
            ns: identity.pid_ns.clone().unwrap_or_default(),
        }
    }

    /// True when this is the current process or one of its ancestors, in our PID namespace.
    fn is_self_or_ancestor(&self) -> bool {
        if self.start == 0
            || self.ns.is_empty()
            || crate::sys::pid_namespace() != Some(self.ns.clone())
        {
            return false;
        }
        let mut pid = std::process::id();
        for _ in 0..MAX_ANCESTORS {
            let Some(stat) = crate::sys::proc_stat(pid) else {
                return false;
            };
            if pid == self.pid {
                return stat.start_ticks == self.start;
            }
            if stat.ppid == 0 || stat.ppid == pid {
                return false;
            }
            pid = stat.ppid;
        }
        false
    }
}

/// One joinable lease, as carried in [`ENV_VAR`]. Any other field (an older `ttl_ms`) is
/// ignored: nothing a joiner presents sets anything of the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Grant {
    /// `redis:<namespace>` or `local:<lock directory>`: where the name means this lock.
    pub(crate) scope: String,
    pub(crate) name: String,
    pub(crate) token: FencingToken,
    /// The lease's owner id (public: the Redis lease value).
    pub(crate) owner: String,
    /// The lease's secret (see the module doc).
    pub(crate) secret: String,
    pub(crate) pid: u32,
    pub(crate) start: u64,
    pub(crate) ns: String,
    /// The joiners (ids) whose turns the bearer works under, outermost first: empty when the
    /// lease is the holder's own; a joined lease adds its own for its command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) turns: Vec<String>,
}

impl Grant {
    pub(crate) fn origin(&self) -> Origin {
        Origin {
            pid: self.pid,
            start: self.start,
            ns: self.ns.clone(),
        }
    }
}

/// The leases a process may join: what its ancestors handed down in [`ENV_VAR`], or what a
/// holder hands its command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capability {
    grants: Vec<Grant>,
}

impl Capability {
    /// Read from the text of [`ENV_VAR`]. Text that is not a capability is no capability (the
    /// lock is then acquired as usual): it grants nothing, so there is nothing to refuse.
    pub fn parse(text: &str) -> Capability {
        Capability {
            grants: serde_json::from_str(text).unwrap_or_default(),
        }
    }

    /// What this process inherited in [`ENV_VAR`] (read once).
    pub(crate) fn inherited() -> &'static Capability {
        static INHERITED: OnceLock<Capability> = OnceLock::new();
        INHERITED.get_or_init(|| {
            std::env::var(ENV_VAR)
                .map(|t| Capability::parse(&t))
                .unwrap_or_default()
        })
    }

    /// The capability of `leases` alone.
    pub fn of(leases: &[Lease]) -> Capability {
        Capability {
            grants: leases.iter().map(Lease::grant).collect(),
        }
    }

    /// What a command started under `leases` gets: those leases, and what this process
    /// inherited for other locks (a nested `lock run` passes its ancestors' on).
    pub fn for_command(leases: &[Lease]) -> Capability {
        let mut cap = Capability::of(leases);
        for g in &Capability::inherited().grants {
            if !cap
                .grants
                .iter()
                .any(|c| c.scope == g.scope && c.name == g.name)
            {
                cap.grants.push(g.clone());
            }
        }
        cap
    }

    /// The leases it carries.
    pub(crate) fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// True when it carries nothing.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The text for [`ENV_VAR`].
    pub(crate) fn to_env(&self) -> String {
        serde_json::to_string(&self.grants).unwrap_or_else(|_| "[]".to_owned())
    }

    fn find(&self, scope: &str, name: &str) -> Option<&Grant> {
        self.grants
            .iter()
            .find(|g| g.scope == scope && g.name == name)
    }
}

/// The value of [`ENV_VAR`] for a command started under `leases` (`lock run`'s CMD,
/// `state update`'s command).
pub(crate) fn command_env(leases: &[Lease]) -> String {
    Capability::for_command(leases).to_env()
}

/// A short hash of an owner id: enough to tell two leases apart in the fence record.
pub(crate) fn owner_tag(owner: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, owner.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::{AcquireOptions, Config, Coordinator};

    fn me() -> Origin {
        Origin::of(&Identity::current("t"))
    }

    #[test]
    fn only_this_process_and_its_ancestors_with_their_start_times_are_in_the_tree() {
        let me = me();
        assert!(me.is_self_or_ancestor());
        let parent_pid = nix::unistd::getppid().as_raw() as u32;
        let parent = Origin {
            pid: parent_pid,
            start: crate::sys::process_start_ticks(parent_pid).unwrap(),
            ns: me.ns.clone(),
        };
        assert!(parent.is_self_or_ancestor());
        // The same pid started at another time (a reused pid) is not our ancestor.
        let reused = Origin {
            start: parent.start + 1,
            ..parent.clone()
        };
        assert!(!reused.is_self_or_ancestor());
        let other_ns = Origin {
            ns: "1".into(),
            ..parent
        };
        assert!(!other_ns.is_self_or_ancestor());
        // A child of ours is outside our tree, looking up.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = crate::sys::process_start_ticks(pid).unwrap();
        let child_origin = Origin {
            pid,
            start,
            ns: me.ns,
        };
        assert!(!child_origin.is_self_or_ancestor());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn text_that_is_not_a_capability_grants_nothing() {
        assert!(Capability::parse("").is_empty());
        assert!(Capability::parse("garbage").is_empty());
        assert!(Capability::parse(r#"[{"name":"x"}]"#).is_empty());
        assert!(Capability::parse("[]").is_empty());
    }

    #[tokio::test]
    async fn a_local_lease_is_joined_only_while_its_holder_holds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Coordinator::local(
            Config::new(vec![]),
            Identity::current("t"),
            tmp.path().to_path_buf(),
        )
        .unwrap();
        let held = c.try_acquire("a/b").await.unwrap();
        let cap = Capability::parse(&Capability::of(std::slice::from_ref(&held)).to_env());
        assert!(!cap.is_empty());
        let join = |cap: Capability| {
            let c = c.clone();
            async move { c.join_within("a/b", &cap, Duration::ZERO).await.unwrap() }
        };
        let joined = join(cap.clone()).await.unwrap();
        assert!(joined.is_joined() && joined.token() == held.token());
        let other = c.join_within("other", &cap, Duration::ZERO).await;
        assert!(other.unwrap().is_none(), "another lock");
        // Releasing the joined lease leaves the holder's held.
        joined.release().await.unwrap();
        let e = c.try_acquire("a/b").await.err().unwrap();
        assert_eq!(e.exit_code(), 75, "{e}");
        let again = held.join().await.unwrap();
        held.release().await.unwrap();
        // The holder let go: the joined lease is lost, and nothing joins any more.
        assert!(again.check_valid().unwrap_err().is_lease_lost());
        assert!(join(cap).await.is_none());
        let fresh = c.acquire("a/b", &AcquireOptions::default()).await.unwrap();
        assert!(!fresh.is_joined());
        fresh.release().await.unwrap();
    }

    #[test]
    fn a_secret_is_256_random_bits_and_only_its_hash_is_kept() {
        let (a, b) = (new_secret(), new_secret());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        // `printf %s abc | sha256sum`
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(secret_hash(&a), a);
    }
}
