//! The one error type of the API: every code of `API.md`, its HTTP status, and the envelope it renders.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::engine::EngineError;
use crate::store::StoreError;

/// Every error code of the wire contract. Adding one does not compile until it is mapped below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationError,
    ModelNotFound,
    ModelAlreadyExists,
    ModelBusy,
    ModelAlreadyLoaded,
    ModelNotLoaded,
    ModelLoadFailed,
    ModelUnsupported,
    InsufficientMemory,
    InsufficientDisk,
    DownloadFailed,
    DownloadCancelled,
    RepoNotFound,
    GatedModelNoToken,
    InvalidHfToken,
    InvalidLocalPath,
    InvalidState,
    PayloadTooLarge,
    NotFound,
    MethodNotAllowed,
    Unauthorized,
    ModelLocked,
    Forbidden,
    UnsupportedMediaType,
    RequestTimeout,
    InternalError,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::ValidationError => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ModelNotFound => StatusCode::NOT_FOUND,
            ErrorCode::ModelAlreadyExists => StatusCode::CONFLICT,
            ErrorCode::ModelBusy => StatusCode::CONFLICT,
            ErrorCode::ModelAlreadyLoaded => StatusCode::BAD_REQUEST,
            ErrorCode::ModelNotLoaded => StatusCode::BAD_REQUEST,
            ErrorCode::ModelLoadFailed => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ModelUnsupported => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InsufficientMemory => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::InsufficientDisk => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::DownloadFailed => StatusCode::BAD_GATEWAY,
            ErrorCode::DownloadCancelled => {
                StatusCode::from_u16(499).expect("499 is a valid status code")
            }
            ErrorCode::RepoNotFound => StatusCode::NOT_FOUND,
            ErrorCode::GatedModelNoToken => StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidHfToken => StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidLocalPath => StatusCode::BAD_REQUEST,
            ErrorCode::InvalidState => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::ModelLocked => StatusCode::CONFLICT,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::ModelNotFound => "MODEL_NOT_FOUND",
            ErrorCode::ModelAlreadyExists => "MODEL_ALREADY_EXISTS",
            ErrorCode::ModelBusy => "MODEL_BUSY",
            ErrorCode::ModelAlreadyLoaded => "MODEL_ALREADY_LOADED",
            ErrorCode::ModelNotLoaded => "MODEL_NOT_LOADED",
            ErrorCode::ModelLoadFailed => "MODEL_LOAD_FAILED",
            ErrorCode::ModelUnsupported => "MODEL_UNSUPPORTED",
            ErrorCode::InsufficientMemory => "INSUFFICIENT_MEMORY",
            ErrorCode::InsufficientDisk => "INSUFFICIENT_DISK",
            ErrorCode::DownloadFailed => "DOWNLOAD_FAILED",
            ErrorCode::DownloadCancelled => "DOWNLOAD_CANCELLED",
            ErrorCode::RepoNotFound => "REPO_NOT_FOUND",
            ErrorCode::GatedModelNoToken => "GATED_MODEL_NO_TOKEN",
            ErrorCode::InvalidHfToken => "INVALID_HF_TOKEN",
            ErrorCode::InvalidLocalPath => "INVALID_LOCAL_PATH",
            ErrorCode::InvalidState => "INVALID_STATE",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::ModelLocked => "MODEL_LOCKED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// An error as the API reports it: code, a sentence a person can act on, machine details,
/// and (for 5xx) the underlying cause, which is logged and never sent.
#[derive(Debug)]
pub struct AppError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Map<String, Value>,
    pub source: Option<anyhow::Error>,
}

/// The `error` object of the envelope.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError {
            code,
            message: message.into(),
            details: Map::new(),
            source: None,
        }
    }

    /// Adds one machine-readable detail.
    pub fn with_detail(mut self, key: &str, value: impl Serialize) -> Self {
        self.details.insert(
            key.to_string(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    pub fn with_source(mut self, source: impl Into<anyhow::Error>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }

    pub fn validation_field(field: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message).with_detail("field", field)
    }

    pub fn model_not_found(id: i64) -> Self {
        Self::new(
            ErrorCode::ModelNotFound,
            format!("Model {id} does not exist."),
        )
        .with_detail("model_id", id)
    }

    pub fn already_exists(existing_model_id: i64, what: &str) -> Self {
        Self::new(
            ErrorCode::ModelAlreadyExists,
            format!("A model with the same {what} is already registered (id {existing_model_id})."),
        )
        .with_detail("existing_model_id", existing_model_id)
    }

    pub fn busy(id: i64, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ModelBusy, message).with_detail("model_id", id)
    }

    /// A load refused because another model is loaded and locked.
    pub fn locked(locked_id: i64, locked_name: &str) -> Self {
        Self::new(
            ErrorCode::ModelLocked,
            format!("Model {locked_id} ({locked_name}) is locked in memory; unlock it first."),
        )
        .with_detail("locked_model_id", locked_id)
    }

    pub fn invalid_state(id: i64, status: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidState, message)
            .with_detail("model_id", id)
            .with_detail("status", status)
    }

    pub fn invalid_local_path(path: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(
            ErrorCode::InvalidLocalPath,
            format!("Cannot use '{path}' as a model folder: {reason}."),
        )
        .with_detail("local_path", path)
        .with_detail("reason", reason)
    }

    pub fn insufficient_memory(required_mb: u64, available_mb: u64, device: &str) -> Self {
        Self::new(
            ErrorCode::InsufficientMemory,
            format!(
                "Not enough memory on {device}: the model needs about {required_mb} MB and {available_mb} MB are free. Unload other work or pick a smaller quantization."
            ),
        )
        .with_detail("required_mb", required_mb)
        .with_detail("available_mb", available_mb)
        .with_detail("device", device)
    }

    pub fn insufficient_disk(required_mb: u64, available_mb: u64) -> Self {
        Self::new(
            ErrorCode::InsufficientDisk,
            format!(
                "Not enough disk space: the download needs {required_mb} MB and {available_mb} MB are free in the model cache."
            ),
        )
        .with_detail("required_mb", required_mb)
        .with_detail("available_mb", available_mb)
    }

    /// 401: an API key is configured and the request brings none or another one. The same
    /// answer either way, so it tells nothing about the key.
    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "This server needs an API key: send it as 'Authorization: Bearer <key>'.",
        )
    }

    /// 403: a `Host` this server does not answer to, or a state-changing request from a foreign
    /// web page.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        Self::new(
            ErrorCode::InternalError,
            "The server hit an unexpected error. It has been logged; please try again.",
        )
        .with_source(source)
    }

    /// The `error` object as it appears in the envelope and in events.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message.clone(),
            details: self.details.clone(),
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        if status.is_server_error() {
            match &self.source {
                Some(source) => {
                    tracing::error!(code = self.code.as_str(), error = ?source, "{}", self.message)
                }
                None => tracing::error!(code = self.code.as_str(), "{}", self.message),
            }
        }
        let body = json!({"success": false, "data": null, "error": self.body()});
        (status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(id) => AppError::model_not_found(id),
            StoreError::Conflict {
                existing_model_id,
                what,
            } => AppError::already_exists(existing_model_id, what),
            other => AppError::internal(other),
        }
    }
}

impl From<EngineError> for AppError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::InvalidFolder { path, reason } => {
                AppError::invalid_local_path(&path, reason)
            }
            EngineError::BadCheckpoint(reason) => AppError::new(
                ErrorCode::ModelLoadFailed,
                format!("The model's weights cannot be used: {reason}."),
            ),
            EngineError::Cancelled => AppError::new(
                ErrorCode::ModelLoadFailed,
                "The load was cancelled because the server is shutting down.",
            ),
            EngineError::Io(e) => AppError::internal(e),
        }
    }
}

/// Shorthand for handler and service results.
pub type AppResult<T> = Result<T, AppError>;

impl From<crate::hub::HubError> for AppError {
    fn from(err: crate::hub::HubError) -> Self {
        use crate::hub::HubError;
        match err {
            HubError::RepoNotFound { repo } => AppError::new(
                ErrorCode::RepoNotFound,
                format!("Model '{repo}' was not found on the Hub. Check the name; a private repository also needs an access token that can read it."),
            )
            .with_detail("repo_id", repo),
            HubError::RevisionNotFound { repo, revision } => AppError::new(
                ErrorCode::RepoNotFound,
                format!("Revision '{revision}' of '{repo}' does not exist on the Hub. Use a branch, tag or commit of the repository."),
            )
            .with_detail("repo_id", repo)
            .with_detail("revision", revision),
            HubError::EntryNotFound { repo, path } => AppError::new(
                ErrorCode::DownloadFailed,
                format!("The file '{path}' of '{repo}' is missing on the Hub at this revision."),
            )
            .with_detail("repo_id", repo)
            .with_detail("path", path),
            HubError::Gated { repo, had_token } => {
                let message = if had_token {
                    format!("Model '{repo}' is gated and this token has no access. Accept the model's terms on the Hub with the token's account, then retry.")
                } else {
                    format!("Model '{repo}' is gated. Provide an access token and accept the model's terms on the Hub.")
                };
                AppError::new(ErrorCode::GatedModelNoToken, message).with_detail("repo_id", repo)
            }
            HubError::InvalidToken => AppError::new(
                ErrorCode::InvalidHfToken,
                "The Hub rejected the access token. Check it, or create a new one in your Hub settings.",
            ),
            HubError::Unsupported(reason) => AppError::new(ErrorCode::ModelUnsupported, reason),
            HubError::UnsafePath(path) => AppError::new(
                ErrorCode::ModelUnsupported,
                format!("The repository lists a file name that would land outside the model cache ('{path}'); it is refused."),
            )
            .with_detail("path", path),
            HubError::InsufficientDisk { required, available } => AppError::insufficient_disk(
                crate::domain::mib_ceil(required),
                available >> 20,
            ),
            HubError::Checksum {
                path,
                algorithm,
                expected,
                actual,
            } => {
                let key = algorithm.replace('-', "_");
                AppError::new(
                    ErrorCode::DownloadFailed,
                    format!("The downloaded '{path}' does not match the Hub's checksum; the partial file was removed. Retry the download."),
                )
                .with_detail("path", path)
                .with_detail(&format!("expected_{key}"), expected)
                .with_detail(&format!("actual_{key}"), actual)
            }
            HubError::Transient(reason) | HubError::Failed(reason) => AppError::new(
                ErrorCode::DownloadFailed,
                format!("The Hub download failed: {reason}. Retry the download."),
            ),
            HubError::Cancelled => AppError::new(ErrorCode::DownloadCancelled, "Download cancelled by user"),
            HubError::Io(e) => AppError::new(
                ErrorCode::DownloadFailed,
                format!("Writing to the model cache failed: {e}."),
            )
            .with_source(e),
        }
    }
}
