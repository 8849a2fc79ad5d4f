//! One training iteration as the official `Pix2PixTrainer` runs it: a generator step (G and,
//! with the VAE, E) against the discriminator, then a discriminator step on a fake that the
//! *updated* generator regenerates, in train mode, so that its batch-norm statistics and
//! spectral-norm vectors advance a second time, as they do in the reference.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::nets::discriminator::MultiscaleDiscriminator;
use crate::nets::encoder::{reparameterize, Encoder};
use crate::nets::generator::Generator;
use crate::nets::layers::Mode;
use crate::nets::vgg::Vgg19;
use crate::ops::all_reduce::{AllReduce, Collective};
use crate::ops::profile;
use crate::train::loss::{self, Target};
use crate::train::network::NetworkState;
use crate::train::optim::{Adam, AdamConfig};
use crate::train::options::TrainConfig;

/// Adam's epsilon in the official optimisers (PyTorch's default).
const ADAM_EPS: f64 = 1e-8;

/// One batch of training data.
#[derive(Debug, Clone)]
pub struct Batch {
    /// N x semantic_nc x H x W: one-hot labels (+ dontcare) (+ instance edges).
    pub semantics: Tensor,
    /// N x 3 x H x W in [-1, 1].
    pub image: Tensor,
}

/// Per scale, every layer's output of the discriminator.
pub use crate::nets::discriminator::Outputs as DiscriminatorOutputs;

/// Named scalar losses of a step, in the reference's order.
pub type Losses = Vec<(&'static str, f32)>;

/// What the generator step computed.
pub struct GeneratorStep {
    pub losses: Losses,
    pub fake: Tensor,
    /// Every discriminator output (per scale, per layer) for the fake and for the real image.
    pub judged: (DiscriminatorOutputs, DiscriminatorOutputs),
    /// `(mu, logvar)` of the encoder, with the VAE.
    pub style: Option<(Tensor, Tensor)>,
    /// Gradients of the G (and E) parameters, keyed `G.<name>` / `E.<name>`.
    pub grads: HashMap<String, Tensor>,
}

/// What the discriminator step computed.
pub struct DiscriminatorStep {
    pub losses: Losses,
    pub fake: Tensor,
    /// The last output of every scale, for `fake ++ real` along the batch.
    pub predictions: Vec<Tensor>,
    /// Gradients of the D parameters, keyed `D.<name>`.
    pub grads: HashMap<String, Tensor>,
}

pub struct Trainer {
    pub config: TrainConfig,
    pub generator_state: NetworkState,
    pub discriminator_state: NetworkState,
    pub encoder_state: Option<NetworkState>,
    generator: Generator,
    discriminator: MultiscaleDiscriminator,
    encoder: Option<Encoder>,
    vgg: Option<Vgg19>,
    pub optimizer_g: Adam,
    pub optimizer_d: Adam,
    device: Device,
    /// Data-parallel ranks whose gradients are averaged with ours.
    group: Option<AllReduce>,
}

/// How the networks get their first weights.
pub enum Start<'a> {
    /// The official initialisation, seeded.
    Fresh { seed: u64 },
    /// `<dir>/<epoch>_net_{G,D,E}.pth`.
    Checkpoint { dir: &'a Path, epoch: &'a str },
}

impl Trainer {
    pub fn new(
        config: TrainConfig,
        start: Start,
        vgg_weights: Option<&Path>,
        device: &Device,
        dtype: DType,
        group: Option<Arc<dyn Collective>>,
    ) -> Result<Self> {
        let model = &config.model;
        let mode = Mode::Train(group.clone());
        let generator_state = NetworkState::new("G", device, dtype);
        let generator = Generator::with_mode(model, &mode, generator_state.var_builder())?;
        let discriminator_state = NetworkState::new("D", device, dtype);
        let discriminator = MultiscaleDiscriminator::new(
            &config.discriminator,
            &mode,
            discriminator_state.var_builder(),
        )?;
        let (encoder_state, encoder) = if model.use_vae {
            let state = NetworkState::new("E", device, dtype);
            let encoder = Encoder::with_mode(model, &mode, state.var_builder())?;
            (Some(state), Some(encoder))
        } else {
            (None, None)
        };
        let networks = [
            Some(&generator_state),
            Some(&discriminator_state),
            encoder_state.as_ref(),
        ];
        for (offset, state) in networks.into_iter().flatten().enumerate() {
            match &start {
                Start::Fresh { seed } => state.initialize(seed.wrapping_add(offset as u64))?,
                Start::Checkpoint { dir, epoch } => {
                    let path = dir.join(format!("{epoch}_net_{}.pth", state.label));
                    if !path.is_file() {
                        return Err(Error::checkpoint(
                            &path,
                            "missing: continue_train needs the G, D (and with use_vae E) \
                             checkpoints of `which_epoch`",
                        ));
                    }
                    state.load_pth(&path)?;
                }
            }
        }
        let vgg = match (config.vgg_loss, vgg_weights) {
            (false, _) => None,
            (true, Some(path)) => Some(Vgg19::load(path, device, dtype)?),
            (true, None) => {
                return Err(Error::config(
                    "vgg_weights",
                    "the VGG loss is on but no VGG19 weights were given",
                ))
            }
        };
        let (g_lr, d_lr) = config.learning_rates(config.lr);
        let (beta1, beta2) = config.betas();
        let adam = |lr| AdamConfig {
            lr,
            beta1,
            beta2,
            eps: ADAM_EPS,
        };
        let mut g_params = prefixed(&generator_state);
        if let Some(e) = &encoder_state {
            g_params.extend(prefixed(e));
        }
        Ok(Self {
            optimizer_g: Adam::new(g_params, adam(g_lr)),
            optimizer_d: Adam::new(prefixed(&discriminator_state), adam(d_lr)),
            config,
            generator_state,
            discriminator_state,
            encoder_state,
            generator,
            discriminator,
            encoder,
            vgg,
            device: device.clone(),
            group: group.map(AllReduce),
        })
    }

    /// Ranks training together (1 without a group).
    pub fn world_size(&self) -> usize {
        self.group.as_ref().map_or(1, |g| g.0.world_size())
    }

    /// Replaces every parameter gradient by its mean over the ranks, parameter by parameter
    /// in name order (the same order on every rank).
    fn average_gradients(&self, grads: &mut GradStore, states: &[&NetworkState]) -> Result<()> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let world = group.0.world_size() as f64;
        for state in states {
            for (name, var) in state.parameters() {
                let grad = grads.remove(var.as_tensor()).ok_or_else(|| {
                    Error::input(
                        "gradients",
                        format!("{}.{name} got no gradient", state.label),
                    )
                })?;
                grads.insert(var.as_tensor(), (group.apply(&grad)? / world)?);
            }
        }
        Ok(())
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The networks in state-dict form, `(label, state)`.
    pub fn networks(&self) -> Vec<&NetworkState> {
        let mut all = vec![&self.generator_state, &self.discriminator_state];
        all.extend(self.encoder_state.as_ref());
        all
    }

    /// The fake image, with the VAE from the real image's style and `eps`.
    fn generate_fake(
        &self,
        batch: &Batch,
        eps: Option<&Tensor>,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let Some(encoder) = &self.encoder else {
            return Ok((self.generator.forward(&batch.semantics, None)?, None));
        };
        let eps =
            eps.ok_or_else(|| Error::input("eps", "the VAE needs reparameterisation noise"))?;
        let (mu, logvar) = encoder.forward(&batch.image)?;
        let z = reparameterize(&mu, &logvar, eps)?;
        let fake = self.generator.forward(&batch.semantics, Some(&z))?;
        Ok((fake, Some((mu, logvar))))
    }

    /// The discriminator on `semantics ++ fake` and `semantics ++ real`, in one batch (fake
    /// first) as the reference runs it; returns all outputs and their fake / real halves.
    fn discriminate(
        &self,
        semantics: &Tensor,
        fake: &Tensor,
        real: &Tensor,
    ) -> Result<(
        DiscriminatorOutputs,
        DiscriminatorOutputs,
        DiscriminatorOutputs,
    )> {
        let n = fake.dim(0)?;
        let fake_concat = Tensor::cat(&[semantics, fake], 1)?;
        let real_concat = Tensor::cat(&[semantics, real], 1)?;
        let outputs = self
            .discriminator
            .forward(&Tensor::cat(&[fake_concat, real_concat], 0)?)?;
        let half = |start| -> Result<DiscriminatorOutputs> {
            outputs
                .iter()
                .map(|scale| {
                    scale
                        .iter()
                        .map(|t| Ok(t.narrow(0, start, n)?))
                        .collect::<Result<Vec<_>>>()
                })
                .collect()
        };
        let (fake_out, real_out) = (half(0)?, half(n)?);
        Ok((outputs, fake_out, real_out))
    }

    /// `run_generator_one_step`: losses, backward, Adam step on G (and E).
    pub fn generator_step(&mut self, batch: &Batch, eps: Option<&Tensor>) -> Result<GeneratorStep> {
        let cfg = &self.config;
        let forward = profile::scope("step: G forward + losses");
        let (fake, style) = self.generate_fake(batch, eps)?;
        let (pred_fake, pred_real) = self.discriminator.judge_frozen(
            &Tensor::cat(&[&batch.semantics, &fake], 1)?,
            &Tensor::cat(&[&batch.semantics, &batch.image], 1)?,
        )?;
        let mut terms: Vec<(&'static str, Tensor)> =
            vec![("GAN", cfg.gan_mode.loss(&pred_fake, Target::Generator)?)];
        if cfg.gan_feat_loss {
            terms.push((
                "GAN_Feat",
                loss::feature_matching(&pred_fake, &pred_real, cfg.lambda_feat)?,
            ));
        }
        if let Some(vgg) = &self.vgg {
            terms.push((
                "VGG",
                loss::perceptual(vgg, &fake, &batch.image, cfg.lambda_vgg)?,
            ));
        }
        if cfg.lambda_l1 > 0.0 {
            terms.push(("L1", (loss::l1(&fake, &batch.image)? * cfg.lambda_l1)?));
        }
        if let Some((mu, logvar)) = &style {
            // Summed over the batch, not averaged: each rank's share counts world-size times
            // in the mean over ranks that the gradient averaging takes.
            let kld = loss::kl_divergence(mu, logvar, cfg.lambda_kld)?;
            terms.push(("KLD", (kld * self.world_size() as f64)?));
        }
        drop(forward);
        let mut grads = {
            let _time = profile::scope("step: G backward");
            backward(&terms)?
        };
        let mut states = vec![&self.generator_state];
        states.extend(self.encoder_state.as_ref());
        self.average_gradients(&mut grads, &states)?;
        let mut named = gradients(&grads, &self.generator_state);
        if let Some(e) = &self.encoder_state {
            named.extend(gradients(&grads, e));
        }
        {
            let _time = profile::scope("step: G Adam");
            self.optimizer_g.step(&grads)?;
        }
        Ok(GeneratorStep {
            losses: scalars(&terms)?,
            fake: fake.detach(),
            judged: (detached(pred_fake), detached(pred_real)),
            style: style.map(|(mu, logvar)| (mu.detach(), logvar.detach())),
            grads: named,
        })
    }

    /// `run_discriminator_one_step`: regenerates the fake with the current G (and E) in train
    /// mode, then updates D.
    pub fn discriminator_step(
        &mut self,
        batch: &Batch,
        eps: Option<&Tensor>,
    ) -> Result<DiscriminatorStep> {
        let (fake, _) = {
            let _time = profile::scope("step: D step's G forward");
            self.generate_fake(batch, eps)?
        };
        self.discriminator_step_on(batch, &fake.detach())
    }

    /// The discriminator step on a given fake image.
    pub fn discriminator_step_on(
        &mut self,
        batch: &Batch,
        fake: &Tensor,
    ) -> Result<DiscriminatorStep> {
        let gan = self.config.gan_mode;
        let forward = profile::scope("step: D forward + losses");
        let (outputs, pred_fake, pred_real) =
            self.discriminate(&batch.semantics, fake, &batch.image)?;
        let terms: Vec<(&'static str, Tensor)> = vec![
            ("D_Fake", gan.loss(&pred_fake, Target::Fake)?),
            ("D_real", gan.loss(&pred_real, Target::Real)?),
        ];
        drop(forward);
        let mut grads = {
            let _time = profile::scope("step: D backward");
            backward(&terms)?
        };
        self.average_gradients(&mut grads, &[&self.discriminator_state])?;
        let named = gradients(&grads, &self.discriminator_state);
        {
            let _time = profile::scope("step: D Adam");
            self.optimizer_d.step(&grads)?;
        }
        Ok(DiscriminatorStep {
            losses: scalars(&terms)?,
            fake: fake.clone(),
            predictions: outputs
                .iter()
                .map(|scale| scale.last().expect("outputs").detach())
                .collect(),
            grads: named,
        })
    }

    /// `update_learning_rate` at the end of `epoch`.
    pub fn update_learning_rate(&mut self, epoch: usize) {
        let (g_lr, d_lr) = self
            .config
            .learning_rates(self.config.lr_after_epoch(epoch));
        self.optimizer_g.set_lr(g_lr);
        self.optimizer_d.set_lr(d_lr);
    }
}

/// Parameters of a network under `<label>.<name>`.
fn prefixed(state: &NetworkState) -> Vec<(String, candle_core::Var)> {
    state
        .parameters()
        .into_iter()
        .map(|(name, var)| (format!("{}.{name}", state.label), var))
        .collect()
}

fn gradients(grads: &GradStore, state: &NetworkState) -> HashMap<String, Tensor> {
    state
        .parameters()
        .into_iter()
        .filter_map(|(name, var)| {
            grads
                .get(var.as_tensor())
                .map(|g| (format!("{}.{name}", state.label), g.clone()))
        })
        .collect()
}

fn detached(outputs: DiscriminatorOutputs) -> DiscriminatorOutputs {
    outputs
        .into_iter()
        .map(|scale| scale.into_iter().map(|t| t.detach()).collect())
        .collect()
}

impl GeneratorStep {
    /// The discriminator's outputs for `fake ++ real` along the batch, per scale and layer,
    /// as one call on both (the reference's order). Built on demand: training never needs it.
    pub fn discriminator_outputs(&self) -> Result<DiscriminatorOutputs> {
        let (fake, real) = &self.judged;
        fake.iter()
            .zip(real)
            .map(|(f, r)| {
                f.iter()
                    .zip(r)
                    .map(|(f, r)| Ok(Tensor::cat(&[f, r], 0)?))
                    .collect()
            })
            .collect()
    }
}

/// Backward of the sum of the loss terms.
fn backward(terms: &[(&'static str, Tensor)]) -> Result<GradStore> {
    let mut total = terms[0].1.clone();
    for (_, t) in &terms[1..] {
        total = (total + t)?;
    }
    Ok(total.backward()?)
}

fn scalars(terms: &[(&'static str, Tensor)]) -> Result<Losses> {
    terms
        .iter()
        .map(|(name, t)| Ok((*name, t.to_dtype(DType::F32)?.to_scalar::<f32>()?)))
        .collect()
}
