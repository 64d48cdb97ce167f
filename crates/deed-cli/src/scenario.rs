//! A small language for network scenarios, run against real node processes.
//!
//! A scenario is a text file of steps, one per line (`#` starts a comment):
//!
//! ```text
//! testnet validators=4 executors=0 watchers=0   # start the processes (relayed links)
//! testnet validators=4 executors=1 start=0,1,2,3 # start some; `start 4` later
//! testnet validators=4 executors=1 fault=4:corrupt-step=1  # `deed node --fault` (test
//!                                               #  builds); `+` joins several faults,
//!                                               #  fault=1,2:bad-blobs several nodes
//! wait height>=5 on=all within=60s              # on=all | live | 0,1,3
//! wait height>=+5                               # 5 past the highest height among them now
//! load start tps=20 accounts=4                  # signed transfers in the background
//! load stop
//! kill 2 signal=KILL                            # KILL (default) or TERM
//! kill random signal=KILL                       # a live node chosen by the scenario's seed
//! restart 2                                     # or `restart last`: the node killed last
//! partition 0,1 | 2,3                           # cut every link between the groups
//! sever 0,1 | 2,3                               # reset those links' connections and
//!                                               #  refuse new ones
//! heal
//! assert same-chain                             # equal block hashes at every common height
//! assert committed-all                          # every committed load tx is on every node
//! assert stalled for=3s on=live                 # no node's height moves for that long
//! publish on=4 key=0 name=mlp file=PATH price=100 # `deed model create` + `publish`
//! download on=4 model=0/mlp file=PATH           # `deed model download` from that
//!                                               #  node gives exactly these bytes;
//!                                               #  expect=missing: it has no copy
//! assert metric deed_peer_strikes>=1 on=1       # /metrics values summed over the
//!                                               #  nodes (default live), at least N
//! infer on=0 key=1 model=0/mlp input=PATH        # `deed infer … --mode optimistic
//!                                               #  --wait final`: finalized, run by a
//!                                               #  listed node's executor, owner paid;
//!                                               #  expect=defended|refunded: after a
//!                                               #  dispute the defender|challenger won
//! sleep 2s
//! ```
//!
//! Nodes reach each other's consensus and node-network ports only through TCP
//! relays, one per ordered pair of nodes and port, which this harness runs.
//! `partition` stops the relays between groups from forwarding anything (the
//! bytes wait, as packets dropped on a real link are resent later), `sever` resets
//! their connections and refuses new ones, `heal` lets them flow again. That needs
//! no privileges and works on any system.
//!
//! Every check reads the nodes' HTTP API: `/v1/status`, `/v1/blocks/{h}` and
//! `/v1/transactions/{hash}`.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use deed_client::api::TxState;
use deed_client::Client;
use deed_types::{Action, Hash, Transaction};

use crate::testnet::{self, Layout, NodeSpec, Options};

/// One step of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create a testnet and start its nodes (all, or those listed).
    Testnet {
        /// Validator processes.
        validators: usize,
        /// Executor processes.
        executors: usize,
        /// Watcher processes.
        watchers: usize,
        /// The nodes to start now (`None`: all); `start N` starts the others later.
        start: Option<Vec<usize>>,
        /// A fault for some nodes: (nodes, `deed node --fault` value).
        fault: Option<(Vec<usize>, String)>,
    },
    /// Wait until the nodes reach a height.
    Wait {
        /// The height, or an increase over each node's current height.
        height: u64,
        /// Whether `height` is relative.
        relative: bool,
        /// Which nodes.
        on: Nodes,
        /// How long at most.
        within: Duration,
    },
    /// Stop a node.
    Kill {
        /// Which node.
        node: Target,
        /// SIGKILL (true) or SIGTERM.
        hard: bool,
    },
    /// Start a stopped node again.
    Restart(Target),
    /// Cut the links between two groups of nodes; with `true` (`sever`), reset
    /// their connections and refuse new ones.
    Partition(Vec<usize>, Vec<usize>, bool),
    /// Restore every link.
    Heal,
    /// Start sending transfers.
    LoadStart {
        /// Transactions per second in all.
        tps: u32,
        /// Sending accounts (dev accounts).
        accounts: usize,
    },
    /// Stop sending.
    LoadStop,
    /// Check a property.
    Assert(Check),
    /// Wait.
    Sleep(Duration),
    /// Create and publish a model with the `deed` CLI against one node.
    Publish {
        /// The node.
        on: usize,
        /// The owner (dev account index).
        key: usize,
        /// The model's name.
        name: String,
        /// The ONNX file.
        file: PathBuf,
        /// Price per call.
        price: u128,
    },
    /// Download a model's first version from one node and compare it with a file.
    Download {
        /// The node.
        on: usize,
        /// The owner (dev account index).
        owner: usize,
        /// The model's name.
        name: String,
        /// The file it must equal.
        file: PathBuf,
        /// The download must fail: the node finds no good copy.
        missing: bool,
    },
    /// Run a model optimistically with the `deed` CLI until final.
    Infer {
        /// The node.
        on: usize,
        /// The requester (dev account index).
        key: usize,
        /// The owner (dev account index) and the model's name.
        owner: usize,
        /// The model's name.
        name: String,
        /// The input file.
        input: PathBuf,
        /// Nodes whose executor may run it (empty: any).
        executors: Vec<usize>,
        /// How the job must end.
        expect: Expect,
        /// `optimistic` or `replicated:K`.
        mode: String,
        /// A node whose executor must end slashed and jailed.
        liar: Option<usize>,
    },
}

/// How a job must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Finalized and the owner paid.
    Finalized,
    /// Finalized after a dispute the defender won (a false challenge).
    Defended,
    /// Refunded after a dispute the challenger won (a cheating executor), the
    /// executor slashed.
    Refunded,
}

/// A set of nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nodes {
    /// Every node.
    All,
    /// The running nodes.
    Live,
    /// These.
    List(Vec<usize>),
}

/// A node to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// This one.
    Index(usize),
    /// A running one chosen from the scenario's seed (for `kill`), or the node
    /// killed last (for `restart`).
    Random,
}

/// A property of the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Every pair of running nodes has the same block at every height both have.
    SameChain,
    /// Every load transaction a node reported committed is committed, at the same
    /// height, on every running node.
    CommittedAll,
    /// No node of the set commits a block for the duration.
    Stalled {
        /// How long.
        duration: Duration,
        /// Which nodes.
        on: Nodes,
    },
    /// A metric, summed over some nodes, is at least a value.
    Metric {
        /// The nodes.
        on: Nodes,
        /// The metric (unlabelled).
        name: String,
        /// The least value.
        min: u64,
    },
}

fn duration(s: &str) -> Result<Duration> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = n.parse().with_context(|| format!("bad duration {s:?}"))?;
    match unit {
        "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => bail!("bad duration unit in {s:?} (s or ms)"),
    }
}

fn nodes(s: &str) -> Result<Nodes> {
    match s {
        "all" => Ok(Nodes::All),
        "live" => Ok(Nodes::Live),
        list => Ok(Nodes::List(indices(list)?)),
    }
}

fn indices(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse()
                .with_context(|| format!("bad node list {s:?}"))
        })
        .collect()
}

/// Parses a scenario.
pub fn parse(text: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let step = parse_line(line).with_context(|| format!("line {}: {raw:?}", n + 1))?;
        steps.push(step);
    }
    Ok(steps)
}

/// A required `KEY=PATH` argument of `verb`.
fn path_of(kv: &BTreeMap<&str, &str>, verb: &str, key: &str) -> Result<PathBuf> {
    kv.get(key)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("{verb} needs {key}="))
}

/// `model=OWNER/NAME`, OWNER a dev account index.
fn model_of<'a>(kv: &BTreeMap<&str, &'a str>, verb: &str) -> Result<(usize, &'a str)> {
    let model = kv
        .get("model")
        .ok_or_else(|| anyhow!("{verb} needs model=OWNER/NAME"))?;
    let (owner, name) = model
        .split_once('/')
        .ok_or_else(|| anyhow!("model=OWNER/NAME (OWNER a dev account index)"))?;
    Ok((owner.parse().context("bad owner index")?, name))
}

fn parse_line(line: &str) -> Result<Step> {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or("");
    let rest: Vec<&str> = words.collect();
    let mut kv: BTreeMap<&str, &str> = BTreeMap::new();
    let mut plain = Vec::new();
    for w in &rest {
        if w.contains(">=") {
            plain.push(*w);
            continue;
        }
        match w.split_once('=') {
            Some((k, v)) => {
                kv.insert(k, v);
            }
            None => plain.push(*w),
        }
    }
    let num = |k: &str, d: usize| -> Result<usize> {
        kv.get(k)
            .map(|v| v.parse().with_context(|| format!("bad {k}")))
            .unwrap_or(Ok(d))
    };
    Ok(match verb {
        "testnet" => Step::Testnet {
            validators: num("validators", 4)?,
            executors: num("executors", 0)?,
            watchers: num("watchers", 0)?,
            start: kv.get("start").map(|l| indices(l)).transpose()?,
            fault: match kv.get("fault") {
                Some(f) => {
                    let (n, spec) = f
                        .split_once(':')
                        .ok_or_else(|| anyhow!("fault=NODE:FAULT"))?;
                    Some((indices(n)?, spec.to_string()))
                }
                None => None,
            },
        },
        "wait" => {
            let cond = plain
                .first()
                .ok_or_else(|| anyhow!("wait needs height>=N"))?;
            let h = cond
                .strip_prefix("height>=")
                .ok_or_else(|| anyhow!("wait understands height>=N"))?;
            let (relative, h) = match h.strip_prefix('+') {
                Some(r) => (true, r),
                None => (false, h),
            };
            Step::Wait {
                height: h.parse().context("bad height")?,
                relative,
                on: nodes(kv.get("on").copied().unwrap_or("all"))?,
                within: duration(kv.get("within").copied().unwrap_or("60s"))?,
            }
        }
        "kill" => Step::Kill {
            node: match plain.first().copied() {
                Some("random") => Target::Random,
                Some(i) => Target::Index(i.parse().context("bad node")?),
                None => bail!("kill needs a node"),
            },
            hard: match kv.get("signal").copied().unwrap_or("KILL") {
                "KILL" => true,
                "TERM" => false,
                s => bail!("unknown signal {s}"),
            },
        },
        "restart" | "start" => Step::Restart(match plain.first().copied() {
            Some("last") => Target::Random,
            Some(i) => Target::Index(i.parse().context("bad node")?),
            None => bail!("restart needs a node (or `last`)"),
        }),
        "partition" | "sever" => {
            let joined = rest.join(" ");
            let (a, b) = joined
                .split_once('|')
                .ok_or_else(|| anyhow!("{verb} A | B"))?;
            Step::Partition(indices(a.trim())?, indices(b.trim())?, verb == "sever")
        }
        "heal" => Step::Heal,
        "load" => match plain.first().copied() {
            Some("start") => Step::LoadStart {
                tps: u32::try_from(num("tps", 20)?).context("bad tps")?,
                accounts: num("accounts", 4)?,
            },
            Some("stop") => Step::LoadStop,
            _ => bail!("load start|stop"),
        },
        "assert" => match plain.first().copied() {
            Some("same-chain") => Step::Assert(Check::SameChain),
            Some("committed-all") => Step::Assert(Check::CommittedAll),
            Some("stalled") => Step::Assert(Check::Stalled {
                duration: duration(kv.get("for").copied().unwrap_or("3s"))?,
                on: nodes(kv.get("on").copied().unwrap_or("live"))?,
            }),
            Some("metric") => {
                let (name, min) = plain
                    .get(1)
                    .and_then(|c| c.split_once(">="))
                    .ok_or_else(|| anyhow!("assert metric NAME>=N"))?;
                Step::Assert(Check::Metric {
                    on: nodes(kv.get("on").copied().unwrap_or("live"))?,
                    name: name.to_string(),
                    min: min.parse().with_context(|| format!("bad value {min:?}"))?,
                })
            }
            _ => bail!("assert same-chain|committed-all|stalled|metric"),
        },
        "publish" => Step::Publish {
            on: num("on", 0)?,
            key: num("key", 0)?,
            name: kv
                .get("name")
                .ok_or_else(|| anyhow!("publish needs name="))?
                .to_string(),
            file: path_of(&kv, "publish", "file")?,
            price: num("price", 100)? as u128,
        },
        "download" => {
            let (owner, name) = model_of(&kv, "download")?;
            Step::Download {
                on: num("on", 0)?,
                owner,
                name: name.to_string(),
                file: path_of(&kv, "download", "file")?,
                missing: match kv.get("expect").copied() {
                    None => false,
                    Some("missing") => true,
                    Some(e) => bail!("download expect={e}: only expect=missing"),
                },
            }
        }
        "infer" => {
            let (owner, name) = model_of(&kv, "infer")?;
            Step::Infer {
                on: num("on", 0)?,
                key: num("key", 1)?,
                owner,
                name: name.to_string(),
                input: path_of(&kv, "infer", "input")?,
                executors: match kv.get("executor") {
                    Some(l) => indices(l)?,
                    None => Vec::new(),
                },
                mode: kv.get("mode").copied().unwrap_or("optimistic").to_string(),
                liar: kv
                    .get("liar")
                    .map(|l| l.parse())
                    .transpose()
                    .context("bad liar")?,
                expect: match kv.get("expect").copied() {
                    None | Some("finalized") => Expect::Finalized,
                    Some("defended") => Expect::Defended,
                    Some("refunded") => Expect::Refunded,
                    Some(e) => bail!("expect=finalized|defended|refunded, not {e}"),
                },
            }
        }
        "sleep" => Step::Sleep(duration(
            plain
                .first()
                .ok_or_else(|| anyhow!("sleep needs a duration"))?,
        )?),
        v => bail!("unknown step {v:?}"),
    })
}

/// A TCP relay from one node to another's port, which a partition can cut. A cut
/// relay forwards nothing, in either direction, until it is healed: the
/// connections stay open and their bytes wait, as with packets dropped on a real
/// link (a cut shorter than the peers' ping timeout keeps the connections). A
/// severed relay resets its connections and refuses new ones until it is healed,
/// as a link whose connections drop.
struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    severed: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(bind: SocketAddr, target: SocketAddr, stop: Arc<AtomicBool>) -> Result<Relay> {
        let listener =
            TcpListener::bind(bind).with_context(|| format!("cannot bind relay {bind}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let open = Arc::new(AtomicBool::new(true));
        let severed = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (o, sv, cs) = (open.clone(), severed.clone(), conns.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    // Dropped at once: the dialler sees its connection reset.
                    Ok(_) if sv.load(Ordering::Relaxed) => {}
                    Ok((inbound, _)) => {
                        let _ = inbound.set_nonblocking(false);
                        let Ok(outbound) =
                            TcpStream::connect_timeout(&target, Duration::from_secs(2))
                        else {
                            continue;
                        };
                        {
                            let mut cs = cs.lock().unwrap_or_else(|e| e.into_inner());
                            cs.extend(inbound.try_clone().ok());
                            cs.extend(outbound.try_clone().ok());
                        }
                        pipe(inbound, outbound, &o, &stop);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Relay {
            addr,
            open,
            severed,
            conns,
        })
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::Relaxed);
        if open {
            self.severed.store(false, Ordering::Relaxed);
        }
    }

    /// Resets every connection through the relay and refuses new ones.
    fn sever(&self) {
        self.severed.store(true, Ordering::Relaxed);
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pipe(a: TcpStream, b: TcpStream, open: &Arc<AtomicBool>, stop: &Arc<AtomicBool>) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        let (open, stop) = (open.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                while !open.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                while !open.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Both);
            let _ = from.shutdown(std::net::Shutdown::Both);
        });
    };
    copy(a, b2);
    copy(b, a2);
}

/// Background transfers.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Hash>>>,
    thread: Option<JoinHandle<()>>,
}

/// A running scenario: the testnet, its processes and relays.
pub struct Runner {
    exe: PathBuf,
    dir: PathBuf,
    ip: Ipv4Addr,
    base_port: u16,
    layout: Option<Layout>,
    children: BTreeMap<usize, Child>,
    /// relays[(i, j)]: node i's links to node j (consensus, node network).
    relays: BTreeMap<(usize, usize), [Relay; 2]>,
    stop_relays: Arc<AtomicBool>,
    load: Option<Load>,
    /// Every load transaction ever accepted by a node.
    sent: Vec<Hash>,
    seed: u64,
    last_killed: Option<usize>,
    /// Relative file names in steps are relative to this.
    base: PathBuf,
    /// Nodes started with `--fault`.
    fault: Option<(Vec<usize>, String)>,
    rt: tokio::runtime::Runtime,
    log: Vec<String>,
}

impl Runner {
    /// A runner that puts the testnet in `dir`, node `i` on `ip + i`, ports from
    /// `base_port`. `seed` picks random targets.
    pub fn new(exe: &Path, dir: &Path, ip: Ipv4Addr, base_port: u16, seed: u64) -> Result<Runner> {
        Ok(Runner {
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            ip,
            base_port,
            layout: None,
            children: BTreeMap::new(),
            relays: BTreeMap::new(),
            stop_relays: Arc::new(AtomicBool::new(false)),
            load: None,
            sent: Vec::new(),
            seed,
            last_killed: None,
            base: std::env::current_dir().unwrap_or_default(),
            fault: None,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            log: Vec::new(),
        })
    }

    /// Takes relative file names in steps relative to `base`.
    pub fn with_base(mut self, base: &Path) -> Runner {
        self.base = base.to_path_buf();
        self
    }

    /// What happened so far, one line per step.
    pub fn log(&self) -> &[String] {
        &self.log
    }

    /// Runs `steps` in order; fails at the first step that fails.
    pub fn run(&mut self, steps: &[Step]) -> Result<()> {
        for (i, step) in steps.iter().enumerate() {
            let t = Instant::now();
            self.step(step)
                .with_context(|| format!("step {} ({step:?})", i + 1))?;
            self.log.push(format!("{step:?}: {:?}", t.elapsed()));
        }
        Ok(())
    }

    fn layout(&self) -> Result<&Layout> {
        self.layout
            .as_ref()
            .ok_or_else(|| anyhow!("no testnet started yet"))
    }

    fn spec(&self, i: usize) -> Result<NodeSpec> {
        self.layout()?
            .nodes
            .get(i)
            .cloned()
            .ok_or_else(|| anyhow!("no node {i}"))
    }

    fn live(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, c) in self.children.iter_mut() {
            if matches!(c.try_wait(), Ok(None)) {
                out.push(*i);
            }
        }
        out
    }

    fn select(&mut self, on: &Nodes) -> Result<Vec<usize>> {
        Ok(match on {
            Nodes::All => (0..self.layout()?.nodes.len()).collect(),
            Nodes::Live => self.live(),
            Nodes::List(l) => l.clone(),
        })
    }

    fn client(&self, i: usize) -> Result<Client> {
        Ok(Client::new(&self.spec(i)?.url())?)
    }

    fn height(&self, i: usize) -> Option<u64> {
        let c = self.client(i).ok()?;
        self.rt.block_on(c.status()).ok().map(|s| s.height)
    }

    fn step(&mut self, step: &Step) -> Result<()> {
        match step {
            Step::Testnet {
                validators,
                executors,
                watchers,
                start,
                fault,
            } => {
                self.fault = fault.clone();
                self.start_testnet(*validators, *executors, *watchers, start.as_deref())
            }
            Step::Wait {
                height,
                relative,
                on,
                within,
            } => {
                let targets = self.select(on)?;
                let base = if *relative {
                    targets
                        .iter()
                        .filter_map(|i| self.height(*i))
                        .max()
                        .unwrap_or(0)
                } else {
                    0
                };
                let goal: BTreeMap<usize, u64> =
                    targets.iter().map(|i| (*i, base + height)).collect();
                let deadline = Instant::now() + *within;
                loop {
                    let behind: Vec<(usize, Option<u64>, u64)> = goal
                        .iter()
                        .map(|(i, g)| (*i, self.height(*i), *g))
                        .filter(|(_, h, g)| h.is_none_or(|h| h < *g))
                        .collect();
                    if behind.is_empty() {
                        return Ok(());
                    }
                    if Instant::now() >= deadline {
                        bail!("after {within:?}, (node, height, goal): {behind:?}");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Step::Kill { node, hard } => {
                let i = match node {
                    Target::Index(i) => *i,
                    Target::Random => {
                        let live = self.live();
                        if live.is_empty() {
                            bail!("no live node to kill");
                        }
                        self.seed = self
                            .seed
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        live[usize::try_from(self.seed >> 33).unwrap_or(0) % live.len()]
                    }
                };
                let child = self
                    .children
                    .get_mut(&i)
                    .ok_or_else(|| anyhow!("node {i} was never started"))?;
                if *hard {
                    child.kill().context("SIGKILL")?;
                } else {
                    let pid = i32::try_from(child.id()).context("pid")?;
                    nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    )
                    .context("SIGTERM")?;
                }
                let deadline = Instant::now() + Duration::from_secs(20);
                while matches!(child.try_wait(), Ok(None)) {
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        bail!("node {i} did not stop");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                self.log.push(format!("killed node {i}"));
                self.last_killed = Some(i);
                Ok(())
            }
            Step::Restart(t) => {
                let i = match t {
                    Target::Index(i) => *i,
                    Target::Random => self
                        .last_killed
                        .ok_or_else(|| anyhow!("no node was killed"))?,
                };
                let spec = self.spec(i)?;
                let child = testnet::spawn_with(&self.exe, &spec, &self.extra_args(i))?;
                self.children.insert(i, child);
                Ok(())
            }
            Step::Partition(a, b, sever) => {
                for ((i, j), pair) in &self.relays {
                    let cross =
                        (a.contains(i) && b.contains(j)) || (b.contains(i) && a.contains(j));
                    if cross && *sever {
                        pair.iter().for_each(Relay::sever);
                    } else if cross {
                        pair.iter().for_each(|r| r.set_open(false));
                    }
                }
                Ok(())
            }
            Step::Heal => {
                for r in self.relays.values().flatten() {
                    r.set_open(true);
                }
                Ok(())
            }
            Step::LoadStart { tps, accounts } => self.load_start(*tps, *accounts),
            Step::LoadStop => {
                self.load_stop();
                Ok(())
            }
            Step::Assert(c) => self.check(c),
            Step::Sleep(d) => {
                std::thread::sleep(*d);
                Ok(())
            }
            Step::Publish {
                on,
                key,
                name,
                file,
                price,
            } => {
                let file = self.path(file);
                let file = file.to_str().context("path")?;
                let price = price.to_string();
                self.cli(*on, *key, &["model", "create", name, "--price", &price])?;
                let v = self.cli(*on, *key, &["model", "publish", name, file])?;
                self.log.push(format!("published {name}: {v}"));
                Ok(())
            }
            Step::Download {
                on,
                owner,
                name,
                file,
                missing,
            } => {
                let owner_addr = deed_node::dev::dev_account(*owner).address();
                let out = self.dir.join(format!("download-{on}-{name}.onnx"));
                let r = self.cli(
                    *on,
                    *owner,
                    &[
                        "model",
                        "download",
                        &format!("{owner_addr}/{name}@1"),
                        "-o",
                        out.to_str().context("path")?,
                    ],
                );
                match (r, missing) {
                    (Ok(_), false) => {}
                    (Err(e), true) if format!("{e:#}").contains("is not stored here") => {
                        return Ok(());
                    }
                    (Ok(_), true) => bail!("node {on} served {name}, expected no copy"),
                    (Err(e), _) => return Err(e),
                }
                let want = std::fs::read(self.path(file))?;
                let got = std::fs::read(&out)?;
                if got != want {
                    bail!(
                        "node {on} served {} bytes that differ from {}",
                        got.len(),
                        file.display()
                    );
                }
                Ok(())
            }
            Step::Infer {
                on,
                key,
                owner,
                name,
                input,
                executors,
                expect,
                mode,
                liar,
            } => {
                let owner_addr = deed_node::dev::dev_account(*owner).address();
                let model = format!("{owner_addr}/{name}");
                let input = self.path(input);
                // Every listed executor serves the model before the job draws from them.
                let mut listed = Vec::new();
                for i in executors {
                    listed.extend(self.rt.block_on(self.client(*i)?.status())?.executors);
                }
                let deadline = Instant::now() + Duration::from_secs(60);
                for e in &listed {
                    loop {
                        let a = self.rt.block_on(self.client(*on)?.account(e))?;
                        if a.executor.is_some_and(|x| !x.models.is_empty()) {
                            break;
                        }
                        if Instant::now() >= deadline {
                            bail!("executor {e} serves no model after 60 s");
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                let liar_stake = match liar {
                    Some(l) => {
                        let e = self.rt.block_on(self.client(*l)?.status())?.executor;
                        let e = e.ok_or_else(|| anyhow!("node {l} runs no executor"))?;
                        let a = self.rt.block_on(self.client(*on)?.account(&e))?;
                        let stake: u128 = a
                            .executor
                            .map(|x| x.stake.parse().unwrap_or(0))
                            .unwrap_or(0);
                        Some((e, stake))
                    }
                    None => None,
                };
                let before = self.balance(*on, &owner_addr)?;
                let out = self.cli(
                    *on,
                    *key,
                    &[
                        "infer",
                        &model,
                        "-i",
                        input.to_str().context("path")?,
                        "--mode",
                        mode,
                        "--wait",
                        "final",
                    ],
                )?;
                let want = if *expect == Expect::Refunded {
                    "refunded"
                } else {
                    "finalized"
                };
                // `infer` prints the job inline (direct and optimistic) or as an object.
                let status = out["job"]["status"].as_str().or(out["status"].as_str());
                if status != Some(want) {
                    bail!("job not {want}: {out}");
                }
                let job = out["job"]["id"]
                    .as_u64()
                    .or(out["job"].as_u64())
                    .context("no job id")?;
                if let Some((e, stake_before)) = liar_stake {
                    let a = self.rt.block_on(self.client(*on)?.account(&e))?;
                    let x = a.executor.ok_or_else(|| anyhow!("liar {e} unbonded"))?;
                    let stake: u128 = x.stake.parse().unwrap_or(u128::MAX);
                    if stake >= stake_before || x.jailed_until.is_none() {
                        bail!("liar {e} not slashed and jailed: {stake_before} then {stake}, jailed {:?}", x.jailed_until);
                    }
                    self.log
                        .push(format!("liar {e} slashed: {stake_before} then {stake}"));
                }
                let view = self.rt.block_on(self.client(*on)?.job(job))?;
                if !executors.is_empty() {
                    let mut allowed = Vec::new();
                    for i in executors {
                        let st = self.rt.block_on(self.client(*i)?.status())?;
                        allowed.extend(st.executors);
                    }
                    for e in &view.executors {
                        if !allowed.contains(e) {
                            bail!("job {job} ran on {e}, not on nodes {executors:?}");
                        }
                    }
                }
                if *expect != Expect::Finalized {
                    let disputes = self.rt.block_on(self.client(*on)?.disputes())?;
                    let d = disputes
                        .iter()
                        .find(|d| d.job == job)
                        .ok_or_else(|| anyhow!("job {job} ended without a dispute"))?;
                    let winner = if *expect == Expect::Refunded {
                        "challenger"
                    } else {
                        "defender"
                    };
                    if d.winner.as_deref() != Some(winner) || d.slashed.is_none() {
                        bail!(
                            "dispute {} of job {job}, expected won by the {winner}: {d:?}",
                            d.id
                        );
                    }
                    self.log.push(format!(
                        "job {job} {want}; dispute {} won by the {winner} after {} rounds, {} slashed",
                        d.id,
                        d.rounds,
                        d.slashed.as_deref().unwrap_or("0")
                    ));
                    if *expect == Expect::Refunded {
                        return Ok(());
                    }
                }
                let after = self.balance(*on, &owner_addr)?;
                if after <= before {
                    bail!("the owner was not paid: {before} then {after}");
                }
                self.log
                    .push(format!("job {job} final; owner paid {}", after - before));
                Ok(())
            }
        }
    }

    fn extra_args(&self, node: usize) -> Vec<String> {
        match &self.fault {
            Some((nodes, f)) if nodes.contains(&node) => f
                .split('+')
                .flat_map(|one| ["--fault".to_string(), one.to_string()])
                .collect(),
            _ => Vec::new(),
        }
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn balance(&self, on: usize, a: &deed_types::Address) -> Result<u128> {
        let v = self.rt.block_on(self.client(on)?.account(a))?;
        v.balance.parse().context("balance")
    }

    /// Runs the `deed` CLI against node `on` as dev account `key`; its JSON output.
    fn cli(&self, on: usize, key: usize, args: &[&str]) -> Result<serde_json::Value> {
        let k = deed_node::dev::dev_account(key);
        let out = std::process::Command::new(&self.exe)
            .arg("--json")
            .args(args)
            .env("DEED_NODE", self.spec(on)?.url())
            .env("DEED_KEY", hex::encode(k.to_bytes()))
            .env("DEED_HOME", self.dir.join("cli-home"))
            .output()
            .context("running deed")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "deed {args:?} failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_str(stdout.trim()).with_context(|| format!("not JSON: {stdout}"))
    }

    fn start_testnet(
        &mut self,
        validators: usize,
        executors: usize,
        watchers: usize,
        start: Option<&[usize]>,
    ) -> Result<()> {
        let opts = Options {
            validators,
            executors,
            watchers,
            dir: self.dir.clone(),
            ip: self.ip,
            base_port: self.base_port,
            ..Options::default()
        };
        let layout = testnet::create(&opts)?;
        // Route every link through relays: node i dials relays (i, j), which
        // forward to node j's consensus and node-network ports. The genesis's
        // bootstrap peers (direct addresses) give way to them.
        let n = layout.nodes.len();
        for i in 0..n {
            let (mut consensus, mut net) = (Vec::new(), Vec::new());
            for j in (0..n).filter(|j| *j != i) {
                let bind = SocketAddr::new(layout.nodes[i].p2p.ip(), 0);
                let relay = |to| Relay::start(bind, to, self.stop_relays.clone());
                let pair = [relay(layout.nodes[j].p2p)?, relay(layout.nodes[j].net)?];
                consensus.push(pair[0].addr);
                net.push(pair[1].addr);
                self.relays.insert((i, j), pair);
            }
            let home = &layout.nodes[i].home;
            let path = layout.nodes[i].config();
            let mut cfg = deed_node::Config::from_file(&path)?;
            cfg.consensus.peers = consensus;
            cfg.net.peers = net;
            std::fs::write(&path, toml::to_string_pretty(&cfg)?)?;
            let genesis_path = home.join(deed_node::operator::GENESIS_FILE);
            let mut genesis = deed_node::operator::GenesisFile::load(&genesis_path)?;
            genesis.bootstrap.clear();
            genesis.save(&genesis_path)?;
        }
        for spec in &layout.nodes {
            if start.is_some_and(|l| !l.contains(&spec.index)) {
                continue;
            }
            let child = testnet::spawn_with(&self.exe, spec, &self.extra_args(spec.index))?;
            self.children.insert(spec.index, child);
        }
        self.layout = Some(layout);
        Ok(())
    }

    fn load_start(&mut self, tps: u32, accounts: usize) -> Result<()> {
        if self.load.is_some() {
            bail!("load already running");
        }
        let specs = self.layout()?.nodes.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (stop.clone(), sent.clone());
        let period = Duration::from_secs_f64(1.0 / f64::from(tps.max(1)));
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(run_load(specs, accounts.max(1), period, s, out));
        });
        self.load = Some(Load {
            stop,
            sent,
            thread: Some(thread),
        });
        Ok(())
    }

    fn load_stop(&mut self) {
        if let Some(mut l) = self.load.take() {
            l.stop.store(true, Ordering::Relaxed);
            if let Some(t) = l.thread.take() {
                let _ = t.join();
            }
            let sent = l.sent.lock().unwrap_or_else(|e| e.into_inner());
            self.sent.extend(sent.iter().copied());
            self.log
                .push(format!("load sent {} transactions", sent.len()));
        }
    }

    fn check(&mut self, c: &Check) -> Result<()> {
        match c {
            Check::SameChain => {
                let live = self.live();
                let heights: Vec<(usize, u64)> = live
                    .iter()
                    .filter_map(|i| self.height(*i).map(|h| (*i, h)))
                    .collect();
                if heights.len() < live.len() {
                    bail!("a live node does not answer");
                }
                let common = heights.iter().map(|(_, h)| *h).min().unwrap_or(0);
                for h in 1..=common {
                    let mut seen: Option<(usize, Hash)> = None;
                    for (i, _) in &heights {
                        let b = self
                            .rt
                            .block_on(self.client(*i)?.block(h))
                            .with_context(|| format!("block {h} of node {i}"))?;
                        match seen {
                            None => seen = Some((*i, b.hash)),
                            Some((j, hash)) if hash != b.hash => {
                                bail!(
                                    "fork at height {h}: node {j} has {hash}, node {i} has {}",
                                    b.hash
                                )
                            }
                            _ => {}
                        }
                    }
                }
                self.log
                    .push(format!("same chain up to height {common} on {heights:?}"));
                Ok(())
            }
            Check::CommittedAll => {
                let live = self.live();
                let mut committed = 0usize;
                for hash in &self.sent {
                    let mut at: Option<u64> = None;
                    for i in &live {
                        let state = self
                            .rt
                            .block_on(self.client(*i)?.transaction(hash))
                            .ok()
                            .map(|v| v.state);
                        if let Some(TxState::Included { height } | TxState::Failed { height, .. }) =
                            state
                        {
                            at = Some(height);
                            break;
                        }
                    }
                    let Some(height) = at else { continue };
                    committed += 1;
                    for i in &live {
                        let b = self.rt.block_on(self.client(*i)?.block(height));
                        match b {
                            Ok(b) if b.txs.contains(hash) => {}
                            Ok(_) => bail!("tx {hash} is not in node {i}'s block {height}"),
                            Err(e) => bail!("node {i} lacks block {height} holding tx {hash}: {e}"),
                        }
                    }
                }
                if committed == 0 {
                    bail!(
                        "none of the {} load transactions was committed",
                        self.sent.len()
                    );
                }
                self.log.push(format!(
                    "{committed} of {} load transactions committed, on every live node",
                    self.sent.len()
                ));
                Ok(())
            }
            Check::Stalled { duration, on } => {
                let targets = self.select(on)?;
                let before: Vec<Option<u64>> = targets.iter().map(|i| self.height(*i)).collect();
                std::thread::sleep(*duration);
                let after: Vec<Option<u64>> = targets.iter().map(|i| self.height(*i)).collect();
                // One height may still finish from votes already in flight at the cut.
                for ((i, b), a) in targets.iter().zip(&before).zip(&after) {
                    if let (Some(b), Some(a)) = (b, a) {
                        if *a > b + 1 {
                            bail!("node {i} went from height {b} to {a} while it should stall");
                        }
                    }
                }
                Ok(())
            }
            Check::Metric { on, name, min } => {
                let mut values = Vec::new();
                for i in self.select(on)? {
                    let text = self.rt.block_on(self.client(i)?.metrics())?;
                    let value: u64 = text
                        .lines()
                        .find_map(|l| {
                            let (n, v) = l.split_once(' ')?;
                            (n == name).then(|| v.trim().parse().ok()).flatten()
                        })
                        .ok_or_else(|| anyhow!("node {i} reports no metric {name}"))?;
                    values.push((i, value));
                }
                let sum: u64 = values.iter().map(|(_, v)| v).sum();
                if sum < *min {
                    bail!(
                        "{name} on (node, value) {values:?}: {sum} in all, expected at least {min}"
                    );
                }
                self.log
                    .push(format!("{name} on (node, value): {values:?}"));
                Ok(())
            }
        }
    }

    /// Stops the load, every process and every relay.
    pub fn shutdown(&mut self) {
        self.load_stop();
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        self.stop_relays.store(true, Ordering::Relaxed);
        for r in self.relays.values().flatten() {
            r.set_open(false);
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Sends transfers from dev accounts `0..accounts` at one per `period`, each
/// account to its own node (the next live one when that fails), and records every
/// transaction a node accepted.
async fn run_load(
    nodes: Vec<NodeSpec>,
    accounts: usize,
    period: Duration,
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Hash>>>,
) {
    let clients: Vec<Client> = nodes
        .iter()
        .filter_map(|n| Client::new(&n.url()).ok())
        .collect();
    if clients.is_empty() {
        return;
    }
    let keys: Vec<_> = (0..accounts).map(deed_node::dev::dev_account).collect();
    // Per account: the node it sends to and its next nonce (None: ask the node).
    let mut route: Vec<(usize, Option<u64>)> =
        (0..accounts).map(|a| (a % clients.len(), None)).collect();
    let mut tick = tokio::time::interval(period);
    let mut k = 0usize;
    let mut dead: HashSet<usize> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let a = k % accounts;
        k += 1;
        let (node, nonce) = route[a];
        let client = &clients[node];
        let nonce = match nonce {
            Some(n) => n,
            None => match client.account(&keys[a].address()).await {
                Ok(v) => v.nonce,
                Err(_) => {
                    dead.insert(node);
                    route[a] = (next_node(node, clients.len(), &dead), None);
                    continue;
                }
            },
        };
        let tx = Transaction {
            chain_id: testnet::TESTNET_CHAIN_ID,
            nonce,
            fee: deed_node::dev::dev_params().min_tx_fee,
            action: Action::Transfer {
                to: keys[(a + 1) % accounts].address(),
                amount: 1,
            },
        };
        let Ok(stx) = tx.sign(&keys[a]) else { continue };
        match client.submit(&stx).await {
            Ok(hash) => {
                dead.remove(&node);
                sent.lock().unwrap_or_else(|e| e.into_inner()).push(hash);
                route[a] = (node, Some(nonce + 1));
            }
            Err(deed_client::ClientError::Api { .. }) => {
                // A nonce this node no longer expects: ask it again.
                route[a] = (node, None);
            }
            Err(_) => {
                dead.insert(node);
                route[a] = (next_node(node, clients.len(), &dead), None);
            }
        }
    }
}

fn next_node(from: usize, n: usize, dead: &HashSet<usize>) -> usize {
    (1..=n)
        .map(|d| (from + d) % n)
        .find(|i| !dead.contains(i))
        .unwrap_or((from + 1) % n)
}
