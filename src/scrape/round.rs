//! One direct scrape of an instance, and one via-ALB round of a listener.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::client::Fetched;
use super::identity::{self, Unattributed};
use super::{Scraper, Slots, convert, now_seconds, primary_listener};
use crate::config::ScrapeMode;
use crate::discovery::{Target, Topology};
use crate::exposition::{self, ErrorKind, Payload};
use crate::store::{AlbRoundRecord, Batch, StatusRecord};

/// Intervals `auto` mode goes through the listener after a failed direct connect.
const FALLBACK_INTERVALS: u32 = 10;

fn label<'a>(target: &'a Target, name: &str) -> Option<&'a str> {
    target.labels.as_ref()?.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

fn url(target: &Target, address: &str) -> String {
    let scheme = label(target, "__scheme__").unwrap_or("http");
    let path = label(target, "__metrics_path__").unwrap_or("/metrics");
    format!("{scheme}://{address}{path}")
}

fn parse_reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::SampleLimit(_)
        | ErrorKind::LabelLimit { .. }
        | ErrorKind::LabelNameLength { .. }
        | ErrorKind::LabelValueLength { .. } => "limit_exceeded",
        _ => "parse_error",
    }
}

/// When, through what, and how fast a payload was fetched.
struct Fetch<'a> {
    time: f64,
    slots: Slots,
    path: &'a str,
    duration: Duration,
}

/// A failure charged to one instance.
struct Failure {
    reason: &'static str,
    error: String,
}

/// The running totals of one via-ALB round.
#[derive(Default)]
struct RoundTally {
    requests: u32,
    errors: u32,
    unattributed: u32,
    reached: BTreeSet<String>,
    last_error: Option<String>,
    asked_refresh: bool,
}

impl RoundTally {
    /// Counts a failed request. Through a single-member listener the failure
    /// is that member's: it is handed back to be charged, and the round ends.
    fn failed(&mut self, failure: Failure, single: bool) -> Option<Failure> {
        self.errors += 1;
        self.last_error = Some(failure.error.clone());
        single.then_some(failure)
    }
}

impl Scraper {
    fn status(
        &self,
        batch: &mut Batch,
        target: &Target,
        time: f64,
        path: &str,
        outcome: Result<(Duration, u32), Failure>,
    ) {
        let (up, reason, error, duration, samples) = match outcome {
            Ok((duration, samples)) => (true, None, None, duration, samples),
            Err(f) => (false, Some(f.reason.to_string()), Some(f.error), Duration::ZERO, 0),
        };
        self.state.set_status(&target.instance.id, |s| {
            s.role = target.role.as_str().into();
            s.asg_name = target.asg_name().map(String::from);
            s.path = path.into();
            s.up = up;
            s.reason.clone_from(&reason);
            if up {
                s.last_scrape = Some(time);
            }
            if error.is_some() {
                s.last_error.clone_from(&error);
            }
        });
        self.state.count(|c| match &reason {
            None => {
                *c.scrapes_stored.entry(if path.starts_with("direct") { "direct" } else { "via_alb" }).or_default() += 1
            }
            Some(reason) => *c.scrape_failures.entry(reason.clone()).or_default() += 1,
        });
        batch.statuses.push(StatusRecord {
            time,
            instance_id: target.instance.id.clone(),
            up,
            reason,
            error,
            duration_seconds: duration.as_secs_f64(),
            samples,
            path: path.into(),
        });
    }

    /// Stores a payload for `target` unless its slot is already filled;
    /// returns whether it was stored.
    fn store(&self, batch: &mut Batch, payload: &Payload<'_>, target: &Target, fetch: &Fetch<'_>) -> bool {
        if !self.state.claim_slot(&target.instance.id, self.slot(fetch.slots, &target.instance.id, fetch.time)) {
            return false;
        }
        let record = convert::to_record(payload, target, fetch.time, &self.settings.convert);
        let samples = u32::try_from(record.samples.len()).unwrap_or(u32::MAX);
        batch.scrapes.push(record);
        self.status(batch, target, fetch.time, fetch.path, Ok((fetch.duration, samples)));
        true
    }

    /// Scrapes one instance at its own address (`direct`, `auto` modes).
    pub(super) async fn scrape_instance(
        &self,
        topology: &Arc<Topology>,
        id: &str,
        slots: Slots,
        deadline: Instant,
        batch: &mut Batch,
    ) {
        let Some(target) = topology.target(id).filter(|t| t.is_scraped()) else { return };
        let time = now_seconds();
        if self.state.slot_filled(id, self.slot(slots, id, time)) {
            return;
        }
        let auto = self.settings.mode == ScrapeMode::Auto;
        let listener = primary_listener(target);
        if auto && self.state.use_fallback(id) {
            if let Some((dns, port)) = listener {
                self.alb_round(topology, (&dns, port), &[id.to_string()], slots, deadline, batch).await;
            }
            return;
        }
        let Some(address) = label(target, "__address__") else {
            let failure = Failure { reason: "no_address", error: "the target has no __address__".into() };
            self.status(batch, target, time, "direct", Err(failure));
            return;
        };
        let path = format!("direct {address}");
        match self.client.get(&url(target, address), self.settings.timeout, auto, None).await {
            Ok(fetched) => self.accept_direct(batch, target, time, slots, &path, &fetched),
            Err(e) if auto && e.is_connect() && listener.is_some() => {
                tracing::info!(instance = id, error = %e, "direct address unreachable; falling back to the listener");
                self.state.set_fallback(id, FALLBACK_INTERVALS);
                if let Some((dns, port)) = listener {
                    self.alb_round(topology, (&dns, port), &[id.to_string()], slots, deadline, batch).await;
                }
            }
            Err(e) => {
                self.status(batch, target, time, &path, Err(Failure { reason: e.reason(), error: e.to_string() }))
            }
        }
    }

    fn accept_direct(
        &self,
        batch: &mut Batch,
        target: &Target,
        time: f64,
        slots: Slots,
        path: &str,
        fetched: &Fetched,
    ) {
        let payload = match exposition::parse(&fetched.text, &self.settings.limits) {
            Ok(payload) => payload,
            Err(e) => {
                return self.status(
                    batch,
                    target,
                    time,
                    path,
                    Err(Failure { reason: parse_reason(&e.kind), error: e.to_string() }),
                );
            }
        };
        // The address is the instance's own, but an identity that names
        // another instance (a reused IP) still must not be stored as this one.
        if let Some(claim) = identity::claim(&payload, &self.settings.identity).filter(|c| !identity::names(c, target))
        {
            let group = target.paths.first().map_or(String::new(), |p| p.target_group.clone());
            self.state.count(|c| *c.unattributed.entry((group, "not_a_member")).or_default() += 1);
            let failure =
                Failure { reason: "unattributed", error: format!("the payload identifies as {}", claim.value) };
            return self.status(batch, target, time, path, Err(failure));
        }
        self.store(batch, &payload, target, &Fetch { time, slots, path, duration: fetched.duration });
    }

    /// One round through a listener: requests until every wanted instance has
    /// a payload in its slot, the budget is spent or the interval is over.
    pub(super) async fn alb_round(
        &self,
        topology: &Arc<Topology>,
        (dns, port): (&str, u16),
        wanted: &[String],
        slots: Slots,
        deadline: Instant,
        batch: &mut Batch,
    ) {
        let mut topology = Arc::clone(topology);
        let members = listener_members(&topology, dns, port);
        let Some(first) = members.first().map(|t| (*t).clone()) else { return };
        let connect_to = wanted.iter().filter_map(|id| topology.target(id)).find_map(|t| label(t, "__alb_address__"));
        let Some(address) = connect_to.or_else(|| label(&first, "__alb_address__")).map(String::from) else { return };
        let request_url = url(&first, &address);
        let (group, path) = describe(&members, dns, port);
        let healthy = members.iter().filter(|t| via(t, dns, port).is_some_and(|p| p.health == "healthy")).count();
        let member_count = members.len();
        drop(members);
        let budget = self.settings.budget(if healthy > 0 { healthy } else { member_count });
        let single = member_count == 1;
        let listener_key = format!("{dns}:{port}");
        let started = now_seconds();
        let mut tally = RoundTally::default();
        let mut charged = false;
        loop {
            let pending: Vec<&String> =
                wanted.iter().filter(|id| !self.state.slot_filled(id, self.slot(slots, id, now_seconds()))).collect();
            let remaining = deadline.saturating_duration_since(Instant::now());
            if pending.is_empty() || tally.requests >= budget || remaining.is_zero() {
                break;
            }
            let cookie = pending.iter().find_map(|id| self.state.cookie(&listener_key, id));
            tally.requests += 1;
            self.state.count(|c| c.alb_requests += 1);
            let time = now_seconds();
            let fetched = match self
                .client
                .get(&request_url, self.settings.timeout.min(remaining), false, cookie.as_deref())
                .await
            {
                Ok(fetched) => fetched,
                Err(e) => {
                    if let Some(failure) = tally.failed(Failure { reason: e.reason(), error: e.to_string() }, single) {
                        self.status(batch, &first, time, &path, Err(failure));
                        charged = true;
                        break;
                    }
                    continue;
                }
            };
            let payload = match exposition::parse(&fetched.text, &self.settings.limits) {
                Ok(payload) => payload,
                Err(e) => {
                    let failure = Failure { reason: parse_reason(&e.kind), error: e.to_string() };
                    if let Some(failure) = tally.failed(failure, single) {
                        self.status(batch, &first, time, &path, Err(failure));
                        charged = true;
                        break;
                    }
                    continue;
                }
            };
            let mut attributed =
                identity::attribute(&payload, &self.settings.identity, &listener_members(&topology, dns, port))
                    .map(|t| t.instance.id.clone());
            if let Err(Unattributed::NotAMember(_)) = &attributed
                && !is_known(&topology, &payload, &self.settings.identity)
                && !tally.asked_refresh
            {
                tally.asked_refresh = true;
                if let Some(refreshed) = self.await_refresh(deadline).await {
                    topology = refreshed;
                    let members = listener_members(&topology, dns, port);
                    attributed =
                        identity::attribute(&payload, &self.settings.identity, &members).map(|t| t.instance.id.clone());
                }
            }
            match attributed {
                Ok(id) => {
                    let Some(target) = topology.target(&id) else { continue };
                    if let Some(cookie) = fetched.sticky_cookie.clone() {
                        self.state.set_cookie(&listener_key, &id, cookie);
                    }
                    tally.reached.insert(id);
                    self.store(
                        batch,
                        &payload,
                        target,
                        &Fetch { time, slots, path: &path, duration: fetched.duration },
                    );
                }
                Err(reason) => {
                    tally.unattributed += 1;
                    self.state.count(|c| *c.unattributed.entry((group.clone(), reason.reason())).or_default() += 1);
                    tracing::debug!(target_group = %group, reason = reason.reason(), "payload not attributed");
                    if single {
                        let failure = Failure {
                            reason: "unattributed",
                            error: format!("payload not attributed: {}", reason.reason()),
                        };
                        self.status(batch, &first, time, &path, Err(failure));
                        charged = true;
                        break;
                    }
                }
            }
        }
        self.report_unreached(&topology, wanted, slots, &tally, charged, &path, batch);
        batch.rounds.push(AlbRoundRecord {
            time: started,
            target_group: group,
            members: u32::try_from(member_count).unwrap_or(u32::MAX),
            requests: tally.requests,
            reached: u32::try_from(tally.reached.len()).unwrap_or(u32::MAX),
            unattributed: tally.unattributed,
            errors: tally.errors,
        });
    }

    #[expect(clippy::too_many_arguments, reason = "the round's whole context, used once")]
    fn report_unreached(
        &self,
        topology: &Topology,
        wanted: &[String],
        slots: Slots,
        tally: &RoundTally,
        charged: bool,
        path: &str,
        batch: &mut Batch,
    ) {
        if charged {
            return;
        }
        let now = now_seconds();
        for id in wanted {
            if tally.reached.contains(id) || self.state.slot_filled(id, self.slot(slots, id, now)) {
                continue;
            }
            if let Some(target) = topology.target(id) {
                let error =
                    tally.last_error.clone().unwrap_or_else(|| format!("not reached in {} requests", tally.requests));
                self.status(batch, target, now, path, Err(Failure { reason: "not_reached_via_alb", error }));
            }
        }
    }

    /// Asks discovery for an early refresh and waits (within the round) for
    /// the next topology.
    async fn await_refresh(&self, deadline: Instant) -> Option<Arc<Topology>> {
        let early = self.early.as_ref()?;
        self.state.count(|c| c.early_refreshes += 1);
        let mut receiver = self.topology.clone();
        receiver.borrow_and_update();
        early.request();
        let wait = deadline.saturating_duration_since(Instant::now()).min(self.settings.timeout);
        tokio::time::timeout(wait, receiver.changed()).await.ok()?.ok()?;
        receiver.borrow().clone()
    }
}

/// The path of `target` through a listener.
fn via<'a>(target: &'a Target, dns: &str, port: u16) -> Option<&'a crate::discovery::topology::Path> {
    target.paths.iter().find(|p| p.load_balancer_dns_name == dns && p.listener_port == port && p.weight != Some(0))
}

/// The scraped (running, kept) targets behind a listener.
fn listener_members<'a>(topology: &'a Topology, dns: &str, port: u16) -> Vec<&'a Target> {
    topology.scraped_targets().filter(|t| via(t, dns, port).is_some()).collect()
}

/// The round's target group label (`a` or `a+b`) and its status path.
fn describe(members: &[&Target], dns: &str, port: u16) -> (String, String) {
    let paths: Vec<_> = members.iter().filter_map(|t| via(t, dns, port)).collect();
    let groups: BTreeSet<&str> = paths.iter().map(|p| p.target_group.as_str()).collect();
    let group = groups.into_iter().collect::<Vec<_>>().join("+");
    let lb = paths.first().map_or(dns, |p| p.load_balancer.as_str());
    (group.clone(), format!("via_alb {lb}:{port} {group}"))
}

/// Whether the payload's identity names any instance discovery knows.
fn is_known(topology: &Topology, payload: &Payload<'_>, sources: &[crate::config::IdentitySource]) -> bool {
    identity::claim(payload, sources).is_some_and(|claim| topology.targets.iter().any(|t| identity::names(&claim, t)))
}
