//! A run's timeline (`RunOptions::timeline`): every computed step timed once, every
//! hashed step's hashing timed once on the thread that did it, and the same outputs
//! and trace as a run without one.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use deed_runtime::timeline::HashedOn;
use deed_runtime::{Limits, Model, RunOptions, RunOutput};
use deed_types::Tensor;
use prost::Message;
use tract_onnx::pb;

use common::{value, FLOAT};

const ROWS: i64 = 64;
const COLS: i64 = 256;

/// Eight elementwise steps on a 64 KiB tensor (each handed to the hashing thread),
/// then a sum to one value (small enough to hash on the run's thread).
fn chain() -> (Model, Vec<(String, Tensor)>) {
    let ops = [
        "Relu", "Neg", "Abs", "Sigmoid", "Neg", "Exp", "Sqrt", "Floor",
    ];
    let mut nodes = Vec::new();
    let mut prev = "x".to_owned();
    for (i, op) in ops.iter().enumerate() {
        let out = format!("t{i}");
        nodes.push(common::node(
            &format!("n{i}"),
            op,
            &[&prev],
            &[&out],
            vec![],
        ));
        prev = out;
    }
    nodes.push(common::node(
        "sum",
        "ReduceSum",
        &[&prev],
        &["y"],
        vec![common::attr_int("keepdims", 0)],
    ));
    let graph = pb::GraphProto {
        name: "chain".into(),
        node: nodes,
        input: vec![value("x", FLOAT, &[Ok(ROWS), Ok(COLS)])],
        output: vec![value("y", FLOAT, &[])],
        ..Default::default()
    };
    let model = Model::load(&common::model(graph).encode_to_vec(), &Limits::default()).unwrap();
    let n = (ROWS * COLS) as usize;
    let x = Tensor::from_vec(
        vec![ROWS as usize, COLS as usize],
        (0..n)
            .map(|i| (i % 97) as f32 / 13.0 - 3.0)
            .collect::<Vec<f32>>(),
    )
    .unwrap();
    (model, vec![("x".to_owned(), x)])
}

fn run(model: &Model, inputs: &[(String, Tensor)], opts: RunOptions) -> RunOutput {
    model.run(inputs, &opts).unwrap()
}

/// A thread count that uses every core (at least two, so that there is a kernel pool):
/// its step hashes go to the pool's workers instead of the hashing thread.
fn every_core() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

#[test]
fn a_timeline_times_each_step_once_and_changes_nothing() {
    let (model, inputs) = chain();
    let steps = model.num_steps();
    let plain = run(&model, &inputs, RunOptions::default());
    assert!(plain.timeline.is_none());
    let variants = [
        (1, true),
        (1, false),
        (every_core(), true),
        (every_core(), false),
    ];
    for (threads, hash_thread) in variants {
        let out = run(
            &model,
            &inputs,
            RunOptions {
                timeline: true,
                hash_thread,
                threads,
                ..RunOptions::default()
            },
        );
        assert_eq!(out.outputs, plain.outputs);
        assert_eq!(out.trace, plain.trace);
        let t = out.timeline.unwrap();
        let computed: Vec<usize> = t.compute.iter().map(|s| s.step).collect();
        assert_eq!(computed, (0..steps).collect::<Vec<_>>());
        let mut last = 0.0;
        for s in &t.compute {
            assert!(s.start_us >= last && s.end_us >= s.start_us, "{s:?}");
            last = s.end_us;
        }
        assert!(last <= t.steps_done_us && t.steps_done_us <= t.trace_done_us);
        let hashed: BTreeSet<usize> = t.hashes.iter().map(|(s, _)| s.step).collect();
        assert_eq!(hashed.len(), t.hashes.len(), "a step hashed twice");
        assert_eq!(hashed, (0..steps).collect());
        for (s, _) in &t.hashes {
            // A step is hashed only once computed.
            assert!(s.start_us >= t.compute[s.step].end_us, "{s:?}");
            assert!(s.end_us <= t.trace_done_us);
        }
        // The final sum is too small to hand over; without the hashing thread nothing is.
        let on = |step: usize| t.hashes.iter().find(|(s, _)| s.step == step).unwrap().1;
        assert_eq!(on(steps - 1), HashedOn::RunThread);
        if !hash_thread {
            assert!(t.hashes.iter().all(|(_, o)| *o == HashedOn::RunThread));
        }
        let sum = t.summary();
        let kernels: f64 = t.compute.iter().map(|s| s.len_us()).sum();
        assert!((sum.steps_us - kernels).abs() < 1e-6);
        assert_eq!(sum.total_us, t.trace_done_us);
        assert!(sum.between_us >= 0.0 && sum.tail_us >= 0.0);
    }
    let untraced = run(
        &model,
        &inputs,
        RunOptions {
            timeline: true,
            trace: false,
            ..RunOptions::default()
        },
    );
    let t = untraced.timeline.unwrap();
    assert_eq!(t.compute.len(), steps);
    assert!(t.hashes.is_empty());
    assert_eq!(t.summary().hash_thread_us, 0.0);
}
