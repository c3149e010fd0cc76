//! `fleetscrape preflight`: whether a setup works end to end, checked in the
//! order a `run` needs it, one line per check (✓ or ✗), and for every ✗ the
//! fix. Config and files, credentials and the Describe permissions,
//! discovery, each scrape path (a direct request, or a round through each
//! listener with the identity each payload carried), the storage, and each
//! remote_write receiver. Every step is bounded by the timeout of what it
//! calls; lines are printed as they are decided.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, IdentitySource, ScrapeMode};
use crate::discovery::access::{self, Access};
use crate::discovery::{Discoverer, Target, Topology};
use crate::exposition;
use crate::scrape::HttpClient;
use crate::scrape::client::{Fetch, FetchRequest, Node};
use crate::scrape::identity;

/// Which part of the setup a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// The file and the files it names.
    Config,
    /// Credentials and the Describe permissions.
    Aws,
    /// Load balancers, listeners, target groups, Auto Scaling groups.
    Discovery,
    /// One request (or round) per scrape path.
    Scrape,
    /// The database and its directory.
    Storage,
    /// Each receiver.
    RemoteWrite,
}

impl Section {
    fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Aws => "aws",
            Self::Discovery => "discovery",
            Self::Scrape => "scrape",
            Self::Storage => "storage",
            Self::RemoteWrite => "remote_write",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// What it is about.
    pub section: Section,
    /// Whether it holds.
    pub ok: bool,
    /// What was found.
    pub what: String,
    /// For a ✗: what to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(section: Section, what: impl Into<String>) -> Self {
        Self { section, ok: true, what: what.into(), fix: None }
    }

    fn failed(section: Section, what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { section, ok: false, what: what.into(), fix: Some(fix.into()) }
    }

    /// The line(s) people read: `✓ section: what`, and `  fix: …` under a ✗.
    pub fn text(&self) -> String {
        let mark = if self.ok { '✓' } else { '✗' };
        let mut line = format!("{mark} {}: {}", self.section.as_str(), self.what);
        if let Some(fix) = &self.fix {
            line.push_str(&format!("\n    fix: {fix}"));
        }
        line
    }
}

/// Runs every check against `config`, handing each to `report` as soon as it
/// is decided; returns how many failed.
pub async fn run(config: &Config, config_path: &std::path::Path, report: &mut dyn FnMut(&Check)) -> usize {
    let mut failed = 0;
    let mut emit = |check: Check| {
        failed += usize::from(!check.ok);
        report(&check);
    };
    emit(Check::ok(Section::Config, format!("{} parsed and valid", config_path.display())));
    for problem in config.file_problems().into_iter().filter(|p| p.key != "storage.path") {
        emit(Check::failed(
            Section::Config,
            problem.to_string(),
            "make the file exist and readable by the user fleetscrape runs as",
        ));
    }
    let topology = aws_and_discovery(config, &mut emit).await;
    let mut offered = Offered::default();
    if let Some(topology) = &topology {
        offered.targets = topology.scraped_targets().count();
        scrape_paths(config, topology, &mut offered, &mut emit).await;
    }
    storage(config, &offered, &mut emit).await;
    remote_write(config, &mut emit).await;
    failed
}

/// Credentials, permissions, then one discovery; the topology when it succeeded.
async fn aws_and_discovery(config: &Config, emit: &mut dyn FnMut(Check)) -> Option<Topology> {
    match access::credentials_source(&config.aws).await {
        Ok(source) => emit(Check::ok(Section::Aws, format!("credentials found: {source}"))),
        Err(error) => {
            emit(Check::failed(
                Section::Aws,
                format!("no credentials: {error}"),
                "on EC2, attach an instance role granting infra/iam-policy.json (in a container, IMDSv2's hop \
                 limit must be 2); elsewhere set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
            ));
            return None;
        }
    }
    let discoverer = match Discoverer::from_config(config).await {
        Ok(discoverer) => discoverer,
        Err(error) => {
            emit(Check::failed(Section::Aws, error.to_string(), "set aws.region (or AWS_REGION)"));
            return None;
        }
    };
    let mut denied = false;
    for (action, result) in access::probe(discoverer.clients()).await {
        match result {
            Access::Granted => emit(Check::ok(Section::Aws, format!("{action} allowed"))),
            Access::Denied(message) => {
                denied = true;
                emit(Check::failed(Section::Aws, format!("{action} denied ({message})"), policy_fix(action)));
            }
            Access::Failed(message) => {
                denied = true;
                emit(Check::failed(
                    Section::Aws,
                    format!("{action} failed: {message}"),
                    format!("check aws.endpoint_url and the network path to {}", discoverer.endpoint()),
                ));
            }
        }
    }
    if denied {
        return None;
    }
    let refresh = match discoverer.discover().await {
        Ok(refresh) => refresh,
        Err(error) => {
            emit(Check::failed(
                Section::Discovery,
                format!("discovery against {} failed: {error}", discoverer.endpoint()),
                "see the error; `fleetscrape discover` runs the same",
            ));
            return None;
        }
    };
    emit(Check::ok(Section::Discovery, format!("{} answered", discoverer.endpoint())));
    for line in listeners(&refresh.topology) {
        emit(line);
    }
    for group in &refresh.topology.auto_scaling_groups {
        emit(Check::ok(
            Section::Discovery,
            format!(
                "Auto Scaling group {}: desired {}, min {}, max {}, {} members",
                group.name,
                group.desired_capacity,
                group.min_size,
                group.max_size,
                group.members.len()
            ),
        ));
    }
    for finding in &refresh.findings {
        if finding.is_warning() {
            emit(Check::failed(Section::Discovery, finding.to_string(), finding_fix(finding)));
        } else {
            emit(Check::ok(Section::Discovery, finding.to_string()));
        }
    }
    let topology = refresh.topology;
    let scraped = topology.scraped_targets().count();
    let mut skipped: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for target in topology.targets.iter().filter(|t| !t.is_scraped()) {
        let reason = target.skip.as_ref().map_or_else(|| "not scraped".to_string(), ToString::to_string);
        skipped.entry(reason).or_default().push(target.instance.id.as_str());
    }
    let why: Vec<String> =
        skipped.iter().map(|(reason, ids)| format!("{} {reason} ({})", ids.len(), ids.join(", "))).collect();
    let summary = format!(
        "{scraped} instances to scrape{}",
        if why.is_empty() { String::new() } else { format!("; not scraped: {}", why.join("; ")) }
    );
    if scraped == 0 && config.scrape.enabled {
        emit(Check::failed(
            Section::Discovery,
            summary,
            "see the findings above; `fleetscrape discover` lists every instance with why it is skipped",
        ));
    } else {
        emit(Check::ok(Section::Discovery, summary));
    }
    Some(topology)
}

/// The fix for a denied action: the line of `infra/iam-policy.json` that grants it.
fn policy_fix(action: &str) -> String {
    const POLICY: &str = include_str!("../infra/iam-policy.json");
    let line = POLICY.lines().position(|l| l.contains(&format!("\"{action}\""))).map_or(0, |i| i + 1);
    format!(
        "grant it: add \"{action}\" to the role's policy (infra/iam-policy.json line {line}: the whole policy fleetscrape needs, read-only)"
    )
}

fn finding_fix(finding: &crate::discovery::Finding) -> &'static str {
    use crate::discovery::Finding as F;
    match finding {
        F::NoLoadBalancerInRegion => "set aws.region to the region of your load balancers",
        F::NoFollowedLoadBalancer { .. } => {
            "fix discovery.load_balancers: names or ARNs of this region's load balancers"
        }
        F::NoListenerOnPorts { .. } => {
            "fix discovery.listener_ports: the listener ports that forward to your exporters"
        }
        F::EmptyTargetGroup { .. } => {
            "register the instances in the target group, or attach the Auto Scaling group to it"
        }
        F::ScaledToZero { .. } => "",
    }
}

/// One line per listener and target group: members and their health.
fn listeners(topology: &Topology) -> Vec<Check> {
    let mut groups: BTreeMap<(String, u16, String), (usize, usize)> = BTreeMap::new();
    for target in &topology.targets {
        for path in &target.paths {
            let entry =
                groups.entry((path.load_balancer.clone(), path.listener_port, path.target_group.clone())).or_default();
            entry.0 += 1;
            entry.1 += usize::from(path.is_healthy());
        }
    }
    groups
        .into_iter()
        .map(|((lb, port, group), (members, healthy))| {
            let what = format!("{lb}:{port} → target group {group}: {members} registered, {healthy} healthy");
            if healthy == members {
                Check::ok(Section::Discovery, what)
            } else {
                Check::failed(
                    Section::Discovery,
                    what,
                    "the load balancer's health check fails for some members: check that the exporter listens on \
                     the registered port and that the security group lets the load balancer reach it",
                )
            }
        })
        .collect()
}

/// What the fleet offers, as far as the scrape checks saw it: for the free
/// space estimate.
#[derive(Debug, Default)]
struct Offered {
    /// Instances to scrape.
    targets: usize,
    /// Samples of each payload read.
    samples: Vec<usize>,
}

impl Offered {
    /// Samples per second offered: targets × the mean payload / the interval.
    fn per_second(&self, interval: Duration) -> Option<f64> {
        let mean = self.samples.iter().sum::<usize>() as f64 / self.samples.len().max(1) as f64;
        (!self.samples.is_empty()).then(|| self.targets as f64 * mean / interval.as_secs_f64())
    }
}

/// Requests per listener member in a preflight round: enough for a
/// round-robin or random balancer to reach every member.
const REQUESTS_PER_MEMBER: usize = 4;

/// Each scrape path: through each listener (via ALB), or at each instance's
/// own address (direct); `auto` tries direct first.
async fn scrape_paths(config: &Config, topology: &Topology, offered: &mut Offered, emit: &mut dyn FnMut(Check)) {
    if !config.scrape.enabled {
        emit(Check::ok(Section::Scrape, "scrape.enabled is false: nothing to scrape (discovery only)"));
        return;
    }
    let client = match HttpClient::new(&config.scrape) {
        Ok(client) => client,
        Err(error) => {
            emit(Check::failed(Section::Scrape, error.to_string(), "fix scrape.tls_config"));
            return;
        }
    };
    let sources = &config.scrape.identity;
    if config.scrape.mode == ScrapeMode::ViaAlb {
        // The rounds `run` makes: one per listener job of the scraper's plan.
        for key in crate::scrape::plan(topology, ScrapeMode::ViaAlb).into_keys() {
            if let crate::scrape::JobKey::Listener(dns, port) = key {
                emit(listener_round(config, &client, topology, (&dns, port), sources, offered).await);
            }
        }
    } else {
        use futures_util::StreamExt;
        let auto = config.scrape.mode == ScrapeMode::Auto;
        let results: Vec<(Check, Option<usize>, bool)> = futures_util::stream::iter(topology.scraped_targets())
            .map(|target| direct(config, &client, target, sources))
            .buffered(DIRECT_CONCURRENCY)
            .collect()
            .await;
        let mut fallbacks = std::collections::BTreeSet::new();
        for ((check, samples, unreachable), target) in results.into_iter().zip(topology.scraped_targets()) {
            offered.samples.extend(samples);
            match crate::scrape::primary_listener(target) {
                // `auto` goes through the listener when the own address does not answer.
                Some(listener) if auto && unreachable => {
                    emit(Check::ok(Section::Scrape, format!("{}; auto mode goes through its listener", check.what)));
                    fallbacks.insert(listener);
                }
                _ => emit(check),
            }
        }
        for (dns, port) in fallbacks {
            emit(listener_round(config, &client, topology, (&dns, port), sources, offered).await);
        }
    }
}

/// Direct requests in flight at once.
const DIRECT_CONCURRENCY: usize = 32;

async fn fetch(config: &Config, client: &HttpClient, url: &str, node: Node) -> Result<String, String> {
    let request =
        FetchRequest { url, timeout: config.scrape.timeout.as_std(), quick_connect: false, cookie: None, node };
    client.fetch(request).await.map(|f| f.text).map_err(|e| e.to_string())
}

/// One request at a target's own address: the check, the payload's
/// samples, and whether the address did not answer at all.
async fn direct(
    config: &Config,
    client: &HttpClient,
    target: &Target,
    sources: &[IdentitySource],
) -> (Check, Option<usize>, bool) {
    let id = target.instance.id.as_str();
    let Some(address) = target.label("__address__") else {
        let fix = "check relabel_configs: a rule emptied __address__";
        return (Check::failed(Section::Scrape, format!("{id}: no __address__"), fix), None, true);
    };
    let url = target.scrape_url(address);
    let text = match fetch(config, client, &url, Node::Any).await {
        Ok(text) => text,
        Err(error) => {
            let fix =
                "the monitoring host must reach the instance's exporter port (security groups), or use mode: via_alb";
            return (Check::failed(Section::Scrape, format!("{id} at {url}: {error}"), fix), None, true);
        }
    };
    let payload = match exposition::parse(&text, &config.scrape.limits()) {
        Ok(payload) => payload,
        Err(e) => {
            let fix = "the address answers, but not with Prometheus text: check the port and metrics_path";
            return (Check::failed(Section::Scrape, format!("{id} at {url}: {e}"), fix), None, false);
        }
    };
    let samples = payload.samples.len();
    let check = match identity::claim(&payload, sources) {
        Some(claim) if !identity::names(&claim, target) => {
            let why = identity::explain(&identity::Unattributed::NotAMember(claim), sources, &[target], false);
            Check::failed(Section::Scrape, format!("{id} at {url}: {}", why.finding()), why.hint.advice())
        }
        Some(claim) => Check::ok(
            Section::Scrape,
            format!("{id} at {url}: {samples} samples, identity {}=\"{}\"", claim.source, claim.value),
        ),
        None => Check::ok(
            Section::Scrape,
            format!("{id} at {url}: {samples} samples (its own address: no identity needed)"),
        ),
    };
    (check, Some(samples), false)
}

/// A round through one listener: [`REQUESTS_PER_MEMBER`] requests per member,
/// each payload attributed (or explained) as `run` would.
async fn listener_round(
    config: &Config,
    client: &HttpClient,
    topology: &Topology,
    (dns, port): (&str, u16),
    sources: &[IdentitySource],
    offered: &mut Offered,
) -> Check {
    let members = crate::scrape::listener_members(topology, dns, port);
    let name = members.first().and_then(|t| crate::scrape::via(t, dns, port)).map_or(dns, |p| &p.load_balancer);
    let listener = format!("{name}:{port}");
    let Some(address) = members.iter().find_map(|t| t.label("__alb_address__")) else {
        return Check::failed(Section::Scrape, format!("{listener}: no __alb_address__"), "check relabel_configs");
    };
    let url = members[0].scrape_url(address);
    let requests = (members.len() * REQUESTS_PER_MEMBER).clamp(1, 64);
    // Member reached → the identity its payload carried (source and value).
    let mut reached: BTreeMap<&str, String> = BTreeMap::new();
    let mut unattributed: Option<identity::Explanation> = None;
    let mut errors: Vec<String> = Vec::new();
    for i in 0..requests {
        match fetch(config, client, &url, Node::Index(i)).await {
            Err(error) => errors.push(error),
            Ok(text) => match exposition::parse(&text, &config.scrape.limits()) {
                Err(e) => errors.push(e.to_string()),
                Ok(payload) => match identity::attribute(&payload, sources, &members) {
                    Ok(member) => {
                        offered.samples.push(payload.samples.len());
                        let carried = identity::claim(&payload, sources).map_or_else(
                            || "no identity: the single-member fallback".to_string(),
                            |c| format!("{}=\"{}\"", c.source, c.value),
                        );
                        reached.insert(member.instance.id.as_str(), carried);
                    }
                    Err(reason) => {
                        let known = matches!(&reason, identity::Unattributed::NotAMember(claim)
                            if identity::names_any(claim, &topology.targets));
                        unattributed = Some(identity::explain(&reason, sources, &members, known));
                    }
                },
            },
        }
        // Every member reached; or nothing answers: more requests would only wait out more timeouts.
        if reached.len() == members.len() || (reached.is_empty() && unattributed.is_none() && errors.len() >= 3) {
            break;
        }
    }
    let by: Vec<String> = reached.iter().map(|(id, carried)| format!("{id} by {carried}")).collect();
    let what = format!(
        "{listener} ({url}): {} of {} members reached{}",
        reached.len(),
        members.len(),
        if by.is_empty() { String::new() } else { format!(": {}", by.join(", ")) }
    );
    if let Some(why) = unattributed {
        return Check::failed(Section::Scrape, format!("{what}; {}", why.finding()), why.hint.advice());
    }
    if let Some(error) = errors.first()
        && reached.is_empty()
    {
        return Check::failed(
            Section::Scrape,
            format!("{what}: {error}"),
            "the monitoring host must reach the load balancer on the listener port (security groups), and __alb_address__ must point at it",
        );
    }
    if reached.len() < members.len() {
        let missing: Vec<&str> =
            members.iter().map(|t| t.instance.id.as_str()).filter(|id| !reached.contains_key(id)).collect();
        return Check::failed(
            Section::Scrape,
            format!("{what}; not reached in {requests} requests: {}", missing.join(", ")),
            "check the missing members' target health and exporters; a sticky balancer keeps answering with one member (run rounds use its cookies)",
        );
    }
    Check::ok(Section::Scrape, what)
}

/// Free space wanted per sample per second kept for `retention_tiers.raw`:
/// the store's ~7 B a sample on disk over its tiers (BENCHMARKS.md, the
/// 15-day projection).
const BYTES_PER_SAMPLE: f64 = 7.0;

/// The database: writable (or creatable) by this user, readable by group 0
/// (Grafana), and room for the raw tier.
async fn storage(config: &Config, offered: &Offered, emit: &mut dyn FnMut(Check)) {
    let Some(path) = &config.storage.path else {
        emit(Check::ok(Section::Storage, "storage.path is null: no database (remote_write only)"));
        return;
    };
    if let Some(problem) = config.file_problems().into_iter().find(|p| p.key == "storage.path") {
        emit(Check::failed(
            Section::Storage,
            problem.message,
            "fleetscrape must create and write the database: fix the owner or mode of the file or its directory",
        ));
        return;
    }
    match crate::store::identify::identify(path).await {
        Ok(crate::store::identify::Contents::Foreign(tables)) => {
            emit(Check::failed(
                Section::Storage,
                format!("{} is another application's database (tables {})", path.display(), tables.join(", ")),
                "point storage.path at a new file",
            ));
            return;
        }
        Ok(contents) => emit(Check::ok(
            Section::Storage,
            format!(
                "{} can be written ({})",
                path.display(),
                match contents {
                    crate::store::identify::Contents::Missing => "it will be created",
                    _ => "an existing fleetscrape database",
                }
            ),
        )),
        Err(error) => {
            emit(Check::failed(
                Section::Storage,
                error.to_string(),
                "point storage.path at a SQLite file fleetscrape can open",
            ));
            return;
        }
    }
    emit(group_access(path));
    if let Some(dir) = path.parent() {
        emit(free_space(config, offered, dir));
    }
}

/// Grafana (another user in group 0) opens the database read-only but
/// creates `-shm` beside it: the directory needs group write.
fn group_access(path: &std::path::Path) -> Check {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = path.parent().map(|d| if d.as_os_str().is_empty() { std::path::Path::new(".") } else { d }) else {
        return Check::ok(Section::Storage, "no directory to check");
    };
    let existing = crate::config::files::nearest_existing(dir);
    let Ok(meta) = std::fs::metadata(existing) else {
        return Check::ok(Section::Storage, "directory not readable to check");
    };
    let mode = meta.mode() & 0o7777;
    if existing != dir {
        return Check::ok(Section::Storage, format!("{} will be created, group-writable for Grafana", dir.display()));
    }
    let unreadable: Vec<String> = ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| std::path::PathBuf::from(format!("{}{suffix}", path.display())))
        .filter(|file| std::fs::metadata(file).is_ok_and(|m| m.mode() & 0o040 == 0))
        .map(|file| file.display().to_string())
        .collect();
    if !unreadable.is_empty() {
        return Check::failed(
            Section::Storage,
            format!("{} not readable by the group: Grafana cannot read the database", unreadable.join(", ")),
            format!("chmod g+rw {}", unreadable.join(" ")),
        );
    }
    if mode & 0o070 == 0o070 {
        Check::ok(
            Section::Storage,
            format!(
                "{} (mode {mode:04o}, group {}) readable and writable by its group, as Grafana needs",
                dir.display(),
                meta.gid()
            ),
        )
    } else {
        Check::failed(
            Section::Storage,
            format!(
                "{} (mode {mode:04o}, group {}) lacks group read, write or search: Grafana, another user of the group, cannot open the database (SQLite creates -shm beside it)",
                dir.display(),
                meta.gid()
            ),
            format!(
                "chmod g+rwx {} (and chgrp 0 it: the image runs Grafana and fleetscrape in group 0)",
                dir.display()
            ),
        )
    }
}

/// Free space against an estimate: the samples offered per second, kept for
/// the raw tier's retention at [`BYTES_PER_SAMPLE`].
fn free_space(config: &Config, offered: &Offered, dir: &std::path::Path) -> Check {
    let existing = crate::config::files::nearest_existing(dir);
    let Ok(stat) = rustix::fs::statvfs(existing) else {
        return Check::ok(Section::Storage, "free space not measurable");
    };
    let free_mib = stat.f_bavail.saturating_mul(stat.f_frsize) / (1 << 20);
    let raw = config.storage.retention.raw;
    let Some(rate) = offered.per_second(config.scrape.interval.as_std()) else {
        return Check::ok(
            Section::Storage,
            format!("{free_mib} MiB free in {} (no payload read: no estimate)", existing.display()),
        );
    };
    let needed_mib = (rate * raw.as_std().as_secs_f64() * BYTES_PER_SAMPLE / f64::from(1 << 20)).ceil() as u64;
    let what = format!(
        "{free_mib} MiB free in {}; about {needed_mib} MiB needed ({} targets × {:.0} samples every {}, {raw} at ~{BYTES_PER_SAMPLE} B a sample)",
        existing.display(),
        offered.targets,
        rate * config.scrape.interval.as_std().as_secs_f64() / offered.targets.max(1) as f64,
        config.scrape.interval,
    );
    if free_mib >= needed_mib {
        Check::ok(Section::Storage, what)
    } else {
        Check::failed(
            Section::Storage,
            what,
            "free space, move storage.path to a larger disk, or shorten storage.retention_tiers.raw",
        )
    }
}

/// One empty write request to each receiver.
async fn remote_write(config: &Config, emit: &mut dyn FnMut(Check)) {
    use crate::remote_write::client::{Client, Outcome};
    for receiver in &config.remote_write {
        let name = receiver.remote_name();
        let client = match Client::new(receiver, config.aws.region.as_deref()).await {
            Ok(client) => client,
            Err(error) => {
                emit(Check::failed(Section::RemoteWrite, format!("{name}: {error}"), "fix this remote_write entry"));
                continue;
            }
        };
        let body = crate::remote_write::wire::RequestBuilder::default().finish();
        let limit = receiver.remote_timeout.as_std() + Duration::from_secs(1);
        let outcome = tokio::time::timeout(limit, client.send(body))
            .await
            .unwrap_or(Outcome::Retry { error: "no answer".into(), retry_after: None });
        match outcome {
            Outcome::Sent => {
                emit(Check::ok(Section::RemoteWrite, format!("{name} ({}) accepted an empty write", receiver.url)))
            }
            Outcome::Rejected { error } | Outcome::Retry { error, .. } => emit(Check::failed(
                Section::RemoteWrite,
                format!("{name} ({}): {error}", receiver.url),
                if error.contains("401") || error.contains("403") {
                    "the receiver refuses the credentials: check basic_auth, authorization or bearer_token (and their files)"
                } else {
                    "check the receiver's URL (a Prometheus needs --web.enable-remote-write-receiver) and that it is up"
                },
            )),
        }
    }
}
