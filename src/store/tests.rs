use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;

use super::*;
use crate::record::SeriesList;
use crate::store::writer::WriterStats;

fn sample(metric: &str, labels: &str, value: f64) -> SampleRecord {
    SampleRecord { metric: metric.into(), labels: labels.into(), value }
}

fn cpu_idle(cpu: u32, value: f64) -> SampleRecord {
    sample("node_cpu_seconds_total", &format!(r#"{{"cpu":"{cpu}","mode":"idle"}}"#), value)
}

fn cpu_user(cpu: u32, value: f64) -> SampleRecord {
    sample("node_cpu_seconds_total", &format!(r#"{{"cpu":"{cpu}","mode":"user"}}"#), value)
}

const TYPES: [(&str, &str); 2] = [("node_cpu_seconds_total", "counter"), ("node_load1", "gauge")];

fn scrape(instance: &str, time: f64, samples: Vec<SampleRecord>) -> ScrapeRecord {
    scrape_typed(instance, time, samples, &TYPES)
}

fn scrape_typed(instance: &str, time: f64, samples: Vec<SampleRecord>, types: &[(&str, &'static str)]) -> ScrapeRecord {
    let types = types.iter().map(|&(name, kind)| (name.into(), kind)).collect();
    ScrapeRecord::new(instance.into(), time, samples, types)
}

/// `record` with the series list of its instance's last record when the two
/// are equal, as the scraper hands them over (the store's by-position paths).
fn shared(lists: &mut HashMap<String, Arc<SeriesList>>, mut record: ScrapeRecord) -> ScrapeRecord {
    match lists.get(record.instance_id.as_str()) {
        Some(last) if **last == *record.series => record.series = Arc::clone(last),
        _ => {
            lists.insert(record.instance_id.to_string(), Arc::clone(&record.series));
        }
    }
    record
}

fn instance(id: &str, role: &str) -> InstanceRecord {
    InstanceRecord {
        instance_id: id.into(),
        role: role.into(),
        asg_name: (role == "asg").then(|| "web".into()),
        availability_zone: Some("ap-northeast-2a".into()),
        private_ip: Some("10.0.0.1".into()),
        state: "running".into(),
        labels: "{}".into(),
        seen: 1000.0,
    }
}

async fn open() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("sub/dir/test.db")).await.unwrap();
    (store, dir)
}

#[tokio::test]
async fn scrapes_are_readable_through_the_sql_interface() {
    let (mut store, _dir) = open().await;
    let batch = Batch {
        instances: vec![instance("i-a", "basic"), instance("i-b", "asg")],
        scrapes: vec![
            scrape("i-a", 1000.0, vec![cpu_idle(0, 100.0), cpu_user(0, 0.0), sample("node_load1", "{}", 0.5)]),
            scrape("i-b", 1000.5, vec![cpu_idle(0, 200.0), cpu_user(0, 0.0), sample("node_load1", "{}", 2.0)]),
        ],
        ..Batch::default()
    };
    let stats = store.write(&batch).await.unwrap();
    assert_eq!((stats.samples, stats.new_series, stats.cpu_rows), (6, 6, 0));
    // 10 s later: i-a idle 9 s of 10 (10% busy), i-b idle 1 s of 10 (90% busy).
    let later = Batch {
        scrapes: vec![
            scrape("i-a", 1010.0, vec![cpu_idle(0, 109.0), cpu_user(0, 1.0)]),
            scrape("i-b", 1010.5, vec![cpu_idle(0, 201.0), cpu_user(0, 9.0)]),
        ],
        ..Batch::default()
    };
    let stats = store.write(&later).await.unwrap();
    assert_eq!((stats.samples, stats.new_series, stats.cpu_rows), (4, 0, 2));

    let rows = sqlx::query("SELECT time, instance_id, metric, labels, value FROM metric_samples WHERE metric = 'node_load1' ORDER BY instance_id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let got: Vec<(f64, String, String, f64)> =
        rows.iter().map(|r| (r.get("time"), r.get("instance_id"), r.get("labels"), r.get("value"))).collect();
    assert_eq!(got, [(1000.0, "i-a".into(), "{}".into(), 0.5), (1000.5, "i-b".into(), "{}".into(), 2.0)]);

    let cpu = sqlx::query("SELECT time, instance_id, role, asg_name, value FROM cpu_utilization ORDER BY instance_id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let got: Vec<(f64, String, String, Option<String>, f64)> =
        cpu.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].1.as_str(), got[0].2.as_str(), got[0].3.clone()), ("i-a", "basic", None));
    assert!((got[0].4 - 10.0).abs() < 1e-9 && (got[1].4 - 90.0).abs() < 1e-9, "{got:?}");
    assert_eq!(got[1].3.as_deref(), Some("web"));

    let types: Vec<(String, String)> =
        sqlx::query_as("SELECT name, type FROM metrics ORDER BY name").fetch_all(store.pool()).await.unwrap();
    assert_eq!(types, [("node_cpu_seconds_total".into(), "counter".into()), ("node_load1".into(), "gauge".into())]);
}

#[tokio::test]
async fn integral_values_are_stored_as_integers_and_nan_as_null() {
    let (mut store, _dir) = open().await;
    let values = [3.0, 0.25, f64::NAN, f64::INFINITY, -7.0, 1e300];
    let samples = values.iter().enumerate().map(|(i, v)| sample("m", &format!(r#"{{"i":"{i}"}}"#), *v)).collect();
    store.write(&Batch { scrapes: vec![scrape("i-a", 1.0, samples)], ..Batch::default() }).await.unwrap();
    let pool = store.pool().clone();
    let read = || async {
        let rows: Vec<(String, Option<f64>)> =
            sqlx::query_as("SELECT labels, value FROM metric_samples WHERE instance_id = 'i-a' ORDER BY labels")
                .fetch_all(&pool)
                .await
                .unwrap();
        rows.into_iter().map(|(_, v)| v).collect::<Vec<_>>()
    };
    let expected = [Some(3.0), Some(0.25), None, Some(f64::INFINITY), Some(-7.0), Some(1e300)];
    assert_eq!(read().await, expected, "from the scrape log");
    // Another instance's scrape a block later makes the first block due.
    store.write(&Batch { scrapes: vec![scrape("i-b", 400.0, vec![])], ..Batch::default() }).await.unwrap();
    compact_all(&mut store).await;
    assert_eq!(read().await, expected, "from the chunks");
    // One scrape in the block: each chunk is its one value.
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT typeof(c.vals) FROM chunks c JOIN series se ON se.series_id = c.id % 4294967296 ORDER BY se.labels",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(kinds, ["integer", "real", "null", "real", "integer", "real"]);
}

#[tokio::test]
async fn ids_survive_a_reopen_and_duplicates_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let batch = Batch { scrapes: vec![scrape("i-a", 5.0, vec![sample("m", "{}", 1.0)])], ..Batch::default() };
    let mut store = Store::open(&path).await.unwrap();
    store.write(&batch).await.unwrap();
    store.close().await;
    let mut store = Store::open(&path).await.unwrap();
    let stats = store.write(&batch).await.unwrap();
    assert_eq!(stats.new_series, 0, "the series is known after a reopen");
    let again = Batch { scrapes: vec![scrape("i-a", 6.0, vec![sample("m", "{}", 2.0)])], ..Batch::default() };
    store.write(&again).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_samples").fetch_one(store.pool()).await.unwrap();
    assert_eq!(count, 2, "the repeated sample at t=5 is stored once");
    let series: i64 = sqlx::query_scalar("SELECT count(*) FROM series").fetch_one(store.pool()).await.unwrap();
    assert_eq!(series, 1);
}

#[tokio::test]
async fn a_series_twice_in_one_scrape_keeps_its_first_value_as_prometheus_does() {
    let (mut store, _dir) = open().await;
    let samples = vec![sample("m", "{}", 1.0), sample("n", "{}", 5.0), sample("m", "{}", 2.0)];
    store.write(&Batch { scrapes: vec![scrape("i-a", 5.0, samples)], ..Batch::default() }).await.unwrap();
    let rows: Vec<(String, f64)> = sqlx::query_as("SELECT metric, value FROM metric_samples ORDER BY metric")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, [("m".to_string(), 1.0), ("n".to_string(), 5.0)]);
}

/// Runs compaction (no delay) until nothing is due; returns the blocks compacted.
async fn compact_all(store: &mut Store) -> usize {
    let mut blocks = 0;
    loop {
        match store.maintain(&Retention::DEFAULT, 0.0, false).await.unwrap() {
            Maintenance::Idle => return blocks,
            Maintenance::Compacted(step) => blocks += usize::from(step.finished),
            Maintenance::Retained(_) => unreachable!("no sweep asked for"),
        }
    }
}

type Row5 = (f64, String, String, String, Option<f64>);

/// Scrapes still in the scrape log (not yet written as chunks).
async fn in_the_log(store: &Store) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM scrape_log_0) + (SELECT count(*) FROM scrape_log_1)
              + (SELECT count(*) FROM scrape_log_2)",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
}

async fn every_sample(store: &Store) -> Vec<Row5> {
    sqlx::query_as("SELECT time, instance_id, metric, labels, value FROM metric_samples ORDER BY time, instance_id, metric, labels")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

const T0: f64 = 1_764_000_000.0;

/// 25 minutes of scrapes at 15 s of two instances: a constant, a gauge that
/// changes every other scrape, a counter that resets, a NaN, a series missing
/// from some stored scrapes, and a scrape that i-b missed.
fn churned_history() -> Vec<Batch> {
    let mut batches = Vec::new();
    let mut lists = HashMap::new();
    for k in 0..100u32 {
        let mut scrapes = Vec::new();
        for (n, id) in ["i-a", "i-b"].into_iter().enumerate() {
            if id == "i-b" && k == 30 {
                continue;
            }
            let time = T0 + 15.0 * f64::from(k) + 0.25 * n as f64;
            let counter = if id == "i-a" && k >= 50 { f64::from(k - 50) * 3.0 } else { 1000.0 + f64::from(k) * 7.5 };
            let mut samples = vec![
                sample("node_memory_MemTotal_bytes", "{}", 8e9),
                sample("node_load1", "{}", f64::from(k / 2) * 0.25),
                sample("node_network_receive_bytes_total", r#"{"device":"eth0"}"#, counter),
                sample("node_weird", "{}", if k % 7 == 0 { f64::NAN } else { 1.0 }),
                cpu_idle(0, 10.0 * f64::from(k)),
                cpu_user(0, 2.0 * f64::from(k)),
            ];
            if !(42..48).contains(&k) {
                samples.push(sample("node_netstat_Tcp_CurrEstab", "{}", 3.0));
            }
            let types = [TYPES[0], TYPES[1], ("node_network_receive_bytes_total", "counter")];
            scrapes.push(shared(&mut lists, scrape_typed(id, time, samples, &types)));
        }
        batches.push(Batch {
            instances: if k == 0 { vec![instance("i-a", "basic"), instance("i-b", "asg")] } else { vec![] },
            scrapes,
            ..Batch::default()
        });
    }
    batches
}

#[tokio::test]
async fn the_compacted_tier_reads_back_exactly_what_was_stored() {
    let (mut store, _dir) = open().await;
    for batch in churned_history() {
        store.write(&batch).await.unwrap();
    }
    let before = every_sample(&store).await;
    assert_eq!(before.len(), 100 * 2 * 7 - 7 - 2 * 6);
    // Written faster than time passes, the log's three tables filled: the
    // oldest blocks were written before the newest were logged.
    let written = compact_all(&mut store).await;
    assert!((1..=4).contains(&written), "{written}");
    let after = every_sample(&store).await;
    assert_eq!(after.len(), before.len());
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a, b);
    }
    assert_eq!(in_the_log(&store).await, 20 * 2, "25 minutes: four whole blocks written, the fifth still in the log");
    // One chunk per series per written block (4 blocks, 2 instances, 7
    // series); a series with one value at every frame of a block is that value
    // alone, missing mid-block (k 42–47, block 2) an array.
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks").fetch_one(store.pool()).await.unwrap();
    assert_eq!(chunks, 4 * 2 * 7);
    for (metric, arrays) in
        [("node_memory_MemTotal_bytes", 0), ("node_netstat_Tcp_CurrEstab", 2), ("node_load1", 4 * 2)]
    {
        let (n, text): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE typeof(c.vals) = 'text') FROM chunks c
             JOIN series se ON se.series_id = c.id % 4294967296 JOIN metrics m USING (metric_id) WHERE m.name = ?",
        )
        .bind(metric)
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!((n, text), (4 * 2, arrays), "{metric}");
    }
    let points: i64 = sqlx::query_scalar("SELECT count(*) FROM points").fetch_one(store.pool()).await.unwrap();
    assert_eq!(points, 0, "blocks are written as chunks");
    // Compacting again finds nothing to do and changes nothing.
    assert_eq!(compact_all(&mut store).await, 0);
    assert_eq!(every_sample(&store).await, after);
}

#[tokio::test]
async fn rollups_summarise_each_bucket_and_counters_count_through_resets() {
    let (mut store, _dir) = open().await;
    for batch in churned_history() {
        store.write(&batch).await.unwrap();
    }
    let raw = every_sample(&store).await;
    compact_all(&mut store).await;
    // Every 1-minute bucket of node_load1 against the raw rows.
    let rows: Vec<(f64, String, f64, f64, f64, f64, i64)> = sqlx::query_as(
        "SELECT time, instance_id, avg, min, max, last, count FROM metric_samples_1m
         WHERE metric = 'node_load1' AND time >= ?1 AND time < ?1 + 1200 ORDER BY instance_id, time",
    )
    .bind(T0)
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 2 * 20);
    for (time, instance, avg, min, max, last, count) in &rows {
        let values: Vec<f64> = raw
            .iter()
            .filter(|r| r.2 == "node_load1" && &r.1 == instance && r.0 >= *time && r.0 < time + 60.0)
            .filter_map(|r| r.4)
            .collect();
        assert_eq!(*count as usize, values.len());
        assert_eq!(*avg, values.iter().sum::<f64>() / values.len() as f64);
        assert_eq!(*min, values.iter().copied().fold(f64::INFINITY, f64::min));
        assert_eq!(*max, values.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        assert_eq!(*last, *values.last().unwrap());
    }
    // i-a's counter: +7.5 per scrape up to k = 49, reset to 0 at k = 50, then +3.
    let increase: Vec<(f64, f64, f64)> = sqlx::query_as(
        "SELECT time, increase, rate FROM metric_samples_5m
         WHERE metric = 'node_network_receive_bytes_total' AND instance_id = 'i-a' AND time >= ?1 AND time < ?1 + 1200
         ORDER BY time",
    )
    .bind(T0)
    .fetch_all(store.pool())
    .await
    .unwrap();
    // Block 0: 19 steps of 7.5 (no sample before it); block 1: 20 of 7.5; block 2 (k 40–59):
    // 10 of 7.5, the reset (counts 0), 9 of 3; block 3: 20 of 3.
    let got: Vec<f64> = increase.iter().map(|r| r.1).collect();
    assert_eq!(got, [19.0 * 7.5, 20.0 * 7.5, 10.0 * 7.5 + 9.0 * 3.0, 60.0]);
    assert_eq!(increase[1].2, 7.5 / 15.0, "rate per second over the bucket");
    // A constant reads back whole (its row stores only count and last).
    let constant: Vec<(f64, f64, f64, f64, i64)> = sqlx::query_as(
        "SELECT avg, min, max, last, count FROM metric_samples_5m WHERE metric = 'node_memory_MemTotal_bytes'
         AND instance_id = 'i-a' AND time >= ?1 AND time < ?1 + 1200",
    )
    .bind(T0)
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(constant, vec![(8e9, 8e9, 8e9, 8e9, 20); 4]);
    // NaN among numbers: the average is of the numbers.
    let (weird, count): (f64, i64) = sqlx::query_as(
        "SELECT avg, count FROM metric_samples_5m WHERE metric = 'node_weird' AND instance_id = 'i-a' AND time >= ?1 AND time < ?1 + 300",
    )
    .bind(T0)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((weird, count), (1.0, 17), "3 NaN of 20 (k = 0, 7, 14) are not counted");
    // Gauges have no increase.
    let gauge: Option<f64> = sqlx::query_scalar(
        "SELECT increase FROM metric_samples_5m WHERE metric = 'node_load1' AND time >= ?1 AND time < ?1 + 300 LIMIT 1",
    )
    .bind(T0)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(gauge, None);
    // CPU: the 5-minute average is the average of the interval values.
    let (avg, count): (f64, i64) = sqlx::query_as(
        "SELECT avg, count FROM cpu_utilization_5m WHERE instance_id = 'i-a' AND time >= ?1 AND time < ?1 + 300",
    )
    .bind(T0 + 300.0)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(count, 20);
    assert!((avg - 100.0 * 2.0 / 12.0).abs() < 1e-9, "{avg}");
}

#[tokio::test]
async fn an_hour_is_rolled_up_from_its_blocks() {
    let (mut store, _dir) = open().await;
    // 70 minutes at 60 s of one gauge, aligned to the hour.
    let hour = 1_764_000_000.0 - 1_764_000_000.0 % 3600.0;
    for k in 0..70u32 {
        let batch = Batch {
            scrapes: vec![scrape("i-a", hour + 60.0 * f64::from(k), vec![sample("node_load1", "{}", f64::from(k))])],
            ..Batch::default()
        };
        store.write(&batch).await.unwrap();
    }
    compact_all(&mut store).await;
    let (avg, min, max, last, count): (f64, f64, f64, f64, i64) = sqlx::query_as(
        "SELECT avg, min, max, last, count FROM metric_samples_1h WHERE metric = 'node_load1' AND time >= ? AND time < ?",
    )
    .bind(hour)
    .bind(hour + 3600.0)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((avg, min, max, last, count), (29.5, 0.0, 59.0, 59.0, 60));
}

/// The hour's rollup, merged range by range of series in key order, gives
/// what sorting the whole hour by series gave, bit for bit: series spread
/// over several ranges, missing from some buckets, counters and gauges.
#[tokio::test]
async fn an_hour_merged_in_series_ranges_is_the_hour_merged_whole() {
    let (store, dir) = open().await;
    let path = store.path().to_path_buf();
    drop(store);
    let _dir = dir;
    let db = rusqlite::Connection::open(&path).unwrap();
    let hour = 1_764_000_000_i64; // a whole hour
    let mut rng = fastrand::Rng::with_seed(3);
    let mut insert = db
        .prepare("INSERT INTO rollup_5m (time, series_id, count, sum, min, max, last, increase, span) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
        .unwrap();
    for series in (1..200_000_i64).step_by(37) {
        for start in (hour..hour + 3600).step_by(300) {
            if rng.u8(..10) == 0 {
                continue;
            }
            let last = rng.f64() * 1e6;
            let (sum, min, max) =
                if rng.bool() { (None, None, None) } else { (Some(last * 3.7), Some(last / 2.0), Some(last * 1.5)) };
            let (increase, span) = if series % 2 == 0 { (Some(rng.f64() * 100.0), Some(300.0)) } else { (None, None) };
            insert.execute(rusqlite::params![start, series, 20, sum, min, max, last, increase, span]).unwrap();
        }
    }
    drop(insert);
    // The way it was: the whole hour sorted by series, then time.
    let mut expected: Vec<(i64, super::compact::core::Bucket)> = Vec::new();
    {
        let old = super::compact::HOUR_ROWS.replace(
            "WHERE time = ?1 AND series_id >= ?2 AND series_id < ?3",
            "WHERE time >= ?1 AND time < ?1 + 3600 ORDER BY series_id, time",
        );
        let mut select = db.prepare(&old).unwrap();
        let mut rows = select.query([hour]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let series: i64 = row.get(0).unwrap();
            let bucket = super::compact::bucket_from_row(row, hour).unwrap();
            match expected.last_mut() {
                Some((id, into)) if *id == series => into.merge(&bucket),
                _ => expected.push((series, bucket)),
            }
        }
    }
    let written = super::compact::roll_up_hour_series(&db, hour).unwrap();
    assert_eq!(written, expected.len());
    let mut select = db.prepare(&super::compact::HOUR_ROWS.replace("rollup_5m", "rollup_1h")).unwrap();
    let got: Vec<(i64, super::compact::core::Bucket)> = select
        .query_map(rusqlite::params![hour, 0, i64::MAX], |row| {
            Ok((row.get(0)?, super::compact::bucket_from_row(row, hour)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(format!("{got:?}"), format!("{expected:?}"));
    assert!(expected.len() > 5_000, "{} series", expected.len());
}

#[tokio::test]
async fn samples_older_than_the_compacted_tier_are_dropped_and_counted() {
    let (mut store, _dir) = open().await;
    for batch in churned_history() {
        store.write(&batch).await.unwrap();
    }
    compact_all(&mut store).await;
    let late =
        Batch { scrapes: vec![scrape("i-a", T0 + 1.0, vec![sample("node_load1", "{}", 99.0)])], ..Batch::default() };
    let stats = store.write(&late).await.unwrap();
    assert_eq!((stats.samples, stats.late_samples), (0, 1));
}

#[tokio::test]
async fn retention_trims_each_tier_in_small_steps_and_forgets_gone_instances() {
    let (mut store, _dir) = open().await;
    let retention = Retention {
        raw: Duration::from_secs(1800),
        minute: Duration::from_secs(3600),
        five_minutes: Duration::from_secs(2 * 3600),
        hour: Duration::from_secs(3 * 3600),
    };
    // 4 hours at 60 s; i-gone stops after the first 10 minutes.
    let start = 1_764_000_000.0 - 1_764_000_000.0 % 3600.0;
    for k in 0..240u32 {
        let time = start + 60.0 * f64::from(k);
        let mut scrapes = vec![scrape("i-a", time, vec![cpu_idle(0, f64::from(k)), sample("node_load1", "{}", 1.0)])];
        let mut instances = vec![InstanceRecord { seen: time, ..instance("i-a", "basic") }];
        if k < 10 {
            scrapes.push(scrape("i-gone", time, vec![sample("node_load1", "{}", 2.0)]));
            instances.push(InstanceRecord { seen: time, ..instance("i-gone", "asg") });
        }
        store.write(&Batch { instances, scrapes, ..Batch::default() }).await.unwrap();
        // Blocks written as they end (as the writer does), so the sweep has
        // chunks to delete, not only blocks past raw retention at their write.
        while !matches!(store.maintain(&retention, 30.0, false).await.unwrap(), Maintenance::Idle) {}
    }
    let mut steps = 0;
    loop {
        match store.maintain(&retention, 0.0, true).await.unwrap() {
            Maintenance::Retained(0) => break,
            Maintenance::Idle => unreachable!("a sweep was asked for"),
            _ => steps += 1,
        }
    }
    assert!(steps > 1, "retention in several steps: {steps}");
    let newest = start + 239.0 * 60.0;
    for (sql, kept) in [
        ("SELECT min(time) FROM metric_samples WHERE metric = 'node_load1' AND time >= 0", 1800.0),
        ("SELECT min(time) FROM metric_samples_1m WHERE metric = 'node_load1' AND time >= 0", 3600.0),
        ("SELECT min(time) FROM metric_samples_5m WHERE metric = 'node_load1' AND time >= 0", 2.0 * 3600.0),
        ("SELECT min(time) FROM metric_samples_1h WHERE metric = 'node_load1' AND time >= 0", 3.0 * 3600.0),
        ("SELECT min(time) FROM cpu_utilization WHERE time >= 0", 1800.0),
        // The raw tier's own rows, not only what the view still joins.
        ("SELECT (min(id) >> 32) * 300.0 FROM chunks", 1800.0 + 300.0),
    ] {
        let oldest: f64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(store.pool()).await.unwrap();
        assert!(oldest >= newest - kept, "{sql}: {oldest} is older than {kept} s before {newest}");
        assert!(oldest < newest - kept + 3600.0, "{sql}: too much deleted ({oldest})");
    }
    let gone: i64 = sqlx::query_scalar("SELECT count(*) FROM series WHERE instance_id = 'i-gone'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(gone, 0, "an instance gone past every tier leaves no series behind");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM series WHERE instance_id = 'i-a'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(kept, 2);
}

/// `EXPLAIN QUERY PLAN` lines of `sql`.
async fn plan(store: &Store, sql: &str) -> String {
    let rows =
        sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}"))).fetch_all(store.pool()).await.unwrap();
    rows.iter().map(|r| r.get::<String, _>("detail")).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn range_queries_are_bounded_by_the_range_in_their_plan() {
    let (store, _dir) = open().await;
    let metric = plan(
        &store,
        "SELECT time, instance_id, value FROM metric_samples
         WHERE metric = 'node_load1' AND instance_id IN ('i-a', 'i-b') AND time >= 1000 AND time < 2000",
    )
    .await;
    assert!(metric.contains("SEARCH s USING PRIMARY KEY (metric_id=? AND time>? AND time<?)"), "{metric}");
    // The compacted tier: the instance's frames in the range, then one seek per frame.
    assert!(metric.contains("SEARCH f USING PRIMARY KEY (instance_id=? AND time>? AND time<?)"), "{metric}");
    assert!(metric.contains("SEARCH c USING INTEGER PRIMARY KEY (rowid=?)"), "{metric}");
    // Blocks written before chunks: their points.
    assert!(metric.contains("SEARCH q USING PRIMARY KEY (block=? AND series_id=? AND toff<?)"), "{metric}");
    assert!(!metric.contains("SCAN"), "{metric}");
    for tier in ["1m", "5m", "1h"] {
        let rollup = plan(
            &store,
            &format!(
                "SELECT time, avg FROM metric_samples_{tier}
                 WHERE metric = 'node_load1' AND instance_id = 'i-a' AND time >= 1000 AND time < 2000"
            ),
        )
        .await;
        assert!(rollup.contains("SEARCH b USING PRIMARY KEY (width=? AND time>? AND time<?)"), "{rollup}");
        assert!(rollup.contains("SEARCH r USING PRIMARY KEY (time=? AND series_id=?)"), "{rollup}");
        assert!(!rollup.contains("SCAN"), "{rollup}");
        let cpu =
            plan(&store, &format!("SELECT * FROM cpu_utilization_{tier} WHERE time >= 1000 AND time < 2000")).await;
        assert!(cpu.contains("SEARCH c USING PRIMARY KEY (time>? AND time<?)"), "{cpu}");
    }
    // The hour's rollup reads 5-minute rows in key order: no sorter holding an hour of every series.
    let hour = plan(&store, &super::compact::HOUR_ROWS.replace("?1", "0").replace("?2", "0").replace("?3", "9")).await;
    assert_eq!(hour, "SEARCH rollup_5m USING PRIMARY KEY (time=? AND series_id>? AND series_id<?)");
    let cpu = plan(
        &store,
        "SELECT time, instance_id, value FROM cpu_utilization WHERE time >= 1000 AND time < 2000 AND instance_id IN ('i-a')",
    )
    .await;
    assert!(cpu.contains("SEARCH c USING PRIMARY KEY (time>? AND time<?)"), "{cpu}");
    for table in ["scrape_status", "alb_rounds", "asg_membership", "events"] {
        let p = plan(&store, &format!("SELECT * FROM {table} WHERE time >= 1000 AND time < 2000")).await;
        assert!(p.contains("SEARCH") && p.contains("time>? AND time<?"), "{table}: {p}");
    }
}

/// Issue #11: a failed flush dropped its batch. A write that fails (a full
/// disk: tests/storage_faults.rs; here a store refusing writes) now holds the data, bounded,
/// and writes it once the store takes writes again.
#[tokio::test]
async fn a_failed_flush_holds_its_samples_within_a_bound_and_writes_them_when_the_store_recovers() {
    use std::sync::atomic::Ordering::Relaxed;
    let (store, _dir) = open().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}?mode=ro", store.path().display())).await.unwrap();
    let refuse = std::sync::Arc::clone(&store.refuse_writes);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let config =
        WriterConfig { flush_interval: Duration::from_millis(50), max_held_samples: 25, ..WriterConfig::default() };
    let (handle, task) = spawn_writer(store, config, shutdown.clone());
    let send = |t: u32| {
        let samples = (0..5).map(|i| sample("m", &format!(r#"{{"i":"{i}"}}"#), f64::from(t))).collect();
        handle.send(Batch { scrapes: vec![scrape("i-a", f64::from(t), samples)], ..Batch::default() })
    };
    assert!(send(0).await);
    let written = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM metric_samples").fetch_one(&pool).await.unwrap()
    };
    let mut polls = 0;
    while written().await < 5 {
        polls += 1;
        assert!(polls < 1500, "the first scrape was never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    refuse.store(true, Relaxed);
    // 8 scrapes of 5 samples while writes fail: 40 offered, 25 held at most.
    for t in 1..=8 {
        assert!(send(t).await);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let mut polls = 0;
    while handle.stats.errors.load(Relaxed) < 3 {
        polls += 1;
        assert!(polls < 1500, "the refused flushes were never counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(written().await, 5, "nothing written while the store refuses");
    assert_eq!(handle.stats.held_samples.load(Relaxed), 25, "held up to the bound");
    assert_eq!(handle.stats.dropped_samples.load(Relaxed), 15, "the oldest beyond it dropped and counted");
    // Issue #23: `/ready` reads this; it said nothing while writes failed.
    let (since, error) = handle.stats.failing().expect("the failure is visible while it lasts");
    assert!(since <= crate::clock::now_seconds() && !error.is_empty(), "{since} {error}");
    refuse.store(false, Relaxed);
    let mut polls = 0;
    while handle.stats.held_samples.load(Relaxed) > 0 {
        polls += 1;
        assert!(polls < 1500, "the held samples were never written after the store recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(handle.stats.failing(), None, "cleared by the write that succeeded");
    shutdown.cancel();
    let store = task.await.unwrap();
    let times: Vec<f64> = sqlx::query_scalar("SELECT DISTINCT time FROM metric_samples ORDER BY time")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(times, [0.0, 4.0, 5.0, 6.0, 7.0, 8.0], "the newest 25 samples (5 scrapes) were kept and written");
}

/// Found by the disk-full test (tests/storage_faults.rs, which failed before
/// the fix): after a write failed with SQLITE_FULL on a full tmpfs, later
/// "committed" writes never reached the file. SQLite may roll a transaction
/// back on its own after SQLITE_FULL; sqlx's ROLLBACK then fails and it goes
/// on counting a transaction open (its worker decrements the depth only when
/// the statement succeeds). A failed write now resets the connection. This
/// test (SQLITE_FULL from a page limit, which fails inside the transaction
/// rather than at COMMIT) guards the reset path: later writes reach the file.
#[tokio::test]
async fn writes_after_a_failed_one_reach_the_file_for_other_connections() {
    let (mut store, _dir) = open().await;
    let db = store.path().to_path_buf();
    let other = || async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}?mode=ro", db.display())).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_samples").fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    };
    let batch = |t: f64| Batch { scrapes: vec![scrape("i-a", t, vec![sample("m", "{}", t)])], ..Batch::default() };
    store.write(&batch(1.0)).await.unwrap();
    assert_eq!(other().await, 1);
    // SQLITE_FULL, as a full disk gives it: the file may not grow a page.
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(store.pool()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {pages}"))).execute(store.pool()).await.unwrap();
    let big: Vec<SampleRecord> = (0..5000).map(|i| sample("m", &format!(r#"{{"i":"{i}"}}"#), 1.0)).collect();
    let full = store.write(&Batch { scrapes: vec![scrape("i-a", 2.0, big)], ..Batch::default() }).await;
    assert!(full.as_ref().is_err_and(|e| e.to_string().contains("full")), "{full:?}");
    sqlx::query("PRAGMA max_page_count = 1073741823").execute(store.pool()).await.unwrap();
    for t in 3..6 {
        store.write(&batch(f64::from(t))).await.unwrap();
    }
    assert_eq!(other().await, 4, "every write after the failure is on disk");
}

#[tokio::test]
async fn the_writer_flushes_on_shutdown() {
    let (store, _dir) = open().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let config = WriterConfig { flush_interval: Duration::from_secs(3600), ..WriterConfig::default() };
    let (handle, task) = spawn_writer(store, config, shutdown.clone());
    for t in 0..3 {
        let batch =
            Batch { scrapes: vec![scrape("i-a", f64::from(t), vec![sample("m", "{}", 1.0)])], ..Batch::default() };
        assert!(handle.send(batch).await);
    }
    shutdown.cancel();
    let store = task.await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_samples").fetch_one(store.pool()).await.unwrap();
    assert_eq!(count, 3);
    assert_eq!(handle.stats.samples.load(std::sync::atomic::Ordering::Relaxed), 3);
}

/// Runs a writer over `churned_history()` until its 4 due blocks are
/// compacted (polled for at most ~10 s); its counters and the store after.
async fn compact_history(maintenance_interval: Duration) -> (Arc<WriterStats>, Store, tempfile::TempDir) {
    let (store, dir) = open().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let config = WriterConfig {
        flush_interval: Duration::from_millis(20),
        maintenance_interval,
        compaction_delay: Duration::ZERO,
        ..WriterConfig::default()
    };
    let (handle, task) = spawn_writer(store, config, shutdown.clone());
    for batch in churned_history() {
        assert!(handle.send(batch).await);
    }
    let blocks = || handle.stats.compacted_blocks.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..1000 {
        if blocks() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let store = task.await.unwrap();
    (Arc::clone(&handle.stats), store, dir)
}

#[tokio::test]
async fn the_writer_compacts_between_flushes_and_counts_it() {
    let (stats, store, _dir) = compact_history(Duration::from_millis(5)).await;
    assert_eq!(stats.compacted_blocks.load(std::sync::atomic::Ordering::Relaxed), 4);
    assert!(stats.longest_pause_micros.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert_eq!(in_the_log(&store).await, 20 * 2, "only the open block is still in the scrape log");
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_is_group_writable_for_wal_readers() {
    use std::os::unix::fs::PermissionsExt;
    let (store, dir) = open().await;
    let mode = std::fs::metadata(store.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o060, 0o060, "mode {mode:o}");
    drop(dir);
}

#[tokio::test]
async fn a_failed_transaction_leaves_no_ids_or_types_behind() {
    let (mut store, _dir) = open().await;
    let typed = |kind: &'static str| scrape_typed("i-a", 2.0, vec![sample("m", "{}", 1.0)], &[("m", kind)]);
    store
        .write(&Batch { scrapes: vec![scrape_typed("i-a", 1.0, vec![], &[("m", "untyped")])], ..Batch::default() })
        .await
        .unwrap();
    // A row the store does not know about takes the series id it will assign next: the insert fails.
    sqlx::query("INSERT INTO series (series_id, metric_id, instance_id, labels) VALUES (1, 1, 'other', '{}')")
        .execute(store.pool())
        .await
        .unwrap();
    assert!(store.write(&Batch { scrapes: vec![typed("counter")], ..Batch::default() }).await.is_err());
    sqlx::query("DELETE FROM series WHERE instance_id = 'other'").execute(store.pool()).await.unwrap();

    let stats = store.write(&Batch { scrapes: vec![typed("counter")], ..Batch::default() }).await.unwrap();
    assert_eq!(stats.new_series, 1, "the series of the failed transaction is created again");
    let stored: Vec<(String, f64)> =
        sqlx::query_as("SELECT instance_id, value FROM metric_samples").fetch_all(store.pool()).await.unwrap();
    assert_eq!(stored, [("i-a".to_string(), 1.0)]);
    let kind: String =
        sqlx::query_scalar("SELECT type FROM metrics WHERE name = 'm'").fetch_one(store.pool()).await.unwrap();
    assert_eq!(kind, "counter", "the type upgrade of the failed transaction is retried");
}

/// The documented panel query (docs/queries/gauge_by_range.sql) with Grafana's
/// macros filled in.
fn gauge_by_range(from: f64, to: f64) -> String {
    include_str!("../../docs/queries/gauge_by_range.sql")
        .replace("$__from", &format!("{}", (from * 1000.0) as i64))
        .replace("$__to", &format!("{}", (to * 1000.0) as i64))
        .replace("$metric", "node_load1")
        .replace("$instances", "'i-a', 'i-b'")
}

#[tokio::test]
async fn panels_choose_the_finest_tier_that_covers_their_range() {
    let (mut store, _dir) = open().await;
    for batch in churned_history() {
        store.write(&batch).await.unwrap();
    }
    compact_all(&mut store).await;
    let rows = |from: f64, to: f64| {
        let sql = gauge_by_range(from, to);
        let pool = store.pool().clone();
        async move {
            let rows: Vec<(f64, String, f64)> =
                sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&pool).await.unwrap();
            rows
        }
    };
    // Two hours: raw, every scrape of both instances.
    let raw = rows(T0 - 3600.0, T0 + 3600.0).await;
    assert_eq!(raw.len(), 2 * 100 - 1);
    // 30 hours, starting before the data: the 1-minute tier reaches as far back as anything.
    let minutes = rows(T0 - 86_400.0, T0 + 6.0 * 3600.0).await;
    assert_eq!(minutes.len(), 2 * 24, "every minute but the open one (written at ingest), both instances");
    assert!(minutes.iter().all(|r| r.0 % 60.0 == 0.0));
    // Seven days: the 5-minute tier.
    let blocks = rows(T0 - 6.0 * 86_400.0, T0 + 86_400.0).await;
    assert_eq!(blocks.len(), 2 * 4);
    // A month: no hour is complete yet, so the 5-minute tier still.
    assert_eq!(rows(T0 - 29.0 * 86_400.0, T0 + 86_400.0).await.len(), 2 * 4);
}

/// Scrapes of `series` gauges each, all different from the last scrape.
fn wide_batch(round: u32, series: u32) -> Batch {
    let samples =
        (0..series).map(|s| sample("node_wide", &format!(r#"{{"n":"{s}"}}"#), f64::from(round * 7 + s))).collect();
    Batch { scrapes: vec![scrape("i-a", T0 + f64::from(round), samples)], ..Batch::default() }
}

#[tokio::test]
async fn a_reader_pinning_the_wal_delays_its_truncation_and_nothing_else() {
    use sqlx::{ConnectOptions, Connection};
    let (store, _dir) = open().await;
    store.set_journal_size_limit(1 << 20).await.unwrap();
    let path = store.path().to_path_buf();
    let wal = || super::checkpoint::wal_size(&path);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let config = WriterConfig {
        flush_interval: Duration::from_millis(10),
        checkpoint_interval: Duration::from_millis(10),
        compaction_delay: Duration::from_secs(3600),
        ..WriterConfig::default()
    };
    let (handle, task) = spawn_writer(store, config, shutdown.clone());
    let stats = std::sync::Arc::clone(&handle.stats);
    let committed = move || stats.samples.load(std::sync::atomic::Ordering::Relaxed);
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).read_only(true);
    let reader = || options.connect();
    let wait_for = |samples: u64| {
        let committed = committed.clone();
        async move {
            for _ in 0..2000 {
                if committed() >= samples {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("the writer did not commit {samples} samples");
        }
    };
    for round in 0..5 {
        assert!(handle.send(wide_batch(round, 2000)).await);
    }
    wait_for(10_000).await;

    // A read transaction held while ~4 MB of log are ingested, with short readers
    // (a connection per query, as the plugin) overlapping it.
    let mut pinned = reader().await.unwrap();
    sqlx::query("BEGIN").execute(&mut pinned).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_samples").fetch_one(&mut pinned).await.unwrap();
    assert_eq!(seen, 10_000);
    let mut last = 0;
    for round in 5..105 {
        assert!(handle.send(wide_batch(round, 5000)).await);
        if round % 10 == 0 {
            let mut short = reader().await.unwrap();
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_samples").fetch_one(&mut short).await.unwrap();
            assert!(n >= last, "a reader never sees fewer rows than the one before");
            last = n;
            short.close().await.unwrap();
        }
    }
    wait_for(510_000).await;
    // ~4–5 MB here (a scrape log row is ~9 bytes a sample), with how many
    // batches each commit takes; the
    // claim is that it stays well past the 1 MiB it is truncated to.
    let held = wal();
    assert!(held > 2 << 20, "the pinned reader holds the WAL: {held} bytes");
    let still: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_samples").fetch_one(&mut pinned).await.unwrap();
    assert_eq!(still, 10_000, "the pinned reader keeps its snapshot");
    pinned.close().await.unwrap();

    // Once it ends, a checkpoint copies the WAL and the next commit starts it
    // over, truncated back to the limit.
    let mut round = 105;
    while wal() > 1 << 20 {
        assert!(round < 2000, "the WAL was not truncated after the reader ended: {} bytes", wal());
        assert!(handle.send(wide_batch(round, 10)).await);
        round += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(handle.stats.checkpoints.load(std::sync::atomic::Ordering::Relaxed) > 0);
    shutdown.cancel();
    let store = task.await.unwrap();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_samples").fetch_one(store.pool()).await.unwrap();
    assert_eq!(total, 510_000 + 10 * i64::from(round - 105));
}

#[tokio::test]
async fn memory_follows_the_live_fleet_under_churn() {
    let (mut store, _dir) = open().await;
    // Ten live instances; 1,000 launched, scraped three times, terminated.
    let mut footprints = Vec::new();
    for n in 0..1000u32 {
        let id = format!("i-{n:05}");
        let time = T0 + 3.0 * f64::from(n);
        for k in 0..3 {
            let at = time + f64::from(k);
            let samples = vec![cpu_idle(0, at), cpu_user(0, at / 2.0), sample("node_load1", "{}", 1.0)];
            let batch = Batch {
                instances: vec![InstanceRecord { seen: at, ..instance(&id, "asg") }],
                scrapes: vec![scrape(&id, at, samples)],
                ..Batch::default()
            };
            store.write(&batch).await.unwrap();
        }
        if n >= 10 {
            let gone = format!("i-{:05}", n - 10);
            let event = EventRecord {
                time,
                instance_id: gone.into(),
                asg_name: Some("web".into()),
                kind: EventKind::Terminated,
                detail: String::new(),
            };
            store.write(&Batch { events: vec![event], ..Batch::default() }).await.unwrap();
        }
        maintain_until_idle(&mut store).await;
        if n % 100 == 99 {
            footprints.push(store.memory_footprint());
        }
    }
    for (loaded, cpu, remembered) in &footprints {
        assert!(*loaded <= 11 && *cpu <= 11, "{footprints:?}");
        // Counters of the instances that appeared in the last compacted block.
        assert!(*remembered <= 2 * 120, "{footprints:?}");
    }
    // A terminated instance scraped again finds its old series (loaded back), not new ones.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM series").fetch_one(store.pool()).await.unwrap();
    let again = Batch {
        scrapes: vec![scrape("i-00000", T0 + 4000.0, vec![sample("node_load1", "{}", 2.0)])],
        ..Batch::default()
    };
    assert_eq!(store.write(&again).await.unwrap().new_series, 0);
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM series").fetch_one(store.pool()).await.unwrap();
    assert_eq!(before, after);
}

#[tokio::test]
async fn batches_of_every_size_leave_a_fixed_set_of_prepared_statements() {
    // The measured defect: multi-row INSERTs had a statement per chunk size,
    // and the connection cached 100 of them: ~130 MiB of RSS under ASG churn.
    use sqlx::Connection;
    let (mut store, _dir) = open().await;
    for n in 1..=120u32 {
        // A new series count, a new sample count and a new instance every batch.
        let samples = (0..n).map(|s| sample("node_wide", &format!(r#"{{"n":"{s}"}}"#), f64::from(s))).collect();
        let id = format!("i-{n:03}");
        let time = T0 + 20.0 * f64::from(n);
        let batch = Batch {
            instances: vec![InstanceRecord { seen: time, ..instance(&id, "asg") }],
            scrapes: vec![scrape(&id, time, samples)],
            ..Batch::default()
        };
        store.write(&batch).await.unwrap();
        maintain_until_idle(&mut store).await;
    }
    let compacted: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks").fetch_one(store.pool()).await.unwrap();
    assert!(compacted > 0, "blocks were compacted too");
    let cached = store.pool().acquire().await.unwrap().cached_statements_size();
    assert!(cached <= 40, "{cached} statements cached by the writer's connection");
}

/// Runs maintenance steps until there is nothing left to do; each step is
/// bounded, so a few hundred must do: more means a step that never finishes.
async fn maintain_until_idle(store: &mut Store) {
    for _ in 0..10_000 {
        if matches!(store.maintain(&Retention::DEFAULT, 0.0, false).await.unwrap(), Maintenance::Idle) {
            return;
        }
    }
    panic!("maintenance never became idle in 10,000 steps");
}

/// Compaction reads a metric's rows of a block in the key's order: SQLite
/// streams them instead of sorting the block in a temporary B-tree (seconds
/// and hundreds of MB for a large metric at 1,000 instances).
#[tokio::test]
async fn compaction_reads_a_metric_in_key_order_without_a_temporary_sort() {
    let (store, _dir) = open().await;
    let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {}", compact::METRIC_ROWS)))
        .bind(1)
        .bind(0.0)
        .bind(300.0)
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>(3))
        .collect();
    assert!(plan.iter().any(|step| step.contains("PRIMARY KEY")), "a range search on the key: {plan:?}");
    assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "no sort: {plan:?}");
}

/// A backlog of due blocks is compacted step after step, not one step per
/// maintenance tick: here the tick is an hour away, and every block is done.
#[tokio::test]
async fn due_blocks_are_compacted_back_to_back_without_waiting_for_the_tick() {
    let (stats, _store, _dir) = compact_history(Duration::from_secs(3600)).await;
    let blocks = stats.compacted_blocks.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(blocks, 4, "every due block compacted, with no maintenance tick after the first");
}

/// What the compacted tier and the rollups hold, for comparing two runs.
async fn compacted_state(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT block, series_id, toff, quote(value) FROM points ORDER BY 1, 2, 3",
        "SELECT id, quote(vals) FROM chunks ORDER BY 1",
        "SELECT instance_id, time, block, toff, idx FROM frames ORDER BY 1, 2",
        "SELECT 'm', time, series_id, count, quote(sum), quote(min), quote(max), quote(last), quote(increase), quote(span) FROM rollup_1m ORDER BY 2, 3",
        "SELECT '5', time, series_id, count, quote(sum), quote(min), quote(max), quote(last), quote(increase), quote(span) FROM rollup_5m ORDER BY 2, 3",
        "SELECT width, time FROM rollup_buckets ORDER BY 1, 2",
        // Not the CPU rollups: CPU busy is computed at ingest between two
        // consecutive scrapes, and a restart loses the first interval of
        // each instance (known, docs/storage.md).
        "SELECT time, instance_id, metric, labels, quote(value) FROM metric_samples ORDER BY 1, 2, 3, 4",
    ] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(store.pool()).await.unwrap();
        for row in rows {
            use sqlx::Row;
            let cells: Vec<String> = (0..row.len())
                .map(|i| {
                    row.try_get::<String, _>(i)
                        .or_else(|_| row.try_get::<f64, _>(i).map(|v| v.to_string()))
                        .or_else(|_| row.try_get::<i64, _>(i).map(|v| v.to_string()))
                        .unwrap_or_default()
                })
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// The recorded history driven as the writer drives the store: a batch, then
/// upkeep steps until idle; `crash_at` stops the run after that many steps
/// (writes and upkeep steps alike) and goes on with a store opened again, as
/// after a `kill -9` between two of them (every step is one or more whole
/// transactions, so the file holds exactly what the steps before committed).
async fn run_with_crash(dir: &std::path::Path, crash_at: Option<usize>) -> (Vec<String>, usize) {
    let path = dir.join("crash.db");
    let mut store = Store::open(&path).await.unwrap();
    store.set_compaction_step_rows(40);
    let mut steps = 0;
    for batch in churned_history() {
        store.write(&batch).await.unwrap();
        steps += 1;
        if crash_at == Some(steps) {
            drop(store);
            store = Store::open(&path).await.unwrap();
            store.set_compaction_step_rows(40);
        }
        loop {
            let done = store.maintain(&Retention::DEFAULT, 30.0, false).await.unwrap();
            if matches!(done, Maintenance::Idle) {
                break;
            }
            steps += 1;
            if crash_at == Some(steps) {
                drop(store);
                store = Store::open(&path).await.unwrap();
                store.set_compaction_step_rows(40);
            }
        }
    }
    (compacted_state(&store).await, steps)
}

/// Issue #22: a crash at any step boundary of the v3 write path (a scrape
/// logged, a minute closed, a block's chunks written in steps, the block's
/// last transaction) loses nothing and leaves chunks and rollups exactly as
/// an uninterrupted run over the same batches writes them.
#[tokio::test]
async fn a_crash_at_any_step_of_the_write_path_changes_nothing() {
    let reference_dir = tempfile::tempdir().unwrap();
    let (reference, steps) = run_with_crash(reference_dir.path(), None).await;
    assert!(reference.iter().any(|r| r.starts_with("5|")), "blocks were written in the run");
    assert!(steps >= 100 + 4 * 3, "{steps} steps: 100 writes, then at least three per block");
    for crash_at in 1..steps {
        let dir = tempfile::tempdir().unwrap();
        let (state, _) = run_with_crash(dir.path(), Some(crash_at)).await;
        if state != reference {
            let diff: Vec<&String> = state.iter().filter(|r| !reference.contains(r)).take(5).collect();
            let lost: Vec<&String> = reference.iter().filter(|r| !state.contains(r)).take(5).collect();
            panic!("crash after step {crash_at} of {steps}: extra {diff:?}, missing {lost:?}");
        }
    }
}

/// Issue #22: per-instance health is rolled up per block, so a 7-day health
/// panel reads one row per instance per 5 minutes (2,016), not every status row.
#[tokio::test]
async fn scrape_health_is_rolled_up_per_block_with_the_block() {
    let (mut store, _dir) = open().await;
    for k in 0..40u32 {
        let time = T0 + 15.0 * f64::from(k);
        // i-a answers every scrape; i-b misses one in four.
        let statuses = ["i-a", "i-b"]
            .into_iter()
            .map(|id| {
                let up = id == "i-a" || k % 4 != 0;
                StatusRecord {
                    time,
                    instance_id: id.into(),
                    up,
                    reason: (!up).then_some(FailureReason::Timeout),
                    error: None,
                    duration_seconds: 0.5,
                    samples: if up { 3 } else { 0 },
                    path: crate::record::Route::Direct { address: Some("127.0.0.1:9100".into()) },
                }
            })
            .collect();
        let scrapes = vec![scrape("i-a", time, vec![sample("node_load1", "{}", 1.0)])];
        store.write(&Batch { scrapes, statuses, ..Batch::default() }).await.unwrap();
    }
    compact_all(&mut store).await;
    let rows: Vec<(f64, String, i64, i64, i64, f64, f64)> = sqlx::query_as(
        "SELECT time, instance_id, scrapes, up, failed, up_ratio, avg_duration_seconds FROM scrape_health_5m
         WHERE instance_id = 'i-b' AND time >= ? ORDER BY time",
    )
    .bind(T0)
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "the first block is written, the second still open: {rows:?}");
    assert_eq!(rows[0], (T0, "i-b".to_string(), 20, 15, 5, 0.75, 0.5));
}

/// Issue #22, goal 5: a per-instance panel reads its instance's log rows
/// only, through the index, at any fleet size.
#[tokio::test]
async fn one_instance_reads_its_own_scrape_log_rows_through_the_index() {
    let (mut store, _dir) = open().await;
    for batch in churned_history().into_iter().take(4) {
        store.write(&batch).await.unwrap();
    }
    let plan = plan(
        &store,
        "SELECT time, value FROM metric_samples
         WHERE metric = 'node_load1' AND instance_id = 'i-a' AND time >= 0 AND time < 9e9",
    )
    .await;
    for table in ["scrape_log_0", "scrape_log_1", "scrape_log_2"] {
        let search = format!("SEARCH l USING INDEX {table}_by_instance (instance_id=? AND time>? AND time<?)");
        assert!(plan.contains(&search), "{table}:\n{plan}");
    }
    let rows: Vec<(f64, f64)> = sqlx::query_as(
        "SELECT time, value FROM metric_samples WHERE metric = 'node_load1' AND instance_id = 'i-a' ORDER BY time",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(rows, [(T0, 0.0), (T0 + 15.0, 0.0), (T0 + 30.0, 0.25), (T0 + 45.0, 0.25)]);
}

#[tokio::test]
async fn the_bundled_sqlite_takes_no_global_lock_per_allocation_or_page() {
    let (store, _dir) = open().await;
    let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options").fetch_all(store.pool()).await.unwrap();
    let hint = "built without .cargo/config.toml's LIBSQLITE3_FLAGS?";
    assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{hint} {options:?}");
    assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{hint} {options:?}");
}

#[tokio::test]
async fn an_instance_back_after_its_head_was_forgotten_still_gets_its_minutes() {
    let (mut store, _dir) = open().await;
    let mut lists = HashMap::new();
    let write = async |store: &mut Store, lists: &mut HashMap<String, Arc<SeriesList>>, id: &str, t: f64| {
        let record = shared(lists, scrape(id, t, vec![sample("node_load1", "{}", t / 60.0)]));
        store.write(&Batch { scrapes: vec![record], ..Batch::default() }).await.unwrap();
        store.maintain(&Retention::DEFAULT, 1e9, false).await.unwrap();
    };
    write(&mut store, &mut lists, "i-a", T0).await;
    // Only i-b for longer than a head is kept: i-a's head is forgotten, its
    // layout (the same shared list) is not.
    for k in 0..50 {
        write(&mut store, &mut lists, "i-b", T0 + 15.0 * f64::from(k)).await;
    }
    let back = T0 + 900.0;
    for t in [back, back + 15.0, back + 60.0] {
        write(&mut store, &mut lists, "i-a", t).await;
    }
    let minute = (back / 60.0).floor() * 60.0;
    let rows: Vec<(i64, f64)> = sqlx::query_as(
        "SELECT count, last FROM metric_samples_1m WHERE instance_id = 'i-a' AND time = ? AND metric = 'node_load1'",
    )
    .bind(minute)
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(rows, [(2, (back + 15.0) / 60.0)], "the minute of its return, from a head described again");
}

/// Issue #23: a database SQLite can only read (a file of another user, a
/// read-only mount) opened without complaint and failed every later write.
/// The probe at open fails instead; here on a connection opened read-only.
#[tokio::test]
async fn the_write_probe_refuses_a_database_sqlite_can_only_read() {
    let (store, _dir) = open().await;
    let path = store.path().to_path_buf();
    store.close().await;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let error = super::probe_write(&pool, &path).await.expect_err("read-only");
    let message = error.to_string();
    assert!(matches!(error, Error::ReadOnly { .. }), "{message}");
    assert!(message.contains("cannot be written by this user") && message.contains("chown"), "{message}");
    let writable = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display())).await.unwrap();
    super::probe_write(&writable, &path).await.expect("a writable database passes");
    let probes: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name = 'fleetscrape_write_probe'")
        .fetch_one(&writable)
        .await
        .unwrap();
    assert_eq!(probes, 0, "the probe leaves nothing behind");
}

/// Issue #24: a directory fleetscrape creates for its database is group
/// writable, so Grafana (another user of group 0) can create `-shm` in it.
#[tokio::test]
async fn the_database_directory_it_creates_is_group_writable() {
    use std::os::unix::fs::PermissionsExt;
    let (store, dir) = open().await;
    let mode = std::fs::metadata(dir.path().join("sub/dir")).unwrap().permissions().mode();
    assert_eq!(mode & 0o070, 0o070, "{mode:o}");
    store.close().await;
}

/// Found by the dashboard test's intermittent failures: a maintenance call
/// told to compact every block now (`delay` below the minute grace, as the
/// dashboard test and a backfill do) compacted a block whose last minutes the
/// head had not closed; the log was emptied, so those minutes' 1-minute rows
/// were never written (nor could a restart rebuild them). A block due now has
/// its minutes closed first.
#[tokio::test]
async fn a_forced_compaction_writes_the_minutes_of_the_blocks_it_compacts() {
    let (mut store, _dir) = open().await;
    // 20 scrapes within one minute, the newest 10 s before the minute ends.
    for i in 0..20 {
        let t = 60_000.0 + f64::from(i);
        let samples = vec![cpu_idle(0, 100.0 + f64::from(i)), sample("node_load1", "{}", 1.0)];
        store.write(&Batch { scrapes: vec![scrape("i-a", t, samples)], ..Batch::default() }).await.unwrap();
    }
    while !matches!(store.maintain(&Retention::DEFAULT, -1e9, false).await.unwrap(), Maintenance::Idle) {}
    let rows: Vec<(f64, i64, Option<f64>)> = sqlx::query_as(
        "SELECT time, count, increase FROM metric_samples_1m WHERE instance_id = 'i-a' AND metric = 'node_cpu_seconds_total'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(rows, [(60_000.0, 20, Some(19.0))], "the minute of the compacted block");
    let points: i64 =
        sqlx::query_scalar("SELECT count(*) FROM metric_samples WHERE instance_id = 'i-a' AND metric = 'node_load1'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(points, 20, "the raw tier keeps every sample");
}
