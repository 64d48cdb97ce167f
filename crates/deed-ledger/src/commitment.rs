//! The state root: a sparse Merkle tree (the `sparse-merkle-tree` crate, 256-bit
//! paths) over the state's key/value pairs, hashed with blake3.
//!
//! A pair `(key, value)` sits at path `blake3("deed 2026 smt path", key)` with leaf
//! hash `blake3("deed 2026 smt leaf", len(key) ‖ key ‖ value)`; an absent key has the
//! zero leaf. The root therefore depends only on the set of pairs — not on insertion
//! order, machine or history — and a [`StateProof`] proves a key's value (or its
//! absence) against a root.

use deed_types::Hash;
use sparse_merkle_tree::default_store::DefaultStore;
use sparse_merkle_tree::traits::Hasher;
use sparse_merkle_tree::{CompiledMerkleProof, SparseMerkleTree, H256};

/// blake3 in the shape the tree wants, keyed by a purpose label so tree nodes can
/// never be confused with other Deed hashes.
pub struct Blake3Node(blake3::Hasher);

impl Default for Blake3Node {
    fn default() -> Self {
        // Deriving the key hashes the context string; every node hash would pay for
        // it again, so the keyed hasher is made once and copied.
        static NODE: std::sync::OnceLock<blake3::Hasher> = std::sync::OnceLock::new();
        Blake3Node(
            NODE.get_or_init(|| blake3::Hasher::new_derive_key("deed 2026 smt node"))
                .clone(),
        )
    }
}

impl Hasher for Blake3Node {
    fn write_h256(&mut self, h: &H256) {
        self.0.update(h.as_slice());
    }
    fn write_byte(&mut self, b: u8) {
        self.0.update(&[b]);
    }
    fn finish(self) -> H256 {
        H256::from(*self.0.finalize().as_bytes())
    }
}

type Tree = SparseMerkleTree<Blake3Node, H256, DefaultStore<H256>>;

fn path(key: &[u8]) -> H256 {
    H256::from(*Hash::domain("deed 2026 smt path", &[key]).as_bytes())
}

fn leaf(key: &[u8], value: Option<&[u8]>) -> H256 {
    match value {
        None => H256::zero(),
        Some(v) => H256::from(
            *Hash::domain(
                "deed 2026 smt leaf",
                &[&(key.len() as u64).to_le_bytes(), key, v],
            )
            .as_bytes(),
        ),
    }
}

/// Why the commitment could not be updated or a proof made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitmentError {
    /// The tree reported an internal inconsistency.
    #[error("state tree error: {0}")]
    Tree(String),
}

/// The authenticated commitment over the state's key/value pairs.
#[derive(Default)]
pub struct Commitment {
    tree: Tree,
}

impl std::fmt::Debug for Commitment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Commitment({})", self.root())
    }
}

impl Clone for Commitment {
    fn clone(&self) -> Self {
        let store = self.tree.store().clone();
        Commitment {
            tree: Tree::new(*self.tree.root(), store),
        }
    }
}

impl Commitment {
    /// The root. The empty state's root is all zeros.
    pub fn root(&self) -> Hash {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.tree.root().as_slice());
        Hash(out)
    }

    /// Applies writes (`None` deletes).
    pub fn apply(
        &mut self,
        writes: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<Hash, CommitmentError> {
        if writes.is_empty() {
            return Ok(self.root());
        }
        let leaves = writes
            .iter()
            .map(|(k, v)| (path(k), leaf(k, v.as_deref())))
            .collect();
        self.tree
            .update_all(leaves)
            .map_err(|e| CommitmentError::Tree(e.to_string()))?;
        Ok(self.root())
    }

    /// A proof of `key`'s current `value` (`None`: absent).
    pub fn prove(&self, key: &[u8], value: Option<Vec<u8>>) -> Result<StateProof, CommitmentError> {
        let p = path(key);
        let proof = self
            .tree
            .merkle_proof(vec![p])
            .and_then(|mp| mp.compile(vec![p]))
            .map_err(|e| CommitmentError::Tree(e.to_string()))?;
        Ok(StateProof {
            key: key.to_vec(),
            value,
            proof: proof.0,
        })
    }
}

/// A key's value (or absence) with a compiled sparse-Merkle proof.
#[derive(Clone, Debug, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize)]
pub struct StateProof {
    /// The state key.
    pub key: Vec<u8>,
    /// Its value; `None` proves absence.
    pub value: Option<Vec<u8>>,
    /// The compiled proof bytes.
    pub proof: Vec<u8>,
}

impl StateProof {
    /// True when the proof shows `key ↦ value` under `root`.
    pub fn verify(&self, root: &Hash) -> bool {
        let p = path(&self.key);
        let l = leaf(&self.key, self.value.as_deref());
        CompiledMerkleProof(self.proof.clone())
            .verify::<Blake3Node>(&H256::from(root.0), vec![(p, l)])
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn root_is_order_independent_and_proofs_verify(
            pairs in prop::collection::btree_map(prop::collection::vec(any::<u8>(), 1..8), prop::collection::vec(any::<u8>(), 0..8), 1..20),
            absent in prop::collection::vec(any::<u8>(), 9..12),
        ) {
            let writes: Vec<_> = pairs.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
            let mut a = Commitment::default();
            a.apply(&writes).unwrap();
            let mut b = Commitment::default();
            for w in writes.iter().rev() {
                b.apply(std::slice::from_ref(w)).unwrap();
            }
            prop_assert_eq!(a.root(), b.root());
            let (k, v) = pairs.iter().next().unwrap();
            let proof = a.prove(k, Some(v.clone())).unwrap();
            prop_assert!(proof.verify(&a.root()));
            let mut forged = proof.clone();
            forged.value = Some(vec![0xff; 9]);
            prop_assert!(!forged.verify(&a.root()));
            let none = a.prove(&absent, None).unwrap();
            prop_assert!(none.verify(&a.root()));
            // Deleting every key gives back the empty root.
            let deletes: Vec<_> = pairs.keys().map(|k| (k.clone(), None)).collect();
            a.apply(&deletes).unwrap();
            prop_assert_eq!(a.root(), Hash::ZERO);
        }
    }
}
