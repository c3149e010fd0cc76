//! The operator's first hour (issue #23): the mistakes a new user makes end
//! in a message that says what is wrong and what to do, never in a daemon
//! that runs on storing nothing.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, write_config};

/// The unprivileged user the image runs as is 10001; `nobody` stands in for
/// it here: root writes any file whatever its mode, so a read-only database
/// is only read-only to another user.
const NOBODY: &str = "65534";

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The binary copied where `nobody` may run it (the build directory may not
/// be reachable by other users).
fn binary_for_nobody(dir: &Path) -> PathBuf {
    let copy = dir.join("fleetscrape");
    std::fs::copy(env!("CARGO_BIN_EXE_fleetscrape"), &copy).expect("copy the binary");
    chmod(&copy, 0o755);
    copy
}

/// `program args` run as `nobody` through setpriv (util-linux), in a clean
/// environment; stdout discarded, stderr piped.
fn as_nobody(program: &Path, args: &[&str], home: &Path) -> Command {
    let setpriv = "/usr/bin/setpriv";
    assert!(Path::new(setpriv).exists(), "setpriv is missing: install it with apt-get install -y util-linux");
    let mut command = common::clean_command(setpriv, &[], home);
    command
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Waits for `command` to exit, killing it past `limit` (a hang guard, not a
/// timing assertion); returns its exit code and stderr.
fn exit_within(command: &mut Command, limit: Duration) -> (Option<i32>, String) {
    let mut child = command.spawn().expect("spawn");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!("still running after {limit:?}:\n{}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Measured case 3: with a database file its user cannot write, `run` started,
/// answered `/ready` 200, logged a failed checkpoint every second, stored
/// nothing and lost what it held at exit.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_the_daemon_cannot_write_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o777);
    let db = dir.path().join("fleetscrape.db");
    // A real fleetscrape database, owned by root, mode 0644: readable, not writable, by nobody.
    fleetscrape::store::Store::open(&db).await.expect("create the database").close().await;
    chmod(&db, 0o644);
    let config = write_config(
        dir.path(),
        &format!(
            "aws:\n  endpoint_url: http://127.0.0.1:{}\nstorage:\n  path: {}\nhttp:\n  listen_address: 127.0.0.1:{}\n",
            free_port(),
            db.display(),
            free_port()
        ),
    );
    chmod(&config, 0o644);
    let binary = binary_for_nobody(dir.path());
    let (code, err) = exit_within(
        &mut as_nobody(&binary, &["run", "--config", config.to_str().unwrap()], dir.path()),
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(1), "{err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains(&db.display().to_string()) && last.contains("cannot be written"), "{err}");
    assert!(last.contains("owner") || last.contains("chown"), "the message says what to do: {err}");
}

/// `fleetscrape args` in a clean environment (the test credentials, `home`).
fn fleetscrape(args: &[&str], home: &Path) -> Command {
    let mut command = common::clean_command(env!("CARGO_BIN_EXE_fleetscrape"), args, home);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// `/path` of the daemon at `http`: status and body, `None` while it does not answer.
async fn get(http: &str, path: &str) -> Option<(u16, String)> {
    let reply = reqwest::get(format!("http://{http}{path}")).await.ok()?;
    Some((reply.status().as_u16(), reply.text().await.ok()?))
}

/// Polls `/ready` until it answers `status` with a body that contains
/// `saying`; returns the body.
async fn ready_until(http: &str, status: u16, saying: &str, child: &mut std::process::Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(child.try_wait().expect("wait").is_none(), "fleetscrape run exited early");
        if let Some((got, body)) = get(http, "/ready").await
            && got == status
            && body.contains(saying)
        {
            return body;
        }
        assert!(Instant::now() < deadline, "/ready never answered {status} saying {saying:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops `child` with SIGTERM and returns its stderr.
fn stop(child: std::process::Child) -> String {
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
    let output = child.wait_with_output().expect("wait");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Measured case 2: a listener-port typo and a target group without targets
/// printed `0 instances (0 to scrape)`, exit 0, no warning, and `/ready` 200.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_discovery_says_why_and_is_not_ready() {
    common::set_test_env();
    let moto = common::Moto::start();
    let seeder = common::seed::Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    let empty = seeder.target_group("nobody-home", 9100).await;
    seeder.listener(&seed.lb, 9200, &empty).await;
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let yaml = |ports: &str| {
        format!(
            "aws:\n  endpoint_url: {}\ndiscovery:\n  listener_ports: [{ports}]\n  refresh_interval: 1s\n\
             scrape:\n  interval: 1s\nstorage:\n  path: {}\nhttp:\n  listen_address: {http}\n",
            moto.url,
            dir.path().join("fleet.db").display()
        )
    };
    // A typo: 9012 for 9102.
    let config = write_config(dir.path(), &yaml("9012"));
    let output = fleetscrape(&["discover", "--config", config.to_str().unwrap()], dir.path()).output().unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    assert!(
        table.contains(
            "warning: no forwarding listener on discovery.listener_ports [9012]; the load balancers forward on \
             [9100, 9101, 9102, 9200]: fix listener_ports"
        ),
        "{table}"
    );
    // JSON lines keep stdout to the data; the warning goes to stderr.
    let output =
        fleetscrape(&["discover", "-o", "jsonl", "--config", config.to_str().unwrap()], dir.path()).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "", "no instance, no line");
    assert!(String::from_utf8_lossy(&output.stderr).contains("no forwarding listener"), "{output:?}");

    let mut child = fleetscrape(&["run", "--config", config.to_str().unwrap()], dir.path()).spawn().unwrap();
    let body = ready_until(&http, 503, "not ready: discovery found no instance to scrape", &mut child).await;
    assert_eq!(body.lines().count(), 1, "{body}");
    let metrics = get(&http, "/metrics").await.unwrap().1;
    assert!(metrics.contains("fleetscrape_not_ready{reason=\"no_target\"} 1"), "{metrics}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = stop(child);
    let warned = log.lines().filter(|l| l.contains("no forwarding listener on discovery.listener_ports")).count();
    assert_eq!(warned, 1, "once per change, not per refresh:\n{log}");
    let empty = log.lines().filter(|l| l.contains("discovery found no instance to scrape")).count();
    assert_eq!(empty, 1, "a lasting problem: logged once, then reminded every 5 minutes:\n{log}");

    // A wrong region: nothing there at all.
    let config = write_config(dir.path(), &yaml("9100").replace("aws:\n", "aws:\n  region: us-west-2\n"));
    let output = fleetscrape(&["discover", "--config", config.to_str().unwrap()], dir.path()).output().unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("warning: no application or network load balancer in this region"), "{table}");

    // The right ports: the empty target group is named, every listener kept.
    let config = write_config(dir.path(), &yaml("9100, 9101, 9102, 9200"));
    let output = fleetscrape(&["discover", "--config", config.to_str().unwrap()], dir.path()).output().unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("warning: target group nobody-home has no registered target"), "{table}");
    assert!(table.contains("3 instances (3 to scrape)"), "{table}");
}

/// Measured case 4: discovery failing after a first success logged one
/// warning, then nothing, and `/ready` stayed 200 for ever; under `--once`
/// the warning promised a retry that never came.
#[tokio::test(flavor = "multi_thread")]
async fn discovery_failing_after_a_success_fails_ready_past_the_bound_and_recovers() {
    common::set_test_env();
    let moto = common::Moto::start();
    common::seed::Seeder::new(&moto.url).await.seed_topology().await;
    let proxy = common::AwsProxy::start(&moto.url).await;
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let config = write_config(
        dir.path(),
        &format!(
            "aws:\n  endpoint_url: {}\n  max_attempts: 1\ndiscovery:\n  refresh_interval: 1s\n\
             scrape:\n  enabled: false\nstorage:\n  path: {}\nhttp:\n  listen_address: {http}\n",
            proxy.url,
            dir.path().join("fleet.db").display()
        ),
    );
    let mut child = fleetscrape(&["run", "--config", config.to_str().unwrap()], dir.path()).spawn().unwrap();
    assert_eq!(ready_until(&http, 200, "ready", &mut child).await, "ready\n");
    proxy.set_outage(true);
    // 3 refresh intervals of failures, then not ready, with the reason.
    let body = ready_until(&http, 503, "not ready: discovery has failed for", &mut child).await;
    assert!(body.contains("ServiceUnavailable"), "{body}");
    let metrics = get(&http, "/metrics").await.unwrap().1;
    assert!(metrics.contains("fleetscrape_not_ready{reason=\"discovery_failing\"} 1"), "{metrics}");
    proxy.set_outage(false);
    assert_eq!(ready_until(&http, 200, "ready", &mut child).await, "ready\n");
    let log = stop(child);
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("discovery refresh failed")).collect();
    assert_eq!(warned.len(), 1, "one warning, then reminders every 5 minutes:\n{log}");
    assert!(warned[0].contains("keeping the previous topology (3 instances to scrape); next attempt in"), "{log}");
    assert!(log.contains("discovery recovered"), "{log}");

    // --once makes one attempt: no promise of another.
    proxy.set_outage(true);
    let output = fleetscrape(&["run", "--once", "--config", config.to_str().unwrap()], dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("nothing is scraped until a discovery succeeds") && !err.contains("next attempt"), "{err}");
}

/// An `identity_issues` row: path, source, value, expected, hint.
type IssueRow = (String, Option<String>, Option<String>, String, String);

/// This machine's host name: what a stock node_exporter reports as `nodename`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_string()
}

/// Measured case 1: a stock node_exporter behind a listener (no DMI id,
/// `nodename` not an EC2 host name) logged `not_a_member` and nothing about
/// what it carried or what was expected, even at debug.
#[tokio::test(flavor = "multi_thread")]
async fn an_unattributed_payload_says_what_it_carried_what_was_expected_and_what_to_do() {
    use common::e2e;
    use common::fakehost::{FakeHost, Identity};
    common::set_test_env();
    let moto = common::Moto::start();
    let seeder = common::seed::Seeder::new(&moto.url).await;
    let seed = seeder.seed_topology().await;
    let first_member = seeder.members(&seed.asg_name).await.remove(0);
    // Basic A has no identity but its nodename; the others are Nitro hosts.
    let hosts = [
        FakeHost::start(&seed.basic_a, 0.5, 1000, Identity::None),
        FakeHost::start(&seed.basic_b, 0.5, 2000, Identity::Dmi),
        FakeHost::start(&first_member, 0.5, 3000, Identity::Dmi),
    ];
    let listeners =
        [9100, 9101, 9102].into_iter().zip(&hosts).map(|(port, host)| (port, vec![host.address.clone()])).collect();
    let emulator = e2e::emulator(fleetscrape::emulator::Balancing::RoundRobin, listeners).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fleet.db");
    let http = format!("127.0.0.1:{}", free_port());
    let config = write_config(
        dir.path(),
        &format!(
            "aws:\n  endpoint_url: {}\ndiscovery:\n  refresh_interval: 2s\n  early_refresh_min_interval: 1s\n\
             scrape:\n  interval: 1s\n  timeout: 1s\n  mode: via_alb\nrelabel_configs:\n{}\
             storage:\n  path: {}\n  flush_interval: 300ms\nhttp:\n  listen_address: {http}\n",
            moto.url,
            e2e::listener_rules(&emulator),
            db.display()
        ),
    );
    let mut child = fleetscrape(&["run", "--config", config.to_str().unwrap()], dir.path()).spawn().unwrap();
    let name = host_name();
    let ec2_like = name.starts_with("ip-");
    let issue = wait_for_issue(&http, &seed.basic_a, &mut child).await;
    assert_eq!(issue["source"], "node_uname_info{nodename}", "{issue}");
    assert_eq!(issue["value"], name.as_str(), "{issue}");
    let expected_host = issue["expected"][0].as_str().unwrap_or_default().to_string();
    assert!(expected_host.starts_with("ip-10-"), "the member, as nodename would name it: {issue}");
    let hint = if ec2_like { "unknown_instance" } else { "not_an_ec2_host_name" };
    assert_eq!(issue["hint"], hint, "{issue}");
    if !ec2_like {
        assert!(issue["message"].as_str().unwrap_or_default().contains("--uts=host"), "{issue}");
    }
    // Recorded once, not per scrape.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pool = e2e::reader(&db).await;
    let rows: Vec<IssueRow> =
        sqlx::query_as("SELECT path, source, value, expected, hint FROM identity_issues ORDER BY time")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0],
        ("basic-a".into(), Some("node_uname_info{nodename}".into()), Some(name.clone()), expected_host, hint.into())
    );

    // The fix the hint names: the textfile identity. Attributed again.
    hosts[0].write_textfile_identity();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hints: Vec<String> =
            sqlx::query_scalar("SELECT hint FROM identity_issues ORDER BY time").fetch_all(&pool).await.unwrap();
        if hints.last().map(String::as_str) == Some("resolved") {
            break;
        }
        assert!(Instant::now() < deadline, "never attributed again: {hints:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = stop(child);
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("payloads not attributed")).collect();
    assert_eq!(warned.len(), 1, "logged once per change:\n{log}");
    assert!(warned[0].contains(&format!("identifies as node_uname_info{{nodename}}=\"{name}\"")), "{log}");
    assert!(log.contains("payloads attributed again"), "{log}");
}

/// Polls `/api/targets` until `instance`'s target group shows an identity issue.
async fn wait_for_issue(http: &str, instance: &str, child: &mut std::process::Child) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(child.try_wait().expect("wait").is_none(), "fleetscrape run exited early");
        if let Some((200, body)) = get(http, "/api/targets").await
            && let Ok(targets) = serde_json::from_str::<Vec<serde_json::Value>>(&body)
            && let Some(issue) = targets
                .iter()
                .find(|t| t["instance_id"] == instance)
                .map(|t| t["target_group"]["identity_issue"].clone())
                .filter(|issue| !issue.is_null())
        {
            return issue;
        }
        assert!(Instant::now() < deadline, "no identity issue on /api/targets for {instance}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Measured case 3: `check-config` exited 0 for a missing `tls_config.ca_file`,
/// a storage path under a regular file and a read-only directory, which
/// `run` then rejected.
#[test]
fn check_config_rejects_what_run_would_reject() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "x").unwrap();
    let cases = [
        (
            "scrape:\n  tls_config:\n    ca_file: nowhere/ca.pem\nstorage:\n  path: ok/fleet.db\n",
            "scrape.tls_config.ca_file: cannot read",
        ),
        (&*format!("storage:\n  path: {}\n", plain.join("fleet.db").display()), "plain is a file, not a directory"),
    ];
    for (yaml, message) in cases {
        let config = write_config(dir.path(), yaml);
        let output = fleetscrape(&["check-config", "--config", config.to_str().unwrap()], dir.path()).output().unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{yaml}: {err}");
        assert!(err.contains(message), "{yaml}: {err}");
        let output =
            fleetscrape(&["run", "--once", "--config", config.to_str().unwrap()], dir.path()).output().unwrap();
        assert!(String::from_utf8_lossy(&output.stderr).contains(message), "run says the same");
    }
    // A directory its user cannot write (root-owned, 0755; the daemon runs as another user).
    let config = write_config(dir.path(), "storage:\n  path: sub/fleet.db\n");
    chmod(&config, 0o644);
    let binary = binary_for_nobody(dir.path());
    let (code, err) = exit_within(
        &mut as_nobody(&binary, &["check-config", "--config", config.to_str().unwrap()], dir.path()),
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot create") && err.contains("(uid 65534)"), "{err}");
    // The same file passes for a user who can write there.
    let output = fleetscrape(&["check-config", "--config", config.to_str().unwrap()], dir.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains(&format!("path: {}", dir.path().join("sub/fleet.db").display())), "normalised: {printed}");
}

/// Measured case 6: `run --once` beside a running daemon failed on its port
/// (9900) after creating the database.
#[tokio::test(flavor = "multi_thread")]
async fn run_once_beside_a_daemon_needs_no_port_and_a_busy_port_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = busy.local_addr().unwrap().to_string();
    let yaml = |db: &str| {
        format!(
            "aws:\n  endpoint_url: http://127.0.0.1:{}\n  max_attempts: 1\nstorage:\n  path: {db}\nhttp:\n  listen_address: {http}\n",
            free_port()
        )
    };
    // `run` on a port in use: refused before a database exists.
    let config = write_config(dir.path(), &yaml("daemon.db"));
    let output = fleetscrape(&["run", "--config", config.to_str().unwrap()], dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on {http}")), "{err}");
    assert!(!dir.path().join("daemon.db").exists(), "nothing created");
    // `run --once` serves nothing: the busy port is no obstacle (it fails on the closed AWS endpoint instead).
    let config = write_config(dir.path(), &yaml("once.db"));
    let output = fleetscrape(&["run", "--once", "--config", config.to_str().unwrap()], dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!err.contains("cannot listen"), "{err}");
    assert!(err.contains("DescribeLoadBalancers"), "it went on to discovery: {err}");
    drop(busy);
}

/// Measured case 6: `report --config` was accepted and ignored.
#[test]
fn report_refuses_a_config_it_would_ignore() {
    let dir = tempfile::tempdir().unwrap();
    for args in [["report", "--db", "x.db", "--config", "f.yml"], ["--config", "f.yml", "report", "--db", "x.db"]] {
        let output = fleetscrape(&args, dir.path()).output().unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{err}");
        assert!(err.contains("report reads the database named by --db and takes no --config"), "{err}");
    }
    // From the environment (the image sets FLEETSCRAPE_CONFIG), it is no mistake of the user's.
    let mut command = fleetscrape(&["report", "--db", "missing.db"], dir.path());
    let output = command.env("FLEETSCRAPE_CONFIG", "f.yml").output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("missing.db") && !err.contains("--config"), "{err}");
}

/// The README's block after `heading`, between its ```sh fence and the next fence.
fn readme_block(heading: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md");
    let section = &readme[readme.find(heading).unwrap_or_else(|| panic!("README has no {heading:?}"))..];
    let block = &section[section.find("```sh\n").expect("a sh block") + 6..];
    block[..block.find("```").expect("the block's end")].to_string()
}

/// Measured case 5: `config/moto.example.yml` named emulator ports the demo
/// does not use, and the README never said how to run the emulator, the
/// exporters and their identity by hand. The README's commands, run as
/// written (inside a loopback-only network namespace, so its fixed ports
/// are free), store every instance of the seed through its listener.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_hand_run_against_moto_works_as_written() {
    if common::isolate_network("the_readme_hand_run_against_moto_works_as_written") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let script = readme_block("### Run it by hand against moto");
    let scratch = Path::new("/tmp/fleetscrape-moto");
    let _ = std::fs::remove_dir_all(scratch);
    let bin = Path::new(env!("CARGO_BIN_EXE_fleetscrape")).parent().unwrap().to_path_buf();
    assert!(bin.join("alb-emulator").exists(), "alb-emulator is built beside fleetscrape");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", path)
        .env_remove("AWS_ENDPOINT_URL")
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    let group = child.id();
    let output = child.wait_with_output().expect("the script");
    // The exporters, the emulator and moto, left running by the script.
    let _ = Command::new("kill").args(["-TERM", "--", &format!("-{group}")]).status();
    let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the README's commands failed:\n{out}\n{err}");
    assert!(out.contains("3 instances (3 to scrape)"), "discover lists the seed:\n{out}");
    let pool = common::e2e::reader(&scratch.join("fleetscrape.db")).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(DISTINCT instance_id) FROM scrape_status WHERE up = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 3, "each instance stored through its listener:\n{err}");
}

/// Issue #23: every example config passes `check-config`.
#[test]
fn every_example_config_passes_check_config() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for example in ["config/fleetscrape.example.yml", "config/moto.example.yml", "infra/fleetscrape.yml"] {
        let path = repo.join(example);
        let output = fleetscrape(&["check-config", "--config", path.to_str().unwrap()], repo).output().unwrap();
        assert!(output.status.success(), "{example}: {}", String::from_utf8_lossy(&output.stderr));
    }
}
