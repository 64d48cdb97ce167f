//! Starting a validator: Deed's consensus configuration, the [`Node`] malachite's
//! `start_engine` asks for, and the running [`ConsensusHandle`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use malachitebft_app_channel::app::config::{
    ConsensusConfig, P2pConfig, TimeoutConfig, ValuePayload, ValueSyncConfig,
};
use malachitebft_app_channel::app::events::{RxEvent, TxEvent};
use malachitebft_app_channel::app::node::{EngineHandle, Node, NodeConfig, NodeHandle};
use malachitebft_app_channel::app::types::Keypair;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{error, Instrument};

pub use malachitebft_app_channel::app::engine::util::events::Event as EngineEvent;

use crate::app::{App, AppError, BlockParams};
use crate::chain::{Chain, Mempool};
use crate::codec::BorshCodec;
use crate::keys::{NodePublicKey, NodeSecretKey};
use crate::signing::DeedSigner;
use crate::store::{ConsensusStore, StoreError};
use crate::types::{DeedCtx, Height, ValAddr, ValidatorSet};

/// Consensus timeouts (Tendermint's; each grows by `delta` per round).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for a proposal.
    pub propose: Duration,
    /// Waiting for more prevotes after 2/3 for anything.
    pub prevote: Duration,
    /// Waiting for more precommits after 2/3 for anything.
    pub precommit: Duration,
    /// Growth per round.
    pub delta: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            propose: Duration::from_secs(3),
            prevote: Duration::from_secs(1),
            precommit: Duration::from_secs(1),
            delta: Duration::from_millis(500),
        }
    }
}

/// How a validator runs consensus.
#[derive(Clone, Debug)]
pub struct ValidatorConfig {
    /// A name for logs and metrics.
    pub moniker: String,
    /// Directory for the WAL (`wal/`) and the consensus store (`consensus.redb`).
    pub home: PathBuf,
    /// The consensus p2p address to listen on (TCP).
    pub listen: SocketAddr,
    /// Peers to stay connected to (TCP).
    pub peers: Vec<SocketAddr>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Block size and pacing.
    pub block: BlockParams,
    /// How often peers tell each other their height (for value sync).
    pub sync_status_interval: Duration,
    /// How long a value-sync request may take.
    pub sync_request_timeout: Duration,
}

/// Why a validator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Creating the home directory failed.
    #[error("creating {path}: {source}")]
    Home {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The consensus store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine failed to start.
    #[error("starting the consensus engine: {0}")]
    Engine(String),
}

fn multiaddr(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => format!("/ip4/{}/tcp/{}", v4.ip(), v4.port()),
        SocketAddr::V6(v6) => format!("/ip6/{}/tcp/{}", v6.ip(), v6.port()),
    }
}

/// Malachite's engine configuration, built from a [`ValidatorConfig`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct EngineConfig {
    moniker: String,
    consensus: ConsensusConfig,
    value_sync: ValueSyncConfig,
}

impl EngineConfig {
    fn new(cfg: &ValidatorConfig) -> Result<EngineConfig, StartError> {
        let parse = |a: SocketAddr| {
            multiaddr(a)
                .parse()
                .map_err(|e| StartError::Engine(format!("address {a}: {e}")))
        };
        let t = cfg.timeouts;
        let timeouts = TimeoutConfig {
            timeout_propose: t.propose,
            timeout_propose_delta: t.delta,
            timeout_prevote: t.prevote,
            timeout_prevote_delta: t.delta,
            timeout_precommit: t.precommit,
            timeout_precommit_delta: t.delta,
            timeout_rebroadcast: t.propose + t.prevote + t.precommit,
        };
        Ok(EngineConfig {
            moniker: cfg.moniker.clone(),
            consensus: ConsensusConfig {
                timeouts,
                p2p: P2pConfig {
                    listen_addr: parse(cfg.listen)?,
                    persistent_peers: cfg
                        .peers
                        .iter()
                        .map(|p| parse(*p))
                        .collect::<Result<_, _>>()?,
                    ..P2pConfig::default()
                },
                value_payload: ValuePayload::ProposalAndParts,
                queue_capacity: 100,
            },
            value_sync: ValueSyncConfig {
                enabled: true,
                status_update_interval: cfg.sync_status_interval,
                request_timeout: cfg.sync_request_timeout,
                ..ValueSyncConfig::default()
            },
        })
    }
}

impl NodeConfig for EngineConfig {
    fn moniker(&self) -> &str {
        &self.moniker
    }

    fn consensus(&self) -> &ConsensusConfig {
        &self.consensus
    }

    fn value_sync(&self) -> &ValueSyncConfig {
        &self.value_sync
    }
}

/// What `start_engine` needs to know about this node: its home directory, key and
/// address. Deed starts validators with [`start_validator`], so the trait's own
/// `start`/`run`/`load_*` entry points are not used.
#[derive(Clone, Debug)]
pub(crate) struct EngineNode {
    home: PathBuf,
    key: NodeSecretKey,
    keypair: Keypair,
    address: ValAddr,
    chain_id: u64,
}

#[async_trait]
impl Node for EngineNode {
    type Context = DeedCtx;
    type Config = EngineConfig;
    type Genesis = ();
    type PrivateKeyFile = NodeSecretKey;
    type SigningProvider = DeedSigner;
    type NodeHandle = ConsensusHandle;

    async fn start(&self) -> eyre::Result<ConsensusHandle> {
        Err(eyre::eyre!(
            "deed validators start with deed_consensus::start_validator"
        ))
    }

    async fn run(self) -> eyre::Result<()> {
        Err(eyre::eyre!(
            "deed validators start with deed_consensus::start_validator"
        ))
    }

    fn get_home_dir(&self) -> PathBuf {
        self.home.clone()
    }

    fn load_config(&self) -> eyre::Result<EngineConfig> {
        Err(eyre::eyre!("the engine config is built by start_validator"))
    }

    fn get_address(&self, _pk: &NodePublicKey) -> ValAddr {
        self.address
    }

    fn get_public_key(&self, pk: &NodeSecretKey) -> NodePublicKey {
        pk.public_key()
    }

    fn get_keypair(&self, _pk: NodeSecretKey) -> Keypair {
        // Made from the same secret in `start_validator`, where a failure is an error.
        self.keypair.clone()
    }

    fn load_private_key(&self, file: NodeSecretKey) -> NodeSecretKey {
        file
    }

    fn load_private_key_file(&self) -> eyre::Result<NodeSecretKey> {
        Ok(self.key.clone())
    }

    fn load_genesis(&self) -> eyre::Result<()> {
        Ok(())
    }

    fn get_signing_provider(&self, pk: NodeSecretKey) -> DeedSigner {
        DeedSigner::new(pk, self.chain_id)
    }
}

/// A running validator: the engine's actors and the app loop.
pub struct ConsensusHandle {
    engine: EngineHandle,
    app: JoinHandle<Result<(), AppError>>,
    events: TxEvent<DeedCtx>,
}

impl ConsensusHandle {
    /// Subscribes to engine events (heights and rounds started, decisions, ...).
    pub fn events(&self) -> RxEvent<DeedCtx> {
        self.events.subscribe()
    }

    /// Whether the app loop has stopped (engine gone or a fatal error).
    pub fn is_finished(&self) -> bool {
        self.app.is_finished()
    }

    /// Stops the engine (its actors, the network, the WAL) and the app loop, and
    /// waits until the actors are gone, so the same home and port can be reused.
    ///
    /// The actors stop gracefully: killed, the network actor would leave its
    /// swarm task running, holding the listening port and live connections that
    /// peers take for the restarted node's (and never send it their
    /// subscriptions again). Whatever does not stop within a few seconds is killed.
    pub async fn stop(self) {
        const GRACE: Duration = Duration::from_secs(5);
        self.app.abort();
        let _ = self.app.await;
        let actor = &self.engine.actor;
        actor.stop_children_and_wait(None, Some(GRACE)).await;
        if let Err(e) = actor.stop_and_wait(None, Some(GRACE)).await {
            error!(error = %e, "stopping the consensus engine gracefully; killing it");
            if let Err(e) = actor.kill_and_wait(Some(GRACE)).await {
                error!(error = %e, "killing the consensus engine");
            }
        }
        self.engine.handle.abort();
        let _ = self.engine.handle.await;
    }
}

#[async_trait]
impl NodeHandle<DeedCtx> for ConsensusHandle {
    fn subscribe(&self) -> RxEvent<DeedCtx> {
        self.events()
    }

    async fn kill(&self, _reason: Option<String>) -> eyre::Result<()> {
        self.app.abort();
        self.engine.actor.kill_and_wait(None).await?;
        self.engine.handle.abort();
        Ok(())
    }
}

/// Starts a validator: opens the consensus store, starts malachite's engine (network,
/// WAL, value sync, consensus) and the app loop over `chain` and `mempool`.
///
/// The validator set follows the ledger (see [`crate::App::new`]); `valset` holds
/// only for a chain whose state names no validators.
#[allow(clippy::too_many_arguments)]
pub async fn start_validator<C: Chain, M: Mempool + ?Sized>(
    cfg: &ValidatorConfig,
    chain_id: u64,
    key: NodeSecretKey,
    address: ValAddr,
    valset: ValidatorSet,
    chain: C,
    mempool: Arc<M>,
) -> Result<ConsensusHandle, StartError> {
    std::fs::create_dir_all(&cfg.home).map_err(|source| StartError::Home {
        path: cfg.home.clone(),
        source,
    })?;
    let store = ConsensusStore::open(&cfg.home.join("consensus.redb"))?;
    let ctx = DeedCtx { chain_id };
    let keypair = Keypair::ed25519_from_bytes(key.to_bytes())
        .map_err(|e| StartError::Engine(format!("node key as a libp2p key: {e}")))?;
    let node = EngineNode {
        home: cfg.home.clone(),
        key: key.clone(),
        keypair,
        address,
        chain_id,
    };
    let engine_cfg = EngineConfig::new(cfg)?;
    let start = Height(chain.with_state(|s| s.height()).saturating_add(1));
    let (mut channels, engine) = malachitebft_app_channel::start_engine(
        ctx,
        node,
        engine_cfg,
        BorshCodec,
        BorshCodec,
        Some(start),
        valset.clone(),
    )
    .await
    .map_err(|e| StartError::Engine(format!("{e:#}")))?;
    let events = channels.events.clone();
    let signer = DeedSigner::new(key, chain_id);
    let mut app = App::new(
        ctx,
        signer,
        address,
        valset,
        chain,
        mempool,
        store,
        cfg.block.clone(),
    );
    let span = tracing::info_span!("validator", moniker = %cfg.moniker);
    let app = tokio::spawn(
        async move {
            let r = app.run(&mut channels).await;
            if let Err(e) = &r {
                error!(error = %e, "consensus app stopped");
            }
            r
        }
        .instrument(span),
    );
    Ok(ConsensusHandle {
        engine,
        app,
        events,
    })
}
