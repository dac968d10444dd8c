//! What a Hub repo is, without downloading weights: its metadata, the files loading needs, its
//! `config.json`, and its tensor shapes from the safetensors headers, fetched with two Range
//! requests per weights file (`bytes=0-7` for the header length N, then `bytes=8-(7+N)`).

use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;

use super::client::{ErrorContext, HubClient, RepoInfo};
use super::select::{self, INDEX};
use super::HubError;
use crate::config::Secret;
use crate::domain::RepoId;
use crate::engine::inspect::architecture_of;
use crate::engine::{parse_header, TensorMeta};
use crate::store::StoredFile;

/// Largest safetensors header read (the safetensors crate's own limit).
const MAX_HEADER: u64 = 100_000_000;
/// Weights files whose headers are fetched at once.
const HEADER_CONCURRENCY: usize = 4;

/// Whether a gated repo without access is an error (a download) or a fact to report (a preview).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Required,
    Optional,
}

/// A repo at one revision, as far as it could be read.
#[derive(Debug, Clone)]
pub struct RemoteModel {
    pub info: RepoInfo,
    /// The commit the revision resolved to.
    pub commit: String,
    /// The files a download fetches, with sizes.
    pub files: Vec<StoredFile>,
    /// `config.json` when readable, else the metadata's config excerpt.
    pub config: Option<Value>,
    /// From the headers; `None` when the files could not be read (gated, no access).
    pub tensors: Option<Vec<TensorMeta>>,
    pub parameter_count: Option<u64>,
    /// For a gated repo checked with a token: whether the files could be read.
    pub has_access: Option<bool>,
    /// The config names remote Python code (`auto_map`).
    pub requires_remote_code: bool,
}

impl RemoteModel {
    pub fn architecture(&self) -> Option<String> {
        self.config.as_ref().and_then(architecture_of)
    }

    pub fn disk_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Reads what `repo` at `revision` is. With [`Access::Required`], a gated repo without access
/// is an error; with [`Access::Optional`] the file-derived fields are left empty instead.
pub async fn inspect(
    client: &HubClient,
    repo: &RepoId,
    revision: &str,
    token: Option<&Secret>,
    access: Access,
) -> Result<RemoteModel, HubError> {
    let info = client.metadata(repo, revision, token).await?;
    if info.disabled {
        return Err(HubError::Failed(format!(
            "the repository {repo} has been disabled on the Hub"
        )));
    }
    let commit = info
        .sha
        .clone()
        .ok_or_else(|| HubError::Failed(format!("the Hub gave no commit for {repo}@{revision}")))?;
    super::cache::check_commit(&commit)?;
    for s in &info.siblings {
        select::check_name(&s.rfilename)?;
    }
    let name = repo.to_string();
    let size_of = |path: &str| {
        info.siblings
            .iter()
            .find(|s| s.rfilename == path)
            .and_then(|s| s.file_size())
            .unwrap_or(0)
    };

    let files_read = read_files(client, repo, &commit, &info, token).await;
    let (index, config, tensors, has_access) = match files_read {
        Ok((index, config, tensors)) => (
            index,
            config,
            Some(tensors),
            info.is_gated().then_some(true).filter(|_| token.is_some()),
        ),
        Err(HubError::Gated { .. }) if access == Access::Optional => {
            (None, None, None, token.map(|_| false))
        }
        Err(e) => return Err(e),
    };
    let paths = match select::select(&name, &info.siblings, index.as_ref()) {
        Ok(p) => p,
        // Without access the index cannot be read: show the root safetensors at least.
        Err(e) if tensors.is_none() && !matches!(e, HubError::UnsafePath(_)) => {
            let mut p: Vec<String> = info
                .siblings
                .iter()
                .map(|s| s.rfilename.clone())
                .filter(|n| {
                    !n.contains('/')
                        && (n.ends_with(".safetensors")
                            || crate::engine::inspect::SIDE_FILES.contains(&n.as_str()))
                })
                .collect();
            if !p.iter().any(|n| n.ends_with(".safetensors")) {
                return Err(e);
            }
            p.sort();
            p
        }
        Err(e) => return Err(e),
    };
    let files = paths
        .iter()
        .map(|p| StoredFile {
            path: p.clone(),
            size: size_of(p),
        })
        .collect();
    let config = config.or_else(|| info.config.clone());
    let requires_remote_code = config
        .as_ref()
        .is_some_and(|c| select::check_config(&name, c).is_err())
        || info
            .config
            .as_ref()
            .is_some_and(|c| select::check_config(&name, c).is_err());
    let parameter_count = info
        .safetensors
        .as_ref()
        .and_then(|s| {
            s.total
                .or_else(|| (!s.parameters.is_empty()).then(|| s.parameters.values().sum()))
        })
        .or_else(|| {
            tensors
                .as_ref()
                .map(|t| t.iter().map(TensorMeta::numel).sum())
        });
    Ok(RemoteModel {
        info,
        commit,
        files,
        config,
        tensors,
        parameter_count,
        has_access,
        requires_remote_code,
    })
}

type FilesRead = (Option<Value>, Option<Value>, Vec<TensorMeta>);

/// The index, `config.json` and every weights file's header.
async fn read_files(
    client: &HubClient,
    repo: &RepoId,
    commit: &str,
    info: &RepoInfo,
    token: Option<&Secret>,
) -> Result<FilesRead, HubError> {
    let has = |p: &str| info.siblings.iter().any(|s| s.rfilename == p);
    let config = if has("config.json") {
        let bytes = client.get_small(repo, commit, "config.json", token).await?;
        Some(serde_json::from_slice::<Value>(&bytes).map_err(|e| {
            HubError::Unsupported(format!(
                "'{repo}' has a config.json that is not valid JSON ({e})."
            ))
        })?)
    } else {
        None
    };
    let index = if select::has_index(&info.siblings) {
        let bytes = client.get_small(repo, commit, INDEX, token).await?;
        Some(serde_json::from_slice::<Value>(&bytes).map_err(|e| {
            HubError::Unsupported(format!(
                "'{repo}' has a {INDEX} that is not valid JSON ({e})."
            ))
        })?)
    } else {
        None
    };
    let files = select::select(&repo.to_string(), &info.siblings, index.as_ref())?;
    let weights: Vec<String> = files
        .into_iter()
        .filter(|f| f.ends_with(".safetensors"))
        .collect();
    let tensors: Vec<Vec<TensorMeta>> = stream::iter(weights)
        .map(|path| async move { header_of(client, repo, commit, &path, token).await })
        .buffered(HEADER_CONCURRENCY)
        .try_collect()
        .await?;
    let mut all: Vec<TensorMeta> = tensors.into_iter().flatten().collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((index, config, all))
}

/// One weights file's tensors, from its header alone.
async fn header_of(
    client: &HubClient,
    repo: &RepoId,
    commit: &str,
    path: &str,
    token: Option<&Secret>,
) -> Result<Vec<TensorMeta>, HubError> {
    let head = client.head(repo, commit, path, token).await?;
    let ctx = ErrorContext::new(repo, commit, Some(path), token.is_some());
    let len = client.get_range_bytes(&head.url, 0, 7, token, &ctx).await?;
    let n = u64::from_le_bytes(len[..8].try_into().expect("exactly 8 bytes were read"));
    if n == 0 || n > MAX_HEADER || head.size.is_some_and(|size| n + 8 > size) {
        return Err(HubError::Unsupported(format!(
            "'{path}' in '{repo}' is not a valid safetensors file."
        )));
    }
    let header = client
        .get_range_bytes(&head.url, 8, 7 + n, token, &ctx)
        .await?;
    let (tensors, _) = parse_header(&header)
        .map_err(|e| HubError::Unsupported(format!("'{path}' in '{repo}': {e}.")))?;
    Ok(tensors)
}
