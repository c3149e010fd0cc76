//! HTTP for scraping: one shared keep-alive client (and one with a short
//! connect timeout for `auto` mode's direct attempts), the Prometheus text
//! `Accept` header, gzip, auth from files, the body size limit, and ALB
//! stickiness cookies.

use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, COOKIE, SET_COOKIE, USER_AGENT};

use crate::config::ScrapeConfig;
use crate::exposition::{BodyError, decode_body};

/// node_exporter answers protobuf when offered it; ask for text 0.0.4 only.
const ACCEPT_TEXT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";
/// Cookies an ALB sets for stickiness (`lb_cookie`, weighted target groups).
const STICKY_COOKIES: [&str; 2] = ["AWSALB", "AWSALBTG"];

/// Why a request produced no payload text.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer within the timeout.
    #[error("timeout after {0:?}")]
    Timeout(Duration),
    /// The connection could not be opened.
    #[error("connection failed: {0}")]
    Connect(String),
    /// A non-2xx answer.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body is too large, corrupt or not UTF-8.
    #[error("{0}")]
    Body(#[from] BodyError),
    /// Any other transport error.
    #[error("request failed: {0}")]
    Http(String),
    /// A credentials file could not be read.
    #[error("cannot read {file}: {source}")]
    Credentials {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl FetchError {
    /// The `scrape_status.reason` for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Connect(_) => "connect_error",
            Self::Status(_) => "http_error",
            Self::Body(BodyError::TooLarge { .. }) => "limit_exceeded",
            Self::Body(_) => "body_error",
            Self::Http(_) => "http_error",
            Self::Credentials { .. } => "credentials_error",
        }
    }

    /// Whether the address itself is unreachable (what `auto` mode falls back on).
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

/// A successful response.
#[derive(Debug)]
pub struct Fetched {
    /// The decoded payload text.
    pub text: String,
    /// A stickiness cookie the response set, as `name=value`.
    pub sticky_cookie: Option<String>,
    /// Time from sending the request to the end of the body.
    pub duration: Duration,
}

/// The scrape clients, shared by every job.
#[derive(Debug, Clone)]
pub struct HttpClient {
    shared: reqwest::Client,
    direct: reqwest::Client,
    body_size_limit: usize,
    basic_auth: Option<(String, std::path::PathBuf)>,
    bearer_token_file: Option<std::path::PathBuf>,
}

/// Why the clients could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `tls_config.ca_file` is unreadable or not PEM.
    #[error("scrape.tls_config.ca_file {file}: {message}")]
    CaFile {
        /// The file.
        file: String,
        /// What went wrong.
        message: String,
    },
    /// The TLS stack refused the settings.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

impl HttpClient {
    /// Builds the clients from the scrape settings.
    ///
    /// # Errors
    /// [`ClientError`] when the CA file cannot be used.
    pub fn new(config: &ScrapeConfig) -> Result<Self, ClientError> {
        let build = |connect_timeout: Duration| -> Result<reqwest::Client, ClientError> {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(connect_timeout)
                .pool_idle_timeout(Duration::from_secs(90))
                .danger_accept_invalid_certs(config.tls_config.insecure_skip_verify);
            if let Some(file) = &config.tls_config.ca_file {
                let ca_error = |message: String| ClientError::CaFile { file: file.display().to_string(), message };
                let pem = std::fs::read(file).map_err(|e| ca_error(e.to_string()))?;
                for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))? {
                    builder = builder.add_root_certificate(cert);
                }
            }
            builder.build().map_err(|e| ClientError::Build(e.to_string()))
        };
        Ok(Self {
            shared: build(config.timeout.as_std())?,
            direct: build(config.direct_connect_timeout.as_std())?,
            body_size_limit: config.body_size_limit.0,
            basic_auth: config.basic_auth.as_ref().map(|a| (a.username.clone(), a.password_file.clone())),
            bearer_token_file: config.bearer_token_file.clone(),
        })
    }

    /// GETs `url` within `timeout`. `quick_connect` uses the short connect
    /// timeout of `auto` mode's direct attempts; `cookie` is sent as is.
    ///
    /// # Errors
    /// [`FetchError`] for anything but a 2xx answer with a usable body.
    pub async fn get(
        &self,
        url: &str,
        timeout: Duration,
        quick_connect: bool,
        cookie: Option<&str>,
    ) -> Result<Fetched, FetchError> {
        let started = Instant::now();
        let client = if quick_connect { &self.direct } else { &self.shared };
        let mut request = client
            .get(url)
            .timeout(timeout)
            .header(ACCEPT, ACCEPT_TEXT)
            .header(ACCEPT_ENCODING, "gzip")
            .header(USER_AGENT, concat!("fleetscrape/", env!("CARGO_PKG_VERSION")));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request = self.authorize(request)?;
        let mut response = request.send().await.map_err(|e| classify(e, timeout))?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let sticky_cookie = sticky_cookie(response.headers());
        let encoding = response.headers().get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut raw = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(e, timeout))? {
            raw.extend_from_slice(&chunk);
            if self.body_size_limit > 0 && raw.len() > self.body_size_limit {
                return Err(BodyError::TooLarge { limit: self.body_size_limit, decoded: false }.into());
            }
        }
        let text = decode_body(raw, encoding.as_deref(), self.body_size_limit)?;
        Ok(Fetched { text, sticky_cookie, duration: started.elapsed() })
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, FetchError> {
        let read = |file: &std::path::Path| {
            std::fs::read_to_string(file)
                .map(|s| s.trim().to_string())
                .map_err(|source| FetchError::Credentials { file: file.display().to_string(), source })
        };
        Ok(match (&self.basic_auth, &self.bearer_token_file) {
            (Some((user, file)), _) => request.basic_auth(user, Some(read(file)?)),
            (None, Some(file)) => request.header(AUTHORIZATION, format!("Bearer {}", read(file)?)),
            (None, None) => request,
        })
    }
}

fn classify(error: reqwest::Error, timeout: Duration) -> FetchError {
    if error.is_timeout() {
        FetchError::Timeout(timeout)
    } else if error.is_connect() {
        FetchError::Connect(root_cause(&error))
    } else {
        FetchError::Http(root_cause(&error))
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

fn sticky_cookie(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.split_once('=').is_some_and(|(name, _)| STICKY_COOKIES.contains(&name.trim())))
        .map(|pair| pair.trim().to_string())
}
