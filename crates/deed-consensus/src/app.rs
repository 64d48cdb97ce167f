//! The application side of malachite's channel API: answers every [`AppMsg`] the
//! engine sends, builds and streams this node's proposals, validates the proposals
//! of others, commits decided blocks to the [`Chain`] and serves value sync.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use malachitebft_app_channel::app::engine::host::Next;
use malachitebft_app_channel::app::streaming::StreamMessage;
use malachitebft_app_channel::app::types::sync::RawDecidedValue;
use malachitebft_app_channel::app::types::{LocallyProposedValue, PeerId, ProposedValue};
use malachitebft_app_channel::{AppMsg, Channels, NetworkMsg};
use malachitebft_core_types::{CommitCertificate, Round, Validity};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use deed_ledger::next_block;
use deed_types::{encoding, tx_root, Block};

use crate::chain::{Chain, ChainError, Mempool};
use crate::signing::DeedSigner;
use crate::store::{ConsensusStore, Slot, StoreError};
use crate::streaming::{
    expected_builder, fin_digest, stream_block, Assembled, Inserted, PartStreams,
};
use crate::types::{BlockValue, DeedCtx, Height, PartInit, ProposalPart, ValAddr, ValidatorSet};

/// Most proposals kept for one (height, round): an honest proposer sends one, so
/// more is equivocation, and storing every copy would let one validator fill the
/// disk.
const MAX_PROPOSALS_PER_ROUND: usize = 4;

/// Most proposals kept for one height (over all rounds, received early or not).
const MAX_PROPOSALS_PER_HEIGHT: usize = 256;

/// Block size and pacing.
#[derive(Clone, Debug)]
pub struct BlockParams {
    /// Largest encoded block this node proposes or accepts. It must stay well below
    /// the gossip message limit, since the block travels as a proposal and as parts.
    pub max_block_bytes: usize,
    /// Most transactions per block.
    pub max_block_txs: usize,
    /// Least time between a commit and the next proposal.
    pub block_interval: Duration,
    /// How long a proposer waits for transactions before proposing an empty block
    /// (capped at 80% of the propose timeout). Empty blocks keep coming because the
    /// ledger's deadlines are counted in heights.
    pub empty_block_interval: Duration,
}

impl Default for BlockParams {
    fn default() -> Self {
        BlockParams {
            max_block_bytes: 1024 * 1024,
            max_block_txs: 10_000,
            block_interval: Duration::from_millis(250),
            empty_block_interval: Duration::from_secs(1),
        }
    }
}

/// Why the app loop stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The consensus store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A decided block could not be committed. If the ledger rejected it, this
    /// node's state has diverged from the network's and it must not go on.
    #[error("committing decided block {height}: {source}")]
    Commit {
        /// The block's height.
        height: u64,
        /// Why.
        #[source]
        source: ChainError,
    },
    /// The engine's channel closed (the engine stopped).
    #[error("the consensus engine stopped")]
    EngineStopped,
}

/// Why a complete proposal is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidProposal {
    /// `Init` names someone other than the round's proposer.
    #[error("{got} is not the proposer of this round ({expected})")]
    WrongProposer {
        /// The round's proposer.
        expected: ValAddr,
        /// Who `Init` names.
        got: ValAddr,
    },
    /// The stream did not come from the proposer's node.
    #[error("stream sent by peer {0}, not by the proposer's node")]
    WrongPeer(PeerId),
    /// The `Fin` signature does not verify.
    #[error("bad proposal signature")]
    BadSignature,
    /// A header field does not match the chain.
    #[error("header {field} does not match")]
    Header {
        /// The field.
        field: &'static str,
    },
    /// The block is too large.
    #[error("block of {len} bytes exceeds {max}")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A transaction breaks its size limits.
    #[error("transaction over its limits")]
    TxLimits,
}

/// The app: the engine's counterpart.
pub struct App<C: Chain, M: Mempool + ?Sized> {
    ctx: DeedCtx,
    signer: DeedSigner,
    address: ValAddr,
    /// The validator set of the next height.
    valset: ValidatorSet,
    /// Sets by the first height they held, since this app started.
    history: std::collections::BTreeMap<u64, ValidatorSet>,
    chain: C,
    mempool: std::sync::Arc<M>,
    store: ConsensusStore,
    streams: PartStreams,
    params: BlockParams,
    last_commit: Instant,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn reply<T>(tx: tokio::sync::oneshot::Sender<T>, v: T, what: &'static str) {
    if tx.send(v).is_err() {
        warn!(what, "engine dropped the reply channel");
    }
}

impl<C: Chain, M: Mempool + ?Sized> App<C, M> {
    /// An app over `chain` and `mempool`. The validator set of each height comes
    /// from the ledger state before it ([`crate::types::validator_set_of`]); a
    /// state that names no validators (a chain without consensus keys) keeps
    /// `valset` for every height.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: DeedCtx,
        signer: DeedSigner,
        address: ValAddr,
        valset: ValidatorSet,
        chain: C,
        mempool: std::sync::Arc<M>,
        store: ConsensusStore,
        params: BlockParams,
    ) -> Self {
        let max_stream_bytes = params.max_block_bytes.saturating_add(64 * 1024);
        let valset = chain
            .with_state(crate::types::validator_set_of)
            .unwrap_or(valset);
        let next = chain.with_state(|s| s.height()).saturating_add(1);
        App {
            ctx,
            signer,
            address,
            history: [(next, valset.clone())].into_iter().collect(),
            valset,
            chain,
            mempool,
            store,
            streams: PartStreams::new(64, max_stream_bytes),
            params,
            last_commit: Instant::now(),
        }
    }

    /// The chain (for inspection after the loop stops).
    pub fn chain(&self) -> &C {
        &self.chain
    }

    fn next_height(&self) -> Height {
        Height(self.chain.with_state(|s| s.height()).saturating_add(1))
    }

    /// Handles engine messages until the engine stops or a fatal error.
    pub async fn run(&mut self, channels: &mut Channels<DeedCtx>) -> Result<(), AppError> {
        while let Some(msg) = channels.consensus.recv().await {
            self.handle(msg, &channels.network).await?;
        }
        Err(AppError::EngineStopped)
    }

    async fn handle(
        &mut self,
        msg: AppMsg<DeedCtx>,
        network: &mpsc::Sender<NetworkMsg<DeedCtx>>,
    ) -> Result<(), AppError> {
        match msg {
            AppMsg::ConsensusReady { reply: r } => {
                let h = self.next_height();
                info!(height = %h, "consensus ready");
                reply(r, (h, self.valset.clone()), "ConsensusReady");
            }
            AppMsg::StartedRound {
                height,
                round,
                proposer,
                role,
                reply_value,
            } => {
                debug!(%height, %round, %proposer, ?role, "started round");
                self.promote_pending(height, round)?;
                let values = self.store.proposals(Slot::Undecided, height, Some(round))?;
                reply(reply_value, values, "StartedRound");
            }
            AppMsg::GetValue {
                height,
                round,
                timeout,
                reply: r,
            } => {
                let value = self.get_value(height, round, timeout).await?;
                let block = value.value.block().clone();
                reply(
                    r,
                    LocallyProposedValue::new(height, round, value.value),
                    "GetValue",
                );
                let init = PartInit {
                    height,
                    round,
                    pol_round: Round::Nil,
                    proposer: self.address,
                };
                publish(network, stream_block(&self.signer, init, &block)).await;
            }
            AppMsg::ExtendVote { reply: r, .. } => reply(r, None, "ExtendVote"),
            AppMsg::VerifyVoteExtension { reply: r, .. } => reply(r, Ok(()), "VerifyVoteExtension"),
            AppMsg::ReceivedProposalPart {
                from,
                part,
                reply: r,
            } => {
                let v = self.received_part(from, part)?;
                reply(r, v, "ReceivedProposalPart");
            }
            AppMsg::GetValidatorSet { height, reply: r } => {
                reply(r, self.valset_at(height), "GetValidatorSet")
            }
            AppMsg::Decided {
                certificate,
                reply: r,
                ..
            } => {
                let next = self.decided(certificate).await?;
                reply(r, next, "Decided");
            }
            AppMsg::GetDecidedValue { height, reply: r } => {
                let v = self.decided_value(height)?;
                reply(r, v, "GetDecidedValue");
            }
            AppMsg::GetHistoryMinHeight { reply: r } => {
                let h = self.store.min_certified_height()?.unwrap_or(Height(1));
                reply(r, h, "GetHistoryMinHeight");
            }
            AppMsg::ProcessSyncedValue {
                height,
                round,
                proposer,
                value_bytes,
                reply: r,
            } => {
                let v = self.synced_value(height, round, proposer, value_bytes)?;
                reply(r, v, "ProcessSyncedValue");
            }
            AppMsg::RestreamProposal {
                height,
                round,
                valid_round,
                value_id,
                ..
            } => {
                let at = if valid_round == Round::Nil {
                    round
                } else {
                    valid_round
                };
                let found = self
                    .store
                    .proposals(Slot::Undecided, height, Some(at))?
                    .into_iter()
                    .find(|p| p.value.block_id() == value_id);
                match found {
                    Some(p) => {
                        let init = PartInit {
                            height,
                            round,
                            pol_round: valid_round,
                            proposer: self.address,
                        };
                        info!(%height, %round, %valid_round, "re-streaming a proposal");
                        publish(network, stream_block(&self.signer, init, p.value.block())).await;
                    }
                    None => {
                        warn!(%height, %round, %value_id, "asked to re-stream an unknown value")
                    }
                }
            }
        }
        Ok(())
    }

    /// The value we propose at (height, round): the one already built if any (so a
    /// restarted node never proposes two values in one round), else a new block.
    async fn get_value(
        &mut self,
        height: Height,
        round: Round,
        timeout: Duration,
    ) -> Result<ProposedValue<DeedCtx>, AppError> {
        let built = self
            .store
            .proposals(Slot::Undecided, height, Some(round))?
            .into_iter()
            .find(|p| p.proposer == self.address && p.valid_round == Round::Nil);
        if let Some(p) = built {
            info!(%height, %round, value = %p.value.block_id(), "proposing the value built before");
            return Ok(p);
        }
        let earliest = self.last_commit + self.params.block_interval;
        let empty_deadline = self.last_commit + self.params.empty_block_interval;
        pace(&*self.mempool, earliest, empty_deadline, timeout).await;
        let parent_time = match self.chain.with_state(|s| s.height()) {
            0 => 0,
            h => self.chain.block(h).map(|b| b.header.time).unwrap_or(0),
        };
        // Room for the header and length prefixes.
        let budget = self.params.max_block_bytes.saturating_sub(1024);
        let txs = self.mempool.reap(budget, self.params.max_block_txs);
        let time = now_secs().max(parent_time);
        let block = self
            .chain
            .with_state(|state| next_block(state, self.address.0, time, txs));
        let value = ProposedValue {
            height,
            round,
            valid_round: Round::Nil,
            proposer: self.address,
            value: BlockValue::new(block),
            validity: Validity::Valid,
        };
        self.store.put_proposal(Slot::Undecided, &value)?;
        info!(
            %height, %round, txs = value.value.block().txs.len(),
            value = %value.value.block_id(), "proposing a new block"
        );
        Ok(value)
    }

    fn received_part(
        &mut self,
        from: PeerId,
        part: StreamMessage<ProposalPart>,
    ) -> Result<Option<ProposedValue<DeedCtx>>, AppError> {
        let a = match self.streams.insert(from, part) {
            Inserted::Pending => return Ok(None),
            Inserted::Complete(a) => *a,
            Inserted::Rejected(e) => {
                warn!(%from, error = %e, "malformed proposal stream");
                return Ok(None);
            }
            Inserted::TooLarge => {
                warn!(%from, "proposal stream over the size limit, dropped");
                return Ok(None);
            }
        };
        let height = a.init.height;
        let next = self.next_height();
        if height < next {
            debug!(%height, "proposal for a decided height, ignored");
            return Ok(None);
        }
        if height.0 > next.0.saturating_add(1) {
            // A node this far behind catches up by value sync, not from proposals.
            debug!(%height, %next, "proposal more than one height ahead, ignored");
            return Ok(None);
        }
        if let Err(e) = self.check_origin(from, &a) {
            warn!(%from, %height, round = %a.init.round, error = %e, "proposal stream rejected");
            return Ok(None);
        }
        let slot = if height > next {
            Slot::Pending
        } else {
            Slot::Undecided
        };
        if self.store.count(slot, height, Some(a.init.round))? >= MAX_PROPOSALS_PER_ROUND
            || self.store.count(slot, height, None)? >= MAX_PROPOSALS_PER_HEIGHT
        {
            warn!(%from, %height, round = %a.init.round, "too many proposals for this height or round, dropped");
            return Ok(None);
        }
        let mut value = ProposedValue {
            height,
            round: a.init.round,
            valid_round: a.init.pol_round,
            proposer: a.init.proposer,
            value: BlockValue::new(a.block),
            validity: Validity::Valid,
        };
        if height > next {
            debug!(%height, "proposal for a later height, kept until it starts");
            self.store.put_proposal(Slot::Pending, &value)?;
            return Ok(None);
        }
        value.validity = self.validity(&value);
        self.store.put_proposal(Slot::Undecided, &value)?;
        Ok(Some(value))
    }

    /// Checks who sent and signed a stream (needs no ledger state).
    fn check_origin(&self, from: PeerId, a: &Assembled) -> Result<(), InvalidProposal> {
        let expected = self.valset.proposer(a.init.height, a.init.round);
        if expected.address != a.init.proposer {
            return Err(InvalidProposal::WrongProposer {
                expected: expected.address,
                got: a.init.proposer,
            });
        }
        if expected.public_key.peer_id() != Some(from) {
            return Err(InvalidProposal::WrongPeer(from));
        }
        let digest = fin_digest(self.ctx.chain_id, &a.init, &a.block.header.hash());
        if !expected.public_key.verify(&digest, &a.signature) {
            return Err(InvalidProposal::BadSignature);
        }
        Ok(())
    }

    fn validity(&self, v: &ProposedValue<DeedCtx>) -> Validity {
        match self.check_block(v) {
            Ok(()) => Validity::Valid,
            Err(e) => {
                warn!(height = %v.height, round = %v.round, error = %e, "invalid proposal");
                Validity::Invalid
            }
        }
    }

    /// Checks a proposed block against the current state (its height must be the
    /// next one). The verdict must be a deterministic function of the state and the
    /// block: malachite 0.5 asserts (panics in its consensus actor) when a node
    /// decides a value it judged invalid, which only a node whose state diverged
    /// should ever hit.
    fn check_block(&self, v: &ProposedValue<DeedCtx>) -> Result<(), InvalidProposal> {
        let block = v.value.block();
        let h = &block.header;
        let (height, last_hash, root) = self
            .chain
            .with_state(|s| (s.height(), s.meta().last_block_hash, s.root()));
        let bad = |field| Err(InvalidProposal::Header { field });
        if h.chain_id != self.ctx.chain_id {
            return bad("chain_id");
        }
        if h.height != v.height.0 || h.height != height.saturating_add(1) {
            return bad("height");
        }
        if h.prev_hash != last_hash {
            return bad("prev_hash");
        }
        if h.state_root != root {
            return bad("state_root");
        }
        if h.tx_root != tx_root(&block.txs) {
            return bad("tx_root");
        }
        let parent_time = match height {
            0 => 0,
            p => self.chain.block(p).map(|b| b.header.time).unwrap_or(0),
        };
        if h.time < parent_time {
            return bad("time");
        }
        let init = PartInit {
            height: v.height,
            round: v.round,
            pol_round: v.valid_round,
            proposer: v.proposer,
        };
        match expected_builder(&init) {
            Some(builder) if builder.0 != h.proposer => return bad("proposer"),
            None if self.valset.get(&ValAddr(h.proposer)).is_none() => return bad("proposer"),
            _ => {}
        }
        let len = encoding::encode(block).len();
        if len > self.params.max_block_bytes {
            return Err(InvalidProposal::TooLarge {
                len,
                max: self.params.max_block_bytes,
            });
        }
        if block
            .txs
            .iter()
            .any(|t| t.tx.action.check_limits().is_err())
        {
            return Err(InvalidProposal::TxLimits);
        }
        Ok(())
    }

    /// Proposals that arrived before their height started: validate them now.
    fn promote_pending(&mut self, height: Height, round: Round) -> Result<(), AppError> {
        if height != self.next_height() {
            return Ok(());
        }
        for mut p in self.store.proposals(Slot::Pending, height, Some(round))? {
            self.store.remove_proposal(Slot::Pending, &p)?;
            // It was checked against the set before the last commit; a set that
            // changed there may have another proposer for this round.
            if self.valset.proposer(height, p.round).address != p.proposer {
                warn!(%height, round = %p.round, proposer = %p.proposer, "early proposal by a former proposer, dropped");
                continue;
            }
            p.validity = self.validity(&p);
            self.store.put_proposal(Slot::Undecided, &p)?;
        }
        Ok(())
    }

    async fn decided(
        &mut self,
        cert: CommitCertificate<DeedCtx>,
    ) -> Result<Next<DeedCtx>, AppError> {
        let height = cert.height;
        let id = cert.value_id;
        let found = [Slot::Undecided, Slot::Pending]
            .into_iter()
            .map(|slot| self.store.proposals(slot, height, None))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .find(|p| p.value.block_id() == id);
        let Some(p) = found else {
            error!(%height, value = %id, "decided a value this node never received; restarting the height");
            return Ok(Next::Restart(height, self.valset.clone()));
        };
        if height != self.next_height() {
            error!(%height, next = %self.next_height(), "decided a height that is not the next one; restarting");
            return Ok(Next::Restart(self.next_height(), self.valset.clone()));
        }
        self.store.put_certificate(&cert)?;
        let block = p.value.block();
        let outcome = self
            .chain
            .commit(block)
            .await
            .map_err(|source| AppError::Commit {
                height: height.0,
                source,
            })?;
        let mempool = &self.mempool;
        self.chain.with_state(|s| mempool.on_committed(block, s));
        self.refresh_valset();
        self.store.prune_proposals(height)?;
        self.last_commit = Instant::now();
        info!(
            %height, round = %cert.round, txs = block.txs.len(),
            block = %outcome.block_hash, state_root = %outcome.state_root, "committed"
        );
        Ok(Next::Start(self.next_height(), self.valset.clone()))
    }

    /// The validator set of `height`: the next height's (also assumed for the one
    /// after, whose proposals may arrive early), or one this app saw hold.
    fn valset_at(&self, height: Height) -> Option<ValidatorSet> {
        if height >= self.next_height() {
            return Some(self.valset.clone());
        }
        self.history
            .range(..=height.0)
            .next_back()
            .map(|(_, v)| v.clone())
    }

    /// After a commit: the set for the next height, from the new state.
    fn refresh_valset(&mut self) {
        let Some(set) = self.chain.with_state(crate::types::validator_set_of) else {
            return;
        };
        if set != self.valset {
            let next = self.next_height();
            info!(height = %next, validators = set.validators().len(), "validator set changes");
            self.history.insert(next.0, set.clone());
            self.valset = set;
        }
    }

    fn decided_value(&self, height: Height) -> Result<Option<RawDecidedValue<DeedCtx>>, AppError> {
        let Some(certificate) = self.store.certificate(height)? else {
            return Ok(None);
        };
        let Some(block) = self.chain.block(height.0) else {
            return Ok(None);
        };
        Ok(Some(RawDecidedValue {
            certificate,
            value_bytes: Bytes::from(block.encode()),
        }))
    }

    fn synced_value(
        &mut self,
        height: Height,
        round: Round,
        proposer: ValAddr,
        bytes: Bytes,
    ) -> Result<Option<ProposedValue<DeedCtx>>, AppError> {
        let block = match Block::decode(&bytes) {
            Ok(b) => b,
            Err(e) => {
                warn!(%height, error = %e, "synced value does not decode");
                return Ok(None);
            }
        };
        if block.header.height != height.0 {
            warn!(%height, got = block.header.height, "synced value is for another height");
            return Ok(None);
        }
        // The engine has already checked the commit certificate for this value's id,
        // so the block is decided: applying it is what validates it against our state.
        let value = ProposedValue {
            height,
            round,
            valid_round: Round::Nil,
            proposer,
            value: BlockValue::new(block),
            validity: Validity::Valid,
        };
        self.store.put_proposal(Slot::Undecided, &value)?;
        Ok(Some(value))
    }
}

/// Waits until a block may be proposed: not before `earliest`, and while the pool is
/// empty not before `empty_deadline`; never longer than 80% of the propose timeout.
async fn pace<M: Mempool + ?Sized>(
    mempool: &M,
    earliest: Instant,
    empty_deadline: Instant,
    timeout: Duration,
) {
    let start = Instant::now();
    let cap = timeout.mul_f64(0.8);
    loop {
        let now = Instant::now();
        if now.duration_since(start) >= cap {
            return;
        }
        if now >= earliest && (now >= empty_deadline || !mempool.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn publish(
    network: &mpsc::Sender<NetworkMsg<DeedCtx>>,
    msgs: Vec<StreamMessage<ProposalPart>>,
) {
    for m in msgs {
        if network
            .send(NetworkMsg::PublishProposalPart(m))
            .await
            .is_err()
        {
            warn!("network channel closed; proposal not published");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{MemChain, MemPool};
    use crate::keys::NodeSecretKey;
    use crate::types::Validator;
    use deed_ledger::{Params, RuntimeReferee, State};
    use deed_types::{Address, Hash};

    const CHAIN: u64 = 5;

    struct Setup {
        app: App<MemChain<RuntimeReferee>, MemPool>,
        keys: Vec<NodeSecretKey>,
        valset: ValidatorSet,
        _dir: tempfile::TempDir,
    }

    fn setup() -> Setup {
        let keys: Vec<NodeSecretKey> = (0..2u8).map(|i| NodeSecretKey::from_seed(&[i])).collect();
        let valset = ValidatorSet::new(
            (0..2u8)
                .map(|i| Validator {
                    address: ValAddr(Address([i + 1; 20])),
                    public_key: keys[usize::from(i)].public_key(),
                    voting_power: 1,
                })
                .collect(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let genesis = State::genesis(CHAIN, Params::default(), &[]).unwrap();
        let app = App::new(
            DeedCtx { chain_id: CHAIN },
            DeedSigner::new(keys[0].clone(), CHAIN),
            ValAddr(Address([1; 20])),
            valset.clone(),
            MemChain::new(genesis, RuntimeReferee::new()),
            std::sync::Arc::new(MemPool::new(10)),
            ConsensusStore::open(&dir.path().join("c.redb")).unwrap(),
            BlockParams::default(),
        );
        Setup {
            app,
            keys,
            valset,
            _dir: dir,
        }
    }

    /// Feeds a proposal by the proposer of (height, round), signed with its key, to the app.
    fn feed(
        s: &mut Setup,
        height: u64,
        round: u32,
        edit: impl FnOnce(&mut Block),
        signer_key: Option<usize>,
        from_key: Option<usize>,
    ) -> Option<ProposedValue<DeedCtx>> {
        let proposer = s.valset.proposer(Height(height), Round::new(round)).clone();
        let idx = usize::from(proposer.address.0 .0[0] - 1);
        let mut block = next_block(s.app.chain().state(), proposer.address.0, 10, vec![]);
        block.header.height = height;
        edit(&mut block);
        let init = PartInit {
            height: Height(height),
            round: Round::new(round),
            pol_round: Round::Nil,
            proposer: proposer.address,
        };
        let signer = DeedSigner::new(s.keys[signer_key.unwrap_or(idx)].clone(), CHAIN);
        let from = s.keys[from_key.unwrap_or(idx)]
            .public_key()
            .peer_id()
            .unwrap();
        let mut out = None;
        for m in stream_block(&signer, init, &block) {
            out = s.app.received_part(from, m).unwrap();
        }
        out
    }

    #[test]
    fn a_good_proposal_is_valid() {
        let mut s = setup();
        let v = feed(&mut s, 1, 0, |_| {}, None, None).unwrap();
        assert_eq!(v.validity, Validity::Valid);
        let stored = s
            .app
            .store
            .proposals(Slot::Undecided, Height(1), Some(Round::new(0)));
        assert_eq!(stored.unwrap(), vec![v]);
    }

    #[test]
    fn a_wrong_state_root_or_parent_is_invalid() {
        let mut s = setup();
        let v = feed(
            &mut s,
            1,
            0,
            |b| b.header.state_root = Hash::of(b"x"),
            None,
            None,
        );
        assert_eq!(v.unwrap().validity, Validity::Invalid);
        let v = feed(
            &mut s,
            1,
            1,
            |b| b.header.prev_hash = Hash::of(b"x"),
            None,
            None,
        );
        assert_eq!(v.unwrap().validity, Validity::Invalid);
        let v = feed(&mut s, 1, 2, |b| b.header.chain_id += 1, None, None);
        assert_eq!(v.unwrap().validity, Validity::Invalid);
    }

    #[test]
    fn forged_signatures_and_wrong_senders_are_ignored() {
        let mut s = setup();
        let p = s.valset.proposer(Height(1), Round::new(0)).address.0 .0[0] - 1;
        let other = 1 - usize::from(p);
        assert_eq!(feed(&mut s, 1, 0, |_| {}, Some(other), None), None);
        assert_eq!(feed(&mut s, 1, 0, |_| {}, None, Some(other)), None);
        assert!(s
            .app
            .store
            .proposals(Slot::Undecided, Height(1), None)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn proposals_far_ahead_or_beyond_the_round_cap_are_dropped() {
        let mut s = setup();
        assert_eq!(feed(&mut s, 3, 0, |_| {}, None, None), None);
        assert_eq!(
            s.app.store.count(Slot::Pending, Height(3), None).unwrap(),
            0
        );
        for t in 0..MAX_PROPOSALS_PER_ROUND as u64 {
            let v = feed(&mut s, 1, 0, |b| b.header.time = 10 + t, None, None);
            assert!(v.is_some());
        }
        assert_eq!(feed(&mut s, 1, 0, |b| b.header.time = 99, None, None), None);
        assert_eq!(
            s.app.store.count(Slot::Undecided, Height(1), None).unwrap(),
            MAX_PROPOSALS_PER_ROUND
        );
    }

    #[test]
    fn a_later_height_waits_in_pending_then_is_validated() {
        let mut s = setup();
        assert_eq!(feed(&mut s, 2, 0, |_| {}, None, None), None);
        assert_eq!(
            s.app
                .store
                .proposals(Slot::Pending, Height(2), None)
                .unwrap()
                .len(),
            1
        );
        // Commit height 1 with a certificate-free decision path: apply directly.
        let b1 = next_block(s.app.chain().state(), Address([1; 20]), 10, vec![]);
        s.app.chain.apply(&b1).unwrap();
        s.app.promote_pending(Height(2), Round::new(0)).unwrap();
        let v = s
            .app
            .store
            .proposals(Slot::Undecided, Height(2), None)
            .unwrap();
        // It was built over genesis, not over block 1: invalid now.
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].validity, Validity::Invalid);
        assert!(s
            .app
            .store
            .proposals(Slot::Pending, Height(2), None)
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn after_a_restart_the_proposer_proposes_the_value_it_built_before() {
        let s = setup();
        let dir = s._dir;
        let first = {
            let mut app = s.app;
            app.get_value(Height(1), Round::new(0), Duration::from_millis(50))
                .await
                .unwrap()
        };
        assert!(first.value.block().txs.is_empty());
        // Same store, a fresh app whose pool now holds a transaction: still the same
        // block for that round, a new one for the next round.
        let key = deed_types::SecretKey::from_seed(b"payer");
        let pool = MemPool::new(10);
        pool.submit(
            deed_types::Transaction {
                chain_id: CHAIN,
                nonce: 0,
                fee: 1,
                action: deed_types::Action::Transfer {
                    to: Address([9; 20]),
                    amount: 1,
                },
            }
            .sign(&key)
            .unwrap(),
        )
        .unwrap();
        let mut app = App::new(
            DeedCtx { chain_id: CHAIN },
            DeedSigner::new(NodeSecretKey::from_seed(&[0]), CHAIN),
            ValAddr(Address([1; 20])),
            s.valset.clone(),
            MemChain::new(
                State::genesis(CHAIN, Params::default(), &[]).unwrap(),
                RuntimeReferee::new(),
            ),
            std::sync::Arc::new(pool),
            ConsensusStore::open(&dir.path().join("c.redb")).unwrap(),
            BlockParams::default(),
        );
        let again = app
            .get_value(Height(1), Round::new(0), Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(again.value.block_id(), first.value.block_id());
        let next_round = app
            .get_value(Height(1), Round::new(1), Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(next_round.value.block().txs.len(), 1);
    }

    #[tokio::test]
    async fn deciding_an_unknown_value_restarts_the_height() {
        let mut s = setup();
        let cert = CommitCertificate::<DeedCtx>::new(
            Height(1),
            Round::new(0),
            crate::types::BlockId(Hash::of(b"nothing")),
            vec![],
        );
        assert!(matches!(
            s.app.decided(cert).await,
            Ok(Next::Restart(Height(1), _))
        ));
        assert_eq!(s.app.chain().state().height(), 0);
    }

    #[tokio::test]
    async fn deciding_a_received_value_commits_it_and_keeps_the_certificate() {
        let mut s = setup();
        let v = feed(&mut s, 1, 0, |_| {}, None, None).unwrap();
        let cert =
            CommitCertificate::<DeedCtx>::new(Height(1), Round::new(0), v.value.block_id(), vec![]);
        assert!(matches!(
            s.app.decided(cert.clone()).await,
            Ok(Next::Start(Height(2), _))
        ));
        assert_eq!(s.app.chain().state().height(), 1);
        let served = s.app.decided_value(Height(1)).unwrap().unwrap();
        assert_eq!(served.certificate, cert);
        assert_eq!(
            Block::decode(&served.value_bytes).unwrap(),
            *v.value.block()
        );
        // Synced values decode back to the same block; garbage is refused.
        let synced = s
            .app
            .synced_value(Height(1), Round::new(0), v.proposer, served.value_bytes)
            .unwrap()
            .unwrap();
        assert_eq!(synced.value, v.value);
        assert_eq!(
            s.app
                .synced_value(
                    Height(2),
                    Round::new(0),
                    v.proposer,
                    Bytes::from_static(b"junk")
                )
                .unwrap(),
            None
        );
    }
}
