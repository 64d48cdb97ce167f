//! Running jobs: models loaded by version manifest CID (verified and cached), job
//! inputs from the ledger or the blob store, and the canonical runtime within the
//! version's metered cost.
//!
//! A tensor list (job input or output) is `deed_types::encode_list` of the tensors
//! in the model's order: the graph inputs that have no initializer, as declared,
//! and the graph outputs, as declared.

use std::collections::HashMap;
use std::sync::Arc;

use deed_client::api::{ErrorCode, ModelManifest};
use deed_runtime::{Limits, Model, Plan, RunOptions, RunOutput, Trace};
use deed_store::blob::download;
use deed_store::AnyBlobStore;
use deed_types::{decode_list, encode_list, Cid, Hash, Output, Receipt, Signature, Tensor};

use crate::error::ApiError;

/// Largest tensor list accepted as a job input or output.
pub const MAX_TENSOR_LIST: usize = 256 << 20;

/// Plans kept per loaded model: one per input shape it was last run with. Planning
/// infers every shape, folds constants and packs the weights of every product, so a
/// model served again with inputs of a shape it has seen runs the plan it made (a
/// `deed dev` node running the benchmark cnn: 3.9–4.1 ms per job on average when it
/// planned every call, 2.1–3.2 ms with kept plans).
const PLANS_PER_MODEL: usize = 4;

/// A model version ready to run.
#[derive(Debug)]
pub struct LoadedModel {
    /// Its manifest.
    pub manifest: ModelManifest,
    /// The loaded model.
    pub model: Arc<Model>,
    /// Its plans, most recently used last.
    plans: std::sync::Mutex<Vec<Arc<Plan<'static>>>>,
}

impl LoadedModel {
    /// `model` of version `manifest`, with no plan yet.
    pub fn new(manifest: ModelManifest, model: Arc<Model>) -> LoadedModel {
        LoadedModel {
            manifest,
            model,
            plans: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Runs the model on `inputs` with the kept plan that takes them, or plans (and
    /// keeps the plan) first. A kept plan runs to the same bits as a new one.
    pub fn run(
        &self,
        inputs: &[(String, Tensor)],
        opts: &RunOptions,
    ) -> Result<RunOutput, deed_runtime::RuntimeError> {
        let plans = || self.plans.lock().unwrap_or_else(|e| e.into_inner());
        let kept = {
            let mut plans = plans();
            let found = plans.iter().rposition(|p| p.accepts(inputs));
            found.map(|i| {
                let p = plans.remove(i);
                plans.push(p.clone());
                p
            })
        };
        let plan = match kept {
            Some(p) => p,
            None => {
                let p = Arc::new(self.model.plan_shared(inputs, &opts.limits)?);
                let mut plans = plans();
                if plans.len() >= PLANS_PER_MODEL {
                    plans.remove(0);
                }
                plans.push(p.clone());
                p
            }
        };
        let ctx = deed_runtime::Ctx::new(opts.mode, opts.threads);
        plan.execute(inputs, &ctx, opts)
    }

    /// Plans kept.
    pub fn plans_kept(&self) -> usize {
        self.plans.lock().map_or(0, |p| p.len())
    }

    /// Names of the inputs a caller supplies, in list order.
    pub fn input_names(&self) -> Vec<String> {
        self.model
            .required_inputs()
            .map(|v| v.name.clone())
            .collect()
    }
}

/// Models loaded by version manifest CID. Bounded: past `max` entries an arbitrary
/// one is dropped (models are reloaded from the blob store on demand).
#[derive(Debug)]
pub struct ModelCache {
    max: usize,
    inner: tokio::sync::Mutex<HashMap<Cid, Arc<LoadedModel>>>,
}

fn bad_model(message: String) -> ApiError {
    ApiError::new(ErrorCode::BadModel, message)
}

fn bad_input(message: String) -> ApiError {
    ApiError::new(ErrorCode::BadInput, message)
}

impl ModelCache {
    /// An empty cache of at most `max` models.
    pub fn new(max: usize) -> ModelCache {
        ModelCache {
            max: max.max(1),
            inner: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Whether the model of `manifest` is loaded.
    pub async fn contains(&self, manifest: &Cid) -> bool {
        self.inner.lock().await.contains_key(manifest)
    }

    /// The version whose manifest blob is `manifest`: its manifest and its model
    /// file are read from `blobs` (which verifies them against their CIDs), the
    /// creator's signature is checked and the model is loaded.
    pub async fn get(
        &self,
        blobs: &AnyBlobStore,
        manifest: &Cid,
    ) -> Result<Arc<LoadedModel>, ApiError> {
        let mut inner = self.inner.lock().await;
        if let Some(m) = inner.get(manifest) {
            return Ok(m.clone());
        }
        let bytes = download(blobs, manifest).await?;
        let parsed: ModelManifest = serde_json::from_slice(&bytes)
            .map_err(|e| bad_model(format!("manifest {manifest} is not a model manifest: {e}")))?;
        let sig = decode_hex(&parsed.signature)
            .ok()
            .and_then(|b| <[u8; 65]>::try_from(b.as_slice()).ok())
            .and_then(|b| Signature::from_rsv(&b).ok())
            .ok_or_else(|| bad_model(format!("manifest {manifest} has a malformed signature")))?;
        match sig.recover(&parsed.signing_digest()) {
            Ok(a) if a == parsed.creator => {}
            _ => {
                return Err(bad_model(format!(
                    "manifest {manifest} is not signed by its creator {}",
                    parsed.creator
                )))
            }
        }
        let file = parsed
            .files
            .first()
            .ok_or_else(|| bad_model(format!("manifest {manifest} lists no files")))?;
        let model_bytes = download(blobs, &file.cid).await?;
        let model =
            tokio::task::spawn_blocking(move || Model::load(&model_bytes, &Limits::default()))
                .await
                .map_err(ApiError::internal)?
                .map_err(|e| bad_model(format!("model of {manifest} does not load: {e}")))?;
        if model.num_steps() as u64 != parsed.steps {
            return Err(bad_model(format!(
                "manifest {manifest} claims {} steps, the model has {}",
                parsed.steps,
                model.num_steps()
            )));
        }
        let loaded = Arc::new(LoadedModel::new(parsed, Arc::new(model)));
        if inner.len() >= self.max {
            if let Some(k) = inner.keys().next().copied() {
                inner.remove(&k);
            }
        }
        inner.insert(*manifest, loaded.clone());
        Ok(loaded)
    }
}

/// The result of running a job, kept by an executor until the job closes (a
/// dispute needs the trace).
#[derive(Debug)]
pub struct JobRun {
    /// Outputs by name, in the model's order.
    pub outputs: Vec<(String, Tensor)>,
    /// Their tensor list encoding.
    pub output_bytes: Vec<u8>,
    /// blake3 of `output_bytes`.
    pub output_hash: Hash,
    /// The execution trace.
    pub trace: Trace,
    /// How the run was made beyond the job (kept steps, injected fault): a dispute
    /// re-runs it the same way to hand the referee a step's inputs.
    pub how: RunHow,
    /// Outputs of the steps `how.keep_steps` names.
    pub kept: Vec<(usize, Vec<Tensor>)>,
}

/// What a run does beyond computing the job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunHow {
    /// Kernel threads (0 counts as 1); the bits are the same at any count.
    pub threads: usize,
    /// Steps whose outputs to keep.
    pub keep_steps: Vec<usize>,
    /// The step to corrupt (fault injection; see [`crate::fault`]).
    pub corrupt_step: Option<usize>,
}

impl JobRun {
    /// Number of trace steps.
    pub fn steps(&self) -> u64 {
        self.trace.len() as u64
    }

    /// The receipt: output inline when its encoding is at most `max_inline` bytes,
    /// else only its hash.
    pub fn receipt(&self, max_inline: usize) -> Receipt {
        let output = if self.output_bytes.len() <= max_inline {
            Output::Inline(self.output_bytes.clone())
        } else {
            Output::Hash(self.output_hash)
        };
        Receipt {
            output,
            trace_root: self.trace.root(),
            steps: self.steps(),
            output_proof: deed_ledger::trace::output_proof(&self.trace),
        }
    }
}

/// Pairs a decoded input list with the model's input names.
pub fn name_inputs(model: &LoadedModel, bytes: &[u8]) -> Result<Vec<(String, Tensor)>, ApiError> {
    let tensors = decode_list(bytes, MAX_TENSOR_LIST)
        .map_err(|e| bad_input(format!("input is not a tensor list: {e}")))?;
    let names = model.input_names();
    if tensors.len() != names.len() {
        return Err(bad_input(format!(
            "the model takes {} inputs ({}), the job has {}",
            names.len(),
            names.join(", "),
            tensors.len()
        )));
    }
    Ok(names.into_iter().zip(tensors).collect())
}

/// Orders named inputs as the model declares them; every input must be given once.
pub fn order_inputs(
    model: &LoadedModel,
    mut given: Vec<(String, Tensor)>,
) -> Result<Vec<(String, Tensor)>, ApiError> {
    let names = model.input_names();
    for (n, _) in &given {
        if !names.contains(n) {
            return Err(bad_input(format!(
                "the model has no input {n:?} (it takes {})",
                names.join(", ")
            )));
        }
    }
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let pos = given
            .iter()
            .position(|(g, _)| *g == n)
            .ok_or_else(|| bad_input(format!("input {n:?} is missing")))?;
        out.push(given.swap_remove(pos));
    }
    if !given.is_empty() {
        return Err(bad_input("an input is given twice".to_owned()));
    }
    Ok(out)
}

/// The tensor list encoding of ordered inputs.
pub fn encode_inputs(inputs: &[(String, Tensor)]) -> Vec<u8> {
    let tensors: Vec<Tensor> = inputs.iter().map(|(_, t)| t.clone()).collect();
    encode_list(&tensors)
}

/// Runs `model` on `inputs` with the canonical runtime on `threads` kernel threads,
/// refusing a run whose planned cost exceeds `budget` (the version's published
/// cost; 0 sets no limit).
pub async fn run(
    model: Arc<LoadedModel>,
    inputs: Vec<(String, Tensor)>,
    budget: u64,
    threads: usize,
) -> Result<JobRun, ApiError> {
    let how = RunHow {
        threads,
        ..RunHow::default()
    };
    run_how(model, inputs, budget, how).await
}

/// [`run`], keeping the outputs of chosen steps or injecting a fault.
pub async fn run_how(
    model: Arc<LoadedModel>,
    inputs: Vec<(String, Tensor)>,
    budget: u64,
    how: RunHow,
) -> Result<JobRun, ApiError> {
    tokio::task::spawn_blocking(move || {
        let opts = RunOptions {
            threads: how.threads.max(1),
            budget: (budget > 0).then_some(budget),
            keep_steps: how.keep_steps.clone(),
            #[cfg(feature = "fault")]
            corrupt_step: how.corrupt_step,
            ..RunOptions::default()
        };
        let out = model
            .run(&inputs, &opts)
            .map_err(|e| bad_input(format!("the model does not run on these inputs: {e}")))?;
        let tensors: Vec<Tensor> = out.outputs.iter().map(|(_, t)| t.clone()).collect();
        let output_bytes = encode_list(&tensors);
        Ok(JobRun {
            output_hash: Hash::of(&output_bytes),
            output_bytes,
            outputs: out.outputs,
            trace: out.trace,
            how,
            kept: out.kept,
        })
    })
    .await
    .map_err(ApiError::internal)?
}

/// `0x`-prefixed (or bare) hex to bytes.
pub fn decode_hex(s: &str) -> Result<Vec<u8>, hex::FromHexError> {
    hex::decode(s.strip_prefix("0x").unwrap_or(s))
}

/// Bytes to `0x`-prefixed hex.
pub fn encode_hex(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use deed_types::Address;

    fn loaded() -> LoadedModel {
        load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/mlp/model.onnx"
        ))
    }

    fn load(path: &str) -> LoadedModel {
        let model = Model::load(&std::fs::read(path).unwrap(), &Limits::default()).unwrap();
        let manifest = ModelManifest {
            format: "onnx".into(),
            files: Vec::new(),
            opset: 17,
            io_schema: String::new(),
            steps: model.num_steps() as u64,
            cost: 0,
            weight_fingerprint: Hash::ZERO,
            creator: Address::ZERO,
            signature: String::new(),
        };
        LoadedModel::new(manifest, Arc::new(model))
    }

    /// examples/mlp's input, `x` of shape [3, 8], with values moved by `shift`.
    fn input(rows: usize, shift: f32) -> Vec<(String, Tensor)> {
        let t = Tensor::from_vec(
            vec![rows, 8],
            (0..rows * 8)
                .map(|i| i as f32 / 3.0 - shift)
                .collect::<Vec<f32>>(),
        )
        .unwrap();
        vec![("x".to_owned(), t)]
    }

    #[test]
    fn a_model_served_again_runs_its_kept_plan_to_the_same_bits() {
        let m = loaded();
        let opts = RunOptions::default();
        for (i, shift) in [0.0f32, 1.5, -2.0].into_iter().enumerate() {
            let inputs = input(3, shift);
            let kept = m.run(&inputs, &opts).unwrap();
            let fresh = m.model.run(&inputs, &opts).unwrap();
            assert_eq!(kept.outputs, fresh.outputs, "run {i}");
            assert_eq!(kept.trace.root(), fresh.trace.root(), "run {i}");
            assert_eq!(m.plans_kept(), 1, "run {i}");
        }
        // Inputs no plan takes and that do not plan: refused, nothing kept.
        assert!(m.run(&input(4, 0.0), &opts).is_err());
        assert_eq!(m.plans_kept(), 1);
    }

    #[test]
    fn plans_beyond_the_bound_drop_the_least_recently_used() {
        // A linear regression over a batch of any size: one plan per batch size.
        let m = load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deed-runtime/tests/fixtures/sk_linear_regression/model.onnx"
        ));
        let batch = |rows: usize| {
            let x = (0..rows * 5).map(|i| i as f32 * 0.5 - 3.0).collect();
            vec![("X".to_owned(), Tensor::from_vec(vec![rows, 5], x).unwrap())]
        };
        let opts = RunOptions::default();
        let planned = |rows: usize| {
            let out = m.run(&batch(rows), &opts).unwrap();
            assert_eq!(
                out.outputs,
                m.model.run(&batch(rows), &opts).unwrap().outputs
            );
            m.plans
                .lock()
                .unwrap()
                .iter()
                .any(|p| p.accepts(&batch(rows)))
        };
        for rows in 1..=PLANS_PER_MODEL {
            assert!(planned(rows));
        }
        assert_eq!(m.plans_kept(), PLANS_PER_MODEL);
        // Batch 1 is used again, so batch 2 is now the least recently used: a new
        // batch size drops it.
        assert!(planned(1));
        assert!(planned(PLANS_PER_MODEL + 1));
        assert_eq!(m.plans_kept(), PLANS_PER_MODEL);
        let kept = |rows: usize| {
            m.plans
                .lock()
                .unwrap()
                .iter()
                .any(|p| p.accepts(&batch(rows)))
        };
        assert!(kept(1));
        assert!(!kept(2));
        assert!(kept(3) && kept(4) && kept(PLANS_PER_MODEL + 1));
    }
}
