//! Writes tiny Llama-architecture checkpoints: `config.json`, `generation_config.json`,
//! safetensors weights with random values (f32 or bf16, one file or shards with an index)
//! and a real byte-level BPE `tokenizer.json`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;

/// Which Hugging Face architecture a checkpoint follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `LlamaForCausalLM`: no biases, separate `lm_head`.
    Llama,
    /// `Qwen2ForCausalLM`: biases on the q/k/v projections.
    Qwen2,
    /// `Qwen3ForCausalLM`: `q_norm`/`k_norm` per head, an explicit `head_dim` that differs from
    /// hidden/heads, and tied embeddings (no `lm_head`).
    Qwen3,
}

/// How the weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    F32,
    BF16,
}

/// The shape of a Llama checkpoint to write.
#[derive(Debug, Clone)]
pub struct TinyLlama {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub dtype: WeightDtype,
    /// 1 writes `model.safetensors`; more writes shards and `model.safetensors.index.json`.
    pub shards: usize,
    pub seed: u64,
}

impl Default for TinyLlama {
    /// About 1.4 M parameters; every linear layer's rows fit the 256-wide K-quant block.
    fn default() -> Self {
        TinyLlama {
            hidden: 256,
            intermediate: 512,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 512,
            dtype: WeightDtype::F32,
            shards: 1,
            seed: 7,
        }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct WrittenModel {
    pub dir: PathBuf,
    /// Exact number of parameters in the weights.
    pub parameter_count: u64,
    /// Every file written, relative to `dir`, with its size.
    pub files: Vec<(String, u64)>,
    /// Tensor names with shapes.
    pub tensors: Vec<(String, Vec<usize>)>,
}

impl WrittenModel {
    pub fn weight_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|(n, _)| n.ends_with(".safetensors"))
            .map(|(_, s)| s)
            .sum()
    }
}

impl TinyLlama {
    pub fn bf16(mut self) -> Self {
        self.dtype = WeightDtype::BF16;
        self
    }

    pub fn sharded(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// A model of at least `bytes` of weights (for benchmarks), Llama-like proportions.
    pub fn with_weight_bytes(bytes: u64, dtype: WeightDtype) -> Self {
        let elem = match dtype {
            WeightDtype::F32 => 4,
            WeightDtype::BF16 => 2,
        };
        let hidden = 2048usize;
        let intermediate = 5632usize;
        let vocab = 32000usize;
        let per_layer = (4 * hidden * hidden + 3 * hidden * intermediate) as u64 * elem;
        let fixed = (2 * vocab * hidden) as u64 * elem;
        // Enough layers that the weights reach at least `bytes`.
        let layers = bytes.saturating_sub(fixed).div_ceil(per_layer).max(1) as usize;
        TinyLlama {
            hidden,
            intermediate,
            layers,
            heads: 16,
            kv_heads: 16,
            vocab,
            dtype,
            shards: 1,
            seed: 11,
        }
    }

    fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// The head width of `arch`: Qwen3 checkpoints state one that is not hidden/heads.
    fn head_dim_of(&self, arch: Arch) -> usize {
        match arch {
            Arch::Qwen3 => self.head_dim() * 2,
            Arch::Llama | Arch::Qwen2 => self.head_dim(),
        }
    }

    /// Tensor names and shapes, in a stable order.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.tensor_shapes_of(Arch::Llama)
    }

    /// Tensor names and shapes of `arch`, in a stable order.
    pub fn tensor_shapes_of(&self, arch: Arch) -> Vec<(String, Vec<usize>)> {
        let h = self.hidden;
        let hd = self.head_dim_of(arch);
        let q = self.heads * hd;
        let kv = self.kv_heads * hd;
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab, h])];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            out.push((format!("{p}.input_layernorm.weight"), vec![h]));
            out.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
            out.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
            out.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
            if arch == Arch::Qwen2 {
                out.push((format!("{p}.self_attn.q_proj.bias"), vec![q]));
                out.push((format!("{p}.self_attn.k_proj.bias"), vec![kv]));
                out.push((format!("{p}.self_attn.v_proj.bias"), vec![kv]));
            }
            if arch == Arch::Qwen3 {
                out.push((format!("{p}.self_attn.q_norm.weight"), vec![hd]));
                out.push((format!("{p}.self_attn.k_norm.weight"), vec![hd]));
            }
            out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
            out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
            out.push((
                format!("{p}.mlp.gate_proj.weight"),
                vec![self.intermediate, h],
            ));
            out.push((
                format!("{p}.mlp.up_proj.weight"),
                vec![self.intermediate, h],
            ));
            out.push((
                format!("{p}.mlp.down_proj.weight"),
                vec![h, self.intermediate],
            ));
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if arch != Arch::Qwen3 {
            out.push(("lm_head.weight".to_string(), vec![self.vocab, h]));
        }
        out
    }

    /// The `config.json` a transformers Llama would have.
    pub fn config(&self) -> serde_json::Value {
        self.config_of(Arch::Llama)
    }

    /// The `config.json` of `arch`.
    pub fn config_of(&self, arch: Arch) -> serde_json::Value {
        let mut config = self.llama_config();
        let (architecture, model_type) = match arch {
            Arch::Llama => return config,
            Arch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
            Arch::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
        };
        config["architectures"] = json!([architecture]);
        config["model_type"] = json!(model_type);
        config["rope_theta"] = json!(1000000.0);
        config["rms_norm_eps"] = json!(1e-6);
        if arch == Arch::Qwen3 {
            config["head_dim"] = json!(self.head_dim_of(arch));
            config["tie_word_embeddings"] = json!(true);
        }
        config
    }

    fn llama_config(&self) -> serde_json::Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": false,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": match self.dtype { WeightDtype::F32 => "float32", WeightDtype::BF16 => "bfloat16" },
            "transformers_version": "4.46.0"
        })
    }

    /// Writes the checkpoint into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> io::Result<WrittenModel> {
        self.write_inner(dir, Arch::Llama, false)
    }

    /// Writes a checkpoint of `arch` whose norm weights are random too (around 1), so that a
    /// numeric reference notices a norm applied wrongly.
    pub fn write_as(&self, dir: &Path, arch: Arch) -> io::Result<WrittenModel> {
        self.write_inner(dir, arch, true)
    }

    fn write_inner(&self, dir: &Path, arch: Arch, random_norms: bool) -> io::Result<WrittenModel> {
        std::fs::create_dir_all(dir)?;
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let shapes = self.tensor_shapes_of(arch);
        let (dtype, elem) = match self.dtype {
            WeightDtype::F32 => (Dtype::F32, 4),
            WeightDtype::BF16 => (Dtype::BF16, 2),
        };
        let shards = self.shards.max(1).min(shapes.len());
        let per_shard = shapes.len().div_ceil(shards);
        let mut files = Vec::new();
        let mut weight_map = BTreeMap::new();
        let mut parameter_count = 0u64;
        for (i, chunk) in shapes.chunks(per_shard).enumerate() {
            let file_name = if shards == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{:05}.safetensors", i + 1, shards)
            };
            let mut buffers = Vec::with_capacity(chunk.len());
            for (name, shape) in chunk {
                let numel: usize = shape.iter().product();
                parameter_count += numel as u64;
                let is_norm = name.contains("norm");
                let mut data = Vec::with_capacity(numel * elem);
                for _ in 0..numel {
                    let v: f32 = if is_norm && random_norms {
                        rng.gen_range(0.5f32..1.5)
                    } else if is_norm {
                        1.0
                    } else {
                        rng.gen_range(-0.05f32..0.05)
                    };
                    match self.dtype {
                        WeightDtype::F32 => data.extend_from_slice(&v.to_le_bytes()),
                        WeightDtype::BF16 => {
                            data.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes())
                        }
                    }
                }
                buffers.push((name.clone(), shape.clone(), data));
                weight_map.insert(name.clone(), file_name.clone());
            }
            let views: Vec<(String, TensorView<'_>)> = buffers
                .iter()
                .map(|(n, s, d)| {
                    let view = TensorView::new(dtype, s.clone(), d)
                        .expect("shape and data agree by construction");
                    (n.clone(), view)
                })
                .collect();
            let mut meta = std::collections::HashMap::new();
            meta.insert("format".to_string(), "pt".to_string());
            let path = dir.join(&file_name);
            safetensors::serialize_to_file(views, Some(meta), &path)
                .map_err(|e| io::Error::other(e.to_string()))?;
            files.push((file_name, std::fs::metadata(&path)?.len()));
        }
        let mut write_json = |name: &str, value: serde_json::Value| -> io::Result<()> {
            let text = serde_json::to_string_pretty(&value).map_err(io::Error::other)?;
            std::fs::write(dir.join(name), &text)?;
            files.push((name.to_string(), text.len() as u64));
            Ok(())
        };
        write_json("config.json", self.config_of(arch))?;
        write_json(
            "generation_config.json",
            json!({"bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.46.0"}),
        )?;
        if shards > 1 {
            let total: u64 = shapes
                .iter()
                .map(|(_, s)| s.iter().product::<usize>() as u64 * elem as u64)
                .sum();
            write_json(
                "model.safetensors.index.json",
                json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
            )?;
        }
        write_json(
            "tokenizer.json",
            crate::tokenizer::byte_level_bpe(self.vocab),
        )?;
        write_json(
            "tokenizer_config.json",
            json!({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                   "model_max_length": 2048, "tokenizer_class": "PreTrainedTokenizerFast"}),
        )?;
        files.sort();
        Ok(WrittenModel {
            dir: dir.to_path_buf(),
            parameter_count,
            files,
            tensors: shapes,
        })
    }
}
