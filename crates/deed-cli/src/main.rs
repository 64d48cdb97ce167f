//! The `deed` command-line tool. Thin: argument parsing and output formatting over the
//! library crates.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use deed_runtime::timeline::{HashedOn, Span};
use deed_runtime::{Ctx, KernelMode, Limits, Model, RunOptions, Timeline, TimelineSummary};
use deed_types::Tensor;
use serde_json::json;

use deed_cli::{commands, conformance, tensor_io};

/// Deed: publish, own and run AI models whose every result can be checked.
#[derive(Parser, Debug)]
#[command(name = "deed", version, about, propagate_version = true)]
struct Cli {
    /// Print one JSON object instead of human-readable text.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten, next_help_heading = "Node")]
    node: commands::NodeArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an ONNX model locally with the canonical runtime.
    Run(RunArgs),
    /// Run the ONNX backend node tests in DIR and report conformance.
    Conformance(ConformanceArgs),
    #[command(flatten)]
    Node(commands::NodeCommand),
    /// Run a whole dev network in this process (every role, funded dev accounts).
    Dev(DevArgs),
    /// Create a node's home directory: fresh keys, a configuration, and a genesis
    /// in which this node is the only validator.
    Init(InitArgs),
    /// Run a node of a network from its home directory (see `deed init`).
    #[command(name = "node")]
    RunNode(RunNodeArgs),
    /// Start or stop a network of separate node processes on this machine.
    #[command(subcommand)]
    Testnet(TestnetCmd),
}

#[derive(Args, Debug)]
struct InitArgs {
    /// The home directory to create.
    #[arg(long, value_name = "DIR")]
    home: PathBuf,
    /// The chain id of the genesis written.
    #[arg(long, default_value_t = 1)]
    chain_id: u64,
    /// HTTP API address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8545")]
    http: std::net::SocketAddr,
    /// Consensus p2p address (TCP); the node network (gossip) takes the next port.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:26656")]
    p2p: std::net::SocketAddr,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct RunNodeArgs {
    /// The node's configuration file (`genesis.json` and `node_keys.json` are read
    /// from the same directory).
    #[arg(long, value_name = "FILE", conflicts_with = "home")]
    config: Option<PathBuf>,
    /// The node's home directory (the same as `--config HOME/config.toml`).
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Inject a fault, as for `deed dev` (builds with the `fault` feature only).
    #[arg(long, value_name = "FAULT", hide = !deed_node::fault::COMPILED)]
    fault: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum TestnetCmd {
    /// Write a genesis and configurations, start every node and print their
    /// endpoints and the funded keys. The nodes keep running until `deed testnet stop`.
    Start {
        /// Validator processes.
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Executor processes.
        #[arg(long, default_value_t = 0)]
        executors: usize,
        /// Watcher processes.
        #[arg(long, default_value_t = 0)]
        watchers: usize,
        /// Where the nodes' homes go.
        #[arg(long, value_name = "DIR", default_value = "deed-testnet")]
        dir: PathBuf,
        /// The first node's IP; node i listens on this plus i.
        #[arg(long, value_name = "IP", default_value = "127.0.0.10")]
        ip: std::net::Ipv4Addr,
        /// Put every node on --ip (for systems that only route 127.0.0.1).
        #[arg(long)]
        same_ip: bool,
        /// Node i's consensus port is this plus i, its HTTP port this plus 100 plus i,
        /// its gossip port this plus 200 plus i.
        #[arg(long, default_value_t = 26_000)]
        base_port: u16,
    },
    /// Stop the testnet in DIR.
    Stop {
        /// The testnet's directory.
        #[arg(long, value_name = "DIR", default_value = "deed-testnet")]
        dir: PathBuf,
    },
}

#[derive(Args, Debug)]
struct DevArgs {
    /// Where state and blobs live (default: the user's data dir, `deed/dev`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// A TOML configuration file (also `DEED_CONFIG`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Executor accounts the node runs (for `replicated:K` jobs up to that K).
    #[arg(long, value_name = "N", default_value_t = deed_node::dev::DEV_EXECUTORS as u8,
          value_parser = clap::value_parser!(u8).range(1..=16))]
    executors: u8,
    /// Inject a fault, for tests of the verification game: corrupt-step=N (or
    /// corrupt-step=N@K for the node's K-th executor only, from 0), corrupt-random,
    /// false-challenge or silent (repeatable). Only builds with the `fault` feature
    /// accept it.
    #[arg(long, value_name = "FAULT", hide = !deed_node::fault::COMPILED)]
    fault: Vec<String>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The ONNX model file.
    model: PathBuf,
    /// An input as NAME=PATH (.npy, .pb or .json; a .bin or image file gives its bytes);
    /// PATH alone for a single-input model.
    #[arg(long = "input", short = 'i', value_name = "NAME=PATH")]
    inputs: Vec<String>,
    /// Kernel threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Time N runs after a warm-up (a quarter second of runs) and report median and
    /// minimum latency.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Write each output as NAME.npy into this folder.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Refuse to run if the planned cost exceeds this many units.
    #[arg(long)]
    budget: Option<u64>,
    /// Skip hashing the trace (measures the hashing overhead; no trace root).
    #[arg(long)]
    no_trace: bool,
    /// Hash each step on the executing thread between steps instead of on the
    /// process's hashing thread while later steps compute (same trace root).
    #[arg(long, conflicts_with = "no_trace")]
    hash_inline: bool,
    /// Also report where the runs' time went: in the steps' kernels, between steps,
    /// and after the last step until the trace was complete, and the hashing done on
    /// the hashing thread and on the run's (each figure's median over the timed runs,
    /// and the fastest run's figures); with --json also each step's kernel and
    /// hashing times.
    #[arg(long)]
    timeline: bool,
    /// With --repeat: also time as many runs without the trace, alternating with the
    /// traced ones in this process (each pair in turn order), and report what the
    /// trace costs by the minima, by the medians and as the median of the pairs'
    /// ratios. Interleaving puts both kinds of run under the same load and the same
    /// placement of threads on cores, which separate processes do not share.
    #[arg(long, conflicts_with = "no_trace")]
    trace_cost: bool,
    /// Kernel implementations: `fast` or `reference` (default: `DEED_KERNELS`, else fast).
    #[arg(long, value_parser = ["fast", "reference"])]
    kernels: Option<String>,
    #[command(flatten, next_help_heading = "Limits")]
    limits: LimitArgs,
}

#[derive(Args, Debug)]
struct LimitArgs {
    /// Largest model accepted, in bytes.
    #[arg(long)]
    max_model_bytes: Option<usize>,
    /// Most elements in any one tensor.
    #[arg(long)]
    max_tensor_elements: Option<u64>,
    /// Most bytes of intermediate tensors alive at once.
    #[arg(long)]
    max_activation_bytes: Option<u64>,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        let mut l = Limits::default();
        if let Some(v) = self.max_model_bytes {
            l.max_model_bytes = v;
        }
        if let Some(v) = self.max_tensor_elements {
            l.max_tensor_elements = v;
        }
        if let Some(v) = self.max_activation_bytes {
            l.max_activation_bytes = v;
        }
        l
    }
}

#[derive(Args, Debug)]
struct ConformanceArgs {
    /// Folder written by `onnx-node-tests.py`.
    dir: PathBuf,
    /// Only cases whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Print every case's verdict.
    #[arg(long, short)]
    verbose: bool,
    /// Exit with an error when fewer than this many cases pass.
    #[arg(long)]
    floor: Option<usize>,
    /// Also run every data set that matched with 3 kernel threads and with the
    /// reference kernels, and fail the case unless all runs give the same trace root.
    #[arg(long)]
    determinism: bool,
}

/// mimalloc rather than the system allocator. A traced run hands each step's outputs to
/// the hashing thread, which often frees them; with glibc's malloc that made the heap
/// grow and shrink on every run (the transformer benchmark took about 480 page faults
/// per run, against 4 untraced). With mimalloc the faults are gone, and untraced runs
/// were faster too (transformer 2.02 to 1.84 ms, mlp_int8 0.159 to 0.125 ms, minima at
/// one thread).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process, for the commands that talk to a
/// node and run no model (`deed infer`, `deed blob`, `deed model`…).
///
/// mimalloc asks for huge pages on its arenas, and each thread's first allocations
/// then fault in a whole 2 MiB page, zeroed. That pays off in a long run over large
/// tensors (cnn untraced at one thread: 1.51 ms with them, 1.58–1.64 ms without),
/// but a command that sends one request and exits only pays for the zeroing: about
/// 2 ms of a `deed infer --mode none` process's 8–10 ms of CPU on a 2-core EPYC.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // Best effort: a kernel without the flag leaves huge pages as they were.
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    if let Command::Node(c) = &cli.command {
        if !matches!(c, commands::NodeCommand::Quickstart(_)) {
            without_huge_pages();
        }
    }
    let result = match cli.command {
        Command::Run(a) => cmd_run(a, json),
        Command::Conformance(a) => cmd_conformance(a, json),
        Command::Node(c) => {
            commands::run(c, cli.node, json).map(|out| ExitCode::from(commands::print(&out, json)))
        }
        Command::Dev(a) => cmd_dev(a),
        Command::Init(a) => cmd_init(a, json),
        Command::RunNode(a) => cmd_node(a),
        Command::Testnet(c) => cmd_testnet(c, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if json {
                let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
                println!("{}", json!({ "error": chain.join(": ") }));
            } else {
                eprintln!("error: {e}");
                for cause in e.chain().skip(1) {
                    eprintln!("  caused by: {cause}");
                }
            }
            ExitCode::from(commands::exit_code(&e))
        }
    }
}

/// The default log filter of a chain with one validator (every `deed dev`): its
/// consensus messages have no other validator to reach, and the consensus network
/// reports each one it publishes to nobody as an error, once or more per block.
const ALONE: &str = "warn,informalsystems_malachitebft_network=off";

fn init_logs(default: &str) {
    // The node's own log on stderr; `DEED_LOG` (tracing's filter syntax, e.g.
    // `deed_node=debug`) for more.
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn cmd_init(a: InitArgs, json: bool) -> Result<ExitCode> {
    let out = deed_node::operator::init(&deed_node::operator::InitOptions {
        home: a.home.clone(),
        chain_id: a.chain_id,
        http: a.http,
        p2p: a.p2p,
        force: a.force,
    })?;
    let entry = serde_json::to_value(&out.validator)?;
    let bootstrap = serde_json::to_value(out.bootstrap)?;
    if json {
        println!(
            "{}",
            json!({
                "config": out.config,
                "validator": entry,
                "bootstrap": bootstrap,
                "accounts": out.accounts.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            })
        );
    } else {
        println!("wrote {}", out.config.display());
        println!("validator entry for a shared genesis.json:\n  {entry}");
        println!("bootstrap entry for it (with the address others reach this machine at):\n  {bootstrap}");
        println!(
            "accounts (funded in the genesis written): validator {}, executor {}, watcher {}",
            out.accounts[0], out.accounts[1], out.accounts[2]
        );
        println!("run it: deed node --config {}", out.config.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_node(a: RunNodeArgs) -> Result<ExitCode> {
    let config = match (a.config, a.home) {
        (Some(c), _) => c,
        (None, Some(h)) => h.join(deed_node::operator::CONFIG_FILE),
        (None, None) => bail!("give --config FILE or --home DIR (see `deed init`)"),
    };
    let mut files = deed_node::operator::load_home(&config, &Default::default())?;
    files.config.faults = deed_node::fault::Faults::parse(&a.fault)?;
    init_logs(if files.genesis.validators.len() == 1 {
        ALONE
    } else {
        "warn"
    });
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(deed_node::operator::run_node(files))?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_testnet(c: TestnetCmd, json: bool) -> Result<ExitCode> {
    use deed_cli::testnet;
    match c {
        TestnetCmd::Start {
            validators,
            executors,
            watchers,
            dir,
            ip,
            same_ip,
            base_port,
        } => {
            let exe = std::env::current_exe().context("cannot find this program")?;
            let opts = testnet::Options {
                validators,
                executors,
                watchers,
                dir: dir.clone(),
                ip,
                same_ip,
                base_port,
                ..testnet::Options::default()
            };
            let layout = testnet::start(&exe, &opts)?;
            let funded: Vec<(String, String)> = (0..deed_node::dev::DEV_ACCOUNTS)
                .map(|i| {
                    let k = deed_node::dev::dev_account(i);
                    (k.address().to_string(), hex::encode(k.to_bytes()))
                })
                .collect();
            if json {
                println!(
                    "{}",
                    json!({ "chain_id": layout.chain_id, "nodes": layout.nodes, "funded": funded })
                );
            } else {
                println!("testnet of chain {} in {}", layout.chain_id, dir.display());
                for n in &layout.nodes {
                    println!(
                        "  node {}  {:<9}  api {}  p2p {}  log {}",
                        n.index,
                        format!("{:?}", n.role).to_lowercase(),
                        n.url(),
                        n.p2p,
                        n.home.join("node.log").display()
                    );
                }
                println!("funded accounts (keys are public, test only):");
                for (a, k) in &funded {
                    println!("  {a}  0x{k}");
                }
                println!("stop it: deed testnet stop --dir {}", dir.display());
            }
        }
        TestnetCmd::Stop { dir } => {
            let n = testnet::stop(&dir)?;
            if json {
                println!("{}", json!({ "stopped": n }));
            } else {
                println!("stopped {n} node processes");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_dev(a: DevArgs) -> Result<ExitCode> {
    let overrides = deed_node::Overrides {
        config: a.config,
        data_dir: a.data_dir,
        http: a.http,
        ..Default::default()
    };
    let mut cfg = deed_node::Config::load_from_process(deed_node::dev::dev_config(), &overrides)?;
    cfg.faults = deed_node::fault::Faults::parse(&a.fault)?;
    init_logs(ALONE);
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(deed_node::run_dev(cfg, usize::from(a.executors)))?;
    Ok(ExitCode::SUCCESS)
}

fn parse_inputs(model: &Model, specs: &[String]) -> Result<Vec<(String, Tensor)>> {
    let required: Vec<&str> = model.required_inputs().map(|v| v.name.as_str()).collect();
    let mut out = Vec::new();
    for spec in specs {
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) if !n.is_empty() => (n.to_owned(), p),
            _ if required.len() == 1 => (required[0].to_owned(), spec.as_str()),
            _ => bail!(
                "input `{spec}` must be NAME=PATH (the model's inputs: {})",
                required.join(", ")
            ),
        };
        let t = tensor_io::read_tensor(Path::new(path))?;
        out.push((name, t));
    }
    for r in &required {
        if !out.iter().any(|(n, _)| n == r) {
            let info = model
                .inputs
                .iter()
                .find(|v| v.name == *r)
                .map(|v| {
                    format!(
                        "{} {}",
                        v.dtype.map(|d| d.name()).unwrap_or("?"),
                        v.shape_text()
                    )
                })
                .unwrap_or_default();
            bail!("missing input `{r}` ({info}): pass --input {r}=PATH");
        }
    }
    Ok(out)
}

/// How long `deed run --repeat` runs the model before it starts timing.
const WARM_UP: std::time::Duration = std::time::Duration::from_millis(250);

fn cmd_run(a: RunArgs, json: bool) -> Result<ExitCode> {
    let limits = a.limits.limits();
    let mode = match a.kernels.as_deref() {
        Some("reference") => KernelMode::Reference,
        Some(_) => KernelMode::Fast,
        None => KernelMode::from_env(),
    };
    let t0 = Instant::now();
    let bytes =
        std::fs::read(&a.model).with_context(|| format!("cannot read {}", a.model.display()))?;
    let model = Model::load(&bytes, &limits)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let inputs = parse_inputs(&model, &a.inputs)?;
    let t1 = Instant::now();
    let plan = model.plan(&inputs, &limits)?;
    let plan_ms = t1.elapsed().as_secs_f64() * 1e3;
    let opts = RunOptions {
        mode,
        threads: a.threads as usize,
        budget: a.budget,
        trace: !a.no_trace,
        hash_thread: !a.hash_inline,
        limits: limits.clone(),
        timeline: a.timeline,
        ..RunOptions::default()
    };
    if a.trace_cost && a.repeat < 2 {
        bail!("--trace-cost compares timed runs: give --repeat N with N of at least 2");
    }
    // The untraced runs of `--trace-cost`, timed between the traced ones.
    let untraced = a.trace_cost.then(|| RunOptions {
        trace: false,
        timeline: false,
        ..opts.clone()
    });
    let ctx = Ctx::new(mode, a.threads as usize);
    let mut out = plan.execute(&inputs, &ctx, &opts)?;
    let mut times = Vec::new();
    let mut untraced_times = Vec::new();
    let mut timelines = Vec::new();
    let mut step_times = StepTimes::default();
    // The fastest timed run's spans, for `timeline_us.fastest_run`.
    let mut fastest_run: Option<Timeline> = None;
    if a.repeat > 1 {
        // Warm up for a while, not one run: caches, page faults, and the operating
        // system spreading the kernel threads over the cores all settle within it.
        let warm = Instant::now();
        while warm.elapsed() < WARM_UP {
            out = plan.execute(&inputs, &ctx, &opts)?;
            if let Some(u) = &untraced {
                plan.execute(&inputs, &ctx, u)?;
            }
        }
        let mut time_untraced = || -> Result<()> {
            if let Some(u) = &untraced {
                let t = Instant::now();
                plan.execute(&inputs, &ctx, u)?;
                untraced_times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok(())
        };
        for i in 0..a.repeat {
            // Each kind of run goes first in every other pair, so that neither always
            // finds what the other left in the caches.
            let untraced_first = i.is_multiple_of(2);
            if untraced_first {
                time_untraced()?;
            }
            let t = Instant::now();
            out = plan.execute(&inputs, &ctx, &opts)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            if !untraced_first {
                time_untraced()?;
            }
            timelines.extend(out.timeline.as_ref().map(|t| t.summary()));
            if let Some(t) = &out.timeline {
                step_times.add(t);
                if fastest_run
                    .as_ref()
                    .is_none_or(|f| t.trace_done_us < f.trace_done_us)
                {
                    fastest_run = Some(t.clone());
                }
            }
        }
    }
    let trace_cost = TraceCost::of(&times, &untraced_times);
    times.sort_by(|x, y| x.total_cmp(y));
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, t) in &out.outputs {
            tensor_io::write_npy(&dir.join(format!("{}.npy", sanitize(name))), t)?;
        }
    }
    let latency = (!times.is_empty()).then(|| (times[times.len() / 2], times[0]));
    if timelines.is_empty() {
        timelines.extend(out.timeline.as_ref().map(|t| t.summary()));
        if let Some(t) = &out.timeline {
            step_times.add(t);
        }
        fastest_run = out.timeline.clone();
    }
    let timeline = TimelineSummary::median(&timelines);
    let fastest = timelines
        .iter()
        .min_by(|a, b| a.total_us.total_cmp(&b.total_us))
        .copied();
    let trace_root = (!a.no_trace).then(|| out.trace.root().to_string());
    if json {
        let outputs: Vec<_> = out
            .outputs
            .iter()
            .map(|(n, t)| {
                json!({
                    "name": n, "dtype": t.dtype().name(), "shape": t.shape(),
                    "hash": t.hash().to_string(), "first": tensor_io::preview_json(t, 8),
                })
            })
            .collect();
        let mut j = json!({
            "model": model.hash.to_string(),
            "outputs": outputs,
            "trace_root": trace_root,
            "steps": out.trace.len(),
            "cost": out.cost,
            "peak_activation_bytes": plan.peak_activation_bytes(),
            "threads": a.threads,
            "kernels": if mode == KernelMode::Reference { "reference" } else { "fast" },
            "load_ms": load_ms,
            "plan_ms": plan_ms,
        });
        if let Some((median, min)) = latency {
            j["latency_ms"] = json!({ "median": median, "min": min, "runs": a.repeat });
        }
        if let Some(c) = &trace_cost {
            j["trace_cost"] = json!({
                "untraced_latency_ms": {
                    "median": c.untraced_median,
                    "min": c.untraced_min,
                    "runs": untraced_times.len(),
                },
                "by_min": c.by_min,
                "by_median": c.by_median,
                "paired_median": c.paired_median,
            });
        }
        if let (Some(median), Some(fastest)) = (timeline, fastest) {
            let figures = |t: TimelineSummary| {
                json!({
                    "total": t.total_us,
                    "steps": t.steps_us,
                    "between_steps": t.between_us,
                    "tail": t.tail_us,
                    "hash_thread": t.hash_thread_us,
                    "hash_run_thread": t.run_thread_us,
                })
            };
            j["timeline_us"] = json!({
                "runs": timelines.len(),
                "median": figures(median),
                "fastest": figures(fastest),
                "steps": step_times.json(&model),
                "fastest_run": fastest_run.as_ref().map(spans_json),
            });
        }
        println!("{j}");
    } else {
        for (n, t) in &out.outputs {
            println!(
                "output  {n}  {}  {:?}  {}",
                t.dtype(),
                t.shape(),
                tensor_io::preview(t, 6)
            );
        }
        if let Some(r) = &trace_root {
            println!("trace   {r}  ({} steps)", out.trace.len());
        }
        println!("cost    {} units", out.cost);
        if let Some((median, min)) = latency {
            println!(
                "latency median {median:.3} ms, min {min:.3} ms over {} runs (load {load_ms:.1} ms excluded)",
                a.repeat
            );
        }
        if let Some(c) = &trace_cost {
            println!(
                "untraced median {:.3} ms, min {:.3} ms, in turn with those: the trace costs {:+.1}% by the minima, {:+.1}% by the medians, {:+.1}% by the median of the pairs",
                c.untraced_median,
                c.untraced_min,
                100.0 * c.by_min,
                100.0 * c.by_median,
                100.0 * c.paired_median,
            );
        }
        for (label, t) in [("median", timeline), ("fastest", fastest)] {
            let Some(t) = t else { continue };
            println!(
                "timeline {label:<7} {:.1} us: steps {:.1}, between steps {:.1}, tail {:.1}; hashed {:.1} on other threads, {:.1} here",
                t.total_us,
                t.steps_us,
                t.between_us,
                t.tail_us,
                t.hash_thread_us,
                t.run_thread_us,
            );
        }
        if let Some(dir) = &a.out {
            println!("wrote   {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What the trace costs, from traced and untraced runs timed in turn
/// (`deed run --trace-cost`): fractions of the untraced time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TraceCost {
    untraced_median: f64,
    untraced_min: f64,
    /// Least traced time over least untraced time, less one.
    by_min: f64,
    /// Median traced time over median untraced time, less one.
    by_median: f64,
    /// The median of each pair's traced over untraced time, less one.
    paired_median: f64,
}

impl TraceCost {
    /// From traced and untraced times (ms) in the order they were taken, pair by
    /// pair; `None` without a pair or with a time that is not positive.
    fn of(traced: &[f64], untraced: &[f64]) -> Option<TraceCost> {
        if traced.is_empty()
            || traced.len() != untraced.len()
            || traced
                .iter()
                .chain(untraced)
                .any(|&t| t.is_nan() || t <= 0.0)
        {
            return None;
        }
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(|x, y| x.total_cmp(y));
            v[v.len() / 2]
        };
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let pairs: Vec<f64> = traced.iter().zip(untraced).map(|(t, u)| t / u).collect();
        Some(TraceCost {
            untraced_median: median(untraced),
            untraced_min: min(untraced),
            by_min: min(traced) / min(untraced) - 1.0,
            by_median: median(traced) / median(untraced) - 1.0,
            paired_median: median(&pairs) - 1.0,
        })
    }
}

/// One run's spans, µs from its start: each step's kernel, each step's hashing and the
/// thread it ran on, when the run's thread had computed every step, and when the run
/// was done.
fn spans_json(t: &Timeline) -> serde_json::Value {
    let span = |s: &Span| json!({ "step": s.step, "start": s.start_us, "end": s.end_us });
    let hashes: Vec<_> = t
        .hashes
        .iter()
        .map(|(s, on)| {
            let mut j = span(s);
            j["on"] = json!(match on {
                HashedOn::HashThread => "hash_thread",
                HashedOn::RunThread => "run_thread",
            });
            j
        })
        .collect();
    json!({
        "compute": t.compute.iter().map(span).collect::<Vec<_>>(),
        "hashes": hashes,
        "steps_done": t.steps_done_us,
        "trace_done": t.trace_done_us,
    })
}

/// Each step's kernel and hashing times over the timed runs of `deed run --timeline`.
#[derive(Default)]
struct StepTimes {
    compute: std::collections::BTreeMap<usize, Vec<f64>>,
    hash: std::collections::BTreeMap<usize, Vec<f64>>,
}

impl StepTimes {
    fn add(&mut self, t: &deed_runtime::Timeline) {
        for s in &t.compute {
            self.compute.entry(s.step).or_default().push(s.len_us());
        }
        for (s, _) in &t.hashes {
            self.hash.entry(s.step).or_default().push(s.len_us());
        }
    }

    /// Per computed step: its operator, and the minimum and median of its kernel and
    /// hashing times in µs (hashing absent for a step the trace did not hash).
    fn json(&self, model: &Model) -> serde_json::Value {
        fn min_median(v: &[f64]) -> (f64, f64) {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            (v[0], v[v.len() / 2])
        }
        let steps: Vec<_> = self
            .compute
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(&step, v)| {
                let (min, median) = min_median(v);
                let mut j = json!({
                    "step": step,
                    "op": model.nodes.get(step).map(|n| n.op_type.as_str()),
                    "compute_min": min,
                    "compute_median": median,
                });
                if let Some(h) = self.hash.get(&step).filter(|h| !h.is_empty()) {
                    let (min, median) = min_median(h);
                    j["hash_min"] = json!(min);
                    j["hash_median"] = json!(median);
                }
                j
            })
            .collect();
        json!(steps)
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn cmd_conformance(a: ConformanceArgs, json: bool) -> Result<ExitCode> {
    let mut dirs = conformance::cases(&a.dir)?;
    if let Some(f) = &a.filter {
        dirs.retain(|d| {
            d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(f.as_str()))
        });
    }
    if dirs.is_empty() {
        bail!(
            "no test cases (folders with model.onnx) in {}",
            a.dir.display()
        );
    }
    let opts = RunOptions::default();
    let also = if a.determinism {
        conformance::determinism_runs(&opts)
    } else {
        Vec::new()
    };
    let bar = indicatif::ProgressBar::new(dirs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .map_err(|e| anyhow!("{e}"))?,
    );
    let mut results = Vec::new();
    for d in &dirs {
        let name = d
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_owned();
        bar.set_message(name.clone());
        let verdict = conformance::run_case(d, &opts, &also);
        if a.verbose && !json {
            bar.suspend(|| match &verdict {
                conformance::Verdict::Passed => println!("pass         {name}"),
                conformance::Verdict::Failed(w) => println!("FAIL         {name}: {w}"),
                conformance::Verdict::Unsupported(w) => println!("unsupported  {name}: {w}"),
                conformance::Verdict::NoData => println!("no data      {name}"),
            });
        }
        results.push(conformance::CaseResult { name, verdict });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let passed = results
        .iter()
        .filter(|r| r.verdict == conformance::Verdict::Passed)
        .count();
    let failed = results
        .iter()
        .filter(|r| matches!(r.verdict, conformance::Verdict::Failed(_)))
        .count();
    let no_data = results
        .iter()
        .filter(|r| r.verdict == conformance::Verdict::NoData)
        .count();
    let unsupported = results.len() - passed - failed - no_data;
    if json {
        println!(
            "{}",
            json!({ "passed": passed, "failed": failed, "unsupported": unsupported, "no_data": no_data, "cases": results })
        );
    } else {
        if !a.verbose {
            for r in &results {
                if let conformance::Verdict::Failed(w) = &r.verdict {
                    println!("FAIL  {}: {w}", r.name);
                }
            }
        }
        if no_data > 0 {
            println!("{no_data} cases have no test data in the suite and are not counted");
        }
        println!("{passed} passed, {failed} failed, {unsupported} unsupported");
    }
    if let Some(floor) = a.floor {
        if passed < floor {
            eprintln!("error: {passed} cases passed, below the floor of {floor}");
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::TraceCost;

    #[test]
    fn trace_cost_compares_minima_medians_and_pairs() {
        // Pairs (traced, untraced): the minima come from different pairs, and the
        // median pair ratio is not the ratio of the medians.
        let traced = [11.0, 13.0, 12.0];
        let untraced = [10.0, 10.0, 12.0];
        let c = TraceCost::of(&traced, &untraced).unwrap();
        assert_eq!(c.untraced_min, 10.0);
        assert_eq!(c.untraced_median, 10.0);
        assert!((c.by_min - 0.1).abs() < 1e-12, "{c:?}");
        assert!((c.by_median - 0.2).abs() < 1e-12, "{c:?}");
        // Pair ratios 1.1, 1.3, 1.0: their median is 1.1.
        assert!((c.paired_median - 0.1).abs() < 1e-12, "{c:?}");
    }

    #[test]
    fn trace_cost_needs_whole_pairs_of_positive_times() {
        assert_eq!(TraceCost::of(&[], &[]), None);
        assert_eq!(TraceCost::of(&[1.0, 2.0], &[1.0]), None);
        assert_eq!(TraceCost::of(&[1.0], &[0.0]), None);
        assert_eq!(TraceCost::of(&[f64::NAN], &[1.0]), None);
    }
}
