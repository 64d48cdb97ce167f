//! This node's side of the disputes its keys are party to.
//!
//! A dispute names a defender (an executor whose result was challenged) and a
//! challenger (a watcher, or a co-executor in replicated mode). After every block
//! the node looks at each live dispute where one of its executor or watcher keys is
//! a party and, when the move is that key's, computes it from the run it kept for
//! the job (`Node::traces`) with [`deed_ledger::party`]: the defender reveals chain
//! values with proofs and at the end hands the referee the disputed step's inputs
//! (re-running the job once to get the outputs of the steps that step reads), the
//! challenger agrees or disagrees with each revealed value.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use deed_client::api::ErrorCode;
use deed_ledger::party::{self, JobInputs, Move};
use deed_ledger::{Dispute, DisputePhase, Event};
use deed_types::{Action, Address, DisputeId, SecretKey};

use crate::chain::Committed;
use crate::error::ApiError;
use crate::node::{lock, Node};
use crate::roles::job_input;
use crate::runner::{self, JobRun, RunHow};

/// One move of one dispute: the dispute, the reveals made so far and the phase.
type MoveKey = (DisputeId, u32, u8);

/// The disputes this node plays and the moves it has submitted.
#[derive(Debug, Default)]
pub struct Disputes {
    live: BTreeSet<DisputeId>,
    /// Moves submitted (or being prepared) and not failed: each is made once.
    sent: Arc<Mutex<HashSet<MoveKey>>>,
}

fn phase_tag(p: &DisputePhase) -> u8 {
    match p {
        DisputePhase::AwaitReveal { .. } => 0,
        DisputePhase::AwaitResponse { .. } => 1,
        DisputePhase::AwaitReferee => 2,
        DisputePhase::Resolved { .. } => 3,
    }
}

/// The key this node holds for `a` as a dispute party.
fn party_key<'n>(node: &'n Node, a: &Address) -> Option<&'n SecretKey> {
    if node.keys.watcher.address() == *a {
        return Some(&node.keys.watcher);
    }
    node.keys.executor_key(a)
}

/// Plays every due move of this node's disputes after `committed`.
pub(crate) fn dispute_block(node: &Arc<Node>, committed: &Committed, d: &mut Disputes) {
    for e in &committed.outcome.events {
        if let Event::DisputeOpened { dispute, .. } | Event::DisputeMove { dispute, .. } = e {
            d.live.insert(*dispute);
        }
    }
    if node.cfg.faults.silent() {
        d.live.clear();
        return;
    }
    let ids: Vec<DisputeId> = d.live.iter().copied().collect();
    for id in ids {
        let Some(dispute) = node.with_state(|c| c.state().dispute(id).cloned()) else {
            d.live.remove(&id);
            continue;
        };
        if matches!(dispute.phase, DisputePhase::Resolved { .. }) {
            d.live.remove(&id);
            lock(&d.sent).retain(|(k, _, _)| *k != id);
            continue;
        }
        for me in [dispute.defender, dispute.challenger] {
            if let Err(e) = play(node, id, &dispute, &me, &d.sent) {
                tracing::warn!(dispute = %id, party = %me, error = %e.message,
                    "dispute move not made");
            }
        }
    }
}

/// Makes `me`'s move in `dispute` if it is due, this node holds `me`'s key and the
/// move was not made yet.
fn play(
    node: &Arc<Node>,
    id: DisputeId,
    dispute: &Dispute,
    me: &Address,
    sent: &Arc<Mutex<HashSet<MoveKey>>>,
) -> Result<(), ApiError> {
    let Some(key) = party_key(node, me).cloned() else {
        return Ok(());
    };
    let Some(run) = lock(&node.traces).get(&(dispute.job, *me)).cloned() else {
        return Err(ApiError::new(
            ErrorCode::Internal,
            format!("no run of job {} kept for {me}", dispute.job),
        ));
    };
    let mv = party::next_move(id, dispute, me, &run.trace)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let Some(mv) = mv else { return Ok(()) };
    let tag: MoveKey = (id, dispute.rounds, phase_tag(&dispute.phase));
    if !lock(sent).insert(tag) {
        return Ok(());
    }
    match mv {
        Move::Act(action) => {
            if let Err(e) = node.submit_own(&key, action) {
                lock(sent).remove(&tag);
                return Err(e);
            }
        }
        Move::Referee { step } => {
            let (node, sent, job) = (node.clone(), sent.clone(), dispute.job);
            tokio::spawn(async move {
                let made = referee_moves(&node, id, job, step, &run).await;
                // A large step input goes as several transactions, queued in order.
                let made = made.and_then(|moves| {
                    moves
                        .into_iter()
                        .try_for_each(|a| node.submit_own(&key, a).map(drop))
                });
                if let Err(e) = made {
                    lock(&sent).remove(&tag);
                    tracing::warn!(dispute = %id, step, error = %e.message,
                        "referee move not made");
                }
            });
        }
    }
    node.metrics.dispute_moves.inc();
    Ok(())
}

/// The referee move for `step`, as the transactions that carry it: the job is run
/// again as it was (same injected fault, if any) keeping the outputs of the steps
/// `step` reads.
async fn referee_moves(
    node: &Node,
    id: DisputeId,
    job_id: deed_types::JobId,
    step: usize,
    run: &JobRun,
) -> Result<Vec<Action>, ApiError> {
    let job = node
        .job(job_id)
        .ok_or_else(|| ApiError::not_found(format!("job {job_id}")))?;
    let model = node.model(&job.manifest).await?;
    let bytes = job_input(node, &job).await?;
    let inputs = runner::name_inputs(&model, &bytes)?;
    let keep_steps = party::referee_steps(&model.model, step);
    let kept = if keep_steps.is_empty() {
        Vec::new()
    } else {
        let budget = node
            .with_state(|c| c.state().version(job.model, job.version).map(|v| v.cost))
            .unwrap_or(0);
        let how = RunHow {
            keep_steps,
            ..run.how.clone()
        };
        runner::run_how(model.clone(), inputs, budget, how)
            .await?
            .kept
    };
    let names = model.input_names();
    let blob = job.input_inline.is_none().then_some(&bytes[..]);
    party::referee_moves(
        id,
        &model.model,
        &run.trace,
        step,
        JobInputs {
            names: &names,
            blob,
        },
        |s| {
            kept.iter()
                .find(|(k, _)| *k == s)
                .map(|(_, outs)| outs.clone())
        },
    )
    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}
