//! The access rules of `guard.rs` in the OpenAPI document, written once for every operation:
//! the bearer scheme (optional: a server without `MILLM_API_KEY` needs none), and the answers
//! the guard gives before any handler runs — 401 `UNAUTHORIZED` (not on `/api/health/live`),
//! 403 `FORBIDDEN`, 408 `REQUEST_TIMEOUT`, and 415 `UNSUPPORTED_MEDIA_TYPE` where a body is taken.

use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response};
use utoipa::Modify;

/// The name of the bearer scheme in `components.securitySchemes`.
pub const SCHEME: &str = "api_key";

/// The one path open without the key.
const OPEN_PATH: &str = "/api/health/live";

/// Adds the access rules to a document whose paths are all in place.
pub struct AccessControl;

impl Modify for AccessControl {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let error_schema = ["ErrorEnvelope", "Envelope_ErrorBody"]
            .into_iter()
            .find(|name| components.schemas.contains_key(*name))
            .unwrap_or("ErrorBody");
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "The server's MILLM_API_KEY, when it has one: `Authorization: Bearer <key>`. Without a key set (loopback only) no header is needed."
                .into(),
        );
        components.add_security_scheme(SCHEME, SecurityScheme::Http(http));
        // Either no credentials (a server without a key) or the key.
        doc.security = Some(vec![
            SecurityRequirement::default(),
            SecurityRequirement::new(SCHEME, Vec::<String>::new()),
        ]);
        // `/v1` answers in OpenAI's error shape, the rest in the envelope.
        let openai_schema = components
            .schemas
            .contains_key("OpenAiError")
            .then_some("OpenAiError");
        let response = |schema: &str, description: &str| -> RefOr<Response> {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(schema)))
                        .build(),
                )
                .build()
                .into()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let schema = match openai_schema {
                Some(openai) if path.starts_with("/v1/") => openai,
                _ => error_schema,
            };
            let error = |description: &str| response(schema, description);
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in operations.into_iter().flatten() {
                if path == OPEN_PATH {
                    op.security = Some(vec![SecurityRequirement::default()]);
                } else {
                    add(
                        op,
                        "401",
                        "UNAUTHORIZED: the server has an API key and the request brings none or another",
                        &error,
                    );
                }
                add(
                    op,
                    "403",
                    "FORBIDDEN: a Host this server does not answer to, or a state-changing request from a foreign Origin",
                    &error,
                );
                add(
                    op,
                    "408",
                    "REQUEST_TIMEOUT: the request took longer than REQUEST_TIMEOUT",
                    &error,
                );
                if op.request_body.is_some() {
                    add(
                        op,
                        "415",
                        "UNSUPPORTED_MEDIA_TYPE: a body not sent as application/json",
                        &error,
                    );
                }
            }
        }
    }
}

/// Adds the answer `status`, or names the guard's code beside the handler's own.
fn add(
    op: &mut Operation,
    status: &str,
    description: &str,
    error: &dyn Fn(&str) -> RefOr<Response>,
) {
    match op.responses.responses.get_mut(status) {
        Some(RefOr::T(existing)) => {
            existing.description = format!("{}; or {description}", existing.description);
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            op.responses
                .responses
                .insert(status.to_string(), error(description));
        }
    }
}
