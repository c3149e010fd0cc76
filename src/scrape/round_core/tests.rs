use super::*;
use crate::scrape::balancing::{BalancingModel, TARGET_COVERAGE};

fn ids(n: usize) -> Vec<InstanceId> {
    (0..n).map(|i| InstanceId::from(format!("i-{i}"))).collect()
}

fn plan(n: usize, budget: u32) -> RoundPlan {
    RoundPlan { wanted: ids(n), pinned: BTreeSet::new(), members: n, budget }
}

fn hit(id: &str) -> Answer {
    Answer::Attributed { id: id.into(), stored: true }
}

fn failed(reason: FailureReason) -> Answer {
    Answer::Failed(Failure::new(reason, "boom"))
}

#[test]
fn bursts_of_one_request_per_member_until_every_member_answered() {
    let mut core = RoundCore::new(plan(3, 9));
    assert_eq!(core.step(), Step::Send(vec![Aim::Any; 3]));
    assert_eq!(core.step(), Step::Wait, "the next burst waits for this one");
    core.answered(&Aim::Any, hit("i-0"));
    core.answered(&Aim::Any, hit("i-0"));
    assert_eq!(core.step(), Step::Wait);
    core.answered(&Aim::Any, hit("i-2"));
    assert_eq!(core.step(), Step::Send(vec![Aim::Any; 3]));
    for _ in 0..3 {
        core.answered(&Aim::Any, hit("i-1"));
    }
    assert_eq!(core.step(), Step::Done);
    let outcome = core.finish();
    assert_eq!((outcome.requests, outcome.reached.len(), outcome.missed.len()), (6, 3, 0));
    assert_eq!(outcome.untargeted_answers.len(), 6);
}

#[test]
fn the_budget_caps_requests_and_missed_members_are_not_reached_via_alb() {
    let mut core = RoundCore::new(plan(3, 4));
    assert_eq!(core.step(), Step::Send(vec![Aim::Any; 3]));
    for _ in 0..3 {
        core.answered(&Aim::Any, hit("i-0"));
    }
    assert_eq!(core.step(), Step::Send(vec![Aim::Any]), "one request left in the budget");
    core.answered(&Aim::Any, failed(FailureReason::HttpError));
    assert_eq!(core.step(), Step::Done);
    let outcome = core.finish();
    assert_eq!((outcome.requests, outcome.errors), (4, 1));
    let missed: Vec<_> = outcome.missed.iter().map(|(id, f)| (id.as_str(), f.reason, f.error.as_str())).collect();
    assert_eq!(
        missed,
        [("i-1", FailureReason::NotReachedViaAlb, "boom"), ("i-2", FailureReason::NotReachedViaAlb, "boom")],
        "the last error explains the miss"
    );
}

#[test]
fn a_single_member_s_failure_is_its_own_and_ends_the_round() {
    let mut core = RoundCore::new(plan(1, 3));
    assert_eq!(core.step(), Step::Send(vec![Aim::Any]));
    core.answered(&Aim::Any, failed(FailureReason::Timeout));
    assert_eq!(core.step(), Step::Done);
    let outcome = core.finish();
    assert_eq!(outcome.requests, 1);
    assert_eq!(outcome.missed, [(InstanceId::from("i-0"), Failure::new(FailureReason::Timeout, "boom"))]);

    let mut core = RoundCore::new(plan(1, 3));
    core.step();
    core.answered(&Aim::Any, Answer::Unattributed(Failure::new(FailureReason::Unattributed, "no identity")));
    let outcome = core.finish();
    assert_eq!(outcome.missed[0].1.reason, FailureReason::Unattributed);
    assert_eq!(outcome.unattributed, 1);
}

#[test]
fn a_cut_round_abandons_requests_in_flight_and_counts_them() {
    let mut core = RoundCore::new(plan(3, 9));
    core.step();
    core.answered(&Aim::Any, hit("i-0"));
    core.cut();
    assert_eq!(core.step(), Step::Done);
    let outcome = core.finish();
    assert_eq!((outcome.requests, outcome.abandoned, outcome.cut), (3, 2, true));
    assert_eq!(outcome.missed.len(), 2);
    assert!(outcome.missed[0].1.error.contains("2 abandoned"), "{:?}", outcome.missed);

    // A single member still answering at the deadline timed out.
    let mut core = RoundCore::new(plan(1, 3));
    core.step();
    core.cut();
    assert_eq!(core.finish().missed[0].1.reason, FailureReason::Timeout);
}

#[test]
fn an_unknown_identity_asks_for_one_refresh_per_round() {
    let mut core = RoundCore::new(plan(2, 6));
    core.step();
    let unknown = || Answer::UnknownIdentity(Failure::new(FailureReason::Unattributed, "names i-new"));
    assert_eq!(core.answered(&Aim::Any, unknown()), Reaction::RefreshAndRetry);
    // After the refresh the same payload is handed in again, re-attributed.
    assert_eq!(core.answered(&Aim::Any, hit("i-1")), Reaction::Counted);
    assert_eq!(core.answered(&Aim::Any, unknown()), Reaction::Counted, "once per round");
    let outcome = core.finish();
    assert!(outcome.refresh_asked);
    assert_eq!((outcome.unattributed, outcome.reached.len()), (1, 1));
}

#[test]
fn pinned_members_get_aimed_requests_and_the_rest_of_the_burst_is_untargeted() {
    let mut plan = plan(3, 9);
    plan.pinned = [InstanceId::from("i-0"), InstanceId::from("i-2")].into();
    let mut core = RoundCore::new(plan.clone());
    assert_eq!(core.step(), Step::Send(vec![Aim::Member("i-0".into()), Aim::Member("i-2".into()), Aim::Any]));
    // Everyone pinned: only aimed requests.
    plan.pinned = ids(3).into_iter().collect();
    let mut core = RoundCore::new(plan);
    let Step::Send(aims) = core.step() else { panic!() };
    assert!(aims.iter().all(|a| matches!(a, Aim::Member(_))));
    for aim in &aims {
        let Aim::Member(id) = aim else { unreachable!() };
        core.answered(aim, hit(id));
    }
    let outcome = core.finish();
    assert_eq!((outcome.requests, outcome.untargeted_answers.len()), (3, 0));
}

#[test]
fn members_already_stored_by_another_round_still_count_as_reached() {
    let mut core = RoundCore::new(plan(2, 4));
    core.step();
    core.answered(&Aim::Any, Answer::Attributed { id: "i-0".into(), stored: false });
    core.answered(&Aim::Any, hit("i-1"));
    assert_eq!(core.step(), Step::Done);
    assert!(core.finish().missed.is_empty());
}

/// A simulated balancer: which member each request of a burst reaches.
#[derive(Debug, Clone, Copy)]
enum Balancer {
    RoundRobin,
    Random,
    /// Member 0 takes this share; the others split the rest evenly.
    Skewed(f64),
    /// Least outstanding requests, ties to the lowest index (the worst case
    /// for sequential requests, which then always reach member 0).
    LeastOutstanding,
}

struct Sim {
    balancer: Balancer,
    rng: fastrand::Rng,
    next: usize,
}

impl Sim {
    fn burst(&mut self, n: usize, size: usize) -> Vec<usize> {
        let mut outstanding = vec![0u32; n];
        (0..size)
            .map(|_| {
                let pick = match self.balancer {
                    Balancer::RoundRobin => {
                        self.next += 1;
                        (self.next - 1) % n
                    }
                    Balancer::Random => self.rng.usize(..n),
                    Balancer::Skewed(share) => {
                        if n == 1 || self.rng.f64() < share {
                            0
                        } else {
                            1 + self.rng.usize(..n - 1)
                        }
                    }
                    Balancer::LeastOutstanding => (0..n).min_by_key(|&i| (outstanding[i], i)).unwrap_or(0),
                };
                outstanding[pick] += 1;
                pick
            })
            .collect()
    }
}

/// Coverage (intervals in which every member was reached) and mean requests
/// per member per interval, over `intervals` rounds sized by a learning model.
fn simulate(balancer: Balancer, n: usize, intervals: usize, per_member_cap: u32) -> (f64, f64) {
    let members = ids(n);
    let cap = per_member_cap * u32::try_from(n).unwrap();
    let mut model = BalancingModel::default();
    let mut sim = Sim { balancer, rng: fastrand::Rng::with_seed(n as u64 * 7919 + 17), next: 0 };
    let (mut complete, mut requests) = (0usize, 0u64);
    for _ in 0..intervals {
        let budget = model.requests_for(&members, &members, TARGET_COVERAGE, cap);
        let mut core =
            RoundCore::new(RoundPlan { wanted: members.clone(), pinned: BTreeSet::new(), members: n, budget });
        while let Step::Send(aims) = core.step() {
            for (aim, pick) in aims.iter().zip(sim.burst(n, aims.len())) {
                core.answered(aim, hit(&members[pick]));
            }
        }
        let outcome = core.finish();
        complete += usize::from(outcome.missed.is_empty());
        requests += u64::from(outcome.requests);
        model.observe(&members, &outcome.untargeted_answers);
    }
    (complete as f64 / intervals as f64, requests as f64 / (intervals * n) as f64)
}

const INTERVALS: usize = 10_000;
const CAP: u32 = crate::scrape::DEFAULT_MAX_REQUESTS_PER_MEMBER;

#[test]
fn round_robin_and_least_outstanding_reach_every_member_in_n_requests() {
    for n in [1, 3, 5, 10] {
        for balancer in [Balancer::RoundRobin, Balancer::LeastOutstanding] {
            let (coverage, price) = simulate(balancer, n, INTERVALS, CAP);
            eprintln!("{balancer:?} N={n}: coverage {:.2}%, {price:.2} requests/member", coverage * 100.0);
            assert_eq!(coverage, 1.0, "{balancer:?} N={n}");
            assert!((price - 1.0).abs() < 1e-9, "{balancer:?} N={n}: {price}");
        }
    }
}

#[test]
fn random_balancing_reaches_every_member_in_at_least_99_percent_of_intervals() {
    // Rounds are sized for 99.5 %; over 10⁴ intervals the measured coverage
    // of a true 99.5 % falls below 99 % with probability ~1e-12.
    for n in [2, 3, 5, 10] {
        let (coverage, price) = simulate(Balancer::Random, n, INTERVALS, CAP);
        eprintln!("Random N={n}: coverage {:.2}%, {price:.2} requests/member", coverage * 100.0);
        assert!(coverage >= 0.99, "random N={n}: {coverage}");
    }
}

#[test]
fn a_70_percent_skew_is_learned_90_percent_at_n3_within_the_cap() {
    let (coverage, price) = simulate(Balancer::Skewed(0.7), 3, INTERVALS, CAP);
    eprintln!("Skewed(70%) N=3: coverage {:.2}%, {price:.2} requests/member (cap {CAP}/member)", coverage * 100.0);
    assert!(coverage >= 0.90, "{coverage}");
    // Reported, not asserted: at 70 % to one member the others' shares fall
    // with N, so the cap binds.
    for n in [5, 10] {
        let (coverage, price) = simulate(Balancer::Skewed(0.7), n, INTERVALS, CAP);
        eprintln!(
            "Skewed(70%) N={n}: coverage {:.2}%, {price:.2} requests/member (cap {CAP}/member)",
            coverage * 100.0
        );
        assert!(coverage > 0.0);
    }
    // Without learning (the old fixed budget max(3N, N+2) = 9) N=3 reached
    // every member in ~53 % of rounds: the learned budget is what helps.
    let fixed = {
        let members = ids(3);
        let mut sim = Sim { balancer: Balancer::Skewed(0.7), rng: fastrand::Rng::with_seed(3), next: 0 };
        let mut complete = 0;
        for _ in 0..INTERVALS {
            let mut core =
                RoundCore::new(RoundPlan { wanted: members.clone(), pinned: BTreeSet::new(), members: 3, budget: 9 });
            while let Step::Send(aims) = core.step() {
                for (aim, pick) in aims.iter().zip(sim.burst(3, aims.len())) {
                    core.answered(aim, hit(&members[pick]));
                }
            }
            complete += usize::from(core.finish().missed.is_empty());
        }
        complete as f64 / INTERVALS as f64
    };
    eprintln!("Skewed(70%) N=3 with the old fixed budget 9: {:.2}%", fixed * 100.0);
    assert!(fixed < coverage);
}

#[test]
fn a_stranger_s_payload_does_not_replace_the_error_that_explains_a_miss() {
    let mut core = RoundCore::new(plan(2, 3));
    core.step();
    core.answered(&Aim::Any, failed(FailureReason::HttpError));
    core.answered(&Aim::Any, Answer::Unattributed(Failure::new(FailureReason::Unattributed, "no identity")));
    core.step();
    core.answered(&Aim::Any, hit("i-0"));
    let outcome = core.finish();
    assert_eq!(outcome.missed, [(InstanceId::from("i-1"), Failure::new(FailureReason::NotReachedViaAlb, "boom"))]);
}
