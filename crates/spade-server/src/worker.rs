//! The worker pool: threads that take batches from the queue and run them on a device,
//! off the async runtime. A panic fails only its batch (500) and the worker is replaced.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::job::{BatchMeta, Done, Job, Task};
use crate::metrics::Metrics;
use crate::queue::Queue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmUp {
    Running,
    Ready,
    /// Some workers failed theirs: never ready, so traffic goes to healthy replicas.
    PartlyFailed,
    /// Every worker failed: nothing here can serve.
    Failed,
}

pub struct WorkerPool {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Arc<Queue>,
    engine: Arc<dyn Engine>,
    metrics: Metrics,
    /// Workers whose warm-up batch ran.
    warm: AtomicUsize,
    /// Workers whose warm-up batch failed: their model cannot run on their device.
    failed: AtomicUsize,
    total: usize,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl WorkerPool {
    /// Starts `per_device` workers on each of `devices` devices.
    pub fn start(
        queue: Arc<Queue>,
        engine: Arc<dyn Engine>,
        metrics: Metrics,
        devices: usize,
        per_device: usize,
    ) -> Self {
        let shared = Arc::new(Shared {
            queue,
            engine,
            metrics,
            warm: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            total: devices * per_device,
            handles: Mutex::new(Vec::new()),
        });
        for device in 0..devices {
            for _ in 0..per_device {
                spawn(&shared, device, true);
            }
        }
        Self { shared }
    }

    /// Where the warm-up stands: ready only when every worker ran its batch.
    pub fn warm_up(&self) -> WarmUp {
        let (warm, failed) = (
            self.shared.warm.load(Ordering::Acquire),
            self.shared.failed.load(Ordering::Acquire),
        );
        if failed == self.shared.total {
            WarmUp::Failed
        } else if failed > 0 {
            WarmUp::PartlyFailed
        } else if warm >= self.shared.total {
            WarmUp::Ready
        } else {
            WarmUp::Running
        }
    }

    /// Closes the queue and waits for the workers to finish what was queued.
    pub fn shutdown(&self) {
        self.shared.queue.close();
        loop {
            let handle = self
                .shared
                .handles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            match handle {
                Some(h) => {
                    let _ = h.join();
                }
                None => break,
            }
        }
    }
}

fn spawn(shared: &Arc<Shared>, device: usize, warm_up: bool) {
    let worker = Arc::clone(shared);
    let handle = std::thread::Builder::new()
        .name(format!("spade-worker-d{device}"))
        .spawn(move || run(worker, device, warm_up))
        .expect("spawning a worker thread");
    shared
        .handles
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(handle);
}

fn run(shared: Arc<Shared>, device: usize, warm_up: bool) {
    if warm_up {
        let outcome = match catch_unwind(AssertUnwindSafe(|| shared.engine.warm_up(device))) {
            Ok(Ok(())) => {
                tracing::info!(device, "worker warmed up");
                &shared.warm
            }
            Ok(Err(err)) => {
                tracing::error!(device, %err, "warm-up failed");
                &shared.failed
            }
            Err(_) => {
                tracing::error!(device, "warm-up panicked");
                &shared.failed
            }
        };
        outcome.fetch_add(1, Ordering::AcqRel);
    }
    while let Some(batch) = shared.queue.next_batch() {
        if !run_batch(&shared, device, batch) {
            shared.metrics.worker_restarts.inc();
            tracing::error!(
                device,
                "worker panicked; its batch failed and a new worker replaces it"
            );
            spawn(&shared, device, false);
            return;
        }
    }
}

/// Runs one batch and answers its jobs; false if the engine panicked.
fn run_batch(shared: &Shared, device: usize, batch: Vec<Job>) -> bool {
    let started = Instant::now();
    let size = batch.len();
    let model = batch[0].model;
    let mut tasks: Vec<Task> = Vec::with_capacity(size);
    let mut replies = Vec::with_capacity(size);
    for job in batch {
        let queued = started.duration_since(job.enqueued);
        shared.metrics.queue_wait.observe(queued.as_secs_f64());
        tasks.push(job.task);
        replies.push((job.reply, queued));
    }
    shared.metrics.batch_size.observe(size as f64);
    let result = catch_unwind(AssertUnwindSafe(|| shared.engine.run(device, model, tasks)));
    let inference = started.elapsed();
    shared.metrics.inference.observe(inference.as_secs_f64());
    let (results, panicked) = match result {
        Ok(results) if results.len() == size => (results, false),
        Ok(_) => (
            failures(size, "the engine returned the wrong number of results"),
            false,
        ),
        Err(_) => (
            failures(size, "the worker failed while running this batch"),
            true,
        ),
    };
    for ((reply, queued), result) in replies.into_iter().zip(results) {
        let meta = BatchMeta {
            batch_size: size,
            queued,
            inference,
        };
        let _ = reply.send(result.map(|outcome| Done { outcome, meta }));
    }
    !panicked
}

fn failures(n: usize, why: &str) -> Vec<Result<crate::job::Outcome, ApiError>> {
    (0..n)
        .map(|_| Err(ApiError::Internal(why.to_string())))
        .collect()
}
