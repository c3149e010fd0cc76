//! How `discover` prints a topology: a table for people, JSON for programs.
//! Both have one entry per (instance, path): an instance behind two
//! listeners appears twice, with the same labels.

use serde::Serialize;

use crate::discovery::topology::Path;
use crate::discovery::{Refresh, Target, Topology};
use crate::labels::LabelSet;

/// One discovered path to an instance, as `discover --output json` prints it.
#[derive(Debug, Serialize)]
struct PathEntry<'a> {
    instance_id: &'a str,
    role: &'static str,
    asg_name: Option<&'a str>,
    load_balancer: &'a str,
    load_balancer_dns_name: &'a str,
    listener_port: u16,
    listener_protocol: &'a str,
    target_group: &'a str,
    target_group_arn: &'a str,
    target_group_weight: Option<i32>,
    target_port: u16,
    private_ip: Option<&'a str>,
    private_dns_name: Option<&'a str>,
    availability_zone: Option<&'a str>,
    instance_type: Option<&'a str>,
    state: &'a str,
    health: &'a str,
    health_reason: Option<&'a str>,
    scrape: bool,
    skip_reason: Option<String>,
    labels: Option<&'a LabelSet>,
    discovered_labels: &'a LabelSet,
}

fn entries(topology: &Topology) -> impl Iterator<Item = PathEntry<'_>> {
    topology.targets.iter().flat_map(|target| target.paths.iter().map(move |path| entry(target, path)))
}

fn entry<'a>(target: &'a Target, path: &'a Path) -> PathEntry<'a> {
    let instance = &target.instance;
    PathEntry {
        instance_id: instance.id.as_str(),
        role: target.role.as_str(),
        asg_name: target.asg_name(),
        load_balancer: &path.load_balancer,
        load_balancer_dns_name: &path.load_balancer_dns_name,
        listener_port: path.listener_port,
        listener_protocol: &path.listener_protocol,
        target_group: &path.target_group,
        target_group_arn: &path.target_group_arn,
        target_group_weight: path.weight,
        target_port: path.target_port,
        private_ip: instance.private_ip.as_deref(),
        private_dns_name: instance.private_dns_name.as_deref(),
        availability_zone: instance.availability_zone.as_deref(),
        instance_type: instance.instance_type.as_deref(),
        state: instance.state.as_str(),
        health: path.health.as_str(),
        health_reason: path.health_reason.as_deref(),
        scrape: target.is_scraped(),
        skip_reason: target.skip.as_ref().map(ToString::to_string),
        labels: target.labels.as_ref(),
        discovered_labels: &target.discovered_labels,
    }
}

/// The topology as a pretty-printed JSON array.
///
/// # Errors
/// Only if serialization fails, which these types do not cause.
pub(super) fn json(topology: &Topology) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&entries(topology).collect::<Vec<_>>())
}

const HEADER: [&str; 10] =
    ["INSTANCE", "ROLE", "ASG", "LB:PORT", "TARGET GROUP", "PRIVATE IP", "AZ", "STATE", "HEALTH", "SCRAPE"];

/// The topology as JSON lines: one compact object per instance and listener,
/// for pipes (`| head -1`, `| jq -c`).
///
/// # Errors
/// Only if serialization fails, which these types do not cause.
pub(super) fn json_lines(topology: &Topology) -> serde_json::Result<String> {
    let lines: Vec<String> = entries(topology).map(|e| serde_json::to_string(&e)).collect::<Result<_, _>>()?;
    Ok(lines.join("\n"))
}

/// The topology as an aligned table with a summary line, then what explains
/// missing targets, one line each.
pub(super) fn table(refresh: &Refresh) -> String {
    let topology = &refresh.topology;
    let rows: Vec<[String; 10]> = entries(topology).map(|e| row(&e)).collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(str::to_string);
    for cells in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = cells.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&summary(refresh));
    for finding in &refresh.findings {
        let kind = if finding.is_warning() { "warning" } else { "note" };
        out.push_str(&format!("\n{kind}: {finding}"));
    }
    out
}

fn row(e: &PathEntry<'_>) -> [String; 10] {
    let dash = |s: Option<&str>| s.unwrap_or("-").to_string();
    let scrape = match &e.skip_reason {
        None => "yes".to_string(),
        Some(reason) => format!("no ({reason})"),
    };
    let health = match e.health_reason {
        Some(reason) => format!("{} ({reason})", e.health),
        None => e.health.to_string(),
    };
    [
        e.instance_id.to_string(),
        e.role.to_string(),
        dash(e.asg_name),
        format!("{}:{}", e.load_balancer, e.listener_port),
        e.target_group.to_string(),
        dash(e.private_ip),
        dash(e.availability_zone),
        e.state.to_string(),
        health,
        scrape,
    ]
}

fn summary(refresh: &Refresh) -> String {
    let topology = &refresh.topology;
    let calls: u64 = refresh.api_calls.values().sum();
    let per_operation: Vec<String> = refresh.api_calls.iter().map(|(op, n)| format!("{op} {n}")).collect();
    format!(
        "{} instances ({} to scrape), Auto Scaling groups: {}; API calls: {} ({}) in {} ms",
        topology.targets.len(),
        topology.scraped_targets().count(),
        topology.auto_scaling_groups.len(),
        calls,
        per_operation.join(", "),
        refresh.elapsed.as_millis()
    )
}
