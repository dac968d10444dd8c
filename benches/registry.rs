//! `GET /api/models` with 10,000 rows: prints p50/p99 latency (target p99 < 20 ms).
//! Run: `cargo bench --bench registry`.

use std::time::{Duration, Instant};

use millm::app::App;
use millm::config::Settings;
use millm::domain::{ModelStatus, Quantization, Source};
use millm::store::{NewModel, Store, StoredFile};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(dir.path());
    settings.port = 0;
    let url = settings.database_url();
    let store = Store::connect(&url).await.unwrap();
    let started = Instant::now();
    for i in 0..10_000 {
        store
            .insert_model(NewModel {
                name: format!("model-{i}"),
                source: Source::Huggingface,
                repo_id: Some(format!("org/model-{i}")),
                revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
                requested_revision: Some("main".into()),
                local_path: None,
                params: Some("135M".into()),
                architecture: Some("LlamaForCausalLM".into()),
                quantization: Quantization::Q4,
                disk_size_mb: Some(270),
                estimated_memory_mb: Some(120),
                status: ModelStatus::Ready,
                cache_path: Some(format!("/data/hub/models--org--model-{i}/snapshots/abc")),
                config_json: Some(
                    r#"{"architectures":["LlamaForCausalLM"],"hidden_size":576}"#.into(),
                ),
                files: vec![StoredFile {
                    path: "model.safetensors".into(),
                    size: 269_060_552,
                }],
                parameter_count: Some(134_515_008),
                trust_remote_code: false,
            })
            .await
            .unwrap();
    }
    println!(
        "inserted 10,000 rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store.close().await;

    let app = App::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let token = app.shutdown_token();
    let handle = tokio::spawn(app.run());
    let http = reqwest::Client::new();
    let mut times = Vec::new();
    for i in 0..220 {
        let t = Instant::now();
        let resp = http.get(format!("{base}/api/models")).send().await.unwrap();
        let body = resp.bytes().await.unwrap();
        if i >= 20 {
            times.push(t.elapsed());
        }
        assert!(body.len() > 1_000_000);
    }
    times.sort();
    println!(
        "GET /api/models, 10,000 rows ({} requests): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < 20 ms)",
        times.len(),
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3
    );
    token.cancel();
    let _ = handle.await;
}
