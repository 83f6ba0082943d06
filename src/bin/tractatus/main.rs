//! `tractatus`: the command line. Parse the flags, resolve them into the library's settings,
//! run the command, and turn the result into an exit code (the table "exit | meaning" in
//! README.md; never 2, which blocks a Claude Code hook).
//!
//! Layout: `cli` (flags), `output` (what is shown), one file per command group (`lock`,
//! `state`, `session`, `demo`; `stats`, `watch` and `metrics` for watching the locks).

mod cli;
mod demo;
mod lock;
mod metrics;
mod output;
mod session;
mod state;
mod stats;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use cli::{Cli, Command, GlobalArgs, SessionCommand};
use tractatus_lock::workspace::Workspace;
use tractatus_lock::{Coordinator, Error, Identity, Result};

fn main() -> ExitCode {
    // `lock run` starts this same program as the guard of its command's process group.
    if let Some(code) = tractatus_lock::group::guard_main() {
        return ExitCode::from(code);
    }
    let cli = match cli::parse() {
        Ok(c) => c,
        Err(code) => return ExitCode::from(code),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&Error::internal(format!("cannot start runtime: {e}"))),
    };
    let result = runtime.block_on(run(cli));
    // Do not wait for a thread still blocked in flock() after a local-lock wait gave up.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(70)),
        Err(e) => fail(&e),
    }
}

fn fail(e: &Error) -> ExitCode {
    output::note(&tractatus_lock::error::shorten(&e.to_string()));
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(70))
}

async fn run(cli: Cli) -> Result<i32> {
    let Cli { global, command } = cli;
    match command {
        Command::Session(SessionCommand::New) => session::new(global.json),
        Command::Session(SessionCommand::Start {
            id,
            from_hook: true,
        }) => {
            let payload = session::take_hook_payload()?;
            session::start(&Context::resolve(global)?, id, Some(payload)).await
        }
        Command::Session(cmd) => session::run(&Context::resolve(global)?, cmd).await,
        Command::DemoEdit(args) => demo::edit(&args),
        Command::DemoWorker(args) => demo::worker(&args).await,
        Command::Demo(args) => demo::run(&args, global).await,
        Command::Lock(cmd) => lock::run(&Context::resolve(global)?, cmd).await,
        Command::State(cmd) => state::run(&Context::resolve(global)?, cmd).await,
        Command::Metrics {
            listen,
            allow_remote,
        } => metrics::run(&Context::resolve(global)?, listen.as_deref(), allow_remote).await,
    }
}

/// What every command that locks needs: the workspace and how to talk to the user.
pub struct Context {
    pub ws: Workspace,
    pub json: bool,
    quiet: bool,
    allow_network_fs: bool,
}

impl Context {
    fn resolve(global: GlobalArgs) -> Result<Context> {
        let cwd: PathBuf = std::env::current_dir()
            .map_err(|e| Error::internal(format!("no current directory: {e}")).with_source(e))?;
        let env = |k: &str| std::env::var(k).ok();
        let quiet = global.quiet || env("TRACTATUS_QUIET").is_some_and(|v| is_truthy(&v));
        Ok(Context {
            ws: Workspace::discover(&cwd, &global.settings, &env)?,
            json: global.json,
            quiet,
            allow_network_fs: global.allow_network_fs,
        })
    }

    /// The coordinator, ready to lock (a fresh repository on Redis gets its namespace file).
    pub async fn coordinator(&self) -> Result<Coordinator> {
        let (c, notice) = self
            .ws
            .coordinator(self.identity(), self.allow_network_fs)
            .await?;
        self.notice(notice);
        Ok(c)
    }

    /// The coordinator for looking only; `None` when nothing was ever locked here.
    pub async fn observer(&self) -> Result<Option<Coordinator>> {
        let found = self
            .ws
            .observer(self.identity(), self.allow_network_fs)
            .await?;
        Ok(found.map(|(c, notice)| {
            self.notice(notice);
            c
        }))
    }

    /// This process as a holder shows it, in the session given by `--session` when there is one.
    pub fn identity(&self) -> Identity {
        let mut id = identity();
        if let Some(s) = self.ws.session() {
            id.session = s.to_owned();
        }
        id
    }

    fn notice(&self, notice: Option<String>) {
        if let Some(n) = notice.filter(|_| !self.quiet) {
            output::note(&n);
        }
    }
}

fn is_truthy(v: &str) -> bool {
    !matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "" | "0" | "false" | "no" | "off"
    )
}

/// This process, as a holder shows it in `lock status` (any password in a URL masked).
pub fn identity() -> Identity {
    let words: Vec<String> = std::env::args().map(|w| cli::redact_words(&w)).collect();
    Identity::current(words.join(" ").chars().take(300).collect::<String>())
}
