//! The forward pass against an independent reference: a numpy implementation of the Llama
//! family (`tests/reference/llama_forward.py`, float64) on tiny real checkpoints — a Llama, a
//! Qwen2 (q/k/v biases) and a Qwen3 (q/k norms, explicit head width, tied embeddings) — with
//! random weights and random norms.

use millm::domain::Quantization;
use millm::engine::infer::{Llama, LlamaConfig};
use millm::engine::{inspect_folder, load_blocking, LoadRequest, LoadedModel, Weight};
use millm_testkit::{Arch, TinyLlama};
use tokio_util::sync::CancellationToken;

const TOKENS: [u32; 9] = [1, 17, 250, 3, 99, 42, 7, 300, 511];

fn python() -> String {
    std::env::var("MILLM_TEST_PYTHON").expect(
        "MILLM_TEST_PYTHON is not set: run the tests with `bash scripts/test.sh`, which installs numpy",
    )
}

/// The reference's logits of every position.
fn reference(dir: &std::path::Path) -> Vec<Vec<f64>> {
    serde_json::from_slice(&run_reference(dir, &[])).expect("JSON logits")
}

/// The reference's embedding: the mean of the last hidden states.
fn reference_embedding(dir: &std::path::Path) -> Vec<f64> {
    serde_json::from_slice(&run_reference(dir, &["--embed"])).expect("JSON embedding")
}

fn run_reference(dir: &std::path::Path, extra: &[&str]) -> Vec<u8> {
    let ids: Vec<String> = TOKENS.iter().map(u32::to_string).collect();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/llama_forward.py"
    );
    let out = std::process::Command::new(python())
        .arg(script)
        .arg(dir)
        .arg(ids.join(","))
        .args(extra)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "the reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The weights of `dir` loaded at `q` as the server loads them, on the CPU.
fn load_weights(dir: &std::path::Path, q: Quantization) -> millm::engine::LoadedModel {
    let info = inspect_folder(dir).unwrap();
    let request = LoadRequest::of(&info, q, false);
    load_blocking(&request, &CancellationToken::new(), &|_, _| {}).unwrap()
}

/// The model of `dir` loaded at `q` as the server loads it, on the CPU.
fn load(dir: &std::path::Path, q: Quantization) -> Llama {
    let mut loaded = load_weights(dir, q);
    let cfg =
        LlamaConfig::parse(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    Llama::new(&mut loaded, &cfg, 64).unwrap()
}

/// Our logits of every position, in one prefill.
fn ours(model: &Llama) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache();
    let hidden = model.hidden(&TOKENS, &mut cache).unwrap();
    model.logits(&hidden).unwrap().to_vec2().unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn write(arch: Arch, seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    TinyLlama {
        seed,
        ..TinyLlama::default()
    }
    .write_as(dir.path(), arch)
    .unwrap();
    dir
}

#[test]
fn fp32_logits_match_the_numpy_reference_within_1e_4() {
    for (arch, seed) in [(Arch::Llama, 61), (Arch::Qwen2, 62), (Arch::Qwen3, 63)] {
        let dir = write(arch, seed);
        let expected = reference(dir.path());
        let got = ours(&load(dir.path(), Quantization::FP32));
        assert_eq!(got.len(), TOKENS.len());
        let worst = got
            .iter()
            .flatten()
            .zip(expected.iter().flatten())
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        let scale = expected
            .iter()
            .flatten()
            .map(|v| v.abs())
            .fold(0.0, f64::max);
        println!("{arch:?}: max |ours − reference| = {worst:.2e} (largest logit {scale:.3})");
        assert!(worst < 1e-4, "{arch:?}: {worst}");
    }
}

/// The largest |a − b| between our logits and the reference's.
fn worst_gap(got: &[Vec<f32>], expected: &[Vec<f64>]) -> f64 {
    got.iter()
        .flatten()
        .zip(expected.iter().flatten())
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max)
}

#[test]
fn fused_projections_hold_the_same_bytes_and_give_the_same_logits() {
    let config = |dir: &std::path::Path| {
        LlamaConfig::parse(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
    };
    let bytes = |l: &LoadedModel| l.weights.values().map(Weight::bytes).sum::<u64>();
    // A Qwen2, so the q/k/v biases are fused too.
    let dir = write(Arch::Qwen2, 71);
    let cfg = config(dir.path());
    for q in [Quantization::FP32, Quantization::Q8] {
        let mut loaded = load_weights(dir.path(), q);
        let (held, tensors) = (bytes(&loaded), loaded.weights.len());
        let first = Llama::new(&mut loaded, &cfg, 64).unwrap();
        assert_eq!(
            bytes(&loaded),
            held,
            "{q}: the fused weights hold the same bytes"
        );
        // Per layer, q/k/v and their biases become one weight and one bias, gate/up one weight.
        assert_eq!(
            loaded.weights.len(),
            tensors - cfg.num_hidden_layers * 5,
            "{q}"
        );
        assert!(loaded
            .weights
            .contains_key("model.layers.0.self_attn.q+k+v_proj.weight"));
        assert!(!loaded
            .weights
            .contains_key("model.layers.0.self_attn.q_proj.weight"));
        // A second build finds them fused.
        let second = Llama::new(&mut loaded, &cfg, 64).unwrap();
        assert_eq!(ours(&first), ours(&second), "{q}");
    }
    // Rows that are not a multiple of 16 (6 heads of 12): each projection stays its own layer,
    // and the logits still match the reference.
    let dir = tempfile::tempdir().unwrap();
    TinyLlama {
        hidden: 72,
        intermediate: 120,
        heads: 6,
        kv_heads: 2,
        seed: 73,
        ..TinyLlama::default()
    }
    .write_as(dir.path(), Arch::Qwen2)
    .unwrap();
    let mut loaded = load_weights(dir.path(), Quantization::FP32);
    let model = Llama::new(&mut loaded, &config(dir.path()), 64).unwrap();
    assert!(loaded
        .weights
        .contains_key("model.layers.0.self_attn.q_proj.weight"));
    let worst = worst_gap(&ours(&model), &reference(dir.path()));
    println!("unfused Qwen2: max |ours − reference| = {worst:.2e}");
    assert!(worst < 1e-4, "{worst}");
}

#[test]
fn quantized_logits_stay_close_to_fp32() {
    // The least cosine, over every position, between each quantization's logits and FP32's,
    // as measured on these checkpoints with a margin (the figures print with --nocapture).
    let floors = [
        (Quantization::FP16, 0.9999),
        (Quantization::Q8, 0.999),
        (Quantization::Q4, 0.97),
        (Quantization::Q2, 0.7),
    ];
    for (arch, seed) in [(Arch::Llama, 71), (Arch::Qwen3, 73)] {
        let dir = write(arch, seed);
        let full = ours(&load(dir.path(), Quantization::FP32));
        for (q, floor) in floors {
            let got = ours(&load(dir.path(), q));
            let least = got
                .iter()
                .zip(&full)
                .map(|(a, b)| cosine(a, b))
                .fold(1.0, f64::min);
            println!("{arch:?} {q}: least cosine to FP32 = {least:.6}");
            assert!(least >= floor, "{arch:?} {q}: {least} < {floor}");
        }
    }
}

#[test]
fn decoding_with_the_kv_cache_gives_the_prefill_logits_and_greedy_is_deterministic() {
    let dir = write(Arch::Qwen2, 81);
    for q in [Quantization::FP32, Quantization::Q8] {
        let model = load(dir.path(), q);
        let full = ours(&model);
        // The first three tokens at once, then one at a time.
        let mut cache = model.new_cache();
        let mut rows = Vec::new();
        let h = model.hidden(&TOKENS[..3], &mut cache).unwrap();
        rows.extend(model.logits(&h).unwrap().to_vec2::<f32>().unwrap());
        for t in &TOKENS[3..] {
            let h = model.hidden(&[*t], &mut cache).unwrap();
            rows.extend(model.logits(&h).unwrap().to_vec2::<f32>().unwrap());
        }
        assert_eq!(cache.len, TOKENS.len());
        let worst = rows
            .iter()
            .flatten()
            .zip(full.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{q}: cached decode differs by {worst}");

        let greedy = |model: &Llama| -> Vec<u32> {
            let mut cache = model.new_cache();
            let mut next = millm::engine::infer::llama::argmax(
                &model.forward_last(&TOKENS, &mut cache).unwrap(),
            )
            .unwrap();
            let mut out = vec![next];
            for _ in 0..8 {
                next = millm::engine::infer::llama::argmax(
                    &model.forward_last(&[next], &mut cache).unwrap(),
                )
                .unwrap();
                out.push(next);
            }
            out
        };
        assert_eq!(greedy(&model), greedy(&model), "{q}");
    }
}

#[test]
fn embeddings_are_the_mean_of_the_last_hidden_states_as_the_numpy_reference_computes_them() {
    for (arch, seed) in [(Arch::Llama, 91), (Arch::Qwen3, 93)] {
        let dir = write(arch, seed);
        let expected = reference_embedding(dir.path());
        let mut weights = load_weights(dir.path(), Quantization::FP32);
        let text = millm::engine::infer::TextModel::build(&mut weights, dir.path(), 64).unwrap();
        let got = text.embed(&TOKENS).unwrap();
        assert_eq!(got.len(), expected.len(), "{arch:?}: the hidden size");
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        println!("{arch:?}: embedding max |ours − reference| = {worst:.2e}");
        assert!(worst < 1e-4, "{arch:?}: {worst}");
    }
}

#[test]
fn a_generation_stops_at_the_next_token_once_its_client_is_gone() {
    use millm::engine::infer::{Finish, Sampling, TextModel};
    let dir = write(Arch::Llama, 95);
    let mut weights = load_weights(dir.path(), Quantization::FP32);
    let text = TextModel::build(&mut weights, dir.path(), 64).unwrap();
    let sampling = Sampling {
        max_tokens: 40,
        temperature: 1.0,
        top_p: 1.0,
        seed: Some(1),
        stop: vec![],
    };
    // The client "leaves" after the fifth token: the check before the sixth sees it.
    let checks = std::cell::Cell::new(0);
    let gone = || {
        checks.set(checks.get() + 1);
        checks.get() > 5
    };
    let got = text
        .generate(&TOKENS, &sampling, &gone, &mut |_| true)
        .unwrap();
    assert_eq!(got.finish, Finish::Cancelled);
    assert_eq!(
        got.completion_tokens, 5,
        "tokens made after the client left"
    );
}
