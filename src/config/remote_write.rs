//! The `remote_write:` list, in Prometheus's own shape
//! (<https://prometheus.io/docs/prometheus/latest/configuration/configuration/#remote_write>),
//! plus `sharding:`. Secrets written inline (`password`, `credentials`,
//! `bearer_token`, header values, `secret_key`) never appear in the
//! effective configuration, in `Debug` output or in logs: they print as
//! `<secret>`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

use crate::duration::PromDuration;
use crate::relabel::RelabelConfig;

/// A value that must not be shown: prints and serializes as `<secret>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<secret>")
    }
}

fn default_timeout() -> PromDuration {
    PromDuration::from_secs(30)
}

/// One remote-write receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// Receiver URL, e.g. `http://prometheus:9090/api/v1/write`.
    pub url: String,
    /// Name in logs and metrics (`remote_name`); default: a hash of the URL, as Prometheus.
    #[serde(default)]
    pub name: Option<String>,
    /// Limit of one request.
    #[serde(default = "default_timeout")]
    pub remote_timeout: PromDuration,
    /// Extra request headers, such as a tenant id (`X-Scope-OrgID`).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// HTTP basic authentication.
    #[serde(default)]
    pub basic_auth: Option<RemoteBasicAuth>,
    /// An `Authorization` header.
    #[serde(default)]
    pub authorization: Option<Authorization>,
    /// A bearer token (deprecated in Prometheus in favour of `authorization`).
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// A file holding a bearer token, read at each request.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// AWS Signature Version 4 (Amazon Managed Service for Prometheus).
    #[serde(default)]
    pub sigv4: Option<SigV4Config>,
    /// TLS towards the receiver.
    #[serde(default)]
    pub tls_config: RemoteTlsConfig,
    /// Queue, batching and retries.
    #[serde(default)]
    pub queue_config: QueueConfig,
    /// Relabeling applied to every series before it is sent.
    #[serde(default)]
    pub write_relabel_configs: Vec<RelabelConfig>,
}

/// `basic_auth`: a password inline or in a file (read at each request).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteBasicAuth {
    /// User name.
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// `authorization`: `Authorization: <type> <credentials>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// Scheme; `Bearer` by default.
    #[serde(default = "bearer", rename = "type")]
    pub kind: String,
    /// Credentials inline.
    #[serde(default)]
    pub credentials: Option<Secret>,
    /// File holding the credentials.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

fn bearer() -> String {
    "Bearer".into()
}

/// `sigv4`: credentials from these keys, a profile, or the SDK's default
/// chain (environment, web identity, ECS, instance profile).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigV4Config {
    /// Region; default `aws.region`, then the SDK's chain.
    pub region: Option<String>,
    /// Access key id (with `secret_key`).
    pub access_key: Option<String>,
    /// Secret access key.
    pub secret_key: Option<Secret>,
    /// Profile of the shared config files.
    pub profile: Option<String>,
    /// A role to assume with the credentials found.
    pub role_arn: Option<String>,
}

/// `tls_config` towards a receiver.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteTlsConfig {
    /// PEM CA certificates to trust, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM).
    pub key_file: Option<PathBuf>,
    /// Not supported for remote_write (refused with a clear message, not
    /// silently ignored): the URL's host must be a name the certificate has.
    pub server_name: Option<String>,
    /// Accept any certificate.
    pub insecure_skip_verify: bool,
}

/// `queue_config`: Prometheus's keys and current defaults, plus
/// `max_pending_samples`, the bound of fleetscrape's in-memory buffer
/// (Prometheus buffers in its WAL on disk instead).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Samples each shard takes into a batch at most at once.
    pub capacity: usize,
    /// Fewest parallel senders.
    pub min_shards: usize,
    /// Most parallel senders.
    pub max_shards: usize,
    /// Samples per request at most.
    pub max_samples_per_send: usize,
    /// Longest a sample waits for its batch to fill.
    pub batch_send_deadline: PromDuration,
    /// First retry delay.
    pub min_backoff: PromDuration,
    /// Longest retry delay.
    pub max_backoff: PromDuration,
    /// Retry on 429 Too Many Requests (as on 5xx), honouring `Retry-After`.
    pub retry_on_http_429: bool,
    /// Samples held in memory for this receiver at most (sent, being sent or
    /// waiting); beyond it the oldest are dropped and counted. ~16 bytes each.
    pub max_pending_samples: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            min_shards: 1,
            max_shards: 50,
            max_samples_per_send: 2_000,
            batch_send_deadline: PromDuration::from_secs(5),
            min_backoff: PromDuration::from_millis(30),
            max_backoff: PromDuration::from_secs(5),
            retry_on_http_429: true,
            max_pending_samples: 10_000_000,
        }
    }
}

/// Headers fleetscrape sets itself, which `headers` may not override
/// (Prometheus refuses the same ones).
pub const RESERVED_HEADERS: [&str; 5] =
    ["authorization", "content-encoding", "content-type", "user-agent", "x-prometheus-remote-write-version"];

impl RemoteWriteConfig {
    /// The `remote_name` label: the configured name, or the first 6 hex
    /// digits of the URL's MD5 (what Prometheus's `remote_name` is not, but
    /// as stable).
    pub fn remote_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            use md5::Digest;
            let digest = md5::Md5::digest(self.url.as_bytes());
            digest.iter().take(3).map(|b| format!("{b:02x}")).collect()
        })
    }

    /// Every secret file this receiver reads.
    pub fn secret_files(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> = Vec::new();
        files.extend(self.basic_auth.as_ref().and_then(|a| a.password_file.as_deref()));
        files.extend(self.authorization.as_ref().and_then(|a| a.credentials_file.as_deref()));
        files.extend(self.bearer_token_file.as_deref());
        files.extend(self.tls_config.key_file.as_deref());
        files
    }

    /// Every file this receiver reads, with its key under `remote_write[i]`.
    pub fn files_read(&self) -> Vec<(&'static str, &Path)> {
        let mut files: Vec<(&'static str, &Path)> = Vec::new();
        files.extend(
            self.basic_auth.as_ref().and_then(|a| a.password_file.as_deref()).map(|p| ("basic_auth.password_file", p)),
        );
        files.extend(
            self.authorization
                .as_ref()
                .and_then(|a| a.credentials_file.as_deref())
                .map(|p| ("authorization.credentials_file", p)),
        );
        files.extend(self.bearer_token_file.as_deref().map(|p| ("bearer_token_file", p)));
        files.extend(self.tls_config.ca_file.as_deref().map(|p| ("tls_config.ca_file", p)));
        files.extend(self.tls_config.cert_file.as_deref().map(|p| ("tls_config.cert_file", p)));
        files.extend(self.tls_config.key_file.as_deref().map(|p| ("tls_config.key_file", p)));
        files
    }

    /// Resolves relative files against the config file's directory.
    pub(super) fn resolve(&mut self, base: &Path) {
        let join = |p: &mut Option<PathBuf>| {
            if let Some(path) = p {
                *path = super::files::resolve(base, &*path);
            }
        };
        if let Some(auth) = &mut self.basic_auth {
            join(&mut auth.password_file);
        }
        if let Some(auth) = &mut self.authorization {
            join(&mut auth.credentials_file);
        }
        join(&mut self.bearer_token_file);
        join(&mut self.tls_config.ca_file);
        join(&mut self.tls_config.cert_file);
        join(&mut self.tls_config.key_file);
    }

    /// What is wrong with this receiver's settings, as (key, message) pairs
    /// relative to `remote_write[i]`.
    pub(super) fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| problems.push((key.to_string(), message));
        if !super::is_http_url(&self.url) {
            problem("url", format!("{:?} is not an http:// or https:// URL", self.url));
        }
        if self.remote_timeout.is_zero() {
            problem("remote_timeout", "must be greater than 0".into());
        }
        let auths = [
            self.basic_auth.is_some(),
            self.authorization.is_some(),
            self.bearer_token.is_some() || self.bearer_token_file.is_some(),
            self.sigv4.is_some(),
        ];
        if auths.iter().filter(|set| **set).count() > 1 {
            problem("basic_auth", "set at most one of basic_auth, authorization, bearer_token(_file) and sigv4".into());
        }
        if self.bearer_token.is_some() && self.bearer_token_file.is_some() {
            problem("bearer_token", "set bearer_token or bearer_token_file, not both".into());
        }
        if let Some(auth) = &self.basic_auth
            && auth.password.is_some() == auth.password_file.is_some()
        {
            problem("basic_auth", "set exactly one of password and password_file".into());
        }
        if let Some(auth) = &self.authorization
            && auth.credentials.is_some() == auth.credentials_file.is_some()
        {
            problem("authorization", "set exactly one of credentials and credentials_file".into());
        }
        if let Some(sigv4) = &self.sigv4
            && sigv4.access_key.is_some() != sigv4.secret_key.is_some()
        {
            problem("sigv4", "set access_key and secret_key together".into());
        }
        let tls = &self.tls_config;
        if tls.server_name.is_some() {
            problem(
                "tls_config.server_name",
                "is not supported for remote_write: use a URL whose host the certificate names".into(),
            );
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            problem("tls_config", "set cert_file and key_file together".into());
        }
        for name in self.headers.keys() {
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                problem("headers", format!("{name} is set by fleetscrape itself and cannot be overridden"));
            }
        }
        let q = &self.queue_config;
        for (key, value) in
            [("min_shards", q.min_shards), ("max_samples_per_send", q.max_samples_per_send), ("capacity", q.capacity)]
        {
            if value == 0 {
                problem(&format!("queue_config.{key}"), "must be at least 1".into());
            }
        }
        if q.max_shards < q.min_shards {
            problem("queue_config.max_shards", format!("{} is below min_shards ({})", q.max_shards, q.min_shards));
        }
        if q.max_pending_samples < q.max_samples_per_send {
            problem(
                "queue_config.max_pending_samples",
                format!("{} is below max_samples_per_send ({})", q.max_pending_samples, q.max_samples_per_send),
            );
        }
        if q.min_backoff > q.max_backoff {
            problem("queue_config.min_backoff", format!("{} exceeds max_backoff ({})", q.min_backoff, q.max_backoff));
        }
        if q.batch_send_deadline.is_zero() {
            problem("queue_config.batch_send_deadline", "must be greater than 0".into());
        }
        problems
    }
}

/// `sharding:` this replica's share of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardingConfig {
    /// Replicas sharing the fleet.
    pub total: u32,
    /// This replica's index, `0..total`.
    pub index: u32,
}

impl Default for ShardingConfig {
    fn default() -> Self {
        Self { total: 1, index: 0 }
    }
}

impl ShardingConfig {
    /// Whether the fleet is split at all.
    pub fn is_sharded(&self) -> bool {
        self.total > 1
    }
}
