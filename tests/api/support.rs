//! `spawn_app()`: a temporary data folder (SQLite) or a fresh database on the PostgreSQL the test
//! command started, then the app on port 0, with typed helpers.

use std::path::Path;
use std::time::Duration;

use millm::app::App;
use millm::config::{Secret, Settings};
use millm_testkit::{TinyLlama, WrittenModel};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Which registry database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the test command started (`scripts/test.sh`).
pub fn postgres_admin_url() -> String {
    std::env::var("MILLM_TEST_POSTGRES_URL").expect(
        "MILLM_TEST_POSTGRES_URL is not set: run the tests with `bash scripts/test.sh`, which starts PostgreSQL",
    )
}

/// Creates an empty database on the test server and returns its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let admin = postgres_admin_url();
    let name = format!("millm_test_{}", uuid_like());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin);
    format!("{base}/{name}")
}

fn uuid_like() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    format!("{:016x}{:08x}", rng.gen::<u64>(), std::process::id())
}

/// A running app and what it needs.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub settings: Settings,
    /// The app's services, for driving steps directly (leases, the store).
    pub services: millm::service::Services,
}

/// Settings for a test app on `db`, with its own data folder.
pub async fn test_settings(db: Db, dir: &Path) -> Settings {
    let mut settings = Settings::for_data_dir(dir.join("data"));
    settings.port = 0;
    if db == Db::Postgres {
        settings.database_url = Some(Secret::new(fresh_postgres_database().await));
    }
    settings
}

pub async fn spawn_app(db: Db) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = test_settings(db, dir.path()).await;
    spawn_with(settings, dir).await
}

/// An app whose `HF_ENDPOINT` is the given fake Hub.
pub async fn spawn_app_with_hub(db: Db, hub_endpoint: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(db, dir.path()).await;
    settings.hf_endpoint = hub_endpoint.to_string();
    spawn_with(settings, dir).await
}

pub async fn spawn_with(settings: Settings, dir: tempfile::TempDir) -> TestApp {
    let app = App::build(settings.clone()).await.expect("app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let services = app.state().services.clone();
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run());
    TestApp {
        base,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client"),
        dir,
        shutdown,
        handle,
        settings,
        services,
    }
}

/// A response's status and JSON body.
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn data(&self) -> &Value {
        assert_eq!(
            self.body["success"], true,
            "expected success, got {}",
            self.body
        );
        &self.body["data"]
    }
    pub fn code(&self) -> &str {
        assert_eq!(
            self.body["success"], false,
            "expected an error, got {}",
            self.body
        );
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("request completes");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("status {status}: body is not JSON: {text}"));
        Reply { status, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Registers a local folder and returns the reply.
    pub async fn add_local(&self, path: &Path, quantization: &str) -> Reply {
        self.post(
            "/api/models",
            serde_json::json!({"source": "local", "local_path": path, "quantization": quantization}),
        )
        .await
    }

    /// Writes a test model under this app's temp folder.
    pub fn write_model(&self, name: &str, spec: TinyLlama) -> WrittenModel {
        spec.write(&self.dir.path().join("models").join(name))
            .expect("write test model")
    }

    /// Polls the model until its status is `status` (or the deadline passes) and returns it.
    pub async fn wait_status(&self, id: i64, status: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let reply = self.get(&format!("/api/models/{id}")).await;
            let data = reply.data().clone();
            if data["status"] == status {
                return data;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "model {id} did not become {status} within {within:?}; it is {}",
                data
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Registers a local test model and returns its id.
    pub async fn add_model(
        &self,
        name: &str,
        spec: TinyLlama,
        quantization: &str,
    ) -> (i64, WrittenModel) {
        let model = self.write_model(name, spec);
        let reply = self.add_local(&model.dir, quantization).await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        (reply.data()["id"].as_i64().unwrap(), model)
    }

    /// Stops the app like a shutdown and hands back its settings and data folder, so a new
    /// app can start on the same registry and cache.
    pub async fn stop_keeping_data(self) -> (Settings, tempfile::TempDir) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.handle).await;
        (self.settings, self.dir)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.handle).await;
    }
}

/// Declares one test per database for each async fn taking a `Db`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::support::Db::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::support::Db::Postgres).await } )*
        }
    };
}

/// A tiny real Llama checkpoint (random weights of `seed`, a real tokenizer) in a new folder.
pub fn tiny_llama(seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    millm_testkit::TinyLlama {
        seed,
        ..millm_testkit::TinyLlama::default()
    }
    .write(dir.path())
    .expect("checkpoint written");
    dir
}

/// An app on `db` whose settings `configure` adjusts first (an API key, limits, hosts).
pub async fn spawn_configured(db: Db, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(db, dir.path()).await;
    configure(&mut settings);
    spawn_with(settings, dir).await
}

impl TestApp {
    /// `request` with `Authorization: Bearer <key>`.
    pub async fn send_with_key(&self, request: reqwest::RequestBuilder, key: &str) -> Reply {
        self.send(request.bearer_auth(key)).await
    }
}

/// In a Prometheus text `text`, the value of the sample whose name and labels are exactly
/// `series`, 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}
