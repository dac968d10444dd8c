//! A typed HTTP client of a running miLLM server: unwraps the envelope (and reads `/v1`'s
//! OpenAI-shaped errors) and turns every failure into one `ClientError` that prints as one line.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::api::schema::{DeleteResponse, HealthResponse, ModelPreviewResponse, ModelResponse};

/// Why a request to the server failed, worded for a person.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing answers at the URL.
    Unreachable { url: String },
    /// The server answered with an error envelope.
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// Anything else: a timeout, an answer that is not miLLM's, a local problem.
    Other(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { url } => write!(
                f,
                "cannot reach the server at {url}: is `millm serve` running?"
            ),
            ClientError::Api { code, .. }
                if code == "UNAUTHORIZED" || code == "invalid_api_key" =>
            {
                write!(
                f,
                "the server needs its API key: pass --api-key KEY or set MILLM_API_KEY ({code})"
            )
            }
            ClientError::Api { code, message, .. }
                if code == "MODEL_LOCKED" || code == "model_locked" =>
            {
                write!(f, "{message} ({code}; `millm unlock` unlocks it)")
            }
            ClientError::Api { code, message, .. } => write!(f, "{message} ({code})"),
            ClientError::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ClientError {}

/// The envelope every `/api` answer comes in.
#[derive(Deserialize)]
struct Envelope {
    success: bool,
    #[serde(default)]
    data: Value,
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireError {
    code: String,
    message: String,
}

/// A `/v1` error answer: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Deserialize)]
struct OpenAiError {
    error: OpenAiErrorDetail,
}

#[derive(Deserialize)]
struct OpenAiErrorDetail {
    message: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

/// The error a `/v1` error body (or a streamed `{"error": …}` chunk) stands for, if it is one.
pub fn openai_error(status: u16, body: &Value) -> Option<ClientError> {
    let e: OpenAiError = serde_json::from_value(body.clone()).ok()?;
    let code = e
        .error
        .code
        .or(e.error.kind)
        .unwrap_or_else(|| "server_error".into());
    Some(ClientError::Api {
        status,
        code,
        message: e.error.message,
    })
}

/// The client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// For answers that take as long as the model needs: no overall timeout.
    generation: reqwest::Client,
    api_key: Option<String>,
}

impl Client {
    /// A client of the server at `base` (`http://127.0.0.1:8000`), sending `api_key` when given.
    pub fn new(base: &str, api_key: Option<&str>) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        match url::Url::parse(&base) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => {
                return Err(ClientError::Other(format!(
                    "'{base}' is not an http(s) URL (--url / MILLM_URL)"
                )))
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // Unload waits up to GRACEFUL_UNLOAD_TIMEOUT; preview and pull check the Hub first.
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| ClientError::Other(format!("cannot set up HTTP: {e}")))?;
        let generation = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Other(format!("cannot set up HTTP: {e}")))?;
        let api_key = api_key
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string);
        Ok(Client {
            base,
            http,
            generation,
            api_key,
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The API key this client sends, for the Socket.IO handshake.
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// True when what is sent to the server crosses the network unencrypted: plain `http://` to
    /// a host other than this machine.
    pub fn is_plain_http_to_another_host(&self) -> bool {
        url::Url::parse(&self.base).is_ok_and(|u| {
            u.scheme() == "http" && !u.host_str().is_some_and(crate::config::is_loopback_host)
        })
    }

    fn request(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::RequestBuilder {
        let mut request = http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let response = self
            .request(&self.http, method, path, body)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| self.transport(e))?;
        let envelope: Envelope = serde_json::from_str(&text).map_err(|_| {
            ClientError::Other(format!(
                "the server at {} answered {path} with HTTP {status} and a body that is not miLLM's API: is --url right?",
                self.base
            ))
        })?;
        if !envelope.success {
            let error = envelope.error.unwrap_or(WireError {
                code: "INTERNAL_ERROR".into(),
                message: format!("the server answered HTTP {status} without an error"),
            });
            return Err(ClientError::Api {
                status,
                code: error.code,
                message: error.message,
            });
        }
        serde_json::from_value(envelope.data).map_err(|e| {
            ClientError::Other(format!(
                "unexpected answer from {path} (is the server the same version as this client?): {e}"
            ))
        })
    }

    /// `POST /v1/chat/completions`: the response once its status is a success (the caller
    /// reads the body, streamed or not), else the `/v1` error it carries.
    pub async fn chat(&self, body: &Value) -> Result<reqwest::Response, ClientError> {
        let path = "/v1/chat/completions";
        let response = self
            .request(&self.generation, reqwest::Method::POST, path, Some(body))
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.map_err(|e| self.transport(e))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let status = status.as_u16();
        if let Some(e) = openai_error(status, &body) {
            return Err(e);
        }
        Err(ClientError::Other(format!(
            "the server at {} answered {path} with HTTP {status} and a body that is not an OpenAI error: is --url right?",
            self.base
        )))
    }

    /// A failure while reading a streamed answer, worded as one line.
    pub fn read_failed(&self, e: reqwest::Error) -> ClientError {
        self.transport(e)
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        if e.is_connect() {
            ClientError::Unreachable {
                url: self.base.clone(),
            }
        } else if e.is_timeout() {
            ClientError::Other(format!(
                "the server at {} did not answer in time",
                self.base
            ))
        } else {
            // One line: the innermost cause says the most.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            ClientError::Other(format!("request to {} failed: {cause}", self.base))
        }
    }

    /// `GET /api/health`.
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.call(reqwest::Method::GET, "/api/health", None).await
    }

    /// `GET /api/models`.
    pub async fn list(&self) -> Result<Vec<ModelResponse>, ClientError> {
        self.call(reqwest::Method::GET, "/api/models", None).await
    }

    /// `GET /api/models/{id}`.
    pub async fn get(&self, id: i64) -> Result<ModelResponse, ClientError> {
        self.call(reqwest::Method::GET, &format!("/api/models/{id}"), None)
            .await
    }

    /// `POST /api/models/preview`.
    pub async fn preview(&self, body: &Value) -> Result<ModelPreviewResponse, ClientError> {
        self.call(reqwest::Method::POST, "/api/models/preview", Some(body))
            .await
    }

    /// `POST /api/models`: a download or a local folder.
    pub async fn create(&self, body: &Value) -> Result<ModelResponse, ClientError> {
        self.call(reqwest::Method::POST, "/api/models", Some(body))
            .await
    }

    /// `POST /api/models/{id}/cancel`.
    pub async fn cancel(&self, id: i64) -> Result<ModelResponse, ClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/api/models/{id}/cancel"),
            None,
        )
        .await
    }

    /// `POST /api/models/{id}/load`.
    pub async fn load(&self, id: i64) -> Result<ModelResponse, ClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/api/models/{id}/load"),
            None,
        )
        .await
    }

    /// `POST /api/models/{id}/unload`.
    pub async fn unload(&self, id: i64) -> Result<ModelResponse, ClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/api/models/{id}/unload"),
            None,
        )
        .await
    }

    /// `POST /api/models/{id}/lock`.
    pub async fn lock(&self, id: i64) -> Result<ModelResponse, ClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/api/models/{id}/lock"),
            None,
        )
        .await
    }

    /// `POST /api/models/{id}/unlock`.
    pub async fn unlock(&self, id: i64) -> Result<ModelResponse, ClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/api/models/{id}/unlock"),
            None,
        )
        .await
    }

    /// `DELETE /api/models/{id}`.
    pub async fn delete(&self, id: i64) -> Result<DeleteResponse, ClientError> {
        self.call(reqwest::Method::DELETE, &format!("/api/models/{id}"), None)
            .await
    }

    /// The model that `wanted` names: an id, else a name, else a repo id.
    pub async fn resolve(&self, wanted: &str) -> Result<ModelResponse, ClientError> {
        let models = self.list().await?;
        resolve_in(models, wanted)
    }
}

/// Picks the model `wanted` names among `models`: by id, then name, then repo id.
pub fn resolve_in(models: Vec<ModelResponse>, wanted: &str) -> Result<ModelResponse, ClientError> {
    let wanted = wanted.trim();
    let by: [&dyn Fn(&ModelResponse) -> bool; 3] = [
        &|m| m.id.to_string() == wanted,
        &|m| m.name == wanted,
        &|m| m.repo_id.as_deref() == Some(wanted),
    ];
    for matches in by {
        let found: Vec<&ModelResponse> = models.iter().filter(|m| matches(m)).collect();
        match found.as_slice() {
            [] => continue,
            [one] => return Ok((*one).clone()),
            many => {
                let ids: Vec<String> = many.iter().map(|m| m.id.to_string()).collect();
                return Err(ClientError::Other(format!(
                    "'{wanted}' names several models (ids {}): use the id",
                    ids.join(", ")
                )));
            }
        }
    }
    Err(ClientError::Other(format!(
        "no model has the id, name or repo id '{wanted}' (see `millm list`)"
    )))
}
