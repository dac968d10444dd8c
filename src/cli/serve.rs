//! `millm serve`: logging, the app, and shutdown on SIGINT/SIGTERM.
//!
//! Standard output and error may be closed under the server (`millm serve | head -3`), so
//! nothing here may fail or panic on a write: the banner and messages are written with their
//! errors ignored, and log lines go through a writer that drops what it cannot write. Rust's
//! runtime ignores SIGPIPE before `main`, so such a write returns `EPIPE` instead of killing the
//! process.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use crate::app::App;
use crate::config::{LogFormat, Settings};

/// Standard output for log lines: a line that cannot be written (a closed pipe) is dropped,
/// never reported, so logging can neither fail nor panic.
struct LossyStdout;

impl Write for LossyStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stdout().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stdout().flush();
        Ok(())
    }
}

fn init_logging(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(|| LossyStdout)
        // Its report of a failed write goes to stderr with `eprintln!`, which panics when
        // stderr is closed too.
        .log_internal_errors(false);
    let _ = match settings.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Console => builder.try_init(),
    };
}

/// Writes one line, ignoring a closed or broken stream.
fn say(mut out: impl Write, line: fmt::Arguments<'_>) {
    let _ = writeln!(out, "{line}");
}

/// Writes one `millm: …` line to stderr, ignoring a closed or broken stream.
fn complain(line: fmt::Arguments<'_>) {
    say(io::stderr(), format_args!("millm: {line}"));
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(settings: Settings) -> ExitCode {
    let settings = settings.normalized();
    if let Err(e) = settings.validate() {
        complain(format_args!("{e}"));
        return ExitCode::from(2);
    }
    crate::engine::device::pin_cpu_threads();
    init_logging(&settings);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            complain(format_args!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let data_dir = std::path::absolute(&settings.data_dir).unwrap_or(settings.data_dir.clone());
        let cache_dir = std::path::absolute(settings.cache_dir()).unwrap_or(settings.cache_dir());
        let app = match App::build(settings).await {
            Ok(app) => app,
            Err(e) => {
                complain(format_args!("{e:#}"));
                return ExitCode::FAILURE;
            }
        };
        let addr = app.local_addr();
        let backend = app.state().services.database_backend();
        {
            let mut out = io::stdout().lock();
            say(
                &mut out,
                format_args!(
                    "miLLM {} listening on http://{addr}",
                    env!("CARGO_PKG_VERSION")
                ),
            );
            say(
                &mut out,
                format_args!("  web UI and API docs: http://{addr}/ and http://{addr}/docs"),
            );
            say(
                &mut out,
                format_args!("  data folder: {}", data_dir.display()),
            );
            say(
                &mut out,
                format_args!("  model cache: {}", cache_dir.display()),
            );
            say(&mut out, format_args!("  registry: {backend}"));
            let _ = out.flush();
        }
        let token = app.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            // Cancel first: nothing after the signal may stand between it and the shutdown.
            token.cancel();
            tracing::info!("shutting down");
        });
        match app.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                complain(format_args!("{e:#}"));
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
