//! Runs an ONNX model with tract and reports its latency: the tract side of the
//! benchmark comparison made by `scripts/bench.py`.
//!
//! ```text
//! cargo run --release -p deed-runtime --example tract_run -- MODEL.onnx \
//!     [--input NAME=PATH.npy]... [--repeat N] [--out DIR]
//! ```
//!
//! Prints one JSON object: `load_ms` (parse, optimize, plan), `latency_ms`
//! (`median` and `min` of N runs after one warm-up run) and `outputs` (name, shape,
//! dtype, first values). With `--out`, each output is also written as `DIR/NAME.npy`.
//! Inputs are matched to graph inputs by name; their shapes become tract's input
//! facts, so models with symbolic dimensions run at the given shapes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use npyz::WriterBuilder;
use serde_json::json;
use tract_onnx::prelude::*;

struct Args {
    model: PathBuf,
    inputs: Vec<(String, PathBuf)>,
    repeat: usize,
    out: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args_os().skip(1);
    let mut model = None;
    let mut inputs = Vec::new();
    let mut repeat = 10;
    let mut out = None;
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| anyhow!("non-UTF-8 argument {a:?}"))?;
        let mut value = |flag: &str| {
            args.next()
                .and_then(|v| v.into_string().ok())
                .ok_or_else(|| anyhow!("{flag} needs a value"))
        };
        match arg.as_str() {
            "--input" => {
                let v = value("--input")?;
                let (name, path) = v
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--input expects NAME=PATH, got {v:?}"))?;
                inputs.push((name.to_owned(), PathBuf::from(path)));
            }
            "--repeat" => {
                repeat = value("--repeat")?
                    .parse()
                    .context("--repeat expects a count")?;
                if repeat == 0 {
                    bail!("--repeat must be at least 1");
                }
            }
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "-h" | "--help" => {
                println!("usage: tract_run MODEL.onnx [--input NAME=PATH.npy]... [--repeat N] [--out DIR]");
                std::process::exit(0);
            }
            flag if flag.starts_with("--") => bail!("unknown option {flag}"),
            path if model.is_none() => model = Some(PathBuf::from(path)),
            extra => bail!("unexpected argument {extra:?}"),
        }
    }
    let model = model.ok_or_else(|| anyhow!("missing MODEL.onnx (see --help)"))?;
    Ok(Args {
        model,
        inputs,
        repeat,
        out,
    })
}

fn read_npy(path: &Path) -> Result<Tensor> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(file))
        .with_context(|| format!("reading the .npy header of {}", path.display()))?;
    if npy.order() != npyz::Order::C {
        bail!(
            "{}: Fortran-ordered arrays are not supported",
            path.display()
        );
    }
    let shape = npy.shape().iter().map(|&d| d as usize).collect::<Vec<_>>();
    let descr = npy.dtype().descr();
    // `descr` is the header's Python literal, quotes included (`'<f4'`).
    let code = descr
        .trim_matches(|c| c == '\'' || c == '"')
        .trim_start_matches(['<', '|', '=']);
    let tensor = match code {
        "f4" => Tensor::from_shape(&shape, &npy.into_vec::<f32>()?)?,
        "f8" => Tensor::from_shape(&shape, &npy.into_vec::<f64>()?)?,
        "i8" => Tensor::from_shape(&shape, &npy.into_vec::<i64>()?)?,
        "i4" => Tensor::from_shape(&shape, &npy.into_vec::<i32>()?)?,
        "i1" => Tensor::from_shape(&shape, &npy.into_vec::<i8>()?)?,
        "u1" => Tensor::from_shape(&shape, &npy.into_vec::<u8>()?)?,
        "b1" => Tensor::from_shape(&shape, &npy.into_vec::<bool>()?)?,
        other => bail!("{}: unsupported dtype {other:?}", path.display()),
    };
    Ok(tensor)
}

fn write_npy<T: npyz::AutoSerialize + Datum + Copy>(path: &Path, t: &Tensor) -> Result<()> {
    let shape = t.shape().iter().map(|&d| d as u64).collect::<Vec<_>>();
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()?;
    w.extend(t.to_plain_array_view::<T>()?.iter().copied())?;
    w.finish()?;
    Ok(())
}

fn save(dir: &Path, name: &str, t: &Tensor) -> Result<()> {
    let path = dir.join(format!("{name}.npy"));
    match t.datum_type() {
        DatumType::F32 => write_npy::<f32>(&path, t),
        DatumType::F64 => write_npy::<f64>(&path, t),
        DatumType::I64 => write_npy::<i64>(&path, t),
        DatumType::I32 => write_npy::<i32>(&path, t),
        DatumType::I8 => write_npy::<i8>(&path, t),
        DatumType::U8 => write_npy::<u8>(&path, t),
        DatumType::Bool => write_npy::<bool>(&path, t),
        other => bail!("output {name}: cannot write dtype {other:?} as .npy"),
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut given: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, path) in &args.inputs {
        given.insert(name.clone(), read_npy(path)?);
    }

    let load = Instant::now();
    let mut model = tract_onnx::onnx()
        .model_for_path(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let mut inputs = TVec::new();
    for (ix, outlet) in model.input_outlets()?.to_vec().into_iter().enumerate() {
        let name = model.node(outlet.node).name.clone();
        let t = given
            .remove(&name)
            .ok_or_else(|| anyhow!("no --input for graph input {name:?}"))?;
        model.set_input_fact(ix, InferenceFact::dt_shape_from_tensor(&t))?;
        inputs.push(t);
    }
    if let Some(extra) = given.keys().next() {
        bail!("--input {extra:?} is not a graph input");
    }
    let output_names = model
        .output_outlets()?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect::<Vec<_>>();
    let plan = model.into_optimized()?.into_runnable()?;
    let load_ms = load.elapsed().as_secs_f64() * 1e3;

    let values: TVec<TValue> = inputs.into_iter().map(TValue::from).collect();
    let mut outputs = plan.run(values.clone())?;
    let mut times = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat {
        let start = Instant::now();
        outputs = plan.run(values.clone())?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    let median = if times.len() % 2 == 0 {
        (times[mid - 1] + times[mid]) / 2.0
    } else {
        times[mid]
    };

    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut described = Vec::new();
    for (name, value) in output_names.iter().zip(outputs.iter()) {
        let t: &Tensor = value;
        if let Some(dir) = &args.out {
            save(dir, name, t)?;
        }
        let first = t.cast_to::<f64>().ok().and_then(|c| {
            c.to_plain_array_view::<f64>()
                .ok()
                .map(|a| a.iter().take(8).copied().collect::<Vec<_>>())
        });
        described.push(json!({
            "name": name,
            "shape": t.shape(),
            "dtype": format!("{:?}", t.datum_type()).to_lowercase(),
            "first": first,
        }));
    }
    let report = json!({
        "runtime": "tract",
        "load_ms": load_ms,
        "latency_ms": { "median": median, "min": times[0] },
        "repeat": args.repeat,
        "outputs": described,
    });
    println!("{report}");
    Ok(())
}
