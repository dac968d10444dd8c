//! The resumable downloader. Each file is fetched as parallel byte ranges over several
//! connections (several files at once); the pieces are put back in order in memory and
//! appended to `blobs/{identity}.incomplete` by one writer, so that file is always a true
//! prefix of the blob: a retry or a restart resumes from its length with `Range`, exactly as
//! the Python tools resume it (and the reverse). Each file's checksum (the sha256 of an LFS
//! file, the git blob sha1 of a plain git file) is computed from the same pieces as they are
//! written: in order, from memory, or once from disk for a prefix an earlier run left, never
//! as a second pass. It is checked before the file is renamed into `blobs/`, and the file is
//! synced to disk before that rename (the folder after it), so a power loss never leaves an
//! unchecked file under a blob's name.
//!
//! Memory stays bounded: a range may only start within a window past the written prefix, so at
//! most about `window_chunks × chunk_size` bytes wait in memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::cache::{check_identity, is_git_sha1, is_sha256, rename_durably, RepoCache};
use super::client::{transport, ErrorContext, HubClient};
use super::HubError;
use crate::config::Secret;
use crate::sync::lock as lock_ok;

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
    /// How many chunks past the written prefix a range may start (bounds memory).
    pub window_chunks: u64,
    /// A connection that delivers nothing for this long is stalled and retried.
    pub stall_timeout: Duration,
    /// Attempts per range for transient faults.
    pub attempts: u32,
    /// First back-off between attempts; each further one doubles.
    pub backoff: Duration,
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
        let mut map = lock_ok(&self.0);
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

/// Pieces received out of order, waiting for the writer to reach them.
struct Reorder {
    state: Mutex<ReorderState>,
    /// Wakes the writer when the piece it waits for arrives, or when the transfer ends.
    ready: Condvar,
}

struct ReorderState {
    /// The offset the writer takes next.
    next: u64,
    pending: BTreeMap<u64, Bytes>,
    /// No more pieces will come: the writer writes what is contiguous and stops.
    closed: bool,
}

impl Reorder {
    fn new(next: u64) -> Self {
        Reorder {
            state: Mutex::new(ReorderState {
                next,
                pending: BTreeMap::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn push(&self, offset: u64, piece: Bytes) {
        let mut s = lock_ok(&self.state);
        if s.closed {
            return;
        }
        let wake = offset == s.next;
        s.pending.insert(offset, piece);
        drop(s);
        if wake {
            self.ready.notify_one();
        }
    }

    fn close(&self) {
        lock_ok(&self.state).closed = true;
        self.ready.notify_one();
    }

    /// The contiguous pieces from the writer's position on (at most about `limit` bytes),
    /// waiting for the first one; empty once closed with nothing contiguous left.
    fn take(&self, limit: usize) -> Vec<(u64, Bytes)> {
        let mut s = lock_ok(&self.state);
        loop {
            let mut out = Vec::new();
            let mut taken = 0usize;
            while taken < limit {
                let next = s.next;
                // Drop anything wholly behind the writer (never expected), trim an overlap.
                while let Some((&o, p)) = s.pending.first_key_value() {
                    if o < next && o + p.len() as u64 <= next {
                        s.pending.pop_first();
                    } else {
                        break;
                    }
                }
                let Some((&o, _)) = s.pending.first_key_value() else {
                    break;
                };
                if o > next {
                    break;
                }
                let (o, mut p) = s.pending.pop_first().expect("checked above");
                if o < next {
                    p = p.slice((next - o) as usize..);
                }
                s.next += p.len() as u64;
                taken += p.len();
                out.push((next, p));
            }
            if !out.is_empty() || s.closed {
                return out;
            }
            s = crate::sync::wait(&self.ready, s);
        }
    }
}

/// One file in flight.
struct Transfer {
    plan: FilePlan,
    url: Url,
    /// Ranges not yet asked for, in file order.
    queue: Mutex<VecDeque<(u64, u64)>>,
    reorder: Arc<Reorder>,
    /// How far the `.incomplete` file is written (and its bytes handed to the hasher).
    written: watch::Receiver<u64>,
}

/// What the writer and the hasher threads return.
type Finished = tokio::task::JoinHandle<Result<(u64, Option<String>), HubError>>;

/// The pieces of the writer to go in `.incomplete` at once (one lock, several `pwrite`s).
const WRITE_BATCH: usize = 8 << 20;
/// Pieces in flight from the writer to the hasher.
const HASH_QUEUE: usize = 32;

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

    /// Bytes of `plans` not yet in the cache: the disk space the download still needs.
    pub async fn missing_bytes(self: &Arc<Self>, plans: &[FilePlan]) -> Result<u64, HubError> {
        let total: u64 = plans.iter().map(|p| p.size).sum();
        let (me, plans) = (self.clone(), plans.to_vec());
        let present = tokio::task::spawn_blocking(move || me.present_bytes(&plans))
            .await
            .map_err(|e| HubError::Failed(e.to_string()))?;
        Ok(total.saturating_sub(present))
    }

    /// Bytes of `plans` already in the cache (whole blobs and written prefixes).
    fn present_bytes(&self, plans: &[FilePlan]) -> u64 {
        plans
            .iter()
            .map(|p| {
                if self.cache.blob(&p.identity).is_file() {
                    p.size
                } else {
                    resumable_prefix(&self.cache.incomplete(&p.identity), p.size)
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
            // The disk filled mid-file: say what the whole download still needs, not only the
            // file that hit it, so that freeing that much is enough for the retry.
            Some(HubError::InsufficientDisk { available, .. }) => Err(HubError::InsufficientDisk {
                required: self.missing_bytes(plans).await?,
                available,
            }),
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
        // The Python tools' lock on the same blob: neither appends to a file the other writes.
        let _shared = self.lock_shared(&plan.identity, cancel).await?;
        if blob.is_file() {
            self.progress
                .downloaded
                .fetch_add(plan.size, Ordering::Relaxed);
            return Ok(());
        }
        let me = self.clone();
        let p = plan.clone();
        let (transfer, finished) = tokio::task::spawn_blocking(move || me.open_transfer(p))
            .await
            .map_err(|e| HubError::Failed(format!("opening the file failed: {e}")))??;
        let transfer = Arc::new(transfer);
        self.progress
            .downloaded
            .fetch_add(*transfer.written.borrow(), Ordering::Relaxed);

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
        let mut writer_gone = false;
        loop {
            tokio::select! {
                res = set.join_next() => {
                    let Some(res) = res else { break };
                    let res = res.unwrap_or_else(|e| {
                        Err(HubError::Failed(format!("a transfer task failed: {e}")))
                    });
                    if let Err(e) = res {
                        file_cancel.cancel();
                        first_error = Some(prefer(first_error, e));
                    }
                }
                // The writer stopped early (a write error): the workers stop too.
                _ = writer_stopped(&transfer.written), if !writer_gone => {
                    writer_gone = true;
                    file_cancel.cancel();
                }
            }
        }
        // What arrived in order is written for a resume; the rest is dropped.
        transfer.reorder.close();
        let (written, digest) = finished
            .await
            .map_err(|e| HubError::Failed(format!("writing failed: {e}")))??;
        if let Some(e) = first_error {
            return Err(e);
        }
        if cancel.is_cancelled() {
            return Err(HubError::Cancelled);
        }
        if written != plan.size {
            return Err(HubError::Failed(format!(
                "{} stopped at byte {written} of {}",
                plan.path, plan.size
            )));
        }
        let cache = self.cache.clone();
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || finish(&cache, &plan, digest))
            .await
            .map_err(|e| HubError::Failed(format!("finishing the file failed: {e}")))?
    }

    /// Takes `.locks/models--{owner}--{name}/{identity}.lock` as the Python tools do (`flock`),
    /// waiting while another process holds it.
    async fn lock_shared(
        &self,
        identity: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<File>, HubError> {
        let path = self.cache.lock_file(identity);
        loop {
            let p = path.clone();
            let taken = tokio::task::spawn_blocking(move || try_flock(&p))
                .await
                .map_err(|e| HubError::Failed(format!("locking failed: {e}")))??;
            match taken {
                FlockAttempt::Taken(f) => return Ok(Some(f)),
                // A file system without locks: the in-process lock is all there is.
                FlockAttempt::Unsupported => return Ok(None),
                FlockAttempt::Busy => {
                    tracing::info!(lock = %path.display(), "another process is downloading this file; waiting");
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(HubError::Cancelled),
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
            }
        }
    }

    /// Opens (or resumes) the `.incomplete` file and starts its writer and hasher threads.
    fn open_transfer(&self, plan: FilePlan) -> Result<(Transfer, Finished), HubError> {
        std::fs::create_dir_all(self.cache.blobs_dir())?;
        let path = self.cache.incomplete(&plan.identity);
        let prefix = resumable_prefix(&path, plan.size);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if file.metadata()?.len() != prefix {
            file.set_len(prefix)?;
        }
        let mut queue = VecDeque::new();
        let chunk = self.options.chunk_size.max(1);
        let mut s = prefix;
        while s < plan.size {
            let e = (s + chunk).min(plan.size);
            queue.push_back((s, e));
            s = e;
        }
        let url =
            Url::parse(&plan.url).map_err(|e| HubError::Failed(format!("bad file URL: {e}")))?;
        let reorder = Arc::new(Reorder::new(prefix));
        let (written_tx, written_rx) = watch::channel(prefix);
        let check = Check::of(&plan);
        let file = Arc::new(file);
        let (r, size) = (reorder.clone(), plan.size);
        let finished = tokio::task::spawn_blocking(move || {
            write_in_order(file, &path, prefix, size, check, &r, written_tx)
        });
        Ok((
            Transfer {
                plan,
                url,
                queue: Mutex::new(queue),
                reorder,
                written: written_rx,
            },
            finished,
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
            // Stay within the window past the written prefix, so memory stays bounded.
            let mut written = t.written.clone();
            tokio::select! {
                _ = cancel.cancelled() => return Err(HubError::Cancelled),
                r = written.wait_for(|&w| start < w.saturating_add(window)) => {
                    if r.is_err() {
                        return Err(HubError::Failed("the writer stopped".into()));
                    }
                }
            }
            let _permit = tokio::select! {
                _ = cancel.cancelled() => return Err(HubError::Cancelled),
                p = self.connections.clone().acquire_owned() => p.map_err(|_| HubError::Cancelled)?,
            };
            self.fetch_range(t, start, end, cancel).await?;
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

    /// One request for `[pos, end)`, advancing `pos` past every byte received; the pieces go
    /// to the writer as they arrive.
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
        while *pos < end {
            let chunk = tokio::select! {
                _ = cancel.cancelled() => return Err(HubError::Cancelled),
                r = tokio::time::timeout(stall, resp.chunk()) => r,
            };
            match chunk {
                Err(_) => {
                    return Err(HubError::Transient(format!(
                        "the connection stalled for {}s",
                        stall.as_secs()
                    )))
                }
                Ok(Err(e)) => return Err(transport(e)),
                Ok(Ok(None)) => {
                    return Err(HubError::Transient(
                        "the server closed the connection early".into(),
                    ))
                }
                Ok(Ok(Some(mut chunk))) => {
                    chunk.truncate((end - *pos) as usize);
                    let n = chunk.len() as u64;
                    // What arrived before a fault is good: the next attempt resumes after it.
                    t.reorder.push(*pos, chunk);
                    *pos += n;
                    self.progress.downloaded.fetch_add(n, Ordering::Relaxed);
                    crate::metrics::download_bytes(n);
                }
            }
        }
        Ok(())
    }
}

/// Resolves once the writer has stopped (it drops its end of `written`).
async fn writer_stopped(written: &watch::Receiver<u64>) {
    let mut w = written.clone();
    while w.changed().await.is_ok() {}
}

/// The writer: appends the pieces in file order from `start`, hands each to the hasher, and
/// publishes how far it got. Returns the bytes written in all and, when the file is hashed
/// and complete, its sha256.
fn write_in_order(
    file: Arc<File>,
    path: &Path,
    start: u64,
    size: u64,
    check: Option<Check>,
    reorder: &Reorder,
    written: watch::Sender<u64>,
) -> Result<(u64, Option<String>), HubError> {
    let (tx, hasher) = if let Some(check) = check {
        let (tx, rx) = std_mpsc::sync_channel::<Bytes>(HASH_QUEUE);
        let f = file.clone();
        let h = std::thread::Builder::new()
            .name("millm-sha256".into())
            .spawn(move || hash_in_order(&f, start, size, check, rx))
            .map_err(|e| HubError::Failed(format!("cannot start the hasher: {e}")))?;
        (Some(tx), Some(h))
    } else {
        (None, None)
    };
    let mut pos = start;
    let result = (|| -> Result<(), HubError> {
        loop {
            let pieces = reorder.take(WRITE_BATCH);
            if pieces.is_empty() {
                return Ok(());
            }
            for (offset, piece) in pieces {
                debug_assert_eq!(offset, pos);
                if let Err(e) = file.write_all_at(&piece, offset) {
                    return Err(disk_error(e, path, size - pos));
                }
                pos += piece.len() as u64;
                if let Some(tx) = &tx {
                    if tx.send(piece).is_err() {
                        return Err(HubError::Failed("the hasher stopped".into()));
                    }
                }
            }
            let _ = written.send(pos);
        }
    })();
    // Nothing more will be taken: pieces still arriving are dropped.
    reorder.close();
    drop(tx);
    let digest = match hasher {
        Some(h) => h
            .join()
            .map_err(|_| HubError::Failed("the hasher failed".into()))??,
        None => None,
    };
    result?;
    Ok((pos, digest.filter(|_| pos == size)))
}

/// A full disk (or quota) while writing becomes `InsufficientDisk` (`download_all` widens
/// `required` to the whole download); what was written stays, a true prefix, for a retry
/// once there is room.
fn disk_error(e: std::io::Error, path: &Path, still_needed: u64) -> HubError {
    use std::io::ErrorKind;
    if !matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) {
        return e.into();
    }
    HubError::InsufficientDisk {
        required: still_needed,
        available: fs4::available_space(path).unwrap_or(0),
    }
}

/// What a finished file's bytes must hash to: its identity is the sha256 of an LFS file, the
/// git blob sha1 of a plain git file.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    Sha256,
    GitSha1,
}

impl Check {
    fn of(plan: &FilePlan) -> Option<Check> {
        if plan.lfs && is_sha256(&plan.identity) {
            Some(Check::Sha256)
        } else if !plan.lfs && is_git_sha1(&plan.identity) {
            Some(Check::GitSha1)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Check::Sha256 => "sha256",
            Check::GitSha1 => "git-sha1",
        }
    }
}

enum Hasher {
    Sha256(Sha256),
    GitSha1(sha1::Sha1),
}

impl Hasher {
    fn new(check: Check, size: u64) -> Self {
        match check {
            Check::Sha256 => Hasher::Sha256(Sha256::new()),
            Check::GitSha1 => {
                let mut h = sha1::Sha1::new();
                h.update(format!("blob {size}\0"));
                Hasher::GitSha1(h)
            }
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::GitSha1(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::GitSha1(h) => hex::encode(h.finalize()),
        }
    }
}

/// The hasher: the prefix an earlier run left is read once from disk, then every piece as the
/// writer hands it over, in order. `None` when the transfer stopped before the end.
fn hash_in_order(
    file: &File,
    prefix: u64,
    size: u64,
    check: Check,
    rx: std_mpsc::Receiver<Bytes>,
) -> Result<Option<String>, HubError> {
    let mut hasher = Hasher::new(check, size);
    let mut buf = vec![0u8; (4 << 20).min(prefix as usize)];
    let mut next = 0u64;
    while next < prefix {
        let n = ((prefix - next) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], next)?;
        hasher.update(&buf[..n]);
        next += n as u64;
    }
    drop(buf);
    for piece in rx {
        hasher.update(&piece);
        next += piece.len() as u64;
    }
    Ok((next == size).then(|| hasher.finish()))
}

/// The bytes of an `.incomplete` file a download can resume from: its length (it is always a
/// prefix of the blob), or nothing when it is missing or longer than the blob.
fn resumable_prefix(incomplete: &Path, size: u64) -> u64 {
    match std::fs::metadata(incomplete) {
        Ok(meta) if meta.len() <= size => meta.len(),
        _ => 0,
    }
}

enum FlockAttempt {
    Taken(File),
    Busy,
    Unsupported,
}

fn try_flock(path: &Path) -> Result<FlockAttempt, HubError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // `flock(LOCK_EX | LOCK_NB)`, as Python's `filelock` takes it; released on close.
    match fs4::fs_std::FileExt::try_lock_exclusive(&file) {
        Ok(true) => Ok(FlockAttempt::Taken(file)),
        Ok(false) => Ok(FlockAttempt::Busy),
        Err(e)
            if e.kind() == std::io::ErrorKind::Unsupported
                || e.raw_os_error() == Some(libc::ENOLCK) =>
        {
            Ok(FlockAttempt::Unsupported)
        }
        Err(e) => Err(e.into()),
    }
}

/// Checks the digest and moves the finished file into `blobs/`, synced to disk before and after
/// the rename, so that only a verified file ever has a blob's name; a mismatch deletes it.
fn finish(cache: &RepoCache, plan: &FilePlan, digest: Option<String>) -> Result<(), HubError> {
    let incomplete = cache.incomplete(&plan.identity);
    if let Some(check) = Check::of(plan) {
        let actual = digest.unwrap_or_default();
        if !actual.eq_ignore_ascii_case(&plan.identity) {
            let _ = std::fs::remove_file(&incomplete);
            return Err(HubError::Checksum {
                path: plan.path.clone(),
                algorithm: check.name(),
                expected: plan.identity.clone(),
                actual,
            });
        }
    }
    let len = std::fs::metadata(&incomplete)?.len();
    if len != plan.size {
        let _ = std::fs::remove_file(&incomplete);
        return Err(HubError::Failed(format!(
            "{} has {len} bytes but the Hub announced {}",
            plan.path, plan.size
        )));
    }
    rename_durably(&incomplete, &cache.blob(&plan.identity))?;
    Ok(())
}

/// A real error wins over the `Cancelled` its siblings return once it stopped them.
fn prefer(current: Option<HubError>, new: HubError) -> HubError {
    match current {
        Some(HubError::Cancelled) | None => new,
        Some(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_pushed_out_of_order_are_taken_in_order_and_overlaps_trimmed() {
        let r = Reorder::new(100);
        r.push(130, Bytes::from_static(b"DDDD"));
        r.push(110, Bytes::from_static(b"BBBBBBBBBB"));
        r.push(100, Bytes::from_static(b"AAAAAAAAAA"));
        // Overlaps what is already queued (a retry that re-sent bytes): only the new part.
        r.push(118, Bytes::from_static(b"bbCCCCCCCCCC"));
        let got = r.take(usize::MAX);
        let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, vec![100, 110, 120, 130]);
        let bytes: Vec<u8> = got.iter().flat_map(|(_, p)| p.to_vec()).collect();
        assert_eq!(bytes, b"AAAAAAAAAABBBBBBBBBBCCCCCCCCCCDDDD");
        // A gap: nothing to take until it is filled or the transfer ends.
        r.push(140, Bytes::from_static(b"F"));
        r.close();
        assert!(r.take(usize::MAX).is_empty());
    }

    #[test]
    fn the_writer_appends_in_order_and_hashes_a_resumed_prefix_from_disk_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.incomplete");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        // An earlier run (or the Python tools) left the first 30,000 bytes.
        std::fs::write(&path, &data[..30_000]).unwrap();
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap(),
        );
        let reorder = Reorder::new(30_000);
        // Out of order, as parallel ranges arrive.
        for (a, b) in [(70_000, 100_000), (30_000, 50_000), (50_000, 70_000)] {
            reorder.push(a, Bytes::copy_from_slice(&data[a as usize..b]));
        }
        reorder.close();
        let (tx, rx) = watch::channel(30_000);
        let (written, digest) = write_in_order(
            file,
            &path,
            30_000,
            100_000,
            Some(Check::Sha256),
            &reorder,
            tx,
        )
        .unwrap();
        assert_eq!(written, 100_000);
        assert_eq!(*rx.borrow(), 100_000);
        assert_eq!(digest.unwrap(), hex::encode(Sha256::digest(&data)));
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn a_gap_leaves_a_true_prefix_and_no_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.incomplete");
        let file = Arc::new(File::create(&path).unwrap());
        let reorder = Reorder::new(0);
        reorder.push(0, Bytes::from_static(b"0123"));
        reorder.push(8, Bytes::from_static(b"89"));
        reorder.close();
        let (tx, _rx) = watch::channel(0);
        let (written, digest) =
            write_in_order(file, &path, 0, 10, Some(Check::Sha256), &reorder, tx).unwrap();
        assert_eq!((written, digest), (4, None));
        assert_eq!(std::fs::read(&path).unwrap(), b"0123");
    }

    #[test]
    fn the_python_tools_lock_on_a_blob_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".locks/models--o--n/abc.lock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Another holder, as the Python client's `filelock` takes it: flock on its own open file.
        use fs4::fs_std::FileExt;
        let other = File::create(&path).unwrap();
        assert!(other.try_lock_exclusive().unwrap());
        assert!(matches!(try_flock(&path).unwrap(), FlockAttempt::Busy));
        drop(other);
        let FlockAttempt::Taken(mine) = try_flock(&path).unwrap() else {
            panic!("the lock is free once the other holder closes it");
        };
        // And while miLLM holds it, the other side waits.
        let other = File::open(&path).unwrap();
        assert!(!other.try_lock_exclusive().unwrap());
        drop(mine);
    }

    #[test]
    fn an_incomplete_file_resumes_from_its_length_unless_longer_than_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let inc = dir.path().join("x.incomplete");
        assert_eq!(resumable_prefix(&inc, 100), 0, "nothing to resume");
        std::fs::write(&inc, vec![1u8; 80]).unwrap();
        assert_eq!(resumable_prefix(&inc, 100), 80);
        assert_eq!(resumable_prefix(&inc, 80), 80, "complete, not yet verified");
        assert_eq!(resumable_prefix(&inc, 50), 0, "longer than the blob");
    }
}
