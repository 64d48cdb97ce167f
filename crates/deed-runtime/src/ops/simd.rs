//! Fast f32 kernels for the hot elementwise operators, bit-identical to the reference
//! by construction.
//!
//! Each kernel is the reference's per-element function (the same Rust function, e.g.
//! [`super::math::exp_f32`]), mapped over a slice inside a function compiled with
//! `#[target_feature(enable = "avx512f,…")]` or `"avx2,fma"`, chosen at run time by
//! what the CPU has. The functions are branch-free (special cases are selects) so the
//! compiler turns the loop into 16-wide AVX-512 or 8-wide AVX2 code; Rust guarantees that this compilation does
//! not change any result (no contraction, no reassociation, `mul_add` is always one
//! fused rounding), and every NaN result is made canonical, so lanes and scalars give
//! the same bits. Without either the same loop runs at the baseline instruction set.
//! Large tensors are split across threads by output chunks.
//!
//! Why `unsafe`: calling a `#[target_feature]` function is unsafe unless the caller
//! has the features; each call is guarded by `is_x86_feature_detected!`.
#![allow(unsafe_code)]

use super::binary::{float_bin, BKind};
use super::elementwise::{map2, CHUNK, PAR_MIN};
#[cfg(test)]
use super::unary::apply_float;
use super::unary::{relu, Kind};
use super::util::numel;
use super::Ctx;
use crate::error::OpError;
use std::mem::MaybeUninit;

/// Unary f32 operators with a fast kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hot {
    Relu,
    Exp,
    Tanh,
    Erf,
    Sigmoid,
    GeluErf,
    GeluTanh,
}

impl Hot {
    pub(crate) fn of(k: Kind) -> Option<Hot> {
        Some(match k {
            Kind::Relu => Hot::Relu,
            Kind::Exp => Hot::Exp,
            Kind::Tanh => Hot::Tanh,
            Kind::Erf => Hot::Erf,
            Kind::Sigmoid => Hot::Sigmoid,
            Kind::Gelu { tanh: false } => Hot::GeluErf,
            Kind::Gelu { tanh: true } => Hot::GeluTanh,
            _ => return None,
        })
    }
}

/// Binary f32 operators with a fast kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HotBin {
    Add,
    Sub,
    Mul,
    Div,
}

impl HotBin {
    pub(crate) fn of(k: BKind) -> Option<HotBin> {
        Some(match k {
            BKind::Add => HotBin::Add,
            BKind::Sub => HotBin::Sub,
            BKind::Mul => HotBin::Mul,
            BKind::Div => HotBin::Div,
            _ => return None,
        })
    }
}

/// The widest vector extension the CPU has that these kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// AVX-512 F/BW/DQ/VL with FMA: 16 f32 lanes.
    Avx512,
    /// AVX2 with FMA: 8 f32 lanes.
    Avx2,
    /// The baseline instruction set.
    Base,
}

fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let has = |f: &[bool]| f.iter().all(|&x| x);
            if has(&[
                is_x86_feature_detected!("avx512f"),
                is_x86_feature_detected!("avx512bw"),
                is_x86_feature_detected!("avx512dq"),
                is_x86_feature_detected!("avx512vl"),
                is_x86_feature_detected!("avx2"),
                is_x86_feature_detected!("fma"),
            ]) {
                Isa::Avx512
            } else if has(&[
                is_x86_feature_detected!("avx2"),
                is_x86_feature_detected!("fma"),
            ]) {
                Isa::Avx2
            } else {
                Isa::Base
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    Isa::Base
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn call_avx512<R, F: FnOnce() -> R>(f: F) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn call_avx2<R, F: FnOnce() -> R>(f: F) -> R {
    f()
}

/// Runs `f` compiled for the widest vector extension the CPU has (AVX-512, else
/// AVX2+FMA): `f` is inlined into a function with those features, so `mul_add`
/// becomes one instruction instead of a call and loops over the crate's branch-free
/// math vectorize. The results are the same bits either way (see the module
/// documentation). Callers mark the closure `#[inline(always)]`: a closure the
/// compiler declines to inline is compiled for the baseline instruction set, where
/// `mul_add` is a call into the C library.
#[inline(always)]
pub(crate) fn with_fma<R, F: FnOnce() -> R>(f: F) -> R {
    #[cfg(target_arch = "x86_64")]
    match isa() {
        // SAFETY: the CPU supports every feature the callee enables (`isa`).
        Isa::Avx512 => return unsafe { call_avx512(f) },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { call_avx2(f) },
        Isa::Base => {}
    }
    f()
}

/// An output slot not yet written: the kernels below write every slot of their output
/// before it becomes a vector, so it is never zeroed first.
type Slot = MaybeUninit<f32>;

/// A vector of `n` values, all written by `fill`.
///
/// Every caller hands `fill` a loop that writes each slot of the slice it is given
/// (outputs zipped with inputs of the same length, or chunks covering the slice), which
/// is what makes the `set_len` below sound.
#[inline(always)]
fn filled(n: usize, fill: impl FnOnce(&mut [Slot])) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: `fill` initialized all `n` slots (see above); the capacity is at least n.
    unsafe { v.set_len(n) };
    v
}

/// `f` of every element of `src`, as a new vector that is never zeroed first. A plain
/// loop, inlined, so that inside a vectorized region (`with_fma`) it is compiled for
/// that region's instruction set.
#[inline(always)]
pub(crate) fn map_vec<S: Copy, D>(src: &[S], f: impl Fn(S) -> D) -> Vec<D> {
    let mut v: Vec<D> = Vec::with_capacity(src.len());
    let slots = &mut v.spare_capacity_mut()[..src.len()];
    for (o, &x) in slots.iter_mut().zip(src) {
        o.write(f(x));
    }
    // SAFETY: the loop wrote every one of the `src.len()` slots (the zip walks two
    // slices of that length); the capacity is at least that.
    unsafe { v.set_len(src.len()) };
    v
}

/// [`map_vec`] split over the context's threads in pieces of `chunk` elements.
pub(crate) fn map_vec_par<S, D, F>(ctx: &Ctx, src: &[S], chunk: usize, f: F) -> Vec<D>
where
    S: Copy + Sync,
    D: Send,
    F: Fn(S) -> D + Send + Sync,
{
    let chunk = chunk.max(1);
    let mut v: Vec<D> = Vec::with_capacity(src.len());
    let slots = &mut v.spare_capacity_mut()[..src.len()];
    ctx.for_each_chunk(slots, chunk, |i, c| {
        // Piece `i` starts at `i * chunk` and holds `c.len()` slots of the output.
        let src = &src[i * chunk..i * chunk + c.len()];
        for (o, &x) in c.iter_mut().zip(src) {
            o.write(f(x));
        }
    });
    // SAFETY: `for_each_chunk` hands out every piece of `slots` exactly once (pieces of
    // `chunk` elements, the i-th at `i * chunk`), and each piece's loop writes all of
    // its slots, reading `src` at the same positions; the capacity is `src.len()`.
    unsafe { v.set_len(src.len()) };
    v
}

/// `f(p)(x)` for every element `x` of `src`, `p` being the index of the plane of
/// `plane` elements that holds it, as a new vector that is never zeroed first: `f(p)`
/// is the plane's element function, made once per plane. Tasks of `per` whole planes
/// are split over the context's threads, and each runs in the vectorized region
/// ([`with_fma`]); callers mark both closures `#[inline(always)]`, as for `with_fma`.
pub(crate) fn map_planes_par<S, D, F, G>(
    ctx: &Ctx,
    src: &[S],
    plane: usize,
    per: usize,
    f: F,
) -> Vec<D>
where
    S: Copy + Sync,
    D: Send,
    F: Fn(usize) -> G + Send + Sync,
    G: Fn(S) -> D,
{
    let (plane, per) = (plane.max(1), per.max(1));
    let mut v: Vec<D> = Vec::with_capacity(src.len());
    let slots = &mut v.spare_capacity_mut()[..src.len()];
    ctx.for_each_chunk(slots, per * plane, |ci, c| {
        let base = ci * per * plane;
        let src = &src[base..base + c.len()];
        with_fma(
            #[inline(always)]
            || {
                for (i, (dst, s)) in c.chunks_mut(plane).zip(src.chunks(plane)).enumerate() {
                    let g = f(ci * per + i);
                    for (o, &x) in dst.iter_mut().zip(s) {
                        o.write(g(x));
                    }
                }
            },
        )
    });
    // SAFETY: `for_each_chunk` hands out every piece of `slots` exactly once (the
    // `ci`-th at `ci * per * plane`); each piece is cut into planes alongside the
    // same positions of `src`, a slice of the same length, and every slot of every
    // plane is written. The capacity is `src.len()`.
    unsafe { v.set_len(src.len()) };
    v
}

#[inline(always)]
fn map_slice<F: Fn(f32) -> f32 + Copy>(src: &[f32], dst: &mut [Slot], f: F) {
    debug_assert_eq!(src.len(), dst.len());
    with_fma(
        #[inline(always)]
        || {
            for (o, &v) in dst.iter_mut().zip(src) {
                o.write(f(v));
            }
        },
    )
}

#[inline(always)]
fn zip_slice<F: Fn(f32, f32) -> f32 + Copy>(a: &[f32], b: &[f32], dst: &mut [Slot], f: F) {
    debug_assert!(a.len() == dst.len() && b.len() >= dst.len());
    with_fma(
        #[inline(always)]
        || {
            for ((o, &x), &y) in dst.iter_mut().zip(a).zip(b) {
                o.write(f(x, y));
            }
        },
    )
}

fn map_f32<F: Fn(f32) -> f32 + Copy + Send + Sync>(ctx: &Ctx, x: &[f32], f: F) -> Vec<f32> {
    filled(x.len(), |out| {
        if x.len() >= PAR_MIN && ctx.threads() > 1 {
            ctx.for_each_chunk(out, CHUNK, |i, c| {
                let s = i * CHUNK;
                map_slice(&x[s..s + c.len()], c, f)
            });
        } else {
            map_slice(x, out, f);
        }
    })
}

/// The fast kernel of a hot unary operator; equals `apply_float::<f32>` bit for bit.
pub(crate) fn unary_f32(ctx: &Ctx, h: Hot, x: &[f32]) -> Vec<f32> {
    use super::math::{erf_f32, exp_f32, sigmoid_f32, tanh_f32};
    use super::unary::{gelu_erf, gelu_tanh};
    match h {
        Hot::Relu => map_f32(ctx, x, relu::<f32>),
        Hot::Exp => map_f32(ctx, x, exp_f32),
        Hot::Tanh => map_f32(ctx, x, tanh_f32),
        Hot::Erf => map_f32(ctx, x, erf_f32),
        Hot::Sigmoid => map_f32(ctx, x, sigmoid_f32),
        Hot::GeluErf => map_f32(ctx, x, gelu_erf::<f32>),
        Hot::GeluTanh => map_f32(ctx, x, gelu_tanh::<f32>),
    }
}

fn bin_f32<F: Fn(f32, f32) -> f32 + Copy + Send + Sync>(
    ctx: &Ctx,
    a: &[f32],
    ash: &[usize],
    b: &[f32],
    bsh: &[usize],
    out: &[usize],
    f: F,
) -> Result<Vec<f32>, OpError> {
    let n = numel(out)?;
    let par = n >= PAR_MIN && ctx.threads() > 1;
    // Each arm writes every output slot: `a` or `b` (or both) hold exactly `n` values,
    // and the zips walk the output alongside them.
    let o = if a.len() == n && b.len() == n {
        let run =
            |s: usize, c: &mut [Slot]| zip_slice(&a[s..s + c.len()], &b[s..s + c.len()], c, f);
        filled(n, |o| {
            if par {
                ctx.for_each_chunk(o, CHUNK, |i, c| run(i * CHUNK, c));
            } else {
                run(0, o);
            }
        })
    } else if b.len() == 1 && a.len() == n {
        let y = b[0];
        let run = |s: usize, c: &mut [Slot]| map_slice(&a[s..s + c.len()], c, move |x| f(x, y));
        filled(n, |o| {
            if par {
                ctx.for_each_chunk(o, CHUNK, |i, c| run(i * CHUNK, c));
            } else {
                run(0, o);
            }
        })
    } else if a.len() == 1 && b.len() == n {
        let x = a[0];
        let run = |s: usize, c: &mut [Slot]| map_slice(&b[s..s + c.len()], c, move |y| f(x, y));
        filled(n, |o| {
            if par {
                ctx.for_each_chunk(o, CHUNK, |i, c| run(i * CHUNK, c));
            } else {
                run(0, o);
            }
        })
    } else if a.len() == n && is_row(b, bsh, out) {
        // A row vector (a bias) repeated over the leading dimensions.
        let w = b.len();
        let run = |s: usize, c: &mut [Slot]| {
            let len = c.len();
            for (dst, src) in c.chunks_mut(w).zip(a[s..s + len].chunks(w)) {
                zip_slice(src, b, dst, f);
            }
        };
        let chunk = CHUNK.div_ceil(w) * w;
        filled(n, |o| {
            if par {
                ctx.for_each_chunk(o, chunk, |i, c| run(i * chunk, c));
            } else {
                run(0, o);
            }
        })
    } else if b.len() == n && is_row(a, ash, out) {
        let w = a.len();
        let run = |s: usize, c: &mut [Slot]| {
            let len = c.len();
            for (dst, src) in c.chunks_mut(w).zip(b[s..s + len].chunks(w)) {
                // `a` is the row: zip it with the output and the chunk of `b`.
                with_fma(
                    #[inline(always)]
                    || {
                        for ((o, &x), &y) in dst.iter_mut().zip(a).zip(src) {
                            o.write(f(x, y));
                        }
                    },
                );
            }
        };
        let chunk = CHUNK.div_ceil(w) * w;
        filled(n, |o| {
            if par {
                ctx.for_each_chunk(o, chunk, |i, c| run(i * chunk, c));
            } else {
                run(0, o);
            }
        })
    } else {
        return map2(ctx, a, ash, b, bsh, out, f);
    };
    Ok(o)
}

/// True when `v` (of shape `sh`) broadcasts to `out` as a whole trailing row: its
/// shape, without leading ones, is `out`'s last dimensions, so element `i` of the
/// output pairs with `v[i % v.len()]`.
fn is_row(v: &[f32], sh: &[usize], out: &[usize]) -> bool {
    let trimmed: &[usize] = {
        let lead = sh.iter().take_while(|&&d| d == 1).count();
        &sh[lead..]
    };
    !v.is_empty()
        && trimmed.len() <= out.len()
        && out.ends_with(trimmed)
        && v.len() == trimmed.iter().product::<usize>()
}

/// The fast kernel of a hot binary operator; equals `float_bin::<f32>` bit for bit.
pub(crate) fn binary_f32(
    ctx: &Ctx,
    h: HotBin,
    a: &[f32],
    ash: &[usize],
    b: &[f32],
    bsh: &[usize],
    out: &[usize],
) -> Result<Vec<f32>, OpError> {
    match h {
        HotBin::Add => bin_f32(ctx, a, ash, b, bsh, out, |x, y| {
            float_bin::<f32>(BKind::Add, x, y)
        }),
        HotBin::Sub => bin_f32(ctx, a, ash, b, bsh, out, |x, y| {
            float_bin::<f32>(BKind::Sub, x, y)
        }),
        HotBin::Mul => bin_f32(ctx, a, ash, b, bsh, out, |x, y| {
            float_bin::<f32>(BKind::Mul, x, y)
        }),
        HotBin::Div => bin_f32(ctx, a, ash, b, bsh, out, |x, y| {
            float_bin::<f32>(BKind::Div, x, y)
        }),
    }
}

/// One kernel offset of MaxPool's row kernel at stride 2: `row[j]` takes `src[2j]`
/// (`first`), else `src[2j]` when that is larger or NaN (a kept NaN is never replaced).
/// `src` holds `2·(row.len() − 1) + 1` values. Sixteen outputs per step on AVX-512, the
/// even elements of 32 inputs picked by one permute; the same selects as the scalar
/// loop, so the same bits.
pub(crate) fn max_into_stride2(row: &mut [f32], src: &[f32], first: bool) {
    let done = {
        #[cfg(target_arch = "x86_64")]
        {
            if isa() == Isa::Avx512 {
                // SAFETY: the CPU has AVX-512F (`isa`); the kernel reads `src` only in
                // whole blocks of 32 inside it and writes `row` only below its length.
                unsafe { max_stride2_avx512(row, src, first) }
            } else {
                0
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        0
    };
    for (j, o) in row.iter_mut().enumerate().skip(done) {
        let Some(&v) = src.get(2 * j) else { return };
        *o = if first || v > *o || v.is_nan() { v } else { *o };
    }
}

/// The AVX-512 blocks of [`max_into_stride2`]; returns how many outputs it wrote.
/// A masked load reads nothing past the lanes it selects.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_stride2_avx512(row: &mut [f32], src: &[f32], first: bool) -> usize {
    use std::arch::x86_64::*;
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let mut j = 0;
    // Outputs j..j+16 read src[2j..=2j+30]; the odd element past that may be absent,
    // so the upper half loads under a mask of what exists.
    while j + 16 <= row.len() && 2 * j + 31 <= src.len() {
        let a = _mm512_loadu_ps(src.as_ptr().add(2 * j));
        let rest = (src.len() - (2 * j + 16)).min(16);
        let b = _mm512_maskz_loadu_ps(
            ((1u32 << rest) - 1) as __mmask16,
            src.as_ptr().add(2 * j + 16),
        );
        let v = _mm512_permutex2var_ps(a, evens, b);
        let out = row.as_mut_ptr().add(j);
        let r = if first {
            v
        } else {
            let o = _mm512_loadu_ps(out);
            let take =
                _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, o) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            _mm512_mask_mov_ps(o, take, v)
        };
        _mm512_storeu_ps(out, r);
        j += 16;
    }
    j
}

/// MaxPool of one plane with a 2×2 window at stride 2 that stays inside the plane
/// (`2·ow ≤ iw`, `2·oh ≤ ih`): `out[i, j]` starts at `x[2i, 2j]` and takes `x[2i, 2j+1]`,
/// `x[2i+1, 2j]`, `x[2i+1, 2j+1]` in that (row-major) order when larger or NaN, and ends
/// as the canonical NaN if it holds one: the selects of [`max_into_stride2`] over the
/// four kernel offsets, done for a whole output row in registers instead of four
/// passes over it (ResNet's pooling after the stem, whose 16-wide rows made the calls
/// cost more than the work). Returns false, writing nothing, when the CPU lacks AVX-512
/// or the shapes do not fit, and the caller takes the general row form.
pub(crate) fn max_pool_2x2s2(x: &[f32], iw: usize, oh: usize, ow: usize, out: &mut [f32]) -> bool {
    let fits = 2 * ow <= iw
        && oh.checked_mul(ow) == Some(out.len())
        && (2 * oh).checked_mul(iw).is_some_and(|n| n <= x.len());
    if !fits || ow == 0 {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 {
        // SAFETY: the CPU has AVX-512F (`isa`); every input row read is one of the
        // first `2·oh` rows of `iw` inside `x`, read only in its first `2·ow` values,
        // and every output row is one of the `oh` rows of `ow` in `out` (`fits`).
        unsafe { max_pool_2x2s2_avx512(x, iw, oh, ow, out) };
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx2 {
        // SAFETY: the CPU has AVX2 (`isa`); as above, with whole blocks of eight
        // outputs reading inputs `2j..2j+16` of rows inside `x` (`2j + 16 ≤ 2·ow ≤ iw`).
        unsafe { max_pool_2x2s2_avx2(x, iw, oh, ow, out) };
        return true;
    }
    false
}

/// [`max_pool_2x2s2`] eight outputs at a time, the last few scalar in the same order.
///
/// # Safety
/// The CPU has AVX2, `x` holds at least `2·oh` rows of `iw ≥ 2·ow` values and `out`
/// exactly `oh` rows of `ow`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_pool_2x2s2_avx2(x: &[f32], iw: usize, oh: usize, ow: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let canon = _mm256_set1_ps(f32::from_bits(crate::kernels::gemm::CANONICAL_NAN_F32));
    // The even and the odd values of the sixteen at `p`, each in order.
    #[inline(always)]
    unsafe fn split(p: *const f32) -> (__m256, __m256) {
        let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
        let order =
            |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(v)));
        (
            order(_mm256_shuffle_ps::<0x88>(a, b)),
            order(_mm256_shuffle_ps::<0xDD>(a, b)),
        )
    }
    // Later values replace the kept one when larger or NaN.
    #[inline(always)]
    unsafe fn take(o: __m256, v: __m256) -> __m256 {
        let m = _mm256_or_ps(
            _mm256_cmp_ps::<_CMP_GT_OQ>(v, o),
            _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v),
        );
        _mm256_blendv_ps(o, v, m)
    }
    for i in 0..oh {
        let r0 = x.as_ptr().add(2 * i * iw);
        let r1 = r0.add(iw);
        let o = out.as_mut_ptr().add(i * ow);
        let mut j = 0;
        while j + 8 <= ow {
            let (e0, o0) = split(r0.add(2 * j));
            let (e1, o1) = split(r1.add(2 * j));
            let r = take(take(take(e0, o0), e1), o1);
            let r = _mm256_blendv_ps(r, canon, _mm256_cmp_ps::<_CMP_UNORD_Q>(r, r));
            _mm256_storeu_ps(o.add(j), r);
            j += 8;
        }
        for j in j..ow {
            let mut r = *r0.add(2 * j);
            for v in [*r0.add(2 * j + 1), *r1.add(2 * j), *r1.add(2 * j + 1)] {
                if v > r || v.is_nan() {
                    r = v;
                }
            }
            *o.add(j) = if r.is_nan() {
                f32::from_bits(crate::kernels::gemm::CANONICAL_NAN_F32)
            } else {
                r
            };
        }
    }
}

/// # Safety
/// The CPU has AVX-512F, `x` holds at least `2·oh` rows of `iw ≥ 2·ow` values and
/// `out` exactly `oh` rows of `ow`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_pool_2x2s2_avx512(x: &[f32], iw: usize, oh: usize, ow: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let canon = _mm512_set1_ps(f32::from_bits(crate::kernels::gemm::CANONICAL_NAN_F32));
    // Later values replace the kept one when larger or NaN.
    #[inline(always)]
    unsafe fn take(o: __m512, v: __m512) -> __m512 {
        let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, o) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        _mm512_mask_mov_ps(o, m, v)
    }
    for i in 0..oh {
        let r0 = x.as_ptr().add(2 * i * iw);
        let r1 = r0.add(iw);
        let o = out.as_mut_ptr().add(i * ow);
        let mut j = 0;
        while j < ow {
            // Outputs j..j+n read inputs 2j..2j+2n of both rows.
            let n = (ow - j).min(16);
            let lo = (2 * n).min(16);
            let hi = 2 * n - lo;
            let (mlo, mhi) = (
                ((1u32 << lo) - 1) as __mmask16,
                ((1u32 << hi) - 1) as __mmask16,
            );
            let a_lo = _mm512_maskz_loadu_ps(mlo, r0.add(2 * j));
            let a_hi = _mm512_maskz_loadu_ps(mhi, r0.add(2 * j + 16));
            let b_lo = _mm512_maskz_loadu_ps(mlo, r1.add(2 * j));
            let b_hi = _mm512_maskz_loadu_ps(mhi, r1.add(2 * j + 16));
            let mut r = _mm512_permutex2var_ps(a_lo, evens, a_hi);
            r = take(r, _mm512_permutex2var_ps(a_lo, odds, a_hi));
            r = take(r, _mm512_permutex2var_ps(b_lo, evens, b_hi));
            r = take(r, _mm512_permutex2var_ps(b_lo, odds, b_hi));
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(r, r);
            r = _mm512_mask_mov_ps(r, nan, canon);
            _mm512_mask_storeu_ps(o.add(j), ((1u32 << n) - 1) as __mmask16, r);
            j += n;
        }
    }
}

/// The reference for a hot unary kind (used by the tests and by `DEED_KERNELS=reference`).
#[cfg(test)]
fn reference_unary(k: Kind, x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| apply_float::<f32>(k, v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::KernelMode;
    use proptest::prelude::*;

    fn special() -> impl Strategy<Value = f32> {
        prop_oneof![
            4 => -12.0f32..12.0,
            2 => any::<f32>(),
            1 => Just(f32::NAN),
            1 => Just(-f32::NAN),
            1 => Just(f32::from_bits(0x7F80_0001)),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(0.0f32),
            1 => Just(-0.0f32),
            1 => (1u32..0x0080_0000).prop_map(f32::from_bits),
            1 => (1u32..0x0080_0000).prop_map(|b| -f32::from_bits(b)),
            1 => -90.0f32..90.0,
        ]
    }

    const KINDS: [Kind; 7] = [
        Kind::Relu,
        Kind::Exp,
        Kind::Tanh,
        Kind::Erf,
        Kind::Sigmoid,
        Kind::Gelu { tanh: false },
        Kind::Gelu { tanh: true },
    ];

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The 2×2 stride-2 MaxPool plane against the row steps, kernel offsets in
        /// row-major order, and the canonical NaN.
        #[test]
        fn max_pool_2x2s2_equals_row_steps(
            oh in 1usize..5,
            ow in 1usize..40,
            extra in 0usize..3,
            vals in prop::collection::vec(special(), 11 * 82),
        ) {
            let (ih, iw) = (2 * oh + extra, 2 * ow + extra);
            let x = &vals[..ih * iw];
            let mut want = vec![0.0f32; oh * ow];
            for i in 0..oh {
                for j in 0..ow {
                    let mut o = x[2 * i * iw + 2 * j];
                    for (a, e) in [(0, 1), (1, 0), (1, 1)] {
                        let v = x[(2 * i + a) * iw + 2 * j + e];
                        o = if v > o || v.is_nan() { v } else { o };
                    }
                    want[i * ow + j] = if o.is_nan() { f32::from_bits(crate::kernels::gemm::CANONICAL_NAN_F32) } else { o };
                }
            }
            let mut got = vec![0.0f32; oh * ow];
            if max_pool_2x2s2(x, iw, oh, ow, &mut got) {
                prop_assert_eq!(bits(&got), bits(&want));
            }
        }

        /// The stride-2 MaxPool row step against the scalar selects it vectorizes.
        #[test]
        fn max_into_stride2_equals_scalar(
            init in prop::collection::vec(special(), 0..70),
            src in prop::collection::vec(special(), 140),
            first in any::<bool>(),
        ) {
            let n = init.len();
            let src = &src[..(2 * n).saturating_sub(1)];
            let mut want = init.clone();
            for (j, o) in want.iter_mut().enumerate() {
                let v = src[2 * j];
                *o = if first || v > *o || v.is_nan() { v } else { *o };
            }
            let mut got = init.clone();
            max_into_stride2(&mut got, src, first);
            prop_assert_eq!(bits(&got), bits(&want));
        }

        #[test]
        fn unary_fast_equals_reference(
            x in prop::collection::vec(special(), 0..70),
            threads in 1usize..5,
        ) {
            let ctx = Ctx::new(KernelMode::Fast, threads);
            for k in KINDS {
                let h = Hot::of(k).unwrap();
                prop_assert_eq!(bits(&unary_f32(&ctx, h, &x)), bits(&reference_unary(k, &x)), "{:?}", k);
            }
        }

        #[test]
        fn binary_fast_equals_reference(
            x in prop::collection::vec(special(), 1..40),
            y in prop::collection::vec(special(), 1..40),
            scalar in 0u8..3,
            threads in 1usize..5,
        ) {
            let ctx = Ctx::new(KernelMode::Fast, threads);
            let n = x.len().min(y.len());
            let (a, b): (Vec<f32>, Vec<f32>) = match scalar {
                0 => (x[..n].to_vec(), y[..n].to_vec()),
                1 => (x.clone(), y[..1].to_vec()),
                _ => (x[..1].to_vec(), y.clone()),
            };
            let (ash, bsh) = (vec![a.len()], vec![b.len()]);
            let out = super::super::util::broadcast_shapes(&ash, &bsh).unwrap();
            for k in [BKind::Add, BKind::Sub, BKind::Mul, BKind::Div] {
                let h = HotBin::of(k).unwrap();
                let fast = binary_f32(&ctx, h, &a, &ash, &b, &bsh, &out).unwrap();
                let reference: Vec<f32> = (0..out[0])
                    .map(|i| float_bin::<f32>(k, a[if a.len() == 1 { 0 } else { i }], b[if b.len() == 1 { 0 } else { i }]))
                    .collect();
                prop_assert_eq!(bits(&fast), bits(&reference), "{:?}", k);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// A row vector (bias) broadcast over leading dimensions, on either side.
        #[test]
        fn row_broadcast_equals_reference(
            rows in 1usize..5,
            w in 1usize..20,
            vals in prop::collection::vec(special(), 100),
            lead_one in any::<bool>(),
            bias_left in any::<bool>(),
            threads in 1usize..5,
        ) {
            let ctx = Ctx::new(KernelMode::Fast, threads);
            let x: Vec<f32> = vals.iter().cycle().take(rows * w).copied().collect();
            let bias: Vec<f32> = vals[..w].iter().rev().copied().collect();
            let xsh = vec![rows, w];
            let bsh = if lead_one { vec![1, w] } else { vec![w] };
            let out = vec![rows, w];
            for k in [BKind::Add, BKind::Sub, BKind::Mul, BKind::Div] {
                let h = HotBin::of(k).unwrap();
                let (fast, reference): (Vec<f32>, Vec<f32>) = if bias_left {
                    (
                        binary_f32(&ctx, h, &bias, &bsh, &x, &xsh, &out).unwrap(),
                        (0..rows * w).map(|i| float_bin::<f32>(k, bias[i % w], x[i])).collect(),
                    )
                } else {
                    (
                        binary_f32(&ctx, h, &x, &xsh, &bias, &bsh, &out).unwrap(),
                        (0..rows * w).map(|i| float_bin::<f32>(k, x[i], bias[i % w])).collect(),
                    )
                };
                prop_assert_eq!(bits(&fast), bits(&reference), "{:?}", k);
            }
        }
    }

    /// Sizes above the threading threshold, with every thread count.
    #[test]
    fn large_inputs_across_threads() {
        let n = PAR_MIN * 2 + 13;
        let x: Vec<f32> = (0..n)
            .map(|i| f32::from_bits((i as u32).wrapping_mul(2_654_435_761)))
            .collect();
        for k in KINDS {
            let want = bits(&reference_unary(k, &x));
            for t in 1..=4 {
                let ctx = Ctx::new(KernelMode::Fast, t);
                assert_eq!(
                    bits(&unary_f32(&ctx, Hot::of(k).unwrap(), &x)),
                    want,
                    "{k:?} threads {t}"
                );
            }
        }
        let y: Vec<f32> = x.iter().rev().copied().collect();
        let sh = vec![n];
        for k in [BKind::Add, BKind::Div] {
            let want: Vec<u32> = x
                .iter()
                .zip(&y)
                .map(|(&p, &q)| float_bin::<f32>(k, p, q).to_bits())
                .collect();
            for t in 1..=4 {
                let ctx = Ctx::new(KernelMode::Fast, t);
                let got = binary_f32(&ctx, HotBin::of(k).unwrap(), &x, &sh, &y, &sh, &sh).unwrap();
                assert_eq!(bits(&got), want);
            }
        }
    }

    /// The flat index into an operand of shape `sh` that output element `i` (of
    /// shape `out`) reads under numpy broadcasting: the output coordinates, aligned
    /// at the right, with every axis the operand has as 1 read at 0.
    fn numpy_index(i: usize, sh: &[usize], out: &[usize]) -> usize {
        let (mut rest, mut idx, mut stride) = (i, 0, 1);
        for d in (0..out.len()).rev() {
            let coord = rest % out[d];
            rest /= out[d];
            let back = out.len() - 1 - d;
            if back < sh.len() {
                let sd = sh[sh.len() - 1 - back];
                idx += if sd == 1 { 0 } else { coord } * stride;
                stride *= sd;
            }
        }
        idx
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// The fast binary kernels on operands of rank 0 to 4 whose shapes broadcast
        /// in every way numpy allows (either side 1 or missing on any axis, sizes up
        /// to past a vector's width), against the definition: output element `i` is
        /// `op(a[ia], b[ib])` with the indices of [`numpy_index`]. At 1-4 threads.
        #[test]
        fn binary_broadcasts_as_numpy_does(
            dims in prop::collection::vec((prop_oneof![1usize..4, 15usize..40], 0u8..3), 0..5),
            (drop_a, drop_b) in (0usize..3, 0usize..3),
            vals in prop::collection::vec(special(), 64),
            threads in 1usize..5,
        ) {
            // Per axis: 0 keeps both sides, 1 makes A's 1, 2 makes B's 1; then each
            // side may lose leading axes.
            let a_full: Vec<usize> = dims.iter().map(|&(d, o)| if o == 1 { 1 } else { d }).collect();
            let b_full: Vec<usize> = dims.iter().map(|&(d, o)| if o == 2 { 1 } else { d }).collect();
            let ash = a_full[drop_a.min(a_full.len())..].to_vec();
            let bsh = b_full[drop_b.min(b_full.len())..].to_vec();
            let out = super::super::util::broadcast_shapes(&ash, &bsh).unwrap();
            let (na, nb, n) = (ash.iter().product::<usize>(), bsh.iter().product::<usize>(), out.iter().product::<usize>());
            let a: Vec<f32> = (0..na).map(|i| vals[(i * 7) % 64]).collect();
            let b: Vec<f32> = (0..nb).map(|i| vals[(i * 5 + 3) % 64]).collect();
            let ctx = Ctx::new(KernelMode::Fast, threads);
            for k in [BKind::Add, BKind::Sub, BKind::Mul, BKind::Div] {
                let fast = binary_f32(&ctx, HotBin::of(k).unwrap(), &a, &ash, &b, &bsh, &out).unwrap();
                let want: Vec<f32> = (0..n)
                    .map(|i| float_bin::<f32>(k, a[numpy_index(i, &ash, &out)], b[numpy_index(i, &bsh, &out)]))
                    .collect();
                prop_assert_eq!(bits(&fast), bits(&want), "{:?} {:?} {:?}", k, ash, bsh);
            }
        }
    }
}
