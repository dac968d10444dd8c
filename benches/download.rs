//! Download figures over loopback from a fake Hub, through the whole pipeline (metadata,
//! headers, parallel ranges, in-order writing, sha256 while receiving, the cache, the registry):
//!
//! 1. a ≥ 1 GiB repo at full speed, next to a plain single-connection GET of the same bytes
//!    written to a file, measured in the same rounds (target ≥ 0.9×). The fake Hub runs in a
//!    process of its own, as the real one is on another machine, and the CPU each side uses is
//!    printed: on a small machine the download is CPU-bound, and the figures show by how much.
//!    A third column is the naive way to check a download — the same plain GET, hashing each
//!    piece before writing it — for comparison.
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
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const CAP: u64 = 50_000_000;

/// CPU time (user + system) of this whole process so far: the fake Hub and miLLM together.
fn cpu_time() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn mbs(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// One plain GET of the weights' CDN URL over one connection, written to a file (and, with
/// `hash`, each piece hashed before it is written).
async fn plain_get(
    endpoint: &str,
    repo: &str,
    out: &std::path::Path,
    hash: bool,
) -> (u64, Duration) {
    let client = HubClient::new(endpoint).unwrap();
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
    let mut sha = Sha256::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        if hash {
            sha.update(&chunk);
        }
        file.write_all(&chunk).unwrap();
        total += chunk.len() as u64;
    }
    std::hint::black_box(sha.finalize());
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

async fn start_app(endpoint: &str, data: &std::path::Path) -> Server {
    let mut settings = Settings::for_data_dir(data);
    settings.port = 0;
    settings.hf_endpoint = endpoint.to_string();
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

/// The JSON answer to a request.
async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

/// POST → ready through the API; returns the model's bytes and the time taken.
async fn pipeline(server: &Server, repo: &str) -> (u64, Duration) {
    let (http, base) = (&server.http, &server.base);
    let t = Instant::now();
    let body = json!({"source": "huggingface", "repo_id": repo});
    let r = json_of(http.post(format!("{base}/api/models")).json(&body)).await;
    let id = r["data"]["id"].as_i64().unwrap_or_else(|| panic!("{r}"));
    loop {
        let m = json_of(http.get(format!("{base}/api/models/{id}"))).await;
        match m["data"]["status"].as_str() {
            Some("ready") => break,
            Some("downloading") => tokio::time::sleep(Duration::from_millis(10)).await,
            _ => panic!("download failed: {m}"),
        }
    }
    let d = t.elapsed();
    let m = json_of(http.delete(format!("{base}/api/models/{id}"))).await;
    (m["data"]["freed_bytes"].as_u64().unwrap(), d)
}

/// CPU seconds (user + system) another process has used, from `/proc/PID/stat`.
fn child_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    match (f.get(10), f.get(11)) {
        (Some(u), Some(s)) => Duration::from_secs_f64((u + s) as f64 / ticks),
        _ => Duration::ZERO,
    }
}

/// The fake Hub in a process of its own, as the real Hub is on another machine: its CPU is
/// reported apart from miLLM's. It serves `DIR/*` as `bench/*` until its stdin closes.
fn hub_child(dir: &std::path::Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let hub = FakeHub::start().await.unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().to_string();
            hub.add_repo(FakeRepo::from_dir(&format!("bench/{name}"), &entry.path()).unwrap());
        }
        println!("LISTENING {}", hub.endpoint());
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await;
    });
}

/// sha256 on one core, from memory: the least CPU any checked download must spend per byte.
fn sha256_alone() -> f64 {
    let data = vec![0x5au8; 256 << 20];
    let t = Instant::now();
    let mut sha = Sha256::new();
    for piece in data.chunks(256 << 10) {
        sha.update(piece);
    }
    std::hint::black_box(sha.finalize());
    mbs(data.len() as u64, t.elapsed())
}

/// Runs `f`, returning its result and the cores it used here and in the Hub's process.
async fn measured<F: std::future::Future<Output = (u64, Duration)>>(
    hub_pid: u32,
    f: F,
) -> (f64, Duration, f64, f64) {
    let (c, h) = (cpu_time(), child_cpu(hub_pid));
    let (bytes, d) = f.await;
    let secs = d.as_secs_f64();
    let here = (cpu_time() - c).as_secs_f64() / secs;
    let hub = (child_cpu(hub_pid) - h).as_secs_f64() / secs;
    (mbs(bytes, d), d, here, hub)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--hub-child") {
        hub_child(std::path::Path::new(&args[i + 1]));
        return;
    }
    let rounds: u32 = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        eprintln!("writing the test repos…");
        let repos = dir.path().join("repos");
        let big = TinyLlama::with_weight_bytes(1100 << 20, WeightDtype::BF16)
            .write(&repos.join("big"))
            .unwrap();
        let mid = TinyLlama::with_weight_bytes(256 << 20, WeightDtype::BF16)
            .write(&dir.path().join("mid"))
            .unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--hub-child")
            .arg(&repos)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let endpoint = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("the Hub process said {line:?}"))
            .to_string();
        std::fs::remove_dir_all(&repos).unwrap();
        let hub_pid = child.id();
        let server = start_app(&endpoint, &dir.path().join("data")).await;
        let scratch = dir.path().join("plain.bin");

        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        println!("download benchmark (fake Hub over loopback, {cores} cores)");
        println!(
            "1) full speed, {:.2} GiB of weights, the fake Hub in a process of its own",
            big.weight_bytes() as f64 / (1u64 << 30) as f64
        );
        let (mut best_plain, mut best_hashed, mut best_pipe) = (0f64, 0f64, 0f64);
        let mut cost = (0f64, 0f64, 0f64);
        for round in 1..=rounds {
            let (plain, _, c_plain, h_plain) =
                measured(hub_pid, plain_get(&endpoint, "bench/big", &scratch, false)).await;
            let (hashed, _, _, _) =
                measured(hub_pid, plain_get(&endpoint, "bench/big", &scratch, true)).await;
            let (pipe, d, c_pipe, h_pipe) = measured(hub_pid, pipeline(&server, "bench/big")).await;
            println!(
                "   round {round}: plain GET {plain:6.1} MB/s (cores: client {c_plain:.2}, Hub {h_plain:.2}) | plain GET + sha256 {hashed:6.1} MB/s | miLLM {pipe:6.1} MB/s in {:.2} s (cores: miLLM {c_pipe:.2}, Hub {h_pipe:.2}) | ratio {:.2}",
                d.as_secs_f64(),
                pipe / plain
            );
            if pipe > best_pipe {
                // CPU seconds per GB of the best pipeline round, and of its plain GET.
                cost = (c_plain / plain * 1e3, c_pipe / pipe * 1e3, h_pipe / pipe * 1e3);
            }
            best_plain = best_plain.max(plain);
            best_hashed = best_hashed.max(hashed);
            best_pipe = best_pipe.max(pipe);
        }
        println!(
            "   best: plain GET {best_plain:.1} MB/s, plain GET + sha256 {best_hashed:.1} MB/s, miLLM {best_pipe:.1} MB/s; ratio {:.2} (target ≥ 0.90)",
            best_pipe / best_plain
        );
        let sha = 1e3 / sha256_alone();
        println!(
            "   CPU per GB: plain GET {:.2} core-s, sha256 alone {sha:.2} core-s ({:.0} MB/s on one core), miLLM {:.2} core-s, the Hub {:.2} core-s",
            cost.0,
            1e3 / sha,
            cost.1,
            cost.2
        );
        let floor = cost.0 + sha;
        let bound = cores as f64 / (floor + cost.2) * 1e3;
        println!(
            "   a checked download needs at least plain GET + sha256 = {floor:.2} core-s per GB: with the Hub's share, {cores} cores allow at most {bound:.0} MB/s here, {:.2} of the best plain GET",
            bound / best_plain
        );
        drop(child.stdin.take());
        let _ = child.wait();

        println!(
            "2) every connection capped at {} MB/s, {:.0} MiB of weights",
            CAP / 1_000_000,
            mid.weight_bytes() as f64 / (1u64 << 20) as f64
        );
        let hub = FakeHub::start().await.unwrap();
        hub.add_repo(FakeRepo::from_dir("bench/mid", &mid.dir).unwrap());
        std::fs::remove_dir_all(&mid.dir).unwrap();
        let server2 = start_app(&hub.endpoint(), &dir.path().join("data2")).await;
        hub.set_throttle(Some(CAP));
        let (b, d) = plain_get(&hub.endpoint(), "bench/mid", &scratch, false).await;
        let single = mbs(b, d);
        let (b2, d2) = pipeline(&server2, "bench/mid").await;
        let parallel = mbs(b2, d2);
        println!(
            "   one connection {single:.1} MB/s ({:.2} s) | parallel ranges {parallel:.1} MB/s ({:.2} s) | speed-up {:.2}× (target ≥ 3.5×)",
            d.as_secs_f64(),
            d2.as_secs_f64(),
            parallel / single
        );
        for s in [server, server2] {
            s.shutdown.cancel();
            let _ = s.handle.await;
        }
    });
}
