//! Databases written by earlier versions (fixtures in tests/data/db, made by
//! the schema of their version: v0001 by migration 0001 only, v0002 by
//! 0001 + 0002) are migrated on open with nothing lost, and their history is
//! compacted in steps that resume after an interruption.

use std::path::{Path, PathBuf};

use fleetscrape::store::{Maintenance, Retention, Store};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

type Sample = (f64, String, String, String, Option<f64>);

const EVERY_SAMPLE: &str =
    "SELECT time, instance_id, metric, labels, value FROM metric_samples ORDER BY time, instance_id, metric, labels";

fn fixture(name: &str, dir: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(Path::new("tests/data/db").join(name), &path).expect("copy the fixture");
    path
}

/// What the old schema shows, read with a plain connection (no migration).
async fn read_as_written(path: &Path) -> (Vec<Sample>, Vec<(f64, String, f64)>) {
    let mut conn = SqliteConnectOptions::new().filename(path).read_only(true).connect().await.unwrap();
    let samples = sqlx::query_as(EVERY_SAMPLE).fetch_all(&mut conn).await.unwrap();
    let cpu = sqlx::query_as("SELECT time, instance_id, value FROM cpu_utilization ORDER BY time, instance_id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    (samples, cpu)
}

async fn read_now(store: &Store) -> (Vec<Sample>, Vec<(f64, String, f64)>) {
    let samples = sqlx::query_as(EVERY_SAMPLE).fetch_all(store.pool()).await.unwrap();
    let cpu = sqlx::query_as("SELECT time, instance_id, value FROM cpu_utilization ORDER BY time, instance_id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    (samples, cpu)
}

async fn step(store: &mut Store) -> Option<bool> {
    match store.maintain(&Retention::DEFAULT, 0.0, false).await.unwrap() {
        Maintenance::Compacted(step) => Some(step.finished),
        Maintenance::Idle => None,
        Maintenance::Retained(_) => unreachable!("no sweep asked for"),
    }
}

async fn count(store: &Store, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn migrates_with_nothing_lost(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(name, dir.path());
    let written = read_as_written(&path).await;
    assert!(written.0.len() > 20_000, "{name}: the fixture has {} samples", written.0.len());

    let mut store = Store::open(&path).await.unwrap();
    assert_eq!(read_now(&store).await, written, "{name}: right after the migration");

    // Compact in small steps, and stop as a crash would: while reading a
    // block's frames, then while moving its metrics; resume each time.
    let mut blocks = 0;
    for stop_after in [3, 12] {
        store.set_compaction_step_rows(2_000);
        for _ in 0..stop_after {
            blocks += usize::from(step(&mut store).await.unwrap_or(false));
        }
        drop(store);
        store = Store::open(&path).await.unwrap();
        assert_eq!(read_now(&store).await, written, "{name}: after an interrupted compaction");
    }
    let mut steps = 0;
    while let Some(finished) = step(&mut store).await {
        blocks += usize::from(finished);
        steps += 1;
        assert!(steps < 10_000, "{name}: compaction never finished in 10,000 bounded steps");
    }
    assert!(blocks >= 1, "{name}: the history spans whole blocks");
    assert_eq!(read_now(&store).await, written, "{name}: after compaction");
    let left = count(&store, "samples").await;
    assert!(left < written.0.len() as i64 / 2, "{name}: {left} rows still in the recent tier");
    assert!(count(&store, "points").await > 0);
    assert!(count(&store, "rollup_5m").await > 0);
    assert!(count(&store, "cpu_rollup_1m").await > 0);
    store.close().await;
}

#[tokio::test]
async fn a_database_of_schema_0001_is_migrated_with_nothing_lost() {
    migrates_with_nothing_lost("v0001.sqlite").await;
}

#[tokio::test]
async fn a_database_of_schema_0002_is_migrated_with_nothing_lost() {
    migrates_with_nothing_lost("v0002.sqlite").await;
}

#[tokio::test]
async fn alb_rounds_of_schema_0001_get_coverage_columns() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fixture("v0001.sqlite", dir.path())).await.unwrap();
    let rows: Vec<(i64, i64, i64, i64)> =
        sqlx::query_as("SELECT members, reached, wanted, reached_wanted FROM alb_rounds ORDER BY time")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(rows, [(1, 1, 1, 1), (1, 1, 1, 1)]);
}
