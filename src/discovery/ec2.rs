//! EC2: state, addresses, placement and tags of the instances discovery found.

use std::collections::BTreeMap;

use aws_sdk_ec2::primitives::DateTimeFormat;
use aws_sdk_ec2::types::Filter;

use super::Error;
use super::aws::{Clients, api_error};
use super::model::{Instance, InstanceId, InstanceState};

/// Instance ids per request. Ids go in an `instance-id` filter rather than
/// `InstanceIds`, because an unknown id in `InstanceIds` fails the whole call
/// (`InvalidInstanceID.NotFound`), and a target group can still list an
/// instance that EC2 has forgotten.
const IDS_PER_REQUEST: usize = 200;
/// Largest page DescribeInstances accepts.
const PAGE_SIZE: i32 = 1000;

/// Reads the EC2 facts of `ids`, in batches; ids EC2 does not know are absent.
pub(super) async fn instances(clients: &Clients, ids: &[String]) -> Result<BTreeMap<InstanceId, Instance>, Error> {
    const OP: &str = "DescribeInstances";
    let mut found = BTreeMap::new();
    for batch in ids.chunks(IDS_PER_REQUEST) {
        let filter = Filter::builder().name("instance-id").set_values(Some(batch.to_vec())).build();
        let mut pages = clients.ec2.describe_instances().filters(filter).into_paginator().page_size(PAGE_SIZE).send();
        while let Some(page) = pages.next().await {
            clients.calls.record(OP);
            let page = page.map_err(|e| api_error(OP, e))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let instance = convert(instance);
                found.insert(instance.id.clone(), instance);
            }
        }
    }
    Ok(found)
}

fn convert(instance: &aws_sdk_ec2::types::Instance) -> Instance {
    let owned = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    Instance {
        id: instance.instance_id().unwrap_or_default().into(),
        state: InstanceState::from_aws(instance.state().and_then(|s| s.name()).map_or("unknown", |n| n.as_str())),
        private_ip: owned(instance.private_ip_address()),
        private_dns_name: owned(instance.private_dns_name()),
        availability_zone: owned(instance.placement().and_then(|p| p.availability_zone())),
        instance_type: instance.instance_type().map(|t| t.as_str().to_string()),
        launch_time: instance.launch_time().and_then(|t| t.fmt(DateTimeFormat::DateTime).ok()),
        image_id: owned(instance.image_id()),
        vpc_id: owned(instance.vpc_id()),
        subnet_id: owned(instance.subnet_id()),
        tags: instance
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
            .collect(),
    }
}
