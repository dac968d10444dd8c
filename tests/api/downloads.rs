//! Hub downloads against the in-process fake Hub: preview, the cache layout, errors that create
//! no record, resume after a dropped connection and after a restart, cancel, checksum,
//! traversal names, concurrency, retry and delete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use millm::hub::client::ErrorContext;
use millm::hub::download::{BlobLocks, Downloader};
use millm::hub::{DownloadOptions, FilePlan, HubClient, RepoCache};
use millm_testkit::fake_hub::{GOOD_TOKEN, NO_ACCESS_TOKEN};
use millm_testkit::{FakeHub, FakeRepo};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::support::{spawn_app_with_hub, spawn_with, Db, TestApp};

const WAIT: Duration = Duration::from_secs(60);

/// A tiny Llama repo with the extra files a real repo has and a download must skip.
fn tiny_repo(id: &str, seed: u64) -> (FakeRepo, tempfile::TempDir) {
    let dir = crate::support::tiny_llama(seed);
    let repo = FakeRepo::from_dir(id, dir.path())
        .unwrap()
        .file("pytorch_model.bin", vec![7u8; 4096])
        .file("README.md", "# tiny\n")
        .file("logo.png", vec![0x89, b'P', b'N', b'G'])
        .file("onnx/model.safetensors", vec![1u8; 64]);
    (repo, dir)
}

async fn hub_with(repos: Vec<FakeRepo>) -> FakeHub {
    let hub = FakeHub::start().await.unwrap();
    for r in repos {
        hub.add_repo(r);
    }
    hub
}

pub(crate) fn download_body(repo: &str) -> Value {
    json!({"source": "huggingface", "repo_id": repo})
}

/// Polls the model until `done` holds, or panics after `WAIT`.
async fn wait_for(app: &TestApp, id: i64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = app.get(&format!("/api/models/{id}")).await;
        let m = r.data().clone();
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "model {id} never became {what}: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn wait_status(app: &TestApp, id: i64, status: &str) -> Value {
    wait_for(app, id, status, |m| m["status"] == status).await
}

pub(crate) fn cache_of(app: &TestApp, repo: &str) -> PathBuf {
    let (owner, name) = repo.split_once('/').unwrap();
    app.settings
        .cache_dir()
        .join(format!("models--{owner}--{name}"))
}

pub(crate) fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.file_name().to_string_lossy().to_string());
        }
    }
    out.sort();
    out
}

/// The names in a repo's `blobs/` folder, sorted.
fn blob_names(cache: &RepoCache) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache.blobs_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_reports_every_field_without_downloading_weights() {
    let (repo, dir) = tiny_repo("test-org/tiny-llama", 1);
    let weights = repo.files["model.safetensors"].bytes.len() as u64;
    let hub = hub_with(vec![repo]).await;
    let app = spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await;

    let r = app
        .post(
            "/api/models/preview",
            json!({"repo_id": "test-org/tiny-llama"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let p = r.data().clone();
    assert_eq!(p["name"], "tiny-llama");
    assert_eq!(p["params"], "1.4M");
    assert_eq!(p["architecture"], "LlamaForCausalLM");
    assert_eq!(p["is_gated"], false);
    assert_eq!(p["requires_trust_remote_code"], false);
    assert_eq!(p["downloads"], 1234);
    assert_eq!(p["likes"], 56);
    assert_eq!(p["pipeline_tag"], "text-generation");
    assert_eq!(p["model_type"], "llama");
    assert_eq!(p["architectures"], json!(["LlamaForCausalLM"]));
    assert_eq!(p["license"], "apache-2.0");
    assert_eq!(p["language"], json!(["en"]));
    assert!(p["tags"].as_array().unwrap().iter().any(|t| t == "llama"));
    assert!(p["has_access"].is_null());
    let files: Vec<&str> = p["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        vec![
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    // The estimates are the local model's, from the same shapes and the same function.
    let local = app.add_local(dir.path(), "Q4").await;
    let local_q4 = local.data()["estimated_memory_mb"].as_i64().unwrap();
    let sizes = &p["estimated_sizes"];
    assert_eq!(sizes["Q4"]["memory_mb"].as_i64().unwrap(), local_q4);
    let disk = sizes["FP32"]["disk_mb"].clone();
    for q in ["FP32", "FP16", "Q8", "Q4", "Q2"] {
        assert_eq!(
            sizes[q]["disk_mb"], disk,
            "disk_mb is the same for every quantization"
        );
    }
    let mem = |q: &str| sizes[q]["memory_mb"].as_u64().unwrap();
    assert!(
        mem("FP32") > mem("FP16")
            && mem("FP16") >= mem("Q8")
            && mem("Q8") >= mem("Q4")
            && mem("Q4") >= mem("Q2")
    );
    // Only headers were read: far fewer bytes than the weights.
    assert!(
        hub.stats().bytes_sent() < weights / 10,
        "sent {} of {weights}",
        hub.stats().bytes_sent()
    );
    assert_eq!(
        hub.stats()
            .cdn_requests_with_auth
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    app.stop().await;
}

async fn download_fills_the_python_cache_layout(db: Db) {
    let (repo, _dir) = tiny_repo("test-org/tiny-llama", 2);
    let sha = repo.sha256_of("model.safetensors").unwrap().to_string();
    let hub = hub_with(vec![repo.clone()]).await;
    let app = spawn_app_with_hub(db, &hub.endpoint()).await;

    let r = app
        .post("/api/models", download_body("test-org/tiny-llama"))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.data()["status"], "downloading");
    assert_eq!(r.data()["revision"], repo.commit.as_str());
    assert_eq!(r.data()["architecture"], "LlamaForCausalLM");
    assert_eq!(r.data()["params"], "1.4M");
    assert!(r.data()["estimated_memory_mb"].as_i64().unwrap() > 0);
    let id = r.data()["id"].as_i64().unwrap();
    let m = wait_status(&app, id, "ready").await;
    assert!(m["download_progress"].is_null());

    let root = cache_of(&app, "test-org/tiny-llama");
    assert_eq!(
        std::fs::read_to_string(root.join("refs/main")).unwrap(),
        repo.commit
    );
    let snap = root.join("snapshots").join(&repo.commit);
    let mut linked = files_in(&snap);
    linked.sort();
    assert_eq!(
        linked,
        vec![
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    for name in &linked {
        let target = std::fs::read_link(snap.join(name)).unwrap();
        let target = target.to_str().unwrap();
        assert!(target.starts_with("../../blobs/"), "{name} -> {target}");
        assert!(root
            .join("snapshots")
            .join(&repo.commit)
            .join(target)
            .is_file());
    }
    assert_eq!(
        std::fs::read_link(snap.join("model.safetensors")).unwrap(),
        Path::new(&format!("../../blobs/{sha}"))
    );
    assert_eq!(sha256_file(&root.join("blobs").join(&sha)), sha);
    // Small files are named by their git blob sha1, as the Hub's ETag says.
    let cfg = &repo.files["config.json"];
    assert_eq!(
        std::fs::read_link(snap.join("config.json")).unwrap(),
        Path::new(&format!("../../blobs/{}", cfg.git_sha1))
    );
    assert!(files_in(&root.join("blobs"))
        .iter()
        .all(|f| !f.contains("incomplete")));
    assert_eq!(
        files_in(&root.join("blobs")).len(),
        5,
        "only what loading needs"
    );
    let m = app.get(&format!("/api/models/{id}")).await.data().clone();
    assert!(m["disk_size_mb"].as_i64().unwrap() >= 5, "{m}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_errors_answer_at_once_and_create_no_record() {
    let (gated, _d1) = tiny_repo("test-org/gated-llama", 3);
    let (plain, _d2) = tiny_repo("test-org/tiny-llama", 4);
    let hub = hub_with(vec![gated.gated(), plain]).await;
    let app = spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await;

    let cases = [
        (
            json!({"source": "huggingface", "repo_id": "test-org/gated-llama"}),
            401,
            "GATED_MODEL_NO_TOKEN",
        ),
        (
            json!({"source": "huggingface", "repo_id": "test-org/gated-llama", "hf_token": NO_ACCESS_TOKEN}),
            401,
            "GATED_MODEL_NO_TOKEN",
        ),
        (
            json!({"source": "huggingface", "repo_id": "test-org/tiny-llama", "hf_token": "hf_wrong"}),
            401,
            "INVALID_HF_TOKEN",
        ),
        (
            json!({"source": "huggingface", "repo_id": "test-org/nope"}),
            404,
            "REPO_NOT_FOUND",
        ),
        (
            json!({"source": "huggingface", "repo_id": "test-org/nope", "hf_token": GOOD_TOKEN}),
            404,
            "REPO_NOT_FOUND",
        ),
        (
            json!({"source": "huggingface", "repo_id": "test-org/tiny-llama", "revision": "v9"}),
            404,
            "REPO_NOT_FOUND",
        ),
        (
            json!({"source": "huggingface", "repo_id": "not a repo"}),
            422,
            "VALIDATION_ERROR",
        ),
        (
            json!({"source": "huggingface", "repo_id": "a--b/c"}),
            422,
            "VALIDATION_ERROR",
        ),
        (json!({"source": "huggingface"}), 422, "VALIDATION_ERROR"),
    ];
    for (body, status, code) in cases {
        let r = app.post("/api/models", body.clone()).await;
        assert_eq!((r.status, r.code()), (status, code), "{body} -> {}", r.body);
        let text = r.body.to_string();
        assert!(
            !text.contains("hf_wrong") && !text.contains(NO_ACCESS_TOKEN),
            "a token is never echoed"
        );
    }
    let r = app
        .post(
            "/api/models/preview",
            json!({"repo_id": "test-org/gated-llama"}),
        )
        .await;
    assert_eq!(r.data()["is_gated"], true);
    assert!(r.data()["has_access"].is_null());
    let r = app
        .post(
            "/api/models/preview",
            json!({"repo_id": "test-org/gated-llama", "hf_token": NO_ACCESS_TOKEN}),
        )
        .await;
    assert_eq!(r.data()["has_access"], false);
    let r = app
        .post(
            "/api/models/preview",
            json!({"repo_id": "test-org/gated-llama", "hf_token": GOOD_TOKEN}),
        )
        .await;
    assert_eq!(r.data()["has_access"], true);
    let r = app
        .post("/api/models/preview", json!({"repo_id": "test-org/nope"}))
        .await;
    assert_eq!(r.code(), "REPO_NOT_FOUND");
    assert_eq!(
        app.get("/api/models")
            .await
            .data()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert!(
        files_in(&app.settings.cache_dir()).is_empty(),
        "nothing written"
    );

    // With a token that has access, the gated download works and the CDN never sees it.
    let body =
        json!({"source": "huggingface", "repo_id": "test-org/gated-llama", "hf_token": GOOD_TOKEN});
    let r = app.post("/api/models", body).await;
    assert_eq!(r.status, 202, "{}", r.body);
    wait_status(&app, r.data()["id"].as_i64().unwrap(), "ready").await;
    assert_eq!(
        hub.stats()
            .cdn_requests_with_auth
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloadable_and_malicious_repos_are_refused() {
    let (base, _d) = tiny_repo("x/base", 5);
    let mut no_st = FakeRepo::new("test-org/bin-only")
        .file("config.json", base.files["config.json"].bytes.clone());
    no_st = no_st.file("pytorch_model.bin", vec![0u8; 100]);
    let mut cfg: Value = serde_json::from_slice(&base.files["config.json"].bytes).unwrap();
    cfg["auto_map"] = json!({"AutoModelForCausalLM": "modeling_x.XForCausalLM"});
    let mut remote_code = base.clone();
    remote_code.id = "test-org/remote-code".into();
    let remote_code = remote_code.file("config.json", serde_json::to_vec(&cfg).unwrap());
    let mut evil = base.clone();
    evil.id = "test-org/evil".into();
    let evil = evil.file("../evil.safetensors", vec![0u8; 64]);
    let hub = hub_with(vec![no_st, remote_code, evil]).await;
    let app = spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await;

    let r = app
        .post("/api/models", download_body("test-org/bin-only"))
        .await;
    assert_eq!((r.status, r.code()), (422, "MODEL_UNSUPPORTED"));
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("safetensors"));
    let r = app
        .post("/api/models", download_body("test-org/remote-code"))
        .await;
    assert_eq!((r.status, r.code()), (422, "MODEL_UNSUPPORTED"));
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("auto_map"),
        "{}",
        r.body
    );
    let r = app
        .post(
            "/api/models/preview",
            json!({"repo_id": "test-org/remote-code"}),
        )
        .await;
    assert_eq!(r.data()["requires_trust_remote_code"], true);
    let r = app
        .post("/api/models", download_body("test-org/evil"))
        .await;
    assert_eq!((r.status, r.code()), (422, "MODEL_UNSUPPORTED"));
    assert_eq!(r.body["error"]["details"]["path"], "../evil.safetensors");
    assert_eq!(
        app.get("/api/models")
            .await
            .data()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let cache = app.settings.cache_dir();
    assert!(!cache.parent().unwrap().join("evil.safetensors").exists());
    assert!(!cache.join("evil.safetensors").exists());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_resumes_with_range_and_checks_sha256() {
    let (repo, _dir) = tiny_repo("test-org/tiny-llama", 6);
    let sha = repo.sha256_of("model.safetensors").unwrap().to_string();
    let hub = hub_with(vec![repo]).await;
    let app = spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await;
    hub.drop_next_transfers(1, 1 << 20);

    let r = app
        .post("/api/models", download_body("test-org/tiny-llama"))
        .await;
    let id = r.data()["id"].as_i64().unwrap();
    wait_status(&app, id, "ready").await;
    // Byte 8 is the header read at POST time; then the transfer resumed where it was cut.
    let resumed: Vec<u64> = hub
        .stats()
        .resumed_ranges("model.safetensors")
        .into_iter()
        .filter(|&s| s != 8)
        .collect();
    assert_eq!(
        resumed,
        vec![1 << 20],
        "the second request asked for the rest only"
    );
    let blob = cache_of(&app, "test-org/tiny-llama")
        .join("blobs")
        .join(&sha);
    assert_eq!(sha256_file(&blob), sha);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_hub_failures_are_retried_then_reported() {
    let (repo, _dir) = tiny_repo("test-org/tiny-llama", 7);
    let hub = hub_with(vec![repo]).await;
    let app = spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await;
    hub.fail_next_requests(2);
    let r = app
        .post(
            "/api/models/preview",
            json!({"repo_id": "test-org/tiny-llama"}),
        )
        .await;
    assert_eq!(r.status, 200, "two 503s are retried: {}", r.body);
    hub.fail_next_requests(100);
    let r = app
        .post("/api/models", download_body("test-org/tiny-llama"))
        .await;
    assert_eq!((r.status, r.code()), (502, "DOWNLOAD_FAILED"));
    assert_eq!(
        app.get("/api/models")
            .await
            .data()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    hub.fail_next_requests(0);
    app.stop().await;
}

async fn a_restart_mid_download_resumes_and_finishes(db: Db) {
    let (repo, _dir) = tiny_repo("test-org/slow-llama", 8);
    let sha = repo.sha256_of("model.safetensors").unwrap().to_string();
    let hub = hub_with(vec![repo.throttled(1 << 20)]).await;
    let app = spawn_app_with_hub(db, &hub.endpoint()).await;
    let r = app
        .post("/api/models", download_body("test-org/slow-llama"))
        .await;
    let id = r.data()["id"].as_i64().unwrap();
    wait_for(&app, id, "half-way", |m| {
        m["downloaded_bytes"].as_i64().unwrap_or(0) > 2 << 20
    })
    .await;

    let blobs = cache_of(&app, "test-org/slow-llama").join("blobs");
    let (settings, dir) = app.stop_keeping_data().await;
    let partial = blobs.join(format!("{sha}.incomplete"));
    assert!(partial.is_file(), "the partial file is kept for a resume");
    // Bytes counted as received but still on their way to the disk at the stop are fetched
    // again; what is on disk is the resume point.
    let prefix = std::fs::metadata(&partial).unwrap().len();
    assert!(prefix > 0, "the stop kept what was written");
    hub.set_repo_throttle("test-org/slow-llama", None);

    let app = spawn_with(settings, dir).await;
    let m = wait_status(&app, id, "ready").await;
    assert!(m["error_message"].is_null());
    let resumed = hub.stats().resumed_ranges("model.safetensors");
    assert!(
        resumed.contains(&prefix),
        "resumed from the {prefix} bytes on disk with Range: {resumed:?}"
    );
    assert_eq!(sha256_file(&blobs.join(&sha)), sha);
    assert!(!blobs.join(format!("{sha}.incomplete")).exists());
    app.stop().await;
}

async fn cancel_stops_the_transfer_and_removes_partial_files(db: Db) {
    let (repo, _dir) = tiny_repo("test-org/slow-llama", 9);
    let hub = hub_with(vec![repo.throttled(512 << 10)]).await;
    let app = spawn_app_with_hub(db, &hub.endpoint()).await;
    let r = app
        .post("/api/models", download_body("test-org/slow-llama"))
        .await;
    let id = r.data()["id"].as_i64().unwrap();
    wait_for(&app, id, "transferring", |m| {
        m["downloaded_bytes"].as_i64().unwrap_or(0) > 0
    })
    .await;
    assert!(hub.stats().open_transfers() > 0);

    let started = Instant::now();
    let r = app
        .post(&format!("/api/models/{id}/cancel"), json!({}))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "cancel took {:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["status"], "error");
    assert_eq!(r.data()["error_message"], "Download cancelled by user");
    until("the fake Hub to stop sending", || {
        hub.stats().open_transfers() == 0
    })
    .await;
    let root = cache_of(&app, "test-org/slow-llama");
    let left: Vec<String> = files_in(&root.join("blobs"));
    assert!(left.is_empty(), "nothing partial or orphaned: {left:?}");

    // Cancelling again returns the model unchanged; a retry starts afresh and finishes.
    let again = app
        .post(&format!("/api/models/{id}/cancel"), json!({}))
        .await;
    assert_eq!(again.data()["status"], "error");
    hub.set_repo_throttle("test-org/slow-llama", None);
    let r = app
        .post(&format!("/api/models/{id}/retry"), json!({}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.data()["status"], "downloading");
    wait_status(&app, id, "ready").await;
    let r = app
        .send(app.http.post(app.url(&format!("/api/models/{id}/retry"))))
        .await;
    assert_eq!((r.status, r.code()), (409, "INVALID_STATE"));
    assert_eq!(r.body["error"]["details"]["status"], "ready");
    let r = app
        .post(&format!("/api/models/{id}/cancel"), json!({}))
        .await;
    assert_eq!(
        r.data()["status"],
        "ready",
        "cancel of a ready model changes nothing"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mismatch_fails_and_leaves_nothing_in_the_cache() {
    let (repo, _dir) = tiny_repo("test-org/corrupt", 10);
    let sha = repo.sha256_of("model.safetensors").unwrap().to_string();
    let hub = hub_with(vec![repo.corrupt()]).await;
    let app = spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await;
    let r = app
        .post("/api/models", download_body("test-org/corrupt"))
        .await;
    let id = r.data()["id"].as_i64().unwrap();
    let m = wait_status(&app, id, "error").await;
    assert!(
        m["error_message"].as_str().unwrap().contains("checksum"),
        "{m}"
    );
    let blobs = files_in(&cache_of(&app, "test-org/corrupt").join("blobs"));
    assert!(blobs.iter().all(|b| !b.starts_with(&sha)), "{blobs:?}");
    app.stop().await;
}

/// A plain git file (here `tokenizer.json`) is checked against its git blob sha1, the ETag the
/// Hub gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_git_file_fails_its_sha1_and_leaves_nothing_in_the_cache() {
    let (repo, _dir) = tiny_repo("test-org/bad-tokenizer", 11);
    let file = repo.files["tokenizer.json"].clone();
    assert!(!file.lfs);
    let hub = hub_with(vec![repo.corrupt_file("tokenizer.json")]).await;
    let app = spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await;
    let r = app
        .post("/api/models", download_body("test-org/bad-tokenizer"))
        .await;
    let id = r.data()["id"].as_i64().unwrap();
    let m = wait_status(&app, id, "error").await;
    assert!(
        m["error_message"]
            .as_str()
            .unwrap()
            .contains("tokenizer.json"),
        "{m}"
    );
    let blobs = files_in(&cache_of(&app, "test-org/bad-tokenizer").join("blobs"));
    assert!(
        blobs.iter().all(|b| !b.starts_with(&file.git_sha1)),
        "{blobs:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_downloads_finish_with_correct_bytes() {
    let mut repos = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..10 {
        let (r, d) = tiny_repo(&format!("test-org/tiny-{i}"), 100 + i);
        repos.push(r);
        dirs.push(d);
    }
    let hub = hub_with(repos.clone()).await;
    let app = Arc::new(spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await);
    let posts = repos.iter().map(|r| {
        let app = app.clone();
        let id = r.id.clone();
        async move { app.post("/api/models", download_body(&id)).await }
    });
    let replies = futures::future::join_all(posts).await;
    for (r, repo) in replies.iter().zip(&repos) {
        assert_eq!(r.status, 202, "{}", r.body);
        let id = r.data()["id"].as_i64().unwrap();
        wait_status(&app, id, "ready").await;
        let root = cache_of(&app, &repo.id);
        for (path, f) in &repo.files {
            if ["model.safetensors", "config.json", "tokenizer.json"].contains(&path.as_str()) {
                let got =
                    std::fs::read(root.join("snapshots").join(&repo.commit).join(path)).unwrap();
                assert!(got == f.bytes, "{} {path} differs", repo.id);
            }
        }
    }
    Arc::try_unwrap(app)
        .ok()
        .expect("no other holders")
        .stop()
        .await;
}

async fn delete_keeps_blobs_another_quantization_uses(db: Db) {
    let (repo, _dir) = tiny_repo("test-org/tiny-llama", 11);
    let sha = repo.sha256_of("model.safetensors").unwrap().to_string();
    let hub = hub_with(vec![repo.clone()]).await;
    let app = spawn_app_with_hub(db, &hub.endpoint()).await;
    let a = app.post("/api/models", json!({"source": "huggingface", "repo_id": "test-org/tiny-llama", "quantization": "Q4"})).await;
    let a = a.data()["id"].as_i64().unwrap();
    wait_status(&app, a, "ready").await;
    let sent = hub.stats().bytes_sent();
    let b = app.post("/api/models", json!({"source": "huggingface", "repo_id": "test-org/tiny-llama", "quantization": "Q8"})).await;
    let b = b.data()["id"].as_i64().unwrap();
    wait_status(&app, b, "ready").await;
    assert!(
        hub.stats().bytes_sent() - sent < 100_000,
        "the second quantization reuses the blobs"
    );

    let root = cache_of(&app, "test-org/tiny-llama");
    let r = app.delete(&format!("/api/models/{a}")).await;
    assert_eq!(r.data()["freed_bytes"], 0);
    assert!(
        root.join("blobs").join(&sha).is_file(),
        "still used by the Q8 record"
    );
    assert!(root
        .join("snapshots")
        .join(&repo.commit)
        .join("model.safetensors")
        .exists());
    let r = app.delete(&format!("/api/models/{b}")).await;
    assert!(
        r.data()["freed_bytes"].as_u64().unwrap()
            >= repo.files["model.safetensors"].bytes.len() as u64
    );
    assert!(
        !root.exists(),
        "the repo's cache folder is gone: {:?}",
        files_in(&root)
    );
    app.stop().await;
}

/// The download engine alone against `hub`: the plan for a repo's `model.safetensors`, and an
/// empty cache.
struct Engine {
    client: HubClient,
    repo_id: millm::domain::RepoId,
    plan: FilePlan,
    cache: RepoCache,
    _dir: tempfile::TempDir,
}

async fn engine_for(hub: &FakeHub, repo: &str) -> Engine {
    let client = HubClient::new(&hub.endpoint()).unwrap();
    let repo_id = millm::domain::RepoId::parse(repo).unwrap();
    let head = client
        .head(&repo_id, "main", "model.safetensors", None)
        .await
        .unwrap();
    assert!(head.lfs && head.url.host_str() == Some("localhost"));
    let plan = FilePlan {
        path: "model.safetensors".into(),
        size: head.size.unwrap(),
        identity: head.identity.clone(),
        url: head.url.to_string(),
        lfs: true,
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = RepoCache::new(dir.path(), &repo_id);
    Engine {
        client,
        repo_id,
        plan,
        cache,
        _dir: dir,
    }
}

impl Engine {
    fn downloader(&self, options: DownloadOptions, cancel: CancellationToken) -> Arc<Downloader> {
        Downloader::new(
            self.client.clone(),
            self.cache.clone(),
            options,
            None,
            cancel,
            BlobLocks::default(),
            ErrorContext::new(&self.repo_id, "main", None, false),
        )
    }
}

/// The engine alone, with small ranges: many parallel ranges, a connection dropped in several
/// of them, a stop half-way, and a resume from the written prefix that hashes it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_ranges_leave_a_true_prefix_that_resumes_with_a_correct_sha256() {
    let data: Vec<u8> = (0..(6u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let repo = FakeRepo::new("test-org/big")
        .file("model.safetensors", data.clone())
        .throttled(4 << 20);
    let sha = repo.sha256_of("model.safetensors").unwrap().to_string();
    let hub = hub_with(vec![repo.clone()]).await;
    let engine = engine_for(&hub, "test-org/big").await;
    let (plan, cache) = (engine.plan.clone(), engine.cache.clone());
    let options = DownloadOptions {
        chunk_size: 512 << 10,
        connections_per_file: 4,
        backoff: Duration::from_millis(50),
        ..DownloadOptions::default()
    };
    let make = |cancel: CancellationToken| engine.downloader(options.clone(), cancel);
    // First run: stopped after a third of the bytes.
    let cancel = CancellationToken::new();
    let d = make(cancel.clone());
    let run = {
        let d = d.clone();
        let plan = plan.clone();
        tokio::spawn(async move { d.download_all(&repo.commit, &[plan]).await })
    };
    let incomplete = cache.incomplete(&sha);
    until("a sixth of the file written", || {
        std::fs::metadata(&incomplete).map(|m| m.len()).unwrap_or(0) >= 1 << 20
    })
    .await;
    cancel.cancel();
    assert!(matches!(
        run.await.unwrap(),
        Err(millm::hub::HubError::Cancelled)
    ));
    // The partial file is a true prefix of the blob, as the Python tools expect to resume it.
    let partial = std::fs::read(cache.incomplete(&sha)).unwrap();
    assert!(
        partial.len() >= 512 << 10,
        "at least the first range was kept ({} bytes)",
        partial.len()
    );
    assert!(
        partial[..] == data[..partial.len()],
        "the partial file is a prefix"
    );
    assert_eq!(
        blob_names(&cache),
        [format!("{sha}.incomplete")],
        "the partial file alone, no sidecar beside it"
    );

    // Second run: full speed, three connections dropped mid-range, resumed from the prefix.
    hub.set_repo_throttle("test-org/big", None);
    hub.drop_next_transfers(3, 100 << 10);
    let before = hub.stats().bytes_sent();
    let ranges_before = hub.stats().ranges.lock().unwrap().len();
    let d = make(CancellationToken::new());
    let commit = hub.repo("test-org/big").unwrap().commit;
    d.download_all(&commit, std::slice::from_ref(&plan))
        .await
        .unwrap();
    let second = hub.stats().bytes_sent() - before;
    assert!(
        second <= (data.len() - partial.len()) as u64 + (3 << 20),
        "the prefix was not fetched again ({second} bytes for {} missing)",
        data.len() - partial.len()
    );
    let first_asked = hub.stats().ranges.lock().unwrap()[ranges_before..]
        .iter()
        .map(|(_, start)| *start)
        .min();
    assert_eq!(
        first_asked,
        Some(partial.len() as u64),
        "the second run asked for nothing before the prefix's end"
    );
    assert_eq!(sha256_file(&cache.blob(&sha)), sha);
    assert_eq!(
        blob_names(&cache),
        std::slice::from_ref(&sha),
        "the blob alone"
    );
    assert!(hub.stats().ranges.lock().unwrap().len() > 8, "many ranges");
}

/// A partial file the Python client left (`blobs/<etag>.incomplete`, its bytes a prefix) is
/// resumed from its length, under the lock file the Python client uses for that blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_file_left_by_the_python_client_is_resumed_from_its_length() {
    let data: Vec<u8> = (0..(5u32 << 20))
        .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
        .collect();
    let repo = FakeRepo::new("test-org/py").file("model.safetensors", data.clone());
    let sha = repo.sha256_of("model.safetensors").unwrap().to_string();
    let hub = hub_with(vec![repo.clone()]).await;
    let engine = engine_for(&hub, "test-org/py").await;
    let (plan, cache) = (engine.plan.clone(), engine.cache.clone());
    std::fs::create_dir_all(cache.blobs_dir()).unwrap();
    let left = 1_234_567usize;
    std::fs::write(cache.incomplete(&sha), &data[..left]).unwrap();
    let options = DownloadOptions {
        chunk_size: 1 << 20,
        ..DownloadOptions::default()
    };
    let d = engine.downloader(options, CancellationToken::new());
    d.download_all(&repo.commit, std::slice::from_ref(&plan))
        .await
        .unwrap();
    let starts: Vec<u64> = hub
        .stats()
        .ranges
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(starts.iter().min(), Some(&(left as u64)), "{starts:?}");
    assert_eq!(
        hub.stats().bytes_sent(),
        (data.len() - left) as u64,
        "only the missing bytes were fetched"
    );
    assert_eq!(sha256_file(&cache.blob(&sha)), sha);
    assert!(
        cache.lock_file(&sha).is_file(),
        "the Python lock file was used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_is_retried_and_the_download_finishes() {
    let data: Vec<u8> = (0..(3u32 << 20))
        .map(|i| (i.wrapping_mul(40503) >> 7) as u8)
        .collect();
    let repo = FakeRepo::new("test-org/stall").file("model.safetensors", data);
    let sha = repo.sha256_of("model.safetensors").unwrap().to_string();
    let hub = hub_with(vec![repo.clone()]).await;
    // The first transfer goes silent after 1 MiB but keeps its connection open.
    hub.stall_next_transfers(1, 1 << 20);
    let engine = engine_for(&hub, "test-org/stall").await;
    let (plan, cache) = (engine.plan.clone(), engine.cache.clone());
    let options = DownloadOptions {
        connections_per_file: 1,
        stall_timeout: Duration::from_millis(700),
        backoff: Duration::from_millis(50),
        ..DownloadOptions::default()
    };
    let d = engine.downloader(options, CancellationToken::new());
    let started = Instant::now();
    d.download_all(&repo.commit, &[plan])
        .await
        .expect("the stall is retried");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "it waited out the stall"
    );
    let bytes = std::fs::read(cache.blob(&sha)).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), sha);
    // The retry resumed after the bytes that had arrived, with Range.
    let ranges = hub.stats().resumed_ranges("model.safetensors");
    assert!(
        ranges.iter().any(|&start| start >= 1 << 20),
        "resumed ranges: {ranges:?}"
    );
}

/// A small tmpfs, unmounted when dropped (the test command runs as root, as CI does).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: PathBuf, mib: u32) -> SmallDisk {
        std::fs::create_dir_all(&at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&at)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "mounting a small tmpfs needs root: run the tests with `bash scripts/test.sh` as root"
        );
        SmallDisk(at)
    }

    /// A server whose model cache is a `mib` MiB tmpfs, with `hub` as its Hub.
    async fn app(hub: &FakeHub, mib: u32) -> (TestApp, SmallDisk) {
        let dir = tempfile::tempdir().unwrap();
        let disk = SmallDisk::mount(dir.path().join("small-cache"), mib);
        let mut settings = crate::support::test_settings(Db::Sqlite, dir.path()).await;
        settings.hf_endpoint = hub.endpoint();
        settings.model_cache_dir = Some(disk.0.clone());
        (spawn_with(settings, dir).await, disk)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_larger_than_free_disk_is_refused_at_once() {
    let (repo, _dir) = tiny_repo("test-org/too-big", 5);
    let hub = hub_with(vec![repo]).await;
    let (app, disk) = SmallDisk::app(&hub, 4).await;
    let r = app
        .post("/api/models", download_body("test-org/too-big"))
        .await;
    assert_eq!(r.status, 507, "{}", r.body);
    assert_eq!(r.code(), "INSUFFICIENT_DISK");
    let details = &r.body["error"]["details"];
    assert!(details["required_mb"].as_u64().unwrap() > details["available_mb"].as_u64().unwrap());
    assert!(details["available_mb"].as_u64().unwrap() <= 4);
    assert_eq!(
        app.get("/api/models")
            .await
            .data()
            .as_array()
            .unwrap()
            .len(),
        0,
        "no record"
    );
    app.stop().await;
    drop(disk);
}

/// The disk fills up mid-download (another program took the space): the download stops with a
/// clear error that says what the whole download still needs, and keeps true prefixes; a retry
/// once there is room finishes it. Two shards, so that more than one file is on its way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_mid_download_stops_it_and_a_retry_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    millm_testkit::TinyLlama {
        seed: 6,
        ..millm_testkit::TinyLlama::default()
    }
    .sharded(2)
    .write(dir.path())
    .unwrap();
    let repo = FakeRepo::from_dir("test-org/fills", dir.path()).unwrap();
    let total: u64 = repo.files.values().map(|f| f.bytes.len() as u64).sum();
    // Blob name → (path, bytes): LFS files are named by sha256, plain git files by git sha1.
    let by_sha: BTreeMap<String, (String, Vec<u8>)> = repo
        .files
        .iter()
        .map(|(path, f)| {
            let name = if f.lfs { &f.sha256 } else { &f.git_sha1 };
            (name.clone(), (path.clone(), f.bytes.to_vec()))
        })
        .collect();
    let hub = hub_with(vec![repo.throttled(1 << 20)]).await;
    let (app, disk) = SmallDisk::app(&hub, 16).await;
    let r = app
        .post("/api/models", download_body("test-org/fills"))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.data()["id"].as_i64().unwrap();
    let blobs = cache_of(&app, "test-org/fills").join("blobs");
    let partials = || -> Vec<(String, Vec<u8>)> {
        files_in(&blobs)
            .into_iter()
            .filter_map(|name| {
                let sha = name.strip_suffix(".incomplete")?.to_string();
                Some((sha, std::fs::read(blobs.join(&name)).unwrap()))
            })
            .collect()
    };
    until("the weights begin to arrive", || {
        partials().iter().any(|(_, bytes)| !bytes.is_empty())
    })
    .await;
    // Another program takes every free byte.
    let filler_path = disk.0.join("filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    let block = vec![0u8; 64 << 10];
    while std::io::Write::write_all(&mut filler, &block).is_ok() {}
    drop(filler);

    let m = wait_status(&app, id, "error").await;
    let message = m["error_message"].as_str().unwrap();
    assert!(message.contains("Not enough disk space"), "{m}");
    let partials = partials();
    assert!(!partials.is_empty());
    for (sha, bytes) in &partials {
        let (path, full) = &by_sha[sha];
        assert!(bytes.len() < full.len(), "{path} is not complete");
        assert!(bytes[..] == full[..bytes.len()], "{path}: a true prefix");
    }
    // The figure is what the whole download still needs: every byte not yet on disk.
    let on_disk: u64 = files_in(&blobs)
        .iter()
        .map(|name| std::fs::metadata(blobs.join(name)).unwrap().len())
        .sum();
    let needed = total - on_disk;
    assert!(
        message.contains(&format!("needs {} MB", needed.div_ceil(1 << 20))),
        "{message} (still needed: {needed} bytes)"
    );

    std::fs::remove_file(&filler_path).unwrap();
    let r = app
        .post(&format!("/api/models/{id}/retry"), json!({}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    wait_status(&app, id, "ready").await;
    for (sha, (path, _)) in by_sha
        .iter()
        .filter(|(_, (p, _))| p.ends_with(".safetensors"))
    {
        assert_eq!(&sha256_file(&blobs.join(sha)), sha, "{path}");
    }
    for (sha, bytes) in partials.iter().filter(|(_, b)| !b.is_empty()) {
        let path = &by_sha[sha].0;
        assert!(
            hub.stats()
                .resumed_ranges(path)
                .contains(&(bytes.len() as u64)),
            "the retry resumed {path} after its prefix"
        );
    }
    app.stop().await;
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_gated_download_resumes_only_with_a_token() {
    let (repo, _dir) = tiny_repo("test-org/gated-slow", 12);
    let hub = hub_with(vec![repo.gated().throttled(1 << 20)]).await;
    let app = spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await;
    let body =
        json!({"source": "huggingface", "repo_id": "test-org/gated-slow", "hf_token": GOOD_TOKEN});
    let r = app.post("/api/models", body).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.data()["id"].as_i64().unwrap();
    wait_for(&app, id, "transferring", |m| {
        m["downloaded_bytes"].as_i64().unwrap_or(0) > 1 << 20
    })
    .await;

    // Restart without HF_TOKEN: the token was never stored, so the download waits in error.
    let (settings, dir) = app.stop_keeping_data().await;
    hub.set_repo_throttle("test-org/gated-slow", None);
    let app = spawn_with(settings.clone(), dir).await;
    let m = wait_status(&app, id, "error").await;
    let message = m["error_message"].as_str().unwrap();
    assert!(message.to_lowercase().contains("token"), "{message}");
    // A retry with a token finishes it.
    let r = app
        .post(
            &format!("/api/models/{id}/retry"),
            json!({"hf_token": GOOD_TOKEN}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    wait_status(&app, id, "ready").await;
    app.stop().await;

    // With HF_TOKEN set, an interrupted gated download resumes by itself.
    let (repo2, _dir2) = tiny_repo("test-org/gated-slow-2", 13);
    hub.add_repo(repo2.gated().throttled(1 << 20));
    let mut settings = settings;
    settings.hf_token = Some(millm::config::Secret::new(GOOD_TOKEN));
    let app = spawn_with(settings, tempfile::tempdir().unwrap()).await;
    let r = app
        .post("/api/models", download_body("test-org/gated-slow-2"))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id2 = r.data()["id"].as_i64().unwrap();
    wait_for(&app, id2, "transferring", |m| {
        m["downloaded_bytes"].as_i64().unwrap_or(0) > 1 << 20
    })
    .await;
    let (settings, dir) = app.stop_keeping_data().await;
    hub.set_repo_throttle("test-org/gated-slow-2", None);
    let app = spawn_with(settings, dir).await;
    wait_status(&app, id2, "ready").await;
    app.stop().await;
}

crate::on_both_databases!(
    download_fills_the_python_cache_layout,
    cancel_stops_the_transfer_and_removes_partial_files,
    a_restart_mid_download_resumes_and_finishes,
    delete_keeps_blobs_another_quantization_uses,
);
