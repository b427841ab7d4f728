//! An event's time: its `eventTime`, or an aggregated event's `timeWindow.windowStart`, and
//! why the fallback was used when neither could be.

use super::scan::{skip_ws, string_end};
use crate::timestamp::{EventTime, TimeError};

/// Why an event's `eventTime` was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FallbackReason {
    /// No `eventTime` key at the event's top level (nor a `timeWindow.windowStart`).
    Missing,
    /// Not a string, or not an RFC 3339 time.
    Unreadable,
    /// Before 1970-01-01T00:00:00Z.
    Before1970,
    /// 2106-02-07T06:28:14Z or later: past Fluent Bit's u32 seconds, or one of its group
    /// markers (seconds 0xFFFFFFFE and 0xFFFFFFFF).
    BeyondHost,
}

impl From<TimeError> for FallbackReason {
    fn from(e: TimeError) -> Self {
        match e {
            TimeError::Unreadable => FallbackReason::Unreadable,
            TimeError::Before1970 => FallbackReason::Before1970,
            TimeError::BeyondHost => FallbackReason::BeyondHost,
        }
    }
}

/// Events stamped with the fallback time, by reason. Its `Display` is one phrase for a log
/// line: `2 without eventTime, 1 from 2106-02-07T06:28:14Z on (beyond Fluent Bit's range)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FallbackReasons {
    pub missing: u64,
    pub unreadable: u64,
    pub before_1970: u64,
    pub beyond_host: u64,
}

impl FallbackReasons {
    pub fn total(&self) -> u64 {
        self.missing + self.unreadable + self.before_1970 + self.beyond_host
    }

    pub(super) fn count(&mut self, reason: FallbackReason) {
        match reason {
            FallbackReason::Missing => self.missing += 1,
            FallbackReason::Unreadable => self.unreadable += 1,
            FallbackReason::Before1970 => self.before_1970 += 1,
            FallbackReason::BeyondHost => self.beyond_host += 1,
        }
    }
}

impl std::fmt::Display for FallbackReasons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            (self.missing, "without eventTime"),
            (self.unreadable, "with an unreadable eventTime"),
            (self.before_1970, "with an eventTime before 1970"),
            (
                self.beyond_host,
                "with an eventTime from 2106-02-07T06:28:14Z on (beyond Fluent Bit's range)",
            ),
        ];
        let mut first = true;
        for (n, what) in parts.into_iter().filter(|(n, _)| *n > 0) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{n} {what}")?;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// The time of an event: its `eventTime`, or for an aggregated event (CloudTrail's
/// `AwsAggregatedEvent`, a summary of a window of data events, which has no `eventTime`)
/// the start of its window, `timeWindow.windowStart`.
pub(super) fn event_time(json: &str) -> Result<EventTime, FallbackReason> {
    match find_event_time(json) {
        Ok(text) => Ok(EventTime::parse(text)?),
        Err(FallbackReason::Missing) => match window_start(json) {
            Some(text) => Ok(EventTime::parse(&text)?),
            None => Err(FallbackReason::Missing),
        },
        Err(reason) => Err(reason),
    }
}

/// `timeWindow.windowStart` of an event, when it has one. Parsed fully, since only events
/// without `eventTime` (rare) come here.
fn window_start(json: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Aggregated {
        #[serde(rename = "timeWindow")]
        time_window: Option<TimeWindow>,
    }
    #[derive(serde::Deserialize)]
    struct TimeWindow {
        #[serde(rename = "windowStart")]
        window_start: Option<String>,
    }
    serde_json::from_str::<Aggregated>(json)
        .ok()?
        .time_window?
        .window_start
}

/// Finds `eventTime` among the top-level keys of an event object, walking its structure
/// only as far as that key.
fn find_event_time(event: &str) -> Result<&str, FallbackReason> {
    let b = event.as_bytes();
    let mut i = 1; // past '{'
    let mut depth = 1usize;
    let mut expect_key = true;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let Some(n) = string_end(&b[i..]) else {
                    return Err(FallbackReason::Missing);
                };
                if depth == 1 && expect_key {
                    let key = &b[i + 1..i + n - 1];
                    let after = i + n + skip_ws(&b[i + n..]);
                    if key == b"eventTime" && b.get(after) == Some(&b':') {
                        let v = after + 1 + skip_ws(&b[after + 1..]);
                        if b.get(v) != Some(&b'"') {
                            return Err(FallbackReason::Unreadable);
                        }
                        let m = string_end(&b[v..]).ok_or(FallbackReason::Unreadable)?;
                        let text = &event[v + 1..v + m - 1];
                        if text.contains('\\') {
                            return Err(FallbackReason::Unreadable);
                        }
                        return Ok(text);
                    }
                    expect_key = false;
                }
                i += n;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b',' if depth == 1 => expect_key = true,
            _ => {}
        }
        i += 1;
    }
    Err(FallbackReason::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_only_at_the_top_level() {
        assert_eq!(
            find_event_time(r#"{"a":{"eventTime":"x"},"eventTime":"y"}"#),
            Ok("y")
        );
        assert_eq!(
            find_event_time(r#"{"a":"eventTime","b":1}"#),
            Err(FallbackReason::Missing)
        );
        assert_eq!(find_event_time(r#"{"eventTime" : "z"}"#), Ok("z"));
    }

    #[test]
    fn an_aggregated_event_takes_the_start_of_its_window() {
        // The shape of CloudTrail's documented aggregated event record (AwsAggregatedEvent).
        let aggregated = r#"{"eventVersion":"1.0","accountId":"111122223333","eventId":"7b3a5d1e-2f4c-4a8b-9e6d-0c1f2a3b4c5d","eventCategory":"Aggregated","eventType":"AwsAggregatedEvent","awsRegion":"us-east-1","eventSource":"s3.amazonaws.com","timeWindow":{"windowStart":"2025-11-19T18:05:00Z","windowEnd":"2025-11-19T18:10:00Z","windowSize":"PT5M"},"summary":{"primaryDimension":{"dimension":"eventName","statistics":[{"name":"GetObject","value":120}]}}}"#;
        assert_eq!(
            event_time(aggregated).map(|t| t.secs()),
            Ok(EventTime::parse("2025-11-19T18:05:00Z").unwrap().secs())
        );
        // eventTime wins when both are there; neither is still missing; a bad window start
        // is unreadable, like a bad eventTime.
        let both = r#"{"eventTime":"2023-07-10T11:42:36Z","timeWindow":{"windowStart":"2025-11-19T18:05:00Z"}}"#;
        assert_eq!(
            event_time(both).map(|t| t.secs()),
            Ok(EventTime::parse("2023-07-10T11:42:36Z").unwrap().secs())
        );
        assert_eq!(
            event_time(r#"{"a":1}"#).map(|t| t.secs()),
            Err(FallbackReason::Missing)
        );
        assert_eq!(
            event_time(r#"{"timeWindow":{"windowStart":"soon"}}"#).map(|t| t.secs()),
            Err(FallbackReason::Unreadable)
        );
        assert_eq!(
            find_event_time(r#"{"eventTime":12}"#),
            Err(FallbackReason::Unreadable)
        );
    }
}
