//! Wall-clock time as the database stores it: epoch seconds with millisecond
//! precision. A leaf, so that discovery, scraping, the store and remote_write
//! read one clock (the scheduler's own, testable clock is `scrape::schedule`).

/// Now, in epoch seconds to the millisecond (0 before 1970, which never happens).
pub fn now_seconds() -> f64 {
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    millis as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_has_millisecond_precision_and_is_after_2020() {
        let now = super::now_seconds();
        assert_eq!((now * 1000.0).round() / 1000.0, now);
        assert!(now > 1_577_836_800.0);
    }
}
