use sqlx::Row;

use super::*;

fn sample(metric: &str, labels: &str, value: f64) -> SampleRecord {
    SampleRecord { metric: metric.into(), labels: labels.into(), value }
}

fn cpu_idle(cpu: u32, value: f64) -> SampleRecord {
    sample("node_cpu_seconds_total", &format!(r#"{{"cpu":"{cpu}","mode":"idle"}}"#), value)
}

fn cpu_user(cpu: u32, value: f64) -> SampleRecord {
    sample("node_cpu_seconds_total", &format!(r#"{{"cpu":"{cpu}","mode":"user"}}"#), value)
}

fn scrape(instance: &str, time: f64, samples: Vec<SampleRecord>) -> ScrapeRecord {
    ScrapeRecord {
        instance_id: instance.into(),
        time,
        samples,
        types: vec![("node_cpu_seconds_total".into(), "counter"), ("node_load1".into(), "gauge")],
    }
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
    let rows: Vec<(String, Option<f64>)> = sqlx::query_as(
        "SELECT typeof(s.value), CAST(s.value AS REAL) FROM samples s JOIN series se USING (series_id) ORDER BY se.labels",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let kinds: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["integer", "real", "null", "real", "integer", "real"]);
    assert_eq!(rows[0].1, Some(3.0));
    assert_eq!(rows[2].1, None);
    assert_eq!(rows[3].1, Some(f64::INFINITY));
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
async fn retention_deletes_old_rows_everywhere() {
    let (mut store, _dir) = open().await;
    let batch = Batch {
        instances: vec![instance("i-a", "basic")],
        scrapes: vec![scrape("i-a", 100.0, vec![cpu_idle(0, 1.0)]), scrape("i-a", 200.0, vec![cpu_idle(0, 50.0)])],
        statuses: vec![StatusRecord {
            time: 100.0,
            instance_id: "i-a".into(),
            up: true,
            reason: None,
            error: None,
            duration_seconds: 0.1,
            samples: 1,
            path: "direct 127.0.0.1:9100".into(),
        }],
        memberships: vec![(100.0, "web".into(), 1), (300.0, "web".into(), 2)],
        ..Batch::default()
    };
    store.write(&batch).await.unwrap();
    assert_eq!(store.delete_before(150.0).await.unwrap(), 1);
    let remaining: Vec<f64> =
        sqlx::query_scalar("SELECT time FROM metric_samples").fetch_all(store.pool()).await.unwrap();
    assert_eq!(remaining, [200.0]);
    for (table, expected) in [("scrape_status", 0), ("asg_membership", 1), ("cpu_samples", 1)] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(n, expected, "{table}");
    }
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
    assert!(!metric.contains("SCAN s"), "{metric}");
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
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM samples").fetch_one(store.pool()).await.unwrap();
    assert_eq!(count, 3);
    assert_eq!(handle.stats.samples.load(std::sync::atomic::Ordering::Relaxed), 3);
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
    let typed = |kind: &'static str| ScrapeRecord {
        instance_id: "i-a".into(),
        time: 1.0,
        samples: vec![sample("m", "{}", 1.0)],
        types: vec![("m".into(), kind)],
    };
    store
        .write(&Batch { scrapes: vec![ScrapeRecord { samples: vec![], ..typed("untyped") }], ..Batch::default() })
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
