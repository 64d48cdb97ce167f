//! Typed errors: why a transaction failed, why a block was rejected.

use deed_types::{
    Address, Amount, ConsensusKeyError, DisputeId, Hash, JobId, LimitError, Mode, ModelId,
    ProposalId, SignatureError,
};

use crate::commitment::CommitmentError;
use crate::params::ParamError;
use crate::referee::RefereeError;

/// Why a transaction failed. Errors marked *not charged* leave the state untouched
/// (the sender cannot be identified or cannot pay); every other error charges the
/// fee and consumes the nonce, and changes nothing else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    // ---- not charged ----
    /// The signature does not recover a sender (not charged).
    #[error("bad signature: {0}")]
    BadSignature(#[from] SignatureError),
    /// Signed for another chain (not charged).
    #[error("transaction is for chain {got}, this chain is {expected}")]
    WrongChain {
        /// This chain.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// The nonce was already used (not charged).
    #[error("nonce {got} already used; next nonce is {expected}")]
    NonceReplayed {
        /// The sender's next nonce.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// The nonce skips ahead (not charged).
    #[error("nonce {got} skips ahead; next nonce is {expected}")]
    NonceGap {
        /// The sender's next nonce.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// The fee is below the minimum (not charged).
    #[error("fee {fee} is below the minimum {min}")]
    FeeTooLow {
        /// Offered.
        fee: Amount,
        /// Required.
        min: Amount,
    },
    /// The sender cannot pay the fee (not charged).
    #[error("balance {balance} cannot pay the fee {fee}")]
    CannotPayFee {
        /// Balance.
        balance: Amount,
        /// Fee.
        fee: Amount,
    },
    /// A field is over its size limit (not charged).
    #[error(transparent)]
    Limit(#[from] LimitError),

    // ---- charged ----
    /// Not enough balance for the action.
    #[error("insufficient balance: {available} available, {needed} needed")]
    InsufficientBalance {
        /// Balance after the fee.
        available: Amount,
        /// Needed.
        needed: Amount,
    },
    /// An amount overflowed.
    #[error("arithmetic overflow in {0}")]
    Overflow(&'static str),
    /// A zero amount where a positive one is needed.
    #[error("amount must be positive")]
    ZeroAmount,
    /// No such model.
    #[error("unknown model {0}")]
    UnknownModel(ModelId),
    /// No such version.
    #[error("model {model} has no version {version}")]
    UnknownVersion {
        /// The model.
        model: ModelId,
        /// The version asked for.
        version: u32,
    },
    /// The model has no usable (published, not deprecated) version.
    #[error("model {0} has no usable version")]
    NoUsableVersion(ModelId),
    /// The version is deprecated.
    #[error("model {model} version {version} is deprecated")]
    VersionDeprecated {
        /// The model.
        model: ModelId,
        /// The version.
        version: u32,
    },
    /// Only the owner may do this.
    #[error("{sender} is not the owner of {model} (owner: {owner})")]
    NotOwner {
        /// The model.
        model: ModelId,
        /// Its owner.
        owner: Address,
        /// Who tried.
        sender: Address,
    },
    /// The owner already has a model with this name.
    #[error("{owner} already has a model named {name:?}")]
    DuplicateName {
        /// The owner.
        owner: Address,
        /// The name.
        name: String,
    },
    /// An empty model name.
    #[error("model name must not be empty")]
    EmptyName,
    /// Upstream share above 100 %.
    #[error("upstream share {0} bps exceeds 10000")]
    BadShare(u16),
    /// The licence does not allow the sender.
    #[error("{sender} is not licensed to run {model}")]
    NotLicensed {
        /// The model.
        model: ModelId,
        /// Who tried.
        sender: Address,
    },
    /// Not a bonded executor.
    #[error("{0} is not a bonded executor")]
    NotExecutor(Address),
    /// Unbonding more than is bonded.
    #[error("cannot unbond {requested}; {bonded} bonded")]
    InsufficientStake {
        /// Bonded.
        bonded: Amount,
        /// Asked.
        requested: Amount,
    },
    /// Nothing has finished unbonding.
    #[error("nothing to withdraw yet")]
    NothingToWithdraw,
    /// Unjail asked while not jailed or too early.
    #[error("cannot unjail before height {until:?}")]
    StillJailed {
        /// Jailed until (None: not jailed).
        until: Option<u64>,
    },
    /// Replicated mode with a bad `k`.
    #[error("replication factor {k} is outside 2..={max}")]
    BadReplication {
        /// Asked.
        k: u8,
        /// Allowed maximum.
        max: u64,
    },
    /// Not enough eligible executors for the request.
    #[error("{available} eligible executors for {model}, {needed} needed")]
    NoExecutors {
        /// The model.
        model: ModelId,
        /// Eligible ones.
        available: usize,
        /// Needed.
        needed: usize,
    },
    /// A direct call named an executor that is not bonded, jailed, or not serving
    /// the model.
    #[error("executor {executor} is not eligible to serve {model}")]
    ExecutorNotEligible {
        /// The model.
        model: ModelId,
        /// The named executor.
        executor: Address,
    },
    /// A direct call (one named executor) asked for a replicated mode.
    #[error("a direct call cannot use mode {mode:?}")]
    DirectNotAllowed {
        /// The mode asked for.
        mode: Mode,
    },
    /// The total cost exceeds the requester's maximum fee.
    #[error("job costs at least {needed}, above the maximum fee {max_fee}")]
    MaxFeeTooLow {
        /// The requester's cap.
        max_fee: Amount,
        /// The cheapest possible total.
        needed: Amount,
    },
    /// No such job.
    #[error("unknown job {0}")]
    UnknownJob(JobId),
    /// A stored job whose per-executor records do not line up (a damaged state).
    #[error("job {0} is inconsistent in the state")]
    CorruptJob(JobId),
    /// The job is not in a state that accepts this action.
    #[error("job {job} does not accept {action} now")]
    WrongJobPhase {
        /// The job.
        job: JobId,
        /// The action tried.
        action: &'static str,
    },
    /// The sender is not an executor assigned to the job.
    #[error("{sender} is not assigned to job {job}")]
    NotAssigned {
        /// The job.
        job: JobId,
        /// Who tried.
        sender: Address,
    },
    /// The executor already acted in this phase.
    #[error("{0} already acted in this phase")]
    AlreadyActed(Address),
    /// The receipt's step count differs from the version's.
    #[error("receipt has {got} steps, the version has {expected}")]
    WrongStepCount {
        /// The version's.
        expected: u64,
        /// The receipt's.
        got: u64,
    },
    /// A reveal does not match its commitment.
    #[error("reveal does not match the commitment")]
    CommitmentMismatch,
    /// A challenge of a receipt with the same trace root.
    #[error("challenger's trace root equals the receipt's")]
    NothingToDispute,
    /// An executor of the job may not attest to it.
    #[error("an executor cannot attest to its own job")]
    SelfAudit,
    /// The job accepts no more attestations.
    #[error("job {job} already has {max} attestations")]
    AuditFull {
        /// The job.
        job: JobId,
        /// The limit.
        max: u64,
    },
    /// The executor may not challenge itself.
    #[error("an executor cannot challenge its own receipt")]
    SelfChallenge,
    /// No such dispute.
    #[error("unknown dispute {0}")]
    UnknownDispute(DisputeId),
    /// Not this party's move, or the wrong move.
    #[error("dispute {dispute} does not accept {action} from {sender} now")]
    WrongMove {
        /// The dispute.
        dispute: DisputeId,
        /// The move.
        action: &'static str,
        /// Who tried.
        sender: Address,
    },
    /// A revealed step is not the one asked for.
    #[error("expected a reveal of step {expected} of {len}, got step {got} of {got_len}")]
    WrongStep {
        /// Asked.
        expected: u64,
        /// Trace length.
        len: u64,
        /// Given.
        got: u64,
        /// Given length.
        got_len: u64,
    },
    /// A proof does not verify.
    #[error("invalid proof: {0}")]
    InvalidProof(&'static str),
    /// An input tensor does not decode.
    #[error("referee input {index} is not a valid tensor")]
    BadTensor {
        /// Position.
        index: usize,
    },
    /// The referee could not re-execute the step.
    #[error(transparent)]
    Referee(#[from] RefereeError),
    /// Proposing or voting without stake.
    #[error("{0} has no stake to propose or vote with")]
    NoStake(Address),
    /// No such proposal.
    #[error("unknown proposal {0}")]
    UnknownProposal(ProposalId),
    /// Voting is closed.
    #[error("proposal {0} is not open for votes")]
    VotingClosed(ProposalId),
    /// Voted already.
    #[error("{voter} already voted on {proposal}")]
    AlreadyVoted {
        /// The proposal.
        proposal: ProposalId,
        /// The voter.
        voter: Address,
    },
    /// The proposed value is invalid.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// A consensus key that is not a usable ed25519 key, or whose proof of possession
    /// is not its signature for this chain and the sender.
    #[error("consensus key {}: {reason}", key_hex(.key))]
    BadConsensusKey {
        /// The key.
        key: [u8; 32],
        /// What is wrong with it.
        reason: ConsensusKeyError,
    },
    /// The consensus key is registered to another executor.
    #[error("consensus key {} is already held by {holder}", key_hex(.key))]
    ConsensusKeyInUse {
        /// The key.
        key: [u8; 32],
        /// The executor holding it.
        holder: Address,
    },
    /// A decline of a job whose input fits the model: the job must be served.
    #[error("the input of job {0} fits the model: the job must be served, not declined")]
    InputFits(JobId),
}

pub(crate) fn key_hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

impl TxError {
    /// True when the error leaves the state entirely unchanged (no fee charged).
    pub fn is_uncharged(&self) -> bool {
        matches!(
            self,
            TxError::BadSignature(_)
                | TxError::WrongChain { .. }
                | TxError::NonceReplayed { .. }
                | TxError::NonceGap { .. }
                | TxError::FeeTooLow { .. }
                | TxError::CannotPayFee { .. }
                | TxError::Limit(_)
        )
    }
}

/// Why a whole block was rejected; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// Wrong chain.
    #[error("block is for chain {got}, this chain is {expected}")]
    WrongChain {
        /// This chain.
        expected: u64,
        /// The block's.
        got: u64,
    },
    /// Not the next height.
    #[error("block height {got}, expected {expected}")]
    WrongHeight {
        /// Expected.
        expected: u64,
        /// Given.
        got: u64,
    },
    /// Does not extend the last block.
    #[error("block's parent {got} is not the last block {expected}")]
    WrongParent {
        /// Last applied block.
        expected: Hash,
        /// The block's parent.
        got: Hash,
    },
    /// The header's state root is not the current root.
    #[error("block's state root {got} is not the current root {expected}")]
    WrongStateRoot {
        /// Current root.
        expected: Hash,
        /// The header's.
        got: Hash,
    },
    /// The header's transaction root does not match the transactions.
    #[error("block's transaction root {got} does not match its transactions ({expected})")]
    WrongTxRoot {
        /// Computed.
        expected: Hash,
        /// The header's.
        got: Hash,
    },
    /// The state tree failed (an internal fault, not bad input).
    #[error(transparent)]
    Commitment(#[from] CommitmentError),
}
