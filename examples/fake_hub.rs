//! A fake Hugging Face Hub for the browser test and for trying miLLM without the network.
//!
//! Prints exactly one line, `LISTENING http://127.0.0.1:PORT`, then serves until killed:
//! `test-org/tiny-llama` (ungated), `test-org/gated-llama` (gated; the token
//! `hf_fake_good_token` has access) and `test-org/slow-llama` (throttled so that its download
//! takes at least 15 seconds). Their tokenizer config carries a chat template (Zephyr's layout,
//! each turn ended by the `</s>` token the vocabulary has), so the chat can talk to them.
//!
//! ```text
//! cargo run --example fake_hub
//! HF_ENDPOINT=http://127.0.0.1:PORT cargo run -- serve
//! ```

use std::io::Write;

use millm_testkit::{FakeHub, FakeRepo, TinyLlama};

/// Zephyr's chat layout: `<|role|>`, the text, then the end-of-sequence token.
const CHAT_TEMPLATE: &str = "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let written = TinyLlama::default().write(dir.path())?;
    // The testkit's tokenizer config has no chat template; /v1/chat/completions needs one.
    let tokenizer_config = serde_json::json!({
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 2048,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    });
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        serde_json::to_vec_pretty(&tokenizer_config)?,
    )?;
    let hub = FakeHub::start().await?;
    let repo = |id: &str| FakeRepo::from_dir(id, dir.path());
    hub.add_repo(
        repo("test-org/tiny-llama")?.file("README.md", "# tiny-llama\nA tiny Llama for tests.\n"),
    );
    hub.add_repo(repo("test-org/gated-llama")?.gated());
    // One connection per file this small: the weights at this rate take ≥ 15 s.
    let rate = (written.weight_bytes() / 16).max(1);
    hub.add_repo(repo("test-org/slow-llama")?.throttled(rate));
    let mut out = std::io::stdout().lock();
    writeln!(out, "LISTENING {}", hub.endpoint())?;
    out.flush()?;
    drop(out);
    std::future::pending::<()>().await;
    Ok(())
}
