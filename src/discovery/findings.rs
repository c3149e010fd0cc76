//! What a discovery found that explains missing targets: no load balancer in
//! the region, no listener on the configured ports, a target group with no
//! registered target, an Auto Scaling group at zero. Pure: decided from the
//! inventory and what the filters left out; the refresher logs each once
//! per change and `discover` prints them.

use std::collections::BTreeSet;
use std::fmt;

use super::elbv2::{Filters, LeftOut};
use super::model::Inventory;

/// One thing worth telling the operator about a discovery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Finding {
    /// The region has no application or network load balancer.
    NoLoadBalancerInRegion,
    /// The region has load balancers, but `discovery.load_balancers` names
    /// none of them.
    NoFollowedLoadBalancer {
        /// The region's load balancers.
        in_region: usize,
    },
    /// No followed load balancer has a forwarding listener on the
    /// configured ports.
    NoListenerOnPorts {
        /// `discovery.listener_ports`.
        wanted: Vec<u16>,
        /// Ports the followed load balancers do forward on.
        seen: Vec<u16>,
    },
    /// A followed target group has no registered target.
    EmptyTargetGroup {
        /// Its name.
        name: String,
    },
    /// An Auto Scaling group's desired capacity is 0: its members are gone
    /// on purpose.
    ScaledToZero {
        /// Its name.
        name: String,
    },
}

impl Finding {
    /// Whether it is a likely mistake (warn) rather than a state (info).
    pub fn is_warning(&self) -> bool {
        !matches!(self, Self::ScaledToZero { .. })
    }
}

fn ports(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoLoadBalancerInRegion => f.write_str(
                "no application or network load balancer in this region: check aws.region (or AWS_REGION) \
                 and aws.endpoint_url",
            ),
            Self::NoFollowedLoadBalancer { in_region } => write!(
                f,
                "discovery.load_balancers names none of the region's {in_region} load balancers: check the names \
                 or ARNs (`aws elbv2 describe-load-balancers` lists them)"
            ),
            Self::NoListenerOnPorts { wanted, .. } if wanted.is_empty() => f.write_str(
                "the followed load balancers have no listener that forwards to a target group: fleetscrape \
                 follows forwarding listeners only",
            ),
            Self::NoListenerOnPorts { wanted, seen } if seen.is_empty() => write!(
                f,
                "no forwarding listener on discovery.listener_ports [{}], and none on any other port",
                ports(wanted)
            ),
            Self::NoListenerOnPorts { wanted, seen } => write!(
                f,
                "no forwarding listener on discovery.listener_ports [{}]; the load balancers forward on [{}]: \
                 fix listener_ports",
                ports(wanted),
                ports(seen)
            ),
            Self::EmptyTargetGroup { name } => write!(
                f,
                "target group {name} has no registered target: register the instances (or attach the Auto \
                 Scaling group to it)"
            ),
            Self::ScaledToZero { name } => {
                write!(f, "Auto Scaling group {name} is at desired capacity 0: it has no member to scrape")
            }
        }
    }
}

/// What explains missing targets in this discovery, sorted.
pub fn findings(inventory: &Inventory, filters: &Filters, left_out: &LeftOut) -> Vec<Finding> {
    let mut found = BTreeSet::new();
    if inventory.load_balancers.is_empty() {
        found.insert(if left_out.load_balancers_in_region == 0 {
            Finding::NoLoadBalancerInRegion
        } else {
            Finding::NoFollowedLoadBalancer { in_region: left_out.load_balancers_in_region }
        });
    } else if inventory.load_balancers.iter().all(|lb| lb.listeners.is_empty()) {
        found.insert(Finding::NoListenerOnPorts {
            wanted: filters.listener_ports.clone(),
            seen: left_out.listener_ports.iter().copied().collect(),
        });
    }
    for group in inventory.target_groups.values().filter(|g| g.registrations.is_empty()) {
        found.insert(Finding::EmptyTargetGroup { name: group.name.clone() });
    }
    for group in inventory.auto_scaling_groups.iter().filter(|g| g.desired_capacity == 0) {
        found.insert(Finding::ScaledToZero { name: group.name.clone() });
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::model::{AutoScalingGroup, Forward, Listener, LoadBalancer, TargetGroup};

    fn lb(ports: &[u16]) -> LoadBalancer {
        LoadBalancer {
            name: "backend".into(),
            arn: "arn:lb".into(),
            dns_name: "backend.elb".into(),
            scheme: "internal".into(),
            listeners: ports
                .iter()
                .map(|&port| Listener {
                    arn: format!("arn:listener:{port}"),
                    port,
                    protocol: "HTTP".into(),
                    forwards: vec![Forward { target_group_arn: "arn:tg".into(), weight: None }],
                })
                .collect(),
        }
    }

    fn filters(ports: &[u16]) -> Filters {
        Filters { load_balancers: vec![], listener_ports: ports.to_vec() }
    }

    #[test]
    fn a_wrong_region_and_unmatched_names_are_told_apart() {
        let empty = Inventory::default();
        let none = LeftOut::default();
        assert_eq!(findings(&empty, &filters(&[]), &none), [Finding::NoLoadBalancerInRegion]);
        let two = LeftOut { load_balancers_in_region: 2, ..LeftOut::default() };
        let found = findings(&empty, &filters(&[]), &two);
        assert_eq!(found, [Finding::NoFollowedLoadBalancer { in_region: 2 }]);
        assert!(found[0].to_string().contains("discovery.load_balancers names none"), "{}", found[0]);
    }

    #[test]
    fn a_listener_port_typo_names_the_ports_that_exist() {
        let inventory = Inventory { load_balancers: vec![lb(&[])], ..Inventory::default() };
        let left_out = LeftOut { load_balancers_in_region: 1, listener_ports: [9100, 9101, 9102].into() };
        let found = findings(&inventory, &filters(&[9012]), &left_out);
        assert_eq!(found, [Finding::NoListenerOnPorts { wanted: vec![9012], seen: vec![9100, 9101, 9102] }]);
        let text = found[0].to_string();
        assert!(text.contains("[9012]") && text.contains("[9100, 9101, 9102]"), "{text}");
        // A port that matches is no finding.
        let matched = Inventory { load_balancers: vec![lb(&[9100])], ..Inventory::default() };
        assert_eq!(findings(&matched, &filters(&[9100]), &left_out), []);
    }

    #[test]
    fn empty_target_groups_and_groups_at_zero_are_named() {
        let group = |name: &str| TargetGroup {
            name: name.into(),
            arn: format!("arn:{name}"),
            protocol: "HTTP".into(),
            registrations: vec![],
        };
        let asg = AutoScalingGroup::for_tests;
        let inventory = Inventory {
            load_balancers: vec![lb(&[9102])],
            target_groups: [("arn:tg-asg".to_string(), group("tg-asg"))].into(),
            auto_scaling_groups: vec![asg("web", 0), asg("api", 2)],
            ..Inventory::default()
        };
        let found = findings(&inventory, &filters(&[9102]), &LeftOut::default());
        assert_eq!(
            found,
            [Finding::EmptyTargetGroup { name: "tg-asg".into() }, Finding::ScaledToZero { name: "web".into() }]
        );
        assert!(found[0].is_warning() && !found[1].is_warning());
    }
}
