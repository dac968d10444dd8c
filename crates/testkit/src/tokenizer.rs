//! A real byte-level BPE `tokenizer.json` (the format of Hugging Face `tokenizers`, as GPT-2
//! and Llama 3 use it): three special tokens, the 256 byte symbols, and merges of common
//! English pairs up to the requested vocabulary size.

use serde_json::{json, Map, Value};

/// GPT-2's reversible map from bytes to printable characters.
fn byte_symbols() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut all = printable.clone();
    let mut extra = 0;
    for b in 0u32..256 {
        if !printable.contains(&b) {
            printable.push(b);
            all.push(256 + extra);
            extra += 1;
        }
    }
    let mut map = vec!['\0'; 256];
    for (b, c) in printable.iter().zip(all.iter()) {
        map[*b as usize] = char::from_u32(*c).expect("GPT-2 byte symbols are valid chars");
    }
    map
}

/// A tokenizer of at most `vocab` entries (at least the 259 base entries).
pub fn byte_level_bpe(vocab: usize) -> Value {
    let symbols = byte_symbols();
    let mut entries: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    entries.extend(symbols.iter().map(|c| c.to_string()));
    let space = symbols[b' ' as usize];
    let words = [
        "the", "and", "ing", "ion", "er", "in", "on", "at", "en", "re", "es", "or", "an", "th",
        "he", "is", "it", "to", "of", "ed", "al", "ar", "st", "le", "model", "load",
    ];
    let mut merges: Vec<String> = Vec::new();
    let mut seen: std::collections::HashSet<String> = entries.iter().cloned().collect();
    'outer: for w in words {
        for prefix in [String::new(), space.to_string()] {
            let full = format!("{prefix}{w}");
            let chars: Vec<char> = full.chars().collect();
            let mut acc = chars[0].to_string();
            for c in &chars[1..] {
                let next = format!("{acc}{c}");
                if !seen.contains(&next) {
                    if entries.len() >= vocab {
                        break 'outer;
                    }
                    merges.push(format!("{acc} {c}"));
                    entries.push(next.clone());
                    seen.insert(next.clone());
                }
                acc = next;
            }
        }
    }
    let mut vocab_map = Map::new();
    for (i, e) in entries.iter().enumerate() {
        vocab_map.insert(e.clone(), json!(i));
    }
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab_map,
            "merges": merges,
        }
    })
}
