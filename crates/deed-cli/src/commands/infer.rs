//! `deed infer` and `deed receipt`.
//!
//! Modes `none` and `optimistic` take the direct path: the signed `RequestJob` names
//! an eligible executor and goes straight to its `/v1/execute` endpoint, which
//! answers with the outputs and a signed receipt in one round trip and settles the
//! request on the ledger afterwards. Mode `replicated:K` goes through the ledger,
//! which picks the executors.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use deed_client::api::{AccountView, DirectRequest, JobView, ModelView, Status, VersionView};
use deed_client::{direct, hexbytes, job_is_final, Client};
use deed_runtime::{Ctx as RtCtx, KernelMode, Limits, Model, RunOptions};
use deed_types::{
    encode_list, Action, Address, Amount, Cid, Hash, JobInput, Mode, ModelId, Tensor, Transaction,
};
use serde_json::{json, Value};

use super::models::{fetch_manifest, model_version, split_version};
use super::{lines, Ctx, Out};
use crate::{keystore, tensor_io};

/// `deed infer`.
#[derive(Args, Debug)]
pub struct InferArgs {
    /// MODEL[@VERSION]: id, OWNER/NAME or a name owned by --key; latest version by default.
    pub(crate) model: String,
    /// An input as NAME=FILE (.npy, .pb or .json; a .bin or image file gives its bytes);
    /// FILE alone for a single-input model.
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE", required = true)]
    pub(crate) inputs: Vec<String>,
    /// Verification: `none`, `optimistic` or `replicated:K`.
    #[arg(long, default_value = "optimistic")]
    pub(crate) mode: String,
    /// Also wait until the request is in a block (`included`) or final (`final`).
    #[arg(long, value_parser = ["included", "final"])]
    pub(crate) wait: Option<String>,
    /// Write each output as NAME.npy into this folder.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// The most to pay in total (default: the current price of the model and executor).
    #[arg(long)]
    pub(crate) max_fee: Option<Amount>,
}

/// `deed receipt`.
#[derive(Subcommand, Debug)]
pub enum ReceiptCmd {
    /// Show a job with its receipts and fees.
    Show {
        /// Job id, or the request's transaction hash.
        job: String,
    },
    /// Re-execute a job locally with the canonical runtime and compare.
    Verify {
        /// Job id, or the request's transaction hash.
        job: String,
    },
}

/// Parses `--mode`.
pub fn parse_mode(text: &str) -> Result<Mode> {
    match text {
        "none" => Ok(Mode::None),
        "optimistic" => Ok(Mode::Optimistic),
        t => match t.strip_prefix("replicated:") {
            Some(k) => {
                let k: u8 = k
                    .parse()
                    .map_err(|_| anyhow!("replicated:K needs a small number K, not `{k}`"))?;
                if k < 2 {
                    bail!("replicated:K needs K of at least 2");
                }
                Ok(Mode::Replicated(k))
            }
            None => bail!("--mode is `none`, `optimistic` or `replicated:K`, not `{t}`"),
        },
    }
}

/// One declared input of a version's schema.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaInput {
    /// Name.
    pub name: String,
    /// dtype name, if declared.
    pub dtype: Option<String>,
    /// Dimensions: `Some(n)` fixed, `None` symbolic.
    pub shape: Option<Vec<Option<u64>>>,
}

/// Reads the inputs of a version's io schema.
pub fn schema_inputs(io_schema: &str) -> Option<Vec<SchemaInput>> {
    let v: Value = serde_json::from_str(io_schema).ok()?;
    v.get("inputs")?
        .as_array()?
        .iter()
        .map(|i| {
            Some(SchemaInput {
                name: i.get("name")?.as_str()?.to_owned(),
                dtype: i.get("dtype").and_then(|d| d.as_str()).map(str::to_owned),
                shape: i
                    .get("shape")
                    .and_then(|s| s.as_array())
                    .map(|dims| dims.iter().map(|d| d.as_u64()).collect()),
            })
        })
        .collect()
}

fn shape_text(shape: &[Option<u64>]) -> String {
    let parts: Vec<String> = shape
        .iter()
        .map(|d| d.map_or("?".to_owned(), |n| n.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Reads `--input` files and orders them as the schema does, checking names, dtypes
/// and fixed dimensions.
pub fn read_inputs(schema: &[SchemaInput], specs: &[String]) -> Result<Vec<(String, Tensor)>> {
    let names: Vec<&str> = schema.iter().map(|s| s.name.as_str()).collect();
    let mut given: Vec<(String, Tensor)> = Vec::new();
    for spec in specs {
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) if !n.is_empty() => (n.to_owned(), p),
            _ if names.len() == 1 => (names[0].to_owned(), spec.as_str()),
            _ => bail!(
                "input `{spec}` must be NAME=FILE (the model's inputs: {})",
                names.join(", ")
            ),
        };
        if !names.contains(&name.as_str()) {
            bail!(
                "the model has no input `{name}` (its inputs: {})",
                names.join(", ")
            );
        }
        if given.iter().any(|(n, _)| *n == name) {
            bail!("input `{name}` given twice");
        }
        let t =
            tensor_io::read_tensor(Path::new(path)).with_context(|| format!("input `{name}`"))?;
        given.push((name, t));
    }
    let mut out = Vec::new();
    for s in schema {
        let Some(pos) = given.iter().position(|(n, _)| *n == s.name) else {
            bail!(
                "missing input `{}` ({} {}): pass --input {}=FILE",
                s.name,
                s.dtype.as_deref().unwrap_or("?"),
                s.shape.as_deref().map_or("[?]".to_owned(), shape_text),
                s.name
            );
        };
        let (name, t) = given.swap_remove(pos);
        if let Some(d) = &s.dtype {
            if t.dtype().name() != d {
                bail!(
                    "input `{name}` has dtype {}, the model expects {d}",
                    t.dtype().name()
                );
            }
        }
        if let Some(dims) = &s.shape {
            let fits = dims.len() == t.rank()
                && dims
                    .iter()
                    .zip(t.shape())
                    .all(|(d, n)| d.is_none_or(|d| d == *n as u64));
            if !fits {
                bail!(
                    "input `{name}` has shape {:?}, the model expects {}",
                    t.shape(),
                    shape_text(dims)
                );
            }
        }
        out.push((name, t));
    }
    Ok(out)
}

/// Where a direct call goes and what its request is signed with.
struct Direct {
    executor: Address,
    endpoint: String,
    price: Amount,
    chain_id: u64,
    /// The signer's next nonce.
    nonce: u64,
}

/// An executor that can take a direct call for `model`: the node's own executor when
/// it is bonded, serves the model and is not jailed. A freshly registered model is
/// picked up by the executor within a block or two, so this waits up to `patience`.
/// `first` is the node's status and the signer's account, read while the model was
/// (the status gives the executor and the chain id the request is signed for); the
/// executor's account is read after it, and all three again on every later try.
async fn direct_executor(
    client: &Client,
    model: u64,
    signer: Address,
    first: (Status, AccountView),
    patience: std::time::Duration,
) -> Result<Direct> {
    let started = Instant::now();
    let mut first = Some(first);
    loop {
        let (status, me) = match first.take() {
            Some(read) => read,
            None => tokio::try_join!(client.status(), client.account(&signer))?,
        };
        let addr = status.executor.ok_or_else(|| {
            anyhow!("the node runs no executor; use --mode replicated:K to go through the ledger")
        })?;
        let acc = client.account(&addr).await?;
        let problem = match &acc.executor {
            None => format!("the node's executor {addr} has no bond"),
            Some(e) if !e.models.contains(&model) => {
                format!("the node's executor {addr} does not serve model {model}")
            }
            Some(e) if e.jailed_until.is_some() => format!("the node's executor {addr} is jailed"),
            Some(e) => {
                return Ok(Direct {
                    executor: addr,
                    endpoint: e.endpoint.clone(),
                    price: e.price.parse().context("executor price")?,
                    chain_id: status.chain_id,
                    nonce: me.nonce,
                })
            }
        };
        if started.elapsed() >= patience {
            bail!("{problem}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn royalty(m: &ModelView) -> Result<Amount> {
    Ok(match m.licence {
        deed_client::api::LicenceView::Open => 0,
        _ => m.price.parse().context("model price")?,
    })
}

/// Where `deed infer` keeps the inputs it sent, so `deed receipt verify` can
/// re-execute jobs whose input only travelled inline.
fn input_cache(hash: &Hash) -> Result<PathBuf> {
    Ok(keystore::deed_home()?
        .join("inputs")
        .join(format!("{hash}.bin")))
}

fn write_outputs(dir: &Path, outputs: &[(String, Tensor)]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut paths = Vec::new();
    for (name, t) in outputs {
        let p = dir.join(format!("{}.npy", crate::sanitize(name)));
        tensor_io::write_npy(&p, t)?;
        paths.push(p);
    }
    Ok(paths)
}

fn outputs_json(outputs: &[(String, Tensor)]) -> Vec<Value> {
    outputs
        .iter()
        .map(|(n, t)| {
            json!({ "name": n, "dtype": t.dtype().name(), "shape": t.shape(),
                    "values": tensor_io::preview_json(t, 16) })
        })
        .collect()
}

pub(super) async fn infer(ctx: &Ctx, a: InferArgs) -> Result<Out> {
    let mode = parse_mode(&a.mode)?;
    let key = ctx.key()?;
    let (spec, n) = split_version(&a.model)?;
    // A direct call needs the node's status and the signer's nonce: read them
    // side by side with the model and its versions. `latency_ms` counts from here:
    // the first request to the node to the verified answer.
    let started = Instant::now();
    let signer = key.address();
    let direct_reads = async {
        match mode {
            Mode::Replicated(_) => Ok(None),
            _ => tokio::try_join!(ctx.client.status(), ctx.client.account(&signer)).map(Some),
        }
    };
    let ((model, version), direct_reads) = tokio::try_join!(model_version(ctx, spec, n), async {
        direct_reads.await.map_err(anyhow::Error::from)
    })?;
    if version.deprecated {
        bail!(
            "model {} ({}) v{} is deprecated by its owner: run another version",
            model.id,
            model.name,
            version.version
        );
    }
    let schema = schema_inputs(&version.io_schema).ok_or_else(|| {
        anyhow!(
            "model {} v{} has an unreadable io schema",
            model.id,
            version.version
        )
    })?;
    let inputs = read_inputs(&schema, &a.inputs)?;
    let tensors: Vec<Tensor> = inputs.iter().map(|(_, t)| t.clone()).collect();
    let input_bytes = encode_list(&tensors);
    let input_hash = Hash::of(&input_bytes);
    let royalty = royalty(&model)?;

    match mode {
        Mode::Replicated(k) => {
            replicated(ctx, &key, &model, &version, &input_bytes, k, royalty, &a).await
        }
        _ => {
            let patience = ctx.timeout().min(std::time::Duration::from_secs(15));
            let Direct {
                executor,
                endpoint,
                price,
                chain_id,
                nonce,
            } = match direct_reads {
                Some(first) => {
                    direct_executor(&ctx.client, model.id, key.address(), first, patience).await?
                }
                // Read above for every mode but replicated.
                None => bail!("the node's status was not read for the direct call"),
            };
            // A cap, not a charge: the ledger escrows exactly royalty + fee + protocol
            // fee, and the protocol fee is a fraction of the executor fee.
            let max_fee = a
                .max_fee
                .unwrap_or_else(|| royalty.saturating_add(price.saturating_mul(2)));
            let input = if input_bytes.len() <= deed_types::tx::limits::MAX_INLINE {
                JobInput::Inline(input_bytes.clone())
            } else {
                JobInput::ByCid(ctx.client.upload(&input_bytes, None).await?.info.cid)
            };
            if mode != Mode::None && matches!(input, JobInput::Inline(_)) {
                // Inline inputs live only in the request; keep a copy where a verifier
                // can fetch it by its hash.
                ctx.client.upload(&input_bytes, None).await?;
            }
            // Kept for `deed receipt verify` while the executor works; a cache, so a
            // failed write only costs that command a download.
            let cached = input_cache(&input_hash).ok().map(|p| {
                let bytes = input_bytes.clone();
                tokio::task::spawn_blocking(move || {
                    if let Some(d) = p.parent() {
                        let _ = std::fs::create_dir_all(d).and_then(|_| std::fs::write(&p, bytes));
                    }
                })
            });
            let stx = Transaction {
                chain_id,
                nonce,
                fee: ctx.args.tx_fee,
                action: Action::RequestJob {
                    model: ModelId(model.id),
                    version: Some(version.version),
                    input,
                    mode,
                    max_fee,
                    executor: Some(executor),
                },
            }
            .sign(&key)?;
            let request = stx.hash();
            let exec_client = ctx.client.with_base(&endpoint);
            let resp = exec_client
                .execute(&DirectRequest {
                    tx: hexbytes::encode(&stx.encode()),
                    inputs: direct::encode_tensors(&inputs),
                })
                .await
                .with_context(|| format!("executor {executor} at {endpoint}"))?;
            let outputs = direct::verify(&resp, &request, &executor).with_context(|| {
                format!("executor {executor} sent an answer that does not verify")
            })?;
            let latency_ms = started.elapsed().as_secs_f64() * 1e3;
            if let Some(task) = cached {
                let _ = task.await;
            }
            let written = match &a.out {
                Some(dir) => write_outputs(dir, &outputs)?,
                None => Vec::new(),
            };
            let job = match a.wait.as_deref() {
                None => None,
                Some(w) => Some(wait_for(ctx, &request, w == "final").await?),
            };
            let protocol_hint = job.as_ref().map(|j| j.fees.protocol_fee.clone());
            let mut j = json!({
                "request": request,
                "model": model.id,
                "version": version.version,
                "manifest": version.manifest,
                "mode": a.mode,
                "executor": executor,
                "input_hash": input_hash,
                "output_hash": resp.receipt.output_hash,
                "trace_root": resp.receipt.trace_root,
                "steps": resp.receipt.steps,
                "signature": resp.signature,
                "outputs": outputs_json(&outputs),
                "written": written,
                "latency_ms": latency_ms,
                "fees": { "royalty": royalty.to_string(), "executor_fee": price.to_string(),
                          "protocol_fee": protocol_hint, "max_fee": max_fee.to_string() },
                "status": job.as_ref().map_or("answered".to_owned(), |j| j.status.clone()),
            });
            if let Some(job) = &job {
                j["job"] = json!(job.id);
                j["fees"] = serde_json::to_value(&job.fees)?;
            }
            let mut text = outputs_text(&outputs);
            let mut rows = vec![
                ("request", request.to_string()),
                (
                    "model",
                    format!("{} ({}) v{}", model.id, model.name, version.version),
                ),
                ("version id", version.manifest.to_string()),
                ("executor", executor.to_string()),
                (
                    "trace root",
                    format!(
                        "{}  ({} steps)",
                        resp.receipt.trace_root, resp.receipt.steps
                    ),
                ),
                ("output hash", resp.receipt.output_hash.to_string()),
                ("signature", "valid (executor's key)".into()),
            ];
            match &job {
                Some(job) => {
                    rows.push(("job", job.id.to_string()));
                    rows.extend(fee_rows(job));
                    rows.push(("status", job.status.clone()));
                }
                None => {
                    rows.push((
                        "fees",
                        format!(
                            "royalty {royalty} + executor {price} + protocol fee (cap {max_fee})"
                        ),
                    ));
                    rows.push((
                        "status",
                        "answered; the executor settles it on the ledger".into(),
                    ));
                }
            }
            if let Some(dir) = &a.out {
                rows.push(("wrote", dir.display().to_string()));
            }
            text.push_str(&lines(&rows));
            Ok(Out::new(j, text))
        }
    }
}

fn fee_rows(job: &JobView) -> Vec<(&'static str, String)> {
    vec![(
        "fees",
        format!(
            "royalty {} + executor {} + protocol {} = {}",
            job.fees.royalty,
            job.fees.executor_fees.join(" + "),
            job.fees.protocol_fee,
            job.fees.total
        ),
    )]
}

async fn wait_for(ctx: &Ctx, request: &Hash, final_: bool) -> Result<JobView> {
    let tx = ctx.client.wait_included(request, ctx.timeout()).await?;
    let id = tx
        .created
        .ok_or_else(|| anyhow!("request {request} is included but created no job"))?;
    if final_ {
        Ok(ctx
            .client
            .wait_job(id, "final", ctx.timeout(), |j| job_is_final(&j.status))
            .await?)
    } else {
        Ok(ctx.client.job(id).await?)
    }
}

#[allow(clippy::too_many_arguments)]
async fn replicated(
    ctx: &Ctx,
    key: &deed_types::SecretKey,
    model: &ModelView,
    version: &VersionView,
    input_bytes: &[u8],
    k: u8,
    royalty: Amount,
    a: &InferArgs,
) -> Result<Out> {
    let input = if input_bytes.len() <= deed_types::tx::limits::MAX_INLINE {
        ctx.client.upload(input_bytes, None).await?;
        JobInput::Inline(input_bytes.to_vec())
    } else {
        JobInput::ByCid(ctx.client.upload(input_bytes, None).await?.info.cid)
    };
    let max_fee = match a.max_fee {
        Some(f) => f,
        None => {
            let balance: Amount = ctx
                .client
                .account(&key.address())
                .await?
                .balance
                .parse()
                .context("balance")?;
            // Replicated executors are chosen by the ledger, their prices unknown here:
            // cap at what the account can pay beyond the royalty.
            balance.saturating_sub(ctx.args.tx_fee).max(royalty)
        }
    };
    let stx = ctx
        .client
        .send_action(
            key,
            Action::RequestJob {
                model: ModelId(model.id),
                version: Some(version.version),
                input,
                mode: Mode::Replicated(k),
                max_fee,
                executor: None,
            },
            ctx.args.tx_fee,
        )
        .await?;
    let request = stx.hash();
    let tx = ctx.client.wait_included(&request, ctx.timeout()).await?;
    let id = tx
        .created
        .ok_or_else(|| anyhow!("request {request} is included but created no job"))?;
    let want_final = a.wait.as_deref() == Some("final");
    let job = ctx
        .client
        .wait_job(id, "answered by every executor", ctx.timeout(), |j| {
            job_is_final(&j.status)
                || (!want_final && !j.receipts.is_empty() && j.receipts.iter().all(|r| r.is_some()))
        })
        .await?;
    let receipt =
        job.receipts
            .iter()
            .flatten()
            .next()
            .ok_or_else(|| match job.status.as_str() {
                "declined" => anyhow!(
                    "job {id} was declined: its input does not fit the model \
                 (`deed receipt verify {id}` says why)"
                ),
                status => anyhow!("job {id} is {status} without receipts"),
            })?;
    let tensors = match &receipt.output_inline {
        Some(h) => direct::decode_inline(h)?,
        None => {
            let bytes = ctx.client.download(&Cid(receipt.output_hash), None).await?;
            deed_types::decode_list(&bytes, direct::MAX_OUTPUT_BYTES)
                .map_err(|e| anyhow!("output blob: {e}"))?
        }
    };
    let names = output_names(&version.io_schema, tensors.len());
    let outputs: Vec<(String, Tensor)> = names.into_iter().zip(tensors).collect();
    if let Some(dir) = &a.out {
        write_outputs(dir, &outputs)?;
    }
    let agree = job
        .receipts
        .iter()
        .flatten()
        .all(|r| r.output_hash == receipt.output_hash && r.trace_root == receipt.trace_root);
    let mut text = outputs_text(&outputs);
    let mut rows = vec![
        ("job", id.to_string()),
        ("request", request.to_string()),
        (
            "model",
            format!("{} ({}) v{}", model.id, model.name, version.version),
        ),
        (
            "executors",
            job.executors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("trace root", receipt.trace_root.to_string()),
        (
            "agreement",
            if agree {
                format!("{k} of {k} receipts agree")
            } else {
                "receipts DISAGREE: a dispute decides".into()
            },
        ),
    ];
    rows.extend(fee_rows(&job));
    rows.push(("status", job.status.clone()));
    text.push_str(&lines(&rows));
    Ok(Out::new(
        json!({ "job": job, "request": request, "outputs": outputs_json(&outputs), "agree": agree }),
        text,
    ))
}

fn output_names(io_schema: &str, n: usize) -> Vec<String> {
    let names: Vec<String> = serde_json::from_str::<Value>(io_schema)
        .ok()
        .and_then(|v| {
            v.get("outputs")?.as_array().map(|o| {
                o.iter()
                    .filter_map(|x| x.get("name")?.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default();
    (0..n)
        .map(|i| {
            names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("output{i}"))
        })
        .collect()
}

async fn job_id(ctx: &Ctx, spec: &str) -> Result<u64> {
    if let Ok(id) = spec.parse::<u64>() {
        return Ok(id);
    }
    let hash: Hash = spec
        .parse()
        .map_err(|_| anyhow!("`{spec}` is neither a job id nor a request hash"))?;
    let tx = ctx.client.transaction(&hash).await?;
    tx.created
        .ok_or_else(|| anyhow!("transaction {hash} created no job (state {:?})", tx.state))
}

pub(super) async fn receipt(ctx: &Ctx, cmd: ReceiptCmd) -> Result<Out> {
    match cmd {
        ReceiptCmd::Show { job } => {
            let id = job_id(ctx, &job).await?;
            let j = ctx.client.job(id).await?;
            let mut rows = vec![
                ("job", j.id.to_string()),
                ("requester", j.requester.to_string()),
                ("model", format!("{} v{}", j.model, j.version)),
                ("version id", j.manifest.to_string()),
                ("input hash", j.input_hash.to_string()),
                ("mode", j.mode.clone()),
            ];
            for (e, r) in j.executors.iter().zip(&j.receipts) {
                rows.push((
                    "receipt",
                    match r {
                        Some(r) => format!(
                            "{e}  trace {}  output {}  ({} steps)",
                            r.trace_root, r.output_hash, r.steps
                        ),
                        None => format!("{e}  (none yet)"),
                    },
                ));
            }
            rows.extend(fee_rows(&j));
            rows.push(("status", j.status.clone()));
            if let Some(w) = j.window_end {
                rows.push(("window end", format!("height {w}")));
            }
            if !j.attesters.is_empty() {
                let revealed = if j.audit_revealed.is_some() {
                    "final chain value revealed"
                } else {
                    "not revealed yet"
                };
                rows.push((
                    "audit",
                    format!("{} watcher(s) attested, {revealed}", j.attesters.len()),
                ));
            }
            let mut json = serde_json::to_value(&j)?;
            if let Some(d) = j.dispute {
                let v = ctx.client.dispute(d).await?;
                let state = match &v.winner {
                    Some(w) => format!("{w} won after {} rounds", v.rounds),
                    None => format!("{}, round {}", v.phase, v.rounds),
                };
                let slashed = v
                    .slashed
                    .as_ref()
                    .map(|s| format!(", {s} slashed"))
                    .unwrap_or_default();
                rows.push(("dispute", format!("{d}: {state}{slashed}")));
                json["dispute_view"] = serde_json::to_value(&v)?;
            }
            Ok(Out::new(json, lines(&rows)))
        }
        ReceiptCmd::Verify { job } => {
            let id = job_id(ctx, &job).await?;
            let v = verify_job(ctx, id).await?;
            Ok(v)
        }
    }
}

/// Re-executes job `id` locally and compares every posted receipt.
pub(crate) async fn verify_job(ctx: &Ctx, id: u64) -> Result<Out> {
    let j = ctx.client.job(id).await?;
    let manifest = fetch_manifest(ctx, &j.manifest).await?;
    let file = manifest
        .files
        .first()
        .ok_or_else(|| anyhow!("version manifest lists no files"))?;
    let model_bytes = ctx.client.download(&file.cid, None).await?;
    let input_bytes = fetch_input(ctx, &j).await?;
    if j.status == "declined" {
        let model = Model::load(&model_bytes, &Limits::default())?;
        return verify_decline(ctx, &j, &model, &input_bytes).await;
    }
    let tensors = deed_types::decode_list(&input_bytes, direct::MAX_OUTPUT_BYTES)
        .map_err(|e| anyhow!("job input: {e}"))?;
    let limits = Limits::default();
    let model = Model::load(&model_bytes, &limits)?;
    let names: Vec<String> = model.required_inputs().map(|v| v.name.clone()).collect();
    if names.len() != tensors.len() {
        bail!(
            "job input has {} tensors, the model takes {}",
            tensors.len(),
            names.len()
        );
    }
    let inputs: Vec<(String, Tensor)> = names.into_iter().zip(tensors).collect();
    let plan = model.plan(&inputs, &limits)?;
    let opts = RunOptions {
        mode: KernelMode::Fast,
        threads: 1,
        budget: None,
        trace: true,
        limits: limits.clone(),
        ..RunOptions::default()
    };
    let run = plan.execute(&inputs, &RtCtx::new(KernelMode::Fast, 1), &opts)?;
    let outs: Vec<Tensor> = run.outputs.iter().map(|(_, t)| t.clone()).collect();
    let output_hash = Hash::of(&encode_list(&outs));
    let trace_root = run.trace.root();
    let steps = run.trace.len() as u64;
    let mut verdicts = Vec::new();
    let mut all_ok = true;
    let mut rows = vec![
        ("job", j.id.to_string()),
        (
            "model",
            format!(
                "{} v{}  (manifest signed by {})",
                j.model, j.version, manifest.creator
            ),
        ),
        ("local trace", format!("{trace_root}  ({steps} steps)")),
        ("local output", output_hash.to_string()),
    ];
    let mut receipts = 0;
    for (e, r) in j.executors.iter().zip(&j.receipts) {
        let Some(r) = r else { continue };
        receipts += 1;
        let ok = r.output_hash == output_hash && r.trace_root == trace_root && r.steps == steps;
        all_ok &= ok;
        verdicts.push(json!({ "executor": e, "output_hash": r.output_hash, "trace_root": r.trace_root, "match": ok }));
        rows.push((
            "receipt",
            format!("{e}  {}", if ok { "MATCHES" } else { "DIFFERS" }),
        ));
    }
    if receipts == 0 {
        bail!("job {id} has no receipt yet (status {})", j.status);
    }
    let verdict = if all_ok { "valid" } else { "invalid" };
    rows.push((
        "verdict",
        format!("{verdict}: re-executed with the canonical runtime"),
    ));
    let mut out = Out::new(
        json!({ "job": j.id, "verdict": verdict, "output_hash": output_hash, "trace_root": trace_root,
                "steps": steps, "receipts": verdicts }),
        lines(&rows),
    );
    if !all_ok {
        out.code = 2;
    }
    Ok(out)
}

/// The verdict on a declined job: valid when the input does not fit the model, as
/// the validators' referee found ([`deed_ledger::input_fault`], run here).
async fn verify_decline(ctx: &Ctx, j: &JobView, model: &Model, input: &[u8]) -> Result<Out> {
    let version = ctx.client.version(j.model, j.version).await?;
    let fault = deed_ledger::input_fault(model, input, version.cost);
    let (verdict, why) = match &fault {
        Some(f) => ("valid", format!("the input does not fit the model: {f}")),
        None => ("invalid", "the input fits the model".to_owned()),
    };
    let rows = vec![
        ("job", j.id.to_string()),
        ("model", format!("{} v{}", j.model, j.version)),
        ("status", "declined by its executor".to_owned()),
        ("verdict", format!("{verdict}: {why}")),
    ];
    let mut out = Out::new(
        json!({ "job": j.id, "verdict": verdict, "declined": true, "fault": fault }),
        lines(&rows),
    );
    if fault.is_none() {
        out.code = 2;
    }
    Ok(out)
}

async fn fetch_input(ctx: &Ctx, j: &JobView) -> Result<Vec<u8>> {
    if let Some(h) = &j.input_inline {
        let bytes = hexbytes::decode(h).map_err(|e| anyhow!("job {}'s inline input: {e}", j.id))?;
        if Hash::of(&bytes) != j.input_hash {
            bail!("job {}'s inline input does not match its input hash", j.id);
        }
        return Ok(bytes);
    }
    let cid = j.input_cid.unwrap_or(Cid(j.input_hash));
    match ctx.client.download(&cid, None).await {
        Ok(b) => return Ok(b),
        Err(deed_client::ClientError::Api { status: 404, .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let p = input_cache(&j.input_hash)?;
    let bytes = std::fs::read(&p).map_err(|_| {
        anyhow!(
            "the input of job {} (hash {}) is neither on the node nor in {}",
            j.id,
            j.input_hash,
            p.display()
        )
    })?;
    if Hash::of(&bytes) != j.input_hash {
        bail!(
            "the cached input {} does not match the job's input hash",
            p.display()
        );
    }
    Ok(bytes)
}

/// One line per output: name, dtype, shape and the first values.
fn outputs_text(outputs: &[(String, Tensor)]) -> String {
    outputs
        .iter()
        .map(|(n, t)| {
            format!(
                "output    {n}  {}  {:?}  {}\n",
                t.dtype(),
                t.shape(),
                tensor_io::preview(t, 6)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("none").unwrap(), Mode::None);
        assert_eq!(parse_mode("optimistic").unwrap(), Mode::Optimistic);
        assert_eq!(parse_mode("replicated:3").unwrap(), Mode::Replicated(3));
        assert!(parse_mode("replicated:1").is_err());
        assert!(parse_mode("replicated:x").is_err());
        assert!(parse_mode("zk").is_err());
    }

    #[test]
    fn inputs_checked_against_schema() {
        let dir = tempfile::tempdir().unwrap();
        let x = dir.path().join("x.npy");
        tensor_io::write_npy(&x, &Tensor::from_vec(vec![1, 4], vec![0f32; 4]).unwrap()).unwrap();
        let schema = schema_inputs(
            r#"{"inputs":[{"name":"x","dtype":"float32","shape":[1,4]}],"outputs":[]}"#,
        )
        .unwrap();
        let f32_name = Tensor::from_vec(vec![1], vec![0f32])
            .unwrap()
            .dtype()
            .name();
        let schema: Vec<SchemaInput> = schema
            .into_iter()
            .map(|mut s| {
                s.dtype = Some(f32_name.to_owned());
                s
            })
            .collect();
        let xs = x.display().to_string();
        assert_eq!(
            read_inputs(&schema, std::slice::from_ref(&xs))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            read_inputs(&schema, &[format!("x={xs}")]).unwrap()[0].0,
            "x"
        );
        let e = read_inputs(&schema, &[format!("y={xs}")]).unwrap_err();
        assert!(e.to_string().contains("no input `y`"), "{e}");
        let e = read_inputs(&schema, &[]).unwrap_err();
        assert!(e.to_string().contains("missing input `x`"), "{e}");

        let bad_shape = dir.path().join("b.npy");
        tensor_io::write_npy(
            &bad_shape,
            &Tensor::from_vec(vec![2, 2], vec![0f32; 4]).unwrap(),
        )
        .unwrap();
        let e = read_inputs(&schema, &[bad_shape.display().to_string()]).unwrap_err();
        assert!(e.to_string().contains("shape"), "{e}");

        let bad_dtype = dir.path().join("d.npy");
        tensor_io::write_npy(
            &bad_dtype,
            &Tensor::from_vec(vec![1, 4], vec![0i64; 4]).unwrap(),
        )
        .unwrap();
        let e = read_inputs(&schema, &[bad_dtype.display().to_string()]).unwrap_err();
        assert!(e.to_string().contains("dtype"), "{e}");
    }
}
