//! Any bytes, as a scraped body: decoded (gzip, under a size limit), parsed
//! with the default limits, and what is accepted must read back the same
//! from its own rendering. A panic or a disagreement is a crash.

#![no_main]

use fleetscrape_exposition::{Limits, check, decode_body};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // As served plain: the scraper rejects a body that is not UTF-8.
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(disagreement) = check::round_trip(text, &Limits::DEFAULT)
    {
        panic!("{disagreement}");
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
