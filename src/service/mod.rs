//! The lifecycle rules: register, download, load, unload, delete, start-up reconciliation.
//! The only layer that combines the store, the Hub, the engine and the events.

mod download;
mod load;
mod models;

pub use download::DownloadState;
pub use models::busy_error;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::engine::{Devices, Engine};
use crate::events::Events;
use crate::store::Store;

/// Live download figures, held in memory while a download runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownloadProgress {
    pub downloaded_bytes: u64,
    pub total_bytes: u64,
    pub speed_bps: u64,
}

impl DownloadProgress {
    pub fn percent(&self) -> u8 {
        (self.downloaded_bytes.min(self.total_bytes) * 100)
            .checked_div(self.total_bytes)
            .unwrap_or(0) as u8
    }
}

/// What the loaded model holds, shown only while it is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedInfo {
    pub model_id: i64,
    pub num_parameters: u64,
    pub memory_footprint: u64,
    pub device: String,
    pub dtype: String,
}

/// A serialized list with the registry generation and loaded model it shows.
type ListBody = (u64, Option<LoadedInfo>, bytes::Bytes);

/// Shared services; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub store: Store,
    pub devices: Devices,
    pub events: Events,
    pub settings: Arc<Settings>,
    /// Cancelled at shutdown; every job's token descends from it.
    pub shutdown: CancellationToken,
    pub(crate) downloads: DownloadState,
    /// The one model in memory.
    pub engine: Engine,
    progress: Arc<Mutex<HashMap<i64, DownloadProgress>>>,
    /// The serialized list, for the registry generation and loaded model it was made from.
    list_body: Arc<Mutex<Option<ListBody>>>,
    loaded: Arc<Mutex<Option<LoadedInfo>>>,
}

impl Services {
    pub fn new(
        store: Store,
        devices: Devices,
        events: Events,
        settings: Arc<Settings>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let downloads = DownloadState::new(&settings)?;
        Ok(Services {
            downloads,
            engine: Engine::default(),
            store,
            devices,
            events,
            settings,
            shutdown,
            progress: Arc::new(Mutex::new(HashMap::new())),
            list_body: Arc::new(Mutex::new(None)),
            loaded: Arc::new(Mutex::new(None)),
        })
    }

    /// Start-up reconciliation: models left `loading`/`loaded` by a previous process become
    /// `ready`, downloads left `downloading` resume. Nothing stays stuck.
    pub async fn reconcile(&self) -> anyhow::Result<()> {
        let reset = self.store.reset_memory_states().await?;
        if reset > 0 {
            tracing::info!(
                models = reset,
                "models left in memory by a previous run are ready again"
            );
        }
        self.resume_downloads().await
    }

    /// Shutdown: stops jobs so that nothing is left half-written.
    pub async fn wind_down(&self) {
        self.shutdown.cancel();
        self.stop_downloads().await;
    }

    /// True while any download reports live figures (they change several times a second).
    pub fn downloads_live(&self) -> bool {
        !lock(&self.progress).is_empty()
    }

    /// The cached list body, if it was made from this generation and loaded model.
    pub fn cached_list_body(
        &self,
        generation: u64,
        loaded: &Option<LoadedInfo>,
    ) -> Option<bytes::Bytes> {
        match lock(&self.list_body).as_ref() {
            Some((g, l, body)) if *g == generation && l == loaded => Some(body.clone()),
            _ => None,
        }
    }

    pub fn cache_list_body(&self, generation: u64, loaded: Option<LoadedInfo>, body: bytes::Bytes) {
        *lock(&self.list_body) = Some((generation, loaded, body));
    }

    /// The live progress of a running download.
    pub fn progress_of(&self, id: i64) -> Option<DownloadProgress> {
        lock(&self.progress).get(&id).copied()
    }

    pub fn set_progress(&self, id: i64, progress: DownloadProgress) {
        lock(&self.progress).insert(id, progress);
    }

    pub fn clear_progress(&self, id: i64) {
        lock(&self.progress).remove(&id);
    }

    /// What is loaded now, if anything.
    pub fn loaded(&self) -> Option<LoadedInfo> {
        lock(&self.loaded).clone()
    }

    pub fn set_loaded(&self, info: Option<LoadedInfo>) {
        *lock(&self.loaded) = info;
    }
}

/// Locks a mutex whose data stays valid even if a holder panicked (plain maps of figures).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
