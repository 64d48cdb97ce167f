//! Operators of recent language-model and state-space exports: `SwiGLU` (opset 28, the
//! gated activation of Llama-style MLPs), `TensorScatter` (opset 24, the key/value
//! cache update), `CausalConvWithState` (opset 27, the depthwise causal convolution of
//! Mamba and Gated DeltaNet blocks) and `LinearAttention` (opset 27, their recurrent
//! attention).
//!
//! `SwiGLU` and `CausalConvWithState` are defined by ONNX function bodies. They compute
//! exactly what those bodies compute with the crate's semantics for each operator in
//! them, by running those operators' kernels: the same bits as the `_expanded` graphs.
//! `LinearAttention`'s body is a `Scan`; each of its steps is computed here with the
//! arithmetic of the body's operators (see [`LinearAttention`]).

use deed_types::tensor::Element;
use deed_types::{with_data, DType, Tensor, TensorData};

use super::binary::{binary, BKind};
use super::cast::cast;
use super::conv::Conv;
use super::math::exp_f32;
use super::unary::{Kind, Unary};
use super::util::{
    check_count, float_infer_input, infer_input, input, norm_axis, one, opt_infer_input, opt_input,
    per_output_element, same_dtype,
};
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
    r.add("LinearAttention", build_linear_attention);
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
        let a = float_infer_input(inputs, 0)?;
        let b = infer_input(inputs, 1)?;
        same_dtype(a.ty.dtype, b.ty.dtype)?;
        if a.ty.shape != b.ty.shape {
            return Err(OpError::shape(format!(
                "SwiGLU takes A and B of one shape (no broadcasting), got {:?} and {:?}",
                a.ty.shape, b.ty.shape
            )));
        }
        one(a.ty.dtype, a.ty.shape.clone())
    }

    fn cost(&self, _: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        per_output_element(outputs, 5)
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
        same_dtype(past.ty.dtype, update.ty.dtype)?;
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
        let x = float_infer_input(inputs, 0)?;
        let w = infer_input(inputs, 1)?;
        let bias = opt_infer_input(inputs, 2);
        let past = opt_infer_input(inputs, 3);
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

/// `LinearAttention`: for each batch element and key/value head, a state `S`
/// (`d_k × d_v`, f32; the past state or zeros) runs through the time steps. With every
/// input cast to f32, as the body's `Scan` step does, step `t` computes:
/// - gated rules: `S = S · exp(g_t)` (`g` per head or per key dimension; the crate's
///   `exp`);
/// - delta rules: `r_m = Σ_d S[d, m] · k_d` (the canonical dot product: fma from +0 in
///   increasing `d`), `w_m = β_t · (v_m − r_m)`; other rules: `w = v`;
/// - `S[d, m] = S[d, m] + fma(k_d, w_m, +0)` (the outer product is a `MatMul` of
///   depth 1);
/// - for each query head reading this key/value head (`h_q / (q_heads / kv_heads)`):
///   `o_m = scale · Σ_d q_d · S[d, m]` (the canonical dot product),
///
/// then the output is cast to the query's type and the final state to the past
/// state's (or, without one, the query's). `scale` is the attribute, or when it is 0
/// `1 / sqrt(d_k)` computed in f32 (`Sqrt`, then `Reciprocal`).
#[derive(Debug)]
struct LinearAttention {
    gating: bool,
    delta: bool,
    q_heads: usize,
    kv_heads: usize,
    scale: f32,
}

fn build_linear_attention(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 3, 6)?;
    let (gating, delta) = match n.attrs.string("update_rule", "gated_delta")?.as_str() {
        "linear" => (false, false),
        "gated" => (true, false),
        "delta" => (false, true),
        "gated_delta" => (true, true),
        r => {
            return Err(OpError::bad_attr(
                "update_rule",
                format!("`{r}` is not linear, gated, delta or gated_delta"),
            ))
        }
    };
    let heads = |name: &str| -> Result<usize, OpError> {
        let h = n.attrs.req_int(name)?;
        usize::try_from(h)
            .ok()
            .filter(|&h| h > 0)
            .ok_or_else(|| OpError::bad_attr(name, format!("{h} is not a positive count")))
    };
    let (q_heads, kv_heads) = (heads("q_num_heads")?, heads("kv_num_heads")?);
    if q_heads % kv_heads != 0 {
        return Err(OpError::bad_attr(
            "q_num_heads",
            format!("{q_heads} is not a multiple of kv_num_heads {kv_heads}"),
        ));
    }
    Ok(Box::new(LinearAttention {
        gating,
        delta,
        q_heads,
        kv_heads,
        scale: n.attrs.float("scale", 0.0)?,
    }))
}

/// The extents of a linear attention: batch, steps, key and value head sizes, and
/// the last extents of the decay and beta inputs.
struct LinDims {
    b: usize,
    t: usize,
    dk: usize,
    dv: usize,
    decay: usize,
    beta: usize,
}

impl LinearAttention {
    fn dims(
        &self,
        q: &[usize],
        k: &[usize],
        v: &[usize],
        past: Option<&[usize]>,
        decay: Option<&[usize]>,
        beta: Option<&[usize]>,
    ) -> Result<LinDims, OpError> {
        let rank3 = |name: &str, s: &[usize]| match *s {
            [b, t, w] => Ok((b, t, w)),
            _ => Err(OpError::shape(format!(
                "{name} {s:?} must be [batch, steps, heads · size]"
            ))),
        };
        let (b, t, qw) = rank3("query", q)?;
        let (hq, hkv) = (self.q_heads, self.kv_heads);
        if qw % hq != 0 {
            return Err(OpError::shape(format!(
                "query width {qw} is not a multiple of {hq} heads"
            )));
        }
        let dk = qw / hq;
        let (_, _, vw) = rank3("value", v)?;
        if vw % hkv != 0 {
            return Err(OpError::shape(format!(
                "value width {vw} is not a multiple of {hkv} heads"
            )));
        }
        let dv = vw / hkv;
        if k != [b, t, hkv * dk] || v[..2] != [b, t] {
            return Err(OpError::shape(format!(
                "key {k:?} and value {v:?} do not fit query {q:?} with {hkv} key/value heads"
            )));
        }
        if let Some(p) = past {
            if p != [b, hkv, dk, dv] {
                return Err(OpError::shape(format!(
                    "past_state {p:?} must be [{b}, {hkv}, {dk}, {dv}]"
                )));
            }
        }
        let last = |name: &str, s: Option<&[usize]>, needed: bool, ok: &[usize]| match (s, needed) {
            (None, false) => Ok(0),
            (None, true) => Err(OpError::bad_attr(
                "update_rule",
                format!("this update rule needs the {name} input"),
            )),
            (Some(_), false) => Err(OpError::bad_attr(
                "update_rule",
                format!("this update rule takes no {name} input"),
            )),
            (Some(s), true) => match *s {
                [sb, st, w] if sb == b && st == t && ok.contains(&w) => Ok(w),
                _ => Err(OpError::shape(format!(
                    "{name} {s:?} must be [{b}, {t}, w] with w one of {ok:?}"
                ))),
            },
        };
        let decay = last("decay", decay, self.gating, &[hkv, hkv * dk])?;
        let beta = last("beta", beta, self.delta, &[hkv, 1])?;
        Ok(LinDims {
            b,
            t,
            dk,
            dv,
            decay,
            beta,
        })
    }
}

impl Op for LinearAttention {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 3, 6)?;
        let ty = |i: usize| opt_infer_input(inputs, i).map(|x| x.ty);
        let q = infer_input(inputs, 0)?.ty;
        for i in 0..6 {
            if let Some(t) = ty(i) {
                if !t.dtype.is_float() {
                    return Err(OpError::DType {
                        index: i,
                        dtype: t.dtype,
                    });
                }
            }
        }
        let k = infer_input(inputs, 1)?.ty;
        let v = infer_input(inputs, 2)?.ty;
        let shape = |i: usize| ty(i).map(|t| t.shape.as_slice());
        let d = self.dims(&q.shape, &k.shape, &v.shape, shape(3), shape(4), shape(5))?;
        let state = ty(3).map_or(q.dtype, |p| p.dtype);
        Ok(vec![
            TypeInfo::new(q.dtype, vec![d.b, d.t, self.q_heads * d.dv]),
            TypeInfo::new(state, vec![d.b, self.kv_heads, d.dk, d.dv]),
        ])
    }

    fn cost(&self, _: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        // Per step and key/value head: the decay, the retrieval, the write (d_k · d_v
        // each); per query head the read.
        let state = outputs.get(1).map_or(0, |t| t.numel());
        let steps = outputs
            .first()
            .and_then(|t| t.shape.get(1).copied())
            .unwrap_or(1) as u64;
        let per = 3 + (self.q_heads / self.kv_heads) as u64;
        state.saturating_mul(steps).saturating_mul(per).max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let (q, k, v) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let (past, decay, beta) = (
            opt_input(inputs, 3),
            opt_input(inputs, 4),
            opt_input(inputs, 5),
        );
        let d = self.dims(
            q.shape(),
            k.shape(),
            v.shape(),
            past.map(Tensor::shape),
            decay.map(Tensor::shape),
            beta.map(Tensor::shape),
        )?;
        let f32s = |x: &Tensor| -> Result<Vec<f32>, OpError> {
            cast(x, DType::F32)?
                .into_vec::<f32>()
                .ok_or_else(|| OpError::shape("a cast to f32 gave no f32 data"))
        };
        let (qf, kf, vf) = (f32s(q)?, f32s(k)?, f32s(v)?);
        let gf = decay.map(f32s).transpose()?.unwrap_or_default();
        let bf = beta.map(f32s).transpose()?.unwrap_or_default();
        let (hq, hkv, dk, dv) = (self.q_heads, self.kv_heads, d.dk, d.dv);
        let mut state = match past {
            Some(p) => f32s(p)?,
            None => vec![0.0; d.b * hkv * dk * dv],
        };
        let scale = if self.scale == 0.0 {
            1.0 / (dk as f32).sqrt()
        } else {
            self.scale
        };
        let group = hq / hkv;
        let mut out = vec![0f32; d.b * d.t * hq * dv];
        let mut w = vec![0f32; dv];
        // Value heads of width 0: the output and the state are empty (and a state row
        // has no width to step by).
        let batches = if dv == 0 { 0 } else { d.b };
        for bi in 0..batches {
            for h in 0..hkv {
                let s = &mut state[(bi * hkv + h) * dk * dv..][..dk * dv];
                for ti in 0..d.t {
                    let row = bi * d.t + ti;
                    let kt = &kf[(row * hkv + h) * dk..][..dk];
                    let vt = &vf[(row * hkv + h) * dv..][..dv];
                    if self.gating {
                        let g = &gf[row * d.decay..][..d.decay];
                        for (dd, srow) in s.chunks_exact_mut(dv).enumerate() {
                            let e = exp_f32(if d.decay == hkv { g[h] } else { g[h * dk + dd] });
                            srow.iter_mut().for_each(|x| *x *= e);
                        }
                    }
                    if self.delta {
                        let bt = bf[row * d.beta + if d.beta == 1 { 0 } else { h }];
                        for (m, wm) in w.iter_mut().enumerate() {
                            let r =
                                (0..dk).fold(0.0f32, |acc, dd| s[dd * dv + m].mul_add(kt[dd], acc));
                            *wm = bt * (vt[m] - r);
                        }
                    } else {
                        w.copy_from_slice(vt);
                    }
                    for (dd, srow) in s.chunks_exact_mut(dv).enumerate() {
                        for (x, &wm) in srow.iter_mut().zip(&w) {
                            *x += kt[dd].mul_add(wm, 0.0);
                        }
                    }
                    for qh in h * group..(h + 1) * group {
                        let qt = &qf[(row * hq + qh) * dk..][..dk];
                        let o = &mut out[(row * hq + qh) * dv..][..dv];
                        for (m, om) in o.iter_mut().enumerate() {
                            let acc =
                                (0..dk).fold(0.0f32, |acc, dd| qt[dd].mul_add(s[dd * dv + m], acc));
                            *om = scale * acc;
                        }
                    }
                }
            }
        }
        let output = Tensor::from_vec(vec![d.b, d.t, hq * dv], out)?;
        let state = Tensor::from_vec(vec![d.b, hkv, dk, dv], state)?;
        let state_type = past.map_or(q.dtype(), Tensor::dtype);
        Ok(vec![cast(&output, q.dtype())?, cast(&state, state_type)?])
    }
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
    fn linear_attention_with_empty_value_heads_is_empty() {
        // Values of width 0 (v: [1, 1, 0]): the state rows have no width, which
        // `chunks_exact_mut(0)` refused with a panic.
        let op = LinearAttention {
            gating: false,
            delta: true,
            q_heads: 2,
            kv_heads: 1,
            scale: 0.0,
        };
        let (q, k) = (t(&[1, 1, 2], vec![0.5, -1.0]), t(&[1, 1, 1], vec![2.0]));
        let (v, beta) = (t(&[1, 1, 0], vec![]), t(&[1, 1, 1], vec![0.5]));
        let out = op
            .run(
                &[Some(&q), Some(&k), Some(&v), None, None, Some(&beta)],
                &Ctx::default(),
            )
            .unwrap();
        assert_eq!(out[0].shape(), &[1, 1, 0]);
        assert_eq!(out[1].shape(), &[1, 1, 1, 0]);
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

    #[test]
    fn linear_attention_by_hand() {
        // d_k = d_v = 1, two query heads reading one key/value head, three steps:
        // linear rule S_t = S_{t-1} + k_t·v_t, o = scale·q·S.
        let op = LinearAttention {
            gating: false,
            delta: false,
            q_heads: 2,
            kv_heads: 1,
            scale: 0.5,
        };
        let q = t(&[1, 3, 2], vec![1.0, 2.0, 1.0, -1.0, 4.0, 0.0]);
        let k = t(&[1, 3, 1], vec![1.0, 2.0, 3.0]);
        let v = t(&[1, 3, 1], vec![2.0, 1.0, -1.0]);
        let past = t(&[1, 1, 1, 1], vec![10.0]);
        let ctx = Ctx::default();
        let out = op
            .run(&[Some(&q), Some(&k), Some(&v), Some(&past)], &ctx)
            .unwrap();
        // S = 12, 14, 11.
        assert_eq!(
            out[0].as_slice::<f32>().unwrap(),
            &[6.0, 12.0, 7.0, -7.0, 22.0, 0.0]
        );
        assert_eq!(out[1].as_slice::<f32>().unwrap(), &[11.0]);
        // Gated delta, one head: S = S·e^g; w = β(v − S·k); S += k·w.
        let op = LinearAttention {
            gating: true,
            delta: true,
            q_heads: 1,
            kv_heads: 1,
            scale: 1.0,
        };
        let q = t(&[1, 1, 1], vec![1.0]);
        let k = t(&[1, 1, 1], vec![2.0]);
        let v = t(&[1, 1, 1], vec![3.0]);
        let g = t(&[1, 1, 1], vec![0.0]);
        let beta = t(&[1, 1, 1], vec![0.5]);
        let past = t(&[1, 1, 1, 1], vec![1.0]);
        let out = op
            .run(
                &[
                    Some(&q),
                    Some(&k),
                    Some(&v),
                    Some(&past),
                    Some(&g),
                    Some(&beta),
                ],
                &ctx,
            )
            .unwrap();
        // w = 0.5·(3 − 2) = 0.5; S = 1 + 2·0.5 = 2.
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[2.0]);
        // A rule given the wrong inputs is refused.
        assert!(op
            .run(
                &[Some(&q), Some(&k), Some(&v), Some(&past), None, Some(&beta)],
                &ctx
            )
            .is_err());
    }
}
