//! A small chain driver for the ledger's integration tests: funded keys, automatic
//! nonces, one call per block, and a scripted referee.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;

use deed_ledger::trace::{self, Trace};
use deed_ledger::{
    apply_block, next_block, BlockOutcome, Params, Referee, RefereeError, RuntimeReferee, State,
    StepInput, TxError,
};
use deed_types::{
    Action, Address, Cid, Hash, JobId, JobInput, Licence, Mode, ModelId, Output, Receipt,
    SecretKey, SignedTransaction, Transaction,
};

pub const CHAIN: u64 = 4242;
pub const FEE: u128 = 1;

/// The output hash of the scripted traces' honest result.
pub fn true_output() -> Hash {
    Hash::of(b"scripted output")
}

/// The output hash of a scripted result that lies about the output.
pub fn false_output() -> Hash {
    Hash::of(b"scripted false output")
}

/// A trace over the node step hashes `nodes`, then the output leaf of `output`.
pub fn with_output(mut nodes: Vec<Hash>, output: &Hash) -> Trace {
    let m = nodes.len() as u64;
    nodes.push(deed_runtime::trace::output_leaf(m, output));
    Trace::new(nodes)
}

/// The receipt of `t` with the output hash its output leaf binds.
pub fn receipt_for(t: &Trace, output: Hash) -> Receipt {
    Receipt {
        output: Output::Hash(output),
        trace_root: t.root(),
        steps: t.len() as u64,
        output_proof: trace::output_proof(t),
    }
}

/// The receipt of a scripted trace (one made by [`with_output`] with
/// [`true_output`] or [`false_output`]).
pub fn scripted_receipt(t: &Trace) -> Receipt {
    let m = t.len().saturating_sub(1) as u64;
    let last = t.step_hash(t.len().saturating_sub(1));
    let output = [true_output(), false_output()]
        .into_iter()
        .find(|o| last == Some(deed_runtime::trace::output_leaf(m, o)))
        .expect("a scripted trace ends with a scripted output leaf");
    receipt_for(t, output)
}

/// The referee of the tests: the true step hashes of each model are known in advance
/// (they stand for what the canonical runtime would compute), and so are the job
/// inputs that fit no model.
#[derive(Default)]
pub struct ScriptedReferee {
    pub truth: HashMap<Cid, Vec<Hash>>,
    pub unfit: std::collections::HashSet<Vec<u8>>,
}

impl Referee for ScriptedReferee {
    fn execute_step(
        &self,
        model: &Cid,
        step: u64,
        _inputs: &[StepInput],
    ) -> Result<Hash, RefereeError> {
        let steps = self
            .truth
            .get(model)
            .ok_or(RefereeError::ModelUnavailable(*model))?;
        steps
            .get(step as usize)
            .copied()
            .ok_or(RefereeError::NoSuchStep {
                step,
                steps: steps.len() as u64,
            })
    }

    fn input_fault(
        &self,
        _model: &Cid,
        input: &[u8],
        _budget: u64,
    ) -> Result<Option<String>, RefereeError> {
        Ok(self
            .unfit
            .contains(input)
            .then(|| "scripted: the input fits no model".to_owned()))
    }
}

pub struct Chain {
    pub state: State,
    pub keys: Vec<SecretKey>,
    pub proposer: Address,
    pub referee: ScriptedReferee,
    /// When set, blocks are applied with this production referee instead.
    pub runtime: Option<RuntimeReferee>,
    /// When set, blocks are applied with this referee, before `runtime`.
    pub custom: Option<Box<dyn Referee>>,
    pub time: u64,
}

/// A paid model named `name` with royalty `price`, no description and no parent.
pub fn register(name: &str, price: u128) -> Action {
    Action::RegisterModel {
        name: name.into(),
        description: String::new(),
        licence: Licence::Paid,
        price,
        lineage: None,
    }
}

/// Version `manifest` of `model` with `steps` steps, cost 1, no schema or notes.
pub fn publish(model: ModelId, manifest: Cid, steps: u64) -> Action {
    Action::PublishVersion {
        model,
        manifest,
        io_schema: String::new(),
        steps,
        cost: 1,
        notes: String::new(),
    }
}

pub fn key(i: usize) -> SecretKey {
    SecretKey::from_seed(format!("test account {i}").as_bytes())
}

impl Chain {
    pub fn new(accounts: usize, balance: u128) -> Chain {
        Self::with_params(accounts, balance, Params::default())
    }

    pub fn with_params(accounts: usize, balance: u128, params: Params) -> Chain {
        let keys: Vec<SecretKey> = (0..accounts).map(key).collect();
        let alloc: Vec<(Address, u128)> = keys.iter().map(|k| (k.address(), balance)).collect();
        let proposer = SecretKey::from_seed(b"proposer").address();
        Chain {
            state: State::genesis(CHAIN, params, &alloc).unwrap(),
            keys,
            proposer,
            referee: ScriptedReferee::default(),
            runtime: None,
            custom: None,
            time: 1_700_000_000,
        }
    }

    pub fn addr(&self, i: usize) -> Address {
        self.keys[i].address()
    }

    pub fn sign(&self, i: usize, action: Action) -> SignedTransaction {
        let nonce = self.state.nonce(&self.addr(i));
        Transaction {
            chain_id: CHAIN,
            nonce,
            fee: FEE,
            action,
        }
        .sign(&self.keys[i])
        .unwrap()
    }

    /// Several transactions from wallet `i`, for one block: nonces in order.
    #[allow(dead_code)]
    pub fn sign_many(&self, i: usize, actions: Vec<Action>) -> Vec<SignedTransaction> {
        let first = self.state.nonce(&self.addr(i));
        actions
            .into_iter()
            .zip(first..)
            .map(|(action, nonce)| {
                Transaction {
                    chain_id: CHAIN,
                    nonce,
                    fee: FEE,
                    action,
                }
                .sign(&self.keys[i])
                .unwrap()
            })
            .collect()
    }

    pub fn block(&mut self, txs: Vec<SignedTransaction>) -> BlockOutcome {
        self.time += 5;
        let b = next_block(&self.state, self.proposer, self.time, txs);
        let referee: &dyn Referee = match (&self.custom, &self.runtime) {
            (Some(r), _) => r.as_ref(),
            (None, Some(r)) => r,
            (None, None) => &self.referee,
        };
        apply_block(&mut self.state, &b, referee).unwrap()
    }

    /// One transaction in its own block; returns its outcome.
    pub fn run(&mut self, i: usize, action: Action) -> Result<(), TxError> {
        let tx = self.sign(i, action);
        let out = self.block(vec![tx]);
        out.results[0].outcome.clone()
    }

    /// Account `i` requests an optimistic job of `model` on `input` (fee cap
    /// 1,000, any executor); the new job's id.
    pub fn request_optimistic(&mut self, i: usize, model: ModelId, input: JobInput) -> JobId {
        let job = JobId(self.state.meta().next_job);
        self.ok(
            i,
            Action::RequestJob {
                model,
                version: None,
                input,
                mode: Mode::Optimistic,
                max_fee: 1_000,
                executor: None,
            },
        );
        job
    }

    pub fn ok(&mut self, i: usize, action: Action) {
        let a = format!("{action:?}");
        self.run(i, action)
            .unwrap_or_else(|e| panic!("{a} failed: {e}"));
    }

    /// Empty blocks until the height is `h`.
    pub fn advance_to(&mut self, h: u64) -> Vec<deed_ledger::Event> {
        let mut events = Vec::new();
        while self.state.height() < h {
            events.extend(self.block(vec![]).events);
        }
        events
    }

    pub fn assert_supply(&self) {
        assert_eq!(
            self.state.accounted_supply(),
            Some(self.state.meta().supply)
        );
    }
}
