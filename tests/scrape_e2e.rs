//! End to end with real parts: moto for AWS, one real node_exporter per
//! emulated instance (fake hosts with known identities and CPU levels), the
//! loopback ALB emulator, and `fleetscrape run` writing SQLite. Each test runs
//! in a network namespace with only loopback where `unshare --net` works.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::e2e::{CPU_ROWS, assert_no_misattribution, config, emulator, listener_rules, reader, wait_rows};
use common::fakehost::{FakeHost, Identity};
use common::seed::Seeder;
use common::{Moto, isolate_network, set_test_env, write_config};
use fleetscrape::config::Config;
use fleetscrape::emulator::{Balancing, Emulator};
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread")]
async fn seed_topology_scale_out_and_in_keeps_one_correct_series_per_instance() {
    if isolate_network("seed_topology_scale_out_and_in_keeps_one_correct_series_per_instance") {
        return;
    }
    set_test_env();
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    let first_member = seeder.members(&seed.asg_name).await.remove(0);
    let busy: BTreeMap<String, f64> =
        [(seed.basic_a.clone(), 0.9), (seed.basic_b.clone(), 0.1), (first_member.clone(), 0.6)].into();
    let mut hosts: BTreeMap<String, FakeHost> = BTreeMap::new();
    for (i, (id, level)) in busy.iter().enumerate() {
        hosts.insert(id.clone(), FakeHost::start(id, *level, 1000 * (i as u32 + 1), Identity::Dmi));
    }
    let emulator = emulator(
        Balancing::Random,
        [
            (9100, vec![hosts[&seed.basic_a].address.clone()]),
            (9101, vec![hosts[&seed.basic_b].address.clone()]),
            (9102, vec![hosts[&first_member].address.clone()]),
        ]
        .into(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e2e.db");
    let config = config(dir.path(), &moto.url, &emulator, &db, "");
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(fleetscrape::daemon::run(config, false, shutdown.clone()));

    for id in busy.keys() {
        wait_rows(&db, "3 CPU values", CPU_ROWS, id, 3).await;
    }

    // Scale out to 3 while running: two new members idle at known levels.
    seeder.set_desired(&seed.asg_name, 3).await;
    let members = seeder.members(&seed.asg_name).await;
    let new: Vec<String> = members.iter().filter(|m| **m != first_member).cloned().collect();
    for (i, (id, level)) in new.iter().zip([0.1, 0.3]).enumerate() {
        hosts.insert(id.clone(), FakeHost::start(id, level, 5000 + 1000 * i as u32, Identity::Dmi));
    }
    let asg_addresses: Vec<String> = members.iter().map(|m| hosts[m].address.clone()).collect();
    emulator.set_members(9102, &asg_addresses);
    for id in &new {
        wait_rows(&db, "3 CPU values", CPU_ROWS, id, 3).await;
    }

    // Scale in back to 1: moto terminates two members (and keeps them registered).
    seeder.set_desired(&seed.asg_name, 1).await;
    let remaining = seeder.members(&seed.asg_name).await;
    let gone: Vec<String> = members.iter().filter(|m| !remaining.contains(m)).cloned().collect();
    assert_eq!(gone.len(), 2);
    emulator.set_members(9102, &[hosts[&remaining[0]].address.clone()]);
    for id in &gone {
        hosts.get_mut(id).unwrap().stop_exporter();
        wait_rows(
            &db,
            "a terminated event",
            "SELECT count(*) FROM events WHERE kind = 'terminated' AND instance_id = ?",
            id,
            1,
        )
        .await;
    }
    wait_rows(&db, "3 more CPU values", CPU_ROWS, &remaining[0], 8).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), daemon).await.expect("daemon stops").unwrap().expect("daemon ok");

    let pool = reader(&db).await;
    for host in hosts.values() {
        let n = assert_no_misattribution(&pool, host).await;
        assert!(n >= 12, "{}: {n} samples (4 CPUs × ≥3 scrapes)", host.instance_id);
    }
    let expected: BTreeMap<String, f64> =
        busy.into_iter().chain(new.iter().cloned().zip([0.1, 0.3])).map(|(id, b)| (id, b * 100.0)).collect();
    // CPU busy is a ratio of counters: every point is within the counters'
    // resolution (1 tick of 10 ms over ~4 CPU-seconds: 0.25 points), whatever
    // the balancer's and the exporter's latency.
    let mut worst_seen = 0.0f64;
    for (id, want) in &expected {
        let cpu = common::e2e::cpu_deviation(&pool, id, *want).await;
        assert!(cpu.points >= 2, "{id}: {} CPU points", cpu.points);
        assert!(cpu.beyond_resolution.is_empty(), "{id} at {want}%: {:#?}", cpu.beyond_resolution);
        worst_seen = worst_seen.max(cpu.worst);
    }
    eprintln!("largest CPU busy deviation over {} instances: {worst_seen:.3} points", expected.len());
    for id in &gone {
        let terminated: f64 =
            sqlx::query_scalar("SELECT min(time) FROM events WHERE kind = 'terminated' AND instance_id = ?")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        let last: f64 = sqlx::query_scalar("SELECT max(time) FROM metric_samples WHERE instance_id = ?")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(last <= terminated + 1.0, "{id} still stored samples after its termination ({last} > {terminated})");
    }
    let sizes: Vec<i64> =
        sqlx::query_scalar("SELECT members FROM asg_membership ORDER BY time").fetch_all(&pool).await.unwrap();
    assert_eq!((sizes.iter().max(), sizes.last()), (Some(&3), Some(&1)), "{sizes:?}");
    let joined: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE kind = 'joined'").fetch_one(&pool).await.unwrap();
    assert!(joined >= 2, "the new members joined");
    let via_alb: i64 =
        sqlx::query_scalar("SELECT count(*) FROM scrape_status WHERE up = 1 AND path LIKE 'via_alb backend:9102 %'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(via_alb > 10);
}

/// Runs `fleetscrape run --once` and returns a reader on its database.
async fn run_once(dir: &Path, moto: &str, emulator: &Emulator, extra: &str) -> (SqlitePool, PathBuf) {
    let db = dir.join(format!("once-{}.db", fastrand::u32(..)));
    let config = config(dir, moto, emulator, &db, extra);
    fleetscrape::daemon::run(config, true, CancellationToken::new()).await.expect("run --once");
    (reader(&db).await, db)
}

async fn status(pool: &SqlitePool, id: &str) -> (i64, Option<String>, Option<String>) {
    sqlx::query_as("SELECT up, reason, error FROM scrape_status WHERE instance_id = ?")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("no scrape_status for {id}: {e}"))
}

/// A stub exporter on loopback that answers `body` to everything.
async fn stub(body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { body }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_and_strangers_are_charged_to_the_right_place() {
    if isolate_network("failures_and_strangers_are_charged_to_the_right_place") {
        return;
    }
    set_test_env();
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    seeder.set_desired(&seed.asg_name, 3).await;
    let members = seeder.members(&seed.asg_name).await;
    let (m1, m2, m3) = (&members[0], &members[1], &members[2]);
    let host1 = FakeHost::start(m1, 0.5, 1000, Identity::Dmi);
    let mut host2 = FakeHost::start(m2, 0.5, 2000, Identity::Dmi);
    host2.stop_exporter();
    // m3 has no DMI (a non-Nitro host): its textfile metric identifies it.
    let host3 = FakeHost::start(m3, 0.5, 3000, Identity::Textfile);
    // A stranger in the ASG's pool with no identity at all.
    let nobody = FakeHost::start("i-nobody", 0.5, 4000, Identity::None);
    // 9100 answers with basic-b's identity (a target group registered wrongly);
    // 9101 answers garbage.
    let impostor = FakeHost::start(&seed.basic_b, 0.5, 5000, Identity::Dmi);
    let garbage = stub("node_load1{oops 1\n".into()).await;
    let pool_9102 = vec![host1.address.clone(), host2.address.clone(), host3.address.clone(), nobody.address.clone()];
    let emulator = emulator(
        Balancing::RoundRobin,
        [(9100, vec![impostor.address.clone()]), (9101, vec![garbage]), (9102, pool_9102)].into(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (pool, _) = run_once(dir.path(), &moto.url, &emulator, "").await;

    assert_eq!(status(&pool, m1).await.0, 1, "the others are unaffected");
    assert_eq!(status(&pool, m3).await.0, 1, "identified by the textfile metric");
    let (up, reason, error) = status(&pool, m2).await;
    assert_eq!((up, reason.as_deref()), (0, Some("not_reached_via_alb")));
    assert!(error.unwrap_or_default().contains("502"), "the round's last error is the 502 of the down exporter");
    let (up, reason, _) = status(&pool, &seed.basic_a).await;
    assert_eq!((up, reason.as_deref()), (0, Some("unattributed")), "basic-b's payload is not basic-a's");
    let (up, reason, error) = status(&pool, &seed.basic_b).await;
    assert_eq!((up, reason.as_deref()), (0, Some("parse_error")));
    assert!(error.unwrap_or_default().contains("line 1"), "the error names the line");

    let round: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT members, requests, reached, unattributed, errors, budget FROM alb_rounds WHERE target_group = 'web-asg'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(round.0, 3);
    // Nothing learned yet: sized for uniform random, 3 × (2/3)^16 ≤ 0.5 %.
    assert_eq!((round.1, round.5), (16, 16), "the whole budget spent: m2 is never reached");
    assert_eq!(round.2, 2);
    assert!(
        round.3 >= 2 && round.4 >= 2,
        "the stranger's payloads are unattributed, the dead member's requests errors: {round:?}"
    );
    let stored: Vec<String> = sqlx::query_scalar("SELECT DISTINCT instance_id FROM metric_samples ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut expected = vec![m1.clone(), m3.clone()];
    expected.sort();
    assert_eq!(stored, expected, "nothing stored under a guess");
    assert_no_misattribution(&pool, &host1).await;
    assert_no_misattribution(&pool, &host3).await;

    // A limit breach fails that scrape alone: basic-b's listener now serves a
    // real payload of basic-b with more samples than the limit allows.
    let mut big = String::from("node_dmi_info{board_asset_tag=\"");
    big.push_str(&seed.basic_b);
    big.push_str("\"} 1\n");
    for i in 0..300 {
        big.push_str(&format!("filler{{i=\"{i}\"}} 1\n"));
    }
    emulator.set_members(9101, &[stub(big).await]);
    let host_a = FakeHost::start(&seed.basic_a, 0.5, 6000, Identity::Dmi);
    emulator.set_members(9100, std::slice::from_ref(&host_a.address));
    let (pool, _) = run_once(dir.path(), &moto.url, &emulator, "  sample_limit: 250\n").await;
    let (up, reason, error) = status(&pool, &seed.basic_b).await;
    assert_eq!((up, reason.as_deref()), (0, Some("limit_exceeded")), "{error:?}");
    assert!(error.unwrap_or_default().contains("sample_limit exceeded"));
    assert_eq!(status(&pool, m1).await.0, 1, "other targets are unaffected");
}

/// Relabel rules sending each instance's `__address__` to `addresses[id]`.
fn address_rules(addresses: &BTreeMap<String, String>) -> String {
    addresses
        .iter()
        .map(|(id, address)| {
            format!("  - {{source_labels: [__meta_ec2_instance_id], regex: '{id}', target_label: __address__, replacement: '{address}'}}\n")
        })
        .collect()
}

/// A config like [`config`] but in `mode`, with `__address__` rewritten too.
fn config_with_addresses(
    dir: &Path,
    moto: &str,
    emulator: &Emulator,
    db: &Path,
    mode: &str,
    addresses: &BTreeMap<String, String>,
    http: &str,
) -> Config {
    let mut yaml = String::new();
    yaml.push_str(&format!("aws:\n  region: ap-northeast-2\n  endpoint_url: {moto}\n"));
    yaml.push_str("discovery:\n  refresh_interval: 2s\n");
    yaml.push_str(&format!(
        "scrape:\n  interval: 1s\n  timeout: 1s\n  direct_connect_timeout: 500ms\n  mode: {mode}\n"
    ));
    yaml.push_str("relabel_configs:\n");
    yaml.push_str(&listener_rules(emulator));
    yaml.push_str(&address_rules(addresses));
    yaml.push_str(&format!(
        "storage:\n  path: {}\n  flush_interval: 300ms\nhttp:\n  listen_address: {http}\n",
        db.display()
    ));
    Config::load(&write_config(dir, &yaml)).expect("valid config")
}

async fn paths(pool: &SqlitePool) -> BTreeMap<String, (i64, String)> {
    let rows: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT instance_id, up, path FROM scrape_status").fetch_all(pool).await.unwrap();
    rows.into_iter().map(|(id, up, path)| (id, (up, path))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_and_auto_modes_and_the_http_endpoint() {
    if isolate_network("direct_and_auto_modes_and_the_http_endpoint") {
        return;
    }
    set_test_env();
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    let member = seeder.members(&seed.asg_name).await.remove(0);
    let ids = [seed.basic_a.clone(), seed.basic_b.clone(), member.clone()];
    let hosts: Vec<FakeHost> =
        ids.iter().enumerate().map(|(i, id)| FakeHost::start(id, 0.25, 100 * (i as u32 + 1), Identity::Dmi)).collect();
    let by_port: BTreeMap<u16, Vec<String>> =
        [9100, 9101, 9102].into_iter().zip(&hosts).map(|(port, h)| (port, vec![h.address.clone()])).collect();
    let emulator = emulator(Balancing::Random, by_port).await;
    let dir = tempfile::tempdir().unwrap();

    // direct: every instance at its own (relabeled) address.
    let direct: BTreeMap<String, String> = hosts.iter().map(|h| (h.instance_id.clone(), h.address.clone())).collect();
    let db = dir.path().join("direct.db");
    let config = config_with_addresses(dir.path(), &moto.url, &emulator, &db, "direct", &direct, "127.0.0.1:0");
    fleetscrape::daemon::run(config, true, CancellationToken::new()).await.expect("direct --once");
    let pool = reader(&db).await;
    for host in &hosts {
        assert_eq!(paths(&pool).await[&host.instance_id], (1, format!("direct {}", host.address)));
        assert_no_misattribution(&pool, host).await;
    }

    // auto: basic-a's direct address refuses connections; it falls back to its listener.
    let mut auto = direct.clone();
    auto.insert(seed.basic_a.clone(), "127.0.0.2:1".into());
    let db = dir.path().join("auto.db");
    let http = format!("127.0.0.1:{}", common::free_port());
    let config = config_with_addresses(dir.path(), &moto.url, &emulator, &db, "auto", &auto, &http);
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(fleetscrape::daemon::run(config, false, shutdown.clone()));
    for id in &ids {
        wait_rows(&db, "3 CPU values", CPU_ROWS, id, 3).await;
    }
    let pool = reader(&db).await;
    let status = paths(&pool).await;
    assert_eq!(status[&seed.basic_a], (1, "via_alb backend:9100 basic-a".into()), "fell back to the listener");
    assert_eq!(status[&seed.basic_b].1, format!("direct {}", hosts[1].address));
    for host in &hosts {
        assert_no_misattribution(&pool, host).await;
    }

    // The HTTP endpoint of the running daemon.
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("http://{http}{path}")).send();
    assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok\n");
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    let parsed = fleetscrape::exposition::parse(&metrics, &Default::default()).expect("own metrics parse");
    let value = |name: &str, label: Option<(&str, &str)>| {
        parsed
            .samples
            .iter()
            .filter(|s| s.name == name && label.is_none_or(|(k, v)| s.label(k).as_deref() == Some(v)))
            .map(|s| s.value)
            .sum::<f64>()
    };
    assert!(value("fleetscrape_scrapes_total", Some(("path", "direct"))) >= 4.0, "{metrics}");
    assert!(value("fleetscrape_scrapes_total", Some(("path", "via_alb"))) >= 2.0, "{metrics}");
    assert!(value("fleetscrape_aws_api_calls_total", Some(("operation", "DescribeTargetHealth"))) >= 3.0);
    assert!(value("fleetscrape_discovery_refreshes_total", None) >= 1.0);
    assert!(value("fleetscrape_store_samples_total", None) > 100.0);
    assert_eq!(value("fleetscrape_targets", Some(("state", "scraped"))), 3.0);
    let targets: Vec<serde_json::Value> =
        serde_json::from_str(&get("/api/targets").await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(targets.len(), 3);
    for target in &targets {
        assert_eq!(target["up"], true, "{target}");
        assert!(target["last_scrape"].as_f64().is_some());
    }
    let basic_a = targets.iter().find(|t| t["instance_id"] == seed.basic_a.as_str()).unwrap();
    assert_eq!(basic_a["path"], "via_alb backend:9100 basic-a");
    assert_eq!(basic_a["role"], "basic");
    // Its target group's coverage and price, learned from its rounds.
    let group = &basic_a["target_group"];
    assert_eq!(group["name"], "basic-a", "{basic_a}");
    assert_eq!((group["coverage"].as_f64(), group["requests_per_member"].as_f64()), (Some(1.0), Some(1.0)), "{group}");
    assert!(group["rounds"].as_u64() >= Some(1) && group["rounds"] == group["complete_rounds"], "{group}");
    assert!(basic_a["last_error"].is_null() && basic_a["reason"].is_null(), "{basic_a}");
    assert_eq!(value("fleetscrape_alb_coverage_ratio", Some(("target_group", "basic-a"))), 1.0, "{metrics}");
    assert_eq!(value("fleetscrape_alb_requests_per_member", Some(("target_group", "basic-a"))), 1.0, "{metrics}");
    assert!(value("fleetscrape_alb_rounds_complete_total", Some(("target_group", "basic-a"))) >= 1.0, "{metrics}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), daemon).await.expect("daemon stops").unwrap().expect("daemon ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_identity_triggers_an_early_refresh() {
    if isolate_network("an_unknown_identity_triggers_an_early_refresh") {
        return;
    }
    set_test_env();
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    let first = seeder.members(&seed.asg_name).await.remove(0);
    let host = FakeHost::start(&first, 0.2, 1000, Identity::Dmi);
    let emulator = emulator(Balancing::Random, [(9102, vec![host.address.clone()])].into()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("early.db");
    let mut config = config(dir.path(), &moto.url, &emulator, &db, "");
    // Scheduled refreshes are an hour apart: only an early refresh can reveal new members.
    config.discovery.refresh_interval = "1h".parse().unwrap();
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(fleetscrape::daemon::run(config, false, shutdown.clone()));
    wait_rows(&db, "3 CPU values", CPU_ROWS, &first, 3).await;

    seeder.set_desired(&seed.asg_name, 2).await;
    let new = seeder.members(&seed.asg_name).await.into_iter().find(|m| *m != first).unwrap();
    let new_host = FakeHost::start(&new, 0.7, 2000, Identity::Dmi);
    emulator.set_members(9102, &[host.address.clone(), new_host.address.clone()]);
    wait_rows(&db, "CPU values after an early refresh", CPU_ROWS, &new, 2).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), daemon).await.expect("daemon stops").unwrap().expect("daemon ok");

    let pool = reader(&db).await;
    assert_no_misattribution(&pool, &host).await;
    assert_no_misattribution(&pool, &new_host).await;
    let joined: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE kind = 'joined' AND instance_id = ?")
        .bind(&new)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(joined, 1, "the early refresh recorded the new member");
}

/// The seed topology with its ASG scaled to one member per level, each a
/// fake host at that CPU level (DMI identity).
struct AsgFleet {
    moto: Moto,
    hosts: Vec<FakeHost>,
}

impl AsgFleet {
    async fn start(levels: &[f64]) -> Self {
        set_test_env();
        let moto = Moto::start();
        let seeder = Seeder::new(&moto.url).await;
        let seed = seeder.seed_topology().await;
        seeder.set_desired(&seed.asg_name, i32::try_from(levels.len()).unwrap()).await;
        let members = seeder.members(&seed.asg_name).await;
        let hosts = members
            .iter()
            .zip(levels)
            .enumerate()
            .map(|(i, (id, level))| FakeHost::start(id, *level, 100 * (i as u32 + 1), Identity::Dmi))
            .collect();
        Self { moto, hosts }
    }

    fn addresses(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.address.clone()).collect()
    }

    /// Runs the daemon until every host has `cpu_rows` CPU values, then stops it.
    async fn run_until(&self, config: Config, db: &Path, cpu_rows: i64) {
        let shutdown = CancellationToken::new();
        let daemon = tokio::spawn(fleetscrape::daemon::run(config, false, shutdown.clone()));
        for host in &self.hosts {
            wait_rows(db, "CPU values", CPU_ROWS, &host.instance_id, cpu_rows).await;
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), daemon).await.expect("daemon stops").unwrap().expect("daemon ok");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_member_is_stored_once_per_interval_and_its_cpu_stays_exact() {
    if isolate_network("a_late_member_is_stored_once_per_interval_and_its_cpu_stays_exact") {
        return;
    }
    // The measured defect: interval 2 s, timeout 1500ms, one ASG member
    // answering every request 0.6 s late under random balancing: the same
    // instance was stored at t and t + 0.7 s, then not for 3.3 s.
    let levels = [0.2, 0.5, 0.8];
    let fleet = AsgFleet::start(&levels).await;
    let late = fleet.hosts[0].address.clone();
    let emulator = common::e2e::emulator_with(Balancing::Random, [(9102, fleet.addresses())].into(), |config| {
        config.member_delays.insert(late, Duration::from_millis(600));
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("late.db");
    let mut config = config(dir.path(), &fleet.moto.url, &emulator, &db, "");
    config.scrape.interval = "2s".parse().unwrap();
    config.scrape.timeout = "1500ms".parse().unwrap();
    fleet.run_until(config, &db, 6).await;

    let pool = reader(&db).await;
    let group: String = sqlx::query_scalar("SELECT target_group FROM alb_rounds WHERE members = 3 LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    for (host, level) in fleet.hosts.iter().zip(levels) {
        assert_no_misattribution(&pool, host).await;
        let windows = common::e2e::stores_per_round_window(&pool, &group, &host.instance_id).await;
        assert!(windows.iter().all(|&n| n <= 1), "{}: stored twice in one interval: {windows:?}", host.instance_id);
        let cpu = common::e2e::cpu_deviation(&pool, &host.instance_id, level * 100.0).await;
        eprintln!("{}: {} CPU points, largest deviation {:.3}", host.instance_id, cpu.points, cpu.worst);
        assert!(
            cpu.beyond_resolution.is_empty(),
            "{}: CPU off by more than its counters resolve although only its request time moved: {:#?}",
            host.instance_id,
            cpu.beyond_resolution
        );
    }
    let late_windows = common::e2e::stores_per_round_window(&pool, &group, &fleet.hosts[0].instance_id).await;
    let rounds = late_windows.len().saturating_sub(1); // the last round may not have been flushed whole
    let reached = late_windows.iter().take(rounds).filter(|&&n| n == 1).count();
    assert!(reached * 10 >= rounds * 8, "the late member reached in {reached} of {rounds} rounds");
}

#[tokio::test(flavor = "multi_thread")]
async fn skewed_balancing_is_learned_and_coverage_is_reported() {
    if isolate_network("skewed_balancing_is_learned_and_coverage_is_reported") {
        return;
    }
    // One member takes 70 % of requests. The pure core's statistical tests
    // prove the percentages; this is the smoke run with real parts.
    let fleet = AsgFleet::start(&[0.3, 0.3, 0.3]).await;
    let emulator =
        common::e2e::emulator_with(Balancing::Skewed, [(9102, fleet.addresses())].into(), |config| config.skew = 0.7)
            .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("skew.db");
    fleet.run_until(config(dir.path(), &fleet.moto.url, &emulator, &db, ""), &db, 15).await;

    let pool = reader(&db).await;
    for host in &fleet.hosts {
        assert_no_misattribution(&pool, host).await;
    }
    let (rounds, complete, requests, wanted): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), sum(reached_wanted = wanted), sum(requests), sum(wanted) FROM alb_rounds WHERE members = 3",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let coverage = complete as f64 / rounds as f64;
    eprintln!(
        "skewed 70% N=3 end to end: {complete} of {rounds} rounds reached every member ({:.1}%), {:.2} requests per member per interval",
        coverage * 100.0,
        requests as f64 / wanted as f64
    );
    assert!(rounds >= 15);
    // Sized for 99.5 %, the cap (24) gives ~96 % at this skew once learned
    // (the first round, unlearned, ~85 %): fewer than 70 % of 15+ rounds has a
    // probability of ~1e-3.
    assert!(coverage >= 0.7, "coverage {coverage:.3}");
}
