//! Executors and stake: bond, unbond, withdraw, unjail, and the slashing and jailing
//! used by jobs and disputes.

use deed_types::{Address, Amount, ModelId};

use super::Exec;
use crate::error::TxError;
use crate::events::{Event, Reason};
use crate::state::Executor;

impl<'a> Exec<'a> {
    pub(super) fn bond(
        &mut self,
        sender: Address,
        amount: Amount,
        endpoint: &str,
        price: Amount,
        models: &[ModelId],
    ) -> Result<(), TxError> {
        let existing = self.s.executors.get(&sender).cloned();
        if existing.is_none() && amount == 0 {
            return Err(TxError::ZeroAmount);
        }
        let mut served: Vec<ModelId> = models.to_vec();
        served.sort();
        served.dedup();
        for m in &served {
            if !self.s.models.contains(m) {
                return Err(TxError::UnknownModel(*m));
            }
        }
        self.debit(sender, amount)?;
        let mut e = existing.unwrap_or(Executor {
            stake: 0,
            endpoint: String::new(),
            price: 0,
            models: Vec::new(),
            jailed_until: None,
            unbonding: Vec::new(),
            consensus_key: None,
        });
        for m in &e.models {
            self.s.serving.remove(&(*m, sender));
        }
        for m in &served {
            self.s.serving.insert((*m, sender), ());
        }
        e.stake = e
            .stake
            .checked_add(amount)
            .ok_or(TxError::Overflow("stake"))?;
        e.endpoint = endpoint.to_owned();
        e.price = price;
        e.models = served;
        self.s.executors.insert(sender, e);
        self.s.meta.total_stake = self
            .s
            .meta
            .total_stake
            .checked_add(amount)
            .ok_or(TxError::Overflow("total stake"))?;
        self.events.push(Event::Bonded {
            executor: sender,
            amount,
        });
        Ok(())
    }

    pub(super) fn unbond(&mut self, sender: Address, amount: Amount) -> Result<(), TxError> {
        if amount == 0 {
            return Err(TxError::ZeroAmount);
        }
        let mut e = self
            .s
            .executors
            .get(&sender)
            .cloned()
            .ok_or(TxError::NotExecutor(sender))?;
        if e.stake < amount {
            return Err(TxError::InsufficientStake {
                bonded: e.stake,
                requested: amount,
            });
        }
        e.stake -= amount;
        let release = self.deadline(self.s.params.unbonding_period);
        e.unbonding.push((release, amount));
        self.s.executors.insert(sender, e);
        self.s.meta.total_stake = self.s.meta.total_stake.saturating_sub(amount);
        self.events.push(Event::Unbonding {
            executor: sender,
            amount,
            release,
        });
        Ok(())
    }

    pub(super) fn withdraw(&mut self, sender: Address) -> Result<(), TxError> {
        let mut e = self
            .s
            .executors
            .get(&sender)
            .cloned()
            .ok_or(TxError::NotExecutor(sender))?;
        let h = self.env.height;
        let (ready, waiting): (Vec<_>, Vec<_>) = e.unbonding.iter().partition(|(r, _)| *r <= h);
        if ready.is_empty() {
            return Err(TxError::NothingToWithdraw);
        }
        let total = ready
            .iter()
            .try_fold(0u128, |a, (_, x)| a.checked_add(*x))
            .ok_or(TxError::Overflow("withdrawal"))?;
        e.unbonding = waiting;
        if e.stake == 0 && e.unbonding.is_empty() {
            for m in &e.models {
                self.s.serving.remove(&(*m, sender));
            }
            // A key belongs to an executor: one that leaves frees it.
            if let Some(k) = e.consensus_key {
                self.s.consensus_keys.remove(&k);
            }
            self.s.executors.remove(&sender);
        } else {
            self.s.executors.insert(sender, e);
        }
        self.credit(sender, total, Reason::Withdrawal)
    }

    pub(super) fn unjail(&mut self, sender: Address) -> Result<(), TxError> {
        let mut e = self
            .s
            .executors
            .get(&sender)
            .cloned()
            .ok_or(TxError::NotExecutor(sender))?;
        match e.jailed_until {
            Some(until) if until <= self.env.height => {
                e.jailed_until = None;
                self.s.executors.insert(sender, e);
                self.events.push(Event::Unjailed { executor: sender });
                Ok(())
            }
            until => Err(TxError::StillJailed { until }),
        }
    }

    /// Registers `key` as the sender's consensus key, replacing any earlier one. Any
    /// executor may do it, jailed or not and whatever its stake (a key can be rotated
    /// while the executor sits out); an account that has not bonded may not, so keys
    /// are only held by accounts with stake at risk. The new key counts from the state
    /// after this block, as every state change does.
    pub(super) fn set_consensus_key(
        &mut self,
        sender: Address,
        key: [u8; 32],
        proof: &[u8; 64],
    ) -> Result<(), TxError> {
        let mut e = self
            .s
            .executors
            .get(&sender)
            .cloned()
            .ok_or(TxError::NotExecutor(sender))?;
        deed_types::verify_consensus_key(self.s.meta.chain_id, &sender, &key, proof)
            .map_err(|reason| TxError::BadConsensusKey { key, reason })?;
        if let Some(holder) = self.s.consensus_keys.get(&key) {
            if *holder != sender {
                return Err(TxError::ConsensusKeyInUse {
                    key,
                    holder: *holder,
                });
            }
        }
        if let Some(old) = e.consensus_key.replace(key) {
            self.s.consensus_keys.remove(&old);
        }
        self.s.consensus_keys.insert(key, sender);
        self.s.executors.insert(sender, e);
        self.events.push(Event::ConsensusKeySet {
            executor: sender,
            key,
        });
        Ok(())
    }

    /// Takes up to `amount` from an executor's stake, then from its unbonding stake
    /// (so unbonding cannot dodge a slash). Returns what was taken; the caller decides
    /// where it goes (a reward, a refund or a burn).
    pub(crate) fn slash(&mut self, who: Address, amount: Amount) -> Amount {
        let Some(mut e) = self.s.executors.get(&who).cloned() else {
            return 0;
        };
        let mut left = amount;
        let from_stake = left.min(e.stake);
        e.stake -= from_stake;
        left -= from_stake;
        self.s.meta.total_stake = self.s.meta.total_stake.saturating_sub(from_stake);
        for (_, x) in e.unbonding.iter_mut() {
            let take = left.min(*x);
            *x -= take;
            left -= take;
        }
        e.unbonding.retain(|(_, x)| *x > 0);
        let taken = amount - left;
        self.s.executors.insert(who, e);
        if taken > 0 {
            self.events.push(Event::Slashed {
                executor: who,
                amount: taken,
            });
        }
        taken
    }

    pub(crate) fn jail(&mut self, who: Address) {
        if let Some(mut e) = self.s.executors.get(&who).cloned() {
            let until = self.deadline(self.s.params.jail_period);
            e.jailed_until = Some(until);
            self.s.executors.insert(who, e);
            self.events.push(Event::Jailed {
                executor: who,
                until,
            });
        }
    }
}
