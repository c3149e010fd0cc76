//! The async shells: one direct scrape of an instance, and one via-ALB round
//! of a listener driven by [`RoundCore`]. They perform requests, parse and
//! attribute payloads, and record what the core decided.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::balancing::TARGET_COVERAGE;
use super::client::{FetchError, FetchRequest, Fetched, Node};
use super::convert::{self, SeriesCache};
use super::failure::{Failure, FailureReason};
use super::identity::{self, Explanation, Unattributed};
use super::round_core::{Aim, Answer, Reaction, RoundCore, RoundOutcome, RoundPlan, Step};
use super::state::IdentityChange;
use super::{JobKey, ListenerAddr, RoundTime, Scraper, primary_listener};
use crate::config::ScrapeMode;
use crate::discovery::{Target, Topology};
use crate::exposition::{self, KnownSeries, Payload};
use crate::record::{AlbRoundRecord, Batch, IdentityIssueRecord, InstanceId, Route, StatusRecord, TargetGroups};

/// Intervals `auto` mode goes through the listener after a failed direct connect.
const FALLBACK_INTERVALS: u32 = 10;

/// When a request was sent, and how long its answer took.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// Monotonic send time (numbers the interval).
    at: Instant,
    /// Epoch timestamp of the request: the stored scrape time.
    time: f64,
}

/// Where a payload would be stored: its job, the interval it serves, and the
/// route its status records. Constant over a round (or a direct scrape).
#[derive(Clone, Copy)]
struct Slot<'a> {
    key: &'a JobKey,
    time: RoundTime,
    route: &'a Route,
}

/// What a via-ALB answer's payload means, decided from the payload and the
/// topology alone ([`classify`]); `Scraper::answer` then does what it implies.
pub(super) enum Verdict<'t> {
    /// It names a member of the listener: store it as that member's.
    Member(&'t Target),
    /// It names no member; `unknown`: nor any instance discovery knows (yet).
    NotAttributed { reason: Unattributed, unknown: bool, why: Box<Explanation> },
}

/// What became of one answer's payload, beyond what the round core sees.
enum Attribution {
    /// No payload (a failed request or an unparsable body).
    NoPayload,
    /// Attributed to a member.
    Attributed,
    /// Dropped, for this reason (`fleetscrape_unattributed_payloads_total{reason}`).
    Dropped(&'static str, Box<Explanation>),
    /// Its identity names no instance discovery knows yet: the payload, for a
    /// retry after an early refresh.
    Unknown(&'static str, Box<Explanation>, Fetched),
}

/// A listener's view in one round.
struct Listener {
    /// Where it is; also the key of what the scraper remembers per listener.
    key: ListenerAddr,
    url: String,
    group: TargetGroups,
    route: Route,
    members: Vec<InstanceId>,
    healthy: Vec<InstanceId>,
}

impl Scraper {
    /// Records one instance's outcome for an interval: its status row,
    /// `/api/targets`, the counters, and a log line when its state changes.
    fn status(
        &self,
        batch: &mut Batch,
        target: &Target,
        sent: Sent,
        route: &Route,
        result: Result<(u32, Duration), (Failure, Duration)>,
    ) {
        let id = &target.instance.id;
        let (up, failure, duration, samples) = match result {
            Ok((samples, duration)) => (true, None, duration, samples),
            Err((failure, duration)) => (false, Some(failure), duration, 0),
        };
        let reason = failure.as_ref().map(|f| f.reason);
        let mut changed = false;
        self.state.set_status(id, |s| {
            changed = s.last_scrape.is_none() || s.up != up || s.reason != reason;
            s.role = Some(target.role);
            s.asg_name = target.asg_name().map(String::from);
            s.path = Some(route.clone());
            s.last_scrape = Some(sent.time);
            s.up = up;
            s.reason = reason;
            s.last_error = failure.as_ref().map(|f| f.error.clone());
            if up {
                s.last_success = Some(sent.time);
            }
        });
        match (&failure, changed) {
            (Some(failure), true) => {
                tracing::warn!(instance = %id, path = %route, reason = %failure.reason, error = %failure.error, "scrape failing")
            }
            (None, true) => tracing::info!(instance = %id, path = %route, "scrape ok"),
            _ => {}
        }
        self.state.count(|c| match reason {
            None => {
                *c.scrapes_stored.entry(route.kind()).or_default() += 1;
            }
            Some(reason) => *c.scrape_failures.entry(reason).or_default() += 1,
        });
        batch.statuses.push(StatusRecord {
            time: sent.time,
            instance_id: id.clone(),
            up,
            reason,
            error: failure.map(|f| f.error),
            duration_seconds: duration.as_secs_f64(),
            samples,
            path: route.clone(),
        });
    }

    /// Stores a payload for `target` unless its interval is already stored;
    /// returns whether it was stored.
    fn store(
        &self,
        batch: &mut Batch,
        payload: &Payload<'_>,
        target: &Target,
        (slot, sent): (Slot<'_>, Sent),
        duration: Duration,
        cache: &mut SeriesCache,
    ) -> bool {
        let index = self.interval_of(slot.key, slot.time, &target.instance.id, sent.at);
        if !self.state.claim_slot(&target.instance.id, index) {
            self.state.count(|c| c.duplicates_dropped += 1);
            return false;
        }
        let record = convert::to_record_cached(payload, target, sent.time, &self.settings.convert, cache);
        let samples = u32::try_from(record.len()).unwrap_or(u32::MAX);
        batch.scrapes.push(record);
        self.status(batch, target, sent, slot.route, Ok((samples, duration)));
        true
    }

    fn send_time(&self) -> Sent {
        Sent { at: Instant::now(), time: self.clock.timestamp() }
    }

    /// Scrapes one instance at its own address (`direct`, `auto` modes).
    pub(super) async fn scrape_instance(
        &self,
        topology: &Arc<Topology>,
        key: &JobKey,
        id: &InstanceId,
        time: RoundTime,
        batch: &mut Batch,
    ) {
        let Some(target) = topology.target(id).filter(|t| t.is_scraped()) else { return };
        if self.state.slot_filled(id, self.interval_of(key, time, id, Instant::now())) {
            return;
        }
        let auto = self.settings.mode == ScrapeMode::Auto;
        let listener = primary_listener(target);
        if auto && self.state.use_fallback(id) {
            if let Some((dns, port)) = listener {
                self.alb_round(topology, key, (&dns, port), std::slice::from_ref(id), time, batch).await;
            }
            return;
        }
        let sent = self.send_time();
        let Some(address) = target.label("__address__") else {
            let failure = Failure::new(FailureReason::NoAddress, "the target has no __address__");
            let route = Route::Direct { address: None };
            return self.status(batch, target, sent, &route, Err((failure, Duration::ZERO)));
        };
        let route = Route::Direct { address: Some(address.to_string()) };
        let request_url = target.scrape_url(address);
        let timeout = self.settings.timeout.min(time.tick.deadline.saturating_duration_since(sent.at));
        let request = FetchRequest { url: &request_url, timeout, quick_connect: auto, cookie: None, node: Node::Any };
        let result = tokio::select! {
            result = self.fetcher.fetch(request) => result,
            () = self.cut.cancelled() => Err(FetchError::Timeout(sent.at.elapsed())),
        };
        match result {
            Ok(fetched) => self.accept_direct(batch, target, Slot { key, time, route: &route }, sent, &fetched),
            Err(e) if auto && e.is_connect() && listener.is_some() => {
                tracing::info!(instance = id.as_str(), error = %e, "direct address unreachable; falling back to the listener");
                self.state.set_fallback(id, FALLBACK_INTERVALS);
                if let Some((dns, port)) = listener {
                    self.alb_round(topology, key, (&dns, port), std::slice::from_ref(id), time, batch).await;
                }
            }
            Err(e) => {
                let failure = Failure::new(e.reason(), e.to_string());
                self.status(batch, target, sent, &route, Err((failure, sent.at.elapsed())));
            }
        }
    }

    fn accept_direct(&self, batch: &mut Batch, target: &Target, slot: Slot<'_>, sent: Sent, fetched: &Fetched) {
        let mut cache = self.state.take_series(&target.instance.id);
        self.accept_direct_with(batch, target, (slot, sent), fetched, &mut cache);
        self.state.put_series(&target.instance.id, cache);
    }

    /// [`Self::accept_direct`], with the instance's series cache taken out:
    /// its known series speed up parsing, then convert the payload.
    fn accept_direct_with(
        &self,
        batch: &mut Batch,
        target: &Target,
        (slot, sent): (Slot<'_>, Sent),
        fetched: &Fetched,
        cache: &mut SeriesCache,
    ) {
        let route = slot.route;
        let failed = |failure: Failure| Err((failure, fetched.duration));
        let payload = match exposition::parse_known(&fetched.text, &self.settings.limits, cache.known()) {
            Ok(payload) => payload,
            Err(e) => {
                let failure = Failure::new(FailureReason::of_parse_error(&e.kind), e.to_string());
                return self.status(batch, target, sent, route, failed(failure));
            }
        };
        // The address is the instance's own, but an identity that names
        // another instance (a reused IP) still must not be stored as this one.
        if let Some(claim) = identity::claim(&payload, &self.settings.identity).filter(|c| !identity::names(c, target))
        {
            let group: TargetGroups = target.paths.first().map(|p| p.target_group.clone()).into_iter().collect();
            self.state.count(|c| *c.unattributed.entry((group, "not_a_member")).or_default() += 1);
            let known = self.topology.borrow().as_ref().is_some_and(|t| identity::names_any(&claim, &t.targets));
            let why = identity::explain(&Unattributed::NotAMember(claim), &self.settings.identity, &[target], known);
            self.note_identity(batch, target.instance.id.as_str(), Some(&why), sent.time);
            let failure = Failure::new(FailureReason::Unattributed, format!("payload not attributed: {why}"));
            return self.status(batch, target, sent, route, failed(failure));
        }
        if self.store(batch, &payload, target, (slot, sent), fetched.duration, cache)
            && self.state.has_identity_issues()
        {
            self.note_identity(batch, target.instance.id.as_str(), None, sent.time);
        }
    }

    /// Notes what payloads through `path` showed ([`ScrapeState::note_identity`]);
    /// a change is logged (an issue at warn with what to do, its end at info)
    /// and recorded in `identity_issues`.
    fn note_identity(&self, batch: &mut Batch, path: &str, why: Option<&Explanation>, time: f64) {
        let Some(change) = self.state.note_identity(path, why, time) else { return };
        let record = match change {
            IdentityChange::Unattributed(why) => {
                tracing::warn!(
                    path,
                    hint = why.hint.as_str(),
                    "payloads not attributed (their samples are dropped): {why}"
                );
                IdentityIssueRecord {
                    time,
                    path: path.to_string(),
                    source: why.seen.as_ref().map(|c| c.source.clone()),
                    value: why.seen.as_ref().map(|c| c.value.clone()),
                    expected: why.expected.join(","),
                    hint: why.hint.as_str(),
                    detail: why.to_string(),
                }
            }
            IdentityChange::Resolved => {
                tracing::info!(path, "payloads attributed again");
                IdentityIssueRecord {
                    time,
                    path: path.to_string(),
                    source: None,
                    value: None,
                    expected: String::new(),
                    hint: "resolved",
                    detail: "payloads attributed again".to_string(),
                }
            }
        };
        batch.identity_issues.push(record);
    }

    fn listener(&self, topology: &Topology, dns: &str, port: u16, wanted: &[InstanceId]) -> Option<Listener> {
        let members = listener_members(topology, dns, port);
        let first = members.first()?;
        let connect_to = wanted.iter().filter_map(|id| topology.target(id)).find_map(|t| t.label("__alb_address__"));
        let address = connect_to.or_else(|| first.label("__alb_address__"))?;
        let (group, route) = describe(&members, dns, port);
        let healthy = members
            .iter()
            .filter(|t| via(t, dns, port).is_some_and(crate::discovery::topology::Path::is_healthy))
            .map(|t| t.instance.id.clone())
            .collect();
        Some(Listener {
            key: ListenerAddr { dns: dns.to_string(), port },
            url: first.scrape_url(address),
            group,
            route,
            members: members.iter().map(|t| t.instance.id.clone()).collect(),
            healthy,
        })
    }

    /// The round's plan: who is wanted, who can be aimed at, and the budget.
    fn round_plan(&self, listener: &Listener, wanted: &[InstanceId]) -> RoundPlan {
        let pinned: BTreeSet<InstanceId> =
            wanted.iter().filter(|id| self.state.pinning_cookie(&listener.key, id).is_some()).cloned().collect();
        let cap = self.settings.request_cap(listener.members.len());
        let budget = match self.settings.alb_request_budget {
            Some(fixed) => fixed,
            None => {
                // Unhealthy members get no traffic while any member is healthy:
                // the budget is sized for the healthy ones.
                let sized_for: Vec<InstanceId> = wanted
                    .iter()
                    .filter(|id| !pinned.contains(*id))
                    .filter(|id| listener.healthy.is_empty() || listener.healthy.contains(id))
                    .cloned()
                    .collect();
                let pool = if listener.healthy.is_empty() { &listener.members } else { &listener.healthy };
                let untargeted = self.state.budget(&listener.group, pool, &sized_for, TARGET_COVERAGE, cap);
                (u32::try_from(pinned.len()).unwrap_or(u32::MAX) + untargeted).clamp(1, cap.max(1))
            }
        };
        RoundPlan { wanted: wanted.to_vec(), pinned, members: listener.members.len(), budget }
    }

    /// One round through a listener for the `wanted` instances.
    pub(super) async fn alb_round(
        &self,
        topology: &Arc<Topology>,
        key: &JobKey,
        (dns, port): (&str, u16),
        wanted: &[InstanceId],
        time: RoundTime,
        batch: &mut Batch,
    ) {
        let mut topology = Arc::clone(topology);
        let Some(listener) = self.listener(&topology, dns, port, wanted) else { return };
        let wanted: Vec<InstanceId> = wanted
            .iter()
            .filter(|id| !self.state.slot_filled(id, self.interval_of(key, time, id, Instant::now())))
            .cloned()
            .collect();
        if wanted.is_empty() {
            return;
        }
        let slot = Slot { key, time, route: &listener.route };
        let mut core = RoundCore::new(self.round_plan(&listener, &wanted));
        let started = self.send_time();
        let deadline = time.tick.deadline;
        let mut in_flight = FuturesUnordered::new();
        // Requests rotate over the load balancer's nodes, from a different
        // one each round.
        let mut next_node = usize::try_from(time.tick.index.rem_euclid(64)).unwrap_or(0);
        // Why the round's last unattributed payload named no member.
        let mut unattributed: Option<Box<Explanation>> = None;
        loop {
            match core.step() {
                Step::Done => break,
                Step::Send(aims) => {
                    self.state.count(|c| c.alb_requests += aims.len() as u64);
                    let nodes = self.burst_nodes(&listener, &aims, core.pending(), &mut next_node);
                    for (aim, node) in aims.into_iter().zip(nodes) {
                        in_flight.push(self.aimed_request(&listener, aim, node, deadline));
                    }
                    continue;
                }
                Step::Wait => {}
            }
            tokio::select! {
                biased;
                () = self.cut.cancelled() => { core.cut(); break }
                () = tokio::time::sleep_until(deadline) => { core.cut(); break }
                Some((aim, sent, result)) = in_flight.next() => {
                    let (answer, first) =
                        self.answer(&topology, &listener, slot, (&aim, sent), result, batch);
                    let attribution = match (core.answered(&aim, answer), first) {
                        (Reaction::RefreshAndRetry, Attribution::Unknown(_, _, fetched)) => {
                            if let Some(refreshed) = self.await_refresh(deadline).await {
                                topology = refreshed;
                            }
                            let (retried, attribution) =
                                self.answer(&topology, &listener, slot, (&aim, sent), Ok(fetched), batch);
                            core.answered(&aim, retried);
                            attribution
                        }
                        (_, attribution) => attribution,
                    };
                    // Counted once the payload's fate is final (after a refresh, if one was taken).
                    if let Attribution::Dropped(reason, why) | Attribution::Unknown(reason, why, _) = attribution {
                        self.state.count(|c| *c.unattributed.entry((listener.group.clone(), reason)).or_default() += 1);
                        unattributed = Some(why);
                    }
                }
            }
        }
        drop(in_flight);
        let outcome = core.finish();
        // Resolved only by a round that reached every member it wanted: a
        // round whose requests all landed on the attributable members says
        // nothing of the others (no flapping between the two states).
        let resolved = outcome.missed.is_empty() && !outcome.reached.is_empty();
        if unattributed.is_some() || (resolved && self.state.has_identity_issues()) {
            self.note_identity(batch, &listener.group.to_string(), unattributed.as_deref(), started.time);
        }
        self.record_round((&topology, &listener), slot, started, (&wanted, &outcome), batch);
    }

    /// The node each request of a burst goes through: a member aimed at (or,
    /// for untargeted requests, a pending member) whose node is known goes
    /// to that node, since with cross-zone load balancing off only its own
    /// zone's node reaches it; the rest rotate over the nodes.
    fn burst_nodes(
        &self,
        listener: &Listener,
        aims: &[Aim],
        pending: &BTreeSet<InstanceId>,
        next_node: &mut usize,
    ) -> Vec<Node> {
        let mut rotate = || {
            *next_node += 1;
            Node::Index(*next_node - 1)
        };
        let aimed: BTreeSet<&InstanceId> =
            aims.iter().filter_map(|a| if let Aim::Member(id) = a { Some(id) } else { None }).collect();
        let mut steer =
            pending.iter().filter(|id| !aimed.contains(id)).filter_map(|id| self.state.member_node(&listener.key, id));
        aims.iter()
            .map(|aim| match aim {
                Aim::Member(id) => self.state.member_node(&listener.key, id).map_or_else(&mut rotate, Node::Address),
                Aim::Any => steer.next().map_or_else(&mut rotate, Node::Address),
            })
            .collect()
    }

    /// Sends one request of a round, aimed at a member through its cookie or
    /// not, through `node` of the load balancer.
    async fn aimed_request(
        &self,
        listener: &Listener,
        aim: Aim,
        node: Node,
        deadline: Instant,
    ) -> (Aim, Sent, Result<Fetched, FetchError>) {
        let cookie = match &aim {
            Aim::Member(id) => self.state.pinning_cookie(&listener.key, id),
            Aim::Any => None,
        };
        let sent = self.send_time();
        let timeout = self.settings.timeout.min(deadline.saturating_duration_since(sent.at));
        let request =
            FetchRequest { url: &listener.url, timeout, quick_connect: false, cookie: cookie.as_deref(), node };
        let result = self.fetcher.fetch(request).await;
        (aim, sent, result)
    }

    /// What one answer means for the round, and whether its payload was
    /// attributed: the payload parsed and classified ([`classify`], pure),
    /// then what that implies done (cookies and nodes remembered, the payload
    /// stored). An unknown identity's payload is handed back: a refresh may
    /// make it known.
    fn answer(
        &self,
        topology: &Topology,
        listener: &Listener,
        slot: Slot<'_>,
        (aim, sent): (&Aim, Sent),
        result: Result<Fetched, FetchError>,
        batch: &mut Batch,
    ) -> (Answer, Attribution) {
        let fetched = match result {
            Ok(fetched) => fetched,
            Err(e) => return (Answer::Failed(Failure::new(e.reason(), e.to_string())), Attribution::NoPayload),
        };
        // The member the request was pinned to most likely answers: its
        // known series speed up parsing; any other answer is parsed in full.
        let aimed = match aim {
            Aim::Member(aimed) => Some((aimed, self.state.take_series(aimed))),
            Aim::Any => None,
        };
        let known = aimed.as_ref().map(|(_, cache)| cache.known());
        let parsed =
            exposition::parse_known(&fetched.text, &self.settings.limits, known.unwrap_or(&KnownSeries::default()));
        if let Some((aimed, cache)) = aimed {
            self.state.put_series(aimed, cache);
        }
        let payload = match parsed {
            Ok(payload) => payload,
            Err(e) => {
                let failure = Failure::new(FailureReason::of_parse_error(&e.kind), e.to_string());
                return (Answer::Failed(failure), Attribution::NoPayload);
            }
        };
        match classify(&payload, topology, (&listener.key.dns, listener.key.port), &self.settings.identity) {
            Verdict::Member(target) => {
                let id = target.instance.id.clone();
                if let Aim::Member(aimed) = aim
                    && *aimed != id
                {
                    // The cookie no longer pins its member (stickiness off, or the member left).
                    self.state.forget_cookie(&listener.key, aimed);
                }
                self.state.set_cookies(&listener.key, &id, fetched.stickiness.clone());
                if let Some(node) = fetched.node {
                    self.state.set_member_node(&listener.key, &id, node);
                }
                let mut cache = self.state.take_series(&id);
                let stored = self.store(batch, &payload, target, (slot, sent), fetched.duration, &mut cache);
                self.state.put_series(&id, cache);
                (Answer::Attributed { id, stored }, Attribution::Attributed)
            }
            Verdict::NotAttributed { reason, unknown, why } => {
                tracing::debug!(target_group = %listener.group, reason = reason.reason(), "payload not attributed: {why}");
                let failure = Failure::new(FailureReason::Unattributed, format!("payload not attributed: {why}"));
                drop(payload);
                if unknown {
                    (Answer::UnknownIdentity(failure), Attribution::Unknown(reason.reason(), why, fetched))
                } else {
                    (Answer::Unattributed(failure), Attribution::Dropped(reason.reason(), why))
                }
            }
        }
    }

    fn record_round(
        &self,
        (topology, listener): (&Topology, &Listener),
        slot: Slot<'_>,
        started: Sent,
        (wanted, outcome): (&[InstanceId], &RoundOutcome),
        batch: &mut Batch,
    ) {
        let Slot { key, time, route } = slot;
        let elapsed = started.at.elapsed();
        let mut missed = 0;
        for (id, failure) in &outcome.missed {
            // Another round (another listener) may have stored it meanwhile:
            // then its interval is not a miss.
            if self.state.slot_filled(id, self.interval_of(key, time, id, started.at)) {
                continue;
            }
            missed += 1;
            if let Some(target) = topology.target(id) {
                self.status(batch, target, started, route, Err((failure.clone(), elapsed)));
            }
        }
        self.state.record_round(&listener.group, &listener.members, wanted.len(), missed, outcome);
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        batch.rounds.push(AlbRoundRecord {
            time: started.time,
            target_group: listener.group.to_string(),
            members: count(listener.members.len()),
            wanted: count(wanted.len()),
            requests: outcome.requests,
            reached: count(outcome.reached.len()),
            reached_wanted: count(wanted.len() - missed.min(wanted.len())),
            unattributed: outcome.unattributed,
            errors: outcome.errors,
            abandoned: outcome.abandoned,
            budget: outcome.budget,
            duration_seconds: elapsed.as_secs_f64(),
        });
    }

    /// Asks discovery for an early refresh and waits (within the round) for
    /// the next topology. Returns at once when the refresh is not taken
    /// (no refresh loop, or the rate limit holds).
    async fn await_refresh(&self, deadline: Instant) -> Option<Arc<Topology>> {
        let early = self.early.as_ref()?;
        let mut receiver = self.topology.clone();
        receiver.borrow_and_update();
        if !early.try_request() {
            return None;
        }
        self.state.count(|c| c.early_refreshes += 1);
        let wait = deadline.saturating_duration_since(Instant::now()).min(self.settings.timeout);
        tokio::time::timeout(wait, receiver.changed()).await.ok()?.ok()?;
        receiver.borrow().clone()
    }
}

/// The path of `target` through a listener.
pub(crate) fn via<'a>(target: &'a Target, dns: &str, port: u16) -> Option<&'a crate::discovery::topology::Path> {
    target.paths.iter().find(|p| p.load_balancer_dns_name == dns && p.listener_port == port && p.weight != Some(0))
}

/// The scraped (running, kept) targets behind a listener.
pub(crate) fn listener_members<'a>(topology: &'a Topology, dns: &str, port: u16) -> Vec<&'a Target> {
    topology.scraped_targets().filter(|t| via(t, dns, port).is_some()).collect()
}

/// The round's target groups and the route its members' statuses record.
fn describe(members: &[&Target], dns: &str, port: u16) -> (TargetGroups, Route) {
    let paths: Vec<_> = members.iter().filter_map(|t| via(t, dns, port)).collect();
    let groups: TargetGroups = paths.iter().map(|p| p.target_group.as_str()).collect();
    let load_balancer = paths.first().map_or(dns, |p| p.load_balancer.as_str()).to_string();
    (groups.clone(), Route::ViaAlb { load_balancer, port, target_groups: groups })
}

/// Whose payload it is, from the payload and the topology alone: a member of
/// the listener it came through, or nobody (and whether anybody discovery
/// knows). No state is read or changed.
pub(super) fn classify<'t>(
    payload: &Payload<'_>,
    topology: &'t Topology,
    (dns, port): (&str, u16),
    sources: &[crate::config::IdentitySource],
) -> Verdict<'t> {
    let members = listener_members(topology, dns, port);
    match identity::attribute(payload, sources, &members) {
        Ok(target) => Verdict::Member(target),
        Err(reason) => {
            let known =
                matches!(&reason, Unattributed::NotAMember(claim) if identity::names_any(claim, &topology.targets));
            let unknown = matches!(reason, Unattributed::NotAMember(_)) && !known;
            let why = Box::new(identity::explain(&reason, sources, &members, known));
            Verdict::NotAttributed { reason, unknown, why }
        }
    }
}
