//! Auto Scaling: every group of the region with its target groups, members
//! and target-tracking policy.

use std::collections::BTreeMap;

use super::Error;
use super::aws::{Clients, api_error};
use super::model::{AsgHealth, AsgMember, AutoScalingGroup, LifecycleState, TargetTracking};

/// Largest page DescribeAutoScalingGroups accepts.
const PAGE_SIZE: i32 = 100;
/// Largest page DescribePolicies accepts.
const POLICY_PAGE_SIZE: i32 = 100;

/// Reads every Auto Scaling group of the region.
///
/// All groups are read, not only those linked to a followed target group:
/// an instance is `asg` whenever it belongs to a group, and a region's groups
/// fit in few pages.
pub(super) async fn groups(clients: &Clients) -> Result<Vec<AutoScalingGroup>, Error> {
    const OP: &str = "DescribeAutoScalingGroups";
    let mut pages = clients.autoscaling.describe_auto_scaling_groups().into_paginator().page_size(PAGE_SIZE).send();
    let mut groups = Vec::new();
    while let Some(page) = pages.next().await {
        clients.calls.record(OP);
        let page = page.map_err(|e| api_error(OP, e))?;
        groups.extend(page.auto_scaling_groups().iter().map(convert));
    }
    Ok(groups)
}

/// Reads the region's target-tracking policies, by group name (the first
/// policy by name when a group has several, as the dashboards show one target).
pub(super) async fn target_tracking(clients: &Clients) -> Result<BTreeMap<String, TargetTracking>, Error> {
    const OP: &str = "DescribePolicies";
    let mut pages = clients
        .autoscaling
        .describe_policies()
        .policy_types("TargetTrackingScaling")
        .into_paginator()
        .page_size(POLICY_PAGE_SIZE)
        .send();
    let mut by_group: BTreeMap<String, TargetTracking> = BTreeMap::new();
    while let Some(page) = pages.next().await {
        clients.calls.record(OP);
        let page = page.map_err(|e| api_error(OP, e))?;
        for policy in page.scaling_policies() {
            let (Some(group), Some(config)) =
                (policy.auto_scaling_group_name(), policy.target_tracking_configuration())
            else {
                continue;
            };
            let Some(target_value) = config.target_value() else { continue };
            let metric = config
                .predefined_metric_specification()
                .and_then(|m| m.predefined_metric_type())
                .map_or_else(|| "custom".to_string(), |m| m.as_str().to_string());
            let tracking = TargetTracking {
                policy_name: policy.policy_name().unwrap_or_default().to_string(),
                metric,
                target_value,
            };
            let first = by_group.get(group).is_none_or(|kept| tracking.policy_name < kept.policy_name);
            if first {
                by_group.insert(group.to_string(), tracking);
            }
        }
    }
    Ok(by_group)
}

fn convert(group: &aws_sdk_autoscaling::types::AutoScalingGroup) -> AutoScalingGroup {
    AutoScalingGroup {
        name: group.auto_scaling_group_name().unwrap_or_default().to_string(),
        target_group_arns: group.target_group_arns().to_vec(),
        desired_capacity: group.desired_capacity().unwrap_or_default(),
        min_size: group.min_size().unwrap_or_default(),
        max_size: group.max_size().unwrap_or_default(),
        members: group
            .instances()
            .iter()
            .filter_map(|i| {
                Some(AsgMember {
                    instance_id: i.instance_id()?.into(),
                    lifecycle_state: LifecycleState::from_aws(i.lifecycle_state().map_or("", |s| s.as_str())),
                    health_status: AsgHealth::from_aws(i.health_status().unwrap_or_default()),
                })
            })
            .collect(),
        target_tracking: None,
    }
}
