//! The optimizers of `ai.onnx.preview.training` (opset 1): `Adagrad`, `Adam` and
//! `Momentum`, one update step of several parameter tensors.
//!
//! Inputs are the learning rate `R` and the update count `T` (scalars), then `n`
//! tensors of each kind — the parameters `X_1…X_n`, their gradients `G_1…G_n`, then
//! the optimizer's state (`H` for Adagrad; `V`, `H` for Adam; `V` for Momentum) —
//! and the outputs are the new parameters, then the new states, in the same order.
//! Every tensor of a node has one float dtype (f32 or f64) and each triple or
//! quadruple one shape; the arithmetic is the pseudo code of the ONNX specification,
//! in the tensors' dtype, each operation rounded on its own in the order written in
//! `docs/canonical-semantics.md` (that of ONNX's reference implementation). `sqrt`
//! is IEEE's; powers are Deed's own `pow` (`ops::math`).

use deed_types::{DType, Tensor};

use super::elementwise::Float;
use super::util::{check_dtype, infer_input, input, same_dtype};
use super::{Ctx, InferInput, NodeInfo, Op, Registry, TypeInfo};
use crate::error::OpError;

const TRAINING: &str = "ai.onnx.preview.training";

pub(crate) fn register(r: &mut Registry) {
    r.add_domain(TRAINING, "Adagrad", |n| {
        let kind = Kind::Adagrad {
            decay: n.attrs.float("decay_factor", 0.0)?,
            epsilon: n.attrs.float("epsilon", 1e-6)?,
        };
        build(n, kind, n.attrs.float("norm_coefficient", 0.0)?)
    });
    r.add_domain(TRAINING, "Adam", |n| {
        let kind = Kind::Adam {
            alpha: n.attrs.float("alpha", 0.9)?,
            beta: n.attrs.float("beta", 0.999)?,
            epsilon: n.attrs.float("epsilon", 1e-6)?,
            post: n.attrs.float("norm_coefficient_post", 0.0)?,
        };
        build(n, kind, n.attrs.float("norm_coefficient", 0.0)?)
    });
    r.add_domain(TRAINING, "Momentum", |n| {
        let required = |name: &str| {
            n.attrs
                .opt_float(name)?
                .ok_or_else(|| OpError::MissingAttribute {
                    name: name.to_owned(),
                })
        };
        if !n.attrs.has("mode") {
            return Err(OpError::MissingAttribute {
                name: "mode".to_owned(),
            });
        }
        let nesterov = match n.attrs.string("mode", "")?.as_str() {
            "standard" => false,
            "nesterov" => true,
            other => {
                return Err(OpError::bad_attr(
                    "mode",
                    format!("mode {other:?} is neither \"standard\" nor \"nesterov\""),
                ))
            }
        };
        let kind = Kind::Momentum {
            alpha: required("alpha")?,
            beta: required("beta")?,
            nesterov,
        };
        build(n, kind, required("norm_coefficient")?)
    });
}

/// Which optimizer, with its attributes (f32, widened exactly to f64 for f64
/// tensors).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Adagrad {
        decay: f32,
        epsilon: f32,
    },
    Adam {
        alpha: f32,
        beta: f32,
        epsilon: f32,
        post: f32,
    },
    Momentum {
        alpha: f32,
        beta: f32,
        nesterov: bool,
    },
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Adagrad { .. } => "Adagrad",
            Kind::Adam { .. } => "Adam",
            Kind::Momentum { .. } => "Momentum",
        }
    }
    /// Tensors per parameter among the inputs (X, G and the states).
    fn ins(self) -> usize {
        match self {
            Kind::Adam { .. } => 4,
            _ => 3,
        }
    }
    /// Tensors per parameter among the outputs (X_new and the new states).
    fn outs(self) -> usize {
        self.ins() - 1
    }
    /// Operations per parameter element (the cost).
    fn ops(self) -> u64 {
        match self {
            Kind::Adagrad { .. } => 8,
            Kind::Adam { .. } => 12,
            Kind::Momentum { nesterov, .. } => 6 + 2 * u64::from(nesterov),
        }
    }
}

/// One optimizer node over `n` parameters.
#[derive(Debug)]
struct Optimizer {
    kind: Kind,
    norm: f32,
    n: usize,
}

fn build(n: &NodeInfo<'_>, kind: Kind, norm: f32) -> Result<Box<dyn Op>, OpError> {
    if n.opset != 1 {
        return Err(OpError::unsupported(format!(
            "{} of {TRAINING} opset {} (only opset 1 exists)",
            kind.name(),
            n.opset
        )));
    }
    let (ins, outs) = (kind.ins(), kind.outs());
    let count = n.num_inputs.saturating_sub(2);
    if n.num_inputs < 2 + ins || !count.is_multiple_of(ins) {
        return Err(OpError::shape(format!(
            "{}: {} inputs are not R, T and {ins} tensors per optimized parameter",
            kind.name(),
            n.num_inputs
        )));
    }
    let params = count / ins;
    if n.num_outputs != outs * params {
        return Err(OpError::shape(format!(
            "{}: {params} parameter(s) need {} outputs, the node has {}",
            kind.name(),
            outs * params,
            n.num_outputs
        )));
    }
    Ok(Box::new(Optimizer {
        kind,
        norm,
        n: params,
    }))
}

impl Op for Optimizer {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let name = self.kind.name();
        let r = infer_input(inputs, 0)?;
        let t = infer_input(inputs, 1)?;
        check_dtype(0, r.ty.dtype, &[DType::F32, DType::F64])?;
        check_dtype(1, t.ty.dtype, &[DType::I64])?;
        for (i, which) in [(r, "R"), (t, "T")].iter().enumerate() {
            if which.0.ty.numel() != 1 {
                return Err(OpError::shape(format!(
                    "{name}: input {i} ({}) must hold one value, its shape is {:?}",
                    which.1, which.0.ty.shape
                )));
            }
        }
        let x0 = infer_input(inputs, 2)?;
        check_dtype(2, x0.ty.dtype, &[DType::F32, DType::F64])?;
        let mut out = Vec::with_capacity(self.kind.outs() * self.n);
        for k in 0..self.kind.ins() {
            for p in 0..self.n {
                let i = 2 + k * self.n + p;
                let v = infer_input(inputs, i)?;
                same_dtype(x0.ty.dtype, v.ty.dtype)?;
                let x = infer_input(inputs, 2 + p)?;
                if v.ty.shape != x.ty.shape {
                    return Err(OpError::shape(format!(
                        "{name}: input {i} has shape {:?}, its parameter (input {}) {:?}",
                        v.ty.shape,
                        2 + p,
                        x.ty.shape
                    )));
                }
                // Outputs: X_new (k = 0), then the states (k ≥ 2); G has none.
                if k != 1 {
                    out.push(v.ty.clone());
                }
            }
        }
        Ok(out)
    }

    fn cost(&self, _: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let elements: u64 = outputs[..self.n.min(outputs.len())]
            .iter()
            .map(|t| t.numel())
            .sum();
        // The scalar learning rate (Adam's two powers at 8 each) plus each element.
        elements.saturating_mul(self.kind.ops()).saturating_add(20)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let r = input(inputs, 0)?;
        let t = input(inputs, 1)?;
        let r = match (r.as_slice::<f32>(), r.as_slice::<f64>()) {
            (Some([v]), _) => f64::from(*v),
            (_, Some([v])) => *v,
            _ => {
                return Err(OpError::shape(format!(
                    "{}: R must be one f32 or f64 value",
                    self.kind.name()
                )))
            }
        };
        let t = match t.as_slice::<i64>() {
            Some([v]) => *v,
            _ => {
                return Err(OpError::shape(format!(
                    "{}: T must be one i64 value",
                    self.kind.name()
                )))
            }
        };
        let x0 = input(inputs, 2)?;
        match x0.dtype() {
            DType::F32 => self.update::<f32>(inputs, f32::from_f64(r), t as f32),
            DType::F64 => self.update::<f64>(inputs, r, t as f64),
            dtype => Err(OpError::DType { index: 2, dtype }),
        }
    }
}

impl Optimizer {
    /// The update in `F`; `r` is R rounded to `F`, `tf` is T rounded to `F` (`t` its
    /// exact value, whose sign chooses the branch).
    fn update<F: Float + deed_types::tensor::Element>(
        &self,
        inputs: &[Option<&Tensor>],
        r: F,
        tf: F,
    ) -> Result<Vec<Tensor>, OpError> {
        let n = self.n;
        let slice = |i: usize| -> Result<&[F], OpError> {
            let v = input(inputs, i)?;
            let x = input(inputs, 2 + (i - 2) % n)?;
            if v.shape() != x.shape() {
                return Err(OpError::shape(format!(
                    "{}: input {i} has shape {:?}, its parameter {:?}",
                    self.kind.name(),
                    v.shape(),
                    x.shape()
                )));
            }
            v.as_slice::<F>().ok_or(OpError::DTypeMismatch {
                expected: input(inputs, 2)?.dtype(),
                actual: v.dtype(),
            })
        };
        let f = F::from_f32;
        let nc = f(self.norm);
        let later = tf > F::ZERO;
        let mut xs = Vec::with_capacity(n);
        let mut states: Vec<Vec<Tensor>> = vec![Vec::with_capacity(n); self.kind.outs() - 1];
        for p in 0..n {
            let shape = input(inputs, 2 + p)?.shape().to_vec();
            let x = slice(2 + p)?;
            let g = slice(2 + n + p)?;
            let mut x_new = Vec::with_capacity(x.len());
            match self.kind {
                Kind::Adagrad { decay, epsilon } => {
                    let h = slice(2 + 2 * n + p)?;
                    let rate = r / (F::ONE + tf * f(decay));
                    let eps = f(epsilon);
                    let mut h_new = Vec::with_capacity(x.len());
                    for i in 0..x.len() {
                        let gr = nc * x[i] + g[i];
                        let hn = h[i] + gr * gr;
                        x_new.push(x[i] - rate * gr / (hn.sqrt() + eps));
                        h_new.push(hn);
                    }
                    states[0].push(Tensor::from_vec(shape.clone(), h_new)?);
                }
                Kind::Adam {
                    alpha,
                    beta,
                    epsilon,
                    post,
                } => {
                    let v = slice(2 + 2 * n + p)?;
                    let h = slice(2 + 3 * n + p)?;
                    let (a, b, eps) = (f(alpha), f(beta), f(epsilon));
                    let rate = if later {
                        r * (F::ONE - b.pow(tf)).sqrt() / (F::ONE - a.pow(tf))
                    } else {
                        r
                    };
                    let keep = F::ONE - f(post);
                    let mut v_new = Vec::with_capacity(x.len());
                    let mut h_new = Vec::with_capacity(x.len());
                    for i in 0..x.len() {
                        let gr = nc * x[i] + g[i];
                        let vn = a * v[i] + (F::ONE - a) * gr;
                        let hn = b * h[i] + (F::ONE - b) * (gr * gr);
                        let xn = x[i] - rate * (vn / (hn.sqrt() + eps));
                        x_new.push(keep * xn);
                        v_new.push(vn);
                        h_new.push(hn);
                    }
                    states[0].push(Tensor::from_vec(shape.clone(), v_new)?);
                    states[1].push(Tensor::from_vec(shape.clone(), h_new)?);
                }
                Kind::Momentum {
                    alpha,
                    beta,
                    nesterov,
                } => {
                    let v = slice(2 + 2 * n + p)?;
                    let a = f(alpha);
                    let b = if later { f(beta) } else { F::ONE };
                    let mut v_new = Vec::with_capacity(x.len());
                    for i in 0..x.len() {
                        let gr = nc * x[i] + g[i];
                        let vn = a * v[i] + b * gr;
                        let step = if nesterov { gr + a * vn } else { vn };
                        x_new.push(x[i] - r * step);
                        v_new.push(vn);
                    }
                    states[0].push(Tensor::from_vec(shape.clone(), v_new)?);
                }
            }
            xs.push(Tensor::from_vec(shape, x_new)?);
        }
        xs.extend(states.into_iter().flatten());
        Ok(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::{Attr, Attrs};
    use crate::ctx::KernelMode;

    fn node_op(
        op_type: &str,
        attrs: Vec<(&str, Attr)>,
        inputs: usize,
        outputs: usize,
    ) -> Result<Box<dyn Op>, OpError> {
        let attrs = Attrs(attrs.into_iter().map(|(k, a)| (k.to_string(), a)).collect());
        let info = NodeInfo {
            name: "n",
            op_type,
            domain: TRAINING,
            opset: 1,
            attrs: &attrs,
            num_inputs: inputs,
            num_outputs: outputs,
        };
        (super::super::registry().get(TRAINING, op_type).unwrap())(&info)
    }

    fn momentum(mode: &str) -> Vec<(&'static str, Attr)> {
        vec![
            ("alpha", Attr::Float(0.5)),
            ("beta", Attr::Float(0.25)),
            ("norm_coefficient", Attr::Float(0.5)),
            ("mode", Attr::String(mode.as_bytes().to_vec())),
        ]
    }

    fn v32(v: &[f32]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }

    fn run(op: &dyn Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let inputs: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
        op.run(&inputs, &Ctx::new(KernelMode::Reference, 1))
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn adagrad_step_by_hand() {
        let op = node_op(
            "Adagrad",
            vec![
                ("norm_coefficient", Attr::Float(0.5)),
                ("decay_factor", Attr::Float(1.0)),
                ("epsilon", Attr::Float(1.0)),
            ],
            5,
            2,
        )
        .unwrap();
        // r = 1 / (1 + 1·1) = 0.5; g = 0.5·2 + 1 = 2; h = 5 + 4 = 9;
        // x = 2 − 0.5·2 / (3 + 1) = 1.75.
        let out = run(
            op.as_ref(),
            &[
                &Tensor::scalar(1.0f32),
                &Tensor::scalar(1i64),
                &v32(&[2.0]),
                &v32(&[1.0]),
                &v32(&[5.0]),
            ],
        )
        .unwrap();
        assert_eq!(f32s(&out[0]), [1.75]);
        assert_eq!(f32s(&out[1]), [9.0]);
    }

    #[test]
    fn adam_corrects_the_rate_after_the_first_step() {
        let attrs = || {
            vec![
                ("alpha", Attr::Float(0.5)),
                ("beta", Attr::Float(0.75)),
                ("epsilon", Attr::Float(0.0)),
                ("norm_coefficient_post", Attr::Float(0.5)),
            ]
        };
        let op = node_op("Adam", attrs(), 6, 3).unwrap();
        let ins = |t: i64| {
            let ts = [
                Tensor::scalar(1.0f32),
                Tensor::scalar(t),
                v32(&[1.0, 0.0]),
                v32(&[2.0, 0.0]),
                v32(&[0.0, 0.0]),
                v32(&[0.0, 0.0]),
            ];
            run(op.as_ref(), &ts.iter().collect::<Vec<_>>()).unwrap()
        };
        // g = 2; v = 0.5·0 + 0.5·2 = 1; h = 0.75·0 + 0.25·4 = 1; sqrt h + 0 = 1.
        // T = 0: x = (1 − 1·(1/1))·0.5 = 0. The second element divides 0 by 0: NaN.
        let out = ins(0);
        assert_eq!(f32s(&out[0])[0], 0.0);
        assert!(f32s(&out[0])[1].is_nan());
        assert_eq!(f32s(&out[1]), [1.0, 0.0]);
        assert_eq!(f32s(&out[2]), [1.0, 0.0]);
        // T = 2: rate = 1·sqrt(1 − 0.5625) / (1 − 0.25) = 0.661437… / 0.75.
        let out = ins(2);
        let rate = 1.0f32 * (1.0f32 - 0.5625).sqrt() / 0.75;
        assert_eq!(f32s(&out[0])[0], (1.0 - rate) * 0.5);
    }

    #[test]
    fn momentum_standard_and_nesterov_over_two_parameters() {
        let ins = [
            Tensor::scalar(0.5f64),
            Tensor::scalar(3i64),
            v32(&[2.0]),
            v32(&[4.0, 6.0]),
            v32(&[1.0]),
            v32(&[0.0, 1.0]),
            v32(&[8.0]),
            v32(&[2.0, 0.0]),
        ];
        let ins: Vec<&Tensor> = ins.iter().collect();
        // g = 0.5·2 + 1 = 2; v = 0.5·8 + 0.25·2 = 4.5; x = 2 − 0.5·4.5 = −0.25.
        let op = node_op("Momentum", momentum("standard"), 8, 4).unwrap();
        let out = run(op.as_ref(), &ins).unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(f32s(&out[0]), [-0.25]);
        // g = (2, 4); v = (1 + 0.5, 0 + 1) = (1.5, 1); x = (4 − 0.75, 6 − 0.5).
        assert_eq!(f32s(&out[1]), [3.25, 5.5]);
        assert_eq!(f32s(&out[2]), [4.5]);
        assert_eq!(f32s(&out[3]), [1.5, 1.0]);
        // Nesterov: x = 2 − 0.5·(2 + 0.5·4.5) = −0.125.
        let op = node_op("Momentum", momentum("nesterov"), 8, 4).unwrap();
        let out = run(op.as_ref(), &ins).unwrap();
        assert_eq!(f32s(&out[0]), [-0.125]);
        assert_eq!(f32s(&out[2]), [4.5]);
    }

    #[test]
    fn the_first_step_ignores_beta_and_f64_computes_in_f64() {
        let op = node_op("Momentum", momentum("standard"), 5, 2).unwrap();
        let x = Tensor::from_vec(vec![1], vec![0.1f64]).unwrap();
        let z = Tensor::from_vec(vec![1], vec![0.0f64]).unwrap();
        let out = run(
            op.as_ref(),
            &[&Tensor::scalar(1.0f32), &Tensor::scalar(0i64), &x, &z, &z],
        )
        .unwrap();
        // T = 0: v = 0.5·0 + 1·(0.5·0.1 + 0) = 0.05 in f64.
        assert_eq!(out[1].as_slice::<f64>().unwrap(), &[0.5 * 0.1 + 0.0]);
        assert_eq!(out[0].as_slice::<f64>().unwrap(), &[0.1 - 0.05]);
        // Empty parameters give empty outputs.
        let e = Tensor::from_vec(vec![0, 3], Vec::<f64>::new()).unwrap();
        let out = run(
            op.as_ref(),
            &[&Tensor::scalar(1.0f32), &Tensor::scalar(0i64), &e, &e, &e],
        )
        .unwrap();
        assert_eq!(out[0].shape(), &[0, 3]);
    }

    #[test]
    fn bad_nodes_are_refused_when_built() {
        let msg = |r: Result<Box<dyn Op>, OpError>| r.unwrap_err().to_string();
        assert!(msg(node_op("Momentum", momentum("heavy"), 5, 2)).contains("mode"));
        let mut no_alpha = momentum("standard");
        no_alpha.remove(0);
        assert!(msg(node_op("Momentum", no_alpha, 5, 2)).contains("missing attribute `alpha`"));
        let mut no_mode = momentum("standard");
        no_mode.pop();
        assert!(msg(node_op("Momentum", no_mode, 5, 2)).contains("`mode`"));
        // Seven inputs are not R, T and whole triples; two parameters need four outputs.
        assert!(msg(node_op("Adagrad", vec![], 7, 2)).contains("7 inputs"));
        assert!(msg(node_op("Adagrad", vec![], 8, 2)).contains("need 4 outputs"));
        assert!(msg(node_op("Adam", vec![], 5, 3)).contains("5 inputs"));
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let op = node_op("Adagrad", vec![], 5, 2).unwrap();
        let ty = |dtype, shape: &[usize]| TypeInfo::new(dtype, shape.to_vec());
        let infer = |tys: &[TypeInfo]| {
            let ins: Vec<Option<InferInput<'_>>> = tys
                .iter()
                .map(|ty| Some(InferInput { ty, value: None }))
                .collect();
            op.infer(&ins)
        };
        let good = [
            ty(DType::F32, &[]),
            ty(DType::I64, &[]),
            ty(DType::F32, &[2]),
            ty(DType::F32, &[2]),
            ty(DType::F32, &[2]),
        ];
        assert_eq!(
            infer(&good).unwrap(),
            vec![good[2].clone(), good[4].clone()]
        );
        let mut bad = good.clone();
        bad[1] = ty(DType::I32, &[]);
        assert!(matches!(infer(&bad), Err(OpError::DType { index: 1, .. })));
        let mut bad = good.clone();
        bad[0] = ty(DType::F32, &[2]);
        assert!(infer(&bad).unwrap_err().to_string().contains("one value"));
        let mut bad = good.clone();
        bad[4] = ty(DType::F32, &[3]);
        assert!(infer(&bad).unwrap_err().to_string().contains("input 4"));
        let mut bad = good.clone();
        bad[3] = ty(DType::F64, &[2]);
        assert!(matches!(infer(&bad), Err(OpError::DTypeMismatch { .. })));
        let mut bad = good.clone();
        for b in &mut bad[2..] {
            *b = ty(DType::F16, &[2]);
        }
        assert!(matches!(infer(&bad), Err(OpError::DType { index: 2, .. })));
        // At run time too: a mismatched state.
        let out = run(
            op.as_ref(),
            &[
                &Tensor::scalar(1.0f32),
                &Tensor::scalar(0i64),
                &v32(&[1.0]),
                &v32(&[1.0]),
                &v32(&[1.0, 2.0]),
            ],
        );
        assert!(out.unwrap_err().to_string().contains("input 4"));
    }
}
