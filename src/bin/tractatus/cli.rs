//! The command line's shape: every flag and subcommand (clap lives here and nowhere in the
//! library), and the conversion of the global flags into the library's [`Flags`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tractatus_lock::settings::Flags;

#[derive(Parser, Debug)]
#[command(
    name = "tractatus",
    version,
    about = "Leases on Redis for the JSON state files of a repository, with fencing tokens"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct GlobalArgs {
    #[command(flatten)]
    pub settings: Flags,
    /// Print one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Say nothing on stderr unless something failed (no "no Redis configured" notice). Env:
    /// TRACTATUS_QUIET=1.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Use local file locks even on a network filesystem (they do not protect other machines).
    #[arg(long, global = true)]
    pub allow_network_fs: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run commands under locks, and look at them.
    #[command(subcommand)]
    Lock(LockCommand),
    /// Read and write JSON state files under their lock, committed atomically.
    #[command(subcommand)]
    State(StateCommand),
    /// Sessions: ids, the live registry, per-session files' cleanup and totals.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Print the Prometheus (OpenMetrics) exposition of the locks once, or serve it on
    /// `/metrics` with --listen.
    Metrics {
        /// Serve `/metrics` on this address until stopped (loopback only unless
        /// --allow-remote), like 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Let --listen bind an address other than loopback (put a scraper's network in front).
        #[arg(long, requires = "listen")]
        allow_remote: bool,
    },
    /// Show what the locks are for: simulated sessions write Tractatus-shaped files at once,
    /// unguarded and then guarded, and the lost updates, torn reads and cost per write are
    /// printed side by side. Works on a fresh machine (local locks; Redis with --redis or
    /// TRACTATUS_REDIS).
    Demo(DemoArgs),
    /// One simulated session of `demo` (run by `demo`, not by hand).
    #[command(hide = true)]
    DemoWorker(DemoWorkerArgs),
    /// The edit a simulated session makes, as a `state update` command (run by `demo`).
    #[command(hide = true)]
    DemoEdit(DemoEditArgs),
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Simulated sessions writing at once (2 to 16).
    #[arg(long, default_value_t = 4)]
    pub sessions: u32,
    /// Writes each session makes in each run (1 to 1000).
    #[arg(long, default_value_t = 60)]
    pub writes: u32,
}

#[derive(Args, Debug)]
pub struct DemoWorkerArgs {
    /// The scratch repository.
    #[arg(long)]
    pub dir: PathBuf,
    /// This session's number (`--worker`: `--session` is the global session id).
    #[arg(long = "worker", id = "worker")]
    pub session: u32,
    /// How many writes.
    #[arg(long)]
    pub writes: u32,
    /// Go through the locks (else read, modify, write in place).
    #[arg(long)]
    pub guarded: bool,
}

#[derive(Args, Debug)]
pub struct DemoEditArgs {
    /// Which file's edit (0 session-state, 1 hooks-metrics, 2 instruction-history).
    pub kind: usize,
    /// The session making it (its own id: `session` is the global `--session`).
    #[arg(id = "edit_session", value_name = "SESSION")]
    pub session: u32,
    /// Its sequence number in that session.
    pub seq: u32,
}

#[derive(Subcommand, Debug)]
pub enum LockCommand {
    /// Run CMD while holding the named locks (taken in sorted order, renewed, released on exit).
    Run {
        /// Lock name (repeatable).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// Lock named after a file: its path relative to the repository root (repeatable).
        #[arg(long = "file", value_name = "PATH")]
        files: Vec<PathBuf>,
        /// Hold one of N slots of the one --name (1 to 1024): up to N runs at once, each
        /// told its slot in TRACTATUS_SLOT (0 to N-1).
        #[arg(long, value_name = "N")]
        slots: Option<u32>,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// List every held lock: holder, host, pid, age, TTL left, token, waiters.
    Status {
        /// Redraw the view in place on a terminal until `q` or Ctrl-C (with the queues, the
        /// sessions and each Redis node's round trip); elsewhere, print one snapshot per
        /// interval.
        #[arg(long)]
        watch: bool,
        /// How often --watch redraws (like 500ms, 1s, 5s).
        #[arg(
            long,
            value_name = "DURATION",
            default_value = "1s",
            requires = "watch"
        )]
        interval: String,
    },
    /// Per lock, from the audit log: grants, wait and hold percentiles, contention, lost
    /// leases, breaks, evictions, joins (needs Redis: local locks keep no history).
    Stats {
        /// Only events this recent (like 10m, 1h, 24h); default: all the log holds.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Only this lock.
        #[arg(long = "lock", value_name = "NAME")]
        lock: Option<String>,
    },
    /// Release a lock whoever holds it (recorded in the audit log).
    Break {
        /// The lock to break.
        name: String,
        /// Required: breaking a lock lets two writers in at once if its holder still runs.
        #[arg(long)]
        force: bool,
    },
    /// Mark brand-new Redis servers as initialized, so their first grants do not wait out the
    /// restart quarantine (run once after deploying; never after a crash).
    Init,
    /// Show the audit trail: grants, releases, expiries, takeovers, breaks.
    Log {
        /// How many events, newest last.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// Pipe FILE's JSON through CMD (stdin) and commit CMD's stdout as the new document.
    Update {
        /// The state file.
        file: PathBuf,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Apply an RFC 7396 JSON merge patch.
    Merge {
        /// The state file.
        file: PathBuf,
        /// The patch.
        #[arg(value_name = "JSON", allow_hyphen_values = true)]
        patch: String,
    },
    /// Push JSON onto the array at an RFC 6901 pointer.
    Append {
        /// The state file.
        file: PathBuf,
        /// Where the array is, like /instructions.
        pointer: String,
        /// The value to push.
        #[arg(value_name = "JSON", allow_hyphen_values = true)]
        value: String,
    },
    /// Replace or insert the value at an RFC 6901 pointer.
    Set {
        /// The state file.
        file: PathBuf,
        /// Where, like /session_id.
        pointer: String,
        /// The value.
        #[arg(value_name = "JSON", allow_hyphen_values = true)]
        value: String,
    },
    /// Print the document (or the value at POINTER), read under the lock.
    Get {
        /// The state file.
        file: PathBuf,
        /// Where, like /instructions/0.
        pointer: Option<String>,
    },
    /// Print where FILE lives for this session (its own copy when FILE is per-session).
    Path {
        /// The state file.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum SessionCommand {
    /// Print a fresh session id (a UUID v7).
    New,
    /// Register a live session and print its id (a fresh one unless --id or --from-hook); then
    /// collect the directories of sessions inactive for a day (as `session gc`).
    Start {
        /// The session's id.
        #[arg(long, value_name = "ID", conflicts_with = "from_hook")]
        id: Option<String>,
        /// Take the id from Claude Code's hook payload on stdin (`session_id`) and pass the
        /// payload through to stdout untouched (nothing else is printed there).
        #[arg(long)]
        from_hook: bool,
    },
    /// Mark a session ended (default: this call's session).
    End {
        /// The session (else --session or TRACTATUS_SESSION_ID).
        id: Option<String>,
    },
    /// List live, silent and recently ended sessions.
    List,
    /// Remove the directories (.claude/sessions/ID/) and registry entries of sessions that
    /// ended or went silent; never a live one.
    Gc {
        /// Only those inactive for at least this long (0: all ended and silent ones).
        #[arg(long, value_name = "DUR", default_value = "24h")]
        older_than: String,
    },
    /// Sum, max and count of numeric fields (JSON pointers) across live sessions' copies of a
    /// per-session file.
    Stats {
        /// The per-session file (default: the first of `per_session`).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Fields, like /message_count (default: every numeric top-level field).
        #[arg(value_name = "FIELD")]
        fields: Vec<String>,
    },
}

/// The command line, or the exit code to leave with after clap's answer (help and version:
/// 0; anything malformed: 64, with one line on stderr).
pub fn parse() -> Result<Cli, u8> {
    use clap::error::ErrorKind;
    let e = match Cli::try_parse() {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        // Asked for: success, unless the answer cannot be written.
        return match e.print() {
            Ok(()) => Err(0),
            Err(io) => {
                crate::output::note(&format!("cannot write stdout: {io}"));
                Err(73)
            }
        };
    }
    // One line (hooks read stderr as one reason). clap quotes the offending word, which may be
    // a URL with a password in it.
    let first = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        "a subcommand is missing".to_owned()
    } else {
        e.to_string()
            .trim_start()
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let first = first.trim_start_matches("error: ");
    crate::output::note(&format!(
        "{} (see tractatus --help)",
        tractatus_lock::error::shorten(&redact_words(first))
    ));
    Err(64)
}

/// `text` with the password of every URL in it masked, whatever characters it holds (see
/// [`tractatus_lock::config::redact_text`]).
pub fn redact_words(text: &str) -> String {
    tractatus_lock::config::redact_text(text)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[test]
    fn every_subcommand_parses_beside_the_global_session_flag() {
        super::Cli::command().debug_assert();
        // A subcommand's field named like a global flag panics only when that subcommand is
        // parsed (clap propagates globals then): parse the hidden ones too.
        for line in [
            "tractatus --session s1 demo-edit 0 1 2",
            "tractatus demo-worker --dir /tmp --worker 1 --writes 1 --session s1",
            "tractatus session start --id a --session s1",
            "tractatus state path f --session s1",
        ] {
            let cli = super::Cli::try_parse_from(line.split(' '));
            assert_eq!(
                cli.unwrap().global.settings.session.as_deref(),
                Some("s1"),
                "{line}"
            );
        }
    }
}
