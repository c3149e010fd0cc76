//! Helpers for end-to-end tests: the emulator, a daemon config wired to it,
//! database readers opened like Grafana's plugin, and waits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fleetscrape::config::Config;
use fleetscrape::emulator::{Balancing, Emulator, EmulatorConfig};
use sqlx::SqlitePool;

use super::fakehost::FakeHost;
use super::write_config;

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

/// The largest deviation of any stored CPU busy point of `host` from its
/// set level (percent points), and the number of points.
pub async fn cpu_deviation(pool: &SqlitePool, instance_id: &str, level_percent: f64) -> (f64, usize) {
    let values: Vec<f64> = sqlx::query_scalar("SELECT value FROM cpu_utilization WHERE instance_id = ? ORDER BY time")
        .bind(instance_id)
        .fetch_all(pool)
        .await
        .unwrap();
    let worst = values.iter().map(|v| (v - level_percent).abs()).fold(0.0, f64::max);
    (worst, values.len())
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
