//! Deed's plain data: hashes, tensors on the wire and (as the ledger grows) identities,
//! transactions and receipts.
//!
//! This crate owns representations and their canonical encodings. It performs no I/O
//! and depends on no other Deed crate; every other crate depends on it.

pub mod hash;
pub mod tensor;

pub use hash::Hash;
pub use tensor::{DType, Tensor, TensorData, TensorError};
