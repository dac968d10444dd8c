//! Writes a random Llama checkpoint to try miLLM without the Hub:
//! `cargo run --example write_test_model -- /tmp/tiny-llama [bf16] [SHARDS] [--gib N]`, then
//! register it with `{"source": "local", "local_path": "/tmp/tiny-llama"}`. `--gib N` writes at
//! least N GiB of weights (benchmarks, the GPU check) instead of the tiny default.

use millm_testkit::{TinyLlama, WeightDtype};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: write_test_model DIR [bf16] [SHARDS]");
        std::process::exit(2);
    };
    let args: Vec<String> = args.collect();
    let bf16 = args.iter().any(|a| a == "bf16");
    let gib: Option<f64> = args
        .iter()
        .position(|a| a == "--gib")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    let mut spec = match gib {
        Some(g) => {
            let dtype = if bf16 {
                WeightDtype::BF16
            } else {
                WeightDtype::F32
            };
            TinyLlama::with_weight_bytes((g * (1u64 << 30) as f64) as u64, dtype)
        }
        None if bf16 => TinyLlama::default().bf16(),
        None => TinyLlama::default(),
    };
    let mut skip_next = false;
    for arg in &args {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        if arg == "--gib" {
            skip_next = true;
        } else if let Ok(n) = arg.parse() {
            spec = spec.sharded(n);
        }
    }
    match spec.write(std::path::Path::new(&dir)) {
        Ok(model) => println!("wrote {} parameters to {dir}", model.parameter_count),
        Err(e) => {
            eprintln!("cannot write {dir}: {e}");
            std::process::exit(1);
        }
    }
}
