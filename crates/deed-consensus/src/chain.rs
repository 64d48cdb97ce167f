//! The seams between consensus and the rest of the node: the [`Chain`] (ledger state,
//! stored blocks, committing a decided block) and the [`Mempool`] (transactions to
//! propose). Each has an in-memory implementation here ([`MemChain`], [`MemPool`]);
//! the node implements them over its state store and network.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use deed_ledger::{apply_block, BlockError, BlockOutcome, Referee, State, TxResult};
use deed_types::{encoding, Block, Hash, SignedTransaction};

/// Why a decided block could not be committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The ledger rejected the block: this node's state differs from the one the
    /// block was built on.
    #[error("ledger rejected block: {0}")]
    Rejected(#[from] BlockError),
    /// Persisting the block failed.
    #[error("storing block {height}: {source}")]
    Storage {
        /// The block's height.
        height: u64,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The ledger as consensus sees it.
///
/// The state is lent to a closure rather than returned by reference, so a node can
/// keep it behind a lock that its API handlers share; committing is async, so a
/// node can load what the block's referee moves need (models) before applying it.
pub trait Chain: Send + 'static {
    /// Runs `f` on the state after the last committed block.
    fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R;
    /// The committed block at `height` (1-based).
    fn block(&self, height: u64) -> Option<Block>;
    /// Applies a decided block and persists it, as one step: after an error nothing
    /// changed.
    fn commit(
        &mut self,
        block: &Block,
    ) -> impl std::future::Future<Output = Result<BlockOutcome, ChainError>> + Send;
}

/// Where proposers take transactions from.
pub trait Mempool: Send + Sync + 'static {
    /// Up to `max_txs` transactions of at most `max_bytes` encoded in all, in the
    /// order they should appear in a block. The transactions stay in the pool.
    fn reap(&self, max_bytes: usize, max_txs: usize) -> Vec<SignedTransaction>;
    /// Whether there is nothing to propose.
    fn is_empty(&self) -> bool;
    /// A block was committed: drop its transactions and any made stale by `state`.
    fn on_committed(&self, block: &Block, state: &State);
}

/// A committed block with the state root after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The block.
    pub block: Block,
    /// The state root after applying it.
    pub state_root: Hash,
    /// One result per transaction.
    pub results: Vec<TxResult>,
}

/// A shared, read-only view of the blocks a [`MemChain`] committed, in order. It
/// outlives the chain (which the consensus task owns).
#[derive(Clone, Default)]
pub struct CommitLog(Arc<Mutex<Vec<Committed>>>);

impl CommitLog {
    /// A copy of everything committed so far.
    pub fn snapshot(&self) -> Vec<Committed> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The height of the last committed block (0 before the first).
    pub fn height(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len() as u64
    }

    fn push(&self, c: Committed) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }
}

/// A chain held in memory: a ledger state and the blocks applied to it.
pub struct MemChain<R: Referee + Send + 'static> {
    state: State,
    blocks: Vec<Block>,
    referee: R,
    log: CommitLog,
}

impl<R: Referee + Send + 'static> MemChain<R> {
    /// A chain starting at `genesis`.
    pub fn new(genesis: State, referee: R) -> Self {
        MemChain {
            state: genesis,
            blocks: Vec::new(),
            referee,
            log: CommitLog::default(),
        }
    }

    /// A chain that re-applies `blocks` over `genesis` (as a node reloading its
    /// stored chain would).
    pub fn replay(genesis: State, referee: R, blocks: &[Block]) -> Result<Self, ChainError> {
        let mut c = Self::new(genesis, referee);
        for b in blocks {
            c.apply(b)?;
        }
        Ok(c)
    }

    /// The state after the last committed block.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Applies `block` now (what [`Chain::commit`] does).
    pub fn apply(&mut self, block: &Block) -> Result<BlockOutcome, ChainError> {
        let outcome = apply_block(&mut self.state, block, &self.referee)?;
        self.blocks.push(block.clone());
        self.log.push(Committed {
            block: block.clone(),
            state_root: outcome.state_root,
            results: outcome.results.clone(),
        });
        Ok(outcome)
    }

    /// The view of committed blocks, shared with this chain.
    pub fn log(&self) -> CommitLog {
        self.log.clone()
    }
}

impl<R: Referee + Send + 'static> Chain for MemChain<R> {
    fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state)
    }

    fn block(&self, height: u64) -> Option<Block> {
        let i = usize::try_from(height.checked_sub(1)?).ok()?;
        self.blocks.get(i).cloned()
    }

    async fn commit(&mut self, block: &Block) -> Result<BlockOutcome, ChainError> {
        self.apply(block)
    }
}

/// Why the pool refused a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MempoolError {
    /// The pool is full.
    #[error("mempool full ({max} transactions)")]
    Full {
        /// Capacity.
        max: usize,
    },
    /// Already in the pool.
    #[error("transaction {0} already in the pool")]
    Duplicate(Hash),
    /// The signature does not recover a sender.
    #[error("transaction {0} has a bad signature")]
    BadSignature(Hash),
}

struct Pool {
    queue: VecDeque<(Hash, deed_types::Address, SignedTransaction)>,
    known: HashSet<Hash>,
}

/// A bounded first-in first-out pool in memory. Transactions of one sender keep
/// their arrival order, so nonces submitted in order are proposed in order.
pub struct MemPool {
    inner: Mutex<Pool>,
    max: usize,
}

impl MemPool {
    /// A pool of at most `max` transactions.
    pub fn new(max: usize) -> MemPool {
        MemPool {
            inner: Mutex::new(Pool {
                queue: VecDeque::new(),
                known: HashSet::new(),
            }),
            max,
        }
    }

    /// Adds a transaction.
    pub fn submit(&self, tx: SignedTransaction) -> Result<Hash, MempoolError> {
        let hash = tx.hash();
        let sender = tx.sender().map_err(|_| MempoolError::BadSignature(hash))?;
        let mut p = self.lock();
        if p.known.contains(&hash) {
            return Err(MempoolError::Duplicate(hash));
        }
        if p.queue.len() >= self.max {
            return Err(MempoolError::Full { max: self.max });
        }
        p.known.insert(hash);
        p.queue.push_back((hash, sender, tx));
        Ok(hash)
    }

    /// Transactions waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no transaction is waiting.
    pub fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        // A panic while holding the lock cannot leave the queue half-updated in a way
        // that matters (every update is a single push or retain), so keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Mempool for MemPool {
    fn reap(&self, max_bytes: usize, max_txs: usize) -> Vec<SignedTransaction> {
        let p = self.lock();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (_, _, tx) in p.queue.iter() {
            if out.len() >= max_txs {
                break;
            }
            let len = encoding::encode(tx).len();
            if bytes.saturating_add(len) > max_bytes {
                break;
            }
            bytes += len;
            out.push(tx.clone());
        }
        out
    }

    fn is_empty(&self) -> bool {
        MemPool::is_empty(self)
    }

    fn on_committed(&self, block: &Block, state: &State) {
        let included: HashSet<Hash> = block.txs.iter().map(|t| t.hash()).collect();
        let mut nonces: HashMap<deed_types::Address, u64> = HashMap::new();
        let mut p = self.lock();
        let Pool { queue, known } = &mut *p;
        queue.retain(|(hash, sender, tx)| {
            let next = *nonces.entry(*sender).or_insert_with(|| state.nonce(sender));
            let keep = !included.contains(hash) && tx.tx.nonce >= next;
            if !keep {
                known.remove(hash);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deed_ledger::{next_block, Params, RuntimeReferee};
    use deed_types::{Action, Address, SecretKey, Transaction};

    fn transfer(key: &SecretKey, nonce: u64) -> SignedTransaction {
        Transaction {
            chain_id: 9,
            nonce,
            fee: 1,
            action: Action::Transfer {
                to: Address([7; 20]),
                amount: 10,
            },
        }
        .sign(key)
        .unwrap()
    }

    #[test]
    fn pool_reaps_in_order_and_forgets_committed_and_stale() {
        let key = SecretKey::from_seed(b"a");
        let genesis = State::genesis(9, Params::default(), &[(key.address(), 1_000)]).unwrap();
        let mut chain = MemChain::new(genesis, RuntimeReferee::new());
        let pool = MemPool::new(3);
        for n in 0..3 {
            pool.submit(transfer(&key, n)).unwrap();
        }
        assert_eq!(
            pool.submit(transfer(&key, 0)),
            Err(MempoolError::Duplicate(transfer(&key, 0).hash()))
        );
        assert_eq!(
            pool.submit(transfer(&key, 3)),
            Err(MempoolError::Full { max: 3 })
        );
        let two = pool.reap(usize::MAX, 2);
        assert_eq!(two, vec![transfer(&key, 0), transfer(&key, 1)]);
        let b = next_block(chain.state(), Address([1; 20]), 1, two);
        chain.apply(&b).unwrap();
        pool.on_committed(&b, chain.state());
        assert_eq!(pool.reap(usize::MAX, 10), vec![transfer(&key, 2)]);
        assert_eq!(chain.block(1), Some(b.clone()));
        assert_eq!(chain.block(2), None);
        assert_eq!(chain.log().height(), 1);
        assert_eq!(chain.log().snapshot()[0].state_root, chain.state().root());
        assert!(matches!(chain.apply(&b), Err(ChainError::Rejected(_))));
    }
}
