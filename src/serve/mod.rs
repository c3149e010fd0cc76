//! fleetscrape's own HTTP endpoint: `/metrics` (its own metrics, Prometheus
//! text format), `/healthz`, and `/api/targets` (per instance: role, how it
//! was reached, last scrape, up, last error).

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::discovery::{RefreshStats, TopologyReceiver};
use crate::scrape::ScrapeState;
use crate::self_metrics::{Collect, Encoder};
use crate::store::writer::WriterStats;

pub mod readiness;

/// What the endpoint reports on.
#[derive(Debug, Clone)]
pub struct State {
    /// Scraper state and counters.
    pub scrape: Arc<ScrapeState>,
    /// Discovery counters.
    pub discovery: Arc<RefreshStats>,
    /// Store writer counters.
    pub writer: Arc<WriterStats>,
    /// The queue to the store writer: its fill and backpressure.
    pub writer_queue: Arc<crate::store::admission::Room>,
    /// The current topology.
    pub topology: TopologyReceiver,
    /// remote_write receivers, if any.
    pub remote: Option<crate::remote_write::RemoteWrite>,
    /// What `/api/sd` serves.
    pub sd: SdSettings,
    /// What `/ready` needs of the configuration.
    pub readiness: ReadinessSettings,
}

/// What `/ready` needs of the configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadinessSettings {
    /// `scrape.enabled`: without scraping, no target is no fault.
    pub scrape_enabled: bool,
    /// `discovery.refresh_interval`, seconds.
    pub refresh_interval: f64,
}

/// `/api/sd` settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct SdSettings {
    /// Whether instances are reached at their own address (`direct` and
    /// `auto` modes); through listeners only, none is directly reachable
    /// and `/api/sd` serves an empty list.
    pub direct: bool,
}

/// The routes.
pub fn router(state: State) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/targets", get(targets))
        .route("/api/sd", get(http_sd))
        .with_state(state)
}

/// `/ready`: 200 while fleetscrape does its job, else 503 with one line per
/// reason ([`readiness::check`]). `/healthz` stays liveness (the process
/// answers), so that compose can start Grafana, which shows the problem.
async fn ready(axum::extract::State(state): axum::extract::State<State>) -> axum::response::Response {
    use axum::http::StatusCode;
    let reasons = not_ready(&state);
    let status = if reasons.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, readiness::body(&reasons)).into_response()
}

/// Every reason `/ready` fails now.
fn not_ready(state: &State) -> Vec<readiness::NotReady> {
    let topology = state.topology.borrow().clone();
    let discovery_failing =
        state.discovery.failing_since().map(|since| (since, state.discovery.last_error().unwrap_or_default()));
    readiness::check(&readiness::Inputs {
        now: crate::clock::now_seconds(),
        discovered: state.discovery.ready(),
        discovery_failing,
        refresh_interval: state.readiness.refresh_interval,
        scrape_enabled: state.readiness.scrape_enabled,
        topology: topology.as_deref(),
        store_failing: state.writer.failing(),
    })
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, state: State, shutdown: CancellationToken) {
    if let Err(e) = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await {
        tracing::error!(error = %e, "HTTP endpoint failed");
    }
}

#[derive(Serialize)]
struct TargetView {
    instance_id: String,
    role: String,
    asg_name: Option<String>,
    path: String,
    /// Epoch seconds of the last interval that tried it, stored or not.
    last_scrape: Option<f64>,
    /// Epoch seconds of the last stored payload.
    last_success: Option<f64>,
    up: bool,
    reason: Option<crate::scrape::failure::FailureReason>,
    /// The last interval's error; `null` once an interval succeeds.
    last_error: Option<String>,
    /// Its target group's via-ALB rounds, when reached through a listener.
    target_group: Option<GroupView>,
    /// Why its payloads (scraped directly) name another instance, while they do.
    identity_issue: Option<IdentityIssueView>,
}

/// Why payloads through a path are not attributed: what they carried, what
/// was expected, what to change.
#[derive(Serialize)]
struct IdentityIssueView {
    /// Epoch seconds since when.
    since: f64,
    /// Where the identity was read (`node_uname_info{nodename}`), if any was.
    source: Option<String>,
    /// The identity seen.
    value: Option<String>,
    /// The members it should name, as that source names them.
    expected: Vec<String>,
    /// `add_an_identity`, `not_an_ec2_host_name`, `another_instance`, `unknown_instance`.
    hint: &'static str,
    /// The explanation, with what to change.
    message: String,
}

impl From<&crate::scrape::state::IdentityIssue> for IdentityIssueView {
    fn from(issue: &crate::scrape::state::IdentityIssue) -> Self {
        let why = &issue.why;
        Self {
            since: issue.since,
            source: why.seen.as_ref().map(|c| c.source.clone()),
            value: why.seen.as_ref().map(|c| c.value.clone()),
            expected: why.expected.clone(),
            hint: why.hint.as_str(),
            message: why.to_string(),
        }
    }
}

/// A target group's recent via-ALB coverage and its price.
#[derive(Serialize)]
struct GroupView {
    name: String,
    /// Members reached / members wanted, recent rounds (decayed over ~20).
    coverage: f64,
    /// Requests per member per interval, recent rounds.
    requests_per_member: f64,
    /// Rounds so far, and those that reached every member.
    rounds: u64,
    complete_rounds: u64,
    /// The last round's budget.
    budget: u32,
    /// Why payloads through its listener name no member, while they do.
    identity_issue: Option<IdentityIssueView>,
}

async fn targets(axum::extract::State(state): axum::extract::State<State>) -> impl IntoResponse {
    let groups = state.scrape.groups();
    let issues = state.scrape.identity_issues();
    let views: Vec<TargetView> = state
        .scrape
        .targets()
        .into_iter()
        .map(|(id, s)| TargetView {
            instance_id: id.to_string(),
            role: s.role.map_or_else(String::new, |r| r.as_str().to_string()),
            asg_name: s.asg_name,
            path: s.path.as_ref().map_or_else(String::new, ToString::to_string),
            last_scrape: s.last_scrape,
            last_success: s.last_success,
            up: s.up,
            reason: s.reason,
            last_error: s.last_error,
            target_group: s.path.as_ref().and_then(crate::record::Route::target_groups).and_then(|name| {
                let g = groups.get(name)?;
                Some(GroupView {
                    coverage: g.recent_coverage,
                    requests_per_member: g.recent_requests_per_member,
                    rounds: g.rounds,
                    complete_rounds: g.complete_rounds,
                    budget: g.last_budget,
                    identity_issue: issues.get(&name.to_string()).map(IdentityIssueView::from),
                    name: name.to_string(),
                })
            }),
            identity_issue: issues.get(id.as_str()).map(IdentityIssueView::from),
        })
        .collect();
    let body = serde_json::to_string(&views).unwrap_or_else(|_| "[]".into());
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// One `http_sd` target group: Prometheus's HTTP SD format.
#[derive(Serialize)]
struct SdGroup {
    targets: Vec<String>,
    labels: std::collections::BTreeMap<String, String>,
}

/// The labels `/api/sd` gives a target: every discovered `__meta_*` label,
/// what relabeling kept (`__metrics_path__` and `__scheme__` included), the
/// instance labels, and `instance` = the EC2 instance id.
pub fn sd_labels(target: &crate::discovery::Target) -> std::collections::BTreeMap<String, String> {
    let mut labels: std::collections::BTreeMap<String, String> = target
        .discovered_labels
        .iter()
        .filter(|(k, _)| k.starts_with("__meta_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (name, value) in target.labels.iter().flatten() {
        if name != "__address__" && name != "__alb_address__" {
            labels.insert(name.clone(), value.clone());
        }
    }
    labels.extend(target.instance_labels());
    labels.insert("instance".into(), target.instance.id.to_string());
    labels.retain(|_, v| !v.is_empty());
    labels
}

/// `/api/sd`: Prometheus `http_sd` JSON of the directly reachable instances
/// this replica scrapes, so that a team can keep its Prometheus and use
/// fleetscrape for discovery only.
async fn http_sd(axum::extract::State(state): axum::extract::State<State>) -> impl IntoResponse {
    let topology = state.topology.borrow().clone();
    let groups: Vec<SdGroup> = match topology {
        Some(topology) if state.sd.direct => topology
            .scraped_targets()
            .filter_map(|target| {
                let address = target.labels.as_ref()?.get("__address__").filter(|a| !a.is_empty())?.clone();
                Some(SdGroup { targets: vec![address], labels: sd_labels(target) })
            })
            .collect(),
        _ => Vec::new(),
    };
    let body = serde_json::to_string(&groups).unwrap_or_else(|_| "[]".into());
    ([(header::CONTENT_TYPE, "application/json")], body)
}

async fn metrics(axum::extract::State(state): axum::extract::State<State>) -> impl IntoResponse {
    let remote = state.remote.as_ref().map(crate::remote_write::RemoteWrite::stats).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics_page(&state, &remote))
}

/// The `/metrics` page: every component's families, through one encoder.
fn metrics_page(state: &State, remote: &[crate::remote_write::ReceiverStats]) -> String {
    let mut encoder = Encoder::default();
    collect_metrics(state, remote, &mut encoder);
    encoder.finish()
}

/// Every component's families into `encoder`.
fn collect_metrics(state: &State, remote: &[crate::remote_write::ReceiverStats], encoder: &mut Encoder) {
    state.scrape.collect(encoder);
    state.discovery.collect(encoder);
    state.topology.collect(encoder);
    state.writer.collect(encoder);
    state.writer_queue.collect(encoder);
    readiness::collect(&not_ready(state), encoder);
    crate::logging::LogMetrics.collect(encoder);
    remote.collect(encoder);
}

/// The families `names` of the `/metrics` page, each summed over its labels
/// (a family with no sample is left out): what `run` copies into
/// `self_metrics` for the alert rules, read exactly as the page reads it.
pub fn metric_totals(
    state: &State,
    remote: &[crate::remote_write::ReceiverStats],
    names: &[&'static str],
) -> Vec<(&'static str, f64)> {
    let mut encoder = Encoder::default();
    collect_metrics(state, remote, &mut encoder);
    names.iter().filter_map(|&name| Some((name, encoder.total(name)?))).collect()
}

#[cfg(test)]
mod tests;
