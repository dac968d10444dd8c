//! `/api/models`: list, show, create (Hub download or local folder), delete.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{ApiJson, IdPath};
use super::schema::{DeleteResponse, Envelope, ModelDownloadRequest, ModelResponse};
use super::{ok, ApiOk};
use crate::app::AppState;
use crate::error::{AppError, AppResult, ErrorBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models, create_model))
        .routes(routes!(get_model, delete_model))
}

/// Every model, newest first.
#[utoipa::path(get, path = "/api/models", tag = "models",
    responses((status = 200, description = "All models", body = Envelope<Vec<ModelResponse>>)))]
async fn list_models(State(state): State<AppState>) -> AppResult<Response> {
    let services = &state.services;
    // Clients poll this list; while nothing changes (no live download, same registry
    // generation, same loaded model) the serialized body is reused.
    let generation = services.store.generation();
    let loaded = services.loaded();
    let live = services.downloads_live();
    if !live {
        if let Some(body) = services.cached_list_body(generation, &loaded) {
            return Ok(json_bytes(body));
        }
    }
    let list = services.list_models().await?;
    let body = super::envelope_bytes(&list).map_err(AppError::internal)?;
    if !live {
        services.cache_list_body(generation, loaded, body.clone());
    }
    Ok(json_bytes(body))
}

fn json_bytes(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
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
