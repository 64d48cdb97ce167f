//! Indexing operators: `Slice`, `Gather`, `GatherElements`, `GatherND`,
//! `ScatterElements`, `Scatter`, `ScatterND`, `OneHot`, `TopK`, `Compress`, `NonZero`,
//! `ReverseSequence`, `Trilu` and `EyeLike`.
//!
//! Index inputs follow one rule everywhere: an index `i` into a dimension of size `d`
//! is valid when `-d <= i < d`; a negative index wraps once (`i + d`); anything else is
//! an [`OpError::Value`] naming the index and the dimension (never a panic, never a
//! clamp). `OneHot` is the exception the ONNX spec makes: out-of-range indices give an
//! all-`off` row. Semantics: `docs/canonical-semantics.md`.

use std::cmp::Ordering;

use deed_types::tensor::Element;
use deed_types::{with_data, DType, Tensor, TensorData};
use half::{bf16, f16};

use super::shape::{
    axis_of, first_like, ints_of, known_ints, remap, run_ints, scalar_from_f64, strided_tables,
    tensor, wrap, FILL,
};
use super::util::{infer_input, input, need_value, numel, one, strides};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

pub(crate) fn register(r: &mut Registry) {
    r.add("Slice", build_slice);
    r.add("Gather", build_gather);
    r.add("GatherElements", build_gather_elements);
    r.add("GatherND", build_gather_nd);
    r.add("ScatterElements", build_scatter_elements);
    r.add("Scatter", build_scatter_elements);
    r.add("ScatterND", build_scatter_nd);
    r.add("OneHot", build_one_hot);
    r.add("TopK", build_top_k);
    r.add("Compress", build_compress);
    r.add("NonZero", |_| Ok(Box::new(NonZero)));
    r.add("ReverseSequence", build_reverse_sequence);
    r.add("Trilu", build_trilu);
    r.add("EyeLike", build_eye_like);
}

/// Resolves index `i` against a dimension of size `d` (one wrap for negatives).
fn wrap_index(i: i64, d: usize) -> Result<usize, OpError> {
    let dd = d as i64;
    let j = if i < 0 { i + dd } else { i };
    if j < 0 || j >= dd {
        return Err(OpError::value(format!(
            "index {i} is out of range for a dimension of size {d}"
        )));
    }
    Ok(j as usize)
}

/// Copies `src[idx[k]]` for each `k`; [`FILL`] entries take `fill` (or the dtype's
/// zero).
fn take(src: &TensorData, idx: &[usize], fill: Option<&TensorData>) -> TensorData {
    fn go<T: Element + Default>(v: &[T], idx: &[usize], fill: Option<&TensorData>) -> Vec<T> {
        let f = fill.and_then(|f| first_like(v, f)).unwrap_or_default();
        idx.iter()
            .map(|&i| match v.get(i) {
                Some(x) if i != FILL => x.clone(),
                _ => f.clone(),
            })
            .collect()
    }
    with_data!(src, v => wrap(go(v, idx, fill)))
}

/// Copies, for each block start `b`, the `inner` elements `src[b..b + inner]`.
fn take_blocks(src: &TensorData, starts: &[usize], inner: usize) -> TensorData {
    fn go<T: Clone>(v: &[T], starts: &[usize], inner: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(starts.len() * inner);
        for &b in starts {
            if let Some(s) = v.get(b..b + inner) {
                out.extend_from_slice(s);
            }
        }
        out
    }
    with_data!(src, v => wrap(go(v, starts, inner)))
}

/// Reads any numeric or bool tensor as `i64` (floats truncate toward zero, saturating).
fn numbers_i64(t: &Tensor, index: usize) -> Result<Vec<i64>, OpError> {
    Ok(match t.data() {
        TensorData::I64(v) => v.clone(),
        TensorData::I32(v) => v.iter().map(|&x| x as i64).collect(),
        TensorData::I16(v) => v.iter().map(|&x| x as i64).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x as i64).collect(),
        TensorData::U8(v) => v.iter().map(|&x| x as i64).collect(),
        TensorData::U16(v) => v.iter().map(|&x| x as i64).collect(),
        TensorData::U32(v) => v.iter().map(|&x| x as i64).collect(),
        TensorData::U64(v) => v.iter().map(|&x| x.min(i64::MAX as u64) as i64).collect(),
        TensorData::F32(v) => v.iter().map(|&x| x as i64).collect(),
        TensorData::F64(v) => v.iter().map(|&x| x as i64).collect(),
        TensorData::F16(v) => v.iter().map(|&x| x.to_f32() as i64).collect(),
        TensorData::BF16(v) => v.iter().map(|&x| x.to_f32() as i64).collect(),
        TensorData::Bool(v) => v.iter().map(|&x| x as i64).collect(),
        // Strings and the low-bit storage types are not indices.
        _ => {
            return Err(OpError::DType {
                index,
                dtype: t.dtype(),
            })
        }
    })
}

// ---------------------------------------------------------------------------------
// Slice
// ---------------------------------------------------------------------------------

/// Slice attributes before opset 10: (starts, ends, axes).
type SliceAttrs = (Vec<i64>, Vec<i64>, Option<Vec<i64>>);
/// Slice arguments: (starts, ends, axes, steps).
type SliceArgs = (Vec<i64>, Vec<i64>, Option<Vec<i64>>, Option<Vec<i64>>);
/// Per-axis (start, step, length).
type SlicePlan = (Vec<usize>, Vec<i64>, Vec<usize>);

#[derive(Debug)]
struct Slice {
    attrs: Option<SliceAttrs>,
}

fn build_slice(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let attrs = if n.opset < 10 {
        let req = |name: &str| {
            n.attrs.ints(name)?.ok_or(OpError::MissingAttribute {
                name: name.to_owned(),
            })
        };
        Some((req("starts")?, req("ends")?, n.attrs.ints("axes")?))
    } else {
        None
    };
    Ok(Box::new(Slice { attrs }))
}

/// Per-axis (start, step, length) of a slice, with ONNX's clamping.
pub(crate) fn slice_plan(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<SlicePlan, OpError> {
    let rank = shape.len();
    let k = starts.len();
    if ends.len() != k || axes.is_some_and(|a| a.len() != k) || steps.is_some_and(|s| s.len() != k)
    {
        return Err(OpError::value(
            "Slice starts, ends, axes and steps must have the same length",
        ));
    }
    let mut start = vec![0usize; rank];
    let mut step = vec![1i64; rank];
    let mut len = shape.to_vec();
    let mut seen = vec![false; rank];
    for i in 0..k {
        let a = match axes {
            Some(ax) => axis_of(ax[i], rank)?,
            None if i < rank => i,
            None => return Err(OpError::value("Slice has more starts than axes")),
        };
        if seen[a] {
            return Err(OpError::value(format!("Slice axis {a} is repeated")));
        }
        seen[a] = true;
        let st = steps.map_or(1, |s| s[i]);
        if st == 0 {
            return Err(OpError::value("Slice step is 0"));
        }
        let d = shape[a] as i128;
        let (mut s, mut e) = (starts[i] as i128, ends[i] as i128);
        if s < 0 {
            s += d;
        }
        if e < 0 {
            e += d;
        }
        let st128 = st as i128;
        let (s, n) = if d == 0 {
            (0, 0)
        } else if st > 0 {
            s = s.clamp(0, d);
            e = e.clamp(0, d);
            (s, ((e - s + st128 - 1) / st128).max(0))
        } else {
            s = s.clamp(0, d - 1);
            e = e.clamp(-1, d - 1);
            (s, ((s - e - st128 - 1) / -st128).max(0))
        };
        start[a] = s as usize;
        step[a] = st;
        len[a] = n as usize;
    }
    Ok((start, step, len))
}

impl Slice {
    fn params(
        &self,
        ints: impl Fn(usize) -> Result<Option<Vec<i64>>, OpError>,
    ) -> Result<SliceArgs, OpError> {
        match &self.attrs {
            Some((s, e, a)) => Ok((s.clone(), e.clone(), a.clone(), None)),
            None => Ok((
                ints(1)?.ok_or(OpError::MissingInput { index: 1 })?,
                ints(2)?.ok_or(OpError::MissingInput { index: 2 })?,
                ints(3)?,
                ints(4)?,
            )),
        }
    }
}

impl Op for Slice {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let (s, e, a, st) = self.params(|i| known_ints(inputs, i))?;
        let (_, _, len) = slice_plan(&x.ty.shape, &s, &e, a.as_deref(), st.as_deref())?;
        one(x.ty.dtype, len)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (s, e, a, st) = self.params(|i| run_ints(inputs, i))?;
        let (start, step, len) = slice_plan(x.shape(), &s, &e, a.as_deref(), st.as_deref())?;
        let tables = strided_tables(x.shape(), &start, &step, &len);
        Ok(vec![tensor(len, remap(x.data(), &tables, None, ctx))?])
    }
    fn cost(&self, _: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        outputs.iter().map(|t| t.numel()).sum::<u64>().max(1)
    }
}

// ---------------------------------------------------------------------------------
// Gather / GatherElements / GatherND
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Gather {
    axis: i64,
}

fn build_gather(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Gather {
        axis: n.attrs.int("axis", 0)?,
    }))
}

fn check_index_dtype(t: &TypeInfo, index: usize) -> Result<(), OpError> {
    super::util::check_dtype(index, t.dtype, &[DType::I64, DType::I32])
}

impl Gather {
    fn shape(&self, s: &[usize], q: &[usize]) -> Result<(usize, Vec<usize>), OpError> {
        if s.is_empty() {
            return Err(OpError::shape("Gather data must have rank 1 or more"));
        }
        let a = axis_of(self.axis, s.len())?;
        let mut out = s[..a].to_vec();
        out.extend_from_slice(q);
        out.extend_from_slice(&s[a + 1..]);
        Ok((a, out))
    }
}

impl Op for Gather {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let i = infer_input(inputs, 1)?;
        check_index_dtype(i.ty, 1)?;
        one(x.ty.dtype, self.shape(&x.ty.shape, &i.ty.shape)?.1)
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let it = input(inputs, 1)?;
        let (a, out) = self.shape(x.shape(), it.shape())?;
        let d = x.shape()[a];
        let idx = ints_of(it, 1)?
            .into_iter()
            .map(|i| wrap_index(i, d))
            .collect::<Result<Vec<_>, _>>()?;
        let outer: usize = x.shape()[..a].iter().product();
        let inner: usize = x.shape()[a + 1..].iter().product();
        let mut starts = Vec::with_capacity(outer * idx.len());
        for o in 0..outer {
            starts.extend(idx.iter().map(|&i| (o * d + i) * inner));
        }
        Ok(vec![tensor(out, take_blocks(x.data(), &starts, inner))?])
    }
}

#[derive(Debug)]
struct GatherElements {
    axis: i64,
}

fn build_gather_elements(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(GatherElements {
        axis: n.attrs.int("axis", 0)?,
    }))
}

/// For every element of an index tensor of shape `q` laid against data of shape `s`
/// along `axis`, the flat data offset it addresses (ScatterElements/GatherElements).
fn element_targets(
    s: &[usize],
    q: &[usize],
    axis: i64,
    idx: &[i64],
) -> Result<Vec<usize>, OpError> {
    let r = s.len();
    if q.len() != r || r == 0 {
        return Err(OpError::shape(format!(
            "indices {q:?} must have the same rank as data {s:?} (at least 1)"
        )));
    }
    let a = axis_of(axis, r)?;
    if q.iter()
        .zip(s)
        .enumerate()
        .any(|(d, (&qd, &sd))| d != a && qd > sd)
    {
        return Err(OpError::shape(format!(
            "indices {q:?} exceed data {s:?} outside axis {a}"
        )));
    }
    let st = strides(s);
    let mut coords = vec![0usize; r];
    let mut out = Vec::with_capacity(idx.len());
    for &i in idx {
        let mut off = wrap_index(i, s[a])? * st[a];
        for d in 0..r {
            if d != a {
                off += coords[d] * st[d];
            }
        }
        out.push(off);
        for d in (0..r).rev() {
            coords[d] += 1;
            if coords[d] < q[d] {
                break;
            }
            coords[d] = 0;
        }
    }
    Ok(out)
}

impl Op for GatherElements {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let i = infer_input(inputs, 1)?;
        check_index_dtype(i.ty, 1)?;
        if i.ty.shape.len() != x.ty.shape.len() {
            return Err(OpError::shape("indices must have the same rank as data"));
        }
        one(x.ty.dtype, i.ty.shape.clone())
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let it = input(inputs, 1)?;
        let targets = element_targets(x.shape(), it.shape(), self.axis, &ints_of(it, 1)?)?;
        Ok(vec![tensor(
            it.shape().to_vec(),
            take(x.data(), &targets, None),
        )?])
    }
}

#[derive(Debug)]
struct GatherNd {
    batch_dims: usize,
}

fn build_gather_nd(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let b = n.attrs.int("batch_dims", 0)?;
    if b < 0 {
        return Err(OpError::bad_attr("batch_dims", "must not be negative"));
    }
    Ok(Box::new(GatherNd {
        batch_dims: b as usize,
    }))
}

/// Shared shape logic of GatherND and ScatterND: returns (index depth m, prefix shape
/// of the tuples, inner slice shape).
fn nd_shapes(
    s: &[usize],
    q: &[usize],
    b: usize,
) -> Result<(usize, Vec<usize>, Vec<usize>), OpError> {
    let (r, qr) = (s.len(), q.len());
    if qr < 1 || r < 1 || b >= qr.min(r) + usize::from(b == 0) || b > r {
        return Err(OpError::shape(format!(
            "data {s:?} and indices {q:?} do not fit batch_dims {b}"
        )));
    }
    let m = q[qr - 1];
    if m < 1 || m + b > r {
        return Err(OpError::shape(format!(
            "index tuples of length {m} do not fit data {s:?} with batch_dims {b}"
        )));
    }
    if q[..b] != s[..b] {
        return Err(OpError::shape(format!(
            "batch dimensions of data {s:?} and indices {q:?} differ"
        )));
    }
    Ok((m, q[..qr - 1].to_vec(), s[b + m..].to_vec()))
}

/// Block start offsets addressed by every index tuple.
fn nd_starts(s: &[usize], q: &[usize], b: usize, idx: &[i64]) -> Result<Vec<usize>, OpError> {
    let (m, prefix, _) = nd_shapes(s, q, b)?;
    let st = strides(s);
    let batch_block: usize = s[b..].iter().product();
    let per_batch: usize = prefix[b..].iter().product();
    let tuples = idx.len().checked_div(m).unwrap_or(0);
    let mut out = Vec::with_capacity(tuples);
    for t in 0..tuples {
        let bi = t.checked_div(per_batch).unwrap_or(0);
        let mut off = bi * batch_block;
        for j in 0..m {
            off += wrap_index(idx[t * m + j], s[b + j])? * st[b + j];
        }
        out.push(off);
    }
    Ok(out)
}

impl Op for GatherNd {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let i = infer_input(inputs, 1)?;
        check_index_dtype(i.ty, 1)?;
        let (_, mut prefix, inner) = nd_shapes(&x.ty.shape, &i.ty.shape, self.batch_dims)?;
        prefix.extend(inner);
        one(x.ty.dtype, prefix)
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let it = input(inputs, 1)?;
        let (_, mut prefix, inner) = nd_shapes(x.shape(), it.shape(), self.batch_dims)?;
        let starts = nd_starts(x.shape(), it.shape(), self.batch_dims, &ints_of(it, 1)?)?;
        let n_inner = numel(&inner)?;
        prefix.extend(inner);
        Ok(vec![tensor(
            prefix,
            take_blocks(x.data(), &starts, n_inner),
        )?])
    }
}

// ---------------------------------------------------------------------------------
// ScatterElements / Scatter / ScatterND
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

fn reduction(n: &NodeInfo<'_>) -> Result<Reduction, OpError> {
    Ok(match n.attrs.string("reduction", "none")?.as_str() {
        "none" => Reduction::None,
        "add" => Reduction::Add,
        "mul" => Reduction::Mul,
        "max" => Reduction::Max,
        "min" => Reduction::Min,
        r => return Err(OpError::unsupported(format!("scatter reduction `{r}`"))),
    })
}

/// Element arithmetic for scatter reductions. Integers wrap; floats use IEEE `+`/`*`
/// with no fusion; `max`/`min` keep a NaN already present, else take a NaN update,
/// else replace only on strictly greater (less); f16/bf16 compute in f32 and round
/// once.
trait Reduce: Sized {
    fn add(a: &Self, b: &Self) -> Self;
    fn mul(a: &Self, b: &Self) -> Self;
    fn max(a: &Self, b: &Self) -> Self;
    fn min(a: &Self, b: &Self) -> Self;
}

macro_rules! reduce_int {
    ($($t:ty),*) => {$(
        impl Reduce for $t {
            fn add(a: &Self, b: &Self) -> Self { a.wrapping_add(*b) }
            fn mul(a: &Self, b: &Self) -> Self { a.wrapping_mul(*b) }
            fn max(a: &Self, b: &Self) -> Self { (*a).max(*b) }
            fn min(a: &Self, b: &Self) -> Self { (*a).min(*b) }
        }
    )*};
}
reduce_int!(i8, i16, i32, i64, u8, u16, u32, u64);

macro_rules! reduce_float {
    ($($t:ty),*) => {$(
        impl Reduce for $t {
            fn add(a: &Self, b: &Self) -> Self { a + b }
            fn mul(a: &Self, b: &Self) -> Self { a * b }
            fn max(a: &Self, b: &Self) -> Self {
                if a.is_nan() || (!b.is_nan() && *b <= *a) { *a } else { *b }
            }
            fn min(a: &Self, b: &Self) -> Self {
                if a.is_nan() || (!b.is_nan() && *b >= *a) { *a } else { *b }
            }
        }
    )*};
}
reduce_float!(f32, f64);

macro_rules! reduce_half {
    ($($t:ty),*) => {$(
        impl Reduce for $t {
            fn add(a: &Self, b: &Self) -> Self { <$t>::from_f32(a.to_f32() + b.to_f32()) }
            fn mul(a: &Self, b: &Self) -> Self { <$t>::from_f32(a.to_f32() * b.to_f32()) }
            fn max(a: &Self, b: &Self) -> Self {
                if <f32 as Reduce>::max(&a.to_f32(), &b.to_f32()).to_bits() == a.to_f32().to_bits() { *a } else { *b }
            }
            fn min(a: &Self, b: &Self) -> Self {
                if <f32 as Reduce>::min(&a.to_f32(), &b.to_f32()).to_bits() == a.to_f32().to_bits() { *a } else { *b }
            }
        }
    )*};
}
reduce_half!(f16, bf16);

fn reducer<T: Reduce>(r: Reduction) -> Option<fn(&T, &T) -> T> {
    match r {
        Reduction::None => None,
        Reduction::Add => Some(T::add),
        Reduction::Mul => Some(T::mul),
        Reduction::Max => Some(T::max),
        Reduction::Min => Some(T::min),
    }
}

/// Applies updates in row-major order of the updates tensor: with no reduction the
/// last write to a position wins; with one, `out[t] = f(out[t], u)` in that order.
fn apply<T: Clone>(out: &mut [T], targets: &[usize], updates: &[T], f: Option<fn(&T, &T) -> T>) {
    for (&t, u) in targets.iter().zip(updates) {
        if let Some(o) = out.get_mut(t) {
            *o = match f {
                None => u.clone(),
                Some(f) => f(o, u),
            };
        }
    }
}

fn scatter(
    data: &TensorData,
    updates: &TensorData,
    targets: &[usize],
    r: Reduction,
) -> Result<TensorData, OpError> {
    macro_rules! num {
        ($($v:ident),*) => {
            match (data, updates) {
                $((TensorData::$v(d), TensorData::$v(u)) => {
                    let mut o = d.clone();
                    apply(&mut o, targets, u, reducer(r));
                    TensorData::$v(o)
                })*
                (TensorData::Bool(d), TensorData::Bool(u)) if r == Reduction::None => {
                    let mut o = d.clone();
                    apply(&mut o, targets, u, None);
                    TensorData::Bool(o)
                }
                (TensorData::Str(d), TensorData::Str(u)) if r == Reduction::None => {
                    let mut o = d.clone();
                    apply(&mut o, targets, u, None);
                    TensorData::Str(o)
                }
                (d, u) if d.dtype() != u.dtype() => {
                    return Err(OpError::DTypeMismatch { expected: d.dtype(), actual: u.dtype() })
                }
                (d, _) => {
                    return Err(OpError::unsupported(format!(
                        "scatter reduction {r:?} on {}", d.dtype()
                    )))
                }
            }
        };
    }
    Ok(num!(
        F32, F64, F16, BF16, I8, I16, I32, I64, U8, U16, U32, U64
    ))
}

#[derive(Debug)]
struct ScatterElements {
    axis: i64,
    reduction: Reduction,
}

fn build_scatter_elements(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(ScatterElements {
        axis: n.attrs.int("axis", 0)?,
        reduction: reduction(n)?,
    }))
}

fn same_data_type(x: &TypeInfo, u: &TypeInfo) -> Result<(), OpError> {
    if x.dtype != u.dtype {
        return Err(OpError::DTypeMismatch {
            expected: x.dtype,
            actual: u.dtype,
        });
    }
    Ok(())
}

impl Op for ScatterElements {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let i = infer_input(inputs, 1)?;
        let u = infer_input(inputs, 2)?;
        check_index_dtype(i.ty, 1)?;
        same_data_type(x.ty, u.ty)?;
        if i.ty.shape != u.ty.shape || i.ty.shape.len() != x.ty.shape.len() {
            return Err(OpError::shape(format!(
                "indices {:?} and updates {:?} must have equal shapes of the data's rank",
                i.ty.shape, u.ty.shape
            )));
        }
        one(x.ty.dtype, x.ty.shape.clone())
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let it = input(inputs, 1)?;
        let u = input(inputs, 2)?;
        if it.shape() != u.shape() {
            return Err(OpError::shape("indices and updates shapes differ"));
        }
        let targets = element_targets(x.shape(), it.shape(), self.axis, &ints_of(it, 1)?)?;
        let out = scatter(x.data(), u.data(), &targets, self.reduction)?;
        Ok(vec![tensor(x.shape().to_vec(), out)?])
    }
}

#[derive(Debug)]
struct ScatterNd {
    reduction: Reduction,
}

fn build_scatter_nd(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(ScatterNd {
        reduction: reduction(n)?,
    }))
}

fn scatter_nd_check(s: &[usize], q: &[usize], u: &[usize]) -> Result<(), OpError> {
    let (_, mut prefix, inner) = nd_shapes(s, q, 0)?;
    prefix.extend(inner);
    if prefix != u {
        return Err(OpError::shape(format!(
            "ScatterND updates must have shape {prefix:?}, got {u:?}"
        )));
    }
    Ok(())
}

impl Op for ScatterNd {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let i = infer_input(inputs, 1)?;
        let u = infer_input(inputs, 2)?;
        check_index_dtype(i.ty, 1)?;
        same_data_type(x.ty, u.ty)?;
        scatter_nd_check(&x.ty.shape, &i.ty.shape, &u.ty.shape)?;
        one(x.ty.dtype, x.ty.shape.clone())
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let it = input(inputs, 1)?;
        let u = input(inputs, 2)?;
        scatter_nd_check(x.shape(), it.shape(), u.shape())?;
        let starts = nd_starts(x.shape(), it.shape(), 0, &ints_of(it, 1)?)?;
        let (_, _, inner) = nd_shapes(x.shape(), it.shape(), 0)?;
        let inner = numel(&inner)?;
        let targets: Vec<usize> = starts
            .iter()
            .flat_map(|&b| (0..inner).map(move |e| b + e))
            .collect();
        let out = scatter(x.data(), u.data(), &targets, self.reduction)?;
        Ok(vec![tensor(x.shape().to_vec(), out)?])
    }
}

// ---------------------------------------------------------------------------------
// OneHot
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct OneHot {
    axis: i64,
}

fn build_one_hot(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(OneHot {
        axis: n.attrs.int("axis", -1)?,
    }))
}

impl OneHot {
    fn shape(&self, q: &[usize], depth: &Tensor) -> Result<(usize, usize, Vec<usize>), OpError> {
        let d = numbers_i64(depth, 1)?;
        let [d] = d.as_slice() else {
            return Err(OpError::shape("OneHot depth must hold one value"));
        };
        if *d < 1 {
            return Err(OpError::value(format!("OneHot depth {d} is not positive")));
        }
        let d = *d as usize;
        let a = axis_of(self.axis, q.len() + 1)?;
        let mut out = q.to_vec();
        out.insert(a, d);
        Ok((a, d, out))
    }
}

impl Op for OneHot {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let i = infer_input(inputs, 0)?;
        let depth = need_value(infer_input(inputs, 1)?, 1)?;
        let v = infer_input(inputs, 2)?;
        if v.ty.numel() != 2 {
            return Err(OpError::shape("OneHot values must hold [off, on]"));
        }
        one(v.ty.dtype, self.shape(&i.ty.shape, depth)?.2)
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let it = input(inputs, 0)?;
        let (a, d, out) = self.shape(it.shape(), input(inputs, 1)?)?;
        let vals = input(inputs, 2)?;
        if vals.len() != 2 {
            return Err(OpError::shape("OneHot values must hold [off, on]"));
        }
        let idx = numbers_i64(it, 0)?;
        let outer: usize = it.shape()[..a].iter().product();
        let inner: usize = it.shape()[a..].iter().product();
        let mut sel = Vec::with_capacity(outer * d * inner);
        for o in 0..outer {
            for k in 0..d {
                for i in 0..inner {
                    let v = idx[o * inner + i];
                    let v = if v < 0 { v + d as i64 } else { v };
                    sel.push(usize::from(v == k as i64));
                }
            }
        }
        Ok(vec![tensor(out, take(vals.data(), &sel, None))?])
    }
}

// ---------------------------------------------------------------------------------
// TopK
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct TopK {
    k_attr: Option<i64>,
    axis: i64,
    largest: bool,
}

fn build_top_k(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let k_attr = if n.opset < 10 {
        Some(n.attrs.req_int("k")?)
    } else {
        None
    };
    Ok(Box::new(TopK {
        k_attr,
        axis: n.attrs.int("axis", -1)?,
        largest: n.attrs.int("largest", 1)? != 0,
    }))
}

/// A total order for TopK: NaN above +∞, −0 equal to +0 (ties go to the lower index).
trait TopKey: Copy {
    fn key_cmp(a: &Self, b: &Self) -> Ordering;
}
macro_rules! topkey_int {
    ($($t:ty),*) => {$( impl TopKey for $t { fn key_cmp(a: &Self, b: &Self) -> Ordering { a.cmp(b) } } )*};
}
topkey_int!(i8, i16, i32, i64, u8, u16, u32, u64);
fn nan_high(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}
impl TopKey for f32 {
    fn key_cmp(a: &Self, b: &Self) -> Ordering {
        nan_high(*a as f64, *b as f64)
    }
}
impl TopKey for f64 {
    fn key_cmp(a: &Self, b: &Self) -> Ordering {
        nan_high(*a, *b)
    }
}
impl TopKey for f16 {
    fn key_cmp(a: &Self, b: &Self) -> Ordering {
        nan_high(a.to_f64(), b.to_f64())
    }
}
impl TopKey for bf16 {
    fn key_cmp(a: &Self, b: &Self) -> Ordering {
        nan_high(a.to_f64(), b.to_f64())
    }
}

fn top_k<T: TopKey>(
    v: &[T],
    outer: usize,
    d: usize,
    inner: usize,
    k: usize,
    largest: bool,
) -> (Vec<T>, Vec<i64>) {
    let mut vals = vec![None::<T>; outer * k * inner];
    let mut idxs = vec![0i64; outer * k * inner];
    let mut order: Vec<usize> = Vec::with_capacity(d);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| &v[(o * d + j) * inner + i];
            order.clear();
            order.extend(0..d);
            // Stable sort: equal keys keep increasing index order.
            if largest {
                order.sort_by(|&x, &y| T::key_cmp(at(y), at(x)));
            } else {
                order.sort_by(|&x, &y| T::key_cmp(at(x), at(y)));
            }
            for (r, &j) in order.iter().take(k).enumerate() {
                let p = (o * k + r) * inner + i;
                vals[p] = Some(*at(j));
                idxs[p] = j as i64;
            }
        }
    }
    (vals.into_iter().flatten().collect(), idxs)
}

impl TopK {
    fn shape(&self, s: &[usize], k: i64) -> Result<(usize, usize, Vec<usize>), OpError> {
        if s.is_empty() {
            return Err(OpError::shape("TopK input must have rank 1 or more"));
        }
        let a = axis_of(self.axis, s.len())?;
        if k < 0 || k as u64 > s[a] as u64 {
            return Err(OpError::value(format!(
                "TopK k = {k} is outside 0..={} (axis {a} of {s:?})",
                s[a]
            )));
        }
        let mut out = s.to_vec();
        out[a] = k as usize;
        Ok((a, k as usize, out))
    }
    fn k(&self, v: Option<Vec<i64>>) -> Result<i64, OpError> {
        match (self.k_attr, v) {
            (Some(k), _) => Ok(k),
            (None, Some(v)) if v.len() == 1 => Ok(v[0]),
            (None, Some(_)) => Err(OpError::shape("TopK K must hold one value")),
            (None, None) => Err(OpError::MissingInput { index: 1 }),
        }
    }
}

impl Op for TopK {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let kv = if self.k_attr.is_some() {
            None
        } else {
            known_ints(inputs, 1)?
        };
        let (_, _, out) = self.shape(&x.ty.shape, self.k(kv)?)?;
        if !(x.ty.dtype.is_float() || x.ty.dtype.is_int()) {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        Ok(vec![
            TypeInfo::new(x.ty.dtype, out.clone()),
            TypeInfo::new(DType::I64, out),
        ])
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let kv = if self.k_attr.is_some() {
            None
        } else {
            run_ints(inputs, 1)?
        };
        let (a, k, out) = self.shape(x.shape(), self.k(kv)?)?;
        let s = x.shape();
        let (outer, d, inner) = (
            s[..a].iter().product::<usize>(),
            s[a],
            s[a + 1..].iter().product::<usize>(),
        );
        macro_rules! go {
            ($($v:ident),*) => {
                match x.data() {
                    $(TensorData::$v(v) => {
                        let (vals, idx) = top_k(v, outer, d, inner, k, self.largest);
                        (TensorData::$v(vals), idx)
                    })*
                    _ => return Err(OpError::DType { index: 0, dtype: x.dtype() }),
                }
            };
        }
        let (vals, idx) = go!(F32, F64, F16, BF16, I8, I16, I32, I64, U8, U16, U32, U64);
        Ok(vec![
            tensor(out.clone(), vals)?,
            Tensor::from_vec(out, idx)?,
        ])
    }
    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        // A sort per lane: n·⌈log2 n⌉ comparisons, bounded below by the copy.
        let n = inputs.first().copied().flatten().map_or(0, |t| t.numel());
        let log = 64 - n.leading_zeros() as u64;
        n.saturating_mul(log.max(1))
            .saturating_add(outputs.iter().map(|t| t.numel()).sum())
            .max(1)
    }
}

// ---------------------------------------------------------------------------------
// Compress / NonZero
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Compress {
    axis: Option<i64>,
}

fn build_compress(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Compress {
        axis: n.attrs.opt_int("axis")?,
    }))
}

impl Compress {
    /// (axis or None for flattened, selected positions, output shape).
    #[allow(clippy::type_complexity)]
    fn plan(
        &self,
        s: &[usize],
        cond: &Tensor,
    ) -> Result<(Option<usize>, Vec<usize>, Vec<usize>), OpError> {
        let c = cond.as_slice::<bool>().ok_or(OpError::DType {
            index: 1,
            dtype: cond.dtype(),
        })?;
        if cond.rank() != 1 {
            return Err(OpError::shape("Compress condition must be 1-D"));
        }
        let (axis, d) = match self.axis {
            Some(a) => {
                let a = axis_of(a, s.len())?;
                (Some(a), s[a])
            }
            None => (None, numel(s)?),
        };
        if c.iter().skip(d).any(|&x| x) {
            return Err(OpError::value(format!(
                "Compress condition selects past the end of a dimension of size {d}"
            )));
        }
        let sel: Vec<usize> = c
            .iter()
            .take(d)
            .enumerate()
            .filter(|(_, &x)| x)
            .map(|(i, _)| i)
            .collect();
        let out = match axis {
            Some(a) => {
                let mut o = s.to_vec();
                o[a] = sel.len();
                o
            }
            None => vec![sel.len()],
        };
        Ok((axis, sel, out))
    }
}

impl Op for Compress {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let c = need_value(infer_input(inputs, 1)?, 1)?;
        one(x.ty.dtype, self.plan(&x.ty.shape, c)?.2)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (axis, sel, out) = self.plan(x.shape(), input(inputs, 1)?)?;
        let data = match axis {
            None => take(x.data(), &sel, None),
            Some(a) => {
                let st = strides(x.shape());
                let tables: Vec<Vec<usize>> = (0..x.rank())
                    .map(|d| {
                        if d == a {
                            sel.iter().map(|&i| i * st[d]).collect()
                        } else {
                            (0..x.shape()[d]).map(|i| i * st[d]).collect()
                        }
                    })
                    .collect();
                remap(x.data(), &tables, None, ctx)
            }
        };
        Ok(vec![tensor(out, data)?])
    }
}

#[derive(Debug)]
struct NonZero;

/// Which elements are non-zero: for floats `x != 0.0` (NaN counts, −0 does not).
fn nonzero_mask(t: &Tensor) -> Result<Vec<bool>, OpError> {
    Ok(match t.data() {
        TensorData::F32(v) => v.iter().map(|&x| x != 0.0).collect(),
        TensorData::F64(v) => v.iter().map(|&x| x != 0.0).collect(),
        TensorData::F16(v) => v.iter().map(|&x| x.to_f32() != 0.0).collect(),
        TensorData::BF16(v) => v.iter().map(|&x| x.to_f32() != 0.0).collect(),
        TensorData::Bool(v) => v.clone(),
        TensorData::Str(_) => {
            return Err(OpError::DType {
                index: 0,
                dtype: t.dtype(),
            })
        }
        _ => numbers_i64(t, 0)?.iter().map(|&x| x != 0).collect(),
    })
}

fn nonzero(t: &Tensor) -> Result<Tensor, OpError> {
    let mask = nonzero_mask(t)?;
    let shape: Vec<usize> = if t.rank() == 0 {
        vec![1]
    } else {
        t.shape().to_vec()
    };
    let hits: Vec<usize> = mask
        .iter()
        .enumerate()
        .filter(|(_, &m)| m)
        .map(|(i, _)| i)
        .collect();
    let st = strides(&shape);
    let nnz = hits.len();
    let mut out = vec![0i64; shape.len() * nnz];
    for (j, &flat) in hits.iter().enumerate() {
        for d in 0..shape.len() {
            out[d * nnz + j] = ((flat / st[d]) % shape[d]) as i64;
        }
    }
    Ok(Tensor::from_vec(vec![shape.len(), nnz], out)?)
}

impl Op for NonZero {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = need_value(infer_input(inputs, 0)?, 0)?;
        Ok(vec![TypeInfo::of(&nonzero(x)?)])
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![nonzero(input(inputs, 0)?)?])
    }
}

// ---------------------------------------------------------------------------------
// ReverseSequence / Trilu / EyeLike
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct ReverseSequence {
    batch_axis: usize,
    time_axis: usize,
}

fn build_reverse_sequence(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let b = n.attrs.int("batch_axis", 1)?;
    let t = n.attrs.int("time_axis", 0)?;
    if !matches!((b, t), (0, 1) | (1, 0)) {
        return Err(OpError::bad_attr(
            "batch_axis",
            "batch_axis and time_axis must be 0 and 1 in some order",
        ));
    }
    Ok(Box::new(ReverseSequence {
        batch_axis: b as usize,
        time_axis: t as usize,
    }))
}

impl Op for ReverseSequence {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let l = infer_input(inputs, 1)?;
        check_index_dtype(l.ty, 1)?;
        if x.ty.shape.len() < 2 || l.ty.shape != [x.ty.shape[self.batch_axis]] {
            return Err(OpError::shape(format!(
                "sequence_lens {:?} must be one length per batch of input {:?}",
                l.ty.shape, x.ty.shape
            )));
        }
        one(x.ty.dtype, x.ty.shape.clone())
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let lens = ints_of(input(inputs, 1)?, 1)?;
        let s = x.shape();
        if s.len() < 2 || lens.len() != s[self.batch_axis] {
            return Err(OpError::shape("sequence_lens must be one length per batch"));
        }
        let t_len = s[self.time_axis];
        for &l in &lens {
            if l < 0 || l as u64 > t_len as u64 {
                return Err(OpError::value(format!(
                    "sequence length {l} is outside 0..={t_len}"
                )));
            }
        }
        let st = strides(s);
        let inner: usize = s[2..].iter().product();
        let mut idx = Vec::with_capacity(x.len());
        for a0 in 0..s[0] {
            for a1 in 0..s[1] {
                let (b, t) = if self.batch_axis == 0 {
                    (a0, a1)
                } else {
                    (a1, a0)
                };
                let l = lens[b] as usize;
                let src_t = if t < l { l - 1 - t } else { t };
                let (c0, c1) = if self.batch_axis == 0 {
                    (b, src_t)
                } else {
                    (src_t, b)
                };
                let base = c0 * st[0] + c1 * st[1];
                idx.extend(base..base + inner);
            }
        }
        Ok(vec![tensor(s.to_vec(), take(x.data(), &idx, None))?])
    }
}

#[derive(Debug)]
struct Trilu {
    upper: bool,
}

fn build_trilu(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Trilu {
        upper: n.attrs.int("upper", 1)? != 0,
    }))
}

impl Op for Trilu {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        if x.ty.shape.len() < 2 {
            return Err(OpError::shape("Trilu input must have rank 2 or more"));
        }
        one(x.ty.dtype, x.ty.shape.clone())
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let k = match run_ints(inputs, 1)? {
            None => 0i64,
            Some(v) if v.len() == 1 => v[0],
            Some(_) => return Err(OpError::shape("Trilu k must hold one value")),
        };
        let s = x.shape();
        if s.len() < 2 {
            return Err(OpError::shape("Trilu input must have rank 2 or more"));
        }
        let (m, n) = (s[s.len() - 2], s[s.len() - 1]);
        let idx: Vec<usize> = (0..x.len())
            .map(|f| {
                let (i, j) = (((f / n) % m) as i64, (f % n) as i64);
                let keep = if self.upper { j - i >= k } else { j - i <= k };
                if keep {
                    f
                } else {
                    FILL
                }
            })
            .collect();
        let zero = scalar_from_f64(x.dtype(), 0.0)?;
        Ok(vec![tensor(s.to_vec(), take(x.data(), &idx, Some(&zero)))?])
    }
}

#[derive(Debug)]
struct EyeLike {
    dtype: Option<DType>,
    k: i64,
}

fn build_eye_like(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let dtype = match n.attrs.opt_int("dtype")? {
        None => None,
        Some(c) => Some(
            DType::from_onnx_code(c as i32)
                .ok_or_else(|| OpError::unsupported(format!("EyeLike dtype code {c}")))?,
        ),
    };
    Ok(Box::new(EyeLike {
        dtype,
        k: n.attrs.int("k", 0)?,
    }))
}

fn pair(dt: DType, a: f64, b: f64) -> Result<TensorData, OpError> {
    fn join<T: Element>(x: &[T], y: &TensorData) -> TensorData {
        let mut v = x.to_vec();
        v.extend(first_like(x, y));
        wrap(v)
    }
    let (x, y) = (scalar_from_f64(dt, a)?, scalar_from_f64(dt, b)?);
    Ok(with_data!(&x, v => join(v, &y)))
}

impl Op for EyeLike {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        if x.ty.shape.len() != 2 {
            return Err(OpError::shape("EyeLike input must be 2-D"));
        }
        one(self.dtype.unwrap_or(x.ty.dtype), x.ty.shape.clone())
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let s = x.shape();
        if s.len() != 2 {
            return Err(OpError::shape("EyeLike input must be 2-D"));
        }
        let dt = self.dtype.unwrap_or(x.dtype());
        let src = pair(dt, 0.0, 1.0)?;
        let idx: Vec<usize> = (0..s[0] * s[1])
            .map(|f| usize::from((f % s[1]) as i64 - (f / s[1]) as i64 == self.k))
            .collect();
        Ok(vec![tensor(s.to_vec(), take(&src, &idx, None))?])
    }
    fn cost(&self, _: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        outputs.iter().map(|t| t.numel()).sum::<u64>().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::{Attr, Attrs};
    use crate::ops::Builder;

    fn node<'a>(op: &'a str, opset: i64, attrs: &'a Attrs, n_out: usize) -> NodeInfo<'a> {
        NodeInfo {
            name: "n",
            op_type: op,
            domain: "",
            opset,
            attrs,
            num_inputs: 2,
            num_outputs: n_out,
        }
    }

    fn run(op: &dyn Op, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let tys: Vec<Option<TypeInfo>> = ins.iter().map(|t| t.map(TypeInfo::of)).collect();
        let inf: Vec<Option<InferInput<'_>>> = tys
            .iter()
            .zip(ins)
            .map(|(ty, t)| ty.as_ref().map(|ty| InferInput { ty, value: *t }))
            .collect();
        let planned = op.infer(&inf)?;
        let out = op.run(ins, &Ctx::default())?;
        for (o, p) in out.iter().zip(&planned) {
            assert_eq!(TypeInfo::of(o), *p);
        }
        Ok(out)
    }

    fn i64s(v: &[i64]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }

    /// Runs infer then run, as the planner does, and checks that whatever comes back
    /// is an error or agrees with the plan. Panics are the failure this hunts.
    fn plan_and_run(op: &dyn Op, ins: &[Option<&Tensor>]) {
        let tys: Vec<Option<TypeInfo>> = ins.iter().map(|t| t.map(TypeInfo::of)).collect();
        let inf: Vec<Option<InferInput<'_>>> = tys
            .iter()
            .zip(ins)
            .map(|(ty, t)| ty.as_ref().map(|ty| InferInput { ty, value: *t }))
            .collect();
        let planned = op.infer(&inf);
        let out = op.run(ins, &Ctx::default());
        if let (Ok(p), Ok(o)) = (planned, out) {
            for (o, p) in o.iter().zip(&p) {
                assert_eq!(&TypeInfo::of(o), p);
            }
        }
    }

    fn small_tensor() -> impl proptest::strategy::Strategy<Value = Tensor> {
        use proptest::prelude::*;
        prop::collection::vec(0usize..4, 0..4).prop_flat_map(|shape| {
            let n: usize = shape.iter().product();
            prop::collection::vec(-6i64..6, n)
                .prop_map(move |v| Tensor::from_vec(shape.clone(), v).unwrap())
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        #[test]
        fn bad_indices_never_panic(
            data in small_tensor(),
            idx in small_tensor(),
            upd in small_tensor(),
            extra in small_tensor(),
            axis in -4i64..4,
            b in 0i64..3,
        ) {
            let mut a = Attrs::default();
            a.0.insert("axis".into(), Attr::Int(axis));
            a.0.insert("batch_dims".into(), Attr::Int(b));
            a.0.insert("reduction".into(), Attr::String(b"add".to_vec()));
            let builders: [(&str, Builder); 8] = [
                ("Gather", build_gather),
                ("GatherElements", build_gather_elements),
                ("GatherND", build_gather_nd),
                ("ScatterElements", build_scatter_elements),
                ("ScatterND", build_scatter_nd),
                ("OneHot", build_one_hot),
                ("TopK", build_top_k),
                ("Slice", build_slice),
            ];
            for (name, build) in builders {
                let op = build(&node(name, 18, &a, 2)).unwrap();
                plan_and_run(op.as_ref(), &[Some(&data), Some(&idx), Some(&upd), Some(&extra)]);
                plan_and_run(op.as_ref(), &[Some(&data), Some(&idx), Some(&upd)]);
                plan_and_run(op.as_ref(), &[Some(&data), Some(&idx)]);
            }
        }
    }

    #[test]
    fn slice_clamps_and_steps_backwards() {
        let s = [5usize];
        let (st, step, len) = slice_plan(&s, &[-1], &[i64::MIN], None, Some(&[-2])).unwrap();
        assert_eq!((st[0], step[0], len[0]), (4, -2, 3));
        let (_, _, len) = slice_plan(&s, &[10], &[20], None, None).unwrap();
        assert_eq!(len[0], 0);
        let (_, _, len) = slice_plan(&[0], &[0], &[-1], None, Some(&[-1])).unwrap();
        assert_eq!(len[0], 0);
        assert!(slice_plan(&s, &[0], &[1], None, Some(&[0])).is_err());
    }

    #[test]
    fn gather_wraps_once_and_rejects_out_of_range() {
        let a = Attrs::default();
        let g = build_gather(&node("Gather", 13, &a, 1)).unwrap();
        let x = Tensor::from_vec(vec![3, 2], vec![1u8, 2, 3, 4, 5, 6]).unwrap();
        let out = run(g.as_ref(), &[Some(&x), Some(&i64s(&[-1, 0]))]).unwrap();
        assert_eq!(out[0].as_slice::<u8>().unwrap(), &[5, 6, 1, 2]);
        let e = run(g.as_ref(), &[Some(&x), Some(&i64s(&[3]))]).unwrap_err();
        assert!(matches!(e, OpError::Value { .. }));
        assert!(run(g.as_ref(), &[Some(&x), Some(&i64s(&[-4]))]).is_err());
    }

    #[test]
    fn gather_nd_with_batch_dims() {
        let mut a = Attrs::default();
        a.0.insert("batch_dims".into(), Attr::Int(1));
        let g = build_gather_nd(&node("GatherND", 13, &a, 1)).unwrap();
        let x = Tensor::from_vec(vec![2, 2, 2], (0..8).collect::<Vec<i32>>()).unwrap();
        let i = Tensor::from_vec(vec![2, 1], vec![1i64, 0]).unwrap();
        let out = run(g.as_ref(), &[Some(&x), Some(&i)]).unwrap();
        assert_eq!(out[0].shape(), &[2, 2]);
        assert_eq!(out[0].as_slice::<i32>().unwrap(), &[2, 3, 4, 5]);
    }

    #[test]
    fn scatter_reductions_in_order() {
        let x = Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]).unwrap();
        let i = i64s(&[0, 0, -1]);
        let u = Tensor::from_vec(vec![3], vec![10.0f32, f32::NAN, 5.0]).unwrap();
        for (r, want) in [
            ("none", [f32::NAN, 2.0, 5.0]),
            ("add", [f32::NAN, 2.0, 8.0]),
            ("max", [f32::NAN, 2.0, 5.0]),
            ("min", [f32::NAN, 2.0, 3.0]),
        ] {
            let mut a = Attrs::default();
            a.0.insert("reduction".into(), Attr::String(r.as_bytes().to_vec()));
            let op = build_scatter_elements(&node("ScatterElements", 18, &a, 1)).unwrap();
            let out = run(op.as_ref(), &[Some(&x), Some(&i), Some(&u)]).unwrap();
            let got: Vec<u32> = out[0]
                .as_slice::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let want: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{r}");
        }
        let bad = i64s(&[0, 0, 3]);
        let a = Attrs::default();
        let op = build_scatter_elements(&node("ScatterElements", 18, &a, 1)).unwrap();
        assert!(run(op.as_ref(), &[Some(&x), Some(&bad), Some(&u)]).is_err());
    }

    #[test]
    fn top_k_ties_go_to_lower_index() {
        let a = Attrs::default();
        let op = build_top_k(&node("TopK", 11, &a, 2)).unwrap();
        let x = Tensor::from_vec(vec![5], vec![1.0f32, 3.0, f32::NAN, 3.0, -0.0]).unwrap();
        let out = run(op.as_ref(), &[Some(&x), Some(&i64s(&[3]))]).unwrap();
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[2, 1, 3]);
        assert!(run(op.as_ref(), &[Some(&x), Some(&i64s(&[6]))]).is_err());
    }

    #[test]
    fn one_hot_out_of_range_is_all_off() {
        let a = Attrs::default();
        let op = build_one_hot(&node("OneHot", 11, &a, 1)).unwrap();
        let i = i64s(&[-1, 5]);
        let d = Tensor::scalar(3i64);
        let v = Tensor::from_vec(vec![2], vec![0i32, 7]).unwrap();
        let out = run(op.as_ref(), &[Some(&i), Some(&d), Some(&v)]).unwrap();
        assert_eq!(out[0].as_slice::<i32>().unwrap(), &[0, 0, 7, 0, 0, 0]);
    }

    #[test]
    fn nonzero_needs_a_known_value() {
        let t = TypeInfo::new(DType::F32, vec![2]);
        let e = NonZero
            .infer(&[Some(InferInput {
                ty: &t,
                value: None,
            })])
            .unwrap_err();
        assert_eq!(e, OpError::ValueNeeded { index: 0 });
        let x = Tensor::from_vec(vec![2, 2], vec![0.0f32, -0.0, f32::NAN, 1.0]).unwrap();
        let out = run(&NonZero, &[Some(&x)]).unwrap();
        assert_eq!(out[0].as_slice::<i64>().unwrap(), &[1, 1, 0, 1]);
    }

    #[test]
    fn trilu_eye_reverse() {
        let a = Attrs::default();
        let op = build_trilu(&node("Trilu", 14, &a, 1)).unwrap();
        let x = Tensor::from_vec(vec![2, 2], vec![1i64, 2, 3, 4]).unwrap();
        let out = run(op.as_ref(), &[Some(&x)]).unwrap();
        assert_eq!(out[0].as_slice::<i64>().unwrap(), &[1, 2, 0, 4]);
        let mut a = Attrs::default();
        a.0.insert("k".into(), Attr::Int(1));
        let op = build_eye_like(&node("EyeLike", 9, &a, 1)).unwrap();
        let out = run(op.as_ref(), &[Some(&x)]).unwrap();
        assert_eq!(out[0].as_slice::<i64>().unwrap(), &[0, 1, 0, 0]);
        let a = Attrs::default();
        let op = build_reverse_sequence(&node("ReverseSequence", 10, &a, 1)).unwrap();
        let x = Tensor::from_vec(vec![3, 2], vec![1i32, 4, 2, 5, 3, 6]).unwrap();
        let out = run(op.as_ref(), &[Some(&x), Some(&i64s(&[3, 2]))]).unwrap();
        assert_eq!(out[0].as_slice::<i32>().unwrap(), &[3, 5, 2, 4, 1, 6]);
    }
}
