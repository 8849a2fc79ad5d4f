//! The input of a custom op as a contiguous f32 NCHW slice, and plane-by-plane maps over it.

use candle_core::{CpuStorage, Layout};
use rayon::prelude::*;

/// The input of a custom op as a contiguous f32 slice with its NCHW dims.
pub(crate) fn nchw<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<(&'a [f32], [usize; 4])> {
    let data = match storage {
        CpuStorage::F32(data) => data.as_slice(),
        _ => candle_core::bail!("the CPU convolution kernels take f32"),
    };
    let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg("the CPU convolution kernels take contiguous input".into())
    })?;
    let [n, c, h, w] = *layout.dims() else {
        candle_core::bail!("expected an NCHW tensor, got {:?}", layout.dims());
    };
    Ok((&data[start..end], [n, c, h, w]))
}

/// One output plane of `out_plane` values per input plane of `in_plane` values of `x`, each
/// written by `f(input plane, output plane)`, the planes in parallel.
pub(crate) fn map_planes(
    x: &[f32],
    in_plane: usize,
    out_plane: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut out = vec![0f32; x.len() / in_plane * out_plane];
    out.par_chunks_mut(out_plane)
        .zip(x.par_chunks(in_plane))
        .for_each(|(dst, src)| f(src, dst));
    out
}
