//! A download job, as the service layer sees it: **plan** (a repo at a commit and the files
//! loading needs → every file's identity and size, from HEAD requests, kept in a plan file),
//! **run** (the plan and a cancel token → live figures on a watch channel, then the result),
//! and **remove_unshared** (the cache clean-up of a deleted or cancelled download). Everything
//! about HEAD requests, plan files and cache folder names stays in here; the service keeps the
//! statuses, the events and the table of running jobs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::cache::{check_identity, prune_empty, remove_if_present, rename_durably};
use super::client::ErrorContext;
use super::download::{BlobLocks, Downloader, Progress};
use super::remote::{self, Access, RemoteModel};
use super::{select, DownloadOptions, FilePlan, HubClient, HubError, RepoCache};
use crate::config::Secret;
use crate::domain::RepoId;
use crate::store::StoredFile;

/// HEAD requests in flight while a job resolves its files.
const HEAD_CONCURRENCY: usize = 8;
/// Live figures are published this often (~4 per second).
pub const PROGRESS_PERIOD: Duration = Duration::from_millis(250);
/// The speed is measured over about this long.
const SPEED_WINDOW: Duration = Duration::from_secs(2);

/// Live figures of a running download.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownloadProgress {
    pub downloaded_bytes: u64,
    pub total_bytes: u64,
    pub speed_bps: u64,
}

impl DownloadProgress {
    /// 0–100.
    pub fn percent(&self) -> u8 {
        (self.downloaded_bytes.min(self.total_bytes) * 100)
            .checked_div(self.total_bytes)
            .unwrap_or(0) as u8
    }
}

/// What a job downloads: one repo at one commit. `key` names the job's plan file (the model id).
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub key: i64,
    pub repo: RepoId,
    pub commit: String,
    /// The branch or tag asked for; `refs/{it}` points at the commit once the job is done.
    pub requested_revision: Option<String>,
    pub files: Vec<StoredFile>,
}

/// A job with every file resolved: identities, sizes and where the bytes are.
#[derive(Debug, Clone)]
pub struct Plan {
    spec: JobSpec,
    files: Vec<FilePlan>,
}

impl Plan {
    /// Bytes of every file of the plan.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// A finished job.
#[derive(Debug, Clone)]
pub struct Completed {
    /// `snapshots/{commit}`: the folder a load reads.
    pub snapshot: PathBuf,
    pub total_bytes: u64,
}

/// What one record of a repo uses, for [`Hub::remove_unshared`].
#[derive(Debug, Clone)]
pub struct CacheUser {
    pub key: i64,
    pub commit: Option<String>,
    pub requested_revision: Option<String>,
    pub files: Vec<StoredFile>,
}

/// The plan file: the identities a job resolved, kept so that cancel and delete can clean up
/// even files that never finished.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlanFile {
    repo_id: String,
    commit: String,
    files: Vec<FilePlan>,
}

/// The Hub as the service uses it: metadata, download jobs and the cache; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    client: HubClient,
    options: DownloadOptions,
    locks: BlobLocks,
    cache_dir: PathBuf,
    plans_dir: PathBuf,
}

impl Hub {
    /// A Hub at `endpoint`, caching under `cache_dir`, with plan files in `plans_dir`.
    pub fn new(endpoint: &str, cache_dir: PathBuf, plans_dir: PathBuf) -> Result<Self, HubError> {
        Ok(Hub {
            client: HubClient::new(endpoint)?,
            options: DownloadOptions::default(),
            locks: BlobLocks::default(),
            cache_dir,
            plans_dir,
        })
    }

    /// What a repo is at `revision`: files, config, tensor shapes (no weights downloaded).
    pub async fn inspect(
        &self,
        repo: &RepoId,
        revision: &str,
        token: Option<&Secret>,
        access: Access,
    ) -> Result<RemoteModel, HubError> {
        remote::inspect(&self.client, repo, revision, token, access).await
    }

    /// `INSUFFICIENT_DISK` unless the cache has room for the files of `model` that its snapshot
    /// does not hold yet, besides `reserved` bytes (promised to running downloads, a reserve).
    pub async fn check_space_for(
        &self,
        repo: &RepoId,
        model: &RemoteModel,
        reserved: u64,
    ) -> Result<(), HubError> {
        let snapshot = RepoCache::new(&self.cache_dir, repo).snapshot_dir(&model.commit);
        let files = model.files.clone();
        let required = blocking(move || {
            Ok(files
                .iter()
                .filter(|f| !snapshot.join(&f.path).is_file())
                .map(|f| f.size)
                .sum())
        })
        .await?;
        self.check_space(required, reserved).await
    }

    /// `INSUFFICIENT_DISK` when the cache's file system has less than `required` bytes free
    /// besides `reserved`.
    async fn check_space(&self, required: u64, reserved: u64) -> Result<(), HubError> {
        let dir = self.cache_dir.clone();
        let available = blocking(move || {
            std::fs::create_dir_all(&dir)?;
            Ok(fs4::available_space(&dir)?)
        })
        .await?;
        let available = available.saturating_sub(reserved);
        if required > available {
            return Err(HubError::InsufficientDisk {
                required,
                available,
            });
        }
        Ok(())
    }

    fn plan_path(&self, key: i64) -> PathBuf {
        self.plans_dir.join(format!("{key}.json"))
    }

    /// Resolves every file of `spec` (HEAD requests, several at once), checks that the Hub
    /// serves the spec's commit, and writes the plan file.
    pub async fn plan(
        &self,
        spec: JobSpec,
        token: Option<&Secret>,
        cancel: &CancellationToken,
    ) -> Result<Plan, HubError> {
        let resolve = stream::iter(spec.files.clone())
            .map(|f| {
                let spec = &spec;
                async move {
                    select::check_name(&f.path)?;
                    let head = self
                        .client
                        .head(&spec.repo, &spec.commit, &f.path, token)
                        .await?;
                    check_identity(&head.identity)?;
                    if let Some(c) = &head.commit {
                        if c != &spec.commit {
                            return Err(HubError::Failed(format!(
                                "the Hub served {} from commit {c} instead of {}",
                                f.path, spec.commit
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
        let files = tokio::select! {
            _ = cancel.cancelled() => return Err(HubError::Cancelled),
            files = resolve => files?,
        };
        let plan_file = PlanFile {
            repo_id: spec.repo.to_string(),
            commit: spec.commit.clone(),
            files: files.clone(),
        };
        let (path, dir) = (self.plan_path(spec.key), self.plans_dir.clone());
        blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let text = serde_json::to_vec_pretty(&plan_file).map_err(std::io::Error::other)?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            rename_durably(&tmp, &path)?;
            Ok(())
        })
        .await?;
        Ok(Plan { spec, files })
    }

    /// Fetches what the cache lacks of `plan`, links the snapshot and writes the ref,
    /// publishing live figures on `progress` every [`PROGRESS_PERIOD`] until it ends.
    pub async fn run(
        &self,
        plan: &Plan,
        token: Option<Secret>,
        cancel: &CancellationToken,
        progress: &watch::Sender<DownloadProgress>,
    ) -> Result<Completed, HubError> {
        let spec = &plan.spec;
        let cache = RepoCache::new(&self.cache_dir, &spec.repo);
        let downloader = Downloader::new(
            self.client.clone(),
            cache.clone(),
            self.options.clone(),
            token.clone(),
            cancel.clone(),
            self.locks.clone(),
            ErrorContext::new(&spec.repo, &spec.commit, None, token.is_some()),
        );
        let total = plan.total_bytes();
        self.check_space(downloader.missing_bytes(&plan.files).await?, 0)
            .await?;

        let stop = cancel.child_token();
        let ticker = tokio::spawn(publish_progress(
            downloader.progress.clone(),
            total,
            progress.clone(),
            stop.clone(),
        ));
        let result = downloader.download_all(&spec.commit, &plan.files).await;
        stop.cancel();
        let _ = ticker.await;
        result?;
        let requested = spec
            .requested_revision
            .clone()
            .unwrap_or_else(|| spec.commit.clone());
        let (c2, commit) = (cache.clone(), spec.commit.clone());
        blocking(move || c2.write_ref(&requested, &commit)).await?;
        if cancel.is_cancelled() {
            return Err(HubError::Cancelled);
        }
        progress.send_replace(DownloadProgress {
            downloaded_bytes: total,
            total_bytes: total,
            speed_bps: 0,
        });
        Ok(Completed {
            snapshot: cache.snapshot_dir(&spec.commit),
            total_bytes: total,
        })
    }

    /// Removes what `mine` downloaded into `repo`'s cache folder (finished blobs, unfinished
    /// `.incomplete` files, its snapshot links, its ref and its plan file) except what anyone
    /// else still uses: the records in `others`, and every blob that a `snapshots/*` link of
    /// the folder still points at (the Python tools' own snapshots). Returns the bytes freed.
    pub async fn remove_unshared(
        &self,
        repo: &RepoId,
        mine: CacheUser,
        others: Vec<CacheUser>,
    ) -> u64 {
        let cache = RepoCache::new(&self.cache_dir, repo);
        let hub = self.clone();
        tokio::task::spawn_blocking(move || hub.remove_unshared_blocking(&cache, &mine, &others))
            .await
            .unwrap_or_else(|e| {
                tracing::error!("cache clean-up stopped: {e}");
                0
            })
    }

    /// The identities (by path) a record uses: its plan file's, else its snapshot links'.
    /// Identities read back from a plan file are checked again: a file name must stay a name.
    fn identities_of(&self, cache: &RepoCache, user: &CacheUser) -> HashMap<String, String> {
        let mut out = HashMap::new();
        if let Some(plan) = self.read_plan(user.key) {
            for f in plan.files {
                if check_identity(&f.identity).is_ok() {
                    out.insert(f.path, f.identity);
                } else {
                    tracing::warn!(key = user.key, path = %f.path, "plan file names an unusable identity; ignored");
                }
            }
        }
        if let Some(commit) = &user.commit {
            for f in &user.files {
                if !out.contains_key(&f.path) {
                    if let Some(identity) = cache.linked_identity(commit, &f.path) {
                        out.insert(f.path.clone(), identity);
                    }
                }
            }
        }
        out
    }

    fn read_plan(&self, key: i64) -> Option<PlanFile> {
        let text = std::fs::read(self.plan_path(key)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn remove_unshared_blocking(
        &self,
        cache: &RepoCache,
        mine: &CacheUser,
        others: &[CacheUser],
    ) -> u64 {
        let my_identities = self.identities_of(cache, mine);
        let mut used: HashSet<String> = HashSet::new();
        let mut used_links: HashSet<(String, String)> = HashSet::new();
        let mut used_refs: HashSet<String> = HashSet::new();
        for other in others {
            used.extend(self.identities_of(cache, other).into_values());
            if let Some(commit) = &other.commit {
                for f in &other.files {
                    used_links.insert((commit.clone(), f.path.clone()));
                }
            }
            if let Some(r) = &other.requested_revision {
                used_refs.insert(r.clone());
            }
        }
        if let Some(commit) = &mine.commit {
            for f in &mine.files {
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
            if let Some(r) = &mine.requested_revision {
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
        // Whatever a snapshot link still points at stays: links of other records, and links
        // the Python tools made for blobs this server only reused.
        used.extend(linked_blobs(&cache.root().join("snapshots")));
        let mut freed = 0;
        for identity in my_identities.values() {
            if used.contains(identity) {
                continue;
            }
            freed += remove_if_present(&cache.blob(identity));
            freed += remove_if_present(&cache.incomplete(identity));
        }
        remove_if_present(&self.plan_path(mine.key));
        prune_empty(&cache.blobs_dir(), cache.root());
        prune_empty(&cache.root().join("refs"), cache.root());
        prune_empty(&cache.root().join("snapshots"), cache.root());
        freed
    }
}

/// The blob names that symlinks under `snapshots` point at, at any depth.
fn linked_blobs(snapshots: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut stack = vec![snapshots.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_symlink() {
                if let Some(name) = std::fs::read_link(entry.path())
                    .ok()
                    .and_then(|t| t.file_name().and_then(|n| n.to_str()).map(str::to_string))
                {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// Samples the downloader's byte counter every [`PROGRESS_PERIOD`] into `out`, with the speed
/// over the last [`SPEED_WINDOW`], until `stop`.
async fn publish_progress(
    counter: Arc<Progress>,
    total: u64,
    out: watch::Sender<DownloadProgress>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(PROGRESS_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples: std::collections::VecDeque<(Instant, u64)> = Default::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let downloaded = counter.downloaded.load(Ordering::Relaxed).min(total);
        samples.push_back((now, downloaded));
        while samples.len() > 2 && now.duration_since(samples[0].0) > SPEED_WINDOW {
            samples.pop_front();
        }
        let (t0, b0) = samples[0];
        let secs = now.duration_since(t0).as_secs_f64();
        let speed_bps = if secs > 0.0 {
            (downloaded.saturating_sub(b0) as f64 / secs) as u64
        } else {
            0
        };
        out.send_replace(DownloadProgress {
            downloaded_bytes: downloaded,
            total_bytes: total,
            speed_bps,
        });
    }
}

/// Runs file-system work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HubError> + Send + 'static,
) -> Result<T, HubError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HubError::Failed(format!("a file-system task stopped: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_bounded_and_safe_for_an_empty_download() {
        let p = |d, t| DownloadProgress {
            downloaded_bytes: d,
            total_bytes: t,
            speed_bps: 0,
        };
        assert_eq!(p(0, 0).percent(), 0);
        assert_eq!(p(50, 200).percent(), 25);
        assert_eq!(p(300, 200).percent(), 100);
    }

    #[test]
    fn linked_blobs_finds_links_at_any_depth() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RepoCache::new(dir.path(), &RepoId::parse("o/n").unwrap());
        std::fs::create_dir_all(cache.blobs_dir()).unwrap();
        std::fs::write(cache.blob("aaa"), b"x").unwrap();
        std::fs::write(cache.blob("bbb"), b"y").unwrap();
        cache.link("c1", "config.json", "aaa").unwrap();
        cache.link("c2", "sub/dir/w.bin", "bbb").unwrap();
        let found = linked_blobs(&cache.root().join("snapshots"));
        assert_eq!(found, HashSet::from(["aaa".to_string(), "bbb".to_string()]));
    }

    #[tokio::test]
    async fn an_identity_read_back_from_a_plan_file_cannot_name_a_file_outside_the_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoId::parse("o/n").unwrap();
        let hub = Hub::new(
            "http://127.0.0.1:9",
            dir.path().join("hub"),
            dir.path().join("plans"),
        )
        .unwrap();
        let cache = RepoCache::new(&dir.path().join("hub"), &repo);
        std::fs::create_dir_all(cache.blobs_dir()).unwrap();
        std::fs::write(cache.blob("mine"), b"x").unwrap();
        // A file beside the cache that a tampered plan file points at.
        let precious = dir.path().join("hub").join("precious");
        std::fs::write(&precious, b"keep").unwrap();
        std::fs::create_dir_all(dir.path().join("plans")).unwrap();
        let plan = serde_json::json!({"repo_id": "o/n", "commit": "c0ffee", "files": [
            {"path": "a.json", "size": 1, "identity": "mine", "url": "http://x/a", "lfs": false},
            {"path": "b.json", "size": 4, "identity": "../../precious", "url": "http://x/b", "lfs": false}
        ]});
        std::fs::write(hub.plan_path(7), plan.to_string()).unwrap();
        let mine = CacheUser {
            key: 7,
            commit: Some("c0ffee".into()),
            requested_revision: None,
            files: Vec::new(),
        };
        let freed = hub.remove_unshared(&repo, mine, Vec::new()).await;
        assert_eq!(freed, 1, "only the blob of the plan");
        assert!(!cache.blob("mine").exists());
        assert_eq!(std::fs::read(&precious).unwrap(), b"keep");
        assert!(
            !hub.plan_path(7).exists(),
            "the plan file goes with the record"
        );
    }
}
