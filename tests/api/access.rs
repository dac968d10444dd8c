//! Who may do what, against the real server: the API key on every route and on the Socket.IO
//! handshake, what stays open without it, JSON-only bodies, and the `Host` and `Origin` checks
//! against DNS rebinding and cross-site requests.

use millm_testkit::TinyLlama;
use serde_json::{json, Value};

use crate::on_both_databases;
use crate::support::{spawn_app, spawn_configured, Db, TestApp};

const KEY: &str = "correct-horse-battery-staple";

async fn keyed(db: Db) -> TestApp {
    spawn_configured(db, |s| s.api_key = Some(millm::config::Secret::new(KEY))).await
}

/// Every operation of the OpenAPI document (with `{id}` as 1), plus the routes outside it that
/// the key guards, and an unknown `/api` path.
fn every_route() -> Vec<(reqwest::Method, String)> {
    let doc: Value = serde_json::from_str(&millm::api::openapi_json()).expect("the document");
    let mut routes = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            routes.push((method, path.replace("{id}", "1")));
        }
    }
    assert!(routes.len() >= 10, "the document lists the API: {routes:?}");
    routes.push((reqwest::Method::GET, "/metrics".into()));
    routes.push((reqwest::Method::GET, "/v1/models".into()));
    routes.push((reqwest::Method::POST, "/v1/chat/completions".into()));
    routes.push((reqwest::Method::GET, "/api/no-such-thing".into()));
    routes
}

async fn every_route_needs_the_key_and_a_wrong_one_is_refused(db: Db) {
    let app = keyed(db).await;
    for (method, path) in every_route() {
        if path == "/api/health/live" {
            continue;
        }
        let request = || {
            app.http
                .request(method.clone(), app.url(&path))
                .json(&json!({"source": "local", "local_path": "/nowhere"}))
        };
        for (what, mut reply) in [
            ("no key", app.send(request()).await),
            ("a wrong key", app.send_with_key(request(), "guess").await),
            (
                "the key in another scheme",
                app.send(request().basic_auth("user", Some(KEY))).await,
            ),
        ] {
            assert_eq!(
                reply.status, 401,
                "{method} {path} with {what}: {}",
                reply.body
            );
            if path.starts_with("/v1/") {
                // OpenAI's error shape, as OpenAI answers a bad key.
                assert_eq!(reply.body["error"]["code"], "invalid_api_key", "{path}");
                reply.body = json!({"success": false, "error": {"code": "UNAUTHORIZED"}});
            }
            assert_eq!(reply.code(), "UNAUTHORIZED", "{method} {path} with {what}");
        }
    }

    // With the key everything works as before.
    let list = app
        .send_with_key(app.http.get(app.url("/api/models")), KEY)
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    let model = app.write_model("tiny", TinyLlama::default());
    let added = app
        .send_with_key(
            app.http
                .post(app.url("/api/models"))
                .json(&json!({"source": "local", "local_path": model.dir, "quantization": "Q8"})),
            KEY,
        )
        .await;
    assert_eq!(added.status, 202, "{}", added.body);
    let id = added.data()["id"].as_i64().unwrap();
    let shown = app
        .send_with_key(app.http.get(app.url(&format!("/api/models/{id}"))), KEY)
        .await;
    assert_eq!(shown.data()["status"], "ready");
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    app.stop().await;
}

async fn no_key_on_loopback_behaves_as_before(db: Db) {
    let app = spawn_app(db).await;
    assert_eq!(app.get("/api/models").await.status, 200);
    let (id, _) = app.add_model("tiny", TinyLlama::default(), "Q8").await;
    assert_eq!(app.delete(&format!("/api/models/{id}")).await.status, 200);
    app.stop().await;
}

on_both_databases!(
    every_route_needs_the_key_and_a_wrong_one_is_refused,
    no_key_on_loopback_behaves_as_before
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_the_page_its_assets_docs_and_openapi_need_no_key() {
    let app = keyed(Db::Sqlite).await;
    let live = app.get("/api/health/live").await;
    assert_eq!(live.status, 200, "{}", live.body);
    for path in ["/openapi.json", "/docs/", "/"] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_ne!(resp.status(), 401, "{path}");
        assert!(
            resp.status().is_success() || path == "/",
            "{path}: {}",
            resp.status()
        );
    }
    // The page's own assets, when the web UI is built into this binary.
    let page = app.http.get(app.url("/")).send().await.unwrap();
    if page.status() == 200 {
        let html = page.text().await.unwrap();
        let asset = html
            .split(['"', '\''])
            .find(|s| s.starts_with("/assets/"))
            .expect("the page links its assets");
        let resp = app.http.get(app.url(asset)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{asset}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_is_refused_with_415() {
    let app = spawn_app(Db::Sqlite).await;
    for (path, content_type) in [
        ("/api/models", Some("text/plain")),
        ("/api/models", Some("application/x-www-form-urlencoded")),
        ("/api/models", None),
        ("/api/models/preview", Some("text/plain;charset=UTF-8")),
        ("/api/models/1/retry", Some("text/plain")),
    ] {
        let mut request = app
            .http
            .post(app.url(path))
            .body(r#"{"source": "local", "local_path": "/x", "repo_id": "a/b"}"#);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let reply = app.send(request).await;
        assert_eq!(
            reply.status, 415,
            "{path} as {content_type:?}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "UNSUPPORTED_MEDIA_TYPE");
    }
    // A retry without a body needs no content type.
    let retry = app
        .send(app.http.post(app.url("/api/models/1/retry")))
        .await;
    assert_eq!(retry.code(), "MODEL_NOT_FOUND");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_is_refused_while_loopback_names_and_allowed_hosts_pass() {
    let app = spawn_configured(Db::Sqlite, |s| s.allowed_hosts = Some("gpubox.lan".into())).await;
    let port = app.base.rsplit(':').next().unwrap().to_string();
    for host in ["evil.example", &format!("evil.example:{port}"), "10.1.2.3"] {
        for path in ["/api/models", "/", "/socket.io/?EIO=4&transport=polling"] {
            let resp = app
                .http
                .get(app.url(path))
                .header("host", host)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 403, "Host {host} on {path}");
        }
    }
    let refused = app
        .send(
            app.http
                .delete(app.url("/api/models/1"))
                .header("host", "evil.example"),
        )
        .await;
    assert_eq!(refused.code(), "FORBIDDEN");
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "gpubox.lan".to_string(),
    ] {
        let reply = app
            .send(app.http.get(app.url("/api/models")).header("host", &host))
            .await;
        assert_eq!(reply.status, 200, "Host {host}: {}", reply.body);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_may_not_change_state_while_loopback_and_own_origins_may() {
    let app = spawn_configured(Db::Sqlite, |s| {
        s.cors_origins = Some("https://ui.example".into())
    })
    .await;
    let post = |origin: &str| {
        app.http
            .post(app.url("/api/models/1/load"))
            .header("origin", origin)
    };
    for origin in ["https://evil.example", "http://evil.example:8000", "null"] {
        let reply = app.send(post(origin)).await;
        assert_eq!(reply.status, 403, "{origin}: {}", reply.body);
        assert_eq!(reply.code(), "FORBIDDEN");
        let deleted = app
            .send(
                app.http
                    .delete(app.url("/api/models/1"))
                    .header("origin", origin),
            )
            .await;
        assert_eq!(deleted.code(), "FORBIDDEN", "{origin}");
    }
    // The page's own origin, loopback dev servers, CORS_ORIGINS, and no Origin at all (curl,
    // the CLI) reach the handler: model 1 does not exist.
    let own = app.base.clone();
    for origin in [
        own.as_str(),
        "http://localhost:5173",
        "http://127.0.0.1:3000",
        "http://[::1]:8080",
        "https://ui.example",
    ] {
        let reply = app.send(post(origin)).await;
        assert_eq!(reply.code(), "MODEL_NOT_FOUND", "{origin}");
    }
    assert_eq!(
        app.send(app.http.post(app.url("/api/models/1/load")))
            .await
            .code(),
        "MODEL_NOT_FOUND"
    );
    // Reading is left to CORS: a foreign page's GET is answered, but without CORS headers.
    let read = app
        .http
        .get(app.url("/api/models"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert!(read.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}

/// A Socket.IO v4 client over long polling, by hand: it shows the handshake's answer exactly.
struct Polling<'a> {
    app: &'a TestApp,
    sid: String,
}

impl<'a> Polling<'a> {
    async fn open(app: &'a TestApp, origin: Option<&str>) -> Result<Polling<'a>, u16> {
        let mut request = app.http.get(app.url("/socket.io/?EIO=4&transport=polling"));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let resp = request.send().await.unwrap();
        if resp.status() != 200 {
            return Err(resp.status().as_u16());
        }
        let text = resp.text().await.unwrap();
        let open: Value = serde_json::from_str(text.trim_start_matches('0')).expect("open packet");
        Ok(Polling {
            app,
            sid: open["sid"].as_str().unwrap().to_string(),
        })
    }

    fn url(&self) -> String {
        self.app.url(&format!(
            "/socket.io/?EIO=4&transport=polling&sid={}",
            self.sid
        ))
    }

    /// Sends the CONNECT packet for `/` with `auth` and returns the server's answer packet.
    async fn connect(&self, auth: Option<Value>) -> String {
        let packet = match auth {
            Some(auth) => format!("40{auth}"),
            None => "40".to_string(),
        };
        let resp = self
            .app
            .http
            .post(self.url())
            .header("content-type", "text/plain;charset=UTF-8")
            .body(packet)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // Packets are separated by U+001E; a ping may come first.
        loop {
            let answer = self.app.http.get(self.url()).send().await.unwrap();
            let text = answer.text().await.unwrap();
            if let Some(packet) = text.split('\u{1e}').find(|p| p.starts_with("4")) {
                return packet.to_string();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_handshake_needs_the_key() {
    let app = keyed(Db::Sqlite).await;
    for auth in [None, Some(json!({})), Some(json!({"token": "guess"}))] {
        let socket = Polling::open(&app, None).await.expect("engine.io opens");
        let answer = socket.connect(auth.clone()).await;
        assert!(
            answer.starts_with("44") && answer.contains("UNAUTHORIZED"),
            "auth {auth:?}: {answer}"
        );
    }
    let socket = Polling::open(&app, None).await.expect("engine.io opens");
    let answer = socket.connect(Some(json!({"token": KEY}))).await;
    assert!(answer.starts_with("40{\"sid\""), "{answer}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_handshake_from_a_foreign_origin_is_refused() {
    let app = spawn_app(Db::Sqlite).await;
    assert_eq!(
        Polling::open(&app, Some("https://evil.example"))
            .await
            .err(),
        Some(403)
    );
    for origin in [app.base.clone(), "http://localhost:5173".to_string()] {
        let socket = Polling::open(&app, Some(&origin))
            .await
            .unwrap_or_else(|status| panic!("{origin}: {status}"));
        assert!(socket.connect(None).await.starts_with("40{"), "{origin}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_beyond_the_cap_are_refused() {
    let app = spawn_configured(Db::Sqlite, |s| s.max_socket_connections = 1).await;
    let first = Polling::open(&app, None).await.unwrap();
    assert!(first.connect(None).await.starts_with("40{"));
    let second = Polling::open(&app, None).await.unwrap();
    let answer = second.connect(None).await;
    assert!(
        answer.starts_with("44") && answer.contains("TOO_MANY_CONNECTIONS"),
        "{answer}"
    );
    app.stop().await;
}
