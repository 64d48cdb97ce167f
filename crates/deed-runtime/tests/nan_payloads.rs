//! NaN payloads do not leak into a run. Operators that store canonical NaNs themselves
//! (`Op::nans_canonical`) skip the plan's scan of their outputs on the fast kernels; the
//! reference kernels always scan. Each case feeds an operator inputs full of NaNs with
//! payloads, negative and signaling NaNs, infinities, zeros of both signs and
//! denormals, as graph inputs (so parameters such as a convolution's bias or a scale
//! carry them too), and checks that the fast kernels on 1, 2 and 4 threads give the
//! reference's outputs and trace root bit for bit, with no NaN but the canonical one.

#![allow(clippy::unwrap_used)]

use deed_runtime::{KernelMode, Limits, Model, RunOptions};
use deed_types::{DType, Tensor, TensorData};
use half::{bf16, f16};
use prost::Message;
use tract_onnx::pb;

mod common;
use common::{attr_float, attr_int, attr_ints, attr_string};

/// f32 values a case draws from besides ordinary numbers.
const SPECIAL_F32: [u32; 10] = [
    0x7fc0_0001, // quiet NaN with a payload
    0xffc0_0000, // negative quiet NaN (x86's default NaN)
    0x7f80_0001, // signaling NaN
    0xff80_1234, // negative signaling NaN with a payload
    0x7fc0_0000, // the canonical NaN
    0x7f80_0000, // +Inf
    0xff80_0000, // −Inf
    0x8000_0000, // −0
    0x0000_0001, // the smallest denormal
    0x807f_ffff, // the largest negative denormal
];

/// Deterministic values: about a third special, the rest in [−4, 4).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (s >> 33) as u32;
            if r.is_multiple_of(3) {
                f32::from_bits(SPECIAL_F32[(r / 3) as usize % SPECIAL_F32.len()])
            } else {
                (r % 8000) as f32 / 1000.0 - 4.0
            }
        })
        .collect()
}

/// A tensor of `dtype` from f32 bit patterns; for f64 and the 16-bit floats a NaN's
/// payload and sign carry over, so every width sees payload NaNs.
fn tensor(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    let v = values(seed, n);
    let wide = |x: f32| {
        if x.is_nan() {
            let b = x.to_bits() as u64;
            f64::from_bits(
                ((b & 0x8000_0000) << 32) | 0x7ff0_0000_0000_0000 | ((b & 0x7f_ffff) << 29),
            )
        } else {
            x as f64
        }
    };
    let data = match dtype {
        DType::F32 => TensorData::F32(v),
        DType::F64 => TensorData::F64(v.into_iter().map(wide).collect()),
        DType::F16 => TensorData::F16(
            v.into_iter()
                .map(|x| {
                    if x.is_nan() {
                        let b = x.to_bits();
                        f16::from_bits(
                            ((b >> 16) as u16 & 0x8000) | 0x7c00 | (b as u16 & 0x3ff).max(1),
                        )
                    } else {
                        f16::from_f32(x)
                    }
                })
                .collect(),
        ),
        DType::BF16 => TensorData::BF16(v.into_iter().map(bf16::from_f32).collect()),
        DType::U8 => TensorData::U8((0..n).map(|i| (i * 37 % 256) as u8).collect()),
        other => panic!("no generator for {other}"),
    };
    Tensor::new(shape.to_vec(), data).unwrap()
}

fn elem_type(d: DType) -> i32 {
    match d {
        DType::F32 => common::FLOAT,
        DType::U8 => 2,
        DType::F16 => 10,
        DType::F64 => 11,
        DType::BF16 => 16,
        other => panic!("no ONNX type for {other}"),
    }
}

/// One node fed by graph inputs of the given dtypes and shapes.
struct Case {
    op: &'static str,
    attrs: Vec<pb::AttributeProto>,
    inputs: Vec<(DType, Vec<usize>)>,
}

fn case(op: &'static str, attrs: Vec<pb::AttributeProto>, inputs: &[(DType, &[usize])]) -> Case {
    Case {
        op,
        attrs,
        inputs: inputs.iter().map(|(d, s)| (*d, s.to_vec())).collect(),
    }
}

fn nan_bits_canonical(t: &Tensor) -> bool {
    match t.data() {
        TensorData::F32(v) => v.iter().all(|x| !x.is_nan() || x.to_bits() == 0x7fc0_0000),
        TensorData::F64(v) => v
            .iter()
            .all(|x| !x.is_nan() || x.to_bits() == 0x7ff8_0000_0000_0000),
        TensorData::F16(v) => v.iter().all(|x| !x.is_nan() || x.to_bits() == 0x7e00),
        TensorData::BF16(v) => v.iter().all(|x| !x.is_nan() || x.to_bits() == 0x7fc0),
        _ => true,
    }
}

fn has_nan(t: &Tensor) -> bool {
    match t.data() {
        TensorData::F32(v) => v.iter().any(|x| x.is_nan()),
        TensorData::F64(v) => v.iter().any(|x| x.is_nan()),
        TensorData::F16(v) => v.iter().any(|x| x.is_nan()),
        TensorData::BF16(v) => v.iter().any(|x| x.is_nan()),
        _ => false,
    }
}

/// Runs `c` on every kernel path; returns whether its first output holds a NaN.
fn check(c: &Case, seed: u64) -> bool {
    let names: Vec<String> = (0..c.inputs.len()).map(|i| format!("in{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let graph = pb::GraphProto {
        name: c.op.into(),
        node: vec![common::node("n", c.op, &name_refs, &["y"], c.attrs.clone())],
        input: c
            .inputs
            .iter()
            .zip(&names)
            .map(|((d, s), n)| {
                let dims: Vec<Result<i64, &str>> = s.iter().map(|&x| Ok(x as i64)).collect();
                common::value(n, elem_type(*d), &dims)
            })
            .collect(),
        output: vec![pb::ValueInfoProto {
            name: "y".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut proto = common::model(graph);
    proto.opset_import[0].version = 20;
    let model = Model::load(&proto.encode_to_vec(), &Limits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", c.op));
    let inputs: Vec<(String, Tensor)> = c
        .inputs
        .iter()
        .zip(&names)
        .enumerate()
        .map(|(i, ((d, s), n))| (n.clone(), tensor(*d, s, seed * 31 + i as u64)))
        .collect();
    let run = |mode, threads| {
        let opts = RunOptions {
            mode,
            threads,
            ..RunOptions::default()
        };
        model
            .run(&inputs, &opts)
            .unwrap_or_else(|e| panic!("{}: {e}", c.op))
    };
    let reference = run(KernelMode::Reference, 1);
    for (_, t) in &reference.outputs {
        assert!(
            nan_bits_canonical(t),
            "{}: the reference stored a payload NaN",
            c.op
        );
    }
    for threads in [1, 2, 4] {
        let fast = run(KernelMode::Fast, threads);
        for ((_, r), (_, f)) in reference.outputs.iter().zip(&fast.outputs) {
            assert!(
                r.encode() == f.encode(),
                "{} on {threads} threads: the fast kernels' output differs from the reference's",
                c.op
            );
        }
        assert_eq!(
            fast.trace.root(),
            reference.trace.root(),
            "{} on {threads} threads",
            c.op
        );
    }
    reference.outputs.first().is_some_and(|(_, t)| has_nan(t))
}

#[test]
fn payload_nans_come_out_canonical_on_every_kernel_path() {
    use DType::{F16, F32, F64, U8};
    let x4: &[usize] = &[2, 3, 9, 11];
    let mut cases = Vec::new();
    for op in ["Add", "Sub", "Mul", "Div"] {
        cases.push(case(op, vec![], &[(F32, &[4, 37]), (F32, &[4, 37])]));
        cases.push(case(op, vec![], &[(F32, &[4, 37]), (F32, &[])]));
        cases.push(case(op, vec![], &[(F32, &[4, 37]), (F32, &[37])]));
        cases.push(case(op, vec![], &[(F64, &[4, 37]), (F64, &[4, 1])]));
        cases.push(case(op, vec![], &[(F16, &[4, 37]), (F16, &[4, 37])]));
    }
    for op in [
        "Relu", "Exp", "Tanh", "Sigmoid", "Erf", "Sqrt", "Log", "Floor", "Abs", "Neg", "Sign",
        "Softplus", "Sin",
    ] {
        for d in [F32, F64, F16] {
            cases.push(case(op, vec![], &[(d, &[5, 41])]));
        }
    }
    for tanh in ["none", "tanh"] {
        cases.push(case(
            "Gelu",
            vec![attr_string("approximate", tanh)],
            &[(F32, &[5, 41])],
        ));
    }
    for d in [F32, F64] {
        let conv = |attrs: Vec<pb::AttributeProto>, w: &[usize], bias: bool| {
            let mut ins: Vec<(DType, &[usize])> = vec![(d, x4), (d, w)];
            if bias {
                ins.push((d, &w[..1]));
            }
            case("Conv", attrs, &ins)
        };
        cases.push(conv(
            vec![attr_ints("pads", &[1, 1, 1, 1])],
            &[8, 3, 3, 3],
            true,
        ));
        cases.push(conv(
            vec![attr_ints("pads", &[1, 1, 1, 1])],
            &[8, 3, 3, 3],
            false,
        ));
        cases.push(conv(vec![], &[16, 3, 1, 1], true));
        cases.push(conv(
            vec![attr_ints("strides", &[2, 2])],
            &[4, 3, 3, 3],
            true,
        ));
        cases.push(conv(vec![attr_int("group", 3)], &[6, 1, 3, 3], true));
        cases.push(case(
            "BatchNormalization",
            vec![attr_float("epsilon", 1e-5)],
            &[(d, x4), (d, &[3]), (d, &[3]), (d, &[3]), (d, &[3])],
        ));
        cases.push(case("MatMul", vec![], &[(d, &[7, 19]), (d, &[19, 33])]));
        cases.push(case(
            "MatMul",
            vec![],
            &[(d, &[2, 7, 19]), (d, &[2, 19, 5])],
        ));
        cases.push(case(
            "Gemm",
            vec![
                attr_float("alpha", 0.5),
                attr_float("beta", 2.0),
                attr_int("transB", 1),
            ],
            &[(d, &[7, 19]), (d, &[33, 19]), (d, &[33])],
        ));
        cases.push(case("Gemm", vec![], &[(d, &[7, 19]), (d, &[19, 33])]));
    }
    for d in [F32, F64, F16] {
        let k = |v: &[i64]| attr_ints("kernel_shape", v);
        cases.push(case(
            "MaxPool",
            vec![k(&[2, 2]), attr_ints("strides", &[2, 2])],
            &[(d, x4)],
        ));
        cases.push(case(
            "MaxPool",
            vec![k(&[3, 3]), attr_ints("pads", &[1, 1, 1, 1])],
            &[(d, x4)],
        ));
        cases.push(case("AveragePool", vec![k(&[3, 3])], &[(d, x4)]));
        cases.push(case(
            "LpPool",
            vec![k(&[2, 2]), attr_int("p", 3)],
            &[(d, x4)],
        ));
        cases.push(case("GlobalAveragePool", vec![], &[(d, x4)]));
        cases.push(case("GlobalMaxPool", vec![], &[(d, x4)]));
    }
    cases.push(case(
        "DequantizeLinear",
        vec![],
        &[(U8, &[6, 10]), (F32, &[])],
    ));
    cases.push(case(
        "DequantizeLinear",
        vec![attr_int("axis", 1)],
        &[(U8, &[6, 10]), (F32, &[10])],
    ));
    for (from, to) in [(F64, 1), (F32, 10), (F32, 11), (F16, 1), (F32, 16)] {
        cases.push(case("Cast", vec![attr_int("to", to)], &[(from, &[5, 41])]));
    }
    let mut with_nan = 0;
    for (i, c) in cases.iter().enumerate() {
        with_nan += usize::from(check(c, i as u64));
    }
    // Nearly every case's output holds NaNs (the inputs are full of them): the bits
    // above were checked where they matter.
    assert!(
        with_nan * 10 >= cases.len() * 9,
        "{with_nan} of {}",
        cases.len()
    );
}
