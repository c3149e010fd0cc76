//! The `fleetscrape` binary, run as a user would: `discover` against moto
//! (table and JSON), `check-config`, and the error cases that must fail fast
//! with one clear line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::seed::Seeder;
use common::{Moto, free_port, set_test_env, write_config};
use serde_json::Value;

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Runs the binary with a clean environment (test credentials, a throwaway
/// HOME so no developer profile leaks in) plus `env`; kills it after 120 s.
fn fleetscrape(args: &[&str], env: &[(&str, &str)]) -> Output {
    let home = tempfile::tempdir().expect("temp home");
    let mut command = common::clean_command(env!("CARGO_BIN_EXE_fleetscrape"), args, home.path());
    command.envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn fleetscrape");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fleetscrape {args:?} still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A failed run: non-zero exit, exactly one line on stderr containing `needles`.
fn assert_fails_with(output: &Output, needles: &[&str]) {
    let err = stderr(output);
    assert!(!output.status.success(), "expected failure, got success; stdout:\n{}", stdout(output));
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line on stderr, got:\n{err}");
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_json_lists_the_seed_topology_from_the_moto_example_config() {
    set_test_env();
    let moto = Moto::start();
    let seed = Seeder::new(&moto.url).await.seed_topology().await;
    let config = repo_file("config/moto.example.yml");
    let output = fleetscrape(
        &["discover", "--config", config.to_str().unwrap(), "--output", "json"],
        &[("AWS_ENDPOINT_URL", &moto.url)],
    );
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    let entries: Vec<Value> = serde_json::from_str(&stdout(&output)).expect("stdout is a JSON array");
    assert_eq!(entries.len(), 3, "{entries:#?}");

    for key in [
        "instance_id",
        "role",
        "asg_name",
        "load_balancer",
        "listener_port",
        "target_group",
        "target_port",
        "private_ip",
        "availability_zone",
        "state",
        "health",
        "labels",
        "discovered_labels",
    ] {
        assert!(entries.iter().all(|e| e.get(key).is_some()), "every entry has {key:?}");
    }
    let by_port = |port: u64| entries.iter().find(|e| e["listener_port"] == port).expect("entry for port");
    let (a, b, asg) = (by_port(9100), by_port(9101), by_port(9102));
    assert_eq!(
        (a["instance_id"].as_str(), a["role"].as_str(), &a["asg_name"]),
        (Some(seed.basic_a.as_str()), Some("basic"), &Value::Null)
    );
    assert_eq!((b["instance_id"].as_str(), b["role"].as_str()), (Some(seed.basic_b.as_str()), Some("basic")));
    assert_eq!((asg["role"].as_str(), asg["asg_name"].as_str()), (Some("asg"), Some("web")));
    for entry in [a, b, asg] {
        assert_eq!(entry["load_balancer"], "backend");
        assert_eq!(entry["target_port"], 9100);
        assert_eq!(entry["state"], "running");
        assert_eq!(entry["health"], "healthy");
        assert_eq!(entry["availability_zone"], "ap-northeast-2a");
        // The example config maps every address to loopback.
        let port = entry["listener_port"].as_u64().unwrap();
        assert_eq!(entry["labels"]["__alb_address__"], format!("127.0.0.1:{port}"));
        assert!(entry["labels"]["__address__"].as_str().unwrap().starts_with("127."));
        assert!(entry["discovered_labels"]["__address__"].as_str().unwrap().starts_with("10.20."));
        assert!(entry["discovered_labels"]["__meta_ec2_instance_id"].is_string());
        assert!(entry["labels"].as_object().unwrap().keys().all(|k| !k.starts_with("__meta_")));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_table_shows_one_row_per_instance_and_listener() {
    set_test_env();
    let moto = Moto::start();
    let seeder = Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    seeder.set_desired(&seed.asg_name, 2).await;
    seeder.set_desired(&seed.asg_name, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("aws:\n  endpoint_url: {}\n", moto.url));
    let output = fleetscrape(&["discover", "-c", config.to_str().unwrap()], &[]);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    let table = stdout(&output);
    let lines: Vec<&str> = table.lines().collect();
    for column in
        ["INSTANCE", "ROLE", "ASG", "LB:PORT", "TARGET GROUP", "PRIVATE IP", "AZ", "STATE", "HEALTH", "SCRAPE"]
    {
        assert!(lines[0].contains(column), "header has {column}: {}", lines[0]);
    }
    let row = |id: &str| lines.iter().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("row for {id}:\n{table}"));
    assert!(row(&seed.basic_a).contains("backend:9100") && row(&seed.basic_a).contains("basic-a"));
    assert_eq!(lines.iter().filter(|l| l.contains("terminated")).count(), 1, "{table}");
    assert!(lines.iter().any(|l| l.contains("terminated") && l.contains("no (state terminated)")), "{table}");
    assert!(lines.last().unwrap().contains("4 instances (3 to scrape)"), "{table}");
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let output =
        fleetscrape(&["check-config", "--config", repo_file("config/fleetscrape.example.yml").to_str().unwrap()], &[]);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    let yaml = stdout(&output);
    assert!(yaml.contains("refresh_interval: 1m"), "{yaml}");
    assert!(yaml.contains("mode: auto"), "{yaml}");
    assert!(yaml.contains("path: /var/lib/fleetscrape/fleetscrape.db"), "the image's volume:\n{yaml}");
}

#[test]
fn the_config_path_comes_from_the_environment_then_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "scrape: {interval: 30s}\n");
    let output = fleetscrape(&["check-config"], &[("FLEETSCRAPE_CONFIG", config.to_str().unwrap())]);
    assert!(stdout(&output).contains("interval: 30s"), "stderr:\n{}", stderr(&output));
    let output = fleetscrape(&["check-config"], &[]);
    assert_fails_with(&output, &["/etc/fleetscrape/fleetscrape.yml", "not found"]);
}

#[test]
fn bad_configs_fail_with_one_line_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let as_dir = dir.path().join("mounted.yml");
    std::fs::create_dir(&as_dir).unwrap();
    assert_fails_with(&fleetscrape(&["discover", "--config", as_dir.to_str().unwrap()], &[]), &["is a directory"]);

    let config = write_config(dir.path(), "scrape:\n  interval: 10s\n  timeout: 15s\n");
    assert_fails_with(
        &fleetscrape(&["check-config", "--config", config.to_str().unwrap()], &[]),
        &["line 3", "scrape.timeout"],
    );

    let config = write_config(dir.path(), "discovery:\n  refresh: 1m\n");
    assert_fails_with(&fleetscrape(&["discover", "--config", config.to_str().unwrap()], &[]), &["line 2", "refresh"]);
}

#[test]
fn an_unreachable_endpoint_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let config = write_config(dir.path(), &format!("aws:\n  endpoint_url: {closed}\n  connect_timeout: 2s\n"));
    let output = fleetscrape(&["discover", "--config", config.to_str().unwrap()], &[]);
    assert_fails_with(&output, &["discovery against", &closed, "failed"]);
}

#[test]
fn a_missing_region_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "aws:\n  endpoint_url: http://127.0.0.1:9\n");
    let home = dir.path().to_str().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fleetscrape"))
        .args(["discover", "--config", config.to_str().unwrap()])
        .env_clear()
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run");
    assert_fails_with(&output, &["no AWS region", "aws.region"]);
}

/// `fleetscrape ARGS` in a clean environment (test credentials only),
/// stderr piped.
fn spawn_run(args: &[&str], home: &std::path::Path) -> std::process::Child {
    common::clean_command(env!("CARGO_BIN_EXE_fleetscrape"), args, home)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fleetscrape")
}

#[tokio::test(flavor = "multi_thread")]
async fn run_flushes_and_exits_zero_on_sigterm() {
    set_test_env();
    let moto = Moto::start();
    Seeder::new(&moto.url).await.seed_topology().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sigterm.db");
    let http = format!("127.0.0.1:{}", free_port());
    let closed = format!("127.0.0.1:{}", free_port());
    // Nothing answers on the listener: every interval records up=0. With a
    // 30 s flush interval only the shutdown flush can write those rows.
    let yaml = format!(
        "aws:\n  endpoint_url: {}\nscrape:\n  interval: 1s\n  timeout: 1s\n  mode: via_alb\n\
         relabel_configs:\n  - {{target_label: __alb_address__, replacement: '{closed}'}}\n\
         storage:\n  path: {}\n  flush_interval: 30s\nhttp:\n  listen_address: {http}\n",
        moto.url,
        db.display()
    );
    let config = write_config(dir.path(), &yaml);
    let home = tempfile::tempdir().unwrap();
    let mut child = spawn_run(&["run", "--config", config.to_str().unwrap()], home.path());
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "fleetscrape run never reported its targets");
        assert!(child.try_wait().unwrap().is_none(), "fleetscrape run exited early");
        if let Ok(reply) = client.get(format!("http://{http}/api/targets")).send().await {
            let targets: Vec<Value> = serde_json::from_str(&reply.text().await.unwrap()).unwrap_or_default();
            if targets.len() == 3 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "fleetscrape run did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(exit.success(), "exit {exit:?}; log:\n{log}");
    assert!(log.contains("final flush"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in a log written to a pipe:\n{log:?}");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", db.display())).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM scrape_status").fetch_one(&pool).await.unwrap();
    assert!(rows >= 3, "the buffered statuses were flushed at shutdown ({rows} rows)");
}

/// A database with ten CPU points for a basic instance (90 %) and an ASG
/// member (30 %), and one scale-out event.
async fn write_report_db(db: &Path) {
    use fleetscrape::store::{Batch, EventKind, EventRecord, InstanceRecord, SampleRecord, ScrapeRecord, Store};
    let mut store = Store::open(db).await.unwrap();
    let instance = |id: &str, role: &str| InstanceRecord {
        instance_id: id.into(),
        role: role.into(),
        asg_name: (role == "asg").then(|| "web".into()),
        availability_zone: None,
        private_ip: None,
        state: "running".into(),
        labels: "{}".into(),
        seen: 0.0,
    };
    let cpu = |mode: &str, v: f64| SampleRecord {
        metric: "node_cpu_seconds_total".into(),
        labels: format!(r#"{{"cpu":"0","mode":"{mode}"}}"#).into(),
        value: v,
    };
    let mut batch =
        Batch { instances: vec![instance("i-basic", "basic"), instance("i-asg", "asg")], ..Batch::default() };
    for step in 0..10 {
        let t = 1000.0 + 10.0 * f64::from(step);
        for (id, busy) in [("i-basic", 0.9), ("i-asg", 0.3)] {
            let elapsed = 10.0 * f64::from(step);
            let samples = vec![cpu("idle", elapsed * (1.0 - busy)), cpu("user", elapsed * busy)];
            batch.scrapes.push(ScrapeRecord::new(id.into(), t, samples, vec![]));
        }
    }
    batch.events.push(EventRecord {
        time: 1050.0,
        instance_id: "i-asg".into(),
        asg_name: Some("web".into()),
        kind: EventKind::Joined,
        detail: String::new(),
    });
    store.write(&batch).await.unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn report_prints_cpu_per_instance_and_draws_a_png() {
    use fleetscrape::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("report.db");
    write_report_db(&db).await;

    let png = dir.path().join("cpu.png");
    let output = fleetscrape(&["report", "--db", db.to_str().unwrap(), "--png", png.to_str().unwrap()], &[]);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    let table = stdout(&output);
    let row =
        |id: &str| table.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{id} in\n{table}")).to_string();
    assert!(row("i-basic").contains("90.0"), "{table}");
    assert!(row("i-asg").contains("30.0"), "{table}");
    let bytes = std::fs::read(&png).expect("a PNG was written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 10_000, "a real chart, not an empty image ({} bytes)", bytes.len());

    assert_fails_with(
        &fleetscrape(&["report", "--db", dir.path().join("nope.db").to_str().unwrap()], &[]),
        &["not found"],
    );
    let empty = dir.path().join("empty.db");
    Store::open(&empty).await.unwrap().close().await;
    assert_fails_with(&fleetscrape(&["report", "--db", empty.to_str().unwrap()], &[]), &["no CPU values yet"]);
}

/// Runs `fleetscrape args` as `nobody` (not root: file modes apply), from a
/// copy of the binary that user can execute.
fn fleetscrape_as_nobody(args: &[&str]) -> Output {
    use std::os::unix::fs::PermissionsExt;
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = bin_dir.path().join("fleetscrape");
    std::fs::copy(env!("CARGO_BIN_EXE_fleetscrape"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(&bin)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .output()
        .expect("setpriv")
}

/// Issue #11: `report` needed write access to the database's directory.
#[tokio::test(flavor = "multi_thread")]
async fn report_works_for_a_user_who_can_only_read_the_database() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("report.db");
    write_report_db(&db).await;
    // Root's directory, readable by all, writable by none but root.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = db.to_str().unwrap();
    let closed = fleetscrape_as_nobody(&["report", "--db", path]);
    assert!(closed.status.success(), "a closed database (no -wal): {}", stderr(&closed));
    assert!(stdout(&closed).contains("i-basic"), "{}", stdout(&closed));

    // A live writer: -wal and -shm exist, with the database's mode.
    let store = fleetscrape::store::Store::open(&db).await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{path}{suffix}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let live = fleetscrape_as_nobody(&["report", "--db", path]);
    assert!(live.status.success(), "beside a live writer: {}", stderr(&live));
    assert!(stdout(&live).contains("i-asg"), "{}", stdout(&live));
    store.close().await;
    assert!(std::fs::read_dir(dir.path()).unwrap().count() == 1, "report created no file beside the database");
}

/// Issue #11: a directory was "not found", an empty file "no such table", an
/// unwritable `--png` `ImageError(IoError(…))`.
#[tokio::test(flavor = "multi_thread")]
async fn report_errors_say_what_is_wrong_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("report.db");
    write_report_db(&db).await;
    let report = |db: &Path, png: Option<&Path>| {
        let mut args = vec!["report".to_string(), "--db".into(), db.display().to_string()];
        if let Some(png) = png {
            args.extend(["--png".into(), png.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fleetscrape(&args, &[])
    };
    assert_fails_with(&report(dir.path(), None), &["is a directory, not a database file"]);
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert_fails_with(&report(&empty, None), &["is empty: not a fleetscrape database"]);
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello, this is not SQLite\n".repeat(100)).unwrap();
    assert_fails_with(&report(&text, None), &["is not a SQLite database"]);
    let other = dir.path().join("other.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}?mode=rwc", other.display())).await.unwrap();
    sqlx::query("CREATE TABLE customers (id INTEGER)").execute(&pool).await.unwrap();
    pool.close().await;
    assert_fails_with(&report(&other, None), &["is not a fleetscrape database", "customers"]);
    let png = dir.path().join("no/such/dir/cpu.png");
    let output = report(&db, Some(&png));
    assert_fails_with(&output, &["cannot write the chart to", "No such file or directory"]);
    assert!(!stderr(&output).contains("ImageError"), "{}", stderr(&output));
}

/// Starts `fleetscrape run [--once]` against a topology whose every listener
/// hangs, waits until a request is in flight, sends SIGTERM, and returns the
/// exit status, the log and the database.
async fn sigterm_mid_round(once: bool) -> (std::process::ExitStatus, String, std::path::PathBuf, tempfile::TempDir) {
    set_test_env();
    let moto = Moto::start();
    Seeder::new(&moto.url).await.seed_topology().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("budget.db");
    let (hanging, accepted) = common::silent_server().await;
    // A round would wait 25 s for the hanging member; the budget is 2 s.
    let yaml = format!(
        "aws:\n  endpoint_url: {}\nscrape:\n  interval: 30s\n  timeout: 25s\n  mode: via_alb\n\
         relabel_configs:\n  - {{target_label: __alb_address__, replacement: '{hanging}'}}\n\
         storage:\n  path: {}\nhttp:\n  listen_address: 127.0.0.1:0\nshutdown_timeout: 2s\n",
        moto.url,
        db.display()
    );
    let config = write_config(dir.path(), &yaml);
    let home = tempfile::tempdir().unwrap();
    let mut args = vec!["run", "--config", config.to_str().unwrap()];
    if once {
        args.push("--once");
    }
    let mut child = spawn_run(&args, home.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "no round reached the hanging listeners");
        assert!(child.try_wait().unwrap().is_none(), "fleetscrape run exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
    // A hang guard far below the 25 s the rounds would otherwise take, not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "fleetscrape run (once: {once}) waited for its rounds past the budget");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    (exit, log, db, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_cuts_rounds_in_flight_within_the_shutdown_budget() {
    for once in [false, true] {
        let (exit, log, db, _dir) = sigterm_mid_round(once).await;
        assert!(exit.success(), "once: {once}: exit {exit:?}; log:\n{log}");
        let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", db.display())).await.unwrap();
        // The cut rounds still recorded their members: up=0, a timeout, and
        // the time the round really took.
        let rows: Vec<(String, f64)> =
            sqlx::query_as("SELECT reason, duration_seconds FROM scrape_status WHERE up = 0")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(rows.len(), 3, "once: {once}: {rows:?}\n{log}");
        assert!(rows.iter().all(|(reason, took)| reason == "timeout" && *took > 0.5), "{rows:?}");
        let rounds: Vec<(String, i64, i64, i64)> =
            sqlx::query_as("SELECT target_group, requests, abandoned, errors FROM alb_rounds")
                .fetch_all(&pool)
                .await
                .unwrap();
        // Rounds start at their jobs' phases over the interval: one may have
        // timed out on its own before the signal; the last one to connect was
        // in flight and is cut.
        let each = rounds.iter().all(|r| r.1 == 1 && r.2 + r.3 == 1);
        let cut = rounds.iter().filter(|r| r.2 == 1).count();
        assert!(rounds.len() == 3 && each && cut >= 1, "once: {once}: rounds {rounds:?}\n{log}");
    }
}

/// A loopback server answering `/healthz` with `status`; returns its port.
async fn healthz_server(status: u16) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = axum::http::StatusCode::from_u16(status).unwrap();
    let app = axum::Router::new().route("/healthz", axum::routing::get(move || async move { code }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_asks_the_daemons_listen_address_and_exits_by_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let check = |port: u16| {
        let config = write_config(dir.path(), &format!("http:\n  listen_address: 0.0.0.0:{port}\n"));
        let config = config.to_str().unwrap().to_string();
        tokio::task::spawn_blocking(move || fleetscrape(&["healthcheck", "--config", &config], &[]))
    };
    let healthy = check(healthz_server(200).await).await.unwrap();
    assert!(healthy.status.success(), "stderr:\n{}", stderr(&healthy));
    assert_eq!(stdout(&healthy), "ok\n");

    let port = healthz_server(503).await;
    let failing = check(port).await.unwrap();
    assert_eq!(failing.status.code(), Some(1));
    assert_fails_with(&failing, &[&format!("GET http://127.0.0.1:{port}/healthz"), "503"]);

    let nobody = free_port();
    let down = check(nobody).await.unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert_fails_with(&down, &[&format!("GET http://127.0.0.1:{nobody}/healthz")]);
}
