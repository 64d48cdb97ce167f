//! Index gathers: `out = [plane[i] for i in idx]`, zero where `i` lies outside the
//! plane — how im2col reads a convolution's patches through a precomputed table.
//! Moving values changes no bit, so every path gives the same result.
//!
//! This module needs `unsafe` for the AVX-512 gather (`vgatherdps`), whose indices are
//! checked against the plane by the same masked compare that selects the lanes it
//! loads, and for appending to a vector without zeroing it first (every appended
//! element is written before the length covers it).
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

#[cfg(test)]
mod tests {
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
    }
}
