//! Stake-weighted governance of parameters: propose, vote, close with quorum and
//! threshold, enact at a later height.

use deed_types::{Address, ParamChange, ProposalId, BPS_DENOMINATOR};

use super::{products_at_least, Exec};
use crate::error::TxError;
use crate::events::Event;
use crate::state::{Proposal, ProposalStatus, Timer};

impl<'a> Exec<'a> {
    fn stake_of(&self, who: Address) -> u128 {
        self.s.executors.get(&who).map(|e| e.stake).unwrap_or(0)
    }

    pub(super) fn propose(&mut self, sender: Address, change: ParamChange) -> Result<(), TxError> {
        if self.stake_of(sender) == 0 {
            return Err(TxError::NoStake(sender));
        }
        self.s.params.with(change.key, change.value)?;
        let id = ProposalId(self.s.meta.next_proposal);
        self.s.meta.next_proposal = self
            .s
            .meta
            .next_proposal
            .checked_add(1)
            .ok_or(TxError::Overflow("proposal id"))?;
        let voting_end = self.deadline(self.s.params.voting_period);
        self.s.proposals.insert(
            id,
            Proposal {
                proposer: sender,
                change,
                voting_end,
                yes: 0,
                no: 0,
                status: ProposalStatus::Voting,
            },
        );
        self.set_timer(voting_end, Timer::ProposalEnd(id));
        self.events.push(Event::Proposed {
            proposal: id,
            change,
        });
        Ok(())
    }

    /// Votes weigh the voter's active stake at the time of the vote. Stake cannot be
    /// moved to another account faster than the unbonding period, which outlasts
    /// voting, so no stake votes twice.
    pub(super) fn vote(
        &mut self,
        sender: Address,
        id: ProposalId,
        approve: bool,
    ) -> Result<(), TxError> {
        let mut p = self
            .s
            .proposals
            .get(&id)
            .cloned()
            .ok_or(TxError::UnknownProposal(id))?;
        if p.status != ProposalStatus::Voting {
            return Err(TxError::VotingClosed(id));
        }
        if self.s.votes.contains(&(id, sender)) {
            return Err(TxError::AlreadyVoted {
                proposal: id,
                voter: sender,
            });
        }
        let weight = self.stake_of(sender);
        if weight == 0 {
            return Err(TxError::NoStake(sender));
        }
        let side = if approve { &mut p.yes } else { &mut p.no };
        *side = side.checked_add(weight).ok_or(TxError::Overflow("votes"))?;
        self.s.proposals.insert(id, p);
        self.s.votes.insert((id, sender), approve);
        self.events.push(Event::Voted {
            proposal: id,
            voter: sender,
            weight,
            approve,
        });
        Ok(())
    }

    pub(crate) fn on_proposal_end(&mut self, id: ProposalId) -> Result<(), TxError> {
        let Some(mut p) = self.s.proposals.get(&id).cloned() else {
            return Ok(());
        };
        if p.status != ProposalStatus::Voting {
            return Ok(());
        }
        let cast = p.yes.saturating_add(p.no);
        let total = self.s.meta.total_stake;
        // Exact for stakes of any size (saturating products made any two large
        // sides compare equal, so a quorum of 0.1% could pass for 40%).
        let quorum = products_at_least(cast, BPS_DENOMINATOR, total, self.s.params.quorum_bps);
        let threshold =
            !products_at_least(cast, self.s.params.threshold_bps, p.yes, BPS_DENOMINATOR);
        let passed = cast > 0 && quorum && threshold;
        if passed {
            let enact_at = self.deadline(self.s.params.enactment_delay);
            p.status = ProposalStatus::Passed { enact_at };
            self.set_timer(enact_at, Timer::ProposalEnact(id));
        } else {
            p.status = ProposalStatus::Rejected;
        }
        self.s.proposals.insert(id, p);
        self.events.push(Event::ProposalClosed {
            proposal: id,
            passed,
        });
        Ok(())
    }

    pub(crate) fn on_proposal_enact(&mut self, id: ProposalId) -> Result<(), TxError> {
        let Some(mut p) = self.s.proposals.get(&id).cloned() else {
            return Ok(());
        };
        if !matches!(p.status, ProposalStatus::Passed { .. }) {
            return Ok(());
        }
        match self.s.params.with(p.change.key, p.change.value) {
            Ok(params) => {
                self.s.params = params;
                p.status = ProposalStatus::Enacted;
                self.events.push(Event::ParamChanged { change: p.change });
            }
            Err(_) => p.status = ProposalStatus::Failed,
        }
        self.s.proposals.insert(id, p);
        Ok(())
    }
}
