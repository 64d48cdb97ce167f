//! The consensus seam: how blocks are proposed and decided.
//!
//! A [`Consensus`] engine drives the chain forward; the node is its
//! [`Application`]: it builds proposals from its mempool and commits decided blocks.
//! Nothing outside an engine knows how many validators there are. Today the only
//! engine is [`SingleValidator`] (a development network with one proposer); a BFT
//! engine (Tendermint-style, several validators) implements the same trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deed_types::{Address, Block, SecretKey};
use tokio::sync::watch;

use crate::error::NodeError;

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a consensus engine needs from the node.
pub trait Application: Send + Sync + 'static {
    /// Whether transactions are waiting to be ordered.
    fn has_pending(&self) -> bool;

    /// Builds the proposal for the next height, proposed by `proposer` at `time`
    /// (seconds since the Unix epoch, taken from the proposer's clock here at the
    /// edge; the ledger only reads it from the header).
    fn propose(&self, proposer: Address, time: u64) -> Result<Block, NodeError>;

    /// Applies and persists a decided block.
    fn commit(&self, block: Block) -> BoxFuture<'_, Result<(), NodeError>>;
}

/// A consensus engine.
pub trait Consensus: Send + 'static {
    /// The current validators and their voting power.
    fn validators(&self) -> Vec<(Address, u128)>;

    /// Drives the chain until `shutdown` turns true.
    fn run(
        self: Box<Self>,
        app: Arc<dyn Application>,
        shutdown: watch::Receiver<bool>,
    ) -> BoxFuture<'static, Result<(), NodeError>>;
}

/// One validator that proposes and decides every block alone: a block every
/// `interval` while transactions wait, and an empty one every `heartbeat` so
/// height-based timers (deadlines, challenge windows) advance on an idle chain.
pub struct SingleValidator {
    key: SecretKey,
    interval: Duration,
    heartbeat: Duration,
}

impl std::fmt::Debug for SingleValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleValidator")
            .field("validator", &self.key.address())
            .field("interval", &self.interval)
            .finish()
    }
}

impl SingleValidator {
    /// The engine for validator `key`.
    pub fn new(key: SecretKey, interval: Duration, heartbeat: Duration) -> SingleValidator {
        SingleValidator {
            key,
            interval,
            heartbeat,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Consensus for SingleValidator {
    fn validators(&self) -> Vec<(Address, u128)> {
        vec![(self.key.address(), 1)]
    }

    fn run(
        self: Box<Self>,
        app: Arc<dyn Application>,
        mut shutdown: watch::Receiver<bool>,
    ) -> BoxFuture<'static, Result<(), NodeError>> {
        Box::pin(async move {
            let proposer = self.key.address();
            let mut last = Instant::now();
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return Ok(());
                }
                if !app.has_pending() && last.elapsed() < self.heartbeat {
                    continue;
                }
                let block = app.propose(proposer, unix_now())?;
                app.commit(block).await?;
                last = Instant::now();
            }
        })
    }
}
