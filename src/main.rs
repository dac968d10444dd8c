//! The `millm` binary: parses the command line and hands over.

fn main() -> std::process::ExitCode {
    // A build for x86-64-v3 (`.cargo/config.toml`) says so plainly on an older CPU rather than
    // dying on the first instruction it lacks.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if !(std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c"))
    {
        eprintln!(
            "millm: this build needs a CPU with AVX2, FMA and F16C (x86-64-v3). Build it for \
             this one with RUSTFLAGS=\"-C target-cpu=native\" cargo build --release."
        );
        return std::process::ExitCode::FAILURE;
    }
    millm::cli::main()
}
