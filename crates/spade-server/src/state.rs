//! The state every request handler shares: the models, the queue and its workers, metrics,
//! limits and keys. Built by [`app`](crate::app), read by [`routes`](crate::routes).

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use spade_model::io::preprocess::DecodeLimits;

use crate::metrics::Metrics;
use crate::models::ModelInfo;
use crate::queue::Queue;
use crate::worker::WorkerPool;

/// Shared by every request.
pub struct AppState {
    pub models: Vec<ModelInfo>,
    pub queue: Arc<Queue>,
    pub pool: WorkerPool,
    pub metrics: Metrics,
    pub limits: DecodeLimits,
    /// Permits to decode and validate an input; bounds the memory that decoding takes.
    pub decoders: Arc<tokio::sync::Semaphore>,
    pub max_body_bytes: usize,
    /// Time a client has to send a whole request body.
    pub body_timeout: Duration,
    pub request_timeout: Duration,
    pub api_keys: Vec<String>,
    pub next_job: AtomicU64,
    pub draining: AtomicBool,
}
