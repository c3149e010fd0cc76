//! Deployment files: the compose stack, the Dockerfile, and the CloudFormation
//! template (cfn-lint, and its role granting exactly infra/iam-policy.json).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_compose_stack_wires_fleetscrape_and_grafana_together() {
    let compose: Value = serde_saphyr::from_str(&repo("infra/docker-compose.yml")).unwrap();
    let (fleetscrape, grafana) = (&compose["services"]["fleetscrape"], &compose["services"]["grafana"]);
    let mounts = |service: &Value| -> Vec<String> {
        service["volumes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    };
    assert!(mounts(fleetscrape).contains(&"./fleetscrape.yml:/etc/fleetscrape/fleetscrape.yml:ro".to_string()));
    assert!(mounts(fleetscrape).contains(&"fleetscrape-data:/var/lib/fleetscrape".to_string()));
    assert!(
        mounts(grafana).contains(&"fleetscrape-data:/var/lib/fleetscrape".to_string()),
        "the database volume is shared"
    );
    assert_eq!(grafana["depends_on"]["fleetscrape"]["condition"], "service_healthy");
    let plugin = grafana["environment"]["GF_PLUGINS_PREINSTALL_SYNC"].as_str().unwrap();
    assert!(plugin.starts_with("frser-sqlite-datasource@4."), "pinned: {plugin}");
    assert_eq!(grafana["environment"]["GF_PLUGINS_PREINSTALL_AUTO_UPDATE"], "false");
    assert_eq!(grafana["ports"][0], "3000:3000");
    assert!(grafana["image"].as_str().unwrap().starts_with("grafana/grafana:1"), "a pinned Grafana version");
    for service in [fleetscrape, grafana] {
        assert_eq!(service["restart"], "unless-stopped");
    }
    assert_eq!(fleetscrape["user"], "10001:0", "Grafana's group, for the WAL's -shm");

    // The config the compose file mounts is valid and writes where the datasource reads.
    let config = fleetscrape::config::Config::from_yaml(
        &repo("infra/fleetscrape.yml"),
        Path::new("/etc/fleetscrape/fleetscrape.yml"),
    )
    .unwrap();
    let datasources: Value =
        serde_saphyr::from_str(&repo("infra/grafana/provisioning/datasources/fleetscrape.yml")).unwrap();
    assert_eq!(
        config.storage.path.as_ref().unwrap().to_str().unwrap(),
        datasources["datasources"][0]["jsonData"]["path"].as_str().unwrap()
    );
    assert_eq!(config.scrape.mode, fleetscrape::config::ScrapeMode::ViaAlb);

    let dockerfile = repo("infra/Dockerfile");
    for needed in [
        "USER 10001:0",
        "HEALTHCHECK",
        "/healthz",
        "ENV FLEETSCRAPE_CONFIG=/etc/fleetscrape/fleetscrape.yml",
        "ca-certificates",
        "--locked",
    ] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed}");
    }
}

#[test]
fn the_compose_file_is_valid_for_compose_itself() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/docker-compose.yml");
    let v2 =
        std::process::Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success());
    let mut command = if v2 {
        let mut c = std::process::Command::new("docker");
        c.arg("compose");
        c
    } else {
        std::process::Command::new("docker-compose")
    };
    let output = match command.arg("-f").arg(&file).args(["config", "-q"]).output() {
        Ok(output) => output,
        Err(_) => {
            eprintln!(
                "skipped: neither `docker compose` nor `docker-compose` is installed (.ci/run installs docker-compose)"
            );
            return;
        }
    };
    assert!(output.status.success(), "compose rejects the file:\n{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn the_cloudformation_template_passes_cfn_lint() {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/cloudformation/fleetscrape.yml");
    let output = match Command::new("cfn-lint").arg(&template).output() {
        Ok(output) => output,
        Err(_) => {
            eprintln!("skipped: cfn-lint is not installed (.ci/run installs it: pip install cfn-lint)");
            return;
        }
    };
    assert!(
        output.status.success(),
        "cfn-lint findings:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_stack_grants_exactly_the_iam_policy_and_keeps_the_network_closed() {
    let template = repo("infra/cloudformation/fleetscrape.yml");
    let described: BTreeSet<String> = template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter(|item| item.contains(":Describe"))
        .map(str::to_string)
        .collect();
    let policy: Value = serde_json::from_str(&repo("infra/iam-policy.json")).unwrap();
    let granted: BTreeSet<String> =
        policy["Statement"][0]["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    assert_eq!(described, granted, "the monitoring role must grant exactly infra/iam-policy.json");
    for needed in [
        "Scheme: internal",
        "HttpPutResponseHopLimit: 2",
        "PredefinedMetricType: ASGAverageCPUUtilization",
        "stickiness.type, Value: lb_cookie",
        "mode: via_alb",
        "--pid host --uts host",
        "ec2_instance_info{instance_id=",
    ] {
        assert!(template.contains(needed), "the template lacks {needed:?}");
    }
    for port in ["Port: 9100", "Port: 9101", "Port: 9102"] {
        assert!(template.contains(port), "listener {port}");
    }
    // No rule opens the instances or the listeners to the world.
    assert!(!template.contains("FromPort: 9100, ToPort: 9100, CidrIp: 0.0.0.0/0"));
    assert!(!template.contains("CidrIpv6"), "no IPv6 openings");
}

/// The image builds from this checkout's Cargo.lock where a container engine
/// runs, and the binary it packages passes `check-config` on the example config.
#[test]
fn the_image_builds_where_a_container_engine_runs() {
    let engine = Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success());
    if !engine {
        eprintln!("skipped: no container engine (docker info failed); the image is built where one runs");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let tag = "fleetscrape:test";
    let build =
        Command::new("docker").args(["build", "-f", "infra/Dockerfile", "-t", tag, "."]).current_dir(root).status();
    assert!(build.is_ok_and(|s| s.success()), "docker build failed");
    let check = Command::new("docker")
        .args(["run", "--rm", tag, "check-config", "--config", "/usr/share/fleetscrape/fleetscrape.example.yml"])
        .output()
        .expect("docker run");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let version = Command::new("docker").args(["run", "--rm", tag, "--version"]).output().expect("docker run");
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}
