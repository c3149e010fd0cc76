//! The configuration as written: serde types close to the YAML, with
//! `Spanned` on fields whose checks need the line they came from.
//!
//! Value-level checks (durations, enums, regexes) run during deserialization,
//! so serde-saphyr reports them with their location; checks that relate two
//! fields, or the file system, run in [`super::Config::from_raw`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::ScrapeMode;
use crate::duration::PromDuration;
use crate::relabel::RelabelConfig;

/// A value with no location: it came from a default, not from the file.
fn unlocated<T>(value: T) -> Spanned<T> {
    Spanned::new(value, Location::UNKNOWN, Location::UNKNOWN)
}

fn secs(n: u64) -> Spanned<PromDuration> {
    unlocated(PromDuration::from_secs(n))
}

/// A section or list written with no value (`discovery:` with every key
/// commented out) is YAML null; it means "defaults", as in Prometheus.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    #[serde(deserialize_with = "null_as_default")]
    pub aws: RawAws,
    #[serde(deserialize_with = "null_as_default")]
    pub discovery: RawDiscovery,
    #[serde(deserialize_with = "null_as_default")]
    pub scrape: RawScrape,
    #[serde(deserialize_with = "null_as_default")]
    pub relabel_configs: Vec<RelabelConfig>,
    #[serde(deserialize_with = "null_as_default")]
    pub storage: RawStorage,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAws {
    pub region: Option<String>,
    pub endpoint_url: Option<Spanned<String>>,
    pub max_attempts: Spanned<u32>,
    pub connect_timeout: Spanned<PromDuration>,
    pub call_timeout: Spanned<PromDuration>,
}

impl Default for RawAws {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            max_attempts: unlocated(3),
            connect_timeout: secs(3),
            call_timeout: secs(30),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDiscovery {
    pub refresh_interval: Spanned<PromDuration>,
    #[serde(deserialize_with = "null_as_default")]
    pub load_balancers: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub listener_ports: Vec<u16>,
    #[serde(deserialize_with = "null_as_default")]
    pub instance_tags: BTreeMap<String, String>,
}

impl Default for RawDiscovery {
    fn default() -> Self {
        Self {
            refresh_interval: secs(60),
            load_balancers: Vec::new(),
            listener_ports: Vec::new(),
            instance_tags: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawScrape {
    pub interval: Spanned<PromDuration>,
    pub timeout: Spanned<PromDuration>,
    pub mode: ScrapeMode,
    pub metrics_path: Spanned<String>,
}

impl Default for RawScrape {
    fn default() -> Self {
        Self {
            interval: secs(15),
            timeout: secs(10),
            mode: ScrapeMode::Auto,
            metrics_path: unlocated("/metrics".to_string()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStorage {
    pub path: Spanned<String>,
    pub retention: Spanned<PromDuration>,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self { path: unlocated("data/fleetscrape.db".to_string()), retention: secs(15 * 24 * 3600) }
    }
}
