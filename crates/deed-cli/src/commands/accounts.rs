//! Keys, balances, transfers, executor stake and node status.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use deed_client::DEFAULT_CHUNK_SIZE;
use deed_types::{Action, Amount, Cid, ModelId};
use serde_json::json;

use super::{byte_bar, lines, Ctx, Out};
use crate::keystore::{self, KeyEntry};

/// `deed keys`.
#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Generate a new key and store it under NAME, encrypted with a passphrase.
    New {
        /// Key name.
        name: String,
        /// Store the key unencrypted (hex in NAME.key): for throwaway dev keys only.
        #[arg(long)]
        insecure_plaintext: bool,
    },
    /// Store an existing key: 64 hex digits, a file holding them, or a keystore v3
    /// JSON file (kept as it is, with its own passphrase).
    Import {
        /// Key name.
        name: String,
        /// The secret key as hex, or a path to a hex or keystore v3 file.
        secret: String,
        /// Store a hex key unencrypted (hex in NAME.key): for throwaway dev keys only.
        #[arg(long)]
        insecure_plaintext: bool,
    },
    /// List stored keys.
    List,
    /// Show a key's address (NAME, hex or file; default: --key).
    Show {
        /// The key.
        name: Option<String>,
    },
}

/// `deed executor`.
#[derive(Subcommand, Debug)]
pub enum ExecutorCmd {
    /// Bond stake as an executor serving MODELS at ENDPOINT.
    Bond {
        /// Stake added, in base units.
        amount: Amount,
        /// URL requesters call for direct execution.
        #[arg(long)]
        endpoint: String,
        /// Fee per job.
        #[arg(long, default_value_t = 0)]
        price: Amount,
        /// Model ids served, comma separated.
        #[arg(long, value_delimiter = ',')]
        models: Vec<u64>,
    },
    /// Start unbonding stake.
    Unbond {
        /// Stake to unbond.
        amount: Amount,
    },
    /// Show an executor's stake and terms (default: the --key account).
    Status {
        /// Address or key name.
        address: Option<String>,
    },
}

/// `deed blob`.
#[derive(Subcommand, Debug)]
pub enum BlobCmd {
    /// Upload a file (resuming an interrupted upload) and print its CID.
    Put {
        /// The file.
        file: std::path::PathBuf,
    },
    /// Download a blob, verifying every chunk and its CID.
    Get {
        /// The blob's CID.
        cid: String,
        /// Where to write it.
        #[arg(long, short)]
        out: std::path::PathBuf,
        /// Only bytes START..END (END exclusive).
        #[arg(long, value_name = "START..END")]
        range: Option<String>,
    },
}

pub(super) async fn blob(ctx: &Ctx, cmd: BlobCmd) -> Result<Out> {
    match cmd {
        BlobCmd::Put { file } => {
            let bar = byte_bar(ctx, "upload");
            let progress = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
            };
            let t = std::time::Instant::now();
            let up = ctx
                .client
                .upload_file(&file, DEFAULT_CHUNK_SIZE, Some(&progress))
                .await
                .with_context(|| format!("cannot upload {}", file.display()))?;
            let secs = t.elapsed().as_secs_f64();
            bar.finish_and_clear();
            Ok(Out::new(
                json!({ "cid": up.info.cid, "size": up.info.size, "chunks_sent": up.chunks_sent,
                        "chunks_total": up.chunks_total, "seconds": secs }),
                lines(&[
                    ("cid", up.info.cid.to_string()),
                    ("size", up.info.size.to_string()),
                    (
                        "chunks",
                        format!("{} sent of {}", up.chunks_sent, up.chunks_total),
                    ),
                ]),
            ))
        }
        BlobCmd::Get { cid, out, range } => {
            let cid: Cid = cid
                .parse()
                .map_err(|e| anyhow::anyhow!("bad CID `{cid}`: {e}"))?;
            let t = std::time::Instant::now();
            let size = match range {
                Some(r) => {
                    let (a, b) = r
                        .split_once("..")
                        .ok_or_else(|| anyhow::anyhow!("--range is START..END"))?;
                    let a: u64 = a.parse().context("range start")?;
                    let b: u64 = b.parse().context("range end")?;
                    let bytes = ctx.client.download_range(&cid, a..b).await?;
                    super::models::write_atomic(&out, &bytes)?;
                    bytes.len() as u64
                }
                None => {
                    // Written beside OUT as it arrives and renamed into place once
                    // the whole blob verified: a failed download leaves nothing.
                    let tmp = super::models::scratch_beside(&out)?;
                    let bar = byte_bar(ctx, "download");
                    let progress = |done: u64, total: u64| {
                        bar.set_length(total);
                        bar.set_position(done);
                    };
                    let (tmp, size) = ctx.client.download_to(&cid, tmp, Some(&progress)).await?;
                    bar.finish_and_clear();
                    tmp.persist(&out)
                        .with_context(|| format!("cannot write {}", out.display()))?;
                    size
                }
            };
            let secs = t.elapsed().as_secs_f64();
            Ok(Out::new(
                json!({ "cid": cid, "size": size, "path": out, "seconds": secs }),
                lines(&[
                    ("wrote", out.display().to_string()),
                    ("bytes", size.to_string()),
                ]),
            ))
        }
    }
}

fn entry_json(e: &KeyEntry) -> serde_json::Value {
    json!({ "name": e.name, "address": e.address, "encrypted": e.encrypted })
}

pub(super) fn keys(ctx: &Ctx, cmd: KeysCmd) -> Result<Out> {
    let store = ctx.keystore()?;
    let pass = ctx.passphrase();
    let store_key = |name: &str, key: &deed_types::SecretKey, plaintext: bool| {
        if plaintext {
            store.insert_plaintext(name, key)
        } else {
            let p = pass.choose(&format!("the new key `{name}`"))?;
            store.insert(name, key, &p)
        }
    };
    match cmd {
        KeysCmd::New {
            name,
            insecure_plaintext,
        } => {
            let e = store_key(&name, &keystore::generate()?, insecure_plaintext)?;
            Ok(Out::new(
                entry_json(&e),
                format!("created key `{}`  {}", e.name, e.address),
            ))
        }
        KeysCmd::Import {
            name,
            secret,
            insecure_plaintext,
        } => {
            let path = std::path::Path::new(&secret);
            let text = if path.is_file() {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
            } else {
                secret.clone()
            };
            let e = if text.trim_start().starts_with('{') {
                if insecure_plaintext {
                    bail!(
                        "--insecure-plaintext applies to hex keys; a keystore file stays encrypted"
                    );
                }
                let p = pass.get(&format!("the key file {secret}"))?;
                store.import_v3(&name, &text, &p)?
            } else {
                let key = keystore::parse_hex_key(&text).with_context(|| {
                    if path.is_file() {
                        format!("bad key file {}", path.display())
                    } else {
                        "not a key file, 64 hex digits or a keystore v3 file".to_owned()
                    }
                })?;
                store_key(&name, &key, insecure_plaintext)?
            };
            Ok(Out::new(
                entry_json(&e),
                format!("imported key `{}`  {}", e.name, e.address),
            ))
        }
        KeysCmd::List => {
            let list = store.list()?;
            let text = if list.is_empty() {
                format!(
                    "no keys in {} (create one with `deed keys new NAME`)",
                    store.dir().display()
                )
            } else {
                let w = list.iter().map(|e| e.name.len()).max().unwrap_or(0);
                list.iter()
                    .map(|e| {
                        let plain = if e.encrypted { "" } else { "  (unencrypted)" };
                        format!("{:w$}  {}{plain}", e.name, e.address)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Out::new(
                json!({ "dir": store.dir(), "keys": list.iter().map(entry_json).collect::<Vec<_>>() }),
                text,
            ))
        }
        KeysCmd::Show { name } => {
            let key = match name {
                Some(n) => keystore::resolve(&store, &n, &pass)?,
                None => ctx.key()?,
            };
            let a = key.address();
            Ok(Out::new(json!({ "address": a }), a.to_string()))
        }
    }
}

pub(super) async fn balance(ctx: &Ctx, address: Option<String>) -> Result<Out> {
    let addr = match address {
        Some(a) => ctx.address(&a)?,
        None => ctx.key()?.address(),
    };
    let acc = ctx.client.account(&addr).await?;
    let mut rows = vec![
        ("address", acc.address.to_string()),
        ("balance", acc.balance.clone()),
        ("nonce", acc.nonce.to_string()),
    ];
    if let Some(e) = &acc.executor {
        rows.push(("stake", e.stake.clone()));
    }
    Ok(Out::new(serde_json::to_value(&acc)?, lines(&rows)))
}

pub(super) async fn transfer(ctx: &Ctx, to: &str, amount: Amount) -> Result<Out> {
    let key = ctx.key()?;
    let to = ctx.address(to)?;
    let tx = ctx.transact(&key, Action::Transfer { to, amount }).await?;
    let bal = ctx.client.account(&key.address()).await?.balance;
    Ok(Out::new(
        json!({ "tx": tx.hash, "to": to, "amount": amount.to_string(), "balance": bal }),
        lines(&[
            ("sent", format!("{amount} to {to}")),
            ("tx", tx.hash.to_string()),
            ("balance", bal),
        ]),
    ))
}

pub(super) async fn executor(ctx: &Ctx, cmd: ExecutorCmd) -> Result<Out> {
    match cmd {
        ExecutorCmd::Bond {
            amount,
            endpoint,
            price,
            models,
        } => {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                bail!("--endpoint must be an http:// or https:// URL");
            }
            let key = ctx.key()?;
            let action = Action::Bond {
                amount,
                endpoint,
                price,
                models: models.into_iter().map(ModelId).collect(),
            };
            let tx = ctx.transact(&key, action).await?;
            executor_status(ctx, key.address(), Some(tx.hash)).await
        }
        ExecutorCmd::Unbond { amount } => {
            let key = ctx.key()?;
            let tx = ctx.transact(&key, Action::Unbond { amount }).await?;
            executor_status(ctx, key.address(), Some(tx.hash)).await
        }
        ExecutorCmd::Status { address } => {
            let addr = match address {
                Some(a) => ctx.address(&a)?,
                None => ctx.key()?.address(),
            };
            executor_status(ctx, addr, None).await
        }
    }
}

async fn executor_status(
    ctx: &Ctx,
    addr: deed_types::Address,
    tx: Option<deed_types::Hash>,
) -> Result<Out> {
    let acc = ctx.client.account(&addr).await?;
    let Some(e) = &acc.executor else {
        return Ok(Out::new(
            json!({ "address": addr, "executor": null, "tx": tx }),
            format!("{addr} is not a bonded executor"),
        ));
    };
    let mut rows = vec![
        ("executor", addr.to_string()),
        ("stake", e.stake.clone()),
        ("endpoint", e.endpoint.clone()),
        ("price", e.price.clone()),
        (
            "models",
            e.models
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ];
    if let Some(j) = e.jailed_until {
        rows.push(("jailed until", j.to_string()));
    }
    for (h, a) in &e.unbonding {
        rows.push(("unbonding", format!("{a} withdrawable at height {h}")));
    }
    if let Some(t) = tx {
        rows.push(("tx", t.to_string()));
    }
    Ok(Out::new(
        json!({ "address": addr, "executor": e, "tx": tx }),
        lines(&rows),
    ))
}

pub(super) async fn status(ctx: &Ctx) -> Result<Out> {
    let s = ctx.client.status().await?;
    let mut rows = vec![
        ("node", ctx.client.base().to_owned()),
        ("chain id", s.chain_id.to_string()),
        ("height", s.height.to_string()),
        ("state root", s.state_root.to_string()),
        ("roles", s.roles.join(", ")),
        ("mempool", s.mempool.to_string()),
        ("version", s.version.clone()),
    ];
    if let Some(e) = s.executor {
        rows.push(("executor", e.to_string()));
    }
    for e in s.executors.iter().filter(|e| Some(**e) != s.executor) {
        rows.push(("executor", e.to_string()));
    }
    if let Some(w) = s.watcher {
        rows.push(("watcher", w.to_string()));
    }
    Ok(Out::new(serde_json::to_value(&s)?, lines(&rows)))
}
