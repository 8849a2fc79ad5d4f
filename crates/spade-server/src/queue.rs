//! The bounded request queue and the dynamic batching policy.
//!
//! Handlers push jobs without blocking (a full model queue is refused at once); worker
//! threads block in [`Queue::next_batch`], which takes the lane (model + kind) whose oldest
//! job has waited longest, and waits up to `max_delay` after that job's arrival for the
//! batch to fill. Jobs past their deadline are answered with a timeout and jobs whose
//! client went away are dropped, both before they reach a worker.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::job::{Job, TaskKind};
use crate::metrics::Metrics;

pub struct Queue {
    state: Mutex<State>,
    wake: Condvar,
    max_per_model: usize,
    max_batch: usize,
    max_delay: Duration,
    model_names: Vec<String>,
    metrics: Metrics,
}

#[derive(Default)]
struct State {
    lanes: HashMap<(usize, TaskKind), VecDeque<Job>>,
    per_model: HashMap<usize, usize>,
    closed: bool,
}

impl State {
    fn remove_where(&mut self, mut drop_it: impl FnMut(&Job) -> bool) -> Vec<Job> {
        let mut removed = Vec::new();
        for lane in self.lanes.values_mut() {
            let mut kept = VecDeque::with_capacity(lane.len());
            for job in lane.drain(..) {
                if drop_it(&job) {
                    removed.push(job);
                } else {
                    kept.push_back(job);
                }
            }
            *lane = kept;
        }
        for job in &removed {
            *self.per_model.entry(job.model).or_default() -= 1;
        }
        removed
    }
}

/// A reserved place in a model's queue (see [`Queue::reserve`]).
pub struct Slot<'a> {
    queue: &'a Queue,
    model: usize,
    /// A job took the place; from then on the queue accounts for it.
    filled: bool,
}

impl Slot<'_> {
    pub fn model(&self) -> usize {
        self.model
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.filled {
            let mut state = self.queue.lock();
            *state.per_model.entry(self.model).or_default() -= 1;
            self.queue.set_depth(&state, self.model);
        }
    }
}

impl Queue {
    pub fn new(
        model_names: Vec<String>,
        max_per_model: usize,
        max_batch: usize,
        max_delay: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            max_per_model,
            max_batch,
            max_delay,
            model_names,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked never holds this lock across user code, so the state is
        // consistent even if the mutex was poisoned.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_depth(&self, state: &State, model: usize) {
        let depth = state.per_model.get(&model).copied().unwrap_or(0);
        self.metrics
            .queue_depth
            .with_label_values(&[&self.model_names[model]])
            .set(depth as i64);
    }

    /// Takes a place in `model`'s queue for a request that is still to be decoded, or says
    /// why there is none: admission comes before the work of decoding, so a full queue
    /// costs a refused request nothing. Dropping the slot gives the place back.
    pub fn reserve(&self, model: usize) -> Result<Slot<'_>, ApiError> {
        let mut state = self.lock();
        if state.closed {
            return Err(ApiError::ShuttingDown);
        }
        let len = state.per_model.entry(model).or_default();
        if *len >= self.max_per_model {
            let name = self.model_names[model].clone();
            return Err(ApiError::QueueFull(name));
        }
        *len += 1;
        self.set_depth(&state, model);
        Ok(Slot {
            queue: self,
            model,
            filled: false,
        })
    }

    /// Enqueues a job in the place reserved for it (`job.model` is the slot's).
    pub fn push(&self, mut slot: Slot<'_>, job: Job) -> Result<(), ApiError> {
        debug_assert_eq!(slot.model, job.model, "a slot holds a job of its own model");
        let mut state = self.lock();
        if state.closed {
            return Err(ApiError::ShuttingDown);
        }
        slot.filled = true;
        state
            .lanes
            .entry((job.model, job.task.kind()))
            .or_default()
            .push_back(job);
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    /// Removes a job that has not started; returns whether it was still queued.
    pub fn cancel(&self, id: u64) -> bool {
        let mut state = self.lock();
        let removed = state.remove_where(|job| job.id == id);
        for job in &removed {
            self.set_depth(&state, job.model);
        }
        !removed.is_empty()
    }

    /// Stops accepting work; workers finish what is queued, then get `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Blocks until a batch is due; `None` once the queue is closed and empty.
    pub fn next_batch(&self) -> Option<Vec<Job>> {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            for job in state.remove_where(|j| j.deadline <= now || j.reply.is_closed()) {
                self.set_depth(&state, job.model);
                if job.reply.is_closed() {
                    self.metrics
                        .rejections
                        .with_label_values(&["cancelled"])
                        .inc();
                } else {
                    self.metrics
                        .rejections
                        .with_label_values(&["timeout"])
                        .inc();
                    let waited = job.deadline.saturating_duration_since(job.enqueued);
                    let _ = job.reply.send(Err(ApiError::Timeout(waited.as_secs_f64())));
                }
            }
            let oldest = state
                .lanes
                .iter()
                .filter_map(|(key, lane)| lane.front().map(|job| (*key, job.enqueued, lane.len())))
                .min_by_key(|(_, enqueued, _)| *enqueued);
            let Some((key, enqueued, len)) = oldest else {
                if state.closed {
                    return None;
                }
                let next_deadline = Duration::from_secs(1);
                state = self
                    .wake
                    .wait_timeout(state, next_deadline)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            };
            let due = enqueued + self.max_delay;
            if len >= self.max_batch || now >= due || state.closed {
                let lane = state.lanes.get_mut(&key).expect("lane exists");
                let batch: Vec<Job> = lane.drain(..len.min(self.max_batch)).collect();
                *state.per_model.entry(key.0).or_default() -= batch.len();
                self.set_depth(&state, key.0);
                return Some(batch);
            }
            // Wake at the batch's due time, or earlier when a job arrives.
            let soonest_deadline = state
                .lanes
                .values()
                .flatten()
                .map(|j| j.deadline)
                .min()
                .unwrap_or(due);
            let wait = due.min(soonest_deadline).saturating_duration_since(now);
            state = self
                .wake
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}
