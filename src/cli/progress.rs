//! Following a download or a load: the server's Socket.IO events when the socket connects,
//! else polling `GET /api/models/{id}` every 500 ms; and the progress bar that shows it.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use futures::FutureExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rust_socketio::asynchronous::{Client as SocketClient, ClientBuilder};
use rust_socketio::{Event as SocketEvent, Payload};
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::client::{Client, ClientError};
use crate::api::schema::ModelResponse;
use crate::domain::ModelStatus;
use crate::events::{Event, JobError};

/// The download bar: title, bar, bytes, speed (indicatif's estimate) and time left.
const DOWNLOAD_TEMPLATE: &str =
    "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";
/// The load bar: title, bar and percent.
const LOAD_TEMPLATE: &str = "{spinner} {msg} [{bar:30}] {pos}%";
/// How long the socket may take to connect before the CLI polls instead.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// Polling period without live events.
const POLL_PERIOD: Duration = Duration::from_millis(500);
/// With live events, a poll now and then still notices an end whose event was missed.
const SAFETY_POLL_PERIOD: Duration = Duration::from_secs(5);

/// What is being followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Download,
    Load,
}

/// One step of a followed job.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Bytes so far; `total` 0 while unknown.
    Downloading { downloaded: u64, total: u64 },
    /// A load stage and its percentage.
    Loading { stage: String, progress: u64 },
    /// The job ended well.
    Done,
    /// The job failed; the message and code as the server gave them.
    Failed { code: String, message: String },
}

/// Follows one model's job through events or polling.
pub struct Follow {
    client: Client,
    job: Job,
    socket: Option<(SocketClient, UnboundedReceiver<(String, Value)>)>,
    /// Why there is no socket.
    fallback: Option<String>,
    model_id: Option<i64>,
}

impl Follow {
    /// Connects to the server's live events, before the job is started so no event is missed.
    /// Without them (a proxy that drops websockets and polling alike) it polls.
    pub async fn start(client: &Client, job: Job) -> Follow {
        let (socket, fallback) = match tokio::time::timeout(
            CONNECT_WAIT,
            connect(client.base(), client.api_key()),
        )
        .await
        {
            Ok(Ok(socket)) => (Some(socket), None),
            Ok(Err(why)) => (None, Some(format!("live events unavailable: {why}"))),
            Err(_) => (
                None,
                Some("live events did not connect in time".to_string()),
            ),
        };
        Follow {
            client: client.clone(),
            job,
            socket,
            fallback,
            model_id: None,
        }
    }

    /// How the job is followed, for a note once it has started.
    pub fn how(&self) -> String {
        match &self.fallback {
            None => "through live events".to_string(),
            Some(why) => format!("by polling ({why})"),
        }
    }

    /// The model to follow; events of other models are skipped.
    pub fn set_model(&mut self, id: i64) {
        self.model_id = Some(id);
    }

    /// The next update of the followed model.
    pub async fn next(&mut self) -> Result<Update, ClientError> {
        let id = self
            .model_id
            .expect("set_model is called before the follow is read");
        let period = if self.socket.is_some() {
            SAFETY_POLL_PERIOD
        } else {
            POLL_PERIOD
        };
        let poll_at = tokio::time::Instant::now() + period;
        loop {
            let event = match &mut self.socket {
                Some((_, rx)) => {
                    tokio::select! {
                        e = rx.recv() => e,
                        _ = tokio::time::sleep_until(poll_at) => None,
                    }
                }
                None => {
                    tokio::time::sleep_until(poll_at).await;
                    None
                }
            };
            match event {
                Some((name, payload)) => {
                    let Some(event) = Event::parse(&name, payload) else {
                        continue;
                    };
                    if event.model_id() != id {
                        continue;
                    }
                    if let Some(update) = from_event(self.job, event) {
                        return Ok(update);
                    }
                }
                None => {
                    if tokio::time::Instant::now() < poll_at {
                        // The socket closed: poll from now on.
                        self.socket = None;
                        note("live events disconnected; polling the server");
                        continue;
                    }
                    let model = self.client.get(id).await?;
                    return Ok(from_model(self.job, &model));
                }
            }
        }
    }

    /// Closes the socket.
    pub async fn close(self) {
        if let Some((socket, _)) = self.socket {
            let _ = socket.disconnect().await;
        }
    }
}

/// Connects to the default namespace and waits for the namespace's connect, so nothing the
/// server sends afterwards is lost.
async fn connect(
    base: &str,
    api_key: Option<&str>,
) -> Result<(SocketClient, UnboundedReceiver<(String, Value)>), String> {
    let (tx, mut rx) = unbounded_channel();
    let on_connect = tx.clone();
    let mut builder = ClientBuilder::new(base);
    if let Some(key) = api_key {
        builder = builder.auth(serde_json::json!({ "token": key }));
    }
    let socket = builder
        .namespace("/")
        .reconnect(false)
        .on(SocketEvent::Connect, move |_, _| {
            let tx = on_connect.clone();
            async move {
                let _ = tx.send(("connect".to_string(), Value::Null));
            }
            .boxed()
        })
        .on_any(move |event, payload, _| {
            let tx = tx.clone();
            async move {
                if let Payload::Text(values) = payload {
                    let first = values.into_iter().next().unwrap_or(Value::Null);
                    let _ = tx.send((event.as_str().to_string(), first));
                }
            }
            .boxed()
        })
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    match rx.recv().await {
        Some((name, _)) if name == "connect" => Ok((socket, rx)),
        _ => {
            let _ = socket.disconnect().await;
            Err("the socket closed before it connected".into())
        }
    }
}

fn failed(error: JobError) -> Update {
    Update::Failed {
        code: error.code,
        message: error.message,
    }
}

/// The update an event carries, if it concerns `job`.
pub fn from_event(job: Job, event: Event) -> Option<Update> {
    match (job, event) {
        (Job::Download, Event::DownloadProgress(p)) => Some(Update::Downloading {
            downloaded: p.downloaded_bytes,
            total: p.total_bytes,
        }),
        (Job::Download, Event::DownloadComplete(_)) => Some(Update::Done),
        (Job::Download, Event::DownloadError(e)) => Some(failed(e.error)),
        (Job::Load, Event::LoadProgress(p)) => Some(Update::Loading {
            stage: p.stage,
            progress: u64::from(p.progress),
        }),
        (Job::Load, Event::LoadComplete(_)) => Some(Update::Done),
        (Job::Load, Event::LoadError(e)) => Some(failed(e.error)),
        _ => None,
    }
}

/// The update a polled model stands for.
pub fn from_model(job: Job, model: &ModelResponse) -> Update {
    let failed = || Update::Failed {
        code: match job {
            Job::Download => "DOWNLOAD_FAILED",
            Job::Load => "MODEL_LOAD_FAILED",
        }
        .to_string(),
        message: model
            .error_message
            .clone()
            .unwrap_or_else(|| "the job failed".into()),
    };
    let as_u64 = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    match (job, model.status) {
        (_, ModelStatus::Error) => failed(),
        (Job::Download, ModelStatus::Downloading) => Update::Downloading {
            downloaded: as_u64(model.downloaded_bytes),
            total: as_u64(model.total_bytes),
        },
        (Job::Download, _) => Update::Done,
        (Job::Load, ModelStatus::Loaded) => Update::Done,
        (Job::Load, ModelStatus::Loading) => Update::Loading {
            stage: "loading".into(),
            progress: 0,
        },
        // Back to `ready` while we waited: another client unloaded it, or it never loaded.
        (Job::Load, _) => Update::Failed {
            code: "MODEL_NOT_LOADED".into(),
            message: format!("Model {} is {}, not loaded.", model.id, model.status),
        },
    }
}

/// A line for the person at the terminal, on stderr.
pub fn note(line: &str) {
    eprintln!("millm: {line}");
}

/// The download bar: bytes, speed and time left on a terminal; a line every few seconds
/// otherwise (logs, CI).
pub struct Bar {
    bar: ProgressBar,
    tty: bool,
    last_line: Option<Instant>,
}

impl Bar {
    /// A bar for bytes (`Job::Download`) or percent (`Job::Load`), titled `title`.
    pub fn new(job: Job, title: &str) -> Bar {
        let tty = std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let template = match job {
            Job::Download => DOWNLOAD_TEMPLATE,
            Job::Load => LOAD_TEMPLATE,
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(title.to_string());
        if job == Job::Load {
            bar.set_length(100);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        Bar {
            bar,
            tty,
            last_line: None,
        }
    }

    /// Shows bytes so far.
    pub fn bytes(&mut self, downloaded: u64, total: u64) {
        if total > 0 {
            self.bar.set_length(total);
        }
        self.bar.set_position(downloaded);
        if !self.tty && self.due() {
            let pct = (downloaded * 100).checked_div(total).unwrap_or(0);
            note(&format!(
                "downloading: {pct}% ({} of {})",
                human_bytes(downloaded),
                human_bytes(total)
            ));
        }
    }

    /// Shows a load stage.
    pub fn stage(&mut self, stage: &str, progress: u64) {
        self.bar.set_position(progress.min(100));
        if !self.tty && self.due() {
            note(&format!("loading: {stage} {progress}%"));
        }
    }

    fn due(&mut self) -> bool {
        let due = self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
        if due {
            self.last_line = Some(Instant::now());
        }
        due
    }

    /// Removes the bar.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bar_templates_parse() {
        for t in [DOWNLOAD_TEMPLATE, LOAD_TEMPLATE] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn human_bytes_picks_a_readable_unit() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn events_of_the_other_job_are_ignored() {
        let p = json!({"modelId": 1, "progress": 50, "downloadedBytes": 5, "totalBytes": 10, "speedBps": 0});
        let p = |name: &str| Event::parse(name, p.clone()).unwrap();
        assert_eq!(
            from_event(Job::Download, p("model:download:progress")),
            Some(Update::Downloading {
                downloaded: 5,
                total: 10
            })
        );
        assert_eq!(from_event(Job::Load, p("model:download:progress")), None);
        let e = json!({"modelId": 1, "error": {"code": "DOWNLOAD_CANCELLED", "message": "Download cancelled by user"}});
        assert_eq!(
            from_event(
                Job::Download,
                Event::parse("model:download:error", e).unwrap()
            ),
            Some(Update::Failed {
                code: "DOWNLOAD_CANCELLED".into(),
                message: "Download cancelled by user".into()
            })
        );
    }
}
