//! Crash consistency of the redb state store, tested with real process kills.
//!
//! The test re-runs its own binary as a child process that commits blocks in a loop,
//! each block's writes derived from its height (small values, overwrites, deletes,
//! large values). The parent sends SIGKILL at random moments, reopens the database
//! and checks that the head is at least every commit the child acknowledged, and
//! that the state, the stored root and every block equal what a replay from scratch
//! of heights `0..=head` gives.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deed_store::state::Write;
use deed_store::{Commit, RedbStateStore, StateStore};
use deed_types::Hash;

const CHILD_ENV: &str = "DEED_STORE_CRASH_CHILD_DB";
const SEED_ENV: &str = "DEED_STORE_CRASH_SEED";
const TEST_NAME: &str = "kill_9_at_random_moments_restarts_at_last_commit";
const ROUNDS: usize = 16;
const BIG: usize = 64 * 1024;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The writes of block `height`: a few small sets (often overwrites), a delete, and
/// every fourth block a large value (deleted again later).
fn writes_for(height: u64) -> Vec<Write> {
    let r = splitmix(height);
    let key = |n: u64| format!("k/{:02}", n % 48).into_bytes();
    let mut w: Vec<Write> = (0..3)
        .map(|j| {
            let mut v = height.to_le_bytes().to_vec();
            v.extend(std::iter::repeat_n(j as u8, (r >> (j * 5)) as usize % 40));
            (key(r >> (j * 8)), Some(v))
        })
        .collect();
    w.push((key(r >> 32), None));
    if height.is_multiple_of(4) {
        // Spans many redb pages; the stamped ends make each one distinct.
        let mut big = vec![(r >> 40) as u8; BIG];
        big[..8].copy_from_slice(&height.to_le_bytes());
        big[BIG - 8..].copy_from_slice(&r.to_le_bytes());
        w.push((format!("big/{}", height % 3).into_bytes(), Some(big)));
    }
    if height % 7 == 5 {
        w.push((format!("big/{}", (height / 7) % 3).into_bytes(), None));
    }
    w
}

fn block_for(height: u64) -> Vec<u8> {
    let len = if height.is_multiple_of(5) {
        40 * 1024
    } else {
        200
    };
    let mut block = vec![splitmix(height) as u8; len];
    block[..8].copy_from_slice(&height.to_le_bytes());
    block
}

fn block_hash_for(height: u64) -> Hash {
    Hash::domain("crash test block", &[&block_for(height)])
}

fn encode_writes(writes: &[Write]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in writes {
        out.extend_from_slice(&(k.len() as u64).to_le_bytes());
        out.extend_from_slice(k);
        match v {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.push(0),
        }
    }
    out
}

/// The root after `height`, chained over every block's writes so that it depends on
/// the whole history.
fn next_root(prev: Hash, height: u64) -> Hash {
    Hash::domain(
        "crash test root",
        &[
            prev.as_bytes(),
            &height.to_le_bytes(),
            &encode_writes(&writes_for(height)),
        ],
    )
}

fn commit_for(height: u64, prev_root: Hash) -> Commit {
    Commit {
        height,
        block_hash: block_hash_for(height),
        block: block_for(height),
        state_root: next_root(prev_root, height),
        writes: writes_for(height),
        local: Vec::new(),
    }
}

/// The expected store content, computed without the store: replaying blocks
/// `0..=height` in memory.
#[derive(Default)]
struct Model {
    height: Option<u64>,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    root: Hash,
}

impl Model {
    /// Advances the replay to `head` (heads never go back, so replaying onwards from
    /// the last checked head equals replaying from scratch).
    fn advance_to(&mut self, head: u64) {
        let start = self.height.map_or(0, |h| h + 1);
        for h in start..=head {
            for (k, v) in writes_for(h) {
                match v {
                    Some(v) => self.state.insert(k, v),
                    None => self.state.remove(&k),
                };
            }
            self.root = next_root(self.root, h);
        }
        self.height = Some(self.height.map_or(head, |h| h.max(head)));
    }
}

/// The child: commits forever from wherever the store stands, acknowledging each
/// commit on stdout after `commit` returned.
fn child(db: &Path) -> ! {
    let mut store = RedbStateStore::open(db).expect("child: open");
    let head = store.latest().expect("child: latest");
    let (mut height, mut root) = match head {
        Some(h) => (h.height + 1, h.state_root),
        None => (0, Hash::ZERO),
    };
    println!("READY {height}");
    loop {
        let c = commit_for(height, root);
        root = c.state_root;
        store.commit(c).expect("child: commit");
        println!("ACK {height}");
        height += 1;
    }
}

fn verify(db: &Path, acked: Option<u64>, model: &mut Model) -> Option<u64> {
    let store = RedbStateStore::open(db).expect("reopen after kill");
    let Some(head) = store.latest().expect("latest") else {
        assert_eq!(acked, None, "an acknowledged commit was lost");
        assert!(store.iter().expect("iter").is_empty());
        return None;
    };
    if let Some(a) = acked {
        assert!(
            head.height >= a,
            "acknowledged commit {a} lost: head is {}",
            head.height
        );
    }
    assert!(
        head.height <= acked.map_or(0, |a| a + 1),
        "head {} is beyond the one commit that may be in flight (acked {acked:?})",
        head.height
    );
    model.advance_to(head.height);
    let stored: BTreeMap<Vec<u8>, Vec<u8>> = store.iter().expect("iter").into_iter().collect();
    assert_eq!(
        stored.len(),
        model.state.len(),
        "key count at height {}",
        head.height
    );
    assert!(
        stored == model.state,
        "state differs at height {}",
        head.height
    );
    assert_eq!(
        head.state_root, model.root,
        "stored root at height {}",
        head.height
    );
    assert_eq!(head.block_hash, block_hash_for(head.height));
    for h in 0..=head.height {
        assert_eq!(
            store.block(h).expect("block").as_deref(),
            Some(block_for(h).as_slice()),
            "block {h}"
        );
    }
    assert_eq!(store.block(head.height + 1).expect("block"), None);
    Some(head.height)
}

#[test]
fn kill_9_at_random_moments_restarts_at_last_commit() {
    if let Some(db) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&db));
    }
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("crash test seed: {seed} (rerun with {SEED_ENV}={seed})");
    let mut rng = seed;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("state.redb");
    let exe = std::env::current_exe().expect("test binary path");
    let started = Instant::now();
    let mut head: Option<u64> = None;
    let mut model = Model::default();
    let mut advanced = 0;
    for round in 0..ROUNDS {
        rng = splitmix(rng);
        let mut child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acked = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("READY ") {
                    let _ = ready_tx.send(());
                }
                if let Some(h) = line
                    .strip_prefix("ACK ")
                    .and_then(|h| h.parse::<u64>().ok())
                {
                    acked = Some(h);
                }
            }
            acked
        });
        if round % 4 == 3 {
            // Anywhere in start-up, including while redb creates or repairs the file.
            std::thread::sleep(Duration::from_millis(rng % 300));
        } else {
            // While committing: a commit takes a few milliseconds, so these land at
            // every stage of one.
            let _ = ready_rx.recv_timeout(Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(rng % 120));
        }
        child.kill().expect("SIGKILL child");
        child.wait().expect("reap child");
        let acked_this_round = reader.join().expect("reader thread");
        let acked = acked_this_round.or(head);
        let new_head = verify(&db, acked, &mut model);
        assert!(new_head >= head, "round {round}: head went back");
        if new_head > head {
            advanced += 1;
        }
        head = new_head;
    }
    let elapsed = started.elapsed();
    println!(
        "{ROUNDS} kills, head advanced in {advanced} rounds, final height {head:?}, {elapsed:?}"
    );
    assert!(
        advanced >= ROUNDS / 3,
        "too few rounds made progress ({advanced}); the child is not committing"
    );
}
