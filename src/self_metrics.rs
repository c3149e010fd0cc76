//! fleetscrape's own metrics (`/metrics`), in one registry.
//!
//! Each family is declared once, as a [`Family`] constant beside the
//! component that owns its counters (name, help, type and label names), and
//! that component implements [`Collect`] to write its samples. One
//! [`Encoder`] renders them all in the Prometheus text format 0.0.4. Adding
//! a counter is one edit in one module: the counter, its family, and a line
//! in that module's `collect`.
//!
//! A family's label names are an array whose length is part of its type, so a
//! sample with a missing or extra label value does not compile.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::exposition::escape_label_value;

/// A family's type (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (reset at restart); read with `rate()`.
    Counter,
    /// A value now.
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// One metric family: its name, help, type and the names of its `N` labels.
#[derive(Debug)]
pub struct Family<const N: usize> {
    /// The metric name, `fleetscrape_…` (`_total` for counters).
    pub name: &'static str,
    /// One sentence for `# HELP`.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Label names, in the order samples give their values.
    pub labels: [&'static str; N],
}

impl<const N: usize> Family<N> {
    /// A counter family.
    pub const fn counter(name: &'static str, help: &'static str, labels: [&'static str; N]) -> Self {
        Self { name, help, kind: Kind::Counter, labels }
    }

    /// A gauge family.
    pub const fn gauge(name: &'static str, help: &'static str, labels: [&'static str; N]) -> Self {
        Self { name, help, kind: Kind::Gauge, labels }
    }
}

/// A counter's value as a sample.
pub fn value_of(counter: &AtomicU64) -> f64 {
    counter.load(Ordering::Relaxed) as f64
}

/// A counter of microseconds as a sample in seconds.
pub fn seconds_of_micros(counter: &AtomicU64) -> f64 {
    value_of(counter) / 1e6
}

/// A component that reports metrics: writes each of its families once.
pub trait Collect {
    /// Writes this component's families and samples.
    fn collect(&self, encoder: &mut Encoder);
}

/// Renders families in the text format; each family's header is written
/// once, and a family started twice is a programming error (it panics in
/// debug builds, where the tests run). It also sums each family's samples
/// over their labels ([`Encoder::total`]).
#[derive(Debug, Default)]
pub struct Encoder {
    out: String,
    started: BTreeSet<&'static str>,
    totals: BTreeMap<&'static str, f64>,
}

impl Encoder {
    /// Writes `family`'s `# HELP` and `# TYPE` lines; its samples follow
    /// through the returned writer.
    pub fn family<const N: usize>(&mut self, family: &'static Family<N>) -> Samples<'_, N> {
        debug_assert!(self.started.insert(family.name), "family {} written twice", family.name);
        let _ = writeln!(self.out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(self.out, "# TYPE {} {}", family.name, family.kind.as_str());
        Samples { out: &mut self.out, totals: &mut self.totals, family }
    }

    /// A family of one sample without labels.
    pub fn single(&mut self, family: &'static Family<0>, value: f64) {
        self.family(family).sample([], value);
    }

    /// The sum of the family `name`'s samples over their labels; `None`
    /// when it has none (e.g. remote_write's families with no receiver).
    pub fn total(&self, name: &str) -> Option<f64> {
        self.totals.get(name).copied()
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Writes the samples of one family.
#[derive(Debug)]
pub struct Samples<'a, const N: usize> {
    out: &'a mut String,
    totals: &'a mut BTreeMap<&'static str, f64>,
    family: &'static Family<N>,
}

impl<const N: usize> Samples<'_, N> {
    /// One sample: a value per label name, in the family's order.
    pub fn sample(&mut self, values: [&str; N], value: f64) -> &mut Self {
        self.out.push_str(self.family.name);
        if N > 0 {
            self.out.push('{');
            for (i, (name, value)) in self.family.labels.iter().zip(values).enumerate() {
                let comma = if i == 0 { "" } else { "," };
                let _ = write!(self.out, "{comma}{name}=\"{}\"", escape_label_value(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", Number(value));
        *self.totals.entry(self.family.name).or_default() += value;
        self
    }
}

/// A sample value as the text format spells it: `+Inf`, `-Inf`, `NaN`,
/// else the shortest decimal that reads back the same.
struct Number(f64);

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            v if v == f64::INFINITY => f.write_str("+Inf"),
            v if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            v => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static PLAIN: Family<0> = Family::counter("test_events_total", "Events.", []);
    static LABELLED: Family<2> = Family::gauge("test_level", "A level.", ["queue", "reason"]);

    #[test]
    fn renders_headers_once_and_samples_with_escaped_labels() {
        let mut encoder = Encoder::default();
        encoder.single(&PLAIN, 3.0);
        encoder.family(&LABELLED).sample(["a", "say \"hi\"\n"], 0.5).sample(["b", ""], f64::INFINITY);
        assert_eq!(
            encoder.finish(),
            "# HELP test_events_total Events.\n# TYPE test_events_total counter\ntest_events_total 3\n\
             # HELP test_level A level.\n# TYPE test_level gauge\n\
             test_level{queue=\"a\",reason=\"say \\\"hi\\\"\\n\"} 0.5\ntest_level{queue=\"b\",reason=\"\"} +Inf\n"
        );
    }

    #[test]
    fn totals_sum_a_familys_samples_over_their_labels() {
        let mut encoder = Encoder::default();
        encoder.single(&PLAIN, 3.0);
        encoder.family(&LABELLED).sample(["a", "x"], 0.5).sample(["b", "y"], 2.0);
        assert_eq!(encoder.total("test_events_total"), Some(3.0));
        assert_eq!(encoder.total("test_level"), Some(2.5));
        let mut empty = Encoder::default();
        empty.family(&LABELLED);
        assert_eq!(empty.total("test_level"), None, "no sample, no total");
    }

    #[test]
    fn a_family_with_no_samples_still_has_its_header() {
        let mut encoder = Encoder::default();
        encoder.family(&LABELLED);
        assert_eq!(encoder.finish(), "# HELP test_level A level.\n# TYPE test_level gauge\n");
    }

    #[test]
    fn special_values_are_spelled_as_prometheus_reads_them() {
        let spelled: Vec<String> =
            [f64::NEG_INFINITY, f64::NAN, 0.1, 1e21].iter().map(|v| Number(*v).to_string()).collect();
        assert_eq!(spelled, ["-Inf", "NaN", "0.1", "1000000000000000000000"]);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "family test_events_total written twice")]
    fn a_family_written_twice_is_caught() {
        let mut encoder = Encoder::default();
        encoder.single(&PLAIN, 1.0);
        encoder.single(&PLAIN, 2.0);
    }
}
