//! Live events: one typed enum, the only code that knows Socket.IO event names. Every event is
//! sent on the default namespace `/` and, identically, on `/progress`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use socketioxide::extract::SocketRef;
use socketioxide::SocketIo;
use tokio_util::sync::CancellationToken;

use crate::engine::Devices;
use crate::error::ErrorBody;

/// The namespaces every event goes to.
pub const NAMESPACES: [&str; 2] = ["/", "/progress"];
/// Clients that emitted `system:join` are in this room and get `system:metrics`.
const METRICS_ROOM: &str = "system-metrics";
/// How often `system:metrics` is sent.
pub const METRICS_PERIOD: Duration = Duration::from_secs(2);
/// Download progress is sent at most this often per download (~4 per second).
pub const PROGRESS_PERIOD: Duration = Duration::from_millis(250);

/// Everything the server tells clients.
#[derive(Debug, Clone)]
pub enum Event {
    DownloadProgress {
        model_id: i64,
        progress: u8,
        downloaded_bytes: u64,
        total_bytes: u64,
        speed_bps: u64,
    },
    DownloadComplete {
        model_id: i64,
        local_path: String,
    },
    DownloadError {
        model_id: i64,
        error: ErrorBody,
    },
    LoadProgress {
        model_id: i64,
        stage: String,
        progress: u8,
    },
    LoadComplete {
        model_id: i64,
        memory_used_mb: u64,
    },
    LoadError {
        model_id: i64,
        code: String,
        message: String,
    },
    UnloadComplete {
        model_id: i64,
    },
}

impl Event {
    /// The Socket.IO event name and its camelCase payload.
    pub fn wire(&self) -> (&'static str, Value) {
        match self {
            Event::DownloadProgress {
                model_id,
                progress,
                downloaded_bytes,
                total_bytes,
                speed_bps,
            } => (
                "model:download:progress",
                json!({"modelId": model_id, "progress": progress, "downloadedBytes": downloaded_bytes,
                       "totalBytes": total_bytes, "speedBps": speed_bps}),
            ),
            Event::DownloadComplete {
                model_id,
                local_path,
            } => (
                "model:download:complete",
                json!({"modelId": model_id, "localPath": local_path}),
            ),
            Event::DownloadError { model_id, error } => (
                "model:download:error",
                json!({"modelId": model_id, "error": error}),
            ),
            Event::LoadProgress {
                model_id,
                stage,
                progress,
            } => (
                "model:load:progress",
                json!({"modelId": model_id, "stage": stage, "progress": progress}),
            ),
            Event::LoadComplete {
                model_id,
                memory_used_mb,
            } => (
                "model:load:complete",
                json!({"modelId": model_id, "memoryUsedMb": memory_used_mb}),
            ),
            Event::LoadError {
                model_id,
                code,
                message,
            } => (
                "model:load:error",
                json!({"modelId": model_id, "error": {"code": code, "message": message}}),
            ),
            Event::UnloadComplete { model_id } => {
                ("model:unload:complete", json!({"modelId": model_id}))
            }
        }
    }
}

/// The `system:metrics` payload, as the original sends it plus the load device's memory.
pub fn metrics_payload(devices: &Devices) -> Value {
    let dev = devices.current();
    let gpu = dev.gpu.unwrap_or_default();
    json!({
        "gpu_utilization": gpu.utilization,
        "gpu_memory_used_mb": gpu.memory_used_mb,
        "gpu_memory_total_mb": gpu.memory_total_mb,
        "gpu_temperature": gpu.temperature,
        "device": dev.name,
        "memory_total_mb": dev.total_bytes >> 20,
        "memory_free_mb": dev.free_bytes >> 20,
    })
}

/// Sends events to every connected client; cheap to clone.
#[derive(Clone)]
pub struct Events {
    io: SocketIo,
    last_progress: Arc<Mutex<HashMap<i64, Instant>>>,
}

impl Events {
    /// Registers the namespaces on `io` and starts the metrics ticker, which stops with `shutdown`.
    pub fn new(io: SocketIo, devices: Devices, shutdown: CancellationToken) -> Self {
        for ns in NAMESPACES {
            let devices = devices.clone();
            io.ns(ns, move |socket: SocketRef| {
                let devices = devices.clone();
                async move {
                    socket.on("system:join", move |socket: SocketRef| {
                        let devices = devices.clone();
                        async move {
                            socket.join(METRICS_ROOM);
                            let payload =
                                tokio::task::spawn_blocking(move || metrics_payload(&devices))
                                    .await
                                    .unwrap_or(Value::Null);
                            let _ = socket.emit("system:metrics", &payload);
                        }
                    });
                }
            });
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
                let devices = devices.clone();
                let Ok(payload) =
                    tokio::task::spawn_blocking(move || metrics_payload(&devices)).await
                else {
                    continue;
                };
                for ns in NAMESPACES {
                    if let Some(op) = ticker_io.of(ns) {
                        let _ = op.to(METRICS_ROOM).emit("system:metrics", &payload).await;
                    }
                }
            }
        });
        Events {
            io,
            last_progress: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Sends one event on every namespace.
    pub async fn emit(&self, event: Event) {
        let (name, payload) = event.wire();
        if let Event::DownloadComplete { model_id, .. } | Event::DownloadError { model_id, .. } =
            &event
        {
            self.forget_progress(*model_id);
        }
        for ns in NAMESPACES {
            if let Some(op) = self.io.of(ns) {
                if let Err(e) = op.emit(name, &payload).await {
                    tracing::debug!("event {name} not sent on {ns}: {e}");
                }
            }
        }
    }

    /// Sends a download progress event unless one for the same model went out less than
    /// [`PROGRESS_PERIOD`] ago; `force` sends it regardless (the final 100%).
    pub async fn download_progress(&self, event: Event, force: bool) {
        let Event::DownloadProgress { model_id, .. } = &event else {
            return;
        };
        {
            let mut last = match self.last_progress.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let now = Instant::now();
            if let Some(prev) = last.get(model_id) {
                if !force && now.duration_since(*prev) < PROGRESS_PERIOD {
                    return;
                }
            }
            last.insert(*model_id, now);
        }
        self.emit(event).await;
    }

    fn forget_progress(&self, model_id: i64) {
        if let Ok(mut last) = self.last_progress.lock() {
            last.remove(&model_id);
        }
    }
}
