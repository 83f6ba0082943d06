//! The N-API surface of `tractatus-lock` (napi-rs): thin functions and handles that turn
//! JavaScript values into the adapter's calls (`core`) and its results back. The friendly API
//! (`updateJson`, `withLock`, the error class) is `index.js`, on top of this.
//!
//! Errors cross as a message `TL:<CODE>:<exit code>:<one line>`, which `index.js` turns into
//! its `TractatusLockError`.
//!
//! This file holds the functions and the options; the handles are `pending_update`
//! (`updateJson`'s) and `held_locks` (`withLock`'s).

mod core;
mod held_locks;
mod pending_update;

use std::future::Future;
use std::path::PathBuf;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio::runtime::Handle;
use tokio::sync::watch;

use tractatus_lock::settings::Flags;

use crate::core::{EditSpec, Failure, Outcome, Settings};
use crate::pending_update::pending_update;

// The handles' JavaScript surface, exported from the crate root as napi-rs registers it.
pub use held_locks::{HeldLocks, LockToken, acquire};
pub use pending_update::PendingUpdate;

fn to_js(f: Failure) -> Error {
    Error::new(
        Status::GenericFailure,
        format!("TL:{}:{}:{}", f.code, f.exit_code, f.message),
    )
}

fn gone() -> Error {
    to_js(Failure::usage("this handle was already released"))
}

fn busy() -> Error {
    to_js(Failure::usage(
        "a commit or reload of this update is still in flight; await it first",
    ))
}

/// The addon's runtime, taken where a handle is made (always on it): a handle dropped by
/// JavaScript's garbage collector is finalized on the JavaScript thread, which has no runtime
/// to find, and must still release its lease there.
fn runtime() -> Result<Handle> {
    Handle::try_current()
        .map_err(|e| to_js(Failure::usage(format!("internal: no async runtime: {e}"))))
}

/// Blocking file work (reads of state files, configuration lookups) on tokio's blocking
/// pool, so that neither JavaScript's thread nor a runtime worker waits on the disk.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        to_js(Failure::usage(format!(
            "internal: blocking task failed: {e}"
        )))
    })?
}

/// Cancels the waits of the calls it is given to: `index.js` cancels it when the caller's
/// `AbortSignal` aborts.
#[napi]
pub struct Canceller {
    tx: watch::Sender<bool>,
}

#[napi]
impl Canceller {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Canceller {
            tx: watch::channel(false).0,
        }
    }

    #[napi]
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }
}

fn aborted() -> Error {
    to_js(Failure {
        code: "ABORTED",
        exit_code: 75,
        message: "the wait was aborted (its AbortSignal fired); nothing was taken or written"
            .to_owned(),
    })
}

/// `work`, given up (dropped) once `cancel` fires: a wait in line ends there. A lease the
/// work had already taken is dropped with it, on this runtime, which releases it.
async fn abortable<T>(
    cancel: Option<watch::Receiver<bool>>,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let Some(mut rx) = cancel else {
        return work.await;
    };
    if *rx.borrow_and_update() {
        return Err(aborted());
    }
    tokio::select! {
        biased;
        _ = rx.wait_for(|c| *c) => Err(aborted()),
        done = work => done,
    }
}

fn receiver(cancel: Option<&Canceller>) -> Option<watch::Receiver<bool>> {
    cancel.map(|c| c.tx.subscribe())
}

/// Options as `index.js` passes them (its allowlist refuses others): durations already in the
/// CLI's text form. [`settings`] turns them into the library's.
#[napi(object)]
#[derive(Default)]
pub struct NativeOptions {
    pub cwd: Option<String>,
    pub redis: Option<Vec<String>>,
    pub namespace: Option<String>,
    pub ttl: Option<String>,
    pub wait: Option<String>,
    pub max_hold: Option<String>,
    pub node_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub session: Option<String>,
    pub allow_network_fs: Option<bool>,
    /// What the enclosing `withLock` scopes hold (their `holdings`), for deadlock detection.
    pub holding: Option<Vec<LockHolding>>,
}

/// A lease an enclosing `withLock` scope holds, as a wait-for edge names it (see the crate's
/// `deadlock` module). The token crosses as a decimal string: tokens pass 2^53.
#[napi(object)]
#[derive(Clone)]
pub struct LockHolding {
    pub name: String,
    pub owner: String,
    pub token: String,
}

/// The one conversion of the JavaScript options into the library's settings ([`Flags`]): an
/// empty or blank `session` is none (the environment's then counts).
fn settings(o: Option<NativeOptions>) -> Result<Settings> {
    let o = o.unwrap_or_default();
    let cwd = match o.cwd {
        Some(c) => PathBuf::from(c),
        None => std::env::current_dir()
            .map_err(|e| to_js(Failure::usage(format!("no current directory: {e}"))))?,
    };
    let flags = Flags {
        redis: o.redis.unwrap_or_default(),
        namespace: o.namespace,
        ttl: o.ttl,
        wait: o.wait,
        max_hold: o.max_hold,
        node_timeout: o.node_timeout,
        connect_timeout: o.connect_timeout,
        kill_grace: None,
        session: o
            .session
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
    };
    let holding = o.holding.unwrap_or_default().into_iter().filter_map(|h| {
        Some(tractatus_lock::Holding {
            token: h.token.parse().ok()?,
            name: h.name,
            owner: h.owner,
        })
    });
    Ok(Settings {
        cwd,
        flags,
        allow_network_fs: o.allow_network_fs.unwrap_or(false),
        holding: holding.collect(),
    })
}

/// How a write ended.
#[napi(object)]
pub struct WriteResult {
    pub committed: bool,
    pub unchanged: bool,
    pub token: i64,
    /// Set once per configuration and process (the local-locks notice).
    pub notice: Option<String>,
}

fn write_result(o: Outcome, notice: Option<String>) -> WriteResult {
    WriteResult {
        committed: o.committed,
        unchanged: o.unchanged,
        token: o.token as i64,
        notice,
    }
}

/// A call that may wait for a lease: `call` runs on the settings of `options` and is given up
/// when `cancel` fires (a lease it took is dropped with it, which releases it); `done` makes
/// what it returns, with its notice, into JavaScript's value, on the runtime.
fn cancellable<'env, T, R, F>(
    env: &'env Env,
    options: Option<NativeOptions>,
    cancel: Option<&Canceller>,
    call: impl FnOnce(Settings) -> F,
    done: impl FnOnce(T, Option<String>) -> Result<R> + Send + 'static,
) -> Result<PromiseRaw<'env, R>>
where
    F: Future<Output = core::Out<(T, Option<String>)>> + Send + 'static,
    R: ToNapiValue + Send + 'static,
{
    let work = call(settings(options)?);
    let cancel = receiver(cancel);
    env.spawn_future(async move {
        let (value, notice) = abortable(cancel, async { work.await.map_err(to_js) }).await?;
        done(value, notice)
    })
}

/// Take `file`'s lease and read it; `cancel` gives the wait up.
#[napi(ts_return_type = "Promise<PendingUpdate>")]
pub fn begin<'env>(
    env: &'env Env,
    file: String,
    options: Option<NativeOptions>,
    cancel: Option<&Canceller>,
) -> Result<PromiseRaw<'env, PendingUpdate>> {
    let call = move |s: Settings| async move { core::begin(&s, &file, false).await };
    cancellable(env, options, cancel, call, pending_update)
}

/// Read with no lease, off the JavaScript thread: JSON text, or `null` when the file (or the
/// value) is absent.
#[napi]
pub async fn read(
    file: String,
    pointer: Option<String>,
    options: Option<NativeOptions>,
) -> Result<Option<String>> {
    let s = settings(options)?;
    blocking(move || core::read(&s, &file, pointer.as_deref()).map_err(to_js)).await
}

/// A write call (`set`, `merge`, `append`): take `file`'s lease, edit, commit, release;
/// `cancel` gives the wait up.
fn write<'env>(
    env: &'env Env,
    file: String,
    spec: EditSpec,
    options: Option<NativeOptions>,
    cancel: Option<&Canceller>,
) -> Result<PromiseRaw<'env, WriteResult>> {
    let call = move |s: Settings| async move { core::write(&s, &file, spec).await };
    cancellable(env, options, cancel, call, |o, notice| {
        Ok(write_result(o, notice))
    })
}

#[napi(ts_return_type = "Promise<WriteResult>")]
pub fn set<'env>(
    env: &'env Env,
    file: String,
    pointer: String,
    json: String,
    options: Option<NativeOptions>,
    cancel: Option<&Canceller>,
) -> Result<PromiseRaw<'env, WriteResult>> {
    write(env, file, EditSpec::Set { pointer, json }, options, cancel)
}

#[napi(ts_return_type = "Promise<WriteResult>")]
pub fn merge<'env>(
    env: &'env Env,
    file: String,
    json: String,
    options: Option<NativeOptions>,
    cancel: Option<&Canceller>,
) -> Result<PromiseRaw<'env, WriteResult>> {
    write(env, file, EditSpec::Merge { json }, options, cancel)
}

#[napi(ts_return_type = "Promise<WriteResult>")]
pub fn append<'env>(
    env: &'env Env,
    file: String,
    pointer: String,
    json: String,
    keep: Option<u32>,
    options: Option<NativeOptions>,
    cancel: Option<&Canceller>,
) -> Result<PromiseRaw<'env, WriteResult>> {
    let spec = EditSpec::Append {
        pointer,
        json,
        keep,
    };
    write(env, file, spec, options, cancel)
}

/// Where `file` lives for the session of `options` (its own copy when it is per-session),
/// found off the JavaScript thread (it reads the configuration).
#[napi]
pub async fn state_path(file: String, options: Option<NativeOptions>) -> Result<String> {
    let s = settings(options)?;
    blocking(move || core::state_path(&s, &file).map_err(to_js)).await
}

/// Register session `id` (a fresh one when absent) in the live registry; its id.
#[napi]
pub async fn session_start(id: Option<String>, options: Option<NativeOptions>) -> Result<String> {
    let s = settings(options)?;
    core::session_start(&s, id).await.map_err(to_js)
}

/// Who holds what now, as `tractatus lock status --json` prints it (JSON text).
#[napi]
pub async fn lock_status(options: Option<NativeOptions>) -> Result<String> {
    let s = settings(options)?;
    core::lock_status(&s).await.map_err(to_js)
}
