//! Jobs in every verification mode, payouts up the lineage, timeouts, and the
//! dispute game played by scripted honest and lying parties.

#![allow(clippy::unwrap_used)]

mod common;

use common::Chain;
use deed_ledger::trace::{to_wire, Trace};
use deed_ledger::{DisputePhase, Event, JobStatus, Params, TxError};
use deed_types::*;

const OWNER: usize = 0;
const USER: usize = 1;
const WATCHER: usize = 2;
const EXEC0: usize = 3;

/// A chain with one model (traces of `steps` leaves: `steps - 1` nodes, then the
/// output step; price `royalty`) and `executors` bonded executors serving it at `fee`
/// each. Returns the model id and its manifest.
fn setup(
    executors: usize,
    steps: u64,
    royalty: u128,
    fee: u128,
    params: Params,
) -> (Chain, ModelId, Cid) {
    let mut c = Chain::with_params(EXEC0 + executors, 1_000_000, params);
    c.ok(OWNER, common::register("m", royalty));
    let m = ModelId(0);
    let manifest = Cid::of(format!("manifest {steps}").as_bytes());
    c.ok(OWNER, common::publish(m, manifest, steps - 1));
    for i in 0..executors {
        c.ok(
            EXEC0 + i,
            Action::Bond {
                amount: 10_000,
                endpoint: format!("http://e{i}"),
                price: fee,
                models: vec![m],
            },
        );
    }
    (c, m, manifest)
}

fn request(c: &mut Chain, m: ModelId, mode: Mode) -> (JobId, Vec<Address>) {
    let out = c.block(vec![c.sign(
        USER,
        Action::RequestJob {
            model: m,
            version: None,
            input: JobInput::Inline(vec![7]),
            mode,
            max_fee: 1_000_000,
            executor: None,
        },
    )]);
    out.results[0].outcome.clone().unwrap();
    let id = JobId(c.state.meta().next_job - 1);
    (id, c.state.job(id).unwrap().executors.clone())
}

fn idx(c: &Chain, a: Address) -> usize {
    c.keys.iter().position(|k| k.address() == a).unwrap()
}

fn receipt(t: &Trace) -> Receipt {
    common::scripted_receipt(t)
}

/// `n` leaves: `n - 1` node steps, then the output leaf of the true output.
fn truth(n: usize, salt: &str) -> Vec<Hash> {
    let nodes = (0..n - 1)
        .map(|i| Hash::of(format!("{salt} step {i}").as_bytes()))
        .collect();
    common::with_output(nodes, &common::true_output())
        .step_hashes()
        .to_vec()
}

/// A trace equal to `honest` except that step `lie_at` (if any) is wrong; a lie at
/// the last step is a false output.
fn lying(honest: &[Hash], lie_at: Option<usize>) -> Trace {
    let mut h = honest.to_vec();
    let m = h.len() - 1;
    if let Some(j) = lie_at {
        h[j] = if j == m {
            deed_runtime::trace::output_leaf(m as u64, &common::false_output())
        } else {
            Hash::of(format!("lie {j}").as_bytes())
        };
    }
    Trace::new(h)
}

#[test]
fn mode_none_pays_royalty_and_fee_and_burns_the_protocol_fee() {
    let (mut c, m, _) = setup(1, 3, 100, 1_000, Params::default());
    let owner_before = c.state.balance(&c.addr(OWNER));
    let supply = c.state.meta().supply;
    let (job, ex) = request(&mut c, m, Mode::None);
    let escrow = c.state.job(job).unwrap().escrow.clone();
    assert_eq!(
        (
            escrow.royalty,
            escrow.executor_fees.clone(),
            escrow.protocol_fee
        ),
        (100, vec![1_000], 50)
    );
    c.assert_supply();
    let e = idx(&c, ex[0]);
    let before = c.state.balance(&ex[0]);
    c.ok(
        e,
        Action::SubmitReceipt {
            job,
            receipt: receipt(&Trace::new(truth(3, "a"))),
        },
    );
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Finalized);
    assert_eq!(c.state.balance(&c.addr(OWNER)), owner_before + 100);
    assert_eq!(c.state.balance(&ex[0]), before - common::FEE + 1_000);
    assert_eq!(c.state.meta().supply, supply - 50);
    c.assert_supply();
    // Wrong step count and non-assigned senders are refused.
    let (job2, ex2) = request(&mut c, m, Mode::None);
    let e2 = idx(&c, ex2[0]);
    let bad = Receipt {
        steps: 99,
        ..receipt(&Trace::new(truth(3, "a")))
    };
    assert!(matches!(
        c.run(
            e2,
            Action::SubmitReceipt {
                job: job2,
                receipt: bad
            }
        ),
        Err(TxError::WrongStepCount {
            expected: 3,
            got: 99
        })
    ));
    assert!(matches!(
        c.run(
            WATCHER,
            Action::SubmitReceipt {
                job: job2,
                receipt: receipt(&Trace::new(truth(3, "a")))
            }
        ),
        Err(TxError::NotAssigned { .. })
    ));
}

#[test]
fn royalty_is_split_up_the_lineage_with_a_depth_cap() {
    let params = Params {
        max_lineage_depth: 2,
        ..Params::default()
    };
    let mut c = Chain::with_params(8, 1_000_000, params);
    // Chain of four models, each owned by a different account, each passing 50 % up.
    c.ok(0, common::register("base", 0));
    for i in 1..4u64 {
        c.ok(
            i as usize,
            Action::RegisterModel {
                name: format!("ft{i}"),
                description: String::new(),
                licence: Licence::Paid,
                price: 0,
                lineage: Some(Lineage {
                    parent: ModelId(i - 1),
                    upstream_bps: 5_000,
                }),
            },
        );
    }
    let leaf = ModelId(3);
    c.ok(
        3,
        Action::UpdateModel {
            model: leaf,
            price: Some(1_000),
            licence: None,
            description: None,
        },
    );
    c.ok(3, common::publish(leaf, Cid::of(b"v"), 1));
    c.ok(
        5,
        Action::Bond {
            amount: 5_000,
            endpoint: String::new(),
            price: 0,
            models: vec![leaf],
        },
    );
    let before: Vec<u128> = (0..4).map(|i| c.state.balance(&c.addr(i))).collect();
    c.ok(
        6,
        Action::RequestJob {
            model: leaf,
            version: None,
            input: JobInput::Inline(vec![]),
            mode: Mode::None,
            max_fee: 10_000,
            executor: None,
        },
    );
    c.ok(
        5,
        Action::SubmitReceipt {
            job: JobId(0),
            receipt: receipt(&common::with_output(
                vec![Hash::ZERO],
                &common::true_output(),
            )),
        },
    );
    let gained: Vec<u128> = (0..4)
        .map(|i| c.state.balance(&c.addr(i)) - before[i])
        .collect();
    // Depth cap 2: leaf keeps 500, ft2 keeps 250, ft1 (cap reached) keeps the rest 250;
    // base gets nothing.
    assert_eq!(gained, vec![0, 250, 250, 500]);
    c.assert_supply();
}

#[test]
fn optimistic_receipts_finalize_after_the_window() {
    let (mut c, m, _) = setup(1, 3, 10, 100, Params::default());
    let (job, ex) = request(&mut c, m, Mode::Optimistic);
    let e = idx(&c, ex[0]);
    let before = c.state.balance(&ex[0]);
    c.ok(
        e,
        Action::SubmitReceipt {
            job,
            receipt: receipt(&Trace::new(truth(3, "a"))),
        },
    );
    let JobStatus::Challengeable { window_end } = c.state.job(job).unwrap().status else {
        panic!()
    };
    c.advance_to(window_end - 1);
    assert_eq!(c.state.balance(&ex[0]), before - common::FEE);
    c.advance_to(window_end);
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Finalized);
    assert_eq!(c.state.balance(&ex[0]), before - common::FEE + 100);
    assert!(matches!(
        c.run(
            WATCHER,
            Action::Challenge {
                job,
                trace_root: Hash::ZERO
            }
        ),
        Err(TxError::WrongJobPhase { .. })
    ));
    c.assert_supply();
}

/// The executor that missed its deadline is slashed the timeout penalty, which is
/// burned: the requester gets its escrow back and nothing more, so a requester
/// cannot earn by sending an input no executor can run.
#[test]
fn a_missed_execution_deadline_refunds_and_penalizes() {
    let (mut c, m, _) = setup(1, 3, 10, 100, Params::default());
    let user_before = c.state.balance(&c.addr(USER));
    let (job, ex) = request(&mut c, m, Mode::Optimistic);
    let deadline = c.state.job(job).unwrap().deadline;
    let burned_before = c.state.meta().burned;
    c.advance_to(deadline);
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Refunded);
    let penalty = c.state.params().timeout_penalty;
    assert_eq!(c.state.balance(&c.addr(USER)), user_before - common::FEE);
    assert_eq!(c.state.executor(&ex[0]).unwrap().stake, 10_000 - penalty);
    assert_eq!(c.state.meta().burned, burned_before + penalty);
    c.assert_supply();
}

#[test]
fn assignment_is_deterministic_and_only_picks_eligible_executors() {
    let run = || {
        let (mut c, m, _) = setup(6, 3, 0, 10, Params::default());
        // One executor unbonds below the minimum; another serves nothing.
        c.ok(EXEC0, Action::Unbond { amount: 9_500 });
        c.ok(
            EXEC0 + 1,
            Action::Bond {
                amount: 0,
                endpoint: String::new(),
                price: 10,
                models: vec![],
            },
        );
        let mut picks = vec![];
        for _ in 0..10 {
            picks.extend(request(&mut c, m, Mode::Replicated(2)).1);
        }
        (picks, c.addr(EXEC0), c.addr(EXEC0 + 1))
    };
    let (a, x, y) = run();
    let (b, _, _) = run();
    assert_eq!(a, b);
    assert!(!a.contains(&x) && !a.contains(&y));
    // More than one executor gets work.
    let distinct: std::collections::BTreeSet<_> = a.iter().collect();
    assert!(distinct.len() > 1);
}

#[test]
fn replicated_mode_commit_then_reveal() {
    let (mut c, m, _) = setup(3, 4, 10, 100, Params::default());
    let (job, ex) = request(&mut c, m, Mode::Replicated(3));
    let t = Trace::new(truth(4, "a"));
    let r = receipt(&t);
    // Reveal before all commits is refused.
    let salt = |i: usize| Hash::of(&[i as u8]);
    assert!(matches!(
        c.run(
            idx(&c, ex[0]),
            Action::RevealOutput {
                job,
                receipt: r.clone(),
                salt: salt(0)
            }
        ),
        Err(TxError::WrongJobPhase { .. })
    ));
    for (i, a) in ex.iter().enumerate() {
        c.ok(
            idx(&c, *a),
            Action::CommitOutput {
                job,
                commitment: r.commitment(job, &salt(i)),
            },
        );
    }
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Revealing);
    // A reveal that does not match its commitment is refused.
    assert!(matches!(
        c.run(
            idx(&c, ex[0]),
            Action::RevealOutput {
                job,
                receipt: r.clone(),
                salt: salt(9)
            }
        ),
        Err(TxError::CommitmentMismatch)
    ));
    let before: Vec<u128> = ex.iter().map(|a| c.state.balance(a)).collect();
    for (i, a) in ex.iter().enumerate() {
        c.ok(
            idx(&c, *a),
            Action::RevealOutput {
                job,
                receipt: r.clone(),
                salt: salt(i),
            },
        );
    }
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Finalized);
    for (i, a) in ex.iter().enumerate() {
        assert_eq!(c.state.balance(a), before[i] - common::FEE + 100);
    }
    c.assert_supply();
}

/// Every executor of a replicated job commits to the receipt of its trace.
fn commit_all(c: &mut Chain, job: JobId, ex: &[Address], traces: &[Trace], salt: &Hash) {
    for (a, t) in ex.iter().zip(traces) {
        c.ok(
            idx(c, *a),
            Action::CommitOutput {
                job,
                commitment: receipt(t).commitment(job, salt),
            },
        );
    }
}

/// Plays a dispute to its end with scripted strategies: the defender reveals chain
/// values of `def`, the challenger agrees exactly when its own trace `chal` has the
/// same value; `stall` makes one party stop moving at the given round. Returns
/// whether the defender won and the number of reveals.
fn play(
    c: &mut Chain,
    dispute: DisputeId,
    def: &Trace,
    chal: &Trace,
    stall: Option<(bool, u32)>,
) -> (bool, u32) {
    loop {
        let d = c.state.dispute(dispute).unwrap().clone();
        let defender = idx(c, d.defender);
        let challenger = idx(c, d.challenger);
        let stalled = |defender_side: bool| matches!(stall, Some((side, r)) if side == defender_side && d.rounds >= r);
        match d.phase {
            DisputePhase::Resolved { defender_won } => return (defender_won, d.rounds),
            DisputePhase::AwaitReveal { index } => {
                if stalled(true) {
                    c.advance_to(d.deadline);
                    continue;
                }
                c.ok(
                    defender,
                    Action::RevealStep {
                        dispute,
                        proof: to_wire(&def.step_proof(index as usize).unwrap()),
                    },
                );
            }
            DisputePhase::AwaitResponse { index, value } => {
                if stalled(false) {
                    c.advance_to(d.deadline);
                    continue;
                }
                let agree = chal.chain_value(index as usize) == Some(value);
                c.ok(challenger, Action::Respond { dispute, agree });
            }
            DisputePhase::AwaitReferee => {
                if stalled(true) {
                    c.advance_to(d.deadline);
                    continue;
                }
                c.ok(
                    defender,
                    Action::Referee {
                        dispute,
                        peaks: def.peaks_before(d.lo as usize).unwrap(),
                        inputs: vec![],
                    },
                );
            }
        }
    }
}

fn ceil_log2(n: u64) -> u32 {
    64 - (n.max(1) - 1).leading_zeros()
}

/// One optimistic job disputed by the watcher; returns (defender won, rounds).
fn optimistic_dispute(
    n: usize,
    def_lie: Option<usize>,
    chal_lie: Option<usize>,
    stall: Option<(bool, u32)>,
) -> (bool, u32) {
    let (mut c, m, manifest) = setup(1, n as u64, 10, 100, Params::default());
    let honest = truth(n, "model");
    c.referee.truth.insert(manifest, honest.clone());
    let (job, ex) = request(&mut c, m, Mode::Optimistic);
    let def = lying(&honest, def_lie);
    let chal = lying(&honest, chal_lie);
    c.ok(
        idx(&c, ex[0]),
        Action::SubmitReceipt {
            job,
            receipt: receipt(&def),
        },
    );
    let supply = c.state.meta().supply;
    let watcher_before = c.state.balance(&c.addr(WATCHER));
    let watcher_nonce = c.state.nonce(&c.addr(WATCHER));
    let user_before = c.state.balance(&c.addr(USER));
    let exec_stake = c.state.executor(&ex[0]).unwrap().stake;
    c.ok(
        WATCHER,
        Action::Challenge {
            job,
            trace_root: chal.root(),
        },
    );
    let dispute = DisputeId(c.state.meta().next_dispute - 1);
    c.assert_supply();
    let (defender_won, rounds) = play(&mut c, dispute, &def, &chal, stall);
    c.assert_supply();
    let p = c.state.params().clone();
    let watcher_fees = (c.state.nonce(&c.addr(WATCHER)) - watcher_nonce) as u128 * common::FEE;
    if defender_won {
        // The result stood: the window reopens for the blocks it had left, so that a
        // challenger who loses on purpose cannot shut out honest ones; then it pays out.
        let JobStatus::Challengeable { window_end } = c.state.job(job).unwrap().status else {
            panic!("a job that won its dispute is challengeable again");
        };
        c.advance_to(window_end);
    }
    let job_state = c.state.job(job).unwrap();
    if defender_won {
        // The bond is lost: reward to the executor, the rest burned; the job pays out.
        assert_eq!(job_state.status, JobStatus::Finalized);
        let bond = p.challenge_bond;
        assert_eq!(
            c.state.balance(&c.addr(WATCHER)),
            watcher_before - bond - watcher_fees
        );
        assert_eq!(
            c.state.meta().supply,
            supply - (bond - bond * p.reward_bps / 10_000) - 5
        );
    } else {
        // The executor is slashed and jailed, the watcher rewarded, the user refunded.
        assert_eq!(job_state.status, JobStatus::Refunded);
        let slashed = exec_stake * p.slash_bps / 10_000;
        let reward = slashed * p.reward_bps / 10_000;
        assert_eq!(
            c.state.executor(&ex[0]).unwrap().stake,
            exec_stake - slashed
        );
        assert!(c.state.executor(&ex[0]).unwrap().jailed_until.is_some());
        assert_eq!(
            c.state.balance(&c.addr(WATCHER)),
            watcher_before + reward - watcher_fees
        );
        assert_eq!(c.state.balance(&c.addr(USER)), user_before + 115);
        assert_eq!(c.state.meta().supply, supply - (slashed - reward));
    }
    (defender_won, rounds)
}

/// A lying executor's accomplice challenges first and then loses on purpose (stops
/// answering). That must not finalize the lie: the window reopens and an honest
/// watcher's challenge still slashes the executor and refunds the user.
#[test]
fn a_challenger_losing_on_purpose_does_not_shut_out_honest_watchers() {
    const ACCOMPLICE: usize = OWNER;
    let n = 16;
    let (mut c, m, manifest) = setup(1, n as u64, 10, 100, Params::default());
    let honest = truth(n, "model");
    c.referee.truth.insert(manifest, honest.clone());
    let (job, ex) = request(&mut c, m, Mode::Optimistic);
    let lie = lying(&honest, Some(5));
    let honest_trace = Trace::new(honest);
    c.ok(
        idx(&c, ex[0]),
        Action::SubmitReceipt {
            job,
            receipt: receipt(&lie),
        },
    );
    let user_before = c.state.balance(&c.addr(USER));
    let stake = c.state.executor(&ex[0]).unwrap().stake;
    // The accomplice challenges two blocks before the window closes (its transaction
    // lands in the next block) and then stalls.
    let JobStatus::Challengeable { window_end } = c.state.job(job).unwrap().status else {
        panic!("the receipt opens the challenge window");
    };
    c.advance_to(window_end - 3);
    c.ok(
        ACCOMPLICE,
        Action::Challenge {
            job,
            trace_root: honest_trace.root(),
        },
    );
    let first = DisputeId(c.state.meta().next_dispute - 1);
    let (defender_won, _) = play(&mut c, first, &lie, &honest_trace, Some((false, 0)));
    assert!(defender_won);
    // The window is open again for the two blocks it had left, not finalized.
    let JobStatus::Challengeable { window_end } = c.state.job(job).unwrap().status else {
        panic!("job finalized after a thrown dispute");
    };
    assert_eq!(window_end, c.state.height() + 2);
    c.ok(
        WATCHER,
        Action::Challenge {
            job,
            trace_root: honest_trace.root(),
        },
    );
    let second = DisputeId(c.state.meta().next_dispute - 1);
    let (defender_won, _) = play(&mut c, second, &lie, &honest_trace, None);
    assert!(!defender_won);
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Refunded);
    assert!(c.state.executor(&ex[0]).unwrap().stake < stake);
    assert!(c.state.executor(&ex[0]).unwrap().jailed_until.is_some());
    assert_eq!(c.state.balance(&c.addr(USER)), user_before + 115);
    c.assert_supply();
}

#[test]
fn honest_defender_beats_a_lying_challenger_in_few_rounds() {
    for n in [2usize, 3, 4, 13, 100] {
        for lie in [0, n / 3, n - 1] {
            let (won, rounds) = optimistic_dispute(n, None, Some(lie), None);
            assert!(won, "n={n} lie={lie}");
            assert!(rounds <= ceil_log2(n as u64) + 1, "n={n} rounds={rounds}");
        }
    }
}

#[test]
fn honest_challenger_beats_a_lying_defender_in_few_rounds() {
    for n in [2usize, 3, 7, 16, 100] {
        for lie in [0, n / 2, n - 1] {
            let (won, rounds) = optimistic_dispute(n, Some(lie), None, None);
            assert!(!won, "n={n} lie={lie}");
            assert!(rounds <= ceil_log2(n as u64) + 1, "n={n} rounds={rounds}");
        }
    }
}

#[test]
fn missing_a_move_deadline_loses() {
    // An honest defender that stops answering loses; so does an honest challenger.
    assert!(!optimistic_dispute(16, None, Some(3), Some((true, 2))).0);
    assert!(!optimistic_dispute(16, None, Some(3), Some((true, 0))).0);
    assert!(optimistic_dispute(16, Some(3), None, Some((false, 1))).0);
}

#[test]
fn dispute_moves_are_checked() {
    let n = 8;
    let (mut c, m, manifest) = setup(1, n, 10, 100, Params::default());
    let mut honest = truth(n as usize, "model");
    // Step 2 produced a real tensor, which the last step reads as its input.
    let tensor = Tensor::from_vec(vec![2], vec![1.5f32, -2.0]).unwrap();
    honest[2] = deed_ledger::trace::step_hash(2, std::slice::from_ref(&tensor)).unwrap();
    c.referee.truth.insert(manifest, honest.clone());
    let (job, ex) = request(&mut c, m, Mode::Optimistic);
    let e = idx(&c, ex[0]);
    let def = Trace::new(honest.clone());
    c.ok(
        e,
        Action::SubmitReceipt {
            job,
            receipt: receipt(&def),
        },
    );
    assert!(matches!(
        c.run(
            e,
            Action::Challenge {
                job,
                trace_root: Hash::ZERO
            }
        ),
        Err(TxError::SelfChallenge)
    ));
    assert!(matches!(
        c.run(
            WATCHER,
            Action::Challenge {
                job,
                trace_root: def.root()
            }
        ),
        Err(TxError::NothingToDispute)
    ));
    c.ok(
        WATCHER,
        Action::Challenge {
            job,
            trace_root: Hash::ZERO,
        },
    );
    let d = DisputeId(0);
    // Wrong party, wrong index, forged value.
    assert!(matches!(
        c.run(
            WATCHER,
            Action::RevealStep {
                dispute: d,
                proof: to_wire(&def.step_proof(n as usize - 1).unwrap())
            }
        ),
        Err(TxError::WrongMove { .. })
    ));
    assert!(matches!(
        c.run(
            e,
            Action::RevealStep {
                dispute: d,
                proof: to_wire(&def.step_proof(0).unwrap())
            }
        ),
        Err(TxError::WrongStep { .. })
    ));
    let mut forged = to_wire(&def.step_proof(n as usize - 1).unwrap());
    forged.chain_value = Hash::of(b"forged");
    assert!(matches!(
        c.run(
            e,
            Action::RevealStep {
                dispute: d,
                proof: forged
            }
        ),
        Err(TxError::InvalidProof(_))
    ));
    assert!(matches!(
        c.run(
            e,
            Action::Respond {
                dispute: d,
                agree: true
            }
        ),
        Err(TxError::WrongMove { .. })
    ));
    // Play on to the referee step, then hand wrong peaks.
    c.ok(
        e,
        Action::RevealStep {
            dispute: d,
            proof: to_wire(&def.step_proof(n as usize - 1).unwrap()),
        },
    );
    c.ok(
        WATCHER,
        Action::Respond {
            dispute: d,
            agree: false,
        },
    );
    loop {
        let dd = c.state.dispute(d).unwrap().clone();
        match dd.phase {
            DisputePhase::AwaitReveal { index } => c.ok(
                e,
                Action::RevealStep {
                    dispute: d,
                    proof: to_wire(&def.step_proof(index as usize).unwrap()),
                },
            ),
            DisputePhase::AwaitResponse { .. } => c.ok(
                WATCHER,
                Action::Respond {
                    dispute: d,
                    agree: true,
                },
            ),
            _ => break,
        }
    }
    let dd = c.state.dispute(d).unwrap().clone();
    assert_eq!(dd.phase, DisputePhase::AwaitReferee);
    assert_eq!(dd.lo, n - 1);
    let lo = dd.lo as usize;
    let wrong = vec![Hash::of(b"x"); def.peaks_before(lo).unwrap().len()];
    assert!(matches!(
        c.run(
            e,
            Action::Referee {
                dispute: d,
                peaks: wrong,
                inputs: vec![]
            }
        ),
        Err(TxError::InvalidProof(_))
    ));
    // An input claimed to come from an earlier step must be proven inside the prefix.
    let proof = def.input_proof(lo - 1, 2).unwrap();
    let other = Tensor::from_vec(vec![1], vec![1.0f32]).unwrap();
    let input = |t: &Tensor| RefereeInput::Step {
        step: 2,
        output: 0,
        outputs: vec![t.encode()],
        siblings: proof.siblings.clone(),
        other_peaks: proof.other_peaks.clone(),
    };
    let peaks = def.peaks_before(lo).unwrap();
    assert!(matches!(
        c.run(
            e,
            Action::Referee {
                dispute: d,
                peaks: peaks.clone(),
                inputs: vec![input(&other)]
            }
        ),
        Err(TxError::InvalidProof(_))
    ));
    let malformed = RefereeInput::Step {
        step: 2,
        output: 0,
        outputs: vec![vec![1, 2, 3]],
        siblings: vec![],
        other_peaks: vec![],
    };
    assert!(matches!(
        c.run(
            e,
            Action::Referee {
                dispute: d,
                peaks: peaks.clone(),
                inputs: vec![malformed]
            }
        ),
        Err(TxError::BadTensor { index: 0 })
    ));
    c.ok(
        e,
        Action::Referee {
            dispute: d,
            peaks,
            inputs: vec![input(&tensor), RefereeInput::Absent],
        },
    );
    assert_eq!(
        c.state.dispute(d).unwrap().phase,
        DisputePhase::Resolved { defender_won: true }
    );
    c.assert_supply();
}

#[test]
fn replicated_mismatch_opens_a_dispute_the_liar_loses() {
    let n = 10;
    let (mut c, m, manifest) = setup(2, n, 10, 100, Params::default());
    let honest = truth(n as usize, "model");
    c.referee.truth.insert(manifest, honest.clone());
    let (job, ex) = request(&mut c, m, Mode::Replicated(2));
    // Executor 0 (the defender, first revealed) lies at step 4.
    let traces = [lying(&honest, Some(4)), Trace::new(honest.clone())];
    let salt = Hash::of(b"salt");
    commit_all(&mut c, job, &ex, &traces, &salt);
    let out = c.block(
        ex.iter()
            .enumerate()
            .map(|(i, a)| {
                c.sign(
                    idx(&c, *a),
                    Action::RevealOutput {
                        job,
                        receipt: receipt(&traces[i]),
                        salt,
                    },
                )
            })
            .collect(),
    );
    assert!(out.results.iter().all(|r| r.outcome.is_ok()));
    assert!(out
        .events
        .iter()
        .any(|e| matches!(e, Event::DisputeOpened { .. })));
    let JobStatus::Disputed(d) = c.state.job(job).unwrap().status else {
        panic!()
    };
    let honest_before = c.state.balance(&ex[1]);
    let (won, rounds) = play(&mut c, d, &traces[0], &traces[1], None);
    assert!(!won);
    assert!(rounds <= ceil_log2(n) + 1);
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Finalized);
    assert!(c.state.executor(&ex[0]).unwrap().jailed_until.is_some());
    assert!(c.state.executor(&ex[0]).unwrap().stake < 10_000);
    // The honest executor got its fee plus the reward.
    assert!(c.state.balance(&ex[1]) > honest_before + 100);
    c.assert_supply();
}

/// A replicated job over `lies.len()` executors where executor `i` (in assignment
/// order) lies at step `lies[i]` (executors lying at the same step reveal the same
/// wrong result). Plays every dispute the mismatch opens to its end and checks that
/// exactly the liars are slashed and jailed, the honest executors are paid and never
/// slashed, and the job settles on the true result.
fn replicated_knockout(n: usize, lies: &[Option<usize>]) {
    let k = lies.len();
    let (mut c, m, manifest) = setup(k, n as u64, 10, 100, Params::default());
    let honest = truth(n, "model");
    c.referee.truth.insert(manifest, honest.clone());
    let (job, ex) = request(&mut c, m, Mode::Replicated(k as u8));
    let traces: Vec<Trace> = lies.iter().map(|l| lying(&honest, *l)).collect();
    let salt = Hash::of(b"salt");
    let before: Vec<(u128, u64)> = ex
        .iter()
        .map(|a| (c.state.balance(a), c.state.nonce(a)))
        .collect();
    commit_all(&mut c, job, &ex, &traces, &salt);
    for (i, a) in ex.iter().enumerate() {
        c.ok(
            idx(&c, *a),
            Action::RevealOutput {
                job,
                receipt: receipt(&traces[i]),
                salt,
            },
        );
    }
    let mut groups: Vec<Option<usize>> = lies.to_vec();
    groups.sort();
    groups.dedup();
    let mut disputes = 0;
    while let JobStatus::Disputed(d) = c.state.job(job).unwrap().status {
        let dd = c.state.dispute(d).unwrap().clone();
        let pos = |a: Address| ex.iter().position(|x| *x == a).unwrap();
        let (def, chal) = (pos(dd.defender), pos(dd.challenger));
        assert_ne!(lies[def], lies[chal], "only different results dispute");
        let (won, rounds) = play(&mut c, d, &traces[def], &traces[chal], None);
        // The liar (or the earlier liar, between two) loses.
        let defender_right = match (lies[def], lies[chal]) {
            (None, _) => true,
            (_, None) => false,
            (Some(a), Some(b)) => a > b,
        };
        assert_eq!(won, defender_right, "lies {lies:?}");
        assert!(rounds <= ceil_log2(n as u64) + 1);
        disputes += 1;
        c.assert_supply();
    }
    assert_eq!(disputes, groups.len() - 1, "lies {lies:?}");
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Finalized);
    let p = c.state.params().clone();
    for (i, a) in ex.iter().enumerate() {
        let e = c.state.executor(a).unwrap();
        let fees = u128::from(c.state.nonce(a) - before[i].1) * common::FEE;
        let earned = c.state.balance(a) + fees - before[i].0;
        if lies[i].is_none() {
            assert_eq!(
                e.stake, 10_000,
                "honest executor {i} slashed, lies {lies:?}"
            );
            assert_eq!(e.jailed_until, None);
            // Its fee, plus rewards if it played the disputes.
            assert!(earned >= 100, "honest executor {i} earned {earned}");
        } else {
            assert_eq!(
                e.stake,
                10_000 - 10_000 * p.slash_bps / 10_000,
                "liar {i}, lies {lies:?}"
            );
            assert!(e.jailed_until.is_some());
            // Lying executors earn nothing unless they beat another liar first.
            if lies.iter().all(|l| l.is_none() || *l == lies[i]) {
                assert_eq!(earned, 0, "liar {i}, lies {lies:?}");
            }
        }
    }
    c.assert_supply();
}

#[test]
fn replicated_two_against_one_slashes_the_odd_liar_only() {
    for liar in 0..3 {
        let mut lies = vec![None; 3];
        lies[liar] = Some(5);
        replicated_knockout(12, &lies);
    }
}

#[test]
fn replicated_liars_that_agree_are_slashed_together() {
    replicated_knockout(12, &[Some(3), None, Some(3)]);
    replicated_knockout(12, &[None, Some(0), Some(0)]);
    replicated_knockout(9, &[Some(8), Some(8), None, None]);
}

#[test]
fn replicated_three_different_results_leave_only_the_truth_unslashed() {
    for honest in 0..3 {
        let mut lies = vec![Some(2), Some(7), Some(11)];
        lies[honest] = None;
        replicated_knockout(12, &lies);
    }
    // Three liars and one honest executor, every result different.
    replicated_knockout(16, &[Some(15), Some(0), None, Some(9)]);
}

/// The audit of an optimistic result: attest in the first half of the window, reveal
/// the final chain value with its proof in the second, and the matching attesters
/// share `audit_bps` of the executor's fee at finalization.
#[test]
fn watchers_that_re_executed_share_the_audit_fee() {
    let params = Params {
        max_attesters: 2,
        ..Params::default()
    };
    let fee = 1_000;
    let (mut c, m, _) = setup(1, 5, 10, fee, params.clone());
    let (job, ex) = request(&mut c, m, Mode::Optimistic);
    let e = idx(&c, ex[0]);
    let t = Trace::new(truth(5, "a"));
    c.ok(
        e,
        Action::SubmitReceipt {
            job,
            receipt: receipt(&t),
        },
    );
    let final_chain = t.chain_value(4).unwrap();
    let digest =
        |who: usize, c: &Chain| deed_ledger::audit::digest(&c.addr(who), job, &final_chain);
    let (w0, u0, e0) = (
        c.state.balance(&c.addr(WATCHER)),
        c.state.balance(&c.addr(USER)),
        c.state.balance(&ex[0]),
    );

    // Attest phase: the watcher knows c_{n-1}; the user guesses; the executor may
    // not attest; nobody attests twice; the slots are limited; no reveal yet.
    let d = digest(WATCHER, &c);
    c.ok(WATCHER, Action::Attest { job, digest: d });
    let copied = Action::Attest { job, digest: d };
    assert_eq!(c.run(e, copied), Err(TxError::SelfAudit));
    assert_eq!(
        c.run(WATCHER, Action::Attest { job, digest: d }),
        Err(TxError::AlreadyActed(c.addr(WATCHER)))
    );
    c.ok(
        USER,
        Action::Attest {
            job,
            digest: Hash::of(b"a guess"),
        },
    );
    assert_eq!(
        c.run(OWNER, Action::Attest { job, digest: d }),
        Err(TxError::AuditFull { job, max: 2 })
    );
    let proof = to_wire(&t.step_proof(4).unwrap());
    let reveal = |proof: StepProofData| Action::RevealAudit { job, proof };
    assert!(matches!(
        c.run(WATCHER, reveal(proof.clone())),
        Err(TxError::WrongJobPhase { .. })
    ));

    // Reveal phase: no more attestations; only c_{n-1} with a valid proof, once.
    let attest_until = c.state.job(job).unwrap().audit.attest_until;
    c.advance_to(attest_until);
    assert!(matches!(
        c.run(OWNER, Action::Attest { job, digest: d }),
        Err(TxError::WrongJobPhase { .. })
    ));
    let earlier = to_wire(&t.step_proof(3).unwrap());
    assert!(matches!(
        c.run(WATCHER, reveal(earlier)),
        Err(TxError::WrongStep { .. })
    ));
    let mut forged = proof.clone();
    forged.chain_value = Hash::of(b"forged");
    assert!(matches!(
        c.run(WATCHER, reveal(forged)),
        Err(TxError::InvalidProof(_))
    ));
    c.ok(WATCHER, reveal(proof.clone()));
    assert!(matches!(
        c.run(USER, reveal(proof)),
        Err(TxError::WrongJobPhase { .. })
    ));
    assert_eq!(c.state.job(job).unwrap().audit.revealed, Some(final_chain));

    // Payout: the watcher gets the audit share, the guesser nothing, the executor
    // the rest of its fee.
    let JobStatus::Challengeable { window_end } = c.state.job(job).unwrap().status else {
        panic!("challengeable")
    };
    c.advance_to(window_end);
    assert_eq!(c.state.job(job).unwrap().status, JobStatus::Finalized);
    let share = fee * params.audit_bps / 10_000;
    assert_eq!(
        c.state.balance(&c.addr(WATCHER)),
        w0 + share - 6 * common::FEE
    );
    assert_eq!(c.state.balance(&c.addr(USER)), u0 - 2 * common::FEE);
    assert_eq!(c.state.balance(&ex[0]), e0 + fee - share - common::FEE);
    c.assert_supply();
}

#[test]
fn a_challenge_closes_attestation_and_no_reveal_pays_no_one() {
    let fee = 1_000;
    let (mut c, m, _) = setup(1, 5, 10, fee, Params::default());
    let (job, ex) = request(&mut c, m, Mode::Optimistic);
    let e = idx(&c, ex[0]);
    let t = Trace::new(truth(5, "a"));
    c.ok(
        e,
        Action::SubmitReceipt {
            job,
            receipt: receipt(&t),
        },
    );
    let d = deed_ledger::audit::digest(&c.addr(WATCHER), job, &t.chain_value(4).unwrap());
    c.ok(WATCHER, Action::Attest { job, digest: d });
    // Nobody reveals: the executor keeps its whole fee.
    let e0 = c.state.balance(&ex[0]);
    let JobStatus::Challengeable { window_end } = c.state.job(job).unwrap().status else {
        panic!("challengeable")
    };
    c.advance_to(window_end);
    assert_eq!(c.state.balance(&ex[0]), e0 + fee);

    // A second job is challenged in its attest phase: attestation closes.
    let (job, _) = request(&mut c, m, Mode::Optimistic);
    c.ok(
        e,
        Action::SubmitReceipt {
            job,
            receipt: receipt(&t),
        },
    );
    c.ok(
        WATCHER,
        Action::Challenge {
            job,
            trace_root: Hash::of(b"other"),
        },
    );
    assert!(c.state.job(job).unwrap().audit.attest_until < c.state.height());
    assert!(matches!(
        c.run(USER, Action::Attest { job, digest: d }),
        Err(TxError::WrongJobPhase { .. })
    ));
    c.assert_supply();
}
