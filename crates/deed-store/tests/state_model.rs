//! Property test: any sequence of commits (and refused out-of-sequence commits)
//! leaves every state store exactly where a `BTreeMap` model says it should be.

use std::collections::BTreeMap;

use deed_store::state::Write;
use deed_store::{Commit, MemoryStateStore, RedbStateStore, StateStore, StoreError};
use deed_types::Hash;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    /// Commit these writes at the next height.
    Commit(Vec<Write>),
    /// Try to commit at the next height plus this offset (never 0): must be refused.
    Gap(u64),
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // A small alphabet so that keys collide, share prefixes and get overwritten.
    proptest::collection::vec(
        prop_oneof![Just(0u8), Just(1u8), Just(b'a'), Just(0xff)],
        0..4,
    )
}

fn write() -> impl Strategy<Value = Write> {
    (
        key(),
        proptest::option::weighted(0.7, proptest::collection::vec(any::<u8>(), 0..24)),
    )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => proptest::collection::vec(write(), 0..8).prop_map(Step::Commit),
        1 => (1u64..4).prop_map(Step::Gap),
    ]
}

fn commit(height: u64, writes: Vec<Write>) -> Commit {
    Commit {
        height,
        block_hash: Hash::domain("model block", &[&height.to_le_bytes()]),
        block: height.to_be_bytes().to_vec(),
        state_root: Hash::domain("model root", &[&height.to_le_bytes()]),
        writes,
        local: Vec::new(),
    }
}

fn check<S: StateStore>(store: &mut S, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut next = 0u64;
    for step in steps {
        match step {
            Step::Commit(writes) => {
                for (k, v) in &writes {
                    match v {
                        Some(v) => model.insert(k.clone(), v.clone()),
                        None => model.remove(k),
                    };
                }
                store
                    .commit(commit(next, writes))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                next += 1;
            }
            Step::Gap(offset) => {
                let refused = store.commit(commit(next + offset, vec![(vec![9], Some(vec![9]))]));
                let is_gap = matches!(refused, Err(StoreError::HeightGap { expected, .. }) if expected == next);
                prop_assert!(is_gap, "{:?}", refused);
            }
        }
        let all: Vec<(Vec<u8>, Vec<u8>)> =
            model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        prop_assert_eq!(store.iter().expect("iter"), all);
        for prefix in [&[][..], &[0u8][..], &[b'a'][..], &[0xff, 0xff][..]] {
            let expected: Vec<(Vec<u8>, Vec<u8>)> = model
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            prop_assert_eq!(store.scan_prefix(prefix).expect("scan"), expected);
        }
        for k in [vec![], vec![0u8], vec![b'a', 1], vec![9]] {
            prop_assert_eq!(store.get(&k).expect("get"), model.get(&k).cloned());
        }
        let head = store.latest().expect("latest");
        prop_assert_eq!(head.map(|h| h.height), next.checked_sub(1));
        if let Some(h) = head {
            prop_assert_eq!(h, store.head_at(h.height).expect("head_at").expect("head"));
            prop_assert_eq!(
                store.block(h.height).expect("block"),
                Some(h.height.to_be_bytes().to_vec())
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn memory_store_matches_model(steps in proptest::collection::vec(step(), 0..20)) {
        check(&mut MemoryStateStore::new(), steps)?;
    }
}

proptest! {
    // Every redb commit is synced to disk, so fewer and shorter cases.
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn redb_store_matches_model(steps in proptest::collection::vec(step(), 0..10)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        let mut store = RedbStateStore::open(&path).expect("open");
        check(&mut store, steps.clone())?;
        // And the same content after a reopen.
        let before = store.iter().expect("iter");
        let head = store.latest().expect("latest");
        drop(store);
        let reopened = RedbStateStore::open(&path).expect("reopen");
        prop_assert_eq!(reopened.iter().expect("iter"), before);
        prop_assert_eq!(reopened.latest().expect("latest"), head);
    }
}
