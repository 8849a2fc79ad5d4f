//! The options of the official `train.py`, under their official names, with the per-dataset
//! defaults of the official dataset classes, resolved into the configs the networks, losses
//! and optimisers are built from.

use std::path::PathBuf;

use clap::Parser;

use crate::error::{Error, Result};
use crate::io::config::{Config, ConvNorm, GeneratorNorm, PreprocessMode, Upsampling};
use crate::nets::discriminator::DiscriminatorConfig;
use crate::train::dataset::{DataSource, Phase};
use crate::train::loss::GanMode;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "trainer",
    about = "Train SPADE as the official train.py does, with its option names, dataset layouts \
             and checkpoint folders",
    rename_all = "verbatim"
)]
pub struct TrainOptions {
    /// Experiment name: checkpoints go to `<checkpoints_dir>/<name>`.
    #[arg(long, default_value = "label2coco")]
    pub name: String,
    #[arg(long, default_value = "./checkpoints")]
    pub checkpoints_dir: PathBuf,
    /// -1 for the CPU, 0 for the first GPU (one GPU per process).
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    pub gpu_ids: String,

    /// coco, ade20k, cityscapes or custom.
    #[arg(long, default_value = "coco")]
    pub dataset_mode: String,
    #[arg(long, default_value = "./datasets/cityscapes/")]
    pub dataroot: PathBuf,
    /// custom: folder of label maps.
    #[arg(long)]
    pub label_dir: Option<PathBuf>,
    /// custom: folder of photos.
    #[arg(long)]
    pub image_dir: Option<PathBuf>,
    /// custom: folder of instance maps (optional).
    #[arg(long)]
    pub instance_dir: Option<PathBuf>,
    #[arg(long = "batchSize", default_value_t = 1)]
    pub batch_size: usize,
    #[arg(long)]
    pub preprocess_mode: Option<PreprocessMode>,
    #[arg(long)]
    pub load_size: Option<usize>,
    #[arg(long)]
    pub crop_size: Option<usize>,
    #[arg(long)]
    pub aspect_ratio: Option<f64>,
    #[arg(long)]
    pub no_flip: bool,
    #[arg(long)]
    pub label_nc: Option<usize>,
    #[arg(long)]
    pub contain_dontcare_label: bool,
    #[arg(long)]
    pub no_instance: bool,
    #[arg(long)]
    pub serial_batches: bool,
    #[arg(long, default_value_t = usize::MAX)]
    pub max_dataset_size: usize,

    #[arg(long = "norm_G", default_value = "spectralspadesyncbatch3x3")]
    pub norm_g: GeneratorNorm,
    #[arg(long = "norm_D", default_value = "spectralinstance")]
    pub norm_d: ConvNorm,
    #[arg(long = "norm_E", default_value = "spectralinstance")]
    pub norm_e: ConvNorm,
    #[arg(long, default_value = "normal")]
    pub num_upsampling_layers: Upsampling,
    #[arg(long, default_value_t = 64)]
    pub ngf: usize,
    #[arg(long, default_value_t = 64)]
    pub ndf: usize,
    #[arg(long = "num_D", default_value_t = 2)]
    pub num_d: usize,
    #[arg(long = "n_layers_D", default_value_t = 4)]
    pub n_layers_d: usize,
    #[arg(long)]
    pub use_vae: bool,
    #[arg(long, default_value_t = 256)]
    pub z_dim: usize,
    /// Only `xavier` is supported.
    #[arg(long, default_value = "xavier")]
    pub init_type: String,
    /// Gain of the xavier initialisation.
    #[arg(long, default_value_t = 0.02)]
    pub init_variance: f64,

    #[arg(long, default_value_t = 50)]
    pub niter: usize,
    #[arg(long, default_value_t = 0)]
    pub niter_decay: usize,
    #[arg(long, default_value_t = 0.0002)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.0)]
    pub beta1: f64,
    #[arg(long, default_value_t = 0.9)]
    pub beta2: f64,
    #[arg(long = "no_TTUR")]
    pub no_ttur: bool,
    #[arg(long = "D_steps_per_G", default_value_t = 1)]
    pub d_steps_per_g: usize,
    #[arg(long, default_value = "hinge")]
    pub gan_mode: GanMode,
    #[arg(long, default_value_t = 10.0)]
    pub lambda_feat: f64,
    #[arg(long, default_value_t = 10.0)]
    pub lambda_vgg: f64,
    #[arg(long, default_value_t = 0.05)]
    pub lambda_kld: f64,
    /// Weight of an L1 loss between the fake and the real image (not in the official code;
    /// 0 leaves it out). Without the VGG loss it gives the style encoder a direct signal.
    #[arg(long, default_value_t = 0.0)]
    pub lambda_l1: f64,
    #[arg(long = "no_ganFeat_loss")]
    pub no_gan_feat_loss: bool,
    #[arg(long)]
    pub no_vgg_loss: bool,
    /// torchvision VGG19 weights (`.pth` or `.safetensors`) for the perceptual loss.
    #[arg(long)]
    pub vgg_weights: Option<PathBuf>,

    #[arg(long)]
    pub continue_train: bool,
    #[arg(long, default_value = "latest")]
    pub which_epoch: String,
    #[arg(long, default_value_t = 100)]
    pub print_freq: usize,
    #[arg(long, default_value_t = 100)]
    pub display_freq: usize,
    #[arg(long, default_value_t = 5000)]
    pub save_latest_freq: usize,
    #[arg(long, default_value_t = 10)]
    pub save_epoch_freq: usize,
    /// Stop once `total_steps` (samples seen, counted across resumes) reaches N, saving
    /// `latest` as a SIGTERM does (not in the official code; 0 runs every epoch).
    #[arg(long, default_value_t = 0)]
    pub max_total_steps: usize,
    /// Seed of initialisation, data order, augmentation and the VAE noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Per-dataset defaults of the official dataset classes (training phase).
struct DatasetDefaults {
    preprocess_mode: PreprocessMode,
    load_size: usize,
    crop_size: usize,
    aspect_ratio: f64,
    label_nc: usize,
    contain_dontcare_label: bool,
    no_instance: bool,
}

fn dataset_defaults(mode: &str) -> Result<DatasetDefaults> {
    let base = DatasetDefaults {
        preprocess_mode: PreprocessMode::ResizeAndCrop,
        load_size: 286,
        crop_size: 256,
        aspect_ratio: 1.0,
        label_nc: 182,
        contain_dontcare_label: false,
        no_instance: false,
    };
    Ok(match mode {
        "coco" => DatasetDefaults {
            contain_dontcare_label: true,
            ..base
        },
        "ade20k" => DatasetDefaults {
            label_nc: 150,
            contain_dontcare_label: true,
            no_instance: true,
            ..base
        },
        "cityscapes" => DatasetDefaults {
            preprocess_mode: PreprocessMode::Fixed,
            load_size: 512,
            crop_size: 512,
            aspect_ratio: 2.0,
            label_nc: 35,
            ..base
        },
        "custom" => base,
        other => {
            return Err(Error::config(
                "dataset_mode",
                format!("unknown dataset_mode `{other}` (coco, ade20k, cityscapes, custom)"),
            ))
        }
    })
}

/// Everything a training step needs to know, resolved from the options.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub model: Config,
    pub discriminator: DiscriminatorConfig,
    pub gan_mode: GanMode,
    pub lambda_feat: f64,
    pub lambda_vgg: f64,
    pub lambda_kld: f64,
    pub lambda_l1: f64,
    pub gan_feat_loss: bool,
    pub vgg_loss: bool,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub ttur: bool,
    pub niter: usize,
    pub niter_decay: usize,
}

impl TrainConfig {
    /// `(G lr, D lr)` for a base learning rate: halved / doubled under TTUR.
    pub fn learning_rates(&self, lr: f64) -> (f64, f64) {
        if self.ttur {
            (lr / 2.0, lr * 2.0)
        } else {
            (lr, lr)
        }
    }

    /// Adam's betas: `(0, 0.9)` under TTUR, the options otherwise.
    pub fn betas(&self) -> (f64, f64) {
        if self.ttur {
            (0.0, 0.9)
        } else {
            (self.beta1, self.beta2)
        }
    }

    /// The base learning rate after `epoch` (1-based) ended: constant for `niter` epochs,
    /// then down by `lr / niter_decay` per epoch.
    pub fn lr_after_epoch(&self, epoch: usize) -> f64 {
        if epoch <= self.niter || self.niter_decay == 0 {
            self.lr
        } else {
            let decayed = (epoch - self.niter).min(self.niter_decay);
            self.lr - decayed as f64 * self.lr / self.niter_decay as f64
        }
    }
}

impl TrainOptions {
    /// The options an official `opt.txt` records (`name: value` lines), as if they were
    /// given on the command line. Options that do not concern training here (display,
    /// caching, threads) are skipped.
    pub fn from_opt_txt(text: &str) -> Result<Self> {
        let mut args = vec!["trainer".to_string()];
        let known: Vec<String> = <Self as clap::CommandFactory>::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        for line in text.lines() {
            let line = line.split('\t').next().unwrap_or("").trim();
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            if !known.iter().any(|k| k == key) {
                continue;
            }
            match value {
                "True" => args.push(format!("--{key}")),
                "False" => {}
                _ => args.push(format!("--{key}={value}")),
            }
        }
        Self::try_parse_from(args).map_err(|e| Error::config("opt.txt", e.to_string()))
    }

    /// The folder of this experiment's checkpoints.
    pub fn experiment_dir(&self) -> PathBuf {
        self.checkpoints_dir.join(&self.name)
    }

    /// The training split these options name.
    pub fn data_source(&self) -> DataSource {
        DataSource {
            dataroot: self.dataroot.clone(),
            dataset_mode: self.dataset_mode.clone(),
            label_dir: self.label_dir.clone(),
            image_dir: self.image_dir.clone(),
            instance_dir: self.instance_dir.clone(),
            phase: Phase::Train,
            flip: !self.no_flip,
            max_dataset_size: self.max_dataset_size,
        }
    }

    pub fn resolve(&self) -> Result<TrainConfig> {
        let d = dataset_defaults(&self.dataset_mode)?;
        if self.init_type != "xavier" {
            return Err(Error::config(
                "init_type",
                format!("only `xavier` is supported, got `{}`", self.init_type),
            ));
        }
        if self.batch_size == 0 {
            return Err(Error::config("batchSize", "must be at least 1"));
        }
        if self.d_steps_per_g == 0 {
            return Err(Error::config("D_steps_per_G", "must be at least 1"));
        }
        if !self.no_vgg_loss && self.vgg_weights.is_none() {
            return Err(Error::config(
                "vgg_weights",
                "the VGG perceptual loss needs torchvision VGG19 weights: pass --vgg_weights \
                 <vgg19.pth|.safetensors>, or --no_vgg_loss to train without it",
            ));
        }
        let crop_size = self.crop_size.unwrap_or(d.crop_size);
        let model = Config {
            label_nc: self.label_nc.unwrap_or(d.label_nc),
            contain_dontcare_label: self.contain_dontcare_label || d.contain_dontcare_label,
            no_instance: self.no_instance || d.no_instance,
            ngf: self.ngf,
            z_dim: self.z_dim,
            use_vae: self.use_vae,
            crop_size,
            load_size: self.load_size.unwrap_or(d.load_size),
            aspect_ratio: self.aspect_ratio.unwrap_or(d.aspect_ratio),
            num_upsampling_layers: self.num_upsampling_layers,
            norm_g: self.norm_g.clone(),
            norm_e: self.norm_e.clone(),
            preprocess_mode: self.preprocess_mode.unwrap_or(d.preprocess_mode),
            dataset_mode: self.dataset_mode.clone(),
            semantic_nc: None,
        };
        model.validate()?;
        Ok(TrainConfig {
            discriminator: DiscriminatorConfig {
                input_nc: model.semantic_nc() + 3,
                ndf: self.ndf,
                n_layers_d: self.n_layers_d,
                num_d: self.num_d,
                norm_d: self.norm_d.clone(),
            },
            model,
            gan_mode: self.gan_mode,
            lambda_feat: self.lambda_feat,
            lambda_vgg: self.lambda_vgg,
            lambda_kld: self.lambda_kld,
            lambda_l1: self.lambda_l1,
            gan_feat_loss: !self.no_gan_feat_loss,
            vgg_loss: !self.no_vgg_loss,
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            ttur: !self.no_ttur,
            niter: self.niter,
            niter_decay: self.niter_decay,
        })
    }
}
