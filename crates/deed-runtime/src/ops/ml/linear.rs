//! `LinearRegressor` and `LinearClassifier`.
//!
//! Inputs are read as f32. Each score is a dot product computed sequentially over
//! the features in increasing order from +0.0 with fused multiply-add
//! (`acc = c.mul_add(x, acc)`), then the intercept is added.

use deed_types::{DType, Tensor};

use super::post::PostTransform;
use super::tree::{argmax, Labels};
use super::{features_f32, numeric, rows_cols};
use crate::error::OpError;
use crate::ops::util::{check_count, infer_input, input};
use crate::ops::{Ctx, InferInput, NodeInfo, Op, TypeInfo};

/// Coefficients `[targets, F]` and intercepts, shared by both operators.
#[derive(Debug)]
struct Linear {
    coef: Vec<f32>,
    intercepts: Vec<f32>,
    targets: usize,
}

impl Linear {
    fn parse(n: &NodeInfo<'_>, targets: Option<usize>) -> Result<Linear, OpError> {
        let coef = n
            .attrs
            .floats("coefficients")?
            .ok_or_else(|| OpError::MissingAttribute {
                name: "coefficients".into(),
            })?;
        let intercepts = n.attrs.floats("intercepts")?.unwrap_or_default();
        let targets = match targets {
            Some(t) => t,
            None if !intercepts.is_empty() => intercepts.len(),
            None => 1,
        };
        if targets == 0 || coef.len() % targets != 0 {
            return Err(OpError::bad_attr(
                "coefficients",
                format!("{} values do not split into {targets} targets", coef.len()),
            ));
        }
        if !intercepts.is_empty() && intercepts.len() != targets {
            return Err(OpError::bad_attr(
                "intercepts",
                "one intercept per target expected",
            ));
        }
        Ok(Linear {
            coef,
            intercepts,
            targets,
        })
    }

    fn features(&self) -> usize {
        self.coef.len() / self.targets
    }

    fn check(&self, shape: &[usize]) -> Result<(usize, usize), OpError> {
        let (rows, f) = rows_cols(shape)?;
        if f != self.features() {
            return Err(OpError::shape(format!(
                "input has {f} features, the model {}",
                self.features()
            )));
        }
        Ok((rows, f))
    }

    /// Raw scores `[rows, targets]`.
    fn scores(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let f = self.features();
        let mut out = Vec::with_capacity(rows * self.targets);
        for r in 0..rows {
            let row = &x[r * f..(r + 1) * f];
            for t in 0..self.targets {
                let c = &self.coef[t * f..(t + 1) * f];
                let mut acc = 0.0f32;
                for (&ci, &xi) in c.iter().zip(row) {
                    acc = ci.mul_add(xi, acc);
                }
                if let Some(&b) = self.intercepts.get(t) {
                    acc += b;
                }
                out.push(acc);
            }
        }
        out
    }
}

fn check_input(inputs: &[Option<InferInput<'_>>]) -> Result<Vec<usize>, OpError> {
    check_count(inputs.len(), 1, 1)?;
    let x = infer_input(inputs, 0)?;
    if !numeric(x.ty.dtype) {
        return Err(OpError::DType {
            index: 0,
            dtype: x.ty.dtype,
        });
    }
    Ok(x.ty.shape.clone())
}

fn dot_cost(inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo], targets: usize) -> u64 {
    let i = inputs
        .first()
        .copied()
        .flatten()
        .map(|t| t.numel())
        .unwrap_or(1);
    let o: u64 = outputs.iter().map(|t| t.numel()).sum();
    i.saturating_mul(targets as u64).saturating_add(o).max(1)
}

/// `LinearRegressor`.
#[derive(Debug)]
pub struct LinearRegressor {
    lin: Linear,
    post: PostTransform,
}

pub(super) fn build_regressor(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let t = n.attrs.int("targets", 1)?;
    if t < 1 {
        return Err(OpError::bad_attr("targets", "must be at least 1"));
    }
    Ok(Box::new(LinearRegressor {
        lin: Linear::parse(n, Some(t as usize))?,
        post: PostTransform::parse(&n.attrs.string("post_transform", "NONE")?)?,
    }))
}

impl Op for LinearRegressor {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let shape = check_input(inputs)?;
        let (rows, _) = self.lin.check(&shape)?;
        Ok(vec![TypeInfo::new(
            DType::F32,
            vec![rows, self.lin.targets],
        )])
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        dot_cost(inputs, outputs, self.lin.targets)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (rows, _) = self.lin.check(x.shape())?;
        let mut s = self.lin.scores(&features_f32(x, 0)?, rows);
        for row in s.chunks_mut(self.lin.targets) {
            self.post.apply(row);
        }
        Ok(vec![Tensor::from_vec(vec![rows, self.lin.targets], s)?])
    }
}

/// `LinearClassifier`, with the ONNX reference's binary form: one score column and
/// two labels become the columns `[−s, s]` before the post transform.
#[derive(Debug)]
pub struct LinearClassifier {
    lin: Linear,
    labels: Labels,
    post: PostTransform,
}

pub(super) fn build_classifier(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let labels = Labels::from_node(n, "classlabels_ints", "classlabels_strings")?;
    Ok(Box::new(LinearClassifier {
        lin: Linear::parse(n, None)?,
        labels,
        post: PostTransform::parse(&n.attrs.string("post_transform", "NONE")?)?,
    }))
}

impl LinearClassifier {
    fn cols(&self) -> usize {
        if self.lin.targets == 1 && self.labels.len() == 2 {
            2
        } else {
            self.lin.targets
        }
    }
}

impl Op for LinearClassifier {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        let shape = check_input(inputs)?;
        let (rows, _) = self.lin.check(&shape)?;
        Ok(vec![
            TypeInfo::new(self.labels.dtype(), vec![rows]),
            TypeInfo::new(DType::F32, vec![rows, self.cols()]),
        ])
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        dot_cost(inputs, outputs, self.lin.targets)
    }

    fn run(&self, inputs: &[Option<&Tensor>], _ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (rows, _) = self.lin.check(x.shape())?;
        let raw = self.lin.scores(&features_f32(x, 0)?, rows);
        let cols = self.cols();
        let t = self.lin.targets;
        let mut scores = Vec::with_capacity(rows * cols);
        let mut picks = Vec::with_capacity(rows);
        for r in 0..rows {
            let mut s: Vec<f32> = if cols == 2 && t == 1 {
                vec![-raw[r], raw[r]]
            } else {
                raw[r * t..(r + 1) * t].to_vec()
            };
            self.post.apply(&mut s);
            let pick = if cols > 1 {
                argmax(&s)
            } else {
                let threshold = if self.post == PostTransform::None {
                    0.0
                } else {
                    0.5
                };
                s.first().filter(|&&v| v >= threshold).map(|_| 0)
            };
            picks.push(pick);
            scores.extend(s);
        }
        Ok(vec![
            self.labels.tensor(&picks)?,
            Tensor::from_vec(vec![rows, cols], scores)?,
        ])
    }
}
