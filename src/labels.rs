//! Label sets and the label-name rules shared by relabeling and discovery.

use std::collections::BTreeMap;

/// A set of labels, ordered by name so output and hashing are stable.
pub type LabelSet = BTreeMap<String, String>;

/// Prefix of discovery metadata labels; they are removed after relabeling.
pub const META_PREFIX: &str = "__meta_";

/// Whether `name` is a valid Prometheus label name in the classic (pre-UTF-8)
/// scheme: `[a-zA-Z_][a-zA-Z0-9_]*`.
///
/// fleetscrape keeps the classic scheme because every consumer of its data
/// (SQLite column values, Grafana legends, remote_write to older receivers)
/// handles it.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Replaces every character that is not valid in a label name with `_`, the
/// way Prometheus's EC2 discovery turns tag keys into label names
/// (`aws:autoscaling:groupName` → `aws_autoscaling_groupName`).
pub fn sanitize_label_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// Removes the `__meta_*` labels, as Prometheus does once relabeling is done.
pub fn without_meta(labels: &LabelSet) -> LabelSet {
    labels
        .iter()
        .filter(|(name, _)| !name.starts_with(META_PREFIX))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// A hash map with a fast, per-process seeded hasher, for the lookups done
/// per sample on scraped text (series cache, interner, CPU tracker).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_name_validity_follows_the_classic_scheme() {
        for good in ["a", "_", "__address__", "abc_9", "A1"] {
            assert!(is_valid_label_name(good), "{good}");
        }
        for bad in ["", "9a", "a-b", "a.b", "a:b", "ä"] {
            assert!(!is_valid_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn tag_keys_are_sanitised_like_prometheus_ec2_sd() {
        assert_eq!(sanitize_label_name("aws:autoscaling:groupName"), "aws_autoscaling_groupName");
        assert_eq!(sanitize_label_name("Name"), "Name");
        assert_eq!(sanitize_label_name("team/owner-1"), "team_owner_1");
    }

    #[test]
    fn meta_labels_are_removed() {
        let labels: LabelSet = [("__meta_ec2_instance_id", "i-1"), ("__address__", "a:1"), ("job", "n")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let kept = without_meta(&labels);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["__address__", "job"]);
    }
}
