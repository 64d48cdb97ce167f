//! Trace commitments as the dispute rules check them.
//!
//! An execution of `n` steps has step hashes `h_0..h_{n-1}`. The chain value
//! `c_i` is the root of a Merkle mountain range (MMR) over `h_0..h_i`, so agreeing on
//! `c_{i-1}` fixes every earlier step's output; the trace root is a Merkle root over
//! `c_0..c_{n-1}` that also binds `n`. The ledger needs four checks, gathered here
//! so the rest of the ledger never sees how they are computed:
//!
//! - [`verify_step`]: a revealed chain value against a trace root;
//! - [`prefix_root`]: the MMR root from the peaks before step `i` (must equal `c_{i-1}`);
//! - [`chain_after`]: `c_i` from those peaks and a step hash;
//! - [`verify_input`]: an earlier step hash is inside `c_{i-1}`.
//!
//! [`Trace`] builds the commitments and proofs a party reveals.

use deed_types::{Hash, StepProofData, Tensor};

fn node(l: &Hash, r: &Hash) -> Hash {
    Hash::domain("deed 2026 mmr node", &[l.as_bytes(), r.as_bytes()])
}

/// Root of an MMR of `size` leaves with the given peaks (left to right).
pub fn mmr_root(size: u64, peaks: &[Hash]) -> Hash {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(peaks.len() + 1);
    let size_bytes = size.to_le_bytes();
    parts.push(&size_bytes);
    for p in peaks {
        parts.push(p.as_bytes());
    }
    Hash::domain("deed 2026 mmr root", &parts)
}

/// Heights of the mountains of an MMR of `size` leaves, left (tallest) to right.
fn mountain_heights(size: u64) -> Vec<u32> {
    (0..64u32).rev().filter(|b| size >> b & 1 == 1).collect()
}

/// The peaks after appending `leaf` to an MMR of `size` leaves with `peaks`.
/// `None` when the peak count does not fit `size`.
pub fn push_leaf(size: u64, peaks: &[Hash], leaf: Hash) -> Option<Vec<Hash>> {
    let heights = mountain_heights(size);
    if heights.len() != peaks.len() {
        return None;
    }
    let mut stack: Vec<(u32, Hash)> = heights.into_iter().zip(peaks.iter().copied()).collect();
    let mut cur = (0u32, leaf);
    while let Some(&(h, left)) = stack.last() {
        if h != cur.0 {
            break;
        }
        stack.pop();
        cur = (h + 1, node(&left, &cur.1));
    }
    stack.push(cur);
    Some(stack.into_iter().map(|(_, p)| p).collect())
}

/// The chain value after appending step hash `step_hash` to the prefix with
/// `size_before` steps and `peaks_before`. `None` when the peaks do not fit the size.
pub fn chain_after(size_before: u64, peaks_before: &[Hash], step_hash: Hash) -> Option<Hash> {
    let peaks = push_leaf(size_before, peaks_before, step_hash)?;
    Some(mmr_root(size_before.checked_add(1)?, &peaks))
}

/// The chain value of the first `size` steps from their peaks, or `None` when the
/// number of peaks does not fit `size`.
pub fn prefix_root(size: u64, peaks: &[Hash]) -> Option<Hash> {
    (mountain_heights(size).len() == peaks.len()).then(|| mmr_root(size, peaks))
}

fn chain_leaf(c: &Hash) -> Hash {
    Hash::domain("deed 2026 trace leaf", &[c.as_bytes()])
}

fn chain_node(l: &Hash, r: &Hash) -> Hash {
    Hash::domain("deed 2026 trace node", &[l.as_bytes(), r.as_bytes()])
}

fn trace_root_of(len: u64, top: &Hash) -> Hash {
    Hash::domain(
        "deed 2026 trace root",
        &[&len.to_le_bytes(), top.as_bytes()],
    )
}

/// True when `proof` shows `chain_value` at `index` of a `len`-step trace with `root`.
pub fn verify_step(root: &Hash, proof: &StepProofData) -> bool {
    if proof.index >= proof.len {
        return false;
    }
    let mut idx = proof.index;
    let mut width = proof.len;
    let mut acc = chain_leaf(&proof.chain_value);
    let mut sib = proof.siblings.iter();
    while width > 1 {
        if idx % 2 == 1 {
            let Some(s) = sib.next() else { return false };
            acc = chain_node(s, &acc);
        } else if idx + 1 < width {
            let Some(s) = sib.next() else { return false };
            acc = chain_node(&acc, s);
        }
        idx /= 2;
        width = width.div_ceil(2);
    }
    sib.next().is_none() && trace_root_of(proof.len, &acc) == *root
}

/// True when `proof` shows `leaf` is leaf `index` of the MMR of `size` leaves whose
/// root is `chain_value`. The proof is the leaf's siblings up to its mountain's peak,
/// followed by the other peaks left to right.
pub fn verify_input(
    size: u64,
    index: u64,
    leaf: &Hash,
    proof: &[Hash],
    chain_value: &Hash,
) -> bool {
    if index >= size {
        return false;
    }
    let heights = mountain_heights(size);
    let mut start = 0u64;
    let mut which = None;
    for (m, &h) in heights.iter().enumerate() {
        let width = 1u64 << h;
        if index < start + width {
            which = Some((m, h, index - start));
            break;
        }
        start += width;
    }
    let Some((m, h, mut offset)) = which else {
        return false;
    };
    if proof.len() != h as usize + heights.len() - 1 {
        return false;
    }
    let mut acc = *leaf;
    for s in &proof[..h as usize] {
        acc = if offset % 2 == 1 {
            node(s, &acc)
        } else {
            node(&acc, s)
        };
        offset /= 2;
    }
    let mut peaks: Vec<Hash> = proof[h as usize..].to_vec();
    peaks.insert(m, acc);
    mmr_root(size, &peaks) == *chain_value
}

/// True when `tensor` is the output a step with hash `step_hash` produced.
pub fn output_binds(tensor: &Tensor, step_hash: &Hash) -> bool {
    tensor.hash() == *step_hash
}

/// The commitments of one execution, built from its step hashes: what an executor
/// or watcher keeps to answer a dispute.
#[derive(Clone, Debug)]
pub struct Trace {
    steps: Vec<Hash>,
    chain: Vec<Hash>,
    /// Peaks before each step `i` (index `i`), and after the last.
    peaks: Vec<Vec<Hash>>,
    levels: Vec<Vec<Hash>>,
}

impl Trace {
    /// Commits to `step_hashes` (`h_0..h_{n-1}`).
    pub fn new(step_hashes: Vec<Hash>) -> Trace {
        let mut peaks = vec![Vec::new()];
        let mut chain = Vec::with_capacity(step_hashes.len());
        for (i, h) in step_hashes.iter().enumerate() {
            let before = peaks.last().cloned().unwrap_or_default();
            let after = push_leaf(i as u64, &before, *h).unwrap_or_default();
            chain.push(mmr_root(i as u64 + 1, &after));
            peaks.push(after);
        }
        let mut levels = vec![chain.iter().map(chain_leaf).collect::<Vec<_>>()];
        while levels.last().map(|l| l.len()).unwrap_or(0) > 1 {
            let prev = levels.last().cloned().unwrap_or_default();
            levels.push(
                prev.chunks(2)
                    .map(|p| match p {
                        [l, r] => chain_node(l, r),
                        [one] => *one,
                        _ => Hash::ZERO,
                    })
                    .collect(),
            );
        }
        Trace {
            steps: step_hashes,
            chain,
            peaks,
            levels,
        }
    }

    /// Number of steps.
    pub fn len(&self) -> u64 {
        self.steps.len() as u64
    }

    /// True for an empty trace.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The trace root.
    pub fn root(&self) -> Hash {
        let top = self
            .levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or(Hash::ZERO);
        trace_root_of(self.len(), &top)
    }

    /// Chain value `c_i`.
    pub fn chain_value(&self, i: u64) -> Option<Hash> {
        self.chain.get(i as usize).copied()
    }

    /// Step hash `h_i`.
    pub fn step_hash(&self, i: u64) -> Option<Hash> {
        self.steps.get(i as usize).copied()
    }

    /// `c_i` with its proof against [`Trace::root`].
    pub fn step_proof(&self, i: u64) -> Option<StepProofData> {
        let chain_value = self.chain_value(i)?;
        let mut siblings = Vec::new();
        let mut idx = i as usize;
        for level in &self.levels[..self.levels.len().saturating_sub(1)] {
            let sib = idx ^ 1;
            if sib < level.len() {
                siblings.push(level[sib]);
            }
            idx /= 2;
        }
        Some(StepProofData {
            index: i,
            len: self.len(),
            chain_value,
            siblings,
        })
    }

    /// MMR peaks over `h_0..h_{i-1}`.
    pub fn peaks_before(&self, i: u64) -> Vec<Hash> {
        self.peaks.get(i as usize).cloned().unwrap_or_default()
    }

    /// Proof that `h_j` is inside the MMR over the first `size` steps (for
    /// [`verify_input`]).
    pub fn input_proof(&self, size: u64, j: u64) -> Option<Vec<Hash>> {
        if j >= size || size > self.len() {
            return None;
        }
        let heights = mountain_heights(size);
        let mut start = 0u64;
        let mut proof = Vec::new();
        let mut others = Vec::new();
        for &h in &heights {
            let width = 1u64 << h;
            let leaves = &self.steps[start as usize..(start + width) as usize];
            if j >= start && j < start + width {
                let mut level: Vec<Hash> = leaves.to_vec();
                let mut off = (j - start) as usize;
                while level.len() > 1 {
                    proof.push(level[off ^ 1]);
                    level = level.chunks(2).map(|p| node(&p[0], &p[1])).collect();
                    off /= 2;
                }
                others.push(None);
            } else {
                let mut level: Vec<Hash> = leaves.to_vec();
                while level.len() > 1 {
                    level = level.chunks(2).map(|p| node(&p[0], &p[1])).collect();
                }
                others.push(level.first().copied());
            }
            start += width;
        }
        proof.extend(others.into_iter().flatten());
        Some(proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hashes(n: usize, salt: u8) -> Vec<Hash> {
        (0..n)
            .map(|i| Hash::of(&[salt, i as u8, (i >> 8) as u8]))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn proofs_verify_and_bind(n in 1usize..40, pick in any::<prop::sample::Index>(), pick2 in any::<prop::sample::Index>()) {
            let t = Trace::new(hashes(n, 1));
            let i = pick.index(n) as u64;
            let p = t.step_proof(i).unwrap();
            prop_assert!(verify_step(&t.root(), &p));
            let mut bad = p.clone();
            bad.chain_value = Hash::of(b"lie");
            prop_assert!(!verify_step(&t.root(), &bad));
            let mut wrong_len = p.clone();
            wrong_len.len += 1;
            prop_assert!(!verify_step(&t.root(), &wrong_len));
            // The chain: peaks before i give c_{i-1}, and appending h_i gives c_i.
            let peaks = t.peaks_before(i);
            if i > 0 {
                prop_assert_eq!(prefix_root(i, &peaks), t.chain_value(i - 1));
            }
            prop_assert_eq!(chain_after(i, &peaks, t.step_hash(i).unwrap()), t.chain_value(i));
            prop_assert_ne!(chain_after(i, &peaks, Hash::of(b"other")), t.chain_value(i));
            // Inputs: any earlier step hash is provable inside c_{i-1}.
            if i > 0 {
                let j = pick2.index(i as usize) as u64;
                let proof = t.input_proof(i, j).unwrap();
                let c = t.chain_value(i - 1).unwrap();
                prop_assert!(verify_input(i, j, &t.step_hash(j).unwrap(), &proof, &c));
                prop_assert!(!verify_input(i, j, &Hash::of(b"x"), &proof, &c));
            }
        }
    }
}
