//! `deed model`: create, publish, list, show, versions, download, transfer, price,
//! deprecate.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use deed_client::api::{LicenceView, ModelManifest, ModelView, VersionView};
use deed_client::{Client, ClientError};
use deed_types::{Action, Address, Amount, Cid, Licence, Lineage, ModelId, BPS_DENOMINATOR};
use serde_json::json;

use super::{byte_bar, lines, Ctx, Out};
use crate::modelinfo;

/// `deed model`.
#[derive(Subcommand, Debug)]
pub enum ModelCmd {
    /// Register a new model owned by the --key account.
    Create(CreateArgs),
    /// Validate an ONNX file, upload it and publish it as the model's next version
    /// (creating the model first if the account has none of that name).
    Publish(PublishArgs),
    /// List models, optionally of one owner.
    List {
        /// Owner: address or key name.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show a model.
    Show {
        /// MODEL: id, OWNER/NAME or a name owned by --key.
        model: String,
    },
    /// List a model's versions.
    Versions {
        /// MODEL.
        model: String,
    },
    /// Download a version's ONNX file, verified against its CID.
    Download {
        /// MODEL[@VERSION] (default: latest).
        model: String,
        /// Output file (default: NAME-vVERSION.onnx).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Hand a model to another account.
    Transfer {
        /// MODEL.
        model: String,
        /// New owner: address or key name.
        to: String,
    },
    /// Set the royalty per call.
    Price {
        /// MODEL.
        model: String,
        /// New price in base units.
        price: Amount,
    },
    /// Mark a version as not to be used for new jobs.
    Deprecate {
        /// MODEL@VERSION.
        model: String,
    },
}

/// Terms of a new model.
#[derive(Args, Debug, Clone, Default)]
pub struct Terms {
    /// Free text.
    #[arg(long, default_value = "")]
    pub(crate) description: String,
    /// `open`, `paid` or `allow:ADDR,ADDR,...`.
    #[arg(long, default_value = "paid")]
    pub(crate) license: String,
    /// Royalty per call in base units.
    #[arg(long, default_value_t = 0)]
    pub(crate) price: Amount,
    /// Parent model of a fine-tune.
    #[arg(long, requires = "upstream_share")]
    pub(crate) parent: Option<String>,
    /// Percent of each royalty paid up to the parent (0-100, in steps of 0.01).
    #[arg(long, requires = "parent")]
    pub(crate) upstream_share: Option<f64>,
}

/// `deed model create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Model name, unique among the owner's models.
    name: String,
    #[command(flatten)]
    terms: Terms,
}

/// `deed model publish`.
#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Model name (owned by --key).
    pub(crate) name: String,
    /// The ONNX file.
    pub(crate) file: PathBuf,
    /// Release notes.
    #[arg(long, default_value = "")]
    pub(crate) notes: String,
    #[command(flatten)]
    pub(crate) terms: Terms,
}

/// Parses `--license`.
pub fn parse_licence(text: &str) -> Result<Licence> {
    match text {
        "open" => Ok(Licence::Open),
        "paid" => Ok(Licence::Paid),
        t => match t.strip_prefix("allow:") {
            Some(list) => {
                let accounts = list
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.parse::<Address>()
                            .map_err(|e| anyhow!("bad address `{s}` in --license: {e}"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                if accounts.is_empty() {
                    bail!("--license allow: needs at least one address");
                }
                Ok(Licence::AllowList(accounts))
            }
            None => bail!("--license is `open`, `paid` or `allow:ADDR,ADDR,...`, not `{t}`"),
        },
    }
}

/// Percent (0-100) to basis points. The ledger keeps a share in whole basis points
/// (steps of 0.01%): a share between two steps is refused rather than rounded, so a
/// share given is the share recorded (and a tiny one does not become none).
pub fn share_bps(pct: f64) -> Result<u16> {
    if !(0.0..=100.0).contains(&pct) || !pct.is_finite() {
        bail!("--upstream-share is a percentage between 0 and 100, not {pct}");
    }
    let exact = pct * BPS_DENOMINATOR as f64 / 100.0;
    let bps = exact.round();
    // Decimal steps such as 0.07% are not exact in binary: allow for that only.
    if (exact - bps).abs() > 1e-6 || (pct > 0.0 && bps == 0.0) {
        bail!(
            "--upstream-share {pct} is not a whole number of basis points: the ledger \
             records shares in steps of 0.01%"
        );
    }
    Ok(bps as u16)
}

fn licence_text(l: &LicenceView) -> String {
    match l {
        LicenceView::Open => "open".into(),
        LicenceView::Paid => "paid".into(),
        LicenceView::AllowList { accounts } => format!(
            "allow:{}",
            accounts
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn model_rows(m: &ModelView) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("model", format!("{} ({})", m.id, m.name)),
        ("owner", m.owner.to_string()),
        ("license", licence_text(&m.licence)),
        ("price", m.price.clone()),
        ("versions", m.versions.to_string()),
    ];
    if let Some((p, bps)) = m.parent {
        rows.push((
            "parent",
            format!("{p} ({}% upstream)", f64::from(bps) / 100.0),
        ));
    }
    if !m.description.is_empty() {
        rows.push(("description", m.description.clone()));
    }
    rows
}

fn version_line(v: &VersionView) -> String {
    format!(
        "v{:<3} {}  steps {}  cost {}{}{}",
        v.version,
        v.manifest,
        v.steps,
        v.cost,
        if v.deprecated { "  deprecated" } else { "" },
        if v.notes.is_empty() {
            String::new()
        } else {
            format!("  {}", v.notes)
        }
    )
}

/// Splits `MODEL@VERSION`.
pub fn split_version(spec: &str) -> Result<(&str, Option<u32>)> {
    match spec.rsplit_once('@') {
        Some((m, v)) => {
            let v = v.strip_prefix('v').unwrap_or(v);
            let n = v.parse::<u32>().map_err(|_| {
                anyhow!(
                    "`{spec}`: the version after @ is a number from 1 to {}, not `{v}`",
                    u32::MAX
                )
            })?;
            Ok((m, Some(n)))
        }
        None => Ok((spec, None)),
    }
}

/// The version `n`, or the latest non-deprecated one.
/// The model `spec` names and its version `n` (the latest usable one by default).
/// A model named by id needs no lookup first, so the model and its versions are
/// read side by side.
pub(crate) async fn model_version(
    ctx: &Ctx,
    spec: &str,
    n: Option<u32>,
) -> Result<(ModelView, VersionView)> {
    let (m, v) = match spec.parse::<u64>() {
        Ok(id) => {
            let (m, v) = tokio::join!(ctx.model(spec), version_of(&ctx.client, id, n));
            (m?, v)
        }
        Err(_) => {
            let m = ctx.model(spec).await?;
            let v = version_of(&ctx.client, m.id, n).await;
            (m, v)
        }
    };
    let v = match n {
        Some(n) => v.with_context(|| format!("model {} ({}) has no version {n}", m.id, m.name))?,
        None => v?,
    };
    let v = v.ok_or_else(|| anyhow!("model {} ({}) has no usable version", m.id, m.name))?;
    Ok((m, v))
}

/// Version `n` of model `id`, or its latest version that is not deprecated.
async fn version_of(
    client: &Client,
    id: u64,
    n: Option<u32>,
) -> Result<Option<VersionView>, ClientError> {
    match n {
        Some(n) => client.version(id, n).await.map(Some),
        None => Ok(client
            .versions(id)
            .await?
            .into_iter()
            .filter(|v| !v.deprecated)
            .max_by_key(|v| v.version)),
    }
}

/// Fetches and checks a version's manifest.
pub(crate) async fn fetch_manifest(ctx: &Ctx, cid: &Cid) -> Result<ModelManifest> {
    let bytes = ctx.client.download(cid, None).await?;
    let m: ModelManifest =
        serde_json::from_slice(&bytes).context("the version manifest is not valid JSON")?;
    modelinfo::check_manifest_signature(&m)?;
    Ok(m)
}

async fn create(ctx: &Ctx, name: &str, terms: &Terms) -> Result<ModelView> {
    let key = ctx.key()?;
    let licence = parse_licence(&terms.license)?;
    let lineage = match (&terms.parent, terms.upstream_share) {
        (Some(p), Some(pct)) => Some(Lineage {
            parent: ModelId(ctx.model(p).await?.id),
            upstream_bps: share_bps(pct)?,
        }),
        _ => None,
    };
    let tx = ctx
        .transact(
            &key,
            Action::RegisterModel {
                name: name.to_owned(),
                description: terms.description.clone(),
                licence,
                price: terms.price,
                lineage,
            },
        )
        .await?;
    let id = tx
        .created
        .ok_or_else(|| anyhow!("the node did not report the new model's id"))?;
    Ok(ctx.client.model(id).await?)
}

pub(super) async fn run(ctx: &Ctx, cmd: ModelCmd) -> Result<Out> {
    match cmd {
        ModelCmd::Create(a) => {
            let m = create(ctx, &a.name, &a.terms).await?;
            Ok(Out::new(serde_json::to_value(&m)?, lines(&model_rows(&m))))
        }
        ModelCmd::Publish(a) => publish(ctx, a).await,
        ModelCmd::List { owner } => {
            let owner = owner.map(|o| ctx.address(&o)).transpose()?;
            let list = ctx.client.models(owner.as_ref(), None).await?;
            let text = list
                .iter()
                .map(|m| {
                    format!(
                        "{:>4}  {:24}  {}  v{}  {}  price {}",
                        m.id,
                        m.name,
                        m.owner,
                        m.versions,
                        licence_text(&m.licence),
                        m.price
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            Ok(Out::new(serde_json::to_value(&list)?, text))
        }
        ModelCmd::Show { model } => {
            let m = ctx.model(&model).await?;
            Ok(Out::new(serde_json::to_value(&m)?, lines(&model_rows(&m))))
        }
        ModelCmd::Versions { model } => {
            let m = ctx.model(&model).await?;
            let vs = ctx.client.versions(m.id).await?;
            let text = vs.iter().map(version_line).collect::<Vec<_>>().join("\n");
            Ok(Out::new(serde_json::to_value(&vs)?, text))
        }
        ModelCmd::Download { model, out } => {
            let (spec, n) = split_version(&model)?;
            let (m, v) = model_version(ctx, spec, n).await?;
            let manifest = fetch_manifest(ctx, &v.manifest).await?;
            let file = manifest
                .files
                .first()
                .ok_or_else(|| anyhow!("version manifest lists no files"))?;
            let bar = byte_bar(ctx, "download");
            let progress = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
            };
            let bytes = ctx.client.download(&file.cid, Some(&progress)).await?;
            bar.finish_and_clear();
            let path =
                out.unwrap_or_else(|| PathBuf::from(format!("{}-v{}.onnx", m.name, v.version)));
            write_atomic(&path, &bytes)?;
            Ok(Out::new(
                json!({ "model": m.id, "version": v.version, "cid": file.cid, "size": bytes.len(), "path": path }),
                lines(&[
                    ("wrote", path.display().to_string()),
                    ("bytes", bytes.len().to_string()),
                    ("cid", file.cid.to_string()),
                ]),
            ))
        }
        ModelCmd::Transfer { model, to } => {
            let m = ctx.model(&model).await?;
            let to = ctx.address(&to)?;
            let key = ctx.key()?;
            let tx = ctx
                .transact(
                    &key,
                    Action::TransferModel {
                        model: ModelId(m.id),
                        to,
                    },
                )
                .await?;
            let m = ctx.client.model(m.id).await?;
            Ok(Out::new(
                json!({ "tx": tx.hash, "model": m }),
                lines(&model_rows(&m)),
            ))
        }
        ModelCmd::Price { model, price } => {
            let m = ctx.model(&model).await?;
            let key = ctx.key()?;
            let tx = ctx
                .transact(
                    &key,
                    Action::UpdateModel {
                        model: ModelId(m.id),
                        price: Some(price),
                        licence: None,
                        description: None,
                    },
                )
                .await?;
            let m = ctx.client.model(m.id).await?;
            Ok(Out::new(
                json!({ "tx": tx.hash, "model": m }),
                lines(&model_rows(&m)),
            ))
        }
        ModelCmd::Deprecate { model } => {
            let (spec, n) = split_version(&model)?;
            let n = n.ok_or_else(|| anyhow!("name the version to deprecate: MODEL@VERSION"))?;
            let m = ctx.model(spec).await?;
            let key = ctx.key()?;
            let tx = ctx
                .transact(
                    &key,
                    Action::DeprecateVersion {
                        model: ModelId(m.id),
                        version: n,
                    },
                )
                .await?;
            let v = ctx.client.version(m.id, n).await?;
            Ok(Out::new(
                json!({ "tx": tx.hash, "version": v }),
                version_line(&v),
            ))
        }
    }
}

pub(crate) async fn publish(ctx: &Ctx, a: PublishArgs) -> Result<Out> {
    let key = ctx.key()?;
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let info = modelinfo::describe(&bytes)
        .with_context(|| format!("{} is not a model Deed can run", a.file.display()))?;
    let owner = key.address();
    let existing = ctx
        .client
        .models(Some(&owner), Some(&a.name))
        .await?
        .into_iter()
        .find(|m| m.name == a.name && m.owner == owner);
    let model = match existing {
        Some(m) => {
            if a.terms.parent.is_some() {
                bail!(
                    "model `{}` exists: its lineage was fixed when it was created",
                    a.name
                );
            }
            m
        }
        None => create(ctx, &a.name, &a.terms).await?,
    };
    let bar = byte_bar(ctx, "upload");
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let file = ctx.client.upload(&bytes, Some(&progress)).await?;
    bar.finish_and_clear();
    let file_name = a
        .file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model.onnx");
    let manifest =
        modelinfo::signed_manifest(&info, file_name, bytes.len() as u64, file.info.cid, &key)?;
    let mbytes = manifest.to_bytes();
    let uploaded = ctx.client.upload(&mbytes, None).await?;
    let cid = uploaded.info.cid;
    let tx = ctx
        .transact(
            &key,
            Action::PublishVersion {
                model: ModelId(model.id),
                manifest: cid,
                io_schema: info.io_schema.clone(),
                steps: info.steps,
                cost: info.cost,
                notes: a.notes.clone(),
            },
        )
        .await?;
    let height = match tx.state {
        deed_client::api::TxState::Included { height } => Some(height),
        _ => None,
    };
    // Publishing the same file again makes a new version with the same manifest:
    // the one this transaction made is the newest published at its height.
    let v = ctx
        .client
        .versions(model.id)
        .await?
        .into_iter()
        .filter(|v| v.manifest == cid && height.is_none_or(|h| v.published == h))
        .max_by_key(|v| v.version)
        .ok_or_else(|| anyhow!("the published version does not appear on the node"))?;
    Ok(Out::new(
        json!({
            "model": model.id, "name": model.name, "version": v.version, "manifest": cid,
            "file": file.info.cid, "size": bytes.len(), "steps": info.steps, "cost": info.cost,
            "chunks_sent": file.chunks_sent, "chunks_total": file.chunks_total,
        }),
        lines(&[
            (
                "published",
                format!("{} v{} (model {})", model.name, v.version, model.id),
            ),
            ("version id", cid.to_string()),
            ("file", format!("{} ({} bytes)", file.info.cid, bytes.len())),
            ("steps", info.steps.to_string()),
            ("cost", info.cost.to_string()),
        ]),
    ))
}

/// Writes through a temporary file in the same folder, so a failure leaves nothing
/// half-written.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = scratch_beside(path)?;
    std::io::Write::write_all(&mut tmp, bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A new scratch file in the folder of `path` (created if needed), to be renamed to
/// `path` once complete; dropped unrenamed, it is deleted.
pub(crate) fn scratch_beside(path: &std::path::Path) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot write in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licence_and_share_parsing() {
        assert_eq!(parse_licence("open").unwrap(), Licence::Open);
        assert_eq!(parse_licence("paid").unwrap(), Licence::Paid);
        let a = deed_types::SecretKey::from_seed(b"a").address();
        assert_eq!(
            parse_licence(&format!("allow:{a}")).unwrap(),
            Licence::AllowList(vec![a])
        );
        assert!(parse_licence("allow:").is_err());
        assert!(parse_licence("allow:0x12").is_err());
        assert!(parse_licence("free").is_err());
        assert_eq!(share_bps(12.5).unwrap(), 1250);
        assert_eq!(share_bps(100.0).unwrap(), 10_000);
        assert!(share_bps(101.0).is_err());
        assert!(share_bps(-1.0).is_err());
        assert_eq!(share_bps(0.0).unwrap(), 0);
        assert_eq!(share_bps(0.07).unwrap(), 7);
        assert_eq!(share_bps(33.33).unwrap(), 3333);
        // Shares between two steps are refused, not rounded (to none, for a tiny one).
        for pct in [1e-30, 0.001, 0.005, 12.345, 99.999] {
            assert!(share_bps(pct).is_err(), "{pct}");
        }
    }

    #[test]
    fn version_suffix() {
        assert_eq!(split_version("m").unwrap(), ("m", None));
        assert_eq!(split_version("m@3").unwrap(), ("m", Some(3)));
        assert_eq!(split_version("0xab/m@v2").unwrap(), ("0xab/m", Some(2)));
        assert!(split_version("m@x").is_err());
        let e = split_version("m@99999999999").unwrap_err().to_string();
        assert!(e.contains("from 1 to 4294967295, not `99999999999`"), "{e}");
    }
}
