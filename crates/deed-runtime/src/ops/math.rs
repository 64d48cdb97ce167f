//! Deed's own transcendental functions: the same bits on every platform.
//!
//! Kernels never call the platform libm (`f32::exp`, `f64::sin`, …): its results differ
//! between C libraries and versions, and a verifier on another machine must reproduce
//! every bit. Two sources are used instead, and both are part of the specification
//! (`docs/canonical-semantics.md`):
//!
//! - **Hot f32 functions** ([`exp_f32`], [`ln_f32`], [`tanh_f32`], [`sigmoid_f32`],
//!   [`erf_f32`]) are written here: range reduction, a fixed polynomial evaluated by
//!   Horner's rule with fused multiply-adds (`mul_add`, one rounding each — Rust never
//!   contracts or reassociates float arithmetic on its own), and scaling by 2^k through
//!   integer bit manipulation. They have no data-dependent branches: every special case
//!   (NaN, ±Inf, overflow, underflow, denormals, −0) is a *select* on the lane, so the
//!   same code compiled for 8-wide AVX2 lanes gives bit-identical results (see
//!   `elementwise::simd`). Accuracy against the exact value: ≤ 2 ulp for exp and ln,
//!   ≤ 3 ulp for sigmoid and tanh, ≤ 6 ulp for erf (tested below).
//! - **Everything else** (trigonometric, hyperbolic, inverse functions, `pow`, and all
//!   the f64 functions) is the pure-Rust [`libm`] crate, pinned at exactly version
//!   0.2.16 (a port of musl's libm); that version's source is the specification. Its only
//!   architecture-specific code is `sqrt` and `fma`, which IEEE 754 defines exactly. The
//!   f32 variants of these functions are computed in f64 and rounded once to f32
//!   (round-to-nearest-even), which is more accurate than musl's f32 functions.
//!
//! Every NaN result is the canonical quiet NaN ([`NAN_F32`], [`NAN_F64`]): hardware
//! differs in which NaN payload an operation propagates, and a trace hashes the bits.

/// The canonical f32 NaN (quiet, positive, no payload): `0x7FC0_0000`.
pub const NAN_F32: f32 = f32::from_bits(0x7FC0_0000);
/// The canonical f64 NaN (quiet, positive, no payload): `0x7FF8_0000_0000_0000`.
pub const NAN_F64: f64 = f64::from_bits(0x7FF8_0000_0000_0000);

/// Replaces any NaN by [`NAN_F32`].
#[inline(always)]
pub fn canon_f32(x: f32) -> f32 {
    if x.is_nan() {
        NAN_F32
    } else {
        x
    }
}

/// Replaces any NaN by [`NAN_F64`].
#[inline(always)]
pub fn canon_f64(x: f64) -> f64 {
    if x.is_nan() {
        NAN_F64
    } else {
        x
    }
}

/// `a * b + c` with one rounding.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// Round to nearest, ties to even, for |v| < 2^22, by pure arithmetic (no libm call,
/// and the same two instructions in every SIMD lane).
#[inline(always)]
fn round_even_small(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (v + MAGIC) - MAGIC
}

/// 2^n for n in [-126, 127], built from the exponent bits.
#[inline(always)]
fn pow2i(n: i32) -> f32 {
    f32::from_bits(((n + 127) as u32) << 23)
}

/// e^x for f32.
///
/// `n = round(x·log2 e)`, `r = x − n·ln2` (ln 2 split in two, each subtraction fused),
/// `e^r` by a degree-7 polynomial (Cephes `expf` coefficients), then `· 2^⌊n/2⌋ · 2^(n−⌊n/2⌋)`:
/// two exact power-of-two factors, so a result in the denormal range is rounded once
/// and an overflow gives +Inf by IEEE multiplication. x is first clamped to
/// [−104, 89], beyond which the result is 0 or +Inf anyway.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 0.693359375, exact in 9 bits
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-104.0, 89.0);
    let n = round_even_small(xc * LOG2E);
    let r = fma(n, -LN2_HI, xc);
    let r = fma(n, -LN2_LO, r);
    let mut p: f32 = 1.987_569_1e-4;
    p = fma(p, r, 1.398_199_9e-3);
    p = fma(p, r, 8.333_452e-3);
    p = fma(p, r, 4.166_579_6e-2);
    p = fma(p, r, 1.666_666_5e-1);
    p = fma(p, r, 0.5);
    let y = fma(p, r * r, r) + 1.0;
    // NaN input: `n as i32` saturates to 0 and y is NaN, replaced below.
    let ni = n as i32;
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let res = y * pow2i(n1) * pow2i(n2);
    canon_f32(res)
}

/// Natural logarithm for f32.
///
/// Denormal inputs are first scaled by 2^23. `x = m·2^e` with `m ∈ [√½, √2)`, then
/// `ln x = e·ln2 + ln(1+f)`, `f = m − 1`, with `ln(1+f)` by the Cephes `logf` polynomial;
/// `ln2` is split in two (the low part added first). ln(±0) = −Inf, ln(x<0) = NaN,
/// ln(+Inf) = +Inf.
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let tiny = x < f32::MIN_POSITIVE;
    let xs = if tiny { x * 8_388_608.0 } else { x };
    let bits = xs.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 126 - if tiny { 23 } else { 0 };
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000); // [0.5, 1)
    let lo = m < SQRT_HALF;
    e -= lo as i32;
    let f = if lo { m + m - 1.0 } else { m - 1.0 };
    let z = f * f;
    let mut p: f32 = 7.037_683_6e-2;
    p = fma(p, f, -1.151_461e-1);
    p = fma(p, f, 1.167_699_9e-1);
    p = fma(p, f, -1.242_014_1e-1);
    p = fma(p, f, 1.424_932_3e-1);
    p = fma(p, f, -1.666_805_8e-1);
    p = fma(p, f, 2.000_071_5e-1);
    p = fma(p, f, -2.499_999_4e-1);
    p = fma(p, f, 3.333_333e-1);
    let fe = e as f32;
    let mut y = p * f * z;
    y = fma(fe, -2.121_944_4e-4, y);
    y = fma(z, -0.5, y);
    let r = fma(fe, 0.693_359_4, f + y);
    let r = if x == f32::INFINITY { x } else { r };
    let r = if x == 0.0 { f32::NEG_INFINITY } else { r };
    let r = if x < 0.0 || x.is_nan() { NAN_F32 } else { r };
    canon_f32(r)
}

/// Hyperbolic tangent for f32.
///
/// For |x| < 0.625 an odd polynomial (Cephes `tanhf`): `x + x·z·P(z)`, `z = x²`, which
/// keeps −0 and denormals exact. Otherwise `sign(x)·(1 − 2/(e^{2|x|} + 1))` with [`exp_f32`]
/// of `2·min(|x|, 9.5)`; beyond 9.5 the result is ±1 in f32 anyway.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let mut p: f32 = -5.704_988_7e-3;
    p = fma(p, z, 2.063_909e-2);
    p = fma(p, z, -5.373_971_6e-2);
    p = fma(p, z, 1.333_144_2e-1);
    p = fma(p, z, -3.333_328e-1);
    let small = fma(p * z, x, x);
    // The fused step turns −0 into +0; tanh(±0) is ±0.
    let small = if x == 0.0 { x } else { small };
    let e = exp_f32(2.0 * a.min(9.5));
    let big = (1.0 - 2.0 / (e + 1.0)).copysign(x);
    let r = if a < 0.625 { small } else { big };
    if x.is_nan() {
        NAN_F32
    } else {
        r
    }
}

/// Logistic sigmoid `1 / (1 + e^{−x})` for f32.
///
/// With `e = e^{−|x|}` (never overflows) and `d = 1 + e`: `1/d` for x ≥ 0 and `e/d` for
/// x < 0, so large negative inputs keep their relative accuracy instead of dividing by
/// an overflowed exponential.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    let e = exp_f32(-x.abs());
    let d = 1.0 + e;
    let num = if x < 0.0 { e } else { 1.0 };
    canon_f32(num / d)
}

/// Error function for f32.
///
/// x is clamped to [−4, 4] (erf is ±1 in f32 beyond), then `erf(x) ≈ x·P(x²)/Q(x²)`: the
/// rational approximation of degree 13/8 used by Eigen and XLA for `erf` on floats,
/// evaluated by Horner's rule with fused multiply-adds; `x·(P/Q)` keeps denormal
/// inputs accurate.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let xc = x.clamp(-4.0, 4.0);
    let x2 = xc * xc;
    let mut p: f32 = -2.726_142_3e-10;
    p = fma(p, x2, 2.770_681_4e-8);
    p = fma(p, x2, -2.101_024e-6);
    p = fma(p, x2, -5.692_506_6e-5);
    p = fma(p, x2, -7.349_906_3e-4);
    p = fma(p, x2, -2.954_6e-3);
    p = fma(p, x2, -1.609_603_3e-2);
    let mut q: f32 = -1.456_607_2e-5;
    q = fma(q, x2, -2.133_740_5e-4);
    q = fma(q, x2, -1.682_827e-3);
    q = fma(q, x2, -7.373_329e-3);
    q = fma(q, x2, -1.426_473_9e-2);
    let r = xc * (p / q);
    // Beyond 3.92, erf rounds to ±1 in f32; the rational can be an ulp off there.
    let r = if xc.abs() >= 3.92 {
        1.0f32.copysign(xc)
    } else {
        r
    };
    canon_f32(r.clamp(-1.0, 1.0))
}

macro_rules! via_f64 {
    ($(#[$m:meta] $name32:ident, $name64:ident => $libm:ident;)*) => {$(
        #[$m]
        #[doc = ""]
        #[doc = concat!("f64: `libm::", stringify!($libm), "` (libm 0.2.16).")]
        #[inline]
        pub fn $name64(x: f64) -> f64 {
            canon_f64(libm::$libm(x))
        }
        #[$m]
        #[doc = ""]
        #[doc = concat!("f32: `libm::", stringify!($libm), "` on the value widened to f64, rounded once to f32.")]
        #[inline]
        pub fn $name32(x: f32) -> f32 {
            canon_f32(libm::$libm(x as f64) as f32)
        }
    )*};
}

via_f64! {
    /// Sine.
    sin_f32, sin_f64 => sin;
    /// Cosine.
    cos_f32, cos_f64 => cos;
    /// Tangent.
    tan_f32, tan_f64 => tan;
    /// Arcsine (NaN outside [−1, 1]).
    asin_f32, asin_f64 => asin;
    /// Arccosine (NaN outside [−1, 1]).
    acos_f32, acos_f64 => acos;
    /// Arctangent.
    atan_f32, atan_f64 => atan;
    /// Hyperbolic sine.
    sinh_f32, sinh_f64 => sinh;
    /// Hyperbolic cosine.
    cosh_f32, cosh_f64 => cosh;
    /// Inverse hyperbolic sine.
    asinh_f32, asinh_f64 => asinh;
    /// Inverse hyperbolic cosine (NaN below 1).
    acosh_f32, acosh_f64 => acosh;
    /// Inverse hyperbolic tangent (±Inf at ±1, NaN beyond).
    atanh_f32, atanh_f64 => atanh;
    /// `ln(1 + x)`, accurate near 0.
    log1p_f32, log1p_f64 => log1p;
    /// `e^x − 1`, accurate near 0.
    expm1_f32, expm1_f64 => expm1;
}

/// e^x for f64: `libm::exp` (libm 0.2.16).
#[inline]
pub fn exp_f64(x: f64) -> f64 {
    canon_f64(libm::exp(x))
}

/// Natural logarithm for f64: `libm::log` (libm 0.2.16).
#[inline]
pub fn ln_f64(x: f64) -> f64 {
    canon_f64(libm::log(x))
}

/// Hyperbolic tangent for f64: `libm::tanh` (libm 0.2.16).
#[inline]
pub fn tanh_f64(x: f64) -> f64 {
    canon_f64(libm::tanh(x))
}

/// Error function for f64: `libm::erf` (libm 0.2.16).
#[inline]
pub fn erf_f64(x: f64) -> f64 {
    canon_f64(libm::erf(x))
}

/// Logistic sigmoid for f64, as [`sigmoid_f32`] with `libm::exp`.
#[inline]
pub fn sigmoid_f64(x: f64) -> f64 {
    let e = libm::exp(-x.abs());
    let d = 1.0 + e;
    let num = if x < 0.0 { e } else { 1.0 };
    canon_f64(num / d)
}

/// `x^y` for f64: `libm::pow` (libm 0.2.16), C99 special cases (`pow(x, ±0) = 1` even for
/// NaN x, `pow(1, y) = 1` even for NaN y).
#[inline]
pub fn pow_f64(x: f64, y: f64) -> f64 {
    canon_f64(libm::pow(x, y))
}

/// `x^y` for f32: [`pow_f64`] on the widened values, rounded once to f32.
#[inline]
pub fn pow_f32(x: f32, y: f32) -> f32 {
    canon_f32(libm::pow(x as f64, y as f64) as f32)
}

/// `ln(1 + e^x)` for f64, computed without overflow as `max(x, 0) + log1p(e^{−|x|})`.
#[inline]
pub fn softplus_f64(x: f64) -> f64 {
    let r = x.max(0.0) + libm::log1p(libm::exp(-x.abs()));
    canon_f64(if x.is_nan() { f64::NAN } else { r })
}

/// `ln(1 + e^x)` for f32: [`softplus_f64`] on the widened value, rounded once.
#[inline]
pub fn softplus_f32(x: f32) -> f32 {
    canon_f32(softplus_f64(x as f64) as f32)
}

/// f32 remainder of truncated division (C `fmodf`): exact, via `libm::fmod` in f64
/// (exact for f32 operands, so the rounding back is exact too).
#[inline]
pub fn fmod_f32(x: f32, y: f32) -> f32 {
    canon_f32(libm::fmod(x as f64, y as f64) as f32)
}

/// f64 remainder of truncated division (C `fmod`): exact, `libm::fmod`.
#[inline]
pub fn fmod_f64(x: f64, y: f64) -> f64 {
    canon_f64(libm::fmod(x, y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Distance in f32 ulps between `got` and the exact value `want` (given in f64).
    fn ulps(got: f32, want: f64) -> f64 {
        if got.is_nan() || want.is_nan() {
            return if got.is_nan() && want.is_nan() {
                0.0
            } else {
                f64::INFINITY
            };
        }
        let w = want as f32;
        if got == w {
            return 0.0;
        }
        if got.is_infinite() || w.is_infinite() {
            return f64::INFINITY;
        }
        // The ulp at the exact value (the smallest denormal step below the normals).
        let a = (want.abs() as f32).max(f32::MIN_POSITIVE);
        let ulp = (f32::from_bits(a.to_bits() + 1) - a) as f64;
        (got as f64 - want).abs() / ulp
    }

    fn check(
        name: &str,
        f: impl Fn(f32) -> f32,
        oracle: impl Fn(f64) -> f64,
        lo: f32,
        hi: f32,
        max: f64,
    ) {
        let n = 200_000u32;
        let mut worst = (0.0, 0.0f32);
        for i in 0..=n {
            let x = lo + (hi - lo) * (i as f32 / n as f32);
            let u = ulps(f(x), oracle(x as f64));
            if u > worst.0 {
                worst = (u, x);
            }
        }
        assert!(
            worst.0 <= max,
            "{name}: {} ulp at {:e} (got {:e}, want {:e})",
            worst.0,
            worst.1,
            f(worst.1),
            oracle(worst.1 as f64)
        );
    }

    // std's f64 functions appear here only, as an accuracy oracle.
    #[test]
    fn exp_accuracy() {
        check("exp", exp_f32, f64::exp, -104.0, 89.0, 2.0);
        check("exp", exp_f32, f64::exp, -2.0, 2.0, 2.0);
        check("exp", exp_f32, f64::exp, -88.0, -86.0, 2.0);
    }

    #[test]
    fn ln_accuracy() {
        check("ln", ln_f32, f64::ln, 1e-3, 10.0, 2.0);
        check("ln", ln_f32, f64::ln, 0.5, 2.0, 2.0);
        check("ln", ln_f32, f64::ln, 1.0, 3e38, 2.0);
        check("ln", ln_f32, f64::ln, 1e-44, 1e-37, 2.0);
    }

    #[test]
    fn tanh_accuracy() {
        check("tanh", tanh_f32, f64::tanh, -12.0, 12.0, 3.0);
        check("tanh", tanh_f32, f64::tanh, -1.0, 1.0, 3.0);
        check("tanh", tanh_f32, f64::tanh, -1e-3, 1e-3, 3.0);
    }

    #[test]
    fn sigmoid_accuracy() {
        let s = |x: f64| 1.0 / (1.0 + (-x).exp());
        check("sigmoid", sigmoid_f32, s, -100.0, 100.0, 3.0);
        check("sigmoid", sigmoid_f32, s, -5.0, 5.0, 3.0);
    }

    #[test]
    fn erf_accuracy() {
        check("erf", erf_f32, libm::erf, -6.0, 6.0, 6.0);
        check("erf", erf_f32, libm::erf, -1e-2, 1e-2, 6.0);
    }

    #[test]
    fn via_f64_is_close_to_std() {
        check("sin", sin_f32, f64::sin, -10.0, 10.0, 1.0);
        check("atan", atan_f32, f64::atan, -10.0, 10.0, 1.0);
        check("acosh", acosh_f32, f64::acosh, 1.0, 100.0, 1.0);
    }

    #[test]
    fn special_values() {
        let nan = f32::NAN;
        let inf = f32::INFINITY;
        for f in [exp_f32, ln_f32, tanh_f32, sigmoid_f32, erf_f32] {
            assert_eq!(f(nan).to_bits(), NAN_F32.to_bits());
            assert_eq!(f(-nan).to_bits(), NAN_F32.to_bits());
        }
        assert_eq!(exp_f32(inf), inf);
        assert_eq!(exp_f32(-inf).to_bits(), 0);
        assert_eq!(exp_f32(89.0), inf);
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-0.0), 1.0);
        assert!(exp_f32(-100.0) > 0.0 && exp_f32(-100.0) < f32::MIN_POSITIVE);
        assert_eq!(exp_f32(-104.0).to_bits(), 0);
        assert_eq!(ln_f32(0.0), -inf);
        assert_eq!(ln_f32(-0.0), -inf);
        assert_eq!(ln_f32(inf), inf);
        assert_eq!(ln_f32(1.0).to_bits(), 0);
        assert_eq!(ln_f32(-1.0).to_bits(), NAN_F32.to_bits());
        assert_eq!(ln_f32(-inf).to_bits(), NAN_F32.to_bits());
        assert!((ln_f32(f32::from_bits(1)) - (-103.278_93)).abs() < 1e-4);
        assert_eq!(tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh_f32(inf), 1.0);
        assert_eq!(tanh_f32(-inf), -1.0);
        assert_eq!(tanh_f32(f32::from_bits(3)), f32::from_bits(3));
        assert_eq!(sigmoid_f32(inf), 1.0);
        assert_eq!(sigmoid_f32(-inf).to_bits(), 0);
        assert_eq!(sigmoid_f32(0.0), 0.5);
        assert_eq!(erf_f32(inf), 1.0);
        assert_eq!(erf_f32(-inf), -1.0);
        assert_eq!(erf_f32(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(pow_f32(nan, 0.0), 1.0);
        assert_eq!(pow_f32(2.0, 10.0), 1024.0);
        assert_eq!(sin_f32(nan).to_bits(), NAN_F32.to_bits());
        assert_eq!(softplus_f32(100.0), 100.0);
        assert_eq!(softplus_f32(-inf), 0.0);
        assert_eq!(fmod_f32(7.5, 2.0), 1.5);
        assert_eq!(fmod_f32(-7.5, 2.0), -1.5);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn exp_ln_random(bits in any::<u32>()) {
            let x = f32::from_bits(bits);
            if x.is_finite() && x.abs() < 88.0 {
                prop_assert!(ulps(exp_f32(x), (x as f64).exp()) <= 2.0);
            }
            if x.is_finite() && x > 0.0 {
                prop_assert!(ulps(ln_f32(x), (x as f64).ln()) <= 2.0, "ln {x:e}");
            }
            prop_assert!(ulps(tanh_f32(x), (x as f64).tanh()) <= 3.0, "tanh {x:e}");
            prop_assert!(ulps(erf_f32(x), libm::erf(x as f64)) <= 6.0, "erf {x:e}");
        }
    }
}
