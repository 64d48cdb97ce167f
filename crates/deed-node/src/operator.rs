//! Running a node of a real network: the files an operator keeps in the node's
//! home directory, `deed init` writing them and `deed node` running from them.
//!
//! A home directory holds:
//! - `config.toml`: the node's [`Config`] (its `data_dir` defaults to `HOME/data`);
//! - `genesis.json`: the network's [`GenesisFile`], the same on every node;
//! - `node_keys.json`: the node's secret keys ([`KeyFile`]), readable by the owner
//!   only.
//!
//! `deed init` writes a genesis in which the new node is the only validator, so
//! the node runs at once; to join several operators in one network, collect each
//! one's `validator` entry (printed by `deed init`) into one `genesis.json` and give
//! every node that file.

use std::path::{Path, PathBuf};

use deed_consensus::{NodePublicKey, NodeSecretKey};
use deed_ledger::Params;
use deed_types::{Address, Amount, SecretKey};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Roles};
use crate::consensus::GenesisValidator;
use crate::error::NodeError;
use crate::node::{Genesis, NodeKeys, Storage};

/// The configuration file's name in a home directory.
pub const CONFIG_FILE: &str = "config.toml";
/// The genesis file's name in a home directory.
pub const GENESIS_FILE: &str = "genesis.json";
/// The key file's name in a home directory.
pub const KEY_FILE: &str = "node_keys.json";

/// Ledger parameters a genesis starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamsProfile {
    /// [`Params::default`].
    #[default]
    Default,
    /// Short windows for development networks ([`crate::dev::dev_params`]).
    Dev,
}

/// An initial balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The account.
    pub address: Address,
    /// Its balance, in base units (a decimal string: amounts exceed JSON numbers).
    pub amount: String,
}

/// A validator of the first height.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorEntry {
    /// Its operator account.
    pub operator: Address,
    /// Its ed25519 consensus key (hex).
    pub consensus_key: NodePublicKey,
    /// Stake bonded at genesis, in base units (a decimal string); it gives the
    /// voting power.
    pub stake: String,
}

/// `genesis.json`: what every node of a network starts from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    /// The chain id.
    pub chain_id: u64,
    /// Ledger parameters.
    #[serde(default)]
    pub params: ParamsProfile,
    /// Initial balances.
    pub allocations: Vec<Allocation>,
    /// Validators of the first height.
    pub validators: Vec<ValidatorEntry>,
    /// Nodes any new node of the network dials first (usually the validators):
    /// added to every node's configured peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bootstrap: Vec<BootstrapPeer>,
}

/// A node to dial first: its consensus and node-network (gossip, blobs) addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapPeer {
    /// Its consensus p2p address.
    pub consensus: std::net::SocketAddr,
    /// Its node-network address.
    pub net: std::net::SocketAddr,
}

impl GenesisFile {
    /// Adds the bootstrap peers to `cfg`'s consensus and node-network peers,
    /// skipping the node's own listen addresses and peers already configured.
    pub fn add_bootstrap_peers(&self, cfg: &mut Config) {
        for b in &self.bootstrap {
            if b.consensus != cfg.consensus.listen && !cfg.consensus.peers.contains(&b.consensus) {
                cfg.consensus.peers.push(b.consensus);
            }
            if b.net != cfg.net.listen && !cfg.net.peers.contains(&b.net) {
                cfg.net.peers.push(b.net);
            }
        }
    }
}

impl GenesisFile {
    /// The node's genesis.
    pub fn to_genesis(&self) -> Result<Genesis, NodeError> {
        let allocations = self
            .allocations
            .iter()
            .map(|a| {
                a.amount
                    .parse::<Amount>()
                    .map(|n| (a.address, n))
                    .map_err(|_| {
                        NodeError::Config(format!(
                            "genesis: amount {:?} of {} is not a number",
                            a.amount, a.address
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Genesis {
            params: match self.params {
                ParamsProfile::Default => Params::default(),
                ParamsProfile::Dev => crate::dev::dev_params(),
            },
            allocations,
            validators: self
                .validators
                .iter()
                .map(|v| {
                    Ok(GenesisValidator {
                        operator: v.operator,
                        consensus_key: v.consensus_key,
                        stake: v.stake.parse::<Amount>().map_err(|_| {
                            NodeError::Config(format!(
                                "genesis: stake {:?} of validator {} is not a number",
                                v.stake, v.operator
                            ))
                        })?,
                    })
                })
                .collect::<Result<_, NodeError>>()?,
        })
    }

    /// Reads a genesis file.
    pub fn load(path: &Path) -> Result<GenesisFile, NodeError> {
        read_json(path)
    }

    /// Writes it.
    pub fn save(&self, path: &Path) -> Result<(), NodeError> {
        write_json(path, self, false)
    }
}

/// `node_keys.json`: the node's secret keys, hex.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// The validator's operator account (secp256k1).
    pub validator: String,
    /// The consensus key (ed25519).
    pub consensus: String,
    /// The executor account (secp256k1).
    pub executor: String,
    /// The watcher account (secp256k1).
    pub watcher: String,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyFile(..)")
    }
}

fn random_bytes() -> Result<[u8; 32], NodeError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| NodeError::Config(format!("no system randomness: {e}")))?;
    Ok(b)
}

fn random_account() -> Result<SecretKey, NodeError> {
    loop {
        // Rejection sampling: the odds of an invalid scalar are about 2^-128.
        if let Ok(k) = SecretKey::from_bytes(&random_bytes()?) {
            return Ok(k);
        }
    }
}

fn account(field: &str, hex_key: &str) -> Result<SecretKey, NodeError> {
    let bytes = decode32(field, hex_key)?;
    SecretKey::from_bytes(&bytes).map_err(|e| NodeError::Config(format!("key file: {field}: {e}")))
}

fn decode32(field: &str, hex_key: &str) -> Result<[u8; 32], NodeError> {
    let v = hex::decode(hex_key.trim_start_matches("0x"))
        .map_err(|e| NodeError::Config(format!("key file: {field}: {e}")))?;
    v.try_into()
        .map_err(|_| NodeError::Config(format!("key file: {field}: not 32 bytes")))
}

impl KeyFile {
    /// Fresh random keys.
    pub fn generate() -> Result<KeyFile, NodeError> {
        Ok(KeyFile::from_keys(&NodeKeys {
            validator: random_account()?,
            consensus: NodeSecretKey::from_bytes(random_bytes()?),
            executor: random_account()?,
            more_executors: Vec::new(),
            watcher: random_account()?,
        }))
    }

    /// The file holding `keys` (extra executors are not kept).
    pub fn from_keys(keys: &NodeKeys) -> KeyFile {
        KeyFile {
            validator: hex::encode(keys.validator.to_bytes()),
            consensus: hex::encode(keys.consensus.to_bytes()),
            executor: hex::encode(keys.executor.to_bytes()),
            watcher: hex::encode(keys.watcher.to_bytes()),
        }
    }

    /// The keys.
    pub fn to_keys(&self) -> Result<NodeKeys, NodeError> {
        Ok(NodeKeys {
            validator: account("validator", &self.validator)?,
            consensus: NodeSecretKey::from_bytes(decode32("consensus", &self.consensus)?),
            executor: account("executor", &self.executor)?,
            more_executors: Vec::new(),
            watcher: account("watcher", &self.watcher)?,
        })
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<KeyFile, NodeError> {
        read_json(path)
    }

    /// Writes it, readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<(), NodeError> {
        write_json(path, self, true)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, NodeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| NodeError::Config(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))
}

fn write_json<T: Serialize>(path: &Path, v: &T, private: bool) -> Result<(), NodeError> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| NodeError::Config(format!("encoding {}: {e}", path.display())))?;
    let io = |source| NodeError::Io {
        op: "write a node file",
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    use std::io::Write;
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.write_all(b"\n").map_err(io)
}

/// What `deed init` sets up.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// The home directory to create.
    pub home: PathBuf,
    /// The chain id of the genesis written.
    pub chain_id: u64,
    /// The HTTP API address.
    pub http: std::net::SocketAddr,
    /// The consensus p2p address; the node network (gossip) listens on the next
    /// port of the same address.
    pub p2p: std::net::SocketAddr,
    /// Overwrite existing files.
    pub force: bool,
}

/// What `deed init` wrote.
#[derive(Clone, Debug)]
pub struct Initialized {
    /// The configuration file.
    pub config: PathBuf,
    /// The node's validator entry, to add to a shared genesis.
    pub validator: ValidatorEntry,
    /// The node's bootstrap entry for a shared genesis (its listen addresses: an
    /// unspecified IP must be replaced by the one other nodes reach it at).
    pub bootstrap: BootstrapPeer,
    /// The node's accounts: validator, executor, watcher.
    pub accounts: [Address; 3],
}

/// The balance `deed init` gives each of the node's own accounts in the genesis
/// it writes.
pub const INIT_BALANCE: Amount = 1_000_000_000_000;

/// The stake `deed init`'s genesis bonds for its validator.
pub const INIT_STAKE: Amount = 1_000_000;

/// `deed init`: a home directory with fresh keys, a configuration and a genesis in
/// which this node is the only validator. Refuses to overwrite unless `force`.
pub fn init(opts: &InitOptions) -> Result<Initialized, NodeError> {
    let home = &opts.home;
    std::fs::create_dir_all(home).map_err(|source| NodeError::Io {
        op: "create the home directory",
        source,
    })?;
    let config_path = home.join(CONFIG_FILE);
    for name in [CONFIG_FILE, GENESIS_FILE, KEY_FILE] {
        let p = home.join(name);
        if p.exists() && !opts.force {
            return Err(NodeError::Config(format!(
                "{} exists (pass --force to overwrite)",
                p.display()
            )));
        }
    }
    let key_file = KeyFile::generate()?;
    let keys = key_file.to_keys()?;
    let cfg = Config {
        chain_id: opts.chain_id,
        data_dir: home.join("data"),
        http: opts.http,
        roles: Roles::all(),
        consensus: crate::config::ConsensusSection {
            listen: opts.p2p,
            ..Default::default()
        },
        net: crate::config::NetSection {
            listen: std::net::SocketAddr::new(
                opts.p2p.ip(),
                // Port 0 (any) for consensus means any for gossip too.
                match opts.p2p.port() {
                    0 => 0,
                    p => p.saturating_add(1),
                },
            ),
            peers: Vec::new(),
        },
        ..Config::default()
    };
    let validator = ValidatorEntry {
        operator: keys.validator.address(),
        consensus_key: keys.consensus.public_key(),
        stake: INIT_STAKE.to_string(),
    };
    let accounts = [
        keys.validator.address(),
        keys.executor.address(),
        keys.watcher.address(),
    ];
    let genesis = GenesisFile {
        chain_id: opts.chain_id,
        params: ParamsProfile::Default,
        allocations: accounts
            .iter()
            .map(|a| Allocation {
                address: *a,
                amount: INIT_BALANCE.to_string(),
            })
            .collect(),
        validators: vec![validator.clone()],
        bootstrap: Vec::new(),
    };
    key_file.save(&home.join(KEY_FILE))?;
    genesis.save(&home.join(GENESIS_FILE))?;
    let toml = toml::to_string_pretty(&cfg)
        .map_err(|e| NodeError::Config(format!("encoding the configuration: {e}")))?;
    std::fs::write(&config_path, toml).map_err(|source| NodeError::Io {
        op: "write the configuration",
        source,
    })?;
    Ok(Initialized {
        bootstrap: BootstrapPeer {
            consensus: cfg.consensus.listen,
            net: cfg.net.listen,
        },
        config: config_path,
        validator,
        accounts,
    })
}

/// Everything `deed node` runs from, read from a home directory.
#[derive(Debug)]
pub struct NodeFiles {
    /// The configuration.
    pub config: Config,
    /// The keys.
    pub keys: NodeKeys,
    /// The genesis.
    pub genesis: Genesis,
}

/// Reads `config` (or `HOME/config.toml`), then `genesis.json` and
/// `node_keys.json` from the configuration file's directory. A relative
/// `data_dir` is taken relative to that directory.
pub fn load_home(config: &Path, env: &crate::config::Overrides) -> Result<NodeFiles, NodeError> {
    let home = config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let overrides = crate::config::Overrides {
        config: Some(config.to_path_buf()),
        ..env.clone()
    };
    let mut cfg = Config::load_from_process(Config::default(), &overrides)?;
    if cfg.data_dir.is_relative() {
        cfg.data_dir = home.join(&cfg.data_dir);
    }
    let genesis_file = GenesisFile::load(&home.join(GENESIS_FILE))?;
    if genesis_file.chain_id != cfg.chain_id {
        return Err(NodeError::Config(format!(
            "the genesis is for chain {}, the configuration says {}",
            genesis_file.chain_id, cfg.chain_id
        )));
    }
    genesis_file.add_bootstrap_peers(&mut cfg);
    Ok(NodeFiles {
        keys: KeyFile::load(&home.join(KEY_FILE))?.to_keys()?,
        genesis: genesis_file.to_genesis()?,
        config: cfg,
    })
}

/// `deed node`: runs the node of `files` on disk, prints the ready line
/// (`deed node listening on http://ADDR`) once the API accepts connections, and
/// serves until Ctrl-C or SIGTERM.
pub async fn run_node(files: NodeFiles) -> Result<(), NodeError> {
    let data_dir = files.config.data_dir.clone();
    let chain_id = files.config.chain_id;
    let running =
        crate::server::start(files.config, files.keys, Storage::Disk, files.genesis).await?;
    println!(
        "deed node: chain {chain_id}, data in {}",
        data_dir.display()
    );
    println!(
        "validator {}  consensus key {}",
        running.node.keys().validator.address(),
        running.node.keys().consensus.public_key()
    );
    println!("deed node listening on http://{}", running.addr);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    wait_for_stop().await?;
    running.stop().await;
    Ok(())
}

/// Waits for Ctrl-C or (on Unix) SIGTERM.
pub async fn wait_for_stop() -> Result<(), NodeError> {
    let io = |source| NodeError::Io {
        op: "wait for a stop signal",
        source,
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(io)?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(io),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(io)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn init_writes_files_that_load_back_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            home: dir.path().join("n"),
            chain_id: 77,
            http: "127.0.0.1:0".parse().unwrap(),
            p2p: "127.0.0.1:26656".parse().unwrap(),
            force: false,
        };
        let out = init(&opts).unwrap();
        let files = load_home(&out.config, &Default::default()).unwrap();
        assert_eq!(files.config.chain_id, 77);
        assert_eq!(files.config.data_dir, opts.home.join("data"));
        assert_eq!(
            files.config.net.listen.port(),
            26657,
            "gossip on the next port"
        );
        assert_eq!(files.keys.validator.address(), out.validator.operator);
        assert_eq!(
            files.keys.consensus.public_key(),
            out.validator.consensus_key
        );
        assert_eq!(files.genesis.validators.len(), 1);
        assert_eq!(files.genesis.allocations.len(), 3);
        assert!(matches!(init(&opts), Err(NodeError::Config(_))));
        init(&InitOptions {
            force: true,
            ..opts.clone()
        })
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(opts.home.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "keys are private");
        }
    }

    #[test]
    fn bootstrap_peers_join_the_configured_ones_once_and_never_the_node_itself() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let mut cfg = Config::default();
        cfg.consensus.listen = a("10.0.0.1:26656");
        cfg.net.listen = a("10.0.0.1:26657");
        cfg.consensus.peers = vec![a("10.0.0.2:26656")];
        let peer = |ip: &str| BootstrapPeer {
            consensus: a(&format!("{ip}:26656")),
            net: a(&format!("{ip}:26657")),
        };
        let g = GenesisFile {
            chain_id: 1,
            params: ParamsProfile::Dev,
            allocations: vec![],
            validators: vec![],
            bootstrap: vec![peer("10.0.0.1"), peer("10.0.0.2"), peer("10.0.0.3")],
        };
        g.add_bootstrap_peers(&mut cfg);
        assert_eq!(
            cfg.consensus.peers,
            vec![a("10.0.0.2:26656"), a("10.0.0.3:26656")]
        );
        assert_eq!(
            cfg.net.peers,
            vec![a("10.0.0.2:26657"), a("10.0.0.3:26657")]
        );
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<GenesisFile>(&json).unwrap(), g);
    }

    #[test]
    fn bad_genesis_and_key_files_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.json");
        std::fs::write(
            &p,
            r#"{"chain_id": 1, "allocations": [], "validators": [], "x": 1}"#,
        )
        .unwrap();
        assert!(matches!(GenesisFile::load(&p), Err(NodeError::Config(_))));
        let g = GenesisFile {
            chain_id: 1,
            params: ParamsProfile::Dev,
            allocations: vec![Allocation {
                address: Address([1; 20]),
                amount: "lots".into(),
            }],
            validators: vec![],
            bootstrap: vec![],
        };
        assert!(matches!(g.to_genesis(), Err(NodeError::Config(_))));
        let k = KeyFile {
            validator: "00".into(),
            ..KeyFile::generate().unwrap()
        };
        assert!(matches!(k.to_keys(), Err(NodeError::Config(_))));
    }
}
