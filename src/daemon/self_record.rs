//! fleetscrape's own counters, written to `self_metrics` once a minute.
//!
//! Grafana's alert rules read only the database; the failures an operator
//! must hear about even when nobody looks at `/metrics` (remote_write
//! dropping samples, log lines dropped, the store losing samples, discovery
//! failing) are copied there from the `/metrics` page's own families, summed
//! over their labels (issue #25, docs/alerting.md).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::output::Output;
use crate::record::{Batch, SelfMetricRecord};
use crate::serve;

/// How often the counters are written: the alert rules' evaluation interval.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// The `/metrics` families kept in `self_metrics` (docs/sql.md).
pub const COUNTERS: [&str; 7] = [
    "fleetscrape_log_lines_dropped_total",
    "fleetscrape_store_dropped_samples_total",
    "fleetscrape_store_errors_total",
    "fleetscrape_store_backpressure_waits_total",
    "fleetscrape_discovery_refresh_failures_total",
    "fleetscrape_remote_write_samples_dropped_total",
    "fleetscrape_remote_write_samples_failed_total",
];

/// The counters at `time`; remote_write's only with a receiver configured
/// (without one, an alert on them would read 0 forever).
pub fn readings(state: &serve::State, time: f64) -> Vec<SelfMetricRecord> {
    let remote = state.remote.as_ref().map(crate::remote_write::RemoteWrite::stats).unwrap_or_default();
    serve::metric_totals(state, &remote, &COUNTERS)
        .into_iter()
        .map(|(name, value)| SelfMetricRecord { time, name, value })
        .collect()
}

/// Writes [`readings`] at start and every `interval` until `shutdown`.
pub async fn run(state: serve::State, output: Output, interval: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let batch = Batch { self_metrics: readings(&state, crate::clock::now_seconds()), ..Batch::default() };
        if !output.send(batch).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use super::*;

    fn state() -> serve::State {
        let (_sender, topology) = tokio::sync::watch::channel(None);
        serve::State {
            scrape: Arc::default(),
            discovery: Arc::default(),
            writer: Arc::default(),
            writer_queue: Arc::new(crate::store::admission::Room::new(10)),
            topology,
            remote: None,
            sd: serve::SdSettings::default(),
            readiness: serve::ReadinessSettings::default(),
        }
    }

    #[test]
    fn readings_carry_the_counters_under_their_metrics_names() {
        let state = state();
        state.writer.dropped_samples.store(7, Ordering::Relaxed);
        state.discovery.failures.store(3, Ordering::Relaxed);
        let got = readings(&state, 100.0);
        let value = |name: &str| got.iter().find(|r| r.name == name).map(|r| r.value);
        assert_eq!(value("fleetscrape_store_dropped_samples_total"), Some(7.0));
        assert_eq!(value("fleetscrape_discovery_refresh_failures_total"), Some(3.0));
        assert!(got.iter().all(|r| r.time == 100.0));
        // Every counter but remote_write's, which has no receiver here.
        assert_eq!(got.len(), COUNTERS.len() - 2, "{got:?}");
        assert_eq!(value("fleetscrape_remote_write_samples_dropped_total"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_writes_at_start_and_every_interval() {
        let (handle, mut batches) = crate::store::WriterHandle::queue(1_000);
        let output = Output::new(Some(handle), None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(state(), output, INTERVAL, stop.clone()));
        tokio::time::sleep(INTERVAL * 2 + Duration::from_secs(1)).await;
        stop.cancel();
        task.await.unwrap();
        let mut written = 0;
        while let Some(batch) = batches.try_recv() {
            assert!(!batch.self_metrics.is_empty());
            written += 1;
        }
        assert_eq!(written, 3, "at 0, 60 and 120 s");
    }
}
