//! A fake Hugging Face Hub for the browser test and for trying miLLM without the network.
//!
//! Prints exactly one line, `LISTENING http://127.0.0.1:PORT`, then serves until killed:
//! `test-org/tiny-llama` (ungated), `test-org/gated-llama` (gated; the token
//! `hf_fake_good_token` has access) and `test-org/slow-llama` (throttled so that its download
//! takes at least 15 seconds).
//!
//! ```text
//! cargo run --example fake_hub
//! HF_ENDPOINT=http://127.0.0.1:PORT cargo run -- serve
//! ```

use std::io::Write;

use millm_testkit::{FakeHub, FakeRepo, TinyLlama};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let written = TinyLlama::default().write(dir.path())?;
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
