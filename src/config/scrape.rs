//! Value types of the `scrape:` section beyond durations: byte sizes,
//! identity sources, TLS and authentication settings.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes written like Prometheus's `body_size_limit`: `0` (no
/// limit), `1024`, `512KB`, `16MiB`, `1GB` (KB/MB/GB are powers of 1024, as in
/// Prometheus's units package; KiB/MiB/GiB too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub usize);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = text.split_at(digits);
        let number: usize = number.parse().map_err(|_| format!("invalid size {text:?} (expected e.g. 16MiB)"))?;
        let multiplier: usize = match unit {
            "" | "B" => 1,
            "KB" | "KiB" => 1 << 10,
            "MB" | "MiB" => 1 << 20,
            "GB" | "GiB" => 1 << 30,
            _ => return Err(format!("invalid size unit in {text:?} (use B, KB/KiB, MB/MiB or GB/GiB)")),
        };
        number.checked_mul(multiplier).map(Self).ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in [("GiB", 1usize << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(usize),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(Self(n)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What an identity label's value is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMatch {
    /// The EC2 instance id (`i-0abc...`).
    InstanceId,
    /// The host part of the instance's private DNS name (`ip-10-0-1-23`).
    PrivateDnsHost,
}

/// One way to tell, from a payload, which instance produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// The value of `label` on the first sample of `metric`.
    Label {
        /// Metric name, e.g. `node_dmi_info`.
        metric: String,
        /// Label name, e.g. `board_asset_tag`.
        label: String,
        /// What the value is.
        matches: IdentityMatch,
    },
    /// A payload with no identity at all, through a listener with exactly one
    /// member, is that member's (for exporters that carry no identity).
    SingleMemberFallback,
}

impl IdentitySource {
    /// `node_dmi_info{board_asset_tag}`: the instance id on Nitro hosts.
    pub fn dmi() -> Self {
        Self::label("node_dmi_info", "board_asset_tag", IdentityMatch::InstanceId)
    }

    /// `ec2_instance_info{instance_id}`: a textfile-collector metric written at boot.
    pub fn textfile() -> Self {
        Self::label("ec2_instance_info", "instance_id", IdentityMatch::InstanceId)
    }

    /// `node_uname_info{nodename}` against the private DNS host name.
    pub fn uname() -> Self {
        Self::label("node_uname_info", "nodename", IdentityMatch::PrivateDnsHost)
    }

    fn label(metric: &str, label: &str, matches: IdentityMatch) -> Self {
        Self::Label { metric: metric.into(), label: label.into(), matches }
    }

    /// The default order: DMI, then the textfile metric, then uname.
    pub fn defaults() -> Vec<Self> {
        vec![Self::dmi(), Self::textfile(), Self::uname()]
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct LabelSource {
    metric: String,
    label: String,
    matches: IdentityMatch,
}

impl<'de> Deserialize<'de> for IdentitySource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Label(LabelSource),
        }
        let raw = Raw::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "an identity source is one of dmi, textfile, uname, single_member_fallback, \
                 or {metric: NAME, label: NAME, matches: instance_id|private_dns_host}",
            )
        })?;
        match raw {
            Raw::Name(name) => match name.as_str() {
                "dmi" => Ok(Self::dmi()),
                "textfile" => Ok(Self::textfile()),
                "uname" => Ok(Self::uname()),
                "single_member_fallback" => Ok(Self::SingleMemberFallback),
                other => Err(serde::de::Error::custom(format!(
                    "unknown identity source {other:?}: use dmi, textfile, uname, single_member_fallback or a {{metric, label, matches}} map"
                ))),
            },
            Raw::Label(LabelSource { metric, label, matches }) => Ok(Self::Label { metric, label, matches }),
        }
    }
}

impl Serialize for IdentitySource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::SingleMemberFallback => serializer.serialize_str("single_member_fallback"),
            Self::Label { metric, label, matches } => {
                LabelSource { metric: metric.clone(), label: label.clone(), matches: *matches }.serialize(serializer)
            }
        }
    }
}

/// TLS for `https` listeners (an ALB's certificate rarely names its internal DNS name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of CA certificates to trust, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Name to verify the server's certificate against (and send as SNI)
    /// instead of the host in the URL, e.g. the name an ALB's certificate has.
    pub server_name: Option<String>,
    /// Accept any certificate (encrypts, but authenticates nothing).
    pub insecure_skip_verify: bool,
}

/// HTTP basic authentication; the password is read from a file at each scrape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// File holding the password.
    pub password_file: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_and_display() {
        for (text, bytes, shown) in [
            ("0", 0, "0"),
            ("1024", 1024, "1KiB"),
            ("16MiB", 16 << 20, "16MiB"),
            ("10MB", 10 << 20, "10MiB"),
            ("3B", 3, "3"),
        ] {
            let size: ByteSize = text.parse().unwrap();
            assert_eq!((size.0, size.to_string().as_str()), (bytes, shown), "{text}");
        }
        assert!("16 MiB".parse::<ByteSize>().is_err());
        assert!("1TB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn identity_sources_parse_from_names_and_maps() {
        let parsed: Vec<IdentitySource> = serde_saphyr::from_str(
            "- dmi\n- {metric: my_info, label: id, matches: instance_id}\n- single_member_fallback\n",
        )
        .unwrap();
        assert_eq!(parsed[0], IdentitySource::dmi());
        assert_eq!(
            parsed[1],
            IdentitySource::Label { metric: "my_info".into(), label: "id".into(), matches: IdentityMatch::InstanceId }
        );
        assert_eq!(parsed[2], IdentitySource::SingleMemberFallback);
        let err = serde_saphyr::from_str::<Vec<IdentitySource>>("- bios\n").unwrap_err().to_string();
        assert!(err.contains("unknown identity source \"bios\""), "{err}");
        let err = serde_saphyr::from_str::<Vec<IdentitySource>>("- {metric: a}\n").unwrap_err().to_string();
        assert!(err.contains("an identity source is one of"), "{err}");
        let yaml = serde_saphyr::to_string(&parsed).unwrap();
        assert_eq!(serde_saphyr::from_str::<Vec<IdentitySource>>(&yaml).unwrap(), parsed);
    }
}
