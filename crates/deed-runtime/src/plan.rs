//! Planning and execution.
//!
//! A [`Plan`] fixes, for concrete inputs, every value's dtype and shape, every node's
//! cost, and when each intermediate tensor can be freed — all before anything runs. The
//! run is refused up front if the cost exceeds the budget or a limit would be crossed.
//!
//! While planning, values known without running the model are propagated: initializers,
//! `Constant` outputs, small integer graph inputs (shape-like tensors, at most
//! [`KNOWN_INPUT_MAX`] elements), and the outputs of any node whose inputs are all known
//! and whose outputs are small (at most [`FOLD_MAX`] elements). Those nodes are computed
//! once at planning time; their outputs still appear, identically, as steps of the trace.
//! This is what lets a `Reshape` whose target shape is computed by `Shape → Gather →
//! Concat` be planned exactly.
//!
//! A small graph input of another dtype becomes known when an operator's output shape
//! depends on its value (a `Resize`'s scales, a `OneHot`'s depth, a `Compress`'s
//! condition, the strings a `StringSplit` splits, at most [`KNOWN_TEXT_MAX`] bytes of
//! them, the encoded image an `ImageDecoder` decodes, a 1-D u8 input of at most
//! [`KNOWN_BYTES_MAX`] bytes): the model is planned again with it known, and the plan
//! then holds for those bits only ([`Plan::accepts`]).

use std::sync::Arc;
use std::time::Instant;

use deed_types::{DType, Hash, Tensor, TensorData};

use crate::ctx::{Ctx, KernelMode};
use crate::error::{OpError, RuntimeError};
use crate::hasher::Pipeline;
use crate::limits::Limits;
use crate::model::{check_tensor_limits, Dim, Model, Source};
use crate::ops::{InferInput, Prepared, TypeInfo};
use crate::tensor_bytes::{canonicalize, has_noncanonical_nan};
use crate::timeline::{HashedOn, Recorder, Span, Timeline};
use crate::trace::{output_leaf, outputs_hash_of, step_hash, Trace};

/// Graph inputs with at most this many elements are treated as known while planning.
pub const KNOWN_INPUT_MAX: usize = 1024;
/// A string graph input is known while planning only when its strings hold at most
/// this many bytes in all (beside [`KNOWN_INPUT_MAX`] elements).
pub const KNOWN_TEXT_MAX: usize = 1 << 16;
/// A 1-D u8 graph input (a byte stream, such as an encoded image) may be known while
/// planning, when an operator's output shape depends on it, up to this many bytes
/// (beside [`KNOWN_INPUT_MAX`] elements of any dtype).
pub const KNOWN_BYTES_MAX: usize = 64 << 20;
/// Nodes whose inputs are all known and whose outputs have at most this many elements
/// are computed while planning.
pub const FOLD_MAX: u64 = 65536;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Kernel implementations (`DEED_KERNELS=reference` forces the reference).
    pub mode: KernelMode,
    /// Worker threads for kernels.
    pub threads: usize,
    /// Refuse the run when its planned cost exceeds this.
    pub budget: Option<u64>,
    /// Hash every step's outputs into a trace.
    pub trace: bool,
    /// Hash steps on the process's hashing thread while later steps compute (the
    /// default), rather than on the executing thread between steps. The trace is the
    /// same either way. A run whose kernel threads take every core hashes inline
    /// regardless: a third busy thread on two cores slows both others.
    pub hash_thread: bool,
    /// Resource limits.
    pub limits: Limits,
    /// Steps whose outputs the run hands back in [`RunOutput::kept`]: what a
    /// dispute's defender gives the referee as a step's inputs.
    pub keep_steps: Vec<usize>,
    /// Record when each step computed and was hashed ([`RunOutput::timeline`]): two
    /// clock readings per step and per hashed step.
    pub timeline: bool,
    /// Fault injection, for tests of the verification game only: flips one element
    /// of the first non-empty output of the first computed step at or after this
    /// one, and carries the error forward as an honest run would. Past the last
    /// computed step it flips the first non-empty graph output instead: every step
    /// right, the result wrong.
    #[cfg(feature = "fault")]
    pub corrupt_step: Option<usize>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            mode: KernelMode::from_env(),
            threads: 1,
            budget: None,
            trace: true,
            hash_thread: true,
            limits: Limits::default(),
            keep_steps: Vec::new(),
            timeline: false,
            #[cfg(feature = "fault")]
            corrupt_step: None,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Graph outputs, in the model's output order.
    pub outputs: Vec<(String, Tensor)>,
    /// The execution trace (empty when tracing was off).
    pub trace: Trace,
    /// Metered cost in operation units.
    pub cost: u64,
    /// Outputs of the steps named in [`RunOptions::keep_steps`], in step order, as
    /// [`Model::execute_node`] returns them.
    pub kept: Vec<(usize, Vec<Tensor>)>,
    /// When each step computed and was hashed, if [`RunOptions::timeline`] asked.
    pub timeline: Option<Timeline>,
}

#[derive(Debug)]
struct Step {
    inputs: Vec<Option<usize>>,
    outputs: Vec<Option<usize>>,
    types: Vec<TypeInfo>,
    cost: u64,
    /// Activation bytes the node holds while it runs beyond its inputs and outputs
    /// (see `Op::needs`).
    working_bytes: u64,
    folded: Option<Vec<Arc<Tensor>>>,
    /// The step hash of `folded`, computed once while planning.
    folded_hash: Option<Hash>,
    /// Bytes of the outputs the step hash covers.
    bytes: u64,
    /// What the operator precomputed from its known inputs (see `Op::prepare`).
    prepared: Option<Prepared>,
}

/// The model a plan runs: borrowed ([`Model::plan`]) or shared ([`Model::plan_shared`],
/// a plan that can be kept as long as its owner likes).
#[derive(Debug, Clone)]
enum ModelRef<'m> {
    Borrowed(&'m Model),
    Shared(Arc<Model>),
}

impl std::ops::Deref for ModelRef<'_> {
    type Target = Model;

    fn deref(&self) -> &Model {
        match self {
            ModelRef::Borrowed(m) => m,
            ModelRef::Shared(m) => m,
        }
    }
}

/// A model planned for concrete inputs.
#[derive(Debug)]
pub struct Plan<'m> {
    model: ModelRef<'m>,
    steps: Vec<Step>,
    /// value id → type
    types: Vec<TypeInfo>,
    /// graph input name → value id, in the model's input order
    input_ids: Vec<(String, usize)>,
    /// Graph inputs whose values the plan depends on.
    known_inputs: Vec<(usize, Arc<Tensor>)>,
    /// Initializers not overridden by an input: value id → tensor.
    init_values: Vec<(usize, Arc<Tensor>)>,
    outputs: Vec<(String, usize)>,
    /// value id → last step reading it (`usize::MAX` for graph outputs).
    last_use: Vec<usize>,
    cost: u64,
    peak_bytes: u64,
    /// The limits the plan was made within; the subgraphs its operators run are
    /// planned within them too.
    limits: Limits,
    /// Bytes of the outputs hashed at run time (the steps not folded).
    hashed_bytes: u64,
    /// The graph outputs' values computed while planning, where they were.
    known_outputs: Vec<Option<Arc<Tensor>>>,
}

impl Model {
    /// Plans a run for the given inputs: checks names, dtypes and declared shapes,
    /// infers every shape, meters every node and checks the limits.
    pub fn plan<'m>(
        &'m self,
        inputs: &[(String, Tensor)],
        limits: &Limits,
    ) -> Result<Plan<'m>, RuntimeError> {
        let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        self.plan_inputs(ModelRef::Borrowed(self), &refs, limits, true)
    }

    /// [`Model::plan`] on borrowed inputs, for a subgraph run again and again (a
    /// loop body): the plan depends on an input's value only when an operator's
    /// output shape needs it, so that it holds for the next iteration's values too.
    pub(crate) fn plan_refs(
        &self,
        inputs: &[(&str, &Tensor)],
        limits: &Limits,
    ) -> Result<Plan<'_>, RuntimeError> {
        self.plan_inputs(ModelRef::Borrowed(self), inputs, limits, false)
    }

    /// [`Model::plan`], holding the model by `Arc`: a plan with no borrow, for a
    /// caller that keeps plans to run them again (an executor serving many calls of
    /// one model with inputs of one shape plans once).
    pub fn plan_shared(
        self: &Arc<Model>,
        inputs: &[(String, Tensor)],
        limits: &Limits,
    ) -> Result<Plan<'static>, RuntimeError> {
        let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        self.plan_inputs(ModelRef::Shared(Arc::clone(self)), &refs, limits, true)
    }

    /// The plan of this model (which `model` is) for `inputs`, planned again with a
    /// graph input known each time an operator's output shape needs its value. With
    /// `ints_known`, small integer inputs (shape-like tensors) are known from the
    /// start.
    fn plan_inputs<'m>(
        &self,
        model: ModelRef<'m>,
        inputs: &[(&str, &Tensor)],
        limits: &Limits,
        ints_known: bool,
    ) -> Result<Plan<'m>, RuntimeError> {
        let expected: Vec<String> = self.inputs.iter().map(|v| v.name.clone()).collect();
        for &(name, _) in inputs {
            if !self.inputs.iter().any(|v| v.name == name) {
                return Err(RuntimeError::UnknownInput {
                    name: name.to_owned(),
                    expected,
                });
            }
        }
        let mut given = Vec::with_capacity(self.inputs.len());
        for v in &self.inputs {
            match inputs.iter().find(|(n, _)| *n == v.name) {
                Some(&(_, t)) => {
                    check_tensor_limits(&v.name, t, limits)?;
                    given.push((v.name.as_str(), t));
                }
                None if self.initializers.contains_key(&v.name) => {}
                None => return Err(RuntimeError::MissingInput(v.name.clone())),
            }
        }
        let mut known_by_value: Vec<&str> = Vec::new();
        loop {
            let specs: Vec<PlanInput<'_>> = given
                .iter()
                .map(|&(name, t)| {
                    let known = ((ints_known && matches!(t.dtype(), DType::I64 | DType::I32))
                        && t.len() <= KNOWN_INPUT_MAX)
                        || (known_by_value.contains(&name)
                            && may_be_known(&TypeInfo::of(t))
                            && text_bytes(t) <= KNOWN_TEXT_MAX);
                    PlanInput {
                        name,
                        ty: TypeInfo::of(t),
                        value: known.then_some(t),
                    }
                })
                .collect();
            let mut needed = None;
            match self.plan_once(model.clone(), &specs, limits, &mut needed) {
                Err(e) => match needed.and_then(|n| given.iter().find(|(g, _)| *g == n)) {
                    // Each round makes one more input known: at most one per input.
                    Some(&(name, _)) if !known_by_value.contains(&name) => {
                        known_by_value.push(name)
                    }
                    _ => return Err(e),
                },
                ok => return ok,
            }
        }
    }

    /// Plans from input types alone, with the values of the inputs that have one
    /// known (an `If` branch or a loop body, planned while the outer graph is). An
    /// input left out must have an initializer default. When an operator fails for
    /// want of the value of an input that has none here, the error comes with that
    /// input's name, so that the caller can make it known and plan again.
    pub(crate) fn plan_types(
        &self,
        inputs: &[PlanInput<'_>],
        limits: &Limits,
    ) -> Result<Plan<'_>, Box<(RuntimeError, Option<String>)>> {
        for v in &self.inputs {
            if !inputs.iter().any(|i| i.name == v.name) && !self.initializers.contains_key(&v.name)
            {
                return Err(Box::new((RuntimeError::MissingInput(v.name.clone()), None)));
            }
        }
        let mut needed = None;
        self.plan_once(ModelRef::Borrowed(self), inputs, limits, &mut needed)
            .map_err(|e| Box::new((e, needed)))
    }

    /// One planning pass over `inputs` (each graph input given, with its value when
    /// the plan may depend on it). When an operator fails for want of a value that
    /// depends on a graph input whose value is not known, and which is small enough to
    /// be known, that input's name is left in `needed`.
    fn plan_once<'m>(
        &self,
        model: ModelRef<'m>,
        inputs: &[PlanInput<'_>],
        limits: &Limits,
        needed: &mut Option<String>,
    ) -> Result<Plan<'m>, RuntimeError> {
        let mut ids: std::collections::HashMap<&str, usize> = Default::default();
        let mut types: Vec<TypeInfo> = Vec::new();
        let mut known: Vec<Option<Arc<Tensor>>> = Vec::new();
        fn new_value<'a>(
            name: &'a str,
            ty: TypeInfo,
            value: Option<Arc<Tensor>>,
            ids: &mut std::collections::HashMap<&'a str, usize>,
            types: &mut Vec<TypeInfo>,
            known: &mut Vec<Option<Arc<Tensor>>>,
        ) -> usize {
            let id = types.len();
            types.push(ty);
            known.push(value);
            ids.insert(name, id);
            id
        }

        // Inputs.
        let mut input_ids = Vec::new();
        let mut known_inputs = Vec::new();
        for v in &self.inputs {
            let Some(given) = inputs.iter().find(|i| i.name == v.name) else {
                continue;
            };
            let ty = &given.ty;
            if let Some(dt) = v.dtype {
                if dt != ty.dtype {
                    return Err(RuntimeError::InputDType {
                        name: v.name.clone(),
                        expected: dt,
                        actual: ty.dtype,
                    });
                }
            }
            if let Some(shape) = &v.shape {
                let ok = shape.len() == ty.shape.len()
                    && shape.iter().zip(&ty.shape).all(|(d, &s)| match d {
                        Dim::Fixed(n) => *n == s,
                        _ => true,
                    });
                if !ok {
                    return Err(RuntimeError::InputShape {
                        name: v.name.clone(),
                        expected: v.shape_text(),
                        actual: ty.shape.clone(),
                    });
                }
            }
            check_type_limits(ty, limits)?;
            let value = given.value.map(|t| Arc::new(t.clone()));
            let id = new_value(
                &v.name,
                ty.clone(),
                value.clone(),
                &mut ids,
                &mut types,
                &mut known,
            );
            if let Some(val) = value {
                known_inputs.push((id, val));
            }
            input_ids.push((v.name.clone(), id));
        }
        let mut init_values = Vec::new();
        for (name, t) in &self.initializers {
            if !ids.contains_key(name.as_str()) {
                let id = new_value(
                    name,
                    TypeInfo::of(t),
                    Some(t.clone()),
                    &mut ids,
                    &mut types,
                    &mut known,
                );
                init_values.push((id, t.clone()));
            }
        }

        // Nodes, in canonical order.
        let ctx = Ctx::new(KernelMode::from_env(), 1).with_limits(limits);
        let mut steps = Vec::with_capacity(self.nodes.len());
        let mut total: u64 = 0;
        for node in &self.nodes {
            let in_ids: Vec<Option<usize>> = node
                .inputs
                .iter()
                .map(|n| {
                    if n.is_empty() {
                        None
                    } else {
                        ids.get(n.as_str()).copied()
                    }
                })
                .collect();
            let node_err = |source: OpError| RuntimeError::Node {
                node: node.name.clone(),
                op_type: node.op_type.clone(),
                source,
            };
            let infer_in: Vec<Option<InferInput<'_>>> = in_ids
                .iter()
                .map(|id| {
                    id.map(|id| InferInput {
                        ty: &types[id],
                        value: known[id].as_deref(),
                    })
                })
                .collect();
            let out_types = match node.op.infer_within(&infer_in, limits) {
                Ok(t) => t,
                Err(e) => {
                    if let OpError::ValueNeeded { index } = e {
                        *needed = in_ids
                            .get(index)
                            .copied()
                            .flatten()
                            .and_then(|id| unknown_input_upstream(id, &steps, &known, &types))
                            .and_then(|id| input_ids.iter().find(|(_, i)| *i == id))
                            .map(|(name, _)| name.clone());
                    }
                    return Err(node_err(e));
                }
            };
            if out_types.len() < node.outputs.iter().filter(|o| !o.is_empty()).count() {
                return Err(node_err(OpError::shape(format!(
                    "node declares {} outputs but the operator produces {}",
                    node.outputs.len(),
                    out_types.len()
                ))));
            }
            for t in &out_types {
                check_type_limits(t, limits)?;
                if t.bytes() > limits.max_tensor_bytes {
                    return Err(RuntimeError::Limit {
                        what: "tensor bytes",
                        value: t.bytes(),
                        limit: limits.max_tensor_bytes,
                    });
                }
            }
            let in_types: Vec<Option<&TypeInfo>> =
                in_ids.iter().map(|id| id.map(|id| &types[id])).collect();
            let needs = node
                .op
                .needs(&infer_in, &in_types, &out_types, limits)
                .map_err(node_err)?;
            let cost = needs.cost;
            total = total.saturating_add(cost);

            // Fold when every input is known and the outputs are small. `Shape` and `Size`
            // depend on their input's type only, so they fold whatever its value.
            let type_only = node.domain.is_empty()
                && matches!(node.op_type.as_str(), "Shape" | "Size")
                && in_ids
                    .iter()
                    .flatten()
                    .all(|&id| types[id].bytes() <= TYPE_STAND_IN_MAX_BYTES);
            let all_known = type_only || in_ids.iter().flatten().all(|&id| known[id].is_some());
            let small = out_types.iter().map(|t| t.numel()).sum::<u64>() <= FOLD_MAX;
            let folded = if all_known && small {
                let stand_ins: Vec<Option<Tensor>> = if type_only {
                    in_ids
                        .iter()
                        .map(|id| id.map(|id| type_stand_in(&types[id])).transpose())
                        .collect::<Result<_, _>>()
                        .map_err(|e| node_err(OpError::from(e)))?
                } else {
                    Vec::new()
                };
                let vals: Vec<Option<&Tensor>> = if type_only {
                    stand_ins.iter().map(|t| t.as_ref()).collect()
                } else {
                    in_ids
                        .iter()
                        .map(|id| id.and_then(|id| known[id].as_deref()))
                        .collect()
                };
                let mut outs = node.op.run(&vals, &ctx).map_err(node_err)?;
                check_outputs(&outs, &out_types).map_err(node_err)?;
                outs.iter_mut().for_each(canonicalize);
                Some(outs.into_iter().map(Arc::new).collect::<Vec<_>>())
            } else {
                None
            };
            let prepared = if folded.is_none() {
                node.op.prepare(&infer_in)
            } else {
                None
            };

            let mut out_ids = Vec::with_capacity(node.outputs.len());
            for (slot, name) in node.outputs.iter().enumerate() {
                if name.is_empty() {
                    out_ids.push(None);
                    continue;
                }
                let value = folded.as_ref().map(|f| f[slot].clone());
                let id = new_value(
                    name,
                    out_types[slot].clone(),
                    value,
                    &mut ids,
                    &mut types,
                    &mut known,
                );
                out_ids.push(Some(id));
            }
            let folded_hash = folded.as_ref().map(|f| {
                let refs: Vec<&Tensor> = out_ids
                    .iter()
                    .zip(f)
                    .filter(|(id, _)| id.is_some())
                    .map(|(_, t)| t.as_ref())
                    .collect();
                step_hash(steps.len() as u32, &refs)
            });
            let bytes = out_ids
                .iter()
                .zip(&out_types)
                .filter(|(id, _)| id.is_some())
                .fold(0u64, |a, (_, t)| a.saturating_add(t.bytes()));
            steps.push(Step {
                inputs: in_ids,
                outputs: out_ids,
                types: out_types,
                cost,
                working_bytes: if folded.is_some() {
                    0
                } else {
                    needs.working_bytes
                },
                folded,
                folded_hash,
                bytes,
                prepared,
            });
        }

        if let Some(o) = self
            .outputs
            .iter()
            .find(|o| !ids.contains_key(o.name.as_str()))
        {
            return Err(RuntimeError::Graph(format!(
                "graph output `{}` is never produced",
                o.name
            )));
        }
        let outputs: Vec<(String, usize)> = self
            .outputs
            .iter()
            .filter_map(|o| ids.get(o.name.as_str()).map(|&id| (o.name.clone(), id)))
            .collect();

        // Liveness: free each intermediate value after its last reader.
        let mut last_use = vec![0usize; types.len()];
        for (s, step) in steps.iter().enumerate() {
            for id in step.inputs.iter().flatten() {
                last_use[*id] = s;
            }
            for id in step.outputs.iter().flatten() {
                last_use[*id] = last_use[*id].max(s);
            }
        }
        for (_, id) in &outputs {
            last_use[*id] = usize::MAX;
        }
        let mut produced = vec![false; types.len()];
        for id in steps.iter().flat_map(|s| s.outputs.iter().flatten()) {
            produced[*id] = true;
        }
        let mut live: u64 = 0;
        let mut peak: u64 = 0;
        for (s, step) in steps.iter().enumerate() {
            for id in step.outputs.iter().flatten() {
                live = live.saturating_add(types[*id].bytes());
            }
            peak = peak.max(live.saturating_add(step.working_bytes));
            for id in step.inputs.iter().chain(step.outputs.iter()).flatten() {
                if last_use[*id] == s && produced[*id] {
                    live = live.saturating_sub(types[*id].bytes());
                }
            }
        }
        if peak > limits.max_activation_bytes {
            return Err(RuntimeError::Limit {
                what: "activation memory",
                value: peak,
                limit: limits.max_activation_bytes,
            });
        }
        let hashed_bytes = steps
            .iter()
            .filter(|s| s.folded.is_none())
            .flat_map(|s| s.types.iter())
            .fold(0u64, |a, t| a.saturating_add(t.bytes()));
        let known_outputs = outputs.iter().map(|(_, id)| known[*id].clone()).collect();
        Ok(Plan {
            model,
            steps,
            types,
            input_ids,
            known_inputs,
            init_values,
            outputs,
            last_use,
            cost: total,
            peak_bytes: peak,
            limits: limits.clone(),
            hashed_bytes,
            known_outputs,
        })
    }

    /// Plans and runs in one call.
    pub fn run(
        &self,
        inputs: &[(String, Tensor)],
        opts: &RunOptions,
    ) -> Result<RunOutput, RuntimeError> {
        let plan = self.plan(inputs, &opts.limits)?;
        let ctx = Ctx::new(opts.mode, opts.threads);
        plan.execute(inputs, &ctx, opts)
    }

    /// Re-executes the single node at canonical `step` on the given input tensors
    /// (`None` for absent optional inputs) and returns its outputs, one per declared
    /// output slot (unused slots are skipped). This is the referee's primitive: it
    /// needs nothing but the model and the node's inputs.
    pub fn execute_node(
        &self,
        step: usize,
        inputs: &[Option<Tensor>],
    ) -> Result<Vec<Tensor>, RuntimeError> {
        let node = self.nodes.get(step).ok_or(RuntimeError::StepOutOfRange {
            step,
            len: self.nodes.len(),
        })?;
        let node_err = |source: OpError| RuntimeError::Node {
            node: node.name.clone(),
            op_type: node.op_type.clone(),
            source,
        };
        if inputs.len() != node.inputs.len() {
            return Err(node_err(OpError::InputCount {
                min: node.inputs.len(),
                max: node.inputs.len(),
                actual: inputs.len(),
            }));
        }
        let tys: Vec<Option<TypeInfo>> = inputs
            .iter()
            .map(|t| t.as_ref().map(TypeInfo::of))
            .collect();
        let infer_in: Vec<Option<InferInput<'_>>> = tys
            .iter()
            .zip(inputs)
            .map(|(ty, t)| {
                ty.as_ref().map(|ty| InferInput {
                    ty,
                    value: t.as_ref(),
                })
            })
            .collect();
        let out_types = node.op.infer(&infer_in).map_err(node_err)?;
        let refs: Vec<Option<&Tensor>> = inputs.iter().map(|t| t.as_ref()).collect();
        let ctx = Ctx::default();
        let mut outs = node.op.run(&refs, &ctx).map_err(node_err)?;
        check_outputs(&outs, &out_types).map_err(node_err)?;
        outs.iter_mut().for_each(canonicalize);
        Ok(outs
            .into_iter()
            .zip(&node.outputs)
            .filter(|(_, name)| !name.is_empty())
            .map(|(t, _)| t)
            .collect())
    }
}

/// The step hash of a node's outputs as [`Model::execute_node`] returns them.
pub fn node_step_hash(step: usize, outputs: &[Tensor]) -> Hash {
    let refs: Vec<&Tensor> = outputs.iter().collect();
    step_hash(step as u32, &refs)
}

/// One graph input as a planning pass sees it.
#[derive(Debug, Clone)]
pub(crate) struct PlanInput<'a> {
    /// The input's name.
    pub name: &'a str,
    /// Its dtype and shape.
    pub ty: TypeInfo,
    /// Its value, when the plan may depend on it.
    pub value: Option<&'a Tensor>,
}

/// The rank and element limits for a value of type `ty`. A dimension above the element
/// limit is refused too, though a zero beside it leaves the tensor empty: operators
/// walk their dimensions (ConstantOfShape built a table as long as each).
fn check_type_limits(ty: &TypeInfo, limits: &Limits) -> Result<(), RuntimeError> {
    if ty.shape.len() > limits.max_rank {
        return Err(RuntimeError::Limit {
            what: "tensor rank",
            value: ty.shape.len() as u64,
            limit: limits.max_rank as u64,
        });
    }
    if let Some(&d) = ty
        .shape
        .iter()
        .find(|&&d| d as u64 > limits.max_tensor_elements)
    {
        return Err(RuntimeError::Limit {
            what: "tensor dimension",
            value: d as u64,
            limit: limits.max_tensor_elements,
        });
    }
    if ty.numel() > limits.max_tensor_elements {
        return Err(RuntimeError::Limit {
            what: "tensor elements",
            value: ty.numel(),
            limit: limits.max_tensor_elements,
        });
    }
    Ok(())
}

/// The first graph input, in the order the steps read them, whose value `id` depends
/// on (`id` itself when it is one) and that is not known but small enough to be:
/// the input to make known so that `id` is. `None` when there is none.
fn unknown_input_upstream(
    id: usize,
    steps: &[Step],
    known: &[Option<Arc<Tensor>>],
    types: &[TypeInfo],
) -> Option<usize> {
    let mut seen = vec![false; types.len()];
    let mut stack = vec![id];
    while let Some(v) = stack.pop() {
        if std::mem::replace(&mut seen[v], true) || known[v].is_some() {
            continue;
        }
        match steps.iter().find(|s| s.outputs.contains(&Some(v))) {
            Some(step) => stack.extend(step.inputs.iter().rev().flatten().copied()),
            None => {
                if may_be_known(&types[v]) {
                    return Some(v);
                }
            }
        }
    }
    None
}

/// Whether a graph input of type `ty` may be made known while planning when an output
/// shape depends on its value: at most [`KNOWN_INPUT_MAX`] elements, or a byte stream
/// of at most [`KNOWN_BYTES_MAX`].
fn may_be_known(ty: &TypeInfo) -> bool {
    ty.numel() <= KNOWN_INPUT_MAX as u64
        || (ty.dtype == DType::U8 && ty.shape.len() == 1 && ty.numel() <= KNOWN_BYTES_MAX as u64)
}

/// The UTF-8 bytes of a string tensor's elements (0 for other dtypes).
fn text_bytes(t: &Tensor) -> usize {
    match t.data() {
        TensorData::Str(v) => v.iter().map(String::len).sum(),
        _ => 0,
    }
}

/// Largest input for which `Shape`/`Size` are folded from a zero-filled stand-in.
const TYPE_STAND_IN_MAX_BYTES: u64 = 1 << 26;

/// A tensor of the given type whose values are never read: `Shape` and `Size` only
/// look at the shape.
fn type_stand_in(ty: &TypeInfo) -> Result<Tensor, deed_types::TensorError> {
    Tensor::zeros(ty.dtype, ty.shape.clone())
}

fn check_outputs(outs: &[Tensor], types: &[TypeInfo]) -> Result<(), OpError> {
    if outs.len() < types.len() {
        return Err(OpError::shape(format!(
            "operator produced {} outputs, planned {}",
            outs.len(),
            types.len()
        )));
    }
    for (t, ty) in outs.iter().zip(types) {
        if t.dtype() != ty.dtype || t.shape() != ty.shape.as_slice() {
            return Err(OpError::shape(format!(
                "operator produced {} {:?}, planned {} {:?}",
                t.dtype(),
                t.shape(),
                ty.dtype,
                ty.shape
            )));
        }
    }
    Ok(())
}

/// Whether two tensors are the same bits: a plan made for one input value holds for
/// another only then (`-0.0` is not `+0.0`, and a NaN is itself).
fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    a.dtype() == b.dtype() && a.shape() == b.shape() && a.encode() == b.encode()
}

impl<'m> Plan<'m> {
    /// Whether [`Plan::execute`] takes `inputs` as they are: every graph input given
    /// with the dtype and shape planned for, and the inputs whose values the plan
    /// depends on (shapes read from a tensor, for instance) with those values.
    pub fn accepts(&self, inputs: &[(String, Tensor)]) -> bool {
        let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        self.accepts_refs(&refs)
    }

    /// [`Plan::accepts`] for borrowed inputs.
    pub(crate) fn accepts_refs(&self, inputs: &[(&str, &Tensor)]) -> bool {
        let given = |name: &str| inputs.iter().find(|(n, _)| *n == name).map(|&(_, t)| t);
        self.input_ids.iter().all(|(name, id)| {
            given(name).is_some_and(|t| {
                TypeInfo::of(t) == self.types[*id]
                    && self
                        .known_inputs
                        .iter()
                        .filter(|(k, _)| k == id)
                        .all(|(_, known)| same_bits(known, t))
            })
        })
    }

    /// Total metered cost in operation units.
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// Cost of each step, in canonical order.
    pub fn step_costs(&self) -> Vec<u64> {
        self.steps.iter().map(|s| s.cost).collect()
    }

    /// Bytes of node outputs a traced run hashes (those not folded while planning).
    pub fn hashed_bytes(&self) -> u64 {
        self.hashed_bytes
    }

    /// Peak bytes of intermediate tensors alive at once.
    pub fn peak_activation_bytes(&self) -> u64 {
        self.peak_bytes
    }

    /// The value of graph output `i` when planning computed it (it depends on
    /// constants and the inputs whose values the plan holds only).
    pub(crate) fn known_output(&self, i: usize) -> Option<&Tensor> {
        self.known_outputs.get(i)?.as_deref()
    }

    /// Planned dtype and shape of each graph output.
    pub fn output_types(&self) -> Vec<(String, TypeInfo)> {
        self.outputs
            .iter()
            .map(|(n, id)| (n.clone(), self.types[*id].clone()))
            .collect()
    }

    /// Runs the plan on `inputs`, which must be the inputs it was planned for (same
    /// dtypes and shapes, and the same values for inputs the plan depends on).
    pub fn execute(
        &self,
        inputs: &[(String, Tensor)],
        ctx: &Ctx,
        opts: &RunOptions,
    ) -> Result<RunOutput, RuntimeError> {
        let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        self.execute_refs(&refs, ctx, opts)
    }

    /// [`Plan::execute`] on borrowed inputs.
    pub(crate) fn execute_refs(
        &self,
        inputs: &[(&str, &Tensor)],
        ctx: &Ctx,
        opts: &RunOptions,
    ) -> Result<RunOutput, RuntimeError> {
        if let Some(budget) = opts.budget {
            if self.cost > budget {
                return Err(RuntimeError::Budget {
                    cost: self.cost,
                    budget,
                });
            }
        }
        // The subgraphs of the plan's operators are planned within the plan's limits.
        let limited;
        let ctx = if ctx.limits() == &self.limits {
            ctx
        } else {
            limited = ctx.with_limits(&self.limits);
            &limited
        };
        let mut values: Vec<Option<Val<'_>>> = vec![None; self.types.len()];
        for (name, id) in &self.input_ids {
            let t = inputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|&(_, t)| t)
                .ok_or_else(|| RuntimeError::MissingInput(name.clone()))?;
            if TypeInfo::of(t) != self.types[*id] {
                return Err(RuntimeError::InputShape {
                    name: name.clone(),
                    expected: format!("{:?} (as planned)", self.types[*id].shape),
                    actual: t.shape().to_vec(),
                });
            }
            values[*id] = Some(Val::Ref(t));
        }
        for (id, known) in &self.known_inputs {
            if !values[*id]
                .as_ref()
                .is_some_and(|v| same_bits(v.get(), known))
            {
                return Err(RuntimeError::Graph(
                    "an input the plan depends on changed value; plan again".into(),
                ));
            }
        }
        for (id, t) in &self.init_values {
            values[*id] = Some(Val::Shared(t.clone()));
        }
        // `DEED_PROFILE=1` prints each step's time (compute, then hashing) to stderr.
        // Read once per process: reading the environment takes a lock and a scan.
        static PROFILE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let profile =
            *PROFILE.get_or_init(|| std::env::var_os("DEED_PROFILE").is_some_and(|v| v == "1"));
        let origin = Instant::now();
        let recorder = opts.timeline.then(|| Recorder::new(origin));
        let n = self.steps.len();
        let mut runs = StepRun {
            profile,
            timeline: recorder.as_ref().map(|r| (r, Vec::new())),
            keep: &opts.keep_steps,
            kept: Vec::new(),
            corrupt: corrupt_step(opts),
            release: None,
        };
        // Step hashes go to another thread while later steps compute: the process's
        // hashing thread when the kernels leave it a core, else the kernel pool's
        // workers between their shares. The profile hashes inline so that it can time
        // each step's hashing.
        let pipeline =
            if opts.trace && opts.hash_thread && !profile && self.hashed_bytes >= PIPE_MIN_BYTES {
                let timeline = opts.timeline.then(|| Recorder::new(origin));
                if ctx.threads() < cores() {
                    Pipeline::new(n, timeline, None)
                } else {
                    ctx.hash_queue()
                        .and_then(|q| Pipeline::new(n, timeline, Some(q)))
                }
            } else {
                None
            };
        // Step hashes computed on this thread, timed when the run keeps a timeline.
        let mut inline_spans = Vec::new();
        let mut hash_here = |s: usize, step: &Step, outs: &[Arc<Tensor>]| {
            let start = recorder.as_ref().map(|_| Instant::now());
            let h = match hashed_one(step, outs) {
                Some(t) => step_hash(s as u32, &[t.as_ref()]),
                None => step_hash(s as u32, &hashed_outputs(step, outs)),
            };
            if let (Some(r), Some(start)) = (&recorder, start) {
                inline_spans.push((r.span(s, start), HashedOn::RunThread));
            }
            h
        };
        let (mut trace, steps_done, outputs_hash) = match pipeline {
            Some(mut pipe) => {
                runs.release = Some(pipe.release());
                self.run_steps(&mut values, ctx, &mut runs, &mut |s, step, outs| match step
                    .folded_hash
                {
                    Some(h) => pipe.known(s, h),
                    None if step.bytes < STEP_MIN_BYTES => pipe.known(s, hash_here(s, step, outs)),
                    None => match hashed_one(step, outs) {
                        Some(t) => pipe.submit_one(s, t.clone()),
                        None => pipe.submit(s, hashed_arcs(step, outs)),
                    },
                })?;
                let steps_done = Instant::now();
                // The pipeline's `finish` counts who still holds the run's trace.
                runs.release = None;
                // The graph outputs' hash (the output step's leaf) is taken here while
                // the hashing thread finishes the last steps, not after them. A fault
                // injected into the outputs (tests only) changes them later: hashed then.
                let outputs_hash = if runs.corrupt.is_none() {
                    self.outputs_hash(&values)
                } else {
                    None
                };
                let (trace, spans) = pipe.finish().ok_or_else(|| {
                    RuntimeError::Graph("the trace hashing thread stopped".into())
                })?;
                inline_spans.extend(spans);
                (trace, steps_done, outputs_hash)
            }
            None if opts.trace => {
                // Room for the output step's leaf too.
                let mut trace = Trace::with_capacity(n + 1);
                self.run_steps(&mut values, ctx, &mut runs, &mut |s, step, outs| {
                    trace.push(match step.folded_hash {
                        Some(h) => h,
                        None => hash_here(s, step, outs),
                    });
                })?;
                (trace, Instant::now(), None)
            }
            None => {
                self.run_steps(&mut values, ctx, &mut runs, &mut |_, _, _| {})?;
                (Trace::default(), Instant::now(), None)
            }
        };
        // Graph outputs are moved out of the run's values when nothing else holds them
        // (the hashing thread is done with them); an output named twice, or that is a
        // graph input or an initializer, is copied.
        let mut outputs = Vec::with_capacity(self.outputs.len());
        for (i, (name, id)) in self.outputs.iter().enumerate() {
            let again = self.outputs[i + 1..].iter().any(|(_, j)| j == id);
            let missing = || RuntimeError::Graph(format!("output `{name}` was not computed"));
            let t = if again {
                values[*id].as_ref().ok_or_else(missing)?.get().clone()
            } else {
                match values[*id].take().ok_or_else(missing)? {
                    Val::Shared(a) => Arc::try_unwrap(a).unwrap_or_else(|a| a.as_ref().clone()),
                    Val::Ref(t) => t.clone(),
                }
            };
            outputs.push((name.clone(), t));
        }
        if runs.corrupt.is_some() {
            if let Some((_, t)) = outputs.iter_mut().find(|(_, t)| !t.is_empty()) {
                flip_one(std::slice::from_mut(t));
            }
        }
        if opts.trace {
            // The output step: its leaf binds the result to the trace.
            let h = outputs_hash.unwrap_or_else(|| {
                let tensors: Vec<&Tensor> = outputs.iter().map(|(_, t)| t).collect();
                outputs_hash_of(&tensors)
            });
            trace.push(output_leaf(n as u64, &h));
        }
        let timeline = recorder.as_ref().map(|r| {
            let mut hashes = inline_spans;
            hashes.sort_by(|a, b| a.0.end_us.total_cmp(&b.0.end_us));
            Timeline {
                compute: runs.timeline.take().map(|(_, c)| c).unwrap_or_default(),
                hashes,
                steps_done_us: r.at(steps_done),
                trace_done_us: r.at(Instant::now()),
            }
        });
        Ok(RunOutput {
            outputs,
            trace,
            cost: self.cost,
            kept: runs.kept,
            timeline,
        })
    }
}

/// Bytes of outputs to hash from which a run uses the hashing thread at all: two
/// steps' worth at [`STEP_MIN_BYTES`]. Below, hardly a step would be handed over. The
/// 784-512-512-10 MLP at batch 1 (four 2 KiB steps) went from 46.1 to 40.9 µs traced
/// (35.5 µs untraced) when this fell from 16 KiB.
const PIPE_MIN_BYTES: u64 = 2 * STEP_MIN_BYTES;

/// Bytes from which a step's outputs go to the hashing thread: below, hashing them
/// here costs less than handing them over (about a microsecond while the thread is
/// awake). A tensor's encoding starts with its header, so blake3 meets the data a
/// few bytes into its first chunk and hashes the first chunks of a small tensor
/// nearly one at a time: 8 KiB takes about 4.5 µs, where a handoff takes under 1.
const STEP_MIN_BYTES: u64 = 2 << 10;

/// What one run of [`Plan::run_steps`] was asked for beyond the trace.
struct StepRun<'a> {
    /// Print each step's time to stderr.
    profile: bool,
    /// The run's clock, and the compute spans recorded on it, when it keeps a timeline.
    timeline: Option<(&'a Recorder, Vec<Span>)>,
    /// Steps whose outputs to keep.
    keep: &'a [usize],
    /// The kept outputs.
    kept: Vec<(usize, Vec<Tensor>)>,
    /// The first step at or after which to inject a fault (see
    /// [`RunOptions::corrupt_step`]); cleared once injected.
    corrupt: Option<usize>,
    /// Where the run frees intermediates whose outputs the hashing thread read, when it
    /// has one.
    release: Option<crate::hasher::Release>,
}

#[cfg(feature = "fault")]
fn corrupt_step(opts: &RunOptions) -> Option<usize> {
    opts.corrupt_step
}

#[cfg(not(feature = "fault"))]
fn corrupt_step(_: &RunOptions) -> Option<usize> {
    None
}

/// Flips the lowest bit of the first element of the first non-empty tensor; false
/// when every tensor is empty.
fn flip_one(outs: &mut [Tensor]) -> bool {
    let Some(t) = outs.iter_mut().find(|t| !t.is_empty()) else {
        return false;
    };
    let (shape, mut data) = std::mem::replace(t, Tensor::scalar(0u8)).into_parts();
    fn flip<T>(v: &mut [T], f: impl FnOnce(&mut T)) {
        if let Some(x) = v.first_mut() {
            f(x);
        }
    }
    match &mut data {
        TensorData::F32(v) => flip(v, |x| *x = f32::from_bits(x.to_bits() ^ 1)),
        TensorData::F64(v) => flip(v, |x| *x = f64::from_bits(x.to_bits() ^ 1)),
        TensorData::F16(v) => flip(v, |x| *x = half::f16::from_bits(x.to_bits() ^ 1)),
        TensorData::BF16(v) => flip(v, |x| *x = half::bf16::from_bits(x.to_bits() ^ 1)),
        TensorData::U8(v) => flip(v, |x| *x ^= 1),
        TensorData::I8(v) => flip(v, |x| *x ^= 1),
        TensorData::U16(v) => flip(v, |x| *x ^= 1),
        TensorData::I16(v) => flip(v, |x| *x ^= 1),
        TensorData::I32(v) => flip(v, |x| *x ^= 1),
        TensorData::I64(v) => flip(v, |x| *x ^= 1),
        TensorData::U32(v) => flip(v, |x| *x ^= 1),
        TensorData::U64(v) => flip(v, |x| *x ^= 1),
        TensorData::Bool(v) => flip(v, |x| *x = !*x),
        TensorData::Str(v) => flip(v, |x| x.push('!')),
        TensorData::F8E4M3FN(v) => flip(v, |x| {
            *x = deed_types::tensor::F8E4M3FN::from_bits(x.to_bits() ^ 1)
        }),
        TensorData::F8E4M3FNUZ(v) => flip(v, |x| {
            *x = deed_types::tensor::F8E4M3FNUZ::from_bits(x.to_bits() ^ 1)
        }),
        TensorData::F8E5M2(v) => flip(v, |x| {
            *x = deed_types::tensor::F8E5M2::from_bits(x.to_bits() ^ 1)
        }),
        TensorData::F8E5M2FNUZ(v) => flip(v, |x| {
            *x = deed_types::tensor::F8E5M2FNUZ::from_bits(x.to_bits() ^ 1)
        }),
        TensorData::U4(v) => flip(v, |x| {
            *x = deed_types::tensor::U4::from_bits(x.to_bits() ^ 1)
        }),
        TensorData::I4(v) => flip(v, |x| {
            *x = deed_types::tensor::I4::from_bits(x.to_bits() ^ 1)
        }),
        TensorData::F4E2M1(v) => flip(v, |x| {
            *x = deed_types::tensor::F4E2M1::from_bits(x.to_bits() ^ 1)
        }),
        TensorData::F8E8M0(v) => flip(v, |x| {
            *x = deed_types::tensor::F8E8M0::from_bits(x.to_bits() ^ 1)
        }),
        TensorData::U2(v) => flip(v, |x| {
            *x = deed_types::tensor::U2::from_bits(x.to_bits() ^ 1)
        }),
        TensorData::I2(v) => flip(v, |x| {
            *x = deed_types::tensor::I2::from_bits(x.to_bits() ^ 1)
        }),
    }
    // Same shape and length: cannot fail.
    match Tensor::new(shape, data) {
        Ok(flipped) => {
            *t = flipped;
            true
        }
        Err(_) => false,
    }
}

/// A value during a run: computed (shared with the hashing thread and the plan's
/// constants) or one of the caller's inputs, borrowed rather than copied.
#[derive(Clone)]
enum Val<'a> {
    Shared(Arc<Tensor>),
    Ref(&'a Tensor),
}

impl Val<'_> {
    fn get(&self) -> &Tensor {
        match self {
            Val::Shared(t) => t,
            Val::Ref(t) => t,
        }
    }
}

/// Logical CPUs this process may use (1 when unknown).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// What [`Plan::run_steps`] hands every step's outputs to.
type StepSink<'a> = dyn FnMut(usize, &Step, &[Arc<Tensor>]) + 'a;

/// The one output `step`'s hash covers, when it covers exactly one (most nodes): a
/// step handed over or hashed without a list to allocate.
fn hashed_one<'t>(step: &Step, outs: &'t [Arc<Tensor>]) -> Option<&'t Arc<Tensor>> {
    let mut named = step.outputs.iter().zip(outs).filter(|(id, _)| id.is_some());
    match (named.next(), named.next()) {
        (Some((_, t)), None) => Some(t),
        _ => None,
    }
}

/// [`hashed_outputs`], shared for the hashing thread.
fn hashed_arcs(step: &Step, outs: &[Arc<Tensor>]) -> Vec<Arc<Tensor>> {
    step.outputs
        .iter()
        .zip(outs)
        .filter(|(id, _)| id.is_some())
        .map(|(_, t)| t.clone())
        .collect()
}

/// The outputs of `step` that its step hash covers: those the node names.
fn hashed_outputs<'t>(step: &Step, outs: &'t [Arc<Tensor>]) -> Vec<&'t Tensor> {
    step.outputs
        .iter()
        .zip(outs)
        .filter(|(id, _)| id.is_some())
        .map(|(_, t)| t.as_ref())
        .collect()
}

impl Plan<'_> {
    /// Runs every step in canonical order, handing each step's outputs to `traced`
    /// before later steps may free them.
    fn run_steps(
        &self,
        values: &mut [Option<Val<'_>>],
        ctx: &Ctx,
        runs: &mut StepRun<'_>,
        traced: &mut StepSink<'_>,
    ) -> Result<(), RuntimeError> {
        let profile = runs.profile;
        for (s, (step, node)) in self.steps.iter().zip(&self.model.nodes).enumerate() {
            let t0 = (profile || runs.timeline.is_some()).then(Instant::now);
            let outs: Vec<Arc<Tensor>> = match &step.folded {
                Some(f) => f.clone(),
                None => {
                    let ins: Vec<Option<&Tensor>> = step
                        .inputs
                        .iter()
                        .map(|id| id.and_then(|id| values[id].as_ref().map(Val::get)))
                        .collect();
                    let node_err = |source: OpError| RuntimeError::Node {
                        node: node.name.clone(),
                        op_type: node.op_type.clone(),
                        source,
                    };
                    let mut outs = match &step.prepared {
                        Some(p) => node.op.run_prepared(&ins, ctx, p),
                        None => node.op.run(&ins, ctx),
                    }
                    .map_err(node_err)?;
                    check_outputs(&outs, &step.types).map_err(node_err)?;
                    // NaN bits differ between CPUs; every node's outputs are stored
                    // with the canonical NaN (see docs/canonical-semantics.md). The
                    // fast kernels of an operator that stores canonical NaNs only
                    // need no pass to fix them; the reference kernels always take it.
                    if ctx.reference() || !node.op.nans_canonical() {
                        outs.iter_mut().for_each(canonicalize);
                    } else {
                        debug_assert!(
                            !outs.iter().any(has_noncanonical_nan),
                            "{} ({}) stored a NaN other than the canonical one",
                            node.name,
                            node.op_type
                        );
                    }
                    if runs.corrupt.is_some_and(|c| c <= s) && flip_one(&mut outs) {
                        runs.corrupt = None;
                    }
                    outs.into_iter().map(Arc::new).collect()
                }
            };
            if runs.keep.contains(&s) {
                let kept = hashed_outputs(step, &outs).into_iter().cloned().collect();
                runs.kept.push((s, kept));
            }
            if let (Some((r, spans)), Some(t0)) = (&mut runs.timeline, t0) {
                if step.folded.is_none() {
                    spans.push(r.span(s, t0));
                }
            }
            let t1 = profile.then(Instant::now);
            traced(s, step, &outs);
            if let (Some(t0), Some(t1)) = (t0, t1) {
                eprintln!(
                    "step {s:4} {:<24} {:>9.1} us compute {:>8.1} us hash",
                    node.op_type,
                    (t1 - t0).as_secs_f64() * 1e6,
                    t1.elapsed().as_secs_f64() * 1e6
                );
            }
            for (id, t) in step.outputs.iter().zip(outs) {
                if let Some(id) = id {
                    values[*id] = Some(Val::Shared(t));
                }
            }
            for id in step.inputs.iter().flatten() {
                if self.last_use[*id] == s {
                    // A dead intermediate nothing else holds: its buffer serves a later
                    // output of this thread. (One the hashing thread still holds comes
                    // back from it.)
                    if let Some(Val::Shared(t)) = values[*id].take() {
                        if let Ok(t) = Arc::try_unwrap(t) {
                            let large = t.byte_size() as u64 >= STEP_MIN_BYTES;
                            match &runs.release {
                                // Large enough to have been hashed on the hashing
                                // thread: back to it first, to claim its cache lines
                                // (see the `hasher` module docs).
                                Some(r) if large => r.free(t.into_parts().1),
                                _ => crate::scratch::recycle(t.into_parts().1),
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Plan<'_> {
    /// The hash of the graph outputs as the run's values hold them, or `None` when
    /// one is missing (the run then reports it).
    fn outputs_hash(&self, values: &[Option<Val<'_>>]) -> Option<Hash> {
        let tensors: Option<Vec<&Tensor>> = self
            .outputs
            .iter()
            .map(|(_, id)| values.get(*id)?.as_ref().map(Val::get))
            .collect();
        Some(outputs_hash_of(&tensors?))
    }
}

/// Which step produced each input of the node at `step`, for building a referee's
/// inputs: `None` for absent inputs. For the output step (`step == num_steps()`)
/// these are the graph outputs, in order.
pub fn input_sources(model: &Model, step: usize) -> Option<Vec<Option<(String, Source)>>> {
    if step == model.nodes.len() {
        // The output step reads the graph outputs.
        return model
            .outputs
            .iter()
            .map(|o| model.source(&o.name).map(|s| Some((o.name.clone(), s))))
            .collect();
    }
    let node = model.nodes.get(step)?;
    Some(
        node.inputs
            .iter()
            .map(|n| {
                if n.is_empty() {
                    None
                } else {
                    model.source(n).map(|s| (n.clone(), s))
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_values_are_compared_bit_for_bit() {
        let f = |v: Vec<f32>| Tensor::from_vec(vec![v.len()], v).unwrap();
        assert!(same_bits(&f(vec![f32::NAN, 1.0]), &f(vec![f32::NAN, 1.0])));
        assert!(!same_bits(&f(vec![0.0]), &f(vec![-0.0])));
        assert!(!same_bits(
            &f(vec![f32::NAN]),
            &f(vec![f32::from_bits(0x7FC0_0001)])
        ));
        assert!(!same_bits(
            &f(vec![1.0, 2.0]),
            &Tensor::from_vec(vec![1, 2], vec![1.0f32, 2.0]).unwrap()
        ));
        assert!(!same_bits(&Tensor::scalar(1i32), &Tensor::scalar(1i64)));
    }
}
