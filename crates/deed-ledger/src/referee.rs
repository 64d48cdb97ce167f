//! The referee seam: re-executing one step of a model on given inputs.
//!
//! The ledger decides disputes by asking a [`Referee`] for the true hash of the one
//! step the parties disagree on. The production referee is the canonical runtime's
//! single-node execution; the ledger only sees this trait, so its rules can be
//! checked without loading models.

use deed_types::{Cid, Hash, Tensor};

/// Why the referee could not produce a step hash. Either way the referee move fails
/// and the defender may retry before its deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefereeError {
    /// The model version is not available to this validator.
    #[error("model {0} is not available to the referee")]
    ModelUnavailable(Cid),
    /// The step index is not a node of the model.
    #[error("step {step} is not in the model (it has {steps})")]
    NoSuchStep {
        /// Asked.
        step: u64,
        /// Nodes in the model.
        steps: u64,
    },
    /// The inputs do not fit the node (count, dtype or shape).
    #[error("inputs do not fit step {step}: {reason}")]
    BadInputs {
        /// The step.
        step: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Re-executes single steps of a model with the canonical runtime.
pub trait Referee {
    /// The true step hash `h_step` of node `step` of the model version whose manifest
    /// is `model`, run on `inputs`.
    fn execute_step(&self, model: &Cid, step: u64, inputs: &[Tensor])
        -> Result<Hash, RefereeError>;
}
