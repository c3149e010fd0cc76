//! Writes `tests/data/db/v0008.sqlite`: a database of schema 0008 (store v3
//! before chunks, blocks written as change points), made by the code of that
//! schema from the first 84 batches (21 minutes) of `tests/common/history.rs`,
//! with the writer's upkeep between batches: four blocks written as points and
//! frames, the first minute of the fifth in the scrape log and open in the
//! head (so a restart resumes its counters from the points).
//! `tests/migration.rs` goes on from there with today's code.
//!
//! Made at commit a245f76 (the last of schema 0008):
//!
//!     git worktree add /tmp/v0008 a245f76
//!     mkdir /tmp/v0008/examples
//!     cp tests/data/db/v0008.rs tests/common/history.rs /tmp/v0008/examples/
//!     cd /tmp/v0008 && cargo run --example v0008 -- "$OLDPWD/tests/data/db/v0008.sqlite"

#[path = "history.rs"]
mod history;

use fleetscrape::store::{Maintenance, Retention, Store};

#[tokio::main]
async fn main() {
    let path = std::env::args().nth(1).expect("usage: v0008 OUT.sqlite");
    let _ = std::fs::remove_file(&path);
    let mut store = Store::open(std::path::Path::new(&path)).await.expect("open");
    store.set_compaction_step_rows(500);
    for batch in history::history().into_iter().take(84) {
        store.write(&batch).await.expect("write");
        while !matches!(store.maintain(&Retention::DEFAULT, 30.0, false).await.expect("upkeep"), Maintenance::Idle) {}
    }
    store.close().await;
    // One file: the WAL checkpointed into it.
    let conn = rusqlite::Connection::open(&path).expect("reopen");
    conn.pragma_update(None, "journal_mode", "DELETE").expect("leave WAL mode");
}
