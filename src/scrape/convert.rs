//! An attributed payload → a [`ScrapeRecord`]: labels as canonical JSON,
//! Prometheus's `exported_` rule for labels that collide with the instance's
//! own labels, and `metric_relabel_configs`.

use std::collections::{BTreeMap, BTreeSet};

use crate::discovery::Target;
use crate::exposition::Payload;
use crate::labels::LabelSet;
use crate::relabel::{self, RelabelConfig};
use crate::store::{SampleRecord, ScrapeRecord};

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

/// The instance labels of a target: the four above plus what relabeling kept
/// (labels not starting with `__`).
pub fn instance_labels(target: &Target) -> LabelSet {
    let mut labels = target.kept_labels();
    labels.insert("instance_id".into(), target.instance.id.clone());
    labels.insert("role".into(), target.role.as_str().into());
    if let Some(asg) = target.asg_name() {
        labels.insert("asg_name".into(), asg.into());
    }
    if let Some(az) = &target.instance.availability_zone {
        labels.insert("availability_zone".into(), az.clone());
    }
    labels
}

/// Converts a payload attributed to `target`, scraped at `time`.
pub fn to_record(payload: &Payload<'_>, target: &Target, time: f64, options: &ConvertOptions) -> ScrapeRecord {
    let reserved = instance_labels(target);
    let mut samples = Vec::with_capacity(payload.samples.len());
    let mut names = BTreeSet::new();
    for sample in &payload.samples {
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in sample.labels() {
            let name = if !options.honor_labels && reserved.contains_key(name) {
                format!("exported_{name}")
            } else {
                name.to_string()
            };
            labels.insert(name, value.into_owned());
        }
        let mut metric = sample.name.to_string();
        if !options.metric_relabel_configs.is_empty() {
            match relabel_sample(&metric, labels, &reserved, &options.metric_relabel_configs) {
                Some((new_metric, new_labels)) => {
                    metric = new_metric;
                    labels = new_labels;
                }
                None => continue,
            }
        }
        names.insert((metric.clone(), payload.metric_type(sample.name).as_str()));
        let labels = serde_json::to_string(&labels).unwrap_or_else(|_| "{}".into());
        samples.push(SampleRecord { metric, labels, value: sample.value });
    }
    ScrapeRecord { instance_id: target.instance.id.clone(), time, samples, types: names.into_iter().collect() }
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
                state: "running".into(),
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
        assert_eq!(record.samples[0].labels, r#"{"az":"a","exported_instance_id":"i-0abc1234def567890"}"#);
        assert_eq!(
            record.samples[1].labels, r#"{"a":"1","b":"2","exported_name":"x"}"#,
            "relabel-kept labels are instance labels too"
        );
        let honored =
            to_record(&payload, &target(), 10.0, &ConvertOptions { honor_labels: true, ..Default::default() });
        assert_eq!(honored.samples[0].labels, r#"{"az":"a","instance_id":"i-0abc1234def567890"}"#);
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
        assert_eq!(
            (record.samples[0].metric.as_str(), record.samples[0].labels.as_str()),
            ("n_load1", r#"{"keep":"y"}"#)
        );
        assert_eq!(record.types, [("n_load1".to_string(), "untyped")]);
    }
}
