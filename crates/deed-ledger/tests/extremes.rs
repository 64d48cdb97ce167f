//! Property tests over transactions at the edges of their types: amounts, prices,
//! fees and stakes up to `u128::MAX`, ids and counts up to `u64::MAX`, shares past
//! 100%, names at and past their limits, replication factors 0 to 255. Accounts hold
//! an eighth of `u128::MAX` each, so prices, escrows, royalties and their shares in
//! basis points come within reach of overflow, and requests of half a balance still
//! go through.
//!
//! Every block applies (a rule that overflowed would panic here, or wrap in a release
//! build), the supply stays conserved and fully accounted for, no balance exceeds it,
//! and the state rebuilds from its key/value pairs to the same root.

#![allow(clippy::unwrap_used)]

mod common;

use common::Chain;
use deed_ledger::{Event, State, TxError};
use deed_types::*;
use proptest::prelude::*;

const N: usize = 5;
const BALANCE: u128 = u128::MAX / 8;

fn amount() -> impl Strategy<Value = u128> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(BALANCE / 2),
        Just(BALANCE - 1),
        Just(BALANCE),
        Just(u128::MAX / 2),
        Just(u128::MAX - 1),
        Just(u128::MAX),
        0u128..10_000,
    ]
}

fn id() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0u64..3, 1 => Just(u64::MAX), 1 => Just(u64::MAX - 1)]
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(1), Just(2), Just(u64::MAX), 0u64..1_000]
}

fn bps() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(5_000),
        Just(10_000),
        Just(10_001),
        Just(u16::MAX)
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-c]{1,2}",
        Just("n".repeat(64)),
        Just("n".repeat(65)),
        Just("\u{0}".into()),
    ]
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::None),
        Just(Mode::Optimistic),
        (0u8..=4).prop_map(Mode::Replicated),
        Just(Mode::Replicated(u8::MAX)),
    ]
}

fn licence() -> impl Strategy<Value = Licence> {
    prop_oneof![Just(Licence::Paid), Just(Licence::Open)]
}

/// A transaction from account `from` (or a block of no transaction).
#[derive(Clone, Debug)]
enum Op {
    Tx {
        from: usize,
        fee: u128,
        action: Action,
    },
    Advance(u64),
}

/// Requests that can go through: model 0 or 1, to any executor or to one of the
/// two, paying up to half a balance.
fn likely_request() -> impl Strategy<Value = Action> {
    (
        0u64..2,
        prop::option::of(Just(1u32)),
        prop_oneof![Just(Mode::Optimistic), (2u8..4).prop_map(Mode::Replicated)],
        prop_oneof![Just(None), (3..N).prop_map(Some)],
    )
        .prop_map(|(m, version, mode, executor)| {
            let (mode, executor) = match executor {
                Some(i) => (Mode::None, Some(common::key(i).address())),
                None => (mode, None),
            };
            Action::RequestJob {
                model: ModelId(m),
                version,
                input: JobInput::Inline(vec![1, 2]),
                mode,
                max_fee: BALANCE / 2,
                executor,
            }
        })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![1 => likely_request(), 4 => any_action()]
}

fn any_action() -> impl Strategy<Value = Action> {
    let addr = (0..N + 1).prop_map(|i| common::key(i).address());
    prop_oneof![
        (addr.clone(), amount()).prop_map(|(to, amount)| Action::Transfer { to, amount }),
        (name(), licence(), amount(), prop::option::of((id(), bps()))).prop_map(
            |(name, licence, price, lineage)| Action::RegisterModel {
                name,
                description: String::new(),
                licence,
                price,
                lineage: lineage.map(|(p, upstream_bps)| Lineage {
                    parent: ModelId(p),
                    upstream_bps,
                }),
            }
        ),
        (id(), count(), count()).prop_map(|(m, steps, cost)| Action::PublishVersion {
            model: ModelId(m),
            manifest: Cid::of(&m.to_le_bytes()),
            io_schema: String::new(),
            steps,
            cost,
            notes: String::new(),
        }),
        (
            id(),
            prop::option::of(amount()),
            prop::option::of(licence())
        )
            .prop_map(|(m, price, licence)| Action::UpdateModel {
                model: ModelId(m),
                price,
                licence,
                description: None,
            }),
        (id(), addr.clone()).prop_map(|(m, to)| Action::TransferModel {
            model: ModelId(m),
            to
        }),
        (
            id(),
            prop_oneof![Just(0u32), Just(1), Just(2), Just(u32::MAX)]
        )
            .prop_map(|(m, version)| Action::DeprecateVersion {
                model: ModelId(m),
                version
            }),
        (amount(), amount(), prop::collection::vec(id(), 0..3)).prop_map(
            |(amount, price, models)| Action::Bond {
                amount,
                endpoint: String::new(),
                price,
                models: models.into_iter().map(ModelId).collect(),
            }
        ),
        amount().prop_map(|amount| Action::Unbond { amount }),
        Just(Action::Withdraw),
        Just(Action::Unjail),
        (
            id(),
            prop::option::of(prop_oneof![Just(0u32), Just(1), Just(u32::MAX)]),
            mode(),
            amount(),
            prop::option::of(addr)
        )
            .prop_map(|(m, version, mode, max_fee, executor)| Action::RequestJob {
                model: ModelId(m),
                version,
                input: JobInput::Inline(vec![1, 2]),
                mode,
                max_fee,
                executor,
            }),
        (id(), 1u64..4, 0u8..2).prop_map(|(job, steps, root)| Action::SubmitReceipt {
            job: JobId(job),
            receipt: common::scripted_receipt(&common::with_output(
                vec![Hash([root; 32]); steps.saturating_sub(1) as usize],
                &common::true_output(),
            )),
        }),
        id().prop_map(|job| Action::Challenge {
            job: JobId(job),
            trace_root: Hash([9; 32]),
        }),
        (
            id(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..4))
        )
            .prop_map(|(job, input)| Action::DeclineJob {
                job: JobId(job),
                input,
            }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..N, prop_oneof![8 => 1u128..3, 1 => Just(0), 1 => amount()], action())
            .prop_map(|(from, fee, action)| Op::Tx { from, fee, action }),
        // Receipts from the serving executors for the first jobs, right or wrong,
        // and challenges of them: payouts, slashes and disputes of large stakes.
        2 => (3..N, 0u64..6, 2u64..4, 0u8..2).prop_map(|(from, job, steps, root)| Op::Tx {
            from,
            fee: 1,
            action: Action::SubmitReceipt {
                job: JobId(job),
                receipt: common::scripted_receipt(&common::with_output(
                    vec![Hash([root; 32]); steps as usize - 1],
                    &common::true_output(),
                )),
            },
        }),
        1 => (0..3usize, 0u64..6).prop_map(|(from, job)| Op::Tx {
            from,
            fee: 1,
            action: Action::Challenge {
                job: JobId(job),
                trace_root: Hash([9; 32]),
            },
        }),
        // Declines from the serving executors of the first jobs, whose inputs the
        // referee finds fit no model: escrows of large amounts split and returned.
        1 => (3..N, 0u64..6, any::<bool>()).prop_map(|(from, job, blob)| Op::Tx {
            from,
            fee: 1,
            action: Action::DeclineJob {
                job: JobId(job),
                input: blob.then(|| vec![1, 2]),
            },
        }),
        1 => prop_oneof![Just(1u64), Just(30), Just(400)].prop_map(Op::Advance),
    ]
}

/// Accounts 0–4 with `BALANCE` each. Model 0 (price `BALANCE / 8`)
/// is account 0's, model 1 (price `BALANCE / 8`, half of it paid up to model 0)
/// account 1's, one version each, both served by accounts 3 and 4, bonded with half
/// their balance at a price of `BALANCE / 16`: a call costs about a fifth of a
/// balance, so requests with a `max_fee` of half a balance go through.
fn setup() -> Chain {
    let mut c = Chain::new(N, BALANCE);
    // The job input every likely request carries: one to decline.
    c.referee.unfit.insert(vec![1, 2]);
    for (owner, lineage) in [
        (0, None),
        (
            1,
            Some(Lineage {
                parent: ModelId(0),
                upstream_bps: 5_000,
            }),
        ),
    ] {
        let model = ModelId(c.state.meta().next_model);
        c.ok(
            owner,
            Action::RegisterModel {
                name: "base".into(),
                description: String::new(),
                licence: Licence::Paid,
                price: BALANCE / 8,
                lineage,
            },
        );
        c.ok(owner, common::publish(model, Cid::of(b"base"), 2));
    }
    for i in [3, 4] {
        c.ok(
            i,
            Action::Bond {
                amount: BALANCE / 2,
                endpoint: String::new(),
                price: BALANCE / 16,
                models: vec![ModelId(0), ModelId(1)],
            },
        );
    }
    c
}

fn burned(events: &[Event]) -> u128 {
    events
        .iter()
        .map(|e| match e {
            Event::Burned { amount, .. } => *amount,
            _ => 0,
        })
        .sum()
}

/// An executor asking a price whose cost overflows an amount is passed over: the
/// model's other executors still take its jobs. (Its price made every request of the
/// model fail with an overflow, so one bond could shut a model down.)
#[test]
fn an_executor_asking_an_absurd_price_does_not_block_a_model() {
    let mut c = setup();
    for price in [u128::MAX, u128::MAX / 3] {
        c.ok(
            2,
            Action::Bond {
                amount: BALANCE / 4,
                endpoint: String::new(),
                price,
                models: vec![ModelId(0)],
            },
        );
        let job = JobId(c.state.meta().next_job);
        c.ok(
            0,
            Action::RequestJob {
                model: ModelId(0),
                version: None,
                input: JobInput::Inline(vec![1, 2]),
                mode: Mode::Optimistic,
                max_fee: BALANCE / 2,
                executor: None,
            },
        );
        let executors = c.state.job(job).unwrap().executors.clone();
        assert_eq!(executors.len(), 1);
        assert_ne!(executors[0], c.addr(2), "price {price}");
        // Named directly, it is not eligible (its cost does not fit an amount) or
        // too dear.
        let named = c.run(
            0,
            Action::RequestJob {
                model: ModelId(0),
                version: None,
                input: JobInput::Inline(vec![1, 2]),
                mode: Mode::None,
                max_fee: BALANCE / 2,
                executor: Some(c.addr(2)),
            },
        );
        assert!(
            matches!(
                named,
                Err(TxError::ExecutorNotEligible { .. } | TxError::MaxFeeTooLow { .. })
            ),
            "{named:?}"
        );
        c.ok(
            2,
            Action::Unbond {
                amount: BALANCE / 4,
            },
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn transactions_at_the_edges_of_their_types_keep_the_books(
        ops in prop::collection::vec(op(), 1..40)
    ) {
        let mut c = setup();
        for op in ops {
            let supply = c.state.meta().supply;
            let events = match op {
                Op::Advance(blocks) => c.advance_to(c.state.height() + blocks),
                Op::Tx { from, fee, action } => {
                    let nonce = c.state.nonce(&c.addr(from));
                    let tx = Transaction { chain_id: common::CHAIN, nonce, fee, action }
                        .sign(&c.keys[from])
                        .unwrap();
                    c.block(vec![tx]).events
                }
            };
            prop_assert_eq!(c.state.meta().supply, supply - burned(&events));
            prop_assert_eq!(c.state.accounted_supply(), Some(c.state.meta().supply));
            for i in 0..=N {
                prop_assert!(c.state.balance(&common::key(i).address()) <= c.state.meta().supply);
            }
        }
        let kv = c.state.to_kv().into_iter().map(|(k, v)| (k, v.unwrap()));
        prop_assert_eq!(State::from_kv(kv).unwrap().root(), c.state.root());
    }
}
