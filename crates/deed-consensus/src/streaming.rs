//! Proposal streaming: splitting a block into parts (`Init`, `Header`, `Txs`…, `Fin`)
//! and putting received parts back together.
//!
//! Parts travel over gossip in any order and may be duplicated, truncated or forged.
//! Reassembly is bounded (streams, parts and bytes per stream) and never panics;
//! whether a complete stream is a valid proposal is decided by the app loop.

use std::collections::{BTreeMap, VecDeque};

use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::PeerId;
use malachitebft_core_types::Round;

use deed_types::{encoding, Block, Hash, Header, SignedTransaction};

use crate::keys::NodeSignature;
use crate::signing::DeedSigner;
use crate::types::{Height, PartInit, ProposalPart, ValAddr};

/// Largest encoded `Txs` part: blocks are cut into chunks of about this size.
pub const TX_CHUNK_BYTES: usize = 256 * 1024;

/// The digest the proposer signs in the `Fin` part: it binds the round, the
/// proof-of-lock round and the proposer to the block (whose header hash covers the
/// transaction root).
pub fn fin_digest(chain_id: u64, init: &PartInit, block_hash: &Hash) -> Hash {
    Hash::domain(
        "deed 2026 proposal",
        &[
            &chain_id.to_le_bytes(),
            &init.height.0.to_le_bytes(),
            &init.round.as_i64().to_le_bytes(),
            &init.pol_round.as_i64().to_le_bytes(),
            init.proposer.0.as_bytes(),
            block_hash.as_bytes(),
        ],
    )
}

/// The stream id of our proposal at (height, round).
pub fn stream_id(height: Height, round: Round) -> StreamId {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&height.0.to_be_bytes());
    bytes.extend_from_slice(&round.as_i64().to_be_bytes());
    StreamId::new(bytes.into())
}

/// Splits `block` into the stream messages of a proposal by `signer`'s node.
pub fn stream_block(
    signer: &DeedSigner,
    init: PartInit,
    block: &Block,
) -> Vec<StreamMessage<ProposalPart>> {
    let id = stream_id(init.height, init.round);
    let signature = signer.sign_digest(&fin_digest(signer.chain_id(), &init, &block.header.hash()));
    let mut parts = vec![
        ProposalPart::Init(init),
        ProposalPart::Header(block.header.clone()),
    ];
    let mut chunk: Vec<SignedTransaction> = Vec::new();
    let mut chunk_bytes = 0usize;
    for tx in &block.txs {
        let len = encoding::encode(tx).len();
        if !chunk.is_empty() && chunk_bytes + len > TX_CHUNK_BYTES {
            parts.push(ProposalPart::Txs(std::mem::take(&mut chunk)));
            chunk_bytes = 0;
        }
        chunk.push(tx.clone());
        chunk_bytes += len;
    }
    if !chunk.is_empty() {
        parts.push(ProposalPart::Txs(chunk));
    }
    parts.push(ProposalPart::Fin(signature));
    let mut msgs: Vec<StreamMessage<ProposalPart>> = parts
        .into_iter()
        .zip(0u64..)
        .map(|(p, seq)| StreamMessage::new(id.clone(), seq, StreamContent::Data(p)))
        .collect();
    let last = msgs.len() as u64;
    msgs.push(StreamMessage::new(id, last, StreamContent::Fin));
    msgs
}

/// A complete, well-formed stream: the proposal it carries, not yet validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembled {
    /// The `Init` part.
    pub init: PartInit,
    /// The block.
    pub block: Block,
    /// The `Fin` signature.
    pub signature: NodeSignature,
}

/// Why a complete stream is not a well-formed proposal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The parts are not `Init`, `Header`, `Txs`…, `Fin` in that order.
    #[error("proposal parts out of order: {0}")]
    BadOrder(&'static str),
}

fn assemble(parts: Vec<ProposalPart>) -> Result<Assembled, StreamError> {
    let mut it = parts.into_iter();
    let Some(ProposalPart::Init(init)) = it.next() else {
        return Err(StreamError::BadOrder("first part is not init"));
    };
    let Some(ProposalPart::Header(header)) = it.next() else {
        return Err(StreamError::BadOrder("second part is not the header"));
    };
    let header: Header = header;
    let mut txs = Vec::new();
    for p in it {
        match p {
            ProposalPart::Txs(mut chunk) => txs.append(&mut chunk),
            ProposalPart::Fin(signature) => {
                return Ok(Assembled {
                    init,
                    block: Block { header, txs },
                    signature,
                })
            }
            ProposalPart::Init(_) | ProposalPart::Header(_) => {
                return Err(StreamError::BadOrder("init or header after the start"))
            }
        }
    }
    Err(StreamError::BadOrder("no fin part"))
}

#[derive(Default)]
struct Stream {
    parts: BTreeMap<u64, StreamContent<ProposalPart>>,
    end: Option<u64>,
    bytes: usize,
}

/// What inserting a stream message produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The stream is not complete yet (or the message was a duplicate).
    Pending,
    /// The stream is complete and well formed.
    Complete(Box<Assembled>),
    /// The stream is complete but malformed; it was dropped.
    Rejected(StreamError),
    /// The stream broke a size limit and was dropped.
    TooLarge,
}

/// Streams being reassembled, keyed by (sending peer, stream id). Bounded: at most
/// `max_streams` at once (the oldest is dropped), `max_bytes` of parts per stream.
pub struct PartStreams {
    streams: BTreeMap<(PeerId, StreamId), Stream>,
    order: VecDeque<(PeerId, StreamId)>,
    max_streams: usize,
    max_bytes: usize,
}

impl PartStreams {
    /// An empty set of streams with these limits.
    pub fn new(max_streams: usize, max_bytes: usize) -> PartStreams {
        PartStreams {
            streams: BTreeMap::new(),
            order: VecDeque::new(),
            max_streams: max_streams.max(1),
            max_bytes,
        }
    }

    /// Streams in progress.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is in progress.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Adds a message from `from`.
    pub fn insert(&mut self, from: PeerId, msg: StreamMessage<ProposalPart>) -> Inserted {
        let key = (from, msg.stream_id.clone());
        if !self.streams.contains_key(&key) {
            while self.streams.len() >= self.max_streams {
                match self.order.pop_front() {
                    Some(old) => {
                        self.streams.remove(&old);
                    }
                    None => break,
                }
            }
            self.order.push_back(key.clone());
        }
        let stream = self.streams.entry(key.clone()).or_default();
        if stream.parts.contains_key(&msg.sequence) {
            return Inserted::Pending;
        }
        let size = match &msg.content {
            StreamContent::Data(p) => encoding::encode(p).len(),
            StreamContent::Fin => 0,
        };
        stream.bytes = stream.bytes.saturating_add(size);
        if stream.bytes > self.max_bytes {
            self.remove(&key);
            return Inserted::TooLarge;
        }
        if msg.content.is_fin() {
            stream.end = Some(msg.sequence);
        }
        stream.parts.insert(msg.sequence, msg.content);
        let complete = match stream.end {
            Some(end) => {
                end.checked_add(1) == Some(stream.parts.len() as u64)
                    && stream.parts.keys().next_back() == Some(&end)
            }
            None => false,
        };
        if !complete {
            return Inserted::Pending;
        }
        let Some(stream) = self.remove(&key) else {
            return Inserted::Pending;
        };
        let parts: Vec<ProposalPart> = stream
            .parts
            .into_values()
            .filter_map(StreamContent::into_data)
            .collect();
        match assemble(parts) {
            Ok(a) => Inserted::Complete(Box::new(a)),
            Err(e) => Inserted::Rejected(e),
        }
    }

    fn remove(&mut self, key: &(PeerId, StreamId)) -> Option<Stream> {
        self.order.retain(|k| k != key);
        self.streams.remove(key)
    }
}

/// Who is expected to have built a block streamed with `init`: a fresh proposal
/// (`pol_round` nil) is built by the round's proposer; a re-proposed locked value
/// may have been built by any validator in an earlier round.
pub fn expected_builder(init: &PartInit) -> Option<ValAddr> {
    if init.pol_round == Round::Nil {
        Some(init.proposer)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::NodeSecretKey;
    use deed_types::Address;

    fn block(ntx: usize) -> Block {
        let key = deed_types::SecretKey::from_seed(b"sender");
        let txs = (0..ntx as u64)
            .map(|nonce| {
                deed_types::Transaction {
                    chain_id: 1,
                    nonce,
                    fee: 1,
                    action: deed_types::Action::Transfer {
                        to: Address([9; 20]),
                        amount: 5,
                    },
                }
                .sign(&key)
                .unwrap()
            })
            .collect::<Vec<_>>();
        Block {
            header: Header {
                chain_id: 1,
                height: 2,
                time: 3,
                prev_hash: Hash::of(b"p"),
                tx_root: deed_types::tx_root(&txs),
                state_root: Hash::of(b"s"),
                proposer: Address([1; 20]),
            },
            txs,
        }
    }

    fn init() -> PartInit {
        PartInit {
            height: Height(2),
            round: Round::new(0),
            pol_round: Round::Nil,
            proposer: ValAddr(Address([1; 20])),
        }
    }

    fn peer() -> PeerId {
        NodeSecretKey::from_seed(b"p")
            .public_key()
            .peer_id()
            .unwrap()
    }

    #[test]
    fn any_order_reassembles_and_signature_verifies() {
        let signer = DeedSigner::new(NodeSecretKey::from_seed(b"k"), 1);
        let b = block(5);
        let mut msgs = stream_block(&signer, init(), &b);
        msgs.reverse();
        let mut s = PartStreams::new(4, 1 << 20);
        let n = msgs.len();
        let mut out = None;
        for (i, m) in msgs.into_iter().enumerate() {
            match s.insert(peer(), m) {
                Inserted::Complete(a) => {
                    assert_eq!(i, n - 1);
                    out = Some(a);
                }
                Inserted::Pending => assert!(i < n - 1),
                other => panic!("{other:?}"),
            }
        }
        let a = out.unwrap();
        assert_eq!(a.block, b);
        assert_eq!(a.init, init());
        let d = fin_digest(1, &a.init, &a.block.header.hash());
        assert!(signer.public_key().verify(&d, &a.signature));
        assert!(s.is_empty());
    }

    #[test]
    fn duplicates_do_not_complete_and_limits_hold() {
        let signer = DeedSigner::new(NodeSecretKey::from_seed(b"k"), 1);
        let msgs = stream_block(&signer, init(), &block(3));
        let mut s = PartStreams::new(4, 1 << 20);
        for _ in 0..3 {
            assert_eq!(s.insert(peer(), msgs[0].clone()), Inserted::Pending);
        }
        let mut tiny = PartStreams::new(4, 100);
        let mut results = msgs.iter().map(|m| tiny.insert(peer(), m.clone()));
        assert!(results.any(|r| r == Inserted::TooLarge));
    }

    #[test]
    fn missing_header_is_rejected() {
        let signer = DeedSigner::new(NodeSecretKey::from_seed(b"k"), 1);
        let msgs = stream_block(&signer, init(), &block(1));
        let mut s = PartStreams::new(4, 1 << 20);
        // Renumber without the header part so the stream is complete but malformed.
        let kept: Vec<_> = msgs
            .into_iter()
            .filter(|m| !matches!(m.content, StreamContent::Data(ProposalPart::Header(_))))
            .enumerate()
            .map(|(i, m)| StreamMessage::new(m.stream_id, i as u64, m.content))
            .collect();
        let last = kept.into_iter().map(|m| s.insert(peer(), m)).last();
        assert!(matches!(last, Some(Inserted::Rejected(_))));
    }

    #[test]
    fn oldest_stream_is_dropped_at_the_limit() {
        let signer = DeedSigner::new(NodeSecretKey::from_seed(b"k"), 1);
        let mut s = PartStreams::new(2, 1 << 20);
        for r in 0..3 {
            let mut i = init();
            i.round = Round::new(r);
            let first = stream_block(&signer, i, &block(1)).remove(0);
            s.insert(peer(), first);
        }
        assert_eq!(s.len(), 2);
    }
}
