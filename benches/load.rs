//! Load figures on the CPU: a ≥ 1 GiB bf16 checkpoint at FP16, next to a plain sequential read
//! of the same files in the same run (alternated, medians); every quantization's GB/s on all
//! threads and on one (the speed-up from splitting tensors across the cores); estimated vs
//! measured footprint for every test model and quantization; `GET /api/models` latency while
//! a load runs.
//! Run: `cargo bench --bench load`.

use std::io::Read;
use std::time::{Duration, Instant};

use millm::app::App;
use millm::config::Settings;
use millm::domain::Quantization;
use millm::engine::{estimate, inspect_folder, load_blocking, LoadRequest};
use millm_testkit::{TinyLlama, WeightDtype};
use tokio_util::sync::CancellationToken;

fn gb(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

/// Rounds of the FP16 load against the plain read.
const ROUNDS: usize = 5;

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn sequential_read(files: &[std::path::PathBuf]) -> (u64, Duration) {
    let t = Instant::now();
    let mut buf = vec![0u8; 8 << 20];
    let mut total = 0u64;
    for f in files {
        let mut file = std::fs::File::open(f).unwrap();
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    (total, t.elapsed())
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let big = TinyLlama::with_weight_bytes(1 << 30, WeightDtype::BF16)
        .sharded(2)
        .write(&dir.path().join("big"))
        .unwrap();
    let info = inspect_folder(&big.dir).unwrap();
    let bytes: u64 = info
        .weight_files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    println!(
        "checkpoint: {:.2} GiB bf16, {} parameters, {} shards",
        bytes as f64 / (1u64 << 30) as f64,
        info.parameter_count,
        info.weight_files.len()
    );

    // Warm the page cache once so every figure below reads from memory alike.
    sequential_read(&info.weight_files);
    let load = |q: Quantization| {
        let req = LoadRequest::of(&info, q, false);
        let t = Instant::now();
        let model = load_blocking(&req, &CancellationToken::new(), &|_, _| {}).unwrap();
        let took = t.elapsed();
        let footprint = model.footprint_bytes;
        let dtype = model.dtype.clone();
        drop(model);
        millm::engine::runtime::release_freed_memory();
        (took, footprint, dtype)
    };

    // FP16 against the plain read, alternated so both see the same load on the machine; the
    // ratio is taken within each round, then the median.
    let threads = rayon::current_num_threads();
    let mut reads = Vec::new();
    let mut loads = Vec::new();
    let mut ratios = Vec::new();
    let mut held = String::new();
    for _ in 0..ROUNDS {
        let (n, t) = sequential_read(&info.weight_files);
        let (took, _, dtype) = load(Quantization::FP16);
        held = dtype;
        reads.push(gb(n, t));
        loads.push(gb(bytes, took));
        ratios.push(gb(bytes, took) / gb(n, t));
    }
    println!(
        "plain sequential read (warm): {:.2} GB/s; load FP16 (held as {held}) on cpu: {:.2} GB/s of checkpoint = {:.2}× the plain read (medians of {ROUNDS} alternated rounds, {threads} threads; ratios {})",
        median(&mut reads),
        median(&mut loads),
        median(&mut ratios.clone()),
        ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" "),
    );

    // Every quantization on all threads and on one, for the speed-up the work split gives.
    println!("\nload of the checkpoint per quantization, all {threads} threads vs 1:");
    println!(
        "{:<5} {:>6} {:>12} {:>12} {:>9} {:>9} {:>10} {:>10}",
        "quant", "dtype", "GB/s all", "GB/s 1", "speed-up", "per core", "MiB held", "estimate"
    );
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for q in [
        Quantization::FP16,
        Quantization::Q8,
        Quantization::Q4,
        Quantization::Q2,
    ] {
        let (all, footprint, dtype) = load(q);
        let (single, _, _) = one.install(|| load(q));
        let est = estimate(&info.tensors, q, false);
        let speedup = single.as_secs_f64() / all.as_secs_f64();
        println!(
            "{:<5} {dtype:>6} {:>12.3} {:>12.3} {:>8.2}× {:>9.2} {:>10.0} {:>10.0}",
            q.as_str(),
            gb(bytes, all),
            gb(bytes, single),
            speedup,
            speedup / threads as f64,
            footprint as f64 / (1 << 20) as f64,
            est.weights_bytes as f64 / (1 << 20) as f64,
        );
    }

    println!("\nestimated vs measured weights (MiB) for every test model:");
    println!(
        "{:<28} {:>5} {:>10} {:>10} {:>7}",
        "model", "quant", "estimate", "measured", "ratio"
    );
    let specs = [
        ("tiny f32 single", TinyLlama::default()),
        ("tiny bf16 single", TinyLlama::default().bf16()),
        ("tiny f32 sharded", TinyLlama::default().sharded(2)),
        ("tiny bf16 sharded", TinyLlama::default().bf16().sharded(3)),
        (
            "narrow (q4_0 fallback)",
            TinyLlama {
                hidden: 96,
                intermediate: 192,
                ..TinyLlama::default()
            },
        ),
        (
            "1 GiB bf16 sharded",
            TinyLlama::with_weight_bytes(1 << 30, WeightDtype::BF16).sharded(2),
        ),
    ];
    for (i, (name, spec)) in specs.into_iter().enumerate() {
        let folder = if i == 5 {
            big.dir.clone()
        } else {
            spec.write(&dir.path().join(format!("m{i}"))).unwrap().dir
        };
        let info = inspect_folder(&folder).unwrap();
        for q in Quantization::ALL {
            let req = LoadRequest::of(&info, q, false);
            let model = load_blocking(&req, &CancellationToken::new(), &|_, _| {}).unwrap();
            let est = estimate(&info.tensors, q, false).weights_bytes as f64;
            let got = model.footprint_bytes as f64;
            let mib = (1 << 20) as f64;
            println!(
                "{name:<28} {q:>5} {:>10.2} {:>10.2} {:>7.4}",
                est / mib,
                got / mib,
                est / got
            );
        }
    }

    // The API stays responsive while a 1 GiB model loads.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut settings = Settings::for_data_dir(dir.path().join("data"));
        settings.port = 0;
        let app = App::build(settings).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let token = app.shutdown_token();
        let handle = tokio::spawn(app.run());
        let http = reqwest::Client::new();
        let body = serde_json::json!({"source": "local", "local_path": big.dir, "quantization": "Q4"});
        let v: serde_json::Value = http.post(format!("{base}/api/models")).json(&body).send().await.unwrap().json().await.unwrap();
        let id = v["data"]["id"].as_i64().unwrap();
        http.post(format!("{base}/api/models/{id}/load")).send().await.unwrap();
        let mut times = Vec::new();
        loop {
            let t = Instant::now();
            let v: serde_json::Value = http.get(format!("{base}/api/models")).send().await.unwrap().json().await.unwrap();
            times.push(t.elapsed());
            let status = v["data"][0]["status"].as_str().unwrap_or("").to_string();
            if status != "loading" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        times.sort();
        let p = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
        println!(
            "\nGET /api/models during a 1 GiB Q4 load: {} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target < 50 ms)",
            times.len(), p(0.5), p(0.99), times.last().unwrap().as_secs_f64() * 1e3
        );
        token.cancel();
        let _ = handle.await;
    });
}
