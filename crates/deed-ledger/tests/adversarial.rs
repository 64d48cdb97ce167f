//! The dispute game against a cheater, on random models and the production referee.
//!
//! Each trial builds a random ONNX graph (a DAG over graph inputs, initializers and
//! earlier nodes), runs it honestly with the canonical runtime and once more with a
//! fault injected at a random step, so that the cheater's trace carries its error
//! forward as a real faulty executor's would. Both sides then play the whole game
//! through signed transactions with the party module, each from its own trace and
//! its own kept step outputs, and the production referee (wrapped to count its
//! calls) decides the one step they disagree on.

#![allow(clippy::unwrap_used)]

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Chain;
use deed_ledger::party::{self, JobInputs, Move};
use deed_ledger::trace::Trace;
use deed_ledger::{
    DisputePhase, Event, JobStatus, Params, Referee, RefereeError, RuntimeReferee, StepInput,
};
use deed_runtime::{node_step_hash, Limits, Model, RunOptions};
use deed_types::*;
use prost::Message;
use tract_onnx::pb;

const OWNER: usize = 0;
const USER: usize = 1;
const WATCHER: usize = 2;
const EXEC0: usize = 3;
const FLOAT: i32 = 1;
const STAKE: u128 = 10_000;
const FEE: u128 = 100;
const ROYALTY: u128 = 10;

/// splitmix64: a seeded, deterministic source of test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn floats(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
}

// ---------------------------------------------------------------------------------
// Random models.

fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(Value::DimValue(*d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn floats(name: &str, dims: &[i64], data: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        float_data: data,
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], out: &str, attribute: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        name: out.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![out.to_owned()],
        attribute,
        ..Default::default()
    }
}

/// A random graph: its ONNX bytes, the values of its inputs and its node count.
struct Graph {
    bytes: Vec<u8>,
    feeds: Vec<(String, Tensor)>,
    nodes: usize,
}

/// A DAG of 3..=24 nodes over `[b, w·d]` f32 tensors (`w` is 1 or 2). Every node
/// reads values drawn from everything defined before it (graph inputs, initializers,
/// any earlier node), so steps read job inputs, weights and outputs of steps far
/// back. Every output nobody reads is a graph output, so no node is dead.
fn random_graph(rng: &mut Rng) -> Graph {
    let b = rng.range(1, 3);
    let d = rng.range(2, 5);
    let nodes = rng.range(3, 24);
    let dims = |w: usize| [b as i64, (w * d) as i64];
    // (name, width in units of d)
    let mut vals: Vec<(String, usize)> = Vec::new();
    let mut inputs = Vec::new();
    let mut feeds = Vec::new();
    for i in 0..rng.range(1, 2) {
        let name = format!("x{i}");
        inputs.push(value_info(&name, &dims(1)));
        feeds.push((
            name.clone(),
            Tensor::from_vec(vec![b, d], rng.floats(b * d, 1.0)).unwrap(),
        ));
        vals.push((name, 1));
    }
    let mut inits = vec![floats("c0", &dims(1), rng.floats(b * d, 1.0))];
    vals.push(("c0".into(), 1));
    let mut graph_nodes = Vec::new();
    for i in 0..nodes {
        let out = format!("v{i}");
        // The first node reads the job input, so at least one step is computed.
        let (a, wa) = if i == 0 {
            vals[0].clone()
        } else {
            vals[rng.below(vals.len())].clone()
        };
        let k = (wa * d) as i64;
        let (op, ins, w, attrs): (&str, Vec<String>, usize, Vec<pb::AttributeProto>) = match rng
            .below(10)
        {
            0..=2 => {
                let op = ["Add", "Sub", "Mul"][rng.below(3)];
                let same: Vec<&(String, usize)> = vals.iter().filter(|(_, w)| *w == wa).collect();
                let other = if rng.chance(1, 2) {
                    same[rng.below(same.len())].0.clone()
                } else {
                    // A broadcast weight of the last axis.
                    let name = format!("p{i}");
                    inits.push(floats(&name, &[k], rng.floats(k as usize, 1.0)));
                    name
                };
                let ins = if rng.chance(1, 2) {
                    vec![a, other]
                } else {
                    vec![other, a]
                };
                (op, ins, wa, vec![])
            }
            3..=5 => (
                ["Relu", "Tanh", "Sigmoid"][rng.below(3)],
                vec![a],
                wa,
                vec![],
            ),
            6 => ("Softmax", vec![a], wa, vec![int_attr("axis", -1)]),
            7 => {
                let wname = format!("w{i}");
                let scale = 1.0 / (k as f32).sqrt();
                let n = k as usize * d;
                inits.push(floats(&wname, &[k, d as i64], rng.floats(n, scale)));
                ("MatMul", vec![a, wname], 1, vec![])
            }
            8 => {
                let (wname, cname) = (format!("w{i}"), format!("g{i}"));
                let scale = 1.0 / (k as f32).sqrt();
                let n = k as usize * d;
                let trans = rng.chance(1, 2);
                let wdims = if trans { [d as i64, k] } else { [k, d as i64] };
                inits.push(floats(&wname, &wdims, rng.floats(n, scale)));
                inits.push(floats(&cname, &[d as i64], rng.floats(d, 1.0)));
                (
                    "Gemm",
                    vec![a, wname, cname],
                    1,
                    vec![int_attr("transB", i64::from(trans))],
                )
            }
            _ => {
                let narrow: Vec<&(String, usize)> = vals.iter().filter(|(_, w)| *w == 1).collect();
                if wa == 1 {
                    let other = narrow[rng.below(narrow.len())].0.clone();
                    ("Concat", vec![a, other], 2, vec![int_attr("axis", 1)])
                } else {
                    ("Relu", vec![a], wa, vec![])
                }
            }
        };
        let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
        graph_nodes.push(node(op, &refs, &out, attrs));
        vals.push((out, w));
    }
    let outputs: Vec<pb::ValueInfoProto> = vals
        .iter()
        .filter(|(name, _)| name.starts_with('v'))
        .filter(|(name, _)| !graph_nodes.iter().any(|n| n.input.contains(name)))
        .map(|(name, w)| value_info(name, &dims(*w)))
        .collect();
    let graph = pb::GraphProto {
        name: "random".into(),
        node: graph_nodes,
        initializer: inits,
        input: inputs,
        output: outputs,
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "deed-tests".into(),
        graph: Some(graph),
        ..Default::default()
    };
    Graph {
        bytes: model.encode_to_vec(),
        feeds,
        nodes,
    }
}

// ---------------------------------------------------------------------------------
// Honest and faulty runs.

/// A random model, its job input, and the honest and cheating runs of it.
struct Runs {
    model: Arc<Model>,
    manifest: Cid,
    /// Graph inputs in job input order.
    names: Vec<String>,
    /// The job input blob: a borsh list of canonical tensor encodings.
    blob: Vec<u8>,
    honest: Trace,
    honest_outs: Vec<Vec<Tensor>>,
    cheat: Trace,
    cheat_outs: Vec<Vec<Tensor>>,
    /// Output hashes of the two runs, as their receipts carry them.
    honest_output: Hash,
    cheat_output: Hash,
    /// The first step whose hash differs between the two traces.
    first_diff: usize,
    /// The fault was asked for at an earlier, constant-folded step.
    moved: bool,
    /// Time of one whole traced run.
    run_time: Duration,
}

/// Every step's outputs from a run that kept them all, checked against its trace.
fn kept_outputs(out: &deed_runtime::RunOutput, n: usize) -> Vec<Vec<Tensor>> {
    assert_eq!(
        out.kept.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    out.kept
        .iter()
        .map(|(s, outs)| {
            assert_eq!(out.trace.step_hash(*s), Some(node_step_hash(*s, outs)));
            outs.clone()
        })
        .collect()
}

fn runs(rng: &mut Rng) -> Runs {
    let g = random_graph(rng);
    let model = Model::load(&g.bytes, &Limits::default()).unwrap();
    let n = model.num_steps();
    assert_eq!(n, g.nodes, "every generated node is a step");
    let names: Vec<String> = model.required_inputs().map(|v| v.name.clone()).collect();
    let feeds: Vec<(String, Tensor)> = names
        .iter()
        .map(|name| g.feeds.iter().find(|(f, _)| f == name).unwrap().clone())
        .collect();
    let blob = encoding::encode(&feeds.iter().map(|(_, t)| t.encode()).collect::<Vec<_>>());
    let t0 = Instant::now();
    let plain = model.run(&feeds, &RunOptions::default()).unwrap();
    let run_time = t0.elapsed();
    let keep = |corrupt_step: Option<usize>| RunOptions {
        keep_steps: (0..n).collect(),
        corrupt_step,
        ..RunOptions::default()
    };
    let honest = model.run(&feeds, &keep(None)).unwrap();
    assert_eq!(honest.trace.root(), plain.trace.root());
    let honest_outs = kept_outputs(&honest, n);
    // A fault at a constant-folded step lands on the next computed one (or on the
    // graph outputs); one that changes nothing (an output of zero elements) starts
    // over from step 0.
    // A fault at `n`, past the last node, falls on the graph outputs: every step
    // right, the result wrong.
    let start = rng.below(n + 1);
    let (j, cheat) = (start..=n)
        .chain(0..start)
        .map(|j| (j, model.run(&feeds, &keep(Some(j))).unwrap()))
        .find(|(_, out)| out.trace.root() != honest.trace.root())
        .expect("the first node reads the job input, so some step is computed");
    let cheat_outs = kept_outputs(&cheat, n);
    let first_diff = (0..=n)
        .find(|&s| cheat.trace.step_hash(s) != honest.trace.step_hash(s))
        .unwrap();
    assert!(first_diff >= j, "a fault at {j} changed step {first_diff}");
    assert_eq!(
        honest_outs[..first_diff],
        cheat_outs[..first_diff],
        "the cheater's outputs agree before the fault"
    );
    let output_hash = |out: &deed_runtime::RunOutput| {
        let t: Vec<Tensor> = out.outputs.iter().map(|(_, t)| t.clone()).collect();
        deed_runtime::trace::outputs_hash(&t)
    };
    Runs {
        manifest: Cid::of(&g.bytes),
        model: Arc::new(model),
        names,
        blob,
        honest_output: output_hash(&honest),
        cheat_output: output_hash(&cheat),
        honest: honest.trace,
        honest_outs,
        cheat: cheat.trace,
        cheat_outs,
        first_diff,
        moved: first_diff != j,
        run_time,
    }
}

// ---------------------------------------------------------------------------------
// The referee, counted.

#[derive(Default)]
struct Calls {
    steps: Vec<u64>,
    time: Duration,
}

/// The production referee, recording which steps it re-executes and for how long.
struct Counting {
    inner: RuntimeReferee,
    calls: Rc<RefCell<Calls>>,
}

impl Referee for Counting {
    fn execute_step(
        &self,
        model: &Cid,
        step: u64,
        inputs: &[StepInput],
    ) -> Result<Hash, RefereeError> {
        let t0 = Instant::now();
        let out = self.inner.execute_step(model, step, inputs);
        let mut calls = self.calls.borrow_mut();
        calls.time += t0.elapsed();
        calls.steps.push(step);
        out
    }
}

/// A chain with the model published and `executors` executors bonded to it, whose
/// blocks are applied with the counting production referee.
fn chain(r: &Runs, executors: usize) -> (Chain, ModelId, Rc<RefCell<Calls>>) {
    let mut c = Chain::with_params(EXEC0 + executors, 1_000_000, Params::default());
    let mut inner = RuntimeReferee::new();
    inner.insert(r.manifest, r.model.clone());
    let calls = Rc::new(RefCell::new(Calls::default()));
    c.custom = Some(Box::new(Counting {
        inner,
        calls: calls.clone(),
    }));
    c.ok(OWNER, common::register("random", ROYALTY));
    let m = ModelId(0);
    c.ok(
        OWNER,
        common::publish(m, r.manifest, r.model.num_steps() as u64),
    );
    for i in 0..executors {
        c.ok(
            EXEC0 + i,
            Action::Bond {
                amount: STAKE,
                endpoint: format!("http://e{i}"),
                price: FEE,
                models: vec![m],
            },
        );
    }
    (c, m, calls)
}

/// The receipt of one of `r`'s two runs.
fn receipt(r: &Runs, t: &Trace) -> Receipt {
    let output = if t.root() == r.honest.root() {
        r.honest_output
    } else {
        r.cheat_output
    };
    common::receipt_for(t, output)
}

fn ceil_log2(n: usize) -> u32 {
    usize::BITS - (n.max(1) - 1).leading_zeros()
}

// ---------------------------------------------------------------------------------
// Playing a dispute.

/// One side of a dispute: its account, its trace and its kept step outputs.
#[derive(Clone, Copy)]
struct Party<'a> {
    who: usize,
    trace: &'a Trace,
    outs: &'a [Vec<Tensor>],
}

/// What a played dispute cost.
#[derive(Default)]
struct Game {
    defender_won: bool,
    by_timeout: bool,
    rounds: u32,
    /// Blocks from the dispute's opening to its verdict.
    blocks: u64,
    /// Encoded bytes of the dispute move transactions.
    bytes: usize,
    /// Kinds of referee inputs handed over: job input (inline, blob), initializer,
    /// step output (of the step just before, of one further back).
    inputs: [usize; 5],
    /// Time the referee took.
    referee_time: Duration,
}

/// Plays dispute `id` to its verdict with the party module for both sides. `silent`
/// names an account that stops moving once the dispute has had that many rounds.
fn play(
    c: &mut Chain,
    id: DisputeId,
    r: &Runs,
    blob: Option<&[u8]>,
    parties: [Party<'_>; 2],
    silent: Option<(usize, u32)>,
) -> Game {
    let opened = c.state.height();
    let mut game = Game::default();
    let job = JobInputs {
        names: &r.names,
        blob,
    };
    loop {
        let d = c.state.dispute(id).unwrap().clone();
        if let DisputePhase::Resolved { defender_won } = d.phase {
            game.defender_won = defender_won;
            game.rounds = d.rounds;
            game.blocks = c.state.height() - opened;
            return game;
        }
        let mut due: Vec<(Party<'_>, Move)> = parties
            .iter()
            .filter_map(|p| {
                party::next_move(id, &d, &c.addr(p.who), p.trace)
                    .unwrap()
                    .map(|m| (*p, m))
            })
            .collect();
        assert_eq!(
            due.len(),
            1,
            "exactly one party owes a move in {:?}",
            d.phase
        );
        let (p, m) = due.pop().unwrap();
        if matches!(silent, Some((who, round)) if who == p.who && d.rounds >= round) {
            let events = c.advance_to(d.deadline);
            assert!(
                events.iter().any(|e| matches!(
                    e,
                    Event::DisputeResolved { dispute, by_timeout: true, .. } if *dispute == id
                )),
                "the deadline ends the dispute"
            );
            game.by_timeout = true;
            continue;
        }
        let action = match m {
            Move::Act(a) => a,
            Move::Referee { step } => {
                for s in party::referee_steps(&r.model, step) {
                    assert!(s < step);
                }
                let a = party::referee_action(id, &r.model, p.trace, step, job, |s| {
                    p.outs.get(s).cloned()
                })
                .unwrap();
                let Action::Referee { inputs, .. } = &a else {
                    unreachable!("a referee move");
                };
                for x in inputs {
                    match x {
                        RefereeInput::JobInput { .. } => game.inputs[0] += 1,
                        RefereeInput::JobInputBlob { .. } => game.inputs[1] += 1,
                        RefereeInput::Initializer { .. } => game.inputs[2] += 1,
                        RefereeInput::Step { step: from, .. } if *from + 1 == step as u64 => {
                            game.inputs[3] += 1
                        }
                        RefereeInput::Step { .. } => game.inputs[4] += 1,
                        _ => {}
                    }
                }
                a
            }
        };
        game.bytes += c.sign(p.who, action.clone()).encode().len();
        c.ok(p.who, action);
    }
}

// ---------------------------------------------------------------------------------
// Optimistic jobs.

/// Who cheats in an optimistic trial, and who (if anyone) falls silent.
#[derive(Clone, Copy, Debug)]
struct Plan {
    cheating_executor: bool,
    by_cid: bool,
    /// (the cheater falls silent, at this round)
    silent: Option<(bool, u32)>,
    /// Wait out the reopened window of a result that stood.
    finalize: bool,
}

/// One optimistic job on a random model, disputed by the watcher and played to its
/// verdict; checks the verdict, the money and the referee call. Returns the game.
fn optimistic_trial(r: &Runs, plan: Plan) -> Game {
    let n = r.model.trace_len();
    let (mut c, m, calls) = chain(r, 1);
    let input = if plan.by_cid {
        JobInput::ByCid(Cid::of(&r.blob))
    } else {
        JobInput::Inline(r.blob.clone())
    };
    let job = c.request_optimistic(USER, m, input);
    let honest = (&r.honest, &r.honest_outs[..]);
    let cheat = (&r.cheat, &r.cheat_outs[..]);
    let (def, chal) = if plan.cheating_executor {
        (cheat, honest)
    } else {
        (honest, cheat)
    };
    c.ok(
        EXEC0,
        Action::SubmitReceipt {
            job,
            receipt: receipt(r, def.0),
        },
    );
    let p = c.state.params().clone();
    let exec = c.addr(EXEC0);
    let watcher = c.addr(WATCHER);
    let before = |c: &Chain, a: &Address| (c.state.balance(a), c.state.nonce(a));
    let (exec0, watcher0) = (before(&c, &exec), before(&c, &watcher));
    let user0 = c.state.balance(&c.addr(USER));
    c.ok(
        WATCHER,
        Action::Challenge {
            job,
            trace_root: chal.0.root(),
        },
    );
    let cheater = if plan.cheating_executor {
        EXEC0
    } else {
        WATCHER
    };
    let honest_party = if plan.cheating_executor {
        WATCHER
    } else {
        EXEC0
    };
    let silent = plan.silent.map(|(cheater_silent, round)| {
        (
            if cheater_silent {
                cheater
            } else {
                honest_party
            },
            round,
        )
    });
    let game = play(
        &mut c,
        DisputeId(0),
        r,
        plan.by_cid.then_some(&r.blob[..]),
        [
            Party {
                who: EXEC0,
                trace: def.0,
                outs: def.1,
            },
            Party {
                who: WATCHER,
                trace: chal.0,
                outs: chal.1,
            },
        ],
        silent,
    );
    let ctx = format!(
        "{plan:?} n={n} first_diff={} rounds={}",
        r.first_diff, game.rounds
    );
    // The loser: whoever fell silent, or else the cheater.
    let loser = match silent {
        Some((who, _)) if game.by_timeout => who,
        _ => cheater,
    };
    assert_eq!(game.defender_won, loser != EXEC0, "{ctx}");
    assert!(game.rounds <= ceil_log2(n) + 1, "{ctx}");
    let steps = calls.borrow().steps.clone();
    let game = Game {
        referee_time: calls.borrow().time,
        ..game
    };
    if game.by_timeout {
        assert!(
            steps.is_empty(),
            "{ctx}: referee called in a timed-out game"
        );
    } else {
        assert_eq!(steps, [r.first_diff as u64], "{ctx}");
    }
    c.assert_supply();
    let fees = |c: &Chain, a: &Address, n0: u64| u128::from(c.state.nonce(a) - n0) * common::FEE;
    let e = c.state.executor(&exec).unwrap().clone();
    if game.defender_won {
        // The watcher's bond is slashed: half to the executor, half burned.
        let reward = p.challenge_bond * p.reward_bps / 10_000;
        assert_eq!((e.stake, e.jailed_until), (STAKE, None), "{ctx}");
        assert_eq!(
            c.state.balance(&watcher),
            watcher0.0 - p.challenge_bond - fees(&c, &watcher, watcher0.1),
            "{ctx}"
        );
        assert_eq!(
            c.state.balance(&exec),
            exec0.0 + reward - fees(&c, &exec, exec0.1),
            "{ctx}"
        );
        let JobStatus::Challengeable { window_end } = c.state.job(job).unwrap().status else {
            panic!("{ctx}: a result that won its dispute is challengeable again");
        };
        if plan.finalize {
            c.advance_to(window_end);
            assert_eq!(c.state.job(job).unwrap().status, JobStatus::Finalized);
            assert_eq!(
                c.state.balance(&exec),
                exec0.0 + reward + FEE - fees(&c, &exec, exec0.1),
                "{ctx}"
            );
            c.assert_supply();
        }
    } else {
        let slashed = STAKE * p.slash_bps / 10_000;
        assert_eq!(e.stake, STAKE - slashed, "{ctx}");
        assert!(e.jailed_until.is_some(), "{ctx}");
        assert_eq!(c.state.job(job).unwrap().status, JobStatus::Refunded);
        assert_eq!(
            c.state.balance(&watcher),
            watcher0.0 + slashed * p.reward_bps / 10_000 - fees(&c, &watcher, watcher0.1),
            "{ctx}"
        );
        // Royalty, fee and protocol fee come back.
        assert_eq!(
            c.state.balance(&c.addr(USER)),
            user0 + ROYALTY + FEE + FEE * p.protocol_fee_bps / 10_000,
            "{ctx}"
        );
    }
    game
}

#[test]
fn two_hundred_random_models_convict_every_cheater() {
    const TRIALS: usize = 200;
    let mut rng = Rng(0x5eed_0001);
    let (mut rounds, mut max_rounds, mut blocks, mut bytes) = (0u64, 0u32, 0u64, 0usize);
    let (mut referee_time, mut run_time) = (Duration::ZERO, Duration::ZERO);
    let mut inputs = [0usize; 5];
    let mut kinds = [0usize; 4];
    let mut steps = 0;
    let mut moved = 0;
    let mut at_output = 0;
    for t in 0..TRIALS {
        let r = runs(&mut rng);
        let plan = Plan {
            cheating_executor: rng.chance(1, 2),
            by_cid: rng.chance(1, 3),
            silent: None,
            finalize: t % 8 == 0,
        };
        kinds[usize::from(plan.cheating_executor) * 2 + usize::from(plan.by_cid)] += 1;
        let game = optimistic_trial(&r, plan);
        steps += r.model.num_steps();
        moved += usize::from(r.moved);
        at_output += usize::from(r.first_diff == r.model.num_steps());
        rounds += u64::from(game.rounds);
        max_rounds = max_rounds.max(game.rounds);
        blocks += game.blocks;
        bytes += game.bytes;
        run_time += r.run_time;
        for (a, b) in inputs.iter_mut().zip(game.inputs) {
            *a += b;
        }
        referee_time += game.referee_time;
    }
    // Every kind of trial and every kind of referee input occurred.
    assert!(kinds.iter().all(|&k| k > 0), "trial kinds {kinds:?}");
    assert!(inputs.iter().all(|&k| k > 0), "referee inputs {inputs:?}");
    // Some cheats are in the result alone, caught at the output step.
    assert!(at_output > 0, "no trial cheated on the output alone");
    let n = TRIALS as f64;
    eprintln!(
        "adversarial: {TRIALS} trials, mean {:.1} steps ({moved} faults moved past a folded step, {at_output} in the result alone); rounds mean {:.2} max {max_rounds}; \
         mean {:.1} blocks challenge→verdict; mean {:.0} bytes of dispute moves; \
         referee inputs (inline, blob, initializer, previous step, earlier step) {inputs:?}; \
         referee {:?} in all vs full runs {:?} in all",
        steps as f64 / n,
        rounds as f64 / n,
        blocks as f64 / n,
        bytes as f64 / n,
        referee_time,
        run_time,
    );
}

#[test]
fn a_silent_party_loses_by_deadline() {
    let mut rng = Rng(0x5eed_0002);
    let mut silenced = [0usize; 2];
    for t in 0..40 {
        let r = runs(&mut rng);
        let n = r.model.trace_len();
        let cheater_silent = t % 2 == 0;
        let plan = Plan {
            cheating_executor: rng.chance(1, 2),
            by_cid: rng.chance(1, 3),
            // Round 0 silences the defender before its first reveal or the
            // challenger before its first answer; the last round, the defender
            // before the referee move.
            silent: Some((cheater_silent, rng.below(ceil_log2(n) as usize + 1) as u32)),
            finalize: t % 4 == 1,
        };
        let game = optimistic_trial(&r, plan);
        if game.by_timeout {
            silenced[usize::from(cheater_silent)] += 1;
        }
    }
    // Both an honest and a cheating party fell silent (and lost) many times.
    assert!(silenced.iter().all(|&k| k >= 10), "silenced {silenced:?}");
}

// ---------------------------------------------------------------------------------
// Replicated jobs.

#[test]
fn replicated_three_with_one_faulty_executor_slashes_it_and_pays_the_others() {
    let mut rng = Rng(0x5eed_0003);
    for t in 0..12 {
        let r = runs(&mut rng);
        let n = r.model.trace_len();
        let by_cid = rng.chance(1, 2);
        let (mut c, m, calls) = chain(&r, 3);
        let input = if by_cid {
            JobInput::ByCid(Cid::of(&r.blob))
        } else {
            JobInput::Inline(r.blob.clone())
        };
        c.ok(
            USER,
            Action::RequestJob {
                model: m,
                version: None,
                input,
                mode: Mode::Replicated(3),
                max_fee: 1_000_000,
                executor: None,
            },
        );
        let job = JobId(0);
        let ex = c.state.job(job).unwrap().executors.clone();
        assert_eq!(ex.len(), 3);
        let account = |a: &Address| (0..c.keys.len()).find(|&i| c.addr(i) == *a).unwrap();
        let accounts: Vec<usize> = ex.iter().map(account).collect();
        let liar = rng.below(3);
        let side = |i: usize| {
            if i == liar {
                (&r.cheat, &r.cheat_outs[..])
            } else {
                (&r.honest, &r.honest_outs[..])
            }
        };
        let before: Vec<(u128, u64)> = ex
            .iter()
            .map(|a| (c.state.balance(a), c.state.nonce(a)))
            .collect();
        let salt = Hash::of(format!("salt {t}").as_bytes());
        for (i, &acct) in accounts.iter().enumerate() {
            c.ok(
                acct,
                Action::CommitOutput {
                    job,
                    commitment: receipt(&r, side(i).0).commitment(job, &salt),
                },
            );
        }
        for (i, &acct) in accounts.iter().enumerate() {
            c.ok(
                acct,
                Action::RevealOutput {
                    job,
                    receipt: receipt(&r, side(i).0),
                    salt,
                },
            );
        }
        let mut disputes = 0;
        while let JobStatus::Disputed(d) = c.state.job(job).unwrap().status {
            let dd = c.state.dispute(d).unwrap().clone();
            let pos = |a: Address| ex.iter().position(|x| *x == a).unwrap();
            let (def, chal) = (pos(dd.defender), pos(dd.challenger));
            assert!(
                def == liar || chal == liar,
                "only different results dispute"
            );
            let party = |i: usize| Party {
                who: accounts[i],
                trace: side(i).0,
                outs: side(i).1,
            };
            let game = play(
                &mut c,
                d,
                &r,
                by_cid.then_some(&r.blob[..]),
                [party(def), party(chal)],
                None,
            );
            assert_eq!(game.defender_won, def != liar, "trial {t}");
            assert!(game.rounds <= ceil_log2(n) + 1);
            disputes += 1;
            c.assert_supply();
        }
        assert_eq!(disputes, 1, "trial {t}");
        assert_eq!(calls.borrow().steps, [r.first_diff as u64], "trial {t}");
        assert_eq!(c.state.job(job).unwrap().status, JobStatus::Finalized);
        let p = c.state.params().clone();
        for (i, a) in ex.iter().enumerate() {
            let e = c.state.executor(a).unwrap();
            let fees = u128::from(c.state.nonce(a) - before[i].1) * common::FEE;
            let earned = c.state.balance(a) + fees - before[i].0;
            if i == liar {
                assert_eq!(e.stake, STAKE - STAKE * p.slash_bps / 10_000, "trial {t}");
                assert!(e.jailed_until.is_some());
                assert_eq!(earned, 0, "trial {t}");
            } else {
                assert_eq!((e.stake, e.jailed_until), (STAKE, None), "trial {t}");
                assert!(
                    earned >= FEE,
                    "trial {t}: honest executor {i} earned {earned}"
                );
            }
        }
        c.assert_supply();
    }
}
