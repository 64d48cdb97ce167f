//! Operators whose output size depends on their input values: `Unique` and
//! `NonMaxSuppression`.
//!
//! Every output shape is fixed while planning, so both need their inputs' values
//! then (`OpError::ValueNeeded`): they run on graph inputs small enough to be known
//! while planning (the plan then holds for those values only, `Plan::accepts`) or on
//! values computed from such inputs and constants. Inference computes the result once
//! to learn its size; the run computes it again, the same way.

use std::cmp::Ordering;

use deed_types::tensor::Element;
use deed_types::{with_data, DType, Tensor, TensorData};

use super::util::{check_count, infer_input, input, need_value, norm_axis, opt_input, to_i64s};
use super::{InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::ctx::Ctx;
use crate::error::OpError;

/// Registers `Unique` and `NonMaxSuppression`.
pub fn register(r: &mut Registry) {
    r.add("Unique", build_unique);
    r.add("NonMaxSuppression", build_nms);
}

/// The values of every present input while planning, or the first one missing.
fn known<'a>(inputs: &[Option<InferInput<'a>>]) -> Result<Vec<Option<&'a Tensor>>, OpError> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, x)| x.map(|x| need_value(x, i)).transpose())
        .collect()
}

// ---------------------------------------------------------------------------------
// Unique
// ---------------------------------------------------------------------------------

/// One element as `Unique` orders it: numbers by value (floats widened exactly to
/// f64, `−0 = +0`, every NaN equal and after every number), strings by their UTF-8
/// bytes.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Int(i128),
    Float(f64),
    Str(String),
}

impl Eq for Key {}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Int(a), Key::Int(b)) => a.cmp(b),
            (Key::Float(a), Key::Float(b)) => match (a.is_nan(), b.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            },
            (Key::Str(a), Key::Str(b)) => a.as_bytes().cmp(b.as_bytes()),
            // One tensor holds one kind.
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Key {
    fn rank(&self) -> u8 {
        match self {
            Key::Int(_) => 0,
            Key::Float(_) => 1,
            Key::Str(_) => 2,
        }
    }
}

fn keys(t: &Tensor) -> Result<Vec<Key>, OpError> {
    let ints = |v: Vec<i128>| v.into_iter().map(Key::Int).collect();
    Ok(match t.data() {
        TensorData::F32(v) => v.iter().map(|&x| Key::Float(x.into())).collect(),
        TensorData::F64(v) => v.iter().map(|&x| Key::Float(x)).collect(),
        TensorData::F16(v) => v.iter().map(|&x| Key::Float(x.to_f64())).collect(),
        TensorData::BF16(v) => v.iter().map(|&x| Key::Float(x.to_f64())).collect(),
        TensorData::Str(v) => v.iter().cloned().map(Key::Str).collect(),
        TensorData::Bool(v) => ints(v.iter().map(|&b| i128::from(b)).collect()),
        TensorData::U8(v) => ints(v.iter().map(|&x| x.into()).collect()),
        TensorData::I8(v) => ints(v.iter().map(|&x| x.into()).collect()),
        TensorData::U16(v) => ints(v.iter().map(|&x| x.into()).collect()),
        TensorData::I16(v) => ints(v.iter().map(|&x| x.into()).collect()),
        TensorData::I32(v) => ints(v.iter().map(|&x| x.into()).collect()),
        TensorData::I64(v) => ints(v.iter().map(|&x| x.into()).collect()),
        TensorData::U32(v) => ints(v.iter().map(|&x| x.into()).collect()),
        TensorData::U64(v) => ints(v.iter().map(|&x| x.into()).collect()),
        // The low-bit dtypes are not among `Unique`'s types.
        _ => {
            return Err(OpError::DType {
                index: 0,
                dtype: t.dtype(),
            })
        }
    })
}

#[derive(Debug)]
struct Unique {
    axis: Option<i64>,
    sorted: bool,
}

fn build_unique(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 1, 1)?;
    Ok(Box::new(Unique {
        axis: n.attrs.opt_int("axis")?,
        sorted: n.attrs.int("sorted", 1)? != 0,
    }))
}

/// What `Unique` finds: for each unique slice (in output order) the index of its
/// first occurrence and its count, and for each input slice its unique's position.
struct Found {
    first: Vec<usize>,
    counts: Vec<usize>,
    inverse: Vec<usize>,
    /// The input's shape with the unique axis (or the flattened input), and that axis.
    shape: Vec<usize>,
    axis: usize,
}

impl Unique {
    fn find(&self, x: &Tensor) -> Result<Found, OpError> {
        let (shape, axis) = match self.axis {
            None => (vec![x.len()], 0),
            Some(a) => (x.shape().to_vec(), norm_axis(a, x.rank())?),
        };
        let len = shape.get(axis).copied().unwrap_or(0);
        let outer = shape[..axis].iter().product::<usize>();
        let inner = shape[axis + 1..].iter().product::<usize>();
        let k = keys(x)?;
        // Slice `i` along the axis, in row-major order of the other axes.
        let slice = |i: usize| {
            (0..outer).flat_map(move |o| {
                let at = (o * len + i) * inner;
                at..at + inner
            })
        };
        let cmp = |a: &usize, b: &usize| {
            slice(*a)
                .zip(slice(*b))
                .map(|(p, q)| k[p].cmp(&k[q]))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        };
        // A stable sort: each run of equal slices starts at its first occurrence.
        let mut order: Vec<usize> = (0..len).collect();
        order.sort_by(cmp);
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for &i in &order {
            match groups.last_mut() {
                Some((first, members)) if cmp(first, &i) == Ordering::Equal => members.push(i),
                _ => groups.push((i, vec![i])),
            }
        }
        if !self.sorted {
            groups.sort_by_key(|(first, _)| *first);
        }
        let mut inverse = vec![0; len];
        for (u, (_, members)) in groups.iter().enumerate() {
            for &m in members {
                inverse[m] = u;
            }
        }
        Ok(Found {
            first: groups.iter().map(|(f, _)| *f).collect(),
            counts: groups.iter().map(|(_, m)| m.len()).collect(),
            inverse,
            shape,
            axis,
        })
    }

    fn types(&self, x: &TypeInfo, f: &Found) -> Vec<TypeInfo> {
        let mut y = f.shape.clone();
        if let Some(d) = y.get_mut(f.axis) {
            *d = f.first.len();
        }
        vec![
            TypeInfo::new(x.dtype, y),
            TypeInfo::new(DType::I64, vec![f.first.len()]),
            TypeInfo::new(DType::I64, vec![f.inverse.len()]),
            TypeInfo::new(DType::I64, vec![f.counts.len()]),
        ]
    }
}

fn gather_slices<T: Element>(v: &[T], f: &Found) -> TensorData {
    let len = f.shape.get(f.axis).copied().unwrap_or(0);
    let outer = f.shape[..f.axis].iter().product::<usize>();
    let inner = f.shape[f.axis + 1..].iter().product::<usize>();
    let mut out = Vec::with_capacity(outer * f.first.len() * inner);
    for o in 0..outer {
        for &i in &f.first {
            let at = (o * len + i) * inner;
            out.extend_from_slice(&v[at..at + inner]);
        }
    }
    T::wrap(out)
}

fn i64s(v: &[usize]) -> Result<Tensor, OpError> {
    Ok(Tensor::from_vec(
        vec![v.len()],
        v.iter().map(|&i| i as i64).collect::<Vec<i64>>(),
    )?)
}

impl Op for Unique {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let x = infer_input(inputs, 0)?;
        let f = self.find(need_value(x, 0)?)?;
        Ok(self.types(x.ty, &f))
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        // A sort: about log2(n) comparisons per element.
        let n: u64 = inputs.iter().flatten().map(|t| t.numel()).sum();
        let log = u64::from(64 - n.leading_zeros());
        n.saturating_mul(log.max(1))
            .saturating_add(outputs.iter().map(|t| t.numel()).sum::<u64>())
            .max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let f = self.find(x)?;
        let types = self.types(&TypeInfo::of(x), &f);
        let y = with_data!(x.data(), v => gather_slices(v, &f));
        Ok(vec![
            Tensor::new(types[0].shape.clone(), y)?,
            i64s(&f.first)?,
            i64s(&f.inverse)?,
            i64s(&f.counts)?,
        ])
    }
}

// ---------------------------------------------------------------------------------
// NonMaxSuppression
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Nms {
    center_point_box: bool,
}

fn build_nms(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 2, 5)?;
    let center_point_box = match n.attrs.int("center_point_box", 0)? {
        0 => false,
        1 => true,
        v => {
            return Err(OpError::bad_attr(
                "center_point_box",
                format!("{v} (0 or 1)"),
            ))
        }
    };
    Ok(Box::new(Nms { center_point_box }))
}

/// Python's `max(a, b)`: `b` only when it is greater (so a NaN `a` stays).
fn py_max(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
}

/// Python's `min(a, b)`: `b` only when it is smaller.
fn py_min(a: f32, b: f32) -> f32 {
    if b < a {
        b
    } else {
        a
    }
}

/// `(min, max)` of a box edge pair, as ONNX's reference orders them.
fn ordered(a: f32, b: f32) -> (f32, f32) {
    if a >= b {
        (b, a)
    } else {
        (a, b)
    }
}

impl Nms {
    /// The box's `(x_min, x_max, y_min, y_max)`, each operation rounded to f32.
    fn edges(&self, b: &[f32]) -> (f32, f32, f32, f32) {
        if self.center_point_box {
            let (w, h) = (b[2] / 2.0, b[3] / 2.0);
            (b[0] - w, b[0] + w, b[1] - h, b[1] + h)
        } else {
            let (x0, x1) = ordered(b[1], b[3]);
            let (y0, y1) = ordered(b[0], b[2]);
            (x0, x1, y0, y1)
        }
    }

    /// Whether box `a` suppresses box `b`: their intersection over union, in f32,
    /// exceeds `iou`.
    fn suppresses(&self, a: &[f32], b: &[f32], iou: f32) -> bool {
        let (ax0, ax1, ay0, ay1) = self.edges(a);
        let (bx0, bx1, by0, by1) = self.edges(b);
        let ix0 = py_max(ax0, bx0);
        let ix1 = py_min(ax1, bx1);
        if ix1 <= ix0 {
            return false;
        }
        let iy0 = py_max(ay0, by0);
        let iy1 = py_min(ay1, by1);
        if iy1 <= iy0 {
            return false;
        }
        let inter = (ix1 - ix0) * (iy1 - iy0);
        if inter <= 0.0 {
            return false;
        }
        let area_a = (ax1 - ax0) * (ay1 - ay0);
        let area_b = (bx1 - bx0) * (by1 - by0);
        let union = area_a + area_b - inter;
        if area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
            return false;
        }
        inter / union > iou
    }

    /// The selected `[batch, class, box]` triples.
    fn select(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<[i64; 3]>, OpError> {
        let boxes = input(inputs, 0)?;
        let scores = input(inputs, 1)?;
        let (bv, sv) = match (boxes.as_slice::<f32>(), scores.as_slice::<f32>()) {
            (Some(b), Some(s)) => (b, s),
            (None, _) => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: boxes.dtype(),
                })
            }
            (_, None) => {
                return Err(OpError::DType {
                    index: 1,
                    dtype: scores.dtype(),
                })
            }
        };
        let (&[batches, n, 4], &[sb, classes, sn]) = (boxes.shape(), scores.shape()) else {
            return Err(OpError::shape(format!(
                "boxes must be [batches, boxes, 4] and scores [batches, classes, boxes], got {:?} and {:?}",
                boxes.shape(),
                scores.shape()
            )));
        };
        if sb != batches || sn != n {
            return Err(OpError::shape(format!(
                "boxes {:?} and scores {:?} disagree",
                boxes.shape(),
                scores.shape()
            )));
        }
        let first_f32 = |i: usize| -> Result<Option<f32>, OpError> {
            match opt_input(inputs, i) {
                None => Ok(None),
                Some(t) => match t.as_slice::<f32>() {
                    Some([]) => Ok(None),
                    Some(v) => Ok(Some(v[0])),
                    None => Err(OpError::DType {
                        index: i,
                        dtype: t.dtype(),
                    }),
                },
            }
        };
        let max_out = match opt_input(inputs, 2) {
            None => 0,
            Some(t) => to_i64s(t)?.first().copied().unwrap_or(0).max(0) as u64,
        };
        let iou = first_f32(3)?.unwrap_or(0.0);
        let threshold = first_f32(4)?;
        let mut out = Vec::new();
        for b in 0..batches {
            let bx = &bv[b * n * 4..(b + 1) * n * 4];
            for c in 0..classes {
                let s = &sv[(b * classes + c) * n..(b * classes + c + 1) * n];
                // Candidates by score, highest first (NaN after every number), ties
                // by box index.
                let mut cand: Vec<usize> = (0..n)
                    .filter(|&i| threshold.is_none_or(|t| s[i] > t))
                    .collect();
                cand.sort_by(|&i, &j| {
                    let (a, b) = (s[i], s[j]);
                    match (a.is_nan(), b.is_nan()) {
                        (true, true) => Ordering::Equal,
                        (true, false) => Ordering::Greater,
                        (false, true) => Ordering::Less,
                        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
                    }
                    .then(i.cmp(&j))
                });
                let mut kept: Vec<usize> = Vec::new();
                for i in cand {
                    if kept.len() as u64 >= max_out {
                        break;
                    }
                    let bi = &bx[i * 4..i * 4 + 4];
                    if !kept
                        .iter()
                        .any(|&k| self.suppresses(bi, &bx[k * 4..k * 4 + 4], iou))
                    {
                        kept.push(i);
                        out.push([b as i64, c as i64, i as i64]);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Op for Nms {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let vals = known(inputs)?;
        let k = self.select(&vals)?.len();
        Ok(vec![TypeInfo::new(DType::I64, vec![k, 3])])
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        // Each candidate against each kept box of its class, at worst.
        let per_class = inputs
            .first()
            .copied()
            .flatten()
            .and_then(|b| b.shape.get(1).copied())
            .unwrap_or(0) as u64;
        let scores: u64 = inputs.get(1).copied().flatten().map_or(0, |t| t.numel());
        scores
            .saturating_mul(per_class.max(1))
            .saturating_add(outputs.iter().map(|t| t.numel()).sum::<u64>())
            .max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let sel = self.select(inputs)?;
        let flat: Vec<i64> = sel.iter().flatten().copied().collect();
        Ok(vec![Tensor::from_vec(vec![sel.len(), 3], flat)?])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn unique(x: Tensor, axis: Option<i64>, sorted: bool) -> Vec<Tensor> {
        Unique { axis, sorted }
            .run(&[Some(&x)], &Ctx::default())
            .unwrap()
    }

    fn ints(t: &Tensor) -> Vec<i64> {
        t.as_slice::<i64>().unwrap().to_vec()
    }

    #[test]
    fn unique_orders_zeros_and_nans_canonically() {
        let x = Tensor::from_vec(
            vec![7],
            vec![2.0f32, f32::NAN, -0.0, 1.0, 0.0, f32::NAN, 2.0],
        )
        .unwrap();
        let out = unique(x.clone(), None, true);
        let y = out[0].as_slice::<f32>().unwrap();
        // −0 and +0 are one value (the first met, −0); every NaN is one, last.
        assert_eq!(y.len(), 4);
        assert_eq!(y[0].to_bits(), (-0.0f32).to_bits());
        assert_eq!(&y[1..3], &[1.0, 2.0]);
        assert!(y[3].is_nan());
        assert_eq!(ints(&out[1]), [2, 3, 0, 1]);
        assert_eq!(ints(&out[2]), [2, 3, 0, 1, 0, 3, 2]);
        assert_eq!(ints(&out[3]), [2, 1, 2, 2]);
        // Unsorted: by first occurrence.
        let out = unique(x, None, false);
        assert_eq!(ints(&out[1]), [0, 1, 2, 3]);
        assert_eq!(ints(&out[2]), [0, 1, 2, 3, 2, 1, 0]);
        assert_eq!(ints(&out[3]), [2, 2, 2, 1]);
    }

    #[test]
    fn unique_along_an_axis_compares_whole_slices() {
        // Columns of [[1, 0, 1], [2, 5, 2]]: (1, 2), (0, 5), (1, 2).
        let x = Tensor::from_vec(vec![2, 3], vec![1i64, 0, 1, 2, 5, 2]).unwrap();
        let out = unique(x, Some(-1), true);
        assert_eq!(out[0].shape(), &[2, 2]);
        assert_eq!(ints(&out[0]), [0, 1, 5, 2]);
        assert_eq!(ints(&out[1]), [1, 0]);
        assert_eq!(ints(&out[2]), [1, 0, 1]);
        assert_eq!(ints(&out[3]), [1, 2]);
        let s = Tensor::from_vec(vec![3], vec!["b".to_owned(), "a".into(), "b".into()]).unwrap();
        let out = unique(s, None, true);
        assert_eq!(out[0].as_slice::<String>().unwrap(), ["a", "b"]);
    }

    fn nms(boxes: Vec<f32>, scores: Vec<f32>, max: Option<i64>, iou: f32) -> Vec<i64> {
        let n = scores.len();
        let b = Tensor::from_vec(vec![1, n, 4], boxes).unwrap();
        let s = Tensor::from_vec(vec![1, 1, n], scores).unwrap();
        let m = max.map(|m| Tensor::from_vec(vec![1], vec![m]).unwrap());
        let i = Tensor::from_vec(vec![1], vec![iou]).unwrap();
        let out = Nms {
            center_point_box: false,
        }
        .run(&[Some(&b), Some(&s), m.as_ref(), Some(&i)], &Ctx::default())
        .unwrap();
        out[0]
            .as_slice::<i64>()
            .unwrap()
            .iter()
            .skip(2)
            .step_by(3)
            .copied()
            .collect()
    }

    #[test]
    fn nms_keeps_the_best_box_of_each_overlapping_group() {
        // Boxes 0 and 1 overlap (IoU 0.81); box 2 stands apart.
        let boxes = vec![
            0.0, 0.0, 1.0, 1.0, //
            0.0, 0.1, 1.0, 1.0, //
            5.0, 5.0, 6.0, 6.0,
        ];
        assert_eq!(
            nms(boxes.clone(), vec![0.8, 0.9, 0.7], Some(10), 0.5),
            [1, 2]
        );
        // Above the IoU the overlap is kept; a tie in score goes to the lower index.
        assert_eq!(
            nms(boxes.clone(), vec![0.9, 0.9, 0.7], Some(10), 0.9),
            [0, 1, 2]
        );
        // At most max_output_boxes_per_class, and none without it.
        assert_eq!(nms(boxes.clone(), vec![0.8, 0.9, 0.7], Some(1), 0.5), [1]);
        assert!(nms(boxes.clone(), vec![0.8, 0.9, 0.7], None, 0.5).is_empty());
        // A NaN score ranks after every number.
        assert_eq!(nms(boxes, vec![f32::NAN, 0.1, 0.7], Some(10), 0.5), [2, 1]);
    }
}
