//! Memory is really returned (process RSS before a load, after it, and after the unload), and
//! the estimate is honest (RSS after a warm-up generation against `estimated_memory_mb`). In a
//! test binary of its own so no other test's allocations move the figures; the tests take turns.

use std::time::Duration;

use millm::app::App;
use millm::config::Settings;
use millm_testkit::{TinyLlama, WeightDtype};
use serde_json::{json, Value};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// One test at a time: each reads the process's RSS.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// POSTs `body` to `url`: the status and the JSON reply.
async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let resp = http.post(url).json(&body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Loads model `id` on the server at `base` and waits until it is loaded: its `data` then.
async fn load_and_wait(http: &reqwest::Client, base: &str, id: i64) -> Value {
    let (status, reply) = post(http, format!("{base}/api/models/{id}/load"), json!({})).await;
    assert_eq!(status, 202, "{reply}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let m: Value = http
            .get(format!("{base}/api/models/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let m = m["data"].clone();
        if m["status"] == "loaded" {
            return m;
        }
        assert_ne!(m["status"], "error", "{m}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "load did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server on port 0 and a folder of about 256 MiB of bf16 weights (a real tokenizer).
struct Server {
    base: String,
    http: reqwest::Client,
    model_dir: std::path::PathBuf,
    shutdown: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(adjust: impl FnOnce(&mut Settings)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let model = TinyLlama::with_weight_bytes(256 << 20, WeightDtype::BF16)
            .write(&dir.path().join("model"))
            .unwrap();
        let mut settings = Settings::for_data_dir(dir.path().join("data"));
        settings.port = 0;
        adjust(&mut settings);
        let app = App::build(settings).await.unwrap();
        Server {
            base: format!("http://127.0.0.1:{}", app.port()),
            http: reqwest::Client::new(),
            model_dir: model.dir,
            shutdown: app.shutdown_token(),
            handle: tokio::spawn(app.run()),
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        post(&self.http, format!("{}{path}", self.base), body).await
    }

    /// Registers the model folder at `quantization` as `name`: the model's `data`.
    async fn register(&self, quantization: &str, name: &str) -> Value {
        let body = json!({"source": "local", "local_path": self.model_dir,
                          "quantization": quantization, "custom_name": name});
        let (status, reply) = self.post("/api/models", body).await;
        assert_eq!(status, 202, "{reply}");
        reply["data"].clone()
    }

    /// Loads model `id` and waits until it is loaded: its `data` then.
    async fn load(&self, id: i64) -> Value {
        load_and_wait(&self.http, &self.base, id).await
    }

    async fn unload(&self, id: i64) {
        let (status, reply) = self
            .post(&format!("/api/models/{id}/unload"), json!({}))
            .await;
        assert_eq!(status, 200, "{reply}");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.handle.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_returns_the_memory_a_load_took() {
    let _turn = TURN.lock().await;
    let server = Server::start(|_| {}).await;
    let id = server.register("FP16", "fp16").await["id"]
        .as_i64()
        .unwrap();
    for round in 0..2 {
        let before = rss_bytes();
        let loaded = server.load(id).await;
        let footprint = loaded["memory_footprint"].as_u64().unwrap();
        let after_load = rss_bytes();
        server.unload(id).await;
        let after_unload = rss_bytes();
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
    server.stop().await;
}

/// The RSS of process `pid`.
fn rss_of(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// `millm serve` as a process of its own (so no earlier load's freed memory, kept by the
/// allocator, hides what this one takes), on port 0 with a 256-token context; its URL and pid.
async fn serve_process(dir: &std::path::Path) -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_millm"))
        .args([
            "serve",
            "--port",
            "0",
            "--max-context-tokens",
            "256",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .env_clear()
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("millm serve starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the banner in time")
        .unwrap()
        .expect("a banner line");
    let url = first.rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://"), "{first}");
    // Keep reading the log, so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_warm_up_generation_rss_is_within_5_percent_of_the_estimate() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let model = TinyLlama::with_weight_bytes(256 << 20, WeightDtype::BF16)
        .write(&dir.path().join("model"))
        .unwrap();
    let http = reqwest::Client::new();
    for quantization in ["FP16", "Q8", "Q4"] {
        let run = tempfile::tempdir().unwrap();
        let (mut server, base) = serve_process(run.path()).await;
        let pid = server.id().unwrap();
        let body =
            json!({"source": "local", "local_path": model.dir, "quantization": quantization});
        let (status, reply) = post(&http, format!("{base}/api/models"), body).await;
        assert_eq!(status, 202, "{reply}");
        let id = reply["data"]["id"].as_i64().unwrap();
        let estimate = reply["data"]["estimated_memory_mb"].as_u64().unwrap() << 20;
        let before = rss_of(pid);
        load_and_wait(&http, &base, id).await;
        let after_load = rss_of(pid);
        // Warm-up: a generation to the end of the context.
        let body = json!({"model": id.to_string(), "prompt": "Once", "temperature": 1.0,
                          "seed": 1, "max_tokens": 250});
        let (status, answer) = post(&http, format!("{base}/v1/completions"), body).await;
        assert_eq!(status, 200, "{answer}");
        let held = rss_of(pid).saturating_sub(before);
        let off = (held as f64 - estimate as f64) / estimate as f64;
        println!(
            "{quantization}: estimate {:.0} MiB; RSS growth after the load {:.0} MiB, after a warm-up generation of {} tokens {:.0} MiB ({:+.1}% of the estimate)",
            mb(estimate),
            mb(after_load.saturating_sub(before)),
            answer["usage"]["completion_tokens"],
            mb(held),
            off * 100.0
        );
        assert!(
            off.abs() <= 0.05,
            "{quantization}: RSS grew {held} against an estimate of {estimate}"
        );
        server.kill().await.unwrap();
    }
}
