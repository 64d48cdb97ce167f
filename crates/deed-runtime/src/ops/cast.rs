//! `Cast` and `CastLike`: conversions between every pair of supported dtypes; and
//! `BitCast`, which keeps the bits and changes only the dtype.
//!
//! The rules (the same as Rust's `as` conversions, which are fully defined):
//! - float → float: correctly rounded (round to nearest, ties to even) from the exact
//!   value; NaN becomes the target's canonical NaN;
//! - integer → float: f32 and f64 are correctly rounded from the exact integer; f16 and
//!   bf16 are rounded from the integer's f64 value;
//! - float → integer: truncation toward zero, saturating at the target's range; NaN → 0;
//! - integer → integer: two's-complement wrap (numpy's `astype`);
//! - bool → number: 0 or 1; number → bool: `x != 0` (NaN → true);
//! - string → number: trimmed text parsed as a decimal number (`nan`, `inf`, `+inf`,
//!   `-inf`, `infinity`, any case, allowed), then converted as from f64 — integers are
//!   parsed exactly when the text is an integer; text that is not a number is an error;
//! - number → string: integers in decimal; floats as the shortest text that reads back
//!   to the same value (`NaN`, `INF`, `-INF` for the special values).
//!
//! The low-bit dtypes (ONNX codes 17 to 26) convert by ONNX's rules, from and to the
//! exact value (`minifloat.rs` holds the scalar reference):
//! - to a float8 or float4e2m1: round to nearest, ties to even; out of range per the
//!   `saturate` attribute (default 1) and the type's tables; to float8e8m0: a power
//!   of two chosen by `round_mode` (default `up`);
//! - to a 4- or 2-bit integer: from an integer, two's-complement wrap; from a float,
//!   truncation toward zero when in range, else 0 (NaN and infinities too), as the
//!   reference implementation does;
//! - from any of them: its exact value, then the rules above.

use deed_types::lowbit::LowBit as _;
use deed_types::tensor::{
    F4E2M1, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, F8E8M0, I2, I4, U2, U4,
};
use deed_types::{DType, Tensor, TensorData};
use half::{bf16, f16};

use super::minifloat::{encode_e8m0, small_int_from_f64, Mini, Num, RoundMode};

use super::elementwise::{with_int, Int};
use super::util::{check_count, infer_input, input, one, per_output_element};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

pub(crate) fn register(r: &mut Registry) {
    r.add("Cast", build_cast);
    r.add("CastLike", |n| {
        check_count(n.num_inputs, 2, 2)?;
        Ok(Box::new(Cast {
            to: None,
            opts: CastOpts::from_node(n)?,
        }))
    });
    r.add("BitCast", |n| {
        Ok(Box::new(BitCast {
            to: target_dtype(n)?,
        }))
    });
}

/// `BitCast` (opset 26): each element's little-endian bytes read as the target dtype,
/// which has the same width. A float result's NaNs are then made canonical, as every
/// float output's are; bytes cast to bool must be 0 or 1 (the only bool encodings).
#[derive(Debug)]
struct BitCast {
    to: DType,
}

impl Op for BitCast {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let from = x.ty.dtype;
        if from == DType::Str {
            return Err(OpError::DType {
                index: 0,
                dtype: from,
            });
        }
        if self.to == DType::Str || bit_width(self.to) != bit_width(from) {
            return Err(OpError::BadAttribute {
                name: "to".into(),
                reason: format!(
                    "{} is not a {}-bit numeric dtype like the input's {from}",
                    self.to,
                    bit_width(from)
                ),
            });
        }
        one(self.to, x.ty.shape.clone())
    }

    fn cost(&self, _: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        per_output_element(outputs, 1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        if x.dtype() == self.to {
            return Ok(vec![x.clone()]);
        }
        if x.dtype().is_low_bit() || self.to.is_low_bit() {
            // One element is one 8-, 4- or 2-bit code; the same code under the target.
            let out = codes(x)
                .and_then(|c| from_codes(self.to, c))
                .ok_or_else(|| {
                    OpError::value(format!("BitCast from {} to {}", x.dtype(), self.to))
                })?;
            return Ok(vec![Tensor::new(x.shape().to_vec(), out)?]);
        }
        // The canonical encoding is the header (magic, dtype code, rank, dimensions)
        // then every element's little-endian bytes: the same bytes under the target's
        // code are the reinterpreted tensor. Decoding checks bool bytes.
        let mut bytes = x.encode();
        if let Some(code) = bytes.get_mut(4) {
            *code = self.to.onnx_code() as u8;
        }
        let out = Tensor::decode(&bytes).map_err(|e| {
            OpError::value(format!("BitCast from {} to {}: {e}", x.dtype(), self.to))
        })?;
        Ok(vec![out])
    }
}

/// Bits per element: 4 and 2 for the sub-byte types, else 8 × the byte size.
fn bit_width(d: DType) -> usize {
    match d {
        DType::U4 | DType::I4 | DType::F4E2M1 => 4,
        DType::U2 | DType::I2 => 2,
        _ => 8 * d.size_of(),
    }
}

/// Each element's code (its bits) for the one-byte and sub-byte dtypes.
fn codes(t: &Tensor) -> Option<Vec<u8>> {
    fn each<T: Copy>(v: &[T], f: impl Fn(T) -> u8) -> Option<Vec<u8>> {
        Some(v.iter().map(|&x| f(x)).collect())
    }
    match t.data() {
        TensorData::U8(v) => Some(v.clone()),
        TensorData::I8(v) => each(v, |x| x as u8),
        TensorData::Bool(v) => each(v, u8::from),
        TensorData::U4(v) => each(v, U4::to_bits),
        TensorData::I4(v) => each(v, I4::to_bits),
        TensorData::U2(v) => each(v, U2::to_bits),
        TensorData::I2(v) => each(v, I2::to_bits),
        TensorData::F4E2M1(v) => each(v, F4E2M1::to_bits),
        TensorData::F8E4M3FN(v) => each(v, F8E4M3FN::to_bits),
        TensorData::F8E4M3FNUZ(v) => each(v, F8E4M3FNUZ::to_bits),
        TensorData::F8E5M2(v) => each(v, F8E5M2::to_bits),
        TensorData::F8E5M2FNUZ(v) => each(v, F8E5M2FNUZ::to_bits),
        TensorData::F8E8M0(v) => each(v, F8E8M0::to_bits),
        _ => None,
    }
}

/// Elements of `to` with the given codes (bools must be 0 or 1).
fn from_codes(to: DType, c: Vec<u8>) -> Option<TensorData> {
    let it = c.into_iter();
    Some(match to {
        DType::U8 => TensorData::U8(it.collect()),
        DType::I8 => TensorData::I8(it.map(|b| b as i8).collect()),
        DType::Bool => TensorData::Bool(
            it.map(|b| match b {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            })
            .collect::<Option<_>>()?,
        ),
        DType::F8E4M3FN => TensorData::F8E4M3FN(it.map(F8E4M3FN::from_bits).collect()),
        DType::F8E4M3FNUZ => TensorData::F8E4M3FNUZ(it.map(F8E4M3FNUZ::from_bits).collect()),
        DType::F8E5M2 => TensorData::F8E5M2(it.map(F8E5M2::from_bits).collect()),
        DType::F8E5M2FNUZ => TensorData::F8E5M2FNUZ(it.map(F8E5M2FNUZ::from_bits).collect()),
        DType::U4 => TensorData::U4(it.map(U4::from_bits).collect()),
        DType::I4 => TensorData::I4(it.map(I4::from_bits).collect()),
        DType::F4E2M1 => TensorData::F4E2M1(it.map(F4E2M1::from_bits).collect()),
        DType::F8E8M0 => TensorData::F8E8M0(it.map(F8E8M0::from_bits).collect()),
        DType::U2 => TensorData::U2(it.map(U2::from_bits).collect()),
        DType::I2 => TensorData::I2(it.map(I2::from_bits).collect()),
        _ => return None,
    })
}

/// `Cast`'s attributes for the float8 targets.
#[derive(Debug, Clone, Copy)]
pub struct CastOpts {
    /// `saturate` (default 1): out-of-range values to a float8 become its largest
    /// finite value rather than infinity or NaN.
    pub saturate: bool,
    /// `round_mode` (default `up`), for float8e8m0 targets.
    pub round_mode: RoundMode,
}

impl Default for CastOpts {
    fn default() -> CastOpts {
        CastOpts {
            saturate: true,
            round_mode: RoundMode::Up,
        }
    }
}

impl CastOpts {
    fn from_node(n: &NodeInfo<'_>) -> Result<CastOpts, OpError> {
        let saturate = n.attrs.int("saturate", 1)? != 0;
        let mode = n.attrs.string("round_mode", "up")?;
        let round_mode = RoundMode::parse(&mode).ok_or_else(|| {
            OpError::bad_attr("round_mode", format!("`{mode}` is not up, down or nearest"))
        })?;
        Ok(CastOpts {
            saturate,
            round_mode,
        })
    }
}

/// `Cast` (to a fixed dtype) or `CastLike` (to the dtype of input 1).
#[derive(Debug)]
pub struct Cast {
    /// The target dtype; `None` for `CastLike`.
    pub to: Option<DType>,
    /// `saturate` and `round_mode`.
    pub opts: CastOpts,
}

fn build_cast(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Cast {
        to: Some(target_dtype(n)?),
        opts: CastOpts::from_node(n)?,
    }))
}

/// The `to` dtype of a one-input `Cast` or `BitCast` node.
fn target_dtype(n: &NodeInfo<'_>) -> Result<DType, OpError> {
    check_count(n.num_inputs, 1, 1)?;
    let code = n.attrs.req_int("to")?;
    i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx_code)
        .ok_or_else(|| OpError::unsupported(format!("{} to dtype code {code}", n.op_type)))
}

impl Op for Cast {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let to = match self.to {
            Some(t) => t,
            None => infer_input(inputs, 1)?.ty.dtype,
        };
        one(to, x.ty.shape.clone())
    }

    fn cost(&self, _: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        per_output_element(outputs, 1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let to = match self.to {
            Some(t) => t,
            None => input(inputs, 1)?.dtype(),
        };
        Ok(vec![cast_with(x, to, self.opts)?])
    }
    /// A NaN converts to the target's canonical NaN; integers convert to numbers.
    fn nans_canonical(&self) -> bool {
        true
    }
}

/// One element on its way through a conversion.
#[derive(Clone, Copy)]
enum Val {
    F(f64),
    I(i128),
    B(bool),
}

trait Source: Copy {
    fn val(self) -> Val;
}
impl Source for f32 {
    #[inline(always)]
    fn val(self) -> Val {
        Val::F(self as f64)
    }
}
impl Source for f64 {
    #[inline(always)]
    fn val(self) -> Val {
        Val::F(self)
    }
}
impl Source for f16 {
    #[inline(always)]
    fn val(self) -> Val {
        Val::F(self.to_f64())
    }
}
impl Source for bf16 {
    #[inline(always)]
    fn val(self) -> Val {
        Val::F(self.to_f64())
    }
}
impl Source for bool {
    #[inline(always)]
    fn val(self) -> Val {
        Val::B(self)
    }
}
macro_rules! int_source {
    ($($t:ty),*) => {$(
        impl Source for $t {
            #[inline(always)]
            fn val(self) -> Val { Val::I(self as i128) }
        }
    )*};
}
int_source!(i8, i16, i32, i64, u8, u16, u32, u64);
macro_rules! low_bit_source {
    (float: $($t:ty),*; int: $($i:ty),*) => {
        $(impl Source for $t {
            #[inline(always)]
            fn val(self) -> Val { Val::F(self.to_f64()) }
        })*
        $(impl Source for $i {
            #[inline(always)]
            fn val(self) -> Val { Val::I(i128::from(self.get())) }
        })*
    };
}
low_bit_source!(float: F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, F8E8M0, F4E2M1; int: U4, I4, U2, I2);

#[inline(always)]
fn to_num(v: Val) -> Num {
    match v {
        Val::F(x) => Num::from_f64(x),
        Val::I(i) => Num::from_int(i),
        Val::B(b) => Num::from_int(i128::from(b)),
    }
}

/// A 4- or 2-bit integer in `[lo, hi]` from a value: integers wrap (their low bits),
/// floats truncate when in range and are 0 otherwise.
#[inline(always)]
fn to_small(v: Val, lo: i8, hi: i8) -> u8 {
    match v {
        Val::F(x) => small_int_from_f64(x, lo, hi) as u8,
        Val::I(i) => i as u8,
        Val::B(b) => u8::from(b),
    }
}

#[inline(always)]
fn to_f32(v: Val) -> f32 {
    match v {
        Val::F(x) if x.is_nan() => super::math::NAN_F32,
        Val::F(x) => x as f32,
        Val::I(i) => i as f32,
        Val::B(b) => b as u8 as f32,
    }
}
#[inline(always)]
fn to_f64(v: Val) -> f64 {
    match v {
        Val::F(x) if x.is_nan() => super::math::NAN_F64,
        Val::F(x) => x,
        Val::I(i) => i as f64,
        Val::B(b) => b as u8 as f64,
    }
}
#[inline(always)]
fn to_f16(v: Val) -> f16 {
    let x = to_f64(v);
    if x.is_nan() {
        f16::NAN
    } else {
        f16::from_f64(x)
    }
}
#[inline(always)]
fn to_bf16(v: Val) -> bf16 {
    let x = to_f64(v);
    if x.is_nan() {
        bf16::NAN
    } else {
        bf16::from_f64(x)
    }
}
#[inline(always)]
fn to_bool(v: Val) -> bool {
    match v {
        Val::F(x) => x != 0.0,
        Val::I(i) => i != 0,
        Val::B(b) => b,
    }
}
#[inline(always)]
fn to_int<I: Int>(v: Val) -> I {
    match v {
        Val::F(x) => I::from_f64_sat(x),
        Val::I(i) => I::from_i128_wrap(i),
        Val::B(b) => I::from_i128_wrap(b as i128),
    }
}

fn to_string(v: Val, src: DType) -> String {
    match v {
        Val::B(b) => (b as u8).to_string(),
        Val::I(i) => i.to_string(),
        Val::F(x) if x.is_nan() => "NaN".into(),
        Val::F(x) if x == f64::INFINITY => "INF".into(),
        Val::F(x) if x == f64::NEG_INFINITY => "-INF".into(),
        Val::F(x) => match src {
            DType::F32 => format!("{:?}", x as f32),
            DType::F16 => format!("{:?}", f16::from_f64(x).to_f32()),
            DType::BF16 => format!("{:?}", bf16::from_f64(x).to_f32()),
            _ => format!("{x:?}"),
        },
    }
}

fn parse(s: &str) -> Result<Val, OpError> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let special = match lower.as_str() {
        "nan" | "+nan" | "-nan" => Some(f64::NAN),
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    };
    if let Some(x) = special {
        return Ok(Val::F(x));
    }
    if let Ok(i) = t.parse::<i128>() {
        return Ok(Val::I(i));
    }
    t.parse::<f64>()
        .map(Val::F)
        .map_err(|_| OpError::value(format!("cannot cast string {s:?} to a number")))
}

fn convert<S: Source>(v: &[S], to: DType, src: DType, opts: CastOpts) -> TensorData {
    build(v.iter().map(|&x| x.val()), to, src, opts)
}

fn build(it: impl Iterator<Item = Val>, to: DType, src: DType, opts: CastOpts) -> TensorData {
    let sat = opts.saturate;
    match to {
        DType::F32 => TensorData::F32(it.map(to_f32).collect()),
        DType::F64 => TensorData::F64(it.map(to_f64).collect()),
        DType::F16 => TensorData::F16(it.map(to_f16).collect()),
        DType::BF16 => TensorData::BF16(it.map(to_bf16).collect()),
        DType::Bool => TensorData::Bool(it.map(to_bool).collect()),
        DType::I8 => TensorData::I8(it.map(to_int).collect()),
        DType::I16 => TensorData::I16(it.map(to_int).collect()),
        DType::I32 => TensorData::I32(it.map(to_int).collect()),
        DType::I64 => TensorData::I64(it.map(to_int).collect()),
        DType::U8 => TensorData::U8(it.map(to_int).collect()),
        DType::U16 => TensorData::U16(it.map(to_int).collect()),
        DType::U32 => TensorData::U32(it.map(to_int).collect()),
        DType::U64 => TensorData::U64(it.map(to_int).collect()),
        DType::F8E4M3FN => {
            TensorData::F8E4M3FN(encoded(it, |v| Mini::E4M3FN.encode(to_num(v), sat)))
        }
        DType::F8E4M3FNUZ => {
            TensorData::F8E4M3FNUZ(encoded(it, |v| Mini::E4M3FNUZ.encode(to_num(v), sat)))
        }
        DType::F8E5M2 => TensorData::F8E5M2(encoded(it, |v| Mini::E5M2.encode(to_num(v), sat))),
        DType::F8E5M2FNUZ => {
            TensorData::F8E5M2FNUZ(encoded(it, |v| Mini::E5M2FNUZ.encode(to_num(v), sat)))
        }
        DType::F4E2M1 => TensorData::F4E2M1(encoded(it, |v| Mini::E2M1.encode(to_num(v), sat))),
        DType::F8E8M0 => TensorData::F8E8M0(encoded(it, |v| {
            encode_e8m0(to_num(v), sat, opts.round_mode)
        })),
        DType::U4 => TensorData::U4(encoded(it, |v| to_small(v, 0, 15))),
        DType::I4 => TensorData::I4(encoded(it, |v| to_small(v, -8, 7))),
        DType::U2 => TensorData::U2(encoded(it, |v| to_small(v, 0, 3))),
        DType::I2 => TensorData::I2(encoded(it, |v| to_small(v, -2, 1))),
        _ => TensorData::Str(it.map(|x| to_string(x, src)).collect()),
    }
}

/// A low-bit element made from the bits its encoder gives (`from_bits`).
trait FromCode {
    fn from_code(bits: u8) -> Self;
}

macro_rules! from_code {
    ($($t:ty),*) => {$(
        impl FromCode for $t {
            fn from_code(bits: u8) -> Self {
                <$t>::from_bits(bits)
            }
        }
    )*};
}
from_code!(F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, F4E2M1, F8E8M0, U4, I4, U2, I2);

/// The low-bit elements of the bits `code` gives for each value.
fn encoded<T: FromCode>(it: impl Iterator<Item = Val>, code: impl Fn(Val) -> u8) -> Vec<T> {
    it.map(|v| T::from_code(code(v))).collect()
}

/// Integers to f32 or f64 in one vectorized loop, or `None` for any other pair. `as`
/// rounds an integer to the nearest float, ties to even: the same value the general
/// path gets from the integer widened to i128.
fn int_to_float(x: &Tensor, to: DType) -> Option<TensorData> {
    use super::simd::{map_vec, with_fma};
    match to {
        DType::F32 => with_int!(x, v: T => Some(TensorData::F32(with_fma(
            #[inline(always)]
            || map_vec(v, |e: T| e as f32),
        ))), _ => None),
        DType::F64 => with_int!(x, v: T => Some(TensorData::F64(with_fma(
            #[inline(always)]
            || map_vec(v, |e: T| e as f64),
        ))), _ => None),
        _ => None,
    }
}

/// Converts a tensor to `to` by the rules in the module documentation, with the
/// default `saturate` and `round_mode`.
pub fn cast(x: &Tensor, to: DType) -> Result<Tensor, OpError> {
    cast_with(x, to, CastOpts::default())
}

/// Converts a tensor to `to` by the rules in the module documentation.
pub fn cast_with(x: &Tensor, to: DType, opts: CastOpts) -> Result<Tensor, OpError> {
    let src = x.dtype();
    let shape = x.shape().to_vec();
    if let Some(data) = int_to_float(x, to) {
        return Ok(Tensor::new(shape, data)?);
    }
    let data = match x.data() {
        TensorData::Str(v) if to == DType::Str => TensorData::Str(v.clone()),
        TensorData::Str(v) => {
            let vals = v.iter().map(|s| parse(s)).collect::<Result<Vec<_>, _>>()?;
            build(vals.into_iter(), to, DType::F64, opts)
        }
        TensorData::F32(v) => convert(v, to, src, opts),
        TensorData::F64(v) => convert(v, to, src, opts),
        TensorData::F16(v) => convert(v, to, src, opts),
        TensorData::BF16(v) => convert(v, to, src, opts),
        TensorData::Bool(v) => convert(v, to, src, opts),
        TensorData::F8E4M3FN(v) => convert(v, to, src, opts),
        TensorData::F8E4M3FNUZ(v) => convert(v, to, src, opts),
        TensorData::F8E5M2(v) => convert(v, to, src, opts),
        TensorData::F8E5M2FNUZ(v) => convert(v, to, src, opts),
        TensorData::U4(v) => convert(v, to, src, opts),
        TensorData::I4(v) => convert(v, to, src, opts),
        TensorData::F4E2M1(v) => convert(v, to, src, opts),
        TensorData::F8E8M0(v) => convert(v, to, src, opts),
        TensorData::U2(v) => convert(v, to, src, opts),
        TensorData::I2(v) => convert(v, to, src, opts),
        _ => with_int!(x, v: T => convert::<T>(v, to, src, opts),
            _ => return Err(OpError::DType { index: 0, dtype: src })),
    };
    Ok(Tensor::new(shape, data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<T: deed_types::tensor::Element>(v: Vec<T>) -> Tensor {
        Tensor::from_vec(vec![v.len()], v).unwrap()
    }

    fn bitcast(x: &Tensor, to: DType) -> Result<Tensor, OpError> {
        let op = BitCast { to };
        let ty = TypeInfo::new(x.dtype(), x.shape().to_vec());
        op.infer(&[Some(InferInput {
            ty: &ty,
            value: None,
        })])?;
        Ok(op.run(&[Some(x)], &Ctx::default())?.remove(0))
    }

    #[test]
    fn bitcast_keeps_the_bits() {
        let v = vec![1.0f32, -0.0, f32::INFINITY, 1e-45];
        let bits: Vec<i32> = v.iter().map(|x| x.to_bits() as i32).collect();
        let x = Tensor::from_vec(vec![2, 2], v.clone()).unwrap();
        let y = bitcast(&x, DType::I32).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.as_slice::<i32>().unwrap(), &bits[..]);
        assert_eq!(bitcast(&y, DType::F32).unwrap(), x);
        let y = bitcast(&t(vec![-1i64, 1]), DType::F64).unwrap();
        assert_eq!(y.as_slice::<f64>().unwrap()[1].to_bits(), 1);
        assert!(y.as_slice::<f64>().unwrap()[0].is_nan());
        let y = bitcast(&t(vec![-1i16, 7]), DType::U16).unwrap();
        assert_eq!(y.as_slice::<u16>().unwrap(), &[u16::MAX, 7]);
        let y = bitcast(&t(vec![true, false]), DType::U8).unwrap();
        assert_eq!(y.as_slice::<u8>().unwrap(), &[1, 0]);
    }

    #[test]
    fn bitcast_refuses_other_widths_and_bytes_that_are_not_bools() {
        let e = bitcast(&t(vec![1.0f32]), DType::F64).unwrap_err();
        assert!(matches!(e, OpError::BadAttribute { .. }), "{e}");
        assert!(bitcast(&t(vec![String::from("a")]), DType::U8).is_err());
        assert!(bitcast(&t(vec![0u8, 1]), DType::Bool).is_ok());
        let e = bitcast(&t(vec![0u8, 2]), DType::Bool).unwrap_err();
        assert!(matches!(e, OpError::Value { .. }), "{e}");
    }

    proptest::proptest! {
        /// The vectorized integer-to-float casts give the general path's values.
        #[test]
        fn int_to_float_equals_the_general_path(
            v in proptest::collection::vec(proptest::num::i64::ANY, 0..300),
        ) {
            let datas = [
                TensorData::I8(v.iter().map(|&x| x as i8).collect()),
                TensorData::U8(v.iter().map(|&x| x as u8).collect()),
                TensorData::I16(v.iter().map(|&x| x as i16).collect()),
                TensorData::U16(v.iter().map(|&x| x as u16).collect()),
                TensorData::I32(v.iter().map(|&x| x as i32).collect()),
                TensorData::U32(v.iter().map(|&x| x as u32).collect()),
                TensorData::I64(v.clone()),
                TensorData::U64(v.iter().map(|&x| x as u64).collect()),
            ];
            for d in datas {
                let x = Tensor::new(vec![v.len()], d).unwrap();
                for to in [DType::F32, DType::F64] {
                    let general = with_int!(x, w: T => convert::<T>(w, to, x.dtype(), CastOpts::default()),
                        _ => unreachable!());
                    let fast = cast(&x, to).unwrap();
                    proptest::prop_assert_eq!(fast.data(), &general, "{:?} to {:?}", x.dtype(), to);
                }
            }
        }
    }

    #[test]
    fn float_to_int_truncates_and_saturates() {
        let x = t(vec![1.9f32, -1.9, 300.0, -300.0, f32::NAN, f32::INFINITY]);
        let y = cast(&x, DType::I8).unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[1, -1, 127, -128, 0, 127]);
        let y = cast(&x, DType::U8).unwrap();
        assert_eq!(y.as_slice::<u8>().unwrap(), &[1, 0, 255, 0, 0, 255]);
    }

    #[test]
    fn int_to_int_wraps() {
        let y = cast(&t(vec![300i64, -1]), DType::U8).unwrap();
        assert_eq!(y.as_slice::<u8>().unwrap(), &[44, 255]);
    }

    #[test]
    fn strings_round_trip() {
        let x = t(vec![
            "1.5".to_string(),
            " -2 ".into(),
            "NaN".into(),
            "-INF".into(),
        ]);
        let y = cast(&x, DType::F32).unwrap();
        let v = y.as_slice::<f32>().unwrap();
        assert_eq!(&v[..2], &[1.5, -2.0]);
        assert!(v[2].is_nan());
        assert_eq!(v[3], f32::NEG_INFINITY);
        let back = cast(&y, DType::Str).unwrap();
        assert_eq!(
            back.as_slice::<String>().unwrap(),
            &["1.5", "-2.0", "NaN", "-INF"]
        );
        assert!(cast(&t(vec!["x".to_string()]), DType::F32).is_err());
    }

    fn cast_op(x: &Tensor, to: DType, saturate: bool) -> Tensor {
        let op = Cast {
            to: Some(to),
            opts: CastOpts {
                saturate,
                ..CastOpts::default()
            },
        };
        op.run(&[Some(x)], &Ctx::default()).unwrap().remove(0)
    }

    fn bits<T: deed_types::lowbit::LowBit + deed_types::tensor::Element>(t: &Tensor) -> Vec<u8> {
        t.as_slice::<T>()
            .unwrap()
            .iter()
            .map(|x| x.byte())
            .collect()
    }

    #[test]
    fn float8_targets_follow_saturate() {
        let x = t(vec![
            1e6f32,
            -1e6,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -0.0,
            0.3,
        ]);
        let sat = cast_op(&x, DType::F8E4M3FN, true);
        assert_eq!(
            bits::<F8E4M3FN>(&sat),
            [0x7E, 0xFE, 0x7E, 0xFE, 0x7F, 0x80, 0x2A]
        );
        let raw = cast_op(&x, DType::F8E4M3FN, false);
        assert_eq!(
            bits::<F8E4M3FN>(&raw),
            [0x7F, 0xFF, 0x7F, 0xFF, 0x7F, 0x80, 0x2A]
        );
        let raw = cast_op(&x, DType::F8E5M2, false);
        assert_eq!(
            bits::<F8E5M2>(&raw),
            [0x7C, 0xFC, 0x7C, 0xFC, 0x7E, 0x80, 0x35]
        );
        let raw = cast_op(&x, DType::F8E5M2FNUZ, false);
        assert_eq!(
            bits::<F8E5M2FNUZ>(&raw),
            [0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x39]
        );
        // float4e2m1 always saturates.
        let f4 = cast_op(&x, DType::F4E2M1, false);
        assert_eq!(bits::<F4E2M1>(&f4), [0x7, 0xF, 0x7, 0xF, 0x8, 0x8, 0x1]);
    }

    #[test]
    fn every_float8_code_casts_to_its_value_and_back() {
        for b in 0..=255u8 {
            let x = t(vec![F8E5M2::from_bits(b)]);
            let f = cast(&x, DType::F32).unwrap();
            let v = f.as_slice::<f32>().unwrap()[0];
            assert!(v.is_nan() == F8E5M2::from_bits(b).is_nan());
            if !v.is_nan() {
                assert_eq!(f64::from(v), F8E5M2::from_bits(b).to_f64());
                // Through f16 and back too (every E5M2 value is an f16).
                let h = cast(&x, DType::F16).unwrap();
                assert_eq!(bits::<F8E5M2>(&cast_op(&h, DType::F8E5M2, false)), [b]);
                assert_eq!(bits::<F8E5M2>(&cast_op(&f, DType::F8E5M2, false)), [b]);
            }
        }
    }

    #[test]
    fn small_integers_wrap_from_integers_and_truncate_from_floats() {
        let y = cast(&t(vec![-9i64, 8, 17, -1]), DType::I4).unwrap();
        assert_eq!(y.low_bit_values::<I4>().unwrap(), [7.0, -8.0, 1.0, -1.0]);
        let y = cast(&t(vec![-1.5f32, 2.9, 4.0, f32::NAN]), DType::U2).unwrap();
        assert_eq!(y.low_bit_values::<U2>().unwrap(), [0.0, 2.0, 0.0, 0.0]);
        let back = cast(&y, DType::I64).unwrap();
        assert_eq!(back.as_slice::<i64>().unwrap(), &[0, 2, 0, 0]);
        let s = cast(&cast(&t(vec![-3i8]), DType::I4).unwrap(), DType::Str).unwrap();
        assert_eq!(s.as_slice::<String>().unwrap(), &["-3"]);
    }

    #[test]
    fn bitcast_of_low_bit_types_keeps_the_code() {
        let x = t(vec![I4::new(-1).unwrap(), I4::new(5).unwrap()]);
        let y = bitcast(&x, DType::U4).unwrap();
        assert_eq!(y.low_bit_values::<U4>().unwrap(), [15.0, 5.0]);
        assert_eq!(bitcast(&y, DType::I4).unwrap(), x);
        let y = bitcast(&t(vec![0x7Eu8]), DType::F8E4M3FN).unwrap();
        assert_eq!(y.as_slice::<F8E4M3FN>().unwrap()[0].to_f32(), 448.0);
        assert!(bitcast(&x, DType::U8).is_err());
        assert!(bitcast(&x, DType::U2).is_err());
    }

    #[test]
    fn nan_becomes_canonical() {
        let x = t(vec![f32::from_bits(0xFFC0_1234)]);
        let y = cast(&x, DType::F64).unwrap();
        assert_eq!(
            y.as_slice::<f64>().unwrap()[0].to_bits(),
            0x7FF8_0000_0000_0000
        );
    }
}
