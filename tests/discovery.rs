//! Discovery against a real moto server: the seed's topology, ASG scale-out
//! and scale-in, listener filters, weighted forwards, page boundaries, API
//! call counts measured on the wire, outages, relabeling.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::seed::Seeder;
use common::{AwsProxy, Moto, set_test_env, wait_for, write_config};
use fleetscrape::config::Config;
use fleetscrape::discovery::{Discoverer, Refresher, Role, SkipReason, Target, Topology};

/// A discoverer for `endpoint` with `extra` YAML appended to the config; a
/// leading `aws:` section in `extra` is merged into the generated one.
async fn discoverer(endpoint: &str, extra: &str) -> Discoverer {
    set_test_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let extra = extra.strip_prefix("aws:\n").unwrap_or(extra);
    let yaml = format!("aws:\n  region: ap-northeast-2\n  endpoint_url: {endpoint}\n{extra}");
    let config = Config::load(&write_config(dir.path(), &yaml)).expect("valid config");
    Discoverer::from_config(&config).await.expect("discoverer")
}

async fn discover(endpoint: &str, extra: &str) -> Topology {
    discoverer(endpoint, extra).await.discover().await.expect("discovery succeeds").topology
}

fn ids(targets: impl Iterator<Item = impl std::ops::Deref<Target = Target>>) -> Vec<String> {
    let mut ids: Vec<String> = targets.map(|t| t.instance.id.to_string()).collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_topology_is_discovered_with_roles_paths_and_labels() {
    let moto = Moto::start();
    let seed = Seeder::new(&moto.url).await.seed_topology().await;
    let topology = discover(&moto.url, "").await;

    assert_eq!(topology.targets.len(), 3, "{topology:#?}");
    let a = topology.target(&seed.basic_a).expect("basic-a discovered");
    let b = topology.target(&seed.basic_b).expect("basic-b discovered");
    let asg = topology.targets.iter().find(|t| t.role == Role::Asg).expect("the ASG member");
    assert_eq!((a.role, a.paths.len(), a.paths[0].listener_port), (Role::Basic, 1, 9100));
    assert_eq!((b.role, b.paths[0].listener_port), (Role::Basic, 9101));
    assert_eq!(asg.asg_name(), Some("web"));
    assert_eq!(asg.paths[0].listener_port, 9102);
    assert!(topology.targets.iter().all(Target::is_scraped));

    let labels = &asg.discovered_labels;
    let ip = asg.instance.private_ip.clone().expect("private ip");
    assert!(ip.starts_with("10.20."), "moto's private IP is data only: {ip}");
    assert_eq!(labels["__address__"], format!("{ip}:9100"));
    assert_eq!(labels["__alb_address__"], format!("{}:9102", seed.lb.dns_name));
    assert_eq!(labels["__meta_elbv2_load_balancer_name"], "backend");
    assert_eq!(labels["__meta_elbv2_target_group_name"], "web-asg");
    assert_eq!(labels["__meta_elbv2_target_group_arn"], seed.asg_target_group);
    assert_eq!(labels["__meta_elbv2_target_health"], "healthy");
    assert_eq!(labels["__meta_ec2_instance_state"], "running");
    assert_eq!(labels["__meta_ec2_availability_zone"], "ap-northeast-2a");
    assert_eq!(labels["__meta_ec2_instance_type"], "t3.micro");
    assert_eq!(labels["__meta_autoscaling_group_name"], "web");
    assert_eq!(labels["__meta_fleetscrape_role"], "asg");
    assert_eq!(a.discovered_labels["__meta_ec2_tag_Name"], "basic-a");
    assert_eq!(a.discovered_labels["__meta_autoscaling_group_name"], "");

    let group = &topology.auto_scaling_groups[0];
    assert_eq!((group.name.as_str(), group.min_size, group.max_size, group.members.len()), ("web", 1, 4, 1));
    assert_eq!(group.desired_capacity, 1);
    let tracking = group.target_tracking.as_ref().expect("the group's target-tracking policy");
    assert_eq!((tracking.metric.as_str(), tracking.target_value), ("ASGAverageCPUUtilization", 50.0));
    assert_eq!(tracking.policy_name, "web-cpu50");
}

/// The scaling policies only feed the dashboards: a role without
/// `autoscaling:DescribePolicies` (a policy from before it was added) still
/// discovers every group, without its target, and says why.
#[tokio::test(flavor = "multi_thread")]
async fn groups_are_discovered_when_their_policies_cannot_be_read() {
    let moto = Moto::start();
    let seed = Seeder::new(&moto.url).await.seed_topology().await;
    let proxy = AwsProxy::start(&moto.url).await;
    proxy.deny("DescribePolicies");
    let refresh = discoverer(&proxy.url, "").await.discover().await.expect("discovery without the policies");
    let error = refresh.policies_error.expect("the policies' error is reported");
    assert!(error.contains("DescribePolicies") && error.contains("AccessDenied"), "{error}");
    let group = &refresh.topology.auto_scaling_groups[0];
    assert_eq!((group.name.as_str(), group.desired_capacity, group.target_tracking.as_ref()), ("web", 1, None));
    assert_eq!(refresh.topology.targets.len(), 3, "every instance still discovered");
    assert!(refresh.topology.target(&seed.basic_a).is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn asg_scale_out_and_scale_in_are_followed_and_terminated_members_reported() {
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    let discoverer = discoverer(&moto.url, "").await;

    seeder.set_desired(&seed.asg_name, 3).await;
    let members = sorted(seeder.members(&seed.asg_name).await);
    assert_eq!(members.len(), 3);
    let topology = discoverer.discover().await.expect("after scale-out").topology;
    let asg_targets = ids(topology.scraped_targets().filter(|t| t.role == Role::Asg));
    assert_eq!(asg_targets, members);
    assert!(topology.scraped_targets().filter(|t| t.role == Role::Asg).all(|t| t.asg_name() == Some("web")));

    seeder.set_desired(&seed.asg_name, 1).await;
    let remaining = seeder.members(&seed.asg_name).await;
    let topology = discoverer.discover().await.expect("after scale-in").topology;
    assert_eq!(ids(topology.scraped_targets().filter(|t| t.role == Role::Asg)), remaining);
    // moto keeps terminated members registered and "healthy": EC2 state decides.
    let gone: Vec<&Target> = topology
        .targets
        .iter()
        .filter(|t| !remaining.contains(&t.instance.id.to_string()) && t.role == Role::Asg)
        .collect();
    assert_eq!(gone.len(), 2, "{topology:#?}");
    for target in gone {
        assert_eq!(target.instance.state, fleetscrape::discovery::model::InstanceState::Terminated);
        assert_eq!(target.skip, Some(SkipReason::NotRunning(fleetscrape::discovery::model::InstanceState::Terminated)));
        assert_eq!(
            target.paths[0].health,
            fleetscrape::discovery::model::TargetHealth::Healthy,
            "moto's quirk this test relies on"
        );
        assert_eq!(target.asg_name(), Some("web"), "a former member keeps its group from the tag");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_load_balancers_with_load_balancer_and_listener_filters() {
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    let other = seeder.load_balancer("other").await;
    let tg_other = seeder.target_group("other-tg", 9100).await;
    seeder.listener(&other, 9100, &tg_other).await;
    let stray = seeder.instances(1, &[]).await;
    seeder.register(&tg_other, &stray, 9100).await;

    let everything = discover(&moto.url, "").await;
    assert_eq!(everything.targets.len(), 4);

    let filtered =
        discover(&moto.url, "discovery:\n  load_balancers: [backend]\n  listener_ports: [9100, 9102]\n").await;
    let ports: Vec<u16> = filtered.targets.iter().flat_map(|t| t.paths.iter().map(|p| p.listener_port)).collect();
    assert_eq!(filtered.targets.len(), 2, "{filtered:#?}");
    assert!(filtered.target(&seed.basic_a).is_some() && filtered.target(&seed.basic_b).is_none());
    assert!(ports.iter().all(|p| [9100, 9102].contains(p)));
    assert!(filtered.targets.iter().all(|t| t.paths.iter().all(|p| p.load_balancer == "backend")));

    // The same filter by ARN.
    let by_arn = discover(&moto.url, &format!("discovery:\n  load_balancers: ['{}']\n", other.arn)).await;
    assert_eq!(ids(by_arn.targets.iter()), stray);
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_config_with_two_weighted_target_groups() {
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let lb = seeder.load_balancer("canary").await;
    let blue = seeder.target_group("blue", 9100).await;
    let green = seeder.target_group("green", 9100).await;
    seeder.weighted_listener(&lb, 9200, &[(&blue, 90), (&green, 10)]).await;
    let blue_ids = seeder.instances(2, &[]).await;
    let green_ids = seeder.instances(1, &[]).await;
    seeder.register(&blue, &blue_ids, 9100).await;
    seeder.register(&green, &green_ids, 9100).await;

    let topology = discover(&moto.url, "").await;
    assert_eq!(topology.targets.len(), 3);
    for target in &topology.targets {
        let path = &target.paths[0];
        let expected =
            if green_ids.contains(&target.instance.id.to_string()) { ("green", Some(10)) } else { ("blue", Some(90)) };
        assert_eq!((path.target_group.as_str(), path.weight), expected);
        assert_eq!(path.listener_port, 9200);
    }
}

/// Counts per operation for one discovery through the proxy.
async fn calls_of_one_refresh(proxy: &AwsProxy, discoverer: &Discoverer) -> BTreeMap<String, u64> {
    proxy.take_calls();
    discoverer.discover().await.expect("discovery through the proxy");
    proxy.take_calls()
}

fn expected_calls(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(op, n)| (op.to_string(), *n)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn api_calls_per_refresh_grow_with_groups_not_instances() {
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    let proxy = AwsProxy::start(&moto.url).await;
    let discoverer = discoverer(&proxy.url, "").await;

    let small = calls_of_one_refresh(&proxy, &discoverer).await;
    assert_eq!(
        small,
        expected_calls(&[
            ("DescribeAutoScalingGroups", 1),
            ("DescribeInstances", 1),
            ("DescribeListeners", 1),
            ("DescribeLoadBalancers", 1),
            ("DescribePolicies", 1),
            ("DescribeTargetGroups", 1),
            ("DescribeTargetHealth", 3),
        ])
    );

    // Eight times the instances, same load balancers and target groups.
    seeder.set_desired(&seed.asg_name, 4).await;
    let tg_a = discoverer.discover().await.expect("refresh").topology.target(&seed.basic_a).expect("basic-a").paths[0]
        .target_group_arn
        .clone();
    let more = seeder.instances(20, &[]).await;
    seeder.register(&tg_a, &more, 9100).await;
    let large = calls_of_one_refresh(&proxy, &discoverer).await;
    let topology = discoverer.discover().await.expect("refresh").topology;
    assert_eq!(topology.scraped_targets().count(), 26);
    assert_eq!(large, small, "API calls must not grow with instances");
}

#[tokio::test(flavor = "multi_thread")]
async fn page_and_batch_boundaries_are_crossed() {
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let lb = seeder.load_balancer("big").await;
    let tg = seeder.target_group("big-tg", 9100).await;
    seeder.listener(&lb, 9100, &tg).await;
    // 201 instances: two DescribeInstances batches of at most 200 ids.
    let many = seeder.instances(201, &[]).await;
    seeder.register(&tg, &many, 9100).await;
    // 101 groups before the linked one: two DescribeAutoScalingGroups pages of 100.
    for i in 0..101 {
        seeder.auto_scaling_group(&format!("idle-{i:03}"), &[], 0, 1, 0).await;
    }
    seeder.auto_scaling_group("zz-linked", &[&tg], 2, 2, 2).await;
    let proxy = AwsProxy::start(&moto.url).await;
    let discoverer = discoverer(&proxy.url, "").await;

    let calls = calls_of_one_refresh(&proxy, &discoverer).await;
    assert_eq!(calls["DescribeAutoScalingGroups"], 2, "{calls:?}");
    assert_eq!(calls["DescribeInstances"], 2, "{calls:?}");

    let topology = discoverer.discover().await.expect("discovery").topology;
    assert_eq!(topology.scraped_targets().count(), 203);
    let members = sorted(seeder.members("zz-linked").await);
    assert_eq!(
        ids(topology.targets.iter().filter(|t| t.role == Role::Asg)),
        members,
        "members listed on the second page"
    );
    assert!(topology.targets.iter().all(|t| t.instance.is_running()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_during_an_outage_keeps_the_previous_topology() {
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    let proxy = AwsProxy::start(&moto.url).await;
    let refresher = Refresher::new(discoverer(&proxy.url, "aws:\n  max_attempts: 2\n").await, Duration::from_secs(60));
    let receiver = refresher.subscribe();
    let stats = refresher.stats();

    let first = refresher.refresh().await.expect("first refresh");
    assert_eq!(first.scraped_targets().count(), 3);

    proxy.set_outage(true);
    seeder.set_desired(&seed.asg_name, 2).await;
    let error = refresher.refresh().await.expect_err("refresh during the outage fails").to_string();
    assert!(error.contains("failed: ServiceUnavailable: simulated outage"), "{error}");
    let kept = receiver.borrow().clone().expect("a topology is still published");
    assert!(Arc::ptr_eq(&kept, &first), "the previous topology is kept as it was");
    assert_eq!(stats.failures.load(Ordering::Relaxed), 1);
    assert!(stats.last_error.lock().unwrap().is_some());
    let retried = proxy.take_calls().values().sum::<u64>();
    assert!(retried >= 2, "the SDK retried 503s: {retried} requests");

    proxy.set_outage(false);
    let recovered = refresher.refresh().await.expect("refresh after the outage");
    assert_eq!(recovered.scraped_targets().count(), 4);
    assert!(stats.last_error.lock().unwrap().is_none());
    assert_eq!((stats.refreshes.load(Ordering::Relaxed), stats.failures.load(Ordering::Relaxed)), (3, 1));
    let counted = stats.api_calls.lock().unwrap().clone();
    assert_eq!(counted.get("DescribeTargetHealth"), Some(&6), "two good refreshes of 3 target groups: {counted:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_refresh_loop_survives_an_outage_and_picks_up_changes() {
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    let proxy = AwsProxy::start(&moto.url).await;
    proxy.set_outage(true);
    let refresher = Refresher::new(discoverer(&proxy.url, "aws:\n  max_attempts: 1\n").await, Duration::from_secs(1));
    let receiver = refresher.subscribe();
    let stats = refresher.stats();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(refresher.run(shutdown.clone()));

    wait_for("two failed refreshes", Duration::from_secs(30), || stats.failures.load(Ordering::Relaxed) >= 2).await;
    assert!(receiver.borrow().is_none(), "nothing published before the first success");

    proxy.set_outage(false);
    let count =
        |r: &fleetscrape::discovery::TopologyReceiver| r.borrow().as_ref().map_or(0, |t| t.scraped_targets().count());
    wait_for("the first topology", Duration::from_secs(30), || count(&receiver) == 3).await;
    seeder.set_desired(&seed.asg_name, 3).await;
    wait_for("the scaled-out topology", Duration::from_secs(30), || count(&receiver) == 5).await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("loop stops on shutdown").expect("loop task");
}

#[tokio::test(flavor = "multi_thread")]
async fn relabeling_keeps_by_tag_rewrites_addresses_and_shards_by_hashmod() {
    let moto = Moto::start();
    let seed = Seeder::new(&moto.url).await.seed_topology().await;

    let keep_prod = "relabel_configs:\n  - {source_labels: [__meta_ec2_tag_Environment], regex: prod, action: keep}\n";
    let topology = discover(&moto.url, keep_prod).await;
    assert_eq!(ids(topology.scraped_targets()), std::slice::from_ref(&seed.basic_a));
    assert!(
        topology
            .targets
            .iter()
            .filter(|t| !t.is_scraped())
            .all(|t| t.skip == Some(SkipReason::Relabeled) && t.labels.is_none())
    );

    let loopback = "relabel_configs:\n\
        \x20 - {source_labels: [__meta_elbv2_listener_port], target_label: __alb_address__, replacement: '127.0.0.1:$1'}\n\
        \x20 - {source_labels: [__meta_ec2_private_ip], regex: '10\\.20\\.(\\d+)\\.(\\d+)', target_label: __address__, replacement: '127.0.$1.$2:9100'}\n\
        \x20 - {source_labels: [__meta_ec2_tag_Name], target_label: name}\n";
    let topology = discover(&moto.url, loopback).await;
    for target in &topology.targets {
        let labels = target.labels.as_ref().expect("kept");
        let port = target.paths[0].listener_port;
        assert_eq!(labels["__alb_address__"], format!("127.0.0.1:{port}"));
        assert!(labels["__address__"].starts_with("127.0."), "{labels:?}");
        assert!(labels.keys().all(|k| !k.starts_with("__meta_")));
    }
    assert_eq!(topology.target(&seed.basic_b).unwrap().labels.as_ref().unwrap()["name"], "basic-b");

    let shard = |n: u64| {
        format!(
            "relabel_configs:\n  - {{source_labels: [__address__], modulus: 2, target_label: __tmp_shard, action: hashmod}}\n  - {{source_labels: [__tmp_shard], regex: '{n}', action: keep}}\n"
        )
    };
    let zero = ids(discover(&moto.url, &shard(0)).await.scraped_targets());
    let one = ids(discover(&moto.url, &shard(1)).await.scraped_targets());
    let mut union: Vec<String> = zero.iter().chain(&one).cloned().collect();
    union.sort();
    assert!(zero.iter().all(|id| !one.contains(id)), "shards are disjoint");
    assert_eq!(union, ids(topology.targets.iter()), "shards cover every target");
}

#[tokio::test(flavor = "multi_thread")]
async fn instance_tags_filter_and_stopped_or_terminated_basic_instances() {
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;

    let topology = discover(&moto.url, "discovery:\n  instance_tags: {Environment: prod}\n").await;
    assert_eq!(ids(topology.scraped_targets()), std::slice::from_ref(&seed.basic_a));
    assert_eq!(topology.target(&seed.basic_b).unwrap().skip, Some(SkipReason::InstanceTags));

    // moto keeps a stopped instance registered, as `unused`.
    seeder.stop(std::slice::from_ref(&seed.basic_b)).await;
    let topology = discover(&moto.url, "").await;
    let b = topology.target(&seed.basic_b).expect("still registered");
    assert_eq!((b.instance.state.as_str(), b.paths[0].health.as_str()), ("stopped", "unused"));
    assert_eq!(b.paths[0].health_reason.as_deref(), Some("Target.InvalidState"));
    assert_eq!(
        (b.role, b.skip.clone()),
        (Role::Basic, Some(SkipReason::NotRunning(fleetscrape::discovery::model::InstanceState::Stopped)))
    );
    assert_eq!(topology.scraped_targets().count(), 2);

    // A terminated one is deregistered by moto (as by AWS after draining).
    seeder.terminate(std::slice::from_ref(&seed.basic_b)).await;
    let topology = discover(&moto.url, "").await;
    assert!(topology.target(&seed.basic_b).is_none());
    assert_eq!(topology.targets.len(), 2);
}

/// The IAM policy grants exactly the operations a run sends: recorded on the
/// wire by the proxy during `fleetscrape run --once` (discovery and a scrape
/// pass) and `fleetscrape discover`.
#[tokio::test(flavor = "multi_thread")]
async fn the_iam_policy_grants_exactly_what_a_run_calls() {
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    seeder.seed_topology().await;
    let proxy = AwsProxy::start(&moto.url).await;
    set_test_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let closed = format!("127.0.0.1:{}", common::free_port());
    let yaml = format!(
        "aws:\n  region: ap-northeast-2\n  endpoint_url: {}\nscrape:\n  mode: via_alb\n  interval: 2s\n  timeout: 1s\n\
         relabel_configs:\n  - {{target_label: __alb_address__, replacement: '{closed}'}}\n\
         storage:\n  path: {}\nhttp:\n  listen_address: 127.0.0.1:0\n",
        proxy.url,
        dir.path().join("iam.db").display()
    );
    let config = Config::load(&write_config(dir.path(), &yaml)).expect("config");
    // Every listener is closed: the pass stores nothing (exit 3), which is
    // beside the point here: the calls it made are.
    let pass = fleetscrape::daemon::run(config.clone(), true, tokio_util::sync::CancellationToken::new()).await;
    assert!(matches!(pass, Err(fleetscrape::daemon::Error::NothingStored(_))), "run --once: {pass:?}");
    Discoverer::from_config(&config).await.unwrap().discover().await.expect("discover");

    let called = proxy.operations();
    let policy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/iam-policy.json")).unwrap(),
    )
    .unwrap();
    let granted: std::collections::BTreeSet<String> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(called, granted, "infra/iam-policy.json must grant exactly the operations fleetscrape calls");
    assert!(granted.iter().all(|a| a.split(':').nth(1).is_some_and(|op| op.starts_with("Describe"))), "read-only");
}
