//! Start-up and shutdown: load the models, start the workers, serve HTTP, drain on SIGTERM.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderName};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use spade_model::io::preprocess::DecodeLimits;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::config::ServerConfig;
use crate::engine::{Engine, ModelEngine};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::models::{self, ModelInfo};
use crate::queue::Queue;
use crate::routes;
use crate::state::AppState;
use crate::worker::{WarmUp, WorkerPool};

/// A server running in the background, stopped by [`RunningServer::shutdown`].
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Starts draining, as SIGTERM does, and waits until the server has exited.
    pub async fn shutdown(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }

    /// Waits until every worker ran its warm-up batch (or draining began); an error if
    /// none could, so that the process exits instead of serving nothing but errors.
    pub async fn warmed_up(&self) -> Result<()> {
        loop {
            match self.state.pool.warm_up() {
                WarmUp::Failed => {
                    bail!("every worker failed its warm-up batch: no model can run (see the log)")
                }
                WarmUp::Running if !self.state.draining.load(Ordering::Acquire) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                _ => return Ok(()),
            }
        }
    }

    /// Waits for the server to exit after a signal.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Loads the models and starts serving with the production engine.
pub async fn start(config: ServerConfig) -> Result<RunningServer> {
    config.validate()?;
    let specs = config.model_specs()?;
    let devices = config
        .devices
        .iter()
        .map(|d| spade_model::model::parse_device(d))
        .collect::<spade_model::Result<Vec<_>>>()?;
    let dtype = spade_model::model::parse_dtype(&config.dtype)?;
    let (infos, weights) =
        tokio::task::spawn_blocking(move || models::load(&specs, &devices, dtype))
            .await
            .context("model loading thread")??;
    let device_count = weights.len();
    start_with_engine(
        config,
        infos,
        Arc::new(ModelEngine::new(weights)),
        device_count,
    )
    .await
}

/// Starts serving `models` with any engine (tests use engines that fail on purpose).
pub async fn start_with_engine(
    config: ServerConfig,
    models: Vec<ModelInfo>,
    engine: Arc<dyn Engine>,
    devices: usize,
) -> Result<RunningServer> {
    let metrics = Metrics::new();
    let names = models.iter().map(|m| m.name.clone()).collect();
    let queue = Arc::new(Queue::new(
        names,
        config.max_queue,
        config.max_batch_size,
        config.max_batch_delay(),
        metrics.clone(),
    ));
    let pool = WorkerPool::start(
        queue.clone(),
        engine,
        metrics.clone(),
        devices,
        config.workers_per_device,
    );
    let state = Arc::new(AppState {
        models,
        queue,
        pool,
        metrics,
        limits: DecodeLimits {
            max_side: 16384,
            max_pixels: config.max_pixels,
        },
        decoders: Arc::new(tokio::sync::Semaphore::new(config.max_decoding)),
        max_body_bytes: config.max_body_bytes,
        body_timeout: config.body_timeout(),
        request_timeout: config.request_timeout(),
        api_keys: config.all_api_keys()?,
        next_job: AtomicU64::new(0),
        draining: AtomicBool::new(false),
    });
    let limit = config.max_body_bytes;
    let app = routes::router(state.clone())
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            refuse_declared_oversize(limit, req, next)
        }))
        .layer(cors(&config.cors_origins));
    let header_timeout = config.header_timeout();
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");

    let stop = Arc::new(Notify::new());
    let grace = Duration::from_secs_f64(config.shutdown_grace);
    let task = {
        let (stop, state) = (stop.clone(), state.clone());
        tokio::spawn(async move {
            let drained = {
                let (stop, state) = (stop.clone(), state.clone());
                async move {
                    stop.notified().await;
                    state.draining.store(true, Ordering::Release);
                    tracing::info!("draining: no new connections, finishing in-flight requests");
                }
            };
            let serve = serve(listener, app, header_timeout, drained);
            let deadline = async {
                // Only starts counting once draining began.
                while !state.draining.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                () = serve => {}
                _ = deadline => tracing::warn!("grace period over; exiting with work in flight"),
            }
            let pool_state = state.clone();
            let _ = tokio::task::spawn_blocking(move || pool_state.pool.shutdown()).await;
            tracing::info!("stopped");
        })
    };
    Ok(RunningServer {
        addr,
        state,
        stop,
        task,
    })
}

/// Notifies the server on SIGTERM or Ctrl-C.
pub fn stop_on_signals(server: &RunningServer) {
    let stop = server.stop.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
        stop.notify_one();
    });
}

/// How long a refused body is read and discarded (see [`refuse_declared_oversize`]).
const LINGER: Duration = Duration::from_secs(2);

/// Refuses a body whose declared `Content-Length` is over the limit before reading any of
/// it, so a client is told at once (and never gets `100 Continue` for it).
async fn refuse_declared_oversize(limit: usize, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        // Refused before reading. Unless it waits for `100 Continue`, the client is sending
        // the body right now: reading and discarding it for a moment (never storing it)
        // lets the client see this answer instead of a connection reset mid-write.
        if !req.headers().contains_key(header::EXPECT) {
            let mut body = req.into_body();
            tokio::spawn(async move {
                let drain = async { while let Some(Ok(_)) = body.frame().await {} };
                let _ = tokio::time::timeout(LINGER, drain).await;
            });
        }
        return ApiError::PayloadTooLarge.into_response();
    }
    next.run(req).await
}

/// Accepts connections until `drained` resolves, then waits for the open ones to finish.
/// Unlike `axum::serve` it bounds how long a client may take to send a request's headers
/// (and how long an idle keep-alive connection lives): a socket that sends nothing, or half
/// a request line, is closed after `header_timeout` instead of holding a descriptor forever.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    drained: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(header_timeout))
        .keep_alive_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(drained);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(%err, "accept error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut drained => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            // hyper's header timer starts with the first byte, and the HTTP/1-or-2 detection
            // before it waits without one: a socket that sends nothing is dropped here.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(%err, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Headers cross-origin pages may send: a wildcard would not cover `Authorization`.
const CORS_REQUEST_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("x-api-key"),
];
/// Response headers cross-origin scripts may read.
const CORS_EXPOSED_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("x-seed"),
    HeaderName::from_static("x-model"),
    HeaderName::from_static("x-batch-size"),
    HeaderName::from_static("server-timing"),
    header::RETRY_AFTER,
];

fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(CORS_REQUEST_HEADERS)
        .expose_headers(CORS_EXPOSED_HEADERS);
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        let list = origins
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect::<Vec<_>>();
        layer.allow_origin(AllowOrigin::list(list))
    }
}
