//! Registering, listing, showing and deleting models.

use std::path::{Component, Path, PathBuf};

use crate::api::schema::{DeleteResponse, ModelDownloadRequest, ModelResponse};
use crate::domain::{human_params, mib_ceil, ModelId, ModelStatus, Quantization, Source};
use crate::engine::{estimate, inspect_folder};
use crate::error::{AppError, AppResult};
use crate::store::{ModelRecord, NewModel};

use super::Services;

/// Longest `custom_name` accepted.
pub const MAX_NAME_CHARS: usize = 100;

impl Services {
    /// A registry row as the API shows it, with live download and load figures.
    pub fn view(&self, r: ModelRecord) -> ModelResponse {
        let progress = (r.status == ModelStatus::Downloading)
            .then(|| self.progress_of(r.id).unwrap_or_default());
        let loaded = if r.status == ModelStatus::Loaded {
            self.loaded().filter(|l| l.model_id == r.id)
        } else {
            None
        };
        ModelResponse {
            id: r.id,
            name: r.name,
            source: r.source,
            repo_id: r.repo_id,
            revision: r.revision,
            local_path: r.local_path,
            params: r.params,
            architecture: r.architecture,
            quantization: r.quantization,
            disk_size_mb: r.disk_size_mb,
            estimated_memory_mb: r.estimated_memory_mb,
            status: r.status,
            error_message: r.error_message,
            download_progress: progress.map(|p| p.percent() as i64),
            downloaded_bytes: progress.map(|p| p.downloaded_bytes as i64),
            total_bytes: progress.map(|p| p.total_bytes as i64),
            speed_bps: progress.map(|p| p.speed_bps as i64),
            created_at: Some(r.created_at),
            updated_at: Some(r.updated_at),
            loaded_at: r.loaded_at,
            num_parameters: loaded.as_ref().map(|l| l.num_parameters as i64),
            memory_footprint: loaded.as_ref().map(|l| l.memory_footprint as i64),
            device: loaded.as_ref().map(|l| l.device.clone()),
            dtype: loaded.map(|l| l.dtype),
        }
    }

    pub async fn list_models(&self) -> AppResult<Vec<ModelResponse>> {
        let rows = self.store.list_summaries().await?;
        Ok(rows.iter().map(|r| self.view(r.clone())).collect())
    }

    pub async fn get_model(&self, id: ModelId) -> AppResult<ModelResponse> {
        let row = self.store.get_model(id.0).await?;
        Ok(self.view(row))
    }

    /// `POST /api/models`: registers a local folder (ready at once) or starts a Hub download.
    pub async fn create_model(&self, req: ModelDownloadRequest) -> AppResult<ModelResponse> {
        let custom_name = validate_name(req.custom_name.as_deref())?;
        let quantization = req.quantization.unwrap_or(Quantization::Q4);
        match req.source {
            Source::Local => {
                let path = req.local_path.as_deref().ok_or_else(|| {
                    AppError::validation_field(
                        "local_path",
                        "Field 'local_path' is required when source is 'local'.",
                    )
                })?;
                self.register_local(path, quantization, custom_name).await
            }
            Source::Huggingface => self.start_download(req, quantization, custom_name).await,
        }
    }

    async fn register_local(
        &self,
        raw_path: &str,
        quantization: Quantization,
        custom_name: Option<String>,
    ) -> AppResult<ModelResponse> {
        let folder = validate_local_path(raw_path)?;
        let shown = raw_path.to_string();
        let info = tokio::task::spawn_blocking(move || {
            // Symlinks resolved, so one folder has one registry row however it is named.
            let canonical = std::fs::canonicalize(&folder).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    AppError::invalid_local_path(&shown, "the folder does not exist")
                }
                _ => AppError::invalid_local_path(&shown, format!("it cannot be resolved ({e})")),
            })?;
            let info = inspect_folder(&canonical)?;
            Ok::<_, AppError>((canonical, info))
        })
        .await
        .map_err(AppError::internal)??;
        let (canonical, info) = info;
        let canonical_str = canonical
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| AppError::invalid_local_path(raw_path, "the path is not valid UTF-8"))?;
        let name = custom_name.unwrap_or_else(|| {
            canonical
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| canonical_str.clone())
        });
        let est = estimate(&info.tensors, quantization, self.devices.uses_gpu());
        let new = NewModel {
            name,
            source: Source::Local,
            repo_id: None,
            revision: None,
            requested_revision: None,
            local_path: Some(canonical_str.clone()),
            params: Some(human_params(info.parameter_count)),
            architecture: info.architecture.clone(),
            quantization,
            disk_size_mb: Some(mib_ceil(info.disk_bytes()) as i64),
            estimated_memory_mb: Some(est.total_mb() as i64),
            status: ModelStatus::Ready,
            cache_path: Some(canonical_str),
            config_json: Some(info.config.to_string()),
            files: info.files.clone(),
            parameter_count: Some(info.parameter_count as i64),
            trust_remote_code: false,
        };
        let row = self.store.insert_model(new).await?;
        tracing::info!(model_id = row.id, path = ?row.local_path, "registered local model");
        Ok(self.view(row))
    }

    /// `DELETE /api/models/{id}`: a local model loses its record only; a downloaded one also
    /// loses the files no other record uses. A loaded, loading or downloading model is busy.
    pub async fn delete_model(&self, id: ModelId) -> AppResult<DeleteResponse> {
        let row = self.store.get_model(id.0).await?;
        let deletable = [ModelStatus::Ready, ModelStatus::Error];
        if !self.store.delete_if(id.0, &deletable).await? {
            // Re-read: the row may be gone (a racing delete) or busy.
            let now = self.store.get_model(id.0).await?;
            return Err(busy_error(&now));
        }
        let freed_bytes = match row.source {
            Source::Local => 0,
            Source::Huggingface => self.remove_downloaded_files(&row).await,
        };
        tracing::info!(model_id = id.0, freed_bytes, "deleted model");
        Ok(DeleteResponse {
            id: id.0,
            deleted: true,
            freed_bytes,
        })
    }
}

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

fn validate_name(name: Option<&str>) -> AppResult<Option<String>> {
    let Some(name) = name else { return Ok(None) };
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::validation_field(
            "custom_name",
            format!("Field 'custom_name' must be at most {MAX_NAME_CHARS} characters."),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(AppError::validation_field(
            "custom_name",
            "Field 'custom_name' must not contain control characters.",
        ));
    }
    Ok(Some(trimmed.to_string()))
}

/// `local_path` must be absolute and free of `..`: what the user names is what is used.
fn validate_local_path(raw: &str) -> AppResult<PathBuf> {
    if raw.trim().is_empty() {
        return Err(AppError::validation_field(
            "local_path",
            "Field 'local_path' must not be empty.",
        ));
    }
    if raw.contains('\0') {
        return Err(AppError::validation_field(
            "local_path",
            "Field 'local_path' must not contain NUL bytes.",
        ));
    }
    let path = Path::new(raw);
    if !path.is_absolute() {
        return Err(AppError::validation_field(
            "local_path",
            format!("Field 'local_path' must be an absolute path (starting with /), got '{raw}'."),
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(AppError::validation_field(
            "local_path",
            "Field 'local_path' must not contain '..'; give the folder's real path.",
        ));
    }
    Ok(path.to_path_buf())
}
