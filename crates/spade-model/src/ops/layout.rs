//! The input of a custom op as a contiguous f32 NCHW slice.

use candle_core::{CpuStorage, Layout};

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
