//! Typed errors of the runtime. Nothing the runtime is given — model bytes, inputs,
//! budgets — can make it panic; every refusal is one of these.

use deed_types::{DType, TensorError};

/// An operator the runtime cannot run, named so the user can act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedOp {
    /// Operator type, e.g. `Conv`.
    pub op_type: String,
    /// Operator domain (empty for the default ONNX domain).
    pub domain: String,
    /// The graph node's name (or `#index` when the node is unnamed).
    pub node: String,
    /// Why: unknown operator, or an attribute value or dtype the runtime does not cover.
    pub reason: String,
}

impl std::fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dom = if self.domain.is_empty() || self.domain == "ai.onnx" {
            String::new()
        } else {
            format!("{}.", self.domain)
        };
        write!(
            f,
            "{dom}{} (node {}): {}",
            self.op_type, self.node, self.reason
        )
    }
}

/// An error raised by one operator, without the node context (see
/// [`RuntimeError::Node`], which adds it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// A required attribute is absent.
    #[error("missing attribute `{name}`")]
    MissingAttribute {
        /// Attribute name.
        name: String,
    },
    /// An attribute has the wrong type or an invalid value.
    #[error("attribute `{name}`: {reason}")]
    BadAttribute {
        /// Attribute name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The node has too few or too many inputs.
    #[error("expected {min}..={max} inputs, got {actual}")]
    InputCount {
        /// Fewest inputs accepted.
        min: usize,
        /// Most inputs accepted.
        max: usize,
        /// Inputs given.
        actual: usize,
    },
    /// A required input is absent.
    #[error("required input {index} is missing")]
    MissingInput {
        /// Input position.
        index: usize,
    },
    /// An input's dtype is not accepted by this operator.
    #[error("input {index} has dtype {dtype}, which this operator does not accept")]
    DType {
        /// Input position.
        index: usize,
        /// The dtype given.
        dtype: DType,
    },
    /// Two inputs that must share a dtype do not.
    #[error("dtype mismatch: expected {expected}, got {actual}")]
    DTypeMismatch {
        /// Expected dtype.
        expected: DType,
        /// Actual dtype.
        actual: DType,
    },
    /// Input shapes are incompatible with each other or with the attributes.
    #[error("shape error: {detail}")]
    Shape {
        /// What does not fit, with the shapes involved.
        detail: String,
    },
    /// The output shape depends on the value of an input that is not known when
    /// planning (it is computed from data, not from shapes).
    #[error(
        "output shape depends on the value of input {index}, which is not known before running"
    )]
    ValueNeeded {
        /// Input position.
        index: usize,
    },
    /// Planning or running a subgraph (an `If` branch, a loop body) failed.
    #[error("subgraph `{graph}`: {detail}")]
    Subgraph {
        /// The attribute holding the subgraph (`then_branch`, `body`…).
        graph: String,
        /// What failed, as the subgraph's error says it.
        detail: String,
    },
    /// A feature of this operator (an attribute value, a mode) that the runtime does
    /// not implement.
    #[error("unsupported: {feature}")]
    Unsupported {
        /// What is not supported.
        feature: String,
    },
    /// Input values are invalid for the operator (e.g. an index out of range).
    #[error("invalid input value: {detail}")]
    Value {
        /// What is invalid.
        detail: String,
    },
    /// A tensor could not be built.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

impl OpError {
    /// Shorthand for [`OpError::Shape`].
    pub fn shape(detail: impl Into<String>) -> OpError {
        OpError::Shape {
            detail: detail.into(),
        }
    }
    /// Shorthand for [`OpError::Value`].
    pub fn value(detail: impl Into<String>) -> OpError {
        OpError::Value {
            detail: detail.into(),
        }
    }
    /// Shorthand for [`OpError::Unsupported`].
    pub fn unsupported(feature: impl Into<String>) -> OpError {
        OpError::Unsupported {
            feature: feature.into(),
        }
    }
    /// Shorthand for [`OpError::BadAttribute`].
    pub fn bad_attr(name: &str, reason: impl Into<String>) -> OpError {
        OpError::BadAttribute {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Everything that can go wrong loading, planning or running a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The bytes are not a valid ONNX protobuf.
    #[error("malformed ONNX model: {0}")]
    Decode(String),
    /// The bytes are not a valid serialized ONNX `TensorProto` (a `.pb` tensor file).
    #[error("malformed ONNX TensorProto: {0}")]
    DecodeTensor(String),
    /// The model is larger than the configured limit.
    #[error("model is {size} bytes, above the limit of {limit}")]
    ModelTooLarge {
        /// Model size in bytes.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The model has no graph.
    #[error("model has no graph")]
    MissingGraph,
    /// The IR version is outside what the runtime reads.
    #[error("unsupported ONNX IR version {0} (need 3 or newer)")]
    IrVersion(i64),
    /// An opset the runtime does not implement.
    #[error("unsupported opset {domain:?} version {version}")]
    Opset {
        /// Domain.
        domain: String,
        /// Version.
        version: i64,
    },
    /// One or more operators are not supported; all of them are listed.
    #[error("{} unsupported operator(s): {}", .0.len(), .0.iter().map(|u| u.to_string()).collect::<Vec<_>>().join("; "))]
    Unsupported(Vec<UnsupportedOp>),
    /// An initializer or constant tensor is malformed.
    #[error("tensor `{name}`: {reason}")]
    BadTensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor uses a dtype the runtime does not support.
    #[error("tensor `{name}` has unsupported dtype code {code}")]
    UnsupportedDType {
        /// Tensor name.
        name: String,
        /// ONNX dtype code.
        code: i32,
    },
    /// The graph is not well formed (duplicate names, undefined values, cycles …).
    #[error("malformed graph: {0}")]
    Graph(String),
    /// A node reads a value that nothing produces.
    #[error("node {node} reads `{value}`, which is neither a graph input, an initializer nor an earlier node's output")]
    UndefinedValue {
        /// Node name.
        node: String,
        /// Missing value name.
        value: String,
    },
    /// The graph has a cycle through these nodes.
    #[error("graph has a cycle through node(s): {}", .0.join(", "))]
    Cycle(Vec<String>),
    /// A required model input was not given.
    #[error("missing input `{0}`")]
    MissingInput(String),
    /// An input was given that the model does not have.
    #[error("unknown input `{name}`; the model's inputs are: {}", .expected.join(", "))]
    UnknownInput {
        /// The name given.
        name: String,
        /// The model's input names.
        expected: Vec<String>,
    },
    /// An input has the wrong dtype.
    #[error("input `{name}` must be {expected}, got {actual}")]
    InputDType {
        /// Input name.
        name: String,
        /// Declared dtype.
        expected: DType,
        /// Given dtype.
        actual: DType,
    },
    /// An input has the wrong shape.
    #[error("input `{name}` must have shape {expected}, got {actual:?}")]
    InputShape {
        /// Input name.
        name: String,
        /// Declared shape (`?` for free dimensions).
        expected: String,
        /// Given shape.
        actual: Vec<usize>,
    },
    /// An operator failed (planning or running), with the node it belongs to.
    #[error("node {node} ({op_type}): {source}")]
    Node {
        /// Node name.
        node: String,
        /// Operator type.
        op_type: String,
        /// The operator's error.
        #[source]
        source: OpError,
    },
    /// The run would cost more than the budget allows; refused before running.
    #[error("run costs {cost} units, above the budget of {budget}")]
    Budget {
        /// Planned cost.
        cost: u64,
        /// Budget given.
        budget: u64,
    },
    /// A configured limit would be exceeded; refused before running.
    #[error("{what} of {value} exceeds the limit of {limit}")]
    Limit {
        /// Which limit.
        what: &'static str,
        /// The planned value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A step index beyond the model's node count.
    #[error("step {step} is out of range: the model has {len} steps")]
    StepOutOfRange {
        /// Requested step.
        step: usize,
        /// Number of steps.
        len: usize,
    },
    /// A tensor could not be built.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

impl RuntimeError {
    /// True when the error means "the runtime does not implement this" rather than
    /// "the model or input is wrong".
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            RuntimeError::Unsupported(_)
                | RuntimeError::UnsupportedDType { .. }
                | RuntimeError::Opset { .. }
        ) || matches!(
            self,
            RuntimeError::Node {
                source: OpError::Unsupported { .. },
                ..
            }
        )
    }
}
