//! Reads what a checkpoint is from its `config.json` and safetensors *headers* only: tensor
//! names, dtypes and shapes, hence the exact parameter count, without touching the weights.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use safetensors::tensor::Metadata;
use safetensors::Dtype;
use serde_json::Value;

use super::EngineError;
use crate::store::StoredFile;

/// Largest header we accept (the safetensors crate's own limit).
const MAX_HEADER: u64 = 100_000_000;
/// Largest `config.json` read (real ones are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest `model.safetensors.index.json` read (the largest models' are well under 1 MiB).
pub const MAX_INDEX_BYTES: u64 = 16 << 20;

/// Reads a small JSON file of a checkpoint: a regular file (following links, as the Hub cache's
/// snapshots are links), at most `limit` bytes, so a FIFO, a device or a huge file named
/// `config.json` cannot stall or exhaust the server.
fn read_small(path: &Path, limit: u64) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read ({e})"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() > limit {
        return Err(format!(
            "is {} bytes, over the limit of {limit}",
            meta.len()
        ));
    }
    let mut text = String::new();
    File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot be read ({e})"))?;
    if text.len() as u64 > limit {
        return Err(format!("is over the limit of {limit} bytes"));
    }
    Ok(text)
}

/// Files besides the weights that loading and tokenizing need.
pub const SIDE_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "model.safetensors.index.json",
];

/// One tensor as its header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorMeta {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// What a checkpoint folder holds.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    pub config: Value,
    pub architecture: Option<String>,
    pub tensors: Vec<TensorMeta>,
    /// Every file the model uses, relative to the folder, with sizes.
    pub files: Vec<StoredFile>,
    /// The safetensors files, in order.
    pub weight_files: Vec<PathBuf>,
    pub parameter_count: u64,
}

impl CheckpointInfo {
    pub fn disk_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The first architecture named in a config, e.g. `LlamaForCausalLM`.
pub fn architecture_of(config: &Value) -> Option<String> {
    config
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Parses a safetensors JSON header (the bytes after the 8-byte length), checking that the
/// offsets are contiguous and that each tensor's byte range matches its dtype and shape.
pub fn parse_header(header: &[u8]) -> Result<(Vec<TensorMeta>, u64), String> {
    let metadata: Metadata = serde_json::from_slice(header)
        .map_err(|e| format!("the safetensors header is not valid: {e}"))?;
    let mut tensors = Vec::new();
    for (name, info) in metadata.tensors() {
        let numel: u128 = info.shape.iter().map(|&d| d as u128).product();
        let bits = numel * info.dtype.bitsize() as u128;
        let expected = bits.div_ceil(8);
        let (start, end) = info.data_offsets;
        if (end - start) as u128 != expected {
            return Err(format!(
                "tensor '{name}' claims {} bytes but its shape {:?} of {:?} needs {expected}",
                end - start,
                info.shape,
                info.dtype
            ));
        }
        tensors.push(TensorMeta {
            name,
            dtype: info.dtype,
            shape: info.shape.clone(),
        });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((tensors, metadata.data_len() as u64))
}

/// Reads the header of one safetensors file and checks it against the file's size.
pub fn read_header(path: &Path) -> Result<Vec<TensorMeta>, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| "the file is shorter than a safetensors header".to_string())?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER || n + 8 > size {
        return Err(format!(
            "the header length {n} does not fit a file of {size} bytes"
        ));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| format!("cannot read the header: {e}"))?;
    let (tensors, data_len) = parse_header(&header)?;
    if 8 + n + data_len > size {
        return Err(format!(
            "the header describes {data_len} bytes of data but the file holds only {}",
            size - 8 - n
        ));
    }
    Ok(tensors)
}

/// A file name taken from a checkpoint (an index's shard list) that must stay inside the folder.
fn safe_relative(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Inspects a model folder: `config.json` and safetensors weights (one file, or shards listed
/// by `model.safetensors.index.json`). Reads headers only.
pub fn inspect_folder(folder: &Path) -> Result<CheckpointInfo, EngineError> {
    let shown = folder.display().to_string();
    let invalid = |reason: String| EngineError::InvalidFolder {
        path: shown.clone(),
        reason,
    };
    let meta = std::fs::metadata(folder).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => invalid("the folder does not exist".into()),
        std::io::ErrorKind::PermissionDenied => invalid("the server may not read it".into()),
        _ => invalid(format!("it cannot be read ({e})")),
    })?;
    if !meta.is_dir() {
        return Err(invalid("it is a file, not a folder".into()));
    }
    let config_path = folder.join("config.json");
    if !config_path.is_file() {
        return Err(invalid("it has no config.json".into()));
    }
    let config_text = read_small(&config_path, MAX_CONFIG_BYTES)
        .map_err(|why| invalid(format!("config.json {why}")))?;
    let config: Value = serde_json::from_str(&config_text)
        .map_err(|e| invalid(format!("config.json is not valid JSON ({e})")))?;
    if !config.is_object() {
        return Err(invalid("config.json is not a JSON object".into()));
    }

    let index_path = folder.join("model.safetensors.index.json");
    let mut weight_names: Vec<String> = Vec::new();
    let mut index_map: Option<serde_json::Map<String, Value>> = None;
    if index_path.is_file() {
        let text = read_small(&index_path, MAX_INDEX_BYTES)
            .map_err(|why| invalid(format!("model.safetensors.index.json {why}")))?;
        let index: Value = serde_json::from_str(&text).map_err(|e| {
            invalid(format!(
                "model.safetensors.index.json is not valid JSON ({e})"
            ))
        })?;
        let map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid("model.safetensors.index.json has no weight_map".into()))?
            .clone();
        let mut shards = BTreeSet::new();
        for shard in map.values() {
            let shard = shard.as_str().ok_or_else(|| {
                invalid("the weight_map names a shard that is not a string".into())
            })?;
            if !safe_relative(shard) {
                return Err(invalid(format!(
                    "the weight_map names a shard outside the folder: '{shard}'"
                )));
            }
            shards.insert(shard.to_string());
        }
        weight_names.extend(shards);
        index_map = Some(map);
    } else if folder.join("model.safetensors").is_file() {
        weight_names.push("model.safetensors".into());
    } else {
        let entries =
            std::fs::read_dir(folder).map_err(|e| invalid(format!("it cannot be listed ({e})")))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".safetensors") && entry.path().is_file() {
                weight_names.push(name);
            }
        }
        weight_names.sort();
    }
    if weight_names.is_empty() {
        return Err(invalid("it has no safetensors weights (model.safetensors or shards with model.safetensors.index.json)".into()));
    }

    let mut tensors = Vec::new();
    let mut weight_files = Vec::new();
    let mut files = Vec::new();
    for name in &weight_names {
        let path = folder.join(name);
        let meta = std::fs::metadata(&path)
            .map_err(|_| invalid(format!("the weights file '{name}' is missing")))?;
        // Opening a FIFO or a device named by an index would block or read without end.
        if !meta.is_file() {
            return Err(invalid(format!(
                "the weights file '{name}' is not a regular file"
            )));
        }
        let size = meta.len();
        let mut shard_tensors = read_header(&path)
            .map_err(|reason| invalid(format!("'{name}' is corrupt: {reason}")))?;
        if let Some(map) = &index_map {
            for t in &shard_tensors {
                if map.get(&t.name).and_then(Value::as_str) != Some(name.as_str()) {
                    return Err(invalid(format!(
                        "'{name}' holds tensor '{}' which the index does not place there",
                        t.name
                    )));
                }
            }
        }
        tensors.append(&mut shard_tensors);
        weight_files.push(path);
        files.push(StoredFile {
            path: name.clone(),
            size,
        });
    }
    if let Some(map) = &index_map {
        if map.len() != tensors.len() {
            return Err(invalid(format!(
                "the index lists {} tensors but the shards hold {}",
                map.len(),
                tensors.len()
            )));
        }
    }
    for side in SIDE_FILES {
        let path = folder.join(side);
        if let Ok(m) = std::fs::metadata(&path) {
            if m.is_file() {
                files.push(StoredFile {
                    path: side.to_string(),
                    size: m.len(),
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let parameter_count = tensors.iter().map(TensorMeta::numel).sum();
    Ok(CheckpointInfo {
        architecture: architecture_of(&config),
        config,
        tensors,
        files,
        weight_files,
        parameter_count,
    })
}
