//! Deployment files: the compose stack, the Dockerfile, and the CloudFormation
//! template (cfn-lint; a stack created in moto's CloudFormation; its role
//! granting exactly infra/iam-policy.json; its user data agreeing with the
//! compose file and config it stands for). The image itself is built and run
//! in tests/deploy.rs. Under `CI=true` nothing here skips.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::podman::tool;
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

    // What Grafana and the plugin need, checked here because its image cannot be pulled on CI:
    // the database volume read-write (a WAL reader writes -shm), Grafana's own user (472, group 0),
    // the provisioning and dashboards that exist beside the compose file, the home dashboard.
    assert!(!mounts(grafana).iter().any(|m| m.starts_with("fleetscrape-data:") && m.ends_with(":ro")), "not :ro");
    assert!(grafana.get("user").is_none(), "Grafana runs as its image's 472:0, the group of the database");
    let infra = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra");
    for (source, target) in [
        ("./grafana/provisioning", "/etc/grafana/provisioning"),
        ("./grafana/dashboards", "/var/lib/grafana/dashboards"),
    ] {
        assert!(mounts(grafana).contains(&format!("{source}:{target}:ro")), "grafana mounts {source}");
        assert!(infra.join(source).is_dir(), "{source} exists beside the compose file");
    }
    for kind in ["datasources", "dashboards"] {
        assert!(infra.join("grafana/provisioning").join(kind).join("fleetscrape.yml").is_file(), "{kind} provisioning");
    }
    let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].as_str().unwrap();
    let home = home.strip_prefix("/var/lib/grafana/dashboards/").expect("the home dashboard is a provisioned one");
    assert!(infra.join("grafana/dashboards").join(home).is_file(), "home dashboard {home}");
    assert!(compose["volumes"]["grafana-data"].is_null() && compose["volumes"].get("grafana-data").is_some());

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
        "CMD [\"fleetscrape\", \"healthcheck\"]",
        "ENV FLEETSCRAPE_CONFIG=/etc/fleetscrape/fleetscrape.yml",
        "ca-certificates",
        "--locked",
    ] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed}");
    }
}

#[test]
fn the_compose_file_is_valid_for_compose_itself() {
    if !tool("docker-compose", "apt-get install -y docker-compose") {
        return;
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/docker-compose.yml");
    let output = Command::new("docker-compose").arg("-f").arg(&file).args(["config", "-q"]).output().unwrap();
    assert!(output.status.success(), "compose rejects the file:\n{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn the_cloudformation_template_passes_cfn_lint() {
    if !tool("cfn-lint", "pip install cfn-lint") {
        return;
    }
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/cloudformation/fleetscrape.yml");
    let output = Command::new("cfn-lint").arg(&template).output().unwrap();
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

/// What `tests/cfn/create_stack.py` reports of the stack it created in moto.
fn create_stack_in_moto() -> Value {
    common::set_test_env();
    let moto = common::Moto::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .arg(root.join("tests/cfn/create_stack.py"))
        .arg(&moto.url)
        .arg(root.join("infra/cloudformation/fleetscrape.yml"))
        .envs(common::TEST_ENV)
        .output()
        .expect("python3 runs tests/cfn/create_stack.py");
    assert!(output.status.success(), "create_stack.py failed:\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("create_stack.py prints JSON")
}

#[test]
fn the_cloudformation_stack_creates_in_motos_cloudformation() {
    if !tool("moto_server", "pip install 'moto[server]'") || !tool("cfn-lint", "pip install cfn-lint") {
        return;
    }
    let stack = create_stack_in_moto();
    assert_eq!(stack["status"], "CREATE_COMPLETE", "{}", stack["status_reason"]);

    // Every output resolves to a value of its kind.
    let outputs = stack["outputs"].as_object().unwrap();
    let declared: Vec<&str> =
        stack["template_outputs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(outputs.keys().map(String::as_str).collect::<Vec<_>>().len(), declared.len(), "{outputs:?}");
    let output = |key: &str| outputs.get(key).and_then(Value::as_str).unwrap_or_else(|| panic!("output {key}"));
    assert!(output("LoadBalancerDnsName").ends_with(".ap-northeast-2.elb.amazonaws.com"), "{outputs:?}");
    assert!(output("ImageRepositoryUri").contains(".dkr.ecr.ap-northeast-2.amazonaws.com/"), "{outputs:?}");
    assert!(output("MonitoringInstanceId").starts_with("i-"), "{outputs:?}");
    assert!(!output("AutoScalingGroupName").is_empty());

    // moto creates everything but two resource types, checked statically below.
    assert_eq!(
        stack["not_created_types"],
        serde_json::json!(["AWS::AutoScaling::ScalingPolicy", "AWS::EC2::SecurityGroupEgress"]),
        "moto's CloudFormation support changed: check the new list"
    );
    for (name, resource) in stack["resources"].as_object().unwrap() {
        assert_eq!(resource[1], "CREATE_COMPLETE", "{name}: {resource}");
    }

    // The instance role's inline policy is exactly infra/iam-policy.json.
    let policy: Value = serde_json::from_str(&repo("infra/iam-policy.json")).unwrap();
    let inline = stack["role_inline_policies"].as_object().unwrap();
    assert_eq!(inline.len(), 1, "one inline policy: {inline:?}");
    assert_eq!(inline.values().next().unwrap(), &policy, "the role's inline policy differs from infra/iam-policy.json");

    // The AMI parameter resolved through SSM; the topology the stack stands for.
    assert_eq!(stack["instance_images"], serde_json::json!([stack["ami_from_ssm"]]));
    assert_eq!(stack["load_balancers"].as_array().unwrap().len(), 1);
    assert_eq!(stack["load_balancers"][0]["scheme"], "internal");
    assert_eq!(stack["listener_ports"], serde_json::json!([9100, 9101, 9102]));
    assert_eq!(stack["asgs"][0]["min"], 1);
    assert_eq!(stack["asgs"][0]["max"], 4);
    assert_eq!(stack["asgs"][0]["target_groups"], 1);

    // The user data as CloudFormation rendered it: valid bash, every reference resolved.
    for (name, script) in stack["user_data"].as_object().unwrap() {
        let script = script.as_str().unwrap();
        assert!(script.starts_with("#!/bin/bash\n"), "{name}: {script}");
        for unresolved in ["${AWS::", "${Image}", "${Registry}", "${LoadBalancerName}"] {
            assert!(!script.contains(unresolved), "{name} still has {unresolved}:\n{script}");
        }
        let mut bash = Command::new("bash").arg("-n").stdin(std::process::Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        bash.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        assert!(bash.wait().unwrap().success(), "{name}'s user data is not valid bash:\n{script}");
    }
    let monitoring = stack["user_data"]["MonitoringInstance"].as_str().unwrap();
    let image = format!("{}:latest", output("ImageRepositoryUri"));
    assert!(monitoring.contains(&format!("docker pull {image}")), "pulls the stack's image:\n{monitoring}");
    assert!(monitoring.contains(&format!("image: {image}")), "runs the stack's image:\n{monitoring}");

    // Parameters: every default valid; every constrained one refuses a bad value.
    for (name, check) in stack["parameter_checks"].as_object().unwrap() {
        assert_eq!(check["default"], serde_json::json!([]), "{name}'s default breaks its own constraint");
        if name == "LatestAmiId" {
            continue; // an SSM parameter type: CloudFormation resolves and checks it
        }
        let refused = check["bad"].as_array().is_some_and(|b| !b.is_empty());
        assert!(refused, "{name} accepts {}: give it a constraint", check["bad_value"]);
    }

    // The two types moto skips, as CloudFormation would create them.
    let statics = &stack["not_created"];
    let policy = &statics["CpuTargetTracking"];
    assert_eq!(policy["Type"], "AWS::AutoScaling::ScalingPolicy");
    assert_eq!(policy["Properties"]["AutoScalingGroupName"], serde_json::json!({"Ref": "BackendGroup"}));
    assert_eq!(policy["Properties"]["PolicyType"], "TargetTrackingScaling");
    let tracking = &policy["Properties"]["TargetTrackingConfiguration"];
    assert_eq!(tracking["PredefinedMetricSpecification"]["PredefinedMetricType"], "ASGAverageCPUUtilization");
    assert_eq!(tracking["TargetValue"], serde_json::json!({"Ref": "CpuTarget"}));
    for (name, group, ports, destination) in [
        ("MonitoringToListeners", "MonitoringSecurityGroup", (9100, 9102), "AlbSecurityGroup"),
        ("AlbToBackends", "AlbSecurityGroup", (9100, 9100), "BackendSecurityGroup"),
    ] {
        let egress = &statics[name];
        assert_eq!(egress["Type"], "AWS::EC2::SecurityGroupEgress", "{name}");
        let p = &egress["Properties"];
        assert_eq!(p["GroupId"], serde_json::json!({"Ref": group}), "{name}");
        assert_eq!(p["IpProtocol"], "tcp", "{name}");
        assert_eq!((p["FromPort"].as_i64(), p["ToPort"].as_i64()), (Some(ports.0), Some(ports.1)), "{name}");
        assert_eq!(p["DestinationSecurityGroupId"], serde_json::json!({"Ref": destination}), "{name}");
    }
    assert_eq!(statics.as_object().unwrap().len(), 3, "only these are not created: {statics}");
}

/// The heredoc `cat > PATH <<'YAML' … YAML` in the monitoring instance's user data.
fn user_data_file(template: &str, path: &str) -> String {
    let opening = format!("cat > {path} <<'YAML'");
    let mut lines = template.lines().skip_while(|l| l.trim() != opening);
    let first = lines.next().unwrap_or_else(|| panic!("the user data writes no {path}"));
    let indent = first.len() - first.trim_start().len();
    lines.take_while(|l| l.trim() != "YAML").map(|l| l.get(indent..).unwrap_or("")).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_stacks_user_data_runs_the_shipped_compose_file_and_config() {
    let template = repo("infra/cloudformation/fleetscrape.yml");
    // The compose file: infra/docker-compose.yml with the pushed image for the
    // build, and the region for the instance role's credentials.
    let written: Value = serde_saphyr::from_str(&user_data_file(&template, "/opt/fleetscrape/docker-compose.yml"))
        .expect("the user data's compose file is YAML");
    let mut shipped: Value = serde_saphyr::from_str(&repo("infra/docker-compose.yml")).unwrap();
    let fleetscrape = shipped["services"]["fleetscrape"].as_object_mut().unwrap();
    assert!(fleetscrape.remove("build").is_some());
    fleetscrape.insert("image".into(), "${Image}".into());
    fleetscrape.insert("environment".into(), serde_json::json!({"AWS_REGION": "${AWS::Region}"}));
    assert_eq!(
        written, shipped,
        "the user data's compose file must be infra/docker-compose.yml but for the image and the region"
    );

    // The config: infra/fleetscrape.yml with the stack's load balancer.
    let config = |yaml: &str| {
        fleetscrape::config::Config::from_yaml(yaml, Path::new("/opt/fleetscrape/fleetscrape.yml"))
            .expect("valid config")
            .to_yaml()
            .unwrap()
    };
    let written =
        user_data_file(&template, "/opt/fleetscrape/fleetscrape.yml").replace("${LoadBalancerName}", "backend");
    assert_eq!(
        config(&written),
        config(&repo("infra/fleetscrape.yml")),
        "the user data's config differs from infra/fleetscrape.yml"
    );
}
