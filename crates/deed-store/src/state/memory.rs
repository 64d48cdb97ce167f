//! The in-memory [`StateStore`], for tests and ephemeral nodes.

use std::collections::BTreeMap;

use super::{next_height, Commit, Entry, Head, StateStore, StoreError};

/// A [`StateStore`] held in memory. Nothing survives the process.
#[derive(Clone, Debug, Default)]
pub struct MemoryStateStore {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    blocks: BTreeMap<u64, (Head, Vec<u8>)>,
    local: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn apply(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, writes: Vec<super::Write>) {
    for (key, value) in writes {
        match value {
            Some(v) => {
                map.insert(key, v);
            }
            None => {
                map.remove(&key);
            }
        }
    }
}

fn prefixed(map: &BTreeMap<Vec<u8>, Vec<u8>>, prefix: &[u8]) -> Vec<Entry> {
    map.range(prefix.to_vec()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
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
        apply(&mut self.state, commit.writes);
        apply(&mut self.local, commit.local);
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
        Ok(prefixed(&self.state, prefix))
    }

    fn block(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.blocks.get(&height).map(|(_, block)| block.clone()))
    }

    fn put_local(&mut self, writes: Vec<super::Write>) -> Result<(), StoreError> {
        apply(&mut self.local, writes);
        Ok(())
    }

    fn local_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        Ok(prefixed(&self.local, prefix))
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
