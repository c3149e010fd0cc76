//! The scrape log: one row per stored scrape, its values packed into a JSON
//! array indexed by each series' slot, read by the `metric_samples` view with
//! `json_extract` / `json_type` (SQLite ≥ 3.9: Grafana's plugin, and the
//! `sqlite3` shell of any current distribution). A block's rows live in one of
//! three tables (block mod 3), emptied whole once the block is written as
//! change points.
//!
//! Text, not SQLite's binary JSONB: as fast to read here (SQLite caches the
//! parse of a row's array across the extractions of one statement, ~1.5 µs
//! each either way on a 1,100-value array), about as large, and readable by
//! SQLite before 3.45 (Debian 12 and Amazon Linux 2023 ship 3.40).

/// Tables in the rotation.
pub const TABLES: i64 = 3;

/// The log table of `block`.
pub fn table(block: i64) -> &'static str {
    match block.rem_euclid(TABLES) {
        0 => "scrape_log_0",
        1 => "scrape_log_1",
        _ => "scrape_log_2",
    }
}

/// Every log table.
pub const ALL: [&str; 3] = ["scrape_log_0", "scrape_log_1", "scrape_log_2"];

/// One slot of a scrape: a value (NaN included) or absent.
pub type Slot = Option<f64>;

/// Encodes a scrape's slots as a JSON array: NaN as `null`, absent as
/// `false`, ±∞ as ±9e999 (SQLite reads it as ±∞, as Prometheus's text
/// format spells `+Inf`).
pub fn encode(slots: &[Slot], out: &mut String) {
    out.clear();
    out.push('[');
    let mut ints = itoa::Buffer::new();
    let mut floats = ryu::Buffer::new();
    for (i, slot) in slots.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match *slot {
            None => out.push_str("false"),
            Some(v) if v.is_nan() => out.push_str("null"),
            Some(v) if v.is_infinite() => out.push_str(if v > 0.0 { "9e999" } else { "-9e999" }),
            Some(v) if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 => out.push_str(ints.format(v as i64)),
            Some(v) => out.push_str(floats.format_finite(v)),
        }
    }
    out.push(']');
}

/// Why a log row could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("malformed scrape log entry: {0:?}")]
pub struct Malformed(pub String);

/// Decodes what [`encode`] wrote.
///
/// # Errors
/// [`Malformed`] for anything else.
pub fn decode(text: &str) -> Result<Vec<Slot>, Malformed> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| Malformed(text.chars().take(20).collect()))?;
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    fleetscrape_exposition::split_ascii(inner, b',')
        .map(|item| match item {
            "false" => Ok(None),
            "null" => Ok(Some(f64::NAN)),
            number => number.parse::<f64>().map(Some).map_err(|_| Malformed(number.to_string())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (`json_type`, `json_extract`) of every slot and one past the end, as
    /// the view reads them.
    fn read_in_sqlite(slots: &[Slot]) -> Vec<(Option<String>, Option<f64>)> {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let mut text = String::new();
        encode(slots, &mut text);
        (0..slots.len() + 1)
            .map(|i| {
                db.query_row(
                    "SELECT json_type(?1, '$[' || ?2 || ']'), CAST(json_extract(?1, '$[' || ?2 || ']') AS REAL)",
                    rusqlite::params![text, i as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn sqlite_reads_every_kind_of_slot_as_the_view_does() {
        let slots = [Some(1.5), Some(3.0), None, Some(f64::NAN), Some(f64::INFINITY), Some(-2.5e-7), Some(1e300)];
        let read = read_in_sqlite(&slots);
        assert_eq!(read[0], (Some("real".into()), Some(1.5)));
        assert_eq!(read[1], (Some("integer".into()), Some(3.0)));
        assert_eq!(read[2].0.as_deref(), Some("false"), "absent: filtered out by the view");
        assert_eq!(read[3], (Some("null".into()), None), "NaN reads as NULL, as in every other table");
        assert_eq!(read[4].1, Some(f64::INFINITY));
        assert_eq!(read[5].1, Some(-2.5e-7));
        assert_eq!(read[6].1, Some(1e300));
        assert_eq!(read[7], (None, None), "a slot past the end (a series created later) is no row");
    }

    #[test]
    fn decode_gives_back_what_encode_wrote() {
        for len in [0, 1, 2, 300, 5_000] {
            let slots: Vec<Slot> = (0..len)
                .map(|i| match i % 6 {
                    0 => None,
                    1 => Some(f64::from(i) * 0.1),
                    2 => Some(f64::from(i)),
                    3 => Some(-f64::from(i) * 1e20),
                    4 => Some(f64::MIN_POSITIVE),
                    _ => Some(f64::NEG_INFINITY),
                })
                .collect();
            let mut text = String::new();
            encode(&slots, &mut text);
            let back = decode(&text).unwrap();
            assert_eq!(format!("{back:?}"), format!("{slots:?}"), "{len} slots");
            let db = rusqlite::Connection::open_in_memory().unwrap();
            let valid: i64 = db.query_row("SELECT json_valid(?1)", [&text], |r| r.get(0)).unwrap();
            assert_eq!(valid, 1, "SQLite reads the text as JSON ({len} slots)");
        }
        let mut text = String::new();
        encode(&[Some(f64::NAN)], &mut text);
        assert!(decode(&text).unwrap()[0].is_some_and(f64::is_nan));
    }

    #[test]
    fn anything_else_is_malformed_not_a_panic() {
        for bad in ["", "[", "1,2", "[1,,2]", "[true]", "[\"x\"]", "[1;2]"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
