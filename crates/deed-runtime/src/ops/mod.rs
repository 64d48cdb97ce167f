//! Operators: the [`Op`] trait every operator implements, and the registry that maps
//! `(domain, op_type)` to a builder.
//!
//! An operator is built once per graph node at load time from its attributes (so bad
//! or unsupported attributes are found before anything runs), then:
//! - [`Op::infer`] computes output dtypes and shapes from input dtypes and shapes (and
//!   from input *values* where the output shape depends on them and they are known
//!   when planning — shape tensors, constants);
//! - [`Op::cost`] meters the node in operation units from those types;
//! - [`Op::run`] computes the outputs. Its result is the canonical one: fast kernels
//!   called from `run` must produce exactly the bits of the scalar reference (see
//!   `docs/canonical-semantics.md`).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::OnceLock;

use deed_types::{DType, Tensor};

use crate::attrs::Attrs;
use crate::error::OpError;
use crate::limits::Limits;

pub mod binary;
pub mod cast;
pub mod col2im;
pub mod control;
pub mod conv;
pub mod core;
pub mod deform_conv;
pub mod elementwise;
pub mod flex;
pub mod grid_sample;
pub mod image_decoder;
pub mod index;
pub mod linalg;
pub mod llm;
pub mod math;
pub mod minifloat;
pub mod ml;
pub mod norm;
pub mod pool;
pub mod quant;
pub mod reduce;
pub mod resize;
pub mod rnn;
pub mod roi;
pub mod rotary;
pub mod select;
pub mod shape;
pub mod signal;
pub mod simd;
pub mod text;
pub mod training;
pub mod unary;
pub mod util;

pub use crate::ctx::{Ctx, KernelMode};

/// The dtype and shape of a value, known when planning.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TypeInfo {
    /// Element type.
    pub dtype: DType,
    /// Concrete dimensions.
    pub shape: Vec<usize>,
}

impl TypeInfo {
    /// Builds a type.
    pub fn new(dtype: DType, shape: Vec<usize>) -> TypeInfo {
        TypeInfo { dtype, shape }
    }
    /// The type of an existing tensor.
    pub fn of(t: &Tensor) -> TypeInfo {
        TypeInfo {
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
        }
    }
    /// Number of elements (saturating, for metering).
    pub fn numel(&self) -> u64 {
        self.shape
            .iter()
            .fold(1u64, |a, &d| a.saturating_mul(d as u64))
    }
    /// Bytes the value occupies (strings are estimated at 32 bytes an element).
    pub fn bytes(&self) -> u64 {
        let per = match self.dtype.size_of() {
            0 => 32,
            n => n as u64,
        };
        self.numel().saturating_mul(per)
    }
}

/// What [`Op::infer`] knows about one input.
#[derive(Debug, Clone, Copy)]
pub struct InferInput<'a> {
    /// Dtype and shape.
    pub ty: &'a TypeInfo,
    /// The value, when known while planning (constants, initializers, shape tensors).
    pub value: Option<&'a Tensor>,
}

/// Static facts about the node an operator is built for.
#[derive(Debug, Clone, Copy)]
pub struct NodeInfo<'a> {
    /// Node name (for messages).
    pub name: &'a str,
    /// Operator type.
    pub op_type: &'a str,
    /// Operator domain (`""` for default ONNX).
    pub domain: &'a str,
    /// Opset version in force for the operator's domain.
    pub opset: i64,
    /// Attributes.
    pub attrs: &'a Attrs,
    /// Number of input slots (including absent optional ones).
    pub num_inputs: usize,
    /// Number of outputs the node declares.
    pub num_outputs: usize,
}

/// What running a node needs, as [`Op::needs`] plans it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    /// Cost in operation units.
    pub cost: u64,
    /// Bytes of activations the node holds while it runs, beyond its inputs and
    /// outputs (a subgraph's intermediate values).
    pub working_bytes: u64,
}

/// One operator, built for one graph node.
pub trait Op: Send + Sync + Debug {
    /// Output dtypes and shapes. `inputs[i]` is `None` for an absent optional input.
    fn infer(&self, inputs: &[Option<InferInput<'_>>]) -> Result<Vec<TypeInfo>, OpError>;

    /// Cost in operation units. The default counts one unit per input and output
    /// element, which suits data movement and elementwise operators; compute-heavy
    /// operators override it (a multiply-add counts one unit).
    fn cost(&self, inputs: &[Option<&TypeInfo>], outputs: &[TypeInfo]) -> u64 {
        let i: u64 = inputs.iter().flatten().map(|t| t.numel()).sum();
        let o: u64 = outputs.iter().map(|t| t.numel()).sum();
        i.saturating_add(o).max(1)
    }

    /// [`Op::infer`] within the planner's [`Limits`]: an operator that plans a
    /// subgraph plans it within them. The default is [`Op::infer`].
    fn infer_within(
        &self,
        inputs: &[Option<InferInput<'_>>],
        _limits: &Limits,
    ) -> Result<Vec<TypeInfo>, OpError> {
        self.infer(inputs)
    }

    /// What the node needs beyond its inputs and outputs, for an operator whose needs
    /// depend on more than its input types: one that runs a subgraph costs what the
    /// subgraph's plan for those inputs costs, and needs that plan's activation memory
    /// while it runs. The default is [`Op::cost`] and no working memory.
    fn needs(
        &self,
        _known: &[Option<InferInput<'_>>],
        inputs: &[Option<&TypeInfo>],
        outputs: &[TypeInfo],
        _limits: &Limits,
    ) -> Result<Needs, OpError> {
        Ok(Needs {
            cost: self.cost(inputs, outputs),
            working_bytes: 0,
        })
    }

    /// Computes the outputs. `inputs[i]` is `None` for an absent optional input.
    fn run(&self, inputs: &[Option<&Tensor>], ctx: &Ctx) -> Result<Vec<Tensor>, OpError>;

    /// Work done once while planning from the inputs whose values are known then
    /// (initializers, constants), reused by every run of the plan — e.g. a constant
    /// weight matrix packed for the matrix-product kernel. `None` (the default) when
    /// there is nothing to prepare.
    fn prepare(&self, _inputs: &[Option<InferInput<'_>>]) -> Option<Prepared> {
        None
    }

    /// [`Op::run`] with what [`Op::prepare`] returned for the same known inputs. It
    /// must give exactly the bits of `run`; the default ignores `prepared`.
    fn run_prepared(
        &self,
        inputs: &[Option<&Tensor>],
        ctx: &Ctx,
        _prepared: &Prepared,
    ) -> Result<Vec<Tensor>, OpError> {
        self.run(inputs, ctx)
    }

    /// Whether every NaN this operator stores, in every output, on every kernel path
    /// and for every dtype, whatever NaNs its inputs hold, is already its dtype's
    /// canonical NaN. A plan running the fast kernels then skips its scan of the
    /// outputs for other NaNs (one more pass over every output); the reference
    /// kernels keep it, so that comparing the two paths on NaN payloads tests the
    /// claim. The default, `false`, is always correct.
    fn nans_canonical(&self) -> bool {
        false
    }
}

/// Helpers for the operators' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Ctx, InferInput, Op, TypeInfo};
    use crate::attrs::{Attr, Attrs};
    use crate::error::OpError;
    use deed_types::Tensor;

    /// A node's attributes from `(name, value)` pairs.
    pub(crate) fn attrs(list: &[(&str, Attr)]) -> Attrs {
        Attrs(
            list.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    /// [`Op::infer`] for one input of type `ty`, whose value is `value` when known.
    pub(crate) fn infer_one(
        op: &dyn Op,
        ty: &TypeInfo,
        value: Option<&Tensor>,
    ) -> Result<Vec<TypeInfo>, OpError> {
        op.infer(&[Some(InferInput { ty, value })])
    }

    /// Row-major strides of `shape`.
    pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
        (0..shape.len())
            .map(|d| shape[d + 1..].iter().product())
            .collect()
    }

    /// The shapes of the operands of a numpy-style matrix product for a test: A of
    /// rank `ra` (`[m, k]` after its batch dimensions, or `[k]` at rank 1) and B of
    /// rank `rb` (`[k, n]`, or `[k]`). The batch dimensions are the last of `batch`,
    /// each set to 1 on one side where `ones` says so (0 keeps both, 1 makes A's 1, 2
    /// makes B's 1), so that they broadcast in every way numpy allows.
    fn matmul_operands(
        (ra, rb): (usize, usize),
        (m, k, n): (usize, usize, usize),
        batch: &[usize],
        ones: &[u8],
    ) -> (Vec<usize>, Vec<usize>) {
        let lead = |r: usize, side: u8| -> Vec<usize> {
            let nb = r.saturating_sub(2).min(batch.len());
            batch[batch.len() - nb..]
                .iter()
                .zip(&ones[ones.len() - nb..])
                .map(|(&d, &o)| if o == side { 1 } else { d })
                .collect()
        };
        let a = if ra == 1 {
            vec![k]
        } else {
            [lead(ra, 1), vec![m, k]].concat()
        };
        let b = if rb == 1 {
            vec![k]
        } else {
            [lead(rb, 2), vec![k, n]].concat()
        };
        (a, b)
    }

    /// A matrix-product test case: the operand ranks `(ra, rb)` (1 to 4), the sizes
    /// `(m, k, n)` (`m` below `m_end`, `k` from 0 below `k_end`, `n` below 40) and the
    /// operand shapes [`matmul_operands`] makes of them, batch dimensions of 1 to 3
    /// broadcast every way numpy allows.
    #[allow(clippy::type_complexity)]
    pub(crate) fn matmul_shapes(
        m_end: usize,
        k_end: usize,
    ) -> impl proptest::strategy::Strategy<
        Value = (
            (usize, usize),
            (usize, usize, usize),
            (Vec<usize>, Vec<usize>),
        ),
    > {
        use proptest::prelude::*;
        (
            (1usize..5, 1usize..5),
            (1usize..m_end, 0usize..k_end, 1usize..40),
            prop::collection::vec(1usize..4, 2),
            prop::collection::vec(0u8..3, 2),
        )
            .prop_map(|(ranks, dims, batch, ones)| {
                (ranks, dims, matmul_operands(ranks, dims, &batch, &ones))
            })
    }

    /// numpy's batch broadcasting of a matrix product of operands shaped `a` and `b`,
    /// written out: the output's batch shape, and for each output batch (row-major)
    /// the index of the matrix of A and of B it multiplies.
    pub(crate) fn matmul_batches(a: &[usize], b: &[usize]) -> (Vec<usize>, Vec<(usize, usize)>) {
        let (ab, bb) = (
            &a[..a.len().saturating_sub(2)],
            &b[..b.len().saturating_sub(2)],
        );
        let nb = ab.len().max(bb.len());
        let pad = |x: &[usize]| [vec![1; nb - x.len()], x.to_vec()].concat();
        let (ab, bb) = (pad(ab), pad(bb));
        let out: Vec<usize> = ab.iter().zip(&bb).map(|(&x, &y)| x.max(y)).collect();
        let (sa, sb, so) = (strides(&ab), strides(&bb), strides(&out));
        let pairs = (0..out.iter().product::<usize>())
            .map(|bi| {
                (0..nb).fold((0, 0), |(ia, ib), d| {
                    let x = bi / so[d] % out[d];
                    (
                        ia + if ab[d] == 1 { 0 } else { x * sa[d] },
                        ib + if bb[d] == 1 { 0 } else { x * sb[d] },
                    )
                })
            })
            .collect();
        (out, pairs)
    }

    /// Plans `op` for the one input `x` (its value known when `known`), runs it, and
    /// checks that every output has the type planned for it.
    pub(crate) fn run_one(op: &dyn Op, x: &Tensor, known: bool) -> Result<Vec<Tensor>, OpError> {
        let planned = infer_one(op, &TypeInfo::of(x), known.then_some(x))?;
        let out = op.run(&[Some(x)], &Ctx::default())?;
        let got: Vec<TypeInfo> = out.iter().map(TypeInfo::of).collect();
        assert_eq!(got, planned[..got.len()], "outputs differ from the plan");
        Ok(out)
    }
}

/// What an operator prepared while planning (see [`Op::prepare`]); only the operator
/// that made it knows its type.
pub struct Prepared(pub Box<dyn std::any::Any + Send + Sync>);

impl Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepared")
    }
}

/// Builds an operator for a node.
pub type Builder = fn(&NodeInfo<'_>) -> Result<Box<dyn Op>, OpError>;

/// Maps `(domain, op_type)` to builders.
#[derive(Default)]
pub struct Registry {
    map: HashMap<(&'static str, &'static str), Builder>,
}

impl Registry {
    /// Registers a builder for an operator of the default ONNX domain.
    pub fn add(&mut self, op_type: &'static str, b: Builder) {
        self.map.insert(("", op_type), b);
    }
    /// Registers a builder for an operator of another domain (e.g. `ai.onnx.ml`).
    pub fn add_domain(&mut self, domain: &'static str, op_type: &'static str, b: Builder) {
        self.map.insert((domain, op_type), b);
    }
    /// Looks up a builder. `ai.onnx` is the default domain.
    pub fn get(&self, domain: &str, op_type: &str) -> Option<Builder> {
        let domain = if domain == "ai.onnx" { "" } else { domain };
        self.map.get(&(domain, op_type)).copied()
    }
    /// Every registered `(domain, op_type)`, sorted.
    pub fn names(&self) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = self.map.keys().copied().collect();
        v.sort();
        v
    }
}

/// The registry of every supported operator.
pub fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        let mut r = Registry::default();
        core::register(&mut r);
        elementwise::register(&mut r);
        shape::register(&mut r);
        index::register(&mut r);
        resize::register(&mut r);
        roi::register(&mut r);
        rotary::register(&mut r);
        rnn::register(&mut r);
        grid_sample::register(&mut r);
        col2im::register(&mut r);
        linalg::register(&mut r);
        llm::register(&mut r);
        signal::register(&mut r);
        control::register(&mut r);
        flex::register(&mut r);
        select::register(&mut r);
        text::register(&mut r);
        r.add("ImageDecoder", image_decoder::build);
        training::register(&mut r);
        conv::register(&mut r);
        deform_conv::register(&mut r);
        pool::register(&mut r);
        quant::register(&mut r);
        ml::register(&mut r);
        norm::register(&mut r);
        reduce::register(&mut r);
        r
    })
}
