//! The HTTP API: the envelope, the routes of `API.md`, the OpenAPI document and `/docs`.

pub mod downloads;
pub mod embeddings;
pub mod extract;
pub mod guard;
pub mod health;
pub mod lifecycle;
pub mod metrics;
pub mod models;
pub mod openai;
pub mod schema;
pub mod security;

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::AppState;
use crate::error::{AppError, ErrorCode};

/// A success answer in the envelope.
pub struct ApiOk<T>(pub StatusCode, pub T);

#[derive(Serialize)]
struct OkEnvelope<'a, T> {
    success: bool,
    data: &'a T,
    error: Option<()>,
}

impl<T: Serialize> IntoResponse for ApiOk<T> {
    fn into_response(self) -> Response {
        // Serialized straight to bytes: no intermediate JSON tree for large lists.
        let body = OkEnvelope {
            success: true,
            data: &self.1,
            error: None,
        };
        (self.0, axum::Json(body)).into_response()
    }
}

/// 200 with `data`.
pub fn ok<T: Serialize>(data: T) -> ApiOk<T> {
    ApiOk(StatusCode::OK, data)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "miLLM",
        description = "Find, download, load and unload large language models. Every /api response is wrapped in the envelope {success, data, error}.",
        license(name = "MIT")
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorCode)),
    tags((name = "models", description = "The model registry and lifecycle"), (name = "system", description = "Health"), (name = "v1", description = "The loaded model in OpenAI's wire format; errors in OpenAI's shape"))
)]
struct ApiDoc;

/// The API routes with their OpenAPI document (the access rules added to every operation).
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(models::router())
        .merge(downloads::router())
        .merge(lifecycle::router())
        .merge(openai::router())
        .split_for_parts();
    utoipa::Modify::modify(&security::AccessControl, &mut doc);
    (router, doc)
}

/// The OpenAPI document as JSON, as served at `/openapi.json`.
pub fn openapi_json() -> String {
    let (_, doc) = routes();
    doc.to_pretty_json().unwrap_or_else(|_| "{}".into())
}

/// The router for `/api`, `/openapi.json`, `/docs` and `/metrics`.
pub fn router() -> Router<AppState> {
    let (api, doc) = routes();
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .merge(metrics::router())
        .method_not_allowed_fallback(method_not_allowed)
}

/// An `/api` path that does not exist.
pub async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::new(
        ErrorCode::NotFound,
        format!("There is no API endpoint {method} {}.", uri.path()),
    )
    .with_detail("path", uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} does not accept {method}.", uri.path()),
    )
    .with_detail("path", uri.path())
    .with_detail("method", method.as_str())
}
