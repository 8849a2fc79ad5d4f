//! The one GEMM entry point of the CPU ops: gemm's f32 kernels (AVX-512 where the CPU has
//! them) with strided operands, optionally across the rayon pool.

use gemm::Parallelism;

/// A matrix operand of [`gemm`]: element `(i, j)` at `ptr + i * row + j * col`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strided<P> {
    pub ptr: P,
    pub row: usize,
    pub col: usize,
}

/// `dst (m x n) = lhs (m x k) * rhs (k x n)`, plus the old `dst` when `accumulate`; across the
/// rayon pool when `parallel`.
///
/// # Safety
/// Every element the sizes and strides address must lie inside its operand's allocation, and
/// `dst` must not overlap `lhs` or `rhs` nor be written by anyone else meanwhile.
pub(crate) unsafe fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    accumulate: bool,
    parallel: bool,
) {
    let parallelism = if parallel {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col as isize,
            dst.row as isize,
            accumulate,
            lhs.ptr,
            lhs.col as isize,
            lhs.row as isize,
            rhs.ptr,
            rhs.col as isize,
            rhs.row as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
