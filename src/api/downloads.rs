//! Hub downloads: `POST /api/models/preview`, `POST /api/models/{id}/cancel`,
//! `POST /api/models/{id}/retry`.

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{ApiJson, IdPath, OptionalJson};
use super::schema::{Envelope, ModelPreviewResponse, ModelResponse, PreviewRequest, RetryRequest};
use super::{ok, ApiOk};
use crate::app::AppState;
use crate::error::{AppResult, ErrorBody};

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
        (status = 401, description = "INVALID_HF_TOKEN", body = Envelope<ErrorBody>),
        (status = 404, description = "REPO_NOT_FOUND: no such repo or revision", body = Envelope<ErrorBody>),
        (status = 422, description = "VALIDATION_ERROR or MODEL_UNSUPPORTED (no safetensors weights)", body = Envelope<ErrorBody>),
        (status = 502, description = "DOWNLOAD_FAILED: the Hub failed after retries", body = Envelope<ErrorBody>)))]
async fn preview(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PreviewRequest>,
) -> AppResult<ApiOk<ModelPreviewResponse>> {
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
    params(("id" = i64, Path, description = "Model id (≥ 1)")),
    responses(
        (status = 200, description = "The model after the cancel", body = Envelope<ModelResponse>),
        (status = 404, description = "MODEL_NOT_FOUND", body = Envelope<ErrorBody>),
        (status = 422, description = "VALIDATION_ERROR: the id is not a positive integer", body = Envelope<ErrorBody>)))]
async fn cancel(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> AppResult<ApiOk<ModelResponse>> {
    Ok(ok(state.services.cancel_download(id).await?.into()))
}

/// Restarts a failed, cancelled or interrupted download, resuming what is on disk. The optional
/// body carries a Hub token for this retry (tokens are never stored).
#[utoipa::path(post, path = "/api/models/{id}/retry", tag = "models",
    params(("id" = i64, Path, description = "Model id (≥ 1)")),
    request_body(content = Option<RetryRequest>, description = "Optional: {hf_token}"),
    responses(
        (status = 202, description = "Accepted: downloading", body = Envelope<ModelResponse>),
        (status = 404, description = "MODEL_NOT_FOUND", body = Envelope<ErrorBody>),
        (status = 409, description = "INVALID_STATE: the model is not a failed or interrupted download (details.status)", body = Envelope<ErrorBody>),
        (status = 422, description = "VALIDATION_ERROR", body = Envelope<ErrorBody>)))]
async fn retry(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    OptionalJson(body): OptionalJson<RetryRequest>,
) -> AppResult<ApiOk<ModelResponse>> {
    let token = body.and_then(|b| b.hf_token);
    let model = state.services.retry_download(id, token).await?;
    Ok(ApiOk(StatusCode::ACCEPTED, model.into()))
}
