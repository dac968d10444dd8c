//! The resumable downloader: each file goes to `blobs/{identity}.incomplete` as parallel byte
//! ranges over several connections (several files at once), written in place with positioned
//! writes. A sidecar lists the finished ranges, so a retry or a restart asks only for what is
//! missing. An LFS file's sha256 is computed while it arrives — in order, from the bytes in
//! memory, or once from disk for ranges an earlier run finished — never as a second pass, and
//! checked against the identity before the file is renamed into `blobs/`.
//!
//! Memory stays bounded: a range may only start within a window of the hashed prefix, so at
//! most about `window_chunks × chunk_size` bytes wait in memory for the hasher.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::cache::{check_identity, is_sha256, RepoCache};
use super::client::{transport, ErrorContext, HubClient};
use super::HubError;
use crate::config::Secret;

/// How transfers are split and retried.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Size of one range request.
    pub chunk_size: u64,
    /// Connections one file may use at once.
    pub connections_per_file: usize,
    /// Connections one download (all its files) may use at once.
    pub max_connections: usize,
    /// Files fetched at once.
    pub parallel_files: usize,
    /// Ranges that may run ahead of the hashed prefix (bounds memory).
    pub window_chunks: u64,
    /// A connection that delivers nothing for this long is stalled and retried.
    pub stall_timeout: Duration,
    /// Attempts per range for transient faults.
    pub attempts: u32,
    /// First back-off between attempts; each further one doubles.
    pub backoff: Duration,
    /// Bytes gathered before one positioned write.
    pub write_buffer: usize,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            chunk_size: 16 << 20,
            connections_per_file: 8,
            max_connections: 8,
            parallel_files: 3,
            window_chunks: 10,
            stall_timeout: Duration::from_secs(30),
            attempts: 3,
            backoff: Duration::from_millis(500),
            write_buffer: 4 << 20,
        }
    }
}

/// One file to fetch: where, how big, and what it is (its identity).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilePlan {
    pub path: String,
    pub size: u64,
    pub identity: String,
    /// The CDN `Location`, or the resolve URL.
    pub url: String,
    /// True when the identity is the sha256 of the bytes.
    pub lfs: bool,
}

/// Bytes present so far, across every file of a download.
#[derive(Debug, Default)]
pub struct Progress {
    pub downloaded: AtomicU64,
    pub total: AtomicU64,
}

/// One lock per blob, so two downloads sharing a blob (two quantizations of one repo) never
/// write the same `.incomplete` file at once; the second finds the blob done.
#[derive(Clone, Default, Debug)]
pub struct BlobLocks(Arc<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>);

impl BlobLocks {
    fn get(&self, path: PathBuf) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(path).or_default().clone()
    }
}

/// Everything one download needs; shared by its tasks.
pub struct Downloader {
    pub client: HubClient,
    pub cache: RepoCache,
    pub options: DownloadOptions,
    pub token: Option<Secret>,
    pub cancel: CancellationToken,
    pub progress: Arc<Progress>,
    pub locks: BlobLocks,
    /// For error messages.
    pub error_context: ErrorContext,
    connections: Arc<Semaphore>,
}

/// The finished ranges of an `.incomplete` file, as its sidecar stores them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Sidecar {
    identity: String,
    size: u64,
    /// Sorted, merged, half-open `[start, end)`.
    done: Vec<(u64, u64)>,
}

impl Sidecar {
    fn add(&mut self, start: u64, end: u64) {
        self.done.push((start, end));
        self.done.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.done.len());
        for (s, e) in self.done.drain(..) {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.done = merged;
    }

    fn done_bytes(&self) -> u64 {
        self.done.iter().map(|(s, e)| e - s).sum()
    }

    /// The missing parts of `[0, size)`, cut into pieces of at most `chunk`.
    fn missing(&self, chunk: u64) -> VecDeque<(u64, u64)> {
        let mut out = VecDeque::new();
        let mut cut = |mut s: u64, e: u64| {
            while s < e {
                let end = (s + chunk).min(e);
                out.push_back((s, end));
                s = end;
            }
        };
        let mut pos = 0;
        for &(s, e) in &self.done {
            if s > pos {
                cut(pos, s);
            }
            pos = pos.max(e);
        }
        if pos < self.size {
            cut(pos, self.size);
        }
        out
    }
}

/// How often the finished ranges are written down while bytes arrive.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// Bytes received are written (and counted in the progress) at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

impl Transfer {
    /// Writes the sidecar; the lock is held while writing, so a newer list is never
    /// overwritten by an older one.
    fn persist(&self) -> Result<(), HubError> {
        let s = lock_ok(&self.sidecar);
        write_sidecar(&self.sidecar_path, &s)?;
        *lock_ok(&self.persisted) = Instant::now();
        Ok(())
    }
}

/// One file in flight.
struct Transfer {
    plan: FilePlan,
    url: Url,
    file: Arc<File>,
    sidecar: Mutex<Sidecar>,
    sidecar_path: PathBuf,
    /// When the sidecar was last written.
    persisted: Mutex<Instant>,
    queue: Mutex<VecDeque<(u64, u64)>>,
    /// Where hashed bytes go, if the file is hashed.
    hasher: Option<mpsc::UnboundedSender<(u64, Bytes)>>,
    /// How far the hasher has got.
    hashed: watch::Receiver<u64>,
}

impl Downloader {
    pub fn new(
        client: HubClient,
        cache: RepoCache,
        options: DownloadOptions,
        token: Option<Secret>,
        cancel: CancellationToken,
        locks: BlobLocks,
        error_context: ErrorContext,
    ) -> Arc<Self> {
        let connections = Arc::new(Semaphore::new(options.max_connections.max(1)));
        Arc::new(Downloader {
            client,
            cache,
            options,
            token,
            cancel,
            progress: Arc::new(Progress::default()),
            locks,
            error_context,
            connections,
        })
    }

    /// Bytes of `plans` already in the cache (whole blobs and finished ranges).
    pub fn present_bytes(&self, plans: &[FilePlan]) -> u64 {
        plans
            .iter()
            .map(|p| {
                if self.cache.blob(&p.identity).is_file() {
                    p.size
                } else {
                    read_sidecar(&self.cache.ranges(&p.identity), p)
                        .map(|s| s.done_bytes())
                        .unwrap_or(0)
                }
            })
            .sum()
    }

    /// Fetches every file (several at once) and links each into `snapshots/{commit}`.
    pub async fn download_all(
        self: &Arc<Self>,
        commit: &str,
        plans: &[FilePlan],
    ) -> Result<(), HubError> {
        self.progress
            .total
            .store(plans.iter().map(|p| p.size).sum(), Ordering::Relaxed);
        let mut set = JoinSet::new();
        let mut pending: VecDeque<FilePlan> = plans.iter().cloned().collect();
        let mut first_error: Option<HubError> = None;
        let files_cancel = self.cancel.child_token();
        loop {
            while first_error.is_none() && set.len() < self.options.parallel_files.max(1) {
                let Some(plan) = pending.pop_front() else {
                    break;
                };
                let me = self.clone();
                let commit = commit.to_string();
                let cancel = files_cancel.clone();
                set.spawn(async move {
                    me.download_blob(&plan, &cancel).await?;
                    let me2 = me.clone();
                    tokio::task::spawn_blocking(move || {
                        me2.cache.link(&commit, &plan.path, &plan.identity)
                    })
                    .await
                    .map_err(|e| HubError::Failed(format!("linking failed: {e}")))?
                });
            }
            let Some(res) = set.join_next().await else {
                break;
            };
            let res = res
                .unwrap_or_else(|e| Err(HubError::Failed(format!("a download task failed: {e}"))));
            if let Err(e) = res {
                files_cancel.cancel();
                first_error = Some(prefer(first_error, e));
            }
        }
        match first_error {
            Some(e) => Err(e),
            None if self.cancel.is_cancelled() => Err(HubError::Cancelled),
            None => Ok(()),
        }
    }

    /// Fetches one blob unless it is already there.
    pub async fn download_blob(
        self: &Arc<Self>,
        plan: &FilePlan,
        cancel: &CancellationToken,
    ) -> Result<(), HubError> {
        check_identity(&plan.identity)?;
        let blob = self.cache.blob(&plan.identity);
        let lock = self.locks.get(blob.clone());
        let _guard = tokio::select! {
            _ = cancel.cancelled() => return Err(HubError::Cancelled),
            g = lock.lock_owned() => g,
        };
        if blob.is_file() {
            self.progress
                .downloaded
                .fetch_add(plan.size, Ordering::Relaxed);
            return Ok(());
        }
        let me = self.clone();
        let p = plan.clone();
        let transfer = tokio::task::spawn_blocking(move || me.open_transfer(p))
            .await
            .map_err(|e| HubError::Failed(format!("opening the file failed: {e}")))??;
        let (transfer, hasher) = transfer;
        let transfer = Arc::new(transfer);
        self.progress
            .downloaded
            .fetch_add(lock_ok(&transfer.sidecar).done_bytes(), Ordering::Relaxed);

        let file_cancel = cancel.child_token();
        let workers = self
            .options
            .connections_per_file
            .max(1)
            .min(lock_ok(&transfer.queue).len().max(1));
        let mut set = JoinSet::new();
        for _ in 0..workers {
            let me = self.clone();
            let t = transfer.clone();
            let c = file_cancel.clone();
            set.spawn(async move { me.worker(&t, &c).await });
        }
        let mut first_error = None;
        while let Some(res) = set.join_next().await {
            let res = res
                .unwrap_or_else(|e| Err(HubError::Failed(format!("a transfer task failed: {e}"))));
            if let Err(e) = res {
                file_cancel.cancel();
                first_error = Some(prefer(first_error, e));
            }
        }
        if let Some(e) = first_error {
            // The `.incomplete` file and its sidecar stay for a resume.
            return Err(e);
        }
        if cancel.is_cancelled() {
            return Err(HubError::Cancelled);
        }
        let transfer = Arc::into_inner(transfer).expect("every worker has finished");
        drop(transfer.hasher);
        let digest = match hasher {
            Some(h) => h
                .await
                .map_err(|e| HubError::Failed(format!("hashing failed: {e}")))??,
            None => None,
        };
        let cache = self.cache.clone();
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || finish(&cache, &plan, digest))
            .await
            .map_err(|e| HubError::Failed(format!("finishing the file failed: {e}")))?
    }

    /// Opens (or resumes) the `.incomplete` file and starts its hasher.
    #[allow(clippy::type_complexity)]
    fn open_transfer(
        &self,
        plan: FilePlan,
    ) -> Result<
        (
            Transfer,
            Option<tokio::task::JoinHandle<Result<Option<String>, HubError>>>,
        ),
        HubError,
    > {
        std::fs::create_dir_all(self.cache.blobs_dir())?;
        let path = self.cache.incomplete(&plan.identity);
        let sidecar_path = self.cache.ranges(&plan.identity);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let len = file.metadata()?.len();
        let sidecar = match read_sidecar(&sidecar_path, &plan) {
            Some(s) if len <= plan.size => s,
            _ => {
                // No sidecar: a file another client wrote front to back (its length is its
                // finished prefix), or ours from before any range finished.
                let mut s = Sidecar {
                    identity: plan.identity.clone(),
                    size: plan.size,
                    done: Vec::new(),
                };
                if len > plan.size {
                    file.set_len(0)?;
                } else if len > 0 && !sidecar_path.exists() {
                    s.add(0, len);
                }
                s
            }
        };
        // Written before any byte, so a later sparse write is never mistaken for a prefix.
        write_sidecar(&sidecar_path, &sidecar)?;
        let file = Arc::new(file);
        let queue = sidecar.missing(self.options.chunk_size.max(1));
        let hashed_on_disk = sidecar.done.clone();
        let url =
            Url::parse(&plan.url).map_err(|e| HubError::Failed(format!("bad file URL: {e}")))?;
        let (hashed_tx, hashed_rx) = watch::channel(0u64);
        let (tx, hasher) = if plan.lfs && is_sha256(&plan.identity) {
            let (tx, rx) = mpsc::unbounded_channel();
            let f = file.clone();
            let size = plan.size;
            let h = tokio::task::spawn_blocking(move || {
                hash_in_order(f, size, hashed_on_disk, rx, hashed_tx)
            });
            (Some(tx), Some(h))
        } else {
            let _ = hashed_tx.send(u64::MAX / 2);
            (None, None)
        };
        Ok((
            Transfer {
                plan,
                url,
                file,
                sidecar: Mutex::new(sidecar),
                sidecar_path,
                persisted: Mutex::new(Instant::now()),
                queue: Mutex::new(queue),
                hasher: tx,
                hashed: hashed_rx,
            },
            hasher,
        ))
    }

    /// Takes ranges off the file's queue until it is empty.
    async fn worker(
        self: &Arc<Self>,
        t: &Arc<Transfer>,
        cancel: &CancellationToken,
    ) -> Result<(), HubError> {
        let window = self.options.window_chunks.max(1) * self.options.chunk_size;
        loop {
            let next = lock_ok(&t.queue).pop_front();
            let Some((start, end)) = next else {
                return Ok(());
            };
            // Stay within the window ahead of the hasher, so memory stays bounded.
            let mut hashed = t.hashed.clone();
            tokio::select! {
                _ = cancel.cancelled() => return Err(HubError::Cancelled),
                r = hashed.wait_for(|&h| start < h.saturating_add(window)) => {
                    if r.is_err() {
                        return Err(HubError::Failed("the hasher stopped".into()));
                    }
                }
            }
            let _permit = tokio::select! {
                _ = cancel.cancelled() => return Err(HubError::Cancelled),
                p = self.connections.clone().acquire_owned() => p.map_err(|_| HubError::Cancelled)?,
            };
            let fetched = self.fetch_range(t, start, end, cancel).await;
            // Whatever happened, what was written is written down for a resume.
            let t2 = t.clone();
            let persisted = tokio::task::spawn_blocking(move || t2.persist())
                .await
                .map_err(|e| HubError::Failed(format!("recording progress failed: {e}")))?;
            fetched?;
            persisted?;
        }
    }

    /// Fetches `[start, end)` with up to `attempts` tries, each resuming where the last stopped.
    async fn fetch_range(
        &self,
        t: &Arc<Transfer>,
        start: u64,
        end: u64,
        cancel: &CancellationToken,
    ) -> Result<(), HubError> {
        let mut pos = start;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.stream_once(t, &mut pos, end, cancel).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() && attempt < self.options.attempts => {
                    let wait = self.options.backoff * 2u32.pow(attempt - 1);
                    tracing::debug!(file = %t.plan.path, pos, attempt, "transfer fault, resuming: {e}");
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(HubError::Cancelled),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Err(HubError::Transient(m)) => {
                    return Err(HubError::Failed(format!(
                        "downloading {} failed after {attempt} attempts: {m}",
                        t.plan.path
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One request for `[pos, end)`, advancing `pos` past every byte written.
    async fn stream_once(
        &self,
        t: &Arc<Transfer>,
        pos: &mut u64,
        end: u64,
        cancel: &CancellationToken,
    ) -> Result<(), HubError> {
        let whole = *pos == 0 && end == t.plan.size;
        // Non-LFS files are small: one plain GET. Everything else asks for its range.
        let range = (!whole || t.plan.lfs).then_some((*pos, end - 1));
        let stall = self.options.stall_timeout;
        let send =
            self.client
                .get_transfer(&t.url, range, self.token.as_ref(), &self.error_context);
        let mut resp = tokio::select! {
            _ = cancel.cancelled() => return Err(HubError::Cancelled),
            r = tokio::time::timeout(stall, send) => r.map_err(|_| HubError::Transient("the server did not answer".into()))??,
        };
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let ok = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok())
                    == Some(*pos);
                if !ok {
                    return Err(HubError::Failed(format!(
                        "the server sent the wrong range of {}",
                        t.plan.path
                    )));
                }
            }
            StatusCode::OK if *pos == 0 => {}
            s => {
                return Err(HubError::Failed(format!(
                    "the server answered {s} to a range request for {}",
                    t.plan.path
                )))
            }
        }
        // The body's own buffers are kept (no copy) until enough for one batch of writes.
        let cap = self.options.write_buffer.max(64 << 10);
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batched = 0usize;
        // A slow connection still shows progress: a batch is also written after this long.
        let mut flushed = std::time::Instant::now();
        let mut result = Ok(());
        while *pos + (batched as u64) < end {
            let chunk = tokio::select! {
                _ = cancel.cancelled() => { result = Err(HubError::Cancelled); break }
                r = tokio::time::timeout(stall, resp.chunk()) => r,
            };
            match chunk {
                Err(_) => {
                    result = Err(HubError::Transient(format!(
                        "the connection stalled for {}s",
                        stall.as_secs()
                    )));
                    break;
                }
                Ok(Err(e)) => {
                    result = Err(transport(e));
                    break;
                }
                Ok(Ok(None)) => {
                    result = Err(HubError::Transient(
                        "the server closed the connection early".into(),
                    ));
                    break;
                }
                Ok(Ok(Some(mut chunk))) => {
                    let room = (end - *pos) as usize - batched;
                    chunk.truncate(room);
                    batched += chunk.len();
                    batch.push(chunk);
                    if batched >= cap || flushed.elapsed() >= FLUSH_EVERY {
                        batched = 0;
                        flushed = std::time::Instant::now();
                        self.write(t, pos, std::mem::take(&mut batch)).await?;
                    }
                }
            }
        }
        if matches!(result, Err(HubError::Cancelled)) {
            return result;
        }
        // What arrived before a fault is good: keep it, and resume after it.
        if !batch.is_empty() {
            self.write(t, pos, batch).await?;
        }
        result
    }

    /// Writes `data` at `pos`, records it in the sidecar (so a restart resumes right after
    /// it), hands it to the hasher, and counts it.
    async fn write(
        &self,
        t: &Arc<Transfer>,
        pos: &mut u64,
        data: Vec<Bytes>,
    ) -> Result<(), HubError> {
        let offset = *pos;
        let len: u64 = data.iter().map(|d| d.len() as u64).sum();
        let t2 = t.clone();
        let pieces = data.clone();
        tokio::task::spawn_blocking(move || -> Result<(), HubError> {
            let mut at = offset;
            for piece in &pieces {
                t2.file.write_all_at(piece, at)?;
                at += piece.len() as u64;
            }
            lock_ok(&t2.sidecar).add(offset, offset + len);
            // Persisted at most about once a second here (and at every range's end), so a
            // hard kill loses at most a second of transfer.
            let due = lock_ok(&t2.persisted).elapsed() >= PERSIST_EVERY;
            if due {
                t2.persist()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| HubError::Failed(format!("writing failed: {e}")))??;
        if let Some(h) = &t.hasher {
            let mut at = offset;
            for piece in data {
                let n = piece.len() as u64;
                let _ = h.send((at, piece));
                at += n;
            }
        }
        *pos += len;
        self.progress.downloaded.fetch_add(len, Ordering::Relaxed);
        crate::metrics::download_bytes(len);
        Ok(())
    }
}

/// The hasher: consumes bytes in file order — from memory as they arrive, or from disk (once)
/// for ranges an earlier run finished — and reports how far it got.
fn hash_in_order(
    file: Arc<File>,
    size: u64,
    on_disk: Vec<(u64, u64)>,
    mut rx: mpsc::UnboundedReceiver<(u64, Bytes)>,
    hashed: watch::Sender<u64>,
) -> Result<Option<String>, HubError> {
    let mut sha = Sha256::new();
    let mut next = 0u64;
    let mut pending: BTreeMap<u64, Bytes> = BTreeMap::new();
    let mut buf = vec![0u8; 4 << 20];
    while next < size {
        if let Some(&(_, e)) = on_disk.iter().find(|(s, e)| *s <= next && next < *e) {
            while next < e {
                let n = ((e - next) as usize).min(buf.len());
                file.read_exact_at(&mut buf[..n], next)?;
                sha.update(&buf[..n]);
                next += n as u64;
            }
            let _ = hashed.send(next);
            continue;
        }
        if let Some(data) = pending.remove(&next) {
            sha.update(&data);
            next += data.len() as u64;
            let _ = hashed.send(next);
            continue;
        }
        match rx.blocking_recv() {
            Some((offset, data)) => {
                if offset >= next {
                    pending.insert(offset, data);
                } else if offset + data.len() as u64 > next {
                    // Overlaps what is hashed (never expected): keep only the new part.
                    let skip = (next - offset) as usize;
                    pending.insert(next, data.slice(skip..));
                }
            }
            // The transfer stopped before the end (an error or a cancel).
            None => return Ok(None),
        }
    }
    Ok(Some(hex::encode(sha.finalize())))
}

/// Checks the digest and moves the finished file into `blobs/`; a mismatch deletes it.
fn finish(cache: &RepoCache, plan: &FilePlan, digest: Option<String>) -> Result<(), HubError> {
    let incomplete = cache.incomplete(&plan.identity);
    let sidecar = cache.ranges(&plan.identity);
    if plan.lfs && is_sha256(&plan.identity) {
        let actual = digest.unwrap_or_default();
        if !actual.eq_ignore_ascii_case(&plan.identity) {
            let _ = std::fs::remove_file(&incomplete);
            let _ = std::fs::remove_file(&sidecar);
            return Err(HubError::Checksum {
                path: plan.path.clone(),
                expected: plan.identity.clone(),
                actual,
            });
        }
    }
    let len = std::fs::metadata(&incomplete)?.len();
    if len != plan.size {
        let _ = std::fs::remove_file(&incomplete);
        let _ = std::fs::remove_file(&sidecar);
        return Err(HubError::Failed(format!(
            "{} has {len} bytes but the Hub announced {}",
            plan.path, plan.size
        )));
    }
    std::fs::rename(&incomplete, cache.blob(&plan.identity))?;
    let _ = std::fs::remove_file(&sidecar);
    Ok(())
}

fn read_sidecar(path: &std::path::Path, plan: &FilePlan) -> Option<Sidecar> {
    let text = std::fs::read(path).ok()?;
    let s: Sidecar = serde_json::from_slice(&text).ok()?;
    (s.identity == plan.identity
        && s.size == plan.size
        && s.done.iter().all(|&(a, b)| a < b && b <= s.size))
    .then_some(s)
}

fn write_sidecar(path: &std::path::Path, s: &Sidecar) -> Result<(), HubError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let text = serde_json::to_vec(s).map_err(|e| HubError::Failed(e.to_string()))?;
    // One writer at a time: the blob lock and the sidecar's mutex; the rename makes it atomic.
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A real error wins over the `Cancelled` its siblings return once it stopped them.
fn prefer(current: Option<HubError>, new: HubError) -> HubError {
    match current {
        Some(HubError::Cancelled) | None => new,
        Some(e) => e,
    }
}

fn lock_ok<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_merges_and_lists_missing_ranges() {
        let mut s = Sidecar {
            identity: "x".into(),
            size: 100,
            done: vec![],
        };
        s.add(10, 20);
        s.add(20, 30);
        s.add(50, 60);
        assert_eq!(s.done, vec![(10, 30), (50, 60)]);
        assert_eq!(s.done_bytes(), 30);
        let missing: Vec<_> = s.missing(15).into_iter().collect();
        assert_eq!(
            missing,
            vec![(0, 10), (30, 45), (45, 50), (60, 75), (75, 90), (90, 100)]
        );
    }

    #[test]
    fn the_hasher_reads_finished_ranges_from_disk_once_and_the_rest_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        // Only [2000, 5000) is on disk, as an earlier run left it.
        let mut on_disk = vec![0u8; 5000];
        on_disk[2000..5000].copy_from_slice(&data[2000..5000]);
        std::fs::write(&path, &on_disk).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        let (htx, _hrx) = watch::channel(0);
        // Out of order, as parallel ranges arrive.
        tx.send((5000, Bytes::copy_from_slice(&data[5000..])))
            .unwrap();
        tx.send((0, Bytes::copy_from_slice(&data[..2000]))).unwrap();
        drop(tx);
        let digest = hash_in_order(file, 10_000, vec![(2000, 5000)], rx, htx).unwrap();
        assert_eq!(digest.unwrap(), hex::encode(Sha256::digest(&data)));
    }
}
