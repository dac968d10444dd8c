//! Loading and unloading as requests to the engine task: the checks and the memory promised
//! before a load, the statuses and events as it runs, and leases for whoever uses the model.

use std::time::{Duration, Instant};

use crate::domain::{mib_ceil, ModelId, ModelStatus};
use crate::engine::{
    inspect_folder, EngineError, Lease, LoadJob, LoadRequest, LoadUpdate, LoadedFacts, LockRefusal,
    Refusal, TextSource, Unloaded,
};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::events::{self, Event, JobError, Throttle};
use crate::store::ModelRecord;

use super::{busy_error, ModelView, Services};

/// Load progress events are sent at most this often (a new stage always goes out).
const LOAD_PROGRESS_PERIOD: Duration = Duration::from_millis(200);

impl Services {
    fn unload_timeout(&self) -> Duration {
        Duration::from_secs(self.inner.settings.graceful_unload_timeout)
    }

    /// A lease on the loaded model, for whatever uses it (inference). `MODEL_NOT_LOADED` if
    /// `model_id` is not the loaded model.
    pub async fn lease(&self, model_id: Option<i64>) -> AppResult<Lease> {
        self.inner.engine.lease(model_id).await.ok_or_else(|| {
            let message = match model_id {
                Some(id) => format!("Model {id} is not loaded. Load it first."),
                None => "No model is loaded. Load one first.".to_string(),
            };
            AppError::new(ErrorCode::ModelNotLoaded, message)
        })
    }

    /// `POST /api/models/{id}/load`: checks, then `loading` and the engine's load; its end
    /// is followed in the background.
    pub async fn load_model(&self, id: ModelId) -> AppResult<ModelView> {
        let store = &self.inner.store;
        let row = store.get_model(id.0).await?;
        match row.status {
            ModelStatus::Loaded => {
                return Err(AppError::new(
                    ErrorCode::ModelAlreadyLoaded,
                    format!("Model {} ({}) is already loaded.", row.id, row.name),
                )
                .with_detail("model_id", row.id))
            }
            ModelStatus::Downloading | ModelStatus::Loading => return Err(busy_error(&row)),
            ModelStatus::Ready | ModelStatus::Error => {}
        }
        // A Hub model gets its folder (the snapshot) only when its download completes.
        let Some(folder) = row.cache_path.clone() else {
            return Err(AppError::invalid_state(
                row.id,
                row.status.as_str(),
                format!(
                    "Model {} has no complete download to load; retry the download first.",
                    row.id
                ),
            ));
        };
        let ticket = match self.inner.engine.reserve_load(row.id).await {
            Ok(ticket) => ticket,
            Err(Refusal::Busy(_)) => {
                return Err(AppError::busy(
                    row.id,
                    "Another model is loading right now; wait for it to finish.",
                ))
            }
            Err(Refusal::Locked(locked)) => return Err(self.locked_error(locked, row.id).await),
        };

        // Read the headers again: the files are the truth, and the device may have changed.
        let info =
            tokio::task::spawn_blocking(move || inspect_folder(std::path::Path::new(&folder)))
                .await
                .map_err(AppError::internal)?
                .map_err(|e| match e {
                    EngineError::InvalidFolder { reason, .. } => AppError::new(
                        ErrorCode::ModelLoadFailed,
                        format!("Model {}'s files cannot be loaded: {reason}.", row.id),
                    )
                    .with_detail("model_id", row.id),
                    other => AppError::from(other),
                })?;
        let gpu = self.inner.devices.uses_gpu();
        let est = self.memory_estimate(&info.tensors, row.quantization, Some(&info.config));
        let dev = self.inner.devices.read().await;
        // The loaded model (if another) is unloaded first, so its memory counts as available.
        let held = self
            .inner
            .engine
            .facts()
            .loaded
            .map_or(0, |l| l.memory_footprint);
        let available = dev.free_bytes + held;
        if est.total_bytes() > available {
            return Err(
                AppError::insufficient_memory(est.total_mb(), available >> 20, &dev.name)
                    .with_detail("model_id", row.id)
                    .with_detail("weights_mb", mib_ceil(est.weights_bytes))
                    .with_detail("overhead_mb", mib_ceil(est.overhead_bytes))
                    .with_detail("repacked_mb", mib_ceil(est.repacked_bytes))
                    .with_detail("kv_cache_mb", mib_ceil(est.kv_cache_bytes)),
            );
        }

        let from = [ModelStatus::Ready, ModelStatus::Error];
        if !store
            .transition(row.id, &from, ModelStatus::Loading, None)
            .await?
        {
            let now = store.get_model(row.id).await?;
            return Err(match now.status {
                ModelStatus::Loaded => AppError::new(
                    ErrorCode::ModelAlreadyLoaded,
                    format!("Model {} is already loaded.", now.id),
                ),
                _ => busy_error(&now),
            });
        }
        let request = LoadRequest {
            weight_files: info.weight_files,
            tensors: info.tensors,
            quantization: row.quantization,
            gpu,
        };
        let text = TextSource {
            folder: std::path::PathBuf::from(row.cache_path.as_deref().unwrap_or_default()),
            max_context: self.inner.settings.max_context_tokens,
        };
        let job = ticket.start(request, text, self.unload_timeout());
        let follower = tokio::spawn(self.clone().follow_load(
            row.id,
            row.quantization.as_str(),
            job,
        ));
        // One load at a time, so one follower: the engine's reservation guarantees it.
        *crate::sync::lock(&self.inner.load_follower) = Some(follower);
        self.get_model(id).await
    }

    /// Follows a load to its end: the previous model's unload, progress events, then the
    /// status and the final event.
    async fn follow_load(self, model_id: i64, quantization: &'static str, mut job: LoadJob) {
        let started = Instant::now();
        let mut throttle = Throttle::new(LOAD_PROGRESS_PERIOD);
        let mut stage_now = String::new();
        while let Some(update) = job.updates.recv().await {
            match update {
                LoadUpdate::Unloaded(done) => self.finish_unload(done).await,
                LoadUpdate::Progress { stage, progress } => {
                    let new_stage = stage != stage_now;
                    if throttle.due(new_stage || progress == 100) {
                        stage_now.clone_from(&stage);
                        self.inner
                            .events
                            .emit(Event::LoadProgress(events::LoadProgress {
                                model_id,
                                stage,
                                progress,
                            }))
                            .await;
                    }
                }
            }
        }
        let result = job.done.await.unwrap_or(Err(EngineError::Cancelled));
        crate::metrics::load_finished(
            started.elapsed(),
            quantization,
            crate::metrics::LoadOutcome::from_result(&result),
        );
        let error = match result {
            Ok(facts) => {
                self.finish_load(model_id, facts, started).await;
                None
            }
            Err(EngineError::Cancelled) => {
                // Shutdown: the next start finds the row `ready` again either way.
                self.settle(model_id, &[ModelStatus::Loading], ModelStatus::Ready, None)
                    .await;
                Some((
                    ErrorCode::ModelLoadFailed,
                    "The load was cancelled: the server is stopping.".to_string(),
                ))
            }
            Err(err) => {
                let app_err = AppError::from(err);
                tracing::warn!(model_id, "load failed: {}", app_err.message);
                self.settle(
                    model_id,
                    &[ModelStatus::Loading],
                    ModelStatus::Error,
                    Some(&app_err.message),
                )
                .await;
                self.inner
                    .events
                    .emit(Event::LoadError(events::LoadError {
                        model_id,
                        error: JobError::brief(&app_err),
                    }))
                    .await;
                Some((app_err.code, app_err.message))
            }
        };
        self.inner
            .load_settled
            .send_replace(Some(super::LoadSettled { model_id, error }));
    }

    async fn finish_load(&self, model_id: i64, facts: LoadedFacts, started: Instant) {
        if self
            .settle(model_id, &[ModelStatus::Loading], ModelStatus::Loaded, None)
            .await
        {
            tracing::info!(
                model_id,
                mb = facts.memory_footprint >> 20,
                secs = started.elapsed().as_secs_f64(),
                "model loaded"
            );
            self.inner
                .events
                .emit(Event::LoadComplete(events::LoadComplete {
                    model_id,
                    memory_used_mb: mib_ceil(facts.memory_footprint),
                }))
                .await;
        } else if !self.inner.shutdown.is_cancelled() {
            // The row left `loading` under us (it cannot be deleted while loading): do not
            // keep memory that no record shows.
            tracing::error!(model_id, "the loaded model's record is no longer loading");
            self.inner
                .engine
                .unload(Some(model_id), Duration::ZERO)
                .await;
        }
    }

    /// Records an unload done by the engine: the model is `ready` again.
    async fn finish_unload(&self, done: Unloaded) {
        let model_id = done.model_id;
        if done.revoked_leases > 0 {
            tracing::warn!(
                model_id,
                leases = done.revoked_leases,
                "unloaded with requests still in flight"
            );
        }
        self.settle(model_id, &[ModelStatus::Loaded], ModelStatus::Ready, None)
            .await;
        self.inner
            .events
            .emit(Event::UnloadComplete(events::UnloadComplete { model_id }))
            .await;
    }

    /// `POST /api/models/{id}/unload`: waits for leases (up to the graceful timeout), frees
    /// the memory, and answers with the model `ready`.
    pub async fn unload_model(&self, id: ModelId) -> AppResult<ModelView> {
        let row = self.inner.store.get_model(id.0).await?;
        match row.status {
            ModelStatus::Loaded => {}
            ModelStatus::Loading => return Err(busy_error(&row)),
            _ => return Err(not_loaded(&row)),
        }
        let Some(done) = self
            .inner
            .engine
            .unload(Some(id.0), self.unload_timeout())
            .await
        else {
            // Unloaded by someone else (a load of another model) while we asked.
            let now = self.inner.store.get_model(id.0).await?;
            return Err(not_loaded(&now));
        };
        self.finish_unload(done).await;
        self.get_model(id).await
    }

    /// `POST /api/models/{id}/lock`: the loaded model stays until it is unloaded by hand: a
    /// load of another model (asked or on request) is refused, and it is not unloaded when idle.
    pub async fn lock_model(&self, id: ModelId) -> AppResult<ModelView> {
        let row = self.inner.store.get_model(id.0).await?;
        match self.inner.engine.lock(row.id).await {
            Ok(()) => {}
            Err(LockRefusal::LockedOther(locked)) => {
                return Err(self.locked_error(locked, row.id).await)
            }
            Err(LockRefusal::NotLoaded) => return Err(not_loaded(&row)),
        }
        tracing::info!(model_id = row.id, "model locked");
        self.get_model(id).await
    }

    /// `MODEL_LOCKED` for `model_id`, naming the locked model.
    async fn locked_error(&self, locked: i64, model_id: i64) -> AppError {
        AppError::locked(locked, &self.model_name(locked).await).with_detail("model_id", model_id)
    }

    /// A model's name, for messages (empty if the registry cannot say).
    pub(super) async fn model_name(&self, id: i64) -> String {
        self.inner
            .store
            .get_model(id)
            .await
            .map(|r| r.name)
            .unwrap_or_default()
    }

    /// `POST /api/models/{id}/unlock`: always answers with the model, unlocked.
    pub async fn unlock_model(&self, id: ModelId) -> AppResult<ModelView> {
        let row = self.inner.store.get_model(id.0).await?;
        self.inner.engine.unlock(row.id).await;
        self.get_model(id).await
    }

    /// Unloads the loaded model once nobody has used it for `IDLE_UNLOAD_SECONDS` (unless it is
    /// locked). Runs until shutdown; does nothing when the setting is off.
    pub async fn unload_when_idle(self) {
        let Some(idle) = self.idle_unload() else {
            return;
        };
        let mut facts = self.inner.engine.watch_facts();
        loop {
            let due = facts.borrow_and_update().loaded.as_ref().and_then(|l| {
                let since = l.idle_since.filter(|_| !l.locked)?;
                let left = (since + idle)
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                Some((l.model_id, left))
            });
            let wait = async {
                match due {
                    Some((_, left)) => tokio::time::sleep(left).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                changed = facts.changed() => if changed.is_err() { return },
                _ = wait => {
                    let Some((model_id, _)) = due else { continue };
                    if let Some(done) = self.inner.engine.unload_if_idle(model_id, idle).await {
                        tracing::info!(model_id, secs = idle.as_secs(), "unloaded after being idle");
                        self.finish_unload(done).await;
                    }
                }
            }
        }
    }

    /// `IDLE_UNLOAD_SECONDS`, when set.
    pub fn idle_unload(&self) -> Option<Duration> {
        self.inner
            .settings
            .idle_unload_seconds
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
    }

    /// Loads `AUTO_LOAD_MODEL` (an id or a name) at start-up, if set.
    pub async fn auto_load(&self) {
        let Some(wanted) = self.inner.settings.auto_load_model.clone() else {
            return;
        };
        let rows = match self.inner.store.list_models().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!("AUTO_LOAD_MODEL: cannot read the registry: {e}");
                return;
            }
        };
        let found: Option<&ModelRecord> = rows
            .iter()
            .find(|r| r.id.to_string() == wanted)
            .or_else(|| rows.iter().find(|r| r.name == wanted))
            .or_else(|| {
                rows.iter()
                    .find(|r| r.repo_id.as_deref() == Some(wanted.as_str()))
            });
        match found {
            Some(row) => match self.load_model(ModelId(row.id)).await {
                Ok(_) => tracing::info!(model_id = row.id, "AUTO_LOAD_MODEL: loading {}", row.name),
                Err(e) => {
                    tracing::error!("AUTO_LOAD_MODEL: cannot load {}: {}", row.name, e.message)
                }
            },
            None => tracing::error!("AUTO_LOAD_MODEL: no model has the id or name '{wanted}'"),
        }
    }
}

fn not_loaded(row: &ModelRecord) -> AppError {
    AppError::new(
        ErrorCode::ModelNotLoaded,
        format!("Model {} ({}) is not loaded.", row.id, row.name),
    )
    .with_detail("model_id", row.id)
    .with_detail("status", row.status.as_str())
}
