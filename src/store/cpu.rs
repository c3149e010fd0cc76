//! CPU busy % per instance, computed at ingest from consecutive scrapes of
//! `node_cpu_seconds_total{mode="idle"}`, as dashboard 1860's "CPU Busy":
//! `100 × (1 − mean over CPUs of Δidle / Δt)`, with Δt the exact time between
//! the two scrapes. Never clamped: a value far outside 0–100 exposes a bug.

use std::collections::{BTreeMap, HashMap};

use super::record::SampleRecord;

const CPU_METRIC: &str = "node_cpu_seconds_total";

#[derive(Debug, Clone)]
struct Previous {
    time: f64,
    idle: BTreeMap<String, f64>,
}

/// Remembers each instance's last idle counters.
#[derive(Debug, Default)]
pub struct CpuTracker {
    previous: HashMap<String, Previous>,
}

impl CpuTracker {
    /// Feeds one scrape; returns the busy % since the instance's previous
    /// scrape, or `None` for the first scrape, a scrape without CPU counters,
    /// a counter reset (a reboot: that interval is a gap, not a guess), or no
    /// CPU in common.
    pub fn observe(&mut self, instance_id: &str, time: f64, samples: &[SampleRecord]) -> Option<f64> {
        let idle = idle_counters(samples);
        if idle.is_empty() {
            return None;
        }
        let previous = self.previous.insert(instance_id.to_string(), Previous { time, idle: idle.clone() })?;
        let elapsed = time - previous.time;
        if elapsed <= 0.0 {
            return None;
        }
        let mut deltas = Vec::with_capacity(idle.len());
        for (cpu, now) in &idle {
            if let Some(before) = previous.idle.get(cpu) {
                if now < before {
                    return None;
                }
                deltas.push(now - before);
            }
        }
        if deltas.is_empty() {
            return None;
        }
        let mean_idle = deltas.iter().sum::<f64>() / deltas.len() as f64;
        Some(100.0 * (1.0 - mean_idle / elapsed))
    }

    /// Forgets an instance (it left or was terminated).
    pub fn forget(&mut self, instance_id: &str) {
        self.previous.remove(instance_id);
    }
}

fn idle_counters(samples: &[SampleRecord]) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter(|s| s.metric == CPU_METRIC && s.labels.contains("\"idle\""))
        .filter_map(|s| {
            let labels: BTreeMap<String, String> = serde_json::from_str(&s.labels).ok()?;
            if labels.get("mode")? != "idle" {
                return None;
            }
            Some((labels.get("cpu")?.clone(), s.value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(cpu: u32, mode: &str, value: f64) -> SampleRecord {
        SampleRecord { metric: CPU_METRIC.into(), labels: format!(r#"{{"cpu":"{cpu}","mode":"{mode}"}}"#), value }
    }

    #[test]
    fn busy_percent_from_idle_deltas_and_exact_time() {
        let mut tracker = CpuTracker::default();
        assert_eq!(
            tracker.observe("i-1", 100.0, &[cpu(0, "idle", 1000.0), cpu(1, "idle", 2000.0), cpu(0, "user", 5.0)]),
            None
        );
        // 10 s later: cpu0 idle 9 s (10% busy), cpu1 idle 1 s (90% busy) → 50%.
        let busy = tracker.observe("i-1", 110.0, &[cpu(0, "idle", 1009.0), cpu(1, "idle", 2001.0)]).unwrap();
        assert!((busy - 50.0).abs() < 1e-9, "{busy}");
        // 2.5 s later, fully idle.
        let busy = tracker.observe("i-1", 112.5, &[cpu(0, "idle", 1011.5), cpu(1, "idle", 2003.5)]).unwrap();
        assert!(busy.abs() < 1e-9, "{busy}");
    }

    #[test]
    fn resets_and_odd_inputs_give_no_value() {
        let mut tracker = CpuTracker::default();
        tracker.observe("i-1", 0.0, &[cpu(0, "idle", 500.0)]);
        assert_eq!(tracker.observe("i-1", 10.0, &[cpu(0, "idle", 3.0)]), None, "counter reset");
        assert!(tracker.observe("i-1", 20.0, &[cpu(0, "idle", 8.0)]).is_some(), "resumes after the reset");
        assert_eq!(tracker.observe("i-1", 20.0, &[cpu(0, "idle", 9.0)]), None, "no time elapsed");
        assert_eq!(tracker.observe("i-2", 0.0, &[]), None, "no CPU counters");
        tracker.forget("i-1");
        assert_eq!(tracker.observe("i-1", 30.0, &[cpu(0, "idle", 9.0)]), None, "forgotten: first scrape again");
    }

    #[test]
    fn not_clamped() {
        let mut tracker = CpuTracker::default();
        tracker.observe("i-1", 0.0, &[cpu(0, "idle", 0.0)]);
        // More idle time than wall time: a bug upstream must stay visible.
        let busy = tracker.observe("i-1", 10.0, &[cpu(0, "idle", 12.0)]).unwrap();
        assert!((busy + 20.0).abs() < 1e-9, "{busy}");
    }
}
