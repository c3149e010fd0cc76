//! What each target group's balancer does with our requests, learned from
//! recent rounds, and how many requests a round needs to reach every member.
//!
//! An ALB picks a member per request; we cannot choose one (without a
//! stickiness cookie) and it does not say which one answered, so a round
//! keeps requesting until every member's payload has arrived. How many
//! requests that takes depends on the balancer: round-robin needs N, uniform
//! random about N·H(N) on average with a long tail, and a skewed balancer
//! (slow start, anomaly mitigation, uneven zones) far more for the members it
//! favours least. The model keeps a decayed count of which member answered
//! each untargeted request and sizes the next round so that, were the
//! balancer picking independently with those shares, every member would be
//! reached with probability [`TARGET_COVERAGE`] — within a hard cap of
//! `max_requests_per_member × N` requests. Rounds stop as soon as every
//! member is reached, so the budget is a ceiling, not a price.

use std::collections::HashMap;

use crate::ids::InstanceId;

/// The probability of reaching every member that rounds are sized for.
pub const TARGET_COVERAGE: f64 = 0.995;
/// Weight of past rounds: each round multiplies the counts by this (a
/// memory of about 30 rounds), so a changed balancer is learned in minutes.
const DECAY: f64 = 0.97;
/// Pseudo-requests per member spread evenly before anything is observed, so
/// a new member starts at an average share instead of zero.
const PRIOR_PER_MEMBER: f64 = 2.0;

/// Learned shares of one target group's members.
#[derive(Debug, Clone, Default)]
pub struct BalancingModel {
    hits: HashMap<InstanceId, f64>,
}

impl BalancingModel {
    /// Estimated probability that an untargeted request reaches each of `members`.
    pub fn shares(&self, members: &[InstanceId]) -> Vec<f64> {
        let observed: f64 = members.iter().filter_map(|m| self.hits.get(m)).sum();
        let total = observed + PRIOR_PER_MEMBER * members.len() as f64;
        members.iter().map(|m| (self.hits.get(m).copied().unwrap_or(0.0) + PRIOR_PER_MEMBER) / total).collect()
    }

    /// Untargeted requests for every member of `unpinned` (⊆ `members`) to be
    /// reached with probability `target`, at most `cap`.
    pub fn requests_for(&self, members: &[InstanceId], unpinned: &[InstanceId], target: f64, cap: u32) -> u32 {
        if unpinned.is_empty() {
            return 0;
        }
        let shares = self.shares(members);
        let wanted: Vec<f64> =
            members.iter().zip(&shares).filter(|(m, _)| unpinned.contains(m)).map(|(_, p)| *p).collect();
        let floor = u32::try_from(unpinned.len()).unwrap_or(u32::MAX).min(cap);
        (floor..=cap).find(|&k| miss_probability(&wanted, k) <= 1.0 - target).unwrap_or(cap)
    }

    /// Learns from one round: `answered_by` lists the member that answered
    /// each untargeted request. Members no longer in `members` are forgotten.
    pub fn observe(&mut self, members: &[InstanceId], answered_by: &[InstanceId]) {
        self.hits.retain(|m, _| members.contains(m));
        for count in self.hits.values_mut() {
            *count *= DECAY;
        }
        for member in answered_by {
            *self.hits.entry(member.clone()).or_default() += 1.0;
        }
    }
}

/// Union bound on P(some member is missed by `k` independent requests), each
/// member `i` being picked with probability `shares[i]`: Σ (1 − pᵢ)ᵏ. Tight
/// where it matters (small misses), and never optimistic.
pub fn miss_probability(shares: &[f64], k: u32) -> f64 {
    let k = i32::try_from(k).unwrap_or(i32::MAX);
    shares.iter().map(|p| (1.0 - p).clamp(0.0, 1.0).powi(k)).sum::<f64>().min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<InstanceId> {
        (0..n).map(|i| InstanceId::from(format!("i-{i}"))).collect()
    }

    #[test]
    fn without_history_shares_are_even_and_the_budget_is_the_uniform_random_one() {
        let model = BalancingModel::default();
        let members = ids(10);
        assert!(model.shares(&members).iter().all(|p| (p - 0.1).abs() < 1e-12));
        // 10 × 0.9^k ≤ 0.005 → k = 73.
        assert_eq!(model.requests_for(&members, &members, TARGET_COVERAGE, 1000), 73);
        assert_eq!(model.requests_for(&ids(3), &ids(3), TARGET_COVERAGE, 1000), 16);
    }

    #[test]
    fn a_skewed_balancer_is_learned_and_costs_more_up_to_the_cap() {
        let members = ids(3);
        let mut model = BalancingModel::default();
        for round in 0..200 {
            // 70 % to i-0, 15 % each to the others, 20 requests a round.
            let answers: Vec<InstanceId> = (0..20)
                .map(|r| match (round * 20 + r) % 20 {
                    0..=13 => InstanceId::from("i-0"),
                    14..=16 => InstanceId::from("i-1"),
                    _ => InstanceId::from("i-2"),
                })
                .collect();
            model.observe(&members, &answers);
        }
        let shares = model.shares(&members);
        assert!((shares[0] - 0.7).abs() < 0.01 && (shares[1] - 0.15).abs() < 0.01, "{shares:?}");
        // 2 × 0.85^k ≤ 0.005 → k = 37, above a cap of 24.
        assert_eq!(model.requests_for(&members, &members, TARGET_COVERAGE, 1000), 37);
        assert_eq!(model.requests_for(&members, &members, TARGET_COVERAGE, 24), 24);
        // Only the favoured member left to reach: few requests.
        assert_eq!(model.requests_for(&members, &[InstanceId::from("i-0")], TARGET_COVERAGE, 24), 5);
    }

    #[test]
    fn members_that_leave_are_forgotten_and_new_ones_start_at_the_prior() {
        let mut model = BalancingModel::default();
        model.observe(&ids(2), &["i-0".into(), "i-1".into()]);
        model.observe(&["i-1".into(), "i-9".into()], &[]);
        assert!(!model.hits.contains_key("i-0"));
        let shares = model.shares(&["i-1".into(), "i-9".into()]);
        assert!(shares[0] > shares[1] && shares[1] > 0.0, "{shares:?}");
        assert_eq!(model.requests_for(&ids(2), &[], TARGET_COVERAGE, 10), 0);
    }

    #[test]
    fn miss_probability_is_the_union_bound() {
        assert!((miss_probability(&[0.5, 0.5], 1) - 1.0).abs() < 1e-12);
        assert!((miss_probability(&[0.5, 0.5], 3) - 0.25).abs() < 1e-12);
        assert_eq!(miss_probability(&[1.0], 1), 0.0);
    }
}
