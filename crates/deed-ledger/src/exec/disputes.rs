//! The refereed bisection game.
//!
//! Invariant of a live dispute over a trace of `n` steps: both parties agree on the
//! chain value before `lo` (`agreed`, or nothing when `lo = 0`) and disagree on the
//! defender's chain value at `hi` (`disputed`). The game opens by asking the
//! defender for `c_{n-1}`; each later round asks for the midpoint
//! `lo + (hi - lo) / 2` and halves the range by the challenger's answer. When
//! `lo = hi = i`, the defender hands over the peaks of the agreed prefix (checked
//! against `c_{i-1}`) and the step's inputs (checked against those peaks); the
//! referee computes the true `h_i`, and the defender wins exactly when appending it
//! gives the defender's `c_i`. At most `⌈log₂ n⌉ + 1` reveals happen. Missing a move
//! deadline loses.
//!
//! A step whose inputs are larger than one transaction (any intermediate tensor over
//! [`limits::MAX_REFEREE_TENSOR`]) is refereed in parts: the defender stages the
//! encoded input list chunk by chunk, all before the same deadline, then asks for the
//! verdict over what it staged. The chunks are deleted when the dispute ends.

use deed_types::tx::limits;
use deed_types::{
    check_referee_inputs, encoding, Address, DisputeId, Hash, JobId, LimitError, RefereeInput,
    StepProofData, Tensor,
};

use super::jobs::result_groups;
use super::{bps_of, Exec};
use crate::error::TxError;
use crate::events::{Event, Reason};
use crate::referee::StepInput;
use crate::state::{Dispute, DisputePhase, Job, JobStatus, Timer};
use crate::trace;

impl<'a> Exec<'a> {
    fn dispute(&self, id: DisputeId) -> Result<Dispute, TxError> {
        self.s
            .disputes
            .get(&id)
            .cloned()
            .ok_or(TxError::UnknownDispute(id))
    }

    fn open_dispute(&mut self, job_id: JobId, mut job: Job, mut d: Dispute) -> Result<(), TxError> {
        let id = DisputeId(self.s.meta.next_dispute);
        self.s.meta.next_dispute = self
            .s
            .meta
            .next_dispute
            .checked_add(1)
            .ok_or(TxError::Overflow("dispute id"))?;
        d.deadline = self.deadline(self.s.params.move_timeout);
        self.set_timer(d.deadline, Timer::DisputeMove(id));
        self.s.disputes.insert(id, d);
        job.status = JobStatus::Disputed(id);
        self.s.jobs.insert(job_id, job);
        self.events.push(Event::DisputeOpened {
            dispute: id,
            job: job_id,
        });
        Ok(())
    }

    fn new_dispute(
        job_id: JobId,
        job: &Job,
        defender: Address,
        challenger: Address,
        defender_root: Hash,
        challenger_root: Hash,
        bond: u128,
    ) -> Dispute {
        Dispute {
            job: job_id,
            defender,
            challenger,
            defender_root,
            challenger_root,
            steps: job.steps,
            bond,
            lo: 0,
            hi: job.steps.saturating_sub(1),
            agreed: None,
            disputed: None,
            phase: DisputePhase::AwaitReveal {
                index: job.steps.saturating_sub(1),
            },
            deadline: 0,
            rounds: 0,
            window_left: 0,
            staged_chunks: 0,
            staged_bytes: 0,
        }
    }

    pub(super) fn challenge(
        &mut self,
        sender: Address,
        job_id: JobId,
        trace_root: Hash,
    ) -> Result<(), TxError> {
        let mut job = self.job(job_id)?;
        let JobStatus::Challengeable { window_end } = job.status else {
            return Err(TxError::WrongJobPhase {
                job: job_id,
                action: "challenge",
            });
        };
        let defender = *job.executors.first().ok_or(TxError::CorruptJob(job_id))?;
        if sender == defender {
            return Err(TxError::SelfChallenge);
        }
        let receipt = job.receipts[0].clone().ok_or(TxError::WrongJobPhase {
            job: job_id,
            action: "challenge",
        })?;
        if receipt.trace_root == trace_root {
            return Err(TxError::NothingToDispute);
        }
        let bond = self.s.params.challenge_bond;
        self.debit(sender, bond)?;
        let mut d = Self::new_dispute(
            job_id,
            &job,
            defender,
            sender,
            receipt.trace_root,
            trace_root,
            bond,
        );
        d.window_left = window_end.saturating_sub(self.env.height).max(1);
        // The dispute's first move reveals the final chain value: attestations after
        // it would prove nothing.
        job.audit.attest_until = job
            .audit
            .attest_until
            .min(self.env.height.saturating_sub(1));
        self.open_dispute(job_id, job, d)
    }

    pub(super) fn open_replicated_dispute(
        &mut self,
        job_id: JobId,
        job: Job,
        a: usize,
        b: usize,
    ) -> Result<(), TxError> {
        let root = |i: usize| {
            job.receipts[i]
                .as_ref()
                .map(|r| r.trace_root)
                .unwrap_or(Hash::ZERO)
        };
        let d = Self::new_dispute(
            job_id,
            &job,
            job.executors[a],
            job.executors[b],
            root(a),
            root(b),
            0,
        );
        self.open_dispute(job_id, job, d)
    }

    fn next_move(&mut self, id: DisputeId, mut d: Dispute) {
        d.deadline = self.deadline(self.s.params.move_timeout);
        self.set_timer(d.deadline, Timer::DisputeMove(id));
        self.events.push(Event::DisputeMove {
            dispute: id,
            lo: d.lo,
            hi: d.hi,
        });
        self.s.disputes.insert(id, d);
    }

    pub(super) fn reveal_step(
        &mut self,
        sender: Address,
        id: DisputeId,
        proof: &StepProofData,
    ) -> Result<(), TxError> {
        let mut d = self.dispute(id)?;
        let DisputePhase::AwaitReveal { index } = d.phase else {
            return Err(TxError::WrongMove {
                dispute: id,
                action: "reveal_step",
                sender,
            });
        };
        if sender != d.defender {
            return Err(TxError::WrongMove {
                dispute: id,
                action: "reveal_step",
                sender,
            });
        }
        if proof.index != index || proof.len != d.steps {
            return Err(TxError::WrongStep {
                expected: index,
                len: d.steps,
                got: proof.index,
                got_len: proof.len,
            });
        }
        if !trace::verify_step(&d.defender_root, proof) {
            return Err(TxError::InvalidProof(
                "step proof does not match the defender's trace root",
            ));
        }
        d.rounds = d.rounds.saturating_add(1);
        d.phase = DisputePhase::AwaitResponse {
            index,
            value: proof.chain_value,
        };
        self.next_move(id, d);
        Ok(())
    }

    pub(super) fn respond(
        &mut self,
        sender: Address,
        id: DisputeId,
        agree: bool,
    ) -> Result<(), TxError> {
        let mut d = self.dispute(id)?;
        let DisputePhase::AwaitResponse { index, value } = d.phase else {
            return Err(TxError::WrongMove {
                dispute: id,
                action: "respond",
                sender,
            });
        };
        if sender != d.challenger {
            return Err(TxError::WrongMove {
                dispute: id,
                action: "respond",
                sender,
            });
        }
        if d.disputed.is_none() {
            // The opening reveal of c_{n-1}: agreeing with the final chain value
            // concedes the whole trace.
            if agree {
                return self.resolve(id, d, true, false);
            }
            d.disputed = Some(value);
            d.hi = index;
        } else if agree {
            d.agreed = Some(value);
            d.lo = index.saturating_add(1);
        } else {
            d.disputed = Some(value);
            d.hi = index;
        }
        d.phase = if d.lo >= d.hi {
            DisputePhase::AwaitReferee
        } else {
            DisputePhase::AwaitReveal {
                index: d.lo + (d.hi - d.lo) / 2,
            }
        };
        self.next_move(id, d);
        Ok(())
    }

    /// The defender adds the next chunk of its encoded referee inputs. Nothing is
    /// checked but the size until [`Self::referee_staged`] decodes the whole.
    pub(super) fn stage_referee(
        &mut self,
        sender: Address,
        id: DisputeId,
        chunk: &[u8],
    ) -> Result<(), TxError> {
        let mut d = self.dispute(id)?;
        if d.phase != DisputePhase::AwaitReferee || sender != d.defender {
            return Err(TxError::WrongMove {
                dispute: id,
                action: "stage_referee",
                sender,
            });
        }
        let len = (d.staged_bytes as usize).saturating_add(chunk.len());
        if len > limits::MAX_REFEREE_STAGED {
            return Err(TxError::Limit(LimitError {
                field: "staged referee inputs",
                len,
                max: limits::MAX_REFEREE_STAGED,
            }));
        }
        self.s
            .referee_data
            .insert((id, d.staged_chunks), chunk.to_vec());
        d.staged_chunks += 1;
        d.staged_bytes = len as u64;
        self.s.disputes.insert(id, d);
        Ok(())
    }

    /// The defender's referee move over the inputs it staged.
    pub(super) fn referee_staged(
        &mut self,
        sender: Address,
        id: DisputeId,
        peaks: &[Hash],
    ) -> Result<(), TxError> {
        let d = self.dispute(id)?;
        if d.phase != DisputePhase::AwaitReferee || sender != d.defender {
            return Err(TxError::WrongMove {
                dispute: id,
                action: "referee_staged",
                sender,
            });
        }
        if d.staged_chunks == 0 {
            return Err(TxError::InvalidProof("no referee inputs are staged"));
        }
        let mut bytes = Vec::with_capacity(d.staged_bytes as usize);
        for k in 0..d.staged_chunks {
            if let Some(c) = self.s.referee_data.get(&(id, k)) {
                bytes.extend_from_slice(c);
            }
        }
        let inputs: Vec<RefereeInput> =
            encoding::decode("staged referee inputs", &bytes, limits::MAX_REFEREE_STAGED)
                .map_err(|_| TxError::InvalidProof("staged referee inputs do not decode"))?;
        check_referee_inputs(
            &inputs,
            limits::MAX_REFEREE_STAGED,
            limits::MAX_REFEREE_STAGED,
        )?;
        self.referee_with(id, d, peaks, &inputs)
    }

    pub(super) fn referee_step(
        &mut self,
        sender: Address,
        id: DisputeId,
        peaks: &[Hash],
        inputs: &[RefereeInput],
    ) -> Result<(), TxError> {
        let d = self.dispute(id)?;
        if d.phase != DisputePhase::AwaitReferee || sender != d.defender {
            return Err(TxError::WrongMove {
                dispute: id,
                action: "referee",
                sender,
            });
        }
        self.referee_with(id, d, peaks, inputs)
    }

    /// Re-executes the disputed step on `inputs`, each checked against what both
    /// parties agreed, and resolves the dispute on the result.
    fn referee_with(
        &mut self,
        id: DisputeId,
        d: Dispute,
        peaks: &[Hash],
        inputs: &[RefereeInput],
    ) -> Result<(), TxError> {
        let i = d.lo;
        let prefix = trace::prefix_root(i, peaks)
            .ok_or(TxError::InvalidProof("peak count does not fit the prefix"))?;
        // Both parties agree on c_{i-1}: the last agreed value, or the empty chain.
        let agreed = d.agreed.unwrap_or_else(trace::empty_chain);
        if prefix != agreed {
            return Err(TxError::InvalidProof(
                "peaks do not give the agreed chain value",
            ));
        }
        let job = self.job(d.job)?;
        let mut args = Vec::with_capacity(inputs.len());
        for (n, input) in inputs.iter().enumerate() {
            let bad = || TxError::BadTensor { index: n };
            args.push(match input {
                RefereeInput::JobInput { index } => {
                    let blob = job.input_inline.as_deref().ok_or(TxError::InvalidProof(
                        "the job's input is by CID: hand the referee its blob",
                    ))?;
                    StepInput::JobInput {
                        index: *index,
                        tensor: job_input(blob, *index, n)?,
                    }
                }
                RefereeInput::JobInputBlob { index, blob } => {
                    // The blob store names a blob by the blake3 of its bytes, which is
                    // the digest of the job's CID and so its input hash.
                    if Hash::of(blob) != job.input_hash {
                        return Err(TxError::InvalidProof(
                            "the blob does not hash to the job's input",
                        ));
                    }
                    StepInput::JobInput {
                        index: *index,
                        tensor: job_input(blob, *index, n)?,
                    }
                }
                RefereeInput::Step {
                    step,
                    output,
                    outputs,
                    siblings,
                    other_peaks,
                } => {
                    let tensors = outputs
                        .iter()
                        .map(|b| Tensor::decode(b))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| bad())?;
                    let h = trace::step_hash(*step, &tensors)
                        .ok_or(TxError::InvalidProof("step index out of range"))?;
                    if *step >= i
                        || !trace::verify_input(i, *step, &h, siblings, other_peaks, &agreed)
                    {
                        return Err(TxError::InvalidProof(
                            "input step hash is not in the agreed prefix",
                        ));
                    }
                    let t = tensors
                        .get(*output as usize)
                        .cloned()
                        .ok_or(TxError::InvalidProof("no such output of that step"))?;
                    StepInput::Step {
                        step: *step,
                        slot: *output,
                        tensor: t,
                    }
                }
                RefereeInput::Initializer { name } => StepInput::Initializer(name.clone()),
                RefereeInput::Absent => StepInput::Absent,
            });
        }
        let truth = self.referee.execute_step(&job.manifest, i, &args)?;
        let correct = trace::chain_after(i, peaks, truth);
        let defender_won = d.disputed == Some(correct);
        self.resolve(id, d, defender_won, false)
    }

    /// Ends a dispute: the loser is slashed (its bond, or its stake and it is jailed),
    /// the winner gets `reward_bps` of it, the rest is burned, and the job settles on
    /// the winner's result. In replicated mode every executor that revealed the
    /// losing result is slashed with it (only the party that missed its move when the
    /// dispute ended by timeout), and the winner goes on to defend its result against
    /// the next different one, if any, before the job settles.
    fn resolve(
        &mut self,
        id: DisputeId,
        mut d: Dispute,
        defender_won: bool,
        by_timeout: bool,
    ) -> Result<(), TxError> {
        let (winner, loser) = if defender_won {
            (d.defender, d.challenger)
        } else {
            (d.challenger, d.defender)
        };
        let job = self.job(d.job)?;
        let replicated = matches!(job.mode, deed_types::Mode::Replicated(_));
        let groups = if replicated {
            result_groups(&job)
        } else {
            Vec::new()
        };
        let group_of = |who: Address| -> Option<usize> {
            let pos = job.executors.iter().position(|a| *a == who)?;
            groups.iter().position(|g| g.contains(&pos))
        };
        let bond = std::mem::take(&mut d.bond);
        let slashed = if replicated {
            let losers: Vec<Address> = match group_of(loser) {
                Some(g) if !by_timeout => groups[g].iter().map(|&i| job.executors[i]).collect(),
                _ => vec![loser],
            };
            let mut total: u128 = 0;
            for l in losers {
                let taken = self.slash_share(l)?;
                total = total.checked_add(taken).ok_or(TxError::Overflow("slash"))?;
            }
            // Co-executors post no bond; nothing else is held by the dispute.
            self.credit(d.challenger, bond, Reason::BondReturned)?;
            total
        } else if !defender_won || bond == 0 {
            // The loser is a staked executor.
            let taken = self.slash_share(loser)?;
            // A winning challenger gets its bond back.
            self.credit(d.challenger, bond, Reason::BondReturned)?;
            taken
        } else {
            bond
        };
        let reward =
            bps_of(slashed, self.s.params.reward_bps).ok_or(TxError::Overflow("reward"))?;
        self.credit(winner, reward, Reason::DisputeReward)?;
        self.burn(slashed - reward, Reason::Slash)?;
        d.phase = DisputePhase::Resolved { defender_won };
        for k in 0..d.staged_chunks {
            self.s.referee_data.remove(&(id, k));
        }
        d.staged_chunks = 0;
        d.staged_bytes = 0;
        let job_id = d.job;
        let challenger_group = group_of(d.challenger);
        let window_left = d.window_left;
        self.s.disputes.insert(id, d);
        self.events.push(Event::DisputeResolved {
            dispute: id,
            defender_won,
            by_timeout,
        });
        let job = self.job(job_id)?;
        if !replicated {
            if !defender_won {
                return self.refund(job_id, job);
            }
            // The result stood against this challenger; others may still challenge it
            // for as long as the window had left.
            return self.reopen_window(job_id, job, window_left, loser);
        }
        // The next result in line challenges the winner.
        if let Some(next) = challenger_group.and_then(|g| groups.get(g + 1)) {
            let w = job
                .executors
                .iter()
                .position(|a| *a == winner)
                .ok_or(TxError::CorruptJob(job_id))?;
            return self.open_replicated_dispute(job_id, job, w, next[0]);
        }
        // Pay every executor that revealed the winning result.
        let paid = group_of(winner)
            .and_then(|g| groups.get(g).cloned())
            .unwrap_or_default();
        if paid.is_empty() {
            return self.refund(job_id, job);
        }
        self.finalize(job_id, job, &paid)
    }

    /// Puts a job whose result survived a dispute back in its challenge window for
    /// `blocks` more blocks; `loser` is the challenger that lost.
    fn reopen_window(
        &mut self,
        id: JobId,
        mut job: Job,
        blocks: u64,
        loser: Address,
    ) -> Result<(), TxError> {
        let window_end = self.deadline(blocks.max(1));
        job.status = JobStatus::Challengeable { window_end };
        self.s.jobs.insert(id, job);
        self.set_timer(window_end, Timer::ChallengeWindow(id));
        self.events.push(Event::ChallengeWindowReopened {
            job: id,
            window_end,
            loser,
        });
        Ok(())
    }

    /// Slashes `slash_bps` of everything `who` has at stake and jails it; returns
    /// what was taken.
    fn slash_share(&mut self, who: Address) -> Result<u128, TxError> {
        let e = self
            .s
            .executors
            .get(&who)
            .map(|e| e.slashable())
            .unwrap_or(0);
        let amount = bps_of(e, self.s.params.slash_bps).ok_or(TxError::Overflow("slash"))?;
        let taken = self.slash(who, amount);
        self.jail(who);
        Ok(taken)
    }

    /// A move deadline passed: whoever had to move loses.
    pub(crate) fn on_dispute_move(&mut self, id: DisputeId) -> Result<(), TxError> {
        let d = self.dispute(id)?;
        if d.deadline != self.env.height {
            return Ok(());
        }
        match d.phase {
            DisputePhase::AwaitReveal { .. } | DisputePhase::AwaitReferee => {
                self.resolve(id, d, false, true)
            }
            DisputePhase::AwaitResponse { .. } => self.resolve(id, d, true, true),
            DisputePhase::Resolved { .. } => Ok(()),
        }
    }
}

/// Entry `index` of a job input blob (a borsh list of canonical tensor encodings),
/// handed to the referee as input `n`.
fn job_input(blob: &[u8], index: u32, n: usize) -> Result<Tensor, TxError> {
    let list: Vec<Vec<u8>> = encoding::decode("job input", blob, usize::MAX)
        .map_err(|_| TxError::InvalidProof("the job input is not a list of tensors"))?;
    let bytes = list
        .get(index as usize)
        .ok_or(TxError::InvalidProof("no such job input"))?;
    Tensor::decode(bytes).map_err(|_| TxError::BadTensor { index: n })
}
