//! Hub downloads: start, cancel, retry, resume at start-up, stop at shutdown, and the removal
//! of downloaded files.
//!
//! [`Downloads`] is the one owner of every running download: per model, its cancel token (a
//! child of the shutdown token), its task and its live figures. Everything that reports
//! progress (REST rows, the list, events) reads it from there. The job itself is the Hub's
//! ([`crate::hub::Hub::plan`] and [`crate::hub::Hub::run`]); this file keeps the statuses and
//! the events. A cancelled job does nothing on its way out: the cancel endpoint (or the next
//! start, after a shutdown) decides what happens to the record and the partial files.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::FutureExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::domain::{human_params, mib_ceil, ModelId, ModelStatus, Quantization, RepoId, Source};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::events::{self, Event, JobError};
use crate::hub::{select, Access, CacheUser, Completed, DownloadProgress, HubError, JobSpec};
use crate::store::{ModelRecord, NewModel};
use crate::sync::lock;

use super::{busy_error, ModelView, Services, STOP_WAIT};

/// The message a cancelled download's record carries.
pub const CANCELLED_MESSAGE: &str = "Download cancelled by user";

/// A Hub download as asked for, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct DownloadOrder {
    pub repo_id: Option<String>,
    pub revision: Option<String>,
    pub hf_token: Option<String>,
    pub trust_remote_code: bool,
}

struct Job {
    generation: u64,
    cancel: CancellationToken,
    handle: Option<JoinHandle<()>>,
    progress: watch::Receiver<DownloadProgress>,
    /// True while the job waits for one of the [`Downloads::slots`].
    queued: Arc<AtomicBool>,
    /// The download's size as recorded, until the job reports its own figures.
    expected_bytes: u64,
}

/// The running downloads by model id.
pub(super) struct Downloads {
    jobs: Mutex<HashMap<i64, Job>>,
    generation: AtomicU64,
    /// `MAX_CONCURRENT_DOWNLOADS` permits: a job transfers only while it holds one, so extra
    /// downloads wait (still `downloading`, `queued`) instead of failing or sharing the link.
    slots: Arc<Semaphore>,
}

impl Downloads {
    /// A table that lets `max` downloads transfer at once.
    pub(super) fn new(max: usize) -> Self {
        Downloads {
            jobs: Mutex::default(),
            generation: AtomicU64::default(),
            slots: Arc::new(Semaphore::new(max.max(1))),
        }
    }

    /// True while the download of `id` waits for a slot.
    pub(super) fn is_queued(&self, id: i64) -> bool {
        lock(&self.jobs)
            .get(&id)
            .is_some_and(|j| j.queued.load(Ordering::Relaxed))
    }

    /// What the running downloads still have to write: space already promised, which a new
    /// download's free-space check must not count as free.
    fn promised_bytes(&self) -> u64 {
        lock(&self.jobs)
            .values()
            .map(|j| {
                let p = *j.progress.borrow();
                if p.total_bytes == 0 {
                    j.expected_bytes
                } else {
                    p.total_bytes.saturating_sub(p.downloaded_bytes)
                }
            })
            .sum()
    }

    /// The live figures of a running download.
    pub(super) fn progress(&self, id: i64) -> Option<DownloadProgress> {
        lock(&self.jobs).get(&id).map(|j| *j.progress.borrow())
    }

    fn is_running(&self, id: i64) -> bool {
        lock(&self.jobs).contains_key(&id)
    }

    /// Downloads transferring now (not those waiting for a slot).
    fn count(&self) -> usize {
        lock(&self.jobs)
            .values()
            .filter(|j| !j.queued.load(Ordering::Relaxed))
            .count()
    }

    fn ids(&self) -> Vec<i64> {
        lock(&self.jobs).keys().copied().collect()
    }

    /// Cancels a job and waits (bounded) until it has really stopped.
    async fn stop(&self, id: i64) {
        let job = lock(&self.jobs).remove(&id);
        if let Some(job) = job {
            job.cancel.cancel();
            if let Some(handle) = job.handle {
                if tokio::time::timeout(STOP_WAIT, handle).await.is_err() {
                    tracing::warn!(model_id = id, "a download job did not stop in time");
                }
            }
        }
    }
}

tokio::task_local! {
    /// Whether the caller of the request being served may use the server's `HF_TOKEN`.
    static SERVER_TOKEN_ALLOWED: bool;
}

/// Runs `work` (a request) for a caller who may, or may not, use the server's `HF_TOKEN`.
///
/// The API's guard decides it (an authenticated or local caller may) and wraps each request in
/// this, so every service call made while serving the request sees it without each handler
/// passing it on. Work started outside a request (a resume at start-up) is the operator's own
/// and uses the token.
pub async fn as_caller<F: std::future::Future>(may_use_server_token: bool, work: F) -> F::Output {
    SERVER_TOKEN_ALLOWED.scope(may_use_server_token, work).await
}

/// A token from the request, else `HF_TOKEN` (for a caller allowed it); an empty string counts
/// as none.
fn pick_token(given: Option<&str>, fallback: &Option<Secret>, allowed: bool) -> Option<Secret> {
    match given.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => Some(Secret::new(t)),
        None if allowed => fallback.clone(),
        None => None,
    }
}

pub(super) fn parse_repo(raw: Option<&str>) -> AppResult<RepoId> {
    let raw = raw
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            AppError::validation_field(
                "repo_id",
                "Field 'repo_id' is required when source is 'huggingface'.",
            )
        })?;
    RepoId::parse(raw)
        .map_err(|e| AppError::validation_field("repo_id", format!("Field 'repo_id': {e}.")))
}

pub(super) fn parse_revision(raw: Option<&str>) -> AppResult<String> {
    let rev = raw
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or("main");
    if rev.chars().count() > 256 || select::check_name(rev).is_err() {
        return Err(AppError::validation_field(
            "revision",
            format!("Field 'revision' must be a branch, tag or commit, got '{rev}'."),
        ));
    }
    Ok(rev.to_string())
}

impl Services {
    /// A token given with a request, else the server's `HF_TOKEN` when the caller may use it
    /// (see [`as_caller`]).
    pub(super) fn token_for(&self, given: Option<&str>) -> Option<Secret> {
        let allowed = SERVER_TOKEN_ALLOWED.try_with(|a| *a).unwrap_or(true);
        pick_token(given, &self.inner.settings.hf_token, allowed)
    }

    /// `POST /api/models` for the Hub: checks the repo now (no record on failure), inserts it
    /// `downloading`, and starts the job.
    pub async fn start_download(
        &self,
        order: DownloadOrder,
        quantization: Quantization,
        custom_name: Option<String>,
    ) -> AppResult<ModelView> {
        let custom_name = super::models::validate_name(custom_name.as_deref())?;
        let repo = parse_repo(order.repo_id.as_deref())?;
        let revision = parse_revision(order.revision.as_deref())?;
        let token = self.token_for(order.hf_token.as_deref());
        let hub = &self.inner.hub;
        let model = hub
            .inspect(&repo, &revision, token.as_ref(), Access::Required)
            .await?;
        if model.requires_remote_code {
            // Refused whatever trust_remote_code says: no code from the Hub ever runs here.
            return Err(select::remote_code(&repo.to_string()).into());
        }
        // Space the running downloads will still write, and the reserve, are not free.
        let reserved =
            self.inner.downloads.promised_bytes() + self.inner.settings.disk_reserve_mb * (1 << 20);
        hub.check_space_for(&repo, &model, reserved).await?;
        let tensors = model.tensors.clone().unwrap_or_default();
        let est = self.memory_estimate(&tensors, quantization, model.config.as_ref());
        let new = NewModel {
            name: custom_name.unwrap_or_else(|| repo.name().to_string()),
            source: Source::Huggingface,
            repo_id: Some(repo.to_string()),
            revision: Some(model.commit.clone()),
            requested_revision: Some(revision),
            local_path: None,
            params: model.parameter_count.map(human_params),
            architecture: model.architecture(),
            quantization,
            disk_size_mb: Some(mib_ceil(model.disk_bytes()) as i64),
            estimated_memory_mb: Some(est.total_mb() as i64),
            status: ModelStatus::Downloading,
            cache_path: None,
            config_json: model.config.as_ref().map(|c| c.to_string()),
            files: model.files.clone(),
            parameter_count: model.parameter_count.map(|c| c as i64),
            trust_remote_code: order.trust_remote_code,
        };
        let row = self.inner.store.insert_model(new).await?;
        tracing::info!(model_id = row.id, repo = %repo, commit = %model.commit, "download started");
        self.spawn_job(row.clone(), token);
        Ok(self.view(row))
    }

    /// `POST /api/models/{id}/cancel`: stops the job, waits for it, removes what it wrote.
    pub async fn cancel_download(&self, id: ModelId) -> AppResult<ModelView> {
        let store = &self.inner.store;
        let row = store.get_model(id.0).await?;
        if row.status != ModelStatus::Downloading {
            return Ok(self.view(row));
        }
        self.inner.downloads.stop(id.0).await;
        let moved = store
            .transition(
                id.0,
                &[ModelStatus::Downloading],
                ModelStatus::Error,
                Some(CANCELLED_MESSAGE),
            )
            .await?;
        if !moved {
            // It finished (or failed) before the cancel landed.
            return self.get_model(id).await;
        }
        let freed = self.remove_downloaded_files(&row).await;
        tracing::info!(model_id = id.0, freed, "download cancelled");
        let err = AppError::new(ErrorCode::DownloadCancelled, CANCELLED_MESSAGE)
            .with_detail("model_id", id.0);
        self.inner
            .events
            .emit(Event::DownloadError(events::DownloadError {
                model_id: id.0,
                error: JobError::detailed(&err),
            }))
            .await;
        self.get_model(id).await
    }

    /// `POST /api/models/{id}/retry`: resumes a failed, cancelled or interrupted download.
    pub async fn retry_download(
        &self,
        id: ModelId,
        hf_token: Option<String>,
    ) -> AppResult<ModelView> {
        let store = &self.inner.store;
        let row = store.get_model(id.0).await?;
        if row.source != Source::Huggingface {
            return Err(AppError::invalid_state(
                id.0,
                row.status.as_str(),
                format!(
                    "Model {} is a local folder; there is no download to retry.",
                    id.0
                ),
            ));
        }
        match row.status {
            ModelStatus::Error => {
                if !store
                    .transition(id.0, &[ModelStatus::Error], ModelStatus::Downloading, None)
                    .await?
                {
                    let now = store.get_model(id.0).await?;
                    return Err(busy_error(&now));
                }
            }
            ModelStatus::Downloading if self.inner.downloads.is_running(id.0) => {
                return Ok(self.view(row))
            }
            ModelStatus::Downloading => {}
            other => {
                return Err(AppError::invalid_state(
                    id.0,
                    other.as_str(),
                    format!("Model {} is {other}; only a failed, cancelled or interrupted download can be retried.", id.0),
                ))
            }
        }
        let token = self.token_for(hf_token.as_deref());
        let row = store.get_model(id.0).await?;
        tracing::info!(model_id = id.0, "download retried");
        self.spawn_job(row.clone(), token);
        Ok(self.view(row))
    }

    /// Resumes downloads a previous process left `downloading`, with `HF_TOKEN` if set.
    pub(super) async fn resume_downloads(&self) -> anyhow::Result<()> {
        let rows = self
            .inner
            .store
            .models_in(&[ModelStatus::Downloading])
            .await?;
        for row in rows {
            tracing::info!(model_id = row.id, repo = ?row.repo_id, "resuming download left by a previous run");
            self.spawn_job(row, self.inner.settings.hf_token.clone());
        }
        Ok(())
    }

    /// How many downloads are running now.
    pub fn running_downloads(&self) -> usize {
        self.inner.downloads.count()
    }

    /// Stops every running download at shutdown, keeping their partial files for a resume.
    pub(super) async fn stop_downloads(&self) {
        for id in self.inner.downloads.ids() {
            self.inner.downloads.stop(id).await;
        }
    }

    fn spawn_job(&self, row: ModelRecord, token: Option<Secret>) {
        let downloads = &self.inner.downloads;
        let cancel = self.inner.shutdown.child_token();
        let generation = downloads.generation.fetch_add(1, Ordering::Relaxed);
        let id = row.id;
        let expected_bytes = row.disk_size_mb.unwrap_or(0).max(0) as u64 * (1 << 20);
        let (progress_tx, progress) = watch::channel(DownloadProgress::default());
        // Inserted under the lock that the job's own removal takes, so the handle is always
        // stored before the job can finish and remove its entry.
        let mut jobs = lock(&downloads.jobs);
        if let Some(old) = jobs.remove(&id) {
            old.cancel.cancel();
        }
        let services = self.clone();
        let job_cancel = cancel.clone();
        let queued = Arc::new(AtomicBool::new(true));
        let job_queued = queued.clone();
        let slots = downloads.slots.clone();
        let handle = tokio::spawn(async move {
            // Wait for a slot; a cancel (or shutdown) while waiting ends the job as a cancel.
            let permit = tokio::select! {
                permit = slots.acquire_owned() => permit.ok(),
                _ = job_cancel.cancelled() => None,
            };
            if let Some(_permit) = permit {
                job_queued.store(false, Ordering::Relaxed);
                services.run_job(row, token, job_cancel, progress_tx).await;
            }
            let mut jobs = lock(&services.inner.downloads.jobs);
            if jobs.get(&id).is_some_and(|j| j.generation == generation) {
                jobs.remove(&id);
            }
        });
        jobs.insert(
            id,
            Job {
                generation,
                cancel,
                handle: Some(handle),
                progress,
                queued,
                expected_bytes,
            },
        );
    }

    async fn run_job(
        &self,
        row: ModelRecord,
        token: Option<Secret>,
        cancel: CancellationToken,
        progress: watch::Sender<DownloadProgress>,
    ) {
        let id = row.id;
        let started = Instant::now();
        let forward = tokio::spawn(self.clone().forward_progress(id, progress.subscribe()));
        let result = guarded(self.download(&row, token, &cancel, &progress)).await;
        drop(progress);
        let _ = forward.await;
        crate::metrics::download_finished(
            started.elapsed(),
            match &result {
                Ok(_) => crate::metrics::DownloadOutcome::Completed,
                Err(HubError::Cancelled) => crate::metrics::DownloadOutcome::Cancelled,
                Err(_) => crate::metrics::DownloadOutcome::Failed,
            },
        );
        match result {
            Ok(done) => self.finish_download(&row, done).await,
            // Cancel or shutdown: whoever cancelled decides about the record and the files.
            Err(HubError::Cancelled) => {}
            Err(e) => {
                let err = AppError::from(e).with_detail("model_id", id);
                tracing::warn!(
                    model_id = id,
                    code = err.code.as_str(),
                    "download failed: {}",
                    err.message
                );
                let moved = self
                    .settle(
                        id,
                        &[ModelStatus::Downloading],
                        ModelStatus::Error,
                        Some(&err.message),
                    )
                    .await;
                if moved {
                    self.inner
                        .events
                        .emit(Event::DownloadError(events::DownloadError {
                            model_id: id,
                            error: JobError::detailed(&err),
                        }))
                        .await;
                }
            }
        }
    }

    /// Plans and runs the Hub job of `row`.
    async fn download(
        &self,
        row: &ModelRecord,
        token: Option<Secret>,
        cancel: &CancellationToken,
        progress: &watch::Sender<DownloadProgress>,
    ) -> Result<Completed, HubError> {
        let repo =
            RepoId::parse(row.repo_id.as_deref().unwrap_or_default()).map_err(HubError::Failed)?;
        let commit = row
            .revision
            .clone()
            .ok_or_else(|| HubError::Failed("the record has no commit".into()))?;
        let spec = JobSpec {
            key: row.id,
            repo,
            commit,
            requested_revision: row.requested_revision.clone(),
            files: row.files.clone(),
        };
        let hub = &self.inner.hub;
        let plan = hub.plan(spec, token.as_ref(), cancel).await?;
        hub.run(&plan, token, cancel, progress).await
    }

    /// Sends `model:download:progress` for every figure the job publishes (the Hub paces
    /// them at [`events::PROGRESS_PERIOD`]) until the job drops its sender.
    async fn forward_progress(self, id: i64, mut progress: watch::Receiver<DownloadProgress>) {
        while progress.changed().await.is_ok() {
            let p = *progress.borrow_and_update();
            self.inner
                .events
                .emit(Event::DownloadProgress(events::DownloadProgress {
                    model_id: id,
                    progress: p.percent(),
                    downloaded_bytes: p.downloaded_bytes,
                    total_bytes: p.total_bytes,
                    speed_bps: p.speed_bps,
                }))
                .await;
        }
    }

    async fn finish_download(&self, row: &ModelRecord, done: Completed) {
        let id = row.id;
        let cache_path = done.snapshot.to_string_lossy().to_string();
        let commit = row.revision.clone().unwrap_or_default();
        let recorded = self
            .inner
            .store
            .record_download(
                id,
                &commit,
                &cache_path,
                &row.files,
                mib_ceil(done.total_bytes) as i64,
            )
            .await;
        let moved = match recorded {
            Ok(_) => {
                self.settle(id, &[ModelStatus::Downloading], ModelStatus::Ready, None)
                    .await
            }
            Err(e) => {
                tracing::error!(model_id = id, "cannot record the download: {e}");
                false
            }
        };
        if moved {
            tracing::info!(model_id = id, path = %cache_path, "download complete");
            self.inner
                .events
                .emit(Event::DownloadComplete(events::DownloadComplete {
                    model_id: id,
                    local_path: cache_path,
                }))
                .await;
        }
    }

    /// Removes what `row` downloaded (also unfinished files) that no other record, and no
    /// snapshot link in its repo folder, still uses. Returns the bytes freed.
    pub(super) async fn remove_downloaded_files(&self, row: &ModelRecord) -> u64 {
        let Some(repo) = row.repo_id.as_deref().and_then(|r| RepoId::parse(r).ok()) else {
            return 0;
        };
        let others = match self.inner.store.repo_users(&repo.to_string(), row.id).await {
            Ok(o) => o,
            Err(e) => {
                // Without knowing who else uses the blobs, removing none is the safe choice.
                tracing::error!(
                    model_id = row.id,
                    "cannot list the repo's other records: {e}"
                );
                return 0;
            }
        };
        self.inner
            .hub
            .remove_unshared(
                &repo,
                cache_user(row),
                others.iter().map(cache_user).collect(),
            )
            .await
    }
}

fn cache_user(row: &ModelRecord) -> CacheUser {
    CacheUser {
        key: row.id,
        commit: row.revision.clone(),
        requested_revision: row.requested_revision.clone(),
        files: row.files.clone(),
    }
}

/// Runs a download job; a panic inside it becomes a failure (the model goes to `error`, from
/// which a retry resumes) instead of a model left `downloading` with no job.
async fn guarded<T>(
    job: impl std::future::Future<Output = Result<T, HubError>>,
) -> Result<T, HubError> {
    match AssertUnwindSafe(job).catch_unwind().await {
        Ok(result) => result,
        Err(_) => {
            tracing::error!("a download job panicked");
            Err(HubError::Failed(
                "the download stopped on an internal error; retry it".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_job_ends_in_a_retryable_failure() {
        let result: Result<(), HubError> = guarded(async { panic!("boom") }).await;
        match result {
            Err(HubError::Failed(message)) => assert!(message.contains("retry"), "{message}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_job_that_ends_normally_passes_its_result_through() {
        let ok: Result<u8, HubError> = guarded(async { Ok(7) }).await;
        assert_eq!(ok.unwrap(), 7);
        let cancelled: Result<u8, HubError> = guarded(async { Err(HubError::Cancelled) }).await;
        assert!(matches!(cancelled, Err(HubError::Cancelled)));
    }

    #[test]
    fn an_empty_token_falls_back_to_the_servers() {
        let server = Some(Secret::new("hf_server"));
        assert!(pick_token(Some("  "), &server, true).is_some());
        assert!(pick_token(None, &None, true).is_none());
        assert!(pick_token(Some("hf_x"), &None, true).is_some());
    }

    #[test]
    fn a_caller_not_allowed_the_servers_token_gets_only_its_own() {
        let server = Some(Secret::new("hf_server"));
        assert!(pick_token(None, &server, false).is_none());
        assert!(pick_token(Some(" "), &server, false).is_none());
        assert_eq!(
            pick_token(Some("hf_mine"), &server, false).map(|t| t.expose().to_string()),
            Some("hf_mine".to_string())
        );
    }

    #[tokio::test]
    async fn the_callers_right_holds_for_the_work_it_wraps_only() {
        let inside = as_caller(false, async { SERVER_TOKEN_ALLOWED.try_with(|a| *a) }).await;
        assert_eq!(inside.ok(), Some(false));
        assert!(SERVER_TOKEN_ALLOWED.try_with(|a| *a).is_err());
    }
}
