//! Binary and variadic elementwise operators with numpy broadcasting: arithmetic,
//! `Pow`, `Mod`, `Max`/`Min`/`Sum`/`Mean`, comparisons, logical and bitwise operators,
//! `BitShift`, `PRelu` and `Where`.
//!
//! f32 `Add`/`Sub`/`Mul`/`Div` on operands of the output's size or with a scalar
//! operand run through [`super::simd`], compiled from the same per-element functions.

use deed_types::{DType, Tensor, TensorData};
use half::{bf16, f16};

use super::elementwise::{canon, map2, numeric, with_int, Float, Int, Narrow, FLOATS, SINTS};
use super::simd;
use super::unary::WrapVec;
use super::util::{
    broadcast_all, broadcast_offsets, broadcast_shapes, check_count, infer_input, input, numel,
    one, same_dtype,
};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

const NAMES: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Mod",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "PRelu",
];

pub(crate) fn register(r: &mut Registry) {
    for &n in NAMES {
        r.add(n, build);
    }
    r.add("Where", |n| {
        check_count(n.num_inputs, 3, 3)?;
        Ok(Box::new(Where))
    });
}

/// Which binary function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum BKind {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// `fmod = 1`: remainder with the dividend's sign (C `fmod`); else the divisor's.
    Mod {
        fmod: bool,
    },
    Max,
    Min,
    Sum,
    Mean,
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
    And,
    Or,
    Xor,
    BitShift {
        left: bool,
    },
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
    PRelu,
}

impl BKind {
    fn variadic(self) -> bool {
        matches!(self, BKind::Max | BKind::Min | BKind::Sum | BKind::Mean)
    }
    fn compare(self) -> bool {
        matches!(
            self,
            BKind::Equal
                | BKind::Less
                | BKind::Greater
                | BKind::LessOrEqual
                | BKind::GreaterOrEqual
        )
    }
    fn dtypes(self) -> Vec<DType> {
        let ints = || numeric().into_iter().filter(|d| d.is_int());
        match self {
            BKind::Sum | BKind::Mean => FLOATS.to_vec(),
            BKind::Equal => {
                let mut v = numeric();
                v.extend([DType::Bool, DType::Str]);
                v
            }
            BKind::And | BKind::Or | BKind::Xor => vec![DType::Bool],
            BKind::BitShift { .. } | BKind::BitwiseAnd | BKind::BitwiseOr | BKind::BitwiseXor => {
                ints().collect()
            }
            BKind::PRelu => FLOATS.iter().chain(SINTS).copied().collect(),
            _ => numeric(),
        }
    }
}

/// A binary or variadic elementwise operator.
#[derive(Debug)]
pub struct Binary {
    /// The function.
    pub kind: BKind,
}

fn build(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let kind = match n.op_type {
        "Add" => BKind::Add,
        "Sub" => BKind::Sub,
        "Mul" => BKind::Mul,
        "Div" => BKind::Div,
        "Pow" => BKind::Pow,
        "Mod" => BKind::Mod {
            fmod: n.attrs.int("fmod", 0)? != 0,
        },
        "Max" => BKind::Max,
        "Min" => BKind::Min,
        "Sum" => BKind::Sum,
        "Mean" => BKind::Mean,
        "Equal" => BKind::Equal,
        "Less" => BKind::Less,
        "Greater" => BKind::Greater,
        "LessOrEqual" => BKind::LessOrEqual,
        "GreaterOrEqual" => BKind::GreaterOrEqual,
        "And" => BKind::And,
        "Or" => BKind::Or,
        "Xor" => BKind::Xor,
        "BitShift" => match n.attrs.string("direction", "")?.as_str() {
            "LEFT" => BKind::BitShift { left: true },
            "RIGHT" => BKind::BitShift { left: false },
            d => {
                return Err(OpError::bad_attr(
                    "direction",
                    format!("{d:?} is not LEFT or RIGHT"),
                ))
            }
        },
        "BitwiseAnd" => BKind::BitwiseAnd,
        "BitwiseOr" => BKind::BitwiseOr,
        "BitwiseXor" => BKind::BitwiseXor,
        "PRelu" => BKind::PRelu,
        other => return Err(OpError::unsupported(format!("binary operator {other}"))),
    };
    // Opsets before 7 had a `broadcast` attribute and `axis`; only the default
    // (numpy) behaviour is implemented.
    if n.attrs.int("broadcast", 0)? != 0 && n.attrs.has("axis") {
        return Err(OpError::unsupported("legacy broadcast with axis"));
    }
    if kind.variadic() {
        check_count(n.num_inputs, 1, usize::MAX)?;
    } else {
        check_count(n.num_inputs, 2, 2)?;
    }
    Ok(Box::new(Binary { kind }))
}

impl Op for Binary {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let k = self.kind;
        let ins = (0..inputs.len())
            .map(|i| infer_input(inputs, i))
            .collect::<Result<Vec<_>, _>>()?;
        let first = ins.first().ok_or(OpError::MissingInput { index: 0 })?;
        let dt = first.ty.dtype;
        if !k.dtypes().contains(&dt) {
            return Err(OpError::DType {
                index: 0,
                dtype: dt,
            });
        }
        for (i, x) in ins.iter().enumerate().skip(1) {
            let ok = if k == BKind::Pow {
                numeric().contains(&x.ty.dtype)
            } else {
                x.ty.dtype == dt
            };
            if !ok {
                return Err(OpError::DType {
                    index: i,
                    dtype: x.ty.dtype,
                });
            }
        }
        let shape = broadcast_all(ins.iter().map(|x| x.ty.shape.as_slice()))?;
        if k == BKind::PRelu && shape != first.ty.shape {
            return Err(OpError::shape(format!(
                "PRelu slope {:?} must broadcast to X {:?}",
                ins[1].ty.shape, first.ty.shape
            )));
        }
        let out = if k.compare() { DType::Bool } else { dt };
        one(out, shape)
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let n: u64 = outputs.iter().map(|t| t.numel()).sum();
        let steps = inputs.len().saturating_sub(1).max(1) as u64;
        let w = if self.kind == BKind::Pow { 8 } else { 1 };
        n.saturating_mul(steps).saturating_mul(w).max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let k = self.kind;
        let ts = (0..inputs.len())
            .map(|i| input(inputs, i))
            .collect::<Result<Vec<_>, _>>()?;
        let first = ts.first().ok_or(OpError::MissingInput { index: 0 })?;
        if k.variadic() {
            let mut acc: Tensor = (*first).clone();
            if ts.len() == 1 && k == BKind::Mean {
                acc = binary(ctx, BKind::Div, &acc, &one_like(acc.dtype())?)?;
            }
            for (i, t) in ts.iter().enumerate().skip(1) {
                let step = if k == BKind::Mean { BKind::Sum } else { k };
                acc = binary(ctx, step, &acc, t)?;
                if k == BKind::Mean && i == ts.len() - 1 {
                    let n = Tensor::scalar(ts.len() as f64);
                    acc = binary(ctx, BKind::Div, &acc, &cast_scalar(&n, acc.dtype())?)?;
                }
            }
            return Ok(vec![acc]);
        }
        let b = input(inputs, 1)?;
        Ok(vec![binary(ctx, k, first, b)?])
    }

    /// Arithmetic goes through [`float_bin`] (or the fast kernels compiled from it):
    /// every NaN result is canonical. (The variadic kinds copy a lone input.)
    fn nans_canonical(&self) -> bool {
        matches!(self.kind, BKind::Add | BKind::Sub | BKind::Mul | BKind::Div)
    }
}

fn one_like(dt: DType) -> Result<Tensor, OpError> {
    cast_scalar(&Tensor::scalar(1.0f64), dt)
}

fn cast_scalar(t: &Tensor, dt: DType) -> Result<Tensor, OpError> {
    super::cast::cast(t, dt)
}

#[inline(always)]
fn fmax<F: Float>(a: F, b: F) -> F {
    if a.is_nan() || b.is_nan() {
        F::CANON_NAN
    } else if a > b {
        a
    } else if b > a {
        b
    } else {
        // Equal: only ±0 can differ in bits; the maximum of −0 and +0 is +0.
        F::from_bits64(a.to_bits64() & b.to_bits64())
    }
}

#[inline(always)]
fn fmin<F: Float>(a: F, b: F) -> F {
    if a.is_nan() || b.is_nan() {
        F::CANON_NAN
    } else if a < b {
        a
    } else if b < a {
        b
    } else {
        F::from_bits64(a.to_bits64() | b.to_bits64())
    }
}

/// numpy's floating `mod`: the remainder with the divisor's sign.
#[inline(always)]
fn fmod_floor<F: Float>(a: F, b: F) -> F {
    let r = a.fmod(b);
    if r.is_nan() {
        return F::CANON_NAN;
    }
    if r == F::ZERO {
        F::ZERO.copysign(b)
    } else if (r < F::ZERO) != (b < F::ZERO) {
        r + b
    } else {
        r
    }
}

/// The float function of an arithmetic kind. NaN results are canonical.
#[inline(always)]
pub(crate) fn float_bin<F: Float>(k: BKind, a: F, b: F) -> F {
    let r = match k {
        BKind::Add | BKind::Sum => a + b,
        BKind::Sub => a - b,
        BKind::Mul => a * b,
        BKind::Div => a / b,
        BKind::Pow => a.pow(b),
        BKind::Mod { fmod: true } => a.fmod(b),
        BKind::Mod { fmod: false } => fmod_floor(a, b),
        BKind::Max => fmax(a, b),
        BKind::Min => fmin(a, b),
        BKind::PRelu => {
            if a < F::ZERO {
                b * a
            } else {
                a
            }
        }
        _ => a,
    };
    canon(r)
}

fn int_bin<I: Int>(k: BKind, a: I, b: I) -> I {
    match k {
        BKind::Add | BKind::Sum => a.wadd(b),
        BKind::Sub => a.wsub(b),
        BKind::Mul => a.wmul(b),
        BKind::Div => a.tdiv(b),
        BKind::Mod { fmod: true } => a.trem(b),
        BKind::Mod { fmod: false } => a.fmod_floor(b),
        BKind::Max => a.max(b),
        BKind::Min => a.min(b),
        BKind::BitwiseAnd => a.and(b),
        BKind::BitwiseOr => a.or(b),
        BKind::BitwiseXor => a.xor(b),
        BKind::BitShift { left: true } => a.shl(b),
        BKind::BitShift { left: false } => a.shr(b),
        BKind::PRelu => {
            if a < I::ZERO {
                a.wmul(b)
            } else {
                a
            }
        }
        _ => a,
    }
}

#[inline(always)]
fn cmp<T: PartialOrd>(k: BKind, a: T, b: T) -> bool {
    match k {
        BKind::Equal => a == b,
        BKind::Less => a < b,
        BKind::Greater => a > b,
        BKind::LessOrEqual => a <= b,
        BKind::GreaterOrEqual => a >= b,
        _ => false,
    }
}

/// Integer power by squaring, wrapping; a negative exponent gives the truncated real
/// result (1 for base 1, ±1 for base −1, else 0).
fn ipow<I: Int>(a: I, e: i128) -> I {
    if e < 0 {
        let v = a.to_i128();
        return match v {
            1 => I::ONE,
            -1 => {
                if e % 2 == 0 {
                    I::ONE
                } else {
                    a
                }
            }
            _ => I::ZERO,
        };
    }
    let (mut base, mut e, mut acc) = (a, e, I::ONE);
    while e > 0 {
        if e & 1 == 1 {
            acc = acc.wmul(base);
        }
        base = base.wmul(base);
        e >>= 1;
    }
    acc
}

/// Numeric elements as f64 (exact for every dtype but 64-bit integers beyond 2^53).
fn to_f64s(t: &Tensor) -> Option<Vec<f64>> {
    Some(match t.data() {
        TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::F64(v) => v.clone(),
        TensorData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
        TensorData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
        _ => with_int!(t, v: T => v.iter().map(|&x: &T| x.to_f64()).collect(), _ => return None),
    })
}

fn to_i128s(t: &Tensor) -> Option<Vec<i128>> {
    with_int!(t, v: T => Some(v.iter().map(|&x: &T| x.to_i128()).collect()), _ => None)
}

fn narrow_bin<N: Narrow>(
    ctx: &Ctx,
    k: BKind,
    a: &[N],
    ash: &[usize],
    b: &[N],
    bsh: &[usize],
    out: &[usize],
) -> Result<Vec<N>, OpError> {
    map2(ctx, a, ash, b, bsh, out, |x: N, y: N| {
        N::narrow(float_bin::<f32>(k, x.widen(), y.widen()))
    })
}

/// Applies a binary kind to two tensors with broadcasting.
pub(crate) fn binary(ctx: &Ctx, k: BKind, a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
    let (ash, bsh) = (a.shape(), b.shape());
    let out = broadcast_shapes(ash, bsh)?;
    if k == BKind::Pow {
        return pow(ctx, a, b, out);
    }
    if a.dtype() != b.dtype() {
        return Err(OpError::DTypeMismatch {
            expected: a.dtype(),
            actual: b.dtype(),
        });
    }
    if !k.dtypes().contains(&a.dtype()) {
        return Err(OpError::DType {
            index: 0,
            dtype: a.dtype(),
        });
    }
    use TensorData as D;
    let data = if k.compare() {
        D::Bool(match (a.data(), b.data()) {
            (D::F32(x), D::F32(y)) => map2(ctx, x, ash, y, bsh, &out, |p, q| cmp(k, p, q))?,
            (D::F64(x), D::F64(y)) => map2(ctx, x, ash, y, bsh, &out, |p, q| cmp(k, p, q))?,
            (D::F16(x), D::F16(y)) => map2(ctx, x, ash, y, bsh, &out, |p, q| cmp(k, p, q))?,
            (D::BF16(x), D::BF16(y)) => map2(ctx, x, ash, y, bsh, &out, |p, q| cmp(k, p, q))?,
            (D::Bool(x), D::Bool(y)) => map2(ctx, x, ash, y, bsh, &out, |p, q| cmp(k, p, q))?,
            (D::Str(x), D::Str(y)) => {
                let xs: Vec<&str> = x.iter().map(String::as_str).collect();
                let ys: Vec<&str> = y.iter().map(String::as_str).collect();
                map2(ctx, &xs, ash, &ys, bsh, &out, |p, q| cmp(k, p, q))?
            }
            _ => with_int!(a, x: T => {
                let y = b.as_slice::<T>().ok_or(OpError::DTypeMismatch { expected: a.dtype(), actual: b.dtype() })?;
                map2(ctx, x, ash, y, bsh, &out, |p: T, q: T| cmp(k, p, q))?
            }, _ => return Err(OpError::DType { index: 0, dtype: a.dtype() })),
        })
    } else {
        match (a.data(), b.data()) {
            (D::Bool(x), D::Bool(y)) => {
                let f = move |p: bool, q: bool| match k {
                    BKind::And => p & q,
                    BKind::Or => p | q,
                    _ => p ^ q,
                };
                D::Bool(map2(ctx, x, ash, y, bsh, &out, f)?)
            }
            (D::F32(x), D::F32(y)) => D::F32(match simd::HotBin::of(k) {
                Some(h) if !ctx.reference() => simd::binary_f32(ctx, h, x, ash, y, bsh, &out)?,
                _ => map2(ctx, x, ash, y, bsh, &out, |p, q| float_bin::<f32>(k, p, q))?,
            }),
            (D::F64(x), D::F64(y)) => D::F64(map2(ctx, x, ash, y, bsh, &out, |p, q| {
                float_bin::<f64>(k, p, q)
            })?),
            (D::F16(x), D::F16(y)) => D::F16(narrow_bin::<f16>(ctx, k, x, ash, y, bsh, &out)?),
            (D::BF16(x), D::BF16(y)) => D::BF16(narrow_bin::<bf16>(ctx, k, x, ash, y, bsh, &out)?),
            _ => with_int!(a, x: T => {
                let y = b.as_slice::<T>().ok_or(OpError::DTypeMismatch { expected: a.dtype(), actual: b.dtype() })?;
                T::wrap_vec(map2(ctx, x, ash, y, bsh, &out, |p: T, q: T| int_bin(k, p, q))?)
            }, _ => return Err(OpError::DType { index: 0, dtype: a.dtype() })),
        }
    };
    Ok(Tensor::new(out, data)?)
}

/// `Pow`: the result has the base's dtype. Float bases: `pow` in f64 on the widened
/// operands, rounded once. Integer bases with an integer exponent: exact wrapping
/// power by squaring; with a float exponent: the f64 `pow`, truncated with saturation.
fn pow(ctx: &Ctx, a: &Tensor, b: &Tensor, out: Vec<usize>) -> Result<Tensor, OpError> {
    let (ash, bsh) = (a.shape(), b.shape());
    let bad_b = || OpError::DType {
        index: 1,
        dtype: b.dtype(),
    };
    use TensorData as D;
    let data = match a.data() {
        D::F32(x) => {
            if let Some(y) = b.as_slice::<f32>() {
                D::F32(map2(ctx, x, ash, y, bsh, &out, |p, q| {
                    float_bin::<f32>(BKind::Pow, p, q)
                })?)
            } else {
                let y = to_f64s(b).ok_or_else(bad_b)?;
                D::F32(map2(ctx, x, ash, &y, bsh, &out, |p, q| {
                    canon(super::math::pow_f64(p as f64, q) as f32)
                })?)
            }
        }
        D::F64(x) => {
            let y = to_f64s(b).ok_or_else(bad_b)?;
            D::F64(map2(ctx, x, ash, &y, bsh, &out, super::math::pow_f64)?)
        }
        D::F16(x) => {
            let y = to_f64s(b).ok_or_else(bad_b)?;
            D::F16(map2(ctx, x, ash, &y, bsh, &out, |p, q| {
                f16::from_f64(super::math::pow_f64(p.to_f64(), q))
            })?)
        }
        D::BF16(x) => {
            let y = to_f64s(b).ok_or_else(bad_b)?;
            D::BF16(map2(ctx, x, ash, &y, bsh, &out, |p, q| {
                bf16::from_f64(super::math::pow_f64(p.to_f64(), q))
            })?)
        }
        _ => with_int!(a, x: T => {
            if let Some(y) = to_i128s(b) {
                T::wrap_vec(map2(ctx, x, ash, &y, bsh, &out, |p: T, q| ipow(p, q))?)
            } else {
                let y = to_f64s(b).ok_or_else(bad_b)?;
                T::wrap_vec(map2(ctx, x, ash, &y, bsh, &out, |p: T, q| {
                    T::from_f64_sat(super::math::pow_f64(p.to_f64(), q))
                })?)
            }
        }, _ => return Err(OpError::DType { index: 0, dtype: a.dtype() })),
    };
    Ok(Tensor::new(out, data)?)
}

/// `Where(cond, x, y)`: `x` where `cond` is true, else `y`, with 3-way broadcasting.
/// Pure selection: the chosen element's bits are copied unchanged.
#[derive(Debug)]
pub struct Where;

impl Op for Where {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let c = infer_input(inputs, 0)?;
        let x = infer_input(inputs, 1)?;
        let y = infer_input(inputs, 2)?;
        if c.ty.dtype != DType::Bool {
            return Err(OpError::DType {
                index: 0,
                dtype: c.ty.dtype,
            });
        }
        same_dtype(x.ty.dtype, y.ty.dtype)?;
        let shape = broadcast_all([&c.ty.shape[..], &x.ty.shape[..], &y.ty.shape[..]])?;
        one(x.ty.dtype, shape)
    }

    fn cost(&self, _: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        outputs.iter().map(|t| t.numel()).sum::<u64>().max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let c = input(inputs, 0)?;
        let x = input(inputs, 1)?;
        let y = input(inputs, 2)?;
        let cond = c.as_slice::<bool>().ok_or(OpError::DType {
            index: 0,
            dtype: c.dtype(),
        })?;
        same_dtype(x.dtype(), y.dtype())?;
        let out = broadcast_all([c.shape(), x.shape(), y.shape()])?;
        let n = numel(&out)?;
        let oc = broadcast_offsets(c.shape(), &out);
        let ox = broadcast_offsets(x.shape(), &out);
        let oy = broadcast_offsets(y.shape(), &out);
        macro_rules! select {
            ($xv:expr, $yv:expr) => {
                (0..n)
                    .map(|i| {
                        if cond[oc[i]] {
                            $xv[ox[i]].clone()
                        } else {
                            $yv[oy[i]].clone()
                        }
                    })
                    .collect()
            };
        }
        let data = deed_types::with_data!(x.data(), xv => {
            let yv = match y.data() {
                d if d.dtype() == x.dtype() => d,
                _ => return Err(OpError::DTypeMismatch { expected: x.dtype(), actual: y.dtype() }),
            };
            where_typed(xv, yv, |xv, yv| select!(xv, yv))?
        });
        Ok(vec![Tensor::new(out, data)?])
    }
}

/// Pairs `x`'s typed vector with `y`'s of the same type and builds the result.
fn where_typed<T: deed_types::tensor::Element>(
    xv: &[T],
    yv: &TensorData,
    f: impl Fn(&[T], &[T]) -> Vec<T>,
) -> Result<TensorData, OpError> {
    let ys = T::slice(yv).ok_or(OpError::DTypeMismatch {
        expected: T::DTYPE,
        actual: yv.dtype(),
    })?;
    Ok(T::wrap(f(xv, ys)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_min_signed_zero_and_nan() {
        assert_eq!(fmax(-0.0f32, 0.0).to_bits(), 0);
        assert_eq!(fmin(0.0f32, -0.0).to_bits(), (-0.0f32).to_bits());
        assert!(fmax(f32::NAN, 1.0).is_nan());
        assert!(fmin(1.0, f32::NAN).is_nan());
    }

    #[test]
    fn integer_division_truncates_and_zero_divisor_gives_zero() {
        assert_eq!(int_bin(BKind::Div, -7i32, 2), -3);
        assert_eq!(int_bin(BKind::Div, 7i32, 0), 0);
        assert_eq!(int_bin(BKind::Div, i8::MIN, -1), i8::MIN);
        assert_eq!(int_bin(BKind::Mod { fmod: false }, -7i32, 3), 2);
        assert_eq!(int_bin(BKind::Mod { fmod: true }, -7i32, 3), -1);
    }

    #[test]
    fn float_mod_follows_numpy() {
        assert_eq!(fmod_floor(-7.5f64, 2.0), 0.5);
        assert_eq!(fmod_floor(7.5f64, -2.0), -0.5);
        assert_eq!(fmod_floor(4.0f64, -2.0).to_bits(), (-0.0f64).to_bits());
        assert!(fmod_floor(1.0f64, 0.0).is_nan());
    }

    #[test]
    fn integer_pow() {
        assert_eq!(ipow(3i64, 4), 81);
        assert_eq!(ipow(2i32, -1), 0);
        assert_eq!(ipow(-1i32, -3), -1);
    }
}
