//! The in-memory [`StateStore`], for tests and ephemeral nodes.

use std::collections::BTreeMap;

use super::{next_height, Commit, Entry, Head, StateStore, StoreError};

/// A [`StateStore`] held in memory. Nothing survives the process.
#[derive(Clone, Debug, Default)]
pub struct MemoryStateStore {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    blocks: BTreeMap<u64, (Head, Vec<u8>)>,
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl StateStore for MemoryStateStore {
    fn commit(&mut self, commit: Commit) -> Result<(), StoreError> {
        let expected = next_height(self.blocks.last_key_value().map(|(h, _)| *h))?;
        if commit.height != expected {
            return Err(StoreError::HeightGap {
                expected,
                got: commit.height,
            });
        }
        // Validation is complete before the first mutation, and nothing below can
        // fail, so the commit is all-or-nothing.
        for (key, value) in commit.writes {
            match value {
                Some(v) => {
                    self.state.insert(key, v);
                }
                None => {
                    self.state.remove(&key);
                }
            }
        }
        let head = Head {
            height: commit.height,
            block_hash: commit.block_hash,
            state_root: commit.state_root,
        };
        self.blocks.insert(commit.height, (head, commit.block));
        Ok(())
    }

    fn latest(&self) -> Result<Option<Head>, StoreError> {
        Ok(self.blocks.last_key_value().map(|(_, (head, _))| *head))
    }

    fn head_at(&self, height: u64) -> Result<Option<Head>, StoreError> {
        Ok(self.blocks.get(&height).map(|(head, _)| *head))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state.get(key).cloned())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .state
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn block(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.blocks.get(&height).map(|(_, block)| block.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        super::super::conformance::suite(MemoryStateStore::new);
    }
}
