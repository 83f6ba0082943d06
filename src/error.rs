//! The library's one error type: what went wrong, sorted so that a caller can tell
//! "someone else holds it" from "the coordinator is unreachable" from "we lost it".
//! Each kind maps to one exit code of the `tractatus` binary (README.md, the table under
//! "Calling it from a Node hook"); messages quoting the caller's input are cut to a readable
//! length.

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
    #[error("{message}")]
    Usage {
        /// What was wrong, and what would be right.
        message: String,
        /// The OS error behind it, when there is one.
        source: Option<std::io::Error>,
    },

    /// The state file, the given JSON or a command's output is not what was expected.
    #[error("{message}")]
    BadData {
        /// What was wrong with it.
        message: String,
        /// The OS error behind it, when there is one.
        source: Option<std::io::Error>,
    },

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
        /// The last holder a refusal named, when any did (none when the last attempt found the
        /// lock free behind another waiter first in line).
        holder: Option<Box<HolderInfo>>,
        /// What else stood in the way at the last attempt, when anything did: the waiter first
        /// in line on a free lock, or masters in their restart quarantine.
        note: Option<String>,
    },

    /// Waiting for the lock would never end: the lock's holder waits, through a cycle of other
    /// waiters, for a lock this process (or its tree) holds, and this wait was the one chosen
    /// to give up (see [`crate::deadlock`]). Nothing was written; the others go on.
    #[error("deadlock waiting for lock '{}': {cycle}", crate::shown::field(.name))]
    Deadlock {
        /// The lock this wait was for.
        name: String,
        /// The cycle, for people: each lock held and waited for, and by whom (escaped).
        cycle: String,
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

    /// The state file exists but may not be read (its permissions); nothing was written. Exit
    /// 73, as a file that cannot be written: the environment, not the data, is at fault.
    #[error("cannot read {}: {source}", .path.display())]
    CannotRead {
        /// The file, as the messages name it (relative to the repository root).
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },

    /// A bug or an environment we did not expect.
    #[error("internal error: {message}")]
    Internal {
        /// What happened.
        message: String,
        /// The OS error behind it, when there is one.
        source: Option<std::io::Error>,
    },
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

    /// This wait was given up to break a cycle of waiters (a deadlock): retrying at once
    /// would likely close the cycle again; let the others finish first.
    pub fn is_deadlock(&self) -> bool {
        matches!(self, Error::Deadlock { .. })
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
        matches!(self, Error::BadData { .. })
    }

    /// A file or directory of ours was refused as planted or damaged (a symlink, FIFO, device
    /// or second hard link where ours should be, or a file past its size): never a passing
    /// failure, a human should look.
    pub fn is_refused(&self) -> bool {
        matches!(self, Error::CannotWrite { source, .. } if crate::dir_handle::is_refusal(source))
    }

    /// A state file's directory was moved or removed after the file was opened (`session gc`
    /// collecting a session's copy): nothing was written, and the same write, from a freshly
    /// opened file, starts from what is there then.
    pub fn is_directory_gone(&self) -> bool {
        matches!(self, Error::CannotWrite { source, .. }
            if source.get_ref().is_some_and(|e| e.is::<DirectoryGone>()))
    }

    /// The exit code the `tractatus` binary uses for this error (the table "exit | meaning"
    /// in README.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. } => 64,
            Error::BadData { .. } => 65,
            Error::Unavailable { .. } => 69,
            Error::Internal { .. } => 70,
            Error::CannotWrite { .. } | Error::CannotRead { .. } => 73,
            Error::Timeout { .. } | Error::Deadlock { .. } => 75,
            Error::LeaseLost { .. } | Error::Fenced { .. } | Error::Conflict { .. } => 76,
        }
    }

    /// A usage error (64). Over-long input quoted in `msg` is cut (see [`shorten`]).
    pub fn usage(msg: impl fmt::Display) -> Self {
        Error::Usage {
            message: shorten(&msg.to_string()),
            source: None,
        }
    }

    /// A bad-data error (65). Over-long input quoted in `msg` is cut.
    pub fn bad_data(msg: impl fmt::Display) -> Self {
        Error::BadData {
            message: shorten(&msg.to_string()),
            source: None,
        }
    }

    /// An internal error (70). Over-long input quoted in `msg` is cut.
    pub fn internal(msg: impl fmt::Display) -> Self {
        Error::Internal {
            message: shorten(&msg.to_string()),
            source: None,
        }
    }

    /// The same usage, bad-data or internal error, keeping `e` as its source (for a caller
    /// that walks [`std::error::Error::source`]); other errors are returned as they are.
    pub fn with_source(mut self, e: std::io::Error) -> Self {
        if let Error::Usage { source, .. }
        | Error::BadData { source, .. }
        | Error::Internal { source, .. } = &mut self
        {
            *source = Some(e);
        }
        self
    }

    /// Too few of `total` nodes answered (`needed` were), each failing one with its cause.
    pub fn unavailable(
        reachable: usize,
        total: usize,
        needed: usize,
        causes: Vec<(String, String)>,
    ) -> Self {
        Error::Unavailable {
            reachable,
            total,
            needed,
            causes,
        }
    }

    /// The one coordinator (`what`: a node's label, or "local locks") did not serve us.
    pub(crate) fn unavailable_one(what: impl Into<String>, cause: impl Into<String>) -> Self {
        Error::unavailable(0, 1, 1, vec![(what.into(), cause.into())])
    }
}

/// Longest message kept whole; a longer one has its long words cut.
const MESSAGE_KEPT_WHOLE: usize = 400;
/// Longest word kept whole in a long message (a path, a URL, a pointer, a lock name).
const WORD_KEPT_WHOLE: usize = 80;
/// Longest message after the cut of long words.
const MESSAGE_MAX: usize = 1000;

/// `text` cut to a readable length, so that a 100 KB pointer or a 10 KB lock name quoted in an
/// error does not fill a terminal or a hook's log: in a message over 400 characters, every word
/// over 80 characters keeps its first 48 and last 16 around an ellipsis, and what is still over
/// 1000 characters keeps its head and its tail (which usually says what would be right).
pub fn shorten(text: &str) -> String {
    if text.chars().count() <= MESSAGE_KEPT_WHOLE {
        return text.to_owned();
    }
    let words: Vec<String> = text
        .split(' ')
        .map(|w| elide_middle(w, WORD_KEPT_WHOLE, 48, 16))
        .collect();
    elide_middle(&words.join(" "), MESSAGE_MAX, 600, 300)
}

/// `text` when at most `max` characters, else its first `head` and last `tail` characters
/// around an ellipsis that says how many were left out.
fn elide_middle(text: &str, max: usize, head: usize, tail: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_owned();
    }
    let first: String = text.chars().take(head).collect();
    let last: String = text.chars().skip(n - tail).collect();
    format!("{first}…({} characters)…{last}", n - head - tail)
}

/// Why a write through a handle on a directory that was moved or removed since (see
/// `StateFile::check_in_place`) wrote nothing; typed so that [`Error::is_directory_gone`]
/// knows it from the OS's errors.
#[derive(Debug)]
pub(crate) struct DirectoryGone(pub(crate) String);

impl std::fmt::Display for DirectoryGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DirectoryGone {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_inputs_in_messages_are_cut_and_short_ones_kept() {
        let short = "bad lock name 'a b': use 1 to 200 characters";
        assert_eq!(shorten(short), short);
        let name = "x".repeat(10_000);
        let msg = format!("bad lock name '{name}': use 1 to 200 characters from A-Z");
        let cut = Error::usage(&msg).to_string();
        assert!(cut.len() < 200, "{cut}");
        assert!(
            cut.starts_with("bad lock name 'xxx") && cut.ends_with("from A-Z"),
            "{cut}"
        );
        assert!(cut.contains("…(9939 characters)…"), "{cut}");
        let spaced = format!("bad value: {}", "ab ".repeat(50_000));
        assert!(shorten(&spaced).chars().count() < 1000);
        assert!(shorten(&"é".repeat(500)).chars().count() < 100);
    }

    #[test]
    fn an_io_source_is_kept_and_not_shown_twice() {
        use std::error::Error as _;
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = Error::usage("cannot read x: permission denied").with_source(io);
        assert_eq!(e.to_string(), "cannot read x: permission denied");
        assert!(e.source().is_some());
        assert_eq!(e.exit_code(), 64);
    }
}
