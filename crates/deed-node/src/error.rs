//! The node's errors and their mapping to API error codes.

use deed_client::api::ErrorCode;
use deed_ledger::{BlockError, LoadError, TxError};
use deed_store::{BlobError, StoreError};
use deed_types::Address;

/// Why the node failed to start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// The blob store failed.
    #[error("blob store: {0}")]
    Blob(#[from] BlobError),
    /// The stored state does not load or does not match its recorded root.
    #[error("stored state is inconsistent: {0}")]
    Corrupt(String),
    /// The stored state failed to decode.
    #[error("stored state does not load: {0}")]
    Load(#[from] LoadError),
    /// A block this node committed was rejected by the ledger (a bug or corruption).
    #[error("block rejected: {0}")]
    Block(#[from] BlockError),
    /// Binding or serving the HTTP API failed.
    #[error("I/O: {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Why the mempool refused a transaction. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxRejection {
    /// Not a canonical signed transaction, or a field is over its limit.
    #[error("malformed transaction: {0}")]
    Malformed(String),
    /// The signature does not recover a sender.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// Signed for another chain.
    #[error("transaction is for chain {got}, this chain is {expected}")]
    WrongChain {
        /// This chain.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// The nonce is not the sender's next one (counting pending transactions).
    #[error("nonce {got} of {sender} is not the next one ({expected})")]
    BadNonce {
        /// The sender.
        sender: Address,
        /// The next nonce.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// The fee is below the minimum.
    #[error("fee {fee} is below the minimum of {min}")]
    FeeTooLow {
        /// Offered.
        fee: u128,
        /// Required.
        min: u128,
    },
    /// The sender cannot pay the fees of its pending transactions plus this one.
    #[error("{sender} has {balance} but its pending transactions need {needed}")]
    InsufficientFunds {
        /// The sender.
        sender: Address,
        /// Its balance.
        balance: u128,
        /// What it must cover.
        needed: u128,
    },
    /// The transaction is already pending or included.
    #[error("transaction {0} is already known")]
    Duplicate(deed_types::Hash),
    /// The mempool is full.
    #[error("the mempool is full ({0} transactions)")]
    Full(usize),
}

impl TxRejection {
    /// The API error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            TxRejection::Malformed(_) => ErrorCode::BadRequest,
            TxRejection::BadSignature(_) | TxRejection::WrongChain { .. } => {
                ErrorCode::BadSignature
            }
            TxRejection::BadNonce { .. } | TxRejection::Duplicate(_) => ErrorCode::BadNonce,
            TxRejection::FeeTooLow { .. } => ErrorCode::Rejected,
            TxRejection::InsufficientFunds { .. } => ErrorCode::InsufficientFunds,
            TxRejection::Full(_) => ErrorCode::Unavailable,
        }
    }
}

/// An error answered by the HTTP API: a code and a message that names the problem
/// and carries no internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    /// The error class.
    pub code: ErrorCode,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// An error of class `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// A malformed request.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    /// Something that does not exist.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// Something this node cannot do now (peers lack what it needs, a pool is full).
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    /// An internal failure; the detail goes to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(%detail, "internal error");
        ApiError::new(ErrorCode::Internal, "internal error; see the node's log")
    }
}

impl From<TxRejection> for ApiError {
    fn from(e: TxRejection) -> ApiError {
        ApiError::new(e.code(), e.to_string())
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> ApiError {
        let code = match &e {
            BlobError::TooLarge { .. } => ErrorCode::TooLarge,
            BlobError::BadManifest { .. }
            | BlobError::ChunkIndexOutOfRange { .. }
            | BlobError::ChunkLength { .. }
            | BlobError::Incomplete { .. }
            | BlobError::RangeOutOfBounds { .. } => ErrorCode::BadRequest,
            BlobError::ChunkHashMismatch { .. } => ErrorCode::HashMismatch,
            BlobError::NotFound { .. } => ErrorCode::NotFound,
            BlobError::Corrupt { .. } | BlobError::Io { .. } | BlobError::Remote { .. } => {
                return ApiError::internal(e);
            }
            _ => return ApiError::internal(e),
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::internal(e)
    }
}

/// The API error class of a ledger rejection of a transaction.
pub fn tx_error_code(e: &TxError) -> ErrorCode {
    match e {
        TxError::BadSignature(_) | TxError::WrongChain { .. } => ErrorCode::BadSignature,
        TxError::NonceReplayed { .. } | TxError::NonceGap { .. } => ErrorCode::BadNonce,
        TxError::CannotPayFee { .. } | TxError::InsufficientBalance { .. } => {
            ErrorCode::InsufficientFunds
        }
        TxError::Limit(_) => ErrorCode::TooLarge,
        _ => ErrorCode::Rejected,
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        ApiError::internal(e)
    }
}
