//! The dispute game decided by the production referee: a real ONNX model run by the
//! canonical runtime, the honest party's trace from that run, a cheater whose trace
//! has one corrupted step, and the bisection played through signed transactions in
//! blocks down to the referee step, which re-executes that one node.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::Chain;
use deed_ledger::party;
use deed_ledger::trace::Trace;
use deed_ledger::{DisputePhase, JobStatus, Params, RuntimeReferee, TxError};
use deed_runtime::plan::input_sources;
use deed_runtime::{node_step_hash, Limits, Model, RunOptions, Source};
use deed_types::*;

const OWNER: usize = 0;
const USER: usize = 1;
const WATCHER: usize = 2;
const EXEC: usize = 3;

/// The model, its input, every step's outputs and the honest trace.
struct Run {
    model: Arc<Model>,
    manifest: Cid,
    /// The job input blob: a borsh list of canonical tensor encodings.
    blob: Vec<u8>,
    /// Names of the graph inputs, in job input order.
    inputs: Vec<String>,
    /// Outputs of each step, as `Model::execute_node` returns them.
    outs: Vec<Vec<Tensor>>,
    honest: Trace,
    /// The hash of the honest run's outputs, as a receipt carries it.
    output: Hash,
}

fn run() -> Run {
    let x = Tensor::from_vec(
        vec![3, 8],
        (0..24)
            .map(|i| (i as f32 - 11.5) / 7.0)
            .collect::<Vec<f32>>(),
    )
    .unwrap();
    let r = run_of("mlp_tiny/model.onnx", vec![("x".to_owned(), x)]);
    assert_eq!(r.inputs, ["x"]);
    r
}

/// `Range` through its ONNX function body: eight nodes computing a trip count from
/// the inputs, then a `Loop` whose body reads the outer input `delta`.
fn loop_run() -> Run {
    let dir = "function-ops/test_range_float_type_positive_delta_expanded";
    let inputs = ["start", "limit", "delta"]
        .iter()
        .zip([1.0f32, 5.0, 0.5])
        .map(|(n, v)| ((*n).to_owned(), Tensor::scalar(v)))
        .collect();
    let r = run_of(&format!("{dir}/model.onnx"), inputs);
    let last = r.model.nodes.last().unwrap();
    assert_eq!(last.op_type, "Loop");
    assert!(
        last.inputs.iter().any(|i| i == "delta"),
        "{:?}",
        last.inputs
    );
    r
}

/// The model at `path` (under the runtime's test fixtures) run on `given`, which
/// names every required input.
fn run_of(path: &str, given: Vec<(String, Tensor)>) -> Run {
    let path = format!(
        "{}/../deed-runtime/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(path).unwrap();
    let model = Model::load(&bytes, &Limits::default()).unwrap();
    let inputs: Vec<String> = model.required_inputs().map(|v| v.name.clone()).collect();
    let ordered: Vec<Tensor> = inputs
        .iter()
        .map(|n| given.iter().find(|(g, _)| g == n).unwrap().1.clone())
        .collect();
    let out = model.run(&given, &RunOptions::default()).unwrap();
    // Every step's outputs, computed one node at a time as the referee does; their
    // hashes must be the trace the whole run produced.
    let mut outs: Vec<Vec<Tensor>> = Vec::new();
    for s in 0..model.num_steps() {
        let args: Vec<Option<Tensor>> = input_sources(&model, s)
            .unwrap()
            .into_iter()
            .map(|src| match src {
                None => None,
                Some((name, Source::Input)) => {
                    Some(given.iter().find(|(g, _)| *g == name).unwrap().1.clone())
                }
                Some((name, Source::Initializer)) => {
                    Some(model.initializer(&name).unwrap().clone())
                }
                Some((_, Source::Step { step, slot })) => Some(outs[step][slot].clone()),
            })
            .collect();
        outs.push(model.execute_node(s, &args).unwrap());
        assert_eq!(
            out.trace.step_hash(s),
            Some(node_step_hash(s, &outs[s])),
            "step {s}"
        );
    }
    Run {
        manifest: Cid::of(&bytes),
        model: Arc::new(model),
        blob: encoding::encode(&ordered.iter().map(Tensor::encode).collect::<Vec<_>>()),
        inputs,
        outs,
        output: deed_runtime::trace::outputs_hash(
            &out.outputs
                .iter()
                .map(|(_, t)| t.clone())
                .collect::<Vec<_>>(),
        ),
        honest: out.trace,
    }
}

/// The output hash of a run whose output step was corrupted.
fn corrupted_output() -> Hash {
    Hash::of(b"corrupted output")
}

/// The honest trace with step `j` corrupted; at the last (output) step, a false
/// output.
fn corrupted(honest: &Trace, j: usize) -> Trace {
    let mut h = honest.step_hashes().to_vec();
    let m = h.len() - 1;
    h[j] = if j == m {
        deed_runtime::trace::output_leaf(m as u64, &corrupted_output())
    } else {
        Hash::of(format!("corrupted step {j}").as_bytes())
    };
    Trace::new(h)
}

/// What the defender hands the referee for step `i`, as [`party::referee_action`]
/// builds it from the defender's trace and the steps' outputs.
fn referee(r: &Run, def: &Trace, i: usize, by_cid: bool) -> Action {
    let job = party::JobInputs {
        names: &r.inputs,
        blob: by_cid.then_some(&r.blob[..]),
    };
    for s in party::referee_steps(&r.model, i) {
        assert!(s < i);
    }
    party::referee_action(DisputeId(0), &r.model, def, i, job, |s| {
        Some(r.outs[s].clone())
    })
    .unwrap()
}

fn chain(r: &Run) -> (Chain, ModelId) {
    let mut c = Chain::with_params(EXEC + 1, 1_000_000, Params::default());
    let mut referee = RuntimeReferee::new();
    referee.insert(r.manifest, r.model.clone());
    c.runtime = Some(referee);
    c.ok(OWNER, common::register("mlp", 10));
    let m = ModelId(0);
    c.ok(
        OWNER,
        common::publish(m, r.manifest, r.model.num_steps() as u64),
    );
    c.ok(
        EXEC,
        Action::Bond {
            amount: 10_000,
            endpoint: "http://e".into(),
            price: 100,
            models: vec![m],
        },
    );
    (c, m)
}

/// The receipt of `t`, a trace of `r`'s job, honest up to its output step or not.
fn receipt(r: &Run, t: &Trace) -> Receipt {
    let output = if t.step_hashes().last() == r.honest.step_hashes().last() {
        r.output
    } else {
        corrupted_output()
    };
    common::receipt_for(t, output)
}

/// A job input by CID is not on the ledger: naming it is not enough, and a blob
/// that does not hash to the CID is refused.
fn refused_without_the_true_blob(c: &mut Chain, peaks: &[Hash], inputs: &[RefereeInput]) {
    if !inputs
        .iter()
        .any(|x| matches!(x, RefereeInput::JobInputBlob { .. }))
    {
        return;
    }
    let named: Vec<RefereeInput> = inputs
        .iter()
        .map(|x| match x {
            RefereeInput::JobInputBlob { index, .. } => RefereeInput::JobInput { index: *index },
            other => other.clone(),
        })
        .collect();
    let forged: Vec<RefereeInput> = inputs
        .iter()
        .map(|x| match x {
            RefereeInput::JobInputBlob { index, blob } => {
                let mut b = blob.clone();
                let last = b.len() - 1;
                b[last] ^= 1;
                RefereeInput::JobInputBlob {
                    index: *index,
                    blob: b,
                }
            }
            other => other.clone(),
        })
        .collect();
    for bad in [named, forged] {
        assert!(matches!(
            c.run(
                EXEC,
                Action::Referee {
                    dispute: DisputeId(0),
                    peaks: peaks.to_vec(),
                    inputs: bad
                }
            ),
            Err(TxError::InvalidProof(_))
        ));
    }
}

/// An optimistic job whose executor posts `def` and a watcher challenges with
/// `chal`, played to the end; `by_cid` gives the job's input by CID. Returns whether
/// the defender won.
fn dispute(r: &Run, def: &Trace, chal: &Trace, by_cid: bool) -> bool {
    let (mut c, m) = chain(r);
    let input = if by_cid {
        JobInput::ByCid(Cid::of(&r.blob))
    } else {
        JobInput::Inline(r.blob.clone())
    };
    let job = c.request_optimistic(USER, m, input);
    c.ok(
        EXEC,
        Action::SubmitReceipt {
            job,
            receipt: receipt(r, def),
        },
    );
    let p = c.state.params().clone();
    let exec = c.addr(EXEC);
    let stake = c.state.executor(&exec).unwrap().stake;
    let watcher = (
        c.state.balance(&c.addr(WATCHER)),
        c.state.nonce(&c.addr(WATCHER)),
    );
    let user = c.state.balance(&c.addr(USER));
    c.ok(
        WATCHER,
        Action::Challenge {
            job,
            trace_root: chal.root(),
        },
    );
    let d = DisputeId(0);
    let defender_won = loop {
        let dd = c.state.dispute(d).unwrap().clone();
        if let DisputePhase::Resolved { defender_won } = dd.phase {
            break defender_won;
        }
        let mut moved = false;
        for (who, trace) in [(EXEC, def), (WATCHER, chal)] {
            match party::next_move(d, &dd, &c.addr(who), trace).unwrap() {
                None => continue,
                Some(party::Move::Act(action)) => c.ok(who, action),
                Some(party::Move::Referee { step }) => {
                    assert_eq!(who, EXEC);
                    let Action::Referee { peaks, inputs, .. } = referee(r, def, step, by_cid)
                    else {
                        unreachable!("a referee move");
                    };
                    if by_cid {
                        refused_without_the_true_blob(&mut c, &peaks, &inputs);
                    }
                    c.ok(
                        EXEC,
                        Action::Referee {
                            dispute: d,
                            peaks,
                            inputs,
                        },
                    );
                }
            }
            moved = true;
        }
        assert!(moved, "exactly one party owes a move in {:?}", dd.phase);
    };
    if defender_won {
        // The result stood: its challenge window reopens for the blocks it had left,
        // then the job pays out.
        let JobStatus::Challengeable { window_end } = c.state.job(job).unwrap().status else {
            panic!("a result that won its dispute is challengeable again");
        };
        c.advance_to(window_end);
    }
    c.assert_supply();
    let watcher_fees = u128::from(c.state.nonce(&c.addr(WATCHER)) - watcher.1) * common::FEE;
    let e = c.state.executor(&exec).unwrap();
    if defender_won {
        assert_eq!(c.state.job(job).unwrap().status, JobStatus::Finalized);
        assert_eq!((e.stake, e.jailed_until), (stake, None));
        assert_eq!(
            c.state.balance(&c.addr(WATCHER)),
            watcher.0 - p.challenge_bond - watcher_fees
        );
    } else {
        let slashed = stake * p.slash_bps / 10_000;
        assert_eq!(c.state.job(job).unwrap().status, JobStatus::Refunded);
        assert_eq!(e.stake, stake - slashed);
        assert!(e.jailed_until.is_some());
        assert_eq!(
            c.state.balance(&c.addr(WATCHER)),
            watcher.0 + slashed * p.reward_bps / 10_000 - watcher_fees
        );
        // Royalty 10, fee 100 and protocol fee 5 come back.
        assert_eq!(c.state.balance(&c.addr(USER)), user + 115);
    }
    defender_won
}

#[test]
fn the_runtime_referee_convicts_a_cheating_challenger() {
    let r = run();
    let n = r.honest.len();
    // Five nodes, then the output step.
    assert_eq!(n, 6);
    for j in [0, n / 2, n - 1] {
        let cheat = corrupted(&r.honest, j);
        assert!(dispute(&r, &r.honest, &cheat, false), "corrupted step {j}");
    }
}

#[test]
fn the_runtime_referee_convicts_a_cheating_defender() {
    let r = run();
    let n = r.honest.len();
    for j in [0, n / 2, n - 1] {
        let cheat = corrupted(&r.honest, j);
        assert!(!dispute(&r, &cheat, &r.honest, false), "corrupted step {j}");
    }
}

/// A dispute over a `Loop` ends with the referee re-running the whole loop, one
/// step, from its inputs: the trip count computed by earlier steps, the initial
/// value, and the outer input its body reads.
#[test]
fn the_runtime_referee_decides_a_dispute_over_a_loop() {
    let r = loop_run();
    let n = r.honest.len();
    assert_eq!(n, 10);
    for j in [n - 2, 3, n - 1] {
        let cheat = corrupted(&r.honest, j);
        assert!(
            dispute(&r, &r.honest, &cheat, false),
            "challenger, step {j}"
        );
        assert!(
            !dispute(&r, &cheat, &r.honest, j == n - 2),
            "defender, step {j}"
        );
    }
}

#[test]
fn a_job_input_given_by_cid_is_handed_to_the_referee_as_its_blob() {
    let r = run();
    // Step 0 reads the job input, so the referee step needs the blob.
    let cheat = corrupted(&r.honest, 0);
    assert!(dispute(&r, &r.honest, &cheat, true));
    assert!(!dispute(&r, &cheat, &r.honest, true));
    // A step that reads no job input needs no blob.
    let late = corrupted(&r.honest, r.honest.len() - 1);
    assert!(!dispute(&r, &late, &r.honest, true));
}

#[test]
fn a_receipt_must_carry_the_output_its_trace_binds() {
    let r = run();
    let (mut c, m) = chain(&r);
    let job = c.request_optimistic(USER, m, JobInput::Inline(r.blob.clone()));
    let honest = receipt(&r, &r.honest);
    // The honest trace with any other output: refused, so a correct trace cannot
    // carry a wrong result past the watchers.
    for forged in [
        Receipt {
            output: Output::Hash(corrupted_output()),
            ..honest.clone()
        },
        Receipt {
            output: Output::Inline(vec![1, 2, 3]),
            ..honest.clone()
        },
        Receipt {
            output_proof: OutputProofData::default(),
            ..honest.clone()
        },
    ] {
        assert!(matches!(
            c.run(
                EXEC,
                Action::SubmitReceipt {
                    job,
                    receipt: forged
                }
            ),
            Err(TxError::InvalidProof(_))
        ));
    }
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Assigned);
    c.ok(
        EXEC,
        Action::SubmitReceipt {
            job,
            receipt: honest,
        },
    );
    // The trace that binds a false output is caught at the output step: the referee
    // hashes the graph outputs the defender hands over from the agreed steps.
    let liar = corrupted(&r.honest, r.honest.len() - 1);
    assert!(!dispute(&r, &liar, &r.honest, false));
}

#[test]
fn a_defender_cannot_feed_the_referee_another_agreed_tensor() {
    // mlp_tiny: Gemm, Relu, Gemm, Relu, Gemm. Steps 1 and 2 output tensors of the
    // same shape; a cheater claims step 3 is Relu of step 1's output instead of step
    // 2's and hands the referee exactly that.
    let r = run();
    let cheat = corrupted(&r.honest, 3);
    let (mut c, m) = chain(&r);
    let job = c.request_optimistic(USER, m, JobInput::Inline(r.blob.clone()));
    c.ok(
        EXEC,
        Action::SubmitReceipt {
            job,
            receipt: receipt(&r, &cheat),
        },
    );
    c.ok(
        WATCHER,
        Action::Challenge {
            job,
            trace_root: r.honest.root(),
        },
    );
    let d = DisputeId(0);
    let step = loop {
        let dd = c.state.dispute(d).unwrap().clone();
        let mut due = None;
        for (who, trace) in [(EXEC, &cheat), (WATCHER, &r.honest)] {
            match party::next_move(d, &dd, &c.addr(who), trace).unwrap() {
                None => {}
                Some(party::Move::Act(a)) => c.ok(who, a),
                Some(party::Move::Referee { step }) => due = Some(step),
            }
        }
        if let Some(s) = due {
            break s;
        }
    };
    assert_eq!(step, 3);
    let Action::Referee { peaks, inputs, .. } = referee(&r, &cheat, 3, false) else {
        unreachable!("a referee move");
    };
    assert!(matches!(inputs[0], RefereeInput::Step { step: 2, .. }));
    assert_eq!(r.outs[1][0].shape(), r.outs[2][0].shape());
    // The same move with step 1's output, proved in the agreed prefix.
    let proof = cheat.input_proof(2, 1).unwrap();
    let rewired = vec![RefereeInput::Step {
        step: 1,
        output: 0,
        outputs: r.outs[1].iter().map(Tensor::encode).collect(),
        siblings: proof.siblings,
        other_peaks: proof.other_peaks,
    }];
    let refused = c.run(
        EXEC,
        Action::Referee {
            dispute: d,
            peaks: peaks.clone(),
            inputs: rewired,
        },
    );
    assert!(matches!(refused, Err(TxError::Referee(_))), "{refused:?}");
    assert_eq!(
        c.state.dispute(d).unwrap().phase,
        DisputePhase::AwaitReferee
    );
    // Wired as the model says, the referee convicts the cheater.
    c.ok(
        EXEC,
        Action::Referee {
            dispute: d,
            peaks,
            inputs,
        },
    );
    assert_eq!(
        c.state.dispute(d).unwrap().phase,
        DisputePhase::Resolved {
            defender_won: false
        }
    );
}
