//! Past one host: `/api/sd` feeding a real Prometheus 2.42 (`http_sd_configs`),
//! and N replicas splitting one moto topology between them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::e2e::{emulator, listener_rules, reader};
use common::fakehost::{FakeHost, Identity};
use common::prometheus::Prometheus;
use common::seed::Seeder;
use common::{AwsProxy, Moto, free_port, isolate_network, set_test_env, write_config};
use fleetscrape::config::Config;
use fleetscrape::emulator::Balancing;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_discovers_instances_through_api_sd_and_scrapes_them() {
    if isolate_network("a_real_prometheus_discovers_instances_through_api_sd_and_scrapes_them") {
        return;
    }
    set_test_env();
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    let member = seeder.members(&seed.asg_name).await.remove(0);
    let hosts: Vec<FakeHost> = [&seed.basic_a, &seed.basic_b, &member]
        .iter()
        .enumerate()
        .map(|(i, id)| FakeHost::start(id, 0.3, 1000 * (i as u32 + 1), Identity::Dmi))
        .collect();
    // fleetscrape for discovery only: it scrapes nothing itself.
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let yaml = format!(
        "aws:\n  region: ap-northeast-2\n  endpoint_url: {}\ndiscovery:\n  refresh_interval: 2s\n\
         scrape:\n  enabled: false\n  mode: direct\nstorage:\n  path: null\nhttp:\n  listen_address: {http}\n",
        moto.url
    );
    let config = Config::load(&write_config(dir.path(), &yaml)).unwrap();
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(fleetscrape::daemon::run(config, false, shutdown.clone()));

    // The team's own Prometheus: its relabeling maps every private address
    // fleetscrape reports to the loopback exporter of that instance.
    let mut rules = String::new();
    for host in &hosts {
        rules.push_str(&format!(
            "      - {{source_labels: [__meta_ec2_instance_id], regex: '{}', target_label: __address__, replacement: '{}'}}\n",
            host.instance_id, host.address
        ));
    }
    rules.push_str("      - {source_labels: [__address__], regex: '10\\..*', action: drop}\n");
    let prometheus = Prometheus::start(&format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 900ms}}\nscrape_configs:\n  - job_name: backends\n    \
         http_sd_configs:\n      - url: http://{http}/api/sd\n        refresh_interval: 1s\n    relabel_configs:\n{rules}"
    ))
    .await;

    let want: BTreeSet<String> = hosts.iter().map(|h| h.instance_id.clone()).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let targets = loop {
        let targets = prometheus.active_targets().await;
        let up: BTreeSet<String> = targets
            .iter()
            .filter(|t| t["health"] == "up")
            .filter_map(|t| t["labels"]["instance"].as_str().map(String::from))
            .collect();
        if up == want {
            break targets;
        }
        assert!(std::time::Instant::now() < deadline, "Prometheus's targets never matched: {up:?} vs {want:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for target in &targets {
        let labels = &target["labels"];
        let id = labels["instance"].as_str().unwrap();
        assert_eq!(labels["instance_id"], id, "instance labels ride along");
        assert!(target["discoveredLabels"]["__meta_ec2_private_ip"].as_str().unwrap().starts_with("10.20."));
        assert!(target["scrapeUrl"].as_str().unwrap().starts_with("http://127."), "mapped to loopback");
        let role = if id == member { "asg" } else { "basic" };
        assert_eq!(labels["role"], role);
    }
    // fleetscrape serves the private addresses; Prometheus's relabeling mapped them.
    let sd: serde_json::Value =
        serde_json::from_str(&reqwest::get(format!("http://{http}/api/sd")).await.unwrap().text().await.unwrap())
            .unwrap();
    let groups = sd.as_array().unwrap();
    assert_eq!(groups.len(), hosts.len(), "{sd}");
    for group in groups {
        assert!(group["targets"][0].as_str().unwrap().starts_with("10.20."), "{group}");
        assert_eq!(group["labels"]["instance"], group["labels"]["__meta_ec2_instance_id"]);
        assert!(group["labels"].get("__address__").is_none());
    }
    // It scrapes the test's exporters: each instance's own DMI identity.
    for host in &hosts {
        let id = &host.instance_id;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let rows = prometheus.query(&format!("node_dmi_info{{instance=\"{id}\"}}")).await;
            if let Some(row) = rows.first() {
                assert_eq!(row["metric"]["board_asset_tag"], id.as_str());
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{id} was never scraped by Prometheus");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), daemon).await.expect("daemon stops").unwrap().expect("daemon ok");
}

/// Instances each of `n` replicas scraped (a `scrape_status` row), and the
/// AWS calls each made.
struct Replicas {
    dbs: Vec<std::path::PathBuf>,
    shutdown: CancellationToken,
    daemons: Vec<tokio::task::JoinHandle<Result<(), fleetscrape::daemon::Error>>>,
}

impl Replicas {
    async fn scraped(&self) -> Vec<BTreeSet<String>> {
        let mut out = Vec::new();
        for db in &self.dbs {
            if !db.exists() {
                out.push(BTreeSet::new());
                continue;
            }
            let ids: Vec<String> = sqlx::query_scalar("SELECT DISTINCT instance_id FROM scrape_status WHERE up = 1")
                .fetch_all(&reader(db).await)
                .await
                .unwrap_or_default();
            out.push(ids.into_iter().collect());
        }
        out
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for daemon in self.daemons {
            tokio::time::timeout(Duration::from_secs(30), daemon).await.expect("stops").unwrap().expect("ok");
        }
    }
}

fn replica_config(dir: &Path, moto: &str, rules: &str, mode: &str, index: u32, total: u32) -> Config {
    let yaml = format!(
        "aws:\n  region: ap-northeast-2\n  endpoint_url: {moto}\ndiscovery:\n  refresh_interval: 1s\n  early_refresh_min_interval: 1s\n\
         scrape:\n  interval: 1s\n  timeout: 1s\n  mode: {mode}\nrelabel_configs:\n{rules}\
         storage:\n  path: {}\n  flush_interval: 300ms\nhttp:\n  listen_address: 127.0.0.1:{}\n\
         sharding:\n  total: {total}\n  index: {index}\n",
        dir.join(format!("shard-{index}.db")).display(),
        free_port()
    );
    Config::load(&write_config(dir, &yaml)).unwrap()
}

async fn start_replicas(dir: &Path, moto: &str, rules: &str, mode: &str, n: u32) -> Replicas {
    let shutdown = CancellationToken::new();
    let mut dbs = Vec::new();
    let mut daemons = Vec::new();
    for index in 0..n {
        let sub = dir.join(format!("r{index}"));
        std::fs::create_dir_all(&sub).unwrap();
        let config = replica_config(&sub, moto, rules, mode, index, n);
        dbs.push(config.storage.path.clone().unwrap());
        daemons.push(tokio::spawn(fleetscrape::daemon::run(config, false, shutdown.clone())));
    }
    Replicas { dbs, shutdown, daemons }
}

/// Waits until the replicas together have scraped every one of `want`, then
/// checks that no instance was scraped by two.
async fn assert_exact_cover(replicas: &Replicas, want: &BTreeSet<String>) -> Vec<BTreeSet<String>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let scraped = replicas.scraped().await;
        let union: BTreeSet<String> = scraped.iter().flatten().cloned().collect();
        if want.is_subset(&union) {
            for (i, a) in scraped.iter().enumerate() {
                for b in &scraped[i + 1..] {
                    assert!(a.is_disjoint(b), "an instance scraped by two replicas: {scraped:?}");
                }
            }
            return scraped;
        }
        assert!(std::time::Instant::now() < deadline, "the replicas never covered {want:?}: {scraped:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_cover_every_instance_exactly_once_also_after_a_scale_out() {
    if isolate_network("three_replicas_cover_every_instance_exactly_once_also_after_a_scale_out") {
        return;
    }
    set_test_env();
    let moto = Moto::start();
    let proxy = AwsProxy::start(&moto.url).await;
    let seeder = Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    // Eight basic instances behind 9103..9110 besides the seed's three listeners.
    let mut listeners = BTreeMap::new();
    for port in 9103u16..9111 {
        let tg = seeder.target_group(&format!("basic-{port}"), 9100).await;
        seeder.listener(&seed.lb, i32::from(port), &tg).await;
        let id = seeder.instances(1, &[("Name", "extra")]).await.remove(0);
        seeder.register(&tg, std::slice::from_ref(&id), 9100).await;
        listeners.insert(port, id);
    }
    let first_member = seeder.members(&seed.asg_name).await.remove(0);
    let mut hosts: BTreeMap<String, FakeHost> = BTreeMap::new();
    let ids: Vec<String> = [seed.basic_a.clone(), seed.basic_b.clone(), first_member.clone()]
        .into_iter()
        .chain(listeners.values().cloned())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        hosts.insert(id.clone(), FakeHost::start(id, 0.2, 1000 * (i as u32 + 1), Identity::Dmi));
    }
    let mut members: BTreeMap<u16, Vec<String>> = [
        (9100, vec![hosts[&seed.basic_a].address.clone()]),
        (9101, vec![hosts[&seed.basic_b].address.clone()]),
        (9102, vec![hosts[&first_member].address.clone()]),
    ]
    .into();
    for (port, id) in &listeners {
        members.insert(*port, vec![hosts[id].address.clone()]);
    }
    let emulator = emulator(Balancing::Random, members).await;
    let dir = tempfile::tempdir().unwrap();

    // Through listeners: sharded by listener, an ASG's members stay together.
    let replicas = start_replicas(dir.path(), &proxy.url, &listener_rules(&emulator), "via_alb", 3).await;
    let want: BTreeSet<String> = hosts.keys().cloned().collect();
    let scraped = assert_exact_cover(&replicas, &want).await;
    assert!(scraped.iter().filter(|s| !s.is_empty()).count() >= 2, "the work is split: {scraped:?}");
    seeder.set_desired(&seed.asg_name, 3).await;
    let asg = seeder.members(&seed.asg_name).await;
    for (i, id) in asg.iter().filter(|m| !hosts.contains_key(*m)).cloned().collect::<Vec<_>>().iter().enumerate() {
        hosts.insert(id.clone(), FakeHost::start(id, 0.2, 50_000 + 1000 * i as u32, Identity::Dmi));
    }
    emulator.set_members(9102, &asg.iter().map(|m| hosts[m].address.clone()).collect::<Vec<_>>());
    let want: BTreeSet<String> = hosts.keys().cloned().collect();
    let scraped = assert_exact_cover(&replicas, &want).await;
    let asg_owner: Vec<usize> = (0..3).filter(|i| asg.iter().any(|m| scraped[*i].contains(m))).collect();
    assert_eq!(asg_owner.len(), 1, "every member of the ASG's listener with one replica: {scraped:?}");
    // AWS calls: each replica discovers the whole fleet (then keeps its share).
    proxy.take_calls();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls = proxy.take_calls();
    let total: u64 = calls.values().sum();
    eprintln!("3 replicas, 1 s refresh, 5 s: {total} AWS calls: {calls:?}");
    replicas.stop().await;

    // Directly: sharded by instance id.
    let mut rules = listener_rules(&emulator);
    for host in hosts.values() {
        rules.push_str(&format!(
            "  - {{source_labels: [__meta_ec2_instance_id], regex: '{}', target_label: __address__, replacement: '{}'}}\n",
            host.instance_id, host.address
        ));
    }
    let direct_dir = dir.path().join("direct");
    let replicas = start_replicas(&direct_dir, &moto.url, &rules, "direct", 3).await;
    let running: BTreeSet<String> = hosts.keys().cloned().collect();
    let scraped = assert_exact_cover(&replicas, &running).await;
    for (i, share) in scraped.iter().enumerate() {
        for id in share {
            let expected = fleetscrape::relabel::hash_mod(id, 3);
            assert_eq!(expected, i as u64, "{id}: hashmod of the instance id picks the replica");
        }
    }
    replicas.stop().await;
}
