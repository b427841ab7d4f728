//! What every run checks at the destination: each expected eventID arrived (lost and
//! repeated are counted, not just "enough lines"), each record's time is its eventTime, and,
//! where a test asks, the first timestamp-shaped string of the line is the eventTime
//! (Sumo Logic takes a message's earliest timestamp as its time, and in 674 of the 2,900
//! bundled events `userIdentity.sessionContext.attributes.creationDate` comes before
//! `eventTime`, in 602 of them with another value).
//!
//! Lines are fed incrementally, so a wait can poll the tally cheaply.

use std::collections::HashMap;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::child::Lines;
use crate::data;
use crate::json::J;
use crate::receiver::Receiver;

/// The events a run must deliver: eventID -> eventTime (text as in the source, and as
/// Unix nanoseconds).
#[derive(Clone)]
pub struct Expected(HashMap<String, (String, i128)>);

impl Expected {
    /// All 2,900 bundled events.
    pub fn all() -> Expected {
        Expected::of(&data::objects())
    }

    pub fn of(objects: &[data::Object]) -> Expected {
        let mut map = HashMap::new();
        for o in objects {
            for text in o.events() {
                let j = J::parse(&text);
                let time = j.str("eventTime").expect("eventTime").to_string();
                let nanos = parse_instant(&time).expect("eventTime is RFC 3339");
                let id = j.str("eventID").expect("eventID").to_string();
                assert!(map.insert(id, (time, nanos)).is_none(), "unique eventIDs");
            }
        }
        Expected(map)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Where a line carries its record time.
#[derive(Clone, Copy, Debug)]
pub enum Time {
    /// Fluent Bit's `http` output with `json_date_key <key>` and `json_date_format
    /// iso8601`: the line starts with `{"<key>":"2023-07-10T11:42:36.000000Z",`.
    LeadingIso(&'static str),
    /// Fluent Bit's `stdout` `json_lines`: a `date` field in float seconds.
    EpochSeconds(&'static str),
    /// Not in the line (Vector: the record time is not written; the first-timestamp check
    /// covers what the destination sees).
    NotInLine,
}

/// Counts per eventID, and every line that broke a rule.
pub struct Tally {
    expected: Expected,
    time: Time,
    first_timestamp: bool,
    counts: HashMap<String, usize>,
    distinct: usize,
    /// Lines of the followed source already fed.
    cursor: usize,
    pub lines: usize,
    pub unknown: Vec<String>,
    /// Integrity findings sent as records (`digest.findings_as_records`): their text.
    pub findings: Vec<String>,
    pub wrong_time: Vec<String>,
    pub wrong_first_timestamp: Vec<String>,
}

impl Tally {
    /// `first_timestamp`: also require the line's first timestamp-shaped string to be
    /// the eventTime.
    pub fn new(expected: &Expected, time: Time, first_timestamp: bool) -> Tally {
        Tally {
            expected: expected.clone(),
            time,
            first_timestamp,
            counts: HashMap::new(),
            distinct: 0,
            cursor: 0,
            lines: 0,
            unknown: Vec::new(),
            findings: Vec::new(),
            wrong_time: Vec::new(),
            wrong_first_timestamp: Vec::new(),
        }
    }

    pub fn feed<S: AsRef<str>>(&mut self, lines: impl IntoIterator<Item = S>) {
        for l in lines {
            self.feed_line(l.as_ref());
        }
    }

    /// Feeds what `receiver` got since the last call.
    pub fn follow(&mut self, receiver: &Receiver) -> &mut Tally {
        let bad = receiver.bad();
        assert!(
            bad.is_empty(),
            "requests the receiver could not read: {bad:?}"
        );
        let new = receiver.lines_since(self.cursor);
        self.cursor += new.len();
        self.feed(new.iter().map(|l| l.text.as_str()));
        self
    }

    /// Feeds the lines of a stream (a host's stdout) since the last call.
    pub fn follow_lines(&mut self, lines: &Lines) -> &mut Tally {
        let new = lines.since(self.cursor);
        self.cursor += new.len();
        self.feed(&new);
        self
    }

    fn feed_line(&mut self, line: &str) {
        self.lines += 1;
        let Ok(serde_json::Value::Object(record)) = serde_json::from_str(line) else {
            self.unknown.push(short(line));
            return;
        };
        if record.get("eventType").and_then(|v| v.as_str()) == Some("IntegrityFinding") {
            match record.get("finding").and_then(|v| v.as_str()) {
                Some(text) => self.findings.push(text.to_string()),
                None => self.unknown.push(short(line)),
            }
            return;
        }
        let Some(id) = record.get("eventID").and_then(|v| v.as_str()) else {
            self.unknown.push(short(line));
            return;
        };
        let Some((event_time, nanos)) = self.expected.0.get(id) else {
            self.unknown.push(short(line));
            return;
        };
        let (event_time, nanos) = (event_time.clone(), *nanos);
        let n = self.counts.entry(id.to_string()).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.distinct += 1;
        }
        let time_ok = match self.time {
            Time::LeadingIso(key) => {
                let prefix = format!("{{\"{key}\":\"");
                line.starts_with(&prefix)
                    && record
                        .get(key)
                        .and_then(|v| v.as_str())
                        .and_then(parse_instant)
                        == Some(nanos)
            }
            Time::EpochSeconds(key) => record
                .get(key)
                .and_then(|v| v.as_f64())
                .is_some_and(|s| ((s * 1e9) as i128 - nanos).abs() < 1_000_000),
            Time::NotInLine => true,
        };
        if !time_ok {
            self.wrong_time.push(format!(
                "{id}: eventTime {event_time}, line {}",
                short(line)
            ));
        }
        if self.first_timestamp {
            let first = first_timestamp(line);
            if first.as_deref().and_then(parse_instant) != Some(nanos) {
                self.wrong_first_timestamp.push(format!(
                    "{id}: eventTime {event_time}, first timestamp {first:?}"
                ));
            }
        }
    }

    pub fn expected(&self) -> usize {
        self.expected.len()
    }

    /// Expected events not seen.
    pub fn lost(&self) -> usize {
        self.expected.len() - self.distinct
    }

    /// Deliveries beyond the first, summed over events.
    pub fn repeated(&self) -> usize {
        self.counts.values().map(|n| n - 1).sum()
    }

    pub fn all_arrived(&self) -> bool {
        self.lost() == 0
    }

    /// `expected E, lines L, lost X, repeated Y`.
    pub fn summary(&self) -> String {
        format!(
            "expected {}, lines {}, lost {}, repeated {}",
            self.expected(),
            self.lines,
            self.lost(),
            self.repeated()
        )
    }

    /// Every line was an expected event with the right time (and first timestamp).
    pub fn assert_well_formed(&self, what: &str) {
        assert!(
            self.unknown.is_empty(),
            "{what}: {} lines that are not expected events, e.g. {:?}",
            self.unknown.len(),
            &self.unknown[..self.unknown.len().min(3)]
        );
        assert!(
            self.wrong_time.is_empty(),
            "{what}: {} records whose time is not their eventTime ({:?}), e.g. {:?}",
            self.wrong_time.len(),
            self.time,
            &self.wrong_time[..self.wrong_time.len().min(3)]
        );
        assert!(
            self.wrong_first_timestamp.is_empty(),
            "{what}: {} lines whose first timestamp is not the eventTime, e.g. {:?}",
            self.wrong_first_timestamp.len(),
            &self.wrong_first_timestamp[..self.wrong_first_timestamp.len().min(3)]
        );
    }

    /// Well formed, and every expected event exactly once.
    pub fn assert_exactly_once(&self, what: &str) {
        self.assert_well_formed(what);
        assert_eq!(
            (self.lost(), self.repeated()),
            (0, 0),
            "{what}: every event exactly once: {}",
            self.summary()
        );
    }
}

fn short(line: &str) -> String {
    line.chars().take(160).collect()
}

/// An RFC 3339 instant (`Z` or an offset; a missing zone is UTC) as Unix nanoseconds.
pub fn parse_instant(text: &str) -> Option<i128> {
    let t = text.replacen(' ', "T", 1);
    let with_zone = if t.ends_with('Z') || t[19.min(t.len())..].contains(['+', '-']) {
        t
    } else {
        format!("{t}Z")
    };
    OffsetDateTime::parse(&with_zone, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp_nanos)
}

/// The first `YYYY-MM-DDTHH:MM:SS[.fff][Z|+hh:mm]` in `text` (a space may stand for `T`),
/// as written: what a log service that takes a message's earliest timestamp would take.
pub fn first_timestamp(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    for s in 0..b.len() {
        let shape = (0..4).all(|i| digit(s + i))
            && at(s + 4, b'-')
            && digit(s + 5)
            && digit(s + 6)
            && at(s + 7, b'-')
            && digit(s + 8)
            && digit(s + 9)
            && (at(s + 10, b'T') || at(s + 10, b' '))
            && digit(s + 11)
            && digit(s + 12)
            && at(s + 13, b':')
            && digit(s + 14)
            && digit(s + 15)
            && at(s + 16, b':')
            && digit(s + 17)
            && digit(s + 18);
        if !shape || (s > 0 && b[s - 1].is_ascii_digit()) {
            continue;
        }
        let mut e = s + 19;
        if at(e, b'.') && digit(e + 1) {
            e += 1;
            while digit(e) {
                e += 1;
            }
        }
        if at(e, b'Z') {
            e += 1;
        } else if (at(e, b'+') || at(e, b'-'))
            && digit(e + 1)
            && digit(e + 2)
            && at(e + 3, b':')
            && digit(e + 4)
            && digit(e + 5)
        {
            e += 6;
        }
        return Some(text[s..e].to_string());
    }
    None
}

/// How many source events, as CloudTrail wrote them, have a first timestamp that is not
/// their eventTime (602): the reason the first-timestamp check exists, and proof that it
/// is not vacuous on this data.
pub fn events_whose_first_timestamp_is_not_event_time() -> usize {
    data::objects()
        .iter()
        .flat_map(|o| o.events())
        .filter(|e| {
            let t = J::parse(e).str("eventTime").map(str::to_string);
            first_timestamp(e).as_deref().and_then(parse_instant)
                != t.as_deref().and_then(parse_instant)
        })
        .count()
}
