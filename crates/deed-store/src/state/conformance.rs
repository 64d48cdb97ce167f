//! The behaviour every [`StateStore`] must show, as one suite that any implementation
//! (in this crate or elsewhere) runs with `suite(|| make_a_fresh_store())`.
//!
//! The suite panics with a message naming the broken rule, like a test does.

use deed_types::Hash;

use super::{Commit, Head, StateStore, StoreError, Write};

/// Runs every check against fresh stores produced by `make`. Each check calls `make`
/// once and expects an empty store.
pub fn suite<S: StateStore>(make: impl Fn() -> S) {
    empty_store(make());
    first_commit_is_height_zero(make());
    writes_overwrites_and_deletes(make());
    last_write_to_a_key_wins(make());
    empty_keys_and_values(make());
    height_gaps_and_replays_change_nothing(make());
    scan_is_sorted_and_respects_prefix_bounds(make());
    blocks_and_heads_by_height(make());
    large_values(make());
    local_records_stay_beside_the_state(make());
}

fn local_records_stay_beside_the_state<S: StateStore>(mut s: S) {
    s.put_local(vec![
        set(b"served/1", b"a"),
        set(b"served/2", b"b"),
        set(b"other", b"c"),
    ])
    .expect("put_local");
    commit_ok(&mut s, sample_commit(0, vec![set(b"k", b"v")]));
    assert_eq!(
        s.local_prefix(b"served/").expect("local"),
        pairs(&[(b"served/1", b"a"), (b"served/2", b"b")]),
        "local records are read by prefix, sorted"
    );
    assert_eq!(
        s.iter().expect("iter"),
        pairs(&[(b"k", b"v")]),
        "local records are not state"
    );
    assert_eq!(s.get(b"other").expect("get"), None);
    // A commit carries local writes in the same atomic step...
    let mut c = sample_commit(1, vec![set(b"k2", b"v2")]);
    c.local = vec![del(b"served/1"), set(b"served/3", b"d")];
    commit_ok(&mut s, c);
    assert_eq!(
        s.local_prefix(b"served/").expect("local"),
        pairs(&[(b"served/2", b"b"), (b"served/3", b"d")])
    );
    // ...and a refused commit changes none of them.
    let mut gap = sample_commit(5, vec![]);
    gap.local = vec![del(b"served/2")];
    assert!(matches!(s.commit(gap), Err(StoreError::HeightGap { .. })));
    assert_eq!(s.local_prefix(b"served/").expect("local").len(), 2);
    s.put_local(vec![del(b"served/2"), del(b"served/3"), del(b"absent")])
        .expect("delete");
    assert!(s.local_prefix(b"served/").expect("local").is_empty());
    assert_eq!(
        s.local_prefix(b"").expect("local"),
        pairs(&[(b"other", b"c")])
    );
}

/// A commit at `height` whose block, hash and root are derived from the height.
pub fn sample_commit(height: u64, writes: Vec<Write>) -> Commit {
    let h = height.to_le_bytes();
    Commit {
        height,
        block_hash: Hash::domain("deed-store conformance block", &[&h]),
        block: [b"block-".as_slice(), &h].concat(),
        state_root: Hash::domain("deed-store conformance root", &[&h]),
        writes,
        local: Vec::new(),
    }
}

fn set(k: &[u8], v: &[u8]) -> Write {
    (k.to_vec(), Some(v.to_vec()))
}

fn del(k: &[u8]) -> Write {
    (k.to_vec(), None)
}

fn pairs(items: &[(&[u8], &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
    items
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn head_of(c: &Commit) -> Head {
    Head {
        height: c.height,
        block_hash: c.block_hash,
        state_root: c.state_root,
    }
}

fn commit_ok<S: StateStore>(s: &mut S, c: Commit) {
    let h = c.height;
    if let Err(e) = s.commit(c) {
        panic!("commit at height {h} failed: {e}");
    }
}

fn empty_store<S: StateStore>(s: S) {
    assert_eq!(s.latest().expect("latest"), None, "a new store has no head");
    assert_eq!(s.get(b"k").expect("get"), None);
    assert!(s.iter().expect("iter").is_empty(), "a new store is empty");
    assert_eq!(s.block(0).expect("block"), None);
    assert_eq!(s.head_at(0).expect("head_at"), None);
}

fn first_commit_is_height_zero<S: StateStore>(mut s: S) {
    let err = s
        .commit(sample_commit(1, vec![set(b"k", b"v")]))
        .expect_err("an empty store must refuse height 1");
    assert!(
        matches!(
            err,
            StoreError::HeightGap {
                expected: 0,
                got: 1
            }
        ),
        "wrong error: {err:?}"
    );
    assert!(!err.is_retryable(), "a height gap is not retryable");
    assert_eq!(
        s.latest().expect("latest"),
        None,
        "a refused commit changes nothing"
    );
    assert_eq!(
        s.get(b"k").expect("get"),
        None,
        "a refused commit writes nothing"
    );
    assert_eq!(s.block(1).expect("block"), None);
    let c = sample_commit(0, vec![set(b"k", b"v")]);
    let head = head_of(&c);
    commit_ok(&mut s, c);
    assert_eq!(s.latest().expect("latest"), Some(head));
}

fn writes_overwrites_and_deletes<S: StateStore>(mut s: S) {
    commit_ok(
        &mut s,
        sample_commit(0, vec![set(b"a", b"1"), set(b"b", b"2"), set(b"c", b"3")]),
    );
    assert_eq!(s.get(b"a").expect("get"), Some(b"1".to_vec()));
    commit_ok(
        &mut s,
        sample_commit(
            1,
            vec![
                set(b"a", b"10"),
                del(b"b"),
                del(b"never-written"),
                set(b"d", b"4"),
            ],
        ),
    );
    assert_eq!(s.get(b"a").expect("get"), Some(b"10".to_vec()), "overwrite");
    assert_eq!(s.get(b"b").expect("get"), None, "delete");
    assert_eq!(s.get(b"never-written").expect("get"), None);
    assert_eq!(
        s.iter().expect("iter"),
        pairs(&[(b"a", b"10"), (b"c", b"3"), (b"d", b"4")])
    );
    // A block with no writes still advances the head.
    let c = sample_commit(2, vec![]);
    let head = head_of(&c);
    commit_ok(&mut s, c);
    assert_eq!(s.latest().expect("latest"), Some(head));
    assert_eq!(s.iter().expect("iter").len(), 3);
}

fn last_write_to_a_key_wins<S: StateStore>(mut s: S) {
    commit_ok(
        &mut s,
        sample_commit(
            0,
            vec![
                set(b"k", b"1"),
                set(b"k", b"2"),
                set(b"gone", b"x"),
                del(b"gone"),
            ],
        ),
    );
    assert_eq!(s.get(b"k").expect("get"), Some(b"2".to_vec()));
    assert_eq!(s.get(b"gone").expect("get"), None);
    commit_ok(&mut s, sample_commit(1, vec![del(b"k"), set(b"k", b"3")]));
    assert_eq!(s.get(b"k").expect("get"), Some(b"3".to_vec()));
}

fn empty_keys_and_values<S: StateStore>(mut s: S) {
    commit_ok(
        &mut s,
        sample_commit(0, vec![set(b"", b"root"), set(b"e", b"")]),
    );
    assert_eq!(s.get(b"").expect("get"), Some(b"root".to_vec()));
    assert_eq!(
        s.get(b"e").expect("get"),
        Some(Vec::new()),
        "an empty value is present, not deleted"
    );
    assert_eq!(
        s.iter().expect("iter"),
        pairs(&[(b"", b"root"), (b"e", b"")])
    );
    commit_ok(&mut s, sample_commit(1, vec![del(b"")]));
    assert_eq!(s.iter().expect("iter"), pairs(&[(b"e", b"")]));
}

fn height_gaps_and_replays_change_nothing<S: StateStore>(mut s: S) {
    commit_ok(&mut s, sample_commit(0, vec![set(b"a", b"0")]));
    let c1 = sample_commit(1, vec![set(b"a", b"1")]);
    let head = head_of(&c1);
    commit_ok(&mut s, c1);
    let before = s.iter().expect("iter");
    for bad in [0u64, 1, 3, 100, u64::MAX] {
        let err = s
            .commit(sample_commit(
                bad,
                vec![set(b"a", b"bad"), set(b"z", b"bad")],
            ))
            .expect_err("out-of-sequence commit must fail");
        assert!(
            matches!(err, StoreError::HeightGap { expected: 2, got } if got == bad),
            "height {bad}: wrong error {err:?}"
        );
        assert_eq!(s.latest().expect("latest"), Some(head), "head unchanged");
        assert_eq!(s.iter().expect("iter"), before, "state unchanged");
        if bad != 0 && bad != 1 {
            assert_eq!(s.block(bad).expect("block"), None, "no block stored");
        }
    }
    assert_eq!(
        s.block(1).expect("block"),
        Some(sample_commit(1, vec![]).block)
    );
    commit_ok(&mut s, sample_commit(2, vec![]));
}

fn scan_is_sorted_and_respects_prefix_bounds<S: StateStore>(mut s: S) {
    let keys: [&[u8]; 9] = [
        b"b/2",
        b"a",
        b"b",
        b"b/10",
        b"b/1",
        b"b0",
        b"c",
        &[b'b', 0xff],
        &[b'b', 0xff, 0],
    ];
    // Written out of order so that any ordering must come from the store.
    let writes = keys.iter().map(|k| set(k, &[k.len() as u8])).collect();
    commit_ok(&mut s, sample_commit(0, writes));
    let all = s.iter().expect("iter");
    let mut sorted: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    sorted.sort();
    assert_eq!(
        all.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        sorted,
        "iter is sorted bytewise"
    );
    let b_slash: Vec<Vec<u8>> = s
        .scan_prefix(b"b/")
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        b_slash,
        vec![b"b/1".to_vec(), b"b/10".to_vec(), b"b/2".to_vec()]
    );
    let b_ff: Vec<Vec<u8>> = s
        .scan_prefix(&[b'b', 0xff])
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(b_ff, vec![vec![b'b', 0xff], vec![b'b', 0xff, 0]]);
    assert_eq!(s.scan_prefix(b"b").expect("scan").len(), 7);
    assert!(s.scan_prefix(b"zz").expect("scan").is_empty());
    assert_eq!(s.scan_prefix(b"").expect("scan"), all);
    let v = s.scan_prefix(b"a").expect("scan");
    assert_eq!(v, vec![(b"a".to_vec(), vec![1u8])], "values come with keys");
}

fn blocks_and_heads_by_height<S: StateStore>(mut s: S) {
    let commits: Vec<Commit> = (0..5)
        .map(|h| sample_commit(h, vec![set(&h.to_be_bytes(), b"x")]))
        .collect();
    for c in &commits {
        commit_ok(&mut s, c.clone());
    }
    for c in &commits {
        assert_eq!(s.block(c.height).expect("block"), Some(c.block.clone()));
        assert_eq!(s.head_at(c.height).expect("head_at"), Some(head_of(c)));
    }
    assert_eq!(s.block(5).expect("block"), None);
    assert_eq!(s.head_at(5).expect("head_at"), None);
    assert_eq!(
        s.latest().expect("latest"),
        commits.last().map(head_of),
        "latest is the last commit"
    );
}

fn large_values<S: StateStore>(mut s: S) {
    let big: Vec<u8> = (0..(3 << 20) / 2).map(|i: u32| (i % 251) as u8).collect();
    let block = vec![7u8; 1 << 20];
    let mut c = sample_commit(0, vec![set(b"big", &big), set(&big[..4096], b"long key")]);
    c.block = block.clone();
    commit_ok(&mut s, c);
    assert_eq!(s.get(b"big").expect("get"), Some(big.clone()));
    assert_eq!(
        s.get(&big[..4096]).expect("get"),
        Some(b"long key".to_vec())
    );
    assert_eq!(s.block(0).expect("block"), Some(block));
    commit_ok(&mut s, sample_commit(1, vec![del(b"big")]));
    assert_eq!(s.get(b"big").expect("get"), None);
}
