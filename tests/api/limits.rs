//! Resource limits against the real server: a client that never finishes its headers, or its
//! body, does not hold a connection for ever; downloads beyond the cap wait for a slot.

use std::time::Duration;

use millm_testkit::{FakeHub, FakeRepo, TinyLlama};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::on_both_databases;
use crate::support::{spawn_configured, Db, TestApp};

/// Reads until the server closes the connection (or `within` passes) and returns what came.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut got)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_dropped() {
    let app = spawn_configured(Db::Sqlite, |s| s.header_read_timeout = 1).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /api/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(15)).await;
    let answer = answer.expect("the server closed the connection");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // The server still answers everyone else.
    assert_eq!(app.get("/api/health/live").await.status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_ends_in_request_timeout() {
    let app = spawn_configured(Db::Sqlite, |s| {
        s.graceful_unload_timeout = 1;
        s.request_timeout = 2;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            b"POST /api/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"source\":",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(30))
        .await
        .expect("the server answered and closed the connection");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    app.stop().await;
}

/// A tiny checkpoint served by `hub` as `id`, sent at `bytes_per_second` when given.
fn serve_tiny(
    hub: &FakeHub,
    id: &str,
    seed: u64,
    bytes_per_second: Option<u64>,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    TinyLlama {
        seed,
        ..TinyLlama::default()
    }
    .write(dir.path())
    .expect("checkpoint written");
    let mut repo = FakeRepo::from_dir(id, dir.path()).expect("fake repo");
    if let Some(bps) = bytes_per_second {
        repo = repo.throttled(bps);
    }
    hub.add_repo(repo);
    dir
}

/// Polls model `id` until `done` holds for it and returns it.
async fn wait_for(app: &TestApp, id: i64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let model = app.get(&format!("/api/models/{id}")).await.data().clone();
        if done(&model) {
            return model;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "model {id} did not become {what}: {model}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn downloads_beyond_the_cap_wait_then_run(db: Db) {
    let hub = FakeHub::start().await.expect("fake hub");
    let _a = serve_tiny(&hub, "test-org/first", 1, Some(1024));
    let _b = serve_tiny(&hub, "test-org/second", 2, None);
    let _c = serve_tiny(&hub, "test-org/third", 3, None);
    let endpoint = hub.endpoint();
    let app = spawn_configured(db, |s| {
        s.hf_endpoint = endpoint;
        s.max_concurrent_downloads = 1;
    })
    .await;
    let pull = |repo: &str| {
        app.post(
            "/api/models",
            json!({"source": "huggingface", "repo_id": repo, "quantization": "Q8"}),
        )
    };
    let first = pull("test-org/first").await;
    assert_eq!(first.status, 202, "{}", first.body);
    let first = first.data()["id"].as_i64().unwrap();
    // The first holds the one slot (and, throttled, keeps it).
    wait_for(&app, first, "transferring", |m| m["queued"] == false).await;

    let second = pull("test-org/second").await;
    assert_eq!(second.status, 202, "{}", second.body);
    assert_eq!(second.data()["status"], "downloading");
    let second = second.data()["id"].as_i64().unwrap();
    let third = pull("test-org/third").await.data()["id"].as_i64().unwrap();
    for id in [second, third] {
        let waiting = app.get(&format!("/api/models/{id}")).await.data().clone();
        assert_eq!(waiting["queued"], true, "{waiting}");
        assert_eq!(waiting["status"], "downloading");
        assert_eq!(waiting["downloaded_bytes"], 0);
    }
    // A waiting download can be cancelled like any other.
    let cancelled = app
        .post(&format!("/api/models/{third}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.data()["status"], "error", "{}", cancelled.body);

    // When the first ends (cancelled here: throttled, it would take hours), the second runs
    // by itself.
    let stopped = app
        .post(&format!("/api/models/{first}/cancel"), json!({}))
        .await;
    assert_eq!(stopped.data()["status"], "error", "{}", stopped.body);
    let done = wait_for(&app, second, "ready", |m| m["status"] == "ready").await;
    assert_eq!(done["queued"], false);
    app.stop().await;
}

on_both_databases!(downloads_beyond_the_cap_wait_then_run);
