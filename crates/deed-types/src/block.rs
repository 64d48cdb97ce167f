//! Blocks and headers.
//!
//! A header's `state_root` is the root of the state the block is applied to (the
//! state after its parent), as in Tendermint's app hash: a proposer can fill it in
//! before executing the block, and validators check it when they apply it.
//! The hash of the header is the block's id and, hashed with a purpose label, the
//! block's randomness.

use borsh::{BorshDeserialize, BorshSerialize};

use crate::address::Address;
use crate::encoding;
use crate::hash::Hash;
use crate::tx::{SignedTransaction, TxDecodeError};

/// Largest encoded block.
pub const MAX_BLOCK_BYTES: usize = 32 * 1024 * 1024;

/// A block header.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Header {
    /// The chain.
    pub chain_id: u64,
    /// Height; the first block after genesis is 1.
    pub height: u64,
    /// Proposer's time, seconds since the Unix epoch (informational; deadlines are in
    /// heights).
    pub time: u64,
    /// Hash of the parent header ([`Hash::ZERO`] for height 1).
    pub prev_hash: Hash,
    /// [`tx_root`] of the block's transactions.
    pub tx_root: Hash,
    /// Root of the state this block applies to.
    pub state_root: Hash,
    /// The proposer, paid the transaction fees.
    pub proposer: Address,
}

impl Header {
    /// The block id.
    pub fn hash(&self) -> Hash {
        Hash::domain("deed 2026 block header", &[&encoding::encode(self)])
    }

    /// Randomness drawn from this block for `purpose` (e.g. assigning a job): every
    /// validator derives the same value, and no party knows it before the header.
    pub fn randomness(&self, purpose: &[u8]) -> Hash {
        Hash::domain(
            "deed 2026 block randomness",
            &[self.hash().as_bytes(), purpose],
        )
    }
}

/// A block: a header and its ordered transactions.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Block {
    /// The header.
    pub header: Header,
    /// Transactions, applied in order.
    pub txs: Vec<SignedTransaction>,
}

impl Block {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decodes a block and checks every transaction's size limits.
    pub fn decode(bytes: &[u8]) -> Result<Block, TxDecodeError> {
        let b: Block = encoding::decode("block", bytes, MAX_BLOCK_BYTES)?;
        for tx in &b.txs {
            tx.tx.action.check_limits()?;
        }
        Ok(b)
    }
}

/// Binary Merkle root over the transaction ids, in block order. An odd node is
/// carried up unchanged; the empty list has a fixed root.
pub fn tx_root(txs: &[SignedTransaction]) -> Hash {
    let leaves: Vec<Hash> = txs.iter().map(|t| t.hash()).collect();
    merkle_root(&leaves)
}

fn merkle_root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return Hash::domain("deed 2026 tx root empty", &[]);
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| match p {
                [l, r] => Hash::domain("deed 2026 tx root node", &[l.as_bytes(), r.as_bytes()]),
                [one] => *one,
                _ => Hash::ZERO,
            })
            .collect();
    }
    level[0]
}
