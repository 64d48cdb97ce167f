//! Prometheus metrics, served as text at `/metrics`.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::chain::Committed;

/// The node's metrics, one registry per node (so several nodes in one process,
/// as in tests, keep theirs apart).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Height of the last committed block.
    pub height: IntGauge,
    /// Blocks committed.
    pub blocks: IntCounter,
    /// Transactions included in blocks.
    pub txs_included: IntCounter,
    /// Transactions the mempool accepted.
    pub txs_accepted: IntCounter,
    /// Transactions the mempool refused.
    pub txs_rejected: IntCounter,
    /// Transactions waiting.
    pub mempool: IntGauge,
    /// Time to apply and persist a block.
    pub block_seconds: Histogram,
    /// Time between two commits, as this node saw them.
    pub block_interval_seconds: Histogram,
    /// Consensus rounds started (more than one per height means a proposer or
    /// quorum failed).
    pub consensus_rounds: IntCounter,
    /// Consensus engine restarts by the supervisor (lost links).
    pub consensus_restarts: IntCounter,
    /// The round of the height being decided.
    pub consensus_round: IntGauge,
    /// Peers connected (the node network).
    pub peers: IntGauge,
    /// Invalid messages counted against peers since the node started.
    pub peer_strikes: IntGauge,
    /// Peers banned for invalid data since the node started.
    pub peer_bans: IntGauge,
    /// Node-network work dropped because a bounded queue was full (commands to the
    /// network task, inbound transactions the node did not take in time).
    pub net_dropped: IntGauge,
    /// Jobs this executor ran (ledger-assigned and direct).
    pub jobs_executed: IntCounter,
    /// Jobs this executor declined, their input not fitting the model.
    pub jobs_declined: IntCounter,
    /// Direct calls served.
    pub direct_calls: IntCounter,
    /// Time to run a job (load, input, run).
    pub job_seconds: Histogram,
    /// Results this watcher re-executed.
    pub jobs_checked: IntCounter,
    /// Challenges this watcher posted.
    pub challenges: IntCounter,
    /// Audit attestations this watcher made.
    pub attestations: IntCounter,
    /// Dispute moves this node's executors and watcher made.
    pub dispute_moves: IntCounter,
    /// Blob bytes received (verified chunks).
    pub blob_bytes_in: IntCounter,
    /// Blob bytes served.
    pub blob_bytes_out: IntCounter,
    /// Unfinished uploads discarded after going unused.
    pub uploads_expired: IntCounter,
    /// HTTP requests by route and status.
    pub http_requests: IntCounterVec,
    /// HTTP latency by route.
    pub http_seconds: HistogramVec,
}

type R<T> = Result<T, prometheus::Error>;

fn counter(r: &Registry, name: &str, help: &str) -> R<IntCounter> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> R<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(r: &Registry, name: &str, help: &str) -> R<Histogram> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help))?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    /// Fresh metrics in their own registry. Fails only on an invalid metric name,
    /// which the unit test below rules out.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let r = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "deed_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )?;
        r.register(Box::new(http_requests.clone()))?;
        let http_seconds = HistogramVec::new(
            HistogramOpts::new("deed_http_request_seconds", "HTTP request latency by route"),
            &["route"],
        )?;
        r.register(Box::new(http_seconds.clone()))?;
        Ok(Metrics {
            height: gauge(&r, "deed_height", "Height of the last committed block")?,
            blocks: counter(&r, "deed_blocks_total", "Blocks committed")?,
            txs_included: counter(
                &r,
                "deed_txs_included_total",
                "Transactions included in blocks",
            )?,
            txs_accepted: counter(
                &r,
                "deed_txs_accepted_total",
                "Transactions accepted by the mempool",
            )?,
            txs_rejected: counter(
                &r,
                "deed_txs_rejected_total",
                "Transactions refused by the mempool",
            )?,
            mempool: gauge(&r, "deed_mempool_size", "Transactions waiting")?,
            block_seconds: histogram(
                &r,
                "deed_block_seconds",
                "Time to apply and persist a block",
            )?,
            block_interval_seconds: histogram(
                &r,
                "deed_block_interval_seconds",
                "Time between two commits",
            )?,
            consensus_rounds: counter(
                &r,
                "deed_consensus_rounds_total",
                "Consensus rounds started",
            )?,
            consensus_restarts: counter(
                &r,
                "deed_consensus_restarts_total",
                "Consensus engine restarts after the chain stood still with peers reachable",
            )?,
            consensus_round: gauge(
                &r,
                "deed_consensus_round",
                "Round of the height being decided",
            )?,
            peers: gauge(&r, "deed_peers", "Peers connected")?,
            peer_strikes: gauge(
                &r,
                "deed_peer_strikes",
                "Invalid messages counted against peers since start",
            )?,
            peer_bans: gauge(
                &r,
                "deed_peer_bans",
                "Peers banned for invalid data since start",
            )?,
            net_dropped: gauge(
                &r,
                "deed_net_dropped",
                "Node-network commands and inbound transactions dropped on full queues since start",
            )?,
            jobs_executed: counter(&r, "deed_jobs_executed_total", "Jobs run by this executor")?,
            jobs_declined: counter(
                &r,
                "deed_jobs_declined_total",
                "Jobs this executor declined, their input not fitting the model",
            )?,
            direct_calls: counter(&r, "deed_direct_calls_total", "Direct calls served")?,
            job_seconds: histogram(&r, "deed_job_seconds", "Time to run a job")?,
            jobs_checked: counter(
                &r,
                "deed_jobs_checked_total",
                "Results re-executed by this watcher",
            )?,
            challenges: counter(
                &r,
                "deed_challenges_total",
                "Challenges posted by this watcher",
            )?,
            attestations: counter(
                &r,
                "deed_attestations_total",
                "Audit attestations made by this watcher",
            )?,
            dispute_moves: counter(
                &r,
                "deed_dispute_moves_total",
                "Dispute moves made by this node's executors and watcher",
            )?,
            blob_bytes_in: counter(
                &r,
                "deed_blob_bytes_in_total",
                "Verified blob bytes received",
            )?,
            blob_bytes_out: counter(&r, "deed_blob_bytes_out_total", "Blob bytes served")?,
            uploads_expired: counter(
                &r,
                "deed_uploads_expired_total",
                "Unfinished uploads discarded after going unused",
            )?,
            http_requests,
            http_seconds,
            registry: r,
        })
    }

    /// Records a committed block.
    pub fn observe_block(&self, c: &Committed, took: Duration) {
        self.blocks.inc();
        self.height.set(c.block.header.height as i64);
        self.txs_included.inc_by(c.block.txs.len() as u64);
        self.block_seconds.observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_registered_and_rendered() {
        let m = Metrics::new().unwrap();
        m.blocks.inc();
        m.blob_bytes_in.inc_by(42);
        m.http_requests.with_label_values(&["status", "200"]).inc();
        let text = m.render();
        for name in [
            "deed_blocks_total 1",
            "deed_blob_bytes_in_total 42",
            "deed_jobs_executed_total 0",
            "deed_jobs_declined_total 0",
            "deed_height 0",
            "deed_consensus_rounds_total 0",
            "deed_peers 0",
            "deed_http_requests_total{route=\"status\",status=\"200\"} 1",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
