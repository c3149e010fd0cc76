//! The operator's view of `fleetscrape run` (issue #11, item 5), run as a
//! user would: failures logged once per change of state, exit codes, logs
//! to a closed or full pipe, JSON logs.

mod common;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::seed::Seeder;
use common::{Moto, free_port, metric, set_test_env, write_config};

/// A config whose every listener address is a closed loopback port: each
/// interval records up=0 (`connect_error`) for the seed topology's three
/// instances.
fn failing_config(dir: &std::path::Path, moto: &Moto, http: &str) -> std::path::PathBuf {
    let closed = format!("127.0.0.1:{}", free_port());
    let yaml = format!(
        "aws:\n  endpoint_url: {}\nscrape:\n  interval: 1s\n  timeout: 1s\n  mode: via_alb\n\
         relabel_configs:\n  - {{target_label: __alb_address__, replacement: '{closed}'}}\n\
         storage:\n  path: {}\n  flush_interval: 1s\nhttp:\n  listen_address: {http}\n",
        moto.url,
        dir.join("operator.db").display()
    );
    write_config(dir, &yaml)
}

/// The seed topology in moto, every listener closed ([`failing_config`]),
/// with a directory for the config and the database, and a throwaway HOME.
struct FailingFleet {
    moto: Moto,
    dir: tempfile::TempDir,
    http: String,
    config: std::path::PathBuf,
    home: tempfile::TempDir,
}

impl FailingFleet {
    async fn start() -> Self {
        set_test_env();
        let moto = Moto::start();
        Seeder::new(&moto.url).await.seed_topology().await;
        let dir = tempfile::tempdir().unwrap();
        let http = format!("127.0.0.1:{}", free_port());
        let config = failing_config(dir.path(), &moto, &http);
        Self { moto, dir, http, config, home: tempfile::tempdir().unwrap() }
    }
}

/// `fleetscrape args` in a clean environment plus `env`, stdout discarded.
fn command(args: &[&str], home: &std::path::Path, env: &[(&str, &str)]) -> Command {
    let mut command = common::clean_command(env!("CARGO_BIN_EXE_fleetscrape"), args, home);
    command.envs(env.iter().copied()).stdout(Stdio::null());
    command
}

/// Waits for `child` to exit; panics past `limit` (a hang guard, not a timing assertion).
fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            return exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the daemon has counted more than `above` failed scrapes.
async fn wait_failures_above(child: &mut Child, http: &str, above: f64, what: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(child.try_wait().expect("wait").is_none(), "{what}: fleetscrape run exited early");
        if let Some(total) = metric(http, "fleetscrape_scrape_failures_total").await
            && total > above
        {
            return total;
        }
        assert!(Instant::now() < deadline, "{what}: scraping stopped (failures stayed at or below {above})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sigterm(child: &Child) {
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
}

#[tokio::test(flavor = "multi_thread")]
async fn run_once_with_every_target_down_exits_3_and_logs_each_failure_at_warn() {
    let FailingFleet { moto: _moto, dir: _dir, http: _http, config, home } = FailingFleet::start().await;
    let output = command(&["run", "--once", "--config", config.to_str().unwrap()], home.path(), &[])
        .stderr(Stdio::piped())
        .output()
        .expect("run --once");
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "exit {:?}; log:\n{log}", output.status);
    let failing: Vec<&str> = log.lines().filter(|l| l.contains("scrape failing")).collect();
    assert_eq!(failing.len(), 3, "one warning per instance:\n{log}");
    assert!(failing.iter().all(|l| l.contains("WARN") && l.contains("connect_error")), "{failing:#?}");
    let last = log.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains("error: no target was stored") && last.contains("3 failed (connect_error: 3)"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_target_is_logged_once_while_it_keeps_failing() {
    let FailingFleet { moto: _moto, dir: _dir, http, config, home } = FailingFleet::start().await;
    let mut child = command(&["run", "--config", config.to_str().unwrap()], home.path(), &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Three instances fail every second: 12 failures are four intervals.
    wait_failures_above(&mut child, &http, 12.0, "steady failure").await;
    sigterm(&child);
    let exit = wait_exit(&mut child, Duration::from_secs(30), "run");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(exit.success(), "{exit:?}\n{log}");
    assert_eq!(log.lines().filter(|l| l.contains("scrape failing")).count(), 3, "{log}");
}

/// `fleetscrape run … 2>&1 | head -2`: the reader goes away after two lines.
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stderr_pipe_neither_panics_nor_stops_scraping() {
    let FailingFleet { moto: _moto, dir: _dir, http, config, home } = FailingFleet::start().await;
    let mut child = command(&["run", "--config", config.to_str().unwrap()], home.path(), &[("RUST_LOG", "debug")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let first = wait_failures_above(&mut child, &http, 0.0, "closed pipe").await;
    wait_failures_above(&mut child, &http, first + 6.0, "closed pipe").await;
    sigterm(&child);
    let exit = wait_exit(&mut child, Duration::from_secs(30), "run with a closed stderr");
    assert!(exit.success(), "exit {exit:?} (101 is a panic)");
}

/// A log reader that stops reading (a stuck log shipper): the pipe fills and
/// every write to it would block.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_stderr_pipe_never_stalls_scraping_or_shutdown() {
    let FailingFleet { moto: _moto, dir: _dir, http, config, home } = FailingFleet::start().await;
    // Trace level fills a 64 KiB pipe within the first discovery.
    let mut child = command(&["run", "--config", config.to_str().unwrap()], home.path(), &[("RUST_LOG", "trace")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _never_read = child.stderr.take();
    // Once lines are being dropped the pipe and the queue are full: from
    // then on every write would have blocked.
    let deadline = Instant::now() + Duration::from_secs(90);
    while metric(&http, "fleetscrape_log_lines_dropped_total").await.is_none_or(|d| d == 0.0) {
        assert!(Instant::now() < deadline, "the log never filled the pipe");
        assert!(child.try_wait().expect("wait").is_none(), "fleetscrape run exited early");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = wait_failures_above(&mut child, &http, 0.0, "full pipe").await;
    wait_failures_above(&mut child, &http, first + 6.0, "full pipe").await;
    sigterm(&child);
    let exit = wait_exit(&mut child, Duration::from_secs(30), "run with a full stderr");
    assert!(exit.success(), "exit {exit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn log_format_json_writes_one_object_per_line() {
    let FailingFleet { moto: _moto, dir: _dir, http: _http, config, home } = FailingFleet::start().await;
    let output =
        command(&["--log-format", "json", "run", "--once", "--config", config.to_str().unwrap()], home.path(), &[])
            .stderr(Stdio::piped())
            .output()
            .expect("run --once");
    let log = String::from_utf8_lossy(&output.stderr);
    let mut warnings = 0;
    for line in log.lines() {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object ({e}): {line:?}\n{log}"));
        if object["fields"]["message"] == "scrape failing" {
            assert_eq!(object["level"], "WARN", "{object}");
            assert_eq!(object["fields"]["reason"], "connect_error", "{object}");
            assert!(object["fields"]["instance"].as_str().is_some_and(|i| i.starts_with("i-")), "{object}");
            warnings += 1;
        }
    }
    assert_eq!(warnings, 3, "{log}");
    assert_eq!(output.status.code(), Some(3));
}

/// `fleetscrape check-config | head -0`: stdout's reader has gone before the
/// first write.
#[test]
fn a_closed_stdout_is_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "aws:\n  region: ap-northeast-2\n");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let output = command(&["check-config", "--config", config.to_str().unwrap()], dir.path(), &[])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("check-config");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?} (101 is a panic):\n{err}", output.status);
    assert!(!err.contains("panicked"), "{err}");
}

/// Issue #11: two `run` processes on one database both wrote.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_on_the_same_database_is_refused_at_start() {
    let FailingFleet { moto, dir, http, config, home } = FailingFleet::start().await;
    let mut first = command(&["run", "--config", config.to_str().unwrap()], home.path(), &[])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_failures_above(&mut first, &http, 0.0, "first run").await;
    // Another HTTP port, the same database.
    let second_config = failing_config(dir.path(), &moto, &format!("127.0.0.1:{}", free_port()));
    let output = command(&["run", "--once", "--config", second_config.to_str().unwrap()], home.path(), &[])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("is in use by another fleetscrape run") && last.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    assert!(!err.contains("database open"), "refused before opening the database:\n{err}");
    sigterm(&first);
    assert!(wait_exit(&mut first, Duration::from_secs(30), "first run").success());
    // The lock went with the process: the next run starts.
    let output = command(&["run", "--once", "--config", second_config.to_str().unwrap()], home.path(), &[])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", String::from_utf8_lossy(&output.stderr));
}

/// Issue #11: `run` added its schema to any SQLite file it was pointed at.
#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_a_database_that_is_not_fleetscrape_s() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("operator.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}?mode=rwc", db.display())).await.unwrap();
    sqlx::query("CREATE TABLE invoices (id INTEGER)").execute(&pool).await.unwrap();
    pool.close().await;
    let before = std::fs::read(&db).unwrap();
    let config = write_config(
        dir.path(),
        &format!("aws:\n  endpoint_url: http://127.0.0.1:{}\nstorage:\n  path: {}\n", free_port(), db.display()),
    );
    let output = command(&["run", "--once", "--config", config.to_str().unwrap()], dir.path(), &[])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("is not a fleetscrape database (it has tables invoices)"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the file is untouched");
}

/// Issue #11: with AWS failing at start, `run` sat at 0 targets, `/healthz`
/// 200, retrying once per `refresh_interval` (5 min by default).
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_first_discovery_is_retried_with_backoff_and_not_ready_until_it_succeeds() {
    set_test_env();
    let moto = Moto::start();
    Seeder::new(&moto.url).await.seed_topology().await;
    let proxy = common::AwsProxy::start(&moto.url).await;
    proxy.set_outage(true);
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let db = dir.path().join("operator.db");
    let yaml = format!(
        "aws:\n  endpoint_url: {}\n  max_attempts: 1\ndiscovery:\n  refresh_interval: 5m\n\
         storage:\n  path: {}\n  flush_interval: 1s\nhttp:\n  listen_address: {http}\n",
        proxy.url,
        db.display()
    );
    let config = write_config(dir.path(), &yaml);
    let home = tempfile::tempdir().unwrap();
    let mut child = command(&["run", "--config", config.to_str().unwrap()], home.path(), &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let request = client.get(format!("http://{http}{path}")).send();
        async move {
            let reply = request.await.ok()?;
            Some((reply.status().as_u16(), reply.text().await.ok()?))
        }
    };
    // Attempts at about 0, 1, 3 and 7 s: four within seconds, not one per 5 min.
    let mut attempts = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while attempts < 4 {
        assert!(Instant::now() < deadline, "only {attempts} discovery attempts during the outage");
        assert!(child.try_wait().unwrap().is_none(), "run exited during the outage");
        attempts += proxy.take_calls().get("DescribeLoadBalancers").copied().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get("/healthz").await.map(|r| r.0), Some(200), "liveness stays up");
    let (status, body) = get("/ready").await.expect("/ready answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no discovery has succeeded yet") && body.contains("ServiceUnavailable"), "{body}");
    let pool = common::e2e::reader(&db).await;
    let row = || async {
        sqlx::query_as::<_, (i64, Option<f64>, Option<String>)>(
            "SELECT ok, last_ok, error FROM component_status WHERE component = 'discovery'",
        )
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        if let Some(row) = row().await {
            break row;
        }
        assert!(Instant::now() < deadline, "no discovery row in component_status");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        failed.0 == 0 && failed.1.is_none() && failed.2.as_deref().is_some_and(|e| e.contains("ServiceUnavailable")),
        "{failed:?}"
    );

    proxy.set_outage(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while get("/ready").await.map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "not ready after the outage ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = row().await;
        if ok.as_ref().is_some_and(|r| r.0 == 1 && r.1.is_some() && r.2.is_none()) {
            break;
        }
        assert!(Instant::now() < deadline, "discovery row never turned ok: {ok:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let store: (i64, Option<f64>) =
        sqlx::query_as("SELECT ok, last_ok FROM component_status WHERE component = 'store'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(store.0 == 1 && store.1.is_some(), "{store:?}");
    sigterm(&child);
    let exit = wait_exit(&mut child, Duration::from_secs(30), "run");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(exit.success(), "{exit:?}\n{log}");
    let warned = log.lines().filter(|l| l.contains("discovery refresh failed")).count();
    assert_eq!(warned, 1, "the same failure is logged once, not per retry:\n{log}");
    assert!(log.contains("discovery recovered"), "{log}");
}

/// Issue #11: a missing credential printed the SDK's provider chain.
#[test]
fn no_credentials_is_one_actionable_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("aws:\n  endpoint_url: http://127.0.0.1:{}\n", free_port()));
    let output = Command::new(env!("CARGO_BIN_EXE_fleetscrape"))
        .args(["discover", "--config", config.to_str().unwrap()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("AWS_REGION", "ap-northeast-2")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("no AWS credentials: set AWS_ACCESS_KEY_ID"), "{err}");
    assert!(!err.contains("Attempted:"), "not the provider chain: {err}");
}

/// Issue #11: an AWS endpoint that accepts but never answers took 93 s to
/// fail (30 s per attempt, three attempts). `aws.call_timeout` now bounds
/// the whole call, retries included.
#[tokio::test(flavor = "multi_thread")]
async fn an_aws_endpoint_that_never_answers_fails_within_the_call_timeout_without_retrying() {
    let (address, accepted) = common::silent_server().await;
    let endpoint = format!("http://{address}");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("aws:\n  endpoint_url: {endpoint}\n  call_timeout: 2s\n"));
    let mut child = command(&["discover", "--config", config.to_str().unwrap()], dir.path(), &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || {
        let exit = wait_exit(&mut child, Duration::from_secs(60), "discover against a silent endpoint");
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        (exit, err)
    })
    .await
    .unwrap();
    let (exit, err) = exit;
    assert_eq!(exit.code(), Some(1), "{err}");
    assert!(err.contains("no answer within aws.call_timeout (2s)"), "{err}");
    // A refresh starts with DescribeLoadBalancers and DescribeAutoScalingGroups
    // side by side: one attempt of each, not max_attempts (3) of each.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2, "no retry after the call timeout");
}

/// `fleetscrape check-config` on `config`, which must succeed: what it printed.
fn check_config(config: &std::path::Path, home: &std::path::Path, env: &[(&str, &str)]) -> String {
    let check = command(&["check-config", "--config", config.to_str().unwrap()], home, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let checked = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "{checked}");
    checked
}

/// A loopback "exporter" that answers every connection with `body`; its address.
fn answering_exporter(body: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            let _ = std::io::Write::write_all(&mut stream, answer.as_bytes());
        }
    });
    address
}

/// Issue #11, item 6: a canary secret in the password file, the token file
/// and the AWS secret key never shows in logs (trace level), `/api/targets`,
/// `/metrics` or `check-config`; a world-readable secret file is warned about.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_secret_never_leaves_its_file() {
    use std::os::unix::fs::PermissionsExt;
    const CANARY: &str = "CANARY-7f3c9e1a-never-print-me";
    set_test_env();
    let moto = Moto::start();
    Seeder::new(&moto.url).await.seed_topology().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, format!("{CANARY}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    // Every listener answers (the hanging exporter would do): a request with credentials is sent.
    let exporter = answering_exporter("a 1\n");
    let yaml = format!(
        "aws:\n  endpoint_url: {}\nscrape:\n  interval: 1s\n  timeout: 1s\n  mode: via_alb\n  \
         basic_auth: {{username: monitor, password_file: {}}}\n\
         relabel_configs:\n  - {{target_label: __alb_address__, replacement: '{exporter}'}}\n\
         storage:\n  path: {}\n  flush_interval: 1s\nhttp:\n  listen_address: {http}\n",
        moto.url,
        secret.display(),
        dir.path().join("canary.db").display()
    );
    let config = write_config(dir.path(), &yaml);
    let env = [("RUST_LOG", "trace"), ("AWS_SECRET_ACCESS_KEY", CANARY)];
    let checked = check_config(&config, dir.path(), &env);
    assert!(!checked.contains(CANARY), "check-config printed the secret");
    assert!(
        checked.contains("is readable by every user") && checked.contains(&secret.display().to_string()),
        "a world-readable secret file is warned about:\n{checked}"
    );

    let mut child = command(&["run", "--config", config.to_str().unwrap()], dir.path(), &env)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_failures_above(&mut child, &http, 0.0, "canary").await;
    let mut served = String::new();
    for path in ["/api/targets", "/metrics", "/ready"] {
        served.push_str(&reqwest::get(format!("http://{http}{path}")).await.unwrap().text().await.unwrap());
    }
    sigterm(&child);
    let exit = wait_exit(&mut child, Duration::from_secs(30), "run");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(log.lines().count() > 100, "trace logging was on ({} lines)", log.lines().count());
    assert!(!log.contains(CANARY), "the log holds the secret");
    assert!(!served.contains(CANARY), "the HTTP endpoint serves the secret");
    use base64_free::encode;
    let basic = encode(&format!("monitor:{CANARY}"));
    assert!(!log.contains(&basic), "the log holds the Authorization header");

    // The bearer token file: the other path that reads a secret.
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{CANARY}\n")).unwrap();
    let bearer_yaml = yaml.replace(
        &format!("basic_auth: {{username: monitor, password_file: {}}}", secret.display()),
        &format!("bearer_token_file: {}", token.display()),
    );
    assert_ne!(bearer_yaml, yaml);
    let bearer = write_config(dir.path(), &bearer_yaml);
    for args in [vec!["check-config"], vec!["run", "--once"]] {
        let mut all = args.clone();
        all.extend(["--config", bearer.to_str().unwrap()]);
        let output = command(&all, dir.path(), &env).stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(text.lines().count() > 5 || args[0] == "check-config", "{args:?} logged at trace:\n{text}");
        assert!(!text.contains(CANARY), "{args:?} printed the bearer token");
    }
}

/// Issue #12: remote_write's secrets (a password file, inline credentials, a
/// tenant header, a SigV4 secret key) reach the receiver and nothing else:
/// not the trace log, `/metrics`, `check-config` or the retry messages of a
/// receiver that keeps failing.
#[tokio::test(flavor = "multi_thread")]
async fn remote_write_secrets_reach_the_receiver_and_nothing_else() {
    use std::sync::{Arc, Mutex};
    const CANARY: &str = "CANARY-rw-5d1e-never-print-me";
    set_test_env();
    let moto = Moto::start();
    Seeder::new(&moto.url).await.seed_topology().await;
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("rw-password");
    std::fs::write(&password, format!("{CANARY}-file\n")).unwrap();
    // A receiver that always fails (5xx: retried, logged) and keeps what it was sent.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let kept = Arc::clone(&kept);
        async move {
            let headers: Vec<String> =
                request.headers().iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or(""))).collect();
            kept.lock().unwrap().push(headers.join("\n"));
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "try later")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let exporter_address = answering_exporter("node_dmi_info{board_asset_tag=\"x\"} 1\na 1\n");
    let http = format!("127.0.0.1:{}", free_port());
    let yaml = format!(
        "aws:\n  endpoint_url: {}\nscrape:\n  interval: 1s\n  timeout: 1s\n  mode: via_alb\n  \
         identity: [single_member_fallback]\n\
         relabel_configs:\n  - {{target_label: __alb_address__, replacement: '{exporter_address}'}}\n\
         storage:\n  path: null\nhttp:\n  listen_address: {http}\n\
         remote_write:\n\
         \x20 - url: {receiver}/basic\n    basic_auth: {{username: monitor, password_file: {}}}\n    headers: {{X-Scope-OrgID: {CANARY}-header}}\n\
         \x20   queue_config: {{batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 200ms}}\n\
         \x20 - url: {receiver}/token\n    authorization: {{credentials: {CANARY}-inline}}\n\
         \x20   queue_config: {{batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 200ms}}\n\
         \x20 - url: {receiver}/sigv4\n    sigv4: {{region: ap-northeast-2, access_key: AKIDTEST, secret_key: {CANARY}-sigv4}}\n\
         \x20   queue_config: {{batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 200ms}}\n",
        moto.url,
        password.display(),
    );
    let config = write_config(dir.path(), &yaml);
    let env = [("RUST_LOG", "trace")];
    let checked = check_config(&config, dir.path(), &env);
    assert!(checked.contains("<secret>"), "inline secrets show as <secret>:\n{checked}");
    assert!(!checked.contains(CANARY), "check-config printed a remote_write secret:\n{checked}");

    let mut child = command(&["run", "--config", config.to_str().unwrap()], dir.path(), &env)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read as it comes: a full pipe would make fleetscrape drop log lines.
    let mut stderr = child.stderr.take().unwrap();
    let reading = std::thread::spawn(move || {
        let mut log = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
        log
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < 9 {
        assert!(child.try_wait().unwrap().is_none(), "fleetscrape run exited early");
        assert!(Instant::now() < deadline, "the receivers were never called");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut served = String::new();
    for path in ["/api/targets", "/metrics", "/ready", "/api/sd"] {
        served.push_str(&reqwest::get(format!("http://{http}{path}")).await.unwrap().text().await.unwrap());
    }
    assert!(served.contains("fleetscrape_remote_write_samples_retried_total"), "{served}");
    sigterm(&child);
    let exit = wait_exit(&mut child, Duration::from_secs(30), "run");
    let log = reading.join().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert_eq!(log.matches("remote_write: sending failed").count(), 3, "logged once per receiver");
    assert!(!log.contains(CANARY), "the log holds a remote_write secret");
    assert!(!served.contains(CANARY), "the HTTP endpoint serves a remote_write secret");
    let basic = base64_free::encode(&format!("monitor:{CANARY}-file"));
    assert!(!log.contains(&basic), "the log holds the basic Authorization header");
    // The receivers did get them.
    let requests = seen.lock().unwrap().join("\n---\n");
    assert!(requests.contains(&format!("authorization: Basic {basic}")), "{requests}");
    assert!(requests.contains(&format!("x-scope-orgid: {CANARY}-header")), "{requests}");
    assert!(requests.contains(&format!("authorization: Bearer {CANARY}-inline")), "{requests}");
    assert!(requests.contains("authorization: AWS4-HMAC-SHA256 Credential=AKIDTEST/"), "{requests}");
    assert!(requests.contains("/ap-northeast-2/aps/aws4_request"), "SigV4 for the aps service: {requests}");
    assert!(
        requests.contains("content-encoding: snappy") && requests.contains("x-prometheus-remote-write-version: 0.1.0")
    );
}

/// Base64 without a dependency, to look for an encoded `Authorization` header.
mod base64_free {
    pub fn encode(text: &str) -> String {
        const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = (u32::from(chunk[0]) << 16)
                | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                | u32::from(*chunk.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
