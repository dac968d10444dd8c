//! Which model a `/v1` request names, and whether it can answer now: loading it on request
//! (`LOAD_ON_REQUEST`), the lock, and the last minute's generation speed.

use std::time::Duration;

use crate::domain::{ModelId, ModelStatus};
use crate::engine::infer::supports_inference;
use crate::engine::Lease;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::store::ModelRecord;

use super::Services;

/// What a `/v1` request may use.
pub enum Answerer {
    /// The model is loaded: a lease on it.
    Loaded(Box<ModelRecord>, Lease),
    /// A load of it runs now (and loading on request is off).
    Loading(Box<ModelRecord>),
    /// A load of another model runs now: retry after it.
    OtherLoading(Box<ModelRecord>),
    /// It is known but not in memory (and loading on request is off, or it cannot load).
    NotLoaded(Box<ModelRecord>),
    /// Its architecture cannot generate (and it is not loaded: it is not loaded for nothing).
    CannotGenerate(Box<ModelRecord>),
    /// Another model is loaded and locked (its id and name).
    Locked(Box<ModelRecord>, i64, String),
    /// No model has that name, id or repo id.
    Unknown,
}

/// How many times a request tries to get its model in before it gives up with 503: each try
/// ends with a load that somebody else undid (a race with an unload).
const LOAD_TRIES: usize = 3;

impl Services {
    /// The model `name` stands for (its name, numeric id or repo id), loaded if it can be: with
    /// `LOAD_ON_REQUEST` a `ready` model is loaded first and this waits for the load; a load of
    /// the same model that runs already is waited for too. Errors are the load's own
    /// (`INSUFFICIENT_MEMORY`, `MODEL_LOAD_FAILED`, …).
    pub async fn answerer(&self, name: &str) -> AppResult<Answerer> {
        let rows = self.inner.store.list_summaries().await?;
        let found = rows
            .iter()
            .find(|r| r.name == name)
            .or_else(|| rows.iter().find(|r| r.id.to_string() == name))
            .or_else(|| rows.iter().find(|r| r.repo_id.as_deref() == Some(name)));
        let Some(row) = found.cloned() else {
            return Ok(Answerer::Unknown);
        };
        let id = row.id;
        // Subscribed before anything is read, so that no load's end is missed.
        let mut settled = self.inner.load_settled.subscribe();
        for _ in 0..LOAD_TRIES {
            if let Ok(lease) = self.lease(Some(id)).await {
                return Ok(Answerer::Loaded(Box::new(row), lease));
            }
            let facts = self.inner.engine.facts();
            if let Some(locked) = facts.loaded.as_ref().filter(|l| l.locked) {
                let locked_name = self.model_name(locked.model_id).await;
                return Ok(Answerer::Locked(
                    Box::new(row),
                    locked.model_id,
                    locked_name,
                ));
            }
            let now = self.inner.store.get_model(id).await?;
            let this_loading = facts.loading == Some(id) || now.status == ModelStatus::Loading;
            if facts.loading.is_some_and(|other| other != id) {
                return Ok(Answerer::OtherLoading(Box::new(now)));
            }
            if !supports_inference(now.architecture.as_deref()) {
                return Ok(Answerer::CannotGenerate(Box::new(now)));
            }
            if !self.inner.settings.load_on_request {
                return Ok(if this_loading {
                    Answerer::Loading(Box::new(now))
                } else {
                    Answerer::NotLoaded(Box::new(now))
                });
            }
            if !this_loading {
                match now.status {
                    ModelStatus::Ready | ModelStatus::Error if now.cache_path.is_some() => {}
                    // Loaded in the record but not leasable: an unload is under way.
                    ModelStatus::Loaded => return Ok(Answerer::OtherLoading(Box::new(now))),
                    _ => return Ok(Answerer::NotLoaded(Box::new(now))),
                }
                match self.load_model(ModelId(id)).await {
                    Ok(_) => tracing::info!(model_id = id, "loading on request"),
                    Err(e) if e.code == ErrorCode::ModelLocked => continue,
                    Err(e) if e.code == ErrorCode::ModelAlreadyLoaded => continue,
                    Err(e) if e.code == ErrorCode::ModelBusy => {
                        // Another request's load (of this model or another) won the race.
                        let facts = self.inner.engine.facts();
                        if facts.loading != Some(id) {
                            return Ok(Answerer::OtherLoading(Box::new(now)));
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            // This model's load runs: wait for its end to be recorded.
            let outcome = loop {
                if settled.changed().await.is_err() {
                    return Ok(Answerer::Loading(Box::new(now)));
                }
                let last = settled.borrow_and_update().clone();
                if let Some(done) = last.filter(|d| d.model_id == id) {
                    break done;
                }
            };
            if let Some((code, message)) = outcome.error {
                return Err(AppError::new(code, message).with_detail("model_id", id));
            }
        }
        Ok(Answerer::OtherLoading(Box::new(row)))
    }

    /// The models that can answer on `/v1` now: the loaded one if its architecture generates,
    /// and with `LOAD_ON_REQUEST` every other `ready` one that can; only the locked one while a
    /// model is locked.
    pub async fn answering_models(&self) -> AppResult<Vec<ModelRecord>> {
        let loaded = self.inner.engine.facts().loaded;
        let rows = self.inner.store.list_models().await?;
        let generates = |r: &ModelRecord| supports_inference(r.architecture.as_deref());
        let loaded_id = loaded.as_ref().map(|l| l.model_id);
        let only_loaded =
            loaded.as_ref().is_some_and(|l| l.locked) || !self.settings().load_on_request;
        Ok(rows
            .into_iter()
            .filter(|r| {
                generates(r)
                    && (Some(r.id) == loaded_id
                        || (!only_loaded
                            && matches!(r.status, ModelStatus::Ready | ModelStatus::Loaded)
                            && r.cache_path.is_some()))
            })
            .collect())
    }

    /// Generation requests that may wait while one runs.
    pub fn max_queued_requests(&self) -> usize {
        self.inner.settings.max_queued_requests
    }

    /// Records a finished generation's decode: `tokens` tokens after the first, in `took`.
    pub fn record_generation(&self, tokens: usize, took: Duration) {
        self.inner.throughput.record(tokens, took);
    }

    /// Tokens per second over the generations of the last minute; `None` without any.
    pub fn tokens_per_second(&self) -> Option<f64> {
        self.inner.throughput.per_second()
    }
}
