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

/// Channels `oc0 .. oc0 + planes.len() / p` of `tmp`, a P × M product whose row `q`
/// holds position `q` of every channel, written as planes of P values:
/// `planes[c·p + q] = tmp[q·m + oc0 + c]`, plus `bias[oc0 + c]` when given (one
/// rounded add, a NaN result made canonical). Blocks of 16 × 16 values are transposed
/// in registers. False, writing nothing, when the CPU lacks AVX-512 or the operands do
/// not hold those values.
pub fn planes_from_rows_f32(
    tmp: &[f32],
    m: usize,
    p: usize,
    oc0: usize,
    bias: Option<&[f32]>,
    planes: &mut [f32],
) -> bool {
    if p == 0 || !planes.len().is_multiple_of(p) {
        return false;
    }
    let channels = planes.len() / p;
    let fits = oc0.checked_add(channels).is_some_and(|end| {
        end <= m
            && p.checked_mul(m).is_some_and(|n| n <= tmp.len())
            && bias.is_none_or(|b| end <= b.len())
    });
    if !fits {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked above); every row read is one of the
        // `p` rows of `m` in `tmp`, in its values `oc0 .. oc0 + channels ≤ m`; every
        // value written is one of the `channels · p` of `planes`; every bias read is
        // below `oc0 + channels ≤ bias.len()` (`fits`).
        unsafe { planes_from_rows_avx512(tmp, m, p, oc0, bias, planes) };
        return true;
    }
    false
}

/// # Safety
/// The CPU has AVX-512F, `p > 0`, `planes.len()` is a multiple of `p`, and with
/// `channels = planes.len() / p`: `oc0 + channels ≤ m`, `p·m ≤ tmp.len()`, and
/// `oc0 + channels ≤ bias.len()` when there is a bias.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn planes_from_rows_avx512(
    tmp: &[f32],
    m: usize,
    p: usize,
    oc0: usize,
    bias: Option<&[f32]>,
    planes: &mut [f32],
) {
    use std::arch::x86_64::*;
    let channels = planes.len() / p;
    let canon = _mm512_set1_ps(f32::from_bits(super::gemm::CANONICAL_NAN_F32));
    let (src, dst) = (tmp.as_ptr(), planes.as_mut_ptr());
    for c0 in (0..channels).step_by(16) {
        let cn = (channels - c0).min(16);
        let cmask = ((1u32 << cn) - 1) as __mmask16;
        for q0 in (0..p).step_by(16) {
            let qn = (p - q0).min(16);
            let qmask = ((1u32 << qn) - 1) as __mmask16;
            // Rows q0.. (positions), lanes c0.. (channels); missing ones are zero.
            let mut r = [_mm512_setzero_ps(); 16];
            for (i, row) in r.iter_mut().enumerate().take(qn) {
                *row = _mm512_maskz_loadu_ps(cmask, src.add((q0 + i) * m + oc0 + c0));
            }
            let cols = transpose16(r);
            for (j, &col) in cols.iter().enumerate().take(cn) {
                let v = match bias {
                    Some(b) => {
                        let v = _mm512_add_ps(col, _mm512_set1_ps(*b.get_unchecked(oc0 + c0 + j)));
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
            let bias = with_bias.then_some(bias.as_slice());
            let mut got = vec![7.0f32; channels * p];
            if !planes_from_rows_f32(&tmp, m, p, oc0, bias, &mut got) {
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
                            let y = v + b[oc0 + c];
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
    fn planes_from_rows_declines_operands_too_short() {
        let tmp = vec![1.0f32; 4 * 8];
        let mut planes = vec![0.0f32; 3 * 4];
        // Channels 6..9 of 8 do not exist; a bias of 8 does not reach them either.
        assert!(!planes_from_rows_f32(&tmp, 8, 4, 6, None, &mut planes));
        assert!(!planes_from_rows_f32(
            &tmp[..31],
            8,
            4,
            0,
            None,
            &mut planes
        ));
        assert!(!planes_from_rows_f32(
            &tmp,
            8,
            4,
            5,
            Some(&[0.0; 7]),
            &mut planes
        ));
        assert!(!planes_from_rows_f32(&tmp, 8, 0, 0, None, &mut []));
        assert!(!planes_from_rows_f32(&tmp, 8, 5, 0, None, &mut planes));
        assert!(planes.iter().all(|&v| v == 0.0));
    }
}
