//! Joining a lease an ancestor holds, so that a command started under a lease (a hook wrapped
//! in `tractatus lock run`, `state update`'s command) can call `tractatus` again on the same
//! lock instead of waiting for its own parent.
//!
//! A holder hands its command a capability in the environment, [`ENV_VAR`]: for each lease
//! its scope (Redis namespace, or the local lock directory), name, fencing token, TTL, secret
//! owner id (the random value stored as the Redis lease value), and the holding process (pid,
//! start time, PID namespace). [`Coordinator::acquire`] joins a lease named there, instead of
//! waiting, only when both hold:
//! - the holding process, with the same start time and in our PID namespace, is this process
//!   or one of its ancestors (`/proc` parents): a copy of the capability given to a process
//!   outside the tree is worth nothing, and neither is one whose holder is gone and whose pid
//!   was reused;
//! - the coordinator confirms the lease is still that owner's: an owner-checked renewal on a
//!   majority (which also keeps it fresh), or, for local locks, the lock file still locked and
//!   naming that pid and token. A forged, stale or broken owner is not confirmed.
//!
//! Otherwise the lock is acquired as usual (and so waited for). A joined [`Lease`] has the
//! holder's token and TTL, is renewed and checked like any lease, and its release leaves the
//! holder's lease held. Commits stay fenced: the fence record keeps a hash of the committing
//! owner, so only the same lease may commit again with an equal token (see `state/fence.rs`).
//!
//! Within one process (an embedder, the Node addon) nothing is inherited: join a lease you
//! hold with [`Lease::join`] (or write a state file under it with
//! [`crate::state::StateFile::write_under`]); two tasks of one process that each acquire
//! still exclude each other.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::connect::Backend;
use crate::keys::LockKeys;
use crate::quorum::Renewal;
use crate::{Coordinator, Error, FencingToken, Identity, Lease, Result};

/// The environment variable a holder sets on its command: the leases it may join.
pub const ENV_VAR: &str = "TRACTATUS_LEASE";

/// How many parents are followed up from a process before giving up: deeper trees than this
/// do not occur, and a loop in a `/proc` read racing with exits must end.
const MAX_ANCESTORS: usize = 1024;

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

/// One joinable lease, as carried in [`ENV_VAR`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Grant {
    /// `redis:<namespace>` or `local:<lock directory>`: where the name means this lock.
    pub(crate) scope: String,
    pub(crate) name: String,
    pub(crate) token: FencingToken,
    pub(crate) owner: String,
    pub(crate) pid: u32,
    pub(crate) start: u64,
    pub(crate) ns: String,
    pub(crate) ttl_ms: u64,
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
    pub fn inherited() -> &'static Capability {
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

    /// True when it carries nothing.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The text for [`ENV_VAR`].
    pub fn to_env(&self) -> String {
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
pub fn command_env(leases: &[Lease]) -> String {
    Capability::for_command(leases).to_env()
}

/// A short hash of an owner id: enough to tell two leases apart in the fence record, and
/// useless for joining (a lease is confirmed by its full owner id).
pub(crate) fn owner_tag(owner: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, owner.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

impl Coordinator {
    /// Where a lock name means the same lock: the Redis namespace, or the local directory.
    pub(crate) fn scope(&self) -> String {
        match &self.inner.backend {
            Backend::Redis(_) => format!("redis:{}", self.inner.config.namespace),
            Backend::Local(local) => format!("local:{}", local.dir().display()),
        }
    }

    /// Join lock `name` through `capability`: `Some` when it names the lock, its holder is
    /// this process or an ancestor, and the coordinator confirms that holder's lease still
    /// stands (see the module doc); `None` otherwise (acquire it as usual).
    pub async fn try_join(&self, name: &str, capability: &Capability) -> Option<Lease> {
        let grant = capability.find(&self.scope(), name)?;
        // A renewal with no TTL would end the holder's lease on Redis (PEXPIRE 0).
        if grant.ttl_ms == 0 || !grant.origin().is_self_or_ancestor() {
            return None;
        }
        match &self.inner.backend {
            Backend::Redis(q) => {
                let keys = LockKeys::new(&self.inner.config.namespace, name);
                let ttl = std::time::Duration::from_millis(grant.ttl_ms);
                match q.renew(&keys, &grant.owner, ttl).await {
                    Renewal::Renewed { valid_until } => Some(Lease::joined(
                        self.clone(),
                        grant,
                        Some((keys, valid_until)),
                    )),
                    Renewal::Lost | Renewal::Undecided { .. } => None,
                }
            }
            Backend::Local(local) => local
                .held_by(name, grant.pid, grant.token)
                .then(|| Lease::joined(self.clone(), grant, None)),
        }
    }
}

impl Lease {
    /// Another lease on this one, for more work under it in this process (say, a state file
    /// written under a lock the caller holds): same token, checked and renewed like any
    /// lease, and releasing it leaves this one held. Errors with [`Error::LeaseLost`] when
    /// this lease is no longer confirmed by the coordinator.
    pub async fn join(&self) -> Result<Lease> {
        self.check_valid()?;
        let capability = Capability::of(std::slice::from_ref(self));
        self.coordinator()
            .try_join(self.name(), &capability)
            .await
            .ok_or_else(|| Error::LeaseLost {
                name: self.name().to_owned(),
                reason: "the coordinator no longer confirms it".to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AcquireOptions, Config};

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
        let joined = c.try_join("a/b", &cap).await.unwrap();
        assert!(joined.is_joined() && joined.token() == held.token());
        assert!(c.try_join("other", &cap).await.is_none(), "another lock");
        // Releasing the joined lease leaves the holder's held.
        joined.release().await.unwrap();
        let e = c.try_acquire("a/b").await.err().unwrap();
        assert_eq!(e.exit_code(), 75, "{e}");
        let again = held.join().await.unwrap();
        held.release().await.unwrap();
        // The holder let go: the joined lease is lost, and nothing joins any more.
        assert!(again.check_valid().unwrap_err().is_lease_lost());
        assert!(c.try_join("a/b", &cap).await.is_none());
        let fresh = c.acquire("a/b", &AcquireOptions::default()).await.unwrap();
        assert!(!fresh.is_joined());
        fresh.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_forged_or_broken_owner_is_not_confirmed_and_a_joined_lease_renews_its_holders() {
        let (c, fakes) = crate::fake_node::coordinator(3, std::time::Duration::from_secs(3));
        let held = c.try_acquire("L").await.unwrap();
        let mut forged = Capability::of(std::slice::from_ref(&held));
        forged.grants[0].owner = "0123456789abcdef0123456789abcdef".into();
        assert!(c.try_join("L", &forged).await.is_none());
        let mut joined = held.join().await.unwrap();
        joined.keep_alive(std::time::Duration::from_secs(3600));
        assert_eq!(joined.ttl(), held.ttl());
        // The lease is broken on every node: the joined lease learns it at its next renewal.
        for f in &fakes {
            f.state().lease = None;
        }
        let reason = joined.lost().await;
        assert!(reason.contains("no longer ours"), "{reason}");
        assert!(held.join().await.err().unwrap().is_lease_lost());
    }
}
