//! Softmax family (`Softmax`, `LogSoftmax`, `Hardmax`), normalizations
//! (`LayerNormalization`, `RMSNormalization`, `BatchNormalization`, `InstanceNormalization`,
//! `GroupNormalization`, `LpNormalization`, `MeanVarianceNormalization`, `LRN`) and
//! `Dropout` (inference mode, or training mode at ratio 0); `Attention`, built on the softmax (`attention.rs`); and the
//! losses `NegativeLogLikelihoodLoss` and `SoftmaxCrossEntropyLoss` (`loss.rs`).
//!
//! Every row statistic is a sequential sum in increasing index order from +0.0; the
//! exact formula of each operator is in
//! `docs/canonical-semantics.md`. Rows are independent,
//! so they are split across threads without changing any bit.

use deed_types::{DType, Tensor, TensorData};

use super::math::{exp_f32, exp_f64, ln_f32, ln_f64, pow_f32, pow_f64, tanh_f32, tanh_f64};
use super::util::{
    broadcast_offsets, broadcast_shapes, check_count, infer_input, input, norm_axis, opt_input,
};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

mod attention;
mod loss;

pub(crate) fn register(r: &mut Registry) {
    r.add("Attention", attention::build);
    r.add("Softmax", |n| build_softmax(n, SoftKind::Softmax));
    r.add("LogSoftmax", |n| build_softmax(n, SoftKind::LogSoftmax));
    r.add("Hardmax", |n| build_softmax(n, SoftKind::Hardmax));
    r.add("NegativeLogLikelihoodLoss", loss::build_nll);
    r.add("SoftmaxCrossEntropyLoss", loss::build_sce);
    r.add("LayerNormalization", build_layer_norm);
    r.add("RMSNormalization", build_rms_norm);
    r.add("BatchNormalization", build_batch_norm);
    r.add("InstanceNormalization", |n| {
        Ok(Box::new(InstanceNorm {
            eps: n.attrs.float("epsilon", 1e-5)?,
        }))
    });
    r.add("GroupNormalization", |n| {
        Ok(Box::new(GroupNorm {
            eps: n.attrs.float("epsilon", 1e-5)?,
            groups: n.attrs.req_int("num_groups")?,
        }))
    });
    r.add("LpNormalization", |n| {
        let p = n.attrs.int("p", 2)?;
        if p != 1 && p != 2 {
            return Err(OpError::unsupported(format!("LpNormalization p={p}")));
        }
        Ok(Box::new(LpNorm {
            axis: n.attrs.int("axis", -1)?,
            p,
        }))
    });
    r.add("MeanVarianceNormalization", |n| {
        Ok(Box::new(Mvn {
            axes: n.attrs.ints("axes")?.unwrap_or_else(|| vec![0, 2, 3]),
        }))
    });
    r.add("LRN", |n| {
        Ok(Box::new(Lrn {
            alpha: n.attrs.float("alpha", 1e-4)?,
            beta: n.attrs.float("beta", 0.75)?,
            bias: n.attrs.float("bias", 1.0)?,
            size: n.attrs.req_int("size")?,
        }))
    });
    r.add("Dropout", |n| {
        if n.opset < 7 || n.attrs.int("is_test", 1)? == 0 {
            return Err(OpError::unsupported("training-mode Dropout"));
        }
        Ok(Box::new(Dropout))
    });
}

/// Float element types the normalizations compute in.
trait Float:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::fmt::Debug
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INF: Self;
    const NAN: Self;
    fn from_usize(n: usize) -> Self;
    fn from_f32(x: f32) -> Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn fma(self, b: Self, c: Self) -> Self;
    fn sqrt(self) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn powf(self, y: Self) -> Self;
    fn tanh(self) -> Self;
    fn abs(self) -> Self;
    /// The value with its sign bit flipped (`−0` for `+0`).
    fn neg(self) -> Self;
    fn is_nan(self) -> bool;
    /// The value rounded to the nearest f16 (ties to even) and widened back.
    fn round_f16(self) -> Self;
    /// The value rounded to the nearest bf16 (ties to even) and widened back.
    fn round_bf16(self) -> Self;
}

/// The narrow type a softmax computed in f32 rounds every step to, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Narrow {
    /// f32 or f64 computed natively: nothing rounded between steps.
    No,
    /// f16: each step rounded to f16; a row sum accumulates in f32 and is rounded once.
    F16,
    /// bf16: each step rounded to bf16, a row sum's every addition too.
    Bf16,
}

impl Narrow {
    /// The narrowing of a tensor of this dtype (f16 and bf16 compute in f32).
    fn of(dtype: DType) -> Narrow {
        match dtype {
            DType::F16 => Narrow::F16,
            DType::BF16 => Narrow::Bf16,
            _ => Narrow::No,
        }
    }
    /// `x` rounded to the narrow type and widened back.
    #[inline(always)]
    fn round<T: Float>(self, x: T) -> T {
        match self {
            Narrow::No => x,
            Narrow::F16 => x.round_f16(),
            Narrow::Bf16 => x.round_bf16(),
        }
    }
    /// The sequential sum of `n` values from +0: each addition rounded to bf16 for
    /// [`Narrow::Bf16`] (as numpy sums bfloat16 arrays), else in `T` and rounded once.
    #[inline(always)]
    fn sum<T: Float>(self, n: usize, x: impl Fn(usize) -> T) -> T {
        match self {
            Narrow::Bf16 => (0..n).fold(T::ZERO, |s, k| (s + x(k)).round_bf16()),
            _ => self.round((0..n).fold(T::ZERO, |s, k| s + x(k))),
        }
    }
}

macro_rules! float_impl {
    ($t:ty, $exp:ident, $ln:ident, $pow:ident, $tanh:ident) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INF: Self = <$t>::NEG_INFINITY;
            const NAN: Self = <$t>::NAN;
            #[inline(always)]
            fn from_usize(n: usize) -> Self {
                n as $t
            }
            #[inline(always)]
            fn from_f32(x: f32) -> Self {
                x as $t
            }
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn fma(self, b: Self, c: Self) -> Self {
                self.mul_add(b, c)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $ln(self)
            }
            #[inline(always)]
            fn powf(self, y: Self) -> Self {
                $pow(self, y)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $tanh(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn neg(self) -> Self {
                -self
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn round_f16(self) -> Self {
                half::f16::from_f64(self as f64).to_f64() as $t
            }
            #[inline(always)]
            fn round_bf16(self) -> Self {
                half::bf16::from_f64(self as f64).to_f64() as $t
            }
        }
    };
}
float_impl!(f32, exp_f32, ln_f32, pow_f32, tanh_f32);
float_impl!(f64, exp_f64, ln_f64, pow_f64, tanh_f64);

/// NaN-propagating maximum.
fn fmax<T: Float>(a: T, b: T) -> T {
    if a.is_nan() || b.is_nan() {
        T::NAN
    } else if b > a {
        b
    } else {
        a
    }
}

/// Runs `f` on a float tensor as f32 or f64 (f16 computes in f32 and rounds once).
macro_rules! float_dispatch {
    ($x:expr, |$v:ident, $tag:ident| $body:expr) => {
        match $x.data() {
            TensorData::F32($v) => {
                let r: Vec<f32> = {
                    #[allow(unused)]
                    type $tag = f32;
                    $body
                };
                TensorData::F32(r)
            }
            TensorData::F64($v) => {
                let r: Vec<f64> = {
                    #[allow(unused)]
                    type $tag = f64;
                    $body
                };
                TensorData::F64(r)
            }
            TensorData::F16(h) => {
                let tmp: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
                let $v = &tmp;
                let r: Vec<f32> = {
                    #[allow(unused)]
                    type $tag = f32;
                    $body
                };
                TensorData::F16(r.into_iter().map(half::f16::from_f32).collect())
            }
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: $x.dtype(),
                })
            }
        }
    };
}

fn check_float(index: usize, d: DType) -> Result<(), OpError> {
    if matches!(d, DType::F32 | DType::F64 | DType::F16) {
        Ok(())
    } else {
        Err(OpError::DType { index, dtype: d })
    }
}

/// Reads a float parameter tensor (scale, bias, mean, var) as the compute type.
fn param<T: Float>(t: &Tensor, index: usize) -> Result<Vec<T>, OpError> {
    match t.data() {
        TensorData::F32(v) => Ok(v.iter().map(|&x| T::from_f64(x as f64)).collect()),
        TensorData::F64(v) => Ok(v.iter().map(|&x| T::from_f64(x)).collect()),
        TensorData::F16(v) => Ok(v.iter().map(|x| T::from_f64(x.to_f64())).collect()),
        _ => Err(OpError::DType {
            index,
            dtype: t.dtype(),
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SoftKind {
    Softmax,
    LogSoftmax,
    Hardmax,
}

/// Softmax-family node.
#[derive(Debug)]
struct Softmax {
    kind: SoftKind,
    axis: i64,
    /// Opsets before 13 flatten the input to 2-D at `axis` instead of using one axis.
    coerce_2d: bool,
}

fn build_softmax(n: &NodeInfo<'_>, kind: SoftKind) -> Result<Box<dyn Op>, OpError> {
    let coerce_2d = n.opset < 13;
    Ok(Box::new(Softmax {
        kind,
        axis: n.attrs.int("axis", if coerce_2d { 1 } else { -1 })?,
        coerce_2d,
    }))
}

/// Splits a shape into (outer, axis length, inner) for a row operation.
fn row_layout(shape: &[usize], axis: usize, coerce_2d: bool) -> (usize, usize, usize) {
    if coerce_2d {
        let outer: usize = shape[..axis].iter().product();
        let len: usize = shape[axis..].iter().product();
        (outer, len, 1)
    } else {
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        (outer, shape[axis], inner)
    }
}

/// The softmax family over rows. With `narrow` (f16 and bf16 tensors computed in f32)
/// every intermediate of the ONNX function body — `x − m`, `exp`, the row sum, `ln`
/// and the final division or subtraction — is rounded to the narrow type, as each
/// step would be if the body ran as separate f16 / bf16 operators; an f16 sum
/// accumulates in f32, a bf16 sum rounds every addition (see [`Narrow::sum`]).
fn softmax_rows<T: Float>(
    v: &[T],
    len: usize,
    inner: usize,
    kind: SoftKind,
    narrow: Narrow,
    ctx: &Ctx,
) -> Vec<T> {
    // Every element is written below: the buffer of a dead intermediate serves.
    let mut out = crate::scratch::output(v.len(), T::ZERO);
    if len == 0 {
        return out;
    }
    let block = len * inner;
    if inner == 1 && narrow == Narrow::No && kind == SoftKind::Softmax && !ctx.reference() {
        // Contiguous rows, several at a time (see `softmax_contiguous`).
        ctx.for_each_chunk(&mut out, block * ROWS, |o, dst| {
            let src = &v[o * block * ROWS..o * block * ROWS + dst.len()];
            super::simd::with_fma(
                #[inline(always)]
                || softmax_contiguous(src, dst, len),
            )
        });
        return out;
    }
    ctx.for_each_chunk(&mut out, block, |o, dst| {
        super::simd::with_fma(
            #[inline(always)]
            || {
                softmax_block(
                    &v[o * block..(o + 1) * block],
                    dst,
                    len,
                    inner,
                    kind,
                    narrow,
                )
            },
        )
    });
    out
}

/// Rows reduced together by the row-interleaved loops below.
const ROWS: usize = 8;

/// Each row's sequential fold `acc = f(r, acc, row[k])` for `k = 0, 1, …` from `init`,
/// for [`ROWS`] rows of equal length at once: every row's result is exactly its own
/// sequential fold, and the rows' independent chains interleave, which hides the
/// adder's latency that a single chain waits on.
#[inline(always)]
fn fold_rows<T: Float>(rows: [&[T]; ROWS], init: T, f: impl Fn(usize, T, T) -> T) -> [T; ROWS] {
    let len = rows[0].len();
    let rows = rows.map(|r| &r[..len.min(r.len())]);
    let mut acc = [init; ROWS];
    for k in 0..len {
        for (r, row) in rows.iter().enumerate() {
            if let Some(&x) = row.get(k) {
                acc[r] = f(r, acc[r], x);
            }
        }
    }
    acc
}

/// The NaN-propagating maximum of a row, as `x − max` uses it: NaN when the row holds
/// one, else its largest value, `−∞` when empty. Computed in sixteen lanes; where the
/// largest value is a zero the lanes may keep `−0.0` where the sequential [`fmax`]
/// keeps `+0.0` or the reverse, which no result can show: `x − (+0.0)` and
/// `x − (−0.0)` are the same number for every `x` but `±0.0`, and for those both give
/// a zero, whose `exp` is 1.
#[inline(always)]
fn row_max<T: Float>(row: &[T]) -> T {
    const L: usize = 16;
    let mut lanes = [T::NEG_INF; L];
    let mut nan = false;
    let mut chunks = row.chunks_exact(L);
    for c in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            nan |= x.is_nan();
            if x > *m {
                *m = x;
            }
        }
    }
    for &x in chunks.remainder() {
        nan |= x.is_nan();
        if x > lanes[0] {
            lanes[0] = x;
        }
    }
    if nan {
        return T::NAN;
    }
    lanes
        .into_iter()
        .fold(T::NEG_INF, |a, x| if x > a { x } else { a })
}

/// Softmax over contiguous rows of `len` (`src` and `dst` hold whole rows): per row
/// `m` = [`row_max`], `e = exp(x − m)`, `s` = the sequential sum of `e`, `y = e / s` —
/// the steps of [`softmax_block`]; the sums of [`ROWS`] rows run interleaved.
#[inline(always)]
fn softmax_contiguous<T: Float>(src: &[T], dst: &mut [T], len: usize) {
    for (s, d) in src.chunks(len).zip(dst.chunks_mut(len)) {
        let m = row_max(s);
        for (o, &x) in d.iter_mut().zip(s) {
            *o = (x - m).exp();
        }
    }
    let mut sums = Vec::with_capacity(dst.len() / len);
    let mut groups = dst.chunks_exact(len * ROWS);
    for g in &mut groups {
        let rows: [&[T]; ROWS] = std::array::from_fn(|r| &g[r * len..(r + 1) * len]);
        sums.extend(fold_rows(rows, T::ZERO, |_, a, e| a + e));
    }
    for row in groups.remainder().chunks(len) {
        sums.push(row.iter().fold(T::ZERO, |a, &e| a + e));
    }
    for (d, &s) in dst.chunks_mut(len).zip(&sums) {
        for o in d.iter_mut() {
            *o = *o / s;
        }
    }
}

/// One block of `len × inner` elements of [`softmax_rows`].
#[inline(always)]
fn softmax_block<T: Float>(
    src: &[T],
    dst: &mut [T],
    len: usize,
    inner: usize,
    kind: SoftKind,
    narrow: Narrow,
) {
    let r = |x: T| narrow.round(x);
    {
        for i in 0..inner {
            let at = |k: usize| k * inner + i;
            let m = (0..len).fold(T::NEG_INF, |a, k| fmax(a, src[at(k)]));
            match kind {
                SoftKind::Hardmax => {
                    let mut best = 0;
                    for k in 0..len {
                        if src[at(k)] > src[at(best)] {
                            best = k;
                        }
                    }
                    for k in 0..len {
                        dst[at(k)] = if k == best { T::ONE } else { T::ZERO };
                    }
                }
                SoftKind::Softmax => {
                    // The exponentials first (independent, so this loop vectorizes),
                    // then their sum in order.
                    for k in 0..len {
                        dst[at(k)] = r(r(src[at(k)] - m).exp());
                    }
                    let s = narrow.sum(len, |k| dst[at(k)]);
                    for k in 0..len {
                        dst[at(k)] = dst[at(k)] / s;
                    }
                }
                SoftKind::LogSoftmax => {
                    for k in 0..len {
                        dst[at(k)] = r(r(src[at(k)] - m).exp());
                    }
                    let s = narrow.sum(len, |k| dst[at(k)]);
                    let ls = r(s.ln());
                    for k in 0..len {
                        dst[at(k)] = r(src[at(k)] - m) - ls;
                    }
                }
            }
        }
    }
}

impl Op for Softmax {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        if x.ty.dtype != DType::BF16 {
            check_float(0, x.ty.dtype)?;
        }
        norm_axis(self.axis, x.ty.shape.len())?;
        Ok(vec![x.ty.clone()])
    }
    fn cost(&self, inputs: &[Option<&TypeInfo>], _: &[TypeInfo]) -> u64 {
        super::util::per_input_element(inputs, 12)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let axis = norm_axis(self.axis, x.rank())?;
        let (_, len, inner) = row_layout(x.shape(), axis, self.coerce_2d);
        let narrow = Narrow::of(x.dtype());
        let data = if let TensorData::BF16(h) = x.data() {
            let w: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
            let y = softmax_rows(&w, len, inner, self.kind, narrow, ctx);
            TensorData::BF16(y.into_iter().map(half::bf16::from_f32).collect())
        } else {
            float_dispatch!(x, |v, T| softmax_rows(
                v, len, inner, self.kind, narrow, ctx
            ))
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

/// Mean and variance of a row: sequential sum from +0.0, then one division; the
/// variance sums `fma(d, d, acc)` of the deviations `d = x − mean`.
fn mean_var<T: Float>(row: impl Iterator<Item = T> + Clone, n: usize) -> (T, T) {
    let nn = T::from_usize(n);
    let mean = row.clone().fold(T::ZERO, |a, x| a + x) / nn;
    let var = row.fold(T::ZERO, |a, x| {
        let d = x - mean;
        d.fma(d, a)
    }) / nn;
    (mean, var)
}

/// [`mean_var`] of [`ROWS`] rows of `n` at once, each exactly as alone.
#[inline(always)]
fn mean_var_rows<T: Float>(rows: [&[T]; ROWS], n: usize) -> [(T, T); ROWS] {
    let nn = T::from_usize(n);
    let sums = fold_rows(rows, T::ZERO, |_, a, x| a + x);
    let means = sums.map(|s| s / nn);
    let vars = fold_rows(rows, T::ZERO, |r, a, x| {
        let d = x - means[r];
        d.fma(d, a)
    });
    std::array::from_fn(|r| (means[r], vars[r] / nn))
}

/// `LayerNormalization` (opset 17).
#[derive(Debug)]
struct LayerNorm {
    axis: i64,
    eps: f32,
}

/// The `axis` and `epsilon` of a normalization whose statistics are kept in float
/// (`stash_type = 1`, the only one supported).
fn axis_and_eps(n: &NodeInfo<'_>) -> Result<(i64, f32), OpError> {
    if n.attrs.int("stash_type", 1)? != 1 {
        return Err(OpError::unsupported(format!(
            "{} stash_type other than float",
            n.op_type
        )));
    }
    Ok((n.attrs.int("axis", -1)?, n.attrs.float("epsilon", 1e-5)?))
}

fn build_layer_norm(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let (axis, eps) = axis_and_eps(n)?;
    Ok(Box::new(LayerNorm { axis, eps }))
}

fn layer_norm<T: Float>(
    v: &[T],
    rows: usize,
    len: usize,
    scale: &[T],
    bias: Option<&[T]>,
    eps: T,
    ctx: &Ctx,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    // Every element is written below: the buffer of a dead intermediate serves.
    let mut out = crate::scratch::output(v.len(), T::ZERO);
    // Groups of ROWS rows whose sums run interleaved (`mean_var_rows`), the rest alone.
    let groups = if len == 0 || ctx.reference() {
        0
    } else {
        rows / ROWS
    };
    let grouped: Vec<[(T, T); ROWS]> = ctx.map_range(groups, |g| {
        super::simd::with_fma(
            #[inline(always)]
            || {
                let at = g * ROWS * len;
                let rows: [&[T]; ROWS] =
                    std::array::from_fn(|r| &v[at + r * len..at + (r + 1) * len]);
                mean_var_rows(rows, len).map(|(mean, var)| (mean, T::ONE / (var + eps).sqrt()))
            },
        )
    });
    let mut stats: Vec<(T, T)> = grouped.into_iter().flatten().collect();
    stats.extend(ctx.map_range(rows - stats.len(), |i| {
        let r = groups * ROWS + i;
        super::simd::with_fma(
            #[inline(always)]
            || {
                let row = &v[r * len..(r + 1) * len];
                let (mean, var) = mean_var(row.iter().copied(), len);
                (mean, T::ONE / (var + eps).sqrt())
            },
        )
    }));
    let whole = scale.len() == len && bias.is_none_or(|b| b.len() == len);
    ctx.for_each_chunk(&mut out, len.max(1), |r, dst| {
        let (mean, inv) = stats[r];
        let row = &v[r * len..(r + 1) * len];
        super::simd::with_fma(
            #[inline(always)]
            || match bias {
                // Full-length parameters: plain zips, which vectorize.
                Some(b) if whole => {
                    for (((d, &x), &g), &c) in dst.iter_mut().zip(row).zip(scale).zip(b) {
                        *d = (x - mean) * inv * g + c;
                    }
                }
                None if whole => {
                    for ((d, &x), &g) in dst.iter_mut().zip(row).zip(scale) {
                        *d = (x - mean) * inv * g;
                    }
                }
                _ => {
                    // A parameter has one value per element of a row or of the input.
                    for k in 0..len {
                        let at = r * len + k;
                        let t = (row[k] - mean) * inv;
                        let s = t * scale[at % scale.len()];
                        dst[k] = match bias {
                            Some(b) => s + b[at % b.len()],
                            None => s,
                        };
                    }
                }
            },
        )
    });
    let (means, invs) = stats.into_iter().unzip();
    (out, means, invs)
}

impl Op for LayerNorm {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 3)?;
        let x = infer_input(inputs, 0)?;
        check_float(0, x.ty.dtype)?;
        let axis = norm_axis(self.axis, x.ty.shape.len())?;
        // Scale and bias multiply and add in the function body: numpy broadcasting to
        // the input's shape.
        for i in [1, 2] {
            if let Some(p) = inputs.get(i).and_then(|p| p.as_ref()) {
                check_float(i, p.ty.dtype)?;
                broadcasts_to_input(["scale", "bias"][i - 1], &p.ty.shape, &x.ty.shape)?;
            }
        }
        infer_input(inputs, 1)?;
        let mut stat = x.ty.shape.clone();
        for d in stat.iter_mut().skip(axis) {
            *d = 1;
        }
        let sdt = if x.ty.dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        Ok(vec![
            x.ty.clone(),
            TypeInfo::new(sdt, stat.clone()),
            TypeInfo::new(sdt, stat),
        ])
    }
    fn cost(&self, inputs: &[Option<&TypeInfo>], _: &[TypeInfo]) -> u64 {
        super::util::per_input_element(inputs, 6)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let axis = norm_axis(self.axis, x.rank())?;
        let len: usize = x.shape()[axis..].iter().product();
        let rows: usize = x.shape()[..axis].iter().product();
        let mut stat_shape = x.shape().to_vec();
        for d in stat_shape.iter_mut().skip(axis) {
            *d = 1;
        }
        let scale_t = input(inputs, 1)?;
        let bias_t = opt_input(inputs, 2);
        // A parameter over the normalized dimensions only is used as it is; any other
        // is broadcast to the input's shape first (as RMSNormalization's scale).
        let mut spread = [None, None];
        for ((p, s), what) in [Some(scale_t), bias_t]
            .into_iter()
            .zip(&mut spread)
            .zip(["scale", "bias"])
        {
            if let Some(p) = p {
                broadcasts_to_input(what, p.shape(), x.shape())?;
                let trailing = p.rank() <= x.rank() - axis && p.len() == len;
                *s = (!trailing).then(|| broadcast_offsets(p.shape(), x.shape()));
            }
        }
        macro_rules! go {
            ($t:ty, $v:expr) => {{
                let spread_out = |t: &Tensor, i: usize| -> Result<Vec<$t>, OpError> {
                    let p = param::<$t>(t, i)?;
                    Ok(match &spread[i - 1] {
                        Some(o) => o.iter().map(|&j| p[j]).collect(),
                        None => p,
                    })
                };
                let scale = spread_out(scale_t, 1)?;
                let bias = bias_t.map(|b| spread_out(b, 2)).transpose()?;
                if scale.is_empty() && len > 0 {
                    return Err(OpError::shape("empty scale"));
                }
                layer_norm::<$t>($v, rows, len, &scale, bias.as_deref(), self.eps as $t, ctx)
            }};
        }
        let (y, m, s) = match x.data() {
            TensorData::F32(v) => {
                let (y, m, s) = go!(f32, v);
                (TensorData::F32(y), TensorData::F32(m), TensorData::F32(s))
            }
            TensorData::F64(v) => {
                let (y, m, s) = go!(f64, v);
                (TensorData::F64(y), TensorData::F64(m), TensorData::F64(s))
            }
            TensorData::F16(h) => {
                let w: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
                let (y, m, s) = go!(f32, &w);
                (
                    TensorData::F16(y.into_iter().map(half::f16::from_f32).collect()),
                    TensorData::F32(m),
                    TensorData::F32(s),
                )
            }
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        };
        Ok(vec![
            Tensor::new(x.shape().to_vec(), y)?,
            Tensor::new(stat_shape.clone(), m)?,
            Tensor::new(stat_shape, s)?,
        ])
    }
}

/// `RMSNormalization` (opset 23).
#[derive(Debug)]
struct RmsNorm {
    axis: i64,
    eps: f32,
}

fn build_rms_norm(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let (axis, eps) = axis_and_eps(n)?;
    Ok(Box::new(RmsNorm { axis, eps }))
}

/// Checks that a normalization's parameter `what` of shape `p` broadcasts to the
/// input's shape `x` (unidirectional broadcasting, as the function bodies multiply and
/// add it).
fn broadcasts_to_input(what: &str, p: &[usize], x: &[usize]) -> Result<(), OpError> {
    if p.len() > x.len() || broadcast_shapes(x, p)? != x {
        return Err(OpError::shape(format!(
            "{what} {p:?} does not broadcast to the input {x:?}"
        )));
    }
    Ok(())
}

/// Per row of `len`, as the operator's function body computes it: `ms` = the
/// sequential sum of the rounded squares `x·x`, divided by `len` (`ReduceMean`);
/// `rms = sqrt(ms + ε)`; `y = (x / rms) · scale`, the quotient rounded to the
/// output type (`narrow`: f16) before the product. `scale` has one value per element
/// of `v` (broadcast already) or per element of a row.
fn rms_norm<T: Float>(
    v: &[T],
    rows: usize,
    len: usize,
    scale: &[T],
    eps: T,
    narrow: bool,
    ctx: &Ctx,
) -> Vec<T> {
    let r = |x: T| if narrow { x.round_f16() } else { x };
    let rms: Vec<T> = ctx.map_range(rows, |i| {
        let row = &v[i * len..(i + 1) * len];
        let ss = row.iter().fold(T::ZERO, |a, &x| a + x * x);
        (ss / T::from_usize(len) + eps).sqrt()
    });
    // Every element is written below: the buffer of a dead intermediate serves.
    let mut out = crate::scratch::output(v.len(), T::ZERO);
    ctx.for_each_chunk(&mut out, len.max(1), |i, dst| {
        let rms = rms[i];
        let row = &v[i * len..(i + 1) * len];
        let g = if scale.len() == len {
            scale
        } else {
            &scale[i * len..(i + 1) * len]
        };
        for ((d, &x), &g) in dst.iter_mut().zip(row).zip(g) {
            *d = r(r(x / rms) * g);
        }
    });
    out
}

impl Op for RmsNorm {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 2)?;
        let x = infer_input(inputs, 0)?;
        check_float(0, x.ty.dtype)?;
        norm_axis(self.axis, x.ty.shape.len())?;
        let scale = infer_input(inputs, 1)?;
        check_float(1, scale.ty.dtype)?;
        broadcasts_to_input("scale", &scale.ty.shape, &x.ty.shape)?;
        Ok(vec![x.ty.clone()])
    }
    fn cost(&self, inputs: &[Option<&TypeInfo>], _: &[TypeInfo]) -> u64 {
        super::util::per_input_element(inputs, 4)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        check_count(inputs.len(), 2, 2)?;
        let x = input(inputs, 0)?;
        let axis = norm_axis(self.axis, x.rank())?;
        let len: usize = x.shape()[axis..].iter().product();
        let rows: usize = x.shape()[..axis].iter().product();
        let scale_t = input(inputs, 1)?;
        broadcasts_to_input("scale", scale_t.shape(), x.shape())?;
        // A scale over the normalized dimensions only is used as it is; any other is
        // broadcast to the input's shape first.
        let trailing = scale_t.shape().len() <= x.rank() - axis
            && scale_t.shape().iter().product::<usize>() == len;
        let offsets = (!trailing).then(|| broadcast_offsets(scale_t.shape(), x.shape()));
        let narrow = x.dtype() == DType::F16;
        let y = float_dispatch!(x, |v, T| {
            let s = param::<T>(scale_t, 1)?;
            let scale: Vec<T> = match &offsets {
                Some(o) => o.iter().map(|&i| s[i]).collect(),
                None => s,
            };
            rms_norm::<T>(v, rows, len, &scale, self.eps as T, narrow, ctx)
        });
        Ok(vec![Tensor::new(x.shape().to_vec(), y)?])
    }
}

/// Per-channel affine normalization shared by batch and instance norm:
/// `y = (x − mean_c) · a_c + b_c` over NC… layout.
fn channel_affine<T: Float>(
    v: &[T],
    c: usize,
    spatial: usize,
    mean: &[T],
    a: &[T],
    b: &[T],
    ctx: &Ctx,
) -> Vec<T> {
    let spatial = spatial.max(1);
    // Small tensors stay on one thread: the split would cost more in moving the
    // input between the cores' caches than it saves.
    let planes = v.len().div_ceil(spatial);
    let per = if v.len() < super::elementwise::PAR_MIN {
        planes.max(1)
    } else {
        planes.div_ceil(ctx.threads()).max(1)
    };
    let c = c.max(1);
    // Three roundings per element, in this order, whatever the vector width.
    super::simd::map_planes_par(
        ctx,
        v,
        spatial,
        per,
        #[inline(always)]
        |plane| {
            let ch = plane % c;
            let (m, a, b) = (mean[ch], a[ch], b[ch]);
            #[inline(always)]
            move |x| {
                let y = (x - m) * a + b;
                // `T::NAN` is the canonical NaN.
                if y.is_nan() {
                    T::NAN
                } else {
                    y
                }
            }
        },
    )
}

/// `BatchNormalization` in inference mode.
#[derive(Debug)]
struct BatchNorm {
    eps: f32,
}

fn build_batch_norm(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    if n.attrs.int("training_mode", 0)? != 0 {
        if n.num_outputs > 3 {
            return Err(OpError::shape(format!(
                "BatchNormalization in training mode has at most 3 outputs, the node has {}",
                n.num_outputs
            )));
        }
        return Ok(Box::new(BatchNormTraining {
            eps: n.attrs.float("epsilon", 1e-5)?,
            momentum: n.attrs.float("momentum", 0.9)?,
            outputs: n.num_outputs.max(1),
        }));
    }
    if n.num_outputs > 1 && n.opset >= 14 {
        return Err(OpError::unsupported(
            "BatchNormalization running statistics outputs",
        ));
    }
    Ok(Box::new(BatchNorm {
        eps: n.attrs.float("epsilon", 1e-5)?,
    }))
}

fn nc_spatial(shape: &[usize]) -> Result<(usize, usize, usize), OpError> {
    if shape.len() < 2 {
        return Err(OpError::shape(format!(
            "expected N×C×… input, got {shape:?}"
        )));
    }
    Ok((shape[0], shape[1], shape[2..].iter().product()))
}

impl Op for BatchNorm {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 5, 5)?;
        let x = infer_input(inputs, 0)?;
        check_float(0, x.ty.dtype)?;
        let (_, c, _) = nc_spatial(&x.ty.shape)?;
        for i in 1..5 {
            let p = infer_input(inputs, i)?;
            if p.ty.numel() as usize != c {
                return Err(OpError::shape(format!(
                    "parameter {i} has shape {:?}, expected [{c}]",
                    p.ty.shape
                )));
            }
        }
        Ok(vec![x.ty.clone()])
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (_, c, sp) = nc_spatial(x.shape())?;
        macro_rules! go {
            ($t:ty, $v:expr) => {{
                let scale = param::<$t>(input(inputs, 1)?, 1)?;
                let b = param::<$t>(input(inputs, 2)?, 2)?;
                let mean = param::<$t>(input(inputs, 3)?, 3)?;
                let var = param::<$t>(input(inputs, 4)?, 4)?;
                // a_c = scale_c / sqrt(var_c + eps), computed once per channel.
                let a: Vec<$t> = (0..c)
                    .map(|i| scale[i] / (var[i] + self.eps as $t).sqrt())
                    .collect();
                channel_affine::<$t>($v, c, sp, &mean, &a, &b, ctx)
            }};
        }
        let data = match x.data() {
            TensorData::F32(v) => TensorData::F32(go!(f32, v)),
            TensorData::F64(v) => TensorData::F64(go!(f64, v)),
            TensorData::F16(h) => {
                let w: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
                TensorData::F16(go!(f32, &w).into_iter().map(half::f16::from_f32).collect())
            }
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
    /// [`channel_affine`] makes every NaN canonical as it stores.
    fn nans_canonical(&self) -> bool {
        true
    }
}

/// `BatchNormalization` with `training_mode = 1` (opsets 14, 15): normalized by the
/// batch's own statistics, with the running statistics as optional outputs.
#[derive(Debug)]
struct BatchNormTraining {
    eps: f32,
    momentum: f32,
    /// Outputs the node declares: `Y`, then `running_mean`, `running_var`.
    outputs: usize,
}

impl Op for BatchNormTraining {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 5, 5)?;
        let x = infer_input(inputs, 0)?;
        check_float(0, x.ty.dtype)?;
        let (_, c, _) = nc_spatial(&x.ty.shape)?;
        let mut out = vec![x.ty.clone()];
        for i in 1..5 {
            let p = infer_input(inputs, i)?;
            check_float(i, p.ty.dtype)?;
            if p.ty.numel() as usize != c {
                return Err(OpError::shape(format!(
                    "parameter {i} has shape {:?}, expected [{c}]",
                    p.ty.shape
                )));
            }
            // The running statistics have the type of the statistics given.
            if i >= 3 {
                out.push(TypeInfo::new(p.ty.dtype, vec![c]));
            }
        }
        out.truncate(self.outputs);
        Ok(out)
    }
    /// Per input element: the sum, the squared deviation and the affine map.
    fn cost(&self, inputs: &[Option<&TypeInfo>], _: &[TypeInfo]) -> u64 {
        super::util::per_input_element(inputs, 4)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (nb, c, sp) = nc_spatial(x.shape())?;
        macro_rules! go {
            ($t:ty, $v:expr) => {{
                let v: &[$t] = $v;
                let scale = param::<$t>(input(inputs, 1)?, 1)?;
                let b = param::<$t>(input(inputs, 2)?, 2)?;
                let mean_in = param::<$t>(input(inputs, 3)?, 3)?;
                let var_in = param::<$t>(input(inputs, 4)?, 4)?;
                let params = [&scale, &b, &mean_in, &var_in];
                if params.iter().any(|p| p.len() != c) {
                    return Err(OpError::shape(
                        "scale, B, input_mean and input_var must have C elements",
                    ));
                }
                // The batch statistics of each channel, over (n, spatial) in increasing
                // flat index order.
                let (mut mean, mut var) = (Vec::with_capacity(c), Vec::with_capacity(c));
                for ch in 0..c {
                    let elems = (0..nb)
                        .flat_map(|i| v[(i * c + ch) * sp..(i * c + ch + 1) * sp].iter().copied());
                    let (m, s) = mean_var(elems, nb * sp);
                    mean.push(m);
                    var.push(s);
                }
                let eps = self.eps as $t;
                let a: Vec<$t> = (0..c).map(|i| scale[i] / (var[i] + eps).sqrt()).collect();
                let y = channel_affine::<$t>(v, c, sp, &mean, &a, &b, ctx);
                let mo = self.momentum as $t;
                let keep = 1.0 - mo;
                let running = |given: &[$t], batch: &[$t]| -> Vec<f64> {
                    (0..c)
                        .map(|i| (given[i] * mo + batch[i] * keep) as f64)
                        .collect()
                };
                (y, running(&mean_in, &mean), running(&var_in, &var))
            }};
        }
        let (y, rmean, rvar) = match x.data() {
            TensorData::F32(v) => {
                let (y, m, s) = go!(f32, v);
                (TensorData::F32(y), m, s)
            }
            TensorData::F64(v) => {
                let (y, m, s) = go!(f64, v);
                (TensorData::F64(y), m, s)
            }
            TensorData::F16(h) => {
                let w: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
                let (y, m, s) = go!(f32, &w);
                let y = y.into_iter().map(half::f16::from_f32).collect();
                (TensorData::F16(y), m, s)
            }
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        };
        // Each running statistic rounded once to its input's type.
        let stat = |v: Vec<f64>, index: usize| -> Result<Tensor, OpError> {
            let data = match input(inputs, index)?.dtype() {
                DType::F32 => TensorData::F32(v.into_iter().map(|x| x as f32).collect()),
                DType::F64 => TensorData::F64(v),
                DType::F16 => TensorData::F16(v.into_iter().map(half::f16::from_f64).collect()),
                dtype => return Err(OpError::DType { index, dtype }),
            };
            Ok(Tensor::new(vec![c], data)?)
        };
        let mut out = vec![Tensor::new(x.shape().to_vec(), y)?];
        if self.outputs > 1 {
            out.push(stat(rmean, 3)?);
        }
        if self.outputs > 2 {
            out.push(stat(rvar, 4)?);
        }
        Ok(out)
    }
}

/// `InstanceNormalization`.
#[derive(Debug)]
struct InstanceNorm {
    eps: f32,
}

impl Op for InstanceNorm {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 3, 3)?;
        let x = infer_input(inputs, 0)?;
        check_float(0, x.ty.dtype)?;
        nc_spatial(&x.ty.shape)?;
        Ok(vec![x.ty.clone()])
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (n, c, sp) = nc_spatial(x.shape())?;
        macro_rules! go {
            ($t:ty, $v:expr) => {{
                let v: &[$t] = $v;
                let scale = param::<$t>(input(inputs, 1)?, 1)?;
                let b = param::<$t>(input(inputs, 2)?, 2)?;
                if scale.len() != c || b.len() != c {
                    return Err(OpError::shape("scale and bias must have C elements"));
                }
                let mut out = vec![0.0 as $t; v.len()];
                let eps = self.eps as $t;
                ctx.for_each_chunk(&mut out, sp.max(1), |idx, dst| {
                    let ch = idx % c;
                    let src = &v[idx * sp..(idx + 1) * sp];
                    let (mean, var) = mean_var(src.iter().copied(), sp);
                    let inv = 1.0 / (var + eps).sqrt();
                    for k in 0..sp {
                        dst[k] = (src[k] - mean) * inv * scale[ch] + b[ch];
                    }
                });
                let _ = n;
                out
            }};
        }
        let data = match x.data() {
            TensorData::F32(v) => TensorData::F32(go!(f32, v)),
            TensorData::F64(v) => TensorData::F64(go!(f64, v)),
            TensorData::F16(h) => {
                let w: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
                TensorData::F16(go!(f32, &w).into_iter().map(half::f16::from_f32).collect())
            }
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

/// `GroupNormalization` (scale and bias per channel, or per group as in opset 18).
#[derive(Debug)]
struct GroupNorm {
    eps: f32,
    groups: i64,
}

impl Op for GroupNorm {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 3, 3)?;
        let x = infer_input(inputs, 0)?;
        check_float(0, x.ty.dtype)?;
        let (_, c, _) = nc_spatial(&x.ty.shape)?;
        if self.groups <= 0 || c % self.groups as usize != 0 {
            return Err(OpError::bad_attr(
                "num_groups",
                format!("{} does not divide {c} channels", self.groups),
            ));
        }
        Ok(vec![x.ty.clone()])
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (_, c, sp) = nc_spatial(x.shape())?;
        let g = self.groups.max(1) as usize;
        let cg = c / g;
        let glen = cg * sp;
        macro_rules! go {
            ($t:ty, $v:expr) => {{
                let v: &[$t] = $v;
                let scale = param::<$t>(input(inputs, 1)?, 1)?;
                let b = param::<$t>(input(inputs, 2)?, 2)?;
                let per_channel = scale.len() == c;
                if !(per_channel || scale.len() == g) || b.len() != scale.len() {
                    return Err(OpError::shape(
                        "scale and bias must have C or num_groups elements",
                    ));
                }
                let mut out = vec![0.0 as $t; v.len()];
                let eps = self.eps as $t;
                ctx.for_each_chunk(&mut out, glen.max(1), |idx, dst| {
                    let grp = idx % g;
                    let src = &v[idx * glen..(idx + 1) * glen];
                    let (mean, var) = mean_var(src.iter().copied(), glen);
                    let inv = 1.0 / (var + eps).sqrt();
                    for k in 0..glen {
                        let p = if per_channel {
                            grp * cg + k / sp.max(1)
                        } else {
                            grp
                        };
                        dst[k] = (src[k] - mean) * inv * scale[p] + b[p];
                    }
                });
                out
            }};
        }
        let data = match x.data() {
            TensorData::F32(v) => TensorData::F32(go!(f32, v)),
            TensorData::F64(v) => TensorData::F64(go!(f64, v)),
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

/// `LpNormalization` (p = 1 or 2).
#[derive(Debug)]
struct LpNorm {
    axis: i64,
    p: i64,
}

impl Op for LpNorm {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        check_float(0, x.ty.dtype)?;
        norm_axis(self.axis, x.ty.shape.len())?;
        Ok(vec![x.ty.clone()])
    }
    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let axis = norm_axis(self.axis, x.rank())?;
        let (outer, len, inner) = row_layout(x.shape(), axis, false);
        let p = self.p;
        fn go<T: Float>(v: &[T], outer: usize, len: usize, inner: usize, p: i64) -> Vec<T> {
            let mut out = vec![T::ZERO; v.len()];
            for o in 0..outer {
                for i in 0..inner {
                    let at = |k: usize| (o * len + k) * inner + i;
                    let norm = if p == 1 {
                        (0..len).fold(T::ZERO, |a, k| a + v[at(k)].abs())
                    } else {
                        (0..len)
                            .fold(T::ZERO, |a, k| v[at(k)].fma(v[at(k)], a))
                            .sqrt()
                    };
                    // A zero norm divides by one (the ONNX reference's rule), so an
                    // all-zero row stays zero instead of becoming NaN.
                    let norm = if norm == T::ZERO { T::ONE } else { norm };
                    for k in 0..len {
                        out[at(k)] = v[at(k)] / norm;
                    }
                }
            }
            out
        }
        let data = float_dispatch!(x, |v, T| go(v, outer, len, inner, p));
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

/// `MeanVarianceNormalization`: `(x − E[x]) / (sqrt(E[x²] − E[x]²) + 1e-9)` over `axes`,
/// as the ONNX function body defines it.
#[derive(Debug)]
struct Mvn {
    axes: Vec<i64>,
}

impl Op for Mvn {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        check_float(0, x.ty.dtype)?;
        for &a in &self.axes {
            norm_axis(a, x.ty.shape.len())?;
        }
        Ok(vec![x.ty.clone()])
    }
    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let rank = x.rank();
        let mut axes = self
            .axes
            .iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<Result<Vec<_>, _>>()?;
        axes.sort_unstable();
        axes.dedup();
        let shape = x.shape().to_vec();
        let strides = super::util::strides(&shape);
        let kept: Vec<usize> = (0..rank).filter(|d| !axes.contains(d)).collect();
        // Flat offsets of an index set over the given dimensions, row-major.
        let offsets = |dims: &[usize]| -> Vec<usize> {
            let mut out = vec![0usize];
            for &d in dims {
                let mut next = Vec::with_capacity(out.len() * shape[d]);
                for &base in &out {
                    for i in 0..shape[d] {
                        next.push(base + i * strides[d]);
                    }
                }
                out = next;
            }
            out
        };
        let bases = offsets(&kept);
        let within = offsets(&axes);
        fn go<T: Float>(v: &[T], bases: &[usize], within: &[usize]) -> Vec<T> {
            let mut out = vec![T::ZERO; v.len()];
            let n = T::from_usize(within.len());
            for &b in bases {
                let mean = within.iter().fold(T::ZERO, |a, &o| a + v[b + o]) / n;
                let mean_sq = within
                    .iter()
                    .fold(T::ZERO, |a, &o| v[b + o].fma(v[b + o], a))
                    / n;
                let std = (mean_sq - mean * mean).sqrt();
                let denom = std + T::from_f32(1e-9);
                for &o in within {
                    out[b + o] = (v[b + o] - mean) / denom;
                }
            }
            out
        }
        let data = float_dispatch!(x, |v, T| go(v, &bases, &within));
        Ok(vec![Tensor::new(shape, data)?])
    }
}

/// `LRN` across channels.
#[derive(Debug)]
struct Lrn {
    alpha: f32,
    beta: f32,
    bias: f32,
    size: i64,
}

impl Op for Lrn {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        check_float(0, x.ty.dtype)?;
        nc_spatial(&x.ty.shape)?;
        if self.size < 1 {
            return Err(OpError::bad_attr("size", "must be positive"));
        }
        Ok(vec![x.ty.clone()])
    }
    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (n, c, sp) = nc_spatial(x.shape())?;
        let size = self.size as usize;
        let lo = (size - 1) / 2;
        let hi = size - 1 - lo;
        /// `(n, c, spatial)` dims, `(lo, hi, size)` channel window, `(alpha, beta,
        /// bias)` coefficients.
        fn go<T: Float>(
            v: &[T],
            (n, c, sp): (usize, usize, usize),
            (lo, hi, size): (usize, usize, usize),
            (alpha, beta, bias): (T, T, T),
        ) -> Vec<T> {
            let mut out = vec![T::ZERO; v.len()];
            let coef = alpha / T::from_usize(size);
            for b in 0..n {
                for ch in 0..c {
                    let from = ch.saturating_sub(lo);
                    let to = (ch + hi).min(c - 1);
                    for s in 0..sp {
                        let at = |cc: usize| (b * c + cc) * sp + s;
                        let sq = (from..=to).fold(T::ZERO, |a, cc| v[at(cc)].fma(v[at(cc)], a));
                        out[at(ch)] = v[at(ch)] / (bias + coef * sq).powf(beta);
                    }
                }
            }
            out
        }
        let (a, be, bi) = (self.alpha, self.beta, self.bias);
        let data = match x.data() {
            TensorData::F32(v) => TensorData::F32(go(v, (n, c, sp), (lo, hi, size), (a, be, bi))),
            TensorData::F64(v) => TensorData::F64(go(
                v,
                (n, c, sp),
                (lo, hi, size),
                (a as f64, be as f64, bi as f64),
            )),
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

/// Inference-mode `Dropout`: the identity, with an all-true mask.
#[derive(Debug)]
struct Dropout;

/// Whether a training-mode `Dropout` (training input `training`, ratio input `ratio`)
/// is deterministic: only with a ratio of exactly 0, where it is the identity. Any
/// other ratio (absent: 0.5) would draw random numbers, which Deed refuses.
fn dropout_training_ok(training: &Tensor, ratio: Option<&Tensor>) -> Result<(), OpError> {
    if !training
        .as_slice::<bool>()
        .is_some_and(|v| v.iter().any(|&b| b))
    {
        return Ok(());
    }
    let zero = ratio.is_some_and(|r| match r.data() {
        TensorData::F32(v) => v.iter().all(|&x| x == 0.0),
        TensorData::F64(v) => v.iter().all(|&x| x == 0.0),
        TensorData::F16(v) => v.iter().all(|x| x.to_f32() == 0.0),
        TensorData::BF16(v) => v.iter().all(|x| x.to_f32() == 0.0),
        _ => false,
    });
    if zero {
        Ok(())
    } else {
        Err(OpError::unsupported(
            "training-mode Dropout with a ratio other than 0 (it draws random numbers)",
        ))
    }
}

impl Op for Dropout {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        if let Some(t) = inputs.get(2).copied().flatten() {
            let training = super::util::need_value(t, 2)?;
            // In training mode the ratio must be known while planning: the plan holds
            // for a ratio of exactly 0 only.
            let ratio = match inputs.get(1).copied().flatten() {
                Some(r)
                    if training
                        .as_slice::<bool>()
                        .is_some_and(|v| v.contains(&true)) =>
                {
                    Some(super::util::need_value(r, 1)?)
                }
                _ => None,
            };
            dropout_training_ok(training, ratio)?;
        }
        Ok(vec![
            x.ty.clone(),
            TypeInfo::new(DType::Bool, x.ty.shape.clone()),
        ])
    }
    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        if let Some(t) = opt_input(inputs, 2) {
            dropout_training_ok(t, opt_input(inputs, 1))?;
        }
        Ok(vec![
            x.clone(),
            Tensor::from_vec(x.shape().to_vec(), vec![true; x.len()])?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::KernelMode;
    use proptest::prelude::*;

    #[test]
    fn layer_norm_parameters_broadcast_to_the_input() {
        // A bias of shape [2, 1] adds one value per row of a [2, 3] input normalized
        // over its last axis. It used to be read as a row of two, cycling (and one of
        // none divided by zero); now anything that does not broadcast is refused.
        let x = Tensor::from_vec(vec![2, 3], vec![1.0f32, -2.0, 0.5, 3.0, 3.5, -1.0]).unwrap();
        let scale = Tensor::from_vec(vec![3], vec![0.5f32, 2.0, -1.0]).unwrap();
        let ln = LayerNorm {
            axis: -1,
            eps: 1e-5,
        };
        let y = |bias: Option<&Tensor>| {
            ln.run(&[Some(&x), Some(&scale), bias], &Ctx::default())
                .map(|mut o| o.remove(0).as_slice::<f32>().unwrap().to_vec())
        };
        let plain = y(None).unwrap();
        let b = Tensor::from_vec(vec![2, 1], vec![10.0f32, -20.0]).unwrap();
        let want: Vec<f32> = plain
            .iter()
            .enumerate()
            .map(|(i, v)| v + [10.0, -20.0][i / 3])
            .collect();
        assert_eq!(y(Some(&b)).unwrap(), want);
        for bad in [vec![0], vec![2], vec![3, 3]] {
            let n = bad.iter().product();
            let b = Tensor::from_vec(bad.clone(), vec![1.0f32; n]).unwrap();
            assert!(y(Some(&b)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mean_variance_normalization_of_a_scalar_is_refused() {
        // Its axes index the input's shape: axis 0 of a scalar was a panic.
        let x = Tensor::from_vec(vec![], vec![2.0f32]).unwrap();
        let op = Mvn { axes: vec![0] };
        assert!(op.run(&[Some(&x)], &Ctx::default()).is_err());
    }

    fn special() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => -20.0f32..20.0,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(-0.0f32),
            1 => Just(1e-40f32),
        ]
    }

    /// `seed` with every NaN and infinity replaced by an ordinary value when
    /// `finite_only`. A row of a few dozen [`special`] values nearly always holds one,
    /// and then the whole row's softmax or normalization is NaN, whatever the kernel
    /// did with the others: half the cases draw finite rows.
    fn finite_if(finite_only: bool, mut seed: Vec<f32>) -> Vec<f32> {
        if finite_only {
            for (i, v) in seed.iter_mut().enumerate() {
                if !v.is_finite() {
                    *v = (i % 37) as f32 * 0.5 - 9.0;
                }
            }
        }
        seed
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let mut t = t.clone();
        t.canonicalize_nans();
        t.as_slice::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// RMSNormalization gives, on 1–4 threads, the bits of its definition: per row
        /// `rms = sqrt(sequential sum of x·x / n + ε)`, `y = (x / rms) · scale`, with
        /// the scale over the normalized dimensions or broadcast from a leading one.
        #[test]
        fn rms_norm_equals_the_scalar_definition(
            a in 1usize..4,
            b in 1usize..5,
            c in 1usize..9,
            axis in 0usize..3,
            per_row in any::<bool>(),
            seed in prop::collection::vec(special(), 100),
            params in prop::collection::vec(-4.0f32..4.0, 40),
            finite_only in any::<bool>(),
        ) {
            let seed = finite_if(finite_only, seed);
            let shape = [a, b, c];
            let n = a * b * c;
            let xs: Vec<f32> = seed.iter().copied().cycle().take(n).collect();
            let len: usize = shape[axis..].iter().product();
            // Per row: the normalized dimensions; else [1, c], broadcast over the
            // first two dimensions.
            let s_shape: Vec<usize> = if per_row { shape[axis..].to_vec() } else { vec![1, c] };
            let s_len: usize = s_shape.iter().product();
            let sv: Vec<f32> = params.iter().copied().cycle().take(s_len).collect();
            let x = Tensor::from_vec(shape.to_vec(), xs.clone()).unwrap();
            let scale = Tensor::from_vec(s_shape.clone(), sv.clone()).unwrap();
            let eps = 1e-5f32;
            let want: Vec<u32> = (0..n)
                .map(|i| {
                    let r = i / len;
                    let row = &xs[r * len..(r + 1) * len];
                    let ss = row.iter().fold(0.0f32, |acc, &v| acc + v * v);
                    let rms = (ss / len as f32 + eps).sqrt();
                    let g = if per_row { sv[i % len] } else { sv[i % c] };
                    let y = xs[i] / rms * g;
                    if y.is_nan() { f32::NAN.to_bits() } else { y.to_bits() }
                })
                .collect();
            let op = RmsNorm { axis: axis as i64, eps };
            for t in 1..=4 {
                for mode in [KernelMode::Fast, KernelMode::Reference] {
                    // The output may take the buffer of a dead intermediate.
                    crate::scratch::leave_stale_f32(n);
                    let got = op.run(&[Some(&x), Some(&scale)], &Ctx::new(mode, t)).unwrap();
                    prop_assert_eq!(bits(&got[0]), want.clone());
                }
            }
        }
    }

    fn batch_norm_node(outputs: usize) -> Result<Box<dyn Op>, OpError> {
        let attrs = crate::attrs::Attrs(
            [
                ("training_mode", crate::attrs::Attr::Int(1)),
                ("epsilon", crate::attrs::Attr::Float(0.5)),
                ("momentum", crate::attrs::Attr::Float(0.5)),
            ]
            .into_iter()
            .map(|(k, a)| (k.to_string(), a))
            .collect(),
        );
        build_batch_norm(&NodeInfo {
            name: "bn",
            op_type: "BatchNormalization",
            domain: "",
            opset: 15,
            attrs: &attrs,
            num_inputs: 5,
            num_outputs: outputs,
        })
    }

    #[test]
    fn training_dropout_is_the_identity_at_ratio_zero_only() {
        let x = Tensor::from_vec(vec![2], vec![1.5f32, -2.0]).unwrap();
        let on = Tensor::scalar(true);
        let off = Tensor::scalar(false);
        let zero = Tensor::scalar(-0.0f32);
        let half = Tensor::scalar(0.5f32);
        let ctx = Ctx::new(KernelMode::Reference, 1);
        let out = Dropout
            .run(&[Some(&x), Some(&zero), Some(&on)], &ctx)
            .unwrap();
        assert_eq!(out[0], x);
        assert_eq!(out[1].as_slice::<bool>().unwrap(), &[true, true]);
        let refused = |r: Result<Vec<Tensor>, OpError>| {
            r.unwrap_err().to_string().contains("ratio other than 0")
        };
        assert!(refused(
            Dropout.run(&[Some(&x), Some(&half), Some(&on)], &ctx)
        ));
        // Training without a ratio means 0.5.
        assert!(refused(Dropout.run(&[Some(&x), None, Some(&on)], &ctx)));
        // Not training: any ratio.
        assert!(Dropout
            .run(&[Some(&x), Some(&half), Some(&off)], &ctx)
            .is_ok());
        // While planning, training mode needs the ratio's value.
        let tys = [TypeInfo::of(&x), TypeInfo::of(&half), TypeInfo::of(&on)];
        let plan = |ratio: Option<&Tensor>| {
            Dropout.infer(&[
                Some(InferInput {
                    ty: &tys[0],
                    value: None,
                }),
                Some(InferInput {
                    ty: &tys[1],
                    value: ratio,
                }),
                Some(InferInput {
                    ty: &tys[2],
                    value: Some(&on),
                }),
            ])
        };
        assert!(matches!(plan(None), Err(OpError::ValueNeeded { index: 1 })));
        assert!(plan(Some(&zero)).is_ok());
        assert!(matches!(
            plan(Some(&half)),
            Err(OpError::Unsupported { .. })
        ));
    }

    #[test]
    fn bf16_softmax_rounds_every_step_and_every_addition() {
        // exp(−6) ≈ 0.00248 is below half a bf16 ulp of 1 (2⁻⁸): each addition to the
        // running sum 1 rounds back to 1, so y₀ = 1 / 1 exactly; a sum kept in f32
        // (1.0099) would round to 1.0078 and give y₀ < 1.
        let bf = |v: &[f32]| {
            v.iter()
                .map(|&x| half::bf16::from_f32(x))
                .collect::<Vec<_>>()
        };
        let x = Tensor::from_vec(vec![1, 5], bf(&[0.0, -6.0, -6.0, -6.0, -6.0])).unwrap();
        let soft = |kind| Softmax {
            kind,
            axis: -1,
            coerce_2d: false,
        };
        for mode in [KernelMode::Fast, KernelMode::Reference] {
            let y = soft(SoftKind::Softmax)
                .run(&[Some(&x)], &Ctx::new(mode, 1))
                .unwrap()
                .remove(0);
            let y = y.as_slice::<half::bf16>().unwrap();
            assert_eq!(y[0].to_f32(), 1.0);
            let e = half::bf16::from_f32(exp_f32(-6.0));
            assert_eq!(y[1], e);
            // LogSoftmax: ln(1) = 0, so y = x − m exactly.
            let y = soft(SoftKind::LogSoftmax)
                .run(&[Some(&x)], &Ctx::new(mode, 1))
                .unwrap()
                .remove(0);
            assert_eq!(
                y.as_slice::<half::bf16>().unwrap(),
                x.as_slice::<half::bf16>().unwrap()
            );
        }
        let ty = TypeInfo::of(&x);
        let ins = [Some(InferInput {
            ty: &ty,
            value: None,
        })];
        assert_eq!(
            soft(SoftKind::Softmax).infer(&ins).unwrap(),
            vec![ty.clone()]
        );
        // The other normalizations still refuse bf16.
        let lp = LpNorm { axis: -1, p: 2 };
        assert!(matches!(
            lp.infer(&ins),
            Err(OpError::DType { index: 0, .. })
        ));
    }

    #[test]
    fn batch_norm_training_uses_the_batch_statistics() {
        let op = batch_norm_node(3).unwrap();
        // N = 2, C = 1, two points each: mean 12/4 = 3, var (4 + 1 + 0 + 9)/4 = 3.5;
        // a = 2 / sqrt(3.5 + 0.5) = 1, y = (x − 3)·1 + 1.
        let x = Tensor::from_vec(vec![2, 1, 2], vec![1.0f32, 2.0, 3.0, 6.0]).unwrap();
        let one = |v: f32| Tensor::from_vec(vec![1], vec![v]).unwrap();
        let one64 = |v: f64| Tensor::from_vec(vec![1], vec![v]).unwrap();
        let (s, b) = (one(2.0), one(1.0));
        let (m, v) = (one64(1.0), one64(0.5));
        let ins = [Some(&x), Some(&s), Some(&b), Some(&m), Some(&v)];
        for mode in [KernelMode::Fast, KernelMode::Reference] {
            let out = op.run(&ins, &Ctx::new(mode, 2)).unwrap();
            assert_eq!(out[0].as_slice::<f32>().unwrap(), &[-1.0, 0.0, 1.0, 4.0]);
            // running = given·0.5 + batch·0.5, in the statistics' own dtype (f64).
            assert_eq!(out[1].as_slice::<f64>().unwrap(), &[2.0]);
            assert_eq!(out[2].as_slice::<f64>().unwrap(), &[2.0]);
        }
        let tys: Vec<TypeInfo> = ins.iter().map(|t| TypeInfo::of(t.unwrap())).collect();
        let infer_ins: Vec<_> = tys
            .iter()
            .map(|ty| Some(InferInput { ty, value: None }))
            .collect();
        let types = op.infer(&infer_ins).unwrap();
        assert_eq!(types[2], TypeInfo::new(DType::F64, vec![1]));
        // One output: Y only.
        let out = batch_norm_node(1).unwrap();
        assert_eq!(out.infer(&infer_ins).unwrap().len(), 1);
        let out = out.run(&ins, &Ctx::new(KernelMode::Fast, 1)).unwrap();
        assert_eq!(out.len(), 1);
        // An empty batch has NaN statistics.
        let e = Tensor::from_vec(vec![0, 1, 2], Vec::<f32>::new()).unwrap();
        let out = op
            .run(
                &[Some(&e), Some(&s), Some(&b), Some(&m), Some(&v)],
                &Ctx::new(KernelMode::Reference, 1),
            )
            .unwrap();
        assert_eq!(out[0].len(), 0);
        assert!(out[1].as_slice::<f64>().unwrap()[0].is_nan());
    }

    #[test]
    fn batch_norm_training_refusals() {
        assert!(batch_norm_node(4)
            .unwrap_err()
            .to_string()
            .contains("at most 3 outputs"));
        let op = batch_norm_node(3).unwrap();
        let x = Tensor::from_vec(vec![1, 2, 1], vec![1.0f32, 2.0]).unwrap();
        let two = Tensor::from_vec(vec![2], vec![1.0f32, 1.0]).unwrap();
        let three = Tensor::from_vec(vec![3], vec![1.0f32; 3]).unwrap();
        let ctx = Ctx::new(KernelMode::Fast, 1);
        let err = op
            .run(
                &[Some(&x), Some(&two), Some(&two), Some(&three), Some(&two)],
                &ctx,
            )
            .unwrap_err();
        assert!(err.to_string().contains("C elements"), "{err}");
        let xi = Tensor::from_vec(vec![1, 2, 1], vec![1i32, 2]).unwrap();
        let err = op
            .run(
                &[Some(&xi), Some(&two), Some(&two), Some(&two), Some(&two)],
                &ctx,
            )
            .unwrap_err();
        assert!(matches!(err, OpError::DType { index: 0, .. }));
        let ty = |t: &Tensor| TypeInfo::of(t);
        let tys = [ty(&x), ty(&two), ty(&two), ty(&three), ty(&two)];
        let ins: Vec<_> = tys
            .iter()
            .map(|ty| Some(InferInput { ty, value: None }))
            .collect();
        assert!(op
            .infer(&ins)
            .unwrap_err()
            .to_string()
            .contains("parameter 3"));
    }

    #[test]
    fn rms_norm_refuses_a_scale_that_does_not_broadcast() {
        let x = Tensor::from_vec(vec![2, 3], vec![1.0f32; 6]).unwrap();
        let scale = Tensor::from_vec(vec![2], vec![1.0f32; 2]).unwrap();
        let op = RmsNorm {
            axis: -1,
            eps: 1e-5,
        };
        let err = op
            .run(&[Some(&x), Some(&scale)], &Ctx::new(KernelMode::Fast, 1))
            .unwrap_err();
        assert!(err.to_string().contains("broadcast"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Softmax and LogSoftmax over any axis of a rank 1–4 input (one axis from
        /// opset 13; flattened at the axis before), fast at 1–4 threads and reference,
        /// against the definition computed here from the shape alone: per row along
        /// the axis, `m` = the NaN-propagating maximum, `e = exp(x − m)`, `s` = the
        /// sequential sum of `e`, then `e / s` or `(x − m) − ln(s)`.
        #[test]
        fn softmax_family_equals_its_definition(
            shape in prop::collection::vec(1usize..6, 1..=4),
            axis_pick in any::<prop::sample::Index>(),
            (log, coerce_2d, finite_only) in (any::<bool>(), any::<bool>(), any::<bool>()),
            seed in prop::collection::vec(special(), 1296),
        ) {
            let seed = finite_if(finite_only, seed);
            let rank = shape.len();
            let axis = axis_pick.index(rank);
            let n: usize = shape.iter().product();
            let xs = seed[..n].to_vec();
            // Rows: `len` values `inner` apart, `outer` blocks of `len · inner`.
            let outer: usize = shape[..axis].iter().product();
            let (len, inner) = if coerce_2d {
                (shape[axis..].iter().product::<usize>(), 1)
            } else {
                (shape[axis], shape[axis + 1..].iter().product::<usize>())
            };
            let mut want = vec![0.0f32; n];
            for o in 0..outer {
                for i in 0..inner {
                    let at = |k: usize| (o * len + k) * inner + i;
                    let row: Vec<f32> = (0..len).map(|k| xs[at(k)]).collect();
                    let m = if row.iter().any(|v| v.is_nan()) {
                        f32::NAN
                    } else {
                        row.iter().fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a })
                    };
                    let e: Vec<f32> = row.iter().map(|&v| exp_f32(v - m)).collect();
                    let sum = e.iter().fold(0.0f32, |a, &v| a + v);
                    for k in 0..len {
                        want[at(k)] = if log { (row[k] - m) - ln_f32(sum) } else { e[k] / sum };
                    }
                }
            }
            let want = bits(&Tensor::from_vec(shape.clone(), want).unwrap());
            let kind = if log { SoftKind::LogSoftmax } else { SoftKind::Softmax };
            let op = Softmax { kind, axis: axis as i64 - rank as i64 * i64::from(axis % 2 == 1), coerce_2d };
            let x = Tensor::from_vec(shape, xs).unwrap();
            let runs = [(KernelMode::Reference, 1), (KernelMode::Fast, 1), (KernelMode::Fast, 2), (KernelMode::Fast, 3), (KernelMode::Fast, 4)];
            for (mode, threads) in runs {
                crate::scratch::leave_stale_f32(n);
                let got = op.run(&[Some(&x)], &Ctx::new(mode, threads)).unwrap();
                prop_assert_eq!(&bits(&got[0]), &want, "{:?} at {} threads", mode, threads);
            }
        }

        /// LayerNormalization over any axis of a rank 1–4 input, with and without a
        /// bias, fast at 1–4 threads and reference, against the definition computed
        /// here from the shape alone: per row (the dimensions from the axis on) `mean`
        /// = sequential sum / n, `var` = the fma sum of `(x − mean)²` / n, `inv = 1 /
        /// sqrt(var + ε)`, `y = ((x − mean) · inv) · scale + bias`; `Mean` and
        /// `InvStdDev` are `mean` and `inv`.
        #[test]
        fn layer_norm_equals_its_definition(
            shape in prop::collection::vec(1usize..6, 1..=4),
            axis_pick in any::<prop::sample::Index>(),
            (with_bias, finite_only) in (any::<bool>(), any::<bool>()),
            seed in prop::collection::vec(special(), 1296),
            params in prop::collection::vec(-4.0f32..4.0, 2 * 1296),
        ) {
            let seed = finite_if(finite_only, seed);
            let rank = shape.len();
            let axis = axis_pick.index(rank);
            let n: usize = shape.iter().product();
            let len: usize = shape[axis..].iter().product();
            let xs = seed[..n].to_vec();
            let (scale, bias) = (params[..len].to_vec(), params[1296..1296 + len].to_vec());
            let eps = 1e-5f32;
            let (mut want, mut means, mut invs) = (Vec::new(), Vec::new(), Vec::new());
            for row in xs.chunks(len) {
                let mean = row.iter().fold(0.0f32, |a, &v| a + v) / len as f32;
                let var = row.iter().fold(0.0f32, |a, &v| (v - mean).mul_add(v - mean, a)) / len as f32;
                let inv = 1.0 / (var + eps).sqrt();
                for (k, &v) in row.iter().enumerate() {
                    let y = ((v - mean) * inv) * scale[k];
                    want.push(if with_bias { y + bias[k] } else { y });
                }
                means.push(mean);
                invs.push(inv);
            }
            let mut stat_shape = shape.clone();
            stat_shape[axis..].fill(1);
            let t = |s: &[usize], v: Vec<f32>| Tensor::from_vec(s.to_vec(), v).unwrap();
            let want = [bits(&t(&shape, want)), bits(&t(&stat_shape, means)), bits(&t(&stat_shape, invs))];
            let op = LayerNorm { axis: axis as i64 - rank as i64 * i64::from(axis % 2 == 1), eps };
            let x = t(&shape, xs);
            let g = t(&shape[axis..], scale);
            let b = t(&shape[axis..], bias);
            let mut ins = vec![Some(&x), Some(&g)];
            if with_bias {
                ins.push(Some(&b));
            }
            let runs = [(KernelMode::Reference, 1), (KernelMode::Fast, 1), (KernelMode::Fast, 2), (KernelMode::Fast, 3), (KernelMode::Fast, 4)];
            for (mode, threads) in runs {
                crate::scratch::leave_stale_f32(n);
                let got = op.run(&ins, &Ctx::new(mode, threads)).unwrap();
                for (i, w) in want.iter().enumerate() {
                    prop_assert_eq!(&bits(&got[i]), w, "output {} {:?} at {} threads", i, mode, threads);
                }
            }
        }

        /// Rows are split across threads and reduced several at a time; no bit may
        /// depend on either.
        #[test]
        fn row_ops_do_not_depend_on_threads(
            rows in 1usize..21, len in 1usize..40,
            seed in prop::collection::vec(special(), 840), finite_only in any::<bool>(),
        ) {
            let seed = finite_if(finite_only, seed);
            let n = rows * len;
            let x = Tensor::from_vec(vec![rows, len], seed[..n].to_vec()).unwrap();
            let scale = Tensor::from_vec(vec![len], seed[n % 200..n % 200 + len].iter().map(|v| if v.is_finite() { *v } else { 1.0 }).collect::<Vec<f32>>()).unwrap();
            let soft = Softmax { kind: SoftKind::Softmax, axis: -1, coerce_2d: false };
            let logsoft = Softmax { kind: SoftKind::LogSoftmax, axis: -1, coerce_2d: false };
            let ln = LayerNorm { axis: -1, eps: 1e-5 };
            let base = Ctx::new(KernelMode::Reference, 1);
            let want_s = bits(&soft.run(&[Some(&x)], &base).unwrap()[0]);
            let want_l = bits(&logsoft.run(&[Some(&x)], &base).unwrap()[0]);
            let want_n = bits(&ln.run(&[Some(&x), Some(&scale)], &base).unwrap()[0]);
            for t in 1..=4 {
                let ctx = Ctx::new(KernelMode::Fast, t);
                // Outputs may take the buffers of dead intermediates.
                crate::scratch::leave_stale_f32(n);
                prop_assert_eq!(&bits(&soft.run(&[Some(&x)], &ctx).unwrap()[0]), &want_s);
                crate::scratch::leave_stale_f32(n);
                prop_assert_eq!(&bits(&logsoft.run(&[Some(&x)], &ctx).unwrap()[0]), &want_l);
                crate::scratch::leave_stale_f32(n);
                prop_assert_eq!(&bits(&ln.run(&[Some(&x), Some(&scale)], &ctx).unwrap()[0]), &want_n);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// BatchNormalization's vectorized planes, split over 1–4 threads, give the
        /// bits of the per-element definition: `(x − mean) · a + b` with
        /// `a = scale / sqrt(var + eps)`, three roundings, NaN canonical.
        #[test]
        fn batch_norm_equals_the_scalar_definition(
            n in 1usize..3,
            c in 1usize..6,
            // Large planes too: from PAR_MIN elements the planes are split over threads.
            sp in prop_oneof![1usize..70, 30_000usize..40_000],
            seed in prop::collection::vec(special(), 900),
            params in prop::collection::vec(-4.0f32..4.0, 24),
        ) {
            let len = n * c * sp;
            let xs: Vec<f32> = seed.iter().copied().cycle().take(len).collect();
            let x = Tensor::from_vec(vec![n, c, sp], xs.clone()).unwrap();
            let p = |k: usize| Tensor::from_vec(vec![c], params[k * 6..k * 6 + c].to_vec()).unwrap();
            let (scale, bias, mean) = (p(0), p(1), p(2));
            let var = Tensor::from_vec(vec![c], params[18..18 + c].iter().map(|v| v.abs()).collect::<Vec<f32>>()).unwrap();
            let eps = 1e-5f32;
            let f = |t: &Tensor| t.as_slice::<f32>().unwrap().to_vec();
            let (s, b, m, v) = (f(&scale), f(&bias), f(&mean), f(&var));
            let want: Vec<u32> = xs
                .iter()
                .enumerate()
                .map(|(i, &xv)| {
                    let ch = (i / sp) % c;
                    let a = s[ch] / (v[ch] + eps).sqrt();
                    let y = (xv - m[ch]) * a + b[ch];
                    if y.is_nan() { f32::NAN.to_bits() } else { y.to_bits() }
                })
                .collect();
            let op = BatchNorm { eps };
            let ins = [Some(&x), Some(&scale), Some(&bias), Some(&mean), Some(&var)];
            for t in 1..=4 {
                for mode in [KernelMode::Fast, KernelMode::Reference] {
                    let got = op.run(&ins, &Ctx::new(mode, t)).unwrap();
                    prop_assert_eq!(&bits(&got[0]), &want, "threads {}", t);
                }
            }
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_handle_extremes() {
        let x =
            Tensor::from_vec(vec![2, 3], vec![1.0f32, 2.0, 3.0, 1000.0, 1000.0, -1000.0]).unwrap();
        let soft = Softmax {
            kind: SoftKind::Softmax,
            axis: -1,
            coerce_2d: false,
        };
        let y = soft.run(&[Some(&x)], &Ctx::default()).unwrap().remove(0);
        let v = y.as_slice::<f32>().unwrap();
        assert!((v[0] + v[1] + v[2] - 1.0).abs() < 1e-6);
        assert_eq!(v[3], 0.5);
        assert_eq!(v[5], 0.0);
    }

    /// f16 softmax rounds every step of the ONNX function body to f16, which is how
    /// the ONNX reference (numpy on float16 arrays) computes it.
    #[test]
    fn f16_softmax_rounds_each_step() {
        use half::f16;
        let vals = [0.3f32, 1.7, -2.25, 0.9, 0.0, 3.1];
        let h: Vec<f16> = vals.iter().map(|&v| f16::from_f32(v)).collect();
        let x = Tensor::new(vec![1, 6], TensorData::F16(h.clone())).unwrap();
        let q = |v: f32| f16::from_f32(v).to_f32();
        let m = h
            .iter()
            .map(|v| v.to_f32())
            .fold(f32::NEG_INFINITY, f32::max);
        let d: Vec<f32> = h.iter().map(|v| q(v.to_f32() - m)).collect();
        let e: Vec<f32> = d.iter().map(|&v| q(exp_f32(v))).collect();
        let s = q(e.iter().fold(0.0f32, |a, &v| a + v));
        let ls = q(ln_f32(s));
        for (kind, want) in [
            (
                SoftKind::Softmax,
                e.iter().map(|&v| f16::from_f32(v / s)).collect::<Vec<_>>(),
            ),
            (
                SoftKind::LogSoftmax,
                d.iter().map(|&v| f16::from_f32(v - ls)).collect(),
            ),
        ] {
            let op = Softmax {
                kind,
                axis: -1,
                coerce_2d: false,
            };
            let y = op.run(&[Some(&x)], &Ctx::default()).unwrap().remove(0);
            match y.data() {
                TensorData::F16(got) => assert_eq!(got, &want, "{kind:?}"),
                other => panic!("{:?}", other.dtype()),
            }
        }
    }

    #[test]
    fn batchnorm_rejects_wrong_parameter_shape() {
        let bn = BatchNorm { eps: 1e-5 };
        let ty = TypeInfo::new(DType::F32, vec![1, 3, 2, 2]);
        let p3 = TypeInfo::new(DType::F32, vec![3]);
        let p2 = TypeInfo::new(DType::F32, vec![2]);
        let i = |t| Some(InferInput { ty: t, value: None });
        assert!(bn.infer(&[i(&ty), i(&p3), i(&p3), i(&p3), i(&p3)]).is_ok());
        assert!(bn.infer(&[i(&ty), i(&p3), i(&p2), i(&p3), i(&p3)]).is_err());
    }
}
