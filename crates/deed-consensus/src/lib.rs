//! Deed's adapter to [malachite](https://github.com/informalsystems/malachite)'s
//! Tendermint BFT engine.
//!
//! It owns the consensus types ([`types`]: the block is the consensus value), node
//! keys ([`keys`]), signing ([`signing`]), the wire and WAL codec ([`codec`]) and
//! proposal streaming ([`streaming`]). It depends on `deed-types` and `deed-ledger`;
//! it must not depend on the node, its storage or its HTTP API.

pub mod codec;
pub mod keys;
pub mod signing;
pub mod streaming;
pub mod types;

pub use codec::{BorshCodec, CodecError};
pub use keys::{KeyError, NodePublicKey, NodeSecretKey, NodeSignature};
pub use signing::{DeedSigner, NodeEd25519};
pub use types::{
    BlockId, BlockValue, DeedCtx, Height, PartInit, Proposal, ProposalPart, ValAddr, Validator,
    ValidatorSet, ValidatorSetError, Vote,
};
