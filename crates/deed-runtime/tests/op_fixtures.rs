//! Runs the kept fixtures: cases in the layout of the ONNX backend node tests
//! (`model.onnx`, `test_data_set_0/{input,output}_<i>.pb`).
//!
//! - `fixtures/onnx-node/`: cases copied from the official ONNX node tests (quantized,
//!   `ai.onnx.ml` and recurrent operators, `LinearAttention`, `TensorScatter`, `DFT`,
//!   `STFT`, `AffineGrid`, `GridSample`, `If`, `Loop`, `Scan`, `Unique`,
//!   `NonMaxSuppression`);
//! - `fixtures/ml/`: scikit-learn models exported by skl2onnx, expected outputs from
//!   onnxruntime (`scripts/gen_ml_fixtures.py`);
//! - `fixtures/function-ops/`: cases of the ONNX node tests for operators defined by a
//!   function body (`Attention`, `RotaryEmbedding`, `RMSNormalization`, `Swish`,
//!   `SwiGLU`, `CausalConvWithState`, the two losses, the windows, `LinearAttention`,
//!   `AffineGrid`, `Range`, `FlexAttention`), each beside its `_expanded` twin (the body, run with
//!   `Scan`, `If` and `Loop` for the last three), which must give the same bits;
//! - `fixtures/onnx-node-proto-data/`: the official node tests whose data the
//!   conformance cases lack, since the ONNX package stores it as `TensorProto`s: the
//!   low-bit dtypes (float8, float4, 4- and 2-bit integers: `Cast`, `CastLike`,
//!   `QuantizeLinear`, `DequantizeLinear`) and the casts between float, double,
//!   float16 and bfloat16 (`scripts/gen_proto_data_node_fixtures.py`);
//! - `fixtures/lowbit-ops/`: data-movement operators on the low-bit dtypes, expected
//!   outputs from ONNX's reference evaluator (`scripts/gen_lowbit_op_fixtures.py`).
//!
//! Floats compare with the conformance tolerance (|a − e| ≤ 1e−7 + 1e−3·|e|),
//! everything else exactly; each case also runs with the reference kernels and with
//! 3 threads, which must give the same bits as the default run.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use deed_runtime::proto::tensor_from_pb_bytes;
use deed_runtime::{KernelMode, Limits, Model, RunOptions};
use deed_types::{Tensor, TensorData};

fn cases(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    v.sort();
    v
}

fn read_pbs(dir: &Path, prefix: &str) -> Vec<Tensor> {
    let mut out = Vec::new();
    for i in 0.. {
        let p = dir.join(format!("{prefix}_{i}.pb"));
        if !p.exists() {
            break;
        }
        out.push(tensor_from_pb_bytes(&std::fs::read(p).unwrap()).unwrap().1);
    }
    out
}

fn close(name: &str, got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.shape() != want.shape() || got.dtype() != want.dtype() {
        return Err(format!(
            "{name}: got {} {:?}, want {} {:?}",
            got.dtype(),
            got.shape(),
            want.dtype(),
            want.shape()
        ));
    }
    let fclose = |a: f64, e: f64| {
        (a.is_nan() && e.is_nan()) || a == e || (a - e).abs() <= 1e-7 + 1e-3 * e.abs()
    };
    let ok = match (got.data(), want.data()) {
        (TensorData::F32(a), TensorData::F32(e)) => a
            .iter()
            .zip(e)
            .all(|(&a, &e)| fclose(f64::from(a), f64::from(e))),
        (TensorData::F64(a), TensorData::F64(e)) => a.iter().zip(e).all(|(&a, &e)| fclose(a, e)),
        (TensorData::F16(a), TensorData::F16(e)) => a
            .iter()
            .zip(e)
            .all(|(a, e)| fclose(f64::from(a.to_f32()), f64::from(e.to_f32()))),
        (TensorData::BF16(a), TensorData::BF16(e)) => a
            .iter()
            .zip(e)
            .all(|(a, e)| fclose(f64::from(a.to_f32()), f64::from(e.to_f32()))),
        (a, e) => a == e,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name}: got {:?}, want {:?}",
            got.data(),
            want.data()
        ))
    }
}

/// A case's model and its inputs, named.
fn load_case(case: &Path) -> Result<(Model, Vec<(String, Tensor)>), String> {
    let bytes = std::fs::read(case.join("model.onnx")).unwrap();
    let model = Model::load(&bytes, &Limits::default()).map_err(|e| format!("load: {e}"))?;
    let inputs: Vec<(String, Tensor)> = model
        .inputs
        .iter()
        .map(|v| v.name.clone())
        .zip(read_pbs(&case.join("test_data_set_0"), "input"))
        .collect();
    Ok((model, inputs))
}

fn run_case(case: &Path) -> Result<(), String> {
    let (model, inputs) = load_case(case)?;
    let data = case.join("test_data_set_0");
    let want = read_pbs(&data, "output");
    let mut outs = Vec::new();
    for (mode, threads) in [
        (KernelMode::Fast, 1),
        (KernelMode::Reference, 1),
        (KernelMode::Fast, 3),
    ] {
        let opts = RunOptions {
            mode,
            threads,
            ..RunOptions::default()
        };
        let out = model.run(&inputs, &opts).map_err(|e| format!("run: {e}"))?;
        outs.push(out.outputs);
    }
    // Compared as bits: an output holding a NaN is not equal to itself as a value.
    for o in &outs[1..] {
        if output_bits(o) != output_bits(&outs[0]) {
            return Err("reference or threaded run differs from the default run".into());
        }
    }
    if outs[0].len() != want.len() {
        return Err(format!("{} outputs, want {}", outs[0].len(), want.len()));
    }
    for ((name, got), want) in outs[0].iter().zip(&want) {
        close(name, got, want)?;
    }
    Ok(())
}

fn check_dir(dir: &str) {
    let mut failures = Vec::new();
    let all = cases(dir);
    assert!(!all.is_empty(), "no cases in {dir}");
    for case in &all {
        if let Err(e) = run_case(case) {
            failures.push(format!(
                "{}: {e}",
                case.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn onnx_node_tests_kept_in_the_repo() {
    check_dir("onnx-node");
}

/// Low-bit outputs compare exactly: the low-bit types' equality is equality of bits.
#[test]
fn node_tests_with_tensor_proto_data_pass() {
    check_dir("onnx-node-proto-data");
}

#[test]
fn low_bit_dtypes_move_through_data_movement_operators() {
    check_dir("lowbit-ops");
}

#[test]
fn sklearn_models_match_onnxruntime() {
    check_dir("ml");
}

#[test]
fn function_op_cases_match_the_onnx_reference() {
    check_dir("function-ops");
}

/// The bits of every output, NaN payloads included.
fn output_bits(outputs: &[(String, Tensor)]) -> Vec<(String, Vec<u8>)> {
    outputs
        .iter()
        .map(|(n, t)| (n.clone(), deed_types::encode_list(std::slice::from_ref(t))))
        .collect()
}

#[test]
fn function_ops_give_the_bits_of_their_bodies() {
    let all = cases("function-ops");
    let pairs: Vec<(&PathBuf, PathBuf)> = all
        .iter()
        .filter_map(|c| {
            let name = c.file_name()?.to_str()?;
            let twin = c.with_file_name(format!("{name}_expanded"));
            (!name.ends_with("_expanded") && twin.exists()).then_some((c, twin))
        })
        .collect();
    assert!(
        pairs.len() >= 10,
        "{} Attention cases with a twin",
        pairs.len()
    );
    for (case, twin) in pairs {
        let (native, inputs) = load_case(case).unwrap();
        let (body, _) = load_case(&twin).unwrap();
        for (mode, threads) in [
            (KernelMode::Fast, 1),
            (KernelMode::Fast, 2),
            (KernelMode::Reference, 1),
        ] {
            let opts = RunOptions {
                mode,
                threads,
                ..RunOptions::default()
            };
            let a = native.run(&inputs, &opts).unwrap().outputs;
            let b = body.run(&inputs, &opts).unwrap().outputs;
            assert_eq!(
                output_bits(&a),
                output_bits(&b),
                "{}: the operator and its function body differ ({mode:?}, {threads} threads)",
                case.display()
            );
        }
    }
}
