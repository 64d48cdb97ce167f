//! Deed's canonical deterministic ONNX runtime.
//!
//! Two honest machines must compute the same bits for the same model and input, or
//! verification by re-execution cannot work. This crate defines those bits:
//!
//! - [`model`] loads and validates ONNX (parsed with `tract-onnx`'s protobuf types) and
//!   fixes the canonical node order;
//! - [`plan`] infers every shape, meters every node and enforces [`Limits`] before a run,
//!   then executes, producing outputs and a [`trace::Trace`];
//! - [`ops`] holds the operators: each has a scalar reference implementation (the
//!   specification, see `docs/canonical-semantics.md`) and, where speed matters, fast
//!   kernels proven bit-identical to it;
//! - [`trace`] commits to every step's outputs so that any single step can be revealed
//!   with a short proof and re-executed alone ([`Model::execute_node`]).
//!
//! It performs no I/O beyond reading the bytes it is given, and depends only on
//! `deed-types` among Deed's crates.

pub mod attrs;
pub mod ctx;
pub mod error;
mod hasher;
pub mod kernels;
pub mod limits;
pub mod model;
pub mod ops;
pub mod plan;
mod pool;
pub mod proto;
mod scratch;
mod tensor_bytes;
pub mod timeline;
pub mod trace;

pub use ctx::{Ctx, KernelMode};
pub use error::{OpError, RuntimeError, UnsupportedOp};
pub use limits::Limits;
pub use model::{Graph, Model, Source, ValueInfo, MAX_GRAPH_DEPTH};
pub use plan::{node_step_hash, Plan, RunOptions, RunOutput};
pub use timeline::{Timeline, TimelineSummary};
pub use trace::Trace;
