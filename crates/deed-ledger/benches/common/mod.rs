//! The benchmark block shared by the criterion bench and the profiling driver:
//! 1,000 signed transactions — 400 transfers, 300 job requests and 300 receipts —
//! over a state with 50 executors and 300 open jobs.

#![allow(missing_docs, dead_code, clippy::unwrap_used)]

use deed_ledger::{apply_block, next_block, Params, Referee, RefereeError, State, StepInput};
use deed_types::*;

const CHAIN: u64 = 7;
const TRANSFERS: usize = 400;
const REQUESTS: usize = 300;
const RECEIPTS: usize = 300;
const EXECUTORS: usize = 50;

pub struct NoReferee;
impl Referee for NoReferee {
    fn execute_step(&self, model: &Cid, _: u64, _: &[StepInput]) -> Result<Hash, RefereeError> {
        Err(RefereeError::ModelUnavailable(*model))
    }
}

pub struct Setup {
    pub state: State,
    pub keys: Vec<SecretKey>,
    pub proposer: Address,
}

impl Setup {
    fn tx(&self, i: usize, action: Action) -> SignedTransaction {
        self.tx_nonce(i, self.state.nonce(&self.keys[i].address()), action)
    }
    fn tx_nonce(&self, i: usize, nonce: u64, action: Action) -> SignedTransaction {
        Transaction {
            chain_id: CHAIN,
            nonce,
            fee: 1,
            action,
        }
        .sign(&self.keys[i])
        .unwrap()
    }
    fn apply(&mut self, txs: Vec<SignedTransaction>) {
        let b = next_block(&self.state, self.proposer, 0, txs);
        let out = apply_block(&mut self.state, &b, &NoReferee).unwrap();
        assert!(
            out.results.iter().all(|r| r.outcome.is_ok()),
            "setup tx failed"
        );
    }
}

/// Accounts: 0 owns the model; 1..=EXECUTORS are executors; then requesters and
/// senders of transfers.
pub fn setup() -> (Setup, Block) {
    let n = 1 + EXECUTORS + REQUESTS * 2 + TRANSFERS;
    let keys: Vec<SecretKey> = (0..n)
        .map(|i| SecretKey::from_seed(format!("bench {i}").as_bytes()))
        .collect();
    let alloc: Vec<(Address, u128)> = keys.iter().map(|k| (k.address(), 1_000_000)).collect();
    let state = State::genesis(CHAIN, Params::default(), &alloc).unwrap();
    let mut s = Setup {
        state,
        keys,
        proposer: Address([0xee; 20]),
    };
    s.apply(vec![s.tx(
        0,
        Action::RegisterModel {
            name: "m".into(),
            description: String::new(),
            licence: Licence::Paid,
            price: 5,
            lineage: None,
        },
    )]);
    s.apply(vec![s.tx(
        0,
        Action::PublishVersion {
            model: ModelId(0),
            manifest: Cid::of(b"m"),
            io_schema: String::new(),
            steps: 16,
            cost: 100,
            notes: String::new(),
        },
    )]);
    s.apply(
        (1..=EXECUTORS)
            .map(|i| {
                s.tx(
                    i,
                    Action::Bond {
                        amount: 10_000,
                        endpoint: String::new(),
                        price: 20,
                        models: vec![ModelId(0)],
                    },
                )
            })
            .collect(),
    );
    let request = |mode| Action::RequestJob {
        model: ModelId(0),
        version: None,
        input: JobInput::Inline(vec![0; 64]),
        mode,
        max_fee: 1_000,
        executor: None,
    };
    // Jobs the bench block's receipts answer.
    let first_requester = 1 + EXECUTORS;
    s.apply(
        (0..RECEIPTS)
            .map(|j| s.tx(first_requester + j, request(Mode::None)))
            .collect(),
    );

    let mut txs = Vec::with_capacity(1_000);
    let mut exec_nonce = std::collections::HashMap::new();
    for j in 0..RECEIPTS {
        let job = s.state.job(JobId(j as u64)).unwrap();
        let e = job.executors[0];
        let i = s.keys.iter().position(|k| k.address() == e).unwrap();
        let nonce = exec_nonce.entry(i).or_insert_with(|| s.state.nonce(&e));
        // Sixteen nodes, then the output step binding this job's output.
        let output = Hash::of(&[j as u8]);
        let mut leaves = vec![Hash::of(b"trace"); 16];
        leaves.push(deed_runtime::trace::output_leaf(16, &output));
        let trace = deed_ledger::trace::Trace::new(leaves);
        let receipt = Receipt {
            output: Output::Hash(output),
            trace_root: trace.root(),
            steps: trace.len() as u64,
            output_proof: deed_ledger::trace::output_proof(&trace),
        };
        txs.push(s.tx_nonce(
            i,
            *nonce,
            Action::SubmitReceipt {
                job: JobId(j as u64),
                receipt,
            },
        ));
        *nonce += 1;
    }
    for r in 0..REQUESTS {
        txs.push(s.tx(first_requester + RECEIPTS + r, request(Mode::Optimistic)));
    }
    let first_sender = first_requester + RECEIPTS + REQUESTS;
    for t in 0..TRANSFERS {
        let to = s.keys[(t * 7) % s.keys.len()].address();
        txs.push(s.tx(first_sender + t, Action::Transfer { to, amount: 10 }));
    }
    // Interleave kinds as a real block would.
    let mut mixed = Vec::with_capacity(txs.len());
    let (a, rest) = txs.split_at(RECEIPTS);
    let (b, c) = rest.split_at(REQUESTS);
    for k in 0..TRANSFERS {
        if let Some(x) = a.get(k) {
            mixed.push(x.clone());
        }
        if let Some(x) = b.get(k) {
            mixed.push(x.clone());
        }
        if let Some(x) = c.get(k) {
            mixed.push(x.clone());
        }
    }
    let block = next_block(&s.state, s.proposer, 1, mixed);
    (s, block)
}
