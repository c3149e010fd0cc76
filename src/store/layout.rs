//! Each instance's last scrape, as the store resolved it: per sample (in
//! payload order) its series id, slot and whether it is a counter. The
//! scraper hands over the same shared [`SeriesList`] scrape after scrape
//! while an instance's payload lists the same series in the same order, so
//! such a scrape resolves with one pointer comparison: no hashing, no string
//! comparison. Holding the `Arc` keeps its address from being reused.

use std::sync::Arc;

use crate::labels::FastMap;
use crate::record::{ScrapeRecord, SeriesList};

/// A sample resolved: (slot, series id, counter).
pub type Resolved = (u32, i64, bool);

#[derive(Debug)]
struct Layout {
    series: Arc<SeriesList>,
    resolved: Vec<Resolved>,
    /// The highest slot resolved, plus one.
    slots: usize,
}

/// How an instance's last scrape resolved: per sample, and the slots its
/// log row spans.
pub type Resolution<'a> = (&'a [Resolved], usize);

/// The layouts of the instances being written.
#[derive(Debug, Default)]
pub struct Layouts {
    by_instance: FastMap<String, Layout>,
}

impl Layouts {
    /// The resolution of `scrape` if it has its instance's last layout (the
    /// same series list), else `None`.
    pub fn get(&self, scrape: &ScrapeRecord) -> Option<Resolution<'_>> {
        let layout = self.by_instance.get(scrape.instance_id.as_str())?;
        Arc::ptr_eq(&layout.series, &scrape.series).then_some((layout.resolved.as_slice(), layout.slots))
    }

    /// Remembers how `scrape` resolved.
    pub fn set(&mut self, scrape: &ScrapeRecord, resolved: Vec<Resolved>) {
        let slots = resolved.iter().map(|(slot, ..)| *slot as usize + 1).max().unwrap_or(0);
        let layout = Layout { series: Arc::clone(&scrape.series), resolved, slots };
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
    use crate::record::SampleRecord;

    fn scrape(samples: &[(&Arc<str>, &Arc<str>)]) -> ScrapeRecord {
        let samples = samples
            .iter()
            .map(|(m, l)| SampleRecord { metric: Arc::clone(m), labels: Arc::clone(l), value: 1.0 })
            .collect();
        ScrapeRecord::new("i-a".into(), 1.0, samples, vec![])
    }

    #[test]
    fn the_same_series_list_resolves_without_lookup() {
        let (m, a, b): (Arc<str>, Arc<str>, Arc<str>) = ("m".into(), "{\"a\":\"1\"}".into(), "{\"a\":\"2\"}".into());
        let mut layouts = Layouts::default();
        let first = scrape(&[(&m, &a), (&m, &b)]);
        assert!(layouts.get(&first).is_none());
        layouts.set(&first, vec![(0, 10, false), (1, 11, false)]);
        let next = ScrapeRecord { time: 2.0, values: vec![2.0, 3.0], ..first.clone() };
        assert_eq!(layouts.get(&next), Some((&[(0, 10, false), (1, 11, false)][..], 2)));
        assert!(layouts.get(&scrape(&[(&m, &a), (&m, &b)])).is_none(), "equal series, another list");
        let other = ScrapeRecord { instance_id: "i-b".into(), ..first.clone() };
        assert!(layouts.get(&other).is_none(), "another instance");
        layouts.forget("i-a");
        assert!(layouts.get(&first).is_none());
    }
}
