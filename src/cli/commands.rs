//! The client subcommands: each talks to a running server through `Client` and prints for a
//! person (tables, one-line summaries) or, with `--json`, for a program.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::client::{Client, ClientError};
use super::progress::{human_bytes, note, Bar, Follow, Job, Update};
use super::ClientCommand;
use crate::api::schema::{ModelPreviewResponse, ModelResponse};
use crate::domain::ModelStatus;

/// The exit status after Ctrl-C, as shells report a SIGINT.
const INTERRUPTED: u8 = 130;

/// How a command ended, beyond success.
pub(super) enum Failure {
    /// Print `millm: {error}` and exit 1.
    Error(ClientError),
    /// Ctrl-C; already reported.
    Interrupted,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Error(e)
    }
}

pub(super) type Outcome = Result<(), Failure>;

pub(super) fn fail(message: impl Into<String>) -> Failure {
    Failure::Error(ClientError::Other(message.into()))
}

/// Runs one client subcommand against the server at `url`.
pub fn run(url: &str, api_key: Option<&str>, command: ClientCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("millm: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        let client = Client::new(url, api_key)?;
        dispatch(&client, command).await
    });
    // The socket client's tasks must not keep the process alive.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Interrupted) => ExitCode::from(INTERRUPTED),
        Err(Failure::Error(e)) => {
            eprintln!("millm: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(client: &Client, command: ClientCommand) -> Outcome {
    match command {
        ClientCommand::Preview {
            repo,
            revision,
            token,
            allow_http_token,
            json,
        } => {
            let token = hub_token_to_send(client, token, allow_http_token);
            preview(client, &repo, revision, token, json).await
        }
        ClientCommand::Pull {
            repo,
            quantization,
            revision,
            token,
            allow_http_token,
            name,
        } => {
            let token = hub_token_to_send(client, token, allow_http_token);
            pull(client, &repo, &quantization, revision, token, name).await
        }
        ClientCommand::Add {
            path,
            quantization,
            name,
        } => add(client, path, &quantization, name).await,
        ClientCommand::List { json } => list(client, json).await,
        ClientCommand::Show { model, json } => show(client, &model, json).await,
        ClientCommand::Load { model, wait } => load(client, &model, wait).await,
        ClientCommand::Run(options) => super::chat::run(client, options).await,
        ClientCommand::Lock { model } => lock(client, model.as_deref(), true).await,
        ClientCommand::Unlock { model } => lock(client, model.as_deref(), false).await,
        ClientCommand::Unload { model } => unload(client, model.as_deref()).await,
        ClientCommand::Rm { model, yes } => rm(client, &model, yes).await,
        ClientCommand::Ps { json } => ps(client, json).await,
    }
}

/// The Hub token to send with a request, if any. Over plain `http://` to another machine it is
/// not sent (anyone on the network path could read it) unless `--allow-http-token` says so; the
/// server then uses its own `HF_TOKEN`, if it has one.
fn hub_token_to_send(client: &Client, token: Option<String>, allowed: bool) -> Option<String> {
    let token = token.filter(|t| !t.trim().is_empty())?;
    if allowed || !client.is_plain_http_to_another_host() {
        return Some(token);
    }
    note(&format!(
        "not sending your Hub token (--token / HF_TOKEN) to {} over plain http://, where the network can read it; use an https:// --url, set HF_TOKEN on the server, or add --allow-http-token to send it anyway",
        client.base()
    ));
    None
}

pub(super) fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("millm: cannot print JSON: {e}"),
    }
}

fn mb(v: Option<i64>) -> String {
    v.and_then(|v| u64::try_from(v).ok())
        .map(|v| human_bytes(v << 20))
        .unwrap_or_else(|| "-".into())
}

fn or_dash(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// Prints rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// How following a job on the server ended.
enum Followed {
    Done,
    Interrupted,
}

/// Shows a job's updates on `bar` until it is done, fails (the server's error) or Ctrl-C is
/// pressed; the bar is finished and the event stream closed in every case.
async fn follow_job(
    mut bar: Bar,
    mut follow: Follow,
    interrupt: &mut Interrupt,
    first: Update,
) -> Result<Followed, Failure> {
    let mut update = first;
    let outcome = loop {
        match update {
            Update::Downloading { downloaded, total } => bar.bytes(downloaded, total),
            Update::Loading { stage, progress } => bar.stage(&stage, progress),
            Update::Done => break Ok(Followed::Done),
            Update::Failed { code, message } => {
                break Err(Failure::Error(ClientError::Api {
                    status: 0,
                    code,
                    message,
                }))
            }
        }
        update = tokio::select! {
            u = follow.next() => match u {
                Ok(u) => u,
                Err(e) => break Err(e.into()),
            },
            _ = interrupt.recv() => break Ok(Followed::Interrupted),
        };
    };
    bar.finish();
    follow.close().await;
    outcome
}

/// A Ctrl-C listener, installed before the work starts so the first Ctrl-C is ours.
pub(super) struct Interrupt {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Interrupt {
    pub(super) fn install() -> Interrupt {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Interrupt {
                signal: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Interrupt {}
        }
    }

    /// Waits for the next Ctrl-C.
    pub(super) async fn recv(&mut self) {
        #[cfg(unix)]
        {
            match &mut self.signal {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn preview(
    client: &Client,
    repo: &str,
    revision: Option<String>,
    token: Option<String>,
    as_json: bool,
) -> Outcome {
    let body = json!({"repo_id": repo, "revision": revision, "hf_token": token});
    let p: ModelPreviewResponse = client.preview(&body).await?;
    if as_json {
        print_json(&p);
        return Ok(());
    }
    println!("{repo}");
    println!("  name:          {}", p.name);
    println!("  parameters:    {}", or_dash(p.params.as_deref()));
    println!("  architecture:  {}", or_dash(p.architecture.as_deref()));
    println!("  license:       {}", or_dash(p.license.as_deref()));
    let gated = match (p.is_gated, p.has_access) {
        (false, _) => "no".to_string(),
        (true, Some(true)) => "yes (your token has access)".to_string(),
        (true, Some(false)) => "yes (your token has no access)".to_string(),
        (true, None) => "yes (needs a token: --token or HF_TOKEN)".to_string(),
    };
    println!("  gated:         {gated}");
    if p.requires_trust_remote_code {
        println!("  remote code:   required (miLLM does not run it)");
    }
    let files: u64 = p.files.iter().map(|f| f.size).sum();
    println!(
        "  files:         {} ({})",
        p.files.len(),
        human_bytes(files)
    );
    println!();
    let s = &p.estimated_sizes;
    let rows: Vec<Vec<String>> = [
        ("FP32", &s.FP32),
        ("FP16", &s.FP16),
        ("Q8", &s.Q8),
        ("Q4", &s.Q4),
        ("Q2", &s.Q2),
    ]
    .iter()
    .map(|(q, e)| {
        vec![
            q.to_string(),
            human_bytes(e.disk_mb << 20),
            human_bytes(e.memory_mb << 20),
        ]
    })
    .collect();
    table(&["QUANTIZATION", "DISK", "MEMORY"], &rows);
    Ok(())
}

async fn pull(
    client: &Client,
    repo: &str,
    quantization: &str,
    revision: Option<String>,
    token: Option<String>,
    name: Option<String>,
) -> Outcome {
    let mut interrupt = Interrupt::install();
    let mut follow = Follow::start(client, Job::Download).await;
    let body = json!({
        "source": "huggingface",
        "repo_id": repo,
        "revision": revision,
        "quantization": quantization.to_uppercase(),
        "hf_token": token,
        "custom_name": name,
    });
    let model = client.create(&body).await?;
    follow.set_model(model.id);
    if !std::io::stderr().is_terminal() {
        note(&format!("following the download {}", follow.how()));
    }
    let started = std::time::Instant::now();
    let bar = Bar::new(Job::Download, &model.name);
    let first = super::progress::from_model(Job::Download, &model);
    if let Followed::Interrupted = follow_job(bar, follow, &mut interrupt, first).await? {
        note(&format!(
            "interrupted: cancelling the download of {} on the server",
            model.name
        ));
        match client.cancel(model.id).await {
            Ok(_) => note(&format!(
                "cancelled; retry later with the web UI or `millm pull {repo}` after `millm rm {}`",
                model.id
            )),
            Err(e) => note(&format!("could not cancel the download: {e}")),
        }
        return Err(Failure::Interrupted);
    }
    let done = client.get(model.id).await?;
    println!(
        "Downloaded {} (id {}, {}) in {:.1}s. Load it with: millm load {}",
        done.name,
        done.id,
        mb(done.disk_size_mb),
        started.elapsed().as_secs_f64(),
        done.id
    );
    Ok(())
}

async fn add(client: &Client, path: PathBuf, quantization: &str, name: Option<String>) -> Outcome {
    let path = std::path::absolute(&path)
        .map_err(|e| fail(format!("cannot make {} absolute: {e}", path.display())))?;
    let body = json!({
        "source": "local",
        "local_path": path,
        "quantization": quantization.to_uppercase(),
        "custom_name": name,
    });
    let m = client.create(&body).await?;
    println!(
        "Added {} (id {}, {}, {}) from {}. Load it with: millm load {}",
        m.name,
        m.id,
        or_dash(m.params.as_deref()),
        m.quantization,
        path.display(),
        m.id
    );
    Ok(())
}

fn progress_cell(m: &ModelResponse) -> String {
    match (m.status, m.download_progress) {
        (ModelStatus::Downloading, Some(p)) => format!("{p}%"),
        (ModelStatus::Downloading, None) => "0%".into(),
        _ => "-".into(),
    }
}

async fn list(client: &Client, as_json: bool) -> Outcome {
    let models = client.list().await?;
    if as_json {
        print_json(&models);
        return Ok(());
    }
    if models.is_empty() {
        println!("No models yet. Add one with `millm pull OWNER/NAME` or `millm add PATH`.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = models
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.name.clone(),
                m.source.as_str().to_string(),
                m.quantization.to_string(),
                m.status.to_string(),
                or_dash(m.params.as_deref()),
                mb(m.disk_size_mb),
                progress_cell(m),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "SOURCE",
            "QUANTIZATION",
            "STATUS",
            "PARAMS",
            "SIZE",
            "PROGRESS",
        ],
        &rows,
    );
    Ok(())
}

async fn show(client: &Client, wanted: &str, as_json: bool) -> Outcome {
    let found = client.resolve(wanted).await?;
    // The single-model endpoint carries the live figures (download progress, loaded memory).
    let m = client.get(found.id).await?;
    if as_json {
        print_json(&m);
        return Ok(());
    }
    let rows: Vec<(&str, String)> = vec![
        ("id", m.id.to_string()),
        ("name", m.name.clone()),
        ("status", m.status.to_string()),
        ("source", m.source.as_str().to_string()),
        ("repo", or_dash(m.repo_id.as_deref())),
        ("revision", or_dash(m.revision.as_deref())),
        ("path", or_dash(m.local_path.as_deref())),
        ("parameters", or_dash(m.params.as_deref())),
        ("architecture", or_dash(m.architecture.as_deref())),
        ("quantization", m.quantization.to_string()),
        ("disk", mb(m.disk_size_mb)),
        ("memory (est.)", mb(m.estimated_memory_mb)),
        ("progress", progress_cell(&m)),
        ("error", or_dash(m.error_message.as_deref())),
        ("device", or_dash(m.device.as_deref())),
        ("dtype", or_dash(m.dtype.as_deref())),
        ("memory (held)", held(&m)),
        ("created", or_dash(m.created_at.as_deref())),
        ("loaded at", or_dash(m.loaded_at.as_deref())),
    ];
    for (key, value) in rows {
        if value != "-" || matches!(key, "id" | "name" | "status") {
            println!("{key:<14} {value}");
        }
    }
    Ok(())
}

async fn load(client: &Client, wanted: &str, wait: bool) -> Outcome {
    let m = client.resolve(wanted).await?;
    if !wait {
        let m = client.load(m.id).await?;
        println!(
            "Loading {} (id {}, {}). Follow it with `millm ps`, or pass --wait.",
            m.name, m.id, m.quantization
        );
        return Ok(());
    }
    let mut interrupt = Interrupt::install();
    let m = load_following(client, &m, true, &mut interrupt).await?;
    println!(
        "Loaded {} (id {}) on {} as {}, holding {}.",
        m.name,
        m.id,
        or_dash(m.device.as_deref()),
        or_dash(m.dtype.as_deref()),
        held(&m)
    );
    Ok(())
}

/// Loads `m` (when `start`; else follows the load already running) with the load bar until
/// it is in memory, and returns it loaded. Ctrl-C leaves the load running on the server.
pub(super) async fn load_following(
    client: &Client,
    m: &ModelResponse,
    start: bool,
    interrupt: &mut Interrupt,
) -> Result<ModelResponse, Failure> {
    let mut follow = Follow::start(client, Job::Load).await;
    follow.set_model(m.id);
    let started = if start {
        client.load(m.id).await?
    } else {
        client.get(m.id).await?
    };
    let bar = Bar::new(Job::Load, &format!("loading {}", started.name));
    let first = super::progress::from_model(Job::Load, &started);
    if let Followed::Interrupted = follow_job(bar, follow, interrupt, first).await? {
        note("interrupted: the load goes on on the server (unload it with `millm unload`)");
        return Err(Failure::Interrupted);
    }
    Ok(client.get(m.id).await?)
}

/// The memory a loaded model holds, for a person.
fn held(m: &ModelResponse) -> String {
    m.memory_footprint
        .and_then(|b| u64::try_from(b).ok())
        .map(human_bytes)
        .unwrap_or_else(|| "-".into())
}

/// The model `wanted` names, else the loaded one.
async fn named_or_loaded(client: &Client, wanted: Option<&str>) -> Result<i64, Failure> {
    Ok(match wanted {
        Some(w) => client.resolve(w).await?.id,
        None => client
            .health()
            .await?
            .loaded_model_id
            .ok_or_else(|| fail("no model is loaded"))?,
    })
}

async fn lock(client: &Client, wanted: Option<&str>, locked: bool) -> Outcome {
    let id = named_or_loaded(client, wanted).await?;
    if locked {
        let m = client.lock(id).await?;
        println!(
            "Locked {} (id {}): requests naming other models do not replace it. Unlock it with `millm unlock`.",
            m.name, m.id
        );
    } else {
        let m = client.unlock(id).await?;
        println!("Unlocked {} (id {}).", m.name, m.id);
    }
    Ok(())
}

async fn unload(client: &Client, wanted: Option<&str>) -> Outcome {
    let id = named_or_loaded(client, wanted).await?;
    let m = client.unload(id).await?;
    println!("Unloaded {} (id {}).", m.name, m.id);
    Ok(())
}

/// Asks on the terminal; false for anything but y/yes.
fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_lowercase().as_str(), "y" | "yes")
}

async fn rm(client: &Client, wanted: &str, yes: bool) -> Outcome {
    let m = client.resolve(wanted).await?;
    let what = match m.source {
        crate::domain::Source::Huggingface => "its downloaded files",
        crate::domain::Source::Local => "the record (the folder stays)",
    };
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(fail(format!(
                "refusing to remove {} (id {}) without --yes: no terminal to confirm on",
                m.name, m.id
            )));
        }
        let asked = format!("Remove {} (id {}) and {what}?", m.name, m.id);
        if !tokio::task::block_in_place(|| confirm(&asked)) {
            println!("Kept {} (id {}).", m.name, m.id);
            return Ok(());
        }
    }
    let done = client.delete(m.id).await?;
    println!(
        "Removed {} (id {}); freed {}.",
        m.name,
        m.id,
        human_bytes(done.freed_bytes)
    );
    Ok(())
}

async fn ps(client: &Client, as_json: bool) -> Outcome {
    let health = client.health().await?;
    let loaded = match health.loaded_model_id {
        Some(id) => Some(client.get(id).await?),
        None => None,
    };
    if as_json {
        print_json(&json!({
            "loaded": loaded,
            "memory": health.memory,
            "tokens_per_second": health.tokens_per_second,
        }));
        return Ok(());
    }
    match &loaded {
        Some(m) => {
            let idle_unload = m
                .idle_unload_at
                .as_deref()
                .map(|at| until(at, chrono::Utc::now()))
                .unwrap_or_else(|| "-".into());
            table(
                &[
                    "ID",
                    "NAME",
                    "QUANTIZATION",
                    "DEVICE",
                    "DTYPE",
                    "MEMORY",
                    "LOCKED",
                    "IDLE UNLOAD",
                    "LOADED AT",
                ],
                &[vec![
                    m.id.to_string(),
                    m.name.clone(),
                    m.quantization.to_string(),
                    or_dash(m.device.as_deref()),
                    or_dash(m.dtype.as_deref()),
                    held(m),
                    if m.locked { "yes" } else { "no" }.to_string(),
                    idle_unload,
                    or_dash(m.loaded_at.as_deref()),
                ]],
            );
        }
        None => println!("No model is loaded."),
    }
    let mem = &health.memory;
    println!(
        "Device {}: {} free of {}.",
        mem.device,
        human_bytes(mem.free_mb << 20),
        human_bytes(mem.total_mb << 20)
    );
    match health.tokens_per_second {
        Some(rate) => println!("Generation: {rate:.1} tokens/s over the last minute."),
        None => println!("Generation: none in the last minute."),
    }
    Ok(())
}

/// When an RFC 3339 time comes, from `now`: `in 4m 05s`, `in 1h 02m`, `due now`; the text as
/// given when it does not parse.
fn until(at: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(at) else {
        return at.to_string();
    };
    let secs = (at.with_timezone(&chrono::Utc) - now).num_seconds();
    match secs {
        ..=0 => "due now".into(),
        1..=59 => format!("in {secs}s"),
        60..=3599 => format!("in {}m {:02}s", secs / 60, secs % 60),
        _ => format!("in {}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_says_how_long_is_left() {
        let now = chrono::DateTime::parse_from_rfc3339("2025-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(until("2025-01-01T12:00:42Z", now), "in 42s");
        assert_eq!(until("2025-01-01T12:04:05Z", now), "in 4m 05s");
        assert_eq!(until("2025-01-01T13:02:00+00:00", now), "in 1h 02m");
        assert_eq!(until("2025-01-01T11:59:00Z", now), "due now");
        assert_eq!(until("soon", now), "soon");
    }
}
