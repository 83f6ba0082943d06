//! `HeldLocks`, the handle of `withLock`: the leases `acquire` took, what they hold (for the
//! wait-for edges of calls made under them), their loss, and the calls that join them.

use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio::runtime::Handle;

use crate::core::{self, EditSpec, Failure, Settings};
use crate::pending_update::{PendingUpdate, pending_update};
use crate::{
    Canceller, LockHolding, NativeOptions, WriteResult, cancellable, gone, runtime, settings,
    to_js, write_result,
};

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
    holdings: Vec<tractatus_lock::Holding>,
    /// Kept apart from `inner`, which the release takes: a late join must find them released.
    leases: core::Leases,
    tokens: Vec<(String, u64)>,
    notice: Option<String>,
    rt: Handle,
}

impl Drop for HeldLocks {
    /// Dropped by the garbage collector without a `release()` (`withLock` always releases):
    /// release on the runtime kept from its creation.
    fn drop(&mut self) {
        if let Some(held) = self.inner.lock().ok().and_then(|mut g| g.take()) {
            self.rt.spawn(async move {
                let _ = held.release().await;
            });
        }
    }
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

    /// What these leases hold, for the wait-for edges of calls made under them.
    #[napi(getter)]
    pub fn holdings(&self) -> Vec<LockHolding> {
        self.holdings
            .iter()
            .map(|h| LockHolding {
                name: h.name.clone(),
                owner: h.owner.clone(),
                token: h.token.to_string(),
            })
            .collect()
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
            joined
                .map_err(to_js)?
                .map(|p| pending_update(p, None))
                .transpose()
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
        self.write(env, file, EditSpec::Set { pointer, json }, options)
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
        self.write(env, file, EditSpec::Merge { json }, options)
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
        let spec = EditSpec::Append {
            pointer,
            json,
            keep,
        };
        self.write(env, file, spec, options)
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

impl HeldLocks {
    /// A write call joining this lock's lease on `file`; `None` when its lock is not held here.
    fn write<'env>(
        &self,
        env: &'env Env,
        file: String,
        spec: EditSpec,
        options: Option<NativeOptions>,
    ) -> Result<PromiseRaw<'env, Option<WriteResult>>> {
        let s = settings(options)?;
        let leases = self.leases.clone();
        env.spawn_future(async move {
            let done = core::write_under(&s, &leases, &file, spec).await;
            Ok(done.map_err(to_js)?.map(|o| write_result(o, None)))
        })
    }
}

/// Take the named locks and those of `files`, in sorted order; `cancel` gives the wait up
/// (the leases already taken are released).
#[napi(ts_return_type = "Promise<HeldLocks>")]
pub fn acquire<'env>(
    env: &'env Env,
    names: Vec<String>,
    files: Vec<String>,
    options: Option<NativeOptions>,
    cancel: Option<&Canceller>,
) -> Result<PromiseRaw<'env, HeldLocks>> {
    let call = move |s: Settings| async move { core::acquire(&s, names, files).await };
    cancellable(env, options, cancel, call, |held, notice| {
        Ok(HeldLocks {
            holdings: held.holdings(),
            tokens: held.tokens(),
            leases: held.leases(),
            inner: Arc::new(Mutex::new(Some(held))),
            notice,
            rt: runtime()?,
        })
    })
}
