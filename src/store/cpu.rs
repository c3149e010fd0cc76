//! CPU busy % per instance, computed at ingest from consecutive stored scrapes
//! of `node_cpu_seconds_total` as a ratio of counters:
//! `100 × Δ(Σ non-idle modes) / Δ(Σ all modes)`, summed over every CPU present
//! in both scrapes.
//!
//! This departs on purpose from dashboard 1860's `100 × (1 − avg(rate(idle)))`:
//! that form divides by wall-clock time between requests, so the latency between
//! our request and the exporter reading `/proc/stat` (an ALB hop, a slow
//! exporter), counters that advance in steps (tickless kernels account idle
//! lazily) and the jitter of the scrape itself all show up as CPU. Both terms of
//! the ratio come from the same read of `/proc/stat`, so it does not matter when
//! the scrape happened. Guest time is already inside user/nice and is not read
//! (`node_cpu_guest_seconds_total` is another metric). `iowait` counts as busy,
//! as in 1860. Never clamped: a value outside 0–100 exposes a bug.

use std::collections::HashMap;
use std::sync::Arc;

use crate::labels::FastMap;
use crate::record::{ScrapeRecord, SeriesList};

const CPU_METRIC: &str = "node_cpu_seconds_total";

/// A CPU counter of a series list: where it is, its labels text (one CPU and
/// mode), and whether it is an idle mode.
#[derive(Debug)]
struct Pick {
    position: usize,
    labels: Arc<str>,
    idle: bool,
}

/// An instance's last scrape, as far as CPU busy needs it.
#[derive(Debug)]
struct Last {
    series: Arc<SeriesList>,
    picks: Vec<Pick>,
    /// The picked counters' values, parallel to `picks`.
    values: Vec<f64>,
}

/// Sums of counter changes between two scrapes.
#[derive(Debug, Default)]
struct Delta {
    busy: f64,
    total: f64,
    reset: bool,
}

impl Delta {
    /// One counter; a non-number on either side is left out.
    fn add(&mut self, idle: bool, before: f64, now: f64) {
        if !(before.is_finite() && now.is_finite()) {
            return;
        }
        let change = now - before;
        if change < 0.0 {
            self.reset = true;
            return;
        }
        self.total += change;
        if !idle {
            self.busy += change;
        }
    }

    fn busy_percent(&self) -> Option<f64> {
        (!self.reset && self.total > 0.0).then(|| 100.0 * self.busy / self.total)
    }
}

/// Remembers each instance's last CPU counters.
#[derive(Debug, Default)]
pub struct CpuTracker {
    previous: FastMap<String, Last>,
    /// Labels text → whether it is a CPU's idle mode (`None`: no `cpu` or no
    /// `mode` label). Parsed once per distinct text: a few hundred at most.
    modes: FastMap<Arc<str>, Option<bool>>,
}

impl CpuTracker {
    /// Feeds one scrape; returns the busy % since the instance's previous
    /// scrape, or `None` for the first scrape, a scrape without CPU counters,
    /// a counter reset in any mode of any CPU (a reboot: that interval is a
    /// gap, not a guess), no CPU in common, or no CPU time elapsed.
    ///
    /// A scrape with its instance's last series list (the scraper shares it
    /// while the payload's layout holds) reads its counters by position: no
    /// string is compared. Any other is matched by labels text.
    pub fn observe(&mut self, scrape: &ScrapeRecord) -> Option<f64> {
        let instance = scrape.instance_id.as_str();
        if let Some(last) = self.previous.get_mut(instance).filter(|last| Arc::ptr_eq(&last.series, &scrape.series)) {
            let mut delta = Delta::default();
            for (pick, before) in last.picks.iter().zip(last.values.iter_mut()) {
                let now = scrape.values[pick.position];
                delta.add(pick.idle, *before, now);
                *before = now;
            }
            return delta.busy_percent();
        }
        let picks = self.picks(&scrape.series);
        if picks.is_empty() {
            return None;
        }
        let values: Vec<f64> = picks.iter().map(|pick| scrape.values[pick.position]).collect();
        let busy = self.previous.get(instance).and_then(|last| {
            let by_labels: FastMap<&str, f64> =
                last.picks.iter().zip(&last.values).map(|(pick, value)| (&*pick.labels, *value)).collect();
            let mut delta = Delta::default();
            for (pick, &now) in picks.iter().zip(&values) {
                if let Some(&before) = by_labels.get(&*pick.labels) {
                    delta.add(pick.idle, before, now);
                }
            }
            delta.busy_percent()
        });
        let last = Last { series: Arc::clone(&scrape.series), picks, values };
        self.previous.insert(instance.to_string(), last);
        busy
    }

    /// The CPU counters of a series list.
    fn picks(&mut self, series: &SeriesList) -> Vec<Pick> {
        let cpu = series.metrics.iter().zip(&series.labels).enumerate().filter(|(_, (m, _))| &***m == CPU_METRIC);
        let mut picks = Vec::new();
        for (position, (_, labels)) in cpu {
            if let Some(idle) = mode(&mut self.modes, labels) {
                picks.push(Pick { position, labels: Arc::clone(labels), idle });
            }
        }
        picks
    }

    /// Instances followed.
    pub fn instances(&self) -> usize {
        self.previous.len()
    }

    /// Forgets an instance (it left or was terminated).
    pub fn forget(&mut self, instance_id: &str) {
        self.previous.remove(instance_id);
    }
}

/// Whether `labels` is an idle mode; parsed at its first sight only.
fn mode(modes: &mut FastMap<Arc<str>, Option<bool>>, labels: &Arc<str>) -> Option<bool> {
    if let Some(known) = modes.get(labels) {
        return *known;
    }
    let parsed = serde_json::from_str::<HashMap<String, String>>(labels)
        .ok()
        .filter(|l| l.contains_key("cpu"))
        .and_then(|l| l.get("mode").map(|m| m == "idle"));
    modes.insert(Arc::clone(labels), parsed);
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SampleRecord;

    /// `samples` as a scrape of i-1 with a list of its own.
    fn of(samples: &[SampleRecord]) -> ScrapeRecord {
        ScrapeRecord::new("i-1".into(), 0.0, samples.to_vec(), vec![])
    }

    fn cpu(cpu: u32, mode: &str, value: f64) -> SampleRecord {
        SampleRecord {
            metric: CPU_METRIC.into(),
            labels: format!(r#"{{"cpu":"{cpu}","mode":"{mode}"}}"#).into(),
            value,
        }
    }

    /// A scrape of CPUs given as (user, system, iowait, idle) seconds.
    fn scrape(cpus: &[(f64, f64, f64, f64)]) -> Vec<SampleRecord> {
        let mut samples = Vec::new();
        for (i, &(user, system, iowait, idle)) in cpus.iter().enumerate() {
            let i = u32::try_from(i).unwrap();
            samples.extend([cpu(i, "user", user), cpu(i, "system", system), cpu(i, "iowait", iowait)]);
            samples.push(cpu(i, "idle", idle));
        }
        samples
    }

    #[test]
    fn busy_percent_is_a_ratio_of_counter_deltas() {
        let mut tracker = CpuTracker::default();
        assert_eq!(tracker.observe(&of(&scrape(&[(100.0, 10.0, 1.0, 1000.0), (50.0, 5.0, 0.0, 2000.0)]))), None);
        // cpu0: 8 busy (6 user, 1 system, 1 iowait) of 10; cpu1: 1 busy of 10 → 9 of 20.
        let busy = tracker.observe(&of(&scrape(&[(106.0, 11.0, 2.0, 1002.0), (51.0, 5.0, 0.0, 2009.0)]))).unwrap();
        assert!((busy - 45.0).abs() < 1e-9, "{busy}");
    }

    #[test]
    fn when_the_scrape_happened_does_not_matter() {
        // The same counters give the same value whatever the wall-clock gap:
        // nothing but the counters is read.
        let mut tracker = CpuTracker::default();
        tracker.observe(&of(&scrape(&[(0.0, 0.0, 0.0, 0.0)])));
        let busy = tracker.observe(&of(&scrape(&[(2.0, 0.0, 0.0, 8.0)]))).unwrap();
        assert!((busy - 20.0).abs() < 1e-9, "{busy}");
    }

    #[test]
    fn resets_and_odd_inputs_give_no_value() {
        let mut tracker = CpuTracker::default();
        tracker.observe(&of(&scrape(&[(500.0, 1.0, 1.0, 500.0)])));
        assert_eq!(tracker.observe(&of(&scrape(&[(3.0, 1.0, 1.0, 600.0)]))), None, "user reset");
        assert!(tracker.observe(&of(&scrape(&[(8.0, 1.0, 1.0, 700.0)]))).is_some(), "resumes after the reset");
        assert_eq!(tracker.observe(&of(&scrape(&[(8.0, 1.0, 1.0, 700.0)]))), None, "no CPU time elapsed");
        assert_eq!(tracker.observe(&ScrapeRecord { instance_id: "i-2".into(), ..of(&[]) }), None, "no CPU counters");
        tracker.forget("i-1");
        assert_eq!(tracker.observe(&of(&scrape(&[(9.0, 1.0, 1.0, 800.0)]))), None, "forgotten: first scrape again");
    }

    #[test]
    fn only_cpus_and_modes_in_both_scrapes_count() {
        let mut tracker = CpuTracker::default();
        tracker.observe(&of(&[cpu(0, "user", 10.0), cpu(0, "idle", 10.0)]));
        // cpu1 appears (hotplug) and cpu0 gains a steal mode: neither has a previous value.
        let now = [cpu(0, "user", 13.0), cpu(0, "idle", 17.0), cpu(0, "steal", 50.0), cpu(1, "idle", 99.0)];
        let busy = tracker.observe(&of(&now)).unwrap();
        assert!((busy - 30.0).abs() < 1e-9, "{busy}");
    }

    #[test]
    fn the_same_series_list_read_by_position_gives_what_a_lookup_gives() {
        let first = of(&scrape(&[(100.0, 10.0, 1.0, 1000.0), (50.0, 5.0, 0.0, 2000.0)]));
        let steps = [6.0, 1.0, 1.0, 2.0, 1.0, 0.0, 0.0, 9.0];
        let values = first.values.iter().zip(steps).map(|(v, step)| v + step).collect();
        let second = ScrapeRecord { values, ..first.clone() };
        let mut shared = CpuTracker::default();
        shared.observe(&first);
        let by_position = shared.observe(&second).unwrap();
        let mut copied = CpuTracker::default();
        copied.observe(&first);
        let mut reordered = scrape(&[(106.0, 11.0, 2.0, 1002.0), (51.0, 5.0, 0.0, 2009.0)]);
        reordered.reverse();
        let by_labels = copied.observe(&of(&reordered)).unwrap();
        assert!((by_position - 45.0).abs() < 1e-9 && (by_labels - 45.0).abs() < 1e-9, "{by_position} {by_labels}");
        // A reset read by position is still a reset, and is remembered.
        let reset = ScrapeRecord { values: vec![0.0; 8], ..first.clone() };
        assert_eq!(shared.observe(&reset), None);
        let after = ScrapeRecord { values: vec![1.0; 8], ..first.clone() };
        assert_eq!(shared.observe(&after), Some(75.0));
    }

    #[test]
    fn a_counter_that_is_not_a_number_is_left_out() {
        let mut tracker = CpuTracker::default();
        let first = of(&[cpu(0, "user", 10.0), cpu(0, "idle", 10.0), cpu(1, "user", 5.0), cpu(1, "idle", 5.0)]);
        tracker.observe(&first);
        let second = ScrapeRecord { values: vec![12.0, 12.0, f64::NAN, 9.0], ..first.clone() };
        assert_eq!(tracker.observe(&second), Some(100.0 * 2.0 / 8.0));
        let third = ScrapeRecord { values: vec![13.0, 15.0, 6.0, 9.0], ..first };
        assert_eq!(tracker.observe(&third), Some(100.0 * 1.0 / 4.0), "after a NaN, that counter waits a scrape");
    }
}
