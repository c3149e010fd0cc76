//! Test harness shared by the integration tests: a real moto server per test,
//! an HTTP proxy in front of it that counts API calls on the wire and can
//! simulate an outage, and a seeder that builds topologies through the AWS SDK.
//!
//! Everything listens on 127.0.0.1; the private IPs moto hands out are data only.

#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

pub mod e2e;
pub mod fakehost;
pub mod grafana;
pub mod podman;
pub mod prometheus;
pub mod seed;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};

/// Credentials and region every test uses; never real ones.
pub const TEST_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "ap-northeast-2"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// Puts [`TEST_ENV`] into this process's environment, once, before any SDK
/// client exists, so the SDK's credential chain never reaches for IMDS.
pub fn set_test_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (key, value) in TEST_ENV {
            // SAFETY: runs exactly once, before any test in this binary creates
            // an SDK client or spawns a thread that reads the environment;
            // every test calls this first.
            unsafe { std::env::set_var(key, value) };
        }
        // A developer's own endpoint override must not leak into tests.
        // SAFETY: as above.
        unsafe { std::env::remove_var("AWS_ENDPOINT_URL") };
    });
}

/// `program args` in a clean environment: the test credentials, `PATH`, and
/// `home` as `HOME` (so no developer profile leaks in). Stdio is the caller's.
pub fn clean_command(program: &str, args: &[&str], home: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(TEST_ENV);
    command
}

/// A loopback server that accepts connections and never answers; returns
/// its `host:port` and how many connections it has taken.
pub async fn silent_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind silent server");
    let address = listener.local_addr().expect("silent server address").to_string();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    (address, accepted)
}

/// One metric of fleetscrape's `/metrics` at `http`, summed over its label
/// sets; `None` while the endpoint does not answer or lacks it.
pub async fn metric(http: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{http}/metrics")).await.ok()?.text().await.ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A free TCP port on loopback (bound, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

/// A moto server on a free loopback port, stopped on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    _log_dir: tempfile::TempDir,
}

impl Moto {
    /// Starts `moto_server` and waits until it answers.
    pub fn start() -> Self {
        let port = free_port();
        let log_dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(log_dir.path().join("moto.log")).expect("moto log");
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto_server ({e}); install it with: pip install 'moto[server]'"));
        let moto = Self { child, url: format!("http://127.0.0.1:{port}"), _log_dir: log_dir };
        moto.wait_until_ready();
        moto
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let address = self.url.trim_start_matches("http://").to_string();
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&address).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto_server did not start listening on {address} within 60 s");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy saw and how it behaves.
#[derive(Default)]
struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    calls: Mutex<BTreeMap<String, u64>>,
    /// `service:Action`, the service read from the SigV4 credential scope (the IAM prefix).
    operations: Mutex<std::collections::BTreeSet<String>>,
    fault: Mutex<Option<AwsFault>>,
    /// Actions answered 403 `AccessDenied`, as IAM denies an action the role lacks.
    denied: Mutex<std::collections::BTreeSet<String>>,
}

/// What the proxy does to every request while a fault is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsFault {
    /// 503 `ServiceUnavailable`, not forwarded.
    Unavailable,
    /// 400 `Throttling` (ELBv2, Auto Scaling).
    Throttling,
    /// 503 `RequestLimitExceeded` (EC2's throttling, in EC2's error format).
    RequestLimitExceeded,
    /// 500 `InternalFailure`.
    ServerError,
    /// No answer at all (the request is held open).
    Hang,
    /// moto's answer, cut in half.
    Truncated,
    /// 400 `ExpiredToken`: the session credentials expired.
    ExpiredCredentials,
}

/// An HTTP proxy in front of moto: counts every AWS request by its `Action`
/// (the Query protocol's operation name) and, during a simulated outage,
/// answers 503 without forwarding.
pub struct AwsProxy {
    state: Arc<ProxyState>,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

impl AwsProxy {
    /// Starts a proxy forwarding to `upstream`.
    pub async fn start(upstream: &str) -> Self {
        let state = Arc::new(ProxyState { upstream: upstream.to_string(), ..ProxyState::default() });
        let app = axum::Router::new().fallback(forward).with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("proxy server");
        });
        Self { state, url, server }
    }

    /// Requests seen so far by operation, and resets the count.
    pub fn take_calls(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.state.calls.lock().expect("calls lock"))
    }

    /// Every `service:Action` seen so far (IAM action names).
    pub fn operations(&self) -> std::collections::BTreeSet<String> {
        self.state.operations.lock().expect("operations lock").clone()
    }

    /// Starts or ends a simulated outage (every request answered 503).
    pub fn set_outage(&self, on: bool) {
        self.set_fault(on.then_some(AwsFault::Unavailable));
    }

    /// Answers `action` (e.g. `DescribePolicies`) 403 `AccessDenied` from now on.
    pub fn deny(&self, action: &str) {
        self.state.denied.lock().expect("denied lock").insert(action.to_string());
    }

    /// Starts a fault (`None` ends it).
    pub fn set_fault(&self, fault: Option<AwsFault>) {
        *self.state.fault.lock().expect("fault lock") = fault;
    }
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn action_of(body: &[u8]) -> String {
    let body = String::from_utf8_lossy(body);
    body.split('&').find_map(|pair| pair.strip_prefix("Action=")).unwrap_or("unknown").to_string()
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return (StatusCode::BAD_REQUEST, "unreadable body").into_response();
    };
    *state.calls.lock().expect("calls lock").entry(action_of(&body)).or_default() += 1;
    // Authorization: AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, ...
    let service = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("unsigned")
        .to_string();
    state.operations.lock().expect("operations lock").insert(format!("{service}:{}", action_of(&body)));
    let fault = *state.fault.lock().expect("fault lock");
    let error = |status: StatusCode, code: &str, message: &str| {
        let xml = format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>0</RequestId></ErrorResponse>"
        );
        (status, [("content-type", "text/xml")], xml).into_response()
    };
    if state.denied.lock().expect("denied lock").contains(&action_of(&body)) {
        let message = format!("User is not authorized to perform: {service}:{}", action_of(&body));
        return error(StatusCode::FORBIDDEN, "AccessDenied", &message);
    }
    match fault {
        Some(AwsFault::Unavailable) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "simulated outage");
        }
        Some(AwsFault::Throttling) => return error(StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded"),
        Some(AwsFault::RequestLimitExceeded) => {
            let xml = "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.\
                       </Message></Error></Errors><RequestID>0</RequestID></Response>";
            return (StatusCode::SERVICE_UNAVAILABLE, [("content-type", "text/xml")], xml).into_response();
        }
        Some(AwsFault::ServerError) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", "simulated failure");
        }
        Some(AwsFault::Hang) => std::future::pending::<()>().await,
        Some(AwsFault::ExpiredCredentials) => {
            return error(
                StatusCode::BAD_REQUEST,
                "ExpiredToken",
                "The security token included in the request is expired",
            );
        }
        Some(AwsFault::Truncated) | None => {}
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = state.client.request(parts.method, format!("{}{path}", state.upstream)).body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    match upstream.send().await {
        Ok(reply) => {
            let status = reply.status();
            let headers: Vec<(HeaderName, _)> = reply
                .headers()
                .iter()
                .filter(|(n, _)| *n != "content-length" && *n != "transfer-encoding")
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            let mut bytes = reply.bytes().await.unwrap_or_else(|_| Bytes::new());
            if fault == Some(AwsFault::Truncated) {
                bytes = bytes.slice(..bytes.len() / 2);
            }
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            response.headers_mut().extend(headers);
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// Whether this run is CI's (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Writes `yaml` to a config file in `dir` and returns its path.
pub fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("fleetscrape.yml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// Polls `condition` every 50 ms until it holds, or panics after `limit`
/// with `what` (a hang guard, not a timing assertion).
pub async fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the calling test again inside a new network namespace that has only
/// loopback (`unshare --net`, as root), so a connection to anything else —
/// an emulated 10.x address, real AWS — fails loudly instead of leaving the
/// machine. Returns `true` in the parent (the child ran the test: return),
/// `false` inside the namespace, or when isolation is unavailable (a warning
/// is printed and the test runs in place; under `CI=true` that fails).
/// The child must run exactly that one test and pass: a `test_name` that
/// names no test (a rename) fails here instead of passing with nothing run.
pub fn isolate_network(test_name: &str) -> bool {
    const MARK: &str = "FLEETSCRAPE_TEST_NETNS";
    if std::env::var_os(MARK).is_some() {
        return false;
    }
    let probe = Command::new("unshare").args(["--net", "true"]).stderr(Stdio::null()).status();
    if !probe.is_ok_and(|s| s.success()) {
        assert!(
            !in_ci(),
            "`unshare --net` is unavailable (run as root with util-linux); under CI=true {test_name} must be isolated"
        );
        eprintln!("warning: `unshare --net` is unavailable here; {test_name} runs without network isolation");
        return false;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let output = Command::new("unshare")
        .args(["--net", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(MARK, "1")
        .stderr(Stdio::inherit())
        .output()
        .expect("run the test in a network namespace");
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    assert!(output.status.success(), "{test_name} failed inside its loopback-only network namespace (output above)");
    assert!(
        stdout.contains("test result: ok. 1 passed;"),
        "the re-run in the namespace ran no test named {test_name:?} (renamed?): it must run exactly one"
    );
    true
}
