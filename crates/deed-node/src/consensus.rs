//! How blocks reach the node: malachite's Tendermint BFT engine, through
//! `deed-consensus`. Every node runs it, `deed dev` included (as a network of one
//! validator): there is one consensus path.
//!
//! The node lends the engine two seams: [`NodeChain`] (the committed state, stored
//! blocks, committing a decided block with its referee models loaded) and
//! [`NodePool`] (the node's mempool). A node whose operator account is not in the
//! validator set follows the chain without voting.
//!
//! A [`Supervisor`] keeps the engine running. Malachite's network dials its
//! persistent peers when it starts (retrying a failed dial a few times), but a
//! link that closes later between two running nodes is not dialled again. So when
//! the chain has not moved for `relink_after_ms` while the node network still
//! reaches peers, the supervisor restarts the engine: it recovers from its
//! write-ahead log at the same height and dials every peer afresh.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deed_consensus::{
    BlockParams, ChainError, ConsensusHandle, DeedCtx, EngineEvent, NodePublicKey, Timeouts,
    ValAddr, Validator, ValidatorConfig, ValidatorSet, ValueOrigin,
};
use deed_ledger::{BlockOutcome, State};
use deed_types::{encoding, Address, Amount, Block, SignedTransaction};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::NodeError;
use crate::node::{lock, Node};

/// A validator named in the genesis: its operator account (the block proposer and
/// fee recipient, bonded as an executor with `stake`), its consensus key and its
/// stake, which gives its voting power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenesisValidator {
    /// The operator account.
    pub operator: Address,
    /// The ed25519 key it votes with (also its consensus network identity).
    pub consensus_key: NodePublicKey,
    /// Stake bonded at genesis.
    pub stake: Amount,
}

impl GenesisValidator {
    /// The ledger's genesis entry.
    pub fn to_ledger(&self) -> deed_ledger::GenesisValidator {
        deed_ledger::GenesisValidator {
            operator: self.operator,
            consensus_key: self.consensus_key.to_bytes(),
            stake: self.stake,
        }
    }
}

/// The validator set of `validators`, power from stake. After genesis the set
/// follows the ledger ([`deed_consensus::types::validator_set_of`]).
pub fn validator_set(validators: &[GenesisValidator]) -> Result<ValidatorSet, NodeError> {
    let powers = deed_consensus::types::voting_powers(
        &validators.iter().map(|v| v.stake).collect::<Vec<_>>(),
    );
    ValidatorSet::new(
        validators
            .iter()
            .zip(powers)
            .map(|(v, voting_power)| Validator {
                address: ValAddr(v.operator),
                public_key: v.consensus_key,
                voting_power,
            })
            .collect(),
    )
    .map_err(|e| NodeError::Config(format!("genesis validators: {e}")))
}

/// The engine's configuration from the node's, with its WAL and consensus store
/// under `home`.
pub fn validator_config(cfg: &Config, home: PathBuf) -> ValidatorConfig {
    let c = &cfg.consensus;
    let ms = Duration::from_millis;
    ValidatorConfig {
        moniker: format!("deed-{}", cfg.http),
        home,
        listen: c.listen,
        peers: c.peers.clone(),
        timeouts: Timeouts {
            propose: ms(c.timeout_propose_ms.max(1)),
            prevote: ms(c.timeout_vote_ms.max(1)),
            precommit: ms(c.timeout_vote_ms.max(1)),
            delta: ms(c.timeout_delta_ms),
        },
        block: BlockParams {
            max_block_bytes: c.max_block_bytes,
            max_block_txs: cfg.limits.max_block_txs,
            block_interval: cfg.block_interval(),
            empty_block_interval: cfg.heartbeat(),
        },
        sync_status_interval: ms(500).max(cfg.block_interval()),
        sync_request_timeout: ms(5_000),
    }
}

/// The node's chain as the engine sees it.
pub struct NodeChain(pub Arc<Node>);

impl deed_consensus::Chain for NodeChain {
    fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.0.with_state(|c| f(c.state()))
    }

    fn block(&self, height: u64) -> Option<Block> {
        match self.0.with_state(|c| c.block(height)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(height, error = %e, "reading a stored block");
                None
            }
        }
    }

    async fn commit(&mut self, block: &Block) -> Result<BlockOutcome, ChainError> {
        match self.0.commit_block(block.clone()).await {
            Ok(c) => Ok(c.outcome.clone()),
            Err(NodeError::Block(e)) => Err(ChainError::Rejected(e)),
            Err(e) => Err(ChainError::Storage {
                height: block.header.height,
                source: Box::new(e),
            }),
        }
    }
}

/// The node's mempool as the engine sees it.
pub struct NodePool(pub Arc<Node>);

impl deed_consensus::Mempool for NodePool {
    fn reap(&self, max_bytes: usize, max_txs: usize) -> Vec<SignedTransaction> {
        let candidates = self.0.pending(max_txs);
        let mut bytes = 0usize;
        candidates
            .into_iter()
            .take_while(|tx| {
                bytes = bytes.saturating_add(encoding::encode(tx).len());
                bytes <= max_bytes
            })
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.0.mempool_len() == 0
    }

    fn on_committed(&self, _block: &Block, _state: &State) {
        // `Node::commit_block` rechecks the pool under the same lock as the commit.
    }
}

/// What the node knows about consensus progress, from the engine's events.
#[derive(Clone, Debug, Default)]
pub struct ConsensusInfo {
    /// The height being decided.
    pub height: u64,
    /// Its current round.
    pub round: i64,
    /// When a block last arrived by value sync (catching up) rather than by voting.
    pub synced_at: Option<Instant>,
    /// When the last block was decided.
    pub decided_at: Option<Instant>,
}

impl ConsensusInfo {
    /// Whether the node is catching up: it took a block from value sync in the
    /// last few seconds.
    pub fn syncing(&self) -> bool {
        self.synced_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(3))
    }
}

/// Follows the engine's events into the node's metrics and [`ConsensusInfo`].
pub(crate) async fn follow_engine(
    node: Arc<Node>,
    mut events: tokio::sync::broadcast::Receiver<EngineEvent<DeedCtx>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        match event {
            EngineEvent::StartedRound(height, round, _, _) => {
                node.metrics.consensus_rounds.inc();
                node.metrics.consensus_round.set(round.as_i64());
                let mut info = lock(&node.consensus_info);
                info.height = height.0;
                info.round = round.as_i64();
            }
            EngineEvent::ReceivedProposedValue(_, ValueOrigin::Sync(_)) => {
                lock(&node.consensus_info).synced_at = Some(Instant::now());
            }
            EngineEvent::Decided(_) => {
                node.metrics.peers.set(node.peers() as i64);
                let now = Instant::now();
                let mut info = lock(&node.consensus_info);
                if let Some(t) = info.decided_at {
                    node.metrics
                        .block_interval_seconds
                        .observe(now.duration_since(t).as_secs_f64());
                }
                info.decided_at = Some(now);
            }
            _ => {}
        }
    }
}

/// The consensus engine and the task following its events.
struct Engine {
    handle: ConsensusHandle,
    follower: JoinHandle<()>,
}

impl Engine {
    async fn start(node: &Arc<Node>, home: PathBuf) -> Result<Engine, NodeError> {
        let vcfg = validator_config(&node.cfg, home);
        let handle = deed_consensus::start_validator(
            &vcfg,
            node.cfg.chain_id,
            node.keys.consensus.clone(),
            ValAddr(node.keys.validator.address()),
            node.valset.clone(),
            NodeChain(node.clone()),
            Arc::new(NodePool(node.clone())),
        )
        .await
        .map_err(|e| NodeError::Config(format!("consensus: {e}")))?;
        let follower = tokio::spawn(follow_engine(node.clone(), handle.events()));
        Ok(Engine { handle, follower })
    }

    async fn stop(self) {
        self.follower.abort();
        self.handle.stop().await;
    }
}

/// Runs the consensus engine and restarts it when its links are lost (see the
/// module documentation).
pub(crate) struct Supervisor {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    failed: Arc<AtomicBool>,
}

impl Supervisor {
    /// Starts the engine with its WAL and store under `home`, and the watch.
    pub(crate) async fn start(node: Arc<Node>, home: PathBuf) -> Result<Supervisor, NodeError> {
        let engine = Engine::start(&node, home.clone()).await?;
        let (stop, stopped) = oneshot::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(supervise(node, home, engine, stopped, failed.clone()));
        Ok(Supervisor {
            stop: Some(stop),
            task,
            failed,
        })
    }

    /// Whether the engine stopped on its own (a fatal error) or could not be
    /// restarted.
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Stops the engine and waits until its actors, network and WAL are released.
    pub(crate) async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }
}

async fn supervise(
    node: Arc<Node>,
    home: PathBuf,
    mut engine: Engine,
    mut stopped: oneshot::Receiver<()>,
    failed: Arc<AtomicBool>,
) {
    // Nodes whose links dropped together see the chain stop together; each waits
    // between 1× and 2× the configured time (a fraction drawn from its key), so
    // they restart one after the other rather than all at once, when their
    // engines would dial each other in the middle of each other's restarts.
    let fraction = u64::from(node.keys.consensus.public_key().to_bytes()[0]);
    let base = match node.cfg.consensus.relink_after_ms {
        0 => None,
        ms => Some(Duration::from_millis(
            ms.saturating_add(ms.saturating_mul(fraction) / 256),
        )),
    };
    let mut wait = base;
    let mut height = node.with_state(|c| c.head().height);
    let mut since = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = tick.tick() => {}
        }
        if engine.handle.is_finished() {
            tracing::error!("the consensus engine stopped");
            failed.store(true, Ordering::Relaxed);
            break;
        }
        let now = node.with_state(|c| c.head().height);
        if now != height {
            (height, since, wait) = (now, Instant::now(), base);
            continue;
        }
        let Some(w) = wait else { continue };
        if since.elapsed() < w || node.peers() == 0 {
            continue;
        }
        tracing::warn!(
            height,
            idle_s = since.elapsed().as_secs(),
            "no block while peers are reachable: restarting the consensus engine to dial its peers again"
        );
        engine.stop().await;
        engine = match Engine::start(&node, home.clone()).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "restarting the consensus engine");
                failed.store(true, Ordering::Relaxed);
                return;
            }
        };
        node.metrics.consensus_restarts.inc();
        since = Instant::now();
        wait = base.map(|b| w.saturating_mul(2).min(b.saturating_mul(8)));
    }
    engine.stop().await;
}
