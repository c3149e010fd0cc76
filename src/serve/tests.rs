use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::discovery::model::InstanceId;
use crate::discovery::{RefreshStats, SkipReason, Target, Topology};
use crate::record::{FailureReason, TargetGroups};
use crate::remote_write::{ReceiverStats, Stats};
use crate::scrape::round_core::RoundOutcome;
use crate::store::writer::WriterStats;

fn set(counter: &AtomicU64, value: u64) {
    counter.store(value, Ordering::Relaxed);
}

/// Gives each counter a value of its own: `first × scale`, `(first + 1) × scale`, …
fn set_distinct(counters: &[&AtomicU64], first: u64, scale: u64) {
    for (value, counter) in (first..).zip(counters) {
        set(counter, value * scale);
    }
}

fn target(id: &str, skip: Option<SkipReason>) -> Target {
    Target::for_tests(id, skip)
}

fn scrape_state() -> Arc<ScrapeState> {
    let scrape = ScrapeState::default();
    scrape.count(|c| {
        c.scrapes_stored.insert("direct", 3);
        c.scrapes_stored.insert("via_alb", 4);
        c.scrape_failures.insert(FailureReason::Timeout, 5);
        c.scrape_failures.insert(FailureReason::NotReachedViaAlb, 6);
        c.alb_requests = 7;
        c.unattributed.insert((["tg-a", "tg-b"].into_iter().collect(), "no_identity"), 8);
        c.early_refreshes = 9;
        c.duplicates_dropped = 10;
    });
    let group: TargetGroups = ["tg-asg"].into_iter().collect();
    let members = [InstanceId::from("i-1"), InstanceId::from("i-2")];
    for requests in [2, 3] {
        let outcome = RoundOutcome { requests, abandoned: 1, budget: 4, ..RoundOutcome::default() };
        scrape.record_round(&group, &members, 2, 1, &outcome);
    }
    Arc::new(scrape)
}

fn discovery_stats() -> Arc<RefreshStats> {
    let stats = RefreshStats::default();
    set(&stats.refreshes, 11);
    set(&stats.failures, 12);
    set(&stats.policy_failures, 13);
    if let Ok(mut calls) = stats.api_calls.lock() {
        calls.insert("DescribeLoadBalancers", 14);
        calls.insert("DescribeInstances", 15);
    }
    Arc::new(stats)
}

fn writer_stats() -> Arc<WriterStats> {
    let stats = WriterStats::default();
    // Distinct values, and microseconds that print as fractions.
    set_distinct(
        &[
            &stats.flushes,
            &stats.samples,
            &stats.flush_micros,
            &stats.errors,
            &stats.dropped_samples,
            &stats.held_samples,
            &stats.late_samples,
            &stats.compaction_steps,
            &stats.compacted_blocks,
            &stats.retention_rows,
            &stats.maintenance_errors,
            &stats.longest_pause_micros,
            &stats.checkpoints,
            &stats.longest_checkpoint_micros,
            &stats.wal_bytes,
        ],
        21,
        1_000_003,
    );
    Arc::new(stats)
}

fn writer_queue() -> Arc<crate::store::admission::Room> {
    let room = crate::store::admission::Room::new(1_000);
    set(&room.waits, 41);
    set(&room.waited_micros, 42_500_000);
    Arc::new(room)
}

fn receivers() -> Vec<ReceiverStats> {
    let receiver = |name: &str, base: u64| {
        let stats = Stats::default();
        set_distinct(
            &[
                &stats.samples_in,
                &stats.sent,
                &stats.failed,
                &stats.retried,
                &stats.dropped_queue_full,
                &stats.dropped_shutdown,
                &stats.out_of_order,
                &stats.relabeled_away,
                &stats.stale_markers,
                &stats.requests_sent,
                &stats.requests_retried,
                &stats.requests_rejected,
                &stats.bytes_sent,
                &stats.send_micros,
                &stats.highest_sent_ms,
                &stats.shards,
                &stats.series,
                &stats.pending,
            ],
            base,
            1_001,
        );
        ReceiverStats { name: name.into(), url: format!("http://127.0.0.1:9090/{name}"), stats: Arc::new(stats) }
    };
    vec![receiver("primary", 100), receiver("say \"hi\"", 200)]
}

fn state() -> State {
    let topology = Topology {
        targets: vec![
            target("i-1", None),
            target("i-2", None),
            target("i-3", Some(SkipReason::NotRunning(crate::discovery::model::InstanceState::Stopped))),
        ],
        auto_scaling_groups: vec![],
        refreshed_at: std::time::SystemTime::UNIX_EPOCH,
    };
    let (_sender, topology) = tokio::sync::watch::channel(Some(Arc::new(topology)));
    State {
        scrape: scrape_state(),
        discovery: discovery_stats(),
        writer: writer_stats(),
        writer_queue: writer_queue(),
        topology,
        remote: None,
        sd: SdSettings::default(),
        readiness: ReadinessSettings { scrape_enabled: true, refresh_interval: 60.0 },
    }
}

/// The page's lines, sorted. The log queue's counter is process-wide and
/// other tests in this process drop lines on purpose, so its value is read
/// as a number and then set aside.
fn sorted_lines(page: &str) -> Vec<String> {
    const PROCESS_WIDE: &str = "fleetscrape_log_lines_dropped_total ";
    let mut lines: Vec<String> = page
        .lines()
        .map(|line| match line.strip_prefix(PROCESS_WIDE) {
            Some(value) => {
                assert!(value.parse::<u64>().is_ok(), "{line}");
                format!("{PROCESS_WIDE}<process-wide>")
            }
            None => line.to_string(),
        })
        .collect();
    lines.sort_unstable();
    lines
}

/// Every family, label and value of `/metrics`, ordering aside, against the
/// page recorded before the self-metrics moved into one registry
/// (`metrics.golden`). Each counter has a value of its own, so a family
/// reading another's counter fails here.
#[test]
fn metrics_page_keeps_every_family_label_and_value() {
    let page = metrics_page(&state(), &receivers());
    let golden = include_str!("metrics.golden");
    let (got, want) = (sorted_lines(&page), sorted_lines(golden));
    let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing lines: {missing:#?}\nnew lines: {extra:#?}");
    assert_eq!(got, want, "the same lines, but some repeated");
}

/// The totals `run` copies into `self_metrics` are the page's families summed
/// over their labels; a family without samples (no receiver) has none.
#[test]
fn metric_totals_sum_the_pages_families_over_their_labels() {
    let (state, receivers) = (state(), receivers());
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    let names = ["fleetscrape_store_dropped_samples_total", "fleetscrape_remote_write_samples_dropped_total"];
    let dropped: f64 =
        receivers.iter().map(|r| load(&r.stats.dropped_queue_full) + load(&r.stats.dropped_shutdown)).sum();
    assert_eq!(
        metric_totals(&state, &receivers, &names),
        [(names[0], load(&state.writer.dropped_samples)), (names[1], dropped)]
    );
    assert_eq!(metric_totals(&state, &[], &names), [(names[0], load(&state.writer.dropped_samples))]);
}
