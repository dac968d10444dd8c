//! Inference over the loaded weights: the model's shape from `config.json`, the forward pass
//! of the Llama family, the chat template, and the text side (tokenizer, sampling, the
//! generation loop).

pub mod config;
pub mod llama;
pub mod template;
pub mod text;

pub use config::{kv_cache_bytes, supports_inference, LlamaConfig};
pub use llama::{KvCache, Llama};
pub use template::ChatMessage;
pub use text::{Finish, Generated, Sampling, TextModel, Waiting};
