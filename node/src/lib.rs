//! The N-API surface of `tractatus-lock` (napi-rs): thin functions and handles that turn
//! JavaScript values into the adapter's calls (`core`) and its results back. The friendly API
//! (`updateJson`, `withLock`, the error class) is `index.js`, on top of this.
//!
//! Errors cross as a message `TL:<CODE>:<exit code>:<one line>`, which `index.js` turns into
//! its `TractatusLockError`.

mod core;
mod edit;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::core::{EditSpec, Failure, Outcome, Settings};

fn to_js(f: Failure) -> Error {
    Error::new(
        Status::GenericFailure,
        format!("TL:{}:{}:{}", f.code, f.exit_code, f.message),
    )
}

fn gone() -> Error {
    to_js(Failure::usage("this handle was already released"))
}

/// Options as `index.js` passes them: durations already in the CLI's text form.
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
}

fn settings(o: Option<NativeOptions>) -> Result<Settings> {
    let o = o.unwrap_or_default();
    let cwd = match o.cwd {
        Some(c) => PathBuf::from(c),
        None => std::env::current_dir()
            .map_err(|e| to_js(Failure::usage(format!("no current directory: {e}"))))?,
    };
    Ok(Settings {
        cwd,
        redis: o.redis.unwrap_or_default(),
        namespace: o.namespace,
        ttl: o.ttl,
        wait: o.wait,
        max_hold: o.max_hold,
        node_timeout: o.node_timeout,
        connect_timeout: o.connect_timeout,
        session: o.session,
        allow_network_fs: o.allow_network_fs.unwrap_or(false),
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

/// A state file read under its lease.
#[napi]
pub struct PendingUpdate {
    inner: Arc<Mutex<Option<core::Pending>>>,
    token: i64,
    notice: Option<String>,
}

fn with_pending<T>(
    inner: &Mutex<Option<core::Pending>>,
    f: impl FnOnce(&mut core::Pending) -> T,
) -> Result<T> {
    let mut guard = inner
        .lock()
        .map_err(|_| to_js(Failure::usage("handle poisoned")))?;
    guard.as_mut().map(f).ok_or_else(gone)
}

#[napi]
impl PendingUpdate {
    /// The file's own text, `null` when the file does not exist yet.
    #[napi]
    pub fn document(&self) -> Result<Option<String>> {
        with_pending(&self.inner, |p| p.document().map(str::to_owned))
    }

    #[napi(getter)]
    pub fn token(&self) -> i64 {
        self.token
    }

    #[napi(getter)]
    pub fn notice(&self) -> Option<String> {
        self.notice.clone()
    }

    /// Re-read under the same lease (after a conflict).
    #[napi]
    pub fn reload(&self) -> Result<()> {
        with_pending(&self.inner, |p| p.reload())?.map_err(to_js)
    }

    /// Commit the new document's text as it is, off the JavaScript thread (it fsyncs).
    #[napi(ts_return_type = "Promise<WriteResult>")]
    pub fn commit<'env>(
        &self,
        env: &'env Env,
        json: String,
    ) -> Result<PromiseRaw<'env, WriteResult>> {
        let inner = self.inner.clone();
        env.spawn_future(async move {
            // Out of the handle while it commits (the commit awaits), and back in after.
            let mut pending = inner
                .lock()
                .map_err(|_| to_js(Failure::usage("handle poisoned")))?
                .take()
                .ok_or_else(gone)?;
            let done = pending.commit(&json).await;
            if let Ok(mut slot) = inner.lock() {
                *slot = Some(pending);
            }
            done.map(|o| write_result(o, None)).map_err(to_js)
        })
    }

    /// End the lease.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn release<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let taken = self.inner.lock().ok().and_then(|mut g| g.take());
        env.spawn_future(async move {
            match taken {
                Some(p) => p.release().await.map_err(to_js),
                None => Ok(()),
            }
        })
    }
}

fn pending_update(pending: core::Pending, notice: Option<String>) -> PendingUpdate {
    PendingUpdate {
        token: pending.token() as i64,
        inner: Arc::new(Mutex::new(Some(pending))),
        notice,
    }
}

/// Take `file`'s lease and read it.
#[napi]
pub async fn begin(file: String, options: Option<NativeOptions>) -> Result<PendingUpdate> {
    let s = settings(options)?;
    let (pending, notice) = core::begin(&s, &file, false).await.map_err(to_js)?;
    Ok(pending_update(pending, notice))
}

/// Read with no lease: JSON text, or `null` when the file (or the value) is absent.
#[napi]
pub fn read(
    file: String,
    pointer: Option<String>,
    options: Option<NativeOptions>,
) -> Result<Option<String>> {
    let s = settings(options)?;
    core::read(&s, &file, pointer.as_deref()).map_err(to_js)
}

#[napi]
pub async fn set(
    file: String,
    pointer: String,
    json: String,
    options: Option<NativeOptions>,
) -> Result<WriteResult> {
    let s = settings(options)?;
    let (o, notice) = core::edit(
        &s,
        &file,
        EditSpec::Set {
            pointer: &pointer,
            json: &json,
        },
    )
    .await
    .map_err(to_js)?;
    Ok(write_result(o, notice))
}

#[napi]
pub async fn merge(
    file: String,
    json: String,
    options: Option<NativeOptions>,
) -> Result<WriteResult> {
    let s = settings(options)?;
    let (o, notice) = core::edit(&s, &file, EditSpec::Merge { json: &json })
        .await
        .map_err(to_js)?;
    Ok(write_result(o, notice))
}

#[napi]
pub async fn append(
    file: String,
    pointer: String,
    json: String,
    keep: Option<u32>,
    options: Option<NativeOptions>,
) -> Result<WriteResult> {
    let s = settings(options)?;
    let (o, notice) = core::append(&s, &file, &pointer, &json, keep)
        .await
        .map_err(to_js)?;
    Ok(write_result(o, notice))
}

/// One lease of a `withLock`.
#[napi(object)]
pub struct LockToken {
    pub name: String,
    pub token: i64,
}

/// Leases held for `withLock`.
#[napi]
pub struct HeldLocks {
    inner: Arc<Mutex<Option<core::Held>>>,
    /// Kept apart from `inner`, which the release takes: a late join must find them released.
    leases: core::Leases,
    tokens: Vec<(String, u64)>,
    notice: Option<String>,
}

#[napi]
impl HeldLocks {
    #[napi(getter)]
    pub fn tokens(&self) -> Vec<LockToken> {
        self.tokens
            .iter()
            .map(|(name, token)| LockToken {
                name: name.clone(),
                token: *token as i64,
            })
            .collect()
    }

    #[napi(getter)]
    pub fn notice(&self) -> Option<String> {
        self.notice.clone()
    }

    /// Resolves with the first loss's reason, or `null` once released.
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn lost<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Option<String>>> {
        let fut = {
            let guard = self
                .inner
                .lock()
                .map_err(|_| to_js(Failure::usage("handle poisoned")))?;
            guard.as_ref().map(|h| h.lost()).ok_or_else(gone)?
        };
        env.spawn_future(async move { Ok(fut.await) })
    }

    /// `begin` joining this lock's lease on `file`; `null` when `file`'s lock is not held here.
    #[napi(ts_return_type = "Promise<PendingUpdate | null>")]
    pub fn begin<'env>(
        &self,
        env: &'env Env,
        file: String,
        options: Option<NativeOptions>,
    ) -> Result<PromiseRaw<'env, Option<PendingUpdate>>> {
        let s = settings(options)?;
        let leases = self.leases.clone();
        env.spawn_future(async move {
            let joined = core::begin_under(&s, &leases, &file, false).await;
            Ok(joined.map_err(to_js)?.map(|p| pending_update(p, None)))
        })
    }

    /// `set` joining this lock's lease on `file`; `null` when `file`'s lock is not held here.
    #[napi(ts_return_type = "Promise<WriteResult | null>")]
    pub fn set<'env>(
        &self,
        env: &'env Env,
        file: String,
        pointer: String,
        json: String,
        options: Option<NativeOptions>,
    ) -> Result<PromiseRaw<'env, Option<WriteResult>>> {
        let s = settings(options)?;
        let leases = self.leases.clone();
        env.spawn_future(async move {
            let spec = EditSpec::Set {
                pointer: &pointer,
                json: &json,
            };
            let done = core::edit_under(&s, &leases, &file, spec).await;
            Ok(done.map_err(to_js)?.map(|o| write_result(o, None)))
        })
    }

    /// `merge` joining this lock's lease on `file`; `null` when `file`'s lock is not held here.
    #[napi(ts_return_type = "Promise<WriteResult | null>")]
    pub fn merge<'env>(
        &self,
        env: &'env Env,
        file: String,
        json: String,
        options: Option<NativeOptions>,
    ) -> Result<PromiseRaw<'env, Option<WriteResult>>> {
        let s = settings(options)?;
        let leases = self.leases.clone();
        env.spawn_future(async move {
            let spec = EditSpec::Merge { json: &json };
            let done = core::edit_under(&s, &leases, &file, spec).await;
            Ok(done.map_err(to_js)?.map(|o| write_result(o, None)))
        })
    }

    /// `append` joining this lock's lease on `file`; `null` when `file`'s lock is not held here.
    #[napi(ts_return_type = "Promise<WriteResult | null>")]
    pub fn append<'env>(
        &self,
        env: &'env Env,
        file: String,
        pointer: String,
        json: String,
        keep: Option<u32>,
        options: Option<NativeOptions>,
    ) -> Result<PromiseRaw<'env, Option<WriteResult>>> {
        let s = settings(options)?;
        let leases = self.leases.clone();
        env.spawn_future(async move {
            let done = core::append_under(&s, &leases, &file, &pointer, &json, keep).await;
            Ok(done.map_err(to_js)?.map(|o| write_result(o, None)))
        })
    }

    /// Release every lease; rejects with `LEASE_LOST` when any was no longer ours.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn release<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let taken = self.inner.lock().ok().and_then(|mut g| g.take());
        env.spawn_future(async move {
            match taken {
                Some(h) => h.release().await.map_err(to_js),
                None => Ok(()),
            }
        })
    }
}

/// Where `file` lives for the session of `options` (its own copy when it is per-session).
#[napi]
pub fn state_path(file: String, options: Option<NativeOptions>) -> Result<String> {
    let s = settings(options)?;
    core::state_path(&s, &file).map_err(to_js)
}

/// Register session `id` (a fresh one when absent) in the live registry; its id.
#[napi]
pub async fn session_start(id: Option<String>, options: Option<NativeOptions>) -> Result<String> {
    let s = settings(options)?;
    core::session_start(&s, id).await.map_err(to_js)
}

/// Take the named locks and those of `files`, in sorted order.
#[napi]
pub async fn acquire(
    names: Vec<String>,
    files: Vec<String>,
    options: Option<NativeOptions>,
) -> Result<HeldLocks> {
    let s = settings(options)?;
    let (held, notice) = core::acquire(&s, names, files).await.map_err(to_js)?;
    Ok(HeldLocks {
        tokens: held.tokens(),
        leases: held.leases(),
        inner: Arc::new(Mutex::new(Some(held))),
        notice,
    })
}
