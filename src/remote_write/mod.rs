//! remote_write: every scraped sample, attributed and labelled, sent to
//! Prometheus-compatible receivers (Prometheus, Amazon Managed Service for
//! Prometheus, Grafana Mimir, VictoriaMetrics, Thanos receive) with the
//! remote-write 1.0 protocol.
//!
//! - [`wire`]: protobuf + snappy.
//! - [`series`]: batches → labelled samples, `up`, stale markers (pure).
//! - [`queue`]: per-shard lanes, batching, the memory bound, resharding (pure).
//! - [`client`]: the HTTP request, authentication, SigV4, what an answer means.
//!
//! **Flow.** The scraper hands each batch to [`RemoteWrite::ingest`], which
//! translates and queues it without waiting: a slow or absent receiver never
//! slows scraping or SQLite. Each shard (between `min_shards` and
//! `max_shards`, resharded from the measured load) sends one request at a
//! time from its lane: a full batch (`max_samples_per_send`) or whatever
//! waited `batch_send_deadline`. 5xx, 429 and transport errors are retried
//! with backoff (`min_backoff` doubling to `max_backoff`, at least the
//! receiver's `Retry-After`) until they succeed or shutdown; other 4xx drop
//! the batch (counted). An instance's samples always go through the same
//! lane, one request at a time, so per series nothing is reordered, across a
//! receiver restart too.
//!
//! **Memory** is bounded by `queue_config.max_pending_samples` per receiver
//! (~16 bytes a sample plus the series' encoded labels, shared): past it
//! the oldest samples are dropped and counted. Pending samples live in memory
//! only: a restart of fleetscrape loses at most that bound, counted at
//! shutdown (`fleetscrape_remote_write_samples_dropped_total{reason="shutdown"}`)
//! and logged. On SIGTERM the queue is flushed within the shutdown budget.

pub mod client;
pub mod queue;
pub mod series;
pub mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, QueueConfig, RemoteWriteConfig};
use crate::discovery::TopologyReceiver;
use crate::record::Batch;
use crate::self_metrics::{Collect, Encoder, Family, seconds_of_micros, value_of};
pub use client::ClientError;
use client::{Client, Outcome};
use queue::{QueueCore, Samples};
use series::{Chunk, LabelRules, Translator};

/// How often the shard count is reconsidered.
const RESHARD_INTERVAL: Duration = Duration::from_secs(10);

/// The counters of one receiver (`/metrics`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Samples offered to the queue (after relabeling and the order check).
    pub samples_in: AtomicU64,
    /// Samples the receiver accepted.
    pub sent: AtomicU64,
    /// Samples the receiver rejected with a 4xx (not retried).
    pub failed: AtomicU64,
    /// Samples sent again after a retryable failure.
    pub retried: AtomicU64,
    /// Samples dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Samples still pending when the shutdown budget ran out.
    pub dropped_shutdown: AtomicU64,
    /// Samples not sent because their series already had a later one.
    pub out_of_order: AtomicU64,
    /// Samples dropped by `write_relabel_configs`.
    pub relabeled_away: AtomicU64,
    /// Stale markers queued.
    pub stale_markers: AtomicU64,
    /// Requests by outcome.
    pub requests_sent: AtomicU64,
    /// Requests that will be retried.
    pub requests_retried: AtomicU64,
    /// Requests rejected.
    pub requests_rejected: AtomicU64,
    /// Compressed bytes sent.
    pub bytes_sent: AtomicU64,
    /// Time spent in requests that succeeded, microseconds.
    pub send_micros: AtomicU64,
    /// The newest sample timestamp the receiver accepted, milliseconds.
    pub highest_sent_ms: AtomicU64,
    /// Shards now.
    pub shards: AtomicU64,
    /// Series remembered.
    pub series: AtomicU64,
    /// Samples waiting or being sent, at the last change.
    pub pending: AtomicU64,
}

/// What a receiver is going through, for logging once per change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    Ok,
    Retrying(String),
    Rejecting(String),
}

/// One `remote_write` entry: translator, queue, senders.
#[derive(Debug)]
struct Receiver {
    name: String,
    url: String,
    config: QueueConfig,
    translator: Mutex<Translator>,
    queue: Mutex<QueueCore>,
    /// One per lane (up to `max_shards`).
    wake: Vec<Notify>,
    client: Client,
    stats: Arc<Stats>,
    health: Mutex<Health>,
    /// Hard stop: the shutdown budget is spent.
    stop: CancellationToken,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every configured receiver.
#[derive(Debug, Clone)]
pub struct RemoteWrite {
    receivers: Vec<Arc<Receiver>>,
    topology: TopologyReceiver,
}

/// A receiver's identity and counters, for `/metrics`.
#[derive(Debug, Clone)]
pub struct ReceiverStats {
    /// `remote_name`.
    pub name: String,
    /// URL.
    pub url: String,
    /// Counters.
    pub stats: Arc<Stats>,
}

impl RemoteWrite {
    /// Builds every receiver of `config` and starts its senders.
    ///
    /// # Errors
    /// [`ClientError`] when a receiver's TLS files or headers are unusable.
    pub async fn start(config: &Config, topology: TopologyReceiver) -> Result<Self, ClientError> {
        let mut receivers = Vec::new();
        for remote in &config.remote_write {
            let receiver = Arc::new(Receiver::new(config, remote).await?);
            receiver.spawn_senders(0);
            tokio::spawn(Arc::clone(&receiver).reshard_loop());
            tracing::info!(remote_name = %receiver.name, url = %receiver.url, "remote_write started");
            receivers.push(receiver);
        }
        Ok(Self { receivers, topology })
    }

    /// Whether any receiver is configured.
    pub fn is_empty(&self) -> bool {
        self.receivers.is_empty()
    }

    /// Translates and queues a batch for every receiver; never waits on the network.
    pub fn ingest(&self, batch: &Batch) {
        if batch.scrapes.is_empty() && batch.statuses.is_empty() {
            return;
        }
        let topology = self.topology.borrow().clone();
        for receiver in &self.receivers {
            let chunks = lock(&receiver.translator).translate(batch, topology.as_ref());
            receiver.enqueue(chunks);
        }
    }

    /// Marks stale the series of instances that leave each new topology, until `shutdown`.
    pub async fn watch_topology(self, shutdown: CancellationToken) {
        let mut topology = self.topology.clone();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = topology.changed() => if changed.is_err() { return },
            }
            let Some(current) = topology.borrow_and_update().clone() else { continue };
            let now = crate::clock::now_seconds();
            for receiver in &self.receivers {
                let chunks = lock(&receiver.translator).topology_changed(&current, now);
                receiver.enqueue(chunks);
            }
        }
    }

    /// Every receiver's counters.
    pub fn stats(&self) -> Vec<ReceiverStats> {
        self.receivers
            .iter()
            .map(|r| {
                r.refresh_gauges();
                ReceiverStats { name: r.name.clone(), url: r.url.clone(), stats: Arc::clone(&r.stats) }
            })
            .collect()
    }

    /// Sends what is pending until nothing is, or `deadline`; then stops
    /// every sender and counts what was left as dropped.
    pub async fn shutdown(&self, deadline: Instant) {
        for receiver in &self.receivers {
            lock(&receiver.queue).flush();
            receiver.wake_all();
        }
        for receiver in &self.receivers {
            while receiver.pending() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            receiver.stop.cancel();
            let left = lock(&receiver.queue).drain() as u64;
            let stats = &receiver.stats;
            stats.dropped_shutdown.fetch_add(left, Ordering::Relaxed);
            // In-flight batches count themselves as they are abandoned.
            let in_flight = lock(&receiver.queue).in_flight() as u64;
            if left + in_flight > 0 {
                tracing::warn!(
                    remote_name = %receiver.name,
                    samples = left + in_flight,
                    "remote_write: samples still pending when the shutdown budget ran out are lost"
                );
            } else {
                tracing::info!(
                    remote_name = %receiver.name,
                    sent = stats.sent.load(Ordering::Relaxed),
                    "remote_write: queue flushed"
                );
            }
            receiver.refresh_gauges();
        }
    }
}

impl Receiver {
    async fn new(config: &Config, remote: &RemoteWriteConfig) -> Result<Self, ClientError> {
        let q = remote.queue_config;
        let rules = LabelRules {
            job: config.scrape.job_name.clone(),
            external_labels: config.external_labels.clone(),
            honor_labels: config.scrape.honor_labels,
            write_relabel_configs: remote.write_relabel_configs.clone(),
            stale_after: config.scrape.stale_after_intervals,
        };
        let stats = Arc::new(Stats::default());
        stats.shards.store(q.min_shards as u64, Ordering::Relaxed);
        Ok(Self {
            name: remote.remote_name(),
            url: remote.url.clone(),
            config: q,
            translator: Mutex::new(Translator::new(rules)),
            queue: Mutex::new(QueueCore::new(
                q.min_shards,
                q.max_pending_samples,
                q.max_samples_per_send.min(q.capacity),
                q.batch_send_deadline.as_std(),
            )),
            wake: (0..q.max_shards.max(q.min_shards)).map(|_| Notify::new()).collect(),
            client: Client::new(remote, config.aws.region.as_deref()).await?,
            stats,
            health: Mutex::new(Health::Ok),
            stop: CancellationToken::new(),
        })
    }

    fn pending(&self) -> usize {
        lock(&self.queue).pending()
    }

    fn refresh_gauges(&self) {
        self.stats.pending.store(self.pending() as u64, Ordering::Relaxed);
        self.stats.series.store(lock(&self.translator).series() as u64, Ordering::Relaxed);
        let counts = lock(&self.translator).counts();
        self.stats.out_of_order.store(counts.out_of_order, Ordering::Relaxed);
        self.stats.relabeled_away.store(counts.relabeled_away, Ordering::Relaxed);
        self.stats.stale_markers.store(counts.stale_markers, Ordering::Relaxed);
    }

    fn wake_all(&self) {
        for wake in &self.wake {
            wake.notify_one();
        }
    }

    fn enqueue(&self, chunks: Vec<Chunk>) {
        if chunks.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut dropped = 0;
        let mut offered = 0;
        let mut ready = Vec::new();
        {
            let mut queue = lock(&self.queue);
            for chunk in chunks {
                offered += chunk.len();
                let (lane, pushed) = queue.push(chunk, now);
                dropped += pushed.dropped;
                if queue.ready(lane, now) {
                    ready.push(lane);
                }
            }
            self.stats.pending.store(queue.pending() as u64, Ordering::Relaxed);
        }
        self.stats.samples_in.fetch_add(offered as u64, Ordering::Relaxed);
        if dropped > 0 {
            let before = self.stats.dropped_queue_full.fetch_add(dropped as u64, Ordering::Relaxed);
            if before == 0 {
                tracing::warn!(
                    remote_name = %self.name,
                    max_pending_samples = self.config.max_pending_samples,
                    "remote_write: the queue is full; the oldest samples are dropped (counted in fleetscrape_remote_write_samples_dropped_total)"
                );
            }
        }
        ready.dedup();
        for lane in ready {
            if let Some(wake) = self.wake.get(lane) {
                wake.notify_one();
            }
        }
    }

    fn spawn_senders(self: &Arc<Self>, generation: u64) {
        let shards = lock(&self.queue).shards();
        self.stats.shards.store(shards as u64, Ordering::Relaxed);
        for lane in 0..shards {
            tokio::spawn(Arc::clone(self).sender(lane, generation));
        }
    }

    /// One shard: takes its lane's batches and delivers them, one at a time.
    async fn sender(self: Arc<Self>, lane: usize, generation: u64) {
        loop {
            let batch = loop {
                let (taken, due) = {
                    let mut queue = lock(&self.queue);
                    if queue.generation() != generation || lane >= queue.shards() {
                        return;
                    }
                    (queue.take(lane, Instant::now()), queue.due(lane))
                };
                if let Some(batch) = taken {
                    break batch;
                }
                let until = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                tokio::select! {
                    () = self.wake[lane].notified() => {}
                    () = tokio::time::sleep_until(until) => {}
                    () = self.stop.cancelled() => return,
                }
            };
            self.deliver(batch).await;
            if self.stop.is_cancelled() {
                return;
            }
        }
    }

    /// Sends one batch until it is accepted, rejected, or shutdown stops it.
    async fn deliver(&self, batch: Samples) {
        let n = batch.len() as u64;
        let newest = batch.iter().map(|(_, t, _)| *t).max().unwrap_or(0);
        let mut request = wire::RequestBuilder::default();
        for (labels, time, value) in &batch {
            request.push(labels, *value, *time);
        }
        drop(batch);
        let body = request.finish();
        let mut backoff = self.config.min_backoff.as_std();
        loop {
            let started = Instant::now();
            let outcome = tokio::select! {
                outcome = self.client.send(body.clone()) => outcome,
                () = self.stop.cancelled() => {
                    self.stats.dropped_shutdown.fetch_add(n, Ordering::Relaxed);
                    break;
                }
            };
            match outcome {
                Outcome::Sent => {
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.stats.send_micros.fetch_add(micros, Ordering::Relaxed);
                    self.stats.sent.fetch_add(n, Ordering::Relaxed);
                    self.stats.requests_sent.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes_sent.fetch_add(body.len() as u64, Ordering::Relaxed);
                    self.stats.highest_sent_ms.fetch_max(u64::try_from(newest).unwrap_or(0), Ordering::Relaxed);
                    self.set_health(Health::Ok);
                    break;
                }
                Outcome::Rejected { error } => {
                    self.stats.failed.fetch_add(n, Ordering::Relaxed);
                    self.stats.requests_rejected.fetch_add(1, Ordering::Relaxed);
                    self.set_health(Health::Rejecting(error));
                    break;
                }
                Outcome::Retry { error, retry_after } => {
                    self.stats.retried.fetch_add(n, Ordering::Relaxed);
                    self.stats.requests_retried.fetch_add(1, Ordering::Relaxed);
                    self.set_health(Health::Retrying(error));
                    let wait = retry_after.map_or(backoff, |r| r.max(backoff));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.stop.cancelled() => {
                            self.stats.dropped_shutdown.fetch_add(n, Ordering::Relaxed);
                            break;
                        }
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff.as_std());
                }
            }
        }
        let mut queue = lock(&self.queue);
        queue.finished(n as usize);
        self.stats.pending.store(queue.pending() as u64, Ordering::Relaxed);
    }

    /// Logs a change of health once, with its reason.
    fn set_health(&self, health: Health) {
        let mut current = lock(&self.health);
        let same_kind = std::mem::discriminant(&*current) == std::mem::discriminant(&health);
        if same_kind {
            return;
        }
        match &health {
            Health::Ok => tracing::info!(remote_name = %self.name, "remote_write: the receiver accepts samples again"),
            Health::Retrying(error) => tracing::warn!(
                remote_name = %self.name, %error,
                "remote_write: sending failed; retrying with backoff (samples wait in the queue)"
            ),
            Health::Rejecting(error) => tracing::error!(
                remote_name = %self.name, %error,
                "remote_write: the receiver rejected a batch; it is dropped, not retried (counted in fleetscrape_remote_write_samples_failed_total)"
            ),
        }
        *current = health;
    }

    /// Reconsiders the shard count every [`RESHARD_INTERVAL`].
    async fn reshard_loop(self: Arc<Self>) {
        let mut last_in = 0u64;
        let (mut last_sent, mut last_micros) = (0u64, 0u64);
        let mut last = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(RESHARD_INTERVAL) => {}
                () = self.stop.cancelled() => return,
            }
            let (samples_in, sent, micros) = (
                self.stats.samples_in.load(Ordering::Relaxed),
                self.stats.sent.load(Ordering::Relaxed),
                self.stats.send_micros.load(Ordering::Relaxed),
            );
            let elapsed = last.elapsed().as_secs_f64().max(0.001);
            let rate = (samples_in - last_in) as f64 / elapsed;
            let sent_now = sent - last_sent;
            let per_sample = if sent_now > 0 { (micros - last_micros) as f64 / 1e6 / sent_now as f64 } else { 0.0 };
            (last_in, last_sent, last_micros, last) = (samples_in, sent, micros, Instant::now());
            let (current, backlog, flushing) = {
                let queue = lock(&self.queue);
                (queue.shards(), queue.pending(), queue.is_flushing())
            };
            if flushing {
                return;
            }
            let bounds = (self.config.min_shards, self.config.max_shards);
            let desired = queue::desired_shards(current, bounds, rate, backlog, per_sample, RESHARD_INTERVAL);
            if desired != current {
                self.reshard(current, desired).await;
            }
        }
    }

    /// Pauses the senders, waits for their requests in flight (at most one
    /// `remote_timeout`), then redistributes the lanes.
    async fn reshard(self: &Arc<Self>, from: usize, to: usize) {
        lock(&self.queue).pause();
        let waited = Instant::now();
        while lock(&self.queue).in_flight() > 0 {
            if waited.elapsed() > Duration::from_secs(30) || self.stop.is_cancelled() {
                lock(&self.queue).resume();
                self.wake_all();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let generation = {
            let mut queue = lock(&self.queue);
            queue.reshard(to);
            queue.generation()
        };
        self.wake_all();
        self.spawn_senders(generation);
        tracing::info!(remote_name = %self.name, from, to, "remote_write: resharded");
    }
}

/// A family of one receiver's [`Stats`] and how to read it.
type ReceiverFamily = (Family<2>, fn(&Stats) -> f64);

const RECEIVER: [&str; 2] = ["remote_name", "url"];

static RECEIVER_FAMILIES: [ReceiverFamily; 14] = [
    (Family::counter("fleetscrape_remote_write_samples_in_total", "Samples offered to the queue.", RECEIVER), |s| {
        value_of(&s.samples_in)
    }),
    (Family::counter("fleetscrape_remote_write_samples_sent_total", "Samples the receiver accepted.", RECEIVER), |s| {
        value_of(&s.sent)
    }),
    (
        Family::counter(
            "fleetscrape_remote_write_samples_failed_total",
            "Samples the receiver rejected with a 4xx; not retried.",
            RECEIVER,
        ),
        |s| value_of(&s.failed),
    ),
    (
        Family::counter(
            "fleetscrape_remote_write_samples_retried_total",
            "Samples sent again after a 5xx, 429 or transport error.",
            RECEIVER,
        ),
        |s| value_of(&s.retried),
    ),
    (Family::gauge("fleetscrape_remote_write_samples_pending", "Samples waiting or being sent.", RECEIVER), |s| {
        value_of(&s.pending)
    }),
    (
        Family::gauge(
            "fleetscrape_remote_write_highest_sent_timestamp_seconds",
            "Newest sample timestamp the receiver accepted.",
            RECEIVER,
        ),
        |s| value_of(&s.highest_sent_ms) / 1000.0,
    ),
    (Family::gauge("fleetscrape_remote_write_shards", "Parallel senders.", RECEIVER), |s| value_of(&s.shards)),
    (
        Family::gauge("fleetscrape_remote_write_series", "Series remembered for staleness and ordering.", RECEIVER),
        |s| value_of(&s.series),
    ),
    (Family::counter("fleetscrape_remote_write_stale_markers_total", "Stale markers queued.", RECEIVER), |s| {
        value_of(&s.stale_markers)
    }),
    (
        Family::counter(
            "fleetscrape_remote_write_out_of_order_samples_total",
            "Samples not sent: their series already had a later one.",
            RECEIVER,
        ),
        |s| value_of(&s.out_of_order),
    ),
    (
        Family::counter(
            "fleetscrape_remote_write_relabeled_away_samples_total",
            "Samples dropped by write_relabel_configs.",
            RECEIVER,
        ),
        |s| value_of(&s.relabeled_away),
    ),
    (
        Family::counter("fleetscrape_remote_write_bytes_sent_total", "Compressed request bytes accepted.", RECEIVER),
        |s| value_of(&s.bytes_sent),
    ),
    (
        Family::counter("fleetscrape_remote_write_send_seconds_total", "Time spent in accepted requests.", RECEIVER),
        |s| seconds_of_micros(&s.send_micros),
    ),
    (Family::counter("fleetscrape_remote_write_requests_total", "Requests accepted.", RECEIVER), |s| {
        value_of(&s.requests_sent)
    }),
];

/// A family of one receiver's [`Stats`] split by one more label, and its
/// values with the counter of each.
type SplitFamily = (Family<3>, fn(&Stats) -> [(&'static str, &AtomicU64); 2]);

static SPLIT_FAMILIES: [SplitFamily; 2] = [
    (
        Family::counter(
            "fleetscrape_remote_write_samples_dropped_total",
            "Samples dropped before the receiver had them, by reason.",
            ["remote_name", "url", "reason"],
        ),
        |s| [("queue_full", &s.dropped_queue_full), ("shutdown", &s.dropped_shutdown)],
    ),
    (
        Family::counter(
            "fleetscrape_remote_write_requests_failed_total",
            "Requests that failed, by what followed.",
            ["remote_name", "url", "outcome"],
        ),
        |s| [("retried", &s.requests_retried), ("rejected", &s.requests_rejected)],
    ),
];

/// The `fleetscrape_remote_write_*` families, a sample per receiver; none
/// without receivers.
impl Collect for [ReceiverStats] {
    fn collect(&self, encoder: &mut Encoder) {
        if self.is_empty() {
            return;
        }
        for (family, read) in &RECEIVER_FAMILIES {
            let mut samples = encoder.family(family);
            for r in self {
                samples.sample([&r.name, &r.url], read(&r.stats));
            }
        }
        for (family, split) in &SPLIT_FAMILIES {
            let mut samples = encoder.family(family);
            for r in self {
                for (value, counter) in split(&r.stats) {
                    samples.sample([&r.name, &r.url, value], value_of(counter));
                }
            }
        }
    }
}
