//! Queries on the `models` table.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{parse_col, Store, StoreError};
use crate::domain::{ModelStatus, Quantization, Source};

/// One file of a model, as the registry remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub path: String,
    pub size: u64,
}

/// Which rows a list shows: a status, a substring of the name or repo id (case-insensitive),
/// and a page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub status: Option<ModelStatus>,
    pub q: Option<String>,
    pub limit: Option<u64>,
    pub offset: u64,
}

impl ListFilter {
    /// The `WHERE` clause (empty when nothing filters) and the pattern it binds as `$1`.
    fn condition(&self) -> (String, Option<String>) {
        let mut parts = Vec::new();
        if let Some(status) = self.status {
            // A closed enum of lowercase words, so inlining it is safe.
            parts.push(format!("status = '{}'", status.as_str()));
        }
        let pattern = self.q.as_ref().map(|q| {
            let escaped = q
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        if pattern.is_some() {
            parts.push(
                "(LOWER(name) LIKE $1 ESCAPE '\\' OR LOWER(COALESCE(repo_id, '')) LIKE $1 ESCAPE '\\')"
                    .to_string(),
            );
        }
        if parts.is_empty() {
            (String::new(), None)
        } else {
            (format!(" WHERE {}", parts.join(" AND ")), pattern)
        }
    }
}

/// A registry row.
#[derive(Debug, Clone)]
pub struct ModelRecord {
    pub id: i64,
    pub name: String,
    pub source: Source,
    pub repo_id: Option<String>,
    /// The commit the download resolved.
    pub revision: Option<String>,
    /// The branch, tag or sha the user asked for.
    pub requested_revision: Option<String>,
    pub local_path: Option<String>,
    pub params: Option<String>,
    pub architecture: Option<String>,
    pub quantization: Quantization,
    pub disk_size_mb: Option<i64>,
    pub estimated_memory_mb: Option<i64>,
    pub status: ModelStatus,
    pub error_message: Option<String>,
    /// The folder the weights are read from: a snapshot folder, or the local folder.
    pub cache_path: Option<String>,
    pub config_json: Option<String>,
    pub files: Vec<StoredFile>,
    /// Exact parameter count from the safetensors headers.
    pub parameter_count: Option<i64>,
    pub trust_remote_code: bool,
    pub created_at: String,
    pub updated_at: String,
    pub loaded_at: Option<String>,
}

/// What a new registry row is made of.
#[derive(Debug, Clone)]
pub struct NewModel {
    pub name: String,
    pub source: Source,
    pub repo_id: Option<String>,
    pub revision: Option<String>,
    pub requested_revision: Option<String>,
    pub local_path: Option<String>,
    pub params: Option<String>,
    pub architecture: Option<String>,
    pub quantization: Quantization,
    pub disk_size_mb: Option<i64>,
    pub estimated_memory_mb: Option<i64>,
    pub status: ModelStatus,
    pub cache_path: Option<String>,
    pub config_json: Option<String>,
    pub files: Vec<StoredFile>,
    pub parameter_count: Option<i64>,
    pub trust_remote_code: bool,
}

const COLUMNS: &str = "id, name, source, repo_id, revision, requested_revision, local_path, params, \
    architecture, quantization, disk_size_mb, estimated_memory_mb, status, error_message, cache_path, \
    config_json, files_json, parameter_count, trust_remote_code, created_at, updated_at, loaded_at";

/// The list columns: everything but the heavy config and file list.
const SUMMARY_COLUMNS: &str = "id, name, source, repo_id, revision, requested_revision, local_path, params, \
    architecture, quantization, disk_size_mb, estimated_memory_mb, status, error_message, cache_path, \
    NULL AS config_json, NULL AS files_json, parameter_count, trust_remote_code, created_at, updated_at, loaded_at";

/// The current time as the registry stores it: RFC 3339, UTC, milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn from_row(row: AnyRow) -> Result<ModelRecord, StoreError> {
    let files_json: Option<String> = row.try_get("files_json")?;
    let files = match files_json {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| StoreError::Corrupt(format!("files_json: {e}")))?,
        None => Vec::new(),
    };
    Ok(ModelRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        source: parse_col(row.try_get("source")?, "source")?,
        repo_id: row.try_get("repo_id")?,
        revision: row.try_get("revision")?,
        requested_revision: row.try_get("requested_revision")?,
        local_path: row.try_get("local_path")?,
        params: row.try_get("params")?,
        architecture: row.try_get("architecture")?,
        quantization: parse_col(row.try_get("quantization")?, "quantization")?,
        disk_size_mb: row.try_get("disk_size_mb")?,
        estimated_memory_mb: row.try_get("estimated_memory_mb")?,
        status: parse_col(row.try_get("status")?, "status")?,
        error_message: row.try_get("error_message")?,
        cache_path: row.try_get("cache_path")?,
        config_json: row.try_get("config_json")?,
        files,
        parameter_count: row.try_get("parameter_count")?,
        trust_remote_code: row.try_get::<i64, _>("trust_remote_code")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        loaded_at: row.try_get("loaded_at")?,
    })
}

fn status_list(statuses: &[ModelStatus]) -> String {
    // Statuses are a closed enum of lowercase words, so inlining them is safe.
    statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Inserts a model; a duplicate (repo_id, quantization) or (local_path, quantization) is a
    /// `Conflict` naming the existing row, also when two inserts race.
    pub async fn insert_model(&self, new: NewModel) -> Result<ModelRecord, StoreError> {
        if let Some(existing) = self.find_duplicate(&new).await? {
            return Err(existing);
        }
        let ts = now();
        let files_json = serde_json::to_string(&new.files)
            .map_err(|e| StoreError::Corrupt(format!("files: {e}")))?;
        let sql = format!(
            "INSERT INTO models (name, source, repo_id, revision, requested_revision, local_path, params, \
             architecture, quantization, disk_size_mb, estimated_memory_mb, status, error_message, cache_path, \
             config_json, files_json, parameter_count, trust_remote_code, created_at, updated_at, loaded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, $13, $14, $15, $16, $17, $18, $18, NULL) \
             RETURNING {COLUMNS}"
        );
        let result = sqlx::query(&sql)
            .bind(&new.name)
            .bind(new.source.as_str())
            .bind(&new.repo_id)
            .bind(&new.revision)
            .bind(&new.requested_revision)
            .bind(&new.local_path)
            .bind(&new.params)
            .bind(&new.architecture)
            .bind(new.quantization.as_str())
            .bind(new.disk_size_mb)
            .bind(new.estimated_memory_mb)
            .bind(new.status.as_str())
            .bind(&new.cache_path)
            .bind(&new.config_json)
            .bind(files_json)
            .bind(new.parameter_count)
            .bind(new.trust_remote_code as i64)
            .bind(&ts)
            .fetch_one(&self.pool)
            .await;
        match result {
            Ok(row) => {
                self.changed();
                from_row(row)
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                // Lost a race with an identical insert: report the winner.
                match self.find_duplicate(&new).await? {
                    Some(conflict) => Err(conflict),
                    None => Err(StoreError::Db(sqlx::Error::Database(e))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn find_duplicate(&self, new: &NewModel) -> Result<Option<StoreError>, StoreError> {
        if let Some(path) = &new.local_path {
            let sql = "SELECT id FROM models WHERE local_path = $1 AND quantization = $2";
            if let Some(row) = sqlx::query(sql)
                .bind(path)
                .bind(new.quantization.as_str())
                .fetch_optional(&self.pool)
                .await?
            {
                return Ok(Some(StoreError::Conflict {
                    existing_model_id: row.try_get("id")?,
                    what: "local_path and quantization",
                }));
            }
        }
        if let Some(repo) = &new.repo_id {
            let sql = "SELECT id FROM models WHERE repo_id = $1 AND quantization = $2";
            if let Some(row) = sqlx::query(sql)
                .bind(repo)
                .bind(new.quantization.as_str())
                .fetch_optional(&self.pool)
                .await?
            {
                return Ok(Some(StoreError::Conflict {
                    existing_model_id: row.try_get("id")?,
                    what: "repo_id and quantization",
                }));
            }
        }
        Ok(None)
    }

    /// One model, or `NotFound`.
    pub async fn get_model(&self, id: i64) -> Result<ModelRecord, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM models WHERE id = $1");
        match sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        {
            Some(row) => from_row(row),
            None => Err(StoreError::NotFound(id)),
        }
    }

    /// Every model, newest first.
    pub async fn list_models(&self) -> Result<Vec<ModelRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM models ORDER BY id DESC");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.into_iter().map(from_row).collect()
    }

    /// Every model, newest first, without the heavy columns (`config_json`, `files_json`), for
    /// the list endpoint.
    pub async fn list_summaries(&self) -> Result<Vec<ModelRecord>, StoreError> {
        let sql = format!("SELECT {SUMMARY_COLUMNS} FROM models ORDER BY id DESC");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.into_iter().map(from_row).collect()
    }

    /// One page of the list, newest first, as [`Store::list_summaries`] reads rows.
    pub async fn list_page(&self, filter: &ListFilter) -> Result<Vec<ModelRecord>, StoreError> {
        let (condition, pattern) = filter.condition();
        let limit = filter
            .limit
            .map_or(i64::MAX, |l| l.min(i64::MAX as u64) as i64);
        let offset = filter.offset.min(i64::MAX as u64) as i64;
        let (limit_at, offset_at) = if pattern.is_some() { (2, 3) } else { (1, 2) };
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM models{condition} ORDER BY id DESC LIMIT ${limit_at} OFFSET ${offset_at}"
        );
        let mut query = sqlx::query(&sql);
        if let Some(p) = pattern {
            query = query.bind(p);
        }
        let rows = query.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        rows.into_iter().map(from_row).collect()
    }

    /// How many rows the filter's status and text match (its page ignored).
    pub async fn count(&self, filter: &ListFilter) -> Result<u64, StoreError> {
        let (condition, pattern) = filter.condition();
        let sql = format!("SELECT COUNT(*) AS n FROM models{condition}");
        let mut query = sqlx::query(&sql);
        if let Some(p) = pattern {
            query = query.bind(p);
        }
        let total: i64 = query.fetch_one(&self.pool).await?.try_get("n")?;
        Ok(total.max(0) as u64)
    }

    /// Models in one of the given statuses, oldest first.
    pub async fn models_in(
        &self,
        statuses: &[ModelStatus],
    ) -> Result<Vec<ModelRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM models WHERE status IN ({}) ORDER BY id",
            status_list(statuses)
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.into_iter().map(from_row).collect()
    }

    /// Moves a model to `to` only if its status is one of `from`, in one statement, so two
    /// racing callers can never both win. Sets or clears `error_message` with the move, and
    /// stamps `loaded_at` on entering `loaded` (clears it otherwise). Returns whether it moved.
    pub async fn transition(
        &self,
        id: i64,
        from: &[ModelStatus],
        to: ModelStatus,
        error_message: Option<&str>,
    ) -> Result<bool, StoreError> {
        let ts = now();
        let loaded_at = (to == ModelStatus::Loaded).then(|| ts.clone());
        let sql = format!(
            "UPDATE models SET status = $1, error_message = $2, updated_at = $3, loaded_at = $4 \
             WHERE id = $5 AND status IN ({})",
            status_list(from)
        );
        let done = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(error_message)
            .bind(&ts)
            .bind(loaded_at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.changed();
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a model only if its status is one of `allowed`. Returns whether it was deleted.
    pub async fn delete_if(&self, id: i64, allowed: &[ModelStatus]) -> Result<bool, StoreError> {
        let sql = format!(
            "DELETE FROM models WHERE id = $1 AND status IN ({})",
            status_list(allowed)
        );
        let done = sqlx::query(&sql).bind(id).execute(&self.pool).await?;
        self.changed();
        Ok(done.rows_affected() == 1)
    }

    /// Records what a finished download learnt: the commit, the snapshot folder, the files
    /// and the sizes. Only while the model is still downloading.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_download(
        &self,
        id: i64,
        revision: &str,
        cache_path: &str,
        files: &[StoredFile],
        disk_size_mb: i64,
    ) -> Result<bool, StoreError> {
        let files_json =
            serde_json::to_string(files).map_err(|e| StoreError::Corrupt(format!("files: {e}")))?;
        let done = sqlx::query(
            "UPDATE models SET revision = $1, cache_path = $2, files_json = $3, disk_size_mb = $4, updated_at = $5 \
             WHERE id = $6",
        )
        .bind(revision)
        .bind(cache_path)
        .bind(files_json)
        .bind(disk_size_mb)
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.changed();
        Ok(done.rows_affected() == 1)
    }

    /// How many records reference a blob-sharing repo other than `except_id`.
    pub async fn repo_users(
        &self,
        repo_id: &str,
        except_id: i64,
    ) -> Result<Vec<ModelRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM models WHERE repo_id = $1 AND id <> $2");
        let rows = sqlx::query(&sql)
            .bind(repo_id)
            .bind(except_id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(from_row).collect()
    }

    /// Models left `loading` or `loaded` by a previous process become `ready`: nothing held
    /// in memory survives a restart. Returns how many were reset.
    pub async fn reset_memory_states(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE models SET status = 'ready', loaded_at = NULL, updated_at = $1 \
             WHERE status IN ('loading', 'loaded')",
        )
        .bind(now())
        .execute(&self.pool)
        .await?;
        self.changed();
        Ok(done.rows_affected())
    }
}
