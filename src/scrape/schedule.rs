//! When rounds run: every job's intervals are numbered values ([`Tick`]),
//! fixed when the round starts and carried by every request of the round.
//!
//! A job's interval `k` starts at epoch `phase + k × interval` (the phase is
//! hashed from the job's key, spreading jobs like Prometheus spreads targets)
//! and its round must end by the tick's deadline, [`margin`] before the next
//! interval starts: rounds never overlap, so nothing is stored twice. The
//! schedule runs on a monotonic clock anchored once to the wall clock
//! ([`Clock`]), so a wall-clock step neither skips nor repeats an interval.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// How long before the next interval a round must have ended: 5 % of the
/// interval, at least 10 ms and at most 500 ms. It leaves the round's batch
/// time to reach the writer before the next round of the same job starts.
pub fn margin(interval: Duration) -> Duration {
    (interval / 20).clamp(Duration::from_millis(10), Duration::from_millis(500))
}

/// Epoch time for the scheduler: tokio's monotonic clock (which tests can
/// pause) anchored to an epoch instant once.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor: Instant,
    /// Epoch nanoseconds at `anchor`.
    epoch_nanos: i128,
    /// Scrape timestamps read the system clock (production) or derive from
    /// the anchor (deterministic tests).
    wall_timestamps: bool,
}

impl Clock {
    /// Anchored now; timestamps read the system clock.
    pub fn system() -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self { anchor: Instant::now(), epoch_nanos: now.as_nanos() as i128, wall_timestamps: true }
    }

    /// Anchored at `epoch` seconds now; everything derives from tokio's clock
    /// (paused-time tests are then fully deterministic).
    pub fn starting_at(epoch: f64) -> Self {
        Self { anchor: Instant::now(), epoch_nanos: (epoch * 1e9) as i128, wall_timestamps: false }
    }

    fn nanos_at(&self, at: Instant) -> i128 {
        match at.checked_duration_since(self.anchor) {
            Some(after) => self.epoch_nanos + after.as_nanos() as i128,
            None => self.epoch_nanos - self.anchor.duration_since(at).as_nanos() as i128,
        }
    }

    fn instant_at(&self, nanos: i128) -> Instant {
        let offset = nanos - self.epoch_nanos;
        let magnitude = Duration::from_nanos(u64::try_from(offset.unsigned_abs()).unwrap_or(u64::MAX));
        if offset >= 0 { self.anchor + magnitude } else { self.anchor.checked_sub(magnitude).unwrap_or(self.anchor) }
    }

    /// Epoch seconds at a monotonic instant.
    pub fn epoch_at(&self, at: Instant) -> f64 {
        self.nanos_at(at) as f64 / 1e9
    }

    /// Epoch seconds now, millisecond precision: the timestamp of a request
    /// sent now.
    pub fn timestamp(&self) -> f64 {
        let nanos = if self.wall_timestamps {
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i128
        } else {
            self.nanos_at(Instant::now())
        };
        (nanos / 1_000_000) as f64 / 1000.0
    }
}

/// One interval of one job: its number, when it starts, and when its round
/// must have ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Intervals since the epoch, counted from the job's phase.
    pub index: i64,
    /// When the round starts.
    pub start: Instant,
    /// When the round must have ended (the next start minus [`margin`]).
    pub deadline: Instant,
}

/// A job's intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    interval: Duration,
    phase: Duration,
}

impl Schedule {
    /// Intervals of `interval` starting `phase` after each multiple of it
    /// since the epoch (`phase` is taken modulo the interval).
    pub fn new(interval: Duration, phase: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        let phase = Duration::from_nanos((phase.as_nanos() % interval.as_nanos()) as u64);
        Self { interval, phase }
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn start_nanos(&self, index: i64) -> i128 {
        self.phase.as_nanos() as i128 + i128::from(index) * self.interval.as_nanos() as i128
    }

    /// The number of the interval `at` falls in.
    pub fn index_at(&self, clock: &Clock, at: Instant) -> i64 {
        let since_phase = clock.nanos_at(at) - self.phase.as_nanos() as i128;
        i64::try_from(since_phase.div_euclid(self.interval.as_nanos() as i128)).unwrap_or(i64::MAX)
    }

    /// Interval `index`.
    pub fn tick(&self, clock: &Clock, index: i64) -> Tick {
        let start = clock.instant_at(self.start_nanos(index));
        let next = clock.instant_at(self.start_nanos(index.saturating_add(1)));
        Tick { index, start, deadline: next - margin(self.interval) }
    }

    /// The first interval that starts at or after `at`.
    pub fn first_tick_from(&self, clock: &Clock, at: Instant) -> Tick {
        let current = self.tick(clock, self.index_at(clock, at));
        if current.start >= at { current } else { self.tick(clock, current.index.saturating_add(1)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticks_are_numbered_from_the_phase_and_end_before_the_next() {
        let clock = Clock::starting_at(1000.0);
        let schedule = Schedule::new(Duration::from_secs(15), Duration::from_secs(4));
        // 1000 s = 66 × 15 + 10: the interval starting at 994 s (4 + 66 × 15).
        assert_eq!(schedule.index_at(&clock, Instant::now()), 66);
        let tick = schedule.first_tick_from(&clock, Instant::now());
        assert_eq!(tick.index, 67);
        assert_eq!(clock.epoch_at(tick.start), 1009.0);
        assert_eq!(tick.deadline, tick.start + Duration::from_millis(14_500), "15 s less the 500 ms margin");
    }

    #[test]
    fn margin_is_five_percent_within_bounds() {
        assert_eq!(margin(Duration::from_secs(15)), Duration::from_millis(500));
        assert_eq!(margin(Duration::from_secs(2)), Duration::from_millis(100));
        assert_eq!(margin(Duration::from_millis(100)), Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_request_keeps_its_round_s_interval() {
        // The defect this replaces: a slot computed from each request's own
        // time rounded to the nearest interval put a request sent past half
        // the interval in the next interval's slot.
        let clock = Clock::starting_at(0.0);
        let schedule = Schedule::new(Duration::from_secs(2), Duration::ZERO);
        let tick = schedule.first_tick_from(&clock, Instant::now());
        let late = tick.start + Duration::from_millis(1_700);
        assert_eq!(schedule.index_at(&clock, late), tick.index);
        assert!(late < tick.deadline);
    }

    #[test]
    fn timestamps_have_millisecond_precision() {
        let t = Clock::system().timestamp();
        assert_eq!((t * 1000.0).round() / 1000.0, t);
    }
}
