//! The library's one error type: what went wrong, sorted so that a caller can tell
//! "someone else holds it" from "the coordinator is unreachable" from "we lost it".

use std::fmt;
use std::path::PathBuf;

use crate::holder::HolderInfo;

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `tractatus_lock`.
///
/// Use the classifiers ([`Error::is_held`], [`Error::is_unavailable`], [`Error::is_lease_lost`],
/// [`Error::is_bad_data`]) rather than matching every variant: new variants may come.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller gave something malformed: a flag, a duration, a pointer, a lock name.
    #[error("{0}")]
    Usage(String),

    /// The state file, the given JSON or a command's output is not what was expected.
    #[error("{0}")]
    BadData(String),

    /// Too few coordinator nodes answered: Redis down, refused, unauthenticated, too slow.
    #[error("{}", unavailable_message(.reachable, .total, .needed, .causes))]
    Unavailable {
        /// Nodes that answered.
        reachable: usize,
        /// Nodes configured.
        total: usize,
        /// Nodes needed for a quorum.
        needed: usize,
        /// Each failing node (password redacted) with its cause.
        causes: Vec<(String, String)>,
    },

    /// The lock stayed held by someone else for the whole wait.
    #[error("timed out after {waited_ms} ms waiting for lock '{name}'{}{}", holder_suffix(.holder), note_suffix(.note))]
    Timeout {
        /// The lock's name.
        name: String,
        /// How long we waited.
        waited_ms: u128,
        /// Who held it when we gave up, when known.
        holder: Option<Box<HolderInfo>>,
        /// What else stood in the way (masters in restart quarantine), when anything did.
        note: Option<String>,
    },

    /// The lease ran out (or was taken) before the work was committed; nothing was written.
    #[error("lease on '{name}' lost: {reason}")]
    LeaseLost {
        /// The lock's name.
        name: String,
        /// Why: renewal failed, validity ran out, an operator broke it, ...
        reason: String,
    },

    /// A commit carried a fencing token lower than one already committed; nothing was written.
    #[error(
        "stale write to '{name}' refused: fencing token {token} is older than committed token {committed}"
    )]
    Fenced {
        /// The lock's name.
        name: String,
        /// Our token.
        token: u64,
        /// The highest token already committed.
        committed: u64,
    },

    /// The state file changed between our read and our commit (a writer whose lease was broken
    /// or ran out, or a program that takes no lock, wrote it); nothing was written.
    #[error(
        "{name} changed after it was read (another writer committed in between); nothing \
         written: read it again and redo the change"
    )]
    Conflict {
        /// The state file's lock name.
        name: String,
    },

    /// The state file could not be written; the old one is intact.
    #[error("cannot write {}: {source}", .path.display())]
    CannotWrite {
        /// The file we tried to write.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },

    /// A bug or an environment we did not expect.
    #[error("internal error: {0}")]
    Internal(String),
}

fn unavailable_message(
    reachable: &usize,
    total: &usize,
    needed: &usize,
    causes: &[(String, String)],
) -> String {
    let detail: Vec<String> = causes.iter().map(|(n, c)| format!("{n}: {c}")).collect();
    if *total == 1 {
        format!("coordinator unavailable: {}", detail.join("; "))
    } else {
        format!(
            "coordinator unavailable: only {reachable} of {total} Redis nodes reachable, {needed} needed ({})",
            detail.join("; ")
        )
    }
}

fn note_suffix(note: &Option<String>) -> String {
    match note {
        Some(n) => format!(": {n}"),
        None => String::new(),
    }
}

fn holder_suffix(holder: &Option<Box<HolderInfo>>) -> String {
    match holder {
        Some(h) => format!(" (held by {h})"),
        None => String::new(),
    }
}

impl Error {
    /// The lock is held by somebody else (the wait ran out): try again later.
    pub fn is_held(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// The coordinator could not be reached or had no quorum: nothing was done.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// The lease was lost or a newer holder already committed: nothing was written.
    pub fn is_lease_lost(&self) -> bool {
        matches!(
            self,
            Error::LeaseLost { .. } | Error::Fenced { .. } | Error::Conflict { .. }
        )
    }

    /// The data (state file, given JSON, command output) is malformed: nothing was written.
    pub fn is_bad_data(&self) -> bool {
        matches!(self, Error::BadData(_))
    }

    /// The exit code the `tractatus` binary uses for this error (see SPEC's table).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 64,
            Error::BadData(_) => 65,
            Error::Unavailable { .. } => 69,
            Error::Internal(_) => 70,
            Error::CannotWrite { .. } => 73,
            Error::Timeout { .. } => 75,
            Error::LeaseLost { .. } | Error::Fenced { .. } | Error::Conflict { .. } => 76,
        }
    }

    pub(crate) fn usage(msg: impl fmt::Display) -> Self {
        Error::Usage(msg.to_string())
    }

    pub(crate) fn bad_data(msg: impl fmt::Display) -> Self {
        Error::BadData(msg.to_string())
    }

    pub(crate) fn internal(msg: impl fmt::Display) -> Self {
        Error::Internal(msg.to_string())
    }
}
