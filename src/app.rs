//! `App::build(settings)`: the registry, devices, events and routes, bound to a listener.
//! `millm serve` and the tests start the app the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use tower::ServiceExt;

use axum::http::{HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::engine::Devices;
use crate::error::AppError;
use crate::events::Events;
use crate::service::Services;
use crate::store::Store;
use crate::{api, web};

/// How long shutdown waits for open connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    /// The serialized rows of `GET /api/models`, per registry generation.
    pub model_list: Arc<api::models::ListCache>,
}

/// A built application, bound to its port but not yet serving.
pub struct App {
    listener: TcpListener,
    router: Router,
    state: AppState,
    shutdown: CancellationToken,
    header_read_timeout: Duration,
}

impl App {
    /// Opens the registry (running migrations), reconciles what a previous process left,
    /// probes the devices and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        let settings = settings.normalized();
        settings.validate()?;
        let settings = Arc::new(settings);
        std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create MILLM_DATA_DIR {}: {e}",
                settings.data_dir.display()
            )
        })?;
        let cache = settings.cache_dir();
        std::fs::create_dir_all(&cache).map_err(|e| {
            anyhow::anyhow!("cannot create MODEL_CACHE_DIR {}: {e}", cache.display())
        })?;
        let store = Store::connect(&settings.database_url())
            .await
            .map_err(|e| anyhow::anyhow!("cannot open DATABASE_URL ({e})"))?;
        let devices = tokio::task::spawn_blocking(Devices::probe).await?;
        let shutdown = CancellationToken::new();

        if settings.allow_no_auth
            && settings.api_key.is_none()
            && !crate::config::is_loopback_host(&settings.host)
        {
            tracing::warn!(
                host = %settings.host,
                "MILLM_ALLOW_NO_AUTH is set: the API listens beyond loopback WITHOUT an API key; anyone who reaches the port can download, load and delete models"
            );
        }
        let guard = Arc::new(api::guard::Guard::new(&settings));
        let (io_layer, io) = SocketIo::builder().build_layer();
        let throughput = Arc::new(crate::metrics::Throughput::default());
        let events = Events::new(
            io,
            devices.clone(),
            throughput.clone(),
            shutdown.clone(),
            crate::events::Admission::new(guard.key(), settings.max_socket_connections),
        );
        let services = Services::new(
            store,
            devices,
            events,
            settings.clone(),
            shutdown.clone(),
            throughput,
        )?;
        services.reconcile().await?;
        let auto = services.clone();
        tokio::spawn(async move { auto.auto_load().await });
        tokio::spawn(services.clone().unload_when_idle());
        let state = AppState {
            services,
            model_list: Arc::default(),
        };

        let router = api::router()
            .fallback(fallback)
            .with_state(state.clone())
            .layer(axum::middleware::from_fn(crate::metrics::track_http))
            .layer(io_layer)
            // Inside CORS, so preflights are answered and refusals carry CORS headers; outside
            // Socket.IO, so its handshakes pass the Host and Origin checks too.
            .layer(axum::middleware::from_fn_with_state(
                guard,
                api::guard::check,
            ))
            .layer(cors_layer(&settings))
            .layer(CatchPanicLayer::custom(|_panic| {
                AppError::internal(anyhow::anyhow!("a request handler panicked")).into_response()
            }))
            .layer(TraceLayer::new_for_http());

        let addr = format!("{}:{}", settings.host, settings.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (HOST/PORT): {e}"))?;
        Ok(App {
            listener,
            router,
            state,
            shutdown,
            header_read_timeout: Duration::from_secs(settings.header_read_timeout),
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has a local address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The token whose cancellation stops the server and every job.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then lets jobs wind down.
    ///
    /// The accept loop is hyper's own rather than `axum::serve`, which cannot bound the time a
    /// client takes to send its headers: a client that never finishes them is dropped after
    /// `HEADER_READ_TIMEOUT`. Each request carries its peer address (`ConnectInfo`).
    pub async fn run(self) -> anyhow::Result<()> {
        let mut builder = ConnBuilder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let router = self.router.clone();
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    router.clone().oneshot(request.map(axum::body::Body::new))
                });
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("connection from {peer} ended: {e}");
                }
            });
        }
        drop(self.listener);
        // Requests in flight finish; long polls and idle keep-alives do not hold shutdown up.
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::debug!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
        }
        self.state.services.wind_down().await;
        self.state.services.close().await;
        Ok(())
    }
}

fn cors_layer(settings: &Settings) -> CorsLayer {
    let origins = settings.cors_origin_list();
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            axum::http::header::CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
        ]);
    if origins.iter().any(|o| o == "*") {
        base.allow_origin(AllowOrigin::any())
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        base.allow_origin(list)
    }
}

/// Unknown `/api` paths answer 404 in the envelope; everything else is the web UI, which gives
/// the page to GET and HEAD only (see [`web::serve`]).
async fn fallback(method: Method, uri: Uri) -> Response {
    if uri.path() == "/api" || uri.path().starts_with("/api/") {
        api::not_found(method, uri).await.into_response()
    } else {
        web::serve(method, uri).await
    }
}
