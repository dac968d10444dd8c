//! The Hub protocol, the cache layout and the resumable downloader.
//!
//! * [`client`]: metadata, `resolve` (HEAD without following redirects), Range requests, and
//!   the `X-Error-Code` mapping; the token only ever goes to `HF_ENDPOINT`'s origin.
//! * [`select`]: which of a repo's files loading needs, and the file-name checks.
//! * [`cache`]: the cache layout shared with the Python tools (`blobs`, `snapshots`, `refs`).
//! * [`download`]: parallel byte ranges into `.incomplete` files, resumable, sha256-checked.
//! * [`remote`]: what a repo is (files, config, tensor shapes) without downloading weights.
//! * [`job`]: the one job API the service uses: plan, run, and the cache clean-up.

pub mod cache;
pub mod client;
pub mod download;
pub mod job;
pub mod remote;
pub mod select;

pub use cache::RepoCache;
pub use client::{FileHead, HubClient, RepoInfo, Sibling};
pub use download::{DownloadOptions, FilePlan, Progress};
pub use job::{CacheUser, Completed, DownloadProgress, Hub, JobSpec, Plan};
pub use remote::Access;
pub use remote::RemoteModel;

/// Hub and download errors. Conversions into the API error live in `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The Hub has no such repo, or it is private and the token (if any) cannot see it.
    #[error("repository {repo} not found")]
    RepoNotFound { repo: String },
    /// The repo exists but not the revision.
    #[error("revision {revision} of {repo} not found")]
    RevisionNotFound { repo: String, revision: String },
    /// A file the download needs is not at that revision.
    #[error("file {path} not found in {repo}")]
    EntryNotFound { repo: String, path: String },
    /// A gated repo and no token, or a token without access granted.
    #[error("repository {repo} is gated")]
    Gated { repo: String, had_token: bool },
    /// The Hub rejected the token.
    #[error("the Hub rejected the access token")]
    InvalidToken,
    /// Nothing loadable, or remote code needed: the sentence says why.
    #[error("{0}")]
    Unsupported(String),
    /// A file name from the Hub that would land outside the cache.
    #[error("unsafe file name from the Hub: {0:?}")]
    UnsafePath(String),
    #[error("not enough disk space: {required} bytes needed, {available} available")]
    InsufficientDisk { required: u64, available: u64 },
    /// The downloaded bytes do not hash to the file's identity.
    #[error("checksum mismatch for {path}: expected {algorithm} {expected}, got {actual}")]
    Checksum {
        path: String,
        /// `sha256` (LFS files) or `git-sha1` (plain git files).
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    /// A fault worth another attempt: a timeout, a reset, a 5xx, a truncated body, a stall.
    #[error("{0}")]
    Transient(String),
    /// The Hub failed (after retries, for transient faults) or answered something unusable.
    #[error("{0}")]
    Failed(String),
    /// The job's token was cancelled (by the user or at shutdown).
    #[error("the download was cancelled")]
    Cancelled,
    #[error("file system error: {0}")]
    Io(#[from] std::io::Error),
}

impl HubError {
    /// Faults worth another attempt: timeouts, resets, 5xx, truncated bodies.
    pub fn is_transient(&self) -> bool {
        matches!(self, HubError::Transient(_))
    }
}
