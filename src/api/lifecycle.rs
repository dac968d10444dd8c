//! `/api/models/{id}/load`, `/unload`, `/lock` and `/unlock`.

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::IdPath;
use super::schema::{Envelope, ErrorEnvelope, ModelResponse};
use super::{ok, ApiOk};
use crate::app::AppState;
use crate::error::AppResult;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(load_model))
        .routes(routes!(unload_model))
        .routes(routes!(lock_model))
        .routes(routes!(unlock_model))
}

/// Starts loading the model into memory at its quantization (`loading`); the loaded model, if
/// another, is unloaded first. Completion arrives as `model:load:complete` or `model:load:error`.
#[utoipa::path(post, path = "/api/models/{id}/load", tag = "models",
    params(("id" = i64, Path, description = "Model id (≥ 1)", minimum = 1)),
    responses(
        (status = 202, description = "Loading started", body = Envelope<ModelResponse>),
        (status = 400, description = "MODEL_ALREADY_LOADED", body = ErrorEnvelope),
        (status = 404, description = "MODEL_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "MODEL_BUSY (downloading, or a load is running), INVALID_STATE (no complete download) or MODEL_LOCKED (another model is loaded and locked: details.locked_model_id)", body = ErrorEnvelope),
        (status = 500, description = "MODEL_LOAD_FAILED: the files cannot be loaded", body = ErrorEnvelope),
        (status = 507, description = "INSUFFICIENT_MEMORY: details.required_mb, details.available_mb", body = ErrorEnvelope),
        (status = 422, description = "VALIDATION_ERROR: the id is not an integer from 1 to 2^63−1 (details.field = id)", body = ErrorEnvelope)))]
async fn load_model(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> AppResult<ApiOk<ModelResponse>> {
    let model = state.services.load_model(id).await?;
    Ok(ApiOk(StatusCode::ACCEPTED, model.into()))
}

/// Waits for requests using the model (up to GRACEFUL_UNLOAD_TIMEOUT), frees its memory, and
/// answers with the model `ready`.
#[utoipa::path(post, path = "/api/models/{id}/unload", tag = "models",
    params(("id" = i64, Path, description = "Model id (≥ 1)", minimum = 1)),
    responses(
        (status = 200, description = "Unloaded", body = Envelope<ModelResponse>),
        (status = 400, description = "MODEL_NOT_LOADED", body = ErrorEnvelope),
        (status = 404, description = "MODEL_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "MODEL_BUSY: still loading", body = ErrorEnvelope),
        (status = 422, description = "VALIDATION_ERROR: the id is not an integer from 1 to 2^63−1 (details.field = id)", body = ErrorEnvelope)))]
async fn unload_model(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> AppResult<ApiOk<ModelResponse>> {
    Ok(ok(state.services.unload_model(id).await?.into()))
}

/// Locks the loaded model, as the original does: until its unload, a load of another model
/// (asked here, or on request by `/v1`) is refused with `MODEL_LOCKED`, and it is not unloaded
/// when idle.
#[utoipa::path(post, path = "/api/models/{id}/lock", tag = "models",
    params(("id" = i64, Path, description = "Model id (≥ 1)", minimum = 1)),
    responses(
        (status = 200, description = "Locked", body = Envelope<ModelResponse>),
        (status = 400, description = "MODEL_NOT_LOADED", body = ErrorEnvelope),
        (status = 404, description = "MODEL_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "MODEL_LOCKED: another model is locked (details.locked_model_id)", body = ErrorEnvelope),
        (status = 422, description = "VALIDATION_ERROR: the id is not an integer from 1 to 2^63−1 (details.field = id)", body = ErrorEnvelope)))]
async fn lock_model(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> AppResult<ApiOk<ModelResponse>> {
    Ok(ok(state.services.lock_model(id).await?.into()))
}

/// Unlocks the model; answers with it whether or not it was locked (or loaded).
#[utoipa::path(post, path = "/api/models/{id}/unlock", tag = "models",
    params(("id" = i64, Path, description = "Model id (≥ 1)", minimum = 1)),
    responses(
        (status = 200, description = "Unlocked", body = Envelope<ModelResponse>),
        (status = 404, description = "MODEL_NOT_FOUND", body = ErrorEnvelope),
        (status = 422, description = "VALIDATION_ERROR: the id is not an integer from 1 to 2^63−1 (details.field = id)", body = ErrorEnvelope)))]
async fn unlock_model(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> AppResult<ApiOk<ModelResponse>> {
    Ok(ok(state.services.unlock_model(id).await?.into()))
}
