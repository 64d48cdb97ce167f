//! Applies blocks of 1,000 signed transactions — 400 transfers, 300 job requests and
//! 300 receipts — including signature recovery, every ledger rule and the state
//! root. Reports throughput in transactions per second.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
mod common;

use common::{setup, NoReferee};
use deed_ledger::apply_block;

fn bench(c: &mut Criterion) {
    let (s, block) = setup();
    // The block must be valid: every transaction succeeds.
    let mut check = s.state.clone();
    let out = apply_block(&mut check, &block, &NoReferee).unwrap();
    let failed: Vec<_> = out.results.iter().filter(|r| r.outcome.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    let mut g = c.benchmark_group("apply_block");
    g.throughput(Throughput::Elements(block.txs.len() as u64));
    g.sample_size(10);
    g.bench_function("1000 signed txs (transfers, requests, receipts)", |b| {
        b.iter_batched(
            || s.state.clone(),
            |mut st| apply_block(&mut st, &block, &NoReferee).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
