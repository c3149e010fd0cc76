//! Durations written the way Prometheus writes them: `15s`, `1m30s`, `2h`,
//! `15d`, `1w`, `1y`, `500ms`, or `0`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration parsed from, and displayed in, Prometheus syntax.
///
/// Units must appear in descending order (`y w d h m s ms`), each at most
/// once, as in Prometheus's `model.ParseDuration`. A year is 365 days.
///
/// ```
/// use fleetscrape::duration::PromDuration;
/// let d: PromDuration = "1m30s".parse().unwrap();
/// assert_eq!(d.as_std().as_secs(), 90);
/// assert_eq!(d.to_string(), "1m30s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PromDuration(Duration);

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected Prometheus syntax such as 15s, 1m30s, 2h, 15d)")]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

const MS: u64 = 1;
const SECOND: u64 = 1000 * MS;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;
const YEAR: u64 = 365 * DAY;

/// Units in the order Prometheus requires them, with their length in ms.
const UNITS: [(&str, u64); 7] =
    [("y", YEAR), ("w", WEEK), ("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", SECOND), ("ms", MS)];

impl PromDuration {
    /// Builds a duration from whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// Builds a duration from milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }

    /// Wraps a [`std::time::Duration`].
    pub const fn from_std(duration: Duration) -> Self {
        Self(duration)
    }

    /// The duration as a [`std::time::Duration`].
    pub const fn as_std(self) -> Duration {
        self.0
    }

    /// Whether the duration is zero.
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl FromStr for PromDuration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ParseDurationError { input: input.to_string(), reason };
        if input == "0" {
            return Ok(Self(Duration::ZERO));
        }
        if input.is_empty() {
            return Err(fail("empty"));
        }
        let mut rest = input;
        let mut total_ms: u64 = 0;
        let mut next_unit = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(fail("expected a number"));
            }
            let number: u64 = rest[..digits].parse().map_err(|_| fail("number too large"))?;
            rest = &rest[digits..];
            if rest.starts_with(['.', ',']) {
                return Err(fail("fractions are not allowed: combine units instead, e.g. 1m30s for 1.5m"));
            }
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let position = UNITS[next_unit..]
                .iter()
                .position(|(name, _)| *name == unit)
                .ok_or_else(|| fail(if unit.is_empty() { "missing unit" } else { "unknown or out-of-order unit" }))?;
            let unit_ms = UNITS[next_unit + position].1;
            next_unit += position + 1;
            let part = number.checked_mul(unit_ms).ok_or_else(|| fail("too large"))?;
            total_ms = total_ms.checked_add(part).ok_or_else(|| fail("too large"))?;
        }
        Ok(Self(Duration::from_millis(total_ms)))
    }
}

impl fmt::Display for PromDuration {
    /// Formats like Prometheus: largest units first, `0s` for zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return f.write_str("0s");
        }
        for (name, unit_ms) in UNITS {
            if ms >= unit_ms {
                write!(f, "{}{name}", ms / unit_ms)?;
                ms %= unit_ms;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            Some(text) => text.parse().map_err(serde::de::Error::custom),
            None => Err(serde::de::Error::custom("a duration is required here, e.g. 15s, 1m30s, 2h")),
        }
    }
}

impl Serialize for PromDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<u64, ParseDurationError> {
        s.parse::<PromDuration>().map(|d| d.as_std().as_millis() as u64)
    }

    #[test]
    fn parses_prometheus_examples() {
        assert_eq!(parse("15s").unwrap(), 15 * SECOND);
        assert_eq!(parse("1m30s").unwrap(), 90 * SECOND);
        assert_eq!(parse("2h").unwrap(), 2 * HOUR);
        assert_eq!(parse("15d").unwrap(), 15 * DAY);
        assert_eq!(
            parse("1y2w3d4h5m6s7ms").unwrap(),
            YEAR + 2 * WEEK + 3 * DAY + 4 * HOUR + 5 * MINUTE + 6 * SECOND + 7
        );
        assert_eq!(parse("500ms").unwrap(), 500);
        assert_eq!(parse("0").unwrap(), 0);
        assert_eq!(parse("0s").unwrap(), 0);
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        for bad in ["", "15", "s", "1.5s", "-1s", "1s1m", "1m1m", "1x", " 1s", "1s ", "1 s", "1S", "1d1y"] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn error_message_names_the_input_and_the_syntax() {
        let err = parse("10 seconds").unwrap_err().to_string();
        assert!(err.contains("\"10 seconds\""), "{err}");
        assert!(err.contains("Prometheus syntax"), "{err}");
    }

    #[test]
    fn a_fraction_is_named_as_such() {
        // "1.5m" used to read as "missing unit" (after "1").
        let err = parse("1.5m").unwrap_err().to_string();
        assert!(err.contains("fractions are not allowed"), "{err}");
        assert!(err.contains("1m30s"), "{err}");
    }

    #[test]
    fn displays_with_largest_units_first() {
        for (input, shown) in [("90s", "1m30s"), ("15d", "2w1d"), ("0", "0s"), ("1500ms", "1s500ms"), ("60m", "1h")] {
            assert_eq!(input.parse::<PromDuration>().unwrap().to_string(), shown);
        }
    }

    #[test]
    fn display_round_trips() {
        for input in ["1y", "3w", "36h", "59m59s", "1ms", "10m"] {
            let d: PromDuration = input.parse().unwrap();
            assert_eq!(d.to_string().parse::<PromDuration>().unwrap(), d);
        }
    }
}
