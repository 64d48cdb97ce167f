//! Persistence for Deed: the ledger's state and blocks ([`state`]) and
//! content-addressed blobs ([`blob`]).
//!
//! This crate owns every byte Deed keeps on disk or in object storage. It depends on
//! `deed-types` only; the ledger, the network and the node depend on it through the
//! [`StateStore`] and [`BlobStore`] traits, each of which has an in-memory
//! implementation and one conformance suite that every implementation passes.

pub mod blob;
pub mod state;

pub use blob::{
    AnyBlobStore, BlobError, BlobLimits, BlobStore, Cid, FsBlobStore, Manifest, MemoryBlobStore,
    ObjectBlobStore, S3Config,
};
pub use state::{Commit, Head, MemoryStateStore, RedbStateStore, StateStore, StoreError};
