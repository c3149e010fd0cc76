//! Any bytes, as a scraped body: decoded (gzip, under a size limit), parsed
//! with the default limits, and what is accepted must read back the same
//! from its own rendering; parsed with the known series of an earlier
//! payload (itself, and its first half before its second), it must give what
//! a plain parse gives. A panic or a disagreement is a crash.

#![no_main]

use fleetscrape_exposition::{Limits, check, decode_body};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // As served plain: the scraper rejects a body that is not UTF-8.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(disagreement) = check::round_trip(text, &Limits::DEFAULT) {
            panic!("{disagreement}");
        }
        let mid = (0..=text.len() / 2).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        for (previous, current) in [(text, text), (&text[..mid], &text[mid..])] {
            if let Err(disagreement) = check::known_agrees(previous, current, &Limits::DEFAULT) {
                panic!("{disagreement}");
            }
        }
    }
    // As served gzipped: the decoder must stop at the limit, whatever the ratio.
    const LIMIT: usize = 1 << 20;
    if let Ok(text) = decode_body(data.to_vec(), Some("gzip"), LIMIT) {
        assert!(text.len() <= LIMIT, "decoded past the limit");
        if let Err(disagreement) = check::round_trip(&text, &Limits::DEFAULT) {
            panic!("{disagreement}");
        }
    }
});
