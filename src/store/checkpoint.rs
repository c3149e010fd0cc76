//! WAL checkpoints off the writer's path. The writer's connection does not
//! checkpoint (`wal_autocheckpoint = 0` once the checkpointer runs): a
//! checkpoint after a reader pinned the WAL for a minute copies everything
//! written meanwhile, which inside a commit would stall ingest. A task with its
//! own connection runs a PASSIVE checkpoint every interval instead: it never
//! waits for readers or the writer, copies what no reader still needs, and once
//! the WAL is fully copied the writer's next commit starts it over, truncated
//! back to `journal_size_limit`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row, SqliteConnection};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::reminder::Notice;

use super::writer::WriterStats;

/// A reader holding the WAL back longer than this is reported (once).
const PINNED_REPORT_AFTER: Duration = Duration::from_secs(30);

/// Runs checkpoints of the database at `path` every `interval` until `shutdown`.
pub async fn run(path: PathBuf, interval: Duration, stats: Arc<WriterStats>, shutdown: CancellationToken) {
    let mut conn = match connect(&path).await {
        Ok(conn) => conn,
        Err(e) => {
            warn!(error = %e, "WAL checkpointer: cannot open the database; the WAL is checkpointed only at exit");
            return;
        }
    };
    let mut pinned_since: Option<Instant> = None;
    let mut reported = false;
    let mut failing = crate::reminder::Reminder::default();
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let started = Instant::now();
        match checkpoint(&mut conn).await {
            Ok((log, copied)) => {
                if let Some(failing_for) = failing.succeeded(crate::clock::now_seconds()) {
                    info!(failing_for_seconds = failing_for.round(), "WAL checkpoints work again");
                }
                stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                stats.longest_checkpoint_micros.fetch_max(micros, Ordering::Relaxed);
                stats.wal_bytes.store(wal_size(&path), Ordering::Relaxed);
                if copied < log {
                    let since = *pinned_since.get_or_insert_with(Instant::now);
                    if !reported && since.elapsed() >= PINNED_REPORT_AFTER {
                        info!(
                            frames = log,
                            copied, "WAL checkpoint held back by a long read transaction; the WAL grows until it ends"
                        );
                        reported = true;
                    }
                } else {
                    if reported {
                        info!("WAL checkpoint caught up");
                    }
                    pinned_since = None;
                    reported = false;
                }
            }
            Err(e) => match failing.failed(crate::clock::now_seconds(), &e.to_string()) {
                Notice::New => {
                    warn!(error = %e, "WAL checkpoint failed; retried every interval (the WAL grows meanwhile)")
                }
                Notice::Reminder { failing_for } => warn!(error = %e, failing_for_seconds = failing_for.round(),
                    "WAL checkpoints still failing; the WAL grows until one succeeds"),
                Notice::Quiet => debug!(error = %e, "WAL checkpoint failed again"),
            },
        }
    }
}

async fn connect(path: &Path) -> Result<SqliteConnection, sqlx::Error> {
    SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .busy_timeout(Duration::from_millis(100))
        .pragma("journal_size_limit", super::JOURNAL_SIZE_LIMIT.to_string())
        .connect()
        .await
}

/// A PASSIVE checkpoint: (frames in the WAL, frames copied into the database).
async fn checkpoint(conn: &mut SqliteConnection) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut *conn).await?;
    Ok((row.try_get(1)?, row.try_get(2)?))
}

/// The WAL file's size, bytes.
pub fn wal_size(path: &Path) -> u64 {
    std::fs::metadata(format!("{}-wal", path.display())).map_or(0, |m| m.len())
}
