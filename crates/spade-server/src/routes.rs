//! HTTP routes: thin handlers over validation, the queue and the response encoding.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::job::{BatchMeta, Done, Job, Outcome, Task};
use crate::models::{self, ModelInfo};
use crate::queue::Slot;
use crate::state::AppState;
use crate::worker::WarmUp;
use crate::{page, request, validate};
use spade_model::io::preprocess::DecodeLimits;

/// The served OpenAPI document (the repository's top-level `openapi.yaml`).
pub const OPENAPI: &str = include_str!("../../../openapi.yaml");

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/synthesize", post(synthesize))
        .route("/v1/encode-style", post(encode_style))
        .route("/v1/models", get(list_models))
        // Inside the key check: a client without a key never gets a body buffered.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            read_body_in_time,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/", get(|| async { page::asset("index.html") }))
        .route("/static/{file}", get(static_asset))
        .route(
            "/openapi.yaml",
            get(|| async { ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI) }),
        )
        .fallback(|| async { ApiError::NotFound("no such route; see /openapi.yaml".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The page's files; a path the router cannot decode (not UTF-8) is the client's error.
async fn static_asset(file: Result<Path<String>, PathRejection>) -> Response {
    match file {
        Ok(Path(file)) => page::asset(&file),
        Err(rejection) => ApiError::BadRequest(rejection.body_text()).into_response(),
    }
}

async fn synthesize(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let upload = request::read_synthesize(req).await?;
    let options = (upload.options.model.clone(), upload.options.seed);
    let (model, seed, Done { outcome, meta }) = app
        .run(options, move |model, seed, limits| {
            validate::synthesize(model, upload, seed, limits).map(Task::Synthesize)
        })
        .await?;
    let Outcome::Image { bytes, format } = outcome else {
        return Err(ApiError::Internal("synthesis returned no image".into()));
    };
    let mut response = if wants_json(&headers) {
        Json(json!({
            "model": model,
            "seed": seed,
            "batch_size": meta.batch_size,
            "content_type": format.content_type(),
            "image": base64::engine::general_purpose::STANDARD.encode(&bytes),
        }))
        .into_response()
    } else {
        ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response()
    };
    add_headers(&mut response, &model, seed, &meta);
    Ok(response)
}

async fn encode_style(
    State(app): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let upload = request::read_style(req).await?;
    let options = (upload.options.model.clone(), upload.options.seed);
    let (model, seed, Done { outcome, meta }) = app
        .run(options, move |model, seed, limits| {
            validate::encode_style(model, &upload.image, seed, limits).map(Task::EncodeStyle)
        })
        .await?;
    let Outcome::Style { mu, logvar, latent } = outcome else {
        return Err(ApiError::Internal("encoding returned no style".into()));
    };
    let mut response =
        Json(json!({"model": model, "seed": seed, "mu": mu, "logvar": logvar, "latent": latent}))
            .into_response();
    add_headers(&mut response, &model, seed, &meta);
    Ok(response)
}

async fn list_models(State(app): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let models: Vec<_> = app
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| m.summary(i == 0))
        .collect();
    Json(json!({ "models": models }))
}

async fn ready(State(app): State<Arc<AppState>>) -> Response {
    if app.draining.load(Ordering::Acquire) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response()
    } else {
        let status = match app.pool.warm_up() {
            WarmUp::Ready => return Json(json!({"status": "ready"})).into_response(),
            WarmUp::Running => "warming up",
            WarmUp::PartlyFailed | WarmUp::Failed => "warm-up failed",
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": status })),
        )
            .into_response()
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

/// Requests and latency by route template and status.
async fn observe(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let start = Instant::now();
    let response = next.run(req).await;
    app.metrics
        .requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    app.metrics
        .latency
        .with_label_values(&[&route])
        .observe(start.elapsed().as_secs_f64());
    response
}

/// Reads the whole body within `--body-timeout`: a client that stalls or trickles does not
/// hold a connection (and its buffer) for longer. Over `--max-body-bytes` (a chunked body,
/// which declares no length) is 413.
async fn read_body_in_time(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, app.max_body_bytes);
    let bytes = match tokio::time::timeout(app.body_timeout, read).await {
        Err(_) => return ApiError::BodyTimeout(app.body_timeout.as_secs_f64()).into_response(),
        Ok(Err(err)) if is_length_limit(&err) => return ApiError::PayloadTooLarge.into_response(),
        Ok(Err(err)) => {
            return ApiError::BadRequest(format!("cannot read the request body: {err}"))
                .into_response()
        }
        Ok(Ok(bytes)) => bytes,
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// `Authorization: Bearer KEY` (the scheme in any case, as RFC 9110 has it) or
/// `X-API-Key: KEY`, compared in constant time. Every credential a request presents must be
/// a valid key: a right Bearer token does not excuse a wrong `X-API-Key` beside it (nor an
/// `Authorization` of another scheme), so that no header is silently ignored.
async fn require_api_key(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if app.api_keys.is_empty() {
        return next.run(req).await;
    }
    let headers = req.headers();
    let bearer = headers.get_all(header::AUTHORIZATION).iter().map(|v| {
        v.to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .and_then(|(scheme, key)| {
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| key.trim_start())
            })
    });
    let api_key = headers.get_all("x-api-key").iter().map(|v| v.to_str().ok());
    let presented: Vec<Option<&str>> = bearer.chain(api_key).collect();
    let known = |given: &str| {
        let mut ok = subtle::Choice::from(0);
        for key in &app.api_keys {
            ok |= key.as_bytes().ct_eq(given.as_bytes());
        }
        bool::from(ok)
    };
    if !presented.is_empty() && presented.iter().all(|key| key.is_some_and(known)) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

impl AppState {
    /// Resolves the model and seed, validates on a blocking thread, and runs the task.
    /// Returns the model's name and the seed used with the result.
    async fn run(
        self: &Arc<Self>,
        (model, seed): (Option<String>, Option<u64>),
        validate: impl FnOnce(&ModelInfo, u64, &DecodeLimits) -> Result<Task, ApiError> + Send + 'static,
    ) -> Result<(String, u64, Done), ApiError> {
        let (index, info) = models::resolve(&self.models, model.as_deref())?;
        let name = info.name.clone();
        let seed = seed.unwrap_or_else(rand_seed);
        // Admitted before decoding: a full queue refuses without the decode's memory and
        // time, and at most `decoders` requests decode at once.
        let slot = self
            .queue
            .reserve(index)
            .inspect_err(|err| self.count_rejection(err))?;
        let permit = self
            .decoders
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::ShuttingDown)?;
        let app = self.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            validate(&app.models[index], seed, &app.limits)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("validation failed: {e}")))??;
        Ok((name, seed, self.submit(slot, task).await?))
    }

    fn count_rejection(&self, err: &ApiError) {
        let reason = match err {
            ApiError::ShuttingDown => "shutting_down",
            _ => "queue_full",
        };
        self.metrics.rejections.with_label_values(&[reason]).inc();
    }

    /// Queues a task and waits for its result. A request whose work has not started by
    /// the deadline is taken out of the queue and answered 504; a dropped request (client
    /// gone) takes its job out of the queue.
    async fn submit(&self, slot: Slot<'_>, task: Task) -> Result<Done, ApiError> {
        let model = slot.model();
        let (reply, rx) = oneshot::channel();
        let now = Instant::now();
        let id = self.next_job.fetch_add(1, Ordering::Relaxed);
        let deadline = now + self.request_timeout;
        let job = Job {
            id,
            model,
            task,
            enqueued: now,
            deadline,
            reply,
        };
        if let Err(err) = self.queue.push(slot, job) {
            self.count_rejection(&err);
            return Err(err);
        }
        let guard = CancelOnDrop { app: self, id };
        let mut rx = rx;
        let result = tokio::select! {
            result = &mut rx => result,
            _ = tokio::time::sleep_until(deadline.into()) => {
                if self.queue.cancel(id) {
                    self.metrics.rejections.with_label_values(&["timeout"]).inc();
                    return Err(ApiError::Timeout(self.request_timeout.as_secs_f64()));
                }
                // Already running: wait for it to finish.
                rx.await
            }
        };
        std::mem::forget(guard);
        result.map_err(|_| ApiError::Internal("the worker dropped the request".into()))?
    }
}

/// Takes a job out of the queue when its request is dropped before completing.
struct CancelOnDrop<'a> {
    app: &'a AppState,
    id: u64,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.app.queue.cancel(self.id) {
            self.app
                .metrics
                .rejections
                .with_label_values(&["cancelled"])
                .inc();
        }
    }
}

fn add_headers(response: &mut Response, model: &str, seed: u64, meta: &BatchMeta) {
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("x-model", model.to_string());
    set("x-seed", seed.to_string());
    set("x-batch-size", meta.batch_size.to_string());
    set(
        "server-timing",
        format!(
            "queue;dur={:.1}, inference;dur={:.1}",
            meta.queued.as_secs_f64() * 1e3,
            meta.inference.as_secs_f64() * 1e3
        ),
    );
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// A seed for requests that gave none, reported back in `X-Seed`; 53 bits, so it stays
/// exact as a JSON number.
fn rand_seed() -> u64 {
    rand::random::<u64>() >> 11
}
