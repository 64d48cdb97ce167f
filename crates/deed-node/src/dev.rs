//! `deed dev`: a whole network in one process — validator, executor, watcher and
//! storage — with embedded storage (redb and a local blob directory), funded dev
//! accounts from deterministic keys, and the HTTP API. State persists in the data
//! directory across restarts.
//!
//! The dev executors (two unless `deed dev --executors N` says otherwise, so
//! `replicated:2` jobs have executors to choose from) bond at the first block and
//! serve every registered model: each refreshes its
//! bond whenever a model is registered, and the refresh is queued before the block
//! that registered the model becomes visible, so a request for the new model is
//! ordered after it.

use std::net::SocketAddr;
use std::path::PathBuf;

use deed_consensus::NodeSecretKey;
use deed_ledger::Params;
use deed_types::{Amount, SecretKey};

use crate::config::Config;
use crate::consensus::GenesisValidator;
use crate::error::NodeError;
use crate::node::{Genesis, NodeKeys, Storage};
use crate::server::{start, Running};

/// Number of funded dev accounts.
pub const DEV_ACCOUNTS: usize = 4;

/// Balance of each dev account (and of the node's own accounts) at genesis.
pub const DEV_BALANCE: Amount = 1_000_000_000_000;

/// The chain id of dev networks.
pub const DEV_CHAIN_ID: u64 = 31_337;

/// Dev account `i`'s key. Deterministic and public: never use it for real funds.
pub fn dev_account(i: usize) -> SecretKey {
    SecretKey::from_seed(format!("deed dev account {i}").as_bytes())
}

/// Executor accounts a dev node runs unless told otherwise: two, so `replicated:2`
/// jobs find executors.
pub const DEV_EXECUTORS: usize = 2;

/// The dev node's own keys, with [`DEV_EXECUTORS`] executors.
pub fn dev_keys() -> NodeKeys {
    dev_keys_with(DEV_EXECUTORS)
}

/// The dev node's own keys with `executors` executor accounts (at least one).
pub fn dev_keys_with(executors: usize) -> NodeKeys {
    NodeKeys {
        validator: SecretKey::from_seed(b"deed dev validator"),
        consensus: NodeSecretKey::from_seed(b"deed dev consensus"),
        executor: SecretKey::from_seed(b"deed dev executor"),
        more_executors: (2..=executors.max(1))
            .map(|i| SecretKey::from_seed(format!("deed dev executor {i}").as_bytes()))
            .collect(),
        watcher: SecretKey::from_seed(b"deed dev watcher"),
    }
}

/// Ledger parameters of a dev network: short windows so results finalize in
/// seconds.
pub fn dev_params() -> Params {
    Params {
        challenge_window: 10,
        execution_timeout: 20,
        move_timeout: 10,
        ..Params::default()
    }
}

/// Genesis of a dev network: every dev account and the node's own accounts funded,
/// and the node's validator the only one.
pub fn dev_genesis(keys: &NodeKeys) -> Genesis {
    let mut allocations: Vec<_> = (0..DEV_ACCOUNTS)
        .map(|i| (dev_account(i).address(), DEV_BALANCE))
        .collect();
    let own = [&keys.validator, &keys.watcher]
        .into_iter()
        .chain(keys.executors());
    for k in own {
        if !allocations.iter().any(|(a, _)| *a == k.address()) {
            allocations.push((k.address(), DEV_BALANCE));
        }
    }
    Genesis {
        params: dev_params(),
        allocations,
        validators: vec![GenesisValidator {
            operator: keys.validator.address(),
            consensus_key: keys.consensus.public_key(),
            stake: crate::config::ExecutorConfig::default().stake,
        }],
    }
}

/// The default data directory of `deed dev`.
pub fn default_dev_dir() -> PathBuf {
    crate::config::default_data_dir().join("dev")
}

/// The configuration `deed dev` starts from (before file, env and flags):
/// every role on, fast blocks, the dev chain id and data directory.
pub fn dev_config() -> Config {
    Config {
        chain_id: DEV_CHAIN_ID,
        data_dir: default_dev_dir(),
        http: SocketAddr::from(([127, 0, 0, 1], 8545)),
        roles: crate::config::Roles::all(),
        block_interval_ms: 200,
        heartbeat_ms: 1_000,
        // A price whose audit share (10 %) pays a watcher more than its two
        // transaction fees.
        executor: crate::config::ExecutorConfig {
            price: 100,
            ..Default::default()
        },
        ..Config::default()
    }
}

/// Starts a dev network on disk under `cfg.data_dir`, serving HTTP on `cfg.http`,
/// with `executors` executor accounts. Executors beyond those of the genesis that
/// first created the data folder start unfunded.
pub async fn start_dev(cfg: Config, executors: usize) -> Result<Running, NodeError> {
    let keys = dev_keys_with(executors);
    let genesis = dev_genesis(&keys);
    start(cfg, keys, Storage::Disk, genesis).await
}

/// What `deed dev` runs: prints the dev accounts and the ready line
/// (`deed dev listening on http://ADDR`) once the API accepts connections and the
/// first block (with the executors' bonds) is committed, then serves until Ctrl-C
/// or SIGTERM.
pub async fn run_dev(cfg: Config, executors: usize) -> Result<(), NodeError> {
    let data_dir = cfg.data_dir.clone();
    let running = start_dev(cfg, executors).await?;
    running
        .wait_height(1, std::time::Duration::from_secs(60))
        .await?;
    let keys = dev_keys_with(executors);
    println!(
        "deed dev: chain {DEV_CHAIN_ID}, data in {}",
        data_dir.display()
    );
    println!("dev accounts (funded with {DEV_BALANCE} at genesis; keys are public, dev only):");
    for i in 0..DEV_ACCOUNTS {
        let k = dev_account(i);
        println!("  {i}  {}  0x{}", k.address(), hex::encode(k.to_bytes()));
    }
    println!("validator {}", keys.validator.address());
    for k in keys.executors() {
        println!("executor  {}", k.address());
    }
    println!("watcher   {}", keys.watcher.address());
    println!("deed dev listening on http://{}", running.addr);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    crate::operator::wait_for_stop().await?;
    running.stop().await;
    Ok(())
}
