//! `deed conformance DIR`: runs the official ONNX backend node tests (as written by
//! `onnx-node-tests.py`: one folder per case with `model.onnx` and
//! `test_data_set_*/{input,output}_N.pb`) through the canonical runtime and compares
//! with the ONNX default tolerances (rtol 1e-3, atol 1e-7; integers, bools and strings
//! exact).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use deed_runtime::{Limits, Model, RunOptions, RuntimeError};
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

/// Runs one case folder.
pub fn run_case(dir: &Path, opts: &RunOptions) -> Verdict {
    match run_case_inner(dir, opts) {
        Ok(v) => v,
        Err(e) => Verdict::Failed(format!("{e:#}")),
    }
}

fn run_case_inner(dir: &Path, opts: &RunOptions) -> Result<Verdict> {
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
