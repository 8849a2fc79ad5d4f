//! A dense convolution as a candle custom op: im2col + one GEMM per tile of output rows,
//! written straight into the NCHW output, or for 3 x 3 kernels on larger maps Winograd
//! F(4x4, 3x3). candle's built-in CPU conv2d re-packs its weights on every call and copies
//! single-threaded; this runs at the speed of the GEMM. Every image of a batch is computed
//! alone with the same tiling, so an image's result never depends on its batch mates.
//! With [`CpuConv2d::with_bf16`] the GEMM multiplies in bfloat16 ([`gemm_bf16`]) and
//! Winograd is not used: its transforms amplify the rounding error of the products.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::gemm_bf16::{Bf16Isa, PackedLhs};
use super::im2col::{convolve_image, ConvShape, Weights};
use super::layout::nchw;
use super::winograd::Winograd;

/// A dense convolution: Winograd F(4x4, 3x3) where it applies and pays, else im2col + GEMM.
#[derive(Debug, Clone)]
pub struct CpuConv2d {
    pub(crate) shape: ConvShape,
    weights: ConvWeights,
    pub(crate) bias: Option<Arc<Vec<f32>>>,
    /// A ReLU applied to each image's output while it is still in cache.
    relu: bool,
}

#[derive(Debug, Clone)]
enum ConvWeights {
    F32 {
        /// `out_channels x (in_channels * k * k)`, row-major.
        weight: Arc<Vec<f32>>,
        /// For 3 x 3 / stride 1 / pad 1 shapes: the same convolution by Winograd F(4x4, 3x3),
        /// built on the first input large enough to use it. Its transformed kernels take 4x
        /// the memory of the weights, so layers that only ever see small maps never build them.
        winograd: Option<Arc<OnceLock<Winograd>>>,
    },
    /// Rounded to bfloat16 and packed (half the memory), multiplied on `isa`; every shape
    /// goes through im2col, or reads its patches straight from the image.
    Bf16 {
        isa: Bf16Isa,
        packed: Arc<PackedLhs>,
    },
}

impl CpuConv2d {
    /// `weight`: out x in x k x k; `bias`: out.
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
    ) -> candle_core::Result<Self> {
        let (_, _, kh, kw) = weight.dims4()?;
        if kh != kw {
            candle_core::bail!("only square kernels, got {kh}x{kw}");
        }
        Self::rectangular(weight, bias, stride, [padding; 2])
    }

    /// `weight`: out x in x kh x kw; `bias`: out; `padding`: `[rows, columns]`.
    pub fn rectangular(
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: [usize; 2],
    ) -> candle_core::Result<Self> {
        let (out_channels, in_channels, kh, kw) = weight.dims4()?;
        let flat = |t: &Tensor| -> candle_core::Result<Arc<Vec<f32>>> {
            Ok(Arc::new(
                t.to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1()?,
            ))
        };
        let shape = ConvShape {
            in_channels,
            out_channels,
            kernel: [kh, kw],
            stride,
            padding,
        };
        let winograd =
            (shape.kernel == [3, 3] && stride == 1 && padding == [1, 1]).then(Default::default);
        Ok(Self {
            shape,
            weights: ConvWeights::F32 {
                weight: flat(weight)?,
                winograd,
            },
            bias: bias.map(flat).transpose()?,
            relu: false,
        })
    }

    /// The same convolution with its products in bfloat16 on `isa` (float32 accumulation).
    pub fn with_bf16(self, isa: Bf16Isa) -> Self {
        let s = self.shape;
        let packed = match &self.weights {
            ConvWeights::F32 { weight, .. } => {
                Arc::new(PackedLhs::new(weight, s.out_channels, s.patch()))
            }
            // Already packed: only the instruction set changes.
            ConvWeights::Bf16 { packed, .. } => Arc::clone(packed),
        };
        Self {
            weights: ConvWeights::Bf16 { isa, packed },
            ..self
        }
    }

    /// The weights (`out x patch`, row-major), of a float32 convolution.
    pub(crate) fn weight_f32(&self) -> Option<&[f32]> {
        match &self.weights {
            ConvWeights::F32 { weight, .. } => Some(weight),
            ConvWeights::Bf16 { .. } => None,
        }
    }

    /// The same convolution followed by a ReLU, applied to each image's output right after
    /// it is computed instead of as a separate tensor pass.
    pub fn with_relu(self) -> Self {
        Self { relu: true, ..self }
    }

    /// Convolves one image (`in x h x w`) into `out` (`out_channels x ho x wo`).
    fn image(&self, x: &[f32], h: usize, w: usize, out: &mut [f32]) {
        let s = self.shape;
        let bias = self.bias.as_deref().map(Vec::as_slice);
        match &self.weights {
            ConvWeights::F32 {
                weight,
                winograd: Some(winograd),
            } if Winograd::pays_off(h, w) => winograd
                .get_or_init(|| Winograd::new(weight, s.out_channels, s.in_channels))
                .image(x, h, w, bias, out),
            ConvWeights::F32 { weight, .. } => {
                convolve_image(&s, Weights::F32(weight), bias, x, h, w, out)
            }
            ConvWeights::Bf16 { isa, packed } => {
                convolve_image(&s, Weights::Bf16(*isa, packed), bias, x, h, w, out)
            }
        }
        if self.relu {
            for v in out.iter_mut() {
                *v = v.max(0.0);
            }
        }
    }

    pub(crate) fn run(&self, x: &[f32], n: usize, h: usize, w: usize) -> (Vec<f32>, Shape) {
        let s = self.shape;
        let (ho, wo) = s.out_size(h, w);
        let mut out = vec![0f32; n * s.out_channels * ho * wo];
        for (img, dst) in x
            .chunks_exact(s.in_channels * h * w)
            .zip(out.chunks_exact_mut(s.out_channels * ho * wo))
        {
            self.image(img, h, w, dst);
        }
        (out, Shape::from((n, s.out_channels, ho, wo)))
    }
}

impl CustomOp1 for CpuConv2d {
    fn name(&self) -> &'static str {
        "cpu-conv2d"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope(self.name());
        let (x, [n, c, h, w]) = nchw(storage, layout)?;
        if c != self.shape.in_channels {
            candle_core::bail!(
                "conv expects {} input channels, got {c}",
                self.shape.in_channels
            );
        }
        let ([kh, kw], [ph, pw]) = (self.shape.kernel, self.shape.padding);
        if h + 2 * ph < kh || w + 2 * pw < kw {
            candle_core::bail!("conv input of {h}x{w} is smaller than its {kh}x{kw} kernel");
        }
        let (out, shape) = self.run(x, n, h, w);
        Ok((CpuStorage::F32(out), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::im2col::TILE_ELEMENTS;
    use crate::test_util::{max_abs_diff, seeded_randn};
    use candle_core::Device;

    #[test]
    fn im2col_conv_matches_candle_conv2d() {
        for (cin, cout, k, stride, pad, h, w) in [
            (3, 5, 3, 1, 1, 9, 7),
            (4, 6, 3, 2, 1, 16, 11),
            (2, 3, 5, 1, 2, 6, 6),
            (7, 2, 1, 1, 0, 5, 4),
            // 8 x 9 tiles of 4 x 4: the Winograd path.
            (3, 5, 3, 1, 1, 32, 36),
        ] {
            // Seeded: Winograd's float32 error on random data sits near the bound, so
            // unseeded inputs exceeded it in about 2 % of runs.
            let x = seeded_randn(1, &[2, cin, h, w]);
            let wt = seeded_randn(2, &[cout, cin, k, k]);
            let b = seeded_randn(3, &[cout]);
            let expected = x
                .conv2d(&wt, pad, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                .unwrap();
            let op = CpuConv2d::new(&wt, Some(&b), stride, pad).unwrap();
            let ours = x.apply_op1_no_bwd(&op).unwrap();
            assert_eq!(ours.dims(), expected.dims());
            assert!(
                max_abs_diff(&ours, &expected) < 1e-4,
                "{cin} {cout} {k} {stride}"
            );
            let no_bias = CpuConv2d::new(&wt, None, stride, pad).unwrap();
            let plain = x.conv2d(&wt, pad, stride, 1, 1).unwrap();
            assert!(max_abs_diff(&x.apply_op1_no_bwd(&no_bias).unwrap(), &plain) < 1e-4);
        }
    }

    #[test]
    fn rectangular_and_pointwise_kernels_with_relu_match_candle() {
        // Inception's 1 x 7 / 7 x 1 / 1 x 3 / 3 x 1 kernels, and 1 x 1 (no im2col copy).
        for (kh, kw, pad, stride) in [
            (1, 7, [0, 3], 1),
            (7, 1, [3, 0], 1),
            (3, 1, [1, 0], 1),
            (1, 1, [0, 0], 1),
            (1, 1, [0, 0], 2),
        ] {
            let (cin, cout, h, w) = (5, 6, 11, 9);
            let x = seeded_randn(4, &[2, cin, h, w]);
            let wt = seeded_randn(5, &[cout, cin, kh, kw]);
            let b = seeded_randn(6, &[cout]);
            let expected = x
                .pad_with_zeros(2, pad[0], pad[0])
                .unwrap()
                .pad_with_zeros(3, pad[1], pad[1])
                .unwrap()
                .conv2d(&wt, 0, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                .unwrap()
                .relu()
                .unwrap();
            let op = CpuConv2d::rectangular(&wt, Some(&b), stride, pad)
                .unwrap()
                .with_relu();
            let ours = x.apply_op1_no_bwd(&op).unwrap();
            assert_eq!(ours.dims(), expected.dims(), "{kh}x{kw}");
            assert!(max_abs_diff(&ours, &expected) < 1e-5, "{kh}x{kw} s{stride}");
        }
    }

    #[test]
    fn tiling_over_rows_gives_the_same_result() {
        // 64 channels x 9 taps x 2048 pixels per row: 3 rows per tile, so 8 rows take
        // tiles of 3, 3 and 2.
        let x = seeded_randn(11, &[1, 64, 8, 2048]);
        let wt = seeded_randn(12, &[4, 64, 3, 3]);
        let op = CpuConv2d::new(&wt, None, 1, 1).unwrap();
        assert_eq!(TILE_ELEMENTS / (op.shape.patch() * 2048), 3);
        let expected = x.conv2d(&wt, 1, 1, 1, 1).unwrap();
        assert!(max_abs_diff(&x.apply_op1_no_bwd(&op).unwrap(), &expected) < 1e-3);
    }

    #[test]
    fn bf16_conv_equals_the_product_of_the_rounded_operands() {
        use crate::ops::gemm_bf16::Bf16Isa;
        let round = |t: &Tensor| {
            t.to_dtype(candle_core::DType::BF16)
                .unwrap()
                .to_dtype(candle_core::DType::F32)
                .unwrap()
        };
        // Patches straight from the image (3 x 3 and 1 x 1 on rows of 32), im2col for
        // the rest (stride 2; rows of 9).
        for (cin, cout, k, stride, pad, h, w) in [
            (6, 5, 3, 1, 1, 7, 32),
            (4, 3, 1, 1, 0, 5, 16),
            (3, 7, 3, 2, 1, 16, 11),
            (5, 4, 3, 1, 1, 6, 9),
        ] {
            let x = seeded_randn(21, &[2, cin, h, w]);
            let wt = seeded_randn(22, &[cout, cin, k, k]);
            let b = seeded_randn(23, &[cout]);
            let expected = round(&x)
                .conv2d(&round(&wt), pad, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                .unwrap()
                .relu()
                .unwrap();
            for isa in Bf16Isa::available() {
                let op = CpuConv2d::new(&wt, Some(&b), stride, pad)
                    .unwrap()
                    .with_relu()
                    .with_bf16(isa);
                let ours = x.apply_op1_no_bwd(&op).unwrap();
                assert_eq!(ours.dims(), expected.dims());
                let err = max_abs_diff(&ours, &expected);
                assert!(err < 1e-4, "{isa:?} {cin} {cout} {k} {stride}: {err}");
            }
        }
    }

    #[test]
    fn misshapen_inputs_are_errors_that_say_what_was_expected() {
        let dev = Device::Cpu;
        let err = |r: candle_core::Result<Tensor>| r.unwrap_err().to_string();
        let x = Tensor::zeros((1, 4, 6, 6), candle_core::DType::F32, &dev).unwrap();

        let wt = Tensor::zeros((2, 3, 3, 3), candle_core::DType::F32, &dev).unwrap();
        let conv = CpuConv2d::new(&wt, None, 1, 1).unwrap();
        let msg = err(x.apply_op1_no_bwd(&conv));
        assert!(
            msg.contains("conv expects 3 input channels, got 4"),
            "{msg}"
        );
        let oblong = Tensor::zeros((2, 3, 3, 1), candle_core::DType::F32, &dev).unwrap();
        let msg = CpuConv2d::new(&oblong, None, 1, 1).unwrap_err().to_string();
        assert!(msg.contains("only square kernels, got 3x1"), "{msg}");
        let tiny = Tensor::zeros((1, 3, 2, 6), candle_core::DType::F32, &dev).unwrap();
        let unpadded = CpuConv2d::new(&wt, None, 1, 0).unwrap();
        let msg = err(tiny.apply_op1_no_bwd(&unpadded));
        assert!(
            msg.contains("conv input of 2x6 is smaller than its 3x3 kernel"),
            "{msg}"
        );
    }
}
