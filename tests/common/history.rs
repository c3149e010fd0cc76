//! A recorded history of the store's write path, shared by the crash test
//! (`tests/store_kill.rs`) and the migration test of schema 0008
//! (`tests/migration.rs`); `tests/data/db/v0008.rs` includes this file to
//! write the v0008 fixture with the code of that schema, so it uses only the
//! store API that existed then.

use fleetscrape::store::{Batch, SampleRecord, ScrapeRecord};

/// The history's first scrape time.
pub const T0: f64 = 1_764_000_000.0;

/// 40 minutes of 12 instances at 15 s, 60 series each: counters (one resets),
/// gauges, a NaN, a series that comes and goes.
pub fn history() -> Vec<Batch> {
    (0..160u32)
        .map(|k| {
            let scrapes = (0..12u32)
                .map(|i| {
                    let time = T0 + 15.0 * f64::from(k) + 0.01 * f64::from(i);
                    let mut samples: Vec<SampleRecord> = (0..50u32)
                        .map(|s| SampleRecord {
                            metric: "node_cpu_seconds_total".into(),
                            labels: format!(r#"{{"cpu":"{s}","mode":"idle"}}"#).into(),
                            value: if i == 3 && k == 90 { 1.0 } else { f64::from(k * (s % 5) + i) },
                        })
                        .collect();
                    samples.extend((0..9u32).map(|s| SampleRecord {
                        metric: "node_load1".into(),
                        labels: format!(r#"{{"n":"{s}"}}"#).into(),
                        value: if (k + s) % 13 == 0 { f64::NAN } else { f64::from((k / 3 + s) % 4) },
                    }));
                    if k % 11 > 2 {
                        samples.push(SampleRecord { metric: "node_flaky".into(), labels: "{}".into(), value: 1.0 });
                    }
                    let types = vec![("node_cpu_seconds_total".into(), "counter"), ("node_load1".into(), "gauge")];
                    ScrapeRecord::new(format!("i-{i:02}").as_str().into(), time, samples, types)
                })
                .collect();
            Batch { scrapes, ..Batch::default() }
        })
        .collect()
}
