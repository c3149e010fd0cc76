//! The pure join of an [`Inventory`] into one [`Target`] per instance, with
//! Prometheus-style labels, filtering and relabeling. No I/O happens here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::SystemTime;

use serde::Serialize;

use super::model::{
    AsgHealth, AutoScalingGroup, Instance, InstanceId, InstanceState, Inventory, LifecycleState, LoadBalancer,
    Registration, TargetGroup, TargetHealth,
};
use crate::labels::{LabelSet, sanitize_label_name, without_meta};
use crate::relabel::{self, RelabelConfig};

/// EC2 tag that Auto Scaling puts on the instances it launches.
pub const ASG_NAME_TAG: &str = "aws:autoscaling:groupName";

/// Whether an instance belongs to an Auto Scaling group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A standalone instance.
    Basic,
    /// A member (or former member) of an Auto Scaling group.
    Asg,
}

impl Role {
    /// `basic` or `asg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Asg => "asg",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An instance's Auto Scaling group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AsgMembership {
    /// Group name.
    pub name: String,
    /// Lifecycle state in the group; `None` when the group no longer lists the
    /// instance and the group is known only from its `aws:autoscaling:groupName` tag.
    pub lifecycle_state: Option<LifecycleState>,
    /// Health as the group sees it; `None` as above.
    pub health_status: Option<AsgHealth>,
}

/// One way to reach an instance: a listener of a load balancer forwarding to
/// a target group in which the instance is registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Path {
    /// Load balancer name.
    pub load_balancer: String,
    /// Load balancer DNS name.
    pub load_balancer_dns_name: String,
    /// Listener port.
    pub listener_port: u16,
    /// Listener protocol (`HTTP`, `HTTPS`, ...).
    pub listener_protocol: String,
    /// Target group name.
    pub target_group: String,
    /// Target group ARN.
    pub target_group_arn: String,
    /// Weight of the target group in the listener's `ForwardConfig`, if any.
    pub weight: Option<i32>,
    /// Port the instance is registered on.
    pub target_port: u16,
    /// Target health in this target group.
    pub health: TargetHealth,
    /// AWS's reason for a non-healthy state.
    pub health_reason: Option<String>,
}

impl Path {
    /// Whether the load balancer forwards to the target on this path (its target health is `healthy`).
    pub fn is_healthy(&self) -> bool {
        self.health == TargetHealth::Healthy
    }

    /// `<load balancer DNS name>:<listener port>`.
    pub fn alb_address(&self) -> String {
        format!("{}:{}", self.load_balancer_dns_name, self.listener_port)
    }

    /// `https` for HTTPS/TLS listeners, `http` otherwise.
    pub fn scheme(&self) -> &'static str {
        scheme_of(&self.listener_protocol)
    }
}

fn scheme_of(protocol: &str) -> &'static str {
    if protocol.eq_ignore_ascii_case("HTTPS") || protocol.eq_ignore_ascii_case("TLS") { "https" } else { "http" }
}

/// Why a discovered instance is not scraped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum SkipReason {
    /// EC2 does not report it as running (its state is given).
    NotRunning(InstanceState),
    /// It lacks a tag required by `discovery.instance_tags`.
    InstanceTags,
    /// A `relabel_configs` rule dropped it.
    Relabeled,
    /// Another replica scrapes it (`sharding`).
    OtherShard,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRunning(state) => write!(f, "state {state}"),
            Self::InstanceTags => f.write_str("instance_tags"),
            Self::Relabeled => f.write_str("relabel"),
            Self::OtherShard => f.write_str("other_shard"),
        }
    }
}

/// One instance to scrape (or, with a [`SkipReason`], not to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// EC2 facts.
    pub instance: Instance,
    /// Basic or ASG.
    pub role: Role,
    /// The instance's Auto Scaling group, for role `asg`.
    pub asg: Option<AsgMembership>,
    /// Every path to the instance, sorted by listener port; the first one
    /// provides `__alb_address__` and the `__meta_elbv2_*` labels.
    pub paths: Vec<Path>,
    /// Labels before relabeling, `__meta_*` included.
    pub discovered_labels: LabelSet,
    /// Labels after relabeling, `__meta_*` removed; `None` when a rule dropped the target.
    pub labels: Option<LabelSet>,
    /// Why the target is not scraped; `None` when it is.
    pub skip: Option<SkipReason>,
}

impl Target {
    /// A running Basic instance with empty labels, skipped for `skip` (tests).
    #[cfg(test)]
    pub(crate) fn for_tests(id: impl Into<crate::ids::InstanceId>, skip: Option<SkipReason>) -> Self {
        use super::model::{Instance, InstanceState};
        Self {
            instance: Instance { state: InstanceState::Running, ..Instance::not_found(id) },
            role: Role::Basic,
            asg: None,
            paths: vec![],
            discovered_labels: LabelSet::default(),
            labels: Some(LabelSet::default()),
            skip,
        }
    }

    /// A relabeled label's value (`__address__`, `__alb_address__`, …);
    /// `None` when missing or empty.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.as_ref()?.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// The URL that scrapes it at `address`: its `__scheme__` and
    /// `__metrics_path__` (http, /metrics by default).
    pub fn scrape_url(&self, address: &str) -> String {
        let scheme = self.label("__scheme__").unwrap_or("http");
        let path = self.label("__metrics_path__").unwrap_or("/metrics");
        format!("{scheme}://{address}{path}")
    }

    /// Whether the target is offered for scraping.
    pub fn is_scraped(&self) -> bool {
        self.skip.is_none()
    }

    /// The Auto Scaling group name, if any.
    pub fn asg_name(&self) -> Option<&str> {
        self.asg.as_ref().map(|a| a.name.as_str())
    }

    /// The labels relabeling kept for the instance itself: those not starting
    /// with `__` (empty when a rule dropped the target).
    pub fn kept_labels(&self) -> LabelSet {
        self.labels
            .iter()
            .flatten()
            .filter(|(name, _)| !name.starts_with("__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The labels every series of this instance carries (stored, remote_write,
    /// `/api/sd`): `instance_id`, `role`, `asg_name` and `availability_zone`
    /// when known, plus what relabeling kept.
    pub fn instance_labels(&self) -> LabelSet {
        let mut labels = self.kept_labels();
        labels.insert("instance_id".into(), self.instance.id.to_string());
        labels.insert("role".into(), self.role.as_str().into());
        if let Some(asg) = self.asg_name() {
            labels.insert("asg_name".into(), asg.into());
        }
        if let Some(az) = &self.instance.availability_zone {
            labels.insert("availability_zone".into(), az.clone());
        }
        labels
    }
}

/// The result of one discovery refresh.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Topology {
    /// One target per instance, sorted by instance id.
    pub targets: Vec<Target>,
    /// Auto Scaling groups linked to a followed target group or holding a target.
    pub auto_scaling_groups: Vec<AutoScalingGroup>,
    /// When the refresh finished.
    pub refreshed_at: SystemTime,
}

impl Topology {
    /// Targets offered for scraping.
    pub fn scraped_targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(|t| t.is_scraped())
    }

    /// The target of an instance id.
    pub fn target(&self, instance_id: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.instance.id == instance_id)
    }

    /// Whether nothing is to be scraped, and no Auto Scaling group at desired
    /// capacity 0 (an empty fleet an operator chose) explains it.
    pub fn is_unexpectedly_empty(&self) -> bool {
        self.scraped_targets().next().is_none() && !self.auto_scaling_groups.iter().any(|g| g.desired_capacity == 0)
    }
}

/// What the join needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct JoinOptions {
    /// `scrape.metrics_path`, the default `__metrics_path__`.
    pub metrics_path: String,
    /// `discovery.instance_tags`.
    pub instance_tags: BTreeMap<String, String>,
    /// `relabel_configs`.
    pub relabel_configs: Vec<RelabelConfig>,
    /// This replica's share, and how work is split ([`shard_of`]).
    pub sharding: Option<Sharding>,
}

/// How replicas split the fleet: `index` of `total`, by [`shard_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharding {
    /// Replicas.
    pub total: u32,
    /// This one.
    pub index: u32,
    /// Whether work goes through listeners (`scrape.mode: via_alb`).
    pub by_listener: bool,
}

/// What a target is sharded by: through listeners, its listener
/// (`<load balancer DNS name>:<port>` of its first path: every request to a
/// listener reaches any of its members, so its members must share a
/// replica); directly, its instance id. Targets without a path shard by
/// instance id in either mode.
pub fn shard_key(target: &Target, by_listener: bool) -> String {
    match target.paths.first() {
        Some(path) if by_listener => path.alb_address(),
        _ => target.instance.id.to_string(),
    }
}

/// The replica of a target: Prometheus's `hashmod` of its [`shard_key`], so
/// a relabel rule `{source_labels: [__meta_ec2_instance_id], modulus: N,
/// action: hashmod}` gives the same split of direct work.
pub fn shard_of(target: &Target, total: u32, by_listener: bool) -> u32 {
    u32::try_from(relabel::hash_mod(&shard_key(target, by_listener), u64::from(total.max(1)))).unwrap_or(0)
}

/// Joins what AWS reported into one target per instance.
pub fn join(inventory: &Inventory, options: &JoinOptions) -> Topology {
    let memberships = memberships_by_instance(&inventory.auto_scaling_groups);
    let mut targets: Vec<Target> = paths_by_instance(inventory)
        .into_iter()
        .map(|(instance_id, paths)| {
            let instance = inventory
                .instances
                .get(&instance_id)
                .cloned()
                .unwrap_or_else(|| Instance::not_found(instance_id.clone()));
            let asg = memberships.get(&instance_id).cloned().or_else(|| asg_from_tag(&instance));
            build_target(instance, asg, paths, options)
        })
        .collect();
    targets.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
    Topology { auto_scaling_groups: linked_groups(inventory, &targets), targets, refreshed_at: SystemTime::now() }
}

fn paths_by_instance(inventory: &Inventory) -> BTreeMap<InstanceId, Vec<Path>> {
    let mut paths: BTreeMap<InstanceId, Vec<Path>> = BTreeMap::new();
    for lb in &inventory.load_balancers {
        for listener in &lb.listeners {
            for forward in &listener.forwards {
                let Some(group) = inventory.target_groups.get(&forward.target_group_arn) else { continue };
                for registration in &group.registrations {
                    let path = make_path(lb, listener.port, &listener.protocol, group, forward.weight, registration);
                    paths.entry(registration.instance_id.clone()).or_default().push(path);
                }
            }
        }
    }
    for list in paths.values_mut() {
        list.sort_by(|a, b| {
            (a.listener_port, &a.load_balancer, &a.target_group).cmp(&(
                b.listener_port,
                &b.load_balancer,
                &b.target_group,
            ))
        });
        list.dedup();
    }
    paths
}

fn make_path(
    lb: &LoadBalancer,
    listener_port: u16,
    listener_protocol: &str,
    group: &TargetGroup,
    weight: Option<i32>,
    registration: &Registration,
) -> Path {
    Path {
        load_balancer: lb.name.clone(),
        load_balancer_dns_name: lb.dns_name.clone(),
        listener_port,
        listener_protocol: listener_protocol.to_string(),
        target_group: group.name.clone(),
        target_group_arn: group.arn.clone(),
        weight,
        target_port: registration.port,
        health: registration.health.clone(),
        health_reason: registration.health_reason.clone(),
    }
}

fn memberships_by_instance(groups: &[AutoScalingGroup]) -> BTreeMap<InstanceId, AsgMembership> {
    groups
        .iter()
        .flat_map(|group| {
            group.members.iter().map(|member| {
                let membership = AsgMembership {
                    name: group.name.clone(),
                    lifecycle_state: Some(member.lifecycle_state.clone()),
                    health_status: Some(member.health_status.clone()),
                };
                (member.instance_id.clone(), membership)
            })
        })
        .collect()
}

/// A terminated member leaves its group's member list but keeps the tag.
fn asg_from_tag(instance: &Instance) -> Option<AsgMembership> {
    let name = instance.tags.get(ASG_NAME_TAG)?;
    Some(AsgMembership { name: name.clone(), lifecycle_state: None, health_status: None })
}

fn linked_groups(inventory: &Inventory, targets: &[Target]) -> Vec<AutoScalingGroup> {
    let followed: BTreeSet<&str> = inventory.target_groups.keys().map(String::as_str).collect();
    let holding: BTreeSet<&str> = targets.iter().filter_map(Target::asg_name).collect();
    inventory
        .auto_scaling_groups
        .iter()
        .filter(|g| {
            holding.contains(g.name.as_str()) || g.target_group_arns.iter().any(|arn| followed.contains(arn.as_str()))
        })
        .cloned()
        .collect()
}

fn build_target(instance: Instance, asg: Option<AsgMembership>, paths: Vec<Path>, options: &JoinOptions) -> Target {
    let role = if asg.is_some() { Role::Asg } else { Role::Basic };
    let discovered_labels = discovered_labels(&instance, role, asg.as_ref(), &paths, &options.metrics_path);
    let labels = relabel::process(&discovered_labels, &options.relabel_configs).map(|l| without_meta(&l));
    let skip = if !instance.is_running() {
        Some(SkipReason::NotRunning(instance.state.clone()))
    } else if !has_required_tags(&instance, &options.instance_tags) {
        Some(SkipReason::InstanceTags)
    } else if labels.is_none() {
        Some(SkipReason::Relabeled)
    } else {
        None
    };
    let mut target = Target { instance, role, asg, paths, discovered_labels, labels, skip };
    if let Some(sharding) = options.sharding.filter(|s| s.total > 1)
        && target.skip.is_none()
        && shard_of(&target, sharding.total, sharding.by_listener) != sharding.index
    {
        target.skip = Some(SkipReason::OtherShard);
    }
    target
}

fn has_required_tags(instance: &Instance, required: &BTreeMap<String, String>) -> bool {
    required.iter().all(|(key, value)| instance.tags.get(key) == Some(value))
}

fn discovered_labels(
    instance: &Instance,
    role: Role,
    asg: Option<&AsgMembership>,
    paths: &[Path],
    metrics_path: &str,
) -> LabelSet {
    let mut labels = LabelSet::new();
    let mut put = |name: &str, value: &str| {
        labels.insert(name.to_string(), value.to_string());
    };
    let first = paths.first();
    if let (Some(ip), Some(path)) = (&instance.private_ip, first) {
        put("__address__", &format!("{ip}:{}", path.target_port));
    }
    if let Some(path) = first {
        put("__alb_address__", &path.alb_address());
        put("__scheme__", path.scheme());
    }
    put("__metrics_path__", metrics_path);

    put("__meta_ec2_instance_id", instance.id.as_str());
    put("__meta_ec2_instance_state", instance.state.as_str());
    for (name, value) in [
        ("__meta_ec2_private_ip", &instance.private_ip),
        ("__meta_ec2_private_dns_name", &instance.private_dns_name),
        ("__meta_ec2_availability_zone", &instance.availability_zone),
        ("__meta_ec2_instance_type", &instance.instance_type),
        ("__meta_ec2_launch_time", &instance.launch_time),
        ("__meta_ec2_ami", &instance.image_id),
        ("__meta_ec2_vpc_id", &instance.vpc_id),
        ("__meta_ec2_subnet_id", &instance.subnet_id),
    ] {
        put(name, value.as_deref().unwrap_or(""));
    }
    for (key, value) in &instance.tags {
        put(&format!("__meta_ec2_tag_{}", sanitize_label_name(key)), value);
    }

    if let Some(path) = first {
        put("__meta_elbv2_load_balancer_name", &path.load_balancer);
        put("__meta_elbv2_load_balancer_dns_name", &path.load_balancer_dns_name);
        put("__meta_elbv2_listener_port", &path.listener_port.to_string());
        put("__meta_elbv2_listener_protocol", &path.listener_protocol);
        put("__meta_elbv2_target_group_name", &path.target_group);
        put("__meta_elbv2_target_group_arn", &path.target_group_arn);
        put("__meta_elbv2_target_port", &path.target_port.to_string());
        put("__meta_elbv2_target_health", path.health.as_str());
    }
    // Prometheus writes lists comma-wrapped, so `.*,9101,.*` matches one element.
    let ports: BTreeSet<u16> = paths.iter().map(|p| p.listener_port).collect();
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    put("__meta_elbv2_listener_ports", &format!(",{},", ports.join(",")));

    put("__meta_autoscaling_group_name", asg.map_or("", |a| a.name.as_str()));
    put(
        "__meta_autoscaling_lifecycle_state",
        asg.and_then(|a| a.lifecycle_state.as_ref()).map_or("", LifecycleState::as_str),
    );
    put("__meta_autoscaling_health_status", asg.and_then(|a| a.health_status.as_ref()).map_or("", AsgHealth::as_str));
    put("__meta_fleetscrape_role", role.as_str());
    labels
}

#[cfg(test)]
mod tests;
