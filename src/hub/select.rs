//! Which of a repo's files loading needs, and the checks every file name from the Hub passes.
//!
//! Only the root's config, generation config, tokenizer files (the engine's
//! [`SIDE_FILES`](crate::engine::inspect::SIDE_FILES)) and safetensors weights (the shards the
//! index names, else `model.safetensors`, else every root `*.safetensors`) are fetched: never
//! `.bin`/`.pt`/`.onnx`/`.msgpack`/`.h5`/`.gguf` duplicates, images or other folders.

use std::collections::BTreeSet;

use serde_json::Value;

use super::client::Sibling;
use super::HubError;
use crate::engine::inspect::SIDE_FILES;

/// The index of a sharded checkpoint.
pub const INDEX: &str = "model.safetensors.index.json";
/// Longest file name accepted from the Hub.
const MAX_NAME: usize = 1024;

/// A file name from the Hub may only be a relative path of plain segments: no absolute path,
/// no `..` or `.`, no backslash, no empty segment, no control character.
pub fn check_name(name: &str) -> Result<(), HubError> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME
        || name.starts_with('/')
        || name.contains('\\')
        || name.chars().any(char::is_control)
        || name
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == ".." || seg.contains(':'));
    if bad {
        Err(HubError::UnsafePath(name.to_string()))
    } else {
        Ok(())
    }
}

/// True when the repo is sharded and the index must be read to pick the shards.
pub fn has_index(siblings: &[Sibling]) -> bool {
    siblings.iter().any(|s| s.rfilename == INDEX)
}

/// A config that needs the repo's own Python code (`auto_map`) cannot be loaded.
pub fn check_config(repo: &str, config: &Value) -> Result<(), HubError> {
    if config.get("auto_map").is_some_and(|m| !m.is_null()) {
        return Err(remote_code(repo));
    }
    Ok(())
}

/// The refusal of a model that needs remote code, with the reason.
pub fn remote_code(repo: &str) -> HubError {
    HubError::Unsupported(format!(
        "'{repo}' needs custom Python code from the repository (its config has auto_map); \
         miLLM only runs built-in architectures and never executes code from the Hub."
    ))
}

/// Picks the files to download, in name order. Every sibling's name is checked first: a repo
/// listing a name that could land outside the cache is refused whole.
pub fn select(
    repo: &str,
    siblings: &[Sibling],
    index: Option<&Value>,
) -> Result<Vec<String>, HubError> {
    for s in siblings {
        check_name(&s.rfilename)?;
    }
    let root: BTreeSet<&str> = siblings
        .iter()
        .map(|s| s.rfilename.as_str())
        .filter(|n| !n.contains('/'))
        .collect();
    let mut weights: BTreeSet<String> = BTreeSet::new();
    if let Some(index) = index.filter(|_| root.contains(INDEX)) {
        let map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                HubError::Unsupported(format!("'{repo}' has a {INDEX} without a weight_map."))
            })?;
        for shard in map.values() {
            let shard = shard.as_str().unwrap_or_default();
            check_name(shard)?;
            if !root.contains(shard) {
                return Err(HubError::Unsupported(format!(
                    "'{repo}': {INDEX} names the shard '{shard}', which the repository does not have at its root."
                )));
            }
            weights.insert(shard.to_string());
        }
    } else if root.contains("model.safetensors") {
        weights.insert("model.safetensors".into());
    } else {
        weights.extend(
            root.iter()
                .filter(|n| n.ends_with(".safetensors"))
                .map(|n| n.to_string()),
        );
    }
    if weights.is_empty() {
        return Err(HubError::Unsupported(format!(
            "'{repo}' has no safetensors weights at its root; miLLM loads only safetensors \
             (not .bin, .pt, .gguf or other formats)."
        )));
    }
    let mut files: BTreeSet<String> = weights;
    for side in SIDE_FILES {
        if root.contains(side) && (*side != INDEX || index.is_some()) {
            files.insert(side.to_string());
        }
    }
    Ok(files.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sib(name: &str) -> Sibling {
        Sibling {
            rfilename: name.into(),
            size: Some(1),
            lfs: None,
        }
    }

    fn sibs(names: &[&str]) -> Vec<Sibling> {
        names.iter().map(|n| sib(n)).collect()
    }

    #[test]
    fn only_what_loading_needs_is_selected() {
        let s = sibs(&[
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "model.onnx",
            "flax_model.msgpack",
            "tf_model.h5",
            "model.gguf",
            "README.md",
            "logo.png",
            "onnx/model.safetensors",
            "original/consolidated.safetensors",
        ]);
        assert_eq!(
            select("o/n", &s, None).unwrap(),
            vec![
                "config.json",
                "generation_config.json",
                "model.safetensors",
                "tokenizer.json",
                "tokenizer_config.json"
            ]
        );
    }

    #[test]
    fn shards_come_from_the_index() {
        let s = sibs(&[
            "config.json",
            INDEX,
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "consolidated.safetensors",
        ]);
        let index = json!({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}});
        let files = select("o/n", &s, Some(&index)).unwrap();
        assert_eq!(
            files,
            vec![
                "config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                INDEX
            ]
        );
        let missing = json!({"weight_map": {"a": "model-00003-of-00003.safetensors"}});
        assert!(matches!(
            select("o/n", &s, Some(&missing)),
            Err(HubError::Unsupported(_))
        ));
    }

    #[test]
    fn repos_without_safetensors_are_unsupported() {
        let s = sibs(&["config.json", "pytorch_model.bin", "model.gguf"]);
        let err = select("o/n", &s, None).unwrap_err();
        assert!(
            matches!(&err, HubError::Unsupported(m) if m.contains("safetensors")),
            "{err}"
        );
    }

    #[test]
    fn traversal_and_absolute_names_are_refused() {
        for bad in [
            "../evil.safetensors",
            "/etc/passwd",
            "a/../../b",
            "a\\b",
            "",
            "a//b",
            "./x",
            "C:x",
            "a\nb",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for ok in ["model.safetensors", "onnx/model.onnx", "a.b-c_d"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        let s = sibs(&["config.json", "model.safetensors", "../evil.safetensors"]);
        assert!(matches!(
            select("o/n", &s, None),
            Err(HubError::UnsafePath(_))
        ));
    }

    #[test]
    fn remote_code_is_refused_with_a_reason() {
        let err = check_config("o/n", &json!({"auto_map": {"AutoModel": "x.Y"}})).unwrap_err();
        assert!(err.to_string().contains("auto_map"));
        assert!(check_config("o/n", &json!({"architectures": ["LlamaForCausalLM"]})).is_ok());
    }
}
