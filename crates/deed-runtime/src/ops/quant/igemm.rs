//! Integer matrix product `C[m][n] = Σ_k A[m][k] · B[k][n]` on `i16` operands with
//! `i32` accumulators, the core of MatMulInteger, QLinearMatMul, ConvInteger and
//! QLinearConv (operands arrive with their zero points already subtracted).
//!
//! Accumulation wraps on `i32` overflow. Wrapping addition is associative and
//! commutative, so every summation order gives the same bits: the fast kernel may
//! pair, block and vectorize the sum freely and still equals the reference exactly.
//! Each product of two `i16` fits an `i32` (|p| ≤ 2³⁰), so products never wrap.

// AVX2 intrinsics need `unsafe`; it is confined to `avx2::panel`, whose loads are
// from slices whose lengths are checked right before.
#![allow(unsafe_code)]

use crate::ctx::Ctx;

/// Columns per packed panel of `B` (two AVX2 registers of eight `i32` lanes).
const NR: usize = 16;

/// The scalar reference: for each output, sum over `k` in increasing order.
pub fn gemm_reference(m: usize, n: usize, k: usize, a: &[i16], b: &[i16], out: &mut [i32]) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0i32;
            for p in 0..k {
                acc = acc.wrapping_add(i32::from(a[i * k + p]) * i32::from(b[p * n + j]));
            }
            out[i * n + j] = acc;
        }
    }
}

/// `out = A · B` (`A` is `m×k`, `B` is `k×n`, all row-major). Bit-identical to
/// [`gemm_reference`] for every input and thread count.
pub fn gemm(m: usize, n: usize, k: usize, a: &[i16], b: &[i16], out: &mut [i32], ctx: &Ctx) {
    debug_assert!(a.len() >= m * k && b.len() >= k * n && out.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if ctx.reference() || k == 0 {
        gemm_reference(m, n, k, a, b, out);
        return;
    }
    gemm_packed(m, n, k, a, &pack_b(n, k, b), out, ctx);
}

/// [`gemm`] with `B` already packed by [`pack_b`] (a constant operand packed once).
pub(crate) fn gemm_packed(
    m: usize,
    n: usize,
    k: usize,
    a: &[i16],
    packed: &[i16],
    out: &mut [i32],
    ctx: &Ctx,
) {
    let kp = k.div_ceil(2);
    let panels = n.div_ceil(NR);
    if m == 0 || n == 0 || a.len() < m * k || out.len() < m * n {
        return;
    }
    if k == 0 {
        out[..m * n].fill(0);
        return;
    }
    if packed.len() < panels * kp * 2 * NR {
        return;
    }
    let out = &mut out[..m * n];
    // Rows per chunk: enough work per task to amortize scheduling, and at least one
    // group of four rows, which share each load of a `B` panel.
    let rows = (32768 / (n * kp).max(1)).clamp(4, 64);
    ctx.for_each_chunk(out, rows * n, |ci, chunk| {
        let r0 = ci * rows;
        let nrows = chunk.len() / n;
        let mut apair = vec![0i32; 4 * kp];
        let mut r = 0;
        while r < nrows {
            let g = (nrows - r).min(4);
            for t in 0..g {
                let row = r0 + r + t;
                pack_a_row(&a[row * k..(row + 1) * k], &mut apair[t * kp..(t + 1) * kp]);
            }
            for p in 0..panels {
                let bp = &packed[p * kp * 2 * NR..(p + 1) * kp * 2 * NR];
                let mut acc = [[0i32; NR]; 4];
                if g == 4 {
                    panel4(&apair, kp, bp, &mut acc);
                } else {
                    for (t, at) in acc.iter_mut().enumerate().take(g) {
                        panel(&apair[t * kp..(t + 1) * kp], bp, at);
                    }
                }
                let c0 = p * NR;
                let w = NR.min(n - c0);
                for (t, row) in acc.iter().enumerate().take(g) {
                    let o = (r + t) * n + c0;
                    chunk[o..o + w].copy_from_slice(&row[..w]);
                }
            }
            r += g;
        }
    });
}

/// Four rows (packed one after another, `kp` words each) times one packed panel.
fn panel4(apair: &[i32], kp: usize, bp: &[i16], acc: &mut [[i32; NR]; 4]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            avx2::panel4(apair, kp, bp, acc);
            return;
        }
    }
    for (t, a) in acc.iter_mut().enumerate() {
        panel_portable(&apair[t * kp..(t + 1) * kp], bp, a);
    }
}

/// Packs `B` into panels of [`NR`] columns; within a panel, for each pair of rows
/// `(2q, 2q+1)`, the values of each column are adjacent: `b[2q][c], b[2q+1][c]`.
/// Missing rows (odd `k`) and columns (partial panel) are zero.
pub(crate) fn pack_b(n: usize, k: usize, b: &[i16]) -> Vec<i16> {
    let kp = k.div_ceil(2);
    let panels = n.div_ceil(NR);
    let mut out = vec![0i16; panels * kp * 2 * NR];
    for p in 0..panels {
        let base = p * kp * 2 * NR;
        for row in 0..k {
            let q = row / 2;
            let half = row % 2;
            for c in 0..NR.min(n - p * NR) {
                out[base + q * 2 * NR + c * 2 + half] = b[row * n + p * NR + c];
            }
        }
    }
    out
}

/// Packs one row of `A` as `i32` words holding `(a[2q], a[2q+1])` in the low and
/// high halves, the layout `madd` pairs with the packed `B`.
fn pack_a_row(row: &[i16], out: &mut [i32]) {
    for (q, o) in out.iter_mut().enumerate() {
        let lo = row.get(2 * q).copied().unwrap_or(0) as u16 as u32;
        let hi = row.get(2 * q + 1).copied().unwrap_or(0) as u16 as u32;
        *o = (lo | (hi << 16)) as i32;
    }
}

/// One row times one packed panel.
fn panel(apair: &[i32], bp: &[i16], acc: &mut [i32; NR]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            avx2::panel(apair, bp, acc);
            return;
        }
    }
    panel_portable(apair, bp, acc);
}

fn panel_portable(apair: &[i32], bp: &[i16], acc: &mut [i32; NR]) {
    for (q, &ap) in apair.iter().enumerate() {
        let a0 = i32::from(ap as i16);
        let a1 = i32::from((ap >> 16) as i16);
        let row = &bp[q * 2 * NR..(q + 1) * 2 * NR];
        for (c, slot) in acc.iter_mut().enumerate() {
            let s = (a0 * i32::from(row[2 * c])).wrapping_add(a1 * i32::from(row[2 * c + 1]));
            *slot = slot.wrapping_add(s);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::NR;

    /// Safe entry point; the caller has checked that AVX2 is available.
    pub(super) fn panel(apair: &[i32], bp: &[i16], acc: &mut [i32; NR]) {
        assert!(bp.len() >= apair.len() * 2 * NR);
        // SAFETY: AVX2 was detected by the caller; every load reads 16 `i16` inside
        // `bp`, whose length was asserted above; stores go to `acc` (16 `i32`).
        unsafe { panel_avx2(apair, bp, acc) }
    }

    /// Safe entry point of the four-row kernel; the caller has checked AVX2.
    pub(super) fn panel4(apair: &[i32], kp: usize, bp: &[i16], acc: &mut [[i32; NR]; 4]) {
        assert!(apair.len() >= 4 * kp && bp.len() >= kp * 2 * NR);
        // SAFETY: AVX2 was detected by the caller; `apair` holds four rows of `kp`
        // words and `bp` a panel of `kp` row pairs (both asserted above); stores go
        // to `acc` (4 × 16 `i32`).
        unsafe { panel4_avx2(apair, kp, bp, acc) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn panel4_avx2(apair: &[i32], kp: usize, bp: &[i16], acc: &mut [[i32; NR]; 4]) {
        let mut c = [[_mm256_setzero_si256(); 2]; 4];
        let p = bp.as_ptr();
        let a = apair.as_ptr();
        for q in 0..kp {
            let b0 = _mm256_loadu_si256(p.add(q * 2 * NR) as *const __m256i);
            let b1 = _mm256_loadu_si256(p.add(q * 2 * NR + NR) as *const __m256i);
            for (r, cr) in c.iter_mut().enumerate() {
                // As in `panel_avx2`: each `madd` pair sum fits (or wraps like) i32.
                let av = _mm256_set1_epi32(*a.add(r * kp + q));
                cr[0] = _mm256_add_epi32(cr[0], _mm256_madd_epi16(av, b0));
                cr[1] = _mm256_add_epi32(cr[1], _mm256_madd_epi16(av, b1));
            }
        }
        for (r, cr) in c.iter().enumerate() {
            _mm256_storeu_si256(acc[r].as_mut_ptr() as *mut __m256i, cr[0]);
            _mm256_storeu_si256(acc[r].as_mut_ptr().add(8) as *mut __m256i, cr[1]);
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn panel_avx2(apair: &[i32], bp: &[i16], acc: &mut [i32; NR]) {
        let mut c0 = _mm256_setzero_si256();
        let mut c1 = _mm256_setzero_si256();
        let p = bp.as_ptr();
        for (q, &ap) in apair.iter().enumerate() {
            let a = _mm256_set1_epi32(ap);
            // `madd` multiplies i16 pairs to i32 and adds each pair: |a|,|b| ≤ 2¹⁵ so
            // each sum is at most 2³¹ in magnitude; the one case that reaches 2³¹
            // (all four operands −2¹⁵) yields 0x8000_0000, its wrapped value.
            let b0 = _mm256_loadu_si256(p.add(q * 2 * NR) as *const __m256i);
            let b1 = _mm256_loadu_si256(p.add(q * 2 * NR + NR) as *const __m256i);
            c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(a, b0));
            c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(a, b1));
        }
        _mm256_storeu_si256(acc.as_mut_ptr() as *mut __m256i, c0);
        _mm256_storeu_si256(acc.as_mut_ptr().add(8) as *mut __m256i, c1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::KernelMode;
    use proptest::prelude::*;

    fn run_fast(m: usize, n: usize, k: usize, a: &[i16], b: &[i16], threads: usize) -> Vec<i32> {
        let ctx = Ctx::new(KernelMode::Fast, threads);
        let mut out = vec![0; m * n];
        gemm(m, n, k, a, b, &mut out, &ctx);
        out
    }

    #[test]
    fn small_known_product() {
        // [[1,2],[3,4]] · [[5,6],[7,8]] = [[19,22],[43,50]]
        let out = run_fast(2, 2, 2, &[1, 2, 3, 4], &[5, 6, 7, 8], 1);
        assert_eq!(out, vec![19, 22, 43, 50]);
    }

    #[test]
    fn extreme_values_wrap_like_reference() {
        let k = 5;
        let a = vec![i16::MIN; k];
        let b = vec![i16::MIN; k * 17];
        let mut r = vec![0; 17];
        gemm_reference(1, 17, k, &a, &b, &mut r);
        assert_eq!(r[0], (5i64 << 30) as i32);
        assert_eq!(run_fast(1, 17, k, &a, &b, 2), r);
    }

    fn case() -> impl Strategy<Value = (usize, usize, usize, Vec<i16>, Vec<i16>, usize, bool)> {
        (0usize..9, 0usize..40, 0usize..37, 1usize..5, any::<bool>()).prop_flat_map(
            |(m, n, k, t, wide)| {
                let v = if wide {
                    any::<i16>().boxed()
                } else {
                    (-255i16..=255).boxed()
                };
                (
                    Just(m),
                    Just(n),
                    Just(k),
                    proptest::collection::vec(v.clone(), m * k),
                    proptest::collection::vec(v, k * n),
                    Just(t),
                    Just(wide),
                )
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(192))]
        #[test]
        fn fast_equals_reference((m, n, k, a, b, t, _w) in case()) {
            let mut r = vec![0; m * n];
            gemm_reference(m, n, k, &a, &b, &mut r);
            prop_assert_eq!(run_fast(m, n, k, &a, &b, t), r.clone());
            let mut p = vec![0; m * n];
            // The portable panel path too, on every row.
            let kp = k.div_ceil(2);
            let packed = pack_b(n, k, &b);
            let mut ap = vec![0; kp];
            for i in 0..m {
                pack_a_row(&a[i * k..(i + 1) * k], &mut ap);
                for pn in 0..n.div_ceil(NR) {
                    let mut acc = [0; NR];
                    panel_portable(&ap, &packed[pn * kp * 2 * NR..(pn + 1) * kp * 2 * NR], &mut acc);
                    let w = NR.min(n - pn * NR);
                    p[i * n + pn * NR..i * n + pn * NR + w].copy_from_slice(&acc[..w]);
                }
            }
            prop_assert_eq!(p, r);
        }
    }
}
