//! The mempool: signed transactions checked against the committed state and the
//! sender's other pending transactions, waiting for a block.
//!
//! The checks are the ones the ledger makes before charging a fee (signature, chain
//! id, nonce, fee), applied to the state as it will be once the sender's pending
//! transactions are in: a sender's nonces must follow on from its pending ones, and
//! its balance must cover the fees of all of them. A transaction that passes may
//! still fail in its block (its action is checked there), but it pays its fee.

use std::collections::{HashMap, HashSet, VecDeque};

use deed_ledger::State;
use deed_types::{Address, Amount, Hash, SignedTransaction};

use crate::error::TxRejection;

#[derive(Clone, Debug)]
struct Pending {
    hash: Hash,
    sender: Address,
    stx: SignedTransaction,
}

/// Transactions waiting for a block, in arrival order.
#[derive(Debug)]
pub struct Mempool {
    queue: VecDeque<Pending>,
    hashes: HashSet<Hash>,
    /// Per sender: the nonce its next transaction must carry and the fees pending.
    senders: HashMap<Address, (u64, Amount)>,
    max: usize,
}

impl Mempool {
    /// An empty mempool holding at most `max` transactions.
    pub fn new(max: usize) -> Mempool {
        Mempool {
            queue: VecDeque::new(),
            hashes: HashSet::new(),
            senders: HashMap::new(),
            max,
        }
    }

    /// Transactions waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether `hash` is waiting.
    pub fn contains(&self, hash: &Hash) -> bool {
        self.hashes.contains(hash)
    }

    /// A waiting transaction and its sender.
    pub fn get(&self, hash: &Hash) -> Option<(Address, &SignedTransaction)> {
        self.queue
            .iter()
            .find(|p| &p.hash == hash)
            .map(|p| (p.sender, &p.stx))
    }

    /// Whether any waiting transaction satisfies `f`.
    pub fn any(&self, f: impl Fn(Address, &SignedTransaction) -> bool) -> bool {
        self.queue.iter().any(|p| f(p.sender, &p.stx))
    }

    /// The nonce `sender`'s next transaction must carry, counting pending ones.
    pub fn next_nonce(&self, state: &State, sender: &Address) -> u64 {
        self.senders
            .get(sender)
            .map(|(n, _)| *n)
            .unwrap_or_else(|| state.nonce(sender))
    }

    /// Checks `stx` against `state` and the pending transactions and queues it.
    /// A rejected transaction changes nothing.
    pub fn insert(&mut self, state: &State, stx: SignedTransaction) -> Result<Hash, TxRejection> {
        self.insert_checked(state, stx, None)
    }

    /// [`Mempool::insert`] of a transaction whose signature the caller has already
    /// checked: `sender` is what it recovered, so the signature is not recovered
    /// again.
    pub fn insert_signed_by(
        &mut self,
        state: &State,
        stx: SignedTransaction,
        sender: Address,
    ) -> Result<Hash, TxRejection> {
        self.insert_checked(state, stx, Some(sender))
    }

    fn insert_checked(
        &mut self,
        state: &State,
        stx: SignedTransaction,
        recovered: Option<Address>,
    ) -> Result<Hash, TxRejection> {
        let hash = stx.hash();
        if self.hashes.contains(&hash) {
            return Err(TxRejection::Duplicate(hash));
        }
        stx.tx
            .action
            .check_limits()
            .map_err(|e| TxRejection::Malformed(e.to_string()))?;
        let sender = match recovered {
            Some(sender) => sender,
            None => stx
                .sender()
                .map_err(|e| TxRejection::BadSignature(e.to_string()))?,
        };
        let chain = state.meta().chain_id;
        if stx.tx.chain_id != chain {
            return Err(TxRejection::WrongChain {
                expected: chain,
                got: stx.tx.chain_id,
            });
        }
        let (next, pending_fees) = self
            .senders
            .get(&sender)
            .copied()
            .unwrap_or_else(|| (state.nonce(&sender), 0));
        if stx.tx.nonce != next {
            return Err(TxRejection::BadNonce {
                sender,
                expected: next,
                got: stx.tx.nonce,
            });
        }
        let min = state.params().min_tx_fee;
        if stx.tx.fee < min {
            return Err(TxRejection::FeeTooLow {
                fee: stx.tx.fee,
                min,
            });
        }
        let balance = state.balance(&sender);
        let needed = pending_fees.saturating_add(stx.tx.fee);
        if needed > balance {
            return Err(TxRejection::InsufficientFunds {
                sender,
                balance,
                needed,
            });
        }
        if self.queue.len() >= self.max {
            return Err(TxRejection::Full(self.max));
        }
        self.senders
            .insert(sender, (next.saturating_add(1), needed));
        self.hashes.insert(hash);
        self.queue.push_back(Pending { hash, sender, stx });
        Ok(hash)
    }

    /// The oldest `n` transactions, for a proposal. They stay queued until
    /// [`Mempool::recheck`] after the block commits.
    pub fn peek(&self, n: usize) -> Vec<SignedTransaction> {
        self.queue.iter().take(n).map(|p| p.stx.clone()).collect()
    }

    /// After a block: drops the transactions it included and any that no longer fit
    /// the new state (a nonce already used, fees the sender can no longer pay), and
    /// recomputes every sender's pending nonce and fees.
    pub fn recheck(&mut self, state: &State, included: &HashSet<Hash>) {
        let old = std::mem::take(&mut self.queue);
        self.hashes.clear();
        self.senders.clear();
        for p in old {
            if included.contains(&p.hash) {
                continue;
            }
            let (next, fees) = self
                .senders
                .get(&p.sender)
                .copied()
                .unwrap_or_else(|| (state.nonce(&p.sender), 0));
            let needed = fees.saturating_add(p.stx.tx.fee);
            if p.stx.tx.nonce != next || needed > state.balance(&p.sender) {
                tracing::debug!(tx = %p.hash, "dropped from the mempool after a block");
                continue;
            }
            self.senders
                .insert(p.sender, (next.saturating_add(1), needed));
            self.hashes.insert(p.hash);
            self.queue.push_back(p);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use deed_ledger::Params;
    use deed_types::{Action, SecretKey, Transaction};

    fn setup() -> (State, SecretKey, SecretKey) {
        let (a, b) = (SecretKey::from_seed(b"a"), SecretKey::from_seed(b"b"));
        let s = State::genesis(7, Params::default(), &[(a.address(), 10)]).unwrap();
        (s, a, b)
    }

    fn tx(key: &SecretKey, chain_id: u64, nonce: u64, fee: u128) -> SignedTransaction {
        Transaction {
            chain_id,
            nonce,
            fee,
            action: Action::Transfer {
                to: Address::ZERO,
                amount: 1,
            },
        }
        .sign(key)
        .unwrap()
    }

    #[test]
    fn nonces_follow_pending_transactions_and_fees_add_up() {
        let (s, a, _) = setup();
        let mut m = Mempool::new(10);
        m.insert(&s, tx(&a, 7, 0, 4)).unwrap();
        assert_eq!(m.next_nonce(&s, &a.address()), 1);
        assert!(matches!(
            m.insert(&s, tx(&a, 7, 0, 3)),
            Err(TxRejection::BadNonce { expected: 1, .. })
        ));
        assert!(matches!(
            m.insert(&s, tx(&a, 7, 2, 4)),
            Err(TxRejection::BadNonce {
                expected: 1,
                got: 2,
                ..
            })
        ));
        m.insert(&s, tx(&a, 7, 1, 4)).unwrap();
        // 4 + 4 + 4 > 10.
        assert!(matches!(
            m.insert(&s, tx(&a, 7, 2, 4)),
            Err(TxRejection::InsufficientFunds {
                needed: 12,
                balance: 10,
                ..
            })
        ));
        assert_eq!(m.len(), 2);
        assert_eq!(m.peek(5).len(), 2);
    }

    #[test]
    fn a_sender_recovered_by_the_caller_queues_as_a_recovered_one() {
        let (s, a, _) = setup();
        let (mut m, mut n) = (Mempool::new(10), Mempool::new(10));
        for nonce in 0..3 {
            let stx = tx(&a, 7, nonce, 1);
            let sender = stx.sender().unwrap();
            assert_eq!(
                m.insert(&s, stx.clone()),
                n.insert_signed_by(&s, stx, sender)
            );
        }
        assert_eq!(m.next_nonce(&s, &a.address()), 3);
        assert_eq!(n.next_nonce(&s, &a.address()), 3);
        // The same checks after the signature: a nonce out of turn is refused.
        let late = tx(&a, 7, 5, 1);
        let sender = late.sender().unwrap();
        assert!(matches!(
            n.insert_signed_by(&s, late, sender),
            Err(TxRejection::BadNonce { expected: 3, .. })
        ));
    }

    #[test]
    fn rejections_are_typed_and_change_nothing() {
        let (s, a, b) = setup();
        let mut m = Mempool::new(1);
        assert!(matches!(
            m.insert(&s, tx(&a, 8, 0, 1)),
            Err(TxRejection::WrongChain {
                expected: 7,
                got: 8
            })
        ));
        assert!(matches!(
            m.insert(&s, tx(&a, 7, 0, 0)),
            Err(TxRejection::FeeTooLow { .. })
        ));
        assert!(matches!(
            m.insert(&s, tx(&b, 7, 0, 1)),
            Err(TxRejection::InsufficientFunds { .. })
        ));
        let mut bad = tx(&a, 7, 0, 1);
        bad.signature = deed_types::Signature([0u8; 65]);
        assert!(matches!(
            m.insert(&s, bad),
            Err(TxRejection::BadSignature(_))
        ));
        assert!(m.is_empty());
        let ok = tx(&a, 7, 0, 1);
        let h = m.insert(&s, ok.clone()).unwrap();
        assert!(matches!(m.insert(&s, ok), Err(TxRejection::Duplicate(x)) if x == h));
        assert!(matches!(
            m.insert(&s, tx(&a, 7, 1, 1)),
            Err(TxRejection::Full(1))
        ));
    }

    #[test]
    fn recheck_drops_included_and_stale_transactions() {
        let (s, a, _) = setup();
        let mut m = Mempool::new(10);
        let first = m.insert(&s, tx(&a, 7, 0, 1)).unwrap();
        let second = m.insert(&s, tx(&a, 7, 1, 1)).unwrap();
        m.recheck(&s, &[first].into_iter().collect());
        // The state still says nonce 0, so the second no longer follows on.
        assert!(m.is_empty());
        let again = m.insert(&s, tx(&a, 7, 0, 1)).unwrap();
        m.recheck(&s, &HashSet::new());
        assert!(m.contains(&again));
        assert!(!m.contains(&second));
    }
}
