//! Discovery of scrape targets: ELBv2 load balancers → listeners → target
//! groups → target health, Auto Scaling membership, and EC2 facts, joined
//! into one [`Target`] per instance.
//!
//! - [`aws`], [`elbv2`], `autoscaling`, `ec2`: the only code that sees SDK
//!   types; each returns [`model`] types.
//! - [`topology`]: the pure join, labels, filters and relabeling.
//! - [`Refresher`]: refreshes every `refresh_interval`, publishes each good
//!   topology on a watch channel, and keeps the last good one when a refresh
//!   fails.
//!
//! API calls per refresh grow with load balancers, target groups and pages,
//! never with instances: 1 DescribeLoadBalancers page per 400 load balancers,
//! then per followed load balancer 1 DescribeListeners and 1
//! DescribeTargetGroups, 1 DescribeTargetHealth per followed target group,
//! 1 DescribeAutoScalingGroups page per 100 groups, and 1 DescribeInstances
//! per 200 instances.

pub mod access;
mod autoscaling;
pub mod aws;
mod ec2;
pub mod elbv2;
pub mod findings;
pub mod model;
pub mod topology;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::reminder::Notice;
use crate::self_metrics::{Collect, Encoder, Family, value_of};
pub use aws::Clients;
pub use elbv2::Filters;
pub use findings::Finding;
use model::{AutoScalingGroup, Inventory};
pub use topology::{JoinOptions, Role, Sharding, SkipReason, Target, Topology, shard_key, shard_of};

/// Why a discovery refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No region in the config, the environment or the profile.
    #[error("no AWS region: set aws.region in the config, or AWS_REGION in the environment")]
    NoRegion,
    /// No credential provider of the SDK's chain found credentials.
    #[error(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an IAM role \
         (instance profile, ECS task role, web identity); looked in the environment, the profile files, web identity, \
         ECS and instance metadata"
    )]
    NoCredentials,
    /// An AWS API call got no answer within `aws.call_timeout` (retries included).
    #[error(
        "{operation} failed: no answer within aws.call_timeout{}",
        limit.map(|l| format!(" ({l})")).unwrap_or_default()
    )]
    CallTimeout {
        /// The API operation.
        operation: &'static str,
        /// The limit, once known.
        limit: Option<crate::duration::PromDuration>,
    },
    /// An AWS API call failed after the SDK's retries.
    #[error("{operation} failed: {message}")]
    Api {
        /// The API operation, e.g. `DescribeTargetHealth`.
        operation: &'static str,
        /// The SDK's explanation, on one line.
        message: String,
    },
}

/// One successful refresh.
#[derive(Debug, Clone)]
pub struct Refresh {
    /// What was discovered.
    pub topology: Topology,
    /// Requests sent, by API operation.
    pub api_calls: BTreeMap<&'static str, u64>,
    /// How long the refresh took.
    pub elapsed: Duration,
    /// Why the scaling policies could not be read, if they could not.
    pub policies_error: Option<String>,
    /// What explains missing targets (no listener on the ports, an empty
    /// target group, ...), sorted.
    pub findings: Vec<Finding>,
}

/// Runs discovery refreshes against AWS.
#[derive(Debug, Clone)]
pub struct Discoverer {
    clients: Clients,
    filters: Filters,
    join_options: JoinOptions,
}

impl Discoverer {
    /// Builds a discoverer from the configuration.
    ///
    /// # Errors
    /// [`Error::NoRegion`] when no AWS region is configured anywhere.
    pub async fn from_config(config: &Config) -> Result<Self, Error> {
        Ok(Self {
            clients: Clients::new(&config.aws).await?,
            filters: Filters {
                load_balancers: config.discovery.load_balancers.clone(),
                listener_ports: config.discovery.listener_ports.clone(),
            },
            join_options: JoinOptions {
                metrics_path: config.scrape.metrics_path.clone(),
                instance_tags: config.discovery.instance_tags.clone(),
                relabel_configs: config.relabel_configs.clone(),
                sharding: config.sharding.is_sharded().then_some(Sharding {
                    total: config.sharding.total,
                    index: config.sharding.index,
                    by_listener: config.scrape.mode == crate::config::ScrapeMode::ViaAlb,
                }),
            },
        })
    }

    /// The AWS clients (for `preflight`'s permission probes).
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Where API calls go, for messages: the endpoint URL or the region.
    pub fn endpoint(&self) -> &str {
        &self.clients.endpoint
    }

    /// Runs one discovery.
    ///
    /// # Errors
    /// [`Error::Api`] when any API call fails after retries; nothing partial
    /// is returned, so callers keep their previous topology.
    pub async fn discover(&self) -> Result<Refresh, Error> {
        let started = Instant::now();
        self.clients.calls.take();
        let result = self.inventory().await.map_err(|e| match e {
            Error::CallTimeout { operation, .. } => {
                Error::CallTimeout { operation, limit: Some(self.clients.call_timeout) }
            }
            other => other,
        });
        let api_calls = self.clients.calls.take();
        let (inventory, left_out) = result?;
        let topology = topology::join(&inventory, &self.join_options);
        let findings = findings::findings(&inventory, &self.filters, &left_out);
        Ok(Refresh {
            topology,
            api_calls,
            elapsed: started.elapsed(),
            policies_error: inventory.policies_error,
            findings,
        })
    }

    async fn inventory(&self) -> Result<(Inventory, elbv2::LeftOut), Error> {
        let (balancing, groups) = tokio::join!(
            elbv2::load_balancers_and_target_groups(&self.clients, &self.filters),
            self.groups_with_policies(),
        );
        let (load_balancers, target_groups, left_out) = balancing?;
        let (auto_scaling_groups, policies_error) = groups?;

        let registered: BTreeSet<&str> =
            target_groups.values().flat_map(|g| g.registrations.iter().map(|r| r.instance_id.as_str())).collect();
        let ids: Vec<String> = registered.into_iter().map(str::to_string).collect();
        let instances = ec2::instances(&self.clients, &ids).await?;
        Ok((Inventory { load_balancers, target_groups, auto_scaling_groups, instances, policies_error }, left_out))
    }

    /// The region's groups, then (when there are any) their target-tracking
    /// policies. The policies only feed the dashboards: when they cannot be
    /// read (an IAM policy from before `DescribePolicies` was added), the
    /// groups are kept without a target and the error is returned beside them.
    async fn groups_with_policies(&self) -> Result<(Vec<AutoScalingGroup>, Option<String>), Error> {
        let mut groups = autoscaling::groups(&self.clients).await?;
        if groups.is_empty() {
            return Ok((groups, None));
        }
        match autoscaling::target_tracking(&self.clients).await {
            Ok(mut policies) => {
                for group in &mut groups {
                    group.target_tracking = policies.remove(&group.name);
                }
                Ok((groups, None))
            }
            Err(error) => Ok((groups, Some(error.to_string()))),
        }
    }
}

/// What the [`Refresher`] runs: [`Discoverer`] against AWS, or a fake in
/// the scheduler's deterministic-time tests (the AWS SDK reads the system
/// clock, which paused tokio time does not move).
pub trait Discover: Send + Sync + std::fmt::Debug {
    /// Runs one discovery.
    fn discover(&self) -> BoxFuture<'_, Result<Refresh, Error>>;

    /// Where API calls go, for messages.
    fn endpoint(&self) -> &str;
}

impl Discover for Discoverer {
    fn discover(&self) -> BoxFuture<'_, Result<Refresh, Error>> {
        Box::pin(Discoverer::discover(self))
    }

    fn endpoint(&self) -> &str {
        Discoverer::endpoint(self)
    }
}

/// Counters about refreshes, for logs and fleetscrape's own metrics.
#[derive(Debug, Default)]
pub struct RefreshStats {
    /// Refreshes attempted.
    pub refreshes: AtomicU64,
    /// Refreshes that failed (the previous topology was kept).
    pub failures: AtomicU64,
    /// API requests sent, by operation, over all refreshes.
    pub api_calls: Mutex<BTreeMap<&'static str, u64>>,
    /// The last failure's message, cleared by the next success.
    pub last_error: Mutex<Option<String>>,
    /// Refreshes that could not read the scaling policies (the groups were
    /// still discovered, without their target-tracking target).
    pub policy_failures: AtomicU64,
    /// Why the last refresh could not read the scaling policies.
    pub policies_error: Mutex<Option<String>>,
    /// Failures since the last success.
    pub consecutive_failures: AtomicU64,
    /// Epoch seconds of the last success; `None` until the first.
    pub last_success: Mutex<Option<f64>>,
    /// Since when refreshes fail (`/ready`), and when that was last logged.
    pub failing: Mutex<crate::reminder::Reminder>,
    /// The last successful refresh's findings (logged once per change).
    pub findings: Mutex<Vec<Finding>>,
    /// Since when discoveries find nothing to scrape (logged, then reminded).
    pub empty: Mutex<crate::reminder::Reminder>,
}

impl RefreshStats {
    /// Whether a discovery has succeeded since start (`/ready`).
    pub fn ready(&self) -> bool {
        self.last_success.lock().is_ok_and(|last| last.is_some())
    }

    /// Epoch seconds of the first of the failures since the last success;
    /// `None` while refreshes succeed.
    pub fn failing_since(&self) -> Option<f64> {
        self.failing.lock().ok().and_then(|r| r.failing().map(|(since, _)| since))
    }

    /// The last failure's message, if the last refresh failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|last| last.clone())
    }
}

static REFRESHES: Family<0> =
    Family::counter("fleetscrape_discovery_refreshes_total", "Discovery refreshes attempted.", []);
static REFRESH_FAILURES: Family<0> = Family::counter(
    "fleetscrape_discovery_refresh_failures_total",
    "Discovery refreshes that failed (the previous topology was kept).",
    [],
);
static POLICY_FAILURES: Family<0> = Family::counter(
    "fleetscrape_discovery_policy_failures_total",
    "Refreshes that could not read the scaling policies (ASGs kept, without their target-tracking target).",
    [],
);
static API_CALLS: Family<1> =
    Family::counter("fleetscrape_aws_api_calls_total", "AWS API requests by operation.", ["operation"]);
static TARGETS: Family<1> =
    Family::gauge("fleetscrape_targets", "Discovered instances, scraped or skipped.", ["state"]);

impl Collect for RefreshStats {
    fn collect(&self, encoder: &mut Encoder) {
        encoder.single(&REFRESHES, value_of(&self.refreshes));
        encoder.single(&REFRESH_FAILURES, value_of(&self.failures));
        encoder.single(&POLICY_FAILURES, value_of(&self.policy_failures));
        let mut api_calls = encoder.family(&API_CALLS);
        if let Ok(calls) = self.api_calls.lock() {
            for (operation, n) in calls.iter() {
                api_calls.sample([operation], *n as f64);
            }
        }
    }
}

/// `fleetscrape_targets`: the latest topology's instances, scraped or skipped
/// (both 0 before the first discovery).
impl Collect for TopologyReceiver {
    fn collect(&self, encoder: &mut Encoder) {
        let (scraped, skipped) = self.borrow().as_ref().map_or((0, 0), |t| {
            let scraped = t.scraped_targets().count();
            (scraped, t.targets.len() - scraped)
        });
        encoder.family(&TARGETS).sample(["scraped"], scraped as f64).sample(["skipped"], skipped as f64);
    }
}

/// The wait before the next refresh after `failures` failed refreshes in a
/// row: the interval after a success; else 1 s, doubling, at most a minute
/// and never longer than the interval. A first discovery that fails (no
/// credentials yet, an endpoint still starting) is retried in seconds, and a
/// throttled or failing API is not hammered.
pub fn next_refresh_delay(interval: Duration, failures: u64) -> Duration {
    const MAX_BACKOFF: Duration = Duration::from_secs(60);
    if failures == 0 {
        return interval;
    }
    let doubled = Duration::from_secs(1u64 << (failures - 1).min(16));
    doubled.min(MAX_BACKOFF).min(interval)
}

/// What one refresh came to, for the `component_status` table.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshOutcome {
    /// Epoch seconds when it ended.
    pub time: f64,
    /// The error, if it failed.
    pub error: Option<String>,
}

/// The latest good topology, `None` until the first refresh succeeds.
pub type TopologyReceiver = watch::Receiver<Option<Arc<Topology>>>;

/// Asks the [`Refresher`] for a refresh before the next scheduled one (a
/// payload named an instance discovery does not know: a new ASG member takes
/// traffic before the next refresh). Taken at most once per
/// `early_refresh_min_interval` since the last refresh of any kind.
#[derive(Debug, Clone)]
pub struct EarlyRefresh {
    notify: Arc<Notify>,
    last_refresh: Arc<Mutex<Option<tokio::time::Instant>>>,
    min_interval: Duration,
}

impl EarlyRefresh {
    /// A handle allowing one early refresh per `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        Self { notify: Arc::default(), last_refresh: Arc::default(), min_interval }
    }

    /// Requests an early refresh; `false` when the rate limit holds (the
    /// caller should not wait for one).
    pub fn try_request(&self) -> bool {
        let now = tokio::time::Instant::now();
        let Ok(mut last) = self.last_refresh.lock() else { return false };
        if last.is_some_and(|at| now.saturating_duration_since(at) < self.min_interval) {
            return false;
        }
        *last = Some(now);
        self.notify.notify_one();
        true
    }

    /// Records that a refresh just ran (the rate limit counts from it).
    fn refreshed(&self) {
        if let Ok(mut last) = self.last_refresh.lock() {
            *last = Some(tokio::time::Instant::now());
        }
    }

    /// Waits for a request (what the refresh loop, or a test playing it, runs on).
    pub async fn requested(&self) {
        self.notify.notified().await;
    }
}

/// Refreshes discovery periodically and publishes each good topology.
#[derive(Debug)]
pub struct Refresher {
    discoverer: Box<dyn Discover>,
    interval: Duration,
    published: watch::Sender<Option<Arc<Topology>>>,
    outcomes: watch::Sender<Option<RefreshOutcome>>,
    stats: Arc<RefreshStats>,
    early: EarlyRefresh,
    /// Fraction of the interval by which a refresh after a success comes early, at random.
    jitter: f64,
    /// Whether a failed refresh is retried (not under `run --once`).
    retries: bool,
    /// Whether an empty topology is a problem (not with `scrape.enabled: false`).
    expects_targets: bool,
}

/// The daemon's refresh jitter: up to 10 % of the interval early, so that
/// replicas started together do not call AWS in lockstep.
pub const REFRESH_JITTER: f64 = 0.1;

/// `delay` shortened by up to `fraction` of itself, `random` in `[0, 1)`:
/// never later than the interval, so `refresh_interval` stays an upper bound.
pub fn jittered(delay: Duration, fraction: f64, random: f64) -> Duration {
    delay.mul_f64(1.0 - fraction.clamp(0.0, 1.0) * random.clamp(0.0, 1.0))
}

impl Refresher {
    /// A refresher running `discoverer` every `interval`.
    pub fn new(discoverer: impl Discover + 'static, interval: Duration) -> Self {
        let (published, _) = watch::channel(None);
        let (outcomes, _) = watch::channel(None);
        Self {
            discoverer: Box::new(discoverer),
            interval,
            published,
            outcomes,
            stats: Arc::default(),
            early: EarlyRefresh::new(Duration::from_secs(10)),
            jitter: 0.0,
            retries: true,
            expects_targets: true,
        }
    }

    /// A refresher for discovery only (`scrape.enabled: false`): finding
    /// nothing to scrape is no problem.
    pub fn without_scraping(mut self) -> Self {
        self.expects_targets = false;
        self
    }

    /// A refresher whose failures are not retried (`run --once`): its log
    /// lines promise no retry.
    pub fn without_retries(mut self) -> Self {
        self.retries = false;
        self
    }

    /// Refreshes after a success up to `fraction` of the interval early, at
    /// random ([`REFRESH_JITTER`] in the daemon; none by default).
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Sets the least time between two early refreshes (default 10 s);
    /// handles taken before keep the old limit.
    pub fn with_early_refresh_min_interval(mut self, min: Duration) -> Self {
        self.early = EarlyRefresh::new(min);
        self
    }

    /// A handle to request early refreshes.
    pub fn early_refresh(&self) -> EarlyRefresh {
        self.early.clone()
    }

    /// A receiver of the latest good topology.
    pub fn subscribe(&self) -> TopologyReceiver {
        self.published.subscribe()
    }

    /// A receiver of each refresh's outcome, success or failure.
    pub fn outcomes(&self) -> watch::Receiver<Option<RefreshOutcome>> {
        self.outcomes.subscribe()
    }

    /// The refresh counters.
    pub fn stats(&self) -> Arc<RefreshStats> {
        Arc::clone(&self.stats)
    }

    /// Runs one refresh. On success the topology is published; on failure
    /// the previous topology stays, the failure is counted, and logged at
    /// warn when it is new (the first, or another error than the last one).
    ///
    /// # Errors
    /// The refresh's [`Error`], after it has been logged and counted.
    pub async fn refresh(&self) -> Result<Arc<Topology>, Error> {
        self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        let result = self.discoverer.discover().await;
        let now = crate::clock::now_seconds();
        match result {
            Ok(refresh) => {
                self.add_api_calls(&refresh.api_calls);
                let failed_before = self.stats.consecutive_failures.swap(0, Ordering::Relaxed);
                let outage = self.stats.failing.lock().ok().and_then(|mut r| r.succeeded(now));
                if let Some(failing_for) = outage {
                    info!(
                        failed_refreshes = failed_before,
                        failing_for_seconds = failing_for.round(),
                        "discovery recovered"
                    );
                }
                self.log_success(&refresh);
                self.note_findings(&refresh.findings);
                self.note_empty(&refresh.topology, now);
                self.note_policies(refresh.policies_error);
                let topology = Arc::new(refresh.topology);
                self.published.send_replace(Some(Arc::clone(&topology)));
                if let Ok(mut last) = self.stats.last_error.lock() {
                    *last = None;
                }
                if let Ok(mut last) = self.stats.last_success.lock() {
                    *last = Some(now);
                }
                self.outcomes.send_replace(Some(RefreshOutcome { time: now, error: None }));
                Ok(topology)
            }
            Err(error) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                let failures = self.stats.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                let message = error.to_string();
                let notice = self.stats.failing.lock().map_or(Notice::Quiet, |mut r| r.failed(now, &message));
                self.log_failure(&error, failures, notice);
                if let Ok(mut last) = self.stats.last_error.lock() {
                    *last = Some(message.clone());
                }
                self.outcomes.send_replace(Some(RefreshOutcome { time: now, error: Some(message) }));
                Err(error)
            }
        }
    }

    /// A failed refresh in the log: at warn when new and as a reminder at
    /// [`crate::reminder::REMINDER_INTERVAL_SECONDS`], else at debug. Says
    /// what is scraped meanwhile and when the next attempt comes.
    fn log_failure(&self, error: &Error, failures: u64, notice: Notice) {
        let endpoint = self.discoverer.endpoint();
        let kept = self.published.borrow().as_ref().map(|t| t.scraped_targets().count());
        let meanwhile = match kept {
            Some(n) => format!("keeping the previous topology ({n} instances to scrape)"),
            None => "nothing is scraped until a discovery succeeds".to_string(),
        };
        let retry = if self.retries {
            format!("; next attempt in {:.0} s", next_refresh_delay(self.interval, failures).as_secs_f64())
        } else {
            String::new()
        };
        match notice {
            Notice::New => warn!(%endpoint, %error, "discovery refresh failed; {meanwhile}{retry}"),
            Notice::Reminder { failing_for } => warn!(
                %endpoint, %error, failures, failing_for_seconds = failing_for.round(),
                "discovery still failing; {meanwhile}{retry}"
            ),
            Notice::Quiet => debug!(%endpoint, %error, failures, "discovery refresh failed again"),
        }
    }

    /// Logs a topology with nothing to scrape (unless expected: scraping off,
    /// a group at desired 0) when it starts, every
    /// [`crate::reminder::REMINDER_INTERVAL_SECONDS`] while it lasts, and its end.
    fn note_empty(&self, topology: &Topology, now: f64) {
        let Ok(mut empty) = self.stats.empty.lock() else { return };
        if !(self.expects_targets && topology.is_unexpectedly_empty()) {
            if let Some(for_seconds) = empty.succeeded(now) {
                let scraped = topology.scraped_targets().count();
                info!(scraped, after_seconds = for_seconds.round(), "discovery finds instances to scrape again");
            }
            return;
        }
        let skipped = topology.targets.len();
        match empty.failed(now, "empty") {
            Notice::New => warn!(
                skipped,
                "discovery found no instance to scrape: see the discovery lines above, or run `fleetscrape discover`; \
                 /ready fails meanwhile"
            ),
            Notice::Reminder { failing_for } => {
                warn!(skipped, for_seconds = failing_for.round(), "discovery still finds no instance to scrape")
            }
            Notice::Quiet => {}
        }
    }

    /// Logs what explains missing targets, once per change: each new finding
    /// (a likely mistake at warn, a state at info), and each that cleared.
    fn note_findings(&self, findings: &[Finding]) {
        let Ok(mut last) = self.stats.findings.lock() else { return };
        for finding in findings.iter().filter(|f| !last.contains(f)) {
            if finding.is_warning() {
                warn!(endpoint = %self.discoverer.endpoint(), "discovery: {finding}");
            } else {
                info!("discovery: {finding}");
            }
        }
        for cleared in last.iter().filter(|f| !findings.contains(f)) {
            info!("discovery: no longer so: {cleared}");
        }
        *last = findings.to_vec();
    }

    /// Counts a refresh that could not read the scaling policies, logged once
    /// per change: the first failure, a different error, the recovery.
    fn note_policies(&self, error: Option<String>) {
        if error.is_some() {
            self.stats.policy_failures.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(mut last) = self.stats.policies_error.lock() else { return };
        if *last == error {
            return;
        }
        match &error {
            Some(error) => {
                warn!(%error, "cannot read the scaling policies (autoscaling:DescribePolicies); ASGs are discovered without their target-tracking target")
            }
            None if last.is_some() => info!("scaling policies readable again"),
            None => {}
        }
        *last = error;
    }

    fn add_api_calls(&self, calls: &BTreeMap<&'static str, u64>) {
        if let Ok(mut total) = self.stats.api_calls.lock() {
            for (operation, count) in calls {
                *total.entry(operation).or_default() += count;
            }
        }
    }

    fn log_success(&self, refresh: &Refresh) {
        let topology = &refresh.topology;
        let scraped = topology.scraped_targets().count();
        let calls: u64 = refresh.api_calls.values().sum();
        info!(
            targets = topology.targets.len(),
            scraped,
            auto_scaling_groups = topology.auto_scaling_groups.len(),
            api_calls = calls,
            elapsed_ms = refresh.elapsed.as_millis() as u64,
            "discovery refreshed"
        );
    }

    /// Refreshes now, then every interval (and early when asked, rate
    /// limited); after a failure, sooner, with [`next_refresh_delay`]'s
    /// backoff. Until `shutdown` is cancelled — also in the middle of a
    /// refresh, so that AWS retries never hold up a shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
                () = self.early.requested() => {
                    info!("early discovery refresh: a payload named an unknown instance");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    info!("shutdown: discovery refresh abandoned");
                    return;
                }
                // A failure is already logged and counted; the loop goes on.
                _ = self.refresh() => {}
            }
            let failures = self.stats.consecutive_failures.load(Ordering::Relaxed);
            let mut delay = next_refresh_delay(self.interval, failures);
            if failures == 0 {
                delay = jittered(delay, self.jitter, fastrand::f64());
            }
            next = tokio::time::Instant::now() + delay;
            self.early.refreshed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #23: an empty discovery was silent; now it is a lasting
    /// failure (logged, reminded, its end logged), unless scraping is off.
    #[tokio::test]
    async fn an_empty_topology_is_a_lasting_problem_unless_scraping_is_off() {
        let calls = Arc::new(AtomicU64::new(0));
        let refresher = Refresher::new(FailsFirst { failures: 0, calls: Arc::clone(&calls) }, Duration::from_secs(60));
        refresher.refresh().await.unwrap();
        let since = refresher.stats.empty.lock().unwrap().failing().map(|(since, _)| since);
        assert!(since.is_some(), "an empty topology is noted");
        let discovery_only =
            Refresher::new(FailsFirst { failures: 0, calls }, Duration::from_secs(60)).without_scraping();
        discovery_only.refresh().await.unwrap();
        assert_eq!(discovery_only.stats.empty.lock().unwrap().failing(), None, "expected with scraping off");
    }

    /// A refresh that found nothing, after `elapsed`.
    fn empty_refresh(elapsed: Duration, policies_error: Option<String>) -> Refresh {
        let topology =
            Topology { targets: vec![], auto_scaling_groups: vec![], refreshed_at: std::time::SystemTime::UNIX_EPOCH };
        Refresh { topology, api_calls: BTreeMap::new(), elapsed, policies_error, findings: vec![] }
    }

    /// A discovery that takes `delay` and finds nothing.
    #[derive(Debug)]
    struct Slow {
        delay: Duration,
        calls: Arc<AtomicU64>,
    }

    impl Discover for Slow {
        fn discover(&self) -> BoxFuture<'_, Result<Refresh, Error>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                Ok(empty_refresh(self.delay, None))
            })
        }

        fn endpoint(&self) -> &str {
            "fake"
        }
    }

    /// A discovery that fails its first `failures` calls, then succeeds.
    #[derive(Debug)]
    struct FailsFirst {
        failures: u64,
        calls: Arc<AtomicU64>,
    }

    impl Discover for FailsFirst {
        fn discover(&self) -> BoxFuture<'_, Result<Refresh, Error>> {
            let call = self.calls.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                if call < self.failures {
                    return Err(Error::NoCredentials);
                }
                Ok(empty_refresh(Duration::ZERO, None))
            })
        }

        fn endpoint(&self) -> &str {
            "fake"
        }
    }

    /// A discovery whose scaling policies are unreadable on the calls listed.
    #[derive(Debug)]
    struct PoliciesDenied {
        denied_on: Vec<bool>,
        calls: AtomicU64,
    }

    impl Discover for PoliciesDenied {
        fn discover(&self) -> BoxFuture<'_, Result<Refresh, Error>> {
            let call = self.calls.fetch_add(1, Ordering::Relaxed) as usize;
            let denied = self.denied_on.get(call).copied().unwrap_or(false);
            let policies_error = denied.then(|| "DescribePolicies: AccessDenied: not authorized".to_string());
            Box::pin(async move { Ok(empty_refresh(Duration::ZERO, policies_error)) })
        }

        fn endpoint(&self) -> &str {
            "fake"
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unreadable_policies_are_counted_per_refresh_and_kept_until_they_recover() {
        let fake = PoliciesDenied { denied_on: vec![true, true, false], calls: AtomicU64::new(0) };
        let refresher = Refresher::new(fake, Duration::from_secs(60));
        let stats = refresher.stats();
        let error = || stats.policies_error.lock().unwrap().clone();
        refresher.refresh().await.expect("a refresh without the policies succeeds");
        assert_eq!(stats.policy_failures.load(Ordering::Relaxed), 1);
        assert!(error().is_some_and(|e| e.contains("AccessDenied")));
        refresher.refresh().await.unwrap();
        assert_eq!(stats.policy_failures.load(Ordering::Relaxed), 2, "counted at every refresh, logged once");
        refresher.refresh().await.unwrap();
        assert_eq!(stats.policy_failures.load(Ordering::Relaxed), 2);
        assert_eq!(error(), None, "recovered");
        assert_eq!(stats.failures.load(Ordering::Relaxed), 0, "never a failed refresh");
    }

    #[test]
    fn failed_refreshes_are_retried_with_a_doubling_delay_capped_by_the_interval() {
        let minute = Duration::from_secs(60);
        let delays: Vec<u64> = (0..9).map(|n| next_refresh_delay(Duration::from_secs(300), n).as_secs()).collect();
        assert_eq!(delays, [300, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(next_refresh_delay(Duration::from_secs(5), 4), Duration::from_secs(5), "never later than a success");
        assert_eq!(next_refresh_delay(minute, 40), minute, "no overflow");
    }

    #[test]
    fn jitter_only_brings_a_refresh_forward() {
        let minute = Duration::from_secs(60);
        assert_eq!(jittered(minute, 0.1, 0.0), minute);
        assert_eq!(jittered(minute, 0.1, 0.5), Duration::from_secs(57));
        assert_eq!(jittered(minute, 0.1, 0.999_999).as_secs(), 54);
        assert_eq!(jittered(minute, 0.0, 0.7), minute, "no jitter by default");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_first_discovery_is_retried_with_backoff_not_once_per_interval() {
        let calls = Arc::new(AtomicU64::new(0));
        let refresher = Refresher::new(FailsFirst { failures: 3, calls: Arc::clone(&calls) }, Duration::from_secs(300));
        let stats = refresher.stats();
        let topology = refresher.subscribe();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(refresher.run(shutdown.clone()));
        // Failures at 0 s, 1 s, 3 s; the fourth attempt (at 7 s) succeeds.
        tokio::time::sleep(Duration::from_millis(6_900)).await;
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert!(!stats.ready(), "not ready before a discovery has succeeded");
        assert_eq!(stats.consecutive_failures.load(Ordering::Relaxed), 3);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(calls.load(Ordering::Relaxed), 4);
        assert!(stats.ready() && topology.borrow().is_some());
        assert_eq!(stats.consecutive_failures.load(Ordering::Relaxed), 0);
        // Then the interval again.
        tokio::time::sleep(Duration::from_secs(299)).await;
        assert_eq!(calls.load(Ordering::Relaxed), 4);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(calls.load(Ordering::Relaxed), 5);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_in_progress_does_not_hold_shutdown() {
        // AWS retries with backoff can keep a refresh going for a minute.
        let refresher =
            Refresher::new(Slow { delay: Duration::from_secs(60), calls: Arc::default() }, Duration::from_secs(300));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(refresher.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stopping = tokio::time::Instant::now();
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(stopping.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn early_refreshes_are_rate_limited_from_the_last_refresh() {
        let calls = Arc::new(AtomicU64::new(0));
        let refresher = Refresher::new(
            Slow { delay: Duration::from_millis(100), calls: Arc::clone(&calls) },
            Duration::from_secs(300),
        )
        .with_early_refresh_min_interval(Duration::from_secs(10));
        let early = refresher.early_refresh();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(refresher.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(calls.load(Ordering::Relaxed), 1, "the first refresh");
        assert!(!early.try_request(), "1 s after a refresh");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(early.try_request());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(calls.load(Ordering::Relaxed), 2, "the early refresh ran");
        assert!(!early.try_request(), "and the limit counts from it");
        shutdown.cancel();
        task.await.unwrap();
    }
}
