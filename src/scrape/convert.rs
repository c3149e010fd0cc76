//! An attributed payload → a [`ScrapeRecord`]: labels as canonical JSON,
//! Prometheus's `exported_` rule for labels that collide with the instance's
//! own labels, and `metric_relabel_configs`.

use std::collections::BTreeMap;

use crate::labels::FastMap;
use std::sync::Arc;

use crate::discovery::Target;
use crate::exposition::{KnownSeries, Payload, Sample};
use crate::labels::LabelSet;
use crate::record::{ScrapeRecord, SeriesList};
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

/// What conversion remembers of one instance between scrapes: the series of
/// its last payload as written, in order ([`KnownSeries`], which the parser
/// also reads them by), each as converted (`None`: dropped by
/// `metric_relabel_configs`), and the [`SeriesList`] they became. A payload
/// that lists the same series in the same order (the usual case: exporters
/// write their metrics in a fixed order) costs one string comparison a line
/// and reuses the list whole, so the record carries only values. Any other
/// payload is matched line by line through a map of the last one, so only
/// new series are converted. Valid for one set of instance labels; a change
/// (relabeling, a new ASG) starts over.
#[derive(Debug, Default)]
pub struct SeriesCache {
    reserved: LabelSet,
    known: KnownSeries,
    converted: Vec<Option<Converted>>,
    series: Arc<SeriesList>,
    dropped: usize,
}

impl SeriesCache {
    /// Series remembered (the last payload's lines).
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The last payload's series, for [`crate::exposition::parse_known`].
    pub fn known(&self) -> &KnownSeries {
        &self.known
    }

    /// Whether `payload` lists exactly the remembered series, in order.
    fn matches(&self, payload: &Payload<'_>) -> bool {
        // Parsed with these known series and listing all of them: nothing to compare.
        if payload.known_id().is_some_and(|id| id == self.known.id()) {
            return true;
        }
        self.known.len() == payload.samples.len()
            && payload.samples.iter().enumerate().all(|(i, sample)| self.known.text(i) == Some(sample.series()))
    }

    /// Remembers `payload`'s series, converting only those the last payload
    /// did not have, and builds their [`SeriesList`].
    fn relearn(&mut self, payload: &Payload<'_>, options: &ConvertOptions) {
        let by_text: FastMap<&str, usize> =
            (0..self.known.len()).filter_map(|i| Some((self.known.text(i)?, i))).collect();
        let converted: Vec<Option<Converted>> = payload
            .samples
            .iter()
            .map(|sample| match by_text.get(sample.series()) {
                Some(&known) => self.converted[known].clone(),
                None => convert(payload, sample, &self.reserved, options),
            })
            .collect();
        drop(by_text);
        let mut types: Vec<(Arc<str>, &'static str)> = Vec::new();
        for c in converted.iter().flatten() {
            // Families are contiguous in an exposition: one entry per family.
            if types.last().is_none_or(|(metric, _)| *metric != c.metric) {
                types.push((Arc::clone(&c.metric), c.kind));
            }
        }
        types.sort();
        types.dedup();
        self.series = Arc::new(SeriesList {
            metrics: converted.iter().flatten().map(|c| Arc::clone(&c.metric)).collect(),
            labels: converted.iter().flatten().map(|c| Arc::clone(&c.labels)).collect(),
            types,
        });
        self.dropped = converted.len() - self.series.len();
        self.converted = converted;
        self.known.learn(payload);
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
    if !cache.matches(payload) {
        cache.relearn(payload, options);
    }
    let values = if cache.dropped == 0 {
        payload.samples.iter().map(|sample| sample.value).collect()
    } else {
        let kept = payload.samples.iter().zip(&cache.converted).filter(|(_, converted)| converted.is_some());
        kept.map(|(sample, _)| sample.value).collect()
    };
    ScrapeRecord { instance_id: target.instance.id.clone(), time, series: Arc::clone(&cache.series), values }
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
        assert_eq!(&*record.series.labels[0], r#"{"az":"a","exported_instance_id":"i-0abc1234def567890"}"#);
        assert_eq!(
            &*record.series.labels[1], r#"{"a":"1","b":"2","exported_name":"x"}"#,
            "relabel-kept labels are instance labels too"
        );
        let honored =
            to_record(&payload, &target(), 10.0, &ConvertOptions { honor_labels: true, ..Default::default() });
        assert_eq!(&*honored.series.labels[0], r#"{"az":"a","instance_id":"i-0abc1234def567890"}"#);
    }

    #[test]
    fn a_label_with_an_empty_value_is_no_label_as_in_prometheus() {
        let payload =
            parse("node_network_info{device=\"eth0\",duplex=\"\"} 1\nb{x=\"\"} 2\nb 3\n", &Limits::default()).unwrap();
        let record = to_record(&payload, &target(), 1.0, &ConvertOptions::default());
        let labels: Vec<&str> = record.series.labels.iter().map(|l| &**l).collect();
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
        assert_eq!(record.len(), 1);
        assert_eq!((&*record.series.metrics[0], &*record.series.labels[0]), ("n_load1", r#"{"keep":"y"}"#));
        assert_eq!(record.values, [0.5]);
        assert_eq!(record.types(), [("n_load1".into(), "untyped")]);
    }

    fn sample_list(record: &ScrapeRecord) -> Vec<(String, String, f64)> {
        record.samples().map(|s| (s.metric.to_string(), s.labels.to_string(), s.value)).collect()
    }

    #[test]
    fn the_cache_gives_the_same_records_and_shares_an_unchanged_layout_whole() {
        let text = "# TYPE m counter\nm{name=\"x\",b=\"2\"} 3\nm{b=\"3\"} 4\nn 1\n";
        let payload = parse(text, &Limits::default()).unwrap();
        let options = ConvertOptions::default();
        let mut cache = SeriesCache::default();
        let first = to_record_cached(&payload, &target(), 1.0, &options, &mut cache);
        assert_eq!(first, to_record(&payload, &target(), 1.0, &options), "cached or not, the same records");
        assert_eq!(first.types(), [("m".into(), "counter"), ("n".into(), "untyped")]);
        let moved_text = text.replace("} 4", "} 5");
        let moved = parse(&moved_text, &Limits::default()).unwrap();
        let second = to_record_cached(&moved, &target(), 2.0, &options, &mut cache);
        assert!(Arc::ptr_eq(&first.series, &second.series), "the same lines in the same order: the same list");
        assert_eq!(second.values, [3.0, 5.0, 1.0]);
        assert_eq!(cache.len(), 3);
        // Another order, a line fewer and a new one: matched by text, the
        // known series still shared, only the new one converted.
        let reordered = parse("n 2\n# TYPE m counter\nm{b=\"3\"} 6\no 1\n", &Limits::default()).unwrap();
        let third = to_record_cached(&reordered, &target(), 3.0, &options, &mut cache);
        assert!(!Arc::ptr_eq(&first.series, &third.series));
        assert_eq!(third, to_record(&reordered, &target(), 3.0, &options));
        assert!(Arc::ptr_eq(&first.series.labels[1], &third.series.labels[1]), "a known series is shared");
        assert_eq!(cache.len(), 3, "only the last payload's lines are kept");
        // Other instance labels (a relabeling change) start over.
        let mut other = target();
        other.labels.as_mut().unwrap().insert("name".into(), "web-2".into());
        let record = to_record_cached(&payload, &other, 4.0, &options, &mut cache);
        assert_eq!(record, to_record(&payload, &other, 4.0, &options));
        assert!(!Arc::ptr_eq(&record.series, &first.series), "converted anew");
    }

    #[test]
    fn a_payload_parsed_with_the_caches_known_series_reuses_the_list() {
        let options = ConvertOptions::default();
        let mut cache = SeriesCache::default();
        let text = "# TYPE m counter\nm{b=\"3\"} 4\nn 1\n";
        let first = to_record_cached(&parse(text, &Limits::default()).unwrap(), &target(), 1.0, &options, &mut cache);
        let next = crate::exposition::parse_known("m{b=\"3\"} 5\nn 2\n", &Limits::default(), cache.known()).unwrap();
        assert_eq!(next.known_id(), Some(cache.known().id()));
        let second = to_record_cached(&next, &target(), 2.0, &options, &mut cache);
        assert!(Arc::ptr_eq(&first.series, &second.series));
        assert_eq!(second.values, [5.0, 2.0]);
        // Known series of another cache (another instance's) are compared, not trusted.
        let mut other = SeriesCache::default();
        let third = to_record_cached(&next, &target(), 3.0, &options, &mut other);
        assert_eq!(third, ScrapeRecord { time: 3.0, ..to_record(&next, &target(), 2.0, &options) });
    }

    #[test]
    fn dropped_lines_stay_dropped_when_the_layout_repeats() {
        let rules: Vec<RelabelConfig> =
            serde_saphyr::from_str("- {source_labels: [__name__], regex: 'go_.*', action: drop}\n").unwrap();
        let options = ConvertOptions { metric_relabel_configs: rules, ..Default::default() };
        let mut cache = SeriesCache::default();
        for (time, value) in [(1.0, 7), (2.0, 8)] {
            let text = format!("a 1\ngo_goroutines {value}\nb {value}\n");
            let payload = parse(&text, &Limits::default()).unwrap();
            let record = to_record_cached(&payload, &target(), time, &options, &mut cache);
            let expected = vec![("a".to_string(), "{}".to_string(), 1.0), ("b".into(), "{}".into(), f64::from(value))];
            assert_eq!(sample_list(&record), expected);
        }
    }
}
