//! The single writer task: buffers batches, flushes them every
//! `flush_interval` (or sooner when `max_buffered_samples` is reached),
//! enforces retention, and flushes what it holds on shutdown.
//!
//! Scrapers hand it batches through a queue bounded in samples
//! ([`super::admission`]), so the writer's pauses do not delay scrapes.
//!
//! Crash loss is bounded by the buffer: at most one flush interval (default
//! 2 s) of data, or `max_buffered_samples`, whichever comes first, plus what
//! is queued (at most `max_queued_samples`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use super::admission::{self, Room};
use super::{Batch, Maintenance, Retention, Store};
use crate::reminder::Notice;
use crate::self_metrics::{Collect, Encoder, Family, seconds_of_micros, value_of};

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Longest time data waits in memory before it is committed.
    pub flush_interval: Duration,
    /// Flush as soon as this many samples are buffered.
    pub max_buffered_samples: usize,
    /// Samples that may wait in the queue to the writer (~40 bytes each)
    /// while it commits or runs upkeep; beyond it scrapers wait for room.
    pub max_queued_samples: usize,
    /// How long each tier is kept.
    pub retention: Retention,
    /// How often a retention sweep starts.
    pub retention_interval: Duration,
    /// How long after a block ends (by the newest data) it is compacted:
    /// longer than any sample takes from its request to its commit.
    pub compaction_delay: Duration,
    /// How often the writer does a step of upkeep (compaction or retention)
    /// between flushes; each step is bounded.
    pub maintenance_interval: Duration,
    /// How often the WAL is checkpointed, by a connection of its own.
    pub checkpoint_interval: Duration,
    /// While writes fail (a full disk, an I/O error), at most this many
    /// samples wait in memory for the store to take writes again; beyond it
    /// the oldest scrapes are dropped and counted. ~40 bytes each.
    pub max_held_samples: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(2),
            max_buffered_samples: 500_000,
            max_queued_samples: 2_000_000,
            retention: Retention::DEFAULT,
            retention_interval: Duration::from_secs(600),
            compaction_delay: Duration::from_secs(60),
            maintenance_interval: Duration::from_millis(200),
            checkpoint_interval: Duration::from_secs(1),
            max_held_samples: 2_000_000,
        }
    }
}

/// Counters about the writer, for fleetscrape's own metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub flushes: AtomicU64,
    /// Samples committed.
    pub samples: AtomicU64,
    /// Total time spent in commits, microseconds.
    pub flush_micros: AtomicU64,
    /// Failed transactions.
    pub errors: AtomicU64,
    /// Samples lost: held past `max_held_samples` while writes failed, or
    /// still held when the writer stopped.
    pub dropped_samples: AtomicU64,
    /// Samples waiting in memory for a failed write to be retried.
    pub held_samples: AtomicU64,
    /// Samples dropped because their block was already compacted.
    pub late_samples: AtomicU64,
    /// Compaction steps done.
    pub compaction_steps: AtomicU64,
    /// Blocks compacted.
    pub compacted_blocks: AtomicU64,
    /// Rows deleted by retention.
    pub retention_rows: AtomicU64,
    /// Failed upkeep steps.
    pub maintenance_errors: AtomicU64,
    /// The longest single write or upkeep step, microseconds: how long ingest
    /// can wait for the writer.
    pub longest_pause_micros: AtomicU64,
    /// WAL checkpoints run (off the writer's path).
    pub checkpoints: AtomicU64,
    /// The longest checkpoint, microseconds.
    pub longest_checkpoint_micros: AtomicU64,
    /// The WAL file's size at the last checkpoint, bytes.
    pub wal_bytes: AtomicU64,
    /// Since when commits fail, and why (`/ready`); `None` while they succeed.
    pub commits_failing: std::sync::Mutex<crate::reminder::Reminder>,
}

impl WriterStats {
    /// Epoch seconds of the first failed commit since the last good one, and
    /// its latest error; `None` while commits succeed.
    pub fn failing(&self) -> Option<(f64, String)> {
        let reminder = self.commits_failing.lock().ok()?;
        reminder.failing().map(|(since, error)| (since, error.to_string()))
    }
}

/// A family of [`WriterStats`] and how to read it from its counter.
type WriterFamily = (Family<0>, fn(&WriterStats) -> f64);

static WRITER_FAMILIES: [WriterFamily; 15] = [
    (Family::counter("fleetscrape_store_flushes_total", "Store transactions committed.", []), |s| value_of(&s.flushes)),
    (Family::counter("fleetscrape_store_samples_total", "Samples committed.", []), |s| value_of(&s.samples)),
    (Family::counter("fleetscrape_store_flush_seconds_total", "Time spent committing batches.", []), |s| {
        seconds_of_micros(&s.flush_micros)
    }),
    (Family::counter("fleetscrape_store_errors_total", "Failed store transactions.", []), |s| value_of(&s.errors)),
    (
        Family::counter(
            "fleetscrape_store_dropped_samples_total",
            "Samples lost: held past the bound while writes failed, or held when the writer stopped.",
            [],
        ),
        |s| value_of(&s.dropped_samples),
    ),
    (
        Family::counter(
            "fleetscrape_store_late_samples_total",
            "Samples dropped because their block was already compacted.",
            [],
        ),
        |s| value_of(&s.late_samples),
    ),
    (Family::counter("fleetscrape_store_compaction_steps_total", "Compaction steps done.", []), |s| {
        value_of(&s.compaction_steps)
    }),
    (
        Family::counter(
            "fleetscrape_store_compacted_blocks_total",
            "5-minute blocks moved into the compacted tier and the rollups.",
            [],
        ),
        |s| value_of(&s.compacted_blocks),
    ),
    (Family::counter("fleetscrape_store_retention_deleted_rows_total", "Rows deleted by retention.", []), |s| {
        value_of(&s.retention_rows)
    }),
    (
        Family::counter(
            "fleetscrape_store_maintenance_errors_total",
            "Failed compaction or retention steps (retried).",
            [],
        ),
        |s| value_of(&s.maintenance_errors),
    ),
    (Family::counter("fleetscrape_store_checkpoints_total", "WAL checkpoints run, off the writer's path.", []), |s| {
        value_of(&s.checkpoints)
    }),
    (
        Family::gauge(
            "fleetscrape_store_held_samples",
            "Samples waiting in memory while store writes fail (a full disk), retried every flush interval.",
            [],
        ),
        |s| value_of(&s.held_samples),
    ),
    (Family::gauge("fleetscrape_store_wal_bytes", "Size of the WAL file at the last checkpoint.", []), |s| {
        value_of(&s.wal_bytes)
    }),
    (
        Family::gauge("fleetscrape_store_longest_checkpoint_seconds", "The longest WAL checkpoint since start.", []),
        |s| seconds_of_micros(&s.longest_checkpoint_micros),
    ),
    (
        Family::gauge(
            "fleetscrape_store_longest_pause_seconds",
            "The longest single write or upkeep step since start: how long ingest waited at most.",
            [],
        ),
        |s| seconds_of_micros(&s.longest_pause_micros),
    ),
];

impl Collect for WriterStats {
    fn collect(&self, encoder: &mut Encoder) {
        for (family, read) in &WRITER_FAMILIES {
            encoder.single(family, read(self));
        }
    }
}

/// Sends batches to the writer.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    sender: admission::Sender,
    /// The writer's counters.
    pub stats: Arc<WriterStats>,
}

impl WriterHandle {
    /// Queues a batch; waits only while the queue is full (backpressure,
    /// counted and logged). Returns `false` when the writer has stopped.
    pub async fn send(&self, batch: Batch) -> bool {
        self.sender.send(batch).await
    }

    /// A handle whose batches go to the returned receiver instead of a
    /// store: for tests that read what the scraper hands over.
    pub fn queue(capacity_samples: usize) -> (Self, admission::Receiver) {
        let (sender, receiver) = admission::queue(capacity_samples);
        (Self { sender, stats: Arc::default() }, receiver)
    }

    /// The queue's room and its backpressure counters.
    pub fn room(&self) -> &Arc<Room> {
        self.sender.room()
    }
}

/// Starts the writer; it stops, after a last flush, when `shutdown` is
/// cancelled or every handle is dropped, and gives the store back.
pub fn spawn_writer(
    store: Store,
    config: WriterConfig,
    shutdown: CancellationToken,
) -> (WriterHandle, JoinHandle<Store>) {
    let (sender, receiver) = admission::queue(config.max_queued_samples);
    let stats = Arc::new(WriterStats::default());
    let checkpoints = CancellationToken::new();
    let checkpointer = tokio::spawn(super::checkpoint::run(
        store.path().to_path_buf(),
        config.checkpoint_interval,
        Arc::clone(&stats),
        checkpoints.clone(),
    ));
    let writer = Writer {
        store,
        config,
        stats: Arc::clone(&stats),
        buffer: Batch::default(),
        sweeping: false,
        dropping_late: false,
        reported_backlog: false,
        failed_flush: None,
    };
    let task = tokio::spawn(async move {
        let store = writer.run(receiver, shutdown).await;
        checkpoints.cancel();
        let _ = checkpointer.await;
        store
    });
    (WriterHandle { sender, stats }, task)
}

struct Writer {
    store: Store,
    config: WriterConfig,
    stats: Arc<WriterStats>,
    buffer: Batch,
    /// A retention sweep is under way.
    sweeping: bool,
    /// The last flush dropped late samples (logged once per change).
    dropping_late: bool,
    /// A compaction backlog was reported (logged once until it clears).
    reported_backlog: bool,
    /// The error of a flush that failed since the last successful one, for
    /// the `store` row of `component_status`.
    failed_flush: Option<String>,
}

/// Now, in epoch seconds.
impl Writer {
    async fn run(mut self, mut receiver: admission::Receiver, shutdown: CancellationToken) -> Store {
        // The checkpointer task checkpoints from now on, off this path.
        if let Err(e) = self.store.disable_auto_checkpoints().await {
            error!(error = %e, "cannot hand WAL checkpoints to the checkpointer; the writer keeps doing them");
        }
        let mut flush = tokio::time::interval(self.config.flush_interval);
        let mut retention = tokio::time::interval(self.config.retention_interval);
        let mut maintenance = tokio::time::interval(self.config.maintenance_interval);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // After a flush, and while upkeep has work (a block due, a sweep under
        // way), its steps follow one another; batches and flushes go first
        // (`biased`); the tick remains for a store that takes no writes. Paced
        // at one step (~25,000 rows) per 200 ms tick, compaction moved at
        // most 125,000 rows/s, less than 2,000 targets × 1,100 samples every
        // 15 s write (147,000/s): the recent tier grew without end.
        let mut upkeep_due = false;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                batch = receiver.recv() => match batch {
                    Some(batch) => {
                        self.buffer.append(batch);
                        if self.failed_flush.is_some() {
                            // Failing: retried at the flush interval only, held within the bound.
                            self.trim_held();
                        } else if self.buffer.sample_count() >= self.config.max_buffered_samples {
                            self.flush().await;
                            upkeep_due = true;
                        }
                    }
                    None => break,
                },
                _ = flush.tick() => {
                    self.flush().await;
                    // New data may have made a block due.
                    upkeep_due = true;
                }
                _ = retention.tick() => {
                    self.sweeping = true;
                    upkeep_due = true;
                }
                _ = maintenance.tick() => upkeep_due = self.maintain().await,
                () = std::future::ready(()), if upkeep_due => upkeep_due = self.maintain().await,
            }
        }
        receiver.close();
        while let Some(batch) = receiver.recv().await {
            self.buffer.append(batch);
        }
        self.flush().await;
        if self.failed_flush.is_some() {
            let lost = self.buffer.sample_count();
            self.stats.dropped_samples.fetch_add(lost as u64, Ordering::Relaxed);
            error!(samples = lost, "store writer stopped with writes still failing; the held samples are lost");
        }
        info!(samples = self.stats.samples.load(Ordering::Relaxed), "store writer stopped after a final flush");
        self.store
    }

    async fn flush(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.buffer);
        batch.components.retain(|c| c.component != super::Component::Store);
        batch.components.push(super::ComponentRecord {
            component: super::Component::Store,
            checked: crate::clock::now_seconds(),
            ok: true,
            error: self.failed_flush.clone(),
        });
        let started = Instant::now();
        let result = self.store.write(&batch).await;
        self.note_pause(started);
        match result {
            Ok(written) => {
                let now = crate::clock::now_seconds();
                let outage = self.stats.commits_failing.lock().ok().and_then(|mut r| r.succeeded(now));
                if let Some(error) = self.failed_flush.take() {
                    info!(samples = written.samples, after = %error, failing_for_seconds = outage.unwrap_or(0.0).round(),
                        "store writes again; the held samples are written");
                }
                self.stats.held_samples.store(0, Ordering::Relaxed);
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.note_late(written.late_samples);
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                self.stats.samples.fetch_add(written.samples as u64, Ordering::Relaxed);
                self.stats.flush_micros.fetch_add(micros, Ordering::Relaxed);
                debug!(samples = written.samples, new_series = written.new_series, micros, "flushed");
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let message = e.to_string();
                let now = crate::clock::now_seconds();
                let notice = self.stats.commits_failing.lock().map_or(Notice::Quiet, |mut r| r.failed(now, &message));
                let held = batch.sample_count() + self.buffer.sample_count();
                let max_held = self.config.max_held_samples;
                match notice {
                    Notice::New => error!(error = %e, held_samples = held, max_held,
                        "store write failed; holding the samples in memory (the oldest dropped past max_held) \
                         and retrying every flush interval; /ready fails until a write succeeds"),
                    Notice::Reminder { failing_for } => error!(error = %e, held_samples = held, max_held,
                        failing_for_seconds = failing_for.round(),
                        "store writes still failing; nothing is stored and /ready fails until a write succeeds"),
                    Notice::Quiet => debug!(error = %e, held_samples = held, "store write failed again"),
                }
                self.failed_flush = Some(message);
                // The held batch goes first: it is older than what came since.
                batch.append(std::mem::take(&mut self.buffer));
                self.buffer = batch;
                self.trim_held();
            }
        }
    }

    /// Drops the oldest held scrapes (and status rows) beyond the bound.
    fn trim_held(&mut self) {
        let limit = self.config.max_held_samples;
        let mut excess = self.buffer.sample_count().saturating_sub(limit);
        let mut cut = 0;
        while excess > 0 && cut < self.buffer.scrapes.len() {
            let n = self.buffer.scrapes[cut].len();
            excess = excess.saturating_sub(n);
            self.stats.dropped_samples.fetch_add(n as u64, Ordering::Relaxed);
            cut += 1;
        }
        self.buffer.scrapes.drain(..cut);
        // A status row per instance and interval: held within the same bound.
        let statuses = self.buffer.statuses.len().saturating_sub(limit / 100 + 1);
        self.buffer.statuses.drain(..statuses);
        self.stats.held_samples.store(self.buffer.sample_count() as u64, Ordering::Relaxed);
    }

    fn note_late(&mut self, late: usize) {
        self.stats.late_samples.fetch_add(late as u64, Ordering::Relaxed);
        let dropping = late > 0;
        if dropping && !self.dropping_late {
            tracing::warn!(
                samples = late,
                "samples older than the compacted tier arrived and were dropped (counted in fleetscrape_store_late_samples_total)"
            );
        }
        self.dropping_late = dropping;
    }

    /// One bounded step of compaction or retention; whether it did any work
    /// (then more is likely due).
    async fn maintain(&mut self) -> bool {
        let started = Instant::now();
        let delay = self.config.compaction_delay.as_secs_f64();
        let result = self.store.maintain(&self.config.retention, delay, self.sweeping).await;
        self.note_pause(started);
        match result {
            Ok(Maintenance::Idle) => false,
            Ok(Maintenance::Compacted(step)) => {
                self.stats.compaction_steps.fetch_add(1, Ordering::Relaxed);
                if step.finished {
                    self.stats.compacted_blocks.fetch_add(1, Ordering::Relaxed);
                    self.report_backlog(step.block).await;
                }
                true
            }
            Ok(Maintenance::Retained(0)) => {
                self.sweeping = false;
                false
            }
            Ok(Maintenance::Retained(rows)) => {
                self.stats.retention_rows.fetch_add(rows, Ordering::Relaxed);
                debug!(rows, "retention step");
                true
            }
            Err(e) => {
                self.stats.maintenance_errors.fetch_add(1, Ordering::Relaxed);
                error!(error = %e, "store upkeep (compaction or retention) failed; retried at the next step");
                false
            }
        }
    }

    /// Progress while compacting a backlog (history after a migration, or
    /// after downtime): logged per block while more than two are due.
    async fn report_backlog(&mut self, block: i64) {
        let Ok(backlog) = self.store.compaction_backlog().await else { return };
        if backlog > 2 {
            info!(block, blocks_left = backlog, "compacting history into the compacted tier");
            self.reported_backlog = true;
        } else if self.reported_backlog {
            info!("compaction caught up");
            self.reported_backlog = false;
        }
    }

    fn note_pause(&self, started: Instant) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.longest_pause_micros.fetch_max(micros, Ordering::Relaxed);
    }
}
