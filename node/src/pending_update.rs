//! `PendingUpdate`, the handle of `updateJson`: a state file read under its lease, committed
//! or reloaded off JavaScript's thread, and released once, even by the garbage collector.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio::runtime::Handle;
use tokio::sync::OwnedMutexGuard;

use crate::{WriteResult, blocking, busy, core, gone, runtime, to_js, write_result};

/// A state file read under its lease.
#[napi]
pub struct PendingUpdate {
    /// An async mutex: a commit holds it while it awaits, so that a release waits for it.
    inner: Arc<tokio::sync::Mutex<Option<core::Pending>>>,
    token: i64,
    notice: Option<String>,
    rt: Handle,
}

/// The update for a commit or a reload, taken now (on JavaScript's thread, in call order):
/// a `release()` called after it waits for it to end.
fn take_turn(inner: &Arc<tokio::sync::Mutex<Option<core::Pending>>>) -> Result<PendingGuard> {
    let guard = inner.clone().try_lock_owned().map_err(|_| busy())?;
    if guard.is_none() {
        return Err(gone());
    }
    Ok(guard)
}

type PendingGuard = OwnedMutexGuard<Option<core::Pending>>;

impl Drop for PendingUpdate {
    /// Dropped by the garbage collector without a `release()`: release the lease on the
    /// runtime kept from its creation (a commit in flight holds the update; its task drops it
    /// on the runtime when it ends, which releases it too).
    fn drop(&mut self) {
        if let Ok(mut slot) = self.inner.try_lock()
            && let Some(pending) = slot.take()
        {
            self.rt.spawn(async move {
                let _ = pending.release().await;
            });
        }
    }
}

#[napi]
impl PendingUpdate {
    /// The file's own text, `null` when the file does not exist yet.
    #[napi]
    pub fn document(&self) -> Result<Option<String>> {
        let guard = self.inner.try_lock().map_err(|_| busy())?;
        let pending = guard.as_ref().ok_or_else(gone)?;
        Ok(pending.document().map(str::to_owned))
    }

    #[napi(getter)]
    pub fn token(&self) -> i64 {
        self.token
    }

    #[napi(getter)]
    pub fn notice(&self) -> Option<String> {
        self.notice.clone()
    }

    /// Re-read under the same lease (after a conflict), off the JavaScript thread.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn reload<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let mut guard = take_turn(&self.inner)?;
        env.spawn_future(blocking(move || match guard.as_mut() {
            Some(p) => p.reload().map_err(to_js),
            None => Err(gone()),
        }))
    }

    /// Commit the new document's text as it is, off the JavaScript thread (it fsyncs).
    #[napi(ts_return_type = "Promise<WriteResult>")]
    pub fn commit<'env>(
        &self,
        env: &'env Env,
        json: String,
    ) -> Result<PromiseRaw<'env, WriteResult>> {
        let mut guard = take_turn(&self.inner)?;
        env.spawn_future(async move {
            let pending = guard.as_mut().ok_or_else(gone)?;
            let done = pending.commit(&json).await;
            done.map(|o| write_result(o, None)).map_err(to_js)
        })
    }

    /// End the lease, once a commit or reload in flight has ended.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn release<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let inner = self.inner.clone();
        env.spawn_future(async move {
            let taken = inner.lock().await.take();
            match taken {
                Some(p) => p.release().await.map_err(to_js),
                None => Ok(()),
            }
        })
    }
}

/// Made on the runtime (where `begin` resolves), whose handle it keeps for its drop.
pub(crate) fn pending_update(
    pending: core::Pending,
    notice: Option<String>,
) -> Result<PendingUpdate> {
    Ok(PendingUpdate {
        token: pending.token() as i64,
        inner: Arc::new(tokio::sync::Mutex::new(Some(pending))),
        notice,
        rt: runtime()?,
    })
}
