//! Memory estimates from tensor shapes, with the real byte cost of each format.
//!
//! One rule ([`target_format`]) decides what every tensor becomes at a quantization; the loader
//! uses the same rule, so the estimate and the loaded footprint agree:
//!
//! * FP32: every float tensor as f32.
//! * FP16: every float tensor as f16, or bf16 when the checkpoint's floats are bf16 and the
//!   device is a GPU ([`half_format`] says why not on the CPU).
//! * Q8 / Q4 / Q2: 2-D `*.weight` tensors that are not embeddings or norms, and whose inner
//!   (last) dimension is a multiple of the block, become Q8_0 (32-wide blocks of 34 bytes),
//!   Q4_K (256-wide blocks of 144 bytes) or Q2_K (256-wide blocks of 84 bytes). A Q4/Q2
//!   tensor whose rows do not fit a 256-wide block falls back to Q4_0 (32-wide, 18 bytes);
//!   one that fits no block stays 16-bit. Everything else (embeddings, norms, biases) stays
//!   16-bit as for FP16.
//! * Non-float tensors (integer buffers) keep their own type.
//!
//! Weights bytes = Σ bytes of each tensor in its target format. The stated runtime overhead,
//! reported separately, is the CUDA context (600 MiB, measured on an H100 with candle) when the
//! device is a GPU, plus a working margin of 2% of the weights (at least 8 MiB: the tokenizer,
//! rotary tables, activations and scratch of a 256 MiB test model measured about 4 MiB after a
//! warm-up generation, `tests/memory.rs`). `estimated_memory_mb` is weights + overhead + the
//! KV cache + the kernels' repacked weights, in MiB rounded up.

use safetensors::Dtype;

use super::inspect::TensorMeta;
use crate::domain::{mib_ceil, Quantization};

/// What one tensor is held as after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetFormat {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4K,
    Q2K,
    /// A non-float tensor kept as stored, with its element size in bytes.
    Keep(usize),
}

impl TargetFormat {
    /// Bytes this format takes for `numel` elements laid out in rows of `inner`.
    pub fn bytes(self, numel: u64) -> u64 {
        match self {
            TargetFormat::F32 => numel * 4,
            TargetFormat::F16 | TargetFormat::BF16 => numel * 2,
            TargetFormat::Q8_0 => numel / 32 * 34,
            TargetFormat::Q4_0 => numel / 32 * 18,
            TargetFormat::Q4K => numel / 256 * 144,
            TargetFormat::Q2K => numel / 256 * 84,
            TargetFormat::Keep(size) => numel * size as u64,
        }
    }

    /// The name the API reports as `dtype`.
    pub fn name(self) -> &'static str {
        match self {
            TargetFormat::F32 => "f32",
            TargetFormat::F16 => "f16",
            TargetFormat::BF16 => "bf16",
            TargetFormat::Q8_0 => "q8_0",
            TargetFormat::Q4_0 => "q4_0",
            TargetFormat::Q4K => "q4k",
            TargetFormat::Q2K => "q2k",
            TargetFormat::Keep(_) => "keep",
        }
    }

    pub fn is_quantized(self) -> bool {
        matches!(
            self,
            TargetFormat::Q8_0 | TargetFormat::Q4_0 | TargetFormat::Q4K | TargetFormat::Q2K
        )
    }
}

fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
}

/// The 16-bit type a checkpoint's floats become. f16, except for a mostly-bf16 checkpoint on a
/// GPU, which stays bf16. On the CPU candle has no bf16 matmul kernel and widens a bf16 weight
/// to f32 on every call, so `benches/generate.rs` measured SmolLM2-135M's FP16 decode at
/// 9 tokens/s with bf16 weights against 34 with the same weights held as f16 (27 as f32, at
/// twice the memory): there a bf16 checkpoint's floats become f16.
pub fn half_format(tensors: &[TensorMeta], gpu: bool) -> TargetFormat {
    if !gpu {
        return TargetFormat::F16;
    }
    let bf16: u64 = tensors
        .iter()
        .filter(|t| t.dtype == Dtype::BF16)
        .map(TensorMeta::numel)
        .sum();
    let other: u64 = tensors
        .iter()
        .filter(|t| is_float(t.dtype) && t.dtype != Dtype::BF16)
        .map(TensorMeta::numel)
        .sum();
    if bf16 > other {
        TargetFormat::BF16
    } else {
        TargetFormat::F16
    }
}

/// True for a linear layer's weight matrix, the only tensors that are quantized.
fn is_linear_weight(t: &TensorMeta) -> bool {
    let lower = t.name.to_ascii_lowercase();
    t.shape.len() == 2
        && lower.ends_with(".weight")
        && !lower.contains("embed")
        && !lower.contains("norm")
        && !lower.contains("wte")
        && !lower.contains("wpe")
}

/// The one rule: what `t` becomes at `quant`, with `half` the checkpoint's 16-bit type.
pub fn target_format(t: &TensorMeta, quant: Quantization, half: TargetFormat) -> TargetFormat {
    if !is_float(t.dtype) {
        return TargetFormat::Keep(t.dtype.bitsize().div_ceil(8));
    }
    if quant == Quantization::FP32 {
        return TargetFormat::F32;
    }
    if !is_linear_weight(t) {
        return half;
    }
    let inner = t.shape[1];
    let fits = |block: usize| inner > 0 && inner % block == 0;
    match quant {
        Quantization::FP32 => TargetFormat::F32,
        Quantization::FP16 => half,
        Quantization::Q8 if fits(32) => TargetFormat::Q8_0,
        Quantization::Q4 if fits(256) => TargetFormat::Q4K,
        Quantization::Q2 if fits(256) => TargetFormat::Q2K,
        Quantization::Q4 | Quantization::Q2 if fits(32) => TargetFormat::Q4_0,
        _ => half,
    }
}

/// A memory estimate, split into the weights and the stated runtime overhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub weights_bytes: u64,
    pub overhead_bytes: u64,
    /// One generation's KV cache over the context the server allows (0 when the model cannot
    /// generate).
    pub kv_cache_bytes: u64,
    /// Second copies kept for the matmuls: the tiled copy of quantized weights that candle's
    /// x86 kernels build on the first use and keep with each tensor (see [`repacked_bytes`]),
    /// and the Q8_0 LM head of a tied embedding in a quantized load (see [`tied_head_bytes`]).
    pub repacked_bytes: u64,
}

/// CUDA context memory measured with candle on an H100 (`../shared/gpu/README.md`).
pub const CUDA_CONTEXT_BYTES: u64 = 600 << 20;

impl Estimate {
    pub fn total_bytes(&self) -> u64 {
        self.weights_bytes + self.overhead_bytes + self.kv_cache_bytes + self.repacked_bytes
    }

    /// The same estimate with a generation's KV cache counted.
    pub fn with_kv_cache(self, kv_cache_bytes: u64) -> Self {
        Estimate {
            kv_cache_bytes,
            ..self
        }
    }

    /// `estimated_memory_mb`: weights, repacked weights, overhead and KV cache, MiB rounded up.
    pub fn total_mb(&self) -> u64 {
        mib_ceil(self.total_bytes())
    }
}

/// Estimates the memory a load at `quant` takes; `gpu` adds the CUDA context.
pub fn estimate(tensors: &[TensorMeta], quant: Quantization, gpu: bool) -> Estimate {
    let half = half_format(tensors, gpu);
    let weights_bytes: u64 = tensors
        .iter()
        .map(|t| target_format(t, quant, half).bytes(t.numel()))
        .sum();
    let margin = (weights_bytes / 50).max(8 << 20);
    let overhead_bytes = margin + if gpu { CUDA_CONTEXT_BYTES } else { 0 };
    let repacked_bytes = if gpu {
        0
    } else {
        let level = X86Kernels::detect();
        tensors
            .iter()
            .map(|t| repacked_bytes(t, target_format(t, quant, half), level))
            .sum::<u64>()
            + tied_head_bytes(tensors, quant)
    };
    Estimate {
        weights_bytes,
        overhead_bytes,
        kv_cache_bytes: 0,
        repacked_bytes,
    }
}

/// The Q8_0 copy of a tied embedding table that a quantized load on the CPU keeps as its LM
/// head (`infer::llama`): for a checkpoint with `model.embed_tokens.weight` and no
/// `lm_head.weight`, rows a multiple of 32 values.
pub fn tied_head_bytes(tensors: &[TensorMeta], quant: Quantization) -> u64 {
    if !matches!(
        quant,
        Quantization::Q8 | Quantization::Q4 | Quantization::Q2
    ) || tensors.iter().any(|t| t.name.ends_with("lm_head.weight"))
    {
        return 0;
    }
    tensors
        .iter()
        .find(|t| t.name.ends_with("embed_tokens.weight") && t.shape.len() == 2)
        .filter(|t| t.shape[1] > 0 && t.shape[1] % 32 == 0)
        .map_or(0, |t| TargetFormat::Q8_0.bytes(t.numel()))
}

/// The x86 kernel tier candle 0.11's quantized matmul picks (`quantized::repack_x86::level`,
/// crate-private, so its rule is repeated here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum X86Kernels {
    /// No repacking (not x86-64, or no AVX2 + FMA).
    None,
    Avx2,
    /// AVX-VNNI or AVX512-VNNI: Q8_0 is repacked too.
    Vnni,
}

impl X86Kernels {
    pub fn detect() -> X86Kernels {
        #[cfg(target_arch = "x86_64")]
        {
            let vnni = (is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512vnni"))
                || (is_x86_feature_detected!("avxvnni") && is_x86_feature_detected!("avx2"));
            if vnni {
                return X86Kernels::Vnni;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return X86Kernels::Avx2;
            }
        }
        X86Kernels::None
    }
}

/// Bytes of the tiled copy candle's x86 kernels make of a CPU weight `t` held as `format`, on
/// its first matmul, and keep as long as the tensor lives: 16 rows × one 256-value super-block
/// per Q4_K tile (f32 scales and mins unpacked: 3,072 bytes for 4,096 values), 16 rows × one
/// 32-value block per Q8_0 tile (544 bytes for 512 values, with VNNI only). Matrices whose rows
/// are not a multiple of 256 values, or whose row count is not a multiple of 16, stay as they
/// are.
pub fn repacked_bytes(t: &TensorMeta, format: TargetFormat, level: X86Kernels) -> u64 {
    const TILE_ROWS: usize = 16;
    if t.shape.len() != 2 || level == X86Kernels::None {
        return 0;
    }
    let (rows, inner) = (t.shape[0], t.shape[1]);
    if inner == 0 || inner % 256 != 0 || rows % TILE_ROWS != 0 {
        return 0;
    }
    let numel = (rows * inner) as u64;
    match format {
        TargetFormat::Q4K => numel / 4096 * 3072,
        TargetFormat::Q8_0 if level == X86Kernels::Vnni => numel / 512 * 544,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, dtype: Dtype, shape: &[usize]) -> TensorMeta {
        TensorMeta {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn linear_weights_are_quantized_and_embeddings_are_not() {
        let half = TargetFormat::F16;
        let proj = t("model.layers.0.mlp.up_proj.weight", Dtype::F32, &[512, 256]);
        let emb = t("model.embed_tokens.weight", Dtype::F32, &[1000, 256]);
        let norm = t("model.norm.weight", Dtype::F32, &[256]);
        assert_eq!(
            target_format(&proj, Quantization::Q4, half),
            TargetFormat::Q4K
        );
        assert_eq!(
            target_format(&proj, Quantization::Q2, half),
            TargetFormat::Q2K
        );
        assert_eq!(
            target_format(&proj, Quantization::Q8, half),
            TargetFormat::Q8_0
        );
        assert_eq!(
            target_format(&emb, Quantization::Q4, half),
            TargetFormat::F16
        );
        assert_eq!(
            target_format(&norm, Quantization::Q4, half),
            TargetFormat::F16
        );
        assert_eq!(
            target_format(&norm, Quantization::FP32, half),
            TargetFormat::F32
        );
    }

    #[test]
    fn rows_that_miss_the_k_block_fall_back_to_q4_0_or_16_bit() {
        let half = TargetFormat::BF16;
        let narrow = t("x.o_proj.weight", Dtype::BF16, &[64, 96]);
        assert_eq!(
            target_format(&narrow, Quantization::Q4, half),
            TargetFormat::Q4_0
        );
        let odd = t("x.o_proj.weight", Dtype::BF16, &[64, 100]);
        assert_eq!(
            target_format(&odd, Quantization::Q4, half),
            TargetFormat::BF16
        );
        assert_eq!(
            target_format(&odd, Quantization::Q8, half),
            TargetFormat::BF16
        );
    }

    #[test]
    fn block_formats_cost_their_real_bytes() {
        assert_eq!(TargetFormat::Q8_0.bytes(256), 8 * 34);
        assert_eq!(TargetFormat::Q4K.bytes(256), 144);
        assert_eq!(TargetFormat::Q2K.bytes(512), 168);
        assert_eq!(TargetFormat::Q4_0.bytes(64), 36);
    }

    #[test]
    fn bf16_checkpoints_stay_bf16_on_a_gpu_and_become_f16_on_the_cpu() {
        let ts = vec![t("a.weight", Dtype::BF16, &[4, 4])];
        assert_eq!(half_format(&ts, true), TargetFormat::BF16);
        assert_eq!(half_format(&ts, false), TargetFormat::F16);
        let ts = vec![t("a.weight", Dtype::F32, &[4, 4])];
        assert_eq!(half_format(&ts, true), TargetFormat::F16);
        assert_eq!(half_format(&ts, false), TargetFormat::F16);
    }

    #[test]
    fn fp16_costs_two_bytes_a_parameter_on_either_device_and_q4_only_on_linear_weights() {
        let ts = vec![
            t("model.embed_tokens.weight", Dtype::BF16, &[1000, 256]),
            t(
                "model.layers.0.mlp.up_proj.weight",
                Dtype::BF16,
                &[512, 256],
            ),
            t("model.norm.weight", Dtype::BF16, &[256]),
        ];
        let numel: u64 = ts.iter().map(TensorMeta::numel).sum();
        // FP16 is two bytes a parameter whichever 16-bit type is held.
        for gpu in [false, true] {
            assert_eq!(
                estimate(&ts, Quantization::FP16, gpu).weights_bytes,
                numel * 2
            );
        }
        // At Q4 the embedding and the norm stay 16-bit, the projection becomes Q4_K.
        let q4 = estimate(&ts, Quantization::Q4, false).weights_bytes;
        assert_eq!(q4, (1000 * 256 + 256) * 2 + 512 * 256 / 256 * 144);
    }

    #[test]
    fn candles_x86_kernels_keep_a_tiled_copy_of_q4k_and_q8_0_weights() {
        let proj = t("model.layers.0.mlp.up_proj.weight", Dtype::F32, &[512, 256]);
        let odd = t("model.layers.0.mlp.up_proj.weight", Dtype::F32, &[512, 576]);
        let q4k = repacked_bytes(&proj, TargetFormat::Q4K, X86Kernels::Avx2);
        assert_eq!(q4k, 512 * 256 / 4096 * 3072);
        assert_eq!(
            repacked_bytes(&proj, TargetFormat::Q8_0, X86Kernels::Avx2),
            0
        );
        assert_eq!(
            repacked_bytes(&proj, TargetFormat::Q8_0, X86Kernels::Vnni),
            512 * 256 / 512 * 544
        );
        assert_eq!(
            repacked_bytes(&odd, TargetFormat::Q8_0, X86Kernels::Vnni),
            0
        );
        assert_eq!(
            repacked_bytes(&proj, TargetFormat::Q4_0, X86Kernels::Vnni),
            0
        );
        assert_eq!(
            repacked_bytes(&proj, TargetFormat::Q4K, X86Kernels::None),
            0
        );
        let on_gpu = estimate(std::slice::from_ref(&proj), Quantization::Q4, true);
        assert_eq!(on_gpu.repacked_bytes, 0);
    }

    #[test]
    fn a_quantized_load_of_tied_embeddings_counts_their_q8_0_head() {
        let emb = t("model.embed_tokens.weight", Dtype::BF16, &[1000, 576]);
        let proj = t(
            "model.layers.0.mlp.up_proj.weight",
            Dtype::BF16,
            &[576, 576],
        );
        let head = t("lm_head.weight", Dtype::BF16, &[1000, 576]);
        let tied = vec![emb.clone(), proj.clone()];
        assert_eq!(
            tied_head_bytes(&tied, Quantization::Q8),
            1000 * 576 / 32 * 34
        );
        assert_eq!(
            tied_head_bytes(&tied, Quantization::Q2),
            1000 * 576 / 32 * 34
        );
        assert_eq!(tied_head_bytes(&tied, Quantization::FP16), 0);
        assert_eq!(tied_head_bytes(&[emb, proj, head], Quantization::Q8), 0);
        let cpu = estimate(&tied, Quantization::Q8, false);
        assert!(cpu.repacked_bytes >= 1000 * 576 / 32 * 34);
        assert_eq!(estimate(&tied, Quantization::Q8, true).repacked_bytes, 0);
    }
}
