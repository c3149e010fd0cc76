//! `fleetscrape preflight` (issue #24) on moto, the ALB emulator and real
//! node_exporters on loopback: the seed's setup passes every check; each
//! broken setup, one at a time, gives its ✗ with the fix and exit 1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::e2e::{SeedFleet, listener_rules};
use common::{free_port, write_config};
use fleetscrape::emulator::Balancing;

/// What one preflight run printed and how it ended.
struct Report {
    code: Option<i32>,
    /// The JSON lines, parsed.
    checks: Vec<serde_json::Value>,
    stderr: String,
}

impl Report {
    fn failed(&self) -> Vec<&serde_json::Value> {
        self.checks.iter().filter(|c| c["ok"] == false).collect()
    }

    /// The one ✗ whose `what` contains `needle`.
    fn failure(&self, needle: &str) -> &serde_json::Value {
        let failed = self.failed();
        let matching: Vec<_> =
            failed.iter().filter(|c| c["what"].as_str().unwrap_or_default().contains(needle)).collect();
        assert_eq!(matching.len(), 1, "one ✗ with {needle:?} among {failed:#?}");
        // The line as people read it, for the record (`--nocapture`).
        println!(
            "✗ {}: {}\n    fix: {}",
            matching[0]["section"].as_str().unwrap_or_default(),
            matching[0]["what"].as_str().unwrap_or_default(),
            matching[0]["fix"].as_str().unwrap_or_default()
        );
        matching[0]
    }
}

fn preflight(config: &Path, env: &[(&str, &str)]) -> Report {
    let home = config.parent().unwrap();
    let output = common::clean_command(
        env!("CARGO_BIN_EXE_fleetscrape"),
        &["preflight", "--output", "json", "--config", config.to_str().unwrap()],
        home,
    )
    .envs(env.iter().copied())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .output()
    .expect("run preflight");
    let checks = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    Report { code: output.status.code(), checks, stderr: String::from_utf8_lossy(&output.stderr).into_owned() }
}

/// The seed's config, via ALB through the emulator; `extra` goes under `scrape:`,
/// `tail` at the end.
fn config(dir: &Path, moto: &str, fleet: &SeedFleet, scrape: &str, tail: &str) -> PathBuf {
    let yaml = format!(
        "aws:\n  endpoint_url: {moto}\n  max_attempts: 1\nscrape:\n  interval: 2s\n  timeout: 1s\n  mode: via_alb\n{scrape}\
         relabel_configs:\n{}storage:\n  path: {}\nhttp:\n  listen_address: 127.0.0.1:{}\n{tail}",
        listener_rules(&fleet.emulator),
        dir.join("db/fleet.db").display(),
        free_port()
    );
    write_config(dir, &yaml)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_setup_passes_and_each_broken_one_says_what_to_fix() {
    let fleet = SeedFleet::start(Balancing::RoundRobin).await;
    let dir = tempfile::tempdir().unwrap();
    let moto = fleet.moto.url.clone();

    // Good: every check holds, exit 0, text output for people.
    let good = config(dir.path(), &moto, &fleet, "", "");
    let report = preflight(&good, &[]);
    assert_eq!(report.code, Some(0), "{:#?}\n{}", report.failed(), report.stderr);
    let whats: Vec<&str> = report.checks.iter().map(|c| c["what"].as_str().unwrap()).collect();
    for expected in [
        "credentials found: environment variables (AWS_ACCESS_KEY_ID)",
        "elasticloadbalancing:DescribeTargetHealth allowed",
        "ec2:DescribeInstances allowed",
        "backend:9102 → target group web-asg: 1 registered",
        "Auto Scaling group web: desired 1, min 1, max 4, 1 members",
        "3 instances to scrape",
        "backend:9100 (http://",
        "can be written (it will be created)",
    ] {
        assert!(whats.iter().any(|w| w.contains(expected)), "no check says {expected:?}: {whats:#?}");
    }
    assert!(whats.iter().filter(|w| w.contains("1 of 1 members reached")).count() == 3, "{whats:#?}");
    // Each member, with the identity its payload carried (source and value).
    let member = &fleet.seed.basic_a;
    let named = format!("{member} by node_dmi_info{{board_asset_tag}}=\"{member}\"");
    assert!(whats.iter().any(|w| w.contains("backend:9100") && w.contains(&named)), "{whats:#?}");
    let text = common::clean_command(
        env!("CARGO_BIN_EXE_fleetscrape"),
        &["preflight", "--config", good.to_str().unwrap()],
        dir.path(),
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.lines().all(|l| l.starts_with("✓ ")), "{text}");
    println!("preflight, the seed's setup:\n{text}");

    // A denied Describe call: named, with the policy line that grants it.
    let proxy = common::AwsProxy::start(&moto).await;
    proxy.deny("DescribeTargetHealth");
    let denied = config(dir.path(), &proxy.url, &fleet, "", "");
    let report = preflight(&denied, &[]);
    assert_eq!(report.code, Some(1), "{}", report.stderr);
    let failure = report.failure("elasticloadbalancing:DescribeTargetHealth denied");
    assert!(failure["fix"].as_str().unwrap().contains("infra/iam-policy.json line 14"), "{failure}");
    assert!(report.stderr.contains("preflight: 1 check(s) failed"), "{}", report.stderr);
    drop(proxy);

    // A listener port that matches nothing.
    let typo = config(dir.path(), &moto, &fleet, "", "discovery:\n  listener_ports: [9012]\n");
    let report = preflight(&typo, &[]);
    assert_eq!(report.code, Some(1));
    let failure = report.failure("no forwarding listener on discovery.listener_ports [9012]");
    assert!(failure["fix"].as_str().unwrap().contains("fix discovery.listener_ports"), "{failure}");
    report.failure("0 instances to scrape");

    // An unreadable TLS CA file.
    let ca = config(dir.path(), &moto, &fleet, "  tls_config:\n    ca_file: missing-ca.pem\n", "");
    let report = preflight(&ca, &[]);
    assert_eq!(report.code, Some(1));
    report.failure("scrape.tls_config.ca_file: cannot read");

    // A remote_write receiver that answers 401.
    let receiver = answering(401, "unauthorized");
    let tail = format!("remote_write:\n  - url: http://{receiver}/api/v1/write\n    name: central\n");
    let rw = config(dir.path(), &moto, &fleet, "", &tail);
    let report = preflight(&rw, &[]);
    assert_eq!(report.code, Some(1));
    let failure = report.failure("central (http://");
    assert!(failure["what"].as_str().unwrap().contains("401"), "{failure}");
    assert!(failure["fix"].as_str().unwrap().contains("refuses the credentials"), "{failure}");

    // A database directory without group write (Grafana, another user of group 0, cannot open it).
    let db_dir = dir.path().join("db");
    std::fs::create_dir_all(&db_dir).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&db_dir).unwrap().permissions(), 0o755);
    std::fs::set_permissions(&db_dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let report = preflight(&good, &[]);
    assert_eq!(report.code, Some(1));
    let failure = report.failure("lacks group read, write or search");
    assert!(failure["fix"].as_str().unwrap().contains("chmod g+rwx"), "{failure}");

    // The directory is right, but the database file is not readable by the group.
    std::fs::set_permissions(&db_dir, std::os::unix::fs::PermissionsExt::from_mode(0o775)).unwrap();
    let db = db_dir.join("fleet.db");
    std::fs::write(&db, "").unwrap();
    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let report = preflight(&good, &[]);
    assert_eq!(report.code, Some(1));
    let failure = report.failure("not readable by the group");
    assert!(failure["fix"].as_str().unwrap().starts_with("chmod g+rw"), "{failure}");
    std::fs::remove_file(&db).unwrap();

    // A stopped instance: named among those not scraped, with why.
    fleet.seeder.stop(std::slice::from_ref(&fleet.seed.basic_b)).await;
    let report = preflight(&good, &[]);
    let discovered = report
        .checks
        .iter()
        .map(|c| c["what"].as_str().unwrap())
        .find(|w| w.contains("instances to scrape"))
        .expect("the discovery summary")
        .to_string();
    assert!(
        discovered.starts_with("2 instances to scrape; not scraped: 1 ") && discovered.contains(&*fleet.seed.basic_b),
        "{discovered}"
    );
    println!("with Basic B stopped: {discovered}");
}

/// Members whose payloads carry no usable identity behind a multi-member
/// listener, and a target group with no targets.
#[tokio::test(flavor = "multi_thread")]
async fn unusable_identities_and_empty_target_groups_get_their_hints() {
    use common::fakehost::{FakeHost, Identity};
    let mut fleet = SeedFleet::start(Balancing::RoundRobin).await;
    let dir = tempfile::tempdir().unwrap();
    let moto = fleet.moto.url.clone();
    // The ASG scales out to two members; both answer with this machine's
    // nodename and no DMI id, as containerised exporters do.
    fleet.seeder.set_desired(&fleet.seed.asg_name, 2).await;
    let members = fleet.seeder.members(&fleet.seed.asg_name).await;
    let hosts: Vec<FakeHost> =
        members.iter().enumerate().map(|(i, id)| FakeHost::start(id, 0.5, 5000 + i as u32, Identity::None)).collect();
    fleet.emulator.set_members(9102, &hosts.iter().map(|h| h.address.clone()).collect::<Vec<_>>());
    let empty = fleet.seeder.target_group("nobody-home", 9100).await;
    fleet.seeder.listener(&fleet.seed.lb, 9200, &empty).await;
    let bare = answering(200, "# a payload with no identity at all\nup 1\n");
    fleet.hosts.clear();
    let config = config(dir.path(), &moto, &fleet, "", "");
    let report = preflight(&config, &[]);
    assert_eq!(report.code, Some(1), "{}", report.stderr);
    let failure = report.failure("backend:9102");
    let what = failure["what"].as_str().unwrap();
    assert!(what.contains("0 of 2 members reached") && what.contains("node_uname_info{nodename}"), "{failure}");
    let fix = failure["fix"].as_str().unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    if !hostname.trim().starts_with("ip-") {
        assert!(fix.contains("--uts=host"), "{failure}");
    }
    report.failure("target group nobody-home has no registered target");

    // A containerised exporter: `nodename` is its container's id.
    let container = answering(200, "node_uname_info{nodename=\"3f2a1b9c0d1e\",release=\"6.1.0\"} 1\n");
    fleet.emulator.set_members(9102, &[container.clone(), container]);
    let report = preflight(&config, &[]);
    let failure = report.failure("backend:9102");
    assert!(failure["what"].as_str().unwrap().contains("node_uname_info{nodename}=\"3f2a1b9c0d1e\""), "{failure}");
    assert!(failure["fix"].as_str().unwrap().contains("--uts=host"), "{failure}");

    // An exporter with no identity at all behind the same listener.
    fleet.emulator.set_members(9102, &[bare.clone(), bare]);
    let report = preflight(&config, &[]);
    let failure = report.failure("backend:9102");
    assert!(failure["what"].as_str().unwrap().contains("carries no identity"), "{failure}");
    assert!(failure["fix"].as_str().unwrap().contains("dmi collector"), "{failure}");
}

/// A loopback server answering every request with `status` and `body`; its address.
fn answering(status: u16, body: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 65536];
            let _ = std::io::Read::read(&mut stream, &mut request);
            let answer =
                format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            let _ = std::io::Write::write_all(&mut stream, answer.as_bytes());
        }
    });
    address
}

/// `direct` mode: one request per instance at its relabeled address, the
/// identity checked against it; `auto`: an address that does not answer is
/// reached through its listener, as `run` falls back.
#[tokio::test(flavor = "multi_thread")]
async fn direct_and_auto_paths_are_checked_as_run_takes_them() {
    let fleet = SeedFleet::start(Balancing::RoundRobin).await;
    let dir = tempfile::tempdir().unwrap();
    let own_addresses: String = fleet
        .hosts
        .iter()
        .map(|(id, host)| {
            format!(
                "  - {{source_labels: [__meta_ec2_instance_id], regex: '{id}', target_label: __address__, replacement: '{}'}}\n",
                host.address
            )
        })
        .collect();
    // Every emulated private a.b.c.d onto 127.b.c.d, port 1, where nothing listens.
    let closed = "  - {source_labels: [__meta_ec2_private_ip, __meta_elbv2_target_port], separator: ':', \
                  regex: '\\d+\\.(\\d+)\\.(\\d+)\\.(\\d+):(\\d+)', target_label: __address__, replacement: '127.$1.$2.$3:1'}\n";
    let yaml = |mode: &str, rules: &str| {
        format!(
            "aws:\n  endpoint_url: {}\nscrape:\n  interval: 2s\n  timeout: 1s\n  mode: {mode}\n\
             relabel_configs:\n{}{rules}storage:\n  path: {}\n",
            fleet.moto.url,
            listener_rules(&fleet.emulator),
            dir.path().join("db/fleet.db").display()
        )
    };
    let report = preflight(&write_config(dir.path(), &yaml("direct", &own_addresses)), &[]);
    assert_eq!(report.code, Some(0), "{:#?}", report.failed());
    let identified = report
        .checks
        .iter()
        .filter(|c| c["what"].as_str().unwrap().contains("samples, identity node_dmi_info{board_asset_tag}=\"i-"))
        .count();
    assert_eq!(identified, 3, "{:#?}", report.checks);

    let report = preflight(&write_config(dir.path(), &yaml("auto", closed)), &[]);
    assert_eq!(report.code, Some(0), "{:#?}", report.failed());
    let fell_back = report
        .checks
        .iter()
        .filter(|c| c["what"].as_str().unwrap().contains("auto mode goes through its listener"))
        .count();
    assert_eq!(fell_back, 3, "{:#?}", report.checks);
    let rounds =
        report.checks.iter().filter(|c| c["what"].as_str().unwrap().contains("1 of 1 members reached")).count();
    assert_eq!(rounds, 3, "{:#?}", report.checks);
}
