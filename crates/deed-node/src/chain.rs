//! The committed chain: the ledger state in memory over a [`StateStore`], and the
//! transaction index, both written atomically with every block.
//!
//! The index lives in the same store under a key prefix the ledger never uses, so
//! one [`StateStore::commit`] persists a block, its state writes and its index
//! entries together: after a crash the index never points at a block that is not
//! there, and no block lacks its index.
//!
//! Besides transactions it keeps what the ledger state forgets on settlement: a
//! job's fee breakdown (the ledger empties the escrow when it pays out) and the
//! amount a resolved dispute slashed.
//!
//! Among the store's local records (part of no block) it keeps the direct calls
//! this node's executors served and the chain has not settled: the signed request,
//! written before the answer leaves the node. A block that includes a request, or
//! spends its nonce otherwise, deletes its record in the same atomic commit; a
//! restarted node reloads the rest, refuses to serve them again and queues them
//! for settlement.

use borsh::{BorshDeserialize, BorshSerialize};
use deed_ledger::{apply_block, BlockOutcome, Escrow, Event, Reason, Referee, State, TxResult};
use deed_store::{Commit, Head, StateStore};
use std::collections::HashMap;

use deed_types::{Action, Address, Amount, Block, DisputeId, Hash, JobId, SignedTransaction};

use crate::error::NodeError;

/// The first byte of every index key. The ledger's prefixes are small numbers.
const INDEX_PREFIX: u8 = 0xf0;

/// What the index records about an included transaction.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct TxRecord {
    /// Height of the block.
    pub height: u64,
    /// The recovered sender.
    pub sender: Option<Address>,
    /// The action's name.
    pub action: String,
    /// The ledger's error, if it failed.
    pub error: Option<String>,
    /// The id it created (model, job, dispute or proposal).
    pub created: Option<u64>,
    /// Its events, human-readable.
    pub events: Vec<String>,
}

/// A block as committed, with what it did, for the roles that follow the chain.
#[derive(Clone, Debug)]
pub struct Committed {
    /// The block.
    pub block: Block,
    /// What applying it did.
    pub outcome: BlockOutcome,
}

impl Committed {
    /// The events of transaction `i` of the block.
    pub fn tx_events(&self, r: &TxResult) -> &[Event] {
        self.outcome.events.get(r.events.clone()).unwrap_or(&[])
    }
}

/// The local-record prefix of served direct calls: `s` + request hash. (The node
/// keeps open uploads under `u`.)
const SERVED_PREFIX: u8 = b's';

fn served_key(hash: &Hash) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(SERVED_PREFIX);
    k.extend_from_slice(hash.as_bytes());
    k
}

/// A direct call served and not yet settled.
#[derive(Clone, Debug)]
struct Served {
    stx: SignedTransaction,
    sender: Address,
}

/// The ledger state and its store.
pub struct Chain {
    state: State,
    store: Box<dyn StateStore + Send>,
    head: Head,
    /// Served direct calls awaiting settlement, as persisted in the local records.
    served: HashMap<Hash, Served>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").field("head", &self.head).finish()
    }
}

fn index_key(hash: &Hash) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(INDEX_PREFIX);
    k.extend_from_slice(hash.as_bytes());
    k
}

/// Index keys of ids: 10 bytes, so they never collide with the 33-byte transaction
/// keys.
fn id_key(kind: u8, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(10);
    k.push(INDEX_PREFIX);
    k.push(kind);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

const JOB_FEES: u8 = b'j';
const DISPUTE_SLASHED: u8 = b'd';

/// What a dispute resolved at `events[i]` took from its loser: the winner's reward
/// plus the burned rest, which the ledger emits just before `DisputeResolved`
/// (`credit` and `burn` emit nothing for zero amounts, so each may be absent).
fn slashed_before(events: &[Event], i: usize) -> Amount {
    let mut total: Amount = 0;
    for e in events[..i].iter().rev().take(2) {
        match e {
            Event::Burned {
                amount,
                reason: Reason::Slash,
            }
            | Event::Paid {
                amount,
                reason: Reason::DisputeReward,
                ..
            } => total = total.saturating_add(*amount),
            _ => break,
        }
    }
    total
}

impl Chain {
    /// Opens the chain in `store`: reloads the committed state (checking it against
    /// the recorded state root), or commits `genesis()` to an empty store.
    pub fn open(
        mut store: Box<dyn StateStore + Send>,
        genesis: impl FnOnce() -> Result<State, NodeError>,
    ) -> Result<Chain, NodeError> {
        match store.latest()? {
            None => {
                let state = genesis()?;
                let writes = state
                    .to_kv()
                    .into_iter()
                    .filter(|(_, v)| v.is_some())
                    .collect();
                let head = Head {
                    height: 0,
                    block_hash: state.meta().last_block_hash,
                    state_root: state.root(),
                };
                store.commit(Commit {
                    height: 0,
                    block_hash: head.block_hash,
                    block: Vec::new(),
                    state_root: head.state_root,
                    writes,
                    local: Vec::new(),
                })?;
                Ok(Chain {
                    state,
                    store,
                    head,
                    served: HashMap::new(),
                })
            }
            Some(head) => {
                let pairs = store
                    .iter()?
                    .into_iter()
                    .filter(|(k, _)| k.first() != Some(&INDEX_PREFIX));
                let state = State::from_kv(pairs)?;
                if state.root() != head.state_root || state.height() != head.height {
                    return Err(NodeError::Corrupt(format!(
                        "stored state has root {} at height {}, the head says {} at {}",
                        state.root(),
                        state.height(),
                        head.state_root,
                        head.height
                    )));
                }
                let mut chain = Chain {
                    state,
                    store,
                    head,
                    served: HashMap::new(),
                };
                chain.load_served()?;
                Ok(chain)
            }
        }
    }

    /// Reloads the served direct calls, dropping those the chain settled or can no
    /// longer settle (their nonce is spent) and records that do not decode.
    fn load_served(&mut self) -> Result<(), NodeError> {
        let mut stale = Vec::new();
        for (key, value) in self.store.local_prefix(&[SERVED_PREFIX])? {
            let entry = SignedTransaction::decode(&value)
                .ok()
                .and_then(|stx| stx.sender().ok().map(|sender| Served { stx, sender }));
            match entry {
                Some(e) if self.state.nonce(&e.sender) <= e.stx.tx.nonce => {
                    self.served.insert(e.stx.hash(), e);
                }
                Some(_) => stale.push((key, None)),
                None => {
                    tracing::warn!("dropping a served-request record that does not decode");
                    stale.push((key, None));
                }
            }
        }
        if !stale.is_empty() {
            self.store.put_local(stale)?;
        }
        Ok(())
    }

    /// Records, durably, that this node served the direct call `stx` from `sender`:
    /// until the chain settles it (or spends its nonce), the node refuses to serve
    /// it again, restarts included.
    pub fn mark_served(
        &mut self,
        stx: &SignedTransaction,
        sender: Address,
    ) -> Result<(), NodeError> {
        let hash = stx.hash();
        self.store
            .put_local(vec![(served_key(&hash), Some(stx.encode()))])?;
        self.served.insert(
            hash,
            Served {
                stx: stx.clone(),
                sender,
            },
        );
        Ok(())
    }

    /// Applies writes to the store's local records (see [`StateStore::put_local`]);
    /// each user keeps its keys under a prefix byte of its own.
    pub fn put_local(&mut self, writes: Vec<deed_store::state::Write>) -> Result<(), NodeError> {
        Ok(self.store.put_local(writes)?)
    }

    /// The local records under `prefix`.
    pub fn local_prefix(&self, prefix: &[u8]) -> Result<Vec<deed_store::state::Entry>, NodeError> {
        Ok(self.store.local_prefix(prefix)?)
    }

    /// Deletes the served record of `hash`.
    pub fn unmark_served(&mut self, hash: &Hash) -> Result<(), NodeError> {
        if self.served.remove(hash).is_some() {
            self.store.put_local(vec![(served_key(hash), None)])?;
        }
        Ok(())
    }

    /// Whether the direct call `hash` was served and is not settled yet.
    pub fn is_served(&self, hash: &Hash) -> bool {
        self.served.contains_key(hash)
    }

    /// The served direct calls awaiting settlement with their senders, each sender's
    /// in nonce order: the order in which a mempool that admits only a sender's next
    /// nonce takes them.
    pub fn served_requests(&self) -> Vec<(SignedTransaction, Address)> {
        let mut served: Vec<&Served> = self.served.values().collect();
        served.sort_by_key(|e| (e.sender, e.stx.tx.nonce));
        served
            .into_iter()
            .map(|e| (e.stx.clone(), e.sender))
            .collect()
    }

    /// The served direct calls that `block` settles (includes) or that can no
    /// longer be settled after it (their sender's nonce moved past them).
    fn settled_by(&self, block: &Block) -> Vec<Hash> {
        let included: std::collections::HashSet<Hash> =
            block.txs.iter().map(SignedTransaction::hash).collect();
        self.served
            .iter()
            .filter(|(h, e)| included.contains(h) || self.state.nonce(&e.sender) > e.stx.tx.nonce)
            .map(|(h, _)| *h)
            .collect()
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The last committed block.
    pub fn head(&self) -> Head {
        self.head
    }

    /// What the index knows about an included transaction.
    pub fn tx(&self, hash: &Hash) -> Result<Option<TxRecord>, NodeError> {
        match self.store.get(&index_key(hash))? {
            None => Ok(None),
            Some(bytes) => TxRecord::try_from_slice(&bytes)
                .map(Some)
                .map_err(|e| NodeError::Corrupt(format!("tx index entry: {e}"))),
        }
    }

    /// A job's fee breakdown as escrowed when it was requested; it stays readable
    /// after the ledger pays the escrow out. `None` for jobs older than the index.
    pub fn job_fees(&self, job: JobId) -> Result<Option<Escrow>, NodeError> {
        match self.store.get(&id_key(JOB_FEES, job.0))? {
            None => Ok(None),
            Some(bytes) => Escrow::try_from_slice(&bytes)
                .map(Some)
                .map_err(|e| NodeError::Corrupt(format!("job fee index entry: {e}"))),
        }
    }

    /// What a resolved dispute slashed from its loser; `None` while it runs.
    pub fn dispute_slashed(&self, dispute: DisputeId) -> Result<Option<Amount>, NodeError> {
        match self.store.get(&id_key(DISPUTE_SLASHED, dispute.0))? {
            None => Ok(None),
            Some(bytes) => Amount::try_from_slice(&bytes)
                .map(Some)
                .map_err(|e| NodeError::Corrupt(format!("dispute index entry: {e}"))),
        }
    }

    /// The encoded block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<Block>, NodeError> {
        match self.store.block(height)? {
            None => Ok(None),
            Some(b) if b.is_empty() => Ok(None),
            Some(b) => Block::decode(&b)
                .map(Some)
                .map_err(|e| NodeError::Corrupt(format!("stored block {height}: {e}"))),
        }
    }

    /// Applies `block` and persists it with its state writes and index entries in
    /// one atomic commit. A block the ledger rejects changes nothing; when the store
    /// fails, the in-memory state is reloaded from it so both stay equal.
    pub fn commit(&mut self, block: Block, referee: &dyn Referee) -> Result<Committed, NodeError> {
        let outcome = apply_block(&mut self.state, &block, referee)?;
        let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = outcome.writes.clone();
        for (stx, r) in block.txs.iter().zip(&outcome.results) {
            let events = outcome.events.get(r.events.clone()).unwrap_or(&[]);
            let record = TxRecord {
                height: block.header.height,
                sender: r.sender,
                action: stx.tx.action.name().to_owned(),
                error: r.outcome.as_ref().err().map(|e| e.to_string()),
                created: created_id(stx, events),
                events: events.iter().map(describe_event).collect(),
            };
            writes.push((
                index_key(&r.tx_hash),
                Some(borsh::to_vec(&record).unwrap_or_default()),
            ));
        }
        for (i, e) in outcome.events.iter().enumerate() {
            match e {
                Event::JobRequested { job, .. } => {
                    if let Some(j) = self.state.job(*job) {
                        writes.push((
                            id_key(JOB_FEES, job.0),
                            Some(borsh::to_vec(&j.escrow).unwrap_or_default()),
                        ));
                    }
                }
                Event::DisputeResolved { dispute, .. } => {
                    let slashed = slashed_before(&outcome.events, i);
                    writes.push((
                        id_key(DISPUTE_SLASHED, dispute.0),
                        Some(borsh::to_vec(&slashed).unwrap_or_default()),
                    ));
                }
                _ => {}
            }
        }
        let head = Head {
            height: block.header.height,
            block_hash: outcome.block_hash,
            state_root: outcome.state_root,
        };
        let settled = if self.served.is_empty() {
            Vec::new()
        } else {
            self.settled_by(&block)
        };
        let commit = Commit {
            height: head.height,
            block_hash: head.block_hash,
            block: block.encode(),
            state_root: head.state_root,
            writes,
            local: settled.iter().map(|h| (served_key(h), None)).collect(),
        };
        if let Err(e) = self.store.commit(commit) {
            let pairs = self
                .store
                .iter()?
                .into_iter()
                .filter(|(k, _)| k.first() != Some(&INDEX_PREFIX));
            self.state = State::from_kv(pairs)?;
            return Err(e.into());
        }
        self.head = head;
        for h in &settled {
            self.served.remove(h);
        }
        Ok(Committed { block, outcome })
    }
}

/// The id a transaction created, read from its events.
fn created_id(stx: &SignedTransaction, events: &[Event]) -> Option<u64> {
    events.iter().find_map(|e| match (e, &stx.tx.action) {
        (Event::ModelRegistered { model, .. }, Action::RegisterModel { .. }) => Some(model.0),
        (Event::JobRequested { job, .. }, Action::RequestJob { .. }) => Some(job.0),
        (Event::DisputeOpened { dispute, .. }, _) => Some(dispute.0),
        (Event::Proposed { proposal, .. }, _) => Some(proposal.0),
        _ => None,
    })
}

/// One line per event, for people and simple clients.
pub fn describe_event(e: &Event) -> String {
    match e {
        Event::Paid { to, amount, reason } => format!("paid {amount} to {to} ({reason:?})"),
        Event::Burned { amount, reason } => format!("burned {amount} ({reason:?})"),
        Event::ModelRegistered { model, owner } => {
            format!("model {model} registered by {owner}")
        }
        Event::VersionPublished {
            model,
            version,
            manifest,
        } => format!("model {model} version {version} published ({manifest})"),
        Event::JobRequested { job, executors } => {
            let list: Vec<String> = executors.iter().map(|a| a.to_string()).collect();
            format!("job {job} requested, assigned to {}", list.join(", "))
        }
        Event::JobProgress { job, executor } => format!("job {job}: {executor} delivered"),
        Event::JobFinalized { job } => format!("job {job} finalized"),
        Event::JobRefunded { job } => format!("job {job} refunded"),
        Event::ChallengeWindowReopened {
            job,
            window_end,
            loser,
        } => format!("job {job} challengeable again until height {window_end} ({loser} lost)"),
        Event::AuditAttested { job, watcher } => format!("job {job}: {watcher} attested"),
        Event::AuditRevealed { job } => format!("job {job}: final chain value revealed"),
        Event::DisputeOpened { dispute, job } => format!("dispute {dispute} opened on job {job}"),
        Event::DisputeResolved {
            dispute,
            defender_won,
            by_timeout,
        } => format!(
            "dispute {dispute} resolved: {} won{}",
            if *defender_won {
                "defender"
            } else {
                "challenger"
            },
            if *by_timeout { " by timeout" } else { "" }
        ),
        other => format!("{other:?}"),
    }
}
