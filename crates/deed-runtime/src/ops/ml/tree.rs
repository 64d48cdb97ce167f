//! `TreeEnsembleRegressor` and `TreeEnsembleClassifier`.
//!
//! Trees are evaluated in increasing tree id. A leaf's contributions (the target or
//! class entries naming it) are added in attribute order. The accumulator is f32
//! (f64 when the weights come as a double tensor) and starts from +0.0 for the
//! regressor (base values are added after aggregation, as in the ONNX reference)
//! and from the base value for the classifier.

use std::collections::HashMap;

use deed_types::{DType, Tensor, TensorData};

use super::post::PostTransform;
use super::{features_f64, floats_or_tensor, numeric, req_ints, rows_cols, strings_attr};
use crate::error::OpError;
use crate::ops::util::{check_count, infer_input, input};
use crate::ops::{Ctx, InferInput, NodeInfo, Op, TypeInfo};

/// How a branch node compares a feature with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Leaf,
}

impl Mode {
    fn parse(s: &str) -> Result<Mode, OpError> {
        Ok(match s {
            "BRANCH_LEQ" => Mode::Leq,
            "BRANCH_LT" => Mode::Lt,
            "BRANCH_GTE" => Mode::Gte,
            "BRANCH_GT" => Mode::Gt,
            "BRANCH_EQ" => Mode::Eq,
            "BRANCH_NEQ" => Mode::Neq,
            "LEAF" => Mode::Leaf,
            other => {
                return Err(OpError::bad_attr(
                    "nodes_modes",
                    format!("unknown mode {other}"),
                ))
            }
        })
    }
}

#[derive(Debug, Clone)]
struct Node {
    mode: Mode,
    feature: usize,
    threshold: f64,
    /// Index (into the flat node array) of the next node when the test holds.
    yes: usize,
    no: usize,
    missing_true: bool,
    /// Contributions of a leaf: `(output column, weight)`.
    leaf: Vec<(usize, f64)>,
}

/// The parsed forest shared by both operators.
#[derive(Debug)]
struct Forest {
    nodes: Vec<Node>,
    /// Root node index of each tree, in increasing tree id.
    roots: Vec<usize>,
    /// Largest feature index used, plus one.
    features: usize,
    /// Accumulate in f64 (weights given as a double tensor) rather than f32.
    wide: bool,
}

impl Forest {
    /// Parses the `nodes_*` attributes and attaches the `{prefix}_*` leaf entries.
    fn parse(n: &NodeInfo<'_>, prefix: &str, outputs: usize) -> Result<Forest, OpError> {
        let tree = req_ints(n, "nodes_treeids")?;
        let ids = req_ints(n, "nodes_nodeids")?;
        let feat = req_ints(n, "nodes_featureids")?;
        let modes = strings_attr(n, "nodes_modes")?.ok_or_else(|| OpError::MissingAttribute {
            name: "nodes_modes".into(),
        })?;
        let (vals, _) = floats_or_tensor(n, "nodes_values")?.unwrap_or((vec![], false));
        let yes = req_ints(n, "nodes_truenodeids")?;
        let no = req_ints(n, "nodes_falsenodeids")?;
        let miss = n
            .attrs
            .ints("nodes_missing_value_tracks_true")?
            .unwrap_or_default();
        let len = tree.len();
        same_lengths(
            "nodes_treeids",
            len,
            &[
                ("nodes_nodeids", ids.len()),
                ("nodes_featureids", feat.len()),
                ("nodes_modes", modes.len()),
                ("nodes_truenodeids", yes.len()),
                ("nodes_falsenodeids", no.len()),
            ],
        )?;
        if !vals.is_empty() && vals.len() != len {
            return Err(OpError::bad_attr(
                "nodes_values",
                "length differs from nodes_treeids",
            ));
        }
        if !miss.is_empty() && miss.len() != len {
            return Err(OpError::bad_attr(
                "nodes_missing_value_tracks_true",
                "length differs from nodes_treeids",
            ));
        }
        let mut index: HashMap<(i64, i64), usize> = HashMap::with_capacity(len);
        let mut roots: HashMap<i64, usize> = HashMap::new();
        for i in 0..len {
            if index.insert((tree[i], ids[i]), i).is_some() {
                return Err(OpError::bad_attr(
                    "nodes_nodeids",
                    format!("node ({}, {}) is defined twice", tree[i], ids[i]),
                ));
            }
            roots.entry(tree[i]).or_insert(i);
        }
        let find = |t: i64, id: i64, what: &str| {
            index
                .get(&(t, id))
                .copied()
                .ok_or_else(|| OpError::bad_attr(what, format!("tree {t} has no node {id}")))
        };
        let mut nodes = Vec::with_capacity(len);
        let mut features = 0usize;
        for i in 0..len {
            let mode = Mode::parse(&modes[i])?;
            let (y, f, fi) = if mode == Mode::Leaf {
                (i, i, 0)
            } else {
                if feat[i] < 0 {
                    return Err(OpError::bad_attr(
                        "nodes_featureids",
                        "negative feature index",
                    ));
                }
                let fi = feat[i] as usize;
                features = features.max(fi + 1);
                (
                    find(tree[i], yes[i], "nodes_truenodeids")?,
                    find(tree[i], no[i], "nodes_falsenodeids")?,
                    fi,
                )
            };
            nodes.push(Node {
                mode,
                feature: fi,
                threshold: vals.get(i).copied().unwrap_or(0.0),
                yes: y,
                no: f,
                missing_true: miss.get(i).copied().unwrap_or(0) != 0,
                leaf: Vec::new(),
            });
        }
        let t_tree = req_ints(n, &format!("{prefix}_treeids"))?;
        let t_node = req_ints(n, &format!("{prefix}_nodeids"))?;
        let t_id = req_ints(n, &format!("{prefix}_ids"))?;
        let (w, wide) = floats_or_tensor(n, &format!("{prefix}_weights"))?.ok_or_else(|| {
            OpError::MissingAttribute {
                name: format!("{prefix}_weights"),
            }
        })?;
        if t_node.len() != t_tree.len() || t_id.len() != t_tree.len() || w.len() != t_tree.len() {
            return Err(OpError::bad_attr(
                &format!("{prefix}_ids"),
                "leaf entry attributes have different lengths",
            ));
        }
        for e in 0..t_tree.len() {
            let at = find(t_tree[e], t_node[e], &format!("{prefix}_nodeids"))?;
            if t_id[e] < 0 || t_id[e] as usize >= outputs {
                return Err(OpError::bad_attr(
                    &format!("{prefix}_ids"),
                    format!("output index {} is out of range 0..{outputs}", t_id[e]),
                ));
            }
            nodes[at].leaf.push((t_id[e] as usize, w[e]));
        }
        let mut tids: Vec<(i64, usize)> = roots.into_iter().collect();
        tids.sort_unstable();
        let forest = Forest {
            roots: tids.into_iter().map(|(_, r)| r).collect(),
            nodes,
            features,
            wide,
        };
        forest.check_acyclic()?;
        Ok(forest)
    }

    /// Refuses forests in which a walk could loop: every walk must reach a leaf
    /// within as many steps as there are nodes.
    fn check_acyclic(&self) -> Result<(), OpError> {
        find_cycle(self.nodes.len(), |i| {
            let nd = &self.nodes[i];
            match nd.mode {
                Mode::Leaf => [None, None],
                _ => [Some(nd.yes), Some(nd.no)],
            }
        })
        .map_or(Ok(()), |_| {
            Err(OpError::bad_attr(
                "nodes_truenodeids",
                "the trees contain a cycle",
            ))
        })
    }

    /// The leaf reached by row `x` from `root`.
    fn leaf(&self, root: usize, x: &[f64]) -> &Node {
        let mut i = root;
        loop {
            let nd = &self.nodes[i];
            if nd.mode == Mode::Leaf {
                return nd;
            }
            // `check_features` guarantees that every branch's feature is in the row.
            let v = x[nd.feature];
            let go = match nd.mode {
                Mode::Leaf => return nd,
                _ if v.is_nan() => nd.missing_true,
                Mode::Leq => v <= nd.threshold,
                Mode::Lt => v < nd.threshold,
                Mode::Gte => v >= nd.threshold,
                Mode::Gt => v > nd.threshold,
                Mode::Eq => v == nd.threshold,
                Mode::Neq => v != nd.threshold,
            };
            i = if go { nd.yes } else { nd.no };
        }
    }

    /// Adds in the accumulator precision.
    fn add(&self, a: f64, b: f64) -> f64 {
        if self.wide {
            a + b
        } else {
            f64::from(a as f32 + b as f32)
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
}

/// The aggregation of a regressor's trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

/// `TreeEnsembleRegressor`.
#[derive(Debug)]
pub struct TreeRegressor {
    forest: Forest,
    targets: usize,
    agg: Aggregate,
    base: Vec<f64>,
    post: PostTransform,
}

pub(super) fn build_regressor(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let targets = n.attrs.int("n_targets", 1)?;
    if !(1..=1 << 20).contains(&targets) {
        return Err(OpError::bad_attr("n_targets", "must be between 1 and 2^20"));
    }
    let targets = targets as usize;
    let agg = match n.attrs.string("aggregate_function", "SUM")?.as_str() {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Average,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        other => {
            return Err(OpError::bad_attr(
                "aggregate_function",
                format!("unknown value {other}"),
            ))
        }
    };
    let base = floats_or_tensor(n, "base_values")?
        .map(|b| b.0)
        .unwrap_or_default();
    if !base.is_empty() && base.len() != targets {
        return Err(OpError::bad_attr(
            "base_values",
            "length differs from n_targets",
        ));
    }
    Ok(Box::new(TreeRegressor {
        forest: Forest::parse(n, "target", targets)?,
        targets,
        agg,
        base,
        post: PostTransform::parse(&n.attrs.string("post_transform", "NONE")?)?,
    }))
}

impl Op for TreeRegressor {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 1, 1)?;
        let x = infer_input(inputs, 0)?;
        if !numeric(x.ty.dtype) {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        let (rows, f) = rows_cols(&x.ty.shape)?;
        self.forest.check_features(f)?;
        Ok(vec![TypeInfo::new(DType::F32, vec![rows, self.targets])])
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        forest_cost(&self.forest, inputs, outputs)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (rows, f) = rows_cols(x.shape())?;
        self.forest.check_features(f)?;
        let xs = features_f64(x, 0)?;
        let t = self.targets;
        let fo = &self.forest;
        let per_row = ctx.map_range(rows, |r| {
            let row = &xs[r * f..(r + 1) * f];
            let init = match self.agg {
                Aggregate::Sum | Aggregate::Average => 0.0,
                Aggregate::Min => f64::from(f32::MAX),
                Aggregate::Max => f64::from(f32::MIN),
            };
            let mut acc = vec![init; t];
            for &root in &fo.roots {
                for &(c, w) in &fo.leaf(root, row).leaf {
                    acc[c] = match self.agg {
                        Aggregate::Sum | Aggregate::Average => fo.add(acc[c], w),
                        // NaN weights never replace the running value.
                        Aggregate::Min => {
                            if w < acc[c] {
                                w
                            } else {
                                acc[c]
                            }
                        }
                        Aggregate::Max => {
                            if w > acc[c] {
                                w
                            } else {
                                acc[c]
                            }
                        }
                    };
                }
            }
            let ntrees = fo.roots.len().max(1) as f64;
            let mut out: Vec<f32> = acc
                .iter()
                .enumerate()
                .map(|(c, &a)| {
                    let a = if self.agg == Aggregate::Average {
                        if fo.wide {
                            a / ntrees
                        } else {
                            f64::from(a as f32 / ntrees as f32)
                        }
                    } else {
                        a
                    };
                    let a = match self.base.get(c) {
                        Some(&b) => fo.add(a, b),
                        None => a,
                    };
                    a as f32
                })
                .collect();
            self.post.apply(&mut out);
            out
        });
        let flat: Vec<f32> = per_row.into_iter().flatten().collect();
        Ok(vec![Tensor::from_vec(vec![rows, t], flat)?])
    }
}

fn forest_cost(forest: &Forest, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
    let rows = inputs
        .first()
        .copied()
        .flatten()
        .and_then(|t| rows_cols(&t.shape).ok())
        .map(|(r, _)| r as u64)
        .unwrap_or(1);
    // A walk visits at most every node of a tree; count nodes as the bound.
    let out: u64 = outputs.iter().map(|o| o.numel()).sum();
    rows.saturating_mul(forest.nodes.len() as u64)
        .saturating_add(out)
        .max(1)
}

/// Class labels of a classifier.
#[derive(Debug, Clone)]
pub(crate) enum Labels {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

impl Labels {
    pub(crate) fn from_node(n: &NodeInfo<'_>, ints: &str, strs: &str) -> Result<Labels, OpError> {
        if let Some(v) = n.attrs.ints(ints)? {
            if !v.is_empty() {
                return Ok(Labels::Ints(v));
            }
        }
        match n.attrs.strings(strs)? {
            Some(v) if !v.is_empty() => Ok(Labels::Strings(v)),
            _ => Err(OpError::MissingAttribute { name: ints.into() }),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Labels::Ints(v) => v.len(),
            Labels::Strings(v) => v.len(),
        }
    }

    pub(crate) fn dtype(&self) -> DType {
        match self {
            Labels::Ints(_) => DType::I64,
            Labels::Strings(_) => DType::Str,
        }
    }

    /// Builds the label tensor from chosen class indices (`None` = the dtype's
    /// neutral label: 0 or the empty string).
    pub(crate) fn tensor(&self, picks: &[Option<usize>]) -> Result<Tensor, OpError> {
        let n = picks.len();
        Ok(match self {
            Labels::Ints(v) => Tensor::from_vec(
                vec![n],
                picks
                    .iter()
                    .map(|p| p.and_then(|i| v.get(i).copied()).unwrap_or(0))
                    .collect(),
            )?,
            Labels::Strings(v) => Tensor::new(
                vec![n],
                TensorData::Str(
                    picks
                        .iter()
                        .map(|p| p.and_then(|i| v.get(i).cloned()).unwrap_or_default())
                        .collect(),
                ),
            )?,
        })
    }
}

/// A node from which a walk over `n` tree nodes can come back to itself, when there is
/// one; `children(i)` gives node `i`'s two successors (`None` past a leaf). Iterative,
/// so a deep tree cannot exhaust the stack.
/// Checks that every attribute list in `lists` (name, length) has `len` entries, as
/// the attribute `reference` does.
pub(super) fn same_lengths(
    reference: &str,
    len: usize,
    lists: &[(&str, usize)],
) -> Result<(), OpError> {
    match lists.iter().find(|(_, l)| *l != len) {
        Some((name, l)) => Err(OpError::bad_attr(
            name,
            format!("has {l} entries, {reference} has {len}"),
        )),
        None => Ok(()),
    }
}

pub(super) fn find_cycle(
    n: usize,
    children: impl Fn(usize) -> [Option<usize>; 2],
) -> Option<usize> {
    let mut state = vec![0u8; n]; // 0 new, 1 on the path, 2 done
    for start in 0..n {
        if state[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, false)];
        while let Some((i, expanded)) = stack.pop() {
            if expanded {
                state[i] = 2;
                continue;
            }
            if state[i] == 2 {
                continue;
            }
            state[i] = 1;
            stack.push((i, true));
            for c in children(i).into_iter().flatten() {
                match state.get(c) {
                    Some(1) => return Some(c),
                    Some(0) => stack.push((c, false)),
                    _ => {}
                }
            }
        }
    }
    None
}

/// Index of the first maximal score (`v > best`, so NaN never wins after the first).
pub(crate) fn argmax(row: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        match best {
            None => best = Some((i, v)),
            Some((_, b)) if v > b => best = Some((i, v)),
            _ => {}
        }
    }
    best.map(|(i, _)| i)
}

/// `TreeEnsembleClassifier`.
#[derive(Debug)]
pub struct TreeClassifier {
    forest: Forest,
    labels: Labels,
    base: Vec<f64>,
    post: PostTransform,
    /// Every leaf entry names the same class: the binary form.
    binary: bool,
}

pub(super) fn build_classifier(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let labels = Labels::from_node(n, "classlabels_int64s", "classlabels_strings")?;
    let classes = labels.len();
    let base = floats_or_tensor(n, "base_values")?
        .map(|b| b.0)
        .unwrap_or_default();
    let ids = req_ints(n, "class_ids")?;
    let binary = ids.windows(2).all(|w| w[0] == w[1]);
    // One base value for all classes is broadcast (skl2onnx's binary boosting form).
    let base = if base.len() == 1 && classes > 1 {
        vec![base[0]; classes]
    } else {
        base
    };
    if !base.is_empty() && base.len() != classes {
        return Err(OpError::bad_attr(
            "base_values",
            "length differs from the class count",
        ));
    }
    if binary && classes == 1 {
        match &labels {
            Labels::Ints(v) if v[0] == 1 => {}
            _ => {
                return Err(OpError::unsupported(
                    "a single class label other than the integer 1",
                ))
            }
        }
    }
    Ok(Box::new(TreeClassifier {
        forest: Forest::parse(n, "class", classes.max(1))?,
        labels,
        base,
        post: PostTransform::parse(&n.attrs.string("post_transform", "NONE")?)?,
        binary,
    }))
}

impl TreeClassifier {
    fn score_cols(&self) -> usize {
        if self.binary && self.labels.len() == 1 {
            2
        } else {
            self.labels.len()
        }
    }
}

impl Op for TreeClassifier {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        check_count(inputs.len(), 1, 1)?;
        let x = infer_input(inputs, 0)?;
        if !numeric(x.ty.dtype) {
            return Err(OpError::DType {
                index: 0,
                dtype: x.ty.dtype,
            });
        }
        let (rows, f) = rows_cols(&x.ty.shape)?;
        self.forest.check_features(f)?;
        Ok(vec![
            TypeInfo::new(self.labels.dtype(), vec![rows]),
            TypeInfo::new(DType::F32, vec![rows, self.score_cols()]),
        ])
    }

    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        forest_cost(&self.forest, inputs, outputs)
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (rows, f) = rows_cols(x.shape())?;
        self.forest.check_features(f)?;
        let xs = features_f64(x, 0)?;
        let classes = self.labels.len();
        let cols = self.score_cols();
        let fo = &self.forest;
        let per_row = ctx.map_range(rows, |r| {
            let row = &xs[r * f..(r + 1) * f];
            let mut acc: Vec<f64> = (0..classes)
                .map(|c| self.base.get(c).copied().unwrap_or(0.0))
                .collect();
            if !fo.wide {
                acc.iter_mut().for_each(|a| *a = f64::from(*a as f32));
            }
            for &root in &fo.roots {
                for &(c, w) in &fo.leaf(root, row).leaf {
                    acc[c] = fo.add(acc[c], w);
                }
            }
            let mut s: Vec<f32> = acc.iter().map(|&a| a as f32).collect();
            if self.binary {
                if classes == 1 {
                    s = vec![0.0, s[0]];
                } else if s.len() >= 2 {
                    s[1] = s[0];
                }
                if s.len() >= 2 {
                    s[0] = match self.post {
                        PostTransform::None | PostTransform::Probit => 1.0 - s[1],
                        _ => -s[1],
                    };
                }
            }
            self.post.apply(&mut s);
            let pick = argmax(&s);
            let pick = if classes == 1 {
                // The single label 1: chosen when the positive score wins.
                pick.filter(|&i| i == 1).map(|_| 0)
            } else {
                pick
            };
            (pick, s)
        });
        let mut picks = Vec::with_capacity(rows);
        let mut scores = Vec::with_capacity(rows * cols);
        for (p, s) in per_row {
            picks.push(p);
            scores.extend(s);
        }
        Ok(vec![
            self.labels.tensor(&picks)?,
            Tensor::from_vec(vec![rows, cols], scores)?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::find_cycle;

    #[test]
    fn cycles_are_found_wherever_a_walk_can_come_back() {
        // 0 → (1, 2), 1 → (3, None), 2 and 3 leaves: no cycle.
        let tree = |i: usize| match i {
            0 => [Some(1), Some(2)],
            1 => [Some(3), None],
            _ => [None, None],
        };
        assert_eq!(find_cycle(4, tree), None);
        // A node shared by two branches is no cycle.
        assert_eq!(
            find_cycle(3, |i| if i == 0 {
                [Some(1), Some(2)]
            } else if i == 1 {
                [Some(2), None]
            } else {
                [None, None]
            }),
            None
        );
        // 2 → 0 closes a loop through the false branch; a node may point at itself.
        let looped = |i: usize| match i {
            0 => [Some(1), None],
            1 => [None, Some(2)],
            2 => [Some(0), None],
            _ => [None, None],
        };
        assert_eq!(find_cycle(3, looped), Some(0));
        assert_eq!(find_cycle(2, |i| [Some(i), None]), Some(0));
        // A child past the last node is not followed (the builders check indices).
        assert_eq!(find_cycle(1, |_| [Some(5), None]), None);
    }
}
