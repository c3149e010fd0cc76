//! The parser's own oracle, for the fuzz target (`fuzz/`) and the corpus
//! tests: what it accepts it must read back the same from its own rendering.

use crate::{Limits, Payload, escape_label_value, parse};

/// Parses `text`; if it is accepted, renders every sample back from what was
/// parsed (name, unescaped labels re-escaped, value, timestamp) and parses
/// that again: the two must agree sample for sample. A rejected payload
/// passes (rejecting is allowed; panicking is not, and the caller sees it).
///
/// # Errors
/// A description of the first disagreement.
pub fn round_trip(text: &str, limits: &Limits) -> Result<(), String> {
    let Ok(first) = parse(text, limits) else { return Ok(()) };
    let rendered = render(&first);
    let second = parse(&rendered, limits).map_err(|e| format!("its own rendering is rejected: {e}\n{rendered}"))?;
    if first.samples.len() != second.samples.len() {
        return Err(format!("{} samples, {} after a round trip", first.samples.len(), second.samples.len()));
    }
    for (a, b) in first.samples.iter().zip(&second.samples) {
        let same_value = a.value.to_bits() == b.value.to_bits() || (a.value.is_nan() && b.value.is_nan());
        let labels_a: Vec<_> = a.labels().collect();
        let labels_b: Vec<_> = b.labels().collect();
        if a.name != b.name || !same_value || a.timestamp_ms != b.timestamp_ms || labels_a != labels_b {
            return Err(format!("line {}: {a:?} {labels_a:?} read back as {b:?} {labels_b:?}", a.line));
        }
    }
    Ok(())
}

/// The samples of `payload` in the text format, one line each.
pub fn render(payload: &Payload<'_>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for sample in &payload.samples {
        out.push_str(sample.name);
        let labels: Vec<String> =
            sample.labels().map(|(name, value)| format!("{name}=\"{}\"", escape_label_value(&value))).collect();
        if !labels.is_empty() {
            let _ = write!(out, "{{{}}}", labels.join(","));
        }
        let value = match sample.value {
            v if v.is_nan() => "NaN".to_string(),
            v if v == f64::INFINITY => "+Inf".to_string(),
            v if v == f64::NEG_INFINITY => "-Inf".to_string(),
            v => format!("{v:?}"),
        };
        let _ = write!(out, " {value}");
        if let Some(ms) = sample.timestamp_ms {
            let _ = write!(out, " {ms}");
        }
        out.push('\n');
    }
    out
}
