//! `POST /v1/embeddings`, as the original computes them: the mean of the loaded model's last
//! hidden states (after its final norm) over the input's tokens, one input after another in the
//! model's turn. Errors in OpenAI's shape (see [`super::openai`]).

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::openai::{answerer, body, take_turn, OaiError, OaiResult, OpenAiError};
use crate::app::AppState;
use crate::metrics::{self, InferenceOutcome};

const ENDPOINT: &str = "embeddings";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(embeddings))
}

/// `input`: one string or a list of strings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

/// The body of `POST /v1/embeddings`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    /// A model's name, id or repo id.
    model: String,
    input: EmbeddingInput,
    /// `float` (default) or `base64` (little-endian f32, as OpenAI's client asks by default).
    #[serde(default)]
    #[schema(pattern = "^(float|base64)$")]
    encoding_format: Option<String>,
    /// Not supported: absent or null (the model's hidden size is the size).
    #[serde(default)]
    #[schema(value_type = Option<i64>, maximum = 0, minimum = 0)]
    dimensions: Option<Value>,
    /// Accepted and ignored, as OpenAI does.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// One embedding: floats, or base64 of little-endian f32 with `encoding_format: base64`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Embedding {
    /// Always `embedding`.
    object: &'static str,
    index: usize,
    #[schema(value_type = Object)]
    embedding: Value,
}

/// `usage` of an embedding answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingUsage {
    prompt_tokens: usize,
    total_tokens: usize,
}

/// The answer of `POST /v1/embeddings`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingList {
    /// Always `list`.
    object: &'static str,
    data: Vec<Embedding>,
    model: String,
    usage: EmbeddingUsage,
}

/// Embeddings of one text or several.
#[utoipa::path(post, path = "/v1/embeddings", tag = "v1", operation_id = "v1_embeddings",
    request_body = EmbeddingRequest,
    responses(
        (status = 200, description = "One embedding per input, in order", body = EmbeddingList),
        (status = 400, description = "invalid_request_error: a bad field (`param`), an empty input, `model_not_loaded`, `model_cannot_generate` or `context_length_exceeded`", body = OpenAiError),
        (status = 404, description = "`model_not_found`", body = OpenAiError),
        (status = 409, description = "`model_locked`: another model is locked", body = OpenAiError),
        (status = 429, description = "`queue_full`: too many requests wait for the model (`Retry-After`)", body = OpenAiError),
        (status = 503, description = "`model_loading` (`Retry-After`), or the model was unloaded while answering", body = OpenAiError)))]
async fn embeddings(State(state): State<AppState>, req: Request) -> OaiResult<Json<EmbeddingList>> {
    let received = Instant::now();
    let answer = embed(state, req).await;
    let outcome = match &answer {
        Ok(_) => InferenceOutcome::Stop,
        Err(_) => InferenceOutcome::Rejected,
    };
    metrics::inference_request(ENDPOINT, outcome);
    if let Ok(list) = &answer {
        metrics::generation(
            ENDPOINT,
            list.usage.prompt_tokens,
            0,
            Some(received.elapsed()),
            &[],
        );
    }
    answer.map(Json)
}

async fn embed(state: AppState, req: Request) -> OaiResult<EmbeddingList> {
    let req: EmbeddingRequest = body(req).await?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(OaiError::invalid(
                format!("'encoding_format' must be 'float' or 'base64', got '{other}'."),
                Some("encoding_format"),
            ))
        }
    };
    if req.dimensions.as_ref().is_some_and(|d| !d.is_null()) {
        return Err(OaiError::invalid(
            "'dimensions' is not supported: the size is the model's hidden size.",
            Some("dimensions"),
        ));
    }
    let inputs = match req.input {
        EmbeddingInput::One(s) => vec![s],
        EmbeddingInput::Many(list) => list,
    };
    if inputs.is_empty() || inputs.iter().any(String::is_empty) {
        return Err(OaiError::invalid(
            "'input' must be a non-empty string or a non-empty list of non-empty strings.",
            Some("input"),
        ));
    }
    let (row, lease, text) = answerer(&state, &req.model).await?;
    let mut encoded = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let tokens = text
            .encode(input, true)
            .map_err(|e| OaiError::invalid(e, Some("input")))?;
        if tokens.is_empty() {
            return Err(OaiError::invalid("An input has no tokens.", Some("input")));
        }
        if tokens.len() > text.context {
            return Err(OaiError::invalid(
                format!(
                    "This model's context is {} tokens; an input has {}.",
                    text.context,
                    tokens.len()
                ),
                Some("input"),
            )
            .with_code(StatusCode::BAD_REQUEST, "context_length_exceeded"));
        }
        encoded.push(tokens);
    }
    let prompt_tokens = encoded.iter().map(Vec::len).sum();
    let turn = take_turn(&state, &text).await?;
    let vectors = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let mut out = Vec::with_capacity(encoded.len());
        for tokens in &encoded {
            if lease.is_revoked() {
                return Err("The model was unloaded while it was answering.".to_string());
            }
            out.push(text.embed(tokens).map_err(|e| e.to_string())?);
        }
        Ok(out)
    })
    .await
    .map_err(|_| OaiError::server("The embedding stopped unexpectedly."))?
    .map_err(OaiError::unavailable)?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| Embedding {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::from(v)
            },
        })
        .collect();
    Ok(EmbeddingList {
        object: "list",
        data,
        model: row.name,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}
