//! The building blocks the networks are written in: convolution (with spectral norm folded
//! in at load for inference, or one power iteration per call in training), normalisation,
//! pooling and the resizes with PyTorch's exact sampling.
//!
//! The network modules only call what is here, so a faster implementation of any block
//! (a custom CPU kernel, a fused op) replaces it in this one place. Every block exists in the
//! two modes of a PyTorch module: [`Mode::Eval`] (fixed statistics, fused kernels without
//! gradients) and [`Mode::Train`] (batch statistics, buffers updated as the official modules
//! update them, differentiable with respect to the variables of a `VarMap`).

use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::io::config::NormKind;
use std::sync::Arc;

use crate::ops::all_reduce::{AllReduce, Collective};
use crate::ops::conv::CpuConv2d;
use crate::ops::fused::{channel_moments, normalize, Statistics};
use crate::ops::gemm_bf16::Bf16Isa;
use crate::ops::modulate::PlaneNorm;
use crate::ops::pool::{Pool2d, PoolKind};
use crate::ops::segmap::SegmapConv;
use crate::ops::segmap_train::SegmapTrain;
use crate::ops::spectral::SpectralNormalize;
use crate::ops::trainable_conv::TrainableConv;
use crate::ops::upsample::Upsample2x;

/// Epsilon of PyTorch's BatchNorm2d and InstanceNorm2d.
const NORM_EPS: f64 = 1e-5;
/// Epsilon of `torch.nn.utils.spectral_norm`.
const SPECTRAL_EPS: f64 = 1e-12;
/// Momentum of PyTorch's batch-norm running statistics.
const BN_MOMENTUM: f64 = 0.1;

/// Which of PyTorch's module modes a network is built for.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `.eval()`: stored statistics, spectral norm folded in once, no gradients.
    Eval,
    /// `.eval()` with the CPU convolutions multiplying in bfloat16 on `isa`, accumulating
    /// in float32 ([`gemm_bf16`](crate::ops::gemm_bf16)); activations, normalisation and
    /// everything else stay float32. What `--dtype bf16` means on the CPU.
    EvalBf16(Bf16Isa),
    /// `.train()`: batch statistics and power iterations that update the buffers on every
    /// call; the parameters must be variables for gradients to reach them. With a group of
    /// data-parallel ranks, batch norm uses the statistics of the whole global batch.
    Train(Option<Arc<dyn Collective>>),
}

impl Mode {
    pub fn is_train(&self) -> bool {
        matches!(self, Mode::Train(_))
    }

    /// The instruction set of bfloat16 products, in [`Mode::EvalBf16`].
    pub fn cpu_bf16(&self) -> Option<Bf16Isa> {
        match self {
            Mode::EvalBf16(isa) => Some(*isa),
            _ => None,
        }
    }
}

/// A 2-D convolution with square kernel, zero padding and optional bias. For inference on
/// the CPU it runs on our kernels ([`CpuConv2d`]); elsewhere through candle's conv2d.
#[derive(Debug, Clone)]
pub enum Conv2d {
    Cpu(CpuConv2d),
    Candle {
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: usize,
    },
    Train(TrainConv2d),
}

/// Shape of a convolution as the official module declares it.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
    /// Wrapped in `spectral_norm`: the weight is stored as `weight_orig`, `weight_u`, `weight_v`.
    pub spectral: bool,
}

impl ConvSpec {
    /// `out x in x k x k`.
    pub fn weight_shape(&self) -> (usize, usize, usize, usize) {
        (
            self.out_channels,
            self.in_channels,
            self.kernel,
            self.kernel,
        )
    }

    /// A stride-1 convolution padded to keep the spatial size, with bias, no spectral norm.
    pub fn same(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: kernel / 2,
            bias: true,
            spectral: false,
        }
    }
}

impl Conv2d {
    pub fn new(spec: ConvSpec, mode: &Mode, vb: VarBuilder) -> Result<Self> {
        if mode.is_train() {
            return Ok(Conv2d::Train(TrainConv2d::new(spec, &vb)?));
        }
        let (weight, bias) = conv_weights(spec, &vb)?;
        Self::from_weights(weight, bias, spec.stride, spec.padding, mode)
    }

    /// A convolution with given (already spectrally normalised) weights, for inference.
    pub fn from_weights(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: usize,
        mode: &Mode,
    ) -> Result<Self> {
        if weight.device().is_cpu() && weight.dtype() == DType::F32 {
            let conv = CpuConv2d::new(&weight, bias.as_ref(), stride, padding)?;
            Ok(Conv2d::Cpu(match mode.cpu_bf16() {
                Some(isa) => conv.with_bf16(isa),
                None => conv,
            }))
        } else {
            Ok(Conv2d::Candle {
                weight,
                bias,
                stride,
                padding,
            })
        }
    }
}

/// The weight (spectral norm folded in) and bias of a convolution.
fn conv_weights(spec: ConvSpec, vb: &VarBuilder) -> Result<(Tensor, Option<Tensor>)> {
    let shape = spec.weight_shape();
    let weight = if spec.spectral {
        spectral_normalized(vb, shape)?
    } else {
        vb.get(shape, "weight")?
    };
    let bias = if spec.bias {
        Some(vb.get(spec.out_channels, "bias")?)
    } else {
        None
    };
    Ok((weight, bias))
}

/// Two convolutions over the same input (SPADE's `mlp_gamma` and `mlp_beta`). For inference
/// they run as one with their output channels stacked: one im2col instead of two.
#[derive(Debug, Clone)]
pub enum StackedConv2d {
    Stacked {
        conv: Conv2d,
        split: usize,
    },
    /// Training keeps the two weights apart (each is a variable of its own) and stacks them
    /// on every call.
    Pair(TrainConv2d, TrainConv2d),
}

impl StackedConv2d {
    pub fn new(
        first: (ConvSpec, VarBuilder),
        second: (ConvSpec, VarBuilder),
        mode: &Mode,
    ) -> Result<Self> {
        let geometry = |s: &ConvSpec| (s.in_channels, s.kernel, s.stride, s.padding, s.bias);
        if geometry(&first.0) != geometry(&second.0) {
            return Err(Error::config(
                "stacked convolutions",
                format!(
                    "both need the same input, kernel, stride, padding and bias, got {:?} and {:?}",
                    first.0, second.0
                ),
            ));
        }
        if mode.is_train() {
            return Ok(StackedConv2d::Pair(
                TrainConv2d::new(first.0, &first.1)?,
                TrainConv2d::new(second.0, &second.1)?,
            ));
        }
        let (w1, b1) = conv_weights(first.0, &first.1)?;
        let (w2, b2) = conv_weights(second.0, &second.1)?;
        let bias = match (b1, b2) {
            (Some(a), Some(b)) => Some(Tensor::cat(&[a, b], 0)?),
            _ => None,
        };
        let weight = Tensor::cat(&[w1, w2], 0)?;
        Ok(StackedConv2d::Stacked {
            conv: Conv2d::from_weights(weight, bias, first.0.stride, first.0.padding, mode)?,
            split: first.0.out_channels,
        })
    }

    /// The two outputs.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let y = self.forward_stacked(x)?;
        let split = match self {
            StackedConv2d::Stacked { split, .. } => *split,
            StackedConv2d::Pair(first, _) => first.weight.dim(0)?,
        };
        let total = y.dim(1)?;
        Ok((y.narrow(1, 0, split)?, y.narrow(1, split, total - split)?))
    }

    /// Both outputs stacked along the channels (first, then second).
    pub fn forward_stacked(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            StackedConv2d::Stacked { conv, .. } => conv.forward(x),
            StackedConv2d::Pair(first, second) => first.stacked_with(second, x),
        }
    }
}

/// SPADE's `mlp_shared`, the convolution over the segmentation map and the ReLU after it:
/// a gather with the ReLU folded in on the CPU ([`SegmapConv`]), an ordinary convolution
/// elsewhere.
#[derive(Debug, Clone)]
pub enum SegConv2d {
    Cpu(SegmapConv),
    Dense(Conv2d),
    /// Training: on the CPU the gather forward and a weight gradient without im2col
    /// ([`SegmapTrain`]); elsewhere convolution and ReLU through candle's autograd.
    Train {
        conv: TrainConv2d,
        classes: usize,
    },
}

impl SegConv2d {
    /// `classes`: how many input channels are one-hot labels (the rest is the edge map).
    pub fn new(spec: ConvSpec, classes: usize, mode: &Mode, vb: VarBuilder) -> Result<Self> {
        if mode.is_train() {
            return Ok(SegConv2d::Train {
                conv: TrainConv2d::new(spec, &vb)?,
                classes,
            });
        }
        let (weight, bias) = conv_weights(spec, &vb)?;
        if weight.device().is_cpu() && weight.dtype() == DType::F32 {
            Ok(SegConv2d::Cpu(SegmapConv::new(
                &weight,
                bias.as_ref(),
                classes,
            )?))
        } else {
            Ok(SegConv2d::Dense(Conv2d::from_weights(
                weight,
                bias,
                spec.stride,
                spec.padding,
                mode,
            )?))
        }
    }
}

impl Module for SegConv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            SegConv2d::Cpu(op) => x.contiguous()?.apply_op1_no_bwd(op),
            SegConv2d::Dense(conv) => conv.forward(x)?.relu(),
            SegConv2d::Train { conv, classes } => match &conv.bias {
                Some(bias) if x.device().is_cpu() && x.dtype() == DType::F32 => {
                    let weight = conv.weight()?;
                    SegmapTrain::new(&weight, bias, *classes)?.apply(x, &weight, bias)
                }
                _ => conv.forward(x)?.relu(),
            },
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Conv2d::Cpu(op) => x.contiguous()?.apply_op1_no_bwd(op),
            Conv2d::Candle {
                weight,
                bias,
                stride,
                padding,
            } => conv2d_with_bias(x, weight, bias.as_ref(), *stride, *padding),
            Conv2d::Train(conv) => conv.forward(x),
        }
    }
}

impl Conv2d {
    /// The convolution with its weight evaluated once (under spectral norm: one power
    /// iteration), to apply to several inputs as one call would to their concatenation.
    /// With `frozen` the parameters get no gradient, the inputs still do.
    pub fn evaluated(&self, frozen: bool) -> candle_core::Result<EvaluatedConv2d<'_>> {
        let Conv2d::Train(conv) = self else {
            return Ok(EvaluatedConv2d::Fixed(self));
        };
        let (mut weight, mut bias) = (conv.weight()?, conv.bias.clone());
        if frozen {
            weight = weight.detach();
            bias = bias.map(|b| b.detach());
        }
        Ok(EvaluatedConv2d::Train { conv, weight, bias })
    }
}

/// A convolution whose weight is fixed for a few calls ([`Conv2d::evaluated`]).
pub enum EvaluatedConv2d<'a> {
    /// Inference weights never change.
    Fixed(&'a Conv2d),
    Train {
        conv: &'a TrainConv2d,
        weight: Tensor,
        bias: Option<Tensor>,
    },
}

impl Module for EvaluatedConv2d<'_> {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            EvaluatedConv2d::Fixed(conv) => conv.forward(x),
            EvaluatedConv2d::Train { conv, weight, bias } => conv.apply(x, weight, bias.as_ref()),
        }
    }
}

fn conv2d_with_bias(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    let y = x.conv2d(weight, padding, stride, 1, 1)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
        None => Ok(y),
    }
}

/// A convolution in training mode. With spectral norm every call runs one power iteration
/// on the detached weight, writes `u`, `v` back into their buffers and divides the weight by
/// `sigma = u . (W v)`, through which the gradient flows (`u`, `v` are constants to it).
#[derive(Debug, Clone)]
pub struct TrainConv2d {
    /// `weight`, or `weight_orig` under spectral norm.
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    power_iteration: Option<(Var, Var)>,
}

impl TrainConv2d {
    fn new(spec: ConvSpec, vb: &VarBuilder) -> Result<Self> {
        let shape = spec.weight_shape();
        let bias = if spec.bias {
            Some(vb.get(spec.out_channels, "bias")?)
        } else {
            None
        };
        let (weight, power_iteration) = if spec.spectral {
            let u = Var::from_tensor(&vb.get(spec.out_channels, "weight_u")?)?;
            let v = Var::from_tensor(
                &vb.get(spec.in_channels * spec.kernel * spec.kernel, "weight_v")?,
            )?;
            (vb.get(shape, "weight_orig")?, Some((u, v)))
        } else {
            (vb.get(shape, "weight")?, None)
        };
        Ok(Self {
            weight,
            bias,
            stride: spec.stride,
            padding: spec.padding,
            power_iteration,
        })
    }

    /// The weight the convolution applies: with spectral norm, after this call's power
    /// iteration.
    fn weight(&self) -> candle_core::Result<Tensor> {
        Ok(match &self.power_iteration {
            None => self.weight.clone(),
            Some((u_buf, v_buf)) => {
                let out_c = self.weight.dim(0)?;
                let fixed = self.weight.detach().reshape((out_c, ()))?;
                let column = |t: &Tensor| t.unsqueeze(1);
                let v = l2_normalize(&fixed.t()?.matmul(&column(&u_buf.as_tensor().detach())?)?)?;
                let u = l2_normalize(&fixed.matmul(&v)?)?;
                let (u, v) = (u.squeeze(1)?, v.squeeze(1)?);
                u_buf.set(&u)?;
                v_buf.set(&v)?;
                if self.weight.device().is_cpu() && self.weight.dtype() == DType::F32 {
                    let op = SpectralNormalize {
                        u: u.to_vec1()?,
                        v: v.to_vec1()?,
                    };
                    return self.weight.contiguous()?.apply_op1(op);
                }
                let w = self.weight.reshape((out_c, ()))?;
                let sigma = (u * w.matmul(&v.unsqueeze(1)?)?.squeeze(1)?)?.sum_all()?;
                self.weight.broadcast_div(&sigma)?
            }
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(x, &self.weight()?, self.bias.as_ref())
    }

    /// This convolution's geometry with the given weight and bias.
    fn apply(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let conv = TrainableConv {
                stride: self.stride,
                padding: self.padding,
            };
            let (x, weight) = (x.contiguous()?, weight.contiguous()?);
            match bias {
                Some(b) => x.apply_op3(&weight, &b.contiguous()?, conv),
                None => x.apply_op2(&weight, conv),
            }
        } else {
            conv2d_with_bias(x, weight, bias, self.stride, self.padding)
        }
    }

    /// `self` and `other` over the same input as one convolution with their output channels
    /// stacked (one im2col forward and backward instead of two); the gradient reaches both
    /// weights through the concatenation. Both have the same geometry and bias presence
    /// ([`StackedConv2d::new`] checks).
    fn stacked_with(&self, other: &Self, x: &Tensor) -> candle_core::Result<Tensor> {
        let weight = Tensor::cat(&[self.weight()?, other.weight()?], 0)?;
        let bias = match (&self.bias, &other.bias) {
            (Some(a), Some(b)) => Some(Tensor::cat(&[a, b], 0)?),
            _ => None,
        };
        self.apply(x, &weight, bias.as_ref())
    }
}

/// `x / max(||x||, 1e-12)`, PyTorch's `F.normalize` of a vector.
fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_all()?.sqrt()?.maximum(SPECTRAL_EPS)?;
    x.broadcast_div(&norm)
}

/// The weight PyTorch's spectral norm uses in eval mode: `weight_orig / σ` with
/// `σ = u · (W v)` from the stored vectors (no power iteration).
fn spectral_normalized(vb: &VarBuilder, shape: (usize, usize, usize, usize)) -> Result<Tensor> {
    let (out_c, in_c, kh, kw) = shape;
    // sigma in float32 whatever the model's precision, from the float32 checkpoint values.
    let f32 = vb.clone().set_dtype(DType::F32);
    let orig = f32.get(shape, "weight_orig")?;
    let u = f32.get(out_c, "weight_u")?;
    let v = f32.get(in_c * kh * kw, "weight_v")?;
    let w = orig.reshape((out_c, in_c * kh * kw))?;
    let wv = w.matmul(&v.unsqueeze(1)?)?.squeeze(1)?;
    let sigma = (u * wv)?.sum_all()?.to_scalar::<f32>()?;
    Ok((orig / f64::from(sigma).max(SPECTRAL_EPS))?.to_dtype(vb.dtype())?)
}

/// A fully connected layer with bias (`nn.Linear`) whose output rows never depend on the
/// other rows of the batch: matrix kernels pick different code paths (and summation orders)
/// for different row counts, and a served image must not change with its batch mates.
#[derive(Debug, Clone)]
pub struct Linear(candle_nn::Linear);

impl Linear {
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self(candle_nn::linear(in_dim, out_dim, vb)?))
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let rows = (0..x.dim(0)?)
            .map(|i| self.0.forward(&x.narrow(0, i, 1)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&rows, 0)
    }
}

/// Normalisation without learned parameters in the official sense of SPADE: instance
/// statistics, or batch norm with an optional affine part (`BatchNorm2d(affine=True)` in the
/// encoder). Eval-mode batch norm is folded into a per-channel scale and shift.
#[derive(Debug, Clone)]
pub enum Norm {
    Instance,
    Batch { scale: Tensor, shift: Tensor },
    BatchTrain(BatchStatistics),
}

/// Train-mode batch norm: normalises with the batch mean and biased variance, and moves the
/// running statistics towards them (momentum 0.1, unbiased variance) on every call. With a
/// data-parallel group the statistics are those of the global batch, from all-reduced sums
/// (the reference's `SynchronizedBatchNorm2d`).
#[derive(Debug, Clone)]
pub struct BatchStatistics {
    sync: Option<AllReduce>,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
    affine: Option<(Tensor, Tensor)>,
}

impl Norm {
    /// Loads `running_mean`/`running_var` (and `weight`/`bias` when `affine`) for batch norm.
    pub fn new(
        kind: NormKind,
        channels: usize,
        affine: bool,
        mode: &Mode,
        vb: VarBuilder,
    ) -> Result<Self> {
        match (kind, mode) {
            (NormKind::Instance, _) => Ok(Norm::Instance),
            (NormKind::Batch, Mode::Train(group)) => {
                let var = |name| -> Result<Var> { Ok(Var::from_tensor(&vb.get(channels, name)?)?) };
                let tracked = vb.get_with_hints_dtype(
                    (),
                    "num_batches_tracked",
                    candle_nn::Init::Const(0.),
                    DType::I64,
                )?;
                let affine = if affine {
                    Some((vb.get(channels, "weight")?, vb.get(channels, "bias")?))
                } else {
                    None
                };
                Ok(Norm::BatchTrain(BatchStatistics {
                    sync: group.clone().map(AllReduce),
                    running_mean: var("running_mean")?,
                    running_var: var("running_var")?,
                    num_batches_tracked: Var::from_tensor(&tracked)?,
                    affine,
                }))
            }
            (NormKind::Batch, Mode::Eval | Mode::EvalBf16(_)) => {
                let mean = vb.get(channels, "running_mean")?;
                let var = vb.get(channels, "running_var")?;
                let mut scale = (var + NORM_EPS)?.sqrt()?.recip()?;
                let mut shift = (mean.neg()? * &scale)?;
                if affine {
                    let gamma = vb.get(channels, "weight")?;
                    let beta = vb.get(channels, "bias")?;
                    scale = (scale * &gamma)?;
                    shift = ((shift * gamma)? + beta)?;
                }
                let per_channel = |t: Tensor| t.reshape((1, channels, 1, 1));
                Ok(Norm::Batch {
                    scale: per_channel(scale)?,
                    shift: per_channel(shift)?,
                })
            }
        }
    }

    /// The same normalisation for the fused CPU modulation kernel (inference only).
    pub fn plane_norm(&self) -> candle_core::Result<PlaneNorm> {
        Ok(match self {
            Norm::Instance => PlaneNorm::Instance,
            Norm::Batch { scale, shift } => PlaneNorm::Batch {
                scale: Arc::new(scale.flatten_all()?.to_vec1()?),
                shift: Arc::new(shift.flatten_all()?.to_vec1()?),
            },
            Norm::BatchTrain(_) => {
                candle_core::bail!("the fused modulation kernel has no train-mode batch norm")
            }
        })
    }
}

impl Norm {
    /// The forward; with `frozen` the affine parameters of train-mode batch norm get no
    /// gradient (statistics still update, as in any train-mode call).
    pub fn forward_with(&self, x: &Tensor, frozen: bool) -> candle_core::Result<Tensor> {
        match self {
            Norm::Instance => instance_norm(x),
            Norm::Batch { scale, shift } => x.broadcast_mul(scale)?.broadcast_add(shift),
            Norm::BatchTrain(stats) => stats.forward(x, frozen),
        }
    }
}

impl Module for Norm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(x, false)
    }
}

impl BatchStatistics {
    fn forward(&self, x: &Tensor, frozen: bool) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let count = n * h * w;
        if count < 2 {
            candle_core::bail!(
                "train-mode batch norm needs more than one value per channel, got {n}x{c}x{h}x{w}"
            );
        }
        let fused = self.sync.is_none() && x.device().is_cpu() && x.dtype() == DType::F32;
        let (y, mean, var, count) = if fused {
            let (mean, var) = channel_moments(x)?;
            (normalize(x, Statistics::Batch, NORM_EPS)?, mean, var, count)
        } else {
            let (mean, var, count) = match &self.sync {
                None => {
                    let mean = x.mean_keepdim((0, 2, 3))?;
                    let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim((0, 2, 3))?;
                    (mean, var, count)
                }
                Some(all_reduce) => {
                    let sums = Tensor::cat(
                        &[x.sum_keepdim((0, 2, 3))?, x.sqr()?.sum_keepdim((0, 2, 3))?],
                        0,
                    )?;
                    let total = count * all_reduce.0.world_size();
                    let sums = (all_reduce.apply(&sums).map_err(candle_core::Error::wrap)?
                        / total as f64)?;
                    let mean = sums.narrow(0, 0, 1)?;
                    let var = (sums.narrow(0, 1, 1)? - mean.sqr()?)?;
                    (mean, var, total)
                }
            };
            let y = x
                .broadcast_sub(&mean)?
                .broadcast_div(&(&var + NORM_EPS)?.sqrt()?)?;
            (y, mean, var, count)
        };
        let mut y = y;
        if let Some((gamma, beta)) = &self.affine {
            let per_channel = |t: &Tensor| {
                let t = t.reshape((1, c, 1, 1))?;
                Ok::<_, candle_core::Error>(if frozen { t.detach() } else { t })
            };
            y = y
                .broadcast_mul(&per_channel(gamma)?)?
                .broadcast_add(&per_channel(beta)?)?;
        }
        let unbiased = (var.detach().flatten_all()? * (count as f64 / (count - 1) as f64))?;
        let update = |running: &Var, batch: Tensor| -> candle_core::Result<()> {
            let moved =
                ((running.as_tensor().detach() * (1.0 - BN_MOMENTUM))? + (batch * BN_MOMENTUM)?)?;
            running.set(&moved)
        };
        update(&self.running_mean, mean.detach().flatten_all()?)?;
        update(&self.running_var, unbiased)?;
        let tracked = self.num_batches_tracked.as_tensor().to_scalar::<i64>()?;
        self.num_batches_tracked
            .set(&Tensor::new(tracked + 1, x.device())?)?;
        Ok(y)
    }
}

/// Per-sample, per-channel normalisation with the biased variance.
fn instance_norm(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h * w == 1 {
        candle_core::bail!(
            "instance norm needs more than one spatial element per channel, got {n}x{c}x{h}x{w}"
        );
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return normalize(x, Statistics::Instance, NORM_EPS);
    }
    if x.dtype() != DType::F32 && x.dtype() != DType::F64 {
        // Half-precision sums over a plane overflow or lose the mean: normalise in float32.
        return instance_norm(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype());
    }
    let flat = x.reshape((n, c, h * w))?;
    let mean = flat.mean_keepdim(D::Minus1)?;
    let centered = flat.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    centered
        .broadcast_div(&(var + NORM_EPS)?.sqrt()?)?
        .reshape((n, c, h, w))
}

/// `F.leaky_relu(x, 0.2)`, the activation used throughout SPADE.
pub fn leaky_relu(x: &Tensor) -> candle_core::Result<Tensor> {
    crate::ops::fused::leaky_relu(x)
}

/// `F.interpolate(x, size=(h, w), mode='nearest')` with PyTorch's source-pixel choice.
pub fn resize_nearest(x: &Tensor, height: usize, width: usize) -> candle_core::Result<Tensor> {
    let (_, _, in_h, in_w) = x.dims4()?;
    if (in_h, in_w) == (height, width) {
        return Ok(x.clone());
    }
    let rows = nearest_indices(in_h, height, x.device())?;
    let cols = nearest_indices(in_w, width, x.device())?;
    x.index_select(&rows, 2)?.index_select(&cols, 3)
}

/// PyTorch's `nearest_idx`: the source index is `floor(dst * (in / out))` with the scale and
/// the product in float32, clamped to the input.
pub fn nearest_source_index(dst: usize, input: usize, output: usize) -> usize {
    if input == output {
        dst
    } else if output == 2 * input {
        dst >> 1
    } else {
        let scale = input as f32 / output as f32;
        ((dst as f32 * scale).floor() as usize).min(input - 1)
    }
}

fn nearest_indices(input: usize, output: usize, device: &Device) -> candle_core::Result<Tensor> {
    let idx: Vec<u32> = (0..output)
        .map(|d| nearest_source_index(d, input, output) as u32)
        .collect();
    Tensor::from_vec(idx, output, device)
}

/// `F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)`, the discriminator's
/// downsampling between scales: [`Pool2d`] on the CPU, elsewhere built from slices and sums
/// so that it has a gradient (candle's pooling has no backward when the kernel differs from
/// the stride).
pub fn avg_pool3x3_s2(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let pool = Pool2d {
            kind: PoolKind::Average,
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        return x.contiguous()?.apply_op1(pool);
    }
    let (_, _, h, w) = x.dims4()?;
    let sums = window_sum_3_stride_2(&window_sum_3_stride_2(x, 2)?, 3)?;
    let rows = Tensor::from_vec(window_counts(h), (h.div_ceil(2), 1), x.device())?;
    let cols = Tensor::from_vec(window_counts(w), (1, w.div_ceil(2)), x.device())?;
    sums.broadcast_div(&rows.broadcast_mul(&cols)?.to_dtype(x.dtype())?)
}

/// Along `dim`: sums of the windows `[2i - 1, 2i + 1]` (zero outside the input).
fn window_sum_3_stride_2(x: &Tensor, dim: usize) -> candle_core::Result<Tensor> {
    let len = x.dim(dim)?;
    let out = len.div_ceil(2);
    // One zero in front and enough behind to split the axis into out + 1 pairs; window i is
    // then pair i plus the first element of pair i + 1.
    let padded = x.pad_with_zeros(dim, 1, 2 * out + 1 - len)?;
    let mut shape = padded.dims().to_vec();
    shape[dim] = out + 1;
    shape.insert(dim + 1, 2);
    let pairs = padded.reshape(shape)?;
    let whole_pairs = pairs.narrow(dim, 0, out)?.sum(dim + 1)?;
    let next_first = pairs
        .narrow(dim, 1, out)?
        .narrow(dim + 1, 0, 1)?
        .squeeze(dim + 1)?;
    whole_pairs + next_first
}

/// How many of the three window elements fall inside an axis of `len`.
fn window_counts(len: usize) -> Vec<f32> {
    (0..len.div_ceil(2))
        .map(|i| {
            let last = (2 * i + 1).min(len - 1);
            let first = (2 * i).saturating_sub(1);
            (last - first + 1) as f32
        })
        .collect()
}

/// `nn.Upsample(scale_factor=2)`: every pixel becomes a 2x2 block ([`Upsample2x`] on the
/// CPU).
pub fn upsample2x(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(Upsample2x);
    }
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h, 1, w, 1))?
        .broadcast_as((n, c, h, 2, w, 2))?
        .reshape((n, c, 2 * h, 2 * w))
}

/// `F.interpolate(x, size=(h, w), mode='bilinear', align_corners=False)`, as two matrix
/// products with the interpolation weights PyTorch computes (float32 source coordinates).
pub fn resize_bilinear(x: &Tensor, height: usize, width: usize) -> candle_core::Result<Tensor> {
    let (n, c, in_h, in_w) = x.dims4()?;
    if (in_h, in_w) == (height, width) {
        return Ok(x.clone());
    }
    let dev = x.device();
    let rows = bilinear_matrix(in_h, height, dev)?.to_dtype(x.dtype())?; // height x in_h
    let cols = bilinear_matrix(in_w, width, dev)?
        .t()?
        .to_dtype(x.dtype())?; // in_w x width
    let x = x.reshape((n * c, in_h, in_w))?;
    let y = rows
        .broadcast_left(n * c)?
        .matmul(&x)?
        .matmul(&cols.broadcast_left(n * c)?)?;
    y.reshape((n, c, height, width))
}

fn bilinear_matrix(input: usize, output: usize, device: &Device) -> candle_core::Result<Tensor> {
    let scale = input as f32 / output as f32;
    let mut m = vec![0f32; output * input];
    for dst in 0..output {
        let src = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src as usize).min(input - 1);
        let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
        let l1 = src - i0 as f32;
        m[dst * input + i0] += 1.0 - l1;
        m[dst * input + i1] += l1;
    }
    Tensor::from_vec(m, (output, input), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_index_uses_float32_like_pytorch() {
        // The case called out in the issue: 26 -> 22 at dst 11. In float32
        // 11 * (26f / 22f) = 12.999999, so PyTorch picks 12; exact arithmetic gives 13.
        assert_eq!(nearest_source_index(11, 26, 22), 12);
        assert_eq!(nearest_source_index(5, 8, 16), 2);
        assert_eq!(nearest_source_index(7, 64, 8), 56);
    }

    #[test]
    fn upsample_duplicates_pixels() {
        let x = Tensor::arange(0f32, 4., &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 2, 2))
            .unwrap();
        let y = upsample2x(&x).unwrap().flatten_all().unwrap();
        let expected = [
            0., 0., 1., 1., 0., 0., 1., 1., 2., 2., 3., 3., 2., 2., 3., 3.,
        ];
        assert_eq!(y.to_vec1::<f32>().unwrap(), expected);
    }

    #[test]
    fn avg_pool_matches_the_definition() {
        let (h, w) = (5, 4);
        let values: Vec<f32> = (0..h * w).map(|i| (i * i % 7) as f32).collect();
        let x = Tensor::from_vec(values.clone(), (1, 1, h, w), &Device::Cpu).unwrap();
        let y = avg_pool3x3_s2(&x).unwrap();
        assert_eq!(y.dims(), [1, 1, 3, 2]);
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (oi, row) in y.chunks(2).enumerate() {
            for (oj, &got) in row.iter().enumerate() {
                let mut window = vec![];
                for i in (2 * oi as isize - 1)..=(2 * oi as isize + 1) {
                    for j in (2 * oj as isize - 1)..=(2 * oj as isize + 1) {
                        if (0..h as isize).contains(&i) && (0..w as isize).contains(&j) {
                            window.push(values[i as usize * w + j as usize]);
                        }
                    }
                }
                let mean = window.iter().sum::<f32>() / window.len() as f32;
                assert!((got - mean).abs() < 1e-6, "({oi}, {oj}): {got} vs {mean}");
            }
        }
    }

    #[test]
    fn instance_norm_rejects_single_pixel() {
        let x = Tensor::zeros((1, 2, 1, 1), DType::F32, &Device::Cpu).unwrap();
        assert!(Norm::Instance.forward(&x).is_err());
    }
}
