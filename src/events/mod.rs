//! Live events: the payload of each Socket.IO event as one typed struct (serialized by the
//! server, read back by the CLI's follower), the event names, the pacing of progress events,
//! and the sender. Every event is sent on the default namespace `/` and, identically, on
//! `/progress`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::SocketIo;
use tokio_util::sync::CancellationToken;

use crate::api::guard::{bearer, KeyCheck};
use crate::engine::Devices;
use crate::error::AppError;
use crate::metrics::Throughput;

/// The namespaces every event goes to.
pub const NAMESPACES: [&str; 2] = ["/", "/progress"];
/// Clients that emitted `system:join` are in this room and get `system:metrics`.
const METRICS_ROOM: &str = "system-metrics";
/// The event a client emits to receive `system:metrics`.
pub const SYSTEM_JOIN: &str = "system:join";
/// How often `system:metrics` is sent.
pub const METRICS_PERIOD: Duration = Duration::from_secs(2);
/// Progress events are sent at most this often per job (~4 per second).
pub const PROGRESS_PERIOD: Duration = crate::hub::job::PROGRESS_PERIOD;

/// `model:download:progress`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownloadProgress {
    pub model_id: i64,
    /// 0–100.
    pub progress: u8,
    pub downloaded_bytes: u64,
    pub total_bytes: u64,
    pub speed_bps: u64,
}

/// `model:download:complete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownloadComplete {
    pub model_id: i64,
    pub local_path: String,
}

/// The `error` of a failed job: the envelope's code and message (and, for downloads, details).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Map<String, Value>>,
}

impl JobError {
    /// With the error's details, as download errors carry them.
    pub fn detailed(err: &AppError) -> Self {
        JobError {
            code: err.code.as_str().to_string(),
            message: err.message.clone(),
            details: Some(err.details.clone()),
        }
    }

    /// Code and message only, as load errors carry them.
    pub fn brief(err: &AppError) -> Self {
        JobError {
            code: err.code.as_str().to_string(),
            message: err.message.clone(),
            details: None,
        }
    }
}

/// `model:download:error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownloadError {
    pub model_id: i64,
    pub error: JobError,
}

/// `model:load:progress`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadProgress {
    pub model_id: i64,
    pub stage: String,
    /// 0–100 within the stage.
    pub progress: u8,
}

/// `model:load:complete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadComplete {
    pub model_id: i64,
    pub memory_used_mb: u64,
}

/// `model:load:error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadError {
    pub model_id: i64,
    pub error: JobError,
}

/// `model:unload:complete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnloadComplete {
    pub model_id: i64,
}

/// `system:metrics`: the original's keys (snake_case, zeros without a GPU) plus the memory of
/// the device models load onto.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemMetrics {
    pub gpu_utilization: u32,
    pub gpu_memory_used_mb: u64,
    pub gpu_memory_total_mb: u64,
    pub gpu_temperature: u32,
    pub device: String,
    pub memory_total_mb: u64,
    pub memory_free_mb: u64,
    /// Completion tokens per second over the last minute's generations; null without any.
    pub tokens_per_second: Option<f64>,
}

impl SystemMetrics {
    /// The figures of the device as read now.
    pub async fn read(devices: &Devices, throughput: &Throughput) -> Self {
        let dev = devices.read().await;
        let gpu = dev.gpu.unwrap_or_default();
        SystemMetrics {
            gpu_utilization: gpu.utilization,
            gpu_memory_used_mb: gpu.memory_used_mb,
            gpu_memory_total_mb: gpu.memory_total_mb,
            gpu_temperature: gpu.temperature,
            device: dev.name,
            memory_total_mb: dev.total_bytes >> 20,
            memory_free_mb: dev.free_bytes >> 20,
            tokens_per_second: throughput.per_second(),
        }
    }
}

/// Everything the server tells clients about models.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    DownloadProgress(DownloadProgress),
    DownloadComplete(DownloadComplete),
    DownloadError(DownloadError),
    LoadProgress(LoadProgress),
    LoadComplete(LoadComplete),
    LoadError(LoadError),
    UnloadComplete(UnloadComplete),
}

impl Event {
    pub const DOWNLOAD_PROGRESS: &'static str = "model:download:progress";
    pub const DOWNLOAD_COMPLETE: &'static str = "model:download:complete";
    pub const DOWNLOAD_ERROR: &'static str = "model:download:error";
    pub const LOAD_PROGRESS: &'static str = "model:load:progress";
    pub const LOAD_COMPLETE: &'static str = "model:load:complete";
    pub const LOAD_ERROR: &'static str = "model:load:error";
    pub const UNLOAD_COMPLETE: &'static str = "model:unload:complete";
    pub const SYSTEM_METRICS: &'static str = "system:metrics";

    /// The Socket.IO event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::DownloadProgress(_) => Self::DOWNLOAD_PROGRESS,
            Event::DownloadComplete(_) => Self::DOWNLOAD_COMPLETE,
            Event::DownloadError(_) => Self::DOWNLOAD_ERROR,
            Event::LoadProgress(_) => Self::LOAD_PROGRESS,
            Event::LoadComplete(_) => Self::LOAD_COMPLETE,
            Event::LoadError(_) => Self::LOAD_ERROR,
            Event::UnloadComplete(_) => Self::UNLOAD_COMPLETE,
        }
    }

    /// The model the event is about.
    pub fn model_id(&self) -> i64 {
        match self {
            Event::DownloadProgress(p) => p.model_id,
            Event::DownloadComplete(p) => p.model_id,
            Event::DownloadError(p) => p.model_id,
            Event::LoadProgress(p) => p.model_id,
            Event::LoadComplete(p) => p.model_id,
            Event::LoadError(p) => p.model_id,
            Event::UnloadComplete(p) => p.model_id,
        }
    }

    /// The camelCase payload.
    pub fn payload(&self) -> Value {
        let value = match self {
            Event::DownloadProgress(p) => serde_json::to_value(p),
            Event::DownloadComplete(p) => serde_json::to_value(p),
            Event::DownloadError(p) => serde_json::to_value(p),
            Event::LoadProgress(p) => serde_json::to_value(p),
            Event::LoadComplete(p) => serde_json::to_value(p),
            Event::LoadError(p) => serde_json::to_value(p),
            Event::UnloadComplete(p) => serde_json::to_value(p),
        };
        value.expect("event payloads are plain structs of strings and numbers")
    }

    /// Reads an event as a client receives it; `None` for other events or a payload that does
    /// not match its event.
    pub fn parse(name: &str, payload: Value) -> Option<Event> {
        let event = match name {
            Self::DOWNLOAD_PROGRESS => {
                Event::DownloadProgress(serde_json::from_value(payload).ok()?)
            }
            Self::DOWNLOAD_COMPLETE => {
                Event::DownloadComplete(serde_json::from_value(payload).ok()?)
            }
            Self::DOWNLOAD_ERROR => Event::DownloadError(serde_json::from_value(payload).ok()?),
            Self::LOAD_PROGRESS => Event::LoadProgress(serde_json::from_value(payload).ok()?),
            Self::LOAD_COMPLETE => Event::LoadComplete(serde_json::from_value(payload).ok()?),
            Self::LOAD_ERROR => Event::LoadError(serde_json::from_value(payload).ok()?),
            Self::UNLOAD_COMPLETE => Event::UnloadComplete(serde_json::from_value(payload).ok()?),
            _ => return None,
        };
        Some(event)
    }
}

/// The one pacing rule for progress events: at most one per period, except a change of stage
/// or a final figure, which always go out.
#[derive(Debug, Clone)]
pub struct Throttle {
    period: Duration,
    last: Option<Instant>,
}

impl Throttle {
    pub fn new(period: Duration) -> Self {
        Throttle { period, last: None }
    }

    /// True when an event may go out now; `force` for one that must (a new stage, the end).
    pub fn due(&mut self, force: bool) -> bool {
        let now = Instant::now();
        let due = force
            || self
                .last
                .is_none_or(|at| now.duration_since(at) >= self.period);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// Who may join a namespace: a client with the API key (when one is set), while there is room.
/// The `Host` and `Origin` of the handshake were checked by the API's guard before it got here.
pub struct Admission {
    key: Option<KeyCheck>,
    max: usize,
    connected: AtomicUsize,
}

/// Why a handshake was refused; the client receives the sentence as its `connect_error`.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("UNAUTHORIZED: this server needs an API key; send it as auth: {{token: <key>}}")]
    Unauthorized,
    #[error("TOO_MANY_CONNECTIONS: the server holds its maximum of live connections (MAX_SOCKET_CONNECTIONS)")]
    Full,
}

/// The `auth` object of a Socket.IO handshake.
#[derive(Debug, Default, Deserialize)]
struct HandshakeAuth {
    #[serde(default)]
    token: Option<String>,
}

impl Admission {
    /// Connections need `key` when set; at most `max` are kept at once.
    pub fn new(key: Option<KeyCheck>, max: usize) -> Arc<Self> {
        Arc::new(Admission {
            key,
            max,
            connected: AtomicUsize::new(0),
        })
    }

    /// Admits a handshake that brings the key (in `auth.token` or an `Authorization: Bearer`
    /// header), while fewer than the maximum are connected.
    fn admit(&self, socket: &SocketRef, auth: Option<HandshakeAuth>) -> Result<(), Refusal> {
        if let Some(key) = &self.key {
            let token = auth.and_then(|a| a.token);
            let ok = match token {
                Some(token) => key.matches(&token),
                None => bearer(&socket.req_parts().headers).is_some_and(|t| key.matches(t)),
            };
            if !ok {
                return Err(Refusal::Unauthorized);
            }
        }
        if self.connected.load(Ordering::Relaxed) >= self.max {
            return Err(Refusal::Full);
        }
        Ok(())
    }

    /// Counts a connection until it closes.
    fn track(self: &Arc<Self>, socket: &SocketRef) {
        self.connected.fetch_add(1, Ordering::Relaxed);
        let admission = self.clone();
        socket.on_disconnect(move || {
            admission.connected.fetch_sub(1, Ordering::Relaxed);
            async {}
        });
    }
}

/// Sends events to every connected client; cheap to clone.
#[derive(Clone)]
pub struct Events {
    io: SocketIo,
}

impl Events {
    /// Registers the namespaces on `io` (each handshake passing `admission`) and starts the
    /// metrics ticker, which stops with `shutdown`.
    pub fn new(
        io: SocketIo,
        devices: Devices,
        throughput: Arc<Throughput>,
        shutdown: CancellationToken,
        admission: Arc<Admission>,
    ) -> Self {
        for ns in NAMESPACES {
            let devices = devices.clone();
            let throughput = throughput.clone();
            let gate = admission.clone();
            let counted = admission.clone();
            let middleware = move |socket: SocketRef, TryData(auth): TryData<HandshakeAuth>| {
                let gate = gate.clone();
                async move { gate.admit(&socket, auth.ok()) }
            };
            let handler = move |socket: SocketRef| {
                let devices = devices.clone();
                let throughput = throughput.clone();
                counted.track(&socket);
                async move {
                    socket.on(SYSTEM_JOIN, move |socket: SocketRef| {
                        let devices = devices.clone();
                        let throughput = throughput.clone();
                        async move {
                            socket.join(METRICS_ROOM);
                            let payload = SystemMetrics::read(&devices, &throughput).await;
                            let _ = socket.emit(Event::SYSTEM_METRICS, &payload);
                        }
                    });
                }
            };
            io.ns(ns, handler.with(middleware));
        }
        let ticker_io = io.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(METRICS_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let payload = SystemMetrics::read(&devices, &throughput).await;
                for ns in NAMESPACES {
                    if let Some(op) = ticker_io.of(ns) {
                        let _ = op
                            .to(METRICS_ROOM)
                            .emit(Event::SYSTEM_METRICS, &payload)
                            .await;
                    }
                }
            }
        });
        Events { io }
    }

    /// Sends one event on every namespace.
    pub async fn emit(&self, event: Event) {
        let (name, payload) = (event.name(), event.payload());
        for ns in NAMESPACES {
            if let Some(op) = self.io.of(ns) {
                if let Err(e) = op.emit(name, &payload).await {
                    tracing::debug!("event {name} not sent on {ns}: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_are_camel_case_and_read_back() {
        let event = Event::DownloadProgress(DownloadProgress {
            model_id: 3,
            progress: 50,
            downloaded_bytes: 5,
            total_bytes: 10,
            speed_bps: 2,
        });
        let payload = event.payload();
        assert_eq!(
            payload,
            json!({"modelId": 3, "progress": 50, "downloadedBytes": 5, "totalBytes": 10, "speedBps": 2})
        );
        assert_eq!(Event::parse(event.name(), payload), Some(event));
    }

    #[test]
    fn a_load_error_carries_code_and_message_only() {
        let err = AppError::new(crate::error::ErrorCode::ModelLoadFailed, "bad weights")
            .with_detail("model_id", 1);
        let event = Event::LoadError(LoadError {
            model_id: 1,
            error: JobError::brief(&err),
        });
        assert_eq!(
            event.payload(),
            json!({"modelId": 1, "error": {"code": "MODEL_LOAD_FAILED", "message": "bad weights"}})
        );
    }

    #[test]
    fn an_unknown_event_or_a_wrong_payload_is_not_an_event() {
        assert_eq!(Event::parse("other", json!({"modelId": 1})), None);
        assert_eq!(
            Event::parse(Event::LOAD_COMPLETE, json!({"model": 1})),
            None
        );
    }

    #[test]
    fn the_throttle_lets_one_through_per_period_and_every_forced_one() {
        let mut t = Throttle::new(Duration::from_secs(3600));
        assert!(t.due(false));
        assert!(!t.due(false));
        assert!(t.due(true));
        assert!(!t.due(false));
    }
}
