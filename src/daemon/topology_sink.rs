//! The topology sink: each discovered topology becomes `instances`,
//! `asg_membership` and `events` rows (launched, joined, left, terminated:
//! what a scale-out or scale-in did), compared with the previous one.

use std::collections::HashMap;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::output::Output;
use crate::discovery::{self, Topology};
use crate::ids::InstanceId;
use crate::store::{Batch, EventKind, EventRecord, InstanceRecord, MembershipRecord};

/// What the sink remembers of an instance between refreshes.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    scraped: bool,
    terminated: bool,
    asg_name: Option<String>,
    group: String,
}

/// Turns topologies into `instances`, `asg_membership` and `events` rows.
#[derive(Debug, Default)]
pub struct TopologySink {
    previous: Option<HashMap<InstanceId, Seen>>,
}

impl TopologySink {
    pub(super) async fn run(
        mut self,
        mut topology: discovery::TopologyReceiver,
        writer: Output,
        shutdown: CancellationToken,
    ) {
        loop {
            let current = topology.borrow_and_update().clone();
            if let Some(current) = current
                && !writer.send(self.batch_for(&current, crate::clock::now_seconds())).await
            {
                warn!("store writer has stopped; topology not recorded");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = topology.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Rows for one topology; events compare it with the previous one. The
    /// first topology gives no events: it is the fleet as found.
    pub fn batch_for(&mut self, topology: &Topology, now: f64) -> Batch {
        let mut batch = Batch::default();
        let mut seen = HashMap::new();
        for target in &topology.targets {
            let kept = target.kept_labels();
            batch.instances.push(InstanceRecord {
                instance_id: target.instance.id.clone(),
                role: target.role.as_str().into(),
                asg_name: target.asg_name().map(String::from),
                availability_zone: target.instance.availability_zone.clone(),
                private_ip: target.instance.private_ip.clone(),
                state: target.instance.state.to_string(),
                labels: serde_json::to_string(&kept).unwrap_or_else(|_| "{}".into()),
                seen: now,
            });
            let group = target.paths.first().map_or(String::new(), |p| p.target_group.clone());
            seen.insert(
                target.instance.id.clone(),
                Seen {
                    scraped: target.is_scraped(),
                    terminated: target.instance.is_terminated(),
                    asg_name: target.asg_name().map(String::from),
                    group,
                },
            );
        }
        for group in &topology.auto_scaling_groups {
            let in_service = group.members.iter().filter(|m| m.is_in_service()).count();
            batch.memberships.push(MembershipRecord {
                time: now,
                asg_name: group.name.clone(),
                members: u32::try_from(in_service).unwrap_or(u32::MAX),
                desired_capacity: group.desired_capacity,
                min_size: group.min_size,
                max_size: group.max_size,
                target: group.target_tracking.as_ref().map(|t| (t.metric.clone(), t.target_value)),
            });
        }
        if let Some(previous) = &self.previous {
            batch.events = events(previous, &seen, now);
        }
        self.previous = Some(seen);
        batch
    }
}

fn events(previous: &HashMap<InstanceId, Seen>, current: &HashMap<InstanceId, Seen>, now: f64) -> Vec<EventRecord> {
    let event = |id: &InstanceId, seen: &Seen, kind| EventRecord {
        time: now,
        instance_id: id.clone(),
        asg_name: seen.asg_name.clone(),
        kind,
        detail: seen.group.clone(),
    };
    let mut events = Vec::new();
    for (id, now_seen) in current {
        match previous.get(id) {
            None => {
                events.push(event(id, now_seen, EventKind::Launched));
                if now_seen.scraped {
                    events.push(event(id, now_seen, EventKind::Joined));
                }
            }
            Some(before) => {
                if !before.scraped && now_seen.scraped {
                    events.push(event(id, now_seen, EventKind::Joined));
                }
                if before.scraped && !now_seen.scraped {
                    events.push(event(id, now_seen, EventKind::Left));
                }
                if !before.terminated && now_seen.terminated {
                    events.push(event(id, now_seen, EventKind::Terminated));
                }
            }
        }
    }
    for (id, before) in previous {
        if before.scraped && !current.contains_key(id) {
            events.push(event(id, before, EventKind::Left));
        }
    }
    events.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(scraped: bool, terminated: bool) -> Seen {
        Seen { scraped, terminated, asg_name: Some("web".into()), group: "web-tg".into() }
    }

    fn fleet(members: &[(&str, Seen)]) -> HashMap<InstanceId, Seen> {
        members.iter().map(|(id, s)| (InstanceId::from(*id), s.clone())).collect()
    }

    fn kinds(events: &[EventRecord]) -> Vec<(&str, EventKind)> {
        events.iter().map(|e| (e.instance_id.as_str(), e.kind)).collect()
    }

    #[test]
    fn a_scale_out_then_a_scale_in_read_as_launched_joined_left_terminated() {
        let one = fleet(&[("i-1", seen(true, false))]);
        let two = fleet(&[("i-1", seen(true, false)), ("i-2", seen(true, false))]);
        let scaled_in = fleet(&[("i-1", seen(true, false)), ("i-2", seen(false, true))]);
        assert_eq!(kinds(&events(&one, &two, 1.0)), [("i-2", EventKind::Launched), ("i-2", EventKind::Joined)]);
        assert_eq!(kinds(&events(&two, &scaled_in, 2.0)), [("i-2", EventKind::Left), ("i-2", EventKind::Terminated)]);
        assert_eq!(kinds(&events(&scaled_in, &one, 3.0)), [], "a terminated member that disappears left already");
        let event = &events(&one, &two, 1.0)[0];
        assert_eq!((event.time, event.asg_name.as_deref(), event.detail.as_str()), (1.0, Some("web"), "web-tg"));
    }

    #[test]
    fn an_instance_that_disappears_while_scraped_leaves_and_one_launched_unscraped_only_launches() {
        let before = fleet(&[("i-1", seen(true, false))]);
        let after = fleet(&[("i-3", seen(false, false))]);
        assert_eq!(kinds(&events(&before, &after, 1.0)), [("i-1", EventKind::Left), ("i-3", EventKind::Launched)]);
    }
}
