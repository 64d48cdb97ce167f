//! `deed testnet`: a network of separate node processes on this machine.
//!
//! [`create`] writes one home directory per node (keys, configuration) and a shared
//! genesis: validators named in it, the dev accounts and every node's accounts
//! funded. Node `i` listens on its own loopback address (`127.0.0.10 + i` by
//! default; Linux routes all of 127/8 to the loopback interface), consensus port
//! `base_port + i`, HTTP port `base_port + 100 + i`, node-network (gossip) port
//! `base_port + 200 + i`. Every node dials every other node on both networks.
//! [`spawn`] starts a node as `deed node --config …` in its own process group, with
//! its output in `node.log` in its home.
//!
//! The layout is recorded in `DIR/testnet.json` and the running processes in
//! `DIR/pids.json`, so `deed testnet stop --dir DIR` (or a test) finds them.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deed_node::config::{ConsensusSection, NetSection, Roles};
use deed_node::dev::{dev_account, DEV_ACCOUNTS, DEV_BALANCE};
use deed_node::operator::{
    Allocation, BootstrapPeer, GenesisFile, KeyFile, ParamsProfile, ValidatorEntry, CONFIG_FILE,
    GENESIS_FILE, KEY_FILE,
};
use deed_node::Config;
use deed_types::Address;
use serde::{Deserialize, Serialize};

/// The chain id of local testnets.
pub const TESTNET_CHAIN_ID: u64 = 31_338;

/// Each genesis validator's stake.
pub const VALIDATOR_STAKE: u128 = 1_000_000;

/// What a node of the testnet does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Votes and proposes blocks (and stores blobs).
    Validator,
    /// Follows the chain and runs jobs.
    Executor,
    /// Follows the chain and re-executes results.
    Watcher,
}

/// The shape of a testnet.
#[derive(Clone, Debug)]
pub struct Options {
    /// Validator processes.
    pub validators: usize,
    /// Executor processes.
    pub executors: usize,
    /// Watcher processes.
    pub watchers: usize,
    /// Where the homes go.
    pub dir: PathBuf,
    /// The first node's IP; node `i` gets this plus `i` (or this for every node
    /// with `same_ip`).
    pub ip: Ipv4Addr,
    /// Every node on `ip` (ports still differ), for systems without 127/8.
    pub same_ip: bool,
    /// Node `i`'s consensus port is `base_port + i`, its HTTP port
    /// `base_port + 100 + i`, its gossip port `base_port + 200 + i`.
    pub base_port: u16,
    /// Milliseconds between blocks while transactions wait.
    pub block_interval_ms: u64,
    /// Dev accounts (`deed_node::dev::dev_account(i)`) funded in the genesis.
    pub funded_accounts: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            validators: 4,
            executors: 0,
            watchers: 0,
            dir: PathBuf::from("deed-testnet"),
            ip: Ipv4Addr::new(127, 0, 0, 10),
            same_ip: false,
            base_port: 26_000,
            block_interval_ms: 100,
            funded_accounts: DEV_ACCOUNTS,
        }
    }
}

/// One node of a testnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Its index.
    pub index: usize,
    /// Its role.
    pub role: Role,
    /// Its home directory.
    pub home: PathBuf,
    /// Its HTTP API.
    pub http: SocketAddr,
    /// Its consensus p2p address.
    pub p2p: SocketAddr,
    /// Its node-network address (transaction gossip).
    pub net: SocketAddr,
    /// Its validator (operator) account.
    pub operator: Address,
}

impl NodeSpec {
    /// The API's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Its configuration file.
    pub fn config(&self) -> PathBuf {
        self.home.join(CONFIG_FILE)
    }
}

/// A testnet's layout (`testnet.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Its chain id.
    pub chain_id: u64,
    /// Its nodes, validators first.
    pub nodes: Vec<NodeSpec>,
}

impl Layout {
    /// Reads `DIR/testnet.json`.
    pub fn load(dir: &Path) -> Result<Layout> {
        let p = dir.join("testnet.json");
        let text =
            fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("bad {}", p.display()))
    }
}

fn ip_of(opts: &Options, i: usize) -> Result<IpAddr> {
    if opts.same_ip {
        return Ok(IpAddr::V4(opts.ip));
    }
    let [a, b, c, d] = opts.ip.octets();
    let last = u8::try_from(usize::from(d) + i).context("too many nodes for the IP range")?;
    Ok(IpAddr::V4(Ipv4Addr::new(a, b, c, last)))
}

fn port(base: u16, offset: usize) -> Result<u16> {
    u16::try_from(usize::from(base) + offset).context("port out of range")
}

/// Writes the homes, the genesis and the layout of a testnet under `opts.dir`.
/// Refuses a directory that already holds a testnet.
pub fn create(opts: &Options) -> Result<Layout> {
    let n = opts.validators + opts.executors + opts.watchers;
    if opts.validators == 0 {
        bail!("a testnet needs at least one validator");
    }
    if n > 90 {
        bail!("at most 90 nodes");
    }
    if opts.dir.join("testnet.json").exists() {
        bail!(
            "{} already holds a testnet (stop it and remove the directory first)",
            opts.dir.display()
        );
    }
    fs::create_dir_all(&opts.dir)
        .with_context(|| format!("cannot create {}", opts.dir.display()))?;
    let mut nodes = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let role = if i < opts.validators {
            Role::Validator
        } else if i < opts.validators + opts.executors {
            Role::Executor
        } else {
            Role::Watcher
        };
        let ip = ip_of(opts, i)?;
        let home = opts.dir.join(format!("node-{i}"));
        fs::create_dir_all(&home).with_context(|| format!("cannot create {}", home.display()))?;
        let k = KeyFile::generate()?;
        let nk = k.to_keys()?;
        nodes.push(NodeSpec {
            index: i,
            role,
            home,
            http: SocketAddr::new(ip, port(opts.base_port, 100 + i)?),
            p2p: SocketAddr::new(ip, port(opts.base_port, i)?),
            net: SocketAddr::new(ip, port(opts.base_port, 200 + i)?),
            operator: nk.validator.address(),
        });
        keys.push((k, nk));
    }
    let mut allocations: Vec<Allocation> = (0..opts.funded_accounts)
        .map(|i| Allocation {
            address: dev_account(i).address(),
            amount: DEV_BALANCE.to_string(),
        })
        .collect();
    for (_, k) in &keys {
        for a in [
            k.validator.address(),
            k.executor.address(),
            k.watcher.address(),
        ] {
            allocations.push(Allocation {
                address: a,
                amount: DEV_BALANCE.to_string(),
            });
        }
    }
    let genesis = GenesisFile {
        chain_id: TESTNET_CHAIN_ID,
        params: ParamsProfile::Dev,
        allocations,
        validators: keys[..opts.validators]
            .iter()
            .map(|(_, k)| ValidatorEntry {
                operator: k.validator.address(),
                consensus_key: k.consensus.public_key(),
                stake: VALIDATOR_STAKE.to_string(),
            })
            .collect(),
        // Every node dials the validators (and they each other) from the genesis.
        bootstrap: nodes[..opts.validators]
            .iter()
            .map(|n| BootstrapPeer {
                consensus: n.p2p,
                net: n.net,
            })
            .collect(),
    };
    for (spec, (key_file, _)) in nodes.iter().zip(&keys) {
        let cfg = Config {
            chain_id: TESTNET_CHAIN_ID,
            data_dir: PathBuf::from("data"),
            http: spec.http,
            roles: match spec.role {
                Role::Validator => Roles {
                    validator: true,
                    executor: false,
                    watcher: false,
                    storage: true,
                },
                Role::Executor => Roles {
                    validator: false,
                    executor: true,
                    watcher: false,
                    storage: true,
                },
                Role::Watcher => Roles {
                    validator: false,
                    executor: false,
                    watcher: true,
                    storage: false,
                },
            },
            block_interval_ms: opts.block_interval_ms,
            heartbeat_ms: 500,
            consensus: ConsensusSection {
                listen: spec.p2p,
                timeout_propose_ms: 1_000,
                timeout_vote_ms: 500,
                timeout_delta_ms: 250,
                relink_after_ms: 8_000,
                ..ConsensusSection::default()
            },
            net: NetSection {
                listen: spec.net,
                peers: Vec::new(),
            },
            ..Config::default()
        };
        let toml = toml::to_string_pretty(&cfg).context("encoding a node configuration")?;
        fs::write(spec.config(), toml)
            .with_context(|| format!("cannot write {}", spec.config().display()))?;
        key_file.save(&spec.home.join(KEY_FILE))?;
        genesis.save(&spec.home.join(GENESIS_FILE))?;
    }
    let layout = Layout {
        chain_id: TESTNET_CHAIN_ID,
        nodes,
    };
    let p = opts.dir.join("testnet.json");
    fs::write(&p, serde_json::to_string_pretty(&layout)?)
        .with_context(|| format!("cannot write {}", p.display()))?;
    Ok(layout)
}

/// Starts `deed node` for `spec` (with `exe`, this program), in its own process
/// group, appending its output to `node.log` in its home.
pub fn spawn(exe: &Path, spec: &NodeSpec) -> Result<Child> {
    spawn_with(exe, spec, &[])
}

/// [`spawn`] with more `deed node` arguments (`--fault …` in tests).
pub fn spawn_with(exe: &Path, spec: &NodeSpec, extra: &[String]) -> Result<Child> {
    let log_path = spec.home.join("node.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("node")
        .arg("--config")
        .arg(spec.config())
        .args(extra)
        .env(
            "DEED_LOG",
            std::env::var("DEED_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    cmd.spawn()
        .with_context(|| format!("cannot start node {}", spec.index))
}

/// Waits until every node in `nodes` answers and reports at least `height`.
pub fn wait_height(nodes: &[&NodeSpec], height: u64, limit: Duration) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let deadline = Instant::now() + limit;
    for spec in nodes {
        let client = deed_client::Client::new(&spec.url())?;
        loop {
            let h = rt.block_on(client.status()).map(|s| s.height).ok();
            if h.is_some_and(|h| h >= height) {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {} ({}) at height {h:?} after {limit:?}, waiting for {height}; see {}",
                    spec.index,
                    spec.url(),
                    spec.home.join("node.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// The running processes of a testnet (`pids.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pids(pub Vec<(usize, u32)>);

fn pids_path(dir: &Path) -> PathBuf {
    dir.join("pids.json")
}

/// `deed testnet start`: creates the testnet, starts every node and waits until
/// all of them report block 1. The processes keep running after this returns.
pub fn start(exe: &Path, opts: &Options) -> Result<Layout> {
    let layout = create(opts)?;
    let mut pids = Pids::default();
    for spec in &layout.nodes {
        let child = spawn(exe, spec)?;
        pids.0.push((spec.index, child.id()));
        fs::write(pids_path(&opts.dir), serde_json::to_string(&pids)?)?;
    }
    let all: Vec<&NodeSpec> = layout.nodes.iter().collect();
    if let Err(e) = wait_height(&all, 1, Duration::from_secs(90)) {
        let _ = stop(&opts.dir);
        return Err(e);
    }
    Ok(layout)
}

/// `deed testnet stop`: SIGTERM to every node of the testnet in `dir`, SIGKILL to
/// those still running after 5 seconds.
pub fn stop(dir: &Path) -> Result<usize> {
    let p = pids_path(dir);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
    };
    let pids: Pids = serde_json::from_str(&text).with_context(|| format!("bad {}", p.display()))?;
    let mut stopped = 0;
    for (_, pid) in &pids.0 {
        if signal(*pid, Some(Signal::SIGTERM)) {
            stopped += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pids.0.iter().any(|(_, pid)| alive(*pid)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (_, pid) in &pids.0 {
        if alive(*pid) {
            signal(*pid, Some(Signal::SIGKILL));
        }
    }
    fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
    Ok(stopped)
}

use nix::sys::signal::Signal;

fn signal(pid: u32, sig: Option<Signal>) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), sig).is_ok()
}

/// Whether `pid` runs and is not a zombie.
fn alive(pid: u32) -> bool {
    if !signal(pid, None) {
        return false;
    }
    // A child we did not reap stays in the table as a zombie: it is gone all the same.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn create_writes_one_genesis_and_meshes_the_peers() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            validators: 3,
            executors: 1,
            watchers: 1,
            dir: dir.path().join("net"),
            ..Options::default()
        };
        let layout = create(&opts).unwrap();
        assert_eq!(layout.nodes.len(), 5);
        assert_eq!(layout.nodes[3].role, Role::Executor);
        assert_eq!(layout.nodes[4].http.to_string(), "127.0.0.14:26104");
        let g0 = fs::read(layout.nodes[0].home.join(GENESIS_FILE)).unwrap();
        for n in &layout.nodes {
            assert_eq!(fs::read(n.home.join(GENESIS_FILE)).unwrap(), g0);
            let files = deed_node::operator::load_home(&n.config(), &Default::default()).unwrap();
            // The validators, from the genesis, but not itself.
            let want = if n.index < 3 { 2 } else { 3 };
            assert_eq!(files.config.consensus.peers.len(), want);
            assert_eq!(files.config.net.peers.len(), want);
            assert!(!files.config.consensus.peers.contains(&n.p2p));
            assert!(!files.config.net.peers.contains(&n.net));
            assert_eq!(files.config.data_dir, n.home.join("data"));
        }
        let g = GenesisFile::load(&layout.nodes[0].home.join(GENESIS_FILE)).unwrap();
        assert_eq!(g.validators.len(), 3);
        assert_eq!(Layout::load(&opts.dir).unwrap(), layout);
        assert!(create(&opts).is_err(), "a directory holds one testnet");
        assert_eq!(stop(&opts.dir).unwrap(), 0, "nothing running");
    }
}
