//! Paid audits of optimistic results (the rule is in [`crate::audit`]).

use deed_types::{Address, Amount, Hash, JobId, Mode, StepProofData};

use super::{bps_of, Exec};
use crate::audit::digest;
use crate::error::TxError;
use crate::events::{Event, Reason};
use crate::state::{Job, JobStatus};
use crate::trace;

impl<'a> Exec<'a> {
    /// The job, if it is an optimistic result still open for `action`.
    fn audited_job(&self, id: JobId, action: &'static str) -> Result<Job, TxError> {
        let job = self.job(id)?;
        if job.mode != Mode::Optimistic || !matches!(job.status, JobStatus::Challengeable { .. }) {
            return Err(TxError::WrongJobPhase { job: id, action });
        }
        Ok(job)
    }

    pub(super) fn attest(&mut self, sender: Address, id: JobId, d: Hash) -> Result<(), TxError> {
        let mut job = self.audited_job(id, "attest")?;
        if self.env.height > job.audit.attest_until {
            return Err(TxError::WrongJobPhase {
                job: id,
                action: "attest",
            });
        }
        if job.executors.contains(&sender) {
            return Err(TxError::SelfAudit);
        }
        if job.audit.attestations.iter().any(|(a, _)| *a == sender) {
            return Err(TxError::AlreadyActed(sender));
        }
        let max = self.s.params.max_attesters;
        if job.audit.attestations.len() as u64 >= max {
            return Err(TxError::AuditFull { job: id, max });
        }
        job.audit.attestations.push((sender, d));
        self.s.jobs.insert(id, job);
        self.events.push(Event::AuditAttested {
            job: id,
            watcher: sender,
        });
        Ok(())
    }

    pub(super) fn reveal_audit(&mut self, id: JobId, proof: &StepProofData) -> Result<(), TxError> {
        let mut job = self.audited_job(id, "reveal_audit")?;
        if self.env.height <= job.audit.attest_until || job.audit.revealed.is_some() {
            return Err(TxError::WrongJobPhase {
                job: id,
                action: "reveal_audit",
            });
        }
        let receipt = job.receipts[0].clone().ok_or(TxError::CorruptJob(id))?;
        let last = job.steps.saturating_sub(1);
        if proof.index != last || proof.len != job.steps {
            return Err(TxError::WrongStep {
                expected: last,
                len: job.steps,
                got: proof.index,
                got_len: proof.len,
            });
        }
        if !trace::verify_step(&receipt.trace_root, proof) {
            return Err(TxError::InvalidProof(
                "final chain value against the trace root",
            ));
        }
        job.audit.revealed = Some(proof.chain_value);
        self.s.jobs.insert(id, job);
        self.events.push(Event::AuditRevealed { job: id });
        Ok(())
    }

    /// Pays the audit fee out of an optimistic executor's `fee` to the attesters
    /// whose digest matches the revealed final chain value; returns the executor's
    /// remainder.
    pub(super) fn pay_auditors(
        &mut self,
        id: JobId,
        job: &Job,
        fee: Amount,
    ) -> Result<Amount, TxError> {
        let Some(c) = job.audit.revealed.filter(|_| job.mode == Mode::Optimistic) else {
            return Ok(fee);
        };
        let paid: Vec<Address> = job
            .audit
            .attestations
            .iter()
            .filter(|(a, d)| *d == digest(a, id, &c))
            .map(|(a, _)| *a)
            .collect();
        if paid.is_empty() {
            return Ok(fee);
        }
        let pool = bps_of(fee, self.s.params.audit_bps).ok_or(TxError::Overflow("audit fee"))?;
        let each = pool / paid.len() as Amount;
        for a in &paid {
            self.credit(*a, each, Reason::AuditFee)?;
        }
        Ok(fee - each * paid.len() as Amount)
    }
}
