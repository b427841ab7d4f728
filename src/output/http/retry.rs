//! What a receiver's answer means, and how long to wait before the next try.
//!
//! Nothing is ever dropped: a batch is retried until the receiver takes it (or the command
//! stops, and the next run sends it again). What differs is the pace:
//! * 2xx: delivered.
//! * 408, 429 and 5xx, a refused or reset connection, a timeout: the receiver is busy or
//!   down. Retried with exponential backoff and full jitter from one second to a minute,
//!   or after `Retry-After` when the receiver says how long (capped at an hour).
//! * Any other status (400, 401, 403, 404, 413, a redirect): a setting to fix (the URL, a
//!   token, a body too large). Logged at error with the status and the body's first line,
//!   retried every 30 s doubling to 10 minutes, so a fixed setting is picked up without a
//!   restart and nothing is lost meanwhile.

use std::time::{Duration, SystemTime};

use crate::observe::metrics::Answered;

const FIRST: Duration = Duration::from_secs(1);
const MOST: Duration = Duration::from_secs(60);
const REFUSED_FIRST: Duration = Duration::from_secs(30);
const REFUSED_MOST: Duration = Duration::from_secs(600);
/// The longest `Retry-After` honoured as given.
const RETRY_AFTER_MOST: Duration = Duration::from_secs(3600);

/// A request's outcome, as the retry loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again; `after` is the receiver's own `Retry-After`, when it sent one.
    Busy {
        reason: String,
        after: Option<Duration>,
    },
    /// A setting to fix; tried again slowly.
    Refused {
        reason: String,
    },
    /// No answer at all (connection refused or reset, timeout).
    NoAnswer {
        reason: String,
    },
}

impl Verdict {
    /// Classifies an answer: its status, `Retry-After` and the first line of its body.
    pub fn of_status(status: u16, retry_after: Option<&str>, first_line: &str) -> Self {
        let reason = if first_line.is_empty() {
            format!("{status} {}", canonical(status))
        } else {
            format!("{status} {}: {first_line}", canonical(status))
        };
        match status {
            200..=299 => Verdict::Delivered,
            408 | 429 | 500..=599 => Verdict::Busy {
                reason,
                after: retry_after.and_then(|v| parse_retry_after(v, SystemTime::now())),
            },
            _ => Verdict::Refused { reason },
        }
    }

    pub fn answered(&self) -> Answered {
        match self {
            Verdict::Delivered => Answered::Ok,
            Verdict::Busy { .. } => Answered::Transient,
            Verdict::Refused { .. } => Answered::Refused,
            Verdict::NoAnswer { .. } => Answered::NoAnswer,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::Busy { reason, .. }
            | Verdict::Refused { reason }
            | Verdict::NoAnswer { reason } => reason,
        }
    }
}

fn canonical(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110), from `now`; capped at an hour.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(RETRY_AFTER_MOST))
}

/// Successive waits of one request: exponential with full jitter (AWS's "Exponential
/// Backoff And Jitter"), so many requests failing together do not come back together.
#[derive(Debug, Default)]
pub struct Backoff {
    busy: u32,
    refused: u32,
}

impl Backoff {
    /// The wait before the next try after `verdict`.
    pub fn next(&mut self, verdict: &Verdict) -> Duration {
        match verdict {
            Verdict::Delivered => Duration::ZERO,
            Verdict::Busy {
                after: Some(after), ..
            } => *after,
            Verdict::Busy { .. } | Verdict::NoAnswer { .. } => {
                let cap = step(FIRST, MOST, self.busy);
                self.busy += 1;
                jitter(cap)
            }
            Verdict::Refused { .. } => {
                let cap = step(REFUSED_FIRST, REFUSED_MOST, self.refused);
                self.refused += 1;
                // At least half the step: a setting to fix is not worth hammering.
                cap / 2 + jitter(cap / 2)
            }
        }
    }
}

fn step(first: Duration, most: Duration, n: u32) -> Duration {
    first.saturating_mul(1 << n.min(16)).min(most)
}

fn jitter(cap: Duration) -> Duration {
    // At least 100 ms: a refused connection answers at once.
    Duration::from_millis(fastrand::u64(100..=cap.as_millis().max(100) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_sorted_by_what_they_mean() {
        assert_eq!(Verdict::of_status(204, None, ""), Verdict::Delivered);
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(Verdict::of_status(s, None, ""), Verdict::Busy { .. }),
                "{s}"
            );
        }
        for s in [301, 400, 401, 403, 404, 413] {
            assert!(
                matches!(Verdict::of_status(s, None, ""), Verdict::Refused { .. }),
                "{s}"
            );
        }
        let v = Verdict::of_status(401, None, "invalid token");
        assert_eq!(v.reason(), "401 Unauthorized: invalid token");
        let v = Verdict::of_status(429, Some("7"), "");
        assert_eq!(
            v,
            Verdict::Busy {
                reason: "429 Too Many Requests".into(),
                after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn retry_after_in_seconds_or_a_date_capped_at_an_hour() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("86400", now), Some(RETRY_AFTER_MOST));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_grows_within_its_caps() {
        let mut b = Backoff::default();
        let busy = Verdict::NoAnswer {
            reason: "refused".into(),
        };
        for n in 0..20 {
            let wait = b.next(&busy);
            assert!(wait >= Duration::from_millis(100), "{n}: {wait:?}");
            assert!(wait <= step(FIRST, MOST, n).max(Duration::from_millis(100)));
        }
        let refused = Verdict::Refused {
            reason: "403".into(),
        };
        let first = b.next(&refused);
        assert!(
            first >= REFUSED_FIRST / 2 && first <= REFUSED_FIRST,
            "{first:?}"
        );
        for _ in 0..20 {
            assert!(b.next(&refused) <= REFUSED_MOST);
        }
    }
}
