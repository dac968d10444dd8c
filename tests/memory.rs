//! Memory is really returned: process RSS before a load, after it, and after the unload. In a
//! test binary of its own so no other test's allocations move the figures.

use std::time::Duration;

use millm::app::App;
use millm::config::Settings;
use millm_testkit::{TinyLlama, WeightDtype};
use serde_json::Value;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

async fn status(http: &reqwest::Client, base: &str, id: i64) -> Value {
    let v: Value = http
        .get(format!("{base}/api/models/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_returns_the_memory_a_load_took() {
    let dir = tempfile::tempdir().unwrap();
    // About 256 MiB of bf16 weights, loaded at FP16 (kept bf16) and at Q8.
    let model = TinyLlama::with_weight_bytes(256 << 20, WeightDtype::BF16)
        .write(&dir.path().join("model"))
        .unwrap();
    let mut settings = Settings::for_data_dir(dir.path().join("data"));
    settings.port = 0;
    let app = App::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run());
    let http = reqwest::Client::new();
    let body =
        serde_json::json!({"source": "local", "local_path": model.dir, "quantization": "FP16"});
    let reply: Value = http
        .post(format!("{base}/api/models"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = reply["data"]["id"].as_i64().unwrap();

    for round in 0..2 {
        let before = rss_bytes();
        http.post(format!("{base}/api/models/{id}/load"))
            .send()
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let loaded = loop {
            let m = status(&http, &base, id).await;
            if m["status"] == "loaded" {
                break m;
            }
            assert_ne!(m["status"], "error", "{m}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "load did not finish"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let footprint = loaded["memory_footprint"].as_u64().unwrap();
        let after_load = rss_bytes();
        let resp = http
            .post(format!("{base}/api/models/{id}/unload"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let after_unload = rss_bytes();
        let mb = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "round {round}: footprint {:.0} MiB; RSS before {:.0} MiB, after load {:.0} MiB, after unload {:.0} MiB",
            mb(footprint), mb(before), mb(after_load), mb(after_unload)
        );
        assert!(
            after_load >= before + footprint * 8 / 10,
            "the load shows in RSS: before {before}, after {after_load}, footprint {footprint}"
        );
        assert!(
            after_unload <= before + footprint / 5,
            "the unload gives the memory back: before {before}, after unload {after_unload}, footprint {footprint}"
        );
    }
    shutdown.cancel();
    let _ = handle.await;
}
