//! Test support for miLLM, shared by its tests, benchmarks and the browser test:
//! tiny real Llama-architecture checkpoints written with random weights and a real tokenizer,
//! and an in-process fake Hugging Face Hub with fault injection.

pub mod checkpoint;
pub mod fake_hub;
pub mod tokenizer;

pub use checkpoint::{Arch, TinyLlama, WeightDtype, WrittenModel};
pub use fake_hub::{FakeHub, FakeRepo, HubStats};
