//! The wire types of `API.md`: request bodies and response payloads, with their OpenAPI schemas.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{human_params, ModelStatus, Quantization, Source};
use crate::engine::infer::supports_inference;
use crate::error::ErrorBody;
use crate::service::{Deleted, DownloadOrder, ModelView, Preview};

/// A success answer, as every `/api` response that succeeds is wrapped: `success` is true, the
/// payload is in `data` and `error` is null.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always `true`.
    pub success: bool,
    pub data: T,
    /// Always null.
    #[schema(schema_with = null_schema, required = true)]
    pub error: Option<()>,
}

/// A failed answer: `success` is false, `data` is null and `error` says what went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always `false`.
    pub success: bool,
    /// Always null.
    #[schema(schema_with = null_schema, required = true)]
    pub data: Option<()>,
    pub error: ErrorBody,
}

/// The schema of a value that is always JSON `null`.
fn null_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Null)
        .build()
}

// The patterns below (repo id, revision, local path, names) say in the document exactly what
// the server accepts (`RepoId::parse`, `select::check_name`, `validate_local_path`,
// `validate_name`), so that every request the document allows is accepted.

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
    /// True while a download waits for a slot (`MAX_CONCURRENT_DOWNLOADS` are running); it
    /// starts by itself when one ends.
    #[serde(default)]
    pub queued: bool,
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
    /// The server can generate text with this architecture on `/v1` (it loads either way).
    pub supports_inference: bool,
    /// The loaded model is locked: a load of another model (asked, or on request by `/v1`) is
    /// refused with `MODEL_LOCKED`, and it is not unloaded when idle. Cleared by its unload.
    pub locked: bool,
    /// With `IDLE_UNLOAD_SECONDS` set, while the loaded model is unlocked and unused: when it
    /// will be unloaded unless a request uses it before (RFC 3339 UTC).
    pub idle_unload_at: Option<String>,
}

/// Body of `POST /api/models` as the server reads it (one object, `source` telling which
/// fields apply); documented as [`ModelDownloadRequest`].
#[derive(Debug, Clone, Deserialize)]
pub struct CreateModelBody {
    pub source: Source,
    pub repo_id: Option<String>,
    pub revision: Option<String>,
    pub local_path: Option<String>,
    pub quantization: Option<Quantization>,
    pub trust_remote_code: Option<bool>,
    pub hf_token: Option<String>,
    pub custom_name: Option<String>,
}

/// Body of `POST /api/models`: a Hub download or a local folder, told apart by `source`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "source")]
#[allow(dead_code)]
pub enum ModelDownloadRequest {
    /// Download `repo_id` from the Hub.
    #[serde(rename = "huggingface")]
    Huggingface(HubModelRequest),
    /// Register a folder that is already on this machine.
    #[serde(rename = "local")]
    Local(LocalModelRequest),
}

/// A Hub download (`source: "huggingface"`).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct HubModelRequest {
    /// `owner/name`.
    #[schema(
        pattern = r"^(?!.*(--|\.\.))[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?/[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?$",
        max_length = 193
    )]
    pub repo_id: String,
    /// Branch, tag or commit; default `main`.
    #[schema(
        pattern = r"^(?!(.*/)?\.\.?(/|$))[^/\\:\u0000-\u001f\u007f-\u009f]+(/[^/\\:\u0000-\u001f\u007f-\u009f]+)*$",
        max_length = 256
    )]
    pub revision: Option<String>,
    /// Default `Q4`.
    pub quantization: Option<Quantization>,
    /// Default false. Models that need remote code are refused either way.
    pub trust_remote_code: Option<bool>,
    /// Hub token for this request only; never stored.
    #[schema(pattern = r"^\s*[!-~]*\s*$", max_length = 1024)]
    pub hf_token: Option<String>,
    /// At most 100 characters.
    #[schema(
        pattern = r"^[^\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]*$",
        max_length = 100
    )]
    pub custom_name: Option<String>,
}

/// A local folder (`source: "local"`).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct LocalModelRequest {
    /// Absolute folder path holding `config.json` and safetensors weights.
    #[schema(
        pattern = r"^/(?!(.*/)?\.\.(/|$))[^\u0000]*$",
        min_length = 2,
        max_length = 4096
    )]
    pub local_path: String,
    /// Default `Q4`.
    pub quantization: Option<Quantization>,
    /// At most 100 characters.
    #[schema(
        pattern = r"^[^\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]*$",
        max_length = 100
    )]
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
    /// Completion tokens per second over the last minute's generations (each generation's
    /// tokens after its first, over the time they took); null when none ran in that minute.
    pub tokens_per_second: Option<f64>,
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
    #[schema(
        pattern = r"^(?!.*(--|\.\.))[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?/[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?$",
        max_length = 193
    )]
    pub repo_id: String,
    /// Hub token for this request only; never stored or echoed.
    #[schema(pattern = r"^\s*[!-~]*\s*$", max_length = 1024)]
    pub hf_token: Option<String>,
    /// Branch, tag or commit; default `main`.
    #[schema(
        pattern = r"^(?!(.*/)?\.\.?(/|$))[^/\\:\u0000-\u001f\u007f-\u009f]+(/[^/\\:\u0000-\u001f\u007f-\u009f]+)*$",
        max_length = 256
    )]
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
    /// The server can generate text with this architecture on `/v1` (it loads either way).
    pub supports_inference: bool,
}

/// Optional body of `POST /api/models/{id}/retry`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RetryRequest {
    /// Hub token for this retry only; never stored.
    #[schema(pattern = r"^\s*[!-~]*\s*$", max_length = 1024)]
    pub hf_token: Option<String>,
}

impl From<ModelView> for ModelResponse {
    fn from(view: ModelView) -> Self {
        let ModelView {
            record: r,
            download,
            queued,
            loaded,
            idle_unload_at,
        } = view;
        let supports_inference = supports_inference(r.architecture.as_deref());
        ModelResponse {
            id: r.id,
            name: r.name,
            source: r.source,
            repo_id: r.repo_id,
            revision: r.revision,
            local_path: r.local_path,
            params: r.params,
            architecture: r.architecture,
            quantization: r.quantization,
            disk_size_mb: r.disk_size_mb,
            estimated_memory_mb: r.estimated_memory_mb,
            status: r.status,
            error_message: r.error_message,
            download_progress: download.map(|p| i64::from(p.percent())),
            downloaded_bytes: download.map(|p| p.downloaded_bytes as i64),
            total_bytes: download.map(|p| p.total_bytes as i64),
            speed_bps: download.map(|p| p.speed_bps as i64),
            queued,
            created_at: Some(r.created_at),
            updated_at: Some(r.updated_at),
            loaded_at: r.loaded_at,
            num_parameters: loaded.as_ref().map(|l| l.num_parameters as i64),
            memory_footprint: loaded.as_ref().map(|l| l.memory_footprint as i64),
            device: loaded.as_ref().map(|l| l.device.clone()),
            locked: loaded.as_ref().is_some_and(|l| l.locked),
            dtype: loaded.map(|l| l.dtype),
            supports_inference,
            idle_unload_at: idle_unload_at.map(|t| {
                chrono::DateTime::<chrono::Utc>::from(t)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            }),
        }
    }
}

impl From<Deleted> for DeleteResponse {
    fn from(d: Deleted) -> Self {
        DeleteResponse {
            id: d.id,
            deleted: true,
            freed_bytes: d.freed_bytes,
        }
    }
}

impl From<Preview> for ModelPreviewResponse {
    fn from(p: Preview) -> Self {
        let size = |q: Quantization| {
            let s = p.size(q);
            SizeEstimate {
                disk_mb: s.disk_mb,
                memory_mb: s.memory_mb,
            }
        };
        let estimated_sizes = EstimatedSizes {
            FP32: size(Quantization::FP32),
            FP16: size(Quantization::FP16),
            Q8: size(Quantization::Q8),
            Q4: size(Quantization::Q4),
            Q2: size(Quantization::Q2),
        };
        let model = p.model;
        let card = model.info.card_data.clone().unwrap_or_default();
        let config = model.config.clone().unwrap_or_default();
        let supports_inference = supports_inference(model.architecture().as_deref());
        ModelPreviewResponse {
            name: p.repo.name().to_string(),
            params: model.parameter_count.map(human_params),
            architecture: model.architecture(),
            is_gated: model.info.is_gated(),
            requires_trust_remote_code: model.requires_remote_code,
            estimated_sizes,
            downloads: model.info.downloads,
            likes: model.info.likes,
            tags: model.info.tags,
            pipeline_tag: model.info.pipeline_tag,
            model_type: config
                .get("model_type")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            architectures: strings(config.get("architectures")).unwrap_or_default(),
            license: strings(card.get("license")).and_then(|l| l.into_iter().next()),
            language: strings(card.get("language")),
            files: model
                .files
                .into_iter()
                .map(|f| PreviewFile {
                    path: f.path,
                    size: f.size,
                })
                .collect(),
            supports_inference,
            has_access: model.has_access,
        }
    }
}

/// A string or a list of strings, as model cards and configs write them.
fn strings(v: Option<&serde_json::Value>) -> Option<Vec<String>> {
    match v? {
        serde_json::Value::String(s) => Some(vec![s.clone()]),
        serde_json::Value::Array(a) => Some(
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

impl From<CreateModelBody> for DownloadOrder {
    fn from(req: CreateModelBody) -> Self {
        DownloadOrder {
            repo_id: req.repo_id,
            revision: req.revision,
            hf_token: req.hf_token,
            trust_remote_code: req.trust_remote_code.unwrap_or(false),
        }
    }
}
