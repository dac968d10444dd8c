//! `/api/models`: list, show, create (Hub download or local folder), delete.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use utoipa_axum::{router::OpenApiRouter, routes};

use std::sync::{Arc, Mutex};

use super::extract::{ApiJson, IdPath};
use super::schema::{DeleteResponse, Envelope, ModelDownloadRequest, ModelResponse};
use super::{ok, ApiOk};
use crate::app::AppState;
use crate::domain::{Quantization, Source};
use crate::error::{AppError, AppResult, ErrorBody};
use crate::service::Services;
use crate::store::ModelRecord;
use crate::sync::lock;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models, create_model))
        .routes(routes!(get_model, delete_model))
}

/// Every model, newest first.
#[utoipa::path(get, path = "/api/models", tag = "models",
    responses((status = 200, description = "All models", body = Envelope<Vec<ModelResponse>>)))]
async fn list_models(State(state): State<AppState>) -> AppResult<Response> {
    let rows = state.model_list.rows(&state.services).await?;
    let services = &state.services;
    let mut body = Vec::with_capacity(rows.bytes + 64);
    body.extend_from_slice(br#"{"success":true,"data":["#);
    for (i, row) in rows.rows.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        match row {
            ListRow::Fixed(bytes) => body.extend_from_slice(bytes),
            ListRow::Live(record) => {
                let view = ModelResponse::from(services.view(record.as_ref().clone()));
                serde_json::to_writer(&mut body, &view).map_err(AppError::internal)?;
            }
        }
    }
    body.extend_from_slice(br#"],"error":null}"#);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(body),
    )
        .into_response())
}

/// The rows of `GET /api/models`, kept for one registry generation: clients poll this list,
/// and at 10,000 rows reading and serializing them costs tens of milliseconds. A row whose
/// figures move without a registry change (a download's bytes, the loaded model's facts) is
/// kept as its record and serialized again on every request.
#[derive(Default)]
pub struct ListCache(Mutex<Option<Arc<ListRows>>>);

/// One generation's rows.
pub struct ListRows {
    generation: u64,
    rows: Vec<ListRow>,
    /// Bytes of the fixed rows, to size the body.
    bytes: usize,
}

enum ListRow {
    Fixed(Bytes),
    Live(Box<ModelRecord>),
}

impl ListCache {
    /// The rows of the current generation, read and serialized again when it has moved.
    async fn rows(&self, services: &Services) -> AppResult<Arc<ListRows>> {
        // Read before the records: a change that lands in between makes the next request
        // read again, never a stale list live on.
        let generation = services.registry_generation();
        if let Some(rows) = lock(&self.0)
            .as_ref()
            .filter(|r| r.generation == generation)
        {
            return Ok(rows.clone());
        }
        let records = services.list_records().await?;
        let mut bytes = 0;
        let mut rows = Vec::with_capacity(records.len());
        for record in records {
            if Services::has_live_figures(&record) {
                rows.push(ListRow::Live(Box::new(record)));
            } else {
                let view = ModelResponse::from(services.view(record));
                let fixed = Bytes::from(serde_json::to_vec(&view).map_err(AppError::internal)?);
                bytes += fixed.len() + 1;
                rows.push(ListRow::Fixed(fixed));
            }
        }
        let rows = Arc::new(ListRows {
            generation,
            rows,
            bytes,
        });
        *lock(&self.0) = Some(rows.clone());
        Ok(rows)
    }
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
    Ok(ok(state.services.get_model(id).await?.into()))
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
    let services = &state.services;
    let quantization = req.quantization.unwrap_or(Quantization::Q4);
    let model = match req.source {
        Source::Local => {
            services
                .register_local(
                    req.local_path.as_deref(),
                    quantization,
                    req.custom_name.as_deref(),
                )
                .await?
        }
        Source::Huggingface => {
            let custom_name = req.custom_name.clone();
            services
                .start_download(req.into(), quantization, custom_name)
                .await?
        }
    };
    Ok(ApiOk(StatusCode::ACCEPTED, model.into()))
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
    Ok(ok(state.services.delete_model(id).await?.into()))
}
