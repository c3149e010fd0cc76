//! The via-ALB round as a pure state machine: which requests to send, what
//! each answer means, when the round is over, and how failures are charged.
//! The async shell (`round.rs`) only performs the requests it asks for.
//!
//! A round wants the members its job owns. It sends requests in bursts of up
//! to one per listener member, concurrently (a least-outstanding-requests
//! balancer spreads concurrent requests across members, not sequential
//! ones); a wanted member with a stickiness cookie gets a request aimed at it.
//! The next burst starts when the last one has answered. The round ends when
//! every wanted member has answered, the request budget is spent, the round
//! is cut (its deadline, or shutdown: requests in flight are abandoned and
//! counted), or — through a single-member listener — at the first failure,
//! which is that member's own.

use std::collections::BTreeSet;

use super::failure::{Failure, FailureReason};
use crate::ids::InstanceId;

/// Most requests of one burst.
pub const MAX_BURST: usize = 16;

/// What a round is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundPlan {
    /// The members this round must reach (its job's own), in order.
    pub wanted: Vec<InstanceId>,
    /// Wanted members with a stickiness cookie: a request can be aimed at them.
    pub pinned: BTreeSet<InstanceId>,
    /// Members behind the listener (wanted or not): the burst size.
    pub members: usize,
    /// Most requests the round may send.
    pub budget: u32,
}

impl RoundPlan {
    fn single(&self) -> bool {
        self.members == 1
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aim {
    /// Wherever the balancer sends it.
    Any,
    /// The member whose stickiness cookie it carries.
    Member(InstanceId),
}

/// What the round wants done next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these requests now, concurrently.
    Send(Vec<Aim>),
    /// Wait for an answer to a request in flight.
    Wait,
    /// The round is over: call [`RoundCore::finish`].
    Done,
}

/// What one request produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A payload attributed to `id`; `stored` when its interval was still
    /// empty and the payload was stored (else another round already had it).
    Attributed {
        /// The instance.
        id: InstanceId,
        /// Whether this payload was the one stored for its interval.
        stored: bool,
    },
    /// A payload whose identity names an instance discovery does not know
    /// (a new member, before the next refresh).
    UnknownIdentity(Failure),
    /// A payload that is not this listener's members' (no identity, another
    /// listener's instance).
    Unattributed(Failure),
    /// No usable payload (transport, status, body, parse).
    Failed(Failure),
}

/// What the shell should do about an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Nothing more.
    Counted,
    /// Ask discovery for an early refresh, re-attribute the same payload
    /// against the refreshed topology, and hand in that answer instead
    /// (this one was not counted). Asked at most once per round.
    RefreshAndRetry,
}

/// A round's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundOutcome {
    /// Requests sent.
    pub requests: u32,
    /// Requests answered with no usable payload.
    pub errors: u32,
    /// Payloads not attributed to a member.
    pub unattributed: u32,
    /// Requests still in flight when the round was cut.
    pub abandoned: u32,
    /// The budget the round had.
    pub budget: u32,
    /// Every member whose payload arrived (wanted or not).
    pub reached: BTreeSet<InstanceId>,
    /// The member that answered each untargeted request, in order (what the
    /// balancing model learns from).
    pub untargeted_answers: Vec<InstanceId>,
    /// Wanted members the round did not reach, each with what to charge it:
    /// its own failure (single-member listener) or `not_reached_via_alb`.
    pub missed: Vec<(InstanceId, Failure)>,
    /// Whether an early refresh was asked for.
    pub refresh_asked: bool,
    /// Whether the round was cut before it had finished.
    pub cut: bool,
}

/// One via-ALB round in progress.
#[derive(Debug)]
pub struct RoundCore {
    plan: RoundPlan,
    pending: BTreeSet<InstanceId>,
    in_flight: u32,
    outcome: RoundOutcome,
    last_error: Option<String>,
    charged: Option<Failure>,
    over: bool,
}

impl RoundCore {
    /// A round about to start.
    pub fn new(plan: RoundPlan) -> Self {
        let pending = plan.wanted.iter().cloned().collect();
        let outcome = RoundOutcome { budget: plan.budget, ..RoundOutcome::default() };
        Self { plan, pending, in_flight: 0, outcome, last_error: None, charged: None, over: false }
    }

    /// Wanted members not reached yet.
    pub fn pending(&self) -> &BTreeSet<InstanceId> {
        &self.pending
    }

    /// What to do now.
    pub fn step(&mut self) -> Step {
        if self.over || self.pending.is_empty() {
            return if self.in_flight == 0 { Step::Done } else { Step::Wait };
        }
        if self.in_flight > 0 {
            return Step::Wait;
        }
        let left = self.plan.budget.saturating_sub(self.outcome.requests) as usize;
        if left == 0 {
            return Step::Done;
        }
        let size = self.plan.members.clamp(1, MAX_BURST).min(left);
        let mut aims: Vec<Aim> = self
            .pending
            .iter()
            .filter(|id| self.plan.pinned.contains(*id))
            .take(size)
            .cloned()
            .map(Aim::Member)
            .collect();
        let unpinned = self.pending.iter().any(|id| !self.plan.pinned.contains(id));
        if unpinned {
            aims.resize(size, Aim::Any);
        }
        let sent = u32::try_from(aims.len()).unwrap_or(u32::MAX);
        self.outcome.requests += sent;
        self.in_flight += sent;
        Step::Send(aims)
    }

    /// Hands in the answer to a request aimed at `aim`.
    pub fn answered(&mut self, aim: &Aim, answer: Answer) -> Reaction {
        if let Answer::UnknownIdentity(_) = answer
            && !self.outcome.refresh_asked
            && !self.over
        {
            self.outcome.refresh_asked = true;
            return Reaction::RefreshAndRetry;
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        match answer {
            Answer::Attributed { id, .. } => {
                if *aim == Aim::Any {
                    self.outcome.untargeted_answers.push(id.clone());
                }
                self.pending.remove(&id);
                self.outcome.reached.insert(id);
            }
            Answer::UnknownIdentity(failure) | Answer::Unattributed(failure) => {
                self.outcome.unattributed += 1;
                self.charge_single(Failure::new(FailureReason::Unattributed, failure.error));
            }
            Answer::Failed(failure) => {
                self.outcome.errors += 1;
                // A stranger's payload says nothing about why a member was
                // missed; a failed request (a 502 of a dead member) does.
                self.last_error = Some(failure.error.clone());
                self.charge_single(failure);
            }
        }
        Reaction::Counted
    }

    /// Through a single-member listener a failure is the member's own and
    /// ends the round; otherwise it is the round's.
    fn charge_single(&mut self, failure: Failure) {
        if self.plan.single() && self.charged.is_none() && !self.over {
            self.charged = Some(failure);
            self.over = true;
        }
    }

    /// The round's deadline passed (or shutdown): requests in flight are abandoned.
    pub fn cut(&mut self) {
        self.outcome.cut = !self.pending.is_empty() && !self.over;
        self.outcome.abandoned += self.in_flight;
        self.in_flight = 0;
        self.over = true;
    }

    /// The result; `missed` charges each wanted member not reached.
    pub fn finish(mut self) -> RoundOutcome {
        let requests = self.outcome.requests;
        let abandoned = self.outcome.abandoned;
        for id in &self.plan.wanted {
            if !self.pending.contains(id) {
                continue;
            }
            let failure = match &self.charged {
                Some(failure) => failure.clone(),
                // A single member that did not answer in time timed out itself.
                None if self.plan.single() && abandoned > 0 => Failure::new(
                    FailureReason::Timeout,
                    format!("no answer before the round's deadline ({abandoned} request abandoned)"),
                ),
                None => {
                    let error = match (&self.last_error, abandoned) {
                        (_, 1..) => {
                            format!("not reached in {requests} requests; {abandoned} abandoned at the round's deadline")
                        }
                        (Some(error), _) => error.clone(),
                        (None, _) => format!("not reached in {requests} requests"),
                    };
                    Failure::new(FailureReason::NotReachedViaAlb, error)
                }
            };
            self.outcome.missed.push((id.clone(), failure));
        }
        self.outcome
    }
}

#[cfg(test)]
mod tests;
