//! What the scraper remembers between intervals: which slot each instance was
//! last stored in, stickiness cookies, `auto` mode's fallbacks, per-instance
//! status for `/api/targets`, and counters for `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Serialize;

/// How an instance was last reached, for `/api/targets`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetStatus {
    /// `basic` or `asg`.
    pub role: String,
    /// Auto Scaling group.
    pub asg_name: Option<String>,
    /// `direct <address>` or `via_alb <listener> <target group>`.
    pub path: String,
    /// Epoch seconds of the last stored scrape.
    pub last_scrape: Option<f64>,
    /// Whether the last interval stored a payload.
    pub up: bool,
    /// Why not.
    pub reason: Option<String>,
    /// The last error seen.
    pub last_error: Option<String>,
}

/// Counters exported on `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Payloads stored, by path kind (`direct`, `via_alb`).
    pub scrapes_stored: BTreeMap<&'static str, u64>,
    /// Failed scrapes, by reason.
    pub scrape_failures: BTreeMap<String, u64>,
    /// Requests sent to listeners.
    pub alb_requests: u64,
    /// Payloads not attributed, by (target group, reason).
    pub unattributed: BTreeMap<(String, &'static str), u64>,
    /// Early discovery refreshes asked for.
    pub early_refreshes: u64,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<String, i64>,
    cookies: HashMap<(String, String), String>,
    fallback: HashMap<String, u32>,
    targets: BTreeMap<String, TargetStatus>,
    counters: Counters,
}

/// Shared scraper memory; every method takes the lock briefly.
#[derive(Debug, Default)]
pub struct ScrapeState(Mutex<Inner>);

impl ScrapeState {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Claims `slot` for `instance`; `false` if a payload is already stored in it.
    pub fn claim_slot(&self, instance: &str, slot: i64) -> bool {
        self.with(|s| match s.slots.get(instance) {
            Some(&last) if last >= slot => false,
            _ => {
                s.slots.insert(instance.to_string(), slot);
                true
            }
        })
    }

    /// Whether `slot` is already filled for `instance`.
    pub fn slot_filled(&self, instance: &str, slot: i64) -> bool {
        self.with(|s| s.slots.get(instance).is_some_and(|&last| last >= slot))
    }

    /// The stickiness cookie that reaches `instance` through `listener`.
    pub fn cookie(&self, listener: &str, instance: &str) -> Option<String> {
        self.with(|s| s.cookies.get(&(listener.to_string(), instance.to_string())).cloned())
    }

    /// Remembers a stickiness cookie.
    pub fn set_cookie(&self, listener: &str, instance: &str, cookie: String) {
        self.with(|s| s.cookies.insert((listener.to_string(), instance.to_string()), cookie));
    }

    /// `auto` mode: go through the listener for the next `intervals` intervals.
    pub fn set_fallback(&self, instance: &str, intervals: u32) {
        self.with(|s| s.fallback.insert(instance.to_string(), intervals));
    }

    /// `auto` mode: whether to skip the direct attempt this interval (counts down).
    pub fn use_fallback(&self, instance: &str) -> bool {
        self.with(|s| match s.fallback.get_mut(instance) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        })
    }

    /// Records an instance's status for `/api/targets`.
    pub fn set_status(&self, instance: &str, update: impl FnOnce(&mut TargetStatus)) {
        self.with(|s| update(s.targets.entry(instance.to_string()).or_default()));
    }

    /// Forgets instances no longer scraped.
    pub fn retain_targets(&self, keep: impl Fn(&str) -> bool) {
        self.with(|s| {
            s.targets.retain(|id, _| keep(id));
            s.fallback.retain(|id, _| keep(id));
            s.cookies.retain(|(_, id), _| keep(id));
        });
    }

    /// A copy of every instance's status.
    pub fn targets(&self) -> BTreeMap<String, TargetStatus> {
        self.with(|s| s.targets.clone())
    }

    /// Updates the counters.
    pub fn count(&self, update: impl FnOnce(&mut Counters)) {
        self.with(|s| update(&mut s.counters));
    }

    /// A copy of the counters.
    pub fn counters(&self) -> Counters {
        self.with(|s| s.counters.clone())
    }
}
