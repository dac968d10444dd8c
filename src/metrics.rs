//! Prometheus metrics: the registry, the small functions the services call when something
//! happens, the HTTP middleware, and the text rendering served at `GET /metrics`.
//!
//! The registry is process-wide, the one exception to "no globals": a counter is bumped deep in
//! a download's chunk loop, where threading a handle through would touch every signature, and
//! a process serves one app. Figures that belong to one app (loaded model memory, device
//! memory) are read from its state at scrape time instead (see `api::metrics`), so they are
//! exact and never drift.

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How a download ended, the `outcome` label of `millm_download_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadOutcome {
    Completed,
    Failed,
    Cancelled,
}

impl DownloadOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DownloadOutcome::Completed => "completed",
            DownloadOutcome::Failed => "failed",
            DownloadOutcome::Cancelled => "cancelled",
        }
    }
}

/// How a load ended, the `outcome` label of `millm_load_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOutcome {
    Loaded,
    Failed,
}

impl LoadOutcome {
    /// `Loaded` for `Ok`, `Failed` for `Err`.
    pub fn from_result<T, E>(result: &Result<T, E>) -> Self {
        if result.is_ok() {
            LoadOutcome::Loaded
        } else {
            LoadOutcome::Failed
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LoadOutcome::Loaded => "loaded",
            LoadOutcome::Failed => "failed",
        }
    }
}

struct Metrics {
    registry: Registry,
    download_bytes: IntCounter,
    downloads_active: IntGauge,
    download_duration: HistogramVec,
    load_duration: HistogramVec,
    loaded_memory: IntGauge,
    device_total: IntGaugeVec,
    device_free: IntGaugeVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    prompt_tokens: IntCounterVec,
    completion_tokens: IntCounterVec,
    time_to_first_token: HistogramVec,
    time_per_token: HistogramVec,
    inference_queue: IntGauge,
    inference_requests: IntCounterVec,
    tokens_per_second: prometheus::Gauge,
}

/// Registers a collector; the names are constants, so a failure is a programming error.
fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique constants");
    c
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let r = Registry::new();
    let build = IntGaugeVec::new(
        Opts::new("millm_build_info", "miLLM version, always 1"),
        &["version"],
    )
    .expect("valid metric");
    register(&r, build.clone())
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    Metrics {
        download_bytes: register(
            &r,
            IntCounter::new(
                "millm_download_bytes_total",
                "Bytes received from the Hub by model downloads",
            )
            .expect("valid metric"),
        ),
        downloads_active: register(
            &r,
            IntGauge::new("millm_downloads_active", "Model downloads running now")
                .expect("valid metric"),
        ),
        download_duration: register(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "millm_download_duration_seconds",
                    "How long model downloads took, by outcome (completed, failed, cancelled)",
                )
                .buckets(vec![
                    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
                ]),
                &["outcome"],
            )
            .expect("valid metric"),
        ),
        load_duration: register(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "millm_load_duration_seconds",
                    "How long model loads took, by quantization and outcome (loaded, failed)",
                )
                .buckets(vec![
                    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                ]),
                &["quantization", "outcome"],
            )
            .expect("valid metric"),
        ),
        loaded_memory: register(
            &r,
            IntGauge::new(
                "millm_loaded_model_memory_bytes",
                "Bytes held by the loaded model (0 when none is loaded)",
            )
            .expect("valid metric"),
        ),
        device_total: register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "millm_device_memory_total_bytes",
                    "Total memory of the device models load onto",
                ),
                &["device"],
            )
            .expect("valid metric"),
        ),
        device_free: register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "millm_device_memory_free_bytes",
                    "Free memory of the device models load onto",
                ),
                &["device"],
            )
            .expect("valid metric"),
        ),
        http_requests: register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "millm_http_requests_total",
                    "HTTP requests answered, by method, route template and status",
                ),
                &["method", "route", "status"],
            )
            .expect("valid metric"),
        ),
        http_duration: register(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "millm_http_request_duration_seconds",
                    "Time to answer HTTP requests, by method and route template",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
                &["method", "route"],
            )
            .expect("valid metric"),
        ),
        prompt_tokens: register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "millm_prompt_tokens_total",
                    "Prompt tokens read by /v1 requests, by endpoint (chat, completions, embeddings)",
                ),
                &["endpoint"],
            )
            .expect("valid metric"),
        ),
        completion_tokens: register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "millm_completion_tokens_total",
                    "Tokens generated by /v1 requests, by endpoint",
                ),
                &["endpoint"],
            )
            .expect("valid metric"),
        ),
        time_to_first_token: register(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "millm_time_to_first_token_seconds",
                    "From a generation request's arrival (queue wait included) to its first token",
                )
                .buckets(vec![
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ]),
                &["endpoint"],
            )
            .expect("valid metric"),
        ),
        time_per_token: register(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "millm_time_per_output_token_seconds",
                    "Time between consecutive generated tokens",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &["endpoint"],
            )
            .expect("valid metric"),
        ),
        inference_queue: register(
            &r,
            IntGauge::new(
                "millm_inference_queue_depth",
                "Generation requests waiting for the model while one runs",
            )
            .expect("valid metric"),
        ),
        inference_requests: register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "millm_inference_requests_total",
                    "/v1 generation and embedding requests by endpoint and outcome (stop, length, \
                     cancelled: the client left, failed: unloaded or an error while answering, \
                     rejected: answered with an error before generating)",
                ),
                &["endpoint", "outcome"],
            )
            .expect("valid metric"),
        ),
        tokens_per_second: register(
            &r,
            prometheus::Gauge::new(
                "millm_tokens_per_second",
                "Generated tokens per second over the last minute's generations (0 without any)",
            )
            .expect("valid metric"),
        ),
        registry: r,
    }
});

/// How a `/v1` request ended, the `outcome` label of `millm_inference_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InferenceOutcome {
    Stop,
    Length,
    Cancelled,
    Failed,
    Rejected,
}

impl InferenceOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            InferenceOutcome::Stop => "stop",
            InferenceOutcome::Length => "length",
            InferenceOutcome::Cancelled => "cancelled",
            InferenceOutcome::Failed => "failed",
            InferenceOutcome::Rejected => "rejected",
        }
    }
}

/// A `/v1` request on `endpoint` ended.
pub fn inference_request(endpoint: &str, outcome: InferenceOutcome) {
    METRICS
        .inference_requests
        .with_label_values(&[endpoint, outcome.as_str()])
        .inc();
}

/// A generation (or embedding) on `endpoint` read `prompt` tokens and wrote `completion`;
/// `first_token` after its arrival, then one gap per further token.
pub fn generation(
    endpoint: &str,
    prompt: usize,
    completion: usize,
    first_token: Option<Duration>,
    gaps: &[f64],
) {
    METRICS
        .prompt_tokens
        .with_label_values(&[endpoint])
        .inc_by(prompt as u64);
    METRICS
        .completion_tokens
        .with_label_values(&[endpoint])
        .inc_by(completion as u64);
    if let Some(t) = first_token {
        METRICS
            .time_to_first_token
            .with_label_values(&[endpoint])
            .observe(t.as_secs_f64());
    }
    let per_token = METRICS.time_per_token.with_label_values(&[endpoint]);
    for gap in gaps {
        per_token.observe(*gap);
    }
}

/// A request starts (`true`) or stops (`false`) waiting for the model.
pub fn inference_waiting(waiting: bool) {
    if waiting {
        METRICS.inference_queue.inc();
    } else {
        METRICS.inference_queue.dec();
    }
}

/// The last minute's tokens per second, as the app's window holds it at scrape time.
pub fn tokens_per_second(rate: Option<f64>) {
    METRICS.tokens_per_second.set(rate.unwrap_or(0.0));
}

/// `n` more bytes arrived from the Hub.
pub fn download_bytes(n: u64) {
    METRICS.download_bytes.inc_by(n);
}

/// The downloads running now, as the app's download table holds them at scrape time.
pub fn downloads_active(count: usize) {
    METRICS.downloads_active.set(clamp(count as u64));
}

/// A download job ended after `duration`.
pub fn download_finished(duration: Duration, outcome: DownloadOutcome) {
    METRICS
        .download_duration
        .with_label_values(&[outcome.as_str()])
        .observe(duration.as_secs_f64());
}

/// A load ended after `duration`.
pub fn load_finished(duration: Duration, quantization: &str, outcome: LoadOutcome) {
    METRICS
        .load_duration
        .with_label_values(&[quantization, outcome.as_str()])
        .observe(duration.as_secs_f64());
}

/// The bytes the loaded model holds, or 0 when none is loaded.
pub fn loaded_memory(bytes: u64) {
    METRICS.loaded_memory.set(clamp(bytes));
}

/// The load device's memory now; replaces what an earlier scrape set.
pub fn device_memory(device: &str, total_bytes: u64, free_bytes: u64) {
    METRICS.device_total.reset();
    METRICS.device_free.reset();
    METRICS
        .device_total
        .with_label_values(&[device])
        .set(clamp(total_bytes));
    METRICS
        .device_free
        .with_label_values(&[device])
        .set(clamp(free_bytes));
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Every metric in the Prometheus text format.
pub fn render() -> String {
    let mut out = Vec::new();
    let families = METRICS.registry.gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!("cannot encode metrics: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The `method` label: the standard methods by name, anything else as `other`, so a client
/// sending made-up methods cannot multiply the series.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Middleware: counts each request and times it under its route template (`/api/models/{id}`),
/// so ids do not multiply the series. Requests no route matched (web UI files, unknown paths)
/// share the route `unmatched`.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    METRICS
        .http_requests
        .with_label_values(&[method, route.as_str(), status.as_str()])
        .inc();
    METRICS
        .http_duration
        .with_label_values(&[method, route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_per_second_is_the_tokens_over_their_time() {
        let t = Throughput::default();
        assert_eq!(t.per_second(), None);
        t.record(10, Duration::from_millis(500));
        t.record(30, Duration::from_millis(1500));
        let rate = t.per_second().expect("two generations");
        assert!((rate - 20.0).abs() < 1e-9, "{rate}");
        t.record(0, Duration::ZERO);
        assert!((t.per_second().unwrap() - 20.0).abs() < 1e-9);
    }

    /// The value of the first sample line that starts with `prefix`.
    fn sample(text: &str, prefix: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    #[test]
    fn download_functions_show_in_the_rendering() {
        let before = render();
        downloads_active(1);
        download_bytes(1234);
        download_finished(Duration::from_millis(1500), DownloadOutcome::Cancelled);
        let after = render();
        assert!(
            sample(&after, "millm_download_bytes_total")
                >= sample(&before, "millm_download_bytes_total") + 1234.0
        );
        let count = "millm_download_duration_seconds_count{outcome=\"cancelled\"}";
        assert!(sample(&after, count) >= sample(&before, count) + 1.0);
        assert!(after.contains("# TYPE millm_downloads_active gauge"));
    }

    #[test]
    fn made_up_methods_share_one_label() {
        let made_up = axum::http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&made_up), "other");
        assert_eq!(method_label(&axum::http::Method::DELETE), "DELETE");
    }

    #[test]
    fn load_and_device_figures_are_labelled() {
        load_finished(Duration::from_secs(2), "Q4", LoadOutcome::Loaded);
        device_memory("cpu", 8 << 30, 2 << 30);
        let text = render();
        assert!(text.contains(
            "millm_load_duration_seconds_bucket{outcome=\"loaded\",quantization=\"Q4\",le=\"2.5\"}"
        ));
        assert!(text.contains("millm_device_memory_total_bytes{device=\"cpu\"} 8589934592"));
        assert!(text.contains("millm_build_info{version=\""));
    }
}

/// The generations of the last minute: when each ended, its decoded tokens and their time.
/// One per app (not in the process-wide registry): the services record, the health route and
/// the `system:metrics` event read.
#[derive(Default)]
pub struct Throughput {
    recent: Mutex<VecDeque<(Instant, usize, Duration)>>,
}

/// The window `tokens_per_second` covers.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(60);

impl Throughput {
    pub fn record(&self, tokens: usize, took: Duration) {
        if tokens == 0 || took.is_zero() {
            return;
        }
        let mut recent = crate::sync::lock(&self.recent);
        let now = Instant::now();
        recent.retain(|(at, _, _)| now.duration_since(*at) < THROUGHPUT_WINDOW);
        recent.push_back((now, tokens, took));
    }

    pub fn per_second(&self) -> Option<f64> {
        let recent = crate::sync::lock(&self.recent);
        let now = Instant::now();
        let (tokens, secs) = recent
            .iter()
            .filter(|(at, _, _)| now.duration_since(*at) < THROUGHPUT_WINDOW)
            .fold((0usize, 0f64), |(n, s), (_, t, d)| {
                (n + t, s + d.as_secs_f64())
            });
        (tokens > 0 && secs > 0.0).then(|| tokens as f64 / secs)
    }
}
