//! From what the scraper hands over ([`Batch`]) to remote-write samples:
//! label sets a Prometheus user can join on, one `up` and
//! `scrape_duration_seconds` per instance per interval, and stale markers.
//! A pure core: no I/O, no clock (times come in).
//!
//! **Labels.** Every series carries the instance's labels (`job`,
//! `instance` = the EC2 instance id, `instance_id`, `role`, `asg_name`,
//! `availability_zone`, what relabeling kept), then the scraped labels; a
//! scraped label whose name the instance already has is renamed
//! `exported_<name>` (`scrape.honor_labels` keeps the scraped one), then
//! external labels where the series has none of that name, then
//! `write_relabel_configs`.
//!
//! **Per interval.** A stored payload gives `up 1`, `scrape_duration_seconds`
//! and `scrape_samples_post_metric_relabeling`; an instance whose own
//! scrape failed gives `up 0`. An interval in which the balancer did not
//! send one request to a member is not a failure of the member: it gives no
//! `up` at all, only `fleetscrape_alb_reached 0` (every via-ALB interval
//! gives `fleetscrape_alb_reached`, 1 when reached).
//!
//! **Staleness**, as Prometheus: a series in the previous payload and not in
//! this one is marked stale at this payload's time; every series of an
//! instance that leaves the topology (terminated, deregistered, dropped by
//! relabeling, moved to another shard) or whose labels change is marked
//! stale at once; after `stale_after` consecutive failed or unreached
//! intervals, every series but `up` and `fleetscrape_alb_reached` is marked
//! stale (after `stale_after` unreached intervals, `up` too: nothing says the
//! member is down). A series never goes back in time: a sample at or before
//! the series' last timestamp is not sent (a receiver would reject the
//! whole request).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::discovery::{Target, Topology};
use crate::labels::{FastMap, LabelSet};
use crate::record::FailureReason;
use crate::record::{Batch, InstanceId, ScrapeRecord, StatusRecord};
use crate::relabel::{self, RelabelConfig};

use super::wire;

/// A series' encoded labels, shared by every queued sample of it.
pub type SeriesLabels = Arc<Vec<u8>>;

/// Samples of one instance at one time, queued together.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Which shard sends it: a hash of the instance id, so an instance's
    /// samples keep their order.
    pub key: u64,
    /// Milliseconds since the epoch.
    pub time_ms: i64,
    /// (series, value) pairs.
    pub samples: Vec<(SeriesLabels, f64)>,
}

impl Chunk {
    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether it holds no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// How series are labelled.
#[derive(Debug, Clone, Default)]
pub struct LabelRules {
    /// The `job` label.
    pub job: String,
    /// Added where a series has no label of that name.
    pub external_labels: BTreeMap<String, String>,
    /// `scrape.honor_labels`.
    pub honor_labels: bool,
    /// `write_relabel_configs`.
    pub write_relabel_configs: Vec<RelabelConfig>,
    /// Consecutive missed intervals before an instance's series go stale.
    pub stale_after: u32,
}

/// Where a series comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Payload,
    /// `scrape_duration_seconds`, `scrape_samples_post_metric_relabeling`.
    Interval,
    Up,
    Reached,
}

#[derive(Debug)]
struct SeriesState {
    /// `None`: dropped by `write_relabel_configs`.
    labels: Option<SeriesLabels>,
    origin: Origin,
    last_ms: i64,
    /// The payload it was last seen in.
    seen: u64,
    /// Marked stale and not written since.
    stale: bool,
}

/// (metric, labels JSON) as the scraper's records carry them.
type SeriesKey = (Arc<str>, Arc<str>);

#[derive(Debug, Default)]
struct InstanceSeries {
    /// Instance labels, sorted (`job` and `instance` included).
    labels: LabelSet,
    key: u64,
    series: FastMap<SeriesKey, SeriesState>,
    payloads: u64,
    /// Consecutive intervals without a payload.
    missed: u32,
    /// Whether a missed interval of the current streak was the instance's
    /// own failure (not only the balancer's).
    failed_in_streak: bool,
    /// The [`Translator::generation`] its labels were last checked against.
    checked: u64,
}

/// What the translator counts, beyond the samples it returns.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TranslateCounts {
    /// Samples not sent: at or before their series' last timestamp.
    pub out_of_order: u64,
    /// Samples dropped by `write_relabel_configs`.
    pub relabeled_away: u64,
    /// Stale markers produced.
    pub stale_markers: u64,
}

/// Remembers each instance's series between intervals.
#[derive(Debug, Default)]
pub struct Translator {
    rules: LabelRules,
    instances: FastMap<InstanceId, InstanceSeries>,
    counts: TranslateCounts,
    metric_names: MetricNames,
    /// The last topology batches were read against, and its number: an
    /// instance's labels are looked up once per topology, not once per batch.
    topology: Option<Arc<Topology>>,
    generation: u64,
}

#[derive(Debug)]
struct MetricNames {
    up: Arc<str>,
    duration: Arc<str>,
    samples: Arc<str>,
    reached: Arc<str>,
    no_labels: Arc<str>,
}

impl Default for MetricNames {
    fn default() -> Self {
        Self {
            up: "up".into(),
            duration: "scrape_duration_seconds".into(),
            samples: "scrape_samples_post_metric_relabeling".into(),
            reached: "fleetscrape_alb_reached".into(),
            no_labels: "{}".into(),
        }
    }
}

/// The shard key of an instance.
pub fn instance_key(instance_id: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = foldhash::fast::FixedState::with_seed(0x5eed).build_hasher();
    hasher.write(instance_id.as_bytes());
    hasher.finish()
}

fn to_ms(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

/// The instance labels of `target` for remote write.
pub fn target_labels(target: &Target, job: &str) -> LabelSet {
    let mut labels = target.instance_labels();
    labels.insert("job".into(), job.into());
    labels.insert("instance".into(), target.instance.id.to_string());
    labels
}

impl Translator {
    /// A translator labelling series by `rules`.
    pub fn new(rules: LabelRules) -> Self {
        Self { rules, ..Self::default() }
    }

    /// Counts so far.
    pub fn counts(&self) -> TranslateCounts {
        self.counts
    }

    /// Series remembered (all instances).
    pub fn series(&self) -> usize {
        self.instances.values().map(|i| i.series.len()).sum()
    }

    /// The chunks of one batch: its payloads and interval outcomes, read
    /// against `topology` for instance labels.
    pub fn translate(&mut self, batch: &Batch, topology: Option<&Arc<Topology>>) -> Vec<Chunk> {
        if let Some(current) = topology
            && !self.topology.as_ref().is_some_and(|seen| Arc::ptr_eq(seen, current))
        {
            self.topology = Some(Arc::clone(current));
            self.generation += 1;
        }
        let topology = topology.map(|t| &**t);
        let mut chunks = Vec::new();
        for record in &batch.scrapes {
            chunks.extend(self.instance(&record.instance_id, topology, to_ms(record.time)));
            if let Some(chunk) = self.payload(record) {
                chunks.push(chunk);
            }
        }
        for status in &batch.statuses {
            chunks.extend(self.instance(&status.instance_id, topology, to_ms(status.time)));
            if let Some(chunk) = self.interval(status) {
                chunks.push(chunk);
            }
        }
        chunks
    }

    /// Stale markers at `now` for every instance that is no longer scraped
    /// in `topology`, or whose labels changed; forgets them.
    pub fn topology_changed(&mut self, topology: &Topology, now: f64) -> Vec<Chunk> {
        let job = self.rules.job.clone();
        let gone: Vec<InstanceId> = self
            .instances
            .iter()
            .filter(|(id, state)| match topology.target(id).filter(|t| t.is_scraped()) {
                None => true,
                Some(target) => target_labels(target, &job) != state.labels,
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut chunks = Vec::new();
        for id in gone {
            if let Some(mut state) = self.instances.remove(&id) {
                let chunk = self.stale_all(&mut state, to_ms(now), |_| true);
                chunks.extend(chunk);
            }
        }
        chunks
    }

    /// Makes sure the instance is known with its current labels; stale
    /// markers (at `now`) for its series when those labels changed.
    fn instance(&mut self, id: &InstanceId, topology: Option<&Topology>, now: i64) -> Option<Chunk> {
        let mut entry = self.instances.remove(id).unwrap_or_else(|| InstanceSeries {
            key: instance_key(id.as_str()),
            labels: LabelSet::from([
                ("instance".into(), id.to_string()),
                ("instance_id".into(), id.to_string()),
                ("job".into(), self.rules.job.clone()),
            ]),
            ..InstanceSeries::default()
        });
        let mut markers = None;
        let labels = (entry.checked != self.generation)
            .then(|| topology.and_then(|t| t.target(id)).map(|t| target_labels(t, &self.rules.job)))
            .flatten();
        entry.checked = self.generation;
        if let Some(labels) = labels
            && labels != entry.labels
        {
            // New instance labels are a new target: its series start over.
            markers = self.stale_all(&mut entry, now, |_| true);
            entry.labels = labels;
            entry.series.clear();
        }
        self.instances.insert(id.clone(), entry);
        markers
    }

    fn payload(&mut self, record: &ScrapeRecord) -> Option<Chunk> {
        let mut state = self.instances.remove(&record.instance_id)?;
        state.payloads += 1;
        state.missed = 0;
        state.failed_in_streak = false;
        let (now, payload) = (to_ms(record.time), state.payloads);
        let mut chunk = Chunk { key: state.key, time_ms: now, samples: Vec::with_capacity(record.len()) };
        for sample in record.samples() {
            let key = (Arc::clone(sample.metric), Arc::clone(sample.labels));
            let series = match state.series.get_mut(&key) {
                Some(series) => series,
                None => {
                    let labels = self.series_labels(&state.labels, sample.metric, Some(sample.labels));
                    let series =
                        SeriesState { labels, origin: Origin::Payload, last_ms: i64::MIN, seen: 0, stale: false };
                    state.series.entry(key).or_insert(series)
                }
            };
            series.seen = payload;
            self.counts.push(&mut chunk, series, now, sample.value);
        }
        // Series of the previous payload missing from this one end here.
        let mut gone = Vec::new();
        for (key, series) in &mut state.series {
            if series.origin == Origin::Payload && series.seen != payload {
                if !series.stale {
                    self.counts.stale(&mut chunk, series, now);
                }
                gone.push(key.clone());
            }
        }
        for key in gone {
            state.series.remove(&key);
        }
        self.instances.insert(record.instance_id.clone(), state);
        (!chunk.is_empty()).then_some(chunk)
    }

    fn interval(&mut self, status: &StatusRecord) -> Option<Chunk> {
        let mut state = self.instances.remove(&status.instance_id)?;
        let now = to_ms(status.time);
        let mut chunk = Chunk { key: state.key, time_ms: now, samples: Vec::new() };
        let unreached = status.reason == Some(FailureReason::NotReachedViaAlb);
        let names = [
            (Arc::clone(&self.metric_names.up), Origin::Up),
            (Arc::clone(&self.metric_names.duration), Origin::Interval),
            (Arc::clone(&self.metric_names.samples), Origin::Interval),
            (Arc::clone(&self.metric_names.reached), Origin::Reached),
        ];
        let mut values: Vec<(usize, f64)> = Vec::new();
        if status.path.is_via_alb() || unreached {
            values.push((3, if unreached { 0.0 } else { 1.0 }));
        }
        if !unreached {
            values.push((0, if status.up { 1.0 } else { 0.0 }));
        }
        if status.up {
            values.push((1, status.duration_seconds));
            values.push((2, f64::from(status.samples)));
        }
        for (index, value) in values {
            let (metric, origin) = &names[index];
            let key = (Arc::clone(metric), Arc::clone(&self.metric_names.no_labels));
            if !state.series.contains_key(&key) {
                let labels = self.series_labels(&state.labels, metric, None);
                state.series.insert(
                    key.clone(),
                    SeriesState { labels, origin: *origin, last_ms: i64::MIN, seen: 0, stale: false },
                );
            }
            if let Some(series) = state.series.get_mut(&key) {
                self.counts.push(&mut chunk, series, now, value);
            }
        }
        if status.up {
            state.missed = 0;
            state.failed_in_streak = false;
        } else {
            state.missed = state.missed.saturating_add(1);
            state.failed_in_streak |= !unreached;
            if state.missed == self.rules.stale_after {
                // `up 0` stays while the instance's own failure is the last
                // word; after only unreached intervals nothing says anything.
                let keep_up = state.failed_in_streak;
                let stale = |origin: Origin| match origin {
                    Origin::Payload | Origin::Interval => true,
                    Origin::Up => !keep_up,
                    Origin::Reached => false,
                };
                if let Some(markers) = self.stale_all(&mut state, now, stale) {
                    chunk.samples.extend(markers.samples);
                }
            }
        }
        self.instances.insert(status.instance_id.clone(), state);
        (!chunk.is_empty()).then_some(chunk)
    }

    /// Stale markers for the instance's series whose origin `which` picks.
    fn stale_all(&mut self, state: &mut InstanceSeries, now: i64, which: impl Fn(Origin) -> bool) -> Option<Chunk> {
        let mut chunk = Chunk { key: state.key, time_ms: now, samples: Vec::new() };
        for series in state.series.values_mut() {
            if which(series.origin) && !series.stale {
                self.counts.stale(&mut chunk, series, now);
            }
        }
        (!chunk.is_empty()).then_some(chunk)
    }

    /// The encoded labels of a new series; `None` when relabeling drops it.
    fn series_labels(&mut self, instance: &LabelSet, metric: &str, scraped: Option<&str>) -> Option<SeriesLabels> {
        let mut labels = instance.clone();
        if let Some(json) = scraped {
            let scraped: BTreeMap<String, String> = serde_json::from_str(json).unwrap_or_default();
            for (name, value) in scraped {
                if value.is_empty() {
                    continue;
                }
                if labels.contains_key(&name) && !self.rules.honor_labels {
                    labels.insert(format!("exported_{name}"), value);
                } else {
                    labels.insert(name, value);
                }
            }
        }
        labels.insert("__name__".into(), metric.into());
        for (name, value) in &self.rules.external_labels {
            labels.entry(name.clone()).or_insert_with(|| value.clone());
        }
        if !self.rules.write_relabel_configs.is_empty() {
            labels = relabel::process(&labels, &self.rules.write_relabel_configs)?;
        }
        labels.retain(|_, value| !value.is_empty());
        Some(Arc::new(wire::encode_labels(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))))
    }
}

impl TranslateCounts {
    fn push(&mut self, chunk: &mut Chunk, series: &mut SeriesState, now: i64, value: f64) {
        let Some(labels) = &series.labels else {
            self.relabeled_away += 1;
            return;
        };
        if now <= series.last_ms {
            self.out_of_order += 1;
            return;
        }
        series.last_ms = now;
        series.stale = false;
        chunk.samples.push((Arc::clone(labels), value));
    }

    fn stale(&mut self, chunk: &mut Chunk, series: &mut SeriesState, now: i64) {
        let Some(labels) = &series.labels else { return };
        // A marker goes after the series' last sample, even if the clock says otherwise.
        if now <= series.last_ms {
            return;
        }
        series.last_ms = now;
        series.stale = true;
        self.stale_markers += 1;
        chunk.samples.push((Arc::clone(labels), wire::stale_nan()));
    }
}

#[cfg(test)]
mod tests;
