//! Quantized operators: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
//! MatMulInteger, QLinearMatMul, ConvInteger and QLinearConv.
//!
//! Integer parts are exact: operands are widened to `i16` with their zero points
//! subtracted, products are summed in wrapping `i32` (see [`igemm`]). The float
//! parts have one definition each, written in
//! `docs/canonical-semantics.md`: divisions and multiplier products
//! in the scale's dtype, requantization as one `f64` product, round half to even,
//! then the zero point is added and the result saturated.

use deed_types::tensor::{F4E2M1, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, I2, I4, U2, U4};
use deed_types::{DType, Tensor, TensorData};
use half::{bf16, f16};

use super::elementwise::canon;
use super::minifloat::{Mini, Num};
use super::util::{
    check_count, check_dtype, infer_input, input, norm_axis, numel, one, opt_infer_input,
};
use super::util::{opt_input, strides};
use super::{Ctx, InferInput, NodeInfo, Op, Prepared, Registry, TypeInfo};
use crate::error::OpError;
use crate::kernels::{qgemm, QData, QuantB};

pub mod igemm;

pub(crate) fn register(r: &mut Registry) {
    r.add("QuantizeLinear", build_quantize);
    r.add("DequantizeLinear", build_dequantize);
    r.add("DynamicQuantizeLinear", |_| {
        Ok(Box::new(DynamicQuantizeLinear))
    });
    r.add("MatMulInteger", |_| Ok(Box::new(MatMulInteger)));
    r.add("QLinearMatMul", |_| Ok(Box::new(QLinearMatMul)));
    r.add("ConvInteger", |n| {
        Ok(Box::new(ConvInteger(ConvParams::from_node(n)?)))
    });
    r.add("QLinearConv", |n| {
        Ok(Box::new(QLinearConv(ConvParams::from_node(n)?)))
    });
}

// ---------------------------------------------------------------------------------
// Shared helpers

/// Integer range of a quantized dtype.
fn qrange(dt: DType) -> Option<(i64, i64)> {
    Some(match dt {
        DType::U8 => (0, 255),
        DType::I8 => (-128, 127),
        DType::U16 => (0, 65535),
        DType::I16 => (-32768, 32767),
        _ => return None,
    })
}

/// What `QuantizeLinear` makes and `DequantizeLinear` reads: integers of a range, or
/// one of the 8- and 4-bit floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QTarget {
    Int(i64, i64),
    Float(Mini),
}

/// The quantized form of `dt`: the integer types of [`qrange`], the 4- and 2-bit
/// integers, and the float8 and float4e2m1 types.
fn qtarget(dt: DType) -> Option<QTarget> {
    if let Some((lo, hi)) = qrange(dt) {
        return Some(QTarget::Int(lo, hi));
    }
    Some(match dt {
        DType::U4 => QTarget::Int(0, 15),
        DType::I4 => QTarget::Int(-8, 7),
        DType::U2 => QTarget::Int(0, 3),
        DType::I2 => QTarget::Int(-2, 1),
        DType::F8E4M3FN => QTarget::Float(Mini::E4M3FN),
        DType::F8E4M3FNUZ => QTarget::Float(Mini::E4M3FNUZ),
        DType::F8E5M2 => QTarget::Float(Mini::E5M2),
        DType::F8E5M2FNUZ => QTarget::Float(Mini::E5M2FNUZ),
        DType::F4E2M1 => QTarget::Float(Mini::E2M1),
        _ => return None,
    })
}

/// Reads a quantized tensor's elements as `i32`s: [`ints_of`] and the 4- and 2-bit
/// integers.
fn qints_of(t: &Tensor) -> Option<Vec<i32>> {
    fn each<T: Copy>(v: &[T], f: impl Fn(T) -> i32) -> Option<Vec<i32>> {
        Some(v.iter().map(|&x| f(x)).collect())
    }
    match t.data() {
        TensorData::U4(v) => each(v, |x| i32::from(x.get())),
        TensorData::I4(v) => each(v, |x| i32::from(x.get())),
        TensorData::U2(v) => each(v, |x| i32::from(x.get())),
        TensorData::I2(v) => each(v, |x| i32::from(x.get())),
        _ => ints_of(t),
    }
}

/// An 8- or 4-bit float zero point (input 2), when given, as f32s with its layout
/// over an input of shape `x`.
fn minifloat_zero_points(
    z: Option<&Tensor>,
    x: &[usize],
    axis: i64,
    block: i64,
) -> Result<Option<(Vec<f32>, ParamLayout)>, OpError> {
    z.map(|z| {
        let values = minifloats_of(z).ok_or(OpError::DType {
            index: 2,
            dtype: z.dtype(),
        })?;
        Ok((values, ParamLayout::new(x, z.shape(), axis, block)?))
    })
    .transpose()
}

/// Reads a tensor of the 8- or 4-bit floats as `f32`s (exact).
fn minifloats_of(t: &Tensor) -> Option<Vec<f32>> {
    fn each<T: deed_types::lowbit::LowBit>(v: &[T]) -> Option<Vec<f32>> {
        Some(v.iter().map(|x| x.to_f64() as f32).collect())
    }
    match t.data() {
        TensorData::F8E4M3FN(v) => each(v),
        TensorData::F8E4M3FNUZ(v) => each(v),
        TensorData::F8E5M2(v) => each(v),
        TensorData::F8E5M2FNUZ(v) => each(v),
        TensorData::F4E2M1(v) => each(v),
        _ => None,
    }
}

/// Builds a tensor of `dt` (a quantized dtype) from values already in range.
fn qint_tensor(dt: DType, shape: Vec<usize>, v: Vec<i32>) -> Result<Tensor, OpError> {
    let bits = |x: i32| x as u8;
    Ok(match dt {
        DType::U4 => Tensor::from_vec(
            shape,
            v.into_iter().map(|x| U4::from_bits(bits(x))).collect(),
        )?,
        DType::I4 => Tensor::from_vec(
            shape,
            v.into_iter().map(|x| I4::from_bits(bits(x))).collect(),
        )?,
        DType::U2 => Tensor::from_vec(
            shape,
            v.into_iter().map(|x| U2::from_bits(bits(x))).collect(),
        )?,
        DType::I2 => Tensor::from_vec(
            shape,
            v.into_iter().map(|x| I2::from_bits(bits(x))).collect(),
        )?,
        _ => int_tensor(dt, shape, v)?,
    })
}

/// Builds a tensor of the 8- or 4-bit float `m` from its codes.
fn minifloat_tensor(m: Mini, shape: Vec<usize>, c: Vec<u8>) -> Result<Tensor, OpError> {
    let it = c.into_iter();
    Ok(match m {
        Mini::E4M3FN => Tensor::from_vec(shape, it.map(F8E4M3FN::from_bits).collect())?,
        Mini::E4M3FNUZ => Tensor::from_vec(shape, it.map(F8E4M3FNUZ::from_bits).collect())?,
        Mini::E5M2 => Tensor::from_vec(shape, it.map(F8E5M2::from_bits).collect())?,
        Mini::E5M2FNUZ => Tensor::from_vec(shape, it.map(F8E5M2FNUZ::from_bits).collect())?,
        Mini::E2M1 => Tensor::from_vec(shape, it.map(F4E2M1::from_bits).collect())?,
    })
}

/// Reads an integer tensor of a quantized dtype (or i32) as `i32`s.
fn ints_of(t: &Tensor) -> Option<Vec<i32>> {
    Some(match t.data() {
        TensorData::U8(v) => v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::I8(v) => v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::U16(v) => v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::I16(v) => v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::I32(v) => v.clone(),
        _ => return None,
    })
}

/// Reads a float tensor (f32, f16 or bf16) as `f32`s (exact widening).
fn floats_of(t: &Tensor) -> Option<Vec<f32>> {
    Some(match t.data() {
        TensorData::F32(v) => v.clone(),
        TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        TensorData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
        TensorData::F8E8M0(v) => v.iter().map(|x| x.to_f32()).collect(),
        _ => return None,
    })
}

/// Rounds an `f32` to the precision of a float dtype (identity for f32). Used to
/// reproduce arithmetic done in f16/bf16: an f32 operation on two f16 (bf16) values
/// followed by this rounding is the correctly rounded f16 (bf16) operation.
fn round_to(dt: DType, v: f32) -> f32 {
    match dt {
        DType::F16 => f16::from_f32(v).to_f32(),
        DType::BF16 => bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// Builds a float tensor of `dt` from `f32` values (round to nearest even).
#[inline(always)]
fn float_tensor(dt: DType, shape: Vec<usize>, v: Vec<f32>) -> Result<Tensor, OpError> {
    Ok(match dt {
        DType::F32 => Tensor::from_vec(shape, v)?,
        DType::F16 => Tensor::from_vec(shape, v.into_iter().map(f16::from_f32).collect())?,
        DType::BF16 => Tensor::from_vec(shape, v.into_iter().map(bf16::from_f32).collect())?,
        DType::F64 => Tensor::from_vec(shape, v.into_iter().map(f64::from).collect())?,
        other => return Err(OpError::unsupported(format!("output dtype {other}"))),
    })
}

/// `f` over `src` as a plain loop into a buffer. Inside a vectorized region
/// (`simd::with_fma`) this stays in the region, where `collect` would call a function
/// of its own, compiled for the baseline instruction set.
#[inline(always)]
fn map_into<S: Copy, D: Copy + Default>(src: &[S], f: impl Fn(S) -> D) -> Vec<D> {
    super::simd::map_vec(src, f)
}

/// Builds an integer tensor of a quantized dtype from values already in range. The
/// narrowed values' buffer is freed for a later output of this thread
/// (`scratch::recycle`).
#[inline(always)]
fn int_tensor(dt: DType, shape: Vec<usize>, v: Vec<i32>) -> Result<Tensor, OpError> {
    let t = match dt {
        DType::U8 => Tensor::from_vec(shape, map_into(&v, |x| x as u8))?,
        DType::I8 => Tensor::from_vec(shape, map_into(&v, |x| x as i8))?,
        DType::U16 => Tensor::from_vec(shape, map_into(&v, |x| x as u16))?,
        DType::I16 => Tensor::from_vec(shape, map_into(&v, |x| x as i16))?,
        DType::I32 => return Ok(Tensor::from_vec(shape, v)?),
        other => return Err(OpError::unsupported(format!("output dtype {other}"))),
    };
    crate::scratch::recycle(TensorData::I32(v));
    Ok(t)
}

/// The canonical saturating requantization step: round half to even, add the zero
/// point, clamp to `[lo, hi]`. NaN maps to the zero point (clamped).
fn saturate(v: f64, zp: i32, lo: i64, hi: i64) -> i32 {
    let r = if v.is_nan() { 0.0 } else { v.round_ties_even() };
    // Clamp before converting so that the conversion is exact; ±2⁴⁰ is far outside
    // every quantized range, so clamping there changes no saturated result.
    let r = r.clamp(-1.0e12, 1.0e12) as i64;
    (r + i64::from(zp)).clamp(lo, hi) as i32
}

/// Maps a flat element index of a tensor of shape `[outer, len, inner]` (around the
/// quantization axis) to the index of its scale / zero point.
#[derive(Debug, Clone, Copy)]
enum ParamLayout {
    /// One value for the whole tensor.
    Tensor,
    /// One value per index along the axis.
    Axis { len: usize, inner: usize },
    /// One value per block of `block` indices along the axis.
    Blocked {
        len: usize,
        inner: usize,
        block: usize,
        nblocks: usize,
    },
}

/// A quantization's zero points (input 2, absent = 0) and how they map onto `x`.
fn zero_points(
    z: Option<&Tensor>,
    x: &[usize],
    axis: i64,
    block: i64,
) -> Result<(Vec<i32>, ParamLayout), OpError> {
    match z {
        Some(z) => Ok((
            qints_of(z).ok_or(OpError::DType {
                index: 2,
                dtype: z.dtype(),
            })?,
            ParamLayout::new(x, z.shape(), axis, block)?,
        )),
        None => Ok((vec![0], ParamLayout::Tensor)),
    }
}

impl ParamLayout {
    fn new(x: &[usize], p: &[usize], axis: i64, block: i64) -> Result<ParamLayout, OpError> {
        let pn: usize = p.iter().product();
        if pn == 1 && p.len() <= 1 {
            return Ok(ParamLayout::Tensor);
        }
        let ax = norm_axis(axis, x.len())?;
        let len = x[ax];
        let inner: usize = x[ax + 1..].iter().product();
        if block <= 0 {
            if p.len() != 1 || p[0] != len {
                return Err(OpError::shape(format!(
                    "scale/zero point of shape {p:?} is neither a scalar nor a vector of \
                     length {len} (axis {ax} of input shape {x:?})"
                )));
            }
            return Ok(ParamLayout::Axis { len, inner });
        }
        let block = block as usize;
        let nblocks = len.div_ceil(block);
        let ok = p.len() == x.len()
            && p.iter()
                .zip(x)
                .enumerate()
                .all(|(i, (&pd, &xd))| if i == ax { pd == nblocks } else { pd == xd });
        if !ok {
            return Err(OpError::shape(format!(
                "blocked scale/zero point shape {p:?} does not match input shape {x:?} \
                 with block size {block} on axis {ax}"
            )));
        }
        Ok(ParamLayout::Blocked {
            len,
            inner,
            block,
            nblocks,
        })
    }

    #[inline]
    fn index(&self, i: usize) -> usize {
        match *self {
            ParamLayout::Tensor => 0,
            ParamLayout::Axis { len, inner } => (i / inner.max(1)) % len.max(1),
            ParamLayout::Blocked {
                len,
                inner,
                block,
                nblocks,
            } => {
                let inner = inner.max(1);
                let o = i / (inner * len.max(1));
                let a = (i / inner) % len.max(1);
                let r = i % inner;
                (o * nblocks + a / block) * inner + r
            }
        }
    }
}

/// Reads the optional attribute `output_dtype` (an ONNX dtype code; 0 = unset).
fn output_dtype_attr(n: &NodeInfo<'_>) -> Result<Option<DType>, OpError> {
    match n.attrs.int("output_dtype", 0)? {
        0 => Ok(None),
        code => match i32::try_from(code).ok().and_then(DType::from_onnx_code) {
            Some(d) => Ok(Some(d)),
            None => Err(OpError::unsupported(format!("output_dtype code {code}"))),
        },
    }
}

// ---------------------------------------------------------------------------------
// QuantizeLinear

/// `QuantizeLinear`: `y = saturate(round_half_even(x / scale) + zero_point)`, the
/// division done in the `precision` dtype, or else in the scale's dtype.
#[derive(Debug)]
pub struct QuantizeLinear {
    axis: i64,
    block: i64,
    out: Option<DType>,
    precision: Option<DType>,
    /// For float8 outputs: out-of-range values become the largest finite value
    /// (default) rather than infinity or NaN.
    saturate: bool,
}

fn build_quantize(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let block = n.attrs.int("block_size", 0)?;
    if block < 0 {
        return Err(OpError::bad_attr("block_size", "must not be negative"));
    }
    let precision = match n.attrs.int("precision", 0)? {
        0 => None,
        1 => Some(DType::F32),
        10 => Some(DType::F16),
        16 => Some(DType::BF16),
        p => return Err(OpError::unsupported(format!("precision {p}"))),
    };
    let out = output_dtype_attr(n)?;
    if let Some(d) = out {
        if qtarget(d).is_none() {
            return Err(OpError::unsupported(format!("quantizing to {d}")));
        }
    }
    Ok(Box::new(QuantizeLinear {
        axis: n.attrs.int("axis", 1)?,
        block,
        out,
        precision,
        saturate: n.attrs.int("saturate", 1)? != 0,
    }))
}

impl QuantizeLinear {
    fn out_dtype(&self, zp: Option<DType>) -> Result<DType, OpError> {
        let dt = match (zp, self.out) {
            (Some(z), Some(o)) if z != o => {
                return Err(OpError::DTypeMismatch {
                    expected: o,
                    actual: z,
                })
            }
            (Some(z), _) => z,
            (None, Some(o)) => o,
            (None, None) => DType::U8,
        };
        if qtarget(dt).is_none() {
            return Err(OpError::unsupported(format!("quantizing to {dt}")));
        }
        Ok(dt)
    }
}

impl Op for QuantizeLinear {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 3)?;
        let x = infer_input(inputs, 0)?;
        let s = infer_input(inputs, 1)?;
        if !matches!(
            x.ty.dtype,
            DType::F32 | DType::F16 | DType::BF16 | DType::I32
        ) {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        if !matches!(s.ty.dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(OpError::DType {
                index: 1,
                dtype: s.ty.dtype,
            });
        }
        ParamLayout::new(&x.ty.shape, &s.ty.shape, self.axis, self.block)?;
        let zp = opt_infer_input(inputs, 2);
        if let Some(z) = zp {
            ParamLayout::new(&x.ty.shape, &z.ty.shape, self.axis, self.block)?;
        }
        one(self.out_dtype(zp.map(|z| z.ty.dtype))?, x.ty.shape.clone())
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        super::simd::with_fma(
            #[inline(always)]
            || {
                let x = input(inputs, 0)?;
                let s = input(inputs, 1)?;
                let zp = opt_input(inputs, 2);
                let dt = self.out_dtype(zp.map(|z| z.dtype()))?;
                let target = qtarget(dt).ok_or_else(|| OpError::unsupported("output dtype"))?;
                let pdt = self.precision.unwrap_or(s.dtype());
                if let (Some(xs), DType::F32, Some(sv), Some(z), Some(_)) = (
                    x.as_slice::<f32>(),
                    pdt,
                    floats_of(s).filter(|v| v.len() == 1 && s.rank() <= 1),
                    tensor_zero_point(zp),
                    qrange(dt),
                ) {
                    // One scale and zero point, all in f32: rounding to f32 is the
                    // identity, so this is the loop below without the lookups.
                    return Ok(vec![quantize_f32(xs, sv[0], z, dt, x.shape().to_vec())?]);
                }
                // Both operands are first rounded to the precision dtype (exact when they
                // already are of it or narrower), then divided with one rounding.
                let xs: Vec<f32> = match x.data() {
                    TensorData::I32(v) => v.iter().map(|&e| e as f32).collect(),
                    _ => floats_of(x).ok_or(OpError::DType {
                        index: 0,
                        dtype: x.dtype(),
                    })?,
                };
                let xs: Vec<f32> = xs.into_iter().map(|v| round_to(pdt, v)).collect();
                let ss: Vec<f32> = floats_of(s)
                    .ok_or(OpError::DType {
                        index: 1,
                        dtype: s.dtype(),
                    })?
                    .into_iter()
                    .map(|v| round_to(pdt, v))
                    .collect();
                let sl = ParamLayout::new(x.shape(), s.shape(), self.axis, self.block)?;
                let (lo, hi) = match target {
                    QTarget::Int(lo, hi) => (lo, hi),
                    QTarget::Float(m) => {
                        // y = convert(q + zero point): the sum in f32 (exact for the
                        // usual zero point 0, which turns −0 into +0), then rounded
                        // to the format as `Cast` does.
                        let zs = minifloat_zero_points(zp, x.shape(), self.axis, self.block)?;
                        let out: Vec<u8> = xs
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| {
                                let mut q = round_to(pdt, v / ss[sl.index(i)]);
                                if let Some((zs, zl)) = &zs {
                                    q += zs[zl.index(i)];
                                }
                                m.encode(Num::from_f64(f64::from(q)), self.saturate)
                            })
                            .collect();
                        return Ok(vec![minifloat_tensor(m, x.shape().to_vec(), out)?]);
                    }
                };
                let (zs, zl) = zero_points(zp, x.shape(), self.axis, self.block)?;
                let out: Vec<i32> = xs
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let q = round_to(pdt, v / ss[sl.index(i)]);
                        saturate(f64::from(q), zs[zl.index(i)], lo, hi)
                    })
                    .collect();
                Ok(vec![qint_tensor(dt, x.shape().to_vec(), out)?])
            },
        )
    }
}

// ---------------------------------------------------------------------------------
// DequantizeLinear

/// `DequantizeLinear`: `y = f32(x − zero_point) · scale`.
#[derive(Debug)]
pub struct DequantizeLinear {
    axis: i64,
    block: i64,
    out: Option<DType>,
}

fn build_dequantize(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let block = n.attrs.int("block_size", 0)?;
    if block < 0 {
        return Err(OpError::bad_attr("block_size", "must not be negative"));
    }
    let out = output_dtype_attr(n)?;
    if let Some(d) = out {
        if !matches!(d, DType::F32 | DType::F16 | DType::BF16) {
            return Err(OpError::unsupported(format!("dequantizing to {d}")));
        }
    }
    Ok(Box::new(DequantizeLinear {
        axis: n.attrs.int("axis", 1)?,
        block,
        out,
    }))
}

impl Op for DequantizeLinear {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 3)?;
        let x = infer_input(inputs, 0)?;
        let s = infer_input(inputs, 1)?;
        if qtarget(x.ty.dtype).is_none() && x.ty.dtype != DType::I32 {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        if !matches!(
            s.ty.dtype,
            DType::F32 | DType::F16 | DType::BF16 | DType::F8E8M0
        ) {
            return Err(OpError::DType {
                index: 1,
                dtype: s.ty.dtype,
            });
        }
        if self.out.is_none() && s.ty.dtype == DType::F8E8M0 {
            return Err(OpError::bad_attr(
                "output_dtype",
                "is required with a float8e8m0 scale",
            ));
        }
        ParamLayout::new(&x.ty.shape, &s.ty.shape, self.axis, self.block)?;
        if let Some(z) = opt_infer_input(inputs, 2) {
            if z.ty.dtype != x.ty.dtype {
                return Err(OpError::DTypeMismatch {
                    expected: x.ty.dtype,
                    actual: z.ty.dtype,
                });
            }
            ParamLayout::new(&x.ty.shape, &z.ty.shape, self.axis, self.block)?;
        }
        one(self.out.unwrap_or(s.ty.dtype), x.ty.shape.clone())
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        super::simd::with_fma(
            #[inline(always)]
            || {
                let x = input(inputs, 0)?;
                let s = input(inputs, 1)?;
                let out_dt = self.out.unwrap_or(s.dtype());
                if let (DType::F32, Some(sv), Some(z)) = (
                    out_dt,
                    s.as_slice::<f32>()
                        .filter(|v| v.len() == 1 && s.rank() <= 1),
                    tensor_zero_point(opt_input(inputs, 2)),
                ) {
                    // One f32 scale and zero point: the loop below without the lookups.
                    // `e − z` of two 8-bit values is exact in i32 and converts to f32
                    // exactly, as the general loop's i64 difference does.
                    let sv = sv[0];
                    let y: Option<Vec<f32>> = match x.data() {
                        TensorData::U8(v) => {
                            Some(map_into(v, |e| canon((i32::from(e) - z) as f32 * sv)))
                        }
                        TensorData::I8(v) => {
                            Some(map_into(v, |e| canon((i32::from(e) - z) as f32 * sv)))
                        }
                        _ => None,
                    };
                    if let Some(y) = y {
                        return Ok(vec![Tensor::from_vec(x.shape().to_vec(), y)?]);
                    }
                }
                let ss = floats_of(s).ok_or(OpError::DType {
                    index: 1,
                    dtype: s.dtype(),
                })?;
                let sl = ParamLayout::new(x.shape(), s.shape(), self.axis, self.block)?;
                if let Some(xs) = minifloats_of(x) {
                    // The 8- and 4-bit floats: (x − zero point) in f32 (x itself when
                    // the zero point is 0 or absent), times the scale in f32.
                    let zs = minifloat_zero_points(
                        opt_input(inputs, 2),
                        x.shape(),
                        self.axis,
                        self.block,
                    )?;
                    let out: Vec<f32> = xs
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| {
                            let d = match &zs {
                                Some((zs, zl)) => v - zs[zl.index(i)],
                                None => v,
                            };
                            canon(d * ss[sl.index(i)])
                        })
                        .collect();
                    return Ok(vec![float_tensor(out_dt, x.shape().to_vec(), out)?]);
                }
                let xs = qints_of(x).ok_or(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })?;
                let (zs, zl) = zero_points(opt_input(inputs, 2), x.shape(), self.axis, self.block)?;
                let out: Vec<f32> = xs
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let d = i64::from(v) - i64::from(zs[zl.index(i)]);
                        canon(d as f32 * ss[sl.index(i)])
                    })
                    .collect();
                Ok(vec![float_tensor(
                    self.out.unwrap_or(s.dtype()),
                    x.shape().to_vec(),
                    out,
                )?])
            },
        )
    }
    /// A NaN scale gives the canonical NaN (a difference of integers is a number).
    fn nans_canonical(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------
// DynamicQuantizeLinear

/// `DynamicQuantizeLinear`: u8 quantization with scale and zero point computed from
/// the data range (which always includes 0).
#[derive(Debug)]
pub struct DynamicQuantizeLinear;

impl Op for DynamicQuantizeLinear {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 1, 1)?;
        let x = infer_input(inputs, 0)?;
        check_dtype(0, x.ty.dtype, &[DType::F32])?;
        Ok(vec![
            TypeInfo::new(DType::U8, x.ty.shape.clone()),
            TypeInfo::new(DType::F32, vec![]),
            TypeInfo::new(DType::U8, vec![]),
        ])
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let xs = x.as_slice::<f32>().ok_or(OpError::DType {
            index: 0,
            dtype: x.dtype(),
        })?;
        let (scale, zp) = dynamic_params(xs);
        let y: Vec<u8> = xs
            .iter()
            .map(|&v| saturate(f64::from(v / scale), zp, 0, 255) as u8)
            .collect();
        Ok(vec![
            Tensor::from_vec(x.shape().to_vec(), y)?,
            Tensor::scalar(scale),
            Tensor::scalar(zp as u8),
        ])
    }
}

/// Scale and zero point of DynamicQuantizeLinear. The range starts at `[0, 0]` and
/// is widened by every element in order; NaN elements are skipped.
fn dynamic_params(xs: &[f32]) -> (f32, i32) {
    let (mut lo, mut hi) = (0.0f32, 0.0f32);
    for &v in xs {
        if v < lo {
            lo = v;
        }
        if v > hi {
            hi = v;
        }
    }
    let scale = if hi == lo { 1.0 } else { (hi - lo) / 255.0 };
    let zp = (0.0 - lo / scale).clamp(0.0, 255.0);
    let zp = if zp.is_nan() {
        0
    } else {
        zp.round_ties_even() as i32
    };
    (scale, zp)
}

// ---------------------------------------------------------------------------------
// Integer matrix products

/// Shapes of a batched matrix product with numpy broadcasting of the batch dims.
#[derive(Debug)]
struct MatShapes {
    m: usize,
    k: usize,
    n: usize,
    out: Vec<usize>,
    /// For each output batch, the batch index into A and into B.
    batches: Vec<(usize, usize)>,
    /// How many matrices A and B hold (their batch dimensions' product).
    a_batches: usize,
    b_batches: usize,
}

fn mat_shapes(a: &[usize], b: &[usize]) -> Result<MatShapes, OpError> {
    if a.is_empty() || b.is_empty() {
        return Err(OpError::shape("matrix product of a scalar"));
    }
    let (a2, a_vec) = if a.len() == 1 {
        (vec![1, a[0]], true)
    } else {
        (a.to_vec(), false)
    };
    let (b2, b_vec) = if b.len() == 1 {
        (vec![b[0], 1], true)
    } else {
        (b.to_vec(), false)
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(OpError::shape(format!(
            "matrix product of shapes {a:?} and {b:?}: inner dimensions differ"
        )));
    }
    let ab = &a2[..a2.len() - 2];
    let bb = &b2[..b2.len() - 2];
    let batch = super::util::broadcast_shapes(ab, bb)?;
    let nb = numel(&batch)?;
    let ao = broadcast_index(ab, &batch);
    let bo = broadcast_index(bb, &batch);
    let mut out = batch.clone();
    if !a_vec {
        out.push(m);
    }
    if !b_vec {
        out.push(n);
    }
    numel(&out)?;
    Ok(MatShapes {
        m,
        k,
        n,
        out,
        batches: (0..nb).map(|i| (ao[i], bo[i])).collect(),
        a_batches: numel(ab)?,
        b_batches: numel(bb)?,
    })
}

/// For each index of `out` (row-major), the index into `inp` that broadcasts to it.
fn broadcast_index(inp: &[usize], out: &[usize]) -> Vec<usize> {
    super::util::broadcast_offsets(inp, out)
}

/// A zero point (or scale) of a matrix operand: per tensor, per row of A / column of
/// B (`per == M` or `N` values, shared by all batches), or per batch and row/column.
fn mat_param_index(count: usize, per: usize, batch: usize) -> Result<MatParam, OpError> {
    if count == 1 {
        Ok(MatParam::Tensor)
    } else if count == per {
        Ok(MatParam::Line)
    } else if count == per * batch {
        Ok(MatParam::BatchLine)
    } else {
        Err(OpError::shape(format!(
            "quantization parameter has {count} values; expected 1, {per} or {}",
            per * batch
        )))
    }
}

#[derive(Debug, Clone, Copy)]
enum MatParam {
    Tensor,
    Line,
    BatchLine,
}

impl MatParam {
    fn at(self, batch: usize, line: usize, per: usize) -> usize {
        match self {
            MatParam::Tensor => 0,
            MatParam::Line => line,
            MatParam::BatchLine => batch * per + line,
        }
    }

    /// How far apart the values of consecutive lines are.
    fn step(self) -> usize {
        match self {
            MatParam::Tensor => 0,
            MatParam::Line | MatParam::BatchLine => 1,
        }
    }
}

/// Widens a u8/i8 matrix operand to `i16` with its zero point subtracted.
fn centered(
    t: &Tensor,
    index: usize,
    zp: Option<&Tensor>,
    per: usize,
    batches: usize,
    line_of: impl Fn(usize) -> (usize, usize),
) -> Result<Vec<i16>, OpError> {
    if !matches!(t.dtype(), DType::U8 | DType::I8) {
        return Err(OpError::DType {
            index,
            dtype: t.dtype(),
        });
    }
    let (z, layout) = match zp {
        Some(z) => {
            if z.dtype() != t.dtype() {
                return Err(OpError::DTypeMismatch {
                    expected: t.dtype(),
                    actual: z.dtype(),
                });
            }
            let zv = ints_of(z).unwrap_or_default();
            let lay = mat_param_index(zv.len(), per, batches)?;
            (zv, lay)
        }
        None => (vec![0], MatParam::Tensor),
    };
    if let (MatParam::Tensor, Some(&z0)) = (layout, z.first()) {
        // One zero point for the whole tensor: no per-element line lookup.
        return Ok(match t.data() {
            TensorData::U8(v) => v.iter().map(|&x| (i32::from(x) - z0) as i16).collect(),
            TensorData::I8(v) => v.iter().map(|&x| (i32::from(x) - z0) as i16).collect(),
            _ => {
                return Err(OpError::DType {
                    index,
                    dtype: t.dtype(),
                })
            }
        });
    }
    let v = ints_of(t).ok_or(OpError::DType {
        index,
        dtype: t.dtype(),
    })?;
    Ok(v.iter()
        .enumerate()
        .map(|(i, &x)| {
            let (b, l) = line_of(i);
            (x - z[layout.at(b, l, per)]) as i16
        })
        .collect())
}

/// Centered A and B operands of an integer matrix product, and the shapes.
struct IntMatInputs {
    sh: MatShapes,
    a: Vec<i16>,
    b: Vec<i16>,
}

fn int_mat_inputs(
    a: &Tensor,
    a_zp: Option<&Tensor>,
    b: &Tensor,
    b_zp: Option<&Tensor>,
    b_index: usize,
) -> Result<IntMatInputs, OpError> {
    let sh = mat_shapes(a.shape(), b.shape())?;
    let (m, k, n) = (sh.m, sh.k, sh.n);
    // Row of A for element i: (batch, row); column of B: (batch, column).
    let (ba, bb) = (sh.a_batches, sh.b_batches);
    let ca = centered(a, 0, a_zp, m, ba, |i| {
        (i / (m * k).max(1), (i / k.max(1)) % m.max(1))
    })?;
    let cb = centered(b, b_index, b_zp, n, bb, |i| {
        (i / (k * n).max(1), i % n.max(1))
    })?;
    Ok(IntMatInputs { sh, a: ca, b: cb })
}

/// Runs the batched product; returns `i32` accumulators in output order.
fn int_matmul(inp: &IntMatInputs, ctx: &Ctx) -> Vec<i32> {
    let (m, k, n) = (inp.sh.m, inp.sh.k, inp.sh.n);
    let mut out = vec![0i32; inp.sh.batches.len() * m * n];
    for (bi, &(ia, ib)) in inp.sh.batches.iter().enumerate() {
        igemm::gemm(
            m,
            n,
            k,
            &inp.a[ia * m * k..(ia + 1) * m * k],
            &inp.b[ib * k * n..(ib + 1) * k * n],
            &mut out[bi * m * n..(bi + 1) * m * n],
            ctx,
        );
    }
    out
}

/// The operand as the quantized kernel reads it.
fn qdata(t: &Tensor, index: usize) -> Result<QData<'_>, OpError> {
    match t.data() {
        TensorData::U8(v) => Ok(QData::U8(v)),
        TensorData::I8(v) => Ok(QData::I8(v)),
        _ => Err(OpError::DType {
            index,
            dtype: t.dtype(),
        }),
    }
}

/// An operand's zero points as the quantized kernel takes them: one value, or one
/// per line of all `batches × per` lines.
fn line_zero_points(
    t: &Tensor,
    zp: Option<&Tensor>,
    per: usize,
    batches: usize,
) -> Result<Vec<i32>, OpError> {
    let Some(z) = zp else {
        return Ok(vec![0]);
    };
    if z.dtype() != t.dtype() {
        return Err(OpError::DTypeMismatch {
            expected: t.dtype(),
            actual: z.dtype(),
        });
    }
    let zv = ints_of(z).unwrap_or_default();
    Ok(match mat_param_index(zv.len(), per, batches)? {
        MatParam::Tensor => zv,
        MatParam::Line => (0..per * batches).map(|r| zv[r % per.max(1)]).collect(),
        MatParam::BatchLine => zv,
    })
}

/// A constant matrix operand `b` (`k×n`) prepared for [`qgemm`].
fn quant_b(b: &Tensor, b_zp: Option<&Tensor>, b_index: usize) -> Result<QuantB, OpError> {
    let &[k, n] = b.shape() else {
        return Err(OpError::shape("prepared operand must be a matrix"));
    };
    let zb = line_zero_points(b, b_zp, n, 1)?;
    QuantB::new(k, n, qdata(b, b_index)?, &zb)
}

/// [`Op::prepare`] of the integer matrix products: the right operand packed once when
/// it and its zero point are constants and it is a matrix (shared by every batch).
fn prepare_b(
    inputs: &[Option<InferInput<'_>>],
    b_index: usize,
    zp_index: usize,
) -> Option<Prepared> {
    let b = opt_infer_input(inputs, b_index)?.value?;
    if b.rank() != 2 {
        return None;
    }
    let zb = match opt_infer_input(inputs, zp_index) {
        Some(z) => Some(z.value?),
        None => None,
    };
    let q = quant_b(b, zb, b_index).ok()?;
    Some(Prepared(Box::new(q)))
}

/// The batched product through the fast kernel when `b` is a matrix: every batch of
/// `a` multiplies the same `b`, so all rows of `a` form one product. Returns the
/// shapes and the `i32` accumulators in output order, or `None` for the reference
/// mode and for shapes the general path takes.
fn fast_int_matmul(
    a: &Tensor,
    a_zp: Option<&Tensor>,
    b: &Tensor,
    b_zp: Option<&Tensor>,
    b_index: usize,
    prepared: Option<&QuantB>,
    ctx: &Ctx,
) -> Result<Option<(MatShapes, Vec<i32>)>, OpError> {
    if ctx.reference() || b.rank() != 2 {
        return Ok(None);
    }
    let sh = mat_shapes(a.shape(), b.shape())?;
    let (m, k, n) = (sh.m, sh.k, sh.n);
    let nb = sh.batches.len();
    let rows = nb * m;
    if rows.checked_mul(k) != Some(a.len()) {
        return Ok(None);
    }
    let qa = qdata(a, 0)?;
    let za = line_zero_points(a, a_zp, m, nb)?;
    let built;
    let qb = match prepared.filter(|p| p.dims() == (k, n)) {
        Some(p) => p,
        None => {
            built = quant_b(b, b_zp, b_index)?;
            &built
        }
    };
    // Every kernel writes each accumulator (`qgemm`'s tests start from stale ones).
    let mut out = crate::scratch::output(rows * n, 0i32);
    qgemm(ctx, rows, qa, &za, qb, &mut out)?;
    Ok(Some((sh, out)))
}

/// The accumulators of MatMulInteger / QLinearMatMul: the fast kernel when it takes
/// the shapes, else the general batched path. Both give the same bits.
#[allow(clippy::too_many_arguments)]
fn int_accumulators(
    a: &Tensor,
    a_zp: Option<&Tensor>,
    b: &Tensor,
    b_zp: Option<&Tensor>,
    b_index: usize,
    prepared: Option<&Prepared>,
    ctx: &Ctx,
) -> Result<(MatShapes, Vec<i32>), OpError> {
    let pre = prepared.and_then(|p| p.0.downcast_ref::<QuantB>());
    if let Some(r) = fast_int_matmul(a, a_zp, b, b_zp, b_index, pre, ctx)? {
        return Ok(r);
    }
    let inp = int_mat_inputs(a, a_zp, b, b_zp, b_index)?;
    let acc = int_matmul(&inp, ctx);
    Ok((inp.sh, acc))
}

fn matmul_cost(sh: &MatShapes) -> u64 {
    (sh.batches.len() as u64)
        .saturating_mul(sh.m as u64)
        .saturating_mul(sh.n as u64)
        .saturating_mul(sh.k.max(1) as u64)
}

/// `MatMulInteger`: exact `i32` product of zero-point-centered u8/i8 matrices.
#[derive(Debug)]
pub struct MatMulInteger;

impl Op for MatMulInteger {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 4)?;
        let a = infer_input(inputs, 0)?;
        let b = infer_input(inputs, 1)?;
        for (i, t) in [(0, a), (1, b)] {
            if !matches!(t.ty.dtype, DType::U8 | DType::I8) {
                return Err(OpError::DType {
                    index: i,
                    dtype: t.ty.dtype,
                });
            }
        }
        let sh = mat_shapes(&a.ty.shape, &b.ty.shape)?;
        one(DType::I32, sh.out)
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], _outputs: &[TypeInfo]) -> u64 {
        match (
            inputs.first().copied().flatten(),
            inputs.get(1).copied().flatten(),
        ) {
            (Some(a), Some(b)) => mat_shapes(&a.shape, &b.shape)
                .map(|s| matmul_cost(&s))
                .unwrap_or(1)
                .max(1),
            _ => 1,
        }
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        self.run_with(inputs, ctx, None)
    }

    fn prepare(&self, inputs: &[Option<InferInput<'_>>]) -> Option<Prepared> {
        prepare_b(inputs, 1, 3)
    }

    fn run_prepared(
        &self,
        inputs: &[Option<&Tensor>],
        ctx: &Ctx,
        prepared: &Prepared,
    ) -> Result<Vec<Tensor>, OpError> {
        self.run_with(inputs, ctx, Some(prepared))
    }
}

impl MatMulInteger {
    fn run_with(
        &self,
        inputs: &[Option<&Tensor>],
        ctx: &Ctx,
        prepared: Option<&Prepared>,
    ) -> Result<Vec<Tensor>, OpError> {
        let a = input(inputs, 0)?;
        let b = input(inputs, 1)?;
        let (a_zp, b_zp) = (opt_input(inputs, 2), opt_input(inputs, 3));
        let (sh, out) = int_accumulators(a, a_zp, b, b_zp, 1, prepared, ctx)?;
        Ok(vec![Tensor::from_vec(sh.out, out)?])
    }
}

/// A float quantization scale: values widened to f32 and the dtype they came in.
struct Scale {
    v: Vec<f32>,
    dt: DType,
}

fn scale_of(t: &Tensor, index: usize) -> Result<Scale, OpError> {
    Ok(Scale {
        v: floats_of(t).ok_or(OpError::DType {
            index,
            dtype: t.dtype(),
        })?,
        dt: t.dtype(),
    })
}

/// The real multiplier `(a_scale · b_scale) / y_scale`, each operation rounded to
/// the scales' dtype (f32, or f16/bf16 when the scales are).
fn multiplier(dt: DType, a: f32, b: f32, y: f32) -> f64 {
    f64::from(round_to(dt, round_to(dt, a * b) / y))
}

/// Output zero point and range of a requantizing operator.
fn out_params(zp: Option<&Tensor>, fallback: DType) -> Result<(DType, i32), OpError> {
    match zp {
        Some(z) => {
            let v = ints_of(z).ok_or(OpError::DType {
                index: 7,
                dtype: z.dtype(),
            })?;
            if v.len() != 1 {
                return Err(OpError::unsupported(
                    "per-axis output zero point (only per-tensor is defined)",
                ));
            }
            Ok((z.dtype(), v[0]))
        }
        None => Ok((fallback, 0)),
    }
}

/// `QLinearMatMul`: integer product, then requantized:
/// `y = saturate(round_half_even(f64(acc) · f64(M)) + y_zero_point)` with
/// `M = (a_scale · b_scale) / y_scale`.
#[derive(Debug)]
pub struct QLinearMatMul;

impl Op for QLinearMatMul {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 8, 8)?;
        let a = infer_input(inputs, 0)?;
        let b = infer_input(inputs, 3)?;
        for (i, t) in [(0, a), (3, b)] {
            if !matches!(t.ty.dtype, DType::U8 | DType::I8) {
                return Err(OpError::DType {
                    index: i,
                    dtype: t.ty.dtype,
                });
            }
        }
        for i in [1, 4, 6] {
            let s = infer_input(inputs, i)?;
            if !matches!(s.ty.dtype, DType::F32 | DType::F16 | DType::BF16) {
                return Err(OpError::DType {
                    index: i,
                    dtype: s.ty.dtype,
                });
            }
        }
        let sh = mat_shapes(&a.ty.shape, &b.ty.shape)?;
        let dt = match opt_infer_input(inputs, 7) {
            Some(z) => z.ty.dtype,
            None => a.ty.dtype,
        };
        if !matches!(dt, DType::U8 | DType::I8) {
            return Err(OpError::DType {
                index: 7,
                dtype: dt,
            });
        }
        one(dt, sh.out)
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], _outputs: &[TypeInfo]) -> u64 {
        match (
            inputs.first().copied().flatten(),
            inputs.get(3).copied().flatten(),
        ) {
            (Some(a), Some(b)) => mat_shapes(&a.shape, &b.shape)
                .map(|s| matmul_cost(&s))
                .unwrap_or(1)
                .max(1),
            _ => 1,
        }
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        self.run_with(inputs, ctx, None)
    }

    fn prepare(&self, inputs: &[Option<InferInput<'_>>]) -> Option<Prepared> {
        prepare_b(inputs, 3, 5)
    }

    fn run_prepared(
        &self,
        inputs: &[Option<&Tensor>],
        ctx: &Ctx,
        prepared: &Prepared,
    ) -> Result<Vec<Tensor>, OpError> {
        self.run_with(inputs, ctx, Some(prepared))
    }
}

impl QLinearMatMul {
    fn run_with(
        &self,
        inputs: &[Option<&Tensor>],
        ctx: &Ctx,
        prepared: Option<&Prepared>,
    ) -> Result<Vec<Tensor>, OpError> {
        let a = input(inputs, 0)?;
        let b = input(inputs, 3)?;
        let (a_zp, b_zp) = (opt_input(inputs, 2), opt_input(inputs, 5));
        let (sh, mut acc) = int_accumulators(a, a_zp, b, b_zp, 3, prepared, ctx)?;
        let sa = scale_of(input(inputs, 1)?, 1)?;
        let sb = scale_of(input(inputs, 4)?, 4)?;
        let sy = scale_of(input(inputs, 6)?, 6)?;
        if sy.v.len() != 1 {
            return Err(OpError::unsupported("per-axis y_scale"));
        }
        let (m, n) = (sh.m, sh.n);
        let nb = sh.batches.len();
        let la = mat_param_index(sa.v.len(), m, nb)?;
        let lb = mat_param_index(sb.v.len(), n, nb)?;
        let (dt, zp) = out_params(opt_input(inputs, 7), a.dtype())?;
        let (lo, hi) = qrange(dt).ok_or(OpError::DType {
            index: 7,
            dtype: dt,
        })?;
        // Scales multiply the product (the ONNX reference's `matmul(A, B) · (sa · sb
        // / sy)`, numpy-style): per batch, they follow the output's batches, where
        // zero points follow their operand's. The multipliers of a row depend on its
        // A scale and its batch's B scales only: computed once per change of those.
        // Each accumulator is replaced by its requantized value in place.
        let mut mults = vec![0f64; n];
        let mut last = None;
        for (ri, row) in acc.chunks_mut(n.max(1)).enumerate() {
            let bi = ri / m.max(1);
            let ai = la.at(bi, ri % m.max(1), m);
            let b_line = lb.at(bi, 0, n);
            if last != Some((ai, b_line)) {
                for (j, mu) in mults.iter_mut().enumerate() {
                    *mu = multiplier(sa.dt, sa.v[ai], sb.v[b_line + j * lb.step()], sy.v[0]);
                }
                last = Some((ai, b_line));
            }
            super::simd::with_fma(
                #[inline(always)]
                || requantize_row(row, &mults, zp, lo, hi),
            );
        }
        Ok(vec![super::simd::with_fma(
            #[inline(always)]
            || int_tensor(dt, sh.out, acc),
        )?])
    }
}

/// `c ← saturate(f64(c) · mult, zp, lo, hi)` for a row of accumulators, in a form
/// the compiler vectorizes (see [`saturate_fast`]).
#[inline(always)]
fn requantize_row(row: &mut [i32], mults: &[f64], zp: i32, lo: i64, hi: i64) {
    let (zp, lo, hi) = (f64::from(zp), lo as f64, hi as f64);
    for (c, &mu) in row.iter_mut().zip(mults) {
        *c = saturate_fast(f64::from(*c) * mu, zp, lo, hi);
    }
}

/// [`saturate`] without branches, for a zero point and bounds given as `f64` (all
/// small integers, exact). Equal to `saturate` for every `v`: when `|round(v)| ≤ 2⁵²`
/// adding the zero point is exact; beyond, both forms clamp to the same bound.
#[inline(always)]
fn saturate_fast(v: f64, zp: f64, lo: f64, hi: f64) -> i32 {
    let v = if v.is_nan() { 0.0 } else { v };
    // Round half to even by adding and subtracting 2⁵² with v's sign: for |v| < 2⁵²
    // the sum has unit spacing, so the default rounding mode rounds it exactly as
    // `round_ties_even` (without the library call that would keep this loop scalar);
    // larger |v| stay at least 2⁵² in magnitude with their sign and clamp alike.
    let c = 4_503_599_627_370_496.0f64.copysign(v);
    let r = (v + c) - c;
    int_f64_to_i32((r + zp).max(lo).min(hi))
}

/// An integral `f64` in `[−2³¹, 2³¹)` as `i32`, exactly: adding 1.5·2⁵² leaves the
/// integer in the low bits of the mantissa, in two's complement. Unlike `as i32`
/// (which must saturate and map NaN to 0) this vectorizes.
#[inline(always)]
fn int_f64_to_i32(x: f64) -> i32 {
    (x + 6_755_399_441_055_744.0).to_bits() as u32 as i32
}

/// The requantization of [`quantize_f32`] in f32: `saturate(f64(q), zp, lo, hi)` for
/// an f32 quotient `q` and small integer `zp`, `lo`, `hi` given as f32 (exact). Equal
/// to it for every `q`: rounding an f32 to an integer is exact in f32; while
/// `|round(q)| < 2²⁰` adding the zero point is exact too, and beyond, the sum
/// (rounded or not) lies past the same bound, so both clamp alike. The clamped value
/// is an integer of magnitude below 2²², which adding 1.5·2²³ places in the low bits
/// of the mantissa.
#[inline(always)]
fn saturate_f32(q: f32, zp: f32, lo: f32, hi: f32) -> i32 {
    let q = if q.is_nan() { 0.0 } else { q };
    let y = (q.round_ties_even() + zp).max(lo).min(hi);
    (y + 12_582_912.0).to_bits() as i32 - 0x4B40_0000
}

/// The zero point of a quantized tensor when it is one value for the whole tensor
/// (absent: 0), else `None`.
fn tensor_zero_point(zp: Option<&Tensor>) -> Option<i32> {
    match zp {
        None => Some(0),
        Some(z) if z.len() == 1 && z.rank() <= 1 => ints_of(z).map(|v| v[0]),
        Some(_) => None,
    }
}

/// QuantizeLinear of f32 by one f32 scale and zero point:
/// `saturate(f64(x / s), zp, lo, hi)` for every element, the reference's arithmetic
/// (the division in f32, then [`saturate`], here as [`saturate_f32`]) in a loop the
/// compiler vectorizes.
#[inline(always)]
fn quantize_f32(
    xs: &[f32],
    s: f32,
    zp: i32,
    dt: DType,
    shape: Vec<usize>,
) -> Result<Tensor, OpError> {
    let (lo, hi) = qrange(dt).ok_or_else(|| OpError::unsupported("output dtype"))?;
    // Zero points and bounds are 16-bit at most: exact in f32.
    let (z, l, h) = (zp as f32, lo as f32, hi as f32);
    let q = |v: f32| saturate_f32(v / s, z, l, h);
    Ok(match dt {
        DType::U8 => Tensor::from_vec(shape, map_into(xs, |v| q(v) as u8))?,
        DType::I8 => Tensor::from_vec(shape, map_into(xs, |v| q(v) as i8))?,
        DType::U16 => Tensor::from_vec(shape, map_into(xs, |v| q(v) as u16))?,
        DType::I16 => Tensor::from_vec(shape, map_into(xs, |v| q(v) as i16))?,
        other => return Err(OpError::unsupported(format!("quantizing to {other}"))),
    })
}

// ---------------------------------------------------------------------------------
// Integer convolution

/// Convolution attributes, resolved against shapes at run time.
#[derive(Debug, Clone)]
struct ConvParams {
    auto_pad: String,
    kernel: Option<Vec<i64>>,
    strides: Option<Vec<i64>>,
    dilations: Option<Vec<i64>>,
    pads: Option<Vec<i64>>,
    group: i64,
}

impl ConvParams {
    fn from_node(n: &NodeInfo<'_>) -> Result<ConvParams, OpError> {
        let a = n.attrs;
        let auto_pad = a.string("auto_pad", "NOTSET")?;
        if !matches!(
            auto_pad.as_str(),
            "NOTSET" | "SAME_UPPER" | "SAME_LOWER" | "VALID"
        ) {
            return Err(OpError::bad_attr(
                "auto_pad",
                format!("unknown value {auto_pad}"),
            ));
        }
        let group = a.int("group", 1)?;
        if group < 1 {
            return Err(OpError::bad_attr("group", "must be at least 1"));
        }
        Ok(ConvParams {
            auto_pad,
            kernel: a.ints("kernel_shape")?,
            strides: a.ints("strides")?,
            dilations: a.ints("dilations")?,
            pads: a.ints("pads")?,
            group,
        })
    }

    /// Resolves the geometry for input `x` `[N, C, D...]` and weights `w`
    /// `[M, C/group, K...]`.
    fn geometry(&self, x: &[usize], w: &[usize]) -> Result<ConvGeom, OpError> {
        if x.len() < 3 || w.len() != x.len() {
            return Err(OpError::shape(format!(
                "convolution input {x:?} and weights {w:?} must have the same rank ≥ 3"
            )));
        }
        let sp = x.len() - 2;
        let g = self.group as usize;
        let (n, c, m) = (x[0], x[1], w[0]);
        if c % g != 0 || m % g != 0 || w[1] * g != c {
            return Err(OpError::shape(format!(
                "group {g} does not fit input channels {c}, weight shape {w:?}"
            )));
        }
        let kern: Vec<usize> = w[2..].to_vec();
        if let Some(k) = &self.kernel {
            if k.len() != sp || k.iter().zip(&kern).any(|(&a, &b)| a as usize != b || a < 0) {
                return Err(OpError::bad_attr(
                    "kernel_shape",
                    format!("{k:?} does not match weights {w:?}"),
                ));
            }
        }
        let pos = |name: &str, v: &Option<Vec<i64>>| -> Result<Vec<usize>, OpError> {
            match v {
                None => Ok(vec![1; sp]),
                Some(v) if v.len() == sp && v.iter().all(|&s| s >= 1) => {
                    Ok(v.iter().map(|&s| s as usize).collect())
                }
                Some(v) => Err(OpError::bad_attr(
                    name,
                    format!("{v:?} is invalid for {sp} spatial dims"),
                )),
            }
        };
        let strides = pos("strides", &self.strides)?;
        let dil = pos("dilations", &self.dilations)?;
        let mut pb = vec![0usize; sp];
        let mut pe = vec![0usize; sp];
        let mut out = vec![0usize; sp];
        for i in 0..sp {
            let ext = dil[i] * (kern[i].max(1) - 1) + 1;
            let d = x[i + 2];
            match self.auto_pad.as_str() {
                "SAME_UPPER" | "SAME_LOWER" => {
                    let o = d.div_ceil(strides[i]);
                    let total = ((o.saturating_sub(1)) * strides[i] + ext).saturating_sub(d);
                    let (small, big) = (total / 2, total - total / 2);
                    if self.auto_pad == "SAME_UPPER" {
                        pb[i] = small;
                        pe[i] = big;
                    } else {
                        pb[i] = big;
                        pe[i] = small;
                    }
                }
                "VALID" => {}
                _ => {
                    if let Some(p) = &self.pads {
                        if p.len() != 2 * sp || p.iter().any(|&v| v < 0) {
                            return Err(OpError::bad_attr("pads", format!("{p:?} is invalid")));
                        }
                        pb[i] = p[i] as usize;
                        pe[i] = p[i + sp] as usize;
                    }
                }
            }
            let padded = d + pb[i] + pe[i];
            if kern[i] == 0 || padded < ext {
                return Err(OpError::shape(format!(
                    "kernel {kern:?} (dilations {dil:?}) does not fit padded input {x:?}"
                )));
            }
            out[i] = (padded - ext) / strides[i] + 1;
        }
        let mut out_shape = vec![n, m];
        out_shape.extend_from_slice(&out);
        numel(&out_shape)?;
        Ok(ConvGeom {
            n,
            c,
            m,
            g,
            inp: x[2..].to_vec(),
            kern,
            out,
            strides,
            dil,
            pad: pb,
            out_shape,
        })
    }
}

#[derive(Debug)]
struct ConvGeom {
    n: usize,
    c: usize,
    m: usize,
    g: usize,
    inp: Vec<usize>,
    kern: Vec<usize>,
    out: Vec<usize>,
    strides: Vec<usize>,
    dil: Vec<usize>,
    pad: Vec<usize>,
    out_shape: Vec<usize>,
}

impl ConvGeom {
    fn macs(&self) -> u64 {
        let k: u64 = self.kern.iter().map(|&v| v as u64).product();
        let o: u64 = self.out.iter().map(|&v| v as u64).product();
        (self.n as u64)
            .saturating_mul(self.m as u64)
            .saturating_mul(o)
            .saturating_mul(k)
            .saturating_mul((self.c / self.g) as u64)
    }
}

/// Exact integer convolution of centered operands by im2col and [`igemm::gemm`]:
/// padding reads as 0 (the zero point, once centered). Returns `[N, M, O...]` `i32`.
fn conv_int(geo: &ConvGeom, x: &[i16], w: &[i16], ctx: &Ctx) -> Vec<i32> {
    let sp = geo.inp.len();
    let cg = geo.c / geo.g;
    let mg = geo.m / geo.g;
    let ksz: usize = geo.kern.iter().product();
    let osz: usize = geo.out.iter().product();
    let isz: usize = geo.inp.iter().product();
    let kdim = cg * ksz;
    let ist = strides(&geo.inp);
    let kst = strides(&geo.kern);
    let ost = strides(&geo.out);
    let mut out = vec![0i32; geo.n * geo.m * osz];
    let mut col = vec![0i16; kdim * osz];
    let mut kidx = vec![0usize; sp];
    let mut oidx = vec![0usize; sp];
    for b in 0..geo.n {
        for g in 0..geo.g {
            // im2col: row (ci, kernel offset), column = output position.
            for ci in 0..cg {
                let chan = &x[(b * geo.c + g * cg + ci) * isz..(b * geo.c + g * cg + ci + 1) * isz];
                for kf in 0..ksz {
                    for (d, k) in kidx.iter_mut().enumerate() {
                        *k = (kf / kst[d]) % geo.kern[d];
                    }
                    let row = &mut col[(ci * ksz + kf) * osz..(ci * ksz + kf + 1) * osz];
                    for (of, slot) in row.iter_mut().enumerate() {
                        let mut off = 0usize;
                        let mut inside = true;
                        for d in 0..sp {
                            oidx[d] = (of / ost[d]) % geo.out[d];
                            let p = (oidx[d] * geo.strides[d] + kidx[d] * geo.dil[d]) as isize
                                - geo.pad[d] as isize;
                            if p < 0 || p as usize >= geo.inp[d] {
                                inside = false;
                                break;
                            }
                            off += p as usize * ist[d];
                        }
                        *slot = if inside { chan[off] } else { 0 };
                    }
                }
            }
            let wg = &w[g * mg * kdim..(g + 1) * mg * kdim];
            let o0 = (b * geo.m + g * mg) * osz;
            igemm::gemm(mg, osz, kdim, wg, &col, &mut out[o0..o0 + mg * osz], ctx);
        }
    }
    out
}

/// Centers a u8/i8 tensor by a per-tensor or per-channel (leading dim) zero point.
fn center_channels(
    t: &Tensor,
    index: usize,
    zp: Option<&Tensor>,
    channels: usize,
    per_channel_ok: bool,
) -> Result<Vec<i16>, OpError> {
    if !matches!(t.dtype(), DType::U8 | DType::I8) {
        return Err(OpError::DType {
            index,
            dtype: t.dtype(),
        });
    }
    let v = ints_of(t).unwrap_or_default();
    let z = match zp {
        Some(z) => {
            if z.dtype() != t.dtype() {
                return Err(OpError::DTypeMismatch {
                    expected: t.dtype(),
                    actual: z.dtype(),
                });
            }
            ints_of(z).unwrap_or_default()
        }
        None => vec![0],
    };
    let per = v.len() / channels.max(1);
    if z.len() == 1 {
        Ok(v.iter().map(|&x| (x - z[0]) as i16).collect())
    } else if per_channel_ok && z.len() == channels {
        Ok(v.iter()
            .enumerate()
            .map(|(i, &x)| (x - z[i / per.max(1)]) as i16)
            .collect())
    } else {
        Err(OpError::shape(format!(
            "zero point of input {index} has {} values; expected 1{}",
            z.len(),
            if per_channel_ok {
                format!(" or {channels}")
            } else {
                String::new()
            }
        )))
    }
}

fn conv_infer(
    p: &ConvParams,
    inputs: &[Option<InferInput<'_>>],
    wi: usize,
) -> Result<ConvGeom, OpError> {
    let x = infer_input(inputs, 0)?;
    let w = infer_input(inputs, wi)?;
    for (i, t) in [(0, x), (wi, w)] {
        if !matches!(t.ty.dtype, DType::U8 | DType::I8) {
            return Err(OpError::DType {
                index: i,
                dtype: t.ty.dtype,
            });
        }
    }
    p.geometry(&x.ty.shape, &w.ty.shape)
}

fn conv_cost(p: &ConvParams, inputs: &[Option<&TypeInfo>], wi: usize) -> u64 {
    match (
        inputs.first().copied().flatten(),
        inputs.get(wi).copied().flatten(),
    ) {
        (Some(x), Some(w)) => p
            .geometry(&x.shape, &w.shape)
            .map(|g| g.macs())
            .unwrap_or(1)
            .max(1),
        _ => 1,
    }
}

/// `ConvInteger`: exact `i32` convolution of zero-point-centered u8/i8 tensors.
#[derive(Debug)]
pub struct ConvInteger(ConvParams);

impl Op for ConvInteger {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 4)?;
        let geo = conv_infer(&self.0, inputs, 1)?;
        one(DType::I32, geo.out_shape)
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], _outputs: &[TypeInfo]) -> u64 {
        conv_cost(&self.0, inputs, 1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let w = input(inputs, 1)?;
        let geo = self.0.geometry(x.shape(), w.shape())?;
        let xc = center_channels(x, 0, opt_input(inputs, 2), 1, false)?;
        let wc = center_channels(w, 1, opt_input(inputs, 3), geo.m, true)?;
        let out = conv_int(&geo, &xc, &wc, ctx);
        Ok(vec![Tensor::from_vec(geo.out_shape.clone(), out)?])
    }
}

/// `QLinearConv`: integer convolution plus optional `i32` bias (wrapping), then
/// requantized like [`QLinearMatMul`] with a per-output-channel multiplier
/// `(x_scale · w_scale[c]) / y_scale`.
#[derive(Debug)]
pub struct QLinearConv(ConvParams);

impl Op for QLinearConv {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 8, 9)?;
        let geo = conv_infer(&self.0, inputs, 3)?;
        let x = infer_input(inputs, 0)?;
        let dt = match opt_infer_input(inputs, 7) {
            Some(z) => z.ty.dtype,
            None => x.ty.dtype,
        };
        if !matches!(dt, DType::U8 | DType::I8) {
            return Err(OpError::DType {
                index: 7,
                dtype: dt,
            });
        }
        if let Some(bias) = opt_infer_input(inputs, 8) {
            if bias.ty.dtype != DType::I32 || bias.ty.shape != [geo.m] {
                return Err(OpError::shape(format!(
                    "bias must be i32 of shape [{}], got {} {:?}",
                    geo.m, bias.ty.dtype, bias.ty.shape
                )));
            }
        }
        one(dt, geo.out_shape)
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], _outputs: &[TypeInfo]) -> u64 {
        conv_cost(&self.0, inputs, 3)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let w = input(inputs, 3)?;
        let geo = self.0.geometry(x.shape(), w.shape())?;
        let xc = center_channels(x, 0, opt_input(inputs, 2), 1, false)?;
        let wc = center_channels(w, 3, opt_input(inputs, 5), geo.m, true)?;
        let mut acc = conv_int(&geo, &xc, &wc, ctx);
        if let Some(bias) = opt_input(inputs, 8) {
            let bv = bias.as_slice::<i32>().ok_or(OpError::DType {
                index: 8,
                dtype: bias.dtype(),
            })?;
            if bv.len() != geo.m {
                return Err(OpError::shape("bias length differs from output channels"));
            }
            let osz = acc.len() / (geo.n * geo.m).max(1);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = a.wrapping_add(bv[(i / osz.max(1)) % geo.m]);
            }
        }
        let sx = scale_of(input(inputs, 1)?, 1)?;
        let sw = scale_of(input(inputs, 4)?, 4)?;
        let sy = scale_of(input(inputs, 6)?, 6)?;
        if sx.v.len() != 1 || sy.v.len() != 1 || (sw.v.len() != 1 && sw.v.len() != geo.m) {
            return Err(OpError::shape(
                "x_scale and y_scale must be scalars, w_scale a scalar or one per output channel",
            ));
        }
        let mults: Vec<f64> = (0..geo.m)
            .map(|c| {
                let ws = if sw.v.len() == 1 { sw.v[0] } else { sw.v[c] };
                multiplier(sx.dt, sx.v[0], ws, sy.v[0])
            })
            .collect();
        let (dt, zp) = out_params(opt_input(inputs, 7), x.dtype())?;
        let (lo, hi) = qrange(dt).ok_or(OpError::DType {
            index: 7,
            dtype: dt,
        })?;
        let osz = acc.len() / (geo.n * geo.m).max(1);
        let out: Vec<i32> = acc
            .iter()
            .enumerate()
            .map(|(i, &c)| saturate(f64::from(c) * mults[(i / osz.max(1)) % geo.m], zp, lo, hi))
            .collect();
        Ok(vec![int_tensor(dt, geo.out_shape.clone(), out)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    #[test]
    fn saturate_rounds_half_to_even_and_clamps() {
        assert_eq!(saturate(2.5, 0, 0, 255), 2);
        assert_eq!(saturate(3.5, 0, 0, 255), 4);
        assert_eq!(saturate(-2.5, 0, -128, 127), -2);
        assert_eq!(saturate(1e30, 10, 0, 255), 255);
        assert_eq!(saturate(-1e30, 10, -128, 127), -128);
        assert_eq!(saturate(f64::NAN, 10, 0, 255), 10);
        assert_eq!(saturate(f64::INFINITY, 0, -128, 127), 127);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn saturate_fast_equals_saturate(
            v in proptest::prop_oneof![
                proptest::prelude::any::<f64>(),
                -1e6f64..1e6,
                (-70_000i32..70_000).prop_map(|x| f64::from(x) + 0.5),
                proptest::prelude::Just(f64::INFINITY),
                proptest::prelude::Just(f64::NEG_INFINITY),
                proptest::prelude::Just(f64::NAN),
                proptest::prelude::Just(4503599627370497.0f64),
            ],
            zp in -128i32..=255,
            signed in proptest::prelude::any::<bool>(),
        ) {
            let (lo, hi) = if signed { (-128, 127) } else { (0, 255) };
            let zp = zp.clamp(lo as i32, hi as i32);
            proptest::prop_assert_eq!(
                saturate_fast(v, f64::from(zp), lo as f64, hi as f64),
                saturate(v, zp, lo, hi)
            );
        }

        #[test]
        fn saturate_f32_equals_saturate(
            q in proptest::prop_oneof![
                proptest::prelude::any::<f32>(),
                -1e6f32..1e6,
                (-70_000i32..70_000).prop_map(|x| x as f32 + 0.5),
                (-(1i32 << 21)..(1i32 << 21)).prop_map(|x| x as f32),
                proptest::prelude::Just(16_777_215.0f32),
                proptest::prelude::Just(-16_777_217.0f32),
                proptest::prelude::Just(1_048_575.5f32),
                proptest::prelude::Just(f32::INFINITY),
                proptest::prelude::Just(f32::NEG_INFINITY),
                proptest::prelude::Just(f32::NAN),
            ],
            zp in -32768i32..=65535,
            range in 0usize..4,
        ) {
            let (lo, hi) = [(-128i64, 127i64), (0, 255), (-32768, 32767), (0, 65535)][range];
            let zp = zp.clamp(lo as i32, hi as i32);
            proptest::prop_assert_eq!(
                saturate_f32(q, zp as f32, lo as f32, hi as f32),
                saturate(f64::from(q), zp, lo, hi)
            );
        }
    }

    fn quant_node(op: &str) -> Box<dyn Op> {
        let attrs = crate::attrs::Attrs::default();
        let info = NodeInfo {
            name: "q",
            op_type: op,
            domain: "",
            opset: 21,
            attrs: &attrs,
            num_inputs: 3,
            num_outputs: 1,
        };
        match op {
            "QuantizeLinear" => build_quantize(&info).unwrap(),
            _ => build_dequantize(&info).unwrap(),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// The per-tensor fast loops equal the general per-axis loop given the same
        /// scale and zero point on every channel.
        #[test]
        fn per_tensor_fast_paths_equal_the_general_loop(
            x in proptest::collection::vec(proptest::prop_oneof![
                4 => -300.0f32..300.0,
                1 => proptest::prelude::any::<f32>(),
                1 => proptest::prelude::Just(f32::NAN),
                1 => proptest::prelude::Just(f32::INFINITY),
            ], 6),
            scale in proptest::prop_oneof![0.001f32..4.0, proptest::prelude::Just(1e-30f32)],
            zp in 0u8..=255,
            signed in proptest::prelude::any::<bool>(),
        ) {
            let ctx = Ctx::new(crate::ctx::KernelMode::Fast, 1);
            let xt = Tensor::from_vec(vec![2, 3], x).unwrap();
            let z1 = if signed {
                Tensor::scalar(zp as i8)
            } else {
                Tensor::scalar(zp)
            };
            let z3 = if signed {
                Tensor::from_vec(vec![3], vec![zp as i8; 3]).unwrap()
            } else {
                Tensor::from_vec(vec![3], vec![zp; 3]).unwrap()
            };
            let (s1, s3) = (Tensor::scalar(scale), Tensor::from_vec(vec![3], vec![scale; 3]).unwrap());
            let q = quant_node("QuantizeLinear");
            let fast = q.run(&[Some(&xt), Some(&s1), Some(&z1)], &ctx).unwrap();
            let general = q.run(&[Some(&xt), Some(&s3), Some(&z3)], &ctx).unwrap();
            proptest::prop_assert_eq!(&fast, &general);
            let d = quant_node("DequantizeLinear");
            let fast = d.run(&[Some(&fast[0]), Some(&s1), Some(&z1)], &ctx).unwrap();
            let general = d.run(&[Some(&general[0]), Some(&s3), Some(&z3)], &ctx).unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                t.as_slice::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
            };
            proptest::prop_assert_eq!(bits(&fast[0]), bits(&general[0]));
        }
    }

    #[test]
    fn dynamic_params_match_onnx_example() {
        // From the ONNX operator documentation example.
        let x = [0.0f32, 2.0, -3.0, -2.5, 1.34, 0.5];
        let (s, z) = dynamic_params(&x);
        assert_eq!(s, 5.0f32 / 255.0);
        assert_eq!(z, 153);
    }

    /// Direct 2-D convolution of centered values, summed in wrapping i32.
    #[allow(clippy::too_many_arguments)]
    fn naive_conv(
        x: &[i16],
        xs: [usize; 4],
        w: &[i16],
        ws: [usize; 4],
        g: usize,
        st: [usize; 2],
        dl: [usize; 2],
        pad: [usize; 2],
        os: [usize; 2],
    ) -> Vec<i32> {
        let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
        let (m, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
        let mg = m / g;
        let mut out = vec![0i32; n * m * os[0] * os[1]];
        for b in 0..n {
            for oc in 0..m {
                let grp = oc / mg;
                for oy in 0..os[0] {
                    for ox in 0..os[1] {
                        let mut acc = 0i32;
                        for ci in 0..cg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * st[0] + ky * dl[0]) as isize - pad[0] as isize;
                                    let ix = (ox * st[1] + kx * dl[1]) as isize - pad[1] as isize;
                                    if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd {
                                        continue;
                                    }
                                    let xv = x[((b * c + grp * cg + ci) * h + iy as usize) * wd
                                        + ix as usize];
                                    let wv = w[((oc * cg + ci) * kh + ky) * kw + kx];
                                    acc = acc.wrapping_add(i32::from(xv) * i32::from(wv));
                                }
                            }
                        }
                        out[((b * m + oc) * os[0] + oy) * os[1] + ox] = acc;
                    }
                }
            }
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn conv_int_equals_direct_convolution(
            n in 1usize..3, g in 1usize..3, cg in 1usize..3, mg in 1usize..3,
            h in 1usize..7, wd in 1usize..7, kh in 1usize..4, kw in 1usize..4,
            st in (1usize..3, 1usize..3), dl in (1usize..3, 1usize..3),
            pad in (0usize..3, 0usize..3), threads in 1usize..5, seed in 0u64..1000,
        ) {
            let (c, m) = (g * cg, g * mg);
            let p = ConvParams {
                auto_pad: "NOTSET".into(),
                kernel: None,
                strides: Some(vec![st.0 as i64, st.1 as i64]),
                dilations: Some(vec![dl.0 as i64, dl.1 as i64]),
                pads: Some(vec![pad.0 as i64, pad.1 as i64, pad.0 as i64, pad.1 as i64]),
                group: g as i64,
            };
            let Ok(geo) = p.geometry(&[n, c, h, wd], &[m, cg, kh, kw]) else {
                // Kernel larger than the padded input: refused, nothing to compare.
                return Ok(());
            };
            let mut r = seed;
            let mut next = || {
                r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((r >> 33) % 511) as i16 - 255
            };
            let x: Vec<i16> = (0..n * c * h * wd).map(|_| next()).collect();
            let w: Vec<i16> = (0..m * cg * kh * kw).map(|_| next()).collect();
            let want = naive_conv(
                &x, [n, c, h, wd], &w, [m, cg, kh, kw], g,
                [st.0, st.1], [dl.0, dl.1], [pad.0, pad.1], [geo.out[0], geo.out[1]],
            );
            for mode in [crate::ctx::KernelMode::Fast, crate::ctx::KernelMode::Reference] {
                let ctx = Ctx::new(mode, threads);
                proptest::prop_assert_eq!(&conv_int(&geo, &x, &w, &ctx), &want);
            }
        }
    }

    #[test]
    fn blocked_layout_indexes_blocks() {
        let l = ParamLayout::new(&[2, 5], &[2, 3], 1, 2).unwrap();
        let idx: Vec<usize> = (0..10).map(|i| l.index(i)).collect();
        assert_eq!(idx, vec![0, 0, 1, 1, 2, 3, 3, 4, 4, 5]);
    }

    /// A tensor of u8 or i8 values (`signed`) of `shape`, drawn from `s`.
    fn q_tensor(shape: &[usize], signed: bool, s: &mut u64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<u8> = (0..n)
            .map(|_| {
                *s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (*s >> 56) as u8
            })
            .collect();
        if signed {
            Tensor::from_vec(shape.to_vec(), v.into_iter().map(|x| x as i8).collect()).unwrap()
        } else {
            Tensor::from_vec(shape.to_vec(), v).unwrap()
        }
    }

    use crate::ops::testing::strides as strides_of;

    /// A quantization parameter's shape for `form`: one value (0), one per line (1:
    /// `per` values) or one per batch and line (2: `batches × per`).
    fn param_shape(form: u8, batches: usize, per: usize) -> Vec<usize> {
        match form {
            0 => vec![],
            1 => vec![per],
            _ => vec![batches, per],
        }
    }

    /// The value of a parameter of `form` for batch `b` and line `l`.
    fn param_at<T: Copy>(v: &[T], form: u8, b: usize, l: usize, per: usize) -> T {
        match form {
            0 => v[0],
            1 => v[l],
            _ => v[b * per + l],
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
        /// `MatMulInteger` and `QLinearMatMul` over u8/i8 operands of rank 1 to 4 with
        /// broadcast batch dimensions, zero points per tensor, per row of A / column
        /// of B, or per batch (of their operand) and line, and scales per tensor, per
        /// line or per batch (of the output) and line, against their definition
        /// written index by index: `acc = Σ_k (a − za)(b − zb)` in i32, and
        /// `y = saturate(f64(acc) · f64(M), zy)` with `M = (sa · sb) / sy` rounded in
        /// f32 at each step. Run as they come and prepared with a constant B, fast at
        /// 1-4 threads and reference.
        #[test]
        fn integer_products_equal_their_definition(
            ((ra, rb), (m, k, n), (ash, bsh)) in crate::ops::testing::matmul_shapes(6, 70),
            (a_signed, b_signed, y_signed) in (proptest::prelude::any::<bool>(), proptest::prelude::any::<bool>(), proptest::prelude::any::<bool>()),
            (za_form, zb_form, sa_form, sb_form) in (0u8..3, 0u8..3, 0u8..3, 0u8..3),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let (m, n) = (if ra == 1 { 1 } else { m }, if rb == 1 { 1 } else { n });
            let (out_batch, pairs) = crate::ops::testing::matmul_batches(&ash, &bsh);
            let batches = |sh: &[usize]| sh[..sh.len().saturating_sub(2)].iter().product::<usize>();
            let (na, nb_, nout) = (batches(&ash), batches(&bsh), pairs.len());
            let mut s = seed | 1;
            let a = q_tensor(&ash, a_signed, &mut s);
            let b = q_tensor(&bsh, b_signed, &mut s);
            let za = q_tensor(&param_shape(za_form, na, m), a_signed, &mut s);
            let zb = q_tensor(&param_shape(zb_form, nb_, n), b_signed, &mut s);
            let zy = q_tensor(&[], y_signed, &mut s);
            let mut scale = |shape: Vec<usize>| {
                let v: Vec<f32> = (0..shape.iter().product())
                    .map(|_| {
                        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        ((s >> 40) as f32 / (1u64 << 24) as f32) * 0.05 + 0.001
                    })
                    .collect();
                Tensor::from_vec(shape, v).unwrap()
            };
            let sa = scale(param_shape(sa_form, nout, m));
            let sb = scale(param_shape(sb_form, nout, n));
            let sy = scale(vec![]);
            let ints = |t: &Tensor| ints_of(t).unwrap();
            let (av, bv, zav, zbv) = (ints(&a), ints(&b), ints(&za), ints(&zb));
            let (sav, sbv, syv) = (floats_of(&sa).unwrap(), floats_of(&sb).unwrap(), floats_of(&sy).unwrap()[0]);
            let (zy0, (lo, hi)) = (ints(&zy)[0], qrange(zy.dtype()).unwrap());
            // The definition.
            let (mut acc_want, mut y_want) = (Vec::new(), Vec::new());
            for (bi, &(ia, ib)) in pairs.iter().enumerate() {
                for i in 0..m {
                    for j in 0..n {
                        let mut acc = 0i32;
                        for kk in 0..k {
                            let x = av[ia * m * k + i * k + kk] - param_at(&zav, za_form, ia, i, m);
                            let w = bv[ib * k * n + kk * n + j] - param_at(&zbv, zb_form, ib, j, n);
                            acc = acc.wrapping_add(x * w);
                        }
                        acc_want.push(acc);
                        let mult = (param_at(&sav, sa_form, bi, i, m) * param_at(&sbv, sb_form, bi, j, n)) / syv;
                        y_want.push(saturate(f64::from(acc) * f64::from(mult), zy0, lo, hi));
                    }
                }
            }
            let mut shape = out_batch.clone();
            if ra > 1 { shape.push(m); }
            if rb > 1 { shape.push(n); }
            let cases: [(&dyn Op, Vec<&Tensor>, usize); 2] = [
                (&MatMulInteger, vec![&a, &b, &za, &zb], 1),
                (&QLinearMatMul, vec![&a, &sa, &za, &b, &sb, &zb, &sy, &zy], 3),
            ];
            for (op, ins, b_index) in cases {
                let tys: Vec<TypeInfo> = ins.iter().map(|t| TypeInfo::of(t)).collect();
                // B and its zero point are constants while planning.
                let infer: Vec<Option<InferInput<'_>>> = tys
                    .iter()
                    .enumerate()
                    .map(|(i, ty)| Some(InferInput { ty, value: (i == b_index || i == b_index + 2).then_some(ins[i]) }))
                    .collect();
                let ty = op.infer(&infer).unwrap();
                let prepared = op.prepare(&infer);
                let inputs: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
                let mut contexts: Vec<Ctx> = (1..=4).map(|t| Ctx::new(crate::ctx::KernelMode::Fast, t)).collect();
                contexts.push(Ctx::new(crate::ctx::KernelMode::Reference, 1));
                for ctx in &contexts {
                    let mut outs = vec![op.run(&inputs, ctx).unwrap().remove(0)];
                    if let Some(p) = &prepared {
                        outs.push(op.run_prepared(&inputs, ctx, p).unwrap().remove(0));
                    }
                    for y in outs {
                        proptest::prop_assert_eq!(&TypeInfo::of(&y), &ty[0]);
                        proptest::prop_assert_eq!(y.shape(), &shape[..]);
                        let want = if b_index == 1 { &acc_want } else { &y_want };
                        proptest::prop_assert_eq!(&ints(&y), want, "{} threads {} reference {}", if b_index == 1 { "MatMulInteger" } else { "QLinearMatMul" }, ctx.threads(), ctx.reference());
                    }
                }
            }
        }
    }

    /// Runs `op` on `ins` at 2 threads and with the reference kernels; both must agree.
    fn run_both(op: &dyn Op, ins: &[&Tensor]) -> Result<Tensor, OpError> {
        let inputs: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
        let fast = op.run(&inputs, &Ctx::new(crate::ctx::KernelMode::Fast, 2))?;
        let reference = op.run(&inputs, &Ctx::new(crate::ctx::KernelMode::Reference, 1))?;
        assert_eq!(fast, reference);
        Ok(fast.into_iter().next().unwrap())
    }

    #[test]
    fn scales_per_batch_follow_the_output_batches() {
        // A vector B shared by three batches of A: a B scale per batch (one column
        // each) scales each output batch by its own value, as the ONNX reference's
        // `matmul(A, B) · (sa · sb / sy)` broadcasts it.
        let a = Tensor::from_vec(vec![3, 1, 2], vec![1u8, 1, 2, 2, 3, 3]).unwrap();
        let b = Tensor::from_vec(vec![2], vec![1u8, 1]).unwrap();
        let one = Tensor::scalar(1.0f32);
        let zero = Tensor::scalar(0u8);
        let sb = Tensor::from_vec(vec![3, 1], vec![1.0f32, 10.0, 100.0]).unwrap();
        let y = run_both(
            &QLinearMatMul,
            &[&a, &one, &zero, &b, &sb, &zero, &one, &zero],
        )
        .unwrap();
        assert_eq!(y.shape(), &[3, 1]);
        assert_eq!(y.as_slice::<u8>().unwrap(), &[2, 40, 255]);
    }

    #[test]
    fn zero_points_per_batch_take_an_empty_inner_dimension() {
        // K = 0: the operands are empty, but A still has 2 batches of 3 rows, so a
        // zero point per batch and row has 6 values; every sum is empty.
        let a = Tensor::from_vec(vec![2, 3, 0], Vec::<u8>::new()).unwrap();
        let b = Tensor::from_vec(vec![0, 4], Vec::<u8>::new()).unwrap();
        let za = Tensor::from_vec(vec![2, 3], vec![1u8, 2, 3, 4, 5, 6]).unwrap();
        let zb = Tensor::scalar(7u8);
        let y = run_both(&MatMulInteger, &[&a, &b, &za, &zb]).unwrap();
        assert_eq!(y.shape(), &[2, 3, 4]);
        assert!(y.as_slice::<i32>().unwrap().iter().all(|&v| v == 0));
        // A count that fits no layout is still refused.
        let za = Tensor::from_vec(vec![5], vec![1u8; 5]).unwrap();
        assert!(run_both(&MatMulInteger, &[&a, &b, &za, &zb]).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
        /// `ConvInteger` and `QLinearConv` over 1-D to 3-D windows with groups,
        /// strides, dilations and padding by `pads` (uneven), `SAME_UPPER`,
        /// `SAME_LOWER` or `VALID`, u8/i8 operands, a weight zero point and scale per
        /// tensor or per output channel and an i32 bias, against the definition
        /// written out from the shapes: `acc = Σ (x − zx)(w − zw)` over the group's
        /// channels and the kernel offsets whose input position
        /// `o·stride + k·dil − pad_begin` lies inside the input (padding reads as the
        /// zero point, a zero term), plus the bias, then `saturate(f64(acc) ·
        /// f64(M[c]), zy)` with `M[c] = (sx · sw[c]) / sy` in f32. Fast at 1-4 threads
        /// and reference.
        #[test]
        fn integer_convolutions_equal_their_definition(
            (n, g, cg, mg) in (1usize..3, 1usize..3, 1usize..3, 1usize..4),
            spatial in proptest::collection::vec((1usize..7, 1usize..4, 1usize..3, 1usize..3, 0usize..3, 0usize..3), 1..=3),
            pad_mode in 0u8..4,
            (x_signed, w_signed, y_signed) in (proptest::prelude::any::<bool>(), proptest::prelude::any::<bool>(), proptest::prelude::any::<bool>()),
            (per_channel_zp, per_channel_scale, bias) in (proptest::prelude::any::<bool>(), proptest::prelude::any::<bool>(), proptest::prelude::any::<bool>()),
            seed in proptest::prelude::any::<u64>(),
        ) {
            use crate::attrs::{Attr, Attrs};
            let r = spatial.len();
            let (c, m) = (g * cg, g * mg);
            let inp: Vec<usize> = spatial.iter().map(|t| t.0).collect();
            let kern: Vec<usize> = spatial.iter().map(|t| t.1).collect();
            let st: Vec<usize> = spatial.iter().map(|t| t.2).collect();
            let dil: Vec<usize> = spatial.iter().map(|t| t.3).collect();
            let ext: Vec<usize> = (0..r).map(|i| dil[i] * (kern[i] - 1) + 1).collect();
            // Padding and output size as ONNX's Conv defines them.
            let (pb, pe): (Vec<usize>, Vec<usize>) = match pad_mode {
                0 => spatial.iter().map(|t| (t.4, t.5)).unzip(),
                1 | 2 => (0..r)
                    .map(|i| {
                        let o = inp[i].div_ceil(st[i]);
                        let total = ((o - 1) * st[i] + ext[i]).saturating_sub(inp[i]);
                        if pad_mode == 1 { (total / 2, total - total / 2) } else { (total - total / 2, total / 2) }
                    })
                    .unzip(),
                _ => (vec![0; r], vec![0; r]),
            };
            let mut attrs = vec![
                ("group".to_string(), Attr::Int(g as i64)),
                ("strides".to_string(), Attr::Ints(st.iter().map(|&v| v as i64).collect())),
                ("dilations".to_string(), Attr::Ints(dil.iter().map(|&v| v as i64).collect())),
            ];
            match pad_mode {
                0 => attrs.push(("pads".to_string(), Attr::Ints(pb.iter().chain(&pe).map(|&v| v as i64).collect()))),
                1 => attrs.push(("auto_pad".to_string(), Attr::String(b"SAME_UPPER".to_vec()))),
                2 => attrs.push(("auto_pad".to_string(), Attr::String(b"SAME_LOWER".to_vec()))),
                _ => attrs.push(("auto_pad".to_string(), Attr::String(b"VALID".to_vec()))),
            }
            let attrs = Attrs(attrs.into_iter().collect());
            let info = |op: &'static str, inputs: usize| NodeInfo { name: "c", op_type: op, domain: "", opset: 10, attrs: &attrs, num_inputs: inputs, num_outputs: 1 };
            let conv_integer = ConvInteger(ConvParams::from_node(&info("ConvInteger", 4)).unwrap());
            let qlinear_conv = QLinearConv(ConvParams::from_node(&info("QLinearConv", 9)).unwrap());
            let mut s = seed | 1;
            let xs = [vec![n, c], inp.clone()].concat();
            let ws = [vec![m, cg], kern.clone()].concat();
            let x = q_tensor(&xs, x_signed, &mut s);
            let w = q_tensor(&ws, w_signed, &mut s);
            let zx = q_tensor(&[], x_signed, &mut s);
            let zw = q_tensor(&if per_channel_zp { vec![m] } else { vec![] }, w_signed, &mut s);
            let zy = q_tensor(&[], y_signed, &mut s);
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); s };
            let sx = Tensor::scalar(((next() >> 40) as f32 / (1u64 << 24) as f32) * 0.05 + 0.001);
            let sw_v: Vec<f32> = (0..if per_channel_scale { m } else { 1 }).map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32) * 0.05 + 0.001).collect();
            let sw = if per_channel_scale { Tensor::from_vec(vec![m], sw_v.clone()).unwrap() } else { Tensor::scalar(sw_v[0]) };
            let sy = Tensor::scalar(((next() >> 40) as f32 / (1u64 << 24) as f32) * 0.05 + 0.01);
            let bv: Vec<i32> = (0..m).map(|_| (next() >> 48) as i32 - 32768).collect();
            let b = Tensor::from_vec(vec![m], bv.clone()).unwrap();
            let padded_ok = (0..r).all(|i| inp[i] + pb[i] + pe[i] >= ext[i]);
            let conv_ins = [Some(&x), Some(&w), Some(&zx), Some(&zw)];
            let mut q_ins = vec![Some(&x), Some(&sx), Some(&zx), Some(&w), Some(&sw), Some(&zw), Some(&sy), Some(&zy)];
            if bias { q_ins.push(Some(&b)); }
            let contexts: Vec<Ctx> = (1..=4).map(|t| Ctx::new(crate::ctx::KernelMode::Fast, t)).chain([Ctx::new(crate::ctx::KernelMode::Reference, 1)]).collect();
            if !padded_ok {
                // The kernel does not fit the padded input: refused.
                for ctx in &contexts {
                    proptest::prop_assert!(conv_integer.run(&conv_ins, ctx).is_err());
                    proptest::prop_assert!(qlinear_conv.run(&q_ins, ctx).is_err());
                }
                return Ok(());
            }
            let out: Vec<usize> = (0..r).map(|i| (inp[i] + pb[i] + pe[i] - ext[i]) / st[i] + 1).collect();
            let (xv, wv, zxv, zwv, zyv) = (ints_of(&x).unwrap(), ints_of(&w).unwrap(), ints_of(&zx).unwrap()[0], ints_of(&zw).unwrap(), ints_of(&zy).unwrap()[0]);
            let (sxv, syv) = (floats_of(&sx).unwrap()[0], floats_of(&sy).unwrap()[0]);
            let (lo, hi) = qrange(zy.dtype()).unwrap();
            let (ist, kst, ost) = (strides_of(&inp), strides_of(&kern), strides_of(&out));
            let (plane_in, plane_k, plane_out) = (inp.iter().product::<usize>(), kern.iter().product::<usize>(), out.iter().product::<usize>());
            let (mut acc_want, mut y_want) = (Vec::new(), Vec::new());
            for ni in 0..n {
                for oc in 0..m {
                    let gi = oc / mg;
                    let zw_c = zwv[if per_channel_zp { oc } else { 0 }];
                    for op_ in 0..plane_out {
                        let mut acc = 0i32;
                        for ci in 0..cg {
                            for kp in 0..plane_k {
                                let mut at = Some(0usize);
                                for d in 0..r {
                                    let (o, k) = (op_ / ost[d] % out[d], kp / kst[d] % kern[d]);
                                    let p = (o * st[d] + k * dil[d]) as i64 - pb[d] as i64;
                                    at = match at {
                                        Some(a) if p >= 0 && (p as usize) < inp[d] => Some(a + p as usize * ist[d]),
                                        _ => None,
                                    };
                                }
                                if let Some(a) = at {
                                    let xq = xv[(ni * c + gi * cg + ci) * plane_in + a] - zxv;
                                    let wq = wv[(oc * cg + ci) * plane_k + kp] - zw_c;
                                    acc = acc.wrapping_add(xq * wq);
                                }
                            }
                        }
                        acc_want.push(acc);
                        let total = if bias { acc.wrapping_add(bv[oc]) } else { acc };
                        let mult = (sxv * sw_v[if per_channel_scale { oc } else { 0 }]) / syv;
                        y_want.push(saturate(f64::from(total) * f64::from(mult), zyv, lo, hi));
                    }
                }
            }
            let shape = [vec![n, m], out.clone()].concat();
            for ctx in &contexts {
                let how = format!("threads {} reference {}", ctx.threads(), ctx.reference());
                let y = conv_integer.run(&conv_ins, ctx).unwrap().remove(0);
                proptest::prop_assert_eq!(y.shape(), &shape[..], "{}", how);
                proptest::prop_assert_eq!(&ints_of(&y).unwrap(), &acc_want, "ConvInteger {}", how);
                let y = qlinear_conv.run(&q_ins, ctx).unwrap().remove(0);
                proptest::prop_assert_eq!(y.shape(), &shape[..], "{}", how);
                proptest::prop_assert_eq!(y.dtype(), zy.dtype());
                proptest::prop_assert_eq!(&ints_of(&y).unwrap(), &y_want, "QLinearConv {}", how);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// `QuantizeLinear` then `DequantizeLinear` on inputs of rank 1 to 4 with the
        /// scale and zero point per tensor, per axis (any axis, counted from either
        /// end) or blocked along it (opset 21), u8 or i8, against the definition
        /// written out from the shapes: element `i` takes the parameters of its
        /// coordinate on the axis (divided by the block size when blocked; the other
        /// coordinates too when blocked), `q = saturate(f32(x / s), zp)` and
        /// `y = f32(q − zp) · s`.
        #[test]
        fn quantize_layouts_equal_their_definition(
            shape in proptest::collection::vec(1usize..6, 1..5),
            axis_pick in 0usize..8,
            (layout, block) in (0u8..3, 1usize..4),
            signed in proptest::prelude::any::<bool>(),
            seed in proptest::prelude::any::<u64>(),
        ) {
            use crate::attrs::{Attr, Attrs};
            let r = shape.len();
            let ax = axis_pick % r;
            // Half the cases name the axis from the end.
            let axis_attr = if axis_pick >= r { ax as i64 - r as i64 } else { ax as i64 };
            let pshape: Vec<usize> = match layout {
                0 => vec![],
                1 => vec![shape[ax]],
                _ => shape.iter().enumerate().map(|(d, &v)| if d == ax { v.div_ceil(block) } else { v }).collect(),
            };
            let mut attrs = vec![("axis".to_string(), Attr::Int(axis_attr))];
            if layout == 2 {
                attrs.push(("block_size".to_string(), Attr::Int(block as i64)));
            }
            let attrs = Attrs(attrs.into_iter().collect());
            let node = |op: &'static str| NodeInfo { name: "q", op_type: op, domain: "", opset: 21, attrs: &attrs, num_inputs: 3, num_outputs: 1 };
            let (q, d) = (build_quantize(&node("QuantizeLinear")).unwrap(), build_dequantize(&node("DequantizeLinear")).unwrap());
            let mut s = seed | 1;
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); s };
            let n: usize = shape.iter().product();
            let xv: Vec<f32> = (0..n).map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32) * 40.0 - 20.0).collect();
            let np: usize = pshape.iter().product();
            let sv: Vec<f32> = (0..np).map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32) * 0.2 + 0.01).collect();
            let zv: Vec<i32> = (0..np).map(|_| if signed { (next() >> 56) as i8 as i32 } else { (next() >> 56) as u8 as i32 }).collect();
            let x = Tensor::from_vec(shape.clone(), xv.clone()).unwrap();
            let st = Tensor::from_vec(pshape.clone(), sv.clone()).unwrap();
            let zt = if signed {
                Tensor::from_vec(pshape.clone(), zv.iter().map(|&z| z as i8).collect()).unwrap()
            } else {
                Tensor::from_vec(pshape.clone(), zv.iter().map(|&z| z as u8).collect()).unwrap()
            };
            let (lo, hi) = if signed { (-128, 127) } else { (0, 255) };
            let xst = strides_of(&shape);
            let pst = strides_of(&pshape);
            let param = |i: usize| -> usize {
                match layout {
                    0 => 0,
                    1 => i / xst[ax] % shape[ax],
                    _ => (0..r).map(|dd| { let c = i / xst[dd] % shape[dd]; (if dd == ax { c / block } else { c }) * pst[dd] }).sum(),
                }
            };
            let q_want: Vec<i32> = (0..n).map(|i| saturate(f64::from(xv[i] / sv[param(i)]), zv[param(i)], lo, hi)).collect();
            let y_want: Vec<u32> = (0..n).map(|i| ((q_want[i] - zv[param(i)]) as f32 * sv[param(i)]).to_bits()).collect();
            for ctx in [Ctx::new(crate::ctx::KernelMode::Fast, 1), Ctx::new(crate::ctx::KernelMode::Fast, 3), Ctx::new(crate::ctx::KernelMode::Reference, 1)] {
                let qy = q.run(&[Some(&x), Some(&st), Some(&zt)], &ctx).unwrap().remove(0);
                proptest::prop_assert_eq!(qy.shape(), &shape[..]);
                proptest::prop_assert_eq!(qy.dtype(), zt.dtype());
                proptest::prop_assert_eq!(&ints_of(&qy).unwrap(), &q_want);
                let y = d.run(&[Some(&qy), Some(&st), Some(&zt)], &ctx).unwrap().remove(0);
                let got: Vec<u32> = y.as_slice::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
                proptest::prop_assert_eq!(&got, &y_want);
            }
        }
    }
}
