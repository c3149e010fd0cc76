//! The free-space check before a migration.

use std::path::Path;

use sqlx::SqlitePool;

use super::Error;
use super::compact::core::BLOCK_SECONDS;

/// Headroom kept whatever the estimate: the WAL of a migration's DDL, and the
/// page cache spilling.
const HEADROOM: u64 = 64 << 20;

/// Refuses to start a migration without room for it. The migrations
/// themselves only change the schema; what needs space is compacting the
/// history after: one block at a time, each written (points, rollups, WAL)
/// before its rows are freed, so at most about twice the largest block.
///
/// # Errors
/// [`Error::DiskSpace`]; [`Error::Sql`].
pub(super) async fn check_before_migration(pool: &SqlitePool, path: &Path) -> Result<(), Error> {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let span: Option<(f64, f64)> = sqlx::query_as(
        "SELECT min(lo), max(hi) FROM (SELECT (SELECT min(time) FROM samples s WHERE s.metric_id = m.metric_id) AS lo,
                                              (SELECT max(time) FROM samples s WHERE s.metric_id = m.metric_id) AS hi
                                       FROM metrics m)",
    )
    .fetch_optional(pool)
    .await?
    .and_then(|(lo, hi): (Option<f64>, Option<f64>)| lo.zip(hi));
    let blocks = span.map_or(1.0, |(lo, hi)| ((hi - lo) / BLOCK_SECONDS as f64).ceil().max(1.0));
    let needed = needed_bytes(size, blocks);
    let Some(available) = available_bytes(path) else { return Ok(()) };
    tracing::info!(
        free_mib = available >> 20,
        needed_mib = needed >> 20,
        database_mib = size >> 20,
        "database: free space checked before migrating"
    );
    if available < needed {
        return Err(Error::DiskSpace {
            path: path.to_path_buf(),
            available_mib: available >> 20,
            needed_mib: needed.div_ceil(1 << 20),
        });
    }
    Ok(())
}

/// What migrating a database of `size` bytes spanning `blocks` blocks needs.
fn needed_bytes(size: u64, blocks: f64) -> u64 {
    HEADROOM + (2.0 * size as f64 / blocks.max(1.0)) as u64
}

/// Bytes an unprivileged writer may still use on the file's filesystem.
fn available_bytes(path: &Path) -> Option<u64> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_twice_a_block_plus_headroom() {
        // 60 GB over 15 days (4,320 blocks): ~28 MB a block.
        let needed = needed_bytes(60_000_000_000, 4320.0);
        assert_eq!(needed, HEADROOM + 27_777_777);
        assert_eq!(needed_bytes(1 << 20, 0.0), HEADROOM + (2 << 20), "a database within one block");
    }

    #[test]
    fn free_space_is_read_from_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available_bytes(&dir.path().join("x.db")).is_some_and(|b| b > 0));
    }
}
