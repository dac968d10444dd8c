//! The `millm` binary: parses the command line and hands over.

fn main() -> std::process::ExitCode {
    millm::cli::main()
}
