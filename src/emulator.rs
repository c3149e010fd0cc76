//! A loopback stand-in for an Application Load Balancer, for tests and the
//! demo: moto and LocalStack model ALBs but forward no traffic.
//!
//! Each listener is a loopback port that forwards every request to one member
//! of its target group, chosen by [`Balancing`]: round-robin, random, sticky
//! (an opaque `AWSALB` cookie pins a client to a member, as an ALB does with
//! `lb_cookie` stickiness; a client without one gets a random member), skewed
//! (one member takes a fixed share, as under slow start or anomaly
//! mitigation), or least outstanding requests. With `group_cookie` every
//! response also sets `AWSALBTG`, target-group stickiness: it pins the target
//! group (each listener here has one), never a member. Members can be made
//! to answer late. Like a real ALB, nothing in a response says which member
//! answered; a failed member gives 502, an empty target group 503, a member
//! timeout 504.
//!
//! Members change at run time through the admin listener:
//! `PUT /listeners/{port}` with a body of comma-separated `host:port`
//! addresses, `GET /listeners` for the current state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How a listener picks the member for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Balancing {
    /// Each member in turn.
    RoundRobin,
    /// A uniformly random member each time.
    Random,
    /// The member named by the client's stickiness cookie; otherwise a random
    /// member, and the response sets the cookie.
    Sticky,
    /// The first member takes `skew` of the requests; the others share the rest.
    Skewed,
    /// The member with the fewest requests in flight (ties: random).
    LeastOutstanding,
}

/// The cookie of `lb_cookie` stickiness: it pins a member.
const MEMBER_COOKIE: &str = "AWSALB";
/// The cookie of target-group stickiness: it pins a target group.
const GROUP_COOKIE: &str = "AWSALBTG";

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener or the admin port could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One member: its address and the opaque cookie value that pins it.
#[derive(Debug, Clone)]
struct Member {
    address: String,
    cookie: String,
}

impl Member {
    fn new(address: &str) -> Self {
        // Opaque, like the encrypted value a real ALB puts in AWSALB.
        Self { address: address.to_string(), cookie: format!("{:032x}", fastrand::u128(..)) }
    }
}

#[derive(Debug)]
struct ListenerState {
    members: RwLock<Vec<Member>>,
    next: AtomicUsize,
    balancing: Balancing,
    skew: f64,
    group_cookie: Option<String>,
    delays: BTreeMap<String, Duration>,
    outstanding: std::sync::Mutex<BTreeMap<String, usize>>,
    client: reqwest::Client,
}

impl ListenerState {
    fn members(&self) -> Vec<Member> {
        self.members.read().map(|m| m.clone()).unwrap_or_default()
    }

    fn set_members(&self, addresses: &[String]) {
        let mut members = match self.members.write() {
            Ok(members) => members,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Keep cookies of members that stay, as an ALB keeps routing them.
        let kept: Vec<Member> = addresses
            .iter()
            .map(|a| members.iter().find(|m| &m.address == a).cloned().unwrap_or_else(|| Member::new(a)))
            .collect();
        *members = kept;
    }

    fn pick(&self, headers: &HeaderMap) -> Option<(Member, bool)> {
        let members = self.members();
        if members.is_empty() {
            return None;
        }
        if self.balancing == Balancing::Sticky
            && let Some(value) = cookie(headers, MEMBER_COOKIE)
            && let Some(member) = members.iter().find(|m| m.cookie == value)
        {
            return Some((member.clone(), false));
        }
        let index = match self.balancing {
            Balancing::Random | Balancing::Sticky => fastrand::usize(..members.len()),
            Balancing::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % members.len(),
            Balancing::Skewed if members.len() == 1 || fastrand::f64() < self.skew => 0,
            Balancing::Skewed => 1 + fastrand::usize(..members.len() - 1),
            Balancing::LeastOutstanding => {
                let outstanding = self.outstanding.lock().map(|o| o.clone()).unwrap_or_default();
                let count = |m: &Member| outstanding.get(&m.address).copied().unwrap_or(0);
                let least = members.iter().map(count).min().unwrap_or(0);
                let tied: Vec<usize> = (0..members.len()).filter(|&i| count(&members[i]) == least).collect();
                tied[fastrand::usize(..tied.len())]
            }
        };
        Some((members[index].clone(), self.balancing == Balancing::Sticky))
    }

    /// Counts a request in flight to `address` until the guard drops.
    fn in_flight(&self, address: &str) -> InFlight<'_> {
        if let Ok(mut outstanding) = self.outstanding.lock() {
            *outstanding.entry(address.to_string()).or_default() += 1;
        }
        InFlight { state: self, address: address.to_string() }
    }
}

struct InFlight<'a> {
    state: &'a ListenerState,
    address: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut outstanding) = self.state.outstanding.lock()
            && let Some(n) = outstanding.get_mut(&self.address)
        {
            *n = n.saturating_sub(1);
        }
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Listener port (as the load balancer has it) → state.
type Listeners = Arc<BTreeMap<u16, Arc<ListenerState>>>;

/// A running emulator.
#[derive(Debug)]
pub struct Emulator {
    listeners: Listeners,
    /// Where each listener port is served on loopback.
    pub addresses: BTreeMap<u16, SocketAddr>,
    /// The admin listener.
    pub admin_address: SocketAddr,
    shutdown: CancellationToken,
}

/// What to serve.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Listener port → (address to serve it on, initial member addresses).
    pub listeners: BTreeMap<u16, (SocketAddr, Vec<String>)>,
    /// Where the admin API listens.
    pub admin: SocketAddr,
    /// How members are chosen.
    pub balancing: Balancing,
    /// [`Balancing::Skewed`]: the first member's share of requests.
    pub skew: f64,
    /// Also set `AWSALBTG` (target-group stickiness) on every response.
    pub group_cookie: bool,
    /// Limit for one forwarded request (504 after it).
    pub member_timeout: Duration,
    /// Members that answer late: member address → delay before forwarding.
    pub member_delays: BTreeMap<String, Duration>,
}

impl EmulatorConfig {
    /// Listeners served on the given addresses, admin on any loopback port,
    /// a 10 s member timeout, a 70 % skew, no group cookie, no late member.
    pub fn new(listeners: BTreeMap<u16, (SocketAddr, Vec<String>)>, balancing: Balancing) -> Self {
        Self {
            listeners,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            balancing,
            skew: 0.7,
            group_cookie: false,
            member_timeout: Duration::from_secs(10),
            member_delays: BTreeMap::new(),
        }
    }
}

impl Emulator {
    /// Binds every listener and the admin port and starts serving.
    ///
    /// # Errors
    /// [`Error::Bind`] when an address cannot be bound.
    pub async fn start(config: EmulatorConfig) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .timeout(config.member_timeout)
            .no_gzip()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let shutdown = CancellationToken::new();
        let mut states = BTreeMap::new();
        let mut addresses = BTreeMap::new();
        for (port, (address, members)) in &config.listeners {
            let state = Arc::new(ListenerState {
                members: RwLock::new(members.iter().map(|a| Member::new(a)).collect()),
                next: AtomicUsize::new(0),
                balancing: config.balancing,
                skew: config.skew.clamp(0.0, 1.0),
                // One opaque value per listener: the target group it pins.
                group_cookie: config.group_cookie.then(|| format!("{:032x}", fastrand::u128(..))),
                delays: config.member_delays.clone(),
                outstanding: std::sync::Mutex::default(),
                client: client.clone(),
            });
            let router = axum::Router::new().fallback(forward).with_state(Arc::clone(&state));
            addresses.insert(*port, serve(*address, router, &shutdown).await?);
            states.insert(*port, state);
        }
        let listeners: Listeners = Arc::new(states);
        let admin = axum::Router::new()
            .route("/listeners", get(list_listeners))
            .route("/listeners/{port}", axum::routing::put(set_listener))
            .with_state(Arc::clone(&listeners));
        let admin_address = serve(config.admin, admin, &shutdown).await?;
        Ok(Self { listeners, addresses, admin_address, shutdown })
    }

    /// Replaces the members of a listener; `false` if there is no such listener.
    pub fn set_members(&self, port: u16, addresses: &[String]) -> bool {
        self.listeners.get(&port).map(|l| l.set_members(addresses)).is_some()
    }

    /// Stops serving.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve(address: SocketAddr, router: axum::Router, shutdown: &CancellationToken) -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind(address).await.map_err(|source| Error::Bind { address, source })?;
    let bound = listener.local_addr().map_err(|source| Error::Bind { address, source })?;
    let stop = shutdown.clone().cancelled_owned();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
            tracing::warn!(%bound, error = %e, "emulator listener stopped");
        }
    });
    Ok(bound)
}

async fn forward(State(state): State<Arc<ListenerState>>, request: Request) -> Response {
    let Some((member, set_cookie)) = state.pick(request.headers()) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "503 Service Temporarily Unavailable\n").into_response();
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return (StatusCode::BAD_REQUEST, "request body too large\n").into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = state.client.request(parts.method, format!("http://{}{path}", member.address)).body(body);
    for name in [header::ACCEPT, header::ACCEPT_ENCODING, header::USER_AGENT, header::AUTHORIZATION] {
        if let Some(value) = parts.headers.get(&name) {
            upstream = upstream.header(name, value);
        }
    }
    debug!(member = %member.address, "forwarding");
    let _in_flight = state.in_flight(&member.address);
    if let Some(delay) = state.delays.get(&member.address) {
        tokio::time::sleep(*delay).await;
    }
    let mut response = match upstream.send().await {
        Ok(reply) => relay(reply).await,
        Err(e) if e.is_timeout() => (StatusCode::GATEWAY_TIMEOUT, "504 Gateway Time-out\n").into_response(),
        Err(_) => (StatusCode::BAD_GATEWAY, "502 Bad Gateway\n").into_response(),
    };
    let mut cookies = Vec::new();
    if set_cookie {
        cookies.push(format!("{MEMBER_COOKIE}={}; Max-Age=604800; Path=/", member.cookie));
    }
    if let Some(group) = &state.group_cookie {
        cookies.push(format!("{GROUP_COOKIE}={group}; Max-Age=604800; Path=/"));
    }
    for value in cookies {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// Copies the member's status, content headers and body; nothing that names the member.
async fn relay(reply: reqwest::Response) -> Response {
    let status = reply.status();
    let mut headers = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
        if let Some(value) = reply.headers().get(&name) {
            headers.insert(name, value.clone());
        }
    }
    match reply.bytes().await {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            response
        }
        Err(_) => (StatusCode::BAD_GATEWAY, "502 Bad Gateway\n").into_response(),
    }
}

async fn list_listeners(State(listeners): State<Listeners>) -> String {
    let view: BTreeMap<u16, Vec<String>> =
        listeners.iter().map(|(port, l)| (*port, l.members().into_iter().map(|m| m.address).collect())).collect();
    serde_json::to_string(&view).unwrap_or_default()
}

async fn set_listener(State(listeners): State<Listeners>, Path(port): Path<u16>, body: Bytes) -> Response {
    let Some(listener) = listeners.get(&port) else {
        return (StatusCode::NOT_FOUND, format!("no listener {port}\n")).into_response();
    };
    let text = String::from_utf8_lossy(&body);
    let addresses: Vec<String> = text.split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect();
    listener.set_members(&addresses);
    (StatusCode::OK, format!("listener {port}: {} members\n", addresses.len())).into_response()
}

#[cfg(test)]
mod tests;
