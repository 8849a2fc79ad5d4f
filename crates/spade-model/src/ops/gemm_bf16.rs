//! Matrix products in bfloat16 with float32 accumulation, for `--dtype bf16` on the CPU:
//! on AMX tiles (`TDPBF16PS`) where the CPU has them, else with AVX512-BF16 (`VDPBF16PS`),
//! detected at run time. The left operand (a convolution's weights) is packed once; the
//! right one (im2col columns, float32) is rounded to bfloat16 panel by panel as it is used,
//! so activations stay float32 between layers and only the products lose precision.
//!
//! Both kernels read the same packed layout, the one AMX tiles load: blocks of 16 rows x 32
//! depths of the left operand (row-major), and blocks of 16 depth pairs x 16 columns of the
//! right one, each pair of depths side by side in 32 bits ("VNNI" order).

use std::sync::OnceLock;

use rayon::prelude::*;

/// Rows of a left block, columns of a right block.
const TILE: usize = 16;
/// Depth of a block: 32 bfloat16 values (64 bytes, one tile row).
const DEPTH: usize = 32;
/// Elements of one packed block (16 x 32 bfloat16: 1 KiB).
const BLOCK: usize = TILE * DEPTH;
/// Rows and columns of the output block a kernel call computes (2 x 2 tiles).
const MICRO: usize = 2 * TILE;
/// Bytes of packed right operand a panel aims at: it is reused by every row block, so it
/// should stay in the core's L2.
const PANEL_BYTES: usize = 512 << 10;

/// The instruction set a product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Isa {
    /// AMX tiles: `TDPBF16PS`, 16 x 16 x 32 per instruction.
    Amx,
    /// AVX512-BF16: `VDPBF16PS`, 16 lanes of pair products per instruction.
    Avx512,
}

impl Bf16Isa {
    /// The best this CPU has, or `None` (no bfloat16 products). `SPADE_CPU_BF16=avx512`
    /// picks AVX512-BF16 on a CPU with AMX (to compare or test the two).
    pub fn detect() -> Option<Self> {
        static DETECTED: OnceLock<Option<Bf16Isa>> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let prefer_avx512 = std::env::var("SPADE_CPU_BF16").is_ok_and(|v| v == "avx512");
            let available = Self::available();
            if prefer_avx512 && available.contains(&Self::Avx512) {
                return Some(Self::Avx512);
            }
            available.first().copied()
        })
    }

    /// Every instruction set of this CPU that products can run on, best first.
    pub fn available() -> Vec<Self> {
        let mut isas = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            // Both pack their operands with AVX512-BF16.
            if x86::avx512_bf16() {
                if x86::amx_usable() {
                    isas.push(Self::Amx);
                }
                isas.push(Self::Avx512);
            }
        }
        isas
    }
}

/// Rounds to the nearest bfloat16, ties to even (what `VCVTNE2PS2BF16` does).
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// Rounds `src` (at most 32 values) into the start of `dst` (the rest untouched).
fn round_into(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if x86::avx512_bf16() {
        // SAFETY: the CPU has AVX512-BF16.
        return unsafe { x86::round_into(src, dst) };
    }
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = to_bf16(v);
    }
}

/// The float32 value of a bfloat16.
#[inline(always)]
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits(u32::from(x) << 16)
}

/// A left operand (`m x k`, row-major float32) rounded to bfloat16 and packed; rows padded
/// to a multiple of 32 and depth to a multiple of 32 with zeros.
#[derive(Debug, Clone)]
pub struct PackedLhs {
    m: usize,
    k: usize,
    /// Depth blocks per row block.
    depth_blocks: usize,
    /// Row block `i`, depth block `p` at `(i * depth_blocks + p) * BLOCK`.
    data: Vec<u16>,
}

impl PackedLhs {
    pub fn new(lhs: &[f32], m: usize, k: usize) -> Self {
        let _time = super::profile::scope("pack bf16 weights");
        assert_eq!(lhs.len(), m * k, "left operand of {m} x {k}");
        let depth_blocks = k.div_ceil(DEPTH);
        let row_blocks = m.div_ceil(MICRO) * 2;
        let mut data = vec![0u16; row_blocks * depth_blocks * BLOCK];
        // Row blocks in parallel: a model's weights are packed as it loads.
        data.par_chunks_exact_mut(depth_blocks * BLOCK)
            .enumerate()
            .for_each(|(i, rows)| {
                for (p, block) in rows.chunks_exact_mut(BLOCK).enumerate() {
                    for r in 0..TILE {
                        let row = i * TILE + r;
                        if row >= m {
                            break;
                        }
                        let depths = p * DEPTH..((p + 1) * DEPTH).min(k);
                        round_into(&lhs[row * k..][depths], &mut block[r * DEPTH..][..DEPTH]);
                    }
                }
            });
        Self {
            m,
            k,
            depth_blocks,
            data,
        }
    }

    pub fn rows(&self) -> usize {
        self.m
    }

    pub fn depth(&self) -> usize {
        self.k
    }
}

/// Where the right operand (`k x n`, float32) is read from.
#[derive(Debug, Clone, Copy)]
pub enum Rhs {
    /// A row-major matrix: row `d` at `ptr + d * row`.
    Matrix { ptr: *const f32, row: usize },
    /// The im2col matrix of a stride-1 convolution, read straight from the image: row
    /// `(channel, ky, kx)`, column `r * wo + ox` is `image[channel][y0 + r + ky - pad_h]
    /// [ox + kx - pad_w]`, zero outside the image. `wo` must be a multiple of 16.
    Patches {
        image: *const f32,
        h: usize,
        w: usize,
        kernel: [usize; 2],
        padding: [usize; 2],
        y0: usize,
        wo: usize,
    },
}

impl Rhs {
    /// Whether [`Rhs::Patches`] can stand for the im2col matrix of this geometry.
    pub fn patches_apply(kernel: [usize; 2], stride: usize, wo: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        let taps_fit = kernel[0] * kernel[1] <= x86::MAX_TAPS;
        #[cfg(not(target_arch = "x86_64"))]
        let taps_fit = kernel[0] * kernel[1] == 0;
        taps_fit && stride == 1 && wo.is_multiple_of(TILE)
    }
}

// SAFETY: the pointers are read only, by the panels of one call, which the caller's
// contract keeps valid for the call.
unsafe impl Send for Rhs {}
unsafe impl Sync for Rhs {}

/// What the products are added to as they are written.
#[derive(Debug, Clone, Copy)]
pub enum Base<'a> {
    /// Nothing: `dst` is overwritten.
    Zero,
    /// What `dst` holds.
    Dst,
    /// One value per row (a convolution's bias), so `dst` needs no filling first.
    RowBias(&'a [f32]),
}

/// `dst (m x n) = base + lhs (m x k) * rhs (k x n)`; `dst` row-major with row stride
/// `dst_row`. Column panels run across the rayon pool.
///
/// # Safety
/// `rhs` must address `k` rows of `n` floats (for [`Rhs::Patches`], the image
/// `k / taps x h x w`), `dst` `m` rows of `n` at stride `dst_row`, and `dst` must not overlap
/// `rhs` nor be written by anyone else meanwhile.
pub unsafe fn gemm(
    isa: Bf16Isa,
    lhs: &PackedLhs,
    n: usize,
    rhs: Rhs,
    dst: *mut f32,
    dst_row: usize,
    base: Base,
) {
    if let Base::RowBias(bias) = base {
        assert!(bias.len() >= lhs.m, "a bias per row");
    }
    let kb = lhs.depth_blocks;
    // Column panels: about PANEL_BYTES of packed right operand, a multiple of 32 wide, and
    // at least one per thread where there are columns for it.
    let by_cache = (PANEL_BYTES / (kb * BLOCK * 2) * TILE).max(MICRO);
    let by_threads = n.div_ceil(rayon::current_num_threads()).div_ceil(MICRO) * MICRO;
    let width = by_cache.min(by_threads).max(MICRO) / MICRO * MICRO;
    let dst = dst as usize;
    (0..n.div_ceil(width)).into_par_iter().for_each(|panel| {
        let j0 = panel * width;
        let cols = width.min(n - j0);
        SCRATCH.with_borrow_mut(|(packed, sums)| {
            // SAFETY: columns j0..j0+cols of the caller's operands; panels are disjoint.
            unsafe {
                pack_rhs(lhs.k, kb, rhs, j0, cols, packed);
                let dst = (dst as *mut f32).add(j0);
                multiply_panel(isa, lhs, packed, cols, sums, dst, dst_row, base);
            }
        });
    });
}

thread_local! {
    /// Each thread's packed right-operand panel and its 32 rows of sums, reused from call
    /// to call.
    static SCRATCH: std::cell::RefCell<(Vec<u16>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Packs columns `j0..j0+cols` of `rhs` into `out`: per 16-column block, `kb` blocks of 16
/// depth pairs x 16 columns; padding is zero. Every element of `out` is written.
///
/// # Safety
/// `rhs` must address `k` rows of at least `j0 + cols` columns.
unsafe fn pack_rhs(k: usize, kb: usize, rhs: Rhs, j0: usize, cols: usize, out: &mut Vec<u16>) {
    let col_blocks = cols.div_ceil(MICRO) * 2;
    let len = col_blocks * kb * BLOCK;
    if out.len() < len {
        out.resize(len, 0);
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract; `out` holds `len` elements; detection found
    // AVX512-BF16, which both instruction sets require.
    unsafe {
        x86::pack_rhs(k, kb, rhs, j0, cols, col_blocks, &mut out[..len]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (k, rhs, j0);
        unreachable!("bf16 products exist only on x86_64");
    }
}

/// Depth blocks per pass over a panel: the left operand's 32 rows of them (16 KiB) stay in
/// L1 while every column block of the panel goes by.
const DEPTH_BLOCKS_PER_PASS: usize = 8;

/// `dst (m x cols) (+)= lhs * packed panel`: for each 32 rows of `lhs` and each pass of
/// [`DEPTH_BLOCKS_PER_PASS`], every 32 x 32 block of the panel, its sums kept in `sums`
/// between passes; then the 32 rows go to `dst`.
///
/// # Safety
/// `dst` must address `lhs.m` rows of `cols` floats at stride `dst_row`.
#[allow(clippy::too_many_arguments)]
unsafe fn multiply_panel(
    isa: Bf16Isa,
    lhs: &PackedLhs,
    panel: &[u16],
    cols: usize,
    sums: &mut Vec<f32>,
    dst: *mut f32,
    dst_row: usize,
    base: Base,
) {
    let kb = lhs.depth_blocks;
    let padded = cols.div_ceil(MICRO) * MICRO;
    assert!(panel.len() >= padded / TILE * kb * BLOCK);
    sums.resize(MICRO * padded, 0.0);
    #[cfg(target_arch = "x86_64")]
    let _tiles = (isa == Bf16Isa::Amx).then(x86::TileConfig::load);
    for i0 in (0..lhs.m).step_by(MICRO) {
        let a = &lhs.data[(i0 / TILE) * kb * BLOCK..][..2 * kb * BLOCK];
        for p0 in (0..kb).step_by(DEPTH_BLOCKS_PER_PASS) {
            let pass = Pass {
                blocks: DEPTH_BLOCKS_PER_PASS.min(kb - p0),
                second: kb * BLOCK,
                sums_row: padded,
                first: p0 == 0,
            };
            for j0 in (0..padded).step_by(MICRO) {
                let b = &panel[((j0 / TILE) * kb + p0) * BLOCK..];
                micro_kernel(isa, &pass, &a[p0 * BLOCK..], b, &mut sums[j0..]);
            }
        }
        for r in 0..MICRO.min(lhs.m - i0) {
            // SAFETY: row i0 + r < m, columns 0..cols.
            let out = unsafe { std::slice::from_raw_parts_mut(dst.add((i0 + r) * dst_row), cols) };
            let row = &sums[r * padded..][..cols];
            match base {
                Base::Zero => out.copy_from_slice(row),
                Base::Dst => add_into(out, row, 0.0, true),
                Base::RowBias(bias) => add_into(out, row, bias[i0 + r], false),
            }
        }
    }
}

/// `out = sums + constant`, plus the old `out` when `existing`.
fn add_into(out: &mut [f32], sums: &[f32], constant: f32, existing: bool) {
    #[cfg(target_arch = "x86_64")]
    if x86::avx512_bf16() {
        // SAFETY: the CPU has AVX-512.
        return unsafe { x86::add_into(out, sums, constant, existing) };
    }
    for (o, &s) in out.iter_mut().zip(sums) {
        *o = if existing {
            *o + s + constant
        } else {
            s + constant
        };
    }
}

/// One pass of a 32 x 32 block: `blocks` depth blocks; the second row (column) block
/// `second` elements after the first; the sums rows `sums_row` apart, zero before the
/// `first` pass.
struct Pass {
    blocks: usize,
    second: usize,
    sums_row: usize,
    first: bool,
}

/// Adds one pass of a 32 x 32 block to `sums` (set it on the first pass): `a` the first
/// of two row blocks, `b` of two column blocks, as [`Pass`] lays them out.
fn micro_kernel(isa: Bf16Isa, pass: &Pass, a: &[u16], b: &[u16], sums: &mut [f32]) {
    let reach = pass.second + pass.blocks * BLOCK;
    assert!(a.len() >= reach && b.len() >= reach);
    assert!(sums.len() >= (MICRO - 1) * pass.sums_row + MICRO);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the lengths are checked above; `isa` came from detection, and AMX tiles
        // were configured by the caller (`multiply_panel`).
        unsafe {
            match isa {
                Bf16Isa::Amx => x86::amx_block(pass, a.as_ptr(), b.as_ptr(), sums.as_mut_ptr()),
                Bf16Isa::Avx512 => {
                    x86::avx512_block(pass, a.as_ptr(), b.as_ptr(), sums.as_mut_ptr())
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, pass, a, b, sums);
        unreachable!("bf16 products exist only on x86_64");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;

    use super::{Pass, Rhs, BLOCK, DEPTH, MICRO, TILE};

    /// AVX512-BF16 with the AVX-512 subsets the packing uses; both instruction sets need it.
    pub(super) fn avx512_bf16() -> bool {
        is_x86_feature_detected!("avx512bf16")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
    }

    /// Packs a panel (see [`super::pack_rhs`]): for each depth pair, 16 columns of its two
    /// rows are rounded to bfloat16 in one instruction and interleaved into one 64-byte row
    /// of a block; columns past `cols` and depths past `k` are zeros.
    ///
    /// # Safety
    /// `rhs` must address `k` rows of `j0 + cols` columns; `out` must hold
    /// `col_blocks * kb` blocks; the CPU must have [`avx512_bf16`].
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_rhs(
        k: usize,
        kb: usize,
        rhs: Rhs,
        j0: usize,
        cols: usize,
        col_blocks: usize,
        out: &mut [u16],
    ) {
        assert!(out.len() >= col_blocks * kb * BLOCK);
        // Lane 2j takes element j of the first row, lane 2j + 1 element j of the second.
        let interleave = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        );
        // Depth block by depth block, every column block of it: the operand's rows are read
        // in runs along the panel and each packed block is written in order.
        let mut rows: Vec<Rows> = (0..col_blocks)
            .map(|jb| Rows::new(&rhs, j0 + jb * TILE, cols.saturating_sub(jb * TILE)))
            .collect();
        for p in 0..kb {
            for (jb, rows) in rows.iter_mut().enumerate() {
                rows.seek(p * DEPTH);
                let block = &mut out[(jb * kb + p) * BLOCK..][..BLOCK];
                for (pair, dst) in block.chunks_exact_mut(DEPTH).enumerate() {
                    let depth = p * DEPTH + 2 * pair;
                    let first = if depth < k {
                        rows.next()
                    } else {
                        _mm512_setzero_ps()
                    };
                    let second = if depth + 1 < k {
                        rows.next()
                    } else {
                        _mm512_setzero_ps()
                    };
                    // Lanes 0-15: the first row rounded; 16-31: the second.
                    let rounded: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(second, first));
                    let packed = _mm512_permutexvar_epi16(interleave, rounded);
                    _mm512_storeu_si512(dst.as_mut_ptr().cast(), packed);
                }
            }
        }
    }

    /// [`super::add_into`], 16 lanes at a time.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn add_into(out: &mut [f32], sums: &[f32], constant: f32, existing: bool) {
        for (o, &s) in out.iter_mut().zip(sums) {
            *o = if existing {
                *o + s + constant
            } else {
                s + constant
            };
        }
    }

    /// [`super::round_into`] with one instruction per 32 values.
    ///
    /// # Safety
    /// The CPU must have [`avx512_bf16`].
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn round_into(src: &[f32], dst: &mut [u16]) {
        let n = src.len().min(dst.len()).min(DEPTH);
        let mask = |from: usize| -> u16 {
            let count = n.saturating_sub(from).min(TILE) as u32;
            ((1u32 << count) - 1) as u16
        };
        let (lo, hi) = (mask(0), mask(TILE));
        // SAFETY: the masks keep every access inside `n` elements of both slices.
        unsafe {
            let first = _mm512_maskz_loadu_ps(lo, src.as_ptr());
            let second = _mm512_maskz_loadu_ps(hi, src.as_ptr().wrapping_add(TILE));
            let rounded: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(second, first));
            let keep = u32::from(lo) | (u32::from(hi) << TILE);
            _mm512_mask_storeu_epi16(dst.as_mut_ptr().cast(), keep, rounded);
        }
    }

    /// Most kernel taps [`Rhs::Patches`] takes (7 x 7 and below).
    pub(super) const MAX_TAPS: usize = 64;

    /// 16 columns of the right operand, row after row from row 0.
    struct Rows {
        /// Lanes that are columns of the operand (the last block may be short).
        valid: u16,
        source: Source,
    }

    // A panel holds a few dozen of these, built once per call: the tap table inline is
    // cheaper than a box each.
    #[allow(clippy::large_enum_variant)]
    enum Source {
        /// The next row's 16 columns; those of row 0.
        Matrix {
            next: *const f32,
            first: *const f32,
            row: usize,
        },
        /// Per kernel tap, where its 16 columns start relative to a channel plane (`None`
        /// where the tap's input row is outside the image) and which lanes are inside.
        Patches {
            plane: *const f32,
            image: *const f32,
            plane_len: usize,
            taps: [(Option<isize>, u16); MAX_TAPS],
            tap_count: usize,
            tap: usize,
        },
    }

    impl Rows {
        /// Columns `col..col + 16` (`left` of them exist).
        fn new(rhs: &Rhs, col: usize, left: usize) -> Self {
            let valid = if left >= TILE {
                0xffff
            } else {
                ((1u32 << left) - 1) as u16
            };
            let source = match *rhs {
                Rhs::Matrix { ptr, row } => Source::Matrix {
                    next: ptr.wrapping_add(col),
                    first: ptr.wrapping_add(col),
                    row,
                },
                Rhs::Patches {
                    image,
                    h,
                    w,
                    kernel: [kh, kw],
                    padding: [ph, pw],
                    y0,
                    wo,
                } => {
                    // One output row's 16 columns (`wo` is a multiple of 16).
                    let (r, ox) = (col / wo, col % wo);
                    let mut taps = [(None, 0u16); MAX_TAPS];
                    for (tap, slot) in taps.iter_mut().take(kh * kw).enumerate() {
                        let iy = (y0 + r + tap / kw) as isize - ph as isize;
                        let ix = (ox + tap % kw) as isize - pw as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        // Lanes whose input column lies inside the image.
                        let lo = (-ix).clamp(0, 16) as u32;
                        let hi = (w as isize - ix).clamp(0, 16) as u32;
                        let inside = ((1u32 << hi) - 1) & !((1u32 << lo) - 1);
                        *slot = (Some(iy * w as isize + ix), inside as u16);
                    }
                    Source::Patches {
                        plane: image,
                        image,
                        plane_len: h * w,
                        taps,
                        tap_count: kh * kw,
                        tap: 0,
                    }
                }
            };
            Self { valid, source }
        }

        /// Makes `depth` the next row.
        fn seek(&mut self, depth: usize) {
            match &mut self.source {
                Source::Matrix { next, first, row } => *next = first.wrapping_add(depth * *row),
                Source::Patches {
                    plane,
                    image,
                    plane_len,
                    tap_count,
                    tap,
                    ..
                } => {
                    *plane = image.wrapping_add(depth / *tap_count * *plane_len);
                    *tap = depth % *tap_count;
                }
            }
        }

        /// The next row's 16 columns.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn next(&mut self) -> __m512 {
            match &mut self.source {
                Source::Matrix { next, row, .. } => {
                    // SAFETY: the caller's operand holds this row's valid lanes.
                    let v = unsafe { _mm512_maskz_loadu_ps(self.valid, *next) };
                    *next = next.wrapping_add(*row);
                    v
                }
                Source::Patches {
                    plane,
                    plane_len,
                    taps,
                    tap_count,
                    tap,
                    ..
                } => {
                    let (offset, inside) = taps[*tap];
                    let v = match offset {
                        // SAFETY: only lanes inside the channel's plane are read.
                        Some(offset) => unsafe {
                            _mm512_maskz_loadu_ps(
                                inside & self.valid,
                                plane.wrapping_offset(offset),
                            )
                        },
                        None => _mm512_setzero_ps(),
                    };
                    *tap += 1;
                    if *tap == *tap_count {
                        *tap = 0;
                        *plane = plane.wrapping_add(*plane_len);
                    }
                    v
                }
            }
        }
    }

    /// AMX-BF16 present, enabled by the OS, and tile state granted to this process.
    pub(super) fn amx_usable() -> bool {
        let (max_leaf, leaf7) = (__cpuid(0).eax, __cpuid_count(7, 0));
        let has_amx = max_leaf >= 7 && (leaf7.edx >> 22) & 1 == 1 && (leaf7.edx >> 24) & 1 == 1;
        has_amx && request_tile_permission()
    }

    /// Linux hands AMX tile state only to processes that ask for it
    /// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), once per process.
    fn request_tile_permission() -> bool {
        #[cfg(target_os = "linux")]
        {
            const SYS_ARCH_PRCTL: i64 = 158;
            const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
            const XFEATURE_XTILEDATA: i64 = 18;
            let ret: i64;
            // SAFETY: a system call that only changes this process's permitted state.
            unsafe {
                asm!(
                    "syscall",
                    inlateout("rax") SYS_ARCH_PRCTL => ret,
                    in("rdi") ARCH_REQ_XCOMP_PERM,
                    in("rsi") XFEATURE_XTILEDATA,
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack)
                );
            }
            ret == 0
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// The tile palette of [`amx_block`]: tmm0-3 accumulate 16 x 16 float32, tmm4-5 hold
    /// 16 x 32 bfloat16 of the left operand, tmm6-7 16 pairs x 16 of the right one.
    /// Configured for the life of the value on this thread, released on drop.
    pub(super) struct TileConfig;

    #[repr(C, align(64))]
    struct Palette {
        id: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    impl TileConfig {
        pub(super) fn load() -> Self {
            let mut palette = Palette {
                id: 1,
                start_row: 0,
                reserved: [0; 14],
                bytes_per_row: [0; 16],
                rows: [0; 16],
            };
            for t in 0..8 {
                palette.bytes_per_row[t] = 64;
                palette.rows[t] = TILE as u8;
            }
            // SAFETY: only called where detection found AMX usable.
            unsafe { asm!("ldtilecfg [{}]", in(reg) &palette, options(nostack, readonly)) };
            Self
        }
    }

    impl Drop for TileConfig {
        fn drop(&mut self) {
            // SAFETY: tiles were configured by `load` on this thread.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }
    }

    /// A pass of a 32 x 32 block on AMX tiles (see [`super::Pass`]).
    ///
    /// # Safety
    /// `a` and `b` must address what the pass reads, `sums` 32 rows of 32 at its stride, and
    /// a [`TileConfig`] must be live on this thread.
    pub(super) unsafe fn amx_block(pass: &Pass, a: *const u16, b: *const u16, sums: *mut f32) {
        let stride = (DEPTH * 2) as u64;
        let second = (pass.second * 2) as u64;
        let sums_stride = (pass.sums_row * 4) as u64;
        let lower = TILE as u64 * sums_stride;
        // SAFETY: every access stays inside what the caller vouches for.
        unsafe {
            if pass.first {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
            } else {
                asm!(
                    "tileloadd tmm0, [{c} + {s}]",
                    "tileloadd tmm1, [{c} + {s} + 64]",
                    "lea {t}, [{c} + {lower}]",
                    "tileloadd tmm2, [{t} + {s}]",
                    "tileloadd tmm3, [{t} + {s} + 64]",
                    c = in(reg) sums,
                    s = in(reg) sums_stride,
                    lower = in(reg) lower,
                    t = out(reg) _,
                    options(nostack, readonly)
                );
            }
            asm!(
                "2:",
                "tileloadd tmm4, [{a} + {stride}]",
                "tileloadd tmm6, [{b} + {stride}]",
                "lea {t}, [{a} + {second}]",
                "tileloadd tmm5, [{t} + {stride}]",
                "lea {t}, [{b} + {second}]",
                "tileloadd tmm7, [{t} + {stride}]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a}, 1024",
                "add {b}, 1024",
                "dec {n}",
                "jnz 2b",
                "tilestored [{c} + {s}], tmm0",
                "tilestored [{c} + {s} + 64], tmm1",
                "lea {t}, [{c} + {lower}]",
                "tilestored [{t} + {s}], tmm2",
                "tilestored [{t} + {s} + 64], tmm3",
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                n = inout(reg) pass.blocks => _,
                t = out(reg) _,
                stride = in(reg) stride,
                second = in(reg) second,
                c = in(reg) sums,
                s = in(reg) sums_stride,
                lower = in(reg) lower,
                options(nostack)
            );
        }
    }

    /// A pass of a 32 x 32 block with AVX512-BF16, eight rows at a time.
    ///
    /// # Safety
    /// As [`amx_block`], with AVX512-BF16 instead of AMX.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn avx512_block(pass: &Pass, a: *const u16, b: *const u16, sums: *mut f32) {
        for r0 in (0..MICRO).step_by(8) {
            let row = |r: usize| sums.add((r0 + r) * pass.sums_row);
            let mut acc = [[_mm512_setzero_ps(); 2]; 8];
            if !pass.first {
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = [_mm512_loadu_ps(row(r)), _mm512_loadu_ps(row(r).add(TILE))];
                }
            }
            // Row r0 + r lives in row block (r0 + r) / 16, row (r0 + r) % 16 of it.
            let a_rows = a.add((r0 / TILE) * pass.second + (r0 % TILE) * DEPTH);
            for p in 0..pass.blocks {
                for pair in 0..DEPTH / 2 {
                    let at = p * BLOCK + pair * DEPTH;
                    let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(at).cast()));
                    let b1: __m512bh =
                        std::mem::transmute(_mm512_loadu_si512(b.add(pass.second + at).cast()));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let pair_bits = a_rows.add(p * BLOCK + r * DEPTH + 2 * pair).cast::<i32>();
                        let a: __m512bh =
                            std::mem::transmute(_mm512_set1_epi32(pair_bits.read_unaligned()));
                        acc[0] = _mm512_dpbf16_ps(acc[0], a, b0);
                        acc[1] = _mm512_dpbf16_ps(acc[1], a, b1);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(row(r), acc[0]);
                _mm512_storeu_ps(row(r).add(TILE), acc[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product of the bfloat16-rounded operands in float64.
    fn reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let r = |x: f32| f64::from(from_bf16(to_bf16(x)));
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for p in 0..k {
                let aip = r(a[i * k + p]);
                for j in 0..n {
                    c[i * n + j] += aip * r(b[p * n + j]);
                }
            }
        }
        c
    }

    fn values(seed: u32, len: usize) -> Vec<f32> {
        // A small LCG: values in [-1, 1) with all mantissa bits in use.
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even 1.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up to the even one.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        // The vector rounding (where the CPU has it) equals the scalar one, ties included,
        // and writes only as many values as it is given.
        let mut src = values(9, 29);
        src[3] = 1.0 + 1.0 / 256.0;
        src[4] = 1.0 + 3.0 / 256.0;
        let mut dst = [7u16; 32];
        round_into(&src, &mut dst);
        let scalar: Vec<u16> = src.iter().map(|&v| to_bf16(v)).collect();
        assert_eq!(&dst[..29], scalar.as_slice());
        assert_eq!(dst[29..], [7, 7, 7]);
    }

    #[test]
    fn every_kernel_of_this_cpu_matches_the_rounded_product() {
        let isas = Bf16Isa::available();
        eprintln!("bfloat16 kernels of this CPU: {isas:?}");
        // Ragged shapes: rows, columns and depth that are not multiples of the blocks, one
        // of a single column, and a depth of several blocks.
        for &(m, n, k) in &[
            (3, 5, 7),
            (33, 70, 65),
            (64, 1, 96),
            (40, 300, 1152),
            (1, 33, 31),
        ] {
            let a = values(1, m * k);
            let b = values(2, k * n);
            let expected = reference(&a, &b, m, n, k);
            let lhs = PackedLhs::new(&a, m, k);
            for &isa in &isas {
                let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.25 - 1.0).collect();
                for (name, base) in [
                    ("zero", Base::Zero),
                    ("dst", Base::Dst),
                    ("bias", Base::RowBias(&bias)),
                ] {
                    // Every output row padded by 3 columns, which must stay untouched.
                    let stride = n + 3;
                    let mut c = vec![0.5f32; m * stride];
                    // SAFETY: b is k x n, c is m rows of `stride`.
                    let rhs = Rhs::Matrix {
                        ptr: b.as_ptr(),
                        row: n,
                    };
                    unsafe { gemm(isa, &lhs, n, rhs, c.as_mut_ptr(), stride, base) };
                    for i in 0..m {
                        let added = match base {
                            Base::Zero => 0.0,
                            Base::Dst => 0.5,
                            Base::RowBias(b) => f64::from(b[i]),
                        };
                        for j in 0..n {
                            let got = f64::from(c[i * stride + j]);
                            let want = expected[i * n + j] + added;
                            // float32 accumulation over k terms of size <= 1.
                            let tol = 1e-6 * k as f64 + 1e-6;
                            assert!(
                                (got - want).abs() <= tol,
                                "{isa:?} {m}x{n}x{k} {name} at ({i}, {j}): {got} vs {want}"
                            );
                        }
                        for j in n..stride {
                            assert_eq!(c[i * stride + j], 0.5, "{isa:?}: padding written");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn patches_read_from_the_image_equal_an_explicit_im2col() {
        let isas = Bf16Isa::available();
        // 3 x 3 padded by 1 and unpadded, 1 x 3, 1 x 1; from row 0 and from row 2.
        for &(kernel, padding, y0) in &[
            ([3, 3], [1, 1], 0),
            ([3, 3], [1, 1], 2),
            ([3, 3], [0, 0], 1),
            ([1, 3], [0, 1], 0),
            ([1, 1], [0, 0], 0),
        ] {
            let ([kh, kw], [ph, pw]) = (kernel, padding);
            // Output rows 32 wide (a width the patches can stand for): the right edge of the
            // image falls inside the last 16 columns.
            let wo_used = 32;
            let (c, h, w, m) = (5, 7, wo_used + kw - 1 - 2 * pw, 20);
            let ho_all = h + 2 * ph - kh + 1;
            let rows = ho_all - y0;
            let (k, n) = (c * kh * kw, rows * wo_used);
            let image = values(3, c * h * w);
            let mut cols = vec![0f32; k * n];
            for ch in 0..c {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let d = (ch * kh + ky) * kw + kx;
                        for r in 0..rows {
                            for ox in 0..wo_used {
                                let iy = (y0 + r + ky) as isize - ph as isize;
                                let ix = (ox + kx) as isize - pw as isize;
                                if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                    cols[d * n + r * wo_used + ox] =
                                        image[(ch * h + iy as usize) * w + ix as usize];
                                }
                            }
                        }
                    }
                }
            }
            let lhs = PackedLhs::new(&values(4, m * k), m, k);
            for &isa in &isas {
                let run = |rhs: Rhs| {
                    let mut out = vec![0f32; m * n];
                    // SAFETY: both address k x n; out is m x n.
                    unsafe { gemm(isa, &lhs, n, rhs, out.as_mut_ptr(), n, Base::Zero) };
                    out
                };
                let explicit = run(Rhs::Matrix {
                    ptr: cols.as_ptr(),
                    row: n,
                });
                let direct = run(Rhs::Patches {
                    image: image.as_ptr(),
                    h,
                    w,
                    kernel,
                    padding,
                    y0,
                    wo: wo_used,
                });
                assert_eq!(
                    explicit, direct,
                    "{isa:?} {kernel:?} {padding:?} from row {y0}"
                );
            }
        }
    }
}
