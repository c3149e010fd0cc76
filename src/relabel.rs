//! Prometheus `relabel_configs`: the same actions, defaults and validation as
//! Prometheus's `model/relabel`, applied to the labels of discovered targets.
//!
//! Differences from Prometheus, on purpose: label names follow the classic
//! `[a-zA-Z_][a-zA-Z0-9_]*` scheme (see [`crate::labels::is_valid_label_name`]),
//! and regexes use Rust's `regex` crate, whose syntax is RE2's, like Go's.

use std::fmt;

use md5::{Digest, Md5};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::labels::{LabelSet, is_valid_label_name};

/// The relabel actions Prometheus supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Writes `replacement` (with `$1` expansion) into `target_label` when `regex` matches.
    Replace,
    /// Drops the target unless the joined source values match `regex`.
    Keep,
    /// Drops the target when the joined source values match `regex`.
    Drop,
    /// Drops the target unless the joined source values equal `target_label`'s value.
    KeepEqual,
    /// Drops the target when the joined source values equal `target_label`'s value.
    DropEqual,
    /// Sets `target_label` to an MD5 hash of the joined source values modulo `modulus`.
    HashMod,
    /// Copies every label whose name matches `regex` to the name `replacement`.
    LabelMap,
    /// Removes every label whose name matches `regex`.
    LabelDrop,
    /// Removes every label whose name does not match `regex`.
    LabelKeep,
    /// Sets `target_label` to the joined source values in lower case.
    Lowercase,
    /// Sets `target_label` to the joined source values in upper case.
    Uppercase,
}

impl Action {
    fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "replace" => Self::Replace,
            "keep" => Self::Keep,
            "drop" => Self::Drop,
            "keepequal" => Self::KeepEqual,
            "dropequal" => Self::DropEqual,
            "hashmod" => Self::HashMod,
            "labelmap" => Self::LabelMap,
            "labeldrop" => Self::LabelDrop,
            "labelkeep" => Self::LabelKeep,
            "lowercase" => Self::Lowercase,
            "uppercase" => Self::Uppercase,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Keep => "keep",
            Self::Drop => "drop",
            Self::KeepEqual => "keepequal",
            Self::DropEqual => "dropequal",
            Self::HashMod => "hashmod",
            Self::LabelMap => "labelmap",
            Self::LabelDrop => "labeldrop",
            Self::LabelKeep => "labelkeep",
            Self::Lowercase => "lowercase",
            Self::Uppercase => "uppercase",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const DEFAULT_SEPARATOR: &str = ";";
const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";

/// Why a relabel rule was rejected. The messages are Prometheus's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `action` is not one Prometheus knows.
    #[error("unknown relabel action {0:?}")]
    UnknownAction(String),
    /// `regex` does not compile.
    #[error("invalid regex {regex:?}: {reason}")]
    Regex {
        /// The regex as written.
        regex: String,
        /// The compiler's explanation.
        reason: String,
    },
    /// A `source_labels` entry is not a valid label name.
    #[error("{0:?} is not a valid label name in 'source_labels'")]
    SourceLabel(String),
    /// The combination of fields is not allowed for the action.
    #[error("{0}")]
    Invalid(String),
}

/// One relabel rule as written in YAML; every field is optional, as in Prometheus.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    source_labels: Option<Vec<String>>,
    separator: Option<String>,
    regex: Option<String>,
    modulus: Option<u64>,
    target_label: Option<String>,
    replacement: Option<String>,
    action: Option<String>,
}

/// A validated relabel rule.
#[derive(Debug, Clone, Serialize)]
#[serde(into = "RuleView")]
pub struct RelabelConfig {
    source_labels: Vec<String>,
    separator: String,
    regex_text: String,
    regex: Regex,
    modulus: u64,
    target_label: String,
    replacement: String,
    action: Action,
}

impl<'de> Deserialize<'de> for RelabelConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawRule::deserialize(deserializer)?;
        Self::from_raw(raw).map_err(serde::de::Error::custom)
    }
}

/// The effective rule, with defaults filled in, as `check-config` prints it.
#[derive(Serialize)]
struct RuleView {
    source_labels: Vec<String>,
    separator: String,
    regex: String,
    #[serde(skip_serializing_if = "is_zero")]
    modulus: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    target_label: String,
    replacement: String,
    action: Action,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<RelabelConfig> for RuleView {
    fn from(rule: RelabelConfig) -> Self {
        Self {
            source_labels: rule.source_labels,
            separator: rule.separator,
            regex: rule.regex_text,
            modulus: rule.modulus,
            target_label: rule.target_label,
            replacement: rule.replacement,
            action: rule.action,
        }
    }
}

/// Compiles `text` anchored at both ends, as Prometheus does.
fn anchored_regex(text: &str) -> Result<Regex, Error> {
    Regex::new(&format!("^(?:{text})$")).map_err(|e| Error::Regex {
        regex: text.to_string(),
        reason: e.to_string().lines().last().unwrap_or_default().trim().to_string(),
    })
}

/// `$name`, `${name}` templates allowed in `target_label` (Prometheus's `relabelTarget`).
fn is_valid_label_template(template: &str) -> bool {
    static_template_regex().is_match(template)
}

fn static_template_regex() -> &'static Regex {
    static TEMPLATE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").expect("constant regex compiles"))
}

impl RelabelConfig {
    /// Builds a rule from its fields, filling Prometheus's defaults and
    /// applying its validation.
    ///
    /// # Errors
    /// [`Error`] when the action is unknown, the regex does not compile, or a
    /// field is missing or not allowed for the action.
    fn from_raw(raw: RawRule) -> Result<Self, Error> {
        let action = match raw.action.as_deref() {
            None => Action::Replace,
            Some(name) => Action::parse(name).ok_or_else(|| Error::UnknownAction(name.to_string()))?,
        };
        if let Some(bad) = raw.source_labels.iter().flatten().find(|n| !is_valid_label_name(n)) {
            return Err(Error::SourceLabel(bad.clone()));
        }
        let regex_text = raw.regex.clone().unwrap_or_else(|| DEFAULT_REGEX.to_string());
        let rule = Self {
            regex: anchored_regex(&regex_text)?,
            regex_text,
            source_labels: raw.source_labels.clone().unwrap_or_default(),
            separator: raw.separator.clone().unwrap_or_else(|| DEFAULT_SEPARATOR.to_string()),
            modulus: raw.modulus.unwrap_or(0),
            target_label: raw.target_label.clone().unwrap_or_default(),
            replacement: raw.replacement.clone().unwrap_or_else(|| DEFAULT_REPLACEMENT.to_string()),
            action,
        };
        rule.validate(&raw)?;
        Ok(rule)
    }

    fn validate(&self, raw: &RawRule) -> Result<(), Error> {
        use Action::*;
        let action = self.action;
        let invalid = |msg: String| Err(Error::Invalid(msg));
        if action == HashMod && self.modulus == 0 {
            return invalid("relabel configuration for hashmod requires non-zero modulus".into());
        }
        let needs_target = matches!(action, Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual);
        if needs_target && self.target_label.is_empty() {
            return invalid(format!("relabel configuration for {action} action requires 'target_label' value"));
        }
        let target_ok = match action {
            Replace if self.target_label.contains('$') => is_valid_label_template(&self.target_label),
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual => {
                is_valid_label_name(&self.target_label)
            }
            _ => true,
        };
        if !target_ok {
            return invalid(format!("{:?} is invalid 'target_label' for {action} action", self.target_label));
        }
        let is_equal_or_case = matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual);
        if is_equal_or_case && raw.replacement.as_deref().is_some_and(|r| r != DEFAULT_REPLACEMENT) {
            return invalid(format!("'replacement' can not be set for {action} action"));
        }
        if action == LabelMap && !is_valid_label_template(&self.replacement) {
            return invalid(format!("{:?} is invalid 'replacement' for {action} action", self.replacement));
        }
        if matches!(action, KeepEqual | DropEqual)
            && (self.regex_text != DEFAULT_REGEX || self.modulus != 0 || self.separator != DEFAULT_SEPARATOR)
        {
            return invalid(format!(
                "{action} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if matches!(action, LabelDrop | LabelKeep)
            && (raw.source_labels.is_some()
                || !self.target_label.is_empty()
                || self.modulus != 0
                || self.separator != DEFAULT_SEPARATOR
                || self.replacement != DEFAULT_REPLACEMENT)
        {
            return invalid(format!("{action} action requires only 'regex', and no other fields"));
        }
        Ok(())
    }

    /// The action of this rule.
    pub fn action(&self) -> Action {
        self.action
    }

    /// Applies this one rule; `false` means the target is dropped.
    fn apply(&self, labels: &mut LabelSet) -> bool {
        let value = self.joined_source_values(labels);
        match self.action {
            Action::Drop => return !self.regex.is_match(&value),
            Action::Keep => return self.regex.is_match(&value),
            Action::DropEqual => return get(labels, &self.target_label) != value,
            Action::KeepEqual => return get(labels, &self.target_label) == value,
            Action::Replace => self.replace(labels, &value),
            Action::Lowercase => set(labels, &self.target_label, value.to_lowercase()),
            Action::Uppercase => set(labels, &self.target_label, value.to_uppercase()),
            Action::HashMod => {
                let bucket = hash_mod(&value, self.modulus);
                set(labels, &self.target_label, bucket.to_string());
            }
            Action::LabelMap => self.label_map(labels),
            Action::LabelDrop => labels.retain(|name, _| !self.regex.is_match(name)),
            Action::LabelKeep => labels.retain(|name, _| self.regex.is_match(name)),
        }
        true
    }

    fn joined_source_values(&self, labels: &LabelSet) -> String {
        let values: Vec<&str> = self.source_labels.iter().map(|name| get(labels, name)).collect();
        values.join(&self.separator)
    }

    fn replace(&self, labels: &mut LabelSet, value: &str) {
        // Prometheus's fast path: nothing to match or expand, set the literal.
        if value.is_empty()
            && self.regex_text == DEFAULT_REGEX
            && !self.target_label.contains('$')
            && !self.replacement.contains('$')
        {
            set(labels, &self.target_label, self.replacement.clone());
            return;
        }
        let Some(captures) = self.regex.captures(value) else {
            return;
        };
        let mut target = String::new();
        captures.expand(&self.target_label, &mut target);
        if !is_valid_label_name(&target) {
            return;
        }
        let mut replacement = String::new();
        captures.expand(&self.replacement, &mut replacement);
        set(labels, &target, replacement);
    }

    fn label_map(&self, labels: &mut LabelSet) {
        // Iterate over a snapshot: labels written here must not be matched again.
        let snapshot: Vec<(String, String)> = labels.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        for (name, value) in snapshot {
            if self.regex.is_match(&name) {
                let new_name = self.regex.replace_all(&name, self.replacement.as_str()).into_owned();
                set(labels, &new_name, value);
            }
        }
    }
}

fn get<'a>(labels: &'a LabelSet, name: &str) -> &'a str {
    labels.get(name).map_or("", String::as_str)
}

/// Sets a label; an empty value removes it, as in Prometheus's label builder.
fn set(labels: &mut LabelSet, name: &str, value: String) {
    if value.is_empty() {
        labels.remove(name);
    } else {
        labels.insert(name.to_string(), value);
    }
}

/// Prometheus's hashmod: the last 8 bytes of the MD5 digest, big-endian, modulo `modulus`.
pub fn hash_mod(value: &str, modulus: u64) -> u64 {
    let digest = Md5::digest(value.as_bytes());
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&digest[8..16]);
    u64::from_be_bytes(tail) % modulus
}

/// Applies `rules` in order to a copy of `labels`.
///
/// Returns `None` when a rule drops the target.
///
/// ```
/// use fleetscrape::labels::LabelSet;
/// use fleetscrape::relabel::{process, RelabelConfig};
/// let rules: Vec<RelabelConfig> = serde_saphyr::from_str(
///     "- source_labels: [__meta_ec2_tag_Environment]\n  regex: prod\n  action: keep\n",
/// ).unwrap();
/// let mut labels = LabelSet::new();
/// labels.insert("__meta_ec2_tag_Environment".into(), "prod".into());
/// assert!(process(&labels, &rules).is_some());
/// labels.insert("__meta_ec2_tag_Environment".into(), "dev".into());
/// assert!(process(&labels, &rules).is_none());
/// ```
pub fn process(labels: &LabelSet, rules: &[RelabelConfig]) -> Option<LabelSet> {
    let mut out = labels.clone();
    rules.iter().all(|rule| rule.apply(&mut out)).then_some(out)
}

#[cfg(test)]
mod tests;
