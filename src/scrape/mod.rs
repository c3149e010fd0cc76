//! Scraping: one payload per instance per interval, reached directly or
//! through its ALB listener, and attributed to the instance that produced it.
//!
//! - [`client`]: HTTP (keep-alive, gzip, limits, auth, stickiness cookies),
//!   behind the [`Fetch`] trait.
//! - [`identity`]: attribution from identity labels inside payloads.
//! - [`convert`]: payload → store records (`exported_` rule, metric relabeling).
//! - [`schedule`]: numbered intervals ([`schedule::Tick`]) and the clock.
//! - [`round_core`]: the via-ALB round as a pure state machine;
//!   [`balancing`]: each target group's learned balancing and round budget.
//! - `round`: the async shells of a direct scrape and of a via-ALB round.
//! - [`state`]: stored intervals, cookies, fallbacks, statuses, coverage, counters.
//! - [`failure`]: why an interval stored nothing.
//!
//! **Jobs.** In `direct` and `auto` mode every instance is a job; in
//! `via_alb` mode every listener is (its members are the instances whose first
//! path is that listener). Each job has a [`schedule::Schedule`] at a phase
//! hashed from its key, like Prometheus spreads targets.
//!
//! **Intervals.** A round serves one tick of its job, fixed when it starts:
//! every payload it stores for its own instances is stored in that tick's
//! interval, and the round ends by the tick's deadline, before the next tick
//! starts, so rounds of a job never overlap. A payload of an instance owned
//! by another job (an instance behind two listeners, `auto` mode's fallback)
//! is stored in the interval its owner's schedule puts the request in. An
//! instance's interval is stored at most once, whichever round reached it.

pub mod balancing;
pub mod client;
pub mod convert;
pub mod identity;
mod round;
pub(crate) use round::{listener_members, via};
pub mod round_core;
pub mod schedule;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, IdentitySource, ScrapeMode};
use crate::discovery::{EarlyRefresh, Target, Topology, TopologyReceiver};
use crate::exposition::Limits;
use crate::record::{Batch, InstanceId};
pub use crate::record::{FailureReason, failure};
pub use client::{Fetch, FetchRequest, HttpClient};
pub use convert::ConvertOptions;
use schedule::{Clock, Schedule, Tick};
pub use state::{ScrapeState, TargetStatus};

pub use crate::config::DEFAULT_MAX_REQUESTS_PER_MEMBER;

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
    /// A fixed number of requests per via-ALB round; `None`: learned.
    pub alb_request_budget: Option<u32>,
    /// The cap of a learned budget, per member.
    pub alb_max_requests_per_member: u32,
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
            alb_max_requests_per_member: config.scrape.alb_max_requests_per_member,
            convert: ConvertOptions {
                honor_labels: config.scrape.honor_labels,
                metric_relabel_configs: config.metric_relabel_configs.clone(),
            },
        }
    }

    /// The most requests a round through a listener of `members` members may send.
    pub fn request_cap(&self, members: usize) -> u32 {
        let n = u32::try_from(members.max(1)).unwrap_or(u32::MAX);
        self.alb_request_budget.unwrap_or_else(|| self.alb_max_requests_per_member.saturating_mul(n))
    }
}

/// A unit of scheduled work.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKey {
    /// One instance (direct and auto modes).
    Instance(InstanceId),
    /// One listener, by its load balancer DNS name and port (via_alb mode).
    Listener(String, u16),
}

/// A load balancer listener: DNS name and port. What the scraper remembers
/// per listener of an instance (cookies, the node that reached it) is keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerAddr {
    /// The load balancer's DNS name.
    pub dns: String,
    /// The listener's port.
    pub port: u16,
}

impl std::fmt::Display for ListenerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.dns, self.port)
    }
}

/// The listener an instance is reached through: its first path.
pub(crate) fn primary_listener(target: &Target) -> Option<(String, u16)> {
    target.paths.first().map(|p| (p.load_balancer_dns_name.clone(), p.listener_port))
}

/// The jobs the topology calls for, with the instances each owns.
pub fn plan(topology: &Topology, mode: ScrapeMode) -> BTreeMap<JobKey, Vec<InstanceId>> {
    let mut jobs: BTreeMap<JobKey, Vec<InstanceId>> = BTreeMap::new();
    for target in topology.scraped_targets() {
        let key = match (mode, primary_listener(target)) {
            (ScrapeMode::ViaAlb, Some((dns, port))) => JobKey::Listener(dns, port),
            _ => JobKey::Instance(target.instance.id.clone()),
        };
        jobs.entry(key).or_default().push(target.instance.id.clone());
    }
    jobs
}

/// The job's phase within the interval, hashed from its key.
fn phase(key: &JobKey, interval: Duration) -> Duration {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(hasher.finish() % millis)
}

/// The job that owns an instance, and its schedule.
#[derive(Debug, Clone)]
struct Owner {
    job: JobKey,
    schedule: Schedule,
}

/// The interval a round serves: a tick of its job's schedule, or a pass of
/// [`Scraper::run_once`] (every instance's interval is then the pass).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundTime {
    tick: Tick,
    once: bool,
}

/// Where a scraper hands its batches. Declared here so that scraping knows
/// nothing of what is behind it: the daemon's outputs (SQLite and
/// remote_write, `daemon::output`), or the SQLite writer alone.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Takes a batch; `false` once the sink has stopped for good (the SQLite
    /// writer ended), and the scraper then stops too.
    fn send(&self, batch: Batch) -> futures_util::future::BoxFuture<'_, bool>;
}

/// Scrapes the current topology until shut down, or once.
#[derive(Debug, Clone)]
pub struct Scraper {
    settings: Arc<Settings>,
    fetcher: Arc<dyn Fetch>,
    topology: TopologyReceiver,
    writer: Arc<dyn Sink>,
    /// `None` where no refresh loop runs (`--once`): an unknown identity is
    /// then dropped at once instead of waiting for a refresh that never comes.
    early: Option<EarlyRefresh>,
    state: Arc<ScrapeState>,
    clock: Clock,
    /// Instance → the job that owns it, shared by every job.
    owners: Arc<RwLock<HashMap<InstanceId, Owner>>>,
    /// Passes of [`Scraper::run_once`] so far.
    passes: Arc<AtomicI64>,
    /// Cancelled to cut the rounds in flight (the shutdown budget ran out).
    cut: CancellationToken,
}

impl Scraper {
    /// A scraper over the topologies `topology` publishes, requesting through
    /// `fetcher` and writing to `writer`; `early` asks discovery for early
    /// refreshes (`None` without a refresh loop).
    pub fn new(
        settings: Settings,
        fetcher: impl Fetch + 'static,
        topology: TopologyReceiver,
        writer: impl Sink + 'static,
        early: Option<EarlyRefresh>,
    ) -> Self {
        Self {
            settings: Arc::new(settings),
            fetcher: Arc::new(fetcher),
            topology,
            writer: Arc::new(writer),
            early,
            state: Arc::default(),
            clock: Clock::system(),
            owners: Arc::default(),
            passes: Arc::default(),
            cut: CancellationToken::new(),
        }
    }

    /// Uses `clock` for schedules and timestamps (deterministic tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The shared state (for `/api/targets` and `/metrics`).
    pub fn state(&self) -> Arc<ScrapeState> {
        Arc::clone(&self.state)
    }

    /// Cancel it to cut every round in flight: requests still out are
    /// abandoned and counted, and what the rounds have is still stored.
    pub fn cutter(&self) -> CancellationToken {
        self.cut.clone()
    }

    /// Scrapes every job once, all at the same time, and waits for them.
    /// Rounds run until every member is reached, the budget is spent, an
    /// interval has passed, or they are cut. Each call is a new pass: every
    /// instance may be stored again.
    pub async fn run_once(&self) {
        let Some(topology) = self.topology.borrow().clone() else { return };
        self.learn_owners(&topology);
        // Passes count from a large base so they never meet a periodic interval.
        let index = (1 << 40) + self.passes.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let deadline = start + self.settings.interval - schedule::margin(self.settings.interval);
        let time = RoundTime { tick: Tick { index, start, deadline }, once: true };
        let mut tasks = Vec::new();
        for key in plan(&topology, self.settings.mode).into_keys() {
            let scraper = self.clone();
            tasks.push(tokio::spawn(async move { scraper.run_job(&key, time).await }));
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Runs the jobs of each new topology until `shutdown`; then lets the
    /// rounds in flight finish (or be cut through [`Scraper::cutter`]) and
    /// returns once every job has handed its last batch to the writer.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut receiver = self.topology.clone();
        let mut running: BTreeMap<JobKey, (JoinHandle<()>, CancellationToken)> = BTreeMap::new();
        loop {
            let topology = receiver.borrow_and_update().clone();
            if let Some(topology) = topology {
                self.fetcher.topology_changed();
                self.state.forget_nodes();
                self.reconcile(&topology, &mut running, &shutdown);
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = receiver.changed() => if changed.is_err() { break },
            }
        }
        for (task, _) in running.into_values() {
            let _ = task.await;
        }
    }

    fn learn_owners(&self, topology: &Topology) {
        let interval = self.settings.interval;
        let owners: HashMap<InstanceId, Owner> = plan(topology, self.settings.mode)
            .into_iter()
            .flat_map(|(job, ids)| {
                let schedule = Schedule::new(interval, phase(&job, interval));
                ids.into_iter().map(move |id| (id, Owner { job: job.clone(), schedule }))
            })
            .collect();
        match self.owners.write() {
            Ok(mut shared) => *shared = owners,
            Err(poisoned) => *poisoned.into_inner() = owners,
        }
    }

    fn reconcile(
        &self,
        topology: &Topology,
        running: &mut BTreeMap<JobKey, (JoinHandle<()>, CancellationToken)>,
        shutdown: &CancellationToken,
    ) {
        self.learn_owners(topology);
        let jobs = plan(topology, self.settings.mode);
        // A job reads the current topology each time it runs, so a change of
        // its members needs no restart (which could cut a round short); a job
        // whose key is gone ends after its current round.
        running.retain(|key, (_, stop)| {
            let keep = jobs.contains_key(key);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for key in jobs.into_keys() {
            if running.contains_key(&key) {
                continue;
            }
            let scraper = self.clone();
            let (job_key, stop) = (key.clone(), shutdown.child_token());
            let task = tokio::spawn({
                let stop = stop.clone();
                async move { scraper.job_loop(job_key, stop).await }
            });
            running.insert(key, (task, stop));
        }
        let groups: std::collections::BTreeSet<String> =
            topology.scraped_targets().flat_map(|t| t.paths.iter().map(|p| p.target_group.clone())).collect();
        self.state
            .retain_targets(|id| topology.target(id).is_some_and(Target::is_scraped), |group| group.all_in(&groups));
    }

    async fn job_loop(self, key: JobKey, shutdown: CancellationToken) {
        let schedule = Schedule::new(self.settings.interval, phase(&key, self.settings.interval));
        let mut tick = schedule.first_tick_from(&self.clock, Instant::now());
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(tick.start) => {}
            }
            self.run_job(&key, RoundTime { tick, once: false }).await;
            if shutdown.is_cancelled() {
                return;
            }
            // Rounds end before the next tick; should one not (a stalled
            // writer), the intervals it overran are skipped, never doubled.
            let next = schedule.tick(&self.clock, tick.index + 1);
            tick =
                if next.start >= Instant::now() { next } else { schedule.first_tick_from(&self.clock, Instant::now()) };
        }
    }

    async fn run_job(&self, key: &JobKey, time: RoundTime) {
        let Some(topology) = self.topology.borrow().clone() else { return };
        let mut batch = Batch::default();
        match key {
            JobKey::Instance(id) => self.scrape_instance(&topology, key, id, time, &mut batch).await,
            JobKey::Listener(dns, port) => {
                let owned: Vec<InstanceId> = plan(&topology, self.settings.mode).remove(key).unwrap_or_default();
                self.alb_round(&topology, key, (dns, *port), &owned, time, &mut batch).await;
            }
        }
        if !batch.is_empty() && !self.writer.send(batch).await {
            tracing::warn!("store writer has stopped; scrape results dropped");
        }
    }

    /// The interval a payload of `instance` requested at `at` belongs to, in
    /// a round of `key` serving `time`.
    fn interval_of(&self, key: &JobKey, time: RoundTime, instance: &str, at: Instant) -> i64 {
        if time.once {
            return time.tick.index;
        }
        let owner = self.owners.read().ok().and_then(|owners| owners.get(instance).cloned());
        match owner {
            Some(owner) if owner.job != *key => owner.schedule.index_at(&self.clock, at),
            _ => time.tick.index,
        }
    }
}

#[cfg(test)]
mod tests;
