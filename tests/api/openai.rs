//! `/v1` against the real server: a tiny real checkpoint (random weights, a real byte-level BPE
//! tokenizer, a ChatML chat template) answers chat and completion requests, streamed and not,
//! in OpenAI's shapes; the error cases of API.md; a lease revoked mid-stream; the queue.

use std::time::Duration;

use millm_testkit::TinyLlama;
use serde_json::{json, Value};

use crate::support::{sample, spawn_app, spawn_configured, spawn_with, test_settings, Db, TestApp};

const LOAD_WAIT: Duration = Duration::from_secs(60);
const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// A loaded tiny model named `name`, with a chat template unless `chat` is false.
async fn loaded(app: &TestApp, name: &str, chat: bool) -> i64 {
    let model = app.write_model(name, TinyLlama::default());
    if chat {
        let path = model.dir.join("tokenizer_config.json");
        let mut cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cfg["chat_template"] = json!(CHATML);
        std::fs::write(&path, cfg.to_string()).unwrap();
    }
    let id = app.add_local(&model.dir, "FP32").await.data()["id"]
        .as_i64()
        .unwrap();
    let r = app.post(&format!("/api/models/{id}/load"), json!({})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    app.wait_status(id, "loaded", LOAD_WAIT).await;
    id
}

/// The status and JSON answer of a `/v1` POST (`app.post` reads the envelope; this does not).
async fn v1(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let reply = app.send(app.http.post(app.url(path)).json(&body)).await;
    (reply.status, reply.body)
}

/// The `data:` payloads of a streamed answer, in order.
async fn sse(app: &TestApp, path: &str, body: Value) -> Vec<String> {
    let resp = app
        .http
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .collect()
}

fn chat_body(extra: Value) -> Value {
    let mut body = json!({"model": "tiny", "messages": [{"role": "user", "content": "Hello there"}],
                          "temperature": 0, "max_tokens": 12});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_completions_answer_in_openais_shapes_streamed_or_not() {
    let app = spawn_app(Db::Sqlite).await;
    assert_eq!(
        app.get("/v1/models").await.body["data"],
        json!([]),
        "nothing loaded"
    );
    let id = loaded(&app, "tiny", true).await;
    let list = app.get("/v1/models").await.body;
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], "tiny");
    assert_eq!(list["data"][0]["owned_by"], "millm");

    let (status, whole) = v1(&app, "/v1/chat/completions", chat_body(json!({}))).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["model"], "tiny");
    let choice = &whole["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let answer = choice["message"]["content"].as_str().unwrap().to_string();
    let usage = &whole["usage"];
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + completion
    );
    match choice["finish_reason"].as_str().unwrap() {
        "length" => assert_eq!(completion, 12),
        "stop" => assert!(completion < 12),
        other => panic!("finish_reason {other}"),
    }
    // The model's id and repo id name it too; greedy answers the same every time.
    let (_, again) = v1(
        &app,
        "/v1/chat/completions",
        chat_body(json!({"model": id.to_string()})),
    )
    .await;
    assert_eq!(again["choices"][0]["message"]["content"], json!(answer));

    // Streamed: a role chunk, content deltas that add up to the same answer, the finish chunk,
    // the usage chunk, then [DONE].
    let events = sse(
        &app,
        "/v1/chat/completions",
        chat_body(json!({"stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, answer);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(
        finish["choices"][0]["finish_reason"],
        choice["finish_reason"]
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], *usage);

    // Completions: the same model on a raw prompt.
    let body =
        json!({"model": "tiny", "prompt": "The model is", "max_tokens": 6, "temperature": 0});
    let (status, done) = v1(&app, "/v1/completions", body.clone()).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["object"], "text_completion");
    let text = done["choices"][0]["text"].as_str().unwrap().to_string();
    let mut streamed_body = body;
    streamed_body["stream"] = json!(true);
    let events = sse(&app, "/v1/completions", streamed_body).await;
    let streamed: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, text);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_repeat_and_stop_strings_end_the_answer_before_them() {
    let app = spawn_app(Db::Sqlite).await;
    loaded(&app, "tiny", true).await;
    let sampled = json!({"temperature": 1.0, "top_p": 0.9, "seed": 1234, "max_tokens": 16});
    let (_, a) = v1(&app, "/v1/chat/completions", chat_body(sampled.clone())).await;
    let (_, b) = v1(&app, "/v1/chat/completions", chat_body(sampled)).await;
    assert_eq!(
        a["choices"][0]["message"], b["choices"][0]["message"],
        "same seed, same text"
    );

    let (_, full) = v1(
        &app,
        "/v1/completions",
        json!({"model": "tiny", "prompt": "the load", "max_tokens": 24, "temperature": 0}),
    )
    .await;
    let text = full["choices"][0]["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 6, "enough text to cut: {text:?}");
    let stop: String = chars[3..5].iter().collect();
    let cut = &text[..text.find(&stop).unwrap()];
    for stream in [false, true] {
        let body = json!({"model": "tiny", "prompt": "the load", "max_tokens": 24,
                          "temperature": 0, "stop": [stop.clone()], "stream": stream});
        let got = if stream {
            let events = sse(&app, "/v1/completions", body).await;
            events[..events.len() - 1]
                .iter()
                .map(|e| serde_json::from_str::<Value>(e).unwrap())
                .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
                .collect::<String>()
        } else {
            let (_, r) = v1(&app, "/v1/completions", body).await;
            assert_eq!(r["choices"][0]["finish_reason"], "stop");
            r["choices"][0]["text"].as_str().unwrap().to_string()
        };
        assert_eq!(
            got, cut,
            "stream={stream}: the stop string and what follows never go out"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openais_error_shape() {
    // Without loading on request, so that a known model that is not loaded says so.
    let app = spawn_configured(Db::Sqlite, |s| s.load_on_request = false).await;
    let (status, body) = v1(&app, "/v1/chat/completions", chat_body(json!({}))).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("model_not_found"))
    );
    assert_eq!(body["error"]["type"], "invalid_request_error");

    // Known but not loaded.
    let other = app.write_model("idle", TinyLlama::default());
    app.add_local(&other.dir, "Q8").await;
    let (status, body) = v1(
        &app,
        "/v1/chat/completions",
        chat_body(json!({"model": "idle"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("model_not_loaded"))
    );

    loaded(&app, "tiny", true).await;
    for (extra, param) in [
        (json!({"n": 2}), "n"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
            "tools",
        ),
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            "messages",
        ),
        (json!({"max_tokens": -1}), "max_tokens"),
        (json!({"temperature": 3}), "temperature"),
    ] {
        let (status, body) = v1(&app, "/v1/chat/completions", chat_body(extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{extra}");
        assert_eq!(body["error"]["param"], param, "{extra}");
    }
    let (status, body) = v1(
        &app,
        "/v1/chat/completions",
        chat_body(json!({"max_tokens": 100000})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("context_length_exceeded"))
    );
    let (status, body) = v1(
        &app,
        "/v1/completions",
        json!({"model": "tiny", "prompt": 7}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["param"].clone()),
        (400, json!("prompt"))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_a_chat_template_still_completes() {
    let app = spawn_app(Db::Sqlite).await;
    loaded(&app, "plain", false).await;
    let (status, body) = v1(
        &app,
        "/v1/chat/completions",
        chat_body(json!({"model": "plain"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("chat template"),
        "{body}"
    );
    let (status, body) = v1(
        &app,
        "/v1/completions",
        json!({"model": "plain", "prompt": "Hi", "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

/// A streamed answer to the end of the context (at temperature 1 the tiny model rarely stops),
/// once its first chunk has come: it holds the model then. The response and that chunk.
async fn holding_stream(app: &TestApp, seed: u64) -> (reqwest::Response, String) {
    let body = json!({"model": "tiny", "prompt": "the", "stream": true, "temperature": 1.0,
                      "seed": seed, "max_tokens": 2000});
    let mut resp = app
        .http
        .post(app.url("/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&resp.chunk().await.unwrap().unwrap()).to_string();
    assert!(head.contains("data: "), "{head}");
    (resp, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unload_mid_stream_ends_it_with_an_error_then_done_and_a_full_queue_answers_429() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(Db::Sqlite, dir.path()).await;
    settings.graceful_unload_timeout = 0;
    settings.max_queued_requests = 1;
    let app = spawn_with(settings, dir).await;
    let id = loaded(&app, "tiny", true).await;
    let (mut first, head) = holding_stream(&app, 3).await;
    // Two more at once: one waits for the model, the other is refused (a queue of one).
    let ask = |prompt: &str| {
        let http = app.http.clone();
        let url = app.url("/v1/completions");
        let body = json!({"model": "tiny", "prompt": prompt, "max_tokens": 2});
        tokio::spawn(async move {
            let resp = http.post(url).json(&body).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        })
    };
    let (mut a, mut b) = (ask("a"), ask("b"));
    let (refused, waiting) = tokio::select! {
        r = &mut a => (r.unwrap(), b),
        r = &mut b => (r.unwrap(), a),
    };
    assert_eq!(refused.0, 429, "{}", refused.1);
    assert_eq!(refused.1["error"]["type"], "rate_limit_error");

    let r = app
        .post(&format!("/api/models/{id}/unload"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut rest = head;
    while let Some(bytes) = first.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&bytes));
    }
    let data: Vec<&str> = rest
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(*data.last().unwrap(), "[DONE]");
    let error: Value = serde_json::from_str(data[data.len() - 2]).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unloaded"),
        "{error}"
    );
    // The one that waited finds the model gone.
    assert_eq!(waiting.await.unwrap().0, 503);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openais_own_python_client_works_unchanged() {
    let app = spawn_app(Db::Sqlite).await;
    loaded(&app, "tiny", true).await;
    let python = std::env::var("MILLM_TEST_PYTHON")
        .expect("MILLM_TEST_PYTHON is not set: run the tests with `bash scripts/test.sh`");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/openai_client.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(&app.base)
        .arg("tiny")
        .env("OPENAI_API_KEY", "unused")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the openai client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["models"], json!(["tiny"]));
    let usage = &seen["completion"]["usage"];
    assert_eq!(
        usage["total_tokens"],
        json!(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );
    assert_eq!(seen["stream"]["content"], seen["chat"]["content"]);
    assert_eq!(seen["stream"]["finish"], seen["chat"]["finish"]);
    assert_eq!(seen["stream"]["usage"], seen["chat"]["usage"]);
    assert_eq!(
        seen["not_found"],
        json!({"status": 404, "code": "model_not_found"})
    );
    assert_eq!(seen["bad_request"], json!({"status": 400, "param": "n"}));
    let emb = &seen["embeddings"];
    assert_eq!(emb["count"], 2);
    assert_eq!(emb["indexes"], json!([0, 1]));
    assert_eq!(emb["dims"], TinyLlama::default().hidden);
    assert_eq!(emb["same_as_floats"], true, "base64 and floats disagree");
    assert!(emb["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_architecture_that_cannot_generate_still_loads_and_v1_says_why() {
    let app = spawn_app(Db::Sqlite).await;
    let model = app.write_model("neox", TinyLlama::default());
    let path = model.dir.join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["architectures"] = json!(["GPTNeoXForCausalLM"]);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let r = app.add_local(&model.dir, "Q8").await;
    assert_eq!(r.data()["supports_inference"], false);
    let id = r.data()["id"].as_i64().unwrap();
    app.post(&format!("/api/models/{id}/load"), json!({})).await;
    let row = app.wait_status(id, "loaded", LOAD_WAIT).await;
    assert_eq!(row["supports_inference"], false);
    assert_eq!(app.get("/v1/models").await.body["data"], json!([]));
    let (status, body) = v1(
        &app,
        "/v1/completions",
        json!({"model": "neox", "prompt": "Hi", "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "model_cannot_generate");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GPTNeoXForCausalLM"),
        "{body}"
    );

    // A Llama reports that it can.
    let tiny = app.write_model("llama", TinyLlama::default());
    let r = app.add_local(&tiny.dir, "Q8").await;
    assert_eq!(r.data()["supports_inference"], true);

    // With the Llama loaded, naming the NeoX model says it cannot generate, without loading it
    // in the Llama's place.
    let llama = r.data()["id"].as_i64().unwrap();
    let (status, body) = v1(
        &app,
        "/v1/completions",
        json!({"model": "llama", "prompt": "Hi", "max_tokens": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = v1(
        &app,
        "/v1/completions",
        json!({"model": "neox", "prompt": "Hi", "max_tokens": 3}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("model_cannot_generate")),
        "{body}"
    );
    assert_eq!(
        app.get(&format!("/api/models/{llama}")).await.data()["status"],
        "loaded"
    );
    assert_eq!(
        app.get(&format!("/api/models/{id}")).await.data()["status"],
        "ready"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_stops_its_generation_and_frees_the_model() {
    let app = spawn_app(Db::Sqlite).await;
    loaded(&app, "tiny", true).await;
    const CANCELLED: &str =
        r#"millm_inference_requests_total{endpoint="completions",outcome="cancelled"}"#;
    let scrape = || async {
        let text = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        sample(&text, CANCELLED)
    };
    let before = scrape().await;
    let (stream, _) = holding_stream(&app, 5).await;
    // A second request waits for the model meanwhile.
    let waiting = {
        let (http, url) = (app.http.clone(), app.url("/v1/completions"));
        tokio::spawn(async move {
            let body = json!({"model": "tiny", "prompt": "a", "max_tokens": 1});
            let resp = http.post(url).json(&body).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        })
    };
    drop(stream);
    // The server notices, stops the generation (counted as cancelled) and the next one answers.
    let (status, answer) = waiting.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while scrape().await < before + 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no cancelled generation was counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}
