//! What a dispute needs from a run beyond its outputs: the outputs of chosen steps
//! (a defender's referee inputs), and — in builds with the `fault` feature, for tests
//! of the verification game — a run that corrupts one step and carries the error on.

#![allow(clippy::unwrap_used)]

use deed_runtime::{node_step_hash, Limits, Model, RunOptions};
use deed_types::Tensor;

fn mlp() -> (Model, Vec<(String, Tensor)>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mlp_tiny/model.onnx"
    );
    let model = Model::load(&std::fs::read(path).unwrap(), &Limits::default()).unwrap();
    let x = Tensor::from_vec(
        vec![3, 8],
        (0..24)
            .map(|i| (i as f32 - 11.5) / 7.0)
            .collect::<Vec<f32>>(),
    )
    .unwrap();
    (model, vec![("x".to_owned(), x)])
}

#[test]
fn kept_steps_are_the_outputs_the_trace_hashes() {
    let (model, inputs) = mlp();
    let n = model.num_steps();
    let plain = model.run(&inputs, &RunOptions::default()).unwrap();
    let keep: Vec<usize> = (0..n).rev().step_by(2).collect();
    let out = model
        .run(
            &inputs,
            &RunOptions {
                keep_steps: keep.clone(),
                ..RunOptions::default()
            },
        )
        .unwrap();
    assert!(plain.kept.is_empty());
    assert_eq!(out.trace.root(), plain.trace.root());
    assert_eq!(out.outputs, plain.outputs);
    let mut expected = keep.clone();
    expected.sort_unstable();
    assert_eq!(
        out.kept.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        expected
    );
    for (s, outs) in &out.kept {
        assert!(!outs.is_empty());
        assert_eq!(
            out.trace.step_hash(*s),
            Some(node_step_hash(*s, outs)),
            "step {s}"
        );
    }
}

#[cfg(feature = "fault")]
#[test]
fn a_corrupted_step_changes_its_hash_and_nothing_before_it() {
    let (model, inputs) = mlp();
    let honest = model.run(&inputs, &RunOptions::default()).unwrap();
    for c in 0..model.num_steps() {
        let bad = model
            .run(
                &inputs,
                &RunOptions {
                    corrupt_step: Some(c),
                    ..RunOptions::default()
                },
            )
            .unwrap();
        assert_ne!(bad.trace.root(), honest.trace.root(), "corrupt step {c}");
        let first = (0..model.num_steps())
            .find(|&s| bad.trace.step_hash(s) != honest.trace.step_hash(s))
            .unwrap();
        // This model has no constant-folded steps, so the corrupted step is `c`
        // itself and every step after it carries the error in the chain.
        assert_eq!(first, c, "corrupt step {c} changed step {first}");
    }
    // Past the last node the fault falls on the result: every node step agrees, the
    // graph output and the output leaf do not.
    let m = model.num_steps();
    let bad = model
        .run(
            &inputs,
            &RunOptions {
                corrupt_step: Some(m),
                ..RunOptions::default()
            },
        )
        .unwrap();
    assert_eq!(
        bad.trace.step_hashes()[..m],
        honest.trace.step_hashes()[..m]
    );
    assert_ne!(bad.trace.step_hash(m), honest.trace.step_hash(m));
    assert_ne!(bad.outputs, honest.outputs);
}
