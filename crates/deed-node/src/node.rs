//! The node: the chain, the mempool, the blob store and the roles, wired together.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deed_client::api::ModelManifest;
use deed_consensus::{NodeSecretKey, ValidatorSet};
use deed_ledger::{Job, Params, RuntimeReferee, State};
use deed_store::{AnyBlobStore, FsBlobStore, MemoryBlobStore, MemoryStateStore, ObjectBlobStore};
use deed_store::{BlobStore, RedbStateStore, StateStore};
use deed_types::{
    Action, Address, Amount, Block, Cid, Hash, JobId, ModelId, SecretKey, SignedTransaction,
    Transaction,
};
use tokio::sync::{broadcast, watch};

use crate::chain::{Chain, Committed};
use crate::config::Config;
use crate::consensus::{validator_set, GenesisValidator, Supervisor};
use crate::error::{ApiError, NodeError, TxRejection};
use crate::mempool::Mempool;
use crate::metrics::Metrics;
use crate::runner::{JobRun, ModelCache};

/// The accounts a node acts as.
#[derive(Clone)]
pub struct NodeKeys {
    /// The validator's operator account: names the blocks it proposes and is paid
    /// their transaction fees.
    pub validator: SecretKey,
    /// The ed25519 key the node votes with and its consensus network identity.
    pub consensus: NodeSecretKey,
    /// Runs jobs and signs receipts; answers direct calls.
    pub executor: SecretKey,
    /// Further executor accounts run by the same node. Each bonds and serves like
    /// `executor`; a dev network runs two so `replicated:K` jobs find executors.
    pub more_executors: Vec<SecretKey>,
    /// Signs challenges.
    pub watcher: SecretKey,
}

impl NodeKeys {
    /// Every executor account of the node, `executor` first.
    pub fn executors(&self) -> impl Iterator<Item = &SecretKey> {
        std::iter::once(&self.executor).chain(&self.more_executors)
    }

    /// The node's executor key with address `a`.
    pub fn executor_key(&self, a: &Address) -> Option<&SecretKey> {
        self.executors().find(|k| k.address() == *a)
    }
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKeys")
            .field("validator", &self.validator.address())
            .field("consensus", &self.consensus.public_key())
            .field(
                "executors",
                &self.executors().map(|k| k.address()).collect::<Vec<_>>(),
            )
            .field("watcher", &self.watcher.address())
            .finish()
    }
}

/// Where the node keeps its state and blobs.
#[derive(Debug)]
pub enum Storage {
    /// redb and a local blob directory under the data directory.
    Disk,
    /// Nothing persists (tests).
    Memory,
}

/// What the node needs to start beyond its configuration.
#[derive(Debug)]
pub struct Genesis {
    /// Ledger parameters.
    pub params: Params,
    /// Initial balances.
    pub allocations: Vec<(Address, Amount)>,
    /// The validators of the first height.
    pub validators: Vec<GenesisValidator>,
}

/// A job result the executor computed for a direct call, waiting for the request
/// to be included so its receipt can be posted.
type DirectResults = HashMap<Hash, Arc<JobRun>>;

/// The running node. Shared by the HTTP handlers, the consensus engine and the
/// role tasks.
pub struct Node {
    pub(crate) cfg: Config,
    pub(crate) keys: NodeKeys,
    chain: Mutex<Chain>,
    mempool: Mutex<Mempool>,
    pub(crate) blobs: Arc<AnyBlobStore>,
    pub(crate) models: ModelCache,
    pub(crate) metrics: Metrics,
    blocks: broadcast::Sender<Arc<Committed>>,
    /// The set consensus started with (what a chain whose state names no
    /// validators keeps).
    pub(crate) valset: ValidatorSet,
    /// Direct-call requests served and not yet settled, by request hash.
    pub(crate) direct: Mutex<DirectResults>,
    /// Direct-call requests being executed right now, by sender and nonce (one run
    /// per nonce: only one request of a nonce can be settled). Once answered, a
    /// request is recorded durably by the chain ([`Chain::mark_served`]) until it is
    /// settled: the same signed request is never served twice, restarts included.
    pub(crate) direct_in_flight: Mutex<HashMap<(Address, u64), Hash>>,
    /// Runs behind the receipts of this node's executors, by job and executor,
    /// kept (with their traces) until their jobs close.
    pub(crate) traces: Mutex<HashMap<(JobId, Address), Arc<JobRun>>>,
    /// Executors of this node with a `Bond` queued and not yet included.
    bond_requested: Mutex<HashSet<Address>>,
    /// Manifests of uploads in progress by blob id, for chunk PUTs, with when each
    /// was last used; kept in the store's local records too, so an upload resumes
    /// across a restart without its manifest being sent again.
    uploads: Mutex<HashMap<Cid, OpenUpload>>,
    /// Consensus progress, from the engine's events.
    pub(crate) consensus_info: Mutex<crate::consensus::ConsensusInfo>,
    /// The node network, once started.
    pub(crate) net: std::sync::OnceLock<deed_net::NetHandle>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("keys", &self.keys).finish()
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (every
/// critical section leaves its data consistent before it can panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the consensus engine keeps its WAL and store: under the data directory,
/// or in a temporary directory for a node that keeps nothing.
#[derive(Debug)]
enum ConsensusHome {
    Dir(std::path::PathBuf),
    Temp(tempfile::TempDir),
}

impl ConsensusHome {
    fn path(&self) -> std::path::PathBuf {
        match self {
            ConsensusHome::Dir(p) => p.clone(),
            ConsensusHome::Temp(t) => t.path().to_path_buf(),
        }
    }
}

/// A started node: the shared core, the consensus engine once spawned, and the
/// shutdown switch.
pub struct Started {
    /// The node.
    pub node: Arc<Node>,
    consensus: Option<Supervisor>,
    home: ConsensusHome,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started").field("node", &self.node).finish()
    }
}

impl Node {
    /// Opens (or creates) the node's stores and state. Call [`Started::spawn`] to
    /// run its roles.
    pub fn open(
        cfg: Config,
        keys: NodeKeys,
        storage: Storage,
        genesis: Genesis,
    ) -> Result<Started, NodeError> {
        let valset = validator_set(&genesis.validators)?;
        let (state_store, blobs, home): (Box<dyn StateStore + Send>, AnyBlobStore, _) =
            match storage {
                Storage::Memory => (
                    Box::new(MemoryStateStore::new()),
                    MemoryBlobStore::new(cfg.blob_limits()).into(),
                    ConsensusHome::Temp(tempfile::tempdir().map_err(|source| NodeError::Io {
                        op: "create a temporary consensus directory",
                        source,
                    })?),
                ),
                Storage::Disk => {
                    let dir = &cfg.data_dir;
                    create_dir(dir)?;
                    let blob_dir = dir.join("blobs");
                    create_dir(&blob_dir)?;
                    let blobs: AnyBlobStore = match &cfg.s3 {
                        Some(s3) => {
                            ObjectBlobStore::s3(&s3.to_store_config(), cfg.blob_limits())?.into()
                        }
                        None => FsBlobStore::open(&blob_dir, cfg.blob_limits())?.into(),
                    };
                    (
                        Box::new(RedbStateStore::open(dir.join("state.redb"))?),
                        blobs,
                        ConsensusHome::Dir(dir.join("consensus")),
                    )
                }
            };
        let chain_id = cfg.chain_id;
        let mut chain = Chain::open(state_store, || {
            let validators: Vec<_> = genesis.validators.iter().map(|v| v.to_ledger()).collect();
            State::genesis_with_validators(
                chain_id,
                genesis.params,
                &genesis.allocations,
                &validators,
            )
            .map_err(|e| NodeError::Config(format!("genesis: {e}")))
        })?;
        if chain.state().meta().chain_id != cfg.chain_id {
            return Err(NodeError::Config(format!(
                "the data directory holds chain {}, the configuration says {}",
                chain.state().meta().chain_id,
                cfg.chain_id
            )));
        }
        let uploads = open_uploads(&mut chain)?;
        let metrics = Metrics::new().map_err(|e| NodeError::Config(format!("metrics: {e}")))?;
        metrics.height.set(chain.head().height as i64);
        let (blocks, _) = broadcast::channel(256);
        let node = Arc::new(Node {
            models: ModelCache::new(cfg.executor.model_cache),
            mempool: Mutex::new(Mempool::new(cfg.limits.max_mempool)),
            chain: Mutex::new(chain),
            blobs: Arc::new(blobs),
            metrics,
            blocks,
            valset,
            direct: Mutex::new(HashMap::new()),
            direct_in_flight: Mutex::new(HashMap::new()),
            traces: Mutex::new(HashMap::new()),
            bond_requested: Mutex::new(HashSet::new()),
            uploads: Mutex::new(uploads),
            consensus_info: Mutex::new(Default::default()),
            net: std::sync::OnceLock::new(),
            keys,
            cfg,
        });
        let (shutdown, _) = watch::channel(false);
        Ok(Started {
            node,
            consensus: None,
            home,
            shutdown,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The node's keys.
    pub fn keys(&self) -> &NodeKeys {
        &self.keys
    }

    /// Reads the committed state.
    pub fn with_state<R>(&self, f: impl FnOnce(&Chain) -> R) -> R {
        f(&lock(&self.chain))
    }

    /// Records durably that the direct call `stx` from `sender` (the signer its
    /// signature recovers to) was served (see [`Chain::mark_served`]) and queues it
    /// for settlement; a request the mempool refuses is forgotten again (it was
    /// never answered). Both happen under the chain's lock, so a block's commit
    /// sees the call either not at all or queued ([`Node::queue_served`]).
    pub(crate) fn serve_and_queue(
        &self,
        stx: SignedTransaction,
        sender: Address,
    ) -> Result<Hash, ApiError> {
        let hash = stx.hash();
        {
            let mut chain = lock(&self.chain);
            chain.mark_served(&stx, sender)?;
            let r = lock(&self.mempool).insert_signed_by(chain.state(), stx.clone(), sender);
            match r {
                Ok(_) => self.metrics.txs_accepted.inc(),
                Err(e) => {
                    self.metrics.txs_rejected.inc();
                    chain.unmark_served(&hash)?;
                    return Err(e.into());
                }
            }
        }
        self.gossip(&stx);
        Ok(hash)
    }

    /// Remembers, durably, the manifest of an upload in progress. Returns the upload of
    /// the same blob it replaces (cut into other chunks), whose staged chunks the
    /// caller discards: nothing would finish them.
    pub(crate) fn begin_upload(
        &self,
        m: deed_store::Manifest,
    ) -> Result<Option<deed_store::Manifest>, NodeError> {
        let mut uploads = lock(&self.uploads);
        if let Some(open) = uploads.get_mut(&m.id) {
            if open.manifest == m {
                open.touched = Instant::now();
                return Ok(None);
            }
        }
        lock(&self.chain).put_local(vec![(upload_key(&m.id), Some(m.encode()))])?;
        Ok(uploads
            .insert(m.id, OpenUpload::new(m))
            .map(|replaced| replaced.manifest))
    }

    /// The manifest of the upload of `cid` in progress; counts as a use of it.
    pub(crate) fn upload(&self, cid: &Cid) -> Option<deed_store::Manifest> {
        lock(&self.uploads).get_mut(cid).map(|open| {
            open.touched = Instant::now();
            open.manifest.clone()
        })
    }

    /// Forgets a finished upload.
    pub(crate) fn end_upload(&self, cid: &Cid) -> Result<(), NodeError> {
        if lock(&self.uploads).remove(cid).is_some() {
            lock(&self.chain).put_local(vec![(upload_key(cid), None)])?;
        }
        Ok(())
    }

    /// Forgets the uploads nobody used for `[limits] upload_idle_secs` and discards
    /// their staged chunks. Returns how many expired. An upload counts as used when
    /// its manifest is posted, a chunk of it arrives or its status is asked for;
    /// after a restart, the start counts as a use.
    pub(crate) async fn expire_uploads(&self) -> Result<usize, NodeError> {
        let idle = Duration::from_secs(self.cfg.limits.upload_idle_secs);
        if idle.is_zero() {
            return Ok(0);
        }
        let expired: Vec<deed_store::Manifest> = {
            let mut uploads = lock(&self.uploads);
            let ids: Vec<Cid> = uploads
                .iter()
                .filter(|(_, open)| open.touched.elapsed() >= idle)
                .map(|(id, _)| *id)
                .collect();
            if ids.is_empty() {
                return Ok(0);
            }
            // The records go while the map is locked, so that a manifest posted
            // again meanwhile keeps the record it writes.
            lock(&self.chain).put_local(ids.iter().map(|id| (upload_key(id), None)).collect())?;
            ids.iter()
                .filter_map(|id| uploads.remove(id))
                .map(|open| open.manifest)
                .collect()
        };
        // A manifest posted again between here and the abort loses the chunks that
        // arrive before the abort; finishing it then reports them missing, and the
        // client's next attempt sends them again.
        for m in &expired {
            if let Err(e) = self.blobs.abort(m).await {
                tracing::warn!(blob = %m.id, error = %e, "discarding an expired upload failed");
            }
        }
        self.metrics.uploads_expired.inc_by(expired.len() as u64);
        tracing::info!(uploads = expired.len(), "expired idle uploads");
        Ok(expired.len())
    }

    /// Queues the served direct calls the chain has not settled and the mempool does
    /// not hold: at start, those served before a restart; after a block, any the
    /// mempool refused before (it was full) or has dropped since. Returns the ones
    /// queued, for gossip once the locks are released. `quiet` logs refusals at
    /// debug level (a refusal repeats on every block until the call settles or its
    /// nonce is spent).
    fn queue_served(
        &self,
        chain: &Chain,
        mempool: &mut Mempool,
        quiet: bool,
    ) -> Vec<SignedTransaction> {
        let mut queued = Vec::new();
        for (stx, sender) in chain.served_requests() {
            let hash = stx.hash();
            if mempool.contains(&hash) {
                continue;
            }
            match mempool.insert_signed_by(chain.state(), stx.clone(), sender) {
                Ok(_) => {
                    self.metrics.txs_accepted.inc();
                    tracing::info!(request = %hash, "served direct call queued for settlement");
                    queued.push(stx);
                }
                Err(e) if quiet => tracing::debug!(request = %hash, error = %e,
                    "served direct call not queued for settlement yet"),
                Err(e) => tracing::warn!(request = %hash, error = %e,
                    "served direct call not queued for settlement"),
            }
        }
        queued
    }

    /// Consensus progress.
    pub fn consensus_info(&self) -> crate::consensus::ConsensusInfo {
        lock(&self.consensus_info).clone()
    }

    /// Whether this node's operator account is in the validator set of the next
    /// height (it votes).
    pub fn is_validator(&self) -> bool {
        let me = self.keys.validator.address();
        self.validators().iter().any(|(a, _)| *a == me)
    }

    /// The validators of the next height and their stake, from the ledger (or the
    /// set consensus started with, with its voting power, if the ledger names none).
    pub fn validators(&self) -> Vec<(Address, u128)> {
        let named = self.with_state(|c| c.state().consensus_validators());
        if named.is_empty() {
            return self
                .valset
                .validators()
                .iter()
                .map(|v| (v.address.0, u128::from(v.voting_power)))
                .collect();
        }
        named.into_iter().map(|(a, _, stake)| (a, stake)).collect()
    }

    /// Transactions waiting.
    pub fn mempool_len(&self) -> usize {
        lock(&self.mempool).len()
    }

    /// The oldest `n` waiting transactions, in the order a block takes them.
    pub fn pending(&self, n: usize) -> Vec<SignedTransaction> {
        lock(&self.mempool).peek(n)
    }

    /// A waiting transaction's sender and action name.
    pub fn pending_tx(&self, hash: &Hash) -> Option<(Address, String)> {
        lock(&self.mempool)
            .get(hash)
            .map(|(a, stx)| (a, stx.tx.action.name().to_owned()))
    }

    /// Subscribes to committed blocks.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.blocks.subscribe()
    }

    /// Checks a signed transaction, queues it and gossips it to the other nodes.
    pub fn submit(&self, stx: SignedTransaction) -> Result<Hash, TxRejection> {
        let hash = self.admit(stx.clone())?;
        self.gossip(&stx);
        Ok(hash)
    }

    /// Checks a signed transaction and queues it (gossip forwards what a node
    /// admits from its peers by itself).
    pub fn admit(&self, stx: SignedTransaction) -> Result<Hash, TxRejection> {
        let chain = lock(&self.chain);
        let r = lock(&self.mempool).insert(chain.state(), stx);
        match &r {
            Ok(_) => self.metrics.txs_accepted.inc(),
            Err(_) => self.metrics.txs_rejected.inc(),
        }
        r
    }

    /// Hands a transaction this node queued to the node network.
    fn gossip(&self, stx: &SignedTransaction) {
        if let Some(net) = self.net.get() {
            net.publish_tx(stx);
        }
    }

    /// Peers connected on the node network.
    pub fn peers(&self) -> usize {
        self.net.get().map_or(0, |n| n.peers())
    }

    /// Copies the node network's peer figures into the metrics.
    pub(crate) fn sample_net_metrics(&self) {
        let m = &self.metrics;
        m.peers.set(self.peers() as i64);
        if let Some(net) = self.net.get() {
            let load = |c: &std::sync::atomic::AtomicU64| {
                i64::try_from(c.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(i64::MAX)
            };
            m.peer_strikes.set(load(&net.stats().strikes));
            m.peer_bans.set(load(&net.stats().bans));
            m.net_dropped.set(
                load(&net.stats().commands_dropped)
                    .saturating_add(load(&net.stats().inbound_dropped)),
            );
        }
    }

    /// The nonce `sender`'s next transaction must carry and its spendable balance
    /// after the fees of its pending transactions.
    pub fn next_nonce(&self, sender: &Address) -> u64 {
        let chain = lock(&self.chain);
        let n = lock(&self.mempool).next_nonce(chain.state(), sender);
        n
    }

    /// Signs `action` as `key` with its next nonce and the minimum fee, and queues it.
    pub fn submit_own(&self, key: &SecretKey, action: Action) -> Result<Hash, ApiError> {
        let chain = lock(&self.chain);
        let mut mempool = lock(&self.mempool);
        let state = chain.state();
        let tx = Transaction {
            chain_id: state.meta().chain_id,
            nonce: mempool.next_nonce(state, &key.address()),
            fee: state.params().min_tx_fee,
            action,
        };
        let stx = tx.sign(key).map_err(ApiError::internal)?;
        let name = stx.tx.action.name();
        let hash = mempool.insert(state, stx.clone()).map_err(|e| {
            tracing::warn!(action = name, error = %e, "own transaction rejected");
            ApiError::from(e)
        })?;
        self.gossip(&stx);
        tracing::debug!(action = name, tx = %hash, "own transaction queued");
        Ok(hash)
    }

    /// The executor's endpoint as bonded on the ledger.
    pub fn executor_endpoint(&self) -> String {
        self.cfg
            .executor
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.cfg.http))
    }

    /// Keeps every executor of the node bonded and serving the models `[executor]
    /// models` names that are registered, or every registered model when it names
    /// none (the dev policy: the node's executors serve everything published on its
    /// chain). Queues a `Bond` for each executor that is unbonded or whose model
    /// list is stale and that has no bond waiting.
    fn refresh_bond(&self, state: &State, mempool: &mut Mempool) {
        let models: Vec<ModelId> = match &self.cfg.executor.models {
            None => state
                .models()
                .map(|(id, _)| id)
                .take(deed_types::tx::limits::MAX_MODELS_SERVED)
                .collect(),
            Some(ids) => {
                let chosen: std::collections::BTreeSet<ModelId> = ids
                    .iter()
                    .map(|&id| ModelId(id))
                    .filter(|&id| state.model(id).is_some())
                    .collect();
                chosen.into_iter().collect()
            }
        };
        for key in self.keys.executors() {
            self.refresh_bond_of(key, &models, state, mempool);
        }
    }

    fn refresh_bond_of(
        &self,
        key: &SecretKey,
        models: &[ModelId],
        state: &State,
        mempool: &mut Mempool,
    ) {
        let me = key.address();
        let mut requested = lock(&self.bond_requested);
        if requested.contains(&me) {
            return;
        }
        let amount = match state.executor(&me) {
            None => self.cfg.executor.stake,
            Some(e) if e.models != models => 0,
            Some(_) => return,
        };
        let tx = Transaction {
            chain_id: state.meta().chain_id,
            nonce: mempool.next_nonce(state, &me),
            fee: state.params().min_tx_fee,
            action: Action::Bond {
                amount,
                endpoint: self.executor_endpoint(),
                price: self.cfg.executor.price,
                models: models.to_vec(),
            },
        };
        match tx.sign(key) {
            Ok(stx) => match mempool.insert(state, stx.clone()) {
                Ok(_) => {
                    self.gossip(&stx);
                    requested.insert(me);
                }
                Err(e) => tracing::warn!(executor = %me, error = %e, "executor bond not queued"),
            },
            Err(e) => tracing::warn!(executor = %me, error = %e, "executor bond not signed"),
        }
    }

    /// A validator node whose operator account is bonded as an executor without this
    /// node's consensus key registers it, so the ledger counts it among the
    /// validators from the next height on (stake decides its power).
    fn refresh_consensus_key(&self, state: &State, mempool: &mut Mempool) {
        let me = self.keys.validator.address();
        let Some(e) = state.executor(&me) else { return };
        let key = self.keys.consensus.public_key().to_bytes();
        if e.consensus_key == Some(key)
            || mempool.any(|sender, stx| {
                sender == me && matches!(stx.tx.action, Action::SetConsensusKey { .. })
            })
        {
            return;
        }
        let chain_id = state.meta().chain_id;
        let (key, proof) =
            deed_types::prove_consensus_key(&self.keys.consensus.to_bytes(), chain_id, &me);
        let tx = Transaction {
            chain_id,
            nonce: mempool.next_nonce(state, &me),
            fee: state.params().min_tx_fee,
            action: Action::SetConsensusKey { key, proof },
        };
        match tx.sign(&self.keys.validator) {
            Ok(stx) => match mempool.insert(state, stx.clone()) {
                Ok(h) => {
                    self.gossip(&stx);
                    tracing::info!(tx = %h, "registering the consensus key")
                }
                Err(e) => tracing::warn!(error = %e, "consensus key registration not queued"),
            },
            Err(e) => tracing::warn!(error = %e, "consensus key registration not signed"),
        }
    }

    /// Fetches, verifies and loads the models a block's referee moves (and declined
    /// jobs) need.
    async fn referee_for(&self, block: &Block) -> RuntimeReferee {
        let mut referee = RuntimeReferee::new();
        let manifests: Vec<Cid> = {
            let chain = lock(&self.chain);
            let s = chain.state();
            block
                .txs
                .iter()
                .filter_map(|t| match &t.tx.action {
                    Action::Referee { dispute, .. } | Action::RefereeStaged { dispute, .. } => s
                        .dispute(*dispute)
                        .and_then(|d| s.job(d.job))
                        .map(|j| j.manifest),
                    Action::DeclineJob { job, .. } => s.job(*job).map(|j| j.manifest),
                    _ => None,
                })
                .collect()
        };
        for m in manifests {
            match self.model(&m).await {
                Ok(loaded) => referee.insert(m, loaded.model.clone()),
                Err(e) => {
                    tracing::warn!(manifest = %m, error = %e.message, "referee model unavailable")
                }
            }
        }
        referee
    }

    /// Reads a model version's manifest blob.
    pub async fn manifest(&self, cid: &Cid) -> Result<ModelManifest, ApiError> {
        Ok(self.model(cid).await?.manifest.clone())
    }

    /// The model of a version's manifest, loaded and verified; its blobs are
    /// fetched from peers first if this node lacks them.
    pub async fn model(&self, manifest: &Cid) -> Result<Arc<crate::runner::LoadedModel>, ApiError> {
        if !self.models.contains(manifest).await {
            crate::blobnet::ensure(self, manifest).await?;
            let bytes = deed_store::blob::download(self.blobs.as_ref(), manifest).await?;
            if let Ok(m) = serde_json::from_slice::<ModelManifest>(&bytes) {
                for f in &m.files {
                    crate::blobnet::ensure(self, &f.cid).await?;
                }
            }
        }
        self.models.get(&self.blobs, manifest).await
    }

    /// A blob's bytes, fetched from peers first if this node lacks it.
    pub async fn blob(&self, cid: &Cid) -> Result<Vec<u8>, ApiError> {
        crate::blobnet::ensure(self, cid).await?;
        Ok(deed_store::blob::download(self.blobs.as_ref(), cid).await?)
    }

    /// A job from the committed state.
    pub fn job(&self, id: JobId) -> Option<Job> {
        lock(&self.chain).state().job(id).cloned()
    }
}

/// Admits the transactions peers gossip, and tells the network which to forward:
/// what the mempool took, not what is malformed or signed wrong (whose sender loses
/// score), nor (without blame) duplicates, stale nonces and what does not fit.
async fn admit_gossip(
    node: Arc<Node>,
    net: deed_net::NetHandle,
    mut rx: tokio::sync::mpsc::Receiver<deed_net::NetEvent>,
) {
    while let Some(event) = rx.recv().await {
        match event {
            deed_net::NetEvent::Tx { id, from, tx } => {
                let verdict = match node.admit(*tx) {
                    Ok(_) => deed_net::Verdict::Accept,
                    Err(
                        TxRejection::Malformed(_)
                        | TxRejection::BadSignature(_)
                        | TxRejection::WrongChain { .. },
                    ) => deed_net::Verdict::Reject,
                    Err(_) => deed_net::Verdict::Ignore,
                };
                net.report(id, from, verdict);
            }
            deed_net::NetEvent::BlobRequest {
                request, channel, ..
            } => {
                let (node, net) = (node.clone(), net.clone());
                tokio::spawn(async move {
                    let response = crate::blobnet::serve(&node, request).await;
                    net.respond(channel, response);
                });
            }
        }
    }
}

/// Whether a `Bond` of `me` is still waiting (a bond dropped from the mempool
/// must not block the next one).
fn mempool_has_bond(mempool: &Mempool, me: Address) -> bool {
    mempool.any(|sender, stx| sender == me && matches!(stx.tx.action, Action::Bond { .. }))
}

/// An upload in progress.
struct OpenUpload {
    manifest: deed_store::Manifest,
    /// When it was last used (see [`Node::expire_uploads`]).
    touched: Instant,
}

impl OpenUpload {
    fn new(manifest: deed_store::Manifest) -> Self {
        OpenUpload {
            manifest,
            touched: Instant::now(),
        }
    }
}

/// How often the storage role looks for idle uploads: a tenth of the idle limit,
/// between one second and a minute.
fn upload_sweep_every(idle_secs: u64) -> Duration {
    Duration::from_millis(idle_secs.saturating_mul(100).clamp(1_000, 60_000))
}

/// The local-record key of the upload of `cid` in progress: `u` + the blob id.
fn upload_key(cid: &Cid) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(b'u');
    k.extend_from_slice(cid.0.as_bytes());
    k
}

/// The uploads in progress when the node last stopped (records that no longer
/// decode are dropped).
fn open_uploads(chain: &mut Chain) -> Result<HashMap<Cid, OpenUpload>, NodeError> {
    let mut uploads = HashMap::new();
    let mut stale = Vec::new();
    for (key, value) in chain.local_prefix(b"u")? {
        match deed_store::Manifest::decode(&value) {
            Ok(m) if key == upload_key(&m.id) => {
                uploads.insert(m.id, OpenUpload::new(m));
            }
            _ => stale.push((key, None)),
        }
    }
    if !stale.is_empty() {
        tracing::warn!(
            records = stale.len(),
            "dropping upload records that do not decode"
        );
        chain.put_local(stale)?;
    }
    Ok(uploads)
}

fn create_dir(dir: &Path) -> Result<(), NodeError> {
    std::fs::create_dir_all(dir).map_err(|source| NodeError::Io {
        op: "create data directory",
        source,
    })
}

impl Node {
    /// Applies and persists a decided block (loading the models its referee moves
    /// need first), then rechecks the mempool against the new state and tells the
    /// roles.
    pub async fn commit_block(&self, block: Block) -> Result<Arc<Committed>, NodeError> {
        let referee = self.referee_for(&block).await;
        let started = std::time::Instant::now();
        let mut queued = Vec::new();
        let committed = {
            let mut chain = lock(&self.chain);
            let committed = Arc::new(chain.commit(block, &referee)?);
            let included: HashSet<Hash> = committed
                .outcome
                .results
                .iter()
                .map(|r| r.tx_hash)
                .collect();
            let mut mempool = lock(&self.mempool);
            mempool.recheck(chain.state(), &included);
            // The executor's bond goes in before anyone can see this block, so a
            // request for a model registered here queues behind it.
            if self.cfg.roles.executor {
                for key in self.keys.executors() {
                    let me = key.address();
                    let bond_included = committed
                        .block
                        .txs
                        .iter()
                        .zip(&committed.outcome.results)
                        .any(|(t, r)| {
                            r.sender == Some(me) && matches!(t.tx.action, Action::Bond { .. })
                        });
                    if bond_included || !mempool_has_bond(&mempool, me) {
                        lock(&self.bond_requested).remove(&me);
                    }
                }
                self.refresh_bond(chain.state(), &mut mempool);
                queued = self.queue_served(&chain, &mut mempool, true);
            }
            if self.cfg.roles.validator {
                self.refresh_consensus_key(chain.state(), &mut mempool);
            }
            self.metrics.mempool.set(mempool.len() as i64);
            committed
        };
        queued.iter().for_each(|stx| self.gossip(stx));
        self.metrics.observe_block(&committed, started.elapsed());
        // No receivers is fine: nobody follows the chain yet.
        let _ = self.blocks.send(committed.clone());
        Ok(committed)
    }
}

impl Started {
    /// Starts the consensus engine and the role tasks. Returns the role tasks'
    /// handles; [`Started::stop`] stops everything.
    pub async fn spawn(&mut self) -> Result<Vec<tokio::task::JoinHandle<()>>, NodeError> {
        let mut handles = Vec::new();
        let node = self.node.clone();
        if node.cfg.roles.executor || node.cfg.roles.watcher {
            let rx = node.subscribe();
            handles.push(tokio::spawn(crate::roles::follow(node.clone(), rx)));
        }
        // The network before the bond: what the node queues must be gossiped.
        if node.net.get().is_none() {
            let cfg = deed_net::NetConfig::new(
                node.cfg.chain_id,
                node.cfg.net.listen,
                node.cfg.net.peers.clone(),
            );
            let (net, rx) = deed_net::start(cfg, node.keys.consensus.to_bytes())
                .await
                .map_err(|e| NodeError::Config(format!("node network: {e}")))?;
            let _ = node.net.set(net.clone());
            handles.push(tokio::spawn(admit_gossip(node.clone(), net, rx)));
        }
        if node.cfg.roles.storage && node.cfg.limits.upload_idle_secs > 0 {
            let node = node.clone();
            let every = upload_sweep_every(node.cfg.limits.upload_idle_secs);
            let mut stop = self.shutdown.subscribe();
            handles.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => return,
                    }
                    if let Err(e) = node.expire_uploads().await {
                        tracing::warn!(error = %e, "expiring idle uploads failed");
                    }
                }
            }));
        }
        if node.cfg.roles.executor {
            let queued = {
                let chain = lock(&node.chain);
                let mut mempool = lock(&node.mempool);
                let queued = node.queue_served(&chain, &mut mempool, false);
                // Bond before the first block so the executor is serving from height 1.
                node.refresh_bond(chain.state(), &mut mempool);
                queued
            };
            queued.iter().for_each(|stx| node.gossip(stx));
        }
        if self.consensus.is_none() {
            self.consensus = Some(Supervisor::start(node.clone(), self.home.path()).await?);
        }
        Ok(handles)
    }

    /// Whether the consensus engine stopped on its own (a fatal error).
    pub fn consensus_failed(&self) -> bool {
        self.consensus.as_ref().is_some_and(Supervisor::failed)
    }

    /// A receiver that turns true on shutdown.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Signals shutdown to the API and the roles, then stops the consensus engine
    /// and waits until its actors, network and WAL are released.
    pub async fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(c) = self.consensus.take() {
            c.stop().await;
        }
    }
}
