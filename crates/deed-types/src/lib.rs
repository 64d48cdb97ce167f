//! Deed's plain data: hashes, CIDs, addresses, keys and signatures, EIP-712 signing,
//! transactions, receipts, blocks and tensors on the wire, each with one canonical
//! encoding.
//!
//! This crate owns representations and their canonical encodings. It performs no I/O
//! and depends on no other Deed crate; every other crate depends on it.

pub mod address;
pub mod block;
pub mod cid;
pub mod consensus_key;
pub mod crypto;
pub mod eip712;
pub mod encoding;
pub mod hash;
pub mod ids;
pub mod lowbit;
pub mod tensor;
pub mod tx;

pub use address::{Address, ParseAddressError};
pub use block::{tx_root, Block, Header};
pub use cid::{Cid, CidError};
pub use consensus_key::{
    check_consensus_key, consensus_key_message, prove_consensus_key, verify_consensus_key,
    ConsensusKeyError,
};
pub use crypto::{SecretKey, Signature, SignatureError};
pub use encoding::DecodeError;
pub use hash::Hash;
pub use ids::{Amount, Bps, DisputeId, JobId, ModelId, ProposalId, BPS_DENOMINATOR};
pub use tensor::{decode_list, encode_list, DType, Tensor, TensorData, TensorError};
pub use tx::{
    check_referee_inputs, Action, JobInput, Licence, LimitError, Lineage, Mode, Output,
    OutputProofData, ParamChange, ParamKey, Receipt, RefereeInput, SignedTransaction,
    StepProofData, Transaction, TxDecodeError,
};
