//! Jobs: request (escrow and assignment from block randomness), receipts,
//! commit-then-reveal for replicated mode, finalization and payout, refunds and
//! penalties on timeouts.

use deed_types::{Address, Amount, Hash, JobId, JobInput, Licence, Mode, ModelId, Receipt};

use super::{bps_of, Exec};
use crate::error::TxError;
use crate::events::{Event, Reason};
use crate::state::{Audit, Escrow, Job, JobStatus, Timer};
use crate::trace;

/// The fields of a `RequestJob` action.
pub(super) struct JobRequest<'t> {
    pub model: ModelId,
    pub version: Option<u32>,
    pub input: &'t JobInput,
    pub mode: Mode,
    pub max_fee: Amount,
    /// The executor of a direct call, if any.
    pub executor: Option<Address>,
}

impl<'a> Exec<'a> {
    /// Loads a job and checks its per-executor vectors line up, which makes every
    /// index by executor position below in bounds.
    pub(crate) fn job(&self, id: JobId) -> Result<Job, TxError> {
        let job = self
            .s
            .jobs
            .get(&id)
            .cloned()
            .ok_or(TxError::UnknownJob(id))?;
        let k = job.executors.len();
        let fees = job.escrow.executor_fees.len();
        if k == 0 || job.commits.len() != k || job.receipts.len() != k || (fees != k && fees != 0) {
            return Err(TxError::CorruptJob(id));
        }
        Ok(job)
    }

    fn position(job: &Job, id: JobId, sender: Address) -> Result<usize, TxError> {
        job.executors
            .iter()
            .position(|a| *a == sender)
            .ok_or(TxError::NotAssigned { job: id, sender })
    }

    pub(super) fn request_job(
        &mut self,
        sender: Address,
        req: JobRequest<'_>,
    ) -> Result<(), TxError> {
        let JobRequest {
            model: model_id,
            version,
            input,
            mode,
            max_fee,
            executor: direct,
        } = req;
        let k: usize = match mode {
            Mode::None | Mode::Optimistic => 1,
            Mode::Replicated(k) => {
                if direct.is_some() {
                    return Err(TxError::DirectNotAllowed { mode });
                }
                if k < 2 || u64::from(k) > self.s.params.max_replicas {
                    return Err(TxError::BadReplication {
                        k,
                        max: self.s.params.max_replicas,
                    });
                }
                usize::from(k)
            }
        };
        let model = self
            .s
            .models
            .get(&model_id)
            .cloned()
            .ok_or(TxError::UnknownModel(model_id))?;
        if let Licence::AllowList(list) = &model.licence {
            if sender != model.owner && !list.contains(&sender) {
                return Err(TxError::NotLicensed {
                    model: model_id,
                    sender,
                });
            }
        }
        let version = match version {
            Some(v) => {
                let ver = self
                    .s
                    .versions
                    .get(&(model_id, v))
                    .ok_or(TxError::UnknownVersion {
                        model: model_id,
                        version: v,
                    })?;
                if ver.deprecated {
                    return Err(TxError::VersionDeprecated {
                        model: model_id,
                        version: v,
                    });
                }
                v
            }
            None => self
                .s
                .versions
                .range((model_id, 0)..=(model_id, u32::MAX))
                .rev()
                .find(|(_, v)| !v.deprecated)
                .map(|(key, _)| key.1)
                .ok_or(TxError::NoUsableVersion(model_id))?,
        };
        let ver =
            self.s
                .versions
                .get(&(model_id, version))
                .cloned()
                .ok_or(TxError::UnknownVersion {
                    model: model_id,
                    version,
                })?;
        let royalty = match model.licence {
            Licence::Open => 0,
            _ => model.price,
        };
        let pfee_bps = self.s.params.protocol_fee_bps;
        let kk = k as u128;
        // Total cost if every executor charged `price`.
        let cost_at = |price: Amount| -> Option<Amount> {
            let fees = price.checked_mul(kk)?;
            royalty
                .checked_add(fees)?
                .checked_add(bps_of(fees, pfee_bps)?)
        };
        let job_id = JobId(self.s.meta.next_job);
        let mut eligible: Vec<(Hash, Address, Amount)> = Vec::new();
        let mut cheapest: Option<Amount> = None;
        let mut overflowed = false;
        for ((_, addr), ()) in self
            .s
            .serving
            .range((model_id, Address::ZERO)..=(model_id, Address([0xff; 20])))
        {
            let Some(e) = self.s.executors.get(addr) else {
                continue;
            };
            if e.jailed_until.is_some() || e.stake < self.s.params.min_stake {
                continue;
            }
            if direct.is_some_and(|d| d != *addr) {
                continue;
            }
            // A price whose cost does not fit an amount is one no request can pay: that
            // executor is passed over, and the others still serve the model.
            let total = cost_at(e.price);
            overflowed |= total.is_none();
            cheapest = match (cheapest, total) {
                (Some(c), Some(t)) => Some(c.min(t)),
                (None, t) => t,
                (c, None) => c,
            };
            if total.is_some_and(|t| t <= max_fee) {
                let score = Hash::domain(
                    "deed 2026 job assignment",
                    &[
                        self.env.randomness.as_bytes(),
                        &job_id.0.to_le_bytes(),
                        addr.as_bytes(),
                    ],
                );
                eligible.push((score, *addr, e.price));
            }
        }
        if eligible.len() < k {
            if let Some(executor) = direct.filter(|_| cheapest.is_none()) {
                return Err(TxError::ExecutorNotEligible {
                    model: model_id,
                    executor,
                });
            }
            if let Some(needed) = cheapest.filter(|c| *c > max_fee) {
                return Err(TxError::MaxFeeTooLow { max_fee, needed });
            }
            // No executor's cost fits an amount (the royalty alone may be too large).
            if cheapest.is_none() && overflowed {
                return Err(TxError::Overflow("job cost"));
            }
            return Err(TxError::NoExecutors {
                model: model_id,
                available: eligible.len(),
                needed: k,
            });
        }
        eligible.sort();
        eligible.truncate(k);
        let executors: Vec<Address> = eligible.iter().map(|(_, a, _)| *a).collect();
        let executor_fees: Vec<Amount> = eligible.iter().map(|(_, _, p)| *p).collect();
        let fees = executor_fees
            .iter()
            .try_fold(0u128, |a, f| a.checked_add(*f))
            .ok_or(TxError::Overflow("executor fees"))?;
        let protocol_fee = bps_of(fees, pfee_bps).ok_or(TxError::Overflow("protocol fee"))?;
        let escrow = Escrow {
            royalty,
            executor_fees,
            protocol_fee,
        };
        self.debit(sender, escrow.total())?;
        self.s.meta.next_job = self
            .s
            .meta
            .next_job
            .checked_add(1)
            .ok_or(TxError::Overflow("job id"))?;
        let deadline = self.deadline(self.s.params.execution_timeout);
        let (input_inline, input_hash) = (
            match input {
                JobInput::Inline(b) => Some(b.clone()),
                JobInput::ByCid(_) => None,
            },
            input.hash(),
        );
        self.s.jobs.insert(
            job_id,
            Job {
                requester: sender,
                model: model_id,
                version,
                manifest: ver.manifest,
                steps: ver.steps.saturating_add(1),
                input_hash,
                input_inline,
                mode,
                escrow,
                executors: executors.clone(),
                commits: vec![None; k],
                receipts: vec![None; k],
                status: if k == 1 {
                    JobStatus::Assigned
                } else {
                    JobStatus::Committing
                },
                deadline,
                created: self.env.height,
                audit: Audit::default(),
            },
        );
        self.set_timer(deadline, Timer::JobDeadline(job_id));
        self.events.push(Event::JobRequested {
            job: job_id,
            executors,
        });
        Ok(())
    }

    /// The receipt is for a trace of the job's length whose output leaf binds the
    /// posted output: otherwise a receipt could pair a correct trace with a wrong
    /// result, which no dispute over traces would catch.
    fn check_receipt(job: &Job, receipt: &Receipt) -> Result<(), TxError> {
        if receipt.steps != job.steps {
            return Err(TxError::WrongStepCount {
                expected: job.steps,
                got: receipt.steps,
            });
        }
        if !trace::verify_output(
            &receipt.trace_root,
            receipt.steps,
            &receipt.output.hash(),
            &receipt.output_proof,
        ) {
            return Err(TxError::InvalidProof(
                "the receipt's output is not the output leaf of its trace",
            ));
        }
        Ok(())
    }

    pub(super) fn submit_receipt(
        &mut self,
        sender: Address,
        id: JobId,
        receipt: &Receipt,
    ) -> Result<(), TxError> {
        let mut job = self.job(id)?;
        if job.status != JobStatus::Assigned {
            return Err(TxError::WrongJobPhase {
                job: id,
                action: "submit_receipt",
            });
        }
        let i = Self::position(&job, id, sender)?;
        Self::check_receipt(&job, receipt)?;
        job.receipts[i] = Some(receipt.clone());
        self.events.push(Event::JobProgress {
            job: id,
            executor: sender,
        });
        if job.mode == Mode::Optimistic {
            let window = self.s.params.challenge_window;
            let window_end = self.deadline(window);
            job.status = JobStatus::Challengeable { window_end };
            job.audit.attest_until = self.deadline(window / 2);
            self.s.jobs.insert(id, job);
            self.set_timer(window_end, Timer::ChallengeWindow(id));
            Ok(())
        } else {
            self.finalize(id, job, &[i])
        }
    }

    /// An assigned executor declines a job whose input does not fit the model version
    /// ([`crate::referee::input_fault`]). The referee judges the claim on the job's
    /// input: inline, or the blob the executor hands over, which must hash to the
    /// job's input. If it holds, the executor is paid its fee (it fetched and checked
    /// the input) and the requester gets the rest of the escrow back, royalty and
    /// protocol fee included; if not, the transaction fails and the job stands. In
    /// replicated mode one decline ends the job (the input fits no executor's run),
    /// from an executor that has not committed.
    pub(super) fn decline_job(
        &mut self,
        sender: Address,
        id: JobId,
        blob: Option<&[u8]>,
    ) -> Result<(), TxError> {
        let mut job = self.job(id)?;
        let i = Self::position(&job, id, sender)?;
        let open = match job.status {
            JobStatus::Assigned => job.receipts[i].is_none(),
            JobStatus::Committing => job.commits[i].is_none(),
            _ => false,
        };
        if !open {
            return Err(TxError::WrongJobPhase {
                job: id,
                action: "decline_job",
            });
        }
        let input: &[u8] = match (&job.input_inline, blob) {
            (Some(inline), None) => inline,
            (None, Some(b)) if Hash::of(b) == job.input_hash => b,
            (None, Some(_)) => {
                return Err(TxError::InvalidProof(
                    "the blob does not hash to the job's input",
                ))
            }
            (None, None) => {
                return Err(TxError::InvalidProof(
                    "the job's input is by CID: hand over its blob",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(TxError::InvalidProof(
                    "the job's input is inline: hand over no blob",
                ))
            }
        };
        let budget = self
            .s
            .versions
            .get(&(job.model, job.version))
            .map(|v| v.cost)
            .ok_or(TxError::UnknownVersion {
                model: job.model,
                version: job.version,
            })?;
        if self
            .referee
            .input_fault(&job.manifest, input, budget)?
            .is_none()
        {
            return Err(TxError::InputFits(id));
        }
        let escrow = std::mem::take(&mut job.escrow);
        let fee = escrow.executor_fees.get(i).copied().unwrap_or(0);
        let refund = escrow
            .total()
            .checked_sub(fee)
            .ok_or(TxError::CorruptJob(id))?;
        self.credit(sender, fee, Reason::ExecutorFee)?;
        self.credit(job.requester, refund, Reason::Refund)?;
        job.status = JobStatus::Declined;
        self.s.jobs.insert(id, job);
        self.events.push(Event::JobDeclined {
            job: id,
            executor: sender,
        });
        Ok(())
    }

    pub(super) fn commit_output(
        &mut self,
        sender: Address,
        id: JobId,
        commitment: Hash,
    ) -> Result<(), TxError> {
        let mut job = self.job(id)?;
        if job.status != JobStatus::Committing {
            return Err(TxError::WrongJobPhase {
                job: id,
                action: "commit_output",
            });
        }
        let i = Self::position(&job, id, sender)?;
        if job.commits[i].is_some() {
            return Err(TxError::AlreadyActed(sender));
        }
        job.commits[i] = Some(commitment);
        self.events.push(Event::JobProgress {
            job: id,
            executor: sender,
        });
        if job.commits.iter().all(Option::is_some) {
            self.start_reveal(id, job);
        } else {
            self.s.jobs.insert(id, job);
        }
        Ok(())
    }

    fn start_reveal(&mut self, id: JobId, mut job: Job) {
        job.status = JobStatus::Revealing;
        job.deadline = self.deadline(self.s.params.execution_timeout);
        self.set_timer(job.deadline, Timer::JobDeadline(id));
        self.s.jobs.insert(id, job);
    }

    pub(super) fn reveal_output(
        &mut self,
        sender: Address,
        id: JobId,
        receipt: &Receipt,
        salt: &Hash,
    ) -> Result<(), TxError> {
        let mut job = self.job(id)?;
        if job.status != JobStatus::Revealing {
            return Err(TxError::WrongJobPhase {
                job: id,
                action: "reveal_output",
            });
        }
        let i = Self::position(&job, id, sender)?;
        let Some(c) = job.commits[i] else {
            return Err(TxError::WrongJobPhase {
                job: id,
                action: "reveal_output without a commitment",
            });
        };
        if job.receipts[i].is_some() {
            return Err(TxError::AlreadyActed(sender));
        }
        Self::check_receipt(&job, receipt)?;
        if receipt.commitment(id, salt) != c {
            return Err(TxError::CommitmentMismatch);
        }
        job.receipts[i] = Some(receipt.clone());
        self.events.push(Event::JobProgress {
            job: id,
            executor: sender,
        });
        let all = job
            .commits
            .iter()
            .zip(&job.receipts)
            .all(|(c, r)| c.is_none() || r.is_some());
        if all {
            self.settle_replicated(id, job)
        } else {
            self.s.jobs.insert(id, job);
            Ok(())
        }
    }

    /// Compares the revealed receipts: unanimous results are paid; otherwise the
    /// results play a knockout of refereed disputes, the first revealed result
    /// defending against the next different one (see [`result_groups`]).
    fn settle_replicated(&mut self, id: JobId, job: Job) -> Result<(), TxError> {
        let groups = result_groups(&job);
        match groups.as_slice() {
            [] => self.refund(id, job),
            [only] => {
                let paid = only.clone();
                self.finalize(id, job, &paid)
            }
            [first, second, ..] => {
                let (a, b) = (first[0], second[0]);
                self.open_replicated_dispute(id, job, a, b)
            }
        }
    }

    /// Pays out a job whose result stands: royalty up the lineage, the fee of each
    /// executor at a position in `paid`, the protocol fee burned, and the fees of
    /// unpaid positions back to the requester.
    pub(crate) fn finalize(
        &mut self,
        id: JobId,
        mut job: Job,
        paid: &[usize],
    ) -> Result<(), TxError> {
        let escrow = std::mem::take(&mut job.escrow);
        self.pay_royalty(job.model, escrow.royalty)?;
        let mut refund: Amount = 0;
        for (i, fee) in escrow.executor_fees.iter().enumerate() {
            if paid.contains(&i) {
                // Watchers whose audit matched are paid out of the executor's fee.
                let fee = &self.pay_auditors(id, &job, *fee)?;
                let to = job
                    .executors
                    .get(i)
                    .copied()
                    .ok_or(TxError::CorruptJob(id))?;
                self.credit(to, *fee, Reason::ExecutorFee)?;
            } else {
                refund = refund
                    .checked_add(*fee)
                    .ok_or(TxError::Overflow("refund"))?;
            }
        }
        self.credit(job.requester, refund, Reason::Refund)?;
        self.burn(escrow.protocol_fee, Reason::ProtocolFee)?;
        job.status = JobStatus::Finalized;
        self.s.jobs.insert(id, job);
        self.events.push(Event::JobFinalized { job: id });
        Ok(())
    }

    /// Returns the whole escrow to the requester.
    pub(crate) fn refund(&mut self, id: JobId, mut job: Job) -> Result<(), TxError> {
        let total = std::mem::take(&mut job.escrow).total();
        self.credit(job.requester, total, Reason::Refund)?;
        job.status = JobStatus::Refunded;
        self.s.jobs.insert(id, job);
        self.events.push(Event::JobRefunded { job: id });
        Ok(())
    }

    /// Slashes the timeout penalty from `who` and burns it. It does not go to the
    /// requester: a missed deadline may be the requester's doing (an input that fails
    /// while running, or that nobody can fetch), and nobody may profit from it.
    fn penalize(&mut self, who: Address) -> Result<(), TxError> {
        let taken = self.slash(who, self.s.params.timeout_penalty);
        self.burn(taken, Reason::TimeoutPenalty)
    }

    /// A job phase deadline passed.
    pub(crate) fn on_job_deadline(&mut self, id: JobId) -> Result<(), TxError> {
        let job = self.job(id)?;
        if job.deadline != self.env.height {
            return Ok(());
        }
        match job.status {
            JobStatus::Assigned => {
                for e in job.executors.clone() {
                    self.penalize(e)?;
                }
                self.refund(id, job)
            }
            JobStatus::Committing => {
                for (i, c) in job.commits.iter().enumerate() {
                    if c.is_none() {
                        self.penalize(job.executors[i])?;
                    }
                }
                if job.commits.iter().all(Option::is_none) {
                    self.refund(id, job)
                } else {
                    self.start_reveal(id, job);
                    Ok(())
                }
            }
            JobStatus::Revealing => {
                for i in 0..job.executors.len() {
                    if job.commits[i].is_some() && job.receipts[i].is_none() {
                        self.penalize(job.executors[i])?;
                    }
                }
                self.settle_replicated(id, job)
            }
            _ => Ok(()),
        }
    }

    /// An optimistic job's challenge window closed without a challenge.
    pub(crate) fn on_challenge_window(&mut self, id: JobId) -> Result<(), TxError> {
        let job = self.job(id)?;
        match job.status {
            JobStatus::Challengeable { window_end } if window_end == self.env.height => {
                self.finalize(id, job, &[0])
            }
            _ => Ok(()),
        }
    }
}

/// The revealed results of a replicated job grouped by (output hash, trace root):
/// executor positions per distinct result, groups in the order their first member
/// appears. Each group is represented in disputes by its first member.
///
/// With more than two results the groups meet in order: group 0 defends against
/// group 1, the winner against group 2, and so on, so every result that differs from
/// the final one has lost a refereed dispute (or a move deadline) to some result.
pub(crate) fn result_groups(job: &Job) -> Vec<Vec<usize>> {
    let mut groups: Vec<((Hash, Hash), Vec<usize>)> = Vec::new();
    for (i, r) in job.receipts.iter().enumerate() {
        let Some(r) = r else { continue };
        let key = (r.output.hash(), r.trace_root);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    groups.into_iter().map(|(_, m)| m).collect()
}
