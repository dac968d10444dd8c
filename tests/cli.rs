//! The `millm` binary as a client: run as a child process against a live server started in this
//! process and the in-process fake Hub. Pull with progress, Ctrl-C that cancels on the server,
//! the list/show/load/ps/unload/rm round trip, server errors and a server that is not running;
//! `millm run` on a pseudo-terminal and `lock`/`unlock`/`ps` in `cli/run.rs`.

#[cfg(unix)]
#[path = "cli/pty.rs"]
mod pty;
#[cfg(unix)]
#[path = "cli/run.rs"]
mod run_chat;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use millm::app::App;
use millm::config::Settings;
use millm_testkit::{FakeHub, FakeRepo, TinyLlama};
use serde_json::Value;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

/// A server on port 0 with its own data folder, optionally pointed at a fake Hub.
struct Server {
    base: String,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
    /// The server's API key, sent by the helpers (not by `millm`, which is told separately).
    key: Option<String>,
}

impl Server {
    async fn start(hub: Option<&FakeHub>) -> Server {
        Server::start_with(hub, |_| {}).await
    }

    /// A server whose settings `adjust` changes first.
    async fn start_with(hub: Option<&FakeHub>, adjust: impl FnOnce(&mut Settings)) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::for_data_dir(dir.path().join("data"));
        if let Some(hub) = hub {
            settings.hf_endpoint = hub.endpoint();
        }
        adjust(&mut settings);
        let key = settings.api_key.as_ref().map(|k| k.expose().to_string());
        let app = App::build(settings).await.expect("app builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_token();
        let handle = tokio::spawn(app.run());
        Server {
            base,
            dir,
            shutdown,
            handle,
            http: reqwest::Client::new(),
            key,
        }
    }

    /// A request to this server, with its key when it has one.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn get(&self, path: &str) -> Value {
        let body: Value = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("request completes")
            .json()
            .await
            .expect("JSON body");
        assert_eq!(body["success"], true, "{body}");
        body["data"].clone()
    }

    /// Polls the models until `done` holds for one of them, or panics after `WAIT`.
    async fn wait_model(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let models = self.get("/api/models").await;
            if let Some(m) = models.as_array().into_iter().flatten().find(|m| done(m)) {
                return m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no model became {what}: {models}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `millm` command against this server, with no stdin and no `.env` influence.
    fn millm(&self, args: &[&str]) -> Command {
        millm_at(&self.base, args)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.handle).await;
    }
}

fn millm_at(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_millm"));
    cmd.arg("--url")
        .arg(url)
        .args(args)
        .env_remove("HF_TOKEN")
        .env_remove("MILLM_URL")
        .env_remove("MILLM_API_KEY")
        // No `.env` from the repository is read: the child runs in an empty folder.
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("the CLI finished in time")
        .expect("the CLI runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts success and returns stdout.
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn tiny_repo(id: &str, dir: &Path) -> FakeRepo {
    TinyLlama::default().write(dir).expect("write test model");
    FakeRepo::from_dir(id, dir).expect("fake repo")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_follows_live_progress_to_a_ready_model() {
    let files = tempfile::tempdir().unwrap();
    let hub = FakeHub::start().await.unwrap();
    // Slow enough for several progress events, fast enough for a test.
    hub.add_repo(tiny_repo("test-org/tiny-llama", files.path()).throttled(4 << 20));
    let server = Server::start(Some(&hub)).await;

    let out = run(server.millm(&[
        "pull",
        "test-org/tiny-llama",
        "--quantization",
        "q8",
        "--name",
        "tiny",
    ]))
    .await;
    let stdout = ok(&out);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("following the download through live events"),
        "{stderr}"
    );
    assert!(stderr.contains("downloading: "), "progress lines: {stderr}");
    assert!(stdout.contains("Downloaded tiny (id "), "{stdout}");

    let models = server.get("/api/models").await;
    let m = &models[0];
    assert_eq!(m["name"], "tiny");
    assert_eq!(m["status"], "ready");
    assert_eq!(m["quantization"], "Q8");
    assert_eq!(m["repo_id"], "test-org/tiny-llama");
    server.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_pull_cancels_the_download_on_the_server() {
    let files = tempfile::tempdir().unwrap();
    let hub = FakeHub::start().await.unwrap();
    hub.add_repo(tiny_repo("test-org/slow-llama", files.path()).throttled(64 << 10));
    let server = Server::start(Some(&hub)).await;

    let child = server
        .millm(&["pull", "test-org/slow-llama"])
        .spawn()
        .expect("the CLI starts");
    // The CLI has its Ctrl-C handler before it asks for the download, so once the server
    // transfers bytes, SIGINT reaches the handler.
    let m = server
        .wait_model("transferring", |m| {
            m["status"] == "downloading" && m["downloaded_bytes"].as_i64().unwrap_or(0) > 0
        })
        .await;
    let pid = child.id().expect("the child runs") as libc::pid_t;
    // SAFETY: sends a signal to our own child process, which is still running.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the CLI exits after Ctrl-C")
        .expect("the CLI ran");
    assert_eq!(
        out.status.code(),
        Some(130),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("cancelling the download"),
        "{}",
        text(&out.stderr)
    );

    let id = m["id"].as_i64().unwrap();
    let after = server.get(&format!("/api/models/{id}")).await;
    assert_eq!(after["status"], "error", "{after}");
    assert_eq!(after["error_message"], "Download cancelled by user");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_list_show_load_ps_unload_rm_round_trip() {
    let server = Server::start(None).await;
    let folder = server.dir.path().join("models/tiny");
    TinyLlama::default().write(&folder).unwrap();

    // A relative path is made absolute from the working folder.
    let mut add = server.millm(&[
        "add",
        "tiny",
        "--quantization",
        "fp16",
        "--name",
        "tiny-cli",
    ]);
    add.current_dir(server.dir.path().join("models"));
    let stdout = ok(&run(add).await);
    assert!(stdout.contains("Added tiny-cli (id "), "{stdout}");

    let stdout = ok(&run(server.millm(&["list"])).await);
    let header = stdout.lines().next().unwrap_or_default();
    for column in [
        "ID",
        "NAME",
        "SOURCE",
        "QUANTIZATION",
        "STATUS",
        "PARAMS",
        "SIZE",
        "PROGRESS",
    ] {
        assert!(header.contains(column), "{stdout}");
    }
    assert!(
        stdout.contains("tiny-cli") && stdout.contains("ready"),
        "{stdout}"
    );

    let listed: Value = serde_json::from_str(&ok(&run(server.millm(&["list", "--json"])).await))
        .expect("list --json is JSON");
    let id = listed[0]["id"].as_i64().unwrap();
    assert_eq!(listed[0]["local_path"], folder.to_string_lossy().as_ref());

    let shown: Value = serde_json::from_str(&ok(&run(
        server.millm(&["show", "tiny-cli", "--json"])
    )
    .await))
    .unwrap();
    assert_eq!(shown["id"], id);
    let stdout = ok(&run(server.millm(&["show", &id.to_string()])).await);
    assert!(stdout.contains("FP16"), "{stdout}");

    let stdout = ok(&run(server.millm(&["load", "tiny-cli", "--wait"])).await);
    assert!(stdout.contains("Loaded tiny-cli"), "{stdout}");
    let m = server.get(&format!("/api/models/{id}")).await;
    assert_eq!(m["status"], "loaded");

    let stdout = ok(&run(server.millm(&["ps"])).await);
    assert!(
        stdout.contains("tiny-cli") && stdout.contains("cpu"),
        "{stdout}"
    );
    assert!(stdout.contains("Device cpu:"), "{stdout}");

    let stdout = ok(&run(server.millm(&["unload"])).await);
    assert!(stdout.contains("Unloaded tiny-cli"), "{stdout}");
    let stdout = ok(&run(server.millm(&["ps"])).await);
    assert!(stdout.contains("No model is loaded."), "{stdout}");
    let out = run(server.millm(&["unload"])).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no model is loaded"));

    // Without a terminal, rm refuses to guess.
    let out = run(server.millm(&["rm", "tiny-cli"])).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("without --yes"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(server.get("/api/models").await.as_array().unwrap().len(), 1);

    let stdout = ok(&run(server.millm(&["rm", "tiny-cli", "--yes"])).await);
    assert!(stdout.contains("Removed tiny-cli"), "{stdout}");
    assert!(server
        .get("/api/models")
        .await
        .as_array()
        .unwrap()
        .is_empty());
    assert!(folder.join("config.json").exists(), "a local folder stays");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_print_the_message_and_code() {
    let server = Server::start(None).await;
    let out = run(server.millm(&["add", "/nonexistent/model"])).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("millm: "), "{stderr}");
    assert!(stderr.contains("(INVALID_LOCAL_PATH)"), "{stderr}");

    let out = run(server.millm(&["load", "nothing-by-this-name"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no model has the id, name or repo id 'nothing-by-this-name'")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_running_is_one_clear_line() {
    // A port that was free a moment ago and that nothing listens on now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [&["list"][..], &["ps"], &["pull", "org/model"]] {
        let out = run(millm_at(&url, args)).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert_eq!(
            stderr,
            format!("millm: cannot reach the server at {url}: is `millm serve` running?\n"),
            "{args:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_has_help_with_examples() {
    for sub in [
        "serve", "openapi", "preview", "pull", "add", "list", "show", "load", "run", "lock",
        "unlock", "unload", "rm", "ps",
    ] {
        let out = run(millm_at("http://127.0.0.1:1", &[sub, "--help"])).await;
        let stdout = ok(&out);
        assert!(stdout.contains("Examples:"), "{sub}: {stdout}");
    }
}

/// `millm serve` as a child process on port 0 with a data folder of its own, no settings from
/// the environment or a `.env`, stdout and stderr piped.
#[cfg(unix)]
fn serve_child(dir: &Path) -> tokio::process::Child {
    Command::new(env!("CARGO_BIN_EXE_millm"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.join("data"))
        .env_clear()
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("millm serve starts")
}

/// Reads the first three banner lines, as `millm serve | head -3` does, then closes stdout;
/// returns the server's URL.
#[cfg(unix)]
async fn read_three_lines_and_close_stdout(child: &mut tokio::process::Child) -> String {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut banner = Vec::new();
    for _ in 0..3 {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("the banner in time")
            .expect("stdout readable")
            .expect("a banner line");
        banner.push(line);
    }
    drop(lines);
    banner[0]
        .rsplit(' ')
        .next()
        .filter(|url| url.starts_with("http://"))
        .unwrap_or_else(|| panic!("the first line names the URL: {banner:?}"))
        .to_string()
}

/// Sends SIGTERM and waits (bounded) for the exit.
#[cfg(unix)]
async fn terminate(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().expect("the server runs") as libc::pid_t;
    // SAFETY: sends a signal to our own child process, which is still running.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the server exits within 30 s of SIGTERM")
        .expect("the server ran")
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_with_its_key_in_the_environment_or_as_a_flag_and_needs_it() {
    for with_flag in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_millm"));
        cmd.args(["serve", "--port", "0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env_clear()
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if with_flag {
            cmd.args(["--api-key", "serve-key"]);
        } else {
            cmd.env("MILLM_API_KEY", "serve-key");
        }
        let mut child = cmd.spawn().expect("millm serve starts");
        let url = read_three_lines_and_close_stdout(&mut child).await;
        let http = reqwest::Client::new();
        let without = http.get(format!("{url}/api/models")).send().await.unwrap();
        assert_eq!(without.status(), 401, "flag: {with_flag}");
        let with = http
            .get(format!("{url}/api/models"))
            .bearer_auth("serve-key")
            .send()
            .await
            .unwrap();
        assert_eq!(with.status(), 200, "flag: {with_flag}");
        assert!(terminate(&mut child).await.success());
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exits_on_sigterm_after_its_stdout_and_stderr_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve_child(dir.path());
    let url = read_three_lines_and_close_stdout(&mut child).await;
    drop(child.stderr.take());

    // Still serving with nowhere to write.
    let live = reqwest::get(format!("{url}/api/health")).await.unwrap();
    assert_eq!(live.status(), 200);
    let status = terminate(&mut child).await;
    assert!(status.success(), "{status:?}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_its_stdout_closed_exits_cleanly_on_sigterm_without_complaining() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve_child(dir.path());
    let url = read_three_lines_and_close_stdout(&mut child).await;

    let live = reqwest::get(format!("{url}/api/health")).await.unwrap();
    assert_eq!(live.status(), 200);
    let status = terminate(&mut child).await;
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(
        &mut child.stderr.take().expect("piped stderr"),
        &mut stderr,
    )
    .await
    .unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    // A closed stdout is the reader's choice, not an error: no panic, no report of it.
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
}

/// `millm serve` with `settings` as environment variables and nothing else: its exit status
/// and standard error, when it refuses to start.
async fn serve_refusing(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run({
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_millm"));
        cmd.args(["serve", "--port", "0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env_clear()
            .envs(vars.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    })
    .await;
    (out.status.code(), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_listen_beyond_loopback_without_a_key_in_one_line() {
    for host in ["0.0.0.0", "::"] {
        let (code, stderr) = serve_refusing(&[("HOST", host)]).await;
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("HOST") && stderr.contains("MILLM_API_KEY"),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_any_cors_origin_without_a_key_in_one_line() {
    let (code, stderr) = serve_refusing(&[("CORS_ORIGINS", "*")]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("CORS_ORIGINS") && stderr.contains("MILLM_API_KEY"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sends_its_api_key_and_says_when_one_is_needed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::for_data_dir(dir.path().join("data"));
    settings.api_key = Some(millm::config::Secret::new("cli-key"));
    let app = App::build(settings).await.expect("app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run());

    let out = run(millm_at(&base, &["list"])).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("MILLM_API_KEY") && stderr.contains("UNAUTHORIZED"),
        "{stderr}"
    );
    let mut with_env = millm_at(&base, &["list", "--json"]);
    with_env.env("MILLM_API_KEY", "cli-key");
    assert_eq!(ok(&run(with_env).await).trim(), "[]");
    let flag = ok(&run(millm_at(&base, &["--api-key", "cli-key", "ps", "--json"])).await);
    assert!(flag.contains("memory"), "{flag}");

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_token_is_not_sent_over_plain_http_to_another_machine() {
    // A name that never resolves: the CLI decides about the token before it connects.
    let mut cmd = millm_at(
        "http://millm-test.invalid:9",
        &["preview", "owner/model", "--token", "hf_secret"],
    );
    cmd.env("HF_TOKEN", "hf_secret");
    let out = run(cmd).await;
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not sending your Hub token")
            && stderr.contains("https://")
            && stderr.contains("--allow-http-token"),
        "{stderr}"
    );
    assert!(!stderr.contains("hf_secret"), "{stderr}");
    // Asked for deliberately, it is sent (no note), and to loopback it always is.
    for (url, extra) in [
        ("http://millm-test.invalid:9", Some("--allow-http-token")),
        ("http://127.0.0.1:9", None),
    ] {
        let mut args = vec!["preview", "owner/model", "--token", "hf_secret"];
        args.extend(extra);
        let out = run(millm_at(url, &args)).await;
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("not sending"), "{url}: {stderr}");
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowing_no_auth_beyond_loopback_starts_with_a_loud_warning() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_millm"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_clear()
        .env("HOST", "0.0.0.0")
        .env("MILLM_ALLOW_NO_AUTH", "1")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("millm serve starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut seen = Vec::new();
    // The warning comes before the banner's "listening" line.
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("output in time")
            .expect("stdout readable");
        let Some(line) = line else {
            let out = child.wait_with_output().await.expect("the server ran");
            panic!(
                "the server stopped ({:?}): {seen:?}\nstderr: {}",
                out.status,
                text(&out.stderr)
            );
        };
        if line.contains("listening on") {
            break;
        }
        seen.push(line);
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("WARN") && l.contains("WITHOUT an API key")),
        "{seen:?}"
    );
    drop(lines);
    terminate(&mut child).await;
}
