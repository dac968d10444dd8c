//! The lifecycle rules: register, download, load, unload, delete, start-up reconciliation and
//! shutdown. The only layer that combines the store, the Hub, the engine and the events. It
//! answers in domain values ([`ModelView`], [`Preview`], [`Deleted`]); `api/` turns them into
//! wire types.
//!
//! * [`models`]: register a local folder, list, show, delete.
//! * [`downloads`]: the [`Downloads`] table (one owner of each running download: its cancel
//!   token, its task and its live figures) and the download lifecycle.
//! * [`preview`]: what a Hub repo is and what each quantization costs.
//! * [`load`]: load, unload and leases, as requests to the engine task.

mod downloads;
mod health;
mod inference;
mod load;
mod models;
mod preview;

pub use downloads::{as_caller, DownloadOrder, CANCELLED_MESSAGE};
pub use inference::Answerer;
pub use models::{Deleted, MAX_NAME_CHARS};
pub use preview::{Preview, PreviewSize};

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::ModelStatus;
use crate::engine::{Devices, Engine, LoadedFacts};
use crate::error::AppError;
use crate::events::Events;
use crate::hub::{DownloadProgress, Hub};
use crate::store::{ModelRecord, Store, StoreError};

use downloads::Downloads;

/// A model as the service shows it: its record and, while they exist, its live figures.
#[derive(Debug, Clone)]
pub struct ModelView {
    pub record: ModelRecord,
    /// While downloading: the running job's figures (zeros until it reports).
    pub download: Option<DownloadProgress>,
    /// While downloading: the job waits for a slot (`MAX_CONCURRENT_DOWNLOADS`).
    pub queued: bool,
    /// While loaded: what the engine holds.
    pub loaded: Option<LoadedFacts>,
    /// While loaded, unlocked and unused with `IDLE_UNLOAD_SECONDS` set: when it will be
    /// unloaded if nobody uses it before.
    pub idle_unload_at: Option<std::time::SystemTime>,
}

/// The services every handler uses; cheap to clone.
#[derive(Clone)]
pub struct Services {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    devices: Devices,
    events: Events,
    settings: Arc<Settings>,
    /// Cancelled at shutdown; every job's token descends from it.
    shutdown: CancellationToken,
    hub: Hub,
    downloads: Downloads,
    /// `MAX_CONCURRENT_PREVIEWS` permits: each preview holds one while it asks the Hub.
    previews: tokio::sync::Semaphore,
    /// The one owner of the loaded model.
    engine: Engine,
    /// The task that follows a running load to its end (statuses and events).
    load_follower: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The last load that ended, once its status is recorded (requests that load on request
    /// wait for it).
    load_settled: tokio::sync::watch::Sender<Option<LoadSettled>>,
    /// Recent generations, for the last minute's tokens per second.
    throughput: Arc<crate::metrics::Throughput>,
}

/// How a load ended, once its record says so.
#[derive(Debug, Clone)]
pub struct LoadSettled {
    pub model_id: i64,
    /// Why it failed (its code and message), or `None` when the model is loaded.
    pub error: Option<(crate::error::ErrorCode, String)>,
}

impl Services {
    /// Wires the services and starts the engine task.
    pub fn new(
        store: Store,
        devices: Devices,
        events: Events,
        settings: Arc<Settings>,
        shutdown: CancellationToken,
        throughput: Arc<crate::metrics::Throughput>,
    ) -> anyhow::Result<Self> {
        let hub = Hub::new(
            &settings.hf_endpoint,
            settings.cache_dir(),
            settings.data_dir.join("downloads"),
        )
        .map_err(|e| anyhow::anyhow!("HF_ENDPOINT: {e}"))?;
        Ok(Services {
            inner: Arc::new(Inner {
                engine: Engine::spawn(shutdown.child_token()),
                downloads: Downloads::new(settings.max_concurrent_downloads),
                previews: tokio::sync::Semaphore::new(settings.max_concurrent_previews.max(1)),
                hub,
                store,
                devices,
                events,
                settings,
                shutdown,
                load_follower: std::sync::Mutex::new(None),
                load_settled: tokio::sync::watch::Sender::new(None),
                throughput,
            }),
        })
    }

    /// Start-up reconciliation: models left `loading`/`loaded` by a previous process become
    /// `ready`, downloads left `downloading` resume. Nothing stays stuck.
    pub async fn reconcile(&self) -> anyhow::Result<()> {
        let reset = self.inner.store.reset_memory_states().await?;
        if reset > 0 {
            tracing::info!(
                models = reset,
                "models left in memory by a previous run are ready again"
            );
        }
        self.resume_downloads().await
    }

    /// Shutdown: stops the downloads (keeping their partial files), stops a running load and
    /// waits for it, so that nothing is left half-written.
    pub async fn wind_down(&self) {
        self.inner.shutdown.cancel();
        self.stop_downloads().await;
        self.inner.engine.join(STOP_WAIT).await;
        let follower = crate::sync::lock(&self.inner.load_follower).take();
        if let Some(follower) = follower {
            if tokio::time::timeout(STOP_WAIT, follower).await.is_err() {
                tracing::warn!("the load did not stop in time");
            }
        }
    }

    /// Closes the registry (after [`Services::wind_down`]).
    pub async fn close(&self) {
        self.inner.store.close().await;
    }

    /// Changes committed to the registry so far; equal values mean unchanged records.
    pub fn registry_generation(&self) -> u64 {
        self.inner.store.generation()
    }

    /// A record with its live figures.
    pub fn view(&self, record: ModelRecord) -> ModelView {
        let download = (record.status == ModelStatus::Downloading)
            .then(|| self.inner.downloads.progress(record.id).unwrap_or_default());
        let loaded = if record.status == ModelStatus::Loaded {
            self.inner
                .engine
                .facts()
                .loaded
                .filter(|l| l.model_id == record.id)
        } else {
            None
        };
        let queued = download.is_some() && self.inner.downloads.is_queued(record.id);
        let idle_unload_at = loaded.as_ref().and_then(|l| {
            let idle = self.idle_unload()?;
            l.idle_since.filter(|_| !l.locked).map(|since| since + idle)
        });
        ModelView {
            record,
            download,
            queued,
            loaded,
            idle_unload_at,
        }
    }

    /// True when a record's view changes without a registry change: its live figures.
    pub fn has_live_figures(record: &ModelRecord) -> bool {
        matches!(
            record.status,
            ModelStatus::Downloading | ModelStatus::Loaded
        )
    }

    /// What a load of `tensors` at `quantization` takes on the load device: weights, overhead
    /// and, for a model that can generate (`config`), one generation's KV cache over the
    /// context the server allows.
    fn memory_estimate(
        &self,
        tensors: &[crate::engine::TensorMeta],
        quantization: crate::domain::Quantization,
        config: Option<&serde_json::Value>,
    ) -> crate::engine::Estimate {
        crate::engine::estimate(tensors, quantization, self.inner.devices.uses_gpu()).with_kv_cache(
            crate::engine::infer::kv_cache_bytes(config, self.inner.settings.max_context_tokens),
        )
    }

    /// The settings the server runs with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Moves a model from `from` to `to`, retrying while the database is unreachable (until
    /// shutdown, after which start-up reconciliation settles the row). Returns whether it
    /// moved; `false` when the row was not in `from` (or shutdown came first).
    async fn settle(
        &self,
        id: i64,
        from: &[ModelStatus],
        to: ModelStatus,
        message: Option<&str>,
    ) -> bool {
        let mut wait = Duration::from_millis(200);
        loop {
            match self.inner.store.transition(id, from, to, message).await {
                Ok(moved) => return moved,
                Err(StoreError::Db(e)) => {
                    tracing::warn!(
                        model_id = id,
                        to = to.as_str(),
                        "the registry is unreachable, retrying in {wait:?}: {e}"
                    );
                }
                Err(e) => {
                    tracing::error!(model_id = id, to = to.as_str(), "cannot record: {e}");
                    return false;
                }
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}

/// How long cancel and shutdown wait for a job to stop.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// The error for an operation refused because of the model's status.
pub fn busy_error(row: &ModelRecord) -> AppError {
    let what = match row.status {
        ModelStatus::Downloading => "is downloading; cancel the download first",
        ModelStatus::Loading => "is loading; wait for it to finish and unload it first",
        ModelStatus::Loaded => "is loaded; unload it first",
        ModelStatus::Ready | ModelStatus::Error => "changed state while the request ran; try again",
    };
    AppError::busy(row.id, format!("Model {} ({}) {what}.", row.id, row.name))
        .with_detail("status", row.status.as_str())
}
