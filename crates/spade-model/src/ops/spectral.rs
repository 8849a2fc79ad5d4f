//! Spectral normalisation in training as one op: `W / sigma` with `sigma = u^T W v` for the
//! vectors `u`, `v` of this step's power iteration, which are constants to the gradient
//! (as in `torch.nn.utils.spectral_norm`). Composed from candle ops (a reshape, a matrix-vector
//! product, a product with `u`, a sum and a broadcast division) the backward makes about a
//! dozen weight-sized temporaries; here it is one pass:
//! `dW = G / sigma - (sum(G * W) / sigma^2) u v^T` for the output gradient `G`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `W / (u^T W v)`, `W` read as `u.len() x v.len()` (an `out x in x k x k` convolution
/// weight flattened after its first dimension).
#[derive(Debug, Clone)]
pub struct SpectralNormalize {
    pub u: Vec<f32>,
    pub v: Vec<f32>,
}

impl SpectralNormalize {
    /// The contiguous f32 weight, checked against `u` and `v`.
    fn weight<'a>(
        &self,
        storage: &'a CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<&'a [f32]> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("spectral normalisation takes f32 weights");
        };
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("spectral normalisation takes a contiguous weight".into())
        })?;
        if end - start != self.u.len() * self.v.len() {
            candle_core::bail!(
                "a weight of {:?} is not {} x {} as its power-iteration vectors",
                layout.dims(),
                self.u.len(),
                self.v.len()
            );
        }
        Ok(&data[start..end])
    }

    /// `u^T W v`, accumulated in f64 and rounded once.
    fn sigma(&self, w: &[f32]) -> f32 {
        let columns = self.v.len();
        let sum: f64 = w
            .par_chunks(columns)
            .zip(self.u.par_iter())
            .map(|(row, &u)| {
                let wv: f64 = row
                    .iter()
                    .zip(&self.v)
                    .map(|(&w, &v)| f64::from(w) * f64::from(v))
                    .sum();
                f64::from(u) * wv
            })
            .sum();
        sum as f32
    }
}

impl CustomOp1 for SpectralNormalize {
    fn name(&self) -> &'static str {
        "spectral-normalize"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = self.weight(s, l)?;
        let sigma = self.sigma(w);
        let out = w.iter().map(|&x| x / sigma).collect();
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let op = SpectralNormalizeGrad(self.clone());
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(&grad, &op)?))
    }
}

/// `dW` from `W` and the output gradient.
struct SpectralNormalizeGrad(SpectralNormalize);

impl CustomOp2 for SpectralNormalizeGrad {
    fn name(&self) -> &'static str {
        "spectral-normalize-grad"
    }

    fn cpu_fwd(
        &self,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let SpectralNormalizeGrad(op) = self;
        let w = op.weight(ws, wl)?;
        let g = op.weight(gs, gl)?;
        let sigma = f64::from(op.sigma(w));
        let dot: f64 = w
            .par_iter()
            .zip(g.par_iter())
            .map(|(&w, &g)| f64::from(w) * f64::from(g))
            .sum();
        let scale = dot / (sigma * sigma);
        let columns = op.v.len();
        let mut dw = vec![0f32; w.len()];
        dw.par_chunks_mut(columns)
            .zip(g.par_chunks(columns))
            .zip(op.u.par_iter())
            .for_each(|((dst, g), &u)| {
                let row_scale = scale * f64::from(u);
                for ((d, &g), &v) in dst.iter_mut().zip(g).zip(&op.v) {
                    *d = (f64::from(g) / sigma - row_scale * f64::from(v)) as f32;
                }
            });
        Ok((CpuStorage::F32(dw), wl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{max_abs_diff, probed_gradients, seeded_randn};
    use candle_core::{DType, Var};

    /// Forward and gradient against the same function composed from candle ops in f64.
    #[test]
    fn matches_the_composed_normalisation_and_its_gradient() {
        let (o, c, k) = (6, 4, 3);
        let w = Var::from_tensor(&seeded_randn(1, &[o, c, k, k])).unwrap();
        let u = seeded_randn(2, &[o]);
        let v = seeded_randn(3, &[c * k * k]);
        let probe = seeded_randn(4, &[o, c, k, k]);
        let op = SpectralNormalize {
            u: u.to_vec1().unwrap(),
            v: v.to_vec1().unwrap(),
        };
        let ours = w.as_tensor().apply_op1(op).unwrap();
        let grads = probed_gradients(&ours, &probe);

        let w64 = Var::from_tensor(&w.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
        let (u64, v64) = (
            u.to_dtype(DType::F64).unwrap(),
            v.to_dtype(DType::F64).unwrap(),
        );
        let flat = w64.as_tensor().reshape((o, ())).unwrap();
        let sigma = (u64
            * flat
                .matmul(&v64.unsqueeze(1).unwrap())
                .unwrap()
                .squeeze(1)
                .unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
        let reference = w64.as_tensor().broadcast_div(&sigma).unwrap();
        let reference_grads = (&reference * probe.to_dtype(DType::F64).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();

        let forward = max_abs_diff(&ours, &reference);
        assert!(forward < 1e-5, "forward differs by {forward}");
        let dw = grads.get(w.as_tensor()).unwrap();
        let scale = reference_grads
            .get(w64.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        let backward = max_abs_diff(dw, reference_grads.get(w64.as_tensor()).unwrap());
        assert!(
            backward < 1e-5 * scale.to_scalar::<f64>().unwrap().max(1.0),
            "gradient differs by {backward}"
        );
    }

    #[test]
    fn a_weight_that_does_not_fit_its_vectors_is_an_error() {
        let op = SpectralNormalize {
            u: vec![1.0; 5],
            v: vec![1.0; 3],
        };
        let msg = seeded_randn(1, &[4, 3])
            .apply_op1(op)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("is not 5 x 3"), "{msg}");
    }
}
