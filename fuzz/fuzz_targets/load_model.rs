//! Fuzzes the ONNX loader with arbitrary bytes; whatever loads is planned and run on
//! inputs of its declared types. Any panic or abort is a bug: hostile models must end
//! in a typed `RuntimeError`.
//!
//! ```text
//! cargo +nightly fuzz run load_model -- -max_total_time=300
//! ```
//!
//! Real models make good seeds: pass a folder of `.onnx` files after the corpus folder
//! (`cargo +nightly fuzz run load_model fuzz/corpus/load_model MODELS_DIR`).

#![no_main]

use deed_runtime::model::Dim;
use deed_runtime::{Limits, Model, RunOptions};
use deed_types::{DType, Tensor};
use libfuzzer_sys::fuzz_target;

/// Tight limits, so that a hostile dimension is refused rather than allocated.
// Limits added later keep their defaults here.
#[allow(clippy::needless_update)]
fn limits() -> Limits {
    Limits {
        max_model_bytes: 1 << 20,
        max_nodes: 256,
        max_tensor_elements: 1 << 16,
        max_tensor_bytes: 1 << 20,
        max_activation_bytes: 1 << 24,
        max_rank: 8,
        ..Limits::default()
    }
}

/// Zero-filled inputs of the declared dtypes and shapes, free dimensions set to 1.
fn inputs(m: &Model) -> Option<Vec<(String, Tensor)>> {
    m.required_inputs()
        .map(|v| {
            let shape: Vec<usize> = match &v.shape {
                Some(dims) => dims
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => *n,
                        Dim::Named(_) | Dim::Any => 1,
                    })
                    .collect(),
                None => vec![1],
            };
            if deed_types::tensor::numel(&shape)? > 1 << 14 {
                return None;
            }
            let t = Tensor::zeros(v.dtype.unwrap_or(DType::F32), shape).ok()?;
            Some((v.name.clone(), t))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    let Ok(model) = Model::load(data, &limits) else {
        return;
    };
    let Some(inputs) = inputs(&model) else {
        return;
    };
    let opts = RunOptions {
        limits,
        threads: 1,
        budget: Some(1 << 32),
        ..RunOptions::default()
    };
    let _ = model.run(&inputs, &opts);
    for (step, node) in model.nodes.iter().enumerate() {
        let _ = model.execute_node(step, &vec![None; node.inputs.len()]);
    }
});
