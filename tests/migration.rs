//! Databases written by earlier versions (fixtures in tests/data/db, made by
//! the schema of their version: v0001 by migration 0001 only, v0002 by
//! 0001 + 0002) are migrated on open with nothing lost, and their history is
//! compacted in steps that resume after an interruption. A database of schema
//! 0008 (blocks written as change points, v0008 made by `tests/data/db/v0008.rs`)
//! keeps its points readable and goes on in chunks, with the same answers as a
//! database written by today's code from the start.

use std::path::{Path, PathBuf};

use fleetscrape::store::{Maintenance, Retention, Store};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

#[path = "common/db_rows.rs"]
mod db_rows;
#[path = "common/history.rs"]
mod history;

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

/// Writes the recorded history's batches from `from` on, with the writer's
/// upkeep between batches.
async fn write_from(store: &mut Store, from: usize) {
    for batch in history::history().into_iter().skip(from) {
        store.write(&batch).await.unwrap();
        while !matches!(store.maintain(&Retention::DEFAULT, 30.0, false).await.unwrap(), Maintenance::Idle) {}
    }
}

/// Every row of the views a user reads: samples, rollups of every tier, the
/// tiers' reach. Not CPU busy: computed at ingest between consecutive
/// scrapes, it loses an interval per instance at a restart (docs/storage.md).
fn views(store: &Store) -> Vec<String> {
    db_rows::rows(
        store.path(),
        &[
            "SELECT time, instance_id, metric, labels, quote(value) FROM metric_samples ORDER BY 1, 2, 3, 4",
            "SELECT time, instance_id, metric, labels, quote(avg), quote(min), quote(max), quote(last), quote(increase), quote(rate), count
             FROM metric_samples_1m ORDER BY 1, 2, 3, 4",
            "SELECT time, instance_id, metric, labels, quote(avg), quote(min), quote(max), quote(last), quote(increase), quote(rate), count
             FROM metric_samples_5m ORDER BY 1, 2, 3, 4",
            "SELECT tier, quote(oldest) FROM storage_tiers ORDER BY 1",
        ],
    )
}

#[tokio::test]
async fn a_database_of_schema_0008_keeps_its_points_and_goes_on_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("v0008.sqlite", dir.path());
    let written = read_as_written(&path).await;
    assert!(written.0.len() > 30_000, "the fixture has {} samples", written.0.len());

    let mut migrated = Store::open(&path).await.unwrap();
    assert_eq!(read_now(&migrated).await, written, "right after the migration");
    let points = count(&migrated, "points").await;
    assert!(points > 30_000, "the fixture's four blocks are points: {points}");
    assert_eq!(count(&migrated, "chunks").await, 0);
    // The head is rebuilt from the log, its counters resumed from the points;
    // the next block's increases start from the points' last values.
    write_from(&mut migrated, 84).await;
    assert_eq!(count(&migrated, "points").await, points, "points are kept as they are");
    assert!(count(&migrated, "chunks").await > 0, "new blocks are written as chunks");

    let mut fresh = Store::open(&dir.path().join("fresh.sqlite")).await.unwrap();
    write_from(&mut fresh, 0).await;
    assert_eq!(count(&fresh, "points").await, 0);
    let (a, b) = (views(&migrated), views(&fresh));
    assert!(a.len() > 100_000, "{} rows", a.len());
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a, b, "migrated (points, then chunks) against written as chunks from the start");
    }
    migrated.close().await;
    fresh.close().await;
}
