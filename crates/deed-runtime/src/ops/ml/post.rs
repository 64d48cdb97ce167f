//! Score post transforms of the ML classifiers and regressors (`post_transform`),
//! with the project's own `exp` and `ln` (never the platform libm).

use crate::error::OpError;

/// A `post_transform` attribute value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    /// Scores unchanged.
    None,
    /// `1 / (1 + exp(-x))`, computed as in [`logistic`].
    Logistic,
    /// Row softmax, see [`softmax`].
    Softmax,
    /// Row softmax that keeps exact zeros at zero, see [`softmax_zero`].
    SoftmaxZero,
    /// `√2 · erfinv(2x − 1)` with the Winitzki approximation, see [`probit`].
    Probit,
}

impl PostTransform {
    /// Parses the attribute value (absent = `NONE`).
    pub fn parse(s: &str) -> Result<PostTransform, OpError> {
        Ok(match s {
            "NONE" | "" => PostTransform::None,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX" => PostTransform::Softmax,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            "PROBIT" => PostTransform::Probit,
            other => {
                return Err(OpError::bad_attr(
                    "post_transform",
                    format!("unknown value {other}"),
                ))
            }
        })
    }

    /// Applies the transform to one row of scores in place.
    pub fn apply(self, row: &mut [f32]) {
        match self {
            PostTransform::None => {}
            PostTransform::Logistic => row.iter_mut().for_each(|v| *v = logistic(*v)),
            PostTransform::Softmax => softmax(row),
            PostTransform::SoftmaxZero => softmax_zero(row),
            PostTransform::Probit => row.iter_mut().for_each(|v| *v = probit(*v)),
        }
    }
}

/// `exp` in f32: the f64 [`exp_f64`] rounded once to f32.
pub fn exp_f32(x: f32) -> f32 {
    exp_f64(f64::from(x)) as f32
}

/// `exp` in f64 by range reduction `x = k·ln2 + r`, |r| ≤ ln2/2, and a degree-13
/// Taylor polynomial of `e^r` evaluated by Horner's rule with separate multiply and
/// add, then scaled by `2^k`. Only IEEE-exact basic operations are used, so the
/// result is the same on every machine.
pub fn exp_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.782712893384 {
        return f64::INFINITY;
    }
    if x < -745.1332191019412 {
        return 0.0;
    }
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let k = (x * std::f64::consts::LOG2_E).round_ties_even();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0f64;
    let mut i = 13;
    while i >= 1 {
        p = 1.0 + p * r / f64::from(i);
        i -= 1;
    }
    scale2(p, k as i32)
}

/// `v · 2^k` for `k` in the exponent range reachable from [`exp_f64`].
fn scale2(v: f64, k: i32) -> f64 {
    let pow = |e: i32| f64::from_bits(((e + 1023) as u64) << 52);
    if k > 1023 {
        v * pow(1023) * pow(k - 1023)
    } else if k < -1022 {
        // Two steps so that the intermediate stays normal; the final product rounds
        // once into the subnormal range.
        v * pow(k + 600) * pow(-600)
    } else {
        v * pow(k)
    }
}

/// Natural logarithm in f64: `x = m·2^e` with `m ∈ [√½, √2)`, then
/// `ln m = 2·atanh(s)`, `s = (m−1)/(m+1)`, summed as the odd series up to `s²³`
/// (Horner, separate multiply and add), plus `e·ln2`.
pub fn ln_f64(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return x;
    }
    let (mut x, mut e) = (x, 0i32);
    if x < f64::MIN_POSITIVE {
        x *= f64::from_bits((1023u64 + 54) << 52);
        e -= 54;
    }
    let bits = x.to_bits();
    e += ((bits >> 52) & 0x7ff) as i32 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut p = 0.0f64;
    let mut j = 23;
    while j >= 1 {
        p = 1.0 / f64::from(j) + p * s2;
        j -= 2;
    }
    2.0 * s * p + f64::from(e) * std::f64::consts::LN_2
}

/// `1/(1+exp(−|x|))`, mirrored to `1 − v` for negative `x`, all in f32.
pub fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + exp_f32(-x.abs()));
    if x < 0.0 {
        1.0 - v
    } else {
        v
    }
}

/// Softmax of a row in f32: `m` = the row maximum (first element, then every
/// larger one in order; NaN never replaces it), `e_i = exp(x_i − m)`, the sum of
/// the `e_i` sequentially from +0.0, then each `e_i / sum`.
pub fn softmax(row: &mut [f32]) {
    let Some(&first) = row.first() else {
        return;
    };
    let m = row.iter().fold(first, |m, &v| if v > m { v } else { m });
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = exp_f32(*v - m);
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// Softmax that leaves (near-)zero scores out: values with `|x| ≤ 1e−7` become
/// `x·exp(−m)`, the others `exp(x − m)`; then divided by their sequential sum,
/// or all set to 0.5 when that sum is 0 (as onnxruntime does).
pub fn softmax_zero(row: &mut [f32]) {
    let Some(&first) = row.first() else {
        return;
    };
    let m = row.iter().fold(first, |m, &v| if v > m { v } else { m });
    let e_neg_m = exp_f32(-m);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = if *v > 0.000_000_1 || *v < -0.000_000_1 {
            exp_f32(*v - m)
        } else {
            *v * e_neg_m
        };
        sum += *v;
    }
    if sum == 0.0 {
        row.iter_mut().for_each(|v| *v = 0.5);
    } else {
        row.iter_mut().for_each(|v| *v /= sum);
    }
}

/// `1.41421356 · erfinv(2x − 1)`, computed in f64 and rounded once to f32, with
/// erfinv by Winitzki's approximation (a = 0.147), as onnxruntime defines it.
pub fn probit(x: f32) -> f32 {
    let y = f64::from(x) * 2.0 - 1.0;
    let sgn = if y < 0.0 { -1.0 } else { 1.0 };
    let t = (1.0 - y) * (1.0 + y);
    let e = if t == 0.0 {
        0.0
    } else {
        let l = ln_f64(t);
        let v = 2.0 / (std::f64::consts::PI * 0.147) + 0.5 * l;
        let v2 = 1.0 / 0.147 * l;
        sgn * (-v + (v * v - v2).sqrt()).sqrt()
    };
    // The truncated √2 of onnxruntime's definition, not the exact constant.
    #[allow(clippy::approx_constant)]
    let sqrt2 = 1.414_213_56;
    (sqrt2 * e) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        ((a - b) / b).abs()
    }

    #[test]
    fn exp_is_accurate() {
        for &(x, want) in &[
            (0.0, 1.0),
            (1.0, std::f64::consts::E),
            (-1.0, 0.367_879_441_171_442_33),
            (10.5, 36_315.502_674_246_64),
            (-700.0, 9.859_676_543_759_77e-305),
        ] {
            assert!(rel(exp_f64(x), want) < 4e-16, "exp({x})");
        }
        assert_eq!(exp_f64(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp_f64(f64::INFINITY), f64::INFINITY);
        assert!(exp_f64(-740.0) > 0.0);
        assert!(exp_f64(f64::NAN).is_nan());
    }

    #[test]
    fn ln_is_accurate() {
        for &(x, want) in &[
            (2.0, std::f64::consts::LN_2),
            (10.0, std::f64::consts::LN_10),
            (0.3, -1.203_972_804_325_936),
            (1e-310, -713.801_378_828_154_2),
        ] {
            assert!(rel(ln_f64(x), want) < 4e-16, "ln({x})");
        }
        assert_eq!(ln_f64(1.0), 0.0);
        assert!(ln_f64(-1.0).is_nan());
    }

    #[test]
    fn softmax_sums_to_one_and_logistic_is_symmetric() {
        let mut r = [1.0f32, 2.0, 3.0];
        softmax(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(r[2] > r[1] && r[1] > r[0]);
        assert_eq!(logistic(0.0), 0.5);
        assert!((logistic(2.0) + logistic(-2.0) - 1.0).abs() < 1e-7);
        let mut z = [0.0f32, 0.0];
        softmax_zero(&mut z);
        assert_eq!(z, [0.5, 0.5]);
        assert!(probit(0.5).abs() < 1e-7);
        assert!((probit(0.975) - 1.959_964).abs() < 5e-3);
    }
}
