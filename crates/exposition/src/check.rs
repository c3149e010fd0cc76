//! The parser's own oracle, for the fuzz target (`fuzz/`) and the corpus
//! tests: what it accepts it must read back the same from its own rendering.

use crate::{KnownSeries, Limits, ParseError, Payload, escape_label_value, parse, parse_known};

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

/// Parses `current` as [`parse`] does, and as [`parse_known`] does with the
/// series of `previous` (nothing known if `previous` is rejected): the two
/// must give the same payload, sample for sample, or the same error.
///
/// # Errors
/// A description of the first disagreement.
pub fn known_agrees(previous: &str, current: &str, limits: &Limits) -> Result<(), String> {
    let known = parse(previous, limits).map(|p| KnownSeries::of(&p)).unwrap_or_default();
    same_outcome(&parse(current, limits), &parse_known(current, limits, &known))
}

/// Whether two parses of one text agree (NaN values compared by bits).
pub fn same_outcome(
    plain: &Result<Payload<'_>, ParseError>,
    known: &Result<Payload<'_>, ParseError>,
) -> Result<(), String> {
    match (plain, known) {
        (Err(a), Err(b)) if a == b => Ok(()),
        (Ok(a), Ok(b)) => {
            if a.types != b.types || a.samples.len() != b.samples.len() {
                return Err(format!(
                    "{} samples and {:?}, with known series {} and {:?}",
                    a.samples.len(),
                    a.types,
                    b.samples.len(),
                    b.types
                ));
            }
            for (x, y) in a.samples.iter().zip(&b.samples) {
                let same = (x.name, x.raw_labels, x.series, x.timestamp_ms, x.line)
                    == (y.name, y.raw_labels, y.series, y.timestamp_ms, y.line)
                    && x.value.to_bits() == y.value.to_bits();
                if !same {
                    return Err(format!("line {}: {x:?}, with known series {y:?}", x.line));
                }
            }
            Ok(())
        }
        (a, b) => Err(format!("{:?}, with known series {:?}", a.as_ref().err(), b.as_ref().err())),
    }
}
