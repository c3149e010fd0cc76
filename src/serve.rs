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
}

/// The routes.
pub fn router(state: State) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/targets", get(targets))
        .with_state(state)
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
    last_scrape: Option<f64>,
    up: bool,
    reason: Option<String>,
    last_error: Option<String>,
}

async fn targets(axum::extract::State(state): axum::extract::State<State>) -> impl IntoResponse {
    let views: Vec<TargetView> = state
        .scrape
        .targets()
        .into_iter()
        .map(|(id, s)| TargetView {
            instance_id: id,
            role: s.role,
            asg_name: s.asg_name,
            path: s.path,
            last_scrape: s.last_scrape,
            up: s.up,
            reason: s.reason,
            last_error: s.last_error,
        })
        .collect();
    let body = serde_json::to_string(&views).unwrap_or_else(|_| "[]".into());
    ([(header::CONTENT_TYPE, "application/json")], body)
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
        let braces = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
        let _ = writeln!(self.0, "{name}{braces} {value}");
    }
}

async fn metrics(axum::extract::State(state): axum::extract::State<State>) -> impl IntoResponse {
    let mut out = Exposition(String::new());
    let counters = state.scrape.counters();
    out.family("fleetscrape_scrapes_total", "counter", "Payloads stored, by how the instance was reached.");
    for (path, n) in &counters.scrapes_stored {
        out.sample("fleetscrape_scrapes_total", &[("path", path)], *n as f64);
    }
    out.family("fleetscrape_scrape_failures_total", "counter", "Intervals in which an instance got up=0, by reason.");
    for (reason, n) in &counters.scrape_failures {
        out.sample("fleetscrape_scrape_failures_total", &[("reason", reason)], *n as f64);
    }
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
            &[("target_group", group), ("reason", reason)],
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
            "Samples lost to failed transactions.",
            writer.dropped_samples.load(Ordering::Relaxed) as f64,
        ),
    ] {
        out.family(name, "counter", help);
        out.sample(name, &[], value);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out.0)
}
