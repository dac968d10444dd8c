//! Download figures over loopback from the in-process fake Hub, through the whole pipeline
//! (metadata, headers, parallel ranges, sha256 while receiving, the cache, the registry):
//!
//! 1. a ≥ 1 GiB repo at full speed, next to a plain single-connection GET of the same bytes
//!    written to a file, measured in the same run (target ≥ 0.9×);
//! 2. with every connection capped (50 MB/s), parallel ranges against one connection
//!    (target ≥ 3.5×).
//!
//! Run: `cargo bench --bench download`. Prints figures; it is not a timed test.

use std::io::Write;
use std::time::{Duration, Instant};

use millm::app::App;
use millm::config::Settings;
use millm::domain::RepoId;
use millm::hub::HubClient;
use millm_testkit::{FakeHub, FakeRepo, TinyLlama, WeightDtype};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const CAP: u64 = 50_000_000;

fn mbs(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// One plain GET of the weights' CDN URL over one connection, written to a file.
async fn plain_get(hub: &FakeHub, repo: &str, out: &std::path::Path) -> (u64, Duration) {
    let client = HubClient::new(&hub.endpoint()).unwrap();
    let head = client
        .head(
            &RepoId::parse(repo).unwrap(),
            "main",
            "model.safetensors",
            None,
        )
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let t = Instant::now();
    let mut resp = http.get(head.url).send().await.unwrap();
    let mut file = std::fs::File::create(out).unwrap();
    let mut total = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        file.write_all(&chunk).unwrap();
        total += chunk.len() as u64;
    }
    let d = t.elapsed();
    drop(file);
    std::fs::remove_file(out).unwrap();
    (total, d)
}

struct Server {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_app(hub: &FakeHub, data: &std::path::Path) -> Server {
    let mut settings = Settings::for_data_dir(data);
    settings.port = 0;
    settings.hf_endpoint = hub.endpoint();
    let app = App::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run());
    Server {
        base,
        http: reqwest::Client::new(),
        shutdown,
        handle,
    }
}

/// POST → ready through the API; returns the model's bytes and the time taken.
async fn pipeline(server: &Server, repo: &str) -> (u64, Duration) {
    let t = Instant::now();
    let r: Value = server
        .http
        .post(format!("{}/api/models", server.base))
        .json(&json!({"source": "huggingface", "repo_id": repo}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = r["data"]["id"].as_i64().unwrap_or_else(|| panic!("{r}"));
    loop {
        let m: Value = server
            .http
            .get(format!("{}/api/models/{id}", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match m["data"]["status"].as_str() {
            Some("ready") => break,
            Some("downloading") => tokio::time::sleep(Duration::from_millis(10)).await,
            _ => panic!("download failed: {m}"),
        }
    }
    let d = t.elapsed();
    let m: Value = server
        .http
        .delete(format!("{}/api/models/{id}", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (m["data"]["freed_bytes"].as_u64().unwrap(), d)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        eprintln!("writing the test repos…");
        let big = TinyLlama::with_weight_bytes(1100 << 20, WeightDtype::BF16)
            .write(&dir.path().join("big"))
            .unwrap();
        let mid = TinyLlama::with_weight_bytes(256 << 20, WeightDtype::BF16)
            .write(&dir.path().join("mid"))
            .unwrap();
        let hub = FakeHub::start().await.unwrap();
        hub.add_repo(FakeRepo::from_dir("bench/big", &big.dir).unwrap());
        hub.add_repo(FakeRepo::from_dir("bench/mid", &mid.dir).unwrap());
        std::fs::remove_dir_all(&big.dir).unwrap();
        std::fs::remove_dir_all(&mid.dir).unwrap();
        let server = start_app(&hub, &dir.path().join("data")).await;
        let scratch = dir.path().join("plain.bin");

        println!("download benchmark (fake Hub over loopback, {} cores)", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        println!("1) full speed, {:.2} GiB of weights", big.weight_bytes() as f64 / (1u64 << 30) as f64);
        let mut best_plain = 0f64;
        let mut best_pipe = 0f64;
        for round in 1..=3 {
            let (b, d) = plain_get(&hub, "bench/big", &scratch).await;
            let plain = mbs(b, d);
            let (b2, d2) = pipeline(&server, "bench/big").await;
            let pipe = mbs(b2, d2);
            println!(
                "   round {round}: plain single GET {plain:8.1} MB/s ({:.2} s) | miLLM pipeline {pipe:8.1} MB/s ({:.2} s, {} bytes) | ratio {:.2}",
                d.as_secs_f64(),
                d2.as_secs_f64(),
                b2,
                pipe / plain
            );
            best_plain = best_plain.max(plain);
            best_pipe = best_pipe.max(pipe);
        }
        println!("   best: plain {best_plain:.1} MB/s, pipeline {best_pipe:.1} MB/s, ratio {:.2} (target ≥ 0.90)", best_pipe / best_plain);

        println!("2) every connection capped at {} MB/s, {:.0} MiB of weights", CAP / 1_000_000, mid.weight_bytes() as f64 / (1u64 << 20) as f64);
        hub.set_throttle(Some(CAP));
        let (b, d) = plain_get(&hub, "bench/mid", &scratch).await;
        let single = mbs(b, d);
        let (b2, d2) = pipeline(&server, "bench/mid").await;
        let parallel = mbs(b2, d2);
        println!("   one connection {single:.1} MB/s ({:.2} s) | parallel ranges {parallel:.1} MB/s ({:.2} s) | speed-up {:.2}× (target ≥ 3.5×)", d.as_secs_f64(), d2.as_secs_f64(), parallel / single);
        server.shutdown.cancel();
        let _ = server.handle.await;
    });
}
