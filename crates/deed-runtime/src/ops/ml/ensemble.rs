//! `TreeEnsemble` (ai.onnx.ml opset 5): the one tree operator of the newer ML opset,
//! whose interior nodes and leaves are separate lists, with set-membership branches.
//!
//! Each tree contributes the one leaf its walk reaches; the leaves are aggregated in
//! the order of `tree_roots`, in an accumulator of the input's precision (f32 for
//! float and float16, f64 for double), as `TreeEnsembleRegressor` aggregates (see
//! `tree.rs` and `docs/canonical-semantics.md`).

use deed_types::{DType, Tensor, TensorData};

use super::post::PostTransform;
use super::tree::{find_cycle, same_lengths};
use super::{req_ints, rows_cols};
use crate::error::OpError;
use crate::ops::util::{check_count, infer_input, input};
use crate::ops::{Ctx, InferInput, NodeInfo, Op, TypeInfo};

/// How an interior node compares its feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Member,
}

/// Where a branch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Node(usize),
    Leaf(usize),
}

#[derive(Debug, Clone)]
struct Node {
    mode: Mode,
    feature: usize,
    split: f64,
    /// The members of a `BRANCH_MEMBER` node, `−0` read as `+0`, sorted.
    set: Vec<f64>,
    yes: Next,
    no: Next,
    missing_true: bool,
}

/// The aggregation of the trees' leaves (`aggregate_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    Average,
    Sum,
    Min,
    Max,
}

/// `TreeEnsemble`.
#[derive(Debug)]
pub struct TreeEnsemble {
    nodes: Vec<Node>,
    /// `(target, weight)` of each leaf.
    leaves: Vec<(usize, f64)>,
    roots: Vec<usize>,
    /// Largest feature index read, plus one.
    features: usize,
    targets: usize,
    agg: Aggregate,
    post: PostTransform,
    /// The dtype of the thresholds and weights, which the input and output share.
    dtype: DType,
}

/// `+0` for `−0`, so that both are one member.
fn unsigned_zero(v: f64) -> f64 {
    if v == 0.0 {
        0.0
    } else {
        v
    }
}

/// A float tensor attribute's values as f64 (exact) and its dtype.
fn float_tensor(n: &NodeInfo<'_>, name: &str) -> Result<Option<(Vec<f64>, DType)>, OpError> {
    let Some(t) = n.attrs.tensor(name)? else {
        return Ok(None);
    };
    let v = match t.data() {
        TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::F64(v) => v.clone(),
        TensorData::F16(v) => v.iter().map(|&x| f64::from(x)).collect(),
        _ => {
            return Err(OpError::bad_attr(
                name,
                format!(
                    "expected a float, double or float16 tensor, got {}",
                    t.dtype()
                ),
            ))
        }
    };
    Ok(Some((v, t.dtype())))
}

fn required<T>(v: Option<T>, name: &str) -> Result<T, OpError> {
    v.ok_or_else(|| OpError::MissingAttribute { name: name.into() })
}

/// Builds `TreeEnsemble`, checking every index and refusing walks that could loop.
pub(super) fn build(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 1, 1)?;
    let targets = n.attrs.req_int("n_targets")?;
    if !(1..=1 << 20).contains(&targets) {
        return Err(OpError::bad_attr("n_targets", "must be between 1 and 2^20"));
    }
    let targets = targets as usize;
    let agg = match n.attrs.int("aggregate_function", 1)? {
        0 => Aggregate::Average,
        1 => Aggregate::Sum,
        2 => Aggregate::Min,
        3 => Aggregate::Max,
        v => {
            return Err(OpError::bad_attr(
                "aggregate_function",
                format!("unknown value {v} (0 AVERAGE, 1 SUM, 2 MIN, 3 MAX)"),
            ))
        }
    };
    let post = match n.attrs.int("post_transform", 0)? {
        0 => PostTransform::None,
        1 => PostTransform::Softmax,
        2 => PostTransform::Logistic,
        3 => PostTransform::SoftmaxZero,
        4 => PostTransform::Probit,
        v => {
            return Err(OpError::bad_attr(
                "post_transform",
                format!("unknown value {v} (0 NONE … 4 PROBIT)"),
            ))
        }
    };
    let (weights, dtype) = required(float_tensor(n, "leaf_weights")?, "leaf_weights")?;
    let (splits, split_dtype) = required(float_tensor(n, "nodes_splits")?, "nodes_splits")?;
    if split_dtype != dtype {
        return Err(OpError::bad_attr(
            "nodes_splits",
            format!("is {split_dtype}, leaf_weights is {dtype}: both must be the input's type"),
        ));
    }
    if dtype == DType::F64 && post != PostTransform::None {
        return Err(OpError::unsupported(
            "TreeEnsemble post_transform other than NONE (0) on double weights: the post \
             transforms are defined in f32",
        ));
    }
    let target_ids = req_ints(n, "leaf_targetids")?;
    same_lengths(
        "leaf_weights",
        weights.len(),
        &[("leaf_targetids", target_ids.len())],
    )?;
    let mut leaves = Vec::with_capacity(weights.len());
    for (&t, &w) in target_ids.iter().zip(&weights) {
        if t < 0 || t as usize >= targets {
            return Err(OpError::bad_attr(
                "leaf_targetids",
                format!("target {t} is out of range 0..{targets}"),
            ));
        }
        leaves.push((t as usize, w));
    }
    let modes = match n.attrs.tensor("nodes_modes")? {
        Some(t) => match t.data() {
            TensorData::U8(v) => v.clone(),
            _ => {
                return Err(OpError::bad_attr(
                    "nodes_modes",
                    format!("expected a uint8 tensor, got {}", t.dtype()),
                ))
            }
        },
        None => {
            return Err(OpError::MissingAttribute {
                name: "nodes_modes".into(),
            })
        }
    };
    let len = modes.len();
    let feat = req_ints(n, "nodes_featureids")?;
    let yes = req_ints(n, "nodes_truenodeids")?;
    let no = req_ints(n, "nodes_falsenodeids")?;
    let yes_leaf = req_ints(n, "nodes_trueleafs")?;
    let no_leaf = req_ints(n, "nodes_falseleafs")?;
    let miss = n
        .attrs
        .ints("nodes_missing_value_tracks_true")?
        .unwrap_or_else(|| vec![0; len]);
    same_lengths(
        "nodes_modes",
        len,
        &[
            ("nodes_featureids", feat.len()),
            ("nodes_splits", splits.len()),
            ("nodes_truenodeids", yes.len()),
            ("nodes_falsenodeids", no.len()),
            ("nodes_trueleafs", yes_leaf.len()),
            ("nodes_falseleafs", no_leaf.len()),
            ("nodes_missing_value_tracks_true", miss.len()),
        ],
    )?;
    // The sets of the membership nodes, in the order of the nodes, each ended by NaN.
    let members = float_tensor(n, "membership_values")?.map(|m| m.0);
    let mut sets = members
        .as_deref()
        .unwrap_or_default()
        .split(|v| v.is_nan())
        .map(|s| {
            let mut s: Vec<f64> = s.iter().copied().map(unsigned_zero).collect();
            s.sort_by(f64::total_cmp);
            s
        });
    let next = |i: usize, leaf: i64, id: i64, true_side: bool| -> Result<Next, OpError> {
        let (ids, flags) = if true_side {
            ("nodes_truenodeids", "nodes_trueleafs")
        } else {
            ("nodes_falsenodeids", "nodes_falseleafs")
        };
        let (what, count) = match leaf {
            0 => ("node", len),
            1 => ("leaf", leaves.len()),
            v => {
                return Err(OpError::bad_attr(
                    flags,
                    format!("entry {i} is {v}, not 0 or 1"),
                ))
            }
        };
        if id < 0 || id as usize >= count {
            return Err(OpError::bad_attr(
                ids,
                format!("node {i} branches to {what} {id}, out of range 0..{count}"),
            ));
        }
        Ok(if leaf == 1 {
            Next::Leaf(id as usize)
        } else {
            Next::Node(id as usize)
        })
    };
    let mut nodes = Vec::with_capacity(len);
    let mut features = 0usize;
    let mut member_nodes = 0usize;
    for i in 0..len {
        let mode = match modes[i] {
            0 => Mode::Leq,
            1 => Mode::Lt,
            2 => Mode::Gte,
            3 => Mode::Gt,
            4 => Mode::Eq,
            5 => Mode::Neq,
            6 => Mode::Member,
            v => {
                return Err(OpError::bad_attr(
                    "nodes_modes",
                    format!("node {i} has mode {v}, not 0 (BRANCH_LEQ) … 6 (BRANCH_MEMBER)"),
                ))
            }
        };
        let set = if mode == Mode::Member {
            member_nodes += 1;
            sets.next().filter(|_| members.is_some()).ok_or_else(|| {
                OpError::bad_attr(
                    "membership_values",
                    format!("has no NaN-ended set for BRANCH_MEMBER node {i}"),
                )
            })?
        } else {
            Vec::new()
        };
        if feat[i] < 0 || feat[i] >= 1 << 32 {
            return Err(OpError::bad_attr(
                "nodes_featureids",
                format!("node {i} reads feature {}", feat[i]),
            ));
        }
        let feature = feat[i] as usize;
        features = features.max(feature + 1);
        nodes.push(Node {
            mode,
            feature,
            split: splits[i],
            set,
            yes: next(i, yes_leaf[i], yes[i], true)?,
            no: next(i, no_leaf[i], no[i], false)?,
            missing_true: match miss[i] {
                0 => false,
                1 => true,
                v => {
                    return Err(OpError::bad_attr(
                        "nodes_missing_value_tracks_true",
                        format!("entry {i} is {v}, not 0 or 1"),
                    ))
                }
            },
        });
    }
    // What follows the last membership set must be nothing: every set ends in NaN.
    let rest: Vec<Vec<f64>> = sets.collect();
    if members.is_some() && (rest.len() != 1 || !rest[0].is_empty()) {
        return Err(OpError::bad_attr(
            "membership_values",
            format!(
                "holds more NaN-ended sets than the {member_nodes} BRANCH_MEMBER nodes, or \
                 values after the last NaN"
            ),
        ));
    }
    let roots = req_ints(n, "tree_roots")?
        .into_iter()
        .map(|r| {
            if r < 0 || r as usize >= len {
                Err(OpError::bad_attr(
                    "tree_roots",
                    format!("root {r} is out of range 0..{len}"),
                ))
            } else {
                Ok(r as usize)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let op = TreeEnsemble {
        nodes,
        leaves,
        roots,
        features,
        targets,
        agg,
        post,
        dtype,
    };
    op.check_acyclic()?;
    Ok(Box::new(op))
}

impl TreeEnsemble {
    /// Refuses nodes from which a walk could come back to itself.
    fn check_acyclic(&self) -> Result<(), OpError> {
        let node = |next: Next| match next {
            Next::Node(c) => Some(c),
            _ => None,
        };
        find_cycle(self.nodes.len(), |i| {
            [node(self.nodes[i].yes), node(self.nodes[i].no)]
        })
        .map_or(Ok(()), |c| {
            Err(OpError::bad_attr(
                "nodes_truenodeids",
                format!("the walk from node {c} can come back to it"),
            ))
        })
    }

    /// The leaf the walk from `root` reaches for row `x`.
    fn leaf(&self, root: usize, x: &[f64]) -> (usize, f64) {
        let mut i = root;
        loop {
            let nd = &self.nodes[i];
            // `check_features` guarantees that every node's feature is in the row.
            let v = x[nd.feature];
            let t = nd.split;
            let go = (nd.missing_true && v.is_nan())
                || match nd.mode {
                    Mode::Leq => v <= t,
                    Mode::Lt => v < t,
                    Mode::Gte => v >= t,
                    Mode::Gt => v > t,
                    Mode::Eq => v == t,
                    Mode::Neq => v != t,
                    Mode::Member => {
                        !v.is_nan()
                            && nd
                                .set
                                .binary_search_by(|m| m.total_cmp(&unsigned_zero(v)))
                                .is_ok()
                    }
                };
            match if go { nd.yes } else { nd.no } {
                Next::Node(c) => i = c,
                Next::Leaf(l) => return self.leaves[l],
            }
        }
    }

    fn check_features(&self, f: usize) -> Result<(), OpError> {
        if self.features > f {
            return Err(OpError::shape(format!(
                "the trees read feature {} but the input has {f} features",
                self.features - 1
            )));
        }
        Ok(())
    }

    fn wide(&self) -> bool {
        self.dtype == DType::F64
    }

    /// Adds in the accumulator's precision.
    fn add(&self, a: f64, b: f64) -> f64 {
        if self.wide() {
            a + b
        } else {
            f64::from(a as f32 + b as f32)
        }
    }

    /// One row of outputs, before the rounding to the output dtype.
    fn row(&self, x: &[f64]) -> Vec<f64> {
        let (lo, hi) = match self.dtype {
            DType::F64 => (f64::MIN, f64::MAX),
            DType::F16 => (-65504.0, 65504.0),
            _ => (f64::from(f32::MIN), f64::from(f32::MAX)),
        };
        let init = match self.agg {
            Aggregate::Sum | Aggregate::Average => 0.0,
            Aggregate::Min => hi,
            Aggregate::Max => lo,
        };
        let mut acc = vec![init; self.targets];
        for &root in &self.roots {
            let (c, w) = self.leaf(root, x);
            acc[c] = match self.agg {
                Aggregate::Sum | Aggregate::Average => self.add(acc[c], w),
                // NaN weights never replace the running value.
                Aggregate::Min if w < acc[c] => w,
                Aggregate::Max if w > acc[c] => w,
                _ => acc[c],
            };
        }
        if self.agg == Aggregate::Average {
            let trees = self.roots.len().max(1) as f64;
            for a in &mut acc {
                *a = if self.wide() {
                    *a / trees
                } else {
                    f64::from(*a as f32 / trees as f32)
                };
            }
        }
        if self.post != PostTransform::None {
            let mut s: Vec<f32> = acc.iter().map(|&a| a as f32).collect();
            self.post.apply(&mut s);
            return s.into_iter().map(f64::from).collect();
        }
        acc
    }
}

impl Op for TreeEnsemble {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 1, 1)?;
        let x = infer_input(inputs, 0)?;
        if x.ty.dtype != self.dtype {
            return Err(OpError::DTypeMismatch {
                expected: self.dtype,
                actual: x.ty.dtype,
            });
        }
        let (rows, f) = rows_cols(&x.ty.shape)?;
        self.check_features(f)?;
        Ok(vec![TypeInfo::new(self.dtype, vec![rows, self.targets])])
    }

    /// One unit per node of the ensemble for each row (a bound on the walks), and
    /// one per output element.
    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let rows = inputs
            .first()
            .copied()
            .flatten()
            .and_then(|t| rows_cols(&t.shape).ok())
            .map_or(1, |(r, _)| r as u64);
        let out: u64 = outputs.iter().map(|o| o.numel()).sum();
        rows.saturating_mul(self.nodes.len() as u64)
            .saturating_add(out)
            .max(1)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (rows, f) = rows_cols(x.shape())?;
        self.check_features(f)?;
        let xs: Vec<f64> = match x.data() {
            TensorData::F32(v) if self.dtype == DType::F32 => {
                v.iter().map(|&a| f64::from(a)).collect()
            }
            TensorData::F64(v) if self.dtype == DType::F64 => v.clone(),
            TensorData::F16(v) if self.dtype == DType::F16 => {
                v.iter().map(|&a| f64::from(a)).collect()
            }
            _ => {
                return Err(OpError::DTypeMismatch {
                    expected: self.dtype,
                    actual: x.dtype(),
                })
            }
        };
        let per_row = ctx.map_range(rows, |r| self.row(&xs[r * f..(r + 1) * f]));
        let flat = per_row.into_iter().flatten();
        let shape = vec![rows, self.targets];
        Ok(vec![match self.dtype {
            DType::F64 => Tensor::from_vec(shape, flat.collect::<Vec<f64>>())?,
            DType::F16 => Tensor::from_vec(
                shape,
                flat.map(|a| half::f16::from_f32(a as f32))
                    .collect::<Vec<_>>(),
            )?,
            _ => Tensor::from_vec(shape, flat.map(|a| a as f32).collect::<Vec<f32>>())?,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::Attr;
    use crate::ops::testing::{attrs, run_one};

    /// Attributes by name, in the order given.
    type AttrList = Vec<(&'static str, Attr)>;

    fn f32s(v: &[f32]) -> Attr {
        Attr::Tensor(Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap())
    }

    fn modes(v: &[u8]) -> Attr {
        Attr::Tensor(Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap())
    }

    /// The official set-membership test's ensemble: node 0 `x ≤ 11`, node 1 `x ∈
    /// {1.2, 3.7, 8, 9}`, node 2 `x ∈ {12, 7}`; leaves 1 → t0, 10 → t1, 1000 → t2,
    /// 100 → t3.
    fn membership() -> AttrList {
        vec![
            ("n_targets", Attr::Int(4)),
            ("aggregate_function", Attr::Int(1)),
            ("leaf_targetids", Attr::Ints(vec![0, 1, 2, 3])),
            ("leaf_weights", f32s(&[1.0, 10.0, 1000.0, 100.0])),
            (
                "membership_values",
                f32s(&[1.2, 3.7, 8.0, 9.0, f32::NAN, 12.0, 7.0, f32::NAN]),
            ),
            ("nodes_modes", modes(&[0, 6, 6])),
            ("nodes_splits", f32s(&[11.0, 232344.0, f32::NAN])),
            ("nodes_featureids", Attr::Ints(vec![0, 0, 0])),
            ("nodes_truenodeids", Attr::Ints(vec![1, 0, 1])),
            ("nodes_trueleafs", Attr::Ints(vec![0, 1, 1])),
            ("nodes_falsenodeids", Attr::Ints(vec![2, 2, 3])),
            ("nodes_falseleafs", Attr::Ints(vec![1, 0, 1])),
            ("tree_roots", Attr::Ints(vec![0])),
        ]
    }

    fn op(list: &[(&str, Attr)]) -> Result<Box<dyn Op>, OpError> {
        let a = attrs(list);
        build(&NodeInfo {
            name: "t",
            op_type: "TreeEnsemble",
            domain: "ai.onnx.ml",
            opset: 5,
            attrs: &a,
            num_inputs: 1,
            num_outputs: 1,
        })
    }

    fn run(op: &dyn Op, x: &Tensor) -> Result<Tensor, OpError> {
        Ok(run_one(op, x, false)?.remove(0))
    }

    /// Sets an attribute, adding it when absent.
    fn set(list: &mut AttrList, name: &'static str, v: Attr) {
        match list.iter_mut().find(|(k, _)| *k == name) {
            Some((_, a)) => *a = v,
            None => list.push((name, v)),
        }
    }

    #[test]
    fn walks_membership_sets() {
        let op = op(&membership()).unwrap();
        let x = Tensor::from_vec(
            vec![7, 1],
            vec![1.2f32, 3.4, -0.12, f32::NAN, 12.0, 7.0, -0.0],
        )
        .unwrap();
        let out = run(op.as_ref(), &x).unwrap();
        #[rustfmt::skip]
        let want = [
            1.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 100.0,
            0.0, 0.0, 0.0, 100.0,
            0.0, 0.0, 1000.0, 0.0,
            0.0, 0.0, 1000.0, 0.0,
            0.0, 10.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 100.0,
        ];
        assert_eq!(out.as_slice::<f32>().unwrap(), &want);
    }

    #[test]
    fn zero_is_one_member_and_nan_follows_missing_tracks() {
        let mut a = membership();
        set(
            &mut a,
            "membership_values",
            f32s(&[-0.0, f32::NAN, 12.0, f32::NAN]),
        );
        set(
            &mut a,
            "nodes_missing_value_tracks_true",
            Attr::Ints(vec![0, 0, 0]),
        );
        let op0 = op(&a).unwrap();
        let x = Tensor::from_vec(vec![2, 1], vec![0.0f32, f32::NAN]).unwrap();
        let out = run(op0.as_ref(), &x).unwrap();
        // 0 ≤ 11 then 0 ∈ {−0}: leaf 0. NaN ≤ 11 is false: leaf 2.
        assert_eq!(
            out.as_slice::<f32>().unwrap(),
            &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1000.0, 0.0]
        );
        set(
            &mut a,
            "nodes_missing_value_tracks_true",
            Attr::Ints(vec![1, 1, 0]),
        );
        let op1 = op(&a).unwrap();
        let out = run(op1.as_ref(), &x).unwrap();
        // NaN now takes the true branch at nodes 0 and 1: leaf 0.
        assert_eq!(&out.as_slice::<f32>().unwrap()[4..], &[1.0, 0.0, 0.0, 0.0]);
    }

    /// Two one-node trees over two features, on doubles.
    fn pair(agg: i64) -> AttrList {
        let f64s = |v: &[f64]| Attr::Tensor(Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap());
        vec![
            ("n_targets", Attr::Int(2)),
            ("aggregate_function", Attr::Int(agg)),
            ("leaf_targetids", Attr::Ints(vec![0, 1, 0, 0])),
            ("leaf_weights", f64s(&[0.1, 0.2, 0.7, -3.0])),
            ("nodes_modes", modes(&[5, 2])),
            ("nodes_splits", f64s(&[1.0, 0.5])),
            ("nodes_featureids", Attr::Ints(vec![0, 1])),
            ("nodes_truenodeids", Attr::Ints(vec![0, 2])),
            ("nodes_trueleafs", Attr::Ints(vec![1, 1])),
            ("nodes_falsenodeids", Attr::Ints(vec![1, 3])),
            ("nodes_falseleafs", Attr::Ints(vec![1, 1])),
            ("tree_roots", Attr::Ints(vec![0, 1])),
        ]
    }

    #[test]
    fn aggregates_in_root_order() {
        let x = Tensor::from_vec(vec![2, 2], vec![2.0f64, 0.5, 1.0, f64::NAN]).unwrap();
        let get = |agg| {
            let op = op(&pair(agg)).unwrap();
            run(op.as_ref(), &x)
                .unwrap()
                .as_slice::<f64>()
                .unwrap()
                .to_vec()
        };
        // Row 0: tree 0 (2 ≠ 1) → 0.1 on t0, tree 1 (0.5 ≥ 0.5) → 0.7 on t0.
        // Row 1: tree 0 (1 ≠ 1 false) → 0.2 on t1, tree 1 (NaN) → −3 on t0.
        assert_eq!(get(1), [0.1 + 0.7, 0.0, -3.0, 0.2]);
        assert_eq!(get(0), [(0.1 + 0.7) / 2.0, 0.0, -1.5, 0.1]);
        assert_eq!(get(2), [0.1, f64::MAX, -3.0, 0.2]);
        assert_eq!(get(3), [0.7, f64::MIN, -3.0, 0.2]);
        // NaN ≠ 1 is true: a NaN feature follows the comparison when it does not
        // track missing values.
        let nan = Tensor::from_vec(vec![1, 2], vec![f64::NAN, 0.0]).unwrap();
        let op = op(&pair(1)).unwrap();
        let out = run(op.as_ref(), &nan).unwrap();
        assert_eq!(out.as_slice::<f64>().unwrap(), &[0.1 - 3.0, 0.0]);
    }

    #[test]
    fn float_sums_round_in_f32_and_post_transforms_apply() {
        // Every leaf on target 0, three trees: 0.7 + 0.1 + 0.1 rounded in f32 at
        // each addition (an f64 sum would round to another f32).
        let mut a = pair(1);
        set(&mut a, "leaf_targetids", Attr::Ints(vec![0, 0, 0, 0]));
        set(&mut a, "leaf_weights", f32s(&[0.1, 0.2, 0.7, 0.4]));
        set(&mut a, "nodes_splits", f32s(&[1.0, 0.5]));
        set(&mut a, "tree_roots", Attr::Ints(vec![1, 0, 0]));
        let x = Tensor::from_vec(vec![1, 2], vec![2.0f32, 1.0]).unwrap();
        let op1 = op(&a).unwrap();
        let out = run(op1.as_ref(), &x).unwrap();
        let want = 0.7f32 + 0.1 + 0.1;
        assert_ne!(want, (0.7f32 as f64 + 0.1f32 as f64 + 0.1f32 as f64) as f32);
        assert_eq!(out.as_slice::<f32>().unwrap(), &[want, 0.0]);
        a.push(("post_transform", Attr::Int(2)));
        let op2 = op(&a).unwrap();
        let out = run(op2.as_ref(), &x).unwrap();
        let want = [want, 0.0].map(super::super::post::logistic);
        assert_eq!(out.as_slice::<f32>().unwrap(), &want);
        // float16: the same sums, rounded once to f16 at the end.
        let h = |v: &[f32]| {
            Attr::Tensor(
                Tensor::from_vec(
                    vec![v.len()],
                    v.iter()
                        .map(|&x| half::f16::from_f32(x))
                        .collect::<Vec<_>>(),
                )
                .unwrap(),
            )
        };
        set(&mut a, "leaf_weights", h(&[0.1, 0.2, 0.7, 0.4]));
        set(&mut a, "nodes_splits", h(&[1.0, 0.5]));
        a.pop();
        let op3 = op(&a).unwrap();
        let hx = Tensor::from_vec(
            vec![1, 2],
            vec![half::f16::from_f32(2.0), half::f16::from_f32(1.0)],
        )
        .unwrap();
        let out = run(op3.as_ref(), &hx).unwrap();
        let w = |x: f32| f32::from(half::f16::from_f32(x));
        let want = half::f16::from_f32(w(0.7) + w(0.1) + w(0.1));
        assert_eq!(
            out.as_slice::<half::f16>().unwrap(),
            &[want, half::f16::from_f32(0.0)]
        );
    }

    #[test]
    fn refusals() {
        let refused = |edit: &dyn Fn(&mut AttrList), name: &str| {
            let mut a = membership();
            edit(&mut a);
            match op(&a) {
                Err(OpError::BadAttribute { name: n, .. })
                | Err(OpError::MissingAttribute { name: n }) => assert_eq!(n, name),
                other => panic!("{name}: {other:?}"),
            }
        };
        refused(&|a| set(a, "n_targets", Attr::Int(0)), "n_targets");
        refused(
            &|a| set(a, "aggregate_function", Attr::Int(4)),
            "aggregate_function",
        );
        refused(
            &|a| a.push(("post_transform", Attr::Int(5))),
            "post_transform",
        );
        refused(
            &|a| set(a, "leaf_targetids", Attr::Ints(vec![0, 1, 2, 4])),
            "leaf_targetids",
        );
        refused(
            &|a| set(a, "leaf_targetids", Attr::Ints(vec![0, 1])),
            "leaf_targetids",
        );
        refused(&|a| a.retain(|(k, _)| *k != "leaf_weights"), "leaf_weights");
        refused(
            &|a| {
                set(
                    a,
                    "nodes_splits",
                    Attr::Tensor(Tensor::from_vec(vec![3], vec![0.0f64; 3]).unwrap()),
                )
            },
            "nodes_splits",
        );
        refused(&|a| set(a, "nodes_modes", modes(&[0, 6, 7])), "nodes_modes");
        refused(
            &|a| {
                set(
                    a,
                    "nodes_modes",
                    Attr::Tensor(Tensor::from_vec(vec![3], vec![0i64; 3]).unwrap()),
                )
            },
            "nodes_modes",
        );
        refused(
            &|a| set(a, "nodes_featureids", Attr::Ints(vec![0, 0])),
            "nodes_featureids",
        );
        refused(
            &|a| set(a, "nodes_featureids", Attr::Ints(vec![0, -1, 0])),
            "nodes_featureids",
        );
        refused(
            &|a| set(a, "nodes_truenodeids", Attr::Ints(vec![3, 0, 1])),
            "nodes_truenodeids",
        );
        refused(
            &|a| set(a, "nodes_falsenodeids", Attr::Ints(vec![2, 2, 4])),
            "nodes_falsenodeids",
        );
        refused(
            &|a| set(a, "nodes_trueleafs", Attr::Ints(vec![2, 1, 1])),
            "nodes_trueleafs",
        );
        // Node 1 → node 2 → node 1.
        refused(
            &|a| {
                set(a, "nodes_trueleafs", Attr::Ints(vec![0, 0, 0]));
                set(a, "nodes_truenodeids", Attr::Ints(vec![1, 2, 1]));
            },
            "nodes_truenodeids",
        );
        refused(&|a| set(a, "tree_roots", Attr::Ints(vec![3])), "tree_roots");
        refused(
            &|a| set(a, "membership_values", f32s(&[1.0, f32::NAN])),
            "membership_values",
        );
        refused(
            &|a| {
                set(
                    a,
                    "membership_values",
                    f32s(&[1.0, f32::NAN, 2.0, f32::NAN, 3.0]),
                )
            },
            "membership_values",
        );
        refused(
            &|a| a.retain(|(k, _)| *k != "membership_values"),
            "membership_values",
        );
        refused(
            &|a| a.push(("nodes_missing_value_tracks_true", Attr::Ints(vec![0, 2, 0]))),
            "nodes_missing_value_tracks_true",
        );
        // Post transforms are f32: refused on doubles.
        let mut p = pair(1);
        p.push(("post_transform", Attr::Int(1)));
        assert!(matches!(op(&p), Err(OpError::Unsupported { .. })));
        // The input must be of the weights' type and hold every feature read.
        let op = op(&membership()).unwrap();
        let d = Tensor::from_vec(vec![1, 1], vec![1.0f64]).unwrap();
        assert!(matches!(
            run(op.as_ref(), &d),
            Err(OpError::DTypeMismatch { .. })
        ));
        let none = Tensor::from_vec(vec![1, 0], Vec::<f32>::new()).unwrap();
        assert!(matches!(
            run(op.as_ref(), &none),
            Err(OpError::Shape { .. })
        ));
    }

    #[test]
    fn no_rows() {
        let op = op(&membership()).unwrap();
        let x = Tensor::from_vec(vec![0, 1], Vec::<f32>::new()).unwrap();
        assert_eq!(run(op.as_ref(), &x).unwrap().shape(), &[0, 4]);
    }
}
