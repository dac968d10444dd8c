//! The forward pass of the Llama family over the weights already loaded: no second copy of the
//! large tensors, no re-read of the files. Linear layers run as candle's `QMatMul` straight on
//! the loaded `QTensor`s, or as a matmul with the dense f32/f16/bf16 weight; activations are
//! f32. Grouped-query attention, RoPE in the Hugging Face half-split layout, optional q/k/v
//! biases (Qwen2) and per-head q/k norms (Qwen3), tied embeddings, a KV cache per request.
//! The layout follows transformers' `modeling_llama.py`; the code is ours because it takes
//! the in-memory weights.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};

use super::config::LlamaConfig;
use crate::engine::loader::{LoadedModel, Weight};
use crate::engine::EngineError;

fn bad(e: impl std::fmt::Display) -> EngineError {
    EngineError::BadCheckpoint(e.to_string())
}

/// A candle error in the forward pass.
fn fail(e: candle_core::Error) -> EngineError {
    EngineError::BadCheckpoint(format!("the forward pass failed: {e}"))
}

/// A linear layer over a loaded weight, with its bias (as f32).
struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
}

enum LinearWeight {
    Quantized(QMatMul),
    /// `[out, in]` in its loaded dtype.
    Dense(Tensor),
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = match &self.weight {
            LinearWeight::Quantized(m) => m.forward(x)?,
            LinearWeight::Dense(w) => {
                let xd = x.to_dtype(w.dtype())?;
                let rows = x.elem_count() / x.dim(D::Minus1)?;
                let y = if rows == 1 && w.device().is_cpu() {
                    gemv_on_every_core(&xd, w)?
                } else {
                    xd.broadcast_matmul(&w.t()?)?
                };
                y.to_dtype(DType::F32)?
            }
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `x` (one row) times `w` `[out, in]` transposed, the rows of `w` split over candle's barrier
/// pool (every core), each part a matmul of its own. gemm's matrix-vector product, which a
/// dense layer gets for one row, runs on one thread whatever the pool.
fn gemv_on_every_core(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let pool = candle_core::utils::barrier_pool();
    let parts = pool.n_workers() + 1;
    let n = w.dim(0)?;
    if parts == 1 || n < parts * 64 {
        return x.broadcast_matmul(&w.t()?);
    }
    let rows = n.div_ceil(parts).next_multiple_of(16);
    let outs: Vec<std::sync::Mutex<Option<candle_core::Result<Tensor>>>> =
        (0..parts).map(|_| std::sync::Mutex::new(None)).collect();
    pool.execute(|part| {
        let start = part * rows;
        if start < n {
            let out = w
                .narrow(0, start, rows.min(n - start))
                .and_then(|w| x.broadcast_matmul(&w.t()?));
            *outs[part].lock().unwrap_or_else(|p| p.into_inner()) = Some(out);
        }
    });
    let parts = outs
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, D::Minus1)
}

/// Linear layers that read the same input: one weight holding all their rows (fused), or each
/// its own.
enum Projections {
    /// The fused layer and the output width of each part, in order.
    Fused(Linear, Vec<usize>),
    Each(Vec<Linear>),
}

impl Projections {
    /// Each part's output, in order.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        match self {
            Projections::Fused(linear, widths) => {
                let y = linear.forward(x)?;
                let mut start = 0;
                widths
                    .iter()
                    .map(|&w| {
                        let part = y.narrow(D::Minus1, start, w);
                        start += w;
                        part
                    })
                    .collect()
            }
            Projections::Each(linears) => linears.iter().map(|l| l.forward(x)).collect(),
        }
    }
}

struct Block {
    attn_norm: Tensor,
    /// q, k, v.
    qkv: Projections,
    o: Linear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    mlp_norm: Tensor,
    /// gate, up.
    gate_up: Projections,
    down: Linear,
}

/// The keys and values seen so far by one generation: per layer, `[1, positions, kv_heads,
/// head_dim]` f32 buffers sized for the whole context and filled in place (candle-nn's
/// `KvCache`), so a token costs a write of its own keys and values rather than a copy of
/// everything before it. On the CPU the pages are only touched as positions fill.
pub struct KvCache {
    layers: Vec<candle_nn::kv_cache::KvCache>,
    /// Positions already in the cache.
    pub len: usize,
}

/// A Llama-family model built over a [`LoadedModel`].
pub struct Llama {
    cfg: LlamaConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    device: Device,
    eps: f64,
}

/// Takes the loaded weights by name.
struct Weights<'a>(&'a HashMap<String, Weight>);

impl Weights<'_> {
    fn get(&self, name: &str) -> Result<&Weight, EngineError> {
        self.0
            .get(name)
            .ok_or_else(|| bad(format!("the checkpoint has no tensor '{name}'")))
    }

    /// A small tensor (norm, bias) as f32.
    fn f32(&self, name: &str) -> Result<Tensor, EngineError> {
        match self.get(name)? {
            Weight::Dense(t) => t.to_dtype(DType::F32).map_err(fail),
            Weight::Quantized(q) => q.dequantize(&q.device()).map_err(fail),
        }
    }

    fn optional_f32(&self, name: &str) -> Result<Option<Tensor>, EngineError> {
        if self.0.contains_key(name) {
            self.f32(name).map(Some)
        } else {
            Ok(None)
        }
    }

    fn linear(&self, prefix: &str) -> Result<Linear, EngineError> {
        let weight = match self.get(&format!("{prefix}.weight"))? {
            Weight::Quantized(q) => {
                LinearWeight::Quantized(QMatMul::from_arc(q.clone()).map_err(fail)?)
            }
            Weight::Dense(t) => LinearWeight::Dense(t.clone()),
        };
        Ok(Linear {
            weight,
            bias: self.optional_f32(&format!("{prefix}.bias"))?,
        })
    }
}

/// The LM head of a model whose embedding table is also its output layer. The table stays
/// 16-bit even in a quantized load (token lookups need it), so on the CPU a quantized load
/// gets a Q8_0 copy for the head: every token reads it, and at 16 bits (through gemm's f16
/// path) it cost about as much as all the quantized layers together. The estimate counts the
/// copy ([`crate::engine::estimate::tied_head_bytes`]).
fn tied_head(model: &LoadedModel, embed: &Tensor) -> Result<Linear, EngineError> {
    let quantized_load = model
        .weights
        .values()
        .any(|w| matches!(w, Weight::Quantized(_)));
    let inner = embed.dims().last().copied().unwrap_or(0);
    let weight = if quantized_load && model.device.is_cpu() && inner > 0 && inner % 32 == 0 {
        let q = embed
            .to_dtype(DType::F32)
            .and_then(|t| QTensor::quantize(&t, GgmlDType::Q8_0))
            .map_err(fail)?;
        LinearWeight::Quantized(QMatMul::from_arc(Arc::new(q)).map_err(fail)?)
    } else {
        LinearWeight::Dense(embed.clone())
    };
    Ok(Linear { weight, bias: None })
}

/// On the CPU, puts the weights of `parts` (under `prefix`) into one tensor, rows after rows,
/// and the loaded model keeps that instead of the parts (so the bytes held do not change), under
/// the name `{prefix}.{fused}`. One matmul call then does the work of several: the input is
/// quantized once, the cores split one job, and the rows stream from one buffer. SmolLM2 decodes
/// about 20% faster at Q8 and Q4 with q/k/v and gate/up fused this way. A later build finds the
/// fused tensor already there.
///
/// Fuses only what stays exact: all parts in the same format, same input width, biases on all
/// or none, and, so that candle's tiled copy of x86 weights (counted per tensor by the
/// estimate) is the same for the fused tensor as for its parts, row counts that are multiples
/// of 16. Otherwise each part stays its own layer.
fn fuse(
    model: &mut LoadedModel,
    prefix: &str,
    parts: &[(&str, usize)],
    fused: &str,
) -> Result<Projections, EngineError> {
    let name = |part: &str, what: &str| format!("{prefix}.{part}.{what}");
    let widths: Vec<usize> = parts.iter().map(|&(_, w)| w).collect();
    let separate = |model: &LoadedModel| -> Result<Projections, EngineError> {
        let w = Weights(&model.weights);
        let linears = parts
            .iter()
            .map(|(part, _)| w.linear(&format!("{prefix}.{part}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Projections::Each(linears))
    };
    let rows = |w: &Weight| match w {
        Weight::Dense(t) => t.dims().to_vec(),
        Weight::Quantized(q) => q.shape().dims().to_vec(),
    };
    if let Some(found) = model.weights.get(&name(fused, "weight")) {
        if rows(found).first() != Some(&widths.iter().sum()) {
            return Err(bad(format!(
                "{prefix}.{fused} does not have the rows of its parts"
            )));
        }
        let linear = Weights(&model.weights).linear(&format!("{prefix}.{fused}"))?;
        return Ok(Projections::Fused(linear, widths));
    }
    let fits = parts.iter().all(|&(part, width)| {
        model
            .weights
            .get(&name(part, "weight"))
            .is_some_and(|w| rows(w).len() == 2 && rows(w)[0] == width)
    });
    if !fits || !model.device.is_cpu() || widths.iter().any(|w| w % 16 != 0) {
        return separate(model);
    }
    let weights: Vec<&Weight> = parts
        .iter()
        .map(|(part, _)| &model.weights[&name(part, "weight")])
        .collect();
    let biases: Vec<Option<&Weight>> = parts
        .iter()
        .map(|(part, _)| model.weights.get(&name(part, "bias")))
        .collect();
    if biases.iter().any(Option::is_some) && biases.iter().any(Option::is_none) {
        return separate(model);
    }
    let joined = match weights.as_slice() {
        [Weight::Quantized(first), ..] => {
            let dtype = first.dtype();
            let inner = first.shape().dims()[1];
            let mut quantized = Vec::with_capacity(weights.len());
            for w in &weights {
                match w {
                    Weight::Quantized(q) if q.dtype() == dtype && q.shape().dims()[1] == inner => {
                        quantized.push(q.clone())
                    }
                    _ => return separate(model),
                }
            }
            let total: usize = quantized.iter().map(|q| q.storage_size_in_bytes()).sum();
            let mut bytes = Vec::with_capacity(total);
            for q in &quantized {
                bytes.extend_from_slice(&q.data().map_err(fail)?);
            }
            let storage = candle_core::quantized::QStorage::from_data(
                std::borrow::Cow::Owned(bytes),
                &Device::Cpu,
                dtype,
            )
            .map_err(fail)?;
            let rows = widths.iter().sum::<usize>();
            Weight::Quantized(Arc::new(
                QTensor::new(storage, (rows, inner)).map_err(fail)?,
            ))
        }
        [Weight::Dense(first), ..] => {
            let (dtype, inner) = (first.dtype(), first.dims()[1]);
            let mut dense = Vec::with_capacity(weights.len());
            for w in &weights {
                match w {
                    Weight::Dense(t) if t.dtype() == dtype && t.dims()[1] == inner => {
                        dense.push(t.clone())
                    }
                    _ => return separate(model),
                }
            }
            Weight::Dense(Tensor::cat(&dense, 0).map_err(fail)?)
        }
        [] => return separate(model),
    };
    let bias = if biases.iter().all(Option::is_some) {
        let mut dense = Vec::with_capacity(biases.len());
        for b in biases.into_iter().flatten() {
            match b {
                Weight::Dense(t) => dense.push(t.clone()),
                Weight::Quantized(_) => return separate(model),
            }
        }
        Some(Weight::Dense(Tensor::cat(&dense, 0).map_err(fail)?))
    } else {
        None
    };
    for (part, _) in parts {
        model.weights.remove(&name(part, "weight"));
        model.weights.remove(&name(part, "bias"));
    }
    model.weights.insert(name(fused, "weight"), joined);
    if let Some(bias) = bias {
        model.weights.insert(name(fused, "bias"), bias);
    }
    let linear = Weights(&model.weights).linear(&format!("{prefix}.{fused}"))?;
    Ok(Projections::Fused(linear, widths))
}

impl Llama {
    /// Builds the model over `model`'s weights; `max_positions` sizes the rotary tables. On the
    /// CPU it fuses the projections that share an input, in `model` itself (see [`fuse`]).
    pub fn new(
        model: &mut LoadedModel,
        cfg: &LlamaConfig,
        max_positions: usize,
    ) -> Result<Self, EngineError> {
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let (q, kv) = (
                cfg.num_attention_heads * cfg.head_dim(),
                cfg.kv_heads() * cfg.head_dim(),
            );
            let qkv = fuse(
                model,
                &format!("{p}.self_attn"),
                &[("q_proj", q), ("k_proj", kv), ("v_proj", kv)],
                "q+k+v_proj",
            )?;
            let inter = cfg.intermediate_size;
            let gate_up = fuse(
                model,
                &format!("{p}.mlp"),
                &[("gate_proj", inter), ("up_proj", inter)],
                "gate+up_proj",
            )?;
            let w = Weights(&model.weights);
            blocks.push(Block {
                attn_norm: w.f32(&format!("{p}.input_layernorm.weight"))?,
                qkv,
                o: w.linear(&format!("{p}.self_attn.o_proj"))?,
                q_norm: w.optional_f32(&format!("{p}.self_attn.q_norm.weight"))?,
                k_norm: w.optional_f32(&format!("{p}.self_attn.k_norm.weight"))?,
                mlp_norm: w.f32(&format!("{p}.post_attention_layernorm.weight"))?,
                gate_up,
                down: w.linear(&format!("{p}.mlp.down_proj"))?,
            });
        }
        let w = Weights(&model.weights);
        let embed = match w.get("model.embed_tokens.weight")? {
            Weight::Dense(t) => t.clone(),
            Weight::Quantized(q) => q.dequantize(&model.device).map_err(fail)?,
        };
        let lm_head = if cfg.tie_word_embeddings || !model.weights.contains_key("lm_head.weight") {
            tied_head(model, &embed)?
        } else {
            w.linear("lm_head")?
        };
        let inv: Vec<f32> = cfg.inv_freq().into_iter().map(|f| f as f32).collect();
        let half = inv.len();
        let positions = max_positions.max(1);
        let mut angles = Vec::with_capacity(positions * half);
        for p in 0..positions {
            angles.extend(inv.iter().map(|f| p as f32 * f));
        }
        let angles = Tensor::from_vec(angles, (positions, half), &model.device).map_err(fail)?;
        Ok(Llama {
            cfg: cfg.clone(),
            embed,
            blocks,
            norm: w.f32("model.norm.weight")?,
            lm_head,
            cos: angles.cos().map_err(fail)?,
            sin: angles.sin().map_err(fail)?,
            device: model.device.clone(),
            eps: cfg.rms_norm_eps,
        })
    }

    /// The largest context the rotary tables cover.
    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// An empty cache for one generation.
    pub fn new_cache(&self) -> KvCache {
        let positions = self.max_positions();
        KvCache {
            layers: (0..self.blocks.len())
                .map(|_| candle_nn::kv_cache::KvCache::new(1, positions))
                .collect(),
            len: 0,
        }
    }

    /// Runs `tokens` after what `cache` holds and returns the final hidden states
    /// `[tokens, hidden]` (after the last norm), f32.
    pub fn hidden(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor, EngineError> {
        self.run(tokens.len(), || self.hidden_inner(tokens, cache))
    }

    /// Runs `tokens` after what `cache` holds; the logits of the last position, f32 `[vocab]`.
    pub fn forward_last(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor, EngineError> {
        self.run(tokens.len(), || {
            let h = self.hidden_inner(tokens, cache)?;
            let last = h.narrow(0, tokens.len() - 1, 1)?;
            self.lm_head.forward(&last)?.squeeze(0)
        })
    }

    /// Runs the work of `tokens` tokens where it is fastest: on the CPU one token on one rayon
    /// thread ([`crate::engine::device::on_one_thread`]) and a prompt in candle's pool; the
    /// quantized matmuls use every core either way.
    fn run<R: Send>(
        &self,
        tokens: usize,
        f: impl FnOnce() -> candle_core::Result<R> + Send,
    ) -> Result<R, EngineError> {
        let out = if self.device.is_cpu() && tokens == 1 {
            crate::engine::device::on_one_thread(f)
        } else {
            self.device.with_context(f)
        };
        out.map_err(fail)
    }

    /// The logits of every position of `hidden` (`[n, hidden]` → `[n, vocab]`).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor, EngineError> {
        self.lm_head.forward(hidden).map_err(fail)
    }

    fn hidden_inner(&self, tokens: &[u32], cache: &mut KvCache) -> candle_core::Result<Tensor> {
        let t = tokens.len();
        if t == 0 {
            candle_core::bail!("no tokens to run");
        }
        let start = cache.len;
        if start + t > self.max_positions() {
            candle_core::bail!(
                "{} positions exceed the context of {}",
                start + t,
                self.max_positions()
            );
        }
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self
            .embed
            .index_select(&ids, 0)?
            .to_dtype(DType::F32)?
            .unsqueeze(0)?;
        let cos = self.cos.narrow(0, start, t)?;
        let sin = self.sin.narrow(0, start, t)?;
        for (block, slot) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let residual = x.clone();
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, self.eps as f32)?;
            let h = self.attention(block, &h, &cos, &sin, start, slot)?;
            x = (residual + h)?;
            let residual = x.clone();
            let h = candle_nn::ops::rms_norm(&x, &block.mlp_norm, self.eps as f32)?;
            let [gate, up] = <[Tensor; 2]>::try_from(block.gate_up.forward(&h)?)
                .map_err(|_| candle_core::Error::Msg("gate and up: two outputs".into()))?;
            let h = block.down.forward(&(candle_nn::ops::silu(&gate)? * up)?)?;
            x = (residual + h)?;
        }
        cache.len = start + t;
        candle_nn::ops::rms_norm(&x, &self.norm, self.eps as f32)?.squeeze(0)
    }

    fn attention(
        &self,
        block: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        start: usize,
        slot: &mut candle_nn::kv_cache::KvCache,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        // `[b, t, heads, head_dim]`, the layout the projections produce: no transposes.
        let [q, k, v] = <[Tensor; 3]>::try_from(block.qkv.forward(x)?)
            .map_err(|_| candle_core::Error::Msg("q, k and v: three outputs".into()))?;
        let mut q = q.reshape((b, t, nh, hd))?;
        let mut k = k.reshape((b, t, nkv, hd))?;
        let v = v.reshape((b, t, nkv, hd))?;
        if let Some(w) = &block.q_norm {
            q = candle_nn::ops::rms_norm(&q, w, self.eps as f32)?;
        }
        if let Some(w) = &block.k_norm {
            k = candle_nn::ops::rms_norm(&k, w, self.eps as f32)?;
        }
        let q = candle_nn::rotary_emb::rope_thd(&q.contiguous()?, cos, sin)?;
        let k = candle_nn::rotary_emb::rope_thd(&k.contiguous()?, cos, sin)?;
        let (k, v) = slot.append(&k, &v.contiguous()?)?;
        let y = if self.device.is_cpu() && t == 1 {
            attend_one(&q, &k, &v)?
        } else {
            attend(&q, &k, &v, start)?
        };
        let y = y.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        block.o.forward(&y)
    }
}

/// Causal attention of `q` `[1, t, heads, head_dim]` (at positions `start..start + t`) over
/// `k` and `v` `[1, start + t, kv_heads, head_dim]`; grouped-query heads share their key/value
/// head. Gives `[1, heads, t, head_dim]`. The matmul form, on copies in the heads-first layout:
/// what a prompt runs on every device, and one token off the CPU.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, start: usize) -> candle_core::Result<Tensor> {
    let (_, t, nh, hd) = q.dims4()?;
    let nkv = k.dim(2)?;
    let scale = 1.0 / (hd as f64).sqrt();
    let q = q.transpose(1, 2)?.contiguous()?;
    let k = repeat_kv(&k.transpose(1, 2)?.contiguous()?, nh / nkv)?;
    let v = repeat_kv(&v.transpose(1, 2)?.contiguous()?, nh / nkv)?;
    let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
    let scores = match causal_mask(t, start, q.device())? {
        Some(m) => scores.broadcast_add(&m)?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(&v.contiguous()?)
}

/// [`attend`] for one token on the CPU, with nothing copied: `q` `[1, 1, heads, head_dim]`
/// over `k` and `v` `[1, positions, kv_heads, head_dim]` (views of the KV cache), one batched
/// matmul per step with each key/value head's query heads as the rows. Gives
/// `[1, heads, 1, head_dim]`.
///
/// Measured against candle-nn's CPU flash attention, which this replaced for decoding: its
/// online softmax walks one position at a time (a 64-value dot product, an `exp` and a scaled
/// add each); here gemm does the dot products in blocks and the softmax is one vectorised pass.
/// Q8 decode of SmolLM2-135M on 2 threads, both decoding on one rayon thread: over 900
/// tokens 58–60 tokens/s with flash, 75 with this; over 200 tokens, 4% less time for the
/// whole run (median of 6 alternated pairs).
fn attend_one(q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, nh, hd) = q.dims4()?;
    let nkv = k.dim(2)?;
    let scale = 1.0 / (hd as f64).sqrt();
    // Query head h reads key/value head h / (nh / nkv): rows of the same group are adjacent.
    let q = q.reshape((nkv, nh / nkv, hd))?;
    // `[kv_heads, positions, head_dim]`: strided views, rows `kv_heads * head_dim` apart.
    let k = k.squeeze(0)?.transpose(0, 1)?;
    let v = v.squeeze(0)?.transpose(0, 1)?;
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(&v)?.reshape((1, nh, 1, hd))
}

/// `[t, start + t]`: 0 where a position may attend, −∞ after it; none for one token.
fn causal_mask(t: usize, start: usize, device: &Device) -> candle_core::Result<Option<Tensor>> {
    if t == 1 {
        return Ok(None);
    }
    let total = start + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > start + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (t, total), device).map(Some)
}

/// Each key/value head repeated for the query heads that share it (grouped-query attention).
fn repeat_kv(x: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, nkv, t, hd) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((b, nkv, n, t, hd))?
        .reshape((b, nkv * n, t, hd))
}

/// The index of the largest value of a `[vocab]` f32 tensor.
pub fn argmax(logits: &Tensor) -> Result<u32, EngineError> {
    logits
        .argmax(D::Minus1)
        .and_then(|t| t.to_scalar::<u32>())
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest absolute difference between two tensors of one shape, in f32.
    fn largest_gap(a: &Tensor, b: &Tensor) -> f32 {
        let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        (f32(a) - f32(b))
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
            .unwrap()
    }

    /// A dense layer's one-row product split over the cores gives the plain matmul's values,
    /// in f32 and f16, for widths that split evenly, unevenly and not at all.
    #[test]
    fn the_split_matrix_vector_product_matches_the_plain_one() {
        let cpu = Device::Cpu;
        for (n, dtype) in [(1000, DType::F32), (1024, DType::F16), (40, DType::F32)] {
            let x = Tensor::randn(0f32, 1.0, (1, 1, 96), &cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, 96), &cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let split = gemv_on_every_core(&x, &w).unwrap();
            let plain = x.broadcast_matmul(&w.t().unwrap()).unwrap();
            assert_eq!(split.dims(), &[1, 1, n]);
            let gap = largest_gap(&split, &plain);
            // The same kernel over the same inputs; the bound only allows a SIMD tail to sum
            // in another order (values are about 10, one f16 step there is 0.008).
            let bound = if dtype == DType::F16 { 0.008 } else { 1e-4 };
            assert!(gap <= bound, "{n} rows of {dtype:?}: they differ by {gap}");
        }
    }

    /// One token's attention over strided views of the cache (what the CPU decodes with)
    /// agrees with the matmul form on copies: grouped heads, keys and values narrowed out of a
    /// longer buffer as the KV cache gives them, at several depths.
    #[test]
    fn one_token_attention_on_cache_views_matches_the_matmul_form() {
        let cpu = Device::Cpu;
        for positions in [1, 2, 9, 40] {
            let q = Tensor::randn(0f32, 1.0, (1, 1, 6, 16), &cpu).unwrap();
            let k = Tensor::randn(0f32, 1.0, (1, 64, 2, 16), &cpu).unwrap();
            let v = Tensor::randn(0f32, 1.0, (1, 64, 2, 16), &cpu).unwrap();
            let (k, v) = (
                k.narrow(1, 0, positions).unwrap(),
                v.narrow(1, 0, positions).unwrap(),
            );
            let one = attend_one(&q, &k, &v).unwrap();
            let matmul = attend(&q, &k, &v, positions - 1).unwrap();
            assert_eq!(one.dims(), &[1, 6, 1, 16]);
            assert_eq!(one.dims(), matmul.dims());
            let gap = largest_gap(&one, &matmul);
            assert!(gap < 1e-5, "{positions} positions: they differ by {gap}");
        }
    }
}
