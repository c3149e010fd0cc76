//! Issue #22, goal 6: `kill -9` at arbitrary moments of the v3 write path
//! (a scrape logged, a minute closed, a block's points written in steps, a
//! block's last transaction) loses nothing committed and leaves change points
//! and rollups exactly as an uninterrupted run over the same recorded
//! batches writes them.
//!
//! The writer is this test binary run again as a child process (the
//! `WRITER_ENV` variable set): it opens the database, writes every batch of the
//! recorded history newer than what the database holds, with upkeep steps
//! between batches, as the writer task drives the store. The parent kills it
//! with SIGKILL after a random delay, again and again, until a run completes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleetscrape::store::{Maintenance, Retention, Store};

#[path = "common/db_rows.rs"]
mod db_rows;
#[path = "common/history.rs"]
mod history;
use history::history;

const WRITER_ENV: &str = "FLEETSCRAPE_KILL_TEST_DB";

/// Writes what `db` does not hold yet of the history, with upkeep between batches.
async fn write_history(db: &Path) {
    let mut store = Store::open(db).await.unwrap();
    store.set_compaction_step_rows(500);
    for batch in history() {
        if batch.scrapes[0].time <= store.newest() {
            continue;
        }
        store.write(&batch).await.unwrap();
        while !matches!(store.maintain(&Retention::DEFAULT, 30.0, false).await.unwrap(), Maintenance::Idle) {}
    }
    store.close().await;
}

/// What the compacted tier, the rollups and the views hold.
fn state(db: &Path) -> Vec<String> {
    db_rows::rows(
        db,
        &[
            "SELECT block, series_id, toff, quote(value) FROM points ORDER BY 1, 2, 3",
            "SELECT id, quote(vals) FROM chunks ORDER BY 1",
            "SELECT instance_id, time, block, toff, idx FROM frames ORDER BY 1, 2",
            "SELECT time, series_id, count, quote(sum), quote(min), quote(max), quote(last), quote(increase), quote(span) FROM rollup_1m ORDER BY 1, 2",
            "SELECT time, series_id, count, quote(sum), quote(min), quote(max), quote(last), quote(increase), quote(span) FROM rollup_5m ORDER BY 1, 2",
            "SELECT width, time FROM rollup_buckets ORDER BY 1, 2",
            "SELECT time, instance_id, metric, labels, quote(value) FROM metric_samples ORDER BY 1, 2, 3, 4",
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_anywhere_in_the_write_path_changes_no_point_or_rollup() {
    if let Ok(db) = std::env::var(WRITER_ENV) {
        // The child: write, and be killed.
        write_history(Path::new(&db)).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.db");
    let started = std::time::Instant::now();
    write_history(&reference).await;
    // Kills come soon after each start (each run resumes where the last was
    // killed), so they land all along the history.
    let run_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX).max(20);
    let expected = state(&reference);
    assert!(expected.len() > 10_000, "{} rows", expected.len());

    let killed = dir.path().join("killed.db");
    let exe = std::env::current_exe().unwrap();
    let mut kills = 0;
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= 200, "the writer never finished after {kills} kills");
        let mut child = Command::new(&exe)
            .args(["--exact", "kill_9_anywhere_in_the_write_path_changes_no_point_or_rollup", "--nocapture"])
            .env(WRITER_ENV, &killed)
            .spawn()
            .unwrap();
        // Kills land in the open, the writes, the minutes and the blocks alike.
        std::thread::sleep(Duration::from_millis(fastrand::u64(run_ms / 20..run_ms / 3)));
        if child.try_wait().unwrap().is_some() {
            assert!(child.wait().unwrap().success(), "the writer failed (run {runs})");
            break;
        }
        assert!(Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap().success());
        let _ = child.wait();
        kills += 1;
        let integrity: String = rusqlite::Connection::open(&killed)
            .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
            .unwrap_or_else(|_| "ok".into());
        assert_eq!(integrity, "ok", "after kill {kills}");
    }
    eprintln!("writer killed {kills} times before a run completed");
    assert!(kills >= 3, "only {kills} kills: the history is written too fast to be interrupted");
    let got = state(&killed);
    if got != expected {
        let extra: Vec<&String> = got.iter().filter(|r| !expected.contains(r)).take(5).collect();
        let missing: Vec<&String> = expected.iter().filter(|r| !got.contains(r)).take(5).collect();
        panic!("after {kills} kills: extra {extra:?}, missing {missing:?}");
    }
}
