//! Newtypes parsed once at the edge: model ids, Hub repo ids, quantizations, statuses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::AppError;

/// A model's id in the registry: an integer ≥ 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ModelId(pub i64);

impl ModelId {
    /// Parses a path segment; anything but an integer from 1 to 2^63-1 is a validation error.
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        match raw.parse::<i64>() {
            Ok(id) if id >= 1 => Ok(ModelId(id)),
            Ok(_) => Err(AppError::validation_field(
                "id",
                format!("Model id must be a positive integer, got '{raw}'."),
            )),
            Err(_) => Err(AppError::validation_field(
                "id",
                format!(
                    "Model id must be a positive integer no larger than {}, got '{}'.",
                    i64::MAX,
                    truncate(raw, 40)
                ),
            )),
        }
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// A Hub repository id, `owner/name`, as the Hub allows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoId {
    owner: String,
    name: String,
}

impl RepoId {
    /// Each part: 1–96 ASCII letters, digits, `-`, `_`, `.`; not starting or ending with `-` or
    /// `.`; no `--` or `..` inside (so cache folder names `models--owner--name` stay unambiguous).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (owner, name) = raw
            .split_once('/')
            .ok_or_else(|| format!("'{}' is not of the form owner/name", truncate(raw, 200)))?;
        for (label, part) in [("owner", owner), ("name", name)] {
            if part.is_empty() || part.len() > 96 {
                return Err(format!("the {label} part must be 1 to 96 characters"));
            }
            if !part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(format!(
                    "the {label} part '{}' may only hold ASCII letters, digits, '-', '_' and '.'",
                    truncate(part, 100)
                ));
            }
            if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
                return Err(format!(
                    "the {label} part '{part}' must not start or end with '-' or '.'"
                ));
            }
            if part.contains("--") || part.contains("..") {
                return Err(format!(
                    "the {label} part '{part}' must not contain '--' or '..'"
                ));
            }
        }
        Ok(RepoId {
            owner: owner.to_string(),
            name: name.to_string(),
        })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The cache folder name: `models--owner--name`.
    pub fn cache_folder(&self) -> String {
        format!("models--{}--{}", self.owner, self.name)
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// The format weights take in memory, chosen at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Quantization {
    FP32,
    FP16,
    Q8,
    Q4,
    Q2,
}

impl Quantization {
    pub const ALL: [Quantization; 5] = [
        Quantization::FP32,
        Quantization::FP16,
        Quantization::Q8,
        Quantization::Q4,
        Quantization::Q2,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::FP32 => "FP32",
            Quantization::FP16 => "FP16",
            Quantization::Q8 => "Q8",
            Quantization::Q4 => "Q4",
            Quantization::Q2 => "Q2",
        }
    }
}

impl fmt::Display for Quantization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Quantization {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantization::ALL
            .into_iter()
            .find(|q| q.as_str() == s)
            .ok_or_else(|| {
                format!("unknown quantization '{s}' (expected FP32, FP16, Q8, Q4 or Q2)")
            })
    }
}

/// Where a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Huggingface,
    Local,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Huggingface => "huggingface",
            Source::Local => "local",
        }
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "huggingface" => Ok(Source::Huggingface),
            "local" => Ok(Source::Local),
            other => Err(format!("unknown source '{other}'")),
        }
    }
}

/// A model's place in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelStatus {
    Downloading,
    Ready,
    Loading,
    Loaded,
    Error,
}

impl ModelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Downloading => "downloading",
            ModelStatus::Ready => "ready",
            ModelStatus::Loading => "loading",
            ModelStatus::Loaded => "loaded",
            ModelStatus::Error => "error",
        }
    }
}

impl fmt::Display for ModelStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModelStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "downloading" => Ok(ModelStatus::Downloading),
            "ready" => Ok(ModelStatus::Ready),
            "loading" => Ok(ModelStatus::Loading),
            "loaded" => Ok(ModelStatus::Loaded),
            "error" => Ok(ModelStatus::Error),
            other => Err(format!("unknown status '{other}'")),
        }
    }
}

/// A parameter count in the human form the API uses: `135M`, `2.5B`, `7B`.
pub fn human_params(count: u64) -> String {
    let (value, unit) = match count {
        c if c >= 1_000_000_000 => (c as f64 / 1e9, "B"),
        c if c >= 1_000_000 => (c as f64 / 1e6, "M"),
        c if c >= 1_000 => (c as f64 / 1e3, "K"),
        c => return c.to_string(),
    };
    if value >= 100.0 {
        format!("{value:.0}{unit}")
    } else {
        let s = format!("{value:.1}");
        format!("{}{unit}", s.trim_end_matches(".0"))
    }
}

/// Bytes as MiB, rounded up, as every `_mb` field of the API is.
pub fn mib_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_below_one_or_beyond_i64_are_rejected() {
        assert!(ModelId::parse("0").is_err());
        assert!(ModelId::parse("-1").is_err());
        assert!(ModelId::parse("abc").is_err());
        assert!(ModelId::parse("9223372036854775808").is_err());
        assert_eq!(ModelId::parse("9223372036854775807").unwrap().0, i64::MAX);
    }

    #[test]
    fn repo_ids_follow_the_hub_rules() {
        for ok in [
            "meta-llama/Llama-3.2-1B",
            "a/b",
            "HuggingFaceTB/SmolLM2-135M",
            "x_y/z.q",
        ] {
            assert!(RepoId::parse(ok).is_ok(), "{ok}");
        }
        let long = format!("a/{}", "b".repeat(97));
        for bad in [
            "noslash",
            "/x",
            "x/",
            "a/b/c",
            "-a/b",
            "a/b.",
            "a--b/c",
            "a/b..c",
            "a/b c",
            "../x",
            long.as_str(),
        ] {
            assert!(RepoId::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            RepoId::parse("owner/name").unwrap().cache_folder(),
            "models--owner--name"
        );
    }

    #[test]
    fn params_read_like_the_original() {
        assert_eq!(human_params(134_515_008), "135M");
        assert_eq!(human_params(2_506_172_416), "2.5B");
        assert_eq!(human_params(7_000_000_000), "7B");
        assert_eq!(human_params(1_234_567), "1.2M");
        assert_eq!(human_params(999), "999");
    }

    #[test]
    fn mib_round_up() {
        assert_eq!(mib_ceil(0), 0);
        assert_eq!(mib_ceil(1), 1);
        assert_eq!(mib_ceil(1 << 20), 1);
        assert_eq!(mib_ceil((1 << 20) + 1), 2);
    }
}
