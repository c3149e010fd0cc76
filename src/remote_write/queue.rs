//! The queue of one receiver, as a pure core: chunks wait in per-shard FIFO
//! lanes (an instance always in the same lane, so its samples keep their
//! order), batches are taken by size or deadline, memory is bounded by
//! dropping the oldest chunks, and resharding redistributes what waits
//! without reordering. The async shell ([`super::Receiver`]) owns the
//! senders and the clock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::series::{Chunk, SeriesLabels};

/// A chunk waiting in a lane.
#[derive(Debug)]
struct Waiting {
    chunk: Chunk,
    queued_at: Instant,
}

/// Samples taken for one request: (series, timestamp ms, value).
pub type Samples = Vec<(SeriesLabels, i64, f64)>;

/// The queue's decisions and contents.
#[derive(Debug)]
pub struct QueueCore {
    lanes: Vec<VecDeque<Waiting>>,
    /// Samples waiting (not in flight).
    queued: usize,
    /// Samples taken by senders and not yet finished.
    in_flight: usize,
    /// Bound on `queued + in_flight`.
    max_pending: usize,
    max_per_send: usize,
    deadline: Duration,
    /// Incremented at each reshard: senders of an older generation stop.
    generation: u64,
    /// While set, no batch is taken (a reshard waits for senders to finish).
    pausing: bool,
    /// Send whatever waits, without waiting for the deadline (shutdown).
    flushing: bool,
}

/// What [`QueueCore::push`] had to drop to make room.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Samples queued.
    pub queued: usize,
    /// Oldest samples dropped to stay under `max_pending_samples`.
    pub dropped: usize,
}

impl QueueCore {
    /// A queue of `shards` lanes.
    pub fn new(shards: usize, max_pending: usize, max_per_send: usize, deadline: Duration) -> Self {
        Self {
            lanes: (0..shards.max(1)).map(|_| VecDeque::new()).collect(),
            queued: 0,
            in_flight: 0,
            max_pending: max_pending.max(1),
            max_per_send: max_per_send.max(1),
            deadline,
            generation: 0,
            pausing: false,
            flushing: false,
        }
    }

    /// Lanes (shards).
    pub fn shards(&self) -> usize {
        self.lanes.len()
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Samples waiting or in flight.
    pub fn pending(&self) -> usize {
        self.queued + self.in_flight
    }

    /// Samples in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The lane of a chunk key.
    fn lane(&self, key: u64) -> usize {
        (key % self.lanes.len() as u64) as usize
    }

    /// Queues `chunk`; returns its lane and what was dropped to make room.
    pub fn push(&mut self, chunk: Chunk, now: Instant) -> (usize, Pushed) {
        let lane = self.lane(chunk.key);
        let mut pushed = Pushed { queued: chunk.len(), dropped: 0 };
        while self.queued + self.in_flight + chunk.len() > self.max_pending {
            match self.drop_oldest() {
                Some(n) => pushed.dropped += n,
                None => break,
            }
        }
        if self.queued + self.in_flight + chunk.len() > self.max_pending {
            // Even alone it does not fit beside what is in flight.
            pushed.dropped += chunk.len();
            pushed.queued = 0;
            return (lane, pushed);
        }
        self.queued += chunk.len();
        self.lanes[lane].push_back(Waiting { chunk, queued_at: now });
        (lane, pushed)
    }

    /// Drops the oldest waiting chunk of all lanes; its sample count.
    fn drop_oldest(&mut self) -> Option<usize> {
        let lane = (0..self.lanes.len())
            .filter(|&i| !self.lanes[i].is_empty())
            .min_by_key(|&i| self.lanes[i].front().map(|w| (w.chunk.time_ms, w.queued_at)))?;
        let waiting = self.lanes[lane].pop_front()?;
        self.queued -= waiting.chunk.len();
        Some(waiting.chunk.len())
    }

    fn lane_len(&self, lane: usize) -> usize {
        self.lanes[lane].iter().map(|w| w.chunk.len()).sum()
    }

    /// When `lane`'s oldest chunk reaches its deadline (`None`: empty lane).
    pub fn due(&self, lane: usize) -> Option<Instant> {
        self.lanes.get(lane)?.front().map(|w| w.queued_at + self.deadline)
    }

    /// Whether `lane` has a batch to send at `now`: a full one, one whose
    /// oldest sample waited `batch_send_deadline`, or anything when flushing.
    pub fn ready(&self, lane: usize, now: Instant) -> bool {
        if self.pausing || lane >= self.lanes.len() || self.lanes[lane].is_empty() {
            return false;
        }
        self.flushing || self.due(lane).is_some_and(|due| due <= now) || self.lane_len(lane) >= self.max_per_send
    }

    /// Takes up to `max_samples_per_send` samples from the front of `lane`
    /// when it is [`ready`](Self::ready); they count as in flight until
    /// [`finished`](Self::finished).
    pub fn take(&mut self, lane: usize, now: Instant) -> Option<Samples> {
        if !self.ready(lane, now) {
            return None;
        }
        let mut samples: Samples = Vec::with_capacity(self.max_per_send.min(self.queued));
        let queue = &mut self.lanes[lane];
        while let Some(front) = queue.front_mut() {
            let room = self.max_per_send - samples.len();
            if room == 0 {
                break;
            }
            let time = front.chunk.time_ms;
            if front.chunk.len() <= room {
                let waiting = queue.pop_front()?;
                samples.extend(waiting.chunk.samples.into_iter().map(|(l, v)| (l, time, v)));
            } else {
                samples.extend(front.chunk.samples.drain(..room).map(|(l, v)| (l, time, v)));
            }
        }
        self.queued -= samples.len();
        self.in_flight += samples.len();
        Some(samples)
    }

    /// A taken batch of `n` samples is done (sent, rejected or abandoned).
    pub fn finished(&mut self, n: usize) {
        self.in_flight = self.in_flight.saturating_sub(n);
    }

    /// Stops batches from being taken, for a reshard.
    pub fn pause(&mut self) {
        self.pausing = true;
    }

    /// Takes batches again, without resharding.
    pub fn resume(&mut self) {
        self.pausing = false;
    }

    /// From now on every lane sends what it has at once.
    pub fn flush(&mut self) {
        self.flushing = true;
    }

    /// Whether shutdown flushing is on.
    pub fn is_flushing(&self) -> bool {
        self.flushing
    }

    /// Redistributes what waits over `shards` lanes and starts a new
    /// generation. Each instance's chunks come from one old lane in order
    /// and go to one new lane in that order, so nothing is reordered.
    /// Call with nothing in flight.
    pub fn reshard(&mut self, shards: usize) {
        let old = std::mem::take(&mut self.lanes);
        self.lanes = (0..shards.max(1)).map(|_| VecDeque::new()).collect();
        for lane in old {
            for waiting in lane {
                let to = self.lane(waiting.chunk.key);
                self.lanes[to].push_back(waiting);
            }
        }
        self.generation += 1;
        self.pausing = false;
    }

    /// Drops everything waiting (the shutdown budget ran out); the count.
    pub fn drain(&mut self) -> usize {
        let n = self.queued;
        for lane in &mut self.lanes {
            lane.clear();
        }
        self.queued = 0;
        n
    }
}

/// How many shards keep up, from what is measured (Prometheus's rule in
/// spirit): the samples arriving per second plus the backlog to clear within
/// `catch_up`, over what one shard sends per second; within
/// `[min, max]`; a change only when it is over 30 % away from `current`
/// (upwards at once when behind), so the count does not flap.
pub fn desired_shards(
    current: usize,
    (min, max): (usize, usize),
    samples_in_per_second: f64,
    backlog: usize,
    seconds_per_sample: f64,
    catch_up: Duration,
) -> usize {
    if seconds_per_sample <= 0.0 || !seconds_per_sample.is_finite() {
        return current.clamp(min, max);
    }
    let needed = (samples_in_per_second + backlog as f64 / catch_up.as_secs_f64().max(1.0)) * seconds_per_sample;
    let desired = (needed * 1.1).ceil().max(1.0) as usize;
    let desired = desired.clamp(min, max);
    let far_below = (desired as f64) <= current as f64 * 0.7;
    let far_above = (desired as f64) >= current as f64 * 1.3;
    if far_above || far_below || (desired > current && backlog > 0) { desired } else { current.clamp(min, max) }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn chunk(key: u64, time_ms: i64, n: usize) -> Chunk {
        let labels = Arc::new(key.to_le_bytes().to_vec());
        Chunk { key, time_ms, samples: (0..n).map(|i| (Arc::clone(&labels), i as f64)).collect() }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_are_taken_by_size_or_deadline_and_split_chunks() {
        let start = Instant::now();
        let mut q = QueueCore::new(1, 100, 4, Duration::from_secs(5));
        q.push(chunk(0, 1, 3), start);
        assert!(q.take(0, start).is_none(), "3 < 4 and the deadline is 5 s away");
        assert_eq!(q.due(0), Some(start + Duration::from_secs(5)));
        q.push(chunk(0, 2, 3), start);
        let batch = q.take(0, start).expect("6 ≥ 4: a full batch");
        assert_eq!(batch.iter().map(|(_, t, _)| *t).collect::<Vec<_>>(), [1, 1, 1, 2], "in order, the chunk split");
        assert_eq!((q.pending(), q.in_flight()), (6, 4));
        q.finished(4);
        assert!(q.take(0, start + Duration::from_secs(4)).is_none());
        let rest = q.take(0, start + Duration::from_secs(5)).expect("the deadline passed");
        assert_eq!(rest.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_chunks_make_room_and_are_counted() {
        let now = Instant::now();
        let mut q = QueueCore::new(2, 10, 100, Duration::from_secs(5));
        assert_eq!(q.push(chunk(0, 10, 4), now).1.dropped, 0);
        assert_eq!(q.push(chunk(1, 20, 4), now).1.dropped, 0);
        let (_, pushed) = q.push(chunk(1, 30, 4), now);
        assert_eq!(pushed, Pushed { queued: 4, dropped: 4 }, "the t=10 chunk (lane 0) is the oldest");
        assert_eq!(q.pending(), 8);
        q.flush();
        let lane1 = q.take(1, now).unwrap();
        assert_eq!(lane1.iter().map(|(_, t, _)| *t).collect::<Vec<_>>(), [20, 20, 20, 20, 30, 30, 30, 30]);
        assert_eq!(q.push(chunk(0, 40, 11), now).1, Pushed { queued: 0, dropped: 11 }, "larger than the bound");
    }

    #[tokio::test(start_paused = true)]
    async fn resharding_keeps_each_instances_order() {
        let now = Instant::now();
        let mut q = QueueCore::new(3, 1000, 1000, Duration::from_secs(5));
        for t in 0..20 {
            for key in 0..7u64 {
                q.push(chunk(key, t, 1), now);
            }
        }
        q.pause();
        assert!(q.take(0, now + Duration::from_secs(9)).is_none(), "paused");
        let generation = q.generation();
        q.reshard(5);
        assert_eq!((q.shards(), q.generation()), (5, generation + 1));
        q.flush();
        let mut seen: std::collections::BTreeMap<Vec<u8>, Vec<i64>> = Default::default();
        for lane in 0..5 {
            for (labels, t, _) in q.take(lane, now).unwrap_or_default() {
                seen.entry(labels.to_vec()).or_default().push(t);
            }
        }
        assert_eq!(seen.len(), 7);
        for times in seen.values() {
            assert_eq!(*times, (0..20).collect::<Vec<_>>());
        }
    }

    #[test]
    fn shards_follow_the_load_without_flapping() {
        let catch_up = Duration::from_secs(10);
        // 10k samples/s at 1 ms per 100 samples: 0.1 shard → the minimum.
        assert_eq!(desired_shards(1, (1, 50), 10_000.0, 0, 1e-5, catch_up), 1);
        // 200k samples/s at 100 µs per sample → 20 s/s of sending: 22 shards.
        assert_eq!(desired_shards(1, (1, 50), 200_000.0, 0, 1e-4, catch_up), 22);
        assert_eq!(desired_shards(22, (1, 50), 190_000.0, 0, 1e-4, catch_up), 22, "within 30 %: no change");
        assert_eq!(desired_shards(22, (1, 50), 2e6, 0, 1e-4, catch_up), 50, "capped at max_shards");
        assert_eq!(desired_shards(4, (2, 50), 0.0, 0, 1e-4, catch_up), 2, "down to min_shards");
    }
}
