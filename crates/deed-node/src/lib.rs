//! The Deed node: wires the ledger, the stores and the roles together and serves
//! the HTTP API.
//!
//! - [`config`]: TOML configuration, precedence CLI > env > file > defaults.
//! - [`consensus`]: blocks come from malachite's BFT engine (`deed-consensus`); the
//!   node lends it its chain and mempool. `deed dev` is a one-validator network on
//!   the same path.
//! - [`node`]: the core — mempool, block application with the canonical referee,
//!   atomic persistence of state, blocks and the transaction index ([`chain`]).
//! - [`roles`]: the executor (runs assigned jobs; direct calls come through the
//!   API) and the watcher (re-executes results, challenges mismatches).
//! - [`blobnet`]: blobs served to and fetched from peers over the node network.
//! - [`http`]: the API of `deed_client::api`, with `/v1/openapi.json` and `/metrics`.
//! - [`dispute`]: plays this node's side of every dispute its executor or watcher
//!   keys are party to.
//! - [`dev`]: `deed dev`, a whole network in one process.
//! - [`operator`]: `deed init` and `deed node`: a node of a real network run from
//!   its home directory (configuration, genesis, keys).
//! - [`fault`]: fault injection for tests (the `fault` feature).
//!
//! It may depend on every other Deed crate; none depends on it but the CLI.

pub mod blobnet;
pub mod chain;
pub mod config;
pub mod consensus;
pub mod dev;
pub mod dispute;
pub mod error;
pub mod fault;
pub mod http;
pub mod mempool;
pub mod metrics;
pub mod node;
pub mod openapi;
pub mod operator;
pub mod roles;
pub mod runner;
pub mod server;

pub use config::{Config, Overrides, Roles};
pub use dev::run_dev;
pub use error::{ApiError, NodeError, TxRejection};
pub use node::{Genesis, Node, NodeKeys, Storage};
pub use server::{start, Running};
