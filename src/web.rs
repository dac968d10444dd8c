//! The web UI, embedded in the binary at build time from `web/dist`: hashed assets are cached
//! for a year, anything else that is not a file gets `index.html` (client routes). Only GET and
//! HEAD get the page: any other method is refused with a short plain-text answer.

use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "web/dist"]
struct Assets;

/// Serves one path of the UI to a GET or HEAD. Any other method gets 405 (with `Allow: GET,
/// HEAD`) on one of the UI's own files (`/`, `/index.html`, an asset), and 404 anywhere else:
/// client routes exist only for a browser's GET, so a `POST /v1/completions` is not the page.
pub async fn serve(method: Method, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if method != Method::GET && method != Method::HEAD {
        return refuse(path);
    }
    if !path.is_empty() {
        if let Some(file) = Assets::get(path) {
            let mime = file.metadata.mimetype().to_string();
            // Vite puts content hashes in every name under assets/, so they never change.
            let cache = if path.starts_with("assets/") {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            return (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_str(&mime)
                            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
                ],
                file.data.into_owned(),
            )
                .into_response();
        }
        if path.starts_with("assets/") || path.rsplit('/').next().is_some_and(|f| f.contains('.')) {
            return (StatusCode::NOT_FOUND, "Not found").into_response();
        }
    }
    match Assets::get("index.html") {
        Some(index) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            index.data.into_owned(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "The web UI was not built into this binary.",
        )
            .into_response(),
    }
}

/// The answer to a method other than GET or HEAD outside `/api`.
fn refuse(path: &str) -> Response {
    let own_file = path.is_empty() || Assets::get(path).is_some();
    if own_file {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, HeaderValue::from_static("GET, HEAD"))],
            "Method not allowed: the web UI answers GET and HEAD only.",
        )
            .into_response()
    } else {
        (StatusCode::NOT_FOUND, "Not found").into_response()
    }
}
