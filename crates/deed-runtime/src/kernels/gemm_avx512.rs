//! AVX-512F register-tile kernel for the f32 matrix product.
//!
//! This module needs `unsafe` for the SIMD intrinsics and raw-pointer loads in the
//! inner loop; everything is bounds-checked once per call through [`Mat`]'s
//! construction invariant and the explicit checks in [`block`] before any pointer is
//! formed.
//!
//! Each output element lives in one lane of one accumulator register. Per step `k`
//! the kernel broadcasts `a[i,k]`, loads sixteen consecutive `b[k,j]` per register and
//! does one `vfmadd` per register — exactly the reference's `acc = fma(a, b, acc)`
//! with `k` increasing. K is processed in blocks of [`KC`]; between blocks the
//! accumulator is stored to and reloaded from `c` unchanged (an f32 store is exact),
//! so blocking does not alter the sequence. After the last block every NaN lane is
//! replaced by the canonical NaN as it is stored.
//!
//! Register budget: the main tile is [`MR`] = 12 rows × 32 columns, 24 accumulators,
//! two registers of B and one broadcast of A, of the 32 zmm registers.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::gemm::RowsB;
use super::gemm::{Mat, CANONICAL_NAN_F32};
use super::tiling::{
    block_panels, indexed_panels, k_blocks, row_tiles, rows_product, BRows, Flags, RowsPlan,
    Strided,
};
use crate::ctx::Ctx;
use crate::scratch::Scratch;

/// Columns of a packed panel of B: two registers of sixteen lanes.
pub(super) const NR: usize = 32;
/// Rows of the main register tile.
const MR: usize = 12;
/// K block: a 12×KC panel of A (12 KiB) and a KC×32 panel of B (32 KiB) stay in L1.
const KC: usize = 256;
/// Column block: a KC×NC block of B (512 KiB) stays in L2.
const NC: usize = 512;
/// Row count per thread from which B is packed into contiguous panels when it was not
/// packed ahead: packing costs K·N copies against M·N·K multiply-adds.
const PACK_MIN_ROWS: usize = 16;
/// As [`PACK_MIN_ROWS`] for a B whose rows the kernel can read in place (unit column
/// stride): reading it in place costs nothing up front, so packing must be repaid by
/// more row tiles.
const PACK_MIN_ROWS_DENSE: usize = 64;

/// True when the CPU has AVX-512F (checked once by std, cached).
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// B packed once, in the order [`block`] visits it: for each NC column block, for each
/// K block, the [`NR`]-wide panels [`pack_b`] writes.
pub(super) fn pack_whole(b: Mat<'_, f32>) -> Vec<f32> {
    let (k, n) = (b.rows(), b.cols());
    let mut out = Vec::with_capacity(packed_len(k, n));
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for (pc, kc) in k_blocks(k, KC) {
            let at = out.len();
            out.resize(at + nc.div_ceil(NR) * NR * kc, 0.0);
            pack_b(b.rows_range(pc, kc).cols_range(jc, nc), &mut out[at..]);
        }
    }
    out
}

/// Elements of a `k×n` matrix packed by [`pack_whole`].
pub(super) fn packed_len(k: usize, n: usize) -> usize {
    // Every column block but the last is a multiple of NR wide.
    k * n.div_ceil(NR) * NR
}

/// `c = a·b` (f32, row-major `c`), every NaN canonical. Callers checked the shapes and
/// [`available`]; `pre`, when given, is `b` packed by [`pack_whole`].
pub(super) fn gemm(
    ctx: &Ctx,
    a: Mat<'_, f32>,
    b: Mat<'_, f32>,
    c: &mut [f32],
    pre: Option<&[f32]>,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    let threads = ctx.threads();
    // Equal row shares (row tiles balance within a share): rounding shares to whole
    // 12-row tiles would leave a thread idle on the few-row products of small layers.
    let per = m.div_ceil(threads);
    // A single row reads B in place, unless B's columns are not contiguous (a
    // transposed constant, as `Gemm` with `transB` has): then its panels packed once
    // beat a copy of all of B on every call.
    let pre = pre.filter(|p| (m > 1 || b.cs() != 1) && p.len() == packed_len(k, n));
    // A B with unit column stride is read in place unless many row tiles reuse it:
    // packing copies all of it, which only pays off then.
    let pack = pre.is_some() || (per >= PACK_MIN_ROWS && b.cs() != 1) || per >= PACK_MIN_ROWS_DENSE;
    // Without packing, the kernel loads sixteen consecutive columns of B: give it unit
    // column stride.
    let dense;
    let b = if pack || b.cs() == 1 {
        b
    } else {
        dense = b.to_row_major();
        match Mat::row_major(&dense, k, n) {
            Some(m) => m,
            None => return,
        }
    };
    if m == 1 && !pack {
        // A single row: split columns, 128 at a time, so every thread has work.
        let per = n.div_ceil(threads).div_ceil(128) * 128;
        ctx.for_each_chunk(c, per, |ci, chunk| {
            let j0 = ci * per;
            block(
                a,
                b.cols_range(j0, chunk.len()),
                chunk,
                chunk.len(),
                false,
                None,
                None,
            );
        });
    } else if let Some(pre) = pre.filter(|_| threads > 1 && per <= MR && n <= NC && n > NR) {
        // A few rows against a packed B, such as the late layers of a CNN (16
        // positions against 1152 × 128 weights): split B's panels, not the rows. Split
        // by rows, every thread would read all of B, and such products are bound by
        // that read. Each share goes to its own part of a buffer (its columns of `c`
        // are not contiguous), then into place.
        let panels = n.div_ceil(NR);
        let pp = panels.div_ceil(threads);
        let w = pp * NR;
        let mut shares = Scratch::with_len(panels.div_ceil(pp) * m * w, 0.0);
        ctx.for_each_chunk(&mut shares, m * w, |ci, chunk| {
            let first = ci * pp;
            let window = first..(first + pp).min(panels);
            block(a, b, chunk, w, true, Some(pre), Some(window));
        });
        for (ci, share) in shares.chunks(m * w).enumerate() {
            let j0 = ci * w;
            let wc = w.min(n - j0);
            for (row, src) in c.chunks_mut(n).zip(share.chunks(w)) {
                row[j0..j0 + wc].copy_from_slice(&src[..wc]);
            }
        }
    } else {
        ctx.for_each_chunk(c, per * n, |ci, chunk| {
            let r0 = ci * per;
            block(
                a.rows_range(r0, chunk.len() / n),
                b,
                chunk,
                n,
                pack,
                pre,
                None,
            );
        });
    }
}

/// Copies `b` (kc × nc, any strides) into the first `ceil(nc/NR)` [`NR`]-wide column
/// panels of `buf`, each kc × NR row-major, the last one zero-padded.
fn pack_b(b: Mat<'_, f32>, buf: &mut [f32]) {
    let (kc, nc) = (b.rows(), b.cols());
    let panels = nc.div_ceil(NR);
    // What `buf` held is overwritten: every value, and the zero padding of a last
    // panel narrower than NR.
    for (p, panel) in buf.chunks_mut(kc * NR).take(panels).enumerate() {
        let j0 = p * NR;
        let w = NR.min(nc - j0);
        if w < NR {
            panel.chunks_mut(NR).for_each(|row| row[w..].fill(0.0));
        }
        if b.cs() == 1 {
            let d = b.data();
            for (kk, row) in panel.chunks_mut(NR).enumerate() {
                let s = kk * b.rs() + j0;
                row[..w].copy_from_slice(&d[s..s + w]);
            }
        } else {
            for (kk, row) in panel.chunks_mut(NR).enumerate() {
                for (j, v) in row[..w].iter_mut().enumerate() {
                    *v = b.at(kk, j0 + j);
                }
            }
        }
    }
}

/// `c[0..a.rows, 0..b.cols] = a·b` where row `i` of `c` starts at `i*ldc`; `pre` is
/// all of `b` packed by [`pack_whole`] (then `pack` is set). With `window`, a range of
/// `pre`'s panels of a `b` of one column block (at most [`NC`] columns), only those
/// columns are computed, into `c` from its column 0.
#[allow(clippy::too_many_arguments)]
fn block(
    a: Mat<'_, f32>,
    b: Mat<'_, f32>,
    c: &mut [f32],
    ldc: usize,
    pack: bool,
    pre: Option<&[f32]>,
    window: Option<std::ops::Range<usize>>,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    if m == 0 || n == 0 || b.rows() != k || (!pack && b.cs() != 1) {
        return;
    }
    if window.is_some() && (pre.is_none() || n > NC) {
        return;
    }
    // The columns written: all of `b`'s, or the window's.
    let cols = match &window {
        Some(w) => (w.end * NR).min(n).saturating_sub(w.start * NR),
        None => n,
    };
    if cols == 0 {
        return;
    }
    // Every pointer below stays inside these bounds.
    if c.len() < (m - 1) * ldc + cols || ldc < cols {
        return;
    }
    // The largest block `pack_b` writes, when it packs here.
    let need = if pack && pre.is_none() {
        NC.min(n).div_ceil(NR) * NR * KC.min(k)
    } else {
        0
    };
    let mut buf = Scratch::with_len(need, 0.0);
    let mut pre_at = 0;
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for (pc, kc) in k_blocks(k, KC) {
            let first = pc == 0;
            let last = pc + kc == k;
            let bp = b.rows_range(pc, kc).cols_range(jc, nc);
            let len = nc.div_ceil(NR) * NR * kc;
            let Some(panels) = block_panels(pre, pre_at, len, pack, &mut buf, |p| pack_b(bp, p))
            else {
                return;
            };
            pre_at += len;
            // The window's panels, written from column 0 of `c` (`b` is one column
            // block then).
            let (panels, nc, c0) = match &window {
                Some(w) => match panels.get(w.start * kc * NR..w.end * kc * NR) {
                    Some(p) => (p, cols, 0),
                    None => return,
                },
                None => (panels, nc, jc),
            };
            for (ir, mr) in row_tiles(m, MR) {
                let ap = a.rows_range(ir, mr).cols_range(pc, kc);
                let cp = &mut c[ir * ldc + c0..];
                let f = Flags { first, last };
                // SAFETY: `ap`, `bp` are in-bounds views (Mat invariant) of mr×kc and
                // kc×nc (unit column stride unless packed); `panels` holds
                // ceil(nc/NR) panels of kc×NR; `cp` holds (mr-1)*ldc + nc elements
                // (checked above); the CPU has AVX-512F (`available`).
                unsafe {
                    if pack {
                        match mr {
                            12 => packed::<12>(ap, panels, nc, cp, ldc, f),
                            11 => packed::<11>(ap, panels, nc, cp, ldc, f),
                            10 => packed::<10>(ap, panels, nc, cp, ldc, f),
                            9 => packed::<9>(ap, panels, nc, cp, ldc, f),
                            8 => packed::<8>(ap, panels, nc, cp, ldc, f),
                            7 => packed::<7>(ap, panels, nc, cp, ldc, f),
                            6 => packed::<6>(ap, panels, nc, cp, ldc, f),
                            5 => packed::<5>(ap, panels, nc, cp, ldc, f),
                            4 => packed::<4>(ap, panels, nc, cp, ldc, f),
                            3 => packed::<3>(ap, panels, nc, cp, ldc, f),
                            2 => packed::<2>(ap, panels, nc, cp, ldc, f),
                            _ => packed::<1>(ap, panels, nc, cp, ldc, f),
                        }
                    } else {
                        match mr {
                            12 => strip::<12, 2>(ap, bp, cp, ldc, f),
                            11 => strip::<11, 2>(ap, bp, cp, ldc, f),
                            10 => strip::<10, 2>(ap, bp, cp, ldc, f),
                            9 => strip::<9, 3>(ap, bp, cp, ldc, f),
                            8 => strip::<8, 3>(ap, bp, cp, ldc, f),
                            7 => strip::<7, 3>(ap, bp, cp, ldc, f),
                            6 => strip::<6, 4>(ap, bp, cp, ldc, f),
                            5 => strip::<5, 4>(ap, bp, cp, ldc, f),
                            4 => strip::<4, 6>(ap, bp, cp, ldc, f),
                            3 => strip::<3, 8>(ap, bp, cp, ldc, f),
                            2 => strip::<2, 8>(ap, bp, cp, ldc, f),
                            _ => strip::<1, 8>(ap, bp, cp, ldc, f),
                        }
                    }
                }
            }
        }
    }
}

/// One row panel of `MR` rows across packed [`NR`]-wide panels of B.
///
/// # Safety
/// `a` is MR×kc, `buf` holds `ceil(nc/NR)` panels of kc×NR, `c` holds
/// `(MR-1)*ldc + nc` elements, and the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn packed<const MR: usize>(
    a: Mat<'_, f32>,
    buf: &[f32],
    nc: usize,
    c: &mut [f32],
    ldc: usize,
    f: Flags,
) {
    let kc = a.cols();
    let mut jr = 0;
    while jr < nc {
        let nv = NR.min(nc - jr);
        let bp = buf.as_ptr().add((jr / NR) * kc * NR);
        let cp = c.as_mut_ptr().add(jr);
        if nv == NR {
            tile::<MR, 2, false, _>(kc, a, Strided { p: bp, rs: NR }, cp, ldc, nv, f);
        } else {
            tile::<MR, 2, true, _>(kc, a, Strided { p: bp, rs: NR }, cp, ldc, nv, f);
        }
        jr += NR;
    }
}

/// One row panel of `MR` rows across all columns of `b`, `NV*16` columns at a time.
///
/// # Safety
/// `a` is MR×kc, `b` is kc×nc with unit column stride, `c` holds `(MR-1)*ldc + nc`
/// elements, and the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn strip<const MR: usize, const NV: usize>(
    a: Mat<'_, f32>,
    b: Mat<'_, f32>,
    c: &mut [f32],
    ldc: usize,
    f: Flags,
) {
    let (kc, nc) = (a.cols(), b.cols());
    let w = NV * 16;
    let mut jr = 0;
    while jr < nc {
        let nv = w.min(nc - jr);
        let bp = b.data().as_ptr().add(jr);
        let cp = c.as_mut_ptr().add(jr);
        if nv == w {
            tile::<MR, NV, false, _>(kc, a, Strided { p: bp, rs: b.rs() }, cp, ldc, nv, f);
        } else {
            tile::<MR, NV, true, _>(kc, a, Strided { p: bp, rs: b.rs() }, cp, ldc, nv, f);
        }
        jr += w;
    }
}

/// `c = a·b` with B given by its rows ([`RowsB`]; f32, row-major `c`, `a.rows() × b.n`),
/// every NaN canonical. The rows of B may overlap: a convolution's patches, read in
/// place from its input. Callers checked `a.cols() == b.offs.len()`,
/// `c.len() == a.rows() · b.n`, every row inside `b.data`, and [`available`].
pub(super) fn gemm_rows(ctx: &Ctx, a: Mat<'_, f32>, b: RowsB<'_, f32>, c: &mut [f32]) {
    // Split over threads, each share reads its own copy of the rows of B. On the
    // 2-core machine the benchmarks ran on, two shares reading one buffer each ran
    // 2.4 times as long as either alone (a 32-channel 3×3 convolution on 16×16: 43 µs
    // per 16-row share against 17 µs), with private copies 18–22 µs. The copy is one
    // pass over the padded input, which the product reads `rows / 12` times over.
    let plan = RowsPlan {
        mr: MR,
        kc: KC,
        private_copy: true,
    };
    rows_product(ctx, a, b, c, plan, |ap, b, cp, f| {
        // SAFETY: `rows_product` gives an in-bounds mr×kc view `ap`, this K block's
        // kc rows of B, every one inside its buffer, and `cp` holding the tile's `mr`
        // rows of `b.n`; the CPU has AVX-512F (`available`, checked by the
        // caller).
        unsafe {
            match ap.rows() {
                12 => rows_strip::<12, 2>(ap, b, cp, f),
                11 => rows_strip::<11, 2>(ap, b, cp, f),
                10 => rows_strip::<10, 2>(ap, b, cp, f),
                9 => rows_strip::<9, 3>(ap, b, cp, f),
                8 => rows_strip::<8, 3>(ap, b, cp, f),
                7 => rows_strip::<7, 3>(ap, b, cp, f),
                6 => rows_strip::<6, 4>(ap, b, cp, f),
                5 => rows_strip::<5, 4>(ap, b, cp, f),
                4 => rows_strip::<4, 6>(ap, b, cp, f),
                3 => rows_strip::<3, 8>(ap, b, cp, f),
                2 => rows_strip::<2, 8>(ap, b, cp, f),
                _ => rows_strip::<1, 8>(ap, b, cp, f),
            }
        }
    });
}

/// One row panel of `MR` rows of [`gemm_rows`] across all `n` columns, `NV*16` at a
/// time.
///
/// # Safety
/// `a` is MR×kc, `b` holds kc rows of `n`, all inside its `data`, `c` holds
/// `(MR-1)*n + n` elements, and the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn rows_strip<const MR: usize, const NV: usize>(
    a: Mat<'_, f32>,
    b: RowsB<'_, f32>,
    c: &mut [f32],
    f: Flags,
) {
    let (kc, n, w) = (a.cols(), b.n, NV * 16);
    indexed_panels(b, c, w, |b, cp, nv| {
        // SAFETY: this function's contract, for the panel at `cp`.
        unsafe {
            if nv == w {
                tile::<MR, NV, false, _>(kc, a, b, cp, n, nv, f);
            } else {
                tile::<MR, NV, true, _>(kc, a, b, cp, n, nv, f);
            }
        }
    });
}

/// The lane mask of register `v` of a tile whose first `nv` columns are real.
#[inline(always)]
fn lane_mask(v: usize, nv: usize) -> __mmask16 {
    let lanes = nv.saturating_sub(v * 16).min(16);
    ((1u32 << lanes) - 1) as __mmask16
}

/// An MR × (NV·16) register tile; `MASK` limits columns to the first `nv`.
///
/// # Safety
/// As [`strip`], with `b`/`c` pointing at the tile's first column.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn tile<const MR: usize, const NV: usize, const MASK: bool, B: BRows>(
    kc: usize,
    a: Mat<'_, f32>,
    b: B,
    c: *mut f32,
    ldc: usize,
    nv: usize,
    f: Flags,
) {
    let mut masks = [0xffff as __mmask16; NV];
    if MASK {
        for (v, m) in masks.iter_mut().enumerate() {
            *m = lane_mask(v, nv);
        }
    }
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    if !f.first {
        for (r, row) in acc.iter_mut().enumerate() {
            for (v, x) in row.iter_mut().enumerate() {
                let p = c.wrapping_add(r * ldc + v * 16);
                *x = if MASK {
                    _mm512_maskz_loadu_ps(masks[v], p)
                } else {
                    _mm512_loadu_ps(p)
                };
            }
        }
    }
    let ad = a.data().as_ptr();
    let (rsa, csa) = (a.rs(), a.cs());
    for k in 0..kc {
        let bk = b.row(k);
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = if MASK {
                _mm512_maskz_loadu_ps(masks[v], bk.wrapping_add(v * 16))
            } else {
                _mm512_loadu_ps(bk.wrapping_add(v * 16))
            };
        }
        let ak = ad.add(k * csa);
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*ak.add(r * rsa));
            for (v, x) in row.iter_mut().enumerate() {
                *x = _mm512_fmadd_ps(av, bv[v], *x);
            }
        }
    }
    let nan = _mm512_set1_ps(f32::from_bits(CANONICAL_NAN_F32));
    for (r, row) in acc.iter().enumerate() {
        for (v, x) in row.iter().enumerate() {
            let p = c.wrapping_add(r * ldc + v * 16);
            let x = if f.last {
                let is_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(*x, *x);
                _mm512_mask_mov_ps(*x, is_nan, nan)
            } else {
                *x
            };
            if MASK {
                _mm512_mask_storeu_ps(p, masks[v], x);
            } else {
                _mm512_storeu_ps(p, x);
            }
        }
    }
}
