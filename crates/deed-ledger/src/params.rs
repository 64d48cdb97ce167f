//! Ledger parameters: fees, windows, stake and slashing rules, limits. They live in
//! the state and change only by governance ([`crate::governance`]).

use borsh::{BorshDeserialize, BorshSerialize};
use deed_types::{Amount, ParamKey, BPS_DENOMINATOR};

/// Every governable parameter. Durations are in blocks.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Params {
    /// Protocol fee per job, basis points of the executor fees (burned).
    pub protocol_fee_bps: u128,
    /// Blocks an assigned executor has to submit (or commit, then reveal).
    pub execution_timeout: u64,
    /// Blocks an optimistic receipt may be challenged.
    pub challenge_window: u64,
    /// Blocks between unbonding and withdrawal.
    pub unbonding_period: u64,
    /// Stake needed to be assigned work and to validate.
    pub min_stake: Amount,
    /// Share of a losing executor's stake slashed, basis points.
    pub slash_bps: u128,
    /// Share of a slashed amount paid to the winner, basis points (rest is burned).
    pub reward_bps: u128,
    /// Bond a challenger posts.
    pub challenge_bond: Amount,
    /// Blocks for each dispute move.
    pub move_timeout: u64,
    /// Slashed from an executor that misses a job deadline, and burned.
    pub timeout_penalty: Amount,
    /// Blocks an executor stays jailed.
    pub jail_period: u64,
    /// Blocks a proposal is open.
    pub voting_period: u64,
    /// Share of bonded stake that must vote, basis points.
    pub quorum_bps: u128,
    /// Share of votes cast that must approve, basis points (strictly more than).
    pub threshold_bps: u128,
    /// Blocks between passing and taking effect.
    pub enactment_delay: u64,
    /// Lineage levels a royalty is split over.
    pub max_lineage_depth: u64,
    /// Largest `k` of replicated mode.
    pub max_replicas: u64,
    /// Smallest transaction fee.
    pub min_tx_fee: Amount,
    /// Largest validator set.
    pub max_validators: u64,
    /// Share of an optimistic executor's fee paid to the watchers whose audit
    /// attestation matched, basis points (`crate::audit`).
    pub audit_bps: u128,
    /// Most audit attestations per job.
    pub max_attesters: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            protocol_fee_bps: 500,
            execution_timeout: 20,
            challenge_window: 50,
            unbonding_period: 2_000,
            min_stake: 1_000,
            slash_bps: 5_000,
            reward_bps: 5_000,
            challenge_bond: 100,
            move_timeout: 10,
            timeout_penalty: 10,
            jail_period: 100,
            voting_period: 50,
            quorum_bps: 3_340,
            threshold_bps: 5_000,
            enactment_delay: 10,
            max_lineage_depth: 8,
            max_replicas: 7,
            min_tx_fee: 1,
            max_validators: 100,
            audit_bps: 1_000,
            max_attesters: 8,
        }
    }
}

/// A parameter value that would break a ledger rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// The value does not fit or is out of its range.
    #[error("parameter {key:?} cannot be {value}")]
    OutOfRange {
        /// The parameter.
        key: ParamKey,
        /// The rejected value.
        value: u128,
    },
    /// Unbonding must outlast any challenge window plus the longest dispute, or a
    /// cheating executor could withdraw before being slashed.
    #[error("unbonding period {unbonding} must exceed the challenge window plus the longest dispute ({needed})")]
    UnbondingTooShort {
        /// Unbonding period.
        unbonding: u64,
        /// Smallest acceptable value minus one.
        needed: u64,
    },
}

impl Params {
    /// Longest a dispute can last: a first reveal plus 64 bisection rounds plus the
    /// referee move, two moves per round, each with its deadline.
    pub fn max_dispute_duration(&self) -> u64 {
        self.move_timeout.saturating_mul(2 * 66)
    }

    /// Checks the relations between parameters.
    pub fn validate(&self) -> Result<(), ParamError> {
        let bps = [
            (ParamKey::ProtocolFeeBps, self.protocol_fee_bps),
            (ParamKey::SlashBps, self.slash_bps),
            (ParamKey::RewardBps, self.reward_bps),
            (ParamKey::QuorumBps, self.quorum_bps),
            (ParamKey::ThresholdBps, self.threshold_bps),
            (ParamKey::AuditBps, self.audit_bps),
        ];
        for (key, value) in bps {
            if value > BPS_DENOMINATOR {
                return Err(ParamError::OutOfRange { key, value });
            }
        }
        let positive = [
            (ParamKey::ExecutionTimeout, self.execution_timeout),
            (ParamKey::ChallengeWindow, self.challenge_window),
            (ParamKey::MoveTimeout, self.move_timeout),
            (ParamKey::VotingPeriod, self.voting_period),
            (ParamKey::MaxReplicas, self.max_replicas),
            (ParamKey::MaxValidators, self.max_validators),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ParamError::OutOfRange {
                    key,
                    value: value.into(),
                });
            }
        }
        if self.max_replicas > u8::MAX as u64 {
            return Err(ParamError::OutOfRange {
                key: ParamKey::MaxReplicas,
                value: self.max_replicas.into(),
            });
        }
        let needed = self
            .challenge_window
            .saturating_add(self.execution_timeout)
            .saturating_add(self.max_dispute_duration());
        if self.unbonding_period <= needed {
            return Err(ParamError::UnbondingTooShort {
                unbonding: self.unbonding_period,
                needed,
            });
        }
        Ok(())
    }

    /// A copy with `key` set to `value`, validated.
    pub fn with(&self, key: ParamKey, value: u128) -> Result<Params, ParamError> {
        let mut p = self.clone();
        let range = || ParamError::OutOfRange { key, value };
        let blocks = || u64::try_from(value).map_err(|_| range());
        match key {
            ParamKey::ProtocolFeeBps => p.protocol_fee_bps = value,
            ParamKey::ExecutionTimeout => p.execution_timeout = blocks()?,
            ParamKey::ChallengeWindow => p.challenge_window = blocks()?,
            ParamKey::UnbondingPeriod => p.unbonding_period = blocks()?,
            ParamKey::MinStake => p.min_stake = value,
            ParamKey::SlashBps => p.slash_bps = value,
            ParamKey::RewardBps => p.reward_bps = value,
            ParamKey::ChallengeBond => p.challenge_bond = value,
            ParamKey::MoveTimeout => p.move_timeout = blocks()?,
            ParamKey::TimeoutPenalty => p.timeout_penalty = value,
            ParamKey::JailPeriod => p.jail_period = blocks()?,
            ParamKey::VotingPeriod => p.voting_period = blocks()?,
            ParamKey::QuorumBps => p.quorum_bps = value,
            ParamKey::ThresholdBps => p.threshold_bps = value,
            ParamKey::EnactmentDelay => p.enactment_delay = blocks()?,
            ParamKey::MaxLineageDepth => p.max_lineage_depth = blocks()?,
            ParamKey::MaxReplicas => p.max_replicas = blocks()?,
            ParamKey::MinTxFee => p.min_tx_fee = value,
            ParamKey::MaxValidators => p.max_validators = blocks()?,
            ParamKey::AuditBps => p.audit_bps = value,
            ParamKey::MaxAttesters => p.max_attesters = blocks()?,
            _ => return Err(range()),
        }
        p.validate()?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_unbonding_guard_holds() {
        let p = Params::default();
        p.validate().unwrap();
        assert!(matches!(
            p.with(ParamKey::UnbondingPeriod, 10),
            Err(ParamError::UnbondingTooShort { .. })
        ));
        assert!(matches!(
            p.with(ParamKey::SlashBps, 10_001),
            Err(ParamError::OutOfRange { .. })
        ));
        assert_eq!(p.with(ParamKey::MinStake, 5).unwrap().min_stake, 5);
    }
}
