//! The database away at runtime, through a TCP proxy in front of the test PostgreSQL that a test
//! switches between `Up` (forwarding), `Blackhole` (connections accepted, nothing forwarded:
//! open ones stall, as behind a dead network path) and `Down` (every connection closed, new ones
//! closed as soon as they are accepted, as a stopped server). Readiness answers 503 within its
//! bound while liveness answers at once, and a load that ends while the database is down is
//! still recorded once it is back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use millm_testkit::TinyLlama;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::{fresh_postgres_database, spawn_with, test_settings, Db, TestApp};
use millm::config::Secret;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Up,
    /// Accepts, forwards nothing; bytes in flight wait until `Up` (or are dropped by `Down`).
    Blackhole,
    /// Closes every connection, and each new one as soon as it is accepted.
    Down,
}

/// A proxy on a port of its own, forwarding to one upstream address.
pub struct PgProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    refused: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    /// Starts forwarding to `upstream` (`host:port`), in `Up` mode.
    pub async fn start(upstream: String) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, _) = watch::channel(Mode::Up);
        let refused = Arc::new(AtomicU64::new(0));
        let accept = tokio::spawn({
            let mode = mode.clone();
            let refused = refused.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    if *mode.borrow() == Mode::Down {
                        refused.fetch_add(1, Ordering::SeqCst);
                        drop(client);
                        continue;
                    }
                    tokio::spawn(relay(client, upstream.clone(), mode.subscribe()));
                }
            }
        });
        PgProxy {
            addr,
            mode,
            refused,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Connections closed on arrival because the proxy was `Down`.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set(Mode::Down);
    }
}

/// Waits until the mode is `Up` (true) or `Down` (false).
async fn until_up(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        match *mode.borrow_and_update() {
            Mode::Up => return true,
            Mode::Down => return false,
            Mode::Blackhole => {}
        }
        if mode.changed().await.is_err() {
            return false;
        }
    }
}

/// One client connection: connects upstream once `Up`, then pumps both ways until either side
/// closes or the proxy goes `Down`.
async fn relay(client: TcpStream, upstream: String, mut mode: watch::Receiver<Mode>) {
    if !until_up(&mut mode).await {
        return;
    }
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Dropping both halves of both sockets when either direction ends closes the connection.
    tokio::select! {
        _ = pump(client_read, server_write, mode.clone()) => {}
        _ = pump(server_read, client_write, mode) => {}
    }
}

/// Copies one direction while the mode is `Up`; stops on end of stream, an error or `Down`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if !until_up(&mut mode).await {
            return;
        }
        // Reading is cancel-safe: a mode change drops the read, and the loop decides again.
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = mode.changed() => continue,
        };
        // Bytes read just before a stall wait for `Up` like the rest.
        if !until_up(&mut mode).await {
            return;
        }
        tokio::select! {
            written = to.write_all(&buf[..n]) => if written.is_err() { return },
            _ = wait_down(mode.clone()) => return,
        }
    }
}

async fn wait_down(mut mode: watch::Receiver<Mode>) {
    let _ = mode.wait_for(|m| *m == Mode::Down).await;
}

/// A fresh database on the test PostgreSQL, reached through a new proxy, and an app on it.
async fn spawn_behind_proxy() -> (TestApp, PgProxy) {
    let mut url = url::Url::parse(&fresh_postgres_database().await).expect("a database URL");
    let upstream = format!(
        "{}:{}",
        url.host_str().expect("a host"),
        url.port().unwrap_or(5432)
    );
    let proxy = PgProxy::start(upstream).await;
    url.set_host(Some("127.0.0.1")).expect("set host");
    url.set_port(Some(proxy.port())).expect("set port");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(Db::Sqlite, dir.path()).await;
    settings.database_url = Some(Secret::new(url.to_string()));
    (spawn_with(settings, dir).await, proxy)
}

/// `GET path`: its status, its JSON body and how long it took.
async fn timed_get(app: &TestApp, path: &str) -> (u16, serde_json::Value, Duration) {
    let started = Instant::now();
    let reply = app.get(path).await;
    (reply.status, reply.body, started.elapsed())
}

/// Polls `/api/health` until it answers `status` (or `within` passes).
async fn wait_health(app: &TestApp, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (now, body, _) = timed_get(app, "/api/health").await;
        if now == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/api/health did not answer {status} within {within:?}: {now} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_503_within_its_bound_while_the_database_is_away_and_liveness_at_once() {
    let (app, proxy) = spawn_behind_proxy().await;
    let (status, body, _) = timed_get(&app, "/api/health").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["database"], "ok");

    // A database that stalls: readiness gives up after its 2 s bound, liveness does not wait.
    proxy.set(Mode::Blackhole);
    // Liveness is asked while the readiness check waits on the database.
    let (ready, live) = tokio::join!(
        timed_get(&app, "/api/health"),
        timed_get(&app, "/api/health/live")
    );
    let (status, body, took) = ready;
    assert_eq!(status, 503, "{body}");
    assert!(
        took < Duration::from_millis(2500),
        "readiness answered after {took:?}"
    );
    assert_eq!(body["data"]["status"], "degraded", "{body}");
    assert_eq!(body["data"]["database"], "unavailable", "{body}");
    assert_eq!(body["data"]["database_backend"], "postgresql", "{body}");
    assert!(body["data"]["memory"]["total_mb"].as_u64().unwrap() > 0);
    let (status, body, took) = live;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "data": {"status": "ok"}, "error": null})
    );
    assert!(took < Duration::from_millis(1000), "liveness took {took:?}");

    // Back: the stalled connections resume, and readiness with them.
    proxy.set(Mode::Up);
    wait_health(&app, 200, Duration::from_secs(15)).await;

    // A database that is down: readiness fails (at once: nothing to wait for), liveness answers.
    proxy.set(Mode::Down);
    let (status, body, took) = timed_get(&app, "/api/health").await;
    assert_eq!(status, 503, "{body}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    let (status, _, _) = timed_get(&app, "/api/health/live").await;
    assert_eq!(status, 200);
    proxy.set(Mode::Up);
    wait_health(&app, 200, Duration::from_secs(15)).await;
    app.stop().await;
}

/// A model whose load takes a moment (about 60 MB of f32 weights, quantized to Q4), so that the
/// database can go down between the 202 and the end of the load.
fn slow_to_load() -> TinyLlama {
    TinyLlama {
        hidden: 512,
        intermediate: 1536,
        layers: 6,
        heads: 8,
        kv_heads: 8,
        vocab: 4096,
        seed: 21,
        ..TinyLlama::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_finishes_while_the_database_is_down_does_not_leave_the_row_loading() {
    let (app, proxy) = spawn_behind_proxy().await;
    let (id, _) = app.add_model("slow", slow_to_load(), "Q4").await;

    let reply = app.post(&format!("/api/models/{id}/load"), json!({})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    proxy.set(Mode::Down);
    assert_ne!(
        app.services.loaded_model_id(),
        Some(id),
        "the load must still be running when the database goes down (make the model bigger)"
    );

    // The engine finishes the load with the database down.
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.services.loaded_model_id() != Some(id) {
        assert!(
            Instant::now() < deadline,
            "the engine did not load model {id}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The service tries to record it while the database is still down: nothing else asks the
    // database meanwhile, so a connection refused from now on is that attempt.
    let refused = proxy.refused();
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.refused() == refused {
        assert!(
            Instant::now() < deadline,
            "nothing tried to record the load while the database was down"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    proxy.set(Mode::Up);
    let data = app.wait_status(id, "loaded", Duration::from_secs(20)).await;
    assert_eq!(data["dtype"], "q4k");
    assert_eq!(app.get("/api/health").await.data()["loaded_model_id"], id);
    app.stop().await;
}
