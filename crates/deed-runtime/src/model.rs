//! Loading: ONNX bytes → a validated [`Model`] whose nodes are in canonical order and
//! whose operators are built.
//!
//! Parsing uses `tract-onnx`'s generated protobuf types. Validation happens here, all
//! of it before anything runs: size limits, IR and opset versions, unique value names,
//! every node input defined, no cycles, every operator supported (all unsupported
//! operators are reported together), every initializer well formed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use deed_types::{DType, Hash, Tensor};
use prost::Message;
use tract_onnx::pb;

use crate::attrs::{Attr, Attrs};
use crate::error::{OpError, RuntimeError, UnsupportedOp};
use crate::limits::Limits;
use crate::ops::{registry, NodeInfo, Op};
use crate::proto::tensor_from_proto;

/// Newest default-domain opset the runtime accepts.
pub const MAX_OPSET: i64 = 28;
/// Newest `ai.onnx.ml` opset the runtime accepts.
pub const MAX_ML_OPSET: i64 = 5;
/// The `ai.onnx.ml` domain name.
pub const ML_DOMAIN: &str = "ai.onnx.ml";

/// A dimension of a declared input or output shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named free dimension (`batch`, `seq`).
    Named(String),
    /// An unnamed free dimension.
    Any,
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Named(s) => f.write_str(s),
            Dim::Any => f.write_str("?"),
        }
    }
}

/// A declared graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueInfo {
    /// Value name.
    pub name: String,
    /// Declared element type, if the model says.
    pub dtype: Option<DType>,
    /// Declared shape, if the model says.
    pub shape: Option<Vec<Dim>>,
}

impl ValueInfo {
    /// The declared shape as text, e.g. `[batch, 3, 224, 224]`.
    pub fn shape_text(&self) -> String {
        match &self.shape {
            None => "unknown".into(),
            Some(d) => format!(
                "[{}]",
                d.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// One graph node with its built operator.
#[derive(Debug)]
pub struct Node {
    /// Node name (`#index` when the model leaves it empty).
    pub name: String,
    /// Operator type.
    pub op_type: String,
    /// Operator domain.
    pub domain: String,
    /// Input value names; empty for an absent optional input.
    pub inputs: Vec<String>,
    /// Output value names; empty for an output the graph does not use.
    pub outputs: Vec<String>,
    /// Attributes.
    pub attrs: Attrs,
    pub(crate) op: Box<dyn Op>,
}

/// Where a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A graph input supplied by the caller.
    Input,
    /// An initializer (a weight) stored in the model.
    Initializer,
    /// Output `slot` of the node at canonical step `step`.
    Step {
        /// Canonical step index.
        step: usize,
        /// Output position.
        slot: usize,
    },
}

/// Deepest nesting of subgraphs (a loop body inside a branch inside…) a model may have.
pub const MAX_GRAPH_DEPTH: usize = 16;

/// A subgraph: an `If` branch, a `Loop` or `Scan` body or a `FlexAttention` modifier, validated as a model of its
/// own whose last inputs are `captures`, the values of the graphs around it that it
/// reads (its node takes them as inputs after its own, in this order).
#[derive(Debug)]
pub struct Graph {
    /// The subgraph; its inputs are its formal inputs, then `captures`.
    pub model: Model,
    /// Its declared (formal) inputs, in order.
    pub formal: Vec<String>,
    /// Outer values the subgraph reads, sorted by name.
    pub captures: Vec<String>,
}

impl PartialEq for Graph {
    fn eq(&self, other: &Graph) -> bool {
        std::ptr::eq(self, other)
    }
}

/// A loaded, validated model.
#[derive(Debug)]
pub struct Model {
    /// ONNX IR version.
    pub ir_version: i64,
    /// Opset version per domain (`""` is the default domain).
    pub opsets: BTreeMap<String, i64>,
    /// Inputs the caller must (or, for inputs with an initializer default, may) supply.
    pub inputs: Vec<ValueInfo>,
    /// Graph outputs.
    pub outputs: Vec<ValueInfo>,
    /// Nodes in canonical order: step `i` of a trace is `nodes[i]`.
    pub nodes: Vec<Node>,
    pub(crate) initializers: HashMap<String, Arc<Tensor>>,
    pub(crate) sources: HashMap<String, Source>,
    /// blake3 of the model bytes.
    pub hash: Hash,
    /// Size of the model file in bytes.
    pub byte_size: usize,
}

fn value_info(v: &pb::ValueInfoProto) -> ValueInfo {
    use pb::tensor_shape_proto::dimension::Value as DV;
    use pb::type_proto::Value as TV;
    let (dtype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TV::TensorType(t)) => (
            DType::from_onnx_code(t.elem_type),
            t.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(DV::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as usize),
                        Some(DV::DimParam(p)) if !p.is_empty() => Dim::Named(p.clone()),
                        _ => Dim::Any,
                    })
                    .collect()
            }),
        ),
        None => (None, None),
    };
    ValueInfo {
        name: v.name.clone(),
        dtype,
        shape,
    }
}

fn elem_code(v: &pb::ValueInfoProto) -> Option<i32> {
    v.r#type
        .as_ref()
        .and_then(|t| t.value.as_ref())
        .map(|pb::type_proto::Value::TensorType(t)| t.elem_type)
}

impl Model {
    /// Parses and validates an ONNX model.
    pub fn load(bytes: &[u8], limits: &Limits) -> Result<Model, RuntimeError> {
        if bytes.len() > limits.max_model_bytes {
            return Err(RuntimeError::ModelTooLarge {
                size: bytes.len(),
                limit: limits.max_model_bytes,
            });
        }
        let proto =
            pb::ModelProto::decode(bytes).map_err(|e| RuntimeError::Decode(e.to_string()))?;
        let mut m = Model::from_proto(&proto, limits)?;
        m.hash = Hash::of(bytes);
        m.byte_size = bytes.len();
        Ok(m)
    }

    /// Validates an already-parsed model.
    pub fn from_proto(proto: &pb::ModelProto, limits: &Limits) -> Result<Model, RuntimeError> {
        if proto.ir_version < 3 {
            return Err(RuntimeError::IrVersion(proto.ir_version));
        }
        let mut opsets = BTreeMap::new();
        for o in &proto.opset_import {
            let domain = if o.domain == "ai.onnx" {
                String::new()
            } else {
                o.domain.clone()
            };
            let max = match domain.as_str() {
                "" => Some(MAX_OPSET),
                ML_DOMAIN => Some(MAX_ML_OPSET),
                _ => None,
            };
            if let Some(max) = max {
                if o.version < 1 || o.version > max {
                    return Err(RuntimeError::Opset {
                        domain,
                        version: o.version,
                    });
                }
            }
            opsets.insert(domain, o.version);
        }
        // IR 3 models without an opset import mean opset 1 of the default domain.
        opsets.entry(String::new()).or_insert(1);
        let g = proto.graph.as_ref().ok_or(RuntimeError::MissingGraph)?;
        let (model, captures) =
            Model::from_graph(g, proto.ir_version, &opsets, limits, &HashSet::new(), 0)?;
        if let Some(name) = captures.first() {
            return Err(RuntimeError::Graph(format!(
                "graph output `{name}` is never produced"
            )));
        }
        Ok(model)
    }

    /// Validates one graph: the model's, or a subgraph (an `If` branch, a `Loop` or
    /// `Scan` body) whose nodes may also read the values named in `outer`, those of
    /// the graphs around it. Returns the graph as a model and the outer values it
    /// reads (sorted), which the model takes as inputs after its own.
    fn from_graph(
        g: &pb::GraphProto,
        ir_version: i64,
        opsets: &BTreeMap<String, i64>,
        limits: &Limits,
        outer: &HashSet<String>,
        depth: usize,
    ) -> Result<(Model, Vec<String>), RuntimeError> {
        if depth > MAX_GRAPH_DEPTH {
            return Err(RuntimeError::Limit {
                what: "subgraph nesting depth",
                value: depth as u64,
                limit: MAX_GRAPH_DEPTH as u64,
            });
        }
        if g.node.len() > limits.max_nodes {
            return Err(RuntimeError::Limit {
                what: "node count",
                value: g.node.len() as u64,
                limit: limits.max_nodes as u64,
            });
        }
        if !g.sparse_initializer.is_empty() {
            return Err(RuntimeError::Unsupported(vec![UnsupportedOp {
                op_type: "sparse_initializer".into(),
                domain: String::new(),
                node: g.name.clone(),
                reason: "sparse initializers are not supported".into(),
            }]));
        }

        let mut initializers = HashMap::new();
        for t in &g.initializer {
            let tensor = tensor_from_proto(t)?;
            check_tensor_limits(&t.name, &tensor, limits)?;
            if initializers
                .insert(t.name.clone(), Arc::new(tensor))
                .is_some()
            {
                return Err(RuntimeError::Graph(format!(
                    "initializer `{}` is defined twice",
                    t.name
                )));
            }
        }

        let mut sources: HashMap<String, Source> = HashMap::new();
        let mut inputs = Vec::new();
        for v in g.input.iter().chain(&g.output) {
            if v.r#type.as_ref().is_some_and(|t| t.value.is_none()) {
                return Err(RuntimeError::Unsupported(vec![UnsupportedOp {
                    op_type: "non-tensor value".into(),
                    domain: String::new(),
                    node: v.name.clone(),
                    reason: "sequence, map and optional graph inputs/outputs are not supported"
                        .into(),
                }]));
            }
        }
        for v in &g.input {
            if let Some(code) = elem_code(v) {
                if code != 0 && DType::from_onnx_code(code).is_none() {
                    return Err(RuntimeError::UnsupportedDType {
                        name: v.name.clone(),
                        code,
                    });
                }
            }
            if sources.insert(v.name.clone(), Source::Input).is_some() {
                return Err(RuntimeError::Graph(format!(
                    "graph input `{}` is declared twice",
                    v.name
                )));
            }
            inputs.push(value_info(v));
        }
        for name in initializers.keys() {
            // An initializer that is also a graph input is that input's default.
            sources.entry(name.clone()).or_insert(Source::Initializer);
        }

        // Canonical order: Kahn's algorithm, always taking the lowest-index ready node,
        // so a topologically sorted file keeps its own order.
        let n = g.node.len();
        let names: Vec<String> = g
            .node
            .iter()
            .enumerate()
            .map(|(i, nd)| {
                if nd.name.is_empty() {
                    format!("#{i}")
                } else {
                    nd.name.clone()
                }
            })
            .collect();
        let mut producer: HashMap<&str, usize> = HashMap::new();
        for (i, nd) in g.node.iter().enumerate() {
            for o in nd.output.iter().filter(|o| !o.is_empty()) {
                if sources.contains_key(o.as_str()) || producer.insert(o.as_str(), i).is_some() {
                    return Err(RuntimeError::Graph(format!(
                        "value `{o}` is produced more than once (node {})",
                        names[i]
                    )));
                }
            }
        }
        // Subgraphs, each validated with every value of this graph (and of the
        // graphs around it) in scope. A node takes the outer values its subgraphs
        // read as inputs after its own, so that the order, liveness and the referee
        // see them as what they are: the node's inputs.
        let mut visible: HashSet<String> = outer.clone();
        visible.extend(sources.keys().cloned());
        visible.extend(producer.keys().map(|k| (*k).to_owned()));
        let mut unsupported = Vec::new();
        let mut subgraphs: Vec<Vec<(String, Arc<Graph>)>> = vec![Vec::new(); n];
        let mut sub_failed = vec![false; n];
        let mut node_inputs: Vec<Vec<String>> = Vec::with_capacity(n);
        for (i, nd) in g.node.iter().enumerate() {
            let mut implicit = std::collections::BTreeSet::new();
            for a in &nd.attribute {
                let Some(sub) = a.g.as_ref() else { continue };
                match Model::from_graph(sub, ir_version, opsets, limits, &visible, depth + 1) {
                    Ok((model, captures)) => {
                        implicit.extend(captures.iter().cloned());
                        let formal = sub.input.iter().map(|v| v.name.clone()).collect();
                        let graph = Graph {
                            model,
                            formal,
                            captures,
                        };
                        subgraphs[i].push((a.name.clone(), Arc::new(graph)));
                    }
                    Err(RuntimeError::Unsupported(list)) => {
                        unsupported.extend(list);
                        sub_failed[i] = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            let mut inputs = nd.input.clone();
            inputs.extend(implicit);
            node_inputs.push(inputs);
        }
        let mut captures = std::collections::BTreeSet::new();
        let mut indegree = vec![0usize; n];
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, inputs) in node_inputs.iter().enumerate() {
            let mut deps = HashSet::new();
            for inp in inputs.iter().filter(|s| !s.is_empty()) {
                if let Some(&p) = producer.get(inp.as_str()) {
                    if deps.insert(p) {
                        indegree[i] += 1;
                        consumers[p].push(i);
                    }
                } else if sources.contains_key(inp.as_str()) {
                } else if outer.contains(inp) {
                    captures.insert(inp.clone());
                } else {
                    return Err(RuntimeError::UndefinedValue {
                        node: names[i].clone(),
                        value: inp.clone(),
                    });
                }
            }
        }
        // A subgraph may also pass an outer value straight through as an output.
        for o in &g.output {
            if !sources.contains_key(&o.name)
                && !producer.contains_key(o.name.as_str())
                && outer.contains(&o.name)
            {
                captures.insert(o.name.clone());
            }
        }
        for c in &captures {
            sources.insert(c.clone(), Source::Input);
        }
        let mut ready: std::collections::BTreeSet<usize> =
            (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &c in &consumers[i] {
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    ready.insert(c);
                }
            }
        }
        if order.len() != n {
            let cyc: Vec<String> = (0..n)
                .filter(|&i| indegree[i] > 0)
                .map(|i| names[i].clone())
                .collect();
            return Err(RuntimeError::Cycle(cyc));
        }

        let reg = registry();
        let mut nodes = Vec::with_capacity(n);
        for (step, &i) in order.iter().enumerate() {
            let nd = &g.node[i];
            let mut attrs = Attrs::from_proto(&nd.attribute)?;
            for (name, graph) in &subgraphs[i] {
                attrs.0.insert(name.clone(), Attr::Graph(graph.clone()));
            }
            let domain = if nd.domain == "ai.onnx" {
                ""
            } else {
                nd.domain.as_str()
            };
            let opset = opsets.get(domain).copied().unwrap_or(0);
            let unsup = |reason: String| UnsupportedOp {
                op_type: nd.op_type.clone(),
                domain: domain.to_owned(),
                node: names[i].clone(),
                reason,
            };
            let op = match reg.get(domain, &nd.op_type) {
                // Reported by the subgraph: its node cannot be built without it.
                _ if sub_failed[i] => None,
                None => {
                    unsupported.push(unsup("operator not implemented".into()));
                    None
                }
                Some(build) => {
                    let info = NodeInfo {
                        name: &names[i],
                        op_type: &nd.op_type,
                        domain,
                        opset,
                        attrs: &attrs,
                        num_inputs: nd.input.len(),
                        num_outputs: nd.output.len(),
                    };
                    match build(&info) {
                        Ok(op) => Some(op),
                        Err(OpError::Unsupported { feature }) => {
                            unsupported.push(unsup(feature));
                            None
                        }
                        Err(e) => {
                            return Err(RuntimeError::Node {
                                node: names[i].clone(),
                                op_type: nd.op_type.clone(),
                                source: e,
                            })
                        }
                    }
                }
            };
            for (slot, o) in nd.output.iter().enumerate() {
                if !o.is_empty() {
                    sources.insert(o.clone(), Source::Step { step, slot });
                }
            }
            if let Some(op) = op {
                nodes.push(Node {
                    name: names[i].clone(),
                    op_type: nd.op_type.clone(),
                    domain: domain.to_owned(),
                    inputs: node_inputs[i].clone(),
                    outputs: nd.output.clone(),
                    attrs,
                    op,
                });
            }
        }
        if !unsupported.is_empty() {
            return Err(RuntimeError::Unsupported(unsupported));
        }
        let outputs: Vec<ValueInfo> = g.output.iter().map(value_info).collect();
        for o in &outputs {
            if !sources.contains_key(&o.name) {
                return Err(RuntimeError::Graph(format!(
                    "graph output `{}` is never produced",
                    o.name
                )));
            }
        }
        // Inputs with an initializer default are optional; list required ones first.
        inputs.sort_by_key(|v| initializers.contains_key(&v.name));
        let captures: Vec<String> = captures.into_iter().collect();
        inputs.extend(captures.iter().map(|name| ValueInfo {
            name: name.clone(),
            dtype: None,
            shape: None,
        }));
        let model = Model {
            ir_version,
            opsets: opsets.clone(),
            inputs,
            outputs,
            nodes,
            initializers,
            sources,
            hash: Hash::ZERO,
            byte_size: 0,
        };
        Ok((model, captures))
    }

    /// Number of computed steps (nodes). A trace has one more leaf, the output step
    /// ([`Model::trace_len`]).
    pub fn num_steps(&self) -> usize {
        self.nodes.len()
    }

    /// Number of leaves in a trace of this model: one per node, then the output step
    /// that binds the graph outputs (`crate::trace` module docs).
    pub fn trace_len(&self) -> usize {
        self.nodes.len() + 1
    }

    /// Inputs the caller must supply (those without an initializer default).
    pub fn required_inputs(&self) -> impl Iterator<Item = &ValueInfo> {
        self.inputs
            .iter()
            .filter(|v| !self.initializers.contains_key(&v.name))
    }

    /// Where a named value comes from.
    pub fn source(&self, name: &str) -> Option<Source> {
        self.sources.get(name).copied()
    }

    /// An initializer (weight) by name.
    pub fn initializer(&self, name: &str) -> Option<&Tensor> {
        self.initializers.get(name).map(|t| t.as_ref())
    }

    /// Distinct operator types used, sorted.
    pub fn op_types(&self) -> Vec<String> {
        let mut v: Vec<String> = self.nodes.iter().map(|n| n.op_type.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

pub(crate) fn check_tensor_limits(
    name: &str,
    t: &Tensor,
    limits: &Limits,
) -> Result<(), RuntimeError> {
    if t.rank() > limits.max_rank {
        return Err(RuntimeError::Limit {
            what: "tensor rank",
            value: t.rank() as u64,
            limit: limits.max_rank as u64,
        });
    }
    let _ = name;
    if t.len() as u64 > limits.max_tensor_elements {
        return Err(RuntimeError::Limit {
            what: "tensor elements",
            value: t.len() as u64,
            limit: limits.max_tensor_elements,
        });
    }
    Ok(())
}
