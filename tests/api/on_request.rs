//! Inference in the product: a `/v1` request loads the model it names (`LOAD_ON_REQUEST`),
//! two models asked for at once never load together, a locked model is not replaced, an idle
//! model is unloaded (`IDLE_UNLOAD_SECONDS`), embeddings, and the inference metrics.

use std::time::Duration;

use millm_testkit::TinyLlama;
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::{sample, spawn_configured, Db, TestApp};

const LOAD_WAIT: Duration = Duration::from_secs(60);
const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// A registered (`ready`, not loaded) tiny model that can chat, with its random weights from
/// `seed`; returns its id.
async fn ready(app: &TestApp, name: &str, seed: u64) -> i64 {
    let model = app.write_model(
        name,
        TinyLlama {
            seed,
            ..TinyLlama::default()
        },
    );
    let path = model.dir.join("tokenizer_config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["chat_template"] = json!(CHATML);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let reply = app.add_local(&model.dir, "FP32").await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply.data()["id"].as_i64().unwrap()
}

/// A `/v1` POST: status, `Retry-After` and the JSON answer.
async fn v1(app: &TestApp, path: &str, body: Value) -> (u16, Option<String>, Value) {
    let resp = app
        .http
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, resp.json().await.unwrap())
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello"}],
           "temperature": 0, "max_tokens": 4})
}

async fn status_of(app: &TestApp, id: i64) -> Value {
    app.get(&format!("/api/models/{id}")).await.data().clone()
}

async fn v1_model_ids(app: &TestApp) -> Vec<String> {
    let list = app.send(app.http.get(app.url("/v1/models"))).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let mut ids: Vec<String> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

async fn a_request_loads_the_model_it_names_and_v1_models_lists_every_model_that_can(db: Db) {
    let app = spawn_configured(db, |_| {}).await;
    let a = ready(&app, "alpha", 1).await;
    let b = ready(&app, "beta", 2).await;
    assert_eq!(v1_model_ids(&app).await, ["alpha", "beta"]);

    let (status, _, answer) = v1(&app, "/v1/chat/completions", chat("alpha")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "alpha");
    assert_eq!(status_of(&app, a).await["status"], "loaded");

    // Naming the other model replaces the loaded one.
    let (status, _, answer) = v1(
        &app,
        "/v1/completions",
        json!({"model": "beta", "prompt": "Hi", "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(status_of(&app, b).await["status"], "loaded");
    assert_eq!(status_of(&app, a).await["status"], "ready");
    assert_eq!(v1_model_ids(&app).await, ["alpha", "beta"]);
    app.stop().await;
}

async fn twenty_requests_naming_two_models_at_once_never_load_both(db: Db) {
    let app = spawn_configured(db, |s| s.max_queued_requests = 32).await;
    let a = ready(&app, "alpha", 3).await;
    let b = ready(&app, "beta", 4).await;

    // Watch the registry while the requests run: never two models loaded, never two loading.
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = {
        let (http, url, stop) = (app.http.clone(), app.url("/api/models"), stop.clone());
        tokio::spawn(async move {
            let mut snapshots = 0;
            while !stop.is_cancelled() {
                let list: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
                let count = |s: &str| {
                    list["data"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|m| m["status"] == s)
                        .count()
                };
                assert!(count("loaded") <= 1, "two models loaded: {list}");
                assert!(count("loading") <= 1, "two models loading: {list}");
                snapshots += 1;
            }
            snapshots
        })
    };
    let requests = (0..20).map(|i| {
        let name = if i % 2 == 0 { "alpha" } else { "beta" };
        let app = &app;
        async move { (name, v1(app, "/v1/chat/completions", chat(name)).await) }
    });
    let answers = futures::future::join_all(requests).await;
    stop.cancel();
    let snapshots = watcher
        .await
        .expect("the registry never showed two models in memory");

    let mut served = 0;
    for (name, (status, retry, body)) in &answers {
        match status {
            200 => {
                assert_eq!(body["model"], *name);
                served += 1;
            }
            503 => {
                assert_eq!(body["error"]["code"], "model_loading", "{body}");
                assert!(
                    retry.as_deref().is_some_and(|r| r.parse::<u64>().is_ok()),
                    "503 without Retry-After: {body}"
                );
            }
            other => panic!("{name}: unexpected {other}: {body}"),
        }
    }
    // The first request's model won: all ten of its requests were served.
    assert!(served >= 10, "only {served} of 20 answered");
    let (sa, sb) = (status_of(&app, a).await, status_of(&app, b).await);
    let statuses = [
        sa["status"].as_str().unwrap(),
        sb["status"].as_str().unwrap(),
    ];
    assert!(
        statuses == ["loaded", "ready"] || statuses == ["ready", "loaded"],
        "the registry ended as {statuses:?}"
    );
    let health = app.get("/api/health").await;
    let loaded = if statuses[0] == "loaded" { a } else { b };
    assert_eq!(health.data()["loaded_model_id"], loaded);
    println!("20 requests: {served} answered, the rest 503; {snapshots} registry snapshots");
    app.stop().await;
}

async fn a_locked_model_is_not_replaced_and_other_models_get_409(db: Db) {
    let app = spawn_configured(db, |s| s.idle_unload_seconds = Some(3600)).await;
    let a = ready(&app, "alpha", 5).await;
    let b = ready(&app, "beta", 6).await;

    // Lock needs the model loaded.
    let r = app.post(&format!("/api/models/{a}/lock"), json!({})).await;
    assert_eq!((r.status, r.code()), (400, "MODEL_NOT_LOADED"));
    let r = app.post(&format!("/api/models/{a}/load"), json!({})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let loaded = app.wait_status(a, "loaded", LOAD_WAIT).await;
    assert_eq!(loaded["locked"], false);
    assert!(loaded["idle_unload_at"].is_string(), "{loaded}");

    let r = app.post(&format!("/api/models/{a}/lock"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["locked"], true);
    assert_eq!(
        r.data()["idle_unload_at"],
        Value::Null,
        "a locked model is never unloaded when idle"
    );
    assert_eq!(app.get("/api/models").await.data()[1]["locked"], true);

    // Another model: not by a request, not by a load, not locked itself.
    let (status, _, body) = v1(&app, "/v1/chat/completions", chat("beta")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "model_locked");
    let (status, _, body) = v1(
        &app,
        "/v1/embeddings",
        json!({"model": "beta", "input": "x"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("model_locked"))
    );
    assert_eq!(
        v1_model_ids(&app).await,
        ["alpha"],
        "only the locked model answers"
    );
    let r = app.post(&format!("/api/models/{b}/load"), json!({})).await;
    assert_eq!((r.status, r.code()), (409, "MODEL_LOCKED"));
    assert_eq!(r.body["error"]["details"]["locked_model_id"], a);
    let r = app.post(&format!("/api/models/{b}/lock"), json!({})).await;
    assert_eq!((r.status, r.code()), (409, "MODEL_LOCKED"));
    assert_eq!(status_of(&app, b).await["status"], "ready");

    // The locked model itself still answers.
    let (status, _, body) = v1(&app, "/v1/chat/completions", chat("alpha")).await;
    assert_eq!(status, 200, "{body}");

    // Unlocked, the request naming the other model loads it.
    let r = app
        .post(&format!("/api/models/{a}/unlock"), json!({}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["locked"], false);
    let (status, _, body) = v1(&app, "/v1/chat/completions", chat("beta")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(status_of(&app, b).await["status"], "loaded");

    // An unload clears the lock; unlock always answers 200.
    let r = app.post(&format!("/api/models/{b}/lock"), json!({})).await;
    assert_eq!(r.data()["locked"], true);
    let r = app
        .post(&format!("/api/models/{b}/unload"), json!({}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["locked"], false);
    let r = app
        .post(&format!("/api/models/{a}/unlock"), json!({}))
        .await;
    assert_eq!(r.status, 200);
    let r = app.post("/api/models/999999/lock", json!({})).await;
    assert_eq!((r.status, r.code()), (404, "MODEL_NOT_FOUND"));
    app.stop().await;
}

async fn with_loading_on_request_off_a_model_that_is_not_loaded_gets_400(db: Db) {
    let app = spawn_configured(db, |s| s.load_on_request = false).await;
    let a = ready(&app, "alpha", 7).await;
    ready(&app, "beta", 8).await;
    assert!(v1_model_ids(&app).await.is_empty());
    let (status, _, body) = v1(&app, "/v1/chat/completions", chat("alpha")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("model_not_loaded"))
    );
    assert_eq!(status_of(&app, a).await["status"], "ready");
    app.stop().await;
}

async fn an_idle_model_is_unloaded_after_idle_unload_seconds(db: Db) {
    let app = spawn_configured(db, |s| s.idle_unload_seconds = Some(1)).await;
    let a = ready(&app, "alpha", 9).await;
    let (status, _, body) = v1(&app, "/v1/chat/completions", chat("alpha")).await;
    assert_eq!(status, 200, "{body}");
    // While it waits (a slow machine may already be past the second, or unloading), it says
    // when it goes; the lock test checks the field is there during a long wait.
    if let Some(at) = status_of(&app, a).await["idle_unload_at"].as_str() {
        let left = chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .signed_duration_since(chrono::Utc::now());
        assert!(left <= chrono::TimeDelta::seconds(1), "{left}");
    }
    // It goes by itself, with the unload's usual record and event.
    let unloaded = app.wait_status(a, "ready", Duration::from_secs(30)).await;
    assert_eq!(unloaded["idle_unload_at"], Value::Null);
    assert_eq!(
        app.get("/api/health").await.data()["loaded_model_id"],
        Value::Null
    );
    app.stop().await;
}

on_both_databases!(
    a_request_loads_the_model_it_names_and_v1_models_lists_every_model_that_can,
    twenty_requests_naming_two_models_at_once_never_load_both,
    a_locked_model_is_not_replaced_and_other_models_get_409,
    with_loading_on_request_off_a_model_that_is_not_loaded_gets_400,
    an_idle_model_is_unloaded_after_idle_unload_seconds,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_answer_in_openais_shape_floats_or_base64() {
    let app = spawn_configured(Db::Sqlite, |_| {}).await;
    ready(&app, "alpha", 10).await;
    let (status, _, one) = v1(
        &app,
        "/v1/embeddings",
        json!({"model": "alpha", "input": "Hello there"}),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["object"], "list");
    assert_eq!(one["model"], "alpha");
    let first = one["data"][0]["embedding"].as_array().unwrap().clone();
    assert_eq!(first.len(), TinyLlama::default().hidden);
    assert_eq!(one["data"][0]["object"], "embedding");
    let tokens = one["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(tokens > 0);
    assert_eq!(one["usage"]["total_tokens"], tokens);

    // A list keeps its order; the same text gives the same vector; base64 is the same floats.
    let (status, _, many) = v1(
        &app,
        "/v1/embeddings",
        json!({"model": "alpha", "input": ["Something else", "Hello there"]}),
    )
    .await;
    assert_eq!(status, 200, "{many}");
    assert_eq!(many["data"][1]["index"], 1);
    assert_eq!(many["data"][1]["embedding"], json!(first));
    assert_ne!(many["data"][0]["embedding"], json!(first));
    let (_, _, b64) = v1(
        &app,
        "/v1/embeddings",
        json!({"model": "alpha", "input": "Hello there", "encoding_format": "base64"}),
    )
    .await;
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let expected: Vec<f32> = first.iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(floats, expected);

    for (body, param) in [
        (json!({"model": "alpha", "input": ""}), "input"),
        (json!({"model": "alpha", "input": []}), "input"),
        (
            json!({"model": "alpha", "input": "x", "encoding_format": "int8"}),
            "encoding_format",
        ),
        (
            json!({"model": "alpha", "input": "x", "dimensions": 8}),
            "dimensions",
        ),
    ] {
        let (status, _, e) = v1(&app, "/v1/embeddings", body.clone()).await;
        assert_eq!(status, 400, "{body}: {e}");
        assert_eq!(e["error"]["param"], param, "{body}: {e}");
    }
    let (status, _, e) = v1(
        &app,
        "/v1/embeddings",
        json!({"model": "nope", "input": "x"}),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_shows_in_the_metrics_and_in_health() {
    let app = spawn_configured(Db::Sqlite, |_| {}).await;
    ready(&app, "alpha", 11).await;
    let scrape = || async {
        app.http
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    assert_eq!(
        app.get("/api/health").await.data()["tokens_per_second"],
        Value::Null
    );

    let body = json!({"model": "alpha", "prompt": "Once upon a time", "max_tokens": 16,
                      "temperature": 0, "stop": []});
    let (status, _, answer) = v1(&app, "/v1/completions", body).await;
    assert_eq!(status, 200, "{answer}");
    let completion = answer["usage"]["completion_tokens"].as_f64().unwrap();
    let prompt = answer["usage"]["prompt_tokens"].as_f64().unwrap();
    let after = scrape().await;

    // Counters are process-wide (other tests generate too): they grew by at least this one.
    let grew = |series: &str| sample(&after, series) - sample(&before, series);
    assert!(grew(r#"millm_completion_tokens_total{endpoint="completions"}"#) >= completion);
    assert!(grew(r#"millm_prompt_tokens_total{endpoint="completions"}"#) >= prompt);
    assert!(grew(r#"millm_time_to_first_token_seconds_count{endpoint="completions"}"#) >= 1.0);
    let finish = answer["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(
        grew(&format!(
            r#"millm_inference_requests_total{{endpoint="completions",outcome="{finish}"}}"#
        )) >= 1.0
    );
    if completion > 1.0 {
        assert!(
            grew(r#"millm_time_per_output_token_seconds_count{endpoint="completions"}"#)
                >= completion - 1.0
        );
        // The gauge is this app's window, read at scrape time: the same figure health gives.
        let health = app.get("/api/health").await.data()["tokens_per_second"]
            .as_f64()
            .expect("tokens/s after a generation");
        let gauge = sample(&scrape().await, "millm_tokens_per_second");
        assert!(health > 0.0);
        assert!(
            (gauge - health).abs() / health < 1e-6,
            "gauge {gauge} vs health {health}"
        );
        println!("tokens/s: health {health:.1}, /metrics {gauge:.1}");
    }
    let (status, _, _) = v1(
        &app,
        "/v1/chat/completions",
        json!({"model": "alpha", "messages": []}),
    )
    .await;
    assert_eq!(status, 400);
    let rejected = sample(
        &scrape().await,
        r#"millm_inference_requests_total{endpoint="chat",outcome="rejected"}"#,
    );
    assert!(rejected >= 1.0);
    app.stop().await;
}
