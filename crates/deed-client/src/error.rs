use deed_types::{Cid, Hash};

use crate::api::ErrorCode;

/// Why a call to the node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens at the node's address.
    #[error(
        "no Deed node at {url} (connection refused; start one with `deed dev` or pass --node)"
    )]
    NodeDown {
        /// The node's base URL.
        url: String,
    },
    /// The node answered with a typed error.
    #[error("{message} ({})", code_name(.code))]
    Api {
        /// HTTP status.
        status: u16,
        /// The machine-readable class.
        code: ErrorCode,
        /// The node's explanation.
        message: String,
    },
    /// The node answered with an error status but no error body.
    #[error("HTTP {status} from {url}: {body}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The URL called.
        url: String,
        /// The start of the body.
        body: String,
    },
    /// The connection failed midway or timed out. Retryable.
    #[error("request to {url} failed")]
    Transport {
        /// The URL called.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The node's answer is not what the API promises.
    #[error("unexpected response from {url}: {reason}")]
    BadResponse {
        /// The URL called.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// Downloaded data does not match its content id: the node served corrupt data.
    #[error("blob {cid}: {detail}")]
    Integrity {
        /// The blob.
        cid: Cid,
        /// What failed to verify.
        detail: String,
    },
    /// A blob could not be prepared for upload (too large, bad chunking).
    #[error(transparent)]
    Blob(#[from] deed_store::BlobError),
    /// Signing failed.
    #[error("cannot sign: {0}")]
    Sign(#[from] deed_types::SignatureError),
    /// A transaction failed on the ledger (only its fee and nonce changed).
    #[error("transaction {hash} failed at height {height}: {error}")]
    TxFailed {
        /// The transaction.
        hash: Hash,
        /// Its block.
        height: u64,
        /// The ledger's error.
        error: String,
    },
    /// A wait ran out of time.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: u64,
    },
    /// Downloaded data could not be written where the caller asked.
    #[error("{detail}")]
    Output {
        /// What failed.
        detail: String,
    },
}

impl ClientError {
    /// The node's error class, when the node sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Transport { .. }
                | ClientError::NodeDown { .. }
                | ClientError::Api {
                    code: ErrorCode::Unavailable,
                    ..
                }
        )
    }
}

fn code_name(code: &ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{code:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_shows_message_and_code() {
        let e = ClientError::Api {
            status: 404,
            code: ErrorCode::NotFound,
            message: "model 7 not found".into(),
        };
        assert_eq!(e.to_string(), "model 7 not found (not_found)");
        assert_eq!(e.code(), Some(ErrorCode::NotFound));
        assert!(!e.is_retryable());
    }
}
