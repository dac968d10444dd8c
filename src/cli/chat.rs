//! `millm run`: a model's answer streamed from `/v1/chat/completions` as it is written, for one
//! prompt or turn after turn in a chat that keeps its history; the model is loaded first when it
//! is not. Ctrl-C drops the connection, and the server stops a generation whose client left.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::time::Instant;

use futures::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::client::{openai_error, Client, ClientError};
use super::commands::{fail, load_following, print_json, Failure, Interrupt, Outcome};
use super::progress::note;
use crate::api::schema::ModelResponse;
use crate::domain::ModelStatus;

/// `millm run`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// Id, name or repo id.
    pub model: String,
    /// The prompt (its words are joined). Without one: a chat on the terminal, or the prompt
    /// read from stdin when it is not a terminal.
    pub prompt: Vec<String>,
    /// A system message that opens the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling temperature; 0 always picks the likeliest token [server default: 1].
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling: keep the likeliest tokens up to this probability [server default: 1].
    #[arg(long)]
    pub top_p: Option<f64>,
    /// The most tokens in an answer [server default: what the context leaves].
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// Seed of the sampler, for answers that repeat.
    #[arg(long)]
    pub seed: Option<u64>,
    /// One answer, not streamed, printed as the server's JSON.
    #[arg(long)]
    pub json: bool,
    /// After each answer, its token counts and speed (on stderr).
    #[arg(long)]
    pub verbose: bool,
}

const CHAT_HELP: &str = "  /bye      leave (or Ctrl-D)\n  /clear    forget the conversation so far\n  /?        this help\nCtrl-C stops an answer while it is written; at the prompt it leaves.";

/// Runs `millm run`.
pub async fn run(client: &Client, options: RunOptions) -> Outcome {
    // Installed first: from here on Ctrl-C is ours to interpret, during the load as later.
    let mut interrupt = Interrupt::install();
    let model = ready_to_answer(client, &options.model, &mut interrupt).await?;
    let prompt = (!options.prompt.is_empty()).then(|| options.prompt.join(" "));
    let prompt = match prompt {
        Some(p) => Some(p),
        None if !std::io::stdin().is_terminal() => Some(read_stdin()?),
        None => None,
    };
    let mut chat = Chat::new(&model, &options);
    match prompt {
        Some(prompt) if options.json => chat.whole(client, &prompt, &mut interrupt).await,
        Some(prompt) => chat.once(client, &prompt, &mut interrupt).await,
        None if options.json => Err(fail(
            "--json answers one prompt: give it after the model (`millm run MODEL PROMPT --json`)",
        )),
        None => chat.interactive(client, &mut interrupt).await,
    }
}

/// The model `wanted` names, loaded: loads it (with the load bar) when it is not, or refuses
/// with the reason it cannot answer.
async fn ready_to_answer(
    client: &Client,
    wanted: &str,
    interrupt: &mut Interrupt,
) -> Result<ModelResponse, Failure> {
    let m = client.resolve(wanted).await?;
    if !m.supports_inference {
        return Err(fail(format!(
            "{} (id {}) cannot generate text: the server loads {} models but has no text generation for that architecture",
            m.name,
            m.id,
            m.architecture.as_deref().unwrap_or("its")
        )));
    }
    match m.status {
        ModelStatus::Loaded => Ok(m),
        ModelStatus::Ready => load_following(client, &m, true, interrupt).await,
        ModelStatus::Loading => load_following(client, &m, false, interrupt).await,
        ModelStatus::Downloading => Err(fail(format!(
            "{} (id {}) is still downloading ({}%); run it once `millm list` shows it ready",
            m.name,
            m.id,
            m.download_progress.unwrap_or(0)
        ))),
        ModelStatus::Error => Err(fail(format!(
            "{} (id {}) is in error: {}",
            m.name,
            m.id,
            m.error_message.as_deref().unwrap_or("see `millm show`")
        ))),
    }
}

/// Standard input as one prompt, for `echo … | millm run MODEL`.
fn read_stdin() -> Result<String, Failure> {
    let mut prompt = String::new();
    std::io::stdin()
        .read_to_string(&mut prompt)
        .map_err(|e| fail(format!("cannot read the prompt from stdin: {e}")))?;
    let prompt = prompt.trim().to_string();
    if prompt.is_empty() {
        return Err(fail(
            "no prompt: give one after the model, pipe one in, or run on a terminal to chat",
        ));
    }
    Ok(prompt)
}

/// A conversation with one model: its history and the sampling settings of every turn.
struct Chat {
    /// The model as `/v1` names it: its id, which no other model shares.
    model: String,
    /// Its name, for a person.
    name: String,
    messages: Vec<Value>,
    /// `temperature`, `top_p`, `max_tokens`, `seed` as given.
    sampling: Map<String, Value>,
    verbose: bool,
}

/// How a streamed answer ended.
enum Ended {
    /// `[DONE]` after the last chunk.
    Done,
    /// Ctrl-C: the connection was dropped.
    Interrupted,
}

/// A streamed answer: its text so far and, at the end, the token counts.
struct Answer {
    text: String,
    usage: Option<Usage>,
    ended: Ended,
    took: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    prompt: u64,
    completion: u64,
}

impl Chat {
    fn new(model: &ModelResponse, options: &RunOptions) -> Chat {
        let mut messages = Vec::new();
        if let Some(system) = options.system.as_deref().filter(|s| !s.trim().is_empty()) {
            messages.push(json!({"role": "system", "content": system}));
        }
        let mut sampling = Map::new();
        let mut set = |key: &str, value: Option<Value>| {
            if let Some(v) = value {
                sampling.insert(key.to_string(), v);
            }
        };
        set("temperature", options.temperature.map(Value::from));
        set("top_p", options.top_p.map(Value::from));
        set("max_tokens", options.max_tokens.map(Value::from));
        set("seed", options.seed.map(Value::from));
        Chat {
            model: model.id.to_string(),
            name: model.name.clone(),
            messages,
            sampling,
            verbose: options.verbose,
        }
    }

    /// The request for the conversation so far.
    fn body(&self, stream: bool) -> Value {
        let mut body = self.sampling.clone();
        body.insert("model".into(), json!(self.model));
        body.insert("messages".into(), json!(self.messages));
        if stream {
            body.insert("stream".into(), json!(true));
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Value::Object(body)
    }

    /// One prompt, the answer printed as it arrives; Ctrl-C stops it and exits 130.
    async fn once(&mut self, client: &Client, prompt: &str, interrupt: &mut Interrupt) -> Outcome {
        self.messages
            .push(json!({"role": "user", "content": prompt}));
        let answer = self.stream(client, interrupt).await?;
        match answer.ended {
            Ended::Done => {
                self.report(&answer);
                Ok(())
            }
            Ended::Interrupted => Err(Failure::Interrupted),
        }
    }

    /// One prompt, not streamed, printed as the server's JSON.
    async fn whole(&mut self, client: &Client, prompt: &str, interrupt: &mut Interrupt) -> Outcome {
        self.messages
            .push(json!({"role": "user", "content": prompt}));
        let body = self.body(false);
        let answer = async {
            let response = client.chat(&body).await?;
            response.json::<Value>().await.map_err(|e| {
                ClientError::Other(format!("the answer is not JSON: {}", client.read_failed(e)))
            })
        };
        tokio::select! {
            answer = answer => {
                print_json(&answer?);
                Ok(())
            }
            _ = interrupt.recv() => Err(Failure::Interrupted),
        }
    }

    /// Turn after turn on the terminal until `/bye`, Ctrl-D, or Ctrl-C at the prompt.
    async fn interactive(&mut self, client: &Client, interrupt: &mut Interrupt) -> Outcome {
        let mut lines = spawn_line_reader();
        eprintln!(
            "Chatting with {}. /bye or Ctrl-D leaves, /? for help.",
            self.name
        );
        loop {
            print_flushed(">>> ");
            let line = tokio::select! {
                line = lines.recv() => line,
                _ = interrupt.recv() => {
                    // The terminal has already discarded the line being typed.
                    println!();
                    return Ok(());
                }
            };
            let Some(line) = line else {
                // Ctrl-D (end of input) at the prompt.
                println!();
                return Ok(());
            };
            let text = line.trim();
            match text {
                "" => continue,
                "/bye" | "/exit" => return Ok(()),
                "/?" | "/help" => {
                    println!("{CHAT_HELP}");
                    continue;
                }
                "/clear" => {
                    self.messages.retain(|m| m["role"] == "system");
                    println!("Forgot the conversation.");
                    continue;
                }
                command if command.starts_with('/') && !command.contains(char::is_whitespace) => {
                    println!("Unknown command '{command}'. Type /? for help.");
                    continue;
                }
                _ => {}
            }
            self.messages.push(json!({"role": "user", "content": text}));
            match self.stream(client, interrupt).await {
                Ok(answer) => {
                    if let Ended::Done = answer.ended {
                        self.report(&answer);
                    }
                    // An interrupted answer stays in the history as far as it got, so the
                    // next turn can refer to it; an empty one leaves the question unanswered.
                    if answer.text.is_empty() {
                        self.messages.pop();
                    } else {
                        self.messages
                            .push(json!({"role": "assistant", "content": answer.text}));
                    }
                }
                Err(Failure::Error(e)) => {
                    eprintln!("millm: {e}");
                    self.messages.pop();
                }
                Err(Failure::Interrupted) => return Err(Failure::Interrupted),
            }
        }
    }

    /// Streams one answer to stdout as it arrives, ending it with a newline. Ctrl-C drops the
    /// connection (the server then stops generating) and returns what was written so far.
    async fn stream(&self, client: &Client, interrupt: &mut Interrupt) -> Result<Answer, Failure> {
        let started = Instant::now();
        let mut answer = Answer {
            text: String::new(),
            usage: None,
            ended: Ended::Interrupted,
            took: Default::default(),
        };
        let body = self.body(true);
        let response = tokio::select! {
            r = client.chat(&body) => r?,
            _ = interrupt.recv() => return Ok(answer),
        };
        let mut body = response.bytes_stream();
        let mut events = EventStream::default();
        let mut out = Printer::default();
        let outcome = loop {
            let bytes = tokio::select! {
                b = body.next() => b,
                _ = interrupt.recv() => break Ok(Ended::Interrupted),
            };
            let bytes = match bytes {
                Some(Ok(bytes)) => bytes,
                Some(Err(e)) => break Err(client.read_failed(e)),
                None => {
                    break Err(ClientError::Other(
                        "the server ended the answer before its end ([DONE])".into(),
                    ))
                }
            };
            let mut done = None;
            for data in events.push(&bytes) {
                match Streamed::parse(&data) {
                    Ok(Streamed::Text(t)) => {
                        out.write(&t);
                        answer.text.push_str(&t);
                    }
                    Ok(Streamed::Usage(u)) => answer.usage = Some(u),
                    Ok(Streamed::Nothing) => {}
                    Ok(Streamed::Done) => done = Some(Ok(Ended::Done)),
                    Err(e) => done = Some(Err(e)),
                }
                if done.is_some() {
                    break;
                }
            }
            if let Some(done) = done {
                break done;
            }
        };
        // Dropping the body closes the connection: that is how the server learns to stop.
        drop(body);
        out.end_line();
        answer.took = started.elapsed();
        answer.ended = outcome?;
        Ok(answer)
    }

    /// With `--verbose`, the token counts and speed of an answer, on stderr.
    fn report(&self, answer: &Answer) {
        if !self.verbose {
            return;
        }
        match answer.usage {
            Some(u) => {
                let secs = answer.took.as_secs_f64();
                let rate = if secs > 0.0 {
                    u.completion as f64 / secs
                } else {
                    0.0
                };
                eprintln!(
                    "{} prompt tokens, {} answer tokens, {:.1}s, {rate:.1} tokens/s",
                    u.prompt, u.completion, secs
                );
            }
            None => note("the server sent no token counts"),
        }
    }
}

/// Writes text as it comes, flushed, and remembers whether the line was left open.
#[derive(Default)]
struct Printer {
    open_line: bool,
    broken: bool,
}

impl Printer {
    fn write(&mut self, text: &str) {
        if text.is_empty() || self.broken {
            return;
        }
        let mut out = std::io::stdout().lock();
        // A closed stdout (`| head`) is the reader's choice: stop printing, quietly.
        if out
            .write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            self.broken = true;
        }
        self.open_line = !text.ends_with('\n');
    }

    fn end_line(&mut self) {
        if self.open_line {
            self.write("\n");
        }
    }
}

fn print_flushed(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// Lines from stdin, read on a thread of their own (a blocking read cannot be cancelled, and
/// the chat must keep listening for Ctrl-C meanwhile); the channel closes at end of input.
fn spawn_line_reader() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(1);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        loop {
            let mut line = String::new();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.blocking_send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Splits a `text/event-stream` body, fed in pieces cut anywhere, into its events' data.
#[derive(Default)]
struct EventStream {
    pending: Vec<u8>,
    data: Vec<String>,
}

impl EventStream {
    /// The data of every event that `bytes` completes.
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            // Cut at a newline, so never inside a UTF-8 sequence.
            let line = String::from_utf8_lossy(&line[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                self.data
                    .push(value.strip_prefix(' ').unwrap_or(value).to_string());
            }
            // Comments (`:`) and the other fields (`event`, `id`, `retry`) say nothing here.
        }
        events
    }
}

/// What one streamed event says.
#[derive(Debug, PartialEq)]
enum Streamed {
    /// Text of the answer.
    Text(String),
    /// The token counts, in the last chunk (`stream_options.include_usage`).
    Usage(Usage),
    /// A chunk without text (the role, the finish reason).
    Nothing,
    /// `[DONE]`.
    Done,
}

impl Streamed {
    /// Reads an event's data; a `{"error": …}` chunk is the error it carries.
    fn parse(data: &str) -> Result<Streamed, ClientError> {
        if data.trim() == "[DONE]" {
            return Ok(Streamed::Done);
        }
        let chunk: Value = serde_json::from_str(data).map_err(|_| {
            ClientError::Other(format!(
                "the server streamed something that is not JSON: {data}"
            ))
        })?;
        if let Some(e) = openai_error(200, &chunk) {
            return Err(e);
        }
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
            return Ok(if text.is_empty() {
                Streamed::Nothing
            } else {
                Streamed::Text(text.to_string())
            });
        }
        let usage = &chunk["usage"];
        if let (Some(prompt), Some(completion)) = (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64(),
        ) {
            return Ok(Streamed::Usage(Usage { prompt, completion }));
        }
        Ok(Streamed::Nothing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_whole_however_the_body_is_cut() {
        let body = "data: {\"a\":1}\n\n: keep-alive\n\ndata: [DONE]\r\n\r\n";
        for cut in 0..body.len() {
            let mut events = EventStream::default();
            let mut seen = events.push(&body.as_bytes()[..cut]);
            seen.extend(events.push(&body.as_bytes()[cut..]));
            assert_eq!(seen, ["{\"a\":1}", "[DONE]"], "cut at {cut}");
        }
    }

    #[test]
    fn an_events_data_lines_join_with_newlines() {
        let mut events = EventStream::default();
        assert_eq!(events.push(b"data: one\ndata:two\n\n"), ["one\ntwo"]);
    }

    #[test]
    fn chunks_give_text_usage_and_the_end() {
        let text = r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
        assert_eq!(Streamed::parse(text).unwrap(), Streamed::Text("Hi".into()));
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        assert_eq!(Streamed::parse(role).unwrap(), Streamed::Nothing);
        let finish = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#;
        assert_eq!(Streamed::parse(finish).unwrap(), Streamed::Nothing);
        let usage =
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
        assert_eq!(
            Streamed::parse(usage).unwrap(),
            Streamed::Usage(Usage {
                prompt: 7,
                completion: 3
            })
        );
        assert_eq!(Streamed::parse("[DONE]").unwrap(), Streamed::Done);
    }

    #[test]
    fn an_error_chunk_is_the_servers_message() {
        let chunk = r#"{"error":{"message":"The model was unloaded while it was answering.","type":"server_error","param":null,"code":null}}"#;
        let e = Streamed::parse(chunk).unwrap_err();
        assert_eq!(
            e.to_string(),
            "The model was unloaded while it was answering. (server_error)"
        );
    }
}
