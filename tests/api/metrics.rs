//! `GET /metrics`: Prometheus text after a load, with route templates rather than ids.
//!
//! The metric registry is process-wide and the tests of this binary run side by side, so
//! counters are compared before and after (they only grow) and per-app gauges are read from
//! this app's state at scrape time.
//!

use std::time::Duration;

use millm_testkit::TinyLlama;
use serde_json::json;

use crate::support::{sample, spawn_app, spawn_app_with_hub, Db, TestApp};

async fn scrape(app: &TestApp) -> String {
    let resp = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape completes");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    resp.text().await.expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_a_load_http_routes_and_device_memory() {
    let app = spawn_app(Db::Sqlite).await;
    let before = scrape(&app).await;
    let (id, _model) = app.add_model("tiny", TinyLlama::default(), "FP16").await;
    let r = app.post(&format!("/api/models/{id}/load"), json!({})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let loaded = app.wait_status(id, "loaded", Duration::from_secs(60)).await;
    let after = scrape(&app).await;

    let loads = r#"millm_load_duration_seconds_count{outcome="loaded",quantization="FP16"}"#;
    assert!(
        sample(&after, loads) >= sample(&before, loads) + 1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "millm_loaded_model_memory_bytes"),
        loaded["memory_footprint"].as_f64().unwrap()
    );
    assert!(sample(&after, r#"millm_device_memory_total_bytes{device="cpu"}"#) > 0.0);
    assert!(after.contains("millm_device_memory_free_bytes{device=\"cpu\"}"));

    // Requests are counted under their route template, never under an id.
    let route =
        r#"millm_http_requests_total{method="POST",route="/api/models/{id}/load",status="202"}"#;
    assert!(
        sample(&after, route) >= sample(&before, route) + 1.0,
        "{after}"
    );
    assert!(after.contains(
        r#"millm_http_request_duration_seconds_count{method="GET",route="/api/models/{id}"}"#
    ));
    assert!(!after.contains(&format!("route=\"/api/models/{id}")));
    // Labelled families appear with their first sample; these two are there from the start.
    for name in ["millm_download_bytes_total", "millm_downloads_active"] {
        assert!(
            after.contains(&format!("# TYPE {name} ")),
            "{name} is declared"
        );
    }

    let r = app
        .post(&format!("/api/models/{id}/unload"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        sample(&scrape(&app).await, "millm_loaded_model_memory_bytes"),
        0.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_a_download() {
    let dir = tempfile::tempdir().unwrap();
    TinyLlama::default().write(dir.path()).unwrap();
    let hub = millm_testkit::FakeHub::start().await.unwrap();
    hub.add_repo(millm_testkit::FakeRepo::from_dir("metrics-org/tiny", dir.path()).unwrap());
    let app = spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await;
    let before = scrape(&app).await;
    let r = app
        .post(
            "/api/models",
            json!({"source": "huggingface", "repo_id": "metrics-org/tiny"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.data()["id"].as_i64().unwrap();
    app.wait_status(id, "ready", Duration::from_secs(60)).await;
    let after = scrape(&app).await;
    let weights = std::fs::metadata(dir.path().join("model.safetensors"))
        .unwrap()
        .len() as f64;
    assert!(
        sample(&after, "millm_download_bytes_total")
            >= sample(&before, "millm_download_bytes_total") + weights,
        "{after}"
    );
    let done = r#"millm_download_duration_seconds_count{outcome="completed"}"#;
    assert!(
        sample(&after, done) >= sample(&before, done) + 1.0,
        "{after}"
    );
    app.stop().await;
}
