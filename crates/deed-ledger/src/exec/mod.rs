//! Transaction execution: the fee-and-nonce envelope, then one handler per action.
//!
//! A transaction first passes checks that need no fee (limits, signature, chain
//! id, nonce, fee); failing any of them leaves the state untouched. Then the fee is
//! charged and the nonce consumed, and the action runs against journaled tables: if
//! it fails, every write it made is rolled back, so the fee and nonce are its only
//! effects.

mod audit;
mod disputes;
mod governance;
mod jobs;
mod registry;
mod staking;

use deed_types::{Action, Address, Amount, Hash, SignedTransaction, BPS_DENOMINATOR};

use crate::error::TxError;
use crate::events::{Event, Reason};
use crate::referee::Referee;
use crate::state::{Account, State, Timer};
use jobs::JobRequest;

/// What a block gives its transactions: height, proposer and randomness.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Env {
    pub height: u64,
    pub proposer: Address,
    pub randomness: Hash,
}

/// The running state of one block's execution.
pub(crate) struct Exec<'a> {
    pub s: &'a mut State,
    pub env: Env,
    pub events: Vec<Event>,
    pub referee: &'a dyn Referee,
}

/// `amount × bps / 10 000`, rounding down; `None` only when that share itself does
/// not fit an amount (`bps` above 10 000).
pub fn bps_of(amount: Amount, bps: u128) -> Option<Amount> {
    // amount = q·D + r, so amount·bps/D = q·bps + r·bps/D exactly (rounded down
    // alike): the share of any amount up to `u128::MAX` is computed, where
    // `amount · bps` itself would overflow above `u128::MAX / bps`.
    let (q, r) = (amount / BPS_DENOMINATOR, amount % BPS_DENOMINATOR);
    q.checked_mul(bps)?
        .checked_add(r.checked_mul(bps)? / BPS_DENOMINATOR)
}

/// Whether `a · x ≥ b · y`, exactly: the products are taken on 256 bits (`x` and `y`
/// are basis-point figures, which fit 64 bits; larger ones count as `u64::MAX`).
pub(crate) fn products_at_least(a: u128, x: u128, b: u128, y: u128) -> bool {
    let wide = |a: u128, x: u128| -> (u128, u128) {
        let x = u128::from(u64::try_from(x).unwrap_or(u64::MAX));
        let (hi, lo) = (a >> 64, a & u128::from(u64::MAX));
        // a·x = hi·x·2^64 + lo·x, each partial product below 2^128.
        let (top, low) = (hi * x, lo * x);
        let (sum, carry) = (top << 64).overflowing_add(low);
        ((top >> 64) + u128::from(carry), sum)
    };
    wide(a, x) >= wide(b, y)
}

impl<'a> Exec<'a> {
    /// Applies one signed transaction. Returns the sender when it could be recovered.
    pub fn apply_tx(&mut self, stx: &SignedTransaction) -> (Option<Address>, Result<(), TxError>) {
        let sender = match self.check_and_charge(stx) {
            Ok(sender) => sender,
            Err((sender, e)) => return (sender, Err(e)),
        };
        let mark = self.s.mark();
        let events = self.events.len();
        let result = self.dispatch(sender, &stx.tx.action);
        if result.is_err() {
            self.s.rollback(mark);
            self.events.truncate(events);
        }
        self.s.settle();
        (Some(sender), result)
    }

    fn check_and_charge(
        &mut self,
        stx: &SignedTransaction,
    ) -> Result<Address, (Option<Address>, TxError)> {
        let tx = &stx.tx;
        tx.action.check_limits().map_err(|e| (None, e.into()))?;
        let sender = stx.sender().map_err(|e| (None, e.into()))?;
        let fail = |e| (Some(sender), e);
        if tx.chain_id != self.s.meta.chain_id {
            return Err(fail(TxError::WrongChain {
                expected: self.s.meta.chain_id,
                got: tx.chain_id,
            }));
        }
        let mut acct = self.s.account(&sender);
        if tx.nonce < acct.nonce {
            return Err(fail(TxError::NonceReplayed {
                expected: acct.nonce,
                got: tx.nonce,
            }));
        }
        if tx.nonce > acct.nonce {
            return Err(fail(TxError::NonceGap {
                expected: acct.nonce,
                got: tx.nonce,
            }));
        }
        if tx.fee < self.s.params.min_tx_fee {
            return Err(fail(TxError::FeeTooLow {
                fee: tx.fee,
                min: self.s.params.min_tx_fee,
            }));
        }
        if acct.balance < tx.fee {
            return Err(fail(TxError::CannotPayFee {
                balance: acct.balance,
                fee: tx.fee,
            }));
        }
        // The proposer's balance could only overflow if it held more than the supply.
        let proposer = self.s.account(&self.env.proposer);
        if proposer.balance.checked_add(tx.fee).is_none() {
            return Err(fail(TxError::Overflow("proposer balance")));
        }
        acct.balance -= tx.fee;
        acct.nonce = acct.nonce.saturating_add(1);
        self.s.accounts.insert(sender, acct);
        if tx.fee > 0 {
            self.credit(self.env.proposer, tx.fee, Reason::TxFee)
                .map_err(fail)?;
        }
        self.s.settle();
        Ok(sender)
    }

    fn dispatch(&mut self, sender: Address, action: &Action) -> Result<(), TxError> {
        match action {
            Action::Transfer { to, amount } => self.transfer(sender, *to, *amount),
            Action::RegisterModel {
                name,
                description,
                licence,
                price,
                lineage,
            } => self.register_model(sender, name, description, licence, *price, *lineage),
            Action::PublishVersion {
                model,
                manifest,
                io_schema,
                steps,
                cost,
                notes,
            } => self.publish_version(sender, *model, *manifest, io_schema, *steps, *cost, notes),
            Action::UpdateModel {
                model,
                price,
                licence,
                description,
            } => self.update_model(sender, *model, *price, licence, description),
            Action::TransferModel { model, to } => self.transfer_model(sender, *model, *to),
            Action::DeprecateVersion { model, version } => {
                self.deprecate_version(sender, *model, *version)
            }
            Action::Bond {
                amount,
                endpoint,
                price,
                models,
            } => self.bond(sender, *amount, endpoint, *price, models),
            Action::Unbond { amount } => self.unbond(sender, *amount),
            Action::Withdraw => self.withdraw(sender),
            Action::Unjail => self.unjail(sender),
            Action::RequestJob {
                model,
                version,
                input,
                mode,
                max_fee,
                executor,
            } => self.request_job(
                sender,
                JobRequest {
                    model: *model,
                    version: *version,
                    input,
                    mode: *mode,
                    max_fee: *max_fee,
                    executor: *executor,
                },
            ),
            Action::SubmitReceipt { job, receipt } => self.submit_receipt(sender, *job, receipt),
            Action::CommitOutput { job, commitment } => {
                self.commit_output(sender, *job, *commitment)
            }
            Action::RevealOutput { job, receipt, salt } => {
                self.reveal_output(sender, *job, receipt, salt)
            }
            Action::Challenge { job, trace_root } => self.challenge(sender, *job, *trace_root),
            Action::RevealStep { dispute, proof } => self.reveal_step(sender, *dispute, proof),
            Action::Respond { dispute, agree } => self.respond(sender, *dispute, *agree),
            Action::Referee {
                dispute,
                peaks,
                inputs,
            } => self.referee_step(sender, *dispute, peaks, inputs),
            Action::Propose { change } => self.propose(sender, *change),
            Action::Vote { proposal, approve } => self.vote(sender, *proposal, *approve),
            Action::Attest { job, digest } => self.attest(sender, *job, *digest),
            Action::RevealAudit { job, proof } => self.reveal_audit(*job, proof),
            Action::StageReferee { dispute, chunk } => self.stage_referee(sender, *dispute, chunk),
            Action::RefereeStaged { dispute, peaks } => {
                self.referee_staged(sender, *dispute, peaks)
            }
            Action::SetConsensusKey { key, proof } => self.set_consensus_key(sender, *key, proof),
            Action::DeclineJob { job, input } => self.decline_job(sender, *job, input.as_deref()),
        }
    }

    // ---- money -----------------------------------------------------------------

    pub(crate) fn credit(
        &mut self,
        to: Address,
        amount: Amount,
        reason: Reason,
    ) -> Result<(), TxError> {
        if amount == 0 {
            return Ok(());
        }
        let mut a: Account = self.s.account(&to);
        a.balance = a
            .balance
            .checked_add(amount)
            .ok_or(TxError::Overflow("balance"))?;
        self.s.accounts.insert(to, a);
        self.events.push(Event::Paid { to, amount, reason });
        Ok(())
    }

    pub(crate) fn debit(&mut self, from: Address, amount: Amount) -> Result<(), TxError> {
        let mut a = self.s.account(&from);
        if a.balance < amount {
            return Err(TxError::InsufficientBalance {
                available: a.balance,
                needed: amount,
            });
        }
        a.balance -= amount;
        self.s.accounts.insert(from, a);
        Ok(())
    }

    /// Destroys `amount` that has already left every balance, stake and escrow.
    pub(crate) fn burn(&mut self, amount: Amount, reason: Reason) -> Result<(), TxError> {
        if amount == 0 {
            return Ok(());
        }
        self.s.meta.supply = self
            .s
            .meta
            .supply
            .checked_sub(amount)
            .ok_or(TxError::Overflow("supply"))?;
        self.s.meta.burned = self
            .s
            .meta
            .burned
            .checked_add(amount)
            .ok_or(TxError::Overflow("burned"))?;
        self.events.push(Event::Burned { amount, reason });
        Ok(())
    }

    pub(crate) fn transfer(
        &mut self,
        from: Address,
        to: Address,
        amount: Amount,
    ) -> Result<(), TxError> {
        if amount == 0 {
            return Err(TxError::ZeroAmount);
        }
        self.debit(from, amount)?;
        self.credit(to, amount, Reason::Transfer)
    }

    pub(crate) fn set_timer(&mut self, height: u64, t: Timer) {
        self.s.timers.insert((height, t), ());
    }

    pub(crate) fn deadline(&self, blocks: u64) -> u64 {
        self.env.height.saturating_add(blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Products past `u128::MAX`, which saturating arithmetic made equal.
    #[test]
    fn large_products_are_told_apart() {
        let m = u128::MAX;
        assert!(products_at_least(m, 10_000, m, 9_999));
        assert!(!products_at_least(m, 9_999, m, 10_000));
        assert!(!products_at_least(m / 1000, 10_000, m / 2, 4_000));
        // (2^127)·10^4 = 2^128·5000 > (2^128 − 1)·5000, and one less is below it.
        assert!(products_at_least(m / 2 + 1, 10_000, m, 5_000));
        assert!(!products_at_least(m / 2, 10_000, m, 5_000));
    }

    proptest! {
        /// The comparison of products agrees with the direct one where it fits, and
        /// is exact beyond: scaling both sides by the same factor changes nothing.
        #[test]
        fn products_compare_exactly(
            a in prop_oneof![any::<u128>(), 0u128..1 << 64, Just(u128::MAX)],
            b in prop_oneof![any::<u128>(), 0u128..1 << 64, Just(u128::MAX)],
            x in 0u128..=20_000,
            y in 0u128..=20_000,
        ) {
            let got = products_at_least(a, x, b, y);
            if let (Some(l), Some(r)) = (a.checked_mul(x), b.checked_mul(y)) {
                prop_assert_eq!(got, l >= r);
            }
            if (a.checked_mul(x).is_none() || b.checked_mul(y).is_none()) && x > 0 && y > 0 {
                // a·x ≥ b·y ⇔ (a·x)·2 ≥ (b·y)·2, with the factor moved to x and y.
                prop_assert_eq!(got, products_at_least(a, 2 * x, b, 2 * y));
            }
            prop_assert!(products_at_least(a, x, a, x));
            prop_assert_eq!(products_at_least(a, 0, b, y), b == 0 || y == 0);
        }

        /// The share is `amount · bps / 10_000` rounded down: the direct product where
        /// it fits, and for any amount the one consistent with it (whole, half, none;
        /// two shares of one amount add up to the share of the sum, or one less).
        #[test]
        fn bps_of_is_the_share_rounded_down_for_any_amount(
            amount in prop_oneof![any::<u128>(), 0u128..1 << 100, Just(u128::MAX)],
            a in 0u128..=10_000,
            b in 0u128..=10_000,
        ) {
            if let Some(p) = amount.checked_mul(a) {
                prop_assert_eq!(bps_of(amount, a), Some(p / BPS_DENOMINATOR));
            }
            prop_assert_eq!(bps_of(amount, 0), Some(0));
            prop_assert_eq!(bps_of(amount, BPS_DENOMINATOR), Some(amount));
            prop_assert_eq!(bps_of(amount, 5_000), Some(amount / 2));
            let (x, y) = (bps_of(amount, a).unwrap(), bps_of(amount, b).unwrap());
            prop_assert!(x <= amount && y <= amount);
            if a + b <= BPS_DENOMINATOR {
                let sum = bps_of(amount, a + b).unwrap();
                prop_assert!(sum == x + y || sum == x + y + 1, "{} {} {}", sum, x, y);
            }
        }
    }
}
