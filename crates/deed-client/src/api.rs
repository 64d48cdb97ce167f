//! The HTTP API's wire types (JSON) and paths. Version prefix `/v1`.
//!
//! Conventions:
//! - Token amounts are decimal strings ([`Amount`] is `u128`, beyond JSON's safe
//!   integers); ids of models, jobs, disputes and proposals are JSON numbers.
//! - Addresses are EIP-55 hex, hashes 64 hex digits (no prefix), CIDs base32 text.
//! - A tensor list (job inputs, outputs) is `deed_types::encode_list`; input and
//!   output hashes are blake3 of those bytes. Inputs are listed in the model's
//!   order of graph inputs that have no initializer; outputs in the model's output
//!   order. A job input given by CID is a blob holding such a list (its CID digest
//!   is then the input hash).
//! - Binary payloads inside JSON (signed transactions, canonical tensors) are
//!   `0x`-prefixed hex.
//! - Every error is an [`ErrorBody`] with an HTTP status from [`ErrorCode::status`].
//!
//! | method, path | request | response |
//! |---|---|---|
//! | `GET /v1/status` | | [`Status`] |
//! | `GET /v1/accounts/{address}` | | [`AccountView`] |
//! | `POST /v1/transactions` | [`SubmitTx`] | [`TxSubmitted`] (202 Accepted) |
//! | `GET /v1/transactions/{hash}` | | [`TxView`] |
//! | `GET /v1/models?owner=&name=&after=&limit=` | | `Vec<`[`ModelView`]`>` |
//! | `GET /v1/models/{id}` | | [`ModelView`] |
//! | `GET /v1/models/{id}/versions` | | `Vec<`[`VersionView`]`>` |
//! | `GET /v1/models/{id}/versions/{n}` | | [`VersionView`] |
//! | `POST /v1/blobs/uploads` | blob manifest (JSON, `deed_store::Manifest`) | [`UploadStatus`] |
//! | `GET /v1/blobs/uploads/{cid}` (an upload in progress) | | [`UploadStatus`] |
//! | `PUT /v1/blobs/uploads/{cid}/chunks/{index}` | raw chunk bytes | [`ChunkStored`] |
//! | `POST /v1/blobs/uploads/{cid}/finish` | | [`BlobInfo`] |
//! | `GET /v1/blobs/{cid}` (`Range` honoured) / `HEAD` | | bytes |
//! | `GET /v1/blobs/{cid}/manifest` | | blob manifest (JSON) |
//! | `GET /v1/jobs?requester=&executor=&after=&limit=` | | `Vec<`[`JobView`]`>` |
//! | `GET /v1/jobs/{id}` | | [`JobView`] |
//! | `GET /v1/disputes?after=&limit=` / `GET /v1/disputes/{id}` | | [`DisputeView`] |
//! | `POST /v1/execute` (executor role: direct call) | [`DirectRequest`] | [`DirectResponse`] |
//! | `GET /v1/openapi.json` | | OpenAPI 3 document |
//! | `GET /metrics` | | Prometheus text |

use serde::{Deserialize, Serialize};

use deed_types::{Address, Cid, Hash};

/// Path prefix of every API route.
pub const PREFIX: &str = "/v1";

/// The most items a list route (`/v1/models`, `/v1/jobs`, `/v1/disputes`) gives in
/// one answer. A list comes in pages of `limit` items (1 to this, default
/// [`PAGE_DEFAULT`]) in id order, after the id `after` (from the first when absent):
/// a client reads a whole list page by page, each after the last id of the one
/// before, until a page comes back shorter than its limit.
pub const PAGE_MAX: usize = 1_000;

/// Items a list route gives when the request names no `limit`.
pub const PAGE_DEFAULT: usize = 100;

/// A machine-readable error class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request body or a parameter is malformed.
    BadRequest,
    /// No such account, model, version, blob, job, dispute or transaction.
    NotFound,
    /// The route exists but not with this method (the `Allow` header lists those it
    /// takes).
    MethodNotAllowed,
    /// A transaction's signature does not verify or names another chain.
    BadSignature,
    /// A transaction's nonce is not the sender's next one.
    BadNonce,
    /// This executor already served this direct-call request; it is settled on the
    /// ledger, never served twice.
    AlreadyServed,
    /// The sender cannot pay.
    InsufficientFunds,
    /// The ledger rejected the transaction (the message says why).
    Rejected,
    /// A payload or field exceeds a configured limit.
    TooLarge,
    /// A chunk or blob does not match its hash.
    HashMismatch,
    /// The model cannot run: malformed ONNX, unsupported operators, wrong inputs.
    BadModel,
    /// The inputs do not fit the model (names, shapes, dtypes).
    BadInput,
    /// The node does not run the role this route needs.
    RoleDisabled,
    /// The node is busy (a queue is full); retry later.
    Unavailable,
    /// Something failed inside the node; the message carries no internals.
    Internal,
}

impl ErrorCode {
    /// The HTTP status code this error is sent with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::BadModel | ErrorCode::BadInput => 400,
            ErrorCode::BadSignature => 401,
            ErrorCode::InsufficientFunds => 402,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::BadNonce | ErrorCode::AlreadyServed | ErrorCode::Rejected => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::HashMismatch => 422,
            ErrorCode::RoleDisabled => 501,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error class.
    pub code: ErrorCode,
    /// A human-readable explanation naming the problem.
    pub message: String,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    /// The chain id transactions must be signed for.
    pub chain_id: u64,
    /// Height of the last committed block (0 = genesis only).
    pub height: u64,
    /// State root after that block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub state_root: Hash,
    /// Hash of that block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub block_hash: Hash,
    /// Roles this node runs: `validator`, `executor`, `watcher`, `storage`.
    pub roles: Vec<String>,
    /// The executor's account, if the executor role is on: the one that answers
    /// direct calls at this node.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub executor: Option<Address>,
    /// Every executor account this node runs (`executor` first); empty when the
    /// executor role is off.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub executors: Vec<Address>,
    /// The watcher's account, if the watcher role is on.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub watcher: Option<Address>,
    /// Transactions waiting in the mempool.
    pub mempool: u64,
    /// Current validators and their voting power (stake, decimal string).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Vec<String>>))]
    pub validators: Vec<(Address, String)>,
    /// The node software version.
    pub version: String,
    /// Consensus progress and the node's place in it.
    #[serde(default)]
    pub consensus: ConsensusView,
}

/// Consensus as one node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsensusView {
    /// Whether this node votes (its operator account is a validator).
    pub validator: bool,
    /// The height being decided.
    pub height: u64,
    /// Its round (0 unless a proposer or a quorum failed).
    pub round: i64,
    /// Whether the node is catching up on blocks decided without it.
    pub syncing: bool,
    /// Peers connected on the node network.
    pub peers: u64,
}

/// `GET /v1/blocks/{height}`: a committed block's header and transactions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockView {
    /// Its height.
    pub height: u64,
    /// Its hash.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: Hash,
    /// The parent's hash.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub prev_hash: Hash,
    /// The state root before it (after the parent).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub state_root: Hash,
    /// The validator that proposed it.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub proposer: Address,
    /// Its time, seconds since the Unix epoch (the proposer's clock).
    pub time: u64,
    /// Its transactions' hashes, in order.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub txs: Vec<Hash>,
}

/// `GET /v1/accounts/{address}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountView {
    /// The account.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub address: Address,
    /// Spendable balance.
    pub balance: String,
    /// The nonce its next transaction must carry.
    pub nonce: u64,
    /// Its executor registration, if bonded.
    pub executor: Option<ExecutorView>,
}

/// A bonded executor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutorView {
    /// Bonded stake.
    pub stake: String,
    /// Its HTTP endpoint for direct calls.
    pub endpoint: String,
    /// Its fee per call.
    pub price: String,
    /// Models it serves.
    pub models: Vec<u64>,
    /// Jailed until this height, if jailed.
    pub jailed_until: Option<u64>,
    /// Stake unbonding: (height it becomes withdrawable, amount).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Vec<String>>))]
    pub unbonding: Vec<(u64, String)>,
}

/// `POST /v1/transactions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmitTx {
    /// `SignedTransaction::encode()`, hex.
    pub tx: String,
}

/// The mempool accepted a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TxSubmitted {
    /// `SignedTransaction::hash()`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: Hash,
}

/// Where a transaction is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TxState {
    /// In the mempool.
    Pending,
    /// In a block and applied successfully.
    Included {
        /// Block height.
        height: u64,
    },
    /// In a block, failed: only fee and nonce changed.
    Failed {
        /// Block height.
        height: u64,
        /// The ledger's error.
        error: String,
    },
}

/// `GET /v1/transactions/{hash}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TxView {
    /// The transaction hash.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: Hash,
    /// The sender.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub sender: Address,
    /// The action's name (`transfer`, `register_model`, ...).
    pub action: String,
    /// Where it is.
    pub state: TxState,
    /// Ids the transaction created, when it created one (model, job, dispute or
    /// proposal id).
    pub created: Option<u64>,
    /// Events of the transaction, human-readable.
    pub events: Vec<String>,
}

/// Who may call a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LicenceView {
    /// Anyone, no royalty.
    Open,
    /// Anyone who pays the price.
    Paid,
    /// Listed accounts only.
    AllowList {
        /// The accounts.
        #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
        accounts: Vec<Address>,
    },
}

/// `GET /v1/models/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelView {
    /// Model id.
    pub id: u64,
    /// Owner.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub owner: Address,
    /// Name, unique per owner.
    pub name: String,
    /// Description.
    pub description: String,
    /// Licence.
    pub licence: LicenceView,
    /// Royalty per call.
    pub price: String,
    /// Parent model and its share in basis points, for a fine-tune.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<u64>>))]
    pub parent: Option<(u64, u16)>,
    /// Number of versions published.
    pub versions: u32,
    /// Height it was registered at.
    pub created: u64,
}

/// `GET /v1/models/{id}/versions/{n}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionView {
    /// Model id.
    pub model: u64,
    /// Version number, from 1.
    pub version: u32,
    /// The version manifest's CID (the version's id).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub manifest: Cid,
    /// Input/output schema (JSON text).
    pub io_schema: String,
    /// Steps (graph nodes) in the trace.
    pub steps: u64,
    /// Metered cost of one run.
    pub cost: u64,
    /// Release notes.
    pub notes: String,
    /// Deprecated versions take no new requests.
    pub deprecated: bool,
    /// Height it was published at.
    pub published: u64,
}

/// An upload's state: what the node still lacks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadStatus {
    /// The blob.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub cid: Cid,
    /// Chunk indices the node does not hold yet, ascending.
    pub missing: Vec<u32>,
    /// Whether the blob is complete and readable.
    pub complete: bool,
}

/// One chunk stored: the answer to a chunk PUT. It does not list what the upload
/// still lacks, so that each PUT costs the same however many chunks the blob has;
/// `GET /v1/blobs/uploads/{cid}` (or posting the manifest again) does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkStored {
    /// The blob.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub cid: Cid,
    /// The chunk's index.
    pub index: u32,
    /// Its length in bytes.
    pub size: u32,
}

/// A stored blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlobInfo {
    /// The blob.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub cid: Cid,
    /// Its size in bytes.
    pub size: u64,
}

/// A receipt as posted by one executor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReceiptView {
    /// The executor.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub executor: Address,
    /// Hash of the output tensor list.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub output_hash: Hash,
    /// The output tensor list (hex of its canonical encoding) if posted inline.
    pub output_inline: Option<String>,
    /// The trace root.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub trace_root: Hash,
    /// Steps in the trace.
    pub steps: u64,
}

/// The fees a job escrowed when it was requested. They stay as they were after
/// settlement: a finalized job paid them out (a replicated executor that delivered
/// no winning result has its fee returned to the requester instead), a refunded job
/// returned them, a declined job paid the declining executor its fee and returned the
/// rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeesView {
    /// Royalty to the owner (split up the lineage).
    pub royalty: String,
    /// Executor fee(s).
    pub executor_fees: Vec<String>,
    /// Protocol fee (burned).
    pub protocol_fee: String,
    /// Sum of the above.
    pub total: String,
}

/// `GET /v1/jobs/{id}`: a job with its receipt(s) and dispute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    /// Job id.
    pub id: u64,
    /// Who asked and pays.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub requester: Address,
    /// Model id.
    pub model: u64,
    /// Version number.
    pub version: u32,
    /// Version manifest CID.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub manifest: Cid,
    /// Hash of the input.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub input_hash: Hash,
    /// The input's blob CID, when given by CID.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub input_cid: Option<Cid>,
    /// The input (`0x` hex of its encoded tensor list) when given inline: the ledger
    /// holds it, so a verifier needs nothing else. Given by `/v1/jobs/{id}` only, not
    /// in the list of `/v1/jobs`.
    pub input_inline: Option<String>,
    /// `none`, `optimistic` or `replicated:K`.
    pub mode: String,
    /// Assigned executors.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub executors: Vec<Address>,
    /// Posted receipts, one slot per executor.
    pub receipts: Vec<Option<ReceiptView>>,
    /// `assigned`, `committing`, `revealing`, `challengeable`, `disputed`,
    /// `finalized`, `refunded`, `declined` (an executor showed that the input does
    /// not fit the model).
    pub status: String,
    /// End of the challenge window, when challengeable.
    pub window_end: Option<u64>,
    /// The open or last dispute, if any.
    pub dispute: Option<u64>,
    /// Watchers that attested to an optimistic result, in order.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub attesters: Vec<Address>,
    /// The final chain value revealed for the audit, once revealed.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub audit_revealed: Option<Hash>,
    /// Escrowed fees.
    pub fees: FeesView,
    /// Height by which executors must answer.
    pub deadline: u64,
    /// Height it was requested at.
    pub created: u64,
}

/// `GET /v1/disputes/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DisputeView {
    /// Dispute id.
    pub id: u64,
    /// The disputed job.
    pub job: u64,
    /// The party defending its trace.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub defender: Address,
    /// The challenger.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub challenger: Address,
    /// Steps of the disputed trace.
    pub steps: u64,
    /// The challenger's bond held by the dispute, base units (zero for a staked
    /// co-executor in replicated mode).
    pub bond: String,
    /// Bisection rounds played.
    pub rounds: u32,
    /// The current step range `[lo, hi]`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<u64>))]
    pub range: (u64, u64),
    /// `await_reveal`, `await_response`, `await_referee`, `resolved`.
    pub phase: String,
    /// Height of the next move deadline.
    pub deadline: u64,
    /// `defender` or `challenger` once resolved.
    pub winner: Option<String>,
    /// Amount slashed from the loser, once resolved.
    pub slashed: Option<String>,
}

/// One named tensor on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NamedTensor {
    /// The graph input or output name.
    pub name: String,
    /// `Tensor::encode()` (canonical encoding), hex.
    pub tensor: String,
}

/// `POST /v1/execute`: a direct call to an executor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirectRequest {
    /// The signed `RequestJob` transaction naming this executor, hex. It authorizes
    /// the payment; the executor submits it to the ledger.
    pub tx: String,
    /// The inputs by name. Their canonical list encoding must hash to the request's
    /// input hash.
    pub inputs: Vec<NamedTensor>,
}

/// The answer to a direct call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirectResponse {
    /// Hash of the request transaction (find the job through it once included).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub request: Hash,
    /// The outputs by name.
    pub outputs: Vec<NamedTensor>,
    /// The receipt the executor will post.
    pub receipt: ReceiptView,
    /// The executor's secp256k1 signature (65 bytes r‖s‖v, hex) over
    /// [`direct_receipt_digest`].
    pub signature: String,
}

/// What an executor signs when it answers a direct call: the request it served and
/// the receipt it commits to.
pub fn direct_receipt_digest(
    request: &Hash,
    output_hash: &Hash,
    trace_root: &Hash,
    steps: u64,
) -> [u8; 32] {
    *Hash::domain(
        "deed 2026 direct call receipt",
        &[
            request.as_bytes(),
            output_hash.as_bytes(),
            trace_root.as_bytes(),
            &steps.to_le_bytes(),
        ],
    )
    .as_bytes()
}

/// One file of a model version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestFile {
    /// File name (`model.onnx`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// The file's blob CID.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub cid: Cid,
}

/// A model version's manifest, stored as a blob (its canonical JSON,
/// [`ModelManifest::to_bytes`]); the version's id is that blob's CID, which the
/// `PublishVersion` transaction names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelManifest {
    /// `onnx`.
    pub format: String,
    /// The files; the first is the model graph.
    pub files: Vec<ManifestFile>,
    /// Default-domain opset the model imports.
    pub opset: i64,
    /// Input/output schema as the runtime reports it (JSON text, also on the ledger).
    pub io_schema: String,
    /// Steps (graph nodes) of the canonical trace.
    pub steps: u64,
    /// Metered cost of one run (the runtime's planned cost for the declared
    /// input shapes). Executors refuse a run whose planned cost exceeds the
    /// version's cost on the ledger; 0 sets no limit.
    pub cost: u64,
    /// blake3 over the model's initializers in canonical order.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub weight_fingerprint: Hash,
    /// The creator.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub creator: Address,
    /// The creator's secp256k1 signature (65 bytes r‖s‖v, hex) over
    /// [`ModelManifest::signing_digest`].
    pub signature: String,
}

impl ModelManifest {
    /// The digest the creator signs: every field but the signature.
    pub fn signing_digest(&self) -> [u8; 32] {
        let unsigned = ModelManifest {
            signature: String::new(),
            ..self.clone()
        };
        *Hash::domain("deed 2026 model manifest", &[&unsigned.to_bytes()]).as_bytes()
    }

    /// The canonical bytes stored as the manifest blob (compact JSON, fields in
    /// declaration order).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}
