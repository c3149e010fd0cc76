//! The SQLite store: schema (`migrations/`, embedded), the write path, and
//! retention. The SQL interface it offers is documented in `docs/sql.md`; the
//! layout and write path are explained in `docs/storage.md`.
//!
//! Writes go through one connection (SQLite has one writer) in one
//! transaction per [`Batch`]: each scrape becomes one row of the scrape log
//! ([`log`]), and the 1-minute rollups of the minutes it closes ([`head`]) are
//! written with it; [`blocks`] later writes each 5-minute block from the log
//! as change points. Metric and series ids are interned in memory, and a
//! scrape laid out as its instance's last resolves without lookups.

pub mod admission;
pub mod blocks;
mod checkpoint;
pub mod compact;
mod cpu;
mod head;
pub mod identify;
mod intern;
mod layout;
pub mod lock;
pub mod log;
mod raw;
pub mod retention;
mod space;
pub mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::record::FailureReason;

pub use crate::record::{
    AlbRoundRecord, Batch, Component, ComponentRecord, EventKind, EventRecord, InstanceRecord, MembershipRecord,
    SampleRecord, ScrapeRecord, SelfMetricRecord, SeriesList, StatusRecord,
};
use blocks::BlockWriter;
use compact::Compactor;
use compact::core::block_of;
pub use cpu::CpuTracker;
use head::{Closed, Head};
use intern::Interner;
pub use retention::Retention;
pub use writer::{WriterConfig, WriterHandle, spawn_writer};

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Seconds after a minute's end that an instance which has not been scraped
/// since has its minute closed and written (its 1-minute rollups; the CPU
/// rollups of every instance): less than the default compaction delay, so
/// a block's minutes are written before the block.
const MINUTE_GRACE: f64 = 30.0;

/// The size the WAL file is truncated back to after a checkpoint, bytes.
const JOURNAL_SIZE_LIMIT: u64 = 8 << 20;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database directory could not be created.
    #[error("cannot create the database directory {}: {source}", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The path is not a database file (a directory, unreadable, not SQLite).
    #[error(transparent)]
    Path(#[from] identify::PathError),
    /// The database belongs to something else: fleetscrape adds its schema
    /// only to its own databases, a new file, or an empty one.
    #[error(
        "{} is not a fleetscrape database (it has tables {}): point storage.path at a new file",
        path.display(),
        tables.join(", ")
    )]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// Its tables.
        tables: Vec<String>,
    },
    /// Opening the database or applying the migrations failed.
    #[error("cannot open the database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database opens but this process's user cannot write it (a file
    /// or directory owned by another user, a read-only mount).
    #[error(
        "the database {} cannot be written by this user (uid {uid}; the file belongs to uid {owner}, mode {mode:o}): {source}; \
         make it writable: chown the file, its directory and its -wal and -shm files to the user fleetscrape runs as \
         (the image runs as 10001:0), or give group 0 write access (chmod g+w), or remount read-write",
        path.display()
    )]
    ReadOnly {
        /// The database file.
        path: PathBuf,
        /// This process's user.
        uid: u32,
        /// The file's owner.
        owner: u32,
        /// The file's permission bits.
        mode: u32,
        /// SQLite's refusal.
        source: sqlx::Error,
    },
    /// Not enough free disk space to migrate the database safely.
    #[error(
        "not enough free space to migrate {}: {available_mib} MiB free, {needed_mib} MiB needed (free some space, or move the database)",
        path.display()
    )]
    DiskSpace {
        /// The database file.
        path: PathBuf,
        /// Free space, MiB.
        available_mib: u64,
        /// What the migration may need, MiB.
        needed_mib: u64,
    },
    /// A statement failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// A bulk statement (on the connection's own handle) failed.
    #[error("database error: {0}")]
    Bulk(#[from] rusqlite::Error),
}

/// What one [`Store::write`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Samples inserted.
    pub samples: usize,
    /// New series created.
    pub new_series: usize,
    /// CPU utilization rows written.
    pub cpu_rows: usize,
    /// Samples dropped because their block was already compacted.
    pub late_samples: usize,
}

/// What one [`Store::maintain`] step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maintenance {
    /// Nothing was due.
    Idle,
    /// A compaction step.
    Compacted(compact::StepReport),
    /// A retention step deleted this many rows.
    Retained(u64),
}

/// The database, open for writing.
#[derive(Debug)]
pub struct Store {
    pool: SqlitePool,
    /// What the connection is opened with, for [`Store::reset_connection`].
    options: SqliteConnectOptions,
    /// Tests: while set, every write fails as a full disk would.
    #[cfg(test)]
    refuse_writes: std::sync::Arc<std::sync::atomic::AtomicBool>,
    path: PathBuf,
    interner: Interner,
    cpu: CpuTracker,
    /// Compacts what a v2 database left in `samples`.
    compactor: Compactor,
    /// Writes the scrape log's blocks as the compacted tier.
    blocks: BlockWriter,
    /// The open minutes, for the 1-minute rollups at ingest.
    head: Head,
    /// Each instance's last scrape as resolved: the next one with the same
    /// samples resolves without lookups.
    layouts: layout::Layouts,
    /// False after a failed write: the head is rebuilt from the log first.
    head_ready: bool,
    /// CPU 1-minute rollups are written up to here (epoch seconds).
    cpu_minutes_until: f64,
    /// The newest sample time written: the store's clock for compaction and
    /// retention, so that they follow the data (and simulated days), not the wall.
    newest: f64,
}

impl Store {
    /// Opens (creating if needed) the database at `path` in WAL mode and
    /// applies the migrations.
    ///
    /// # Errors
    /// [`Error`] when the directory or the database cannot be created or migrated.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_directory(dir)?;
        }
        if let identify::Contents::Foreign(tables) = identify::identify(path).await? {
            return Err(Error::Foreign { path: path.to_path_buf(), tables });
        }
        let open_error =
            |source: Box<dyn std::error::Error + Send + Sync>| Error::Open { path: path.to_path_buf(), source };
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|e| open_error(e.into()))?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode: a process crash loses nothing committed; a
            // power loss may lose the last commits, never corrupts.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            // 16 MiB: ingest touches the tails of ~400 metric ranges and the
            // interior pages; compaction reads a block once, from the OS cache.
            // A larger cache only grows the resident set.
            .pragma("cache_size", "-16384")
            // The WAL file is truncated back to this after a checkpoint, so a
            // burst (a reader pinning it, a compaction) does not stay on disk.
            .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string())
            .pragma("temp_store", "memory");
        let pool = connect(&options).await.map_err(|e| open_error(e.into()))?;
        probe_write(&pool, path).await?;
        migrate(&pool, path).await?;
        share_with_group(path);
        let interner = Interner::load(&pool).await?;
        let compactor = Compactor::load(&pool).await?;
        let blocks = BlockWriter::load(&pool).await?;
        let newest = newest_time(&pool).await?.max(blocks.newest_loaded().unwrap_or(f64::NEG_INFINITY));
        let mut store = Self {
            pool,
            options,
            #[cfg(test)]
            refuse_writes: std::sync::Arc::default(),
            path: path.to_path_buf(),
            interner,
            cpu: CpuTracker::default(),
            compactor,
            blocks,
            head: Head::default(),
            layouts: layout::Layouts::default(),
            head_ready: false,
            cpu_minutes_until: f64::NEG_INFINITY,
            newest,
        };
        store.rebuild_head().await?;
        Ok(store)
    }

    /// Rebuilds the open minutes from the scrape log (at start, and after a
    /// failed write): every minute before each instance's last one is on disk.
    async fn rebuild_head(&mut self) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let mut head = Head::default();
        let mut conn = self.pool.acquire().await?;
        let scrapes = raw::with_handle(&mut conn, |db| {
            let mut instances = std::collections::BTreeSet::new();
            for table in log::ALL {
                let mut select = db.prepare(&format!("SELECT DISTINCT instance_id FROM {table}"))?;
                for instance in select.query_map([], |row| row.get::<_, String>(0))? {
                    instances.insert(instance?);
                }
            }
            let mut scrapes = 0;
            for instance in &instances {
                let entry = head.instance(instance);
                let described = blocks::slotted_series(db, instance)?;
                for &(slot, series_id, counter) in &described {
                    entry.describe(u32::try_from(slot).unwrap_or(u32::MAX), series_id, counter);
                }
                let mut logged = Vec::new();
                for table in log::ALL {
                    logged.extend(blocks::logged_scrapes(db, table, instance)?);
                }
                logged.sort_by(|a, b| a.0.total_cmp(&b.0));
                let Some(first) = logged.first().map(|(time, _)| *time) else { continue };
                // Counters go on from their last value before the log, in the compacted tier.
                let slot_of: crate::labels::FastMap<i64, usize> =
                    described.iter().map(|&(slot, series_id, _)| (series_id, slot)).collect();
                for (series_id, previous) in blocks::counters_before(db, instance, first)? {
                    if let Some(&slot) = slot_of.get(&series_id) {
                        entry.resume(u32::try_from(slot).unwrap_or(u32::MAX), previous);
                    }
                }
                let mut written = Vec::new();
                for (time, slots) in &logged {
                    entry.add(*time, slots, &mut written);
                }
                scrapes += logged.len();
            }
            Ok(scrapes)
        })
        .await?;
        drop(conn);
        if scrapes > 0 {
            tracing::info!(
                instances = head.instances(),
                scrapes,
                seconds = started.elapsed().as_secs_f64(),
                "database: open minutes rebuilt from the scrape log"
            );
        }
        self.head = head;
        self.head_ready = true;
        Ok(())
    }

    /// Hands WAL checkpoints to another connection (the writer's
    /// checkpointer): `wal_autocheckpoint = 0` on this one, now and after a
    /// [`Store::reset_connection`].
    ///
    /// # Errors
    /// [`Error::Sql`].
    pub async fn disable_auto_checkpoints(&mut self) -> Result<(), Error> {
        self.options = self.options.clone().pragma("wal_autocheckpoint", "0");
        sqlx::query("PRAGMA wal_autocheckpoint = 0").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the connection and opens a new one. After a failed write
    /// (SQLITE_FULL, an I/O error) SQLite may have rolled the transaction
    /// back on its own; sqlx's ROLLBACK then fails and it goes on counting a
    /// transaction open, so every later BEGIN would become a SAVEPOINT and
    /// nothing would reach the file. A new connection starts clean.
    ///
    /// # Errors
    /// [`Error::Open`] when the database cannot be opened again (it is
    /// retried at the next write).
    pub async fn reset_connection(&mut self) -> Result<(), Error> {
        self.pool.close().await;
        self.pool =
            connect(&self.options).await.map_err(|e| Error::Open { path: self.path.clone(), source: e.into() })?;
        Ok(())
    }

    /// Sets the rows a compaction step reads before it yields (default
    /// [`compact::STEP_ROWS`]): smaller steps, shorter writer pauses.
    pub fn set_compaction_step_rows(&mut self, rows: usize) {
        self.compactor.set_step_rows(rows);
        self.blocks.set_step_points(rows);
    }

    /// Sets the size the WAL is truncated back to after a checkpoint (default 8 MiB).
    ///
    /// # Errors
    /// [`Error::Sql`].
    pub async fn set_journal_size_limit(&self, bytes: u64) -> Result<(), Error> {
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA journal_size_limit = {bytes}"))).execute(&self.pool).await?;
        Ok(())
    }

    /// The newest sample time written, epoch seconds (−∞ for an empty store).
    pub fn newest(&self) -> f64 {
        self.newest
    }

    /// One bounded step of upkeep: a compaction step if a block is due
    /// (`delay` seconds after its end, by the newest data), else a retention
    /// step if `sweep` is set.
    ///
    /// # Errors
    /// [`Error::Sql`]; a failed step is retried from a consistent state.
    pub async fn maintain(&mut self, retention: &Retention, delay: f64, sweep: bool) -> Result<Maintenance, Error> {
        let cutoffs = retention::Cutoffs::new(retention, self.newest);
        // Minutes close `MINUTE_GRACE` after they end, so that a late scrape
        // still counts; a block is due `delay` after its end. A delay below
        // the grace (a caller compacting everything now) would compact
        // minutes the head still holds open: the log emptied, they would
        // never be written. The minutes of every block due are closed first
        // (they end by the block's end, at most `newest - delay`).
        let close_before = (self.newest - MINUTE_GRACE.min(delay)).min(self.newest + 60.0);
        self.close_minutes(close_before).await?;
        if let Some(report) = self.blocks.step(&self.pool, self.newest, delay, cutoffs.raw()).await? {
            return Ok(Maintenance::Compacted(report));
        }
        if let Some(report) = self.compactor.step(&self.pool, self.newest, delay, cutoffs.raw()).await? {
            return Ok(Maintenance::Compacted(report));
        }
        if sweep && self.newest.is_finite() {
            let deleted = retention::step(&self.pool, &cutoffs).await?;
            if deleted == 0 {
                self.forget_gone_instances(self.newest - retention.longest().as_secs_f64()).await?;
            }
            return Ok(Maintenance::Retained(deleted));
        }
        Ok(Maintenance::Idle)
    }

    /// What the store holds in memory per instance, for the churn tests:
    /// (instances whose series are loaded, instances the CPU tracker follows,
    /// series the compactor remembers).
    pub fn memory_footprint(&self) -> (usize, usize, usize) {
        (
            self.interner.loaded_instances().max(self.head.instances()),
            self.cpu.instances(),
            self.compactor.remembered_series() + self.blocks.remembered_series(),
        )
    }

    /// Closes the minutes that ended before `before` and have not been
    /// closed by a later scrape (instances that stopped answering), and
    /// writes them with the CPU 1-minute rollups of the minutes ended.
    async fn close_minutes(&mut self, before: f64) -> Result<(), Error> {
        if !self.head_ready || !before.is_finite() {
            return Ok(());
        }
        let minutes_end = (before / 60.0).floor() * 60.0;
        let cpu_from = if self.cpu_minutes_until.is_finite() { self.cpu_minutes_until } else { minutes_end - 600.0 };
        let mut closed = Vec::new();
        self.head.close_idle(before, &mut closed);
        if closed.is_empty() && cpu_from >= minutes_end {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        raw::with_handle(&mut tx, |db| write_minutes(db, &closed)).await?;
        if cpu_from < minutes_end {
            compact::roll_up_cpu(&mut tx, 60, cpu_from, minutes_end).await?;
        }
        tx.commit().await?;
        self.cpu_minutes_until = minutes_end;
        Ok(())
    }

    /// Blocks due for compaction, for progress reports.
    ///
    /// # Errors
    /// [`Error::Sql`].
    pub async fn compaction_backlog(&self) -> Result<i64, Error> {
        let logged = i64::try_from(self.blocks.backlog()).unwrap_or(i64::MAX);
        Ok(self.compactor.backlog(&self.pool, self.newest).await? + (logged - 2).max(0))
    }

    /// Deletes the series and the row of every instance last seen before
    /// `cutoff`: their data is past every tier's retention, and ASG churn
    /// would otherwise grow the series table and the interner forever.
    async fn forget_gone_instances(&mut self, cutoff: f64) -> Result<(), Error> {
        let gone: Vec<String> = sqlx::query_scalar("SELECT instance_id FROM instances WHERE last_seen < ?")
            .bind(cutoff)
            .fetch_all(&self.pool)
            .await?;
        for instance in gone {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM series WHERE instance_id = ?").bind(&instance).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM frames WHERE instance_id = ?").bind(&instance).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM instances WHERE instance_id = ?").bind(&instance).execute(&mut *tx).await?;
            tx.commit().await?;
            self.interner.forget_instance(&instance);
            self.layouts.forget(&instance);
            self.head.forget(&instance);
            self.cpu.forget(&instance);
            tracing::info!(instance = %instance, "retention: instance gone past every tier, its series deleted");
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A pool for reads (tests, reports); writes go through [`Store::write`].
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Writes a batch in one transaction, computing CPU utilization on the way.
    ///
    /// # Errors
    /// [`Error::Sql`]; the transaction is rolled back, the head is rebuilt from
    /// the log before the next write, and the interner forgets
    /// ids it created in it.
    pub async fn write(&mut self, batch: &Batch) -> Result<WriteStats, Error> {
        #[cfg(test)]
        if self.refuse_writes.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Sql(sqlx::Error::Protocol("database or disk is full (test)".into())));
        }
        if !self.head_ready {
            self.rebuild_head().await?;
        }
        let mut tx = self.pool.begin().await?;
        self.interner.begin();
        let horizon = self.compactor.compacted_until().max(self.blocks.horizon());
        let result = match self.write_in(&mut tx, batch, horizon).await {
            Ok(stats) => tx.commit().await.map(|()| stats).map_err(Error::from),
            Err(e) => {
                // Back to the pool first: a reset below waits for it.
                drop(tx);
                Err(e)
            }
        };
        if result.is_ok() {
            for scrape in batch.scrapes.iter().filter(|s| s.time >= horizon) {
                self.blocks.logged(block_of(scrape.time));
                self.newest = self.newest.max(scrape.time);
            }
        }
        // A failed commit leaves nothing behind either: the ids created in the
        // transaction must not outlive it, or later samples would point at
        // series that were never stored; the head saw scrapes that were not
        // logged, so it is rebuilt from the log.
        if result.is_err() {
            self.interner.rollback();
            self.layouts.clear();
            self.head_ready = false;
            if let Err(e) = self.reset_connection().await {
                tracing::warn!(error = %e, "cannot reopen the database after a failed write; retried at the next write");
            }
        }
        result
    }

    /// Writes `batch` in `tx`: each new scrape as one row of the scrape log,
    /// and the 1-minute buckets it closes. Scrapes older than `horizon`
    /// (written) or than their instance's last are late and dropped.
    async fn write_in(
        &mut self,
        tx: &mut sqlx::SqliteConnection,
        batch: &Batch,
        horizon: f64,
    ) -> Result<WriteStats, Error> {
        write_instances(tx, &batch.instances).await?;
        let mut samples = 0;
        let mut new_series = 0;
        let mut late_samples = 0;
        let mut closed: Vec<Closed> = Vec::new();
        let mut logged: Vec<(f64, &str, String)> = Vec::with_capacity(batch.scrapes.len());
        let mut entries: Vec<layout::Resolved> = Vec::new();
        let mut slots: Vec<log::Slot> = Vec::new();
        for scrape in &batch.scrapes {
            let instance = scrape.instance_id.as_str();
            if scrape.time < horizon || !self.head.instance(instance).is_new(scrape.time) {
                late_samples += scrape.len();
                continue;
            }
            let known = self.layouts.get(scrape).is_some();
            if !known {
                entries.clear();
                self.interner.load_instance(tx, instance).await?;
                for (metric, kind) in scrape.types() {
                    self.interner.metric_id(tx, metric, kind).await?;
                }
                for sample in scrape.samples() {
                    let (metric_id, counter) = self.interner.metric_id(tx, sample.metric, "untyped").await?;
                    let (series_id, slot, created) = self.interner.series_id(metric_id, instance, sample.labels);
                    new_series += usize::from(created);
                    entries.push((slot, series_id, counter));
                }
                self.layouts.set(scrape, entries.clone());
            }
            let Some((resolved, slot_count)) = self.layouts.get(scrape) else { continue };
            // Up to the highest slot present: a slot past the end reads as
            // absent, as a `false` would.
            slots.clear();
            slots.resize(slot_count, None);
            let head = self.head.instance(instance);
            // A known layout was described by the instance's last scrape,
            // unless its head was forgotten since (and starts empty).
            if !known || !head.is_described() {
                for &(slot, series_id, counter) in resolved {
                    head.describe(slot, series_id, counter);
                }
            }
            for (&(slot, ..), &value) in resolved.iter().zip(&scrape.values) {
                // A series written twice in one payload keeps its first
                // value, as Prometheus does (it rejects the second).
                if let Some(entry @ None) = slots.get_mut(slot as usize) {
                    *entry = Some(value);
                }
            }
            head.add(scrape.time, &slots, &mut closed);
            // Most values print in under 12 bytes: one allocation, no regrowth.
            let mut vals = String::with_capacity(12 * slots.len() + 2);
            log::encode(&slots, &mut vals);
            logged.push((scrape.time, instance, vals));
            samples += resolved.len();
        }
        let cpu = self.cpu_busy(&batch.scrapes);
        // An instance that left: its open minute is written now (no scrape
        // will close it), and nothing of it is kept in memory.
        for e in &batch.events {
            if matches!(e.kind, EventKind::Left | EventKind::Terminated) {
                let instance = e.instance_id.as_str();
                self.head.retire(instance, &mut closed);
                self.cpu.forget(instance);
                self.interner.forget_instance(instance);
                self.layouts.forget(instance);
            }
        }
        self.interner.insert_pending(tx).await?;
        raw::with_handle(tx, |db| {
            insert_logged(db, &logged)?;
            write_minutes(db, &closed)?;
            insert_cpu(db, &cpu)?;
            insert_statuses(db, &batch.statuses)
        })
        .await?;
        write_rounds(tx, &batch.rounds).await?;
        write_memberships(tx, &batch.memberships).await?;
        write_events(tx, &batch.events).await?;
        write_components(tx, &batch.components).await?;
        write_identity_issues(tx, &batch.identity_issues).await?;
        write_self_metrics(tx, &batch.self_metrics).await?;
        Ok(WriteStats { samples, new_series, cpu_rows: cpu.len(), late_samples })
    }

    /// CPU busy of each scrape that has a value, in time order (the tracker
    /// compares each with its instance's previous one).
    fn cpu_busy<'b>(&mut self, scrapes: &'b [ScrapeRecord]) -> Vec<(f64, &'b str, f64)> {
        let mut ordered: Vec<&ScrapeRecord> = scrapes.iter().collect();
        ordered.sort_by(|a, b| a.time.total_cmp(&b.time));
        ordered
            .into_iter()
            .filter_map(|scrape| Some((scrape.time, scrape.instance_id.as_str(), self.cpu.observe(scrape)?)))
            .collect()
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// Applies pending migrations, after checking there is room for them, with
/// progress on stderr (through the log). Each migration runs in one
/// transaction: interrupted, it leaves the database as it was, and the next
/// start applies it again. The data move of store v2 happens after, in
/// compaction steps that resume where they stopped.
/// One connection for the life of the store: it keeps its page cache.
async fn connect(options: &SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    SqlitePoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options.clone())
        .await
}

/// Fails with [`Error::ReadOnly`] unless this process can write the
/// database: SQLite opens a file it may only read without complaint, and
/// every later write then fails (a daemon that runs on, storing nothing).
/// The probe creates a table inside a transaction that is rolled back.
async fn probe_write(pool: &SqlitePool, path: &Path) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    let probe = sqlx::query("CREATE TABLE fleetscrape_write_probe (x)").execute(&mut *tx).await;
    tx.rollback().await?;
    match probe {
        Ok(_) => Ok(()),
        Err(source) => {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(path).ok();
            Err(Error::ReadOnly {
                path: path.to_path_buf(),
                uid: rustix::process::getuid().as_raw(),
                owner: meta.as_ref().map_or(0, MetadataExt::uid),
                mode: meta.as_ref().map_or(0, |m| m.mode() & 0o7777),
                source,
            })
        }
    }
}

async fn migrate(pool: &SqlitePool, path: &Path) -> Result<(), Error> {
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
        .unwrap_or_default();
    let pending: Vec<&sqlx::migrate::Migration> =
        MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version)).collect();
    let open_error =
        |source: Box<dyn std::error::Error + Send + Sync>| Error::Open { path: path.to_path_buf(), source };
    if !applied.is_empty() && !pending.is_empty() {
        space::check_before_migration(pool, path).await?;
        for m in &pending {
            tracing::info!(version = m.version, description = %m.description, "database: applying migration");
        }
    }
    let started = std::time::Instant::now();
    MIGRATOR.run(pool).await.map_err(|e| open_error(e.into()))?;
    if !applied.is_empty() && !pending.is_empty() {
        tracing::info!(seconds = started.elapsed().as_secs_f64(), "database: migrated");
    }
    Ok(())
}

/// The newest sample time in v2's `samples`, or the compaction horizons (the
/// scrape log's newest is read by [`BlockWriter::load`]).
async fn newest_time(pool: &SqlitePool) -> Result<f64, Error> {
    let newest: Option<f64> = sqlx::query_scalar(
        "SELECT max(t) FROM (
           SELECT (SELECT max(time) FROM samples s WHERE s.metric_id = m.metric_id) AS t FROM metrics m
           UNION ALL SELECT value FROM store_state WHERE key IN ('compacted_until', 'log_written_until'))",
    )
    .fetch_one(pool)
    .await?;
    Ok(newest.unwrap_or(f64::NEG_INFINITY))
}

/// Makes the database group-writable: a WAL reader (Grafana, another user in
/// the same group) must write the `-shm` file, and SQLite creates `-wal` and
/// `-shm` with the database file's mode. Best effort: a file owned by someone
/// else keeps its mode.
/// Creates the database's directory if it is missing, readable and writable
/// by its group (Grafana, another user of group 0, creates `-shm` in it);
/// an existing directory is left as it is.
///
/// # Errors
/// [`Error::Directory`] when it cannot be created.
pub fn create_directory(dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Directory { path: dir.to_path_buf(), source })?;
    share_with_group_rwx(dir);
    Ok(())
}

fn share_with_group_rwx(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(dir) {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(meta.permissions().mode() | 0o070));
    }
}

fn share_with_group(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o060 != 0o060 {
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o060));
            }
        }
    }
}

/// Appends scrapes to the log, each to its block's table.
fn insert_logged(db: &rusqlite::Connection, logged: &[(f64, &str, String)]) -> rusqlite::Result<()> {
    for (time, instance, vals) in logged {
        let table = log::table(block_of(*time));
        db.prepare_cached(&format!("INSERT OR IGNORE INTO {table} (time, instance_id, vals) VALUES (?1, ?2, ?3)"))?
            .execute(rusqlite::params![time, instance, vals])?;
    }
    Ok(())
}

/// Writes closed 1-minute buckets and their minutes' `rollup_buckets` rows.
fn write_minutes(db: &rusqlite::Connection, closed: &[Closed]) -> rusqlite::Result<()> {
    if closed.is_empty() {
        return Ok(());
    }
    compact::insert_buckets(db, "rollup_1m", closed)?;
    let mut starts: Vec<i64> = closed.iter().map(|(_, b)| b.start).collect();
    starts.sort_unstable();
    starts.dedup();
    let mut insert = db.prepare_cached("INSERT OR IGNORE INTO rollup_buckets (width, time) VALUES (60, ?1)")?;
    for start in starts {
        insert.execute([start])?;
    }
    Ok(())
}

async fn write_instances(tx: &mut sqlx::SqliteConnection, instances: &[InstanceRecord]) -> Result<(), Error> {
    for i in instances {
        sqlx::query(
            "INSERT INTO instances (instance_id, role, asg_name, availability_zone, private_ip, state, labels, first_seen, last_seen)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (instance_id) DO UPDATE SET role = excluded.role, asg_name = excluded.asg_name,
               availability_zone = excluded.availability_zone, private_ip = excluded.private_ip,
               state = excluded.state, labels = excluded.labels, last_seen = excluded.last_seen",
        )
        .bind(i.instance_id.as_str())
        .bind(&i.role)
        .bind(&i.asg_name)
        .bind(&i.availability_zone)
        .bind(&i.private_ip)
        .bind(&i.state)
        .bind(&i.labels)
        .bind(i.seen)
        .bind(i.seen)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// CPU busy rows: (time, instance, busy %).
fn insert_cpu(db: &rusqlite::Connection, rows: &[(f64, &str, f64)]) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert =
        db.prepare_cached("INSERT OR REPLACE INTO cpu_samples (time, instance_id, value) VALUES (?1, ?2, ?3)")?;
    for (time, instance, busy) in rows {
        insert.execute(rusqlite::params![time, instance, busy])?;
    }
    Ok(())
}

fn insert_statuses(db: &rusqlite::Connection, statuses: &[StatusRecord]) -> rusqlite::Result<()> {
    if statuses.is_empty() {
        return Ok(());
    }
    let mut insert = db.prepare_cached(
        "INSERT OR REPLACE INTO scrape_status (time, instance_id, up, reason, error, duration_seconds, samples, path)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for s in statuses {
        insert.execute(rusqlite::params![
            s.time,
            s.instance_id.as_str(),
            i64::from(s.up),
            s.reason.map(FailureReason::as_str),
            s.error,
            s.duration_seconds,
            i64::from(s.samples),
            s.path.to_string(),
        ])?;
    }
    Ok(())
}

async fn write_identity_issues(
    tx: &mut sqlx::SqliteConnection,
    issues: &[crate::record::IdentityIssueRecord],
) -> Result<(), Error> {
    for i in issues {
        sqlx::query(
            "INSERT OR REPLACE INTO identity_issues (time, path, source, value, expected, hint, detail)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(i.time)
        .bind(&i.path)
        .bind(&i.source)
        .bind(&i.value)
        .bind(&i.expected)
        .bind(i.hint)
        .bind(&i.detail)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn write_self_metrics(
    tx: &mut sqlx::SqliteConnection,
    readings: &[crate::record::SelfMetricRecord],
) -> Result<(), Error> {
    for r in readings {
        sqlx::query("INSERT OR REPLACE INTO self_metrics (time, name, value) VALUES (?, ?, ?)")
            .bind(r.time)
            .bind(r.name)
            .bind(r.value)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

async fn write_rounds(tx: &mut sqlx::SqliteConnection, rounds: &[AlbRoundRecord]) -> Result<(), Error> {
    for r in rounds {
        sqlx::query(
            "INSERT OR REPLACE INTO alb_rounds (time, target_group, members, requests, reached, unattributed, errors,
                 wanted, reached_wanted, abandoned, budget, duration_seconds)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.time)
        .bind(&r.target_group)
        .bind(i64::from(r.members))
        .bind(i64::from(r.requests))
        .bind(i64::from(r.reached))
        .bind(i64::from(r.unattributed))
        .bind(i64::from(r.errors))
        .bind(i64::from(r.wanted))
        .bind(i64::from(r.reached_wanted))
        .bind(i64::from(r.abandoned))
        .bind(i64::from(r.budget))
        .bind(r.duration_seconds)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn write_memberships(tx: &mut sqlx::SqliteConnection, rows: &[MembershipRecord]) -> Result<(), Error> {
    for r in rows {
        sqlx::query(
            "INSERT OR REPLACE INTO asg_membership
               (time, asg_name, members, desired_capacity, min_size, max_size, target_metric, target_value)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.time)
        .bind(&r.asg_name)
        .bind(i64::from(r.members))
        .bind(r.desired_capacity)
        .bind(r.min_size)
        .bind(r.max_size)
        .bind(r.target.as_ref().map(|(metric, _)| metric))
        .bind(r.target.as_ref().map(|(_, value)| *value))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn write_events(tx: &mut sqlx::SqliteConnection, events: &[EventRecord]) -> Result<(), Error> {
    for e in events {
        sqlx::query("INSERT INTO events (time, instance_id, asg_name, kind, detail) VALUES (?, ?, ?, ?, ?)")
            .bind(e.time)
            .bind(e.instance_id.as_str())
            .bind(&e.asg_name)
            .bind(e.kind.as_str())
            .bind(&e.detail)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

async fn write_components(tx: &mut sqlx::SqliteConnection, components: &[ComponentRecord]) -> Result<(), Error> {
    for c in components {
        sqlx::query(
            "INSERT INTO component_status (component, checked, ok, last_ok, error) VALUES (?1, ?2, ?3, CASE WHEN ?3 THEN ?2 END, ?4)
             ON CONFLICT (component) DO UPDATE SET checked = excluded.checked, ok = excluded.ok,
               last_ok = coalesce(excluded.last_ok, component_status.last_ok), error = excluded.error",
        )
        .bind(c.component.as_str())
        .bind(c.checked)
        .bind(c.ok)
        .bind(&c.error)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
