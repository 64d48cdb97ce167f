//! Signing consensus messages: the ed25519 [`SigningScheme`] and the node's
//! [`SigningProvider`].
//!
//! Every signature covers a blake3 digest of a domain label, the chain id and the
//! message's canonical (borsh) encoding, so a signature made for one purpose or one
//! chain is never valid for another.

use borsh::BorshSerialize;
use malachitebft_core_types::{SignedMessage, SigningProvider, SigningScheme};

use deed_types::{encoding, Hash};

use crate::keys::{NodePublicKey, NodeSecretKey, NodeSignature};
use crate::types::{DeedCtx, Proposal, ProposalPart, Vote};

/// Why bytes are not a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an ed25519 signature is 64 bytes, got {len}")]
pub struct SignatureLengthError {
    /// Bytes given.
    pub len: usize,
}

/// The ed25519 signing scheme of Deed's consensus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeEd25519;

impl SigningScheme for NodeEd25519 {
    type DecodingError = SignatureLengthError;
    type Signature = NodeSignature;
    type PublicKey = NodePublicKey;
    type PrivateKey = NodeSecretKey;

    fn decode_signature(bytes: &[u8]) -> Result<NodeSignature, SignatureLengthError> {
        <[u8; 64]>::try_from(bytes)
            .map(NodeSignature)
            .map_err(|_| SignatureLengthError { len: bytes.len() })
    }

    fn encode_signature(signature: &NodeSignature) -> Vec<u8> {
        signature.0.to_vec()
    }
}

const VOTE: &str = "deed 2026 consensus vote";
const PROPOSAL: &str = "deed 2026 consensus proposal";
const PROPOSAL_PART: &str = "deed 2026 consensus proposal part";
const VOTE_EXTENSION: &str = "deed 2026 consensus vote extension";

/// The digest a consensus signature covers.
pub fn signing_digest<T: BorshSerialize>(domain: &str, chain_id: u64, msg: &T) -> Hash {
    Hash::domain(domain, &[&chain_id.to_le_bytes(), &encoding::encode(msg)])
}

/// A node's signer for one chain.
#[derive(Clone, Debug)]
pub struct DeedSigner {
    key: NodeSecretKey,
    chain_id: u64,
}

impl DeedSigner {
    /// A signer with `key` on chain `chain_id`.
    pub fn new(key: NodeSecretKey, chain_id: u64) -> DeedSigner {
        DeedSigner { key, chain_id }
    }

    /// The chain.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The signer's public key.
    pub fn public_key(&self) -> NodePublicKey {
        self.key.public_key()
    }

    /// Signs a digest (already domain-separated by the caller).
    pub fn sign_digest(&self, digest: &Hash) -> NodeSignature {
        self.key.sign(digest)
    }

    fn sign<T: BorshSerialize>(&self, domain: &str, msg: &T) -> NodeSignature {
        self.key.sign(&signing_digest(domain, self.chain_id, msg))
    }

    fn verify<T: BorshSerialize>(
        &self,
        domain: &str,
        msg: &T,
        signature: &NodeSignature,
        key: &NodePublicKey,
    ) -> bool {
        key.verify(&signing_digest(domain, self.chain_id, msg), signature)
    }
}

impl SigningProvider<DeedCtx> for DeedSigner {
    fn sign_vote(&self, vote: Vote) -> SignedMessage<DeedCtx, Vote> {
        let signature = self.sign(VOTE, &vote);
        SignedMessage::new(vote, signature)
    }

    fn verify_signed_vote(
        &self,
        vote: &Vote,
        signature: &NodeSignature,
        public_key: &NodePublicKey,
    ) -> bool {
        self.verify(VOTE, vote, signature, public_key)
    }

    fn sign_proposal(&self, proposal: Proposal) -> SignedMessage<DeedCtx, Proposal> {
        let signature = self.sign(PROPOSAL, &proposal);
        SignedMessage::new(proposal, signature)
    }

    fn verify_signed_proposal(
        &self,
        proposal: &Proposal,
        signature: &NodeSignature,
        public_key: &NodePublicKey,
    ) -> bool {
        self.verify(PROPOSAL, proposal, signature, public_key)
    }

    fn sign_proposal_part(&self, part: ProposalPart) -> SignedMessage<DeedCtx, ProposalPart> {
        let signature = self.sign(PROPOSAL_PART, &part);
        SignedMessage::new(part, signature)
    }

    fn verify_signed_proposal_part(
        &self,
        part: &ProposalPart,
        signature: &NodeSignature,
        public_key: &NodePublicKey,
    ) -> bool {
        self.verify(PROPOSAL_PART, part, signature, public_key)
    }

    fn sign_vote_extension(&self, extension: ()) -> SignedMessage<DeedCtx, ()> {
        let signature = self.sign(VOTE_EXTENSION, &extension);
        SignedMessage::new(extension, signature)
    }

    fn verify_signed_vote_extension(
        &self,
        extension: &(),
        signature: &NodeSignature,
        public_key: &NodePublicKey,
    ) -> bool {
        self.verify(VOTE_EXTENSION, extension, signature, public_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BlockId, Height, ValAddr};
    use deed_types::Address;
    use malachitebft_core_types::{NilOrVal, Round, VoteType};

    fn vote() -> Vote {
        Vote {
            typ: VoteType::Precommit,
            height: Height(5),
            round: Round::new(1),
            value: NilOrVal::Val(BlockId(Hash::of(b"b"))),
            validator: ValAddr(Address([1; 20])),
        }
    }

    #[test]
    fn votes_are_bound_to_chain_and_content() {
        let key = NodeSecretKey::from_seed(b"v");
        let s = DeedSigner::new(key.clone(), 1);
        let signed = s.sign_vote(vote());
        assert!(s.verify_signed_vote(&vote(), &signed.signature, &key.public_key()));
        let other_chain = DeedSigner::new(key.clone(), 2);
        assert!(!other_chain.verify_signed_vote(&vote(), &signed.signature, &key.public_key()));
        let mut nil = vote();
        nil.value = NilOrVal::Nil;
        assert!(!s.verify_signed_vote(&nil, &signed.signature, &key.public_key()));
        let mut prevote = vote();
        prevote.typ = VoteType::Prevote;
        assert!(!s.verify_signed_vote(&prevote, &signed.signature, &key.public_key()));
    }

    #[test]
    fn signature_bytes_round_trip() {
        let sig = NodeSecretKey::from_seed(b"v").sign(&Hash::of(b"x"));
        let bytes = NodeEd25519::encode_signature(&sig);
        assert_eq!(NodeEd25519::decode_signature(&bytes), Ok(sig));
        assert_eq!(
            NodeEd25519::decode_signature(&bytes[1..]),
            Err(SignatureLengthError { len: 63 })
        );
    }
}
