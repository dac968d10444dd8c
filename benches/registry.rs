//! `GET /api/models` at 1,000 and 10,000 rows, idle and while a download is running (targets:
//! p99 < 5 ms at 1,000 rows, < 20 ms at 10,000 rows, in both cases), one page (`limit=50`) at
//! 100,000 rows (target p99 < 2 ms), and at 1,000 rows while the loaded model generates without
//! pause on every core (target p99 < 50 ms): prints p50/p99 latency for each.
//! Run: `cargo bench --bench registry`; `MILLM_BENCH_MODEL_DIR` (a Hugging Face folder, e.g.
//! SmolLM2-135M) generates with that model instead of a random 100 MB one.

use std::time::{Duration, Instant};

use millm::app::App;
use millm::config::Settings;
use millm::domain::{ModelStatus, Quantization, Source};
use millm::store::{NewModel, Store, StoredFile};
use millm_testkit::{FakeHub, FakeRepo, TinyLlama};
use serde_json::{json, Value};

/// Requests timed per figure, after a warm-up.
const REQUESTS: usize = 200;
const WARM_UP: usize = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn fill(url: &str, rows: usize) {
    let store = Store::connect(url).await.unwrap();
    let started = Instant::now();
    for i in 0..rows {
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
        "inserted {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store.close().await;
}

/// GET `url` and its whole body.
async fn get(http: &reqwest::Client, url: &str) -> bytes::Bytes {
    let reply = http.get(url).send().await.expect("the server answers");
    reply.bytes().await.expect("a whole body")
}

/// The `data` of an envelope at `url`.
async fn data(http: &reqwest::Client, url: &str) -> Value {
    let v: Value = serde_json::from_slice(&get(http, url).await).expect("JSON");
    v["data"].clone()
}

/// Times `REQUESTS` list requests, after checking the list has `len` rows.
async fn time_list(http: &reqwest::Client, base: &str, len: usize) -> Vec<Duration> {
    time_query(http, base, "", len).await
}

/// Times `REQUESTS` list requests with `query`, after checking the answer has `len` rows.
async fn time_query(http: &reqwest::Client, base: &str, query: &str, len: usize) -> Vec<Duration> {
    let url = format!("{base}/api/models{query}");
    assert_eq!(data(http, &url).await.as_array().map(Vec::len), Some(len));
    let mut times = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS + WARM_UP {
        let t = Instant::now();
        get(http, &url).await;
        if i >= WARM_UP {
            times.push(t.elapsed());
        }
    }
    times.sort();
    times
}

/// Prints the figures, and how they stand against `target_ms` when the row has a target.
fn report(rows: usize, when: &str, times: &[Duration], target_ms: Option<f64>) {
    let p99 = ms(percentile(times, 0.99));
    let verdict = match target_ms {
        Some(t) if p99 < t => format!("target p99 < {t} ms: met"),
        Some(t) => format!("target p99 < {t} ms: MISSED"),
        None => "no target".to_string(),
    };
    println!(
        "GET /api/models, {rows} rows, {when} ({} requests): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({verdict})",
        times.len(),
        ms(percentile(times, 0.5)),
        p99,
        ms(*times.last().unwrap()),
    );
}

async fn bench(rows: usize, target_ms: f64) {
    let dir = tempfile::tempdir().unwrap();
    let hub = FakeHub::start().await.unwrap();
    let weights = tempfile::tempdir().unwrap();
    TinyLlama::default().write(weights.path()).unwrap();
    // Slow enough that the download runs through every timed request.
    let repo = FakeRepo::from_dir("bench-org/slow", weights.path())
        .unwrap()
        .throttled(4 << 10);
    hub.add_repo(repo);

    let mut settings = Settings::for_data_dir(dir.path());
    settings.port = 0;
    settings.hf_endpoint = hub.endpoint();
    fill(&settings.database_url(), rows).await;

    let (base, token, handle) = serve(settings).await;
    let http = reqwest::Client::new();

    report(
        rows,
        "idle",
        &time_list(&http, &base, rows).await,
        Some(target_ms),
    );

    let body = json!({"source": "huggingface", "repo_id": "bench-org/slow"});
    let started = http.post(format!("{base}/api/models")).json(&body).send();
    let reply: Value = started
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("JSON");
    let id = reply["data"]["id"].as_i64().expect("the download starts");
    let model_url = format!("{base}/api/models/{id}");
    // Wait until bytes flow, so the row carries live figures.
    let deadline = Instant::now() + Duration::from_secs(30);
    while data(&http, &model_url).await["downloaded_bytes"]
        .as_i64()
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "the download never started");
        tokio::task::yield_now().await;
    }
    let during = time_list(&http, &base, rows + 1).await;
    assert_eq!(
        data(&http, &model_url).await["status"],
        "downloading",
        "the download ran through the measurement"
    );
    report(rows, "during a download", &during, Some(target_ms));

    http.post(format!("{base}/api/models/{id}/cancel"))
        .send()
        .await
        .unwrap();
    token.cancel();
    let _ = handle.await;
}

/// Starts the app: its base URL, its shutdown token and its task.
async fn serve(
    settings: Settings,
) -> (
    String,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let app = App::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let token = app.shutdown_token();
    (base, token, tokio::spawn(app.run()))
}

/// One page of 50 at `rows` rows: the first page, a page deep in the list, and a filter.
async fn bench_paged(rows: usize, target_ms: f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(dir.path());
    settings.port = 0;
    fill(&settings.database_url(), rows).await;
    let (base, token, handle) = serve(settings).await;
    let http = reqwest::Client::new();
    // The target is the page a client asks for first; a deep offset and a search are shown for
    // what they cost (SQLite walks the offset, and a substring search scans every row).
    for (query, what, target) in [
        ("?limit=50", "first page (limit=50)", Some(target_ms)),
        (
            "?limit=50&offset=50000",
            "page at offset 50,000 (limit=50)",
            None,
        ),
        (
            "?limit=50&q=model-9999",
            "search q=model-9999 (limit=50)",
            None,
        ),
    ] {
        let expect = if query.contains("q=") { 11 } else { 50 };
        let times = time_query(&http, &base, query, expect).await;
        report(rows, what, &times, target);
    }
    token.cancel();
    let _ = handle.await;
}

/// At `rows` rows while the loaded model generates back to back (streamed completions).
async fn bench_during_generation(rows: usize, target_ms: f64) {
    let dir = tempfile::tempdir().unwrap();
    let folder = match std::env::var_os("MILLM_BENCH_MODEL_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            let path = dir.path().join("model");
            TinyLlama {
                hidden: 512,
                intermediate: 1536,
                layers: 8,
                heads: 8,
                kv_heads: 4,
                ..TinyLlama::default()
            }
            .write(&path)
            .unwrap();
            path
        }
    };
    let mut settings = Settings::for_data_dir(dir.path().join("data"));
    settings.port = 0;
    fill(&settings.database_url(), rows).await;
    let (base, token, handle) = serve(settings).await;
    let http = reqwest::Client::new();
    let body = json!({"source": "local", "local_path": folder, "quantization": "FP32", "custom_name": "bench-gen"});
    let reply: Value = http
        .post(format!("{base}/api/models"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = reply["data"]["id"].as_i64().expect("registered");
    http.post(format!("{base}/api/models/{id}/load"))
        .send()
        .await
        .unwrap();
    let model_url = format!("{base}/api/models/{id}");
    let deadline = Instant::now() + Duration::from_secs(300);
    while data(&http, &model_url).await["status"] != "loaded" {
        assert!(Instant::now() < deadline, "the model did not load");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report(
        rows + 1,
        "idle, a model loaded",
        &time_list(&http, &base, rows + 1).await,
        Some(target_ms),
    );

    // Generations back to back until the timing is done; each streams to its end.
    let stop = tokio_util::sync::CancellationToken::new();
    let generating = {
        let (http, url, stop) = (http.clone(), format!("{base}/v1/completions"), stop.clone());
        tokio::spawn(async move {
            let mut tokens = 0u64;
            let started = Instant::now();
            while !stop.is_cancelled() {
                let body = json!({"model": "bench-gen", "prompt": "Once upon a time", "max_tokens": 64,
                                  "stream": true, "stream_options": {"include_usage": true}});
                let text = http
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let usage = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .find_map(|v| v["usage"]["completion_tokens"].as_u64());
                tokens += usage.unwrap_or(0);
            }
            (tokens, started.elapsed())
        })
    };
    // Wait until a generation runs.
    let metrics_url = format!("{base}/metrics");
    while !get(&http, &metrics_url)
        .await
        .windows(b"millm_time_to_first_token_seconds_count".len())
        .any(|w| w == b"millm_time_to_first_token_seconds_count")
    {
        tokio::task::yield_now().await;
    }
    let during = time_list(&http, &base, rows + 1).await;
    stop.cancel();
    let (tokens, took) = generating.await.unwrap();
    report(rows + 1, "during generation", &during, Some(target_ms));
    println!(
        "  (meanwhile the model generated {tokens} tokens in {:.1} s: {:.1} tokens/s)",
        took.as_secs_f64(),
        tokens as f64 / took.as_secs_f64()
    );
    token.cancel();
    let _ = handle.await;
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "generation") {
        bench_during_generation(1_000, 50.0).await;
        return;
    }
    bench(1_000, 5.0).await;
    bench(10_000, 20.0).await;
    bench_paged(100_000, 2.0).await;
    bench_during_generation(1_000, 50.0).await;
}
