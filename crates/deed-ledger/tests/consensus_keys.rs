//! Consensus keys: registration with a proof of possession, uniqueness, rotation,
//! the consensus validator set, and genesis validators.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::{Chain, CHAIN, FEE};
use deed_ledger::{Event, GenesisError, GenesisValidator, Params, State, TxError};
use deed_types::*;

const STAKE: u128 = 5_000;

fn set_key(secret: u8, chain: u64, operator: &Address) -> Action {
    let (key, proof) = prove_consensus_key(&[secret; 32], chain, operator);
    Action::SetConsensusKey { key, proof }
}

fn pubkey(secret: u8) -> [u8; 32] {
    prove_consensus_key(&[secret; 32], CHAIN, &Address::ZERO).0
}

fn bonded(n: usize) -> Chain {
    let mut c = Chain::new(n, 100_000);
    for i in 0..n {
        c.ok(
            i,
            Action::Bond {
                amount: STAKE,
                endpoint: String::new(),
                price: 0,
                models: vec![],
            },
        );
    }
    c
}

/// Runs `action` from account `i` and returns its outcome and the state keys whose
/// value changed.
fn run_diff(c: &mut Chain, i: usize, action: Action) -> (Result<(), TxError>, BTreeSet<Vec<u8>>) {
    let before: BTreeSet<_> = c.state.to_kv().into_iter().collect();
    let r = c.run(i, action);
    let after: BTreeSet<_> = c.state.to_kv().into_iter().collect();
    let changed = before
        .symmetric_difference(&after)
        .map(|(k, _)| k.clone())
        .collect();
    (r, changed)
}

/// What a charged failure may change: metadata, the sender's and proposer's accounts.
fn fee_only(c: &Chain, i: usize) -> BTreeSet<Vec<u8>> {
    [
        vec![0x00],
        State::account_key(&c.addr(i)),
        State::account_key(&c.proposer),
    ]
    .into_iter()
    .collect()
}

#[test]
fn a_bonded_executor_registers_its_key_and_takes_a_seat() {
    let mut c = bonded(1);
    let a = c.addr(0);
    assert!(c.state.consensus_validators().is_empty());
    let out = c.block(vec![c.sign(0, set_key(1, CHAIN, &a))]);
    out.results[0].outcome.clone().unwrap();
    assert!(out.events.contains(&Event::ConsensusKeySet {
        executor: a,
        key: pubkey(1)
    }));
    assert_eq!(c.state.executor(&a).unwrap().consensus_key, Some(pubkey(1)));
    assert_eq!(c.state.consensus_key_holder(&pubkey(1)), Some(a));
    assert_eq!(c.state.consensus_validators(), vec![(a, pubkey(1), STAKE)]);
    c.assert_supply();
}

#[test]
fn bond_and_key_in_one_block_seat_the_executor_for_the_next_height() {
    let mut c = Chain::new(1, 100_000);
    let a = c.addr(0);
    let txs = c.sign_many(
        0,
        vec![
            Action::Bond {
                amount: STAKE,
                endpoint: String::new(),
                price: 0,
                models: vec![],
            },
            set_key(1, CHAIN, &a),
        ],
    );
    let out = c.block(txs);
    assert!(out.results.iter().all(|r| r.outcome.is_ok()));
    assert_eq!(c.state.consensus_validators(), vec![(a, pubkey(1), STAKE)]);
}

#[test]
fn bad_keys_and_proofs_are_refused_and_change_only_the_fee() {
    let mut c = bonded(2);
    let (a, b) = (c.addr(0), c.addr(1));
    // Not an executor at all.
    let mut d = Chain::new(1, 1_000);
    let da = d.addr(0);
    let (r, changed) = run_diff(&mut d, 0, set_key(1, CHAIN, &da));
    assert_eq!(r, Err(TxError::NotExecutor(da)));
    assert_eq!(changed, fee_only(&d, 0));

    let (key, proof) = prove_consensus_key(&[1; 32], CHAIN, &a);
    let mut flipped = proof;
    flipped[3] ^= 1;
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let cases = [
        // A proof for another chain.
        (set_key(1, CHAIN + 1, &a), ConsensusKeyError::BadProof),
        // A proof for another address: b's key claimed by a.
        (set_key(1, CHAIN, &b), ConsensusKeyError::BadProof),
        (
            Action::SetConsensusKey {
                key,
                proof: flipped,
            },
            ConsensusKeyError::BadProof,
        ),
        (
            Action::SetConsensusKey {
                key: pubkey(2),
                proof,
            },
            ConsensusKeyError::BadProof,
        ),
        (
            Action::SetConsensusKey {
                key: identity,
                proof: [0; 64],
            },
            ConsensusKeyError::BadKey,
        ),
    ];
    for (action, reason) in cases {
        let Action::SetConsensusKey { key, .. } = action else {
            unreachable!()
        };
        let balance = c.state.balance(&a);
        let (r, changed) = run_diff(&mut c, 0, action);
        assert_eq!(r, Err(TxError::BadConsensusKey { key, reason }));
        assert_eq!(changed, fee_only(&c, 0));
        assert_eq!(c.state.balance(&a), balance - FEE);
    }
    assert_eq!(c.state.executor(&a).unwrap().consensus_key, None);
    c.assert_supply();
}

#[test]
fn a_key_has_one_holder_and_a_stolen_proof_is_useless() {
    let mut c = bonded(2);
    let (a, b) = (c.addr(0), c.addr(1));
    let stolen = set_key(1, CHAIN, &a);
    c.ok(0, stolen.clone());
    // b replays a's registration: the proof binds a's address.
    assert!(matches!(
        c.run(1, stolen),
        Err(TxError::BadConsensusKey {
            reason: ConsensusKeyError::BadProof,
            ..
        })
    ));
    // b holds the same secret and proves it: still refused, the key is a's.
    let (r, changed) = run_diff(&mut c, 1, set_key(1, CHAIN, &b));
    assert_eq!(
        r,
        Err(TxError::ConsensusKeyInUse {
            key: pubkey(1),
            holder: a
        })
    );
    assert_eq!(changed, fee_only(&c, 1));
    assert_eq!(c.state.consensus_validators(), vec![(a, pubkey(1), STAKE)]);
}

#[test]
fn rotation_replaces_the_key_and_frees_the_old_one() {
    let mut c = bonded(2);
    let (a, b) = (c.addr(0), c.addr(1));
    let (r, changed) = run_diff(&mut c, 0, set_key(1, CHAIN, &a));
    r.unwrap();
    let mut expect = fee_only(&c, 0);
    expect.insert(State::executor_key(&a));
    expect.insert(State::consensus_key_holder_key(&pubkey(1)));
    assert_eq!(changed, expect);

    // Setting the same key again changes nothing but the fee.
    let (r, changed) = run_diff(&mut c, 0, set_key(1, CHAIN, &a));
    r.unwrap();
    assert_eq!(changed, fee_only(&c, 0));

    let (r, changed) = run_diff(&mut c, 0, set_key(2, CHAIN, &a));
    r.unwrap();
    expect.insert(State::consensus_key_holder_key(&pubkey(2)));
    assert_eq!(changed, expect);
    assert_eq!(c.state.consensus_key_holder(&pubkey(1)), None);
    assert_eq!(c.state.consensus_key_holder(&pubkey(2)), Some(a));
    // The freed key can go to someone else.
    c.ok(1, set_key(1, CHAIN, &b));
    let set = c.state.consensus_validators();
    assert!(set.contains(&(a, pubkey(2), STAKE)) && set.contains(&(b, pubkey(1), STAKE)));
    c.assert_supply();
}

#[test]
fn unbonding_below_the_minimum_and_leaving_drop_the_seat_and_free_the_key() {
    let mut c = bonded(2);
    let (a, b) = (c.addr(0), c.addr(1));
    c.ok(0, set_key(1, CHAIN, &a));
    let min = c.state.params().min_stake;
    c.ok(
        0,
        Action::Unbond {
            amount: STAKE - min,
        },
    );
    assert_eq!(c.state.consensus_validators(), vec![(a, pubkey(1), min)]);
    c.ok(0, Action::Unbond { amount: 1 });
    assert!(c.state.consensus_validators().is_empty());
    c.ok(0, Action::Unbond { amount: min - 1 });
    let (release, _) = *c.state.executor(&a).unwrap().unbonding.last().unwrap();
    c.advance_to(release);
    c.ok(0, Action::Withdraw);
    assert!(c.state.executor(&a).is_none());
    assert_eq!(c.state.consensus_key_holder(&pubkey(1)), None);
    c.ok(1, set_key(1, CHAIN, &b));
    assert_eq!(c.state.consensus_validators(), vec![(b, pubkey(1), STAKE)]);
    c.assert_supply();
}

#[test]
fn genesis_validators_are_bonded_with_their_keys_and_counted_in_the_supply() {
    let op = |i: u8| Address([i; 20]);
    let gv = |i: u8, stake| GenesisValidator {
        operator: op(i),
        consensus_key: pubkey(i),
        stake,
    };
    let alloc = [(op(1), 700), (op(9), 300)];
    let s = State::genesis_with_validators(
        CHAIN,
        Params::default(),
        &alloc,
        &[gv(1, 2_000), gv(2, 3_000)],
    )
    .unwrap();
    assert_eq!(
        s.consensus_validators(),
        vec![(op(2), pubkey(2), 3_000), (op(1), pubkey(1), 2_000)]
    );
    assert_eq!(s.meta().supply, 6_000);
    assert_eq!(s.meta().total_stake, 5_000);
    assert_eq!(s.accounted_supply(), Some(s.meta().supply));
    assert_eq!(s.balance(&op(1)), 700);
    // No validators is the plain genesis.
    assert_eq!(
        State::genesis_with_validators(CHAIN, Params::default(), &alloc, &[])
            .unwrap()
            .root(),
        State::genesis(CHAIN, Params::default(), &alloc)
            .unwrap()
            .root()
    );

    let err = |v: &[GenesisValidator]| {
        State::genesis_with_validators(CHAIN, Params::default(), &alloc, v).unwrap_err()
    };
    let min = Params::default().min_stake;
    assert_eq!(
        err(&[gv(1, 2_000), gv(1, 3_000)]),
        GenesisError::DuplicateValidator(op(1))
    );
    assert_eq!(
        err(&[gv(1, min - 1)]),
        GenesisError::StakeBelowMinimum {
            operator: op(1),
            stake: min - 1,
            min
        }
    );
    let mut shared = gv(2, 2_000);
    shared.consensus_key = pubkey(1);
    assert_eq!(
        err(&[gv(1, 2_000), shared]),
        GenesisError::DuplicateConsensusKey {
            operator: op(2),
            key: pubkey(1)
        }
    );
    let mut off_curve = gv(1, 2_000);
    off_curve.consensus_key = [0; 32];
    off_curve.consensus_key[0] = 2;
    assert_eq!(
        err(&[off_curve]),
        GenesisError::BadConsensusKey { operator: op(1) }
    );
    assert_eq!(err(&[gv(1, u128::MAX)]), GenesisError::SupplyOverflow);
}
