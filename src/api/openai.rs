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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::engine::infer::{ChatMessage, Finish, Generated, Sampling, TextModel, Waiting};
use crate::engine::Lease;
use crate::metrics::{self, InferenceOutcome};
use crate::service::Answerer;
use crate::store::ModelRecord;

/// The `/v1` routes, with their OpenAPI document.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models))
        .routes(routes!(chat))
        .routes(routes!(completions))
        .merge(super::embeddings::router())
}

/// The `error` of a `/v1` error answer, as OpenAI writes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    /// `model_not_found`, `model_not_loaded`, `model_loading`, `model_cannot_generate`,
    /// `context_length_exceeded`, `queue_full`, or null.
    pub code: Option<String>,
}

/// A `/v1` error answer: OpenAI's shape, not the envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiError {
    pub error: OpenAiErrorDetail,
}

/// One model of `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiModel {
    /// The model's name (its id and repo id name it too).
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds of its registration.
    pub created: u64,
    /// Always `millm`.
    pub owned_by: String,
}

/// `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<OpenAiModel>,
}

/// A text part of a message's content.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct TextPart {
    #[schema(pattern = "^text$")]
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

/// A message's content: a string, or text parts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<TextPart>),
}

/// The roles a chat template knows (`developer` is read as `system`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Role {
    System,
    User,
    Assistant,
    Developer,
}

/// `prompt`: a string, or a list of one string.
fn prompt_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
    let text = || ObjectBuilder::new().schema_type(Type::String);
    Schema::OneOf(
        OneOfBuilder::new()
            .item(text())
            .item(
                ArrayBuilder::new()
                    .items(text())
                    .min_items(Some(1))
                    .max_items(Some(1)),
            )
            .build(),
    )
}

/// `usage`: the tokens of the prompt and of the answer, exactly.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// The assistant's message.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: String,
    pub content: String,
}

/// One choice of a chat completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    /// Always null.
    pub logprobs: Option<()>,
    /// `stop` or `length`.
    pub finish_reason: String,
}

/// A chat completion (`object: chat.completion`); streamed, the same answer arrives as
/// `chat.completion.chunk` events.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    pub system_fingerprint: Option<String>,
}

/// One choice of a text completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct TextChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<()>,
    pub finish_reason: String,
}

/// A text completion (`object: text_completion`).
#[derive(Debug, Serialize, ToSchema)]
pub struct TextCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<TextChoice>,
    pub usage: Usage,
    pub system_fingerprint: Option<String>,
}

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OaiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
    pub(super) kind: &'static str,
    pub(super) param: Option<&'static str>,
    pub(super) code: Option<&'static str>,
    pub(super) retry_after: Option<u64>,
}

impl OaiError {
    pub(super) fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        OaiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
            retry_after: None,
        }
    }

    pub(super) fn with_code(mut self, status: StatusCode, code: &'static str) -> Self {
        self.status = status;
        self.code = Some(code);
        self
    }

    pub(super) fn server(message: impl Into<String>) -> Self {
        OaiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 503 `server_error`: the model went away (unloaded) or failed while answering.
    pub(super) fn unavailable(message: impl Into<String>) -> Self {
        OaiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            ..OaiError::server(message)
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

pub(super) type OaiResult<T> = Result<T, OaiError>;

/// A load on request that failed: what the load would have answered, in OpenAI's shape.
fn load_error(e: crate::error::AppError) -> OaiError {
    use crate::error::ErrorCode;
    let code = match e.code {
        ErrorCode::InsufficientMemory => "insufficient_memory",
        ErrorCode::ModelLoadFailed => "model_load_failed",
        ErrorCode::ModelUnsupported => "model_unsupported",
        ErrorCode::ModelBusy => "model_busy",
        ErrorCode::InvalidState => "model_not_loaded",
        _ => return OaiError::from(e),
    };
    let status = e.code.status();
    OaiError {
        status,
        message: e.message,
        kind: if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        },
        param: Some("model"),
        code: Some(code),
        retry_after: None,
    }
}

/// A JSON body for `/v1`, its errors in OpenAI's shape.
pub(super) async fn body<T: DeserializeOwned>(req: Request) -> OaiResult<T> {
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

/// The models that can answer now.
#[utoipa::path(get, path = "/v1/models", tag = "v1", operation_id = "v1_list_models",
    responses((status = 200, description = "The models that can answer now", body = OpenAiModelList)))]
async fn list_models(State(state): State<AppState>) -> OaiResult<Json<Value>> {
    let rows = state.services.answering_models().await?;
    let data: Vec<Value> = rows
        .iter()
        .map(|r| json!({"id": r.name, "object": "model", "created": created_of(r), "owned_by": "millm"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `stop`: a string or a list of strings; the answer ends before the first.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize, ToSchema)]
struct StreamOptions {
    /// A last chunk with `usage` (and `usage: null` on every chunk before it).
    #[serde(default)]
    include_usage: bool,
}

/// What chat and completion requests share.
#[derive(Debug, Deserialize, ToSchema)]
struct Common {
    /// A model's name, id or repo id.
    model: String,
    /// Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`.
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// Most new tokens; default: the rest of the context.
    #[schema(minimum = 1, maximum = 2147483647)]
    max_tokens: Option<i64>,
    /// The same as `max_tokens` (wins when both are given).
    #[schema(minimum = 1, maximum = 2147483647)]
    max_completion_tokens: Option<i64>,
    /// 0 = greedy; default 1.
    #[schema(minimum = 0, maximum = 2)]
    temperature: Option<f32>,
    /// Nucleus sampling; default 1.
    #[schema(exclusive_minimum = 0, maximum = 1)]
    top_p: Option<f32>,
    /// The same seed gives the same answer.
    #[schema(minimum = 0, maximum = 18446744073709551615_u64)]
    seed: Option<u64>,
    stop: Option<Stop>,
    /// Only 1.
    #[schema(minimum = 1, maximum = 1)]
    n: Option<u32>,
}

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ChatCompletionRequest)]
struct ChatRequest {
    #[serde(flatten)]
    common: Common,
    #[schema(min_items = 1)]
    messages: Vec<InMessage>,
    /// Not supported: absent, null or empty.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>, max_items = 0)]
    tools: Option<Value>,
}

/// One message of a chat.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ChatMessage)]
struct InMessage {
    #[schema(value_type = Role)]
    role: String,
    #[serde(default)]
    #[schema(value_type = Option<MessageContent>)]
    content: Option<Value>,
}

/// The body of `POST /v1/completions`: as a chat's, with a raw `prompt`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = TextCompletionRequest)]
struct CompletionRequest {
    #[serde(flatten)]
    common: Common,
    #[schema(schema_with = prompt_schema)]
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
pub(super) async fn answerer(
    state: &AppState,
    name: &str,
) -> OaiResult<(ModelRecord, Lease, Arc<TextModel>)> {
    let found = state.services.answerer(name).await.map_err(load_error)?;
    match found {
        Answerer::OtherLoading(row) => {
            let mut e = OaiError::invalid(
                format!(
                    "Another model is being loaded or unloaded; retry '{}' in a few seconds.",
                    row.name
                ),
                Some("model"),
            )
            .with_code(StatusCode::SERVICE_UNAVAILABLE, "model_loading");
            e.retry_after = Some(5);
            Err(e)
        }
        Answerer::CannotGenerate(row) => Err(OaiError::invalid(
            format!(
                "The model '{}' cannot generate text: its architecture ({}) is not one this server runs.",
                row.name,
                row.architecture.as_deref().unwrap_or("unknown")
            ),
            Some("model"),
        )
        .with_code(StatusCode::BAD_REQUEST, "model_cannot_generate")),
        Answerer::Locked(row, locked_id, locked_name) => Err(OaiError::invalid(
            format!(
                "The model '{locked_name}' (id {locked_id}) is locked in memory, so '{}' cannot be loaded; unlock it first (POST /api/models/{locked_id}/unlock).",
                row.name
            ),
            Some("model"),
        )
        .with_code(StatusCode::CONFLICT, "model_locked")),
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

impl Kind {
    /// The `endpoint` label of the inference metrics.
    fn label(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Completion => "completions",
        }
    }
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

/// A chat, rendered with the model's own chat template.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "v1", operation_id = "v1_chat_completions",
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The answer; with `stream`, `chat.completion.chunk` events ending in `data: [DONE]`",
            content((ChatCompletion = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "invalid_request_error: a bad field (`param`), `model_not_loaded`, `model_cannot_generate`, `context_length_exceeded`, or a model without a chat template", body = OpenAiError),
        (status = 404, description = "`model_not_found`", body = OpenAiError),
        (status = 429, description = "`queue_full`: too many requests wait for the model (`Retry-After`)", body = OpenAiError),
        (status = 503, description = "`model_loading` (`Retry-After`), or the model was unloaded while answering", body = OpenAiError)))]
async fn chat(State(state): State<AppState>, req: Request) -> OaiResult<Response> {
    answer_chat(state, req, Instant::now())
        .await
        .inspect_err(|_| metrics::inference_request(Kind::Chat.label(), InferenceOutcome::Rejected))
}

async fn answer_chat(state: AppState, req: Request, received: Instant) -> OaiResult<Response> {
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
    let generation = Generation {
        kind: Kind::Chat,
        common: req.common,
        max,
        received,
    };
    run(state, generation, row, lease, text, prompt).await
}

/// A completion of a raw prompt.
#[utoipa::path(post, path = "/v1/completions", tag = "v1", operation_id = "v1_completions",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "The answer; with `stream`, `text_completion` events ending in `data: [DONE]`",
            content((TextCompletion = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "invalid_request_error: a bad field (`param`), `model_not_loaded`, `model_cannot_generate` or `context_length_exceeded`", body = OpenAiError),
        (status = 404, description = "`model_not_found`", body = OpenAiError),
        (status = 429, description = "`queue_full`: too many requests wait for the model (`Retry-After`)", body = OpenAiError),
        (status = 503, description = "`model_loading` (`Retry-After`), or the model was unloaded while answering", body = OpenAiError)))]
async fn completions(State(state): State<AppState>, req: Request) -> OaiResult<Response> {
    answer_completion(state, req, Instant::now())
        .await
        .inspect_err(|_| {
            metrics::inference_request(Kind::Completion.label(), InferenceOutcome::Rejected)
        })
}

async fn answer_completion(
    state: AppState,
    req: Request,
    received: Instant,
) -> OaiResult<Response> {
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
    let generation = Generation {
        kind: Kind::Completion,
        common: req.common,
        max,
        received,
    };
    run(state, generation, row, lease, text, tokens).await
}

/// What a generation request asks for, checked.
struct Generation {
    kind: Kind,
    common: Common,
    /// `max_tokens` or `max_completion_tokens`, when given.
    max: Option<usize>,
    /// When the request arrived (time to first token counts from here).
    received: Instant,
}

/// Counts a request waiting for the model in `millm_inference_queue_depth` while it lives.
struct QueueDepth;

impl QueueDepth {
    fn enter() -> QueueDepth {
        metrics::inference_waiting(true);
        QueueDepth
    }
}

impl Drop for QueueDepth {
    fn drop(&mut self) {
        metrics::inference_waiting(false);
    }
}

/// The model's turn: the one generating holds it; up to `MAX_QUEUED_REQUESTS` more wait for it
/// (counted in `millm_inference_queue_depth`), and more than that get 429 `queue_full`.
pub(super) async fn take_turn(
    state: &AppState,
    text: &TextModel,
) -> OaiResult<tokio::sync::OwnedMutexGuard<()>> {
    if let Ok(turn) = text.turn.clone().try_lock_owned() {
        return Ok(turn);
    }
    let Some(waiting) = Waiting::join(&text.waiting, state.services.max_queued_requests()) else {
        return Err(OaiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "Too many requests are waiting for the model; retry shortly.".into(),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
            retry_after: Some(1),
        });
    };
    let depth = QueueDepth::enter();
    let turn = text.turn.clone().lock_owned().await;
    drop(depth);
    drop(waiting);
    Ok(turn)
}

async fn run(
    state: AppState,
    generation: Generation,
    row: ModelRecord,
    lease: Lease,
    text: Arc<TextModel>,
    prompt: Vec<u32>,
) -> OaiResult<Response> {
    let Generation {
        kind,
        common,
        max,
        received,
    } = generation;
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
    let turn = take_turn(&state, &text).await?;
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
    let services = state.services.clone();
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let cancelled = || lease.is_revoked() || tx.is_closed();
        let mut emit = |s: &str| tx.blocking_send(Piece::Text(s.to_string())).is_ok();
        let outcome = text.generate(&prompt, &sampling, &cancelled, &mut emit);
        let endpoint = kind.label();
        let ended = match &outcome {
            Ok(g) if g.finish == Finish::Cancelled && lease.is_revoked() => {
                InferenceOutcome::Failed
            }
            Ok(g) => match g.finish {
                Finish::Stop => InferenceOutcome::Stop,
                Finish::Length => InferenceOutcome::Length,
                Finish::Cancelled => InferenceOutcome::Cancelled,
            },
            Err(_) => InferenceOutcome::Failed,
        };
        metrics::inference_request(endpoint, ended);
        if let Ok(g) = &outcome {
            metrics::generation(
                endpoint,
                prompt.len(),
                g.completion_tokens,
                g.first_token_at
                    .map(|t| t.saturating_duration_since(received)),
                &g.token_gaps,
            );
            let decode: f64 = g.token_gaps.iter().sum();
            services.record_generation(g.token_gaps.len(), Duration::from_secs_f64(decode));
        }
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
            Piece::Failed(why) => return Err(OaiError::unavailable(why)),
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
