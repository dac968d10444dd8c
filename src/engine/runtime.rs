//! The one model in memory and the leases on it. Whoever uses the loaded model (the coming
//! inference endpoints; tests) takes a [`Lease`]; an unload waits for leases to end, up to a
//! timeout, then revokes them and unloads anyway.
//!
//! Lock order: `ops` (async, serialises load/unload) before `slot` (sync, never held across
//! an await).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::loader::LoadedModel;

struct Slot {
    model_id: i64,
    model: Arc<LoadedModel>,
    revoke: CancellationToken,
    leases: Arc<LeaseCount>,
}

#[derive(Default)]
struct LeaseCount {
    active: AtomicUsize,
    released: Notify,
}

/// A hold on the loaded model. While any lease is alive an unload waits (up to
/// `GRACEFUL_UNLOAD_TIMEOUT`); after that the lease is revoked and its holder must stop.
pub struct Lease {
    model_id: i64,
    model: Arc<LoadedModel>,
    revoked: CancellationToken,
    count: Arc<LeaseCount>,
}

impl Lease {
    pub fn model_id(&self) -> i64 {
        self.model_id
    }
    pub fn model(&self) -> &LoadedModel {
        &self.model
    }
    /// True once an unload has given up waiting: stop using the model and drop the lease.
    pub fn is_revoked(&self) -> bool {
        self.revoked.is_cancelled()
    }
    /// Resolves when the lease is revoked.
    pub async fn revoked(&self) {
        self.revoked.cancelled().await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.count.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.count.released.notify_waiters();
        }
    }
}

/// What an unload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unloaded {
    pub model_id: i64,
    /// Leases still held when the timeout ran out (revoked).
    pub revoked_leases: usize,
}

/// The owner of "one model loaded".
#[derive(Clone, Default)]
pub struct Engine {
    slot: Arc<Mutex<Option<Slot>>>,
    ops: Arc<tokio::sync::Mutex<()>>,
    loading: Arc<AtomicBool>,
}

/// Held while a load runs; only one exists at a time.
pub struct LoadTicket {
    flag: Arc<AtomicBool>,
}

impl Drop for LoadTicket {
    fn drop(&mut self) {
        self.flag.store(false, Ordering::Release);
    }
}

impl Engine {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Slot>> {
        match self.slot.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Claims the one load; `None` while another load runs.
    pub fn try_begin_load(&self) -> Option<LoadTicket> {
        self.loading
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| LoadTicket {
                flag: self.loading.clone(),
            })
    }

    /// The id of the loaded model, if any.
    pub fn loaded_id(&self) -> Option<i64> {
        self.slot().as_ref().map(|s| s.model_id)
    }

    /// Bytes the loaded model holds (0 when none).
    pub fn loaded_bytes(&self) -> u64 {
        self.slot()
            .as_ref()
            .map(|s| s.model.footprint_bytes)
            .unwrap_or(0)
    }

    /// A lease on the loaded model if it is `model_id` (or any model when `None`).
    pub fn lease(&self, model_id: Option<i64>) -> Option<Lease> {
        let slot = self.slot();
        let s = slot.as_ref()?;
        if model_id.is_some_and(|id| id != s.model_id) {
            return None;
        }
        s.leases.active.fetch_add(1, Ordering::AcqRel);
        Some(Lease {
            model_id: s.model_id,
            model: s.model.clone(),
            revoked: s.revoke.child_token(),
            count: s.leases.clone(),
        })
    }

    /// Serialises load and unload steps.
    pub async fn lock_ops(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.ops.lock().await
    }

    /// Makes `model` the loaded one. The caller holds `lock_ops` and has unloaded the previous.
    pub fn install(&self, model_id: i64, model: LoadedModel) {
        *self.slot() = Some(Slot {
            model_id,
            model: Arc::new(model),
            revoke: CancellationToken::new(),
            leases: Arc::new(LeaseCount::default()),
        });
    }

    /// Unloads the loaded model (if it is `model_id`, or any when `None`): new leases are
    /// refused at once, current ones get `timeout` to end, then are revoked. The caller holds
    /// `lock_ops`.
    pub async fn unload(&self, model_id: Option<i64>, timeout: Duration) -> Option<Unloaded> {
        let slot = {
            let mut guard = self.slot();
            match guard.as_ref() {
                Some(s) if model_id.is_none_or(|id| id == s.model_id) => guard.take(),
                _ => None,
            }
        }?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = slot.leases.released.notified();
            if slot.leases.active.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let revoked_leases = slot.leases.active.load(Ordering::Acquire);
        slot.revoke.cancel();
        let model_id = slot.model_id;
        drop(slot);
        release_freed_memory();
        Some(Unloaded {
            model_id,
            revoked_leases,
        })
    }
}

/// Gives freed heap pages back to the OS, so an unload really lowers the process's memory.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
