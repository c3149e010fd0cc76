//! The head: what the store keeps in memory per series to write the
//! 1-minute rollups at ingest, when a minute closes, without reading any
//! sample back. One entry per instance: its series by slot, each with its
//! open minute ([`MinuteRollup`]); the instance's open minute, shared by its
//! series (they are scraped together).
//!
//! A minute closes at its instance's first scrape in a later minute, or, for
//! an instance that stopped answering, [`Head::close_idle`] after a grace
//! period. The buckets a scrape closes are written in the transaction that
//! logs the scrape, so after a crash the head is rebuilt by replaying the
//! scrape log: every minute before the last one of each
//! instance is already on disk.

use super::compact::core::{Bucket, MinuteRollup, Previous};
use super::log::Slot;
use crate::labels::FastMap;

/// One series of an instance, by slot.
#[derive(Debug, Clone, Copy, Default)]
struct SeriesHead {
    series_id: i64,
    counter: bool,
    rollup: MinuteRollup,
}

/// One instance's series and open minute.
#[derive(Debug)]
pub struct InstanceHead {
    series: Vec<SeriesHead>,
    /// Start of the instance's open minute.
    open_minute: Option<i64>,
    /// The newest scrape added.
    last_time: f64,
}

/// Seconds of silence after which an instance's head is dropped.
pub const FORGET_AFTER: f64 = 600.0;

/// A bucket closed by the head: (series id, bucket).
pub type Closed = (i64, Bucket);

/// The in-memory state of the open minutes.
#[derive(Debug, Default)]
pub struct Head {
    instances: FastMap<String, InstanceHead>,
}

impl Default for InstanceHead {
    fn default() -> Self {
        Self { series: Vec::new(), open_minute: None, last_time: f64::NEG_INFINITY }
    }
}

impl InstanceHead {
    /// Sets the last sample of the counter in `slot` (described before),
    /// from before the scrape log: its increase goes on from there.
    pub fn resume(&mut self, slot: u32, previous: Previous) {
        if let Some(series) = self.series.get_mut(slot as usize).filter(|s| s.counter) {
            series.rollup = MinuteRollup::resume(Some(previous));
        }
    }

    /// Whether a scrape at `time` is new: later than every scrape added.
    pub fn is_new(&self, time: f64) -> bool {
        time > self.last_time
    }

    /// Whether any slot has been described since the head was created.
    pub fn is_described(&self) -> bool {
        !self.series.is_empty()
    }

    /// Notes which series sits in `slot` (before its values are added).
    pub fn describe(&mut self, slot: u32, series_id: i64, counter: bool) {
        let slot = slot as usize;
        if self.series.len() <= slot {
            self.series.resize(slot + 1, SeriesHead::default());
        }
        let entry = &mut self.series[slot];
        if entry.series_id != series_id {
            *entry = SeriesHead { series_id, counter, rollup: MinuteRollup::default() };
        }
        entry.counter = counter;
    }

    /// Adds one scrape at `time`: `slots[i]` is the value of slot `i`
    /// (described before), `None` when absent. Closed buckets are appended
    /// to `closed`, in slot order. A scrape not later than the last one
    /// changes nothing (a duplicate; its minute may be written).
    pub fn add(&mut self, time: f64, slots: &[Slot], closed: &mut Vec<Closed>) {
        if !self.is_new(time) {
            return;
        }
        self.last_time = time;
        let minute = (time / 60.0).floor() as i64 * 60;
        match self.open_minute {
            Some(open) if minute == open => {}
            _ => {
                close_all(self, closed);
                self.open_minute = Some(minute);
            }
        }
        for (series, value) in self.series.iter_mut().zip(slots) {
            if let Some(value) = value {
                // The minute changed above: nothing closes here.
                let _ = series.rollup.add(time, *value, series.counter);
            }
        }
    }
}

impl Head {
    /// The head of `instance`, created empty.
    pub fn instance(&mut self, instance: &str) -> &mut InstanceHead {
        if !self.instances.contains_key(instance) {
            self.instances.insert(instance.to_string(), InstanceHead::default());
        }
        self.instances.get_mut(instance).expect("inserted above")
    }

    /// Closes the open minutes that ended before `before` (instances that
    /// stopped answering, or a block about to be written), and forgets the
    /// instances silent for [`FORGET_AFTER`] seconds (gone, or down long
    /// enough that a counter's continuity no longer matters).
    pub fn close_idle(&mut self, before: f64, closed: &mut Vec<Closed>) {
        for head in self.instances.values_mut() {
            if head.open_minute.is_some_and(|m| (m + 60) as f64 <= before) {
                close_all(head, closed);
                head.open_minute = None;
            }
        }
        self.instances.retain(|_, head| head.open_minute.is_some() || head.last_time + FORGET_AFTER >= before);
    }

    /// Forgets an instance (gone past retention).
    pub fn forget(&mut self, instance: &str) {
        self.instances.remove(instance);
    }

    /// Closes an instance's open minute and forgets it (it left its group or
    /// was terminated: no scrape will close the minute).
    pub fn retire(&mut self, instance: &str, closed: &mut Vec<Closed>) {
        if let Some(mut head) = self.instances.remove(instance) {
            close_all(&mut head, closed);
        }
    }

    /// Instances held.
    pub fn instances(&self) -> usize {
        self.instances.len()
    }
}

fn close_all(head: &mut InstanceHead, closed: &mut Vec<Closed>) {
    for series in &mut head.series {
        if let Some(bucket) = series.rollup.close() {
            closed.push((series.series_id, bucket));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::compact::core::{BLOCK_SECONDS, compact_series};
    use super::*;

    /// A recorded history: per scrape, the values of three series (a
    /// counter with a reset, a gauge with NaN, a series that comes and goes).
    fn history() -> Vec<(f64, Vec<Slot>)> {
        let mut out = Vec::new();
        for i in 0..70 {
            let time = 600.0 + f64::from(i) * 7.5 + 0.25;
            let counter = if i == 30 { 3.0 } else { f64::from(i * 10 % 400) };
            let gauge = if i % 11 == 0 { f64::NAN } else { f64::from(i % 4) };
            let flaky = (i % 9 > 2).then_some(f64::from(i / 5));
            out.push((time, vec![Some(counter), Some(gauge), flaky]));
        }
        out
    }

    #[test]
    fn ingest_gives_the_minutes_compaction_computes_from_the_same_rows() {
        let history = history();
        let mut head = Head::default();
        for (slot, counter) in [(0, true), (1, false), (2, false)] {
            head.instance("i-1").describe(slot, 100 + i64::from(slot), counter);
        }
        let mut closed = Vec::new();
        for (time, slots) in &history {
            head.instance("i-1").add(*time, slots, &mut closed);
        }
        head.close_idle(f64::INFINITY, &mut closed);
        // Compaction's view: the rows of each block, the previous sample carried over.
        for (slot, counter) in [(0, true), (1, false), (2, false)] {
            let series_id = 100 + i64::from(slot);
            let mut expected = Vec::new();
            let mut previous = None;
            let first_block = super::super::compact::core::block_of(history[0].0);
            for block in first_block..first_block + 3 {
                let in_block: Vec<&(f64, Vec<Slot>)> =
                    history.iter().filter(|(t, _)| (*t / BLOCK_SECONDS as f64).floor() as i64 == block).collect();
                let frames: Vec<f64> = in_block.iter().map(|(t, _)| *t).collect();
                let rows: Vec<(f64, f64)> =
                    in_block.iter().filter_map(|(t, s)| s[slot as usize].map(|v| (*t, v))).collect();
                let out = compact_series(block, &frames, &rows, previous, counter);
                previous = out.last.or(previous);
                expected.extend(out.minutes);
            }
            let got: Vec<Bucket> = closed.iter().filter(|(id, _)| *id == series_id).map(|(_, b)| *b).collect();
            assert_eq!(format!("{got:?}"), format!("{expected:?}"), "slot {slot}");
            assert!(got.len() >= 8, "slot {slot}: {} minutes", got.len());
        }
    }

    #[test]
    fn a_minute_closes_at_the_next_minutes_scrape_or_when_idle() {
        let mut head = Head::default();
        head.instance("i-1").describe(0, 7, false);
        let mut closed = Vec::new();
        head.instance("i-1").add(60.0, &[Some(1.0)], &mut closed);
        head.instance("i-1").add(119.0, &[Some(3.0)], &mut closed);
        assert!(closed.is_empty());
        head.instance("i-1").add(121.0, &[Some(5.0)], &mut closed);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].0, closed[0].1.start, closed[0].1.count), (7, 60, 2));
        head.close_idle(179.0, &mut closed);
        assert_eq!(closed.len(), 1, "minute 120 has not ended");
        head.close_idle(180.0, &mut closed);
        assert_eq!((closed[1].1.start, closed[1].1.count), (120, 1));
        head.instance("i-1").add(100.0, &[Some(9.0)], &mut closed);
        head.close_idle(f64::INFINITY, &mut closed);
        assert_eq!(closed.len(), 2, "a scrape of a minute already written changes nothing");
    }

    #[test]
    fn replay_rebuilds_the_open_minute_of_an_interrupted_run() {
        let history = history();
        let mut run = Head::default();
        let mut rebuilt = Head::default();
        for head in [&mut run, &mut rebuilt] {
            head.instance("i-1").describe(0, 1, true);
            head.instance("i-1").describe(1, 2, false);
            head.instance("i-1").describe(2, 3, false);
        }
        let (before, after) = history.split_at(40);
        let mut closed = Vec::new();
        for (time, slots) in before {
            run.instance("i-1").add(*time, slots, &mut closed);
            rebuilt.instance("i-1").add(*time, slots, &mut Vec::new());
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (time, slots) in after {
            run.instance("i-1").add(*time, slots, &mut a);
            rebuilt.instance("i-1").add(*time, slots, &mut b);
        }
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
}
