//! Devices and memory, safetensors header inspection, memory estimates, the loader (with its
//! quantization) and the runtime that owns the loaded model.

mod convert;
pub mod device;
pub mod estimate;
pub mod infer;
pub mod inspect;
pub mod loader;
pub mod runtime;

pub use device::{DeviceInfo, Devices};
pub use estimate::{estimate, Estimate, TargetFormat};
pub use inspect::{inspect_folder, parse_header, CheckpointInfo, TensorMeta};
pub use loader::{load_blocking, LoadRequest, LoadedModel, Weight};
pub use runtime::{
    Engine, EngineFacts, Lease, LoadJob, LoadTicket, LoadUpdate, LoadedFacts, LockRefusal, Refusal,
    TextSource, TextSupport, Unloaded,
};

/// Engine errors. Conversions into the API error live in `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A local folder that cannot be used as a model: missing, no config, no weights…
    #[error("{path}: {reason}")]
    InvalidFolder { path: String, reason: String },
    /// Weights that cannot be read or are laid out in a way the loader does not support.
    #[error("{0}")]
    BadCheckpoint(String),
    /// The load was cancelled (shutdown).
    #[error("the load was cancelled")]
    Cancelled,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
