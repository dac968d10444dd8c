//! A battery of bad inputs: each gets a 4xx in the envelope, never a 5xx or a dropped connection.

use millm_testkit::TinyLlama;
use serde_json::json;

use crate::support::{spawn_app, Db};

#[tokio::test]
async fn bad_ids_are_validation_errors() {
    let app = spawn_app(Db::Sqlite).await;
    for id in ["0", "-1", "abc", "9223372036854775808", "1.5", "%20"] {
        for (method, path) in [
            (reqwest::Method::GET, format!("/api/models/{id}")),
            (reqwest::Method::DELETE, format!("/api/models/{id}")),
        ] {
            let reply = app
                .send(app.http.request(method.clone(), app.url(&path)))
                .await;
            assert_eq!(reply.status, 422, "{method} {path}: {}", reply.body);
            assert_eq!(reply.code(), "VALIDATION_ERROR");
            assert_eq!(reply.body["error"]["details"]["field"], "id");
        }
    }
    let reply = app.get("/api/models/9223372036854775807").await;
    assert_eq!(reply.code(), "MODEL_NOT_FOUND");
    assert_eq!(reply.status, 404);
    app.stop().await;
}

#[tokio::test]
async fn bad_bodies_get_a_4xx_in_the_envelope() {
    let app = spawn_app(Db::Sqlite).await;
    let model = app.write_model("ok", TinyLlama::default());
    let file = model.dir.join("config.json");
    let raw = |body: Vec<u8>| {
        app.http
            .post(app.url("/api/models"))
            .header("content-type", "application/json")
            .body(body)
    };

    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("empty", raw(Vec::new()), 422, "VALIDATION_ERROR"),
        (
            "not json",
            raw(b"source=local".to_vec()),
            422,
            "VALIDATION_ERROR",
        ),
        ("array", raw(b"[]".to_vec()), 422, "VALIDATION_ERROR"),
        (
            "wrong type",
            raw(br#"{"source": 5}"#.to_vec()),
            422,
            "VALIDATION_ERROR",
        ),
        (
            "unknown source",
            raw(br#"{"source": "ftp"}"#.to_vec()),
            422,
            "VALIDATION_ERROR",
        ),
        (
            "wrong field type",
            raw(br#"{"source": "local", "local_path": ["x"]}"#.to_vec()),
            422,
            "VALIDATION_ERROR",
        ),
        ("5 MB", raw(vec![b' '; 5 << 20]), 413, "PAYLOAD_TOO_LARGE"),
        (
            "unknown quantization",
            app.http
                .post(app.url("/api/models"))
                .json(&json!({"source": "local", "local_path": model.dir, "quantization": "Q3"})),
            422,
            "VALIDATION_ERROR",
        ),
        (
            "missing local_path",
            app.http
                .post(app.url("/api/models"))
                .json(&json!({"source": "local"})),
            422,
            "VALIDATION_ERROR",
        ),
        (
            "relative path",
            app.http
                .post(app.url("/api/models"))
                .json(&json!({"source": "local", "local_path": "models/x"})),
            422,
            "VALIDATION_ERROR",
        ),
        (
            "dot-dot path",
            app.http.post(app.url("/api/models")).json(
                &json!({"source": "local", "local_path": format!("{}/../ok", model.dir.display())}),
            ),
            422,
            "VALIDATION_ERROR",
        ),
        (
            "missing folder",
            app.http
                .post(app.url("/api/models"))
                .json(&json!({"source": "local", "local_path": "/nonexistent/model"})),
            400,
            "INVALID_LOCAL_PATH",
        ),
        (
            "file not folder",
            app.http
                .post(app.url("/api/models"))
                .json(&json!({"source": "local", "local_path": file})),
            400,
            "INVALID_LOCAL_PATH",
        ),
    ];
    for (name, req, status, code) in cases {
        let reply = app.send(req).await;
        assert_eq!(reply.status, status, "{name}: {}", reply.body);
        assert_eq!(reply.code(), code, "{name}");
        assert!(
            reply.body["error"]["message"].as_str().unwrap().len() > 10,
            "{name}: a sentence"
        );
    }
    // The wrong-type error names the field.
    let reply = app
        .send(raw(br#"{"source": "local", "local_path": 12}"#.to_vec()))
        .await;
    assert_eq!(reply.body["error"]["details"]["field"], "local_path");
    app.stop().await;
}

#[tokio::test]
async fn folders_that_are_not_models_say_why() {
    let app = spawn_app(Db::Sqlite).await;
    let root = app.dir.path().join("bad");
    let no_config = root.join("no-config");
    std::fs::create_dir_all(&no_config).unwrap();
    let bad_config = root.join("bad-config");
    std::fs::create_dir_all(&bad_config).unwrap();
    std::fs::write(bad_config.join("config.json"), "{not json").unwrap();
    let no_weights = root.join("no-weights");
    std::fs::create_dir_all(&no_weights).unwrap();
    std::fs::write(no_weights.join("config.json"), "{}").unwrap();
    let corrupt = root.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join("config.json"), "{}").unwrap();
    std::fs::write(
        corrupt.join("model.safetensors"),
        b"\xff\xff\xff\xff\x00\x00\x00\x00garbage",
    )
    .unwrap();
    let truncated = app.write_model("truncated", TinyLlama::default());
    let weights = truncated.dir.join("model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    for (dir, needle) in [
        (&no_config, "no config.json"),
        (&bad_config, "not valid JSON"),
        (&no_weights, "no safetensors"),
        (&corrupt, "corrupt"),
        (&truncated.dir, "corrupt"),
    ] {
        let reply = app.add_local(dir, "Q4").await;
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.code(), "INVALID_LOCAL_PATH");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message} should say {needle}");
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_api_routes_and_methods_answer_in_the_envelope() {
    let app = spawn_app(Db::Sqlite).await;
    let reply = app.get("/api/nope").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.code(), "NOT_FOUND");
    let reply = app.send(app.http.put(app.url("/api/models"))).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.code(), "METHOD_NOT_ALLOWED");
    let reply = app.send(app.http.patch(app.url("/api/models/1"))).await;
    assert_eq!(reply.status, 405);
    app.stop().await;
}

#[tokio::test]
async fn health_reports_database_and_device_memory() {
    let app = spawn_app(Db::Sqlite).await;
    let reply = app.get("/api/health").await;
    assert_eq!(reply.status, 200);
    let data = reply.data();
    assert_eq!(data["status"], "ok");
    assert_eq!(data["database"], "ok");
    assert_eq!(data["version"], env!("CARGO_PKG_VERSION"));
    assert!(data["loaded_model_id"].is_null());
    assert_eq!(data["memory"]["device"], "cpu");
    let total = data["memory"]["total_mb"].as_u64().unwrap();
    let free = data["memory"]["free_mb"].as_u64().unwrap();
    assert!(total > 0 && free > 0 && free <= total);
    app.stop().await;
}

#[tokio::test]
async fn liveness_answers_ok_in_the_envelope() {
    let app = spawn_app(Db::Sqlite).await;
    let reply = app.get("/api/health/live").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        json!({"success": true, "data": {"status": "ok"}, "error": null})
    );
    app.stop().await;
}

#[tokio::test]
async fn only_get_and_head_outside_the_api_get_the_page() {
    let app = spawn_app(Db::Sqlite).await;
    let page = |method: reqwest::Method, path: &str| app.http.request(method, app.url(path));

    // The page, for the browser's GET (a client route too) and HEAD.
    for path in ["/", "/models/3"] {
        let resp = page(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
    }
    let resp = page(reqwest::Method::HEAD, "/").send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // Any other method: 404 where there is nothing but a client route, 405 on the page's own
    // files; a short plain answer, never the page.
    for (method, path, status) in [
        // (`/v1` answers now; these paths are still nobody's.)
        (reqwest::Method::POST, "/v2/completions", 404),
        (reqwest::Method::POST, "/v1beta/chat/completions", 404),
        (reqwest::Method::PUT, "/models/3", 404),
        (reqwest::Method::PATCH, "/anything", 404),
        (reqwest::Method::DELETE, "/models", 404),
        (reqwest::Method::POST, "/", 405),
        (reqwest::Method::DELETE, "/index.html", 405),
    ] {
        let resp = page(method.clone(), path)
            .header("content-type", "application/json")
            .body(r#"{"prompt": "hi"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{method} {path}");
        if status == 405 {
            assert_eq!(resp.headers()["allow"], "GET, HEAD", "{method} {path}");
        }
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let body = resp.text().await.unwrap();
        assert!(
            body.len() < 100 && !body.to_ascii_lowercase().contains("<html"),
            "{method} {path}: {body}"
        );
    }
    app.stop().await;
}
