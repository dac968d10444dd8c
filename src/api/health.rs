//! `GET /api/health`.

use axum::extract::State;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::schema::{Envelope, HealthResponse, MemoryInfo};
use super::{ok, ApiOk};
use crate::app::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

/// Server, database and device memory status.
#[utoipa::path(get, path = "/api/health", tag = "system",
    responses((status = 200, description = "The server is up", body = Envelope<HealthResponse>)))]
async fn health(State(state): State<AppState>) -> ApiOk<HealthResponse> {
    let db_ok = state.services.store.ping().await;
    let devices = state.services.devices.clone();
    let dev = tokio::task::spawn_blocking(move || devices.current())
        .await
        .ok();
    let memory = match dev {
        Some(d) => MemoryInfo {
            device: d.name,
            total_mb: d.total_bytes >> 20,
            free_mb: d.free_bytes >> 20,
        },
        None => MemoryInfo {
            device: "cpu".into(),
            total_mb: 0,
            free_mb: 0,
        },
    };
    ok(HealthResponse {
        status: if db_ok { "ok" } else { "degraded" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        database: if db_ok { "ok" } else { "unavailable" }.into(),
        database_backend: state.services.store.backend().as_str().into(),
        loaded_model_id: state.services.loaded().map(|l| l.model_id),
        memory,
    })
}
