//! Hub downloads: preview, start, cancel, retry, resume at start-up, stop at shutdown, and the
//! removal of downloaded files.
//!
//! Each download is a job with a `CancellationToken` (a child of the shutdown token) and a
//! `JoinHandle`. The job owns the transfer and moves the model to `ready` or `error`; a
//! cancelled job does nothing on its way out: the cancel endpoint (or the next start, after a
//! shutdown) decides what happens to the record and the partial files.
//!
//! Which blobs a model uses is written to `{data_dir}/downloads/{id}.json` once the job has
//! resolved its files, so cancel and delete can clean up even files that never finished.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::schema::{
    EstimatedSizes, ModelDownloadRequest, ModelPreviewResponse, ModelResponse, PreviewFile,
    PreviewRequest, SizeEstimate,
};
use crate::config::{Secret, Settings};
use crate::domain::{human_params, mib_ceil, ModelId, ModelStatus, Quantization, RepoId, Source};
use crate::engine::{estimate, TensorMeta};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::events::Event;
use crate::hub::cache::{check_identity, prune_empty, remove_if_present};
use crate::hub::client::ErrorContext;
use crate::hub::download::{BlobLocks, Downloader};
use crate::hub::remote::{self, Access};
use crate::hub::{select, DownloadOptions, FilePlan, HubClient, HubError, RepoCache};
use crate::store::{ModelRecord, NewModel};

use super::{DownloadProgress, Services};

/// The message a cancelled download's record carries.
pub const CANCELLED_MESSAGE: &str = "Download cancelled by user";
/// How long cancel and shutdown wait for a job to stop.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// HEAD requests in flight while a job resolves its files.
const HEAD_CONCURRENCY: usize = 8;

struct Job {
    generation: u64,
    cancel: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

/// Download jobs and the Hub client; cheap to clone.
#[derive(Clone)]
pub struct DownloadState {
    client: HubClient,
    options: DownloadOptions,
    locks: BlobLocks,
    /// Running jobs by model id.
    jobs: Arc<Mutex<HashMap<i64, Job>>>,
    generation: Arc<AtomicU64>,
}

impl DownloadState {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let client = HubClient::new(&settings.hf_endpoint)
            .map_err(|e| anyhow::anyhow!("HF_ENDPOINT: {e}"))?;
        Ok(DownloadState {
            client,
            options: DownloadOptions::default(),
            locks: BlobLocks::default(),
            jobs: Arc::new(Mutex::new(HashMap::new())),
            generation: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The Hub client (for tools and benchmarks that drive the downloader directly).
    pub fn client(&self) -> &HubClient {
        &self.client
    }

    fn is_running(&self, id: i64) -> bool {
        lock(&self.jobs).contains_key(&id)
    }
}

/// What a job resolved: every file with its identity; kept beside the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlanFile {
    repo_id: String,
    commit: String,
    files: Vec<FilePlan>,
}

/// A token from the request, else `HF_TOKEN`; an empty string counts as none.
fn pick_token(given: Option<&str>, settings: &Settings) -> Option<Secret> {
    match given.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => Some(Secret::new(t)),
        None => settings.hf_token.clone(),
    }
}

fn parse_repo(raw: Option<&str>) -> AppResult<RepoId> {
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

fn parse_revision(raw: Option<&str>) -> AppResult<String> {
    let rev = raw
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or("main");
    if rev.len() > 256 || select::check_name(rev).is_err() {
        return Err(AppError::validation_field(
            "revision",
            format!("Field 'revision' must be a branch, tag or commit, got '{rev}'."),
        ));
    }
    Ok(rev.to_string())
}

impl Services {
    fn plans_dir(&self) -> PathBuf {
        self.settings.data_dir.join("downloads")
    }

    fn plan_path(&self, id: i64) -> PathBuf {
        self.plans_dir().join(format!("{id}.json"))
    }

    fn read_plan(&self, id: i64) -> Option<PlanFile> {
        let text = std::fs::read(self.plan_path(id)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// `POST /api/models/preview`: what a repo is and what each quantization costs.
    pub async fn preview(&self, req: PreviewRequest) -> AppResult<ModelPreviewResponse> {
        let repo = parse_repo(Some(&req.repo_id))?;
        let revision = parse_revision(req.revision.as_deref())?;
        let token = pick_token(req.hf_token.as_deref(), &self.settings);
        let model = remote::inspect(
            self.downloads.client(),
            &repo,
            &revision,
            token.as_ref(),
            Access::Optional,
        )
        .await?;
        let disk_mb = mib_ceil(model.disk_bytes());
        let gpu = self.devices.uses_gpu();
        let tensors = model
            .tensors
            .clone()
            .unwrap_or_else(|| synthetic_tensors(&model));
        let size = |q: Quantization| SizeEstimate {
            disk_mb,
            memory_mb: estimate(&tensors, q, gpu).total_mb(),
        };
        let card = model.info.card_data.clone().unwrap_or_default();
        let config = model.config.clone().unwrap_or_default();
        let strings = |v: Option<&serde_json::Value>| -> Option<Vec<String>> {
            match v? {
                serde_json::Value::String(s) => Some(vec![s.clone()]),
                serde_json::Value::Array(a) => Some(
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect(),
                ),
                _ => None,
            }
        };
        Ok(ModelPreviewResponse {
            name: repo.name().to_string(),
            params: model.parameter_count.map(human_params),
            architecture: model.architecture(),
            is_gated: model.info.is_gated(),
            requires_trust_remote_code: model.requires_remote_code,
            estimated_sizes: EstimatedSizes {
                FP32: size(Quantization::FP32),
                FP16: size(Quantization::FP16),
                Q8: size(Quantization::Q8),
                Q4: size(Quantization::Q4),
                Q2: size(Quantization::Q2),
            },
            downloads: model.info.downloads,
            likes: model.info.likes,
            tags: model.info.tags.clone(),
            pipeline_tag: model.info.pipeline_tag.clone(),
            model_type: config
                .get("model_type")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            architectures: strings(config.get("architectures")).unwrap_or_default(),
            license: strings(card.get("license")).and_then(|l| l.into_iter().next()),
            language: strings(card.get("language")),
            files: model
                .files
                .iter()
                .map(|f| PreviewFile {
                    path: f.path.clone(),
                    size: f.size,
                })
                .collect(),
            has_access: model.has_access,
        })
    }

    /// `POST /api/models` for the Hub: checks the repo now (no record on failure), inserts it
    /// `downloading`, and starts the job.
    pub(crate) async fn start_download(
        &self,
        req: ModelDownloadRequest,
        quantization: Quantization,
        custom_name: Option<String>,
    ) -> AppResult<ModelResponse> {
        let repo = parse_repo(req.repo_id.as_deref())?;
        let revision = parse_revision(req.revision.as_deref())?;
        let token = pick_token(req.hf_token.as_deref(), &self.settings);
        let model = remote::inspect(
            self.downloads.client(),
            &repo,
            &revision,
            token.as_ref(),
            Access::Required,
        )
        .await?;
        if model.requires_remote_code {
            // Refused whatever trust_remote_code says: no code from the Hub ever runs here.
            return Err(select::remote_code(&repo.to_string()).into());
        }
        let tensors = model.tensors.clone().unwrap_or_default();
        let cache = RepoCache::new(&self.settings.cache_dir(), &repo);
        let required: u64 = model
            .files
            .iter()
            .filter(|f| !cache.snapshot_dir(&model.commit).join(&f.path).is_file())
            .map(|f| f.size)
            .sum();
        self.check_disk(required).await?;
        let est = estimate(&tensors, quantization, self.devices.uses_gpu());
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
            trust_remote_code: req.trust_remote_code.unwrap_or(false),
        };
        let row = self.store.insert_model(new).await?;
        tracing::info!(model_id = row.id, repo = %repo, commit = %model.commit, "download started");
        self.spawn_job(row.clone(), token);
        Ok(self.view(row))
    }

    /// `INSUFFICIENT_DISK` when the cache's file system has less than `required` bytes free.
    async fn check_disk(&self, required: u64) -> AppResult<()> {
        let dir = self.settings.cache_dir();
        let available = tokio::task::spawn_blocking(move || {
            let _ = std::fs::create_dir_all(&dir);
            fs4::available_space(&dir)
        })
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)?;
        if required > available {
            return Err(HubError::InsufficientDisk {
                required,
                available,
            }
            .into());
        }
        Ok(())
    }

    /// `POST /api/models/{id}/cancel`: stops the job, waits for it, removes what it wrote.
    pub async fn cancel_download(&self, id: ModelId) -> AppResult<ModelResponse> {
        let row = self.store.get_model(id.0).await?;
        if row.status != ModelStatus::Downloading {
            return Ok(self.view(row));
        }
        self.stop_job(id.0).await;
        let moved = self
            .store
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
        self.clear_progress(id.0);
        let freed = self.remove_files_of(&row).await;
        tracing::info!(model_id = id.0, freed, "download cancelled");
        self.events
            .emit(Event::DownloadError {
                model_id: id.0,
                error: AppError::new(ErrorCode::DownloadCancelled, CANCELLED_MESSAGE)
                    .with_detail("model_id", id.0)
                    .body(),
            })
            .await;
        self.get_model(id).await
    }

    /// `POST /api/models/{id}/retry`: resumes a failed, cancelled or interrupted download.
    pub async fn retry_download(
        &self,
        id: ModelId,
        hf_token: Option<String>,
    ) -> AppResult<ModelResponse> {
        let row = self.store.get_model(id.0).await?;
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
                if !self
                    .store
                    .transition(id.0, &[ModelStatus::Error], ModelStatus::Downloading, None)
                    .await?
                {
                    let now = self.store.get_model(id.0).await?;
                    return Err(super::busy_error(&now));
                }
            }
            ModelStatus::Downloading if self.downloads.is_running(id.0) => return Ok(self.view(row)),
            ModelStatus::Downloading => {}
            other => {
                return Err(AppError::invalid_state(
                    id.0,
                    other.as_str(),
                    format!("Model {} is {other}; only a failed, cancelled or interrupted download can be retried.", id.0),
                ))
            }
        }
        let token = pick_token(hf_token.as_deref(), &self.settings);
        let row = self.store.get_model(id.0).await?;
        tracing::info!(model_id = id.0, "download retried");
        self.spawn_job(row.clone(), token);
        Ok(self.view(row))
    }

    /// Resumes downloads a previous process left `downloading`, with `HF_TOKEN` if set.
    pub(crate) async fn resume_downloads(&self) -> anyhow::Result<()> {
        let rows = self.store.models_in(&[ModelStatus::Downloading]).await?;
        for row in rows {
            tracing::info!(model_id = row.id, repo = ?row.repo_id, "resuming download left by a previous run");
            self.spawn_job(row, self.settings.hf_token.clone());
        }
        Ok(())
    }

    /// Stops every running download at shutdown, keeping their partial files for a resume.
    pub(crate) async fn stop_downloads(&self) {
        let ids: Vec<i64> = lock(&self.downloads.jobs).keys().copied().collect();
        for id in ids {
            self.stop_job(id).await;
        }
    }

    /// Cancels a job and waits (bounded) until it has really stopped.
    async fn stop_job(&self, id: i64) {
        let job = lock(&self.downloads.jobs).remove(&id);
        if let Some(job) = job {
            job.cancel.cancel();
            if let Some(handle) = job.handle {
                if tokio::time::timeout(STOP_WAIT, handle).await.is_err() {
                    tracing::warn!(model_id = id, "a download job did not stop in time");
                }
            }
        }
    }

    fn spawn_job(&self, row: ModelRecord, token: Option<Secret>) {
        let cancel = self.shutdown.child_token();
        let generation = self.downloads.generation.fetch_add(1, Ordering::Relaxed);
        let id = row.id;
        // Inserted under the lock that the job's own removal takes, so the handle is always
        // stored before the job can finish and remove its entry.
        let mut jobs = lock(&self.downloads.jobs);
        if let Some(old) = jobs.remove(&id) {
            old.cancel.cancel();
        }
        let services = self.clone();
        let job_cancel = cancel.clone();
        let handle = tokio::spawn(async move {
            services.run_job(row, token, job_cancel).await;
            let mut jobs = lock(&services.downloads.jobs);
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
            },
        );
    }

    async fn run_job(&self, row: ModelRecord, token: Option<Secret>, cancel: CancellationToken) {
        let id = row.id;
        let started = Instant::now();
        crate::metrics::download_started();
        let result = self.download(&row, token, &cancel).await;
        crate::metrics::download_finished(
            started.elapsed(),
            match &result {
                Ok(_) => crate::metrics::DownloadOutcome::Completed,
                Err(HubError::Cancelled) => crate::metrics::DownloadOutcome::Cancelled,
                Err(_) => crate::metrics::DownloadOutcome::Failed,
            },
        );
        match result {
            Ok((snapshot, total)) => {
                let cache_path = snapshot.to_string_lossy().to_string();
                let commit = row.revision.clone().unwrap_or_default();
                let recorded = self
                    .store
                    .record_download(id, &commit, &cache_path, &row.files, mib_ceil(total) as i64)
                    .await;
                let moved = match recorded {
                    Ok(_) => self
                        .store
                        .transition(id, &[ModelStatus::Downloading], ModelStatus::Ready, None)
                        .await
                        .unwrap_or(false),
                    Err(e) => {
                        tracing::error!(model_id = id, "cannot record the download: {e}");
                        false
                    }
                };
                self.clear_progress(id);
                if moved {
                    tracing::info!(model_id = id, path = %cache_path, "download complete");
                    self.events
                        .download_progress(
                            Event::DownloadProgress {
                                model_id: id,
                                progress: 100,
                                downloaded_bytes: total,
                                total_bytes: total,
                                speed_bps: 0,
                            },
                            true,
                        )
                        .await;
                    self.events
                        .emit(Event::DownloadComplete {
                            model_id: id,
                            local_path: cache_path,
                        })
                        .await;
                }
            }
            Err(HubError::Cancelled) => {
                // Cancel or shutdown: whoever cancelled decides about the record and the files.
                self.clear_progress(id);
            }
            Err(e) => {
                let err = AppError::from(e).with_detail("model_id", id);
                tracing::warn!(
                    model_id = id,
                    code = err.code.as_str(),
                    "download failed: {}",
                    err.message
                );
                self.clear_progress(id);
                let moved = self
                    .store
                    .transition(
                        id,
                        &[ModelStatus::Downloading],
                        ModelStatus::Error,
                        Some(&err.message),
                    )
                    .await
                    .unwrap_or(false);
                if moved {
                    self.events
                        .emit(Event::DownloadError {
                            model_id: id,
                            error: err.body(),
                        })
                        .await;
                }
            }
        }
    }

    /// The transfer of one model: resolve each file, fetch what is missing, link the snapshot.
    async fn download(
        &self,
        row: &ModelRecord,
        token: Option<Secret>,
        cancel: &CancellationToken,
    ) -> Result<(PathBuf, u64), HubError> {
        let repo_raw = row.repo_id.clone().unwrap_or_default();
        let repo = RepoId::parse(&repo_raw).map_err(HubError::Failed)?;
        let commit = row
            .revision
            .clone()
            .ok_or_else(|| HubError::Failed("the record has no commit".into()))?;
        let client = self.downloads.client.clone();
        let resolve = stream::iter(row.files.clone())
            .map(|f| {
                let client = client.clone();
                let repo = repo.clone();
                let commit = commit.clone();
                let token = token.clone();
                async move {
                    select::check_name(&f.path)?;
                    let head = client.head(&repo, &commit, &f.path, token.as_ref()).await?;
                    check_identity(&head.identity)?;
                    if let Some(c) = &head.commit {
                        if c != &commit {
                            return Err(HubError::Failed(format!(
                                "the Hub served {} from commit {c} instead of {commit}",
                                f.path
                            )));
                        }
                    }
                    Ok::<_, HubError>(FilePlan {
                        path: f.path.clone(),
                        size: head.size.unwrap_or(f.size),
                        identity: head.identity,
                        url: head.url.to_string(),
                        lfs: head.lfs,
                    })
                }
            })
            .buffered(HEAD_CONCURRENCY)
            .try_collect::<Vec<_>>();
        let plans = tokio::select! {
            _ = cancel.cancelled() => return Err(HubError::Cancelled),
            p = resolve => p?,
        };
        let plan_file = PlanFile {
            repo_id: repo.to_string(),
            commit: commit.clone(),
            files: plans.clone(),
        };
        let plan_path = self.plan_path(row.id);
        let plans_dir = self.plans_dir();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&plans_dir)?;
            let text = serde_json::to_vec_pretty(&plan_file).map_err(std::io::Error::other)?;
            let tmp = plan_path.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &plan_path)
        })
        .await
        .map_err(|e| HubError::Failed(e.to_string()))??;

        let cache = RepoCache::new(&self.settings.cache_dir(), &repo);
        let downloader = Downloader::new(
            client,
            cache.clone(),
            self.downloads.options.clone(),
            token.clone(),
            cancel.clone(),
            self.downloads.locks.clone(),
            ErrorContext::new(&repo, &commit, None, token.is_some()),
        );
        let total: u64 = plans.iter().map(|p| p.size).sum();
        let required = downloader.missing_bytes(&plans).await?;
        let dir = self.settings.cache_dir();
        let available = tokio::task::spawn_blocking(move || fs4::available_space(&dir))
            .await
            .map_err(|e| HubError::Failed(e.to_string()))??;
        if required > available {
            return Err(HubError::InsufficientDisk {
                required,
                available,
            });
        }

        let ticker_stop = cancel.child_token();
        let ticker = tokio::spawn(self.clone().report_progress(
            row.id,
            downloader.progress.clone(),
            total,
            ticker_stop.clone(),
        ));
        let result = downloader.download_all(&commit, &plans).await;
        ticker_stop.cancel();
        let _ = ticker.await;
        result?;
        let requested = row
            .requested_revision
            .clone()
            .unwrap_or_else(|| commit.clone());
        let c2 = cache.clone();
        let commit2 = commit.clone();
        tokio::task::spawn_blocking(move || c2.write_ref(&requested, &commit2))
            .await
            .map_err(|e| HubError::Failed(e.to_string()))??;
        if cancel.is_cancelled() {
            return Err(HubError::Cancelled);
        }
        Ok((cache.snapshot_dir(&commit), total))
    }

    /// Publishes live figures (GET and `model:download:progress`, ~4 per second) until stopped.
    async fn report_progress(
        self,
        id: i64,
        progress: Arc<crate::hub::Progress>,
        total: u64,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(crate::events::PROGRESS_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Speed over the last ~2 seconds.
        let mut samples: std::collections::VecDeque<(Instant, u64)> =
            std::collections::VecDeque::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let downloaded = progress.downloaded.load(Ordering::Relaxed).min(total);
            samples.push_back((now, downloaded));
            while samples.len() > 2 && now.duration_since(samples[0].0) > Duration::from_secs(2) {
                samples.pop_front();
            }
            let (t0, b0) = samples[0];
            let secs = now.duration_since(t0).as_secs_f64();
            let speed = if secs > 0.0 {
                ((downloaded - b0.min(downloaded)) as f64 / secs) as u64
            } else {
                0
            };
            let figures = DownloadProgress {
                downloaded_bytes: downloaded,
                total_bytes: total,
                speed_bps: speed,
            };
            self.set_progress(id, figures);
            self.events
                .download_progress(
                    Event::DownloadProgress {
                        model_id: id,
                        progress: figures.percent(),
                        downloaded_bytes: downloaded,
                        total_bytes: total,
                        speed_bps: speed,
                    },
                    false,
                )
                .await;
        }
    }

    /// `DELETE` of a Hub model (its record already gone): removes its snapshot links and every
    /// blob no other record of the repo uses. Returns the bytes freed.
    pub(crate) async fn remove_downloaded_files(&self, row: &ModelRecord) -> u64 {
        self.remove_files_of(row).await
    }

    /// Removes what `row` downloaded (also unfinished files) that no other record uses.
    async fn remove_files_of(&self, row: &ModelRecord) -> u64 {
        let Some(repo) = row.repo_id.as_deref().and_then(|r| RepoId::parse(r).ok()) else {
            return 0;
        };
        let others = match self.store.repo_users(&repo.to_string(), row.id).await {
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
        let services = self.clone();
        let row = row.clone();
        tokio::task::spawn_blocking(move || services.remove_files_blocking(&repo, &row, &others))
            .await
            .unwrap_or(0)
    }

    /// What a record uses: identities by path, from its plan file, else its snapshot links.
    fn identities_of(&self, cache: &RepoCache, row: &ModelRecord) -> HashMap<String, String> {
        let mut out = HashMap::new();
        if let Some(plan) = self.read_plan(row.id) {
            for f in plan.files {
                out.insert(f.path, f.identity);
            }
        }
        if let Some(commit) = &row.revision {
            for f in &row.files {
                if !out.contains_key(&f.path) {
                    if let Some(identity) = cache.linked_identity(commit, &f.path) {
                        out.insert(f.path.clone(), identity);
                    }
                }
            }
        }
        out
    }

    fn remove_files_blocking(
        &self,
        repo: &RepoId,
        row: &ModelRecord,
        others: &[ModelRecord],
    ) -> u64 {
        let cache = RepoCache::new(&self.settings.cache_dir(), repo);
        let mine = self.identities_of(&cache, row);
        let mut used: HashSet<String> = HashSet::new();
        let mut used_links: HashSet<(String, String)> = HashSet::new();
        let mut used_refs: HashSet<String> = HashSet::new();
        for other in others {
            used.extend(self.identities_of(&cache, other).into_values());
            if let Some(commit) = &other.revision {
                for f in &other.files {
                    used_links.insert((commit.clone(), f.path.clone()));
                }
            }
            if let Some(r) = &other.requested_revision {
                used_refs.insert(r.clone());
            }
        }
        let mut freed = 0;
        if let Some(commit) = &row.revision {
            for f in &row.files {
                if used_links.contains(&(commit.clone(), f.path.clone())) {
                    continue;
                }
                if let Ok(link) = cache.snapshot_file(commit, &f.path) {
                    remove_if_present(&link);
                    if let Some(parent) = link.parent() {
                        prune_empty(parent, &cache.snapshot_dir(commit));
                    }
                }
            }
            prune_empty(&cache.snapshot_dir(commit), &cache.root().join("snapshots"));
            if let Some(r) = &row.requested_revision {
                if !used_refs.contains(r) {
                    if let Ok(path) = cache.ref_path(r) {
                        if std::fs::read_to_string(&path).ok().as_deref() == Some(commit.as_str()) {
                            remove_if_present(&path);
                            if let Some(parent) = path.parent() {
                                prune_empty(parent, &cache.root().join("refs"));
                            }
                        }
                    }
                }
            }
        }
        for identity in mine.values() {
            if used.contains(identity) {
                continue;
            }
            freed += remove_if_present(&cache.blob(identity));
            freed += remove_if_present(&cache.incomplete(identity));
            remove_if_present(&cache.ranges(identity));
        }
        remove_if_present(&self.plan_path(row.id));
        prune_empty(&cache.blobs_dir(), cache.root());
        prune_empty(&cache.root().join("refs"), cache.root());
        prune_empty(&cache.root().join("snapshots"), cache.root());
        freed
    }
}

/// Without access to the headers (a gated repo), the metadata's per-dtype parameter counts
/// stand in: each as one linear layer's weights, 4096 wide, so the quantized estimates assume
/// every parameter is quantizable (an upper bound on what quantization saves).
fn synthetic_tensors(model: &remote::RemoteModel) -> Vec<TensorMeta> {
    let Some(st) = &model.info.safetensors else {
        return Vec::new();
    };
    st.parameters
        .iter()
        .filter_map(|(dtype, &count)| {
            let dtype = match dtype.as_str() {
                "F32" => safetensors::Dtype::F32,
                "F16" => safetensors::Dtype::F16,
                "BF16" => safetensors::Dtype::BF16,
                "F64" => safetensors::Dtype::F64,
                "I64" => safetensors::Dtype::I64,
                "I32" => safetensors::Dtype::I32,
                "I8" => safetensors::Dtype::I8,
                "U8" => safetensors::Dtype::U8,
                _ => return None,
            };
            let width = 4096usize;
            let rows = (count as usize).div_ceil(width);
            Some(TensorMeta {
                name: format!("hub.{dtype:?}.weight"),
                dtype,
                shape: vec![rows, width],
            })
        })
        .collect()
}

/// Locks a mutex whose data stays valid even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
