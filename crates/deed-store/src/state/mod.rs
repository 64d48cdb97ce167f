//! Ledger state and blocks: the [`StateStore`] seam, its in-memory and redb
//! implementations, and the conformance suite both must pass.
//!
//! The ledger is a pure state machine whose state is a set of key/value pairs. It
//! applies a block and reports the writes; a store persists those writes together
//! with the block and the new head in one atomic step, so the state on disk is always
//! exactly the state after some committed block. Beside the state, a store keeps the
//! node's *local records* (what this node alone promised, such as direct calls it
//! served and has yet to see settled), written between blocks or atomically with
//! one.

pub mod conformance;
mod memory;
mod redb_store;

pub use memory::MemoryStateStore;
pub use redb_store::RedbStateStore;

use deed_types::Hash;

/// A stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One key/value write: `Some(value)` sets the key, `None` deletes it.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// Everything a block changes, committed atomically by [`StateStore::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The block's height. The first commit of a store is height 0 (genesis); every
    /// later one is exactly the head's height plus one.
    pub height: u64,
    /// The hash of the block's header.
    pub block_hash: Hash,
    /// The encoded block, returned unchanged by [`StateStore::block`].
    pub block: Vec<u8>,
    /// The state root after applying the block.
    pub state_root: Hash,
    /// The state writes, applied in order (a key written twice keeps its last write).
    pub writes: Vec<Write>,
    /// Writes to the node's local records ([`StateStore::put_local`]) that must
    /// happen exactly when this block is committed, in the same atomic step.
    pub local: Vec<Write>,
}

/// The last committed block, as [`StateStore::latest`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Head {
    /// Height of the block.
    pub height: u64,
    /// Hash of the block's header.
    pub block_hash: Hash,
    /// The state root after the block.
    pub state_root: Hash,
}

/// Why a state store operation failed.
///
/// [`StoreError::is_retryable`] separates transient failures (I/O: a full disk, a
/// flaky volume) from fatal ones (a caller bug such as a height gap, or a corrupt
/// database) that retrying cannot fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A commit's height was not the next one. Nothing was written.
    #[error("commit at height {got} rejected: the next height is {expected}")]
    HeightGap {
        /// The only height the store accepts next.
        expected: u64,
        /// The height that was offered.
        got: u64,
    },
    /// The operating system reported an I/O error. Retryable; after
    /// [`StoreError::is_retryable`] errors from redb the database may need reopening.
    #[error("I/O error during {op}")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The database content is inconsistent. Fatal: restore from a snapshot or resync.
    #[error("state database is corrupt: {detail}")]
    Corrupt {
        /// What was found to be wrong.
        detail: String,
    },
    /// Another process (or handle) holds the database open.
    #[error("state database is already open elsewhere")]
    AlreadyOpen,
    /// The database was written by an incompatible format version.
    #[error("state database format {found} is not supported (expected {expected})")]
    UnsupportedFormat {
        /// Format version found in the file.
        found: u64,
        /// Format version this build reads.
        expected: u64,
    },
    /// Any other failure reported by the storage engine. Fatal.
    #[error("storage engine error during {op}")]
    Backend {
        /// The operation that failed.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: Box<redb::Error>,
    },
}

impl StoreError {
    /// True when the same operation may succeed if tried again (I/O failures);
    /// false for caller bugs and corruption.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Io { .. })
    }
}

/// Persistent ledger state: key/value pairs, blocks by height and the head.
///
/// Implementations must pass [`conformance::suite`]. Reads are sorted by key
/// (bytewise) so every caller sees the same order on every machine.
pub trait StateStore {
    /// Atomically applies `commit`: its state writes, its block and the new head are
    /// either all visible afterwards or none are. Rejects a height that is not the
    /// next one with [`StoreError::HeightGap`] and changes nothing.
    fn commit(&mut self, commit: Commit) -> Result<(), StoreError>;

    /// The last committed block, or `None` for an empty store.
    fn latest(&self) -> Result<Option<Head>, StoreError>;

    /// The head as it was right after the block at `height`, if committed.
    fn head_at(&self, height: u64) -> Result<Option<Head>, StoreError>;

    /// The current value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// All pairs whose key starts with `prefix`, sorted by key.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError>;

    /// All pairs, sorted by key.
    fn iter(&self) -> Result<Vec<Entry>, StoreError> {
        self.scan_prefix(&[])
    }

    /// The encoded block committed at `height`.
    fn block(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// Atomically applies `writes` to the node's local records: a key space beside
    /// the ledger state that is part of no block and no state root (what this node
    /// promised or is in the middle of, as opposed to what the chain agreed). With
    /// the same durability as a commit: the writes are on disk when this returns.
    fn put_local(&mut self, writes: Vec<Write>) -> Result<(), StoreError>;

    /// All local records whose key starts with `prefix`, sorted by key.
    fn local_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError>;
}

/// The height a store whose head is `head` accepts next.
fn next_height(head: Option<u64>) -> Result<u64, StoreError> {
    match head {
        None => Ok(0),
        Some(h) => h.checked_add(1).ok_or_else(|| StoreError::Corrupt {
            detail: "head height is u64::MAX".to_owned(),
        }),
    }
}
