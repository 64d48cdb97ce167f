//! AVX-512 VNNI kernel of the quantized integer matrix product (see [`super::qgemm`]).
//!
//! This module needs `unsafe` for the SIMD intrinsics and the raw-pointer loads of the
//! inner loop; [`gemm`] checks every buffer length once before any pointer is formed.
//!
//! `vpdpbusd` multiplies four u8 values of A by four i8 values of B and adds the four
//! products to an i32 lane, wrapping, never saturating: exact modulo 2³². A register
//! tile is [`MR`] rows × [`NR`] columns (two zmm registers per row); per group of four
//! `k` it broadcasts four bytes of a row of A and multiplies them with B packed so that
//! lane `j` of a register holds `b[4q..4q+4, j]`.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::qgemm::QData;
use crate::ctx::Ctx;

/// Columns per packed panel of B (two registers of sixteen i32 lanes).
pub(super) const NR: usize = 32;
/// Rows per register tile.
const MR: usize = 8;

/// True when the CPU has AVX-512 F, BW and VNNI (checked once by std, cached).
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// Packs B (`k×n`, element `i` row-major given by `b(i)`, already i8) into panels of
/// [`NR`] columns; within a panel, group `q` of four rows is `NR` runs of four bytes,
/// `b[4q..4q+4, j]`. Missing rows and columns are zero, which adds nothing.
pub(super) fn pack_b(k: usize, n: usize, b: &dyn Fn(usize) -> i8) -> Vec<i8> {
    pack_b_groups(k, k.div_ceil(4), n, b)
}

/// [`pack_b`] with `kq` ≥ ⌈k/4⌉ groups of four rows per panel (the groups past the
/// last row zero).
pub(super) fn pack_b_groups(k: usize, kq: usize, n: usize, b: &dyn Fn(usize) -> i8) -> Vec<i8> {
    let panels = n.div_ceil(NR);
    let mut out = vec![0i8; panels * kq * NR * 4];
    if out.is_empty() {
        return out;
    }
    for (p, panel) in out.chunks_mut(kq * NR * 4).enumerate() {
        let w = NR.min(n - p * NR);
        for kk in 0..k {
            let row = &mut panel[(kk / 4) * NR * 4..];
            for c in 0..w {
                row[c * 4 + kk % 4] = b(kk * n + p * NR + c);
            }
        }
    }
    out
}

/// A as u8 rows of `kp` bytes (`k` rounded up, zero-padded), with each row's sum and
/// its zero point in the u8 domain.
pub(super) struct PackedA {
    pub(super) data: Vec<u8>,
    pub(super) kp: usize,
    pub(super) sums: Vec<i32>,
    pub(super) zps: Vec<i32>,
}

/// Packs A with `k` rounded up to a multiple of `k_align` and the rows to a multiple of
/// `m_align`, both padded with zeros (padding rows have no sums: they are never read
/// back).
pub(super) fn pack_a(
    m: usize,
    k: usize,
    a: QData<'_>,
    za: &[i32],
    k_align: usize,
    m_align: usize,
) -> PackedA {
    let kp = k.div_ceil(k_align) * k_align;
    let mut data = vec![0u8; m.div_ceil(m_align) * m_align * kp];
    let mut sums = vec![0i32; m];
    let mut zps = vec![0i32; m];
    let shift = match a {
        QData::U8(_) => 0,
        QData::I8(_) => 128,
    };
    for i in 0..m {
        let row = &mut data[i * kp..i * kp + k];
        match a {
            QData::U8(v) => row.copy_from_slice(&v[i * k..(i + 1) * k]),
            QData::I8(v) => {
                for (o, &x) in row.iter_mut().zip(&v[i * k..(i + 1) * k]) {
                    *o = (x as u8) ^ 0x80;
                }
            }
        }
        sums[i] = row.iter().fold(0i32, |s, &x| s.wrapping_add(i32::from(x)));
        zps[i] = (if za.len() == 1 { za[0] } else { za[i] }).wrapping_add(shift);
    }
    PackedA {
        data,
        kp,
        sums,
        zps,
    }
}

/// B as the kernel takes it: `panels` packed by [`pack_b`] (or by the AMX kernel's
/// `pack_b`, which pads `k` further with zeros), `zb` and `csadj` (B's zero points and
/// adjusted column sums, see [`super::qgemm`]) padded to whole panels.
pub(super) struct Operands<'a> {
    pub(super) panels: &'a [i8],
    pub(super) zb: &'a [i32],
    pub(super) csadj: &'a [i32],
    /// What the panels' `k` is padded to: 4, or the AMX kernel's tile step.
    pub(super) k_align: usize,
}

/// `out = (A − za)·(B − zb)` with B prepared as `v`. The caller checked the shapes of
/// `a`, `za` and `out`.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    ctx: &Ctx,
    m: usize,
    k: usize,
    n: usize,
    a: QData<'_>,
    za: &[i32],
    v: &Operands<'_>,
    out: &mut [i32],
) {
    let (panels, zb, csadj) = (v.panels, v.zb, v.csadj);
    if v.k_align == 0 || !v.k_align.is_multiple_of(4) {
        return;
    }
    let kq = k.div_ceil(v.k_align) * v.k_align / 4;
    let np = n.div_ceil(NR);
    if out.len() != m * n || panels.len() != np * kq * NR * 4 || zb.len() != np * NR {
        return;
    }
    if csadj.len() != np * NR {
        return;
    }
    // Zero columns of A up to the panels' padding add nothing.
    let pa = pack_a(m, k, a, za, v.k_align, 1);
    let b = Panels {
        data: panels,
        kq,
        n,
        zb,
        csadj,
    };
    let threads = ctx.threads();
    if m >= 2 * MR * threads || threads == 1 {
        // Split rows: each task writes whole rows of `out`.
        let per = m.div_ceil(threads).div_ceil(MR) * MR;
        ctx.for_each_chunk(out, per * n, |ci, chunk| {
            let r0 = ci * per;
            rows(&pa, r0, chunk.len() / n, &b, 0, np, chunk, n);
        });
    } else {
        // Few rows: split panels of columns, each task into its own block.
        let per = np.div_ceil(threads);
        let blocks = ctx.map_range(np.div_ceil(per), |t| {
            let (p0, p1) = (t * per, ((t + 1) * per).min(np));
            let (c0, c1) = (p0 * NR, (p1 * NR).min(n));
            let mut blk = vec![0i32; m * (c1 - c0)];
            rows(&pa, 0, m, &b, p0, p1, &mut blk, c1 - c0);
            (c0, c1, blk)
        });
        for (c0, c1, blk) in blocks {
            let w = c1 - c0;
            for (i, row) in blk.chunks(w.max(1)).enumerate().take(m) {
                out[i * n + c0..i * n + c1].copy_from_slice(row);
            }
        }
    }
}

struct Panels<'a> {
    data: &'a [i8],
    kq: usize,
    n: usize,
    zb: &'a [i32],
    csadj: &'a [i32],
}

/// Rows `r0..r0+nrows` of the product over panels `p0..p1`, into `c` whose rows are
/// `ldc` apart and whose column 0 is panel `p0`'s first column.
#[allow(clippy::too_many_arguments)]
fn rows(
    a: &PackedA,
    r0: usize,
    nrows: usize,
    b: &Panels<'_>,
    p0: usize,
    p1: usize,
    c: &mut [i32],
    ldc: usize,
) {
    let width = (p1 * NR).min(b.n) - p0 * NR;
    if nrows == 0 || width == 0 || ldc < width || c.len() < (nrows - 1) * ldc + width {
        return;
    }
    if a.data.len() < (r0 + nrows) * a.kp || a.sums.len() < r0 + nrows {
        return;
    }
    let panel_len = b.kq * NR * 4;
    for p in p0..p1 {
        let w = NR.min(b.n - p * NR);
        let bp = &b.data[p * panel_len..(p + 1) * panel_len];
        let cols = (p - p0) * NR;
        let mut i = 0;
        while i < nrows {
            let r = (nrows - i).min(MR);
            let row = r0 + i;
            let t = Tile {
                a: &a.data[row * a.kp..(row + r) * a.kp],
                kp: a.kp,
                sums: &a.sums[row..row + r],
                zps: &a.zps[row..row + r],
                b: bp,
                kq: b.kq,
                zb: &b.zb[p * NR..(p + 1) * NR],
                csadj: &b.csadj[p * NR..(p + 1) * NR],
            };
            let cp = &mut c[i * ldc + cols..];
            // SAFETY: `t.a` holds `r` rows of `kp ≥ 4·kq` bytes, `t.b` a panel of
            // `kq` groups of NR×4 bytes, `zb`/`csadj` NR values, `t.sums`/`t.zps` `r`
            // values; `cp` holds `(r−1)·ldc + w` elements (checked above: rows
            // `i..i+r` and columns `cols..cols+w` lie inside `c`); the CPU has
            // AVX-512 F/BW/VNNI (`available`, checked when B was packed).
            unsafe {
                match r {
                    8 => tile::<8>(&t, cp, ldc, w),
                    7 => tile::<7>(&t, cp, ldc, w),
                    6 => tile::<6>(&t, cp, ldc, w),
                    5 => tile::<5>(&t, cp, ldc, w),
                    4 => tile::<4>(&t, cp, ldc, w),
                    3 => tile::<3>(&t, cp, ldc, w),
                    2 => tile::<2>(&t, cp, ldc, w),
                    _ => tile::<1>(&t, cp, ldc, w),
                }
            }
            i += r;
        }
    }
}

struct Tile<'a> {
    a: &'a [u8],
    kp: usize,
    sums: &'a [i32],
    zps: &'a [i32],
    b: &'a [i8],
    kq: usize,
    zb: &'a [i32],
    csadj: &'a [i32],
}

/// An `R × NR` register tile: the dot products, then the zero-point terms, stored to
/// the first `w` columns of `R` rows of `c`.
///
/// # Safety
/// As stated at the call in [`rows`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const R: usize>(t: &Tile<'_>, c: &mut [i32], ldc: usize, w: usize) {
    let mut acc = [[_mm512_setzero_si512(); 2]; R];
    let ap = t.a.as_ptr();
    let bp = t.b.as_ptr();
    for q in 0..t.kq {
        let b0 = _mm512_loadu_si512(bp.add(q * NR * 4) as *const _);
        let b1 = _mm512_loadu_si512(bp.add(q * NR * 4 + 64) as *const _);
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_epi32(std::ptr::read_unaligned(
                ap.add(r * t.kp + q * 4) as *const i32
            ));
            row[0] = _mm512_dpbusd_epi32(row[0], av, b0);
            row[1] = _mm512_dpbusd_epi32(row[1], av, b1);
        }
    }
    // c = dot − zb·Σa − za·(Σb − K·zb), lane by lane, wrapping.
    let zb = [
        _mm512_loadu_si512(t.zb.as_ptr() as *const _),
        _mm512_loadu_si512(t.zb.as_ptr().add(16) as *const _),
    ];
    let cs = [
        _mm512_loadu_si512(t.csadj.as_ptr() as *const _),
        _mm512_loadu_si512(t.csadj.as_ptr().add(16) as *const _),
    ];
    let masks: [__mmask16; 2] = [
        if w >= 16 { 0xffff } else { (1u16 << w) - 1 },
        if w >= 32 {
            0xffff
        } else if w > 16 {
            (1u16 << (w - 16)) - 1
        } else {
            0
        },
    ];
    let cp = c.as_mut_ptr();
    for (r, row) in acc.iter().enumerate() {
        let s = _mm512_set1_epi32(t.sums[r]);
        let z = _mm512_set1_epi32(t.zps[r]);
        for (v, &dot) in row.iter().enumerate() {
            let x = _mm512_sub_epi32(dot, _mm512_mullo_epi32(zb[v], s));
            let x = _mm512_sub_epi32(x, _mm512_mullo_epi32(z, cs[v]));
            // Lanes past `w` are masked off: nothing is written there.
            _mm512_mask_storeu_epi32(cp.wrapping_add(r * ldc + v * 16), masks[v], x);
        }
    }
}
