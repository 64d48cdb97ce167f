//! Runs the `deed` binary on the committed fixture models (generated with onnxruntime
//! reference outputs by `scripts/gen_models.py --fixtures`) and checks outputs, then
//! checks that the trace root is identical across thread counts and kernel modes.

// Helpers outside `#[test]` functions panic on purpose: a failed step fails the test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use deed_cli::conformance::compare;
use deed_cli::tensor_io::read_tensor;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deed-runtime/tests/fixtures")
}

fn deed() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deed"))
}

fn case_dirs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    v.sort();
    assert!(v.len() >= 5, "fixtures missing");
    v
}

fn files(dir: &Path, prefix: &str) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let n = p.file_name()?.to_str()?.to_owned();
            let name = n.strip_prefix(prefix)?.strip_suffix(".npy")?.to_owned();
            Some((name, p))
        })
        .collect();
    v.sort();
    v
}

fn run(dir: &Path, extra: &[&str], env: &[(&str, &str)], out: Option<&Path>) -> serde_json::Value {
    let mut cmd = deed();
    cmd.arg("run").arg(dir.join("model.onnx")).arg("--json");
    for (name, p) in files(dir, "input_") {
        cmd.arg("--input").arg(format!("{name}={}", p.display()));
    }
    if let Some(o) = out {
        cmd.arg("--out").arg(o);
    }
    cmd.args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run deed");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "deed run {} failed: {stdout} {}",
        dir.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&stdout).expect("json output")
}

/// `deed run` on the case in `dir` with its inputs and `extra`, without `--json`,
/// whatever its exit status.
fn run_plain(dir: &Path, extra: &[&str]) -> std::process::Output {
    deed()
        .arg("run")
        .arg(dir.join("model.onnx"))
        .args(
            files(dir, "input_")
                .iter()
                .flat_map(|(n, p)| ["--input".to_owned(), format!("{n}={}", p.display())]),
        )
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn fixture_outputs_match_onnxruntime() {
    let mut failures = Vec::new();
    for dir in case_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let j = run(&dir, &[], &[], Some(tmp.path()));
        assert!(j["trace_root"].as_str().is_some_and(|r| r.len() == 64));
        assert!(j["cost"].as_u64().unwrap() > 0);
        for (name, want_path) in files(&dir, "output_") {
            let got = read_tensor(&tmp.path().join(format!("{name}.npy"))).unwrap();
            let want = read_tensor(&want_path).unwrap();
            if let Err(e) = compare(&got, &want) {
                failures.push(format!("{}: {name}: {e}", dir.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn trace_root_is_identical_across_threads_and_kernel_modes() {
    for dir in case_dirs() {
        let base = run(&dir, &["--threads", "1"], &[], None)["trace_root"].clone();
        for t in ["2", "3", "4"] {
            assert_eq!(
                run(&dir, &["--threads", t], &[], None)["trace_root"],
                base,
                "{} threads {t}",
                dir.display()
            );
        }
        let r = run(
            &dir,
            &["--threads", "2"],
            &[("DEED_KERNELS", "reference")],
            None,
        );
        assert_eq!(r["trace_root"], base, "{} reference kernels", dir.display());
        assert_eq!(r["kernels"], "reference");
    }
}

#[test]
fn timeline_reports_where_the_runs_went() {
    let dir = fixtures().join("cnn_tiny");
    let plain = run(&dir, &[], &[], None);
    assert!(plain.get("timeline_us").is_none());
    for extra in [
        &["--repeat", "5", "--timeline"][..],
        &["--timeline", "--no-trace"],
    ] {
        let j = run(&dir, extra, &[], None);
        let t = &j["timeline_us"];
        let traced = !extra.contains(&"--no-trace");
        assert_eq!(t["runs"], if traced { 5 } else { 1 }, "{t}");
        if traced {
            assert_eq!(j["trace_root"], plain["trace_root"]);
        }
        for which in ["median", "fastest"] {
            let f = |k: &str| t[which][k].as_f64().unwrap();
            assert!(f("steps") > 0.0 && f("steps") <= f("total"), "{t}");
            for k in ["between_steps", "tail", "hash_thread", "hash_run_thread"] {
                assert!(f(k) >= 0.0, "{k}: {t}");
            }
            // Tracing hashes every computed step somewhere; without it, nothing is.
            assert_eq!(f("hash_thread") + f("hash_run_thread") > 0.0, traced, "{t}");
        }
        // The fastest run's spans: each computed step's kernel, in order and within
        // the run; hashing spans exactly when traced.
        let run = &t["fastest_run"];
        let at = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
        let done = at(run, "trace_done");
        assert_eq!(done, t["fastest"]["total"].as_f64().unwrap(), "{run}");
        assert!(at(run, "steps_done") <= done, "{run}");
        let compute = run["compute"].as_array().unwrap();
        assert_eq!(compute.len(), t["steps"].as_array().unwrap().len(), "{run}");
        for w in compute.windows(2) {
            assert!(w[0]["step"].as_u64() < w[1]["step"].as_u64(), "{run}");
            assert!(at(&w[0], "end") <= at(&w[1], "start"), "{run}");
        }
        let hashes = run["hashes"].as_array().unwrap();
        assert_eq!(!hashes.is_empty(), traced, "{run}");
        for s in compute.iter().chain(hashes) {
            assert!(
                0.0 <= at(s, "start") && at(s, "start") <= at(s, "end"),
                "{s}"
            );
            assert!(at(s, "end") <= done, "{s}");
        }
        for h in hashes {
            assert!(
                matches!(h["on"].as_str(), Some("hash_thread" | "run_thread")),
                "{h}"
            );
        }
        // Each computed step, in order, with its operator and times.
        let steps = t["steps"].as_array().unwrap();
        assert!(!steps.is_empty(), "{t}");
        let mut last = None;
        for st in steps {
            let i = st["step"].as_u64().unwrap();
            assert!(last.is_none_or(|l| l < i), "{t}");
            last = Some(i);
            assert!(st["op"].as_str().is_some_and(|o| !o.is_empty()), "{st}");
            let g = |k: &str| st[k].as_f64();
            assert!(
                g("compute_min").unwrap() <= g("compute_median").unwrap(),
                "{st}"
            );
            assert_eq!(g("hash_min").is_some(), traced, "{st}");
        }
    }
    let o = run_plain(&dir, &["--timeline", "--repeat", "3"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("timeline median ") && text.contains("timeline fastest "),
        "{text}"
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = fixtures().join("mlp_tiny");
    let tmp = tempfile::tempdir().unwrap();
    // Wrong shape.
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, r#"{"shape":[2,2],"dtype":"f32","data":[1,2,3,4]}"#).unwrap();
    let o = deed()
        .arg("run")
        .arg(dir.join("model.onnx"))
        .arg("--input")
        .arg(format!("x={}", bad.display()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("input `x`") && err.contains("shape"), "{err}");
    // Truncated model.
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let cut = tmp.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = deed().arg("run").arg(&cut).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("malformed ONNX"));
    // Budget below the cost.
    let x = files(&dir, "input_").remove(0).1;
    let o = deed()
        .args(["run", "--budget", "1", "--input"])
        .arg(format!("x={}", x.display()))
        .arg(dir.join("model.onnx"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("above the budget"));
}

/// String outputs are written as numpy `str` arrays and read back as they were
/// computed; a string `.npy` input reads as the `.pb` one does.
#[test]
fn string_tensors_go_through_npy_files() {
    let case = fixtures().join("onnx-node/test_string_split_basic");
    let data = case.join("test_data_set_0");
    let tmp = tempfile::tempdir().unwrap();
    // `deed run` on the input file `x`, writing to `out`; the substrings it wrote.
    let split = |x: &Path, out: &str| {
        let out = tmp.path().join(out);
        let o = deed()
            .arg("run")
            .arg(case.join("model.onnx"))
            .arg("--input")
            .arg(format!("x={}", x.display()))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_tensor(&out.join("substrings.npy")).unwrap()
    };
    let want = read_tensor(&data.join("output_0.pb")).unwrap();
    let got = split(&data.join("input_0.pb"), "out");
    assert_eq!(got, want);
    assert_eq!(got.dtype(), deed_types::DType::Str);
    // The strings as an input, through .npy.
    let strings = read_tensor(&data.join("input_0.pb")).unwrap();
    let input = tmp.path().join("x.npy");
    deed_cli::tensor_io::write_npy(&input, &strings).unwrap();
    assert_eq!(read_tensor(&input).unwrap(), strings);
    assert_eq!(split(&input, "again"), want);
}

/// `deed run` passes a photo file's bytes to a model that decodes it: the JPEG
/// fixtures (baseline with restart markers, and progressive) give Pillow's pixels, and
/// a JPEG cut short is refused with the node and the problem named.
#[test]
fn jpeg_photos_decode_in_a_model() {
    let dir = fixtures().join("jpeg");
    let model = dir.join("decode_rgb.onnx");
    for name in ["rst_420", "progressive"] {
        let tmp = tempfile::tempdir().unwrap();
        let o = deed()
            .arg("run")
            .arg(&model)
            .arg("--input")
            .arg(format!(
                "encoded={}",
                dir.join(format!("{name}.jpg")).display()
            ))
            .arg("--out")
            .arg(tmp.path())
            .arg("--json")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(j["trace_root"].as_str().is_some_and(|r| r.len() == 64));
        let got = read_tensor(&tmp.path().join("pixels.npy")).unwrap();
        assert_eq!(got.shape(), [20, 37, 3], "{name}");
        let want = std::fs::read(dir.join(format!("{name}.rgb"))).unwrap();
        assert_eq!(got.as_slice::<u8>().unwrap(), want.as_slice(), "{name}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let jpeg = std::fs::read(dir.join("rst_420.jpg")).unwrap();
    let cut = tmp.path().join("cut.jpg");
    std::fs::write(&cut, &jpeg[..jpeg.len() - 200]).unwrap();
    let o = deed()
        .arg("run")
        .arg(&model)
        .arg("--input")
        .arg(format!("encoded={}", cut.display()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("decode") && err.contains("JPEG data is damaged"),
        "{err}"
    );
}

#[test]
fn trace_cost_times_untraced_runs_in_turn() {
    let dir = fixtures().join("cnn_tiny");
    let plain = run(&dir, &[], &[], None);
    let j = run(&dir, &["--repeat", "6", "--trace-cost"], &[], None);
    // The traced runs are what they always are: same outputs, same root.
    assert_eq!(j["trace_root"], plain["trace_root"]);
    assert_eq!(j["outputs"], plain["outputs"]);
    assert_eq!(j["latency_ms"]["runs"], 6);
    let c = &j["trace_cost"];
    let u = &c["untraced_latency_ms"];
    assert_eq!(u["runs"], 6, "{c}");
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    assert!(0.0 < f(&u["min"]) && f(&u["min"]) <= f(&u["median"]), "{c}");
    let traced_min = f(&j["latency_ms"]["min"]);
    let by_min = traced_min / f(&u["min"]) - 1.0;
    assert!((f(&c["by_min"]) - by_min).abs() < 1e-9, "{c}");
    let by_median = f(&j["latency_ms"]["median"]) / f(&u["median"]) - 1.0;
    assert!((f(&c["by_median"]) - by_median).abs() < 1e-9, "{c}");
    assert!(f(&c["paired_median"]) > -1.0, "{c}");
    // Without it, no such figures.
    assert!(run(&dir, &["--repeat", "2"], &[], None)
        .get("trace_cost")
        .is_none());
    // It needs timed runs to compare, and a trace to cost.
    for bad in [
        &["--trace-cost"][..],
        &["--trace-cost", "--repeat", "3", "--no-trace"],
    ] {
        let o = run_plain(&dir, bad);
        assert!(!o.status.success(), "{bad:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--trace-cost"), "{bad:?}: {err}");
    }
}
