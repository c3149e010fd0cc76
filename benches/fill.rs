//! Fills a database with simulated days through the store's real write path,
//! then measures the queries panels run on it. Not part of the test command.
//!
//!     cargo bench --bench fill -- [--instances 50] [--days 7] [--interval 60] [--db PATH] [--keep]
//!                                 [--tiers RAW,1M,5M,1H (hours; default 48,192,720,8760)] [--payload small|panels]
//!                                 [--prometheus]
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
//! `--payload panels` keeps every metric the provisioned dashboards read, writes
//! the scrape health, via-ALB and ASG rows beside them, and then times every
//! panel of both dashboards over 1 h, 24 h, 7 d and 30 d instead of the queries
//! below (docs/grafana.md, "Latency over a filled week").
//!
//! `--payload small` keeps only the series of the metrics the panels below read
//! (CPU, load, network, memory, filesystem: ~60 of ~500), so that a week of 50
//! instances fills in minutes; a query's cost depends on the series it reads.
//!
//! The first form fills `--days` at `--interval` for `--instances` and reports
//! disk per sample offered, per-tier rows, the longest write or upkeep step,
//! and the latency of 24-hour and 7-day panels (each query on a new read-only
//! connection, as Grafana's plugin opens them, through SQLite directly;
//! median of 5). With
//! `--prometheus` every sample offered is also written to an OpenMetrics file,
//! backfilled into Debian's Prometheus (`promtool tsdb create-blocks-from
//! openmetrics`, 24-hour blocks), and each panel's PromQL equivalent is timed
//! through `query_range` on loopback beside it. The second fills
//! one database per fleet size with the same hours and compares "one metric of
//! one instance over the last hour" between them. The third launches and
//! terminates instances (10 live at a time, each scraped 20 times at 15 s) and
//! compares the process's resident memory and the store's per-instance state
//! after the first 100 terminations and after all of them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetscrape::exposition::{Limits, MetricType, parse};
use fleetscrape::record::{FailureReason, Route, SelfMetricRecord};
use fleetscrape::store::{
    AlbRoundRecord, Batch, Component, ComponentRecord, EventKind, EventRecord, InstanceRecord, Maintenance,
    MembershipRecord, Retention, ScrapeRecord, SeriesList, StatusRecord, Store,
};

// The frontend's and the plugin's expansion of a panel's SQL, as the dashboard tests run it.
#[path = "../tests/common/grafana.rs"]
#[allow(dead_code, reason = "the bench uses the expansion and the alert rules' reader, not the test helpers")]
mod grafana;

const T0: &str = include_str!("../bench/data/node_exporter-t0.prom");
const T15: &str = include_str!("../bench/data/node_exporter-t15.prom");

/// One series of the payload, and how it moves.
struct Series {
    metric: Arc<str>,
    labels: Arc<str>,
    /// The labels as exposition text (`,name="value"…`), for the Prometheus backfill.
    text_labels: String,
    base: f64,
    /// Change per second (counters), or amplitude (gauges); 0 for constants.
    delta: f64,
    counter: bool,
    idle: bool,
}

struct Fleet {
    series: Vec<Series>,
    /// The series as the store receives them, shared by every scrape.
    list: Arc<SeriesList>,
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

/// The series a fill offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// The whole node_exporter payload.
    Full,
    /// [`SMALL_PAYLOAD`].
    Small,
    /// [`PANELS_PAYLOAD`], plus the scrape health, ASG and via-ALB rows the
    /// dashboards read.
    Panels,
    /// [`ALERTS_PAYLOAD`], the same health rows, and fleetscrape's own rows
    /// (`component_status`, `self_metrics`) the alert rules read.
    Alerts,
}

/// The metrics the provisioned alert rules read (infra/grafana/alerting.toml).
const ALERTS_PAYLOAD: [&str; 11] = [
    "node_cpu_seconds_total",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemTotal_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_files",
    "node_filesystem_files_free",
    "node_filesystem_readonly",
    "node_timex_offset_seconds",
    "node_timex_sync_status",
    "node_timex_maxerror_seconds",
];

/// The metrics `--payload panels` keeps: every metric the provisioned
/// dashboards read (infra/grafana/dashboards.py).
const PANELS_PAYLOAD: [&str; 27] = [
    "node_cpu_seconds_total",
    "node_load1",
    "node_load5",
    "node_load15",
    "node_context_switches_total",
    "node_intr_total",
    "node_memory_MemTotal_bytes",
    "node_memory_MemFree_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_Buffers_bytes",
    "node_memory_Cached_bytes",
    "node_memory_SReclaimable_bytes",
    "node_memory_SwapTotal_bytes",
    "node_memory_SwapFree_bytes",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_network_receive_packets_total",
    "node_network_transmit_packets_total",
    "node_network_receive_errs_total",
    "node_network_transmit_errs_total",
    "node_network_receive_drop_total",
    "node_network_transmit_drop_total",
    "node_disk_reads_completed_total",
    "node_disk_writes_completed_total",
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "node_disk_io_time_seconds_total",
];
/// And the gauges of the quick stats.
const PANELS_PAYLOAD_MORE: [&str; 4] =
    ["node_filesystem_size_bytes", "node_filesystem_avail_bytes", "node_time_seconds", "node_boot_time_seconds"];

fn kept(payload: Payload, name: &str) -> bool {
    match payload {
        Payload::Full => true,
        Payload::Small => SMALL_PAYLOAD.iter().any(|p| name.starts_with(p)),
        Payload::Panels => PANELS_PAYLOAD.contains(&name) || PANELS_PAYLOAD_MORE.contains(&name),
        Payload::Alerts => ALERTS_PAYLOAD.contains(&name),
    }
}

fn fleet_template(payload: Payload) -> Fleet {
    let first = parse(T0, &Limits::default()).expect("t0 parses");
    let second = parse(T15, &Limits::default()).expect("t15 parses");
    let later: BTreeMap<(&str, &str), f64> =
        second.samples.iter().map(|s| ((s.name, s.raw_labels()), s.value)).collect();
    let mut types = BTreeMap::new();
    let series = first
        .samples
        .iter()
        .filter(|s| kept(payload, s.name))
        .map(|s| {
            let labels: BTreeMap<&str, String> = s.labels().map(|(n, v)| (n, v.into_owned())).collect();
            let kind = first.metric_type(s.name);
            types.insert(s.name, kind.as_str());
            let base = if s.value.is_finite() { s.value } else { 0.0 };
            let next = later.get(&(s.name, s.raw_labels())).copied().unwrap_or(base);
            let counter = kind == MetricType::Counter;
            let text_labels = labels
                .iter()
                .map(|(n, v)| format!(",{n}=\"{}\"", fleetscrape::exposition::escape_label_value(v)))
                .collect();
            Series {
                metric: s.name.into(),
                labels: serde_json::to_string(&labels).expect("labels to JSON").into(),
                text_labels,
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
    let series: Vec<Series> = series;
    let list = SeriesList {
        metrics: series.iter().map(|s| Arc::clone(&s.metric)).collect(),
        labels: series.iter().map(|s| Arc::clone(&s.labels)).collect(),
        types: types.into_iter().map(|(k, v)| (Arc::from(k), v)).collect(),
    };
    Fleet { series, list: Arc::new(list) }
}

/// Appends `scrape` to an OpenMetrics file for `promtool tsdb create-blocks-from openmetrics`.
fn write_openmetrics(out: &mut impl Write, fleet: &Fleet, scrape: &ScrapeRecord) -> std::io::Result<()> {
    for (series, &value) in fleet.series.iter().zip(&scrape.values) {
        let value = match value {
            v if v.is_nan() => "NaN".to_string(),
            v if v.is_infinite() => if v > 0.0 { "+Inf" } else { "-Inf" }.to_string(),
            v => v.to_string(),
        };
        writeln!(
            out,
            "{}{{instance=\"{}\"{}}} {value} {:.3}",
            series.metric, scrape.instance_id, series.text_labels, scrape.time
        )?;
    }
    Ok(())
}

fn instance_id(n: usize) -> String {
    format!("i-{n:017x}")
}

/// The scrape of instance `n` at simulated second `elapsed`.
fn scrape(fleet: &Fleet, n: usize, time: f64, elapsed: f64, round: u64) -> ScrapeRecord {
    let busy = 0.1 + (n % 9) as f64 / 10.0;
    let values = fleet
        .series
        .iter()
        .map(|s| match (s.delta == 0.0, s.counter) {
            (true, _) => s.base,
            (false, true) if s.idle => s.base + elapsed * s.delta.abs() * (1.0 - busy),
            (false, true) => s.base + elapsed * s.delta.abs() * (1.0 + (n % 5) as f64 / 10.0),
            (false, false) => s.base + s.delta * ((round + n as u64) % 3) as f64,
        })
        .collect();
    // One list for every scrape, as the scraper shares one per instance
    // while its payload's layout holds.
    ScrapeRecord { instance_id: instance_id(n).into(), time, series: Arc::clone(&fleet.list), values }
}

/// What the daemon writes beside the samples and the dashboards read: a
/// scrape_status row per scrape (even instances are ASG members scraped
/// through their listener, odd ones Basic instances scraped directly), a
/// round per interval of the ASG's target group, the group at each refresh.
/// One scrape in 200 times out (its samples are not written): the failed
/// intervals the fleet dashboard shows. Returns the scrapes to write.
fn health_rows(
    batch: &mut Batch,
    scrapes: Vec<ScrapeRecord>,
    round: u64,
    round_start: f64,
    refresh: bool,
) -> Vec<ScrapeRecord> {
    let count = scrapes.len();
    let members = count.div_ceil(2) as u32;
    let mut kept = Vec::with_capacity(count);
    for (n, scrape) in scrapes.into_iter().enumerate() {
        let up = (round + n as u64) % 200 != 7;
        let path = if n % 2 == 0 {
            Route::ViaAlb {
                load_balancer: "backend".into(),
                port: 9102,
                target_groups: ["web-asg"].into_iter().collect(),
            }
        } else {
            Route::Direct { address: Some(format!("10.0.{}.{}:9100", n / 250, n % 250)) }
        };
        batch.statuses.push(StatusRecord {
            time: scrape.time,
            instance_id: scrape.instance_id.clone(),
            up,
            reason: (!up).then_some(FailureReason::Timeout),
            error: (!up).then(|| "no answer within 10s".to_string()),
            duration_seconds: if up { 0.012 } else { 10.0 },
            samples: if up { scrape.len() as u32 } else { 0 },
            path,
        });
        if up {
            kept.push(scrape);
        }
    }
    batch.rounds.push(AlbRoundRecord {
        time: round_start,
        target_group: "web-asg".into(),
        members,
        wanted: members,
        requests: members + members / 4,
        reached: members,
        reached_wanted: members,
        unattributed: 0,
        errors: 0,
        abandoned: 0,
        budget: members * 4,
        duration_seconds: 0.3,
    });
    if refresh {
        batch.memberships.push(MembershipRecord {
            time: round_start,
            asg_name: "web".into(),
            members,
            desired_capacity: members as i32,
            min_size: 1,
            max_size: 2 * members as i32,
            target: Some(("ASGAverageCPUUtilization".into(), 50.0)),
        });
    }
    kept
}

fn instances(count: usize, seen: f64) -> Vec<InstanceRecord> {
    (0..count)
        .map(|n| InstanceRecord {
            instance_id: instance_id(n).into(),
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
/// With `openmetrics`, every sample offered is also written there, for the
/// same data in Prometheus.
async fn fill(
    db: &Path,
    count: usize,
    span: f64,
    interval: f64,
    retention: Retention,
    payload: Payload,
    openmetrics: Option<&Path>,
) -> Filled {
    let fleet = fleet_template(payload);
    let mut openmetrics = openmetrics
        .map(|path| std::io::BufWriter::new(std::fs::File::create(path).expect("create the OpenMetrics file")));
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
        offered += scrapes.iter().map(|s| s.len() as u64).sum::<u64>();
        if let Some(out) = openmetrics.as_mut() {
            for scrape in &scrapes {
                write_openmetrics(out, &fleet, scrape).expect("write the OpenMetrics file");
            }
        }
        let refresh = round % (60.0 / interval).max(1.0) as u64 == 0;
        let mut batch =
            Batch { instances: if refresh { instances(count, round_start) } else { vec![] }, ..Batch::default() };
        batch.scrapes = if matches!(payload, Payload::Panels | Payload::Alerts) {
            health_rows(&mut batch, scrapes, round, round_start, refresh)
        } else {
            scrapes
        };
        if payload == Payload::Alerts && refresh {
            batch.components.push(ComponentRecord {
                component: Component::Discovery,
                checked: round_start,
                ok: true,
                error: None,
            });
            for name in ["fleetscrape_remote_write_samples_dropped_total", "fleetscrape_log_lines_dropped_total"] {
                batch.self_metrics.push(SelfMetricRecord { time: round_start, name, value: 0.0 });
            }
        }
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
    if let Some(mut out) = openmetrics {
        writeln!(out, "# EOF").and_then(|()| out.flush()).expect("write the OpenMetrics file");
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

/// Median latency of `sql` over 5 runs, each on a new read-only connection
/// (as Grafana's plugin opens one per query), every column of every row read;
/// and its rows. Through SQLite directly, as the plugin's Go driver steps it:
/// sqlx would add a thread wake-up per row to the figure.
fn latency(db: &Path, sql: &str) -> (f64, usize) {
    let mut timings = Vec::new();
    let mut rows = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let conn = open_read_only(db);
        let mut statement = conn.prepare(sql).expect("prepare");
        let columns = statement.column_count();
        let mut result = statement.query([]).expect("query");
        let mut n = 0;
        while let Some(row) = result.next().expect("step") {
            for i in 0..columns {
                std::hint::black_box(row.get_ref(i).expect("column"));
            }
            n += 1;
        }
        rows = n;
        drop(result);
        drop(statement);
        conn.close().expect("close");
        timings.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    timings.sort_by(f64::total_cmp);
    (timings[2], rows)
}

/// Series in a panel's result: distinct values of its `series` column (1
/// for a wide result), with the rows.
fn series_and_rows(db: &Path, sql: &str) -> (usize, usize) {
    let conn = open_read_only(db);
    let mut statement = conn.prepare(sql).expect("prepare");
    let series_column = statement.column_names().iter().position(|c| *c == "series");
    let mut result = statement.query([]).expect("query");
    let mut series = std::collections::BTreeSet::new();
    let mut rows = 0;
    while let Some(row) = result.next().expect("step") {
        if let Some(i) = series_column {
            series.insert(format!("{:?}", row.get_ref(i).expect("series")));
        }
        rows += 1;
    }
    (series.len().max(1), rows)
}

/// Every panel of both provisioned dashboards over 1 h, 24 h, 7 d and 30 d
/// ending at the newest data: median latency (each run on a new read-only
/// connection, every column read) and points per series.
fn dashboards(db: &Path, count: usize, end: f64) {
    let ranges = [("1 h", 3600.0), ("24 h", 86_400.0), ("7 d", 7.0 * 86_400.0), ("30 d", 30.0 * 86_400.0)];
    let all: Vec<String> = (0..count).map(instance_id).collect();
    let one = vec![instance_id(0)];
    for (file, instances) in [("fleetscrape-instance.json", &one), ("fleetscrape-fleet.json", &all)] {
        // The variables as the dashboards resolve them on this fleet.
        let vars: BTreeMap<&str, Vec<String>> = [
            ("instance_id", instances.clone()),
            ("role", vec!["asg".into(), "basic".into()]),
            ("asg_name", vec!["-".into(), "web".into()]),
        ]
        .into();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/grafana/dashboards").join(file);
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("dashboard JSON");
        println!("\n{} ({} instance(s) selected)\n", dashboard["title"].as_str().unwrap_or(file), instances.len());
        println!(
            "| panel | 1 h ms | 24 h ms | 7 d ms | 30 d ms | points per series 1 h / 24 h / 7 d / 30 d | series (7 d) |"
        );
        println!("|---|---|---|---|---|---|---|");
        for panel in dashboard["panels"].as_array().expect("panels") {
            let Some(target) = panel["targets"].get(0) else { continue };
            let sql = target["rawQueryText"].as_str().expect("SQL");
            let mut ms = Vec::new();
            let mut points = Vec::new();
            let mut week_series = 0;
            for (name, width) in ranges {
                let expanded =
                    grafana::expand(sql, &vars, ((end - width) * 1000.0) as i64, ((end + 1.0) * 1000.0) as i64);
                assert!(!expanded.contains("$__"), "a variable left in {expanded}");
                let (median, _) = latency(db, &expanded);
                let (series, rows) = series_and_rows(db, &expanded);
                ms.push(format!("{median:.1}"));
                points.push(format!("{}", rows / series));
                if name == "7 d" {
                    week_series = series;
                }
            }
            println!(
                "| {} | {} | {} | {week_series} |",
                panel["title"].as_str().unwrap_or("?"),
                ms.join(" | "),
                points.join(" / ")
            );
        }
    }
}

/// The documented tier choice (docs/sql.md), `$__from`/`$__to` filled in.
fn tiered_gauge(metric: &str, instance_filter: &str, from: f64, to: f64) -> String {
    include_str!("../docs/queries/gauge_by_range.sql")
        .replace("$__from", &format!("{}", (from * 1000.0) as i64))
        .replace("$__to", &format!("{}", (to * 1000.0) as i64))
        .replace("$metric", metric)
        .replace("$instances", instance_filter)
}

/// The panels' queries, on the filled database and, with `prometheus`, their
/// PromQL equivalents on the same samples, side by side.
async fn panels(db: &Path, count: usize, end: f64, interval: f64, prometheus: Option<&Prometheus>) {
    let one = instance_id(0);
    let all: Vec<String> = (0..count).map(|n| format!("'{}'", instance_id(n))).collect();
    let all = all.join(", ");
    let (hour, day, week) = (end - 3600.0, end - 86_400.0, end - 7.0 * 86_400.0);
    // PromQL as a Grafana panel of the same range would ask it: raw panels at
    // the scrape interval, 24-hour panels at 1 minute, 7-day ones at 5 minutes
    // (~2,000 points); rate() over at least two scrapes.
    let raw = interval;
    let window = |step: f64| format!("{}s", (2.0 * interval).max(step) as u64);
    let cpu = |step: f64| {
        format!("100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{{mode=\"idle\"}}[{}])))", window(step))
    };
    let cases: Vec<(String, String, (String, f64, f64))> = vec![
        (
            "CPU busy of every instance, 24 h, raw (cpu_utilization)".into(),
            format!("SELECT time, instance_id, value FROM cpu_utilization WHERE time >= {day} AND time < {end}"),
            (cpu(raw), day, raw),
        ),
        (
            "CPU busy of every instance, 24 h, 1-minute tier".into(),
            format!("SELECT time, instance_id, avg FROM cpu_utilization_1m WHERE time >= {day} AND time < {end}"),
            (cpu(60.0), day, 60.0),
        ),
        (
            "CPU busy of every instance, 7 d, 5-minute tier".into(),
            format!("SELECT time, instance_id, avg FROM cpu_utilization_5m WHERE time >= {week} AND time < {end}"),
            (cpu(300.0), week, 300.0),
        ),
        (
            "node_load1 of one instance, 1 h, raw".into(),
            format!(
                "SELECT time, value FROM metric_samples WHERE metric = 'node_load1' AND instance_id = '{one}' AND time >= {hour} AND time < {end}"
            ),
            (format!("node_load1{{instance=\"{one}\"}}"), hour, raw),
        ),
        (
            "node_load1 of one instance, 24 h, raw".into(),
            format!(
                "SELECT time, value FROM metric_samples WHERE metric = 'node_load1' AND instance_id = '{one}' AND time >= {day} AND time < {end}"
            ),
            (format!("node_load1{{instance=\"{one}\"}}"), day, raw),
        ),
        (
            "node_load1 of one instance, 24 h, 1-minute tier".into(),
            format!(
                "SELECT time, avg FROM metric_samples_1m WHERE metric = 'node_load1' AND instance_id = '{one}' AND time >= {day} AND time < {end}"
            ),
            (format!("avg_over_time(node_load1{{instance=\"{one}\"}}[{}])", window(60.0)), day, 60.0),
        ),
        (
            "network receive rate of one instance, 7 d, 5-minute tier".into(),
            format!(
                "SELECT time, labels, rate FROM metric_samples_5m WHERE metric = 'node_network_receive_bytes_total' AND instance_id = '{one}' AND time >= {week} AND time < {end}"
            ),
            (format!("rate(node_network_receive_bytes_total{{instance=\"{one}\"}}[{}])", window(300.0)), week, 300.0),
        ),
        (
            format!("7-day node_load1 panel of {count} instances, tier chosen from the range"),
            tiered_gauge("node_load1", &all, week, end),
            (format!("avg_over_time(node_load1[{}])", window(300.0)), week, 300.0),
        ),
        (
            format!("24-hour node_load1 panel of {count} instances, tier chosen from the range"),
            tiered_gauge("node_load1", &all, day, end),
            (format!("avg_over_time(node_load1[{}])", window(60.0)), day, 60.0),
        ),
    ];
    match prometheus {
        None => {
            println!("| query | ms (median of 5) | rows |");
            println!("|---|---|---|");
        }
        Some(_) => {
            println!("| query | fleetscrape ms (rows) | PromQL | Prometheus ms (points) | fleetscrape / Prometheus |");
            println!("|---|---|---|---|---|");
        }
    }
    for (name, sql, (promql, from, step)) in cases {
        let (ms, rows) = latency(db, &sql);
        match prometheus {
            None => println!("| {name} | {ms:.1} | {rows} |"),
            Some(prometheus) => {
                let (prom_ms, points) = prometheus.query_range(&promql, from, end, step).await;
                println!(
                    "| {name} | {ms:.1} ({rows}) | `{promql}` step {step} s | {prom_ms:.1} ({points}) | {:.2}× |",
                    ms / prom_ms
                );
            }
        }
    }
}

/// Debian's Prometheus over the same samples, backfilled with promtool, on loopback.
struct Prometheus {
    child: std::process::Child,
    url: String,
    client: reqwest::Client,
}

impl Prometheus {
    async fn backfill_and_start(openmetrics: &Path, dir: &Path) -> Self {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("create the Prometheus directory");
        eprintln!("backfilling Prometheus from {} (promtool)", openmetrics.display());
        let t = Instant::now();
        let status = std::process::Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics", "-q"])
            .arg(openmetrics)
            .arg(&data)
            .status()
            .expect("run promtool (apt-get install -y prometheus)");
        assert!(status.success(), "promtool failed: {status}");
        eprintln!("backfilled in {:.0} s", t.elapsed().as_secs_f64());
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 15s\n").expect("write prometheus.yml");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .args(["--storage.tsdb.retention.time=3650d", "--log.level=warn"])
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = Self { child, url: format!("http://127.0.0.1:{port}"), client: reqwest::Client::new() };
        prometheus.wait_ready().await;
        prometheus.wait_compacted(&data).await;
        prometheus
    }

    /// Waits until Prometheus has compacted the backfilled 2-hour blocks as a
    /// long-running one would have (its block count steady for 30 s).
    async fn wait_compacted(&self, data: &Path) {
        let blocks = || {
            std::fs::read_dir(data)
                .map(|entries| entries.filter_map(Result::ok).filter(|e| e.path().join("meta.json").exists()).count())
                .unwrap_or(0)
        };
        let (mut last, mut steady, started) = (blocks(), 0, Instant::now());
        eprintln!("Prometheus started with {last} blocks; waiting for its compaction");
        while steady < 6 && started.elapsed() < Duration::from_secs(900) {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let now = blocks();
            steady = if now == last { steady + 1 } else { 0 };
            last = now;
        }
        eprintln!("{last} blocks after {:.0} s", started.elapsed().as_secs_f64());
    }

    async fn wait_ready(&self) {
        let ready = format!("{}/-/ready", self.url);
        for _ in 0..600 {
            if self.client.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("Prometheus was not ready in 120 s at {}", self.url);
    }

    /// Median latency of a `query_range` over 5 runs, and the points it returned.
    async fn query_range(&self, query: &str, start: f64, end: f64, step: f64) -> (f64, usize) {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query_range", self.url),
            [
                ("query", query),
                ("start", &format!("{start:.3}")),
                ("end", &format!("{end:.3}")),
                ("step", &step.to_string()),
            ],
        )
        .expect("query_range URL");
        let mut timings = Vec::new();
        let mut points = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let body =
                self.client.get(url.clone()).send().await.and_then(|r| r.error_for_status()).expect("query_range");
            let body: serde_json::Value = serde_json::from_slice(&body.bytes().await.expect("response")).expect("JSON");
            timings.push(t.elapsed().as_secs_f64() * 1000.0);
            let series = body["data"]["result"].as_array().cloned().unwrap_or_default();
            points = series.iter().map(|s| s["values"].as_array().map_or(0, Vec::len)).sum();
        }
        timings.sort_by(f64::total_cmp);
        (timings[2], points)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new read-only connection, as the plugin opens one per query.
fn open_read_only(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    conn
}

/// Rows and bytes (SQLite's `dbstat`, indexes with their table) per table.
fn tier_rows(db: &Path) {
    let conn = open_read_only(db);
    println!("| table | rows | MiB | bytes per row |");
    println!("|---|---|---|---|");
    for table in [
        "scrape_log_0",
        "scrape_log_1",
        "scrape_log_2",
        "samples",
        "frames",
        "chunks",
        "points",
        "rollup_1m",
        "rollup_5m",
        "rollup_1h",
        "series",
    ] {
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)).expect("count");
        let bytes: i64 = conn
            .query_row(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat
                 WHERE name IN (SELECT name FROM sqlite_schema WHERE tbl_name = ?1)",
                [table],
                |row| row.get(0),
            )
            .unwrap_or(0);
        let per_row = if n > 0 { format!("{:.1}", bytes as f64 / n as f64) } else { "".into() };
        println!("| {table} | {n} | {:.1} | {per_row} |", bytes as f64 / 1048576.0);
    }
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
    payload: Payload,
    prometheus: bool,
    /// Fleet sizes whose filled databases time every provisioned alert rule.
    alerts: Option<Vec<usize>>,
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
        payload: Payload::Full,
        prometheus: false,
        alerts: None,
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
            "--prometheus" => a.prometheus = true,
            "--payload" => {
                a.payload = match value().as_str() {
                    "small" => Payload::Small,
                    "panels" => Payload::Panels,
                    "full" => Payload::Full,
                    "alerts" => Payload::Alerts,
                    other => panic!("--payload small|panels|alerts|full, not {other}"),
                }
            }
            "--churn" => a.churn = Some(value().parse().expect("--churn N")),
            "--alerts" => a.alerts = Some(value().split(',').map(|n| n.parse().expect("--alerts N,M")).collect()),
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

/// Every provisioned alert rule at its own range ending at the newest data,
/// on a filled database per fleet size: median latency and rows (series).
async fn alert_costs(dir: &Path, sizes: &[usize], args: &Args) {
    let file: serde_json::Value =
        serde_saphyr::from_str(include_str!("../infra/grafana/provisioning/alerting/fleetscrape-rules.yml"))
            .expect("the provisioned rules parse");
    let rules = grafana::alert_rules(&file);
    let mut costs: BTreeMap<String, Vec<(f64, usize)>> = BTreeMap::new();
    for &count in sizes {
        let db = dir.join(format!("alerts-{count}.db"));
        eprintln!("filling {count} instances × {} h at {} s (the rules' metrics)", args.hours, args.interval);
        let filled = fill(&db, count, args.hours * 3600.0, args.interval, args.retention, Payload::Alerts, None).await;
        let now_ms = ((filled.end + 1.0) * 1000.0) as i64;
        for rule in &rules {
            let cost = latency(&db, &rule.expanded(now_ms, rule.range_seconds));
            costs.entry(rule.uid.clone()).or_default().push(cost);
        }
    }
    println!(
        "\nEach provisioned alert rule at its own range, {} h filled at {} s (median of 5, ms; rows)\n",
        args.hours, args.interval
    );
    let header: Vec<String> = sizes.iter().map(|n| format!("{n} instances")).collect();
    println!("| rule | range | {} |", header.join(" | "));
    println!("|---|---|{}", "---|".repeat(sizes.len()));
    for rule in &rules {
        let cells: Vec<String> =
            costs[&rule.uid].iter().map(|(ms, rows)| format!("{ms:.1} ms ({rows} rows)")).collect();
        println!("| {} | {} s | {} |", rule.uid, rule.range_seconds, cells.join(" | "));
    }
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
    let fleet = fleet_template(Payload::Full);
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
                instance_id: instance_id(launched - 10).into(),
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
    if let Some(sizes) = &args.alerts {
        alert_costs(dir.path(), sizes, &args).await;
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
            let filled = fill(&db, count, args.hours * 3600.0, args.interval, args.retention, args.payload, None).await;
            let sql = format!(
                "SELECT time, value FROM metric_samples WHERE metric = 'node_load1' AND instance_id = '{}' AND time >= {} AND time < {}",
                instance_id(count / 2),
                filled.end - 3600.0,
                filled.end
            );
            let (ms, rows) = latency(&db, &sql);
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
    let openmetrics = args.prometheus.then(|| dir.path().join("offered.om"));
    let filled = fill(
        &db,
        args.instances,
        args.days * 86_400.0,
        args.interval,
        args.retention,
        args.payload,
        openmetrics.as_deref(),
    )
    .await;
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
    tier_rows(&db);
    println!();
    let prometheus = match openmetrics {
        Some(om) => Some(Prometheus::backfill_and_start(&om, &dir.path().join("prometheus")).await),
        None => None,
    };
    if args.payload == Payload::Panels {
        dashboards(&db, args.instances, filled.end);
    } else {
        panels(&db, args.instances, filled.end, args.interval, prometheus.as_ref()).await;
    }
    if args.keep {
        let kept = dir.keep();
        eprintln!("kept {}", kept.display());
    }
}
