//! AVX2+FMA register-tile kernel for the f32 matrix product.
//!
//! This module needs `unsafe` for the SIMD intrinsics and raw-pointer loads in the
//! inner loop; everything is bounds-checked once per call through [`Mat`]'s
//! construction invariant and the explicit checks in [`gemm`] before any pointer is
//! formed.
//!
//! Each output element lives in one lane of one accumulator register. Per step `k`
//! the kernel broadcasts `a[i,k]`, loads eight consecutive `b[k,j]` and does one
//! `vfmadd` per register — exactly the reference's `acc = fma(a, b, acc)` with `k`
//! increasing. K is processed in blocks of at most [`KC`]; between blocks the
//! accumulator is stored to and reloaded from `c` unchanged (an f32 store is exact),
//! so blocking does not alter the sequence. After the last block every NaN lane is
//! replaced by the canonical NaN as it is stored.
//!
//! Register budget: the main tile is [`MR`] = 6 rows × 16 columns, 12 accumulators,
//! two registers of B and one broadcast of A, of the 16 ymm registers.
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

/// Rows of the main register tile.
const MR: usize = 6;
/// K block: a 6×KC panel of A and a KC×16 panel of B stay in L1.
const KC: usize = 256;
/// Column block: a KC×NC block of B stays in L2.
const NC: usize = 512;

/// True when the CPU has AVX2 and FMA (checked once by std, cached).
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Row count from which B is packed into contiguous 16-wide panels: packing costs
/// K·N copies against M·N·K multiply-adds, and avoids cache-set conflicts when B's
/// rows are a large power of two apart.
const PACK_MIN_ROWS: usize = 16;

/// B packed once, in the order [`block`] visits it: for each NC column block, for each
/// K block ([`k_blocks`]), the 16-wide panels [`pack_b`] writes.
pub(super) fn pack_whole(b: Mat<'_, f32>) -> Vec<f32> {
    let (k, n) = (b.rows(), b.cols());
    let mut out = Vec::with_capacity(k * n.div_ceil(16) * 16);
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for (pc, kc) in k_blocks(k, KC) {
            let at = out.len();
            out.resize(at + nc.div_ceil(16) * 16 * kc, 0.0);
            pack_b(b.rows_range(pc, kc).cols_range(jc, nc), &mut out[at..]);
        }
    }
    out
}

/// `c = a·b` (f32, row-major `c`). Callers checked the shapes and [`available`];
/// `pre`, when given, is `b` packed by [`pack_whole`].
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
    let per = m.div_ceil(threads).div_ceil(MR) * MR;
    // A single row reads B plainly, eight accumulators wide, unless B's columns are
    // not contiguous (a transposed constant, as `Gemm` with `transB` has): then its
    // panels packed once beat a copy of all of B on every call.
    let pre = pre.filter(|p| (m > 1 || b.cs() != 1) && p.len() == k * n.div_ceil(16) * 16);
    let pack = pre.is_some() || per >= PACK_MIN_ROWS;
    // Without packing, the kernel loads eight consecutive columns of B: give it unit
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
        // A single row: split columns, 64 at a time, so every thread has work.
        let per = n.div_ceil(threads).div_ceil(64) * 64;
        ctx.for_each_chunk(c, per, |ci, chunk| {
            let j0 = ci * per;
            block(
                a,
                b.cols_range(j0, chunk.len()),
                chunk,
                chunk.len(),
                false,
                None,
            );
        });
    } else {
        ctx.for_each_chunk(c, per * n, |ci, chunk| {
            let r0 = ci * per;
            block(a.rows_range(r0, chunk.len() / n), b, chunk, n, pack, pre);
        });
    }
}

/// Copies `b` (kc × nc, any strides) into the first `ceil(nc/16)` 16-wide column
/// panels of `buf`, each kc × 16 row-major, the last one zero-padded.
fn pack_b(b: Mat<'_, f32>, buf: &mut [f32]) {
    let (kc, nc) = (b.rows(), b.cols());
    let panels = nc.div_ceil(16);
    // What `buf` held is overwritten: every value, and the zero padding of a last
    // panel narrower than 16.
    for (p, panel) in buf.chunks_mut(kc * 16).take(panels).enumerate() {
        let j0 = p * 16;
        let w = 16.min(nc - j0);
        if w < 16 {
            panel.chunks_mut(16).for_each(|row| row[w..].fill(0.0));
        }
        if b.cs() == 1 {
            let d = b.data();
            for (kk, row) in panel.chunks_mut(16).enumerate() {
                let s = kk * b.rs() + j0;
                row[..w].copy_from_slice(&d[s..s + w]);
            }
        } else {
            for (kk, row) in panel.chunks_mut(16).enumerate() {
                for (j, v) in row[..w].iter_mut().enumerate() {
                    *v = b.at(kk, j0 + j);
                }
            }
        }
    }
}

/// `c[0..a.rows, 0..b.cols] = a·b` where row `i` of `c` starts at `i*ldc`; `pre` is
/// all of `b` packed by [`pack_whole`] (then `pack` is set).
fn block(
    a: Mat<'_, f32>,
    b: Mat<'_, f32>,
    c: &mut [f32],
    ldc: usize,
    pack: bool,
    pre: Option<&[f32]>,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    if m == 0 || n == 0 || b.rows() != k || (!pack && b.cs() != 1) {
        return;
    }
    // Every pointer below stays inside these bounds.
    if c.len() < (m - 1) * ldc + n || ldc < n {
        return;
    }
    // The largest block `pack_b` writes, when it packs here.
    let need = if pack && pre.is_none() {
        NC.min(n).div_ceil(16) * 16 * KC.min(k)
    } else {
        0
    };
    let mut buf = Scratch::with_len(need, 0.0);
    let mut pre_at = 0;
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for (pc, kc) in k_blocks(k, KC) {
            let f = Flags {
                first: pc == 0,
                last: pc + kc == k,
            };
            let bp = b.rows_range(pc, kc).cols_range(jc, nc);
            let len = nc.div_ceil(16) * 16 * kc;
            let Some(panels) = block_panels(pre, pre_at, len, pack, &mut buf, |p| pack_b(bp, p))
            else {
                return;
            };
            pre_at += len;
            for (ir, mr) in row_tiles(m, MR) {
                let ap = a.rows_range(ir, mr).cols_range(pc, kc);
                let cp = &mut c[ir * ldc + jc..];
                // SAFETY: `ap`, `bp` are in-bounds views (Mat invariant) of mr×kc and
                // kc×nc (unit column stride unless packed); `panels` holds
                // ceil(nc/16) panels of kc×16; `cp` holds (mr-1)*ldc + nc elements
                // (checked above); the CPU has AVX2+FMA (`available`).
                unsafe {
                    if pack {
                        match mr {
                            6 => packed::<6>(ap, panels, nc, cp, ldc, f),
                            5 => packed::<5>(ap, panels, nc, cp, ldc, f),
                            4 => packed::<4>(ap, panels, nc, cp, ldc, f),
                            3 => packed::<3>(ap, panels, nc, cp, ldc, f),
                            2 => packed::<2>(ap, panels, nc, cp, ldc, f),
                            _ => packed::<1>(ap, panels, nc, cp, ldc, f),
                        }
                    } else {
                        match mr {
                            6 => strip::<6, 2>(ap, bp, cp, ldc, f),
                            5 => strip::<5, 2>(ap, bp, cp, ldc, f),
                            4 => strip::<4, 3>(ap, bp, cp, ldc, f),
                            3 => strip::<3, 4>(ap, bp, cp, ldc, f),
                            2 => strip::<2, 6>(ap, bp, cp, ldc, f),
                            _ => strip::<1, 8>(ap, bp, cp, ldc, f),
                        }
                    }
                }
            }
        }
    }
}

/// One row panel of `MR` rows across packed 16-wide panels of B.
///
/// # Safety
/// `a` is MR×kc, `buf` holds `ceil(nc/16)` panels of kc×16, `c` holds
/// `(MR-1)*ldc + nc` elements, and the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
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
        let nv = 16.min(nc - jr);
        let b = Strided {
            p: buf.as_ptr().add((jr / 16) * kc * 16),
            rs: 16,
        };
        let cp = c.as_mut_ptr().add(jr);
        // The panels are zero-padded to 16 columns: only C is masked.
        if nv == 16 {
            tile::<MR, 2, false, true, _>(kc, a, b, cp, ldc, nv, f);
        } else {
            tile::<MR, 2, true, true, _>(kc, a, b, cp, ldc, nv, f);
        }
        jr += 16;
    }
}

/// One row panel of `MR` rows across all columns of `b`, `NV*8` columns at a time.
///
/// # Safety
/// `a` is MR×kc, `b` is kc×nc with unit column stride, `c` holds `(MR-1)*ldc + nc`
/// elements, and the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn strip<const MR: usize, const NV: usize>(
    a: Mat<'_, f32>,
    b: Mat<'_, f32>,
    c: &mut [f32],
    ldc: usize,
    f: Flags,
) {
    let (kc, nc) = (a.cols(), b.cols());
    let w = NV * 8;
    let mut jr = 0;
    while jr < nc {
        let nv = w.min(nc - jr);
        let bp = Strided {
            p: b.data().as_ptr().add(jr),
            rs: b.rs(),
        };
        let cp = c.as_mut_ptr().add(jr);
        if nv == w {
            tile::<MR, NV, false, false, _>(kc, a, bp, cp, ldc, nv, f);
        } else {
            tile::<MR, NV, true, false, _>(kc, a, bp, cp, ldc, nv, f);
        }
        jr += w;
    }
}

/// `c = a·b` with B given by its rows ([`RowsB`]; f32, row-major `c`, `a.rows() × b.n`),
/// every NaN canonical. The rows of B may overlap: a convolution's patches, read in
/// place from its input, with neither a copy nor packing. Callers checked
/// `a.cols() == b.offs.len()`, `c.len() == a.rows() · b.n`, every row inside `b.data`,
/// and [`available`].
pub(super) fn gemm_rows(ctx: &Ctx, a: Mat<'_, f32>, b: RowsB<'_, f32>, c: &mut [f32]) {
    let plan = RowsPlan {
        mr: MR,
        kc: KC,
        private_copy: false,
    };
    rows_product(ctx, a, b, c, plan, |ap, b, cp, f| {
        // SAFETY: `rows_product` gives an in-bounds mr×kc view `ap`, this K block's
        // kc rows of B, every one inside its buffer, and `cp` holding the tile's `mr`
        // rows of `b.n`; the CPU has AVX2+FMA (`available`, checked by the
        // caller).
        unsafe {
            match ap.rows() {
                6 => rows_strip::<6, 2>(ap, b, cp, f),
                5 => rows_strip::<5, 2>(ap, b, cp, f),
                4 => rows_strip::<4, 3>(ap, b, cp, f),
                3 => rows_strip::<3, 4>(ap, b, cp, f),
                2 => rows_strip::<2, 6>(ap, b, cp, f),
                _ => rows_strip::<1, 8>(ap, b, cp, f),
            }
        }
    });
}

/// One row panel of `MR` rows of [`gemm_rows`] across all `n` columns, `NV*8` at a
/// time.
///
/// # Safety
/// `a` is MR×kc, `b` holds kc rows of `n`, all inside its `data`, `c` holds
/// `(MR-1)*n + n` elements, and the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_strip<const MR: usize, const NV: usize>(
    a: Mat<'_, f32>,
    b: RowsB<'_, f32>,
    c: &mut [f32],
    f: Flags,
) {
    let (kc, n, w) = (a.cols(), b.n, NV * 8);
    indexed_panels(b, c, w, |b, cp, nv| {
        // SAFETY: this function's contract, for the panel at `cp`.
        unsafe {
            if nv == w {
                tile::<MR, NV, false, false, _>(kc, a, b, cp, n, nv, f);
            } else {
                tile::<MR, NV, true, false, _>(kc, a, b, cp, n, nv, f);
            }
        }
    });
}

/// An MR × (NV·8) register tile; `MASK` limits columns to the first `nv`, for C, and
/// for B unless `PAD` says its rows are readable across all NV·8 columns (packed
/// panels, zero-padded).
///
/// A masked load costs several plain ones on AVX2 machines (AMD's in particular), so
/// in a masked tile only the vector that straddles `nv` is loaded masked, those wholly
/// inside load plainly, and those wholly beyond it are neither loaded nor computed: a
/// 10-wide product (a classifier's last layer) took 17 µs for 5,120 multiply-adds when
/// every vector of a 64-wide tile was masked. Each column's steps are the same either
/// way.
///
/// # Safety
/// As [`strip`], with `b`/`c` pointing at the tile's first column.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn tile<const MR: usize, const NV: usize, const MASK: bool, const PAD: bool, B: BRows>(
    kc: usize,
    a: Mat<'_, f32>,
    b: B,
    c: *mut f32,
    ldc: usize,
    nv: usize,
    f: Flags,
) {
    let mut masks = [_mm256_setzero_si256(); NV];
    if MASK {
        for (v, m) in masks.iter_mut().enumerate() {
            let base = (v * 8) as i32;
            let lanes = _mm256_setr_epi32(
                base,
                base + 1,
                base + 2,
                base + 3,
                base + 4,
                base + 5,
                base + 6,
                base + 7,
            );
            *m = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv as i32), lanes);
        }
    }
    let mut acc = [[_mm256_setzero_ps(); NV]; MR];
    if !f.first {
        for (r, row) in acc.iter_mut().enumerate() {
            for (v, x) in row.iter_mut().enumerate() {
                let p = c.wrapping_add(r * ldc + v * 8);
                *x = if MASK {
                    _mm256_maskload_ps(p, masks[v])
                } else {
                    _mm256_loadu_ps(p)
                };
            }
        }
    }
    let ad = a.data().as_ptr();
    let (rsa, csa) = (a.rs(), a.cs());
    // Vectors wholly inside the columns, and those holding any.
    let (full, live) = if MASK {
        (nv / 8, nv.div_ceil(8))
    } else {
        (NV, NV)
    };
    for k in 0..kc {
        let bk = b.row(k);
        let mut bv = [_mm256_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            if !MASK || PAD || v < full {
                *x = _mm256_loadu_ps(bk.wrapping_add(v * 8));
            } else if v < live {
                *x = _mm256_maskload_ps(bk.wrapping_add(v * 8), masks[v]);
            }
        }
        let ak = ad.add(k * csa);
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm256_set1_ps(*ak.add(r * rsa));
            for (v, x) in row.iter_mut().enumerate() {
                if !MASK || v < live {
                    *x = _mm256_fmadd_ps(av, bv[v], *x);
                }
            }
        }
    }
    let nan = _mm256_set1_ps(f32::from_bits(CANONICAL_NAN_F32));
    for (r, row) in acc.iter().enumerate() {
        for (v, x) in row.iter().enumerate() {
            let p = c.wrapping_add(r * ldc + v * 8);
            let x = if f.last {
                _mm256_blendv_ps(*x, nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(*x, *x))
            } else {
                *x
            };
            if MASK {
                _mm256_maskstore_ps(p, masks[v], x);
            } else {
                _mm256_storeu_ps(p, x);
            }
        }
    }
}
