//! The queue between the scrapers and the writer, bounded in samples.
//!
//! The writer stops taking batches while it commits or runs a step of upkeep
//! (a compaction step moving a large metric takes seconds at 1,000 targets).
//! A queue bounded by a few dozen batches filled in under a second there, and
//! every scraper that then waited to hand over its batch missed its next
//! interval. This queue holds up to `max_queued_samples` (2,000,000 by
//! default: ~27 s at 1,000 targets × 1,100 samples every 15 s, ~80 MB), so
//! the scrape schedule does not feel the store's pauses; only a writer that
//! stays behind for that long makes scrapers wait, and that wait is counted
//! (`fleetscrape_store_backpressure_*`) and logged once per episode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{Semaphore, TryAcquireError, mpsc};
use tokio::time::Instant;

use super::Batch;
use crate::self_metrics::{Collect, Encoder, Family, seconds_of_micros, value_of};

static QUEUED: Family<0> =
    Family::gauge("fleetscrape_store_queued_samples", "Samples queued for the store writer, not yet taken.", []);
static WAITS: Family<0> = Family::counter(
    "fleetscrape_store_backpressure_waits_total",
    "Batches whose scrape waited for room in the writer's full queue (intervals may have been missed).",
    [],
);
static WAITED: Family<0> = Family::counter(
    "fleetscrape_store_backpressure_seconds_total",
    "Time scrapes spent waiting for room in the writer's queue, summed.",
    [],
);

impl Collect for Room {
    fn collect(&self, encoder: &mut Encoder) {
        encoder.single(&QUEUED, self.queued() as f64);
        encoder.single(&WAITS, value_of(&self.waits));
        encoder.single(&WAITED, seconds_of_micros(&self.waited_micros));
    }
}

/// Room for queued samples, shared by every handle and the writer.
#[derive(Debug)]
pub struct Room {
    free: Semaphore,
    capacity: usize,
    /// Scrapers have waited since the queue last drained to half.
    behind: AtomicBool,
    /// Sends that had to wait for room.
    pub waits: AtomicU64,
    /// Time spent waiting for room, microseconds, summed over sends.
    pub waited_micros: AtomicU64,
}

/// An empty room of the default size (where no writer runs: `/metrics` shows zeros).
impl Default for Room {
    fn default() -> Self {
        Self::new(super::writer::WriterConfig::default().max_queued_samples)
    }
}

impl Room {
    /// Room for `capacity` samples (at least one batch always fits).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            free: Semaphore::new(capacity),
            capacity,
            behind: AtomicBool::new(false),
            waits: AtomicU64::new(0),
            waited_micros: AtomicU64::new(0),
        }
    }

    /// Samples in the queue now.
    pub fn queued(&self) -> usize {
        self.capacity - self.free.available_permits()
    }

    /// What a batch takes: its samples, at least 1, at most the whole room
    /// (a batch larger than the room waits for an empty queue, then goes).
    fn permits(&self, batch: &Batch) -> u32 {
        u32::try_from(batch.sample_count().clamp(1, self.capacity)).unwrap_or(u32::MAX)
    }

    /// Takes `permits` of room, waiting if the queue is full; `false` once
    /// the writer has stopped.
    async fn admit(&self, permits: u32) -> bool {
        match self.free.try_acquire_many(permits) {
            Ok(permit) => {
                permit.forget();
                return true;
            }
            Err(TryAcquireError::Closed) => return false,
            Err(TryAcquireError::NoPermits) => {}
        }
        if !self.behind.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                queued_samples = self.queued(),
                "the store writer is behind and its queue is full: scrapes wait for it (backpressure), \
                 and intervals may be missed; see fleetscrape_store_longest_pause_seconds and the disk's speed"
            );
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let admitted = match self.free.acquire_many(permits).await {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.waited_micros.fetch_add(micros, Ordering::Relaxed);
        admitted
    }

    /// The writer took a batch of `permits` off the queue.
    fn release(&self, permits: u32) {
        self.free.add_permits(permits as usize);
        if self.free.available_permits() * 2 >= self.capacity && self.behind.swap(false, Ordering::Relaxed) {
            tracing::info!("the store writer caught up: its queue is at most half full again");
        }
    }

    /// No more sends: waiting ones return `false`.
    fn close(&self) {
        self.free.close();
    }
}

/// A queued batch with the room it holds, given back as it was taken.
type Queued = (u32, Batch);

/// The sending side, cloned into every scraper.
#[derive(Debug, Clone)]
pub struct Sender {
    sender: mpsc::UnboundedSender<Queued>,
    room: Arc<Room>,
}

impl Sender {
    /// Queues a batch; waits only while the queue is full. `false` once the
    /// writer has stopped.
    pub async fn send(&self, batch: Batch) -> bool {
        let permits = self.room.permits(&batch);
        self.room.admit(permits).await && self.sender.send((permits, batch)).is_ok()
    }

    /// The queue's room and counters.
    pub fn room(&self) -> &Arc<Room> {
        &self.room
    }
}

/// The writer's side.
#[derive(Debug)]
pub struct Receiver {
    receiver: mpsc::UnboundedReceiver<Queued>,
    room: Arc<Room>,
}

impl Receiver {
    /// The next batch, its room given back; `None` once every sender is gone
    /// (or after [`Receiver::close`], when the queue is empty).
    pub async fn recv(&mut self) -> Option<Batch> {
        let (permits, batch) = self.receiver.recv().await?;
        self.room.release(permits);
        Some(batch)
    }

    /// The next batch if one is queued, its room given back.
    pub fn try_recv(&mut self) -> Option<Batch> {
        let (permits, batch) = self.receiver.try_recv().ok()?;
        self.room.release(permits);
        Some(batch)
    }

    /// Refuses further batches; those queued can still be received.
    pub fn close(&mut self) {
        self.room.close();
        self.receiver.close();
    }
}

/// A queue with room for `capacity` samples.
pub fn queue(capacity: usize) -> (Sender, Receiver) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let room = Arc::new(Room::new(capacity));
    (Sender { sender, room: Arc::clone(&room) }, Receiver { receiver, room })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::{SampleRecord, ScrapeRecord};

    fn batch(samples: usize) -> Batch {
        let sample = SampleRecord { metric: "m".into(), labels: "{}".into(), value: 1.0 };
        Batch { scrapes: vec![ScrapeRecord::new("i-1".into(), 0.0, vec![sample; samples], vec![])], ..Batch::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn sends_never_wait_while_the_queue_has_room() {
        let (sender, mut receiver) = queue(1_000);
        for _ in 0..10 {
            assert!(sender.send(batch(100)).await);
        }
        assert_eq!(sender.room().queued(), 1_000);
        assert_eq!(sender.room().waits.load(Ordering::Relaxed), 0);
        assert_eq!(receiver.recv().await.map(|b| b.sample_count()), Some(100));
        assert_eq!(sender.room().queued(), 900);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_the_sender_wait_until_the_writer_takes_a_batch_and_counts_the_wait() {
        let (sender, mut receiver) = queue(300);
        for _ in 0..3 {
            assert!(sender.send(batch(100)).await);
        }
        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send(batch(100)).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "no room: the fourth batch waits");
        receiver.recv().await;
        assert!(waiting.await.unwrap());
        assert_eq!(sender.room().waits.load(Ordering::Relaxed), 1);
        assert_eq!(sender.room().waited_micros.load(Ordering::Relaxed), 5_000_000);
        assert_eq!(sender.room().queued(), 300);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_larger_than_the_room_goes_alone() {
        let (sender, mut receiver) = queue(50);
        assert!(sender.send(batch(500)).await);
        assert_eq!(sender.room().queued(), 50);
        assert_eq!(receiver.recv().await.map(|b| b.sample_count()), Some(500));
        assert_eq!(sender.room().queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_queue_refuses_new_batches_and_frees_waiting_senders() {
        let (sender, mut receiver) = queue(100);
        assert!(sender.send(batch(100)).await);
        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send(batch(10)).await }
        });
        tokio::task::yield_now().await;
        receiver.close();
        assert!(!waiting.await.unwrap(), "the waiting sender is told the writer stopped");
        assert!(!sender.send(batch(1)).await);
        assert_eq!(receiver.recv().await.map(|b| b.sample_count()), Some(100), "queued batches are still drained");
        assert!(receiver.recv().await.is_none());
    }
}
