//! The node network: how Deed nodes share what is not consensus.
//!
//! Consensus messages travel on malachite's own libp2p network (`deed-consensus`);
//! everything else travels here, on a second libp2p swarm (TCP, noise, yamux) with
//! the same ed25519 node key:
//!
//! - **Transaction gossip** (gossipsub, topic `/deed/<chain>/tx/1`): a transaction
//!   submitted to any node reaches every mempool, so whichever validator proposes
//!   next can include it. Messages are signed by their origin, identified by the
//!   blake3 hash of their bytes, and validated by the application before they are
//!   forwarded ([`NetHandle::report`]): a node forwards only transactions its own
//!   mempool accepted. Peers that send invalid transactions lose gossipsub score and
//!   are grey-listed.
//! - **Bans**: a peer that keeps sending invalid data (transactions the
//!   application rejects, undecodable gossip, blob chunks or manifests that fail
//!   their hashes, reported with [`NetHandle::penalize`]) collects strikes; at
//!   [`NetConfig::ban_after`] strikes it is disconnected and refused, inbound and
//!   outbound, for [`NetConfig::ban_for`].
//! - **Blob exchange** (request-response, protocol `/deed/blob/1`): a node that
//!   lacks a blob (a model, a job input) asks its peers for its manifest and then
//!   its chunks ([`NetHandle::request`]); the application serves the blobs it holds
//!   ([`NetEvent::BlobRequest`], [`NetHandle::respond`]) and checks every chunk
//!   against the manifest and the whole blob against its id before keeping it.
//! - **Peers**: the configured peers are dialled at start and redialled while they
//!   are away; identify and ping keep connections honest. [`NetHandle::peers`]
//!   counts the connected ones.
//!
//! Every queue is bounded: commands and inbound transactions are dropped (and
//! counted) when the other side does not keep up, never buffered without limit.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deed_types::{encoding, SignedTransaction};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageAuthenticity, MessageId};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::StreamProtocol;
use libp2p::{identify, noise, ping, tcp, yamux, Multiaddr, PeerId, Swarm};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// Largest gossiped transaction, in bytes.
pub const MAX_TX_BYTES: usize = 256 * 1024;

/// Most transactions kept for a later try while no peer listens.
const UNSENT_MAX: usize = 4096;

/// Commands (publications, verdicts, blob requests) waiting for the network task,
/// at most. At a thousand transactions a second a node makes about four commands a
/// second per transaction in the network (one publication or one verdict per
/// copy it sees), so this holds a few seconds of a busy network's work.
const COMMAND_CAPACITY: usize = 16 * 1024;

/// How often they are retried.
const UNSENT_RETRY: Duration = Duration::from_millis(100);

/// How long such a transaction is retried.
const UNSENT_TTL: Duration = Duration::from_secs(300);

/// Largest blob-exchange answer, in bytes: a chunk of the largest size blob stores
/// accept (4 MiB), with room for the framing.
pub const MAX_BLOB_RESPONSE: u64 = 4 * 1024 * 1024 + 64 * 1024;

/// A question about a blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    /// The blob id (its CID bytes).
    pub cid: Vec<u8>,
    /// A chunk's index, or `None` for the blob's manifest.
    pub chunk: Option<u32>,
}

/// The answer: the manifest's or chunk's bytes, or `None` if the peer lacks them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobResponse {
    /// The bytes.
    pub data: Option<Vec<u8>>,
}

/// How the network runs.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// The chain id (it names the topics, so chains never mix).
    pub chain_id: u64,
    /// Address to listen on; port 0 picks one.
    pub listen: SocketAddr,
    /// Peers to stay connected to.
    pub peers: Vec<SocketAddr>,
    /// Inbound transactions waiting for the application, at most.
    pub inbound_capacity: usize,
    /// How often away peers are redialled.
    pub redial: Duration,
    /// Strikes (invalid messages) after which a peer is banned.
    pub ban_after: u32,
    /// How long a ban lasts; strikes older than this are forgotten.
    pub ban_for: Duration,
}

impl NetConfig {
    /// A configuration with the usual limits.
    pub fn new(chain_id: u64, listen: SocketAddr, peers: Vec<SocketAddr>) -> NetConfig {
        NetConfig {
            chain_id,
            listen,
            peers,
            inbound_capacity: 4096,
            redial: Duration::from_secs(2),
            ban_after: 5,
            ban_for: Duration::from_secs(600),
        }
    }
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The node key is not a valid ed25519 secret.
    #[error("node key: {0}")]
    Key(String),
    /// Building the transport or a behaviour failed.
    #[error("network setup: {0}")]
    Setup(String),
    /// Listening failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// What the application thinks of a gossiped transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: forward it.
    Accept,
    /// Invalid (bad signature, wrong chain, malformed): drop it and penalise the
    /// peer that sent it.
    Reject,
    /// Not for now (a duplicate, a stale nonce, a full pool): drop it without
    /// blame.
    Ignore,
}

/// Something the network hands to the application.
#[derive(Debug)]
pub enum NetEvent {
    /// A peer asks for a blob's manifest or chunk; answer with
    /// [`NetHandle::respond`].
    BlobRequest {
        /// The peer.
        from: PeerId,
        /// What it asks.
        request: BlobRequest,
        /// Where the answer goes.
        channel: ResponseChannel<BlobResponse>,
    },
    /// A gossiped transaction; answer with [`NetHandle::report`].
    Tx {
        /// The gossip message id.
        id: MessageId,
        /// The peer that forwarded it.
        from: PeerId,
        /// The transaction.
        tx: Box<SignedTransaction>,
    },
}

enum Command {
    Publish(Vec<u8>),
    Report(MessageId, PeerId, Verdict),
    Request(
        PeerId,
        BlobRequest,
        oneshot::Sender<Result<BlobResponse, String>>,
    ),
    Respond(ResponseChannel<BlobResponse>, BlobResponse),
    Penalize(PeerId),
}

/// Counters for what was dropped or refused.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Inbound transactions dropped because the application did not keep up.
    pub inbound_dropped: AtomicU64,
    /// Commands dropped because the network task did not keep up.
    pub commands_dropped: AtomicU64,
    /// Gossip messages refused before the application saw them (undecodable).
    pub malformed: AtomicU64,
    /// Invalid messages counted against peers (strikes).
    pub strikes: AtomicU64,
    /// Peers banned for sending invalid data.
    pub bans: AtomicU64,
}

/// What the network task and the handles share.
#[derive(Debug, Default)]
struct Shared {
    peers: AtomicUsize,
    connected: std::sync::Mutex<Vec<PeerId>>,
    stats: NetStats,
    listen: std::sync::Mutex<Vec<Multiaddr>>,
}

/// The application's handle on the running network. The network stops when the
/// last handle is dropped.
#[derive(Clone)]
pub struct NetHandle {
    cmd: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    local: PeerId,
}

impl std::fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetHandle")
            .field("peer_id", &self.local)
            .finish()
    }
}

impl NetHandle {
    /// Gossips a transaction this node accepted.
    pub fn publish_tx(&self, tx: &SignedTransaction) {
        self.send(Command::Publish(encoding::encode(tx)));
    }

    /// Answers a [`NetEvent::Tx`].
    pub fn report(&self, id: MessageId, from: PeerId, verdict: Verdict) {
        self.send(Command::Report(id, from, verdict));
    }

    fn send(&self, c: Command) {
        if self.cmd.try_send(c).is_err() {
            self.shared
                .stats
                .commands_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Peers connected now.
    pub fn peers(&self) -> usize {
        self.shared.peers.load(Ordering::Relaxed)
    }

    /// The peers connected now.
    pub fn connected(&self) -> Vec<PeerId> {
        self.shared
            .connected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks `peer` about a blob. Fails when the peer is unreachable, does not
    /// answer in time, or the network stopped.
    pub async fn request(
        &self,
        peer: PeerId,
        request: BlobRequest,
    ) -> Result<BlobResponse, String> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Request(peer, request, tx))
            .await
            .map_err(|_| "the node network stopped".to_string())?;
        rx.await
            .map_err(|_| "the node network stopped".to_string())?
    }

    /// Answers a [`NetEvent::BlobRequest`].
    pub fn respond(&self, channel: ResponseChannel<BlobResponse>, response: BlobResponse) {
        self.send(Command::Respond(channel, response));
    }

    /// Reports that `peer` sent invalid data outside gossip (a blob chunk or
    /// manifest that failed its hash): a strike towards a ban.
    pub fn penalize(&self, peer: PeerId) {
        self.send(Command::Penalize(peer));
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.local
    }

    /// The addresses the swarm listens on (once bound).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.shared
            .listen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What was dropped or refused so far.
    pub fn stats(&self) -> &NetStats {
        &self.shared.stats
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    blobs: request_response::cbor::Behaviour<BlobRequest, BlobResponse>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    blocked: libp2p::allow_block_list::Behaviour<libp2p::allow_block_list::BlockedPeers>,
}

fn multiaddr(a: SocketAddr) -> Multiaddr {
    let ip = match a.ip() {
        std::net::IpAddr::V4(v4) => Protocol::Ip4(v4),
        std::net::IpAddr::V6(v6) => Protocol::Ip6(v6),
    };
    Multiaddr::empty().with(ip).with(Protocol::Tcp(a.port()))
}

fn tx_topic(chain_id: u64) -> IdentTopic {
    IdentTopic::new(format!("/deed/{chain_id}/tx/1"))
}

fn gossip(topic: &IdentTopic) -> Result<gossipsub::Behaviour, NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    let config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(500))
        // Transactions carry their senders' signatures and are checked by the
        // application, and a message's id is the hash of its bytes: an envelope
        // signature per message and hop would only cost time.
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| {
            MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
        })
        .max_transmit_size(MAX_TX_BYTES + 4 * 1024)
        // Small networks: a mesh of whoever is there.
        .mesh_n_low(1)
        .mesh_n(4)
        .mesh_n_high(8)
        .mesh_outbound_min(0)
        .flood_publish(true)
        .build()
        .map_err(|e| setup(&e))?;
    let mut g =
        gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config).map_err(|e| setup(&e))?;
    let mut params = gossipsub::PeerScoreParams::default();
    params.topics.insert(
        topic.hash(),
        gossipsub::TopicScoreParams {
            topic_weight: 1.0,
            invalid_message_deliveries_weight: -100.0,
            invalid_message_deliveries_decay: 0.9,
            ..gossipsub::TopicScoreParams::default()
        },
    );
    let thresholds = gossipsub::PeerScoreThresholds {
        gossip_threshold: -100.0,
        publish_threshold: -200.0,
        graylist_threshold: -300.0,
        ..gossipsub::PeerScoreThresholds::default()
    };
    g.with_peer_score(params, thresholds)
        .map_err(|e| NetError::Setup(e.to_string()))?;
    g.subscribe(topic).map_err(|e| setup(&e))?;
    Ok(g)
}

/// Starts the network with the node's ed25519 secret key. Returns the handle and
/// the inbound events; the swarm runs until every handle is dropped.
pub async fn start(
    cfg: NetConfig,
    secret: [u8; 32],
) -> Result<(NetHandle, mpsc::Receiver<NetEvent>), NetError> {
    let key = Keypair::ed25519_from_bytes(secret).map_err(|e| NetError::Key(e.to_string()))?;
    let topic = tx_topic(cfg.chain_id);
    let codec = request_response::cbor::codec::Codec::<BlobRequest, BlobResponse>::default()
        .set_request_size_maximum(4 * 1024)
        .set_response_size_maximum(MAX_BLOB_RESPONSE);
    let behaviour = Behaviour {
        gossipsub: gossip(&topic)?,
        blobs: request_response::Behaviour::with_codec(
            codec,
            [(StreamProtocol::new("/deed/blob/1"), ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(20))
                .with_max_concurrent_streams(32),
        ),
        identify: identify::Behaviour::new(identify::Config::new(
            "/deed/net/1".into(),
            key.public(),
        )),
        ping: ping::Behaviour::new(ping::Config::new()),
        blocked: Default::default(),
    };
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Setup(e.to_string()))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| NetError::Setup(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    swarm
        .listen_on(multiaddr(cfg.listen))
        .map_err(|e| NetError::Listen {
            addr: cfg.listen,
            reason: e.to_string(),
        })?;
    let local = *swarm.local_peer_id();
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (ev_tx, ev_rx) = mpsc::channel(cfg.inbound_capacity.max(1));
    let shared = Arc::new(Shared::default());
    let handle = NetHandle {
        cmd: cmd_tx,
        shared: shared.clone(),
        local,
    };
    let task = Task {
        peers: cfg.peers.iter().map(|a| multiaddr(*a)).collect(),
        connected_addrs: HashSet::new(),
        pending: HashMap::new(),
        unsent: std::collections::VecDeque::new(),
        topic,
        shared,
        events: ev_tx,
        strikes: HashMap::new(),
        banned: HashMap::new(),
        ban_after: cfg.ban_after.max(1),
        ban_for: cfg.ban_for,
    };
    tokio::spawn(task.run(swarm, cmd_rx, cfg.redial));
    Ok((handle, ev_rx))
}

/// Publishes `bytes`; false when it should be tried again later (no peer listens,
/// or their queues are full).
fn try_publish(swarm: &mut Swarm<Behaviour>, topic: &IdentTopic, bytes: &[u8]) -> bool {
    match swarm
        .behaviour_mut()
        .gossipsub
        .publish(topic.clone(), bytes.to_vec())
    {
        Ok(_) => true,
        Err(
            gossipsub::PublishError::NoPeersSubscribedToTopic
            | gossipsub::PublishError::AllQueuesFull(_),
        ) => false,
        // A duplicate of what this node already sent or forwarded.
        Err(e) => {
            debug!(error = %e, "transaction not gossiped");
            true
        }
    }
}

/// Tells gossipsub whether to forward a message (and whom to blame for it).
fn judge(swarm: &mut Swarm<Behaviour>, id: &MessageId, from: &PeerId, a: MessageAcceptance) {
    swarm
        .behaviour_mut()
        .gossipsub
        .report_message_validation_result(id, from, a);
}

struct Task {
    /// Configured peers' addresses.
    peers: Vec<Multiaddr>,
    /// Addresses of configured peers with an open connection we dialled.
    connected_addrs: HashSet<Multiaddr>,
    /// Blob requests waiting for their answer.
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<BlobResponse, String>>>,
    /// Transactions published while no peer listened (or had room), in order, retried
    /// every `UNSENT_RETRY`.
    unsent: std::collections::VecDeque<(Vec<u8>, tokio::time::Instant)>,
    topic: IdentTopic,
    shared: Arc<Shared>,
    events: mpsc::Sender<NetEvent>,
    /// Strikes per peer, with the time of the last one.
    strikes: HashMap<PeerId, (u32, tokio::time::Instant)>,
    /// Banned peers, until when.
    banned: HashMap<PeerId, tokio::time::Instant>,
    ban_after: u32,
    ban_for: Duration,
}

impl Task {
    async fn run(
        mut self,
        mut swarm: Swarm<Behaviour>,
        mut commands: mpsc::Receiver<Command>,
        redial: Duration,
    ) {
        let mut tick = tokio::time::interval(redial);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry = tokio::time::interval(UNSENT_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.lift_bans(&mut swarm);
                    self.redial(&mut swarm);
                }
                _ = retry.tick(), if !self.unsent.is_empty() => self.retry_unsent(&mut swarm),
                c = commands.recv() => match c {
                    Some(c) => self.command(&mut swarm, c),
                    // Every handle is gone: the node stopped.
                    None => return,
                },
                e = swarm.select_next_some() => self.event(&mut swarm, e),
            }
        }
    }

    fn redial(&mut self, swarm: &mut Swarm<Behaviour>) {
        for addr in &self.peers {
            if !self.connected_addrs.contains(addr) {
                if let Err(e) = swarm.dial(addr.clone()) {
                    debug!(%addr, error = %e, "dial");
                }
            }
        }
    }

    fn command(&mut self, swarm: &mut Swarm<Behaviour>, c: Command) {
        match c {
            Command::Publish(bytes) => self.publish(swarm, bytes),
            Command::Report(id, from, verdict) => {
                let acceptance = match verdict {
                    Verdict::Accept => MessageAcceptance::Accept,
                    Verdict::Reject => {
                        self.strike(swarm, from);
                        MessageAcceptance::Reject
                    }
                    Verdict::Ignore => MessageAcceptance::Ignore,
                };
                judge(swarm, &id, &from, acceptance);
            }
            Command::Request(peer, request, reply) => {
                let id = swarm.behaviour_mut().blobs.send_request(&peer, request);
                self.pending.insert(id, reply);
            }
            Command::Respond(channel, response) => {
                // The peer may have given up waiting: nothing to do then.
                let _ = swarm.behaviour_mut().blobs.send_response(channel, response);
            }
            Command::Penalize(peer) => self.strike(swarm, peer),
        }
    }

    /// Counts one invalid message against `peer`, banning it at `ban_after`.
    fn strike(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId) {
        self.shared.stats.strikes.fetch_add(1, Ordering::Relaxed);
        let now = tokio::time::Instant::now();
        let entry = self.strikes.entry(peer).or_insert((0, now));
        if now.duration_since(entry.1) > self.ban_for {
            entry.0 = 0;
        }
        *entry = (entry.0.saturating_add(1), now);
        if entry.0 < self.ban_after {
            return;
        }
        self.strikes.remove(&peer);
        self.banned.insert(peer, now + self.ban_for);
        // Closes its connections and refuses new ones, both ways.
        swarm.behaviour_mut().blocked.block_peer(peer);
        self.shared.stats.bans.fetch_add(1, Ordering::Relaxed);
        warn!(%peer, for_s = self.ban_for.as_secs(), "peer banned for sending invalid data");
    }

    fn lift_bans(&mut self, swarm: &mut Swarm<Behaviour>) {
        let now = tokio::time::Instant::now();
        let blocked = &mut swarm.behaviour_mut().blocked;
        self.banned.retain(|peer, until| {
            let keep = *until > now;
            if !keep {
                blocked.unblock_peer(*peer);
                info!(%peer, "ban lifted");
            }
            keep
        });
        self.strikes
            .retain(|_, (_, last)| now.duration_since(*last) <= self.ban_for);
    }

    fn event(&mut self, swarm: &mut Swarm<Behaviour>, e: SwarmEvent<BehaviourEvent>) {
        match e {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "node network listening");
                self.shared
                    .listen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                if endpoint.is_dialer() {
                    self.connected_addrs
                        .insert(endpoint.get_remote_address().clone());
                }
                debug!(%peer_id, "peer connected");
                self.count(swarm);
            }
            SwarmEvent::ConnectionClosed {
                peer_id, endpoint, ..
            } => {
                if endpoint.is_dialer() {
                    self.connected_addrs.remove(endpoint.get_remote_address());
                }
                debug!(%peer_id, "peer connection closed");
                self.count(swarm);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                // Canonical encoding and size limits; the signature and the chain
                // are the application's to check.
                let tx = (message.data.len() <= MAX_TX_BYTES)
                    .then(|| SignedTransaction::decode(&message.data).ok())
                    .flatten();
                let Some(tx) = tx else {
                    self.shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    self.strike(swarm, propagation_source);
                    judge(
                        swarm,
                        &message_id,
                        &propagation_source,
                        MessageAcceptance::Reject,
                    );
                    return;
                };
                let event = NetEvent::Tx {
                    id: message_id.clone(),
                    from: propagation_source,
                    tx: Box::new(tx),
                };
                if self.events.try_send(event).is_err() {
                    self.shared
                        .stats
                        .inbound_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    judge(
                        swarm,
                        &message_id,
                        &propagation_source,
                        MessageAcceptance::Ignore,
                    );
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Blobs(e)) => self.blob_event(e),
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                debug!(error = %error, "dial failed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Error {
                peer_id,
                error,
                ..
            })) => warn!(%peer_id, error = %error, "identify"),
            _ => {}
        }
    }

    /// Publishes, keeping what found no peer to listen (or no room in their
    /// queues) for a later try: a transaction queued before the node's peers
    /// connected must still reach them. Order is kept: while anything waits, what
    /// comes next waits behind it, because a sender's transactions must arrive in
    /// nonce order (a mempool drops one whose predecessor it has not seen, and
    /// gossip never offers it again).
    fn publish(&mut self, swarm: &mut Swarm<Behaviour>, bytes: Vec<u8>) {
        if self.unsent.is_empty() && try_publish(swarm, &self.topic, &bytes) {
            return;
        }
        if self.unsent.len() >= UNSENT_MAX {
            self.unsent.pop_front();
            self.shared
                .stats
                .commands_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        self.unsent.push_back((bytes, tokio::time::Instant::now()));
    }

    /// Publishes what waits, in order, until one still finds no room.
    fn retry_unsent(&mut self, swarm: &mut Swarm<Behaviour>) {
        let now = tokio::time::Instant::now();
        while let Some((bytes, since)) = self.unsent.front() {
            if now.duration_since(*since) < UNSENT_TTL && !try_publish(swarm, &self.topic, bytes) {
                return;
            }
            self.unsent.pop_front();
        }
    }

    fn blob_event(&mut self, e: request_response::Event<BlobRequest, BlobResponse>) {
        use request_response::{Event, Message};
        match e {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let event = NetEvent::BlobRequest {
                    from: peer,
                    request,
                    channel,
                };
                // Dropping the channel tells the peer no answer comes.
                if self.events.try_send(event).is_err() {
                    self.shared
                        .stats
                        .inbound_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, error = %error, "blob request not answered");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn count(&self, swarm: &Swarm<Behaviour>) {
        let peers: Vec<PeerId> = swarm.connected_peers().copied().collect();
        self.shared.peers.store(peers.len(), Ordering::Relaxed);
        *self
            .shared
            .connected
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = peers;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use deed_types::{Action, Address, SecretKey, Transaction};
    use std::time::Instant;

    fn free_addr() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    fn tx(nonce: u64) -> SignedTransaction {
        Transaction {
            chain_id: 9,
            nonce,
            fee: 1,
            action: Action::Transfer {
                to: Address([3; 20]),
                amount: 5,
            },
        }
        .sign(&SecretKey::from_seed(b"sender"))
        .unwrap()
    }

    async fn node(
        seed: u8,
        peers: Vec<SocketAddr>,
    ) -> (NetHandle, mpsc::Receiver<NetEvent>, SocketAddr) {
        let addr = free_addr();
        let (h, rx) = start(NetConfig::new(9, addr, peers), [seed; 32])
            .await
            .unwrap();
        (h, rx, addr)
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn next_tx(
        rx: &mut mpsc::Receiver<NetEvent>,
        limit: Duration,
    ) -> Option<(MessageId, PeerId, SignedTransaction)> {
        match tokio::time::timeout(limit, rx.recv()).await {
            Ok(Some(NetEvent::Tx { id, from, tx })) => Some((id, from, *tx)),
            _ => None,
        }
    }

    /// A peer asks for chunks; the serving side answers from its own data, and
    /// what it lacks comes back as `None`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blob_requests_reach_the_holder_and_its_answers_come_back() {
        let (b, mut b_rx, b_addr) = node(2, vec![]).await;
        let (a, _a_rx, _) = node(1, vec![b_addr]).await;
        until("connected", || a.peers() == 1).await;
        let server = b.clone();
        tokio::spawn(async move {
            while let Some(ev) = b_rx.recv().await {
                if let NetEvent::BlobRequest {
                    request, channel, ..
                } = ev
                {
                    let data = (request.cid == b"known" && request.chunk == Some(1))
                        .then(|| vec![7u8; 3 << 20]);
                    server.respond(channel, BlobResponse { data });
                }
            }
        });
        let peer = a.connected()[0];
        assert_eq!(peer, b.peer_id());
        let got = a
            .request(
                peer,
                BlobRequest {
                    cid: b"known".to_vec(),
                    chunk: Some(1),
                },
            )
            .await
            .unwrap();
        assert_eq!(got.data.map(|d| d.len()), Some(3 << 20));
        let none = a
            .request(
                peer,
                BlobRequest {
                    cid: b"other".to_vec(),
                    chunk: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(none.data, None);
    }

    /// A - B - C in a line: what A publishes reaches C only through B, and only
    /// once B accepted it; what B rejects stops at B; bytes that are not a
    /// transaction never reach the application.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gossip_forwards_only_what_the_middle_node_accepts() {
        let (b, mut b_rx, b_addr) = node(2, vec![]).await;
        let (a, _a_rx, _) = node(1, vec![b_addr]).await;
        let (c, mut c_rx, _) = node(3, vec![b_addr]).await;
        until("connections", || {
            b.peers() == 2 && a.peers() == 1 && c.peers() == 1
        })
        .await;
        // Let the gossipsub meshes form (a heartbeat or two).
        tokio::time::sleep(Duration::from_millis(1500)).await;

        a.publish_tx(&tx(0));
        let (id, from, got) = next_tx(&mut b_rx, Duration::from_secs(10)).await.unwrap();
        assert_eq!(got, tx(0));
        assert_eq!(from, a.peer_id());
        assert!(
            next_tx(&mut c_rx, Duration::from_millis(700))
                .await
                .is_none(),
            "forwarded before validation"
        );
        b.report(id, from, Verdict::Accept);
        let (_, from_c, got_c) = next_tx(&mut c_rx, Duration::from_secs(10)).await.unwrap();
        assert_eq!(got_c, tx(0));
        assert_eq!(from_c, b.peer_id());

        a.publish_tx(&tx(1));
        let (id, from, _) = next_tx(&mut b_rx, Duration::from_secs(10)).await.unwrap();
        b.report(id, from, Verdict::Reject);
        assert!(
            next_tx(&mut c_rx, Duration::from_secs(2)).await.is_none(),
            "a rejected tx travelled on"
        );

        // Not a transaction: refused by the network layer of B itself.
        a.send(Command::Publish(vec![0xde, 0xad]));
        until("malformed counted", || {
            b.stats().malformed.load(Ordering::Relaxed) == 1
        })
        .await;
        assert!(next_tx(&mut b_rx, Duration::from_millis(500))
            .await
            .is_none());
    }

    /// Strikes add up to a ban: the peer is cut off and kept away, though it keeps
    /// dialling, until the ban ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_keeps_sending_invalid_data_is_banned_for_a_while() {
        let b_addr = free_addr();
        let mut b_cfg = NetConfig::new(9, b_addr, vec![]);
        b_cfg.ban_for = Duration::from_secs(3);
        let (b, _b_rx) = start(b_cfg, [2; 32]).await.unwrap();
        let mut a_cfg = NetConfig::new(9, free_addr(), vec![b_addr]);
        a_cfg.redial = Duration::from_millis(200);
        let (a, _a_rx) = start(a_cfg, [1; 32]).await.unwrap();
        until("connected", || b.peers() == 1).await;
        for _ in 0..4 {
            b.penalize(a.peer_id());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(b.peers(), 1, "four strikes are not a ban");
        b.penalize(a.peer_id());
        until("banned", || b.peers() == 0 && a.peers() == 0).await;
        assert_eq!(b.stats().bans.load(Ordering::Relaxed), 1);
        // A redials every 200 ms; B refuses it while the ban lasts.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(b.peers(), 0, "a banned peer got back in");
        until("ban lifted and reconnected", || b.peers() == 1).await;
    }

    /// What a node publishes before any peer listens waits, and reaches the peer
    /// that comes later in the order it was published (nonce order matters).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transactions_published_before_any_peer_arrive_later_in_order() {
        let b_addr = free_addr();
        let mut a_cfg = NetConfig::new(9, free_addr(), vec![b_addr]);
        a_cfg.redial = Duration::from_millis(200);
        let (a, _a_rx) = start(a_cfg, [1; 32]).await.unwrap();
        for n in 0..6 {
            a.publish_tx(&tx(n));
        }
        let (b, mut b_rx) = start(NetConfig::new(9, b_addr, vec![]), [2; 32])
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 6 {
            let (id, from, t) = next_tx(&mut b_rx, Duration::from_secs(15))
                .await
                .expect("a waiting transaction never arrived");
            b.report(id, from, Verdict::Accept);
            got.push(t.tx.nonce);
        }
        assert_eq!(got, (0..6).collect::<Vec<_>>());
    }

    /// A configured peer that goes away is dialled again when it comes back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_restarts_is_redialled() {
        let b_addr = free_addr();
        let (b, _b_rx) = start(NetConfig::new(9, b_addr, vec![]), [2; 32])
            .await
            .unwrap();
        let mut cfg = NetConfig::new(9, free_addr(), vec![b_addr]);
        cfg.redial = Duration::from_millis(200);
        let (a, _a_rx) = start(cfg, [1; 32]).await.unwrap();
        until("connected", || a.peers() == 1).await;
        drop(b);
        until("disconnected", || a.peers() == 0).await;
        let (b2, _rx) = start(NetConfig::new(9, b_addr, vec![]), [2; 32])
            .await
            .unwrap();
        until("reconnected", || a.peers() == 1 && b2.peers() == 1).await;
    }
}
