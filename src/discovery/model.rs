//! What discovery learns from AWS, in our own types: no SDK type leaves the
//! leaf modules (`elbv2`, `autoscaling`, `ec2`), so the join in
//! [`super::topology`] is plain data in, plain data out.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

pub use crate::ids::InstanceId;

/// An enum of AWS state names: the values this version names, and any other
/// kept as AWS spelled it (AWS adds states; a new one must not fail a
/// refresh). `as_str` and `Display` give AWS's spelling, which is what the
/// `__meta_*` labels and the database carry.
macro_rules! aws_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$variant_doc:meta])* $variant:ident = $spelling:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_doc])* $variant,)+
            /// A value this version does not name, as AWS spelled it.
            Other(String),
        }

        impl $name {
            /// Reads AWS's spelling; one this version does not name is kept as [`Self::Other`].
            pub fn from_aws(spelling: &str) -> Self {
                match spelling {
                    $($spelling => Self::$variant,)+
                    other => Self::Other(other.to_string()),
                }
            }

            /// AWS's spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $spelling,)+
                    Self::Other(spelling) => spelling,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}

aws_enum! {
    /// A target's health in a target group (`DescribeTargetHealth`).
    TargetHealth {
        /// Registration or the first health checks under way.
        Initial = "initial",
        /// The load balancer forwards to it.
        Healthy = "healthy",
        /// Failing its health checks.
        Unhealthy = "unhealthy",
        /// Unhealthy and being deregistered.
        UnhealthyDraining = "unhealthy.draining",
        /// Not used by any load balancer, or in a disabled zone.
        Unused = "unused",
        /// Being deregistered.
        Draining = "draining",
        /// Health checks are disabled.
        Unavailable = "unavailable",
    }
}

aws_enum! {
    /// An EC2 instance's state (`DescribeInstances`), plus `not_found` for a
    /// registered instance EC2 no longer returns.
    InstanceState {
        /// Starting.
        Pending = "pending",
        /// Running: the only state in which it is scraped.
        Running = "running",
        /// Terminating.
        ShuttingDown = "shutting-down",
        /// Terminated (a scale-in's end).
        Terminated = "terminated",
        /// Stopping.
        Stopping = "stopping",
        /// Stopped.
        Stopped = "stopped",
        /// Registered in a target group or group, but `DescribeInstances` does not return it.
        NotFound = "not_found",
    }
}

aws_enum! {
    /// A member's lifecycle state in its Auto Scaling group.
    LifecycleState {
        /// Launching.
        Pending = "Pending",
        /// Held by a launch lifecycle hook.
        PendingWait = "Pending:Wait",
        /// A launch lifecycle hook completed.
        PendingProceed = "Pending:Proceed",
        /// Serving: counted by the group.
        InService = "InService",
        /// Leaving.
        Terminating = "Terminating",
        /// Held by a termination lifecycle hook.
        TerminatingWait = "Terminating:Wait",
        /// A termination lifecycle hook completed.
        TerminatingProceed = "Terminating:Proceed",
        /// Gone.
        Terminated = "Terminated",
        /// Being detached.
        Detaching = "Detaching",
        /// Detached.
        Detached = "Detached",
        /// Entering standby.
        EnteringStandby = "EnteringStandby",
        /// In standby: in the group, not serving.
        Standby = "Standby",
    }
}

aws_enum! {
    /// A member's health as its Auto Scaling group sees it.
    AsgHealth {
        /// Healthy.
        Healthy = "Healthy",
        /// Unhealthy: the group will replace it.
        Unhealthy = "Unhealthy",
    }
}

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
    pub instance_id: InstanceId,
    /// Port the target is registered on (the exporter's port).
    pub port: u16,
    /// Its health in the target group.
    pub health: TargetHealth,
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

impl AutoScalingGroup {
    /// A group of `desired` capacity (min 0, max 4), no member, no policy (tests).
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, desired: i32) -> Self {
        Self {
            name: name.into(),
            target_group_arns: vec![],
            desired_capacity: desired,
            min_size: 0,
            max_size: 4,
            members: vec![],
            target_tracking: None,
        }
    }
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
    pub instance_id: InstanceId,
    /// Its lifecycle state in the group.
    pub lifecycle_state: LifecycleState,
    /// Its health as the group sees it.
    pub health_status: AsgHealth,
}

impl AsgMember {
    /// Whether the group counts it as serving (`InService`).
    pub fn is_in_service(&self) -> bool {
        self.lifecycle_state == LifecycleState::InService
    }
}

/// An EC2 instance as `DescribeInstances` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// Instance id.
    pub id: InstanceId,
    /// Its state.
    pub state: InstanceState,
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

impl Instance {
    /// A placeholder for an instance id EC2 does not know (any more).
    pub fn not_found(id: impl Into<InstanceId>) -> Self {
        Self {
            id: id.into(),
            state: InstanceState::NotFound,
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
        self.state == InstanceState::Running
    }

    /// Whether EC2 reports the instance as terminated.
    pub fn is_terminated(&self) -> bool {
        self.state == InstanceState::Terminated
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
    pub instances: BTreeMap<InstanceId, Instance>,
    /// Why the scaling policies could not be read (they are optional: the
    /// groups are still discovered, with no target-tracking target).
    pub policies_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_spellings_read_back_as_written() {
        for spelling in ["healthy", "unhealthy.draining", "initial", "unused"] {
            assert_eq!(TargetHealth::from_aws(spelling).as_str(), spelling);
        }
        assert_eq!(TargetHealth::from_aws("healthy"), TargetHealth::Healthy);
        assert_eq!(InstanceState::from_aws("shutting-down"), InstanceState::ShuttingDown);
        assert_eq!(LifecycleState::from_aws("Pending:Wait"), LifecycleState::PendingWait);
        assert_eq!(LifecycleState::from_aws("InService").to_string(), "InService");
    }

    #[test]
    fn a_state_aws_adds_later_is_kept_as_spelled() {
        let warmed = LifecycleState::from_aws("Warmed:Hibernated");
        assert_eq!(warmed, LifecycleState::Other("Warmed:Hibernated".into()));
        assert_eq!(warmed.as_str(), "Warmed:Hibernated");
        assert_ne!(warmed, LifecycleState::InService);
    }

    #[test]
    fn states_serialize_as_aws_spells_them() {
        let member = AsgMember {
            instance_id: "i-1".into(),
            lifecycle_state: LifecycleState::InService,
            health_status: AsgHealth::Other("Sick".into()),
        };
        assert_eq!(
            serde_json::to_string(&member).unwrap(),
            r#"{"instance_id":"i-1","lifecycle_state":"InService","health_status":"Sick"}"#
        );
        assert_eq!(serde_json::to_string(&InstanceState::NotFound).unwrap(), r#""not_found""#);
    }
}
