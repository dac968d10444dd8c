//! Which model a `/v1` request names, and whether it can answer now.

use crate::domain::ModelStatus;
use crate::engine::infer::supports_inference;
use crate::engine::Lease;
use crate::error::AppResult;
use crate::store::ModelRecord;

use super::Services;

/// What a `/v1` request may use.
pub enum Answerer {
    /// The model is loaded: a lease on it.
    Loaded(Box<ModelRecord>, Lease),
    /// A load of it runs now.
    Loading(Box<ModelRecord>),
    /// It is known but not in memory.
    NotLoaded(Box<ModelRecord>),
    /// No model has that name, id or repo id.
    Unknown,
}

impl Services {
    /// The model `name` stands for (its name, numeric id or repo id) and whether it is loaded.
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
        if let Ok(lease) = self.lease(Some(row.id)).await {
            return Ok(Answerer::Loaded(Box::new(row), lease));
        }
        Ok(match row.status {
            ModelStatus::Loading => Answerer::Loading(Box::new(row)),
            _ => Answerer::NotLoaded(Box::new(row)),
        })
    }

    /// The models that can answer on `/v1` now: the loaded one, if its architecture generates.
    pub async fn answering_models(&self) -> AppResult<Vec<ModelRecord>> {
        let Some(id) = self.loaded_model_id() else {
            return Ok(Vec::new());
        };
        let row = self.inner.store.get_model(id).await?;
        Ok(if supports_inference(row.architecture.as_deref()) {
            vec![row]
        } else {
            Vec::new()
        })
    }

    /// Generation requests that may wait while one runs.
    pub fn max_queued_requests(&self) -> usize {
        self.inner.settings.max_queued_requests
    }
}
