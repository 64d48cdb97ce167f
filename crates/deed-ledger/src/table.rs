//! A journaled ordered map: the building block of the ledger state.
//!
//! Every write records the previous value so that a failed transaction can be
//! rolled back exactly (all-or-nothing), and every written key is remembered as
//! dirty so the block can update the state commitment and report its writes
//! without rescanning the state.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeBounds;

/// An ordered map with an undo journal and a dirty-key set.
#[derive(Clone, Debug)]
pub(crate) struct Table<K: Ord + Clone, V: Clone> {
    map: BTreeMap<K, V>,
    journal: Vec<(K, Option<V>)>,
    dirty: BTreeSet<K>,
}

impl<K: Ord + Clone, V: Clone> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            map: BTreeMap::new(),
            journal: Vec::new(),
            dirty: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone, V: Clone> Table<K, V> {
    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    pub(crate) fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    pub(crate) fn insert(&mut self, k: K, v: V) {
        let old = self.map.insert(k.clone(), v);
        self.journal.push((k.clone(), old));
        self.dirty.insert(k);
    }

    pub(crate) fn remove(&mut self, k: &K) -> Option<V> {
        let old = self.map.remove(k);
        if old.is_some() {
            self.journal.push((k.clone(), old.clone()));
            self.dirty.insert(k.clone());
        }
        old
    }

    pub(crate) fn range<R: RangeBounds<K>>(
        &self,
        r: R,
    ) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.map.range(r)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Position in the journal to roll back to.
    pub(crate) fn mark(&self) -> usize {
        self.journal.len()
    }

    /// Undoes every write after `mark`, newest first.
    pub(crate) fn rollback(&mut self, mark: usize) {
        while self.journal.len() > mark {
            if let Some((k, old)) = self.journal.pop() {
                match old {
                    Some(v) => {
                        self.map.insert(k, v);
                    }
                    None => {
                        self.map.remove(&k);
                    }
                }
            }
        }
    }

    /// Forgets the journal (the writes are final).
    pub(crate) fn settle(&mut self) {
        self.journal.clear();
    }

    /// Takes the keys written since the last call, with their current values.
    pub(crate) fn take_dirty(&mut self) -> Vec<(K, Option<V>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|k| {
                let v = self.map.get(&k).cloned();
                (k, v)
            })
            .collect()
    }

    /// Loads an entry without journaling or marking it dirty (rebuilding from storage).
    pub(crate) fn load(&mut self, k: K, v: V) {
        self.map.insert(k, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_restores_exactly() {
        let mut t: Table<u8, u32> = Table::default();
        t.insert(1, 10);
        t.settle();
        let m = t.mark();
        t.insert(1, 11);
        t.insert(2, 20);
        t.remove(&1);
        t.rollback(m);
        assert_eq!(t.get(&1), Some(&10));
        assert_eq!(t.get(&2), None);
        assert_eq!(t.len(), 1);
    }
}
