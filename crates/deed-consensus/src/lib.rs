//! Deed's adapter to [malachite](https://github.com/informalsystems/malachite)'s
//! Tendermint BFT engine.
//!
//! It owns the consensus types ([`types`]: the block is the consensus value), node
//! keys ([`keys`]), signing ([`signing`]), the wire and WAL codec ([`codec`]),
//! proposal streaming ([`streaming`]), the consensus store ([`store`]), the app loop
//! that answers the engine ([`app`]) and starting a validator ([`node`]). The rest of
//! the node plugs in through two seams ([`chain`]): [`Chain`] (ledger state, stored
//! blocks, commit) and [`Mempool`].
//!
//! It depends on `deed-types` and `deed-ledger`; it must not depend on the node,
//! its storage or its HTTP API.
//!
//! The validator set of each height comes from the ledger state before it
//! ([`types::validator_set_of`]: bonded executors with a registered consensus key,
//! by stake), so a change committed at height h takes effect at h + 1.

pub mod app;
pub mod chain;
pub mod codec;
pub mod keys;
pub mod node;
pub mod signing;
pub mod store;
pub mod streaming;
pub mod types;

pub use app::{App, AppError, BlockParams, InvalidProposal};
pub use chain::{
    Chain, ChainError, CommitLog, Committed, MemChain, MemPool, Mempool, MempoolError,
};
pub use node::{
    start_validator, ConsensusHandle, EngineEvent, StartError, Timeouts, ValidatorConfig,
};
pub use store::{ConsensusStore, StoreError};

/// Where a proposed value came from: consensus, or value sync from a peer.
pub use malachitebft_core_types::ValueOrigin;

pub use codec::{BorshCodec, CodecError};
pub use keys::{KeyError, NodePublicKey, NodeSecretKey, NodeSignature};
pub use signing::{DeedSigner, NodeEd25519};
pub use types::{
    BlockId, BlockValue, DeedCtx, Height, PartInit, Proposal, ProposalPart, ValAddr, Validator,
    ValidatorSet, ValidatorSetError, Vote,
};
