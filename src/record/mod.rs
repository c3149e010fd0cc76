//! What a scrape and a discovery refresh produce: plain owned records,
//! grouped in a [`Batch`] that the outputs (SQLite, remote_write) take as it
//! is, and the reasons an interval stored nothing ([`failure`]). A leaf:
//! scrape produces these, store and remote_write consume them, and none of
//! the three imports another.

pub mod failure;
pub mod route;

use std::sync::Arc;

use serde::Serialize;

pub use crate::ids::InstanceId;
pub use failure::{FailureReason, root_cause};
pub use route::{Route, TargetGroups};

/// One sample of a scrape, attributed to an instance: what tests, benches
/// and [`ScrapeRecord::new`] build records from.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRecord {
    /// Metric name.
    pub metric: Arc<str>,
    /// Scraped labels (after the `exported_` rule) as a JSON object, keys sorted.
    pub labels: Arc<str>,
    /// Value.
    pub value: f64,
}

/// A sample of a [`ScrapeRecord`], borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRef<'a> {
    /// Metric name.
    pub metric: &'a Arc<str>,
    /// Scraped labels as a JSON object, keys sorted.
    pub labels: &'a Arc<str>,
    /// Value.
    pub value: f64,
}

/// The series of a scrape in payload order, with the metric types of their
/// families. The scraper's conversion hands the same `Arc<SeriesList>` over
/// scrape after scrape while an instance's payload lists the same series in
/// the same order, so a consumer tells an unchanged layout by one pointer
/// comparison, and a sample costs a value, not two reference counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesList {
    /// Metric name of each series.
    pub metrics: Vec<Arc<str>>,
    /// Labels of each series (JSON object, keys sorted), parallel to `metrics`.
    pub labels: Vec<Arc<str>>,
    /// Metric types by name, sorted, for the `metrics` table (`counter`, `gauge`, ...).
    pub types: Vec<(Arc<str>, &'static str)>,
}

impl SeriesList {
    /// Series held.
    pub fn len(&self) -> usize {
        self.metrics.len()
    }

    /// Whether it holds no series.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }
}

/// Everything one scrape of one instance produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeRecord {
    /// The instance the payload was attributed to.
    pub instance_id: InstanceId,
    /// Scrape time, epoch seconds.
    pub time: f64,
    /// The series, shared with other scrapes of the same layout.
    pub series: Arc<SeriesList>,
    /// One value per series, in the same order.
    pub values: Vec<f64>,
}

impl ScrapeRecord {
    /// A record of `samples` (payload order) and the families' `types`.
    pub fn new(
        instance_id: InstanceId,
        time: f64,
        samples: Vec<SampleRecord>,
        mut types: Vec<(Arc<str>, &'static str)>,
    ) -> Self {
        types.sort();
        types.dedup();
        let mut series =
            SeriesList { metrics: Vec::with_capacity(samples.len()), labels: Vec::with_capacity(samples.len()), types };
        let mut values = Vec::with_capacity(samples.len());
        for sample in samples {
            series.metrics.push(sample.metric);
            series.labels.push(sample.labels);
            values.push(sample.value);
        }
        Self { instance_id, time, series: Arc::new(series), values }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether it holds no sample.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The samples in payload order.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = SampleRef<'_>> + '_ {
        self.series
            .metrics
            .iter()
            .zip(&self.series.labels)
            .zip(&self.values)
            .map(|((metric, labels), &value)| SampleRef { metric, labels, value })
    }

    /// Metric types by name, sorted.
    pub fn types(&self) -> &[(Arc<str>, &'static str)] {
        &self.series.types
    }
}

/// Whether one instance answered in one interval, and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusRecord {
    /// Epoch seconds.
    pub time: f64,
    /// Instance.
    pub instance_id: InstanceId,
    /// Whether a payload was stored.
    pub up: bool,
    /// Why not.
    pub reason: Option<FailureReason>,
    /// The last error seen.
    pub error: Option<String>,
    /// Time the scrape (or the via-ALB round) took.
    pub duration_seconds: f64,
    /// Samples stored.
    pub samples: u32,
    /// How it was reached (stored as `direct <address>` or `via_alb <lb>:<port> <target groups>`).
    pub path: Route,
}

/// One via-ALB round of one target group.
#[derive(Debug, Clone, PartialEq)]
pub struct AlbRoundRecord {
    /// Epoch seconds the round started.
    pub time: f64,
    /// Target group name.
    pub target_group: String,
    /// Running, kept members behind the listener.
    pub members: u32,
    /// Members the round had to reach (its job's own, not yet stored).
    pub wanted: u32,
    /// Requests sent.
    pub requests: u32,
    /// Members whose payload arrived (wanted or not).
    pub reached: u32,
    /// Wanted members reached: `reached_wanted / wanted` is the round's coverage.
    pub reached_wanted: u32,
    /// Payloads that could not be attributed.
    pub unattributed: u32,
    /// Failed requests.
    pub errors: u32,
    /// Requests still in flight at the round's deadline.
    pub abandoned: u32,
    /// The most requests the round could send.
    pub budget: u32,
    /// How long the round took.
    pub duration_seconds: f64,
}

/// An instance as discovery last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// Instance id.
    pub instance_id: InstanceId,
    /// `basic` or `asg`.
    pub role: String,
    /// Auto Scaling group.
    pub asg_name: Option<String>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Private IPv4.
    pub private_ip: Option<String>,
    /// EC2 state.
    pub state: String,
    /// Target labels kept by relabeling, as a JSON object.
    pub labels: String,
    /// When discovery saw it, epoch seconds.
    pub seen: f64,
}

/// Kind of a membership event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// EC2 launched the instance (first seen, recently launched).
    Launched,
    /// It became a scraped member of a target group.
    Joined,
    /// It stopped being a scraped member.
    Left,
    /// EC2 reports it terminated.
    Terminated,
}

impl EventKind {
    /// The name stored in `events.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Launched => "launched",
            Self::Joined => "joined",
            Self::Left => "left",
            Self::Terminated => "terminated",
        }
    }
}

/// A membership change seen by discovery.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Epoch seconds.
    pub time: f64,
    /// Instance.
    pub instance_id: InstanceId,
    /// Its Auto Scaling group.
    pub asg_name: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// Free text, e.g. the target group.
    pub detail: String,
}

/// A part of the daemon whose state is kept in `component_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// Discovery refreshes.
    Discovery,
    /// The store's flushes.
    Store,
}

impl Component {
    /// The name stored in `component_status.component`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discovery => "discovery",
            Self::Store => "store",
        }
    }
}

/// One attempt of a component: a `component_status` row.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentRecord {
    /// Which part.
    pub component: Component,
    /// Epoch seconds of the attempt.
    pub checked: f64,
    /// Whether it succeeded.
    pub ok: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// An Auto Scaling group at one discovery refresh (`asg_membership`).
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipRecord {
    /// When discovery saw it.
    pub time: f64,
    /// Group name.
    pub asg_name: String,
    /// InService members.
    pub members: u32,
    /// Desired capacity.
    pub desired_capacity: i32,
    /// Minimum size.
    pub min_size: i32,
    /// Maximum size.
    pub max_size: i32,
    /// The target-tracking policy's metric and target value, if it has one.
    pub target: Option<(String, f64)>,
}

/// A change in why payloads through a path are not attributed
/// (`identity_issues`): recorded when it changes, not per scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityIssueRecord {
    /// Epoch seconds of the change.
    pub time: f64,
    /// The scrape path: a listener's target groups (`tg-a` or `tg-a+tg-b`),
    /// or the instance id of an instance scraped directly.
    pub path: String,
    /// Where the identity was read (`node_uname_info{nodename}`); `None`
    /// when the payload carried none, or once resolved.
    pub source: Option<String>,
    /// The identity seen.
    pub value: Option<String>,
    /// The members expected, comma separated, as the source names them.
    pub expected: String,
    /// `add_an_identity`, `not_an_ec2_host_name`, `another_instance`,
    /// `unknown_instance`, or `resolved`.
    pub hint: &'static str,
    /// The whole explanation, as logged.
    pub detail: String,
}

/// One reading of one of fleetscrape's own counters (`self_metrics`):
/// alert rules read only the database, so what they watch of the daemon
/// itself is written there once a minute.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfMetricRecord {
    /// Epoch seconds of the reading.
    pub time: f64,
    /// The counter's name on `/metrics` (summed over its labels).
    pub name: &'static str,
    /// Its value since fleetscrape started.
    pub value: f64,
}

/// Records written together in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Instances to insert or update.
    pub instances: Vec<InstanceRecord>,
    /// Scrapes.
    pub scrapes: Vec<ScrapeRecord>,
    /// Scrape status rows.
    pub statuses: Vec<StatusRecord>,
    /// Via-ALB rounds.
    pub rounds: Vec<AlbRoundRecord>,
    /// Auto Scaling groups' members and capacity.
    pub memberships: Vec<MembershipRecord>,
    /// Membership events.
    pub events: Vec<EventRecord>,
    /// Component states (`component_status`).
    pub components: Vec<ComponentRecord>,
    /// Changes of attribution problems (`identity_issues`).
    pub identity_issues: Vec<IdentityIssueRecord>,
    /// fleetscrape's own counters (`self_metrics`).
    pub self_metrics: Vec<SelfMetricRecord>,
}

impl Batch {
    /// Samples held.
    pub fn sample_count(&self) -> usize {
        self.scrapes.iter().map(ScrapeRecord::len).sum()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
            && self.scrapes.is_empty()
            && self.statuses.is_empty()
            && self.rounds.is_empty()
            && self.memberships.is_empty()
            && self.events.is_empty()
            && self.components.is_empty()
            && self.identity_issues.is_empty()
            && self.self_metrics.is_empty()
    }

    /// Moves everything from `other` into this batch.
    pub fn append(&mut self, other: Batch) {
        self.instances.extend(other.instances);
        self.scrapes.extend(other.scrapes);
        self.statuses.extend(other.statuses);
        self.rounds.extend(other.rounds);
        self.memberships.extend(other.memberships);
        self.events.extend(other.events);
        self.components.extend(other.components);
        self.identity_issues.extend(other.identity_issues);
        self.self_metrics.extend(other.self_metrics);
    }
}
