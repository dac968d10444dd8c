//! `GET /metrics`: Prometheus text format, outside `/api` and its envelope. The loaded model's
//! and the device's memory and the running downloads are read from this app's state at scrape
//! time.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::app::AppState;
use crate::metrics;

/// The `/metrics` route.
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    let dev = state.services.device_memory().await;
    metrics::device_memory(&dev.name, dev.total_bytes, dev.free_bytes);
    metrics::downloads_active(state.services.running_downloads());
    metrics::tokens_per_second(state.services.tokens_per_second());
    metrics::loaded_memory(
        state
            .services
            .loaded()
            .map(|l| l.memory_footprint)
            .unwrap_or(0),
    );
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(),
    )
}
