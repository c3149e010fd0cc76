use super::*;
use crate::discovery::model::{AsgHealth, InstanceState, LifecycleState, TargetHealth};
use crate::discovery::model::{AsgMember, Forward, Listener};

fn instance(id: &str, state: &str, ip: &str) -> Instance {
    Instance {
        state: InstanceState::from_aws(state),
        private_ip: Some(ip.to_string()),
        private_dns_name: Some(format!("ip-{}.ap-northeast-2.compute.internal", ip.replace('.', "-"))),
        availability_zone: Some("ap-northeast-2a".to_string()),
        instance_type: Some("t3.micro".to_string()),
        ..Instance::not_found(id)
    }
}

fn registration(id: &str) -> Registration {
    Registration { instance_id: id.into(), port: 9100, health: TargetHealth::Healthy, health_reason: None }
}

fn group(name: &str, ids: &[&str]) -> TargetGroup {
    TargetGroup {
        name: name.to_string(),
        arn: format!("arn:tg/{name}"),
        protocol: "HTTP".to_string(),
        registrations: ids.iter().map(|id| registration(id)).collect(),
    }
}

fn listener(port: u16, groups: &[&str]) -> Listener {
    Listener {
        arn: format!("arn:listener/{port}"),
        port,
        protocol: "HTTP".to_string(),
        forwards: groups.iter().map(|g| Forward { target_group_arn: format!("arn:tg/{g}"), weight: None }).collect(),
    }
}

/// The seed topology: 9100 → basic-a, 9101 → basic-b, 9102 → the ASG's group.
fn seed() -> Inventory {
    let lb = LoadBalancer {
        name: "backend".to_string(),
        arn: "arn:lb/backend".to_string(),
        dns_name: "internal-backend.elb".to_string(),
        scheme: "internal".to_string(),
        listeners: vec![listener(9102, &["tg-asg"]), listener(9100, &["tg-a"]), listener(9101, &["tg-b"])],
    };
    let mut asg_instance = instance("i-asg1", "running", "10.0.2.10");
    asg_instance.tags.insert(ASG_NAME_TAG.to_string(), "web".to_string());
    Inventory {
        load_balancers: vec![lb],
        target_groups: [group("tg-a", &["i-a"]), group("tg-b", &["i-b"]), group("tg-asg", &["i-asg1"])]
            .into_iter()
            .map(|g| (g.arn.clone(), g))
            .collect(),
        auto_scaling_groups: vec![AutoScalingGroup {
            name: "web".to_string(),
            target_group_arns: vec!["arn:tg/tg-asg".to_string()],
            desired_capacity: 1,
            min_size: 1,
            max_size: 4,
            members: vec![AsgMember {
                instance_id: "i-asg1".into(),
                lifecycle_state: LifecycleState::InService,
                health_status: AsgHealth::Healthy,
            }],
            target_tracking: None,
        }],
        instances: [instance("i-a", "running", "10.0.1.10"), instance("i-b", "running", "10.0.1.11"), asg_instance]
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect(),
        policies_error: None,
    }
}

fn options() -> JoinOptions {
    JoinOptions { metrics_path: "/metrics".to_string(), ..JoinOptions::default() }
}

fn rules(yaml: &str) -> Vec<RelabelConfig> {
    serde_saphyr::from_str(yaml).unwrap()
}

#[test]
fn seed_topology_gives_one_target_per_instance_with_roles() {
    let topology = join(&seed(), &options());
    let summary: Vec<(&str, Role, Option<&str>, u16)> = topology
        .targets
        .iter()
        .map(|t| (t.instance.id.as_str(), t.role, t.asg_name(), t.paths[0].listener_port))
        .collect();
    assert_eq!(
        summary,
        [("i-a", Role::Basic, None, 9100), ("i-asg1", Role::Asg, Some("web"), 9102), ("i-b", Role::Basic, None, 9101)]
    );
    assert!(topology.targets.iter().all(Target::is_scraped));
    assert_eq!(topology.auto_scaling_groups.len(), 1);
}

#[test]
fn labels_carry_addresses_and_metadata() {
    let topology = join(&seed(), &options());
    let labels = &topology.target("i-asg1").unwrap().discovered_labels;
    let get = |k: &str| labels.get(k).map(String::as_str);
    assert_eq!(get("__address__"), Some("10.0.2.10:9100"));
    assert_eq!(get("__alb_address__"), Some("internal-backend.elb:9102"));
    assert_eq!(get("__scheme__"), Some("http"));
    assert_eq!(get("__metrics_path__"), Some("/metrics"));
    assert_eq!(get("__meta_ec2_instance_id"), Some("i-asg1"));
    assert_eq!(get("__meta_ec2_private_dns_name"), Some("ip-10-0-2-10.ap-northeast-2.compute.internal"));
    assert_eq!(get("__meta_ec2_tag_aws_autoscaling_groupName"), Some("web"));
    assert_eq!(get("__meta_elbv2_target_group_name"), Some("tg-asg"));
    assert_eq!(get("__meta_elbv2_listener_port"), Some("9102"));
    assert_eq!(get("__meta_elbv2_target_health"), Some("healthy"));
    assert_eq!(get("__meta_autoscaling_group_name"), Some("web"));
    assert_eq!(get("__meta_autoscaling_lifecycle_state"), Some("InService"));
    assert_eq!(get("__meta_fleetscrape_role"), Some("asg"));
    let basic = &topology.target("i-a").unwrap().discovered_labels;
    assert_eq!(basic.get("__meta_autoscaling_group_name").map(String::as_str), Some(""));
    // After relabeling the __meta_ labels are gone, the reserved ones stay.
    let kept = topology.target("i-a").unwrap().labels.as_ref().unwrap();
    assert!(kept.keys().all(|k| !k.starts_with("__meta_")));
    assert!(kept.contains_key("__address__") && kept.contains_key("__alb_address__"));
}

#[test]
fn an_instance_behind_several_listeners_is_one_target_with_sorted_paths() {
    let mut inventory = seed();
    // Register i-a in the 9101 group as well, and add an HTTPS listener 8443 → tg-a.
    inventory.target_groups.get_mut("arn:tg/tg-b").unwrap().registrations.push(registration("i-a"));
    let mut https = listener(8443, &["tg-a"]);
    https.protocol = "HTTPS".to_string();
    inventory.load_balancers[0].listeners.push(https);
    let topology = join(&inventory, &options());
    assert_eq!(topology.targets.len(), 3);
    let target = topology.target("i-a").unwrap();
    let ports: Vec<u16> = target.paths.iter().map(|p| p.listener_port).collect();
    assert_eq!(ports, [8443, 9100, 9101]);
    assert_eq!(target.discovered_labels["__alb_address__"], "internal-backend.elb:8443");
    assert_eq!(target.discovered_labels["__scheme__"], "https");
    assert_eq!(target.discovered_labels["__meta_elbv2_listener_ports"], ",8443,9100,9101,");
}

#[test]
fn instances_that_are_not_running_are_reported_but_not_scraped() {
    let mut inventory = seed();
    inventory.instances.get_mut("i-b").unwrap().state = InstanceState::Terminated;
    inventory.instances.remove("i-a");
    let topology = join(&inventory, &options());
    let b = topology.target("i-b").unwrap();
    assert_eq!(b.skip, Some(SkipReason::NotRunning(InstanceState::Terminated)));
    let a = topology.target("i-a").unwrap();
    assert_eq!(a.instance.state, InstanceState::NotFound);
    assert!(!a.is_scraped());
    assert_eq!(topology.scraped_targets().count(), 1);
}

#[test]
fn a_former_asg_member_keeps_its_role_from_the_tag() {
    let mut inventory = seed();
    inventory.auto_scaling_groups[0].members.clear();
    inventory.instances.get_mut("i-asg1").unwrap().state = InstanceState::Terminated;
    let topology = join(&inventory, &options());
    let target = topology.target("i-asg1").unwrap();
    assert_eq!(target.role, Role::Asg);
    assert_eq!(target.asg.as_ref().unwrap().lifecycle_state, None);
    assert!(!target.is_scraped());
}

#[test]
fn instance_tags_filter_skips_untagged_instances() {
    let mut inventory = seed();
    inventory.instances.get_mut("i-a").unwrap().tags.insert("Environment".into(), "prod".into());
    let options = JoinOptions { instance_tags: [("Environment".into(), "prod".into())].into(), ..options() };
    let topology = join(&inventory, &options);
    let scraped: Vec<&str> = topology.scraped_targets().map(|t| t.instance.id.as_str()).collect();
    assert_eq!(scraped, ["i-a"]);
    assert_eq!(topology.target("i-b").unwrap().skip, Some(SkipReason::InstanceTags));
}

#[test]
fn relabeling_rewrites_addresses_and_can_drop_targets() {
    let rules = rules(
        "- {source_labels: [__meta_elbv2_listener_port], target_label: __alb_address__, replacement: '127.0.0.1:$1'}\n\
         - {source_labels: [__meta_fleetscrape_role], regex: asg, action: drop}\n",
    );
    let topology = join(&seed(), &JoinOptions { relabel_configs: rules, ..options() });
    let a = topology.target("i-a").unwrap();
    assert_eq!(a.labels.as_ref().unwrap()["__alb_address__"], "127.0.0.1:9100");
    let asg = topology.target("i-asg1").unwrap();
    assert_eq!(asg.skip, Some(SkipReason::Relabeled));
    assert_eq!(asg.labels, None);
}

#[test]
fn weighted_forward_keeps_both_groups_and_their_weights() {
    let mut inventory = seed();
    inventory.load_balancers[0].listeners = vec![Listener {
        arn: "arn:listener/9200".into(),
        port: 9200,
        protocol: "HTTP".into(),
        forwards: vec![
            Forward { target_group_arn: "arn:tg/tg-a".into(), weight: Some(80) },
            Forward { target_group_arn: "arn:tg/tg-b".into(), weight: Some(20) },
        ],
    }];
    let topology = join(&inventory, &options());
    let ids: Vec<&str> = topology.targets.iter().map(|t| t.instance.id.as_str()).collect();
    assert_eq!(ids, ["i-a", "i-b"]);
    assert_eq!(topology.target("i-b").unwrap().paths[0].weight, Some(20));
}
