//! `FlexAttention` (`ai.onnx.preview`, opset 1): scaled dot-product attention over
//! rank-4 inputs with optional modifier subgraphs on the scores (`score_mod`) and on
//! the probabilities (`prob_mod`), and grouped-query heads.
//!
//! The arithmetic is that of the operator's ONNX function body run as separate
//! operators with this crate's canonical semantics, and this implementation runs it
//! so: the same `Mul`, `Transpose`, `MatMul`, `Cast` and `Softmax` operators, in the
//! body's order, each output stored with the canonical NaN. The scale is computed in
//! f32 (`1 / sqrt(head size)` unless the `scale` attribute gives it), its square root
//! is cast to the input type and multiplies Q and the head-aligned K, the scores are
//! cast to the softmax type (`softmax_precision`, else f32 for f16 inputs and the
//! input type otherwise), the softmax runs over the last axis, V is cast to the
//! softmax type for the second product, and the result is cast back. A modifier is a
//! subgraph (`crate::model::Graph`) taking and returning one tensor of the scores'
//! type and shape; it may read outer values, which are the node's inputs after Q, K
//! and V (see `ops/control.rs`). The node is one trace step.

use std::collections::BTreeMap;

use deed_types::tensor::Element;
use deed_types::{DType, Tensor, TensorData};

use super::cast::cast;
use super::control::{bodies, plan_types_of, sub_err, Body};
use super::util::{check_count, infer_input, input};
use super::{Ctx, InferInput, Needs, NodeInfo, Op, Registry, TypeInfo};
use crate::attrs::{Attr, Attrs};
use crate::error::OpError;
use crate::limits::Limits;

/// The domain of the operator.
const PREVIEW: &str = "ai.onnx.preview";

/// The default-domain opset of the operators the function body is made of.
const BODY_OPSET: i64 = 23;

/// Registers `FlexAttention`.
pub(crate) fn register(r: &mut Registry) {
    r.add_domain(PREVIEW, "FlexAttention", build);
}

/// The `FlexAttention` node: its attributes, its modifiers and the operators of its
/// function body.
#[derive(Debug)]
struct FlexAttention {
    scale: Option<f32>,
    /// The type the softmax runs in, when `softmax_precision` gives it.
    softmax_precision: Option<DType>,
    score_mod: Option<Body>,
    prob_mod: Option<Body>,
    mul: Box<dyn Op>,
    transpose: Box<dyn Op>,
    matmul: Box<dyn Op>,
    softmax: Box<dyn Op>,
}

/// One operator of the function body.
fn body_op(
    op_type: &'static str,
    attrs: &[(&str, Attr)],
    num_inputs: usize,
) -> Result<Box<dyn Op>, OpError> {
    let attrs = Attrs(
        attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    );
    let build = super::registry()
        .get("", op_type)
        .ok_or_else(|| OpError::unsupported(format!("FlexAttention needs {op_type}")))?;
    build(&NodeInfo {
        name: "FlexAttention",
        op_type,
        domain: "",
        opset: BODY_OPSET,
        attrs: &attrs,
        num_inputs,
        num_outputs: 1,
    })
}

fn build(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 3, usize::MAX)?;
    let a = n.attrs;
    let softmax_precision = match a.opt_int("softmax_precision")? {
        None => None,
        Some(1) => Some(DType::F32),
        Some(10) => Some(DType::F16),
        Some(11) => Some(DType::F64),
        Some(p) => {
            return Err(OpError::unsupported(format!(
                "FlexAttention softmax_precision {p} (supported: 1 float, 10 float16, 11 double)"
            )))
        }
    };
    let present: Vec<&'static str> = ["score_mod", "prob_mod"]
        .into_iter()
        .filter(|m| a.has(m))
        .collect();
    let mut mods = bodies(n, &present)?.into_iter();
    let (mut score_mod, mut prob_mod) = (None, None);
    for name in &present {
        let body = mods.next();
        match *name {
            "score_mod" => score_mod = body,
            _ => prob_mod = body,
        }
    }
    for body in score_mod.iter().chain(&prob_mod) {
        if body.graph.formal.len() != 1 || body.graph.model.outputs.len() != 1 {
            return Err(sub_err(
                body.attr,
                format!(
                    "a modifier takes one input and gives one output, this one takes {} and gives {}",
                    body.graph.formal.len(),
                    body.graph.model.outputs.len()
                ),
            ));
        }
    }
    Ok(Box::new(FlexAttention {
        scale: a.opt_float("scale")?,
        softmax_precision,
        score_mod,
        prob_mod,
        mul: body_op("Mul", &[], 2)?,
        transpose: body_op("Transpose", &[("perm", Attr::Ints(vec![0, 1, 3, 2]))], 1)?,
        matmul: body_op("MatMul", &[], 2)?,
        softmax: body_op("Softmax", &[("axis", Attr::Int(3))], 1)?,
    }))
}

/// Shapes of one node: Q `[b, hq, l, e]`, K `[b, hkv, s, e]`, V `[b, hkv, s, ev]`.
struct Dims {
    b: usize,
    hq: usize,
    hkv: usize,
    l: usize,
    s: usize,
    e: usize,
    ev: usize,
}

impl Dims {
    fn of(q: &[usize], k: &[usize], v: &[usize]) -> Result<Dims, OpError> {
        let rank4 = |name: &str, s: &[usize]| -> Result<[usize; 4], OpError> {
            <[usize; 4]>::try_from(s)
                .map_err(|_| OpError::shape(format!("{name} must be rank 4, it has shape {s:?}")))
        };
        let [b, hq, l, e] = rank4("Q", q)?;
        let [bk, hkv, s, ek] = rank4("K", k)?;
        let [bv, hv, sv, ev] = rank4("V", v)?;
        if bk != b || bv != b {
            return Err(OpError::shape(format!(
                "Q, K and V differ in batch size: {b}, {bk}, {bv}"
            )));
        }
        if hv != hkv || sv != s {
            return Err(OpError::shape(format!(
                "K {k:?} and V {v:?} differ in heads or sequence length"
            )));
        }
        if ek != e {
            return Err(OpError::shape(format!(
                "Q and K differ in head size: {e} and {ek}"
            )));
        }
        if hkv == 0 || hq % hkv != 0 {
            return Err(OpError::shape(format!(
                "Q's {hq} heads are not a multiple of K's and V's {hkv}"
            )));
        }
        Ok(Dims {
            b,
            hq,
            hkv,
            l,
            s,
            e,
            ev,
        })
    }

    fn group(&self) -> usize {
        self.hq / self.hkv
    }
}

/// Each of the `hkv` heads of `t` (`[b, hkv, s, d]`) repeated `group` times in a row:
/// query head `h` reads key/value head `h / group`.
fn repeat_heads(t: &Tensor, group: usize) -> Result<Tensor, OpError> {
    fn go<T: Element>(v: &[T], heads: usize, inner: usize, group: usize) -> TensorData {
        let mut out = Vec::with_capacity(v.len() * group);
        for head in v.chunks(inner).take(heads) {
            for _ in 0..group {
                out.extend_from_slice(head);
            }
        }
        T::wrap(out)
    }
    let s = t.shape();
    let heads = s[0] * s[1];
    let inner = s[2] * s[3];
    let data = if inner == 0 {
        TensorData::zeros(t.dtype(), 0)
    } else {
        deed_types::with_data!(t.data(), v => go(v, heads, inner, group))
    };
    Ok(Tensor::new(vec![s[0], s[1] * group, s[2], s[3]], data)?)
}

/// The one output of a body operator, stored with the canonical NaN as a node's
/// output is.
fn only(mut outs: Vec<Tensor>, what: &str) -> Result<Tensor, OpError> {
    let mut t = match outs.len() {
        1 => outs.remove(0),
        n => {
            return Err(OpError::value(format!(
                "FlexAttention's {what} gave {n} outputs"
            )))
        }
    };
    t.canonicalize_nans();
    Ok(t)
}

/// The types of the body's values, from the inputs' types.
struct Types {
    dims: Dims,
    /// The input type.
    t: DType,
    /// The softmax type.
    c: DType,
    q: TypeInfo,
    scale: TypeInfo,
    k_aligned: TypeInfo,
    k_t: TypeInfo,
    scores_t: TypeInfo,
    scores: TypeInfo,
    v_aligned: TypeInfo,
    y_c: TypeInfo,
    y: TypeInfo,
}

impl FlexAttention {
    fn types(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Types, OpError> {
        let (q, k, v) = (
            infer_input(inputs, 0)?,
            infer_input(inputs, 1)?,
            infer_input(inputs, 2)?,
        );
        let t = q.ty.dtype;
        for (i, x) in [(1, k), (2, v)] {
            if x.ty.dtype != t {
                return Err(OpError::DType {
                    index: i,
                    dtype: x.ty.dtype,
                });
            }
        }
        if !matches!(t, DType::F16 | DType::F32 | DType::F64) {
            return Err(OpError::DType { index: 0, dtype: t });
        }
        let dims = Dims::of(&q.ty.shape, &k.ty.shape, &v.ty.shape)?;
        let c = self.softmax_precision.unwrap_or(match t {
            DType::F64 => DType::F64,
            _ => DType::F32,
        });
        let ty = |dtype, shape: Vec<usize>| TypeInfo::new(dtype, shape);
        let (b, hq, l, s, e, ev) = (dims.b, dims.hq, dims.l, dims.s, dims.e, dims.ev);
        let scale = ty(t, vec![]);
        let k_aligned = ty(t, vec![b, hq, s, e]);
        let k_t = ty(t, vec![b, hq, e, s]);
        // The body's own operators check what they accept (dtypes, shapes).
        let infer = |op: &dyn Op, ins: &[&TypeInfo]| -> Result<TypeInfo, OpError> {
            let ins: Vec<Option<InferInput<'_>>> = ins
                .iter()
                .map(|&ty| Some(InferInput { ty, value: None }))
                .collect();
            op.infer(&ins)?
                .into_iter()
                .next()
                .ok_or_else(|| OpError::value("a FlexAttention body operator gave no output"))
        };
        let q_scaled = infer(self.mul.as_ref(), &[q.ty, &scale])?;
        infer(self.transpose.as_ref(), &[&k_aligned])?;
        let scores_t = infer(self.matmul.as_ref(), &[&q_scaled, &k_t])?;
        let scores = ty(c, scores_t.shape.clone());
        infer(self.softmax.as_ref(), &[&scores])?;
        let v_aligned = ty(t, vec![b, hq, s, ev]);
        let v_c = ty(c, v_aligned.shape.clone());
        let y_c = infer(self.matmul.as_ref(), &[&scores, &v_c])?;
        let y = ty(t, vec![b, hq, l, ev]);
        Ok(Types {
            dims,
            t,
            c,
            q: q.ty.clone(),
            scale,
            k_aligned,
            k_t,
            scores_t,
            scores,
            v_aligned,
            y_c,
            y,
        })
    }

    /// Plans each modifier for the scores' type and checks that it gives that type
    /// back; returns the largest cost and activation memory of their plans.
    fn plan_mods(
        &self,
        inputs: &[Option<InferInput<'_>>],
        scores: &TypeInfo,
        limits: &Limits,
    ) -> Result<Needs, OpError> {
        let mut needs = Needs::default();
        for body in self.score_mod.iter().chain(&self.prob_mod) {
            let plan = body.plan_types(&[(scores.clone(), None)], inputs, 3, &|_| None, limits)?;
            let out = plan_types_of(&plan);
            if out.as_slice() != std::slice::from_ref(scores) {
                return Err(sub_err(
                    body.attr,
                    format!(
                        "a modifier must give one {} {:?} back, this one gives {:?}",
                        scores.dtype, scores.shape, out
                    ),
                ));
            }
            needs.cost = needs.cost.saturating_add(plan.cost());
            needs.working_bytes = needs.working_bytes.max(plan.peak_activation_bytes());
        }
        Ok(needs)
    }
}

impl Op for FlexAttention {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        self.infer_within(inputs, &Limits::default())
    }

    fn infer_within(
        &self,
        inputs: &[Option<InferInput<'_>>],
        limits: &Limits,
    ) -> Result<Vec<TypeInfo>, OpError> {
        let types = self.types(inputs)?;
        self.plan_mods(inputs, &types.scores, limits)?;
        Ok(vec![types.y])
    }

    fn needs(
        &self,
        known: &[Option<InferInput<'_>>],
        _: &[Option<&TypeInfo>],
        _: &[TypeInfo],
        limits: &Limits,
    ) -> Result<Needs, OpError> {
        let ty = self.types(known)?;
        let mods = self.plan_mods(known, &ty.scores, limits)?;
        let v_c = TypeInfo::new(ty.c, ty.v_aligned.shape.clone());
        let cost = |op: &dyn Op, ins: &[&TypeInfo], out: &TypeInfo| {
            let ins: Vec<Option<&TypeInfo>> = ins.iter().map(|&t| Some(t)).collect();
            op.cost(&ins, std::slice::from_ref(out))
        };
        let matmuls = cost(self.matmul.as_ref(), &[&ty.q, &ty.k_t], &ty.scores_t)
            .saturating_add(cost(self.matmul.as_ref(), &[&ty.scores, &v_c], &ty.y_c));
        let moves = [
            &ty.k_aligned,
            &ty.v_aligned,
            &ty.k_t,
            &ty.scores,
            &v_c,
            &ty.y,
        ]
        .iter()
        .fold(0u64, |a, t| a.saturating_add(t.numel()));
        let cost = matmuls
            .saturating_add(cost(self.mul.as_ref(), &[&ty.q, &ty.scale], &ty.q))
            .saturating_add(cost(
                self.mul.as_ref(),
                &[&ty.k_aligned, &ty.scale],
                &ty.k_aligned,
            ))
            .saturating_add(cost(self.softmax.as_ref(), &[&ty.scores], &ty.scores))
            .saturating_add(moves)
            .saturating_add(mods.cost);
        // At most every intermediate value at once, and a modifier's plan.
        let held = [
            &ty.q,
            &ty.k_aligned,
            &ty.k_aligned,
            &ty.k_t,
            &ty.scores_t,
            &ty.scores,
            &ty.scores,
            &ty.v_aligned,
            &v_c,
            &ty.y_c,
        ]
        .iter()
        .fold(0u64, |a, t| a.saturating_add(t.bytes()));
        Ok(Needs {
            cost,
            working_bytes: held.saturating_add(mods.working_bytes),
        })
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let (q, k, v) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let types: Vec<TypeInfo> = [q, k, v].iter().map(|t| TypeInfo::of(t)).collect();
        let ins: Vec<Option<InferInput<'_>>> = types
            .iter()
            .map(|ty| Some(InferInput { ty, value: None }))
            .collect();
        let ty = self.types(&ins)?;
        let implicit = &inputs[3.min(inputs.len())..];
        let group = ty.dims.group();
        let (k_aligned, v_aligned) = if group == 1 {
            (k.clone(), v.clone())
        } else {
            (repeat_heads(k, group)?, repeat_heads(v, group)?)
        };
        // The scale's square root, in f32, then in the input type.
        let scale = match self.scale {
            Some(s) => s,
            None => 1.0 / (ty.dims.e as f32).sqrt(),
        };
        let sqrt_scale = cast(&Tensor::scalar(scale.sqrt()), ty.t)?;
        let q_scaled = only(self.mul.run(&[Some(q), Some(&sqrt_scale)], ctx)?, "Mul")?;
        let k_scaled = only(
            self.mul.run(&[Some(&k_aligned), Some(&sqrt_scale)], ctx)?,
            "Mul",
        )?;
        let k_t = only(self.transpose.run(&[Some(&k_scaled)], ctx)?, "Transpose")?;
        let scores = only(
            self.matmul.run(&[Some(&q_scaled), Some(&k_t)], ctx)?,
            "MatMul",
        )?;
        let mut scores = only(vec![cast(&scores, ty.c)?], "Cast")?;
        if let Some(body) = &self.score_mod {
            scores = only(body.run(&mut None, &[&scores], implicit, ctx)?, body.attr)?;
        }
        let mut probs = only(self.softmax.run(&[Some(&scores)], ctx)?, "Softmax")?;
        if let Some(body) = &self.prob_mod {
            probs = only(body.run(&mut None, &[&probs], implicit, ctx)?, body.attr)?;
        }
        let v_c = only(vec![cast(&v_aligned, ty.c)?], "Cast")?;
        let y = only(self.matmul.run(&[Some(&probs), Some(&v_c)], ctx)?, "MatMul")?;
        let y = only(vec![cast(&y, ty.t)?], "Cast")?;
        if TypeInfo::of(&y) != ty.y {
            return Err(OpError::shape(format!(
                "FlexAttention computed {} {:?}, planned {} {:?}",
                y.dtype(),
                y.shape(),
                ty.y.dtype,
                ty.y.shape
            )));
        }
        Ok(vec![y])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ops::KernelMode;

    fn node(attrs: &[(&str, Attr)]) -> Result<Box<dyn Op>, OpError> {
        let attrs = Attrs(
            attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        );
        build(&NodeInfo {
            name: "flex",
            op_type: "FlexAttention",
            domain: PREVIEW,
            opset: 1,
            attrs: &attrs,
            num_inputs: 3,
            num_outputs: 1,
        })
    }

    fn ramp(shape: Vec<usize>, from: f32) -> Tensor {
        let n = shape.iter().product::<usize>();
        Tensor::from_vec(shape, (0..n).map(|i| from + i as f32 * 0.25).collect()).unwrap()
    }

    fn infer(op: &dyn Op, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Vec<TypeInfo>, OpError> {
        let types: Vec<TypeInfo> = [q, k, v].iter().map(|t| TypeInfo::of(t)).collect();
        let ins: Vec<Option<InferInput<'_>>> = types
            .iter()
            .map(|ty| Some(InferInput { ty, value: None }))
            .collect();
        op.infer(&ins)
    }

    #[test]
    fn one_key_gives_its_value_to_every_query_of_its_group() {
        // One key per head: its softmax weight is exactly 1, so each query head reads
        // the value of key/value head h / 2, bit for bit.
        let op = node(&[]).unwrap();
        let q = ramp(vec![1, 4, 3, 2], -1.0);
        let k = ramp(vec![1, 2, 1, 2], 0.5);
        let v = ramp(vec![1, 2, 1, 3], 10.0);
        let ty = infer(op.as_ref(), &q, &k, &v).unwrap();
        assert_eq!(ty, vec![TypeInfo::new(DType::F32, vec![1, 4, 3, 3])]);
        for threads in [1, 3] {
            for mode in [KernelMode::Fast, KernelMode::Reference] {
                let ctx = Ctx::new(mode, threads);
                let y = op.run(&[Some(&q), Some(&k), Some(&v)], &ctx).unwrap();
                let y = y[0].as_slice::<f32>().unwrap();
                let v = v.as_slice::<f32>().unwrap();
                for h in 0..4 {
                    for l in 0..3 {
                        let at = (h * 3 + l) * 3;
                        assert_eq!(&y[at..at + 3], &v[(h / 2) * 3..(h / 2) * 3 + 3], "head {h}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_scale_is_applied_to_q_and_k_as_its_square_root() {
        // Two keys: the weights are softmax(s · q·k). With scale 4 (square root 2,
        // exact), q·k = 0.5 and 0 give logits 2 and 0.
        let op = node(&[("scale", Attr::Float(4.0))]).unwrap();
        let q = Tensor::from_vec(vec![1, 1, 1, 1], vec![1.0f32]).unwrap();
        let k = Tensor::from_vec(vec![1, 1, 2, 1], vec![0.5f32, 0.0]).unwrap();
        let v = Tensor::from_vec(vec![1, 1, 2, 1], vec![1.0f32, 0.0]).unwrap();
        let y = op
            .run(&[Some(&q), Some(&k), Some(&v)], &Ctx::default())
            .unwrap();
        let got = y[0].as_slice::<f32>().unwrap()[0];
        let want = 1.0 / (1.0 + (-2.0f64).exp());
        assert!((f64::from(got) - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn bad_inputs_and_attributes_are_refused() {
        let op = node(&[]).unwrap();
        let q = ramp(vec![1, 2, 3, 4], 0.0);
        let k = ramp(vec![1, 2, 5, 4], 0.0);
        let v = ramp(vec![1, 2, 5, 6], 0.0);
        assert!(infer(op.as_ref(), &q, &k, &v).is_ok());
        let e = infer(op.as_ref(), &ramp(vec![2, 3, 4], 0.0), &k, &v).unwrap_err();
        assert!(e.to_string().contains("rank 4"), "{e}");
        let e = infer(op.as_ref(), &q, &ramp(vec![1, 2, 5, 3], 0.0), &v).unwrap_err();
        assert!(e.to_string().contains("head size"), "{e}");
        let e = infer(op.as_ref(), &ramp(vec![1, 3, 3, 4], 0.0), &k, &v).unwrap_err();
        assert!(e.to_string().contains("multiple"), "{e}");
        let e = infer(op.as_ref(), &q, &k, &ramp(vec![1, 2, 4, 6], 0.0)).unwrap_err();
        assert!(e.to_string().contains("sequence length"), "{e}");
        let k64 = Tensor::from_vec(vec![1, 2, 5, 4], vec![0.0f64; 40]).unwrap();
        let e = infer(op.as_ref(), &q, &k64, &v).unwrap_err();
        assert!(matches!(e, OpError::DType { index: 1, .. }), "{e}");
        let qi = Tensor::from_vec(vec![1, 2, 3, 4], vec![0i32; 24]).unwrap();
        let ki = Tensor::from_vec(vec![1, 2, 5, 4], vec![0i32; 40]).unwrap();
        let vi = Tensor::from_vec(vec![1, 2, 5, 6], vec![0i32; 60]).unwrap();
        let e = infer(op.as_ref(), &qi, &ki, &vi).unwrap_err();
        assert!(matches!(e, OpError::DType { index: 0, .. }), "{e}");
        let e = node(&[("softmax_precision", Attr::Int(7))]).unwrap_err();
        assert!(e.to_string().contains("softmax_precision 7"), "{e}");
    }
}
