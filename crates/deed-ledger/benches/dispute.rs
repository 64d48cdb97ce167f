//! The dispute game on the benchmark models: what a dispute over a real model costs.
//!
//!     cargo bench -p deed-ledger --bench dispute -- [MODELS_DIR]
//!
//! MODELS_DIR (default `target/bench-models`, relative paths taken from the
//! repository root) is what `scripts/gen_models.py DIR` writes: one folder per model
//! with `model.onnx` and one `input_<name>.npy` per graph input.
//!
//! Each model is run honestly, keeping every step's outputs, and the plain traced run
//! is timed. Then, for several corrupted steps (the first, middle and last computed
//! step and a few random ones) the model runs once more with a fault injected there,
//! so the faulty trace carries the error forward as a real faulty executor's would,
//! and two disputes are played through signed transactions in blocks: a cheating
//! executor challenged by an honest watcher, and an honest executor challenged by a
//! false one. Both sides move with the party module from their own trace and kept
//! outputs; the production referee, timed, decides the step they disagree on.
//!
//! Per dispute it measures the bisection rounds (aborting when they exceed
//! ⌈log₂ n⌉ + 1), the blocks from the challenge to the verdict, the encoded bytes of
//! the dispute's signed transactions (challenge, reveals, responses, referee move,
//! staged in several transactions when the step's inputs are large) and the
//! referee's time against a whole run. A referee move the ledger refuses is
//! reported, and the game is then played out to its deadline. The table goes to stdout and the same figures, with
//! every dispute, to `target/dispute-report.json`.

#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Chain;
use deed_ledger::party::{self, JobInputs, Move};
use deed_ledger::trace::Trace;
use deed_ledger::{DisputePhase, Params, Referee, RefereeError, RuntimeReferee, StepInput};
use deed_runtime::{node_step_hash, Limits, Model, RunOptions, RunOutput};
use deed_types::tx::limits::{MAX_INLINE, MAX_TX_BYTES};
use deed_types::*;
use serde_json::json;

const OWNER: usize = 0;
const USER: usize = 1;
const WATCHER: usize = 2;
const EXEC: usize = 3;
const STAKE: u128 = 10_000;
const FEE: u128 = 100;
const ROYALTY: u128 = 10;
/// Timed plain runs per model, after one warm-up; the median is reported.
const RUNS: usize = 5;
/// Random corrupted steps per model, besides the first, middle and last.
const RANDOM_STEPS: usize = 3;

/// splitmix64: the seeded choice of random corrupted steps.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

fn ceil_log2(n: usize) -> u32 {
    usize::BITS - (n.max(1) - 1).leading_zeros()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------
// Models and inputs.

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A `.npy` file (C order; f32, i64, i32, u8 or i8) as a tensor.
fn read_npy(path: &Path) -> Tensor {
    let bad = |why: &dyn std::fmt::Display| -> ! { panic!("{}: {why}", path.display()) };
    let file = std::fs::File::open(path).unwrap_or_else(|e| bad(&e));
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).unwrap_or_else(|e| bad(&e));
    if npy.order() != npyz::Order::C {
        bad(&"Fortran order");
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = npy.dtype().descr();
    let t = match descr.trim_matches('\'').trim_start_matches(['<', '|', '=']) {
        "f4" => Tensor::from_vec(shape, npy.into_vec::<f32>().unwrap_or_else(|e| bad(&e))),
        "i8" => Tensor::from_vec(shape, npy.into_vec::<i64>().unwrap_or_else(|e| bad(&e))),
        "i4" => Tensor::from_vec(shape, npy.into_vec::<i32>().unwrap_or_else(|e| bad(&e))),
        "u1" => Tensor::from_vec(shape, npy.into_vec::<u8>().unwrap_or_else(|e| bad(&e))),
        "i1" => Tensor::from_vec(shape, npy.into_vec::<i8>().unwrap_or_else(|e| bad(&e))),
        other => bad(&format!("unsupported dtype {other}")),
    };
    t.unwrap_or_else(|e| bad(&e))
}

/// A benchmark model: its bytes, graph inputs (job input order) and their values.
struct Case {
    name: String,
    model: Arc<Model>,
    manifest: Cid,
    names: Vec<String>,
    feeds: Vec<(String, Tensor)>,
    /// The job input blob: a borsh list of canonical tensor encodings.
    blob: Vec<u8>,
}

fn load(dir: &Path) -> Case {
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let model = Model::load(&bytes, &Limits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let names: Vec<String> = model.required_inputs().map(|v| v.name.clone()).collect();
    let feeds: Vec<(String, Tensor)> = names
        .iter()
        .map(|n| (n.clone(), read_npy(&dir.join(format!("input_{n}.npy")))))
        .collect();
    let blob = encoding::encode(&feeds.iter().map(|(_, t)| t.encode()).collect::<Vec<_>>());
    Case {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        manifest: Cid::of(&bytes),
        model: Arc::new(model),
        names,
        feeds,
        blob,
    }
}

/// A run's trace and every step's outputs, checked against the trace.
struct Side {
    trace: Trace,
    outs: Vec<Vec<Tensor>>,
    /// The hash of the run's outputs, as its receipt carries it.
    output: Hash,
}

fn side(out: RunOutput, n: usize) -> Side {
    let output = deed_runtime::trace::outputs_hash(
        &out.outputs
            .iter()
            .map(|(_, t)| t.clone())
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        out.kept.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    let outs = out
        .kept
        .into_iter()
        .map(|(s, outs)| {
            assert_eq!(out.trace.step_hash(s), Some(node_step_hash(s, &outs)));
            outs
        })
        .collect();
    Side {
        trace: out.trace,
        outs,
        output,
    }
}

fn keep_all(n: usize, corrupt_step: Option<usize>) -> RunOptions {
    RunOptions {
        keep_steps: (0..n).collect(),
        corrupt_step,
        ..RunOptions::default()
    }
}

// ---------------------------------------------------------------------------------
// The referee, timed.

/// The steps the referee re-executed, with the time each took.
type Calls = Rc<RefCell<Vec<(u64, Duration)>>>;

/// The production referee, recording each step it re-executes and its time.
struct Timed {
    inner: RuntimeReferee,
    calls: Calls,
}

impl Referee for Timed {
    fn execute_step(
        &self,
        model: &Cid,
        step: u64,
        inputs: &[StepInput],
    ) -> Result<Hash, RefereeError> {
        let t0 = Instant::now();
        let out = self.inner.execute_step(model, step, inputs);
        self.calls.borrow_mut().push((step, t0.elapsed()));
        out
    }
}

// ---------------------------------------------------------------------------------
// One dispute.

/// What one dispute cost and how it ended.
struct Game {
    /// The step the two traces first differ at.
    step: usize,
    /// How the corrupted step was chosen.
    pick: &'static str,
    cheating_executor: bool,
    rounds: u32,
    /// Blocks from the one holding the challenge to the one holding the verdict.
    blocks: u64,
    /// Encoded bytes of the dispute's signed transactions.
    bytes: usize,
    /// The largest of them.
    largest_tx: usize,
    /// Transactions of the referee move: more than one when its inputs were staged.
    referee_txs: usize,
    /// Referee time, when the referee ran.
    referee: Option<Duration>,
    /// Why the ledger refused the referee move, when it did.
    refused: Option<String>,
    /// A transaction was applied that is over the network's size limit, so it could
    /// not have travelled to a validator.
    oversize: bool,
    defender_won: bool,
    by_timeout: bool,
}

impl Game {
    /// The honest side won.
    fn correct(&self) -> bool {
        self.defender_won != self.cheating_executor
    }
}

/// A chain with the model published, one executor bonded, and the job requested and
/// answered with `def`'s trace; blocks are applied with the timed production referee.
fn chain(case: &Case, def: &Side) -> (Chain, Calls) {
    let mut c = Chain::with_params(EXEC + 1, 1_000_000, Params::default());
    let mut inner = RuntimeReferee::new();
    inner.insert(case.manifest, case.model.clone());
    let calls = Rc::new(RefCell::new(Vec::new()));
    c.custom = Some(Box::new(Timed {
        inner,
        calls: calls.clone(),
    }));
    c.ok(
        OWNER,
        Action::RegisterModel {
            name: case.name.clone(),
            description: String::new(),
            licence: Licence::Paid,
            price: ROYALTY,
            lineage: None,
        },
    );
    let m = ModelId(0);
    c.ok(
        OWNER,
        Action::PublishVersion {
            model: m,
            manifest: case.manifest,
            io_schema: String::new(),
            steps: case.model.num_steps() as u64,
            cost: 1,
            notes: String::new(),
        },
    );
    c.ok(
        EXEC,
        Action::Bond {
            amount: STAKE,
            endpoint: "http://e".into(),
            price: FEE,
            models: vec![m],
        },
    );
    c.ok(
        USER,
        Action::RequestJob {
            model: m,
            version: None,
            input: job_input(case),
            mode: Mode::Optimistic,
            max_fee: 1_000,
            executor: None,
        },
    );
    c.ok(
        EXEC,
        Action::SubmitReceipt {
            job: JobId(0),
            receipt: common::receipt_for(&def.trace, def.output),
        },
    );
    (c, calls)
}

/// As a client submits it: inline when it fits, else by CID.
fn job_input(case: &Case) -> JobInput {
    if case.blob.len() <= MAX_INLINE {
        JobInput::Inline(case.blob.clone())
    } else {
        JobInput::ByCid(Cid::of(&case.blob))
    }
}

/// Plays one optimistic dispute to its verdict: `honest` against `cheat`, the
/// cheater being the executor or the challenger.
fn dispute(
    case: &Case,
    honest: &Side,
    cheat: &Side,
    step: usize,
    pick: &'static str,
    cheating_executor: bool,
) -> Game {
    let n = case.model.trace_len();
    let (def, chal) = if cheating_executor {
        (cheat, honest)
    } else {
        (honest, cheat)
    };
    let (mut c, calls) = chain(case, def);
    let start = c.state.height();
    let mut game = Game {
        step,
        pick,
        cheating_executor,
        rounds: 0,
        blocks: 0,
        bytes: 0,
        largest_tx: 0,
        referee_txs: 0,
        referee: None,
        refused: None,
        oversize: false,
        defender_won: false,
        by_timeout: false,
    };
    let by_cid = matches!(job_input(case), JobInput::ByCid(_));
    let job = JobInputs {
        names: &case.names,
        blob: by_cid.then_some(&case.blob[..]),
    };
    let id = DisputeId(0);
    let mut actions = vec![Action::Challenge {
        job: JobId(0),
        trace_root: chal.trace.root(),
    }];
    let mut who = WATCHER;
    loop {
        let txs = c.sign_many(who, actions.clone());
        let sizes: Vec<usize> = txs.iter().map(|t| t.encode().len()).collect();
        let is_referee = actions.iter().any(|a| {
            matches!(
                a,
                Action::Referee { .. } | Action::StageReferee { .. } | Action::RefereeStaged { .. }
            )
        });
        if is_referee {
            game.referee_txs = txs.len();
        }
        let out = c.block(txs);
        for ((r, size), action) in out.results.iter().zip(&sizes).zip(&actions) {
            match &r.outcome {
                Ok(()) => {
                    game.bytes += size;
                    game.largest_tx = game.largest_tx.max(*size);
                    game.oversize |= *size > MAX_TX_BYTES;
                }
                Err(e) if is_referee => {
                    game.refused = Some(format!("{size} B transaction refused: {e}"));
                }
                Err(e) => panic!("{}: {action:?} failed at step {step}: {e}", case.name),
            }
        }
        if game.refused.is_some() {
            let deadline = c.state.dispute(id).unwrap().deadline;
            c.advance_to(deadline);
        }
        let d = c.state.dispute(id).unwrap().clone();
        if let DisputePhase::Resolved { defender_won } = d.phase {
            game.defender_won = defender_won;
            game.rounds = d.rounds;
            game.blocks = c.state.height() - start;
            game.by_timeout = game.refused.is_some();
            break;
        }
        let parties = [(EXEC, def), (WATCHER, chal)];
        let mut due: Vec<(usize, &Side, Move)> = parties
            .iter()
            .filter_map(|&(w, s)| {
                party::next_move(id, &d, &c.addr(w), &s.trace)
                    .unwrap()
                    .map(|m| (w, s, m))
            })
            .collect();
        assert_eq!(
            due.len(),
            1,
            "exactly one party owes a move in {:?}",
            d.phase
        );
        let (w, s, m) = due.pop().unwrap();
        who = w;
        actions = match m {
            Move::Act(a) => vec![a],
            Move::Referee { step: at } => {
                party::referee_moves(id, &case.model, &s.trace, at, job, |k| {
                    s.outs.get(k).cloned()
                })
                .unwrap()
            }
        };
    }
    let what = format!(
        "{} step {step} ({}, n={n}, rounds {})",
        case.name,
        if cheating_executor {
            "cheating executor"
        } else {
            "false challenger"
        },
        game.rounds
    );
    // The bound the bisection promises; anything above is a bug in the game.
    assert!(
        game.rounds <= ceil_log2(n) + 1,
        "{what}: more than ⌈log₂ n⌉ + 1 = {} rounds",
        ceil_log2(n) + 1
    );
    let calls = calls.borrow();
    if game.refused.is_none() {
        assert_eq!(
            calls.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [step as u64],
            "{what}: the referee runs the first differing step once"
        );
        assert!(game.correct(), "{what}: the honest side lost");
        game.referee = calls.first().map(|(_, t)| *t);
    } else {
        assert!(calls.is_empty(), "{what}: refused, yet the referee ran");
    }
    game
}

// ---------------------------------------------------------------------------------
// One model.

struct Report {
    name: String,
    /// Trace length: the nodes, then the output step.
    steps: usize,
    full_run: Duration,
    keep_run: Duration,
    games: Vec<Game>,
}

/// The median of `RUNS` timed runs after a warm-up.
fn time_runs(mut f: impl FnMut()) -> Duration {
    f();
    let mut t: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed()
        })
        .collect();
    t.sort();
    t[RUNS / 2]
}

fn bench_model(case: &Case, seed: u64) -> Report {
    let n = case.model.num_steps();
    let full_run = time_runs(|| {
        case.model.run(&case.feeds, &RunOptions::default()).unwrap();
    });
    let t0 = Instant::now();
    let honest = side(case.model.run(&case.feeds, &keep_all(n, None)).unwrap(), n);
    let keep_run = t0.elapsed();
    eprintln!(
        "{}: {n} steps, full run {:.2} ms (keeping every step {:.2} ms)",
        case.name,
        ms(full_run),
        ms(keep_run)
    );
    let mut rng = Rng(seed);
    let mut picks: Vec<(&'static str, usize)> = vec![
        ("first", 0),
        ("middle", n / 2),
        ("last", n - 1),
        ("output", n),
    ];
    picks.extend((0..RANDOM_STEPS).map(|_| ("random", rng.below(n))));
    let mut done: Vec<usize> = Vec::new();
    let mut games = Vec::new();
    for (pick, j) in picks {
        // A fault lands on the first computed step at or after j (past the last one,
        // on the graph outputs); walk back until it changes the trace.
        let Some((step, cheat)) = (0..=j).rev().find_map(|k| {
            let out = case.model.run(&case.feeds, &keep_all(n, Some(k))).unwrap();
            (out.trace.root() != honest.trace.root()).then(|| {
                let cheat = side(out, n);
                let step = (0..=n)
                    .find(|&s| cheat.trace.step_hash(s) != honest.trace.step_hash(s))
                    .unwrap();
                (step, cheat)
            })
        }) else {
            panic!("{}: no computed step at or before {j}", case.name);
        };
        assert_eq!(
            honest.outs[..step],
            cheat.outs[..step],
            "{}: the faulty run agrees before step {step}",
            case.name
        );
        if done.contains(&step) {
            continue;
        }
        done.push(step);
        for cheating_executor in [true, false] {
            let g = dispute(case, &honest, &cheat, step, pick, cheating_executor);
            eprintln!(
                "  step {step:>3} ({pick:6}) {:17} rounds {:2} blocks {:3} bytes {:7} referee txs {:2} {}{}{}",
                if cheating_executor {
                    "cheating executor"
                } else {
                    "false challenger"
                },
                g.rounds,
                g.blocks,
                g.bytes,
                g.referee_txs,
                g.referee
                    .map_or("-".to_owned(), |t| format!("{:.3} ms", ms(t))),
                g.refused
                    .as_deref()
                    .map_or(String::new(), |r| format!(
                        "  REFUSED ({r}); {} won by timeout",
                        if g.defender_won { "defender" } else { "challenger" }
                    )),
                if g.oversize {
                    format!("  OVER THE {MAX_TX_BYTES} B TRANSACTION LIMIT ({} B)", g.largest_tx)
                } else {
                    String::new()
                },
            );
            games.push(g);
        }
    }
    Report {
        name: case.name.clone(),
        steps: case.model.trace_len(),
        full_run,
        keep_run,
        games,
    }
}

// ---------------------------------------------------------------------------------
// Figures.

struct Summary {
    rounds_mean: f64,
    rounds_max: u32,
    blocks_mean: f64,
    blocks_max: u64,
    bytes_mean: f64,
    bytes_max: usize,
    referee_mean: Option<f64>,
    referee_max: Option<f64>,
    ratio: Option<f64>,
    refused: usize,
    oversize: usize,
    wrong: usize,
}

fn summary(r: &Report) -> Summary {
    let g = &r.games;
    let k = g.len() as f64;
    let refs: Vec<f64> = g.iter().filter_map(|g| g.referee.map(ms)).collect();
    let referee_mean = (!refs.is_empty()).then(|| refs.iter().sum::<f64>() / refs.len() as f64);
    Summary {
        rounds_mean: g.iter().map(|g| f64::from(g.rounds)).sum::<f64>() / k,
        rounds_max: g.iter().map(|g| g.rounds).max().unwrap_or(0),
        blocks_mean: g.iter().map(|g| g.blocks as f64).sum::<f64>() / k,
        blocks_max: g.iter().map(|g| g.blocks).max().unwrap_or(0),
        bytes_mean: g.iter().map(|g| g.bytes as f64).sum::<f64>() / k,
        bytes_max: g.iter().map(|g| g.bytes).max().unwrap_or(0),
        referee_mean,
        referee_max: refs.iter().copied().reduce(f64::max),
        ratio: referee_mean.map(|m| m / ms(r.full_run)),
        refused: g.iter().filter(|g| g.refused.is_some()).count(),
        oversize: g.iter().filter(|g| g.oversize).count(),
        wrong: g.iter().filter(|g| !g.correct()).count(),
    }
}

fn opt(x: Option<f64>, prec: usize) -> String {
    x.map_or("-".to_owned(), |x| format!("{x:.prec$}"))
}

fn table(reports: &[Report]) -> String {
    let mut t = String::new();
    writeln!(
        t,
        "{:12} {:>5} {:>8} {:>10} {:>5} {:>9} {:>17} {:>17} {:>11} {:>10} {:>8} {:>22}",
        "model",
        "n",
        "disputes",
        "rounds",
        "bound",
        "blocks",
        "ledger B mean",
        "ledger B max",
        "referee ms",
        "full ms",
        "ratio",
        "refused/oversize/wrong"
    )
    .unwrap();
    for r in reports {
        let s = summary(r);
        writeln!(
            t,
            "{:12} {:>5} {:>8} {:>10} {:>5} {:>9} {:>17.0} {:>17} {:>11} {:>10.2} {:>8} {:>22}",
            r.name,
            r.steps,
            r.games.len(),
            format!("{:.2}/{}", s.rounds_mean, s.rounds_max),
            ceil_log2(r.steps) + 1,
            format!("{:.1}/{}", s.blocks_mean, s.blocks_max),
            s.bytes_mean,
            s.bytes_max,
            opt(s.referee_mean, 3),
            ms(r.full_run),
            opt(s.ratio, 4),
            format!("{}/{}/{}", s.refused, s.oversize, s.wrong),
        )
        .unwrap();
    }
    t
}

fn json(dir: &Path, reports: &[Report]) -> serde_json::Value {
    let models: Vec<_> = reports
        .iter()
        .map(|r| {
            let s = summary(r);
            let games: Vec<_> = r
                .games
                .iter()
                .map(|g| {
                    json!({
                        "step": g.step,
                        "pick": g.pick,
                        "cheater": if g.cheating_executor { "executor" } else { "challenger" },
                        "rounds": g.rounds,
                        "blocks": g.blocks,
                        "ledger_bytes": g.bytes,
                        "largest_tx_bytes": g.largest_tx,
                        "referee_txs": g.referee_txs,
                        "referee_ms": g.referee.map(ms),
                        "refused": g.refused,
                        "defender_won": g.defender_won,
                        "by_timeout": g.by_timeout,
                        "over_network_limit": g.oversize,
                        "honest_side_won": g.correct(),
                    })
                })
                .collect();
            json!({
                "model": r.name,
                "steps": r.steps,
                "rounds_bound": ceil_log2(r.steps) + 1,
                "full_run_ms": ms(r.full_run),
                "keep_all_run_ms": ms(r.keep_run),
                "disputes": r.games.len(),
                "rounds_mean": s.rounds_mean,
                "rounds_max": s.rounds_max,
                "blocks_mean": s.blocks_mean,
                "blocks_max": s.blocks_max,
                "ledger_bytes_mean": s.bytes_mean,
                "ledger_bytes_max": s.bytes_max,
                "referee_ms_mean": s.referee_mean,
                "referee_ms_max": s.referee_max,
                "referee_over_full_run": s.ratio,
                "refused": s.refused,
                "over_network_limit": s.oversize,
                "wrong_verdicts": s.wrong,
                "games": games,
            })
        })
        .collect();
    json!({ "models_dir": dir.display().to_string(), "models": models })
}

fn main() {
    // `cargo bench` passes `--bench`; the one positional argument is the models folder.
    let arg = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let root = repo_root();
    let dir = root.join(arg.as_deref().unwrap_or("target/bench-models"));
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; write the models with \
                 \"$(scripts/venv.sh)\" scripts/gen_models.py target/bench-models",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "{}: no model folders", dir.display());
    let mut reports = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let case = load(d);
        reports.push(bench_model(&case, 0x5eed_d15b ^ i as u64));
    }
    print!("{}", table(&reports));
    let out = root.join("target/dispute-report.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&json(&dir, &reports)).unwrap(),
    )
    .unwrap();
    println!("written to {}", out.display());
}
