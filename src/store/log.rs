//! The scrape log: one row per stored scrape, its values packed into a JSONB
//! array indexed by each series' slot (SQLite's binary JSON, read by the
//! `metric_samples` view with `->` and `->>`, SQLite ≥ 3.45). A block's rows
//! live in one of three tables (block mod 3), emptied whole once the block is
//! written as change points.
//!
//! JSONB (<https://sqlite.org/jsonb.html>): each element is a header byte
//! (low nibble: type; high nibble: payload size 0–11, or 12–15 for a size in
//! the next 1, 2, 4 or 8 bytes, big-endian) then the payload; numbers are
//! their JSON text.

/// Tables in the rotation.
pub const TABLES: i64 = 3;

const NULL: u8 = 0x0;
const FALSE: u8 = 0x2;
const INT: u8 = 0x3;
const FLOAT: u8 = 0x5;
const ARRAY: u8 = 0xB;

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

/// Encodes a scrape's slots as a JSONB array: NaN as null, absent as false.
pub fn encode(slots: &[Slot], out: &mut Vec<u8>) {
    out.clear();
    // The header is written once the payload's size is known: 5 bytes kept.
    out.extend_from_slice(&[0; 5]);
    let mut ints = itoa::Buffer::new();
    let mut floats = ryu::Buffer::new();
    for slot in slots {
        match *slot {
            None => out.push(FALSE),
            Some(v) if v.is_nan() => out.push(NULL),
            Some(v) if v.is_infinite() => element(out, FLOAT, if v > 0.0 { b"9e999" } else { b"-9e999" }),
            Some(v) if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 => {
                element(out, INT, ints.format(v as i64).as_bytes());
            }
            Some(v) => element(out, FLOAT, floats.format_finite(v).as_bytes()),
        }
    }
    let payload = out.len() - 5;
    let header = header(ARRAY, payload);
    let start = 5 - header.len();
    out[start..5].copy_from_slice(&header);
    out.drain(..start);
}

fn element(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.extend_from_slice(&header(kind, text.len()));
    out.extend_from_slice(text);
}

/// The smallest header for a payload of `size` bytes.
fn header(kind: u8, size: usize) -> Vec<u8> {
    match size {
        0..=11 => vec![(size as u8) << 4 | kind],
        12..=0xFF => vec![0xC0 | kind, size as u8],
        0x100..=0xFFFF => {
            let [hi, lo] = (size as u16).to_be_bytes();
            vec![0xD0 | kind, hi, lo]
        }
        _ => {
            let mut h = vec![0xE0 | kind];
            h.extend_from_slice(&(size as u32).to_be_bytes());
            h
        }
    }
}

/// Why a log row could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("malformed scrape log entry at byte {at}")]
pub struct Malformed {
    /// Where.
    pub at: usize,
}

/// Decodes what [`encode`] wrote.
///
/// # Errors
/// [`Malformed`] for anything else.
pub fn decode(bytes: &[u8]) -> Result<Vec<Slot>, Malformed> {
    let (kind, size, mut at) = read_header(bytes, 0)?;
    if kind != ARRAY || at + size != bytes.len() {
        return Err(Malformed { at: 0 });
    }
    let mut slots = Vec::new();
    while at < bytes.len() {
        let (kind, size, start) = read_header(bytes, at)?;
        let text = bytes.get(start..start + size).ok_or(Malformed { at })?;
        slots.push(match kind {
            FALSE => None,
            NULL => Some(f64::NAN),
            INT | FLOAT => {
                let text = std::str::from_utf8(text).map_err(|_| Malformed { at })?;
                Some(text.parse::<f64>().map_err(|_| Malformed { at })?)
            }
            _ => return Err(Malformed { at }),
        });
        at = start + size;
    }
    Ok(slots)
}

/// (type, payload size, payload start) of the element at `at`.
fn read_header(bytes: &[u8], at: usize) -> Result<(u8, usize, usize), Malformed> {
    let first = *bytes.get(at).ok_or(Malformed { at })?;
    let kind = first & 0x0F;
    let extra = match first >> 4 {
        small @ 0..=11 => return Ok((kind, usize::from(small), at + 1)),
        12 => 1,
        13 => 2,
        14 => 4,
        _ => 8,
    };
    let size = bytes.get(at + 1..at + 1 + extra).ok_or(Malformed { at })?;
    let size = size.iter().fold(0_usize, |n, b| n << 8 | usize::from(*b));
    Ok((kind, size, at + 1 + extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_in_sqlite(slots: &[Slot]) -> Vec<(Option<String>, Option<f64>)> {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let mut blob = Vec::new();
        encode(slots, &mut blob);
        (0..slots.len() + 1)
            .map(|i| {
                db.query_row("SELECT ?1 -> ?2, CAST(?1 ->> ?2 AS REAL)", rusqlite::params![blob, i as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn sqlite_reads_every_kind_of_slot_as_the_view_does() {
        let slots = [Some(1.5), Some(3.0), None, Some(f64::NAN), Some(f64::INFINITY), Some(-2.5e-7), Some(1e300)];
        let read = roundtrip_in_sqlite(&slots);
        assert_eq!(read[0], (Some("1.5".into()), Some(1.5)));
        assert_eq!(read[1], (Some("3".into()), Some(3.0)));
        assert_eq!(read[2].0.as_deref(), Some("false"), "absent: filtered out by the view");
        assert_eq!(read[3], (Some("null".into()), None), "NaN reads as NULL, as in every other table");
        assert_eq!(read[4].1, Some(f64::INFINITY));
        assert_eq!(read[5].1, Some(-2.5e-7));
        assert_eq!(read[6].1, Some(1e300));
        assert_eq!(read[7], (None, None), "a slot past the end (a series created later) is no row");
    }

    #[test]
    fn decode_gives_back_what_encode_wrote_at_every_header_size() {
        for len in [0, 1, 2, 5, 11, 12, 300, 5_000] {
            let slots: Vec<Slot> = (0..len)
                .map(|i| match i % 5 {
                    0 => None,
                    1 => Some(f64::from(i) * 0.1),
                    2 => Some(f64::from(i)),
                    3 => Some(-f64::from(i) * 1e20),
                    _ => Some(f64::NEG_INFINITY),
                })
                .collect();
            let mut blob = Vec::new();
            encode(&slots, &mut blob);
            let back = decode(&blob).unwrap();
            assert_eq!(format!("{back:?}"), format!("{slots:?}"), "{len} slots");
            let db = rusqlite::Connection::open_in_memory().unwrap();
            let valid: i64 = db.query_row("SELECT json_valid(?1, 8)", [&blob], |r| r.get(0)).unwrap();
            assert_eq!(valid, 1, "SQLite accepts the blob as JSONB ({len} slots)");
        }
        let mut blob = Vec::new();
        encode(&[Some(f64::NAN)], &mut blob);
        assert!(decode(&blob).unwrap()[0].is_some_and(f64::is_nan));
    }

    #[test]
    fn anything_else_is_malformed_not_a_panic() {
        for bad in [&b""[..], b"\x0b\x00", b"\xcb\x05\x13", b"\x1b\x17", b"\xfb"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
