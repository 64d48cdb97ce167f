//! Control flow: `If`, `Loop` and `Scan`, the operators that run subgraphs.
//!
//! A subgraph (`crate::model::Graph`) is planned and run as a model of its own, with
//! the canonical semantics of each of its operators, on the kernels and threads of
//! the run around it. A node that runs one is **one step** of the trace: its step hash
//! covers its outputs, and the referee re-runs the whole node (a branch, every
//! iteration of a loop) from its inputs. Its inputs are its own, then the outer values
//! its subgraphs read (`Graph::captures`, sorted by name), which the loader appends
//! to the node's inputs so that the order, liveness and the referee see them.
//!
//! Every output shape is fixed while planning, as for any operator:
//! - `If`: the branch `cond` chooses when its value is known then; otherwise both
//!   branches must give the same dtypes and shapes (or `cond` is made known, when it
//!   is a small graph input or computed from some).
//! - `Scan`: the body is planned for one slice; the number of iterations is the
//!   length of the scanned axis.
//! - `Loop`: the trip count `M` must be known while planning. The body is planned for
//!   its inputs' types; when the loop-carried values keep their types and the number
//!   of iterations is fixed (no condition input, or a condition the body keeps true
//!   whatever it computes), that plan gives the output types. Otherwise the loop
//!   must be computable while planning: every input known, and it is run then.
//!
//! Metering counts each iteration as one run of the body's plan (`Loop`: `M`
//! iterations, an upper bound when a condition may end it earlier), plus the bytes
//! the node copies; while it runs, the node holds its subgraph's activation memory on
//! top of the outer plan's (`Op::needs`). A subgraph is planned within the
//! [`Limits`] of the plan that runs the node (`Ctx::limits` when it runs).

use std::collections::BTreeSet;
use std::sync::Arc;

use deed_types::tensor::Element;
use deed_types::{DType, Tensor, TensorData};

use super::util::{check_count, numel};
use super::{InferInput, Needs, NodeInfo, Op, Registry, TypeInfo};
use crate::ctx::Ctx;
use crate::error::OpError;
use crate::limits::Limits;
use crate::model::Graph;
use crate::plan::{Plan, PlanInput, RunOptions, KNOWN_INPUT_MAX};

/// Registers `If`, `Loop` and `Scan`.
pub fn register(r: &mut Registry) {
    r.add("If", build_if);
    r.add("Loop", build_loop);
    r.add("Scan", build_scan);
}

/// Most iterations a `Loop` without a trip count may run while planning.
const MAX_PLANNED_ITERATIONS: usize = 1 << 16;

/// A subgraph as a node runs it.
#[derive(Debug)]
pub(super) struct Body {
    /// The attribute that holds it, for messages.
    pub(super) attr: &'static str,
    pub(super) graph: Arc<Graph>,
    /// For each of the graph's captures, its position among the node's implicit
    /// inputs (those after its own).
    capture_pos: Vec<usize>,
}

/// The subgraphs a node holds and the outer values they read: the node's implicit
/// inputs, the sorted union of every subgraph's captures (as the loader lists them).
pub(super) fn bodies(n: &NodeInfo<'_>, attrs: &[&'static str]) -> Result<Vec<Body>, OpError> {
    let graphs: Vec<Arc<Graph>> = attrs
        .iter()
        .map(|a| n.attrs.graph(a))
        .collect::<Result<_, _>>()?;
    let implicit: Vec<String> = graphs
        .iter()
        .flat_map(|g| g.captures.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(attrs
        .iter()
        .zip(graphs)
        .map(|(&attr, graph)| {
            let capture_pos = graph
                .captures
                .iter()
                .map(|c| implicit.iter().position(|i| i == c).unwrap_or(0))
                .collect();
            Body {
                attr,
                graph,
                capture_pos,
            }
        })
        .collect())
}

/// A subgraph's error as the node's.
pub(super) fn sub_err(attr: &str, e: impl std::fmt::Display) -> OpError {
    OpError::Subgraph {
        graph: attr.to_owned(),
        detail: e.to_string(),
    }
}

impl Body {
    fn formal(&self) -> &[String] {
        &self.graph.formal
    }

    /// Plans the body for its formal inputs' types (with values where known) and the
    /// node's implicit inputs `implicit` (the node's inputs from `first_implicit`).
    /// When the plan needs the value of a capture, or of a formal input that `outer`
    /// maps to one of the node's inputs, asks for that input's value.
    pub(super) fn plan_types<'g>(
        &'g self,
        formal: &[(TypeInfo, Option<&'g Tensor>)],
        inputs: &[Option<InferInput<'g>>],
        first_implicit: usize,
        outer: &dyn Fn(usize) -> Option<usize>,
        limits: &Limits,
    ) -> Result<Plan<'g>, OpError> {
        let names = self.formal();
        if names.len() != formal.len() {
            return Err(sub_err(
                self.attr,
                format!(
                    "the subgraph declares {} inputs, the operator gives it {}",
                    names.len(),
                    formal.len()
                ),
            ));
        }
        let mut specs: Vec<PlanInput<'g>> = names
            .iter()
            .zip(formal)
            .map(|(name, (ty, value))| PlanInput {
                name,
                ty: ty.clone(),
                value: *value,
            })
            .collect();
        for (name, &pos) in self.graph.captures.iter().zip(&self.capture_pos) {
            let x = inputs.get(first_implicit + pos).copied().flatten().ok_or(
                OpError::MissingInput {
                    index: first_implicit + pos,
                },
            )?;
            // A large known value (a weight) is left unknown rather than copied into
            // the plan: no shape depends on one.
            specs.push(PlanInput {
                name,
                ty: x.ty.clone(),
                value: x.value.filter(|v| v.len() <= KNOWN_INPUT_MAX),
            });
        }
        self.graph.model.plan_types(&specs, limits).map_err(|err| {
            let (e, needed) = *err;
            let index = needed.and_then(|n| {
                if let Some(k) = names.iter().position(|f| *f == n) {
                    return outer(k);
                }
                let c = self.graph.captures.iter().position(|c| *c == n)?;
                Some(first_implicit + self.capture_pos[c])
            });
            match index {
                Some(index) => OpError::ValueNeeded { index },
                None => sub_err(self.attr, e),
            }
        })
    }

    /// Runs the body on its formal inputs and the node's implicit inputs, reusing
    /// `plan` when it takes these inputs (the same types, and the same values where
    /// it depends on them), planning again otherwise.
    pub(super) fn run<'g>(
        &'g self,
        plan: &mut Option<Plan<'g>>,
        formal: &[&Tensor],
        implicit: &[Option<&Tensor>],
        ctx: &Ctx,
    ) -> Result<Vec<Tensor>, OpError> {
        let mut named: Vec<(&str, &Tensor)> = Vec::with_capacity(formal.len() + implicit.len());
        for (name, t) in self.formal().iter().zip(formal) {
            named.push((name, t));
        }
        for (name, &pos) in self.graph.captures.iter().zip(&self.capture_pos) {
            let t =
                implicit.get(pos).copied().flatten().ok_or_else(|| {
                    sub_err(self.attr, format!("outer value `{name}` is missing"))
                })?;
            named.push((name, t));
        }
        if !plan.as_ref().is_some_and(|p| p.accepts_refs(&named)) {
            *plan = Some(
                self.graph
                    .model
                    .plan_refs(&named, ctx.limits())
                    .map_err(|e| sub_err(self.attr, e))?,
            );
        }
        let Some(p) = plan.as_ref() else {
            return Err(sub_err(self.attr, "no plan"));
        };
        let opts = RunOptions {
            trace: false,
            hash_thread: false,
            threads: ctx.threads(),
            ..RunOptions::default()
        };
        let out = p
            .execute_refs(&named, ctx, &opts)
            .map_err(|e| sub_err(self.attr, e))?;
        Ok(out.outputs.into_iter().map(|(_, t)| t).collect())
    }
}

/// The one bool a condition tensor holds.
fn cond_value(t: &Tensor, what: &str) -> Result<bool, OpError> {
    match t.as_slice::<bool>() {
        Some([v]) => Ok(*v),
        _ => Err(OpError::value(format!(
            "{what} must be one bool, got {} {:?}",
            t.dtype(),
            t.shape()
        ))),
    }
}

fn check_cond_type(ty: &TypeInfo, index: usize) -> Result<(), OpError> {
    if ty.dtype != DType::Bool {
        return Err(OpError::DType {
            index,
            dtype: ty.dtype,
        });
    }
    if ty.numel() != 1 {
        return Err(OpError::shape(format!(
            "the condition must hold one element, it has shape {:?}",
            ty.shape
        )));
    }
    Ok(())
}

/// The types of a running node's inputs (a placeholder for an absent one).
fn types_of(inputs: &[Option<&Tensor>]) -> Vec<TypeInfo> {
    inputs
        .iter()
        .map(|t| t.map_or_else(|| TypeInfo::new(DType::Bool, vec![]), TypeInfo::of))
        .collect()
}

/// A running node's inputs as planning sees them: every value known.
fn known_inputs<'a>(
    inputs: &[Option<&'a Tensor>],
    types: &'a [TypeInfo],
) -> Vec<Option<InferInput<'a>>> {
    inputs
        .iter()
        .zip(types)
        .map(|(t, ty)| t.map(|v| InferInput { ty, value: Some(v) }))
        .collect()
}

pub(super) fn plan_types_of(p: &Plan<'_>) -> Vec<TypeInfo> {
    p.output_types().into_iter().map(|(_, t)| t).collect()
}

// ---------------------------------------------------------------------------------
// If
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct If {
    then: Body,
    els: Body,
}

fn build_if(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    check_count(n.num_inputs, 1, 1)?;
    let mut b = bodies(n, &["then_branch", "else_branch"])?.into_iter();
    match (b.next(), b.next()) {
        (Some(then), Some(els)) => Ok(Box::new(If { then, els })),
        _ => Err(OpError::MissingAttribute {
            name: "then_branch".into(),
        }),
    }
}

impl If {
    fn branch(&self, cond: bool) -> &Body {
        if cond {
            &self.then
        } else {
            &self.els
        }
    }

    /// The plan of the branch `cond` chooses, or of both when it is not known.
    fn plans<'g>(
        &'g self,
        inputs: &[Option<InferInput<'g>>],
        limits: &Limits,
    ) -> Result<Vec<Plan<'g>>, OpError> {
        let cond = super::util::infer_input(inputs, 0)?;
        check_cond_type(cond.ty, 0)?;
        let none = |_: usize| None;
        match cond.value {
            Some(v) => Ok(vec![self.branch(cond_value(v, "cond")?).plan_types(
                &[],
                inputs,
                1,
                &none,
                limits,
            )?]),
            None => Ok(vec![
                self.then.plan_types(&[], inputs, 1, &none, limits)?,
                self.els.plan_types(&[], inputs, 1, &none, limits)?,
            ]),
        }
    }
}

impl Op for If {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        self.infer_within(inputs, &Limits::default())
    }

    fn infer_within(
        &self,
        inputs: &[Option<InferInput<'_>>],
        limits: &Limits,
    ) -> Result<Vec<TypeInfo>, OpError> {
        let plans = self.plans(inputs, limits)?;
        let types: Vec<Vec<TypeInfo>> = plans.iter().map(plan_types_of).collect();
        match types.as_slice() {
            [one] => Ok(one.clone()),
            [a, b] if a == b => Ok(a.clone()),
            // The output shapes depend on the branch taken.
            _ => Err(OpError::ValueNeeded { index: 0 }),
        }
    }

    fn needs(
        &self,
        known: &[Option<InferInput<'_>>],
        _: &[Option<&TypeInfo>],
        _: &[TypeInfo],
        limits: &Limits,
    ) -> Result<Needs, OpError> {
        let plans = self.plans(known, limits)?;
        Ok(Needs {
            cost: plans
                .iter()
                .map(|p| p.cost())
                .max()
                .unwrap_or(0)
                .saturating_add(1),
            working_bytes: plans
                .iter()
                .map(|p| p.peak_activation_bytes())
                .max()
                .unwrap_or(0),
        })
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let cond = super::util::input(inputs, 0)?;
        let body = self.branch(cond_value(cond, "cond")?);
        body.run(&mut None, &[], &inputs[1..], ctx)
    }
}

// ---------------------------------------------------------------------------------
// Slicing and stacking along an axis
// ---------------------------------------------------------------------------------

/// Element `i` of axis `axis` of `t`, without that axis.
fn take(t: &Tensor, axis: usize, i: usize) -> Result<Tensor, OpError> {
    fn go<T: Element>(v: &[T], outer: usize, len: usize, inner: usize, i: usize) -> TensorData {
        let mut out = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            let at = (o * len + i) * inner;
            out.extend_from_slice(&v[at..at + inner]);
        }
        T::wrap(out)
    }
    let shape = t.shape();
    let outer = shape[..axis].iter().product::<usize>();
    let len = shape[axis];
    let inner = shape[axis + 1..].iter().product::<usize>();
    let data = deed_types::with_data!(t.data(), v => go(v, outer, len, inner, i));
    let mut s = shape.to_vec();
    s.remove(axis);
    Ok(Tensor::new(s, data)?)
}

/// Stacks `parts` (each of type `elem`) along a new axis `axis`.
fn stack(parts: &[Tensor], elem: &TypeInfo, axis: usize) -> Result<Tensor, OpError> {
    let mut shape = elem.shape.clone();
    shape.insert(axis, parts.len());
    for p in parts {
        if p.dtype() != elem.dtype || p.shape() != elem.shape.as_slice() {
            return Err(OpError::shape(format!(
                "a scan output is {} {:?} in one iteration and {} {:?} in another",
                elem.dtype,
                elem.shape,
                p.dtype(),
                p.shape()
            )));
        }
    }
    let outer = elem.shape[..axis].iter().product::<usize>();
    let inner = elem.shape[axis..].iter().product::<usize>();
    let total = numel(&shape)?;
    fn go<T: Element>(
        _like: &[T],
        parts: &[Tensor],
        outer: usize,
        inner: usize,
        total: usize,
    ) -> TensorData {
        let slices: Vec<&[T]> = parts.iter().filter_map(|p| T::slice(p.data())).collect();
        let mut out = Vec::with_capacity(total);
        for o in 0..outer {
            for s in &slices {
                out.extend_from_slice(&s[o * inner..(o + 1) * inner]);
            }
        }
        T::wrap(out)
    }
    let data = match parts.first() {
        Some(p) => deed_types::with_data!(p.data(), v => go(v, parts, outer, inner, total)),
        None => TensorData::zeros(elem.dtype, 0),
    };
    Ok(Tensor::new(shape, data)?)
}

fn norm_axis(axis: i64, rank: usize) -> Result<usize, OpError> {
    super::util::norm_axis(axis, rank)
}

// ---------------------------------------------------------------------------------
// Scan
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Scan {
    body: Body,
    /// Opset 8's form: a leading `sequence_lens` input and a batch axis 0.
    batched: bool,
    /// Scanned inputs (`M`).
    num_scan: usize,
    /// State variables (`N`).
    num_state: usize,
    in_axes: Vec<i64>,
    in_reverse: Vec<bool>,
    out_axes: Vec<i64>,
    out_reverse: Vec<bool>,
}

fn build_scan(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let body = bodies(n, &["body"])?
        .pop()
        .ok_or(OpError::MissingAttribute {
            name: "body".into(),
        })?;
    let batched = n.opset < 9;
    let num_scan = usize::try_from(n.attrs.req_int("num_scan_inputs")?)
        .map_err(|_| OpError::bad_attr("num_scan_inputs", "must not be negative"))?;
    let own = n.num_inputs - usize::from(batched);
    if num_scan == 0 || num_scan > own {
        return Err(OpError::bad_attr(
            "num_scan_inputs",
            format!("{num_scan} scanned inputs among {own}"),
        ));
    }
    let num_state = own - num_scan;
    if n.num_outputs < num_state {
        return Err(OpError::shape(format!(
            "Scan has {num_state} state variables but {} outputs",
            n.num_outputs
        )));
    }
    let num_out = n.num_outputs - num_state;
    let list = |name: &str, len: usize| -> Result<Vec<i64>, OpError> {
        match n.attrs.ints(name)? {
            None => Ok(vec![0; len]),
            Some(v) if v.len() == len => Ok(v),
            Some(v) => Err(OpError::bad_attr(
                name,
                format!("has {} values for {len}", v.len()),
            )),
        }
    };
    let dirs = |v: Vec<i64>, name: &str| -> Result<Vec<bool>, OpError> {
        v.into_iter()
            .map(|d| match d {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(OpError::bad_attr(name, format!("direction {d}"))),
            })
            .collect()
    };
    let (in_axes, in_reverse, out_axes, out_reverse) = if batched {
        (
            vec![0; num_scan],
            dirs(list("directions", num_scan)?, "directions")?,
            vec![0; num_out],
            vec![false; num_out],
        )
    } else {
        (
            list("scan_input_axes", num_scan)?,
            dirs(
                list("scan_input_directions", num_scan)?,
                "scan_input_directions",
            )?,
            list("scan_output_axes", num_out)?,
            dirs(
                list("scan_output_directions", num_out)?,
                "scan_output_directions",
            )?,
        )
    };
    if body.formal().len() != num_state + num_scan {
        return Err(sub_err(
            "body",
            format!(
                "the body takes {} inputs, Scan gives it {num_state} states and {num_scan} slices",
                body.formal().len()
            ),
        ));
    }
    Ok(Box::new(Scan {
        body,
        batched,
        num_scan,
        num_state,
        in_axes,
        in_reverse,
        out_axes,
        out_reverse,
    }))
}

/// What planning a `Scan` fixes: the body's plan and the node's output types.
struct ScanPlan<'g> {
    plan: Plan<'g>,
    outputs: Vec<TypeInfo>,
    iterations: u64,
    batch: u64,
}

impl Scan {
    /// The node's own inputs (after `sequence_lens` in the batched form).
    fn first(&self) -> usize {
        usize::from(self.batched)
    }

    fn plan<'g>(
        &'g self,
        inputs: &[Option<InferInput<'g>>],
        limits: &Limits,
    ) -> Result<ScanPlan<'g>, OpError> {
        let first = self.first();
        let own = first + self.num_state + self.num_scan;
        let get = |i: usize| super::util::infer_input(inputs, i);
        let batch_of = |ty: &TypeInfo, i: usize| -> Result<usize, OpError> {
            ty.shape
                .first()
                .copied()
                .ok_or_else(|| OpError::shape(format!("input {i} has no batch axis")))
        };
        let mut formal = Vec::with_capacity(self.num_state + self.num_scan);
        let mut batch = None;
        for i in first..first + self.num_state {
            let ty = get(i)?.ty;
            let mut ty = ty.clone();
            if self.batched {
                let b = batch_of(&ty, i)?;
                if *batch.get_or_insert(b) != b {
                    return Err(OpError::shape("Scan inputs differ in batch size"));
                }
                ty.shape.remove(0);
            }
            formal.push((ty, None));
        }
        let mut iterations = None;
        for (j, i) in (first + self.num_state..own).enumerate() {
            let mut ty = get(i)?.ty.clone();
            if self.batched {
                let b = batch_of(&ty, i)?;
                if *batch.get_or_insert(b) != b {
                    return Err(OpError::shape("Scan inputs differ in batch size"));
                }
                ty.shape.remove(0);
            }
            let axis = norm_axis(self.in_axes[j], ty.shape.len())?;
            let len = ty.shape.remove(axis);
            if *iterations.get_or_insert(len) != len {
                return Err(OpError::shape(format!(
                    "scanned inputs differ in length along their axes ({} and {len})",
                    iterations.unwrap_or(0)
                )));
            }
            formal.push((ty, None));
        }
        let iterations = iterations.unwrap_or(0);
        if self.batched {
            if let Some(lens) = inputs.first().copied().flatten() {
                if let Some(v) = lens.value {
                    let lens = super::util::to_i64s(v)?;
                    if lens.iter().any(|&l| l != iterations as i64) {
                        return Err(OpError::Unsupported {
                            feature: "Scan with sequence_lens shorter than the scanned axis".into(),
                        });
                    }
                } else {
                    return Err(OpError::ValueNeeded { index: 0 });
                }
            }
        }
        let state_in: Vec<TypeInfo> = formal[..self.num_state]
            .iter()
            .map(|(t, _)| t.clone())
            .collect();
        let num_state = self.num_state;
        let outer = |k: usize| (k < num_state).then_some(first + k);
        let plan = self.body.plan_types(&formal, inputs, own, &outer, limits)?;
        let body_out = plan_types_of(&plan);
        if body_out.len() < num_state + self.out_axes.len() {
            return Err(sub_err(
                "body",
                format!(
                    "the body has {} outputs, Scan needs {}",
                    body_out.len(),
                    num_state + self.out_axes.len()
                ),
            ));
        }
        for (k, (a, b)) in state_in.iter().zip(&body_out).enumerate() {
            if a != b {
                return Err(OpError::shape(format!(
                    "the body turns state variable {k} from {} {:?} into {} {:?}",
                    a.dtype, a.shape, b.dtype, b.shape
                )));
            }
        }
        let batch = batch.unwrap_or(1);
        let mut outputs = Vec::new();
        for t in &body_out[..num_state] {
            let mut t = t.clone();
            if self.batched {
                t.shape.insert(0, batch);
            }
            outputs.push(t);
        }
        for (k, t) in body_out[num_state..num_state + self.out_axes.len()]
            .iter()
            .enumerate()
        {
            let mut t = t.clone();
            let axis = norm_axis(self.out_axes[k], t.shape.len() + 1)?;
            t.shape.insert(axis, iterations);
            if self.batched {
                t.shape.insert(0, batch);
            }
            outputs.push(t);
        }
        Ok(ScanPlan {
            plan,
            outputs,
            iterations: iterations as u64,
            batch: if self.batched { batch as u64 } else { 1 },
        })
    }

    /// One scan (one batch entry in the batched form): `states` and the scanned
    /// `slices`' tensors, without a batch axis.
    fn scan_one<'g>(
        &'g self,
        plan: &mut Option<Plan<'g>>,
        states: Vec<Tensor>,
        scanned: &[Tensor],
        implicit: &[Option<&Tensor>],
        body_types: &[TypeInfo],
        ctx: &Ctx,
    ) -> Result<Vec<Tensor>, OpError> {
        let axes: Vec<usize> = scanned
            .iter()
            .zip(&self.in_axes)
            .map(|(t, &a)| norm_axis(a, t.rank()))
            .collect::<Result<_, _>>()?;
        let len = scanned
            .first()
            .zip(axes.first())
            .map_or(0, |(t, &a)| t.shape()[a]);
        for (t, &a) in scanned.iter().zip(&axes) {
            if t.shape()[a] != len {
                return Err(OpError::shape("scanned inputs differ in length"));
            }
        }
        let num_out = self.out_axes.len();
        let mut states = states;
        let mut collected: Vec<Vec<Tensor>> = vec![Vec::with_capacity(len); num_out];
        for it in 0..len {
            let slices: Vec<Tensor> = scanned
                .iter()
                .zip(&axes)
                .zip(&self.in_reverse)
                .map(|((t, &a), &rev)| take(t, a, if rev { len - 1 - it } else { it }))
                .collect::<Result<_, _>>()?;
            let formal: Vec<&Tensor> = states.iter().chain(&slices).collect();
            let mut outs = self.body.run(plan, &formal, implicit, ctx)?.into_iter();
            states = outs.by_ref().take(self.num_state).collect();
            for c in collected.iter_mut() {
                c.push(
                    outs.next()
                        .ok_or_else(|| sub_err("body", "too few outputs"))?,
                );
            }
        }
        let mut out = states;
        for (k, mut parts) in collected.into_iter().enumerate() {
            if self.out_reverse[k] {
                parts.reverse();
            }
            let elem = &body_types[self.num_state + k];
            let axis = norm_axis(self.out_axes[k], elem.shape.len() + 1)?;
            out.push(stack(&parts, elem, axis)?);
        }
        Ok(out)
    }
}

impl Op for Scan {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        self.infer_within(inputs, &Limits::default())
    }

    fn infer_within(
        &self,
        inputs: &[Option<InferInput<'_>>],
        limits: &Limits,
    ) -> Result<Vec<TypeInfo>, OpError> {
        Ok(self.plan(inputs, limits)?.outputs)
    }

    fn needs(
        &self,
        known: &[Option<InferInput<'_>>],
        inputs: &[Option<&TypeInfo>],
        outputs: &[TypeInfo],
        limits: &Limits,
    ) -> Result<Needs, OpError> {
        let p = self.plan(known, limits)?;
        Ok(Needs {
            cost: p
                .plan
                .cost()
                .saturating_mul(p.iterations.max(1))
                .saturating_mul(p.batch)
                .saturating_add(self.cost(inputs, outputs)),
            working_bytes: p.plan.peak_activation_bytes(),
        })
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        let first = self.first();
        let own = first + self.num_state + self.num_scan;
        let get = |i: usize| super::util::input(inputs, i);
        let implicit = &inputs[own.min(inputs.len())..];
        // The body's output types, for scan outputs of zero iterations.
        let body_types = {
            let types = types_of(inputs);
            let p = self.plan(&known_inputs(inputs, &types), ctx.limits())?;
            plan_types_of(&p.plan)
        };
        let mut plan = None;
        if !self.batched {
            let states: Vec<Tensor> = (first..first + self.num_state)
                .map(|i| get(i).cloned())
                .collect::<Result<_, _>>()?;
            let scanned: Vec<Tensor> = (first + self.num_state..own)
                .map(|i| get(i).cloned())
                .collect::<Result<_, _>>()?;
            return self.scan_one(&mut plan, states, &scanned, implicit, &body_types, ctx);
        }
        let batch = get(first)?.shape().first().copied().unwrap_or(0);
        let mut per_batch: Vec<Vec<Tensor>> = Vec::with_capacity(batch);
        for b in 0..batch {
            let states: Vec<Tensor> = (first..first + self.num_state)
                .map(|i| take(get(i)?, 0, b))
                .collect::<Result<_, _>>()?;
            let scanned: Vec<Tensor> = (first + self.num_state..own)
                .map(|i| take(get(i)?, 0, b))
                .collect::<Result<_, _>>()?;
            per_batch.push(self.scan_one(
                &mut plan,
                states,
                &scanned,
                implicit,
                &body_types,
                ctx,
            )?);
        }
        let num_out = self.num_state + self.out_axes.len();
        (0..num_out)
            .map(|k| {
                let parts: Vec<Tensor> = per_batch.iter().map(|o| o[k].clone()).collect();
                let elem = match parts.first() {
                    Some(p) => TypeInfo::of(p),
                    None => TypeInfo::new(body_types[k].dtype, body_types[k].shape.clone()),
                };
                stack(&parts, &elem, 0)
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------
// Loop
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Loop {
    body: Body,
    /// Loop-carried values (`N`).
    num_carried: usize,
    /// Scan outputs (`K`).
    num_scan: usize,
}

fn build_loop(n: &NodeInfo<'_>) -> Result<Box<dyn Op>, OpError> {
    let body = bodies(n, &["body"])?
        .pop()
        .ok_or(OpError::MissingAttribute {
            name: "body".into(),
        })?;
    if n.num_inputs < 2 {
        return Err(OpError::InputCount {
            min: 2,
            max: usize::MAX,
            actual: n.num_inputs,
        });
    }
    let num_carried = n.num_inputs - 2;
    if n.num_outputs < num_carried {
        return Err(OpError::shape(format!(
            "Loop has {num_carried} loop-carried values but {} outputs",
            n.num_outputs
        )));
    }
    if body.formal().len() != num_carried + 2 {
        return Err(sub_err(
            "body",
            format!(
                "the body takes {} inputs, Loop gives it {}",
                body.formal().len(),
                num_carried + 2
            ),
        ));
    }
    Ok(Box::new(Loop {
        body,
        num_carried,
        num_scan: n.num_outputs - num_carried,
    }))
}

/// How planning sized a `Loop`.
enum LoopPlan {
    /// From the body's plan: the output types, the cost of `M` iterations and the
    /// body's activation memory.
    Planned {
        outputs: Vec<TypeInfo>,
        needs: Needs,
    },
    /// Computed while planning (every input known): the outputs, what each
    /// iteration's plan cost, and the most activation memory one of them held.
    Computed { outputs: Vec<Tensor>, needs: Needs },
}

impl Loop {
    fn implicit(&self) -> usize {
        2 + self.num_carried
    }

    fn plan(
        &self,
        inputs: &[Option<InferInput<'_>>],
        limits: &Limits,
    ) -> Result<LoopPlan, OpError> {
        let m = match inputs.first().copied().flatten() {
            None => None,
            Some(x) => Some(trip_count(super::util::need_value(x, 0)?)?),
        };
        let cond_in = inputs.get(1).copied().flatten();
        if let Some(c) = cond_in {
            check_cond_type(c.ty, 1)?;
        }
        let cond_known = match cond_in {
            None => Some(true),
            Some(c) => c.value.map(|v| cond_value(v, "cond")).transpose()?,
        };
        let carried: Vec<InferInput<'_>> = (2..2 + self.num_carried)
            .map(|i| super::util::infer_input(inputs, i))
            .collect::<Result<_, _>>()?;
        let true_t = Tensor::scalar(true);
        let iter_ty = TypeInfo::new(DType::I64, vec![]);
        let cond_ty = TypeInfo::new(DType::Bool, vec![]);
        let cond_val = (cond_known == Some(true)).then_some(&true_t);
        let mut formal = vec![(iter_ty, None), (cond_ty, cond_val)];
        formal.extend(carried.iter().map(|c| (c.ty.clone(), None)));
        let none = |_: usize| None;
        if let (Some(m), Ok(plan)) = (
            m,
            self.body
                .plan_types(&formal, inputs, self.implicit(), &none, limits),
        ) {
            let out = plan_types_of(&plan);
            let stable = out.len() > self.num_carried + self.num_scan
                && out[0].dtype == DType::Bool
                && out[0].numel() == 1
                && carried.iter().zip(&out[1..]).all(|(c, o)| c.ty == o);
            // The body keeps the condition true when its output is known true from a
            // true input: then every iteration runs.
            let always = cond_in.is_none()
                || (cond_known == Some(true)
                    && plan
                        .known_output(0)
                        .is_some_and(|t| t.as_slice::<bool>() == Some(&[true])));
            if stable && (self.num_scan == 0 || always) {
                let mut outputs: Vec<TypeInfo> = out[1..=self.num_carried].to_vec();
                for t in &out[1 + self.num_carried..1 + self.num_carried + self.num_scan] {
                    let mut t = t.clone();
                    t.shape.insert(0, m as usize);
                    outputs.push(t);
                }
                let needs = Needs {
                    cost: plan.cost().saturating_mul(m).saturating_add(1),
                    working_bytes: plan.peak_activation_bytes(),
                };
                return Ok(LoopPlan::Planned { outputs, needs });
            }
        }
        // Computed while planning: every input must be known.
        let mut values = Vec::with_capacity(inputs.len());
        for (i, x) in inputs.iter().enumerate() {
            match x {
                None => values.push(None),
                Some(x) => values.push(Some(x.value.ok_or(OpError::ValueNeeded { index: i })?)),
            }
        }
        let (outputs, needs) = self.iterate(&values, &Ctx::default().with_limits(limits), true)?;
        Ok(LoopPlan::Computed { outputs, needs })
    }

    /// Runs the loop; with `bounded`, refuses to run more than
    /// [`MAX_PLANNED_ITERATIONS`] iterations without a trip count. Returns the
    /// outputs, the summed cost of the body's plans and the largest activation
    /// memory of one.
    fn iterate(
        &self,
        inputs: &[Option<&Tensor>],
        ctx: &Ctx,
        bounded: bool,
    ) -> Result<(Vec<Tensor>, Needs), OpError> {
        let m = inputs
            .first()
            .copied()
            .flatten()
            .map(trip_count)
            .transpose()?;
        let cond_in = inputs.get(1).copied().flatten();
        let mut cond = match cond_in {
            Some(c) => cond_value(c, "cond")?,
            None => true,
        };
        let implicit = &inputs[self.implicit().min(inputs.len())..];
        let mut carried: Vec<Tensor> = (2..2 + self.num_carried)
            .map(|i| super::util::input(inputs, i).cloned())
            .collect::<Result<_, _>>()?;
        let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); self.num_scan];
        let mut plan = None;
        let mut needs = Needs {
            cost: 1,
            working_bytes: 0,
        };
        let mut i: u64 = 0;
        while m.is_none_or(|m| i < m) && cond {
            if m.is_none() && bounded && i as usize >= MAX_PLANNED_ITERATIONS {
                return Err(OpError::Unsupported {
                    feature: format!(
                        "a Loop without a trip count that runs more than {MAX_PLANNED_ITERATIONS} iterations"
                    ),
                });
            }
            let iter_t = Tensor::scalar(i as i64);
            let cond_t = Tensor::scalar(cond);
            let mut formal: Vec<&Tensor> = vec![&iter_t, &cond_t];
            formal.extend(carried.iter());
            let outs = self.body.run(&mut plan, &formal, implicit, ctx)?;
            if let Some(p) = plan.as_ref() {
                needs.cost = needs.cost.saturating_add(p.cost());
                needs.working_bytes = needs.working_bytes.max(p.peak_activation_bytes());
            }
            if outs.len() < 1 + self.num_carried + self.num_scan {
                return Err(sub_err("body", "too few outputs"));
            }
            let mut outs = outs.into_iter();
            let c = outs
                .next()
                .ok_or_else(|| sub_err("body", "too few outputs"))?;
            if cond_in.is_some() {
                cond = cond_value(&c, "the body's condition")?;
            }
            carried = outs.by_ref().take(self.num_carried).collect();
            for s in scans.iter_mut() {
                s.push(
                    outs.next()
                        .ok_or_else(|| sub_err("body", "too few outputs"))?,
                );
            }
            i += 1;
        }
        // A scan output of no iteration takes its element type from the body's plan.
        let body_types = if i == 0 && self.num_scan > 0 {
            let types = types_of(inputs);
            let known = known_inputs(inputs, &types);
            let mut formal = vec![
                (TypeInfo::new(DType::I64, vec![]), None),
                (TypeInfo::new(DType::Bool, vec![]), None),
            ];
            formal.extend(carried.iter().map(|c| (TypeInfo::of(c), None)));
            let p =
                self.body
                    .plan_types(&formal, &known, self.implicit(), &|_| None, ctx.limits())?;
            plan_types_of(&p)
        } else {
            Vec::new()
        };
        let mut out = carried;
        for (k, parts) in scans.into_iter().enumerate() {
            let elem = match (parts.first(), body_types.get(1 + self.num_carried + k)) {
                (Some(p), _) => TypeInfo::of(p),
                (None, Some(t)) => t.clone(),
                (None, None) => return Err(sub_err("body", "too few outputs")),
            };
            out.push(stack(&parts, &elem, 0)?);
        }
        Ok((out, needs))
    }
}

/// A trip count: one i64 (or i32); negative runs no iteration.
fn trip_count(t: &Tensor) -> Result<u64, OpError> {
    match super::util::to_i64s(t)?.as_slice() {
        [v] => Ok((*v).max(0) as u64),
        _ => Err(OpError::value(format!(
            "the trip count must be one integer, got shape {:?}",
            t.shape()
        ))),
    }
}

impl Op for Loop {
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError> {
        self.infer_within(inputs, &Limits::default())
    }

    fn infer_within(
        &self,
        inputs: &[Option<InferInput<'_>>],
        limits: &Limits,
    ) -> Result<Vec<TypeInfo>, OpError> {
        Ok(match self.plan(inputs, limits)? {
            LoopPlan::Planned { outputs, .. } => outputs,
            LoopPlan::Computed { outputs, .. } => outputs.iter().map(TypeInfo::of).collect(),
        })
    }

    fn needs(
        &self,
        known: &[Option<InferInput<'_>>],
        inputs: &[Option<&TypeInfo>],
        outputs: &[TypeInfo],
        limits: &Limits,
    ) -> Result<Needs, OpError> {
        let body = match self.plan(known, limits)? {
            LoopPlan::Planned { needs, .. } | LoopPlan::Computed { needs, .. } => needs,
        };
        Ok(Needs {
            cost: body.cost.saturating_add(self.cost(inputs, outputs)),
            working_bytes: body.working_bytes,
        })
    }

    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError> {
        Ok(self.iterate(inputs, ctx, true)?.0)
    }
}
