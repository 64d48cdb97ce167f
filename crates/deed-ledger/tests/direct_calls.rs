//! Direct calls: a request that names the executor it was already sent to.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Chain, FEE};
use deed_ledger::{JobStatus, State, TxError};
use deed_types::*;

const OWNER: usize = 0;
const USER: usize = 1;
/// Accounts EXEC0.. EXEC0 + 2 serve model 0.
const EXEC0: usize = 2;
/// Bonded, but serves only model 1.
const OTHER: usize = 5;
/// Never bonded.
const NOBODY: usize = 6;

fn model(c: &mut Chain, name: &str) -> ModelId {
    c.ok(OWNER, common::register(name, 10));
    let m = ModelId(c.state.meta().next_model - 1);
    c.ok(OWNER, common::publish(m, Cid::of(name.as_bytes()), 4));
    m
}

fn setup() -> Chain {
    let mut c = Chain::new(7, 1_000_000);
    let m0 = model(&mut c, "m0");
    let m1 = model(&mut c, "m1");
    for (i, m) in [(EXEC0, m0), (EXEC0 + 1, m0), (EXEC0 + 2, m0), (OTHER, m1)] {
        c.ok(
            i,
            Action::Bond {
                amount: 10_000,
                endpoint: format!("http://e{i}"),
                price: 100,
                models: vec![m],
            },
        );
    }
    c
}

fn direct(executor: Address, mode: Mode) -> Action {
    Action::RequestJob {
        model: ModelId(0),
        version: None,
        input: JobInput::Inline(vec![1, 2, 3]),
        mode,
        max_fee: 1_000,
        executor: Some(executor),
    }
}

/// Every state entry except the requester's and proposer's accounts and the chain
/// metadata (height and block hash move with every block).
fn untouched(s: &State, c: &Chain) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let skip = [
        State::account_key(&c.addr(USER)),
        State::account_key(&c.proposer),
        vec![0x00],
    ];
    s.to_kv()
        .into_iter()
        .filter(|(k, _)| !skip.contains(k))
        .collect()
}

/// `action` from USER fails with an error `check` accepts, and the block changes
/// nothing but USER's fee and nonce (and the proposer's fee).
fn fails_cleanly(c: &mut Chain, action: Action, check: impl Fn(&TxError) -> bool) {
    let before = c.state.clone();
    let err = c.run(USER, action).unwrap_err();
    assert!(check(&err), "unexpected error {err:?}");
    let user = c.addr(USER);
    assert_eq!(c.state.balance(&user), before.balance(&user) - FEE);
    assert_eq!(c.state.nonce(&user), before.nonce(&user) + 1);
    assert_eq!(
        c.state.balance(&c.proposer),
        before.balance(&c.proposer) + FEE
    );
    assert_eq!(c.state.meta().next_job, before.meta().next_job);
    assert_eq!(c.state.meta().supply, before.meta().supply);
    assert_eq!(untouched(&c.state, c), untouched(&before, c));
}

#[test]
fn a_direct_request_is_assigned_exactly_the_named_executor() {
    let mut c = setup();
    for mode in [Mode::None, Mode::Optimistic] {
        for e in EXEC0..EXEC0 + 3 {
            let before = c.state.balance(&c.addr(USER));
            c.ok(USER, direct(c.addr(e), mode));
            let job = c.state.job(JobId(c.state.meta().next_job - 1)).unwrap();
            assert_eq!(job.executors, vec![c.addr(e)]);
            assert_eq!(job.mode, mode);
            assert_eq!(job.status, JobStatus::Assigned);
            // Royalty 10, fee 100, protocol fee 5% of 100.
            assert_eq!(before - c.state.balance(&c.addr(USER)), FEE + 115);
        }
    }
    c.assert_supply();
}

#[test]
fn a_direct_request_to_an_ineligible_executor_changes_nothing_but_the_fee() {
    let mut c = setup();
    for who in [OTHER, NOBODY, USER] {
        let executor = c.addr(who);
        fails_cleanly(&mut c, direct(executor, Mode::None), |e| {
            *e == TxError::ExecutorNotEligible {
                model: ModelId(0),
                executor,
            }
        });
    }
    // Eligible, but dearer than the requester's cap: the cap is what failed.
    let mut dear = direct(c.addr(EXEC0), Mode::Optimistic);
    if let Action::RequestJob { max_fee, .. } = &mut dear {
        *max_fee = 50;
    }
    fails_cleanly(&mut c, dear, |e| {
        matches!(e, TxError::MaxFeeTooLow { max_fee: 50, .. })
    });
    c.assert_supply();
}

#[test]
fn a_replicated_direct_request_is_refused() {
    let mut c = setup();
    let executor = c.addr(EXEC0);
    for k in [2, 3] {
        fails_cleanly(&mut c, direct(executor, Mode::Replicated(k)), |e| {
            *e == TxError::DirectNotAllowed {
                mode: Mode::Replicated(k),
            }
        });
    }
}

#[test]
fn the_same_signed_request_is_settled_once() {
    let mut c = setup();
    let tx = c.sign(USER, direct(c.addr(EXEC0), Mode::None));
    // Twice in one block: the copy fails on its nonce.
    let out = c.block(vec![tx.clone(), tx.clone()]);
    assert_eq!(out.results[0].outcome, Ok(()));
    assert!(matches!(
        out.results[1].outcome,
        Err(TxError::NonceReplayed {
            expected: 1,
            got: 0
        })
    ));
    assert_eq!(c.state.meta().next_job, 1);
    // The executor settles it.
    let receipt = common::receipt_for(
        &common::with_output(vec![Hash::of(b"trace"); 4], &Hash::of(b"out")),
        Hash::of(b"out"),
    );
    c.ok(
        EXEC0,
        Action::SubmitReceipt {
            job: JobId(0),
            receipt: receipt.clone(),
        },
    );
    assert_eq!(c.state.job(JobId(0)).unwrap().status, JobStatus::Finalized);
    // Replayed in a later block, neither a second job nor a second payment happens;
    // the replay is refused before any fee is taken.
    let before = c.state.clone();
    let out = c.block(vec![tx]);
    assert!(matches!(
        out.results[0].outcome,
        Err(TxError::NonceReplayed { .. })
    ));
    assert_eq!(c.state.meta().next_job, 1);
    assert_eq!(
        c.state.balance(&c.addr(USER)),
        before.balance(&c.addr(USER))
    );
    // Nor can the receipt be submitted again for the settled job.
    assert!(matches!(
        c.run(
            EXEC0,
            Action::SubmitReceipt {
                job: JobId(0),
                receipt
            }
        ),
        Err(TxError::WrongJobPhase { .. })
    ));
    c.assert_supply();
}
