//! Trace commitments: what an execution commits to, step by step, so that two parties
//! who disagree about a run can find the first operator they disagree on and prove every
//! value they need about earlier steps in O(log n).
//!
//! # Scheme (version 2)
//!
//! Every hash below is blake3 in key-derivation mode, `H(context, bytes)` =
//! `blake3::Hasher::new_derive_key(context).update(bytes).finalize()`, which is what
//! [`Hash::domain`] computes. Each use has its own context string, so a hash made for
//! one purpose can never be passed off as another. `u32le` / `u64le` are little-endian
//! integers, `||` is concatenation, and hashes are their 32 raw bytes.
//!
//! | name | context string |
//! |---|---|
//! | `STEP` | `deed trace v2: step` |
//! | `MMR_NODE` | `deed trace v2: mmr node` |
//! | `MMR_ROOT` | `deed trace v2: mmr root` |
//! | `TREE_NODE` | `deed trace v2: tree node` |
//! | `TREE_ROOT` | `deed trace v2: tree root` |
//! | `OUTPUT` | `deed trace v2: output` |
//!
//! ## Step hashes
//!
//! Step `i` is the `i`-th graph node in canonical execution order (0-based). With
//! output tensors `t_0 … t_{k-1}` in the node's output order,
//!
//! ```text
//! h_i = H(STEP, u32le(i) || u32le(k) || enc(t_0) || … || enc(t_{k-1}))
//! ```
//!
//! where `enc` is the canonical tensor encoding of `deed_types::Tensor::encode`
//! (magic, dtype code, rank, dimensions, little-endian data). That encoding is
//! self-delimiting, so concatenating outputs is unambiguous.
//!
//! ## The output leaf
//!
//! A trace of a model with `m` nodes has `n = m + 1` leaves: after the node steps
//! comes the *output step* `m`, whose leaf binds the graph outputs `o_0 … o_{q-1}` (in
//! the model's output order) through the hash a receipt carries for them:
//!
//! ```text
//! output_hash = blake3(deed_types::encode_list([o_0 … o_{q-1}]))
//! h_m         = H(OUTPUT, u64le(m) || output_hash)
//! ```
//!
//! So a trace root fixes the result as well as every intermediate tensor: a receipt
//! proves its output against its root with [`output_proof`], and a dispute over a
//! wrong output ends at step `m`, whose "execution" is hashing the graph outputs.
//!
//! ## Chain values: a Merkle mountain range over step hashes
//!
//! The MMR over leaves `h_0 … h_{s-1}` (its *size* is `s`) is the list of its *peaks*:
//! write `s = 2^{e_1} + 2^{e_2} + …` with `e_1 > e_2 > …` (the set bits of `s`); peak
//! `p` is the root of the perfect binary tree over the next `2^{e_p}` leaves, left to
//! right, so the first peak is the tallest and covers the oldest leaves. In those trees
//! a leaf node is the step hash `h_j` itself, and
//!
//! ```text
//! inner node = H(MMR_NODE, left || right)
//! ```
//!
//! and the MMR root binds the size:
//!
//! ```text
//! mmr_root(s, [P_1 … P_m]) = H(MMR_ROOT, u64le(s) || P_1 || … || P_m)
//! ```
//!
//! The chain value after step `i` is `c_i = mmr_root(i + 1, peaks of h_0 … h_i)`, and the
//! value before any step is `c_{-1} = mmr_root(0, [])` = `H(MMR_ROOT, u64le(0))`.
//! Appending a leaf to an MMR of size `s` pushes `h` as a new last peak
//! and then, once for every trailing one bit of `s`, replaces the last two peaks
//! `A, B` by `H(MMR_NODE, A || B)`.
//!
//! Because `c_i` fixes every step hash up to `i`, parties who agree on `c_{i-1}` agree on
//! every tensor computed before step `i`; and because it is an MMR root, any earlier
//! `h_j` can be proved under it with an [`MmrProof`] of at most `2⌈log2(i+1)⌉` hashes.
//!
//! ## Trace root: a Merkle tree over chain values
//!
//! Over the `n` chain values `c_0 … c_{n-1}`, the tree hash `MTH` follows RFC 6962
//! §2.1 with its own domain separation:
//!
//! ```text
//! MTH([c]) = c
//! MTH(D)   = H(TREE_NODE, MTH(D[0..k]) || MTH(D[k..n]))   for n > 1,
//!            k the largest power of two below n
//! ```
//!
//! and the trace root binds `n`:
//!
//! ```text
//! root = H(TREE_ROOT, u64le(n) || MTH(c_0 … c_{n-1}))    for n > 0
//! root = H(TREE_ROOT, u64le(0))                          for the empty trace
//! ```
//!
//! A [`StepProof`] for index `m` carries `c_m` and the RFC 6962 audit path (siblings
//! from the leaf up), verified with the algorithm of RFC 9162 §2.1.3.2; it has at most
//! `⌈log2 n⌉` siblings.
//!
//! ## Why leaves are not hashed again
//!
//! RFC 6962 hashes a leaf under its own prefix so that an inner node can never pass
//! for a leaf. Here every leaf is already the output of a context of its own: an MMR
//! leaf is a step hash (`STEP` or `OUTPUT`), a tree leaf a chain value (`MMR_ROOT`),
//! while inner nodes come from `MMR_NODE` and `TREE_NODE`; and both proofs fix their
//! path's length from the index and the size, which the roots bind. Passing an inner
//! node off as a leaf would take a blake3 collision across contexts. Version 1 of the
//! scheme hashed leaves again (`MMR_LEAF`, `TREE_LEAF`); dropping that took a step's
//! fold into the trace from about 5.6 to 3.6 compressions on average (0.65 to 0.43 µs
//! here, over traces of 40 steps).

use crate::tensor_bytes::LeadHasher;
use deed_types::{Hash, Tensor};
use serde::{Deserialize, Serialize};

const STEP: &str = "deed trace v2: step";
const MMR_NODE: &str = "deed trace v2: mmr node";
const MMR_ROOT: &str = "deed trace v2: mmr root";
const TREE_NODE: &str = "deed trace v2: tree node";
const TREE_ROOT: &str = "deed trace v2: tree root";
const OUTPUT: &str = "deed trace v2: output";

/// A fresh `new_derive_key(context)` hasher. Deriving the context key costs a blake3
/// compression; every run pushes several hashes per step, so each context's key is
/// derived once and the hasher started from it (the same state, hence the same
/// hashes). Starting one writes a few words, where cloning a prepared hasher copied
/// the whole of it (about 1.9 KiB with its subtree stack).
fn keyed(context: &'static str) -> blake3::Hasher {
    use blake3::hazmat::{hash_derive_key_context, ContextKey, HasherExt};
    use std::sync::OnceLock;
    static CACHE: [OnceLock<ContextKey>; 6] = [const { OnceLock::new() }; 6];
    let slot = match context {
        STEP => 0,
        MMR_NODE => 1,
        MMR_ROOT => 2,
        TREE_NODE => 3,
        TREE_ROOT => 4,
        OUTPUT => 5,
        _ => return blake3::Hasher::new_derive_key(context),
    };
    let key = CACHE[slot].get_or_init(|| hash_derive_key_context(context));
    blake3::Hasher::new_from_context_key(key)
}

/// `Hash::domain(context, parts)` through the cached hasher.
fn domain(context: &'static str, parts: &[&[u8]]) -> Hash {
    let mut h = keyed(context);
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The hash of step `step`'s output tensors, in the node's output order (see the
/// module docs for the exact bytes). Tensors are streamed into the hasher, never copied
/// whole.
pub fn step_hash(step: u32, outputs: &[&Tensor]) -> Hash {
    let mut h = LeadHasher::new(keyed(STEP));
    h.update(&step.to_le_bytes());
    // A node has at most a handful of outputs; a count beyond u32 cannot come from a
    // loaded graph, and saturating keeps the encoding total.
    let k = u32::try_from(outputs.len()).unwrap_or(u32::MAX);
    h.update(&k.to_le_bytes());
    for t in outputs {
        crate::tensor_bytes::hash_tensor(t, &mut h);
    }
    h.finalize().into()
}

/// The hash a receipt carries for graph outputs: blake3 of their tensor list
/// encoding (`deed_types::encode_list`: a u32 count, then each tensor's canonical
/// encoding after its u32 length), streamed into the hasher rather than copied.
pub fn outputs_hash(outputs: &[Tensor]) -> Hash {
    outputs_hash_of(&outputs.iter().collect::<Vec<_>>())
}

/// [`outputs_hash`] of borrowed tensors.
pub fn outputs_hash_of(outputs: &[&Tensor]) -> Hash {
    let lens: Option<Vec<u32>> = outputs
        .iter()
        .map(|t| u32::try_from(t.encoded_len()).ok())
        .collect();
    let (Some(lens), Ok(count)) = (lens, u32::try_from(outputs.len())) else {
        // Beyond what the list encoding holds: its own (empty) result.
        let owned: Vec<Tensor> = outputs.iter().map(|&t| t.clone()).collect();
        return Hash::of(&deed_types::encode_list(&owned));
    };
    let mut h = LeadHasher::new(blake3::Hasher::new());
    h.update(&count.to_le_bytes());
    for (t, len) in outputs.iter().zip(lens) {
        h.update(&len.to_le_bytes());
        crate::tensor_bytes::hash_tensor(t, &mut h);
    }
    h.finalize().into()
}

/// The output step's leaf `h_m` of a model with `m` nodes (see the module docs).
pub fn output_leaf(m: u64, output_hash: &Hash) -> Hash {
    domain(OUTPUT, &[&m.to_le_bytes(), output_hash.as_bytes()])
}

/// What proves a receipt's output hash against its trace root: the MMR peaks of the
/// node steps before the output leaf, and the audit path of the last chain value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputProof {
    /// Peaks of the MMR over `h_0 … h_{m-1}`, tallest first.
    pub peaks: Vec<Hash>,
    /// Audit path of `c_m` in the trace root's tree, from the leaf up.
    pub siblings: Vec<Hash>,
}

/// True when `root`, a trace of `n` leaves, ends with the output leaf of
/// `output_hash`, as `proof` shows.
pub fn verify_output(root: &Hash, n: u64, output_hash: &Hash, proof: &OutputProof) -> bool {
    let Some(m) = n.checked_sub(1) else {
        return false;
    };
    if proof.peaks.len() != mmr_peak_count(m) {
        return false;
    }
    let last = chain_after(m, &proof.peaks, output_leaf(m, output_hash));
    StepProof {
        index: m,
        len: n,
        chain_value: last,
        siblings: proof.siblings.clone(),
    }
    .verify(root)
}

/// The proof of a whole trace's output leaf, or `None` for an empty trace.
pub fn output_proof(trace: &Trace) -> Option<OutputProof> {
    let last = trace.len().checked_sub(1)?;
    Some(OutputProof {
        peaks: trace.peaks_before(last)?,
        siblings: trace.step_proof(last)?.siblings,
    })
}

fn mmr_node(l: &Hash, r: &Hash) -> Hash {
    domain(MMR_NODE, &[l.as_bytes(), r.as_bytes()])
}

fn tree_node(l: &Hash, r: &Hash) -> Hash {
    domain(TREE_NODE, &[l.as_bytes(), r.as_bytes()])
}

fn tree_root(n: u64, mth: Option<&Hash>) -> Hash {
    match mth {
        Some(m) => domain(TREE_ROOT, &[&n.to_le_bytes(), m.as_bytes()]),
        None => domain(TREE_ROOT, &[&n.to_le_bytes()]),
    }
}

/// The root of an MMR of `size` leaves with the given peaks (tallest first):
/// `H(MMR_ROOT, u64le(size) || peaks…)`. `mmr_root(0, &[])` is the chain value before
/// any step.
pub fn mmr_root(size: u64, peaks: &[Hash]) -> Hash {
    let mut h = keyed(MMR_ROOT);
    h.update(&size.to_le_bytes());
    for p in peaks {
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// The peaks after appending step hash `leaf` to an MMR of `size` leaves with `peaks`.
///
/// `peaks` should hold one entry per set bit of `size` (see [`mmr_peak_count`]); with
/// fewer, merging stops when they run out, so the result is merely wrong, never a panic.
pub fn mmr_append(size: u64, peaks: &[Hash], leaf: Hash) -> Vec<Hash> {
    let mut out = peaks.to_vec();
    let mut node = leaf;
    for _ in 0..size.trailing_ones() {
        match out.pop() {
            Some(left) => node = mmr_node(&left, &node),
            None => break,
        }
    }
    out.push(node);
    out
}

/// The chain value after appending `step_hash` to the MMR of `size_before` leaves with
/// `peaks_before`: `mmr_root(size_before + 1, mmr_append(size_before, peaks_before,
/// step_hash))`. A referee that has checked `mmr_root(size_before, peaks_before)`
/// against the agreed `c_{i-1}` uses this to recompute `c_i` from a re-executed step.
pub fn chain_after(size_before: u64, peaks_before: &[Hash], step_hash: Hash) -> Hash {
    let peaks = mmr_append(size_before, peaks_before, step_hash);
    mmr_root(size_before.saturating_add(1), &peaks)
}

/// How many peaks an MMR of `size` leaves has (the number of set bits of `size`).
pub fn mmr_peak_count(size: u64) -> usize {
    size.count_ones() as usize
}

/// The perfect subtree holding leaf `index` in an MMR of `size` leaves: its position in
/// the peak list, its height, and the index of its first leaf.
fn peak_of(size: u64, index: u64) -> Option<(usize, u32, u64)> {
    let mut start = 0u64;
    let mut pos = 0usize;
    for height in (0..64u32).rev() {
        if size >> height & 1 == 1 {
            let width = 1u64 << height;
            if index < start + width {
                return Some((pos, height, start));
            }
            start += width;
            pos += 1;
        }
    }
    None
}

/// Hashes of complete perfect subtrees by height: `nodes[l][m]` is the root over
/// leaves `m·2^l … (m+1)·2^l − 1`. Both an MMR and an RFC 6962 tree over the same
/// leaves are made of exactly these subtrees (the MMR's peaks are the maximal ones; the
/// RFC tree folds those peaks right to left), so one structure serves both, with O(1)
/// amortized work per leaf.
#[derive(Clone, Debug, Default)]
struct Levels {
    nodes: Vec<Vec<Hash>>,
    /// Leaves expected ([`Trace::with_capacity`]): each level is made with room for
    /// all of its nodes, so that no push reallocates one. A run's last pushes (its
    /// last steps and the output leaf) are on its critical path.
    room: usize,
}

/// Two structures are equal when they hold the same subtrees, whatever room they had.
impl PartialEq for Levels {
    fn eq(&self, other: &Levels) -> bool {
        self.nodes == other.nodes
    }
}

impl Eq for Levels {}

impl Levels {
    fn with_capacity(leaves: usize) -> Levels {
        Levels {
            nodes: Vec::with_capacity(usize::BITS as usize - leaves.leading_zeros() as usize),
            room: leaves,
        }
    }

    fn push(&mut self, leaf: Hash, node: fn(&Hash, &Hash) -> Hash) {
        let mut h = leaf;
        let mut l = 0;
        loop {
            if self.nodes.len() == l {
                self.nodes.push(Vec::with_capacity(self.room >> l));
            }
            let level = &mut self.nodes[l];
            level.push(h);
            let n = level.len();
            if n % 2 == 1 {
                return;
            }
            h = node(&level[n - 2], &level[n - 1]);
            l += 1;
        }
    }

    fn get(&self, height: u32, index: u64) -> Option<Hash> {
        let i = usize::try_from(index).ok()?;
        self.nodes.get(height as usize)?.get(i).copied()
    }

    /// The maximal perfect subtrees over the first `size` leaves, tallest first.
    fn peaks(&self, size: u64) -> Option<Vec<Hash>> {
        let mut out = Vec::with_capacity(mmr_peak_count(size));
        let mut start = 0u64;
        for height in (0..64u32).rev() {
            if size >> height & 1 == 1 {
                out.push(self.get(height, start >> height)?);
                start += 1u64 << height;
            }
        }
        Some(out)
    }

    /// [`mmr_root`] of the peaks over the first `size` leaves, fed to the hasher one by
    /// one rather than collected first.
    fn mmr_root(&self, size: u64) -> Option<Hash> {
        let mut h = keyed(MMR_ROOT);
        h.update(&size.to_le_bytes());
        let mut start = 0u64;
        for height in (0..64u32).rev() {
            if size >> height & 1 == 1 {
                h.update(self.get(height, start >> height)?.as_bytes());
                start += 1u64 << height;
            }
        }
        Some(h.finalize().into())
    }

    /// Siblings of leaf `index` inside its peak of the first `size` leaves, leaf first,
    /// and that peak's position among the peaks.
    fn path_in_peak(&self, size: u64, index: u64) -> Option<(Vec<Hash>, usize)> {
        let (pos, height, _) = peak_of(size, index)?;
        let path = (0..height)
            .map(|l| self.get(l, (index >> l) ^ 1))
            .collect::<Option<Vec<_>>>()?;
        Some((path, pos))
    }
}

/// A proof that a chain value is entry `index` of a trace of `len` steps with a given
/// root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepProof {
    /// The step index, 0-based.
    pub index: u64,
    /// The number of steps in the trace.
    pub len: u64,
    /// The claimed chain value `c_index`.
    pub chain_value: Hash,
    /// The RFC 6962 audit path, nearest sibling first.
    pub siblings: Vec<Hash>,
}

impl StepProof {
    /// Whether `chain_value` is entry `index` of a trace of `len` steps whose root is
    /// `root` (RFC 9162 §2.1.3.2, with this module's hashes).
    pub fn verify(&self, root: &Hash) -> bool {
        self.fold(|_| {})
            .is_some_and(|r| tree_root(self.len, Some(&r)) == *root)
    }

    /// The tree hash the audit path folds the chain value up to, each value on the
    /// way passed to `each`; `None` when the path does not fit the index and length.
    fn fold(&self, mut each: impl FnMut(&Hash)) -> Option<Hash> {
        if self.index >= self.len {
            return None;
        }
        let mut f = self.index;
        let mut s = self.len - 1;
        let mut r = self.chain_value;
        for p in &self.siblings {
            if s == 0 {
                return None;
            }
            if f & 1 == 1 || f == s {
                r = tree_node(p, &r);
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            } else {
                r = tree_node(&r, p);
            }
            f >>= 1;
            s >>= 1;
            each(&r);
        }
        (s == 0).then_some(r)
    }
}

/// A proof that step hash `h_index` is leaf `index` of the MMR of `size` leaves whose
/// root is a given chain value (`c_{size-1}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmrProof {
    /// The MMR's leaf count (`at + 1` for chain value `c_at`).
    pub size: u64,
    /// The leaf (step) index, 0-based.
    pub index: u64,
    /// Siblings inside the leaf's peak, nearest first; as many as the peak's height.
    pub siblings: Vec<Hash>,
    /// Every other peak, tallest first (the leaf's own peak is recomputed).
    pub other_peaks: Vec<Hash>,
}

impl MmrProof {
    /// Whether `leaf` is step hash number `index` under `chain_value`, the root of an
    /// MMR of `size` leaves.
    pub fn verify(&self, leaf: &Hash, chain_value: &Hash) -> bool {
        let Some((pos, height, _)) = peak_of(self.size, self.index) else {
            return false;
        };
        if self.siblings.len() != height as usize
            || self.other_peaks.len() + 1 != mmr_peak_count(self.size)
        {
            return false;
        }
        let mut node = *leaf;
        for (l, sib) in self.siblings.iter().enumerate() {
            node = if self.index >> l & 1 == 1 {
                mmr_node(sib, &node)
            } else {
                mmr_node(&node, sib)
            };
        }
        let mut peaks = self.other_peaks.clone();
        peaks.insert(pos, node);
        mmr_root(self.size, &peaks) == *chain_value
    }
}

/// An execution trace: the step hashes in canonical order, their chain values, and
/// enough structure to produce every proof in O(log n).
///
/// Serializes as its step hashes only (`{"steps": [...]}`); everything else is derived
/// again on deserialization, so a deserialized trace is always consistent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TraceRepr", into = "TraceRepr")]
pub struct Trace {
    steps: Vec<Hash>,
    chains: Vec<Hash>,
    mmr: Levels,
    tree: Levels,
}

#[derive(Serialize, Deserialize)]
struct TraceRepr {
    steps: Vec<Hash>,
}

impl From<TraceRepr> for Trace {
    fn from(r: TraceRepr) -> Self {
        Trace::new(r.steps)
    }
}

impl From<Trace> for TraceRepr {
    fn from(t: Trace) -> Self {
        TraceRepr { steps: t.steps }
    }
}

impl Trace {
    /// The trace of the given step hashes, in order.
    pub fn new(steps: Vec<Hash>) -> Trace {
        let mut t = Trace::with_capacity(steps.len());
        for h in steps {
            t.push(h);
        }
        t
    }

    /// An empty trace with room for `steps` step hashes: pushing that many allocates
    /// nothing more.
    pub fn with_capacity(steps: usize) -> Trace {
        Trace {
            steps: Vec::with_capacity(steps),
            chains: Vec::with_capacity(steps),
            mmr: Levels::with_capacity(steps),
            tree: Levels::with_capacity(steps),
        }
    }

    /// Appends the next step's hash (O(log n), O(1) amortized hashing).
    pub fn push(&mut self, step_hash: Hash) {
        self.steps.push(step_hash);
        self.mmr.push(step_hash, mmr_node);
        let size = self.steps.len() as u64;
        // The levels hold every peak of the current size by construction.
        let c = self
            .mmr
            .mmr_root(size)
            .unwrap_or_else(|| mmr_root(size, &[]));
        self.chains.push(c);
        self.tree.push(c, tree_node);
    }

    /// The number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether no step has been recorded.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// All step hashes, in order.
    pub fn step_hashes(&self) -> &[Hash] {
        &self.steps
    }

    /// Step hash `h_i`.
    pub fn step_hash(&self, i: usize) -> Option<Hash> {
        self.steps.get(i).copied()
    }

    /// Chain value `c_i`.
    pub fn chain_value(&self, i: usize) -> Option<Hash> {
        self.chains.get(i).copied()
    }

    /// Chain value `c_{i-1}`, the commitment to everything before step `i`
    /// (`mmr_root(0, &[])` for `i = 0`); defined for `i ≤ len`.
    pub fn chain_before(&self, i: usize) -> Option<Hash> {
        match i.checked_sub(1) {
            None => Some(mmr_root(0, &[])),
            Some(j) => self.chain_value(j),
        }
    }

    /// The trace root: binds the step count and every chain value.
    pub fn root(&self) -> Hash {
        let n = self.chains.len() as u64;
        let peaks = self.tree.peaks(n).unwrap_or_default();
        let mth = peaks.into_iter().rev().reduce(|acc, p| tree_node(&p, &acc));
        tree_root(n, mth.as_ref())
    }

    /// A proof of `c_i` against [`Trace::root`]; `None` if `i ≥ len`.
    pub fn step_proof(&self, i: usize) -> Option<StepProof> {
        let chain_value = self.chain_value(i)?;
        let len = self.chains.len() as u64;
        let index = i as u64;
        let (mut siblings, pos) = self.tree.path_in_peak(len, index)?;
        let peaks = self.tree.peaks(len)?;
        // RFC 6962 order above the peak: first everything to the right folded into one
        // subtree, then each peak to the left, nearest first.
        if let Some(right) = peaks
            .get(pos + 1..)
            .unwrap_or(&[])
            .iter()
            .rev()
            .copied()
            .reduce(|acc, p| tree_node(&p, &acc))
        {
            siblings.push(right);
        }
        siblings.extend(peaks.get(..pos).unwrap_or(&[]).iter().rev().copied());
        Some(StepProof {
            index,
            len,
            chain_value,
            siblings,
        })
    }

    /// The MMR peaks over `h_0 … h_{i-1}`, tallest first: with [`chain_after`] they
    /// recompute `c_i` from a re-executed step; defined for `i ≤ len`.
    pub fn peaks_before(&self, i: usize) -> Option<Vec<Hash>> {
        if i > self.steps.len() {
            return None;
        }
        self.mmr.peaks(i as u64)
    }

    /// A proof of step hash `h_j` under chain value `c_at`; `None` unless
    /// `j ≤ at < len`.
    pub fn input_proof(&self, at: usize, j: usize) -> Option<MmrProof> {
        if j > at || at >= self.steps.len() {
            return None;
        }
        let size = at as u64 + 1;
        let index = j as u64;
        let (siblings, pos) = self.mmr.path_in_peak(size, index)?;
        let mut other_peaks = self.mmr.peaks(size)?;
        other_peaks.remove(pos);
        Some(MmrProof {
            size,
            index,
            siblings,
            other_peaks,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hashes(n: usize, seed: u64) -> Vec<Hash> {
        (0..n as u64)
            .map(|i| {
                Hash::domain(
                    "deed trace test leaves",
                    &[&seed.to_le_bytes(), &i.to_le_bytes()],
                )
            })
            .collect()
    }

    /// RFC 6962 §2.1 read literally, as an independent reference for the tree root.
    fn mth_reference(leaves: &[Hash]) -> Option<Hash> {
        match leaves.len() {
            0 => None,
            1 => Some(leaves[0]),
            n => {
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                let l = mth_reference(&leaves[..k])?;
                let r = mth_reference(&leaves[k..])?;
                Some(tree_node(&l, &r))
            }
        }
    }

    /// An MMR computed from scratch by repeated `mmr_append`, as reference for the
    /// incremental structure.
    fn mmr_reference(steps: &[Hash]) -> (Vec<Hash>, Vec<Hash>) {
        let mut peaks = Vec::new();
        let mut chains = Vec::new();
        for (i, h) in steps.iter().enumerate() {
            chains.push(chain_after(i as u64, &peaks, *h));
            peaks = mmr_append(i as u64, &peaks, *h);
        }
        (peaks, chains)
    }

    fn flip(h: &Hash) -> Hash {
        let mut b = h.0;
        b[7] ^= 0x10;
        Hash(b)
    }

    fn ceil_log2(n: u64) -> usize {
        if n <= 1 {
            0
        } else {
            (u64::BITS - (n - 1).leading_zeros()) as usize
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn chain_values_match_mmr_functions(n in 0usize..200, seed in any::<u64>()) {
            let steps = hashes(n, seed);
            let t = Trace::new(steps.clone());
            let (peaks, chains) = mmr_reference(&steps);
            prop_assert_eq!(t.peaks_before(n), Some(peaks));
            prop_assert_eq!(&t.chains, &chains);
            prop_assert_eq!(t.chain_before(0), Some(mmr_root(0, &[])));
            for (i, h) in steps.iter().enumerate() {
                let before = t.peaks_before(i).unwrap();
                prop_assert_eq!(before.len(), mmr_peak_count(i as u64));
                prop_assert_eq!(Some(chain_after(i as u64, &before, *h)), t.chain_value(i));
                prop_assert_eq!(Some(mmr_root(i as u64, &before)), t.chain_before(i));
                // A different step hash moves the chain value.
                prop_assert_ne!(Some(chain_after(i as u64, &before, flip(h))), t.chain_value(i));
            }
            prop_assert_eq!(t.peaks_before(n + 1), None);
            prop_assert_eq!(t.chain_before(n + 1), None);
        }

        #[test]
        fn root_is_rfc6962_over_chain_values(n in 0usize..200, seed in any::<u64>()) {
            let t = Trace::new(hashes(n, seed));
            prop_assert_eq!(t.root(), tree_root(n as u64, mth_reference(&t.chains).as_ref()));
        }

        #[test]
        fn incremental_equals_batch(n in 0usize..200, seed in any::<u64>()) {
            let steps = hashes(n, seed);
            let mut t = Trace::default();
            for (i, h) in steps.iter().enumerate() {
                // The root after each push commits to the prefix so far.
                prop_assert_eq!(t.root(), Trace::new(steps[..i].to_vec()).root());
                t.push(*h);
            }
            prop_assert_eq!(&t, &Trace::new(steps));
        }

        #[test]
        fn step_proofs_verify_and_reject_tampering(n in 0usize..200, seed in any::<u64>()) {
            let t = Trace::new(hashes(n, seed));
            let root = t.root();
            prop_assert!(t.step_proof(n).is_none());
            for i in 0..n {
                let p = t.step_proof(i).unwrap();
                prop_assert!(p.verify(&root));
                prop_assert!(p.siblings.len() <= ceil_log2(n as u64));
                prop_assert!(!p.verify(&flip(&root)));
                prop_assert!(!StepProof { chain_value: flip(&p.chain_value), ..p.clone() }.verify(&root), "tampered proof verified");
                if n > 1 {
                    let other = (i + 1) % n;
                    prop_assert!(!StepProof { index: other as u64, ..p.clone() }.verify(&root), "tampered proof verified");
                }
                prop_assert!(!StepProof { index: n as u64, ..p.clone() }.verify(&root), "tampered proof verified");
                prop_assert!(!StepProof { len: n as u64 + 1, ..p.clone() }.verify(&root), "tampered proof verified");
                for s in 0..p.siblings.len() {
                    let mut q = p.clone();
                    q.siblings[s] = flip(&q.siblings[s]);
                    prop_assert!(!q.verify(&root));
                }
                let mut q = p.clone();
                q.siblings.push(root);
                prop_assert!(!q.verify(&root));
                if !p.siblings.is_empty() {
                    let mut q = p.clone();
                    q.siblings.pop();
                    prop_assert!(!q.verify(&root));
                }
                // A proof for another position's value under this index must fail.
                if n > 1 {
                    let cv = t.chain_value((i + 1) % n).unwrap();
                    prop_assert!(!StepProof { chain_value: cv, ..p.clone() }.verify(&root), "tampered proof verified");
                }
            }
        }
    }

    proptest! {
        // Every (at, j) pair is checked, so each case already covers ~n²/2 proofs.
        #![proptest_config(ProptestConfig::with_cases(8))]

        #[test]
        fn input_proofs_verify_and_reject_tampering(n in 0usize..200, seed in any::<u64>()) {
            let steps = hashes(n, seed);
            let t = Trace::new(steps.clone());
            for at in 0..n {
                let c = t.chain_value(at).unwrap();
                prop_assert!(t.input_proof(at, at + 1).is_none());
                for j in 0..=at {
                    let p = t.input_proof(at, j).unwrap();
                    prop_assert!(p.verify(&steps[j], &c));
                    prop_assert!(p.siblings.len() + p.other_peaks.len() <= 2 * ceil_log2(at as u64 + 1));
                    prop_assert!(!p.verify(&flip(&steps[j]), &c));
                    prop_assert!(!p.verify(&steps[j], &flip(&c)));
                    if j < at {
                        // The same proof cannot pass off a neighbour's step hash.
                        prop_assert!(!p.verify(&steps[j + 1], &c));
                    }
                    let w = (j + 1) % (at + 1);
                    if w != j {
                        prop_assert!(!MmrProof { index: w as u64, ..p.clone() }.verify(&steps[j], &c), "tampered proof verified");
                    }
                    prop_assert!(!MmrProof { size: p.size + 1, ..p.clone() }.verify(&steps[j], &c), "tampered proof verified");
                    if let Some(s) = p.siblings.first() {
                        let mut q = p.clone();
                        q.siblings[0] = flip(s);
                        prop_assert!(!q.verify(&steps[j], &c));
                    }
                    if let Some(s) = p.other_peaks.last() {
                        let mut q = p.clone();
                        let k = q.other_peaks.len() - 1;
                        q.other_peaks[k] = flip(s);
                        prop_assert!(!q.verify(&steps[j], &c));
                    }
                }
            }
            prop_assert!(t.input_proof(n, 0).is_none());
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn serde_round_trip(n in 0usize..64, seed in any::<u64>()) {
            let t = Trace::new(hashes(n, seed));
            let json = serde_json::to_string(&t).unwrap();
            let back: Trace = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &t);
            if n > 0 {
                let sp = t.step_proof(n / 2).unwrap();
                let back: StepProof = serde_json::from_str(&serde_json::to_string(&sp).unwrap()).unwrap();
                prop_assert_eq!(back, sp);
                let mp = t.input_proof(n - 1, n / 3).unwrap();
                let back: MmrProof = serde_json::from_str(&serde_json::to_string(&mp).unwrap()).unwrap();
                prop_assert_eq!(back, mp);
            }
        }
    }

    /// Version 2 puts step hashes and chain values into their trees as they are, so an
    /// inner node is a hash like any leaf. It still never passes for one: a proof's
    /// path length follows from its index and its size, which the roots bind. Every
    /// inner node on an honest path, offered as the leaf of every index with the rest
    /// of that path or the whole of it, is refused.
    #[test]
    fn an_inner_node_never_passes_for_a_leaf() {
        for n in 1..24usize {
            let t = Trace::new(hashes(n, n as u64));
            for at in 0..n {
                let c = t.chain_value(at).unwrap();
                for j in 0..=at {
                    let honest = t.input_proof(at, j).unwrap();
                    assert!(honest.verify(&t.step_hashes()[j], &c));
                    let mut node = t.step_hashes()[j];
                    for (l, sib) in honest.siblings.iter().enumerate() {
                        node = if (j as u64) >> l & 1 == 1 {
                            mmr_node(sib, &node)
                        } else {
                            mmr_node(&node, sib)
                        };
                        for index in 0..=at as u64 {
                            for siblings in [&honest.siblings[l + 1..], &honest.siblings[..]] {
                                let forged = MmrProof {
                                    index,
                                    siblings: siblings.to_vec(),
                                    ..honest.clone()
                                };
                                assert!(!forged.verify(&node, &c), "n {n} at {at} leaf {j}");
                            }
                        }
                    }
                }
            }
            let root = t.root();
            for i in 0..n {
                let honest = t.step_proof(i).unwrap();
                assert!(honest.verify(&root));
                let mut values = Vec::new();
                honest.fold(|r| values.push(*r)).unwrap();
                // The last value is the whole tree's hash, not an inner node.
                for (k, &inner) in values
                    .iter()
                    .enumerate()
                    .take(values.len().saturating_sub(1))
                {
                    for index in 0..n as u64 {
                        for siblings in [&honest.siblings[k + 1..], &honest.siblings[..]] {
                            let forged = StepProof {
                                index,
                                len: n as u64,
                                chain_value: inner,
                                siblings: siblings.to_vec(),
                            };
                            assert!(!forged.verify(&root), "n {n} step {i}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn step_hash_binds_index_count_and_contents() {
        let a = Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
        let b = Tensor::from_vec(vec![2], vec![1.0f32, 2.5]).unwrap();
        let a_i = Tensor::from_vec(vec![2], vec![1i32, 2]).unwrap();
        let h = step_hash(3, &[&a]);
        assert_ne!(h, step_hash(4, &[&a]));
        assert_ne!(h, step_hash(3, &[&b]));
        assert_ne!(h, step_hash(3, &[&a_i]));
        assert_ne!(h, step_hash(3, &[&a, &a]));
        assert_ne!(step_hash(3, &[]), step_hash(4, &[]));
        // The documented bytes, assembled by hand.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(&a.encode());
        bytes.extend_from_slice(&b.encode());
        assert_eq!(step_hash(3, &[&a, &b]), Hash::domain(STEP, &[&bytes]));
    }

    #[test]
    fn outputs_hash_is_the_hash_of_the_list_encoding() {
        let lists = [
            vec![],
            vec![Tensor::from_vec(
                vec![2, 3],
                (0..6).map(|i| i as f32 * 0.25).collect::<Vec<_>>(),
            )
            .unwrap()],
            vec![
                Tensor::from_vec(
                    vec![70_000],
                    (0..70_000).map(|i| i as i64).collect::<Vec<_>>(),
                )
                .unwrap(),
                Tensor::scalar(true),
                Tensor::from_vec(vec![2], vec!["a".to_string(), "bcd".to_string()]).unwrap(),
                Tensor::from_vec(vec![0, 4], Vec::<u8>::new()).unwrap(),
            ],
        ];
        for list in lists {
            assert_eq!(
                outputs_hash(&list),
                Hash::of(&deed_types::encode_list(&list))
            );
        }
    }

    #[test]
    fn cached_hashers_equal_fresh_derivation() {
        for ctx in [STEP, MMR_NODE, MMR_ROOT, TREE_NODE, TREE_ROOT, OUTPUT] {
            for _ in 0..2 {
                assert_eq!(domain(ctx, &[b"ab", b"c"]), Hash::domain(ctx, &[b"abc"]));
            }
        }
    }

    #[test]
    fn empty_trace_root_binds_zero_length() {
        let t = Trace::default();
        assert_eq!(t.root(), Hash::domain(TREE_ROOT, &[&0u64.to_le_bytes()]));
        assert_ne!(t.root(), Trace::new(hashes(1, 0)).root());
        assert_eq!(
            mmr_root(0, &[]),
            Hash::domain(MMR_ROOT, &[&0u64.to_le_bytes()])
        );
    }

    #[test]
    fn malformed_mmr_inputs_do_not_panic() {
        let h = hashes(3, 9);
        // Fewer peaks than the size says: a meaningless but total result.
        let p = mmr_append(7, &h[..1], h[2]);
        assert_eq!(p.len(), 1);
        let _ = chain_after(u64::MAX, &h, h[0]);
        let bogus = MmrProof {
            size: 0,
            index: 0,
            siblings: vec![],
            other_peaks: vec![],
        };
        assert!(!bogus.verify(&h[0], &mmr_root(0, &[])));
        let bogus = MmrProof {
            size: u64::MAX,
            index: u64::MAX - 1,
            siblings: vec![],
            other_peaks: vec![],
        };
        assert!(!bogus.verify(&h[0], &h[1]));
        let bogus = StepProof {
            index: 0,
            len: 0,
            chain_value: h[0],
            siblings: vec![],
        };
        assert!(!bogus.verify(&Trace::default().root()));
        let bogus = StepProof {
            index: 0,
            len: u64::MAX,
            chain_value: h[0],
            siblings: h.clone(),
        };
        assert!(!bogus.verify(&h[1]));
    }
}
