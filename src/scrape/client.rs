//! HTTP for scraping: one shared keep-alive client (and one with a short
//! connect timeout for `auto` mode's direct attempts), the Prometheus text
//! `Accept` header, gzip, auth from files, the body size limit, and ALB
//! stickiness cookies.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, COOKIE, SET_COOKIE, USER_AGENT};

use futures_util::future::BoxFuture;

use super::failure::FailureReason;
use crate::config::ScrapeConfig;
use crate::exposition::{BodyError, decode_body};
use crate::record::root_cause;

/// node_exporter answers protobuf when offered it; ask for text 0.0.4 only.
const ACCEPT_TEXT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";
/// The cookie an ALB sets with `lb_cookie` stickiness: it pins a member.
const MEMBER_COOKIE: &str = "AWSALB";
/// The cookie of target-group stickiness on a weighted forward: it pins a
/// target group, not a member.
const GROUP_COOKIE: &str = "AWSALBTG";

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
    /// A redirect: never followed. A payload fetched from elsewhere would be
    /// handed to attribution as this target's, and could come from outside
    /// the monitored network.
    #[error("HTTP status {status}: redirect to {location} not followed (fleetscrape follows no redirect)")]
    Redirect {
        /// The 3xx status.
        status: u16,
        /// Its `Location` header, as sent.
        location: String,
    },
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

/// The most a response's declared length reserves ahead of its bytes: a
/// lying header must not allocate gigabytes.
const MAX_PRESIZE: usize = 16 << 20;

impl FetchError {
    /// The `scrape_status.reason` for this error.
    pub fn reason(&self) -> FailureReason {
        match self {
            Self::Timeout(_) => FailureReason::Timeout,
            Self::Connect(_) => FailureReason::ConnectError,
            Self::Status(_) | Self::Redirect { .. } | Self::Http(_) => FailureReason::HttpError,
            Self::Body(BodyError::TooLarge { .. }) => FailureReason::LimitExceeded,
            Self::Body(_) => FailureReason::BodyError,
            Self::Credentials { .. } => FailureReason::CredentialsError,
        }
    }

    /// Whether the address itself is unreachable (what `auto` mode falls back on).
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

/// The stickiness cookies a response set, each as `name=value`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stickiness {
    /// `AWSALB`: pins the member that answered.
    pub member: Option<String>,
    /// `AWSALBTG`: pins that member's target group.
    pub group: Option<String>,
}

impl Stickiness {
    /// Keeps the newer of each cookie (an ALB refreshes them on every answer).
    pub fn merge(&mut self, newer: Self) {
        if newer.member.is_some() {
            self.member = newer.member;
        }
        if newer.group.is_some() {
            self.group = newer.group;
        }
    }

    /// The `Cookie` header that reaches this member: `None` without a member
    /// cookie, since a group cookie alone lets the balancer pick any member.
    pub fn header(&self) -> Option<String> {
        let member = self.member.as_ref()?;
        Some(match &self.group {
            Some(group) => format!("{member}; {group}"),
            None => member.clone(),
        })
    }
}

/// A successful response.
#[derive(Debug)]
pub struct Fetched {
    /// The decoded payload text.
    pub text: String,
    /// The stickiness cookies the response set.
    pub stickiness: Stickiness,
    /// Time from sending the request to the end of the body.
    pub duration: Duration,
    /// The load balancer node that answered, when its name has several.
    pub node: Option<SocketAddr>,
}

/// Which node of a load balancer a request goes to. An ALB's DNS name
/// resolves to one address per node (one node per enabled zone); with
/// cross-zone load balancing off a node routes only to its own zone's
/// members, so a round that always used one keep-alive connection would never
/// reach the other zones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Node {
    /// Whichever the connection pool picks.
    #[default]
    Any,
    /// The `i`-th address the name resolves to (modulo their number).
    Index(usize),
    /// This address, if the name still resolves to it (else any).
    Address(SocketAddr),
}

/// The client, URL and node of one request.
struct Route {
    client: reqwest::Client,
    url: String,
    node: Option<SocketAddr>,
}

/// One scrape request.
#[derive(Debug, Clone, Copy)]
pub struct FetchRequest<'a> {
    /// The URL.
    pub url: &'a str,
    /// Limit for the whole request.
    pub timeout: Duration,
    /// Use `auto` mode's short connect timeout.
    pub quick_connect: bool,
    /// A `Cookie` header to send as is.
    pub cookie: Option<&'a str>,
    /// The load balancer node to go through.
    pub node: Node,
}

/// What performs scrape requests: [`HttpClient`], or a fake in the
/// scheduler's deterministic-time tests.
pub trait Fetch: Send + Sync + std::fmt::Debug {
    /// Performs one request.
    fn fetch<'a>(&'a self, request: FetchRequest<'a>) -> BoxFuture<'a, Result<Fetched, FetchError>>;

    /// Discovery refreshed: drop what was resolved from names (ALB node
    /// addresses rotate), so the next requests resolve again.
    fn topology_changed(&self) {}
}

impl Fetch for HttpClient {
    fn fetch<'a>(&'a self, request: FetchRequest<'a>) -> BoxFuture<'a, Result<Fetched, FetchError>> {
        Box::pin(self.get_via(request.url, request.timeout, request.quick_connect, request.cookie, request.node))
    }

    fn topology_changed(&self) {
        if let Ok(mut resolved) = self.resolved.lock() {
            resolved.clear();
        }
        if let Ok(mut clients) = self.pinned.lock() {
            clients.clear();
        }
    }
}

/// The scrape clients, shared by every job.
#[derive(Debug, Clone)]
pub struct HttpClient {
    shared: reqwest::Client,
    direct: reqwest::Client,
    body_size_limit: usize,
    basic_auth: Option<(String, std::path::PathBuf)>,
    bearer_token_file: Option<std::path::PathBuf>,
    tls: TlsSettings,
    /// Clients pinned to addresses: one per load balancer node, and with
    /// `tls_config.server_name` one connecting that name to the URL's
    /// addresses. Cleared at each discovery refresh.
    pinned: Arc<Mutex<HashMap<String, reqwest::Client>>>,
    /// `host:port` → the addresses it resolved to, until the next refresh.
    resolved: Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>,
    /// Name resolutions made (tests watch re-resolution).
    resolutions: Arc<std::sync::atomic::AtomicU64>,
    /// Names resolved from this table instead of the system (tests).
    hosts: Arc<HashMap<String, Vec<IpAddr>>>,
}

/// What every client is built with.
#[derive(Debug, Clone)]
struct TlsSettings {
    timeout: Duration,
    insecure: bool,
    roots: Vec<reqwest::Certificate>,
    server_name: Option<String>,
}

impl TlsSettings {
    fn builder(&self, connect_timeout: Duration) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(self.insecure);
        for root in &self.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        builder
    }
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
        let mut roots = Vec::new();
        if let Some(file) = &config.tls_config.ca_file {
            let ca_error = |message: String| ClientError::CaFile { file: file.display().to_string(), message };
            let pem = std::fs::read(file).map_err(|e| ca_error(e.to_string()))?;
            roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
        }
        let tls = TlsSettings {
            timeout: config.timeout.as_std(),
            insecure: config.tls_config.insecure_skip_verify,
            roots,
            server_name: config.tls_config.server_name.clone(),
        };
        let build = |timeout| tls.builder(timeout).build().map_err(|e| ClientError::Build(e.to_string()));
        Ok(Self {
            shared: build(config.timeout.as_std())?,
            direct: build(config.direct_connect_timeout.as_std())?,
            body_size_limit: config.body_size_limit.0,
            basic_auth: config.basic_auth.as_ref().map(|a| (a.username.clone(), a.password_file.clone())),
            bearer_token_file: config.bearer_token_file.clone(),
            tls,
            pinned: Arc::default(),
            resolved: Arc::default(),
            resolutions: Arc::default(),
            hosts: Arc::default(),
        })
    }

    /// Uses `hosts` instead of the system resolver for these names (like
    /// curl's `--resolve`): tests give a name several loopback "ALB nodes".
    pub fn with_hosts(mut self, hosts: HashMap<String, Vec<IpAddr>>) -> Self {
        self.hosts = Arc::new(hosts);
        self
    }

    /// Every address `host` resolves to, cached until the next discovery
    /// refresh ([`Fetch::topology_changed`]): ALB node addresses rotate.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, FetchError> {
        let key = format!("{host}:{port}");
        if let Some(addresses) = self.resolved.lock().ok().and_then(|r| r.get(&key).cloned()) {
            return Ok(addresses);
        }
        self.resolutions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut addresses: Vec<SocketAddr> = match self.hosts.get(host) {
            Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| FetchError::Connect(format!("cannot resolve {host}: {e}")))?
                .collect(),
        };
        addresses.sort();
        addresses.dedup();
        if let Ok(mut resolved) = self.resolved.lock() {
            resolved.insert(key, addresses.clone());
        }
        Ok(addresses)
    }

    /// The client and URL for a request: the shared clients, unless the
    /// request names a load balancer node, or `tls_config.server_name`
    /// applies (the URL then carries the server name, and the client connects
    /// it to the URL's addresses). A named node gets a client of its own
    /// (its own keep-alive connection), so requests really reach that node.
    async fn route(&self, url: &str, node: Node) -> Result<Option<Route>, FetchError> {
        let Ok(mut parsed) = reqwest::Url::parse(url) else { return Ok(None) };
        let (Some(host), Some(port)) = (parsed.host_str().map(str::to_string), parsed.port_or_known_default()) else {
            return Ok(None);
        };
        let server_name = self.tls.server_name.as_ref().filter(|_| parsed.scheme() == "https");
        let by_name = host.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>().is_err();
        if server_name.is_none() && (node == Node::Any || !by_name) {
            return Ok(None);
        }
        let addresses = self.resolve(&host, port).await?;
        let chosen: Vec<SocketAddr> = match node {
            Node::Any => addresses.clone(),
            Node::Index(i) if !addresses.is_empty() => vec![addresses[i % addresses.len()]],
            Node::Address(address) if addresses.contains(&address) => vec![address],
            Node::Index(_) | Node::Address(_) => addresses.clone(),
        };
        let name = server_name.cloned().unwrap_or_else(|| host.clone());
        let key = format!("{name}@{chosen:?}");
        let cached = self.pinned.lock().ok().and_then(|clients| clients.get(&key).cloned());
        let client = match cached {
            Some(client) => client,
            None => {
                let client = self
                    .tls
                    .builder(self.tls.timeout)
                    .resolve_to_addrs(&name, &chosen)
                    .build()
                    .map_err(|e| FetchError::Http(e.to_string()))?;
                if let Ok(mut clients) = self.pinned.lock() {
                    clients.insert(key, client.clone());
                }
                client
            }
        };
        if server_name.is_some() {
            parsed
                .set_host(Some(&name))
                .map_err(|e| FetchError::Http(format!("tls_config.server_name {name:?}: {e}")))?;
        }
        let node = (chosen.len() == 1 && addresses.len() > 1).then(|| chosen[0]);
        Ok(Some(Route { client, url: parsed.to_string(), node }))
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
        self.get_via(url, timeout, quick_connect, cookie, Node::Any).await
    }

    /// [`HttpClient::get`] through one node of the load balancer behind `url`.
    ///
    /// # Errors
    /// [`FetchError`] for anything but a 2xx answer with a usable body.
    pub async fn get_via(
        &self,
        url: &str,
        timeout: Duration,
        quick_connect: bool,
        cookie: Option<&str>,
        node: Node,
    ) -> Result<Fetched, FetchError> {
        let started = Instant::now();
        let route = self.route(url, node).await?;
        let (client, url, node) = match &route {
            Some(route) => (&route.client, route.url.as_str(), route.node),
            None => (if quick_connect { &self.direct } else { &self.shared }, url, None),
        };
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
        let status = response.status();
        if status.is_redirection() {
            let location = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
            return Err(FetchError::Redirect {
                status: status.as_u16(),
                location: location.unwrap_or("(no Location header)").to_string(),
            });
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        // A declared length past the limit fails before a byte is read.
        if self.body_size_limit > 0 && response.content_length().is_some_and(|n| n > self.body_size_limit as u64) {
            return Err(BodyError::TooLarge { limit: self.body_size_limit, decoded: false }.into());
        }
        let stickiness = stickiness(response.headers());
        let encoding = response.headers().get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(str::to_string);
        // Sized from the declared length (exporters send one): no regrowth.
        let expected = response.content_length().and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
        let mut raw = Vec::with_capacity(expected.min(MAX_PRESIZE));
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(e, timeout))? {
            raw.extend_from_slice(&chunk);
            if self.body_size_limit > 0 && raw.len() > self.body_size_limit {
                return Err(BodyError::TooLarge { limit: self.body_size_limit, decoded: false }.into());
            }
        }
        let text = decode_body(raw, encoding.as_deref(), self.body_size_limit)?;
        Ok(Fetched { text, stickiness, duration: started.elapsed(), node })
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

fn stickiness(headers: &reqwest::header::HeaderMap) -> Stickiness {
    let mut found = Stickiness::default();
    let pairs = headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).filter_map(|v| v.split(';').next());
    for pair in pairs {
        let pair = pair.trim();
        match pair.split_once('=').map(|(name, _)| name.trim()) {
            Some(MEMBER_COOKIE) => found.member = Some(pair.to_string()),
            Some(GROUP_COOKIE) => found.group = Some(pair.to_string()),
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn only_the_member_cookie_pins_a_member() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append(SET_COOKIE, "AWSALBTG=tg1; Expires=x; Path=/".parse().unwrap());
        let group_only = stickiness(&headers);
        assert_eq!(group_only, Stickiness { member: None, group: Some("AWSALBTG=tg1".into()) });
        assert_eq!(group_only.header(), None, "a group cookie does not reach a member");
        headers.append(SET_COOKIE, "AWSALB=m1; Path=/".parse().unwrap());
        let both = stickiness(&headers);
        assert_eq!(both.header().as_deref(), Some("AWSALB=m1; AWSALBTG=tg1"));
        let mut jar = group_only;
        jar.merge(Stickiness { member: Some("AWSALB=m2".into()), group: None });
        assert_eq!(jar.header().as_deref(), Some("AWSALB=m2; AWSALBTG=tg1"));
    }
    use std::process::{Child, Command, Stdio};

    use super::*;
    use crate::config::Config;

    fn client(dir: &Path, scrape_yaml: &str) -> HttpClient {
        let config = Config::from_yaml(&format!("scrape:\n{scrape_yaml}"), &dir.join("c.yml")).expect("config");
        HttpClient::new(&config.scrape).expect("client")
    }

    struct Server(Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A real TLS server (OpenSSL's `s_server -HTTP`) on loopback whose
    /// certificate, signed by a test CA (`ca.pem`), names only `backend.internal`.
    fn tls_server(dir: &Path) -> (Server, u16) {
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl").args(args).current_dir(dir).stderr(Stdio::null()).status();
            assert!(status.is_ok_and(|s| s.success()), "openssl {args:?} failed (is openssl installed?)");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=fleetscrape test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=backend.internal",
        ]);
        std::fs::write(dir.join("leaf.ext"), "subjectAltName=DNS:backend.internal\nbasicConstraints=CA:FALSE\n")
            .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ]);
        std::fs::write(dir.join("metrics"), "HTTP/1.0 200 ok\r\nContent-Type: text/plain\r\n\r\nnode_load1 0.5\n")
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-cert",
                "cert.pem",
                "-key",
                "key.pem",
                "-HTTP",
                "-quiet",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let server = Server(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (server, port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("openssl s_server did not listen");
    }

    #[tokio::test]
    async fn https_verifies_against_the_configured_server_name() {
        let dir = tempfile::tempdir().unwrap();
        let (_server, port) = tls_server(dir.path());
        let url = format!("https://127.0.0.1:{port}/metrics");
        let timeout = Duration::from_secs(5);

        let pinned = client(dir.path(), "  tls_config: {ca_file: ca.pem, server_name: backend.internal}\n");
        let fetched = pinned.get(&url, timeout, false, None).await.expect("verified against backend.internal");
        assert_eq!(fetched.text, "node_load1 0.5\n");
        // Twice: the pinned client is reused.
        assert!(pinned.get(&url, timeout, false, None).await.is_ok());

        // ALB node addresses rotate: a discovery refresh makes the next request resolve again.
        let resolutions = || pinned.resolutions.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(resolutions(), 1);
        pinned.topology_changed();
        assert!(pinned.get(&url, timeout, false, None).await.is_ok());
        assert_eq!(resolutions(), 2, "re-resolved after the topology changed");

        let unpinned = client(dir.path(), "  tls_config: {ca_file: ca.pem}\n");
        let err = unpinned.get(&url, timeout, false, None).await.expect_err("the certificate does not name 127.0.0.1");
        assert!(matches!(err, FetchError::Connect(_) | FetchError::Http(_)), "{err}");

        let insecure = client(dir.path(), "  tls_config: {insecure_skip_verify: true}\n");
        assert!(insecure.get(&url, timeout, false, None).await.is_ok());
    }

    async fn auth_stub(expected: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| async move {
            let given = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
            if given == expected {
                (axum::http::StatusCode::OK, "up 1\n")
            } else {
                (axum::http::StatusCode::UNAUTHORIZED, "")
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{address}/metrics")
    }

    #[tokio::test]
    async fn credentials_are_read_from_files_at_each_scrape() {
        let dir = tempfile::tempdir().unwrap();
        let timeout = Duration::from_secs(5);
        std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
        let url = auth_stub("Basic bW9uaXRvcjpzM2NyZXQ=").await; // monitor:s3cret
        let basic = client(dir.path(), "  basic_auth: {username: monitor, password_file: password}\n");
        assert!(basic.get(&url, timeout, false, None).await.is_ok());

        std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
        let url = auth_stub("Bearer t0ken").await;
        let bearer = client(dir.path(), "  bearer_token_file: token\n");
        assert!(bearer.get(&url, timeout, false, None).await.is_ok());
        std::fs::write(dir.path().join("token"), "rotated\n").unwrap();
        let err = bearer.get(&url, timeout, false, None).await.expect_err("the rotated token is read");
        assert!(matches!(err, FetchError::Status(401)), "{err}");
        std::fs::remove_file(dir.path().join("token")).unwrap();
        let err = bearer.get(&url, timeout, false, None).await.expect_err("a missing token file");
        assert_eq!(err.reason(), FailureReason::CredentialsError);
    }
}
