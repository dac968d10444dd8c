//! The wire types of `API.md`: request bodies and response payloads, with their OpenAPI schemas.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{ModelStatus, Quantization, Source};
use crate::error::ErrorBody;

/// The envelope every `/api` response is wrapped in.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    pub success: bool,
    pub data: Option<T>,
    pub error: Option<ErrorBody>,
}

/// A model as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ModelResponse {
    pub id: i64,
    /// custom_name, else the repo name or folder name.
    pub name: String,
    pub source: Source,
    /// `owner/name`.
    pub repo_id: Option<String>,
    /// The commit sha resolved at download time.
    pub revision: Option<String>,
    pub local_path: Option<String>,
    /// Human form, e.g. `135M`, `2.5B`.
    pub params: Option<String>,
    pub architecture: Option<String>,
    pub quantization: Quantization,
    /// MiB on disk of this model's files, rounded up.
    pub disk_size_mb: Option<i64>,
    /// MiB the load will take (weights plus the stated runtime overhead), rounded up.
    pub estimated_memory_mb: Option<i64>,
    pub status: ModelStatus,
    pub error_message: Option<String>,
    /// 0–100 while downloading.
    pub download_progress: Option<i64>,
    pub downloaded_bytes: Option<i64>,
    pub total_bytes: Option<i64>,
    pub speed_bps: Option<i64>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub loaded_at: Option<String>,
    /// Only while loaded: counted from the loaded tensors.
    pub num_parameters: Option<i64>,
    /// Only while loaded: bytes actually held.
    pub memory_footprint: Option<i64>,
    /// Only while loaded: `cpu`, `cuda:0`, …
    pub device: Option<String>,
    /// Only while loaded: `f32`, `f16`, `bf16`, `q8_0`, `q4k`, `q2k`.
    pub dtype: Option<String>,
}

/// Body of `POST /api/models`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ModelDownloadRequest {
    pub source: Source,
    /// `owner/name`; required for `huggingface`.
    pub repo_id: Option<String>,
    /// Branch, tag or commit; default `main`.
    pub revision: Option<String>,
    /// Absolute folder path; required for `local`.
    pub local_path: Option<String>,
    /// Default `Q4`.
    pub quantization: Option<Quantization>,
    /// Default false. Models that need remote code are refused either way.
    pub trust_remote_code: Option<bool>,
    /// Hub token for this request only; never stored.
    pub hf_token: Option<String>,
    /// At most 100 characters.
    pub custom_name: Option<String>,
}

/// Memory of the device models load onto.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemoryInfo {
    /// `cpu` or `cuda:0`.
    pub device: String,
    pub total_mb: u64,
    pub free_mb: u64,
}

/// Body of `GET /api/health`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`, or `degraded` when the database does not answer.
    pub status: String,
    pub version: String,
    /// `ok` or `unavailable`.
    pub database: String,
    /// `sqlite` or `postgresql`.
    pub database_backend: String,
    pub loaded_model_id: Option<i64>,
    pub memory: MemoryInfo,
}

/// Body of `DELETE /api/models/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeleteResponse {
    pub id: i64,
    pub deleted: bool,
    /// Bytes of downloaded files removed from the cache (0 for a local model).
    pub freed_bytes: u64,
}

/// Body of `POST /api/models/preview`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct PreviewRequest {
    /// `owner/name`.
    pub repo_id: String,
    /// Hub token for this request only; never stored or echoed.
    pub hf_token: Option<String>,
    /// Branch, tag or commit; default `main`.
    pub revision: Option<String>,
}

/// Disk and memory of one quantization.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct SizeEstimate {
    /// MiB the download takes on disk (the same for every quantization: it happens at load time).
    pub disk_mb: u64,
    /// MiB a load at this quantization takes (weights plus the stated runtime overhead).
    pub memory_mb: u64,
}

/// `estimated_sizes`: one entry per quantization.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[allow(non_snake_case)]
pub struct EstimatedSizes {
    pub FP32: SizeEstimate,
    pub FP16: SizeEstimate,
    pub Q8: SizeEstimate,
    pub Q4: SizeEstimate,
    pub Q2: SizeEstimate,
}

/// One file a download fetches.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct PreviewFile {
    pub path: String,
    /// Bytes.
    pub size: u64,
}

/// Body of `POST /api/models/preview`'s answer: what a repo is and what each quantization costs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ModelPreviewResponse {
    /// The repo's name part.
    pub name: String,
    /// Human form, e.g. `135M`.
    pub params: Option<String>,
    pub architecture: Option<String>,
    pub is_gated: bool,
    /// The config needs the repo's own Python code (`auto_map`); such models are refused.
    pub requires_trust_remote_code: bool,
    pub estimated_sizes: EstimatedSizes,
    pub downloads: Option<u64>,
    pub likes: Option<u64>,
    pub tags: Vec<String>,
    pub pipeline_tag: Option<String>,
    pub model_type: Option<String>,
    pub architectures: Vec<String>,
    pub license: Option<String>,
    pub language: Option<Vec<String>>,
    /// The files a download fetches (what loading needs), with sizes.
    pub files: Vec<PreviewFile>,
    /// For a gated repo and a given token: whether the token can read it; else null.
    pub has_access: Option<bool>,
}

/// Optional body of `POST /api/models/{id}/retry`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RetryRequest {
    /// Hub token for this retry only; never stored.
    pub hf_token: Option<String>,
}
