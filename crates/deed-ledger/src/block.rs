//! Applying a block: header checks, every transaction in order, the timers that
//! fall due, then the state root.

use deed_types::{tx_root, Address, Block, Hash, Header, SignedTransaction};

use crate::error::{BlockError, TxError};
use crate::events::Event;
use crate::exec::{Env, Exec};
use crate::referee::Referee;
use crate::state::{State, Timer, Write};

/// The result of one transaction in a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxResult {
    /// The transaction id.
    pub tx_hash: Hash,
    /// The recovered sender (`None` when the signature is bad).
    pub sender: Option<Address>,
    /// Success, or why it failed.
    pub outcome: Result<(), TxError>,
    /// The transaction's events: indices into [`BlockOutcome::events`].
    pub events: std::ops::Range<usize>,
}

/// Everything a block did.
#[derive(Clone, Debug)]
pub struct BlockOutcome {
    /// The block's id (its header hash).
    pub block_hash: Hash,
    /// The state root after the block.
    pub state_root: Hash,
    /// One result per transaction, in order.
    pub results: Vec<TxResult>,
    /// Events, in order (transactions first, then timers).
    pub events: Vec<Event>,
    /// Key/value writes the block made, for the state store (`None` deletes).
    pub writes: Vec<Write>,
}

/// Builds the header of the next block over `state` (what a proposer does).
pub fn next_header(
    state: &State,
    proposer: Address,
    time: u64,
    txs: &[SignedTransaction],
) -> Header {
    Header {
        chain_id: state.meta().chain_id,
        height: state.height().saturating_add(1),
        time,
        prev_hash: state.meta().last_block_hash,
        tx_root: tx_root(txs),
        state_root: state.root(),
        proposer,
    }
}

/// Builds the next block over `state` from `txs`.
pub fn next_block(
    state: &State,
    proposer: Address,
    time: u64,
    txs: Vec<SignedTransaction>,
) -> Block {
    Block {
        header: next_header(state, proposer, time, &txs),
        txs,
    }
}

/// Applies `block` to `state`: the pure transition `(state, block) -> (state',
/// results, events)`, done in place. A rejected block (wrong chain, height,
/// parent, state root or transaction root) leaves the state unchanged; a block that
/// is accepted always applies, each transaction succeeding or failing on its own.
/// Time and randomness come only from the header.
pub fn apply_block(
    state: &mut State,
    block: &Block,
    referee: &dyn Referee,
) -> Result<BlockOutcome, BlockError> {
    let h = &block.header;
    let meta = state.meta();
    if h.chain_id != meta.chain_id {
        return Err(BlockError::WrongChain {
            expected: meta.chain_id,
            got: h.chain_id,
        });
    }
    let expected_height = meta.height.saturating_add(1);
    if h.height != expected_height {
        return Err(BlockError::WrongHeight {
            expected: expected_height,
            got: h.height,
        });
    }
    if h.prev_hash != meta.last_block_hash {
        return Err(BlockError::WrongParent {
            expected: meta.last_block_hash,
            got: h.prev_hash,
        });
    }
    if h.state_root != state.root() {
        return Err(BlockError::WrongStateRoot {
            expected: state.root(),
            got: h.state_root,
        });
    }
    let root = tx_root(&block.txs);
    if h.tx_root != root {
        return Err(BlockError::WrongTxRoot {
            expected: root,
            got: h.tx_root,
        });
    }
    let block_hash = h.hash();
    let env = Env {
        height: h.height,
        proposer: h.proposer,
        randomness: h.randomness(b"job assignment"),
    };
    let mut exec = Exec {
        s: state,
        env,
        events: Vec::new(),
        referee,
    };
    let mut results = Vec::with_capacity(block.txs.len());
    for stx in &block.txs {
        let first = exec.events.len();
        let (sender, outcome) = exec.apply_tx(stx);
        results.push(TxResult {
            tx_hash: stx.hash(),
            sender,
            outcome,
            events: first..exec.events.len(),
        });
    }
    run_timers(&mut exec);
    let events = std::mem::take(&mut exec.events);
    state.meta.height = h.height;
    state.meta.last_block_hash = block_hash;
    state.settle();
    let writes = state.commit_writes()?;
    Ok(BlockOutcome {
        block_hash,
        state_root: state.root(),
        results,
        events,
        writes,
    })
}

/// Fires every timer due at or before this height, oldest first, including timers
/// set by the ones fired. Each timer runs all-or-nothing like a transaction; a timer
/// that fails (which only an internal overflow could cause) is dropped with its
/// effects undone.
fn run_timers(exec: &mut Exec<'_>) {
    let h = exec.env.height;
    loop {
        let Some(key) = exec
            .s
            .timers
            .range(..=(h, Timer::ProposalEnact(deed_types::ProposalId(u64::MAX))))
            .next()
            .map(|(k, _)| *k)
        else {
            break;
        };
        exec.s.timers.remove(&key);
        exec.s.settle();
        let mark = exec.s.mark();
        let events = exec.events.len();
        let r = match key.1 {
            Timer::JobDeadline(j) => exec.on_job_deadline(j),
            Timer::ChallengeWindow(j) => exec.on_challenge_window(j),
            Timer::DisputeMove(d) => exec.on_dispute_move(d),
            Timer::ProposalEnd(p) => exec.on_proposal_end(p),
            Timer::ProposalEnact(p) => exec.on_proposal_enact(p),
        };
        if r.is_err() {
            exec.s.rollback(mark);
            exec.events.truncate(events);
        }
        exec.s.settle();
    }
}
