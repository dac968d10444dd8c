//! The text side of a loaded model: its tokenizer (`tokenizer.json`), its chat template, the
//! tokens that end a turn, sampling, and the generation loop that streams text without ever
//! splitting a UTF-8 character and holds back what could be the start of a stop string.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::config::LlamaConfig;
use super::llama::{argmax, Llama};
use super::template::{ChatMessage, ChatTemplate};
use crate::engine::loader::LoadedModel;
use crate::engine::EngineError;

/// End-of-turn markers of common chat templates, stopped on when the vocabulary has them.
const TURN_MARKERS: [&str; 6] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
];

/// A loaded model that can generate text.
pub struct TextModel {
    pub llama: Llama,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    /// Tokens that end a generation.
    stop_ids: BTreeSet<u32>,
    /// The most tokens a prompt and its answer may take together.
    pub context: usize,
    /// One generation at a time: the holder of this lock generates.
    pub turn: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Requests waiting for their turn.
    pub waiting: AtomicUsize,
}

/// How a generation is sampled and bounded.
#[derive(Debug, Clone)]
pub struct Sampling {
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-turn token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The caller stopped it (client gone, lease revoked).
    Cancelled,
}

/// What a generation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub finish: Finish,
    pub completion_tokens: usize,
    /// When the first token was chosen (after the prompt's forward pass).
    pub first_token_at: Option<std::time::Instant>,
    /// Seconds between each token and the one before it (one fewer than the tokens).
    pub token_gaps: Vec<f64>,
}

fn read_json(folder: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(folder.join(name)).ok()?;
    serde_json::from_str(&text).ok()
}

/// A special token as `tokenizer_config.json` writes it: a string or `{"content": …}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Token ids as configs write them: one number or a list.
fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// The chat template: a string, or a list of named templates (the one named `default`).
fn chat_template(config: &Value) -> Option<String> {
    match config.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    }
}

impl TextModel {
    /// Builds the text side of `model` from the small files of its folder. `max_context`
    /// bounds the context the server allows (the model's own may be smaller).
    pub fn build(
        model: &mut LoadedModel,
        folder: &Path,
        max_context: usize,
    ) -> Result<TextModel, EngineError> {
        let config_text = std::fs::read_to_string(folder.join("config.json"))?;
        let cfg = LlamaConfig::parse(&config_text)?;
        let tokenizer = Tokenizer::from_file(folder.join("tokenizer.json"))
            .map_err(|e| EngineError::BadCheckpoint(format!("tokenizer.json: {e}")))?;
        let tok_cfg = read_json(folder, "tokenizer_config.json").unwrap_or(Value::Null);
        let bos = token_text(tok_cfg.get("bos_token")).unwrap_or_default();
        let eos = token_text(tok_cfg.get("eos_token")).unwrap_or_default();
        let template = match chat_template(&tok_cfg) {
            Some(source) => {
                Some(ChatTemplate::new(&source, &bos, &eos).map_err(EngineError::BadCheckpoint)?)
            }
            None => None,
        };
        let config: Value = serde_json::from_str(&config_text).unwrap_or(Value::Null);
        let generation = read_json(folder, "generation_config.json").unwrap_or(Value::Null);
        let mut stop_ids: BTreeSet<u32> = ids(config.get("eos_token_id")).into_iter().collect();
        stop_ids.extend(ids(generation.get("eos_token_id")));
        for marker in TURN_MARKERS.iter().map(|m| m.to_string()).chain(Some(eos)) {
            if let Some(id) = tokenizer.token_to_id(&marker) {
                stop_ids.insert(id);
            }
        }
        let context = cfg.max_position_embeddings.min(max_context).max(1);
        Ok(TextModel {
            llama: Llama::new(model, &cfg, context)?,
            tokenizer,
            template,
            stop_ids,
            context,
            turn: std::sync::Arc::new(tokio::sync::Mutex::new(())),
            waiting: AtomicUsize::new(0),
        })
    }

    /// True when the model has a chat template.
    pub fn can_chat(&self) -> bool {
        self.template.is_some()
    }

    /// The prompt tokens of a chat (the template adds the special tokens it wants).
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, String> {
        let template = self
            .template
            .as_ref()
            .ok_or("this model has no chat template")?;
        let text = template.render(messages)?;
        self.encode(&text, false)
    }

    /// The tokens of `text`; `special` adds the tokenizer's own (BOS) as transformers does for
    /// a plain prompt.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("the prompt cannot be tokenized: {e}"))
    }

    /// Generates after `prompt`, handing each piece of text to `emit` as it is decided;
    /// `emit` returns false (and `cancelled()` true) to stop within one token.
    pub fn generate(
        &self,
        prompt: &[u32],
        sampling: &Sampling,
        cancelled: &dyn Fn() -> bool,
        emit: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generated, EngineError> {
        let mut sampler = Sampler::new(sampling);
        let mut cache = self.llama.new_cache();
        let mut text = TextStream::new(&sampling.stop);
        let mut generated: Vec<u32> = Vec::new();
        let mut first_token_at = None;
        let mut last_token_at: Option<std::time::Instant> = None;
        let mut token_gaps = Vec::new();
        let mut logits = self.llama.forward_last(prompt, &mut cache)?;
        let finish = loop {
            if generated.len() >= sampling.max_tokens {
                break Finish::Length;
            }
            if cancelled() {
                break Finish::Cancelled;
            }
            let next = sampler.sample(&logits)?;
            let now = std::time::Instant::now();
            match last_token_at {
                Some(before) => token_gaps.push(now.duration_since(before).as_secs_f64()),
                None => first_token_at = Some(now),
            }
            last_token_at = Some(now);
            if self.stop_ids.contains(&next) {
                break Finish::Stop;
            }
            generated.push(next);
            let piece = self.decode_new(&generated, &mut text.offsets)?;
            let (out, stopped) = text.push(&piece);
            if !out.is_empty() && !emit(&out) {
                break Finish::Cancelled;
            }
            if stopped {
                break Finish::Stop;
            }
            if generated.len() >= sampling.max_tokens {
                break Finish::Length;
            }
            logits = self.llama.forward_last(&[next], &mut cache)?;
        };
        if finish != Finish::Cancelled {
            let rest = text.flush();
            if !rest.is_empty() {
                emit(&rest);
            }
        }
        Ok(Generated {
            finish,
            completion_tokens: generated.len(),
            first_token_at,
            token_gaps,
        })
    }

    /// The mean of the last hidden states (after the final norm) over `tokens`, as the original
    /// computes an embedding: one forward pass, f32.
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        let mut cache = self.llama.new_cache();
        let hidden = self.llama.hidden(tokens, &mut cache)?;
        hidden
            .mean(0)
            .and_then(|m| m.to_vec1::<f32>())
            .map_err(|e| EngineError::BadCheckpoint(format!("the embedding failed: {e}")))
    }

    /// The text the newest tokens add, once it is whole UTF-8 (as TGI decodes a stream).
    fn decode_new(&self, ids: &[u32], offsets: &mut (usize, usize)) -> Result<String, EngineError> {
        let dec = |range: &[u32]| {
            self.tokenizer
                .decode(range, true)
                .map_err(|e| EngineError::BadCheckpoint(format!("decoding failed: {e}")))
        };
        let (prefix, read) = *offsets;
        let before = dec(&ids[prefix..read])?;
        let now = dec(&ids[prefix..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            *offsets = (read, ids.len());
            Ok(now[before.len()..].to_string())
        } else {
            Ok(String::new())
        }
    }
}

/// Text decided so far, with what could still begin a stop string held back.
struct TextStream<'a> {
    stop: &'a [String],
    pending: String,
    /// The streaming decoder's prefix and read offsets.
    offsets: (usize, usize),
}

impl<'a> TextStream<'a> {
    fn new(stop: &'a [String]) -> Self {
        TextStream {
            stop,
            pending: String::new(),
            offsets: (0, 0),
        }
    }

    /// Adds `piece`; returns the text that may go out now and whether a stop string ended it.
    fn push(&mut self, piece: &str) -> (String, bool) {
        self.pending.push_str(piece);
        let first_stop = self
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Keep the longest tail that is the start of some stop string.
        let held = self
            .stop
            .iter()
            .map(|s| {
                (1..s.len().min(self.pending.len() + 1))
                    .rev()
                    .find(|&k| {
                        s.is_char_boundary(k)
                            && self.pending.is_char_boundary(self.pending.len() - k)
                            && self.pending.ends_with(&s[..k])
                    })
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - held;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Greedy at temperature 0; else temperature and nucleus (top-p) sampling from a seeded RNG,
/// so the same seed gives the same text.
struct Sampler {
    rng: StdRng,
    temperature: f32,
    top_p: f32,
}

impl Sampler {
    fn new(s: &Sampling) -> Self {
        Sampler {
            rng: match s.seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_entropy(),
            },
            temperature: s.temperature,
            top_p: s.top_p,
        }
    }

    fn sample(&mut self, logits: &Tensor) -> Result<u32, EngineError> {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let fail =
            |e: candle_core::Error| EngineError::BadCheckpoint(format!("sampling failed: {e}"));
        let scaled =
            (logits.to_dtype(DType::F32).map_err(fail)? / self.temperature as f64).map_err(fail)?;
        let probs: Vec<f32> = candle_nn::ops::softmax_last_dim(&scaled)
            .and_then(|p| p.to_vec1())
            .map_err(fail)?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let mut kept = Vec::new();
        let mut mass = 0.0f32;
        for &i in &order {
            kept.push(i);
            mass += probs[i];
            if mass >= self.top_p {
                break;
            }
        }
        let mut pick = self.rng.gen::<f32>() * mass;
        for &i in &kept {
            pick -= probs[i];
            if pick <= 0.0 {
                return Ok(i as u32);
            }
        }
        Ok(*kept.last().unwrap_or(&0) as u32)
    }
}

/// Counts a request as waiting for its turn while alive.
pub struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// Joins the queue unless `limit` requests already wait.
    pub fn join(count: &'a AtomicUsize, limit: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Waiting(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_could_start_a_stop_string_is_held_back_and_never_emitted() {
        let stop = vec!["</answer>".to_string()];
        let mut t = TextStream::new(&stop);
        assert_eq!(t.push("The answer is 4"), ("The answer is 4".into(), false));
        assert_eq!(t.push(" </ans"), (" ".into(), false));
        assert_eq!(t.push("wer> and more"), ("".into(), true));
        let mut t = TextStream::new(&stop);
        assert_eq!(t.push("a </"), ("a ".into(), false));
        assert_eq!(
            t.push("bc"),
            ("</bc".into(), false),
            "not a stop string after all"
        );
        assert_eq!(t.push("</"), ("".into(), false));
        assert_eq!(t.flush(), "</", "held text goes out at the end");
    }

    #[test]
    fn a_seeded_sampler_repeats_itself_and_greedy_takes_the_largest() {
        let logits =
            Tensor::new(&[0.1f32, 2.0, 0.3, 1.9, -1.0], &candle_core::Device::Cpu).unwrap();
        let s = |seed| Sampling {
            max_tokens: 1,
            temperature: 1.0,
            top_p: 0.95,
            seed: Some(seed),
            stop: vec![],
        };
        let draw = |seed| {
            let mut sampler = Sampler::new(&s(seed));
            (0..20)
                .map(|_| sampler.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert!(draw(5).iter().all(|&i| i < 5));
        let mut greedy = Sampler::new(&Sampling {
            temperature: 0.0,
            ..s(1)
        });
        assert_eq!(greedy.sample(&logits).unwrap(), 1);
    }

    #[test]
    fn the_queue_refuses_past_its_limit() {
        let count = AtomicUsize::new(0);
        let a = Waiting::join(&count, 2).unwrap();
        let _b = Waiting::join(&count, 2).unwrap();
        assert!(Waiting::join(&count, 2).is_none());
        drop(a);
        assert!(Waiting::join(&count, 2).is_some());
    }
}
