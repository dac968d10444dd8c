//! Writes a tiny random Llama checkpoint to try miLLM without the Hub:
//! `cargo run --example write_test_model -- /tmp/tiny-llama [bf16] [shards]`, then register
//! it with `{"source": "local", "local_path": "/tmp/tiny-llama"}`.

use millm_testkit::TinyLlama;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: write_test_model DIR [bf16] [SHARDS]");
        std::process::exit(2);
    };
    let mut spec = TinyLlama::default();
    for arg in args {
        if arg == "bf16" {
            spec = spec.bf16();
        } else if let Ok(n) = arg.parse() {
            spec = spec.sharded(n);
        }
    }
    match spec.write(std::path::Path::new(&dir)) {
        Ok(model) => println!("wrote {} parameters to {dir}", model.parameter_count),
        Err(e) => {
            eprintln!("cannot write {dir}: {e}");
            std::process::exit(1);
        }
    }
}
