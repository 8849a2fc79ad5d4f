//! `nn.Upsample(scale_factor=2)` (nearest) with its gradient, one pass each way: every pixel
//! becomes a 2 x 2 block, and the gradient of a pixel is the sum of its block's. As candle
//! ops (a broadcast and a reshape) the forward is a strided copy and the backward a
//! reduction over two strided axes, about 10x slower at the generator's 128 x 128 maps.

use super::layout::{map_planes, nchw};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

/// Nearest-neighbour upsampling by 2 of an NCHW tensor.
#[derive(Debug, Clone, Copy)]
pub struct Upsample2x;

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "upsample2x"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope(self.name());
        let (x, [n, c, h, w]) = nchw(storage, layout)?;
        let out = map_planes(x, h * w, 4 * h * w, |src, dst| {
            for (rows, row) in dst.chunks_exact_mut(4 * w).zip(src.chunks_exact(w)) {
                let (top, bottom) = rows.split_at_mut(2 * w);
                for (pair, &v) in top.chunks_exact_mut(2).zip(row) {
                    pair.fill(v);
                }
                bottom.copy_from_slice(top);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, 2 * h, 2 * w))))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&BlockSum)?))
    }
}

/// Sums of the 2 x 2 blocks of an NCHW tensor with even sides: the adjoint of
/// [`Upsample2x`].
struct BlockSum;

impl CustomOp1 for BlockSum {
    fn name(&self) -> &'static str {
        "upsample2x-grad"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let _time = super::profile::scope(self.name());
        let (g, [n, c, h2, w2]) = nchw(storage, layout)?;
        if h2 % 2 != 0 || w2 % 2 != 0 {
            candle_core::bail!("2 x 2 block sums need even sides, got {h2}x{w2}");
        }
        let (h, w) = (h2 / 2, w2 / 2);
        let out = map_planes(g, h2 * w2, h * w, |src, dst| {
            for (row, rows) in dst.chunks_exact_mut(w).zip(src.chunks_exact(2 * w2)) {
                let (top, bottom) = rows.split_at(w2);
                for ((d, t), b) in row
                    .iter_mut()
                    .zip(top.chunks_exact(2))
                    .zip(bottom.chunks_exact(2))
                {
                    // The order of the broadcast reduction it replaces: columns, then rows.
                    *d = (t[0] + t[1]) + (b[0] + b[1]);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{max_abs_diff, probed_gradients, seeded_randn};
    use candle_core::Var;

    /// Forward and gradient against the broadcast-and-reshape definition through candle's
    /// autograd.
    #[test]
    fn matches_the_broadcast_definition_and_its_gradient() {
        let (n, c, h, w) = (2, 3, 5, 7);
        let x = Var::from_tensor(&seeded_randn(1, &[n, c, h, w])).unwrap();
        let ours = x.as_tensor().apply_op1(Upsample2x).unwrap();
        let reference = x
            .as_tensor()
            .reshape((n, c, h, 1, w, 1))
            .unwrap()
            .broadcast_as((n, c, h, 2, w, 2))
            .unwrap()
            .reshape((n, c, 2 * h, 2 * w))
            .unwrap();
        assert_eq!(max_abs_diff(&ours, &reference), 0.0);
        let probe = seeded_randn(2, ours.dims());
        let (g, r) = (
            probed_gradients(&ours, &probe),
            probed_gradients(&reference, &probe),
        );
        let diff = max_abs_diff(g.get(x.as_tensor()).unwrap(), r.get(x.as_tensor()).unwrap());
        assert!(diff < 1e-6, "gradient differs by {diff}");
    }

    #[test]
    fn block_sums_of_odd_sides_are_an_error() {
        let msg = seeded_randn(3, &[1, 2, 4, 5])
            .apply_op1_no_bwd(&BlockSum)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("even sides, got 4x5"), "{msg}");
    }
}
