//! Auto Scaling: every group of the region with its target groups and members.

use super::Error;
use super::aws::{Clients, api_error};
use super::model::{AsgMember, AutoScalingGroup};

/// Largest page DescribeAutoScalingGroups accepts.
const PAGE_SIZE: i32 = 100;

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
                    instance_id: i.instance_id()?.to_string(),
                    lifecycle_state: i.lifecycle_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                    health_status: i.health_status().unwrap_or_default().to_string(),
                })
            })
            .collect(),
    }
}
