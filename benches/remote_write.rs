//! remote_write at fleet scale: `cargo bench --bench remote_write [-- --targets N]`.
//!
//! 1,000 targets (default) × the full node_exporter 1.5.0 fixture (507
//! samples, plus `up`, `scrape_duration_seconds`,
//! `scrape_samples_post_metric_relabeling` and `fleetscrape_alb_reached`) per
//! 15 s interval, through the daemon's own path: [`RemoteWrite::ingest`] →
//! translation → queue → shards → protobuf + snappy → HTTP, to a loopback
//! receiver that reads and acknowledges each body.
//!
//! 1. **Throughput**: 20 intervals (5 minutes of that fleet) offered as fast as
//!    ingest takes them; samples per second ingested and delivered, CPU per
//!    million samples, peak RSS.
//! 2. **A 5-minute receiver outage**: the receiver answers 503 while the same
//!    20 intervals arrive; samples queued, memory, samples lost with the
//!    default `max_pending_samples` and with a bound that holds them all; then
//!    the receiver returns and the queue drains.
//!
//! Counted from what was offered: the samples in the payloads handed over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use fleetscrape::config::Config;
use fleetscrape::discovery::model::Instance;
use fleetscrape::discovery::{Role, Target, Topology};
use fleetscrape::exposition::{Limits, parse};
use fleetscrape::remote_write::RemoteWrite;
use fleetscrape::store::{Batch, SampleRecord, ScrapeRecord, StatusRecord};

const FIXTURE: &str = include_str!("../tests/testdata/node_exporter-1.5.0-full.prom");
const INTERVAL: f64 = 15.0;
const ROUNDS: usize = 20;

fn proc_status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn target(i: usize) -> Target {
    let id = format!("i-{i:017x}");
    Target {
        instance: Instance {
            state: fleetscrape::discovery::model::InstanceState::Running,
            availability_zone: Some(if i.is_multiple_of(2) { "ap-northeast-2a" } else { "ap-northeast-2c" }.into()),
            ..Instance::not_found(&id)
        },
        role: Role::Asg,
        asg: Some(fleetscrape::discovery::topology::AsgMembership {
            name: "web".into(),
            lifecycle_state: Some(fleetscrape::discovery::model::LifecycleState::InService),
            health_status: Some(fleetscrape::discovery::model::AsgHealth::Healthy),
        }),
        paths: vec![],
        discovered_labels: Default::default(),
        labels: Some([("__address__".to_string(), format!("10.0.{}.{}:9100", i / 250, i % 250))].into()),
        skip: None,
    }
}

/// Per target, the fixture's series as the scraper's conversion shares them.
/// (metric, labels JSON, value) of one series.
type Series = (Arc<str>, Arc<str>, f64);

fn series(targets: usize) -> Vec<Vec<Series>> {
    let payload = parse(FIXTURE, &Limits::default()).expect("fixture parses");
    (0..targets)
        .map(|_| {
            payload
                .samples
                .iter()
                .map(|s| {
                    let labels: std::collections::BTreeMap<&str, String> =
                        s.labels().filter(|(_, v)| !v.is_empty()).map(|(n, v)| (n, v.into_owned())).collect();
                    let value = if s.value.is_finite() { s.value } else { 0.0 };
                    (Arc::from(s.name), Arc::from(serde_json::to_string(&labels).unwrap().as_str()), value)
                })
                .collect()
        })
        .collect()
}

/// The batch of one target's scrape in round `round`.
fn batch(id: &str, series: &[Series], round: usize, start: f64) -> Batch {
    let time = start + INTERVAL * round as f64;
    let samples = series
        .iter()
        .map(|(m, l, v)| SampleRecord { metric: Arc::clone(m), labels: Arc::clone(l), value: v + round as f64 })
        .collect::<Vec<_>>();
    let count = samples.len() as u32;
    Batch {
        scrapes: vec![ScrapeRecord::new(id.into(), time, samples, vec![])],
        statuses: vec![StatusRecord {
            time,
            instance_id: id.into(),
            up: true,
            reason: None,
            error: None,
            duration_seconds: 0.02,
            samples: count,
            path: fleetscrape::record::Route::ViaAlb {
                load_balancer: "backend".into(),
                port: 9102,
                target_groups: ["web"].into_iter().collect(),
            },
        }],
        ..Batch::default()
    }
}

/// A receiver that reads each body and answers 204, or 503 while `down`.
async fn receiver(down: Arc<AtomicBool>, bytes: Arc<AtomicU64>) -> String {
    let app = axum::Router::new().route(
        "/write",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (down, bytes) = (Arc::clone(&down), Arc::clone(&bytes));
            async move {
                bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                if down.load(Ordering::Relaxed) {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/write", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn config(url: &str, max_pending: usize) -> Config {
    let yaml = format!(
        "aws: {{region: ap-northeast-2}}\nstorage: {{path: null}}\n\
         remote_write:\n  - url: {url}\n    queue_config: {{max_pending_samples: {max_pending}, min_backoff: 100ms, max_backoff: 1s}}\n"
    );
    Config::from_yaml(&yaml, std::path::Path::new("/tmp/bench.yml")).expect("bench config")
}

fn stat(remote: &RemoteWrite, pick: fn(&fleetscrape::remote_write::Stats) -> &AtomicU64) -> u64 {
    remote.stats().iter().map(|r| pick(&r.stats).load(Ordering::Relaxed)).sum()
}

struct Run {
    offered: u64,
    ingest_seconds: f64,
    delivered_seconds: f64,
    cpu_seconds: f64,
}

/// Offers `ROUNDS` rounds of every target; waits until delivered (when `wait`).
async fn offer(
    remote: &RemoteWrite,
    ids: &[fleetscrape::ids::InstanceId],
    series: &[Vec<Series>],
    first_round: usize,
    wait: bool,
) -> Run {
    let start = 1_780_000_000.0;
    let (cpu, began) = (cpu_seconds(), Instant::now());
    let mut offered = 0u64;
    for round in first_round..first_round + ROUNDS {
        for (id, series) in ids.iter().zip(series) {
            let batch = batch(id, series, round, start);
            offered += batch.sample_count() as u64 + 4;
            remote.ingest(&batch);
        }
        tokio::task::yield_now().await;
    }
    let ingest_seconds = began.elapsed().as_secs_f64();
    if wait {
        let target = stat(remote, |s| &s.samples_in);
        while stat(remote, |s| &s.sent) + stat(remote, |s| &s.dropped_queue_full) < target {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Run { offered, ingest_seconds, delivered_seconds: began.elapsed().as_secs_f64(), cpu_seconds: cpu_seconds() - cpu }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let targets: usize = args
        .iter()
        .position(|a| a == "--targets")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let ids: Vec<fleetscrape::ids::InstanceId> = (0..targets).map(|i| target(i).instance.id).collect();
    let series = series(targets);
    let topology = Topology {
        targets: (0..targets).map(target).collect(),
        auto_scaling_groups: vec![],
        refreshed_at: SystemTime::now(),
    };
    let (_publish, topology_rx) = tokio::sync::watch::channel(Some(Arc::new(topology)));
    let rss_base = proc_status_kib("VmRSS:");
    println!(
        "remote_write bench: {targets} targets × {} samples + 4 per interval, {ROUNDS} intervals of 15 s (5 min)",
        series[0].len()
    );
    println!(
        "process RSS before any receiver: {:.0} MiB (the {targets} targets' fixture series)",
        rss_base as f64 / 1024.0
    );

    // 1. Throughput.
    let (down, bytes) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let url = receiver(Arc::clone(&down), Arc::clone(&bytes)).await;
    let remote = RemoteWrite::start(&config(&url, 10_000_000), topology_rx.clone()).await.unwrap();
    let warm = offer(&remote, &ids, &series, 0, true).await;
    let run = offer(&remote, &ids, &series, ROUNDS, true).await;
    let sent = stat(&remote, |s| &s.sent);
    println!("\n1. throughput (after a warm-up pass of {} samples that creates the series)", warm.offered);
    println!("   offered            {:>12} samples", run.offered);
    println!(
        "   ingest             {:>12.0} samples/s (translation + queueing, on the scraper's side)",
        run.offered as f64 / run.ingest_seconds
    );
    println!(
        "   delivered          {:>12.0} samples/s (until the receiver acknowledged all)",
        run.offered as f64 / run.delivered_seconds
    );
    println!(
        "   fleet rate needed  {:>12.0} samples/s ({targets} targets at 15 s)",
        run.offered as f64 / ROUNDS as f64 / INTERVAL
    );
    println!(
        "   CPU                {:>12.2} s per million samples (ingest + encode + send + the receiver stub)",
        run.cpu_seconds / run.offered as f64 * 1e6
    );
    println!(
        "   wire               {:>12.1} bytes/sample (snappy protobuf)",
        bytes.load(Ordering::Relaxed) as f64 / sent as f64
    );
    println!("   shards             {:>12}", stat(&remote, |s| &s.shards));
    println!("   series remembered  {:>12}", stat(&remote, |s| &s.series));
    println!(
        "   RSS now / peak     {:>9.0} / {:.0} MiB",
        proc_status_kib("VmRSS:") as f64 / 1024.0,
        proc_status_kib("VmHWM:") as f64 / 1024.0
    );
    remote.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)).await;
    drop(remote);

    // 2. A 5-minute outage, with the default bound and with one that holds it all.
    for max_pending in [10_000_000usize, 12_000_000] {
        down.store(false, Ordering::Relaxed);
        let remote = RemoteWrite::start(&config(&url, max_pending), topology_rx.clone()).await.unwrap();
        offer(&remote, &ids, &series, 0, true).await; // warm: series exist, as in a running daemon
        down.store(true, Ordering::Relaxed);
        let rss_before = proc_status_kib("VmRSS:");
        let run = offer(&remote, &ids, &series, ROUNDS * 2, false).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pending = stat(&remote, |s| &s.pending);
        let dropped = stat(&remote, |s| &s.dropped_queue_full);
        let rss_outage = proc_status_kib("VmRSS:");
        down.store(false, Ordering::Relaxed);
        let back = Instant::now();
        while stat(&remote, |s| &s.pending) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("\n2. receiver down for 5 minutes of traffic, max_pending_samples = {max_pending}");
        println!("   offered during the outage {:>10} samples", run.offered);
        println!("   queued at its end         {:>10} samples", pending);
        println!(
            "   lost (oldest first)       {:>10} samples ({:.1} %)",
            dropped,
            dropped as f64 / run.offered as f64 * 100.0
        );
        println!(
            "   memory held               {:>10.0} MiB RSS growth ({:.1} bytes per queued sample)",
            (rss_outage.saturating_sub(rss_before)) as f64 / 1024.0,
            (rss_outage.saturating_sub(rss_before)) as f64 * 1024.0 / pending.max(1) as f64
        );
        println!("   drained after it          {:>10.1} s", back.elapsed().as_secs_f64());
        remote.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)).await;
    }
    println!("\npeak RSS of the run: {:.0} MiB", proc_status_kib("VmHWM:") as f64 / 1024.0);
}
