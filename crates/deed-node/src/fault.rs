//! Fault injection, for tests of the verification game: a node that cheats, a
//! watcher that challenges correct results, a party that stops answering.
//!
//! The faults exist only in builds with the `fault` feature (the CLI's tests enable
//! it; release builds never do). Without it [`Faults::parse`] refuses every fault,
//! so a production node cannot be told to misbehave.
//!
//! - `corrupt-step=N`: this node's executors flip one element of the first computed
//!   step at or after `N` (the runtime's `RunOptions::corrupt_step`) and carry the
//!   error forward honestly, so their receipts name a wrong trace root they defend.
//!   Past the last node it falls on the result: every step right, the output wrong.
//!   `corrupt-step=N@K` does it in the node's executor number `K` only (from 0, in
//!   the order `deed dev` prints them), the others stay honest.
//! - `corrupt-random`: the same at a step drawn from the job id and the executor.
//! - `false-challenge`: the watcher computes its runs with a corrupted step, so it
//!   challenges correct results and plays the game with its wrong trace.
//! - `silent`: no dispute move is answered; the party loses by deadline.
//! - `bad-blobs`: the node serves its peers blob chunks with one byte flipped.

use std::fmt;

use deed_types::{Address, Hash, JobId};

/// Whether this build can inject faults (the `fault` feature).
pub const COMPILED: bool = cfg!(feature = "fault");

/// One injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Executors corrupt this step (or the first computed one after it); only the
    /// node's executor with this index (in `NodeKeys::executors` order) when one
    /// is given.
    CorruptStep(usize, Option<usize>),
    /// Executors corrupt a step drawn from the job and the executor.
    CorruptRandom,
    /// The watcher runs with a corrupted step and challenges what it checks.
    FalseChallenge,
    /// Dispute moves are not answered.
    Silent,
    /// Blob chunks served to peers are corrupted.
    BadBlobs,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::CorruptStep(n, None) => write!(f, "corrupt-step={n}"),
            Fault::CorruptStep(n, Some(k)) => write!(f, "corrupt-step={n}@{k}"),
            Fault::CorruptRandom => f.write_str("corrupt-random"),
            Fault::FalseChallenge => f.write_str("false-challenge"),
            Fault::Silent => f.write_str("silent"),
            Fault::BadBlobs => f.write_str("bad-blobs"),
        }
    }
}

/// Why a fault specification was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FaultError {
    /// This build has no fault injection.
    #[error("fault injection is not compiled into this build (it needs the `fault` feature)")]
    NotCompiled,
    /// Not a fault this node knows.
    #[error(
        "unknown fault {0:?} (expected corrupt-step=N[@K], corrupt-random, false-challenge, silent or bad-blobs)"
    )]
    Unknown(String),
}

/// The faults a node injects; empty by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults(Vec<Fault>);

impl Faults {
    /// Parses fault specifications (`corrupt-step=N[@K]`, `corrupt-random`,
    /// `false-challenge`, `silent`); refused unless the `fault` feature is compiled in.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Faults, FaultError> {
        let mut faults = Vec::with_capacity(specs.len());
        for spec in specs {
            let spec = spec.as_ref().trim();
            let fault = match spec {
                "corrupt-random" => Fault::CorruptRandom,
                "false-challenge" => Fault::FalseChallenge,
                "silent" => Fault::Silent,
                "bad-blobs" => Fault::BadBlobs,
                s => match s.strip_prefix("corrupt-step=").map(parse_corrupt_step) {
                    Some(Some((n, k))) => Fault::CorruptStep(n, k),
                    _ => return Err(FaultError::Unknown(spec.to_owned())),
                },
            };
            faults.push(fault);
        }
        if !faults.is_empty() && !cfg!(feature = "fault") {
            return Err(FaultError::NotCompiled);
        }
        Ok(Faults(faults))
    }

    /// The faults.
    pub fn list(&self) -> &[Fault] {
        &self.0
    }

    fn has(&self, f: Fault) -> bool {
        cfg!(feature = "fault") && self.0.contains(&f)
    }

    /// The step `executor` (the node's executor number `index`) corrupts in its run
    /// of `job` (of `steps` steps), if any.
    pub fn executor_step(
        &self,
        job: JobId,
        executor: &Address,
        index: usize,
        steps: u64,
    ) -> Option<usize> {
        if !cfg!(feature = "fault") {
            return None;
        }
        self.0.iter().find_map(|f| match f {
            Fault::CorruptStep(n, None) => Some(*n),
            Fault::CorruptStep(n, Some(k)) => (*k == index).then_some(*n),
            Fault::CorruptRandom => Some(drawn_step(job, executor, steps)),
            _ => None,
        })
    }

    /// The step the watcher `watcher` corrupts in its check of `job`, if any.
    pub fn watcher_step(&self, job: JobId, watcher: &Address, steps: u64) -> Option<usize> {
        self.has(Fault::FalseChallenge)
            .then(|| drawn_step(job, watcher, steps))
    }

    /// Whether dispute moves go unanswered.
    pub fn silent(&self) -> bool {
        self.has(Fault::Silent)
    }

    /// Whether blob chunks served to peers are corrupted.
    pub fn bad_blobs(&self) -> bool {
        self.has(Fault::BadBlobs)
    }
}

/// `N` or `N@K` of `corrupt-step=`.
fn parse_corrupt_step(s: &str) -> Option<(usize, Option<usize>)> {
    match s.split_once('@') {
        Some((n, k)) => Some((n.parse().ok()?, Some(k.parse().ok()?))),
        None => Some((s.parse().ok()?, None)),
    }
}

/// A step in `0..steps` drawn from the job and the party.
fn drawn_step(job: JobId, party: &Address, steps: u64) -> usize {
    let h = Hash::domain(
        "deed 2026 fault step",
        &[party.as_bytes(), &job.0.to_le_bytes()],
    );
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    (u64::from_le_bytes(first) % steps.max(1)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specifications_parse_or_are_refused() {
        assert_eq!(Faults::parse::<&str>(&[]), Ok(Faults::default()));
        assert!(matches!(
            Faults::parse(&["corrupt-step=x"]),
            Err(FaultError::Unknown(_))
        ));
        assert!(matches!(
            Faults::parse(&["lie"]),
            Err(FaultError::Unknown(_))
        ));
        assert!(matches!(
            Faults::parse(&["corrupt-step=3@x"]),
            Err(FaultError::Unknown(_))
        ));
        let parsed = Faults::parse(&["corrupt-step=3", "silent"]);
        if cfg!(feature = "fault") {
            let f = parsed.unwrap();
            assert_eq!(f.list(), [Fault::CorruptStep(3, None), Fault::Silent]);
            assert!(f.silent());
            let a = Address([7; 20]);
            assert_eq!(f.executor_step(JobId(1), &a, 0, 10), Some(3));
            assert_eq!(f.executor_step(JobId(1), &a, 2, 10), Some(3));
            let one = Faults::parse(&["corrupt-step=4@1"]).unwrap();
            assert_eq!(one.list(), [Fault::CorruptStep(4, Some(1))]);
            assert_eq!(one.list()[0].to_string(), "corrupt-step=4@1");
            assert_eq!(one.executor_step(JobId(1), &a, 0, 10), None);
            assert_eq!(one.executor_step(JobId(1), &a, 1, 10), Some(4));
            assert_eq!(f.watcher_step(JobId(1), &a, 10), None);
            let r = Faults::parse(&["corrupt-random", "false-challenge"]).unwrap();
            let s = r.executor_step(JobId(1), &a, 0, 10).unwrap();
            assert!(s < 10);
            assert_eq!(r.executor_step(JobId(1), &a, 0, 10), Some(s));
            assert!(r.watcher_step(JobId(1), &a, 10).is_some());
        } else {
            assert_eq!(parsed, Err(FaultError::NotCompiled));
        }
    }
}
