//! Transactions: every action a ledger account can take, the signed envelope, and
//! the size limits every field obeys.
//!
//! A [`Transaction`] carries the chain id, the sender's next nonce and the fee it
//! pays; the sender is not written down but recovered from the EIP-712 signature
//! (see [`crate::eip712`]).

use borsh::{BorshDeserialize, BorshSerialize};

use crate::address::Address;
use crate::cid::Cid;
use crate::crypto::{SecretKey, Signature, SignatureError};
use crate::encoding::{self, DecodeError};
use crate::hash::Hash;
use crate::ids::{Amount, Bps, DisputeId, JobId, ModelId, ProposalId};

/// Size limits on transaction fields. Bytes are counted in their encoded form.
pub mod limits {
    /// A whole encoded signed transaction.
    pub const MAX_TX_BYTES: usize = 256 * 1024;
    /// A model name.
    pub const MAX_NAME: usize = 64;
    /// A model description.
    pub const MAX_DESCRIPTION: usize = 2048;
    /// The input/output schema text of a version.
    pub const MAX_IO_SCHEMA: usize = 4096;
    /// Release notes of a version.
    pub const MAX_NOTES: usize = 2048;
    /// An executor endpoint URL.
    pub const MAX_ENDPOINT: usize = 256;
    /// Models one executor may serve.
    pub const MAX_MODELS_SERVED: usize = 256;
    /// Addresses on a licence allow-list.
    pub const MAX_ALLOW_LIST: usize = 256;
    /// Inline job input or inline output.
    pub const MAX_INLINE: usize = 64 * 1024;
    /// Siblings in a trace proof or peaks of an accumulator (2^64 leaves at most).
    pub const MAX_PROOF_HASHES: usize = 64;
    /// Inputs handed to the referee for one step.
    pub const MAX_REFEREE_INPUTS: usize = 32;
    /// Outputs of one producing step given with a referee input.
    pub const MAX_STEP_OUTPUTS: usize = 16;
    /// Bytes of one tensor given to the referee.
    pub const MAX_REFEREE_TENSOR: usize = 128 * 1024;
    /// An initializer name.
    pub const MAX_INITIALIZER_NAME: usize = 256;
    /// A job input blob handed to the referee (the transaction must still fit
    /// [`MAX_TX_BYTES`]).
    pub const MAX_REFEREE_JOB_INPUT: usize = 192 * 1024;
    /// One chunk of staged referee inputs ([`Action::StageReferee`](super::Action::StageReferee)).
    pub const MAX_REFEREE_CHUNK: usize = 192 * 1024;
    /// All staged referee inputs of one dispute: the borsh encoding of the step's
    /// [`RefereeInput`](super::RefereeInput)s, bounding any one tensor or job input
    /// blob handed to the referee.
    pub const MAX_REFEREE_STAGED: usize = 64 * 1024 * 1024;
}

/// Who may run a model.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Licence {
    /// Anyone; no royalty is charged.
    Open,
    /// Anyone, paying the model's price per call.
    Paid,
    /// Only the listed accounts (and the owner), paying the price per call.
    AllowList(Vec<Address>),
}

/// A model's parent and the share of each royalty that flows to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Lineage {
    /// The model this one derives from (it must already exist).
    pub parent: ModelId,
    /// Share of this model's royalty paid to the parent, in basis points.
    pub upstream_bps: Bps,
}

/// Where a job's input comes from.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum JobInput {
    /// The input bytes themselves (a borsh list of canonical tensor encodings).
    Inline(Vec<u8>),
    /// A blob holding the input.
    ByCid(Cid),
}

impl JobInput {
    /// The hash that binds the input: blake3 of the inline bytes, or the CID digest.
    pub fn hash(&self) -> Hash {
        match self {
            JobInput::Inline(b) => Hash::of(b),
            JobInput::ByCid(c) => *c.digest(),
        }
    }
}

/// How much verification a requester buys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Mode {
    /// The executor's signed receipt, final at once.
    None,
    /// Final after a challenge window during which anyone may dispute.
    Optimistic,
    /// `k` executors commit then reveal; a mismatch opens a dispute.
    Replicated(u8),
}

/// A job's result.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Output {
    /// Only the hash of the output (the bytes travel off-ledger).
    Hash(Hash),
    /// The output bytes.
    Inline(Vec<u8>),
}

impl Output {
    /// The hash that binds the output.
    pub fn hash(&self) -> Hash {
        match self {
            Output::Hash(h) => *h,
            Output::Inline(b) => Hash::of(b),
        }
    }
}

/// What an executor claims about a job. It is signed by the executor as part of
/// the transaction that carries it, so the signed transaction is the receipt's
/// signature and can be checked by anyone.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Receipt {
    /// The output.
    pub output: Output,
    /// Root of the execution trace's commitment.
    pub trace_root: Hash,
    /// Number of leaves in the trace: the graph nodes, then the output step.
    pub steps: u64,
    /// Proves that the trace's last leaf, the output step, binds `output`.
    pub output_proof: OutputProofData,
}

/// The wire form of the runtime's `OutputProof`: the MMR peaks of the node steps
/// before the output leaf and the audit path of the trace's last chain value.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct OutputProofData {
    /// MMR peaks over the node steps, tallest first.
    pub peaks: Vec<Hash>,
    /// Merkle siblings of the last chain value, from the leaf up.
    pub siblings: Vec<Hash>,
}

impl Receipt {
    /// The commitment an executor posts in the commit phase of replicated mode:
    /// binds job, output, trace and a secret salt so it reveals nothing early.
    pub fn commitment(&self, job: JobId, salt: &Hash) -> Hash {
        Hash::domain(
            "deed 2026 replicated output commitment",
            &[
                &job.0.to_le_bytes(),
                self.output.hash().as_bytes(),
                self.trace_root.as_bytes(),
                &self.steps.to_le_bytes(),
                salt.as_bytes(),
            ],
        )
    }
}

/// A revealed chain value of a trace with its Merkle proof against a trace root
/// (the wire form of the runtime's `StepProof`).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct StepProofData {
    /// Step index.
    pub index: u64,
    /// Number of steps in the trace.
    pub len: u64,
    /// The chain value `c_index`.
    pub chain_value: Hash,
    /// Merkle siblings from the leaf up.
    pub siblings: Vec<Hash>,
}

/// One input of the disputed step, as the defender hands it to the referee, with
/// what proves it is the value both parties agreed on.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum RefereeInput {
    /// Entry `index` of the job's inline input (a borsh list of canonical tensor
    /// encodings), bound by the job's input hash.
    JobInput {
        /// Position in the job's input list.
        index: u32,
    },
    /// Output `output` of an earlier step `step`. All of that step's outputs are
    /// given so the ledger can recompute its step hash `h_step` and check it is in
    /// the agreed prefix with an MMR inclusion proof.
    Step {
        /// The producing step.
        step: u64,
        /// Which of its outputs is the input.
        output: u32,
        /// Canonical encodings of every output of the producing step, in order.
        outputs: Vec<Vec<u8>>,
        /// MMR siblings of `h_step` inside its peak, nearest first.
        siblings: Vec<Hash>,
        /// The other peaks of the MMR, tallest first.
        other_peaks: Vec<Hash>,
    },
    /// A weight of the model itself, which the referee reads from the model.
    Initializer {
        /// The initializer's name.
        name: String,
    },
    /// An absent optional input.
    Absent,
    /// Entry `index` of the input list of a job whose input was given by CID: the
    /// transaction carries the whole input blob (a borsh list of canonical tensor
    /// encodings, as inline input is), which must hash to the job's input hash. That
    /// hash is the CID's blake3 digest, the hash of the blob's bytes under which the
    /// blob store keeps it.
    JobInputBlob {
        /// Position in the job's input list.
        index: u32,
        /// The job's input blob.
        blob: Vec<u8>,
    },
}

/// A governable ledger parameter.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, BorshSerialize, BorshDeserialize,
)]
#[non_exhaustive]
pub enum ParamKey {
    /// Protocol fee per job, in basis points of the executor fees.
    ProtocolFeeBps,
    /// Blocks an assigned executor has to submit a receipt.
    ExecutionTimeout,
    /// Blocks during which an optimistic receipt may be challenged.
    ChallengeWindow,
    /// Blocks before unbonded stake can be withdrawn (must exceed the challenge window
    /// plus the longest dispute).
    UnbondingPeriod,
    /// Smallest stake an executor needs to be assigned work.
    MinStake,
    /// Share of a loser's stake slashed in a dispute, in basis points.
    SlashBps,
    /// Share of the slashed amount paid to the winner, in basis points.
    RewardBps,
    /// Bond a challenger posts.
    ChallengeBond,
    /// Blocks each party has for one dispute move.
    MoveTimeout,
    /// Penalty slashed from an executor that misses its deadline.
    TimeoutPenalty,
    /// Blocks an executor stays jailed before it may unjail.
    JailPeriod,
    /// Blocks a proposal is open for votes.
    VotingPeriod,
    /// Share of bonded stake that must vote, in basis points.
    QuorumBps,
    /// Share of votes cast that must approve, in basis points.
    ThresholdBps,
    /// Blocks between a proposal passing and taking effect.
    EnactmentDelay,
    /// Lineage levels a royalty is split across.
    MaxLineageDepth,
    /// Largest `k` of replicated mode.
    MaxReplicas,
    /// Smallest fee a transaction must pay.
    MinTxFee,
    /// Largest number of validators.
    MaxValidators,
    /// Share of an optimistic job's executor fee paid to the watchers whose audit
    /// attestation matches the revealed final chain value, in basis points.
    AuditBps,
    /// Most audit attestations one job accepts.
    MaxAttesters,
}

/// One parameter change proposed to governance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ParamChange {
    /// The parameter.
    pub key: ParamKey,
    /// Its new value.
    pub value: u128,
}

/// Everything an account can ask the ledger to do.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Action {
    /// Move tokens.
    Transfer {
        /// Receiver.
        to: Address,
        /// Amount moved.
        amount: Amount,
    },
    /// Create a model owned by the sender.
    RegisterModel {
        /// Unique among the owner's models.
        name: String,
        /// Free text.
        description: String,
        /// Who may run it.
        licence: Licence,
        /// Royalty per call (ignored for open licences).
        price: Amount,
        /// The parent model, if this one derives from another.
        lineage: Option<Lineage>,
    },
    /// Publish a new version of a model (owner only).
    PublishVersion {
        /// The model.
        model: ModelId,
        /// CID of the version's manifest; also the version's content id.
        manifest: Cid,
        /// Input/output schema text.
        io_schema: String,
        /// Number of trace steps (graph nodes) an execution has.
        steps: u64,
        /// Cost of one execution in operation units, from the runtime's plan.
        cost: u64,
        /// Release notes.
        notes: String,
    },
    /// Change a model's terms (owner only); `None` leaves a field as it is.
    UpdateModel {
        /// The model.
        model: ModelId,
        /// New price.
        price: Option<Amount>,
        /// New licence.
        licence: Option<Licence>,
        /// New description.
        description: Option<String>,
    },
    /// Hand a model to another account (owner only).
    TransferModel {
        /// The model.
        model: ModelId,
        /// The new owner.
        to: Address,
    },
    /// Mark a version as not to be used for new jobs (owner only).
    DeprecateVersion {
        /// The model.
        model: ModelId,
        /// The version number.
        version: u32,
    },
    /// Bond stake as an executor (adds to existing stake and replaces the terms).
    Bond {
        /// Stake added.
        amount: Amount,
        /// Where requesters reach the executor.
        endpoint: String,
        /// Fee the executor charges per job.
        price: Amount,
        /// Models it serves.
        models: Vec<ModelId>,
    },
    /// Start unbonding stake.
    Unbond {
        /// Stake to unbond.
        amount: Amount,
    },
    /// Withdraw stake whose unbonding period has passed.
    Withdraw,
    /// Leave jail after the jail period.
    Unjail,
    /// Request an inference.
    RequestJob {
        /// The model.
        model: ModelId,
        /// A version number, or `None` for the latest non-deprecated one.
        version: Option<u32>,
        /// The input.
        input: JobInput,
        /// Verification mode.
        mode: Mode,
        /// The most the requester pays in total (royalty + executor fees + protocol fee).
        max_fee: Amount,
        /// For a direct call: the one executor the requester already sent this signed
        /// request to. It must be eligible (bonded, serving the model, within
        /// `max_fee`); only modes `none` and `optimistic` allow it.
        executor: Option<Address>,
    },
    /// An assigned executor's result (modes none and optimistic).
    SubmitReceipt {
        /// The job.
        job: JobId,
        /// The result.
        receipt: Receipt,
    },
    /// Commit phase of replicated mode: [`Receipt::commitment`].
    CommitOutput {
        /// The job.
        job: JobId,
        /// The commitment.
        commitment: Hash,
    },
    /// Reveal phase of replicated mode.
    RevealOutput {
        /// The job.
        job: JobId,
        /// The result.
        receipt: Receipt,
        /// The salt used in the commitment.
        salt: Hash,
    },
    /// Dispute an optimistic receipt, posting the challenge bond.
    Challenge {
        /// The job.
        job: JobId,
        /// The trace root the challenger computed.
        trace_root: Hash,
    },
    /// Defender's move: reveal the chain value the game asks for.
    RevealStep {
        /// The dispute.
        dispute: DisputeId,
        /// The chain value and its proof against the defender's trace root.
        proof: StepProofData,
    },
    /// Challenger's move: agree or disagree with the last revealed chain value.
    Respond {
        /// The dispute.
        dispute: DisputeId,
        /// True when the challenger's trace has the same chain value there.
        agree: bool,
    },
    /// Defender's last move once one step is left: the accumulator peaks before it
    /// and its input tensors, so validators re-execute that single step.
    Referee {
        /// The dispute.
        dispute: DisputeId,
        /// Peaks of the accumulator over the agreed prefix.
        peaks: Vec<Hash>,
        /// Input tensors of the step.
        inputs: Vec<RefereeInput>,
    },
    /// Propose a parameter change (bonded executors only).
    Propose {
        /// The change.
        change: ParamChange,
    },
    /// Vote on an open proposal with the sender's stake.
    Vote {
        /// The proposal.
        proposal: ProposalId,
        /// Yes or no.
        approve: bool,
    },
    /// A watcher's audit attestation on an optimistic result, in the first half of its
    /// challenge window: a digest binding the watcher to the final chain value
    /// `c_{n-1}` of the receipt's trace (`deed_ledger::audit::digest`), which only a
    /// full re-execution (or the executor) knows until it is revealed.
    Attest {
        /// The job.
        job: JobId,
        /// The attestation digest.
        digest: Hash,
    },
    /// Reveal the final chain value `c_{n-1}` of an optimistic receipt's trace with its
    /// proof against the trace root, in the second half of the challenge window.
    /// Anyone who ran the job can send it.
    RevealAudit {
        /// The job.
        job: JobId,
        /// The chain value at step `n - 1` and its proof.
        proof: StepProofData,
    },
    /// Defender's move in parts, for a step whose inputs do not fit one transaction:
    /// the next chunk of the borsh encoding of its [`RefereeInput`] list, kept by the
    /// dispute until [`Action::RefereeStaged`] (or the end of the dispute).
    StageReferee {
        /// The dispute.
        dispute: DisputeId,
        /// The next bytes of the encoded input list.
        chunk: Vec<u8>,
    },
    /// Defender's last move over staged inputs: as [`Action::Referee`], with the
    /// input list the [`Action::StageReferee`] chunks spelled out.
    RefereeStaged {
        /// The dispute.
        dispute: DisputeId,
        /// Peaks of the accumulator over the agreed prefix.
        peaks: Vec<Hash>,
    },
    /// Register (or rotate) the ed25519 key the sender, a bonded executor, signs
    /// consensus proposals and votes with. Keys are unique across executors.
    SetConsensusKey {
        /// The ed25519 public key.
        key: [u8; 32],
        /// Proof of possession: `key`'s signature of
        /// [`consensus_key_message`](crate::consensus_key::consensus_key_message)
        /// for this chain and the sender's address.
        proof: [u8; 64],
    },
    /// An assigned executor declines a job whose input does not fit the model
    /// version: it does not decode as the model's inputs, their dtypes or shapes do
    /// not plan, or the plan costs more than the version's published cost. The
    /// validators check the claim with the referee; if it holds, the executor is paid
    /// its fee and the rest of the escrow goes back to the requester.
    DeclineJob {
        /// The job.
        job: JobId,
        /// The job's input blob when the job names its input by CID (at most
        /// [`limits::MAX_REFEREE_JOB_INPUT`] bytes); `None` for an inline input.
        input: Option<Vec<u8>>,
    },
}

impl Action {
    /// The short name shown to a wallet in the EIP-712 `action` field.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Transfer { .. } => "transfer",
            Action::RegisterModel { .. } => "register_model",
            Action::PublishVersion { .. } => "publish_version",
            Action::UpdateModel { .. } => "update_model",
            Action::TransferModel { .. } => "transfer_model",
            Action::DeprecateVersion { .. } => "deprecate_version",
            Action::Bond { .. } => "bond",
            Action::Unbond { .. } => "unbond",
            Action::Withdraw => "withdraw",
            Action::Unjail => "unjail",
            Action::RequestJob { .. } => "request_job",
            Action::SubmitReceipt { .. } => "submit_receipt",
            Action::CommitOutput { .. } => "commit_output",
            Action::RevealOutput { .. } => "reveal_output",
            Action::Challenge { .. } => "challenge",
            Action::RevealStep { .. } => "reveal_step",
            Action::Respond { .. } => "respond",
            Action::Referee { .. } => "referee",
            Action::Propose { .. } => "propose",
            Action::Vote { .. } => "vote",
            Action::Attest { .. } => "attest",
            Action::RevealAudit { .. } => "reveal_audit",
            Action::StageReferee { .. } => "stage_referee",
            Action::RefereeStaged { .. } => "referee_staged",
            Action::SetConsensusKey { .. } => "set_consensus_key",
            Action::DeclineJob { .. } => "decline_job",
        }
    }

    /// Checks every field against [`limits`].
    pub fn check_limits(&self) -> Result<(), LimitError> {
        use limits::*;
        fn cap(field: &'static str, len: usize, max: usize) -> Result<(), LimitError> {
            if len > max {
                Err(LimitError { field, len, max })
            } else {
                Ok(())
            }
        }
        fn licence(l: &Licence) -> Result<(), LimitError> {
            match l {
                Licence::AllowList(v) => cap("licence.allow_list", v.len(), MAX_ALLOW_LIST),
                _ => Ok(()),
            }
        }
        fn receipt(r: &Receipt) -> Result<(), LimitError> {
            cap(
                "receipt.output_proof.peaks",
                r.output_proof.peaks.len(),
                MAX_PROOF_HASHES,
            )?;
            cap(
                "receipt.output_proof.siblings",
                r.output_proof.siblings.len(),
                MAX_PROOF_HASHES,
            )?;
            match &r.output {
                Output::Inline(b) => cap("receipt.output", b.len(), MAX_INLINE),
                Output::Hash(_) => Ok(()),
            }
        }
        match self {
            Action::RegisterModel {
                name,
                description,
                licence: l,
                ..
            } => {
                cap("name", name.len(), MAX_NAME)?;
                cap("description", description.len(), MAX_DESCRIPTION)?;
                licence(l)
            }
            Action::PublishVersion {
                io_schema, notes, ..
            } => {
                cap("io_schema", io_schema.len(), MAX_IO_SCHEMA)?;
                cap("notes", notes.len(), MAX_NOTES)
            }
            Action::UpdateModel {
                licence: l,
                description,
                ..
            } => {
                if let Some(d) = description {
                    cap("description", d.len(), MAX_DESCRIPTION)?;
                }
                if let Some(l) = l {
                    licence(l)?;
                }
                Ok(())
            }
            Action::Bond {
                endpoint, models, ..
            } => {
                cap("endpoint", endpoint.len(), MAX_ENDPOINT)?;
                cap("models", models.len(), MAX_MODELS_SERVED)
            }
            Action::RequestJob {
                input: JobInput::Inline(b),
                ..
            } => cap("input", b.len(), MAX_INLINE),
            Action::SubmitReceipt { receipt: r, .. } | Action::RevealOutput { receipt: r, .. } => {
                receipt(r)
            }
            Action::RevealStep { proof, .. } | Action::RevealAudit { proof, .. } => {
                cap("proof.siblings", proof.siblings.len(), MAX_PROOF_HASHES)
            }
            Action::Referee { peaks, inputs, .. } => {
                cap("peaks", peaks.len(), MAX_PROOF_HASHES)?;
                check_referee_inputs(inputs, MAX_REFEREE_TENSOR, MAX_REFEREE_JOB_INPUT)
            }
            Action::StageReferee { chunk, .. } => cap("chunk", chunk.len(), MAX_REFEREE_CHUNK),
            Action::DeclineJob {
                input: Some(blob), ..
            } => cap("input", blob.len(), MAX_REFEREE_JOB_INPUT),
            Action::RefereeStaged { peaks, .. } => cap("peaks", peaks.len(), MAX_PROOF_HASHES),
            _ => Ok(()),
        }
    }
}

/// Checks a referee input list against [`limits`], with the given caps on one tensor
/// and on a job input blob: those of one transaction for [`Action::Referee`], the
/// whole staging area for staged inputs.
pub fn check_referee_inputs(
    inputs: &[RefereeInput],
    tensor_max: usize,
    blob_max: usize,
) -> Result<(), LimitError> {
    use limits::*;
    let cap = |field: &'static str, len: usize, max: usize| {
        if len > max {
            Err(LimitError { field, len, max })
        } else {
            Ok(())
        }
    };
    cap("inputs", inputs.len(), MAX_REFEREE_INPUTS)?;
    for i in inputs {
        match i {
            RefereeInput::Step {
                outputs,
                siblings,
                other_peaks,
                ..
            } => {
                cap("inputs.outputs", outputs.len(), MAX_STEP_OUTPUTS)?;
                for o in outputs {
                    cap("inputs.outputs.tensor", o.len(), tensor_max)?;
                }
                cap("inputs.siblings", siblings.len(), MAX_PROOF_HASHES)?;
                cap("inputs.other_peaks", other_peaks.len(), MAX_PROOF_HASHES)?;
            }
            RefereeInput::Initializer { name } => {
                cap("inputs.name", name.len(), MAX_INITIALIZER_NAME)?;
            }
            RefereeInput::JobInputBlob { blob, .. } => {
                cap("inputs.blob", blob.len(), blob_max)?;
            }
            RefereeInput::JobInput { .. } | RefereeInput::Absent => {}
        }
    }
    Ok(())
}

/// A field longer than its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field} has size {len}, above the limit of {max}")]
pub struct LimitError {
    /// The field.
    pub field: &'static str,
    /// Its size.
    pub len: usize,
    /// The limit.
    pub max: usize,
}

/// An unsigned transaction.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Transaction {
    /// The chain this transaction is valid on (also in the EIP-712 domain).
    pub chain_id: u64,
    /// The sender's next nonce: exactly its count of earlier included transactions.
    pub nonce: u64,
    /// Fee paid to the block proposer whether or not the action succeeds.
    pub fee: Amount,
    /// What to do.
    pub action: Action,
}

impl Transaction {
    /// The EIP-712 digest the sender signs.
    pub fn signing_digest(&self) -> [u8; 32] {
        crate::eip712::transaction_digest(
            self.chain_id,
            self.nonce,
            self.fee,
            self.action.name(),
            encoding::encode(&self.action),
        )
    }

    /// Signs with `key`.
    pub fn sign(self, key: &SecretKey) -> Result<SignedTransaction, SignatureError> {
        let signature = key.sign_digest(&self.signing_digest())?;
        Ok(SignedTransaction {
            tx: self,
            signature,
        })
    }
}

/// A transaction with its sender's signature.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignedTransaction {
    /// The transaction.
    pub tx: Transaction,
    /// EIP-712 signature over [`Transaction::signing_digest`].
    pub signature: Signature,
}

/// Why bytes are not an acceptable signed transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxDecodeError {
    /// Not a canonical encoding.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A field is over its size limit.
    #[error(transparent)]
    Limit(#[from] LimitError),
}

impl SignedTransaction {
    /// Recovers the sender from the signature.
    pub fn sender(&self) -> Result<Address, SignatureError> {
        self.signature.recover(&self.tx.signing_digest())
    }

    /// The transaction's id: blake3 of its canonical encoding (signature included).
    pub fn hash(&self) -> Hash {
        Hash::domain("deed 2026 transaction id", &[&self.encode()])
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decodes and checks size limits. Never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<SignedTransaction, TxDecodeError> {
        let stx: SignedTransaction =
            encoding::decode("signed transaction", bytes, limits::MAX_TX_BYTES)?;
        stx.tx.action.check_limits()?;
        Ok(stx)
    }
}
