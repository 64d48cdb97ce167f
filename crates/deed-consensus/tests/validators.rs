//! Four validators on loopback TCP, each with its own malachite engine, WAL and
//! in-memory chain over the real ledger, agree on one chain.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deed_consensus::{
    start_validator, BlockParams, CommitLog, Committed, ConsensusHandle, EngineEvent, MemChain,
    MemPool, NodeSecretKey, Timeouts, ValAddr, Validator, ValidatorConfig, ValidatorSet,
};
use deed_ledger::{Params, RuntimeReferee, State};
use deed_types::{Action, Address, Hash, SecretKey, SignedTransaction, Transaction};
use malachitebft_core_types::ValueOrigin;
use tokio::sync::broadcast::error::RecvError;

const CHAIN: u64 = 4242;
const N: usize = 4;

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn free_ports(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn node_key(i: usize) -> NodeSecretKey {
    NodeSecretKey::from_seed(format!("validator {i}").as_bytes())
}

fn operator(i: usize) -> ValAddr {
    ValAddr(SecretKey::from_seed(format!("operator {i}").as_bytes()).address())
}

fn account(i: usize) -> SecretKey {
    SecretKey::from_seed(format!("account {i}").as_bytes())
}

struct Net {
    addrs: Vec<SocketAddr>,
    valset: ValidatorSet,
    genesis: State,
    dir: tempfile::TempDir,
}

impl Net {
    fn new() -> Net {
        let valset = ValidatorSet::new(
            (0..N)
                .map(|i| Validator {
                    address: operator(i),
                    public_key: node_key(i).public_key(),
                    voting_power: 10,
                })
                .collect(),
        )
        .unwrap();
        let alloc: Vec<(Address, u128)> =
            (0..N).map(|i| (account(i).address(), 1_000_000)).collect();
        Net {
            addrs: free_ports(N),
            valset,
            genesis: State::genesis(CHAIN, Params::default(), &alloc).unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self, i: usize, moniker: &str) -> ValidatorConfig {
        ValidatorConfig {
            moniker: moniker.to_string(),
            home: self.dir.path().join(format!("v{i}")),
            listen: self.addrs[i],
            peers: (0..N).filter(|j| *j != i).map(|j| self.addrs[j]).collect(),
            timeouts: Timeouts {
                propose: Duration::from_millis(1000),
                prevote: Duration::from_millis(500),
                precommit: Duration::from_millis(500),
                delta: Duration::from_millis(250),
            },
            block: BlockParams {
                block_interval: Duration::from_millis(100),
                empty_block_interval: Duration::from_millis(300),
                ..BlockParams::default()
            },
            sync_status_interval: Duration::from_millis(500),
            sync_request_timeout: Duration::from_secs(2),
        }
    }

    async fn start(
        &self,
        i: usize,
        moniker: &str,
        chain: MemChain<RuntimeReferee>,
    ) -> (ConsensusHandle, CommitLog, Arc<MemPool>) {
        let log = chain.log();
        let pool = Arc::new(MemPool::new(10_000));
        let h = start_validator(
            &self.config(i, moniker),
            CHAIN,
            node_key(i),
            operator(i),
            self.valset.clone(),
            chain,
            pool.clone(),
        )
        .await
        .unwrap();
        (h, log, pool)
    }
}

fn transfers(from: usize, count: u64) -> Vec<SignedTransaction> {
    (0..count)
        .map(|nonce| {
            Transaction {
                chain_id: CHAIN,
                nonce,
                fee: 1,
                action: Action::Transfer {
                    to: account((from + 1) % N).address(),
                    amount: 100 + nonce as u128,
                },
            }
            .sign(&account(from))
            .unwrap()
        })
        .collect()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every log agrees with the first on every height both have.
fn assert_same_chain(logs: &[Vec<Committed>]) {
    let min = logs.iter().map(Vec::len).min().unwrap();
    for h in 0..min {
        for l in &logs[1..] {
            assert_eq!(
                l[h].block.header.hash(),
                logs[0][h].block.header.hash(),
                "block hash at height {}",
                h + 1
            );
            assert_eq!(
                l[h].state_root,
                logs[0][h].state_root,
                "state root at {}",
                h + 1
            );
        }
    }
}

fn committed_counts(log: &[Committed]) -> HashMap<Hash, usize> {
    let mut c = HashMap::new();
    for b in log {
        for (tx, r) in b.block.txs.iter().zip(&b.results) {
            assert!(
                r.outcome.is_ok(),
                "tx {} failed: {:?}",
                tx.hash(),
                r.outcome
            );
            *c.entry(tx.hash()).or_insert(0) += 1;
        }
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_validators_commit_the_same_chain() {
    init_logs();
    let started = Instant::now();
    let net = Net::new();
    let mut nodes = Vec::new();
    for i in 0..N {
        let chain = MemChain::new(net.genesis.clone(), RuntimeReferee::new());
        nodes.push(net.start(i, &format!("v{i}"), chain).await);
    }
    // No transaction gossip yet: every pool gets every transaction, so whoever
    // proposes can include it, and it must still be committed once.
    let txs: Vec<SignedTransaction> = (0..N).flat_map(|i| transfers(i, 3)).collect();
    for (_, _, pool) in &nodes {
        for tx in &txs {
            pool.submit(tx.clone()).unwrap();
        }
    }
    let logs: Vec<CommitLog> = nodes.iter().map(|(_, l, _)| l.clone()).collect();
    wait_for("height 5 everywhere", Duration::from_secs(40), || {
        logs.iter().all(|l| l.height() >= 5)
    })
    .await;
    wait_for(
        "every transaction committed",
        Duration::from_secs(20),
        || {
            let c = committed_counts(&logs[0].snapshot());
            txs.iter().all(|t| c.contains_key(&t.hash()))
        },
    )
    .await;
    let snaps: Vec<Vec<Committed>> = logs.iter().map(|l| l.snapshot()).collect();
    assert_same_chain(&snaps);
    for s in &snaps {
        let c = committed_counts(s);
        for tx in &txs {
            if let Some(n) = c.get(&tx.hash()) {
                assert_eq!(*n, 1, "tx committed {n} times");
            }
        }
    }
    let c = committed_counts(&snaps[0]);
    assert_eq!(c.len(), txs.len());
    assert!(c.values().all(|n| *n == 1));
    // Every block's proposer field names a validator.
    for b in &snaps[0] {
        assert!(net.valset.get(&ValAddr(b.block.header.proposer)).is_some());
    }
    for (h, _, pool) in nodes {
        assert!(!h.is_finished(), "a validator's app loop stopped");
        assert_eq!(pool.len(), 0, "committed transactions left the pool");
        h.stop().await;
    }
    eprintln!("four validators: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_of_four_keep_going_and_a_restarted_validator_catches_up() {
    init_logs();
    let started = Instant::now();
    let net = Net::new();
    let mut nodes = Vec::new();
    for i in 0..N {
        let chain = MemChain::new(net.genesis.clone(), RuntimeReferee::new());
        nodes.push(Some(net.start(i, &format!("r{i}"), chain).await));
    }
    let log = |i: usize, nodes: &Vec<Option<(ConsensusHandle, CommitLog, Arc<MemPool>)>>| {
        nodes[i].as_ref().unwrap().1.clone()
    };
    let l0 = log(0, &nodes);
    wait_for("height 3", Duration::from_secs(30), || l0.height() >= 3).await;

    // Stop validator 3; keep what it had committed, as its stored chain.
    let (h3, l3, _) = nodes[3].take().unwrap();
    h3.stop().await;
    let kept = l3.snapshot();
    let stopped_at = l0.height();
    wait_for("3 of 4 go on", Duration::from_secs(30), || {
        (0..3).all(|i| log(i, &nodes).height() >= stopped_at + 4)
    })
    .await;

    // Restart it with the same key, WAL and consensus store.
    let blocks: Vec<_> = kept.iter().map(|c| c.block.clone()).collect();
    let chain = MemChain::replay(net.genesis.clone(), RuntimeReferee::new(), &blocks).unwrap();
    let restarted = net.start(3, "r3-again", chain).await;
    // Count the values it receives through value sync (not by taking part in rounds).
    let mut events = restarted.0.events();
    let synced = Arc::new(AtomicU32::new(0));
    let counter = synced.clone();
    let watcher = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(EngineEvent::ReceivedProposedValue(_, ValueOrigin::Sync(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
    });
    nodes[3] = Some(restarted);
    let target = l0.height() + 1;
    let l3 = log(3, &nodes);
    wait_for(
        "the restarted validator to catch up",
        Duration::from_secs(30),
        || l3.height() >= target,
    )
    .await;

    let mut snaps: Vec<Vec<Committed>> = (0..3).map(|i| log(i, &nodes).snapshot()).collect();
    // The restarted chain's log starts with the blocks it replayed.
    let after = l3.snapshot();
    assert_eq!(after[..kept.len()], kept[..]);
    snaps.push(after);
    assert!(snaps[3].len() as u64 >= target);
    assert_same_chain(&snaps);
    for n in nodes.into_iter().flatten() {
        assert!(!n.0.is_finished());
        n.0.stop().await;
    }
    watcher.abort();
    assert!(
        synced.load(Ordering::Relaxed) > 0,
        "the restarted validator caught up without value sync"
    );
    eprintln!("kill and restart: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_validator_decides_alone() {
    init_logs();
    let key = node_key(0);
    let valset = ValidatorSet::new(vec![Validator {
        address: operator(0),
        public_key: key.public_key(),
        voting_power: 1,
    }])
    .unwrap();
    let genesis = State::genesis(
        CHAIN,
        Params::default(),
        &[(account(0).address(), 1_000_000)],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new();
    let cfg = ValidatorConfig {
        peers: vec![],
        home: dir.path().join("solo"),
        ..net.config(0, "solo")
    };
    let chain = MemChain::new(genesis, RuntimeReferee::new());
    let log = chain.log();
    let pool = Arc::new(MemPool::new(100));
    let tx = transfers(0, 1).remove(0);
    pool.submit(tx.clone()).unwrap();
    let h = start_validator(&cfg, CHAIN, key, operator(0), valset, chain, pool.clone())
        .await
        .unwrap();
    wait_for("height 3", Duration::from_secs(20), || log.height() >= 3).await;
    let c = committed_counts(&log.snapshot());
    assert_eq!(c.get(&tx.hash()), Some(&1));
    assert!(pool.is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocks_built_on_another_state_are_refused_and_the_diverged_validator_decides_nothing() {
    init_logs();
    let net = Net::new();
    // Validator 3 starts from a different genesis: every block it proposes carries a
    // state root the others do not have.
    let other = State::genesis(CHAIN, Params::default(), &[(account(9).address(), 5)]).unwrap();
    let mut nodes = Vec::new();
    for i in 0..N {
        let genesis = if i == 3 {
            other.clone()
        } else {
            net.genesis.clone()
        };
        let chain = MemChain::new(genesis, RuntimeReferee::new());
        nodes.push(net.start(i, &format!("d{i}"), chain).await);
    }
    let logs: Vec<CommitLog> = nodes.iter().map(|(_, l, _)| l.clone()).collect();
    wait_for("height 6 on the three", Duration::from_secs(45), || {
        logs[..3].iter().all(|l| l.height() >= 6)
    })
    .await;
    let snaps: Vec<Vec<Committed>> = logs[..3].iter().map(|l| l.snapshot()).collect();
    assert_same_chain(&snaps);
    for b in &snaps[0] {
        assert_ne!(
            b.block.header.proposer,
            operator(3).0,
            "a refused block was decided"
        );
    }
    // It judged the decided blocks invalid, so it commits none of them. (Its engine's
    // consensus actor stops on malachite 0.5's assertion that a decided value was
    // judged valid locally; that panic shows in the test output.)
    assert_eq!(logs[3].height(), 0);
    for (h, _, _) in nodes {
        h.stop().await;
    }
}

/// Three genesis validators; a fourth operator bonds and registers its consensus key
/// through the ledger and becomes a validator from the next height on: with one of
/// the first three stopped, the chain goes on only because the newcomer votes
/// (2 of 3 equal stakes are not more than two thirds; 3 of 4 are).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_validator_bonded_through_the_ledger_joins_the_set_at_the_next_height() {
    init_logs();
    let net = Net::new();
    let stake = 1_000_000u128;
    let genesis_validators: Vec<deed_ledger::GenesisValidator> = (0..3)
        .map(|i| deed_ledger::GenesisValidator {
            operator: operator(i).0,
            consensus_key: node_key(i).public_key().to_bytes(),
            stake,
        })
        .collect();
    let newcomer = SecretKey::from_seed(b"operator 3");
    assert_eq!(ValAddr(newcomer.address()), operator(3));
    let mut alloc: Vec<(Address, u128)> =
        (0..N).map(|i| (account(i).address(), 1_000_000)).collect();
    alloc.push((newcomer.address(), 10 * stake));
    let genesis =
        State::genesis_with_validators(CHAIN, Params::default(), &alloc, &genesis_validators)
            .unwrap();
    let set = deed_consensus::types::validator_set_of(&genesis).unwrap();
    assert_eq!(set.validators().len(), 3);
    let mut nodes = Vec::new();
    for i in 0..N {
        let chain = MemChain::new(genesis.clone(), RuntimeReferee::new());
        nodes.push(net.start(i, &format!("s{i}"), chain).await);
    }
    let logs: Vec<CommitLog> = nodes.iter().map(|(_, l, _)| l.clone()).collect();
    wait_for("height 2", Duration::from_secs(30), || {
        logs.iter().all(|l| l.height() >= 2)
    })
    .await;
    assert!(logs[3]
        .snapshot()
        .iter()
        .all(|b| b.block.header.proposer != operator(3).0));
    // Bond, then register the key (with its proof of possession).
    let (key, proof) =
        deed_types::prove_consensus_key(&node_key(3).to_bytes(), CHAIN, &newcomer.address());
    let txs: Vec<SignedTransaction> = [
        Action::Bond {
            amount: stake,
            endpoint: "http://127.0.0.1:1".into(),
            price: 1,
            models: vec![],
        },
        Action::SetConsensusKey { key, proof },
    ]
    .into_iter()
    .enumerate()
    .map(|(n, action)| {
        Transaction {
            chain_id: CHAIN,
            nonce: n as u64,
            fee: Params::default().min_tx_fee,
            action,
        }
        .sign(&newcomer)
        .unwrap()
    })
    .collect();
    for (_, _, pool) in &nodes[..3] {
        for tx in &txs {
            pool.submit(tx.clone()).unwrap();
        }
    }
    wait_for("the key registered", Duration::from_secs(30), || {
        let c = committed_counts(&logs[0].snapshot());
        txs.iter().all(|t| c.contains_key(&t.hash()))
    })
    .await;
    let joined_at = logs[0].height();
    // Stop one of the genesis validators: progress now needs the newcomer's vote.
    let (h0, _, _) = nodes.remove(0);
    h0.stop().await;
    wait_for(
        "three more heights without validator 0",
        Duration::from_secs(40),
        || logs[1..].iter().all(|l| l.height() >= joined_at + 3),
    )
    .await;
    let snaps: Vec<Vec<Committed>> = logs[1..].iter().map(|l| l.snapshot()).collect();
    assert_same_chain(&snaps);
    for (h, _, _) in nodes {
        assert!(!h.is_finished(), "a validator's app loop stopped");
        h.stop().await;
    }
}
