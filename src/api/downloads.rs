//! Hub downloads: `POST /api/models/preview`, `POST /api/models/{id}/cancel`,
//! `POST /api/models/{id}/retry`.

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{ApiJson, IdPath, OptionalJson};
use super::schema::{
    Envelope, ErrorEnvelope, ModelPreviewResponse, ModelResponse, PreviewRequest, RetryRequest,
};
use super::{ok, ApiOk};
use crate::app::AppState;
use crate::error::{AppError, AppResult};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(preview))
        .routes(routes!(cancel))
        .routes(routes!(retry))
}

/// What a Hub repo is and what each quantization will cost, without downloading it: the
/// metadata, and tensor shapes from the safetensors headers (Range requests).
#[utoipa::path(post, path = "/api/models/preview", tag = "models",
    request_body = PreviewRequest,
    responses(
        (status = 200, description = "The preview", body = Envelope<ModelPreviewResponse>),
        (status = 401, description = "INVALID_HF_TOKEN", body = ErrorEnvelope),
        (status = 404, description = "REPO_NOT_FOUND: no such repo or revision", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body is over 1 MiB", body = ErrorEnvelope),
        (status = 422, description = "VALIDATION_ERROR or MODEL_UNSUPPORTED (no safetensors weights)", body = ErrorEnvelope),
        (status = 502, description = "DOWNLOAD_FAILED: the Hub failed after retries", body = ErrorEnvelope)))]
async fn preview(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PreviewRequest>,
) -> AppResult<ApiOk<ModelPreviewResponse>> {
    check_hf_token(req.hf_token.as_deref())?;
    let preview = state
        .services
        .preview(
            &req.repo_id,
            req.revision.as_deref(),
            req.hf_token.as_deref(),
        )
        .await?;
    Ok(ok(preview.into()))
}

/// Stops a running download now: the partial files are removed and the model goes to `error`
/// with "Download cancelled by user". A model that is not downloading is returned unchanged.
#[utoipa::path(post, path = "/api/models/{id}/cancel", tag = "models",
    params(("id" = i64, Path, description = "Model id (≥ 1)", minimum = 1)),
    responses(
        (status = 200, description = "The model after the cancel", body = Envelope<ModelResponse>),
        (status = 404, description = "MODEL_NOT_FOUND", body = ErrorEnvelope),
        (status = 422, description = "VALIDATION_ERROR: the id is not an integer from 1 to 2^63−1 (details.field = id)", body = ErrorEnvelope)))]
async fn cancel(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> AppResult<ApiOk<ModelResponse>> {
    Ok(ok(state.services.cancel_download(id).await?.into()))
}

/// Restarts a failed, cancelled or interrupted download, resuming what is on disk. The optional
/// body carries a Hub token for this retry (tokens are never stored).
#[utoipa::path(post, path = "/api/models/{id}/retry", tag = "models",
    params(("id" = i64, Path, description = "Model id (≥ 1)", minimum = 1)),
    request_body(content = Option<RetryRequest>, description = "Optional: {hf_token}, or null, or no body"),
    responses(
        (status = 202, description = "Accepted: downloading", body = Envelope<ModelResponse>),
        (status = 404, description = "MODEL_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "INVALID_STATE: the model is not a failed or interrupted download (details.status), or MODEL_BUSY: it changed state meanwhile", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body is over 1 MiB", body = ErrorEnvelope),
        (status = 422, description = "VALIDATION_ERROR: a bad id or body (details.field)", body = ErrorEnvelope)))]
async fn retry(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    OptionalJson(body): OptionalJson<RetryRequest>,
) -> AppResult<ApiOk<ModelResponse>> {
    let token = body.and_then(|b| b.hf_token);
    check_hf_token(token.as_deref())?;
    let model = state.services.retry_download(id, token).await?;
    Ok(ApiOk(StatusCode::ACCEPTED, model.into()))
}

/// Longest Hub token accepted.
const MAX_TOKEN_CHARS: usize = 1024;

/// A Hub token must be something an HTTP header can carry: visible ASCII once surrounding
/// white space is trimmed (blank means none). Anything else is `VALIDATION_ERROR` on
/// `hf_token` rather than a request the Hub client cannot even build.
pub(super) fn check_hf_token(token: Option<&str>) -> AppResult<()> {
    let Some(token) = token.map(str::trim) else {
        return Ok(());
    };
    if token.len() > MAX_TOKEN_CHARS || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::validation_field(
            "hf_token",
            format!("Field 'hf_token' must be at most {MAX_TOKEN_CHARS} visible ASCII characters (a Hub token looks like hf_…)."),
        ));
    }
    Ok(())
}
