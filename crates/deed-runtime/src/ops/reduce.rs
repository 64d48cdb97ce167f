//! Reductions (`ReduceSum`, `ReduceMean`, … `ReduceLogSumExp`), `ArgMax`/`ArgMin` and
//! `CumSum`, `CumProd`.
//!
//! Canonical order: for every output element, the reduced elements are visited in
//! row-major order of the input (increasing flat index) and accumulated sequentially,
//! one rounding per step, from the identity of the reduction. See
//! `docs/canonical-semantics.md`.

use deed_types::{DType, Tensor, TensorData};

use super::math::{exp_f32, exp_f64, ln_f32, ln_f64};
use super::util::{
    check_count, infer_input, input, norm_axis, opt_infer_input, opt_input, to_i64s,
};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

pub(crate) fn register(r: &mut Registry) {
    r.add("ReduceSum", |n| build_reduce(n, Kind::Sum));
    r.add("ReduceMean", |n| build_reduce(n, Kind::Mean));
    r.add("ReduceMax", |n| build_reduce(n, Kind::Max));
    r.add("ReduceMin", |n| build_reduce(n, Kind::Min));
    r.add("ReduceProd", |n| build_reduce(n, Kind::Prod));
    r.add("ReduceL1", |n| build_reduce(n, Kind::L1));
    r.add("ReduceL2", |n| build_reduce(n, Kind::L2));
    r.add("ReduceLogSum", |n| build_reduce(n, Kind::LogSum));
    r.add("ReduceLogSumExp", |n| build_reduce(n, Kind::LogSumExp));
    r.add("ReduceSumSquare", |n| build_reduce(n, Kind::SumSquare));
    r.add("ArgMax", |n| build_arg(n, true));
    r.add("ArgMin", |n| build_arg(n, false));
    r.add("CumSum", |n| build_cumsum(n, false));
    r.add("CumProd", |n| build_cumsum(n, true));
}

/// Which reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Σx
    Sum,
    /// Σx / n
    Mean,
    /// max
    Max,
    /// min
    Min,
    /// Πx
    Prod,
    /// Σ|x|
    L1,
    /// √Σx²
    L2,
    /// ln Σx
    LogSum,
    /// m + ln Σexp(x − m), m = max
    LogSumExp,
    /// Σx²
    SumSquare,
}

/// A reduction node.
#[derive(Debug)]
pub struct Reduce {
    kind: Kind,
    axes_attr: Option<Vec<i64>>,
    axes_from_input: bool,
    keepdims: bool,
    noop_with_empty_axes: bool,
}

fn build_reduce(n: &NodeInfo<'_>, kind: Kind) -> Result<Box<dyn Op>, OpError> {
    // ReduceSum took axes as an input from opset 13, the others from opset 18.
    let input_axes_from = if kind == Kind::Sum { 13 } else { 18 };
    let axes_from_input = n.opset >= input_axes_from;
    Ok(Box::new(Reduce {
        kind,
        axes_attr: if axes_from_input {
            None
        } else {
            n.attrs.ints("axes")?
        },
        axes_from_input,
        keepdims: n.attrs.int("keepdims", 1)? != 0,
        noop_with_empty_axes: n.attrs.int("noop_with_empty_axes", 0)? != 0,
    }))
}

impl Reduce {
    /// Resolved, sorted, de-duplicated axes; `None` means "no-op".
    fn axes(
        &self,
        rank: usize,
        axes_input: Option<&Tensor>,
    ) -> Result<Option<Vec<usize>>, OpError> {
        let raw: Vec<i64> = if self.axes_from_input {
            match axes_input {
                Some(t) => to_i64s(t)?,
                None => Vec::new(),
            }
        } else {
            self.axes_attr.clone().unwrap_or_default()
        };
        if raw.is_empty() {
            if self.noop_with_empty_axes {
                return Ok(None);
            }
            return Ok(Some((0..rank).collect()));
        }
        let mut v = raw
            .iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<Result<Vec<_>, _>>()?;
        v.sort_unstable();
        v.dedup();
        Ok(Some(v))
    }

    fn out_shape(&self, shape: &[usize], axes: &Option<Vec<usize>>) -> Vec<usize> {
        match axes {
            None => shape.to_vec(),
            Some(axes) => shape
                .iter()
                .enumerate()
                .filter_map(|(i, &d)| {
                    if axes.contains(&i) {
                        self.keepdims.then_some(1)
                    } else {
                        Some(d)
                    }
                })
                .collect(),
        }
    }
}

impl Op for Reduce {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 1, 2)?;
        let x = infer_input(inputs, 0)?;
        let axes_in = match opt_infer_input(inputs, 1) {
            Some(a) => Some(super::util::need_value(a, 1)?),
            None => None,
        };
        let dt = x.ty.dtype;
        let ok = matches!(dt, DType::F32 | DType::F64 | DType::F16)
            || (matches!(
                dt,
                DType::I32 | DType::I64 | DType::U32 | DType::U64 | DType::I8 | DType::U8
            ) && matches!(
                self.kind,
                Kind::Sum
                    | Kind::Max
                    | Kind::Min
                    | Kind::Prod
                    | Kind::L1
                    | Kind::SumSquare
                    | Kind::Mean
            ))
            || (matches!(dt, DType::Bool | DType::BF16)
                && matches!(self.kind, Kind::Max | Kind::Min));
        if !ok {
            return Err(OpError::DType {
                index: 0,
                dtype: dt,
            });
        }
        let axes = self.axes(x.ty.shape.len(), axes_in)?;
        Ok(vec![TypeInfo::new(dt, self.out_shape(&x.ty.shape, &axes))])
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let i: u64 = inputs
            .first()
            .copied()
            .flatten()
            .map(|t| t.numel())
            .unwrap_or(0);
        let w = if self.kind == Kind::LogSumExp { 8 } else { 1 };
        i.saturating_mul(w)
            .saturating_add(outputs[0].numel())
            .max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let axes = self.axes(x.rank(), opt_input(inputs, 1))?;
        let out_shape = self.out_shape(x.shape(), &axes);
        let axes = match axes {
            Some(axes) => axes,
            // `noop_with_empty_axes`: nothing is reduced, but the operator's
            // elementwise part still applies (as in the ONNX reference, which reduces
            // over no axes): each element is the one term of its own group, so
            // ReduceSumSquare squares, ReduceL1 takes the absolute value, and so on.
            // The others return the input as it is.
            None if matches!(
                self.kind,
                Kind::Sum | Kind::Mean | Kind::Max | Kind::Min | Kind::Prod
            ) =>
            {
                return Ok(vec![x.clone()])
            }
            None => Vec::new(),
        };
        let groups = Groups::new(x.shape(), &axes);
        let data = match x.data() {
            TensorData::F32(v) => TensorData::F32(reduce_f32(self.kind, v, &groups)),
            TensorData::F64(v) => TensorData::F64(reduce_f64(self.kind, v, &groups)),
            TensorData::F16(v) => {
                let w: Vec<f32> = v.iter().map(|h| h.to_f32()).collect();
                TensorData::F16(
                    reduce_f32(self.kind, &w, &groups)
                        .into_iter()
                        .map(half::f16::from_f32)
                        .collect(),
                )
            }
            // Max and Min only (refused otherwise while planning): exact, so the f32
            // result is a bf16 value.
            TensorData::BF16(v) if matches!(self.kind, Kind::Max | Kind::Min) => {
                let w: Vec<f32> = v.iter().map(|h| h.to_f32()).collect();
                TensorData::BF16(
                    reduce_f32(self.kind, &w, &groups)
                        .into_iter()
                        .map(half::bf16::from_f32)
                        .collect(),
                )
            }
            TensorData::I64(v) => TensorData::I64(reduce_int(
                self.kind,
                v,
                &groups,
                |a, b| a.wrapping_add(b),
                |a, b| a.wrapping_mul(b),
                |a| a.wrapping_abs(),
                0,
                1,
                i64::MIN,
                i64::MAX,
                |s, n| if n == 0 { 0 } else { s / n as i64 },
            )),
            TensorData::I32(v) => TensorData::I32(reduce_int(
                self.kind,
                v,
                &groups,
                |a, b| a.wrapping_add(b),
                |a, b| a.wrapping_mul(b),
                |a| a.wrapping_abs(),
                0,
                1,
                i32::MIN,
                i32::MAX,
                |s, n| if n == 0 { 0 } else { s / n as i32 },
            )),
            TensorData::U64(v) => TensorData::U64(reduce_int(
                self.kind,
                v,
                &groups,
                |a, b| a.wrapping_add(b),
                |a, b| a.wrapping_mul(b),
                |a| a,
                0,
                1,
                u64::MIN,
                u64::MAX,
                |s, n| if n == 0 { 0 } else { s / n as u64 },
            )),
            TensorData::U32(v) => TensorData::U32(reduce_int(
                self.kind,
                v,
                &groups,
                |a, b| a.wrapping_add(b),
                |a, b| a.wrapping_mul(b),
                |a| a,
                0,
                1,
                u32::MIN,
                u32::MAX,
                |s, n| if n == 0 { 0 } else { s / n as u32 },
            )),
            TensorData::I8(v) => TensorData::I8(reduce_int(
                self.kind,
                v,
                &groups,
                |a, b| a.wrapping_add(b),
                |a, b| a.wrapping_mul(b),
                |a| a.wrapping_abs(),
                0,
                1,
                i8::MIN,
                i8::MAX,
                |s, n| {
                    if n == 0 {
                        0
                    } else {
                        (s as i64 / n as i64) as i8
                    }
                },
            )),
            TensorData::U8(v) => TensorData::U8(reduce_int(
                self.kind,
                v,
                &groups,
                |a, b| a.wrapping_add(b),
                |a, b| a.wrapping_mul(b),
                |a| a,
                0,
                1,
                u8::MIN,
                u8::MAX,
                |s, n| {
                    if n == 0 {
                        0
                    } else {
                        (s as u64 / n as u64) as u8
                    }
                },
            )),
            // Max is "any", Min is "all" (false < true); infer admits no other kind.
            TensorData::Bool(v) => TensorData::Bool(reduce_int(
                self.kind,
                v,
                &groups,
                |a, b| a | b,
                |a, b| a & b,
                |a| a,
                false,
                true,
                false,
                true,
                |s, _| s,
            )),
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        };
        Ok(vec![Tensor::new(out_shape, data)?])
    }
}

/// For each output element, the flat input indices it reduces, in increasing order.
struct Groups {
    /// Flat index of the first reduced element of each output.
    bases: Vec<usize>,
    /// Offsets (added to a base) of every reduced element, increasing.
    offsets: Vec<usize>,
}

impl Groups {
    fn new(shape: &[usize], axes: &[usize]) -> Groups {
        let strides = super::util::strides(shape);
        let kept: Vec<usize> = (0..shape.len()).filter(|i| !axes.contains(i)).collect();
        let index_set = |dims: &[usize]| -> Vec<usize> {
            let sizes: Vec<usize> = dims.iter().map(|&d| shape[d]).collect();
            let n: usize = sizes.iter().product();
            let mut out = Vec::with_capacity(n);
            let mut idx = vec![0usize; dims.len()];
            for _ in 0..n {
                out.push(idx.iter().zip(dims).map(|(&i, &d)| i * strides[d]).sum());
                for k in (0..dims.len()).rev() {
                    idx[k] += 1;
                    if idx[k] < sizes[k] {
                        break;
                    }
                    idx[k] = 0;
                }
            }
            out
        };
        Groups {
            bases: index_set(&kept),
            offsets: index_set(axes),
        }
    }
}

macro_rules! float_reduce {
    ($name:ident, $t:ty, $exp:expr, $ln:expr) => {
        fn $name(kind: Kind, v: &[$t], g: &Groups) -> Vec<$t> {
            let n = g.offsets.len();
            g.bases
                .iter()
                .map(|&b| {
                    let it = g.offsets.iter().map(|&o| v[b + o]);
                    match kind {
                        Kind::Sum => it.fold(0.0, |a, x| a + x),
                        Kind::Mean => it.fold(0.0, |a, x| a + x) / n as $t,
                        Kind::Max => it.fold(<$t>::NEG_INFINITY, |a, x| {
                            if x.is_nan() || a.is_nan() {
                                <$t>::NAN
                            } else if x > a {
                                x
                            } else {
                                a
                            }
                        }),
                        Kind::Min => it.fold(<$t>::INFINITY, |a, x| {
                            if x.is_nan() || a.is_nan() {
                                <$t>::NAN
                            } else if x < a {
                                x
                            } else {
                                a
                            }
                        }),
                        Kind::Prod => it.fold(1.0, |a, x| a * x),
                        Kind::L1 => it.fold(0.0, |a, x| a + x.abs()),
                        Kind::L2 => it.fold(0.0, |a: $t, x: $t| x.mul_add(x, a)).sqrt(),
                        Kind::SumSquare => it.fold(0.0, |a: $t, x: $t| x.mul_add(x, a)),
                        Kind::LogSum => $ln(it.fold(0.0, |a, x| a + x)),
                        Kind::LogSumExp => {
                            let m = g.offsets.iter().map(|&o| v[b + o]).fold(
                                <$t>::NEG_INFINITY,
                                |a, x| {
                                    if x.is_nan() || a.is_nan() {
                                        <$t>::NAN
                                    } else if x > a {
                                        x
                                    } else {
                                        a
                                    }
                                },
                            );
                            if m.is_infinite() || m.is_nan() {
                                // All −∞ → −∞; any +∞ → +∞; NaN → NaN.
                                if m == <$t>::NEG_INFINITY {
                                    m
                                } else {
                                    m + 0.0 * m.signum()
                                }
                            } else {
                                let s = it.fold(0.0, |a, x| a + $exp(x - m));
                                m + $ln(s)
                            }
                        }
                    }
                })
                .collect()
        }
    };
}
float_reduce!(reduce_f32, f32, exp_f32, ln_f32);
float_reduce!(reduce_f64, f64, exp_f64, ln_f64);

#[allow(clippy::too_many_arguments)]
fn reduce_int<T: Copy + PartialOrd>(
    kind: Kind,
    v: &[T],
    g: &Groups,
    add: impl Fn(T, T) -> T,
    mul: impl Fn(T, T) -> T,
    abs: impl Fn(T) -> T,
    zero: T,
    one: T,
    min: T,
    max: T,
    div: impl Fn(T, usize) -> T,
) -> Vec<T> {
    let n = g.offsets.len();
    g.bases
        .iter()
        .map(|&b| {
            let it = g.offsets.iter().map(|&o| v[b + o]);
            match kind {
                Kind::Sum => it.fold(zero, &add),
                Kind::Mean => div(it.fold(zero, &add), n),
                Kind::Max => it.fold(min, |a, x| if x > a { x } else { a }),
                Kind::Min => it.fold(max, |a, x| if x < a { x } else { a }),
                Kind::Prod => it.fold(one, &mul),
                Kind::L1 => it.fold(zero, |a, x| add(a, abs(x))),
                Kind::SumSquare => it.fold(zero, |a, x| add(a, mul(x, x))),
                // Rejected for integers in `infer`.
                Kind::L2 | Kind::LogSum | Kind::LogSumExp => zero,
            }
        })
        .collect()
}

/// `ArgMax` / `ArgMin`.
#[derive(Debug)]
pub struct Arg {
    max: bool,
    axis: i64,
    keepdims: bool,
    last: bool,
}

fn build_arg(n: &NodeInfo<'_>, max: bool) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Arg {
        max,
        axis: n.attrs.int("axis", 0)?,
        keepdims: n.attrs.int("keepdims", 1)? != 0,
        last: n.attrs.int("select_last_index", 0)? != 0,
    }))
}

fn arg_index<T: Copy>(
    it: impl Iterator<Item = T>,
    better: impl Fn(T, T) -> bool,
    is_nan: impl Fn(T) -> bool,
    last: bool,
) -> i64 {
    let mut best: Option<(usize, T)> = None;
    for (i, x) in it.enumerate() {
        best = match best {
            None => Some((i, x)),
            // The first NaN wins (numpy's rule); after it nothing replaces it.
            Some((bi, b)) if is_nan(b) => Some((bi, b)),
            Some(_) if is_nan(x) => Some((i, x)),
            Some((bi, b)) => {
                // With `last`, a tie moves the answer to the later index.
                if better(x, b) || (last && !better(b, x)) {
                    Some((i, x))
                } else {
                    Some((bi, b))
                }
            }
        };
    }
    best.map(|(i, _)| i as i64).unwrap_or(0)
}

impl Op for Arg {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let axis = norm_axis(self.axis, x.ty.shape.len())?;
        if x.ty.shape.get(axis) == Some(&0) {
            return Err(OpError::shape("ArgMax/ArgMin over an empty axis"));
        }
        if matches!(x.ty.dtype, DType::Str | DType::Bool) {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        let mut s = x.ty.shape.clone();
        if self.keepdims {
            s[axis] = 1;
        } else {
            s.remove(axis);
        }
        Ok(vec![TypeInfo::new(DType::I64, s)])
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let ty = self
            .infer(&[Some(InferInput {
                ty: &TypeInfo::of(x),
                value: None,
            })])?
            .remove(0);
        let _ = ctx;
        let axis = norm_axis(self.axis, x.rank())?;
        let g = Groups::new(x.shape(), &[axis]);
        macro_rules! go {
            ($v:expr, $nan:expr) => {{
                let v = $v;
                g.bases
                    .iter()
                    .map(|&b| {
                        let it = g.offsets.iter().map(|&o| v[b + o]);
                        if self.max {
                            arg_index(it, |a, b| a > b, $nan, self.last)
                        } else {
                            arg_index(it, |a, b| a < b, $nan, self.last)
                        }
                    })
                    .collect::<Vec<i64>>()
            }};
        }
        let out = match x.data() {
            TensorData::F32(v) => go!(v, |x: f32| x.is_nan()),
            TensorData::F64(v) => go!(v, |x: f64| x.is_nan()),
            TensorData::F16(v) => go!(v, |x: half::f16| x.is_nan()),
            TensorData::I64(v) => go!(v, |_| false),
            TensorData::I32(v) => go!(v, |_| false),
            TensorData::I16(v) => go!(v, |_| false),
            TensorData::I8(v) => go!(v, |_| false),
            TensorData::U8(v) => go!(v, |_| false),
            TensorData::U16(v) => go!(v, |_| false),
            TensorData::U32(v) => go!(v, |_| false),
            TensorData::U64(v) => go!(v, |_| false),
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        };
        Ok(vec![Tensor::from_vec(ty.shape, out)?])
    }
}

/// `CumSum` and `CumProd`: sequential running sums (products) along one axis.
#[derive(Debug)]
pub struct CumSum {
    exclusive: bool,
    reverse: bool,
    /// `CumProd`: products from 1 instead of sums from 0.
    product: bool,
}

fn build_cumsum(n: &NodeInfo<'_>, product: bool) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(CumSum {
        exclusive: n.attrs.int("exclusive", 0)? != 0,
        reverse: n.attrs.int("reverse", 0)? != 0,
        product,
    }))
}

fn cumsum<T: Copy>(
    v: &[T],
    shape: &[usize],
    axis: usize,
    exclusive: bool,
    reverse: bool,
    zero: T,
    add: impl Fn(T, T) -> T,
) -> Vec<T> {
    let mut out = vec![zero; v.len()];
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    for o in 0..outer {
        for i in 0..inner {
            let mut acc = zero;
            for k in 0..len {
                let k = if reverse { len - 1 - k } else { k };
                let idx = (o * len + k) * inner + i;
                if exclusive {
                    out[idx] = acc;
                    acc = add(acc, v[idx]);
                } else {
                    acc = add(acc, v[idx]);
                    out[idx] = acc;
                }
            }
        }
    }
    out
}

impl Op for CumSum {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 2)?;
        let x = infer_input(inputs, 0)?;
        infer_input(inputs, 1)?;
        if !matches!(
            x.ty.dtype,
            DType::F32 | DType::F64 | DType::I32 | DType::I64 | DType::U32 | DType::U64
        ) {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        Ok(vec![x.ty.clone()])
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let a = to_i64s(input(inputs, 1)?)?;
        let axis = norm_axis(
            *a.first()
                .ok_or_else(|| OpError::value("the axis input is empty"))?,
            x.rank(),
        )?;
        let s = x.shape();
        let (e, r) = (self.exclusive, self.reverse);
        macro_rules! scan {
            ($v:expr, $zero:expr, $one:expr, $add:expr, $mul:expr) => {
                if self.product {
                    cumsum($v, s, axis, e, r, $one, $mul)
                } else {
                    cumsum($v, s, axis, e, r, $zero, $add)
                }
            };
        }
        let data = match x.data() {
            TensorData::F32(v) => TensorData::F32(scan!(v, 0.0, 1.0, |a, b| a + b, |a, b| a * b)),
            TensorData::F64(v) => TensorData::F64(scan!(v, 0.0, 1.0, |a, b| a + b, |a, b| a * b)),
            TensorData::I32(v) => {
                TensorData::I32(scan!(v, 0, 1, i32::wrapping_add, i32::wrapping_mul))
            }
            TensorData::I64(v) => {
                TensorData::I64(scan!(v, 0, 1, i64::wrapping_add, i64::wrapping_mul))
            }
            TensorData::U32(v) => {
                TensorData::U32(scan!(v, 0, 1, u32::wrapping_add, u32::wrapping_mul))
            }
            TensorData::U64(v) => {
                TensorData::U64(scan!(v, 0, 1, u64::wrapping_add, u64::wrapping_mul))
            }
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        };
        Ok(vec![Tensor::new(s.to_vec(), data)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reduction over the axes of its second input, without kept dimensions.
    fn over_input_axes(kind: Kind) -> Reduce {
        Reduce {
            kind,
            axes_attr: None,
            axes_from_input: true,
            keepdims: false,
            noop_with_empty_axes: false,
        }
    }

    fn run(op: &dyn Op, inputs: &[Option<&Tensor>]) -> Tensor {
        op.run(inputs, &Ctx::default()).unwrap().remove(0)
    }

    #[test]
    fn sum_is_sequential_in_index_order() {
        // 1e8 + 1 − 1e8 in f32: the order (not a tree) decides the result.
        let x = Tensor::from_vec(vec![3], vec![1e8f32, 1.0, -1e8]).unwrap();
        let r = Reduce {
            kind: Kind::Sum,
            axes_attr: None,
            axes_from_input: true,
            keepdims: false,
            noop_with_empty_axes: false,
        };
        assert_eq!(run(&r, &[Some(&x)]).as_slice::<f32>().unwrap(), &[0.0]);
    }

    #[test]
    fn bf16_max_and_min_only() {
        let bf = |v: &[f32]| {
            v.iter()
                .map(|&x| half::bf16::from_f32(x))
                .collect::<Vec<_>>()
        };
        let x = Tensor::from_vec(vec![2, 2], bf(&[1.5, -3.0, f32::NAN, 2.0])).unwrap();
        let axes = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        let op = over_input_axes;
        let max = run(&op(Kind::Max), &[Some(&x), Some(&axes)]);
        let max = max.as_slice::<half::bf16>().unwrap();
        assert_eq!(max[0].to_f32(), 1.5);
        assert!(max[1].is_nan());
        let min = run(&op(Kind::Min), &[Some(&x), Some(&axes)]);
        assert_eq!(min.as_slice::<half::bf16>().unwrap()[0].to_f32(), -3.0);
        // Every other reduction refuses bf16 while planning.
        let ty = TypeInfo::of(&x);
        let ax = TypeInfo::of(&axes);
        let ins = [
            Some(InferInput {
                ty: &ty,
                value: None,
            }),
            Some(InferInput {
                ty: &ax,
                value: Some(&axes),
            }),
        ];
        assert!(op(Kind::Max).infer(&ins).is_ok());
        assert!(matches!(
            op(Kind::Sum).infer(&ins),
            Err(OpError::DType { index: 0, .. })
        ));
    }

    #[test]
    fn bool_max_is_any_and_min_is_all() {
        let x = Tensor::from_vec(vec![2, 3], vec![true, false, false, true, true, true]).unwrap();
        let axes = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        let op = over_input_axes;
        let max = run(&op(Kind::Max), &[Some(&x), Some(&axes)]);
        assert_eq!(max.as_slice::<bool>().unwrap(), &[true, true]);
        let min = run(&op(Kind::Min), &[Some(&x), Some(&axes)]);
        assert_eq!(min.as_slice::<bool>().unwrap(), &[false, true]);
        let ty = TypeInfo::new(DType::Bool, vec![2, 3]);
        let input = [Some(InferInput {
            ty: &ty,
            value: None,
        })];
        assert!(op(Kind::Sum).infer(&input).is_err());
        assert!(op(Kind::Max).infer(&input).is_ok());
    }

    #[test]
    fn max_propagates_nan_and_axes_are_respected() {
        let x = Tensor::from_vec(vec![2, 2], vec![1.0f32, f32::NAN, 3.0, 4.0]).unwrap();
        let axes = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        let r = Reduce {
            kind: Kind::Max,
            axes_attr: None,
            axes_from_input: true,
            keepdims: true,
            noop_with_empty_axes: false,
        };
        let y = run(&r, &[Some(&x), Some(&axes)]);
        assert_eq!(y.shape(), &[2, 1]);
        let v = y.as_slice::<f32>().unwrap();
        assert!(v[0].is_nan());
        assert_eq!(v[1], 4.0);
    }

    #[test]
    fn argmax_ties_and_last_index() {
        let x = Tensor::from_vec(vec![4], vec![2i64, 5, 5, 1]).unwrap();
        let first = Arg {
            max: true,
            axis: 0,
            keepdims: false,
            last: false,
        };
        let last = Arg {
            max: true,
            axis: 0,
            keepdims: false,
            last: true,
        };
        assert_eq!(run(&first, &[Some(&x)]).as_slice::<i64>().unwrap(), &[1]);
        assert_eq!(run(&last, &[Some(&x)]).as_slice::<i64>().unwrap(), &[2]);
    }

    #[test]
    fn cumsum_exclusive_reverse() {
        let x = Tensor::from_vec(vec![4], vec![1i64, 2, 3, 4]).unwrap();
        let ax = Tensor::scalar(0i64);
        let c = CumSum {
            exclusive: true,
            reverse: true,
            product: false,
        };
        assert_eq!(
            run(&c, &[Some(&x), Some(&ax)]).as_slice::<i64>().unwrap(),
            &[9, 7, 4, 0]
        );
    }

    #[test]
    fn cumprod_runs_from_one_and_wraps() {
        let x = Tensor::from_vec(vec![2, 3], vec![1i32, 2, 3, 4, 5, 6]).unwrap();
        let ax = Tensor::scalar(1i64);
        let p = |exclusive, reverse| CumSum {
            exclusive,
            reverse,
            product: true,
        };
        let got = |op: CumSum| {
            run(&op, &[Some(&x), Some(&ax)])
                .as_slice::<i32>()
                .unwrap()
                .to_vec()
        };
        assert_eq!(got(p(false, false)), [1, 2, 6, 4, 20, 120]);
        assert_eq!(got(p(true, false)), [1, 1, 2, 1, 4, 20]);
        assert_eq!(got(p(false, true)), [6, 6, 3, 120, 30, 6]);
        let big = Tensor::from_vec(vec![3], vec![1 << 20, 1 << 20, 3]).unwrap();
        let ax0 = Tensor::scalar(0i64);
        let wrapped = run(&p(false, false), &[Some(&big), Some(&ax0)]);
        assert_eq!(wrapped.as_slice::<i32>().unwrap(), &[1 << 20, 0, 0]);
    }

    /// Kind `k` over `terms` (the reduced elements in row-major order of the reduced
    /// index) as `docs/canonical-semantics.md` defines it.
    fn definition(k: Kind, terms: &[f32]) -> f32 {
        let sum = |f: &dyn Fn(f32, f32) -> f32| terms.iter().fold(0.0f32, |a, &x| f(a, x));
        let max = || {
            terms.iter().fold(f32::NEG_INFINITY, |a, &x| {
                if a.is_nan() || x.is_nan() {
                    f32::NAN
                } else if x > a {
                    x
                } else {
                    a
                }
            })
        };
        match k {
            Kind::Sum => sum(&|a, x| a + x),
            Kind::Mean => sum(&|a, x| a + x) / terms.len() as f32,
            Kind::Max => max(),
            Kind::Min => terms.iter().fold(f32::INFINITY, |a, &x| {
                if a.is_nan() || x.is_nan() {
                    f32::NAN
                } else if x < a {
                    x
                } else {
                    a
                }
            }),
            Kind::Prod => terms.iter().fold(1.0f32, |a, &x| a * x),
            Kind::L1 => sum(&|a, x| a + x.abs()),
            Kind::L2 => sum(&|a, x| x.mul_add(x, a)).sqrt(),
            Kind::SumSquare => sum(&|a, x| x.mul_add(x, a)),
            Kind::LogSum => crate::ops::math::ln_f32(sum(&|a, x| a + x)),
            Kind::LogSumExp => {
                let m = max();
                if m.is_infinite() || m.is_nan() {
                    m
                } else {
                    m + crate::ops::math::ln_f32(sum(&|a, x| a + crate::ops::math::exp_f32(x - m)))
                }
            }
        }
    }

    const ALL: [Kind; 10] = [
        Kind::Sum,
        Kind::Mean,
        Kind::Max,
        Kind::Min,
        Kind::Prod,
        Kind::L1,
        Kind::L2,
        Kind::SumSquare,
        Kind::LogSum,
        Kind::LogSumExp,
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Every float reduction over any set of axes (given from either end, in any
        /// order, repeated; or none, with and without `noop_with_empty_axes`) of
        /// rank 1-4 inputs, empty dimensions included, with and without kept
        /// dimensions, against the definition computed from the shape alone: output
        /// element `o` folds, in row-major order of the reduced index, the input
        /// elements whose kept coordinates are `o`'s. With no axes and
        /// `noop_with_empty_axes`, each element is its own group, and Sum, Mean, Max,
        /// Min and Prod return the input as it is.
        #[test]
        fn reductions_equal_their_definition(
            shape in proptest::collection::vec(prop_oneof_dims(), 1..5),
            picks in proptest::collection::vec((0usize..4, proptest::prelude::any::<bool>()), 0..4),
            (keepdims, noop) in (proptest::prelude::any::<bool>(), proptest::prelude::any::<bool>()),
            vals in proptest::collection::vec(proptest::prop_oneof![
                6 => -4.0f32..4.0,
                1 => proptest::prelude::Just(f32::NAN),
                1 => proptest::prelude::Just(f32::INFINITY),
                1 => proptest::prelude::Just(f32::NEG_INFINITY),
                1 => proptest::prelude::Just(-0.0f32),
            ], 64),
        ) {
            let r = shape.len();
            let raw: Vec<i64> = picks.iter().map(|&(a, from_end)| {
                let a = (a % r) as i64;
                if from_end { a - r as i64 } else { a }
            }).collect();
            let mut axes: Vec<usize> = raw.iter().map(|&a| if a < 0 { (a + r as i64) as usize } else { a as usize }).collect();
            axes.sort_unstable();
            axes.dedup();
            let n: usize = shape.iter().product();
            let xv: Vec<f32> = (0..n).map(|i| vals[(i * 11) % 64]).collect();
            let x = Tensor::from_vec(shape.clone(), xv.clone()).unwrap();
            let at = Tensor::from_vec(vec![raw.len()], raw.clone()).unwrap();
            let strides: Vec<usize> = (0..r).map(|d| shape[d + 1..].iter().product()).collect();
            let noop_here = axes.is_empty() && noop;
            let reduced: Vec<usize> = if axes.is_empty() && !noop { (0..r).collect() } else { axes.clone() };
            let kept: Vec<usize> = (0..r).filter(|d| !reduced.contains(d)).collect();
            let out_shape: Vec<usize> = (0..r).filter_map(|d| if reduced.contains(&d) { keepdims.then_some(1) } else { Some(shape[d]) }).collect();
            for kind in ALL {
                let op = Reduce { kind, axes_attr: None, axes_from_input: true, keepdims, noop_with_empty_axes: noop };
                let y = op.run(&[Some(&x), Some(&at)], &Ctx::default()).unwrap().remove(0);
                let want: Vec<f32> = if noop_here && matches!(kind, Kind::Sum | Kind::Mean | Kind::Max | Kind::Min | Kind::Prod) {
                    xv.clone()
                } else {
                    // Output elements in row-major order of the kept coordinates; the
                    // terms of each in row-major order of the reduced ones.
                    let outs: usize = kept.iter().map(|&d| shape[d]).product();
                    let terms_n: usize = reduced.iter().map(|&d| shape[d]).product();
                    (0..outs).map(|o| {
                        let mut base = 0;
                        let mut rest = o;
                        for &d in kept.iter().rev() {
                            base += rest % shape[d] * strides[d];
                            rest /= shape[d];
                        }
                        let terms: Vec<f32> = (0..terms_n).map(|t| {
                            let mut off = 0;
                            let mut rest = t;
                            for &d in reduced.iter().rev() {
                                off += rest % shape[d] * strides[d];
                                rest /= shape[d];
                            }
                            xv[base + off]
                        }).collect();
                        definition(kind, &terms)
                    }).collect()
                };
                proptest::prop_assert_eq!(y.shape(), &out_shape[..], "{:?}", kind);
                let canon = |v: &[f32]| -> Vec<u32> { v.iter().map(|&f| crate::ops::math::canon_f32(f).to_bits()).collect() };
                proptest::prop_assert_eq!(canon(y.as_slice::<f32>().unwrap()), canon(&want), "{:?} axes {:?}", kind, raw);
            }
        }
    }

    /// Dimensions of 0 to 4, 0 less often.
    fn prop_oneof_dims() -> impl proptest::strategy::Strategy<Value = usize> {
        proptest::prop_oneof![1 => proptest::prelude::Just(0usize), 6 => 1usize..5]
    }

    #[test]
    fn a_scalar_has_no_axis_to_reduce() {
        // Axis 0 of a rank-0 input was taken as valid and then indexed its empty
        // shape (a panic); every axis of a scalar is out of range.
        let x = Tensor::from_vec(vec![], vec![2.0f32]).unwrap();
        for axis in [0i64, -1] {
            let at = Tensor::from_vec(vec![1], vec![axis]).unwrap();
            for kind in [Kind::SumSquare, Kind::Sum, Kind::Max] {
                let r = over_input_axes(kind).run(&[Some(&x), Some(&at)], &Ctx::default());
                assert!(r.is_err(), "{kind:?} over axis {axis}");
            }
        }
    }

    #[test]
    fn noop_with_empty_axes_keeps_the_elementwise_part() {
        // As the ONNX reference reduces over no axes: ReduceSumSquare squares,
        // ReduceL1 takes the absolute value, ReduceLogSum the logarithm; ReduceSum
        // returns its input (its −0 too).
        let x = Tensor::from_vec(vec![3], vec![-2.0f32, 3.0, -0.0]).unwrap();
        let noop = |kind| Reduce {
            kind,
            axes_attr: None,
            axes_from_input: true,
            keepdims: true,
            noop_with_empty_axes: true,
        };
        let y = |kind| {
            run(&noop(kind), &[Some(&x)])
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        };
        assert_eq!(y(Kind::SumSquare), [4.0, 9.0, 0.0]);
        assert_eq!(y(Kind::L1), [2.0, 3.0, 0.0]);
        assert_eq!(y(Kind::L2), [2.0, 3.0, 0.0]);
        let log = y(Kind::LogSum);
        assert!(
            log[0].is_nan()
                && log[1] == crate::ops::math::ln_f32(3.0)
                && log[2] == f32::NEG_INFINITY
        );
        let sum: Vec<u32> = y(Kind::Sum).iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            sum,
            [(-2.0f32).to_bits(), 3.0f32.to_bits(), (-0.0f32).to_bits()]
        );
    }
}
