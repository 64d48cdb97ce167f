//! One borsh codec for everything malachite encodes: WAL entries, gossip (votes,
//! proposals, proposal parts, liveness messages) and value-sync messages.
//!
//! Decoding is strict (deed-types' canonical decoding): a size cap before parsing,
//! no trailing bytes, and each block's transactions checked against their limits.

use borsh::{BorshDeserialize, BorshSerialize};
use bytes::Bytes;
use malachitebft_app_channel::app::types::codec::Codec;

use deed_types::{encoding, DecodeError};

/// Largest message the codec decodes: the value-sync response limit, which a
/// decided block with its certificate must fit.
pub const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;

/// Why a consensus message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes are not a canonical encoding of the expected message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The message encodes to more than [`MAX_MESSAGE_BYTES`].
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// Limit.
        max: usize,
    },
}

/// The borsh codec (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct BorshCodec;

impl<T> Codec<T> for BorshCodec
where
    T: BorshSerialize + BorshDeserialize + Send + Sync + 'static,
{
    type Error = CodecError;

    fn decode(&self, bytes: Bytes) -> Result<T, CodecError> {
        Ok(encoding::decode(
            "consensus message",
            &bytes,
            MAX_MESSAGE_BYTES,
        )?)
    }

    fn encode(&self, msg: &T) -> Result<Bytes, CodecError> {
        let bytes = encoding::encode(msg);
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(CodecError::TooLarge {
                len: bytes.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        Ok(Bytes::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::NodeSecretKey;
    use crate::signing::DeedSigner;
    use crate::streaming::stream_block;
    use crate::types::{
        BlockId, BlockValue, DeedCtx, Height, PartInit, Proposal, ProposalPart, ValAddr, Vote,
    };
    use deed_types::{Address, Block, Hash, Header};
    use malachitebft_app_channel::app::streaming::StreamMessage;
    use malachitebft_app_channel::app::types::codec::{ConsensusCodec, SyncCodec, WalCodec};
    use malachitebft_app_channel::app::types::SignedConsensusMsg;
    use malachitebft_core_types::{CommitCertificate, NilOrVal, Round, SigningProvider, VoteType};
    use proptest::prelude::*;

    fn round_trip<T, C>(codec: &C, v: &T) -> T
    where
        C: Codec<T>,
        C::Error: std::fmt::Debug,
    {
        let bytes = codec.encode(v).unwrap();
        codec.decode(bytes).unwrap()
    }

    fn signer() -> DeedSigner {
        DeedSigner::new(NodeSecretKey::from_seed(b"codec"), 3)
    }

    fn block(time: u64) -> Block {
        Block {
            header: Header {
                chain_id: 3,
                height: 2,
                time,
                prev_hash: Hash::of(b"p"),
                tx_root: deed_types::tx_root(&[]),
                state_root: Hash::of(b"s"),
                proposer: Address([2; 20]),
            },
            txs: vec![],
        }
    }

    // The engine needs one codec for the WAL and one for gossip and sync; this one
    // serves all three.
    fn engine_codecs<C: WalCodec<DeedCtx> + ConsensusCodec<DeedCtx> + SyncCodec<DeedCtx>>(
        c: C,
    ) -> C {
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn signed_votes_round_trip(h in 0u64.., r in 0u32..1000, nil: bool, id: [u8; 32], prevote: bool) {
            let codec = engine_codecs(BorshCodec);
            let vote = Vote {
                typ: if prevote { VoteType::Prevote } else { VoteType::Precommit },
                height: Height(h),
                round: Round::new(r),
                value: if nil { NilOrVal::Nil } else { NilOrVal::Val(BlockId(Hash(id))) },
                validator: ValAddr(Address([7; 20])),
            };
            let msg = SignedConsensusMsg::<DeedCtx>::Vote(signer().sign_vote(vote));
            prop_assert_eq!(round_trip(&codec, &msg), msg);
        }

        #[test]
        fn proposals_and_certificates_round_trip(t: u64, r in 0u32..1000, pol in proptest::option::of(0u32..1000)) {
            let codec = BorshCodec;
            let value = BlockValue::new(block(t));
            let proposal = Proposal {
                height: Height(2),
                round: Round::new(r),
                value: value.clone(),
                pol_round: pol.map(Round::new).unwrap_or(Round::Nil),
                proposer: ValAddr(Address([2; 20])),
            };
            let msg = SignedConsensusMsg::<DeedCtx>::Proposal(signer().sign_proposal(proposal));
            prop_assert_eq!(round_trip(&codec, &msg), msg);
            let votes = vec![signer().sign_vote(Vote {
                typ: VoteType::Precommit,
                height: Height(2),
                round: Round::new(r),
                value: NilOrVal::Val(value.block_id()),
                validator: ValAddr(Address([2; 20])),
            })];
            let cert = CommitCertificate::<DeedCtx>::new(Height(2), Round::new(r), value.block_id(), votes);
            prop_assert_eq!(cert.commit_signatures.len(), 1);
            prop_assert_eq!(round_trip(&codec, &cert), cert);
        }

        #[test]
        fn stream_messages_round_trip(t: u64, r in 0u32..1000) {
            let init = PartInit {
                height: Height(2),
                round: Round::new(r),
                pol_round: Round::Nil,
                proposer: ValAddr(Address([2; 20])),
            };
            for m in stream_block(&signer(), init, &block(t)) {
                let back: StreamMessage<ProposalPart> = round_trip(&BorshCodec, &m);
                prop_assert_eq!(back, m);
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let b = Bytes::from(bytes);
            let _ = Codec::<SignedConsensusMsg<DeedCtx>>::decode(&BorshCodec, b.clone());
            let _ = Codec::<StreamMessage<ProposalPart>>::decode(&BorshCodec, b.clone());
            let _ = Codec::<CommitCertificate<DeedCtx>>::decode(&BorshCodec, b);
        }
    }

    #[test]
    fn trailing_bytes_and_oversize_are_rejected() {
        let part = ProposalPart::Fin(signer().sign_digest(&Hash::of(b"x")));
        let mut bytes = Codec::<ProposalPart>::encode(&BorshCodec, &part)
            .unwrap()
            .to_vec();
        bytes.push(0);
        assert!(matches!(
            Codec::<ProposalPart>::decode(&BorshCodec, Bytes::from(bytes)),
            Err(CodecError::Decode(DecodeError::TrailingBytes { .. }))
        ));
        let huge = Bytes::from(vec![0u8; MAX_MESSAGE_BYTES + 1]);
        assert!(matches!(
            Codec::<ProposalPart>::decode(&BorshCodec, huge),
            Err(CodecError::Decode(DecodeError::TooLarge { .. }))
        ));
    }
}
