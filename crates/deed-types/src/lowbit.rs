//! The ONNX low-bit element types: the 8-bit floats (`FLOAT8E4M3FN`,
//! `FLOAT8E4M3FNUZ`, `FLOAT8E5M2`, `FLOAT8E5M2FNUZ`, `FLOAT8E8M0`), the 4-bit float
//! `FLOAT4E2M1` and the 4- and 2-bit integers (`UINT4`, `INT4`, `UINT2`, `INT2`).
//!
//! Each is a newtype over one byte holding one element, which is also its canonical
//! encoding (see [`crate::tensor`]): a float8's eight bits; a 4-bit float's code in
//! the low four bits, the high four zero; an unsigned 4- or 2-bit integer's value; a
//! signed one's value as a two's-complement `i8` (so the high bits are copies of the
//! sign bit). A byte that is not such an encoding is refused by [`LowBit::from_byte`].
//!
//! The values of the float codes ([`LowBit::to_f64`]) are computed from the format's
//! definition with integer operations only; every value is exact in `f64` and `f32`.
//!
//! | type | exponent, mantissa bits | bias | largest finite | NaN | infinity | −0 |
//! |---|---|---|---|---|---|---|
//! | `F8E4M3FN` | 4, 3 | 7 | 448 (`0x7E`) | `0x7F`, `0xFF` | none | `0x80` |
//! | `F8E4M3FNUZ` | 4, 3 | 8 | 240 (`0x7F`) | `0x80` only | none | none |
//! | `F8E5M2` | 5, 2 | 15 | 57344 (`0x7B`) | `0x7D`–`0x7F`, `0xFD`–`0xFF` | `0x7C`, `0xFC` | `0x80` |
//! | `F8E5M2FNUZ` | 5, 2 | 16 | 57344 (`0x7F`) | `0x80` only | none | none |
//! | `F8E8M0` | 8, 0 (no sign) | 127 | 2¹²⁷ (`0xFE`) | `0xFF` | none | no zero at all: `0x00` is 2⁻¹²⁷ |
//! | `F4E2M1` | 2, 1 | 1 | 6 (`0x7`) | none | none | `0x8` |

use std::fmt;

/// What the one-byte element types have in common.
pub trait LowBit: Copy + Eq + Default + fmt::Debug + Send + Sync + 'static {
    /// The element whose canonical byte is `b`, or `None` when `b` is not the canonical
    /// encoding of any element of this type.
    fn from_byte(b: u8) -> Option<Self>;
    /// The canonical byte of this element.
    fn byte(self) -> u8;
    /// The element's value as a number (exact). Integers give their value; NaN codes
    /// give a NaN (its sign is the code's sign).
    fn to_f64(self) -> f64;
}

/// `2^k` as an `f64`, for `-1022 <= k <= 1023` (built from its bits: no libm).
const fn pow2(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// The value of a minifloat magnitude `mag` (exponent and mantissa fields) with
/// `mbits` mantissa bits and exponent bias `bias`: subnormal when the exponent field is
/// zero. Used only for codes that are finite numbers.
fn minifloat(mag: u8, mbits: u32, bias: i32) -> f64 {
    let e = i32::from(mag >> mbits);
    let m = i32::from(mag & ((1u8 << mbits) - 1));
    let (sig, exp) = if e == 0 {
        (m, 1 - bias - mbits as i32)
    } else {
        (m + (1 << mbits), e - bias - mbits as i32)
    };
    f64::from(sig) * pow2(exp)
}

macro_rules! float8 {
    ($(#[$doc:meta])* $name:ident, mbits = $mbits:expr, bias = $bias:expr, nan = $nan:expr, inf = $inf:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
        #[repr(transparent)]
        pub struct $name(u8);

        impl $name {
            /// The element with these bits.
            pub const fn from_bits(bits: u8) -> Self {
                $name(bits)
            }
            /// The element's bits.
            pub const fn to_bits(self) -> u8 {
                self.0
            }
            /// True for the NaN codes.
            pub fn is_nan(self) -> bool {
                let nan: fn(u8) -> bool = $nan;
                nan(self.0)
            }
            /// The value as an `f32` (exact).
            pub fn to_f32(self) -> f32 {
                self.to_f64() as f32
            }
        }

        impl LowBit for $name {
            fn from_byte(b: u8) -> Option<Self> {
                Some($name(b))
            }
            fn byte(self) -> u8 {
                self.0
            }
            fn to_f64(self) -> f64 {
                let sign = if self.0 & 0x80 != 0 { -1.0 } else { 1.0 };
                if self.is_nan() {
                    return sign * f64::NAN;
                }
                let inf: fn(u8) -> bool = $inf;
                if inf(self.0) {
                    return sign * f64::INFINITY;
                }
                sign * minifloat(self.0 & 0x7F, $mbits, $bias)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.to_f64())
            }
        }
    };
}

float8!(
    /// `FLOAT8E4M3FN` (ONNX 17): 1 sign, 4 exponent, 3 mantissa bits, bias 7; no
    /// infinity, NaN is `S.1111.111`.
    F8E4M3FN, mbits = 3, bias = 7, nan = |b| b & 0x7F == 0x7F, inf = |_| false
);
float8!(
    /// `FLOAT8E4M3FNUZ` (ONNX 18): 4 exponent, 3 mantissa bits, bias 8; no infinity, no
    /// negative zero, the one NaN is `0x80`.
    F8E4M3FNUZ, mbits = 3, bias = 8, nan = |b| b == 0x80, inf = |_| false
);
float8!(
    /// `FLOAT8E5M2` (ONNX 19): 1 sign, 5 exponent, 2 mantissa bits, bias 15, IEEE-like
    /// (infinities `S.11111.00`, NaNs `S.11111.xx` with `xx` ≠ 0).
    F8E5M2, mbits = 2, bias = 15, nan = |b| b & 0x7F > 0x7C, inf = |b| b & 0x7F == 0x7C
);
float8!(
    /// `FLOAT8E5M2FNUZ` (ONNX 20): 5 exponent, 2 mantissa bits, bias 16; no infinity,
    /// no negative zero, the one NaN is `0x80`.
    F8E5M2FNUZ, mbits = 2, bias = 16, nan = |b| b == 0x80, inf = |_| false
);

/// `FLOAT8E8M0` (ONNX 24): an unsigned power of two, `2^(bits − 127)`; `0xFF` is NaN.
/// There is no zero, no sign and no infinity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[repr(transparent)]
pub struct F8E8M0(u8);

impl F8E8M0 {
    /// The element with these bits.
    pub const fn from_bits(bits: u8) -> Self {
        F8E8M0(bits)
    }
    /// The element's bits.
    pub const fn to_bits(self) -> u8 {
        self.0
    }
    /// True for the NaN code `0xFF`.
    pub fn is_nan(self) -> bool {
        self.0 == 0xFF
    }
    /// The value as an `f32` (exact: 2⁻¹²⁷ is an `f32` subnormal).
    pub fn to_f32(self) -> f32 {
        self.to_f64() as f32
    }
}

impl LowBit for F8E8M0 {
    fn from_byte(b: u8) -> Option<Self> {
        Some(F8E8M0(b))
    }
    fn byte(self) -> u8 {
        self.0
    }
    fn to_f64(self) -> f64 {
        if self.is_nan() {
            f64::NAN
        } else {
            pow2(i32::from(self.0) - 127)
        }
    }
}

impl fmt::Debug for F8E8M0 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_f64())
    }
}

/// `FLOAT4E2M1` (ONNX 23): 1 sign, 2 exponent, 1 mantissa bit, bias 1; the values
/// ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}; no infinity, no NaN. Held in the low four bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[repr(transparent)]
pub struct F4E2M1(u8);

impl F4E2M1 {
    /// The element whose code is the low four bits of `bits` (the high four are
    /// ignored, as in one half of ONNX's packed byte).
    pub const fn from_bits(bits: u8) -> Self {
        F4E2M1(bits & 0x0F)
    }
    /// The element's four-bit code.
    pub const fn to_bits(self) -> u8 {
        self.0
    }
    /// The value as an `f32` (exact).
    pub fn to_f32(self) -> f32 {
        self.to_f64() as f32
    }
}

impl LowBit for F4E2M1 {
    fn from_byte(b: u8) -> Option<Self> {
        (b <= 0x0F).then_some(F4E2M1(b))
    }
    fn byte(self) -> u8 {
        self.0
    }
    fn to_f64(self) -> f64 {
        let sign = if self.0 & 0x8 != 0 { -1.0 } else { 1.0 };
        sign * minifloat(self.0 & 0x7, 1, 1)
    }
}

impl fmt::Debug for F4E2M1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_f64())
    }
}

macro_rules! small_int {
    ($(#[$doc:meta])* $name:ident, $t:ty, bits = $bits:expr, signed = $signed:expr, min = $min:expr, max = $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
        #[repr(transparent)]
        pub struct $name($t);

        impl $name {
            /// The smallest value.
            pub const MIN: $t = $min;
            /// The largest value.
            pub const MAX: $t = $max;

            /// The element of value `v`, if it is in range.
            pub const fn new(v: $t) -> Option<Self> {
                if v >= Self::MIN && v <= Self::MAX {
                    Some($name(v))
                } else {
                    None
                }
            }
            /// The element whose two's-complement code is the low bits of `bits` (the
            /// others are ignored, as in a packed byte of ONNX's storage).
            pub const fn from_bits(bits: u8) -> Self {
                let code = bits & ((1u8 << $bits) - 1);
                if $signed && code >= (1 << ($bits - 1)) {
                    $name((code as i16 - (1i16 << $bits)) as $t)
                } else {
                    $name(code as $t)
                }
            }
            /// The element that is `v` modulo 2^bits (two's-complement wrapping).
            pub const fn wrapping(v: i128) -> Self {
                Self::from_bits(v as u8)
            }
            /// The element's code: its value's low bits.
            pub const fn to_bits(self) -> u8 {
                (self.0 as u8) & ((1u8 << $bits) - 1)
            }
            /// The value.
            pub const fn get(self) -> $t {
                self.0
            }
        }

        impl LowBit for $name {
            fn from_byte(b: u8) -> Option<Self> {
                Self::new(b as $t)
            }
            fn byte(self) -> u8 {
                self.0 as u8
            }
            fn to_f64(self) -> f64 {
                f64::from(self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

small_int!(
    /// `UINT4` (ONNX 21): 0 to 15.
    U4, u8, bits = 4, signed = false, min = 0, max = 15
);
small_int!(
    /// `INT4` (ONNX 22): −8 to 7.
    I4, i8, bits = 4, signed = true, min = -8, max = 7
);
small_int!(
    /// `UINT2` (ONNX 25): 0 to 3.
    U2, u8, bits = 2, signed = false, min = 0, max = 3
);
small_int!(
    /// `INT2` (ONNX 26): −2 to 1.
    I2, i8, bits = 2, signed = true, min = -2, max = 1
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of a code by the textbook formula, written independently of
    /// [`minifloat`]: `(-1)^s · 2^(e − bias) · (1 + m/2^M)`, or
    /// `(-1)^s · 2^(1 − bias) · (m/2^M)` when `e = 0`, with powers from repeated
    /// multiplication.
    fn textbook(bits: u8, ebits: u32, mbits: u32, bias: i32) -> f64 {
        let s = (bits >> (ebits + mbits)) & 1;
        let e = i32::from((bits >> mbits) & ((1 << ebits) - 1) as u8);
        let m = f64::from(bits & ((1 << mbits) - 1) as u8);
        let frac = m / f64::from(1u32 << mbits);
        let p = power;
        let mag = if e == 0 {
            p(1 - bias) * frac
        } else {
            p(e - bias) * (1.0 + frac)
        };
        if s == 1 {
            -mag
        } else {
            mag
        }
    }

    /// `2^k` by repeated doubling or halving (exact over the range used here).
    fn power(k: i32) -> f64 {
        let mut v = 1.0f64;
        for _ in 0..k.abs() {
            v = if k > 0 { v * 2.0 } else { v / 2.0 };
        }
        v
    }

    fn same(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
    }

    #[test]
    fn every_float8_code_has_its_textbook_value() {
        for b in 0..=255u8 {
            let e4 = if b & 0x7F == 0x7F {
                f64::NAN
            } else {
                textbook(b, 4, 3, 7)
            };
            assert!(same(F8E4M3FN::from_bits(b).to_f64(), e4), "e4m3fn {b:#x}");
            let e4uz = if b == 0x80 {
                f64::NAN
            } else {
                textbook(b, 4, 3, 8)
            };
            assert!(
                same(F8E4M3FNUZ::from_bits(b).to_f64(), e4uz),
                "e4m3fnuz {b:#x}"
            );
            let e5 = match b & 0x7F {
                0x7C => textbook(b & 0x80, 5, 2, 15).signum() * f64::INFINITY,
                0x7D..=0x7F => f64::NAN,
                _ => textbook(b, 5, 2, 15),
            };
            assert!(same(F8E5M2::from_bits(b).to_f64(), e5), "e5m2 {b:#x}");
            let e5uz = if b == 0x80 {
                f64::NAN
            } else {
                textbook(b, 5, 2, 16)
            };
            assert!(
                same(F8E5M2FNUZ::from_bits(b).to_f64(), e5uz),
                "e5m2fnuz {b:#x}"
            );
            let e8 = if b == 0xFF {
                f64::NAN
            } else {
                power(i32::from(b) - 127)
            };
            assert!(same(F8E8M0::from_bits(b).to_f64(), e8), "e8m0 {b:#x}");
            // Every value is exact in f32.
            assert!(same(
                f64::from(F8E4M3FN::from_bits(b).to_f32()),
                F8E4M3FN::from_bits(b).to_f64()
            ));
            assert!(same(
                f64::from(F8E8M0::from_bits(b).to_f32()),
                F8E8M0::from_bits(b).to_f64()
            ));
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(F8E4M3FN::from_bits(0x7E).to_f64(), 448.0);
        assert_eq!(F8E4M3FN::from_bits(0x01).to_f64(), 2f64.powi(-9));
        assert_eq!(F8E4M3FNUZ::from_bits(0x7F).to_f64(), 240.0);
        assert_eq!(F8E5M2::from_bits(0x7B).to_f64(), 57344.0);
        assert_eq!(F8E5M2::from_bits(0xFC).to_f64(), f64::NEG_INFINITY);
        assert_eq!(F8E5M2FNUZ::from_bits(0x7F).to_f64(), 57344.0);
        assert_eq!(F8E5M2FNUZ::from_bits(0x01).to_f64(), 2f64.powi(-17));
        assert_eq!(F8E8M0::from_bits(0x7F).to_f64(), 1.0);
        assert_eq!(F8E8M0::from_bits(0x00).to_f64(), 2f64.powi(-127));
        assert_eq!(F8E8M0::from_bits(0xFE).to_f64(), 2f64.powi(127));
        let f4: Vec<f64> = (0..16).map(|b| F4E2M1::from_bits(b).to_f64()).collect();
        assert_eq!(
            f4,
            [
                0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0,
                -6.0
            ]
        );
        assert!(f4[8].is_sign_negative());
    }

    #[test]
    fn small_ints_wrap_and_sign_extend() {
        assert_eq!(I4::from_bits(0xF).get(), -1);
        assert_eq!(I4::from_bits(0x8).get(), -8);
        assert_eq!(I4::from_bits(0x17).get(), 7);
        assert_eq!(I4::wrapping(-9).get(), 7);
        assert_eq!(I4::new(-3).unwrap().to_bits(), 0xD);
        assert_eq!(U4::wrapping(17).get(), 1);
        assert_eq!(I2::from_bits(0b10).get(), -2);
        assert_eq!(I2::from_bits(0b11).get(), -1);
        assert_eq!(U2::from_bits(0xFF).get(), 3);
        assert_eq!(
            (I4::MIN, I4::MAX, U4::MAX, I2::MIN, I2::MAX, U2::MAX),
            (-8, 7, 15, -2, 1, 3)
        );
        assert!(I4::new(8).is_none() && U2::new(4).is_none() && I2::new(-3).is_none());
    }

    #[test]
    fn canonical_bytes_are_exactly_the_elements() {
        for b in 0..=255u8 {
            // Every byte is a float8; a byte is a 4-bit float or an unsigned integer
            // only with its high bits clear, and a signed integer only as a sign
            // extension.
            assert_eq!(F8E5M2::from_byte(b).map(LowBit::byte), Some(b));
            assert_eq!(F4E2M1::from_byte(b).is_some(), b < 16);
            assert_eq!(U4::from_byte(b).is_some(), b < 16);
            assert_eq!(U2::from_byte(b).is_some(), b < 4);
            assert_eq!(
                I4::from_byte(b).is_some(),
                (b as i8) >= -8 && (b as i8) <= 7
            );
            assert_eq!(
                I2::from_byte(b).is_some(),
                (b as i8) >= -2 && (b as i8) <= 1
            );
            for v in [
                I4::from_byte(b).map(LowBit::byte),
                I2::from_byte(b).map(LowBit::byte),
            ]
            .into_iter()
            .flatten()
            {
                assert_eq!(v, b);
            }
        }
    }
}
