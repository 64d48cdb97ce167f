//! Resource limits, enforced when loading and planning — before anything runs.

use serde::{Deserialize, Serialize};

/// Limits on what a model may ask of the runtime. Every field is checked before a run
/// starts, so a model cannot exhaust the node that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest model file accepted, in bytes.
    pub max_model_bytes: usize,
    /// Most graph nodes accepted.
    pub max_nodes: usize,
    /// Most elements in any single tensor.
    pub max_tensor_elements: u64,
    /// Most bytes in any single tensor.
    pub max_tensor_bytes: u64,
    /// Most bytes of intermediate tensors alive at once (the plan's peak).
    pub max_activation_bytes: u64,
    /// Highest tensor rank.
    pub max_rank: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_model_bytes: 2 << 30,
            max_nodes: 1 << 20,
            max_tensor_elements: 1 << 31,
            max_tensor_bytes: 4 << 30,
            max_activation_bytes: 8 << 30,
            max_rank: 16,
        }
    }
}
