//! Registering, listing, showing and deleting models.

use std::path::{Component, Path, PathBuf};

use crate::domain::{human_params, mib_ceil, ModelId, ModelStatus, Quantization, Source};
use crate::engine::inspect_folder;
use crate::error::{AppError, AppResult};
use crate::store::{ListFilter, NewModel};

use super::{busy_error, ModelView, Services};

/// Longest `custom_name` accepted.
pub const MAX_NAME_CHARS: usize = 100;

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub id: i64,
    /// Bytes of downloaded files removed from the cache (0 for a local model).
    pub freed_bytes: u64,
}

impl Services {
    /// One page of the list, with live figures.
    pub async fn list_page(&self, filter: &ListFilter) -> AppResult<Vec<ModelView>> {
        let rows = self.inner.store.list_page(filter).await?;
        Ok(rows.into_iter().map(|r| self.view(r)).collect())
    }

    /// How many models the filter matches before paging.
    pub async fn count_models(&self, filter: &ListFilter) -> AppResult<u64> {
        Ok(self.inner.store.count(filter).await?)
    }

    /// Every record, newest first, as stored (without live figures), for a caller that caches
    /// what does not change until [`Services::registry_generation`] does.
    pub async fn list_records(&self) -> AppResult<Vec<crate::store::ModelRecord>> {
        Ok(self.inner.store.list_summaries().await?)
    }

    pub async fn get_model(&self, id: ModelId) -> AppResult<ModelView> {
        let row = self.inner.store.get_model(id.0).await?;
        Ok(self.view(row))
    }

    /// `POST /api/models` for a local folder: registered `ready` at once.
    pub async fn register_local(
        &self,
        local_path: Option<&str>,
        quantization: Quantization,
        custom_name: Option<&str>,
    ) -> AppResult<ModelView> {
        let custom_name = validate_name(custom_name)?;
        let path = local_path.ok_or_else(|| {
            AppError::validation_field(
                "local_path",
                "Field 'local_path' is required when source is 'local'.",
            )
        })?;
        self.register_folder(path, quantization, custom_name).await
    }

    async fn register_folder(
        &self,
        raw_path: &str,
        quantization: Quantization,
        custom_name: Option<String>,
    ) -> AppResult<ModelView> {
        let folder = validate_local_path(raw_path)?;
        let shown = raw_path.to_string();
        let roots = self.inner.settings.local_model_root_list();
        let info = tokio::task::spawn_blocking(move || {
            // Outside the roots is refused before the path is touched, so the answer says
            // nothing about what exists there.
            if !roots.is_empty() && !under_any(&folder, &roots) {
                return Err(outside_roots(&shown));
            }
            // Symlinks resolved, so one folder has one registry row however it is named.
            let canonical = std::fs::canonicalize(&folder).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    AppError::invalid_local_path(&shown, "the folder does not exist")
                }
                _ => AppError::invalid_local_path(&shown, format!("it cannot be resolved ({e})")),
            })?;
            // A link inside a root may point outside it: the resolved folder counts.
            if !roots.is_empty() && !under_any(&canonical, &canonical_roots(&roots)) {
                return Err(outside_roots(&shown));
            }
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
        let name = match custom_name {
            Some(name) => name,
            None => {
                let folder_name = canonical
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_else(|| canonical_str.clone());
                // The folder's name becomes the model's: it gets the custom_name checks.
                check_name(&folder_name).map_err(|why| {
                    AppError::invalid_local_path(
                        raw_path,
                        format!("the folder's name {why}; give the model a custom_name"),
                    )
                })?;
                folder_name
            }
        };
        let est = self.memory_estimate(&info.tensors, quantization, Some(&info.config));
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
        let row = self.inner.store.insert_model(new).await?;
        tracing::info!(model_id = row.id, path = ?row.local_path, "registered local model");
        Ok(self.view(row))
    }

    /// `DELETE /api/models/{id}`: a local model loses its record only; a downloaded one also
    /// loses the files no other record uses. A loaded, loading or downloading model is busy.
    pub async fn delete_model(&self, id: ModelId) -> AppResult<Deleted> {
        let store = &self.inner.store;
        let row = store.get_model(id.0).await?;
        let deletable = [ModelStatus::Ready, ModelStatus::Error];
        if !store.delete_if(id.0, &deletable).await? {
            // Re-read: the row may be gone (a racing delete) or busy.
            let now = store.get_model(id.0).await?;
            return Err(busy_error(&now));
        }
        let freed_bytes = match row.source {
            Source::Local => 0,
            Source::Huggingface => self.remove_downloaded_files(&row).await,
        };
        tracing::info!(model_id = id.0, freed_bytes, "deleted model");
        Ok(Deleted {
            id: id.0,
            freed_bytes,
        })
    }
}

pub(super) fn validate_name(name: Option<&str>) -> AppResult<Option<String>> {
    let Some(name) = name else { return Ok(None) };
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    check_name(trimmed).map_err(|why| {
        AppError::validation_field("custom_name", format!("Field 'custom_name' {why}."))
    })?;
    Ok(Some(trimmed.to_string()))
}

/// Characters that reorder how text is shown (bidirectional embeddings, overrides, isolates
/// and marks): a name with them can display as another name.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A model name shown to people: at most [`MAX_NAME_CHARS`], no control or bidi characters.
/// The error completes "… the name …".
fn check_name(name: &str) -> Result<(), String> {
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("must be at most {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if name.chars().any(is_bidi_control) {
        return Err("must not contain bidirectional-text control characters".into());
    }
    Ok(())
}

/// True when `path` is one of `roots` or inside one (compared component by component).
fn under_any(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|root| path.starts_with(root))
}

/// The roots with their links resolved (a root that does not exist holds nothing).
fn canonical_roots(roots: &[PathBuf]) -> Vec<PathBuf> {
    roots
        .iter()
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .collect()
}

/// The one refusal for a folder outside `LOCAL_MODEL_ROOTS`, whether or not it exists.
fn outside_roots(path: &str) -> AppError {
    AppError::invalid_local_path(
        path,
        "it is outside the folders this server registers models from (LOCAL_MODEL_ROOTS)",
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_bidi_or_control_characters_are_refused() {
        assert!(validate_name(Some("llama\u{202e}gpj.exe")).is_err());
        assert!(validate_name(Some("a\u{2066}b")).is_err());
        assert!(validate_name(Some("tab\there")).is_err());
        assert_eq!(
            validate_name(Some("  Llama 3 (8B) — ünïcode  "))
                .unwrap()
                .as_deref(),
            Some("Llama 3 (8B) — ünïcode")
        );
    }

    #[test]
    fn roots_are_compared_by_whole_components() {
        let roots = [PathBuf::from("/models")];
        assert!(under_any(Path::new("/models/llama"), &roots));
        assert!(under_any(Path::new("/models"), &roots));
        assert!(!under_any(Path::new("/models-evil/llama"), &roots));
        assert!(!under_any(Path::new("/etc"), &roots));
    }
}
