//! `millm serve`: logging, the app, and shutdown on SIGINT/SIGTERM.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use crate::app::App;
use crate::config::{LogFormat, Settings};

fn init_logging(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match settings.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Console => builder.try_init(),
    };
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(settings: Settings) -> ExitCode {
    let settings = settings.normalized();
    if let Err(e) = settings.validate() {
        eprintln!("millm: {e}");
        return ExitCode::from(2);
    }
    init_logging(&settings);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("millm: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let data_dir = std::path::absolute(&settings.data_dir).unwrap_or(settings.data_dir.clone());
        let cache_dir = std::path::absolute(settings.cache_dir()).unwrap_or(settings.cache_dir());
        let app = match App::build(settings).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("millm: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let addr = app.local_addr();
        let backend = app.state().services.store.backend().as_str();
        println!(
            "miLLM {} listening on http://{addr}",
            env!("CARGO_PKG_VERSION")
        );
        println!("  web UI and API docs: http://{addr}/ and http://{addr}/docs");
        println!("  data folder: {}", data_dir.display());
        println!("  model cache: {}", cache_dir.display());
        println!("  registry: {backend}");
        let token = app.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            token.cancel();
        });
        match app.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("millm: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
