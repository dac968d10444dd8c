//! Loading and unloading: one model in memory, memory promised before the load and measured
//! after it, a failed load releasing everything it took.

use std::time::{Duration, Instant};

use crate::api::schema::ModelResponse;
use crate::domain::{mib_ceil, ModelId, ModelStatus};
use crate::engine::loader::{load_blocking, LoadRequest};
use crate::engine::{estimate, inspect_folder, EngineError, Lease};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::events::Event;
use crate::store::ModelRecord;

use super::{busy_error, LoadedInfo, Services};

/// Load progress events are sent at most this often.
const LOAD_PROGRESS_PERIOD: Duration = Duration::from_millis(200);

impl Services {
    fn unload_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.graceful_unload_timeout)
    }

    /// A lease on the loaded model, for whatever uses it (inference). `MODEL_NOT_LOADED` if
    /// `model_id` is not the loaded model.
    pub fn lease(&self, model_id: Option<i64>) -> AppResult<Lease> {
        self.engine.lease(model_id).ok_or_else(|| {
            let message = match model_id {
                Some(id) => format!("Model {id} is not loaded. Load it first."),
                None => "No model is loaded. Load one first.".to_string(),
            };
            AppError::new(ErrorCode::ModelNotLoaded, message)
        })
    }

    /// `POST /api/models/{id}/load`: checks, then `loading` and a background job.
    pub async fn load_model(&self, id: ModelId) -> AppResult<ModelResponse> {
        let row = self.store.get_model(id.0).await?;
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
        let Some(ticket) = self.engine.try_begin_load() else {
            return Err(AppError::busy(
                row.id,
                "Another model is loading right now; wait for it to finish.",
            ));
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
        let gpu = self.devices.uses_gpu();
        let est = estimate(&info.tensors, row.quantization, gpu);
        let devices = self.devices.clone();
        let dev = tokio::task::spawn_blocking(move || devices.current())
            .await
            .map_err(AppError::internal)?;
        // The loaded model (if another) is unloaded first, so its memory counts as available.
        let available = dev.free_bytes + self.engine.loaded_bytes();
        if est.total_bytes() > available {
            return Err(
                AppError::insufficient_memory(est.total_mb(), available >> 20, &dev.name)
                    .with_detail("model_id", row.id)
                    .with_detail("weights_mb", mib_ceil(est.weights_bytes))
                    .with_detail("overhead_mb", mib_ceil(est.overhead_bytes)),
            );
        }

        let from = [ModelStatus::Ready, ModelStatus::Error];
        if !self
            .store
            .transition(row.id, &from, ModelStatus::Loading, None)
            .await?
        {
            let now = self.store.get_model(row.id).await?;
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
        let services = self.clone();
        let model_id = row.id;
        tokio::spawn(async move {
            services.run_load(model_id, request).await;
            drop(ticket);
        });
        self.get_model(id).await
    }

    /// The background part of a load.
    async fn run_load(&self, model_id: i64, request: LoadRequest) {
        let started = Instant::now();
        let quantization = request.quantization.as_str();
        let _ops = self.engine.lock_ops().await;
        if let Some(previous) = self.engine.loaded_id() {
            self.unload_locked(previous).await;
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, u8)>();
        let cancel = self.shutdown.child_token();
        let job_cancel = cancel.clone();
        let job = tokio::task::spawn_blocking(move || {
            let progress = move |stage: &str, pct: u8| {
                let _ = tx.send((stage.to_string(), pct));
            };
            load_blocking(&request, &job_cancel, &progress)
        });
        let events = self.events.clone();
        let forward = tokio::spawn(async move {
            let mut last: Option<(Instant, String)> = None;
            while let Some((stage, progress)) = rx.recv().await {
                let due = match &last {
                    Some((at, s)) => {
                        *s != stage || progress == 100 || at.elapsed() >= LOAD_PROGRESS_PERIOD
                    }
                    None => true,
                };
                if due {
                    last = Some((Instant::now(), stage.clone()));
                    events
                        .emit(Event::LoadProgress {
                            model_id,
                            stage,
                            progress,
                        })
                        .await;
                }
            }
        });
        let result = match job.await {
            Ok(r) => r,
            Err(e) => Err(EngineError::BadCheckpoint(format!(
                "the loader stopped unexpectedly: {e}"
            ))),
        };
        let _ = forward.await;
        crate::metrics::load_finished(
            started.elapsed(),
            quantization,
            crate::metrics::LoadOutcome::from_result(&result),
        );
        match result {
            Ok(model) => {
                let info = LoadedInfo {
                    model_id,
                    num_parameters: model.num_parameters,
                    memory_footprint: model.footprint_bytes,
                    device: model.device_name.clone(),
                    dtype: model.dtype.clone(),
                };
                self.engine.install(model_id, model);
                self.set_loaded(Some(info.clone()));
                match self
                    .store
                    .transition(model_id, &[ModelStatus::Loading], ModelStatus::Loaded, None)
                    .await
                {
                    Ok(true) => {
                        tracing::info!(
                            model_id,
                            mb = info.memory_footprint >> 20,
                            secs = started.elapsed().as_secs_f64(),
                            "model loaded"
                        );
                        self.events
                            .emit(Event::LoadComplete {
                                model_id,
                                memory_used_mb: mib_ceil(info.memory_footprint),
                            })
                            .await;
                    }
                    other => {
                        // The row left `loading` under us (it cannot be deleted while loading,
                        // so this is a database failure): do not keep memory nobody can see.
                        tracing::error!(
                            model_id,
                            ?other,
                            "loaded model's record could not be marked loaded"
                        );
                        self.engine.unload(Some(model_id), Duration::ZERO).await;
                        self.set_loaded(None);
                        let _ = self
                            .store
                            .transition(
                                model_id,
                                &[ModelStatus::Loading],
                                ModelStatus::Error,
                                Some("The registry could not record the load."),
                            )
                            .await;
                    }
                }
            }
            Err(err) => {
                crate::engine::runtime::release_freed_memory();
                let app_err = AppError::from(err);
                tracing::warn!(model_id, "load failed: {}", app_err.message);
                let _ = self
                    .store
                    .transition(
                        model_id,
                        &[ModelStatus::Loading],
                        ModelStatus::Error,
                        Some(&app_err.message),
                    )
                    .await;
                self.events
                    .emit(Event::LoadError {
                        model_id,
                        code: app_err.code.as_str().to_string(),
                        message: app_err.message.clone(),
                    })
                    .await;
            }
        }
    }

    /// Unloads `model_id` while holding the ops lock.
    async fn unload_locked(&self, model_id: i64) {
        if let Some(done) = self
            .engine
            .unload(Some(model_id), self.unload_timeout())
            .await
        {
            if done.revoked_leases > 0 {
                tracing::warn!(
                    model_id,
                    leases = done.revoked_leases,
                    "unloaded with requests still in flight"
                );
            }
        }
        self.set_loaded(None);
        if let Err(e) = self
            .store
            .transition(model_id, &[ModelStatus::Loaded], ModelStatus::Ready, None)
            .await
        {
            tracing::error!(model_id, "could not mark the unloaded model ready: {e}");
        }
        self.events.emit(Event::UnloadComplete { model_id }).await;
    }

    /// `POST /api/models/{id}/unload`: waits for leases (up to the graceful timeout), frees
    /// the memory, and answers with the model `ready`.
    pub async fn unload_model(&self, id: ModelId) -> AppResult<ModelResponse> {
        let row = self.store.get_model(id.0).await?;
        match row.status {
            ModelStatus::Loaded => {}
            ModelStatus::Loading => return Err(busy_error(&row)),
            _ => {
                return Err(AppError::new(
                    ErrorCode::ModelNotLoaded,
                    format!("Model {} ({}) is not loaded.", row.id, row.name),
                )
                .with_detail("model_id", row.id)
                .with_detail("status", row.status.as_str()))
            }
        }
        let _ops = self.engine.lock_ops().await;
        let now = self.store.get_model(id.0).await?;
        if now.status != ModelStatus::Loaded {
            return Err(AppError::new(
                ErrorCode::ModelNotLoaded,
                format!("Model {} is not loaded.", now.id),
            )
            .with_detail("model_id", now.id));
        }
        self.unload_locked(id.0).await;
        self.get_model(id).await
    }

    /// Loads `AUTO_LOAD_MODEL` (an id or a name) at start-up, if set.
    pub async fn auto_load(&self) {
        let Some(wanted) = self.settings.auto_load_model.clone() else {
            return;
        };
        let rows = match self.store.list_models().await {
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
