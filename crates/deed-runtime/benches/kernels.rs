//! Whole-model runs of the canonical runtime against tract, on the benchmark models
//! written by `scripts/gen_models.py` into `target/bench-models` (or
//! `$DEED_BENCH_MODELS`). Models that are absent are skipped with a message, so the
//! bench builds and runs on a fresh clone; `scripts/bench.py` writes them.
//!
//! ```text
//! "$(scripts/venv.sh)" scripts/gen_models.py target/bench-models
//! cargo bench -p deed-runtime --bench kernels
//! ```
//!
//! Per model: `deed/1t` (one kernel thread, trace on, as `deed run`), `deed/1t-no-trace`
//! (the cost of trace hashing), `deed/2t`, and `tract`. Planning and loading happen
//! outside the timed loop, as in `deed run --repeat`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use deed_runtime::{Ctx, KernelMode, Limits, Model, RunOptions};
use deed_types::{Tensor, TensorData};
use tract_onnx::prelude::{
    Framework, InferenceFact, InferenceModelExt, IntoRunnable, TValue, TVec, Tensor as TractTensor,
};

const MODELS: [&str; 5] = ["mlp_b1", "mlp_b64", "cnn", "transformer", "mlp_int8"];

type BoxError = Box<dyn std::error::Error>;

fn models_dir() -> PathBuf {
    std::env::var_os("DEED_BENCH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-models"))
}

/// The inputs listed in a case's `case.json`, as (graph input name, file).
fn case_inputs(dir: &Path) -> Result<Vec<(String, PathBuf)>, BoxError> {
    let case: serde_json::Value = serde_json::from_reader(File::open(dir.join("case.json"))?)?;
    let inputs = case["inputs"]
        .as_array()
        .ok_or("case.json has no inputs list")?;
    inputs
        .iter()
        .map(|i| {
            let name = i["name"].as_str().ok_or("input without a name")?;
            let file = i["file"].as_str().ok_or("input without a file")?;
            Ok((name.to_owned(), dir.join(file)))
        })
        .collect()
}

/// Reads a `.npy` file into a deed tensor and a tract tensor holding the same values.
fn read_npy(path: &Path) -> Result<(Tensor, TractTensor), BoxError> {
    let npy = npyz::NpyFile::new(BufReader::new(File::open(path)?))?;
    if npy.order() != npyz::Order::C {
        return Err(format!("{}: Fortran order", path.display()).into());
    }
    let shape = npy.shape().iter().map(|&d| d as usize).collect::<Vec<_>>();
    let descr = npy.dtype().descr();
    Ok(match descr.trim_start_matches(['<', '|', '=']) {
        "f4" => {
            let v = npy.into_vec::<f32>()?;
            let t = TractTensor::from_shape(&shape, &v)?;
            (Tensor::new(shape, TensorData::F32(v))?, t)
        }
        "i8" => {
            let v = npy.into_vec::<i64>()?;
            let t = TractTensor::from_shape(&shape, &v)?;
            (Tensor::new(shape, TensorData::I64(v))?, t)
        }
        "u1" => {
            let v = npy.into_vec::<u8>()?;
            let t = TractTensor::from_shape(&shape, &v)?;
            (Tensor::new(shape, TensorData::U8(v))?, t)
        }
        other => return Err(format!("{}: unsupported dtype {other}", path.display()).into()),
    })
}

fn bench_model(c: &mut Criterion, name: &str, dir: &Path) -> Result<(), BoxError> {
    let model_path = dir.join("model.onnx");
    let mut deed_inputs = Vec::new();
    let mut tract_inputs = Vec::new();
    for (input, file) in case_inputs(dir)? {
        let (d, t) = read_npy(&file)?;
        deed_inputs.push((input.clone(), d));
        tract_inputs.push((input, t));
    }

    let mut group = c.benchmark_group(name);
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500));

    let limits = Limits::default();
    let model = Model::load(&std::fs::read(&model_path)?, &limits)?;
    let plan = model.plan(&deed_inputs, &limits)?;
    let mode = KernelMode::from_env();
    for (label, threads, trace) in [
        ("deed/1t", 1, true),
        ("deed/1t-no-trace", 1, false),
        ("deed/2t", 2, true),
    ] {
        let ctx = Ctx::new(mode, threads);
        let opts = RunOptions {
            mode,
            threads,
            trace,
            ..RunOptions::default()
        };
        // One run outside the loop so that an unsupported model fails here, not mid-bench.
        plan.execute(&deed_inputs, &ctx, &opts)?;
        group.bench_function(label, |b| {
            b.iter(|| plan.execute(&deed_inputs, &ctx, &opts).map(|o| o.cost))
        });
    }

    let mut tract_model = tract_onnx::onnx().model_for_path(&model_path)?;
    let mut values = TVec::new();
    for (ix, outlet) in tract_model
        .input_outlets()?
        .to_vec()
        .into_iter()
        .enumerate()
    {
        let input_name = tract_model.node(outlet.node).name.clone();
        let (_, t) = tract_inputs
            .iter()
            .find(|(n, _)| *n == input_name)
            .ok_or_else(|| format!("no input file for {input_name}"))?;
        tract_model.set_input_fact(ix, InferenceFact::dt_shape_from_tensor(t))?;
        values.push(TValue::from(t.clone()));
    }
    let tract_plan = tract_model.into_optimized()?.into_runnable()?;
    tract_plan.run(values.clone())?;
    group.bench_function("tract", |b| {
        b.iter(|| tract_plan.run(values.clone()).map(|o| o.len()))
    });
    group.finish();
    Ok(())
}

fn whole_models(c: &mut Criterion) {
    let dir = models_dir();
    for name in MODELS {
        let case = dir.join(name);
        if !case.join("case.json").is_file() {
            eprintln!(
                "kernels: skipping {name}: {} not found (write it with scripts/gen_models.py target/bench-models)",
                case.display()
            );
            continue;
        }
        if let Err(e) = bench_model(c, name, &case) {
            eprintln!("kernels: skipping {name}: {e}");
        }
    }
}

criterion_group!(benches, whole_models);
criterion_main!(benches);
