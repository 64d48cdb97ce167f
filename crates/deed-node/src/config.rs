//! Node configuration: a TOML file whose every field has a default, environment
//! variables and command-line overrides.
//!
//! Precedence, highest first: command line > environment (`DEED_*`) > file >
//! defaults. [`Config::load`] implements it; the CLI parses its flags into a
//! [`Overrides`] and hands it in, so this crate does not depend on the CLI's parser.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// The roles a node can run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Roles {
    /// Orders transactions and commits blocks.
    pub validator: bool,
    /// Runs inference for fees, with bonded stake.
    pub executor: bool,
    /// Re-executes results and challenges wrong ones.
    pub watcher: bool,
    /// Accepts and serves blobs.
    pub storage: bool,
}

impl Default for Roles {
    fn default() -> Self {
        Roles {
            validator: true,
            executor: false,
            watcher: false,
            storage: true,
        }
    }
}

impl Roles {
    /// Every role on (what `deed dev` runs).
    pub fn all() -> Roles {
        Roles {
            validator: true,
            executor: true,
            watcher: true,
            storage: true,
        }
    }

    /// The names of the roles that are on, in a fixed order.
    pub fn names(&self) -> Vec<String> {
        [
            (self.validator, "validator"),
            (self.executor, "executor"),
            (self.watcher, "watcher"),
            (self.storage, "storage"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| n.to_owned())
        .collect()
    }

    /// Parses a comma-separated role list (`validator,executor`).
    pub fn parse_list(list: &str) -> Result<Roles, NodeError> {
        let mut r = Roles {
            validator: false,
            executor: false,
            watcher: false,
            storage: false,
        };
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "validator" => r.validator = true,
                "executor" => r.executor = true,
                "watcher" => r.watcher = true,
                "storage" => r.storage = true,
                "all" => r = Roles::all(),
                other => {
                    return Err(NodeError::Config(format!(
                        "unknown role {other:?} (expected validator, executor, watcher, storage)"
                    )))
                }
            }
        }
        Ok(r)
    }
}

/// Size limits of the HTTP API and the blob store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Largest blob accepted, in bytes.
    pub max_blob_size: u64,
    /// Largest chunk size an upload may declare, in bytes.
    pub max_chunk_size: u32,
    /// Smallest chunk size an upload may declare, in bytes.
    pub min_chunk_size: u32,
    /// Largest HTTP request body, in bytes (chunk uploads included).
    pub max_body_size: usize,
    /// Most transactions waiting in the mempool.
    pub max_mempool: usize,
    /// Most transactions in one block.
    pub max_block_txs: usize,
    /// Seconds an unfinished upload may go unused before the storage role discards
    /// it and its staged chunks (0: never).
    pub upload_idle_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_blob_size: 2 << 30,
            max_chunk_size: 4 << 20,
            min_chunk_size: 1 << 10,
            max_body_size: 8 << 20,
            max_mempool: 10_000,
            max_block_txs: 1_000,
            upload_idle_secs: 24 * 60 * 60,
        }
    }
}

/// Executor settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecutorConfig {
    /// Stake the executor bonds when it starts unbonded.
    pub stake: u128,
    /// Fee it charges per job.
    pub price: u128,
    /// Its public endpoint for direct calls (defaults to the HTTP address).
    pub endpoint: Option<String>,
    /// Outputs whose encoding is at most this many bytes go inline in the receipt;
    /// larger ones are stored as blobs and only their hash goes on the ledger.
    pub max_inline_output: usize,
    /// Models kept loaded.
    pub model_cache: usize,
    /// Kernel threads of each model run (executions, re-executions and referee
    /// runs alike). Any count gives the same bits; 1 leaves the other cores to the
    /// node and to concurrent jobs.
    pub threads: usize,
    /// The models the node's executors serve (keeping their bonds' model lists to
    /// it): unset, every registered model, the first 256 by id (the most one bond
    /// lists), which is the dev policy; set, exactly these ids, each from the
    /// block that registers it. `DEED_EXECUTOR_MODELS` (`0,2,5`, or `all`).
    pub models: Option<Vec<u64>>,
}

/// Most kernel threads a run may be given.
pub const MAX_RUN_THREADS: usize = 256;

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            stake: 1_000_000,
            price: 10,
            endpoint: None,
            max_inline_output: 16 * 1024,
            model_cache: 16,
            threads: 1,
            models: None,
        }
    }
}

/// Watcher settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WatcherConfig {
    /// Share of challengeable results re-executed, from 0.0 to 1.0. The choice per
    /// job is a deterministic function of the job id and the watcher's address, so
    /// an executor cannot predict another watcher's sample.
    pub sample: f64,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig { sample: 1.0 }
    }
}

/// BFT consensus settings (malachite, through `deed-consensus`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsensusSection {
    /// Address the consensus p2p network listens on (TCP); port 0 picks one.
    pub listen: SocketAddr,
    /// Other validators' (and followers') consensus addresses to stay connected to.
    pub peers: Vec<SocketAddr>,
    /// Milliseconds to wait for a proposal in round 0.
    pub timeout_propose_ms: u64,
    /// Milliseconds to wait for more prevotes, and for more precommits, after 2/3
    /// voted for anything.
    pub timeout_vote_ms: u64,
    /// Milliseconds every timeout grows by per round.
    pub timeout_delta_ms: u64,
    /// Largest encoded block proposed or accepted, in bytes. It travels over gossip
    /// twice (as the proposal and as its parts), so it stays well below 4 MiB.
    pub max_block_bytes: usize,
    /// Milliseconds without a new block, while the node network reaches peers,
    /// after which the consensus engine is restarted to dial its peers afresh
    /// (doubling, up to 8×, while restarts bring no block); 0 never restarts it.
    pub relink_after_ms: u64,
}

impl Default for ConsensusSection {
    fn default() -> Self {
        ConsensusSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            peers: Vec::new(),
            timeout_propose_ms: 3_000,
            timeout_vote_ms: 1_000,
            timeout_delta_ms: 500,
            max_block_bytes: 1 << 20,
            relink_after_ms: 30_000,
        }
    }
}

/// The node network (transaction gossip), beside consensus's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetSection {
    /// Address to listen on (TCP); port 0 picks one.
    pub listen: SocketAddr,
    /// Other nodes' node-network addresses to stay connected to.
    pub peers: Vec<SocketAddr>,
}

impl Default for NetSection {
    fn default() -> Self {
        NetSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            peers: Vec::new(),
        }
    }
}

/// Blobs in an S3-compatible bucket instead of the data directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct S3Section {
    /// Endpoint URL for S3-compatible services; empty for AWS.
    pub endpoint: Option<String>,
    /// Bucket name (it must exist).
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key (also `DEED_S3_SECRET_ACCESS_KEY`).
    pub secret_access_key: String,
    /// Allow plain `http://` endpoints.
    pub allow_http: bool,
    /// Key prefix inside the bucket.
    pub prefix: String,
}

impl S3Section {
    /// The blob store's S3 settings.
    pub fn to_store_config(&self) -> deed_store::S3Config {
        deed_store::S3Config {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            allow_http: self.allow_http,
            prefix: self.prefix.clone(),
        }
    }
}

/// The whole node configuration (the TOML file's shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The chain id transactions are signed for.
    pub chain_id: u64,
    /// Directory of the state database and the blob store.
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// Roles this node runs.
    pub roles: Roles,
    /// Milliseconds between blocks while transactions are waiting.
    pub block_interval_ms: u64,
    /// Milliseconds between empty blocks, so height-based timers (challenge windows,
    /// deadlines) advance when nobody transacts.
    pub heartbeat_ms: u64,
    /// BFT consensus.
    pub consensus: ConsensusSection,
    /// The node network.
    pub net: NetSection,
    /// Size limits.
    pub limits: LimitsConfig,
    /// Executor settings.
    pub executor: ExecutorConfig,
    /// Watcher settings.
    pub watcher: WatcherConfig,
    /// Hex secret key of the validator, executor and watcher accounts; `None` uses
    /// the deterministic dev keys (development only).
    pub node_key: Option<String>,
    /// Keep blobs in S3-compatible object storage rather than under `data_dir`.
    pub s3: Option<S3Section>,
    /// Injected faults (tests only; set from the command line, never from a file).
    #[serde(skip)]
    pub faults: crate::fault::Faults,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            chain_id: 31_337,
            data_dir: default_data_dir(),
            http: SocketAddr::from(([127, 0, 0, 1], 8545)),
            roles: Roles::default(),
            block_interval_ms: 500,
            heartbeat_ms: 5_000,
            consensus: ConsensusSection::default(),
            net: NetSection::default(),
            limits: LimitsConfig::default(),
            executor: ExecutorConfig::default(),
            watcher: WatcherConfig::default(),
            node_key: None,
            s3: None,
            faults: crate::fault::Faults::default(),
        }
    }
}

/// The user's data directory for Deed (`~/.local/share/deed` on Linux), or `./deed-data`.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("deed"))
        .unwrap_or_else(|| PathBuf::from("deed-data"))
}

/// Settings given on the command line; `None` leaves the lower layers' value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Configuration file to read.
    pub config: Option<PathBuf>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address.
    pub http: Option<SocketAddr>,
    /// Chain id.
    pub chain_id: Option<u64>,
    /// Roles (comma-separated).
    pub roles: Option<String>,
    /// Block interval in milliseconds.
    pub block_interval_ms: Option<u64>,
}

impl Config {
    /// Parses a TOML document; missing fields take their defaults.
    pub fn from_toml(text: &str) -> Result<Config, NodeError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| NodeError::Config(format!("config file: {e}")))?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, NodeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NodeError::Config(format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml(&text)
    }

    /// Builds the configuration from `base` (defaults, or what the caller chose as
    /// defaults), the file named by `cli.config` or `DEED_CONFIG`, the environment
    /// as given by `env` (`DEED_*` variables) and the command line, in that order
    /// of increasing precedence.
    pub fn load(
        base: Config,
        env: &dyn Fn(&str) -> Option<String>,
        cli: &Overrides,
    ) -> Result<Config, NodeError> {
        let file = cli
            .config
            .clone()
            .or_else(|| env("DEED_CONFIG").map(PathBuf::from));
        let mut cfg = match file {
            Some(path) => Config::from_file(&path)?,
            None => base,
        };
        cfg.apply_env(env)?;
        cfg.apply_overrides(cli)?;
        cfg.check()?;
        Ok(cfg)
    }

    /// [`Config::load`] with the process environment.
    pub fn load_from_process(base: Config, cli: &Overrides) -> Result<Config, NodeError> {
        Config::load(base, &|k| std::env::var(k).ok(), cli)
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), NodeError> {
        fn parse<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, NodeError> {
            v.parse()
                .map_err(|_| NodeError::Config(format!("{key}={v:?} is not valid")))
        }
        if let Some(v) = env("DEED_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("DEED_HTTP") {
            self.http = parse("DEED_HTTP", &v)?;
        }
        if let Some(v) = env("DEED_CHAIN_ID") {
            self.chain_id = parse("DEED_CHAIN_ID", &v)?;
        }
        if let Some(v) = env("DEED_ROLES") {
            self.roles = Roles::parse_list(&v)?;
        }
        if let Some(v) = env("DEED_BLOCK_INTERVAL_MS") {
            self.block_interval_ms = parse("DEED_BLOCK_INTERVAL_MS", &v)?;
        }
        if let Some(v) = env("DEED_EXECUTOR_THREADS") {
            self.executor.threads = parse("DEED_EXECUTOR_THREADS", &v)?;
        }
        if let Some(v) = env("DEED_EXECUTOR_MODELS") {
            self.executor.models = match v.trim() {
                "all" => None,
                "" => Some(Vec::new()),
                list => Some(
                    list.split(',')
                        .map(|id| parse("DEED_EXECUTOR_MODELS", id.trim()))
                        .collect::<Result<_, _>>()?,
                ),
            };
        }
        if let Some(v) = env("DEED_NODE_KEY") {
            self.node_key = Some(v);
        }
        if let (Some(v), Some(s3)) = (env("DEED_S3_SECRET_ACCESS_KEY"), self.s3.as_mut()) {
            s3.secret_access_key = v;
        }
        Ok(())
    }

    fn apply_overrides(&mut self, cli: &Overrides) -> Result<(), NodeError> {
        if let Some(v) = &cli.data_dir {
            self.data_dir = v.clone();
        }
        if let Some(v) = cli.http {
            self.http = v;
        }
        if let Some(v) = cli.chain_id {
            self.chain_id = v;
        }
        if let Some(v) = &cli.roles {
            self.roles = Roles::parse_list(v)?;
        }
        if let Some(v) = cli.block_interval_ms {
            self.block_interval_ms = v;
        }
        Ok(())
    }

    /// Checks values that parse but make no sense.
    fn check(&self) -> Result<(), NodeError> {
        if !(1..=MAX_RUN_THREADS).contains(&self.executor.threads) {
            return Err(NodeError::Config(format!(
                "executor.threads = {} is outside 1..={MAX_RUN_THREADS}",
                self.executor.threads
            )));
        }
        if let Some(models) = &self.executor.models {
            let max = deed_types::tx::limits::MAX_MODELS_SERVED;
            if models.len() > max {
                return Err(NodeError::Config(format!(
                    "executor.models lists {} models; a bond lists at most {max}",
                    models.len()
                )));
            }
        }
        Ok(())
    }

    /// The block interval.
    pub fn block_interval(&self) -> Duration {
        Duration::from_millis(self.block_interval_ms.max(1))
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(self.block_interval_ms).max(1))
    }

    /// The blob store limits.
    pub fn blob_limits(&self) -> deed_store::BlobLimits {
        deed_store::BlobLimits {
            max_blob_size: self.limits.max_blob_size,
            max_chunk_size: self.limits.max_chunk_size,
            min_chunk_size: self.limits.min_chunk_size,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn empty_file_is_all_defaults_and_partial_file_keeps_other_defaults() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        let c = Config::from_toml("chain_id = 7\n[limits]\nmax_body_size = 10\n").unwrap();
        assert_eq!(c.chain_id, 7);
        assert_eq!(c.limits.max_body_size, 10);
        assert_eq!(
            c.limits.max_chunk_size,
            LimitsConfig::default().max_chunk_size
        );
        assert_eq!(c.roles, Roles::default());
    }

    #[test]
    fn precedence_is_cli_then_env_then_file_then_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deed.toml");
        std::fs::write(
            &file,
            "chain_id = 5\nblock_interval_ms = 900\nheartbeat_ms = 1234\n",
        )
        .unwrap();
        let env: HashMap<&str, &str> = [
            ("DEED_CHAIN_ID", "6"),
            ("DEED_BLOCK_INTERVAL_MS", "800"),
            ("DEED_ROLES", "validator,watcher"),
        ]
        .into();
        let cli = Overrides {
            config: Some(file),
            chain_id: Some(9),
            ..Overrides::default()
        };
        let c = Config::load(
            Config::default(),
            &|k| env.get(k).map(|v| v.to_string()),
            &cli,
        )
        .unwrap();
        assert_eq!(c.chain_id, 9, "cli wins over env and file");
        assert_eq!(c.block_interval_ms, 800, "env wins over file");
        assert_eq!(c.heartbeat_ms, 1234, "file wins over defaults");
        assert_eq!(c.roles.names(), vec!["validator", "watcher"]);
    }

    #[test]
    fn bad_values_are_config_errors() {
        assert!(Config::from_toml("chain_id = \"x\"").is_err());
        assert!(Roles::parse_list("validator,miner").is_err());
        let r = Config::load(
            Config::default(),
            &|k| (k == "DEED_HTTP").then(|| "nope".into()),
            &Overrides::default(),
        );
        assert!(matches!(r, Err(NodeError::Config(_))));
    }

    #[test]
    fn executor_threads_come_from_file_or_env_and_are_checked() {
        assert_eq!(Config::default().executor.threads, 1);
        let c = Config::from_toml("[executor]\nthreads = 2\n").unwrap();
        assert_eq!(c.executor.threads, 2);
        assert!(matches!(
            Config::from_toml("[executor]\nthreads = 0\n"),
            Err(NodeError::Config(_))
        ));
        let env: HashMap<&str, &str> = [("DEED_EXECUTOR_THREADS", "3")].into();
        let c = Config::load(
            Config::default(),
            &|k| env.get(k).map(|v| v.to_string()),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.executor.threads, 3);
        let env: HashMap<&str, &str> = [("DEED_EXECUTOR_THREADS", "100000")].into();
        let r = Config::load(
            Config::default(),
            &|k| env.get(k).map(|v| v.to_string()),
            &Overrides::default(),
        );
        assert!(matches!(r, Err(NodeError::Config(_))));
    }

    #[test]
    fn served_models_come_from_file_or_env_and_are_checked() {
        assert_eq!(Config::default().executor.models, None, "every model");
        let c = Config::from_toml("[executor]\nmodels = [2, 0]\n").unwrap();
        assert_eq!(c.executor.models, Some(vec![2, 0]));
        let from_env = |v: &str| {
            Config::load(
                c.clone(),
                &|k| (k == "DEED_EXECUTOR_MODELS").then(|| v.to_owned()),
                &Overrides::default(),
            )
        };
        assert_eq!(from_env(" 1, 3").unwrap().executor.models, Some(vec![1, 3]));
        assert_eq!(from_env("all").unwrap().executor.models, None);
        assert_eq!(from_env("").unwrap().executor.models, Some(vec![]));
        assert!(matches!(from_env("1,x"), Err(NodeError::Config(_))));
        let many: Vec<String> = (0..300).map(|i| i.to_string()).collect();
        assert!(matches!(
            from_env(&many.join(",")),
            Err(NodeError::Config(_))
        ));
    }
}
