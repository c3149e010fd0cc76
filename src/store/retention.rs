//! Retention per tier, in small steps: each step deletes at most
//! [`CHUNK_ROWS`] rows of one table in its own transaction, so a sweep never
//! holds the writer for long, however much is due.

use std::time::Duration;

use sqlx::SqlitePool;

use super::Error;
use super::compact::core::BLOCK_SECONDS;

/// Rows one step deletes at most.
pub const CHUNK_ROWS: i64 = 20_000;

/// How long each tier is kept: the configuration's value, read here.
pub use crate::config::Retention;

/// The tables retention trims in chunks, each with its primary key, the
/// column compared with the cutoff, and its tier.
#[derive(Debug, Clone, Copy)]
struct Target {
    table: &'static str,
    /// The primary key (`rowid` for rowid tables).
    key: &'static str,
    /// Compared with the cutoff; in blocks for `points`, chunk ids for `chunks`.
    time: &'static str,
    tier: Tier,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Raw,
    RawBlocks,
    /// `chunks`, keyed by block × 2^32 + series id.
    RawChunks,
    Minute,
    FiveMinutes,
    Hour,
}

const TARGETS: [Target; 16] = [
    Target { table: "chunks", key: "id", time: "id", tier: Tier::RawChunks },
    Target { table: "points", key: "block, series_id, toff", time: "block", tier: Tier::RawBlocks },
    Target { table: "cpu_samples", key: "time, instance_id", time: "time", tier: Tier::Raw },
    Target { table: "rollup_1m", key: "time, series_id", time: "time", tier: Tier::Minute },
    Target { table: "cpu_rollup_1m", key: "time, instance_id", time: "time", tier: Tier::Minute },
    Target { table: "scrape_status", key: "time, instance_id", time: "time", tier: Tier::Minute },
    Target { table: "alb_rounds", key: "time, target_group", time: "time", tier: Tier::Minute },
    Target { table: "asg_membership", key: "time, asg_name", time: "time", tier: Tier::Minute },
    Target { table: "events", key: "rowid", time: "time", tier: Tier::Minute },
    Target { table: "identity_issues", key: "time, path", time: "time", tier: Tier::Minute },
    Target { table: "self_metrics", key: "time, name", time: "time", tier: Tier::Minute },
    Target { table: "rollup_5m", key: "time, series_id", time: "time", tier: Tier::FiveMinutes },
    Target { table: "cpu_rollup_5m", key: "time, instance_id", time: "time", tier: Tier::FiveMinutes },
    Target { table: "scrape_status_5m", key: "instance_id, time", time: "time", tier: Tier::FiveMinutes },
    Target { table: "rollup_1h", key: "time, series_id", time: "time", tier: Tier::Hour },
    Target { table: "cpu_rollup_1h", key: "time, instance_id", time: "time", tier: Tier::Hour },
];

/// The cutoffs of one sweep, epoch seconds, from the newest data written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cutoffs {
    raw: f64,
    minute: f64,
    five_minutes: f64,
    hour: f64,
}

impl Cutoffs {
    /// Cutoffs `retention` before `newest`.
    pub fn new(retention: &Retention, newest: f64) -> Self {
        let before = |d: Duration| newest - d.as_secs_f64();
        Self {
            raw: before(retention.raw),
            minute: before(retention.minute),
            five_minutes: before(retention.five_minutes),
            hour: before(retention.hour),
        }
    }

    /// Raw data ending before this is gone (compaction then writes rollups only).
    pub fn raw(&self) -> f64 {
        self.raw
    }

    fn of(&self, tier: Tier) -> f64 {
        match tier {
            Tier::Raw => self.raw,
            // A block goes whole once its end is past the cutoff.
            Tier::RawBlocks => (self.raw / BLOCK_SECONDS as f64).floor(),
            // The first chunk of the first block kept; exact in an f64 (a
            // block number, < 2^24, times 2^32).
            Tier::RawChunks => super::blocks::chunk_id(self.of(Tier::RawBlocks) as i64, 0) as f64,
            Tier::Minute => self.minute,
            Tier::FiveMinutes => self.five_minutes,
            Tier::Hour => self.hour,
        }
    }
}

/// Deletes one chunk from the first table that has rows past its cutoff;
/// returns the rows deleted, 0 when the sweep is complete. Frames go with
/// their instance's chunks, `rollup_buckets` per width.
///
/// # Errors
/// [`Error::Sql`].
pub async fn step(pool: &SqlitePool, cutoffs: &Cutoffs) -> Result<u64, Error> {
    for target in TARGETS {
        let deleted = delete_chunk(pool, target, cutoffs.of(target.tier)).await?;
        if deleted > 0 {
            return Ok(deleted);
        }
    }
    let deleted = trim_buckets(pool, cutoffs).await?;
    if deleted > 0 {
        return Ok(deleted);
    }
    trim_frames(pool, cutoffs.raw).await
}

async fn delete_chunk(pool: &SqlitePool, target: Target, cutoff: f64) -> Result<u64, Error> {
    let Target { table, key, time, .. } = target;
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE ({key}) IN
           (SELECT {key} FROM {table} WHERE {time} < ?1 ORDER BY {key} LIMIT {CHUNK_ROWS})"
    )))
    .bind(cutoff)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

async fn trim_buckets(pool: &SqlitePool, cutoffs: &Cutoffs) -> Result<u64, Error> {
    let mut deleted = 0;
    for (width, tier) in [(60, Tier::Minute), (300, Tier::FiveMinutes), (3600, Tier::Hour)] {
        deleted += sqlx::query("DELETE FROM rollup_buckets WHERE width = ? AND time < ?")
            .bind(width)
            .bind(cutoffs.of(tier))
            .execute(pool)
            .await?
            .rows_affected();
    }
    Ok(deleted)
}

/// Frames past raw retention, instance by instance (each a key range).
async fn trim_frames(pool: &SqlitePool, cutoff: f64) -> Result<u64, Error> {
    let instances: Vec<String> = sqlx::query_scalar("SELECT instance_id FROM instances").fetch_all(pool).await?;
    let mut deleted = 0;
    for instance in instances {
        deleted += sqlx::query("DELETE FROM frames WHERE instance_id = ? AND time < ?")
            .bind(instance)
            .bind(cutoff)
            .execute(pool)
            .await?
            .rows_affected();
    }
    Ok(deleted)
}
