//! Typed client for a Deed node's HTTP API.
//!
//! [`api`] holds the wire types: the node serializes them, the client and the CLI
//! deserialize them, so the two cannot drift apart. [`Client`] calls every route,
//! turns the node's [`api::ErrorBody`] into [`ClientError::Api`] and a refused
//! connection into [`ClientError::NodeDown`]. [`blobs`] runs the chunked upload
//! protocol (resuming: only missing chunks are sent) and verified downloads.
//!
//! Depends on `deed-types` and, for the blob manifest, `deed-store`; never on the
//! node, the ledger or the runtime.

pub mod api;
pub mod blobs;
mod client;
pub mod direct;
mod error;
pub mod hexbytes;

pub use blobs::{Progress, DEFAULT_CHUNK_SIZE};
pub use client::{job_is_final, Client, WaitFor};
pub use error::ClientError;
