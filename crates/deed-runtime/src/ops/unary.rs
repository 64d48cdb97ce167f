//! Unary elementwise operators (activations, rounding, transcendental functions,
//! predicates) and `Clip`.
//!
//! Each float operator is one generic function of the element ([`apply_float`]),
//! instantiated for f32 and f64; f16 and bf16 run the f32 function and round once. The
//! f32 activations that dominate real models (Relu, Exp, Tanh, Erf, Sigmoid, Gelu) also
//! have SIMD kernels ([`super::simd`]) compiled from the very same functions.

use deed_types::{DType, Tensor, TensorData};
use half::{bf16, f16};

use super::elementwise::{canon, map1, numeric, with_int, Float, Int, Narrow, Trig, FLOATS, SINTS};
use super::simd;
use super::util::{check_count, infer_input, input, one, opt_input};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

const NAMES: &[&str] = &[
    "Abs",
    "Neg",
    "Floor",
    "Ceil",
    "Round",
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Log",
    "Tanh",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Swish",
    "Relu",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Celu",
    "ThresholdedRelu",
    "Softplus",
    "Softsign",
    "Erf",
    "Gelu",
    "Mish",
    "Sin",
    "Cos",
    "Tan",
    "Asin",
    "Acos",
    "Atan",
    "Sinh",
    "Cosh",
    "Asinh",
    "Acosh",
    "Atanh",
    "Sign",
    "IsNaN",
    "IsInf",
    "Not",
    "BitwiseNot",
    "Shrink",
];

pub(crate) fn register(r: &mut Registry) {
    for &n in NAMES {
        r.add(n, build);
    }
    r.add("Clip", build_clip);
}

/// Which unary function, with its attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
#[allow(missing_docs)]
pub enum Kind {
    Abs,
    Neg,
    Floor,
    Ceil,
    Round,
    Sqrt,
    Reciprocal,
    Exp,
    Log,
    Tanh,
    Sigmoid,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    /// `x · sigmoid(α·x)`.
    Swish {
        alpha: f32,
    },
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Elu {
        alpha: f32,
    },
    Selu {
        alpha: f32,
        gamma: f32,
    },
    Celu {
        alpha: f32,
    },
    ThresholdedRelu {
        alpha: f32,
    },
    Softplus,
    Softsign,
    Erf,
    /// `tanh`: the tanh approximation instead of the exact erf form.
    Gelu {
        tanh: bool,
    },
    Mish,
    Trig(TrigKind),
    Sign,
    IsNaN,
    IsInf {
        pos: bool,
        neg: bool,
    },
    Not,
    BitwiseNot,
    Shrink {
        bias: f32,
        lambd: f32,
    },
}

/// The libm-backed functions (a public mirror of the engine's internal enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TrigKind(Trig);

fn build(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 1, 1)?;
    let a = n.attrs;
    let trig = |t| Kind::Trig(TrigKind(t));
    let kind = match n.op_type {
        "Abs" => Kind::Abs,
        "Neg" => Kind::Neg,
        "Floor" => Kind::Floor,
        "Ceil" => Kind::Ceil,
        "Round" => Kind::Round,
        "Sqrt" => Kind::Sqrt,
        "Reciprocal" => Kind::Reciprocal,
        "Exp" => Kind::Exp,
        "Log" => Kind::Log,
        "Tanh" => Kind::Tanh,
        "Sigmoid" => Kind::Sigmoid,
        "HardSigmoid" => Kind::HardSigmoid {
            alpha: a.float("alpha", 0.2)?,
            beta: a.float("beta", 0.5)?,
        },
        "HardSwish" => Kind::HardSwish,
        "Swish" => Kind::Swish {
            alpha: a.float("alpha", 1.0)?,
        },
        "Relu" => Kind::Relu,
        "LeakyRelu" => Kind::LeakyRelu {
            alpha: a.float("alpha", 0.01)?,
        },
        "Elu" => Kind::Elu {
            alpha: a.float("alpha", 1.0)?,
        },
        "Selu" => Kind::Selu {
            alpha: a.float("alpha", 1.673_263_2)?,
            gamma: a.float("gamma", 1.050_701)?,
        },
        "Celu" => {
            let alpha = a.float("alpha", 1.0)?;
            if alpha == 0.0 {
                return Err(OpError::bad_attr("alpha", "Celu's alpha must not be 0"));
            }
            Kind::Celu { alpha }
        }
        "ThresholdedRelu" => Kind::ThresholdedRelu {
            alpha: a.float("alpha", 1.0)?,
        },
        "Softplus" => Kind::Softplus,
        "Softsign" => Kind::Softsign,
        "Erf" => Kind::Erf,
        "Gelu" => match a.string("approximate", "none")?.as_str() {
            "none" => Kind::Gelu { tanh: false },
            "tanh" => Kind::Gelu { tanh: true },
            other => return Err(OpError::unsupported(format!("Gelu approximate={other:?}"))),
        },
        "Mish" => Kind::Mish,
        "Sin" => trig(Trig::Sin),
        "Cos" => trig(Trig::Cos),
        "Tan" => trig(Trig::Tan),
        "Asin" => trig(Trig::Asin),
        "Acos" => trig(Trig::Acos),
        "Atan" => trig(Trig::Atan),
        "Sinh" => trig(Trig::Sinh),
        "Cosh" => trig(Trig::Cosh),
        "Asinh" => trig(Trig::Asinh),
        "Acosh" => trig(Trig::Acosh),
        "Atanh" => trig(Trig::Atanh),
        "Sign" => Kind::Sign,
        "IsNaN" => Kind::IsNaN,
        "IsInf" => Kind::IsInf {
            pos: a.int("detect_positive", 1)? != 0,
            neg: a.int("detect_negative", 1)? != 0,
        },
        "Not" => Kind::Not,
        "BitwiseNot" => Kind::BitwiseNot,
        "Shrink" => Kind::Shrink {
            bias: a.float("bias", 0.0)?,
            lambd: a.float("lambd", 0.5)?,
        },
        other => return Err(OpError::unsupported(format!("unary operator {other}"))),
    };
    Ok(Box::new(Unary { kind }))
}

/// A unary elementwise operator.
#[derive(Debug)]
pub struct Unary {
    /// The function.
    pub kind: Kind,
}

impl Kind {
    fn dtypes(&self) -> Vec<DType> {
        let with = |extra: &[DType]| FLOATS.iter().chain(extra).copied().collect::<Vec<_>>();
        match self {
            Kind::Abs | Kind::Sign | Kind::Shrink { .. } => numeric(),
            Kind::Neg | Kind::Relu => with(SINTS),
            Kind::Not => vec![DType::Bool],
            Kind::BitwiseNot => numeric().into_iter().filter(|d| d.is_int()).collect(),
            _ => FLOATS.to_vec(),
        }
    }

    /// Operation units per output element. Simple arithmetic is 1; the project's own
    /// f32 transcendentals (a polynomial of ~10 fused multiply-adds) 4; the
    /// libm-backed functions 8.
    fn weight(&self) -> u64 {
        match self {
            Kind::Exp
            | Kind::Log
            | Kind::Tanh
            | Kind::Sigmoid
            | Kind::Swish { .. }
            | Kind::Erf
            | Kind::Elu { .. }
            | Kind::Selu { .. }
            | Kind::Celu { .. }
            | Kind::Gelu { .. } => 4,
            Kind::Softplus | Kind::Mish | Kind::Trig(_) => 8,
            _ => 1,
        }
    }

    fn out_dtype(&self, d: DType) -> DType {
        match self {
            Kind::IsNaN | Kind::IsInf { .. } => DType::Bool,
            _ => d,
        }
    }
}

/// NaN-propagating clamp of `v` to `[lo, hi]` (`min(max(v, lo), hi)`).
#[inline(always)]
fn clamp_nan<F: Float>(v: F, lo: F, hi: F) -> F {
    let v = if v < lo { lo } else { v };
    if v > hi {
        hi
    } else {
        v
    }
}

/// `max(x, 0)`: −0 stays −0, NaN stays NaN.
#[inline(always)]
pub(crate) fn relu<F: Float>(x: F) -> F {
    canon(if x < F::ZERO { F::ZERO } else { x })
}

/// `0.5·x·(1 + erf(x/√2))`.
#[inline(always)]
pub(crate) fn gelu_erf<F: Float>(x: F) -> F {
    let half = F::from_f32(0.5);
    let inv_sqrt2 = F::from_f64(std::f64::consts::FRAC_1_SQRT_2);
    canon(half * x * (F::ONE + (x * inv_sqrt2).erf()))
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
#[inline(always)]
pub(crate) fn gelu_tanh<F: Float>(x: F) -> F {
    let half = F::from_f32(0.5);
    let c = F::from_f64(0.797_884_560_802_865_4); // √(2/π)
    let k = F::from_f32(0.044_715);
    let inner = c * (x + k * (x * x * x));
    canon(half * x * (F::ONE + inner.tanh()))
}

/// The float function of every float-capable kind. NaN results are canonical.
#[inline(always)]
pub(crate) fn apply_float<F: Float>(k: Kind, x: F) -> F {
    let r = match k {
        Kind::Abs => return x.abs(),
        Kind::Neg => return -x,
        Kind::Floor => x.floor(),
        Kind::Ceil => x.ceil(),
        Kind::Round => x.round_even(),
        Kind::Sqrt => x.sqrt(),
        Kind::Reciprocal => F::ONE / x,
        Kind::Exp => x.exp(),
        Kind::Log => x.ln(),
        Kind::Tanh => x.tanh(),
        Kind::Sigmoid => x.sigmoid(),
        Kind::HardSigmoid { alpha, beta } => {
            clamp_nan(F::from_f32(alpha) * x + F::from_f32(beta), F::ZERO, F::ONE)
        }
        Kind::HardSwish => {
            let s = clamp_nan(x / F::from_f32(6.0) + F::from_f32(0.5), F::ZERO, F::ONE);
            x * s
        }
        Kind::Swish { alpha } => x * (F::from_f32(alpha) * x).sigmoid(),
        Kind::Relu => return relu(x),
        Kind::LeakyRelu { alpha } => {
            if x < F::ZERO {
                F::from_f32(alpha) * x
            } else {
                x
            }
        }
        Kind::Elu { alpha } => {
            if x < F::ZERO {
                F::from_f32(alpha) * x.expm1()
            } else {
                x
            }
        }
        Kind::Selu { alpha, gamma } => {
            let g = F::from_f32(gamma);
            if x > F::ZERO {
                g * x
            } else {
                g * (F::from_f32(alpha) * x.expm1())
            }
        }
        Kind::Celu { alpha } => {
            if x < F::ZERO {
                let a = F::from_f32(alpha);
                a * (x / a).expm1()
            } else {
                x
            }
        }
        // ONNX's function body, `Where(Greater(X, alpha), X, 0)`: NaN compares false
        // and gives 0 (as the ONNX reference and onnxruntime compute it).
        Kind::ThresholdedRelu { alpha } => {
            if x > F::from_f32(alpha) {
                x
            } else {
                F::ZERO
            }
        }
        Kind::Softplus => x.softplus(),
        Kind::Softsign => x / (F::ONE + x.abs()),
        Kind::Erf => x.erf(),
        Kind::Gelu { tanh: false } => return gelu_erf(x),
        Kind::Gelu { tanh: true } => return gelu_tanh(x),
        Kind::Mish => x * x.softplus().tanh(),
        Kind::Trig(TrigKind(t)) => x.trig(t),
        Kind::Sign => {
            if x > F::ZERO {
                F::ONE
            } else if x < F::ZERO {
                -F::ONE
            } else {
                // ±0 stays as is; NaN stays NaN (made canonical below).
                x
            }
        }
        // ONNX's definition: NaN is neither below −λ nor above λ, so it gives 0 (as
        // the ONNX reference and onnxruntime compute it).
        Kind::Shrink { bias, lambd } => {
            let l = F::from_f32(lambd);
            if x < -l {
                x + F::from_f32(bias)
            } else if x > l {
                x - F::from_f32(bias)
            } else {
                F::ZERO
            }
        }
        // Not float functions; never reached (the dtype check comes first).
        Kind::IsNaN | Kind::IsInf { .. } | Kind::Not | Kind::BitwiseNot => x,
    };
    canon(r)
}

fn apply_int<I: Int>(k: Kind, x: I) -> I {
    match k {
        Kind::Abs => x.wabs(),
        Kind::Neg => x.wneg(),
        Kind::Relu => x.max(I::ZERO),
        Kind::Sign => {
            if x > I::ZERO {
                I::ONE
            } else if x < I::ZERO {
                I::ONE.wneg()
            } else {
                I::ZERO
            }
        }
        Kind::BitwiseNot => x.not(),
        Kind::Shrink { bias, lambd } => {
            // Computed in f64 (exact for every attribute and every integer up to 2^53),
            // then truncated with saturation.
            let v = x.to_f64();
            let (b, l) = (bias as f64, lambd as f64);
            let r = if v < -l {
                v + b
            } else if v > l {
                v - b
            } else {
                0.0
            };
            I::from_f64_sat(r)
        }
        _ => x,
    }
}

fn float_pred(k: Kind, x: f64) -> bool {
    match k {
        Kind::IsNaN => x.is_nan(),
        Kind::IsInf { pos, neg } => (pos && x == f64::INFINITY) || (neg && x == f64::NEG_INFINITY),
        _ => false,
    }
}

fn run_narrow<N: Narrow>(ctx: &Ctx, k: Kind, v: &[N]) -> Vec<N> {
    map1(ctx, v, |x: N| N::narrow(apply_float::<f32>(k, x.widen())))
}

impl Op for Unary {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        if !self.kind.dtypes().contains(&x.ty.dtype) {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        one(self.kind.out_dtype(x.ty.dtype), x.ty.shape.clone())
    }

    fn cost(&self, _: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let n: u64 = outputs.iter().map(|t| t.numel()).sum();
        n.saturating_mul(self.kind.weight()).max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let k = self.kind;
        let shape = x.shape().to_vec();
        if !k.dtypes().contains(&x.dtype()) {
            return Err(OpError::DType {
                index: 0,
                dtype: x.dtype(),
            });
        }
        let data = match (k, x.data()) {
            (Kind::IsNaN | Kind::IsInf { .. }, d) => TensorData::Bool(match d {
                TensorData::F32(v) => map1(ctx, v, |e| float_pred(k, e as f64)),
                TensorData::F64(v) => map1(ctx, v, |e| float_pred(k, e)),
                TensorData::F16(v) => map1(ctx, v, |e| float_pred(k, e.to_f64())),
                TensorData::BF16(v) => map1(ctx, v, |e| float_pred(k, e.to_f64())),
                _ => {
                    return Err(OpError::DType {
                        index: 0,
                        dtype: x.dtype(),
                    })
                }
            }),
            (Kind::Not, TensorData::Bool(v)) => TensorData::Bool(map1(ctx, v, |e| !e)),
            (_, TensorData::F32(v)) => TensorData::F32(match simd::Hot::of(k) {
                Some(h) if !ctx.reference() => simd::unary_f32(ctx, h, v),
                _ => map1(ctx, v, |e| apply_float::<f32>(k, e)),
            }),
            (_, TensorData::F64(v)) => TensorData::F64(map1(ctx, v, |e| apply_float::<f64>(k, e))),
            (_, TensorData::F16(v)) => TensorData::F16(run_narrow::<f16>(ctx, k, v)),
            (_, TensorData::BF16(v)) => TensorData::BF16(run_narrow::<bf16>(ctx, k, v)),
            _ => with_int!(x, v: T => T::wrap_vec(map1(ctx, v, |e: T| apply_int(k, e))),
                _ => return Err(OpError::DType { index: 0, dtype: x.dtype() })),
        };
        Ok(vec![Tensor::new(shape, data)?])
    }

    /// Every float kind but `Abs` and `Neg` ends in [`canon`] (the fast kernels are
    /// compiled from the same functions); those two change only the sign bit and
    /// keep a payload. Integer and boolean outputs hold no NaN.
    fn nans_canonical(&self) -> bool {
        !matches!(self.kind, Kind::Abs | Kind::Neg)
    }
}

/// Wraps a typed vector into tensor data (a shorthand for `Element::wrap`).
pub(crate) trait WrapVec: Sized {
    fn wrap_vec(v: Vec<Self>) -> TensorData;
}
impl<T: deed_types::tensor::Element> WrapVec for T {
    fn wrap_vec(v: Vec<Self>) -> TensorData {
        T::wrap(v)
    }
}

/// `Clip`: `min(max(x, lo), hi)` — bounds from attributes before opset 11, from
/// optional scalar inputs since. When `lo > hi` every element becomes `hi` (numpy's
/// order). NaN elements stay NaN.
#[derive(Debug)]
pub struct Clip {
    /// Opset < 11: `(min, max)` attributes.
    attrs: Option<(f32, f32)>,
}

fn build_clip(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    if n.opset < 11 {
        check_count(n.num_inputs, 1, 1)?;
        let lo = n.attrs.float("min", f32::NEG_INFINITY)?;
        let hi = n.attrs.float("max", f32::INFINITY)?;
        Ok(Box::new(Clip {
            attrs: Some((lo, hi)),
        }))
    } else {
        check_count(n.num_inputs, 1, 3)?;
        Ok(Box::new(Clip { attrs: None }))
    }
}

fn bound<T: deed_types::tensor::Element + Copy>(
    inputs: &[Option<&Tensor>],
    i: usize,
    dtype: DType,
) -> Result<Option<T>, OpError> {
    match opt_input(inputs, i) {
        None => Ok(None),
        Some(t) => {
            if t.dtype() != dtype {
                return Err(OpError::DTypeMismatch {
                    expected: dtype,
                    actual: t.dtype(),
                });
            }
            match t.as_slice::<T>() {
                Some([v]) => Ok(Some(*v)),
                Some([]) => Ok(None),
                _ => Err(OpError::shape(format!(
                    "Clip bound {i} must be a scalar, got shape {:?}",
                    t.shape()
                ))),
            }
        }
    }
}

fn clip_float<F: Float>(x: F, lo: Option<F>, hi: Option<F>) -> F {
    let mut v = x;
    if let Some(l) = lo {
        if v < l || l.is_nan() {
            v = l;
        }
    }
    if let Some(h) = hi {
        if v > h || h.is_nan() {
            v = h;
        }
    }
    canon(v)
}

impl Op for Clip {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let ok = if self.attrs.is_some() {
            FLOATS.contains(&x.ty.dtype)
        } else {
            numeric().contains(&x.ty.dtype)
        };
        if !ok {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        for i in 1..3 {
            if let Some(b) = super::util::opt_infer_input(inputs, i) {
                if b.ty.dtype != x.ty.dtype {
                    return Err(OpError::DTypeMismatch {
                        expected: x.ty.dtype,
                        actual: b.ty.dtype,
                    });
                }
            }
        }
        one(x.ty.dtype, x.ty.shape.clone())
    }

    fn cost(&self, _: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        outputs.iter().map(|t| t.numel()).sum::<u64>().max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let dt = x.dtype();
        let shape = x.shape().to_vec();
        let data = match (x.data(), self.attrs) {
            (TensorData::F32(v), Some((lo, hi))) => {
                TensorData::F32(map1(ctx, v, |e| clip_float(e, Some(lo), Some(hi))))
            }
            (TensorData::F64(v), Some((lo, hi))) => TensorData::F64(map1(ctx, v, |e| {
                clip_float(e, Some(lo as f64), Some(hi as f64))
            })),
            (TensorData::F16(v), Some((lo, hi))) => TensorData::F16(map1(ctx, v, |e| {
                f16::from_f32(clip_float(e.to_f32(), Some(lo), Some(hi)))
            })),
            (TensorData::BF16(v), Some((lo, hi))) => TensorData::BF16(map1(ctx, v, |e| {
                bf16::from_f32(clip_float(e.to_f32(), Some(lo), Some(hi)))
            })),
            (_, Some(_)) => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: dt,
                })
            }
            (TensorData::F32(v), None) => {
                let (lo, hi) = (bound::<f32>(inputs, 1, dt)?, bound::<f32>(inputs, 2, dt)?);
                TensorData::F32(map1(ctx, v, |e| clip_float(e, lo, hi)))
            }
            (TensorData::F64(v), None) => {
                let (lo, hi) = (bound::<f64>(inputs, 1, dt)?, bound::<f64>(inputs, 2, dt)?);
                TensorData::F64(map1(ctx, v, |e| clip_float(e, lo, hi)))
            }
            (TensorData::F16(v), None) => {
                let lo = bound::<f16>(inputs, 1, dt)?.map(f16::to_f32);
                let hi = bound::<f16>(inputs, 2, dt)?.map(f16::to_f32);
                TensorData::F16(map1(ctx, v, |e| {
                    f16::from_f32(clip_float(e.to_f32(), lo, hi))
                }))
            }
            (TensorData::BF16(v), None) => {
                let lo = bound::<bf16>(inputs, 1, dt)?.map(bf16::to_f32);
                let hi = bound::<bf16>(inputs, 2, dt)?.map(bf16::to_f32);
                TensorData::BF16(map1(ctx, v, |e| {
                    bf16::from_f32(clip_float(e.to_f32(), lo, hi))
                }))
            }
            _ => with_int!(x, v: T => {
                let lo = bound::<T>(inputs, 1, dt)?;
                let hi = bound::<T>(inputs, 2, dt)?;
                T::wrap_vec(map1(ctx, v, |e: T| {
                    let e = lo.map_or(e, |l| e.max(l));
                    hi.map_or(e, |h| e.min(h))
                }))
            }, _ => return Err(OpError::DType { index: 0, dtype: dt })),
        };
        Ok(vec![Tensor::new(shape, data)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swish_is_x_times_the_sigmoid_of_alpha_x() {
        for (alpha, x) in [(1.0f32, 0.75f32), (0.5, -3.0), (2.0, 10.0)] {
            let k = Kind::Swish { alpha };
            let want = x * (alpha * x).sigmoid();
            assert_eq!(apply_float(k, x).to_bits(), want.to_bits());
        }
        assert!(apply_float(Kind::Swish { alpha: 1.0 }, f32::NAN).is_nan());
        assert_eq!(apply_float(Kind::Swish { alpha: 1.0 }, 0.0f32), 0.0);
    }

    #[test]
    fn relu_keeps_signed_zero_and_nan() {
        assert_eq!(relu(-0.0f32).to_bits(), (-0.0f32).to_bits());
        assert_eq!(relu(-3.0f32), 0.0);
        assert_eq!(
            relu(f32::NAN).to_bits(),
            super::super::math::NAN_F32.to_bits()
        );
    }

    #[test]
    fn thresholded_relu_and_shrink_give_nan_zero() {
        // Their ONNX definitions compare: NaN is never above the threshold.
        let t = Kind::ThresholdedRelu { alpha: 0.5 };
        assert_eq!(apply_float(t, f32::NAN).to_bits(), 0.0f32.to_bits());
        assert_eq!(apply_float(t, 0.7f32), 0.7);
        assert_eq!(apply_float(t, 0.5f32), 0.0);
        let s = Kind::Shrink {
            bias: 0.25,
            lambd: 1.0,
        };
        assert_eq!(apply_float(s, f64::NAN).to_bits(), 0.0f64.to_bits());
        assert_eq!(apply_float(s, 2.0f64), 1.75);
        assert_eq!(apply_float(s, -2.0f64), -1.75);
    }

    #[test]
    fn hard_sigmoid_propagates_nan() {
        let k = Kind::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        };
        assert!(apply_float(k, f32::NAN).is_nan());
        assert_eq!(apply_float(k, 10.0f32), 1.0);
        assert_eq!(apply_float(k, -10.0f32), 0.0);
    }

    #[test]
    fn int_abs_neg_wrap() {
        assert_eq!(apply_int(Kind::Abs, i8::MIN), i8::MIN);
        assert_eq!(apply_int(Kind::Neg, i32::MIN), i32::MIN);
        assert_eq!(apply_int(Kind::Sign, -5i64), -1);
    }

    #[test]
    fn clip_min_above_max_gives_max() {
        assert_eq!(clip_float(0.5f32, Some(2.0), Some(1.0)), 1.0);
        assert!(clip_float(f32::NAN, Some(0.0), Some(1.0)).is_nan());
    }
}
