//! Writes a 5-minute block of the scrape log as the compacted tier: per
//! instance, its logged scrapes are decoded once and each series' values
//! written as one row of `chunks` (its value at each of the instance's frames
//! of the block, or the one value it kept), and its 5-minute rollup computed
//! in memory ([`block_rollup`]). Nothing is read back per sample and nothing
//! deleted per row: the block's log table is emptied whole.
//!
//! Steps of bounded work (a few instances each) write chunks and 5-minute
//! rollups, invisible until the block's last transaction writes its frames,
//! its rollup buckets, the CPU and hour rollups, empties the log table and
//! moves `log_written_until`: the views see the block either in the log or
//! in the compacted tier, never both, never neither. Interrupted, the block
//! is written again from its log (the same keys, the same values).

use std::collections::{BTreeSet, HashMap};

use rusqlite::OptionalExtension;
use rusqlite::types::Value;
use sqlx::SqlitePool;
use tracing::debug;

use super::Error;
use super::compact::core::{Bucket, Previous, block_of, block_rollup, same_value};
use super::compact::{
    StepReport, block_range, insert_buckets, previous_sample, roll_up_cpu, roll_up_hour, roll_up_status,
};
use super::log::{self, Slot};
use super::raw::{self, Number};

/// SQL: the element at JSON path `$path` of the chunk column `$vals` as a
/// REAL, or NULL when it is not a number (absent, NaN); a chunk that is one
/// value is that value at every path. One spelling for every reader of
/// chunks in Rust (the views, in migration 0009, spell it for themselves).
#[rustfmt::skip]
macro_rules! chunk_number_sql {
    ($vals:literal, $path:literal) => {
        concat!(
            "CASE WHEN typeof(", $vals, ") = 'text' THEN
               CASE WHEN json_type(", $vals, ", ", $path, ") IN ('integer', 'real')
                    THEN CAST(json_extract(", $vals, ", ", $path, ") AS REAL) END
             WHEN typeof(", $vals, ") IN ('integer', 'real') THEN CAST(", $vals, " AS REAL) END"
        )
    };
}
pub(super) use chunk_number_sql;

/// `store_state` key: the scrape log holds nothing older.
pub(super) const WRITTEN_UNTIL: &str = "log_written_until";

/// Values a step writes before it yields (at least one instance's).
pub const STEP_POINTS: usize = 200_000;

#[derive(Debug)]
struct Job {
    block: i64,
    rollups_only: bool,
    instances: Vec<String>,
    next: usize,
    /// Each written instance's frames (its logged scrape times).
    frames: Vec<(String, Vec<f64>)>,
    has_rollups: bool,
}

/// The state machine that writes logged blocks; the store drives it.
#[derive(Debug)]
pub struct BlockWriter {
    /// Blocks with rows in the log.
    pending: BTreeSet<i64>,
    /// The newest scrape in the log when it was loaded.
    newest_loaded: Option<f64>,
    written_until: f64,
    job: Option<Job>,
    /// Each counter's last sample, with the block it was seen in.
    previous: HashMap<i64, (Previous, i64)>,
    step_points: usize,
}

impl BlockWriter {
    /// Reads which blocks the log holds.
    pub async fn load(pool: &SqlitePool) -> Result<Self, Error> {
        let written_until = super::compact::state(pool, WRITTEN_UNTIL).await?;
        let mut pending = BTreeSet::new();
        let mut newest_loaded: Option<f64> = None;
        for table in log::ALL {
            let range: (Option<f64>, Option<f64>) =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT min(time), max(time) FROM {table}")))
                    .fetch_one(pool)
                    .await?;
            if let (Some(min), Some(max)) = range {
                pending.extend(block_of(min)..=block_of(max));
                newest_loaded = Some(newest_loaded.map_or(max, |n| n.max(max)));
            }
        }
        Ok(Self {
            pending,
            newest_loaded,
            written_until: written_until.unwrap_or(f64::NEG_INFINITY),
            job: None,
            previous: HashMap::new(),
            step_points: STEP_POINTS,
        })
    }

    /// Scrapes older than this are written (or being written): a later one is late.
    pub fn horizon(&self) -> f64 {
        match &self.job {
            Some(job) => block_range(job.block).1,
            None => self.written_until,
        }
    }

    /// Notes that `block` has rows in the log.
    pub fn logged(&mut self, block: i64) {
        self.pending.insert(block);
    }

    /// The newest scrape the log held when it was loaded (None: empty).
    pub fn newest_loaded(&self) -> Option<f64> {
        self.newest_loaded
    }

    /// The oldest block in the log.
    fn oldest(&self) -> Option<i64> {
        self.pending.first().copied()
    }

    /// Blocks in the log, for progress reports.
    pub fn backlog(&self) -> usize {
        self.pending.len()
    }

    /// Series whose last sample is remembered.
    pub fn remembered_series(&self) -> usize {
        self.previous.len()
    }

    /// Sets the values a step writes before it yields.
    pub fn set_step_points(&mut self, points: usize) {
        self.step_points = points.max(1);
    }

    /// Does one bounded step if a block is due (its end `delay` seconds older
    /// than `newest`); blocks that ended before `raw_cutoff` get rollups only.
    ///
    /// # Errors
    /// [`Error`]; the block is started over at the next step.
    pub async fn step(
        &mut self,
        pool: &SqlitePool,
        newest: f64,
        delay: f64,
        raw_cutoff: f64,
    ) -> Result<Option<StepReport>, Error> {
        if self.job.is_none() {
            let Some(block) = self.oldest() else { return Ok(None) };
            let end = block_range(block).1;
            if end + delay > newest {
                return Ok(None);
            }
            let instances: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT DISTINCT instance_id FROM {} WHERE time >= ? AND time < ? ORDER BY instance_id",
                log::table(block)
            )))
            .bind(block_range(block).0)
            .bind(end)
            .fetch_all(pool)
            .await?;
            debug!(block, instances = instances.len(), "log: writing block");
            self.job = Some(Job {
                block,
                rollups_only: end <= raw_cutoff,
                instances,
                next: 0,
                frames: Vec::new(),
                has_rollups: false,
            });
        }
        let result = self.advance(pool).await;
        if result.is_err() {
            self.job = None;
            self.previous.clear();
        }
        result.map(Some)
    }

    async fn advance(&mut self, pool: &SqlitePool) -> Result<StepReport, Error> {
        let Some(job) = self.job.as_mut() else { return Ok(StepReport::default()) };
        let mut report = StepReport { block: job.block, ..StepReport::default() };
        if job.next < job.instances.len() {
            let (step_points, previous) = (self.step_points, &mut self.previous);
            let mut tx = pool.begin().await?;
            raw::with_handle(&mut tx, |db| {
                while job.next < job.instances.len() && report.points < step_points.max(1) {
                    let instance = &job.instances[job.next];
                    let (frames, scrapes, points) = write_instance(db, job, instance, previous)?;
                    report.rows += scrapes;
                    report.points += points;
                    job.frames.push((instance.clone(), frames));
                    job.next += 1;
                }
                Ok(())
            })
            .await?;
            tx.commit().await?;
            job.has_rollups |= report.rows > 0;
            return Ok(report);
        }
        self.finish(pool).await?;
        report.finished = true;
        Ok(report)
    }

    /// The block's last transaction: frames, buckets, CPU and hour rollups,
    /// the log table emptied, the horizon moved.
    async fn finish(&mut self, pool: &SqlitePool) -> Result<(), Error> {
        let Some(job) = self.job.take() else { return Ok(()) };
        let (from, to) = block_range(job.block);
        let mut tx = pool.begin().await?;
        if !job.rollups_only {
            raw::with_handle(&mut tx, |db| {
                let mut insert = db.prepare_cached(
                    "INSERT OR IGNORE INTO frames (instance_id, time, block, toff, idx) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (instance, times) in &job.frames {
                    for (idx, time) in times.iter().enumerate() {
                        let toff = super::compact::core::offset_ms(job.block, *time);
                        insert.execute(rusqlite::params![instance, time, job.block, toff, idx as i64])?;
                    }
                }
                Ok(())
            })
            .await?;
        }
        roll_up_cpu(&mut tx, 60, from, to).await?;
        roll_up_cpu(&mut tx, 300, from, to).await?;
        roll_up_status(&mut tx, from, to).await?;
        if job.has_rollups {
            sqlx::query("INSERT OR IGNORE INTO rollup_buckets (width, time) VALUES (300, ?)")
                .bind(from as i64)
                .execute(&mut *tx)
                .await?;
        }
        if (job.block + 1) % 12 == 0 {
            roll_up_hour(&mut tx, to - 3600.0).await?;
        }
        let table = log::table(job.block);
        let shared = self.pending.range(job.block + 1..).any(|later| log::table(*later) == table);
        empty_log(&mut tx, table, to, shared).await?;
        sqlx::query("INSERT OR REPLACE INTO store_state (key, value) VALUES (?, ?)")
            .bind(WRITTEN_UNTIL)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.pending.remove(&job.block);
        self.written_until = self.written_until.max(to);
        self.previous.retain(|_, (_, seen)| *seen == job.block);
        debug!(block = job.block, instances = job.frames.len(), "log: block written");
        Ok(())
    }
}

/// Empties a block's log table: whole (SQLite drops its pages at once), or,
/// when a later block shares the table (a batch of held scrapes spanning
/// more blocks than the rotation has tables), by range.
async fn empty_log(tx: &mut sqlx::SqliteConnection, table: &str, to: f64, shared: bool) -> Result<(), Error> {
    if shared {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE time < ?")))
            .bind(to)
            .execute(&mut *tx)
            .await?;
    } else {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}"))).execute(&mut *tx).await?;
    }
    Ok(())
}

/// The series of an instance that have a slot: (slot, series id, counter).
pub(super) fn slotted_series(db: &rusqlite::Connection, instance: &str) -> rusqlite::Result<Vec<(usize, i64, bool)>> {
    let mut select = db.prepare_cached(
        "SELECT se.slot, se.series_id, m.type = 'counter' FROM series se JOIN metrics m ON m.metric_id = se.metric_id
         WHERE se.instance_id = ?1 AND se.slot IS NOT NULL ORDER BY se.series_id",
    )?;
    select.query_map([instance], |row| Ok((row.get::<_, i64>(0)? as usize, row.get(1)?, row.get(2)?)))?.collect()
}

/// Each counter of `instance` with its value at the instance's last frame
/// before `time` (in the compacted tier), when that value is a number.
pub(super) fn counters_before(
    db: &rusqlite::Connection,
    instance: &str,
    time: f64,
) -> rusqlite::Result<Vec<(i64, Previous)>> {
    let frame: Option<(f64, i64, i64, Option<i64>)> = db
        .prepare_cached(
            "SELECT time, block, toff, idx FROM frames WHERE instance_id = ?1 AND time < ?2 ORDER BY time DESC LIMIT 1",
        )?
        .query_row(rusqlite::params![instance, time], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
        .optional()?;
    let Some((frame_time, block, toff, idx)) = frame else { return Ok(Vec::new()) };
    // The frame's element of the series' chunk, or (a block written before
    // chunks) the block's latest point at or before the frame.
    let (sql, at) = match idx {
        Some(idx) => (
            concat!(
                "SELECT se.series_id, (SELECT ",
                chunk_number_sql!("c.vals", "'$[' || ?3 || ']'"),
                " FROM chunks c WHERE c.id = ?2 * 4294967296 + se.series_id)
                 FROM series se JOIN metrics m ON m.metric_id = se.metric_id
                 WHERE se.instance_id = ?1 AND m.type = 'counter'"
            ),
            idx,
        ),
        None => (
            "SELECT se.series_id,
                    (SELECT CASE WHEN typeof(p.value) IN ('integer', 'real') THEN CAST(p.value AS REAL) END FROM points p
                     WHERE p.block = ?2 AND p.series_id = se.series_id AND p.toff <= ?3 ORDER BY p.toff DESC LIMIT 1)
             FROM series se JOIN metrics m ON m.metric_id = se.metric_id
             WHERE se.instance_id = ?1 AND m.type = 'counter'",
            toff,
        ),
    };
    let mut select = db.prepare_cached(sql)?;
    let rows = select.query_map(rusqlite::params![instance, block, at], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, Option<f64>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (series_id, value) = row?;
        if let Some(value) = value {
            out.push((series_id, Previous { time: frame_time, value }));
        }
    }
    Ok(out)
}

/// An instance's logged scrapes in a block's table, in time order, decoded.
pub(super) fn logged_scrapes(
    db: &rusqlite::Connection,
    table: &str,
    instance: &str,
) -> rusqlite::Result<Vec<(f64, Vec<Slot>)>> {
    let mut select =
        db.prepare_cached(&format!("SELECT time, vals FROM {table} WHERE instance_id = ?1 ORDER BY time"))?;
    let mut rows = select.query([instance])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let time: f64 = row.get(0)?;
        let text = row.get_ref(1)?.as_str()?;
        let slots = log::decode(text).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        out.push((time, slots));
    }
    Ok(out)
}

/// Writes one instance's chunks and 5-minute rollups of the job's block;
/// returns (its frames, scrapes read, values written).
fn write_instance(
    db: &rusqlite::Connection,
    job: &Job,
    instance: &str,
    previous: &mut HashMap<i64, (Previous, i64)>,
) -> rusqlite::Result<(Vec<f64>, usize, usize)> {
    let (from, to) = block_range(job.block);
    let scrapes: Vec<(f64, Vec<Slot>)> = logged_scrapes(db, log::table(job.block), instance)?
        .into_iter()
        .filter(|(time, _)| (from..to).contains(time))
        .collect();
    let frames: Vec<f64> = scrapes.iter().map(|(time, _)| *time).collect();
    let mut chunks: Vec<(i64, Value)> = Vec::new();
    let mut blocks: Vec<(i64, Bucket)> = Vec::new();
    let mut rows = Vec::with_capacity(frames.len());
    let mut column: Vec<Slot> = Vec::with_capacity(frames.len());
    let mut text = String::new();
    let mut values = 0;
    for (slot, series_id, counter) in slotted_series(db, instance)? {
        column.clear();
        column.extend(scrapes.iter().map(|(_, slots)| slots.get(slot).copied().flatten()));
        rows.clear();
        rows.extend(frames.iter().zip(&column).filter_map(|(time, value)| value.map(|v| (*time, v))));
        if rows.is_empty() {
            continue;
        }
        let before = match previous.get(&series_id) {
            Some((p, _)) => Some(*p),
            None if counter => previous_sample(db, job.block, series_id, instance)?,
            None => None,
        };
        let (bucket, last) = block_rollup(job.block, &rows, before, counter);
        if let Some(last) = last.filter(|_| counter) {
            previous.insert(series_id, (last, job.block));
        }
        if !job.rollups_only {
            chunks.push((series_id, chunk(&column, &mut text)));
            values += rows.len();
        }
        blocks.extend(bucket.map(|b| (series_id, b)));
    }
    insert_chunks(db, job.block, &chunks)?;
    insert_buckets(db, "rollup_5m", &blocks)?;
    Ok((frames, scrapes.len(), values))
}

/// The key of a series' chunk of `block`.
pub(super) fn chunk_id(block: i64, series_id: i64) -> i64 {
    (block << 32) + series_id
}

/// A series' chunk: its one value when it had that value at every frame
/// (NaN: NULL), else its values by frame as the scrape log spells them.
fn chunk(column: &[Slot], text: &mut String) -> Value {
    match column.split_first() {
        Some((Some(first), rest)) if rest.iter().all(|v| v.is_some_and(|v| same_value(v, *first))) => {
            Number(*first).value()
        }
        _ => {
            log::encode(column, text);
            Value::Text(text.clone())
        }
    }
}

fn insert_chunks(db: &rusqlite::Connection, block: i64, chunks: &[(i64, Value)]) -> rusqlite::Result<()> {
    let mut insert = db.prepare_cached("INSERT OR REPLACE INTO chunks (id, vals) VALUES (?1, ?2)")?;
    for (series_id, vals) in chunks {
        insert.execute(rusqlite::params![chunk_id(block, *series_id), vals])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the `metric_samples` view reads from a chunk at each frame index
    /// (None: no row), through SQLite.
    fn read_back(column: &[Slot]) -> Vec<Option<Option<f64>>> {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch("CREATE TABLE chunks (id INTEGER PRIMARY KEY, vals)").unwrap();
        insert_chunks(&db, 5_900_000, &[(77, chunk(column, &mut String::new()))]).unwrap();
        (0..column.len() as i64)
            .map(|idx| {
                db.query_row(
                    "SELECT CASE WHEN typeof(c.vals) = 'text' THEN CAST(json_extract(c.vals, '$[' || ?1 || ']') AS REAL)
                                 ELSE CAST(c.vals AS REAL) END
                     FROM chunks c WHERE c.id = ?2 * 4294967296 + ?3
                       AND (typeof(c.vals) <> 'text' OR json_type(c.vals, '$[' || ?1 || ']') <> 'false')",
                    rusqlite::params![idx, 5_900_000_i64, 77_i64],
                    |r| r.get::<_, Option<f64>>(0),
                )
                .optional()
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_chunk_reads_back_every_frame_as_written() {
        let cases: [&[Slot]; 6] = [
            &[Some(3.0), Some(3.0), Some(3.0)],
            &[Some(f64::NAN), Some(f64::NAN)],
            &[Some(1.5), Some(2.5), None, Some(f64::NAN), Some(1e300)],
            &[None, Some(4.0), Some(4.0)],
            &[Some(4.0), Some(4.0), None],
            &[Some(0.1)],
        ];
        for column in cases {
            let expected: Vec<Option<Option<f64>>> =
                column.iter().map(|v| v.map(|v| if v.is_nan() { None } else { Some(v) })).collect();
            assert_eq!(read_back(column), expected, "{column:?}");
        }
    }

    #[test]
    fn a_series_that_kept_one_value_is_that_value_alone() {
        assert_eq!(chunk(&[Some(7.0); 20], &mut String::new()), Value::Integer(7));
        assert_eq!(chunk(&[Some(f64::NAN); 3], &mut String::new()), Value::Null);
        assert!(matches!(chunk(&[Some(7.0), Some(7.5)], &mut String::new()), Value::Text(_)));
        assert!(matches!(chunk(&[Some(7.0), None], &mut String::new()), Value::Text(_)), "absent once: an array");
        assert!(matches!(chunk(&[Some(0.0), Some(-0.0)], &mut String::new()), Value::Text(_)));
    }
}
