//! What a dispute needs from a run beyond its outputs: the outputs of chosen steps
//! (a defender's referee inputs), and — in builds with the `fault` feature, for tests
//! of the verification game — a run that corrupts one step and carries the error on.

#![allow(clippy::unwrap_used)]

mod common;

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

/// Three elementwise steps on a 64 KiB tensor, enough for a run to hand its steps to
/// the hashing thread (on a machine with a core to spare for it).
#[cfg(feature = "fault")]
fn pipelined() -> (Model, Vec<(String, Tensor)>) {
    use common::{value, FLOAT};
    use prost::Message;
    use tract_onnx::pb;
    let graph = pb::GraphProto {
        name: "chain".into(),
        node: vec![
            common::node("a", "Relu", &["x"], &["t0"], vec![]),
            common::node("b", "Neg", &["t0"], &["t1"], vec![]),
            common::node("c", "Abs", &["t1"], &["y"], vec![]),
        ],
        input: vec![value("x", FLOAT, &[Ok(64), Ok(256)])],
        output: vec![value("y", FLOAT, &[Ok(64), Ok(256)])],
        ..Default::default()
    };
    let model = Model::load(&common::model(graph).encode_to_vec(), &Limits::default()).unwrap();
    let x: Vec<f32> = (0..64 * 256).map(|i| (i % 89) as f32 / 7.0 - 6.0).collect();
    let x = Tensor::from_vec(vec![64, 256], x).unwrap();
    (model, vec![("x".to_owned(), x)])
}

#[cfg(feature = "fault")]
#[test]
fn the_output_leaf_binds_the_outputs_returned_whether_pipelined_or_inline() {
    use deed_runtime::trace::{output_leaf, outputs_hash};
    let (model, inputs) = pipelined();
    let m = model.num_steps();
    for hash_thread in [true, false] {
        let opts = |corrupt_step| RunOptions {
            threads: 1,
            hash_thread,
            corrupt_step,
            ..RunOptions::default()
        };
        let honest = model.run(&inputs, &opts(None)).unwrap();
        // A fault past the last node changes the outputs after every step hashed.
        let bad = model.run(&inputs, &opts(Some(m))).unwrap();
        assert_ne!(bad.outputs, honest.outputs);
        assert_eq!(
            bad.trace.step_hashes()[..m],
            honest.trace.step_hashes()[..m]
        );
        for run in [&honest, &bad] {
            let outs: Vec<Tensor> = run.outputs.iter().map(|(_, t)| t.clone()).collect();
            assert_eq!(
                run.trace.step_hash(m),
                Some(output_leaf(m as u64, &outputs_hash(&outs))),
                "hash_thread {hash_thread}"
            );
        }
    }
}
