//! Property tests over random transaction sequences: supply conservation, no
//! balance beyond the supply, nonce monotonicity, and all-or-nothing transactions.

#![allow(clippy::unwrap_used)]

mod common;

use common::Chain;
use deed_ledger::{Event, State};
use deed_types::*;
use proptest::prelude::*;

const N: usize = 5;

#[derive(Clone, Debug)]
enum Op {
    Transfer {
        from: usize,
        to: usize,
        amount: u128,
    },
    Request {
        from: usize,
        mode: u8,
        max_fee: u128,
    },
    Receipt {
        from: usize,
        job: u64,
        steps: u64,
        root: u8,
    },
    Challenge {
        from: usize,
        job: u64,
    },
    Decline {
        from: usize,
        job: u64,
        blob: bool,
    },
    Bond {
        from: usize,
        amount: u128,
    },
    Unbond {
        from: usize,
        amount: u128,
    },
    Withdraw {
        from: usize,
    },
    Register {
        from: usize,
        name: u8,
        parent: Option<u64>,
    },
    Publish {
        from: usize,
        model: u64,
    },
    Advance {
        blocks: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..N;
    prop_oneof![
        (who.clone(), 0..N, 0u128..3_000).prop_map(|(from, to, amount)| Op::Transfer {
            from,
            to,
            amount
        }),
        (who.clone(), 0u8..3, 0u128..600).prop_map(|(from, mode, max_fee)| Op::Request {
            from,
            mode,
            max_fee
        }),
        (who.clone(), 0u64..6, 2u64..4, 0u8..2).prop_map(|(from, job, steps, root)| Op::Receipt {
            from,
            job,
            steps,
            root
        }),
        (who.clone(), 0u64..6).prop_map(|(from, job)| Op::Challenge { from, job }),
        // Mostly from the executors bonded at setup (3 and 4).
        (prop_oneof![3usize..5, who.clone()], 0u64..6, any::<bool>())
            .prop_map(|(from, job, blob)| Op::Decline { from, job, blob }),
        (who.clone(), 0u128..3_000).prop_map(|(from, amount)| Op::Bond { from, amount }),
        (who.clone(), 0u128..3_000).prop_map(|(from, amount)| Op::Unbond { from, amount }),
        who.clone().prop_map(|from| Op::Withdraw { from }),
        (who.clone(), 0u8..3, prop::option::of(0u64..3))
            .prop_map(|(from, name, parent)| Op::Register { from, name, parent }),
        (who, 0u64..3).prop_map(|(from, model)| Op::Publish { from, model }),
        (1u64..60).prop_map(|blocks| Op::Advance { blocks }),
    ]
}

fn action(op: &Op) -> Option<(usize, Action)> {
    Some(match op.clone() {
        Op::Transfer { from, to, amount } => (
            from,
            Action::Transfer {
                to: common::key(to).address(),
                amount,
            },
        ),
        Op::Request {
            from,
            mode,
            max_fee,
        } => (
            from,
            Action::RequestJob {
                model: ModelId(0),
                version: None,
                input: JobInput::Inline(UNFIT.to_vec()),
                mode: [Mode::None, Mode::Optimistic, Mode::Replicated(2)][mode as usize],
                max_fee,
                executor: None,
            },
        ),
        Op::Receipt {
            from,
            job,
            steps,
            root,
        } => (
            from,
            Action::SubmitReceipt {
                job: JobId(job),
                receipt: common::scripted_receipt(&common::with_output(
                    vec![Hash([root; 32]); steps.saturating_sub(1) as usize],
                    &common::true_output(),
                )),
            },
        ),
        Op::Challenge { from, job } => (
            from,
            Action::Challenge {
                job: JobId(job),
                trace_root: Hash([9; 32]),
            },
        ),
        Op::Decline { from, job, blob } => (
            from,
            Action::DeclineJob {
                job: JobId(job),
                input: blob.then(|| UNFIT.to_vec()),
            },
        ),
        Op::Bond { from, amount } => (
            from,
            Action::Bond {
                amount,
                endpoint: String::new(),
                price: 20,
                models: vec![ModelId(0)],
            },
        ),
        Op::Unbond { from, amount } => (from, Action::Unbond { amount }),
        Op::Withdraw { from } => (from, Action::Withdraw),
        Op::Register { from, name, parent } => (
            from,
            Action::RegisterModel {
                name: format!("m{name}"),
                description: String::new(),
                licence: Licence::Paid,
                price: 7,
                lineage: parent.map(|p| Lineage {
                    parent: ModelId(p),
                    upstream_bps: 3_000,
                }),
            },
        ),
        Op::Publish { from, model } => (
            from,
            common::publish(ModelId(model), Cid::of(&[model as u8]), 2),
        ),
        Op::Advance { .. } => return None,
    })
}

/// The job input of every request: one the referee finds does not fit the model, so
/// that its jobs may be declined.
const UNFIT: [u8; 2] = [1, 2];

fn setup() -> Chain {
    let mut c = Chain::new(N, 5_000);
    c.referee.unfit.insert(UNFIT.to_vec());
    c.ok(0, common::register("base", 10));
    c.ok(0, common::publish(ModelId(0), Cid::of(b"base"), 2));
    for i in [3, 4] {
        c.ok(
            i,
            Action::Bond {
                amount: 1_500,
                endpoint: String::new(),
                price: 20,
                models: vec![ModelId(0)],
            },
        );
    }
    c
}

/// The first byte of the state's timer keys (`deed_ledger::state`'s `prefix::TIMER`).
const TIMER_PREFIX: u8 = 0x0c;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn invariants_hold_over_random_histories(
        ops in prop::collection::vec((op(), 0u128..3, prop_oneof![8 => Just(0i64), 1 => Just(-1i64), 1 => Just(1i64)]), 1..30)
    ) {
        let mut c = setup();
        for (op, fee, nonce_skew) in ops {
            let Some((from, act)) = action(&op) else {
                let Op::Advance { blocks } = op else { unreachable!() };
                let supply = c.state.meta().supply;
                let events = c.advance_to(c.state.height() + blocks);
                let burned: u128 = events.iter().map(|e| if let Event::Burned { amount, .. } = e { *amount } else { 0 }).sum();
                prop_assert_eq!(c.state.meta().supply, supply - burned);
                prop_assert_eq!(c.state.accounted_supply(), Some(c.state.meta().supply));
                continue;
            };
            let sender = c.addr(from);
            let before = c.state.account(&sender);
            let proposer_before = c.state.balance(&c.proposer);
            let supply = c.state.meta().supply;
            let nonce = (before.nonce as i64 + nonce_skew).max(0) as u64;
            let tx = Transaction { chain_id: common::CHAIN, nonce, fee, action: act }.sign(&c.keys[from]).unwrap();
            let out = c.block(vec![tx]);
            let result = out.results[0].outcome.clone();
            let after = c.state.account(&sender);

            // Supply: conserved except for burns, and always fully accounted for.
            let burned: u128 = out.events.iter().map(|e| if let Event::Burned { amount, .. } = e { *amount } else { 0 }).sum();
            prop_assert_eq!(c.state.meta().supply, supply - burned);
            prop_assert_eq!(c.state.accounted_supply(), Some(c.state.meta().supply));
            prop_assert!(after.balance <= c.state.meta().supply);

            // Nonce: +1 exactly when the transaction was charged, never otherwise.
            let charged = match &result { Ok(()) => true, Err(e) => !e.is_uncharged() };
            prop_assert_eq!(after.nonce, before.nonce + u64::from(charged));
            if nonce != before.nonce {
                prop_assert!(!charged);
            }

            // All or nothing: when no timer had an effect (the only event left is the
            // fee), a failed transaction wrote nothing but the sender, the proposer and
            // the block metadata. A timer that fires without effect (the deadline of a
            // job already answered, for instance) still removes its own entry.
            let only_fee = out.events.iter().all(|e| matches!(e, Event::Paid { reason: deed_ledger::Reason::TxFee, .. }));
            if let Err(e) = &result {
                if only_fee {
                    let allowed = [vec![0u8], State::account_key(&sender), State::account_key(&c.proposer)];
                    for (k, v) in &out.writes {
                        let fired_timer = k.first() == Some(&TIMER_PREFIX) && v.is_none();
                        prop_assert!(allowed.contains(k) || fired_timer, "failed tx {:?} wrote {:?}", e, k);
                    }
                    if charged {
                        prop_assert_eq!(after.balance, before.balance - fee);
                        prop_assert_eq!(c.state.balance(&c.proposer), proposer_before + fee);
                    } else {
                        prop_assert_eq!(&after, &before);
                        prop_assert_eq!(c.state.balance(&c.proposer), proposer_before);
                    }
                }
            }
        }
        // A restarted node rebuilds the identical state from its key/value pairs.
        let kv = c.state.to_kv().into_iter().map(|(k, v)| (k, v.unwrap()));
        prop_assert_eq!(State::from_kv(kv).unwrap().root(), c.state.root());
    }
}
