//! The pure part of compaction: one series' rows of one block, in, its change
//! points and rollup buckets, out. No SQL, no clock.

/// Seconds in a block: the unit of compaction, and the 5-minute rollup bucket.
pub const BLOCK_SECONDS: i64 = 300;

/// The block holding `time` (epoch seconds).
pub fn block_of(time: f64) -> i64 {
    (time / BLOCK_SECONDS as f64).floor() as i64
}

/// Milliseconds from the start of `block` to `time`.
pub fn offset_ms(block: i64, time: f64) -> i64 {
    ((time - (block * BLOCK_SECONDS) as f64) * 1000.0).round() as i64
}

/// What a change point says from its frame on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PointValue {
    /// The series has this value (NaN included).
    Value(f64),
    /// The series is absent from the scrape: no value until the next point.
    Absent,
}

/// The series' last sample before the block being compacted, for counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Previous {
    /// Epoch seconds.
    pub time: f64,
    /// Its value, never NaN.
    pub value: f64,
}

/// The summary of one series over one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Bucket start, epoch seconds.
    pub start: i64,
    /// Samples in the bucket that are numbers (NaN is not counted).
    pub count: u32,
    /// Sum, min, max and last of the values that are not NaN; `None` when all were.
    pub stats: Option<Stats>,
    /// For counters: the reset-aware increase, and the seconds it spans.
    pub increase: Option<Increase>,
}

/// Sum, min, max and last value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Sum.
    pub sum: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// The latest value.
    pub last: f64,
}

/// A counter's increase over a bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Increase {
    /// Sum over consecutive samples of `later − earlier`, or `later` after a reset.
    pub increase: f64,
    /// Seconds between the first sample of those pairs and the last.
    pub span: f64,
}

impl Bucket {
    fn new(start: i64) -> Self {
        Self { start, count: 0, stats: None, increase: None }
    }

    fn add(&mut self, value: f64) {
        if value.is_nan() {
            return;
        }
        self.count += 1;
        self.stats = Some(match self.stats {
            None => Stats { sum: value, min: value, max: value, last: value },
            Some(s) => Stats { sum: s.sum + value, min: s.min.min(value), max: s.max.max(value), last: value },
        });
    }

    fn add_increase(&mut self, increase: f64, span: f64) {
        let known = self.increase.unwrap_or(Increase { increase: 0.0, span: 0.0 });
        self.increase = Some(Increase { increase: known.increase + increase, span: known.span + span });
    }

    /// Merges `later`, the bucket that follows this one, into it.
    pub fn merge(&mut self, later: &Bucket) {
        self.count += later.count;
        self.stats = match (self.stats, later.stats) {
            (Some(a), Some(b)) => {
                Some(Stats { sum: a.sum + b.sum, min: a.min.min(b.min), max: a.max.max(b.max), last: b.last })
            }
            (a, b) => a.or(b),
        };
        if let Some(i) = later.increase {
            self.add_increase(i.increase, i.span);
        }
    }
}

/// What compaction writes for one series of one block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compacted {
    /// Change points: (milliseconds into the block, value).
    pub points: Vec<(i64, PointValue)>,
    /// One bucket per minute that has samples, in time order.
    pub minutes: Vec<Bucket>,
    /// The last sample that is not NaN, for the next block's counter increase.
    pub last: Option<Previous>,
}

impl Compacted {
    /// The block's 5-minute bucket: every minute merged.
    pub fn block_bucket(&self, block: i64) -> Option<Bucket> {
        let mut minutes = self.minutes.iter();
        let mut bucket = *minutes.next()?;
        bucket.start = block * BLOCK_SECONDS;
        for minute in minutes {
            bucket.merge(minute);
        }
        Some(bucket)
    }
}

/// Compacts one series of one block.
///
/// `frames`: the times of its instance's stored scrapes in the block, sorted;
/// `rows`: the series' samples in the block, sorted by time, each at one of
/// those frames; `previous`: its last sample before the block, for counters.
///
/// A point is written at the series' first frame in the block (a keyframe, so
/// that a block reads alone and retention can drop whole blocks), whenever the
/// value changes, and, marked [`PointValue::Absent`], at the first frame the
/// series is missing from. A frame the instance did not answer has no frame at
/// all, so it stays a gap and never ends a run of equal values.
pub fn compact_series(
    block: i64,
    frames: &[f64],
    rows: &[(f64, f64)],
    previous: Option<Previous>,
    counter: bool,
) -> Compacted {
    let mut out = Compacted::default();
    let mut rollup = MinuteRollup::resume(previous);
    let mut current: Option<PointValue> = None;
    let mut rows = rows.iter().peekable();
    for &frame in frames {
        let present = rows.next_if(|(time, _)| *time <= frame).filter(|(time, _)| *time == frame);
        let next = match present {
            Some(&(_, value)) => PointValue::Value(value),
            None if current.is_some() => PointValue::Absent,
            None => continue,
        };
        if !current.is_some_and(|c| same(c, next)) {
            out.points.push((offset_ms(block, frame), next));
            current = Some(next);
        }
        if let Some(&(time, value)) = present {
            out.minutes.extend(rollup.add(time, value, counter));
        }
    }
    out.minutes.extend(rollup.close());
    out.last = rollup.last();
    out
}

/// One series' 5-minute bucket of a block and its last sample that is not
/// NaN: what [`compact_series`] gives as [`Compacted::block_bucket`] and
/// [`Compacted::last`] (its minutes merged in the same order, so the same
/// bits), without the change points and minutes the block writer does not
/// write. `rows`: the series' samples in the block, sorted by time.
pub fn block_rollup(
    block: i64,
    rows: &[(f64, f64)],
    previous: Option<Previous>,
    counter: bool,
) -> (Option<Bucket>, Option<Previous>) {
    let mut rollup = MinuteRollup::resume(previous);
    let mut merged: Option<Bucket> = None;
    let mut fold = |minute: Bucket| match merged.as_mut() {
        Some(bucket) => bucket.merge(&minute),
        None => merged = Some(Bucket { start: block * BLOCK_SECONDS, ..minute }),
    };
    for &(time, value) in rows {
        if let Some(minute) = rollup.add(time, value, counter) {
            fold(minute);
        }
    }
    if let Some(minute) = rollup.close() {
        fold(minute);
    }
    (merged, rollup.last())
}

/// A series' open 1-minute bucket, fed one sample at a time in time order:
/// what compaction computes over a block's rows, and what the store's head
/// computes at ingest, by the same code.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MinuteRollup {
    open: Option<Bucket>,
    /// The last sample that is not NaN, for a counter's increase.
    last: Option<Previous>,
}

impl MinuteRollup {
    /// A rollup whose series' last sample (for counters) was `previous`.
    pub fn resume(previous: Option<Previous>) -> Self {
        Self { open: None, last: previous }
    }

    /// Adds a sample; returns the bucket it closed when it starts a new minute.
    pub fn add(&mut self, time: f64, value: f64, counter: bool) -> Option<Bucket> {
        let start = (time / 60.0).floor() as i64 * 60;
        let closed = match self.open {
            Some(b) if b.start == start => None,
            _ => self.open.replace(Bucket::new(start)),
        };
        let bucket = self.open.get_or_insert(Bucket::new(start));
        bucket.add(value);
        if !value.is_nan() {
            if let Some(previous) = self.last.filter(|_| counter) {
                // A counter that went down was reset: it counted `value` since.
                let increase = if value >= previous.value { value - previous.value } else { value };
                bucket.add_increase(increase, time - previous.time);
            }
            self.last = Some(Previous { time, value });
        }
        closed
    }

    /// Closes the open bucket, if any.
    pub fn close(&mut self) -> Option<Bucket> {
        self.open.take()
    }

    /// The last sample that is not NaN.
    pub fn last(&self) -> Option<Previous> {
        self.last
    }
}

/// Equal values compare by bits, every NaN alike: a change point is only
/// skipped when the stored value would read back the same.
fn same(a: PointValue, b: PointValue) -> bool {
    match (a, b) {
        (PointValue::Value(x), PointValue::Value(y)) => same_value(x, y),
        (PointValue::Absent, PointValue::Absent) => true,
        _ => false,
    }
}

/// Whether two samples store the same: equal bits, or both NaN.
pub fn same_value(x: f64, y: f64) -> bool {
    (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
}

/// The value a frame reads, from a block's points: the latest at or before
/// it. The views do the same in SQL; tests check one against the other.
pub fn value_at(points: &[(i64, PointValue)], toff: i64) -> Option<f64> {
    match points.iter().rev().find(|(t, _)| *t <= toff)?.1 {
        PointValue::Value(v) => Some(v),
        PointValue::Absent => None,
    }
}

#[cfg(test)]
mod tests;
