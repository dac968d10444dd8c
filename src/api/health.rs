//! `GET /api/health/live` (liveness: the process answers) and `GET /api/health` (readiness: the
//! database answers within a bound, with the device's memory and the loaded model).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::schema::{Envelope, HealthResponse, MemoryInfo};
use super::{ok, ApiOk};
use crate::app::AppState;

/// How long readiness waits for the database. Below the 5 s a probe usually allows, so a probe
/// gets a 503 it can count instead of a timeout; the pool's own acquire timeout is 10 s.
const DATABASE_WITHIN: Duration = Duration::from_secs(2);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(live))
}

/// Body of `GET /api/health/live`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LiveResponse {
    /// Always `ok`: the process is up and serving requests.
    pub status: String,
}

/// Liveness: the process answers HTTP.
///
/// Touches neither the database nor the device, so a database outage makes the server not
/// ready but never gets it restarted (which would stop its downloads). Point liveness probes
/// and container health checks here.
#[utoipa::path(get, path = "/api/health/live", tag = "system",
    responses((status = 200, description = "The process is up and serving requests", body = Envelope<LiveResponse>)))]
async fn live() -> ApiOk<LiveResponse> {
    ok(LiveResponse {
        status: "ok".into(),
    })
}

/// Readiness: server, database and device memory status.
///
/// The database ping is bounded to 2 s; when it fails or times out the answer is 503 with the
/// same report (`status: "degraded"`, `database: "unavailable"`), so a readiness probe takes
/// the server out of rotation while a person (and `millm ps`) still sees what failed and the
/// device's memory. Point readiness probes here, liveness probes at `/api/health/live`.
#[utoipa::path(get, path = "/api/health", tag = "system",
    responses(
        (status = 200, description = "Ready: the database answered within 2 s", body = Envelope<HealthResponse>),
        (status = 503, description = "Not ready: the database did not answer within 2 s. The body is the same report, still a success envelope, with `status: \"degraded\"` and `database: \"unavailable\"`", body = Envelope<HealthResponse>),
    ))]
async fn health(State(state): State<AppState>) -> ApiOk<HealthResponse> {
    let services = &state.services;
    let (db_ok, device) = tokio::join!(
        services.database_ready(DATABASE_WITHIN),
        services.device_memory()
    );
    let report = HealthResponse {
        status: if db_ok { "ok" } else { "degraded" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        database: if db_ok { "ok" } else { "unavailable" }.into(),
        database_backend: services.database_backend().into(),
        loaded_model_id: services.loaded_model_id(),
        memory: MemoryInfo {
            device: device.name,
            total_mb: device.total_bytes >> 20,
            free_mb: device.free_bytes >> 20,
        },
        tokens_per_second: services.tokens_per_second(),
    };
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    ApiOk(status, report)
}
