//! A failure that persists, in the log: once when it starts (or its reason
//! changes), then a reminder every [`REMINDER_INTERVAL`] while it lasts, and
//! once when it clears. Silence after the first line reads as "fixed"; a
//! line per attempt buries everything else.

/// How often a persisting failure is logged again (documented in the
/// README, "What fleetscrape tells you"): low enough not to flood, often enough that whoever
/// opens the log during an outage sees it.
pub const REMINDER_INTERVAL_SECONDS: f64 = 300.0;

/// What to log for one attempt of a failing operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Notice {
    /// It has just started failing, or fails for another reason: log it.
    New,
    /// The same failure, still: log a reminder, with how long it has lasted.
    Reminder {
        /// Seconds since it started failing.
        failing_for: f64,
    },
    /// The same failure, logged recently: nothing above debug.
    Quiet,
}

/// One operation's failure state, fed the outcome of every attempt (times
/// in epoch seconds, from the caller: pure, testable without a clock).
#[derive(Debug, Clone, Default)]
pub struct Reminder {
    /// Since when it fails, and why; `None` while it works.
    failing: Option<(f64, String)>,
    /// When a line about the failure was last logged.
    last_logged: f64,
}

impl Reminder {
    /// An attempt failed at `now` with `reason`.
    pub fn failed(&mut self, now: f64, reason: &str) -> Notice {
        match &mut self.failing {
            Some((_, last)) if last != reason => {
                *last = reason.to_string();
                self.last_logged = now;
                Notice::New
            }
            Some((since, _)) => {
                if now - self.last_logged >= REMINDER_INTERVAL_SECONDS {
                    self.last_logged = now;
                    Notice::Reminder { failing_for: now - *since }
                } else {
                    Notice::Quiet
                }
            }
            None => {
                self.failing = Some((now, reason.to_string()));
                self.last_logged = now;
                Notice::New
            }
        }
    }

    /// An attempt succeeded at `now`: how long it had been failing, if it was.
    pub fn succeeded(&mut self, now: f64) -> Option<f64> {
        self.failing.take().map(|(since, _)| now - since)
    }

    /// Since when it fails, and the latest reason; `None` while it works.
    pub fn failing(&self) -> Option<(f64, &str)> {
        self.failing.as_ref().map(|(since, reason)| (*since, reason.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_persisting_failure_is_logged_once_then_reminded_at_the_interval() {
        let mut r = Reminder::default();
        assert_eq!(r.failed(100.0, "refused"), Notice::New);
        let notices: Vec<Notice> = (1..=700).map(|s| r.failed(100.0 + f64::from(s), "refused")).collect();
        let reminders: Vec<f64> = notices
            .iter()
            .filter_map(|n| if let Notice::Reminder { failing_for } = n { Some(*failing_for) } else { None })
            .collect();
        assert_eq!(reminders, [300.0, 600.0], "one reminder per interval, with how long it lasted");
        assert_eq!(notices.iter().filter(|n| **n == Notice::New).count(), 0);
        assert_eq!(r.failing(), Some((100.0, "refused")));
    }

    #[test]
    fn another_reason_is_new_and_keeps_the_start() {
        let mut r = Reminder::default();
        r.failed(0.0, "refused");
        assert_eq!(r.failed(10.0, "denied"), Notice::New);
        assert_eq!(r.failed(20.0, "denied"), Notice::Quiet);
        assert_eq!(r.failing(), Some((0.0, "denied")), "still failing since the first attempt");
        // The reminder counts from the last line logged.
        assert_eq!(r.failed(309.0, "denied"), Notice::Quiet);
        assert_eq!(r.failed(310.0, "denied"), Notice::Reminder { failing_for: 310.0 });
    }

    #[test]
    fn success_clears_and_reports_the_outage() {
        let mut r = Reminder::default();
        assert_eq!(r.succeeded(5.0), None, "nothing to report while it works");
        r.failed(5.0, "refused");
        assert_eq!(r.succeeded(65.0), Some(60.0));
        assert_eq!(r.failing(), None);
        assert_eq!(r.failed(70.0, "refused"), Notice::New, "a new outage is new");
    }
}
