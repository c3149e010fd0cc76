//! fleetscrape's own counters, written to `self_metrics` once a minute.
//!
//! Grafana's alert rules read only the database; the failures an operator
//! must hear about even when nobody looks at `/metrics` (remote_write
//! dropping samples, log lines dropped, the store losing samples, discovery
//! failing) are copied there, named as on `/metrics` and summed over their
//! labels (issue #25, docs/alerting.md).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::output::Output;
use crate::discovery::RefreshStats;
use crate::record::{Batch, SelfMetricRecord};
use crate::remote_write::RemoteWrite;
use crate::store::admission::Room;
use crate::store::writer::WriterStats;

/// How often the counters are written: the alert rules' evaluation interval.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// Where the counters live.
#[derive(Debug, Clone)]
pub struct Sources {
    /// remote_write's receivers (none configured: no remote_write rows).
    pub remote: Option<RemoteWrite>,
    /// The SQLite writer's counters.
    pub writer: Arc<WriterStats>,
    /// The writer's queue.
    pub room: Arc<Room>,
    /// Discovery's refreshes.
    pub discovery: Arc<RefreshStats>,
}

/// The counters at `time`, as `/metrics` names them.
pub fn readings(sources: &Sources, time: f64) -> Vec<SelfMetricRecord> {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
    let reading = |name, value| SelfMetricRecord { time, name, value };
    let mut out = vec![
        reading("fleetscrape_log_lines_dropped_total", crate::logging::dropped_lines() as f64),
        reading("fleetscrape_store_dropped_samples_total", load(&sources.writer.dropped_samples)),
        reading("fleetscrape_store_errors_total", load(&sources.writer.errors)),
        reading("fleetscrape_store_backpressure_waits_total", load(&sources.room.waits)),
        reading("fleetscrape_discovery_refresh_failures_total", load(&sources.discovery.failures)),
    ];
    if let Some(remote) = sources.remote.as_ref().filter(|r| !r.is_empty()) {
        let receivers = remote.stats();
        let sum = |f: fn(&crate::remote_write::Stats) -> f64| receivers.iter().map(|r| f(&r.stats)).sum::<f64>();
        out.push(reading(
            "fleetscrape_remote_write_samples_dropped_total",
            sum(|s| (s.dropped_queue_full.load(Ordering::Relaxed) + s.dropped_shutdown.load(Ordering::Relaxed)) as f64),
        ));
        out.push(reading(
            "fleetscrape_remote_write_samples_failed_total",
            sum(|s| s.failed.load(Ordering::Relaxed) as f64),
        ));
    }
    out
}

/// Writes [`readings`] at start and every `interval` until `shutdown`.
pub async fn run(sources: Sources, output: Output, interval: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let batch = Batch { self_metrics: readings(&sources, crate::clock::now_seconds()), ..Batch::default() };
        if !output.send(batch).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> Sources {
        Sources { remote: None, writer: Arc::default(), room: Arc::new(Room::new(10)), discovery: Arc::default() }
    }

    #[test]
    fn readings_carry_the_counters_under_their_metrics_names() {
        let sources = sources();
        sources.writer.dropped_samples.store(7, Ordering::Relaxed);
        sources.discovery.failures.store(3, Ordering::Relaxed);
        let got = readings(&sources, 100.0);
        let value = |name: &str| got.iter().find(|r| r.name == name).map(|r| r.value);
        assert_eq!(value("fleetscrape_store_dropped_samples_total"), Some(7.0));
        assert_eq!(value("fleetscrape_discovery_refresh_failures_total"), Some(3.0));
        assert!(got.iter().all(|r| r.time == 100.0));
        // No receiver configured: no remote_write rows (an alert on them would read 0 forever).
        assert_eq!(value("fleetscrape_remote_write_samples_dropped_total"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_writes_at_start_and_every_interval() {
        let (handle, mut batches) = crate::store::WriterHandle::queue(1_000);
        let output = Output::new(Some(handle), None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(sources(), output, INTERVAL, stop.clone()));
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
