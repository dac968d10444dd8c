//! Loads safetensors weights (memory-mapped) into candle tensors on the load device, at the
//! chosen quantization, using the same per-tensor rule as the estimate
//! ([`super::estimate::target_format`]). Runs on blocking threads; tensors are converted in
//! parallel with rayon, each large one split in chunks ([`super::convert`]); the cancel token
//! is checked at every tensor and chunk.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use tokio_util::sync::CancellationToken;

use super::convert::{self, ConvertError, Source};
use super::estimate::{half_format, target_format, TargetFormat};
use super::inspect::{CheckpointInfo, TensorMeta};
use super::EngineError;
use crate::domain::Quantization;

/// One loaded tensor: dense, or quantized in a ggml block format (ready for `QMatMul`).
#[derive(Debug)]
pub enum Weight {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

impl Weight {
    /// Bytes this weight holds on its device.
    pub fn bytes(&self) -> u64 {
        match self {
            Weight::Dense(t) => (t.elem_count() * t.dtype().size_in_bytes()) as u64,
            Weight::Quantized(q) => q.storage_size_in_bytes() as u64,
        }
    }

    pub fn elem_count(&self) -> u64 {
        match self {
            Weight::Dense(t) => t.elem_count() as u64,
            Weight::Quantized(q) => q.shape().elem_count() as u64,
        }
    }
}

/// A model held in memory, as an inference engine will use it: tensors by name.
#[derive(Debug)]
pub struct LoadedModel {
    pub weights: HashMap<String, Weight>,
    pub device: Device,
    /// `cpu` or `cuda:0`.
    pub device_name: String,
    /// Counted from the loaded tensors.
    pub num_parameters: u64,
    /// Bytes actually held by the weights.
    pub footprint_bytes: u64,
    /// The format holding most of the parameters: `f32`, `f16`, `bf16`, `q8_0`, `q4k`, `q2k`.
    pub dtype: String,
}

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    pub weight_files: Vec<PathBuf>,
    pub tensors: Vec<TensorMeta>,
    pub quantization: Quantization,
    pub gpu: bool,
}

impl LoadRequest {
    /// The load of the checkpoint `info` describes, at `quantization`, onto the GPU or the CPU.
    pub fn of(info: &CheckpointInfo, quantization: Quantization, gpu: bool) -> LoadRequest {
        LoadRequest {
            weight_files: info.weight_files.clone(),
            tensors: info.tensors.clone(),
            quantization,
            gpu,
        }
    }
}

/// Load stages reported to the caller.
pub const STAGE_READING: &str = "reading";
pub const STAGE_CONVERTING: &str = "converting";
pub const STAGE_QUANTIZING: &str = "quantizing";
pub const STAGE_MOVING: &str = "moving to device";

fn ggml(format: TargetFormat) -> Option<GgmlDType> {
    match format {
        TargetFormat::Q8_0 => Some(GgmlDType::Q8_0),
        TargetFormat::Q4_0 => Some(GgmlDType::Q4_0),
        TargetFormat::Q4K => Some(GgmlDType::Q4K),
        TargetFormat::Q2K => Some(GgmlDType::Q2K),
        _ => None,
    }
}

fn dense_dtype(format: TargetFormat) -> Option<DType> {
    match format {
        TargetFormat::F32 => Some(DType::F32),
        TargetFormat::F16 => Some(DType::F16),
        TargetFormat::BF16 => Some(DType::BF16),
        _ => None,
    }
}

fn bad(e: impl std::fmt::Display) -> EngineError {
    EngineError::BadCheckpoint(e.to_string())
}

/// Picks the device: CUDA 0 when asked and available, else the CPU.
pub fn open_device(gpu: bool) -> Result<(Device, String), EngineError> {
    if gpu {
        let dev =
            Device::new_cuda(0).map_err(|e| bad(format!("cannot open CUDA device 0: {e}")))?;
        return Ok((dev, "cuda:0".into()));
    }
    Ok((Device::Cpu, "cpu".into()))
}

/// Loads one tensor into `format` on `device`, straight from its mapped bytes.
fn load_one(
    files: &MmapedSafetensors,
    meta: &TensorMeta,
    format: TargetFormat,
    device: &Device,
    advance: &(dyn Fn(u64) -> bool + Sync),
) -> Result<Weight, EngineError> {
    let fail = |e: &dyn std::fmt::Display| bad(format!("tensor '{}': {e}", meta.name));
    let converted = |e: ConvertError| match e {
        ConvertError::Stopped => EngineError::Cancelled,
        e => fail(&e),
    };
    if let TargetFormat::Keep(_) = format {
        // Integer buffers: small, kept as stored.
        let t = files
            .load(&meta.name, &Device::Cpu)
            .and_then(|t| t.to_device(device))
            .map_err(|e| fail(&e))?;
        advance(meta.numel());
        return Ok(Weight::Dense(t));
    }
    let view = files.get(&meta.name).map_err(|e| fail(&e))?;
    let src = Source::new(view.dtype(), view.shape(), view.data()).map_err(|e| fail(&e))?;
    if let Some(q) = ggml(format) {
        let qt = convert::quantize(src, q, advance)
            .and_then(|qt| convert::quantized_onto(qt, device))
            .map_err(converted)?;
        return Ok(Weight::Quantized(Arc::new(qt)));
    }
    let dtype = dense_dtype(format).ok_or_else(|| fail(&"no dense form"))?;
    let t = convert::to_dense(src, dtype, advance).map_err(converted)?;
    let t = t.to_device(device).map_err(|e| fail(&e))?;
    Ok(Weight::Dense(t))
}

/// Loads every tensor. `progress(stage, percent)` is called as work advances; a cancelled
/// token stops at the next tensor and everything built so far is dropped.
pub fn load_blocking(
    req: &LoadRequest,
    cancel: &CancellationToken,
    progress: &(dyn Fn(&str, u8) + Sync),
) -> Result<LoadedModel, EngineError> {
    progress(STAGE_READING, 0);
    let (device, device_name) = open_device(req.gpu)?;
    // SAFETY: the files are opened read-only; the registry owns them and nothing in this
    // process writes to them while a load runs. A file changed by another program under the
    // mapping could give wrong values, not unsafety beyond that of reading the bytes.
    let files = unsafe { MmapedSafetensors::multi(&req.weight_files) }
        .map_err(|e| bad(format!("cannot map the weights: {e}")))?;
    progress(STAGE_READING, 100);

    let half = half_format(&req.tensors, req.gpu);
    let quantizing = req
        .tensors
        .iter()
        .any(|t| target_format(t, req.quantization, half).is_quantized());
    let stage = if quantizing {
        STAGE_QUANTIZING
    } else {
        STAGE_CONVERTING
    };
    let total: u64 = req
        .tensors
        .iter()
        .map(TensorMeta::numel)
        .sum::<u64>()
        .max(1);
    let done = AtomicU64::new(0);
    let last_pct = Mutex::new(0u8);
    let by_format: Mutex<HashMap<&'static str, u64>> = Mutex::new(HashMap::new());

    // Largest first, so the parallel tail is short.
    let mut order: Vec<&TensorMeta> = req.tensors.iter().collect();
    order.sort_by_key(|t| std::cmp::Reverse(t.numel()));
    // Reports the elements converted so far; false once the load is cancelled, so a large
    // tensor stops at its next chunk.
    let advance = |n: u64| -> bool {
        let now = done.fetch_add(n, Ordering::Relaxed) + n;
        let pct = ((now * 100) / total).min(99) as u8;
        if let Ok(mut last) = last_pct.lock() {
            if pct > *last {
                *last = pct;
                progress(stage, pct);
            }
        }
        !cancel.is_cancelled()
    };
    // Tensors in parallel, and each large tensor split in chunks within ([`convert`]), so
    // a few large tensors still keep every core busy.
    let weights: Result<Vec<(String, Weight)>, EngineError> = order
        .par_iter()
        .map(|meta| {
            if cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            let format = target_format(meta, req.quantization, half);
            let weight = load_one(&files, meta, format, &device, &advance)?;
            if let Ok(mut m) = by_format.lock() {
                *m.entry(format.name()).or_default() += meta.numel();
            }
            Ok((meta.name.clone(), weight))
        })
        .collect();
    let weights: HashMap<String, Weight> = weights?.into_iter().collect();
    progress(stage, 100);

    progress(STAGE_MOVING, 0);
    device
        .synchronize()
        .map_err(|e| bad(format!("the device failed to finish the copy: {e}")))?;
    progress(STAGE_MOVING, 100);

    let num_parameters = weights.values().map(Weight::elem_count).sum();
    let footprint_bytes = weights.values().map(Weight::bytes).sum();
    let dtype = by_format
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| "f32".into());
    Ok(LoadedModel {
        weights,
        device,
        device_name,
        num_parameters,
        footprint_bytes,
        dtype,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::estimate::estimate;
    use crate::engine::inspect_folder;

    /// Writes a small bf16 Llama-shaped checkpoint and returns its folder.
    fn bf16_checkpoint(dir: &std::path::Path) -> PathBuf {
        let dev = Device::Cpu;
        let t = |shape: &[usize], seed: f64| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|i| (((i as f64 + seed) * 0.618).fract() - 0.5) as f32)
                .collect();
            Tensor::from_vec(v, shape, &dev)
                .and_then(|t| t.to_dtype(DType::BF16))
                .unwrap()
        };
        let tensors = [
            ("model.embed_tokens.weight", t(&[64, 256], 1.0)),
            (
                "model.layers.0.self_attn.q_proj.weight",
                t(&[256, 256], 2.0),
            ),
            ("model.layers.0.mlp.down_proj.weight", t(&[256, 96], 3.0)),
            ("model.norm.weight", t(&[256], 4.0)),
        ];
        let folder = dir.join("m");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(
            folder.join("config.json"),
            r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}"#,
        )
        .unwrap();
        candle_core::safetensors::save(
            &tensors
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect(),
            folder.join("model.safetensors"),
        )
        .unwrap();
        folder
    }

    fn load(folder: &std::path::Path, q: Quantization) -> (LoadedModel, u64) {
        let info = inspect_folder(folder).unwrap();
        let req = LoadRequest::of(&info, q, false);
        let model = load_blocking(&req, &CancellationToken::new(), &|_, _| {}).unwrap();
        (model, estimate(&info.tensors, q, false).weights_bytes)
    }

    #[test]
    fn a_bf16_checkpoint_is_held_as_f16_on_the_cpu_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let folder = bf16_checkpoint(dir.path());
        let (model, est) = load(&folder, Quantization::FP16);
        assert_eq!(model.dtype, "f16");
        for (name, w) in &model.weights {
            let Weight::Dense(t) = w else {
                panic!("{name} is quantized at FP16")
            };
            assert_eq!(t.dtype(), DType::F16, "{name}");
        }
        assert_eq!(model.footprint_bytes, est);
    }

    #[test]
    fn quantized_weights_equal_candles_own_quantization_and_the_estimate() {
        let dir = tempfile::tempdir().unwrap();
        let folder = bf16_checkpoint(dir.path());
        let files = unsafe { MmapedSafetensors::new(folder.join("model.safetensors")) }.unwrap();
        for (q, want) in [
            (Quantization::Q8, [GgmlDType::Q8_0, GgmlDType::Q8_0]),
            (Quantization::Q4, [GgmlDType::Q4K, GgmlDType::Q4_0]),
            (Quantization::Q2, [GgmlDType::Q2K, GgmlDType::Q4_0]),
        ] {
            let (model, est) = load(&folder, q);
            assert_eq!(model.footprint_bytes, est, "{q}");
            let names = [
                "model.layers.0.self_attn.q_proj.weight",
                "model.layers.0.mlp.down_proj.weight",
            ];
            for (name, dtype) in names.into_iter().zip(want) {
                let Some(Weight::Quantized(got)) = model.weights.get(name) else {
                    panic!("{name} is not quantized at {q}")
                };
                let stored = files.load(name, &Device::Cpu).unwrap();
                let reference = QTensor::quantize(&stored, dtype).unwrap();
                assert_eq!(got.dtype(), dtype, "{name} at {q}");
                assert!(
                    got.data().unwrap() == reference.data().unwrap(),
                    "{name} at {q}"
                );
            }
            // Embeddings and norms stay 16-bit, as f16 on the CPU.
            let Some(Weight::Dense(emb)) = model.weights.get("model.embed_tokens.weight") else {
                panic!("the embedding is quantized")
            };
            assert_eq!(emb.dtype(), DType::F16);
        }
    }

    #[test]
    fn a_cancelled_load_stops() {
        let dir = tempfile::tempdir().unwrap();
        let folder = bf16_checkpoint(dir.path());
        let info = inspect_folder(&folder).unwrap();
        let req = LoadRequest::of(&info, Quantization::Q4, false);
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(matches!(
            load_blocking(&req, &cancel, &|_, _| {}),
            Err(EngineError::Cancelled)
        ));
    }
}
