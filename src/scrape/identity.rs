//! Attribution: which instance produced a payload, from identity labels
//! inside it, checked against the members of the path it came through.
//! Never a guess: no identity, or one that is not a member, is unattributed.

use crate::config::{IdentityMatch, IdentitySource};
use crate::discovery::Target;
use crate::exposition::Payload;

/// What a payload says about who produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The value found, e.g. `i-0abc...` or `ip-10-0-1-23`.
    pub value: String,
    /// What the value is compared with.
    pub matches: IdentityMatch,
}

/// The first identity the payload carries, in `sources` order. An empty value
/// (a non-Nitro host's `board_asset_tag=""`) moves on to the next source.
pub fn claim(payload: &Payload<'_>, sources: &[IdentitySource]) -> Option<Claim> {
    sources.iter().find_map(|source| match source {
        IdentitySource::Label { metric, label, matches } => {
            let sample = payload.samples.iter().find(|s| s.name == metric)?;
            let value = sample.label(label).filter(|v| !v.trim().is_empty())?;
            Some(Claim { value: value.trim().to_string(), matches: *matches })
        }
        IdentitySource::SingleMemberFallback => None,
    })
}

/// Why a payload was not attributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unattributed {
    /// The payload carries no identity (and no fallback applies).
    NoIdentity,
    /// The identity names an instance that is not a member of this path.
    NotAMember(String),
}

impl Unattributed {
    /// The `reason` label of `fleetscrape_unattributed_payloads_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoIdentity => "no_identity",
            Self::NotAMember(_) => "not_a_member",
        }
    }
}

/// The host part of a DNS name: `ip-10-0-1-23.ap-northeast-2.compute.internal` → `ip-10-0-1-23`.
fn host_part(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// Whether `claim` names `target`.
pub fn names(claim: &Claim, target: &Target) -> bool {
    match claim.matches {
        IdentityMatch::InstanceId => target.instance.id == claim.value,
        IdentityMatch::PrivateDnsHost => target
            .instance
            .private_dns_name
            .as_deref()
            .is_some_and(|dns| !dns.is_empty() && host_part(dns) == host_part(&claim.value)),
    }
}

/// Attributes a payload to one of `members`.
///
/// # Errors
/// [`Unattributed`] when the payload names no member.
pub fn attribute<'t>(
    payload: &Payload<'_>,
    sources: &[IdentitySource],
    members: &[&'t Target],
) -> Result<&'t Target, Unattributed> {
    match claim(payload, sources) {
        Some(claim) => members.iter().copied().find(|t| names(&claim, t)).ok_or(Unattributed::NotAMember(claim.value)),
        None if members.len() == 1 && sources.contains(&IdentitySource::SingleMemberFallback) => Ok(members[0]),
        None => Err(Unattributed::NoIdentity),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::model::Instance;
    use crate::discovery::{Role, Target};
    use crate::exposition::{Limits, parse};

    fn target(id: &str, dns: &str) -> Target {
        Target {
            instance: Instance {
                private_dns_name: Some(dns.into()),
                state: crate::discovery::model::InstanceState::Running,
                ..Instance::not_found(id)
            },
            role: Role::Basic,
            asg: None,
            paths: vec![],
            discovered_labels: Default::default(),
            labels: Some(Default::default()),
            skip: None,
        }
    }

    const IDENTITY: &str = include_str!("../../tests/testdata/node_exporter-1.5.0-identity.prom");

    #[test]
    fn dmi_identity_picks_the_member() {
        let (a, b) = (target("i-0abc1234def567890", "ip-10-20-1-23.x"), target("i-other", "ip-10-20-1-99.x"));
        let payload = parse(IDENTITY, &Limits::default()).unwrap();
        let found = attribute(&payload, &IdentitySource::defaults(), &[&b, &a]).unwrap();
        assert_eq!(found.instance.id, "i-0abc1234def567890");
        let err = attribute(&payload, &IdentitySource::defaults(), &[&b]).unwrap_err();
        assert_eq!(err, Unattributed::NotAMember("i-0abc1234def567890".into()));
        assert_eq!(err.reason(), "not_a_member");
    }

    #[test]
    fn sources_are_tried_in_order_and_empty_values_skipped() {
        let text = "node_dmi_info{board_asset_tag=\"\"} 1\nnode_uname_info{nodename=\"ip-10-0-0-7.ec2.internal\"} 1\n";
        let payload = parse(text, &Limits::default()).unwrap();
        assert_eq!(claim(&payload, &IdentitySource::defaults()).unwrap().matches, IdentityMatch::PrivateDnsHost);
        let member = target("i-7", "ip-10-0-0-7.ap-northeast-2.compute.internal");
        assert_eq!(attribute(&payload, &IdentitySource::defaults(), &[&member]).unwrap().instance.id, "i-7");
        // The textfile metric wins over uname when listed first.
        let text = format!("{text}ec2_instance_info{{instance_id=\"i-9\"}} 1\n");
        let payload = parse(&text, &Limits::default()).unwrap();
        assert_eq!(claim(&payload, &IdentitySource::defaults()).unwrap().value, "i-9");
    }

    #[test]
    fn no_identity_is_never_guessed_except_by_the_single_member_fallback() {
        let payload = parse("up 1\n", &Limits::default()).unwrap();
        let (a, b) = (target("i-a", "ip-a.x"), target("i-b", "ip-b.x"));
        let defaults = IdentitySource::defaults();
        assert_eq!(attribute(&payload, &defaults, &[&a]).unwrap_err(), Unattributed::NoIdentity);
        let fallback = [IdentitySource::dmi(), IdentitySource::SingleMemberFallback];
        assert_eq!(attribute(&payload, &fallback, &[&a]).unwrap().instance.id, "i-a");
        assert_eq!(attribute(&payload, &fallback, &[&a, &b]).unwrap_err(), Unattributed::NoIdentity);
    }
}
