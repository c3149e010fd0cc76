//! fleetscrape's YAML configuration: loading, validation, and the effective
//! values every other module reads.
//!
//! Loading is two-step, like ripgrep's low/high args: [`raw`] mirrors the
//! file and checks single values while parsing; [`Config::from_raw`] checks
//! what spans fields or touches the file system and resolves relative paths
//! against the config file's directory. Every problem is reported with the
//! key it concerns and, where known, its line.

pub mod files;
mod raw;
pub mod remote_write;
mod scrape;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use crate::duration::PromDuration;
use crate::exposition::Limits;
use crate::relabel::RelabelConfig;
use raw::RawConfig;
pub use remote_write::{QueueConfig, RemoteWriteConfig, Secret, ShardingConfig};
pub use scrape::{BasicAuth, ByteSize, IdentityMatch, IdentitySource, TlsConfig};

/// The permission bits of `path`, if it can be read.
fn file_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).ok().map(|m| m.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Where `--config` points when neither the flag nor `FLEETSCRAPE_CONFIG` is set.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/fleetscrape/fleetscrape.yml";

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// How to reach the AWS APIs.
    pub aws: AwsConfig,
    /// What to discover and how often.
    pub discovery: DiscoveryConfig,
    /// How to scrape discovered instances.
    pub scrape: ScrapeConfig,
    /// Prometheus relabel rules applied to every discovered target.
    pub relabel_configs: Vec<RelabelConfig>,
    /// Prometheus relabel rules applied to every scraped sample before storage.
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// Where samples are stored.
    pub storage: StorageConfig,
    /// fleetscrape's own HTTP endpoint.
    pub http: HttpConfig,
    /// From SIGTERM/SIGINT to exit: rounds in flight finish or are cut, the
    /// store flushes. Under Docker's 10 s before SIGKILL by default (8 s).
    pub shutdown_timeout: PromDuration,
    /// Prometheus remote-write receivers every scraped sample is sent to.
    pub remote_write: Vec<RemoteWriteConfig>,
    /// Labels added to every series sent (`cluster`, `__replica__` for HA pairs).
    pub external_labels: BTreeMap<String, String>,
    /// This replica's share of the fleet.
    pub sharding: ShardingConfig,
}

/// fleetscrape's own HTTP endpoint (`/metrics`, `/healthz`, `/api/targets`).
#[derive(Debug, Clone, Serialize)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen_address: SocketAddr,
}

/// AWS API access.
#[derive(Debug, Clone, Serialize)]
pub struct AwsConfig {
    /// Region; `None` leaves it to the SDK's chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Endpoint for every AWS API (LocalStack, moto); `None` leaves it to the
    /// SDK (`AWS_ENDPOINT_URL`, else the real AWS endpoints).
    pub endpoint_url: Option<String>,
    /// Attempts per API call, first try included (SDK standard retry mode
    /// with exponential backoff for throttling and 5xx).
    pub max_attempts: u32,
    /// Limit for opening a connection to an AWS endpoint.
    pub connect_timeout: PromDuration,
    /// Limit for one attempt of one API call.
    pub call_timeout: PromDuration,
}

/// Discovery through ELBv2, Auto Scaling and EC2.
#[derive(Debug, Clone, Serialize)]
pub struct DiscoveryConfig {
    /// Time between two discovery refreshes.
    pub refresh_interval: PromDuration,
    /// Load balancer names or ARNs to follow; empty means every one in the region.
    pub load_balancers: Vec<String>,
    /// Listener ports to follow; empty means every listener.
    pub listener_ports: Vec<u16>,
    /// Keep only instances carrying all these tags with these values.
    pub instance_tags: BTreeMap<String, String>,
    /// Least time between two early refreshes (asked for by an unknown identity).
    pub early_refresh_min_interval: PromDuration,
}

/// How instances are reached for scraping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScrapeMode {
    /// Connect to the instance's private address (`__address__`).
    Direct,
    /// Go through the load balancer listener (`__alb_address__`).
    ViaAlb,
    /// Try direct first, fall back to the listener, remember what worked.
    Auto,
}

/// Scrape timing and path.
#[derive(Debug, Clone, Serialize)]
pub struct ScrapeConfig {
    /// Time between two scrapes of one instance.
    pub interval: PromDuration,
    /// Limit for one scrape request; never more than `interval`.
    pub timeout: PromDuration,
    /// How instances are reached.
    pub mode: ScrapeMode,
    /// HTTP path of the metrics endpoint (`__metrics_path__`).
    pub metrics_path: String,
    /// Largest body accepted, after decompression; 0: no limit.
    pub body_size_limit: ByteSize,
    /// Most samples per payload; 0: no limit.
    pub sample_limit: usize,
    /// Most labels per sample; 0: no limit.
    pub label_limit: usize,
    /// Longest label name; 0: no limit.
    pub label_name_length_limit: usize,
    /// Longest label value; 0: no limit.
    pub label_value_length_limit: usize,
    /// Connect timeout of a direct attempt in `auto` mode.
    pub direct_connect_timeout: PromDuration,
    /// A fixed number of requests per via-ALB round; `None`: learned from
    /// each target group's balancing, up to `alb_max_requests_per_member × N`.
    pub alb_request_budget: Option<u32>,
    /// The cap of a learned round budget, per member behind the listener.
    pub alb_max_requests_per_member: u32,
    /// How payloads are attributed to instances, in order.
    pub identity: Vec<IdentitySource>,
    /// Keep scraped labels that collide with instance labels instead of
    /// renaming them `exported_<name>`.
    pub honor_labels: bool,
    /// TLS for https listeners.
    pub tls_config: TlsConfig,
    /// Basic authentication.
    pub basic_auth: Option<BasicAuth>,
    /// File holding a bearer token.
    pub bearer_token_file: Option<PathBuf>,
    /// The `job` label of every series sent by remote_write (and on `/api/sd`).
    pub job_name: String,
    /// Consecutive failed or unreached intervals after which an instance's
    /// series are marked stale (remote_write).
    pub stale_after_intervals: u32,
    /// `false`: discovery only. Nothing is scraped; `/api/sd` (for a
    /// Prometheus of one's own), `/api/targets` and the `instances` table
    /// stay current.
    pub enabled: bool,
}

impl ScrapeConfig {
    /// The parser limits.
    pub fn limits(&self) -> Limits {
        Limits {
            sample_limit: self.sample_limit,
            label_limit: self.label_limit,
            label_name_length_limit: self.label_name_length_limit,
            label_value_length_limit: self.label_value_length_limit,
        }
    }
}

/// SQLite storage.
#[derive(Debug, Clone, Serialize)]
pub struct StorageConfig {
    /// Database file, resolved against the config file's directory; `None`
    /// (`storage.path: null`): no SQLite, samples go to `remote_write` only.
    pub path: Option<PathBuf>,
    /// How long each tier is kept (`storage.retention`, `storage.retention_tiers`);
    /// the effective configuration spells every tier out.
    #[serde(rename = "retention_tiers")]
    pub retention: RetentionConfig,
    /// Longest time data waits in memory before it is committed (and visible).
    pub flush_interval: PromDuration,
}

/// The shortest and longest `scrape.interval`: below 100 ms a scrape costs
/// the exporter more than it tells; past an hour `rate()` and staleness lose
/// their meaning.
pub const SCRAPE_INTERVAL_BOUNDS: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3600));

/// The longest interval or timeout setting: a day (longer is a typo, e.g. `1000y`).
const LONGEST_SETTING: Duration = Duration::from_secs(86_400);

/// The longest retention: 10 years.
const LONGEST_RETENTION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Default of `scrape.alb_max_requests_per_member`: the cap of a learned
/// round budget is this many requests per member behind the listener.
pub const DEFAULT_MAX_REQUESTS_PER_MEMBER: u32 = 8;

/// How long each tier is kept, as the store applies it (`storage.retention_tiers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Every sample (the recent and compacted tiers), and `cpu_samples`.
    pub raw: Duration,
    /// 1-minute rollups, and the per-scrape tables (`scrape_status`,
    /// `alb_rounds`, `asg_membership`, `events`).
    pub minute: Duration,
    /// 5-minute rollups.
    pub five_minutes: Duration,
    /// 1-hour rollups.
    pub hour: Duration,
}

impl Retention {
    /// The defaults: 2 days raw, 8 days of minutes, 30 of 5 minutes, 1 year of hours.
    pub const DEFAULT: Self = Self {
        raw: Duration::from_secs(2 * 86_400),
        minute: Duration::from_secs(8 * 86_400),
        five_minutes: Duration::from_secs(30 * 86_400),
        hour: Duration::from_secs(365 * 86_400),
    };

    /// One duration for everything (`storage.retention: 15d`): nothing older
    /// is kept; each tier keeps the shorter of its default and it, and the
    /// coarsest tier keeps exactly it.
    pub fn capped(total: Duration) -> Self {
        let d = Self::DEFAULT;
        Self {
            raw: d.raw.min(total),
            minute: d.minute.min(total),
            five_minutes: d.five_minutes.min(total),
            hour: total,
        }
    }

    /// The longest of the tiers: data of instances gone for longer is all deleted.
    pub fn longest(&self) -> Duration {
        self.raw.max(self.minute).max(self.five_minutes).max(self.hour)
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How long each storage tier is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetentionConfig {
    /// Raw samples.
    pub raw: PromDuration,
    /// 1-minute rollups and the per-scrape tables.
    #[serde(rename = "1m")]
    pub minute: PromDuration,
    /// 5-minute rollups.
    #[serde(rename = "5m")]
    pub five_minutes: PromDuration,
    /// 1-hour rollups.
    #[serde(rename = "1h")]
    pub hour: PromDuration,
}

impl RetentionConfig {
    /// As durations, for the store.
    pub fn to_store(self) -> Retention {
        Retention {
            raw: self.raw.as_std(),
            minute: self.minute.as_std(),
            five_minutes: self.five_minutes.as_std(),
            hour: self.hour.as_std(),
        }
    }

    fn from_raw(total: Option<PromDuration>, tiers: &raw::RawRetentionTiers) -> Self {
        let base = total.map_or(Retention::DEFAULT, |t| Retention::capped(t.as_std()));
        let pick = |given: &Option<Spanned<PromDuration>>, default: std::time::Duration| {
            given.as_ref().map_or_else(|| PromDuration::from_std(default), |d| d.value)
        };
        Self {
            raw: pick(&tiers.raw, base.raw),
            minute: pick(&tiers.minute, base.minute),
            five_minutes: pick(&tiers.five_minutes, base.five_minutes),
            hour: pick(&tiers.hour, base.hour),
        }
    }
}

/// One problem found while validating the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `scrape.timeout`.
    pub key: String,
    /// 1-based line, when the value came from the file.
    pub line: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file does not exist.
    #[error("config file {}: not found (pass --config or set FLEETSCRAPE_CONFIG)", path.display())]
    NotFound {
        /// The path that was tried.
        path: PathBuf,
    },
    /// The path is a directory; Docker creates one when a bind mount's source is missing.
    #[error(
        "config file {}: is a directory, not a file (Docker creates an empty directory when a bind mount's source file does not exist: check the host path)",
        path.display()
    )]
    IsDirectory {
        /// The path that was tried.
        path: PathBuf,
    },
    /// The file exists but cannot be read.
    #[error("config file {}: {source}", path.display())]
    Unreadable {
        /// The path that was tried.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is empty.
    #[error("config file {}: is empty (see config/fleetscrape.example.yml for every key)", path.display())]
    Empty {
        /// The path that was tried.
        path: PathBuf,
    },
    /// The YAML is malformed, has an unknown key, or a value of the wrong kind.
    #[error("config file {}: {}", path.display(), located(*line, message))]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<u64>,
        /// The parser's message.
        message: String,
    },
    /// Values that parse but do not make sense together.
    #[error("config file {}: {}", path.display(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn located(line: Option<u64>, message: &str) -> String {
    match line {
        Some(line) => format!("line {line}: {message}"),
        None => message.to_string(),
    }
}

fn line_of(location: Location) -> Option<u64> {
    (location != Location::UNKNOWN).then(|| location.line())
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    ///
    /// # Errors
    /// [`Error`] when the file is missing, a directory, unreadable, empty,
    /// malformed, or holds invalid values.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = read_config_file(path)?;
        Self::from_yaml(&text, path)
    }

    /// Warnings about the modes of the files this configuration reads,
    /// `config_path` included: a config file anyone can write (anyone could
    /// point the scraper elsewhere), a secret file anyone can read or write.
    /// Unreadable files are not checked here (the scrape reports them).
    pub fn permission_warnings(&self, config_path: &Path) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(mode) = file_mode(config_path)
            && mode & 0o002 != 0
        {
            warnings.push(format!(
                "config file {} is writable by every user (mode {mode:04o}): chmod o-w it",
                config_path.display()
            ));
        }
        let secrets = self
            .scrape
            .basic_auth
            .iter()
            .map(|a| a.password_file.as_path())
            .chain(self.scrape.bearer_token_file.as_deref())
            .chain(self.remote_write.iter().flat_map(RemoteWriteConfig::secret_files));
        for secret in secrets {
            if let Some(mode) = file_mode(secret)
                && mode & 0o006 != 0
            {
                let what = if mode & 0o004 != 0 { "readable" } else { "writable" };
                warnings.push(format!(
                    "secret file {} is {what} by every user (mode {mode:04o}): chmod o-rw it",
                    secret.display()
                ));
            }
        }
        warnings
    }

    /// Parses and validates `text` as if it had been read from `path`
    /// (relative paths inside resolve against `path`'s directory).
    ///
    /// # Errors
    /// As [`Config::load`], without the file-reading cases.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, Error> {
        if text.trim().is_empty() {
            return Err(Error::Empty { path: path.to_path_buf() });
        }
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| syntax_error(path, text, &e))?;
        let base = absolute_parent(path);
        Self::from_raw(raw, &base).map_err(|problems| Error::Invalid { path: path.to_path_buf(), problems })
    }

    fn from_raw(mut raw: RawConfig, base_dir: &Path) -> Result<Self, Vec<Problem>> {
        raw.scrape.clamp_default_timeouts();
        let storage_path = raw.storage.path.as_ref().map(|p| files::resolve(base_dir, &p.value));
        let mut problems = Problems::default();
        problems.check_aws(&raw.aws);
        problems.check_durations(&raw);
        problems.check_ports(&raw.discovery);
        problems.check_scrape(&raw.scrape);
        if let (Some(path), Some(resolved)) = (&raw.storage.path, &storage_path) {
            problems.check_storage(path, resolved);
        }
        problems.check_outputs(&raw);
        let listen = &raw.http.listen_address;
        let listen_address = listen.value.parse::<SocketAddr>();
        problems.check(listen_address.is_ok(), "http.listen_address", listen.referenced, || {
            format!("{:?} is not an IP:port address", listen.value)
        });
        match listen_address {
            Ok(listen_address) if problems.0.is_empty() => {
                Ok(Self::from_checked_raw(raw, storage_path, listen_address, base_dir))
            }
            _ => Err(problems.0),
        }
    }

    fn from_checked_raw(
        raw: RawConfig,
        storage_path: Option<PathBuf>,
        listen_address: SocketAddr,
        base: &Path,
    ) -> Self {
        let value = |s: Spanned<PromDuration>| s.value;
        let scrape = raw.scrape;
        Self {
            aws: AwsConfig {
                region: raw.aws.region.filter(|r| !r.is_empty()),
                endpoint_url: raw.aws.endpoint_url.map(|u| u.value),
                max_attempts: raw.aws.max_attempts.value,
                connect_timeout: value(raw.aws.connect_timeout),
                call_timeout: value(raw.aws.call_timeout),
            },
            discovery: DiscoveryConfig {
                refresh_interval: value(raw.discovery.refresh_interval),
                load_balancers: raw.discovery.load_balancers,
                listener_ports: raw
                    .discovery
                    .listener_ports
                    .iter()
                    .filter_map(|p| u16::try_from(p.value).ok())
                    .collect(),
                instance_tags: raw.discovery.instance_tags,
                early_refresh_min_interval: value(raw.discovery.early_refresh_min_interval),
            },
            scrape: ScrapeConfig {
                interval: value(scrape.interval),
                timeout: value(scrape.timeout),
                mode: scrape.mode,
                metrics_path: scrape.metrics_path.value,
                body_size_limit: scrape.body_size_limit,
                sample_limit: scrape.sample_limit,
                label_limit: scrape.label_limit,
                label_name_length_limit: scrape.label_name_length_limit,
                label_value_length_limit: scrape.label_value_length_limit,
                direct_connect_timeout: value(scrape.direct_connect_timeout),
                alb_request_budget: scrape.alb_request_budget.map(|b| b.value),
                alb_max_requests_per_member: scrape.alb_max_requests_per_member.value,
                identity: scrape.identity.value,
                honor_labels: scrape.honor_labels,
                tls_config: TlsConfig {
                    ca_file: scrape.tls_config.ca_file.map(|p| files::resolve(base, p)),
                    server_name: scrape.tls_config.server_name.filter(|n| !n.is_empty()),
                    insecure_skip_verify: scrape.tls_config.insecure_skip_verify,
                },
                basic_auth: scrape
                    .basic_auth
                    .map(|a| BasicAuth { username: a.username, password_file: files::resolve(base, a.password_file) }),
                bearer_token_file: scrape.bearer_token_file.map(|f| files::resolve(base, f.value)),
                job_name: scrape.job_name.value,
                stale_after_intervals: scrape.stale_after_intervals.value,
                enabled: scrape.enabled,
            },
            relabel_configs: raw.relabel_configs,
            metric_relabel_configs: raw.metric_relabel_configs,
            storage: StorageConfig {
                path: storage_path,
                retention: RetentionConfig::from_raw(
                    raw.storage.retention.map(|r| r.value),
                    &raw.storage.retention_tiers,
                ),
                flush_interval: value(raw.storage.flush_interval),
            },
            http: HttpConfig { listen_address },
            shutdown_timeout: raw.shutdown_timeout.value,
            remote_write: raw
                .remote_write
                .into_iter()
                .map(|r| {
                    let mut remote = r.value;
                    remote.resolve(base);
                    remote
                })
                .collect(),
            external_labels: raw.external_labels,
            sharding: raw.sharding,
        }
    }

    /// The effective configuration as YAML, defaults filled in and paths resolved.
    ///
    /// # Errors
    /// Only if serialization fails, which the types here do not cause.
    pub fn to_yaml(&self) -> Result<String, serde_saphyr::SerializeError> {
        serde_saphyr::to_string(self)
    }
}

/// Collects every problem, so one run reports them all.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn check(&mut self, ok: bool, key: &str, location: Location, message: impl FnOnce() -> String) {
        if !ok {
            self.0.push(Problem { key: key.to_string(), line: line_of(location), message: message() });
        }
    }

    fn check_aws(&mut self, aws: &raw::RawAws) {
        if let Some(url) = &aws.endpoint_url {
            let text = &url.value;
            self.check(is_http_url(text), "aws.endpoint_url", url.referenced, || {
                format!("{text:?} is not an http:// or https:// URL")
            });
        }
        let attempts = &aws.max_attempts;
        self.check(attempts.value >= 1, "aws.max_attempts", attempts.referenced, || "must be at least 1".into());
    }

    fn check_durations(&mut self, raw: &RawConfig) {
        for (key, d) in [
            ("aws.connect_timeout", &raw.aws.connect_timeout),
            ("aws.call_timeout", &raw.aws.call_timeout),
            ("discovery.refresh_interval", &raw.discovery.refresh_interval),
            ("scrape.interval", &raw.scrape.interval),
            ("scrape.timeout", &raw.scrape.timeout),
            ("storage.flush_interval", &raw.storage.flush_interval),
            ("scrape.direct_connect_timeout", &raw.scrape.direct_connect_timeout),
            ("discovery.early_refresh_min_interval", &raw.discovery.early_refresh_min_interval),
            ("shutdown_timeout", &raw.shutdown_timeout),
        ] {
            self.check(!d.value.is_zero(), key, d.referenced, || "must be greater than 0".into());
            self.check(d.value.as_std() <= LONGEST_SETTING, key, d.referenced, || {
                format!("{} is too long: at most {}", d.value, PromDuration::from_std(LONGEST_SETTING))
            });
        }
        let tiers = &raw.storage.retention_tiers;
        for (key, d) in [
            ("storage.retention", &raw.storage.retention),
            ("storage.retention_tiers.raw", &tiers.raw),
            ("storage.retention_tiers.1m", &tiers.minute),
            ("storage.retention_tiers.5m", &tiers.five_minutes),
            ("storage.retention_tiers.1h", &tiers.hour),
        ] {
            if let Some(d) = d {
                // Below an hour, a tier would not outlive the compaction that fills it.
                self.check(d.value.as_std() >= std::time::Duration::from_secs(3600), key, d.referenced, || {
                    format!("{} is too short: at least 1h", d.value)
                });
                self.check(d.value.as_std() <= LONGEST_RETENTION, key, d.referenced, || {
                    format!("{} is too long: at most {}", d.value, PromDuration::from_std(LONGEST_RETENTION))
                });
            }
        }
        // `retention` promises nothing older is kept: a longer tier breaks it.
        if let Some(total) = &raw.storage.retention {
            for (key, tier) in [
                ("storage.retention_tiers.raw", &tiers.raw),
                ("storage.retention_tiers.1m", &tiers.minute),
                ("storage.retention_tiers.5m", &tiers.five_minutes),
                ("storage.retention_tiers.1h", &tiers.hour),
            ] {
                if let Some(tier) = tier {
                    self.check(tier.value.as_std() <= total.value.as_std(), key, tier.referenced, || {
                        format!(
                            "{} is longer than storage.retention ({}), which keeps nothing older: shorten it, or \
                             lengthen storage.retention",
                            tier.value, total.value
                        )
                    });
                }
            }
        }
    }

    fn check_ports(&mut self, discovery: &raw::RawDiscovery) {
        for port in &discovery.listener_ports {
            let valid = (1..=i64::from(u16::MAX)).contains(&port.value);
            self.check(valid, "discovery.listener_ports", port.referenced, || {
                format!("{} is not a port (1-65535)", port.value)
            });
        }
    }

    fn check_scrape(&mut self, scrape: &raw::RawScrape) {
        let (timeout, interval) = (scrape.timeout.value, scrape.interval.value);
        let (least, most) = (SCRAPE_INTERVAL_BOUNDS.0, SCRAPE_INTERVAL_BOUNDS.1);
        self.check(
            interval.as_std() >= least && interval.as_std() <= most,
            "scrape.interval",
            scrape.interval.referenced,
            || {
                format!(
                    "{interval} is out of range: between {} and {}",
                    PromDuration::from_std(least),
                    PromDuration::from_std(most)
                )
            },
        );
        self.check(timeout <= interval, "scrape.timeout", scrape.timeout.referenced, || {
            format!("{timeout} must not exceed scrape.interval ({interval})")
        });
        let path = &scrape.metrics_path;
        self.check(path.value.starts_with('/'), "scrape.metrics_path", path.referenced, || {
            format!("{:?} must start with /", path.value)
        });
        let connect = scrape.direct_connect_timeout.value;
        self.check(
            connect <= timeout,
            "scrape.direct_connect_timeout",
            scrape.direct_connect_timeout.referenced,
            || format!("{connect} must not exceed scrape.timeout ({timeout})"),
        );
        let cap = &scrape.alb_max_requests_per_member;
        self.check(cap.value >= 1, "scrape.alb_max_requests_per_member", cap.referenced, || {
            "must be at least 1".into()
        });
        if let Some(budget) = &scrape.alb_request_budget {
            self.check(budget.value >= 1, "scrape.alb_request_budget", budget.referenced, || {
                "must be at least 1".into()
            });
        }
        let identity = &scrape.identity;
        self.check(!identity.value.is_empty(), "scrape.identity", identity.referenced, || {
            "needs at least one source; payloads are never attributed by guessing".into()
        });
        if let Some(token) = &scrape.bearer_token_file {
            self.check(scrape.basic_auth.is_none(), "scrape.bearer_token_file", token.referenced, || {
                "set either basic_auth or bearer_token_file, not both".into()
            });
        }
    }

    fn check_outputs(&mut self, raw: &RawConfig) {
        self.check(
            raw.storage.path.is_some() || !raw.remote_write.is_empty() || !raw.scrape.enabled,
            "storage.path",
            Location::UNKNOWN,
            || {
                "is null and remote_write is empty: samples would go nowhere (scrape.enabled: false for discovery only)"
                    .into()
            },
        );
        let mut names = std::collections::BTreeSet::new();
        for (i, remote) in raw.remote_write.iter().enumerate() {
            for (key, message) in remote.value.problems() {
                self.check(false, &format!("remote_write[{i}].{key}"), remote.referenced, || message);
            }
            let name = remote.value.remote_name();
            self.check(names.insert(name.clone()), &format!("remote_write[{i}].name"), remote.referenced, || {
                format!("{name:?} is used by another receiver: names must be unique")
            });
        }
        for name in raw.external_labels.keys() {
            self.check(crate::labels::is_valid_label_name(name), "external_labels", Location::UNKNOWN, || {
                format!("{name:?} is not a valid label name")
            });
        }
        let sharding = &raw.sharding;
        self.check(sharding.total >= 1, "sharding.total", Location::UNKNOWN, || "must be at least 1".into());
        self.check(sharding.index < sharding.total.max(1), "sharding.index", Location::UNKNOWN, || {
            format!("{} must be below sharding.total ({})", sharding.index, sharding.total)
        });
        let job = &raw.scrape.job_name;
        self.check(!job.value.is_empty(), "scrape.job_name", job.referenced, || "must not be empty".into());
        let stale = &raw.scrape.stale_after_intervals;
        self.check(stale.value >= 1, "scrape.stale_after_intervals", stale.referenced, || {
            "must be at least 1 (1 marks an instance stale at its first missed interval)".into()
        });
    }

    fn check_storage(&mut self, path: &Spanned<String>, resolved: &Path) {
        let empty = path.value.is_empty();
        self.check(!empty, "storage.path", path.referenced, || "must not be empty".into());
        self.check(empty || !resolved.is_dir(), "storage.path", path.referenced, || {
            format!("{} is a directory; name the database file inside it", resolved.display())
        });
    }
}

fn read_config_file(path: &Path) -> Result<String, Error> {
    let owned = || path.to_path_buf();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NotFound { path: owned() }),
        Err(source) => return Err(Error::Unreadable { path: owned(), source }),
        Ok(meta) if meta.is_dir() => return Err(Error::IsDirectory { path: owned() }),
        Ok(_) => {}
    }
    std::fs::read_to_string(path).map_err(|source| Error::Unreadable { path: owned(), source })
}

fn syntax_error(path: &Path, text: &str, error: &serde_saphyr::Error) -> Error {
    let options = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
    let rendered = error.render_with_options(options);
    let message = rendered.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    let line = error.location().and_then(line_of);
    let message = plain_words(&strip_location_suffix(&message));
    // The parser names the line but not the key: take it from the file.
    let message = match line.and_then(|l| key_at_line(text, l)) {
        Some(key) if !message.contains(&key) => format!("{key}: {message}"),
        _ => message,
    };
    Error::Syntax { path: path.to_path_buf(), line, message }
}

/// serde-saphyr's messages in the words of a config file's reader.
fn plain_words(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return format!("{key} is set more than once");
    }
    if let Some(suggested) = did_you_mean(message) {
        return suggested;
    }
    match message {
        "invalid u64" | "invalid u32" | "invalid usize" | "invalid u16" | "invalid u8" => {
            format!("{message}: expected a whole number (0 or more)")
        }
        "invalid i64" => "expected a whole number".to_string(),
        "expected mapping start" => "expected indented `key: value` lines here, not a single value".to_string(),
        "expected sequence start" => "expected a list here (`[a, b]`, or `- a` lines)".to_string(),
        _ => message.to_string(),
    }
}

/// serde's "unknown field `intreval`, expected one of interval, timeout, …"
/// with the likely key first: "unknown field `intreval`: did you mean
/// `interval`? (expected one of …)". `None` for other messages, or when no
/// key is close.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, expected) = rest.split_once("`, expected one of ")?;
    let (distance, closest) = expected
        .split(", ")
        .map(|candidate| (edit_distance(field, candidate.trim_matches('`')), candidate.trim_matches('`')))
        .min()?;
    // Close: a typo or two, not another word.
    (distance <= 2.max(field.len() / 4))
        .then(|| format!("unknown field `{field}`: did you mean `{closest}`? (expected one of {expected})"))
}

/// Levenshtein distance (optimal string alignment: a swap of two letters is one edit).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// The dotted key (`scrape.sample_limit`) written on 1-based `line` of a YAML
/// block mapping, found from the indentation of the lines above it.
fn key_at_line(text: &str, line: u64) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let key_of = |l: &str| {
        let trimmed = l.trim_start();
        let key = trimmed.split_once(':')?.0.trim();
        let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        plain.then(|| (l.len() - trimmed.len(), key.to_string()))
    };
    let (mut indent, key) = key_of(lines.get(index)?)?;
    let mut path = vec![key];
    for l in lines[..index].iter().rev() {
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        if let Some((i, key)) = key_of(l).filter(|(i, _)| *i < indent) {
            path.push(key);
            indent = i;
            if i == 0 {
                break;
            }
        }
    }
    path.reverse();
    Some(path.join("."))
}

/// serde-saphyr ends plain messages with "at line L, column C"; the line is
/// reported separately, so keep the message itself.
fn strip_location_suffix(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains("column") => message[..i].to_string(),
        _ => message.to_string(),
    }
}

fn is_http_url(text: &str) -> bool {
    let rest = text.strip_prefix("http://").or_else(|| text.strip_prefix("https://"));
    rest.is_some_and(|host| !host.is_empty() && !host.starts_with('/'))
}

fn absolute_parent(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    absolute.parent().map(Path::to_path_buf).unwrap_or_default()
}

#[cfg(test)]
mod tests;
