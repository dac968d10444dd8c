//! `POST /api/models/preview`: what a Hub repo is and what each quantization costs, without
//! downloading it.

use serde_json::Value;

use crate::domain::{human_params, mib_ceil, Quantization};
use crate::engine::{estimate, TensorMeta};
use crate::error::AppResult;
use crate::hub::{Access, RemoteModel};
use crate::store::StoredFile;

use super::downloads::{parse_repo, parse_revision};
use super::Services;

/// Disk and memory of one quantization, in MiB rounded up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviewSize {
    pub quantization: Quantization,
    pub disk_mb: u64,
    pub memory_mb: u64,
}

/// A Hub repo as a download would see it.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The repo's name part.
    pub name: String,
    pub params: Option<String>,
    pub architecture: Option<String>,
    pub is_gated: bool,
    pub requires_trust_remote_code: bool,
    /// One per quantization, in [`Quantization::ALL`] order.
    pub sizes: Vec<PreviewSize>,
    pub downloads: Option<u64>,
    pub likes: Option<u64>,
    pub tags: Vec<String>,
    pub pipeline_tag: Option<String>,
    pub model_type: Option<String>,
    pub architectures: Vec<String>,
    pub license: Option<String>,
    pub language: Option<Vec<String>>,
    /// The files a download fetches.
    pub files: Vec<StoredFile>,
    /// For a gated repo and a given token: whether the token can read it.
    pub has_access: Option<bool>,
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
        let model = self
            .inner
            .hub
            .inspect(&repo, &revision, token.as_ref(), Access::Optional)
            .await?;
        let disk_mb = mib_ceil(model.disk_bytes());
        let gpu = self.inner.devices.uses_gpu();
        let tensors = model
            .tensors
            .clone()
            .unwrap_or_else(|| synthetic_tensors(&model));
        let sizes = Quantization::ALL
            .iter()
            .map(|&q| PreviewSize {
                quantization: q,
                disk_mb,
                memory_mb: estimate(&tensors, q, gpu).total_mb(),
            })
            .collect();
        let card = model.info.card_data.clone().unwrap_or_default();
        let config = model.config.clone().unwrap_or_default();
        Ok(Preview {
            name: repo.name().to_string(),
            params: model.parameter_count.map(human_params),
            architecture: model.architecture(),
            is_gated: model.info.is_gated(),
            requires_trust_remote_code: model.requires_remote_code,
            sizes,
            downloads: model.info.downloads,
            likes: model.info.likes,
            tags: model.info.tags.clone(),
            pipeline_tag: model.info.pipeline_tag.clone(),
            model_type: config
                .get("model_type")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            architectures: strings(config.get("architectures")).unwrap_or_default(),
            license: strings(card.get("license")).and_then(|l| l.into_iter().next()),
            language: strings(card.get("language")),
            files: model.files.clone(),
            has_access: model.has_access,
        })
    }
}

/// A string or a list of strings, as model cards and configs write them.
fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
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
