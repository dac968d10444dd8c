//! Who may call, checked before any route runs: the `Host` header (against DNS rebinding), the
//! `Origin` of state-changing requests and Socket.IO handshakes (against cross-site requests),
//! the API key, and the time a request may take. The rules are those of `API.md`, "Access
//! control".

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::config::{is_loopback_host, Secret, Settings};
use crate::error::{AppError, ErrorCode};

/// The access rules of one server, built once from its settings.
pub struct Guard {
    key: Option<KeyCheck>,
    any_host: bool,
    allowed_hosts: Vec<String>,
    /// The address the server listens on, when it is one address (not `0.0.0.0` or `::`).
    listen_host: Option<String>,
    /// Listening on every address: any IP literal is the server's own.
    listen_unspecified: bool,
    any_origin: bool,
    cors_origins: Vec<String>,
    request_timeout: Duration,
}

/// The API key, kept as its SHA-256 so every comparison takes the same time whatever the key's
/// length and wherever the guess differs.
#[derive(Clone)]
pub struct KeyCheck([u8; 32]);

impl KeyCheck {
    pub fn new(key: &Secret) -> Self {
        KeyCheck(Sha256::digest(key.expose().as_bytes()).into())
    }

    /// True when `given` is the key; constant time in the guess.
    pub fn matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        digest
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// True when `headers` carry `Authorization: Bearer <key>`.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|token| self.matches(token))
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// What the guard learnt about a request that reached a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// It brought the API key (always false when none is configured).
    pub authenticated: bool,
    /// It came from this machine (a loopback peer address).
    pub local: bool,
}

impl Caller {
    /// The server's own `HF_TOKEN` is lent only to callers that proved who they are, or that
    /// sit on this machine: not to anyone the network lets in when no key is set.
    pub fn may_use_server_token(self) -> bool {
        self.authenticated || self.local
    }
}

impl Guard {
    pub fn new(settings: &Settings) -> Self {
        let allowed_hosts = settings.allowed_host_list();
        let listen = host_only(&settings.host).to_ascii_lowercase();
        let listen_ip = listen.parse::<IpAddr>().ok();
        let origins = settings.cors_origin_list();
        Guard {
            key: settings.api_key.as_ref().map(KeyCheck::new),
            any_host: allowed_hosts.iter().any(|h| h == "*"),
            allowed_hosts,
            listen_unspecified: listen_ip.is_some_and(|ip| ip.is_unspecified()),
            listen_host: Some(listen),
            any_origin: origins.iter().any(|o| o == "*"),
            cors_origins: origins
                .iter()
                .filter_map(|o| url::Url::parse(o).ok())
                .map(|u| u.origin().ascii_serialization())
                .collect(),
            request_timeout: Duration::from_secs(settings.request_timeout),
        }
    }

    /// The key, for the Socket.IO handshake.
    pub fn key(&self) -> Option<KeyCheck> {
        self.key.clone()
    }

    /// A `Host` (without its port) this server answers to.
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.any_host || is_loopback_host(&host) || host.ends_with(".localhost") {
            return true;
        }
        if self.allowed_hosts.contains(&host) || self.listen_host.as_deref() == Some(&host) {
            return true;
        }
        // An address cannot be rebound: a page at http://10.0.0.5 is that machine's own.
        self.listen_unspecified && host_only(&host).parse::<IpAddr>().is_ok()
    }

    /// An `Origin` that may change state here: the server's own, a loopback one, or a
    /// `CORS_ORIGINS` entry.
    fn origin_allowed(&self, origin: &str, own_host: Option<&str>) -> bool {
        if self.any_origin {
            return true;
        }
        let Ok(url) = url::Url::parse(origin) else {
            return false; // `null` (sandboxed frames, files) and anything unreadable.
        };
        let Some(host) = url.host_str() else {
            return false;
        };
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        if is_loopback_host(host) || host.ends_with(".localhost") {
            return true;
        }
        let serialized = url.origin().ascii_serialization();
        if self.cors_origins.contains(&serialized) {
            return true;
        }
        // The page this server sent: its origin names the host the request was sent to.
        own_host.is_some_and(|own| {
            let (own_name, own_port) = split_port(own);
            own_name.eq_ignore_ascii_case(host_only(host))
                && own_port.or(url.port_or_known_default()) == url.port_or_known_default()
        })
    }
}

/// `example.com:8000` → (`example.com`, Some(8000)); `[::1]:80` → (`::1`, Some(80)).
fn split_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((ip, after)) = rest.split_once(']') {
            return (ip, after.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (authority, None),
    }
}

/// The host part of an authority, without brackets or port.
fn host_only(authority: &str) -> &str {
    split_port(authority.trim()).0
}

/// The `Host` of a request: the header, or the URI's authority (HTTP/2).
fn request_host(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
}

/// Paths that need the key when one is set.
fn needs_key(path: &str) -> bool {
    let api = path == "/api" || path.starts_with("/api/");
    (api && path != "/api/health/live")
        || path == "/v1"
        || path.starts_with("/v1/")
        || path == "/metrics"
}

/// Paths a request to which is bounded by `REQUEST_TIMEOUT` (Socket.IO's long polls and the
/// page are not).
fn timed(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || path.starts_with("/v1/") || path == "/metrics"
}

/// A refusal in the shape the path's clients read: OpenAI's `{"error": {message, type, param,
/// code}}` on `/v1`, the envelope everywhere else.
fn refuse(path: &str, error: AppError) -> Response {
    if !(path == "/v1" || path.starts_with("/v1/")) {
        return error.into_response();
    }
    let code = match error.code {
        ErrorCode::Unauthorized => "invalid_api_key".to_string(),
        other => other.as_str().to_ascii_lowercase(),
    };
    let body = serde_json::json!({"error": {
        "message": error.message,
        "type": "invalid_request_error",
        "param": null,
        "code": code,
    }});
    (error.code.status(), axum::Json(body)).into_response()
}

/// Middleware: refuses what the rules refuse, records the [`Caller`], and bounds the time.
pub async fn check(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    let host = request_host(&request);
    let path = request.uri().path().to_string();
    if let Some(host) = &host {
        if !guard.host_allowed(host_only(host)) {
            let error = AppError::forbidden(format!(
                "This server does not answer to the host name '{}'. Add it to ALLOWED_HOSTS if it is really this server's name.",
                host_only(host)
            ))
            .with_detail("host", host_only(host));
            return refuse(&path, error);
        }
    }
    let changes_state = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes_state || path.starts_with("/socket.io") {
        if let Some(origin) = request
            .headers()
            .get(header::ORIGIN)
            .map(|o| o.to_str().unwrap_or("").to_string())
        {
            if !guard.origin_allowed(&origin, host.as_deref()) {
                let error = AppError::forbidden(format!(
                    "Requests from the web page at '{origin}' may not change anything here. Add the origin to CORS_ORIGINS if it is yours."
                ))
                .with_detail("origin", origin);
                return refuse(&path, error);
            }
        }
    }
    let authenticated = match &guard.key {
        Some(key) => key.authorizes(request.headers()),
        None => false,
    };
    if guard.key.is_some() && !authenticated && needs_key(&path) {
        let mut response = refuse(&path, AppError::unauthorized());
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"millm\""),
        );
        return response;
    }
    let local = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| peer.ip().to_canonical().is_loopback());
    let caller = Caller {
        authenticated,
        local,
    };
    request.extensions_mut().insert(caller);
    let run = crate::service::as_caller(caller.may_use_server_token(), next.run(request));
    if !timed(&path) {
        return run.await;
    }
    match tokio::time::timeout(guard.request_timeout, run).await {
        Ok(response) => response,
        Err(_) => {
            let error = AppError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "The request took longer than {} s (REQUEST_TIMEOUT) and was stopped.",
                    guard.request_timeout.as_secs()
                ),
            );
            let mut response = refuse(&path, error);
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(configure: impl FnOnce(&mut Settings)) -> Guard {
        let mut s = Settings::for_data_dir("/tmp/x");
        configure(&mut s);
        Guard::new(&s)
    }

    #[test]
    fn the_key_matches_only_itself() {
        let key = KeyCheck::new(&Secret::new("sesame"));
        assert!(key.matches("sesame"));
        assert!(!key.matches("sesam"));
        assert!(!key.matches(""));
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "bearer sesame".parse().unwrap());
        assert!(key.authorizes(&headers));
        headers.insert(header::AUTHORIZATION, "Basic sesame".parse().unwrap());
        assert!(!key.authorizes(&headers));
    }

    #[test]
    fn loopback_names_and_listed_hosts_are_allowed_others_not() {
        let g = guard(|s| s.allowed_hosts = Some("gpubox, Models.Example.com".into()));
        for host in [
            "localhost",
            "127.0.0.1",
            "::1",
            "app.localhost",
            "gpubox",
            "models.example.com",
        ] {
            assert!(g.host_allowed(host), "{host}");
        }
        for host in ["evil.example", "10.0.0.5", "localhost.evil.example"] {
            assert!(!g.host_allowed(host), "{host}");
        }
        let everywhere = guard(|s| s.host = "0.0.0.0".into());
        assert!(everywhere.host_allowed("10.0.0.5"));
        assert!(!everywhere.host_allowed("evil.example"));
        assert!(guard(|s| s.allowed_hosts = Some("*".into())).host_allowed("evil.example"));
    }

    #[test]
    fn own_loopback_and_listed_origins_may_change_state() {
        let g = guard(|s| s.cors_origins = Some("https://ui.example".into()));
        let own = Some("gpubox:8000");
        assert!(g.origin_allowed("http://gpubox:8000", own));
        assert!(g.origin_allowed("http://localhost:5173", own));
        assert!(g.origin_allowed("http://127.0.0.1:9", own));
        assert!(g.origin_allowed("http://[::1]:3000", own));
        assert!(g.origin_allowed("https://ui.example", own));
        assert!(!g.origin_allowed("http://gpubox:9000", own));
        assert!(!g.origin_allowed("https://evil.example", own));
        assert!(!g.origin_allowed("null", own));
        assert!(g.origin_allowed("http://gpubox", Some("gpubox")));
    }

    #[test]
    fn keys_guard_the_api_metrics_and_v1_but_not_liveness_or_the_page() {
        for path in [
            "/api/models",
            "/api/health",
            "/api",
            "/metrics",
            "/v1/models",
        ] {
            assert!(needs_key(path), "{path}");
        }
        for path in [
            "/api/health/live",
            "/",
            "/assets/x.js",
            "/docs/",
            "/openapi.json",
            "/socket.io/",
        ] {
            assert!(!needs_key(path), "{path}");
        }
    }
}
