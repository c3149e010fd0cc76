//! The Grafana provisioning and dashboard, tested the way Grafana and the
//! frser-sqlite-datasource plugin would run them (no Grafana binary is
//! installable here): every panel, variable and annotation query is expanded
//! as the frontend and the plugin expand it, then run on a database filled by
//! a real end-to-end run (moto, real node_exporters, the ALB emulator, a
//! scale-out), and its plan is checked to be bounded by the time range.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::e2e::{CPU_ROWS, config, emulator, reader, wait_rows};
use common::fakehost::{FakeHost, Identity};
use common::seed::Seeder;
use common::{Moto, isolate_network, set_test_env};
use fleetscrape::emulator::Balancing;
use regex::Regex;
use serde_json::Value;
use sqlx::{Row, SqlitePool};
use tokio_util::sync::CancellationToken;

const DATASOURCE_UID: &str = "fleetscrape-sqlite";

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&repo("infra/grafana/dashboards/fleetscrape-backend-cpu.json")).expect("dashboard JSON")
}

/// Every query target of the dashboard: (where, target object).
fn targets(dashboard: &Value) -> Vec<(String, Value)> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
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

    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "fleetscrape-backend-cpu");
    let text = dashboard.to_string();
    let uids: Vec<&str> =
        text.match_indices("\"uid\":\"").map(|(i, _)| &text[i + 7..i + 7 + text[i + 7..].find('"').unwrap()]).collect();
    assert!(uids.iter().all(|u| [DATASOURCE_UID, "fleetscrape-backend-cpu", "-- Grafana --"].contains(u)), "{uids:?}");
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
    let titles: Vec<&str> =
        dashboard["panels"].as_array().unwrap().iter().map(|p| p["title"].as_str().unwrap()).collect();
    for wanted in [
        "CPU busy % per instance",
        "ASG average CPU (≈ CloudWatch ASGAverageCPUUtilization) vs target",
        "ASG members",
        "Memory available",
        "Load average (1 min)",
        "fleetscrape status: discovery and store",
    ] {
        assert!(titles.contains(&wanted), "{titles:?}");
    }
}

/// Grafana's frontend: dashboard variables (`${v:singlequote}`, `$v`), then
/// the plugin's backend: `$__from`/`$__to` (ms) and its one macro.
fn expand(sql: &str, vars: &BTreeMap<&str, Vec<String>>, from_ms: i64, to_ms: i64) -> String {
    let mut out = sql.to_string();
    for (name, values) in vars {
        let quoted: Vec<String> = values.iter().map(|v| format!("'{}'", v.replace('\'', "\\'"))).collect();
        out = out.replace(&format!("${{{name}:singlequote}}"), &quoted.join(","));
        out = out.replace(&format!("${name}"), &values.join(","));
    }
    out = out.replace("$__from", &from_ms.to_string()).replace("$__to", &to_ms.to_string());
    // pkg/plugin/macros.go: `\$__([_a-zA-Z0-9]+)\(([^\)]*)\)`; the only macro is
    // unixEpochGroupSeconds(col, N) → cast((col / N) as int) * N, N an integer literal.
    let macro_re = Regex::new(r"\$__([_a-zA-Z0-9]+)\(([^\)]*)\)").unwrap();
    macro_re
        .replace_all(&out, |c: &regex::Captures<'_>| {
            assert_eq!(&c[1], "unixEpochGroupSeconds", "the plugin has no macro {}", &c[1]);
            let args: Vec<&str> = c[2].split(',').map(str::trim).collect();
            let seconds: i64 =
                args[1].parse().unwrap_or_else(|_| panic!("bucket must be an integer literal: {:?}", args[1]));
            format!("cast(({} / {seconds}) as int) * {seconds}", args[0])
        })
        .into_owned()
}

/// A database filled by a short end-to-end run with a scale-out, and the
/// instance → known CPU % of its host.
async fn live_database(dir: &Path) -> (std::path::PathBuf, BTreeMap<String, f64>, Moto, Vec<FakeHost>, SqlitePool) {
    set_test_env();
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    let first = seeder.members(&seed.asg_name).await.remove(0);
    let levels = [(seed.basic_a.clone(), 0.8), (seed.basic_b.clone(), 0.2), (first.clone(), 0.5)];
    let mut hosts: Vec<FakeHost> = levels
        .iter()
        .enumerate()
        .map(|(i, (id, b))| FakeHost::start(id, *b, 100 * (i as u32 + 1), Identity::Dmi))
        .collect();
    let emulator = emulator(
        Balancing::Random,
        [
            (9100, vec![hosts[0].address.clone()]),
            (9101, vec![hosts[1].address.clone()]),
            (9102, vec![hosts[2].address.clone()]),
        ]
        .into(),
    )
    .await;
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
    hosts.push(FakeHost::start(&new, 0.3, 900, Identity::Dmi));
    emulator.set_members(9102, &[hosts[2].address.clone(), hosts[3].address.clone()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while common::e2e::count(&plugin, CPU_ROWS, &new).await < 4 {
        assert!(std::time::Instant::now() < deadline, "the new member never got CPU values");
        assert_consistent(&plugin).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), daemon).await.unwrap().unwrap().unwrap();
    let mut known: BTreeMap<String, f64> = levels.into_iter().map(|(id, b)| (id, b * 100.0)).collect();
    known.insert(new, 30.0);
    (db, known, moto, hosts, plugin)
}

/// A connection as the plugin opens one: read-write open (not `mode=ro`),
/// then the provisioned `_pragma=busy_timeout(5000)&_pragma=query_only(1)`
/// (modernc's URL syntax; sqlx takes the same pragmas as options).
async fn plugin_reader(db: &Path) -> SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::from_millis(5000))
        .pragma("query_only", "1");
    sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await.expect("plugin reader")
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

/// The `EXPLAIN QUERY PLAN` lines of `sql`.
async fn plan(pool: &SqlitePool, sql: &str) -> Vec<String> {
    sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect()
}

fn time_of(row: &sqlx::sqlite::SqliteRow) -> f64 {
    row.try_get::<f64, _>("time")
        .or_else(|_| row.try_get::<i64, _>("time").map(|t| t as f64))
        .expect("a numeric time column")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_runs_bounded_on_a_live_database() {
    if isolate_network("every_dashboard_query_runs_bounded_on_a_live_database") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (db, known, _moto, _hosts, plugin) = live_database(dir.path()).await;
    let pool = reader(&db).await;
    let (first, last): (f64, f64) =
        sqlx::query_as("SELECT min(time), max(time) FROM scrape_status").fetch_one(&pool).await.unwrap();
    let (from_ms, to_ms) = ((first * 1000.0) as i64 - 1000, (last * 1000.0) as i64 + 1000);
    let bucket = 5i64;
    // The datasource is read-only: the plugin's connection cannot change the database.
    for write in ["DELETE FROM scrape_status", "CREATE TABLE grafana_was_here (x)", "UPDATE instances SET role = 'x'"] {
        let refused = sqlx::query(write).execute(&plugin).await;
        assert!(refused.is_err_and(|e| e.to_string().contains("readonly")), "{write} went through the datasource");
    }

    let dashboard = dashboard();
    let mut vars: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    vars.insert("cpu_target", vec!["50".into()]);
    vars.insert("bucket", vec![bucket.to_string()]);
    // Variables resolve in order, each query run as the plugin would.
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let sql = expand(variable["query"]["rawQueryText"].as_str().unwrap(), &vars, from_ms, to_ms);
        let values: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&plugin).await.unwrap();
        assert!(!values.is_empty(), "variable {} has values", variable["name"]);
        let name: &'static str = Box::leak(variable["name"].as_str().unwrap().to_string().into_boxed_str());
        vars.insert(name, values);
    }
    assert_eq!(vars["role"], ["asg", "basic"]);
    assert_eq!(vars["asg_name"], ["-", "web"]);
    assert_eq!(vars["instance_id"].len(), known.len());

    let busy_tables = ["samples", "s", "cpu_samples", "c", "scrape_status", "alb_rounds", "asg_membership", "events"];
    for (place, target) in targets(&dashboard) {
        let sql = expand(target["rawQueryText"].as_str().unwrap(), &vars, from_ms, to_ms);
        assert!(!sql.contains('$'), "{place}: unexpanded variable or macro in {sql}");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_all(&plugin)
            .await
            .unwrap_or_else(|e| panic!("{place}: {e}\n{sql}"));
        assert!(!rows.is_empty(), "{place} returned no rows:\n{sql}");
        if sql.contains("FROM component_status") {
            let components: Vec<String> = rows.iter().map(|r| r.get("component")).collect();
            assert_eq!(components, ["discovery", "store"], "{place}");
            assert!(rows.iter().all(|r| r.get::<String, _>("state") == "ok"), "{place}: a healthy daemon");
            continue;
        }
        let times: Vec<f64> = rows.iter().map(time_of).collect();
        let (low, high) = (from_ms as f64 / 1000.0 - bucket as f64, to_ms as f64 / 1000.0);
        assert!(
            times.iter().all(|t| (low..=high).contains(t)),
            "{place}: time outside the range (epoch seconds expected): {times:?}"
        );
        if target["queryType"] == "time series" {
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "{place}: rows must be ordered by time");
        }
        let plan = plan(&plugin, &sql).await;
        for line in &plan {
            let scanned = line.strip_prefix("SCAN ").map(|rest| rest.split_whitespace().next().unwrap_or(""));
            assert!(!scanned.is_some_and(|t| busy_tables.contains(&t)), "{place}: a full scan in its plan: {plan:#?}");
        }
        let reads_history = busy_tables.iter().any(|t| {
            sql.contains(&format!("FROM {t}"))
                || sql.contains("FROM metric_samples")
                || sql.contains("FROM cpu_utilization")
        });
        if reads_history {
            assert!(
                plan.iter().any(|l| l.contains("time>? AND time<?")),
                "{place}: the range must bound the search: {plan:#?}"
            );
        }
    }

    // The CPU panel shows each instance's own CPU.
    let cpu_target = &targets(&dashboard)[0].1;
    let sql = expand(cpu_target["rawQueryText"].as_str().unwrap(), &vars, from_ms, to_ms);
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&plugin).await.unwrap();
    let mut by_instance: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for row in &rows {
        let legend: String = row.get("instance");
        by_instance.entry(legend).or_default().push(row.get("cpu_busy"));
    }
    assert_eq!(by_instance.len(), known.len(), "one series per instance: {:?}", by_instance.keys());
    for (id, want) in &known {
        let (legend, values) =
            by_instance.iter().find(|(l, _)| l.starts_with(id.as_str())).expect("a series per instance");
        assert!(legend.ends_with("(asg)") || legend.ends_with("(basic)"), "legend `instance_id (role)`: {legend}");
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((mean - want).abs() < 10.0, "{legend}: {mean:.1}% but its host runs at {want}%");
    }

    // The worked examples of docs/grafana.md run too, bounded by the range.
    let docs = repo("docs/grafana.md");
    let examples: Vec<&str> = docs.split("```sql").skip(1).map(|block| block.split("```").next().unwrap()).collect();
    assert_eq!(examples.len(), 3);
    for (i, example) in examples.iter().enumerate() {
        let sql = expand(example, &vars, from_ms, to_ms);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_all(&plugin)
            .await
            .unwrap_or_else(|e| panic!("example {}: {e}\n{sql}", i + 1));
        assert!(!rows.is_empty(), "docs/grafana.md example {} returned no rows", i + 1);
        let plan = plan(&plugin, &sql).await;
        assert!(plan.iter().any(|l| l.contains("time>? AND time<?")), "example {}: {plan:#?}", i + 1);
    }
}
