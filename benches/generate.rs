//! Generation speed on this machine's CPU: prefill and decode tokens/s and time to the first
//! token for SmolLM2-135M-Instruct at FP32, FP16, Q8, Q4 and Q2, through the same engine code
//! the server runs (load, text side, generation loop); then FP16's dense weights held as bf16,
//! f16 and f32, to check the form the loader picks for a 16-bit checkpoint on the CPU.
//!
//! Last, in the same run, llama.cpp's `llama-bench` with the same threads on the GGUF the model
//! came from, requantized to the formats we hold (Q8_0; Q4_0, since the 576-wide rows do not fit
//! Q4_K's blocks), from an empty context and after as many tokens as our prompt has, and our
//! decode speed (which runs after the prompt) as a ratio of its at the same depth (target: at
//! least 0.8× at Q8 and Q4).
//! `scripts/llama-cpp-bench.sh` builds llama.cpp from the sources in the llama-cpp-python source
//! package on PyPI, under the build folder (the first run takes minutes);
//! `MILLM_BENCH_LLAMA_CPP=0` skips it.
//!
//! Run: `cargo bench --bench generate`. The model folder is `MILLM_BENCH_MODEL_DIR`, else it is
//! made with `tests/fixtures/smollm2_from_gguf.py` by the Python of `MILLM_TEST_PYTHON` (the test
//! venv of `scripts/test.sh`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::DType;
use millm::domain::Quantization;
use millm::engine::infer::{ChatMessage, Sampling, TextModel};
use millm::engine::{inspect_folder, load_blocking, LoadRequest, LoadedModel, Weight};
use tokio_util::sync::CancellationToken;

const PROMPT: &str = "The history of the printing press begins in the fifteenth century, when \
    Johannes Gutenberg combined movable metal type, oil-based ink and a wooden press adapted \
    from those used for wine. Within a few decades printing spread across Europe, and books, \
    pamphlets and newspapers became cheap enough for many people to own. Explain why this \
    mattered for science and education.";
const DECODE_TOKENS: usize = 64;
const ROUNDS: usize = 5;

fn model_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("MILLM_BENCH_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let dir = std::env::temp_dir().join("millm-bench-smollm2");
    if dir.join("tokenizer_config.json").is_file() {
        return dir;
    }
    let python = std::env::var("MILLM_TEST_PYTHON").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{target}/python-hub-client/bin/python")
    });
    let status = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/smollm2_from_gguf.py"
        ))
        .arg(&dir)
        .status()
        .expect("python runs (set MILLM_TEST_PYTHON to the test venv's python)");
    assert!(status.success(), "the fixture script failed");
    dir
}

/// The bench's chat prompt, encoded.
fn chat_prompt(text: &TextModel) -> Vec<u32> {
    text.encode_chat(&[ChatMessage {
        role: "user".into(),
        content: PROMPT.into(),
    }])
    .unwrap()
}

/// The chat prompt's tokens.
fn prompt_tokens(loaded: &mut LoadedModel, dir: &Path) -> usize {
    chat_prompt(&TextModel::build(loaded, dir, 4096).unwrap()).len()
}

/// Best-of-`ROUNDS` prefill tokens/s, decode tokens/s and time to the first token (s).
fn measure(loaded: &mut LoadedModel, dir: &Path) -> (f64, f64, f64) {
    let text = TextModel::build(loaded, dir, 4096).unwrap();
    let prompt = chat_prompt(&text);
    let (mut best_prefill, mut best_decode, mut best_ttft) = (0.0f64, 0.0f64, f64::MAX);
    for _ in 0..ROUNDS {
        // Prefill alone: the prompt and one sampled token.
        let sampling = Sampling {
            max_tokens: 1,
            temperature: 0.0,
            top_p: 1.0,
            seed: Some(1),
            stop: vec![],
        };
        let t = Instant::now();
        text.generate(&prompt, &sampling, &|| false, &mut |_| true)
            .unwrap();
        let ttft = t.elapsed().as_secs_f64();
        // Then the whole answer; decode speed is what the tokens after the first cost.
        let sampling = Sampling {
            max_tokens: DECODE_TOKENS,
            ..sampling
        };
        let t = Instant::now();
        let done = text
            .generate(&prompt, &sampling, &|| false, &mut |_| true)
            .unwrap();
        let total = t.elapsed().as_secs_f64();
        let decode = (done.completion_tokens.saturating_sub(1)) as f64 / (total - ttft).max(1e-9);
        best_prefill = best_prefill.max(prompt.len() as f64 / ttft);
        best_decode = best_decode.max(decode);
        best_ttft = best_ttft.min(ttft);
    }
    (best_prefill, best_decode, best_ttft)
}

/// Prints one row; returns its decode tokens/s.
fn row(label: &str, loaded: &mut LoadedModel, dir: &Path) -> f64 {
    let (prefill, decode, ttft) = measure(loaded, dir);
    println!(
        "{label:<12} {:>12.1} {:>12.1} {:>10.1} {:>10}",
        prefill,
        decode,
        ttft * 1e3,
        loaded.footprint_bytes >> 20
    );
    decode
}

fn python() -> String {
    std::env::var("MILLM_TEST_PYTHON").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{target}/python-hub-client/bin/python")
    })
}

/// One row of llama.cpp's figures: a format at a depth (tokens already in the context).
struct Theirs {
    format: String,
    depth: u64,
    prefill: f64,
    decode: f64,
}

/// llama.cpp's prefill and decode tokens/s for `Q8_0` and `Q4_0`, from an empty context and
/// after `depth` tokens, from `llama-bench`'s JSON lines.
fn llama_cpp(threads: usize, depth: usize) -> Option<Vec<Theirs>> {
    let out = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/llama-cpp-bench.sh"
        ))
        .arg(python())
        .arg(threads.to_string())
        .arg("") // the script's default build folder
        .arg(depth.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("llama-cpp-bench.sh failed; no comparison");
        return None;
    }
    let mut rows: Vec<Theirs> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let file = v["model_filename"].as_str().unwrap_or_default();
        let format = if file.contains("Q8_0") {
            "Q8_0"
        } else {
            "Q4_0"
        };
        let depth = v["n_depth"].as_u64().unwrap_or(0);
        // The best repetition, as ours is the best round: `samples_ts` holds each one.
        let ts = v["samples_ts"]
            .as_array()
            .and_then(|xs| xs.iter().filter_map(|x| x.as_f64()).reduce(f64::max))
            .or_else(|| v["avg_ts"].as_f64())
            .unwrap_or(0.0);
        let i = match rows
            .iter()
            .position(|r| r.format == format && r.depth == depth)
        {
            Some(i) => i,
            None => {
                rows.push(Theirs {
                    format: format.to_string(),
                    depth,
                    prefill: 0.0,
                    decode: 0.0,
                });
                rows.len() - 1
            }
        };
        if v["n_prompt"].as_u64().unwrap_or(0) > 0 {
            rows[i].prefill = ts;
        } else {
            rows[i].decode = ts;
        }
    }
    Some(rows)
}

fn main() {
    millm::engine::device::pin_cpu_threads();
    let dir = model_dir();
    let info = inspect_folder(&dir).expect("a model folder");
    let threads = rayon::current_num_threads();
    println!("SmolLM2-135M-Instruct on the CPU, {threads} threads; a chat prompt, then up to {DECODE_TOKENS} tokens, best of {ROUNDS}");
    println!(
        "{:<12} {:>12} {:>12} {:>10} {:>10}",
        "quant", "prefill t/s", "decode t/s", "TTFT ms", "weights MB"
    );
    let load = |q: Quantization| {
        let request = LoadRequest::of(&info, q, false);
        load_blocking(&request, &CancellationToken::new(), &|_, _| {}).unwrap()
    };
    // `MILLM_BENCH_QUANTS=Q8,Q4` measures only those (and skips the 16-bit forms).
    let only = std::env::var("MILLM_BENCH_QUANTS").ok();
    let wanted = |q: Quantization| {
        only.as_deref().is_none_or(|list| {
            list.split(',')
                .any(|s| s.trim().eq_ignore_ascii_case(q.as_str()))
        })
    };
    let mut ours = Vec::new();
    let mut depth = 0;
    for q in Quantization::ALL.into_iter().filter(|&q| wanted(q)) {
        let mut loaded = load(q);
        if depth == 0 {
            depth = prompt_tokens(&mut loaded, &dir);
        }
        let decode = row(
            &format!("{} {}", q.as_str(), loaded.dtype),
            &mut loaded,
            &dir,
        );
        ours.push((loaded.dtype.clone(), decode));
    }

    // The forms FP16 could hold a 16-bit checkpoint's dense weights in on the CPU, side by
    // side: the loader's choice (`half_format`) should be the fastest of the 16-bit ones.
    let forms: &[DType] = if only.is_some() {
        &[]
    } else {
        &[DType::BF16, DType::F16, DType::F32]
    };
    if !forms.is_empty() {
        println!("\nFP16 of this checkpoint with its dense weights held as:");
    }
    for &dtype in forms {
        let mut loaded = load(Quantization::FP16);
        for w in loaded.weights.values_mut() {
            if let Weight::Dense(t) = w {
                if t.dtype().is_float() {
                    *t = t.to_dtype(dtype).unwrap();
                }
            }
        }
        loaded.footprint_bytes = loaded.weights.values().map(Weight::bytes).sum();
        row(&format!("FP16 as {}", dtype.as_str()), &mut loaded, &dir);
    }

    if std::env::var("MILLM_BENCH_LLAMA_CPP").as_deref() == Ok("0") {
        return;
    }
    let Some(theirs) = llama_cpp(threads, depth) else {
        return;
    };
    // Our decode runs after the chat prompt, so the like-for-like row is llama.cpp's decode with
    // as many tokens already in its context; the empty-context row is llama-bench's default.
    println!(
        "\nllama.cpp llama-bench, {threads} threads (pp64 / tg64, best of 3), from an empty context and \
         after {depth} tokens (our prompt), against our decode after the prompt:"
    );
    println!(
        "{:<8} {:>6} {:>12} {:>12} {:>14} {:>8}",
        "format", "depth", "prefill t/s", "decode t/s", "our decode t/s", "ratio"
    );
    for r in theirs {
        let mine = ours
            .iter()
            .find(|(dtype, _)| dtype.eq_ignore_ascii_case(&r.format))
            .map_or(0.0, |(_, d)| *d);
        let ratio = mine / r.decode.max(1e-9);
        let verdict = if r.depth as usize != depth {
            String::new()
        } else if ratio >= 0.8 {
            " (target 0.8×: met)".to_string()
        } else {
            " (target 0.8×: MISSED)".to_string()
        };
        println!(
            "{:<8} {:>6} {:>12.1} {:>12.1} {:>14.1} {:>7.2}×{verdict}",
            r.format, r.depth, r.prefill, r.decode, mine, ratio
        );
    }
}
