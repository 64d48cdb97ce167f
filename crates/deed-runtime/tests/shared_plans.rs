//! Plans kept and run again: [`Model::plan_shared`] gives a plan that holds its model,
//! runs to the same bits as a fresh run, and says which inputs it takes as planned.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{value, FLOAT};
use deed_runtime::{Ctx, Limits, Model, RunOptions};
use deed_types::Tensor;
use prost::Message;
use tract_onnx::pb;

/// `TensorProto.DataType.INT64`.
const INT64: i32 = 7;

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
