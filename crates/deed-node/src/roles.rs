//! The executor and watcher roles: they follow committed blocks and act through
//! ordinary signed transactions.
//!
//! - The executor runs every job assigned to it (or posts the result it already
//!   computed for a direct call), submits the receipt, and keeps the run (with its
//!   trace) until the job closes so it could defend it in a dispute. In replicated
//!   mode it commits, then reveals once the reveal phase opens.
//! - The watcher re-executes a share of optimistic results while they are
//!   challengeable and challenges any whose output or trace root differs from its
//!   own run. A result that matches it attests to (`deed_ledger::audit`), and once
//!   the attest phase is over it reveals the final chain value so the attesters are
//!   paid.
//! - Both play their side of any dispute ([`crate::dispute`]).

use std::collections::HashSet;
use std::sync::Arc;

use deed_client::api::ErrorCode;
use deed_ledger::{Event, Job, JobStatus};
use deed_types::{Action, Address, Cid, Hash, JobId, Mode, SecretKey};
use tokio::sync::broadcast;

use crate::chain::Committed;
use crate::dispute::{dispute_block, Disputes};
use crate::error::ApiError;
use crate::node::{lock, Node};
use crate::runner::{self, JobRun, RunHow};

/// Follows committed blocks until the node's block channel closes.
pub async fn follow(node: Arc<Node>, mut rx: broadcast::Receiver<Arc<Committed>>) {
    let mut reveals: HashSet<(JobId, Address)> = HashSet::new();
    let mut disputes = Disputes::default();
    let mut audits: HashSet<JobId> = HashSet::new();
    loop {
        let committed = match rx.recv().await {
            Ok(c) => c,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "roles fell behind the chain");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if node.cfg.roles.executor {
            executor_block(&node, &committed, &mut reveals);
        }
        if node.cfg.roles.watcher {
            watcher_block(&node, &committed);
            reveal_audits(&node, &committed, &mut audits);
        }
        if node.cfg.roles.executor || node.cfg.roles.watcher {
            dispute_block(&node, &committed, &mut disputes);
        }
        for e in &committed.outcome.events {
            if let Event::JobFinalized { job } | Event::JobRefunded { job } = e {
                lock(&node.traces).retain(|(j, _), _| j != job);
                reveals.retain(|(j, _)| j != job);
                audits.remove(job);
            }
        }
    }
}

fn executor_block(
    node: &Arc<Node>,
    committed: &Committed,
    reveals: &mut HashSet<(JobId, Address)>,
) {
    for r in &committed.outcome.results {
        // Included (or failed): the chain dropped its served record with the block,
        // and its nonce is spent, so a replay fails the nonce check.
        if r.outcome.is_err() {
            lock(&node.direct).remove(&r.tx_hash);
        }
    }
    for (stx, r) in committed.block.txs.iter().zip(&committed.outcome.results) {
        for e in committed.tx_events(r) {
            let Event::JobRequested { job, executors } = e else {
                continue;
            };
            for me in executors {
                let Some(key) = node.keys.executor_key(me).cloned() else {
                    continue;
                };
                // A direct call names one executor, so the parked run is its.
                let direct = lock(&node.direct).remove(&r.tx_hash);
                let (node, job, request) = (node.clone(), *job, stx.hash());
                tokio::spawn(async move {
                    if let Err(e) = serve_job(&node, &key, job, direct).await {
                        tracing::warn!(%job, %request, executor = %key.address(),
                            error = %e.message, "job not served");
                    }
                });
            }
        }
    }
    // Replicated jobs this node's executors committed to: reveal once the phase
    // opens.
    let committed_jobs: Vec<((JobId, Address), Arc<JobRun>)> = lock(&node.traces)
        .iter()
        .map(|(k, r)| (*k, r.clone()))
        .collect();
    for ((j, me), run) in committed_jobs {
        let Some(key) = node.keys.executor_key(&me) else {
            continue;
        };
        let Some(job) = node.job(j) else { continue };
        if !matches!(job.mode, Mode::Replicated(_)) || job.status != JobStatus::Revealing {
            continue;
        }
        if reveals.contains(&(j, me)) {
            continue;
        }
        let action = Action::RevealOutput {
            job: j,
            receipt: run.receipt(node.cfg.executor.max_inline_output),
            salt: reveal_salt(key, j),
        };
        match node.submit_own(key, action) {
            Ok(_) => {
                reveals.insert((j, me));
            }
            Err(e) => tracing::warn!(job = %j, executor = %me, error = %e.message,
                "reveal not submitted"),
        }
    }
}

/// The salt of a replicated commitment: secret to the executor until it reveals.
fn reveal_salt(key: &SecretKey, job: JobId) -> Hash {
    Hash::domain(
        "deed 2026 executor reveal salt",
        &[&key.to_bytes(), &job.0.to_le_bytes()],
    )
}

/// The input bytes of a job: inline, or the blob its input hash names.
pub(crate) async fn job_input(node: &Node, job: &Job) -> Result<Vec<u8>, ApiError> {
    match &job.input_inline {
        Some(b) => Ok(b.clone()),
        None => node.blob(&Cid(job.input_hash)).await,
    }
}

/// Runs a job as the ledger describes it, corrupting `corrupt_step` when a fault
/// is injected (see [`crate::fault`]).
pub(crate) async fn run_job(
    node: &Node,
    job: &Job,
    corrupt_step: Option<usize>,
) -> Result<JobRun, ApiError> {
    let model = node.model(&job.manifest).await?;
    let bytes = job_input(node, job).await?;
    let inputs = runner::name_inputs(&model, &bytes)?;
    let budget = node.with_state(|c| c.state().version(job.model, job.version).map(|v| v.cost));
    let how = RunHow {
        threads: node.cfg.executor.threads,
        corrupt_step,
        ..RunHow::default()
    };
    runner::run_how(model, inputs, budget.unwrap_or(0), how).await
}

async fn serve_job(
    node: &Node,
    key: &SecretKey,
    id: JobId,
    direct: Option<Arc<JobRun>>,
) -> Result<(), ApiError> {
    let job = node
        .job(id)
        .ok_or_else(|| ApiError::not_found(format!("job {id}")))?;
    let started = std::time::Instant::now();
    let index = node
        .keys
        .executors()
        .position(|k| k.address() == key.address())
        .unwrap_or(0);
    let corrupt = node
        .cfg
        .faults
        .executor_step(id, &key.address(), index, job.steps);
    let run = match direct {
        Some(r) if corrupt.is_none() => r,
        _ => match run_job(node, &job, corrupt).await {
            Ok(run) => Arc::new(run),
            Err(e) => return decline_job(node, key, id, &job).await.map_err(|_| e),
        },
    };
    if run.steps() != job.steps {
        return Err(ApiError::new(
            ErrorCode::BadModel,
            format!(
                "the run has {} steps, the version {}",
                run.steps(),
                job.steps
            ),
        ));
    }
    if run.output_bytes.len() > node.cfg.executor.max_inline_output {
        // Large outputs travel as blobs; only their hash goes on the ledger.
        deed_store::blob::upload(
            node.blobs.as_ref(),
            &run.output_bytes,
            deed_store::blob::DEFAULT_CHUNK_SIZE,
        )
        .await?;
    }
    let receipt = run.receipt(node.cfg.executor.max_inline_output);
    let action = match job.mode {
        Mode::Replicated(_) => Action::CommitOutput {
            job: id,
            commitment: receipt.commitment(id, &reveal_salt(key, id)),
        },
        Mode::None | Mode::Optimistic => Action::SubmitReceipt { job: id, receipt },
    };
    // Kept before the receipt is queued, so the block revealing it finds the run.
    lock(&node.traces).insert((id, key.address()), run);
    if let Err(e) = node.submit_own(key, action) {
        lock(&node.traces).remove(&(id, key.address()));
        return Err(e);
    }
    node.metrics.jobs_executed.inc();
    node.metrics
        .job_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// Declines a job that did not run because its input does not fit the model, as
/// the validators will find when they judge the decline
/// ([`deed_ledger::input_fault`]): the executor is paid its fee instead of missing
/// the deadline and paying the timeout penalty. `Err` when the input fits (the run
/// failed for another reason) or cannot be handed to the referee.
async fn decline_job(node: &Node, key: &SecretKey, id: JobId, job: &Job) -> Result<(), ApiError> {
    let model = node.model(&job.manifest).await?;
    let bytes = job_input(node, job).await?;
    let budget = node
        .with_state(|c| c.state().version(job.model, job.version).map(|v| v.cost))
        .unwrap_or(0);
    let Some(fault) = deed_ledger::input_fault(&model.model, &bytes, budget) else {
        return Err(ApiError::internal("the input fits the model"));
    };
    let input = match job.input_inline {
        Some(_) => None,
        None if bytes.len() <= deed_types::tx::limits::MAX_REFEREE_JOB_INPUT => Some(bytes),
        None => {
            return Err(ApiError::internal(
                "the input blob is too large to hand to the referee",
            ))
        }
    };
    node.submit_own(key, Action::DeclineJob { job: id, input })?;
    node.metrics.jobs_declined.inc();
    tracing::info!(job = %id, executor = %key.address(), %fault, "declining job");
    Ok(())
}

/// Whether this watcher samples `job`: a deterministic draw from the job id and
/// the watcher's address against the configured share.
fn sampled(node: &Node, job: JobId) -> bool {
    let share = node.cfg.watcher.sample;
    if share >= 1.0 {
        return true;
    }
    if share <= 0.0 {
        return false;
    }
    let h = Hash::domain(
        "deed 2026 watcher sample",
        &[node.keys.watcher.address().as_bytes(), &job.0.to_le_bytes()],
    );
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    (u64::from_le_bytes(first) as f64 / u64::MAX as f64) < share
}

fn watcher_block(node: &Arc<Node>, committed: &Committed) {
    let me: Address = node.keys.watcher.address();
    for e in &committed.outcome.events {
        // A new result, or one that survived someone else's challenge (which may have
        // been thrown on purpose): either is checked while it is challengeable. A
        // result that beat this watcher's own challenge is not challenged again.
        let job = match e {
            Event::JobProgress { job, executor } if *executor != me => job,
            Event::ChallengeWindowReopened { job, loser, .. } if *loser != me => job,
            _ => continue,
        };
        if !sampled(node, *job) {
            continue;
        }
        let Some(j) = node.job(*job) else { continue };
        if j.mode != Mode::Optimistic || !matches!(j.status, JobStatus::Challengeable { .. }) {
            continue;
        }
        let (node, id) = (node.clone(), *job);
        tokio::spawn(async move {
            if let Err(e) = check_job(&node, id, j).await {
                tracing::warn!(job = %id, error = %e.message, "watcher could not check job");
            }
        });
    }
}

async fn check_job(node: &Node, id: JobId, job: Job) -> Result<(), ApiError> {
    let Some(Some(posted)) = job.receipts.first().cloned() else {
        return Ok(());
    };
    let me = node.keys.watcher.address();
    let corrupt = node.cfg.faults.watcher_step(id, &me, job.steps);
    let run = run_job(node, &job, corrupt).await?;
    node.metrics.jobs_checked.inc();
    if run.output_hash == posted.output.hash() && run.trace.root() == posted.trace_root {
        return attest(node, id, run);
    }
    tracing::warn!(job = %id, "result differs from the watcher's run; challenging");
    let trace_root = run.trace.root();
    // Kept for the dispute this challenge opens.
    lock(&node.traces).insert((id, me), Arc::new(run));
    if let Err(e) = node.submit_own(
        &node.keys.watcher,
        Action::Challenge {
            job: id,
            trace_root,
        },
    ) {
        lock(&node.traces).remove(&(id, me));
        return Err(e);
    }
    node.metrics.challenges.inc();
    Ok(())
}

/// Attests to a result this watcher's run matched, while the job's attest phase is
/// open; the run is kept for the reveal.
fn attest(node: &Node, id: JobId, run: JobRun) -> Result<(), ApiError> {
    let me = node.keys.watcher.address();
    let open = node.with_state(|c| {
        c.state()
            .job(id)
            .is_some_and(|j| c.state().height() < j.audit.attest_until)
    });
    let Some(last) = run.trace.len().checked_sub(1) else {
        return Ok(());
    };
    let Some(final_chain) = run.trace.chain_value(last).filter(|_| open) else {
        return Ok(());
    };
    let digest = deed_ledger::audit::digest(&me, id, &final_chain);
    lock(&node.traces).insert((id, me), Arc::new(run));
    if let Err(e) = node.submit_own(&node.keys.watcher, Action::Attest { job: id, digest }) {
        lock(&node.traces).remove(&(id, me));
        return Err(e);
    }
    node.metrics.attestations.inc();
    Ok(())
}

/// Reveals the final chain value of every job this watcher attested to once its
/// attest phase is over, unless someone already did.
fn reveal_audits(node: &Node, committed: &Committed, done: &mut HashSet<JobId>) {
    let me = node.keys.watcher.address();
    let height = committed.block.header.height;
    let kept: Vec<(JobId, Arc<JobRun>)> = lock(&node.traces)
        .iter()
        .filter(|((j, a), _)| *a == me && !done.contains(j))
        .map(|((j, _), r)| (*j, r.clone()))
        .collect();
    for (id, run) in kept {
        let Some(job) = node.job(id) else { continue };
        let attested = job.audit.attestations.iter().any(|(a, _)| *a == me);
        if !attested
            || height <= job.audit.attest_until
            || job.audit.revealed.is_some()
            || !matches!(job.status, JobStatus::Challengeable { .. })
        {
            continue;
        }
        let Some(proof) = run
            .trace
            .len()
            .checked_sub(1)
            .and_then(|i| run.trace.step_proof(i))
        else {
            continue;
        };
        let action = Action::RevealAudit {
            job: id,
            proof: deed_ledger::trace::to_wire(&proof),
        };
        match node.submit_own(&node.keys.watcher, action) {
            Ok(_) => {
                done.insert(id);
            }
            Err(e) => tracing::warn!(job = %id, error = %e.message, "audit reveal not submitted"),
        }
    }
}
