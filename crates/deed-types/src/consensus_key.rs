//! Consensus keys: the ed25519 key a validator signs proposals and votes with, bound to
//! the ledger address whose stake it speaks for.
//!
//! An executor registers its key with [`Action::SetConsensusKey`](crate::Action::SetConsensusKey),
//! carrying a *proof of possession*: the key's signature over
//! [`consensus_key_message`], which binds the chain id and the executor's address.
//! Without it anyone could register another validator's public key as their own and
//! have its votes counted with their stake; with it a key is only ever registered by
//! an account that holds its secret (or that the secret's holder signed for), and a
//! proof made for one chain or one address is worthless for another.
//!
//! The proof signs the 32 bytes of the message directly, as a node signs any digest,
//! so a node holding the secret key produces it with its usual signing routine.

use ed25519_dalek::{Signature as Ed25519Signature, Signer, SigningKey, VerifyingKey};

use crate::address::Address;
use crate::hash::Hash;

/// Domain-separation context of the proof-of-possession message.
pub const CONSENSUS_KEY_CONTEXT: &str = "deed consensus key v1";

/// The message a consensus key signs to be registered for `operator` on `chain_id`:
/// blake3 (in derive-key mode, context [`CONSENSUS_KEY_CONTEXT`]) of the chain id
/// (little-endian) followed by the operator's 20 address bytes.
pub fn consensus_key_message(chain_id: u64, operator: &Address) -> Hash {
    Hash::domain(
        CONSENSUS_KEY_CONTEXT,
        &[&chain_id.to_le_bytes(), operator.as_bytes()],
    )
}

/// Why a consensus key or its proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsensusKeyError {
    /// The bytes are not an ed25519 public key (not a curve point), or the point has
    /// small order, for which any message verifies with some signature.
    #[error("not a usable ed25519 public key")]
    BadKey,
    /// The proof is not the key's signature of the registration message for this
    /// chain and address.
    #[error("the proof is not the key's signature for this chain and address")]
    BadProof,
}

/// Checks that `key` is an ed25519 public key fit for consensus: a valid encoding of
/// a point that does not have small order.
pub fn check_consensus_key(key: &[u8; 32]) -> Result<(), ConsensusKeyError> {
    let vk = VerifyingKey::from_bytes(key).map_err(|_| ConsensusKeyError::BadKey)?;
    if vk.is_weak() {
        return Err(ConsensusKeyError::BadKey);
    }
    Ok(())
}

/// Checks that `proof` is `key`'s signature of [`consensus_key_message`]`(chain_id,
/// operator)`. Verification is strict: non-canonical signatures and small-order keys
/// are refused, so every validator reaches the same verdict.
pub fn verify_consensus_key(
    chain_id: u64,
    operator: &Address,
    key: &[u8; 32],
    proof: &[u8; 64],
) -> Result<(), ConsensusKeyError> {
    check_consensus_key(key)?;
    let vk = VerifyingKey::from_bytes(key).map_err(|_| ConsensusKeyError::BadKey)?;
    let sig = Ed25519Signature::from_bytes(proof);
    vk.verify_strict(consensus_key_message(chain_id, operator).as_bytes(), &sig)
        .map_err(|_| ConsensusKeyError::BadProof)
}

/// The public key of the ed25519 secret `secret` and its proof of possession for
/// `operator` on `chain_id`: the two fields of
/// [`Action::SetConsensusKey`](crate::Action::SetConsensusKey).
pub fn prove_consensus_key(
    secret: &[u8; 32],
    chain_id: u64,
    operator: &Address,
) -> ([u8; 32], [u8; 64]) {
    let sk = SigningKey::from_bytes(secret);
    let sig = sk.sign(consensus_key_message(chain_id, operator).as_bytes());
    (sk.verifying_key().to_bytes(), sig.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OP: Address = Address([7u8; 20]);

    #[test]
    fn a_proof_verifies_for_its_chain_and_address_only() {
        let (key, proof) = prove_consensus_key(&[1u8; 32], 42, &OP);
        assert_eq!(verify_consensus_key(42, &OP, &key, &proof), Ok(()));
        assert_eq!(
            verify_consensus_key(43, &OP, &key, &proof),
            Err(ConsensusKeyError::BadProof)
        );
        assert_eq!(
            verify_consensus_key(42, &Address([8u8; 20]), &key, &proof),
            Err(ConsensusKeyError::BadProof)
        );
        let (other, _) = prove_consensus_key(&[2u8; 32], 42, &OP);
        assert_eq!(
            verify_consensus_key(42, &OP, &other, &proof),
            Err(ConsensusKeyError::BadProof)
        );
        let mut flipped = proof;
        flipped[10] ^= 1;
        assert_eq!(
            verify_consensus_key(42, &OP, &key, &flipped),
            Err(ConsensusKeyError::BadProof)
        );
    }

    #[test]
    fn the_message_binds_chain_and_address() {
        let m = consensus_key_message(1, &OP);
        assert_ne!(m, consensus_key_message(2, &OP));
        assert_ne!(m, consensus_key_message(1, &Address([8u8; 20])));
        let mut manual = blake3::Hasher::new_derive_key(CONSENSUS_KEY_CONTEXT);
        manual.update(&1u64.to_le_bytes());
        manual.update(&OP.0);
        assert_eq!(m.as_bytes(), manual.finalize().as_bytes());
    }

    #[test]
    fn small_order_and_off_curve_keys_are_refused() {
        // The identity point (y = 1) has order one: every signature with R = identity
        // and S = 0 "verifies" under non-strict rules.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            check_consensus_key(&identity),
            Err(ConsensusKeyError::BadKey)
        );
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&identity);
        assert_eq!(
            verify_consensus_key(1, &OP, &identity, &sig),
            Err(ConsensusKeyError::BadKey)
        );
        // y = 2 is not the y coordinate of any point on the curve.
        let mut off = [0u8; 32];
        off[0] = 2;
        assert_eq!(check_consensus_key(&off), Err(ConsensusKeyError::BadKey));
        let (key, _) = prove_consensus_key(&[3u8; 32], 1, &OP);
        assert_eq!(check_consensus_key(&key), Ok(()));
    }
}
