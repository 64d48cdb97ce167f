//! Accounts, the bad-input list, the model registry, staking, governance and the
//! key/value form of the state.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Chain, CHAIN, FEE};
use deed_ledger::{apply_block, next_block, BlockError, ProposalStatus, State, TxError};
use deed_types::tx::limits;
use deed_types::*;

fn register(
    c: &mut Chain,
    owner: usize,
    name: &str,
    price: u128,
    lineage: Option<Lineage>,
) -> ModelId {
    c.ok(
        owner,
        Action::RegisterModel {
            name: name.into(),
            description: "d".into(),
            licence: Licence::Paid,
            price,
            lineage,
        },
    );
    c.state.model_by_name(&c.addr(owner), name).unwrap()
}

fn publish(c: &mut Chain, owner: usize, model: ModelId) {
    c.ok(
        owner,
        Action::PublishVersion {
            model,
            manifest: Cid::of(b"manifest"),
            io_schema: "x:f32[1]".into(),
            steps: 4,
            cost: 10,
            notes: String::new(),
        },
    );
}

#[test]
fn transfer_moves_tokens_and_pays_the_fee_to_the_proposer() {
    let mut c = Chain::new(2, 1_000);
    let (a, b) = (c.addr(0), c.addr(1));
    c.ok(0, Action::Transfer { to: b, amount: 300 });
    assert_eq!(c.state.balance(&a), 1_000 - 300 - FEE);
    assert_eq!(c.state.balance(&b), 1_300);
    assert_eq!(c.state.balance(&c.proposer), FEE);
    assert_eq!(c.state.nonce(&a), 1);
    c.assert_supply();
}

/// Each item of the bad-input list: a typed error, and the state unchanged except
/// the fee and nonce where a fee is chargeable.
#[test]
fn bad_inputs_are_typed_errors_that_change_nothing_but_the_fee() {
    let mut c = Chain::new(2, 10_000);
    let (a, b) = (c.addr(0), c.addr(1));
    let model = register(&mut c, 0, "m", 5, None);

    // Uncharged: state identical afterwards apart from the block metadata.
    let check_uncharged =
        |c: &mut Chain, tx: SignedTransaction, want: &dyn Fn(&TxError) -> bool| {
            let before = c.state.account(&a);
            let out = c.block(vec![tx]);
            let e = out.results[0].outcome.clone().unwrap_err();
            assert!(want(&e), "{e:?}");
            assert!(e.is_uncharged());
            assert_eq!(c.state.account(&a), before);
            assert_eq!(
                out.writes.len(),
                1,
                "only the metadata changes: {:?}",
                out.writes
            );
        };

    // Bad signature: the signature of another message.
    let good = c.sign(0, Action::Transfer { to: b, amount: 1 });
    let nonce_before = c.state.nonce(&a);
    let mut forged = good.clone();
    forged.tx.action = Action::Transfer { to: b, amount: 999 };
    let out = c.block(vec![forged]);
    // A forged message recovers some other address (or none): never the signer's
    // account, and nothing is charged.
    let e = out.results[0].outcome.clone().unwrap_err();
    assert!(e.is_uncharged(), "{e:?}");
    assert_ne!(out.results[0].sender, Some(a));
    assert_eq!(c.state.nonce(&a), nonce_before);
    let mut broken = good.clone();
    broken.signature.0[64] = 9;
    check_uncharged(&mut c, broken, &|e| {
        matches!(e, TxError::BadSignature(SignatureError::BadRecoveryId(9)))
    });

    // Wrong chain id.
    let wrong_chain = Transaction {
        chain_id: CHAIN + 1,
        nonce: c.state.nonce(&a),
        fee: FEE,
        action: Action::Withdraw,
    }
    .sign(&c.keys[0])
    .unwrap();
    check_uncharged(&mut c, wrong_chain, &|e| {
        matches!(e, TxError::WrongChain { .. })
    });

    // Replayed nonce: the same signed transaction twice.
    let tx = c.sign(0, Action::Transfer { to: b, amount: 1 });
    assert!(c.block(vec![tx.clone()]).results[0].outcome.is_ok());
    check_uncharged(&mut c, tx, &|e| matches!(e, TxError::NonceReplayed { .. }));

    // Skipped nonce.
    let skip = Transaction {
        chain_id: CHAIN,
        nonce: c.state.nonce(&a) + 1,
        fee: FEE,
        action: Action::Withdraw,
    }
    .sign(&c.keys[0])
    .unwrap();
    check_uncharged(&mut c, skip, &|e| matches!(e, TxError::NonceGap { .. }));

    // Oversize field.
    let big = c.sign(
        0,
        Action::RegisterModel {
            name: "n".repeat(limits::MAX_NAME + 1),
            description: String::new(),
            licence: Licence::Open,
            price: 0,
            lineage: None,
        },
    );
    check_uncharged(&mut c, big, &|e| {
        matches!(e, TxError::Limit(LimitError { field: "name", .. }))
    });

    // Charged: fee and nonce only.
    let charged = |c: &mut Chain, action: Action, want: &dyn Fn(&TxError) -> bool| {
        let before = c.state.account(&a);
        let e = c.run(0, action).unwrap_err();
        assert!(want(&e), "{e:?}");
        assert!(!e.is_uncharged());
        let after = c.state.account(&a);
        assert_eq!(after.balance, before.balance - FEE);
        assert_eq!(after.nonce, before.nonce + 1);
    };
    charged(
        &mut c,
        Action::Transfer {
            to: b,
            amount: 1_000_000_000,
        },
        &|e| matches!(e, TxError::InsufficientBalance { .. }),
    );
    charged(&mut c, Action::Transfer { to: b, amount: 0 }, &|e| {
        matches!(e, TxError::ZeroAmount)
    });
    charged(
        &mut c,
        common::publish(ModelId(99), Cid::of(b"x"), 1),
        &|e| matches!(e, TxError::UnknownModel(ModelId(99))),
    );
    charged(
        &mut c,
        Action::DeprecateVersion { model, version: 7 },
        &|e| matches!(e, TxError::UnknownVersion { version: 7, .. }),
    );
    // Overflow: a royalty price so large the request total overflows.
    c.ok(
        0,
        Action::UpdateModel {
            model,
            price: Some(u128::MAX),
            licence: None,
            description: None,
        },
    );
    c.ok(0, common::publish(model, Cid::of(b"v"), 2));
    c.ok(
        1,
        Action::Bond {
            amount: 1_500,
            endpoint: "e".into(),
            price: 1,
            models: vec![model],
        },
    );
    charged(
        &mut c,
        Action::RequestJob {
            model,
            version: None,
            input: JobInput::Inline(vec![]),
            mode: Mode::None,
            max_fee: u128::MAX,
            executor: None,
        },
        &|e| matches!(e, TxError::Overflow(_)),
    );
    c.assert_supply();

    // Non-owner publishing: charged to the non-owner.
    let before = c.state.account(&b);
    let e = c
        .run(1, common::publish(model, Cid::of(b"y"), 1))
        .unwrap_err();
    assert!(matches!(e, TxError::NotOwner { .. }));
    assert_eq!(c.state.account(&b).balance, before.balance - FEE);
    assert_eq!(c.state.model(model).unwrap().versions, 1);

    // Malformed encoding never reaches the ledger: the decoder rejects it.
    assert!(Block::decode(&[1, 2, 3]).is_err());
    assert!(SignedTransaction::decode(&[0xff; 40]).is_err());
}

/// Balances can never overflow because they sum to the supply, which genesis caps
/// at `u128::MAX`; the remaining overflow points (prices times replicas plus fees)
/// are typed errors, see the bad-input test.
#[test]
fn genesis_refuses_a_supply_that_overflows() {
    let k = common::key(0).address();
    let k2 = common::key(1).address();
    assert!(matches!(
        State::genesis(1, Default::default(), &[(k, u128::MAX), (k2, 1)]),
        Err(deed_ledger::GenesisError::SupplyOverflow)
    ));
    assert!(matches!(
        State::genesis(1, Default::default(), &[(k, 1), (k, 1)]),
        Err(deed_ledger::GenesisError::DuplicateAccount(_))
    ));
}

#[test]
fn blocks_with_wrong_headers_are_rejected_without_changes() {
    let mut c = Chain::new(1, 100);
    let root = c.state.root();
    let tx = c.sign(0, Action::Withdraw);
    let mut b = next_block(&c.state, c.proposer, 1, vec![tx]);
    b.header.height += 1;
    assert!(matches!(
        apply_block(&mut c.state, &b, &c.referee),
        Err(BlockError::WrongHeight { .. })
    ));
    b.header.height -= 1;
    b.header.state_root = Hash::of(b"x");
    assert!(matches!(
        apply_block(&mut c.state, &b, &c.referee),
        Err(BlockError::WrongStateRoot { .. })
    ));
    b.header.state_root = root;
    b.header.tx_root = Hash::of(b"x");
    assert!(matches!(
        apply_block(&mut c.state, &b, &c.referee),
        Err(BlockError::WrongTxRoot { .. })
    ));
    b.header.chain_id = 1;
    assert!(matches!(
        apply_block(&mut c.state, &b, &c.referee),
        Err(BlockError::WrongChain { .. })
    ));
    assert_eq!(c.state.root(), root);
    assert_eq!(c.state.height(), 0);
}

#[test]
fn registry_lifecycle_and_ownership_rules() {
    let mut c = Chain::new(3, 1_000);
    let (a, b) = (c.addr(0), c.addr(1));
    let m = register(&mut c, 0, "llama", 10, None);
    // Names are unique per owner, not globally.
    let e = c.run(
        0,
        Action::RegisterModel {
            name: "llama".into(),
            description: String::new(),
            licence: Licence::Open,
            price: 0,
            lineage: None,
        },
    );
    assert!(matches!(e, Err(TxError::DuplicateName { .. })));
    let other = register(&mut c, 1, "llama", 1, None);
    assert_ne!(m, other);
    publish(&mut c, 0, m);
    publish(&mut c, 0, m);
    assert_eq!(c.state.versions(m).count(), 2);
    c.ok(
        0,
        Action::DeprecateVersion {
            model: m,
            version: 1,
        },
    );
    assert!(c.state.version(m, 1).unwrap().deprecated);
    c.ok(
        0,
        Action::UpdateModel {
            model: m,
            price: Some(42),
            licence: Some(Licence::AllowList(vec![b])),
            description: Some("new".into()),
        },
    );
    let model = c.state.model(m).unwrap();
    assert_eq!((model.price, model.description.as_str()), (42, "new"));
    // Transfer to an owner who already has the name fails; to a fresh owner works.
    assert!(matches!(
        c.run(0, Action::TransferModel { model: m, to: b }),
        Err(TxError::DuplicateName { .. })
    ));
    c.ok(
        0,
        Action::TransferModel {
            model: m,
            to: c.addr(2),
        },
    );
    assert_eq!(c.state.model(m).unwrap().owner, c.addr(2));
    assert_eq!(c.state.model_by_name(&a, "llama"), None);
    assert!(matches!(
        c.run(
            0,
            Action::DeprecateVersion {
                model: m,
                version: 2
            }
        ),
        Err(TxError::NotOwner { .. })
    ));
    // A parent must exist; shares above 100 % are refused.
    let e = c.run(
        0,
        Action::RegisterModel {
            name: "ft".into(),
            description: String::new(),
            licence: Licence::Paid,
            price: 1,
            lineage: Some(Lineage {
                parent: ModelId(77),
                upstream_bps: 10,
            }),
        },
    );
    assert!(matches!(e, Err(TxError::UnknownModel(ModelId(77)))));
    let e = c.run(
        0,
        Action::RegisterModel {
            name: "ft".into(),
            description: String::new(),
            licence: Licence::Paid,
            price: 1,
            lineage: Some(Lineage {
                parent: m,
                upstream_bps: 10_001,
            }),
        },
    );
    assert!(matches!(e, Err(TxError::BadShare(10_001))));
    c.assert_supply();
}

#[test]
fn staking_unbonding_waits_longer_than_the_challenge_window() {
    let mut c = Chain::new(1, 10_000);
    let a = c.addr(0);
    let m = register(&mut c, 0, "m", 0, None);
    c.ok(
        0,
        Action::Bond {
            amount: 5_000,
            endpoint: "http://e".into(),
            price: 3,
            models: vec![m],
        },
    );
    assert_eq!(c.state.validators(), vec![(a, 5_000)]);
    c.ok(0, Action::Unbond { amount: 2_000 });
    assert!(matches!(
        c.run(0, Action::Withdraw),
        Err(TxError::NothingToWithdraw)
    ));
    assert!(matches!(
        c.run(0, Action::Unbond { amount: 9_000 }),
        Err(TxError::InsufficientStake { .. })
    ));
    let p = c.state.params().clone();
    assert!(p.unbonding_period > p.challenge_window);
    let (release, _) = c.state.executor(&a).unwrap().unbonding[0];
    c.advance_to(release - 1);
    let before = c.state.balance(&a);
    c.ok(0, Action::Withdraw);
    assert_eq!(c.state.balance(&a), before - FEE + 2_000);
    assert_eq!(c.state.meta().total_stake, 3_000);
    c.assert_supply();
}

#[test]
fn governance_changes_a_parameter_at_the_enactment_height() {
    let mut c = Chain::new(3, 10_000);
    let m = register(&mut c, 0, "m", 0, None);
    for i in 0..3 {
        c.ok(
            i,
            Action::Bond {
                amount: 1_000 * (i as u128 + 1),
                endpoint: String::new(),
                price: 1,
                models: vec![m],
            },
        );
    }
    // An invalid value is refused at proposal time.
    assert!(matches!(
        c.run(
            0,
            Action::Propose {
                change: ParamChange {
                    key: ParamKey::SlashBps,
                    value: 20_000
                }
            }
        ),
        Err(TxError::Param(_))
    ));
    c.ok(
        0,
        Action::Propose {
            change: ParamChange {
                key: ParamKey::ChallengeBond,
                value: 777,
            },
        },
    );
    let id = ProposalId(0);
    c.ok(
        2,
        Action::Vote {
            proposal: id,
            approve: true,
        },
    ); // 3000 of 6000
    c.ok(
        0,
        Action::Vote {
            proposal: id,
            approve: false,
        },
    ); // 1000
    assert!(matches!(
        c.run(
            0,
            Action::Vote {
                proposal: id,
                approve: true
            }
        ),
        Err(TxError::AlreadyVoted { .. })
    ));
    let end = c.state.proposal(id).unwrap().voting_end;
    c.advance_to(end);
    let ProposalStatus::Passed { enact_at } = c.state.proposal(id).unwrap().status else {
        panic!("should pass: {:?}", c.state.proposal(id));
    };
    c.advance_to(enact_at - 1);
    assert_ne!(c.state.params().challenge_bond, 777);
    c.advance_to(enact_at);
    assert_eq!(c.state.params().challenge_bond, 777);
    assert_eq!(
        c.state.proposal(id).unwrap().status,
        ProposalStatus::Enacted
    );

    // Without quorum a proposal is rejected.
    c.ok(
        1,
        Action::Propose {
            change: ParamChange {
                key: ParamKey::ChallengeBond,
                value: 1,
            },
        },
    );
    c.ok(
        0,
        Action::Vote {
            proposal: ProposalId(1),
            approve: true,
        },
    ); // 1000 of 6000 < 33.4 %
    let end = c.state.proposal(ProposalId(1)).unwrap().voting_end;
    c.advance_to(end);
    assert_eq!(
        c.state.proposal(ProposalId(1)).unwrap().status,
        ProposalStatus::Rejected
    );
    assert_eq!(c.state.params().challenge_bond, 777);
}

#[test]
fn state_rebuilds_from_its_key_values_and_from_block_writes() {
    let mut c = Chain::new(3, 10_000);
    let m = register(&mut c, 0, "m", 3, None);
    let mut outs = vec![];
    publish(&mut c, 0, m);
    outs.push(c.block(vec![c.sign(
        1,
        Action::Bond {
            amount: 2_000,
            endpoint: "x".into(),
            price: 2,
            models: vec![m],
        },
    )]));
    outs.push(c.block(vec![c.sign(
        2,
        Action::RequestJob {
            model: m,
            version: None,
            input: JobInput::Inline(vec![1]),
            mode: Mode::Optimistic,
            max_fee: 100,
            executor: None,
        },
    )]));
    outs.push(c.block(vec![c.sign(1, Action::Unbond { amount: 10 })]));
    let full: std::collections::BTreeMap<_, _> = c
        .state
        .to_kv()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap()))
        .collect();
    let rebuilt = State::from_kv(full.clone()).unwrap();
    assert_eq!(rebuilt.root(), c.state.root());
    assert_eq!(rebuilt.to_kv(), c.state.to_kv());
    // The last block's writes are part of the final state.
    for (k, v) in &outs.last().unwrap().writes {
        assert_eq!(full.get(k), v.as_ref());
    }
    // Proofs for keys verify against the root; a wrong value does not.
    let key = State::account_key(&c.addr(1));
    let proof = c.state.prove(&key).unwrap();
    assert!(proof.verify(&c.state.root()));
    let mut bad = proof.clone();
    bad.value = Some(vec![0]);
    assert!(!bad.verify(&c.state.root()));
    let absent = c
        .state
        .prove(&State::account_key(&Address([9; 20])))
        .unwrap();
    assert_eq!(absent.value, None);
    assert!(absent.verify(&c.state.root()));
}

#[test]
fn replaying_every_blocks_writes_from_genesis_rebuilds_the_root() {
    let mut c = Chain::new(2, 10_000);
    let mut store: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = c
        .state
        .to_kv()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap()))
        .collect();
    let apply = |store: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
                 o: &deed_ledger::BlockOutcome| {
        for (k, v) in &o.writes {
            match v {
                Some(v) => store.insert(k.clone(), v.clone()),
                None => store.remove(k),
            };
        }
    };
    let txs = [
        common::register("a", 2),
        Action::Transfer {
            to: Address([3; 20]),
            amount: 5,
        },
    ];
    for a in txs {
        let o = c.block(vec![c.sign(0, a)]);
        apply(&mut store, &o);
    }
    let o = c.block(vec![c.sign(
        1,
        Action::Bond {
            amount: 1_500,
            endpoint: String::new(),
            price: 1,
            models: vec![ModelId(0)],
        },
    )]);
    apply(&mut store, &o);
    let o = c.block(vec![
        c.sign(0, common::publish(ModelId(0), Cid::of(b"m"), 3))
    ]);
    apply(&mut store, &o);
    let o = c.block(vec![c.sign(
        0,
        Action::RequestJob {
            model: ModelId(0),
            version: Some(1),
            input: JobInput::Inline(vec![]),
            mode: Mode::None,
            max_fee: 10,
            executor: None,
        },
    )]);
    apply(&mut store, &o);
    let o = c.block(vec![c.sign(
        1,
        Action::SubmitReceipt {
            job: JobId(0),
            receipt: Receipt {
                output: Output::Inline(vec![1]),
                ..common::receipt_for(
                    &common::with_output(vec![Hash::of(b"t"); 3], &Hash::of(&[1])),
                    Hash::of(&[1]),
                )
            },
        },
    )]);
    apply(&mut store, &o);
    let rebuilt = State::from_kv(store).unwrap();
    assert_eq!(rebuilt.root(), c.state.root());
    assert_eq!(rebuilt.meta(), c.state.meta());
}
