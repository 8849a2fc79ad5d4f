//! A unit of queued work: what to compute, for which model, and where to send the result.

use std::time::{Duration, Instant};

use candle_core::Tensor;
use spade_model::io::preprocess::IdMap;
use tokio::sync::oneshot;

use crate::error::ApiError;

/// Requests of the same model and kind may share a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    Synthesize,
    EncodeStyle,
}

#[derive(Debug)]
pub enum Task {
    Synthesize(SynthesizeTask),
    EncodeStyle(EncodeTask),
}

impl Task {
    pub fn kind(&self) -> TaskKind {
        match self {
            Task::Synthesize(_) => TaskKind::Synthesize,
            Task::EncodeStyle(_) => TaskKind::EncodeStyle,
        }
    }
}

/// A validated mask at the model's resolution, ready to be batched.
#[derive(Debug)]
pub struct SynthesizeTask {
    pub label: IdMap,
    pub instance: Option<IdMap>,
    pub style: Style,
    pub output: OutputSpec,
}

/// Where a VAE model's style vector comes from (always `None` for other models).
#[derive(Debug)]
pub enum Style {
    None,
    Seed(u64),
    Latent(Vec<f32>),
    /// A preprocessed photo (1 x 3 x H x W), encoded and sampled with `seed`.
    Photo {
        image: Tensor,
        seed: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
}

impl ImageFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct OutputSpec {
    pub format: ImageFormat,
    /// Width and height of the returned image; `None` keeps the model's resolution.
    pub size: Option<(usize, usize)>,
}

#[derive(Debug)]
pub struct EncodeTask {
    /// 1 x 3 x H x W in [-1, 1].
    pub photo: Tensor,
    pub seed: u64,
}

/// What a finished task returns.
#[derive(Debug)]
pub enum Outcome {
    Image {
        bytes: Vec<u8>,
        format: ImageFormat,
    },
    Style {
        mu: Vec<f32>,
        logvar: Vec<f32>,
        latent: Vec<f32>,
    },
}

/// The outcome with how it was produced.
#[derive(Debug)]
pub struct Done {
    pub outcome: Outcome,
    pub meta: BatchMeta,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchMeta {
    /// Requests that shared the batch.
    pub batch_size: usize,
    pub queued: Duration,
    pub inference: Duration,
}

pub type Reply = oneshot::Sender<Result<Done, ApiError>>;

#[derive(Debug)]
pub struct Job {
    pub id: u64,
    pub model: usize,
    pub task: Task,
    pub enqueued: Instant,
    pub deadline: Instant,
    pub reply: Reply,
}
