//! `Attention` (opsets 23–25): scaled dot-product attention over 3-D (`[batch, seq,
//! heads · size]`) or 4-D (`[batch, heads, seq, size]`) inputs, with an optional mask
//! (bool or additive), causal and sliding-window masking, a key/value cache (`past_*`
//! in, `present_*` out, or `nonpad_kv_seqlen` for a cache kept outside), grouped-query
//! heads and soft-capping.
//!
//! The arithmetic is that of the operator's ONNX function body run as separate
//! operators with this crate's canonical semantics: the scale `sqrt(scale)` (default
//! `sqrt(1/sqrt(head size))`, in f32) multiplies Q and K, the products are `MatMul`s,
//! soft-capping is `Div`, `Tanh`, `Mul`, the bias is added, the softmax is the
//! crate's, and every step of an f16 (bf16) attention is rounded to f16 (bf16) as its own operator
//! would be. The masks are composed as the reference implementation does (see
//! `docs/canonical-semantics.md`).

use deed_types::{DType, Tensor, TensorData};

use super::{softmax_rows, Float, Narrow, SoftKind};
use crate::error::OpError;
use crate::kernels::{gemm, Mat, Scalar};
use crate::ops::util::{broadcast_offsets, broadcast_shapes, check_count, infer_input, input};
use crate::ops::util::{numel, opt_infer_input, opt_input, same_dtype, to_i64s};
use crate::ops::{Ctx, InferInput, NodeInfo, Op, TypeInfo};

/// The `Attention` node's attributes.
#[derive(Debug)]
pub(super) struct Attention {
    is_causal: bool,
    q_heads: Option<usize>,
    kv_heads: Option<usize>,
    /// `qk_matmul_output_mode`: 0 or 1 the (soft-capped) product, 2 with the bias
    /// added, 3 the softmax.
    mode: i64,
    scale: Option<f32>,
    softcap: f32,
    /// The type the softmax runs in, when not the input's.
    softmax_precision: Option<DType>,
    left: i64,
    right: i64,
}

pub(super) fn build(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 3, 7)?;
    let a = n.attrs;
    let heads = |name: &'static str| -> Result<Option<usize>, OpError> {
        match a.int(name, 0)? {
            0 => Ok(None),
            h if h > 0 => Ok(Some(h as usize)),
            h => Err(OpError::bad_attr(name, format!("{name} {h} is negative"))),
        }
    };
    let mode = a.int("qk_matmul_output_mode", 0)?;
    if !(0..=3).contains(&mode) {
        return Err(OpError::bad_attr(
            "qk_matmul_output_mode",
            format!("qk_matmul_output_mode {mode} is not 0, 1, 2 or 3"),
        ));
    }
    let softmax_precision = match a.int("softmax_precision", 0)? {
        0 => None,
        1 => Some(DType::F32),
        10 => Some(DType::F16),
        11 => Some(DType::F64),
        p => {
            return Err(OpError::unsupported(format!(
                "Attention softmax_precision {p}"
            )))
        }
    };
    let window = |name: &'static str| -> Result<i64, OpError> {
        let w = a.int(name, -1)?;
        if w < -1 {
            return Err(OpError::bad_attr(
                name,
                format!("{name} {w} is neither -1 nor a size"),
            ));
        }
        Ok(w)
    };
    Ok(Box::new(Attention {
        is_causal: a.int("is_causal", 0)? != 0,
        q_heads: heads("q_num_heads")?,
        kv_heads: heads("kv_num_heads")?,
        mode,
        scale: a.opt_float("scale")?,
        softcap: a.float("softcap", 0.0)?,
        softmax_precision,
        left: window("left_window_size")?,
        right: window("right_window_size")?,
    }))
}

/// The sizes of one attention.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    q_heads: usize,
    kv_heads: usize,
    q_len: usize,
    /// Keys and values given with this call.
    new_len: usize,
    /// Keys and values of the cache passed in.
    past: usize,
    /// Size of a query and key head.
    d: usize,
    /// Size of a value head.
    dv: usize,
    /// The inputs are 3-D (heads packed in the last dimension).
    packed: bool,
}

impl Dims {
    fn total(&self) -> usize {
        self.past + self.new_len
    }

    fn y_shape(&self) -> Vec<usize> {
        if self.packed {
            vec![self.batch, self.q_len, self.q_heads * self.dv]
        } else {
            vec![self.batch, self.q_heads, self.q_len, self.dv]
        }
    }

    fn present_shape(&self, size: usize) -> Vec<usize> {
        vec![self.batch, self.kv_heads, self.total(), size]
    }

    fn qk_shape(&self) -> Vec<usize> {
        vec![self.batch, self.q_heads, self.q_len, self.total()]
    }
}

/// The shape of the bias the mask, causality, windows and padding make.
fn bias_shape(d: &Dims) -> [usize; 4] {
    [d.batch, d.q_heads, d.q_len, d.total()]
}

fn shape_err(msg: String) -> OpError {
    OpError::shape(format!("Attention: {msg}"))
}

impl Attention {
    /// Checks the inputs' shapes against each other and the attributes.
    fn dims(
        &self,
        q: &[usize],
        k: &[usize],
        v: &[usize],
        past: Option<(&[usize], &[usize])>,
    ) -> Result<Dims, OpError> {
        if q.len() != k.len() || q.len() != v.len() || !(q.len() == 3 || q.len() == 4) {
            return Err(shape_err(format!(
                "Q {q:?}, K {k:?} and V {v:?} must all be 3-D or all 4-D"
            )));
        }
        let packed = q.len() == 3;
        let (batch, q_heads, kv_heads, q_len, new_len, d, dv) = if packed {
            let (Some(hq), Some(hkv)) = (self.q_heads, self.kv_heads) else {
                return Err(OpError::bad_attr(
                    "q_num_heads",
                    "3-D inputs need q_num_heads and kv_num_heads",
                ));
            };
            if !q[2].is_multiple_of(hq) || !k[2].is_multiple_of(hkv) || !v[2].is_multiple_of(hkv) {
                return Err(shape_err(format!(
                    "hidden sizes {}, {} and {} do not split into {hq} query and {hkv} key/value heads",
                    q[2], k[2], v[2]
                )));
            }
            (q[0], hq, hkv, q[1], k[1], q[2] / hq, v[2] / hkv)
        } else {
            if k[1] != v[1] {
                return Err(shape_err(format!(
                    "K {k:?} and V {v:?} have different head counts"
                )));
            }
            (q[0], q[1], k[1], q[2], k[2], q[3], v[3])
        };
        let k_size = if packed { k[2] / kv_heads } else { k[3] };
        let v_len = if packed { v[1] } else { v[2] };
        if k[0] != batch || v[0] != batch {
            return Err(shape_err(format!(
                "Q {q:?}, K {k:?} and V {v:?} have different batch sizes"
            )));
        }
        if k_size != d {
            return Err(shape_err(format!(
                "query heads of {d} and key heads of {k_size} differ"
            )));
        }
        if v_len != new_len {
            return Err(shape_err(format!(
                "K {k:?} and V {v:?} have different sequence lengths"
            )));
        }
        if kv_heads == 0 || !q_heads.is_multiple_of(kv_heads) {
            return Err(shape_err(format!(
                "{q_heads} query heads are not a multiple of {kv_heads} key/value heads"
            )));
        }
        let past = match past {
            None => 0,
            Some((pk, pv)) => {
                let want = |size| [batch, kv_heads, pk.get(2).copied().unwrap_or(0), size];
                if pk.len() != 4 || pk != want(d) || pv != want(dv) {
                    return Err(shape_err(format!(
                        "past_key {pk:?} and past_value {pv:?} do not match [{batch}, {kv_heads}, past, {d}] and [.., {dv}]"
                    )));
                }
                pk[2]
            }
        };
        Ok(Dims {
            batch,
            q_heads,
            kv_heads,
            q_len,
            new_len,
            past,
            d,
            dv,
            packed,
        })
    }

    /// The dims, after checking the optional inputs' presence, dtypes and shapes.
    fn check(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Dims, OpError> {
        check_count(inputs.len(), 3, 7)?;
        let q = infer_input(inputs, 0)?;
        let k = infer_input(inputs, 1)?;
        let v = infer_input(inputs, 2)?;
        let dt = q.ty.dtype;
        if !matches!(dt, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
            return Err(OpError::DType {
                index: 0,
                dtype: dt,
            });
        }
        for t in [k, v] {
            same_dtype(dt, t.ty.dtype)?;
        }
        let past = match (opt_infer_input(inputs, 4), opt_infer_input(inputs, 5)) {
            (None, None) => None,
            (Some(pk), Some(pv)) => {
                same_dtype(dt, pk.ty.dtype)?;
                same_dtype(dt, pv.ty.dtype)?;
                Some((pk.ty.shape.as_slice(), pv.ty.shape.as_slice()))
            }
            _ => {
                return Err(OpError::shape(
                    "Attention: past_key and past_value go together",
                ))
            }
        };
        let d = self.dims(&q.ty.shape, &k.ty.shape, &v.ty.shape, past)?;
        if let Some(m) = opt_infer_input(inputs, 3) {
            if m.ty.dtype != DType::Bool && m.ty.dtype != dt {
                return Err(OpError::DType {
                    index: 3,
                    dtype: m.ty.dtype,
                });
            }
            mask_layout(&m.ty.shape, &d)?;
        }
        if let Some(n) = opt_infer_input(inputs, 6) {
            if past.is_some() {
                return Err(OpError::shape(
                    "Attention: nonpad_kv_seqlen cannot be combined with past_key and past_value",
                ));
            }
            if n.ty.dtype != DType::I64 {
                return Err(OpError::DType {
                    index: 6,
                    dtype: n.ty.dtype,
                });
            }
            if n.ty.shape != [d.batch] {
                return Err(shape_err(format!(
                    "nonpad_kv_seqlen {:?} is not [{}]",
                    n.ty.shape, d.batch
                )));
            }
        }
        Ok(d)
    }
}

/// The mask's shape with its last dimension padded to the keys, which must broadcast
/// to the bias shape.
fn mask_layout(shape: &[usize], d: &Dims) -> Result<Vec<usize>, OpError> {
    let target = bias_shape(d);
    let Some((&last, lead)) = shape.split_last() else {
        return Err(shape_err("the mask is a scalar".into()));
    };
    if shape.len() > 4 || last > d.total() {
        return Err(shape_err(format!(
            "mask {shape:?} does not fit the attention's {target:?}"
        )));
    }
    let mut padded = lead.to_vec();
    padded.push(d.total());
    if broadcast_shapes(&target, &padded)? != target {
        return Err(shape_err(format!(
            "mask {shape:?} does not broadcast to {target:?}"
        )));
    }
    Ok(padded)
}

/// The mask's value for each bias element: `0` or `−∞` for a bool mask (attended or
/// not), the value of an additive one; past its last dimension, `−∞`.
fn mask_bias(mask: &Tensor, d: &Dims) -> Result<Vec<f64>, OpError> {
    let shape = mask.shape();
    let padded = mask_layout(shape, d)?;
    let last = shape.last().copied().unwrap_or(0);
    let values: Vec<f64> = match mask.data() {
        TensorData::Bool(b) => b
            .iter()
            .map(|&a| if a { 0.0 } else { f64::NEG_INFINITY })
            .collect(),
        TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::F64(v) => v.clone(),
        TensorData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
        TensorData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
        _ => {
            return Err(OpError::DType {
                index: 3,
                dtype: mask.dtype(),
            })
        }
    };
    // Index into the padded mask, then back to the stored one (or the padding).
    let total = d.total();
    let offs = broadcast_offsets(&padded, &bias_shape(d));
    Ok(offs
        .into_iter()
        .map(|o| {
            let (row, j) = (o / total.max(1), o % total.max(1));
            if j < last {
                values[row * last + j]
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect())
}

/// The additive bias of every (batch, head, query, key), as the reference builds it:
/// the mask (bool as `0`/`−∞`), then the causal frontier, the sliding window and the
/// padding of `nonpad_kv_seqlen`, each added as `0` or `−∞`.
fn bias(
    op: &Attention,
    d: &Dims,
    mask: Option<&Tensor>,
    nonpad: Option<&[i64]>,
) -> Result<Vec<f64>, OpError> {
    let [b, h, sq, sk] = bias_shape(d);
    let n = numel(&[b, h, sq, sk])?;
    let mut bias = match mask {
        Some(m) => mask_bias(m, d)?.into_iter().map(|x| 0.0 + x).collect(),
        None => vec![0.0f64; n],
    };
    // Where query `i` of batch `bi` stands among the keys.
    let offset = |bi: usize| -> i64 {
        match nonpad {
            Some(np) => np.get(bi).copied().unwrap_or(0) - sq as i64,
            None => d.past as i64,
        }
    };
    let windowed = op.left >= 0 || op.right >= 0;
    if op.is_causal || windowed || nonpad.is_some() {
        for (e, x) in bias.iter_mut().enumerate() {
            let j = (e % sk) as i64;
            let i = ((e / sk) % sq) as i64;
            let bi = e / (sk * sq * h).max(1);
            let p = i + offset(bi);
            if op.is_causal {
                *x += if j <= p { 0.0 } else { f64::NEG_INFINITY };
            }
            if windowed {
                let diff = p - j;
                let allowed =
                    (op.left < 0 || diff <= op.left) && (op.right < 0 || -diff <= op.right);
                *x += if allowed { 0.0 } else { f64::NEG_INFINITY };
            }
            if let Some(np) = nonpad {
                let valid = np.get(bi).copied().unwrap_or(0);
                *x += if j < valid { 0.0 } else { f64::NEG_INFINITY };
            }
        }
    }
    Ok(bias)
}

/// Reorders 3-D `[batch, seq, heads · size]` to `[batch, heads, seq, size]`.
fn unpack<T: Copy>(x: &[T], batch: usize, seq: usize, heads: usize, size: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(x.len());
    for b in 0..batch {
        for h in 0..heads {
            for s in 0..seq {
                let at = (b * seq + s) * heads * size + h * size;
                out.extend_from_slice(&x[at..at + size]);
            }
        }
    }
    out
}

/// Appends the new keys (or values) to the cache along the sequence: `[batch, heads,
/// past + new, size]`.
fn concat_seq<T: Copy>(past: Option<&[T]>, new: &[T], d: &Dims, size: usize) -> Vec<T> {
    let Some(past) = past else {
        return new.to_vec();
    };
    let mut out = Vec::with_capacity(past.len() + new.len());
    for bh in 0..d.batch * d.kv_heads {
        out.extend_from_slice(&past[bh * d.past * size..(bh + 1) * d.past * size]);
        out.extend_from_slice(&new[bh * d.new_len * size..(bh + 1) * d.new_len * size]);
    }
    out
}

/// `t`'s elements as `T`, or a dtype error.
fn typed<T: deed_types::tensor::Element>(t: &Tensor) -> Result<&[T], OpError> {
    t.as_slice::<T>().ok_or(OpError::DType {
        index: 0,
        dtype: t.dtype(),
    })
}

/// What one attention computes: Y, the present keys and values, and the
/// `qk_matmul_output`.
struct Outputs<T> {
    y: Vec<T>,
    present_k: Vec<T>,
    present_v: Vec<T>,
    qk: Vec<T>,
}

#[allow(clippy::too_many_arguments)]
fn compute<T: Float + Scalar>(
    op: &Attention,
    d: &Dims,
    q: &[T],
    k: &[T],
    v: &[T],
    past: Option<(&[T], &[T])>,
    bias: &[f64],
    narrow: Narrow,
    ctx: &Ctx,
) -> Result<Outputs<T>, OpError> {
    let r = |x: T| narrow.round(x);
    let bad = || OpError::shape("Attention operand smaller than its shape");
    let (q4, k4, v4);
    let (q, k, v) = if d.packed {
        q4 = unpack(q, d.batch, d.q_len, d.q_heads, d.d);
        k4 = unpack(k, d.batch, d.new_len, d.kv_heads, d.d);
        v4 = unpack(v, d.batch, d.new_len, d.kv_heads, d.dv);
        (&q4[..], &k4[..], &v4[..])
    } else {
        (q, k, v)
    };
    let present_k = concat_seq(past.map(|p| p.0), k, d, d.d);
    let present_v = concat_seq(past.map(|p| p.1), v, d, d.dv);
    // The scale's square root multiplies Q and K: computed in f32, then in the type.
    let s32 = match op.scale {
        Some(s) => s.sqrt(),
        None => (1.0f32 / (d.d as f32).sqrt()).sqrt(),
    };
    let s = r(T::from_f32(s32));
    let qs: Vec<T> = q.iter().map(|&x| r(x * s)).collect();
    let ks: Vec<T> = present_k.iter().map(|&x| r(x * s)).collect();
    let (sq, sk, reps) = (d.q_len, d.total(), d.q_heads / d.kv_heads);
    let heads = d.batch * d.q_heads;
    // Q·Kᵀ per (batch, head); a query head reads key/value head `head / reps`.
    let mut qk = vec![<T as Float>::ZERO; heads * sq * sk];
    for (bh, out) in qk.chunks_mut((sq * sk).max(1)).enumerate().take(heads) {
        let kv = (bh / d.q_heads) * d.kv_heads + (bh % d.q_heads) / reps;
        let a =
            Mat::row_major(qs.get(bh * sq * d.d..).ok_or_else(bad)?, sq, d.d).ok_or_else(bad)?;
        let kt = Mat::row_major(ks.get(kv * sk * d.d..).ok_or_else(bad)?, sk, d.d)
            .ok_or_else(bad)?
            .t();
        gemm(ctx, a, kt, out)?;
    }
    qk.iter_mut().for_each(|x| *x = r(*x));
    if op.softcap > 0.0 {
        let c = r(T::from_f32(op.softcap));
        qk.iter_mut().for_each(|x| *x = r(r(r(*x / c).tanh()) * c));
    }
    let mut qk_out = if op.mode < 2 { qk.clone() } else { Vec::new() };
    let bias_t: Vec<T> = bias.iter().map(|&b| r(T::from_f64(b))).collect();
    let scores: Vec<T> = qk.iter().zip(&bias_t).map(|(&x, &b)| r(x + b)).collect();
    if op.mode == 2 {
        qk_out = scores.clone();
    }
    // The softmax in its precision: the input's (f16 rounding each step), or the
    // type `softmax_precision` casts the scores to (and the weights back from).
    let mut p: Vec<T> = match op.softmax_precision {
        None => softmax_rows(&scores, sk, 1, SoftKind::Softmax, narrow, ctx),
        Some(DType::F64) => {
            let wide: Vec<f64> = scores.iter().map(|x| x.to_f64()).collect();
            softmax_rows(&wide, sk, 1, SoftKind::Softmax, Narrow::No, ctx)
                .into_iter()
                .map(T::from_f64)
                .collect()
        }
        Some(p) => {
            let f16 = p == DType::F16;
            let cast: Vec<f32> = scores
                .iter()
                .map(|x| {
                    let v = x.to_f64() as f32;
                    if f16 {
                        v.round_f16()
                    } else {
                        v
                    }
                })
                .collect();
            softmax_rows(&cast, sk, 1, SoftKind::Softmax, Narrow::of(p), ctx)
                .into_iter()
                .map(|x| T::from_f64(f64::from(x)))
                .collect()
        }
    };
    // A query that may attend no key gets zero weights (decided on the bias).
    for (row, brow) in p.chunks_mut(sk.max(1)).zip(bias_t.chunks(sk.max(1))) {
        if brow.iter().all(|&b| b == T::NEG_INF) {
            row.iter_mut().for_each(|x| *x = <T as Float>::ZERO);
        }
    }
    p.iter_mut().for_each(|x| *x = r(*x));
    if op.mode == 3 {
        qk_out = p.clone();
    }
    let mut y = vec![<T as Float>::ZERO; heads * sq * d.dv];
    for (bh, out) in y.chunks_mut((sq * d.dv).max(1)).enumerate().take(heads) {
        let kv = (bh / d.q_heads) * d.kv_heads + (bh % d.q_heads) / reps;
        let a = Mat::row_major(p.get(bh * sq * sk..).ok_or_else(bad)?, sq, sk).ok_or_else(bad)?;
        let b = Mat::row_major(present_v.get(kv * sk * d.dv..).ok_or_else(bad)?, sk, d.dv)
            .ok_or_else(bad)?;
        gemm(ctx, a, b, out)?;
    }
    y.iter_mut().for_each(|x| *x = r(*x));
    if d.packed {
        // Back to [batch, seq, heads · size].
        let mut packed = Vec::with_capacity(y.len());
        for b in 0..d.batch {
            for s in 0..sq {
                for h in 0..d.q_heads {
                    let at = ((b * d.q_heads + h) * sq + s) * d.dv;
                    packed.extend_from_slice(&y[at..at + d.dv]);
                }
            }
        }
        y = packed;
    }
    Ok(Outputs {
        y,
        present_k,
        present_v,
        qk: qk_out,
    })
}

impl Op for Attention {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let d = self.check(inputs)?;
        let dt = infer_input(inputs, 0)?.ty.dtype;
        Ok(vec![
            TypeInfo::new(dt, d.y_shape()),
            TypeInfo::new(dt, d.present_shape(d.d)),
            TypeInfo::new(dt, d.present_shape(d.dv)),
            TypeInfo::new(dt, d.qk_shape()),
        ])
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], _: &[TypeInfo]) -> u64 {
        // Both products, plus the softmax and the elementwise steps of every score.
        let shape = |i: usize| inputs.get(i).copied().flatten().map(|t| t.shape.as_slice());
        let (Some(q), Some(k), Some(v)) = (shape(0), shape(1), shape(2)) else {
            return 1;
        };
        let past = shape(4).zip(shape(5));
        let Ok(d) = self.dims(q, k, v, past) else {
            return 1;
        };
        let scores = [d.batch, d.q_heads, d.q_len, d.total()]
            .iter()
            .fold(1u64, |a, &x| a.saturating_mul(x as u64));
        scores.saturating_mul((d.d + d.dv + 16) as u64).max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let types: Vec<Option<TypeInfo>> = inputs
            .iter()
            .map(|t| t.map(|t| TypeInfo::new(t.dtype(), t.shape().to_vec())))
            .collect();
        let views: Vec<Option<InferInput<'_>>> = types
            .iter()
            .map(|t| t.as_ref().map(|ty| InferInput { ty, value: None }))
            .collect();
        let d = self.check(&views)?;
        let (q, k, v) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let nonpad = opt_input(inputs, 6).map(to_i64s).transpose()?;
        let bias = bias(self, &d, opt_input(inputs, 3), nonpad.as_deref())?;
        let (pk, pv) = (opt_input(inputs, 4), opt_input(inputs, 5));
        macro_rules! native {
            ($t:ty, $variant:ident) => {{
                let get = typed::<$t>;
                let past = match (pk, pv) {
                    (Some(a), Some(b)) => Some((get(a)?, get(b)?)),
                    _ => None,
                };
                let o = compute::<$t>(
                    self,
                    &d,
                    get(q)?,
                    get(k)?,
                    get(v)?,
                    past,
                    &bias,
                    Narrow::No,
                    ctx,
                )?;
                (
                    TensorData::$variant(o.y),
                    TensorData::$variant(o.present_k),
                    TensorData::$variant(o.present_v),
                    TensorData::$variant(o.qk),
                )
            }};
        }
        // f16 / bf16: widened to f32, every step rounded to the narrow type.
        macro_rules! narrowed {
            ($h:ty, $variant:ident) => {{
                let wide = |t: &Tensor| -> Result<Vec<f32>, OpError> {
                    t.as_slice::<$h>()
                        .map(|s| s.iter().map(|x| x.to_f32()).collect())
                        .ok_or(OpError::DType {
                            index: 0,
                            dtype: t.dtype(),
                        })
                };
                let (qw, kw, vw) = (wide(q)?, wide(k)?, wide(v)?);
                let past = match (pk, pv) {
                    (Some(a), Some(b)) => Some((wide(a)?, wide(b)?)),
                    _ => None,
                };
                let o = compute::<f32>(
                    self,
                    &d,
                    &qw,
                    &kw,
                    &vw,
                    past.as_ref().map(|(a, b)| (&a[..], &b[..])),
                    &bias,
                    Narrow::of(q.dtype()),
                    ctx,
                )?;
                let narrow =
                    |v: Vec<f32>| TensorData::$variant(v.into_iter().map(<$h>::from_f32).collect());
                (
                    narrow(o.y),
                    narrow(o.present_k),
                    narrow(o.present_v),
                    narrow(o.qk),
                )
            }};
        }
        let (y, pk_out, pv_out, qk) = match q.dtype() {
            DType::F32 => native!(f32, F32),
            DType::F64 => native!(f64, F64),
            DType::F16 => narrowed!(half::f16, F16),
            DType::BF16 => narrowed!(half::bf16, BF16),
            dt => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: dt,
                })
            }
        };
        Ok(vec![
            Tensor::new(d.y_shape(), y)?,
            Tensor::new(d.present_shape(d.d), pk_out)?,
            Tensor::new(d.present_shape(d.dv), pv_out)?,
            Tensor::new(d.qk_shape(), qk)?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::KernelMode;

    fn op() -> Attention {
        Attention {
            is_causal: false,
            q_heads: None,
            kv_heads: None,
            mode: 0,
            scale: None,
            softcap: 0.0,
            softmax_precision: None,
            left: -1,
            right: -1,
        }
    }

    fn t(shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(shape.to_vec(), vec![0.5f32; n]).unwrap()
    }

    fn run(op: &Attention, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        op.run(inputs, &Ctx::new(KernelMode::Fast, 1))
    }

    #[test]
    fn bf16_attention_computes_in_f32_rounding_every_step() {
        let bf = |shape: &[usize], v: f32| {
            let n = shape.iter().product();
            Tensor::from_vec(shape.to_vec(), vec![half::bf16::from_f32(v); n]).unwrap()
        };
        // Equal scores: weights 1/3 each (rounded to bf16), Y = 3 · (w · 0.75) in the
        // f32 product, rounded once: 0.75 · 0.333984375 · 3 → bf16(0.751464…) = 0.75.
        let q = bf(&[1, 1, 2, 4], 0.5);
        let k = bf(&[1, 1, 3, 4], 0.5);
        let v = bf(&[1, 1, 3, 4], 0.75);
        let y = run(&op(), &[Some(&q), Some(&k), Some(&v)])
            .unwrap()
            .remove(0);
        assert_eq!(y.dtype(), DType::BF16);
        let w = half::bf16::from_f32(1.0 / 3.0).to_f32();
        let want = half::bf16::from_f32(w * 0.75 + w * 0.75 + w * 0.75);
        assert!(y
            .as_slice::<half::bf16>()
            .unwrap()
            .iter()
            .all(|&x| x == want));
        // K of another dtype is refused.
        let err = run(&op(), &[Some(&q), Some(&t(&[1, 1, 3, 4])), Some(&v)]).unwrap_err();
        assert!(matches!(err, OpError::DTypeMismatch { .. }), "{err}");
    }

    #[test]
    fn bad_shapes_and_attributes_are_typed_errors() {
        let (q4, k4, v4) = (t(&[1, 2, 3, 4]), t(&[1, 2, 5, 4]), t(&[1, 2, 5, 6]));
        let ok = run(&op(), &[Some(&q4), Some(&k4), Some(&v4)]).unwrap();
        assert_eq!(ok[0].shape(), &[1, 2, 3, 6]);
        assert_eq!(ok[3].shape(), &[1, 2, 3, 5]);
        // Metered from the input shapes: 2 heads × 3 queries × 5 keys scores, each
        // taking a 4-long and a 6-long product and the steps between.
        let ty = |t: &Tensor| TypeInfo::new(t.dtype(), t.shape().to_vec());
        let (a, b, c) = (ty(&q4), ty(&k4), ty(&v4));
        assert_eq!(
            op().cost(&[Some(&a), Some(&b), Some(&c)], &[]),
            30 * (4 + 6 + 16)
        );
        let msg = |r: Result<Vec<Tensor>, OpError>| r.unwrap_err().to_string();
        // 3-D inputs name their heads.
        let (q3, k3, v3) = (t(&[1, 3, 8]), t(&[1, 5, 8]), t(&[1, 5, 8]));
        assert!(msg(run(&op(), &[Some(&q3), Some(&k3), Some(&v3)])).contains("q_num_heads"));
        // Three query heads cannot share two key/value heads.
        let q_odd = t(&[1, 3, 3, 4]);
        assert!(msg(run(&op(), &[Some(&q_odd), Some(&k4), Some(&v4)])).contains("multiple"));
        // Query and key heads of different sizes.
        let k_wide = t(&[1, 2, 5, 8]);
        assert!(msg(run(&op(), &[Some(&q4), Some(&k_wide), Some(&v4)])).contains("differ"));
        // A mask longer than the keys.
        let long = t(&[3, 6]);
        let r = run(&op(), &[Some(&q4), Some(&k4), Some(&v4), Some(&long)]);
        assert!(msg(r).contains("mask"));
        // A cache needs both halves.
        let past = t(&[1, 2, 2, 4]);
        let r = run(&op(), &[Some(&q4), Some(&k4), Some(&v4), None, Some(&past)]);
        assert!(msg(r).contains("go together"));
        // Integer inputs are refused by dtype.
        let qi = Tensor::from_vec(vec![1, 2, 3, 4], vec![1i64; 24]).unwrap();
        assert!(matches!(
            run(&op(), &[Some(&qi), Some(&k4), Some(&v4)]),
            Err(OpError::DType { .. })
        ));
    }

    #[test]
    fn a_fully_masked_query_gets_a_zero_row() {
        // Query 0 may attend no key (its mask row is all false): its output row and
        // weights are zeros, not NaN; query 1 attends key 1 alone, so it reads V's
        // second row.
        let q = t(&[1, 1, 2, 2]);
        let k = t(&[1, 1, 2, 2]);
        let v = Tensor::from_vec(vec![1, 1, 2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let mask = Tensor::from_vec(vec![2, 2], vec![false, false, false, true]).unwrap();
        let o = Attention { mode: 3, ..op() };
        let out = run(&o, &[Some(&q), Some(&k), Some(&v), Some(&mask)]).unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[0.0, 0.0, 3.0, 4.0]);
        assert_eq!(out[3].as_slice::<f32>().unwrap(), &[0.0, 0.0, 0.0, 1.0]);
    }
}
