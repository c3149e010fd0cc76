//! Each instance's last scrape, as the store resolved it: per sample (in
//! payload order) its series id, slot and whether it is a counter. The
//! scraper hands over the same shared `Arc<str>` names and labels scrape
//! after scrape (its series cache), so when every sample of a scrape is the
//! same allocation as in the last one, the scrape resolves with two pointer
//! comparisons a sample: no hashing, no string comparison. Holding the
//! `Arc`s keeps their addresses from being reused by other text.

use std::sync::Arc;

use crate::labels::FastMap;
use crate::record::{SampleRecord, ScrapeRecord};

/// A sample resolved: (slot, series id, counter).
pub type Resolved = (u32, i64, bool);

#[derive(Debug, Default)]
struct Layout {
    metrics: Vec<Arc<str>>,
    labels: Vec<Arc<str>>,
    resolved: Vec<Resolved>,
    types: Vec<Arc<str>>,
}

/// The layouts of the instances being written.
#[derive(Debug, Default)]
pub struct Layouts {
    by_instance: FastMap<String, Layout>,
}

impl Layouts {
    /// The resolution of `scrape` if it has its instance's last layout (same
    /// samples in the same order, same type declarations), else `None`.
    pub fn get(&self, scrape: &ScrapeRecord) -> Option<&[Resolved]> {
        let layout = self.by_instance.get(scrape.instance_id.as_str())?;
        let same = layout.resolved.len() == scrape.samples.len()
            && layout.types.len() == scrape.types.len()
            && scrape.types.iter().zip(&layout.types).all(|((name, _), known)| Arc::ptr_eq(name, known))
            && scrape.samples.iter().zip(layout.metrics.iter().zip(&layout.labels)).all(
                |(sample, (metric, labels))| Arc::ptr_eq(&sample.metric, metric) && Arc::ptr_eq(&sample.labels, labels),
            );
        same.then_some(layout.resolved.as_slice())
    }

    /// Remembers how `scrape` resolved.
    pub fn set(&mut self, scrape: &ScrapeRecord, resolved: Vec<Resolved>) {
        let layout = Layout {
            metrics: scrape.samples.iter().map(|s: &SampleRecord| Arc::clone(&s.metric)).collect(),
            labels: scrape.samples.iter().map(|s| Arc::clone(&s.labels)).collect(),
            resolved,
            types: scrape.types.iter().map(|(name, _)| Arc::clone(name)).collect(),
        };
        self.by_instance.insert(scrape.instance_id.to_string(), layout);
    }

    /// Forgets an instance (it left, or its series were deleted).
    pub fn forget(&mut self, instance: &str) {
        self.by_instance.remove(instance);
    }

    /// Forgets every instance (a failed transaction: ids may not exist).
    pub fn clear(&mut self) {
        self.by_instance.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(samples: &[(&Arc<str>, &Arc<str>)]) -> ScrapeRecord {
        ScrapeRecord {
            instance_id: "i-a".into(),
            time: 1.0,
            samples: samples
                .iter()
                .map(|(m, l)| SampleRecord { metric: Arc::clone(m), labels: Arc::clone(l), value: 1.0 })
                .collect(),
            types: vec![],
        }
    }

    #[test]
    fn the_same_allocations_in_the_same_order_resolve_without_lookup() {
        let (m, a, b): (Arc<str>, Arc<str>, Arc<str>) = ("m".into(), "{\"a\":\"1\"}".into(), "{\"a\":\"2\"}".into());
        let mut layouts = Layouts::default();
        let first = scrape(&[(&m, &a), (&m, &b)]);
        assert!(layouts.get(&first).is_none());
        layouts.set(&first, vec![(0, 10, false), (1, 11, false)]);
        assert_eq!(layouts.get(&scrape(&[(&m, &a), (&m, &b)])), Some(&[(0, 10, false), (1, 11, false)][..]));
        assert!(layouts.get(&scrape(&[(&m, &b), (&m, &a)])).is_none(), "another order");
        assert!(layouts.get(&scrape(&[(&m, &a)])).is_none(), "a sample fewer");
        let same_text: Arc<str> = "{\"a\":\"1\"}".into();
        assert!(layouts.get(&scrape(&[(&m, &same_text), (&m, &b)])).is_none(), "equal text, another allocation");
        layouts.forget("i-a");
        assert!(layouts.get(&first).is_none());
    }
}
