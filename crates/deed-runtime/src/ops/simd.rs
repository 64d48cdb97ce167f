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

#[inline(always)]
fn map_slice<F: Fn(f32) -> f32 + Copy>(src: &[f32], dst: &mut [f32], f: F) {
    with_fma(
        #[inline(always)]
        || {
            for (o, &v) in dst.iter_mut().zip(src) {
                *o = f(v);
            }
        },
    )
}

#[inline(always)]
fn zip_slice<F: Fn(f32, f32) -> f32 + Copy>(a: &[f32], b: &[f32], dst: &mut [f32], f: F) {
    with_fma(
        #[inline(always)]
        || {
            for ((o, &x), &y) in dst.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        },
    )
}

fn map_f32<F: Fn(f32) -> f32 + Copy + Send + Sync>(ctx: &Ctx, x: &[f32], f: F) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    if x.len() >= PAR_MIN && ctx.threads() > 1 {
        ctx.for_each_chunk(&mut out, CHUNK, |i, c| {
            let s = i * CHUNK;
            map_slice(&x[s..s + c.len()], c, f)
        });
    } else {
        map_slice(x, &mut out, f);
    }
    out
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
    let mut o = vec![0.0f32; n];
    if a.len() == n && b.len() == n {
        let run = |s: usize, c: &mut [f32]| zip_slice(&a[s..s + c.len()], &b[s..s + c.len()], c, f);
        if par {
            ctx.for_each_chunk(&mut o, CHUNK, |i, c| run(i * CHUNK, c));
        } else {
            run(0, &mut o);
        }
    } else if b.len() == 1 && a.len() == n {
        let y = b[0];
        let run = |s: usize, c: &mut [f32]| map_slice(&a[s..s + c.len()], c, move |x| f(x, y));
        if par {
            ctx.for_each_chunk(&mut o, CHUNK, |i, c| run(i * CHUNK, c));
        } else {
            run(0, &mut o);
        }
    } else if a.len() == 1 && b.len() == n {
        let x = a[0];
        let run = |s: usize, c: &mut [f32]| map_slice(&b[s..s + c.len()], c, move |y| f(x, y));
        if par {
            ctx.for_each_chunk(&mut o, CHUNK, |i, c| run(i * CHUNK, c));
        } else {
            run(0, &mut o);
        }
    } else if a.len() == n && is_row(b, bsh, out) {
        // A row vector (a bias) repeated over the leading dimensions.
        let w = b.len();
        let run = |s: usize, c: &mut [f32]| {
            let len = c.len();
            for (dst, src) in c.chunks_mut(w).zip(a[s..s + len].chunks(w)) {
                zip_slice(src, b, dst, f);
            }
        };
        let chunk = CHUNK.div_ceil(w) * w;
        if par {
            ctx.for_each_chunk(&mut o, chunk, |i, c| run(i * chunk, c));
        } else {
            run(0, &mut o);
        }
    } else if b.len() == n && is_row(a, ash, out) {
        let w = a.len();
        let run = |s: usize, c: &mut [f32]| {
            let len = c.len();
            for (dst, src) in c.chunks_mut(w).zip(b[s..s + len].chunks(w)) {
                zip_slice(a, src, dst, f);
            }
        };
        let chunk = CHUNK.div_ceil(w) * w;
        if par {
            ctx.for_each_chunk(&mut o, chunk, |i, c| run(i * chunk, c));
        } else {
            run(0, &mut o);
        }
    } else {
        return map2(ctx, a, ash, b, bsh, out, f);
    }
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
}
