//! The provisioned alert rules (infra/grafana/provisioning/alerting/), read
//! from the provisioned file itself and evaluated the way Grafana's alerting
//! would (no Grafana binary is installable here): each rule's query expanded
//! with only `$__from`/`$__to` (its relative time range ending now), run as
//! the plugin runs it, each row one series labelled by its text columns, the
//! rule's own threshold applied to its number. Run on a database filled
//! through the store's real write path with simulated time (hours of trends
//! for the filesystem rules), on the raw tier and on ranges that select a
//! rollup tier; plans bounded by the range.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use common::grafana::{ALERT_RULES, AlertRule, alert_rules, alert_series, plan, plugin_reader, run};
use fleetscrape::record::{FailureReason, Route, SelfMetricRecord};
use fleetscrape::store::{
    Batch, Component, ComponentRecord, InstanceRecord, Maintenance, MembershipRecord, Retention, ScrapeRecord,
    SeriesList, StatusRecord, Store,
};
use serde_json::Value;

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn seconds(duration: &str) -> u64 {
    let (number, unit) = duration.split_at(duration.find(|c: char| !c.is_ascii_digit()).expect("a unit"));
    let n: u64 = number.parse().expect("a number");
    n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        other => panic!("unit {other} in {duration}"),
    }
}

#[test]
fn the_rule_file_has_grafanas_provisioning_shape() {
    let file = yaml(ALERT_RULES);
    assert_eq!(file["apiVersion"], 1);
    let uid_shape = regex::Regex::new("^[a-zA-Z0-9_-]{1,40}$").unwrap();
    let instance = repo("infra/grafana/dashboards/fleetscrape-instance.json");
    let fleet = repo("infra/grafana/dashboards/fleetscrape-fleet.json");
    let mut uids = BTreeSet::new();
    let groups = file["groups"].as_array().unwrap();
    assert!(groups.len() >= 4, "instances, autoscaling, filesystems, fleetscrape itself");
    for group in groups {
        assert_eq!(group["orgId"], 1);
        assert!(group["name"].as_str().is_some_and(|n| !n.is_empty()));
        assert_eq!(group["folder"], "fleetscrape", "every rule in one folder");
        let interval = seconds(group["interval"].as_str().unwrap());
        for rule in group["rules"].as_array().unwrap() {
            let uid = rule["uid"].as_str().unwrap();
            assert!(uid_shape.is_match(uid), "{uid}: Grafana's uid shape");
            assert!(uids.insert(uid.to_string()), "{uid} twice");
            assert!(rule["title"].as_str().is_some_and(|t| !t.is_empty()), "{uid}");
            let data = rule["data"].as_array().unwrap();
            let refs: Vec<&str> = data.iter().map(|d| d["refId"].as_str().unwrap()).collect();
            assert!(refs.contains(&rule["condition"].as_str().unwrap()), "{uid}: the condition names an entry");
            for entry in data {
                assert!(
                    entry["relativeTimeRange"]["from"].is_u64() && entry["relativeTimeRange"]["to"].is_u64(),
                    "{uid}"
                );
                assert_eq!(entry["model"]["refId"], entry["refId"], "{uid}");
                match entry["datasourceUid"].as_str().unwrap() {
                    "fleetscrape-sqlite" => {
                        let model = &entry["model"];
                        assert_eq!(model["datasource"]["type"], "frser-sqlite-datasource", "{uid}");
                        assert_eq!(model["queryType"], "table", "{uid}: one row per series, no time column");
                        assert_eq!(model["queryText"], model["rawQueryText"], "{uid}: the plugin runs queryText");
                        assert!(entry["relativeTimeRange"]["from"].as_u64().unwrap() > 0, "{uid}: a range to read");
                        let sql = model["rawQueryText"].as_str().unwrap();
                        if !sql.contains("FROM component_status") {
                            assert!(sql.contains("$__from") && sql.contains("$__to"), "{uid}: bounded by its range");
                        }
                        assert!(!sql.contains("$__timeFilter") && !sql.contains("${"), "{uid}: only $__from/$__to");
                    }
                    "__expr__" => {
                        let model = &entry["model"];
                        assert_eq!(model["type"], "threshold", "{uid}");
                        assert_eq!(model["datasource"]["uid"], "__expr__", "{uid}");
                        assert!(refs.contains(&model["expression"].as_str().unwrap()), "{uid}");
                        let evaluator = &model["conditions"][0]["evaluator"];
                        assert!(["gt", "lt"].contains(&evaluator["type"].as_str().unwrap()), "{uid}");
                        assert!(evaluator["params"][0].is_number(), "{uid}");
                    }
                    other => panic!("{uid}: datasource {other}"),
                }
            }
            let pending = seconds(rule["for"].as_str().unwrap());
            assert_eq!(pending % interval, 0, "{uid}: `for` is a whole number of evaluations");
            assert!(["Alerting", "NoData", "OK"].contains(&rule["noDataState"].as_str().unwrap()), "{uid}");
            assert!(["Alerting", "Error", "OK"].contains(&rule["execErrState"].as_str().unwrap()), "{uid}");
            assert!(["warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap()), "{uid}");
            for key in ["summary", "description", "dashboard"] {
                let text = rule["annotations"][key].as_str().unwrap_or_else(|| panic!("{uid}: annotation {key}"));
                // Grafana expands ${VAR} in annotations from its environment.
                assert!(!text.contains("${"), "{uid}: {key} would be expanded by provisioning");
            }
            let board = match rule["dashboardUid"].as_str().unwrap() {
                "fleetscrape-instance" => &instance,
                "fleetscrape-fleet" => &fleet,
                other => panic!("{uid}: dashboard {other}"),
            };
            assert!(board.contains(&format!("\"id\": {},", rule["panelId"])), "{uid}: its panel exists");
        }
    }
    // The opt-in routing is not provisioned by default: a provisioned policy
    // tree replaces the operator's whole tree.
    let provisioned: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/grafana/provisioning/alerting"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    assert_eq!(provisioned, ["fleetscrape-rules.yml"]);
    let routing = yaml("infra/grafana/alerting/notifications.example.yml");
    assert_eq!(routing["apiVersion"], 1);
    assert!(routing["contactPoints"][0]["receivers"][0]["uid"].is_string());
    assert_eq!(routing["policies"][0]["receiver"], routing["contactPoints"][0]["name"]);
}

// ------------------------------------------------------------- a simulated fleet

/// The simulated scrape interval (seconds) and how long the fleet runs.
const STEP: f64 = 60.0;
const SPAN: f64 = 7.0 * 3600.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// A filesystem whose free space and inodes move linearly over the span
/// (percent of size at the start and at the end).
#[derive(Clone, Copy)]
struct Fs {
    device: &'static str,
    mountpoint: &'static str,
    fstype: &'static str,
    space: (f64, f64),
    files: (f64, f64),
    readonly: bool,
}

const fn fs(mountpoint: &'static str, space: (f64, f64), files: (f64, f64)) -> Fs {
    Fs { device: "/dev/nvme0n1p1", mountpoint, fstype: "ext4", space, files, readonly: false }
}

/// A host of the simulated fleet and what it reports.
struct Host {
    id: &'static str,
    asg: Option<&'static str>,
    cpu_busy: f64,
    mem_available: f64,
    filesystems: Vec<Fs>,
    /// node_timex_offset_seconds at the start and the end; sync status; max error.
    clock: ((f64, f64), f64, f64),
    /// The last intervals that stored nothing, and why.
    failing: (usize, FailureReason),
}

impl Host {
    fn new(id: &'static str, asg: Option<&'static str>, cpu_busy: f64) -> Self {
        Host {
            id,
            asg,
            cpu_busy,
            mem_available: 50.0,
            filesystems: vec![fs("/", (60.0, 60.0), (90.0, 90.0))],
            clock: ((0.001, 0.001), 1.0, 0.5),
            failing: (0, FailureReason::Timeout),
        }
    }
}

fn fleet() -> Vec<Host> {
    let mut hosts = vec![
        Host::new("i-busy", None, 95.0),
        Host::new("i-calm", None, 20.0),
        Host { mem_available: 6.0, ..Host::new("i-lowmem", None, 30.0) },
        Host {
            filesystems: vec![
                // 30 % → 15 %: zero within 24 h, not within 4 h.
                fs("/", (30.0, 15.0), (90.0, 90.0)),
                // Inodes 25 % → 8 %: zero within 4 h.
                Fs { device: "/dev/nvme1n1", fstype: "xfs", ..fs("/data", (70.0, 70.0), (25.0, 8.0)) },
                // Flat and nearly full: almost out, not filling.
                Fs { device: "/dev/nvme2n1", ..fs("/logs", (4.0, 4.0), (2.0, 2.0)) },
                // Read-only and full: never fires.
                Fs { device: "/dev/loop0", fstype: "squashfs", readonly: true, ..fs("/snap", (0.0, 0.0), (0.0, 0.0)) },
            ],
            ..Host::new("i-disk", None, 30.0)
        },
        Host { clock: ((0.1, 0.2), 0.0, 16.5), ..Host::new("i-clock", None, 30.0) },
        Host::new("i-web-1", Some("web"), 80.0),
        Host::new("i-web-2", Some("web"), 70.0),
        Host { failing: (5, FailureReason::NotReachedViaAlb), ..Host::new("i-web-3", Some("web"), 60.0) },
        Host::new("i-batch-1", Some("batch"), 65.0),
        Host { failing: (1, FailureReason::Timeout), ..Host::new("i-batch-2", Some("batch"), 65.0) },
    ];
    hosts.sort_by_key(|h| h.id);
    hosts
}

/// The groups: (name, desired, max, CPU target).
const GROUPS: [(&str, i32, i32, f64); 2] = [("web", 3, 3, 50.0), ("batch", 2, 4, 60.0)];
const CPUS: usize = 2;

fn series_of(host: &Host) -> Arc<SeriesList> {
    let mut metrics: Vec<Arc<str>> = Vec::new();
    let mut labels: Vec<Arc<str>> = Vec::new();
    let mut push = |m: &str, l: String| {
        metrics.push(m.into());
        labels.push(l.into());
    };
    for cpu in 0..CPUS {
        for mode in ["idle", "system", "user"] {
            push("node_cpu_seconds_total", format!(r#"{{"cpu":"{cpu}","mode":"{mode}"}}"#));
        }
    }
    push("node_memory_MemAvailable_bytes", "{}".into());
    push("node_memory_MemTotal_bytes", "{}".into());
    for f in &host.filesystems {
        let l = format!(r#"{{"device":"{}","fstype":"{}","mountpoint":"{}"}}"#, f.device, f.fstype, f.mountpoint);
        for m in ["node_filesystem_avail_bytes", "node_filesystem_files", "node_filesystem_files_free"] {
            push(m, l.clone());
        }
        push("node_filesystem_readonly", l.clone());
        push("node_filesystem_size_bytes", l);
    }
    for m in ["node_timex_maxerror_seconds", "node_timex_offset_seconds", "node_timex_sync_status"] {
        push(m, "{}".into());
    }
    let types: Vec<(Arc<str>, &'static str)> = metrics
        .iter()
        .map(|m| (Arc::clone(m), if m.ends_with("_total") { "counter" } else { "gauge" }))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    Arc::new(SeriesList { metrics, labels, types })
}

/// The values of `host`'s series `elapsed` seconds into the span.
fn values_of(host: &Host, elapsed: f64) -> Vec<f64> {
    let along = |(start, end): (f64, f64)| start + (end - start) * elapsed / SPAN;
    let mut values = Vec::new();
    let busy = host.cpu_busy / 100.0;
    for _ in 0..CPUS {
        values.extend([elapsed * (1.0 - busy), elapsed * busy * 0.25, elapsed * busy * 0.75]);
    }
    values.extend([16.0 * GIB * host.mem_available / 100.0, 16.0 * GIB]);
    for f in &host.filesystems {
        let size = 100.0 * GIB;
        values.extend([size * along(f.space) / 100.0, 1e6, 1e6 * along(f.files) / 100.0]);
        values.extend([if f.readonly { 1.0 } else { 0.0 }, size]);
    }
    let ((offset_start, offset_end), sync, max_error) = host.clock;
    values.extend([max_error, along((offset_start, offset_end)), sync]);
    values
}

fn instance(host: &Host, seen: f64) -> InstanceRecord {
    InstanceRecord {
        instance_id: host.id.into(),
        role: if host.asg.is_some() { "asg" } else { "basic" }.into(),
        asg_name: host.asg.map(Into::into),
        availability_zone: Some("ap-northeast-2a".into()),
        private_ip: Some("10.0.1.10".into()),
        state: "running".into(),
        labels: "{}".into(),
        seen,
    }
}

/// The simulated fleet written through the store's real write path, the
/// store's clock following the simulated time (rollups, block writes).
/// Returns the time of the last round.
async fn fill(db: &Path) -> f64 {
    let hosts = fleet();
    let lists: Vec<Arc<SeriesList>> = hosts.iter().map(series_of).collect();
    let mut store = Store::open(db).await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let start = (now / 3600.0).floor() * 3600.0 - SPAN;
    let rounds = (SPAN / STEP) as usize;
    let mut dropped_remote = 0.0;
    for round in 0..=rounds {
        let elapsed = round as f64 * STEP;
        let time = start + elapsed;
        let left = rounds - round;
        let mut batch = Batch { instances: hosts.iter().map(|h| instance(h, time)).collect(), ..Batch::default() };
        for (host, list) in hosts.iter().zip(&lists) {
            let up = left >= host.failing.0;
            let values = values_of(host, elapsed);
            let route = match host.asg {
                Some(group) => Route::ViaAlb {
                    load_balancer: "backend".into(),
                    port: 9102,
                    target_groups: [format!("{group}-tg")].into_iter().collect(),
                },
                None => Route::Direct { address: Some("127.0.0.1:9100".into()) },
            };
            batch.statuses.push(StatusRecord {
                time: time + 0.5,
                instance_id: host.id.into(),
                up,
                reason: (!up).then_some(host.failing.1),
                error: (!up).then(|| "simulated".to_string()),
                duration_seconds: 0.01,
                samples: if up { values.len() as u32 } else { 0 },
                path: route,
            });
            if up {
                batch.scrapes.push(ScrapeRecord {
                    instance_id: host.id.into(),
                    time: time + 0.5,
                    series: Arc::clone(list),
                    values,
                });
            }
        }
        for (name, desired, max, target) in GROUPS {
            let members = hosts.iter().filter(|h| h.asg == Some(name)).count() as u32;
            batch.memberships.push(MembershipRecord {
                time,
                asg_name: name.into(),
                members,
                desired_capacity: desired,
                min_size: 1,
                max_size: max,
                target: Some(("ASGAverageCPUUtilization".into(), target)),
            });
        }
        batch.components.push(ComponentRecord {
            component: Component::Discovery,
            checked: time,
            ok: true,
            error: None,
        });
        // remote_write dropped 40 samples 5 minutes ago; log lines: a restart
        // (3 → 0) 8 minutes ago is a reset, not a loss.
        if left == 5 {
            dropped_remote = 40.0;
        }
        let log_lines = if left > 8 { 3.0 } else { 0.0 };
        for (name, value) in [
            ("fleetscrape_remote_write_samples_dropped_total", dropped_remote),
            ("fleetscrape_store_dropped_samples_total", 0.0),
            ("fleetscrape_log_lines_dropped_total", log_lines),
        ] {
            batch.self_metrics.push(SelfMetricRecord { time, name, value });
        }
        store.write(&batch).await.unwrap();
        while !matches!(
            store.maintain(&Retention::DEFAULT, 60.0, false).await.unwrap(),
            Maintenance::Idle | Maintenance::Retained(_)
        ) {}
    }
    store.close().await;
    start + rounds as f64 * STEP
}

/// The series of `rule` at `now_ms` over `range`, and those that fire.
async fn evaluate(
    pool: &sqlx::SqlitePool,
    rule: &AlertRule,
    now_ms: i64,
    range: i64,
) -> (BTreeMap<String, f64>, BTreeSet<String>) {
    let sql = rule.expanded(now_ms, range);
    let rows = run(pool, &sql).await.unwrap_or_else(|e| panic!("{}: {e}\n{sql}", rule.uid));
    let series = alert_series(rule, &rows);
    let firing = series.iter().filter(|(_, v)| rule.fires(**v)).map(|(k, _)| k.clone()).collect();
    (series, firing)
}

fn who(id: &str, asg: Option<&str>) -> String {
    format!("asg_name={},instance_id={id},role={}", asg.unwrap_or("-"), if asg.is_some() { "asg" } else { "basic" })
}

fn filesystem(id: &str, device: &str, fstype: &str, mountpoint: &str) -> String {
    format!("asg_name=-,device={device},fstype={fstype},instance_id={id},mountpoint={mountpoint},role=basic")
}

/// What should fire at the end of the simulated span: rule → series.
fn expected() -> BTreeMap<&'static str, Vec<String>> {
    let disk = |device, fstype, mountpoint| filesystem("i-disk", device, fstype, mountpoint);
    BTreeMap::from([
        ("fleetscrape-cpu-busy", vec![who("i-busy", None)]),
        (
            "fleetscrape-member-unreachable",
            vec![format!("asg_name=web,instance_id=i-web-3,reason=not_reached_via_alb,role=asg")],
        ),
        ("fleetscrape-memory-low", vec![who("i-lowmem", None)]),
        ("fleetscrape-clock-skew", vec![who("i-clock", None)]),
        ("fleetscrape-clock-not-synchronising", vec![who("i-clock", None)]),
        ("fleetscrape-asg-at-ceiling", vec!["asg_name=web".into()]),
        ("fleetscrape-asg-capacity-unmet", vec!["asg_name=web".into()]),
        ("fleetscrape-fs-space-filling-warning", vec![disk("/dev/nvme0n1p1", "ext4", "/")]),
        ("fleetscrape-fs-space-filling-critical", vec![]),
        ("fleetscrape-fs-space-almost-out-warning", vec![disk("/dev/nvme2n1", "ext4", "/logs")]),
        ("fleetscrape-fs-space-almost-out-critical", vec![]),
        ("fleetscrape-fs-files-filling-warning", vec![disk("/dev/nvme1n1", "xfs", "/data")]),
        ("fleetscrape-fs-files-filling-critical", vec![disk("/dev/nvme1n1", "xfs", "/data")]),
        ("fleetscrape-fs-files-almost-out-warning", vec![disk("/dev/nvme2n1", "ext4", "/logs")]),
        ("fleetscrape-fs-files-almost-out-critical", vec![disk("/dev/nvme2n1", "ext4", "/logs")]),
        ("fleetscrape-store-stale", vec![]),
        ("fleetscrape-discovery-failing", vec![]),
        ("fleetscrape-samples-dropped", vec!["counter=fleetscrape_remote_write_samples_dropped_total".into()]),
        ("fleetscrape-log-lines-dropped", vec![]),
    ])
}

/// Tables whose full scan would grow with history.
const HISTORY: [&str; 14] = [
    "samples",
    "s",
    "c",
    "cpu_samples",
    "scrape_status",
    "asg_membership",
    "self_metrics",
    "rollup_1m",
    "rollup_5m",
    "rollup_1h",
    "cpu_rollup_1m",
    "cpu_rollup_5m",
    "cpu_rollup_1h",
    "rollup_buckets",
];

async fn assert_bounded(pool: &sqlx::SqlitePool, rule: &AlertRule, sql: &str) {
    let plan = plan(pool, sql).await;
    for line in &plan {
        let scanned = line.strip_prefix("SCAN ").map(|rest| rest.split_whitespace().next().unwrap_or(""));
        assert!(!scanned.is_some_and(|t| HISTORY.contains(&t)), "{}: a full scan: {plan:#?}", rule.uid);
    }
    if !sql.contains("FROM component_status") {
        assert!(
            plan.iter().any(|l| l.contains("time>? AND time<?")),
            "{}: the range bounds no search: {plan:#?}",
            rule.uid
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_rule_fires_for_exactly_the_instances_and_groups_that_should() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("alerts.db");
    let end = fill(&db).await;
    let pool = plugin_reader(&db).await;
    let rules = alert_rules(&yaml(ALERT_RULES));
    let expected = expected();
    let uids: BTreeSet<&str> = rules.iter().map(|r| r.uid.as_str()).collect();
    assert_eq!(uids, expected.keys().copied().collect(), "every provisioned rule is checked here");
    let now_ms = ((end + 1.0) * 1000.0) as i64;
    for rule in &rules {
        let want: BTreeSet<String> = expected[rule.uid.as_str()].iter().cloned().collect();
        // Its own range, then ranges whose width selects another tier.
        // (Alert rules read raw up to 1 h, the 1-minute tier up to 36 h, or
        // 3 h for the trends, then the 5-minute tier.)
        let mut ranges = vec![rule.range_seconds];
        if rule.sql.contains("FROM tier") {
            for range in [30 * 60, 2 * 3600, 2 * 86_400] {
                if !ranges.contains(&range) {
                    ranges.push(range);
                }
            }
        }
        for range in ranges {
            let (series, firing) = evaluate(&pool, rule, now_ms, range).await;
            assert_eq!(firing, want, "{} over {range} s: {series:#?}", rule.uid);
            // The rest is there with a non-firing value, not missing.
            assert!(series.len() > firing.len(), "{}: {series:?}", rule.uid);
            assert_bounded(&pool, rule, &rule.expanded(now_ms, range)).await;
        }
    }

    // Fifteen minutes later with nothing new: fleetscrape's own rules fire.
    let later = now_ms + 900_000;
    for uid in ["fleetscrape-store-stale", "fleetscrape-discovery-failing"] {
        let rule = rules.iter().find(|r| r.uid == uid).unwrap();
        let (series, firing) = evaluate(&pool, rule, later, rule.range_seconds).await;
        assert_eq!(firing.len(), 1, "{uid}: {series:?}");
    }
    // An empty database (fleetscrape never ran): the store rule still has its row.
    let empty = dir.path().join("empty.db");
    Store::open(&empty).await.unwrap().close().await;
    let pool = plugin_reader(&empty).await;
    let rule = rules.iter().find(|r| r.uid == "fleetscrape-store-stale").unwrap();
    let (_, firing) = evaluate(&pool, rule, now_ms, rule.range_seconds).await;
    assert_eq!(firing.len(), 1, "nothing stored reads as stale, not as no data");
}

// ------------------------------------------------------------- a live scale-out

/// Every rule of the file at `now_ms` on `pool`: uid → (series, firing).
async fn evaluate_all(
    pool: &sqlx::SqlitePool,
    rules: &[AlertRule],
    now_ms: i64,
) -> BTreeMap<String, (BTreeMap<String, f64>, BTreeSet<String>)> {
    let mut out = BTreeMap::new();
    for rule in rules {
        assert_bounded(pool, rule, &rule.expanded(now_ms, rule.range_seconds)).await;
        out.insert(rule.uid.clone(), evaluate(pool, rule, now_ms, rule.range_seconds).await);
    }
    out
}

/// Real node_exporters behind the ALB emulator, the daemon discovering them in
/// moto; the group scales out to its maximum (4) and one new member's exporter
/// never answers. The group rules fire, the member's rule fires with its
/// reason, and the memory and filesystem rules read the hosts' known figures
/// without firing.
#[tokio::test(flavor = "multi_thread")]
async fn rules_fire_on_a_live_scale_out_to_the_groups_maximum() {
    use common::e2e::{CPU_ROWS, SeedFleet, config, count, reader, wait_rows};
    use common::fakehost::{FakeHost, Identity, MEMINFO_KB, MOUNTS};
    use common::{free_port, isolate_network};
    use fleetscrape::emulator::Balancing;
    use tokio_util::sync::CancellationToken;

    if isolate_network("rules_fire_on_a_live_scale_out_to_the_groups_maximum") {
        return;
    }
    // Basic A reports known memory and filesystem figures.
    let SeedFleet { moto, seeder, seed, first_member: first, hosts, emulator } =
        SeedFleet::start_with(Balancing::Random, [(0.3, true), (0.2, false), (0.8, false)]).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(fleetscrape::daemon::run(
        config(dir.path(), &moto.url, &emulator, &db, ""),
        false,
        shutdown.clone(),
    ));
    wait_rows(&db, "CPU values", CPU_ROWS, &first, 3).await;

    // The group's maximum is 4: scale out to it. One new member's exporter
    // never answers (a loopback port nobody listens on).
    seeder.set_desired(&seed.asg_name, 4).await;
    let new: Vec<String> = seeder.members(&seed.asg_name).await.into_iter().filter(|m| *m != first).collect();
    assert_eq!(new.len(), 3);
    let second = FakeHost::start_with_figures(&new[0], 0.7, 4000);
    let third = FakeHost::start(&new[1], 0.9, 5000, Identity::Dmi);
    let silent = format!("127.0.0.1:{}", free_port());
    emulator.set_members(9102, &[hosts[&first].address.clone(), second.address.clone(), third.address.clone(), silent]);
    wait_rows(&db, "CPU values", CPU_ROWS, &new[0], 5).await;
    wait_rows(&db, "CPU values", CPU_ROWS, &new[1], 5).await;
    let failed = "SELECT count(*) FROM scrape_status WHERE up = 0 AND instance_id = ?";
    wait_rows(&db, "failed intervals", failed, &new[2], 4).await;
    let pool = reader(&db).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM scrape_status WHERE up = 1 AND instance_id = ?", &new[2]).await, 0);

    let rules = alert_rules(&yaml(ALERT_RULES));
    let now_ms = (fleetscrape::clock::now_seconds() * 1000.0) as i64;
    let got = evaluate_all(&pool, &rules, now_ms).await;
    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(30), daemon).await.unwrap().unwrap().unwrap();
    // `run` wrote its own counters at start: every one of them but
    // remote_write's (no receiver configured).
    let names: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT name FROM self_metrics ORDER BY name").fetch_all(&pool).await.unwrap();
    let mut want: Vec<&str> = fleetscrape::daemon::self_record::COUNTERS
        .into_iter()
        .filter(|n| !n.starts_with("fleetscrape_remote_write_"))
        .collect();
    want.sort_unstable();
    assert_eq!(names, want);

    let firing = |uid: &str| got[uid].1.clone();
    assert_eq!(firing("fleetscrape-asg-at-ceiling"), BTreeSet::from(["asg_name=web".to_string()]), "{got:#?}");
    assert_eq!(firing("fleetscrape-asg-capacity-unmet"), BTreeSet::from(["asg_name=web".to_string()]));
    assert_eq!(got["fleetscrape-asg-capacity-unmet"].0["asg_name=web"], 1.0, "3 of 4 members reached");
    let unreachable: Vec<String> = firing("fleetscrape-member-unreachable").into_iter().collect();
    assert_eq!(unreachable.len(), 1, "{got:#?}");
    let prefix = format!("asg_name=web,instance_id={},reason=", new[2]);
    assert!(unreachable[0].starts_with(&prefix) && !unreachable[0].ends_with("reason=-,role=asg"), "{unreachable:?}");
    // The filesystem rules read this machine's own filesystems (statfs): only
    // the fake root, whose level the test knows, must stay quiet.
    let root =
        format!("asg_name=-,device=/dev/nvme0n1p1,fstype=ext4,instance_id={},mountpoint=/,role=basic", seed.basic_a);
    for uid in rules.iter().map(|r| r.uid.as_str()).filter(|u| !u.contains("asg-") && !u.contains("unreachable")) {
        let quiet = match uid.starts_with("fleetscrape-fs-") {
            true => !firing(uid).contains(&root) && got[uid].0.contains_key(&root),
            false => firing(uid).is_empty(),
        };
        assert!(quiet, "{uid} fires on a healthy host: {:#?}", got[uid]);
    }
    // The memory rule reads the hosts' meminfo: a host with figures is 88 % available.
    let kb = |key: &str| MEMINFO_KB.iter().find(|(k, _)| *k == key).unwrap().1 as f64;
    let memory = &got["fleetscrape-memory-low"].0;
    let basic_a = format!("asg_name=-,instance_id={},role=basic", seed.basic_a);
    assert!((memory[&basic_a] - 100.0 * kb("MemAvailable") / kb("MemTotal")).abs() < 0.01, "{memory:?}");
    // The filesystem rule reads the host's statfs: `/` (ext4) as `stat -f` sees it.
    let space = &got["fleetscrape-fs-space-almost-out-warning"].0;
    let out = std::process::Command::new("stat")
        .args(["-f", "-L", "-c", "%b %a"])
        .arg(hosts[&seed.basic_a].statfs_path(&MOUNTS[1]))
        .output()
        .unwrap();
    let blocks: Vec<f64> =
        String::from_utf8(out.stdout).unwrap().split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert!((space[&root] - 100.0 * blocks[1] / blocks[0]).abs() < 1.0, "{space:?} vs statfs {blocks:?}");
}
