//! `/v1`: the loaded model in OpenAI's wire format, so OpenAI's own clients work unchanged —
//! `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`, non-streaming and
//! streamed as server-sent events in OpenAI's chunk format. Errors use OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`, not the envelope.
//!
//! As in TGI's router, the handler validates and queues; one generation at a time runs on a
//! blocking thread with the model's lease, and streams text back over a channel. A client that
//! goes away stops its generation within one token; an unload that revokes the lease ends it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::app::AppState;
use crate::engine::infer::{ChatMessage, Finish, Generated, Sampling, TextModel, Waiting};
use crate::engine::Lease;
use crate::service::Answerer;
use crate::store::ModelRecord;

/// The `/v1` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
}

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OaiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
    retry_after: Option<u64>,
}

impl OaiError {
    fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        OaiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
            retry_after: None,
        }
    }

    fn with_code(mut self, status: StatusCode, code: &'static str) -> Self {
        self.status = status;
        self.code = Some(code);
        self
    }

    fn server(message: impl Into<String>) -> Self {
        OaiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for OaiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<crate::error::AppError> for OaiError {
    fn from(e: crate::error::AppError) -> Self {
        if e.code.status().is_server_error() {
            tracing::error!("/v1: {e}");
            OaiError::server("The server failed to answer; see its log.")
        } else {
            OaiError::invalid(e.message, None)
        }
    }
}

type OaiResult<T> = Result<T, OaiError>;

/// A JSON body for `/v1`, its errors in OpenAI's shape.
async fn body<T: DeserializeOwned>(req: Request) -> OaiResult<T> {
    let bytes = super::extract::read_body(req.into_body())
        .await
        .map_err(|e| OaiError::invalid(e.message, None))?;
    super::extract::parse_json(&bytes).map_err(|e| OaiError::invalid(e.message, None))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn created_of(row: &ModelRecord) -> u64 {
    chrono::DateTime::parse_from_rfc3339(&row.created_at)
        .map(|t| t.timestamp().max(0) as u64)
        .unwrap_or(0)
}

async fn list_models(State(state): State<AppState>) -> OaiResult<Json<Value>> {
    let rows = state.services.answering_models().await?;
    let data: Vec<Value> = rows
        .iter()
        .map(|r| json!({"id": r.name, "object": "model", "created": created_of(r), "owned_by": "millm"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// What chat and completion requests share.
#[derive(Debug, Deserialize)]
struct Common {
    model: String,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    stop: Option<Stop>,
    n: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    #[serde(flatten)]
    common: Common,
    messages: Vec<InMessage>,
    #[serde(default)]
    tools: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    #[serde(flatten)]
    common: Common,
    prompt: Value,
}

/// Roles a chat template knows.
const ROLES: [&str; 4] = ["system", "user", "assistant", "developer"];

fn messages(input: Vec<InMessage>) -> OaiResult<Vec<ChatMessage>> {
    if input.is_empty() {
        return Err(OaiError::invalid(
            "'messages' must not be empty.",
            Some("messages"),
        ));
    }
    input
        .into_iter()
        .map(|m| {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(OaiError::invalid(
                    format!(
                        "Unsupported role '{}': use one of system, user, assistant, developer.",
                        m.role
                    ),
                    Some("messages"),
                ));
            }
            let content = match m.content {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s,
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| {
                        match (
                            p.get("type").and_then(Value::as_str),
                            p.get("text").and_then(Value::as_str),
                        ) {
                            (Some("text"), Some(t)) => Ok(t.to_string()),
                            _ => Err(OaiError::invalid(
                                "Only text content parts are supported.",
                                Some("messages"),
                            )),
                        }
                    })
                    .collect::<OaiResult<Vec<_>>>()?
                    .join(""),
                Some(_) => {
                    return Err(OaiError::invalid(
                        "A message's content must be a string or a list of text parts.",
                        Some("messages"),
                    ))
                }
            };
            let role = if m.role == "developer" {
                "system".into()
            } else {
                m.role
            };
            Ok(ChatMessage { role, content })
        })
        .collect()
}

/// The prompt of a completion: a string, or a list of one string.
fn prompt_text(prompt: Value) -> OaiResult<String> {
    match prompt {
        Value::String(s) => Ok(s),
        Value::Array(mut a) if a.len() == 1 && a[0].is_string() => {
            Ok(a.remove(0).as_str().unwrap_or_default().to_string())
        }
        _ => Err(OaiError::invalid(
            "'prompt' must be a string or a list of one string.",
            Some("prompt"),
        )),
    }
}

/// Checks the shared fields; returns the bound on new tokens asked for, if any.
fn check_common(c: &Common) -> OaiResult<Option<usize>> {
    if c.n.unwrap_or(1) != 1 {
        return Err(OaiError::invalid("Only n = 1 is supported.", Some("n")));
    }
    if let Some(t) = c.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(OaiError::invalid(
                "'temperature' must be between 0 and 2.",
                Some("temperature"),
            ));
        }
    }
    if let Some(p) = c.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(OaiError::invalid(
                "'top_p' must be greater than 0 and at most 1.",
                Some("top_p"),
            ));
        }
    }
    let max = match (c.max_completion_tokens, c.max_tokens) {
        (Some(m), _) => Some(("max_completion_tokens", m)),
        (None, Some(m)) => Some(("max_tokens", m)),
        (None, None) => None,
    };
    match max {
        Some((name, m)) if m < 1 => Err(OaiError::invalid(
            format!("'{name}' must be at least 1, got {m}."),
            Some(if name == "max_tokens" {
                "max_tokens"
            } else {
                "max_completion_tokens"
            }),
        )),
        Some((_, m)) => Ok(Some(m as usize)),
        None => Ok(None),
    }
}

fn stops(stop: Option<Stop>) -> Vec<String> {
    match stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    }
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect()
}

/// The loaded model `name` names, with its text side; or OpenAI's error for why not.
async fn answerer(state: &AppState, name: &str) -> OaiResult<(ModelRecord, Lease, Arc<TextModel>)> {
    match state.services.answerer(name).await? {
        Answerer::Unknown => Err(OaiError::invalid(
            format!("The model '{name}' does not exist."),
            Some("model"),
        )
        .with_code(StatusCode::NOT_FOUND, "model_not_found")),
        Answerer::Loading(row) => {
            let mut e = OaiError::invalid(
                format!(
                    "The model '{}' is loading; retry in a few seconds.",
                    row.name
                ),
                Some("model"),
            )
            .with_code(StatusCode::SERVICE_UNAVAILABLE, "model_loading");
            e.retry_after = Some(5);
            Err(e)
        }
        Answerer::NotLoaded(row) => Err(OaiError::invalid(
            format!(
                "The model '{}' is not loaded. Load it first (POST /api/models/{}/load).",
                row.name, row.id
            ),
            Some("model"),
        )
        .with_code(StatusCode::BAD_REQUEST, "model_not_loaded")),
        Answerer::Loaded(row, lease) => {
            let text = lease.text().map_err(|why| {
                OaiError::invalid(
                    format!(
                        "The model '{}' is loaded but cannot generate text: {why}.",
                        row.name
                    ),
                    Some("model"),
                )
                .with_code(StatusCode::BAD_REQUEST, "model_cannot_generate")
            })?;
            let text = text.clone();
            Ok((*row, lease, text))
        }
    }
}

/// Which endpoint a generation answers, for the shape of its answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// What the generation thread sends back.
enum Piece {
    Text(String),
    Done(Generated),
    Failed(String),
}

struct Job {
    kind: Kind,
    id: String,
    model: String,
    created: u64,
    prompt_tokens: usize,
    include_usage: bool,
}

async fn chat(State(state): State<AppState>, req: Request) -> OaiResult<Response> {
    let req: ChatRequest = body(req).await?;
    let max = check_common(&req.common)?;
    if req
        .tools
        .as_ref()
        .is_some_and(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(OaiError::invalid("Tools are not supported.", Some("tools")));
    }
    let messages = messages(req.messages)?;
    let (row, lease, text) = answerer(&state, &req.common.model).await?;
    if !text.can_chat() {
        return Err(OaiError::invalid(
            format!(
                "The model '{}' has no chat template; use /v1/completions with a prompt.",
                row.name
            ),
            Some("messages"),
        ));
    }
    let prompt = text
        .encode_chat(&messages)
        .map_err(|e| OaiError::invalid(e, Some("messages")))?;
    run(state, Kind::Chat, req.common, max, row, lease, text, prompt).await
}

async fn completions(State(state): State<AppState>, req: Request) -> OaiResult<Response> {
    let req: CompletionRequest = body(req).await?;
    let max = check_common(&req.common)?;
    let prompt = prompt_text(req.prompt)?;
    let (row, lease, text) = answerer(&state, &req.common.model).await?;
    let tokens = text
        .encode(&prompt, true)
        .map_err(|e| OaiError::invalid(e, Some("prompt")))?;
    if tokens.is_empty() {
        return Err(OaiError::invalid(
            "The prompt has no tokens.",
            Some("prompt"),
        ));
    }
    run(
        state,
        Kind::Completion,
        req.common,
        max,
        row,
        lease,
        text,
        tokens,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn run(
    state: AppState,
    kind: Kind,
    common: Common,
    max: Option<usize>,
    row: ModelRecord,
    lease: Lease,
    text: Arc<TextModel>,
    prompt: Vec<u32>,
) -> OaiResult<Response> {
    let room = text.context.saturating_sub(prompt.len());
    let max_tokens = max.unwrap_or(room);
    if prompt.len() + max_tokens > text.context || room == 0 {
        return Err(OaiError::invalid(
            format!(
                "This model's context is {} tokens; the prompt has {} and {} more were asked for.",
                text.context,
                prompt.len(),
                max_tokens
            ),
            Some("messages"),
        )
        .with_code(StatusCode::BAD_REQUEST, "context_length_exceeded"));
    }
    // The one generating holds the turn; up to MAX_QUEUED_REQUESTS more wait for it.
    let turn = match text.turn.clone().try_lock_owned() {
        Ok(turn) => turn,
        Err(_) => {
            let Some(waiting) = Waiting::join(&text.waiting, state.services.max_queued_requests())
            else {
                return Err(OaiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message: "Too many requests are waiting for the model; retry shortly.".into(),
                    kind: "rate_limit_error",
                    param: None,
                    code: Some("queue_full"),
                    retry_after: Some(1),
                });
            };
            let turn = text.turn.clone().lock_owned().await;
            drop(waiting);
            turn
        }
    };
    let sampling = Sampling {
        max_tokens,
        temperature: common.temperature.unwrap_or(1.0),
        top_p: common.top_p.unwrap_or(1.0),
        seed: common.seed,
        stop: stops(common.stop),
    };
    let job = Job {
        kind,
        id: format!(
            "{}-{:016x}",
            if kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            },
            rand::random::<u64>()
        ),
        model: row.name.clone(),
        created: now(),
        prompt_tokens: prompt.len(),
        include_usage: common.stream_options.unwrap_or_default().include_usage,
    };
    let (tx, rx) = mpsc::channel::<Piece>(64);
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let cancelled = || lease.is_revoked() || tx.is_closed();
        let mut emit = |s: &str| tx.blocking_send(Piece::Text(s.to_string())).is_ok();
        let outcome = text.generate(&prompt, &sampling, &cancelled, &mut emit);
        let last = match outcome {
            Ok(g) if g.finish == Finish::Cancelled && lease.is_revoked() => {
                Piece::Failed("The model was unloaded while it was answering.".into())
            }
            Ok(g) => Piece::Done(g),
            Err(e) => Piece::Failed(e.to_string()),
        };
        let _ = tx.blocking_send(last);
    });
    if common.stream {
        Ok(stream(job, rx).into_response())
    } else {
        whole(job, rx).await
    }
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Length => "length",
        Finish::Stop | Finish::Cancelled => "stop",
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// The non-streamed answer.
async fn whole(job: Job, mut rx: mpsc::Receiver<Piece>) -> OaiResult<Response> {
    let mut text = String::new();
    while let Some(piece) = rx.recv().await {
        match piece {
            Piece::Text(t) => text.push_str(&t),
            Piece::Failed(why) => {
                let mut e = OaiError::server(why);
                e.status = StatusCode::SERVICE_UNAVAILABLE;
                return Err(e);
            }
            Piece::Done(g) => {
                let choice = match job.kind {
                    Kind::Chat => {
                        json!({"index": 0, "message": {"role": "assistant", "content": text},
                        "logprobs": null, "finish_reason": finish_reason(g.finish)})
                    }
                    Kind::Completion => json!({"index": 0, "text": text, "logprobs": null,
                        "finish_reason": finish_reason(g.finish)}),
                };
                let object = match job.kind {
                    Kind::Chat => "chat.completion",
                    Kind::Completion => "text_completion",
                };
                return Ok(Json(
                    json!({"id": job.id, "object": object, "created": job.created,
                    "model": job.model, "choices": [choice], "system_fingerprint": null,
                    "usage": usage(job.prompt_tokens, g.completion_tokens)}),
                )
                .into_response());
            }
        }
    }
    Err(OaiError::server("The generation stopped unexpectedly."))
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: Option<()>,
    choices: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
}

impl Job {
    fn chunk(&self, choices: Vec<Value>, usage: Option<Value>) -> Event {
        let object = match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        // With include_usage every chunk carries `usage`: null until the last.
        let usage = if self.include_usage {
            Some(usage.unwrap_or(Value::Null))
        } else {
            None
        };
        let chunk = Chunk {
            id: &self.id,
            object,
            created: self.created,
            model: &self.model,
            system_fingerprint: None,
            choices,
            usage,
        };
        Event::default().data(serde_json::to_string(&chunk).unwrap_or_default())
    }

    fn delta(&self, content: Option<&str>, role: bool, finish: Option<Finish>) -> Event {
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if role {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(c) = content {
                    delta.insert("content".into(), json!(c));
                }
                json!({"index": 0, "delta": delta, "logprobs": null,
                       "finish_reason": finish.map(finish_reason)})
            }
            Kind::Completion => json!({"index": 0, "text": content.unwrap_or(""), "logprobs": null,
                                       "finish_reason": finish.map(finish_reason)}),
        };
        self.chunk(vec![choice], None)
    }
}

/// The streamed answer: OpenAI's chunks, then `data: [DONE]`.
fn stream(
    job: Job,
    mut rx: mpsc::Receiver<Piece>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let events = async_stream::stream! {
        if job.kind == Kind::Chat {
            yield Ok(job.delta(Some(""), true, None));
        }
        while let Some(piece) = rx.recv().await {
            match piece {
                Piece::Text(t) => yield Ok(job.delta(Some(&t), false, None)),
                Piece::Failed(why) => {
                    let e = OaiError::server(why);
                    yield Ok(Event::default().data(e.body().to_string()));
                    break;
                }
                Piece::Done(g) => {
                    yield Ok(job.delta(None, false, Some(g.finish)));
                    if job.include_usage {
                        yield Ok(job.chunk(vec![], Some(usage(job.prompt_tokens, g.completion_tokens))));
                    }
                    break;
                }
            }
        }
        yield Ok(Event::default().data("[DONE]"));
    };
    Sse::new(events)
}
