//! fleetscrape's own HTTP endpoint: `/metrics` (its own metrics, Prometheus
//! text format), `/healthz`, and `/api/targets` (per instance: role, how it
//! was reached, last scrape, up, last error).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::discovery::{RefreshStats, TopologyReceiver};
use crate::scrape::ScrapeState;
use crate::store::writer::WriterStats;

/// What the endpoint reports on.
#[derive(Debug, Clone)]
pub struct State {
    /// Scraper state and counters.
    pub scrape: Arc<ScrapeState>,
    /// Discovery counters.
    pub discovery: Arc<RefreshStats>,
    /// Store writer counters.
    pub writer: Arc<WriterStats>,
    /// The current topology.
    pub topology: TopologyReceiver,
    /// remote_write receivers, if any.
    pub remote: Option<crate::remote_write::RemoteWrite>,
    /// What `/api/sd` serves.
    pub sd: SdSettings,
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

/// `/ready`: 200 once a discovery has succeeded, else 503 with the reason.
/// `/healthz` stays liveness (the process answers), so that compose can
/// start Grafana, which shows the problem, while discovery fails.
async fn ready(axum::extract::State(state): axum::extract::State<State>) -> axum::response::Response {
    use axum::http::StatusCode;
    if state.discovery.ready() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let reason = match state.discovery.last_error() {
        Some(error) => format!("not ready: no discovery has succeeded yet; the last one failed: {error}\n"),
        None => "not ready: the first discovery is under way\n".to_string(),
    };
    (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
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
}

async fn targets(axum::extract::State(state): axum::extract::State<State>) -> impl IntoResponse {
    let groups = state.scrape.groups();
    let views: Vec<TargetView> = state
        .scrape
        .targets()
        .into_iter()
        .map(|(id, s)| TargetView {
            instance_id: id,
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
                    name: name.to_string(),
                })
            }),
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
    labels.insert("instance".into(), target.instance.id.clone());
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

struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> =
            labels.iter().map(|(k, v)| format!("{k}=\"{}\"", crate::exposition::escape_label_value(v))).collect();
        let braces = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
        let _ = writeln!(self.0, "{name}{braces} {value}");
    }
}

/// Via-ALB rounds per target group: coverage (members reached / wanted) and
/// price (requests / wanted), as counters to rate() and recent gauges.
fn group_metrics(
    out: &mut Exposition,
    groups: &std::collections::BTreeMap<crate::record::TargetGroups, crate::scrape::state::GroupStats>,
) {
    type Field = fn(&crate::scrape::state::GroupStats) -> f64;
    let families: [(&str, &str, &str, Field); 8] = [
        ("fleetscrape_alb_rounds_total", "counter", "Via-ALB rounds.", |g| g.rounds as f64),
        (
            "fleetscrape_alb_rounds_complete_total",
            "counter",
            "Via-ALB rounds that reached every member they wanted.",
            |g| g.complete_rounds as f64,
        ),
        ("fleetscrape_alb_member_intervals_total", "counter", "Members wanted, summed over rounds.", |g| {
            g.member_intervals as f64
        }),
        ("fleetscrape_alb_members_reached_total", "counter", "Wanted members reached, summed over rounds.", |g| {
            g.members_reached as f64
        }),
        ("fleetscrape_alb_round_requests_total", "counter", "Requests sent by rounds.", |g| g.requests as f64),
        (
            "fleetscrape_alb_abandoned_requests_total",
            "counter",
            "Requests still in flight at a round's deadline.",
            |g| g.abandoned as f64,
        ),
        (
            "fleetscrape_alb_coverage_ratio",
            "gauge",
            "Members reached / wanted over recent rounds (decayed over about 20).",
            |g| g.recent_coverage,
        ),
        (
            "fleetscrape_alb_requests_per_member",
            "gauge",
            "Requests per wanted member per interval over recent rounds.",
            |g| g.recent_requests_per_member,
        ),
    ];
    for (name, kind, help, field) in families {
        out.family(name, kind, help);
        for (group, stats) in groups {
            out.sample(name, &[("target_group", &group.to_string())], field(stats));
        }
    }
}

async fn metrics(axum::extract::State(state): axum::extract::State<State>) -> impl IntoResponse {
    let remote = state.remote.as_ref().map(crate::remote_write::RemoteWrite::stats).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics_page(&state, &remote))
}

/// The `/metrics` page.
fn metrics_page(state: &State, remote: &[crate::remote_write::ReceiverStats]) -> String {
    let mut out = Exposition(String::new());
    let counters = state.scrape.counters();
    out.family("fleetscrape_scrapes_total", "counter", "Payloads stored, by how the instance was reached.");
    for (path, n) in &counters.scrapes_stored {
        out.sample("fleetscrape_scrapes_total", &[("path", path)], *n as f64);
    }
    out.family("fleetscrape_scrape_failures_total", "counter", "Intervals in which an instance got up=0, by reason.");
    for (reason, n) in &counters.scrape_failures {
        out.sample("fleetscrape_scrape_failures_total", &[("reason", reason.as_str())], *n as f64);
    }
    out.family(
        "fleetscrape_duplicate_payloads_total",
        "counter",
        "Payloads of an instance whose interval was already stored (dropped).",
    );
    out.sample("fleetscrape_duplicate_payloads_total", &[], counters.duplicates_dropped as f64);
    group_metrics(&mut out, &state.scrape.groups());
    out.family("fleetscrape_alb_requests_total", "counter", "Requests sent to load balancer listeners.");
    out.sample("fleetscrape_alb_requests_total", &[], counters.alb_requests as f64);
    out.family(
        "fleetscrape_unattributed_payloads_total",
        "counter",
        "Payloads dropped because no member could be named.",
    );
    for ((group, reason), n) in &counters.unattributed {
        out.sample(
            "fleetscrape_unattributed_payloads_total",
            &[("target_group", &group.to_string()), ("reason", reason)],
            *n as f64,
        );
    }
    out.family(
        "fleetscrape_early_refreshes_total",
        "counter",
        "Early discovery refreshes asked for by unknown identities.",
    );
    out.sample("fleetscrape_early_refreshes_total", &[], counters.early_refreshes as f64);

    let discovery = &state.discovery;
    out.family("fleetscrape_discovery_refreshes_total", "counter", "Discovery refreshes attempted.");
    out.sample("fleetscrape_discovery_refreshes_total", &[], discovery.refreshes.load(Ordering::Relaxed) as f64);
    out.family(
        "fleetscrape_discovery_refresh_failures_total",
        "counter",
        "Discovery refreshes that failed (the previous topology was kept).",
    );
    out.sample("fleetscrape_discovery_refresh_failures_total", &[], discovery.failures.load(Ordering::Relaxed) as f64);
    out.family(
        "fleetscrape_discovery_policy_failures_total",
        "counter",
        "Refreshes that could not read the scaling policies (ASGs kept, without their target-tracking target).",
    );
    out.sample(
        "fleetscrape_discovery_policy_failures_total",
        &[],
        discovery.policy_failures.load(Ordering::Relaxed) as f64,
    );
    out.family("fleetscrape_aws_api_calls_total", "counter", "AWS API requests by operation.");
    if let Ok(calls) = discovery.api_calls.lock() {
        for (operation, n) in calls.iter() {
            out.sample("fleetscrape_aws_api_calls_total", &[("operation", operation)], *n as f64);
        }
    }
    let (scraped, skipped) = state.topology.borrow().as_ref().map_or((0, 0), |t| {
        let scraped = t.scraped_targets().count();
        (scraped, t.targets.len() - scraped)
    });
    out.family("fleetscrape_targets", "gauge", "Discovered instances, scraped or skipped.");
    out.sample("fleetscrape_targets", &[("state", "scraped")], scraped as f64);
    out.sample("fleetscrape_targets", &[("state", "skipped")], skipped as f64);

    let writer = &state.writer;
    for (name, help, value) in [
        (
            "fleetscrape_store_flushes_total",
            "Store transactions committed.",
            writer.flushes.load(Ordering::Relaxed) as f64,
        ),
        ("fleetscrape_store_samples_total", "Samples committed.", writer.samples.load(Ordering::Relaxed) as f64),
        (
            "fleetscrape_store_flush_seconds_total",
            "Time spent committing batches.",
            writer.flush_micros.load(Ordering::Relaxed) as f64 / 1e6,
        ),
        ("fleetscrape_store_errors_total", "Failed store transactions.", writer.errors.load(Ordering::Relaxed) as f64),
        (
            "fleetscrape_store_dropped_samples_total",
            "Samples lost: held past the bound while writes failed, or held when the writer stopped.",
            writer.dropped_samples.load(Ordering::Relaxed) as f64,
        ),
        (
            "fleetscrape_store_late_samples_total",
            "Samples dropped because their block was already compacted.",
            writer.late_samples.load(Ordering::Relaxed) as f64,
        ),
        (
            "fleetscrape_store_compaction_steps_total",
            "Compaction steps done.",
            writer.compaction_steps.load(Ordering::Relaxed) as f64,
        ),
        (
            "fleetscrape_store_compacted_blocks_total",
            "5-minute blocks moved into the compacted tier and the rollups.",
            writer.compacted_blocks.load(Ordering::Relaxed) as f64,
        ),
        (
            "fleetscrape_store_retention_deleted_rows_total",
            "Rows deleted by retention.",
            writer.retention_rows.load(Ordering::Relaxed) as f64,
        ),
        (
            "fleetscrape_log_lines_dropped_total",
            "Log lines not written: stderr's reader was too slow (queue full) or gone (broken pipe).",
            crate::logging::dropped_lines() as f64,
        ),
        (
            "fleetscrape_store_maintenance_errors_total",
            "Failed compaction or retention steps (retried).",
            writer.maintenance_errors.load(Ordering::Relaxed) as f64,
        ),
        (
            "fleetscrape_store_checkpoints_total",
            "WAL checkpoints run, off the writer's path.",
            writer.checkpoints.load(Ordering::Relaxed) as f64,
        ),
    ] {
        out.family(name, "counter", help);
        out.sample(name, &[], value);
    }
    for (name, help, value) in [
        (
            "fleetscrape_store_held_samples",
            "Samples waiting in memory while store writes fail (a full disk), retried every flush interval.",
            writer.held_samples.load(Ordering::Relaxed) as f64,
        ),
        (
            "fleetscrape_store_wal_bytes",
            "Size of the WAL file at the last checkpoint.",
            writer.wal_bytes.load(Ordering::Relaxed) as f64,
        ),
        (
            "fleetscrape_store_longest_checkpoint_seconds",
            "The longest WAL checkpoint since start.",
            writer.longest_checkpoint_micros.load(Ordering::Relaxed) as f64 / 1e6,
        ),
        (
            "fleetscrape_store_longest_pause_seconds",
            "The longest single write or upkeep step since start: how long ingest waited at most.",
            writer.longest_pause_micros.load(Ordering::Relaxed) as f64 / 1e6,
        ),
    ] {
        out.family(name, "gauge", help);
        out.sample(name, &[], value);
    }
    crate::remote_write::render_metrics(&mut out.0, remote);
    out.0
}

#[cfg(test)]
mod tests;
