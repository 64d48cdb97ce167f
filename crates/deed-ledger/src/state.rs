//! The ledger state: typed tables of accounts, models, versions, executors, jobs,
//! disputes, proposals and deadlines, plus chain metadata and parameters.
//!
//! The state is exactly a set of key/value pairs: key = one table byte followed by
//! the borsh encoding of the table key, value = the borsh encoding of the entry.
//! [`State::to_kv`] and [`State::from_kv`] convert between the two, and the state
//! root ([`crate::commitment`]) is computed over those pairs, so a node that persists
//! the writes of each block rebuilds the identical state and root after a restart.

use borsh::{BorshDeserialize, BorshSerialize};
use deed_types::encoding;
use deed_types::{
    Address, Amount, Cid, DisputeId, Hash, JobId, Licence, Lineage, Mode, ModelId, ParamChange,
    ProposalId, Receipt,
};

use crate::commitment::{Commitment, CommitmentError, StateProof};
use crate::params::Params;
use crate::table::Table;

/// A key/value write produced by a block: `None` deletes the key.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// An account.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Account {
    /// Spendable balance.
    pub balance: Amount,
    /// Transactions included so far; the next transaction must carry this nonce.
    pub nonce: u64,
}

/// A registered model.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Model {
    /// Current owner (receives royalties).
    pub owner: Address,
    /// Name, unique among the owner's models.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Who may run it.
    pub licence: Licence,
    /// Royalty per call.
    pub price: Amount,
    /// Parent and upstream share.
    pub lineage: Option<Lineage>,
    /// Versions published so far (versions are numbered from 1).
    pub versions: u32,
    /// Height of registration.
    pub created: u64,
}

/// A published model version.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Version {
    /// The manifest's CID, which is the version's content id.
    pub manifest: Cid,
    /// Input/output schema text.
    pub io_schema: String,
    /// Computed steps (graph nodes) per execution. A trace of it has one more leaf,
    /// the output step.
    pub steps: u64,
    /// Cost per execution in operation units.
    pub cost: u64,
    /// Release notes.
    pub notes: String,
    /// No new jobs may use it.
    pub deprecated: bool,
    /// Height of publication.
    pub published: u64,
}

/// A bonded executor (and validator candidate).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Executor {
    /// Bonded stake.
    pub stake: Amount,
    /// Where requesters reach it.
    pub endpoint: String,
    /// Fee per job.
    pub price: Amount,
    /// Models served.
    pub models: Vec<ModelId>,
    /// Jailed executors get no work until they unjail at or after this height.
    pub jailed_until: Option<u64>,
    /// Stake on its way out: (height it may be withdrawn from, amount).
    pub unbonding: Vec<(u64, Amount)>,
    /// The ed25519 key it signs consensus proposals and votes with
    /// ([`Action::SetConsensusKey`](deed_types::Action::SetConsensusKey)); without
    /// one it is not in [`State::consensus_validators`].
    pub consensus_key: Option<[u8; 32]>,
}

impl Executor {
    /// Stake plus stake still unbonding (all of it can be slashed).
    pub fn slashable(&self) -> Amount {
        self.unbonding
            .iter()
            .fold(self.stake, |a, (_, x)| a.saturating_add(*x))
    }
}

/// Money a request locked up. The default is an empty escrow (a settled job's).
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Escrow {
    /// Royalty for the model owner (split along the lineage).
    pub royalty: Amount,
    /// Fee for each assigned executor, in assignment order.
    pub executor_fees: Vec<Amount>,
    /// Protocol fee, burned on settlement.
    pub protocol_fee: Amount,
}

impl Escrow {
    /// Everything held.
    pub fn total(&self) -> Amount {
        self.executor_fees
            .iter()
            .fold(self.royalty.saturating_add(self.protocol_fee), |a, f| {
                a.saturating_add(*f)
            })
    }
}

/// Where a job is in its life.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum JobStatus {
    /// Waiting for the assigned executor's receipt (modes none and optimistic).
    Assigned,
    /// Replicated: waiting for output commitments.
    Committing,
    /// Replicated: waiting for reveals of the committed outputs.
    Revealing,
    /// Optimistic: a receipt is posted and may be challenged until `window_end`.
    Challengeable {
        /// Last height at which a challenge is accepted.
        window_end: u64,
    },
    /// Under dispute.
    Disputed(DisputeId),
    /// Paid out; the receipt stands.
    Finalized,
    /// Nothing usable was delivered; the requester got the escrow back.
    Refunded,
    /// An executor declined it, its input not fitting the model (the referee agreed):
    /// that executor was paid its fee, the requester got the rest back.
    Declined,
}

/// An inference job.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Job {
    /// Who asked and paid.
    pub requester: Address,
    /// The model.
    pub model: ModelId,
    /// The version number.
    pub version: u32,
    /// The version's manifest CID.
    pub manifest: Cid,
    /// Trace length for that version: its nodes, then the output step.
    pub steps: u64,
    /// Hash binding the input.
    pub input_hash: Hash,
    /// The input, when given inline.
    pub input_inline: Option<Vec<u8>>,
    /// Verification mode.
    pub mode: Mode,
    /// Locked funds.
    pub escrow: Escrow,
    /// Assigned executors.
    pub executors: Vec<Address>,
    /// Replicated: commitments, by executor position.
    pub commits: Vec<Option<Hash>>,
    /// Receipts, by executor position (one entry for modes none and optimistic).
    pub receipts: Vec<Option<Receipt>>,
    /// Status.
    pub status: JobStatus,
    /// Height at which the current phase times out.
    pub deadline: u64,
    /// Height of the request.
    pub created: u64,
    /// Optimistic: the watchers' audit of the receipt (see [`crate::audit`]).
    pub audit: Audit,
}

/// The sampled audit of an optimistic receipt: watchers attest to the trace's final
/// chain value in the first half of the challenge window, it is revealed with a proof
/// in the second half, and the matching attesters share the audit fee when the job
/// finalizes.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Audit {
    /// Last height an attestation is accepted (0: none are).
    pub attest_until: u64,
    /// Attestations in arrival order: watcher and digest.
    pub attestations: Vec<(Address, Hash)>,
    /// The revealed final chain value `c_{n-1}`.
    pub revealed: Option<Hash>,
}

/// Whose move a dispute waits for.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum DisputePhase {
    /// The defender must reveal the chain value at `index`.
    AwaitReveal {
        /// Step index asked for.
        index: u64,
    },
    /// The challenger must agree or disagree with `value` at `index`.
    AwaitResponse {
        /// Step index revealed.
        index: u64,
        /// Defender's chain value there.
        value: Hash,
    },
    /// One step is left: the defender must hand the referee its peaks and inputs.
    AwaitReferee,
    /// Over.
    Resolved {
        /// True when the defender won.
        defender_won: bool,
    },
}

/// A refereed bisection game between a defender (the executor whose receipt is
/// challenged) and a challenger.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Dispute {
    /// The job.
    pub job: JobId,
    /// The executor defending its receipt.
    pub defender: Address,
    /// The challenger.
    pub challenger: Address,
    /// Defender's trace root.
    pub defender_root: Hash,
    /// Challenger's trace root.
    pub challenger_root: Hash,
    /// Trace length `n`.
    pub steps: u64,
    /// Challenger's bond held by the dispute (zero when the challenger is a staked
    /// co-executor in replicated mode).
    pub bond: Amount,
    /// Lowest index still in dispute: both agree on every chain value before it.
    pub lo: u64,
    /// Highest index in dispute: they disagree on the chain value here.
    pub hi: u64,
    /// The agreed chain value `c_{lo-1}` (`None` while `lo == 0`).
    pub agreed: Option<Hash>,
    /// The defender's chain value `c_hi` the challenger disagreed with.
    pub disputed: Option<Hash>,
    /// Whose move and what it is.
    pub phase: DisputePhase,
    /// Last height for the current move.
    pub deadline: u64,
    /// Reveals made so far.
    pub rounds: u32,
    /// Blocks that were left of the job's challenge window when the challenge came
    /// (optimistic mode). A defender that wins gets the window reopened for that long,
    /// so a challenger who loses on purpose cannot shut out the honest ones.
    pub window_left: u64,
    /// Chunks of referee inputs the defender has staged
    /// ([`Action::StageReferee`](deed_types::Action::StageReferee)); they are kept
    /// under the dispute until it ends.
    pub staged_chunks: u32,
    /// Their total size in bytes.
    pub staged_bytes: u64,
}

/// State of a governance proposal.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ProposalStatus {
    /// Open for votes until `voting_end`.
    Voting,
    /// Passed; takes effect at `enact_at`.
    Passed {
        /// Height of enactment.
        enact_at: u64,
    },
    /// Did not reach quorum or threshold.
    Rejected,
    /// In force.
    Enacted,
    /// Passed but no longer valid against the parameters at enactment.
    Failed,
}

/// A stake-weighted parameter change proposal.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Proposal {
    /// Who proposed.
    pub proposer: Address,
    /// The change.
    pub change: ParamChange,
    /// Last height votes are accepted.
    pub voting_end: u64,
    /// Stake voting yes.
    pub yes: Amount,
    /// Stake voting no.
    pub no: Amount,
    /// Status.
    pub status: ProposalStatus,
}

/// Timed events the ledger processes at the end of a block.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub enum Timer {
    /// A job phase ends (execution, commit or reveal deadline).
    JobDeadline(JobId),
    /// An optimistic job's challenge window closes.
    ChallengeWindow(JobId),
    /// A dispute move is due.
    DisputeMove(DisputeId),
    /// A proposal's voting closes.
    ProposalEnd(ProposalId),
    /// A passed proposal takes effect.
    ProposalEnact(ProposalId),
}

/// Chain-wide counters and totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Meta {
    /// The chain id.
    pub chain_id: u64,
    /// Height of the last applied block (0 = genesis).
    pub height: u64,
    /// Hash of the last applied header ([`Hash::ZERO`] at genesis).
    pub last_block_hash: Hash,
    /// Total tokens in existence: minted at genesis minus burned.
    pub supply: Amount,
    /// Total burned so far.
    pub burned: Amount,
    /// Sum of all executors' active stake.
    pub total_stake: Amount,
    /// Next model id.
    pub next_model: u64,
    /// Next job id.
    pub next_job: u64,
    /// Next dispute id.
    pub next_dispute: u64,
    /// Next proposal id.
    pub next_proposal: u64,
}

mod prefix {
    pub const META: u8 = 0x00;
    pub const PARAMS: u8 = 0x01;
    pub const ACCOUNT: u8 = 0x02;
    pub const MODEL: u8 = 0x03;
    pub const MODEL_NAME: u8 = 0x04;
    pub const VERSION: u8 = 0x05;
    pub const EXECUTOR: u8 = 0x06;
    pub const SERVING: u8 = 0x07;
    pub const JOB: u8 = 0x08;
    pub const DISPUTE: u8 = 0x09;
    pub const PROPOSAL: u8 = 0x0a;
    pub const VOTE: u8 = 0x0b;
    pub const TIMER: u8 = 0x0c;
    pub const REFEREE_DATA: u8 = 0x0d;
    pub const CONSENSUS_KEY: u8 = 0x0e;
}

/// Why key/value pairs could not be loaded as a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A key with an unknown table byte, or an empty key.
    #[error("unknown state key {}", hex_prefix(.0))]
    UnknownKey(Vec<u8>),
    /// A key or value that does not decode.
    #[error("state entry under {} does not decode", hex_prefix(.0))]
    Malformed(Vec<u8>),
    /// Metadata or parameters missing.
    #[error("state has no metadata or parameters")]
    MissingMeta,
    /// The tree could not be built.
    #[error(transparent)]
    Commitment(#[from] CommitmentError),
}

fn hex_prefix(k: &[u8]) -> String {
    k.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn kv_key<K: BorshSerialize>(prefix: u8, k: &K) -> Vec<u8> {
    let mut out = vec![prefix];
    out.extend_from_slice(&encoding::encode(k));
    out
}

macro_rules! tables {
    ($($field:ident: $k:ty => $v:ty = $prefix:path;)*) => {
        /// The whole ledger state. Cloning copies it (tests and simulations).
        #[derive(Clone, Debug)]
        pub struct State {
            pub(crate) meta: Meta,
            pub(crate) params: Params,
            $(pub(crate) $field: Table<$k, $v>,)*
            meta_bytes: Vec<u8>,
            params_bytes: Vec<u8>,
            commitment: Commitment,
        }

        /// Journal positions of every table, for rolling back one transaction.
        #[derive(Clone, Debug)]
        pub(crate) struct Mark {
            meta: Meta,
            params: Params,
            $($field: usize,)*
        }

        impl State {
            fn empty(meta: Meta, params: Params) -> State {
                State {
                    meta,
                    params,
                    $($field: Table::default(),)*
                    meta_bytes: Vec::new(),
                    params_bytes: Vec::new(),
                    commitment: Commitment::default(),
                }
            }

            pub(crate) fn mark(&self) -> Mark {
                Mark {
                    meta: self.meta.clone(),
                    params: self.params.clone(),
                    $($field: self.$field.mark(),)*
                }
            }

            pub(crate) fn rollback(&mut self, m: Mark) {
                self.meta = m.meta;
                self.params = m.params;
                $(self.$field.rollback(m.$field);)*
            }

            pub(crate) fn settle(&mut self) {
                $(self.$field.settle();)*
            }

            /// Drains dirty entries into key/value writes.
            fn take_writes(&mut self) -> Vec<Write> {
                let mut out = Vec::new();
                let meta = encoding::encode(&self.meta);
                if meta != self.meta_bytes {
                    out.push((vec![prefix::META], Some(meta.clone())));
                    self.meta_bytes = meta;
                }
                let params = encoding::encode(&self.params);
                if params != self.params_bytes {
                    out.push((vec![prefix::PARAMS], Some(params.clone())));
                    self.params_bytes = params;
                }
                $(
                    for (k, v) in self.$field.take_dirty() {
                        out.push((kv_key($prefix, &k), v.map(|v| encoding::encode(&v))));
                    }
                )*
                out
            }

            /// Every key/value pair of the state, in key order within each table.
            pub fn to_kv(&self) -> Vec<Write> {
                let mut out = vec![
                    (vec![prefix::META], Some(encoding::encode(&self.meta))),
                    (vec![prefix::PARAMS], Some(encoding::encode(&self.params))),
                ];
                $(
                    for (k, v) in self.$field.iter() {
                        out.push((kv_key($prefix, k), Some(encoding::encode(v))));
                    }
                )*
                out
            }

            /// Rebuilds a state (and its root) from the pairs [`State::to_kv`] or the
            /// accumulated block writes produced.
            pub fn from_kv<I: IntoIterator<Item = (Vec<u8>, Vec<u8>)>>(pairs: I) -> Result<State, LoadError> {
                let mut meta = None;
                let mut params = None;
                let mut s = State::empty(Meta::default(), Params::default());
                let mut all = Vec::new();
                for (k, v) in pairs {
                    let Some((&p, rest)) = k.split_first() else {
                        return Err(LoadError::UnknownKey(k));
                    };
                    let bad = || LoadError::Malformed(k.clone());
                    match p {
                        prefix::META => {
                            meta = Some(encoding::decode::<Meta>("meta", &v, usize::MAX).map_err(|_| bad())?);
                        }
                        prefix::PARAMS => {
                            params = Some(encoding::decode::<Params>("params", &v, usize::MAX).map_err(|_| bad())?);
                        }
                        $(
                            $prefix => {
                                let key = encoding::decode::<$k>("state key", rest, usize::MAX).map_err(|_| bad())?;
                                let val = encoding::decode::<$v>("state value", &v, usize::MAX).map_err(|_| bad())?;
                                s.$field.load(key, val);
                            }
                        )*
                        _ => return Err(LoadError::UnknownKey(k)),
                    }
                    all.push((k, Some(v)));
                }
                s.meta = meta.ok_or(LoadError::MissingMeta)?;
                s.params = params.ok_or(LoadError::MissingMeta)?;
                s.meta_bytes = encoding::encode(&s.meta);
                s.params_bytes = encoding::encode(&s.params);
                s.commitment.apply(&all)?;
                Ok(s)
            }
        }
    };
}

tables! {
    accounts: Address => Account = prefix::ACCOUNT;
    models: ModelId => Model = prefix::MODEL;
    model_names: (Address, String) => ModelId = prefix::MODEL_NAME;
    versions: (ModelId, u32) => Version = prefix::VERSION;
    executors: Address => Executor = prefix::EXECUTOR;
    serving: (ModelId, Address) => () = prefix::SERVING;
    jobs: JobId => Job = prefix::JOB;
    disputes: DisputeId => Dispute = prefix::DISPUTE;
    proposals: ProposalId => Proposal = prefix::PROPOSAL;
    votes: (ProposalId, Address) => bool = prefix::VOTE;
    timers: (u64, Timer) => () = prefix::TIMER;
    referee_data: (DisputeId, u32) => Vec<u8> = prefix::REFEREE_DATA;
    // Which executor holds each registered consensus key, so keys stay unique.
    consensus_keys: [u8; 32] => Address = prefix::CONSENSUS_KEY;
}

/// A validator present from genesis: a bonded executor with a consensus key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenesisValidator {
    /// The executor's account.
    pub operator: Address,
    /// Its ed25519 consensus key.
    pub consensus_key: [u8; 32],
    /// Its bonded stake, minted at genesis on top of the allocations.
    pub stake: Amount,
}

impl State {
    /// Genesis: the chain id, parameters and initial balances (the only mint).
    pub fn genesis(
        chain_id: u64,
        params: Params,
        allocations: &[(Address, Amount)],
    ) -> Result<State, GenesisError> {
        State::genesis_with_validators(chain_id, params, allocations, &[])
    }

    /// Genesis with a first validator set: as [`State::genesis`], plus one bonded
    /// executor per entry of `validators`, holding its consensus key, with its stake
    /// minted in addition to the allocations (so the supply counts it). Such an
    /// executor serves no models and charges nothing until it bonds again with its
    /// terms.
    ///
    /// Genesis is agreed out of band, so the keys carry no proof of possession; they
    /// must still be usable ed25519 keys, unique, held by distinct operators with at
    /// least the minimum stake.
    pub fn genesis_with_validators(
        chain_id: u64,
        params: Params,
        allocations: &[(Address, Amount)],
        validators: &[GenesisValidator],
    ) -> Result<State, GenesisError> {
        params.validate().map_err(GenesisError::Params)?;
        let mut s = State::empty(
            Meta {
                chain_id,
                ..Meta::default()
            },
            params,
        );
        for (addr, amount) in allocations {
            if s.accounts.contains(addr) {
                return Err(GenesisError::DuplicateAccount(*addr));
            }
            s.meta.supply = s
                .meta
                .supply
                .checked_add(*amount)
                .ok_or(GenesisError::SupplyOverflow)?;
            s.accounts.insert(
                *addr,
                Account {
                    balance: *amount,
                    nonce: 0,
                },
            );
        }
        for v in validators {
            if s.executors.contains(&v.operator) {
                return Err(GenesisError::DuplicateValidator(v.operator));
            }
            if v.stake < s.params.min_stake || v.stake == 0 {
                return Err(GenesisError::StakeBelowMinimum {
                    operator: v.operator,
                    stake: v.stake,
                    min: s.params.min_stake,
                });
            }
            deed_types::check_consensus_key(&v.consensus_key).map_err(|_| {
                GenesisError::BadConsensusKey {
                    operator: v.operator,
                }
            })?;
            if s.consensus_keys.contains(&v.consensus_key) {
                return Err(GenesisError::DuplicateConsensusKey {
                    operator: v.operator,
                    key: v.consensus_key,
                });
            }
            s.meta.supply = s
                .meta
                .supply
                .checked_add(v.stake)
                .ok_or(GenesisError::SupplyOverflow)?;
            // Total stake never exceeds the supply, which did not overflow.
            s.meta.total_stake = s.meta.total_stake.saturating_add(v.stake);
            s.consensus_keys.insert(v.consensus_key, v.operator);
            s.executors.insert(
                v.operator,
                Executor {
                    stake: v.stake,
                    endpoint: String::new(),
                    price: 0,
                    models: Vec::new(),
                    jailed_until: None,
                    unbonding: Vec::new(),
                    consensus_key: Some(v.consensus_key),
                },
            );
        }
        s.settle();
        s.commit_writes().map_err(GenesisError::Commitment)?;
        Ok(s)
    }

    /// Folds the pending writes into the commitment and returns them.
    pub(crate) fn commit_writes(&mut self) -> Result<Vec<Write>, CommitmentError> {
        let writes = self.take_writes();
        self.commitment.apply(&writes)?;
        Ok(writes)
    }

    /// The state root: commits to every key/value pair.
    pub fn root(&self) -> Hash {
        self.commitment.root()
    }

    /// A proof of the value under `key` (as in [`State::to_kv`]) against [`State::root`].
    pub fn prove(&self, key: &[u8]) -> Result<StateProof, CommitmentError> {
        let value = self.value_of(key);
        self.commitment.prove(key, value)
    }

    fn value_of(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.to_kv_lookup(key)
    }

    fn to_kv_lookup(&self, key: &[u8]) -> Option<Vec<u8>> {
        let (&p, rest) = key.split_first()?;
        fn get<K: BorshDeserialize + Ord + Clone, V: BorshSerialize + Clone>(
            t: &Table<K, V>,
            rest: &[u8],
        ) -> Option<Vec<u8>> {
            let k = encoding::decode::<K>("state key", rest, usize::MAX).ok()?;
            t.get(&k).map(encoding::encode)
        }
        match p {
            prefix::META if rest.is_empty() => Some(encoding::encode(&self.meta)),
            prefix::PARAMS if rest.is_empty() => Some(encoding::encode(&self.params)),
            prefix::ACCOUNT => get(&self.accounts, rest),
            prefix::MODEL => get(&self.models, rest),
            prefix::MODEL_NAME => get(&self.model_names, rest),
            prefix::VERSION => get(&self.versions, rest),
            prefix::EXECUTOR => get(&self.executors, rest),
            prefix::SERVING => get(&self.serving, rest),
            prefix::JOB => get(&self.jobs, rest),
            prefix::DISPUTE => get(&self.disputes, rest),
            prefix::PROPOSAL => get(&self.proposals, rest),
            prefix::VOTE => get(&self.votes, rest),
            prefix::TIMER => get(&self.timers, rest),
            prefix::REFEREE_DATA => get(&self.referee_data, rest),
            prefix::CONSENSUS_KEY => get(&self.consensus_keys, rest),
            _ => None,
        }
    }

    /// The state key of an account (for [`State::prove`]).
    pub fn account_key(addr: &Address) -> Vec<u8> {
        kv_key(prefix::ACCOUNT, addr)
    }

    /// The state key of a model.
    pub fn model_key(id: ModelId) -> Vec<u8> {
        kv_key(prefix::MODEL, &id)
    }

    /// The state key of a job.
    pub fn job_key(id: JobId) -> Vec<u8> {
        kv_key(prefix::JOB, &id)
    }

    /// The state key of an executor.
    pub fn executor_key(addr: &Address) -> Vec<u8> {
        kv_key(prefix::EXECUTOR, addr)
    }

    /// The state key recording which executor holds a consensus key.
    pub fn consensus_key_holder_key(key: &[u8; 32]) -> Vec<u8> {
        kv_key(prefix::CONSENSUS_KEY, key)
    }

    // ---- read API -------------------------------------------------------------

    /// Chain metadata.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Current parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Height of the last applied block.
    pub fn height(&self) -> u64 {
        self.meta.height
    }

    /// An account (default: empty).
    pub fn account(&self, a: &Address) -> Account {
        self.accounts.get(a).cloned().unwrap_or_default()
    }

    /// Spendable balance.
    pub fn balance(&self, a: &Address) -> Amount {
        self.accounts.get(a).map(|x| x.balance).unwrap_or(0)
    }

    /// The next nonce `a` must use.
    pub fn nonce(&self, a: &Address) -> u64 {
        self.accounts.get(a).map(|x| x.nonce).unwrap_or(0)
    }

    /// A model.
    pub fn model(&self, id: ModelId) -> Option<&Model> {
        self.models.get(&id)
    }

    /// A model by owner and name.
    pub fn model_by_name(&self, owner: &Address, name: &str) -> Option<ModelId> {
        self.model_names.get(&(*owner, name.to_owned())).copied()
    }

    /// Every model, in id order.
    pub fn models(&self) -> impl Iterator<Item = (ModelId, &Model)> {
        self.models.iter().map(|(k, v)| (*k, v))
    }

    /// A version.
    pub fn version(&self, model: ModelId, version: u32) -> Option<&Version> {
        self.versions.get(&(model, version))
    }

    /// Versions of a model, in order.
    pub fn versions(&self, model: ModelId) -> impl Iterator<Item = (u32, &Version)> {
        self.versions
            .range((model, 0)..=(model, u32::MAX))
            .map(|(k, v)| (k.1, v))
    }

    /// An executor.
    pub fn executor(&self, a: &Address) -> Option<&Executor> {
        self.executors.get(a)
    }

    /// A job.
    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id)
    }

    /// A dispute.
    pub fn dispute(&self, id: DisputeId) -> Option<&Dispute> {
        self.disputes.get(&id)
    }

    /// A proposal.
    pub fn proposal(&self, id: ProposalId) -> Option<&Proposal> {
        self.proposals.get(&id)
    }

    /// The validator set: unjailed executors with at least the minimum stake, by
    /// stake (descending, ties by address), at most `max_validators`.
    pub fn validators(&self) -> Vec<(Address, Amount)> {
        let mut v: Vec<(Address, Amount)> = self
            .executors
            .iter()
            .filter(|(_, e)| e.jailed_until.is_none() && e.stake >= self.params.min_stake)
            .map(|(a, e)| (*a, e.stake))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(usize::try_from(self.params.max_validators).unwrap_or(usize::MAX));
        v
    }

    /// The consensus validator set: the executors of [`State::validators`] that have a
    /// consensus key and a positive stake (the voting power), with their keys, in the
    /// same order and under the same `max_validators` cap. An executor without a key
    /// takes no seat, so the cap is applied after that filter: the set is the
    /// `max_validators` largest keyed stakes.
    ///
    /// Consensus decides height `h + 1` with the set of the state after block `h`: a
    /// bond, unbond, slash, jailing or key change in block `h` takes effect from
    /// height `h + 1`, and the set at genesis decides height 1.
    pub fn consensus_validators(&self) -> Vec<(Address, [u8; 32], Amount)> {
        let mut v: Vec<(Address, [u8; 32], Amount)> = self
            .executors
            .iter()
            .filter(|(_, e)| {
                e.jailed_until.is_none() && e.stake >= self.params.min_stake && e.stake > 0
            })
            .filter_map(|(a, e)| e.consensus_key.map(|k| (*a, k, e.stake)))
            .collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        v.truncate(usize::try_from(self.params.max_validators).unwrap_or(usize::MAX));
        v
    }

    /// The executor holding a consensus key, if any.
    pub fn consensus_key_holder(&self, key: &[u8; 32]) -> Option<Address> {
        self.consensus_keys.get(key).copied()
    }

    /// Sums every place tokens can be: balances, stake (active and unbonding), job
    /// escrows and dispute bonds. Always equals `meta().supply`.
    pub fn accounted_supply(&self) -> Option<Amount> {
        let mut t: Amount = 0;
        for (_, a) in self.accounts.iter() {
            t = t.checked_add(a.balance)?;
        }
        for (_, e) in self.executors.iter() {
            t = t.checked_add(e.stake)?;
            for (_, x) in &e.unbonding {
                t = t.checked_add(*x)?;
            }
        }
        // Settlement zeroes what it pays out, so closed jobs and disputes hold nothing.
        for (_, j) in self.jobs.iter() {
            t = t.checked_add(j.escrow.total())?;
        }
        for (_, d) in self.disputes.iter() {
            t = t.checked_add(d.bond)?;
        }
        Some(t)
    }
}

/// Why a genesis state could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    /// Invalid parameters.
    #[error(transparent)]
    Params(crate::params::ParamError),
    /// An address allocated twice.
    #[error("genesis allocates {0} twice")]
    DuplicateAccount(Address),
    /// Allocations overflow the amount type.
    #[error("genesis allocations overflow")]
    SupplyOverflow,
    /// An operator listed twice among the genesis validators.
    #[error("genesis lists validator {0} twice")]
    DuplicateValidator(Address),
    /// A genesis validator's stake is below the minimum stake (or zero).
    #[error("genesis validator {operator} stakes {stake}, below the minimum {min}")]
    StakeBelowMinimum {
        /// The operator.
        operator: Address,
        /// Its stake.
        stake: Amount,
        /// The minimum stake.
        min: Amount,
    },
    /// A genesis validator's consensus key is not a usable ed25519 key.
    #[error("genesis validator {operator} has an unusable consensus key")]
    BadConsensusKey {
        /// The operator.
        operator: Address,
    },
    /// Two genesis validators share a consensus key.
    #[error("genesis validator {operator} reuses consensus key {}", crate::error::key_hex(.key))]
    DuplicateConsensusKey {
        /// The second operator with the key.
        operator: Address,
        /// The key.
        key: [u8; 32],
    },
    /// The tree could not be built.
    #[error(transparent)]
    Commitment(CommitmentError),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key(i: u8) -> [u8; 32] {
        deed_types::prove_consensus_key(&[i; 32], 1, &Address::ZERO).0
    }

    fn validator(i: u8, stake: Amount) -> GenesisValidator {
        GenesisValidator {
            operator: Address([i; 20]),
            consensus_key: key(i),
            stake,
        }
    }

    fn edit(s: &mut State, i: u8, f: impl FnOnce(&mut Executor)) {
        let a = Address([i; 20]);
        let mut e = s.executors.get(&a).cloned().unwrap();
        f(&mut e);
        s.executors.insert(a, e);
        s.settle();
    }

    #[test]
    fn jailed_keyless_and_small_executors_take_no_seat() {
        let mut s = State::genesis_with_validators(
            1,
            Params::default(),
            &[],
            &[
                validator(1, 5_000),
                validator(2, 4_000),
                validator(3, 3_000),
                validator(4, 2_000),
                validator(5, 2_000),
            ],
        )
        .unwrap();
        let min = s.params.min_stake;
        let seats = |s: &State| -> Vec<u8> {
            s.consensus_validators()
                .iter()
                .map(|(a, k, _)| {
                    assert_eq!(*k, key(a.0[0]));
                    a.0[0]
                })
                .collect()
        };
        // By stake, ties by address.
        assert_eq!(seats(&s), vec![1, 2, 3, 4, 5]);
        edit(&mut s, 1, |e| e.jailed_until = Some(10));
        edit(&mut s, 2, |e| e.consensus_key = None);
        edit(&mut s, 3, |e| e.stake = min - 1);
        assert_eq!(seats(&s), vec![4, 5]);
        // The same executors as `validators`, less the keyless one.
        let plain: Vec<u8> = s.validators().iter().map(|(a, _)| a.0[0]).collect();
        assert_eq!(plain, vec![2, 4, 5]);
        edit(&mut s, 1, |e| e.jailed_until = None);
        assert_eq!(seats(&s), vec![1, 4, 5]);
    }

    #[test]
    fn the_seat_cap_counts_only_keyed_executors() {
        let params = Params {
            max_validators: 2,
            ..Params::default()
        };
        let mut s = State::genesis_with_validators(
            1,
            params,
            &[],
            &[
                validator(1, 9_000),
                validator(2, 8_000),
                validator(3, 7_000),
            ],
        )
        .unwrap();
        edit(&mut s, 1, |e| e.consensus_key = None);
        let seats: Vec<Address> = s.consensus_validators().iter().map(|v| v.0).collect();
        assert_eq!(seats, vec![Address([2; 20]), Address([3; 20])]);
        assert_eq!(s.validators().len(), 2);
    }

    #[test]
    fn zero_stake_never_votes_even_without_a_minimum() {
        let params = Params {
            min_stake: 0,
            ..Params::default()
        };
        let mut s =
            State::genesis_with_validators(1, params, &[], &[validator(1, 10), validator(2, 10)])
                .unwrap();
        edit(&mut s, 2, |e| e.stake = 0);
        assert_eq!(
            s.consensus_validators(),
            vec![(Address([1; 20]), key(1), 10)]
        );
    }
}
