//! The Prometheus text exposition format 0.0.4: a zero-copy parser with
//! Prometheus's scrape limits, and body decoding (gzip) under a size limit.
//!
//! Depends on no other module of fleetscrape. Parsing allocates one vector of
//! samples per payload and nothing per sample: names and label blocks borrow
//! the payload, and label values are unescaped only when read
//! ([`Sample::labels`] yields `Cow`s that borrow unless a value has escapes).
//!
//! What is accepted follows Prometheus's scrape parser (`promparse`):
//! whitespace around tokens and a trailing comma inside braces are fine;
//! label values may contain a NUL; `\\`, `\"` and `\n` are the escapes (any
//! other backslash pair is kept as written). Two things are rejected that
//! promparse lets through: a missing comma between labels, and a label name
//! given twice in one sample (Prometheus rejects the latter when appending).
//!
//! ```
//! use fleetscrape_exposition::{parse, Limits, MetricType};
//! let text = "# TYPE node_cpu_seconds_total counter\n\
//!             node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 1234.5\n";
//! let payload = parse(text, &Limits::default()).unwrap();
//! let sample = &payload.samples[0];
//! assert_eq!(sample.name, "node_cpu_seconds_total");
//! assert_eq!(sample.label("mode").as_deref(), Some("idle"));
//! assert_eq!(sample.value, 1234.5);
//! assert_eq!(payload.metric_type(sample.name), MetricType::Counter);
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

mod body;
mod line;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

pub use body::{BodyError, decode_body};
use line::{LabelPairs, Line};

/// A metric family's type, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// A monotonic counter.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// `_bucket{le}`, `_sum` and `_count` series.
    Histogram,
    /// `{quantile}`, `_sum` and `_count` series.
    Summary,
    /// No `# TYPE` line, or `untyped`.
    Untyped,
}

impl MetricType {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "summary" => Self::Summary,
            "untyped" => Self::Untyped,
            _ => return None,
        })
    }

    /// The name used in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
            Self::Untyped => "untyped",
        }
    }
}

/// Prometheus's per-scrape limits; 0 means no limit. A breach fails the whole
/// scrape, as in Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most samples in one payload (`sample_limit`).
    pub sample_limit: usize,
    /// Most labels on one sample, its name not counted (`label_limit`).
    pub label_limit: usize,
    /// Longest label name, in bytes (`label_name_length_limit`).
    pub label_name_length_limit: usize,
    /// Longest label value, in bytes, after unescaping (`label_value_length_limit`).
    pub label_value_length_limit: usize,
}

impl Limits {
    /// Generous defaults: a node_exporter payload on a large host has ~1,500
    /// samples with ≤ 20 short labels each.
    pub const DEFAULT: Self =
        Self { sample_limit: 50_000, label_limit: 64, label_name_length_limit: 256, label_value_length_limit: 4096 };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One sample, borrowing from the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// Metric name.
    pub name: &'a str,
    /// Raw text between the braces, already validated; empty without braces.
    raw_labels: &'a str,
    /// The name and label block as written.
    series: &'a str,
    /// Value; NaN and ±Inf included.
    pub value: f64,
    /// Timestamp in milliseconds since the epoch, if the exporter gave one.
    pub timestamp_ms: Option<i64>,
    /// 1-based line number in the payload.
    pub line: usize,
}

impl<'a> Sample<'a> {
    /// The text between the braces as written (validated): with the name,
    /// what identifies the series within one target's payloads.
    pub fn raw_labels(&self) -> &'a str {
        self.raw_labels
    }

    /// The name and the label block as written (`name{a="1"}`): the text
    /// [`KnownSeries`] remembers.
    pub fn series(&self) -> &'a str {
        self.series
    }

    /// The sample's labels in the order written, values unescaped.
    pub fn labels(&self) -> impl Iterator<Item = (&'a str, Cow<'a, str>)> + 'a {
        LabelPairs::new(self.raw_labels).map(|(name, raw)| (name, line::unescape(raw)))
    }

    /// The value of one label, unescaped.
    pub fn label(&self, name: &str) -> Option<Cow<'a, str>> {
        LabelPairs::new(self.raw_labels).find(|(n, _)| *n == name).map(|(_, raw)| line::unescape(raw))
    }
}

/// A parsed payload.
#[derive(Debug, Clone, Default)]
pub struct Payload<'a> {
    /// Samples in payload order.
    pub samples: Vec<Sample<'a>>,
    /// `# TYPE` lines in payload order: a scrape reads them only for series
    /// it has not seen before, so they are indexed on that first read.
    types: Vec<(&'a str, MetricType)>,
    types_by_name: std::cell::OnceCell<HashMap<&'a str, MetricType>>,
    /// The limits its series were checked under.
    limits: Limits,
    /// The [`KnownSeries::id`] of the known series it lists exactly, in order.
    known_id: Option<u64>,
}

impl Payload<'_> {
    /// The [`KnownSeries::id`] of the known series this payload was parsed
    /// with, if it lists exactly those series in the same order: a cache
    /// keyed by that id needs no comparison to know its series.
    pub fn known_id(&self) -> Option<u64> {
        self.known_id
    }

    /// The type of the family a sample name belongs to: the name itself, or
    /// for histograms and summaries the name without `_bucket`/`_sum`/`_count`.
    pub fn metric_type(&self, sample_name: &str) -> MetricType {
        // Built in payload order: a family typed twice keeps its last type.
        let types = self.types_by_name.get_or_init(|| self.types.iter().copied().collect());
        if let Some(t) = types.get(sample_name) {
            return *t;
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(family) = sample_name.strip_suffix(suffix) {
                match types.get(family) {
                    Some(t @ MetricType::Histogram) => return *t,
                    Some(t @ MetricType::Summary) if suffix != "_bucket" => return *t,
                    _ => {}
                }
            }
        }
        MetricType::Untyped
    }
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The line does not follow the format; the text says what was expected.
    #[error("{0}")]
    Syntax(&'static str),
    /// A value or timestamp that is not a number.
    #[error("invalid {what} {text:?}")]
    Number {
        /// `value` or `timestamp`.
        what: &'static str,
        /// The text found.
        text: String,
    },
    /// An unknown `# TYPE`.
    #[error("unknown metric type {0:?}")]
    UnknownType(String),
    /// A label name given twice in one sample.
    #[error("label name {0:?} is not unique")]
    DuplicateLabel(String),
    /// `sample_limit` exceeded.
    #[error("sample_limit exceeded ({0})")]
    SampleLimit(usize),
    /// `label_limit` exceeded.
    #[error("label_limit exceeded ({count} labels, limit {limit})")]
    LabelLimit {
        /// Labels on the sample.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// `label_name_length_limit` exceeded.
    #[error("label_name_length_limit exceeded (name of {length} bytes, limit {limit})")]
    LabelNameLength {
        /// Length found.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// `label_value_length_limit` exceeded.
    #[error("label_value_length_limit exceeded (value of {length} bytes, limit {limit})")]
    LabelValueLength {
        /// Length found.
        length: usize,
        /// The limit.
        limit: usize,
    },
}

/// A parse failure, naming the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// The line's text, cut to 120 characters.
    pub text: String,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {:?}", self.line, self.kind, self.text)
    }
}

impl std::error::Error for ParseError {}

impl ParseError {
    fn new(line_no: usize, line: &str, kind: ErrorKind) -> Self {
        let text = match line.char_indices().nth(120) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_string(),
        };
        Self { line: line_no, text, kind }
    }
}

/// Parses a whole payload, enforcing `limits`.
///
/// # Errors
/// [`ParseError`] at the first malformed line or breached limit; a payload
/// is used entirely or not at all.
pub fn parse<'a>(text: &'a str, limits: &Limits) -> Result<Payload<'a>, ParseError> {
    parse_known(text, limits, &KnownSeries::default())
}

/// [`parse`], with the series of an earlier payload of the same target:
/// while the payload lists them in the same order (exporters write their
/// metrics in a fixed order), a sample line whose series is the known one at
/// its position is not lexed or checked again; only its value and timestamp
/// are read. The result is what [`parse`] gives, errors included.
///
/// # Errors
/// As [`parse`].
pub fn parse_known<'a>(text: &'a str, limits: &Limits, known: &KnownSeries) -> Result<Payload<'a>, ParseError> {
    let mut payload = Payload { samples: Vec::with_capacity(text.len() / 64), limits: *limits, ..Payload::default() };
    // Checked under other limits, a known series must be checked again.
    let known = if known.limits == *limits { known } else { &KnownSeries::default() };
    let mut all_known = true;
    for (index, raw_line) in lines(text).enumerate() {
        let line_no = index + 1;
        // A CR before the LF stays in the line, as in Prometheus: after a
        // value it is an error; in a comment or HELP text it is text.
        let line_text = raw_line;
        let fail = |kind| ParseError::new(line_no, line_text, kind);
        if let Some(Line::Sample { name, raw_labels, series, value, timestamp_ms }) =
            known.sample_line(payload.samples.len(), line_text)
        {
            if limits.sample_limit > 0 && payload.samples.len() >= limits.sample_limit {
                return Err(fail(ErrorKind::SampleLimit(limits.sample_limit)));
            }
            payload.samples.push(Sample { name, raw_labels, series, value, timestamp_ms, line: line_no });
            continue;
        }
        let line = line::parse_line(line_text).map_err(fail)?;
        all_known &= !matches!(line, Line::Sample { .. });
        match line {
            Line::Blank | Line::Comment | Line::Help => {}
            Line::Type { name, type_text } => {
                let kind =
                    MetricType::parse(type_text).ok_or_else(|| fail(ErrorKind::UnknownType(type_text.into())))?;
                payload.types.push((name, kind));
            }
            Line::Sample { name, raw_labels, series, value, timestamp_ms } => {
                // Prometheus holds the name as the value of `__name__`.
                if limits.label_value_length_limit > 0 && name.len() > limits.label_value_length_limit {
                    let limit = limits.label_value_length_limit;
                    return Err(fail(ErrorKind::LabelValueLength { length: name.len(), limit }));
                }
                check_labels(raw_labels, limits).map_err(fail)?;
                if limits.sample_limit > 0 && payload.samples.len() >= limits.sample_limit {
                    return Err(fail(ErrorKind::SampleLimit(limits.sample_limit)));
                }
                payload.samples.push(Sample { name, raw_labels, series, value, timestamp_ms, line: line_no });
            }
        }
    }
    let listed = all_known && !known.is_empty() && payload.samples.len() == known.len();
    payload.known_id = listed.then_some(known.id);
    Ok(payload)
}

/// `text.split(byte as char)` for an ASCII `byte`, found by the `memchr`
/// crate's SIMD search: core's scalar `memchr` behind `split('\n')` was ~5 % of
/// fleetscrape's CPU at 1,000 targets (BENCHMARKS.md). The store splits its
/// scrape log's arrays with it too.
///
/// # Panics
/// When `byte` is not ASCII (a piece could end inside a character).
pub fn split_ascii(text: &str, byte: u8) -> SplitAscii<'_> {
    assert!(byte.is_ascii(), "split_ascii splits on ASCII bytes only");
    SplitAscii { text, start: 0, found: memchr::memchr_iter(byte, text.as_bytes()), done: false }
}

fn lines(text: &str) -> SplitAscii<'_> {
    split_ascii(text, b'\n')
}

/// The pieces of [`split_ascii`].
#[derive(Debug)]
pub struct SplitAscii<'a> {
    text: &'a str,
    start: usize,
    found: memchr::Memchr<'a>,
    done: bool,
}

impl<'a> Iterator for SplitAscii<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let piece = match self.found.next() {
            // An ASCII byte is a character of its own: both ends are boundaries.
            Some(end) => &self.text[self.start..end],
            None => {
                self.done = true;
                &self.text[self.start..]
            }
        };
        self.start += piece.len() + 1;
        Some(piece)
    }
}

/// Where a known series' parts lie in [`KnownSeries::text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
    name_len: u32,
    labels_start: u32,
    labels_end: u32,
}

/// The series of a payload that was parsed and checked, in order, under the
/// limits it was checked with: what [`parse_known`] may take as read. Built
/// only from a parsed [`Payload`], so a known series is always one the
/// parser accepted. Compact: one text buffer and 20 bytes a series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownSeries {
    text: String,
    spans: Vec<Span>,
    limits: Limits,
    id: u64,
}

/// Ids of what [`KnownSeries`] learn, unique in the process (0: nothing).
static NEXT_KNOWN_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl KnownSeries {
    /// The series of `payload`, in order.
    pub fn of(payload: &Payload<'_>) -> Self {
        let mut known = Self { limits: payload.limits, ..Self::default() };
        known.learn(payload);
        known
    }

    /// Replaces what is known by the series of `payload`.
    pub fn learn(&mut self, payload: &Payload<'_>) {
        self.text.clear();
        self.spans.clear();
        self.limits = payload.limits;
        self.id = NEXT_KNOWN_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for sample in &payload.samples {
            let series = sample.series;
            let start = self.text.len();
            let labels_start = if sample.raw_labels.is_empty() {
                if series.ends_with('}') { series.len() - 1 } else { series.len() }
            } else {
                // Both borrow the same line: the label block's offset in it.
                sample.raw_labels.as_ptr() as usize - series.as_ptr() as usize
            };
            self.text.push_str(series);
            let offset = |n: usize| u32::try_from(start + n).unwrap_or(u32::MAX);
            self.spans.push(Span {
                start: offset(0),
                end: offset(series.len()),
                name_len: u32::try_from(sample.name.len()).unwrap_or(u32::MAX),
                labels_start: u32::try_from(labels_start).unwrap_or(u32::MAX),
                labels_end: u32::try_from(labels_start + sample.raw_labels.len()).unwrap_or(u32::MAX),
            });
        }
        // Spans past u32 (a 4 GiB payload) would be wrong: know nothing then.
        if u32::try_from(self.text.len()).is_err() {
            self.spans.clear();
        }
    }

    /// Series known.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// What was learnt last, as a number unique in the process: see
    /// [`Payload::known_id`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether no series is known.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The `index`-th series as written (`name{labels}`).
    pub fn text(&self, index: usize) -> Option<&str> {
        self.spans.get(index).map(|span| &self.text[span.start as usize..span.end as usize])
    }

    /// `line` as a sample of the `index`-th known series, if it is one.
    fn sample_line<'a>(&self, index: usize, line: &'a str) -> Option<Line<'a>> {
        let span = self.spans.get(index)?;
        let known = &self.text[span.start as usize..span.end as usize];
        let labels = span.labels_start as usize..span.labels_end as usize;
        line::known_sample(line, known, span.name_len as usize, labels)
    }
}

/// Label limits and uniqueness; the label block's syntax is already checked.
fn check_labels(raw_labels: &str, limits: &Limits) -> Result<(), ErrorKind> {
    let mut seen: [&str; 16] = [""; 16];
    let mut count = 0;
    for (name, raw_value) in LabelPairs::new(raw_labels) {
        if name == "__name__" {
            return Err(ErrorKind::Syntax("the metric name must not be given as a __name__ label"));
        }
        // Labels are few; a linear scan of the ones seen beats hashing. Past 16
        // (rare) fall back to scanning the block again.
        let duplicate = if count < seen.len() {
            seen[..count].contains(&name)
        } else {
            LabelPairs::new(raw_labels).take(count).any(|(n, _)| n == name)
        };
        if duplicate {
            return Err(ErrorKind::DuplicateLabel(name.to_string()));
        }
        if count < seen.len() {
            seen[count] = name;
        }
        count += 1;
        if limits.label_name_length_limit > 0 && name.len() > limits.label_name_length_limit {
            return Err(ErrorKind::LabelNameLength { length: name.len(), limit: limits.label_name_length_limit });
        }
        let length = line::unescape(raw_value).len();
        if limits.label_value_length_limit > 0 && length > limits.label_value_length_limit {
            return Err(ErrorKind::LabelValueLength { length, limit: limits.label_value_length_limit });
        }
    }
    if limits.label_limit > 0 && count > limits.label_limit {
        return Err(ErrorKind::LabelLimit { count, limit: limits.label_limit });
    }
    Ok(())
}

/// A label value escaped for the text format (`\\`, `\"`, `\n`): the
/// inverse of what [`Sample::labels`] undoes. Borrows when nothing needs it.
pub fn escape_label_value(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(value);
    }
    std::borrow::Cow::Owned(value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

pub mod check;

#[cfg(test)]
mod tests;
