//! What discovery learns from AWS, in our own types: no SDK type leaves the
//! leaf modules (`elbv2`, `autoscaling`, `ec2`), so the join in
//! [`super::topology`] is plain data in, plain data out.

use std::collections::BTreeMap;

use serde::Serialize;

/// An ALB (or NLB) and the listeners fleetscrape follows on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadBalancer {
    /// Name, e.g. `backend-alb`.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// DNS name, e.g. `internal-backend-alb-123.ap-northeast-2.elb.amazonaws.com`.
    pub dns_name: String,
    /// `internal` or `internet-facing`.
    pub scheme: String,
    /// Listeners whose default action forwards to target groups.
    pub listeners: Vec<Listener>,
}

/// A listener whose default action forwards to one or more target groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    /// Listener ARN.
    pub arn: String,
    /// Port the load balancer listens on.
    pub port: u16,
    /// `HTTP`, `HTTPS`, `TCP`, `TLS`, ...
    pub protocol: String,
    /// Target groups the default action forwards to, in the order AWS lists them.
    pub forwards: Vec<Forward>,
}

/// One target group of a listener's `forward` action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forward {
    /// Target group ARN.
    pub target_group_arn: String,
    /// Weight in a `ForwardConfig`; `None` for a plain `TargetGroupArn` forward.
    pub weight: Option<i32>,
}

/// A target group and its registered targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetGroup {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// Protocol the load balancer uses towards targets (`HTTP`, `HTTPS`, ...).
    pub protocol: String,
    /// Registered instance targets with their health.
    pub registrations: Vec<Registration>,
}

/// One instance registered in a target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration {
    /// EC2 instance id.
    pub instance_id: String,
    /// Port the target is registered on (the exporter's port).
    pub port: u16,
    /// `healthy`, `unhealthy`, `initial`, `draining`, `unused`, `unavailable`.
    pub health: String,
    /// AWS's reason code for a health state other than healthy.
    pub health_reason: Option<String>,
}

/// An Auto Scaling group and its current members.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoScalingGroup {
    /// Group name.
    pub name: String,
    /// Target groups the group registers its instances in.
    pub target_group_arns: Vec<String>,
    /// Desired capacity.
    pub desired_capacity: i32,
    /// Minimum size.
    pub min_size: i32,
    /// Maximum size.
    pub max_size: i32,
    /// Current members.
    pub members: Vec<AsgMember>,
    /// The group's target-tracking policy, when it has one (the first by
    /// name when it has several); `None` also when the policies could not be
    /// read (see [`Inventory::policies_error`]).
    pub target_tracking: Option<TargetTracking>,
}

/// A target-tracking scaling policy: the metric it holds at a target value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetTracking {
    /// Policy name.
    pub policy_name: String,
    /// The predefined metric (`ASGAverageCPUUtilization`, ...), or
    /// `custom` for a customized metric specification.
    pub metric: String,
    /// The value the policy keeps the metric at (50 for "50 % average CPU").
    pub target_value: f64,
}

/// An instance as the Auto Scaling group sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AsgMember {
    /// EC2 instance id.
    pub instance_id: String,
    /// `Pending`, `InService`, `Terminating`, ...
    pub lifecycle_state: String,
    /// `Healthy` or `Unhealthy`.
    pub health_status: String,
}

impl AsgMember {
    /// Whether the group counts it as serving (`InService`).
    pub fn is_in_service(&self) -> bool {
        self.lifecycle_state == LIFECYCLE_IN_SERVICE
    }
}

/// An EC2 instance as `DescribeInstances` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// Instance id.
    pub id: String,
    /// `pending`, `running`, `stopping`, `stopped`, `shutting-down`, `terminated`.
    pub state: String,
    /// Primary private IPv4 address.
    pub private_ip: Option<String>,
    /// Private DNS name, e.g. `ip-10-0-1-23.ap-northeast-2.compute.internal`.
    pub private_dns_name: Option<String>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Instance type, e.g. `t3.micro`.
    pub instance_type: Option<String>,
    /// Launch time, RFC 3339.
    pub launch_time: Option<String>,
    /// AMI id.
    pub image_id: Option<String>,
    /// VPC id.
    pub vpc_id: Option<String>,
    /// Subnet id.
    pub subnet_id: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// The EC2 state of a registered instance that `DescribeInstances` no longer returns.
pub const STATE_NOT_FOUND: &str = "not_found";

/// The only EC2 state in which an instance is scraped.
pub const STATE_RUNNING: &str = "running";

/// The EC2 state of a terminated instance (a scale-in's end).
pub const STATE_TERMINATED: &str = "terminated";

/// The target health in which a load balancer forwards to a target.
pub const TARGET_HEALTHY: &str = "healthy";

/// The Auto Scaling lifecycle state of a member serving traffic.
pub const LIFECYCLE_IN_SERVICE: &str = "InService";

impl Instance {
    /// A placeholder for an instance id EC2 does not know (any more).
    pub fn not_found(id: &str) -> Self {
        Self {
            id: id.to_string(),
            state: STATE_NOT_FOUND.to_string(),
            private_ip: None,
            private_dns_name: None,
            availability_zone: None,
            instance_type: None,
            launch_time: None,
            image_id: None,
            vpc_id: None,
            subnet_id: None,
            tags: BTreeMap::new(),
        }
    }

    /// Whether EC2 reports the instance as running.
    pub fn is_running(&self) -> bool {
        self.state == STATE_RUNNING
    }

    /// Whether EC2 reports the instance as terminated.
    pub fn is_terminated(&self) -> bool {
        self.state == STATE_TERMINATED
    }
}

/// Everything one discovery refresh read from AWS, before the join.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    /// Followed load balancers, with followed listeners.
    pub load_balancers: Vec<LoadBalancer>,
    /// Target groups the followed listeners forward to, by ARN.
    pub target_groups: BTreeMap<String, TargetGroup>,
    /// Every Auto Scaling group of the region.
    pub auto_scaling_groups: Vec<AutoScalingGroup>,
    /// EC2 facts of every registered instance, by id.
    pub instances: BTreeMap<String, Instance>,
    /// Why the scaling policies could not be read (they are optional: the
    /// groups are still discovered, with no target-tracking target).
    pub policies_error: Option<String>,
}
