//! Inference over the loaded weights: the model's shape from `config.json`, and the forward
//! pass of the Llama family.

pub mod config;
pub mod llama;

pub use config::{supports_inference, LlamaConfig};
pub use llama::{KvCache, Llama};
