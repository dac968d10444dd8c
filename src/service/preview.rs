//! `POST /api/models/preview`: what a Hub repo is and what each quantization costs, without
//! downloading it.

use crate::domain::{mib_ceil, Quantization, RepoId};
use crate::engine::TensorMeta;
use crate::error::AppResult;
use crate::hub::{Access, RemoteModel};

use super::downloads::{parse_repo, parse_revision};
use super::Services;

/// Disk and memory of one quantization, in MiB rounded up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviewSize {
    pub quantization: Quantization,
    pub disk_mb: u64,
    pub memory_mb: u64,
}

/// A Hub repo as a download would see it: what the Hub says of it, and the estimates.
#[derive(Debug, Clone)]
pub struct Preview {
    pub repo: RepoId,
    /// Metadata, files, config and tensor shapes.
    pub model: RemoteModel,
    /// One per quantization, in [`Quantization::ALL`] order.
    pub sizes: Vec<PreviewSize>,
}

impl Preview {
    /// The figures of one quantization.
    pub fn size(&self, q: Quantization) -> PreviewSize {
        self.sizes
            .iter()
            .copied()
            .find(|s| s.quantization == q)
            .unwrap_or(PreviewSize {
                quantization: q,
                disk_mb: 0,
                memory_mb: 0,
            })
    }
}

impl Services {
    /// What a repo is and what each quantization costs.
    pub async fn preview(
        &self,
        repo_id: &str,
        revision: Option<&str>,
        hf_token: Option<&str>,
    ) -> AppResult<Preview> {
        let repo = parse_repo(Some(repo_id))?;
        let revision = parse_revision(revision)?;
        let token = self.token_for(hf_token);
        // Each preview costs several Hub requests: at most MAX_CONCURRENT_PREVIEWS at once,
        // the others wait their turn (bounded by REQUEST_TIMEOUT).
        let _slot = self
            .inner
            .previews
            .acquire()
            .await
            .map_err(crate::error::AppError::internal)?;
        let model = self
            .inner
            .hub
            .inspect(&repo, &revision, token.as_ref(), Access::Optional)
            .await?;
        let disk_mb = mib_ceil(model.disk_bytes());
        let tensors = model
            .tensors
            .clone()
            .unwrap_or_else(|| synthetic_tensors(&model));
        let sizes = Quantization::ALL
            .iter()
            .map(|&q| PreviewSize {
                quantization: q,
                disk_mb,
                memory_mb: self
                    .memory_estimate(&tensors, q, model.config.as_ref())
                    .total_mb(),
            })
            .collect();
        Ok(Preview { repo, model, sizes })
    }
}

/// Without access to the headers (a gated repo), the metadata's per-dtype parameter counts
/// stand in: each as one linear layer's weights, 4096 wide, so the quantized estimates assume
/// every parameter is quantizable (an upper bound on what quantization saves).
fn synthetic_tensors(model: &RemoteModel) -> Vec<TensorMeta> {
    let Some(st) = &model.info.safetensors else {
        return Vec::new();
    };
    st.parameters
        .iter()
        .filter_map(|(dtype, &count)| {
            let dtype = match dtype.as_str() {
                "F32" => safetensors::Dtype::F32,
                "F16" => safetensors::Dtype::F16,
                "BF16" => safetensors::Dtype::BF16,
                "F64" => safetensors::Dtype::F64,
                "I64" => safetensors::Dtype::I64,
                "I32" => safetensors::Dtype::I32,
                "I8" => safetensors::Dtype::I8,
                "U8" => safetensors::Dtype::U8,
                _ => return None,
            };
            let width = 4096usize;
            let rows = (count as usize).div_ceil(width);
            Some(TensorMeta {
                name: format!("hub.{dtype:?}.weight"),
                dtype,
                shape: vec![rows, width],
            })
        })
        .collect()
}
