//! Why an instance got no payload stored in an interval: the one list of
//! reasons behind `scrape_status.reason`, `/api/targets` and
//! `fleetscrape_scrape_failures_total{reason}`.

use std::fmt;

use serde::Serialize;

use crate::exposition::ErrorKind;

/// Why an interval stored nothing for an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// No answer within the timeout (or before the round's deadline).
    Timeout,
    /// The connection could not be opened.
    ConnectError,
    /// A non-2xx answer, or another transport error.
    HttpError,
    /// The body was corrupt, truncated or not UTF-8.
    BodyError,
    /// `body_size_limit`, `sample_limit` or a label limit was exceeded.
    LimitExceeded,
    /// The payload is not valid exposition text.
    ParseError,
    /// A credentials file could not be read.
    CredentialsError,
    /// The payload names no instance of this path, or none at all.
    Unattributed,
    /// The target has no `__address__` (direct mode).
    NoAddress,
    /// The via-ALB round ended (budget spent or deadline) without the
    /// balancer sending one of its requests to this member.
    NotReachedViaAlb,
}

impl FailureReason {
    /// The stored and exported spelling, e.g. `not_reached_via_alb`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::ConnectError => "connect_error",
            Self::HttpError => "http_error",
            Self::BodyError => "body_error",
            Self::LimitExceeded => "limit_exceeded",
            Self::ParseError => "parse_error",
            Self::CredentialsError => "credentials_error",
            Self::Unattributed => "unattributed",
            Self::NoAddress => "no_address",
            Self::NotReachedViaAlb => "not_reached_via_alb",
        }
    }

    /// The reason for a payload the parser rejected.
    pub fn of_parse_error(kind: &ErrorKind) -> Self {
        match kind {
            ErrorKind::SampleLimit(_)
            | ErrorKind::LabelLimit { .. }
            | ErrorKind::LabelNameLength { .. }
            | ErrorKind::LabelValueLength { .. } => Self::LimitExceeded,
            _ => Self::ParseError,
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure charged to one instance in one interval: the reason and the error seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Why.
    pub reason: FailureReason,
    /// What was seen, for `scrape_status.error`.
    pub error: String,
}

impl Failure {
    /// A failure with its message.
    pub fn new(reason: FailureReason, error: impl Into<String>) -> Self {
        Self { reason, error: error.into() }
    }
}

/// The innermost cause of `error`: reqwest's outer layers say only "error
/// sending request"; `scrape_status.error`, remote_write and the logs show
/// the cause (a connection refused inside a hyper error inside a reqwest one).
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}
