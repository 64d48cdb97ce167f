//! Applies the benchmark block (see `benches/apply_block.rs`) a given number of times
//! and prints the time per block: a small driver for profilers such as
//! `valgrind --tool=callgrind --toggle-collect='deed_ledger::block::apply_block*'`,
//! which count instructions independently of how busy the machine is. On Linux it
//! also prints the time the thread actually ran (from `/proc/thread-self/schedstat`),
//! which on a shared machine is a fairer per-core figure than wall time.

#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../benches/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{setup, NoReferee};
use deed_ledger::apply_block;

/// Nanoseconds this thread has spent on a CPU, where the kernel reports it.
fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let (s, block) = setup();
    for _ in 0..runs {
        let mut st = s.state.clone();
        let (t, c) = (Instant::now(), cpu_ns());
        let out = apply_block(&mut st, &block, &NoReferee).unwrap();
        let (dt, dc) = (t.elapsed(), cpu_ns().zip(c).map(|(b, a)| b - a));
        assert!(out.results.iter().all(|r| r.outcome.is_ok()));
        let n = block.txs.len() as f64;
        print!(
            "{n} txs in {:.1} ms wall: {:.0} tx/s",
            dt.as_secs_f64() * 1e3,
            n / dt.as_secs_f64()
        );
        if let Some(dc) = dc {
            let secs = dc as f64 / 1e9;
            print!("; {:.1} ms on CPU: {:.0} tx/s", secs * 1e3, n / secs);
        }
        println!("; state root {}", out.state_root);
    }
}
