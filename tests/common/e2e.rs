//! Helpers for end-to-end tests: the emulator, a daemon config wired to it,
//! database readers opened like Grafana's plugin, and waits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fleetscrape::config::Config;
use fleetscrape::emulator::{Balancing, Emulator, EmulatorConfig};
use sqlx::SqlitePool;

use super::fakehost::{FakeHost, Identity};
use super::seed::{SeedTopology, Seeder};
use super::{Moto, set_test_env, write_config};

/// The seed's topology in moto, a real node_exporter per instance (Basic A
/// at 90 % CPU, Basic B at 10 %, the ASG's first member at 60 %), and the
/// ALB emulator's listeners 9100, 9101 and 9102 forwarding to them.
pub struct SeedFleet {
    pub moto: Moto,
    pub seeder: Seeder,
    pub seed: SeedTopology,
    pub first_member: String,
    pub hosts: BTreeMap<String, FakeHost>,
    pub emulator: Emulator,
}

impl SeedFleet {
    /// Seeds moto, starts the exporters and the emulator with `balancing`.
    pub async fn start(balancing: Balancing) -> Self {
        Self::start_with(balancing, [(0.9, false), (0.1, false), (0.6, false)]).await
    }

    /// The same with each host's busy share (0..1) and whether it reports
    /// known figures ([`FakeHost::start_with_figures`]): Basic A, Basic B, the
    /// group's first member, in that order.
    pub async fn start_with(balancing: Balancing, levels: [(f64, bool); 3]) -> Self {
        set_test_env();
        let moto = Moto::start();
        let seeder = Seeder::new(&moto.url).await;
        let seed = seeder.seed_topology().await;
        let first_member = seeder.members(&seed.asg_name).await.remove(0);
        let mut hosts = BTreeMap::new();
        for (i, (id, (busy, figures))) in
            [&seed.basic_a, &seed.basic_b, &first_member].into_iter().zip(levels).enumerate()
        {
            let signature = 1000 * (i as u32 + 1);
            let host = match figures {
                true => FakeHost::start_with_figures(id, busy, signature),
                false => FakeHost::start(id, busy, signature, Identity::Dmi),
            };
            hosts.insert(id.clone(), host);
        }
        let listeners = [
            (9100, vec![hosts[&seed.basic_a].address.clone()]),
            (9101, vec![hosts[&seed.basic_b].address.clone()]),
            (9102, vec![hosts[&first_member].address.clone()]),
        ];
        let emulator = emulator(balancing, listeners.into()).await;
        Self { moto, seeder, seed, first_member, hosts, emulator }
    }
}

pub async fn emulator(balancing: Balancing, members: BTreeMap<u16, Vec<String>>) -> Emulator {
    emulator_with(balancing, members, |_| {}).await
}

/// An emulator with settings changed by `tune` (skew, late members, group cookie).
pub async fn emulator_with(
    balancing: Balancing,
    members: BTreeMap<u16, Vec<String>>,
    tune: impl FnOnce(&mut EmulatorConfig),
) -> Emulator {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners = members.into_iter().map(|(port, m)| (port, (any, m))).collect();
    let mut config =
        EmulatorConfig { member_timeout: Duration::from_secs(2), ..EmulatorConfig::new(listeners, balancing) };
    tune(&mut config);
    Emulator::start(config).await.expect("emulator")
}

/// Relabel rules sending each listener's `__alb_address__` to the emulator.
pub fn listener_rules(emulator: &Emulator) -> String {
    emulator
        .addresses
        .iter()
        .map(|(port, address)| {
            format!("  - {{source_labels: [__meta_elbv2_listener_port], regex: '{port}', target_label: __alb_address__, replacement: '{address}'}}\n")
        })
        .collect()
}

/// A config for moto at `moto`, listeners mapped onto the emulator, `extra` appended.
pub fn config(dir: &Path, moto: &str, emulator: &Emulator, db: &Path, extra: &str) -> Config {
    let rules = listener_rules(emulator);
    let yaml = format!(
        "aws:\n  region: ap-northeast-2\n  endpoint_url: {moto}\n\
         discovery:\n  refresh_interval: 2s\n  early_refresh_min_interval: 1s\n\
         scrape:\n  interval: 1s\n  timeout: 1s\n  direct_connect_timeout: 500ms\n  mode: via_alb\n{extra}\
         relabel_configs:\n{rules}\
         storage:\n  path: {}\n  flush_interval: 300ms\n\
         http:\n  listen_address: 127.0.0.1:0\n",
        db.display()
    );
    Config::load(&write_config(dir, &yaml)).expect("valid e2e config")
}

pub async fn reader(db: &Path) -> SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .pragma("query_only", "1")
        .busy_timeout(Duration::from_secs(5));
    sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await.expect("reader")
}

pub async fn count(pool: &SqlitePool, sql: &str, id: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).bind(id).fetch_one(pool).await.unwrap_or(0)
}

/// Polls until `sql` (bound to `id`) counts at least `n`.
pub async fn wait_rows(db: &Path, what: &str, sql: &str, id: &str, n: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !db.exists() {
        assert!(std::time::Instant::now() < deadline, "the daemon never created {}", db.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool = reader(db).await;
    while count(&pool, sql, id).await < n {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what} of {id}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub const CPU_ROWS: &str = "SELECT count(*) FROM cpu_utilization WHERE instance_id = ?";

/// Every stored `nice` counter of `host` must be its signature: no sample of
/// another host was stored as this instance.
pub async fn assert_no_misattribution(pool: &SqlitePool, host: &FakeHost) -> usize {
    let values: Vec<f64> = sqlx::query_scalar(
        "SELECT value FROM metric_samples WHERE metric = 'node_cpu_seconds_total'
         AND json_extract(labels, '$.mode') = 'nice' AND instance_id = ?",
    )
    .bind(&host.instance_id)
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(!values.is_empty(), "no samples stored for {}", host.instance_id);
    for value in &values {
        assert_eq!(*value, host.signature, "a sample of another host was stored as {}", host.instance_id);
    }
    values.len()
}

/// How far the stored CPU busy points of an instance are from its host's set
/// level, against what the counters can resolve.
#[derive(Debug)]
pub struct CpuDeviation {
    /// The largest deviation of any point (percent points).
    pub worst: f64,
    /// How many points there are.
    pub points: usize,
    /// Points farther from the level than their counters' resolution allows.
    pub beyond_resolution: Vec<String>,
}

/// Compares every stored CPU busy point of `instance_id` with `level_percent`.
///
/// A point is a ratio of counter deltas between two stored scrapes. The fake
/// host's summed counters are exact to under one tick at each end (see
/// `fakehost::Cpu`), so with `T` ticks of user + idle time between the two
/// scrapes the ratio is within `1 / (T − 2)` of the level: a bound from the
/// stored counters themselves, tight at any interval (two stores 0.4 s
/// apart resolve only ~0.6 points; 4 CPU-seconds resolve 0.25).
pub async fn cpu_deviation(pool: &SqlitePool, instance_id: &str, level_percent: f64) -> CpuDeviation {
    let points: Vec<(f64, f64)> =
        sqlx::query_as("SELECT time, value FROM cpu_utilization WHERE instance_id = ? ORDER BY time")
            .bind(instance_id)
            .fetch_all(pool)
            .await
            .unwrap();
    // Summed user + idle seconds of every stored scrape (the only modes the fake host moves).
    let moving: Vec<(f64, f64)> = sqlx::query_as(
        "SELECT time, sum(value) FROM metric_samples WHERE instance_id = ? AND metric = 'node_cpu_seconds_total' \
         AND json_extract(labels, '$.mode') IN ('user', 'idle') GROUP BY time ORDER BY time",
    )
    .bind(instance_id)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut beyond_resolution = Vec::new();
    for &(time, value) in &points {
        let deviation = (value - level_percent).abs();
        let at = moving.partition_point(|(t, _)| *t < time);
        let ticks = match (at.checked_sub(1).and_then(|i| moving.get(i)), moving.get(at)) {
            (Some((_, before)), Some((t, now))) if *t == time => (now - before) * 100.0,
            _ => {
                beyond_resolution.push(format!("t={time:.3}: no stored counters around the point"));
                continue;
            }
        };
        let resolution = 100.0 / (ticks - 2.0);
        if ticks <= 2.0 || deviation >= resolution {
            beyond_resolution.push(format!(
                "t={time:.3}: {value:.3}% is {deviation:.3} points off; {ticks:.0} ticks resolve {resolution:.3}"
            ));
        }
    }
    let worst = points.iter().map(|(_, v)| (v - level_percent).abs()).fold(0.0, f64::max);
    CpuDeviation { worst, points: points.len(), beyond_resolution }
}

/// Per instance, how many payloads were stored in the same round window of
/// `target_group` (from one round's start to the next's): more than one is a
/// double store.
pub async fn stores_per_round_window(pool: &SqlitePool, target_group: &str, instance_id: &str) -> Vec<usize> {
    let starts: Vec<f64> = sqlx::query_scalar("SELECT time FROM alb_rounds WHERE target_group = ? ORDER BY time")
        .bind(target_group)
        .fetch_all(pool)
        .await
        .unwrap();
    let stored: Vec<f64> =
        sqlx::query_scalar("SELECT time FROM scrape_status WHERE instance_id = ? AND up = 1 ORDER BY time")
            .bind(instance_id)
            .fetch_all(pool)
            .await
            .unwrap();
    starts
        .iter()
        .enumerate()
        .map(|(i, start)| {
            let end = starts.get(i + 1).copied().unwrap_or(f64::INFINITY);
            stored.iter().filter(|t| **t >= *start && **t < end).count()
        })
        .collect()
}
