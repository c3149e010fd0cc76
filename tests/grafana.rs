//! The Grafana provisioning and the two dashboards (per instance, fleet),
//! tested the way Grafana and the frser-sqlite-datasource plugin would run
//! them (no Grafana binary is installable here): every panel, variable and
//! annotation query is expanded as the frontend and the plugin expand it,
//! then run on a database filled by a real end-to-end run (moto, real
//! node_exporters reporting known figures, the ALB emulator, a scale-out),
//! on every tier; its plan is checked to be bounded by the time range and
//! its values against what the fake hosts report.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::e2e::{CPU_ROWS, SeedFleet, config, reader, wait_rows};
use common::fakehost::FakeHost;
use common::grafana::{Cell, Rows, expand, plan, plugin_reader, run};
use common::{Moto, isolate_network};
use fleetscrape::emulator::Balancing;
use regex::Regex;
use serde_json::Value;
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;

const DATASOURCE_UID: &str = "fleetscrape-sqlite";

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const INSTANCE_DASHBOARD: &str = "infra/grafana/dashboards/fleetscrape-instance.json";
const FLEET_DASHBOARD: &str = "infra/grafana/dashboards/fleetscrape-fleet.json";

fn dashboard(path: &str) -> Value {
    serde_json::from_str(&repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The panels that query (rows left out).
fn query_panels(dashboard: &Value) -> Vec<&Value> {
    dashboard["panels"].as_array().unwrap().iter().filter(|p| p["targets"].is_array()).collect()
}

/// Every query target of the dashboard: (where, target object).
fn targets(dashboard: &Value) -> Vec<(String, Value)> {
    let mut all = Vec::new();
    for panel in query_panels(dashboard) {
        for target in panel["targets"].as_array().unwrap() {
            all.push((format!("panel {:?} {}", panel["title"], target["refId"]), target.clone()));
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
        if annotation["target"].is_object() {
            all.push((format!("annotation {:?}", annotation["name"]), annotation["target"].clone()));
        }
    }
    all
}

fn panel_sql<'a>(dashboard: &'a Value, title: &str) -> &'a str {
    let panel = query_panels(dashboard)
        .into_iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title:?}"));
    panel["targets"][0]["rawQueryText"].as_str().unwrap()
}

#[test]
fn the_dashboards_are_what_their_generator_writes() {
    let check = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/grafana/dashboards.py"))
        .arg("--check")
        .output()
        .expect("python3 runs the dashboard generator");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

#[test]
fn provisioning_has_the_keys_the_plugin_and_grafana_read() {
    let datasources: Value =
        serde_saphyr::from_str(&repo("infra/grafana/provisioning/datasources/fleetscrape.yml")).unwrap();
    let ds = &datasources["datasources"][0];
    assert_eq!(datasources["apiVersion"], 1);
    assert_eq!(ds["type"], "frser-sqlite-datasource");
    assert_eq!(ds["uid"], DATASOURCE_UID);
    assert_eq!(ds["jsonData"]["path"], "/var/lib/fleetscrape/fleetscrape.db");
    assert_eq!(ds["jsonData"]["pathPrefix"], "file:");
    let options = ds["jsonData"]["pathOptions"].as_str().unwrap();
    assert!(options.contains("_pragma=query_only(1)") && options.contains("_pragma=busy_timeout("), "{options}");
    assert!(!options.contains("mode=ro"), "a WAL reader must be able to write -shm");

    let providers: Value =
        serde_saphyr::from_str(&repo("infra/grafana/provisioning/dashboards/fleetscrape.yml")).unwrap();
    assert_eq!(providers["providers"][0]["type"], "file");
    assert_eq!(providers["providers"][0]["options"]["path"], "/var/lib/grafana/dashboards");
    let files: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/grafana/dashboards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "the two provisioned dashboards: {files:?}");
    assert!(repo("infra/docker-compose.yml").contains("/var/lib/grafana/dashboards/fleetscrape-fleet.json"));

    for (path, uid) in [(INSTANCE_DASHBOARD, "fleetscrape-instance"), (FLEET_DASHBOARD, "fleetscrape-fleet")] {
        let dashboard = dashboard(path);
        assert_eq!(dashboard["uid"], uid);
        let text = dashboard.to_string();
        let uids: Vec<&str> = text
            .match_indices("\"uid\":\"")
            .map(|(i, _)| &text[i + 7..i + 7 + text[i + 7..].find('"').unwrap()])
            .collect();
        assert!(uids.iter().all(|u| [DATASOURCE_UID, uid, "-- Grafana --"].contains(u)), "{uids:?}");
        for (place, target) in targets(&dashboard) {
            assert_eq!(target["datasource"]["uid"], DATASOURCE_UID, "{place}");
            assert_eq!(target["queryText"], target["rawQueryText"], "{place}: alert rules run the stored queryText");
            let time_columns = target["timeColumns"].as_array().unwrap();
            assert!(time_columns.iter().any(|c| c == "time"), "{place}: time must be listed in timeColumns");
            let sql = target["rawQueryText"].as_str().unwrap();
            // The status panel shows the daemon's state now: one row per component, no history to bound.
            if sql.contains("FROM component_status") {
                assert!(sql.contains("$__to"), "{place}: ages are taken at the range's end");
                continue;
            }
            assert!(sql.contains("$__from") && sql.contains("$__to"), "{place}: reads only the visible range");
        }
    }
    let instance = dashboard(INSTANCE_DASHBOARD);
    assert!(query_panels(&instance).len() >= 25, "a Node Exporter Full-class dashboard has at least 25 query panels");
    // Links both ways: the fleet's instance column opens that instance's dashboard.
    let fleet = dashboard(FLEET_DASHBOARD).to_string();
    assert!(fleet.contains("/d/fleetscrape-instance/fleetscrape-instance?var-instance_id=${__value.raw}"), "row link");
    assert!(instance.to_string().contains("/d/fleetscrape-fleet/"), "back to the fleet");
}

/// Values of `column` per `series` (the long format's label), in time order: (time, value).
fn by_series(rows: &Rows, column: &str) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for row in rows {
        let series = row.get("series").map_or(column.to_string(), |s| s.text().to_string());
        if let Cell::Num(v) = row[column] {
            out.entry(series).or_default().push((row["time"].num(), v));
        }
    }
    out
}

/// The mean of a rate series weighted by each point's interval: for rates
/// between consecutive samples it telescopes to the counter's own increase
/// over the span, so it is exact up to the counters' resolution.
fn weighted_mean(points: &[(f64, f64)]) -> f64 {
    let (sum, span) = points.windows(2).fold((0.0, 0.0), |(sum, span), w| {
        let dt = w[1].0 - w[0].0;
        (sum + w[1].1 * dt, span + dt)
    });
    sum / span
}

fn median(points: &[(f64, f64)]) -> f64 {
    let mut values: Vec<f64> = points.iter().map(|p| p.1).collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn close(got: f64, want: f64, relative: f64) -> bool {
    if want == 0.0 { got.abs() < 1e-9 } else { ((got - want) / want).abs() <= relative }
}

/// What statfs(2) reports for `path` (coreutils `stat -f`): (size, avail) bytes.
fn statfs(path: &Path) -> (f64, f64) {
    let out = std::process::Command::new("stat").args(["-f", "-L", "-c", "%s %b %a"]).arg(path).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<f64> = text.split_whitespace().map(|n| n.parse().unwrap()).collect();
    (v[0] * v[1], v[0] * v[2])
}

struct Live {
    db: std::path::PathBuf,
    /// Instance → its host's CPU busy %.
    known: BTreeMap<String, f64>,
    asg_name: String,
    _moto: Moto,
    hosts: Vec<FakeHost>,
    plugin: SqlitePool,
}

/// A database filled by a short end-to-end run with a scale-out; two of the
/// hosts (a Basic instance and the new ASG member) report known network,
/// disk, filesystem and memory figures. Then compacted, as the writer does
/// once the data is older than the compaction delay, so the rollup tiers
/// hold the same run.
async fn live_database(dir: &Path) -> Live {
    let SeedFleet { moto, seeder, seed, first_member: first, hosts: mut by_id, emulator } =
        SeedFleet::start_with(Balancing::Random, [(0.8, true), (0.2, false), (0.5, false)]).await;
    let levels = [(seed.basic_a.clone(), 0.8), (seed.basic_b.clone(), 0.2), (first.clone(), 0.5)];
    let mut hosts: Vec<FakeHost> = levels.iter().map(|(id, _)| by_id.remove(id).unwrap()).collect();
    let db = dir.join("grafana.db");
    let shutdown = CancellationToken::new();
    let daemon =
        tokio::spawn(fleetscrape::daemon::run(config(dir, &moto.url, &emulator, &db, ""), false, shutdown.clone()));
    wait_rows(&db, "CPU values", CPU_ROWS, &first, 3).await;

    // Concurrently with ingest, a reader opened like the plugin's sees
    // consistent data: each stored scrape's status counts exactly its samples.
    let plugin = plugin_reader(&db).await;
    seeder.set_desired(&seed.asg_name, 2).await;
    let new = seeder.members(&seed.asg_name).await.into_iter().find(|m| *m != first).unwrap();
    hosts.push(FakeHost::start_with_figures(&new, 0.3, 900));
    emulator.set_members(9102, &[hosts[2].address.clone(), hosts[3].address.clone()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    // About 20 scrapes of the new member: enough points for the rate checks.
    while common::e2e::count(&plugin, CPU_ROWS, &new).await < 20 {
        assert!(std::time::Instant::now() < deadline, "the new member never got 20 CPU values");
        assert_consistent(&plugin).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), daemon).await.unwrap().unwrap().unwrap();

    let mut store = fleetscrape::store::Store::open(&db).await.unwrap();
    // A delay far in the past makes every block due, the last (partial) one too.
    let mut steps = 0;
    while !matches!(
        store.maintain(&fleetscrape::store::Retention::DEFAULT, -1e9, false).await.unwrap(),
        fleetscrape::store::Maintenance::Idle
    ) {
        steps += 1;
        assert!(steps < 10_000, "maintenance never became idle in 10,000 bounded steps");
    }
    store.close().await;

    let mut known: BTreeMap<String, f64> = levels.into_iter().map(|(id, b)| (id, b * 100.0)).collect();
    known.insert(new, 30.0);
    Live { db, known, asg_name: seed.asg_name, _moto: moto, hosts, plugin }
}

/// Resolves the dashboard's query variables in order, as the frontend does:
/// each query run as the plugin would, `__value` when it returns one.
async fn resolve_variables(
    dashboard: &Value,
    pool: &SqlitePool,
    mut vars: BTreeMap<&'static str, Vec<String>>,
    range: (i64, i64),
) -> BTreeMap<&'static str, Vec<String>> {
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let name: &'static str = Box::leak(variable["name"].as_str().unwrap().to_string().into_boxed_str());
        let sql = expand(variable["query"]["rawQueryText"].as_str().unwrap(), &vars, range.0, range.1);
        let rows = run(pool, &sql).await.unwrap_or_else(|e| panic!("variable {name}: {e}"));
        let values: Vec<String> = rows
            .iter()
            .map(|r| r.get("__value").unwrap_or_else(|| r.values().next().unwrap()).text().to_string())
            .collect();
        assert!(!values.is_empty(), "variable {name} has values");
        vars.entry(name).or_insert(values);
    }
    vars
}

/// Runs every target of `dashboard` and checks it as the plugin would need:
/// no error, rows (unless `may_be_empty`), times in range and ordered, and a
/// plan bounded by the time range.
async fn run_every_target(
    dashboard: &Value,
    pool: &SqlitePool,
    vars: &BTreeMap<&str, Vec<String>>,
    range: (i64, i64),
    may_be_empty: &[&str],
) {
    let busy_tables = ["samples", "s", "cpu_samples", "c", "scrape_status", "alb_rounds", "asg_membership", "events"];
    // `$.label` is JSON path syntax, not a variable.
    let unexpanded = Regex::new(r"\$[_a-zA-Z{]").unwrap();
    for (place, target) in targets(dashboard) {
        let sql = expand(target["rawQueryText"].as_str().unwrap(), vars, range.0, range.1);
        assert!(!unexpanded.is_match(&sql), "{place}: unexpanded variable or macro in {sql}");
        let rows = run(pool, &sql).await.unwrap_or_else(|e| panic!("{place}: {e}\n{sql}"));
        if !may_be_empty.iter().any(|p| place.contains(p)) {
            assert!(!rows.is_empty(), "{place} returned no rows:\n{sql}");
        }
        if sql.contains("FROM component_status") {
            let components: Vec<&str> = rows.iter().map(|r| r["component"].text()).collect();
            assert_eq!(components, ["discovery", "store"], "{place}");
            assert!(rows.iter().all(|r| r["state"].text() == "ok"), "{place}: a healthy daemon");
            continue;
        }
        let times: Vec<f64> = rows.iter().map(|r| r["time"].num()).collect();
        // A bucket starts up to its width (1 hour at most) before `$__from`.
        let (low, high) = (range.0 as f64 / 1000.0 - 3600.0, range.1 as f64 / 1000.0);
        assert!(
            times.iter().all(|t| (low..=high).contains(t)),
            "{place}: time outside the range (epoch seconds expected): {times:?}"
        );
        if target["queryType"] == "time series" {
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "{place}: rows must be ordered by time");
        }
        let plan = plan(pool, &sql).await;
        for line in &plan {
            let scanned = line.strip_prefix("SCAN ").map(|rest| rest.split_whitespace().next().unwrap_or(""));
            assert!(!scanned.is_some_and(|t| busy_tables.contains(&t)), "{place}: a full scan in its plan: {plan:#?}");
        }
        let reads_history = busy_tables.iter().any(|t| sql.contains(&format!("FROM {t}")))
            || sql.contains("FROM metric_samples")
            || sql.contains("FROM cpu_utilization");
        if reads_history {
            assert!(
                plan.iter().any(|l| l.contains("time>? AND time<?")),
                "{place}: the range must bound the search: {plan:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboards_show_the_fake_hosts_known_figures() {
    if isolate_network("dashboards_show_the_fake_hosts_known_figures") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let live = live_database(dir.path()).await;
    let pool = reader(&live.db).await;
    let plugin = &live.plugin;
    let (first, last): (f64, f64) =
        sqlx::query_as("SELECT min(time), max(time) FROM scrape_status").fetch_one(&pool).await.unwrap();
    let raw = ((first * 1000.0) as i64 - 1000, (last * 1000.0) as i64 + 1000);
    // Ranges whose width selects each rollup tier (docs/sql.md, "Long ranges").
    let minute = (raw.1 - 9 * 3_600_000, raw.1);
    let five_minutes = (raw.1 - 2 * 86_400_000, raw.1);
    let hour_or_coarsest = (raw.1 - 11 * 86_400_000, raw.1);

    // The datasource is read-only: the plugin's connection cannot change the database.
    for write in ["DELETE FROM scrape_status", "CREATE TABLE grafana_was_here (x)", "UPDATE instances SET role = 'x'"] {
        let refused = sqlx::query(write).execute(plugin).await;
        assert!(refused.is_err_and(|e| e.to_string().contains("readonly")), "{write} went through the datasource");
    }

    // The fleet overview: every query, on every tier's range.
    let fleet = dashboard(FLEET_DASHBOARD);
    let fleet_vars = resolve_variables(&fleet, plugin, BTreeMap::new(), raw).await;
    assert_eq!(fleet_vars["role"], ["asg", "basic"]);
    assert_eq!(fleet_vars["asg_name"], ["-", "web"]);
    assert_eq!(fleet_vars["instance_id"].len(), live.known.len());
    for range in [raw, minute, five_minutes, hour_or_coarsest] {
        run_every_target(&fleet, plugin, &fleet_vars, range, &["Not reached now", "Failed intervals"]).await;
    }
    fleet_figures(&fleet, plugin, &fleet_vars, raw, &live).await;

    // The per-instance dashboard of each host with figures, on every tier.
    let instance = dashboard(INSTANCE_DASHBOARD);
    let choices = resolve_variables(&instance, plugin, BTreeMap::new(), raw).await;
    assert_eq!(choices["instance_id"].len(), live.known.len(), "every instance can be chosen");
    for host in live.hosts.iter().filter(|h| h.figures) {
        let vars: BTreeMap<&str, Vec<String>> = [("instance_id", vec![host.instance_id.clone()])].into();
        for range in [raw, minute, five_minutes, hour_or_coarsest] {
            run_every_target(&instance, plugin, &vars, range, &["events"]).await;
        }
        let want_busy = live.known[&host.instance_id];
        instance_figures(&instance, plugin, &vars, raw, host, want_busy, Tier::Raw).await;
        instance_figures(&instance, plugin, &vars, minute, host, want_busy, Tier::Rollup).await;
        instance_figures(&instance, plugin, &vars, five_minutes, host, want_busy, Tier::Rollup).await;
    }

    // The worked examples of docs/grafana.md run too, bounded by the range.
    let docs = repo("docs/grafana.md");
    let examples: Vec<&str> = docs.split("```sql").skip(1).map(|block| block.split("```").next().unwrap()).collect();
    assert!(examples.len() >= 3, "docs/grafana.md has its worked examples");
    let example_vars: BTreeMap<&str, Vec<String>> = [("instance_id", vec![live.hosts[0].instance_id.clone()])].into();
    for (i, example) in examples.iter().enumerate() {
        let sql = expand(example, &example_vars, raw.0, raw.1);
        let rows = run(plugin, &sql).await.unwrap_or_else(|e| panic!("example {}: {e}\n{sql}", i + 1));
        assert!(!rows.is_empty(), "docs/grafana.md example {} returned no rows:\n{sql}", i + 1);
        let plan = plan(plugin, &sql).await;
        assert!(plan.iter().any(|l| l.contains("time>? AND time<?")), "example {}: {plan:#?}", i + 1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tier {
    /// Rates between consecutive scrapes (request times carry jitter).
    Raw,
    /// Rollup rates: the increase over a bucket / the time it spans.
    Rollup,
}

async fn panel_rows(
    dashboard: &Value,
    pool: &SqlitePool,
    vars: &BTreeMap<&str, Vec<String>>,
    range: (i64, i64),
    title: &str,
) -> Rows {
    let sql = expand(panel_sql(dashboard, title), vars, range.0, range.1);
    run(pool, &sql).await.unwrap_or_else(|e| panic!("{title}: {e}\n{sql}"))
}

/// A rate series against the rate its host sets: the raw tier's
/// interval-weighted mean within 1 % and every point within 10 % (a scrape's
/// request time is not when /proc was read); rollups: the bucket of most of
/// the run within 1 %, the run's edge buckets within 3 %.
fn check_rate(what: &str, points: &[(f64, f64)], want: f64, tier: Tier) {
    if tier == Tier::Raw {
        assert!(points.len() >= 10, "{what}: points {points:?}");
        let mean = weighted_mean(points);
        assert!(close(mean, want, 0.01), "{what}: mean {mean} but the host runs at {want}");
        assert!(close(median(points), want, 0.02), "{what}: median {} vs {want}: {points:?}", median(points));
        assert!(points.iter().all(|p| close(p.1, want, 0.10)), "{what}: a point far from {want}: {points:?}");
    } else {
        // Every bucket within 3 % (one whose pairs span only a second or two,
        // at the run's edges, carries the counter's one-count resolution),
        // the bucket holding most of the run within 1 %.
        assert!(!points.is_empty(), "{what}: no rollup points");
        assert!(points.iter().all(|p| close(p.1, want, 0.03)), "{what}: {want} per second expected: {points:?}");
        assert!(points.iter().any(|p| close(p.1, want, 0.01)), "{what}: no bucket within 1 % of {want}: {points:?}");
    }
}

async fn instance_figures(
    dashboard: &Value,
    pool: &SqlitePool,
    vars: &BTreeMap<&str, Vec<String>>,
    range: (i64, i64),
    host: &FakeHost,
    want_busy: f64,
    tier: Tier,
) {
    use common::fakehost::{BOOT_TIME, BUSY_MODES, CPUS, DISKS, LOADAVG, MEMINFO_KB, MOUNTS, NET_DEVICES};
    let id = &host.instance_id;
    let rows = |title: &'static str| panel_rows(dashboard, pool, vars, range, title);
    let kb = |key: &str| MEMINFO_KB.iter().find(|(k, _)| *k == key).unwrap().1 as f64 * 1024.0;
    let only = |rows: &Rows, column: &str| -> f64 {
        assert_eq!(rows.len(), 1, "{column}: one row: {rows:?}");
        rows[0][column].num()
    };
    let shown: Vec<_> = MOUNTS.iter().filter(|m| m.shown).collect();

    if tier == Tier::Raw {
        // Quick gauges: the newest scrape.
        let info = rows("Instance").await;
        assert_eq!(info[0]["instance_id"].text(), id);
        assert!(["basic", "asg"].contains(&info[0]["role"].text()));
        // One interval's ratio: each of the 7 moving modes' sums exact to a
        // tick, so within (6 + 7 × busy) ticks of ~400 (2 points at 1 s).
        let cpu = only(&rows("CPU busy").await, "cpu_busy");
        assert!((cpu - want_busy).abs() < 2.0, "{id}: CPU busy {cpu} but the host runs at {want_busy}");
        let load = rows("Sys load (1m / 5m / 15m, % of cores)").await;
        for (column, value) in ["load1", "load5", "load15"].iter().zip(LOADAVG) {
            assert!(close(load[0][*column].num(), 100.0 * value / CPUS as f64, 1e-9), "{column}: {load:?}");
        }
        let ram = only(&rows("RAM used").await, "ram_used");
        assert!(close(ram, 100.0 * (1.0 - kb("MemAvailable") / kb("MemTotal")), 1e-9), "RAM used {ram}");
        let swap = only(&rows("Swap used").await, "swap_used");
        assert!(close(swap, 100.0 * (kb("SwapTotal") - kb("SwapFree")) / kb("SwapTotal"), 1e-9), "swap {swap}");
        let root = MOUNTS.iter().find(|m| m.shown && m.mountpoint == "/").unwrap();
        let (size, avail) = statfs(&host.statfs_path(root));
        let root_used = only(&rows("Root FS used").await, "root_fs_used");
        assert!(close(root_used, 100.0 - 100.0 * avail / size, 1e-9), "root FS used {root_used}");
        assert_eq!(only(&rows("CPU cores").await, "cores"), CPUS as f64);
        let uptime = rows("Uptime").await;
        let expected = uptime[0]["time"].num() - BOOT_TIME;
        assert!((uptime[0]["uptime"].num() - expected).abs() < 2.0, "uptime {uptime:?} vs {expected}");
        assert_eq!(only(&rows("RAM total").await, "ram_total"), kb("MemTotal"));
        assert_eq!(only(&rows("Scrape").await, "up"), 1.0);

        // Filesystems now: exact, from statfs of the same directories.
        let table = rows("Filesystems").await;
        let mountpoints: Vec<&str> = table.iter().map(|r| r["mountpoint"].text()).collect();
        assert_eq!(mountpoints, shown.iter().map(|m| m.mountpoint).collect::<Vec<_>>(), "pseudo filesystems left out");
        for (row, mount) in table.iter().zip(&shown) {
            let (size, avail) = statfs(&host.statfs_path(mount));
            assert_eq!((row["size"].num(), row["avail"].num()), (size, avail), "{}", mount.mountpoint);
            assert!(close(row["used_pct"].num(), 100.0 - 100.0 * avail / size, 1e-9));
        }

        // Scrape health.
        let status = rows("Last scrape").await;
        assert_eq!(status[0]["up"].num(), 1.0);
        assert!(status[0]["path"].text().starts_with("via_alb "), "{status:?}");
        assert!(status[0]["samples"].num() > 100.0 && status[0]["duration_seconds"].num() > 0.0);
        let up = rows("Up").await;
        assert!(up.iter().all(|r| (0.0..=1.0).contains(&r["up"].num())) && up.last().unwrap()["up"].num() == 1.0);
        let coverage = rows("Coverage of its target group").await;
        let shares: Vec<f64> = coverage.iter().map(|r| r["coverage"].num()).collect();
        assert!(shares.iter().all(|c| (0.0..=1.0).contains(c)), "{coverage:?}");
        assert!(shares.iter().sum::<f64>() / shares.len() as f64 > 0.5, "its rounds reach it: {coverage:?}");
        for title in ["Scrape duration", "Samples per scrape"] {
            assert!(!rows(title).await.is_empty(), "{title}");
        }
    }

    // Gauges over time, from either tier: constant figures read back exactly.
    let memory = rows("Memory basic").await;
    let used = kb("MemTotal") - kb("MemFree") - kb("Buffers") - kb("Cached") - kb("SReclaimable");
    for row in &memory {
        assert_eq!(row["total"].num(), kb("MemTotal"));
        assert_eq!(row["used"].num(), used);
        assert_eq!(row["buffers_cache"].num(), kb("Buffers") + kb("Cached") + kb("SReclaimable"));
        assert_eq!((row["available"].num(), row["free"].num()), (kb("MemAvailable"), kb("MemFree")));
    }
    let swap = rows("Swap").await;
    assert!(swap.iter().all(|r| r["swap_used"].num() == kb("SwapTotal") - kb("SwapFree")), "{swap:?}");
    let load = by_series(&rows("System load").await, "load");
    for (name, value) in ["load1", "load5", "load15"].iter().zip(LOADAVG) {
        assert!(load[*name].iter().all(|p| p.1 == value), "{name}: {:?}", load[*name]);
    }
    let fs_used = by_series(&rows("Filesystem used %").await, "used");
    let fs_avail = by_series(&rows("Filesystem available").await, "avail");
    for mount in &shown {
        let (size, avail) = statfs(&host.statfs_path(mount));
        let used = fs_used[mount.mountpoint].last().unwrap().1;
        assert!(close(used, 100.0 - 100.0 * avail / size, 1e-9), "{}: {used}", mount.mountpoint);
        assert_eq!(fs_avail[mount.mountpoint].last().unwrap().1, avail, "{}", mount.mountpoint);
    }
    assert_eq!(fs_used.len(), shown.len(), "pseudo filesystems left out: {:?}", fs_used.keys());

    // CPU: busy, and every mode's share of all CPU time. A share is a ratio
    // of tick counters, each mode's sum over the CPUs exact to one tick: a
    // point is within (1 + 8 × share) ticks of the interval's ~400 (1.5 points
    // at 1 s on 4 CPUs), their interval-weighted mean within 0.1 points, and a
    // rollup bucket of the whole run (the ratio of its increases) within 0.05.
    let busy = by_series(&rows("CPU busy %").await, "cpu_busy");
    let mean = busy["busy"].iter().map(|p| p.1).sum::<f64>() / busy["busy"].len() as f64;
    assert!((mean - want_busy).abs() < 0.5, "{id}: CPU busy {mean} vs {want_busy}");
    let modes = by_series(&rows("CPU by mode").await, "share");
    let fixed: f64 = BUSY_MODES.iter().map(|(_, s)| s * 100.0).sum();
    let mut expected: Vec<(&str, f64)> = BUSY_MODES.iter().map(|(m, s)| (*m, s * 100.0)).collect();
    expected.extend([("user", want_busy - fixed), ("idle", 100.0 - want_busy), ("nice", 0.0)]);
    for (mode, share) in expected {
        let points = modes.get(mode).unwrap_or_else(|| {
            panic!("{tier:?} {range:?}: CPU by mode has no {mode} series, only {:?}", modes.keys().collect::<Vec<_>>())
        });
        assert!(points.iter().all(|p| (p.1 - share).abs() <= 1.5), "{mode}: {share} % expected: {points:?}");
        if tier == Tier::Raw {
            let mean = weighted_mean(points);
            assert!((mean - share).abs() <= 0.1, "{mode}: mean {mean} vs {share} %: {points:?}");
        } else {
            // The run's first or last bucket may span a second or two; the
            // bucket holding most of the run is exact to the ticks.
            let best = points.iter().map(|p| (p.1 - share).abs()).fold(f64::INFINITY, f64::min);
            assert!(best <= 0.05, "{mode}: no bucket within 0.05 points of {share} %: {points:?}");
        }
    }
    let switches = by_series(&rows("Context switches and interrupts").await, "per_second");
    assert!(switches.values().flatten().all(|p| p.1 == 0.0), "constant counters: {switches:?}");

    // Network and disk rates against the rates the host drives.
    let net = |title: &'static str| rows(title);
    let traffic = by_series(&net("Network traffic (bytes/s)").await, "rate");
    let packets = by_series(&net("Network packets/s").await, "rate");
    let errs = by_series(&net("Network errors/s").await, "rate");
    let drops = by_series(&net("Network drops/s").await, "rate");
    for d in NET_DEVICES {
        for (series, want) in [
            (&traffic, [d.receive_bytes, d.transmit_bytes]),
            (&packets, [d.receive_packets, d.transmit_packets]),
            (&errs, [d.receive_errs, d.transmit_errs]),
            (&drops, [d.receive_drop, d.transmit_drop]),
        ] {
            for (direction, want) in ["receive", "transmit"].iter().zip(want) {
                let name = format!("{} {direction}", d.name);
                check_rate(&format!("{id} {name}"), &series[&name], want, tier);
            }
        }
    }
    assert!(!traffic.keys().any(|k| k.starts_with("lo ")), "node_exporter leaves lo out: {:?}", traffic.keys());
    let iops = by_series(&rows("Disk IOPS").await, "iops");
    let throughput = by_series(&rows("Disk throughput").await, "throughput");
    let io_busy = by_series(&rows("Disk I/O busy").await, "busy");
    for d in DISKS {
        check_rate(&format!("{} read", d.name), &iops[&format!("{} read", d.name)], d.reads, tier);
        check_rate(&format!("{} write", d.name), &iops[&format!("{} write", d.name)], d.writes, tier);
        let read_bytes = d.sectors_read * 512.0;
        check_rate(&format!("{} read bytes", d.name), &throughput[&format!("{} read", d.name)], read_bytes, tier);
        let written = d.sectors_written * 512.0;
        check_rate(&format!("{} written bytes", d.name), &throughput[&format!("{} write", d.name)], written, tier);
        check_rate(&format!("{} busy", d.name), &io_busy[d.name], d.io_ms / 10.0, tier);
    }
}

async fn fleet_figures(
    dashboard: &Value,
    pool: &SqlitePool,
    vars: &BTreeMap<&str, Vec<String>>,
    range: (i64, i64),
    live: &Live,
) {
    let rows = |title: &'static str| panel_rows(dashboard, pool, vars, range, title);
    // Every instance at its own CPU, busiest first.
    let table = rows("Instances by current CPU").await;
    let order: Vec<f64> = table.iter().map(|r| r["cpu_busy"].num()).collect();
    assert!(order.windows(2).all(|w| w[0] >= w[1]), "sorted by current CPU: {order:?}");
    assert_eq!(table.len(), live.known.len());
    for row in &table {
        let want = live.known[row["instance_id"].text()];
        assert!((row["cpu_busy"].num() - want).abs() < 1.0, "{row:?} vs {want}");
    }
    let series = by_series(&rows("CPU busy % per instance").await, "cpu_busy");
    assert_eq!(series.len(), live.known.len(), "one series per instance: {:?}", series.keys());
    for (id, want) in &live.known {
        let (legend, points) = series.iter().find(|(l, _)| l.starts_with(id.as_str())).unwrap();
        assert!(legend.ends_with("(asg)") || legend.ends_with("(basic)"), "legend `instance_id (role)`: {legend}");
        let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
        assert!((mean - want).abs() < 10.0, "{legend}: {mean:.1}% but its host runs at {want}%");
    }
    let roles = by_series(&rows("Basic vs ASG members: average CPU").await, "cpu_busy");
    assert!(roles.contains_key("basic") && roles.contains_key(&format!("asg {}", live.asg_name)), "{roles:?}");

    // The group's capacity and target, as discovery read them.
    let now = rows("ASG now").await;
    assert_eq!(now.len(), 1);
    let group = &now[0];
    assert_eq!(group["asg_name"].text(), live.asg_name);
    let capacity: Vec<f64> = ["members", "desired_capacity", "min_size", "max_size"].map(|c| group[c].num()).into();
    assert_eq!(capacity, [2.0, 2.0, 1.0, 4.0], "{group:?}");
    assert_eq!((group["target_metric"].text(), group["target_value"].num()), ("ASGAverageCPUUtilization", 50.0));
    let size = by_series(&rows("ASG size").await, "size");
    let web = &live.asg_name;
    assert_eq!(size[&format!("{web} desired")].first().unwrap().1, 1.0, "desired before the scale-out");
    assert_eq!(size[&format!("{web} desired")].last().unwrap().1, 2.0, "and after");
    assert!(size[&format!("{web} max")].iter().all(|p| p.1 == 4.0));
    let target = by_series(&rows("ASG average CPU vs target").await, "cpu");
    assert!(target[&format!("target {web}")].iter().all(|p| p.1 == 50.0), "{target:?}");
    assert!(target.contains_key(&format!("average {web}")));

    // Reachability and the daemon's own state.
    let coverage = by_series(&rows("Via-ALB coverage per target group").await, "coverage");
    assert!(coverage.len() >= 3 && coverage.values().flatten().all(|p| (0.0..=1.0).contains(&p.1)), "{coverage:?}");
    let failed_sql = expand(panel_sql(dashboard, "Failed intervals per instance"), vars, range.0, range.1);
    let failed = run(pool, &failed_sql).await.unwrap();
    assert!(failed.iter().all(|r| r["failed"].num() >= 1.0 && r["series"].text().contains(' ')), "{failed:?}");
    let failed_plan = plan(pool, &failed_sql).await;
    assert!(failed_plan.iter().any(|l| l.contains("scrape_status_failed")), "reads only failed rows: {failed_plan:#?}");
    for row in rows("Not reached now").await {
        assert!(!row["reason"].text().is_empty(), "a reason for every instance not reached: {row:?}");
    }
}

async fn assert_consistent(pool: &SqlitePool) {
    let mismatches: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM scrape_status st WHERE st.up = 1 AND st.samples !=
           (SELECT count(*) FROM metric_samples m WHERE m.instance_id = st.instance_id AND m.time = st.time)",
    )
    .fetch_one(pool)
    .await
    .expect("no `database is locked` for a reader during ingest");
    assert_eq!(mismatches, 0, "a reader saw half a transaction");
}
