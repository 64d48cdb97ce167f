//! End-to-end persistence of the real ledger, tested with real process kills.
//!
//! The child process is a minimal node: it builds a genesis state (or, when the
//! store already holds a chain, rebuilds the state from the stored pairs with
//! `State::from_kv`), then applies blocks of signed transactions with `apply_block`
//! and commits each block's writes to a `RedbStateStore`, acknowledging every
//! committed height on stdout. The blocks are a pure function of a seed and the
//! state they extend, so the parent can replay the same chain in memory.
//!
//! The parent sends SIGKILL at random moments, reopens the database and checks that
//! no acknowledged block was lost, that the state rebuilt from the stored pairs has
//! the stored root, that this root and every pair equal the in-memory replay from
//! genesis, and that every stored block decodes to the replayed block. Each round
//! restarts the child from the stored state, so the stored blocks after the first
//! kill were produced by a node that resumed from disk: they match the replay only
//! if the resumed state was exact.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deed_ledger::{apply_block, next_block, Params, Referee, RefereeError, State, TxError};
use deed_store::{Commit, MemoryStateStore, RedbStateStore, StateStore};
use deed_types::{
    Action, Address, Amount, Block, Cid, Hash, SecretKey, SignedTransaction, Transaction,
};

const CHILD_ENV: &str = "DEED_LEDGER_CRASH_CHILD_DB";
const SEED_ENV: &str = "DEED_LEDGER_CRASH_SEED";
const TEST_NAME: &str = "kill_9_while_applying_blocks_resumes_the_same_chain";
const ROUNDS: usize = 14;
const CHAIN: u64 = 77;
const FUNDED: usize = 5;
const BALANCE: Amount = 1_000_000;
const GENESIS_TIME: u64 = 1_700_000_000;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Transfers never reach a dispute, so the referee is never asked.
struct NoReferee;

impl Referee for NoReferee {
    fn execute_step(
        &self,
        model: &Cid,
        _step: u64,
        _inputs: &[deed_ledger::StepInput],
    ) -> Result<Hash, RefereeError> {
        Err(RefereeError::ModelUnavailable(*model))
    }
}

/// The accounts of the chain: `FUNDED` funded keys and one key that starts empty
/// (its transactions fail with `CannotPayFee` until someone pays it).
struct Keys {
    keys: Vec<SecretKey>,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            keys: (0..=FUNDED)
                .map(|i| SecretKey::from_seed(format!("ledger crash account {i}").as_bytes()))
                .collect(),
        }
    }

    fn addr(&self, i: usize) -> Address {
        self.keys[i].address()
    }

    fn pauper(&self) -> usize {
        FUNDED
    }

    fn genesis(&self) -> State {
        let alloc: Vec<(Address, Amount)> = (0..FUNDED).map(|i| (self.addr(i), BALANCE)).collect();
        State::genesis(CHAIN, Params::default(), &alloc).expect("genesis")
    }
}

/// The store commit of the genesis state. Genesis has no block, so its block bytes
/// are empty and its hash is the "no parent" hash the first block points back to.
fn genesis_commit(state: &State) -> Commit {
    Commit {
        height: 0,
        block_hash: state.meta().last_block_hash,
        block: Vec::new(),
        state_root: state.root(),
        writes: state.to_kv(),
        local: Vec::new(),
    }
}

/// The next block over `state` for `seed`: a successful transfer, a transfer the
/// sender cannot afford (charged: fee and nonce move), a bad nonce (uncharged), and
/// a few random transactions of every kind, including ones from the empty account.
fn block_for(seed: u64, keys: &Keys, state: &State) -> Block {
    let height = state.height() + 1;
    let mut rng = splitmix(seed ^ splitmix(height));
    let mut next = |bound: u64| {
        rng = splitmix(rng);
        rng % bound
    };
    let n = keys.keys.len() as u64;
    // Nonces as this block will have them, assuming each earlier transaction of the
    // block was charged (when it was not, a later one fails with a nonce gap).
    let mut pending: BTreeMap<usize, u64> = BTreeMap::new();
    let mut txs: Vec<SignedTransaction> = Vec::new();
    let extra = next(4);
    for slot in 0..3 + extra {
        let kind = if slot < 3 { slot } else { next(5) };
        let from = if kind == 4 {
            keys.pauper()
        } else {
            next(FUNDED as u64) as usize
        };
        let to = keys.addr(next(n) as usize);
        let nonce = *pending
            .entry(from)
            .or_insert_with(|| state.nonce(&keys.addr(from)));
        let fee = 1 + Amount::from(next(3) as u8);
        let (nonce, amount) = match kind {
            // A transfer that fits a funded balance (the empty account cannot pay
            // the fee until it has received something).
            0 | 4 => (nonce, Amount::from(next(5_000) as u16)),
            // More than the whole supply: charged, rejected.
            1 => (
                nonce,
                state.meta().supply + 1 + Amount::from(next(1_000) as u16),
            ),
            // A nonce from the future, or a replayed one.
            2 if nonce == 0 || next(2) == 0 => (nonce + 1 + next(3), 1),
            2 => (nonce - 1, 1),
            _ => (nonce, Amount::from(next(50_000) as u16)),
        };
        if kind != 2 {
            pending.insert(from, nonce + 1);
        }
        let tx = Transaction {
            chain_id: CHAIN,
            nonce,
            fee,
            action: Action::Transfer { to, amount },
        }
        .sign(&keys.keys[from])
        .expect("sign");
        txs.push(tx);
    }
    let proposer = keys.addr((height % n) as usize);
    next_block(state, proposer, GENESIS_TIME + 5 * height, txs)
}

/// Applies the next block of the chain and returns the store commit for it.
fn step(seed: u64, keys: &Keys, state: &mut State) -> (Commit, Block, Vec<Result<(), TxError>>) {
    let block = block_for(seed, keys, state);
    let outcome = apply_block(state, &block, &NoReferee).expect("apply_block");
    let commit = Commit {
        height: block.header.height,
        block_hash: outcome.block_hash,
        block: block.encode(),
        state_root: outcome.state_root,
        writes: outcome.writes,
        local: Vec::new(),
    };
    let results = outcome.results.into_iter().map(|r| r.outcome).collect();
    (commit, block, results)
}

/// Rebuilds the ledger state from every pair of `store`.
fn load<S: StateStore>(store: &S) -> State {
    State::from_kv(store.iter().expect("iter")).expect("stored pairs load as a state")
}

fn sorted_kv(state: &State) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut kv: Vec<(Vec<u8>, Vec<u8>)> = state
        .to_kv()
        .into_iter()
        .map(|(k, v)| (k, v.expect("to_kv has no deletes")))
        .collect();
    kv.sort();
    kv
}

/// The child: resumes from the store (or starts it at genesis) and commits blocks
/// forever, acknowledging each commit on stdout after `commit` returned.
fn child(db: &Path, seed: u64) -> ! {
    // The test harness may have printed a partial line; start the protocol on a
    // fresh one.
    println!();
    let keys = Keys::new();
    let mut store = RedbStateStore::open(db).expect("child: open");
    let mut state = match store.latest().expect("child: latest") {
        Some(head) => {
            let state = load(&store);
            assert_eq!(state.root(), head.state_root, "child: resumed root");
            assert_eq!(state.height(), head.height, "child: resumed height");
            state
        }
        None => {
            let state = keys.genesis();
            store
                .commit(genesis_commit(&state))
                .expect("child: genesis");
            println!("ACK 0");
            state
        }
    };
    println!("READY {}", state.height() + 1);
    loop {
        let (commit, _, _) = step(seed, &keys, &mut state);
        let height = commit.height;
        store.commit(commit).expect("child: commit");
        println!("ACK {height}");
    }
}

/// The chain replayed from genesis in memory, kept for every height so far.
struct Replay {
    seed: u64,
    keys: Keys,
    state: State,
    /// Stored block bytes, block hash and root by height (index 0 is genesis).
    blocks: Vec<(Vec<u8>, Hash, Hash)>,
    ok: usize,
    charged_failures: usize,
    uncharged_failures: usize,
}

impl Replay {
    fn new(seed: u64) -> Replay {
        let keys = Keys::new();
        let state = keys.genesis();
        let g = genesis_commit(&state);
        Replay {
            seed,
            keys,
            state,
            blocks: vec![(g.block, g.block_hash, g.state_root)],
            ok: 0,
            charged_failures: 0,
            uncharged_failures: 0,
        }
    }

    /// Advances to `height` (heads never go back, so continuing from the last head
    /// equals replaying from scratch).
    fn advance_to(&mut self, height: u64) {
        while self.state.height() < height {
            let (commit, block, results) = step(self.seed, &self.keys, &mut self.state);
            assert_eq!(Block::decode(&commit.block).expect("decode"), block);
            for r in results {
                match r {
                    Ok(()) => self.ok += 1,
                    Err(e) if e.is_uncharged() => self.uncharged_failures += 1,
                    Err(_) => self.charged_failures += 1,
                }
            }
            self.blocks
                .push((commit.block, commit.block_hash, commit.state_root));
        }
    }
}

fn verify(db: &Path, acked: Option<u64>, replay: &mut Replay) -> Option<u64> {
    let store = RedbStateStore::open(db).expect("reopen after kill");
    let Some(head) = store.latest().expect("latest") else {
        assert_eq!(acked, None, "an acknowledged commit was lost");
        assert!(store.iter().expect("iter").is_empty());
        return None;
    };
    if let Some(a) = acked {
        assert!(
            head.height >= a,
            "acknowledged block {a} lost: head is {}",
            head.height
        );
    }
    assert!(
        head.height <= acked.map_or(0, |a| a + 1),
        "head {} is beyond the one commit that may be in flight (acked {acked:?})",
        head.height
    );
    let h = head.height;
    let rebuilt = load(&store);
    assert_eq!(rebuilt.height(), h, "rebuilt height");
    assert_eq!(
        rebuilt.root(),
        head.state_root,
        "rebuilt root vs stored root"
    );
    assert_eq!(rebuilt.meta().last_block_hash, head.block_hash);

    replay.advance_to(h);
    assert_eq!(replay.state.height(), h);
    assert_eq!(head.state_root, replay.state.root(), "root at height {h}");
    assert!(
        sorted_kv(&rebuilt) == sorted_kv(&replay.state),
        "rebuilt state differs from the replay at height {h}"
    );
    let stored: Vec<(Vec<u8>, Vec<u8>)> = store.iter().expect("iter");
    assert!(
        stored == sorted_kv(&replay.state),
        "stored pairs differ from the replay at height {h}"
    );
    for (height, (bytes, hash, root)) in replay.blocks.iter().enumerate().take(h as usize + 1) {
        let height = height as u64;
        let got = store.block(height).expect("block").expect("stored block");
        assert!(got == *bytes, "block bytes at height {height}");
        if height > 0 {
            let block = Block::decode(&got).expect("stored block decodes");
            assert_eq!(block.header.height, height);
            assert_eq!(block.header.hash(), *hash);
        }
        let at = store.head_at(height).expect("head_at").expect("head");
        assert_eq!(
            (at.block_hash, at.state_root),
            (*hash, *root),
            "head {height}"
        );
    }
    assert_eq!(store.block(h + 1).expect("block"), None);
    Some(h)
}

fn seed() -> u64 {
    std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

enum Line {
    Ready,
    Ack,
}

#[test]
fn kill_9_while_applying_blocks_resumes_the_same_chain() {
    let seed = seed();
    if let Some(db) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&db), seed);
    }
    println!("ledger crash test seed: {seed} (rerun with {SEED_ENV}={seed})");
    let mut rng = seed;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("state.redb");
    let exe = std::env::current_exe().expect("test binary path");
    let started = Instant::now();
    let mut head: Option<u64> = None;
    let mut replay = Replay::new(seed);
    let mut advanced = 0;
    for round in 0..ROUNDS {
        rng = splitmix(rng);
        let mut child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &db)
            .env(SEED_ENV, seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acked = None;
            let mut ready: Option<u64> = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(h) = line.split("READY ").nth(1).and_then(|h| h.parse().ok()) {
                    ready = Some(h);
                    let _ = tx.send(Line::Ready);
                }
                if let Some(h) = line
                    .strip_prefix("ACK ")
                    .and_then(|h| h.parse::<u64>().ok())
                {
                    acked = Some(h);
                    let _ = tx.send(Line::Ack);
                }
            }
            (ready, acked)
        });
        if round % 4 == 3 {
            // Anywhere in start-up: opening or repairing the file, loading the
            // state, committing genesis.
            std::thread::sleep(Duration::from_millis(rng % 300));
        } else {
            // After 0 to 2 more commits, at a random point of applying and committing
            // the next block (one takes a few hundred milliseconds in a debug build).
            let mut acks_wanted = rng % 3;
            let mut ready = false;
            let deadline = Instant::now() + Duration::from_secs(20);
            while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                match line {
                    Line::Ready => ready = true,
                    Line::Ack if ready && acks_wanted > 0 => acks_wanted -= 1,
                    Line::Ack => {}
                }
                if ready && acks_wanted == 0 {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis((rng >> 16) % 250));
        }
        child.kill().expect("SIGKILL child");
        child.wait().expect("reap child");
        let (ready, acked_this_round) = reader.join().expect("reader thread");
        if let Some(ready) = ready {
            // The child resumed right after the verified head, not at genesis.
            assert_eq!(
                ready,
                head.map_or(1, |h| h + 1),
                "round {round}: resume height"
            );
        }
        let acked = acked_this_round.or(head);
        let new_head = verify(&db, acked, &mut replay);
        assert!(new_head >= head, "round {round}: head went back");
        if new_head > head {
            advanced += 1;
        }
        head = new_head;
    }
    let elapsed = started.elapsed();
    println!(
        "{ROUNDS} kills, head advanced in {advanced} rounds, final height {head:?}, \
         {} ok / {} charged failed / {} uncharged failed transactions, {elapsed:?}",
        replay.ok, replay.charged_failures, replay.uncharged_failures
    );
    assert!(
        advanced >= ROUNDS / 4,
        "too few rounds made progress ({advanced}); the child is not committing"
    );
    assert!(
        head >= Some(2),
        "the chain did not get past its first blocks"
    );
    assert!(replay.ok > 0 && replay.charged_failures > 0 && replay.uncharged_failures > 0);
}

/// The same chain committed to the in-memory and the redb store: the same head,
/// pairs and blocks at every height, and the same state rebuilt from each (also
/// after reopening the redb file).
#[test]
fn memory_and_redb_stores_hold_the_same_ledger_state() {
    const BLOCKS: u64 = 12;
    let seed = seed();
    println!("store agreement seed: {seed} (rerun with {SEED_ENV}={seed})");
    let keys = Keys::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    let mut memory = MemoryStateStore::new();
    let mut redb = RedbStateStore::open(&path).expect("open");
    let mut state = keys.genesis();
    let g = genesis_commit(&state);
    memory.commit(g.clone()).expect("memory genesis");
    redb.commit(g).expect("redb genesis");
    let mut charged = 0;
    for _ in 0..BLOCKS {
        let (commit, _, results) = step(seed, &keys, &mut state);
        charged += results
            .iter()
            .filter(|r| matches!(r, Err(e) if !e.is_uncharged()))
            .count();
        memory.commit(commit.clone()).expect("memory commit");
        redb.commit(commit).expect("redb commit");
        let head = memory.latest().expect("latest").expect("head");
        assert_eq!(Some(head), redb.latest().expect("latest"));
        assert_eq!(head.state_root, state.root());
        let pairs = memory.iter().expect("iter");
        assert!(
            pairs == redb.iter().expect("iter"),
            "pairs at {}",
            head.height
        );
        assert!(
            pairs == sorted_kv(&state),
            "pairs vs live state at {}",
            head.height
        );
        assert_eq!(load(&memory).root(), state.root());
        assert_eq!(load(&redb).root(), state.root());
    }
    assert!(charged > 0, "no charged failure was exercised");
    for h in 0..=BLOCKS {
        assert_eq!(
            memory.block(h).expect("block"),
            redb.block(h).expect("block")
        );
    }
    drop(redb);
    let reopened = RedbStateStore::open(&path).expect("reopen");
    let rebuilt = load(&reopened);
    assert_eq!(rebuilt.root(), state.root());
    assert_eq!(rebuilt.height(), BLOCKS);
    assert!(sorted_kv(&rebuilt) == sorted_kv(&state));
}
