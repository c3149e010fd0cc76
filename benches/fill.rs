//! Fills a database with simulated days through the store's real write path,
//! then measures the queries panels run on it. Not part of the test command.
//!
//!     cargo bench --bench fill -- [--instances 50] [--days 7] [--interval 60] [--db PATH] [--keep]
//!                                 [--tiers RAW,1M,5M,1H (hours; default 48,192,720,8760)] [--payload small]
//!     cargo bench --bench fill -- --scale 20,1000 [--hours 1.2] [--interval 15]
//!     cargo bench --bench fill -- --churn 1000
//!
//! Payloads are two real node_exporter 1.5.0 payloads of this machine taken 15 s
//! apart (`bench/data/`): a series that changed between them changes at every
//! simulated scrape (counters advance at their measured rate, gauges move),
//! the others stay constant, as ~74 % of node_exporter's series do. The store's
//! clock is the newest sample written, so simulated time drives compaction and
//! retention exactly as real time would: each round is one `Store::write` (one
//! flush), followed by the upkeep steps the writer would run between flushes.
//!
//! `--payload small` keeps only the series of the metrics the panels below read
//! (CPU, load, network, memory, filesystem: ~60 of ~500), so that a week of 50
//! instances fills in minutes; a query's cost depends on the series it reads.
//!
//! The first form fills `--days` at `--interval` for `--instances` and reports
//! disk per sample offered, per-tier rows, the longest write or upkeep step,
//! and the latency of 24-hour and 7-day panels (each query on a new read-only
//! connection, as Grafana's plugin opens them; median of 5). The second fills
//! one database per fleet size with the same hours and compares "one metric of
//! one instance over the last hour" between them. The third launches and
//! terminates instances (10 live at a time, each scraped 20 times at 15 s) and
//! compares the process's resident memory and the store's per-instance state
//! after the first 100 terminations and after all of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetscrape::exposition::{Limits, MetricType, parse};
use fleetscrape::store::{
    Batch, EventKind, EventRecord, InstanceRecord, Maintenance, Retention, SampleRecord, ScrapeRecord, Store,
};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

const T0: &str = include_str!("../bench/data/node_exporter-t0.prom");
const T15: &str = include_str!("../bench/data/node_exporter-t15.prom");

/// One series of the payload, and how it moves.
struct Series {
    metric: Arc<str>,
    labels: Arc<str>,
    base: f64,
    /// Change per second (counters), or amplitude (gauges); 0 for constants.
    delta: f64,
    counter: bool,
    idle: bool,
}

struct Fleet {
    series: Vec<Series>,
    types: Vec<(Arc<str>, &'static str)>,
}

/// The metrics `--payload small` keeps: what the panels measured here read,
/// and the CPU counters (CPU busy is computed at ingest).
const SMALL_PAYLOAD: [&str; 6] = [
    "node_cpu_seconds_total",
    "node_load",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_memory_Mem",
    "node_filesystem_avail_bytes",
];

fn fleet_template(small: bool) -> Fleet {
    let first = parse(T0, &Limits::default()).expect("t0 parses");
    let second = parse(T15, &Limits::default()).expect("t15 parses");
    let later: BTreeMap<(&str, &str), f64> =
        second.samples.iter().map(|s| ((s.name, s.raw_labels()), s.value)).collect();
    let mut types = BTreeMap::new();
    let series = first
        .samples
        .iter()
        .filter(|s| !small || SMALL_PAYLOAD.iter().any(|p| s.name.starts_with(p)))
        .map(|s| {
            let labels: BTreeMap<&str, String> = s.labels().map(|(n, v)| (n, v.into_owned())).collect();
            let kind = first.metric_type(s.name);
            types.insert(s.name, kind.as_str());
            let base = if s.value.is_finite() { s.value } else { 0.0 };
            let next = later.get(&(s.name, s.raw_labels())).copied().unwrap_or(base);
            let counter = kind == MetricType::Counter;
            Series {
                metric: s.name.into(),
                labels: serde_json::to_string(&labels).expect("labels to JSON").into(),
                base,
                delta: if next.is_finite() && next != base {
                    (next - base) / if counter { 15.0 } else { 1.0 }
                } else {
                    0.0
                },
                counter,
                idle: s.name == "node_cpu_seconds_total" && labels.get("mode").is_some_and(|m| m == "idle"),
            }
        })
        .collect();
    Fleet { series, types: types.into_iter().map(|(k, v)| (Arc::from(k), v)).collect() }
}

fn instance_id(n: usize) -> String {
    format!("i-{n:017x}")
}

/// The scrape of instance `n` at simulated second `elapsed`.
fn scrape(fleet: &Fleet, n: usize, time: f64, elapsed: f64, round: u64) -> ScrapeRecord {
    let busy = 0.1 + (n % 9) as f64 / 10.0;
    let samples = fleet
        .series
        .iter()
        .map(|s| {
            let value = match (s.delta == 0.0, s.counter) {
                (true, _) => s.base,
                (false, true) if s.idle => s.base + elapsed * s.delta.abs() * (1.0 - busy),
                (false, true) => s.base + elapsed * s.delta.abs() * (1.0 + (n % 5) as f64 / 10.0),
                (false, false) => s.base + s.delta * ((round + n as u64) % 3) as f64,
            };
            SampleRecord { metric: Arc::clone(&s.metric), labels: Arc::clone(&s.labels), value }
        })
        .collect();
    ScrapeRecord { instance_id: instance_id(n), time, samples, types: fleet.types.clone() }
}

fn instances(count: usize, seen: f64) -> Vec<InstanceRecord> {
    (0..count)
        .map(|n| InstanceRecord {
            instance_id: instance_id(n),
            role: if n % 2 == 0 { "asg" } else { "basic" }.into(),
            asg_name: (n % 2 == 0).then(|| "web".into()),
            availability_zone: Some("ap-northeast-2a".into()),
            private_ip: Some(format!("10.0.{}.{}", n / 250, n % 250)),
            state: "running".into(),
            labels: "{}".into(),
            seen,
        })
        .collect()
}

struct Filled {
    offered: u64,
    seconds: f64,
    longest_step: Duration,
    end: f64,
}

/// Fills `db` with `span` simulated seconds of `count` instances.
async fn fill(db: &Path, count: usize, span: f64, interval: f64, retention: Retention, small: bool) -> Filled {
    let fleet = fleet_template(small);
    let mut store = Store::open(db).await.expect("open the database");
    let hour = 3600.0;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    let start = (now / hour).floor() * hour - span;
    let rounds = (span / interval) as u64;
    let started = Instant::now();
    let mut longest = Duration::ZERO;
    let mut offered = 0u64;
    let mut last_sweep = start;
    for round in 0..rounds {
        let elapsed = round as f64 * interval;
        let round_start = start + elapsed;
        let scrapes: Vec<ScrapeRecord> = (0..count)
            .map(|n| {
                let spread = ((n as f64 * interval / count as f64) * 1000.0).round() / 1000.0;
                scrape(&fleet, n, round_start + spread, elapsed + spread, round)
            })
            .collect();
        offered += scrapes.iter().map(|s| s.samples.len() as u64).sum::<u64>();
        let refresh = round % (60.0 / interval).max(1.0) as u64 == 0;
        let batch = Batch {
            instances: if refresh { instances(count, round_start) } else { vec![] },
            scrapes,
            ..Batch::default()
        };
        let t = Instant::now();
        store.write(&batch).await.expect("write");
        longest = longest.max(t.elapsed());
        let sweep = round_start - last_sweep >= 600.0;
        if sweep {
            last_sweep = round_start;
        }
        loop {
            let t = Instant::now();
            let step = store.maintain(&retention, 60.0, sweep).await.expect("upkeep");
            longest = longest.max(t.elapsed());
            match step {
                Maintenance::Idle | Maintenance::Retained(0) => break,
                Maintenance::Retained(_) if !sweep => break,
                _ => {}
            }
        }
        let report_every = if span > 2.0 * 86_400.0 { 6.0 * hour } else { hour };
        if round % (report_every / interval) as u64 == 0 && round > 0 {
            eprintln!(
                "  {:.1} of {:.1} simulated hours, {:.1} M samples, {:.0} s, {:.1} MiB",
                elapsed / hour,
                span / hour,
                offered as f64 / 1e6,
                started.elapsed().as_secs_f64(),
                disk_bytes(db) as f64 / (1 << 20) as f64
            );
        }
    }
    let end = store.newest();
    store.close().await;
    Filled { offered, seconds: started.elapsed().as_secs_f64(), longest_step: longest, end }
}

fn disk_bytes(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", db.display())).ok())
        .map(|m| m.len())
        .sum()
}

/// Median latency of `sql` over 5 runs, each on a new read-only connection; and its rows.
async fn latency(db: &Path, sql: &str) -> (f64, usize) {
    let mut timings = Vec::new();
    let mut rows = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let mut conn = SqliteConnectOptions::from_str("sqlite:")
            .expect("options")
            .filename(db)
            .read_only(true)
            .busy_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect");
        rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).fetch_all(&mut conn).await.expect("query").len();
        conn.close().await.expect("close");
        timings.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    timings.sort_by(f64::total_cmp);
    (timings[2], rows)
}

/// The documented tier choice (docs/sql.md), `$__from`/`$__to` filled in.
fn tiered_gauge(metric: &str, instance_filter: &str, from: f64, to: f64) -> String {
    include_str!("../docs/queries/gauge_by_range.sql")
        .replace("$__from", &format!("{}", (from * 1000.0) as i64))
        .replace("$__to", &format!("{}", (to * 1000.0) as i64))
        .replace("$metric", metric)
        .replace("$instances", instance_filter)
}

async fn panels(db: &Path, count: usize, end: f64) {
    let one = instance_id(0);
    let all: Vec<String> = (0..count).map(|n| format!("'{}'", instance_id(n))).collect();
    let all = all.join(", ");
    let (day, week) = (end - 86_400.0, end - 7.0 * 86_400.0);
    let cases = [
        (
            "CPU busy of every instance, 24 h, raw (cpu_utilization)",
            format!("SELECT time, instance_id, value FROM cpu_utilization WHERE time >= {day} AND time < {end}"),
        ),
        (
            "CPU busy of every instance, 24 h, 1-minute tier",
            format!("SELECT time, instance_id, avg FROM cpu_utilization_1m WHERE time >= {day} AND time < {end}"),
        ),
        (
            "CPU busy of every instance, 7 d, 5-minute tier",
            format!("SELECT time, instance_id, avg FROM cpu_utilization_5m WHERE time >= {week} AND time < {end}"),
        ),
        (
            "node_load1 of one instance, 1 h, raw",
            format!(
                "SELECT time, value FROM metric_samples WHERE metric = 'node_load1' AND instance_id = '{one}' AND time >= {} AND time < {end}",
                end - 3600.0
            ),
        ),
        (
            "node_load1 of one instance, 24 h, raw",
            format!(
                "SELECT time, value FROM metric_samples WHERE metric = 'node_load1' AND instance_id = '{one}' AND time >= {day} AND time < {end}"
            ),
        ),
        (
            "node_load1 of one instance, 24 h, 1-minute tier",
            format!(
                "SELECT time, avg FROM metric_samples_1m WHERE metric = 'node_load1' AND instance_id = '{one}' AND time >= {day} AND time < {end}"
            ),
        ),
        (
            "network receive rate of one instance, 7 d, 5-minute tier",
            format!(
                "SELECT time, labels, rate FROM metric_samples_5m WHERE metric = 'node_network_receive_bytes_total' AND instance_id = '{one}' AND time >= {week} AND time < {end}"
            ),
        ),
        (
            &*format!("7-day node_load1 panel of {count} instances, tier chosen from the range"),
            tiered_gauge("node_load1", &all, week, end),
        ),
        (
            &*format!("24-hour node_load1 panel of {count} instances, tier chosen from the range"),
            tiered_gauge("node_load1", &all, day, end),
        ),
    ];
    println!("| query | ms (median of 5) | rows |");
    println!("|---|---|---|");
    for (name, sql) in cases {
        let (ms, rows) = latency(db, &sql).await;
        println!("| {name} | {ms:.1} | {rows} |");
    }
}

async fn tier_rows(db: &Path) {
    let mut conn = SqliteConnectOptions::from_str("sqlite:")
        .expect("options")
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .expect("connect");
    println!("| table | rows |");
    println!("|---|---|");
    for table in ["samples", "frames", "points", "rollup_1m", "rollup_5m", "rollup_1h", "series"] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .expect("count");
        println!("| {table} | {n} |");
    }
    conn.close().await.expect("close");
}

struct Args {
    instances: usize,
    days: f64,
    interval: f64,
    db: Option<PathBuf>,
    keep: bool,
    scale: Option<Vec<usize>>,
    hours: f64,
    churn: Option<usize>,
    retention: Retention,
    small: bool,
}

fn args() -> Args {
    let mut a = Args {
        instances: 50,
        days: 7.0,
        interval: 60.0,
        db: None,
        keep: false,
        scale: None,
        hours: 1.2,
        churn: None,
        retention: Retention::DEFAULT,
        small: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--instances" => a.instances = value().parse().expect("--instances N"),
            "--days" => a.days = value().parse().expect("--days D"),
            "--interval" => a.interval = value().parse().expect("--interval SECONDS"),
            "--hours" => a.hours = value().parse().expect("--hours H"),
            "--db" => a.db = Some(value().into()),
            "--scale" => a.scale = Some(value().split(',').map(|n| n.parse().expect("--scale N,M")).collect()),
            "--keep" => a.keep = true,
            "--payload" => a.small = value() == "small",
            "--churn" => a.churn = Some(value().parse().expect("--churn N")),
            "--tiers" => {
                let hours: Vec<u64> = value().split(',').map(|h| h.parse().expect("--tiers RAW,1M,5M,1H")).collect();
                let [raw, minute, five_minutes, hour] = hours[..] else {
                    panic!("--tiers takes four durations in hours")
                };
                let h = |n: u64| Duration::from_secs(n * 3600);
                a.retention =
                    Retention { raw: h(raw), minute: h(minute), five_minutes: h(five_minutes), hour: h(hour) };
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Launches and terminates `total` instances, 10 live at a time.
async fn churn(db: &Path, total: usize) {
    let fleet = fleet_template(false);
    let mut store = Store::open(db).await.expect("open the database");
    let start = 1_764_000_000.0;
    let lives = 20u64;
    let mut marks = Vec::new();
    let mut longest = Duration::ZERO;
    let mut round = 0u64;
    for launched in 0..total + 10 {
        // Every 2 rounds one instance launches and the oldest of 10 is terminated.
        for _ in 0..(lives / 10) {
            let time = start + round as f64 * 15.0;
            let live = launched.saturating_sub(9)..=launched.min(total - 1);
            let scrapes =
                live.clone().map(|n| scrape(&fleet, n, time + n as f64 * 0.001, round as f64 * 15.0, round)).collect();
            let batch = Batch { instances: instances_of(live, time), scrapes, ..Batch::default() };
            let t = Instant::now();
            store.write(&batch).await.expect("write");
            while !matches!(store.maintain(&Retention::DEFAULT, 60.0, false).await.expect("upkeep"), Maintenance::Idle)
            {
            }
            longest = longest.max(t.elapsed());
            round += 1;
        }
        if launched >= 10 {
            let gone = EventRecord {
                time: start + round as f64 * 15.0,
                instance_id: instance_id(launched - 10),
                asg_name: Some("web".into()),
                kind: EventKind::Terminated,
                detail: String::new(),
            };
            store.write(&Batch { events: vec![gone], ..Batch::default() }).await.expect("write");
        }
        if launched == 110 || launched == total + 9 {
            marks.push((launched - 10, resident_kib(), store.memory_footprint()));
        }
    }
    println!("\nchurn: {total} instances launched and terminated, 10 live, each scraped {lives} times at 15 s\n");
    println!(
        "| after terminations | RSS (MiB) | instances with series in memory | CPU tracker | compactor's counters |"
    );
    println!("|---|---|---|---|---|");
    for (gone, kib, (loaded, cpu, remembered)) in &marks {
        println!("| {gone} | {:.1} | {loaded} | {cpu} | {remembered} |", *kib as f64 / 1024.0);
    }
    if let [first, last] = &marks[..] {
        println!(
            "\nRSS after / after the first 100: {:.2}×; longest write + upkeep {:.0} ms",
            last.1 as f64 / first.1 as f64,
            longest.as_secs_f64() * 1000.0
        );
    }
    store.close().await;
}

fn instances_of(live: std::ops::RangeInclusive<usize>, seen: f64) -> Vec<InstanceRecord> {
    let all = instances(*live.end() + 1, seen);
    all.into_iter().skip(*live.start()).collect()
}

#[tokio::main]
async fn main() {
    let args = args();
    let dir = tempfile::tempdir().expect("temp dir");
    if let Some(total) = args.churn {
        churn(&dir.path().join("churn.db"), total).await;
        return;
    }
    if let Some(sizes) = &args.scale {
        println!(
            "\n\"one metric of one instance over the last hour\", {} h filled at {} s\n",
            args.hours, args.interval
        );
        println!("| instances | samples offered | fill (s) | disk B/sample | longest step (ms) | query (ms) | rows |");
        println!("|---|---|---|---|---|---|---|");
        for &count in sizes {
            let db = dir.path().join(format!("scale-{count}.db"));
            eprintln!("filling {count} instances × {} h at {} s", args.hours, args.interval);
            let filled = fill(&db, count, args.hours * 3600.0, args.interval, args.retention, args.small).await;
            let sql = format!(
                "SELECT time, value FROM metric_samples WHERE metric = 'node_load1' AND instance_id = '{}' AND time >= {} AND time < {}",
                instance_id(count / 2),
                filled.end - 3600.0,
                filled.end
            );
            let (ms, rows) = latency(&db, &sql).await;
            println!(
                "| {count} | {} | {:.0} | {:.2} | {:.0} | {ms:.2} | {rows} |",
                filled.offered,
                filled.seconds,
                disk_bytes(&db) as f64 / filled.offered as f64,
                filled.longest_step.as_secs_f64() * 1000.0
            );
        }
        return;
    }
    let db = args.db.clone().unwrap_or_else(|| dir.path().join("filled.db"));
    eprintln!("filling {} instances × {} days at {} s into {}", args.instances, args.days, args.interval, db.display());
    let filled = fill(&db, args.instances, args.days * 86_400.0, args.interval, args.retention, args.small).await;
    let bytes = disk_bytes(&db);
    println!(
        "\n{} instances × {} simulated days at {} s: {} samples offered, filled in {:.0} s",
        args.instances, args.days, args.interval, filled.offered, filled.seconds
    );
    println!(
        "disk {:.1} MiB = {:.2} B per sample offered; longest write or upkeep step {:.0} ms\n",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / filled.offered as f64,
        filled.longest_step.as_secs_f64() * 1000.0
    );
    tier_rows(&db).await;
    println!();
    panels(&db, args.instances, filled.end).await;
    if args.keep {
        let kept = dir.keep();
        eprintln!("kept {}", kept.display());
    }
}
