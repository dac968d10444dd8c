//! An in-process fake Hugging Face Hub on `127.0.0.1:0`, speaking the protocol of
//! `shared/HUB.md`: metadata (`?blobs=true` siblings with sizes and LFS sha256, `gated`,
//! `cardData`, `config`, `safetensors`), `resolve` (200 + `ETag` for small files, 302 to a CDN
//! path for LFS files with `X-Linked-Etag` / `X-Linked-Size` / `X-Repo-Commit`), Range (206,
//! `Content-Range`) and the `X-Error-Code` table.
//!
//! The CDN lives on the same server but is addressed as another origin (`localhost` instead
//! of `127.0.0.1`), so a client that leaks `Authorization` to it can be caught.
//!
//! Fault injection: a per-connection throttle (per repo or for all), dropping the connection
//! after N bytes for the next K transfers, 503 for the next K requests, wrong bytes (a repo
//! whose LFS files do not match their sha256), gated repos and valid/invalid tokens. Counters
//! tell a test what was served.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// A token that can read every repo, gated ones included.
pub const GOOD_TOKEN: &str = "hf_fake_good_token";
/// A valid token whose account has not accepted any gated repo's terms.
pub const NO_ACCESS_TOKEN: &str = "hf_fake_no_access_token";

/// Extensions stored in LFS, as a Hub repo's `.gitattributes` would say.
const LFS_EXTENSIONS: &[&str] = &[
    "safetensors",
    "bin",
    "pt",
    "pth",
    "onnx",
    "msgpack",
    "h5",
    "gguf",
    "png",
    "jpg",
    "model",
    "ot",
];

/// One file of a fake repo.
#[derive(Clone)]
pub struct FakeFile {
    pub bytes: Bytes,
    /// The bytes actually sent (differs from `bytes` in a corrupt repo).
    served: Bytes,
    pub lfs: bool,
    pub sha256: String,
    pub git_sha1: String,
}

/// A repo the fake Hub serves.
#[derive(Clone)]
pub struct FakeRepo {
    pub id: String,
    pub commit: String,
    pub gated: bool,
    /// Bytes per second per connection for this repo's file transfers.
    pub throttle_bps: Option<u64>,
    pub files: BTreeMap<String, FakeFile>,
    pub card_data: Value,
    pub tags: Vec<String>,
    corrupt: bool,
    /// Files served with one byte flipped whatever their kind.
    corrupt_files: Vec<String>,
}

impl FakeRepo {
    /// An empty repo; its commit is derived from its id.
    pub fn new(id: &str) -> Self {
        FakeRepo {
            id: id.to_string(),
            commit: hex::encode(Sha1::digest(format!("commit of {id}"))),
            gated: false,
            throttle_bps: None,
            files: BTreeMap::new(),
            card_data: json!({"license": "apache-2.0", "language": ["en"]}),
            tags: vec![
                "transformers".into(),
                "safetensors".into(),
                "llama".into(),
                "text-generation".into(),
            ],
            corrupt: false,
            corrupt_files: Vec::new(),
        }
    }

    /// A repo holding every file under `dir` (paths relative to it).
    pub fn from_dir(id: &str, dir: &Path) -> io::Result<Self> {
        let mut repo = FakeRepo::new(id);
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path
                        .strip_prefix(dir)
                        .map_err(io::Error::other)?
                        .to_string_lossy()
                        .replace('\\', "/");
                    repo = repo.file(&rel, std::fs::read(&path)?);
                }
            }
        }
        Ok(repo)
    }

    /// Adds (or replaces) a file; LFS or not by its extension.
    pub fn file(mut self, path: &str, bytes: impl Into<Bytes>) -> Self {
        let bytes: Bytes = bytes.into();
        let ext = path.rsplit('.').next().unwrap_or("");
        let lfs = LFS_EXTENSIONS.contains(&ext);
        let mut git = Sha1::new();
        git.update(format!("blob {}\0", bytes.len()));
        git.update(&bytes);
        let file = FakeFile {
            served: bytes.clone(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            git_sha1: hex::encode(git.finalize()),
            bytes,
            lfs,
        };
        self.files.insert(path.to_string(), file);
        self.commit = self.recompute_commit();
        self.apply_corruption();
        self
    }

    /// Files need a token with access; metadata stays public, as on the Hub.
    pub fn gated(mut self) -> Self {
        self.gated = true;
        self
    }

    /// Caps every connection transferring this repo's files.
    pub fn throttled(mut self, bytes_per_second: u64) -> Self {
        self.throttle_bps = Some(bytes_per_second);
        self
    }

    /// LFS files are served with one byte flipped: they no longer hash to their sha256.
    pub fn corrupt(mut self) -> Self {
        self.corrupt = true;
        self.apply_corruption();
        self
    }

    /// `path` is served with one byte flipped (a plain git file no longer matches its sha1).
    pub fn corrupt_file(mut self, path: &str) -> Self {
        self.corrupt_files.push(path.to_string());
        self.apply_corruption();
        self
    }

    fn apply_corruption(&mut self) {
        for (path, f) in self.files.iter_mut() {
            let flip = (self.corrupt && f.lfs) || self.corrupt_files.contains(path);
            if flip && !f.bytes.is_empty() {
                let mut v = f.bytes.to_vec();
                let mid = v.len() / 2;
                v[mid] ^= 0xff;
                f.served = Bytes::from(v);
            } else {
                f.served = f.bytes.clone();
            }
        }
    }

    fn recompute_commit(&self) -> String {
        let mut h = Sha1::new();
        h.update(self.id.as_bytes());
        for (p, f) in &self.files {
            h.update(p.as_bytes());
            h.update(f.sha256.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// The sha256 of a file, as `X-Linked-Etag` gives it.
    pub fn sha256_of(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(|f| f.sha256.as_str())
    }

    /// What the metadata endpoint answers.
    fn metadata(&self) -> Value {
        let siblings: Vec<Value> = self
            .files
            .iter()
            .map(|(p, f)| {
                let mut s = json!({"rfilename": p, "size": f.bytes.len(), "blobId": f.git_sha1});
                if f.lfs {
                    s["lfs"] =
                        json!({"sha256": f.sha256, "size": f.bytes.len(), "pointerSize": 134});
                }
                s
            })
            .collect();
        let mut out = json!({
            "_id": hex::encode(&Sha1::digest(self.id.as_bytes())[..12]),
            "id": self.id,
            "modelId": self.id,
            "author": self.id.split('/').next(),
            "sha": self.commit,
            "lastModified": "2024-10-01T12:00:00.000Z",
            "private": false,
            "disabled": false,
            "gated": if self.gated { json!("manual") } else { json!(false) },
            "downloads": 1234,
            "likes": 56,
            "tags": self.tags,
            "pipeline_tag": "text-generation",
            "library_name": "transformers",
            "cardData": self.card_data,
            "siblings": siblings,
        });
        if let Some(cfg) = self
            .files
            .get("config.json")
            .and_then(|f| serde_json::from_slice::<Value>(&f.bytes).ok())
        {
            let mut c = json!({});
            for key in ["architectures", "model_type", "auto_map"] {
                if let Some(v) = cfg.get(key) {
                    c[key] = v.clone();
                }
            }
            out["config"] = c;
        }
        let mut params: BTreeMap<String, u64> = BTreeMap::new();
        for (p, f) in &self.files {
            if !p.contains('/') && p.ends_with(".safetensors") {
                for (dtype, n) in safetensors_counts(&f.bytes) {
                    *params.entry(dtype).or_default() += n;
                }
            }
        }
        if !params.is_empty() {
            let total: u64 = params.values().sum();
            out["safetensors"] = json!({"parameters": params, "total": total});
        }
        out
    }
}

/// Parameter counts per dtype from a safetensors header.
fn safetensors_counts(bytes: &[u8]) -> Vec<(String, u64)> {
    if bytes.len() < 8 {
        return Vec::new();
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let Some(header) = bytes.get(8..8 + n) else {
        return Vec::new();
    };
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(header) else {
        return Vec::new();
    };
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for (name, t) in map {
        if name == "__metadata__" {
            continue;
        }
        let dtype = t["dtype"].as_str().unwrap_or("F32").to_string();
        let numel: u64 = t["shape"]
            .as_array()
            .map(|s| s.iter().filter_map(Value::as_u64).product())
            .unwrap_or(0);
        *out.entry(dtype).or_default() += numel;
    }
    out.into_iter().collect()
}

/// What the fake Hub has served, for tests to read.
#[derive(Debug, Default)]
pub struct HubStats {
    pub requests: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// File transfers whose body is still being sent.
    pub open_transfers: AtomicU64,
    pub transfers_started: AtomicU64,
    /// CDN requests that carried an `Authorization` header (must stay 0).
    pub cdn_requests_with_auth: AtomicU64,
    /// `(path, first byte)` of every Range request for a file.
    pub ranges: Mutex<Vec<(String, u64)>>,
}

impl HubStats {
    pub fn open_transfers(&self) -> u64 {
        self.open_transfers.load(Ordering::SeqCst)
    }
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
    /// Range requests for `path` that did not start at byte 0.
    pub fn resumed_ranges(&self, path: &str) -> Vec<u64> {
        self.ranges
            .lock()
            .expect("stats lock")
            .iter()
            .filter(|(p, s)| p == path && *s > 0)
            .map(|(_, s)| *s)
            .collect()
    }
}

#[derive(Default)]
struct Faults {
    fail_next: u64,
    drop_next: u64,
    drop_after: u64,
    stall_next: u64,
    stall_after: u64,
    throttle_bps: Option<u64>,
}

struct HubState {
    repos: Mutex<HashMap<String, FakeRepo>>,
    tokens: Mutex<HashMap<String, bool>>,
    faults: Mutex<Faults>,
    stats: Arc<HubStats>,
    port: u16,
}

/// A running fake Hub; stops when dropped.
pub struct FakeHub {
    addr: SocketAddr,
    state: Arc<HubState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeHub {
    /// Starts on `127.0.0.1:0` with the tokens [`GOOD_TOKEN`] and [`NO_ACCESS_TOKEN`].
    pub async fn start() -> io::Result<FakeHub> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut tokens = HashMap::new();
        tokens.insert(GOOD_TOKEN.to_string(), true);
        tokens.insert(NO_ACCESS_TOKEN.to_string(), false);
        let state = Arc::new(HubState {
            repos: Mutex::new(HashMap::new()),
            tokens: Mutex::new(tokens),
            faults: Mutex::new(Faults::default()),
            stats: Arc::new(HubStats::default()),
            port: addr.port(),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeHub {
            addr,
            state,
            server,
        })
    }

    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serves `repo` (replacing one of the same id); returns its commit.
    pub fn add_repo(&self, repo: FakeRepo) -> String {
        let commit = repo.commit.clone();
        self.state
            .repos
            .lock()
            .expect("repos lock")
            .insert(repo.id.clone(), repo);
        commit
    }

    /// A copy of a served repo.
    pub fn repo(&self, id: &str) -> Option<FakeRepo> {
        self.state
            .repos
            .lock()
            .expect("repos lock")
            .get(id)
            .cloned()
    }

    /// Changes a served repo's per-connection throttle.
    pub fn set_repo_throttle(&self, id: &str, bytes_per_second: Option<u64>) {
        if let Some(r) = self.state.repos.lock().expect("repos lock").get_mut(id) {
            r.throttle_bps = bytes_per_second;
        }
    }

    /// Caps every file transfer's connection (`None` lifts the cap).
    pub fn set_throttle(&self, bytes_per_second: Option<u64>) {
        self.state.faults.lock().expect("faults lock").throttle_bps = bytes_per_second;
    }

    /// The next `count` requests of any kind answer 503.
    pub fn fail_next_requests(&self, count: u64) {
        self.state.faults.lock().expect("faults lock").fail_next = count;
    }

    /// The next `count` file transfers drop their connection after `after_bytes` bytes.
    /// The next `count` transfers longer than `after_bytes` go silent after that many bytes,
    /// keeping the connection open (a stalled connection).
    pub fn stall_next_transfers(&self, count: u64, after_bytes: u64) {
        let mut f = self.state.faults.lock().expect("faults lock");
        f.stall_next = count;
        f.stall_after = after_bytes;
    }

    pub fn drop_next_transfers(&self, count: u64, after_bytes: u64) {
        let mut f = self.state.faults.lock().expect("faults lock");
        f.drop_next = count;
        f.drop_after = after_bytes;
    }

    /// Adds a token: `access` says whether it may read gated repos.
    pub fn add_token(&self, token: &str, access: bool) {
        self.state
            .tokens
            .lock()
            .expect("tokens lock")
            .insert(token.to_string(), access);
    }

    pub fn stats(&self) -> &HubStats {
        &self.state.stats
    }
}

fn error(status: StatusCode, code: Option<&str>, message: &str) -> Response {
    let mut resp = (status, axum::Json(json!({"error": message}))).into_response();
    if let Some(code) = code {
        resp.headers_mut().insert(
            "x-error-code",
            HeaderValue::from_str(code).expect("ascii code"),
        );
    }
    resp.headers_mut().insert(
        "x-error-message",
        HeaderValue::from_str(message).unwrap_or(HeaderValue::from_static("error")),
    );
    resp
}

fn decode(seg: &str) -> String {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8_lossy()
        .to_string()
}

/// `None`: no token; `Some(None)`: a token the Hub rejects; `Some(Some(access))`: valid.
fn token_of(state: &HubState, headers: &HeaderMap) -> Option<Option<bool>> {
    let raw = headers.get("authorization")?.to_str().ok()?;
    let token = raw.strip_prefix("Bearer ").unwrap_or(raw).trim();
    Some(
        state
            .tokens
            .lock()
            .expect("tokens lock")
            .get(token)
            .copied(),
    )
}

async fn handle(
    State(state): State<Arc<HubState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    state.stats.requests.fetch_add(1, Ordering::SeqCst);
    {
        let mut f = state.faults.lock().expect("faults lock");
        if f.fail_next > 0 {
            f.fail_next -= 1;
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "Service temporarily unavailable",
            );
        }
    }
    let segs: Vec<String> = uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    if let ["cdn", owner, name, sha] = segs.as_slice() {
        if headers.contains_key("authorization") {
            state
                .stats
                .cdn_requests_with_auth
                .fetch_add(1, Ordering::SeqCst);
        }
        return cdn(&state, &format!("{owner}/{name}"), sha, &method, &headers);
    }
    let token = token_of(&state, &headers);
    if matches!(token, Some(None)) {
        // A token the Hub rejects: 401 without an error code, whatever the repo.
        return error(
            StatusCode::UNAUTHORIZED,
            None,
            "Invalid credentials in Authorization header",
        );
    }
    let access = matches!(token, Some(Some(true)));
    let has_token = token.is_some();
    match segs.as_slice() {
        ["api", "models", owner, name, "revision", rev] => {
            metadata(&state, &format!("{owner}/{name}"), rev, has_token)
        }
        ["api", "models", owner, name] => {
            metadata(&state, &format!("{owner}/{name}"), "main", has_token)
        }
        [owner, name, "resolve", rev, path @ ..] if !path.is_empty() => {
            let repo_id = format!("{owner}/{name}");
            resolve(
                &state,
                &repo_id,
                rev,
                &path.join("/"),
                &method,
                &headers,
                has_token,
                access,
            )
        }
        _ => error(StatusCode::NOT_FOUND, None, "Not found"),
    }
}

/// The repo at `rev`, or the Hub's error answer (boxed: a response is large).
fn find_repo(
    state: &HubState,
    id: &str,
    rev: &str,
    has_token: bool,
) -> Result<FakeRepo, Box<Response>> {
    let repo = state.repos.lock().expect("repos lock").get(id).cloned();
    let Some(repo) = repo else {
        return Err(Box::new(if has_token {
            error(
                StatusCode::NOT_FOUND,
                Some("RepoNotFound"),
                "Repository not found",
            )
        } else {
            error(
                StatusCode::UNAUTHORIZED,
                Some("RepoNotFound"),
                "Repository not found",
            )
        }));
    };
    if rev != "main" && rev != repo.commit {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            Some("RevisionNotFound"),
            &format!("Invalid rev id: {rev}"),
        )));
    }
    Ok(repo)
}

fn metadata(state: &HubState, id: &str, rev: &str, has_token: bool) -> Response {
    match find_repo(state, id, rev, has_token) {
        Ok(repo) => axum::Json(repo.metadata()).into_response(),
        Err(resp) => *resp,
    }
}

#[allow(clippy::too_many_arguments)]
fn resolve(
    state: &HubState,
    id: &str,
    rev: &str,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
    has_token: bool,
    access: bool,
) -> Response {
    let repo = match find_repo(state, id, rev, has_token) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    if repo.gated && !access {
        let msg = format!(
            "Access to model {id} is restricted. You must have access to it and be authenticated."
        );
        let status = if has_token {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        return error(status, Some("GatedRepo"), &msg);
    }
    let Some(file) = repo.files.get(path).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            Some("EntryNotFound"),
            &format!("{path} does not exist"),
        );
    };
    if file.lfs {
        let location = format!("http://localhost:{}/cdn/{id}/{}", state.port, file.sha256);
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::FOUND;
        let h = resp.headers_mut();
        h.insert(
            "location",
            HeaderValue::from_str(&location).expect("ascii URL"),
        );
        h.insert(
            "x-linked-etag",
            HeaderValue::from_str(&format!("\"{}\"", file.sha256)).expect("hex"),
        );
        h.insert("x-linked-size", HeaderValue::from(file.bytes.len() as u64));
        h.insert(
            "etag",
            HeaderValue::from_str(&format!("\"{}\"", file.sha256)).expect("hex"),
        );
        h.insert(
            "x-repo-commit",
            HeaderValue::from_str(&repo.commit).expect("hex"),
        );
        return resp;
    }
    let mut resp = serve(state, &repo, path, &file, method, headers);
    let h = resp.headers_mut();
    h.insert(
        "etag",
        HeaderValue::from_str(&format!("\"{}\"", file.git_sha1)).expect("hex"),
    );
    h.insert(
        "x-repo-commit",
        HeaderValue::from_str(&repo.commit).expect("hex"),
    );
    resp
}

fn cdn(state: &HubState, id: &str, sha: &str, method: &Method, headers: &HeaderMap) -> Response {
    let repo = state.repos.lock().expect("repos lock").get(id).cloned();
    let found = repo.as_ref().and_then(|r| {
        r.files
            .iter()
            .find(|(_, f)| f.lfs && f.sha256 == sha)
            .map(|(p, f)| (p.clone(), f.clone()))
    });
    match (repo, found) {
        (Some(repo), Some((path, file))) => serve(state, &repo, &path, &file, method, headers),
        _ => error(StatusCode::NOT_FOUND, None, "NoSuchKey"),
    }
}

/// Serves a file's bytes: Range, throttle, dropped connections, counters.
fn serve(
    state: &HubState,
    repo: &FakeRepo,
    path: &str,
    file: &FakeFile,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let total = file.served.len() as u64;
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| {
            let (a, b) = v.split_once('-')?;
            let start: u64 = a.trim().parse().ok()?;
            let end: u64 = if b.trim().is_empty() {
                total.saturating_sub(1)
            } else {
                b.trim().parse().ok()?
            };
            Some((start, end.min(total.saturating_sub(1))))
        });
    let (start, end, status) = match range {
        Some((s, _)) if s >= total && total > 0 => {
            let mut r = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                None,
                "Range not satisfiable",
            );
            r.headers_mut().insert(
                "content-range",
                HeaderValue::from_str(&format!("bytes */{total}")).expect("ascii"),
            );
            return r;
        }
        Some((s, e)) if s <= e => (s, e + 1, StatusCode::PARTIAL_CONTENT),
        _ => (0, total, StatusCode::OK),
    };
    let mut builder = Response::builder()
        .status(status)
        .header("content-length", end - start)
        .header("accept-ranges", "bytes")
        .header("content-type", "application/octet-stream");
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            "content-range",
            format!("bytes {start}-{}/{total}", end - 1),
        );
    }
    if method == Method::HEAD {
        return builder.body(Body::empty()).expect("valid response");
    }
    if range.is_some() {
        state
            .stats
            .ranges
            .lock()
            .expect("stats lock")
            .push((path.to_string(), start));
    }
    let (throttle, drop_after, stall_after) = {
        let mut f = state.faults.lock().expect("faults lock");
        let stall_after = if f.stall_next > 0 && end - start > f.stall_after {
            f.stall_next -= 1;
            Some(f.stall_after)
        } else {
            None
        };
        // Only a transfer long enough to be cut counts against the fault.
        let drop_after = if f.drop_next > 0 && end - start > f.drop_after {
            f.drop_next -= 1;
            Some(f.drop_after)
        } else {
            None
        };
        (
            repo.throttle_bps.or(f.throttle_bps),
            drop_after,
            stall_after,
        )
    };
    state.stats.transfers_started.fetch_add(1, Ordering::SeqCst);
    let stream = Transfer {
        data: file.served.slice(start as usize..end as usize),
        pos: 0,
        throttle,
        drop_after,
        stall_after,
        began: Instant::now(),
        stats: state.stats.clone(),
        sleeping: None,
    };
    state.stats.open_transfers.fetch_add(1, Ordering::SeqCst);
    builder
        .body(Body::from_stream(stream))
        .expect("valid response")
}

/// A file body being sent; counts itself open until dropped.
struct Transfer {
    data: Bytes,
    pos: usize,
    throttle: Option<u64>,
    drop_after: Option<u64>,
    stall_after: Option<u64>,
    began: Instant,
    stats: Arc<HubStats>,
    sleeping: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.stats.open_transfers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl futures::Stream for Transfer {
    type Item = io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.pos >= this.data.len() {
            return Poll::Ready(None);
        }
        if let Some(limit) = this.drop_after {
            if this.pos as u64 >= limit {
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "fault: connection dropped",
                ))));
            }
        }
        if let Some(limit) = this.stall_after {
            if this.pos as u64 >= limit {
                // Silent but open: nothing wakes this stream again.
                return Poll::Pending;
            }
        }
        let mut n = match this.throttle {
            Some(bps) => ((bps / 50) as usize).clamp(1024, 256 << 10),
            None => 256 << 10,
        };
        n = n.min(this.data.len() - this.pos);
        if let Some(limit) = this.drop_after.or(this.stall_after) {
            n = n.min((limit - this.pos as u64) as usize).max(1);
        }
        if let Some(bps) = this.throttle {
            // Sent so far must not run ahead of the rate.
            let due = this.began + Duration::from_secs_f64(this.pos as f64 / bps as f64);
            if Instant::now() < due {
                let sleep = this
                    .sleeping
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due.into())));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            this.sleeping = None;
        }
        let chunk = this.data.slice(this.pos..this.pos + n);
        this.pos += n;
        this.stats.bytes_sent.fetch_add(n as u64, Ordering::SeqCst);
        Poll::Ready(Some(Ok(chunk)))
    }
}
