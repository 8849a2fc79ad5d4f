//! Per-thread scratch memory reused across calls of the CPU ops.

/// Runs `f` on `len` floats of this thread's scratch memory, whose contents are left over
/// from earlier calls: `f` must write before it reads. A fresh allocation of this size costs
/// one page fault per 4 KiB on first touch, which measured as much as the arithmetic of
/// some layers; reusing it keeps at most the largest request per thread resident.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local!(static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) });
    // Taken out while in use, so that a nested call (rayon may run another op's task on
    // this thread while it waits) gets a fresh buffer instead of aliasing this one.
    let mut buf = SCRATCH.take();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let result = f(&mut buf[..len]);
    SCRATCH.set(buf);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_reused_and_never_shared_by_nested_calls() {
        let first = with_scratch(64, |buf| {
            buf.fill(7.0);
            with_scratch(64, |inner| {
                inner.fill(1.0);
                inner.as_ptr()
            });
            assert!(buf.iter().all(|&v| v == 7.0));
            buf.as_ptr()
        });
        // The outer buffer went back last: the next call gets it, contents and all.
        with_scratch(32, |buf| {
            assert_eq!(buf.as_ptr(), first);
            assert_eq!(buf[0], 7.0);
        });
    }
}
