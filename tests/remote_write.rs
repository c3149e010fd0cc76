//! remote_write end to end against Debian's Prometheus 2.42 as the receiver
//! (`--web.enable-remote-write-receiver`): moto for AWS, one real
//! node_exporter per emulated instance, the loopback ALB emulator, and
//! `fleetscrape run` writing SQLite and remote_write side by side.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::e2e::{CPU_ROWS, SeedFleet, emulator, listener_rules, reader, wait_rows};
use common::fakehost::{FakeHost, Identity};
use common::prometheus::Prometheus;
use common::seed::Seeder;
use common::{Moto, free_port, isolate_network, metric, set_test_env, write_config};
use fleetscrape::config::Config;
use fleetscrape::emulator::{Balancing, Emulator};
use tokio_util::sync::CancellationToken;

/// A via-ALB daemon config for moto at `moto`, listeners on the emulator,
/// `remote_write` as given (a YAML list item or items), `extra` at the top level.
fn config(
    dir: &Path,
    moto: &str,
    emulator: &Emulator,
    db: Option<&Path>,
    http: &str,
    remote: &str,
    extra: &str,
) -> Config {
    let storage = db.map_or_else(
        || "storage:\n  path: null\n".to_string(),
        |db| format!("storage:\n  path: {}\n  flush_interval: 300ms\n", db.display()),
    );
    let yaml = format!(
        "aws:\n  region: ap-northeast-2\n  endpoint_url: {moto}\n\
         discovery:\n  refresh_interval: 2s\n  early_refresh_min_interval: 1s\n\
         scrape:\n  interval: 1s\n  timeout: 1s\n  mode: via_alb\n  stale_after_intervals: 3\n\
         relabel_configs:\n{}{storage}http:\n  listen_address: {http}\nremote_write:\n{remote}{extra}",
        listener_rules(emulator)
    );
    Config::load(&write_config(dir, &yaml)).expect("valid remote_write config")
}

/// `remote_write` list item for `url`, quick to batch and to retry.
fn receiver(url: &str) -> String {
    format!(
        "  - url: {url}\n    name: test\n    queue_config: {{batch_send_deadline: 200ms, min_backoff: 50ms, max_backoff: 500ms}}\n"
    )
}

/// (ms, value) of one stored series of `instance` in SQLite.
async fn sqlite_series(db: &Path, instance: &str, metric: &str, cpu: &str, mode: &str) -> Vec<(i64, f64)> {
    let pool = reader(db).await;
    let rows: Vec<(f64, f64)> = sqlx::query_as(
        "SELECT time, value FROM metric_samples WHERE instance_id = ? AND metric = ? \
         AND json_extract(labels, '$.cpu') = ? AND json_extract(labels, '$.mode') = ? ORDER BY time",
    )
    .bind(instance)
    .bind(metric)
    .bind(cpu)
    .bind(mode)
    .fetch_all(&pool)
    .await
    .unwrap();
    rows.into_iter().map(|(t, v)| ((t * 1000.0).round() as i64, v)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_scenario_reaches_prometheus_per_instance_survives_a_receiver_restart_and_goes_stale() {
    if isolate_network("seed_scenario_reaches_prometheus_per_instance_survives_a_receiver_restart_and_goes_stale") {
        return;
    }
    set_test_env();
    let mut prometheus = Prometheus::start("global: {scrape_interval: 1m}\n").await;
    let SeedFleet { moto, seeder, seed, first_member, mut hosts, emulator } = SeedFleet::start(Balancing::Random).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rw.db");
    let http = format!("127.0.0.1:{}", free_port());
    let config = config(dir.path(), &moto.url, &emulator, Some(&db), &http, &receiver(&prometheus.write_url()), "");
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(fleetscrape::daemon::run(config, false, shutdown.clone()));
    for id in hosts.keys() {
        wait_rows(&db, "3 CPU values", CPU_ROWS, id, 3).await;
    }

    // Scale out while running: two new members.
    seeder.set_desired(&seed.asg_name, 3).await;
    let members = seeder.members(&seed.asg_name).await;
    let new: Vec<String> = members.iter().filter(|m| **m != first_member).cloned().collect();
    for (i, id) in new.iter().enumerate() {
        hosts.insert(id.clone(), FakeHost::start(id, 0.2, 5000 + 1000 * i as u32, Identity::Dmi));
    }
    emulator.set_members(9102, &members.iter().map(|m| hosts[m].address.clone()).collect::<Vec<_>>());
    for id in &new {
        wait_rows(&db, "3 CPU values", CPU_ROWS, id, 3).await;
    }

    // The receiver crashes and comes back: what was queued meanwhile arrives.
    prometheus.stop();
    let url = http.clone();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let retried = metric(&url, "fleetscrape_remote_write_samples_retried_total").await.unwrap_or(0.0);
    assert!(retried > 0.0, "samples were retried while the receiver was down");
    let pending = metric(&url, "fleetscrape_remote_write_samples_pending").await.unwrap_or(0.0);
    assert!(pending > 0.0, "samples wait in the queue");
    eprintln!("receiver down 4 s: {pending} samples pending, {retried} retried");
    prometheus.resume().await;

    // Scale in: moto terminates a member; its series go stale in Prometheus.
    seeder.set_desired(&seed.asg_name, 2).await;
    let remaining = seeder.members(&seed.asg_name).await;
    let gone = members.iter().find(|m| !remaining.contains(m)).expect("a member was terminated").clone();
    emulator.set_members(9102, &remaining.iter().map(|m| hosts[m].address.clone()).collect::<Vec<_>>());
    hosts.get_mut(&gone).unwrap().stop_exporter();
    wait_rows(
        &db,
        "a terminated event",
        "SELECT count(*) FROM events WHERE kind = 'terminated' AND instance_id = ?",
        &gone,
        1,
    )
    .await;
    let last_member = remaining[0].clone();
    let before: i64 = common::e2e::count(&reader(&db).await, CPU_ROWS, &last_member).await;
    wait_rows(&db, "4 more CPU values", CPU_ROWS, &last_member, before + 4).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), daemon).await.expect("daemon stops").unwrap().expect("daemon ok");
    let end = fleetscrape::clock::now_seconds();

    // Every instance under its own `instance` (the instance id, not the ALB
    // address), attributed right: each host's `nice` counter is its signature.
    for host in hosts.values() {
        let id = &host.instance_id;
        let series = prometheus
            .raw_samples(&format!("node_cpu_seconds_total{{instance=\"{id}\",mode=\"nice\"}}"), "10m", end)
            .await;
        assert!(!series.is_empty(), "{id} has no series in Prometheus");
        for (labels, values) in &series {
            assert_eq!(labels["job"], "fleetscrape");
            assert_eq!(labels["instance_id"], id.as_str());
            assert!(values.iter().all(|(_, v)| *v == host.signature), "{id}: a sample of another host: {values:?}");
        }
        // The same values at the same times as in SQLite: nothing lost across
        // the receiver's restart, nothing reordered.
        let theirs = prometheus
            .raw_samples(&format!("node_cpu_seconds_total{{instance=\"{id}\",cpu=\"0\",mode=\"user\"}}"), "10m", end)
            .await;
        assert_eq!(theirs.len(), 1, "{id}: one series");
        let ours = sqlite_series(&db, id, "node_cpu_seconds_total", "0", "user").await;
        assert!(ours.len() >= 3, "{id}: {} stored", ours.len());
        assert_eq!(theirs[0].1, ours, "{id}: Prometheus and SQLite differ");
        let role = if *id == seed.basic_a || *id == seed.basic_b { "basic" } else { "asg" };
        assert_eq!(theirs[0].0["role"], role);
        if role == "asg" {
            assert_eq!(theirs[0].0["asg_name"], seed.asg_name.as_str());
        }
    }
    // `up` per instance, and the terminated one stale: a query after its
    // markers returns nothing for it, while it had samples before.
    let up_now: BTreeSet<String> = prometheus
        .query_at("up", Some(end))
        .await
        .iter()
        .map(|s| s["metric"]["instance"].as_str().unwrap().to_string())
        .collect();
    assert!(!up_now.contains(&gone), "{gone} is stale: {up_now:?}");
    let up_before = prometheus.raw_samples(&format!("up{{instance=\"{gone}\"}}"), "10m", end).await;
    assert!(up_before.first().is_some_and(|(_, v)| v.iter().any(|(_, up)| *up == 1.0)), "{gone} was up before");
    assert!(up_now.contains(&seed.basic_a) && up_now.contains(&last_member), "{up_now:?}");
    let cpu_now = prometheus.query_at(&format!("node_cpu_seconds_total{{instance=\"{gone}\"}}"), Some(end)).await;
    assert!(cpu_now.is_empty(), "{gone}'s series are stale: {cpu_now:?}");
    let reached = prometheus.query_at("fleetscrape_alb_reached", Some(end)).await;
    assert!(!reached.is_empty(), "fleetscrape_alb_reached is exported");
    let durations = prometheus.query_at("scrape_duration_seconds", Some(end)).await;
    assert!(!durations.is_empty());
}

/// A stand-in receiver answering with a status of the test's choosing
/// (`Retry-After: 1` on 503), counting requests and keeping accepted bodies.
struct StubReceiver {
    url: String,
    status: Arc<AtomicU64>,
    requests: Arc<AtomicUsize>,
    accepted: Arc<std::sync::Mutex<Vec<fleetscrape::remote_write::wire::DecodedSeries>>>,
}

async fn stub_receiver() -> StubReceiver {
    use axum::http::StatusCode;
    let status = Arc::new(AtomicU64::new(200));
    let requests = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s, r, a) = (Arc::clone(&status), Arc::clone(&requests), Arc::clone(&accepted));
    let app = axum::Router::new().route(
        "/write",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (s, r, a) = (Arc::clone(&s), Arc::clone(&r), Arc::clone(&a));
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                let code = StatusCode::from_u16(s.load(Ordering::SeqCst) as u16).unwrap();
                if code.is_success() {
                    a.lock()
                        .unwrap()
                        .extend(fleetscrape::remote_write::wire::decode(&body).expect("a valid WriteRequest"));
                }
                (code, [("retry-after", "1")], "out of order sample")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/write", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    StubReceiver { url, status, requests, accepted }
}

/// The seed topology in moto, with one real exporter behind listener 9100.
async fn one_exporter_fleet() -> (Moto, FakeHost, Emulator) {
    let moto = Moto::start();
    let seed = Seeder::new(&moto.url).await.seed_topology().await;
    let host = FakeHost::start(&seed.basic_a, 0.5, 1000, Identity::Dmi);
    let emulator = emulator(Balancing::Random, [(9100, vec![host.address.clone()])].into()).await;
    (moto, host, emulator)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_400_is_counted_and_dropped_without_a_retry_loop_and_a_503_is_retried_in_order() {
    if isolate_network("a_400_is_counted_and_dropped_without_a_retry_loop_and_a_503_is_retried_in_order") {
        return;
    }
    set_test_env();
    let stub = stub_receiver().await;
    stub.status.store(400, Ordering::SeqCst);
    let (moto, _host, emulator) = one_exporter_fleet().await;
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    // No SQLite at all: remote_write only.
    let config = config(dir.path(), &moto.url, &emulator, None, &http, &receiver(&stub.url), "");
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(fleetscrape::daemon::run(config, false, shutdown.clone()));
    let url = http.clone();
    let failed_metric = "fleetscrape_remote_write_samples_failed_total";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric(&url, failed_metric).await.unwrap_or(0.0) < 1000.0 {
        assert!(std::time::Instant::now() < deadline, "no batch was rejected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests = stub.requests.load(Ordering::SeqCst) as f64;
    let rejected = metric(&url, "fleetscrape_remote_write_requests_failed_total").await.unwrap_or(0.0);
    assert!(
        requests <= rejected + 1.0,
        "every request was a new batch, none a retry: {requests} requests, {rejected} rejected"
    );
    assert_eq!(metric(&url, "fleetscrape_remote_write_samples_retried_total").await, Some(0.0));

    // 503 with Retry-After: retried, then accepted, in order per series.
    stub.status.store(503, Ordering::SeqCst);
    let before = stub.requests.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = stub.requests.load(Ordering::SeqCst) - before;
    assert!(during <= 5, "Retry-After: 1 spaces the retries ({during} requests in 3 s)");
    assert!(metric(&url, "fleetscrape_remote_write_samples_retried_total").await.unwrap_or(0.0) > 0.0);
    stub.status.store(200, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric(&url, "fleetscrape_remote_write_samples_pending").await.unwrap_or(1.0) > 0.0
        || stub.accepted.lock().unwrap().is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "the queue never drained");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), daemon).await.expect("daemon stops").unwrap().expect("daemon ok");
    let accepted = stub.accepted.lock().unwrap();
    let mut last: BTreeMap<Vec<(String, String)>, i64> = BTreeMap::new();
    for series in accepted.iter() {
        for (ms, _) in &series.samples {
            let previous = last.insert(series.labels.clone(), *ms);
            assert!(previous.is_none_or(|p| p < *ms), "a series went back in time: {:?}", series.labels);
        }
        let names: Vec<&str> = series.labels.iter().map(|(k, _)| k.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "labels sorted by name");
    }
    let ups = accepted.iter().filter(|s| s.labels.iter().any(|(k, v)| k == "__name__" && v == "up")).count();
    assert!(ups >= 2, "up is sent per interval ({ups})");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_shutdown_pending_samples_are_sent_within_the_budget_or_counted_lost() {
    if isolate_network("on_shutdown_pending_samples_are_sent_within_the_budget_or_counted_lost") {
        return;
    }
    set_test_env();
    let stub = stub_receiver().await;
    let (moto, _host, emulator) = one_exporter_fleet().await;
    let dir = tempfile::tempdir().unwrap();
    // Batches that never fill and a deadline that never comes: only shutdown sends.
    let remote = format!(
        "  - url: {}\n    queue_config: {{batch_send_deadline: 10m, max_samples_per_send: 1000000, capacity: 1000000}}\n",
        stub.url
    );
    for receiver_up in [true, false] {
        stub.status.store(if receiver_up { 200 } else { 503 }, Ordering::SeqCst);
        stub.accepted.lock().unwrap().clear();
        let http = format!("127.0.0.1:{}", free_port());
        let config = config(dir.path(), &moto.url, &emulator, None, &http, &remote, "shutdown_timeout: 3s\n");
        let shutdown = CancellationToken::new();
        let daemon = tokio::spawn(fleetscrape::daemon::run(config, false, shutdown.clone()));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while metric(&http, "fleetscrape_remote_write_samples_pending").await.unwrap_or(0.0) < 1000.0 {
            assert!(std::time::Instant::now() < deadline, "nothing was queued");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let before = stub.requests.load(Ordering::SeqCst);
        let pending = metric(&http, "fleetscrape_remote_write_samples_pending").await.unwrap();
        shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), daemon).await.expect("daemon stops").unwrap();
        result.expect("within the shutdown budget, whatever the receiver does");
        let sent: usize = stub.accepted.lock().unwrap().iter().map(|s| s.samples.len()).sum();
        if receiver_up {
            assert_eq!(before, 0, "nothing was sent before shutdown");
            assert!(sent as f64 >= pending, "the pending samples were sent at shutdown: {sent} of {pending}");
        } else {
            assert_eq!(sent, 0);
            assert!(stub.requests.load(Ordering::SeqCst) > before, "it tried");
        }
    }
}
