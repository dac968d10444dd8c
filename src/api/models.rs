//! `/api/models`: list, show, create (Hub download or local folder), delete.

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{ApiJson, IdPath};
use super::schema::{DeleteResponse, Envelope, ModelDownloadRequest, ModelResponse};
use super::{ok, ApiOk};
use crate::app::AppState;
use crate::error::{AppResult, ErrorBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models, create_model))
        .routes(routes!(get_model, delete_model))
}

/// Every model, newest first.
#[utoipa::path(get, path = "/api/models", tag = "models",
    responses((status = 200, description = "All models", body = Envelope<Vec<ModelResponse>>)))]
async fn list_models(State(state): State<AppState>) -> AppResult<ApiOk<Vec<ModelResponse>>> {
    Ok(ok(state.services.list_models().await?))
}

/// One model.
#[utoipa::path(get, path = "/api/models/{id}", tag = "models",
    params(("id" = i64, Path, description = "Model id (≥ 1)")),
    responses(
        (status = 200, description = "The model", body = Envelope<ModelResponse>),
        (status = 404, description = "MODEL_NOT_FOUND", body = Envelope<ErrorBody>),
        (status = 422, description = "VALIDATION_ERROR: the id is not a positive integer", body = Envelope<ErrorBody>)))]
async fn get_model(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> AppResult<ApiOk<ModelResponse>> {
    Ok(ok(state.services.get_model(id).await?))
}

/// Starts a Hub download (`downloading`) or registers a local folder (`ready`).
#[utoipa::path(post, path = "/api/models", tag = "models",
    request_body = ModelDownloadRequest,
    responses(
        (status = 202, description = "Accepted: downloading, or ready for a local folder", body = Envelope<ModelResponse>),
        (status = 400, description = "INVALID_LOCAL_PATH", body = Envelope<ErrorBody>),
        (status = 401, description = "GATED_MODEL_NO_TOKEN or INVALID_HF_TOKEN", body = Envelope<ErrorBody>),
        (status = 404, description = "REPO_NOT_FOUND", body = Envelope<ErrorBody>),
        (status = 409, description = "MODEL_ALREADY_EXISTS", body = Envelope<ErrorBody>),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = Envelope<ErrorBody>),
        (status = 422, description = "VALIDATION_ERROR or MODEL_UNSUPPORTED", body = Envelope<ErrorBody>),
        (status = 507, description = "INSUFFICIENT_DISK", body = Envelope<ErrorBody>)))]
async fn create_model(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ModelDownloadRequest>,
) -> AppResult<ApiOk<ModelResponse>> {
    let model = state.services.create_model(req).await?;
    Ok(ApiOk(StatusCode::ACCEPTED, model))
}

/// Removes the record and the files this server downloaded for it — never a local model's
/// own folder, never files another record still uses.
#[utoipa::path(delete, path = "/api/models/{id}", tag = "models",
    params(("id" = i64, Path, description = "Model id (≥ 1)")),
    responses(
        (status = 200, description = "Deleted", body = Envelope<DeleteResponse>),
        (status = 404, description = "MODEL_NOT_FOUND", body = Envelope<ErrorBody>),
        (status = 409, description = "MODEL_BUSY: loaded, loading or downloading", body = Envelope<ErrorBody>)))]
async fn delete_model(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> AppResult<ApiOk<DeleteResponse>> {
    Ok(ok(state.services.delete_model(id).await?))
}
