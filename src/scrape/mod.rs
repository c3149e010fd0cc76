//! Scraping: one payload per instance per interval, reached directly or
//! through its ALB listener, and attributed to the instance that produced it.
//!
//! - [`client`]: HTTP (keep-alive, gzip, limits, auth, stickiness cookies).
//! - [`identity`]: attribution from identity labels inside payloads.
//! - [`convert`]: payload → store records (`exported_` rule, metric relabeling).
//! - `round`: one direct scrape, or one via-ALB round of a listener.
//! - `state`: slots, cookies, fallbacks, statuses and counters.
//!
//! **Jobs.** In `direct` and `auto` mode every instance is a job; in
//! `via_alb` mode every listener is (its members are the instances whose first
//! path is that listener). Jobs run once per interval at an offset hashed from
//! their key, like Prometheus spreads targets.
//!
//! **Slots.** Each instance's interval is numbered from its owning job's
//! offset (centred, so jitter cannot split or merge intervals). A payload is
//! stored only if its instance's slot is still empty, whichever job or round
//! reached it: exactly one scrape and one series set per instance per interval.

pub mod client;
pub mod convert;
pub mod identity;
mod round;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, IdentitySource, ScrapeMode};
use crate::discovery::{EarlyRefresh, Target, Topology, TopologyReceiver};
use crate::exposition::Limits;
use crate::store::{Batch, WriterHandle};
pub use client::HttpClient;
pub use convert::ConvertOptions;
pub use state::{ScrapeState, TargetStatus};

/// The scrape settings every job reads.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Interval.
    pub interval: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How instances are reached.
    pub mode: ScrapeMode,
    /// Identity sources, in order.
    pub identity: Vec<IdentitySource>,
    /// Parser limits.
    pub limits: Limits,
    /// Requests per via-ALB round; `None`: `max(3N, N+2)`.
    pub alb_request_budget: Option<u32>,
    /// Payload conversion.
    pub convert: ConvertOptions,
}

impl Settings {
    /// From the configuration.
    pub fn from_config(config: &Config) -> Self {
        Self {
            interval: config.scrape.interval.as_std(),
            timeout: config.scrape.timeout.as_std(),
            mode: config.scrape.mode,
            identity: config.scrape.identity.clone(),
            limits: config.scrape.limits(),
            alb_request_budget: config.scrape.alb_request_budget,
            convert: ConvertOptions {
                honor_labels: config.scrape.honor_labels,
                metric_relabel_configs: config.metric_relabel_configs.clone(),
            },
        }
    }

    /// Requests allowed for a round of `members` members.
    pub fn budget(&self, members: usize) -> u32 {
        let n = u32::try_from(members).unwrap_or(u32::MAX);
        self.alb_request_budget.unwrap_or_else(|| (3 * n).max(n + 2))
    }
}

/// A unit of scheduled work.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKey {
    /// One instance (direct and auto modes).
    Instance(String),
    /// One listener, by its load balancer DNS name and port (via_alb mode).
    Listener(String, u16),
}

/// The listener an instance is reached through: its first path.
pub(crate) fn primary_listener(target: &Target) -> Option<(String, u16)> {
    target.paths.first().map(|p| (p.load_balancer_dns_name.clone(), p.listener_port))
}

/// The jobs the topology calls for, with the instances each owns.
pub fn plan(topology: &Topology, mode: ScrapeMode) -> BTreeMap<JobKey, Vec<String>> {
    let mut jobs: BTreeMap<JobKey, Vec<String>> = BTreeMap::new();
    for target in topology.scraped_targets() {
        let key = match (mode, primary_listener(target)) {
            (ScrapeMode::ViaAlb, Some((dns, port))) => JobKey::Listener(dns, port),
            _ => JobKey::Instance(target.instance.id.clone()),
        };
        jobs.entry(key).or_default().push(target.instance.id.clone());
    }
    jobs
}

fn offset(key: &JobKey, interval: Duration) -> Duration {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(hasher.finish() % millis)
}

/// Epoch seconds now, millisecond precision.
pub fn now_seconds() -> f64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (now.as_millis() as f64) / 1000.0
}

/// How slots are numbered.
#[derive(Debug, Clone, Copy)]
enum Slots {
    /// Intervals since the epoch, from each instance's owning-job offset.
    Periodic,
    /// One [`Scraper::run_once`] pass: every instance's slot is the pass number.
    Pass(i64),
}

/// Scrapes the current topology until shut down, or once.
#[derive(Debug, Clone)]
pub struct Scraper {
    settings: Arc<Settings>,
    client: HttpClient,
    topology: TopologyReceiver,
    writer: WriterHandle,
    /// `None` where no refresh loop runs (`--once`): an unknown identity is
    /// then dropped at once instead of waiting for a refresh that never comes.
    early: Option<EarlyRefresh>,
    state: Arc<ScrapeState>,
    /// Instance → offset of the job that owns it, shared by every job.
    owners: Arc<RwLock<HashMap<String, Duration>>>,
    /// Passes of [`Scraper::run_once`] so far.
    passes: Arc<std::sync::atomic::AtomicI64>,
}

impl Scraper {
    /// A scraper over the topologies `topology` publishes, writing to `writer`;
    /// `early` asks discovery for early refreshes (`None` without a refresh loop).
    pub fn new(
        settings: Settings,
        client: HttpClient,
        topology: TopologyReceiver,
        writer: WriterHandle,
        early: Option<EarlyRefresh>,
    ) -> Self {
        Self {
            settings: Arc::new(settings),
            client,
            topology,
            writer,
            early,
            state: Arc::default(),
            owners: Arc::default(),
            passes: Arc::default(),
        }
    }

    /// The shared state (for `/api/targets` and `/metrics`).
    pub fn state(&self) -> Arc<ScrapeState> {
        Arc::clone(&self.state)
    }

    /// Scrapes every job once, all at the same time, and waits for them.
    /// Rounds run until every member is reached or the budget is spent. Each
    /// call is a new pass: every instance may be stored again.
    pub async fn run_once(&self) {
        let Some(topology) = self.topology.borrow().clone() else { return };
        let jobs = plan(&topology, self.settings.mode);
        // Passes count from a large base so they never meet a periodic slot.
        let pass = (1 << 40) + self.passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tasks = Vec::new();
        for key in jobs.into_keys() {
            let scraper = self.clone();
            tasks.push(tokio::spawn(async move { scraper.run_job(&key, Slots::Pass(pass)).await }));
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Runs the jobs of each new topology until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut receiver = self.topology.clone();
        let mut running: BTreeMap<JobKey, JoinHandle<()>> = BTreeMap::new();
        loop {
            let topology = receiver.borrow_and_update().clone();
            if let Some(topology) = topology {
                self.reconcile(&topology, &mut running, &shutdown);
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = receiver.changed() => if changed.is_err() { break },
            }
        }
        for task in running.into_values() {
            task.abort();
        }
    }

    fn reconcile(
        &self,
        topology: &Topology,
        running: &mut BTreeMap<JobKey, JoinHandle<()>>,
        shutdown: &CancellationToken,
    ) {
        let jobs = plan(topology, self.settings.mode);
        let interval = self.settings.interval;
        let owners: HashMap<String, Duration> =
            jobs.iter().flat_map(|(key, ids)| ids.iter().map(move |id| (id.clone(), offset(key, interval)))).collect();
        match self.owners.write() {
            Ok(mut shared) => *shared = owners,
            Err(poisoned) => *poisoned.into_inner() = owners,
        }
        // A job reads the current topology each time it runs, so a change of
        // its members needs no restart (which could cut a round short); only
        // jobs whose key is gone stop.
        running.retain(|key, task| {
            let keep = jobs.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for key in jobs.into_keys() {
            if running.contains_key(&key) {
                continue;
            }
            let scraper = self.clone();
            let (job_key, stop) = (key.clone(), shutdown.clone());
            running.insert(key, tokio::spawn(async move { scraper.job_loop(job_key, stop).await }));
        }
        self.state.retain_targets(|id| topology.target(id).is_some_and(Target::is_scraped));
    }

    async fn job_loop(self, key: JobKey, shutdown: CancellationToken) {
        let interval = self.settings.interval;
        let phase = offset(&key, interval);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let since_phase = now.saturating_sub(phase).as_nanos() % interval.as_nanos().max(1);
        let mut next = tokio::time::Instant::now() + interval.saturating_sub(Duration::from_nanos(since_phase as u64));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
            }
            self.run_job(&key, Slots::Periodic).await;
            next += interval;
            let now = tokio::time::Instant::now();
            while next <= now {
                next += interval;
            }
        }
    }

    async fn run_job(&self, key: &JobKey, slots: Slots) {
        let Some(topology) = self.topology.borrow().clone() else { return };
        let deadline = tokio::time::Instant::now() + self.settings.interval;
        let mut batch = Batch::default();
        match key {
            JobKey::Instance(id) => self.scrape_instance(&topology, id, slots, deadline, &mut batch).await,
            JobKey::Listener(dns, port) => {
                let owned: Vec<String> = plan(&topology, self.settings.mode).remove(key).unwrap_or_default();
                self.alb_round(&topology, (dns, *port), &owned, slots, deadline, &mut batch).await;
            }
        }
        if !batch.is_empty() && !self.writer.send(batch).await {
            tracing::warn!("store writer has stopped; scrape results dropped");
        }
    }

    fn slot(&self, slots: Slots, instance: &str, time: f64) -> i64 {
        match slots {
            Slots::Pass(pass) => pass,
            Slots::Periodic => {
                let interval = self.settings.interval.as_secs_f64();
                let phase = self
                    .owners
                    .read()
                    .ok()
                    .and_then(|owners| owners.get(instance).copied())
                    .map_or(0.0, |d| d.as_secs_f64());
                ((time - phase + interval / 2.0) / interval).floor() as i64
            }
        }
    }
}

#[cfg(test)]
mod tests;
