//! Shape and data-movement operators: `Reshape`, `Flatten`, `Squeeze`, `Unsqueeze`,
//! `Transpose`, `Concat`, `Split`, `Expand`, `Tile`, `Pad`, `DepthToSpace`,
//! `SpaceToDepth`, `Shape`, `Size`, `ConstantOfShape` and `Range`.
//!
//! Everything here moves elements without arithmetic (except `Range`), so one generic
//! engine serves every dtype: [`remap`] copies an input through per-axis offset tables.
//! Splitting its output across threads cannot change a bit; the transpose kernel is
//! nevertheless checked against a naive reference (see `shape/transpose.rs`).
//! Semantics: `docs/canonical-semantics.md`.

use deed_types::tensor::Element;
use deed_types::{with_data, DType, Tensor, TensorData};
use half::{bf16, f16};

use super::util::{
    check_count, infer_input, input, norm_axis, numel, one, opt_infer_input, opt_input, strides,
};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

pub mod transpose;

pub(crate) fn register(r: &mut Registry) {
    r.add("Reshape", build_reshape);
    r.add("Flatten", build_flatten);
    r.add("Squeeze", build_squeeze);
    r.add("Unsqueeze", build_unsqueeze);
    r.add("Transpose", build_transpose);
    r.add("Concat", build_concat);
    r.add("Split", build_split);
    r.add("Expand", |_| Ok(Box::new(Expand)));
    r.add("Tile", |_| Ok(Box::new(Tile)));
    r.add("Pad", build_pad);
    r.add("CenterCropPad", |n| {
        Ok(Box::new(CenterCropPad {
            axes: n.attrs.ints("axes")?,
        }))
    });
    r.add("DepthToSpace", build_depth_to_space);
    r.add("SpaceToDepth", build_space_to_depth);
    r.add("Shape", build_shape);
    r.add("Size", |_| Ok(Box::new(Size)));
    r.add("ConstantOfShape", build_constant_of_shape);
    r.add("Range", |_| Ok(Box::new(Range)));
}

// ---------------------------------------------------------------------------------
// Shared helpers (also used by `index.rs` and `resize.rs`).
// ---------------------------------------------------------------------------------

/// Marks, in a [`remap`] table, an output element that takes the fill value.
pub(crate) const FILL: usize = usize::MAX;

/// Output elements handled by one task when a copy is split across threads.
const CHUNK_ELEMS: usize = 1 << 14;

/// Wraps a typed vector into storage.
pub(crate) fn wrap<T: Element>(v: Vec<T>) -> TensorData {
    T::wrap(v)
}

/// The first element of `f` when it holds the same type as `like`.
pub(crate) fn first_like<T: Element>(_like: &[T], f: &TensorData) -> Option<T> {
    T::slice(f).and_then(|s| s.first().cloned())
}

/// Reads an integer tensor (i64 or i32) as `i64`s, reporting `index` on a dtype error.
pub(crate) fn ints_of(t: &Tensor, index: usize) -> Result<Vec<i64>, OpError> {
    super::util::to_i64s(t).map_err(|_| OpError::DType {
        index,
        dtype: t.dtype(),
    })
}

/// The integer values of planning input `index`, when the input is present; its value
/// must be known ([`OpError::ValueNeeded`] otherwise).
pub(crate) fn known_ints(
    inputs: &[Option<InferInput<'_>>],
    index: usize,
) -> Result<Option<Vec<i64>>, OpError> {
    match opt_infer_input(inputs, index) {
        None => Ok(None),
        Some(x) => Ok(Some(ints_of(super::util::need_value(x, index)?, index)?)),
    }
}

/// The integer values of running input `index`, when present.
pub(crate) fn run_ints(
    inputs: &[Option<&Tensor>],
    index: usize,
) -> Result<Option<Vec<i64>>, OpError> {
    opt_input(inputs, index)
        .map(|t| ints_of(t, index))
        .transpose()
}

/// Copies `src` through per-axis offset tables: output element `(o_0, …, o_{r-1})` is
/// `src[Σ tables[d][o_d]]`, or `fill` when any table entry is [`FILL`]. The output
/// shape is the tables' lengths. Rows are split across the context's threads; each
/// output element is written once from one input element, so the bits cannot depend
/// on the split.
pub(crate) fn remap(
    src: &TensorData,
    tables: &[Vec<usize>],
    fill: Option<&TensorData>,
    ctx: &Ctx,
) -> TensorData {
    with_data!(src, v => {
        let f = fill.and_then(|f| first_like(v, f));
        wrap(remap_slice(v, tables, f, ctx))
    })
}

/// Typed [`remap`].
pub(crate) fn remap_slice<T: Clone + Default + Send + Sync + 'static>(
    src: &[T],
    tables: &[Vec<usize>],
    fill: Option<T>,
    ctx: &Ctx,
) -> Vec<T> {
    let rank = tables.len();
    if rank == 0 {
        return src.first().cloned().into_iter().collect();
    }
    let n: usize = tables.iter().map(|t| t.len()).product();
    if n == 0 {
        return Vec::new();
    }
    let last = &tables[rank - 1];
    let row = last.len();
    let outer = &tables[..rank - 1];
    let contiguous = last[0] != FILL && last.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
    let fill = fill.unwrap_or_default();
    let get = |i: usize| src.get(i).cloned().unwrap_or_else(|| fill.clone());
    let rows_per_chunk = (CHUNK_ELEMS / row).max(1);
    // Every element is written below.
    let mut out = crate::scratch::output(n, T::default());
    let do_rows = |first_row: usize, chunk: &mut [T]| {
        // Mixed-radix decode of the first row's outer coordinates.
        let mut coords = vec![0usize; outer.len()];
        let mut r = first_row;
        for d in (0..outer.len()).rev() {
            coords[d] = r % outer[d].len();
            r /= outer[d].len();
        }
        for out_row in chunk.chunks_mut(row) {
            let mut base = 0usize;
            for (d, &c) in coords.iter().enumerate() {
                let t = outer[d][c];
                if t == FILL {
                    base = FILL;
                    break;
                }
                base += t;
            }
            if base == FILL {
                out_row.fill(fill.clone());
            } else if contiguous && base + last[0] + row <= src.len() {
                out_row.clone_from_slice(&src[base + last[0]..base + last[0] + row]);
            } else {
                for (o, &t) in out_row.iter_mut().zip(last) {
                    *o = if t == FILL {
                        fill.clone()
                    } else {
                        get(base + t)
                    };
                }
            }
            for d in (0..outer.len()).rev() {
                coords[d] += 1;
                if coords[d] < outer[d].len() {
                    break;
                }
                coords[d] = 0;
            }
        }
    };
    if ctx.reference() {
        do_rows(0, &mut out);
    } else {
        ctx.for_each_chunk(&mut out, rows_per_chunk * row, |ci, chunk| {
            do_rows(ci * rows_per_chunk, chunk)
        });
    }
    out
}

/// Offset tables for a plain strided view: axis `d` of the output takes input
/// coordinates `start[d] + i·step[d]` for `i < len[d]`.
pub(crate) fn strided_tables(
    in_shape: &[usize],
    start: &[usize],
    step: &[i64],
    len: &[usize],
) -> Vec<Vec<usize>> {
    let st = strides(in_shape);
    (0..in_shape.len())
        .map(|d| {
            (0..len[d])
                .map(|i| {
                    let c = start[d] as i64 + i as i64 * step[d];
                    c as usize * st[d]
                })
                .collect()
        })
        .collect()
}

/// Offset tables that broadcast `in_shape` to `out_shape` (stride 0 on stretched axes).
pub(crate) fn broadcast_tables(in_shape: &[usize], out_shape: &[usize]) -> Vec<Vec<usize>> {
    let st = strides(in_shape);
    let pad = out_shape.len() - in_shape.len();
    (0..out_shape.len())
        .map(|d| {
            if d < pad || in_shape[d - pad] == 1 {
                vec![0; out_shape[d]]
            } else {
                (0..out_shape[d]).map(|i| i * st[d - pad]).collect()
            }
        })
        .collect()
}

/// Builds a tensor, turning a length mismatch into an error.
pub(crate) fn tensor(shape: Vec<usize>, data: TensorData) -> Result<Tensor, OpError> {
    Ok(Tensor::new(shape, data)?)
}

/// Resolves an axis of a tensor of rank `rank` (which must be at least 1).
pub(crate) fn axis_of(axis: i64, rank: usize) -> Result<usize, OpError> {
    let a = norm_axis(axis, rank)?;
    if a >= rank {
        return Err(OpError::bad_attr(
            "axis",
            format!("axis {axis} is out of range for rank {rank}"),
        ));
    }
    Ok(a)
}

/// Converts a dimension value, refusing negatives.
fn dim(v: i64, what: &str) -> Result<usize, OpError> {
    usize::try_from(v).map_err(|_| OpError::value(format!("{what} {v} is negative")))
}

// ---------------------------------------------------------------------------------
// Reshape
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Reshape {
    allowzero: bool,
}

fn build_reshape(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    if n.opset < 5 {
        return Err(OpError::unsupported(
            "Reshape before opset 5 (shape attribute)",
        ));
    }
    Ok(Box::new(Reshape {
        allowzero: n.attrs.int("allowzero", 0)? != 0,
    }))
}

/// The output shape of `Reshape`: `0` copies the input dimension (unless `allowzero`),
/// one `-1` is inferred from the element count.
pub(crate) fn reshape_shape(
    in_shape: &[usize],
    target: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, OpError> {
    if allowzero && target.contains(&0) && target.contains(&-1) {
        return Err(OpError::value(
            "Reshape with allowzero=1 cannot have both 0 and -1 in the shape",
        ));
    }
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 => {
                if infer_at.is_some() {
                    return Err(OpError::value("Reshape shape has more than one -1"));
                }
                infer_at = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*in_shape.get(i).ok_or_else(|| {
                OpError::value(format!(
                    "Reshape shape {target:?} copies dimension {i} (0), but the input has rank {}",
                    in_shape.len()
                ))
            })?),
            d if d >= 0 => out.push(dim(d, "Reshape dimension")?),
            d => {
                return Err(OpError::value(format!(
                    "Reshape dimension {d} is invalid (only -1 may be negative)"
                )))
            }
        }
    }
    let n_in = numel(in_shape)?;
    if let Some(k) = infer_at {
        let rest = numel(&out)?;
        if rest == 0 || n_in % rest != 0 {
            return Err(OpError::shape(format!(
                "cannot reshape {in_shape:?} to {target:?}: the -1 dimension cannot be inferred"
            )));
        }
        out[k] = n_in / rest;
    }
    if numel(&out)? != n_in {
        return Err(OpError::shape(format!(
            "cannot reshape {in_shape:?} ({n_in} elements) to {out:?}"
        )));
    }
    Ok(out)
}

impl Op for Reshape {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        infer_input(inputs, 1)?;
        let target = known_ints(inputs, 1)?.unwrap_or_default();
        one(
            x.ty.dtype,
            reshape_shape(&x.ty.shape, &target, self.allowzero)?,
        )
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let target = ints_of(input(inputs, 1)?, 1)?;
        let shape = reshape_shape(x.shape(), &target, self.allowzero)?;
        Ok(vec![x.clone().reshaped(shape)?])
    }
    fn cost(&self, inputs: &[Option<&TypeInfo>], _: &[TypeInfo]) -> u64 {
        inputs
            .first()
            .copied()
            .flatten()
            .map_or(1, |t| t.numel().max(1))
    }
}

// ---------------------------------------------------------------------------------
// Flatten
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Flatten {
    axis: i64,
}

fn build_flatten(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Flatten {
        axis: n.attrs.int("axis", 1)?,
    }))
}

impl Flatten {
    fn shape(&self, s: &[usize]) -> Result<Vec<usize>, OpError> {
        let r = s.len() as i64;
        let a = if self.axis < 0 {
            self.axis + r
        } else {
            self.axis
        };
        if a < 0 || a > r {
            return Err(OpError::bad_attr(
                "axis",
                format!("axis {} is out of range for rank {r}", self.axis),
            ));
        }
        let a = a as usize;
        Ok(vec![numel(&s[..a])?, numel(&s[a..])?])
    }
}

impl Op for Flatten {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        one(x.ty.dtype, self.shape(&x.ty.shape)?)
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let shape = self.shape(x.shape())?;
        Ok(vec![x.clone().reshaped(shape)?])
    }
}

// ---------------------------------------------------------------------------------
// Squeeze / Unsqueeze
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Squeeze {
    /// Axes from the attribute (opset < 13); `None` means "from input 1" or "all".
    axes: Option<Vec<i64>>,
    from_input: bool,
}

fn build_squeeze(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let from_input = n.opset >= 13;
    let axes = if from_input {
        None
    } else {
        n.attrs.ints("axes")?
    };
    Ok(Box::new(Squeeze { axes, from_input }))
}

fn squeeze_shape(s: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, OpError> {
    match axes {
        None => Ok(s.iter().copied().filter(|&d| d != 1).collect()),
        Some(axes) => {
            let mut drop = vec![false; s.len()];
            for &a in axes {
                let a = axis_of(a, s.len())?;
                if s.get(a) != Some(&1) {
                    return Err(OpError::shape(format!(
                        "cannot squeeze axis {a} of shape {s:?}: its size is not 1"
                    )));
                }
                drop[a] = true;
            }
            Ok(s.iter()
                .zip(drop)
                .filter(|(_, d)| !d)
                .map(|(&x, _)| x)
                .collect())
        }
    }
}

impl Op for Squeeze {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let axes = if self.from_input {
            known_ints(inputs, 1)?
        } else {
            self.axes.clone()
        };
        one(x.ty.dtype, squeeze_shape(&x.ty.shape, axes.as_deref())?)
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let axes = if self.from_input {
            run_ints(inputs, 1)?
        } else {
            self.axes.clone()
        };
        let shape = squeeze_shape(x.shape(), axes.as_deref())?;
        Ok(vec![x.clone().reshaped(shape)?])
    }
}

#[derive(Debug)]
struct Unsqueeze {
    axes: Option<Vec<i64>>,
}

fn build_unsqueeze(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let axes = if n.opset >= 13 {
        None
    } else {
        Some(n.attrs.ints("axes")?.ok_or(OpError::MissingAttribute {
            name: "axes".into(),
        })?)
    };
    Ok(Box::new(Unsqueeze { axes }))
}

fn unsqueeze_shape(s: &[usize], axes: &[i64]) -> Result<Vec<usize>, OpError> {
    let r = s.len() + axes.len();
    let mut ins = vec![false; r];
    for &a in axes {
        let a = axis_of(a, r)?;
        if ins[a] {
            return Err(OpError::bad_attr("axes", format!("axis {a} is repeated")));
        }
        ins[a] = true;
    }
    let mut it = s.iter();
    Ok(ins
        .into_iter()
        .map(|i| {
            if i {
                1
            } else {
                it.next().copied().unwrap_or(1)
            }
        })
        .collect())
}

impl Op for Unsqueeze {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let axes = match &self.axes {
            Some(a) => a.clone(),
            None => {
                infer_input(inputs, 1)?;
                known_ints(inputs, 1)?.unwrap_or_default()
            }
        };
        one(x.ty.dtype, unsqueeze_shape(&x.ty.shape, &axes)?)
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let axes = match &self.axes {
            Some(a) => a.clone(),
            None => ints_of(input(inputs, 1)?, 1)?,
        };
        let shape = unsqueeze_shape(x.shape(), &axes)?;
        Ok(vec![x.clone().reshaped(shape)?])
    }
}

// ---------------------------------------------------------------------------------
// Transpose
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Transpose {
    perm: Option<Vec<i64>>,
}

fn build_transpose(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Transpose {
        perm: n.attrs.ints("perm")?,
    }))
}

impl Transpose {
    fn perm(&self, rank: usize) -> Result<Vec<usize>, OpError> {
        match &self.perm {
            None => Ok((0..rank).rev().collect()),
            Some(p) => {
                if p.len() != rank {
                    return Err(OpError::bad_attr(
                        "perm",
                        format!("perm {p:?} has {} entries for rank {rank}", p.len()),
                    ));
                }
                let mut seen = vec![false; rank];
                let mut out = Vec::with_capacity(rank);
                for &a in p {
                    let a = axis_of(a, rank)?;
                    if seen[a] {
                        return Err(OpError::bad_attr(
                            "perm",
                            format!("perm {p:?} is not a permutation"),
                        ));
                    }
                    seen[a] = true;
                    out.push(a);
                }
                Ok(out)
            }
        }
    }
}

impl Op for Transpose {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let p = self.perm(x.ty.shape.len())?;
        one(x.ty.dtype, p.iter().map(|&a| x.ty.shape[a]).collect())
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let p = self.perm(x.rank())?;
        let shape = p.iter().map(|&a| x.shape()[a]).collect();
        let data = transpose::transpose(x.data(), x.shape(), &p, ctx);
        Ok(vec![tensor(shape, data)?])
    }
}

// ---------------------------------------------------------------------------------
// Concat
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Concat {
    axis: i64,
}

fn build_concat(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Concat {
        axis: n.attrs.req_int("axis")?,
    }))
}

impl Concat {
    fn shape(&self, shapes: &[(DType, &[usize])]) -> Result<(DType, usize, Vec<usize>), OpError> {
        let (dt, first) = *shapes.first().ok_or(OpError::MissingInput { index: 0 })?;
        let rank = first.len();
        if rank == 0 {
            return Err(OpError::shape("Concat inputs must have rank 1 or more"));
        }
        let axis = axis_of(self.axis, rank)?;
        let mut out = first.to_vec();
        out[axis] = 0;
        for &(d, s) in shapes {
            if d != dt {
                return Err(OpError::DTypeMismatch {
                    expected: dt,
                    actual: d,
                });
            }
            if s.len() != rank
                || s.iter()
                    .zip(first)
                    .enumerate()
                    .any(|(i, (a, b))| i != axis && a != b)
            {
                return Err(OpError::shape(format!(
                    "Concat inputs {first:?} and {s:?} differ outside axis {axis}"
                )));
            }
            out[axis] = out[axis]
                .checked_add(s[axis])
                .ok_or_else(|| OpError::shape("Concat output too large"))?;
        }
        Ok((dt, axis, out))
    }
}

fn concat_typed<T: Element>(
    _like: &[T],
    parts: &[&Tensor],
    axis: usize,
    total: usize,
) -> Result<Vec<T>, OpError> {
    let outer = parts
        .first()
        .map_or(0, |p| p.shape()[..axis].iter().product::<usize>());
    let mut out = Vec::with_capacity(total);
    let slices: Vec<(&[T], usize)> = parts
        .iter()
        .map(|p| {
            let s = T::slice(p.data()).ok_or(OpError::DTypeMismatch {
                expected: T::DTYPE,
                actual: p.dtype(),
            })?;
            let block = p.shape()[axis..].iter().product::<usize>();
            Ok((s, block))
        })
        .collect::<Result<_, OpError>>()?;
    for o in 0..outer {
        for &(s, block) in &slices {
            out.extend_from_slice(&s[o * block..(o + 1) * block]);
        }
    }
    Ok(out)
}

impl Op for Concat {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let shapes: Vec<(DType, &[usize])> = inputs
            .iter()
            .flatten()
            .map(|x| (x.ty.dtype, x.ty.shape.as_slice()))
            .collect();
        let (dt, _, out) = self.shape(&shapes)?;
        one(dt, out)
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let parts: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
        let shapes: Vec<(DType, &[usize])> = parts.iter().map(|t| (t.dtype(), t.shape())).collect();
        let (_, axis, out) = self.shape(&shapes)?;
        let total = numel(&out)?;
        let first = parts[0].data();
        let data = with_data!(first, v => wrap(concat_typed(v, &parts, axis, total)?));
        Ok(vec![tensor(out, data)?])
    }
}

// ---------------------------------------------------------------------------------
// Split
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Split {
    axis: i64,
    /// `split` attribute (opset < 13).
    split: Option<Vec<i64>>,
    /// `split` comes from input 1 (opset >= 13).
    from_input: bool,
    num_outputs: usize,
    /// Opset 18's uneven split into `num_outputs` parts.
    ceil_parts: bool,
}

fn build_split(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let from_input = n.opset >= 13;
    let split = if from_input {
        None
    } else {
        n.attrs.ints("split")?
    };
    let attr_outputs = n.attrs.opt_int("num_outputs")?;
    let num_outputs = match attr_outputs {
        // The parts are the node's outputs: as many as it names.
        Some(k) if k >= 1 && k as u64 == n.num_outputs as u64 => k as usize,
        Some(k) if k >= 1 => {
            return Err(OpError::bad_attr(
                "num_outputs",
                format!("{k} parts, but the node has {} outputs", n.num_outputs),
            ))
        }
        Some(k) => return Err(OpError::bad_attr("num_outputs", format!("{k} is not >= 1"))),
        None => n.num_outputs.max(1),
    };
    Ok(Box::new(Split {
        axis: n.attrs.int("axis", 0)?,
        split,
        from_input,
        num_outputs,
        ceil_parts: n.opset >= 18 && attr_outputs.is_some(),
    }))
}

impl Split {
    fn parts(&self, s: &[usize], split: Option<Vec<i64>>) -> Result<(usize, Vec<usize>), OpError> {
        let axis = axis_of(self.axis, s.len())?;
        let d = s[axis];
        let parts: Vec<usize> = match split {
            Some(sp) => {
                let v = sp
                    .iter()
                    .map(|&x| dim(x, "split size"))
                    .collect::<Result<Vec<_>, _>>()?;
                if v.iter().sum::<usize>() != d {
                    return Err(OpError::value(format!(
                        "split sizes {sp:?} do not add up to dimension {d}"
                    )));
                }
                v
            }
            None => {
                let k = self.num_outputs;
                if self.ceil_parts {
                    let chunk = d.div_ceil(k);
                    (0..k)
                        .map(|i| chunk.min(d.saturating_sub(i * chunk)))
                        .collect()
                } else if d.checked_rem(k) == Some(0) {
                    vec![d / k; k]
                } else {
                    return Err(OpError::shape(format!(
                        "dimension {d} does not split evenly into {k} outputs"
                    )));
                }
            }
        };
        Ok((axis, parts))
    }
}

impl Op for Split {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let sp = if self.from_input {
            known_ints(inputs, 1)?
        } else {
            self.split.clone()
        };
        let (axis, parts) = self.parts(&x.ty.shape, sp)?;
        Ok(parts
            .into_iter()
            .map(|p| {
                let mut s = x.ty.shape.clone();
                s[axis] = p;
                TypeInfo::new(x.ty.dtype, s)
            })
            .collect())
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let sp = if self.from_input {
            run_ints(inputs, 1)?
        } else {
            self.split.clone()
        };
        let (axis, parts) = self.parts(x.shape(), sp)?;
        let rank = x.rank();
        let mut start = 0;
        let mut outs = Vec::with_capacity(parts.len());
        for p in parts {
            let mut starts = vec![0; rank];
            starts[axis] = start;
            let mut len = x.shape().to_vec();
            len[axis] = p;
            let tables = strided_tables(x.shape(), &starts, &vec![1; rank], &len);
            outs.push(tensor(len, remap(x.data(), &tables, None, ctx))?);
            start += p;
        }
        Ok(outs)
    }
}

// ---------------------------------------------------------------------------------
// Expand / Tile
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Expand;

fn expand_shape(s: &[usize], target: &[i64]) -> Result<Vec<usize>, OpError> {
    let t = target
        .iter()
        .map(|&d| dim(d, "Expand dimension"))
        .collect::<Result<Vec<_>, _>>()?;
    super::util::broadcast_shapes(s, &t)
}

impl Op for Expand {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        infer_input(inputs, 1)?;
        let target = known_ints(inputs, 1)?.unwrap_or_default();
        one(x.ty.dtype, expand_shape(&x.ty.shape, &target)?)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let target = ints_of(input(inputs, 1)?, 1)?;
        let out = expand_shape(x.shape(), &target)?;
        let tables = broadcast_tables(x.shape(), &out);
        Ok(vec![tensor(out, remap(x.data(), &tables, None, ctx))?])
    }
}

#[derive(Debug)]
struct Tile;

fn tile_shape(s: &[usize], reps: &[i64]) -> Result<Vec<usize>, OpError> {
    if reps.len() != s.len() {
        return Err(OpError::value(format!(
            "Tile repeats {reps:?} must have one entry per input dimension ({})",
            s.len()
        )));
    }
    s.iter()
        .zip(reps)
        .map(|(&d, &r)| {
            d.checked_mul(dim(r, "Tile repeat")?)
                .ok_or_else(|| OpError::shape("Tile output too large"))
        })
        .collect()
}

impl Op for Tile {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        infer_input(inputs, 1)?;
        let reps = known_ints(inputs, 1)?.unwrap_or_default();
        one(x.ty.dtype, tile_shape(&x.ty.shape, &reps)?)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let reps = ints_of(input(inputs, 1)?, 1)?;
        let out = tile_shape(x.shape(), &reps)?;
        let st = strides(x.shape());
        let tables: Vec<Vec<usize>> = (0..out.len())
            .map(|d| (0..out[d]).map(|i| (i % x.shape()[d]) * st[d]).collect())
            .collect();
        Ok(vec![tensor(out, remap(x.data(), &tables, None, ctx))?])
    }
}

// ---------------------------------------------------------------------------------
// Pad
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

#[derive(Debug)]
struct Pad {
    mode: PadMode,
    /// Opset < 11: pads and value are attributes.
    attr_pads: Option<Vec<i64>>,
    attr_value: f32,
}

fn build_pad(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let mode = match n.attrs.string("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" if n.opset >= 19 => PadMode::Wrap,
        m => return Err(OpError::unsupported(format!("Pad mode `{m}`"))),
    };
    let attr_pads = if n.opset < 11 {
        Some(n.attrs.ints("pads")?.or(n.attrs.ints("paddings")?).ok_or(
            OpError::MissingAttribute {
                name: "pads".into(),
            },
        )?)
    } else {
        None
    };
    Ok(Box::new(Pad {
        mode,
        attr_pads,
        attr_value: n.attrs.float("value", 0.0)?,
    }))
}

impl Pad {
    /// Per-axis (begin, end) pads for a tensor of rank `rank`.
    fn pads(
        &self,
        rank: usize,
        pads: Option<Vec<i64>>,
        axes: Option<Vec<i64>>,
    ) -> Result<Vec<(i64, i64)>, OpError> {
        let pads = match &self.attr_pads {
            Some(p) => p.clone(),
            None => pads.ok_or(OpError::MissingInput { index: 1 })?,
        };
        let axes: Vec<usize> = match axes {
            Some(a) => a
                .iter()
                .map(|&x| axis_of(x, rank))
                .collect::<Result<_, _>>()?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() {
            return Err(OpError::value(format!(
                "pads {pads:?} must have 2 entries per padded axis ({} axes)",
                axes.len()
            )));
        }
        let mut out = vec![(0i64, 0i64); rank];
        let k = axes.len();
        for (i, &a) in axes.iter().enumerate() {
            out[a] = (pads[i], pads[i + k]);
        }
        Ok(out)
    }

    fn out_shape(&self, s: &[usize], pads: &[(i64, i64)]) -> Result<Vec<usize>, OpError> {
        s.iter()
            .zip(pads)
            .map(|(&d, &(b, e))| {
                let o = (d as i128) + b as i128 + e as i128;
                usize::try_from(o).map_err(|_| {
                    OpError::value(format!("pads ({b}, {e}) remove more than dimension {d}"))
                })
            })
            .collect()
    }

    fn table(&self, d: usize, o: usize, b: i64, stride: usize) -> Result<Vec<usize>, OpError> {
        let n = d as i64;
        (0..o)
            .map(|i| {
                let c = i as i64 - b;
                let src = if (0..n).contains(&c) {
                    Some(c)
                } else {
                    match self.mode {
                        PadMode::Constant => None,
                        _ if n == 0 => {
                            return Err(OpError::value(
                                "cannot pad an empty dimension in reflect, edge or wrap mode",
                            ))
                        }
                        PadMode::Edge => Some(c.clamp(0, n - 1)),
                        PadMode::Wrap => Some(c.rem_euclid(n)),
                        PadMode::Reflect if n == 1 => Some(0),
                        PadMode::Reflect => {
                            let m = 2 * (n - 1);
                            let r = c.rem_euclid(m);
                            Some(if r >= n { m - r } else { r })
                        }
                    }
                };
                Ok(src.map_or(FILL, |c| c as usize * stride))
            })
            .collect()
    }
}

impl Op for Pad {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let pads = if self.attr_pads.is_some() {
            None
        } else {
            known_ints(inputs, 1)?
        };
        let axes = if self.attr_pads.is_some() {
            None
        } else {
            known_ints(inputs, 3)?
        };
        let p = self.pads(x.ty.shape.len(), pads, axes)?;
        one(x.ty.dtype, self.out_shape(&x.ty.shape, &p)?)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (pads, axes, value) = if self.attr_pads.is_some() {
            (None, None, None)
        } else {
            (
                run_ints(inputs, 1)?,
                run_ints(inputs, 3)?,
                opt_input(inputs, 2),
            )
        };
        let p = self.pads(x.rank(), pads, axes)?;
        let out = self.out_shape(x.shape(), &p)?;
        let st = strides(x.shape());
        let tables = (0..out.len())
            .map(|d| self.table(x.shape()[d], out[d], p[d].0, st[d]))
            .collect::<Result<Vec<_>, _>>()?;
        let fill = match value {
            Some(v) if v.dtype() != x.dtype() => {
                return Err(OpError::DTypeMismatch {
                    expected: x.dtype(),
                    actual: v.dtype(),
                })
            }
            Some(v) if !v.is_empty() => v.data().clone(),
            _ => scalar_from_f64(x.dtype(), self.attr_value as f64)?,
        };
        Ok(vec![tensor(
            out,
            remap(x.data(), &tables, Some(&fill), ctx),
        )?])
    }
}

/// `CenterCropPad` (opset 18): each listed axis (all by default) cropped or padded
/// with zeros to the size its `shape` entry gives, centred (the extra element of an
/// odd difference at the end). It is a constant-mode `Pad` whose pads are negative
/// where it crops.
#[derive(Debug)]
struct CenterCropPad {
    axes: Option<Vec<i64>>,
}

impl CenterCropPad {
    /// The `Pad` that does it for input shape `x` and target sizes `shape`.
    fn pad(&self, x: &[usize], shape: &[i64]) -> Result<Pad, OpError> {
        let rank = x.len();
        let axes: Vec<usize> = match &self.axes {
            Some(a) => a
                .iter()
                .map(|&v| axis_of(v, rank))
                .collect::<Result<_, _>>()?,
            None => (0..rank).collect(),
        };
        if shape.len() != axes.len() {
            return Err(OpError::value(format!(
                "CenterCropPad: shape {shape:?} has {} entries for {} axes",
                shape.len(),
                axes.len()
            )));
        }
        let mut pads = vec![0i64; 2 * rank];
        for (&a, &target) in axes.iter().zip(shape) {
            if target < 0 {
                return Err(OpError::value(format!(
                    "CenterCropPad: size {target} for axis {a} is negative"
                )));
            }
            let diff = target - x[a] as i64;
            // Crop: drop ⌊d/2⌋ at the start; pad: add ⌊d/2⌋ at the start.
            let begin = if diff < 0 { -((-diff) / 2) } else { diff / 2 };
            pads[a] = begin;
            pads[rank + a] = diff - begin;
        }
        Ok(Pad {
            mode: PadMode::Constant,
            attr_pads: Some(pads),
            attr_value: 0.0,
        })
    }
}

impl Op for CenterCropPad {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 2)?;
        let x = infer_input(inputs, 0)?;
        let shape = known_ints(inputs, 1)?.ok_or(OpError::MissingInput { index: 1 })?;
        let pad = self.pad(&x.ty.shape, &shape)?;
        pad.infer(&inputs[..1])
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        check_count(inputs.len(), 2, 2)?;
        let x = input(inputs, 0)?;
        let shape = run_ints(inputs, 1)?.ok_or(OpError::MissingInput { index: 1 })?;
        self.pad(x.shape(), &shape)?.run(&inputs[..1], ctx)
    }
}

/// One element of `dtype` holding `v` (rounded to the nearest representable value; for
/// integers, truncated and saturated; for bools, `v != 0`).
pub(crate) fn scalar_from_f64(dtype: DType, v: f64) -> Result<TensorData, OpError> {
    Ok(match dtype {
        DType::F32 => TensorData::F32(vec![v as f32]),
        DType::F64 => TensorData::F64(vec![v]),
        DType::F16 => TensorData::F16(vec![f16::from_f64(v)]),
        DType::BF16 => TensorData::BF16(vec![bf16::from_f64(v)]),
        DType::I8 => TensorData::I8(vec![v as i8]),
        DType::I16 => TensorData::I16(vec![v as i16]),
        DType::I32 => TensorData::I32(vec![v as i32]),
        DType::I64 => TensorData::I64(vec![v as i64]),
        DType::U8 => TensorData::U8(vec![v as u8]),
        DType::U16 => TensorData::U16(vec![v as u16]),
        DType::U32 => TensorData::U32(vec![v as u32]),
        DType::U64 => TensorData::U64(vec![v as u64]),
        DType::Bool => TensorData::Bool(vec![v != 0.0]),
        DType::Str => TensorData::Str(vec![String::new()]),
        // The low-bit dtypes: `v` converted as `Cast` with `saturate` 0 converts it.
        // float8e8m0 has no zero: 0 becomes its NaN, as in ONNX's reference `Pad`.
        d if d.is_low_bit() => {
            let opts = super::cast::CastOpts {
                saturate: false,
                ..super::cast::CastOpts::default()
            };
            super::cast::cast_with(&Tensor::scalar(v), d, opts)?
                .into_parts()
                .1
        }
        d => return Err(OpError::DType { index: 0, dtype: d }),
    })
}

// ---------------------------------------------------------------------------------
// DepthToSpace / SpaceToDepth
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct DepthSpace {
    block: usize,
    to_space: bool,
    crd: bool,
}

fn crd_mode(n: &NodeInfo<'_>) -> Result<bool, OpError> {
    match n.attrs.string("mode", "DCR")?.as_str() {
        "DCR" => Ok(false),
        "CRD" => Ok(true),
        m => Err(OpError::bad_attr("mode", format!("unknown mode `{m}`"))),
    }
}

fn build_depth_to_space(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(DepthSpace {
        block: block_size(n)?,
        to_space: true,
        crd: crd_mode(n)?,
    }))
}

fn build_space_to_depth(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(DepthSpace {
        block: block_size(n)?,
        to_space: false,
        crd: crd_mode(n)?,
    }))
}

fn block_size(n: &NodeInfo<'_>) -> Result<usize, OpError> {
    let b = n.attrs.req_int("blocksize")?;
    if b < 1 {
        return Err(OpError::bad_attr("blocksize", format!("{b} is not >= 1")));
    }
    Ok(b as usize)
}

impl DepthSpace {
    /// (reshaped input shape, permutation, output shape).
    #[allow(clippy::type_complexity)]
    fn plan(&self, s: &[usize]) -> Result<(Vec<usize>, Vec<usize>, Vec<usize>), OpError> {
        let [n, c, h, w] = s else {
            return Err(OpError::shape(format!("expected a 4-D input, got {s:?}")));
        };
        let (n, c, h, w, b) = (*n, *c, *h, *w, self.block);
        let too_large = || OpError::shape(format!("blocksize {b} is too large for {s:?}"));
        let bb = b.checked_mul(b).ok_or_else(too_large)?;
        if self.to_space {
            let (hb, wb) = (
                h.checked_mul(b).ok_or_else(too_large)?,
                w.checked_mul(b).ok_or_else(too_large)?,
            );
            if c % bb != 0 {
                return Err(OpError::shape(format!(
                    "channels {c} are not a multiple of blocksize² {}",
                    bb
                )));
            }
            let c2 = c / bb;
            let out = vec![n, c2, hb, wb];
            if self.crd {
                Ok((vec![n, c2, b, b, h, w], vec![0, 1, 4, 2, 5, 3], out))
            } else {
                Ok((vec![n, b, b, c2, h, w], vec![0, 3, 4, 1, 5, 2], out))
            }
        } else {
            if h % b != 0 || w % b != 0 {
                return Err(OpError::shape(format!(
                    "spatial size {h}×{w} is not a multiple of blocksize {b}"
                )));
            }
            let perm = if self.crd {
                vec![0, 1, 3, 5, 2, 4]
            } else {
                vec![0, 3, 5, 1, 2, 4]
            };
            Ok((
                vec![n, c, h / b, b, w / b, b],
                perm,
                vec![n, c.checked_mul(bb).ok_or_else(too_large)?, h / b, w / b],
            ))
        }
    }
}

impl Op for DepthSpace {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        one(x.ty.dtype, self.plan(&x.ty.shape)?.2)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (mid, perm, out) = self.plan(x.shape())?;
        let data = transpose::transpose(x.data(), &mid, &perm, ctx);
        Ok(vec![tensor(out, data)?])
    }
}

// ---------------------------------------------------------------------------------
// Shape / Size
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct ShapeOp {
    start: i64,
    end: Option<i64>,
}

fn build_shape(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(ShapeOp {
        start: n.attrs.int("start", 0)?,
        end: n.attrs.opt_int("end")?,
    }))
}

impl ShapeOp {
    fn range(&self, rank: usize) -> (usize, usize) {
        let r = rank as i64;
        let clamp = |v: i64| {
            let v = if v < 0 { v + r } else { v };
            v.clamp(0, r) as usize
        };
        let s = clamp(self.start);
        let e = clamp(self.end.unwrap_or(r));
        (s, e.max(s))
    }
}

impl Op for ShapeOp {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let (s, e) = self.range(x.ty.shape.len());
        one(DType::I64, vec![e - s])
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (s, e) = self.range(x.rank());
        let v: Vec<i64> = x.shape()[s..e].iter().map(|&d| d as i64).collect();
        Ok(vec![Tensor::from_vec(vec![v.len()], v)?])
    }
    fn cost(&self, _: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        outputs.iter().map(|t| t.numel()).sum::<u64>().max(1)
    }
}

#[derive(Debug)]
struct Size;

impl Op for Size {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        infer_input(inputs, 0)?;
        one(DType::I64, vec![])
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![Tensor::scalar(input(inputs, 0)?.len() as i64)])
    }
    fn cost(&self, _: &[Option<&TypeInfo>], _: &[TypeInfo]) -> u64 {
        1
    }
}

// ---------------------------------------------------------------------------------
// ConstantOfShape / Range
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct ConstantOfShape {
    value: Tensor,
}

fn build_constant_of_shape(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let value = match n.attrs.tensor("value")? {
        Some(t) if t.len() == 1 => t.clone(),
        Some(t) => {
            return Err(OpError::bad_attr(
                "value",
                format!("must hold one element, holds {}", t.len()),
            ))
        }
        None => Tensor::scalar(0.0f32),
    };
    Ok(Box::new(ConstantOfShape { value }))
}

fn shape_from_ints(v: &[i64]) -> Result<Vec<usize>, OpError> {
    v.iter().map(|&d| dim(d, "dimension")).collect()
}

impl Op for ConstantOfShape {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        infer_input(inputs, 0)?;
        let s = known_ints(inputs, 0)?.unwrap_or_default();
        one(self.value.dtype(), shape_from_ints(&s)?)
    }
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let s = shape_from_ints(&ints_of(input(inputs, 0)?, 0)?)?;
        let tables: Vec<Vec<usize>> = s.iter().map(|&d| vec![0; d]).collect();
        Ok(vec![tensor(
            s,
            remap(self.value.data(), &tables, None, ctx),
        )?])
    }
}

#[derive(Debug)]
struct Range;

/// Element count of `Range`: `max(ceil((limit - start) / delta), 0)`, computed exactly
/// for integers and in the element type's own precision for floats.
fn range_len(start: &Tensor, limit: &Tensor, delta: &Tensor) -> Result<usize, OpError> {
    fn float_len(s: f64, l: f64, d: f64) -> Result<usize, OpError> {
        if d == 0.0 || !d.is_finite() || !s.is_finite() || !l.is_finite() {
            return Err(OpError::value(
                "Range needs finite bounds and a non-zero delta",
            ));
        }
        let n = ((l - s) / d).ceil();
        if n > u32::MAX as f64 {
            return Err(OpError::value("Range output too large"));
        }
        Ok(if n > 0.0 { n as usize } else { 0 })
    }
    let dt = start.dtype();
    for t in [limit, delta] {
        if t.dtype() != dt {
            return Err(OpError::DTypeMismatch {
                expected: dt,
                actual: t.dtype(),
            });
        }
        if t.len() != 1 {
            return Err(OpError::shape("Range inputs must be scalars"));
        }
    }
    if start.len() != 1 {
        return Err(OpError::shape("Range inputs must be scalars"));
    }
    match dt {
        DType::F32 => {
            let g = |t: &Tensor| t.as_slice::<f32>().map_or(0.0, |v| v[0]);
            let (s, l, d) = (g(start), g(limit), g(delta));
            // The quotient is rounded to f32, as the spec computes it in the input type.
            if d == 0.0 || !d.is_finite() || !s.is_finite() || !l.is_finite() {
                return Err(OpError::value(
                    "Range needs finite bounds and a non-zero delta",
                ));
            }
            float_len(0.0, ((l - s) / d) as f64, 1.0)
        }
        DType::F64 => {
            let g = |t: &Tensor| t.as_slice::<f64>().map_or(0.0, |v| v[0]);
            float_len(g(start), g(limit), g(delta))
        }
        DType::F16 | DType::BF16 => {
            let g = |t: &Tensor| half_f32(t).unwrap_or(0.0);
            let (s, l, d) = (g(start), g(limit), g(delta));
            if d == 0.0 || !d.is_finite() || !s.is_finite() || !l.is_finite() {
                return Err(OpError::value(
                    "Range needs finite bounds and a non-zero delta",
                ));
            }
            float_len(0.0, ((l - s) / d) as f64, 1.0)
        }
        DType::I16 | DType::I32 | DType::I64 => {
            let g = |t: &Tensor| -> i128 {
                match t.data() {
                    TensorData::I16(v) => v[0] as i128,
                    TensorData::I32(v) => v[0] as i128,
                    TensorData::I64(v) => v[0] as i128,
                    _ => 0,
                }
            };
            let (s, l, d) = (g(start), g(limit), g(delta));
            if d == 0 {
                return Err(OpError::value("Range delta is zero"));
            }
            // Ceiling division, exact for either sign of delta.
            let (a, b) = if d < 0 { (s - l, -d) } else { (l - s, d) };
            let q = -((-a).div_euclid(b));
            if q > u32::MAX as i128 {
                return Err(OpError::value("Range output too large"));
            }
            Ok(q.max(0) as usize)
        }
        d => Err(OpError::DType { index: 0, dtype: d }),
    }
}

fn half_f32(t: &Tensor) -> Option<f32> {
    match t.data() {
        TensorData::F16(v) => v.first().map(|x| x.to_f32()),
        TensorData::BF16(v) => v.first().map(|x| x.to_f32()),
        _ => None,
    }
}

impl Op for Range {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 3, 3)?;
        let s = infer_input(inputs, 0)?;
        let v = |i: usize| -> Result<&Tensor, OpError> {
            super::util::need_value(infer_input(inputs, i)?, i)
        };
        let n = range_len(v(0)?, v(1)?, v(2)?)?;
        one(s.ty.dtype, vec![n])
    }
    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let (s, l, d) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let n = range_len(s, l, d)?;
        let data = match (s.data(), d.data()) {
            (TensorData::F32(a), TensorData::F32(b)) => {
                TensorData::F32((0..n).map(|i| a[0] + i as f32 * b[0]).collect())
            }
            (TensorData::F64(a), TensorData::F64(b)) => {
                TensorData::F64((0..n).map(|i| a[0] + i as f64 * b[0]).collect())
            }
            (TensorData::F16(a), TensorData::F16(b)) => TensorData::F16(
                (0..n)
                    .map(|i| f16::from_f32(a[0].to_f32() + i as f32 * b[0].to_f32()))
                    .collect(),
            ),
            (TensorData::BF16(a), TensorData::BF16(b)) => TensorData::BF16(
                (0..n)
                    .map(|i| bf16::from_f32(a[0].to_f32() + i as f32 * b[0].to_f32()))
                    .collect(),
            ),
            (TensorData::I16(a), TensorData::I16(b)) => TensorData::I16(
                (0..n)
                    .map(|i| (a[0] as i64 + i as i64 * b[0] as i64) as i16)
                    .collect(),
            ),
            (TensorData::I32(a), TensorData::I32(b)) => TensorData::I32(
                (0..n)
                    .map(|i| (a[0] as i64 + i as i64 * b[0] as i64) as i32)
                    .collect(),
            ),
            (TensorData::I64(a), TensorData::I64(b)) => TensorData::I64(
                (0..n)
                    .map(|i| a[0].wrapping_add((i as i64).wrapping_mul(b[0])))
                    .collect(),
            ),
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: s.dtype(),
                })
            }
        };
        Ok(vec![tensor(vec![n], data)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::{Attr, Attrs};

    #[test]
    fn center_crop_pad_centres_and_puts_the_odd_element_last() {
        // Axis 0: 5 rows cropped to 2 (drop 1 first, 2 last); axis 1: 2 columns padded
        // to 5 (one zero column first, two last).
        let x = Tensor::from_vec(vec![5, 2], (0..10).map(|v| v as f32).collect()).unwrap();
        let shape = Tensor::from_vec(vec![2], vec![2i64, 5]).unwrap();
        let op = CenterCropPad { axes: None };
        let y = op.run(&[Some(&x), Some(&shape)], &Ctx::default()).unwrap();
        assert_eq!(y[0].shape(), &[2, 5]);
        assert_eq!(
            y[0].as_slice::<f32>().unwrap(),
            &[0.0, 2.0, 3.0, 0.0, 0.0, 0.0, 4.0, 5.0, 0.0, 0.0]
        );
        // Only the listed axis changes.
        let one = Tensor::from_vec(vec![1], vec![3i64]).unwrap();
        let op = CenterCropPad {
            axes: Some(vec![-2]),
        };
        let y = op.run(&[Some(&x), Some(&one)], &Ctx::default()).unwrap();
        assert_eq!(
            y[0].as_slice::<f32>().unwrap(),
            &[2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        );
        let bad = Tensor::from_vec(vec![1], vec![-1i64]).unwrap();
        assert!(op.run(&[Some(&x), Some(&bad)], &Ctx::default()).is_err());
    }

    pub(crate) fn node<'a>(
        op: &'a str,
        opset: i64,
        attrs: &'a Attrs,
        n_out: usize,
    ) -> NodeInfo<'a> {
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

    fn f32s(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_vec(shape.to_vec(), (0..n).map(|i| i as f32).collect()).unwrap()
    }

    fn i64s(v: &[i64]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }

    fn run(op: &dyn Op, ins: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        // Check infer agrees with run, with every input value known.
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

    fn small_tensor() -> impl proptest::strategy::Strategy<Value = Tensor> {
        use proptest::prelude::*;
        prop::collection::vec(0usize..4, 0..4).prop_flat_map(|shape| {
            let n: usize = shape.iter().product();
            prop::collection::vec(-3i64..5, n)
                .prop_map(move |v| Tensor::from_vec(shape.clone(), v).unwrap())
        })
    }

    /// Planning then running either fails with a typed error or agrees with the plan.
    fn plan_and_run(op: &dyn Op, ins: &[Option<&Tensor>]) {
        let tys: Vec<Option<TypeInfo>> = ins.iter().map(|t| t.map(TypeInfo::of)).collect();
        let inf: Vec<Option<InferInput<'_>>> = tys
            .iter()
            .zip(ins)
            .map(|(ty, t)| ty.as_ref().map(|ty| InferInput { ty, value: *t }))
            .collect();
        let planned = op.infer(&inf);
        // Large planned outputs would be refused by the planner's limits; skip them.
        if planned
            .as_ref()
            .is_ok_and(|p| p.iter().any(|t| t.numel() > 1 << 16))
        {
            return;
        }
        let out = op.run(ins, &Ctx::default());
        if let (Ok(p), Ok(o)) = (planned, out) {
            for (o, p) in o.iter().zip(&p) {
                assert_eq!(&TypeInfo::of(o), p);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        #[test]
        fn bad_shapes_never_panic(
            data in small_tensor(),
            arg in small_tensor(),
            more in small_tensor(),
            axis in -4i64..4,
        ) {
            let mut a = Attrs::default();
            a.0.insert("axis".into(), Attr::Int(axis));
            a.0.insert("blocksize".into(), Attr::Int(axis.abs().max(1)));
            a.0.insert("mode".into(), Attr::String(b"reflect".to_vec()));
            let builders: [(&str, crate::ops::Builder); 12] = [
                ("Reshape", build_reshape),
                ("Flatten", build_flatten),
                ("Squeeze", build_squeeze),
                ("Unsqueeze", build_unsqueeze),
                ("Concat", build_concat),
                ("Split", build_split),
                ("Expand", |_| Ok(Box::new(Expand))),
                ("Tile", |_| Ok(Box::new(Tile))),
                ("Pad", build_pad),
                ("SpaceToDepth", build_space_to_depth),
                ("ConstantOfShape", build_constant_of_shape),
                ("Range", |_| Ok(Box::new(Range))),
            ];
            for (name, build) in builders {
                let Ok(op) = build(&node(name, 19, &a, 2)) else { continue };
                plan_and_run(op.as_ref(), &[Some(&data), Some(&arg), Some(&more)]);
                plan_and_run(op.as_ref(), &[Some(&data), Some(&arg)]);
                plan_and_run(op.as_ref(), &[Some(&data)]);
            }
        }
    }

    #[test]
    fn reshape_zero_and_infer() {
        assert_eq!(
            reshape_shape(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert_eq!(reshape_shape(&[0, 3], &[3, 0], true).unwrap(), vec![3, 0]);
        assert!(reshape_shape(&[2, 3], &[-1, -1], false).is_err());
        assert!(reshape_shape(&[2, 3], &[4, -1], false).is_err());
        assert!(reshape_shape(&[2, 3], &[0, -1], true).is_err());
        assert!(reshape_shape(&[2, 3], &[-2, 3], false).is_err());
    }

    #[test]
    fn reshape_needs_known_shape() {
        let a = Attrs::default();
        let op = build_reshape(&node("Reshape", 14, &a, 1)).unwrap();
        let t = TypeInfo::new(DType::F32, vec![2, 3]);
        let s = TypeInfo::new(DType::I64, vec![1]);
        let e = op
            .infer(&[
                Some(InferInput {
                    ty: &t,
                    value: None,
                }),
                Some(InferInput {
                    ty: &s,
                    value: None,
                }),
            ])
            .unwrap_err();
        assert_eq!(e, OpError::ValueNeeded { index: 1 });
    }

    #[test]
    fn squeeze_unsqueeze_by_opset() {
        let mut a = Attrs::default();
        a.0.insert("axes".into(), Attr::Ints(vec![0, -1]));
        let x = f32s(&[1, 3, 1]);
        let sq = build_squeeze(&node("Squeeze", 11, &a, 1)).unwrap();
        assert_eq!(run(sq.as_ref(), &[Some(&x)]).unwrap()[0].shape(), &[3]);
        let sq13 = build_squeeze(&node("Squeeze", 13, &a, 1)).unwrap();
        assert_eq!(run(sq13.as_ref(), &[Some(&x)]).unwrap()[0].shape(), &[3]);
        let ax = i64s(&[0]);
        assert_eq!(
            run(sq13.as_ref(), &[Some(&x), Some(&ax)]).unwrap()[0].shape(),
            &[3, 1]
        );
        let bad = i64s(&[1]);
        assert!(run(sq13.as_ref(), &[Some(&x), Some(&bad)]).is_err());
        let un = build_unsqueeze(&node("Unsqueeze", 13, &a, 1)).unwrap();
        let ax = i64s(&[0, 4]);
        assert_eq!(
            run(un.as_ref(), &[Some(&x), Some(&ax)]).unwrap()[0].shape(),
            &[1, 1, 3, 1, 1]
        );
        let un11 = build_unsqueeze(&node("Unsqueeze", 11, &a, 1)).unwrap();
        assert_eq!(
            run(un11.as_ref(), &[Some(&x)]).unwrap()[0].shape(),
            &[1, 1, 3, 1, 1]
        );
    }

    #[test]
    fn concat_and_split_round_trip() {
        let mut a = Attrs::default();
        a.0.insert("axis".into(), Attr::Int(1));
        let x = f32s(&[2, 5]);
        let sp = build_split(&node("Split", 13, &a, 2)).unwrap();
        let sizes = i64s(&[2, 3]);
        let parts = run(sp.as_ref(), &[Some(&x), Some(&sizes)]).unwrap();
        assert_eq!(parts[0].as_slice::<f32>().unwrap(), &[0., 1., 5., 6.]);
        let cat = build_concat(&node("Concat", 13, &a, 1)).unwrap();
        let back = run(cat.as_ref(), &[Some(&parts[0]), Some(&parts[1])]).unwrap();
        assert_eq!(back[0], x);
        // Opset 18 uneven split.
        a.0.insert("num_outputs".into(), Attr::Int(2));
        let sp18 = build_split(&node("Split", 18, &a, 2)).unwrap();
        let parts = run(sp18.as_ref(), &[Some(&x)]).unwrap();
        assert_eq!(parts[0].shape(), &[2, 3]);
        assert_eq!(parts[1].shape(), &[2, 2]);
        // As many parts as the node has outputs: a count from nowhere (here 2^40,
        // which would have listed that many part sizes) is refused while building.
        for k in [1, 3, 1 << 40] {
            a.0.insert("num_outputs".into(), Attr::Int(k));
            assert!(build_split(&node("Split", 18, &a, 2)).is_err(), "{k}");
        }
    }

    #[test]
    fn pad_modes() {
        let x = Tensor::from_vec(vec![3], vec![1i32, 2, 3]).unwrap();
        let pads = i64s(&[2, 2]);
        let mut expect = std::collections::HashMap::new();
        expect.insert("constant", vec![0, 0, 1, 2, 3, 0, 0]);
        expect.insert("reflect", vec![3, 2, 1, 2, 3, 2, 1]);
        expect.insert("edge", vec![1, 1, 1, 2, 3, 3, 3]);
        expect.insert("wrap", vec![2, 3, 1, 2, 3, 1, 2]);
        for (mode, want) in expect {
            let mut a = Attrs::default();
            a.0.insert("mode".into(), Attr::String(mode.as_bytes().to_vec()));
            let op = build_pad(&node("Pad", 19, &a, 1)).unwrap();
            let out = run(op.as_ref(), &[Some(&x), Some(&pads)]).unwrap();
            assert_eq!(out[0].as_slice::<i32>().unwrap(), want.as_slice(), "{mode}");
        }
        // Negative pads crop.
        let a = Attrs::default();
        let op = build_pad(&node("Pad", 19, &a, 1)).unwrap();
        let crop = i64s(&[-1, 0]);
        let out = run(op.as_ref(), &[Some(&x), Some(&crop)]).unwrap();
        assert_eq!(out[0].as_slice::<i32>().unwrap(), &[2, 3]);
    }

    #[test]
    fn expand_tile_range() {
        let x = Tensor::from_vec(vec![3, 1], vec![true, false, true]).unwrap();
        let shape = i64s(&[2, 1, 2]);
        let out = run(&Expand, &[Some(&x), Some(&shape)]).unwrap();
        assert_eq!(out[0].shape(), &[2, 3, 2]);
        assert_eq!(
            out[0].as_slice::<bool>().unwrap(),
            &[true, true, false, false, true, true, true, true, false, false, true, true]
        );
        let s = Tensor::from_vec(vec![2], vec!["a".to_string(), "b".into()]).unwrap();
        let reps = i64s(&[2]);
        let out = run(&Tile, &[Some(&s), Some(&reps)]).unwrap();
        assert_eq!(out[0].as_slice::<String>().unwrap(), &["a", "b", "a", "b"]);
        let (a, b, c) = (
            Tensor::scalar(10i32),
            Tensor::scalar(4i32),
            Tensor::scalar(-3i32),
        );
        let out = run(&Range, &[Some(&a), Some(&b), Some(&c)]).unwrap();
        assert_eq!(out[0].as_slice::<i32>().unwrap(), &[10, 7]);
        let z = Tensor::scalar(0i32);
        assert!(run(&Range, &[Some(&a), Some(&b), Some(&z)]).is_err());
    }

    #[test]
    fn depth_space_round_trip() {
        let x = f32s(&[1, 8, 2, 3]);
        for mode in ["DCR", "CRD"] {
            let mut a = Attrs::default();
            a.0.insert("blocksize".into(), Attr::Int(2));
            a.0.insert("mode".into(), Attr::String(mode.as_bytes().to_vec()));
            let d2s = build_depth_to_space(&node("DepthToSpace", 13, &a, 1)).unwrap();
            let y = run(d2s.as_ref(), &[Some(&x)]).unwrap();
            assert_eq!(y[0].shape(), &[1, 2, 4, 6]);
            {
                let s2d = build_space_to_depth(&node("SpaceToDepth", 13, &a, 1)).unwrap();
                let back = run(s2d.as_ref(), &[Some(&y[0])]).unwrap();
                assert_eq!(back[0], x);
            }
        }
    }

    #[test]
    fn shape_slices() {
        let x = f32s(&[2, 3, 4]);
        let mut a = Attrs::default();
        a.0.insert("start".into(), Attr::Int(-2));
        let op = build_shape(&node("Shape", 15, &a, 1)).unwrap();
        let out = run(op.as_ref(), &[Some(&x)]).unwrap();
        assert_eq!(out[0].as_slice::<i64>().unwrap(), &[3, 4]);
    }
}
