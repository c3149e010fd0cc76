//! `/ready`: whether fleetscrape is doing its job, decided from what the
//! components report (a pure function of [`Inputs`]). Not ready while the
//! first discovery has not succeeded, while discovery has failed for longer
//! than [`DISCOVERY_STALE_INTERVALS`] refresh intervals, while nothing is
//! there to scrape (unless scraping is off, or an Auto Scaling group scaled
//! to zero explains it), and while the store cannot commit.

use std::fmt;

use crate::discovery::Topology;
use crate::self_metrics::{Encoder, Family};

/// Refresh intervals of failing discovery after which `/ready` fails: the
/// topology in use is then that much older than it should be.
pub const DISCOVERY_STALE_INTERVALS: f64 = 3.0;

/// What readiness is decided from, read from the components at one `now`.
#[derive(Debug, Clone, Default)]
pub struct Inputs<'a> {
    /// Epoch seconds.
    pub now: f64,
    /// Whether a discovery has ever succeeded.
    pub discovered: bool,
    /// Since when discovery fails, and the last error.
    pub discovery_failing: Option<(f64, String)>,
    /// `discovery.refresh_interval`, seconds.
    pub refresh_interval: f64,
    /// `scrape.enabled`.
    pub scrape_enabled: bool,
    /// The latest topology.
    pub topology: Option<&'a Topology>,
    /// Since when store commits fail, and the last error (`None` also
    /// without a database).
    pub store_failing: Option<(f64, String)>,
}

/// One reason not to be ready.
#[derive(Debug, Clone, PartialEq)]
pub enum NotReady {
    /// No discovery has succeeded yet (the last error, if one failed).
    FirstDiscovery(Option<String>),
    /// Discovery has failed for `for_seconds`, longer than the bound.
    DiscoveryFailing {
        /// Seconds since the first failure.
        for_seconds: f64,
        /// The last error.
        error: String,
    },
    /// Discovery found nothing to scrape.
    NoTarget {
        /// Instances found but skipped (stopped, relabeled away, other shard).
        skipped: usize,
    },
    /// The store cannot commit.
    StoreFailing {
        /// Seconds since the first failed commit.
        for_seconds: f64,
        /// The last error.
        error: String,
    },
}

impl NotReady {
    /// Every reason's `reason` label, in a fixed order (all are exported, 0 or 1).
    pub const REASONS: [&'static str; 4] = ["discovery_pending", "discovery_failing", "no_target", "store_failing"];

    /// Its `reason` label on `fleetscrape_not_ready`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::FirstDiscovery(_) => "discovery_pending",
            Self::DiscoveryFailing { .. } => "discovery_failing",
            Self::NoTarget { .. } => "no_target",
            Self::StoreFailing { .. } => "store_failing",
        }
    }
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FirstDiscovery(None) => f.write_str("the first discovery is under way"),
            Self::FirstDiscovery(Some(error)) => {
                write!(f, "no discovery has succeeded yet; the last one failed: {error}")
            }
            Self::DiscoveryFailing { for_seconds, error } => {
                write!(f, "discovery has failed for {for_seconds:.0} s (the topology in use is stale): {error}")
            }
            Self::NoTarget { skipped } => write!(
                f,
                "discovery found no instance to scrape ({skipped} skipped): check aws.region, \
                 discovery.listener_ports and the target groups' registered targets (`fleetscrape discover` lists \
                 what is found and why each is skipped)"
            ),
            Self::StoreFailing { for_seconds, error } => {
                write!(f, "the store has failed to commit for {for_seconds:.0} s: {error}")
            }
        }
    }
}

/// Every reason not to be ready now; empty when ready.
pub fn check(inputs: &Inputs<'_>) -> Vec<NotReady> {
    let mut reasons = Vec::new();
    let failing = inputs.discovery_failing.as_ref();
    if !inputs.discovered {
        reasons.push(NotReady::FirstDiscovery(failing.map(|(_, error)| error.clone())));
    } else if let Some((since, error)) = failing {
        let for_seconds = inputs.now - since;
        if for_seconds > DISCOVERY_STALE_INTERVALS * inputs.refresh_interval {
            reasons.push(NotReady::DiscoveryFailing { for_seconds, error: error.clone() });
        }
    }
    if inputs.scrape_enabled
        && let Some(topology) = inputs.topology
        && topology.is_unexpectedly_empty()
    {
        reasons.push(NotReady::NoTarget { skipped: topology.targets.len() });
    }
    if let Some((since, error)) = &inputs.store_failing {
        reasons.push(NotReady::StoreFailing { for_seconds: inputs.now - since, error: error.clone() });
    }
    reasons
}

/// The `/ready` body: `ready`, or one line per reason.
pub fn body(reasons: &[NotReady]) -> String {
    if reasons.is_empty() {
        return "ready\n".to_string();
    }
    reasons.iter().map(|r| format!("not ready: {r}\n")).collect()
}

static READY: Family<0> =
    Family::gauge("fleetscrape_ready", "1 when /ready answers 200, else 0 (fleetscrape_not_ready says why).", []);
static NOT_READY: Family<1> = Family::gauge(
    "fleetscrape_not_ready",
    "1 for each reason /ready fails now: discovery_pending, discovery_failing, no_target, store_failing.",
    ["reason"],
);

/// `fleetscrape_ready` and `fleetscrape_not_ready{reason}` (every reason, 0 or 1).
pub fn collect(reasons: &[NotReady], encoder: &mut Encoder) {
    encoder.single(&READY, if reasons.is_empty() { 1.0 } else { 0.0 });
    let mut family = encoder.family(&NOT_READY);
    for reason in NotReady::REASONS {
        let on = reasons.iter().any(|r| r.reason() == reason);
        family.sample([reason], if on { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::model::{AutoScalingGroup, InstanceState};
    use crate::discovery::{SkipReason, Target};

    fn topology(scraped: usize, skipped: usize, asg_desired: Option<i32>) -> Topology {
        let target = |i: usize, skip| Target::for_tests(format!("i-{i}"), skip);
        let mut targets: Vec<Target> = (0..scraped).map(|i| target(i, None)).collect();
        targets.extend(
            (scraped..scraped + skipped).map(|i| target(i, Some(SkipReason::NotRunning(InstanceState::Stopped)))),
        );
        let auto_scaling_groups = asg_desired.map(|d| AutoScalingGroup::for_tests("asg", d)).into_iter().collect();
        Topology { targets, auto_scaling_groups, refreshed_at: std::time::SystemTime::UNIX_EPOCH }
    }

    fn inputs(topology: &Topology) -> Inputs<'_> {
        Inputs {
            now: 1000.0,
            discovered: true,
            refresh_interval: 60.0,
            scrape_enabled: true,
            topology: Some(topology),
            ..Inputs::default()
        }
    }

    fn reasons(inputs: &Inputs<'_>) -> Vec<&'static str> {
        check(inputs).iter().map(NotReady::reason).collect()
    }

    #[test]
    fn a_working_fleet_is_ready() {
        let fleet = topology(3, 1, Some(2));
        assert_eq!(check(&inputs(&fleet)), []);
        assert_eq!(body(&[]), "ready\n");
    }

    #[test]
    fn discovery_not_yet_or_failing_past_the_bound() {
        let fleet = topology(3, 0, None);
        let first = Inputs { discovered: false, topology: None, ..inputs(&fleet) };
        assert_eq!(check(&first), [NotReady::FirstDiscovery(None)]);
        let failing = Inputs { discovery_failing: Some((1000.0 - 180.0, "denied".into())), ..inputs(&fleet) };
        assert_eq!(reasons(&failing), [] as [&str; 0], "within 3 refresh intervals: still ready");
        let stale = Inputs { discovery_failing: Some((1000.0 - 181.0, "denied".into())), ..inputs(&fleet) };
        assert_eq!(check(&stale), [NotReady::DiscoveryFailing { for_seconds: 181.0, error: "denied".into() }]);
        assert!(body(&check(&stale)).contains("discovery has failed for 181 s"));
    }

    #[test]
    fn nothing_to_scrape_fails_unless_scraping_is_off_or_a_group_is_scaled_to_zero() {
        let empty = topology(0, 2, None);
        assert_eq!(check(&inputs(&empty)), [NotReady::NoTarget { skipped: 2 }]);
        assert!(body(&check(&inputs(&empty))).contains("fleetscrape discover"));
        assert_eq!(reasons(&Inputs { scrape_enabled: false, ..inputs(&empty) }), [] as [&str; 0]);
        let scaled_in = topology(0, 0, Some(0));
        assert_eq!(reasons(&inputs(&scaled_in)), [] as [&str; 0]);
        let broken_group = topology(0, 0, Some(2));
        assert_eq!(reasons(&inputs(&broken_group)), ["no_target"], "desired 2 and nothing found is a fault");
    }

    #[test]
    fn a_store_that_cannot_commit_fails_with_every_other_reason_listed() {
        let empty = topology(0, 0, None);
        let both = Inputs { store_failing: Some((990.0, "readonly".into())), ..inputs(&empty) };
        assert_eq!(reasons(&both), ["no_target", "store_failing"]);
        let text = body(&check(&both));
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("the store has failed to commit for 10 s: readonly"), "{text}");
    }

    #[test]
    fn the_gauges_name_every_reason() {
        let mut encoder = Encoder::default();
        collect(&[NotReady::NoTarget { skipped: 0 }], &mut encoder);
        let page = encoder.finish();
        assert!(page.contains("fleetscrape_ready 0\n"), "{page}");
        assert!(page.contains("fleetscrape_not_ready{reason=\"no_target\"} 1\n"), "{page}");
        assert!(page.contains("fleetscrape_not_ready{reason=\"store_failing\"} 0\n"), "{page}");
    }
}
