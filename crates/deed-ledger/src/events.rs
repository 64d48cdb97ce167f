//! Events: what a block did, for indexers, explorers and clients. Events of a failed
//! transaction are dropped with its other effects.

use borsh::{BorshDeserialize, BorshSerialize};
use deed_types::{Address, Amount, Cid, DisputeId, JobId, ModelId, ParamChange, ProposalId};

/// Why tokens moved or vanished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Reason {
    /// A transaction fee (to the proposer).
    TxFee,
    /// A plain transfer.
    Transfer,
    /// A model royalty (possibly a lineage share).
    Royalty,
    /// An executor's fee.
    ExecutorFee,
    /// The protocol fee (burned).
    ProtocolFee,
    /// Escrow returned to a requester.
    Refund,
    /// A missed-deadline penalty (burned).
    TimeoutPenalty,
    /// A dispute winner's reward.
    DisputeReward,
    /// A slashed remainder (burned).
    Slash,
    /// A challenger's bond returned.
    BondReturned,
    /// Unbonded stake withdrawn.
    Withdrawal,
    /// A watcher's share of an audited job's executor fee.
    AuditFee,
}

/// Something that happened in a block.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
#[non_exhaustive]
pub enum Event {
    /// Tokens credited to an account.
    Paid {
        /// Receiver.
        to: Address,
        /// Amount.
        amount: Amount,
        /// Why.
        reason: Reason,
    },
    /// Tokens destroyed.
    Burned {
        /// Amount.
        amount: Amount,
        /// Why.
        reason: Reason,
    },
    /// A model was registered.
    ModelRegistered {
        /// Its id.
        model: ModelId,
        /// Its owner.
        owner: Address,
    },
    /// A version was published.
    VersionPublished {
        /// The model.
        model: ModelId,
        /// The version number.
        version: u32,
        /// Its manifest.
        manifest: Cid,
    },
    /// A model's terms changed.
    ModelUpdated {
        /// The model.
        model: ModelId,
    },
    /// A model changed hands.
    ModelTransferred {
        /// The model.
        model: ModelId,
        /// Old owner.
        from: Address,
        /// New owner.
        to: Address,
    },
    /// A version was deprecated.
    VersionDeprecated {
        /// The model.
        model: ModelId,
        /// The version.
        version: u32,
    },
    /// Stake was bonded.
    Bonded {
        /// The executor.
        executor: Address,
        /// Added stake.
        amount: Amount,
    },
    /// Stake started unbonding.
    Unbonding {
        /// The executor.
        executor: Address,
        /// Amount.
        amount: Amount,
        /// Withdrawable from this height.
        release: u64,
    },
    /// Stake was slashed.
    Slashed {
        /// The executor.
        executor: Address,
        /// Amount taken.
        amount: Amount,
    },
    /// An executor was jailed.
    Jailed {
        /// The executor.
        executor: Address,
        /// Until this height.
        until: u64,
    },
    /// An executor left jail.
    Unjailed {
        /// The executor.
        executor: Address,
    },
    /// A job was requested and assigned.
    JobRequested {
        /// The job.
        job: JobId,
        /// Assigned executors.
        executors: Vec<Address>,
    },
    /// An executor delivered (receipt, commitment or reveal).
    JobProgress {
        /// The job.
        job: JobId,
        /// The executor.
        executor: Address,
    },
    /// A job's receipt stands and it was paid out.
    JobFinalized {
        /// The job.
        job: JobId,
    },
    /// An optimistic job's result survived a dispute and can be challenged again
    /// until `window_end`.
    ChallengeWindowReopened {
        /// The job.
        job: JobId,
        /// Last height of the reopened window.
        window_end: u64,
        /// The challenger that lost.
        loser: Address,
    },
    /// A job's escrow was returned.
    JobRefunded {
        /// The job.
        job: JobId,
    },
    /// A watcher attested to an optimistic result.
    AuditAttested {
        /// The job.
        job: JobId,
        /// The watcher.
        watcher: Address,
    },
    /// The final chain value of an optimistic result was revealed.
    AuditRevealed {
        /// The job.
        job: JobId,
    },
    /// A dispute opened.
    DisputeOpened {
        /// The dispute.
        dispute: DisputeId,
        /// The job.
        job: JobId,
    },
    /// A dispute move was made.
    DisputeMove {
        /// The dispute.
        dispute: DisputeId,
        /// New range low end.
        lo: u64,
        /// New range high end.
        hi: u64,
    },
    /// A dispute ended.
    DisputeResolved {
        /// The dispute.
        dispute: DisputeId,
        /// True when the defender won.
        defender_won: bool,
        /// True when it ended by a missed deadline.
        by_timeout: bool,
    },
    /// A proposal was made.
    Proposed {
        /// The proposal.
        proposal: ProposalId,
        /// The change.
        change: ParamChange,
    },
    /// A vote was cast.
    Voted {
        /// The proposal.
        proposal: ProposalId,
        /// The voter.
        voter: Address,
        /// Stake weight.
        weight: Amount,
        /// Direction.
        approve: bool,
    },
    /// Voting closed.
    ProposalClosed {
        /// The proposal.
        proposal: ProposalId,
        /// Passed or not.
        passed: bool,
    },
    /// A parameter changed.
    ParamChanged {
        /// The change.
        change: ParamChange,
    },
    /// An executor registered or rotated its consensus key.
    ConsensusKeySet {
        /// The executor.
        executor: Address,
        /// Its new ed25519 consensus key.
        key: [u8; 32],
    },
    /// An executor declined a job whose input does not fit the model, as the
    /// referee found: it was paid its fee and the requester got the rest back.
    JobDeclined {
        /// The job.
        job: JobId,
        /// The executor that declined it.
        executor: Address,
    },
}
