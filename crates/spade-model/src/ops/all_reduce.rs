//! Element-wise sum over the ranks of a data-parallel group as a differentiable op, and the
//! [`Collective`] transport it runs on. It serves the synchronized batch-norm statistics
//! (whose backward is again an all-reduce, as in the reference's `SynchronizedBatchNorm2d`)
//! and the averaging of gradients; the transports themselves live in `train::collective`.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::error::Result;

/// A group of ranks that can sum tensors across all of them.
pub trait Collective: Send + Sync + std::fmt::Debug {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;

    /// Sums `values` element-wise over all ranks; every rank passes the same length, in the
    /// same order of calls, and receives the sum.
    fn all_reduce_host(&self, values: &[f64]) -> candle_core::Result<Vec<f64>>;

    /// The same on GPU memory, without a round trip through the host.
    #[cfg(feature = "cuda")]
    fn all_reduce_cuda(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<candle_core::CudaStorage> {
        let _ = (storage, layout);
        candle_core::bail!("this collective cannot reduce GPU tensors")
    }
}

/// Element-wise sum over the ranks of a group, as a differentiable op: the gradient of a
/// sum over ranks, seen from every rank, is the sum of the ranks' output gradients.
#[derive(Debug, Clone)]
pub struct AllReduce(pub Arc<dyn Collective>);

impl AllReduce {
    pub fn apply(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.contiguous()?.apply_op1(self.clone())?)
    }
}

impl CustomOp1 for AllReduce {
    fn name(&self) -> &'static str {
        "all-reduce-sum"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("all-reduce takes contiguous tensors".into()))?;
        let out = match storage {
            CpuStorage::F32(v) => {
                let wide: Vec<f64> = v[start..end].iter().map(|&x| f64::from(x)).collect();
                CpuStorage::F32(
                    self.0
                        .all_reduce_host(&wide)?
                        .into_iter()
                        .map(|x| x as f32)
                        .collect(),
                )
            }
            CpuStorage::F64(v) => CpuStorage::F64(self.0.all_reduce_host(&v[start..end])?),
            _ => candle_core::bail!("all-reduce takes f32 or f64 tensors"),
        };
        Ok((out, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        Ok((
            self.0.all_reduce_cuda(storage, layout)?,
            layout.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(self.clone())?))
    }
}
