//! The commands that talk to a node: keys, accounts, models, inference, receipts,
//! staking, status and the quickstart. Each returns an [`Out`]: one JSON value for
//! `--json` and short aligned text otherwise.

mod accounts;
mod disputes;
mod infer;
mod models;
mod quickstart;

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use deed_client::api::ModelView;
use deed_client::{Client, ClientError};
use deed_types::{Address, Amount, SecretKey};
use serde_json::Value;

use crate::keystore::{self, Keystore, Passphrase};

pub use accounts::{BlobCmd, ExecutorCmd, KeysCmd};
pub use disputes::DisputeCmd;
pub use infer::{InferArgs, ReceiptCmd};
pub use models::ModelCmd;
pub use quickstart::QuickstartArgs;

/// The node `deed dev` serves by default and every command talks to by default.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:8545";

/// Options shared by every command that talks to a node.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// URL of the node's HTTP API.
    #[arg(long, global = true, env = "DEED_NODE", default_value = DEFAULT_NODE, value_name = "URL")]
    pub node: String,
    /// Signing key: a keystore name, 64 hex digits or a key file.
    #[arg(
        long,
        global = true,
        env = "DEED_KEY",
        hide_env_values = true,
        value_name = "NAME|HEX|FILE"
    )]
    pub key: Option<String>,
    /// File whose first line is the passphrase of encrypted keys (else
    /// DEED_PASSWORD, else a prompt on a terminal).
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<std::path::PathBuf>,
    /// Seconds to wait for a transaction's inclusion or a job's finality.
    #[arg(long, global = true, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
    /// Fee paid to the block proposer per transaction.
    #[arg(long, global = true, default_value_t = 1, value_name = "AMOUNT")]
    pub tx_fee: Amount,
}

/// Commands that talk to a node or manage local keys.
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Create, import and list local keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Show an account's balance and nonce (default: the --key account).
    Balance {
        /// Address or keystore name.
        address: Option<String>,
    },
    /// Send tokens.
    Transfer {
        /// Receiver: address or keystore name.
        to: String,
        /// Amount in base units.
        amount: Amount,
    },
    /// Create, publish and manage models.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Run a model on the network and get its output with a receipt.
    Infer(InferArgs),
    /// Show or verify a job's receipt.
    #[command(subcommand)]
    Receipt(ReceiptCmd),
    /// List and inspect disputes: parties, rounds, range, deadline, verdict.
    #[command(subcommand)]
    Dispute(DisputeCmd),
    /// Bond, unbond and inspect executor stake.
    #[command(subcommand)]
    Executor(ExecutorCmd),
    /// Store and fetch content-addressed blobs.
    #[command(subcommand)]
    Blob(BlobCmd),
    /// Show the node's height, state root and roles.
    Status,
    /// Start a dev network, publish the example model, run it and verify the result.
    Quickstart(QuickstartArgs),
}

/// A command's result.
#[derive(Debug, Clone)]
pub struct Out {
    /// Printed with `--json`.
    pub json: Value,
    /// Printed otherwise.
    pub text: String,
    /// Process exit code (0 unless a verdict failed).
    pub code: u8,
}

impl Out {
    fn new(json: Value, text: String) -> Out {
        Out {
            json,
            text,
            code: 0,
        }
    }
}

/// Exit code for an error: 3 when the node is unreachable, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(ClientError::NodeDown { .. }) = cause.downcast_ref::<ClientError>() {
            return 3;
        }
    }
    1
}

/// What every command gets.
pub(crate) struct Ctx {
    pub client: Client,
    pub args: NodeArgs,
    pub json: bool,
}

impl Ctx {
    pub fn keystore(&self) -> Result<Keystore> {
        Keystore::open_default()
    }

    /// Where passphrases of encrypted keys come from.
    pub fn passphrase(&self) -> Passphrase {
        Passphrase::new(self.args.password_file.clone())
    }

    /// The signing key; an error naming the flag when none was given.
    pub fn key(&self) -> Result<SecretKey> {
        match &self.args.key {
            Some(spec) => keystore::resolve(&self.keystore()?, spec, &self.passphrase()),
            None => {
                bail!("this command signs a transaction: pass --key NAME|HEX|FILE or set DEED_KEY")
            }
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.args.timeout)
    }

    /// An address given as hex or as a keystore name.
    pub fn address(&self, spec: &str) -> Result<Address> {
        if let Ok(a) = spec.parse::<Address>() {
            return Ok(a);
        }
        if spec.starts_with("0x") {
            bail!("`{spec}` is not an address (40 hex digits after 0x)");
        }
        self.keystore()?
            .address(spec, &self.passphrase())
            .with_context(|| format!("`{spec}` is neither an address nor a key name"))
    }

    /// Signs, submits and waits for inclusion; returns the transaction view.
    pub async fn transact(
        &self,
        key: &SecretKey,
        action: deed_types::Action,
    ) -> Result<deed_client::api::TxView> {
        let stx = self
            .client
            .send_action(key, action, self.args.tx_fee)
            .await?;
        Ok(self
            .client
            .wait_included(&stx.hash(), self.timeout())
            .await?)
    }

    /// `MODEL`: a numeric id, `OWNER/NAME` (owner as address or key name), or a
    /// name owned by the --key account.
    pub async fn model(&self, spec: &str) -> Result<ModelView> {
        if let Ok(id) = spec.parse::<u64>() {
            return self
                .client
                .model(id)
                .await
                .with_context(|| format!("model {id}"));
        }
        let (owner, name) = match spec.split_once('/') {
            Some((o, n)) => (self.address(o)?, n),
            None => (
                self.key()
                    .with_context(|| {
                        format!("model `{spec}` is a name: give its id, OWNER/NAME, or --key of its owner")
                    })?
                    .address(),
                spec,
            ),
        };
        let found = self.client.models(Some(&owner), Some(name)).await?;
        found
            .into_iter()
            .find(|m| m.name == name && m.owner == owner)
            .ok_or_else(|| anyhow!("no model named `{name}` owned by {owner}"))
    }
}

/// Runs a node command to completion on a small runtime.
pub fn run(cmd: NodeCommand, args: NodeArgs, json: bool) -> Result<Out> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = Client::new(&args.node)?;
    let ctx = Ctx { client, args, json };
    rt.block_on(async move {
        match cmd {
            NodeCommand::Keys(c) => accounts::keys(&ctx, c),
            NodeCommand::Balance { address } => accounts::balance(&ctx, address).await,
            NodeCommand::Transfer { to, amount } => accounts::transfer(&ctx, &to, amount).await,
            NodeCommand::Model(c) => models::run(&ctx, c).await,
            NodeCommand::Infer(a) => infer::infer(&ctx, a).await,
            NodeCommand::Receipt(c) => infer::receipt(&ctx, c).await,
            NodeCommand::Executor(c) => accounts::executor(&ctx, c).await,
            NodeCommand::Dispute(c) => disputes::run(&ctx, c).await,
            NodeCommand::Blob(c) => accounts::blob(&ctx, c).await,
            NodeCommand::Status => accounts::status(&ctx).await,
            NodeCommand::Quickstart(a) => quickstart::run(&ctx, a).await,
        }
    })
}

/// Prints `out` and returns its exit code.
pub fn print(out: &Out, json: bool) -> u8 {
    if json {
        println!("{}", out.json);
    } else if !out.text.is_empty() {
        println!("{}", out.text.trim_end());
    }
    out.code
}

/// A progress bar for byte transfers, hidden for `--json` and when stderr is not a
/// terminal.
pub(crate) fn byte_bar(ctx: &Ctx, what: &str) -> indicatif::ProgressBar {
    if ctx.json {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:12} {bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}

/// Aligned `key  value` lines.
pub(crate) fn lines(rows: &[(&str, String)]) -> String {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (k, v) in rows {
        s.push_str(&format!("{k:w$}  {v}\n"));
    }
    s
}
