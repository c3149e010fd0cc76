//! One remote-write request: the HTTP client of a receiver (TLS, timeout),
//! its authentication (basic, `authorization`, bearer, SigV4) and headers,
//! and what an answer means for the batch.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};

use crate::config::RemoteWriteConfig;
use crate::record::root_cause;

/// Why a receiver's client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A TLS file is unreadable or not PEM.
    #[error("remote_write {name}: tls_config.{key} {file}: {message}")]
    TlsFile {
        /// The receiver.
        name: String,
        /// `ca_file`, `cert_file`.
        key: &'static str,
        /// The file.
        file: String,
        /// What went wrong.
        message: String,
    },
    /// A header name or value is not valid HTTP.
    #[error("remote_write {name}: header {header:?} is not a valid HTTP header")]
    Header {
        /// The receiver.
        name: String,
        /// The header name.
        header: String,
    },
    /// The TLS stack refused the settings.
    #[error("remote_write {name}: cannot build the HTTP client: {message}")]
    Build {
        /// The receiver.
        name: String,
        /// Why.
        message: String,
    },
}

/// What one attempt of a request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the receiver has the samples.
    Sent,
    /// Worth retrying (5xx, 429, connection or timeout); `Retry-After`, if given.
    Retry {
        /// What happened, for the log.
        error: String,
        /// The receiver's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Never worth retrying (another 4xx): the batch is dropped.
    Rejected {
        /// Status and the receiver's words.
        error: String,
    },
}

/// How requests authenticate.
enum Auth {
    None,
    Basic { username: String, password: Secret },
    Header { scheme: String, credentials: Secret },
    SigV4 { region: String, credentials: SharedCredentialsProvider },
}

/// A secret inline or read from a file at each request (rotation).
enum Secret {
    Inline(String),
    File(std::path::PathBuf),
}

impl Secret {
    fn read(&self) -> Result<String, String> {
        match self {
            Self::Inline(value) => Ok(value.clone()),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("cannot read credentials file {}: {e}", path.display())),
        }
    }

    fn of(inline: Option<&crate::config::Secret>, file: Option<&std::path::Path>) -> Option<Self> {
        inline.map(|s| Self::Inline(s.expose().to_string())).or_else(|| file.map(|f| Self::File(f.to_path_buf())))
    }
}

/// Sends request bodies to one receiver.
pub struct Client {
    http: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    auth: Auth,
    retry_on_429: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Client {
    /// The client of `config`; `region` is `aws.region`, the default of `sigv4.region`.
    ///
    /// # Errors
    /// [`ClientError`] on unusable TLS files or headers.
    pub async fn new(config: &RemoteWriteConfig, region: Option<&str>) -> Result<Self, ClientError> {
        let name = config.remote_name();
        let tls = &config.tls_config;
        let mut builder = reqwest::Client::builder()
            .timeout(config.remote_timeout.as_std())
            .connect_timeout(config.remote_timeout.as_std().min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(tls.insecure_skip_verify);
        let read = |key: &'static str, file: &std::path::Path| {
            std::fs::read(file).map_err(|e| ClientError::TlsFile {
                name: name.clone(),
                key,
                file: file.display().to_string(),
                message: e.to_string(),
            })
        };
        if let Some(file) = &tls.ca_file {
            let pem = read("ca_file", file)?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError::TlsFile {
                name: name.clone(),
                key: "ca_file",
                file: file.display().to_string(),
                message: e.to_string(),
            })?;
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            let mut pem = read("cert_file", cert)?;
            pem.extend(read("key_file", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| ClientError::TlsFile {
                name: name.clone(),
                key: "cert_file",
                file: cert.display().to_string(),
                message: e.to_string(),
            })?;
            builder = builder.identity(identity);
        }
        let http = builder.build().map_err(|e| ClientError::Build { name: name.clone(), message: e.to_string() })?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("snappy"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("fleetscrape/", env!("CARGO_PKG_VERSION"))));
        headers.insert("x-prometheus-remote-write-version", HeaderValue::from_static("0.1.0"));
        for (header, value) in &config.headers {
            let bad = || ClientError::Header { name: name.clone(), header: header.clone() };
            let header_name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| bad())?;
            let mut header_value = HeaderValue::from_str(value.expose()).map_err(|_| bad())?;
            header_value.set_sensitive(true);
            headers.insert(header_name, header_value);
        }
        Ok(Self {
            http,
            url: config.url.clone(),
            headers,
            auth: auth(config, region).await,
            retry_on_429: config.queue_config.retry_on_http_429,
        })
    }

    /// POSTs one snappy-compressed `WriteRequest`.
    pub async fn send(&self, body: Vec<u8>) -> Outcome {
        let request = self.http.post(&self.url).headers(self.headers.clone());
        let request = match self.authorize(request, &body).await {
            Ok(request) => request,
            Err(error) => return Outcome::Retry { error, retry_after: None },
        };
        let response = match request.body(body).send().await {
            Ok(response) => response,
            Err(e) => {
                let what = if e.is_timeout() { "timed out" } else { "failed" };
                return Outcome::Retry { error: format!("request {what}: {}", root_cause(&e)), retry_after: None };
            }
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Sent;
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        let words: String = text.trim().chars().take(300).collect();
        let error = if words.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {words}") };
        if status.is_server_error() || (status.as_u16() == 429 && self.retry_on_429) {
            Outcome::Retry { error, retry_after }
        } else {
            Outcome::Rejected { error }
        }
    }

    /// Adds one request's authentication.
    async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        body: &[u8],
    ) -> Result<reqwest::RequestBuilder, String> {
        Ok(match &self.auth {
            Auth::None => request,
            Auth::Basic { username, password } => request.basic_auth(username, Some(password.read()?)),
            Auth::Header { scheme, credentials } => {
                let mut value = HeaderValue::from_str(&format!("{scheme} {}", credentials.read()?))
                    .map_err(|_| "the credentials are not a valid header value".to_string())?;
                value.set_sensitive(true);
                request.header(AUTHORIZATION, value)
            }
            Auth::SigV4 { region, credentials } => {
                let mut request = request;
                for (name, value) in sign(&self.url, body, region, credentials).await? {
                    request = request.header(name, value);
                }
                request
            }
        })
    }
}

async fn auth(config: &RemoteWriteConfig, region: Option<&str>) -> Auth {
    if let Some(basic) = &config.basic_auth
        && let Some(password) = Secret::of(basic.password.as_ref(), basic.password_file.as_deref())
    {
        return Auth::Basic { username: basic.username.clone(), password };
    }
    if let Some(authorization) = &config.authorization
        && let Some(credentials) =
            Secret::of(authorization.credentials.as_ref(), authorization.credentials_file.as_deref())
    {
        return Auth::Header { scheme: authorization.kind.clone(), credentials };
    }
    if let Some(credentials) = Secret::of(config.bearer_token.as_ref(), config.bearer_token_file.as_deref()) {
        return Auth::Header { scheme: "Bearer".into(), credentials };
    }
    if let Some(sigv4) = &config.sigv4 {
        return sigv4_auth(sigv4, region).await;
    }
    Auth::None
}

/// Credentials from the keys given, the profile, or the SDK's default chain;
/// a role assumed with them when `role_arn` is set.
async fn sigv4_auth(sigv4: &crate::config::remote_write::SigV4Config, region: Option<&str>) -> Auth {
    use aws_config::BehaviorVersion;
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = sigv4.region.as_deref().or(region) {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    if let Some(profile) = &sigv4.profile {
        loader = loader.profile_name(profile);
    }
    if let (Some(key), Some(secret)) = (&sigv4.access_key, &sigv4.secret_key) {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            key,
            secret.expose(),
            None,
            None,
            "remote_write.sigv4",
        ));
    }
    let sdk = loader.load().await;
    let region = sdk.region().map(ToString::to_string).unwrap_or_else(|| "us-east-1".into());
    let base = sdk
        .credentials_provider()
        .unwrap_or_else(|| SharedCredentialsProvider::new(aws_credential_types::Credentials::for_tests()));
    let credentials = match &sigv4.role_arn {
        Some(role) => SharedCredentialsProvider::new(
            aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("fleetscrape")
                .configure(&sdk)
                .build()
                .await,
        ),
        None => base,
    };
    Auth::SigV4 { region, credentials }
}

/// SigV4 headers for a POST of `body` to `url`, service `aps`.
async fn sign(
    url: &str,
    body: &[u8],
    region: &str,
    credentials: &SharedCredentialsProvider,
) -> Result<Vec<(String, String)>, String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    let credentials = credentials.provide_credentials().await.map_err(|e| format!("sigv4 credentials: {e}"))?;
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("aps")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("sigv4: {e}"))?
        .into();
    let headers = [("content-encoding", "snappy"), ("content-type", "application/x-protobuf")];
    let request = SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| format!("sigv4: {e}"))?;
    let (instructions, _) = sign(request, &params).map_err(|e| format!("sigv4: {e}"))?.into_parts();
    let (headers, _) = instructions.into_parts();
    Ok(headers.into_iter().map(|h| (h.name().to_string(), h.value().to_string())).collect())
}
