//! What the forward pass needs from a checkpoint's `config.json`, for the Llama family in
//! Hugging Face naming (Llama 1/2/3, SmolLM, TinyLlama, Mistral, Qwen2/2.5, Qwen3), and which
//! architectures can generate at all.

use serde::Deserialize;

use crate::engine::EngineError;

/// The architectures (`config.json` `architectures[0]`) the forward pass runs.
pub const SUPPORTED_ARCHITECTURES: [&str; 4] = [
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
];

/// True when the server can generate text with `architecture`.
pub fn supports_inference(architecture: Option<&str>) -> bool {
    architecture.is_some_and(|a| SUPPORTED_ARCHITECTURES.contains(&a))
}

/// Bytes of one generation's KV cache over the context the server allows (f32 keys and values
/// of every layer), for a `config.json` whose architecture generates; 0 for one that cannot.
pub fn kv_cache_bytes(config: Option<&serde_json::Value>, max_context: usize) -> u64 {
    let Some(cfg) = config.and_then(|c| serde_json::from_value::<LlamaConfig>(c.clone()).ok())
    else {
        return 0;
    };
    if !supports_inference(cfg.architectures.first().map(String::as_str))
        || cfg.num_attention_heads == 0
    {
        return 0;
    }
    let context = cfg.max_position_embeddings.min(max_context) as u64;
    cfg.num_hidden_layers as u64 * 2 * cfg.kv_heads() as u64 * cfg.head_dim() as u64 * context * 4
}

/// `rope_scaling` as transformers writes it; only `llama3` (and none) change the frequencies.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: String,
    #[serde(default = "one")]
    pub factor: f64,
    #[serde(default = "one")]
    pub low_freq_factor: f64,
    #[serde(default = "four")]
    pub high_freq_factor: f64,
    #[serde(default = "llama3_original_context")]
    pub original_max_position_embeddings: usize,
}

fn one() -> f64 {
    1.0
}
fn four() -> f64 {
    4.0
}
fn llama3_original_context() -> usize {
    8192
}

/// The shape of a Llama-family model.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LlamaConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Explicit in Qwen3 (and may differ from hidden/heads); else hidden/heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default = "default_context")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub vocab_size: usize,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_context() -> usize {
    2048
}

impl LlamaConfig {
    /// Reads `config.json`'s text, checking that its architecture can generate.
    pub fn parse(text: &str) -> Result<Self, EngineError> {
        let cfg: LlamaConfig = serde_json::from_str(text)
            .map_err(|e| EngineError::BadCheckpoint(format!("config.json: {e}")))?;
        let arch = cfg.architectures.first().map(String::as_str);
        if !supports_inference(arch) {
            return Err(EngineError::BadCheckpoint(format!(
                "the architecture {} cannot generate here (supported: {})",
                arch.unwrap_or("(none)"),
                SUPPORTED_ARCHITECTURES.join(", ")
            )));
        }
        if let Some(s) = &cfg.rope_scaling {
            if !matches!(s.rope_type.as_str(), "llama3" | "default") {
                return Err(EngineError::BadCheckpoint(format!(
                    "rope_scaling of type '{}' is not supported",
                    s.rope_type
                )));
            }
        }
        if cfg.num_attention_heads == 0
            || cfg.kv_heads() == 0
            || cfg.num_attention_heads % cfg.kv_heads() != 0
        {
            return Err(EngineError::BadCheckpoint(
                "config.json: the attention heads are not a multiple of the key/value heads".into(),
            ));
        }
        if cfg.head_dim() % 2 != 0 {
            return Err(EngineError::BadCheckpoint(
                "config.json: the head width must be even for rotary embeddings".into(),
            ));
        }
        Ok(cfg)
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The rotary inverse frequencies, one per pair of a head's dimensions, with `llama3`
    /// scaling applied as transformers does (`_compute_llama3_parameters`).
    pub fn inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim();
        let base: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64))
            .collect();
        let Some(s) = self
            .rope_scaling
            .as_ref()
            .filter(|s| s.rope_type == "llama3")
        else {
            return base;
        };
        let old = s.original_max_position_embeddings as f64;
        let low_wavelen = old / s.low_freq_factor;
        let high_wavelen = old / s.high_freq_factor;
        base.into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / s.factor
                } else {
                    let smooth = (old / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_llama_family_can_generate() {
        assert!(supports_inference(Some("LlamaForCausalLM")));
        assert!(supports_inference(Some("Qwen3ForCausalLM")));
        assert!(!supports_inference(Some("GPT2LMHeadModel")));
        assert!(!supports_inference(None));
        let err = LlamaConfig::parse(
            r#"{"architectures":["BertModel"],"hidden_size":8,"intermediate_size":8,
                "num_hidden_layers":1,"num_attention_heads":2,"vocab_size":10}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("BertModel"), "{err}");
    }

    #[test]
    fn the_kv_cache_counts_every_layers_keys_and_values_over_the_allowed_context() {
        let config: serde_json::Value = serde_json::json!({"architectures": ["LlamaForCausalLM"],
            "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
            "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
            "max_position_embeddings": 8192});
        // SmolLM2-135M: 30 layers × (K and V) × 3 heads × 64 wide × 4,096 tokens × 4 bytes.
        assert_eq!(
            kv_cache_bytes(Some(&config), 4096),
            30 * 2 * 3 * 64 * 4096 * 4
        );
        assert_eq!(
            kv_cache_bytes(Some(&config), 100_000),
            30 * 2 * 3 * 64 * 8192 * 4
        );
        let mut other = config.clone();
        other["architectures"] = serde_json::json!(["BertModel"]);
        assert_eq!(
            kv_cache_bytes(Some(&other), 4096),
            0,
            "cannot generate, no cache"
        );
        assert_eq!(kv_cache_bytes(None, 4096), 0);
    }

    #[test]
    fn llama3_scaling_keeps_high_frequencies_and_divides_low_ones() {
        let cfg = LlamaConfig::parse(
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":8,
                "num_hidden_layers":1,"num_attention_heads":1,"vocab_size":10,"rope_theta":500000.0,
                "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,
                "high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#,
        )
        .unwrap();
        let scaled = cfg.inv_freq();
        let plain = LlamaConfig {
            rope_scaling: None,
            ..cfg.clone()
        }
        .inv_freq();
        assert_eq!(scaled[0], plain[0], "the highest frequency is kept");
        let last = scaled.len() - 1;
        assert!(
            (scaled[last] - plain[last] / 8.0).abs() < 1e-18,
            "the lowest is divided"
        );
    }
}
