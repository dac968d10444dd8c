//! The command line: `millm serve` runs the server; `millm openapi` prints its API document.

mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;

/// miLLM — find, download, load and unload large language models on this machine.
#[derive(Parser)]
#[command(name = "millm", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server: REST API, live events and the web UI.
    #[command(
        after_help = "Examples:\n  millm serve\n  PORT=9000 MILLM_DATA_DIR=/srv/millm millm serve\n  millm serve --database-url postgres://millm:secret@localhost/millm"
    )]
    Serve(Box<Settings>),
    /// Print the OpenAPI document of the REST API.
    Openapi,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // A `.env` in the working folder fills in settings not given otherwise.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(settings) => serve::run(*settings),
        Command::Openapi => {
            println!("{}", crate::api::openapi_json());
            ExitCode::SUCCESS
        }
    }
}
