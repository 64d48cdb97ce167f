//! Index gathers: `out = [plane[i] for i in idx]`, zero where `i` lies outside the
//! plane — how im2col reads a convolution's patches through a precomputed table — and
//! the transposition of a convolution's transposed product back into channel planes.
//! Moving values changes no bit, so every path gives the same result; the one
//! arithmetic operation, the bias added while transposing, is a single rounded add in
//! every path.
//!
//! This module needs `unsafe` for the AVX-512 gather (`vgatherdps`), whose indices are
//! checked against the plane by the same masked compare that selects the lanes it
//! loads, for appending to a vector without zeroing it first (every appended element
//! is written before the length covers it), and for the masked loads and stores of the
//! transposition, whose bounds are checked before it starts.
#![allow(unsafe_code)]

use super::gemm::Mat;

/// Appends `plane[i]` for every `i` of `idx`, or `+0.0` where `i ≥ plane.len()`.
pub fn gather_f32(plane: &[f32], idx: &[u32], out: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && plane.len() < (1 << 31) {
        out.reserve(idx.len());
        let spare = &mut out.spare_capacity_mut()[..idx.len()];
        // SAFETY: the CPU has AVX-512F (checked above); `spare` holds idx.len()
        // elements, all of which `gather_avx512` writes; the plane's length is below
        // 2³¹, so every index the masked compare admits is a valid i32 offset into it.
        unsafe {
            gather_avx512(plane, idx, spare);
            out.set_len(out.len() + idx.len());
        }
        return;
    }
    out.extend(
        idx.iter()
            .map(|&i| plane.get(i as usize).copied().unwrap_or(0.0)),
    );
}

/// # Safety
/// The CPU has AVX-512F, `out.len() == idx.len()`, `plane.len() < 2³¹`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_avx512(plane: &[f32], idx: &[u32], out: &mut [std::mem::MaybeUninit<f32>]) {
    use std::arch::x86_64::*;
    let len = _mm512_set1_epi32(plane.len() as i32);
    let base = plane.as_ptr() as *const u8;
    let mut i = 0;
    while i + 16 <= idx.len() {
        let ix = _mm512_loadu_si512(idx.as_ptr().add(i) as *const _);
        // Unsigned: u32::MAX (padding) and every index past the plane are masked off.
        let inside = _mm512_cmplt_epu32_mask(ix, len);
        let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), inside, ix, base as *const _);
        _mm512_storeu_ps(out.as_mut_ptr().add(i) as *mut f32, v);
        i += 16;
    }
    for (o, &j) in out[i..].iter_mut().zip(&idx[i..]) {
        o.write(plane.get(j as usize).copied().unwrap_or(0.0));
    }
}

/// `rows`, a P × C view of a product whose row `q` holds position `q` of C channels,
/// written as C planes of P values: `planes[c·P + q] = rows(q, c)`, plus `bias[c]` when
/// given (one rounded add, a NaN result made canonical). Blocks of 16 × 16 values are
/// transposed in registers (an empty view is done at once). False, writing nothing,
/// when the CPU lacks AVX-512, `rows` is not dense along its columns, or `planes` or
/// `bias` do not match its shape.
pub fn planes_from_rows_f32(rows: Mat<'_, f32>, bias: Option<&[f32]>, planes: &mut [f32]) -> bool {
    let fits = rows.cs() == 1
        && rows.rows().checked_mul(rows.cols()) == Some(planes.len())
        && bias.is_none_or(|b| b.len() >= rows.cols());
    if !fits {
        return false;
    }
    if planes.is_empty() {
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked above); `Mat` holds every element
        // `(q, c)` of its shape inside its data, at `q·rs + c` (unit column stride);
        // `planes` holds exactly P·C values and `bias` at least C (`fits`).
        unsafe { planes_from_rows_avx512(rows, bias, planes) };
        return true;
    }
    false
}

/// # Safety
/// The CPU has AVX-512F; `rows` has a unit column stride and at least one element;
/// `planes.len()` is its rows times its columns; `bias`, when given, holds at least
/// as many values as it has columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn planes_from_rows_avx512(rows: Mat<'_, f32>, bias: Option<&[f32]>, planes: &mut [f32]) {
    use std::arch::x86_64::*;
    let (p, channels, rs) = (rows.rows(), rows.cols(), rows.rs());
    let canon = _mm512_set1_ps(f32::from_bits(super::gemm::CANONICAL_NAN_F32));
    let (src, dst) = (rows.data().as_ptr(), planes.as_mut_ptr());
    for c0 in (0..channels).step_by(16) {
        let cn = (channels - c0).min(16);
        let cmask = ((1u32 << cn) - 1) as __mmask16;
        for q0 in (0..p).step_by(16) {
            let qn = (p - q0).min(16);
            let qmask = ((1u32 << qn) - 1) as __mmask16;
            // Rows q0.. (positions), lanes c0.. (channels); missing ones are zero.
            let mut r = [_mm512_setzero_ps(); 16];
            for (i, row) in r.iter_mut().enumerate().take(qn) {
                *row = _mm512_maskz_loadu_ps(cmask, src.add((q0 + i) * rs + c0));
            }
            let cols = transpose16(r);
            for (j, &col) in cols.iter().enumerate().take(cn) {
                let v = match bias {
                    Some(b) => {
                        let v = _mm512_add_ps(col, _mm512_set1_ps(*b.get_unchecked(c0 + j)));
                        _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v), canon)
                    }
                    None => col,
                };
                _mm512_mask_storeu_ps(dst.add((c0 + j) * p + q0), qmask, v);
            }
        }
    }
}

/// The 16 × 16 transpose of `r` (row `i`, lane `j` → row `j`, lane `i`): 32-bit, then
/// 64-bit interleaves within 128-bit lanes, then two rounds of 128-bit lane shuffles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose16(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    let z = _mm512_setzero_ps();
    // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved (lane k: columns 4k, 4k+1 and 4k+2, 4k+3).
    let mut t = [z; 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + j], lane k: column 4k + j of rows 4i .. 4i + 3.
    let mut u = [z; 16];
    let (lo, hi) = (
        |a: __m512, b: __m512| {
            _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
        },
        |a: __m512, b: __m512| {
            _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
        },
    );
    for i in 0..4 {
        u[4 * i] = lo(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = hi(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = lo(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = hi(t[4 * i + 1], t[4 * i + 3]);
    }
    // v[8g + j]: columns j and 8 + j, v[8g + 4 + j]: columns 4 + j and 12 + j, each of
    // rows 8g .. 8g + 3 then 8g + 4 .. 8g + 7.
    let mut v = [z; 16];
    for g in 0..2 {
        for j in 0..4 {
            let (a, b) = (u[8 * g + j], u[8 * g + 4 + j]);
            v[8 * g + j] = _mm512_shuffle_f32x4::<0x88>(a, b);
            v[8 * g + 4 + j] = _mm512_shuffle_f32x4::<0xdd>(a, b);
        }
    }
    // Column c and c + 8, for c < 8, from rows 0..8 (v[c]) and 8..16 (v[8 + c]).
    let mut out = [z; 16];
    for c in 0..8 {
        out[c] = _mm512_shuffle_f32x4::<0x88>(v[c], v[8 + c]);
        out[8 + c] = _mm512_shuffle_f32x4::<0xdd>(v[c], v[8 + c]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::gemm::tests::special;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn gather_equals_indexing(
            plane in prop::collection::vec(any::<f32>(), 0..100),
            idx in prop::collection::vec(prop_oneof![0u32..120, Just(u32::MAX)], 0..90),
            prefix in 0usize..5,
        ) {
            let mut out = vec![7.0f32; prefix];
            gather_f32(&plane, &idx, &mut out);
            let want: Vec<u32> = std::iter::repeat_n(7.0f32, prefix)
                .chain(idx.iter().map(|&i| plane.get(i as usize).copied().unwrap_or(0.0)))
                .map(f32::to_bits)
                .collect();
            let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn planes_from_rows_equals_definition(
            m in 1usize..40,
            p in 1usize..40,
            start in 0usize..40,
            count in 0usize..40,
            with_bias in any::<bool>(),
            mut tmp in prop::collection::vec(special(), 40 * 40),
            bias in prop::collection::vec(special(), 40),
            payload in 0usize..40 * 40,
        ) {
            let oc0 = start % m;
            let channels = count % (m - oc0 + 1);
            tmp.truncate(p * m);
            // A NaN with a payload, which the bias add keeps and must make canonical.
            if let Some(v) = tmp.get_mut(payload % (p * m)) {
                *v = f32::from_bits(0x7f80_0001);
            }
            let bias = with_bias.then_some(&bias[oc0..oc0 + channels]);
            let rows = Mat::row_major(&tmp, p, m).unwrap().cols_range(oc0, channels);
            let mut got = vec![7.0f32; channels * p];
            if !planes_from_rows_f32(rows, bias, &mut got) {
                // Only a CPU without AVX-512 declines shapes that fit.
                prop_assert!(!std::is_x86_feature_detected!("avx512f"));
                return Ok(());
            }
            let mut want = Vec::new();
            for c in 0..channels {
                for q in 0..p {
                    let v = tmp[q * m + oc0 + c];
                    want.push(match bias {
                        Some(b) => {
                            let y = v + b[c];
                            if y.is_nan() { f32::from_bits(0x7fc0_0000) } else { y }
                        }
                        None => v,
                    });
                }
            }
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }

    #[test]
    fn planes_from_rows_declines_what_does_not_match() {
        let tmp = vec![1.0f32; 4 * 8];
        let all = Mat::row_major(&tmp, 4, 8).unwrap();
        let mut planes = vec![0.0f32; 3 * 4];
        // Channels 6..9 of 8: the view holds two, the planes three.
        assert!(!planes_from_rows_f32(
            all.cols_range(6, 3),
            None,
            &mut planes
        ));
        // A bias shorter than the channels.
        assert!(!planes_from_rows_f32(
            all.cols_range(0, 3),
            Some(&[0.0; 2]),
            &mut planes
        ));
        // Strided columns (the view transposed).
        let t = Mat::row_major(&tmp, 8, 4).unwrap().t().cols_range(0, 3);
        assert!(!planes_from_rows_f32(t, None, &mut planes));
        assert!(planes.iter().all(|&v| v == 0.0));
    }
}
