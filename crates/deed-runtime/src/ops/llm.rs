//! Operators of recent language-model and state-space exports: `SwiGLU` (opset 28, the
//! gated activation of Llama-style MLPs), `TensorScatter` (opset 24, the key/value
//! cache update) and `CausalConvWithState` (opset 27, the depthwise causal convolution
//! of Mamba and Gated DeltaNet blocks).
//!
//! `SwiGLU` and `CausalConvWithState` are defined by ONNX function bodies. They compute
//! exactly what those bodies compute with the crate's semantics for each operator in
//! them, by running those operators' kernels: the same bits as the `_expanded` graphs.

use deed_types::tensor::Element;
use deed_types::{with_data, DType, Tensor, TensorData};

use super::binary::{binary, BKind};
use super::cast::cast;
use super::conv::Conv;
use super::unary::{Kind, Unary};
use super::util::{check_count, infer_input, input, norm_axis, one, opt_infer_input, opt_input};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

pub(crate) fn register(r: &mut Registry) {
    r.add("SwiGLU", |n| {
        check_count(n.num_inputs, 2, 2)?;
        Ok(Box::new(SwiGlu {
            alpha: n.attrs.float("alpha", 1.0)?,
        }))
    });
    r.add("TensorScatter", build_tensor_scatter);
    r.add("CausalConvWithState", build_causal_conv);
}

/// `SwiGLU`: `Y = Swish_alpha(A) · B`, as its function body — the crate's `Swish`,
/// then its `Mul` — with `A` and `B` of one shape (no broadcasting).
#[derive(Debug)]
struct SwiGlu {
    alpha: f32,
}

impl Op for SwiGlu {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 2)?;
        let a = infer_input(inputs, 0)?;
        let b = infer_input(inputs, 1)?;
        if !a.ty.dtype.is_float() {
            return Err(OpError::DType {
                index: 0,
                dtype: a.ty.dtype,
            });
        }
        if b.ty.dtype != a.ty.dtype {
            return Err(OpError::DTypeMismatch {
                expected: a.ty.dtype,
                actual: b.ty.dtype,
            });
        }
        if a.ty.shape != b.ty.shape {
            return Err(OpError::shape(format!(
                "SwiGLU takes A and B of one shape (no broadcasting), got {:?} and {:?}",
                a.ty.shape, b.ty.shape
            )));
        }
        one(a.ty.dtype, a.ty.shape.clone())
    }

    fn cost(&self, _: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        outputs
            .iter()
            .map(|t| t.numel())
            .sum::<u64>()
            .saturating_mul(5)
            .max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let a = input(inputs, 0)?;
        let b = input(inputs, 1)?;
        if a.shape() != b.shape() {
            return Err(OpError::shape(format!(
                "SwiGLU takes A and B of one shape, got {:?} and {:?}",
                a.shape(),
                b.shape()
            )));
        }
        let swish = Unary {
            kind: Kind::Swish { alpha: self.alpha },
        };
        let gate = first(swish.run(&[Some(a)], ctx)?)?;
        Ok(vec![binary(ctx, BKind::Mul, &gate, b)?])
    }
}

/// The first output of an operator run.
fn first(outputs: Vec<Tensor>) -> Result<Tensor, OpError> {
    outputs
        .into_iter()
        .next()
        .ok_or_else(|| OpError::shape("an inner operator gave no output"))
}

/// `TensorScatter`: the cache with the update written along `axis` from each batch
/// element's write index (`linear`: the index must leave room for the update;
/// `circular`: positions wrap modulo the cache length).
#[derive(Debug)]
struct TensorScatter {
    circular: bool,
    axis: i64,
}

fn build_tensor_scatter(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 2, 3)?;
    let circular = match n.attrs.string("mode", "linear")?.as_str() {
        "linear" => false,
        "circular" => true,
        m => {
            return Err(OpError::BadAttribute {
                name: "mode".into(),
                reason: format!("`{m}` is not linear or circular"),
            })
        }
    };
    Ok(Box::new(TensorScatter {
        circular,
        axis: n.attrs.int("axis", -2)?,
    }))
}

impl TensorScatter {
    /// The sequence axis of a cache of rank `rank` (never the batch axis).
    fn axis(&self, rank: usize) -> Result<usize, OpError> {
        let axis = norm_axis(self.axis, rank)?;
        if axis == 0 {
            return Err(OpError::bad_attr(
                "axis",
                "the sequence axis cannot be the batch axis 0",
            ));
        }
        Ok(axis)
    }

    fn check(&self, past: &[usize], update: &[usize]) -> Result<usize, OpError> {
        let axis = self.axis(past.len())?;
        let fits = past.len() == update.len()
            && past
                .iter()
                .zip(update)
                .enumerate()
                .all(|(i, (p, u))| if i == axis { u <= p } else { u == p });
        if !fits {
            return Err(OpError::shape(format!(
                "update {update:?} does not fit cache {past:?} (the same shape, at most \
                 as long on axis {axis})"
            )));
        }
        Ok(axis)
    }
}

impl Op for TensorScatter {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 3)?;
        let past = infer_input(inputs, 0)?;
        let update = infer_input(inputs, 1)?;
        if past.ty.dtype != update.ty.dtype {
            return Err(OpError::DTypeMismatch {
                expected: past.ty.dtype,
                actual: update.ty.dtype,
            });
        }
        self.check(&past.ty.shape, &update.ty.shape)?;
        if let Some(w) = opt_infer_input(inputs, 2) {
            if w.ty.dtype != DType::I64 {
                return Err(OpError::DType {
                    index: 2,
                    dtype: w.ty.dtype,
                });
            }
            if w.ty.shape != [past.ty.shape[0]] {
                return Err(OpError::shape(format!(
                    "write_indices {:?} must be [batch] = [{}]",
                    w.ty.shape, past.ty.shape[0]
                )));
            }
        }
        one(past.ty.dtype, past.ty.shape.clone())
    }

    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let past = input(inputs, 0)?;
        let update = input(inputs, 1)?;
        let shape = past.shape();
        let axis = self.check(shape, update.shape())?;
        let batch = shape[0];
        let starts: Vec<i64> = match opt_input(inputs, 2) {
            Some(w) => w
                .as_slice::<i64>()
                .ok_or(OpError::DType {
                    index: 2,
                    dtype: w.dtype(),
                })?
                .to_vec(),
            None => vec![0; batch],
        };
        if starts.len() != batch {
            return Err(OpError::shape(format!(
                "{} write indices for a batch of {batch}",
                starts.len()
            )));
        }
        let (max_seq, seq) = (shape[axis], update.shape()[axis]);
        let inner: usize = shape[axis + 1..].iter().product();
        let prefixes: usize = shape[..axis].iter().product();
        let per_batch = shape[1..axis].iter().product::<usize>().max(1);
        // (destination, source) offsets of each run of `inner` elements to copy.
        let mut moves = Vec::with_capacity(prefixes * seq);
        for p in 0..prefixes {
            let start = starts[p / per_batch];
            for s in 0..seq {
                let at = start.checked_add(s as i64).unwrap_or(i64::MAX);
                let pos = if self.circular {
                    at.rem_euclid(max_seq.max(1) as i64)
                } else {
                    at
                };
                let pos = usize::try_from(pos)
                    .ok()
                    .filter(|&q| q < max_seq)
                    .ok_or_else(|| {
                        OpError::value(format!(
                            "write index {start} of batch element {} leaves no room for \
                             {seq} positions in a cache of {max_seq}",
                            p / per_batch
                        ))
                    })?;
                moves.push(((p * max_seq + pos) * inner, (p * seq + s) * inner));
            }
        }
        let data = with_data!(past.data(), v => write_runs(v, update.data(), &moves, inner))
            .ok_or(OpError::DTypeMismatch {
                expected: past.dtype(),
                actual: update.dtype(),
            })?;
        Ok(vec![Tensor::new(shape.to_vec(), data)?])
    }
}

/// `past` with each run of `inner` elements of `update` at a source offset copied to
/// its destination offset; `None` when `update` holds another element type.
fn write_runs<T: Element>(
    past: &[T],
    update: &TensorData,
    moves: &[(usize, usize)],
    inner: usize,
) -> Option<TensorData> {
    let update = T::slice(update)?;
    let mut out = past.to_vec();
    for &(dst, src) in moves {
        out.get_mut(dst..dst + inner)?
            .clone_from_slice(update.get(src..src + inner)?);
    }
    Some(T::wrap(out))
}

/// `CausalConvWithState`, as its function body: the input `[B, C, L]` after the past
/// state `[B, C, k − 1]` (zeros when absent) along the last axis, the crate's `Conv`
/// of that with the weight `[C, 1, k]` and bias in `C` groups, then with `silu` (or its
/// alias `swish`) the crate's `Swish` computed in f32 (`Cast` to f32, `Sigmoid`, `Mul`,
/// `CastLike` back); the present state is the padded input's last `k − 1` positions.
#[derive(Debug)]
struct CausalConv {
    silu: bool,
}

fn build_causal_conv(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 2, 4)?;
    let silu = match n.attrs.string("activation", "none")?.as_str() {
        "none" => false,
        "silu" | "swish" => true,
        a => {
            return Err(OpError::BadAttribute {
                name: "activation".into(),
                reason: format!("`{a}` is not none, silu or swish"),
            })
        }
    };
    Ok(Box::new(CausalConv { silu }))
}

/// `(batch, channels, length, kernel)` of a causal convolution's inputs.
fn causal_dims(
    x: &[usize],
    w: &[usize],
    bias: Option<&[usize]>,
    past: Option<&[usize]>,
) -> Result<(usize, usize, usize, usize), OpError> {
    let [b, c, l] = *x else {
        return Err(OpError::shape(format!(
            "input {x:?} must be [batch, channels, length]"
        )));
    };
    let k = match *w {
        [wc, 1, k] if wc == c && k >= 1 => k,
        _ => {
            return Err(OpError::shape(format!(
                "weight {w:?} must be [channels, 1, k] = [{c}, 1, k] with k ≥ 1"
            )))
        }
    };
    if let Some(bias) = bias {
        if bias != [c] {
            return Err(OpError::shape(format!("bias {bias:?} must be [{c}]")));
        }
    }
    if let Some(past) = past {
        if past != [b, c, k - 1] {
            return Err(OpError::shape(format!(
                "past_state {past:?} must be [batch, channels, k - 1] = [{b}, {c}, {}]",
                k - 1
            )));
        }
    }
    Ok((b, c, l, k))
}

impl Op for CausalConv {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 4)?;
        let x = infer_input(inputs, 0)?;
        let w = infer_input(inputs, 1)?;
        let bias = opt_infer_input(inputs, 2);
        let past = opt_infer_input(inputs, 3);
        if !x.ty.dtype.is_float() {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        for (i, t) in [(1, Some(w)), (2, bias), (3, past)] {
            if let Some(t) = t {
                if t.ty.dtype != x.ty.dtype {
                    return Err(OpError::DType {
                        index: i,
                        dtype: t.ty.dtype,
                    });
                }
            }
        }
        let (b, c, l, k) = causal_dims(
            &x.ty.shape,
            &w.ty.shape,
            bias.map(|t| t.ty.shape.as_slice()),
            past.map(|t| t.ty.shape.as_slice()),
        )?;
        Ok(vec![
            TypeInfo::new(x.ty.dtype, vec![b, c, l]),
            TypeInfo::new(x.ty.dtype, vec![b, c, k - 1]),
        ])
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let k = inputs
            .get(1)
            .copied()
            .flatten()
            .and_then(|w| w.shape.last().copied())
            .unwrap_or(1) as u64;
        let out = outputs.first().map_or(0, |t| t.numel());
        let per = k.saturating_add(if self.silu { 5 } else { 1 });
        out.saturating_mul(per)
            .saturating_add(outputs.get(1).map_or(0, |t| t.numel()))
            .max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let w = input(inputs, 1)?;
        let bias = opt_input(inputs, 2);
        let past = opt_input(inputs, 3);
        let (b, c, l, k) = causal_dims(
            x.shape(),
            w.shape(),
            bias.map(|t| t.shape()),
            past.map(|t| t.shape()),
        )?;
        let zeros;
        let past = match past {
            Some(p) => p,
            None => {
                zeros = Tensor::zeros(x.dtype(), vec![b, c, k - 1])?;
                &zeros
            }
        };
        let rows = b * c;
        let mismatch = || OpError::DTypeMismatch {
            expected: x.dtype(),
            actual: past.dtype(),
        };
        // The past state then the input, row by row (Concat on axis 2).
        let padded = with_data!(past.data(), v => join_rows(v, x.data(), rows, k - 1, l))
            .ok_or_else(mismatch)?;
        let padded = Tensor::new(vec![b, c, k - 1 + l], padded)?;
        let conv = first(Conv::grouped(c).run(&[Some(&padded), Some(w), bias], ctx)?)?;
        let output = if self.silu {
            let wide = cast(&conv, DType::F32)?;
            let swish = Unary {
                kind: Kind::Swish { alpha: 1.0 },
            };
            cast(&first(swish.run(&[Some(&wide)], ctx)?)?, conv.dtype())?
        } else {
            conv
        };
        // The padded input's last k − 1 positions (Slice on axis 2).
        let present = with_data!(padded.data(), v => last_of_rows(v, rows, k - 1 + l, k - 1));
        let present = Tensor::new(vec![b, c, k - 1], present)?;
        Ok(vec![output, present])
    }
}

/// Each of `rows` rows of `a` (`la` long) followed by the same row of `b` (`lb`).
fn join_rows<T: Element>(
    a: &[T],
    b: &TensorData,
    rows: usize,
    la: usize,
    lb: usize,
) -> Option<TensorData> {
    let b = T::slice(b)?;
    let mut out = Vec::with_capacity(rows * (la + lb));
    for r in 0..rows {
        out.extend_from_slice(a.get(r * la..(r + 1) * la)?);
        out.extend_from_slice(b.get(r * lb..(r + 1) * lb)?);
    }
    Some(T::wrap(out))
}

/// The last `keep` elements of each of `rows` rows `len` long.
fn last_of_rows<T: Element>(v: &[T], rows: usize, len: usize, keep: usize) -> TensorData {
    let mut out = Vec::with_capacity(rows * keep);
    for r in 0..rows {
        out.extend_from_slice(&v[r * len + len - keep..(r + 1) * len]);
    }
    T::wrap(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }

    #[test]
    fn tensor_scatter_writes_linear_and_circular() {
        // Cache [batch 2, seq 4, 1], update of 2 positions.
        let past = t(&[2, 4, 1], vec![0.0; 8]);
        let update = t(&[2, 2, 1], vec![1.0, 2.0, 3.0, 4.0]);
        let at = Tensor::from_vec(vec![2], vec![1i64, 3]).unwrap();
        let lin = TensorScatter {
            circular: false,
            axis: -2,
        };
        let ctx = Ctx::default();
        // Batch element 1 would write positions 3 and 4 of 4: no room.
        let e = lin.run(&[Some(&past), Some(&update), Some(&at)], &ctx);
        assert!(matches!(e, Err(OpError::Value { .. })), "{e:?}");
        let circ = TensorScatter {
            circular: true,
            axis: 1,
        };
        let y = first(
            circ.run(&[Some(&past), Some(&update), Some(&at)], &ctx)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &[0.0, 1.0, 2.0, 0.0, 4.0, 0.0, 0.0, 3.0]
        );
        let y = first(lin.run(&[Some(&past), Some(&update), None], &ctx).unwrap()).unwrap();
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &[1.0, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0]
        );
        let axis0 = TensorScatter {
            circular: false,
            axis: 0,
        };
        assert!(axis0
            .run(&[Some(&past), Some(&update), None], &ctx)
            .is_err());
    }

    #[test]
    fn causal_conv_by_hand() {
        // One batch, two channels, length 3, k = 2: y[t] = w0·x[t−1] + w1·x[t] + bias.
        let x = t(&[1, 2, 3], vec![1.0, 2.0, 3.0, 10.0, 20.0, 30.0]);
        let w = t(&[2, 1, 2], vec![1.0, 2.0, -1.0, 1.0]);
        let bias = t(&[2], vec![0.5, 0.0]);
        let past = t(&[1, 2, 1], vec![7.0, 5.0]);
        let op = CausalConv { silu: false };
        let ctx = Ctx::default();
        let out = op
            .run(&[Some(&x), Some(&w), Some(&bias), Some(&past)], &ctx)
            .unwrap();
        assert_eq!(
            out[0].as_slice::<f32>().unwrap(),
            &[9.5, 5.5, 8.5, 5.0, 10.0, 10.0]
        );
        assert_eq!(out[1].as_slice::<f32>().unwrap(), &[3.0, 30.0]);
        let out = op.run(&[Some(&x), Some(&w), None, None], &ctx).unwrap();
        assert_eq!(
            out[0].as_slice::<f32>().unwrap(),
            &[2.0, 5.0, 8.0, 10.0, 10.0, 10.0]
        );
        let bad = t(&[2, 1, 2], vec![0.0; 4]);
        assert!(op
            .run(&[Some(&x), Some(&bad), None, Some(&bias)], &ctx)
            .is_err());
    }
}
