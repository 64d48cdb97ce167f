//! How blocks reach the node: malachite's Tendermint BFT engine, through
//! `deed-consensus`. Every node runs it, `deed dev` included (as a network of one
//! validator): there is one consensus path.
//!
//! The node lends the engine two seams: [`NodeChain`] (the committed state, stored
//! blocks, committing a decided block with its referee models loaded) and
//! [`NodePool`] (the node's mempool). A node whose operator account is not in the
//! validator set follows the chain without voting.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deed_consensus::{
    BlockParams, ChainError, DeedCtx, EngineEvent, NodePublicKey, Timeouts, ValAddr, Validator,
    ValidatorConfig, ValidatorSet, ValueOrigin,
};
use deed_ledger::{BlockOutcome, State};
use deed_types::{encoding, Address, Amount, Block, SignedTransaction};

use crate::config::Config;
use crate::error::NodeError;
use crate::node::{lock, Node};

/// A validator named in the genesis: its operator account (the block proposer and
/// fee recipient, bonded as an executor with `stake`), its consensus key and its
/// stake, which gives its voting power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenesisValidator {
    /// The operator account.
    pub operator: Address,
    /// The ed25519 key it votes with (also its consensus network identity).
    pub consensus_key: NodePublicKey,
    /// Stake bonded at genesis.
    pub stake: Amount,
}

impl GenesisValidator {
    /// The ledger's genesis entry.
    pub fn to_ledger(&self) -> deed_ledger::GenesisValidator {
        deed_ledger::GenesisValidator {
            operator: self.operator,
            consensus_key: self.consensus_key.to_bytes(),
            stake: self.stake,
        }
    }
}

/// The validator set of `validators`, power from stake. After genesis the set
/// follows the ledger ([`deed_consensus::types::validator_set_of`]).
pub fn validator_set(validators: &[GenesisValidator]) -> Result<ValidatorSet, NodeError> {
    let powers = deed_consensus::types::voting_powers(
        &validators.iter().map(|v| v.stake).collect::<Vec<_>>(),
    );
    ValidatorSet::new(
        validators
            .iter()
            .zip(powers)
            .map(|(v, voting_power)| Validator {
                address: ValAddr(v.operator),
                public_key: v.consensus_key,
                voting_power,
            })
            .collect(),
    )
    .map_err(|e| NodeError::Config(format!("genesis validators: {e}")))
}

/// The engine's configuration from the node's, with its WAL and consensus store
/// under `home`.
pub fn validator_config(cfg: &Config, home: PathBuf) -> ValidatorConfig {
    let c = &cfg.consensus;
    let ms = Duration::from_millis;
    ValidatorConfig {
        moniker: format!("deed-{}", cfg.http),
        home,
        listen: c.listen,
        peers: c.peers.clone(),
        timeouts: Timeouts {
            propose: ms(c.timeout_propose_ms.max(1)),
            prevote: ms(c.timeout_vote_ms.max(1)),
            precommit: ms(c.timeout_vote_ms.max(1)),
            delta: ms(c.timeout_delta_ms),
        },
        block: BlockParams {
            max_block_bytes: c.max_block_bytes,
            max_block_txs: cfg.limits.max_block_txs,
            block_interval: cfg.block_interval(),
            empty_block_interval: cfg.heartbeat(),
        },
        sync_status_interval: ms(500).max(cfg.block_interval()),
        sync_request_timeout: ms(5_000),
    }
}

/// The node's chain as the engine sees it.
pub struct NodeChain(pub Arc<Node>);

impl deed_consensus::Chain for NodeChain {
    fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.0.with_state(|c| f(c.state()))
    }

    fn block(&self, height: u64) -> Option<Block> {
        match self.0.with_state(|c| c.block(height)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(height, error = %e, "reading a stored block");
                None
            }
        }
    }

    async fn commit(&mut self, block: &Block) -> Result<BlockOutcome, ChainError> {
        match self.0.commit_block(block.clone()).await {
            Ok(c) => Ok(c.outcome.clone()),
            Err(NodeError::Block(e)) => Err(ChainError::Rejected(e)),
            Err(e) => Err(ChainError::Storage {
                height: block.header.height,
                source: Box::new(e),
            }),
        }
    }
}

/// The node's mempool as the engine sees it.
pub struct NodePool(pub Arc<Node>);

impl deed_consensus::Mempool for NodePool {
    fn reap(&self, max_bytes: usize, max_txs: usize) -> Vec<SignedTransaction> {
        let candidates = self.0.pending(max_txs);
        let mut bytes = 0usize;
        candidates
            .into_iter()
            .take_while(|tx| {
                bytes = bytes.saturating_add(encoding::encode(tx).len());
                bytes <= max_bytes
            })
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.0.mempool_len() == 0
    }

    fn on_committed(&self, _block: &Block, _state: &State) {
        // `Node::commit_block` rechecks the pool under the same lock as the commit.
    }
}

/// What the node knows about consensus progress, from the engine's events.
#[derive(Clone, Debug, Default)]
pub struct ConsensusInfo {
    /// The height being decided.
    pub height: u64,
    /// Its current round.
    pub round: i64,
    /// When a block last arrived by value sync (catching up) rather than by voting.
    pub synced_at: Option<Instant>,
    /// When the last block was decided.
    pub decided_at: Option<Instant>,
}

impl ConsensusInfo {
    /// Whether the node is catching up: it took a block from value sync in the
    /// last few seconds.
    pub fn syncing(&self) -> bool {
        self.synced_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(3))
    }
}

/// Follows the engine's events into the node's metrics and [`ConsensusInfo`].
pub(crate) async fn follow_engine(
    node: Arc<Node>,
    mut events: tokio::sync::broadcast::Receiver<EngineEvent<DeedCtx>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        match event {
            EngineEvent::StartedRound(height, round, _, _) => {
                node.metrics.consensus_rounds.inc();
                node.metrics.consensus_round.set(round.as_i64());
                let mut info = lock(&node.consensus_info);
                info.height = height.0;
                info.round = round.as_i64();
            }
            EngineEvent::ReceivedProposedValue(_, ValueOrigin::Sync(_)) => {
                lock(&node.consensus_info).synced_at = Some(Instant::now());
            }
            EngineEvent::Decided(_) => {
                node.metrics.peers.set(node.peers() as i64);
                let now = Instant::now();
                let mut info = lock(&node.consensus_info);
                if let Some(t) = info.decided_at {
                    node.metrics
                        .block_interval_seconds
                        .observe(now.duration_since(t).as_secs_f64());
                }
                info.decided_at = Some(now);
            }
            _ => {}
        }
    }
}
