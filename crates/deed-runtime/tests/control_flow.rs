//! Control flow (`If`, `Loop`, `Scan`) as a run, the trace and the referee meet it:
//! subgraphs that read outer values (graph inputs, initializers, outputs of earlier
//! nodes), the same bits on every kernel path and thread count, every step
//! re-executed alone from its inputs to its step hash, metering by iteration, and
//! clear errors for what cannot be planned.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{attr_int, model, node, value, FLOAT};
use deed_runtime::{node_step_hash, KernelMode, Limits, Model, RunOptions, RuntimeError, Source};
use deed_types::Tensor;
use prost::Message;
use tract_onnx::pb;

const INT64: i32 = 7;
const BOOL: i32 = 9;

fn attr_graph(name: &str, g: pb::GraphProto) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Graph as i32,
        g: Some(g),
        ..Default::default()
    }
}

fn graph(
    name: &str,
    nodes: Vec<pb::NodeProto>,
    input: Vec<pb::ValueInfoProto>,
    output: Vec<pb::ValueInfoProto>,
) -> pb::GraphProto {
    pb::GraphProto {
        name: name.into(),
        node: nodes,
        input,
        output,
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[i64], v: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        float_data: v.to_vec(),
        ..Default::default()
    }
}

/// `Scan` over the rows of `x` (`state += row · w`, emitting `tanh(state)`), then a
/// `Loop` of `k` iterations adding the scan's final state (an outer node's output) to
/// its carried value, then an `If` on `flag` whose branches read the loop's result
/// and an initializer.
fn control_model() -> Model {
    let scan_body = graph(
        "scan_body",
        vec![
            node("mm", "MatMul", &["row", "w"], &["rw"], vec![]),
            node("add", "Add", &["state", "rw"], &["state_out"], vec![]),
            node("tanh", "Tanh", &["state_out"], &["emit"], vec![]),
        ],
        vec![
            value("state", FLOAT, &[Ok(3)]),
            value("row", FLOAT, &[Ok(3)]),
        ],
        vec![
            value("state_out", FLOAT, &[Ok(3)]),
            value("emit", FLOAT, &[Ok(3)]),
        ],
    );
    let loop_body = graph(
        "loop_body",
        vec![
            node("keep", "Identity", &["c"], &["c_out"], vec![]),
            node("acc", "Add", &["acc", "s_final"], &["acc_out"], vec![]),
            node("cast", "Cast", &["i"], &["i_f"], vec![attr_int("to", 1)]),
            node("scale", "Mul", &["acc_out", "i_f"], &["emit"], vec![]),
        ],
        vec![
            value("i", INT64, &[]),
            value("c", BOOL, &[]),
            value("acc", FLOAT, &[Ok(3)]),
        ],
        vec![
            value("c_out", BOOL, &[]),
            value("acc_out", FLOAT, &[Ok(3)]),
            value("emit", FLOAT, &[Ok(3)]),
        ],
    );
    let then_branch = graph(
        "then",
        vec![node(
            "t",
            "Add",
            &["acc_final", "bias"],
            &["r_then"],
            vec![],
        )],
        vec![],
        vec![value("r_then", FLOAT, &[Ok(3)])],
    );
    let else_branch = graph(
        "else",
        vec![node("e", "Neg", &["acc_final"], &["r_else"], vec![])],
        vec![],
        vec![value("r_else", FLOAT, &[Ok(3)])],
    );
    let g = pb::GraphProto {
        name: "control".into(),
        node: vec![
            node(
                "scan",
                "Scan",
                &["s0", "x"],
                &["s_final", "ys"],
                vec![
                    attr_graph("body", scan_body),
                    attr_int("num_scan_inputs", 1),
                ],
            ),
            node(
                "loop",
                "Loop",
                &["k", "", "s0"],
                &["acc_final", "accs"],
                vec![attr_graph("body", loop_body)],
            ),
            node(
                "if",
                "If",
                &["flag"],
                &["r"],
                vec![
                    attr_graph("then_branch", then_branch),
                    attr_graph("else_branch", else_branch),
                ],
            ),
        ],
        input: vec![
            value("x", FLOAT, &[Ok(4), Ok(3)]),
            value("s0", FLOAT, &[Ok(3)]),
            value("w", FLOAT, &[Ok(3), Ok(3)]),
            value("k", INT64, &[]),
            value("flag", BOOL, &[]),
        ],
        output: vec![
            value("ys", FLOAT, &[Ok(4), Ok(3)]),
            value("accs", FLOAT, &[Err("k"), Ok(3)]),
            value("r", FLOAT, &[Ok(3)]),
        ],
        initializer: vec![f32_tensor("bias", &[3], &[0.5, -0.25, 2.0])],
        ..Default::default()
    };
    Model::load(&model(g).encode_to_vec(), &Limits::default()).unwrap()
}

fn inputs(k: i64, flag: bool) -> Vec<(String, Tensor)> {
    let x: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 9.0).collect();
    let w: Vec<f32> = (0..9).map(|i| ((i * 7 % 9) as f32 - 4.0) / 5.0).collect();
    vec![
        ("x".into(), Tensor::from_vec(vec![4, 3], x).unwrap()),
        (
            "s0".into(),
            Tensor::from_vec(vec![3], vec![0.1f32, -0.2, 0.3]).unwrap(),
        ),
        ("w".into(), Tensor::from_vec(vec![3, 3], w).unwrap()),
        ("k".into(), Tensor::scalar(k)),
        ("flag".into(), Tensor::scalar(flag)),
    ]
}

fn f32s(out: &[(String, Tensor)], name: &str) -> Vec<f32> {
    let t = &out.iter().find(|(n, _)| n == name).unwrap().1;
    t.as_slice::<f32>().unwrap().to_vec()
}

/// The model computed directly, in f64 (the runtime's f32 results must be close).
fn expected(k: i64, flag: bool) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let ins = inputs(k, flag);
    let get = |n: &str| -> Vec<f64> {
        let t = &ins.iter().find(|(m, _)| m == n).unwrap().1;
        t.as_slice::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect()
    };
    let (x, s0, w) = (get("x"), get("s0"), get("w"));
    let mut state = s0.clone();
    let mut ys = Vec::new();
    for r in 0..4 {
        for j in 0..3 {
            state[j] += (0..3).map(|i| x[r * 3 + i] * w[i * 3 + j]).sum::<f64>();
        }
        ys.extend(state.iter().map(|v| v.tanh()));
    }
    let mut acc = s0;
    let mut accs = Vec::new();
    for i in 0..k {
        for j in 0..3 {
            acc[j] += state[j];
        }
        accs.extend(acc.iter().map(|v| v * i as f64));
    }
    let bias = [0.5, -0.25, 2.0];
    let r = (0..3)
        .map(|j| if flag { acc[j] + bias[j] } else { -acc[j] })
        .collect();
    (ys, accs, r)
}

fn close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-5 + 1e-5 * w.abs(),
            "{what}[{i}]: {g} against {w}"
        );
    }
}

#[test]
fn subgraphs_read_outer_values_and_compute_what_the_graph_says() {
    let m = control_model();
    // The If reads `acc_final` (the Loop's output) and `bias`; the Loop reads
    // `s_final`; the Scan reads `w`: each a node input after the node's own.
    let by_name = |n: &str| m.nodes.iter().find(|x| x.name == n).unwrap();
    assert_eq!(by_name("scan").inputs, ["s0", "x", "w"]);
    assert_eq!(by_name("loop").inputs, ["k", "", "s0", "s_final"]);
    assert_eq!(by_name("if").inputs, ["flag", "acc_final", "bias"]);
    for (k, flag) in [(3, true), (1, false), (0, true)] {
        let out = m.run(&inputs(k, flag), &RunOptions::default()).unwrap();
        let (ys, accs, r) = expected(k, flag);
        close(&f32s(&out.outputs, "ys"), &ys, "ys");
        close(&f32s(&out.outputs, "accs"), &accs, "accs");
        close(&f32s(&out.outputs, "r"), &r, "r");
        let accs_t = &out.outputs.iter().find(|(n, _)| n == "accs").unwrap().1;
        assert_eq!(accs_t.shape(), &[k as usize, 3]);
    }
}

#[test]
fn control_flow_gives_the_same_bits_on_every_path() {
    let m = control_model();
    let ins = inputs(4, true);
    let base = m.run(&ins, &RunOptions::default()).unwrap();
    for (mode, threads, hash_thread) in [
        (KernelMode::Fast, 2, true),
        (KernelMode::Fast, 4, false),
        (KernelMode::Reference, 1, true),
    ] {
        let opts = RunOptions {
            mode,
            threads,
            hash_thread,
            ..RunOptions::default()
        };
        let out = m.run(&ins, &opts).unwrap();
        assert_eq!(out.trace.root(), base.trace.root(), "{mode:?}, {threads}");
        assert_eq!(out.outputs, base.outputs);
    }
}

#[test]
fn each_control_flow_step_re_executes_alone_to_its_hash() {
    let m = control_model();
    let ins = inputs(3, false);
    let n = m.num_steps();
    let out = m
        .run(
            &ins,
            &RunOptions {
                keep_steps: (0..n).collect(),
                ..RunOptions::default()
            },
        )
        .unwrap();
    let kept: HashMap<usize, &Vec<Tensor>> = out.kept.iter().map(|(s, t)| (*s, t)).collect();
    for (s, node) in m.nodes.iter().enumerate() {
        let step_inputs: Vec<Option<Tensor>> = node
            .inputs
            .iter()
            .map(|name| {
                if name.is_empty() {
                    return None;
                }
                Some(match m.source(name).unwrap() {
                    Source::Input => ins.iter().find(|(n, _)| n == name).unwrap().1.clone(),
                    Source::Initializer => m.initializer(name).unwrap().clone(),
                    Source::Step { step, slot } => kept[&step][slot].clone(),
                })
            })
            .collect();
        let outs = m.execute_node(s, &step_inputs).unwrap();
        assert_eq!(
            out.trace.step_hash(s),
            Some(node_step_hash(s, &outs)),
            "step {s} ({})",
            node.op_type
        );
    }
}

#[test]
fn a_loop_is_metered_by_its_iterations() {
    let m = control_model();
    let cost = |k: i64| {
        m.plan(&inputs(k, true), &Limits::default())
            .unwrap()
            .step_costs()[1]
    };
    let (one, ten) = (cost(1), cost(10));
    assert!(ten > 9 * one / 2, "a loop of 10 costs {ten}, of 1 {one}");
    let out = m
        .run(
            &inputs(10, true),
            &RunOptions {
                budget: Some(ten - 1),
                ..RunOptions::default()
            },
        )
        .unwrap_err();
    assert!(matches!(out, RuntimeError::Budget { .. }), "{out}");
}

/// An `If` whose branches give different shapes plans for the value of its
/// condition, and the plan holds for that value only.
#[test]
fn an_if_whose_branches_differ_in_shape_plans_for_its_condition() {
    let then_branch = graph(
        "then",
        vec![node("t", "Identity", &["x"], &["a"], vec![])],
        vec![],
        vec![value("a", FLOAT, &[Ok(2)])],
    );
    let else_branch = graph(
        "else",
        vec![node(
            "e",
            "Concat",
            &["x", "x"],
            &["b"],
            vec![attr_int("axis", 0)],
        )],
        vec![],
        vec![value("b", FLOAT, &[Ok(4)])],
    );
    let g = pb::GraphProto {
        name: "if_shapes".into(),
        node: vec![node(
            "if",
            "If",
            &["c"],
            &["y"],
            vec![
                attr_graph("then_branch", then_branch),
                attr_graph("else_branch", else_branch),
            ],
        )],
        input: vec![value("c", BOOL, &[]), value("x", FLOAT, &[Ok(2)])],
        output: vec![value("y", FLOAT, &[Err("n")])],
        ..Default::default()
    };
    let m = Model::load(&model(g).encode_to_vec(), &Limits::default()).unwrap();
    let x = Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
    let ins = |c: bool| {
        vec![
            ("c".to_owned(), Tensor::scalar(c)),
            ("x".to_owned(), x.clone()),
        ]
    };
    for (c, len) in [(true, 2), (false, 4)] {
        let plan = m.plan(&ins(c), &Limits::default()).unwrap();
        assert_eq!(plan.output_types()[0].1.shape, vec![len]);
        assert!(plan.accepts(&ins(c)));
        assert!(!plan.accepts(&ins(!c)));
        let out = m.run(&ins(c), &RunOptions::default()).unwrap();
        assert_eq!(out.outputs[0].1.shape(), &[len]);
    }
}

/// A model of one `Loop` over `body`, `k` iterations from `v` (of one dimension
/// `dim`).
fn loop_model(body: pb::GraphProto, dim: Result<i64, &str>) -> Result<Model, RuntimeError> {
    let g = pb::GraphProto {
        name: "outer".into(),
        node: vec![node(
            "loop",
            "Loop",
            &["k", "", "v"],
            &["v_out"],
            vec![attr_graph("body", body)],
        )],
        input: vec![value("k", INT64, &[]), value("v", FLOAT, &[dim])],
        output: vec![value("v_out", FLOAT, &[dim])],
        ..Default::default()
    };
    Model::load(&model(g).encode_to_vec(), &Limits::default())
}

#[test]
fn bad_subgraphs_are_refused_with_what_is_wrong() {
    let with_body = |body| loop_model(body, Err("n"));
    let body = |op: &str, reads: &str| {
        let attrs = if op == "Concat" {
            vec![attr_int("axis", 0)]
        } else {
            vec![]
        };
        graph(
            "body",
            vec![
                node("keep", "Identity", &["c"], &["c_out"], vec![]),
                node("op", op, &["v_in", reads], &["v_next"], attrs),
            ],
            vec![
                value("i", INT64, &[]),
                value("c", BOOL, &[]),
                value("v_in", FLOAT, &[Err("n")]),
            ],
            vec![
                value("c_out", BOOL, &[]),
                value("v_next", FLOAT, &[Err("n")]),
            ],
        )
    };
    // An operator the runtime lacks, inside a body, is reported by name.
    let e = with_body(body("NoSuchOp", "v_in")).unwrap_err();
    assert!(
        matches!(&e, RuntimeError::Unsupported(v) if v[0].op_type == "NoSuchOp"),
        "{e}"
    );
    // A body reading a value defined nowhere.
    let e = with_body(body("Add", "nowhere")).unwrap_err();
    assert!(
        matches!(&e, RuntimeError::UndefinedValue { value, .. } if value == "nowhere"),
        "{e}"
    );
    // A body reading an outer value runs.
    let m = with_body(body("Add", "v")).unwrap();
    let ins = |k: i64, n: usize| {
        vec![
            ("k".to_owned(), Tensor::scalar(k)),
            (
                "v".to_owned(),
                Tensor::from_vec(vec![n], vec![1.0f32; n]).unwrap(),
            ),
        ]
    };
    let out = m.run(&ins(3, 2), &RunOptions::default()).unwrap();
    assert_eq!(out.outputs[0].1.as_slice::<f32>().unwrap(), &[4.0, 4.0]);
    // A carried value that changes shape: the loop is computed while planning, for
    // the input's value, when that input is small enough to be known then…
    let m = with_body(body("Concat", "v_in")).unwrap();
    let plan = m.plan(&ins(2, 2), &Limits::default()).unwrap();
    assert_eq!(plan.output_types()[0].1.shape, vec![8]);
    let mut other = ins(2, 2);
    other[1].1 = Tensor::from_vec(vec![2], vec![1.0f32, 0.5]).unwrap();
    assert!(!plan.accepts(&other));
    // …and refused, naming the input, when it is not.
    let e = m.plan(&ins(2, 4096), &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("input 2"), "{e}");
}

#[test]
fn a_subgraph_is_held_to_the_limits_of_the_plan_that_runs_it() {
    // Each iteration widens `v_in` (one float) to 4096 floats and takes their
    // maximum: 16 KiB the outer graph never holds, in a value the body makes.
    let shape = pb::TensorProto {
        name: "shape".into(),
        dims: vec![1],
        data_type: INT64,
        int64_data: vec![4096],
        ..Default::default()
    };
    let body = graph(
        "body",
        vec![
            node("keep", "Identity", &["c"], &["c_out"], vec![]),
            node(
                "shape",
                "Constant",
                &[],
                &["s"],
                vec![common::attr_tensor("value", shape)],
            ),
            node("wide", "Expand", &["v_in", "s"], &["w"], vec![]),
            node("max", "ReduceMax", &["w"], &["v_next"], vec![]),
        ],
        vec![
            value("i", INT64, &[]),
            value("c", BOOL, &[]),
            value("v_in", FLOAT, &[Ok(1)]),
        ],
        vec![value("c_out", BOOL, &[]), value("v_next", FLOAT, &[Ok(1)])],
    );
    let m = loop_model(body, Ok(1)).unwrap();
    let ins = vec![
        ("k".to_owned(), Tensor::scalar(3i64)),
        (
            "v".to_owned(),
            Tensor::from_vec(vec![1], vec![2.5f32]).unwrap(),
        ),
    ];
    // The outer plan counts the body's activations as the loop's working memory.
    let plan = m.plan(&ins, &Limits::default()).unwrap();
    let wide = 4096 * 4;
    assert!(
        plan.peak_activation_bytes() >= wide,
        "peak {} misses the body's {wide} bytes",
        plan.peak_activation_bytes()
    );
    let out = m.run(&ins, &RunOptions::default()).unwrap();
    assert_eq!(out.outputs[0].1.as_slice::<f32>().unwrap(), &[2.5]);
    // Limits that the outer graph alone keeps but the body does not: refused while
    // planning, as for a value of the outer graph.
    let small_tensors = Limits {
        max_tensor_bytes: wide / 2,
        ..Limits::default()
    };
    let e = m.plan(&ins, &small_tensors).unwrap_err();
    assert!(e.to_string().contains("tensor bytes"), "{e}");
    let small_memory = Limits {
        max_activation_bytes: wide / 2,
        ..Limits::default()
    };
    let e = m.plan(&ins, &small_memory).unwrap_err();
    assert!(e.to_string().contains("activation memory"), "{e}");
    let opts = RunOptions {
        limits: small_memory,
        ..RunOptions::default()
    };
    assert!(m.run(&ins, &opts).is_err());
}

/// A loop body over `(i, c, v_in: f32[1])` whose second node makes `v_next`.
fn body_with(v_next: pb::NodeProto) -> pb::GraphProto {
    graph(
        "body",
        vec![node("keep", "Identity", &["c"], &["c_out"], vec![]), v_next],
        vec![
            value("i", INT64, &[]),
            value("c", BOOL, &[]),
            value("v_in", FLOAT, &[Ok(1)]),
        ],
        vec![value("c_out", BOOL, &[]), value("v_next", FLOAT, &[Ok(1)])],
    )
}

#[test]
fn nesting_is_bounded() {
    // A Loop body holding a Loop body holding … deeper than the loader allows.
    let mut g = body_with(node("v", "Identity", &["v_in"], &["v_next"], vec![]));
    for _ in 0..(deed_runtime::MAX_GRAPH_DEPTH + 1) {
        g = body_with(node(
            "inner",
            "Loop",
            &["i", "", "v_in"],
            &["v_next"],
            vec![attr_graph("body", g)],
        ));
    }
    let e = loop_model(g, Ok(1)).unwrap_err();
    assert!(
        matches!(
            e,
            RuntimeError::Limit {
                what: "subgraph nesting depth",
                ..
            }
        ),
        "{e}"
    );
}

/// A model of one `FlexAttention` over Q `[1, 1, 2, 2]`, K and V `[1, 1, 2, 2]`, whose
/// `score_mod` is `body` (reading the graph input `factor`).
fn flex_model(body: pb::GraphProto) -> Result<Model, RuntimeError> {
    let mut flex = node("flex", "FlexAttention", &["Q", "K", "V"], &["Y"], vec![]);
    flex.domain = "ai.onnx.preview".into();
    flex.attribute.push(attr_graph("score_mod", body));
    let g = pb::GraphProto {
        name: "outer".into(),
        node: vec![flex],
        input: vec![
            value("Q", FLOAT, &[Ok(1), Ok(1), Ok(2), Ok(2)]),
            value("K", FLOAT, &[Ok(1), Ok(1), Ok(2), Ok(2)]),
            value("V", FLOAT, &[Ok(1), Ok(1), Ok(2), Ok(2)]),
            value("factor", FLOAT, &[]),
        ],
        output: vec![value("Y", FLOAT, &[Ok(1), Ok(1), Ok(2), Ok(2)])],
        ..Default::default()
    };
    let mut m = model(g);
    m.opset_import.push(pb::OperatorSetIdProto {
        domain: "ai.onnx.preview".into(),
        version: 1,
    });
    Model::load(&m.encode_to_vec(), &Limits::default())
}

#[test]
fn flex_attention_modifiers_are_subgraphs_that_read_outer_values() {
    let scores = |dims| value("scores", FLOAT, dims);
    let all = [Ok(1), Ok(1), Ok(2), Ok(2)];
    let scaled = graph(
        "score_mod",
        vec![node("mul", "Mul", &["scores", "factor"], &["out"], vec![])],
        vec![scores(&all)],
        vec![value("out", FLOAT, &all)],
    );
    let m = flex_model(scaled).unwrap();
    let t = |v: [f32; 4]| Tensor::from_vec(vec![1, 1, 2, 2], v.to_vec()).unwrap();
    let ins = |factor: f32| {
        vec![
            ("Q".to_owned(), t([1.0, 2.0, -1.0, 0.5])),
            ("K".to_owned(), t([0.5, 1.0, 2.0, -1.5])),
            ("V".to_owned(), t([1.0, 3.0, 2.0, -5.0])),
            ("factor".to_owned(), Tensor::scalar(factor)),
        ]
    };
    // A factor of 0 zeroes every score: each query weighs both keys by exactly ½.
    let out = m.run(&ins(0.0), &RunOptions::default()).unwrap();
    assert_eq!(
        out.outputs[0].1.as_slice::<f32>().unwrap(),
        &[1.5, -1.0, 1.5, -1.0]
    );
    let out = m.run(&ins(1.0), &RunOptions::default()).unwrap();
    assert_ne!(
        out.outputs[0].1.as_slice::<f32>().unwrap(),
        &[1.5, -1.0, 1.5, -1.0]
    );
    // The node reads the outer value as an input after Q, K and V: the referee
    // re-runs it from them to its step hash.
    let run = m.run(&ins(1.0), &RunOptions::default()).unwrap();
    let step_inputs: Vec<Option<Tensor>> = ins(1.0).into_iter().map(|(_, t)| Some(t)).collect();
    let again = m.execute_node(0, &step_inputs).unwrap();
    assert_eq!(node_step_hash(0, &again), run.trace.step_hash(0).unwrap());
    // A modifier that changes the scores' shape is refused while planning.
    let reduced = graph(
        "score_mod",
        vec![node("max", "ReduceMax", &["scores"], &["out"], vec![])],
        vec![scores(&all)],
        vec![value("out", FLOAT, &[Ok(1), Ok(1), Ok(1), Ok(1)])],
    );
    let e = flex_model(reduced)
        .unwrap()
        .plan(&ins(1.0), &Limits::default())
        .unwrap_err();
    assert!(e.to_string().contains("must give one f32"), "{e}");
}
