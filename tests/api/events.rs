//! Live download events seen by a real Socket.IO client on `/` and on `/progress`.

use std::time::Duration;

use futures::FutureExt;
use millm_testkit::{FakeHub, FakeRepo, TinyLlama};
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::support::{spawn_app_with_hub, Db};

/// A connected client on `namespace` and the events it receives, by name.
async fn listen(base: &str, namespace: &str) -> (Client, UnboundedReceiver<(String, Value)>) {
    let (tx, mut rx) = unbounded_channel();
    let on_connect = tx.clone();
    let client = ClientBuilder::new(base)
        .namespace(namespace)
        .on(Event::Connect, move |_, _| {
            let tx = on_connect.clone();
            async move {
                let _ = tx.send(("connect".to_string(), Value::Null));
            }
            .boxed()
        })
        .on_any(move |event, payload, _| {
            let tx = tx.clone();
            async move {
                if let Payload::Text(values) = payload {
                    let _ = tx.send((
                        event.as_str().to_string(),
                        values.into_iter().next().unwrap_or(Value::Null),
                    ));
                }
            }
            .boxed()
        })
        .connect()
        .await
        .expect("the Socket.IO client connects");
    let (name, _) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("connected in time")
        .expect("channel open");
    assert_eq!(name, "connect");
    (client, rx)
}

/// The next event called `name`, skipping others.
async fn next_event(rx: &mut UnboundedReceiver<(String, Value)>, name: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {name} event in time"))
            .expect("channel open");
        if got.0 == name {
            return got.1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_progress_and_completion_reach_both_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    TinyLlama::default().write(dir.path()).unwrap();
    let hub = FakeHub::start().await.unwrap();
    // Slow enough for several progress events, fast enough for a test.
    hub.add_repo(
        FakeRepo::from_dir("test-org/tiny-llama", dir.path())
            .unwrap()
            .throttled(4 << 20),
    );
    let app = spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await;
    let (root, mut root_rx) = listen(&app.base, "/").await;
    let (progress, mut progress_rx) = listen(&app.base, "/progress").await;

    let r = app
        .post(
            "/api/models",
            json!({"source": "huggingface", "repo_id": "test-org/tiny-llama"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.data()["id"].as_i64().unwrap();

    for rx in [&mut root_rx, &mut progress_rx] {
        let p = next_event(rx, "model:download:progress").await;
        assert_eq!(p["modelId"], id);
        for key in ["progress", "downloadedBytes", "totalBytes", "speedBps"] {
            assert!(p[key].is_u64(), "{key} in {p}");
        }
        let done = next_event(rx, "model:download:complete").await;
        assert_eq!(done["modelId"], id);
        assert!(done["localPath"]
            .as_str()
            .unwrap()
            .contains("models--test-org--tiny-llama/snapshots/"));
    }
    let m = app.get(&format!("/api/models/{id}")).await;
    assert_eq!(m.data()["status"], "ready");
    root.disconnect().await.ok();
    progress.disconnect().await.ok();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_download_emits_download_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    TinyLlama::default().write(dir.path()).unwrap();
    let hub = FakeHub::start().await.unwrap();
    hub.add_repo(
        FakeRepo::from_dir("test-org/slow-llama", dir.path())
            .unwrap()
            .throttled(256 << 10),
    );
    let app = spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await;
    let (client, mut rx) = listen(&app.base, "/progress").await;
    let r = app
        .post(
            "/api/models",
            json!({"source": "huggingface", "repo_id": "test-org/slow-llama"}),
        )
        .await;
    let id = r.data()["id"].as_i64().unwrap();
    next_event(&mut rx, "model:download:progress").await;
    let r = app
        .post(&format!("/api/models/{id}/cancel"), json!({}))
        .await;
    assert_eq!(r.data()["status"], "error");
    let e = next_event(&mut rx, "model:download:error").await;
    assert_eq!(e["modelId"], id);
    assert_eq!(e["error"]["code"], "DOWNLOAD_CANCELLED");
    assert_eq!(e["error"]["message"], "Download cancelled by user");
    client.disconnect().await.ok();
    app.stop().await;
}
