//! The OpenAPI document: served, browsable offline at /docs, and in step with the committed copy.

use crate::support::{spawn_app, Db};

#[tokio::test]
async fn committed_openapi_json_matches_the_generated_one() {
    let generated: serde_json::Value = serde_json::from_str(&millm::api::openapi_json()).unwrap();
    let committed_text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).expect(
            "openapi.json is committed at the repo root (cargo run -- openapi > openapi.json)",
        );
    let committed: serde_json::Value = serde_json::from_str(&committed_text).unwrap();
    assert!(
        generated == committed,
        "openapi.json is stale: regenerate it with `cargo run -q -- openapi > openapi.json`"
    );
}

#[tokio::test]
async fn the_document_lists_every_endpoint_and_docs_work_offline() {
    let app = spawn_app(Db::Sqlite).await;
    let doc: serde_json::Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for p in ["/api/health", "/api/models", "/api/models/{id}"] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    let page = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger"), "the docs page is Swagger UI");
    // Its script and styles come from this server, not a CDN.
    let js = app
        .http
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(!html.contains("https://"), "no external resources");
    app.stop().await;
}
