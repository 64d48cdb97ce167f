//! Plans kept and run again: [`Model::plan_shared`] gives a plan that holds its model,
//! runs to the same bits as a fresh run, and says which inputs it takes as planned.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{value, FLOAT};
use deed_runtime::plan::KNOWN_TEXT_MAX;
use deed_runtime::{Ctx, Limits, Model, RunOptions};
use deed_types::{Tensor, TensorData};
use prost::Message;
use tract_onnx::pb;

/// `TensorProto.DataType.INT64`.
const INT64: i32 = 7;
/// `TensorProto.DataType.STRING`.
const STRING: i32 = 8;

fn mlp() -> (Arc<Model>, Vec<(String, Tensor)>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mlp_tiny/model.onnx"
    );
    let model = Model::load(&std::fs::read(path).unwrap(), &Limits::default()).unwrap();
    (Arc::new(model), vec![("x".to_owned(), batch(3, 0.0))])
}

fn batch(rows: usize, shift: f32) -> Tensor {
    Tensor::from_vec(
        vec![rows, 8],
        (0..rows * 8)
            .map(|i| (i as f32 - 11.5) / 7.0 + shift)
            .collect::<Vec<f32>>(),
    )
    .unwrap()
}

#[test]
fn a_kept_plan_runs_new_values_to_the_bits_of_a_fresh_run() {
    let (model, inputs) = mlp();
    let plan = model.plan_shared(&inputs, &Limits::default()).unwrap();
    // The plan outlives this borrow of the model: it holds the model itself.
    let plan = Arc::new(plan);
    let ctx = Ctx::new(Default::default(), 1);
    let opts = RunOptions::default();
    for shift in [0.0f32, 0.25, -3.0] {
        let inputs = vec![("x".to_owned(), batch(3, shift))];
        assert!(plan.accepts(&inputs));
        let kept = plan.execute(&inputs, &ctx, &opts).unwrap();
        let fresh = model.run(&inputs, &opts).unwrap();
        assert_eq!(kept.outputs, fresh.outputs);
        assert_eq!(kept.trace.root(), fresh.trace.root());
    }
    // Another batch size, a missing input or another dtype: plan again.
    assert!(!plan.accepts(&[("x".to_owned(), batch(4, 0.0))]));
    assert!(!plan.accepts(&[]));
    assert!(!plan.accepts(&[(
        "x".to_owned(),
        Tensor::from_vec(vec![3, 8], vec![0f64; 24]).unwrap()
    )]));
}

#[test]
fn a_plan_that_read_an_input_value_takes_only_that_value() {
    // Reshape's target shape is a graph input: the plan depends on its value.
    let graph = pb::GraphProto {
        name: "reshape_by_input".into(),
        node: vec![common::node("r", "Reshape", &["x", "s"], &["y"], vec![])],
        input: vec![value("x", FLOAT, &[Ok(6)]), value("s", INT64, &[Ok(2)])],
        output: vec![value("y", FLOAT, &[Err("a"), Err("b")])],
        ..Default::default()
    };
    let model =
        Arc::new(Model::load(&common::model(graph).encode_to_vec(), &Limits::default()).unwrap());
    let x = Tensor::from_vec(vec![6], (0..6).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
    let shape = |a: i64, b: i64| Tensor::from_vec(vec![2], vec![a, b]).unwrap();
    let inputs = vec![("x".to_owned(), x.clone()), ("s".to_owned(), shape(2, 3))];
    let plan = model.plan_shared(&inputs, &Limits::default()).unwrap();
    assert!(plan.accepts(&inputs));
    let other = vec![("x".to_owned(), x), ("s".to_owned(), shape(3, 2))];
    assert!(!plan.accepts(&other));
    let ctx = Ctx::new(Default::default(), 1);
    assert!(plan.execute(&other, &ctx, &RunOptions::default()).is_err());
    let out = plan.execute(&inputs, &ctx, &RunOptions::default()).unwrap();
    assert_eq!(out.outputs[0].1.shape(), &[2, 3]);
}

#[test]
fn a_float_input_that_sets_a_shape_is_planned_for_its_value() {
    // Resize's scales are a graph input of floats: the output shape needs their value,
    // so the model is planned again with them known, and the plan holds for those
    // bits only.
    let graph = pb::GraphProto {
        name: "resize_by_input".into(),
        node: vec![common::node(
            "r",
            "Resize",
            &["x", "", "scales"],
            &["y"],
            vec![common::attr_string("mode", "nearest")],
        )],
        input: vec![
            value("x", FLOAT, &[Ok(1), Ok(1), Ok(2), Ok(2)]),
            value("scales", FLOAT, &[Ok(4)]),
        ],
        output: vec![value("y", FLOAT, &[Err("a"), Err("b"), Err("c"), Err("d")])],
        ..Default::default()
    };
    let model =
        Arc::new(Model::load(&common::model(graph).encode_to_vec(), &Limits::default()).unwrap());
    let x = Tensor::from_vec(vec![1, 1, 2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let scales = |v: [f32; 4]| Tensor::from_vec(vec![4], v.to_vec()).unwrap();
    let inputs = |s: [f32; 4]| {
        vec![
            ("x".to_owned(), x.clone()),
            ("scales".to_owned(), scales(s)),
        ]
    };
    let plan = model
        .plan_shared(&inputs([1.0, 1.0, 2.0, 3.0]), &Limits::default())
        .unwrap();
    let ctx = Ctx::new(Default::default(), 1);
    let out = plan
        .execute(&inputs([1.0, 1.0, 2.0, 3.0]), &ctx, &RunOptions::default())
        .unwrap();
    assert_eq!(out.outputs[0].1.shape(), &[1, 1, 4, 6]);
    let fresh = model
        .run(&inputs([1.0, 1.0, 2.0, 3.0]), &RunOptions::default())
        .unwrap();
    assert_eq!(out.outputs, fresh.outputs);
    assert_eq!(out.trace.root(), fresh.trace.root());
    // Other scales need another plan; a run plans for them by itself.
    let other = inputs([1.0, 1.0, 3.0, 2.0]);
    assert!(!plan.accepts(&other));
    assert!(plan.execute(&other, &ctx, &RunOptions::default()).is_err());
    let run = model.run(&other, &RunOptions::default()).unwrap();
    assert_eq!(run.outputs[0].1.shape(), &[1, 1, 6, 4]);
}

#[test]
fn a_plan_made_for_an_input_value_compares_it_bit_for_bit() {
    // Range of float inputs: its length needs their values. -0.0 and +0.0 compare
    // equal as numbers, but a plan made for one is not taken for the other.
    let graph = pb::GraphProto {
        name: "range_by_input".into(),
        node: vec![common::node(
            "r",
            "Range",
            &["start", "limit", "delta"],
            &["y"],
            vec![],
        )],
        input: vec![
            value("start", FLOAT, &[]),
            value("limit", FLOAT, &[]),
            value("delta", FLOAT, &[]),
        ],
        output: vec![value("y", FLOAT, &[Err("n")])],
        ..Default::default()
    };
    let model =
        Arc::new(Model::load(&common::model(graph).encode_to_vec(), &Limits::default()).unwrap());
    let inputs = |start: f32| {
        vec![
            ("start".to_owned(), Tensor::scalar(start)),
            ("limit".to_owned(), Tensor::scalar(2.5f32)),
            ("delta".to_owned(), Tensor::scalar(1.0f32)),
        ]
    };
    let plus = model.plan_shared(&inputs(0.0), &Limits::default()).unwrap();
    let minus = model
        .plan_shared(&inputs(-0.0), &Limits::default())
        .unwrap();
    assert!(plus.accepts(&inputs(0.0)));
    assert!(!plus.accepts(&inputs(-0.0)));
    assert!(!minus.accepts(&inputs(0.0)));
    let ctx = Ctx::new(Default::default(), 1);
    let opts = RunOptions::default();
    assert!(plus.execute(&inputs(-0.0), &ctx, &opts).is_err());
    for (plan, start) in [(&plus, 0.0f32), (&minus, -0.0)] {
        let kept = plan.execute(&inputs(start), &ctx, &opts).unwrap();
        let fresh = model.run(&inputs(start), &opts).unwrap();
        assert_eq!(kept.outputs[0].1.shape(), &[3]);
        assert_eq!(kept.outputs, fresh.outputs);
        assert_eq!(kept.trace.root(), fresh.trace.root());
    }
}

#[test]
fn a_string_input_that_sets_a_shape_is_planned_for_its_value() {
    // StringSplit's last axis is as long as the most pieces of any element: the
    // strings are made known while planning, up to KNOWN_TEXT_MAX bytes of them.
    let graph = pb::GraphProto {
        name: "split_input".into(),
        node: vec![common::node(
            "s",
            "StringSplit",
            &["x"],
            &["y", "n"],
            vec![],
        )],
        input: vec![value("x", STRING, &[Err("c")])],
        output: vec![
            value("y", STRING, &[Err("c"), Err("k")]),
            value("n", INT64, &[Err("c")]),
        ],
        ..Default::default()
    };
    let mut proto = common::model(graph);
    proto.opset_import[0].version = 20;
    let model = Arc::new(Model::load(&proto.encode_to_vec(), &Limits::default()).unwrap());
    let strings = |v: &[&str]| {
        vec![(
            "x".to_owned(),
            Tensor::new(
                vec![v.len()],
                TensorData::Str(v.iter().map(|s| s.to_string()).collect()),
            )
            .unwrap(),
        )]
    };
    let inputs = strings(&["a b", "c d e"]);
    let plan = model.plan_shared(&inputs, &Limits::default()).unwrap();
    let ctx = Ctx::new(Default::default(), 1);
    let out = plan.execute(&inputs, &ctx, &RunOptions::default()).unwrap();
    assert_eq!(out.outputs[0].1.shape(), &[2, 3]);
    assert!(!plan.accepts(&strings(&["a b", "c d"])));
    // Past KNOWN_TEXT_MAX bytes the strings stay unknown and planning fails.
    let long = "a ".repeat(KNOWN_TEXT_MAX / 2 + 1);
    let err = model
        .run(&strings(&[&long]), &RunOptions::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("not known before running"),
        "{err}"
    );
}
