//! `GET /api/models` with its cached rows: every change shows at once, and a running download's
//! live figures move in the list without any registry change.

use std::time::{Duration, Instant};

use millm_testkit::{FakeHub, FakeRepo, TinyLlama};
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::{spawn_app_with_hub, tiny_llama, Db, TestApp};

const WAIT: Duration = Duration::from_secs(30);

async fn listed(app: &TestApp) -> Vec<Value> {
    app.get("/api/models")
        .await
        .data()
        .as_array()
        .unwrap()
        .clone()
}

fn row(list: &[Value], id: i64) -> Value {
    list.iter()
        .find(|m| m["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("model {id} is listed"))
}

async fn the_list_shows_every_change_and_live_download_figures(db: Db) {
    let weights = tiny_llama(41);
    let hub = FakeHub::start().await.unwrap();
    hub.add_repo(
        FakeRepo::from_dir("list-org/slow", weights.path())
            .unwrap()
            .throttled(64 << 10),
    );
    let app = spawn_app_with_hub(db, &hub.endpoint()).await;
    let (a, _) = app.add_model("list-a", TinyLlama::default(), "Q4").await;
    let (b, _) = app.add_model("list-b", TinyLlama::default(), "Q8").await;
    let ids: Vec<i64> = listed(&app)
        .await
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![b, a], "newest first");

    // A change through the API shows in the very next list.
    assert_eq!(app.delete(&format!("/api/models/{a}")).await.status, 200);
    assert_eq!(listed(&app).await.len(), 1);

    let reply = app
        .post(
            "/api/models",
            json!({"source": "huggingface", "repo_id": "list-org/slow"}),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let d = reply.data()["id"].as_i64().unwrap();
    // The list's row for the download moves while nothing else changes.
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let r = row(&listed(&app).await, d);
        assert_eq!(r["status"], "downloading", "{r}");
        let bytes = r["downloaded_bytes"].as_i64().unwrap();
        if seen.last() != Some(&bytes) && bytes > 0 {
            seen.push(bytes);
        }
        assert!(
            Instant::now() < deadline,
            "the listed figures never moved: {seen:?}"
        );
        tokio::task::yield_now().await;
    }
    assert!(seen[1] > seen[0], "{seen:?}");
    assert!(row(&listed(&app).await, b)["downloaded_bytes"].is_null());

    let cancelled = app
        .post(&format!("/api/models/{d}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status, 200);
    let r = row(&listed(&app).await, d);
    assert_eq!(r["status"], "error");
    assert_eq!(r["error_message"], "Download cancelled by user");
    assert!(
        r["downloaded_bytes"].is_null(),
        "no live figures after the end"
    );
    app.stop().await;
}

on_both_databases!(the_list_shows_every_change_and_live_download_figures);
