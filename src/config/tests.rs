use super::*;

fn parse(yaml: &str) -> Result<Config, Error> {
    Config::from_yaml(yaml, Path::new("/etc/fleetscrape/fleetscrape.yml"))
}

fn error(yaml: &str) -> String {
    match parse(yaml) {
        Ok(_) => panic!("config should be rejected:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(haystack.contains(needle), "expected {needle:?} in:\n{haystack}");
    }
    assert!(!haystack.contains('\n'), "error must be one line:\n{haystack}");
}

#[test]
fn defaults_fill_every_missing_key() {
    let config = parse("aws:\n  region: ap-northeast-2\n").unwrap();
    assert_eq!(config.aws.region.as_deref(), Some("ap-northeast-2"));
    assert_eq!(config.aws.endpoint_url, None);
    assert_eq!(config.aws.max_attempts, 3);
    assert_eq!(config.discovery.refresh_interval.to_string(), "1m");
    assert!(config.discovery.load_balancers.is_empty());
    assert_eq!(config.scrape.interval.to_string(), "15s");
    assert_eq!(config.scrape.timeout.to_string(), "10s");
    assert_eq!(config.scrape.mode, ScrapeMode::Auto);
    assert_eq!(config.scrape.metrics_path, "/metrics");
    assert_eq!(config.storage.path.as_deref(), Some(Path::new("/var/lib/fleetscrape/fleetscrape.db")));
    let retention = config.storage.retention;
    assert_eq!(
        [retention.raw, retention.minute, retention.five_minutes, retention.hour].map(|d| d.to_string()),
        ["2d", "1w1d", "4w2d", "1y"]
    );
}

#[test]
fn the_issue_example_parses() {
    let yaml = r#"
aws:
  region: ap-northeast-2
  endpoint_url: null
discovery:
  refresh_interval: 60s
  load_balancers: []
  listener_ports: []
  instance_tags: {}
scrape:
  interval: 15s
  timeout: 10s
  mode: auto
  metrics_path: /metrics
relabel_configs: []
storage:
  path: data/fleetscrape.db
  retention: 15d
"#;
    parse(yaml).unwrap();
}

#[test]
fn relative_storage_path_resolves_against_the_config_directory() {
    let config = Config::from_yaml("storage: {path: db/x.db}", Path::new("/srv/conf/f.yml")).unwrap();
    assert_eq!(config.storage.path.as_deref(), Some(Path::new("/srv/conf/db/x.db")));
    let config = Config::from_yaml("storage: {path: /var/lib/x.db}", Path::new("/srv/conf/f.yml")).unwrap();
    assert_eq!(config.storage.path.as_deref(), Some(Path::new("/var/lib/x.db")));
}

#[test]
fn unknown_keys_are_rejected_with_their_line() {
    assert_contains(&error("aws:\n  regoin: x\n"), &["line 2", "regoin"]);
    assert_contains(&error("discovery: {}\nscrap:\n  interval: 1s\n"), &["line 2", "scrap"]);
    assert_contains(&error("relabel_configs:\n  - action: keep\n    sources: [a]\n"), &["line 3", "sources"]);
}

#[test]
fn bad_values_name_the_value_and_line() {
    assert_contains(&error("scrape:\n  interval: 15\n"), &["line 2", "\"15\"", "Prometheus syntax"]);
    assert_contains(&error("scrape:\n  mode: fast\n"), &["line 2", "fast"]);
    assert_contains(&error("discovery:\n  listener_ports: [70000]\n"), &["line 2"]);
    assert_contains(&error("relabel_configs:\n  - action: keep\n    regex: '('\n"), &["line 2", "invalid regex"]);
}

#[test]
fn timeout_longer_than_interval_is_rejected() {
    let err = error("scrape:\n  interval: 15s\n  timeout: 20s\n");
    assert_contains(&err, &["line 3", "scrape.timeout", "20s must not exceed scrape.interval (15s)"]);
    // With the default interval the timeout still has its line.
    assert_contains(&error("scrape:\n  timeout: 1m\n"), &["line 2", "scrape.timeout"]);
}

#[test]
fn a_short_interval_alone_clamps_the_default_timeouts_as_prometheus_does() {
    // Prometheus: an unset scrape_timeout is the global 10s, or the interval if shorter.
    let config = parse("scrape:\n  interval: 5s\n").unwrap();
    assert_eq!(config.scrape.timeout.to_string(), "5s");
    let config = parse("scrape:\n  interval: 500ms\n").unwrap();
    assert_eq!(config.scrape.timeout.to_string(), "500ms");
    assert_eq!(config.scrape.direct_connect_timeout.to_string(), "500ms", "the connect timeout follows");
    // A timeout written in the file is never changed, only checked.
    assert_contains(&error("scrape:\n  interval: 5s\n  timeout: 10s\n"), &["line 3", "scrape.timeout"]);
    let config = parse("scrape:\n  interval: 5s\n  timeout: 2s\n").unwrap();
    assert_eq!(config.scrape.timeout.to_string(), "2s");
}

#[test]
fn type_errors_and_duplicates_name_the_key_in_plain_words() {
    let err = error("aws:\n  region: x\nscrape:\n  interval: 5s\n  sample_limit: -5\n");
    assert_contains(&err, &["line 5", "scrape.sample_limit", "a whole number"]);
    let err = error("scrape:\n  interval: 5s\n  interval: 10s\n");
    assert_contains(&err, &["line 3", "scrape.interval", "more than once"]);
    assert!(!err.contains("DuplicateKeyPolicy"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let err = error("scrape:\n  interval: 0s\n  metrics_path: metrics\naws:\n  endpoint_url: localhost:5000\n");
    assert_contains(&err, &["scrape.interval", "scrape.metrics_path", "aws.endpoint_url", "line 5"]);
}

#[test]
fn storage_path_that_is_a_directory_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("f.yml");
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let err = Config::from_yaml("storage:\n  path: data\n", &config_path).unwrap_err().to_string();
    assert_contains(&err, &["line 2", "storage.path", "is a directory"]);
}

#[test]
fn missing_directory_and_empty_config_files_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yml");
    assert_contains(&Config::load(&missing).unwrap_err().to_string(), &["not found", "FLEETSCRAPE_CONFIG"]);
    assert_contains(&Config::load(dir.path()).unwrap_err().to_string(), &["is a directory", "bind mount"]);
    let empty = dir.path().join("empty.yml");
    std::fs::write(&empty, "\n").unwrap();
    assert_contains(&Config::load(&empty).unwrap_err().to_string(), &["is empty"]);
}

#[test]
fn malformed_yaml_reports_a_line() {
    assert_contains(&error("aws:\n  region: [a\n"), &["line"]);
}

#[test]
fn effective_config_round_trips_through_yaml() {
    let config = parse("scrape: {interval: 90s, timeout: 30s, mode: via_alb}\nrelabel_configs:\n  - {source_labels: [a], target_label: b}\n").unwrap();
    let yaml = config.to_yaml().unwrap();
    assert!(yaml.contains("interval: 1m30s"), "{yaml}");
    assert!(yaml.contains("mode: via_alb"), "{yaml}");
    assert!(yaml.contains("replacement: $1"), "{yaml}");
    let again = parse(&yaml).unwrap();
    assert_eq!(again.to_yaml().unwrap(), yaml);
}

#[test]
fn empty_sections_and_lists_mean_defaults() {
    let config =
        parse("aws:\ndiscovery:\n  # refresh_interval: 1m\n  load_balancers:\nrelabel_configs:\nstorage:\n").unwrap();
    assert_eq!(config.discovery.refresh_interval.to_string(), "1m");
    assert!(config.discovery.load_balancers.is_empty() && config.relabel_configs.is_empty());
    // A leaf value still needs a value.
    assert_contains(&error("scrape:\n  interval:\n"), &["line 2", "a duration is required here"]);
}

#[test]
fn remote_write_takes_prometheus_shape_and_resolves_files() {
    let config = parse(
        "storage:\n  path: null\nexternal_labels: {cluster: prod, __replica__: a}\nsharding: {total: 3, index: 2}\n\
         scrape:\n  job_name: backends\n  stale_after_intervals: 5\n\
         remote_write:\n\
         \x20 - url: https://aps-workspaces.ap-northeast-2.amazonaws.com/workspaces/ws-1/api/v1/remote_write\n\
         \x20   sigv4: {region: ap-northeast-2, role_arn: 'arn:aws:iam::123456789012:role/writer'}\n\
         \x20   queue_config: {max_samples_per_send: 1000, max_shards: 200, capacity: 2500}\n\
         \x20 - url: http://mimir:9009/api/v1/push\n    name: mimir\n    headers: {X-Scope-OrgID: tenant-1}\n\
         \x20   basic_auth: {username: u, password_file: secrets/p}\n    tls_config: {ca_file: ca.pem}\n\
         \x20   write_relabel_configs: [{source_labels: [__name__], regex: 'go_.*', action: drop}]\n\
         \x20 - url: http://vm:8428/api/v1/write\n    authorization: {credentials: inline-token}\n",
    )
    .unwrap();
    assert_eq!(config.storage.path, None);
    assert_eq!(config.sharding, ShardingConfig { total: 3, index: 2 });
    assert_eq!(config.scrape.job_name, "backends");
    assert_eq!(config.scrape.stale_after_intervals, 5);
    assert_eq!(config.remote_write.len(), 3);
    let mimir = &config.remote_write[1];
    assert_eq!(mimir.remote_name(), "mimir");
    assert_eq!(
        mimir.basic_auth.as_ref().unwrap().password_file.as_deref(),
        Some(Path::new("/etc/fleetscrape/secrets/p"))
    );
    assert_eq!(mimir.tls_config.ca_file.as_deref(), Some(Path::new("/etc/fleetscrape/ca.pem")));
    assert_eq!(config.remote_write[0].queue_config.max_shards, 200);
    assert_eq!(config.remote_write[0].queue_config.batch_send_deadline.to_string(), "5s", "defaults fill the rest");
    let yaml = config.to_yaml().unwrap();
    assert!(!yaml.contains("inline-token") && !yaml.contains("tenant-1"), "secrets never printed:\n{yaml}");
    assert!(yaml.contains("<secret>"));
}

#[test]
fn remote_write_mistakes_are_named() {
    let err = error(
        "remote_write:\n  - url: ftp://x\n    basic_auth: {username: u}\n    bearer_token: t\n    headers: {Authorization: x}\n\
         \x20   queue_config: {min_shards: 4, max_shards: 2}\n",
    );
    assert_contains(
        &err,
        &[
            "remote_write[0].url: \"ftp://x\" is not an http:// or https:// URL",
            "set at most one of basic_auth, authorization, bearer_token(_file) and sigv4",
            "set exactly one of password and password_file",
            "Authorization is set by fleetscrape itself",
            "remote_write[0].queue_config.max_shards: 2 is below min_shards (4)",
        ],
    );
    assert_contains(&error("storage:\n  path: null\n"), &["samples would go nowhere"]);
    assert_contains(
        &error("sharding: {total: 2, index: 2}\n"),
        &["sharding.index: 2 must be below sharding.total (2)"],
    );
    assert_contains(
        &error("remote_write:\n  - url: http://a\n  - url: http://b\n    name: x\n  - url: http://c\n    name: x\n"),
        &["remote_write[2].name: \"x\" is used by another receiver"],
    );
    assert!(parse("storage:\n  path: null\nscrape:\n  enabled: false\n").is_ok(), "discovery only needs no output");
}

/// Issue #23 (measured 6): `listener_ports: [99999]` said `invalid u16`;
/// `[0]`, `interval: 10ms` and `1000y` were accepted.
#[test]
fn ports_and_intervals_out_of_range_are_named_as_such() {
    assert_contains(
        &error("discovery:\n  listener_ports: [9100, 99999]\n"),
        &["line 2", "discovery.listener_ports: 99999 is not a port (1-65535)"],
    );
    assert_contains(&error("discovery:\n  listener_ports: [0]\n"), &["0 is not a port (1-65535)"]);
    assert_eq!(parse("discovery:\n  listener_ports: [9100, 65535]\n").unwrap().discovery.listener_ports, [9100, 65535]);
    assert_contains(
        &error("scrape:\n  interval: 10ms\n  timeout: 5ms\n"),
        &["scrape.interval: 10ms is out of range: between 100ms and 1h"],
    );
    assert_contains(&error("scrape:\n  interval: 1000y\n"), &["scrape.interval: 1000y is out of range"]);
    assert_contains(&error("discovery:\n  refresh_interval: 1000y\n"), &["1000y is too long: at most 1d"]);
    assert_contains(&error("storage:\n  retention: 1000y\n"), &["storage.retention: 1000y is too long: at most 10y"]);
}

/// Issue #23: no "did you mean" for a typo, and parser jargon.
#[test]
fn a_misspelt_key_gets_a_suggestion_and_a_wrong_shape_plain_words() {
    assert_contains(&error("scrape:\n  intreval: 10s\n"), &["unknown field `intreval`: did you mean `interval`?"]);
    assert_contains(&error("scrape:\n  job_nmae: x\n"), &["did you mean `job_name`?"]);
    let far = error("scrape:\n  xyzzy: 1\n");
    assert!(!far.contains("did you mean"), "no suggestion for a word that is not a typo: {far}");
    assert_contains(&error("scrape: 5\n"), &["scrape: expected indented `key: value` lines here"]);
    assert_contains(&error("discovery:\n  listener_ports: 9100\n"), &["expected a list here"]);
}

/// Issue #23: `retention: 1d` with `retention_tiers.raw: 2d` kept 2 days
/// while the README says nothing older than `retention` is kept.
#[test]
fn a_tier_longer_than_retention_is_refused() {
    assert_contains(
        &error("storage:\n  retention: 1d\n  retention_tiers:\n    raw: 2d\n"),
        &["line 4", "storage.retention_tiers.raw: 2d is longer than storage.retention (1d)"],
    );
    let config = parse("storage:\n  retention: 15d\n  retention_tiers:\n    raw: 1d\n").unwrap();
    assert_eq!(config.storage.retention.raw.to_string(), "1d");
}

/// Issue #23: `check-config` printed `config/../data/demo.db`.
#[test]
fn relative_paths_are_printed_normalised() {
    let config =
        Config::from_yaml("storage:\n  path: ../data/demo.db\n", Path::new("/work/fleet/config/f.yml")).unwrap();
    assert_eq!(config.storage.path.as_deref(), Some(Path::new("/work/fleet/data/demo.db")));
}

/// Issue #23: `check-config` passed what `run` then rejected.
#[test]
fn file_problems_name_what_run_would_reject() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    let yaml = format!(
        "scrape:\n  tls_config:\n    ca_file: missing-ca.pem\n  bearer_token_file: missing-token\nstorage:\n  path: {}\n",
        file.join("fleet.db").display()
    );
    let config = Config::from_yaml(&yaml, &dir.path().join("f.yml")).unwrap();
    let problems: Vec<(String, bool)> = config.file_problems().iter().map(|p| (format!("{p}"), p.fatal)).collect();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].0.starts_with("scrape.tls_config.ca_file: cannot read") && problems[0].1, "{problems:#?}");
    assert!(problems[1].0.starts_with("scrape.bearer_token_file: cannot read") && !problems[1].1, "read per request");
    assert!(problems[2].0.contains("plain is a file, not a directory") && problems[2].1, "{problems:#?}");
}
