//! Trace commitments as the dispute rules check them, computed by the canonical
//! runtime's `deed_runtime::trace` (the scheme is specified there).
//!
//! The ledger needs five checks, gathered here so the rules never depend on how they
//! are computed:
//!
//! - [`verify_output`]: a receipt's output is its trace's output leaf;
//! - [`verify_step`]: a revealed chain value against a trace root;
//! - [`prefix_root`]: the chain value `c_{i-1}` from the MMR peaks before step `i`;
//! - [`chain_after`]: `c_i` from those peaks and a step hash;
//! - [`verify_input`]: an earlier step hash is inside `c_{i-1}`.

use deed_runtime::trace::{self as rt, MmrProof, StepProof};
use deed_types::{Hash, OutputProofData, StepProofData, Tensor};

pub use deed_runtime::trace::Trace;

/// The chain value before any step, `c_{-1}`.
pub fn empty_chain() -> Hash {
    rt::mmr_root(0, &[])
}

/// True when the trace of `n` leaves with `root` ends with the output leaf of
/// `output_hash`.
pub fn verify_output(root: &Hash, n: u64, output_hash: &Hash, proof: &OutputProofData) -> bool {
    rt::verify_output(
        root,
        n,
        output_hash,
        &rt::OutputProof {
            peaks: proof.peaks.clone(),
            siblings: proof.siblings.clone(),
        },
    )
}

/// The output proof of a whole trace in its wire form (empty for an empty trace).
pub fn output_proof(trace: &Trace) -> OutputProofData {
    rt::output_proof(trace)
        .map(|p| OutputProofData {
            peaks: p.peaks,
            siblings: p.siblings,
        })
        .unwrap_or_default()
}

/// The output leaf of step `m` (the model's node count) over the graph outputs.
pub fn output_leaf(m: u64, outputs: &[Tensor]) -> Hash {
    rt::output_leaf(m, &rt::outputs_hash(outputs))
}

/// True when `proof` shows its chain value at its index of a trace with `root`.
pub fn verify_step(root: &Hash, proof: &StepProofData) -> bool {
    StepProof {
        index: proof.index,
        len: proof.len,
        chain_value: proof.chain_value,
        siblings: proof.siblings.clone(),
    }
    .verify(root)
}

/// The chain value over the first `size` steps from their MMR peaks, or `None` when
/// the number of peaks does not fit `size`.
pub fn prefix_root(size: u64, peaks: &[Hash]) -> Option<Hash> {
    (rt::mmr_peak_count(size) == peaks.len()).then(|| rt::mmr_root(size, peaks))
}

/// The chain value after appending `step_hash` to the prefix of `size_before` steps.
pub fn chain_after(size_before: u64, peaks_before: &[Hash], step_hash: Hash) -> Hash {
    rt::chain_after(size_before, peaks_before, step_hash)
}

/// True when step hash `leaf` is step `index` of the MMR of `size` steps whose root
/// is `chain_value`.
pub fn verify_input(
    size: u64,
    index: u64,
    leaf: &Hash,
    siblings: &[Hash],
    other_peaks: &[Hash],
    chain_value: &Hash,
) -> bool {
    MmrProof {
        size,
        index,
        siblings: siblings.to_vec(),
        other_peaks: other_peaks.to_vec(),
    }
    .verify(leaf, chain_value)
}

/// The step hash of a step's outputs.
pub fn step_hash(step: u64, outputs: &[Tensor]) -> Option<Hash> {
    let step = u32::try_from(step).ok()?;
    let refs: Vec<&Tensor> = outputs.iter().collect();
    Some(rt::step_hash(step, &refs))
}

/// The wire form of a runtime step proof, as carried by a reveal transaction.
pub fn to_wire(p: &StepProof) -> StepProofData {
    StepProofData {
        index: p.index,
        len: p.len,
        chain_value: p.chain_value,
        siblings: p.siblings.clone(),
    }
}
