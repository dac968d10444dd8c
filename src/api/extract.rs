//! Extractors that turn every bad input into `VALIDATION_ERROR` (or `PAYLOAD_TOO_LARGE`, or
//! `UNSUPPORTED_MEDIA_TYPE`) in the envelope, naming the field: a JSON body and the `{id}` path
//! segment.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::domain::ModelId;
use crate::error::{AppError, ErrorCode};

/// Request bodies may be at most this large (API.md).
pub const BODY_LIMIT: usize = 1 << 20;
/// A larger body is read and thrown away up to this size, so the client gets its 413 rather
/// than a reset connection; beyond it the connection is closed.
const DRAIN_LIMIT: usize = 64 << 20;

/// A JSON body, sent as `application/json`, with errors naming the offending field.
pub struct ApiJson<T>(pub T);

/// True when the request says its body is JSON (`application/json`, or `application/…+json`,
/// with any parameters).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// 415 for a body that is not declared JSON. A web page may send `text/plain` (or a form) to any
/// site without a CORS preflight; only a JSON content type forces the preflight that keeps
/// other sites out.
fn require_json(headers: &HeaderMap) -> Result<(), AppError> {
    if is_json(headers) {
        return Ok(());
    }
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    Err(AppError::new(
        ErrorCode::UnsupportedMediaType,
        format!("The request body must be sent as 'Content-Type: application/json' (got {given})."),
    )
    .with_detail("content_type", given))
}

/// Reads the whole body, up to [`BODY_LIMIT`].
pub async fn read_body(body: Body) -> Result<Vec<u8>, AppError> {
    let mut body = body;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            AppError::validation(format!("The request body could not be read: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= BODY_LIMIT {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    if seen > BODY_LIMIT {
        return Err(AppError::new(
            ErrorCode::PayloadTooLarge,
            format!("The request body is {seen} bytes; the limit is {BODY_LIMIT} bytes (1 MiB)."),
        )
        .with_detail("limit_bytes", BODY_LIMIT));
    }
    Ok(buf)
}

/// Parses JSON, naming the field that failed.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::validation(
            "The request body is empty; send a JSON object.",
        ));
    }
    // Serde would read a struct from a JSON array by position; the API takes objects only.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(AppError::validation(
            "The request body must be a JSON object, like {\"source\": \"local\", …}.",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            AppError::validation(format!("The request body is not valid JSON: {inner}."))
        } else if path == "." || path.is_empty() {
            AppError::validation(format!(
                "The request body does not have the expected shape: {inner}."
            ))
        } else {
            AppError::validation_field(&path, format!("Field '{path}': {inner}."))
        }
    })
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        require_json(req.headers())?;
        let bytes = read_body(req.into_body()).await?;
        Ok(ApiJson(parse_json(&bytes)?))
    }
}

/// An optional JSON body: absent, empty or `null` is `None`.
pub struct OptionalJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let json = require_json(req.headers());
        let bytes = read_body(req.into_body()).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        json?;
        // JSON `null` is "no body" too, as an OpenAPI optional body allows.
        if bytes.trim_ascii() == b"null" {
            return Ok(OptionalJson(None));
        }
        Ok(OptionalJson(Some(parse_json(&bytes)?)))
    }
}

/// The `{id}` segment of `/api/models/{id}/…`, parsed as a [`ModelId`].
pub struct IdPath(pub ModelId);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                AppError::validation_field("id", format!("Bad model id in the path: {e}."))
            })?;
        Ok(IdPath(ModelId::parse(&raw)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        count: u32,
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = parse_json::<Body>(br#"{"count": "x"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationError);
        assert!(err.message.contains("count"), "{}", err.message);
        assert_eq!(err.details["field"], "count");
    }

    #[test]
    fn json_content_types_are_recognised_with_their_parameters() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            h
        };
        assert!(is_json(&with("application/json")));
        assert!(is_json(&with("Application/JSON; charset=utf-8")));
        assert!(is_json(&with("application/merge-patch+json")));
        assert!(!is_json(&with("text/plain")));
        assert!(!is_json(&with("application/x-www-form-urlencoded")));
        assert!(!is_json(&HeaderMap::new()));
        assert_eq!(
            require_json(&with("text/plain")).unwrap_err().code,
            ErrorCode::UnsupportedMediaType
        );
    }

    #[test]
    fn empty_and_broken_bodies_are_validation_errors() {
        assert!(parse_json::<Body>(b"")
            .unwrap_err()
            .message
            .contains("empty"));
        assert!(parse_json::<Body>(b"{nope")
            .unwrap_err()
            .message
            .contains("not valid JSON"));
        assert!(parse_json::<Body>(b"nope")
            .unwrap_err()
            .message
            .contains("JSON object"));
        assert!(parse_json::<Body>(b"[1]").is_err());
    }
}
