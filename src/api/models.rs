//! `/api/models`: list, show, create (Hub download or local folder), delete.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use std::sync::{Arc, Mutex};

use super::extract::{ApiJson, IdPath};
use super::schema::{
    CreateModelBody, DeleteResponse, Envelope, ErrorEnvelope, ModelDownloadRequest, ModelResponse,
};
use super::{ok, ApiOk};
use crate::app::AppState;
use crate::domain::{ModelStatus, Quantization, Source};
use crate::error::{AppError, AppResult};
use crate::service::{ModelView, Services};
use crate::store::{ListFilter, ModelRecord};
use crate::sync::lock;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models, create_model))
        .routes(routes!(get_model, delete_model))
}

/// Most rows one page may ask for.
pub const MAX_LIMIT: u64 = 1000;
/// Longest search text.
pub const MAX_QUERY_CHARS: usize = 200;

/// The optional query of `GET /api/models`; without any, every row.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ListParams {
    /// Rows to return, newest first (1–1000); every row when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Rows to skip before the page; default 0.
    #[param(minimum = 0, maximum = 9223372036854775807_u64)]
    offset: Option<u64>,
    /// Only models in this status.
    status: Option<ModelStatus>,
    /// Only models whose name or repo id contains this text (case-insensitive; at most 200
    /// characters; blank = no filter).
    #[param(max_length = 200)]
    q: Option<String>,
}

/// Models, newest first: every one, or a filtered page. `X-Total-Count` is the number of
/// models the filter matches before paging.
#[utoipa::path(get, path = "/api/models", tag = "models",
    params(ListParams),
    responses(
        (status = 200, description = "The models", body = Envelope<Vec<ModelResponse>>,
            headers(("X-Total-Count" = u64, description = "Models matching the filter, before paging"))),
        (status = 422, description = "VALIDATION_ERROR: a bad limit, offset, status or q (details.field)", body = ErrorEnvelope)))]
async fn list_models(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> AppResult<Response> {
    let filter = parse_list_query(query.as_deref())?;
    let services = &state.services;
    let mut body = Vec::new();
    body.extend_from_slice(br#"{"success":true,"data":["#);
    let total = if filter == ListFilter::default() {
        let rows = state.model_list.rows(services).await?;
        body.reserve(rows.bytes + 32);
        for (i, row) in rows.rows.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            match row {
                ListRow::Fixed(bytes) => body.extend_from_slice(bytes),
                ListRow::Live(record) => {
                    write_view(&mut body, services.view(record.as_ref().clone()))?
                }
            }
        }
        rows.rows.len() as u64
    } else {
        let views = services.list_page(&filter).await?;
        for (i, view) in views.into_iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            write_view(&mut body, view)?;
        }
        state.model_list.count(services, &filter).await?
    };
    body.extend_from_slice(br#"],"error":null}"#);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                HeaderName::from_static("x-total-count"),
                HeaderValue::from(total),
            ),
        ],
        Bytes::from(body),
    )
        .into_response())
}

fn write_view(body: &mut Vec<u8>, view: ModelView) -> AppResult<()> {
    serde_json::to_writer(body, &ModelResponse::from(view)).map_err(AppError::internal)
}

/// Reads `limit`, `offset`, `status` and `q`; other parameters are ignored.
fn parse_list_query(query: Option<&str>) -> AppResult<ListFilter> {
    let mut filter = ListFilter::default();
    let number = |field: &str, value: &str, min: u64, max: u64| -> AppResult<u64> {
        value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                AppError::validation_field(
                    field,
                    format!("Query parameter '{field}' must be a whole number from {min} to {max}, got '{value}'."),
                )
            })
    };
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "limit" => filter.limit = Some(number("limit", &value, 1, MAX_LIMIT)?),
            "offset" => filter.offset = number("offset", &value, 0, i64::MAX as u64)?,
            "status" => {
                filter.status = Some(value.trim().parse().map_err(|_| {
                    AppError::validation_field(
                        "status",
                        format!("Query parameter 'status' must be one of downloading, ready, loading, loaded, error; got '{value}'."),
                    )
                })?)
            }
            "q" => {
                let q = value.trim();
                if q.chars().count() > MAX_QUERY_CHARS {
                    return Err(AppError::validation_field(
                        "q",
                        format!("Query parameter 'q' must be at most {MAX_QUERY_CHARS} characters."),
                    ));
                }
                filter.q = (!q.is_empty()).then(|| q.to_string());
            }
            _ => {}
        }
    }
    Ok(filter)
}

/// The rows of `GET /api/models`, kept for one registry generation: clients poll this list,
/// and at 10,000 rows reading and serializing them costs tens of milliseconds. A row whose
/// figures move without a registry change (a download's bytes, the loaded model's facts) is
/// kept as its record and serialized again on every request. Beside them, the number of all
/// models, which every unfiltered page reports (a count of 100,000 rows takes milliseconds).
#[derive(Default)]
pub struct ListCache {
    rows: Mutex<Option<Arc<ListRows>>>,
    /// The registry generation and the number of models then.
    total: Mutex<Option<(u64, u64)>>,
}

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
        if let Some(rows) = lock(&self.rows)
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
        *lock(&self.rows) = Some(rows.clone());
        Ok(rows)
    }

    /// How many models `filter` matches before paging; kept per generation when nothing
    /// filters.
    async fn count(&self, services: &Services, filter: &ListFilter) -> AppResult<u64> {
        if filter.status.is_some() || filter.q.is_some() {
            return services.count_models(filter).await;
        }
        let generation = services.registry_generation();
        if let Some((g, total)) = *lock(&self.total) {
            if g == generation {
                return Ok(total);
            }
        }
        let total = services.count_models(filter).await?;
        *lock(&self.total) = Some((generation, total));
        Ok(total)
    }
}

/// One model.
#[utoipa::path(get, path = "/api/models/{id}", tag = "models",
    params(("id" = i64, Path, description = "Model id (≥ 1)", minimum = 1)),
    responses(
        (status = 200, description = "The model", body = Envelope<ModelResponse>),
        (status = 404, description = "MODEL_NOT_FOUND", body = ErrorEnvelope),
        (status = 422, description = "VALIDATION_ERROR: the id is not an integer from 1 to 2^63−1 (details.field = id)", body = ErrorEnvelope)))]
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
        (status = 400, description = "INVALID_LOCAL_PATH", body = ErrorEnvelope),
        (status = 401, description = "GATED_MODEL_NO_TOKEN or INVALID_HF_TOKEN", body = ErrorEnvelope),
        (status = 404, description = "REPO_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "MODEL_ALREADY_EXISTS", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorEnvelope),
        (status = 422, description = "VALIDATION_ERROR (details.field) or MODEL_UNSUPPORTED (no safetensors weights, or the model needs remote code)", body = ErrorEnvelope),
        (status = 502, description = "DOWNLOAD_FAILED: the Hub did not answer usably after retries", body = ErrorEnvelope),
        (status = 507, description = "INSUFFICIENT_DISK: details.required_mb, details.available_mb", body = ErrorEnvelope)))]
async fn create_model(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateModelBody>,
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
            super::downloads::check_hf_token(req.hf_token.as_deref())?;
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
    params(("id" = i64, Path, description = "Model id (≥ 1)", minimum = 1)),
    responses(
        (status = 200, description = "Deleted", body = Envelope<DeleteResponse>),
        (status = 404, description = "MODEL_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "MODEL_BUSY: loaded, loading or downloading", body = ErrorEnvelope),
        (status = 422, description = "VALIDATION_ERROR: the id is not an integer from 1 to 2^63−1 (details.field = id)", body = ErrorEnvelope)))]
async fn delete_model(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> AppResult<ApiOk<DeleteResponse>> {
    Ok(ok(state.services.delete_model(id).await?.into()))
}
