//! `deed conformance DIR`: runs the official ONNX backend node tests (as written by
//! `onnx-node-tests.py`: one folder per case with `model.onnx` and
//! `test_data_set_*/{input,output}_N.pb`) through the canonical runtime and compares
//! with the ONNX default tolerances (rtol 1e-3, atol 1e-7; integers, bools and strings
//! exact). With `--determinism`, every data set that matched runs again with other
//! kernel threads and kernels ([`determinism_runs`]), and must give the same trace root
//! (which binds every step's outputs and the graph outputs) bit for bit.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use deed_runtime::{KernelMode, Limits, Model, RunOptions, RuntimeError};
use deed_types::{Tensor, TensorData};
use serde::Serialize;

/// Relative tolerance for floating-point outputs.
pub const RTOL: f64 = 1e-3;
/// Absolute tolerance for floating-point outputs.
pub const ATOL: f64 = 1e-7;

/// The verdict on one case.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum Verdict {
    /// Every output matched.
    Passed,
    /// The runtime ran the case and got a wrong answer, or refused valid input.
    Failed(String),
    /// The case needs an operator, attribute or dtype the runtime does not implement.
    Unsupported(String),
    /// The suite wrote the model but no usable data set (its generator drops data it
    /// cannot store as plain tensors), so nothing can be checked. Not counted.
    NoData,
}

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Case folder name.
    pub name: String,
    /// Verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Lists case folders (those holding `model.onnx`), sorted.
pub fn cases(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let p = e?.path();
        if p.join("model.onnx").is_file() {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

fn read_pb(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path)?;
    Ok(deed_runtime::proto::tensor_from_pb_bytes(&bytes)?.1)
}

fn numbered(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let mut v: Vec<(usize, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(".pb"))
            .and_then(|n| n.parse().ok())
        {
            v.push((n, p));
        }
    }
    v.sort();
    Ok(v.into_iter().map(|(_, p)| p).collect())
}

fn classify(e: RuntimeError) -> Verdict {
    use deed_runtime::OpError;
    let unsupported = e.is_unsupported()
        || matches!(
            &e,
            RuntimeError::Node {
                source: OpError::ValueNeeded { .. } | OpError::DType { .. },
                ..
            }
        );
    if unsupported {
        Verdict::Unsupported(e.to_string())
    } else {
        Verdict::Failed(e.to_string())
    }
}

/// The runs of `deed conformance --determinism` besides `base`: the same kernels at 3
/// threads (an odd count, so that no split is even), and the reference kernels.
pub fn determinism_runs(base: &RunOptions) -> Vec<RunOptions> {
    vec![
        RunOptions {
            threads: 3,
            ..base.clone()
        },
        RunOptions {
            mode: KernelMode::Reference,
            threads: 1,
            ..base.clone()
        },
    ]
}

fn describe(o: &RunOptions) -> String {
    let kernels = match o.mode {
        KernelMode::Reference => "reference",
        KernelMode::Fast => "fast",
    };
    let s = if o.threads == 1 { "" } else { "s" };
    format!("{kernels} kernels at {} thread{s}", o.threads)
}

/// Runs one case folder; a data set whose outputs match then runs again under each of
/// `also`, whose trace roots must equal the first run's.
pub fn run_case(dir: &Path, opts: &RunOptions, also: &[RunOptions]) -> Verdict {
    match run_case_inner(dir, opts, also) {
        Ok(v) => v,
        Err(e) => Verdict::Failed(format!("{e:#}")),
    }
}

fn run_case_inner(dir: &Path, opts: &RunOptions, also: &[RunOptions]) -> Result<Verdict> {
    let bytes = std::fs::read(dir.join("model.onnx"))?;
    let model = match Model::load(&bytes, &Limits::default()) {
        Ok(m) => m,
        Err(e) => return Ok(classify(e)),
    };
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    let required: Vec<String> = model.required_inputs().map(|v| v.name.clone()).collect();
    let mut checked = 0;
    for set in sets {
        let in_files = numbered(&set, "input_")?;
        let out_files = numbered(&set, "output_")?;
        if out_files.is_empty() || (in_files.is_empty() && !required.is_empty()) {
            continue;
        }
        checked += 1;
        let mut inputs = Vec::new();
        for (i, p) in in_files.iter().enumerate() {
            let bytes = std::fs::read(p)?;
            let (name, t) = deed_runtime::proto::tensor_from_pb_bytes(&bytes)?;
            // The suite names inputs after the graph's; fall back to position.
            let name = if model.inputs.iter().any(|v| v.name == name) {
                name
            } else if let Some(n) = required.get(i) {
                n.clone()
            } else {
                return Ok(Verdict::Failed(format!(
                    "input {i} has no matching graph input"
                )));
            };
            inputs.push((name, t));
        }
        let expected: Vec<Tensor> = out_files
            .iter()
            .map(|p| read_pb(p))
            .collect::<Result<_>>()?;
        let out = match model.run(&inputs, opts) {
            Ok(o) => o,
            Err(e) => return Ok(classify(e)),
        };
        if out.outputs.len() != expected.len() {
            return Ok(Verdict::Failed(format!(
                "{} outputs, expected {}",
                out.outputs.len(),
                expected.len()
            )));
        }
        for ((name, got), want) in out.outputs.iter().zip(&expected) {
            if let Err(why) = compare(got, want) {
                return Ok(Verdict::Failed(format!("output `{name}`: {why}")));
            }
        }
        let root = out.trace.root();
        for other in also {
            let again = match model.run(&inputs, other) {
                Ok(o) => o.trace.root(),
                Err(e) => {
                    return Ok(Verdict::Failed(format!(
                        "ran with {} but not with {}: {e}",
                        describe(opts),
                        describe(other)
                    )))
                }
            };
            if again != root {
                return Ok(Verdict::Failed(format!(
                    "not deterministic: trace root {root} with {}, {again} with {}",
                    describe(opts),
                    describe(other)
                )));
            }
        }
    }
    Ok(if checked == 0 {
        Verdict::NoData
    } else {
        Verdict::Passed
    })
}

/// Compares an output with the expected tensor under the ONNX tolerances.
pub fn compare(got: &Tensor, want: &Tensor) -> std::result::Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {} , expected {}", got.dtype(), want.dtype()));
    }
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    fn close(i: usize, a: f64, b: f64) -> std::result::Result<(), String> {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= ATOL + RTOL * b.abs();
        if ok {
            Ok(())
        } else {
            Err(format!("element {i}: got {a}, expected {b}"))
        }
    }
    macro_rules! floats {
        ($a:expr, $b:expr, $conv:expr) => {{
            for (i, (x, y)) in $a.iter().zip($b.iter()).enumerate() {
                close(i, $conv(*x), $conv(*y))?;
            }
            Ok(())
        }};
    }
    match (got.data(), want.data()) {
        (TensorData::F32(a), TensorData::F32(b)) => floats!(a, b, |x: f32| x as f64),
        (TensorData::F64(a), TensorData::F64(b)) => floats!(a, b, |x: f64| x),
        (TensorData::F16(a), TensorData::F16(b)) => floats!(a, b, |x: half::f16| x.to_f64()),
        (TensorData::BF16(a), TensorData::BF16(b)) => floats!(a, b, |x: half::bf16| x.to_f64()),
        _ => {
            if got.encode() == want.encode() {
                Ok(())
            } else {
                let first = deed_types::with_data!(got.data(), v => format!("{:?}", v.iter().take(8).collect::<Vec<_>>()));
                let exp = deed_types::with_data!(want.data(), v => format!("{:?}", v.iter().take(8).collect::<Vec<_>>()));
                Err(format!("values differ: got {first}…, expected {exp}…"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use tract_onnx::pb;

    fn f32_pb(name: &str, t: &Tensor) -> Vec<u8> {
        let values = t.as_slice::<f32>().unwrap_or_default();
        pb::TensorProto {
            name: name.into(),
            dims: t.shape().iter().map(|&d| d as i64).collect(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// A case folder for the example MLP under the temporary folder, its expected
    /// output the one the runtime computes.
    fn mlp_case(name: &str) -> PathBuf {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mlp");
        let dir = std::env::temp_dir().join(format!("deed-{name}-{}", std::process::id()));
        let set = dir.join("test_data_set_0");
        std::fs::create_dir_all(&set).unwrap();
        let bytes = std::fs::read(example.join("model.onnx")).unwrap();
        std::fs::write(dir.join("model.onnx"), &bytes).unwrap();
        let model = Model::load(&bytes, &Limits::default()).unwrap();
        let x = crate::tensor_io::read_tensor(&example.join("x.npy")).unwrap();
        let input = model.required_inputs().next().unwrap().name.clone();
        std::fs::write(set.join("input_0.pb"), f32_pb(&input, &x)).unwrap();
        let out = model.run(&[(input, x)], &RunOptions::default()).unwrap();
        let (name, y) = &out.outputs[0];
        std::fs::write(set.join("output_0.pb"), f32_pb(name, y)).unwrap();
        dir
    }

    /// The determinism runs pass a deterministic case, and a run whose trace root
    /// differs (one without a trace, whose root is the empty trace's) fails it, naming
    /// both runs.
    #[test]
    fn a_case_passes_only_when_every_run_gives_its_trace_root() {
        let dir = mlp_case("determinism");
        let base = RunOptions {
            mode: KernelMode::Fast,
            ..RunOptions::default()
        };
        let also = determinism_runs(&base);
        assert_eq!(also.len(), 2);
        assert_eq!(run_case(&dir, &base, &also), Verdict::Passed);
        let untraced = RunOptions {
            trace: false,
            ..base.clone()
        };
        match run_case(&dir, &base, &[untraced]) {
            Verdict::Failed(why) => {
                assert!(why.starts_with("not deterministic: trace root "), "{why}");
                assert!(why.contains("with fast kernels at 1 thread"), "{why}");
            }
            v => panic!("expected a failure, got {v:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
