//! The command line: `millm serve` runs the server, `millm openapi` prints its API document, and
//! the client subcommands (`pull`, `list`, `run`, `ps`, …) drive a running server over HTTP.

mod chat;
mod client;
mod commands;
mod progress;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;

pub use client::{resolve_in, Client, ClientError};

/// miLLM — find, download, load and unload large language models on this machine.
#[derive(Parser)]
#[command(
    name = "millm",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  millm serve                                  run the server\n  millm pull HuggingFaceTB/SmolLM2-135M        download a model (Q4 by default)\n  millm list                                   the models the server knows\n  millm load SmolLM2-135M --wait               load one and wait until it is in memory\n  millm run SmolLM2-135M                       chat with it (loads it first if needed)\n  millm ps                                     the loaded model and device memory\n  millm --url http://gpu-box:8000 list         talk to another server"
)]
pub struct Cli {
    /// URL of the miLLM server the client subcommands talk to.
    #[arg(
        long,
        global = true,
        env = "MILLM_URL",
        value_name = "URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub url: String,

    /// The server's API key (its MILLM_API_KEY), sent as `Authorization: Bearer` by the client
    /// subcommands: `millm --api-key KEY list`, or set MILLM_API_KEY.
    #[arg(
        long = "api-key",
        // Not `global`: `serve` has its own `--api-key`/MILLM_API_KEY (a `Secret`), and a global
        // argument of the same name would be parsed into it and abort start-up.
        env = "MILLM_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

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
    #[command(after_help = "Examples:\n  millm openapi > openapi.json")]
    Openapi,
    #[command(flatten)]
    Client(ClientCommand),
}

/// The subcommands that talk to a running server.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Show a Hub model's metadata and estimated sizes without downloading it.
    #[command(
        after_help = "Examples:\n  millm preview HuggingFaceTB/SmolLM2-135M\n  millm preview meta-llama/Llama-3.2-1B --token hf_...\n  millm preview org/model --revision v1.0 --json"
    )]
    Preview {
        /// Hub repository, `owner/name`.
        repo: String,
        /// Branch, tag or commit [default: main].
        #[arg(long)]
        revision: Option<String>,
        /// Hub access token for gated or private repositories.
        #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Send the token even over plain http:// to another machine, where the network can read it.
        #[arg(long)]
        allow_http_token: bool,
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download a model from the Hub, with a live progress bar. Ctrl-C cancels it on the server.
    #[command(
        after_help = "Examples:\n  millm pull HuggingFaceTB/SmolLM2-135M\n  millm pull HuggingFaceTB/SmolLM2-135M --quantization Q8 --name smol\n  HF_TOKEN=hf_... millm pull meta-llama/Llama-3.2-1B --revision main"
    )]
    Pull {
        /// Hub repository, `owner/name`.
        repo: String,
        /// Quantization applied at load time: FP32, FP16, Q8, Q4 or Q2.
        #[arg(long, short, default_value = "Q4")]
        quantization: String,
        /// Branch, tag or commit [default: main].
        #[arg(long)]
        revision: Option<String>,
        /// Hub access token for gated or private repositories (sent to the server, never stored).
        #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Send the token even over plain http:// to another machine, where the network can read it.
        #[arg(long)]
        allow_http_token: bool,
        /// A name for the model instead of the repository's.
        #[arg(long)]
        name: Option<String>,
    },
    /// Register a model folder on the server's machine (config.json and safetensors).
    #[command(
        after_help = "Examples:\n  millm add ./models/tiny-llama\n  millm add /srv/models/llama --quantization FP16 --name llama"
    )]
    Add {
        /// The folder; made absolute from the working folder. The server must see the same path.
        path: PathBuf,
        /// Quantization applied at load time: FP32, FP16, Q8, Q4 or Q2.
        #[arg(long, short, default_value = "Q4")]
        quantization: String,
        /// A name for the model instead of the folder's.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the models the server knows, newest first.
    #[command(
        alias = "ls",
        after_help = "Examples:\n  millm list\n  millm list --json"
    )]
    List {
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one model (by id, name or repo id).
    #[command(after_help = "Examples:\n  millm show 3\n  millm show SmolLM2-135M --json")]
    Show {
        /// Id, name or repo id.
        model: String,
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load a model into memory, unloading the loaded one first.
    #[command(after_help = "Examples:\n  millm load 3\n  millm load SmolLM2-135M --wait")]
    Load {
        /// Id, name or repo id.
        model: String,
        /// Wait until the model is loaded (or the load fails).
        #[arg(long)]
        wait: bool,
    },
    /// Chat with a model, or answer one prompt, streaming the answer; loads the model first.
    #[command(
        after_help = "Examples:\n  millm run SmolLM2-135M\n  millm run SmolLM2-135M Why is the sky blue?\n  millm run 3 \"Say hi\" --temperature 0 --max-tokens 64\n  echo \"Summarise: ...\" | millm run SmolLM2-135M\n  millm run SmolLM2-135M \"Say hi\" --json\n\nIn the chat: /bye or Ctrl-D leaves, /clear forgets the conversation, /? helps. Ctrl-C stops\nthe answer being written (the server stops generating it); at the prompt it leaves."
    )]
    Run(chat::RunOptions),
    /// Lock the loaded model: requests naming other models do not replace it [default: the loaded one].
    #[command(after_help = "Examples:\n  millm lock\n  millm lock SmolLM2-135M")]
    Lock {
        /// Id, name or repo id.
        model: Option<String>,
    },
    /// Unlock a model [default: the loaded one].
    #[command(after_help = "Examples:\n  millm unlock\n  millm unlock SmolLM2-135M")]
    Unlock {
        /// Id, name or repo id.
        model: Option<String>,
    },
    /// Unload a model [default: the loaded one].
    #[command(after_help = "Examples:\n  millm unload\n  millm unload SmolLM2-135M")]
    Unload {
        /// Id, name or repo id.
        model: Option<String>,
    },
    /// Remove a model and the files the server downloaded for it (never a local folder).
    #[command(
        alias = "remove",
        after_help = "Examples:\n  millm rm 3\n  millm rm SmolLM2-135M --yes"
    )]
    Rm {
        /// Id, name or repo id.
        model: String,
        /// Do not ask; required when stdin is not a terminal.
        #[arg(long, short)]
        yes: bool,
    },
    /// Show the loaded model (locked or not, when it unloads for idleness), the device's memory
    /// and the last minute's generation speed.
    #[command(after_help = "Examples:\n  millm ps\n  millm ps --json")]
    Ps {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
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
        Command::Client(command) => commands::run(&cli.url, cli.api_key.as_deref(), command),
    }
}
