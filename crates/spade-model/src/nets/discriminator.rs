//! The multiscale PatchGAN discriminator (`MultiscaleDiscriminator` of
//! `NLayerDiscriminator`s): judges `semantics ++ image` at `num_D` scales and returns every
//! layer's output, which the feature-matching loss compares between fake and real.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::io::config::ConvNorm;
use crate::nets::layers::{avg_pool3x3_s2, leaky_relu, Conv2d, ConvSpec, Mode, Norm};

/// Kernel size and padding of every discriminator convolution.
const KERNEL: usize = 4;
const PADDING: usize = 2;
/// Widths stop doubling here.
const MAX_WIDTH: usize = 512;

/// The discriminator options of the official `opt.txt`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscriminatorConfig {
    /// Channels of the input: `semantic_nc + 3`.
    pub input_nc: usize,
    pub ndf: usize,
    pub n_layers_d: usize,
    pub num_d: usize,
    pub norm_d: ConvNorm,
}

/// One conv group (`model<i>` in the state dict), with its norm and whether a leaky ReLU follows.
#[derive(Debug, Clone)]
struct Group {
    conv: Conv2d,
    norm: Option<Norm>,
    activation: bool,
}

/// One `NLayerDiscriminator`.
#[derive(Debug, Clone)]
pub struct PatchDiscriminator {
    groups: Vec<Group>,
}

impl PatchDiscriminator {
    pub fn new(cfg: &DiscriminatorConfig, mode: &Mode, vb: VarBuilder) -> Result<Self> {
        let mut groups = Vec::with_capacity(cfg.n_layers_d + 1);
        let plain = |cin, cout, stride| ConvSpec {
            in_channels: cin,
            out_channels: cout,
            kernel: KERNEL,
            stride,
            padding: PADDING,
            bias: true,
            spectral: false,
        };
        groups.push(Group {
            conv: Conv2d::new(plain(cfg.input_nc, cfg.ndf, 2), mode, vb.pp("model0.0"))?,
            norm: None,
            activation: true,
        });
        let mut nf = cfg.ndf;
        for n in 1..cfg.n_layers_d {
            let nf_prev = nf;
            nf = (nf * 2).min(MAX_WIDTH);
            let stride = if n == cfg.n_layers_d - 1 { 1 } else { 2 };
            let vb = vb.pp(format!("model{n}.0"));
            // With a norm the conv sits in an inner nn.Sequential and loses its bias.
            let (conv_vb, norm) = match cfg.norm_d.norm {
                Some(kind) => (
                    vb.pp("0"),
                    Some(Norm::new(kind, nf, true, mode, vb.pp("1"))?),
                ),
                None => (vb, None),
            };
            let spec = ConvSpec {
                bias: norm.is_none(),
                spectral: cfg.norm_d.spectral,
                ..plain(nf_prev, nf, stride)
            };
            groups.push(Group {
                conv: Conv2d::new(spec, mode, conv_vb)?,
                norm,
                activation: true,
            });
        }
        let last = format!("model{}.0", cfg.n_layers_d);
        groups.push(Group {
            conv: Conv2d::new(plain(nf, 1, 1), mode, vb.pp(last))?,
            norm: None,
            activation: false,
        });
        Ok(Self { groups })
    }

    /// Every group's output, the last being the patch predictions.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut outputs = self.forward_each(vec![x.clone()], false)?;
        Ok(outputs.remove(0))
    }

    /// Every group's output for each input, the inputs sharing one evaluation of every
    /// weight (one spectral-norm power iteration, as a single call on their concatenation
    /// would run); with `frozen` no gradient reaches the parameters.
    fn forward_each(&self, mut xs: Vec<Tensor>, frozen: bool) -> Result<Vec<Vec<Tensor>>> {
        let mut outputs = vec![Vec::with_capacity(self.groups.len()); xs.len()];
        for group in &self.groups {
            let conv = group.conv.evaluated(frozen)?;
            for (x, outputs) in xs.iter_mut().zip(&mut outputs) {
                let mut y = conv.forward(x)?;
                if let Some(norm) = &group.norm {
                    y = norm.forward_with(&y, frozen)?;
                }
                if group.activation {
                    y = leaky_relu(&y)?;
                }
                outputs.push(y.clone());
                *x = y;
            }
        }
        Ok(outputs)
    }

    /// Whether a norm computes statistics over the batch (then inputs judged apart would
    /// see other statistics than judged together).
    fn normalizes_over_the_batch(&self) -> bool {
        self.groups
            .iter()
            .any(|g| matches!(g.norm, Some(Norm::Batch { .. } | Norm::BatchTrain(_))))
    }
}

#[derive(Debug, Clone)]
pub struct MultiscaleDiscriminator {
    scales: Vec<PatchDiscriminator>,
}

impl MultiscaleDiscriminator {
    pub fn new(cfg: &DiscriminatorConfig, mode: &Mode, vb: VarBuilder) -> Result<Self> {
        if cfg.num_d == 0 || cfg.n_layers_d == 0 || cfg.ndf == 0 {
            return Err(Error::config(
                "num_D / n_layers_D / ndf",
                format!(
                    "must all be at least 1, got {} / {} / {}",
                    cfg.num_d, cfg.n_layers_d, cfg.ndf
                ),
            ));
        }
        let scales = (0..cfg.num_d)
            .map(|i| PatchDiscriminator::new(cfg, mode, vb.pp(format!("discriminator_{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self { scales })
    }

    /// Per scale (full size first), every layer's output.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Vec<Tensor>>> {
        let mut x = x.clone();
        let mut outputs = Vec::with_capacity(self.scales.len());
        for (i, scale) in self.scales.iter().enumerate() {
            if i > 0 {
                x = avg_pool3x3_s2(&x)?;
            }
            outputs.push(scale.forward(&x)?);
        }
        Ok(outputs)
    }

    /// The generator step's judgement of `fake` and `real` (each `semantics ++ image`):
    /// the outputs of each, per scale and layer, as [`forward`](Self::forward) on their
    /// concatenation gives them, with the parameters frozen. The generator step discards
    /// their gradients (the reference computes them anyway). With per-sample norms the real
    /// half is judged apart, so that nothing is differentiated through it either.
    pub fn judge_frozen(&self, fake: &Tensor, real: &Tensor) -> Result<(Outputs, Outputs)> {
        let joint = self.scales.iter().any(|s| s.normalizes_over_the_batch());
        let n = fake.dim(0)?;
        let mut xs = if joint {
            vec![Tensor::cat(&[fake, real], 0)?]
        } else {
            vec![fake.clone(), real.detach()]
        };
        let (mut fake_outputs, mut real_outputs) = (Vec::new(), Vec::new());
        for (i, scale) in self.scales.iter().enumerate() {
            if i > 0 {
                xs = xs
                    .iter()
                    .map(avg_pool3x3_s2)
                    .collect::<candle_core::Result<_>>()?;
            }
            let mut outputs = scale.forward_each(xs.clone(), true)?;
            if joint {
                let half = |start| -> Result<Vec<Tensor>> {
                    outputs[0]
                        .iter()
                        .map(|t| Ok(t.narrow(0, start, n)?))
                        .collect()
                };
                fake_outputs.push(half(0)?);
                real_outputs.push(half(n)?);
            } else {
                real_outputs.push(outputs.pop().expect("two inputs"));
                fake_outputs.push(outputs.pop().expect("two inputs"));
            }
        }
        Ok((fake_outputs, real_outputs))
    }
}

/// Per scale, every layer's output.
pub type Outputs = Vec<Vec<Tensor>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{max_abs_diff, seeded_randn};
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    /// Judged apart (per-sample norms) or together (batch norm), the generator step sees the
    /// outputs and the gradient with respect to the fake that the whole discriminator on
    /// `fake ++ real` gives, and no parameter gets a gradient.
    #[test]
    fn the_frozen_judgement_matches_the_joint_one_without_parameter_gradients() {
        for norm in ["spectralinstance", "spectralbatch"] {
            let cfg = DiscriminatorConfig {
                input_nc: 5,
                ndf: 8,
                n_layers_d: 3,
                num_d: 2,
                norm_d: norm.parse().unwrap(),
            };
            // Two discriminators with the same parameters and buffers (the power iteration and
            // batch statistics advance on every call), one per way of judging.
            let build = || {
                let vars = VarMap::new();
                let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
                let d = MultiscaleDiscriminator::new(&cfg, &Mode::Train(None), vb).unwrap();
                (vars, d)
            };
            let (joint_vars, joint) = build();
            let (frozen_vars, frozen) = build();
            let frozen_data = frozen_vars.data().lock().unwrap();
            for (i, (name, var)) in joint_vars.data().lock().unwrap().iter().enumerate() {
                if var.dtype() == DType::F32 {
                    let value = (seeded_randn(100 + i as u64, var.dims()) * 0.3).unwrap();
                    var.set(&value).unwrap();
                }
                frozen_data[name].set(var.as_tensor()).unwrap();
            }
            drop(frozen_data);
            let fake = Var::from_tensor(&seeded_randn(1, &[2, 5, 20, 18])).unwrap();
            let real = seeded_randn(2, &[2, 5, 20, 18]);
            let probe = |outputs: &[Vec<Tensor>], scale: usize| {
                seeded_randn(10 + scale as u64, outputs[scale].last().unwrap().dims())
            };

            let all = joint
                .forward(&Tensor::cat(&[fake.as_tensor(), &real], 0).unwrap())
                .unwrap();
            let (f, r) = frozen.judge_frozen(fake.as_tensor(), &real).unwrap();
            let mut joint_loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
            let mut frozen_loss = joint_loss.clone();
            for s in 0..2 {
                for l in 0..all[s].len() {
                    let both = Tensor::cat(&[&f[s][l], &r[s][l]], 0).unwrap();
                    let diff = max_abs_diff(&both, &all[s][l]);
                    assert!(diff < 1e-5, "{norm}: scale {s} layer {l} differs by {diff}");
                }
                let p = probe(&f, s);
                let fake_half = all[s].last().unwrap().narrow(0, 0, 2).unwrap();
                joint_loss = (joint_loss + (fake_half * &p).unwrap().sum_all().unwrap()).unwrap();
                let ours = (f[s].last().unwrap() * &p).unwrap().sum_all().unwrap();
                frozen_loss = (frozen_loss + ours).unwrap();
            }
            let joint_grads = joint_loss.backward().unwrap();
            let frozen_grads = frozen_loss.backward().unwrap();
            let diff = max_abs_diff(
                frozen_grads.get(fake.as_tensor()).unwrap(),
                joint_grads.get(fake.as_tensor()).unwrap(),
            );
            assert!(diff < 1e-5, "{norm}: the fake's gradient differs by {diff}");
            for (name, var) in frozen_vars.data().lock().unwrap().iter() {
                assert!(
                    frozen_grads.get(var.as_tensor()).is_none(),
                    "{norm}: {name} got a gradient"
                );
            }
            // The joint judgement (as the discriminator step runs it) does differentiate them.
            for (name, var) in joint_vars.data().lock().unwrap().iter() {
                if name.ends_with("weight_orig") {
                    assert!(joint_grads.get(var.as_tensor()).is_some(), "{norm}: {name}");
                }
            }
        }
    }
}
