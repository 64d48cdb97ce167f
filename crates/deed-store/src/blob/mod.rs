//! Content-addressed blobs: the [`BlobStore`] seam, its in-memory, local-filesystem
//! and object-storage (S3) implementations, and the conformance suite all must pass.
//!
//! A blob is named by a [`Cid`] (`deed_types::Cid`: CIDv1, raw codec, blake3
//! multihash, base32 text). It travels as fixed-size chunks whose values in the
//! blob's blake3 tree its [`Manifest`] lists. A store checks the manifest against
//! the id before the first chunk, verifies every chunk the moment it arrives, and
//! tells an uploader which chunks it still lacks (uploads resume); a blob whose
//! chunks all verified is the blob its id names, with no second pass over it. An
//! upload that never finishes is never visible as a blob.

mod any;
pub mod conformance;
mod fs;
mod manifest;
mod memory;
mod object;
mod tree;

use std::future::Future;
use std::ops::Range;

pub use any::AnyBlobStore;
pub use deed_types::Cid;
pub use fs::FsBlobStore;
pub use manifest::{ChunkHasher, Manifest, DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE};
pub use memory::MemoryBlobStore;
pub use object::{ObjectBlobStore, S3Config};

use bytes::Bytes;
use deed_types::Hash;

/// Size limits a store enforces on every manifest it is offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLimits {
    /// Largest blob accepted, in bytes.
    pub max_blob_size: u64,
    /// Largest chunk size a manifest may declare, in bytes.
    pub max_chunk_size: u32,
    /// Smallest chunk size a manifest may declare, in bytes. Tiny chunks would make
    /// a store keep (and an uploader send) a huge number of pieces.
    pub min_chunk_size: u32,
}

impl Default for BlobLimits {
    fn default() -> Self {
        BlobLimits {
            max_blob_size: 8 << 30,
            max_chunk_size: 4 << 20,
            min_chunk_size: 64 << 10,
        }
    }
}

/// Why a blob operation failed.
///
/// [`BlobError::is_retryable`] separates transient failures (local I/O, the object
/// store being unreachable) from bad input and corrupt data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The blob is larger than the store accepts.
    #[error("blob of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Declared size.
        size: u64,
        /// The store's limit.
        limit: u64,
    },
    /// The manifest is inconsistent with itself or with the store's limits.
    #[error("invalid manifest: {reason}")]
    BadManifest {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A chunk index beyond the manifest's chunk count.
    #[error("chunk index {index} out of range: the blob has {count} chunks")]
    ChunkIndexOutOfRange {
        /// The offered index.
        index: u32,
        /// Number of chunks in the manifest.
        count: u32,
    },
    /// A chunk whose length is not the length the manifest implies.
    #[error("chunk {index} is {got} bytes, expected {expected}")]
    ChunkLength {
        /// Chunk index.
        index: u32,
        /// Length implied by the manifest.
        expected: u64,
        /// Length received.
        got: u64,
    },
    /// A chunk whose hash is not the one the manifest lists. Nothing was stored.
    #[error("chunk {index} hash mismatch: manifest lists {expected}, data hashes to {got}")]
    ChunkHashMismatch {
        /// Chunk index.
        index: u32,
        /// Hash listed in the manifest.
        expected: Hash,
        /// Hash of the data received.
        got: Hash,
    },
    /// `finish` was called before every chunk arrived.
    #[error("upload incomplete: {missing} chunks missing (first: {first})")]
    Incomplete {
        /// How many chunks are missing.
        missing: u32,
        /// The lowest missing index.
        first: u32,
    },
    /// No complete blob with this id.
    #[error("blob {id} not found")]
    NotFound {
        /// The id asked for.
        id: Cid,
    },
    /// A byte range outside the blob.
    #[error("range {start}..{end} is outside blob of {size} bytes")]
    RangeOutOfBounds {
        /// Range start.
        start: u64,
        /// Range end (exclusive).
        end: u64,
        /// Blob size.
        size: u64,
    },
    /// Stored data failed verification: the store was damaged underneath us.
    #[error("stored blob {id} is corrupt: {detail}")]
    Corrupt {
        /// The blob.
        id: Cid,
        /// What failed.
        detail: String,
    },
    /// Local I/O failed. Retryable.
    #[error("I/O error during {op}")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The object store failed or could not be reached. Retryable.
    #[error("object store error during {op}")]
    Remote {
        /// The operation that failed.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: Box<object_store::Error>,
    },
}

impl BlobError {
    /// True when the same call may succeed if tried again (I/O, network);
    /// false for bad input and corrupt data.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BlobError::Io { .. } | BlobError::Remote { .. })
    }
}

/// A content-addressed, chunked blob store.
///
/// Upload protocol: the uploader builds a [`Manifest`] ([`Manifest::build`]), asks
/// [`missing_chunks`](BlobStore::missing_chunks), sends each missing chunk with
/// [`put_chunk`](BlobStore::put_chunk) (verified on arrival; may be resent, in any
/// order, across restarts), then calls [`finish`](BlobStore::finish), which makes the
/// blob visible atomically once every chunk is there. Stores refuse a manifest whose
/// chunk values do not merge to its id ([`Manifest::validate`]) in
/// `missing_chunks` and `finish`. [`upload`] does all of this for bytes in memory.
///
/// Implementations must pass [`conformance::suite`].
pub trait BlobStore: Send + Sync {
    /// The limits this store enforces.
    fn limits(&self) -> BlobLimits;

    /// Indices of the chunks of `manifest` the store does not hold yet, ascending.
    /// Empty when the blob is already complete.
    fn missing_chunks(
        &self,
        manifest: &Manifest,
    ) -> impl Future<Output = Result<Vec<u32>, BlobError>> + Send;

    /// Stores chunk `index` of `manifest` after checking its length and hash. A chunk
    /// that fails a check changes nothing.
    fn put_chunk(
        &self,
        manifest: &Manifest,
        index: u32,
        data: &[u8],
    ) -> impl Future<Output = Result<(), BlobError>> + Send;

    /// [`put_chunk`](BlobStore::put_chunk) for a chunk in the pieces it arrived in
    /// (a request body's frames), which a store that writes on another thread takes
    /// as they are, without joining them into one buffer first.
    fn put_chunk_parts(
        &self,
        manifest: &Manifest,
        index: u32,
        parts: Vec<Bytes>,
    ) -> impl Future<Output = Result<(), BlobError>> + Send {
        async move {
            match parts.as_slice() {
                [one] => self.put_chunk(manifest, index, one).await,
                _ => self.put_chunk(manifest, index, &parts.concat()).await,
            }
        }
    }

    /// Makes the blob visible once every chunk is present (and, for a store that
    /// cannot vouch for chunks staged earlier, verified again). Idempotent: finishing
    /// a complete blob succeeds.
    fn finish(&self, manifest: &Manifest) -> impl Future<Output = Result<(), BlobError>> + Send;

    /// Discards the staged chunks of an unfinished upload. A complete blob is kept.
    fn abort(&self, manifest: &Manifest) -> impl Future<Output = Result<(), BlobError>> + Send;

    /// The manifest of a complete blob, or `None` if the store does not hold it.
    fn manifest(
        &self,
        id: &Cid,
    ) -> impl Future<Output = Result<Option<Manifest>, BlobError>> + Send;

    /// Bytes `range` of a complete blob. Every chunk the range touches is verified
    /// against the manifest before any byte is returned.
    fn read_range(
        &self,
        id: &Cid,
        range: Range<u64>,
    ) -> impl Future<Output = Result<Vec<u8>, BlobError>> + Send;

    /// Chunk `index` of the complete blob `manifest` describes, as stored, without
    /// hashing it again: the bytes to send to a receiver that checks them against
    /// the manifest itself, as the node's HTTP clients and peers do (a chunk was
    /// verified when it arrived). A missing chunk, or one of the wrong length, is
    /// still an error. Bytes the node uses itself come from
    /// [`read_range`](BlobStore::read_range), which verifies them.
    fn read_chunk_unverified(
        &self,
        manifest: &Manifest,
        index: u32,
    ) -> impl Future<Output = Result<Bytes, BlobError>> + Send;
}

/// Uploads `data` in chunks of `chunk_size` bytes (resuming whatever the store
/// already holds) and returns its manifest.
pub async fn upload<S: BlobStore>(
    store: &S,
    data: &[u8],
    chunk_size: u32,
) -> Result<Manifest, BlobError> {
    let manifest = Manifest::build(data, chunk_size)?;
    for index in store.missing_chunks(&manifest).await? {
        let range = manifest.chunk_range(index)?;
        let chunk = data
            .get(to_usize(range.start)?..to_usize(range.end)?)
            .ok_or(BlobError::BadManifest {
                reason: "chunk range outside the data",
            })?;
        store.put_chunk(&manifest, index, chunk).await?;
    }
    store.finish(&manifest).await?;
    Ok(manifest)
}

/// Reads a whole complete blob.
pub async fn download<S: BlobStore>(store: &S, id: &Cid) -> Result<Vec<u8>, BlobError> {
    let manifest = store
        .manifest(id)
        .await?
        .ok_or(BlobError::NotFound { id: *id })?;
    store.read_range(id, 0..manifest.size).await
}

fn to_usize(n: u64) -> Result<usize, BlobError> {
    usize::try_from(n).map_err(|_| BlobError::BadManifest {
        reason: "size does not fit this platform's address space",
    })
}

/// Checks that `range` lies within a blob of `size` bytes.
fn check_range(range: &Range<u64>, size: u64) -> Result<(), BlobError> {
    if range.start > range.end || range.end > size {
        return Err(BlobError::RangeOutOfBounds {
            start: range.start,
            end: range.end,
            size,
        });
    }
    Ok(())
}

/// Copies the part of `range` that falls in chunk `index` of `manifest` out of the
/// verified chunk `data` into `out`.
fn append_chunk_part(
    manifest: &Manifest,
    index: u32,
    data: &[u8],
    range: &Range<u64>,
    out: &mut Vec<u8>,
) -> Result<(), BlobError> {
    let chunk = manifest.chunk_range(index)?;
    let from = range.start.max(chunk.start) - chunk.start;
    let to = range.end.min(chunk.end) - chunk.start;
    let part = data
        .get(to_usize(from)?..to_usize(to)?)
        .ok_or(BlobError::Corrupt {
            id: manifest.id,
            detail: format!("chunk {index} is shorter than its manifest says"),
        })?;
    out.extend_from_slice(part);
    Ok(())
}

/// Checks that a stored chunk read back without hashing has the length its manifest
/// implies.
fn check_stored_length(manifest: &Manifest, index: u32, len: u64) -> Result<(), BlobError> {
    let r = manifest.chunk_range(index)?;
    if len != r.end - r.start {
        return Err(BlobError::Corrupt {
            id: manifest.id,
            detail: format!(
                "chunk {index} is {len} bytes, its manifest says {}",
                r.end - r.start
            ),
        });
    }
    Ok(())
}

/// Verifies a stored chunk read back from a store against its manifest.
fn verify_stored_chunk(manifest: &Manifest, index: u32, data: &[u8]) -> Result<(), BlobError> {
    manifest
        .check_chunk(index, data)
        .map_err(|e| BlobError::Corrupt {
            id: manifest.id,
            detail: e.to_string(),
        })
}
