//! An attributed payload → a [`ScrapeRecord`]: labels as canonical JSON,
//! Prometheus's `exported_` rule for labels that collide with the instance's
//! own labels, and `metric_relabel_configs`.

use std::collections::BTreeMap;

use crate::labels::FastMap;
use std::sync::Arc;

use crate::discovery::Target;
use crate::exposition::{Payload, Sample};
use crate::labels::LabelSet;
use crate::record::{SampleRecord, ScrapeRecord};
use crate::relabel::{self, RelabelConfig};

/// Labels every stored series carries through its instance (the `instances`
/// table): a scraped label of the same name is renamed `exported_<name>`.
pub const INSTANCE_LABELS: [&str; 4] = ["instance_id", "role", "asg_name", "availability_zone"];

/// How payloads become records.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Keep colliding scraped labels as they are.
    pub honor_labels: bool,
    /// Rules applied to every sample (`__name__` included) before storage.
    pub metric_relabel_configs: Vec<RelabelConfig>,
}

/// A series as converted once for one instance: its stored name and labels
/// (shared by every record of it), and its metric type.
#[derive(Debug, Clone)]
struct Converted {
    metric: Arc<str>,
    labels: Arc<str>,
    kind: &'static str,
}

/// A cached series (`None`: dropped by `metric_relabel_configs`) and the
/// scrape it was last seen in.
type Entry = (Option<Converted>, u64);

/// What conversion remembers of one instance's series between scrapes, so a
/// known series costs two hash lookups on borrowed text, no label parsing,
/// no map and no JSON (the way Prometheus's scrape cache maps a series' text
/// to its reference). Entries are valid for one set of instance labels; a
/// change (relabeling, a new ASG) starts the cache over. Series gone from a
/// payload are dropped once the cache holds twice what the payload has.
#[derive(Debug, Default)]
pub struct SeriesCache {
    reserved: LabelSet,
    /// metric name → raw label text → the converted series (`None`: dropped
    /// by `metric_relabel_configs`), with the scrape it was last seen in.
    entries: FastMap<Box<str>, FastMap<Box<str>, Entry>>,
    len: usize,
    scrapes: u64,
}

impl SeriesCache {
    /// Series remembered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn prune(&mut self, seen_now: usize) {
        if self.len <= 2 * seen_now.max(1) {
            return;
        }
        let current = self.scrapes;
        for by_labels in self.entries.values_mut() {
            by_labels.retain(|_, (_, seen)| *seen == current);
        }
        self.entries.retain(|_, by_labels| !by_labels.is_empty());
        self.len = self.entries.values().map(FastMap::len).sum();
    }
}

/// Converts a payload attributed to `target`, scraped at `time`.
pub fn to_record(payload: &Payload<'_>, target: &Target, time: f64, options: &ConvertOptions) -> ScrapeRecord {
    to_record_cached(payload, target, time, options, &mut SeriesCache::default())
}

/// [`to_record`] through the instance's [`SeriesCache`].
pub fn to_record_cached(
    payload: &Payload<'_>,
    target: &Target,
    time: f64,
    options: &ConvertOptions,
    cache: &mut SeriesCache,
) -> ScrapeRecord {
    let reserved = target.instance_labels();
    if cache.reserved != reserved {
        *cache = SeriesCache { reserved, ..SeriesCache::default() };
    }
    cache.scrapes += 1;
    let scrape = cache.scrapes;
    let mut samples = Vec::with_capacity(payload.samples.len());
    let mut types: Vec<(Arc<str>, &'static str)> = Vec::new();
    for sample in &payload.samples {
        let cached = cache.entries.get_mut(sample.name).and_then(|by_labels| by_labels.get_mut(sample.raw_labels()));
        let converted = match cached {
            Some((converted, seen)) => {
                *seen = scrape;
                converted.clone()
            }
            None => {
                let converted = convert(payload, sample, &cache.reserved, options);
                cache
                    .entries
                    .entry(sample.name.into())
                    .or_default()
                    .insert(sample.raw_labels().into(), (converted.clone(), scrape));
                cache.len += 1;
                converted
            }
        };
        let Some(converted) = converted else { continue };
        // Families are contiguous in an exposition: one entry per family.
        if types.last().is_none_or(|(metric, _)| *metric != converted.metric) {
            types.push((Arc::clone(&converted.metric), converted.kind));
        }
        samples.push(SampleRecord { metric: converted.metric, labels: converted.labels, value: sample.value });
    }
    cache.prune(payload.samples.len());
    types.sort();
    types.dedup();
    ScrapeRecord { instance_id: target.instance.id.clone(), time, samples, types }
}

/// One new series: the `exported_` rule, `metric_relabel_configs`, canonical JSON.
fn convert(
    payload: &Payload<'_>,
    sample: &Sample<'_>,
    reserved: &LabelSet,
    options: &ConvertOptions,
) -> Option<Converted> {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    // An empty value is no label, in Prometheus's data model (node_exporter
    // writes some, e.g. `duplex=""`): kept, `{x=""}` and `{}` would be two series.
    for (name, value) in sample.labels().filter(|(_, value)| !value.is_empty()) {
        let name = if !options.honor_labels && reserved.contains_key(name) {
            format!("exported_{name}")
        } else {
            name.to_string()
        };
        labels.insert(name, value.into_owned());
    }
    let mut metric = sample.name.to_string();
    if !options.metric_relabel_configs.is_empty() {
        (metric, labels) = relabel_sample(&metric, labels, reserved, &options.metric_relabel_configs)?;
    }
    let kind = payload.metric_type(sample.name).as_str();
    let labels = serde_json::to_string(&labels).unwrap_or_else(|_| "{}".into());
    Some(Converted { metric: metric.into(), labels: labels.into(), kind })
}

/// Runs the rules over `__name__` + scraped labels + instance labels, then
/// takes back the name and the scraped labels (instance labels stay the
/// instance's). `None` when a rule drops the sample.
fn relabel_sample(
    metric: &str,
    labels: BTreeMap<String, String>,
    reserved: &LabelSet,
    rules: &[RelabelConfig],
) -> Option<(String, BTreeMap<String, String>)> {
    let mut all: LabelSet = reserved.clone();
    all.extend(labels);
    all.insert("__name__".into(), metric.into());
    let mut out = relabel::process(&all, rules)?;
    let metric = out.remove("__name__").filter(|n| !n.is_empty())?;
    out.retain(|name, _| !reserved.contains_key(name) && !name.starts_with("__"));
    Some((metric, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::model::Instance;
    use crate::discovery::{Role, Target};
    use crate::exposition::{Limits, parse};

    fn target() -> Target {
        Target {
            instance: Instance {
                state: crate::discovery::model::InstanceState::Running,
                availability_zone: Some("ap-northeast-2a".into()),
                ..Instance::not_found("i-0abc1234def567890")
            },
            role: Role::Basic,
            asg: None,
            paths: vec![],
            discovered_labels: Default::default(),
            labels: Some([("__address__".into(), "x:1".into()), ("name".into(), "web-1".into())].into()),
            skip: None,
        }
    }

    #[test]
    fn colliding_labels_are_exported_and_labels_are_canonical_json() {
        let text =
            "ec2_instance_info{instance_id=\"i-0abc1234def567890\",az=\"a\"} 1\nm{name=\"x\",b=\"2\",a=\"1\"} 3\n";
        let payload = parse(text, &Limits::default()).unwrap();
        let record = to_record(&payload, &target(), 10.0, &ConvertOptions::default());
        assert_eq!(record.instance_id, "i-0abc1234def567890");
        assert_eq!(&*record.samples[0].labels, r#"{"az":"a","exported_instance_id":"i-0abc1234def567890"}"#);
        assert_eq!(
            &*record.samples[1].labels, r#"{"a":"1","b":"2","exported_name":"x"}"#,
            "relabel-kept labels are instance labels too"
        );
        let honored =
            to_record(&payload, &target(), 10.0, &ConvertOptions { honor_labels: true, ..Default::default() });
        assert_eq!(&*honored.samples[0].labels, r#"{"az":"a","instance_id":"i-0abc1234def567890"}"#);
    }

    #[test]
    fn a_label_with_an_empty_value_is_no_label_as_in_prometheus() {
        let payload =
            parse("node_network_info{device=\"eth0\",duplex=\"\"} 1\nb{x=\"\"} 2\nb 3\n", &Limits::default()).unwrap();
        let record = to_record(&payload, &target(), 1.0, &ConvertOptions::default());
        let labels: Vec<&str> = record.samples.iter().map(|s| &*s.labels).collect();
        assert_eq!(labels, [r#"{"device":"eth0"}"#, "{}", "{}"], "b{{x=\"\"}} and b are one series");
    }

    #[test]
    fn metric_relabel_configs_drop_and_rewrite_samples() {
        let rules: Vec<RelabelConfig> = serde_saphyr::from_str(
            "- {source_labels: [__name__], regex: 'go_.*', action: drop}\n\
             - {source_labels: [__name__], regex: 'node_(.*)', target_label: __name__, replacement: 'n_$1'}\n\
             - {regex: tmp, action: labeldrop}\n",
        )
        .unwrap();
        let text = "# TYPE go_goroutines gauge\ngo_goroutines 7\nnode_load1{tmp=\"x\",keep=\"y\"} 0.5\n";
        let payload = parse(text, &Limits::default()).unwrap();
        let record = to_record(
            &payload,
            &target(),
            1.0,
            &ConvertOptions { metric_relabel_configs: rules, ..Default::default() },
        );
        assert_eq!(record.samples.len(), 1);
        assert_eq!((&*record.samples[0].metric, &*record.samples[0].labels), ("n_load1", r#"{"keep":"y"}"#));
        assert_eq!(record.types, [("n_load1".into(), "untyped")]);
    }

    #[test]
    fn the_cache_gives_the_same_records_shares_them_and_forgets_gone_series() {
        let text = "# TYPE m counter\nm{name=\"x\",b=\"2\"} 3\nm{b=\"3\"} 4\nn 1\n";
        let payload = parse(text, &Limits::default()).unwrap();
        let options = ConvertOptions::default();
        let mut cache = SeriesCache::default();
        let first = to_record_cached(&payload, &target(), 1.0, &options, &mut cache);
        assert_eq!(first, to_record(&payload, &target(), 1.0, &options), "cached or not, the same records");
        assert_eq!(first.types, [("m".into(), "counter"), ("n".into(), "untyped")]);
        let second = to_record_cached(&payload, &target(), 2.0, &options, &mut cache);
        assert!(Arc::ptr_eq(&first.samples[0].labels, &second.samples[0].labels), "a known series is shared");
        assert_eq!(cache.len(), 3);
        // Series that churn are forgotten once the cache holds twice the payload.
        for i in 0..10 {
            let text = format!("m{{churn=\"{i}\"}} 1\n");
            let payload = parse(&text, &Limits::default()).unwrap();
            to_record_cached(&payload, &target(), 3.0, &options, &mut cache);
        }
        assert!(cache.len() <= 2, "{}", cache.len());
        // Other instance labels (a relabeling change) start over.
        let mut other = target();
        other.labels.as_mut().unwrap().insert("name".into(), "web-2".into());
        let record = to_record_cached(&payload, &other, 4.0, &options, &mut cache);
        assert_eq!(record, to_record(&payload, &other, 4.0, &options));
        assert_eq!(cache.len(), 3, "only this payload's series");
    }
}
