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
    /// Where it was read, e.g. `node_uname_info{nodename}`.
    pub source: String,
}

/// Where a source reads its identity, e.g. `node_dmi_info{board_asset_tag}`.
pub fn source_name(source: &IdentitySource) -> String {
    match source {
        IdentitySource::Label { metric, label, .. } => format!("{metric}{{{label}}}"),
        IdentitySource::SingleMemberFallback => "single_member_fallback".to_string(),
    }
}

/// The first identity the payload carries, in `sources` order. An empty value
/// (a non-Nitro host's `board_asset_tag=""`) moves on to the next source.
pub fn claim(payload: &Payload<'_>, sources: &[IdentitySource]) -> Option<Claim> {
    sources.iter().find_map(|source| match source {
        IdentitySource::Label { metric, label, matches } => {
            let sample = payload.samples.iter().find(|s| s.name == metric)?;
            let value = sample.label(label).filter(|v| !v.trim().is_empty())?;
            Some(Claim { value: value.trim().to_string(), matches: *matches, source: source_name(source) })
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
    NotAMember(Claim),
}

/// What to change so that payloads are attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// No source found an identity in the payload.
    AddAnIdentity,
    /// `nodename` is not an EC2 host name: a container's (or a VM's own) name.
    NotAnEc2HostName,
    /// The identity names an instance discovery knows, outside this path.
    AnotherInstance,
    /// The identity names no instance of the fleet.
    UnknownInstance,
}

impl Hint {
    /// Its words for the operator.
    pub fn advice(self) -> &'static str {
        match self {
            Self::AddAnIdentity => {
                "give the exporter an identity: enable node_exporter's dmi collector (on Nitro instances \
                 node_dmi_info{board_asset_tag} is the instance id), or write ec2_instance_info{instance_id=\"i-...\"} \
                 with the textfile collector at boot"
            }
            Self::NotAnEc2HostName => {
                "this nodename is not the instance's host name: a containerised node_exporter reports its \
                 container's; run its container with --uts=host (docker/podman), or enable the dmi collector, or \
                 write ec2_instance_info{instance_id=\"i-...\"} with the textfile collector"
            }
            Self::AnotherInstance => {
                "the payload names an instance outside this path: the listener forwards to an instance its target \
                 groups do not list, or the identity is stale (an ec2_instance_info textfile copied from another host)"
            }
            Self::UnknownInstance => {
                "the payload names no instance of the fleet: an ec2_instance_info textfile copied from another \
                 host or image, or an exporter outside the target groups answering on this port"
            }
        }
    }

    /// A short name, for the database and `/api/targets`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AddAnIdentity => "add_an_identity",
            Self::NotAnEc2HostName => "not_an_ec2_host_name",
            Self::AnotherInstance => "another_instance",
            Self::UnknownInstance => "unknown_instance",
        }
    }
}

/// Why payloads through a path name none of its members, in words an
/// operator can act on: the identity seen (source and value), the members
/// expected (as that source would name them), and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The identity the payload carried; `None` when it carried none.
    pub seen: Option<Claim>,
    /// What the sources looked for, when nothing was found.
    pub looked_for: Vec<String>,
    /// The members, as the seen identity would name them (instance ids, or
    /// private DNS host names).
    pub expected: Vec<String>,
    /// What to change.
    pub hint: Hint,
}

/// Members listed in a message at most; the rest are counted.
const EXPECTED_SHOWN: usize = 8;

impl Explanation {
    /// What was seen and expected, without the advice (for a report that
    /// prints the advice as its fix).
    pub fn finding(&self) -> String {
        let seen = match &self.seen {
            Some(claim) => format!("the payload identifies as {}=\"{}\"", claim.source, claim.value),
            None => format!("the payload carries no identity (looked for {})", self.looked_for.join(", ")),
        };
        let shown: Vec<&str> = self.expected.iter().take(EXPECTED_SHOWN).map(String::as_str).collect();
        let more = match self.expected.len().saturating_sub(EXPECTED_SHOWN) {
            0 => String::new(),
            more => format!(" (and {more} more)"),
        };
        format!("{seen}; expected one of: {}{more}", shown.join(", "))
    }
}

/// The finding, then the advice.
impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; {}", self.finding(), self.hint.advice())
    }
}

/// Whether `name` looks like an EC2 private DNS host name (`ip-10-0-1-23`).
fn is_ec2_host_name(name: &str) -> bool {
    let Some(address) = host_part(name).strip_prefix("ip-") else { return false };
    let parts: Vec<&str> = address.split('-').collect();
    parts.len() == 4 && parts.iter().all(|p| p.parse::<u8>().is_ok())
}

/// Explains why a payload names none of `members`; `known` tells whether
/// its identity names an instance discovery knows elsewhere.
pub fn explain(reason: &Unattributed, sources: &[IdentitySource], members: &[&Target], known: bool) -> Explanation {
    let as_named = |matches: IdentityMatch| -> Vec<String> {
        members
            .iter()
            .map(|t| match matches {
                IdentityMatch::InstanceId => t.instance.id.to_string(),
                IdentityMatch::PrivateDnsHost => {
                    t.instance.private_dns_name.as_deref().map_or("(no private DNS name)", host_part).to_string()
                }
            })
            .collect()
    };
    match reason {
        Unattributed::NoIdentity => Explanation {
            seen: None,
            looked_for: sources
                .iter()
                .filter(|s| **s != IdentitySource::SingleMemberFallback)
                .map(source_name)
                .collect(),
            expected: as_named(IdentityMatch::InstanceId),
            hint: Hint::AddAnIdentity,
        },
        Unattributed::NotAMember(claim) => {
            let hint = if known {
                Hint::AnotherInstance
            } else if claim.matches == IdentityMatch::PrivateDnsHost && !is_ec2_host_name(&claim.value) {
                Hint::NotAnEc2HostName
            } else {
                Hint::UnknownInstance
            };
            Explanation { expected: as_named(claim.matches), seen: Some(claim.clone()), looked_for: vec![], hint }
        }
    }
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

/// Whether `claim` names any of `fleet` (an instance discovery knows, when
/// it names no member of the path).
pub fn names_any(claim: &Claim, fleet: &[Target]) -> bool {
    fleet.iter().any(|t| names(claim, t))
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
        Some(claim) => members.iter().copied().find(|t| names(&claim, t)).ok_or(Unattributed::NotAMember(claim)),
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
        let Unattributed::NotAMember(claim) = &err else { panic!("{err:?}") };
        assert_eq!(
            (claim.value.as_str(), claim.source.as_str()),
            ("i-0abc1234def567890", "node_dmi_info{board_asset_tag}")
        );
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

    /// Issue #23: an unattributed payload said `not_a_member` and nothing else.
    #[test]
    fn a_container_nodename_is_explained_with_what_was_expected_and_the_fix() {
        let payload = parse("node_uname_info{nodename=\"3f2a1b9c0d1e\"} 1\n", &Limits::default()).unwrap();
        let (a, b) = (target("i-a", "ip-10-20-1-4.ap-northeast-2.compute.internal"), target("i-b", "ip-10-20-1-5.x"));
        let defaults = IdentitySource::defaults();
        let reason = attribute(&payload, &defaults, &[&a, &b]).unwrap_err();
        let why = explain(&reason, &defaults, &[&a, &b], false);
        assert_eq!(why.hint, Hint::NotAnEc2HostName);
        assert_eq!(why.expected, ["ip-10-20-1-4", "ip-10-20-1-5"], "named as the source names them");
        let text = why.to_string();
        assert!(text.starts_with("the payload identifies as node_uname_info{nodename}=\"3f2a1b9c0d1e\"; expected one of: ip-10-20-1-4, ip-10-20-1-5; "), "{text}");
        assert!(text.contains("--uts=host"), "{text}");
        assert_eq!(
            format!("{}; {}", why.finding(), why.hint.advice()),
            text,
            "the finding is the text without its advice"
        );
    }

    #[test]
    fn each_kind_of_unattributed_payload_gets_its_own_hint() {
        let members: Vec<Target> = (0..10).map(|i| target(&format!("i-{i}"), &format!("ip-10-0-0-{i}.x"))).collect();
        let refs: Vec<&Target> = members.iter().collect();
        let defaults = IdentitySource::defaults();
        let none = explain(&Unattributed::NoIdentity, &defaults, &refs, false);
        assert_eq!(none.hint, Hint::AddAnIdentity);
        let text = none.to_string();
        assert!(text.contains("carries no identity (looked for node_dmi_info{board_asset_tag}, ec2_instance_info{instance_id}, node_uname_info{nodename})"), "{text}");
        assert!(text.contains("i-7 (and 2 more)") && text.contains("dmi collector"), "{text}");
        let claim = |value: &str, matches| Claim { value: value.into(), matches, source: "s".into() };
        let other = Unattributed::NotAMember(claim("i-elsewhere", IdentityMatch::InstanceId));
        assert_eq!(explain(&other, &defaults, &refs, true).hint, Hint::AnotherInstance);
        assert_eq!(explain(&other, &defaults, &refs, false).hint, Hint::UnknownInstance);
        let host = Unattributed::NotAMember(claim("ip-10-9-9-9", IdentityMatch::PrivateDnsHost));
        assert_eq!(explain(&host, &defaults, &refs, false).hint, Hint::UnknownInstance, "an EC2 name, not ours");
        let vm = Unattributed::NotAMember(claim("vm", IdentityMatch::PrivateDnsHost));
        assert_eq!(explain(&vm, &defaults, &refs, false).hint, Hint::NotAnEc2HostName);
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
