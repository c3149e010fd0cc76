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

use crate::record::SampleRecord;

const CPU_METRIC: &str = "node_cpu_seconds_total";

/// One CPU counter of a scrape.
#[derive(Debug)]
struct Counter {
    /// The labels text (one CPU and mode), shared with the scraper's series cache.
    labels: Arc<str>,
    idle: bool,
    value: f64,
}

/// Remembers each instance's last CPU counters, in payload order.
#[derive(Debug, Default)]
pub struct CpuTracker {
    previous: FastMap<String, Vec<Counter>>,
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
    /// A payload lists its counters in the same order scrape after scrape, as
    /// the same shared labels: matched by position and allocation, a counter
    /// costs no lookup; anything else is matched by labels text.
    pub fn observe(&mut self, instance_id: &str, samples: &[SampleRecord]) -> Option<f64> {
        let before = self.previous.get(instance_id);
        let mut now: Vec<Counter> = Vec::with_capacity(before.map_or(16, Vec::len));
        for sample in samples.iter().filter(|s| &*s.metric == CPU_METRIC && s.value.is_finite()) {
            let known = before
                .and_then(|b| b.get(now.len()))
                .filter(|c| Arc::ptr_eq(&c.labels, &sample.labels))
                .map(|c| c.idle);
            let Some(idle) = known.or_else(|| mode(&mut self.modes, &sample.labels)) else { continue };
            now.push(Counter { labels: Arc::clone(&sample.labels), idle, value: sample.value });
        }
        if now.is_empty() {
            return None;
        }
        let previous = self.previous.insert(instance_id.to_string(), now)?;
        let now = &self.previous[instance_id];
        let aligned =
            previous.len() == now.len() && previous.iter().zip(now).all(|(a, b)| Arc::ptr_eq(&a.labels, &b.labels));
        let by_labels: FastMap<&str, f64> =
            if aligned { FastMap::default() } else { previous.iter().map(|c| (&*c.labels, c.value)).collect() };
        let (mut busy, mut total) = (0.0, 0.0);
        for (i, counter) in now.iter().enumerate() {
            let before = if aligned { Some(previous[i].value) } else { by_labels.get(&*counter.labels).copied() };
            let Some(before) = before else { continue };
            let change = counter.value - before;
            if change < 0.0 {
                return None;
            }
            total += change;
            if !counter.idle {
                busy += change;
            }
        }
        (total > 0.0).then(|| 100.0 * busy / total)
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
        assert_eq!(tracker.observe("i-1", &scrape(&[(100.0, 10.0, 1.0, 1000.0), (50.0, 5.0, 0.0, 2000.0)])), None);
        // cpu0: 8 busy (6 user, 1 system, 1 iowait) of 10; cpu1: 1 busy of 10 → 9 of 20.
        let busy = tracker.observe("i-1", &scrape(&[(106.0, 11.0, 2.0, 1002.0), (51.0, 5.0, 0.0, 2009.0)])).unwrap();
        assert!((busy - 45.0).abs() < 1e-9, "{busy}");
    }

    #[test]
    fn when_the_scrape_happened_does_not_matter() {
        // The same counters give the same value whatever the wall-clock gap:
        // nothing but the counters is read.
        let mut tracker = CpuTracker::default();
        tracker.observe("i-1", &scrape(&[(0.0, 0.0, 0.0, 0.0)]));
        let busy = tracker.observe("i-1", &scrape(&[(2.0, 0.0, 0.0, 8.0)])).unwrap();
        assert!((busy - 20.0).abs() < 1e-9, "{busy}");
    }

    #[test]
    fn resets_and_odd_inputs_give_no_value() {
        let mut tracker = CpuTracker::default();
        tracker.observe("i-1", &scrape(&[(500.0, 1.0, 1.0, 500.0)]));
        assert_eq!(tracker.observe("i-1", &scrape(&[(3.0, 1.0, 1.0, 600.0)])), None, "user reset");
        assert!(tracker.observe("i-1", &scrape(&[(8.0, 1.0, 1.0, 700.0)])).is_some(), "resumes after the reset");
        assert_eq!(tracker.observe("i-1", &scrape(&[(8.0, 1.0, 1.0, 700.0)])), None, "no CPU time elapsed");
        assert_eq!(tracker.observe("i-2", &[]), None, "no CPU counters");
        tracker.forget("i-1");
        assert_eq!(tracker.observe("i-1", &scrape(&[(9.0, 1.0, 1.0, 800.0)])), None, "forgotten: first scrape again");
    }

    #[test]
    fn only_cpus_and_modes_in_both_scrapes_count() {
        let mut tracker = CpuTracker::default();
        tracker.observe("i-1", &[cpu(0, "user", 10.0), cpu(0, "idle", 10.0)]);
        // cpu1 appears (hotplug) and cpu0 gains a steal mode: neither has a previous value.
        let now = [cpu(0, "user", 13.0), cpu(0, "idle", 17.0), cpu(0, "steal", 50.0), cpu(1, "idle", 99.0)];
        let busy = tracker.observe("i-1", &now).unwrap();
        assert!((busy - 30.0).abs() < 1e-9, "{busy}");
    }

    #[test]
    fn the_same_shared_labels_in_the_same_order_give_what_a_lookup_gives() {
        let first = scrape(&[(100.0, 10.0, 1.0, 1000.0), (50.0, 5.0, 0.0, 2000.0)]);
        let second: Vec<SampleRecord> = first
            .iter()
            .zip([6.0, 1.0, 1.0, 2.0, 1.0, 0.0, 0.0, 9.0])
            .map(|(s, step)| SampleRecord { value: s.value + step, ..s.clone() })
            .collect();
        let mut shared = CpuTracker::default();
        shared.observe("i-1", &first);
        let by_position = shared.observe("i-1", &second).unwrap();
        let mut copied = CpuTracker::default();
        copied.observe("i-1", &first);
        let mut reordered = scrape(&[(106.0, 11.0, 2.0, 1002.0), (51.0, 5.0, 0.0, 2009.0)]);
        reordered.reverse();
        let by_labels = copied.observe("i-1", &reordered).unwrap();
        assert!((by_position - 45.0).abs() < 1e-9 && (by_labels - 45.0).abs() < 1e-9, "{by_position} {by_labels}");
    }
}
