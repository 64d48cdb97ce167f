//! Paid audits: why a watcher re-executes results that are almost always right.
//!
//! Challenge rewards alone starve watchers: if executors never cheat, watching earns
//! nothing, watchers stop, and then cheating pays (the verifier's dilemma). So every
//! optimistic result also pays for being checked. Its challenge window has two
//! halves:
//!
//! 1. **Attest** (first half): a watcher that re-ran the job sends
//!    [`Action::Attest`](deed_types::Action::Attest) with
//!    [`digest`]`(watcher, job, c_{n-1})`, where `c_{n-1}` is the final chain value of
//!    the trace. The receipt commits only to the Merkle root over all chain values, so
//!    before the reveal nobody but the executor and those who computed the whole
//!    trace knows `c_{n-1}`; it cannot be guessed (a 256-bit hash), and a digest
//!    names its watcher, so copying another watcher's attestation earns nothing.
//!    At most `max_attesters` attestations are accepted per job, executors of the job
//!    may not attest, and a challenge closes attestation (a dispute reveals
//!    `c_{n-1}` in its first move).
//! 2. **Reveal** (second half): anyone who ran the job sends
//!    [`Action::RevealAudit`](deed_types::Action::RevealAudit): `c_{n-1}` with its
//!    proof against the receipt's trace root. Honest watchers reveal, since that is
//!    what gets them paid.
//!
//! When the job finalizes, `audit_bps` of the executor's fee is split equally among
//! the attesters whose digest matches the revealed value; the executor keeps the
//! rest (all of it when nobody attested correctly or nothing was revealed). A
//! watcher that attests without re-executing learns nothing it could attest to.
//!
//! What it does not stop: an executor that sells `c_{n-1}` to a lazy watcher, or
//! attests through addresses of its own to win back part of the audit fee or fill
//! the attestation slots. Both cost it the fee share it gives away and the
//! transaction fees, and neither lets a wrong result stand while one honest watcher
//! challenges it (`docs/threat-model.md`).

use deed_types::{Address, Hash, JobId};

/// The attestation digest of `watcher` on `job` whose final chain value is
/// `final_chain`.
pub fn digest(watcher: &Address, job: JobId, final_chain: &Hash) -> Hash {
    Hash::domain(
        "deed 2026 audit attestation",
        &[
            watcher.as_bytes(),
            &job.0.to_le_bytes(),
            final_chain.as_bytes(),
        ],
    )
}
