//! Throughput and finality of a loopback network of validator processes.
//!
//! ```text
//! cargo build --release -p deed-cli
//! cargo run --release -p deed-cli --example bench_net -- [--validators 4] [--txs 20000] [--accounts 32] [--rate TX_PER_S]
//! ```
//!
//! Starts `deed testnet` with the `deed` binary next to this example, pre-signs
//! `--txs` transfers spread over `--accounts` funded accounts (nonces in order per
//! account), submits them concurrently (each account to one node, round robin over
//! the nodes) as fast as the nodes take them, or at `--rate` transactions per second
//! in all, and follows the committed blocks. Reports committed transactions per
//! second (first submission to last commit) and, per transaction, the time from
//! its submission to the commit of its block, as the first node to show it (p50, p99, max).
//! Writes the figures as JSON to `target/net-bench.json`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deed_cli::testnet::{self, Options};
use deed_client::Client;
use deed_types::{Action, Hash, SignedTransaction, Transaction};
use tokio::sync::Mutex;

fn arg(args: &[String], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .context("missing value")?
            .parse()
            .with_context(|| format!("bad {name}")),
        None => Ok(default),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let validators = arg(&args, "--validators", 4)?;
    let txs = arg(&args, "--txs", 20_000)?;
    let accounts = arg(&args, "--accounts", 32)?;
    let rate = arg(&args, "--rate", 0)?;
    let exe = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("deed"))
        .context("no binary directory")?;
    if !exe.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p deed-cli)",
            exe.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let opts = Options {
        validators,
        dir: dir.path().join("net"),
        ip: std::net::Ipv4Addr::new(127, 0, 70, 10),
        funded_accounts: accounts,
        ..Options::default()
    };
    let layout = testnet::start(&exe, &opts)?;
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(run(&layout, txs, accounts, rate));
    testnet::stop(&opts.dir)?;
    let report = result?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/net-bench.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

async fn run(
    layout: &testnet::Layout,
    txs: usize,
    accounts: usize,
    rate: usize,
) -> Result<serde_json::Value> {
    let nodes: Vec<Client> = layout
        .nodes
        .iter()
        .map(|n| Client::new(&n.url()))
        .collect::<Result<_, _>>()?;
    let fee = deed_node::dev::dev_params().min_tx_fee;
    let keys: Vec<_> = (0..accounts).map(deed_node::dev::dev_account).collect();
    // Pre-sign everything so the bench measures the network, not the signer.
    let per = txs.div_ceil(accounts);
    let mut batches: Vec<Vec<SignedTransaction>> = Vec::with_capacity(accounts);
    for (a, key) in keys.iter().enumerate() {
        let start = nodes[0].account(&key.address()).await?.nonce;
        let mut b = Vec::with_capacity(per);
        for n in 0..per as u64 {
            let tx = Transaction {
                chain_id: layout.chain_id,
                nonce: start + n,
                fee,
                action: Action::Transfer {
                    to: keys[(a + 1) % accounts].address(),
                    amount: 1,
                },
            };
            b.push(tx.sign(key)?);
        }
        batches.push(b);
    }
    let total: usize = batches.iter().map(Vec::len).sum();
    let submitted: Arc<Mutex<HashMap<Hash, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(total)));
    let start_height = nodes[0].status().await?.height;
    let rounds_before = rounds(&nodes).await;
    let t0 = Instant::now();
    let mut senders = Vec::new();
    for (a, batch) in batches.into_iter().enumerate() {
        let client = nodes[a % nodes.len()].clone();
        let submitted = submitted.clone();
        // Each account sends its share of the rate.
        let mut tick = (rate > 0).then(|| {
            let mut t =
                tokio::time::interval(Duration::from_secs_f64(accounts as f64 / rate as f64));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        senders.push(tokio::spawn(async move {
            let mut rejected = 0usize;
            for stx in batch {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let at = Instant::now();
                match client.submit(&stx).await {
                    Ok(h) => {
                        submitted.lock().await.insert(h, at);
                    }
                    Err(_) => rejected += 1,
                }
            }
            rejected
        }));
    }
    // Follow the chain until every accepted transaction is committed.
    let mut latencies: Vec<Duration> = Vec::with_capacity(total);
    let mut next = start_height + 1;
    let mut last_commit = t0;
    let mut done_sending = false;
    let mut rejected = 0usize;
    let deadline = t0 + Duration::from_secs(300);
    loop {
        if !done_sending && senders.iter().all(|s| s.is_finished()) {
            for s in senders.drain(..) {
                rejected += s.await.unwrap_or(0);
            }
            done_sending = true;
        }
        match first_block(&nodes, next).await {
            Some(b) => {
                let now = Instant::now();
                let map = submitted.lock().await;
                for h in &b.txs {
                    if let Some(at) = map.get(h) {
                        latencies.push(now.saturating_duration_since(*at));
                        last_commit = now;
                    }
                }
                next += 1;
                continue;
            }
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        let accepted = submitted.lock().await.len();
        if done_sending && latencies.len() >= accepted {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {accepted} transactions committed after 300 s",
                latencies.len()
            );
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies
            .get(i)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    let secs = last_commit.duration_since(t0).as_secs_f64();
    let blocks = next - 1 - start_height;
    // Rounds past the first at each height, summed over the nodes: a proposal or a
    // quorum that came too late (each costs at least a propose timeout).
    let extra_rounds: Vec<i64> = rounds(&nodes)
        .await
        .iter()
        .zip(&rounds_before)
        .map(|(after, before)| after - before - blocks as i64)
        .collect();
    Ok(serde_json::json!({
        "validators": layout.nodes.len(),
        "accounts": accounts,
        "offered_rate": if rate > 0 { serde_json::json!(rate) } else { serde_json::json!("unlimited") },
        "submitted": total,
        "rejected": rejected,
        "committed": latencies.len(),
        "blocks": blocks,
        "extra_rounds_per_node": extra_rounds,
        "seconds": secs,
        "tx_per_s": latencies.len() as f64 / secs.max(1e-9),
        "finality_ms": { "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0) },
    }))
}

/// Each node's `deed_consensus_rounds_total` (-1 when it does not answer).
async fn rounds(nodes: &[Client]) -> Vec<i64> {
    let mut out = Vec::with_capacity(nodes.len());
    for n in nodes {
        let v = n.metrics().await.ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("deed_consensus_rounds_total "))
                .and_then(|v| v.trim().parse().ok())
        });
        out.push(v.unwrap_or(-1));
    }
    out
}

/// Block `height` from whichever node shows it first: the commit as the network
/// sees it, not as one node that may be catching up does.
async fn first_block(nodes: &[Client], height: u64) -> Option<deed_client::api::BlockView> {
    let mut asks = tokio::task::JoinSet::new();
    for n in nodes {
        let n = n.clone();
        asks.spawn(async move { n.block(height).await });
    }
    while let Some(r) = asks.join_next().await {
        if let Ok(Ok(b)) = r {
            return Some(b);
        }
    }
    None
}
