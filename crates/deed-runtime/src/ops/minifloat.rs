//! Conversions of exact numbers to the ONNX low-bit types: the scalar reference that
//! `Cast`, `CastLike` and `QuantizeLinear` share, written with integer operations only
//! (no floating-point arithmetic, no libm), so its results are the same on every host.
//!
//! A source value is first made an exact [`Num`] (an `f64` or an integer is
//! `±mant · 2^exp` with no rounding); each conversion then rounds that value once.
//! The rules are in `docs/canonical-semantics.md` ("The low-bit dtypes").

/// An exact number: NaN, an infinity, or `±mant · 2^exp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Num {
    /// Not a number, with its sign bit.
    Nan {
        /// The sign bit.
        neg: bool,
    },
    /// An infinity.
    Inf {
        /// True for −∞.
        neg: bool,
    },
    /// `(−1)^neg · mant · 2^exp` (a zero has `mant` 0 and keeps its sign).
    Finite {
        /// The sign.
        neg: bool,
        /// The integer significand.
        mant: u128,
        /// The power of two it is scaled by.
        exp: i32,
    },
}

impl Num {
    /// The exact value of an `f64`.
    pub fn from_f64(x: f64) -> Num {
        let bits = x.to_bits();
        let neg = bits >> 63 == 1;
        let e = ((bits >> 52) & 0x7FF) as i32;
        let frac = bits & ((1u64 << 52) - 1);
        match e {
            0x7FF if frac != 0 => Num::Nan { neg },
            0x7FF => Num::Inf { neg },
            0 => Num::Finite {
                neg,
                mant: u128::from(frac),
                exp: -1074,
            },
            _ => Num::Finite {
                neg,
                mant: u128::from(frac | 1 << 52),
                exp: e - 1075,
            },
        }
    }

    /// The exact value of an integer.
    pub fn from_int(i: i128) -> Num {
        Num::Finite {
            neg: i < 0,
            mant: i.unsigned_abs(),
            exp: 0,
        }
    }
}

/// An 8- or 4-bit float format of ONNX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mini {
    /// `FLOAT8E4M3FN`.
    E4M3FN,
    /// `FLOAT8E4M3FNUZ`.
    E4M3FNUZ,
    /// `FLOAT8E5M2`.
    E5M2,
    /// `FLOAT8E5M2FNUZ`.
    E5M2FNUZ,
    /// `FLOAT4E2M1`.
    E2M1,
}

impl Mini {
    /// Mantissa bits, exponent bias, the largest finite magnitude code and the sign bit.
    fn params(self) -> (u32, i32, u32, u8) {
        match self {
            Mini::E4M3FN => (3, 7, 0x7E, 0x80),
            Mini::E4M3FNUZ => (3, 8, 0x7F, 0x80),
            Mini::E5M2 => (2, 15, 0x7B, 0x80),
            Mini::E5M2FNUZ => (2, 16, 0x7F, 0x80),
            Mini::E2M1 => (1, 1, 0x7, 0x8),
        }
    }

    /// The code of `x` in this format: rounded to nearest, ties to even, from the exact
    /// value. Out of range (an infinity, or a value whose rounding exceeds the largest
    /// finite value):
    /// - with `saturate`, and always for `E2M1` (which has neither infinity nor NaN),
    ///   the largest finite value of x's sign;
    /// - else `E5M2`'s infinity of x's sign, `E4M3FN`'s NaN of x's sign (`0x7F`,
    ///   `0xFF`), the FNUZ types' NaN `0x80`.
    ///
    /// NaN: `E4M3FN` `0x7F`/`0xFF` and `E5M2` `0x7E`/`0xFE` by the NaN's sign, the FNUZ
    /// types `0x80`; `E2M1` has no NaN and gives a zero of the opposite sign (`0x8` for
    /// a positive NaN, `0x0` for a negative one), which is what ONNX's reference
    /// implementation writes. The FNUZ types have no −0: a negative value that rounds to
    /// zero gives `0x00`.
    pub fn encode(self, x: Num, saturate: bool) -> u8 {
        let (mbits, bias, max, sign_bit) = self.params();
        let sign = |neg: bool| if neg { sign_bit } else { 0 };
        let overflow = |neg: bool| -> u8 {
            if saturate || self == Mini::E2M1 {
                return max as u8 | sign(neg);
            }
            match self {
                Mini::E4M3FN => 0x7F | sign(neg),
                Mini::E5M2 => 0x7C | sign(neg),
                _ => 0x80,
            }
        };
        match x {
            Num::Nan { neg } => match self {
                Mini::E4M3FN => 0x7F | sign(neg),
                Mini::E5M2 => 0x7E | sign(neg),
                Mini::E4M3FNUZ | Mini::E5M2FNUZ => 0x80,
                Mini::E2M1 => sign(!neg),
            },
            Num::Inf { neg } => overflow(neg),
            Num::Finite { neg, mant, exp } => {
                let mag = round_mag(mant, exp, mbits, bias);
                if mag > u64::from(max) {
                    overflow(neg)
                } else if mag == 0 && matches!(self, Mini::E4M3FNUZ | Mini::E5M2FNUZ) {
                    0
                } else {
                    mag as u8 | sign(neg)
                }
            }
        }
    }
}

/// The magnitude code (biased exponent and mantissa fields, possibly beyond the
/// format's largest) of `mant · 2^exp` rounded to nearest, ties to even, in a format
/// with `mbits` mantissa bits and exponent bias `bias` (subnormals below exponent
/// `1 − bias`, no upper limit).
fn round_mag(mant: u128, exp: i32, mbits: u32, bias: i32) -> u64 {
    if mant == 0 {
        return 0;
    }
    let msb = 127 - mant.leading_zeros() as i32;
    // The value is in [2^e, 2^(e+1)); its quantum in the format is 2^(et − mbits).
    let e = exp + msb;
    let et = e.max(1 - bias);
    let q = et - mbits as i32;
    let shift = q - exp;
    let n: u128 = if shift <= 0 {
        // Exact: mant · 2^(exp − q) < 2^(mbits + 1).
        mant << (-shift) as u32
    } else {
        let (floor, rem) = if shift >= 128 {
            (0, mant)
        } else {
            (mant >> shift, mant & ((1u128 << shift) - 1))
        };
        let up = match shift {
            // rem < 2^128 <= half
            s if s > 128 => false,
            128 => rem > 1 << 127 || (rem == 1 << 127 && floor & 1 == 1),
            s => {
                let half = 1u128 << (s - 1);
                rem > half || (rem == half && floor & 1 == 1)
            }
        };
        floor + u128::from(up)
    };
    // A code's value is (2^mbits + field) · 2^(biased − bias − mbits) for biased ≥ 1 and
    // the subnormal field · 2^(1 − bias − mbits); both are this sum (a rounding carry
    // into the exponent included).
    let biased = (et + bias) as u64;
    (biased << mbits) + n as u64 - (1u64 << mbits)
}

/// `Cast`'s `round_mode` for `FLOAT8E8M0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundMode {
    /// To the nearest power of two at or above the magnitude (the default).
    Up,
    /// To the nearest power of two at or below the magnitude.
    Down,
    /// To the nearer power of two; halfway (1.5 · 2^k) rounds up.
    Nearest,
}

impl RoundMode {
    /// Parses the attribute's text.
    pub fn parse(s: &str) -> Option<RoundMode> {
        Some(match s {
            "up" => RoundMode::Up,
            "down" => RoundMode::Down,
            "nearest" => RoundMode::Nearest,
            _ => return None,
        })
    }
}

/// The `FLOAT8E8M0` code of `x`: a power of two `2^k` chosen from |x| by `mode` (the
/// sign is ignored: ONNX leaves negative inputs unspecified), code `k + 127`. NaN gives
/// `0xFF`. An infinity, or a `k` above 127: `0xFE` (2¹²⁷) with `saturate`, else NaN.
/// A zero, or a `k` below −127: `0x00` (2⁻¹²⁷) with `saturate`, else NaN.
pub fn encode_e8m0(x: Num, saturate: bool, mode: RoundMode) -> u8 {
    let (hi, lo) = if saturate { (0xFE, 0x00) } else { (0xFF, 0xFF) };
    match x {
        Num::Nan { .. } => 0xFF,
        Num::Inf { .. } => hi,
        Num::Finite { mant: 0, .. } => lo,
        Num::Finite { mant, exp, .. } => {
            let msb = 127 - mant.leading_zeros() as i32;
            let e = exp + msb;
            let power = mant & (mant - 1) == 0;
            let k = match mode {
                RoundMode::Down => e,
                RoundMode::Up => e + i32::from(!power),
                RoundMode::Nearest => e + i32::from(msb >= 1 && (mant >> (msb - 1)) & 1 == 1),
            };
            if k > 127 {
                hi
            } else if k < -127 {
                lo
            } else {
                (k + 127) as u8
            }
        }
    }
}

/// The 4- or 2-bit integer `Cast` makes of a number, in `[lo, hi]`: as ONNX's reference
/// does, the number truncated toward zero when that is in range, else 0 (NaN and
/// infinities included).
pub fn small_int_from_f64(x: f64, lo: i8, hi: i8) -> i8 {
    // `as` truncates toward zero and saturates (NaN → 0): exact, no libm.
    let t = x as i64;
    if t >= i64::from(lo) && t <= i64::from(hi) {
        t as i8
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deed_types::lowbit::LowBit;
    use deed_types::tensor::{F4E2M1, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, F8E8M0};

    /// The value of code `b` of `m` (decoded by `deed_types`, independently of the
    /// rounding here).
    fn value(m: Mini, b: u8) -> f64 {
        match m {
            Mini::E4M3FN => F8E4M3FN::from_bits(b).to_f64(),
            Mini::E4M3FNUZ => F8E4M3FNUZ::from_bits(b).to_f64(),
            Mini::E5M2 => F8E5M2::from_bits(b).to_f64(),
            Mini::E5M2FNUZ => F8E5M2FNUZ::from_bits(b).to_f64(),
            Mini::E2M1 => F4E2M1::from_bits(b).to_f64(),
        }
    }

    const ALL: [Mini; 5] = [
        Mini::E4M3FN,
        Mini::E4M3FNUZ,
        Mini::E5M2,
        Mini::E5M2FNUZ,
        Mini::E2M1,
    ];

    fn codes(m: Mini) -> std::ops::RangeInclusive<u8> {
        if m == Mini::E2M1 {
            0..=15
        } else {
            0..=255
        }
    }

    /// The rounding by search: the finite codes nearest to `x`, ties to the code with
    /// an even mantissa (the even code, as codes of one sign are ordered by value), or
    /// `None` beyond the largest finite value's rounding boundary.
    fn nearest_by_search(m: Mini, x: f64) -> Option<u8> {
        let (_, _, max, sign_bit) = m.params();
        let finite: Vec<(u8, f64)> = codes(m)
            .filter(|&b| u32::from(b & !sign_bit) <= max)
            .map(|b| (b, value(m, b)))
            .filter(|&(b, v)| {
                // A zero of the other sign is not a candidate where both zeros exist.
                let fnuz = matches!(m, Mini::E4M3FNUZ | Mini::E5M2FNUZ);
                !v.is_nan() && (fnuz || !(v == 0.0 && (b & sign_bit != 0) != x.is_sign_negative()))
            })
            .collect();
        let best = finite
            .iter()
            .map(|&(_, v)| (v - x).abs())
            .fold(f64::INFINITY, f64::min);
        let top = value(m, max as u8);
        // Beyond max + half an ulp of max (ties at the boundary go to the even
        // neighbour above, which does not exist: overflow).
        let ulp = top - value(m, max as u8 - 1);
        if x.abs() > top + ulp / 2.0 || (x.abs() == top + ulp / 2.0 && max & 1 == 1) {
            return None;
        }
        let ties: Vec<u8> = finite
            .iter()
            .filter(|&&(_, v)| (v - x).abs() == best)
            .map(|&(b, _)| b)
            .collect();
        Some(if ties.len() == 1 {
            ties[0]
        } else {
            *ties.iter().find(|&&b| b & 1 == 0).unwrap_or(&ties[0])
        })
    }

    /// Every code's value converts back to the code (NaN aside), in both saturation
    /// modes; a zero keeps its sign where the format has −0.
    #[test]
    fn every_code_round_trips() {
        for m in ALL {
            for b in codes(m) {
                let v = value(m, b);
                if v.is_nan() {
                    continue;
                }
                if v.is_infinite() {
                    // E5M2's infinities stay infinite only without saturation.
                    assert_eq!(m.encode(Num::from_f64(v), false), b);
                    assert_eq!(m.encode(Num::from_f64(v), true), b - 1, "{m:?} {b:#x}");
                    continue;
                }
                for sat in [false, true] {
                    assert_eq!(m.encode(Num::from_f64(v), sat), b, "{m:?} {b:#x} {v}");
                }
            }
        }
    }

    /// Midpoints between neighbouring codes, and points just beside them, round as the
    /// search says; so do values beyond the range.
    #[test]
    fn rounding_matches_a_search_over_all_codes() {
        for m in ALL {
            let mut vals: Vec<f64> = codes(m)
                .map(|b| value(m, b))
                .filter(|v| v.is_finite())
                .collect();
            vals.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let mut probes = vec![0.0, -0.0, 1e-30, -1e-30, 1e9, -1e9];
            for w in vals.windows(2) {
                let mid = (w[0] + w[1]) / 2.0;
                probes.extend([mid, mid * (1.0 + 1e-12), mid * (1.0 - 1e-12), w[0]]);
            }
            let top = *vals.last().unwrap();
            probes.extend([top * 1.01, top * 1.1, -top * 1.2, top * 2.0]);
            // Halfway between the smallest subnormal and zero rounds to zero (even).
            probes.push(vals.iter().find(|&&v| v > 0.0).unwrap() / 2.0);
            for x in probes {
                let want = nearest_by_search(m, x);
                let sat = m.encode(Num::from_f64(x), true);
                let raw = m.encode(Num::from_f64(x), false);
                let (_, _, max, sign_bit) = m.params();
                let neg = x.is_sign_negative();
                match want {
                    Some(mut b) => {
                        if value(m, b) == 0.0 && matches!(m, Mini::E4M3FNUZ | Mini::E5M2FNUZ) {
                            b = 0;
                        }
                        assert_eq!(sat, b, "{m:?} {x}");
                        assert_eq!(raw, b, "{m:?} {x}");
                    }
                    None => {
                        let s = if neg { sign_bit } else { 0 };
                        assert_eq!(sat, max as u8 | s, "{m:?} {x} saturated");
                        let over = match m {
                            Mini::E4M3FN => 0x7F | s,
                            Mini::E5M2 => 0x7C | s,
                            Mini::E2M1 => max as u8 | s,
                            _ => 0x80,
                        };
                        assert_eq!(raw, over, "{m:?} {x} not saturated");
                    }
                }
            }
        }
    }

    #[test]
    fn special_values() {
        let nan = Num::from_f64(f64::NAN);
        let neg_nan = Num::from_f64(-f64::NAN);
        let inf = Num::from_f64(f64::INFINITY);
        let ninf = Num::from_f64(f64::NEG_INFINITY);
        assert_eq!(Mini::E4M3FN.encode(nan, true), 0x7F);
        assert_eq!(Mini::E4M3FN.encode(neg_nan, false), 0xFF);
        assert_eq!(Mini::E5M2.encode(nan, true), 0x7E);
        assert_eq!(Mini::E5M2.encode(neg_nan, true), 0xFE);
        assert_eq!(Mini::E4M3FNUZ.encode(neg_nan, true), 0x80);
        assert_eq!(Mini::E2M1.encode(nan, true), 0x8);
        assert_eq!(Mini::E2M1.encode(neg_nan, true), 0x0);
        assert_eq!(Mini::E4M3FN.encode(inf, true), 0x7E);
        assert_eq!(Mini::E4M3FN.encode(ninf, false), 0xFF);
        assert_eq!(Mini::E5M2.encode(ninf, false), 0xFC);
        assert_eq!(Mini::E5M2FNUZ.encode(ninf, false), 0x80);
        assert_eq!(Mini::E5M2FNUZ.encode(ninf, true), 0xFF);
        assert_eq!(Mini::E2M1.encode(ninf, false), 0xF);
        // No negative zero in FNUZ.
        assert_eq!(Mini::E4M3FNUZ.encode(Num::from_f64(-0.0), false), 0);
        assert_eq!(Mini::E5M2FNUZ.encode(Num::from_f64(-1e-9), true), 0);
        assert_eq!(Mini::E4M3FN.encode(Num::from_f64(-1e-9), true), 0x80);
        // ONNX's examples: 0.47892547 → 0.46875 (0x2F) in E4M3FN, 0.5 (0x38) in E5M2.
        let x = Num::from_f64(f64::from(0.478_925_47f32));
        assert_eq!(Mini::E4M3FN.encode(x, true), 47);
        assert_eq!(Mini::E5M2.encode(x, true), 56);
        // 464 is halfway between 448 and 480 (not finite in E4M3FN): to even, 448;
        // just above it overflows.
        assert_eq!(Mini::E4M3FN.encode(Num::from_f64(464.0), false), 0x7E);
        assert_eq!(Mini::E4M3FN.encode(Num::from_f64(464.1), false), 0x7F);
        assert_eq!(Mini::E4M3FN.encode(Num::from_f64(464.1), true), 0x7E);
        // Integers are exact numbers too.
        assert_eq!(Mini::E5M2.encode(Num::from_int(-57344), false), 0xFB);
        assert_eq!(Mini::E5M2.encode(Num::from_int(i128::MAX), false), 0x7C);
        assert_eq!(Mini::E2M1.encode(Num::from_int(5), false), 0x6);
        assert_eq!(Mini::E2M1.encode(Num::from_int(7), false), 0x7);
    }

    #[test]
    fn e8m0_rounding() {
        let f = |x: f64, sat: bool, m: RoundMode| encode_e8m0(Num::from_f64(x), sat, m);
        use RoundMode::*;
        // ONNX's case: [0, 0.124, 0.25, 0.5, 1.1, 2, 4, 8] → [0, 124, 125, 126, 128, 128, 129, 130].
        let got: Vec<u8> = [
            0.0,
            f64::from(0.124f32),
            0.25,
            0.5,
            f64::from(1.1f32),
            2.0,
            4.0,
            8.0,
        ]
        .into_iter()
        .map(|x| f(x, true, Up))
        .collect();
        assert_eq!(got, [0, 124, 125, 126, 128, 128, 129, 130]);
        assert_eq!(f(1.5, true, Nearest), 128);
        assert_eq!(f(1.4999, true, Nearest), 127);
        assert_eq!(f(1.9, true, Down), 127);
        assert_eq!(f(-4.0, true, Up), 129);
        assert_eq!(f(f64::NAN, true, Up), 0xFF);
        assert_eq!(f(f64::INFINITY, true, Up), 0xFE);
        assert_eq!(f(f64::INFINITY, false, Nearest), 0xFF);
        assert_eq!(f(0.0, false, Nearest), 0xFF);
        assert_eq!(f(2f64.powi(127) * 1.5, true, Up), 0xFE);
        assert_eq!(f(2f64.powi(127) * 1.5, false, Up), 0xFF);
        assert_eq!(f(2f64.powi(127), false, Up), 0xFE);
        assert_eq!(f(2f64.powi(-127), false, Up), 0x00);
        assert_eq!(f(2f64.powi(-130), true, Up), 0x00);
        assert_eq!(f(2f64.powi(-130), false, Down), 0xFF);
        // Every code's value converts back to it in every mode.
        for b in 0..=254u8 {
            let v = F8E8M0::from_bits(b).to_f64();
            for m in [Up, Down, Nearest] {
                assert_eq!(f(v, false, m), b);
            }
        }
    }

    #[test]
    fn small_ints_truncate_and_zero_out_of_range() {
        let got: Vec<i8> = [
            -9.0,
            -8.5,
            -8.0,
            -7.5,
            -1.5,
            -0.5,
            0.5,
            1.5,
            7.6,
            8.0,
            f64::NAN,
            f64::INFINITY,
        ]
        .into_iter()
        .map(|x| small_int_from_f64(x, -8, 7))
        .collect();
        assert_eq!(got, [0, -8, -8, -7, -1, 0, 0, 1, 7, 0, 0, 0]);
        assert_eq!(small_int_from_f64(-0.9, 0, 3), 0);
        assert_eq!(small_int_from_f64(-1.0, 0, 3), 0);
        assert_eq!(small_int_from_f64(3.9, 0, 3), 3);
        assert_eq!(small_int_from_f64(2.0, -2, 1), 0);
        assert_eq!(small_int_from_f64(1e300, -2, 1), 0);
    }
}
