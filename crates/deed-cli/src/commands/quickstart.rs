//! `deed quickstart`: the whole network on one machine in one command. Starts
//! `deed dev` in a temporary folder, publishes the example model as one dev account,
//! runs it optimistically as another, waits for finality, re-verifies the receipt
//! and shows the royalty the owner received.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use deed_client::Client;
use deed_types::{Amount, SecretKey};
use serde_json::json;

use super::infer::{infer, verify_job, InferArgs};
use super::models::{publish, PublishArgs, Terms};
use super::{Ctx, NodeArgs, Out};
use crate::devnode::{free_port, DevNode};

/// `deed quickstart`.
#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// The ONNX model to publish (default: the repository's examples/mlp/model.onnx).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Its input, NAME=FILE or FILE (default: examples/mlp/x.npy).
    #[arg(long)]
    input: Option<String>,
    /// Keep the dev network's data in DIR instead of a temporary folder.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Royalty per call of the published model.
    #[arg(long, default_value_t = 100)]
    price: Amount,
}

fn example(file: &str) -> PathBuf {
    let local = Path::new("examples/mlp").join(file);
    if local.is_file() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/mlp")
        .join(file)
}

fn step(ctx: &Ctx, text: &str) {
    if !ctx.json {
        eprintln!("==> {text}");
    }
}

fn as_ctx(parent: &Ctx, url: &str, key: &SecretKey) -> Result<Ctx> {
    Ok(Ctx {
        client: Client::new(url)?,
        args: NodeArgs {
            node: url.to_owned(),
            key: Some(hex::encode(key.to_bytes())),
            password_file: parent.args.password_file.clone(),
            timeout: parent.args.timeout,
            tx_fee: parent.args.tx_fee,
        },
        json: true,
    })
}

async fn balance(client: &Client, key: &SecretKey) -> Result<Amount> {
    client
        .account(&key.address())
        .await?
        .balance
        .parse::<Amount>()
        .context("balance")
}

pub(super) async fn run(ctx: &Ctx, a: QuickstartArgs) -> Result<Out> {
    let started = Instant::now();
    let model_path = a.model.clone().unwrap_or_else(|| example("model.onnx"));
    let input = a
        .input
        .clone()
        .unwrap_or_else(|| example("x.npy").display().to_string());
    if !model_path.is_file() {
        bail!(
            "no model at {} (pass --model FILE.onnx)",
            model_path.display()
        );
    }
    let tmp = tempfile::tempdir().context("cannot create a temporary folder")?;
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("node"));
    let exe = std::env::current_exe().context("cannot find the deed binary")?;
    let port = free_port()?;
    step(
        ctx,
        &format!("starting a dev network in {}", data_dir.display()),
    );
    let node = DevNode::start(&exe, &data_dir, port, Duration::from_secs(60))?;
    let client = Client::new(&node.url)?;
    let status = client.status().await?;
    let busy: Vec<_> = [status.executor, status.watcher]
        .into_iter()
        .flatten()
        .chain(status.validators.iter().map(|(a, _)| *a))
        .collect();
    let mut users = node.keys.iter().filter(|k| !busy.contains(&k.address()));
    let owner = users
        .next()
        .ok_or_else(|| anyhow!("`deed dev` printed no dev account keys"))?
        .clone();
    let user = users.next().cloned().unwrap_or_else(|| owner.clone());
    let owner_ctx = as_ctx(ctx, &node.url, &owner)?;
    let user_ctx = as_ctx(ctx, &node.url, &user)?;

    step(
        ctx,
        &format!("publishing {} as {}", model_path.display(), owner.address()),
    );
    let published = publish(
        &owner_ctx,
        PublishArgs {
            name: "quickstart-mlp".into(),
            file: model_path.clone(),
            notes: "the quickstart example".into(),
            terms: Terms {
                description: "A small MLP shipped with Deed".into(),
                license: "paid".into(),
                price: a.price,
                parent: None,
                upstream_share: None,
            },
        },
    )
    .await?;
    let model_id = published.json["model"]
        .as_u64()
        .ok_or_else(|| anyhow!("publish reported no model id"))?;
    let owner_before = balance(&client, &owner).await?;

    step(
        ctx,
        &format!("running it optimistically as {}", user.address()),
    );
    let inferred = infer(
        &user_ctx,
        InferArgs {
            model: model_id.to_string(),
            inputs: vec![input],
            mode: "optimistic".into(),
            wait: Some("final".into()),
            // The outputs are printed; files in the temporary folder would vanish.
            out: None,
            max_fee: None,
        },
    )
    .await?;
    let job = inferred.json["job"]
        .as_u64()
        .ok_or_else(|| anyhow!("inference reported no job id"))?;

    step(ctx, "re-executing the job locally to verify the receipt");
    let verdict = verify_job(&user_ctx, job).await?;
    let owner_after = balance(&client, &owner).await?;
    let royalty_received = owner_after.saturating_sub(owner_before);
    let secs = started.elapsed().as_secs_f64();

    let mut text = String::new();
    text.push_str("\n-- published --\n");
    text.push_str(&published.text);
    text.push_str("\n-- inference (optimistic, final) --\n");
    text.push_str(&inferred.text);
    text.push_str("\n-- verification --\n");
    text.push_str(&verdict.text);
    text.push_str("\n-- royalty --\n");
    text.push_str(&super::lines(&[
        ("owner", owner.address().to_string()),
        (
            "received",
            format!("{royalty_received} (balance {owner_before} -> {owner_after})"),
        ),
    ]));
    text.push_str(&format!(
        "\ndone in {secs:.1} s; the dev network stops now\n"
    ));
    let code = verdict.code;
    drop(node);
    Ok(Out {
        json: json!({
            "published": published.json,
            "inference": inferred.json,
            "verification": verdict.json,
            "royalty": { "owner": owner.address(), "received": royalty_received.to_string(),
                         "before": owner_before.to_string(), "after": owner_after.to_string() },
            "seconds": secs,
        }),
        text,
        code,
    })
}
