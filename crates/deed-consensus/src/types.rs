//! Deed's implementation of malachite's [`Context`](mc::Context): heights, addresses, the block as
//! the consensus value, votes, proposals, proposal parts and the validator set.
//!
//! These are newtypes over `deed_types` values because malachite's traits cannot be
//! implemented on another crate's types.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};
use malachitebft_core_types as mc;
use malachitebft_core_types::{NilOrVal, Round, SignedExtension, VoteType, VotingPower};

use deed_types::{Address, Block, Hash, Header, SignedTransaction};

use crate::keys::{NodePublicKey, NodeSignature};
use crate::signing::NodeEd25519;

/// A block height (the first block after genesis is 1).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl mc::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// A validator's address: its operator account, which is also the block proposer
/// paid the fees.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize,
)]
pub struct ValAddr(pub Address);

impl fmt::Display for ValAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for ValAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValAddr({})", self.0)
    }
}

impl mc::Address for ValAddr {}

/// A block's id: its header hash.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, BorshSerialize, BorshDeserialize,
)]
pub struct BlockId(pub Hash);

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The consensus value: a whole block, identified (compared and ordered) by its
/// header hash.
#[derive(Clone, Debug)]
pub struct BlockValue {
    block: Arc<Block>,
    id: BlockId,
}

impl BlockValue {
    /// Wraps a block.
    pub fn new(block: Block) -> BlockValue {
        let id = BlockId(block.header.hash());
        BlockValue {
            block: Arc::new(block),
            id,
        }
    }

    /// The block.
    pub fn block(&self) -> &Block {
        &self.block
    }

    /// The block's id.
    pub fn block_id(&self) -> BlockId {
        self.id
    }
}

impl PartialEq for BlockValue {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for BlockValue {}

impl PartialOrd for BlockValue {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BlockValue {
    fn cmp(&self, other: &Self) -> Ordering {
        self.id.cmp(&other.id)
    }
}

impl mc::Value for BlockValue {
    type Id = BlockId;

    fn id(&self) -> BlockId {
        self.id
    }
}

impl BorshSerialize for BlockValue {
    fn serialize<W: borsh::io::Write>(&self, w: &mut W) -> borsh::io::Result<()> {
        self.block.serialize(w)
    }
}

impl BorshDeserialize for BlockValue {
    fn deserialize_reader<R: borsh::io::Read>(r: &mut R) -> borsh::io::Result<Self> {
        let block = Block::deserialize_reader(r)?;
        for tx in &block.txs {
            tx.tx.action.check_limits().map_err(|e| {
                borsh::io::Error::new(borsh::io::ErrorKind::InvalidData, e.to_string())
            })?;
        }
        Ok(BlockValue::new(block))
    }
}

/// A validator: address, consensus key and voting power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    /// The operator account.
    pub address: ValAddr,
    /// The consensus (and libp2p) key.
    pub public_key: NodePublicKey,
    /// Voting power (non-zero).
    pub voting_power: VotingPower,
}

impl mc::Validator<DeedCtx> for Validator {
    fn address(&self) -> &ValAddr {
        &self.address
    }

    fn public_key(&self) -> &NodePublicKey {
        &self.public_key
    }

    fn voting_power(&self) -> VotingPower {
        self.voting_power
    }
}

/// Why a list of validators is not a validator set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidatorSetError {
    /// No validators.
    #[error("the validator set is empty")]
    Empty,
    /// A validator with no voting power.
    #[error("validator {0} has zero voting power")]
    ZeroPower(ValAddr),
    /// An address listed twice.
    #[error("validator {0} is listed twice")]
    DuplicateAddress(ValAddr),
    /// A consensus key listed twice (the second validator using it is named).
    #[error("validator {0} reuses another validator's consensus key")]
    DuplicateKey(ValAddr),
    /// The total voting power overflows.
    #[error("total voting power overflows")]
    PowerOverflow,
}

/// A non-empty validator set, ordered by voting power (descending), then address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Arc<Vec<Validator>>,
    total: VotingPower,
}

impl ValidatorSet {
    /// Checks and orders `validators`.
    pub fn new(mut validators: Vec<Validator>) -> Result<ValidatorSet, ValidatorSetError> {
        if validators.is_empty() {
            return Err(ValidatorSetError::Empty);
        }
        validators.sort_by(|a, b| {
            b.voting_power
                .cmp(&a.voting_power)
                .then(a.address.cmp(&b.address))
        });
        let mut total: VotingPower = 0;
        for (i, v) in validators.iter().enumerate() {
            if v.voting_power == 0 {
                return Err(ValidatorSetError::ZeroPower(v.address));
            }
            total = total
                .checked_add(v.voting_power)
                .ok_or(ValidatorSetError::PowerOverflow)?;
            for w in &validators[..i] {
                if w.address == v.address {
                    return Err(ValidatorSetError::DuplicateAddress(v.address));
                }
                if w.public_key == v.public_key {
                    return Err(ValidatorSetError::DuplicateKey(v.address));
                }
            }
        }
        Ok(ValidatorSet {
            validators: Arc::new(validators),
            total,
        })
    }

    /// The validators, in set order.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// The validator with this address.
    pub fn get(&self, address: &ValAddr) -> Option<&Validator> {
        self.validators.iter().find(|v| &v.address == address)
    }

    /// The proposer of `round` at `height`: a stake-weighted pick seeded by the height,
    /// then the next validators in set order for later rounds, so a dead proposer is
    /// skipped by the round after.
    pub fn proposer(&self, height: Height, round: Round) -> &Validator {
        let n = self.validators.len();
        let seed = Hash::domain("deed 2026 proposer", &[&height.0.to_le_bytes()]);
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&seed.as_bytes()[..8]);
        // `total` is non-zero: the set is non-empty and every power is non-zero.
        let mut ticket = u64::from_le_bytes(eight) % self.total.max(1);
        let mut start = 0;
        for (i, v) in self.validators.iter().enumerate() {
            if ticket < v.voting_power {
                start = i;
                break;
            }
            ticket -= v.voting_power;
        }
        let r = usize::try_from(round.as_i64().max(0)).unwrap_or(0);
        // The set is never empty (checked in `new`), so the index is in range.
        &self.validators[(start + r % n) % n]
    }
}

impl mc::ValidatorSet<DeedCtx> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }

    fn total_voting_power(&self) -> VotingPower {
        self.total
    }

    fn get_by_address(&self, address: &ValAddr) -> Option<&Validator> {
        self.get(address)
    }

    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

/// A proposal: the block proposed at (height, round), with its proof-of-lock round.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Proposal {
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// The proposed block.
    pub value: BlockValue,
    /// The round in which the value got a polka, or nil.
    pub pol_round: Round,
    /// The proposer.
    pub proposer: ValAddr,
}

impl mc::Proposal<DeedCtx> for Proposal {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &BlockValue {
        &self.value
    }

    fn take_value(self) -> BlockValue {
        self.value
    }

    fn pol_round(&self) -> Round {
        self.pol_round
    }

    fn validator_address(&self) -> &ValAddr {
        &self.proposer
    }
}

/// A prevote or precommit. Deed uses no vote extensions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, BorshSerialize, BorshDeserialize)]
pub struct Vote {
    /// Prevote or precommit.
    pub typ: VoteType,
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// The block voted for, or nil.
    pub value: NilOrVal<BlockId>,
    /// The voter.
    pub validator: ValAddr,
}

impl mc::Vote<DeedCtx> for Vote {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &NilOrVal<BlockId> {
        &self.value
    }

    fn take_value(self) -> NilOrVal<BlockId> {
        self.value
    }

    fn vote_type(&self) -> VoteType {
        self.typ
    }

    fn validator_address(&self) -> &ValAddr {
        &self.validator
    }

    fn extension(&self) -> Option<&SignedExtension<DeedCtx>> {
        None
    }

    fn take_extension(&mut self) -> Option<SignedExtension<DeedCtx>> {
        None
    }

    fn extend(self, _extension: SignedExtension<DeedCtx>) -> Self {
        self
    }
}

/// The first part of a streamed proposal.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PartInit {
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// Proof-of-lock round (nil for a freshly built block).
    pub pol_round: Round,
    /// The proposer of this round (who signs the `Fin` part).
    pub proposer: ValAddr,
}

/// One part of a streamed proposal: `Init`, `Header`, any number of `Txs`, `Fin`.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ProposalPart {
    /// Who proposes what at which height and round.
    Init(PartInit),
    /// The block header.
    Header(Header),
    /// A chunk of the block's transactions, in order.
    Txs(Vec<SignedTransaction>),
    /// The proposer's signature over the stream (see [`crate::streaming::fin_digest`]).
    Fin(NodeSignature),
}

impl ProposalPart {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProposalPart::Init(_) => "init",
            ProposalPart::Header(_) => "header",
            ProposalPart::Txs(_) => "txs",
            ProposalPart::Fin(_) => "fin",
        }
    }
}

impl mc::ProposalPart<DeedCtx> for ProposalPart {
    fn is_first(&self) -> bool {
        matches!(self, ProposalPart::Init(_))
    }

    fn is_last(&self) -> bool {
        matches!(self, ProposalPart::Fin(_))
    }
}

/// Deed's consensus context: the chain id (bound into every signature) and the
/// types above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeedCtx {
    /// The chain.
    pub chain_id: u64,
}

impl mc::Context for DeedCtx {
    type Address = ValAddr;
    type Height = Height;
    type ProposalPart = ProposalPart;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Value = BlockValue;
    type Vote = Vote;
    type Extension = ();
    type SigningScheme = NodeEd25519;

    fn select_proposer<'a>(
        &self,
        validator_set: &'a ValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a Validator {
        validator_set.proposer(height, round)
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: BlockValue,
        pol_round: Round,
        address: ValAddr,
    ) -> Proposal {
        Proposal {
            height,
            round,
            value,
            pol_round,
            proposer: address,
        }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BlockId>,
        address: ValAddr,
    ) -> Vote {
        Vote {
            typ: VoteType::Prevote,
            height,
            round,
            value: value_id,
            validator: address,
        }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BlockId>,
        address: ValAddr,
    ) -> Vote {
        Vote {
            typ: VoteType::Precommit,
            height,
            round,
            value: value_id,
            validator: address,
        }
    }
}

/// Voting power from stake: the stakes shifted right just enough that their sum
/// fits 62 bits (so no sum of powers overflows), the same shift for everyone.
pub fn voting_powers(stakes: &[u128]) -> Vec<VotingPower> {
    let total = stakes.iter().fold(0u128, |a, s| a.saturating_add(*s));
    let shift = (128 - total.leading_zeros()).saturating_sub(62);
    stakes
        .iter()
        .map(|s| VotingPower::try_from(s >> shift).unwrap_or(VotingPower::MAX))
        .collect()
}

/// The validator set a ledger state names for the next height: bonded, unjailed
/// executors with a consensus key and at least the minimum stake, by stake
/// ([`deed_ledger::State::consensus_validators`]), with power from stake. `None`
/// when it names none (a chain whose genesis has no validators keeps the set it
/// started with).
pub fn validator_set_of(state: &deed_ledger::State) -> Option<ValidatorSet> {
    let named = state.consensus_validators();
    if named.is_empty() {
        return None;
    }
    let powers = voting_powers(&named.iter().map(|v| v.2).collect::<Vec<_>>());
    let validators = named
        .into_iter()
        .zip(powers)
        .filter(|(_, p)| *p > 0)
        .filter_map(|((address, key, _), voting_power)| {
            // The ledger checked the key when it was set; a bad one is skipped.
            Some(Validator {
                address: ValAddr(address),
                public_key: NodePublicKey::from_bytes(&key).ok()?,
                voting_power,
            })
        })
        .collect();
    ValidatorSet::new(validators).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::NodeSecretKey;

    fn val(i: u8, power: u64) -> Validator {
        Validator {
            address: ValAddr(Address([i; 20])),
            public_key: NodeSecretKey::from_seed(&[i]).public_key(),
            voting_power: power,
        }
    }

    #[test]
    fn validator_set_checks_and_orders() {
        assert_eq!(ValidatorSet::new(vec![]), Err(ValidatorSetError::Empty));
        assert!(matches!(
            ValidatorSet::new(vec![val(1, 0)]),
            Err(ValidatorSetError::ZeroPower(_))
        ));
        assert!(matches!(
            ValidatorSet::new(vec![val(1, 1), val(1, 2)]),
            Err(ValidatorSetError::DuplicateAddress(_))
        ));
        assert!(matches!(
            ValidatorSet::new(vec![val(1, u64::MAX), val(2, 1)]),
            Err(ValidatorSetError::PowerOverflow)
        ));
        let s = ValidatorSet::new(vec![val(3, 1), val(1, 1), val(2, 5)]).unwrap();
        let order: Vec<u8> = s.validators().iter().map(|v| v.address.0 .0[0]).collect();
        assert_eq!(order, vec![2, 1, 3]);
    }

    #[test]
    fn proposer_rotates_through_rounds_and_follows_stake() {
        let s = ValidatorSet::new((1..=4).map(|i| val(i, 10)).collect()).unwrap();
        for h in 1..20 {
            let mut seen: Vec<ValAddr> = (0..4)
                .map(|r| s.proposer(Height(h), Round::new(r)).address)
                .collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), 4, "4 rounds visit every validator");
            assert_eq!(
                s.proposer(Height(h), Round::new(0)),
                s.proposer(Height(h), Round::new(4))
            );
        }
        let heavy = ValidatorSet::new(vec![val(1, 1000), val(2, 1)]).unwrap();
        let firsts = (1..200)
            .filter(|h| {
                heavy.proposer(Height(*h), Round::new(0)).address == ValAddr(Address([1; 20]))
            })
            .count();
        assert!(firsts > 180, "stake-weighted: {firsts}");
    }

    #[test]
    fn block_value_borsh_round_trip() {
        let b = Block {
            header: Header {
                chain_id: 7,
                height: 3,
                time: 9,
                prev_hash: Hash::of(b"p"),
                tx_root: deed_types::tx_root(&[]),
                state_root: Hash::of(b"s"),
                proposer: Address([4; 20]),
            },
            txs: vec![],
        };
        let v = BlockValue::new(b.clone());
        let bytes = borsh::to_vec(&v).unwrap();
        assert_eq!(bytes, b.encode());
        let back = BlockValue::try_from_slice(&bytes).unwrap();
        assert_eq!(back.block(), &b);
        assert_eq!(back.block_id(), BlockId(b.header.hash()));
    }

    #[test]
    fn voting_power_keeps_proportions_and_never_overflows() {
        assert_eq!(voting_powers(&[10, 20, 30]), vec![10, 20, 30]);
        let big = voting_powers(&[u128::MAX / 2, u128::MAX / 4, u128::MAX / 4]);
        let total: u128 = big.iter().map(|p| u128::from(*p)).sum();
        assert!(total < 1 << 63, "{big:?}");
        assert!(big[0] >= 2 * big[1] - 1 && big[1] == big[2]);
        assert_eq!(voting_powers(&[]), Vec::<u64>::new());
    }
}
