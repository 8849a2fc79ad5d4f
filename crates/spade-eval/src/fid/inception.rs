//! pytorch-fid's FID Inception-v3 in eval mode: torchvision's Inception3 whose Mixed blocks
//! pool differently (average pools that exclude the padding, a max pool in `Mixed_7c`), with
//! tensor names identical to `fid_inception_v3().state_dict()`.
//!
//! Every `BasicConv2d` is conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU;
//! the BatchNorm is folded into the convolution's weights and bias, in float64.

use anyhow::Result;
use candle_core::{Device, Tensor, D};
use spade_model::ops::conv::CpuConv2d;
use spade_model::ops::pool::{Pool2d, PoolKind};

use super::resize::SIDE;
use super::weights::Weights;

/// Which features pytorch-fid's `--dims` selects: the spatial mean of the output of block
/// 0 (64), 1 (192) or 2 (768), or the pool3 features after block 3 (2048).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dims {
    D64,
    D192,
    D768,
    D2048,
}

impl Dims {
    pub fn parse(dims: usize) -> Result<Self> {
        Ok(match dims {
            64 => Dims::D64,
            192 => Dims::D192,
            768 => Dims::D768,
            2048 => Dims::D2048,
            other => anyhow::bail!("--dims {other}: pytorch-fid offers 64, 192, 768 or 2048"),
        })
    }

    pub fn size(self) -> usize {
        match self {
            Dims::D64 => 64,
            Dims::D192 => 192,
            Dims::D768 => 768,
            Dims::D2048 => 2048,
        }
    }

    /// The index of the last block the features need.
    fn last_block(self) -> usize {
        self as usize
    }
}

/// Conv + folded BatchNorm + ReLU.
struct BasicConv {
    conv: Conv,
}

enum Conv {
    /// On the CPU: the model crate's convolution (im2col or Winograd, no copy for 1 x 1
    /// kernels) with the ReLU in the same pass.
    Cpu(CpuConv2d),
    /// Elsewhere: explicit padding (the `1 x n` / `n x 1` kernels pad the axes differently),
    /// candle's conv2d, bias, ReLU.
    Candle {
        weight: Tensor,
        bias: Tensor,
        stride: usize,
        pad: (usize, usize),
    },
}

/// A convolution's shape: input and output channels, kernel (height, width), stride,
/// padding (height, width).
#[derive(Clone, Copy)]
struct Spec {
    cin: usize,
    cout: usize,
    kernel: (usize, usize),
    stride: usize,
    pad: (usize, usize),
}

fn spec(cin: usize, cout: usize, kernel: usize) -> Spec {
    Spec {
        cin,
        cout,
        kernel: (kernel, kernel),
        stride: 1,
        pad: (0, 0),
    }
}

impl Spec {
    fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }
    fn pad(self, pad: usize) -> Self {
        Self {
            pad: (pad, pad),
            ..self
        }
    }
    /// A `kh x kw` kernel padded to keep the size.
    fn rect(cin: usize, cout: usize, kh: usize, kw: usize) -> Self {
        Self {
            cin,
            cout,
            kernel: (kh, kw),
            stride: 1,
            pad: (kh / 2, kw / 2),
        }
    }
}

const BN_EPS: f64 = 1e-3;

impl BasicConv {
    fn new(w: &Weights, name: &str, s: Spec, device: &Device) -> Result<Self> {
        let (kh, kw) = s.kernel;
        let weight = w.get(&format!("{name}.conv.weight"), &[s.cout, s.cin, kh, kw])?;
        let bn = |p: &str| w.get(&format!("{name}.bn.{p}"), &[s.cout]);
        let (gamma, beta, mean, var) = (
            bn("weight")?,
            bn("bias")?,
            bn("running_mean")?,
            bn("running_var")?,
        );
        let per_out = s.cin * kh * kw;
        let mut folded = Vec::with_capacity(weight.len());
        let mut bias = Vec::with_capacity(s.cout);
        for o in 0..s.cout {
            let scale = f64::from(gamma[o]) / (f64::from(var[o]) + BN_EPS).sqrt();
            folded.extend(
                weight[o * per_out..(o + 1) * per_out]
                    .iter()
                    .map(|&v| (f64::from(v) * scale) as f32),
            );
            bias.push((f64::from(beta[o]) - f64::from(mean[o]) * scale) as f32);
        }
        let weight = Tensor::from_vec(folded, (s.cout, s.cin, kh, kw), device)?;
        let bias = Tensor::from_vec(bias, s.cout, device)?;
        let conv = if device.is_cpu() {
            Conv::Cpu(
                CpuConv2d::rectangular(&weight, Some(&bias), s.stride, [s.pad.0, s.pad.1])?
                    .with_relu(),
            )
        } else {
            Conv::Candle {
                weight,
                bias: bias.reshape((1, s.cout, 1, 1))?,
                stride: s.stride,
                pad: s.pad,
            }
        };
        Ok(Self { conv })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match &self.conv {
            Conv::Cpu(conv) => x.contiguous()?.apply_op1_no_bwd(conv)?,
            Conv::Candle {
                weight,
                bias,
                stride,
                pad,
            } => x
                .pad_with_zeros(2, pad.0, pad.0)?
                .pad_with_zeros(3, pad.1, pad.1)?
                .conv2d(weight, 0, *stride, 1, 1)?
                .broadcast_add(bias)?
                .relu()?,
        })
    }
}

/// Loads the `BasicConv2d`s of one block, each named `{prefix}.{name}`.
struct Loader<'a> {
    weights: &'a Weights,
    device: &'a Device,
    prefix: &'a str,
}

impl Loader<'_> {
    fn conv(&self, name: &str, s: Spec) -> Result<BasicConv> {
        let full = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        BasicConv::new(self.weights, &full, s, self.device)
    }
}

fn seq(convs: &[BasicConv], x: &Tensor) -> Result<Tensor> {
    convs.iter().try_fold(x.clone(), |x, c| c.forward(&x))
}

/// A 3 x 3 pool: on the CPU in one pass ([`Pool2d`]), elsewhere through candle.
fn pool_3x3(x: &Tensor, kind: PoolKind, stride: usize, padding: usize) -> Result<Tensor> {
    if x.device().is_cpu() {
        let op = Pool2d {
            kind,
            kernel: 3,
            stride,
            padding,
        };
        return Ok(x.contiguous()?.apply_op1_no_bwd(&op)?);
    }
    match (kind, padding) {
        (PoolKind::Max, 0) => Ok(x.max_pool2d_with_stride(3, stride)?),
        (PoolKind::Max, _) => max_pool_3x3_same(x),
        (PoolKind::Average, _) => avg_pool_3x3_exclude_pad(x),
    }
}

fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    pool_3x3(x, PoolKind::Max, 2, 0)
}

/// 3 x 3 average pool, stride 1, padding 1, `count_include_pad=False`: at the border the sum
/// is divided by the number of real pixels in the window.
fn avg_pool_3x3(x: &Tensor) -> Result<Tensor> {
    pool_3x3(x, PoolKind::Average, 1, 1)
}

/// 3 x 3 max pool, stride 1, padding 1 (the padding never wins).
fn max_pool_3x3(x: &Tensor) -> Result<Tensor> {
    pool_3x3(x, PoolKind::Max, 1, 1)
}

/// [`avg_pool_3x3`] in candle's ops.
fn avg_pool_3x3_exclude_pad(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let sums = (x
        .pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .avg_pool2d_with_stride(3, 1)?
        * 9.0)?;
    let count = |i: usize, n: usize| 3 - usize::from(i == 0) - usize::from(i + 1 == n);
    let counts: Vec<f32> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (count(y, h) * count(x, w)) as f32))
        .collect();
    let counts = Tensor::from_vec(counts, (1, 1, h, w), x.device())?.to_dtype(x.dtype())?;
    Ok(sums.broadcast_div(&counts)?)
}

/// [`max_pool_3x3`] in candle's ops. Replicating the border is the same as padding with minus
/// infinity: every window that holds a replicated pixel also holds its original.
fn max_pool_3x3_same(x: &Tensor) -> Result<Tensor> {
    Ok(x.pad_with_same(2, 1, 1)?
        .pad_with_same(3, 1, 1)?
        .max_pool2d_with_stride(3, 1)?)
}

/// FIDInceptionA (Mixed_5b, 5c, 5d).
struct BlockA {
    b1: BasicConv,
    b5: [BasicConv; 2],
    b3dbl: [BasicConv; 3],
    pool: BasicConv,
}

impl BlockA {
    fn new(l: &Loader, cin: usize, pool_features: usize) -> Result<Self> {
        Ok(Self {
            b1: l.conv("branch1x1", spec(cin, 64, 1))?,
            b5: [
                l.conv("branch5x5_1", spec(cin, 48, 1))?,
                l.conv("branch5x5_2", spec(48, 64, 5).pad(2))?,
            ],
            b3dbl: [
                l.conv("branch3x3dbl_1", spec(cin, 64, 1))?,
                l.conv("branch3x3dbl_2", spec(64, 96, 3).pad(1))?,
                l.conv("branch3x3dbl_3", spec(96, 96, 3).pad(1))?,
            ],
            pool: l.conv("branch_pool", spec(cin, pool_features, 1))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let branches = [
            self.b1.forward(x)?,
            seq(&self.b5, x)?,
            seq(&self.b3dbl, x)?,
            self.pool.forward(&avg_pool_3x3(x)?)?,
        ];
        Ok(Tensor::cat(&branches, 1)?)
    }
}

/// torchvision's InceptionB (Mixed_6a).
struct BlockB {
    b3: BasicConv,
    b3dbl: [BasicConv; 3],
}

impl BlockB {
    fn new(l: &Loader, cin: usize) -> Result<Self> {
        Ok(Self {
            b3: l.conv("branch3x3", spec(cin, 384, 3).stride(2))?,
            b3dbl: [
                l.conv("branch3x3dbl_1", spec(cin, 64, 1))?,
                l.conv("branch3x3dbl_2", spec(64, 96, 3).pad(1))?,
                l.conv("branch3x3dbl_3", spec(96, 96, 3).stride(2))?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let branches = [
            self.b3.forward(x)?,
            seq(&self.b3dbl, x)?,
            max_pool_3x3_s2(x)?,
        ];
        Ok(Tensor::cat(&branches, 1)?)
    }
}

/// FIDInceptionC (Mixed_6b .. 6e).
struct BlockC {
    b1: BasicConv,
    b7: [BasicConv; 3],
    b7dbl: [BasicConv; 5],
    pool: BasicConv,
}

impl BlockC {
    fn new(l: &Loader, cin: usize, c7: usize) -> Result<Self> {
        Ok(Self {
            b1: l.conv("branch1x1", spec(cin, 192, 1))?,
            b7: [
                l.conv("branch7x7_1", spec(cin, c7, 1))?,
                l.conv("branch7x7_2", Spec::rect(c7, c7, 1, 7))?,
                l.conv("branch7x7_3", Spec::rect(c7, 192, 7, 1))?,
            ],
            b7dbl: [
                l.conv("branch7x7dbl_1", spec(cin, c7, 1))?,
                l.conv("branch7x7dbl_2", Spec::rect(c7, c7, 7, 1))?,
                l.conv("branch7x7dbl_3", Spec::rect(c7, c7, 1, 7))?,
                l.conv("branch7x7dbl_4", Spec::rect(c7, c7, 7, 1))?,
                l.conv("branch7x7dbl_5", Spec::rect(c7, 192, 1, 7))?,
            ],
            pool: l.conv("branch_pool", spec(cin, 192, 1))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let branches = [
            self.b1.forward(x)?,
            seq(&self.b7, x)?,
            seq(&self.b7dbl, x)?,
            self.pool.forward(&avg_pool_3x3(x)?)?,
        ];
        Ok(Tensor::cat(&branches, 1)?)
    }
}

/// torchvision's InceptionD (Mixed_7a).
struct BlockD {
    b3: [BasicConv; 2],
    b7x3: [BasicConv; 4],
}

impl BlockD {
    fn new(l: &Loader, cin: usize) -> Result<Self> {
        Ok(Self {
            b3: [
                l.conv("branch3x3_1", spec(cin, 192, 1))?,
                l.conv("branch3x3_2", spec(192, 320, 3).stride(2))?,
            ],
            b7x3: [
                l.conv("branch7x7x3_1", spec(cin, 192, 1))?,
                l.conv("branch7x7x3_2", Spec::rect(192, 192, 1, 7))?,
                l.conv("branch7x7x3_3", Spec::rect(192, 192, 7, 1))?,
                l.conv("branch7x7x3_4", spec(192, 192, 3).stride(2))?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let branches = [seq(&self.b3, x)?, seq(&self.b7x3, x)?, max_pool_3x3_s2(x)?];
        Ok(Tensor::cat(&branches, 1)?)
    }
}

/// FIDInceptionE_1 (Mixed_7b, average pool) and FIDInceptionE_2 (Mixed_7c, max pool).
struct BlockE {
    b1: BasicConv,
    b3_1: BasicConv,
    b3_2: [BasicConv; 2],
    b3dbl: [BasicConv; 2],
    b3dbl_3: [BasicConv; 2],
    pool: BasicConv,
    max_pool: bool,
}

impl BlockE {
    fn new(l: &Loader, cin: usize, max_pool: bool) -> Result<Self> {
        Ok(Self {
            b1: l.conv("branch1x1", spec(cin, 320, 1))?,
            b3_1: l.conv("branch3x3_1", spec(cin, 384, 1))?,
            b3_2: [
                l.conv("branch3x3_2a", Spec::rect(384, 384, 1, 3))?,
                l.conv("branch3x3_2b", Spec::rect(384, 384, 3, 1))?,
            ],
            b3dbl: [
                l.conv("branch3x3dbl_1", spec(cin, 448, 1))?,
                l.conv("branch3x3dbl_2", spec(448, 384, 3).pad(1))?,
            ],
            b3dbl_3: [
                l.conv("branch3x3dbl_3a", Spec::rect(384, 384, 1, 3))?,
                l.conv("branch3x3dbl_3b", Spec::rect(384, 384, 3, 1))?,
            ],
            pool: l.conv("branch_pool", spec(cin, 192, 1))?,
            max_pool,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = self.b3_1.forward(x)?;
        let b3dbl = seq(&self.b3dbl, x)?;
        let pooled = if self.max_pool {
            max_pool_3x3(x)?
        } else {
            avg_pool_3x3(x)?
        };
        let branches = [
            self.b1.forward(x)?,
            self.b3_2[0].forward(&b3)?,
            self.b3_2[1].forward(&b3)?,
            self.b3dbl_3[0].forward(&b3dbl)?,
            self.b3dbl_3[1].forward(&b3dbl)?,
            self.pool.forward(&pooled)?,
        ];
        Ok(Tensor::cat(&branches, 1)?)
    }
}

/// The four blocks pytorch-fid cuts the network into.
enum Block {
    Stem0([BasicConv; 3]),
    Stem1([BasicConv; 2]),
    Mixed6(Box<([BlockA; 3], BlockB, [BlockC; 4])>),
    Mixed7(Box<(BlockD, [BlockE; 2])>),
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Block::Stem0(convs) => max_pool_3x3_s2(&seq(convs, x)?),
            Block::Stem1(convs) => max_pool_3x3_s2(&seq(convs, x)?),
            Block::Mixed6(blocks) => {
                let (a, b, c) = blocks.as_ref();
                let x = a.iter().try_fold(x.clone(), |x, m| m.forward(&x))?;
                let x = b.forward(&x)?;
                c.iter().try_fold(x, |x, m| m.forward(&x))
            }
            Block::Mixed7(blocks) => {
                let (d, e) = blocks.as_ref();
                let x = d.forward(x)?;
                let x = e.iter().try_fold(x, |x, m| m.forward(&x))?;
                // pool3: the adaptive average pool to 1 x 1 ends the block.
                Ok(x.mean_keepdim(3)?.mean_keepdim(2)?)
            }
        }
    }
}

/// The network up to the block `dims` needs.
pub struct FidInception {
    blocks: Vec<Block>,
    dims: Dims,
    device: Device,
}

impl FidInception {
    pub fn new(weights: &Weights, dims: Dims, device: &Device) -> Result<Self> {
        let at = |prefix| Loader {
            weights,
            device,
            prefix,
        };
        let root = at("");
        let mut blocks = vec![Block::Stem0([
            root.conv("Conv2d_1a_3x3", spec(3, 32, 3).stride(2))?,
            root.conv("Conv2d_2a_3x3", spec(32, 32, 3))?,
            root.conv("Conv2d_2b_3x3", spec(32, 64, 3).pad(1))?,
        ])];
        if dims.last_block() >= 1 {
            blocks.push(Block::Stem1([
                root.conv("Conv2d_3b_1x1", spec(64, 80, 1))?,
                root.conv("Conv2d_4a_3x3", spec(80, 192, 3))?,
            ]));
        }
        if dims.last_block() >= 2 {
            blocks.push(Block::Mixed6(Box::new((
                [
                    BlockA::new(&at("Mixed_5b"), 192, 32)?,
                    BlockA::new(&at("Mixed_5c"), 256, 64)?,
                    BlockA::new(&at("Mixed_5d"), 288, 64)?,
                ],
                BlockB::new(&at("Mixed_6a"), 288)?,
                [
                    BlockC::new(&at("Mixed_6b"), 768, 128)?,
                    BlockC::new(&at("Mixed_6c"), 768, 160)?,
                    BlockC::new(&at("Mixed_6d"), 768, 160)?,
                    BlockC::new(&at("Mixed_6e"), 768, 192)?,
                ],
            ))));
        }
        if dims.last_block() >= 3 {
            blocks.push(Block::Mixed7(Box::new((
                BlockD::new(&at("Mixed_7a"), 768)?,
                [
                    BlockE::new(&at("Mixed_7b"), 1280, false)?,
                    BlockE::new(&at("Mixed_7c"), 2048, true)?,
                ],
            ))));
        }
        Ok(Self {
            blocks,
            dims,
            device: device.clone(),
        })
    }

    pub fn dims(&self) -> Dims {
        self.dims
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The output of every block for a batch of network inputs (`N x 3 x 299 x 299` in
    /// `[-1, 1]`, from [`super::resize::network_input`]).
    pub fn blocks(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        let (_, c, h, w) = input.dims4()?;
        anyhow::ensure!(
            (c, h, w) == (3, SIDE, SIDE),
            "FID Inception input must be N x 3 x {SIDE} x {SIDE}, got {:?}",
            input.dims()
        );
        let mut outputs = Vec::with_capacity(self.blocks.len());
        let mut x = input.clone();
        for block in &self.blocks {
            x = block.forward(&x)?;
            outputs.push(x.clone());
        }
        Ok(outputs)
    }

    /// The `N x dims` features: the spatial mean of the last block's output.
    pub fn features(&self, input: &Tensor) -> Result<Tensor> {
        let last = self.blocks(input)?.pop().expect("at least block 0");
        Ok(last.flatten_from(2)?.mean(D::Minus1)?)
    }
}
