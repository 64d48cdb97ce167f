//! Hostile models never crash the runtime.
//!
//! Arbitrary bytes, byte-level mutations of valid models and structural edits of their
//! graphs (rewired edges and cycles, missing initializers, absurd dimensions, unknown
//! operators and dtypes) go through `Model::load`, and every model that loads goes on
//! through planning, execution and single-node re-execution. Each call must return
//! `Ok` or a typed `RuntimeError`; a panic fails the property.

use deed_runtime::model::Dim;
use deed_runtime::{Limits, Model, RunOptions, RuntimeError};
use deed_types::{DType, Tensor};
use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message;
use tract_onnx::pb;

mod common;
use common::{attr_float, attr_int, attr_ints, attr_tensor, model, node, value, FLOAT};

// ---------------------------------------------------------------------------------------
// Building valid models from the protobuf types.

const INT64: i32 = 7;

fn floats(name: &str, dims: &[i64], n: usize) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        float_data: (0..n).map(|i| (i as f32 * 0.37).sin()).collect(),
        ..Default::default()
    }
}

/// The same kind of tensor in `raw_data` form, as most exporters write weights.
fn raw_floats(name: &str, dims: &[i64], n: usize) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        raw_data: (0..n)
            .flat_map(|i| (i as f32 * 0.11 - 0.5).to_le_bytes())
            .collect(),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: INT64,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

/// A 4-8-3 MLP: Gemm, Relu, Gemm (the second with `transB`).
fn mlp() -> pb::ModelProto {
    model(pb::GraphProto {
        name: "mlp".into(),
        node: vec![
            node("fc1", "Gemm", &["x", "w1", "b1"], &["h1"], vec![]),
            node("act", "Relu", &["h1"], &["a1"], vec![]),
            node(
                "fc2",
                "Gemm",
                &["a1", "w2", "b2"],
                &["y"],
                vec![attr_int("transB", 1), attr_float("alpha", 0.5)],
            ),
        ],
        initializer: vec![
            raw_floats("w1", &[4, 8], 32),
            floats("b1", &[8], 8),
            raw_floats("w2", &[3, 8], 24),
            floats("b2", &[3], 3),
        ],
        input: vec![value("x", FLOAT, &[Err("batch"), Ok(4)])],
        output: vec![value("y", FLOAT, &[Err("batch"), Ok(3)])],
        ..Default::default()
    })
}

/// Graph plumbing: constants, identities and an input with an initializer default.
fn plumbing() -> pb::ModelProto {
    model(pb::GraphProto {
        name: "plumbing".into(),
        node: vec![
            node(
                "c",
                "Constant",
                &[],
                &["c"],
                vec![attr_tensor("value", ints("", &[1, 2, 3]))],
            ),
            node("id_x", "Identity", &["x"], &["y"], vec![]),
            node("id_c", "Identity", &["c"], &["z"], vec![]),
            node("id_y", "Identity", &["y"], &["y2"], vec![]),
            node("id_bias", "Identity", &["bias"], &["b"], vec![]),
            node(
                "k",
                "Constant",
                &[],
                &["k"],
                vec![attr_ints("value_ints", &[4, -5])],
            ),
        ],
        initializer: vec![floats("bias", &[2], 2)],
        input: vec![
            value("x", FLOAT, &[Ok(2), Ok(3)]),
            value("bias", FLOAT, &[Ok(2)]),
        ],
        output: vec![
            value("y2", FLOAT, &[Ok(2), Ok(3)]),
            value("z", INT64, &[Ok(3)]),
            value("b", FLOAT, &[Ok(2)]),
            value("k", INT64, &[Ok(2)]),
        ],
        ..Default::default()
    })
}

/// A shape-manipulating attention-like block: Reshape, Transpose, MatMul, Softmax.
fn reshaping() -> pb::ModelProto {
    model(pb::GraphProto {
        name: "reshaping".into(),
        node: vec![
            node("r", "Reshape", &["x", "shape"], &["r"], vec![]),
            node(
                "t",
                "Transpose",
                &["r"],
                &["t"],
                vec![attr_ints("perm", &[1, 0])],
            ),
            node("m", "MatMul", &["t", "w"], &["m"], vec![]),
            node("s", "Softmax", &["m"], &["y"], vec![attr_int("axis", -1)]),
        ],
        initializer: vec![ints("shape", &[2, 3]), floats("w", &[2, 2], 4)],
        input: vec![value("x", FLOAT, &[Ok(1), Ok(6)])],
        output: vec![value("y", FLOAT, &[Ok(3), Ok(2)])],
        ..Default::default()
    })
}

fn seeds() -> Vec<pb::ModelProto> {
    vec![mlp(), plumbing(), reshaping()]
}

// ---------------------------------------------------------------------------------------
// Running whatever loads.

/// Tight limits, so that a mutated dimension is refused rather than allocated.
// Limits added later keep their defaults here.
#[allow(clippy::needless_update)]
fn limits() -> Limits {
    Limits {
        max_model_bytes: 1 << 20,
        max_nodes: 64,
        max_tensor_elements: 1 << 14,
        max_tensor_bytes: 1 << 17,
        max_activation_bytes: 1 << 20,
        max_rank: 8,
        ..Limits::default()
    }
}

fn typed(e: &RuntimeError) -> Result<(), TestCaseError> {
    prop_assert!(
        !e.to_string().is_empty(),
        "error without a message: {:?}",
        e
    );
    Ok(())
}

/// Inputs that match the declared types, free dimensions set to 1.
fn conforming_inputs(m: &Model) -> Option<Vec<(String, Tensor)>> {
    m.required_inputs()
        .map(|v| {
            let shape: Vec<usize> = match &v.shape {
                Some(dims) => dims
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => *n,
                        Dim::Named(_) | Dim::Any => 1,
                    })
                    .collect(),
                None => vec![1],
            };
            let n = deed_types::tensor::numel(&shape)?;
            if n > 1 << 12 {
                return None;
            }
            let t = Tensor::zeros(v.dtype.unwrap_or(DType::F32), shape).ok()?;
            Some((v.name.clone(), t))
        })
        .collect()
}

/// Plans, runs (twice, to check the trace root is reproducible) and re-executes every
/// node alone on placeholder inputs. Nothing may panic.
fn exercise(m: &Model, inputs: &[(String, Tensor)]) -> Result<(), TestCaseError> {
    let lim = limits();
    if let Err(e) = m.plan(inputs, &lim) {
        return typed(&e);
    }
    let opts = RunOptions {
        limits: lim,
        threads: 1,
        budget: Some(1 << 32),
        ..RunOptions::default()
    };
    match m.run(inputs, &opts) {
        Err(e) => typed(&e)?,
        Ok(out) => {
            prop_assert_eq!(out.outputs.len(), m.outputs.len());
            match m.run(inputs, &opts) {
                Ok(again) => prop_assert_eq!(again.trace.root(), out.trace.root()),
                Err(e) => prop_assert!(false, "second identical run failed: {}", e),
            }
        }
    }
    for (step, n) in m.nodes.iter().enumerate() {
        let none: Vec<Option<Tensor>> = vec![None; n.inputs.len()];
        if let Err(e) = m.execute_node(step, &none) {
            typed(&e)?;
        }
        let zeros: Vec<Option<Tensor>> = (0..n.inputs.len())
            .map(|_| Tensor::zeros(DType::F32, vec![2, 2]).ok())
            .collect();
        if let Err(e) = m.execute_node(step, &zeros) {
            typed(&e)?;
        }
    }
    if let Err(e) = m.execute_node(m.nodes.len(), &[]) {
        typed(&e)?;
    }
    Ok(())
}

fn load_and_exercise(bytes: &[u8]) -> Result<(), TestCaseError> {
    match Model::load(bytes, &limits()) {
        Err(e) => typed(&e),
        Ok(m) => match conforming_inputs(&m) {
            Some(inputs) => exercise(&m, &inputs),
            None => Ok(()),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Mutations.

fn pick(i: &Index, len: usize) -> Option<usize> {
    (len > 0).then(|| i.index(len))
}

#[derive(Debug, Clone)]
enum ByteEdit {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Set(i, b)),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(i, v)| ByteEdit::Insert(i, v)),
        1 => (any::<Index>(), 1usize..16).prop_map(|(i, n)| ByteEdit::Delete(i, n)),
        1 => any::<Index>().prop_map(ByteEdit::Truncate),
    ]
}

fn apply_bytes(b: &mut Vec<u8>, e: &ByteEdit) {
    match e {
        ByteEdit::Flip(i, bit) => {
            if let Some(p) = pick(i, b.len()) {
                b[p] ^= 1 << bit;
            }
        }
        ByteEdit::Set(i, v) => {
            if let Some(p) = pick(i, b.len()) {
                b[p] = *v;
            }
        }
        ByteEdit::Insert(i, v) => {
            let p = pick(i, b.len() + 1).unwrap_or(0);
            b.splice(p..p, v.iter().copied());
        }
        ByteEdit::Delete(i, n) => {
            if let Some(p) = pick(i, b.len()) {
                let end = (p + n).min(b.len());
                b.drain(p..end);
            }
        }
        ByteEdit::Truncate(i) => {
            let p = pick(i, b.len() + 1).unwrap_or(0);
            b.truncate(p);
        }
    }
}

#[derive(Debug, Clone)]
enum GraphEdit {
    /// Point a node input at any value name (possibly its own output: a cycle).
    Rewire(Index, Index, Index),
    /// Rename a node output to any value name (possibly a duplicate).
    RenameOutput(Index, Index, Index),
    SwapNodes(Index, Index),
    DropNode(Index),
    DuplicateNode(Index),
    DropInitializer(Index),
    DropInput(Index),
    DropOutput(Index),
    InitDims(Index, Vec<i64>),
    InitDType(Index, i32),
    InitClearData(Index),
    InputDim(Index, Index, i64),
    InputDType(Index, i32),
    OpType(Index, &'static str),
    AttrInt(Index, &'static str, i64),
    AddInput(Index),
    Opset(i64),
    IrVersion(i64),
    NoGraph,
}

const OP_TYPES: &[&str] = &[
    "Gemm",
    "Relu",
    "Identity",
    "Constant",
    "MatMul",
    "Softmax",
    "Reshape",
    "Transpose",
    "Add",
    "Conv",
    "Loop",
    "If",
    "NoSuchOp",
    "",
];
const ATTR_NAMES: &[&str] = &["transA", "transB", "axis", "perm", "alpha", "value", "to"];

fn interesting_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => -2i64..8,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => Just(1i64 << 40),
        1 => Just(1i64 << 31),
        1 => any::<i64>(),
    ]
}

fn graph_edit() -> impl Strategy<Value = GraphEdit> {
    let idx = any::<Index>;
    prop_oneof![
        3 => (idx(), idx(), idx()).prop_map(|(a, b, c)| GraphEdit::Rewire(a, b, c)),
        1 => (idx(), idx(), idx()).prop_map(|(a, b, c)| GraphEdit::RenameOutput(a, b, c)),
        1 => (idx(), idx()).prop_map(|(a, b)| GraphEdit::SwapNodes(a, b)),
        1 => idx().prop_map(GraphEdit::DropNode),
        1 => idx().prop_map(GraphEdit::DuplicateNode),
        2 => idx().prop_map(GraphEdit::DropInitializer),
        1 => idx().prop_map(GraphEdit::DropInput),
        1 => idx().prop_map(GraphEdit::DropOutput),
        3 => (idx(), prop::collection::vec(interesting_i64(), 0..5))
            .prop_map(|(a, d)| GraphEdit::InitDims(a, d)),
        1 => (idx(), -1i32..20).prop_map(|(a, t)| GraphEdit::InitDType(a, t)),
        1 => idx().prop_map(GraphEdit::InitClearData),
        2 => (idx(), idx(), interesting_i64()).prop_map(|(a, b, v)| GraphEdit::InputDim(a, b, v)),
        1 => (idx(), -1i32..20).prop_map(|(a, t)| GraphEdit::InputDType(a, t)),
        2 => (idx(), prop::sample::select(OP_TYPES)).prop_map(|(a, o)| GraphEdit::OpType(a, o)),
        2 => (idx(), prop::sample::select(ATTR_NAMES), interesting_i64())
            .prop_map(|(a, n, v)| GraphEdit::AttrInt(a, n, v)),
        1 => idx().prop_map(GraphEdit::AddInput),
        1 => interesting_i64().prop_map(GraphEdit::Opset),
        1 => interesting_i64().prop_map(GraphEdit::IrVersion),
        1 => Just(GraphEdit::NoGraph),
    ]
}

fn value_names(g: &pb::GraphProto) -> Vec<String> {
    let mut v: Vec<String> = g.input.iter().map(|i| i.name.clone()).collect();
    v.extend(g.initializer.iter().map(|t| t.name.clone()));
    v.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
    v.push(String::new());
    v.push("undefined".into());
    v
}

fn set_input_dim(v: &mut pb::ValueInfoProto, d: &Index, value: i64) {
    use pb::tensor_shape_proto::dimension::Value;
    if let Some(pb::type_proto::Value::TensorType(t)) =
        v.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        if let Some(s) = t.shape.as_mut() {
            if let Some(p) = pick(d, s.dim.len()) {
                s.dim[p].value = Some(Value::DimValue(value));
            }
        }
    }
}

fn set_input_dtype(v: &mut pb::ValueInfoProto, code: i32) {
    if let Some(pb::type_proto::Value::TensorType(t)) =
        v.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = code;
    }
}

fn apply_graph(m: &mut pb::ModelProto, e: &GraphEdit) {
    match e {
        GraphEdit::Opset(v) => {
            if let Some(o) = m.opset_import.first_mut() {
                o.version = *v;
            }
            return;
        }
        GraphEdit::IrVersion(v) => {
            m.ir_version = *v;
            return;
        }
        GraphEdit::NoGraph => {
            m.graph = None;
            return;
        }
        _ => {}
    }
    let Some(g) = m.graph.as_mut() else { return };
    let names = value_names(g);
    match e {
        GraphEdit::Rewire(n, s, to) => {
            if let Some(n) = pick(n, g.node.len()) {
                let nd = &mut g.node[n];
                let name = names[to.index(names.len())].clone();
                match pick(s, nd.input.len()) {
                    Some(s) => nd.input[s] = name,
                    None => nd.input.push(name),
                }
            }
        }
        GraphEdit::RenameOutput(n, s, to) => {
            if let Some(n) = pick(n, g.node.len()) {
                let nd = &mut g.node[n];
                if let Some(s) = pick(s, nd.output.len()) {
                    nd.output[s] = names[to.index(names.len())].clone();
                }
            }
        }
        GraphEdit::SwapNodes(a, b) => {
            if let (Some(a), Some(b)) = (pick(a, g.node.len()), pick(b, g.node.len())) {
                g.node.swap(a, b);
            }
        }
        GraphEdit::DropNode(n) => {
            if let Some(n) = pick(n, g.node.len()) {
                g.node.remove(n);
            }
        }
        GraphEdit::DuplicateNode(n) => {
            if let Some(n) = pick(n, g.node.len()) {
                let copy = g.node[n].clone();
                g.node.push(copy);
            }
        }
        GraphEdit::DropInitializer(i) => {
            if let Some(i) = pick(i, g.initializer.len()) {
                g.initializer.remove(i);
            }
        }
        GraphEdit::DropInput(i) => {
            if let Some(i) = pick(i, g.input.len()) {
                g.input.remove(i);
            }
        }
        GraphEdit::DropOutput(i) => {
            if let Some(i) = pick(i, g.output.len()) {
                g.output.remove(i);
            }
        }
        GraphEdit::InitDims(i, dims) => {
            if let Some(i) = pick(i, g.initializer.len()) {
                g.initializer[i].dims = dims.clone();
            }
        }
        GraphEdit::InitDType(i, code) => {
            if let Some(i) = pick(i, g.initializer.len()) {
                g.initializer[i].data_type = *code;
            }
        }
        GraphEdit::InitClearData(i) => {
            if let Some(i) = pick(i, g.initializer.len()) {
                let t = &mut g.initializer[i];
                t.raw_data.clear();
                t.float_data.clear();
                t.int64_data.clear();
            }
        }
        GraphEdit::InputDim(i, d, v) => {
            if let Some(i) = pick(i, g.input.len()) {
                set_input_dim(&mut g.input[i], d, *v);
            }
        }
        GraphEdit::InputDType(i, code) => {
            if let Some(i) = pick(i, g.input.len()) {
                set_input_dtype(&mut g.input[i], *code);
            }
        }
        GraphEdit::OpType(n, op) => {
            if let Some(n) = pick(n, g.node.len()) {
                g.node[n].op_type = (*op).to_owned();
            }
        }
        GraphEdit::AttrInt(n, name, v) => {
            if let Some(n) = pick(n, g.node.len()) {
                let attrs = &mut g.node[n].attribute;
                attrs.retain(|a| a.name != *name);
                attrs.push(attr_int(name, *v));
            }
        }
        GraphEdit::AddInput(i) => {
            let name = names[i.index(names.len())].clone();
            g.input.push(value(&name, FLOAT, &[Ok(2)]));
        }
        GraphEdit::Opset(_) | GraphEdit::IrVersion(_) | GraphEdit::NoGraph => {}
    }
}

/// Inputs of any dtype and shape, under the model's input names or made-up ones.
fn any_inputs() -> impl Strategy<Value = Vec<(Index, Option<String>, DType, Vec<usize>)>> {
    prop::collection::vec(
        (
            any::<Index>(),
            prop::option::weighted(0.2, "[a-z]{1,3}"),
            prop::sample::select(DType::ALL.to_vec()),
            prop::collection::vec(0usize..5, 0..4),
        ),
        0..4,
    )
}

// ---------------------------------------------------------------------------------------
// Properties.

#[test]
fn absurd_dimensions_of_an_empty_tensor_are_refused() {
    // ConstantOfShape asked for no element in dimensions up to 2^63 − 1: each dimension
    // once sized a table (a capacity overflow, a panic), and 2^40 asked for terabytes.
    for shape in [[i64::MAX, i64::MAX, 0], [1 << 40, 0, 3]] {
        let m = model(pb::GraphProto {
            name: "absurd".into(),
            node: vec![node("c", "ConstantOfShape", &["s"], &["y"], vec![])],
            initializer: vec![ints("s", &shape)],
            output: vec![value("y", FLOAT, &[Err("a"), Err("b"), Err("c")])],
            ..Default::default()
        });
        let m = Model::load(&m.encode_to_vec(), &Limits::default()).expect("loads");
        match m.plan(&[], &Limits::default()) {
            Err(RuntimeError::Limit {
                what: "tensor dimension",
                ..
            }) => {}
            other => panic!("{shape:?}: {:?}", other.err()),
        }
    }
}

#[test]
fn seed_models_are_valid_protobuf_and_exercised() {
    for m in seeds() {
        let bytes = m.encode_to_vec();
        assert_eq!(pb::ModelProto::decode(bytes.as_slice()).ok(), Some(m));
        load_and_exercise(&bytes).expect("seed model handled");
    }
    // The plumbing model uses only graph-level operators, so it must load and run.
    let m = Model::load(&plumbing().encode_to_vec(), &limits()).expect("plumbing loads");
    let inputs = conforming_inputs(&m).expect("inputs");
    m.run(&inputs, &RunOptions::default())
        .expect("plumbing runs");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        load_and_exercise(&bytes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn mutated_model_bytes_never_panic(
        seed in 0usize..3,
        edits in prop::collection::vec(byte_edit(), 1..6),
    ) {
        let mut bytes = seeds()[seed].encode_to_vec();
        for e in &edits {
            apply_bytes(&mut bytes, e);
        }
        load_and_exercise(&bytes)?;
    }

    #[test]
    fn mutated_graphs_never_panic(
        seed in 0usize..3,
        edits in prop::collection::vec(graph_edit(), 1..5),
    ) {
        let mut m = seeds()[seed].clone();
        for e in &edits {
            apply_graph(&mut m, e);
        }
        load_and_exercise(&m.encode_to_vec())?;
    }

    #[test]
    fn mismatched_inputs_never_panic(seed in 0usize..3, given in any_inputs()) {
        let Ok(m) = Model::load(&seeds()[seed].encode_to_vec(), &limits()) else {
            // Seeds whose operators are not implemented yet stop here, with a typed error.
            return Ok(());
        };
        let declared: Vec<String> = m.inputs.iter().map(|v| v.name.clone()).collect();
        let inputs: Vec<(String, Tensor)> = given
            .into_iter()
            .filter_map(|(i, name, dtype, shape)| {
                let name = name
                    .or_else(|| Some(declared.get(pick(&i, declared.len())?)?.clone()))
                    .unwrap_or_default();
                Some((name, Tensor::zeros(dtype, shape).ok()?))
            })
            .collect();
        exercise(&m, &inputs)?;
    }
}
