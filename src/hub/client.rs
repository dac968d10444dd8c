//! The Hub's HTTP protocol on reqwest: metadata, `resolve` without following redirects, Range
//! requests, and errors mapped from `X-Error-Code` first, then the status
//! (<https://huggingface.co/docs/huggingface_hub/package_reference/utilities#huggingface_hub.utils.hf_raise_for_status>).
//!
//! Redirects are never followed by reqwest: an LFS file's 302 goes to another origin (the CDN),
//! and the `Authorization` header must only ever reach `HF_ENDPOINT`'s origin.

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_LENGTH, ETAG, LOCATION, RANGE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::HubError;
use crate::config::Secret;
use crate::domain::RepoId;

/// Bounds every metadata request, HEAD and small-file GET.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a transient fault is tried in all.
pub const ATTEMPTS: u32 = 3;
/// The first back-off; each further one doubles.
pub const BACKOFF: Duration = Duration::from_millis(500);
/// Redirect hops followed by hand (a renamed repo answers a relative redirect).
const MAX_HOPS: usize = 5;
/// Largest small file (config, index) read into memory.
const MAX_SMALL_FILE: u64 = 64 << 20;

/// What `quote(x, safe="")` leaves alone in Python: letters, digits and `_.-~`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');

/// One file of a repo as the metadata lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Sibling {
    pub rfilename: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub lfs: Option<LfsInfo>,
}

impl Sibling {
    /// The file's size, from the LFS pointer or the blob size.
    pub fn file_size(&self) -> Option<u64> {
        self.lfs.as_ref().map(|l| l.size).or(self.size)
    }
}

/// The LFS part of a sibling (`?blobs=true`).
#[derive(Debug, Clone, Deserialize)]
pub struct LfsInfo {
    pub sha256: String,
    pub size: u64,
}

/// `safetensors` of the metadata: parameter counts per dtype.
#[derive(Debug, Clone, Deserialize)]
pub struct SafetensorsInfo {
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub total: Option<u64>,
}

/// `GET /api/models/{repo}/revision/{rev}?blobs=true`, the fields used here.
#[derive(Debug, Clone, Deserialize)]
pub struct RepoInfo {
    pub id: Option<String>,
    /// The commit the revision resolves to.
    pub sha: Option<String>,
    #[serde(default)]
    pub siblings: Vec<Sibling>,
    /// `false`, `"auto"` or `"manual"`.
    #[serde(default)]
    pub gated: Value,
    #[serde(default)]
    pub private: bool,
    #[serde(default)]
    pub disabled: bool,
    pub downloads: Option<u64>,
    pub likes: Option<u64>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub pipeline_tag: Option<String>,
    pub library_name: Option<String>,
    #[serde(rename = "cardData")]
    pub card_data: Option<Value>,
    pub config: Option<Value>,
    pub safetensors: Option<SafetensorsInfo>,
}

impl RepoInfo {
    pub fn is_gated(&self) -> bool {
        !matches!(self.gated, Value::Null | Value::Bool(false))
    }
}

/// What a `HEAD` on `resolve` tells about one file.
#[derive(Debug, Clone)]
pub struct FileHead {
    /// The unquoted `X-Linked-Etag` (an LFS file's sha256), else the unquoted `ETag`.
    pub identity: String,
    pub size: Option<u64>,
    pub commit: Option<String>,
    /// Where the bytes are: the CDN `Location`, or the resolve URL itself.
    pub url: Url,
    /// True when the Hub gave `X-Linked-Etag` (LFS or Xet: the identity is the sha256).
    pub lfs: bool,
}

/// A Hub client bound to one endpoint; cheap to clone.
#[derive(Clone, Debug)]
pub struct HubClient {
    http: reqwest::Client,
    endpoint: Url,
    /// Base of every URL, without a trailing slash (a mirror may have a path prefix).
    base: String,
}

impl HubClient {
    /// A client for `endpoint` (`HF_ENDPOINT`). Redirects are followed by hand; HTTP/1.1 only,
    /// so parallel ranges really use several connections.
    pub fn new(endpoint: &str) -> Result<Self, HubError> {
        let url = Url::parse(endpoint)
            .map_err(|e| HubError::Failed(format!("HF_ENDPOINT '{endpoint}' is not a URL: {e}")))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            .tcp_nodelay(true)
            .http1_only()
            .pool_max_idle_per_host(32)
            .user_agent(concat!("millm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HubError::Failed(format!("cannot build the HTTP client: {e}")))?;
        Ok(HubClient {
            http,
            base: endpoint.trim_end_matches('/').to_string(),
            endpoint: url,
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// True when `url` has `HF_ENDPOINT`'s origin: the only place a token may go.
    pub fn is_hub_origin(&self, url: &Url) -> bool {
        url.origin() == self.endpoint.origin()
    }

    fn request(&self, method: Method, url: &Url, token: Option<&Secret>) -> RequestBuilder {
        let req = self.http.request(method, url.clone());
        match token {
            Some(t) if self.is_hub_origin(url) => {
                req.header(AUTHORIZATION, format!("Bearer {}", t.expose()))
            }
            _ => req,
        }
    }

    /// `{endpoint}/api/models/{owner}/{name}/revision/{rev}?blobs=true`.
    pub fn metadata_url(&self, repo: &RepoId, revision: &str) -> Url {
        let raw = format!(
            "{}/api/models/{}/{}/revision/{}?blobs=true",
            self.base,
            repo.owner(),
            repo.name(),
            utf8_percent_encode(revision, SEGMENT)
        );
        Url::parse(&raw).expect("the endpoint is a URL and every part is percent-encoded")
    }

    /// `{endpoint}/{owner}/{name}/resolve/{rev}/{path}`, each path segment percent-encoded.
    pub fn resolve_url(&self, repo: &RepoId, revision: &str, path: &str) -> Url {
        let path = path
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect::<Vec<_>>()
            .join("/");
        let raw = format!(
            "{}/{}/{}/resolve/{}/{}",
            self.base,
            repo.owner(),
            repo.name(),
            utf8_percent_encode(revision, SEGMENT),
            path
        );
        Url::parse(&raw).expect("the endpoint is a URL and every part is percent-encoded")
    }

    /// The revision's metadata, retried on transient faults.
    pub async fn metadata(
        &self,
        repo: &RepoId,
        revision: &str,
        token: Option<&Secret>,
    ) -> Result<RepoInfo, HubError> {
        let url = self.metadata_url(repo, revision);
        let ctx = ErrorContext::new(repo, revision, None, token.is_some());
        retry(ATTEMPTS, BACKOFF, None, |_| async {
            let resp = self
                .request(Method::GET, &url, token)
                .timeout(METADATA_TIMEOUT)
                .send()
                .await
                .map_err(transport)?;
            let resp = ctx.check(resp)?;
            let bytes = read_limited(resp, MAX_SMALL_FILE).await?;
            serde_json::from_slice::<RepoInfo>(&bytes).map_err(|e| {
                HubError::Failed(format!("the Hub's metadata for {repo} is not valid: {e}"))
            })
        })
        .await
    }

    /// `HEAD` on `resolve`, following only relative (same-Hub) redirects: an LFS file's 302 to
    /// the CDN is read, not followed. Retried on transient faults.
    pub async fn head(
        &self,
        repo: &RepoId,
        revision: &str,
        path: &str,
        token: Option<&Secret>,
    ) -> Result<FileHead, HubError> {
        let ctx = ErrorContext::new(repo, revision, Some(path), token.is_some());
        retry(ATTEMPTS, BACKOFF, None, |_| async {
            let mut url = self.resolve_url(repo, revision, path);
            for _ in 0..MAX_HOPS {
                let resp = self
                    .request(Method::HEAD, &url, token)
                    .timeout(METADATA_TIMEOUT)
                    .send()
                    .await
                    .map_err(transport)?;
                let status = resp.status();
                let headers = resp.headers().clone();
                let linked = header_str(&headers, "x-linked-etag").map(unquote_etag);
                let commit = header_str(&headers, "x-repo-commit").map(str::to_string);
                if status.is_redirection() {
                    let location = header_str(&headers, LOCATION.as_str()).ok_or_else(|| {
                        HubError::Failed(format!("the Hub redirected {path} without a Location"))
                    })?;
                    let next = url.join(location).map_err(|e| {
                        HubError::Failed(format!("the Hub redirected {path} to a bad URL: {e}"))
                    })?;
                    if linked.is_none() && self.is_hub_origin(&next) {
                        // A renamed repo: follow the relative redirect on the Hub itself.
                        url = next;
                        continue;
                    }
                    let identity = linked
                        .clone()
                        .or_else(|| header_str(&headers, ETAG.as_str()).map(unquote_etag))
                        .ok_or_else(|| {
                            HubError::Failed(format!("the Hub gave no ETag for {path}"))
                        })?;
                    let size = header_str(&headers, "x-linked-size").and_then(|s| s.parse().ok());
                    return Ok(FileHead {
                        identity,
                        size,
                        commit,
                        url: next,
                        lfs: linked.is_some(),
                    });
                }
                let resp = ctx.check(resp)?;
                let headers = resp.headers();
                let identity = linked
                    .clone()
                    .or_else(|| header_str(headers, ETAG.as_str()).map(unquote_etag))
                    .ok_or_else(|| HubError::Failed(format!("the Hub gave no ETag for {path}")))?;
                let size = header_str(headers, "x-linked-size")
                    .or_else(|| header_str(headers, CONTENT_LENGTH.as_str()))
                    .and_then(|s| s.parse().ok());
                return Ok(FileHead {
                    identity,
                    size,
                    commit,
                    url,
                    lfs: linked.is_some(),
                });
            }
            Err(HubError::Failed(format!("too many redirects for {path}")))
        })
        .await
    }

    /// A small file (config, index) read whole, following redirects by hand. Retried.
    pub async fn get_small(
        &self,
        repo: &RepoId,
        revision: &str,
        path: &str,
        token: Option<&Secret>,
    ) -> Result<Bytes, HubError> {
        let ctx = ErrorContext::new(repo, revision, Some(path), token.is_some());
        let url = self.resolve_url(repo, revision, path);
        retry(ATTEMPTS, BACKOFF, None, |_| async {
            let resp = self.follow(Method::GET, &url, None, token, &ctx).await?;
            read_limited(resp, MAX_SMALL_FILE).await
        })
        .await
    }

    /// Bytes `start..=end` of a file at `url` (a resolve or CDN URL), whether or not the server
    /// honours Range. Retried.
    pub async fn get_range_bytes(
        &self,
        url: &Url,
        start: u64,
        end: u64,
        token: Option<&Secret>,
        ctx: &ErrorContext,
    ) -> Result<Bytes, HubError> {
        retry(ATTEMPTS, BACKOFF, None, |_| async {
            let resp = self
                .follow(Method::GET, url, Some((start, end)), token, ctx)
                .await?;
            let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
            let want = end - start + 1;
            let mut skip = if partial { 0 } else { start };
            let mut out = BytesMut::with_capacity(want.min(1 << 20) as usize);
            let mut resp = resp;
            while (out.len() as u64) < want {
                let chunk = tokio::time::timeout(METADATA_TIMEOUT, resp.chunk())
                    .await
                    .map_err(|_| HubError::Transient("the Hub stopped sending".into()))?
                    .map_err(transport)?;
                let Some(mut chunk) = chunk else { break };
                if skip > 0 {
                    let n = skip.min(chunk.len() as u64);
                    skip -= n;
                    chunk = chunk.slice(n as usize..);
                }
                let room = (want - out.len() as u64) as usize;
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            if (out.len() as u64) < want {
                return Err(HubError::Transient(
                    "the Hub closed the connection early".into(),
                ));
            }
            Ok(out.freeze())
        })
        .await
    }

    /// A GET for a transfer: `bytes=start-end` (inclusive) unless `range` is `None`. One
    /// attempt, no timeout (the caller watches for stalls); redirects followed by hand.
    pub async fn get_transfer(
        &self,
        url: &Url,
        range: Option<(u64, u64)>,
        token: Option<&Secret>,
        ctx: &ErrorContext,
    ) -> Result<Response, HubError> {
        self.follow(Method::GET, url, range, token, ctx).await
    }

    async fn follow(
        &self,
        method: Method,
        url: &Url,
        range: Option<(u64, u64)>,
        token: Option<&Secret>,
        ctx: &ErrorContext,
    ) -> Result<Response, HubError> {
        let mut url = url.clone();
        for _ in 0..MAX_HOPS {
            let mut req = self.request(method.clone(), &url, token);
            if let Some((start, end)) = range {
                req = req.header(RANGE, format!("bytes={start}-{end}"));
            }
            let resp = req.send().await.map_err(transport)?;
            if resp.status().is_redirection() {
                let location = header_str(resp.headers(), LOCATION.as_str())
                    .ok_or_else(|| HubError::Failed("a redirect without a Location".into()))?;
                url = url
                    .join(location)
                    .map_err(|e| HubError::Failed(format!("a redirect to a bad URL: {e}")))?;
                continue;
            }
            if !self.is_hub_origin(&url) && !resp.status().is_success() {
                // The CDN's answers carry no Hub error codes, and a token never went there.
                let status = resp.status();
                return Err(if status.is_server_error() || status.as_u16() == 429 {
                    HubError::Transient(format!("the file server answered {status}"))
                } else {
                    HubError::Failed(format!("the file server answered {status}"))
                });
            }
            return ctx.check(resp);
        }
        Err(HubError::Failed("too many redirects".into()))
    }
}

/// What a request was about, to name it in errors.
#[derive(Debug, Clone)]
pub struct ErrorContext {
    repo: String,
    revision: String,
    path: Option<String>,
    had_token: bool,
}

impl ErrorContext {
    pub fn new(repo: &RepoId, revision: &str, path: Option<&str>, had_token: bool) -> Self {
        ErrorContext {
            repo: repo.to_string(),
            revision: revision.to_string(),
            path: path.map(str::to_string),
            had_token,
        }
    }

    /// Passes a success through; maps an error answer by `X-Error-Code` first, then status.
    pub fn check(&self, resp: Response) -> Result<Response, HubError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        Err(self.error_for(status, resp.headers()))
    }

    pub fn error_for(&self, status: StatusCode, headers: &HeaderMap) -> HubError {
        let repo = self.repo.clone();
        match header_str(headers, "x-error-code") {
            Some("RepoNotFound") => return HubError::RepoNotFound { repo },
            Some("RevisionNotFound") => {
                return HubError::RevisionNotFound {
                    repo,
                    revision: self.revision.clone(),
                }
            }
            Some("EntryNotFound") => {
                return HubError::EntryNotFound {
                    repo,
                    path: self.path.clone().unwrap_or_default(),
                }
            }
            Some("GatedRepo") => {
                return HubError::Gated {
                    repo,
                    had_token: self.had_token,
                }
            }
            Some("DisabledRepo") => {
                return HubError::Failed(format!(
                    "the repository {repo} has been disabled on the Hub"
                ))
            }
            _ => {}
        }
        match status.as_u16() {
            401 | 403 if self.had_token => HubError::InvalidToken,
            401 | 403 => HubError::RepoNotFound { repo },
            404 => match &self.path {
                Some(path) => HubError::EntryNotFound {
                    repo,
                    path: path.clone(),
                },
                None => HubError::RepoNotFound { repo },
            },
            408 | 429 => HubError::Transient(format!("the Hub answered {status}")),
            s if s >= 500 => HubError::Transient(format!("the Hub answered {status}")),
            _ => HubError::Failed(format!("the Hub answered {status}")),
        }
    }
}

/// A transport error: connection refused or reset, timeout, truncated body — all transient.
pub fn transport(err: reqwest::Error) -> HubError {
    // Without the URL: it never holds a token, but it is noise in a user-facing message.
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_body() || err.is_decode() {
        "the connection broke while receiving"
    } else {
        "the request failed"
    };
    HubError::Transient(format!("{kind}: {}", err.without_url()))
}

/// Runs `f` up to `attempts` times while it fails transiently, sleeping `backoff`, 2×, 4×…
/// between tries; a cancelled `cancel` ends the wait at once. The last transient fault becomes
/// `Failed`.
pub async fn retry<T, F, Fut>(
    attempts: u32,
    backoff: Duration,
    cancel: Option<&CancellationToken>,
    mut f: F,
) -> Result<T, HubError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, HubError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f(attempt).await {
            Err(e) if e.is_transient() && attempt < attempts => {
                let wait = backoff * 2u32.pow(attempt - 1);
                tracing::debug!(attempt, ?wait, "transient Hub fault, retrying: {e}");
                match cancel {
                    Some(c) => {
                        tokio::select! {
                            _ = c.cancelled() => return Err(HubError::Cancelled),
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                    None => tokio::time::sleep(wait).await,
                }
            }
            Err(HubError::Transient(m)) => {
                return Err(HubError::Failed(format!("{m} (after {attempt} attempts)")))
            }
            other => return other,
        }
    }
}

async fn read_limited(mut resp: Response, limit: u64) -> Result<Bytes, HubError> {
    let mut out = BytesMut::new();
    loop {
        let chunk = tokio::time::timeout(METADATA_TIMEOUT, resp.chunk())
            .await
            .map_err(|_| HubError::Transient("the Hub stopped sending".into()))?
            .map_err(transport)?;
        let Some(chunk) = chunk else { break };
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(HubError::Failed(format!(
                "a Hub answer is larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// An ETag without quotes or the weak `W/` prefix.
pub fn unquote_etag(raw: &str) -> String {
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_lose_quotes_and_weak_prefix() {
        assert_eq!(unquote_etag("\"abc\""), "abc");
        assert_eq!(unquote_etag("W/\"abc\""), "abc");
        assert_eq!(unquote_etag("abc"), "abc");
    }

    #[test]
    fn urls_encode_revisions_and_paths() {
        let c = HubClient::new("http://127.0.0.1:9/").unwrap();
        let repo = RepoId::parse("org/model").unwrap();
        assert_eq!(
            c.metadata_url(&repo, "refs/pr/1").as_str(),
            "http://127.0.0.1:9/api/models/org/model/revision/refs%2Fpr%2F1?blobs=true"
        );
        assert_eq!(
            c.resolve_url(&repo, "main", "a b/c.json").as_str(),
            "http://127.0.0.1:9/org/model/resolve/main/a%20b/c.json"
        );
    }

    #[test]
    fn tokens_only_go_to_the_hub_origin() {
        let c = HubClient::new("http://127.0.0.1:9").unwrap();
        assert!(c.is_hub_origin(&Url::parse("http://127.0.0.1:9/x").unwrap()));
        assert!(!c.is_hub_origin(&Url::parse("http://localhost:9/x").unwrap()));
        assert!(!c.is_hub_origin(&Url::parse("https://127.0.0.1:9/x").unwrap()));
        let t = Secret::new("hf_x");
        let req = c
            .request(
                Method::GET,
                &Url::parse("http://localhost:9/cdn").unwrap(),
                Some(&t),
            )
            .build()
            .unwrap();
        assert!(req.headers().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn error_codes_win_over_statuses() {
        let repo = RepoId::parse("o/n").unwrap();
        let ctx = ErrorContext::new(&repo, "main", None, false);
        let mut h = HeaderMap::new();
        h.insert("x-error-code", "GatedRepo".parse().unwrap());
        assert!(matches!(
            ctx.error_for(StatusCode::UNAUTHORIZED, &h),
            HubError::Gated { .. }
        ));
        h.insert("x-error-code", "RevisionNotFound".parse().unwrap());
        assert!(matches!(
            ctx.error_for(StatusCode::NOT_FOUND, &h),
            HubError::RevisionNotFound { .. }
        ));
        let with_token = ErrorContext::new(&repo, "main", None, true);
        assert!(matches!(
            with_token.error_for(StatusCode::UNAUTHORIZED, &HeaderMap::new()),
            HubError::InvalidToken
        ));
        assert!(ctx
            .error_for(StatusCode::BAD_GATEWAY, &HeaderMap::new())
            .is_transient());
    }
}
