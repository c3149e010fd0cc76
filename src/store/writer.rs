//! The single writer task: buffers batches, flushes them every
//! `flush_interval` (or sooner when `max_buffered_samples` is reached),
//! enforces retention, and flushes what it holds on shutdown.
//!
//! Crash loss is bounded by the buffer: at most one flush interval (default
//! 2 s) of data, or `max_buffered_samples`, whichever comes first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use super::{Batch, Store};

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Longest time data waits in memory before it is committed.
    pub flush_interval: Duration,
    /// Flush as soon as this many samples are buffered.
    pub max_buffered_samples: usize,
    /// Data older than this is deleted.
    pub retention: Duration,
    /// How often retention runs.
    pub retention_interval: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(2),
            max_buffered_samples: 500_000,
            retention: Duration::from_secs(15 * 24 * 3600),
            retention_interval: Duration::from_secs(600),
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
    /// Samples lost to failed transactions.
    pub dropped_samples: AtomicU64,
}

/// Sends batches to the writer.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    sender: mpsc::Sender<Batch>,
    /// The writer's counters.
    pub stats: Arc<WriterStats>,
}

impl WriterHandle {
    /// Queues a batch; waits when the writer is behind (backpressure).
    /// Returns `false` when the writer has stopped.
    pub async fn send(&self, batch: Batch) -> bool {
        self.sender.send(batch).await.is_ok()
    }
}

impl WriterHandle {
    /// A handle whose batches go to the returned receiver instead of a
    /// store: for tests that read what the scraper hands over.
    pub fn queue(capacity: usize) -> (Self, mpsc::Receiver<Batch>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (Self { sender, stats: Arc::default() }, receiver)
    }
}

/// Starts the writer; it stops, after a last flush, when `shutdown` is
/// cancelled or every handle is dropped, and gives the store back.
pub fn spawn_writer(
    store: Store,
    config: WriterConfig,
    shutdown: CancellationToken,
) -> (WriterHandle, JoinHandle<Store>) {
    let (sender, receiver) = mpsc::channel(64);
    let stats = Arc::new(WriterStats::default());
    let writer = Writer { store, config, stats: Arc::clone(&stats), buffer: Batch::default() };
    (WriterHandle { sender, stats }, tokio::spawn(writer.run(receiver, shutdown)))
}

struct Writer {
    store: Store,
    config: WriterConfig,
    stats: Arc<WriterStats>,
    buffer: Batch,
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<Batch>, shutdown: CancellationToken) -> Store {
        let mut flush = tokio::time::interval(self.config.flush_interval);
        let mut retention = tokio::time::interval(self.config.retention_interval);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                batch = receiver.recv() => match batch {
                    Some(batch) => {
                        self.buffer.append(batch);
                        if self.buffer.sample_count() >= self.config.max_buffered_samples {
                            self.flush().await;
                        }
                    }
                    None => break,
                },
                _ = flush.tick() => self.flush().await,
                _ = retention.tick() => self.enforce_retention().await,
            }
        }
        receiver.close();
        while let Some(batch) = receiver.recv().await {
            self.buffer.append(batch);
        }
        self.flush().await;
        info!(samples = self.stats.samples.load(Ordering::Relaxed), "store writer stopped after a final flush");
        self.store
    }

    async fn flush(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.buffer);
        let started = Instant::now();
        match self.store.write(&batch).await {
            Ok(written) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                self.stats.samples.fetch_add(written.samples as u64, Ordering::Relaxed);
                self.stats.flush_micros.fetch_add(micros, Ordering::Relaxed);
                debug!(samples = written.samples, new_series = written.new_series, micros, "flushed");
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped_samples.fetch_add(batch.sample_count() as u64, Ordering::Relaxed);
                error!(error = %e, samples = batch.sample_count(), "store write failed; batch dropped");
            }
        }
    }

    async fn enforce_retention(&mut self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let cutoff = now.saturating_sub(self.config.retention).as_secs_f64();
        match self.store.delete_before(cutoff).await {
            Ok(0) => {}
            Ok(deleted) => info!(deleted, "retention: old samples deleted"),
            Err(e) => error!(error = %e, "retention failed"),
        }
    }
}
