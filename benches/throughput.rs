//! Throughput benchmark: `cargo bench --bench throughput [-- --quick]`.
//!
//! Measures, in one run so the ratios are comparable on a noisy machine:
//! 1. the exposition parser on the full node_exporter fixture (MB/s, samples/s),
//!    against a bare line split of the same text;
//! 2. the store's steady-state ingest: rounds of N targets × every series of
//!    the fixture at one timestamp, counters advancing, one transaction per
//!    round, against the naive series-clustered layout
//!    `PRIMARY KEY (series_id, time)` fed the same rows through sqlx;
//! 3. bytes on disk (db + wal + shm) per sample after a simulated hour of
//!    15 s scrapes, and the latency of "CPU of 50 instances over the last hour".

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use fleetscrape::exposition::{KnownSeries, Limits, MetricType, parse, parse_known};
use fleetscrape::store::{Batch, InstanceRecord, SampleRecord, ScrapeRecord, Store};
use sqlx::{QueryBuilder, Sqlite};

const FIXTURE: &str = include_str!("../tests/testdata/node_exporter-1.5.0-full.prom");

struct Template {
    metric: String,
    labels: String,
    value: f64,
    counter: bool,
    idle: bool,
}

fn template() -> Vec<Template> {
    let payload = parse(FIXTURE, &Limits::default()).expect("fixture parses");
    payload
        .samples
        .iter()
        .map(|s| {
            let labels: BTreeMap<&str, String> = s.labels().map(|(n, v)| (n, v.into_owned())).collect();
            Template {
                metric: s.name.to_string(),
                idle: s.name == "node_cpu_seconds_total" && labels.get("mode").is_some_and(|m| m == "idle"),
                labels: serde_json::to_string(&labels).expect("labels to JSON"),
                value: if s.value.is_finite() { s.value } else { 0.0 },
                counter: payload.metric_type(s.name) == MetricType::Counter,
            }
        })
        .collect()
}

/// Round `round` of `targets` instances, 15 s apart, scrapes spread over the interval.
fn round(templates: &[Template], targets: usize, round: usize) -> Batch {
    let start = 1_764_000_000.0 + 15.0 * round as f64;
    let scrapes = (0..targets)
        .map(|t| {
            let busy = (t % 10) as f64 / 10.0;
            let samples = templates
                .iter()
                .map(|tpl| {
                    let value = match (tpl.idle, tpl.counter) {
                        (true, _) => tpl.value + round as f64 * 15.0 * (1.0 - busy),
                        (false, true) => tpl.value + round as f64 * 1.5,
                        (false, false) => tpl.value,
                    };
                    SampleRecord { metric: tpl.metric.as_str().into(), labels: tpl.labels.as_str().into(), value }
                })
                .collect();
            let time = start + (t as f64 * 15.0 / targets as f64 * 1000.0).round() / 1000.0;
            ScrapeRecord::new(format!("i-{t:017x}").into(), time, samples, Vec::new())
        })
        .collect();
    let instances = if round == 0 {
        (0..targets)
            .map(|t| InstanceRecord {
                instance_id: format!("i-{t:017x}").into(),
                role: if t % 2 == 0 { "asg" } else { "basic" }.into(),
                asg_name: (t % 2 == 0).then(|| "web".into()),
                availability_zone: Some("ap-northeast-2a".into()),
                private_ip: None,
                state: "running".into(),
                labels: "{}".into(),
                seen: start,
            })
            .collect()
    } else {
        Vec::new()
    };
    Batch { scrapes, instances, ..Batch::default() }
}

fn disk_bytes(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", db.display())).ok())
        .map(|m| m.len())
        .sum()
}

fn bench_parser() {
    let runs = 2000;
    let started = Instant::now();
    let mut samples = 0;
    for _ in 0..runs {
        samples += parse(std::hint::black_box(FIXTURE), &Limits::default()).expect("parses").samples.len();
    }
    let parse_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut lines = 0;
    for _ in 0..runs {
        lines += std::hint::black_box(FIXTURE).split('\n').filter(|l| !l.starts_with('#')).count();
    }
    let split_secs = started.elapsed().as_secs_f64();
    // The same payload again with its series known from the last one, as the
    // scraper parses a target's payloads after the first.
    let known = KnownSeries::of(&parse(FIXTURE, &Limits::default()).expect("parses"));
    let started = Instant::now();
    for _ in 0..runs {
        let payload = parse_known(std::hint::black_box(FIXTURE), &Limits::default(), &known).expect("parses");
        std::hint::black_box(payload.samples.len());
    }
    let known_secs = started.elapsed().as_secs_f64();
    let mb = (FIXTURE.len() * runs) as f64 / 1e6;
    println!(
        "parser: {:.0} MB/s, {:.2} M samples/s, {:.1} µs per 57.6 KB payload; bare line split {:.0} MB/s ({lines} lines); parse/split time ratio {:.1}",
        mb / parse_secs,
        samples as f64 / parse_secs / 1e6,
        parse_secs / runs as f64 * 1e6,
        mb / split_secs,
        parse_secs / split_secs
    );
    println!(
        "parser, series known from the last payload: {:.0} MB/s, {:.1} µs per payload ({:.2}x the plain parse's time)",
        mb / known_secs,
        known_secs / runs as f64 * 1e6,
        known_secs / parse_secs
    );
}

/// The naive layout of notes/sqlite-ingest.md, fed the same rows.
async fn naive_ingest(dir: &Path, batches: &[Batch]) -> (f64, usize) {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("naive.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
    let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await.expect("naive db");
    sqlx::query("CREATE TABLE s (series_id INTEGER, time REAL, value, PRIMARY KEY (series_id, time)) WITHOUT ROWID")
        .execute(&pool)
        .await
        .expect("naive table");
    let mut ids: std::collections::HashMap<(String, String, String), i64> = std::collections::HashMap::new();
    let started = Instant::now();
    let mut total = 0;
    for batch in batches {
        let mut rows = Vec::new();
        for scrape in &batch.scrapes {
            for sample in scrape.samples() {
                let key = (scrape.instance_id.to_string(), sample.metric.to_string(), sample.labels.to_string());
                let next = ids.len() as i64;
                let id = *ids.entry(key).or_insert(next);
                rows.push((id, scrape.time, sample.value));
            }
        }
        let mut tx = pool.begin().await.expect("begin");
        for chunk in rows.chunks(300) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("INSERT INTO s (series_id, time, value) ");
            q.push_values(chunk, |mut b, (id, t, v)| {
                b.push_bind(*id).push_bind(*t).push_bind(*v);
            });
            q.build().execute(&mut *tx).await.expect("insert");
        }
        tx.commit().await.expect("commit");
        total += rows.len();
    }
    (total as f64 / started.elapsed().as_secs_f64(), total)
}

async fn bench_store(targets: usize, rounds: usize, hour_targets: usize, (long_targets, long_rounds): (usize, usize)) {
    let templates = template();
    let dir = tempfile::tempdir().expect("temp dir");
    let batches: Vec<Batch> = (0..=rounds).map(|r| round(&templates, targets, r)).collect();
    let per_round = batches[0].sample_count();

    let mut store = Store::open(&dir.path().join("fleetscrape.db")).await.expect("store");
    let started = Instant::now();
    store.write(&batches[0]).await.expect("first round");
    let first = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for batch in &batches[1..] {
        store.write(batch).await.expect("round");
    }
    let steady = (per_round * rounds) as f64 / started.elapsed().as_secs_f64();
    println!(
        "store: {targets} targets × {} samples = {per_round} per round; first round (creates every series) {:.2} s; \
         steady state {:.0} samples/s over {rounds} rounds",
        templates.len(),
        first,
        steady
    );
    store.close().await;

    // The layouts differ once every series spans whole pages, i.e. after hours
    // of data: compare them on a long run of a smaller fleet.
    let long: Vec<Batch> = (0..long_rounds).map(|r| round(&templates, long_targets, r)).collect();
    let long_dir = tempfile::tempdir().expect("temp dir");
    let mut store = Store::open(&long_dir.path().join("long.db")).await.expect("store");
    let started = Instant::now();
    for batch in &long {
        store.write(batch).await.expect("long round");
    }
    let ours = long.iter().map(Batch::sample_count).sum::<usize>() as f64 / started.elapsed().as_secs_f64();
    store.close().await;
    let (naive, total) = naive_ingest(long_dir.path(), &long).await;
    println!(
        "long run, {long_targets} targets x {long_rounds} rounds ({total} samples): fleetscrape {ours:.0} samples/s, \
         naive series-clustered layout (same rows via sqlx) {naive:.0} samples/s; ratio {:.1}",
        ours / naive
    );

    // A simulated hour: 240 rounds of 15 s.
    let hour_dir = tempfile::tempdir().expect("temp dir");
    let db = hour_dir.path().join("hour.db");
    let mut store = Store::open(&db).await.expect("store");
    let mut offered = 0;
    let started = Instant::now();
    for r in 0..240 {
        let batch = round(&templates, hour_targets, r);
        offered += batch.sample_count();
        store.write(&batch).await.expect("hour round");
    }
    let hour_rate = offered as f64 / started.elapsed().as_secs_f64();
    let with_wal = disk_bytes(&db);
    let instances: Vec<String> = (0..50).map(|t| format!("'i-{t:017x}'")).collect();
    let end = 1_764_000_000.0 + 15.0 * 240.0;
    let query = format!(
        "SELECT time, instance_id, value FROM cpu_utilization WHERE time >= {} AND time < {end} AND instance_id IN ({}) ORDER BY time",
        end - 3600.0,
        instances.join(",")
    );
    let mut best = f64::MAX;
    let mut rows = 0;
    for _ in 0..5 {
        let started = Instant::now();
        rows = sqlx::query(sqlx::AssertSqlSafe(query.clone())).fetch_all(store.pool()).await.expect("query").len();
        best = best.min(started.elapsed().as_secs_f64());
    }
    let raw_query =
        query.replace("cpu_utilization WHERE", "metric_samples WHERE metric = 'node_cpu_seconds_total' AND");
    let started = Instant::now();
    let raw_rows = sqlx::query(sqlx::AssertSqlSafe(raw_query)).fetch_all(store.pool()).await.expect("raw query").len();
    let raw_secs = started.elapsed().as_secs_f64();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(store.pool()).await.expect("checkpoint");
    let checkpointed = disk_bytes(&db);
    println!(
        "hour: {hour_targets} targets × 240 scrapes = {offered} samples at {hour_rate:.0}/s; bytes per sample \
         {:.1} (db+wal+shm), {:.1} after a checkpoint",
        with_wal as f64 / offered as f64,
        checkpointed as f64 / offered as f64
    );
    println!(
        "query: CPU of 50 instances over the last hour: {rows} rows in {:.1} ms (cpu_utilization); raw \
         node_cpu_seconds_total of the same 50: {raw_rows} rows in {:.1} ms",
        best * 1e3,
        raw_secs * 1e3
    );
    store.close().await;
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (targets, rounds, hour_targets, long) = if quick { (100, 3, 10, (5, 50)) } else { (1000, 8, 100, (20, 250)) };
    bench_parser();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(bench_store(targets, rounds, hour_targets, long));
}
