//! The fast paths change nothing: quantized products through the prepared and the
//! unprepared fast kernels, run on 1, 2 and 4 threads, give the outputs and the trace
//! root of the reference kernels; a trace hashed on the background thread (large
//! outputs) has exactly the step hashes of re-executing every node alone.

#![allow(clippy::unwrap_used)]

use deed_runtime::trace::{output_leaf, output_proof, outputs_hash, verify_output};
use deed_runtime::{node_step_hash, KernelMode, Limits, Model, RunOptions, RunOutput};
use deed_types::Tensor;
use prost::Message;
use tract_onnx::pb;

mod common;
use common::{value, FLOAT};

const UINT8: i32 = 2;
const INT8: i32 = 3;

fn raw(name: &str, data_type: i32, dims: &[i64], raw_data: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type,
        raw_data,
        ..Default::default()
    }
}

fn node(op_type: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    common::node(outputs[0], op_type, inputs, outputs, Vec::new())
}

fn load(graph: pb::GraphProto) -> Model {
    Model::load(&common::model(graph).encode_to_vec(), &Limits::default()).unwrap()
}

/// Deterministic pseudo-random bytes.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

fn scalar_f32(name: &str, v: f32) -> pb::TensorProto {
    raw(name, FLOAT, &[], v.to_le_bytes().to_vec())
}

/// Runs on 1, 2 and 4 threads and with the reference kernels; all must agree.
fn run_everywhere(model: &Model, inputs: &[(String, Tensor)]) -> RunOutput {
    let mut runs = Vec::new();
    for (mode, threads) in [
        (KernelMode::Reference, 1),
        (KernelMode::Fast, 1),
        (KernelMode::Fast, 2),
        (KernelMode::Fast, 4),
    ] {
        let opts = RunOptions {
            mode,
            threads,
            ..RunOptions::default()
        };
        runs.push(model.run(inputs, &opts).unwrap());
    }
    for r in &runs[1..] {
        assert_eq!(r.outputs, runs[0].outputs);
        assert_eq!(r.trace.root(), runs[0].trace.root());
    }
    runs.swap_remove(0)
}

#[test]
fn quantized_products_match_the_reference_on_every_path() {
    let (k, n) = (300usize, 70usize);
    let graph = pb::GraphProto {
        name: "int8".into(),
        node: vec![
            // Prepared: constant i8 weights, u8 activations.
            node(
                "QLinearMatMul",
                &["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"],
                &["q"],
            ),
            // Unprepared: u8 weights given as an input, per-column zero points.
            node("MatMulInteger", &["x", "wb", "xz", "wbz"], &["acc"]),
            // Batched i8 activations times the constant weights, per-row zero points.
            node("MatMulInteger", &["xi", "w", "xiz", "wz"], &["acc2"]),
        ],
        initializer: vec![
            raw("w", INT8, &[k as i64, n as i64], bytes(1, k * n)),
            raw("wz", INT8, &[], vec![3]),
            raw("xz", UINT8, &[], vec![117]),
            raw("wbz", UINT8, &[n as i64], bytes(2, n)),
            raw("xiz", INT8, &[5], bytes(3, 5)),
            raw("yz", UINT8, &[], vec![128]),
            scalar_f32("xs", 0.02),
            scalar_f32("ws", 0.01),
            scalar_f32("ys", 0.4),
        ],
        input: vec![
            value("x", UINT8, &[Err("batch"), Ok(k as i64)]),
            value("wb", UINT8, &[Ok(k as i64), Ok(n as i64)]),
            value("xi", INT8, &[Ok(3), Ok(5), Ok(k as i64)]),
        ],
        output: vec![
            value("q", UINT8, &[Err("batch"), Ok(n as i64)]),
            value("acc", 6, &[Err("batch"), Ok(n as i64)]),
            value("acc2", 6, &[Ok(3), Ok(5), Ok(n as i64)]),
        ],
        ..Default::default()
    };
    let model = load(graph);
    for batch in [1usize, 7, 37] {
        let inputs = vec![
            (
                "x".to_owned(),
                Tensor::from_vec(vec![batch, k], bytes(10 + batch as u64, batch * k)).unwrap(),
            ),
            (
                "wb".to_owned(),
                Tensor::from_vec(vec![k, n], bytes(4, k * n)).unwrap(),
            ),
            (
                "xi".to_owned(),
                Tensor::from_vec(
                    vec![3, 5, k],
                    bytes(5, 15 * k).into_iter().map(|b| b as i8).collect(),
                )
                .unwrap(),
            ),
        ];
        let out = run_everywhere(&model, &inputs);
        // Not degenerate: the requantized output uses more than a couple of values.
        let q = out.outputs[0].1.as_slice::<u8>().unwrap();
        let mut distinct = q.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(batch == 1 || distinct.len() > 10, "{distinct:?}");
    }
}

#[test]
fn background_hashing_gives_the_step_hashes_of_each_node() {
    // Outputs of 40000 × 8 f32 (1.28 MB) put hashing in the background: on the hashing
    // thread when the threads leave it a core, else on the kernel pool's workers.
    let (rows, d_in, d_hidden) = (40_000usize, 4usize, 8usize);
    let f32s = |seed: u64, n: usize| -> Vec<f32> {
        bytes(seed, n)
            .into_iter()
            .map(|b| f32::from(b) / 128.0 - 1.0)
            .collect()
    };
    let le = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let (w1, b1) = (f32s(1, d_in * d_hidden), f32s(2, d_hidden));
    let (w2, b2) = (f32s(3, d_hidden * 3), f32s(4, 3));
    let graph = pb::GraphProto {
        name: "wide".into(),
        node: vec![
            node("Gemm", &["x", "w1", "b1"], &["h"]),
            node("Relu", &["h"], &["a"]),
            node("Gemm", &["a", "w2", "b2"], &["y"]),
        ],
        initializer: vec![
            raw("w1", FLOAT, &[d_in as i64, d_hidden as i64], le(&w1)),
            raw("b1", FLOAT, &[d_hidden as i64], le(&b1)),
            raw("w2", FLOAT, &[d_hidden as i64, 3], le(&w2)),
            raw("b2", FLOAT, &[3], le(&b2)),
        ],
        input: vec![value("x", FLOAT, &[Ok(rows as i64), Ok(d_in as i64)])],
        output: vec![value("y", FLOAT, &[Ok(rows as i64), Ok(3)])],
        ..Default::default()
    };
    let model = load(graph);
    let x = Tensor::from_vec(vec![rows, d_in], f32s(9, rows * d_in)).unwrap();
    let out = run_everywhere(&model, &[("x".to_owned(), x.clone())]);
    // Three nodes, then the output step.
    assert_eq!(out.trace.len(), 4);
    assert_eq!(model.trace_len(), 4);

    // Re-execute each node alone from the previous one's outputs.
    let t = |shape: Vec<usize>, v: Vec<f32>| Some(Tensor::from_vec(shape, v).unwrap());
    let h = model
        .execute_node(
            0,
            &[Some(x), t(vec![d_in, d_hidden], w1), t(vec![d_hidden], b1)],
        )
        .unwrap();
    let a = model.execute_node(1, &[Some(h[0].clone())]).unwrap();
    let y = model
        .execute_node(
            2,
            &[Some(a[0].clone()), t(vec![d_hidden, 3], w2), t(vec![3], b2)],
        )
        .unwrap();
    let steps = [h, a, y];
    for (i, outs) in steps.iter().enumerate() {
        assert_eq!(out.trace.step_hash(i), Some(node_step_hash(i, outs)));
    }
    // The output leaf binds the graph output, and a receipt proves it.
    let [h, _, y] = steps;
    let o = outputs_hash(&[y[0].clone()]);
    assert_eq!(out.trace.step_hash(3), Some(output_leaf(3, &o)));
    let proof = output_proof(&out.trace).unwrap();
    assert!(verify_output(&out.trace.root(), 4, &o, &proof));
    let wrong = outputs_hash(&[h[0].clone()]);
    assert!(!verify_output(&out.trace.root(), 4, &wrong, &proof));
    assert!(!verify_output(&out.trace.root(), 3, &o, &proof));
}
