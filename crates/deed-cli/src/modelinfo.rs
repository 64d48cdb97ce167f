//! What a model version's manifest says about its ONNX file, computed with the
//! canonical runtime before anything is uploaded: the model must load and plan, and
//! its steps, cost, input/output schema and weight fingerprint come from that.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use deed_client::api::{ManifestFile, ModelManifest};
use deed_runtime::model::Dim;
use deed_runtime::{Limits, Model, Source, ValueInfo};
use deed_types::{Cid, DType, Hash, SecretKey, Tensor};
use serde_json::{json, Value};

/// The runtime's description of an ONNX model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Default-domain opset.
    pub opset: i64,
    /// Input/output schema, JSON text.
    pub io_schema: String,
    /// Trace steps.
    pub steps: u64,
    /// Metered cost of one run at the declared shapes.
    pub cost: u64,
    /// blake3 over the initializers in name order.
    pub weight_fingerprint: Hash,
    /// Names of the inputs a caller must supply.
    pub inputs: Vec<String>,
}

fn dims_json(v: &ValueInfo) -> Value {
    match &v.shape {
        None => Value::Null,
        Some(d) => Value::Array(
            d.iter()
                .map(|d| match d {
                    Dim::Fixed(n) => json!(n),
                    Dim::Named(s) => json!(s),
                    Dim::Any => Value::Null,
                })
                .collect(),
        ),
    }
}

fn value_json(v: &ValueInfo) -> Value {
    json!({
        "name": v.name,
        "dtype": v.dtype.map(|d| d.name()),
        "shape": dims_json(v),
    })
}

/// The schema text recorded in the manifest and on the ledger.
pub fn io_schema(model: &Model) -> String {
    let required: BTreeSet<&str> = model.required_inputs().map(|v| v.name.as_str()).collect();
    let inputs: Vec<Value> = model
        .inputs
        .iter()
        .filter(|v| required.contains(v.name.as_str()))
        .map(value_json)
        .collect();
    let outputs: Vec<Value> = model.outputs.iter().map(value_json).collect();
    json!({ "inputs": inputs, "outputs": outputs }).to_string()
}

/// blake3 over every initializer's name and canonical encoding, in name order.
pub fn weight_fingerprint(model: &Model) -> Hash {
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for n in &model.nodes {
        for i in &n.inputs {
            if !i.is_empty() && model.source(i) == Some(Source::Initializer) {
                names.insert(i.as_str());
            }
        }
    }
    let mut h = blake3::Hasher::new_derive_key("deed 2026 weight fingerprint");
    for name in names {
        if let Some(t) = model.initializer(name) {
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            let enc = t.encode();
            h.update(&(enc.len() as u64).to_le_bytes());
            h.update(&enc);
        }
    }
    Hash(*h.finalize().as_bytes())
}

/// Loads and plans `bytes` at the model's declared input shapes (symbolic dimensions
/// as 1) and describes it.
pub fn describe(bytes: &[u8]) -> Result<ModelInfo> {
    let limits = Limits::default();
    let model = Model::load(bytes, &limits).context("the runtime rejects this model")?;
    let mut inputs = Vec::new();
    for v in model.required_inputs() {
        let dtype = v.dtype.unwrap_or(DType::F32);
        let shape: Vec<usize> = match &v.shape {
            Some(d) => d
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    _ => 1,
                })
                .collect(),
            None => bail!(
                "input `{}` declares no shape; the cost of a run cannot be planned",
                v.name
            ),
        };
        let t = Tensor::zeros(dtype, shape)
            .with_context(|| format!("cannot build a sample for input `{}`", v.name))?;
        inputs.push((v.name.clone(), t));
    }
    let plan = model
        .plan(&inputs, &limits)
        .context("the runtime cannot plan this model at its declared shapes")?;
    Ok(ModelInfo {
        opset: model.opsets.get("").copied().unwrap_or(0),
        io_schema: io_schema(&model),
        steps: model.num_steps() as u64,
        cost: plan.cost(),
        weight_fingerprint: weight_fingerprint(&model),
        inputs: inputs.into_iter().map(|(n, _)| n).collect(),
    })
}

/// The signed version manifest for a model file stored under `cid`.
pub fn signed_manifest(
    info: &ModelInfo,
    file_name: &str,
    size: u64,
    cid: Cid,
    key: &SecretKey,
) -> Result<ModelManifest> {
    let mut m = ModelManifest {
        format: "onnx".into(),
        files: vec![ManifestFile {
            name: file_name.to_owned(),
            size,
            cid,
        }],
        opset: info.opset,
        io_schema: info.io_schema.clone(),
        steps: info.steps,
        cost: info.cost,
        weight_fingerprint: info.weight_fingerprint,
        creator: key.address(),
        signature: String::new(),
    };
    let sig = key
        .sign_digest(&m.signing_digest())
        .map_err(|e| anyhow::anyhow!("cannot sign the manifest: {e}"))?;
    m.signature = deed_client::hexbytes::encode(&sig.0);
    Ok(m)
}

/// Checks a manifest's signature against its creator.
pub fn check_manifest_signature(m: &ModelManifest) -> Result<()> {
    let bytes = deed_client::hexbytes::decode(&m.signature).context("signature is not hex")?;
    let arr: [u8; 65] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("signature is not 65 bytes"))?;
    let sig = deed_types::Signature::from_rsv(&arr)?;
    let signer = sig.recover(&m.signing_digest())?;
    if signer != m.creator {
        bail!(
            "manifest signed by {signer}, but names {} as creator",
            m.creator
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/mlp/model.onnx"
        ))
        .unwrap()
    }

    #[test]
    fn describes_example_and_signs_manifest() {
        let bytes = mlp();
        let info = describe(&bytes).unwrap();
        let model = Model::load(&bytes, &Limits::default()).unwrap();
        assert_eq!(info.steps, model.num_steps() as u64);
        assert!(info.steps > 0 && info.cost > 0);
        let schema: Value = serde_json::from_str(&info.io_schema).unwrap();
        assert_eq!(
            schema["inputs"].as_array().unwrap().len(),
            info.inputs.len()
        );

        let key = SecretKey::from_seed(b"creator");
        let m = signed_manifest(
            &info,
            "model.onnx",
            bytes.len() as u64,
            Cid::of(&bytes),
            &key,
        )
        .unwrap();
        check_manifest_signature(&m).unwrap();
        let mut forged = m.clone();
        forged.cost += 1;
        assert!(check_manifest_signature(&forged).is_err());
    }

    #[test]
    fn rejects_garbage_and_changes_fingerprint_with_weights() {
        assert!(describe(b"not an onnx model").is_err());
        let bytes = mlp();
        let model = Model::load(&bytes, &Limits::default()).unwrap();
        let fp = weight_fingerprint(&model);
        assert_ne!(fp, Hash::ZERO);
        assert_eq!(
            fp,
            weight_fingerprint(&Model::load(&bytes, &Limits::default()).unwrap())
        );
    }
}
