//! Runs one batch of tasks on one device's copy of the models and encodes the results.

use std::io::Cursor;

use candle_core::{Device, Tensor};
use spade_model::io::preprocess::{to_rgb8, Preprocessor};
use spade_model::io::resample::Raster;
use spade_model::model::standard_normal;
use spade_model::SpadeModel;

use crate::error::ApiError;
use crate::job::{EncodeTask, ImageFormat, Outcome, Style, SynthesizeTask, Task};

/// What a worker calls to run a batch; the pool is generic over it so that its failure
/// handling can be exercised with engines that fail on purpose.
pub trait Engine: Send + Sync + 'static {
    /// Runs tasks of one model and kind; one result per task, in order.
    fn run(&self, device: usize, model: usize, tasks: Vec<Task>) -> Vec<Result<Outcome, ApiError>>;

    /// One small batch per model, so the first real request does not pay for lazy setup.
    fn warm_up(&self, device: usize) -> Result<(), ApiError>;
}

/// The production engine: every model loaded once per device.
pub struct ModelEngine {
    /// `models[device][model]`.
    models: Vec<Vec<SpadeModel>>,
}

impl ModelEngine {
    pub fn new(models: Vec<Vec<SpadeModel>>) -> Self {
        Self { models }
    }
}

impl Engine for ModelEngine {
    fn run(&self, device: usize, model: usize, tasks: Vec<Task>) -> Vec<Result<Outcome, ApiError>> {
        let model = &self.models[device][model];
        let n = tasks.len();
        // A batch holds one kind of task (the queue batches by model and kind).
        let (mut synth, mut styles) = (Vec::new(), Vec::new());
        for task in tasks {
            match task {
                Task::Synthesize(t) => synth.push(t),
                Task::EncodeStyle(t) => styles.push(t),
            }
        }
        let result = match (synth.is_empty(), styles.is_empty()) {
            (false, _) => synthesize(model, &synth),
            (true, false) => encode_style(model, &styles),
            (true, true) => Ok(Vec::new()),
        };
        match result {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(err) => {
                let message = err.to_string();
                (0..n)
                    .map(|_| Err(ApiError::Internal(message.clone())))
                    .collect()
            }
        }
    }

    fn warm_up(&self, device: usize) -> Result<(), ApiError> {
        for model in &self.models[device] {
            let (h, w) = model.config.output_size();
            let task = SynthesizeTask {
                label: Raster::new(w, h, 1, vec![0; w * h]),
                instance: (!model.config.no_instance).then(|| Raster::new(w, h, 1, vec![0; w * h])),
                style: if model.config.use_vae {
                    Style::Seed(0)
                } else {
                    Style::None
                },
                output: crate::job::OutputSpec {
                    format: ImageFormat::Png,
                    size: None,
                },
            };
            synthesize(model, &[task])?;
        }
        Ok(())
    }
}

fn synthesize(model: &SpadeModel, tasks: &[SynthesizeTask]) -> Result<Vec<Outcome>, ApiError> {
    let pre = Preprocessor::new(&model.config);
    let labels: Vec<_> = tasks.iter().map(|t| t.label.clone()).collect();
    let instances: Option<Vec<_>> = tasks.iter().map(|t| t.instance.clone()).collect();
    let semantics = pre.semantics(&labels, instances.as_deref(), &model.device)?;
    let z = if model.config.use_vae {
        let rows = tasks
            .iter()
            .map(|t| style_vector(model, &t.style))
            .collect::<Result<Vec<_>, _>>()?;
        Some(Tensor::cat(&rows, 0).map_err(internal)?)
    } else {
        None
    };
    let images = model.synthesize(&semantics, z.as_ref())?;
    to_rgb8(&images)?
        .into_iter()
        .zip(tasks)
        .map(|(rgb, task)| {
            let rgb = match task.output.size {
                Some((w, h)) => rgb.resize_bicubic(w, h),
                None => rgb,
            };
            Ok(Outcome::Image {
                bytes: encode_image(rgb, task.output.format)?,
                format: task.output.format,
            })
        })
        .collect()
}

fn style_vector(model: &SpadeModel, style: &Style) -> Result<Tensor, ApiError> {
    let z_dim = model.config.z_dim;
    match style {
        Style::Seed(seed) => Ok(model.random_z(*seed, 1)?),
        Style::None => Err(ApiError::Internal(
            "a VAE model was given no style; the handler always sets a seed".into(),
        )),
        Style::Latent(values) => {
            Tensor::from_vec(values.clone(), (1, z_dim), &model.device).map_err(internal)
        }
        Style::Photo { image, seed } => Ok(model.style_from_image(image, *seed)?),
    }
}

fn encode_style(model: &SpadeModel, tasks: &[EncodeTask]) -> Result<Vec<Outcome>, ApiError> {
    let photos: Vec<&Tensor> = tasks.iter().map(|t| &t.photo).collect();
    let batch = Tensor::cat(&photos, 0).map_err(internal)?;
    let (mu, logvar) = model.encode(&batch)?;
    let rows = |t: &Tensor| t.to_device(&Device::Cpu)?.to_vec2::<f32>();
    let (mu, logvar) = (
        rows(&mu).map_err(internal)?,
        rows(&logvar).map_err(internal)?,
    );
    tasks
        .iter()
        .zip(mu.into_iter().zip(logvar))
        .map(|(task, (mu, logvar))| {
            let d = mu.len();
            let eps = standard_normal(task.seed, 1, d, &Device::Cpu)?
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(internal)?;
            let latent = (0..d)
                .map(|i| mu[i] + eps[i] * (0.5 * logvar[i]).exp())
                .collect();
            Ok(Outcome::Style { mu, logvar, latent })
        })
        .collect()
}

fn encode_image(rgb: Raster<u8>, format: ImageFormat) -> Result<Vec<u8>, ApiError> {
    let image = image::RgbImage::from_raw(rgb.width as u32, rgb.height as u32, rgb.data)
        .ok_or_else(|| ApiError::Internal("raster size mismatch".into()))?;
    let mut out = Cursor::new(Vec::new());
    let result = match format {
        ImageFormat::Png => image.write_to(&mut out, image::ImageFormat::Png),
        ImageFormat::Jpeg => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&image)
        }
    };
    result.map_err(|e| ApiError::Internal(format!("encoding the image: {e}")))?;
    Ok(out.into_inner())
}

fn internal(err: candle_core::Error) -> ApiError {
    ApiError::Internal(err.to_string())
}
