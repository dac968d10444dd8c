//! `millm run` on a pseudo-terminal against a live server and a tiny real checkpoint (random
//! weights, a real byte-level BPE tokenizer, a ChatML template): one prompt streamed, a chat
//! that keeps its history, Ctrl-C that stops the answer on the server, `--json`, the API key, a
//! model loaded first; and `lock`, `unlock` and `ps`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::pty::{Terminal, CTRL_C, CTRL_D};
use super::{ok, run, text, Server};
use millm::config::Secret;
use millm_testkit::TinyLlama;

const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
const PROMPT: &str = "Hello there";
/// Seeded sampling: an answer that repeats, and (unlike this model's greedy one) is visible text.
const SAMPLED: [&str; 6] = ["--temperature", "1", "--seed", "2", "--max-tokens", "12"];

impl Server {
    /// A POST with a JSON body: its status and JSON answer (envelope or not).
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .expect("request completes");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A tiny chat model registered from a folder as `name` (FP32), with `config` edited by
    /// `edit`; loaded when `load`. Returns its id.
    async fn chat_model(&self, name: &str, load: bool, edit: impl FnOnce(&mut Value)) -> i64 {
        let dir = self.dir.path().join("models").join(name);
        TinyLlama::default().write(&dir).expect("write test model");
        let tokenizer_config = dir.join("tokenizer_config.json");
        let mut cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(&tokenizer_config).unwrap()).unwrap();
        cfg["chat_template"] = json!(CHATML);
        std::fs::write(&tokenizer_config, cfg.to_string()).unwrap();
        let config = dir.join("config.json");
        let mut cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        edit(&mut cfg);
        std::fs::write(&config, cfg.to_string()).unwrap();
        let (status, body) = self
            .post(
                "/api/models",
                json!({"source": "local", "local_path": dir, "quantization": "FP32", "custom_name": name}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let id = body["data"]["id"].as_i64().unwrap();
        if load {
            let (status, body) = self
                .post(&format!("/api/models/{id}/load"), json!({}))
                .await;
            assert_eq!(status, 202, "{body}");
            self.wait_model("loaded", |m| m["id"] == id && m["status"] == "loaded")
                .await;
        }
        id
    }

    /// The answer to `prompt` asked directly on `/v1` with `sampling`, and its finish reason.
    async fn answer(&self, prompt: &str, sampling: Value) -> (String, String) {
        let mut body = json!({"model": "tiny", "messages": [{"role": "user", "content": prompt}]});
        for (key, value) in sampling.as_object().expect("sampling is an object") {
            body[key] = value.clone();
        }
        let (status, body) = self.post("/v1/chat/completions", body).await;
        assert_eq!(status, 200, "{body}");
        let choice = &body["choices"][0];
        let answer = choice["message"]["content"].as_str().unwrap().to_string();
        assert!(
            !answer.trim().is_empty(),
            "the model answers something: {body}"
        );
        (
            answer,
            choice["finish_reason"].as_str().unwrap().to_string(),
        )
    }

    /// The answer to `PROMPT` with the sampling of `SAMPLED`.
    async fn sampled_answer(&self) -> String {
        self.answer(
            PROMPT,
            json!({"temperature": 1, "seed": 2, "max_tokens": 12}),
        )
        .await
        .0
    }
}

/// Text as the terminal shows it to the driver (which reads "\r\n" as "\n").
fn on_terminal(answer: &str) -> String {
    answer.replace("\r\n", "\n")
}

/// `run MODEL PROMPT… SAMPLED…` as arguments.
fn run_args<'a>(prompt: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "tiny"];
    args.extend_from_slice(prompt);
    args.extend_from_slice(&SAMPLED);
    args
}

/// Asserts that the terminal showed `expected` as one answer, ended by a newline.
fn assert_answered(output: &str, expected: &str) {
    let shown = format!("{}\n", on_terminal(expected).trim_end_matches('\n'));
    assert!(
        output.contains(&shown),
        "expected {expected:?} on the terminal:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_prompt_prints_the_streamed_answer_and_exits_0() {
    let server = Server::start(None).await;
    server.chat_model("tiny", true, |_| {}).await;
    let expected = server.sampled_answer().await;

    // The prompt's words are joined.
    let terminal = Terminal::spawn(&server.base, &run_args(&["Hello", "there"]), &[]);
    let exit = terminal.exit().await;
    assert_eq!(exit.code, Some(0), "{}", exit.output);
    // The streamed pieces add up to the answer the server gives in one piece.
    assert_answered(&exit.output, &expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_loads_a_model_that_is_not_loaded_first() {
    let server = Server::start(None).await;
    let id = server.chat_model("tiny", false, |_| {}).await;
    assert_eq!(
        server.get(&format!("/api/models/{id}")).await["status"],
        "ready"
    );

    let terminal = Terminal::spawn(&server.base, &run_args(&[PROMPT]), &[]);
    let exit = terminal.exit().await;
    assert_eq!(exit.code, Some(0), "{}", exit.output);
    assert!(
        exit.output.contains("loading tiny"),
        "the load bar: {}",
        exit.output
    );
    assert_eq!(
        server.get(&format!("/api/models/{id}")).await["status"],
        "loaded"
    );
    assert_answered(&exit.output, &server.sampled_answer().await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_keeps_its_history_and_bye_or_ctrl_d_leave_with_0() {
    let server = Server::start(None).await;
    server.chat_model("tiny", true, |_| {}).await;
    let mut args = run_args(&[]);
    args.push("--verbose");
    let counts = r"(\d+) prompt tokens, (\d+) answer tokens";

    let mut terminal = Terminal::spawn(&server.base, &args, &[]);
    terminal.expect(">>> ").await;
    terminal.send(&format!("{PROMPT}\n")).await;
    let first = terminal.expect(counts).await;
    terminal.expect(">>> ").await;
    terminal.send(&format!("{PROMPT}\n")).await;
    let second = terminal.expect(counts).await;
    let n = |v: &str| v.parse::<u64>().unwrap();
    let (p1, c1, p2) = (n(&first[0]), n(&first[1]), n(&second[0]));
    // The same question twice: the second prompt carries the first exchange too.
    assert!(
        p2 > p1 + c1,
        "the server saw {p2} prompt tokens on the second turn, {p1} + {c1} on the first"
    );
    terminal.expect(">>> ").await;
    terminal.send("/bye\n").await;
    let exit = terminal.exit().await;
    assert_eq!(exit.code, Some(0), "{}", exit.output);

    let mut terminal = Terminal::spawn(&server.base, &args, &[]);
    terminal.expect(">>> ").await;
    terminal.send(CTRL_D).await;
    let exit = terminal.exit().await;
    assert_eq!(exit.code, Some(0), "{}", exit.output);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_in_the_chat_is_printed_and_the_chat_goes_on() {
    let server = Server::start(None).await;
    server.chat_model("tiny", true, |_| {}).await;
    // More tokens than the context holds: /v1 refuses every turn.
    let too_many = ["run", "tiny", "--max-tokens", "100000"];
    let mut terminal = Terminal::spawn(&server.base, &too_many, &[]);
    terminal.expect(">>> ").await;
    terminal.send(&format!("{PROMPT}\n")).await;
    terminal
        .expect(r"millm: This model's context is \d+ tokens.*\(context_length_exceeded\)")
        .await;
    terminal.expect(">>> ").await;
    terminal.send("/bye\n").await;
    assert_eq!(terminal.exit().await.code, Some(0));

    // With a prompt, the same error ends the command.
    let out = run(server.millm(&[&too_many[..], &[PROMPT]].concat())).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("(context_length_exceeded)"),
        "{}",
        text(&out.stderr)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_prints_one_whole_answer_as_the_servers_json() {
    let server = Server::start(None).await;
    server.chat_model("tiny", true, |_| {}).await;
    let expected = server.sampled_answer().await;
    let mut args = run_args(&[PROMPT]);
    args.push("--json");
    let answer: Value =
        serde_json::from_str(&ok(&run(server.millm(&args)).await)).expect("--json prints JSON");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "tiny");
    assert_eq!(answer["choices"][0]["message"]["content"], json!(expected));
    let prompt_tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 0);

    // A system message opens the conversation: the server reads more of a prompt.
    args.extend(["--system", "You answer in one word."]);
    let answer: Value = serde_json::from_str(&ok(&run(server.millm(&args)).await)).unwrap();
    assert!(
        answer["usage"]["prompt_tokens"].as_u64().unwrap() > prompt_tokens,
        "{answer}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_piped_in_is_answered_on_stdout() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(None).await;
    server.chat_model("tiny", true, |_| {}).await;
    let mut cmd = server.millm(&run_args(&[]));
    cmd.stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("the CLI starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(format!("{PROMPT}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(super::WAIT, child.wait_with_output())
        .await
        .expect("the CLI finished in time")
        .expect("the CLI ran");
    // Nothing but the answer on stdout: no prompt, no progress.
    let answer = server.sampled_answer().await;
    assert_eq!(ok(&out), format!("{}\n", answer.trim_end_matches('\n')));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_sends_the_api_key_and_says_when_one_is_needed() {
    let server = Server::start_with(None, |s| s.api_key = Some(Secret::new("run-key"))).await;
    server.chat_model("tiny", false, |_| {}).await;

    let terminal = Terminal::spawn(&server.base, &run_args(&[PROMPT]), &[]);
    let exit = terminal.exit().await;
    assert_eq!(exit.code, Some(1), "{}", exit.output);
    assert!(exit.output.contains("MILLM_API_KEY"), "{}", exit.output);

    // With the key it loads the model and answers.
    let terminal = Terminal::spawn(
        &server.base,
        &run_args(&[PROMPT]),
        &[("MILLM_API_KEY", "run-key")],
    );
    let exit = terminal.exit().await;
    assert_eq!(exit.code, Some(0), "{}", exit.output);
    assert_answered(&exit.output, &server.sampled_answer().await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_cannot_generate_is_refused_with_the_reason() {
    let server = Server::start(None).await;
    let id = server
        .chat_model("neox", false, |cfg| {
            cfg["architectures"] = json!(["GPTNeoXForCausalLM"]);
        })
        .await;
    let out = run(server.millm(&["run", "neox", PROMPT])).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot generate text") && stderr.contains("GPTNeoXForCausalLM"),
        "{stderr}"
    );
    // Refused before loading anything.
    assert_eq!(
        server.get(&format!("/api/models/{id}")).await["status"],
        "ready"
    );
    server.stop().await;
}

/// The status of a one-token request: 429 while another generation holds the model (the
/// server queues nothing: MAX_QUEUED_REQUESTS is 0), 200 when the model is free.
async fn probe(server: &Server) -> u16 {
    let (status, body) = server
        .post(
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}),
        )
        .await;
    assert!(status == 200 || status == 429, "{status}: {body}");
    status
}

/// How many chat generations the server has counted as cancelled because their client left
/// (`/metrics`; the registry is the process's, shared by every server of these tests, and only
/// the Ctrl-C test cancels generations).
async fn cancelled_generations(server: &Server) -> u64 {
    let metrics = server
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("millm_inference_requests_total{")
                && l.contains("endpoint=\"chat\"")
                && l.contains("outcome=\"cancelled\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until the server has counted `n` cancelled generations, and asserts the model is free.
async fn wait_cancelled(server: &Server, n: u64) {
    let deadline = Instant::now() + super::WAIT;
    while cancelled_generations(server).await < n {
        assert!(
            Instant::now() < deadline,
            "the server never counted the generation as cancelled (/metrics)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(probe(server).await, 200, "the model is free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_answer_on_the_server_and_returns_to_the_prompt() {
    const CONTEXT: &str = "16384";
    let question = "Why is the sky blue?";
    let server = Server::start_with(None, |s| {
        s.max_queued_requests = 0;
        s.max_context_tokens = CONTEXT.parse().unwrap();
    })
    .await;
    // A long context, for an answer that goes on far longer than the test.
    server
        .chat_model("tiny", true, |cfg| {
            cfg["max_position_embeddings"] = json!(CONTEXT.parse::<u64>().unwrap())
        })
        .await;
    // This model's greedy answer runs to its length: it never ends by itself early.
    let (start, finish) = server
        .answer(question, json!({"temperature": 0, "max_tokens": 20}))
        .await;
    assert_eq!(finish, "length");
    let beginning = regex_escape(&on_terminal(&start).chars().take(6).collect::<String>());
    let args = ["run", "tiny", "--temperature", "0", "--max-tokens", "16000"];
    let cancelled = cancelled_generations(&server).await;

    let mut terminal = Terminal::spawn(&server.base, &args, &[]);
    terminal.expect(">>> ").await;
    terminal.send(&format!("{question}\n")).await;
    // The answer is being written on the terminal…
    terminal.expect(&beginning).await;
    // …and generated on the server, which refuses a second generation meanwhile.
    assert_eq!(probe(&server).await, 429);
    terminal.send(CTRL_C).await;
    terminal.expect("\n>>> ").await;
    // The server stopped it because the client left, and the model is free.
    wait_cancelled(&server, cancelled + 1).await;
    // Ctrl-C at the empty prompt leaves.
    terminal.send(CTRL_C).await;
    let exit = terminal.exit().await;
    assert_eq!(exit.code, Some(0), "{}", exit.output);

    // With a prompt, Ctrl-C stops the answer the same way and exits as a SIGINT does.
    let mut terminal = Terminal::spawn(&server.base, &[&args[..], &[question]].concat(), &[]);
    terminal.expect(&beginning).await;
    terminal.send(CTRL_C).await;
    let exit = terminal.exit().await;
    assert_eq!(exit.code, Some(130), "{}", exit.output);
    wait_cancelled(&server, cancelled + 2).await;
    server.stop().await;
}

/// `text` as a Python regular expression that matches it literally.
fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_punctuation() || c.is_ascii_control() {
                format!("\\{c}")
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `millm ps`'s table as column → cell of its one row (cells are split on two spaces or more).
fn ps_row(stdout: &str) -> std::collections::HashMap<String, String> {
    let split = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut lines = stdout.lines();
    let header = split(lines.next().unwrap_or_default());
    let row = split(lines.next().unwrap_or_default());
    assert_eq!(header.len(), row.len(), "{stdout}");
    header.into_iter().zip(row).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_unlock_and_ps_show_the_lock_the_idle_unload_and_the_speed() {
    let server = Server::start_with(None, |s| s.idle_unload_seconds = Some(3600)).await;
    let id = server.chat_model("tiny", true, |_| {}).await;
    let other = server.chat_model("other", false, |_| {}).await;

    let stdout = ok(&run(server.millm(&["ps"])).await);
    let row = ps_row(&stdout);
    assert_eq!(row["NAME"], "tiny", "{stdout}");
    assert_eq!(row["LOCKED"], "no", "{stdout}");
    // Unused since its load: unloaded an hour after it.
    assert!(
        row["IDLE UNLOAD"] == "in 1h 00m" || row["IDLE UNLOAD"].starts_with("in 59m "),
        "{stdout}"
    );
    assert!(
        stdout.contains("Generation: none in the last minute."),
        "{stdout}"
    );
    let shown: Value = serde_json::from_str(&ok(&run(server.millm(&["ps", "--json"])).await))
        .expect("ps --json is JSON");
    assert_eq!(shown["loaded"]["locked"], false);
    let at = shown["loaded"]["idle_unload_at"]
        .as_str()
        .expect("an idle unload time");
    let at = chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
    let left = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        left.num_seconds() > 3500 && left.num_seconds() <= 3600,
        "{shown}"
    );
    assert_eq!(shown["tokens_per_second"], Value::Null);

    // A model that is not loaded cannot be locked.
    let out = run(server.millm(&["lock", "other"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("(MODEL_NOT_LOADED)"),
        "{}",
        text(&out.stderr)
    );

    // Locked: not replaced, not unloaded when idle.
    let stdout = ok(&run(server.millm(&["lock", "tiny"])).await);
    assert!(
        stdout.contains(&format!("Locked tiny (id {id})")),
        "{stdout}"
    );
    assert_eq!(
        server.get(&format!("/api/models/{id}")).await["locked"],
        true
    );
    let stdout = ok(&run(server.millm(&["ps"])).await);
    let row = ps_row(&stdout);
    assert_eq!(row["LOCKED"], "yes");
    assert_eq!(row["IDLE UNLOAD"], "-");

    // Another model cannot be run meanwhile: the server names the lock.
    let out = run(server.millm(&["run", "other", PROMPT])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("(MODEL_LOCKED; `millm unlock` unlocks it)"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        server.get(&format!("/api/models/{other}")).await["status"],
        "ready"
    );
    assert_eq!(
        server.get(&format!("/api/models/{id}")).await["status"],
        "loaded"
    );

    // A generation shows in the last minute's speed.
    server.sampled_answer().await;
    let stdout = ok(&run(server.millm(&["ps"])).await);
    let rate = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Generation: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|r| r.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("a speed in: {stdout}"));
    assert!(rate > 0.0, "{stdout}");

    // Without a name: the loaded model.
    let stdout = ok(&run(server.millm(&["unlock"])).await);
    assert!(
        stdout.contains(&format!("Unlocked tiny (id {id})")),
        "{stdout}"
    );
    assert_eq!(
        server.get(&format!("/api/models/{id}")).await["locked"],
        false
    );
    assert_eq!(
        ps_row(&ok(&run(server.millm(&["ps"])).await))["LOCKED"],
        "no"
    );
    server.stop().await;
}
