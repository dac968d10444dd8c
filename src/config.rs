//! Settings: one clap struct read from flags, the environment and an optional `.env` file.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// A value that is never printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Console,
    /// One JSON object per line.
    Json,
}

/// Everything `millm serve` can be told. Each flag can also be set by the environment
/// variable of the same name, or in a `.env` file in the working folder.
#[derive(Clone, Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "HOST", value_name = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", value_name = "PORT", default_value_t = 8000)]
    pub port: u16,

    /// Folder for the database and the model cache (created if missing).
    #[arg(
        long = "data-dir",
        env = "MILLM_DATA_DIR",
        value_name = "MILLM_DATA_DIR",
        default_value = "data"
    )]
    pub data_dir: PathBuf,

    /// Registry database: `sqlite://…` or `postgres://…` [default: a SQLite file in the data folder].
    /// A SQLite file (or a folder, for `millm.db` in it) that does not exist yet is created.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        value_name = "DATABASE_URL"
    )]
    pub database_url: Option<Secret>,

    /// Hub cache folder (the layout the Python tools use) [default: `hub/` in the data folder].
    #[arg(
        long = "model-cache-dir",
        env = "MODEL_CACHE_DIR",
        value_name = "MODEL_CACHE_DIR"
    )]
    pub model_cache_dir: Option<PathBuf>,

    /// Base URL of the Hugging Face Hub.
    #[arg(
        long = "hf-endpoint",
        env = "HF_ENDPOINT",
        value_name = "HF_ENDPOINT",
        default_value = "https://huggingface.co"
    )]
    pub hf_endpoint: String,

    /// Hub access token used when a request brings none. Never logged or stored.
    #[arg(
        long = "hf-token",
        env = "HF_TOKEN",
        value_name = "HF_TOKEN",
        hide_env_values = true
    )]
    pub hf_token: Option<Secret>,

    /// Log filter: a level (`info`) or a tracing filter (`millm=debug,tower_http=info`).
    #[arg(
        long = "log-level",
        env = "LOG_LEVEL",
        value_name = "LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,

    /// Log line format.
    #[arg(
        long = "log-format",
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT",
        value_enum,
        default_value = "console"
    )]
    pub log_format: LogFormat,

    /// Origins allowed by CORS, comma-separated, or `*` [default: none besides the server's own].
    #[arg(
        long = "cors-origins",
        env = "CORS_ORIGINS",
        value_name = "CORS_ORIGINS"
    )]
    pub cors_origins: Option<String>,

    /// Seconds an unload waits for requests that use the model before it unloads anyway.
    #[arg(
        long = "graceful-unload-timeout",
        env = "GRACEFUL_UNLOAD_TIMEOUT",
        value_name = "GRACEFUL_UNLOAD_TIMEOUT",
        default_value_t = 30
    )]
    pub graceful_unload_timeout: u64,

    /// The most tokens a prompt and its answer may take together on `/v1` (the model's own
    /// context is used when smaller); the memory estimate counts the KV cache for it.
    #[arg(
        long = "max-context-tokens",
        env = "MAX_CONTEXT_TOKENS",
        value_name = "MAX_CONTEXT_TOKENS",
        default_value_t = 4096
    )]
    pub max_context_tokens: usize,

    /// Generation requests that may wait for the model while one runs; more get 429.
    #[arg(
        long = "max-queued-requests",
        env = "MAX_QUEUED_REQUESTS",
        value_name = "MAX_QUEUED_REQUESTS",
        default_value_t = 16
    )]
    pub max_queued_requests: usize,

    /// A `/v1` request naming a `ready` model that is not loaded loads it first (unloading the
    /// loaded one, unless that one is locked). `0`/`false` turns it off.
    #[arg(
        long = "load-on-request",
        env = "LOAD_ON_REQUEST",
        value_name = "LOAD_ON_REQUEST",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub load_on_request: bool,

    /// Unload the loaded model when nobody has used it for this many seconds (unless it is
    /// locked). Off when unset or 0.
    #[arg(
        long = "idle-unload-seconds",
        env = "IDLE_UNLOAD_SECONDS",
        value_name = "IDLE_UNLOAD_SECONDS"
    )]
    pub idle_unload_seconds: Option<u64>,

    /// A model (id, name or repo id) to load at start-up.
    #[arg(
        long = "auto-load-model",
        env = "AUTO_LOAD_MODEL",
        value_name = "AUTO_LOAD_MODEL"
    )]
    pub auto_load_model: Option<String>,

    /// API key: when set, `/api/*` (but `/api/health/live`), `/v1/*`, `/metrics` and the
    /// Socket.IO handshake need `Authorization: Bearer <key>`. Required to listen beyond loopback.
    #[arg(
        long = "api-key",
        env = "MILLM_API_KEY",
        value_name = "MILLM_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<Secret>,

    /// Listen beyond loopback without an API key anyway (anyone who reaches the port may
    /// download, load and delete models). Logged as a warning at start-up.
    #[arg(
        long = "allow-no-auth",
        env = "MILLM_ALLOW_NO_AUTH",
        value_name = "MILLM_ALLOW_NO_AUTH",
        action = clap::ArgAction::SetTrue,
        // `1`, `true`, `yes`, `on` (and their opposites), as people write it in a `.env`.
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_no_auth: bool,

    /// Host names the server answers to besides loopback names and IP addresses,
    /// comma-separated (`millm.example.com,gpubox`); `*` turns the check off.
    #[arg(
        long = "allowed-hosts",
        env = "ALLOWED_HOSTS",
        value_name = "ALLOWED_HOSTS"
    )]
    pub allowed_hosts: Option<String>,

    /// Folders, comma-separated, under which local model folders may be registered
    /// [default: anywhere the server can read].
    #[arg(
        long = "local-model-roots",
        env = "LOCAL_MODEL_ROOTS",
        value_name = "LOCAL_MODEL_ROOTS"
    )]
    pub local_model_roots: Option<String>,

    /// Hub downloads that run at once; more wait (still `downloading`, at 0 bytes) for a slot.
    #[arg(
        long = "max-concurrent-downloads",
        env = "MAX_CONCURRENT_DOWNLOADS",
        value_name = "MAX_CONCURRENT_DOWNLOADS",
        default_value_t = 3
    )]
    pub max_concurrent_downloads: usize,

    /// Hub previews that run at once; more wait for a slot.
    #[arg(
        long = "max-concurrent-previews",
        env = "MAX_CONCURRENT_PREVIEWS",
        value_name = "MAX_CONCURRENT_PREVIEWS",
        default_value_t = 4
    )]
    pub max_concurrent_previews: usize,

    /// Socket.IO connections (per namespace joined) the server keeps at once; more are refused.
    #[arg(
        long = "max-socket-connections",
        env = "MAX_SOCKET_CONNECTIONS",
        value_name = "MAX_SOCKET_CONNECTIONS",
        default_value_t = 256
    )]
    pub max_socket_connections: usize,

    /// Disk space (MiB) a new download must leave free in the model cache, besides the space
    /// the running downloads still need.
    #[arg(
        long = "disk-reserve-mb",
        env = "DISK_RESERVE_MB",
        value_name = "DISK_RESERVE_MB",
        default_value_t = 0
    )]
    pub disk_reserve_mb: u64,

    /// Seconds a client has to send a request's headers before its connection is closed.
    #[arg(
        long = "header-read-timeout",
        env = "HEADER_READ_TIMEOUT",
        value_name = "HEADER_READ_TIMEOUT",
        default_value_t = 10
    )]
    pub header_read_timeout: u64,

    /// Seconds an API request may take, body included, before the connection is closed
    /// (Socket.IO is not counted). Must exceed GRACEFUL_UNLOAD_TIMEOUT.
    #[arg(
        long = "request-timeout",
        env = "REQUEST_TIMEOUT",
        value_name = "REQUEST_TIMEOUT",
        default_value_t = 300
    )]
    pub request_timeout: u64,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| "***"))
            .field("model_cache_dir", &self.model_cache_dir)
            .field("hf_endpoint", &self.hf_endpoint)
            .field("hf_token", &self.hf_token)
            .field("log_level", &self.log_level)
            .field("log_format", &self.log_format)
            .field("cors_origins", &self.cors_origins)
            .field("graceful_unload_timeout", &self.graceful_unload_timeout)
            .field("max_context_tokens", &self.max_context_tokens)
            .field("max_queued_requests", &self.max_queued_requests)
            .field("load_on_request", &self.load_on_request)
            .field("idle_unload_seconds", &self.idle_unload_seconds)
            .field("auto_load_model", &self.auto_load_model)
            .field("api_key", &self.api_key)
            .field("allow_no_auth", &self.allow_no_auth)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("local_model_roots", &self.local_model_roots)
            .field("max_concurrent_downloads", &self.max_concurrent_downloads)
            .field("max_concurrent_previews", &self.max_concurrent_previews)
            .field("max_socket_connections", &self.max_socket_connections)
            .field("disk_reserve_mb", &self.disk_reserve_mb)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// A setting that cannot be used, with the name a person would set.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}: {reason}")]
pub struct SettingError {
    pub name: &'static str,
    pub reason: String,
}

fn bad(name: &'static str, reason: impl Into<String>) -> SettingError {
    SettingError {
        name,
        reason: reason.into(),
    }
}

impl Settings {
    /// Settings for tests and embedding: defaults, with the data folder given.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Settings {
            host: "127.0.0.1".into(),
            port: 0,
            data_dir: data_dir.into(),
            database_url: None,
            model_cache_dir: None,
            hf_endpoint: "https://huggingface.co".into(),
            hf_token: None,
            log_level: "info".into(),
            log_format: LogFormat::Console,
            cors_origins: None,
            graceful_unload_timeout: 30,
            max_context_tokens: 4096,
            max_queued_requests: 16,
            load_on_request: true,
            idle_unload_seconds: None,
            auto_load_model: None,
            api_key: None,
            allow_no_auth: false,
            allowed_hosts: None,
            local_model_roots: None,
            max_concurrent_downloads: 3,
            max_concurrent_previews: 4,
            max_socket_connections: 256,
            disk_reserve_mb: 0,
            header_read_timeout: 10,
            request_timeout: 300,
        }
    }

    /// Treats settings given as empty strings (`HF_TOKEN=` in a compose file) as not given.
    pub fn normalized(mut self) -> Self {
        fn blank(s: &str) -> bool {
            s.trim().is_empty()
        }
        if self.hf_token.as_ref().is_some_and(|t| blank(t.expose())) {
            self.hf_token = None;
        }
        if self.api_key.as_ref().is_some_and(|t| blank(t.expose())) {
            self.api_key = None;
        }
        if self.allowed_hosts.as_deref().is_some_and(blank) {
            self.allowed_hosts = None;
        }
        if self.local_model_roots.as_deref().is_some_and(blank) {
            self.local_model_roots = None;
        }
        if self
            .database_url
            .as_ref()
            .is_some_and(|t| blank(t.expose()))
        {
            self.database_url = None;
        }
        if self.auto_load_model.as_deref().is_some_and(blank) {
            self.auto_load_model = None;
        }
        if self.cors_origins.as_deref().is_some_and(blank) {
            self.cors_origins = None;
        }
        if self
            .model_cache_dir
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            self.model_cache_dir = None;
        }
        self
    }

    /// Checks what clap cannot: every error names the setting to fix.
    pub fn validate(&self) -> Result<(), SettingError> {
        if self.host.trim().is_empty() {
            return Err(bad("HOST", "must not be empty"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(bad("MILLM_DATA_DIR", "must not be empty"));
        }
        if self.max_context_tokens == 0 {
            return Err(bad("MAX_CONTEXT_TOKENS", "must be at least 1"));
        }
        if let Some(url) = &self.database_url {
            let url = url.expose();
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                return Err(bad(
                    "DATABASE_URL",
                    "must start with sqlite:, postgres:// or postgresql://",
                ));
            }
        }
        match url::Url::parse(&self.hf_endpoint) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => {
                return Err(bad(
                    "HF_ENDPOINT",
                    format!("'{}' is not an http(s) URL", self.hf_endpoint),
                ))
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(bad(
                "LOG_LEVEL",
                format!(
                    "'{}' is not a level or filter (try info, debug, warn)",
                    self.log_level
                ),
            ));
        }
        if let Some(origins) = &self.cors_origins {
            for origin in self.cors_origin_list() {
                if origin != "*" && url::Url::parse(&origin).is_err() {
                    return Err(bad(
                        "CORS_ORIGINS",
                        format!("'{origin}' is not an origin like http://localhost:5173 (in '{origins}')"),
                    ));
                }
            }
        }
        if let Some(key) = &self.api_key {
            if key.expose().trim() != key.expose() || key.expose().chars().any(char::is_control) {
                return Err(bad(
                    "MILLM_API_KEY",
                    "must not contain spaces at either end or control characters",
                ));
            }
        }
        if self.api_key.is_none() && !self.allow_no_auth && !is_loopback_host(&self.host) {
            return Err(bad(
                "HOST",
                format!(
                    "listening on '{}' (beyond loopback) needs an API key: set MILLM_API_KEY, or HOST=127.0.0.1 (MILLM_ALLOW_NO_AUTH=1 overrides, leaving the API open to the network)",
                    self.host
                ),
            ));
        }
        if self.api_key.is_none() && self.cors_origin_list().iter().any(|o| o == "*") {
            return Err(bad(
                "CORS_ORIGINS",
                "'*' lets every web site call the API; it needs MILLM_API_KEY set, or list the origins",
            ));
        }
        for root in self.local_model_root_list() {
            if !root.is_absolute() {
                return Err(bad(
                    "LOCAL_MODEL_ROOTS",
                    format!("'{}' is not an absolute path", root.display()),
                ));
            }
        }
        for (name, value) in [
            (
                "MAX_CONCURRENT_DOWNLOADS",
                self.max_concurrent_downloads as u64,
            ),
            (
                "MAX_CONCURRENT_PREVIEWS",
                self.max_concurrent_previews as u64,
            ),
            ("MAX_SOCKET_CONNECTIONS", self.max_socket_connections as u64),
            ("HEADER_READ_TIMEOUT", self.header_read_timeout),
        ] {
            if value == 0 {
                return Err(bad(name, "must be at least 1"));
            }
        }
        if self.request_timeout <= self.graceful_unload_timeout {
            return Err(bad(
                "REQUEST_TIMEOUT",
                format!(
                    "must exceed GRACEFUL_UNLOAD_TIMEOUT ({} s), so an unload can finish",
                    self.graceful_unload_timeout
                ),
            ));
        }
        Ok(())
    }

    /// `ALLOWED_HOSTS`, split, trimmed and lowercased.
    pub fn allowed_host_list(&self) -> Vec<String> {
        split_list(self.allowed_hosts.as_deref())
            .map(|h| h.to_ascii_lowercase())
            .collect()
    }

    /// `LOCAL_MODEL_ROOTS`, split and trimmed; empty when any folder may be registered.
    pub fn local_model_root_list(&self) -> Vec<PathBuf> {
        split_list(self.local_model_roots.as_deref())
            .map(PathBuf::from)
            .collect()
    }

    /// The CORS origins, split and trimmed.
    pub fn cors_origin_list(&self) -> Vec<String> {
        self.cors_origins
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Where the Hub cache lives.
    pub fn cache_dir(&self) -> PathBuf {
        self.model_cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("hub"))
    }

    /// The registry's URL: the setting, or a SQLite file in the data folder.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_string(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("millm.db").display()
            ),
        }
    }
}

fn split_list(raw: Option<&str>) -> impl Iterator<Item = String> + '_ {
    raw.unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// True for a name or address that only this machine reaches: `localhost`, `127.0.0.0/8`, `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_secrets() {
        let mut s = Settings::for_data_dir("/tmp/x");
        s.hf_token = Some(Secret::new("hf_supersecret"));
        s.database_url = Some(Secret::new("postgres://u:pw@h/db"));
        let printed = format!("{s:?}");
        assert!(!printed.contains("supersecret"));
        assert!(!printed.contains("pw@"));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let mut s = Settings::for_data_dir("/tmp/x");
        s.hf_token = Some(Secret::new(""));
        s.auto_load_model = Some(" ".into());
        let s = s.normalized();
        assert!(s.hf_token.is_none());
        assert!(s.auto_load_model.is_none());
    }

    #[test]
    fn validate_names_the_bad_setting() {
        let mut s = Settings::for_data_dir("/tmp/x");
        s.hf_endpoint = "not a url".into();
        assert_eq!(s.validate().unwrap_err().name, "HF_ENDPOINT");
        let mut s = Settings::for_data_dir("/tmp/x");
        s.database_url = Some(Secret::new("mysql://x"));
        assert_eq!(s.validate().unwrap_err().name, "DATABASE_URL");
        let mut s = Settings::for_data_dir("/tmp/x");
        s.cors_origins = Some("http://ok.example, nope".into());
        assert_eq!(s.validate().unwrap_err().name, "CORS_ORIGINS");
        let mut s = Settings::for_data_dir("/tmp/x");
        s.log_level = "loud[".into();
        assert_eq!(s.validate().unwrap_err().name, "LOG_LEVEL");
        let mut s = Settings::for_data_dir("/tmp/x");
        s.local_model_roots = Some("/models, relative".into());
        assert_eq!(s.validate().unwrap_err().name, "LOCAL_MODEL_ROOTS");
        let mut s = Settings::for_data_dir("/tmp/x");
        s.max_concurrent_downloads = 0;
        assert_eq!(s.validate().unwrap_err().name, "MAX_CONCURRENT_DOWNLOADS");
    }

    #[test]
    fn listening_beyond_loopback_needs_a_key_or_the_override() {
        let mut s = Settings::for_data_dir("/tmp/x");
        s.host = "0.0.0.0".into();
        let err = s.validate().unwrap_err();
        assert_eq!(err.name, "HOST");
        assert!(err.to_string().contains("MILLM_API_KEY"), "{err}");
        s.api_key = Some(Secret::new("k"));
        assert!(s.validate().is_ok());
        s.api_key = None;
        s.allow_no_auth = true;
        assert!(s.validate().is_ok());
        for host in ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"] {
            let mut s = Settings::for_data_dir("/tmp/x");
            s.host = host.into();
            assert!(s.validate().is_ok(), "{host}");
        }
    }

    #[test]
    fn any_cors_origin_needs_a_key() {
        let mut s = Settings::for_data_dir("/tmp/x");
        s.cors_origins = Some("*".into());
        let err = s.validate().unwrap_err();
        assert_eq!(err.name, "CORS_ORIGINS");
        assert!(err.to_string().contains("MILLM_API_KEY"), "{err}");
        s.api_key = Some(Secret::new("k"));
        assert!(s.validate().is_ok());
    }

    #[test]
    fn debug_never_prints_the_api_key() {
        let mut s = Settings::for_data_dir("/tmp/x");
        s.api_key = Some(Secret::new("topsecretkey"));
        assert!(!format!("{s:?}").contains("topsecretkey"));
    }
}
