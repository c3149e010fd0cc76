//! ELBv2: load balancers → listeners → target groups → target health.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_elasticloadbalancingv2::types::{self as elb, ActionTypeEnum, LoadBalancerTypeEnum, TargetTypeEnum};
use futures_util::{StreamExt, TryStreamExt, stream};
use tracing::{debug, warn};

use super::Error;
use super::aws::{Clients, api_error};
use super::model::{Forward, Listener, LoadBalancer, Registration, TargetGroup, TargetHealth};

/// Largest page DescribeLoadBalancers / DescribeListeners / DescribeTargetGroups accept.
const PAGE_SIZE: i32 = 400;
/// Requests in flight at once for per-load-balancer and per-target-group calls.
const CONCURRENCY: usize = 8;

/// Which load balancers and listeners to follow.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Names or ARNs; empty means all.
    pub load_balancers: Vec<String>,
    /// Listener ports; empty means all.
    pub listener_ports: Vec<u16>,
}

/// What the filters left out, for explaining an empty discovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftOut {
    /// Load balancers in the region (ALB, NLB), followed or not.
    pub load_balancers_in_region: usize,
    /// Ports of forwarding listeners on followed load balancers that
    /// `listener_ports` left out.
    pub listener_ports: BTreeSet<u16>,
}

/// Reads the followed load balancers with their forwarding listeners, and the
/// target groups those listeners forward to with their registered instances;
/// beside them, what the filters left out.
pub(super) async fn load_balancers_and_target_groups(
    clients: &Clients,
    filters: &Filters,
) -> Result<(Vec<LoadBalancer>, BTreeMap<String, TargetGroup>, LeftOut), Error> {
    let (wanted, in_region) = describe_load_balancers(clients, filters).await?;
    let with_ports = concurrently(wanted, |lb| with_listeners(clients, lb, filters)).await?;
    let mut left_out = LeftOut { load_balancers_in_region: in_region, ..LeftOut::default() };
    let load_balancers: Vec<LoadBalancer> = with_ports
        .into_iter()
        .map(|(lb, ports)| {
            left_out.listener_ports.extend(ports);
            lb
        })
        .collect();

    let forwarded: BTreeSet<&str> = load_balancers
        .iter()
        .flat_map(|lb| lb.listeners.iter().flat_map(|l| l.forwards.iter().map(|f| f.target_group_arn.as_str())))
        .collect();
    let lb_arns: Vec<String> = load_balancers.iter().map(|lb| lb.arn.clone()).collect();
    let mut groups: BTreeMap<String, elb::TargetGroup> = BTreeMap::new();
    for group in concurrently(lb_arns, |arn| describe_target_groups(clients, arn)).await? {
        let arn = group.target_group_arn().unwrap_or_default().to_string();
        if forwarded.contains(arn.as_str()) && is_instance_group(&group) {
            groups.entry(arn).or_insert(group);
        }
    }
    let target_groups = concurrently(groups.into_values(), |group| with_registrations(clients, group)).await?;
    Ok((load_balancers, target_groups.into_iter().map(|g| (g.arn.clone(), g)).collect(), left_out))
}

/// Runs `call` on every item, [`CONCURRENCY`] requests at a time, keeping the
/// items' order and flattening what each call returns (an `Option` or a `Vec`).
async fn concurrently<I, F, Fut, C>(items: I, call: F) -> Result<Vec<C::Item>, Error>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = Result<C, Error>>,
    C: IntoIterator,
{
    let results: Vec<C> = stream::iter(items).map(call).buffered(CONCURRENCY).try_collect().await?;
    Ok(results.into_iter().flatten().collect())
}

/// The followed load balancers, and how many the region has.
async fn describe_load_balancers(
    clients: &Clients,
    filters: &Filters,
) -> Result<(Vec<elb::LoadBalancer>, usize), Error> {
    const OP: &str = "DescribeLoadBalancers";
    let mut pages = clients.elbv2.describe_load_balancers().page_size(PAGE_SIZE).into_paginator().send();
    let mut found = Vec::new();
    while let Some(page) = pages.next().await {
        clients.calls.record(OP);
        found.extend(page.map_err(|e| api_error(OP, e))?.load_balancers.unwrap_or_default());
    }
    let in_region = found.len();
    let wanted: Vec<elb::LoadBalancer> = found.into_iter().filter(|lb| is_followed(lb, filters)).collect();
    for missing in filters.load_balancers.iter().filter(|name| !wanted.iter().any(|lb| names_lb(lb, name))) {
        warn!(load_balancer = %missing, "configured load balancer not found in this region");
    }
    Ok((wanted, in_region))
}

fn names_lb(lb: &elb::LoadBalancer, name_or_arn: &str) -> bool {
    lb.load_balancer_name() == Some(name_or_arn) || lb.load_balancer_arn() == Some(name_or_arn)
}

fn is_followed(lb: &elb::LoadBalancer, filters: &Filters) -> bool {
    // Gateway load balancers have no listener ports to scrape through.
    let scrapable = matches!(lb.r#type(), Some(LoadBalancerTypeEnum::Application | LoadBalancerTypeEnum::Network));
    scrapable && (filters.load_balancers.is_empty() || filters.load_balancers.iter().any(|n| names_lb(lb, n)))
}

/// The load balancer with its followed forwarding listeners, and the ports of
/// those `listener_ports` left out; `None` if it vanished meanwhile.
async fn with_listeners(
    clients: &Clients,
    lb: elb::LoadBalancer,
    filters: &Filters,
) -> Result<Option<(LoadBalancer, Vec<u16>)>, Error> {
    const OP: &str = "DescribeListeners";
    let arn = lb.load_balancer_arn().unwrap_or_default().to_string();
    let mut pages =
        clients.elbv2.describe_listeners().load_balancer_arn(&arn).page_size(PAGE_SIZE).into_paginator().send();
    let mut listeners = Vec::new();
    while let Some(page) = pages.next().await {
        clients.calls.record(OP);
        match page {
            Ok(page) => listeners.extend(page.listeners.unwrap_or_default()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_load_balancer_not_found_exception()) => {
                debug!(load_balancer = %arn, "load balancer deleted during discovery");
                return Ok(None);
            }
            Err(e) => return Err(api_error(OP, e)),
        }
    }
    let (mut listeners, others): (Vec<Listener>, Vec<Listener>) = listeners
        .iter()
        .filter_map(forwarding_listener)
        .partition(|l| filters.listener_ports.is_empty() || filters.listener_ports.contains(&l.port));
    listeners.sort_by_key(|l| l.port);
    let lb = LoadBalancer {
        name: lb.load_balancer_name().unwrap_or_default().to_string(),
        dns_name: lb.dns_name().unwrap_or_default().to_string(),
        scheme: lb.scheme().map(|s| s.as_str().to_string()).unwrap_or_default(),
        arn,
        listeners,
    };
    Ok(Some((lb, others.iter().map(|l| l.port).collect())))
}

/// A listener whose default actions include `forward`, in either form: a
/// plain `TargetGroupArn`, or a `ForwardConfig` with weighted target groups.
fn forwarding_listener(listener: &elb::Listener) -> Option<Listener> {
    let action = listener.default_actions().iter().find(|a| a.r#type() == Some(&ActionTypeEnum::Forward))?;
    let forwards: Vec<Forward> = match action.forward_config().filter(|c| !c.target_groups().is_empty()) {
        Some(config) => config
            .target_groups()
            .iter()
            .filter_map(|t| Some(Forward { target_group_arn: t.target_group_arn()?.to_string(), weight: t.weight() }))
            .collect(),
        None => vec![Forward { target_group_arn: action.target_group_arn()?.to_string(), weight: None }],
    };
    Some(Listener {
        arn: listener.listener_arn().unwrap_or_default().to_string(),
        port: u16::try_from(listener.port()?).ok()?,
        protocol: listener.protocol().map(|p| p.as_str().to_string()).unwrap_or_default(),
        forwards,
    })
}

async fn describe_target_groups(clients: &Clients, lb_arn: String) -> Result<Vec<elb::TargetGroup>, Error> {
    const OP: &str = "DescribeTargetGroups";
    let request = clients.elbv2.describe_target_groups().load_balancer_arn(&lb_arn).page_size(PAGE_SIZE);
    let mut pages = request.into_paginator().send();
    let mut groups = Vec::new();
    while let Some(page) = pages.next().await {
        clients.calls.record(OP);
        match page {
            Ok(page) => groups.extend(page.target_groups.unwrap_or_default()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_load_balancer_not_found_exception()) => {
                return Ok(vec![]);
            }
            Err(e) => return Err(api_error(OP, e)),
        }
    }
    Ok(groups)
}

fn is_instance_group(group: &elb::TargetGroup) -> bool {
    match group.target_type() {
        Some(TargetTypeEnum::Instance) | None => true,
        Some(other) => {
            warn!(
                target_group = group.target_group_name().unwrap_or_default(),
                target_type = other.as_str(),
                "target group skipped: only target type `instance` is supported"
            );
            false
        }
    }
}

/// The target group with its registered targets; `None` if it vanished meanwhile.
async fn with_registrations(clients: &Clients, group: elb::TargetGroup) -> Result<Option<TargetGroup>, Error> {
    const OP: &str = "DescribeTargetHealth";
    let arn = group.target_group_arn().unwrap_or_default().to_string();
    clients.calls.record(OP);
    let output = match clients.elbv2.describe_target_health().target_group_arn(&arn).send().await {
        Ok(output) => output,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_target_group_not_found_exception()) => {
            debug!(target_group = %arn, "target group deleted during discovery");
            return Ok(None);
        }
        Err(e) => return Err(api_error(OP, e)),
    };
    let default_port = group.port().and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
    let registrations =
        output.target_health_descriptions().iter().filter_map(|d| registration(d, default_port)).collect();
    Ok(Some(TargetGroup {
        name: group.target_group_name().unwrap_or_default().to_string(),
        protocol: group.protocol().map(|p| p.as_str().to_string()).unwrap_or_default(),
        arn,
        registrations,
    }))
}

fn registration(description: &elb::TargetHealthDescription, default_port: u16) -> Option<Registration> {
    let target = description.target()?;
    let health = description.target_health();
    Some(Registration {
        instance_id: target.id()?.into(),
        port: target.port().and_then(|p| u16::try_from(p).ok()).unwrap_or(default_port),
        health: TargetHealth::from_aws(health.and_then(|h| h.state()).map_or("unknown", |s| s.as_str())),
        health_reason: health.and_then(|h| h.reason()).map(|r| r.as_str().to_string()),
    })
}
