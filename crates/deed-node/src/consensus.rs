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
use std::time::Duration;

use deed_consensus::{
    BlockParams, ChainError, NodePublicKey, Timeouts, ValAddr, Validator, ValidatorConfig,
    ValidatorSet,
};
use deed_ledger::{BlockOutcome, State};
use deed_types::{encoding, Address, Block, SignedTransaction};

use crate::config::Config;
use crate::error::NodeError;
use crate::node::Node;

/// A validator named in the genesis: its operator account (the block proposer and
/// fee recipient), its consensus key and its voting power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenesisValidator {
    /// The operator account.
    pub operator: Address,
    /// The ed25519 key it votes with (also its consensus network identity).
    pub consensus_key: NodePublicKey,
    /// Voting power.
    pub power: u64,
}

/// The validator set of `validators`.
pub fn validator_set(validators: &[GenesisValidator]) -> Result<ValidatorSet, NodeError> {
    ValidatorSet::new(
        validators
            .iter()
            .map(|v| Validator {
                address: ValAddr(v.operator),
                public_key: v.consensus_key,
                voting_power: v.power,
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
