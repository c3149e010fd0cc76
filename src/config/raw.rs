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
use super::remote_write::{RemoteWriteConfig, ShardingConfig};
use super::scrape::{BasicAuth, ByteSize, IdentitySource, TlsConfig};
use crate::duration::PromDuration;
use crate::relabel::RelabelConfig;

/// A value with no location: it came from a default, not from the file.
fn unlocated<T>(value: T) -> Spanned<T> {
    Spanned::new(value, Location::UNKNOWN, Location::UNKNOWN)
}

const LIMITS: crate::exposition::Limits = crate::exposition::Limits::DEFAULT;

/// `storage.path` when the file does not set it: the image's volume, and the
/// path the provisioned Grafana datasource reads.
pub const DEFAULT_STORAGE_PATH: &str = "/var/lib/fleetscrape/fleetscrape.db";

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

#[derive(Debug, Deserialize)]
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
    pub metric_relabel_configs: Vec<RelabelConfig>,
    #[serde(deserialize_with = "null_as_default")]
    pub storage: RawStorage,
    #[serde(deserialize_with = "null_as_default")]
    pub http: RawHttp,
    pub shutdown_timeout: Spanned<PromDuration>,
    #[serde(deserialize_with = "null_as_default")]
    pub remote_write: Vec<Spanned<RemoteWriteConfig>>,
    #[serde(deserialize_with = "null_as_default")]
    pub external_labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_as_default")]
    pub sharding: ShardingConfig,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            aws: RawAws::default(),
            discovery: RawDiscovery::default(),
            scrape: RawScrape::default(),
            relabel_configs: Vec::new(),
            metric_relabel_configs: Vec::new(),
            storage: RawStorage::default(),
            http: RawHttp::default(),
            shutdown_timeout: secs(8),
            remote_write: Vec::new(),
            external_labels: BTreeMap::new(),
            sharding: ShardingConfig::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHttp {
    pub listen_address: Spanned<String>,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self { listen_address: unlocated("127.0.0.1:9900".to_string()) }
    }
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
            call_timeout: secs(10),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDiscovery {
    pub refresh_interval: Spanned<PromDuration>,
    #[serde(deserialize_with = "null_as_default")]
    pub load_balancers: Vec<String>,
    /// Wider than a port, so that 99999 is named as a port out of range,
    /// not as an invalid integer.
    #[serde(deserialize_with = "null_as_default")]
    pub listener_ports: Vec<Spanned<i64>>,
    #[serde(deserialize_with = "null_as_default")]
    pub instance_tags: BTreeMap<String, String>,
    pub early_refresh_min_interval: Spanned<PromDuration>,
}

impl Default for RawDiscovery {
    fn default() -> Self {
        Self {
            refresh_interval: secs(60),
            load_balancers: Vec::new(),
            listener_ports: Vec::new(),
            instance_tags: BTreeMap::new(),
            early_refresh_min_interval: secs(10),
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
    pub body_size_limit: ByteSize,
    pub sample_limit: usize,
    pub label_limit: usize,
    pub label_name_length_limit: usize,
    pub label_value_length_limit: usize,
    pub direct_connect_timeout: Spanned<PromDuration>,
    pub alb_request_budget: Option<Spanned<u32>>,
    pub alb_max_requests_per_member: Spanned<u32>,
    #[serde(deserialize_with = "identity_or_default")]
    pub identity: Spanned<Vec<IdentitySource>>,
    pub honor_labels: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub tls_config: TlsConfig,
    pub basic_auth: Option<BasicAuth>,
    pub bearer_token_file: Option<Spanned<String>>,
    pub job_name: Spanned<String>,
    pub stale_after_intervals: Spanned<u32>,
    pub enabled: bool,
}

/// `identity:` with no value means the default sources.
fn identity_or_default<'de, D>(deserializer: D) -> Result<Spanned<Vec<IdentitySource>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let spanned = Spanned::<Option<Vec<IdentitySource>>>::deserialize(deserializer)?;
    let value = spanned.value.unwrap_or_else(IdentitySource::defaults);
    Ok(Spanned::new(value, spanned.referenced, spanned.defined))
}

impl Default for RawScrape {
    fn default() -> Self {
        Self {
            interval: secs(15),
            timeout: secs(10),
            mode: ScrapeMode::Auto,
            metrics_path: unlocated("/metrics".to_string()),
            body_size_limit: ByteSize(16 << 20),
            sample_limit: LIMITS.sample_limit,
            label_limit: LIMITS.label_limit,
            label_name_length_limit: LIMITS.label_name_length_limit,
            label_value_length_limit: LIMITS.label_value_length_limit,
            direct_connect_timeout: secs(1),
            alb_request_budget: None,
            alb_max_requests_per_member: unlocated(super::DEFAULT_MAX_REQUESTS_PER_MEMBER),
            identity: unlocated(IdentitySource::defaults()),
            honor_labels: false,
            tls_config: TlsConfig::default(),
            basic_auth: None,
            bearer_token_file: None,
            job_name: unlocated("fleetscrape".to_string()),
            stale_after_intervals: unlocated(3),
            enabled: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStorage {
    /// `null`: no SQLite (remote_write only).
    pub path: Option<Spanned<String>>,
    pub retention: Option<Spanned<PromDuration>>,
    pub retention_tiers: RawRetentionTiers,
    pub flush_interval: Spanned<PromDuration>,
}

/// `storage.retention_tiers`: each tier's retention, overriding the default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRetentionTiers {
    pub raw: Option<Spanned<PromDuration>>,
    #[serde(rename = "1m")]
    pub minute: Option<Spanned<PromDuration>>,
    #[serde(rename = "5m")]
    pub five_minutes: Option<Spanned<PromDuration>>,
    #[serde(rename = "1h")]
    pub hour: Option<Spanned<PromDuration>>,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            path: Some(unlocated(DEFAULT_STORAGE_PATH.to_string())),
            retention: None,
            retention_tiers: RawRetentionTiers::default(),
            flush_interval: secs(2),
        }
    }
}

impl RawScrape {
    /// Prometheus's rule for an unset `scrape_timeout`: the default (10s), or
    /// the interval if that is shorter; the direct-connect timeout's default
    /// follows the timeout. Values written in the file are left to the checks.
    pub(super) fn clamp_default_timeouts(&mut self) {
        let unset = |d: &Spanned<PromDuration>| d.referenced == Location::UNKNOWN;
        if unset(&self.timeout) && self.timeout.value > self.interval.value {
            self.timeout = unlocated(self.interval.value);
        }
        if unset(&self.direct_connect_timeout) && self.direct_connect_timeout.value > self.timeout.value {
            self.direct_connect_timeout = unlocated(self.timeout.value);
        }
    }
}
