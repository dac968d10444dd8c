//! Loading and unloading: every quantization on single-file and sharded, f32 and bf16 test
//! models; one model at a time; leases; honest memory; failures that release everything.

use std::time::Duration;

use millm::domain::Quantization;
use millm::engine::{estimate, inspect_folder};
use millm_testkit::{TinyLlama, WrittenModel};
use serde_json::json;

use crate::support::{spawn_app, spawn_with, test_settings, Db, TestApp};

const LOAD_WAIT: Duration = Duration::from_secs(60);

fn expected_dtype(q: &str, bf16: bool) -> &'static str {
    match (q, bf16) {
        ("FP32", _) => "f32",
        ("FP16", false) => "f16",
        // On the CPU a bf16 checkpoint is held as f16 (candle widens bf16 matmuls on every call).
        ("FP16", true) => "f16",
        ("Q8", _) => "q8_0",
        ("Q4", _) => "q4k",
        ("Q2", _) => "q2k",
        _ => unreachable!(),
    }
}

async fn load_and_check(app: &TestApp, id: i64, model: &WrittenModel, q: &str, bf16: bool) {
    let reply = app.post(&format!("/api/models/{id}/load"), json!({})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.data()["status"], "loading");
    let data = app.wait_status(id, "loaded", LOAD_WAIT).await;
    assert_eq!(data["num_parameters"], json!(model.parameter_count), "{q}");
    assert_eq!(data["device"], "cpu");
    assert_eq!(data["dtype"], expected_dtype(q, bf16), "{q} bf16={bf16}");
    assert!(data["loaded_at"].is_string());

    let info = inspect_folder(&model.dir).unwrap();
    let est = estimate(&info.tensors, q.parse::<Quantization>().unwrap(), false);
    let measured = data["memory_footprint"].as_f64().unwrap();
    let ratio = est.weights_bytes as f64 / measured;
    assert!(
        (0.95..=1.05).contains(&ratio),
        "{q}: estimate {} vs measured {measured}",
        est.weights_bytes
    );
    let health = app.get("/api/health").await;
    assert_eq!(health.data()["loaded_model_id"], id);

    let reply = app
        .post(&format!("/api/models/{id}/unload"), json!({}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let data = reply.data();
    assert_eq!(data["status"], "ready");
    for field in [
        "num_parameters",
        "memory_footprint",
        "device",
        "dtype",
        "loaded_at",
    ] {
        assert!(data[field].is_null(), "{field} only while loaded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_quantization_loads_within_its_estimate() {
    let app = spawn_app(Db::Sqlite).await;
    for (kind, spec, bf16) in [
        ("single-f32", TinyLlama::default(), false),
        ("sharded-bf16", TinyLlama::default().bf16().sharded(3), true),
        ("single-bf16", TinyLlama::default().bf16(), true),
        ("sharded-f32", TinyLlama::default().sharded(2), false),
    ] {
        for q in ["FP32", "FP16", "Q8", "Q4", "Q2"] {
            let (id, model) = app.add_model(&format!("{kind}-{q}"), spec.clone(), q).await;
            load_and_check(&app, id, &model, q, bf16).await;
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_miss_the_k_block_fall_back_to_q4_0() {
    let app = spawn_app(Db::Sqlite).await;
    // Inner size 96: not a multiple of 256, a multiple of 32.
    let spec = TinyLlama {
        hidden: 96,
        intermediate: 192,
        heads: 4,
        kv_heads: 2,
        ..TinyLlama::default()
    };
    let (id, model) = app.add_model("narrow", spec, "Q4").await;
    app.post(&format!("/api/models/{id}/load"), json!({})).await;
    let data = app.wait_status(id, "loaded", LOAD_WAIT).await;
    assert_eq!(data["dtype"], "q4_0");
    let info = inspect_folder(&model.dir).unwrap();
    let est = estimate(&info.tensors, Quantization::Q4, false);
    let measured = data["memory_footprint"].as_f64().unwrap();
    assert!((est.weights_bytes as f64 / measured - 1.0).abs() < 0.05);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_another_model_unloads_the_current_one() {
    let app = spawn_app(Db::Sqlite).await;
    let (a, _) = app.add_model("a", TinyLlama::default(), "Q8").await;
    let (b, _) = app.add_model("b", TinyLlama::default(), "Q4").await;
    app.post(&format!("/api/models/{a}/load"), json!({})).await;
    app.wait_status(a, "loaded", LOAD_WAIT).await;
    let reply = app.post(&format!("/api/models/{b}/load"), json!({})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    app.wait_status(b, "loaded", LOAD_WAIT).await;
    let a_now = app.get(&format!("/api/models/{a}")).await;
    assert_eq!(a_now.data()["status"], "ready");
    assert!(a_now.data()["memory_footprint"].is_null());
    assert_eq!(app.get("/api/health").await.data()["loaded_model_id"], b);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_simultaneous_loads_accept_exactly_one() {
    let app = spawn_app(Db::Sqlite).await;
    let (id, _) = app.add_model("race", TinyLlama::default(), "Q4").await;
    let (other, _) = app
        .add_model("race-other", TinyLlama::default(), "Q8")
        .await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let http = app.http.clone();
        let target = if i % 4 == 3 { other } else { id };
        let url = app.url(&format!("/api/models/{target}/load"));
        tasks.push(tokio::spawn(async move {
            let r = http.post(url).send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, body)
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            202 => accepted += 1,
            409 | 400 => assert!(
                ["MODEL_BUSY", "MODEL_ALREADY_LOADED"]
                    .contains(&body["error"]["code"].as_str().unwrap()),
                "{body}"
            ),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_rules_for_load_unload_and_delete() {
    let app = spawn_app(Db::Sqlite).await;
    let (id, _) = app.add_model("rules", TinyLlama::default(), "Q8").await;
    let reply = app
        .post(&format!("/api/models/{id}/unload"), json!({}))
        .await;
    assert_eq!((reply.status, reply.code()), (400, "MODEL_NOT_LOADED"));

    let reply = app.post(&format!("/api/models/{id}/load"), json!({})).await;
    assert_eq!(reply.status, 202);
    // Loading or loaded: a delete is refused either way.
    let reply = app.delete(&format!("/api/models/{id}")).await;
    assert_eq!((reply.status, reply.code()), (409, "MODEL_BUSY"));
    app.wait_status(id, "loaded", LOAD_WAIT).await;
    let reply = app.post(&format!("/api/models/{id}/load"), json!({})).await;
    assert_eq!((reply.status, reply.code()), (400, "MODEL_ALREADY_LOADED"));
    let reply = app.delete(&format!("/api/models/{id}")).await;
    assert_eq!((reply.status, reply.code()), (409, "MODEL_BUSY"));
    assert_eq!(
        app.post("/api/models/999/load", json!({})).await.code(),
        "MODEL_NOT_FOUND"
    );
    assert_eq!(
        app.post("/api/models/0/load", json!({})).await.code(),
        "VALIDATION_ERROR"
    );

    app.post(&format!("/api/models/{id}/unload"), json!({}))
        .await;
    let reply = app.delete(&format!("/api/models/{id}")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    app.stop().await;
}

/// A checkpoint whose header is valid but which holds a tensor type the loader cannot use.
fn write_unloadable(app: &TestApp) -> std::path::PathBuf {
    let model = app.write_model("unloadable", TinyLlama::default());
    let path = model.dir.join("extra.safetensors");
    let data = vec![0u8; 8 * 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::C64, vec![4], &data).unwrap();
    safetensors::serialize_to_file(vec![("extra.complex", view)], None, &path).unwrap();
    // Make it part of the checkpoint through an index.
    let mut map = serde_json::Map::new();
    for (name, _) in &model.tensors {
        map.insert(name.clone(), json!("model.safetensors"));
    }
    map.insert("extra.complex".into(), json!("extra.safetensors"));
    std::fs::write(
        model.dir.join("model.safetensors.index.json"),
        serde_json::to_string(&json!({"metadata": {}, "weight_map": map})).unwrap(),
    )
    .unwrap();
    model.dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_reports_the_reason_and_can_be_retried() {
    let app = spawn_app(Db::Sqlite).await;
    let dir = write_unloadable(&app);
    let id = app.add_local(&dir, "Q4").await.data()["id"]
        .as_i64()
        .unwrap();
    let reply = app.post(&format!("/api/models/{id}/load"), json!({})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let data = app.wait_status(id, "error", LOAD_WAIT).await;
    let message = data["error_message"].as_str().unwrap();
    assert!(message.contains("extra.complex"), "{message}");
    assert!(data["memory_footprint"].is_null());
    assert!(app.get("/api/health").await.data()["loaded_model_id"].is_null());
    assert!(app.services.loaded_model_id().is_none(), "nothing is held");
    // From error, a load is allowed again (a retry).
    let reply = app.post(&format!("/api/models/{id}/load"), json!({})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    app.wait_status(id, "error", LOAD_WAIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_larger_than_free_memory_is_refused_before_touching_memory() {
    let app = spawn_app(Db::Sqlite).await;
    let dir = app.dir.path().join("huge");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures":["LlamaForCausalLM"]}"#,
    )
    .unwrap();
    // A 64 GiB f32 tensor in a sparse file: the header is real, the disk holds nothing.
    let (rows, cols) = (1usize << 20, 1usize << 14);
    let header = json!({"huge.weight": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [0, rows * cols * 4]}});
    let mut text = serde_json::to_string(&header).unwrap();
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let path = dir.join("model.safetensors");
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(bytes.len() as u64 + (rows * cols * 4) as u64)
        .unwrap();

    let id = app.add_local(&dir, "FP32").await.data()["id"]
        .as_i64()
        .unwrap();
    let reply = app.post(&format!("/api/models/{id}/load"), json!({})).await;
    assert_eq!(reply.status, 507, "{}", reply.body);
    assert_eq!(reply.code(), "INSUFFICIENT_MEMORY");
    let details = &reply.body["error"]["details"];
    assert!(details["required_mb"].as_u64().unwrap() > details["available_mb"].as_u64().unwrap());
    assert!(details["required_mb"].as_u64().unwrap() >= 64 * 1024);
    assert_eq!(
        app.get(&format!("/api/models/{id}")).await.data()["status"],
        "ready"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_waits_for_leases_to_end() {
    let app = spawn_app(Db::Sqlite).await;
    let (id, _) = app.add_model("leased", TinyLlama::default(), "Q8").await;
    app.post(&format!("/api/models/{id}/load"), json!({})).await;
    app.wait_status(id, "loaded", LOAD_WAIT).await;

    let lease = app
        .services
        .lease(Some(id))
        .await
        .expect("a lease on the loaded model");
    // The lease is on the model the registry shows loaded.
    let listed = app.get(&format!("/api/models/{id}")).await.data()["num_parameters"].as_u64();
    assert_eq!(Some(lease.model().num_parameters), listed);
    let http = app.http.clone();
    let url = app.url(&format!("/api/models/{id}/unload"));
    let unload =
        tokio::spawn(async move { http.post(url).send().await.unwrap().status().as_u16() });
    // New users are refused as soon as the unload starts; the lease holder keeps working.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.services.lease(Some(id)).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "unload never started"
        );
        tokio::task::yield_now().await;
    }
    assert!(!unload.is_finished(), "the unload waits for the lease");
    assert!(!lease.is_revoked());
    drop(lease);
    assert_eq!(unload.await.unwrap(), 200);
    let err = app.services.lease(Some(id)).await.err().unwrap();
    assert_eq!(err.code.as_str(), "MODEL_NOT_LOADED");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_revokes_leases_after_the_graceful_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(Db::Sqlite, dir.path()).await;
    settings.graceful_unload_timeout = 1;
    let app = spawn_with(settings, dir).await;
    let (id, _) = app.add_model("stuck", TinyLlama::default(), "Q4").await;
    app.post(&format!("/api/models/{id}/load"), json!({})).await;
    app.wait_status(id, "loaded", LOAD_WAIT).await;
    let lease = app.services.lease(Some(id)).await.unwrap();
    let started = std::time::Instant::now();
    let reply = app
        .post(&format!("/api/models/{id}/unload"), json!({}))
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited the graceful timeout"
    );
    assert!(lease.is_revoked(), "the holder is told to stop");
    assert_eq!(reply.data()["status"], "ready");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_leaves_no_model_stuck_and_auto_load_loads_one() {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(Db::Sqlite, dir.path()).await;
    let app = spawn_with(settings.clone(), dir).await;
    let (id, _) = app.add_model("persist", TinyLlama::default(), "Q8").await;
    app.post(&format!("/api/models/{id}/load"), json!({})).await;
    app.wait_status(id, "loaded", LOAD_WAIT).await;
    let dir = {
        let TestApp {
            dir,
            shutdown,
            handle,
            ..
        } = app;
        shutdown.cancel();
        let _ = handle.await;
        dir
    };
    let app = spawn_with(settings.clone(), tempfile::tempdir().unwrap()).await;
    assert_eq!(
        app.get(&format!("/api/models/{id}")).await.data()["status"],
        "ready"
    );
    app.stop().await;

    let mut settings = settings;
    settings.auto_load_model = Some("persist".into());
    let app = spawn_with(settings, dir).await;
    app.wait_status(id, "loaded", LOAD_WAIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_running_load_and_leaves_no_row_loading() {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(Db::Sqlite, dir.path()).await;
    let app = spawn_with(settings, dir).await;
    // Large enough that quantizing it takes a good part of a second at least.
    let (id, _) = app
        .add_model(
            "slow-load",
            TinyLlama::with_weight_bytes(32 << 20, millm_testkit::WeightDtype::F32),
            "Q4",
        )
        .await;
    let reply = app.post(&format!("/api/models/{id}/load"), json!({})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let (settings, _dir) = app.stop_keeping_data().await;
    // The server has returned: the load has stopped and its row says so.
    let store = millm::store::Store::connect(&settings.database_url())
        .await
        .unwrap();
    let row = store.get_model(id).await.unwrap();
    assert_eq!(row.status.as_str(), "ready", "not left loading");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_estimate_counts_a_generations_kv_cache_when_the_model_can_generate() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(Db::Sqlite, dir.path()).await;
    settings.max_context_tokens = 1024;
    let app = spawn_with(settings, dir).await;
    let llama = app.write_model("kv-llama", TinyLlama::default());
    let estimated = app.add_local(&llama.dir, "FP32").await.data()["estimated_memory_mb"]
        .as_u64()
        .unwrap();
    let info = inspect_folder(&llama.dir).unwrap();
    let weights_and_overhead = estimate(&info.tensors, Quantization::FP32, false).total_bytes();
    // 2 layers × (K and V) × 2 key/value heads × 64 wide × 1,024 tokens × 4 bytes.
    let kv = 2 * 2 * 2 * 64 * 1024 * 4;
    assert_eq!(
        estimated,
        millm::domain::mib_ceil(weights_and_overhead + kv)
    );
    // An architecture that cannot generate keeps no cache.
    let other = app.write_model("kv-neox", TinyLlama::default());
    let path = other.dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["architectures"] = json!(["GPTNeoXForCausalLM"]);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let estimated = app.add_local(&other.dir, "FP32").await.data()["estimated_memory_mb"]
        .as_u64()
        .unwrap();
    assert_eq!(estimated, millm::domain::mib_ceil(weights_and_overhead));
    app.stop().await;
}
