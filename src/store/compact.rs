//! Compaction of store v2's recent tier: moves what a v2 database left in
//! `samples` (clustered by time; nothing writes it since store v3, see
//! [`super::blocks`]) into the compacted tier (`frames`, `points`) and the rollups, one 5-minute block at a
//! time, in steps of bounded work so ingest never waits long.
//!
//! A block's steps: collect its frames (the distinct scrape times of each
//! instance), write them, then the metrics, as many per transaction as a step
//! reads (read their rows, write points and 1-minute and 5-minute rollups,
//! delete the rows),
//! then the CPU rollups, the 1-hour rollups when an hour is complete, and the
//! new `compacted_until`. Each transaction leaves the views whole: a metric's
//! rows are either still in `samples` or already in `points`. Interrupted, a
//! block resumes where it stopped: moved metrics have no rows left, frames
//! already written are read back.

pub mod core;

use std::collections::HashMap;

use rusqlite::OptionalExtension;
use rusqlite::types::Value;
use sqlx::{Row, SqliteConnection, SqlitePool};
use tracing::{debug, info};

use self::core::{BLOCK_SECONDS, Bucket, PointValue, Previous, block_of, compact_series, offset_ms};
use super::Error;
use super::raw::{self, Number};

/// Rows a step reads before it yields by default: ~100 ms of work. Scrapes
/// wait for the writer (backpressure) while a step runs; at 100,000 rows a
/// 20-target fleet at 1 s stored 3 % fewer scrapes than Prometheus.
pub const STEP_ROWS: usize = 25_000;

/// `store_state` key of the compaction horizon.
const COMPACTED_UNTIL: &str = "compacted_until";

/// What one [`Compactor::step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    /// The block worked on.
    pub block: i64,
    /// Rows read: of `samples` (v2's compactor), or logged scrapes (store v3's
    /// block writer, one a scrape).
    pub rows: usize,
    /// Written: change points (v2's compactor), or values in chunks (the
    /// block writer).
    pub points: usize,
    /// Whether the block is done.
    pub finished: bool,
}

#[derive(Debug)]
enum Phase {
    /// Reading frames, from this index into `metrics`.
    Frames(usize),
    /// Moving metrics, from this index.
    Metrics(usize),
}

#[derive(Debug)]
struct BlockJob {
    block: i64,
    /// Whether the block is past raw retention: rollups only, no points.
    rollups_only: bool,
    metrics: Vec<(i64, bool)>,
    frames: HashMap<String, Vec<f64>>,
    phase: Phase,
}

/// The compaction state machine; the writer drives it with [`Compactor::step`].
#[derive(Debug, Default)]
pub struct Compactor {
    /// Everything before this time has left `samples` (None: not read yet).
    compacted_until: Option<f64>,
    job: Option<BlockJob>,
    /// Each counter's last sample before the block in work, with the block it
    /// was seen in: series not seen in a block are dropped when it finishes.
    previous: HashMap<i64, (Previous, i64)>,
    /// Rows a step reads before it yields (at least one metric's).
    step_rows: usize,
    /// When the oldest block becomes due (by the newest data): no query before.
    next_due: Option<f64>,
    /// `samples` was found empty: since store v3 nothing writes to it again.
    drained: bool,
}

impl Compactor {
    /// Reads the horizon from the database (None on a database never compacted).
    pub async fn load(pool: &SqlitePool) -> Result<Self, Error> {
        let until = state(pool, COMPACTED_UNTIL).await?;
        Ok(Self { compacted_until: until, step_rows: STEP_ROWS, ..Self::default() })
    }

    /// Series whose last sample is remembered.
    pub fn remembered_series(&self) -> usize {
        self.previous.len()
    }

    /// Sets the rows a step reads before it yields.
    pub fn set_step_rows(&mut self, rows: usize) {
        self.step_rows = rows.max(1);
    }

    /// Samples older than this are compacted, or in the block being
    /// compacted; a later write of one is dropped.
    pub fn compacted_until(&self) -> f64 {
        match &self.job {
            Some(job) => block_range(job.block).1,
            None => self.horizon(),
        }
    }

    fn horizon(&self) -> f64 {
        self.compacted_until.unwrap_or(f64::NEG_INFINITY)
    }

    /// Does one bounded step if a block is due: its end is at least `delay`
    /// seconds older than `newest` (the newest sample time written). Blocks
    /// that ended before `raw_cutoff` get rollups only. Returns `None` when
    /// nothing is due.
    ///
    /// # Errors
    /// [`Error::Sql`]; the step's transaction is rolled back and the block is
    /// started over at the next step.
    pub async fn step(
        &mut self,
        pool: &SqlitePool,
        newest: f64,
        delay: f64,
        raw_cutoff: f64,
    ) -> Result<Option<StepReport>, Error> {
        if self.job.is_none() {
            if self.drained || self.next_due.is_some_and(|due| newest < due) {
                return Ok(None);
            }
            let Some(block) = self.next_block(pool).await? else {
                self.drained = true;
                return Ok(None);
            };
            let due = ((block + 1) * BLOCK_SECONDS) as f64 + delay;
            if due > newest {
                self.next_due = Some(due);
                return Ok(None);
            }
            self.next_due = None;
            let job = self.start(pool, block, raw_cutoff).await?;
            self.job = Some(job);
        }
        let result = self.advance(pool).await;
        if result.is_err() {
            self.job = None;
            self.previous.clear();
        }
        result.map(Some)
    }

    /// How many blocks are due, for progress reports.
    pub async fn backlog(&self, pool: &SqlitePool, newest: f64) -> Result<i64, Error> {
        let Some(first) = self.next_block(pool).await? else { return Ok(0) };
        Ok((block_of(newest) - first).max(0))
    }

    /// The first block with rows in `samples` at or after the horizon.
    async fn next_block(&self, pool: &SqlitePool) -> Result<Option<i64>, Error> {
        if let Some(job) = &self.job {
            return Ok(Some(job.block));
        }
        let oldest: Option<f64> = sqlx::query_scalar(
            "SELECT min((SELECT min(time) FROM samples s WHERE s.metric_id = m.metric_id AND s.time >= ?)) FROM metrics m",
        )
        .bind(self.horizon())
        .fetch_one(pool)
        .await?;
        Ok(oldest.map(block_of))
    }

    async fn start(&mut self, pool: &SqlitePool, block: i64, raw_cutoff: f64) -> Result<BlockJob, Error> {
        let metrics = sqlx::query("SELECT metric_id, type FROM metrics ORDER BY metric_id")
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)? == "counter")))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let mut frames: HashMap<String, Vec<f64>> = HashMap::new();
        // Frames written by an interrupted run of this block (its rows are gone).
        for row in
            sqlx::query("SELECT instance_id, time FROM frames WHERE block = ?").bind(block).fetch_all(pool).await?
        {
            frames.entry(row.try_get(0)?).or_default().push(row.try_get(1)?);
        }
        let rollups_only = (((block + 1) * BLOCK_SECONDS) as f64) < raw_cutoff;
        let phase = Phase::Frames(0);
        debug!(block, metrics = metrics.len(), rollups_only, "compaction: block started");
        Ok(BlockJob { block, rollups_only, metrics, frames, phase })
    }

    async fn advance(&mut self, pool: &SqlitePool) -> Result<StepReport, Error> {
        let Some(job) = self.job.as_mut() else { return Ok(StepReport::default()) };
        let (from, to) = block_range(job.block);
        let mut report = StepReport { block: job.block, ..StepReport::default() };
        match job.phase {
            Phase::Frames(mut index) => {
                let step_rows = self.step_rows;
                let mut conn = pool.acquire().await?;
                index = raw::with_handle(&mut conn, |db| {
                    let mut select = db.prepare(
                        "SELECT DISTINCT se.instance_id, s.time FROM samples s JOIN series se ON se.series_id = s.series_id
                         WHERE s.metric_id = ?1 AND s.time >= ?2 AND s.time < ?3",
                    )?;
                    while index < job.metrics.len() && report.rows < step_rows {
                        let mut rows = select.query(rusqlite::params![job.metrics[index].0, from, to])?;
                        while let Some(row) = rows.next()? {
                            report.rows += 1;
                            job.frames.entry(row.get(0)?).or_default().push(row.get(1)?);
                        }
                        index += 1;
                    }
                    Ok(index)
                })
                .await?;
                drop(conn);
                if index < job.metrics.len() {
                    job.phase = Phase::Frames(index);
                } else {
                    for times in job.frames.values_mut() {
                        times.sort_by(f64::total_cmp);
                        times.dedup();
                    }
                    if !job.rollups_only {
                        write_frames(pool, job.block, &job.frames).await?;
                    }
                    job.phase = Phase::Metrics(0);
                }
            }
            Phase::Metrics(mut index) => {
                // One transaction per step: per metric, small blocks would
                // pay a commit (and its B-tree interior pages) 400 times.
                let (step_rows, previous) = (self.step_rows, &mut self.previous);
                let mut tx = pool.begin().await?;
                index = raw::with_handle(&mut tx, |db| {
                    while index < job.metrics.len() && report.rows < step_rows {
                        let (metric_id, counter) = job.metrics[index];
                        let moved = move_metric(db, job, metric_id, counter, previous)?;
                        report.rows += moved.0;
                        report.points += moved.1;
                        index += 1;
                    }
                    Ok(index)
                })
                .await?;
                tx.commit().await?;
                if index < job.metrics.len() {
                    job.phase = Phase::Metrics(index);
                } else {
                    finish_block(pool, job.block).await?;
                    self.compacted_until = Some(to);
                    self.next_due = None;
                    let block = job.block;
                    self.previous.retain(|_, (_, seen)| *seen == block);
                    report.finished = true;
                    let frames: usize = job.frames.values().map(Vec::len).sum();
                    debug!(block = job.block, frames, "compaction: block done");
                    self.job = None;
                }
            }
        }
        Ok(report)
    }
}

/// A time kept in `store_state` (None until first written).
pub(super) async fn state(pool: &SqlitePool, key: &str) -> Result<Option<f64>, Error> {
    Ok(sqlx::query_scalar("SELECT value FROM store_state WHERE key = ?").bind(key).fetch_optional(pool).await?)
}

/// The block's time range, epoch seconds.
pub(super) fn block_range(block: i64) -> (f64, f64) {
    ((block * BLOCK_SECONDS) as f64, ((block + 1) * BLOCK_SECONDS) as f64)
}

async fn write_frames(pool: &SqlitePool, block: i64, frames: &HashMap<String, Vec<f64>>) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    raw::with_handle(&mut tx, |db| {
        let mut insert =
            db.prepare("INSERT OR IGNORE INTO frames (instance_id, time, block, toff) VALUES (?1, ?2, ?3, ?4)")?;
        for (instance, times) in frames {
            for time in times {
                insert.execute(rusqlite::params![instance, time, block, offset_ms(block, *time)])?;
            }
        }
        Ok(())
    })
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One metric's rows of a block, in the key's order.
pub(super) const METRIC_ROWS: &str = "SELECT series_id, time, CAST(value AS REAL) FROM samples
     WHERE metric_id = ?1 AND time >= ?2 AND time < ?3 ORDER BY time, series_id";

/// Moves one metric's rows of the block, in the step's transaction; returns
/// (rows read, points written).
fn move_metric(
    db: &rusqlite::Connection,
    job: &BlockJob,
    metric_id: i64,
    counter: bool,
    previous: &mut HashMap<i64, (Previous, i64)>,
) -> rusqlite::Result<(usize, usize)> {
    let (from, to) = block_range(job.block);
    let range = rusqlite::params![metric_id, from, to];
    // In the key's own order (time, then series): SQLite streams it. Asking
    // it for series order made it sort the block's rows in a temporary
    // B-tree (7.7 M rows for node_cpu_seconds_total of 1,000 48-CPU hosts);
    // a stable sort here keeps each series' rows in time order, for less.
    let mut select = db.prepare_cached(METRIC_ROWS)?;
    let mut rows = select
        .query_map(range, |row| Ok((row.get::<_, i64>(0)?, row.get::<_, f64>(1)?, row.get::<_, Option<f64>>(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.sort_by_key(|row| row.0);
    if rows.is_empty() {
        return Ok((0, 0));
    }
    // One seek per series of the block (not a second pass over its rows,
    // nor the metric's series of every instance ever seen).
    let mut instance_of = db.prepare_cached("SELECT instance_id FROM series WHERE series_id = ?1")?;
    let mut points = Vec::new();
    let mut minutes = Vec::new();
    let mut blocks = Vec::new();
    for series_rows in rows.chunk_by(|a, b| a.0 == b.0) {
        let series_id = series_rows[0].0;
        let series_rows: Vec<(f64, f64)> =
            series_rows.iter().map(|(_, time, value)| (*time, value.unwrap_or(f64::NAN))).collect();
        let instance: String = instance_of.query_row([series_id], |row| row.get(0)).optional()?.unwrap_or_default();
        let instance = instance.as_str();
        let frames = job.frames.get(instance).map_or(&[][..], Vec::as_slice);
        let before = match previous.get(&series_id) {
            Some((p, _)) => Some(*p),
            None if counter => previous_sample(db, job.block, series_id, instance)?,
            None => None,
        };
        let out = compact_series(job.block, frames, &series_rows, before, counter);
        if let Some(last) = out.last.filter(|_| counter) {
            previous.insert(series_id, (last, job.block));
        }
        if !job.rollups_only {
            points.extend(out.points.iter().map(|(toff, value)| (series_id, *toff, *value)));
        }
        blocks.extend(out.block_bucket(job.block).map(|b| (series_id, b)));
        minutes.extend(out.minutes.into_iter().map(|b| (series_id, b)));
    }
    insert_points(db, job.block, &points)?;
    insert_buckets(db, "rollup_1m", &minutes)?;
    insert_buckets(db, "rollup_5m", &blocks)?;
    db.prepare_cached("DELETE FROM samples WHERE metric_id = ?1 AND time >= ?2 AND time < ?3")?.execute(range)?;
    Ok((rows.len(), points.len()))
}

/// A counter's last sample in the previous block, read back from the
/// compacted tier (after a restart the compactor remembers nothing): its
/// value at its instance's last frame of that block, the last element of its
/// chunk (or, for a block written before chunks, the block's last point).
pub(super) fn previous_sample(
    db: &rusqlite::Connection,
    block: i64,
    series_id: i64,
    instance: &str,
) -> rusqlite::Result<Option<Previous>> {
    let mut select = db.prepare_cached(concat!(
        "SELECT coalesce((SELECT ",
        super::blocks::chunk_number_sql!("vals", "'$[#-1]'"),
        " FROM chunks WHERE id = ?1 * 4294967296 + ?2),
                  (SELECT CASE WHEN typeof(value) IN ('integer', 'real') THEN CAST(value AS REAL) END
                   FROM points WHERE block = ?1 AND series_id = ?2 ORDER BY toff DESC LIMIT 1)),
                (SELECT max(time) FROM frames WHERE instance_id = ?3 AND block = ?1)"
    ))?;
    // An absent marker or a NaN reads as no number.
    let (value, time): (Option<f64>, Option<f64>) =
        select.query_row(rusqlite::params![block - 1, series_id, instance], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(value.zip(time).map(|(value, time)| Previous { time, value }))
}

pub(super) fn insert_points(
    db: &rusqlite::Connection,
    block: i64,
    points: &[(i64, i64, PointValue)],
) -> rusqlite::Result<()> {
    let mut insert =
        db.prepare_cached("INSERT OR REPLACE INTO points (block, series_id, toff, value) VALUES (?1, ?2, ?3, ?4)")?;
    for (series_id, toff, value) in points {
        let value = match value {
            PointValue::Value(v) => Number(*v).value(),
            PointValue::Absent => Value::Blob(Vec::new()),
        };
        insert.execute(rusqlite::params![block, series_id, toff, value])?;
    }
    Ok(())
}

pub(super) fn insert_buckets(
    db: &rusqlite::Connection,
    table: &str,
    buckets: &[(i64, Bucket)],
) -> rusqlite::Result<()> {
    let mut insert = db.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {table} (time, series_id, count, sum, min, max, last, increase, span)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?;
    for (series_id, bucket) in buckets {
        // What equals what `last` implies is left NULL (1 byte instead of up
        // to 8): most series are constant over a bucket, and the views read
        // `coalesce(sum, last × count)`, `coalesce(min, last)`.
        let [sum, min, max, last] = match bucket.stats {
            Some(s) => {
                let implied = |v: f64, by: f64| (v != by).then_some(Number(v));
                [
                    implied(s.sum, s.last * f64::from(bucket.count)),
                    implied(s.min, s.last),
                    implied(s.max, s.last),
                    Some(Number(s.last)),
                ]
            }
            None => [None; 4],
        };
        let (increase, span) = match bucket.increase {
            Some(i) => (Some(Number(i.increase)), Some(Number(i.span))),
            None => (None, None),
        };
        insert.execute(rusqlite::params![
            bucket.start,
            series_id,
            i64::from(bucket.count),
            sum,
            min,
            max,
            last,
            increase,
            span
        ])?;
    }
    Ok(())
}

/// The block's CPU rollups, its rollup buckets, the hour's rollups when the
/// block ends an hour, and the new horizon, in one transaction.
async fn finish_block(pool: &SqlitePool, block: i64) -> Result<(), Error> {
    let (from, to) = block_range(block);
    let mut tx = pool.begin().await?;
    roll_up_cpu(&mut tx, 60, from, to).await?;
    roll_up_cpu(&mut tx, 300, from, to).await?;
    roll_up_status(&mut tx, from, to).await?;
    // One seek per possible bucket start: a DISTINCT over the block's
    // 1-minute rows read every one of them (11 M at 2,000 targets, 2 s).
    for (width, table) in [(60_usize, "rollup_1m"), (300, "rollup_5m")] {
        for start in (from as i64..to as i64).step_by(width) {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT OR IGNORE INTO rollup_buckets (width, time)
                 SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM {table} WHERE time = ?2)"
            )))
            .bind(width as i64)
            .bind(start)
            .execute(&mut *tx)
            .await?;
        }
    }
    if (block + 1) % 12 == 0 {
        roll_up_hour(&mut tx, to - 3600.0).await?;
    }
    sqlx::query("INSERT OR REPLACE INTO store_state (key, value) VALUES (?, ?)")
        .bind(COMPACTED_UNTIL)
        .bind(to)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// CPU busy rollups of `width` seconds (60 or 300) over [from, to).
pub(super) async fn roll_up_cpu(tx: &mut SqliteConnection, width: i64, from: f64, to: f64) -> Result<(), Error> {
    let table = if width == 60 { "cpu_rollup_1m" } else { "cpu_rollup_5m" };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT OR REPLACE INTO {table} (time, instance_id, count, sum, min, max)
         SELECT CAST(time / ?1 AS INTEGER) * ?1 AS bucket, instance_id, count(*), sum(value), min(value), max(value)
         FROM cpu_samples WHERE time >= ?2 AND time < ?3 GROUP BY bucket, instance_id"
    )))
    .bind(width)
    .bind(from)
    .bind(to)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Each instance's scrape health over the block [from, to), from its status rows.
pub(super) async fn roll_up_status(tx: &mut SqliteConnection, from: f64, to: f64) -> Result<(), Error> {
    sqlx::query(
        "INSERT OR REPLACE INTO scrape_status_5m (time, instance_id, scrapes, up, duration_seconds, samples)
         SELECT ?1, instance_id, count(*), sum(up), sum(duration_seconds), sum(samples)
         FROM scrape_status WHERE time >= ?1 AND time < ?2 GROUP BY instance_id",
    )
    .bind(from)
    .bind(to)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The 1-hour rollups of the hour starting at `hour`, merged from its 5-minute ones.
pub(super) async fn roll_up_hour(tx: &mut SqliteConnection, hour: f64) -> Result<(), Error> {
    let merged = raw::with_handle(tx, |db| roll_up_hour_series(db, hour as i64)).await?;
    sqlx::query(
        "INSERT OR REPLACE INTO cpu_rollup_1h (time, instance_id, count, sum, min, max)
         SELECT ?1, instance_id, sum(count), sum(sum), min(min), max(max) FROM cpu_rollup_5m
         WHERE time >= ?1 AND time < ?1 + 3600 GROUP BY instance_id",
    )
    .bind(hour)
    .execute(&mut *tx)
    .await?;
    if merged > 0 {
        sqlx::query("INSERT OR IGNORE INTO rollup_buckets (width, time) VALUES (3600, ?)")
            .bind(hour)
            .execute(&mut *tx)
            .await?;
    }
    if merged > 0 {
        info!(hour, series = merged, "compaction: hour rolled up");
    }
    Ok(())
}

/// One 5-minute bucket's rows of a range of series, in key order.
pub(super) const HOUR_ROWS: &str =
    "SELECT series_id, count, CAST(coalesce(sum, last * count) AS REAL), CAST(coalesce(min, last) AS REAL),
            CAST(coalesce(max, last) AS REAL), CAST(last AS REAL), CAST(increase AS REAL), CAST(span AS REAL)
     FROM rollup_5m WHERE time = ?1 AND series_id >= ?2 AND series_id < ?3";

/// Series whose hour one step of [`roll_up_hour_series`] merges in memory.
const HOUR_SERIES_RANGE: i64 = 65_536;

/// Writes the `rollup_1h` rows of the hour starting at `hour` from its
/// 5-minute rows; returns how many. The 5-minute rows are read in their key
/// order (time, then series), one range of series ids at a time, and merged
/// per series in time order (as ever, so the same bits): sorting the hour's
/// rows by series instead held all of them in SQLite's sorter at once, ~13 M
/// rows and ~600 MB at 1,000 targets (BENCHMARKS.md, 2026-12-06).
pub(super) fn roll_up_hour_series(db: &rusqlite::Connection, hour: i64) -> rusqlite::Result<usize> {
    let mut bounds = db.prepare_cached("SELECT min(series_id), max(series_id) FROM rollup_5m WHERE time = ?1")?;
    let mut select = db.prepare_cached(HOUR_ROWS)?;
    let starts: Vec<i64> = (hour..hour + 3600).step_by(BLOCK_SECONDS as usize).collect();
    let (mut low, mut high) = (i64::MAX, i64::MIN);
    for start in &starts {
        let (min, max): (Option<i64>, Option<i64>) = bounds.query_row([start], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if let (Some(min), Some(max)) = (min, max) {
            (low, high) = (low.min(min), high.max(max));
        }
    }
    let mut written = 0;
    let mut range: Vec<Option<Bucket>> = Vec::new();
    let mut from = low;
    while from <= high {
        let to = from.saturating_add(HOUR_SERIES_RANGE);
        range.clear();
        range.resize(usize::try_from(to - from).unwrap_or(0), None);
        for start in &starts {
            let mut rows = select.query(rusqlite::params![start, from, to])?;
            while let Some(row) = rows.next()? {
                let slot = usize::try_from(row.get::<_, i64>(0)? - from).unwrap_or(usize::MAX);
                let bucket = bucket_from_row(row, hour)?;
                if let Some(merged) = range.get_mut(slot) {
                    match merged {
                        Some(into) => into.merge(&bucket),
                        None => *merged = Some(bucket),
                    }
                }
            }
        }
        let buckets: Vec<(i64, Bucket)> =
            range.iter().enumerate().filter_map(|(i, b)| b.map(|b| (from + i as i64, b))).collect();
        insert_buckets(db, "rollup_1h", &buckets)?;
        written += buckets.len();
        from = to;
    }
    Ok(written)
}

/// A 5-minute bucket read back: series_id, count, then sum, min, max, last
/// (implied values filled in), increase, span.
pub(super) fn bucket_from_row(row: &rusqlite::Row<'_>, start: i64) -> rusqlite::Result<Bucket> {
    let sum: Option<f64> = row.get(2)?;
    let number = |i: usize| row.get::<_, Option<f64>>(i).map(|v| v.unwrap_or(f64::NAN));
    let stats = match sum {
        Some(sum) => Some(self::core::Stats { sum, min: number(3)?, max: number(4)?, last: number(5)? }),
        None => None,
    };
    let increase: Option<f64> = row.get(6)?;
    let span: Option<f64> = row.get(7)?;
    Ok(Bucket {
        start,
        count: u32::try_from(row.get::<_, i64>(1)?).unwrap_or(u32::MAX),
        stats,
        increase: increase.zip(span).map(|(increase, span)| self::core::Increase { increase, span }),
    })
}
