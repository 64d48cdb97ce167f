//! Loss functions: `NegativeLogLikelihoodLoss` (opsets 12, 13, 22) and
//! `SoftmaxCrossEntropyLoss` (opsets 12, 13), the latter as its ONNX function body:
//! the crate's `LogSoftmax` over axis 1, then the former on its result.
//!
//! Input `x` is `[N, C]` or `[N, C, d1, …, dk]`, the target `[N]` or `[N, d1, …, dk]`
//! (i32 or i64) with class indices in `−C..C` (negative ones count from the end, as
//! `GatherElements` takes them), the optional weight `[C]`. Both operators compute what
//! their ONNX function bodies compute with the crate's semantics for each operator in
//! them (the same bits as the `_expanded` graphs). For the target's elements in
//! row-major order, with `t` the class and `x_t` the score `x[n, t, d…]`:
//! - with neither a weight nor an `ignore_index`, `loss = −x_t` (`−` flips the sign);
//! - otherwise `loss = (−x_t) · w`, where `w` is `weight[t]` (or 1 without a weight),
//!   and an element whose target is `ignore_index` has `x_t = 0` and `w = 0`, so its
//!   loss is `−0`;
//! - `reduction = "none"` outputs the losses in the target's shape, `"sum"` their
//!   sequential sum from +0, and `"mean"` either that sum divided once by the
//!   sequential sum of the `w` (with a weight or an `ignore_index`) or by the element
//!   count (with neither).
//!
//! A target outside `−C..C` that is not `ignore_index` is an input error. f16 is
//! computed in f32 and rounded where the body's f16 operators round: each weighted
//! loss, both sums before the weighted mean's division, and every output. In
//! `SoftmaxCrossEntropyLoss` the log-probabilities are the crate's f16 `LogSoftmax`.

use deed_types::{DType, Tensor, TensorData};

use super::{check_float, param, row_layout, softmax_rows, Float, Narrow, SoftKind};
use crate::error::OpError;
use crate::ops::util::{check_count, infer_input, input, opt_infer_input, opt_input, same_dtype};
use crate::ops::{Ctx, InferInput, NodeInfo, Op, TypeInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reduction {
    None,
    Sum,
    Mean,
}

/// A loss node's attributes.
#[derive(Debug)]
pub(super) struct Loss {
    reduction: Reduction,
    ignore_index: Option<i64>,
    /// `SoftmaxCrossEntropyLoss`: the log-softmax of the scores comes first.
    softmax: bool,
}

fn build(n: &NodeInfo<'_>, softmax: bool) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 2, 3)?;
    let reduction = match n.attrs.string("reduction", "mean")?.as_str() {
        "none" => Reduction::None,
        "sum" => Reduction::Sum,
        "mean" => Reduction::Mean,
        r => {
            return Err(OpError::BadAttribute {
                name: "reduction".into(),
                reason: format!("`{r}` is not one of none, sum, mean"),
            })
        }
    };
    Ok(Box::new(Loss {
        reduction,
        ignore_index: n.attrs.opt_int("ignore_index")?,
        softmax,
    }))
}

/// Builds `NegativeLogLikelihoodLoss`.
pub(super) fn build_nll(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    build(n, false)
}

/// Builds `SoftmaxCrossEntropyLoss`.
pub(super) fn build_sce(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    build(n, true)
}

impl Op for Loss {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 2, 3)?;
        let x = infer_input(inputs, 0)?;
        check_float(0, x.ty.dtype)?;
        let t = infer_input(inputs, 1)?;
        if !matches!(t.ty.dtype, DType::I32 | DType::I64) {
            return Err(OpError::DType {
                index: 1,
                dtype: t.ty.dtype,
            });
        }
        let xs = &x.ty.shape;
        if xs.len() < 2 {
            return Err(OpError::shape(format!(
                "input {xs:?} must be [N, C] or [N, C, d1, ...]"
            )));
        }
        let want: Vec<usize> = std::iter::once(xs[0])
            .chain(xs[2..].iter().copied())
            .collect();
        if t.ty.shape != want {
            return Err(OpError::shape(format!(
                "target {:?} does not fit input {xs:?}: expected {want:?}",
                t.ty.shape
            )));
        }
        if let Some(w) = opt_infer_input(inputs, 2) {
            same_dtype(x.ty.dtype, w.ty.dtype)?;
            if w.ty.shape != [xs[1]] {
                return Err(OpError::shape(format!(
                    "weight {:?} must be [C] = [{}]",
                    w.ty.shape, xs[1]
                )));
            }
        }
        let loss = match self.reduction {
            Reduction::None => want,
            Reduction::Sum | Reduction::Mean => Vec::new(),
        };
        let mut out = vec![TypeInfo::new(x.ty.dtype, loss)];
        if self.softmax {
            out.push(x.ty.clone());
        }
        Ok(out)
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], _: &[TypeInfo]) -> u64 {
        let x = inputs.first().copied().flatten().map_or(0, |t| t.numel());
        let t = inputs.get(1).copied().flatten().map_or(0, |t| t.numel());
        let per = if self.softmax { 12 } else { 0 };
        x.saturating_mul(per)
            .saturating_add(t.saturating_mul(4))
            .max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let target = to_targets(input(inputs, 1)?)?;
        let weight = opt_input(inputs, 2);
        let shape = x.shape();
        if shape.len() < 2 {
            return Err(OpError::shape(format!("input {shape:?} has rank below 2")));
        }
        let (n, c, d) = row_layout(shape, 1, false);
        if target.len() != n * d {
            return Err(OpError::shape(format!(
                "target of {} elements does not fit input {shape:?}",
                target.len()
            )));
        }
        let narrow = x.dtype() == DType::F16;
        let loss_shape: Vec<usize> = match self.reduction {
            Reduction::None => std::iter::once(shape[0])
                .chain(shape[2..].iter().copied())
                .collect(),
            _ => Vec::new(),
        };
        macro_rules! go {
            ($v:expr, $t:ty) => {{
                let v: &[$t] = $v;
                let w: Option<Vec<$t>> = weight.map(|w| param::<$t>(w, 2)).transpose()?;
                if let Some(w) = &w {
                    if w.len() != c {
                        return Err(OpError::shape(format!(
                            "weight of {} elements for {c} classes",
                            w.len()
                        )));
                    }
                }
                let log_prob = if self.softmax {
                    let mut lp =
                        softmax_rows(v, c, d, SoftKind::LogSoftmax, Narrow::of(x.dtype()), ctx);
                    if narrow {
                        lp.iter_mut().for_each(|e| *e = e.round_f16());
                    }
                    Some(lp)
                } else {
                    None
                };
                let scores = log_prob.as_deref().unwrap_or(v);
                let loss = nll(
                    scores,
                    (c, d),
                    &target,
                    w.as_deref(),
                    self.ignore_index,
                    self.reduction,
                    narrow,
                )?;
                (loss, log_prob)
            }};
        }
        let (loss, log_prob) = match x.data() {
            TensorData::F32(v) => {
                let (l, p) = go!(v, f32);
                (TensorData::F32(l), p.map(TensorData::F32))
            }
            TensorData::F64(v) => {
                let (l, p) = go!(v, f64);
                (TensorData::F64(l), p.map(TensorData::F64))
            }
            TensorData::F16(h) => {
                let wide: Vec<f32> = h.iter().map(|e| e.to_f32()).collect();
                let (l, p) = go!(&wide, f32);
                let narrow = |v: Vec<f32>| v.into_iter().map(half::f16::from_f32).collect();
                (
                    TensorData::F16(narrow(l)),
                    p.map(|p| TensorData::F16(narrow(p))),
                )
            }
            _ => {
                return Err(OpError::DType {
                    index: 0,
                    dtype: x.dtype(),
                })
            }
        };
        let mut out = vec![Tensor::new(loss_shape, loss)?];
        if let Some(p) = log_prob {
            out.push(Tensor::new(shape.to_vec(), p)?);
        }
        Ok(out)
    }
}

/// The target's class indices, whichever integer type carries them.
fn to_targets(t: &Tensor) -> Result<Vec<i64>, OpError> {
    match t.data() {
        TensorData::I64(v) => Ok(v.clone()),
        TensorData::I32(v) => Ok(v.iter().map(|&e| i64::from(e)).collect()),
        _ => Err(OpError::DType {
            index: 1,
            dtype: t.dtype(),
        }),
    }
}

/// The negative log-likelihood of `scores` (`[N, C, D]` flattened, `(c, d)` its last
/// two extents) at `target` (`N · D` class indices), reduced as asked, computed as the
/// operator's function body computes it (see the module documentation). `narrow`
/// rounds what the body's f16 operators would round: each weighted loss, each sum and
/// the weighted mean's quotient.
fn nll<T: Float>(
    scores: &[T],
    (c, d): (usize, usize),
    target: &[i64],
    weight: Option<&[T]>,
    ignore: Option<i64>,
    reduction: Reduction,
    narrow: bool,
) -> Result<Vec<T>, OpError> {
    let r = |x: T| if narrow { x.round_f16() } else { x };
    // Without an ignore_index or a weight the body multiplies by nothing.
    let weighted = weight.is_some() || ignore.is_some();
    let mut losses = Vec::with_capacity(target.len());
    let mut weights = Vec::with_capacity(target.len());
    for (pos, &t) in target.iter().enumerate() {
        let (x, w) = if Some(t) == ignore {
            (T::ZERO, T::ZERO)
        } else {
            // Class indices wrap once from the end, as GatherElements' do.
            let k = if t < 0 {
                t.checked_add(c as i64)
            } else {
                Some(t)
            };
            let class = k
                .and_then(|k| usize::try_from(k).ok())
                .filter(|&k| k < c)
                .ok_or_else(|| {
                    OpError::value(format!(
                        "target {t} at flat index {pos} is not a class of {c} nor the ignore_index"
                    ))
                })?;
            let (i, k) = (pos / d, pos % d);
            let w = weight.map_or(T::ONE, |w| w[class]);
            (scores[(i * c + class) * d + k], w)
        };
        losses.push(if weighted { r(x.neg() * w) } else { x.neg() });
        weights.push(w);
    }
    let sum = |v: &[T]| v.iter().fold(T::ZERO, |a, &e| a + e);
    Ok(match reduction {
        Reduction::None => losses,
        Reduction::Sum => vec![sum(&losses)],
        Reduction::Mean if weighted => vec![r(sum(&losses)) / r(sum(&weights))],
        Reduction::Mean => vec![sum(&losses) / T::from_usize(losses.len())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nll32(
        target: &[i64],
        weight: Option<&[f32]>,
        ignore: Option<i64>,
        reduction: Reduction,
    ) -> Result<Vec<f32>, OpError> {
        // N = 2, C = 3, D = 2: scores[n, c, d] = 10n + 3c + d (negated in the loss).
        let scores: Vec<f32> = (0..2)
            .flat_map(|n| {
                (0..3).flat_map(move |c| (0..2).map(move |d| (10 * n + 3 * c + d) as f32))
            })
            .collect();
        nll(&scores, (3, 2), target, weight, ignore, reduction, false)
    }

    #[test]
    fn nll_by_hand() {
        let target = [2, 0, 1, -1];
        let w = [0.5f32, 2.0, 4.0];
        let none = nll32(&target, Some(&w), Some(-1), Reduction::None).unwrap();
        // (n0,d0): class 2 → 6·4; (n0,d1): class 0 → 1·0.5; (n1,d0): class 1 → 13·2;
        // the ignored element is (−0)·0.
        assert_eq!(none, vec![-24.0, -0.5, -26.0, 0.0]);
        assert!(none[3].is_sign_negative());
        let mean = nll32(&target, Some(&w), Some(-1), Reduction::Mean).unwrap();
        assert_eq!(mean, vec![-50.5 / 6.5]);
        let sum = nll32(&target, None, Some(-1), Reduction::Sum).unwrap();
        assert_eq!(sum, vec![-(6.0 + 1.0 + 13.0)]);
        let mean = nll32(&target, None, Some(-1), Reduction::Mean).unwrap();
        assert_eq!(mean, vec![-20.0 / 3.0]);
        // Without an ignore_index, −1 is the last class (as GatherElements takes it).
        let mean = nll32(&target, None, None, Reduction::Mean).unwrap();
        assert_eq!(mean, vec![-(6.0 + 1.0 + 13.0 + 17.0) / 4.0]);
    }

    #[test]
    fn a_target_outside_the_classes_is_an_input_error() {
        for bad in [3, -4, i64::MIN] {
            let e = nll32(&[0, bad, 1, 1], None, Some(-1), Reduction::Sum);
            assert!(matches!(e, Err(OpError::Value { .. })), "{e:?}");
        }
        // Every element ignored: the weighted mean is 0 / 0.
        let all = nll32(&[-1; 4], None, Some(-1), Reduction::Mean).unwrap();
        assert!(all[0].is_nan());
    }

    #[test]
    fn f16_rounds_where_the_body_does() {
        // 1 + 2^-11 is not an f16: each weighted loss rounds to 1 before the sum.
        let scores = [-1.0f32, -1.0];
        let w = [1.0f32 + 1.0 / 2048.0];
        let sum = |narrow| {
            nll(
                &scores,
                (1, 1),
                &[0, 0],
                Some(&w),
                None,
                Reduction::Sum,
                narrow,
            )
        };
        assert_eq!(sum(true).unwrap(), vec![2.0]);
        assert_eq!(sum(false).unwrap(), vec![2.0 + 1.0 / 1024.0]);
    }
}
