//! Where a run's time went: when each step computed and when, and on which thread,
//! each step was hashed (`RunOptions::timeline`).
//!
//! A traced run costs more than an untraced one in three ways, and a timeline tells
//! them apart: its steps may compute slower (the hashing thread reads what they
//! wrote), the time between steps grows by the handoffs to the hashing thread and
//! the steps hashed inline, and the trace may still be incomplete when the last step
//! has computed (the tail). `deed run --timeline` reports them; `scripts/bench.py`
//! compares them with an untraced run's.

use std::sync::Mutex;
use std::time::Instant;

/// A span of a run, in microseconds since the run began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    /// The step the span belongs to.
    pub step: usize,
    /// Start, µs.
    pub start_us: f64,
    /// End, µs.
    pub end_us: f64,
}

impl Span {
    /// Its length, µs.
    pub fn len_us(&self) -> f64 {
        self.end_us - self.start_us
    }
}

/// Where hashing a step ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashedOn {
    /// Another thread, overlapping later steps: the process's hashing thread, or, for
    /// a run whose kernels use every core, a kernel pool worker between its shares.
    HashThread,
    /// The thread executing the run (a small step, a full queue, the end of the run,
    /// or a run that hashes inline).
    RunThread,
}

/// The spans of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Each computed step's kernel time, in step order (steps folded while planning
    /// have none).
    pub compute: Vec<Span>,
    /// Each hashed step's hashing, in the order they ended (steps folded while
    /// planning were hashed then, and have none).
    pub hashes: Vec<(Span, HashedOn)>,
    /// When the run's thread had computed every step and handed each over, µs.
    pub steps_done_us: f64,
    /// When the run was done, µs: every step hash in the trace and the graph outputs'
    /// leaf added (for an untraced run, the outputs taken out).
    pub trace_done_us: f64,
}

/// A [`Timeline`] reduced to the figures that explain a traced run's extra time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimelineSummary {
    /// The whole run up to a complete trace, µs.
    pub total_us: f64,
    /// Time in the steps' kernels, µs.
    pub steps_us: f64,
    /// Time on the run's thread between and around steps (handing steps over,
    /// hashing small ones, freeing intermediates), up to the last step, µs.
    pub between_us: f64,
    /// From the last step computed until the trace held every step, µs.
    pub tail_us: f64,
    /// Hashing done on other threads ([`HashedOn::HashThread`]), µs.
    pub hash_thread_us: f64,
    /// Hashing done on the run's thread, µs.
    pub run_thread_us: f64,
}

impl Timeline {
    /// The summary of this run.
    pub fn summary(&self) -> TimelineSummary {
        // Folded from +0.0: an empty float sum is -0.0.
        let steps_us = self.compute.iter().fold(0.0, |a, s| a + s.len_us());
        let hashed = |on: HashedOn| -> f64 {
            self.hashes
                .iter()
                .filter(|(_, o)| *o == on)
                .fold(0.0, |a, (s, _)| a + s.len_us())
        };
        TimelineSummary {
            total_us: self.trace_done_us,
            steps_us,
            between_us: (self.steps_done_us - steps_us).max(0.0),
            tail_us: (self.trace_done_us - self.steps_done_us).max(0.0),
            hash_thread_us: hashed(HashedOn::HashThread),
            run_thread_us: hashed(HashedOn::RunThread),
        }
    }
}

impl TimelineSummary {
    /// The median of each figure over `runs` (each figure on its own), or `None` for
    /// no runs.
    pub fn median(runs: &[TimelineSummary]) -> Option<TimelineSummary> {
        fn med(runs: &[TimelineSummary], f: impl Fn(&TimelineSummary) -> f64) -> f64 {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        }
        if runs.is_empty() {
            return None;
        }
        Some(TimelineSummary {
            total_us: med(runs, |s| s.total_us),
            steps_us: med(runs, |s| s.steps_us),
            between_us: med(runs, |s| s.between_us),
            tail_us: med(runs, |s| s.tail_us),
            hash_thread_us: med(runs, |s| s.hash_thread_us),
            run_thread_us: med(runs, |s| s.run_thread_us),
        })
    }
}

/// A run's clock and the hash spans its threads record.
#[derive(Debug)]
pub(crate) struct Recorder {
    origin: Instant,
    hashes: Mutex<Vec<(Span, HashedOn)>>,
}

impl Recorder {
    pub(crate) fn new(origin: Instant) -> Recorder {
        Recorder {
            origin,
            hashes: Mutex::new(Vec::new()),
        }
    }

    /// µs from the run's start to `t`.
    pub(crate) fn at(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.origin).as_secs_f64() * 1e6
    }

    /// The span of `step` from `start` until now.
    pub(crate) fn span(&self, step: usize, start: Instant) -> Span {
        Span {
            step,
            start_us: self.at(start),
            end_us: self.at(Instant::now()),
        }
    }

    /// Records that hashing `step` ran from `start` until now, on `on`.
    pub(crate) fn hashed(&self, step: usize, start: Instant, on: HashedOn) {
        let span = self.span(step, start);
        if let Ok(mut h) = self.hashes.lock() {
            h.push((span, on));
        }
    }

    /// The hash spans recorded so far.
    pub(crate) fn take_hashes(&self) -> Vec<(Span, HashedOn)> {
        self.hashes
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(step: usize, start_us: f64, end_us: f64) -> Span {
        Span {
            step,
            start_us,
            end_us,
        }
    }

    #[test]
    fn summary_splits_the_run() {
        let t = Timeline {
            compute: vec![span(0, 1.0, 11.0), span(1, 12.0, 32.0)],
            hashes: vec![
                (span(0, 11.5, 15.0), HashedOn::HashThread),
                (span(1, 33.0, 40.0), HashedOn::RunThread),
                (span(1, 32.5, 41.0), HashedOn::HashThread),
            ],
            steps_done_us: 32.5,
            trace_done_us: 41.5,
        };
        let s = t.summary();
        assert_eq!(s.total_us, 41.5);
        assert_eq!(s.steps_us, 30.0);
        assert_eq!(s.between_us, 2.5);
        assert_eq!(s.tail_us, 9.0);
        assert_eq!(s.hash_thread_us, 12.0);
        assert_eq!(s.run_thread_us, 7.0);
    }

    #[test]
    fn median_takes_each_figure_alone() {
        let runs: Vec<TimelineSummary> = [(10.0, 3.0), (30.0, 1.0), (20.0, 2.0)]
            .iter()
            .map(|&(total_us, tail_us)| TimelineSummary {
                total_us,
                tail_us,
                ..TimelineSummary::default()
            })
            .collect();
        let m = TimelineSummary::median(&runs).unwrap();
        assert_eq!((m.total_us, m.tail_us), (20.0, 2.0));
        assert_eq!(TimelineSummary::median(&[]), None);
    }
}
