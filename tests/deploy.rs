//! The delivery path as users run it, with Debian's podman (rootful, runc):
//! `infra/Dockerfile` built from this checkout, the image run end to end
//! against moto, real node_exporters and the ALB emulator on loopback,
//! Grafana's user reading the live database from a second container,
//! `infra/docker-compose.yml` under podman-compose, and a push and pull
//! through a loopback registry.
//!
//! No registry is reachable here: the base images are local stand-ins made
//! from Debian's archive (`infra/ci/base-images.sh`), passed as build args
//! whose defaults stay the public images. Every container uses
//! `--network host` inside the test's loopback-only network namespace.
//! Under `CI=true` nothing here skips.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::e2e::{CPU_ROWS, SeedFleet, assert_no_misattribution, listener_rules, reader, wait_rows};
use common::fakehost::{FakeHost, Identity};
use common::podman::{
    Container, IMAGE, Volume, image, podman, podman_available, podman_output, process_ids, root, tool,
};
use common::{TEST_ENV, isolate_network, metric};
use fleetscrape::emulator::Balancing;
use serde_json::Value;

/// fleetscrape's `/healthz`, `/metrics` in the containers (the image's HEALTHCHECK asks this address).
const HTTP: &str = "127.0.0.1:9900";
/// The database inside the containers: on the volume, where the datasource reads it.
const DB_IN_CONTAINER: &str = "/var/lib/fleetscrape/fleetscrape.db";
/// `podman stop`'s grace before SIGKILL: above the daemon's 8 s shutdown budget,
/// so exit code 0 (not 137) shows the shutdown finished within the budget.
const STOP_GRACE_SECONDS: &str = "15";

#[test]
fn the_image_builds_from_this_checkout_small_and_as_documented() {
    if !podman_available() {
        return;
    }
    let built = image();
    let inspect: Value = serde_json::from_str(&podman(&["image", "inspect", IMAGE])).expect("inspect JSON");
    let config = &inspect[0]["Config"];
    assert_eq!(config["User"], "10001:0", "non-root, in Grafana's group 0");
    assert_eq!(config["Entrypoint"], serde_json::json!(["fleetscrape"]));
    assert_eq!(config["Cmd"], serde_json::json!(["run"]));
    assert!(
        config["Env"].as_array().unwrap().iter().any(|e| e == "FLEETSCRAPE_CONFIG=/etc/fleetscrape/fleetscrape.yml")
    );
    assert!(config["Volumes"]["/var/lib/fleetscrape"].is_object(), "{config}");
    let health = &inspect[0]["Healthcheck"];
    assert_eq!(health["Test"], serde_json::json!(["CMD", "fleetscrape", "healthcheck"]), "docker format keeps it");

    let version = podman(&["run", "--rm", "--network", "host", IMAGE, "--version"]);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    podman(&[
        "run",
        "--rm",
        "--network",
        "host",
        IMAGE,
        "check-config",
        "--config",
        "/usr/share/fleetscrape/fleetscrape.example.yml",
    ]);

    // With no daemon answering, the health check fails and says where it asked.
    let unhealthy = podman_output(&[
        "run",
        "--rm",
        "--network",
        "host",
        "-e",
        "FLEETSCRAPE_CONFIG=/usr/share/fleetscrape/fleetscrape.example.yml",
        IMAGE,
        "healthcheck",
    ]);
    assert!(!unhealthy.status.success());
    assert!(String::from_utf8_lossy(&unhealthy.stderr).contains("/healthz"), "{unhealthy:?}");
    // Nothing the binary does not need: no curl, no shell tools beyond the base's.
    let curl = podman_output(&["run", "--rm", "--entrypoint", "/bin/sh", IMAGE, "-c", "command -v curl"]);
    assert!(!curl.status.success(), "curl is in the image");

    // What the image weighs, layer by layer (for docs/deploy.md and the note).
    let size: f64 = podman(&["image", "inspect", "--format", "{{.Size}}", IMAGE]).parse().unwrap();
    let runtime: f64 = podman(&["image", "inspect", "--format", "{{.Size}}", &built.runtime]).parse().unwrap();
    eprintln!("{IMAGE}: {:.1} MB, of which the runtime base {:.1} MB", size / 1e6, runtime / 1e6);
    eprintln!("{}", podman(&["history", "--format", "{{.Size}}\t{{.CreatedBy}}", IMAGE]));
    // The budget docs/deploy.md states: TLS roots (with openssl), one font and the binary.
    assert!(size - runtime < 55e6, "the image adds {:.1} MB to its base", (size - runtime) / 1e6);
    assert_no_build_context_bulk();
}

/// `.dockerignore` keeps `target/`, databases and tests out of the context.
fn assert_no_build_context_bulk() {
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    for bulk in ["target", "data", "**/*.db", "tests", ".git"] {
        assert!(ignore.lines().any(|l| l.trim() == bulk), ".dockerignore lacks {bulk}");
    }
}

/// The seed's fleet ([`SeedFleet`]) that every run test scrapes from a container.
struct Fleet(SeedFleet);

impl Fleet {
    async fn start() -> Self {
        Self(SeedFleet::start(Balancing::RoundRobin).await)
    }

    /// The config a container reads: moto, the listeners mapped onto the
    /// emulator, the database on the volume.
    fn config(&self, flush_interval: &str) -> String {
        format!(
            "aws:\n  region: ap-northeast-2\n  endpoint_url: {moto}\n\
             discovery:\n  refresh_interval: 2s\n  early_refresh_min_interval: 1s\n\
             scrape:\n  interval: 1s\n  timeout: 1s\n  mode: via_alb\n\
             relabel_configs:\n{rules}\
             storage:\n  path: {DB_IN_CONTAINER}\n  flush_interval: {flush_interval}\n\
             http:\n  listen_address: {HTTP}\n",
            moto = self.0.moto.url,
            rules = listener_rules(&self.0.emulator),
        )
    }

    /// Scales the ASG out by one: a new member, its exporter, the listener forwarding to both.
    async fn scale_out(&mut self) -> String {
        let SeedFleet { seeder, seed, hosts, emulator, .. } = &mut self.0;
        let before: Vec<String> = seeder.members(&seed.asg_name).await;
        seeder.set_desired(&seed.asg_name, before.len() as i32 + 1).await;
        let members = seeder.members(&seed.asg_name).await;
        let new = members.iter().find(|m| !before.contains(m)).expect("a new member").clone();
        hosts.insert(new.clone(), FakeHost::start(&new, 0.3, 9000, Identity::Dmi));
        emulator.set_members(9102, &members.iter().map(|m| hosts[m].address.clone()).collect::<Vec<_>>());
        new
    }
}

/// `podman run -d` of the image with the test's fake credentials; `extra` before the image.
fn run_container(name: &str, config: &Path, volume: &Volume, extra: &[&str]) -> Container {
    let _ = podman_output(&["rm", "-f", "-t", "0", name]);
    let config_mount = format!("{}:/etc/fleetscrape/fleetscrape.yml:ro", config.display());
    let data_mount = format!("{}:/var/lib/fleetscrape", volume.0);
    let env: Vec<String> = TEST_ENV.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec!["run", "-d", "--name", name, "--network", "host", "-v", &config_mount, "-v", &data_mount];
    for e in &env {
        args.extend(["-e", e]);
    }
    args.extend(extra);
    args.push(IMAGE);
    podman(&args);
    Container(name.to_string())
}

/// `podman logs`, for failure messages.
fn logs(container: &str) -> String {
    let output = podman_output(&["logs", container]);
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_runs_the_seed_topology_read_only_and_grafana_reads_it_live() {
    if !podman_available() {
        return;
    }
    image(); // built outside the namespace: the build needs crates.io
    if isolate_network("the_image_runs_the_seed_topology_read_only_and_grafana_reads_it_live") {
        return;
    }
    let built = image();
    let mut fleet = Fleet::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fleetscrape.yml");
    std::fs::write(&config, fleet.config("5s")).unwrap();
    let volume = Volume::create("fleetscrape-test-data");
    // Read-only root, no tmpfs anywhere: only the data volume can be written.
    let container =
        run_container("fleetscrape-test-run", &config, &volume, &["--read-only", "--read-only-tmpfs=false"]);
    let db = volume.mountpoint().join("fleetscrape.db");

    for id in fleet.0.hosts.keys() {
        wait_rows(&db, "3 CPU values", CPU_ROWS, id, 3).await;
    }
    let new = fleet.scale_out().await;
    wait_rows(&db, "3 CPU values of the new member", CPU_ROWS, &new, 3).await;
    let pool = reader(&db).await;
    for host in fleet.0.hosts.values() {
        assert_no_misattribution(&pool, host).await;
    }
    let members = fleet.0.seeder.members(&fleet.0.seed.asg_name).await;
    assert_eq!(members.len(), 2, "the ASG scaled out to 2");

    assert_eq!(process_ids(&container.0), (10001, 0), "the image's non-root user, group 0");
    let health = podman_output(&["healthcheck", "run", &container.0]);
    assert!(health.status.success(), "healthcheck: {}{}", String::from_utf8_lossy(&health.stderr), logs(&container.0));

    // Grafana's user (472:0) in a second container reads the live database as the plugin opens it.
    let cpu = grafana_cpu_panel(&built.sqlite, &volume, &fleet.0.hosts.keys().cloned().collect::<Vec<_>>());
    for id in fleet.0.hosts.keys() {
        assert!(cpu.iter().any(|(series, _)| series.starts_with(id.as_str())), "no CPU rows of {id} in {cpu:?}");
    }
    assert!(cpu.iter().all(|(_, v)| (0.0..=100.0).contains(v)), "{cpu:?}");

    assert_final_flush_on_stop(&container, &pool, fleet.0.hosts.keys()).await;
}

/// SIGTERM (`podman stop`) right after a periodic flush: exit 0 within the
/// shutdown budget, and what was scraped since that flush is in the file.
async fn assert_final_flush_on_stop<'a>(
    container: &Container,
    pool: &sqlx::SqlitePool,
    instances: impl Iterator<Item = &'a String>,
) {
    let flushes = || metric(HTTP, "fleetscrape_store_flushes_total");
    let start = flushes().await.expect("fleetscrape_store_flushes_total");
    let deadline = Instant::now() + Duration::from_secs(30);
    while flushes().await == Some(start) {
        assert!(Instant::now() < deadline, "no periodic flush within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flushed = flushes().await;
    let newest_flushed = newest_scrape(pool).await;
    // Two scrape intervals pass with a flush interval of 5 s: these scrapes are held in memory.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(flushes().await, flushed, "a periodic flush came early; the final flush cannot be told apart");
    podman(&["stop", "-t", STOP_GRACE_SECONDS, &container.0]);
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &container.0]);
    assert_eq!(code, "0", "SIGTERM must end fleetscrape with 0 within its budget:\n{}", logs(&container.0));
    let log = logs(&container.0);
    assert!(log.contains("store writer stopped after a final flush"), "{log}");
    for id in instances {
        let newest: Option<f64> =
            sqlx::query_scalar("SELECT max(time) FROM scrape_status WHERE instance_id = ? AND up = 1")
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap();
        assert!(newest > Some(newest_flushed), "{id}: nothing after the last periodic flush reached the file");
    }
}

async fn newest_scrape(pool: &sqlx::SqlitePool) -> f64 {
    sqlx::query_scalar("SELECT max(time) FROM scrape_status").fetch_one(pool).await.unwrap()
}

/// The fleet dashboard's "CPU busy % per instance" panel as Grafana would run
/// it: its variables resolved first, then the plugin's macro, each query run
/// by SQLite's shell as uid 472 gid 0 opening the database the way
/// frser-sqlite-datasource 4.x does (`file:` URI, read-write open,
/// `busy_timeout(5000)`, `query_only(1)`; never `mode=ro`). Returns (series, value).
fn grafana_cpu_panel(sqlite_image: &str, volume: &Volume, instances: &[String]) -> Vec<(String, f64)> {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("infra/grafana/dashboards/fleetscrape-fleet.json")).unwrap(),
    )
    .unwrap();
    let query = |sql: &str| -> Vec<Value> { grafana_query(sqlite_image, volume, sql) };
    let first_column = |rows: Vec<Value>| -> Vec<String> {
        rows.iter().map(|r| r.as_object().unwrap().values().next().unwrap().as_str().unwrap().to_string()).collect()
    };
    let variable = |name: &str| -> String {
        let list = dashboard["templating"]["list"].as_array().unwrap();
        let v = list.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no variable {name}"));
        v["query"]["rawQueryText"].as_str().unwrap().to_string()
    };
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let range = (now_ms - 600_000, now_ms);
    let mut vars: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for name in ["role", "asg_name", "instance_id"] {
        let sql = common::grafana::expand(&variable(name), &vars, range.0, range.1);
        vars.insert(name, first_column(query(&sql)));
    }
    let mut seen = vars["instance_id"].clone();
    seen.sort();
    let mut want = instances.to_vec();
    want.sort();
    assert_eq!(seen, want, "the dashboard's instance variable lists the fleet");
    let panel = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "CPU busy % per instance")
        .expect("the fleet dashboard's CPU panel");
    let sql = common::grafana::expand(panel["targets"][0]["rawQueryText"].as_str().unwrap(), &vars, range.0, range.1);
    query(&sql)
        .iter()
        .map(|row| (row["series"].as_str().unwrap().to_string(), row["cpu_busy"].as_f64().unwrap()))
        .collect()
}

/// The connection the provisioned datasource opens: `pathPrefix + path + "?" +
/// pathOptions` (read-write, never `mode=ro`), and each `_pragma=name(value)`
/// of the options as `PRAGMA name = value` right after opening, as the
/// plugin's Go driver applies them (SQLite itself ignores `_pragma` in a URI).
fn datasource_connection() -> (String, Vec<String>) {
    let file = std::fs::read_to_string(root().join("infra/grafana/provisioning/datasources/fleetscrape.yml")).unwrap();
    let provisioned: Value = serde_saphyr::from_str(&file).unwrap();
    let data = &provisioned["datasources"][0]["jsonData"];
    let text = |key: &str| data[key].as_str().unwrap_or_else(|| panic!("jsonData.{key}")).to_string();
    let (prefix, path, options) = (text("pathPrefix"), text("path"), text("pathOptions"));
    assert_eq!(path, DB_IN_CONTAINER, "the datasource reads where fleetscrape writes");
    let pragmas = options
        .split('&')
        .filter_map(|option| option.strip_prefix("_pragma="))
        .map(|pragma| {
            let (name, value) = pragma.trim_end_matches(')').split_once('(').expect("_pragma=name(value)");
            format!("PRAGMA {name} = {value}")
        })
        .collect();
    (format!("{prefix}{path}?{options}"), pragmas)
}

/// One query through SQLite's shell in the reader container, connected as
/// [`datasource_connection`]; rows as JSON objects.
fn grafana_query(sqlite_image: &str, volume: &Volume, sql: &str) -> Vec<Value> {
    let mount = format!("{}:/var/lib/fleetscrape", volume.0);
    let (uri, pragmas) = datasource_connection();
    let mut args = vec!["run", "--rm", "--network", "host", "--user", "472:0", "-v", &mount, sqlite_image];
    args.extend(["sqlite3", "-bail", "-json", "-cmd", ".output /dev/null"]);
    for pragma in &pragmas {
        args.extend(["-cmd", pragma]);
    }
    args.extend(["-cmd", ".output", &uri, sql]);
    let output = podman_output(&args);
    assert!(
        output.status.success(),
        "Grafana's user could not query the live database: {}\n{sql}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    if text.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("sqlite3 -json: {e}: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_file_starts_fleetscrape_healthy_under_podman_compose() {
    if !podman_available() || !tool("podman-compose", COMPOSE_INSTALL) {
        return;
    }
    assert_compose_handles_host_networking();
    image();
    if isolate_network("the_compose_file_starts_fleetscrape_healthy_under_podman_compose") {
        return;
    }
    image();
    let fleet = Fleet::start().await;
    // The shipped compose file as it is, beside the config a user writes, and
    // an override for this machine: the image already built, host networking
    // (loopback only), fake credentials. Grafana's image cannot be pulled here.
    let dir = tempfile::tempdir().unwrap();
    let infra = dir.path().join("infra");
    std::fs::create_dir_all(&infra).unwrap();
    std::fs::copy(root().join("infra/docker-compose.yml"), infra.join("docker-compose.yml")).unwrap();
    std::fs::write(infra.join("fleetscrape.yml"), fleet.config("1s")).unwrap();
    let env: String = TEST_ENV.iter().map(|(k, v)| format!("      {k}: \"{v}\"\n")).collect();
    std::fs::write(
        infra.join("test-override.yml"),
        format!("version: \"2.4\"\nservices:\n  fleetscrape:\n    image: {IMAGE}\n    network_mode: host\n    environment:\n{env}"),
    )
    .unwrap();
    let project = "fleetscrapetest";
    let compose = |args: &[&str]| {
        let output = Command::new("podman-compose")
            .args(["-p", project, "-f", "docker-compose.yml", "-f", "test-override.yml"])
            .args(args)
            .current_dir(&infra)
            .output()
            .expect("run podman-compose");
        (
            output.status.success(),
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        )
    };
    let down_in = infra.clone();
    let _down = Down(Box::new(move || {
        let _ = Command::new("podman-compose")
            .args(["-p", project, "-f", "docker-compose.yml", "-f", "test-override.yml", "down", "-v"])
            .current_dir(&down_in)
            .output();
    }));
    let (ok, out) = compose(&["up", "-d", "--no-build", "fleetscrape"]);
    assert!(ok, "podman-compose up failed:\n{out}");
    let container = format!("{project}_fleetscrape_1");
    let running = podman_output(&["container", "inspect", "--format", "{{.State.Running}}", &container]);
    assert!(
        String::from_utf8_lossy(&running.stdout).trim() == "true",
        "podman-compose up left {container} not running:\n{out}\n{}",
        logs(&container)
    );

    let volume = Volume(format!("{project}_fleetscrape-data"));
    let db = volume.mountpoint().join("fleetscrape.db");
    for id in fleet.0.hosts.keys() {
        wait_rows(&db, "3 CPU values", CPU_ROWS, id, 3).await;
    }
    assert_eq!(process_ids(&container), (10001, 0), "compose's user: 10001:0");
    let health = podman_output(&["healthcheck", "run", &container]);
    assert!(
        health.status.success(),
        "compose's healthcheck: {}{}",
        String::from_utf8_lossy(&health.stderr),
        logs(&container)
    );
    let inspect: Value = serde_json::from_str(&podman(&["inspect", &container])).unwrap();
    assert_eq!(inspect[0]["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped", "{}", inspect[0]["HostConfig"]);
    std::mem::forget(volume); // `down -v` removes it
}

const COMPOSE_INSTALL: &str = "pip install podman-compose==1.6.0";

/// Debian's podman-compose 1.0.3 adds the project's bridge network beside
/// `network_mode: host`, which podman refuses; 1.1 and later do not.
fn assert_compose_handles_host_networking() {
    let output = Command::new("podman-compose").arg("--version").output().expect("podman-compose --version");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("podman-compose version "))
        .unwrap_or_else(|| panic!("podman-compose --version printed {text:?}"));
    let (major, minor) = match version.split('.').map(|n| n.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>()[..] {
        [major, minor, ..] => (major, minor),
        _ => panic!("podman-compose version {version:?}"),
    };
    assert!(
        (major, minor) >= (1, 1),
        "podman-compose {version} cannot run network_mode: host (it adds a bridge network too); {COMPOSE_INSTALL}"
    );
}

/// Runs a clean-up when dropped, also when the test fails.
struct Down(Box<dyn FnMut()>);

impl Drop for Down {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[test]
fn the_image_round_trips_through_a_loopback_registry() {
    if !podman_available() || !tool("docker-registry", "apt-get install -y docker-registry") {
        return;
    }
    image();
    if isolate_network("the_image_round_trips_through_a_loopback_registry") {
        return;
    }
    image();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = dir.path().join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        ),
    )
    .unwrap();
    let registry = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut registry = Killed(registry.expect("start docker-registry"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not listen on 127.0.0.1:{port}");
        assert!(registry.0.try_wait().unwrap().is_none(), "docker-registry exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let remote = format!("127.0.0.1:{port}/fleetscrape:test");
    podman(&["push", "--quiet", "--tls-verify=false", IMAGE, &remote]);

    // Pulled into an empty store, as the monitoring host would: nothing local to lean on.
    let store = dir.path().join("store");
    let (graph, run) = (store.join("root"), store.join("run"));
    let fresh = |args: &[&str]| -> String {
        let mut all = vec!["--root", graph.to_str().unwrap(), "--runroot", run.to_str().unwrap()];
        all.extend(args);
        podman(&all)
    };
    fresh(&["pull", "--quiet", "--tls-verify=false", &remote]);
    let pushed = podman(&["image", "inspect", "--format", "{{.Id}}", IMAGE]);
    let pulled = fresh(&["image", "inspect", "--format", "{{.Id}}", &remote]);
    assert_eq!(pushed, pulled, "the pulled image is the built one");
    let version = fresh(&["run", "--rm", "--network", "host", &remote, "--version"]);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    fresh(&["rmi", "-a", "-f"]);
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
