//! How an instance was reached in an interval, typed. Its `Display` is
//! exactly what `scrape_status.path` has always stored (and the dashboards and
//! `/api/targets` show): `direct ADDRESS`, or `via_alb LB:PORT GROUPS` with the
//! target groups of a weighted listener joined by `+`.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Serialize, Serializer};

/// The path one interval took to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// Straight to the target's `__address__` (`None`: it had none).
    Direct {
        /// `host:port`.
        address: Option<String>,
    },
    /// Through a load balancer's listener, whose round covers these target groups.
    ViaAlb {
        /// The load balancer's name (its DNS name when discovery had none).
        load_balancer: String,
        /// The listener's port.
        port: u16,
        /// The target groups of the listener's members.
        target_groups: TargetGroups,
    },
}

impl Route {
    /// `direct` or `via_alb`, the `path` label of `fleetscrape_scrapes_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Direct { .. } => "direct",
            Self::ViaAlb { .. } => "via_alb",
        }
    }

    /// Whether it went through a listener.
    pub fn is_via_alb(&self) -> bool {
        matches!(self, Self::ViaAlb { .. })
    }

    /// The target groups of a listener's round (`None` for a direct scrape).
    pub fn target_groups(&self) -> Option<&TargetGroups> {
        match self {
            Self::Direct { .. } => None,
            Self::ViaAlb { target_groups, .. } => Some(target_groups),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct { address: None } => f.write_str("direct"),
            Self::Direct { address: Some(address) } => write!(f, "direct {address}"),
            Self::ViaAlb { load_balancer, port, target_groups } => {
                write!(f, "via_alb {load_balancer}:{port} {target_groups}")
            }
        }
    }
}

impl Serialize for Route {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The target groups one listener forwards to, sorted; shown joined by `+`
/// (`a` or `a+b`), the `target_group` label of the round metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetGroups(BTreeSet<String>);

impl TargetGroups {
    /// Whether every one of them is in `known`.
    pub fn all_in(&self, known: &BTreeSet<String>) -> bool {
        self.0.iter().all(|group| known.contains(group))
    }

    /// The groups, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl<S: Into<String>> FromIterator<S> for TargetGroups {
    fn from_iter<I: IntoIterator<Item = S>>(groups: I) -> Self {
        Self(groups.into_iter().map(Into::into).collect())
    }
}

impl fmt::Display for TargetGroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for group in &self.0 {
            if !first {
                f.write_str("+")?;
            }
            f.write_str(group)?;
            first = false;
        }
        Ok(())
    }
}

impl Serialize for TargetGroups {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::{Route, TargetGroups};

    #[test]
    fn routes_print_what_scrape_status_has_always_stored() {
        assert_eq!(Route::Direct { address: None }.to_string(), "direct");
        assert_eq!(Route::Direct { address: Some("10.0.1.5:9100".into()) }.to_string(), "direct 10.0.1.5:9100");
        let via = Route::ViaAlb {
            load_balancer: "backend".into(),
            port: 9102,
            target_groups: ["web-b", "web-a"].into_iter().collect(),
        };
        assert_eq!(via.to_string(), "via_alb backend:9102 web-a+web-b");
        assert_eq!(serde_json::to_string(&via).unwrap(), "\"via_alb backend:9102 web-a+web-b\"");
        assert_eq!((via.kind(), via.is_via_alb()), ("via_alb", true));
        assert_eq!(Route::Direct { address: None }.kind(), "direct");
    }

    #[test]
    fn target_groups_are_known_only_when_each_one_is() {
        let groups: TargetGroups = ["a", "b"].into_iter().collect();
        let known = ["a".to_string(), "b".to_string(), "c".to_string()].into();
        assert!(groups.all_in(&known));
        assert!(!groups.all_in(&["a".to_string()].into()));
        assert_eq!(TargetGroups::default().to_string(), "");
    }
}
