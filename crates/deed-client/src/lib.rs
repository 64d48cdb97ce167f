//! Typed client for a Deed node's HTTP API.
//!
//! [`api`] holds the wire types: the node serializes them, the client and the CLI
//! deserialize them, so the two cannot drift apart.

pub mod api;
