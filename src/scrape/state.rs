//! What the scraper remembers between intervals: which interval each
//! instance was last stored in, stickiness cookies, `auto` mode's fallbacks,
//! each target group's learned balancing and coverage, per-instance status
//! for `/api/targets`, and counters for `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Serialize;

use super::ListenerAddr;
use super::balancing::BalancingModel;
use super::client::Stickiness;
use super::convert::SeriesCache;
use super::failure::FailureReason;
use super::identity::Explanation;
use super::round_core::RoundOutcome;
use crate::discovery::Role;
use crate::ids::InstanceId;
use crate::record::{Route, TargetGroups};
use crate::self_metrics::{Collect, Encoder, Family};

/// How an instance was last reached, for `/api/targets`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetStatus {
    /// `basic` or `asg` (`None` before its first interval).
    pub role: Option<Role>,
    /// Auto Scaling group.
    pub asg_name: Option<String>,
    /// How the last interval reached it (`None` before its first interval);
    /// through a listener, it names the target groups.
    pub path: Option<Route>,
    /// Epoch seconds of the last interval that tried it, stored or not.
    pub last_scrape: Option<f64>,
    /// Epoch seconds of the last stored payload.
    pub last_success: Option<f64>,
    /// Whether the last interval stored a payload.
    pub up: bool,
    /// Why not.
    pub reason: Option<FailureReason>,
    /// The error of the last interval, if it failed (cleared when one succeeds).
    pub last_error: Option<String>,
}

/// Via-ALB rounds of one target group (or `a+b` for a weighted listener).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupStats {
    /// Rounds run.
    pub rounds: u64,
    /// Rounds that reached every member they wanted.
    pub complete_rounds: u64,
    /// Σ over rounds of members wanted.
    pub member_intervals: u64,
    /// Σ over rounds of wanted members reached.
    pub members_reached: u64,
    /// Requests sent.
    pub requests: u64,
    /// Requests abandoned at a round's deadline.
    pub abandoned: u64,
    /// Coverage of recent rounds (members reached / wanted, decayed over ~20 rounds).
    pub recent_coverage: f64,
    /// Requests per wanted member per interval, recent rounds.
    pub recent_requests_per_member: f64,
    /// The budget of the last round.
    pub last_budget: u32,
    #[serde(skip)]
    model: BalancingModel,
}

impl GroupStats {
    fn record(&mut self, wanted: usize, missed: usize, outcome: &RoundOutcome) {
        const WEIGHT: f64 = 0.05;
        let reached_wanted = wanted - missed.min(wanted);
        self.rounds += 1;
        self.complete_rounds += u64::from(missed == 0);
        self.member_intervals += wanted as u64;
        self.members_reached += reached_wanted as u64;
        self.requests += u64::from(outcome.requests);
        self.abandoned += u64::from(outcome.abandoned);
        self.last_budget = outcome.budget;
        if wanted > 0 {
            let coverage = reached_wanted as f64 / wanted as f64;
            let price = f64::from(outcome.requests) / wanted as f64;
            if self.rounds == 1 {
                (self.recent_coverage, self.recent_requests_per_member) = (coverage, price);
            } else {
                self.recent_coverage += WEIGHT * (coverage - self.recent_coverage);
                self.recent_requests_per_member += WEIGHT * (price - self.recent_requests_per_member);
            }
        }
    }
}

/// Counters exported on `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Payloads stored, by path kind (`direct`, `via_alb`).
    pub scrapes_stored: BTreeMap<&'static str, u64>,
    /// Failed scrapes, by reason.
    pub scrape_failures: BTreeMap<FailureReason, u64>,
    /// Requests sent to listeners.
    pub alb_requests: u64,
    /// Payloads not attributed, by (target group, reason).
    pub unattributed: BTreeMap<(TargetGroups, &'static str), u64>,
    /// Early discovery refreshes asked for.
    pub early_refreshes: u64,
    /// Payloads of an instance whose interval was already stored (another
    /// round, or a second answer in the same round): dropped.
    pub duplicates_dropped: u64,
}

static SCRAPES: Family<1> =
    Family::counter("fleetscrape_scrapes_total", "Payloads stored, by how the instance was reached.", ["path"]);
static SCRAPE_FAILURES: Family<1> = Family::counter(
    "fleetscrape_scrape_failures_total",
    "Intervals in which an instance got up=0, by reason.",
    ["reason"],
);
static DUPLICATES: Family<0> = Family::counter(
    "fleetscrape_duplicate_payloads_total",
    "Payloads of an instance whose interval was already stored (dropped).",
    [],
);
static ALB_REQUESTS: Family<0> =
    Family::counter("fleetscrape_alb_requests_total", "Requests sent to load balancer listeners.", []);
static UNATTRIBUTED: Family<2> = Family::counter(
    "fleetscrape_unattributed_payloads_total",
    "Payloads dropped because no member could be named.",
    ["target_group", "reason"],
);
static EARLY_REFRESHES: Family<0> = Family::counter(
    "fleetscrape_early_refreshes_total",
    "Early discovery refreshes asked for by unknown identities.",
    [],
);

/// A family of [`GroupStats`] and how to read it.
type GroupFamily = (Family<1>, fn(&GroupStats) -> f64);

/// Via-ALB rounds per target group: coverage (members reached / wanted) and
/// price (requests / wanted), as counters to `rate()` and recent gauges.
static GROUP_FAMILIES: [GroupFamily; 8] = [
    (Family::counter("fleetscrape_alb_rounds_total", "Via-ALB rounds.", ["target_group"]), |g| g.rounds as f64),
    (
        Family::counter(
            "fleetscrape_alb_rounds_complete_total",
            "Via-ALB rounds that reached every member they wanted.",
            ["target_group"],
        ),
        |g| g.complete_rounds as f64,
    ),
    (
        Family::counter(
            "fleetscrape_alb_member_intervals_total",
            "Members wanted, summed over rounds.",
            ["target_group"],
        ),
        |g| g.member_intervals as f64,
    ),
    (
        Family::counter(
            "fleetscrape_alb_members_reached_total",
            "Wanted members reached, summed over rounds.",
            ["target_group"],
        ),
        |g| g.members_reached as f64,
    ),
    (Family::counter("fleetscrape_alb_round_requests_total", "Requests sent by rounds.", ["target_group"]), |g| {
        g.requests as f64
    }),
    (
        Family::counter(
            "fleetscrape_alb_abandoned_requests_total",
            "Requests still in flight at a round's deadline.",
            ["target_group"],
        ),
        |g| g.abandoned as f64,
    ),
    (
        Family::gauge(
            "fleetscrape_alb_coverage_ratio",
            "Members reached / wanted over recent rounds (decayed over about 20).",
            ["target_group"],
        ),
        |g| g.recent_coverage,
    ),
    (
        Family::gauge(
            "fleetscrape_alb_requests_per_member",
            "Requests per wanted member per interval over recent rounds.",
            ["target_group"],
        ),
        |g| g.recent_requests_per_member,
    ),
];

impl Collect for ScrapeState {
    fn collect(&self, encoder: &mut Encoder) {
        let (counters, groups) = self.with(|s| (s.counters.clone(), s.groups.clone()));
        let mut scrapes = encoder.family(&SCRAPES);
        for (path, n) in &counters.scrapes_stored {
            scrapes.sample([path], *n as f64);
        }
        let mut failures = encoder.family(&SCRAPE_FAILURES);
        for (reason, n) in &counters.scrape_failures {
            failures.sample([reason.as_str()], *n as f64);
        }
        encoder.single(&DUPLICATES, counters.duplicates_dropped as f64);
        for (family, field) in &GROUP_FAMILIES {
            let mut samples = encoder.family(family);
            for (group, stats) in &groups {
                samples.sample([&group.to_string()], field(stats));
            }
        }
        encoder.single(&ALB_REQUESTS, counters.alb_requests as f64);
        let mut unattributed = encoder.family(&UNATTRIBUTED);
        for ((group, reason), n) in &counters.unattributed {
            unattributed.sample([&group.to_string(), reason], *n as f64);
        }
        encoder.single(&EARLY_REFRESHES, counters.early_refreshes as f64);
    }
}

/// Everything the scraper remembers of one instance. Forgetting an instance
/// (it left the topology) drops all of it at once.
#[derive(Debug, Default)]
struct Memory {
    /// The last interval index stored.
    slot: Option<i64>,
    /// What conversion remembers of its series (taken out while converting).
    series: Option<SeriesCache>,
    /// `auto` mode: intervals left to go through the listener.
    fallback: u32,
    /// Its status for `/api/targets`, once an interval tried it.
    status: Option<TargetStatus>,
    /// Per listener: its stickiness cookies, and the load
    /// balancer node that last reached it.
    listeners: HashMap<ListenerAddr, Reach>,
}

/// How one instance is reached through one listener.
#[derive(Debug, Default)]
struct Reach {
    cookies: Stickiness,
    node: Option<std::net::SocketAddr>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Instance id → what is remembered of it.
    instances: HashMap<InstanceId, Memory>,
    groups: BTreeMap<TargetGroups, GroupStats>,
    counters: Counters,
    /// Scrape path (a listener's target groups, or an instance scraped
    /// directly) → why its payloads are not attributed, while they are not.
    identity_issues: BTreeMap<String, IdentityIssue>,
}

/// Why payloads through one path name none of its members, since when.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityIssue {
    /// Epoch seconds of the first such payload (since the last change).
    pub since: f64,
    /// The identity seen, the members expected, the hint.
    pub why: Explanation,
}

/// A change in what a path's payloads show ([`ScrapeState::note_identity`]).
#[derive(Debug, Clone, PartialEq)]
pub enum IdentityChange {
    /// They are not attributed, for a new reason (or for the first time).
    Unattributed(Explanation),
    /// They are attributed again.
    Resolved,
}

impl Inner {
    /// The memory of `instance`, created on first use.
    fn of(&mut self, instance: &InstanceId) -> &mut Memory {
        self.instances.entry(instance.clone()).or_default()
    }

    /// How `instance` is reached through `listener`, if anything is known.
    fn reach(&self, listener: &ListenerAddr, instance: &InstanceId) -> Option<&Reach> {
        self.instances.get(instance)?.listeners.get(listener)
    }
}

/// Shared scraper memory; every method takes the lock briefly.
#[derive(Debug, Default)]
pub struct ScrapeState(Mutex<Inner>);

impl ScrapeState {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Claims interval `index` for `instance`; `false` if a payload is
    /// already stored for it (or a later interval).
    pub fn claim_slot(&self, instance: &InstanceId, index: i64) -> bool {
        self.with(|s| {
            let slot = &mut s.of(instance).slot;
            match *slot {
                Some(last) if last >= index => false,
                _ => {
                    *slot = Some(index);
                    true
                }
            }
        })
    }

    /// Whether interval `index` is already stored for `instance`.
    pub fn slot_filled(&self, instance: &InstanceId, index: i64) -> bool {
        self.with(|s| s.instances.get(instance).and_then(|m| m.slot).is_some_and(|last| last >= index))
    }

    /// The cookie header that pins `instance` behind `listener`: only with
    /// its member cookie (`AWSALB`); its target group's cookie (`AWSALBTG`)
    /// goes along, since the group is chosen before the member.
    pub fn pinning_cookie(&self, listener: &ListenerAddr, instance: &InstanceId) -> Option<String> {
        self.with(|s| s.reach(listener, instance).and_then(|r| r.cookies.header()))
    }

    /// Remembers the stickiness cookies a response of `instance` set.
    pub fn set_cookies(&self, listener: &ListenerAddr, instance: &InstanceId, cookies: Stickiness) {
        self.with(|s| s.of(instance).listeners.entry(listener.clone()).or_default().cookies.merge(cookies));
    }

    /// Forgets a cookie that did not reach its member.
    pub fn forget_cookie(&self, listener: &ListenerAddr, instance: &InstanceId) {
        self.with(|s| {
            if let Some(reach) = s.instances.get_mut(instance).and_then(|m| m.listeners.get_mut(listener)) {
                reach.cookies = Stickiness::default();
            }
        });
    }

    /// Takes an instance's series cache out (converting a payload takes no
    /// lock); [`ScrapeState::put_series`] hands it back.
    pub fn take_series(&self, instance: &InstanceId) -> SeriesCache {
        self.with(|s| s.instances.get_mut(instance).and_then(|m| m.series.take())).unwrap_or_default()
    }

    /// Hands an instance's series cache back.
    pub fn put_series(&self, instance: &InstanceId, cache: SeriesCache) {
        self.with(|s| s.of(instance).series = Some(cache));
    }

    /// The load balancer node that last reached `instance` behind `listener`.
    pub fn member_node(&self, listener: &ListenerAddr, instance: &InstanceId) -> Option<std::net::SocketAddr> {
        self.with(|s| s.reach(listener, instance).and_then(|r| r.node))
    }

    /// Forgets which node reached which member: discovery refreshed, and the
    /// names may resolve to other nodes now.
    pub fn forget_nodes(&self) {
        self.with(|s| s.instances.values_mut().flat_map(|m| m.listeners.values_mut()).for_each(|r| r.node = None));
    }

    /// Remembers the node that reached `instance`.
    pub fn set_member_node(&self, listener: &ListenerAddr, instance: &InstanceId, node: std::net::SocketAddr) {
        self.with(|s| s.of(instance).listeners.entry(listener.clone()).or_default().node = Some(node));
    }

    /// `auto` mode: go through the listener for the next `intervals` intervals.
    pub fn set_fallback(&self, instance: &InstanceId, intervals: u32) {
        self.with(|s| s.of(instance).fallback = intervals);
    }

    /// `auto` mode: whether to skip the direct attempt this interval (counts down).
    pub fn use_fallback(&self, instance: &InstanceId) -> bool {
        self.with(|s| match s.instances.get_mut(instance) {
            Some(memory) if memory.fallback > 0 => {
                memory.fallback -= 1;
                true
            }
            _ => false,
        })
    }

    /// Records an instance's status for `/api/targets`.
    pub fn set_status(&self, instance: &InstanceId, update: impl FnOnce(&mut TargetStatus)) {
        self.with(|s| update(s.of(instance).status.get_or_insert_with(TargetStatus::default)));
    }

    /// Forgets instances no longer scraped (everything remembered of them, in
    /// one place), and target groups no longer used.
    pub fn retain_targets(&self, keep: impl Fn(&InstanceId) -> bool, keep_group: impl Fn(&TargetGroups) -> bool) {
        self.with(|s| {
            s.instances.retain(|id, _| keep(id));
            s.groups.retain(|group, _| keep_group(group));
        });
    }

    /// A copy of every instance's status.
    pub fn targets(&self) -> BTreeMap<InstanceId, TargetStatus> {
        self.with(|s| s.instances.iter().filter_map(|(id, m)| Some((id.clone(), m.status.clone()?))).collect())
    }

    /// The round budget for `unpinned` of `members` of `group`, from its learned balancing.
    pub fn budget(
        &self,
        group: &TargetGroups,
        members: &[InstanceId],
        unpinned: &[InstanceId],
        target: f64,
        cap: u32,
    ) -> u32 {
        self.with(|s| s.groups.get(group).map(|g| &g.model).cloned().unwrap_or_default())
            .requests_for(members, unpinned, target, cap)
    }

    /// Records a finished round of `group` that left `missed` of its `wanted`
    /// members without a payload this interval: coverage, price, and what the
    /// balancer did.
    pub fn record_round(
        &self,
        group: &TargetGroups,
        members: &[InstanceId],
        wanted: usize,
        missed: usize,
        outcome: &RoundOutcome,
    ) {
        self.with(|s| {
            let stats = s.groups.entry(group.clone()).or_default();
            stats.record(wanted, missed, outcome);
            stats.model.observe(members, &outcome.untargeted_answers);
        });
    }

    /// A copy of every target group's round statistics.
    pub fn groups(&self) -> BTreeMap<TargetGroups, GroupStats> {
        self.with(|s| s.groups.clone())
    }

    /// Notes what the latest payloads through `path` showed: `Some(why)`
    /// when one was not attributed, `None` when they were. Returns the
    /// change to log and record, if it is one: a different identity or
    /// hint, not a new member list.
    pub fn note_identity(&self, path: &str, why: Option<&Explanation>, now: f64) -> Option<IdentityChange> {
        self.with(|s| match why {
            None => s.identity_issues.remove(path).map(|_| IdentityChange::Resolved),
            Some(why) => {
                let same = |issue: &IdentityIssue| issue.why.seen == why.seen && issue.why.hint == why.hint;
                match s.identity_issues.get_mut(path) {
                    Some(issue) if same(issue) => {
                        issue.why.expected.clone_from(&why.expected);
                        None
                    }
                    _ => {
                        s.identity_issues.insert(path.to_string(), IdentityIssue { since: now, why: why.clone() });
                        Some(IdentityChange::Unattributed(why.clone()))
                    }
                }
            }
        })
    }

    /// Whether any path has an identity issue (a cheap check before
    /// [`Self::note_identity`] on the hot path).
    pub fn has_identity_issues(&self) -> bool {
        self.with(|s| !s.identity_issues.is_empty())
    }

    /// Every path's identity issue, for `/api/targets`.
    pub fn identity_issues(&self) -> BTreeMap<String, IdentityIssue> {
        self.with(|s| s.identity_issues.clone())
    }

    /// Updates the counters.
    pub fn count(&self, update: impl FnOnce(&mut Counters)) {
        self.with(|s| update(&mut s.counters));
    }

    /// A copy of the counters.
    pub fn counters(&self) -> Counters {
        self.with(|s| s.counters.clone())
    }
}
