//! Deed's ledger: the replicated state machine that records who owns which model,
//! which versions exist, what a call costs and who was paid, who staked, who was
//! slashed, and how parameters change.
//!
//! It owns the state ([`State`]), the transition
//! [`apply_block`]`(state, block, referee) -> (state', results, events)`, the state
//! root with proofs ([`commitment`]), and the rules of the dispute game. It is pure:
//! no clock (time is the block height), no RNG (randomness comes from the block
//! header), no I/O, no panics on any input. It depends on `deed-types`, and on
//! `deed-runtime` only for trace commitments and the referee step ([`Referee`],
//! [`RuntimeReferee`]); it must not depend on storage, networking or consensus.
//!
//! The state is a set of key/value pairs ([`State::to_kv`], [`State::from_kv`]) and
//! each block reports the pairs it wrote ([`BlockOutcome::writes`]), which is all a
//! state store needs to persist it.

pub mod audit;
pub mod block;
pub mod commitment;
pub mod error;
pub mod events;
mod exec;
pub mod params;
pub mod party;
pub mod referee;
pub mod state;
mod table;
pub mod trace;

pub use block::{apply_block, next_block, next_header, BlockOutcome, TxResult};
pub use commitment::{CommitmentError, StateProof};
pub use error::{BlockError, TxError};
pub use events::{Event, Reason};
pub use exec::bps_of;
pub use params::{ParamError, Params};
pub use referee::{input_fault, Referee, RefereeError, RuntimeReferee, StepInput};
pub use state::{
    Account, Audit, Dispute, DisputePhase, Escrow, Executor, GenesisError, GenesisValidator, Job,
    JobStatus, LoadError, Meta, Model, Proposal, ProposalStatus, State, Version, Write,
};
