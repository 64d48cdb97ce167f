//! A disputed step whose inputs do not fit one transaction: a job input of 256 KiB
//! given by CID and an intermediate tensor of the same size. The defender stages the
//! encoded inputs in chunks, then asks for the verdict over them; the production
//! referee decides as it does for small steps, and the chunks leave the state with
//! the dispute.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::Chain;
use deed_ledger::party::{self, JobInputs, Move};
use deed_ledger::trace::Trace;
use deed_ledger::{DisputePhase, JobStatus, Params, RuntimeReferee, TxError};
use deed_runtime::{Limits, Model, RunOptions};
use deed_types::tx::limits::{MAX_REFEREE_CHUNK, MAX_TX_BYTES};
use deed_types::*;

const OWNER: usize = 0;
const USER: usize = 1;
const WATCHER: usize = 2;
const EXEC: usize = 3;
/// Elements of the input and of the intermediate tensor: 256 KiB of f32.
const WIDTH: usize = 64 * 1024;
/// The state key prefix of staged referee chunks.
const REFEREE_DATA: u8 = 0x0d;

/// `y = -relu(x)` over one row of `WIDTH` floats: two steps, the second reading the
/// first's 256 KiB output (`tests/fixtures/wide.py` writes it).
fn model_bytes() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/wide.onnx"
    ))
    .unwrap()
}

struct Run {
    model: Arc<Model>,
    manifest: Cid,
    names: Vec<String>,
    blob: Vec<u8>,
    outs: Vec<Vec<Tensor>>,
    honest: Trace,
    /// The hash of the run's outputs, as a receipt carries it.
    output: Hash,
}

fn run() -> Run {
    let bytes = model_bytes();
    let model = Model::load(&bytes, &Limits::default()).unwrap();
    let x = Tensor::from_vec(
        vec![1, WIDTH],
        (0..WIDTH)
            .map(|i| (i as f32 - 1000.5) / 3.0)
            .collect::<Vec<f32>>(),
    )
    .unwrap();
    let n = model.num_steps();
    assert_eq!(n, 2);
    let out = model
        .run(
            &[("x".to_owned(), x.clone())],
            &RunOptions {
                keep_steps: (0..n).collect(),
                ..RunOptions::default()
            },
        )
        .unwrap();
    Run {
        manifest: Cid::of(&bytes),
        names: model.required_inputs().map(|v| v.name.clone()).collect(),
        model: Arc::new(model),
        blob: encoding::encode(&vec![x.encode()]),
        output: deed_runtime::trace::outputs_hash(
            &out.outputs
                .iter()
                .map(|(_, t)| t.clone())
                .collect::<Vec<_>>(),
        ),
        outs: out.kept.into_iter().map(|(_, o)| o).collect(),
        honest: out.trace,
    }
}

fn corrupted(honest: &Trace, j: usize) -> Trace {
    let mut h = honest.step_hashes().to_vec();
    h[j] = Hash::of(format!("corrupted step {j}").as_bytes());
    Trace::new(h)
}

/// A chain where `def`'s result for a job given by CID is challenged with `chal`.
fn challenged(r: &Run, def: &Trace, chal: &Trace) -> Chain {
    let mut c = Chain::with_params(EXEC + 1, 1_000_000, Params::default());
    let mut referee = RuntimeReferee::new();
    referee.insert(r.manifest, r.model.clone());
    c.runtime = Some(referee);
    c.ok(OWNER, common::register("wide", 10));
    c.ok(OWNER, common::publish(ModelId(0), r.manifest, 2));
    c.ok(
        EXEC,
        Action::Bond {
            amount: 10_000,
            endpoint: "http://e".into(),
            price: 100,
            models: vec![ModelId(0)],
        },
    );
    c.ok(
        USER,
        Action::RequestJob {
            model: ModelId(0),
            version: None,
            input: JobInput::ByCid(Cid::of(&r.blob)),
            mode: Mode::Optimistic,
            max_fee: 1_000,
            executor: None,
        },
    );
    c.ok(
        EXEC,
        Action::SubmitReceipt {
            job: JobId(0),
            receipt: common::receipt_for(def, r.output),
        },
    );
    c.ok(
        WATCHER,
        Action::Challenge {
            job: JobId(0),
            trace_root: chal.root(),
        },
    );
    c
}

/// Plays the bisection until the referee move is due; returns the disputed step.
fn to_referee(c: &mut Chain, def: &Trace, chal: &Trace) -> usize {
    let id = DisputeId(0);
    loop {
        let d = c.state.dispute(id).unwrap().clone();
        for (who, trace) in [(EXEC, def), (WATCHER, chal)] {
            match party::next_move(id, &d, &c.addr(who), trace).unwrap() {
                None => {}
                Some(Move::Act(a)) => c.ok(who, a),
                Some(Move::Referee { step }) => return step,
            }
        }
    }
}

fn moves(r: &Run, def: &Trace, step: usize) -> Vec<Action> {
    let job = JobInputs {
        names: &r.names,
        blob: Some(&r.blob),
    };
    party::referee_moves(DisputeId(0), &r.model, def, step, job, |s| {
        r.outs.get(s).cloned()
    })
    .unwrap()
}

fn staged_keys(c: &Chain) -> usize {
    c.state
        .to_kv()
        .iter()
        .filter(|(k, v)| k.first() == Some(&REFEREE_DATA) && v.is_some())
        .count()
}

#[test]
fn a_step_whose_inputs_exceed_a_transaction_is_refereed_from_staged_chunks() {
    let r = run();
    for j in 0..2 {
        let cheat = corrupted(&r.honest, j);
        for cheating_executor in [true, false] {
            let what = format!("step {j}, cheating executor {cheating_executor}");
            let (def, chal) = if cheating_executor {
                (&cheat, &r.honest)
            } else {
                (&r.honest, &cheat)
            };
            let mut c = challenged(&r, def, chal);
            let step = to_referee(&mut c, def, chal);
            assert_eq!(step, j, "{what}");

            // In one transaction the move is over the limits.
            let single = party::referee_action(
                DisputeId(0),
                &r.model,
                def,
                step,
                JobInputs {
                    names: &r.names,
                    blob: Some(&r.blob),
                },
                |s| r.outs.get(s).cloned(),
            )
            .unwrap();
            assert!(
                matches!(c.run(EXEC, single), Err(TxError::Limit(_))),
                "{what}"
            );

            let mv = moves(&r, def, step);
            let (last, chunks) = mv.split_last().unwrap();
            assert!(chunks.len() >= 2, "{what}: {} chunks", chunks.len());
            assert!(matches!(last, Action::RefereeStaged { .. }), "{what}");
            for a in chunks {
                let Action::StageReferee { chunk, .. } = a else {
                    panic!("{what}: a chunk expected, got {}", a.name());
                };
                assert!(chunk.len() <= MAX_REFEREE_CHUNK);
            }
            // Every transaction fits the network's limit; all go in one block.
            let txs = c.sign_many(EXEC, mv.clone());
            assert!(txs.iter().all(|t| t.encode().len() <= MAX_TX_BYTES));
            let out = c.block(txs);
            for res in &out.results {
                assert_eq!(res.outcome, Ok(()), "{what}");
            }
            let d = c.state.dispute(DisputeId(0)).unwrap();
            assert_eq!(
                d.phase,
                DisputePhase::Resolved {
                    defender_won: !cheating_executor
                },
                "{what}"
            );
            assert_eq!((d.staged_chunks, d.staged_bytes), (0, 0), "{what}");
            assert_eq!(staged_keys(&c), 0, "{what}: staged chunks left behind");
            let status = c.state.job(JobId(0)).unwrap().status.clone();
            if cheating_executor {
                assert_eq!(status, JobStatus::Refunded, "{what}");
            } else {
                assert!(
                    matches!(status, JobStatus::Challengeable { .. }),
                    "{what}: {status:?}"
                );
            }
            c.assert_supply();
        }
    }
}

#[test]
fn staging_is_the_defenders_move_and_a_bad_staging_changes_nothing_but_the_fee() {
    let r = run();
    let cheat = corrupted(&r.honest, 1);
    let (def, chal) = (&cheat, &r.honest);
    let mut c = challenged(&r, def, chal);
    let step = to_referee(&mut c, def, chal);
    let mv = moves(&r, def, step);
    let (last, chunks) = mv.split_last().unwrap();
    let id = DisputeId(0);

    // Only the defender stages, and only when the referee move is due.
    assert!(matches!(
        c.run(WATCHER, chunks[0].clone()),
        Err(TxError::WrongMove { .. })
    ));
    // A verdict over nothing staged is refused.
    assert!(matches!(
        c.run(EXEC, last.clone()),
        Err(TxError::InvalidProof(_))
    ));
    // Staged bytes that are not an input list: the verdict is refused, the dispute
    // waits for its deadline, nothing is decided.
    c.ok(
        EXEC,
        Action::StageReferee {
            dispute: id,
            chunk: vec![0xff; 1000],
        },
    );
    assert_eq!(staged_keys(&c), 1);
    assert!(matches!(
        c.run(EXEC, last.clone()),
        Err(TxError::InvalidProof(_))
    ));
    assert_eq!(
        c.state.dispute(id).unwrap().phase,
        DisputePhase::AwaitReferee
    );
    // The defender that cannot give valid inputs loses by the deadline; its staging
    // is cleared with the dispute.
    let deadline = c.state.dispute(id).unwrap().deadline;
    c.advance_to(deadline + 1);
    assert_eq!(
        c.state.dispute(id).unwrap().phase,
        DisputePhase::Resolved {
            defender_won: false
        }
    );
    assert_eq!(staged_keys(&c), 0);
    c.assert_supply();
}
