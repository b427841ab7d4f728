//! Splitting one CloudTrail object into events, as a stream.
//!
//! The object is `{"Records":[event, ...]}` (other top-level keys are ignored). The parser
//! reads from the decompressing reader and hands each element of `Records` over as soon as
//! it is complete, so memory follows the largest event, not the object. Each event keeps
//! its exact JSON text ([`RawValue`]): key order, number forms and escapes survive to the
//! encoder. The event's own `eventTime` becomes its time; when that is missing or unreadable
//! the caller's fallback (the object's LastModified) is used and counted.
//!
//! Errors after some events were handed over still report how many were: the caller ships
//! those and records why the rest could not be read.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::decode::LimitExceeded;
use crate::timestamp::EventTime;

/// One event of an object, borrowed for the duration of the callback.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// Position in `Records`, counting from 0 (also counting elements that were skipped).
    pub index: u64,
    /// The event object's JSON text, exactly as in the source.
    pub json: &'a RawValue,
    /// `eventTime`, or the fallback.
    pub time: EventTime,
}

/// What a split saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitStats {
    /// Elements of `Records` consumed, including skipped ones: the resume position.
    pub position: u64,
    /// Events handed to the callback.
    pub events: u64,
    /// Events stamped with the fallback time (no usable `eventTime`).
    pub fallback_time: u64,
    /// Elements of `Records` that were not JSON objects and were left out.
    pub not_objects: u64,
}

/// Why an object could not be read to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("JSON ends early (truncated object): {0}")]
    Truncated(String),
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("not a CloudTrail log file: {0}")]
    NotCloudTrail(String),
    /// The callback asked to stop (shutdown); not a fault of the object.
    #[error("stopped before the end of the object")]
    Stopped,
}

impl SplitError {
    /// Digest files and other JSON that is simply not a log file: skipped, not an alarm.
    pub fn is_not_cloudtrail(&self) -> bool {
        matches!(self, SplitError::NotCloudTrail(_))
    }
}

/// The result of a split: the stats are valid whether or not it ended in an error.
#[derive(Debug)]
pub struct SplitOutcome {
    pub stats: SplitStats,
    pub error: Option<SplitError>,
}

/// Returned by the callback to stop the split early.
#[derive(Debug, Clone, Copy)]
pub struct Stop;

/// Splits the object read from `reader`. Elements before `skip` are parsed but not handed
/// over (they were shipped before a restart).
pub fn split<R, F>(reader: R, skip: u64, fallback: EventTime, mut on_event: F) -> SplitOutcome
where
    R: Read,
    F: FnMut(Event<'_>) -> Result<(), Stop>,
{
    let mut ctx = Ctx {
        skip,
        fallback,
        on_event: &mut on_event,
        stats: SplitStats::default(),
        phase: Phase::Top,
        stopped: false,
    };
    let mut de =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(64 << 10, reader));
    let result = TopSeed(&mut ctx)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    let error = match result {
        Ok(()) => None,
        Err(_) if ctx.stopped => Some(SplitError::Stopped),
        Err(e) => Some(classify(e, ctx.phase)),
    };
    SplitOutcome {
        stats: ctx.stats,
        error,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Top,
    Records,
    Done,
    NoRecords,
}

struct Ctx<'f> {
    skip: u64,
    fallback: EventTime,
    on_event: &'f mut dyn FnMut(Event<'_>) -> Result<(), Stop>,
    stats: SplitStats,
    phase: Phase,
    stopped: bool,
}

impl Ctx<'_> {
    fn element(&mut self, raw: &RawValue) -> Result<(), Stop> {
        let index = self.stats.position;
        self.stats.position += 1;
        if index < self.skip {
            return Ok(());
        }
        if !raw.get().starts_with('{') {
            self.stats.not_objects += 1;
            return Ok(());
        }
        let time = match event_time(raw) {
            Some(t) => t,
            None => {
                self.stats.fallback_time += 1;
                self.fallback
            }
        };
        self.stats.events += 1;
        (self.on_event)(Event {
            index,
            json: raw,
            time,
        })
    }
}

/// Reads only `eventTime` out of an event; every other field is skipped without allocating.
fn event_time(raw: &RawValue) -> Option<EventTime> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(rename = "eventTime", borrow, default)]
        event_time: Option<Cow<'a, str>>,
    }
    let probe: Probe<'_> = serde_json::from_str(raw.get()).ok()?;
    EventTime::parse_rfc3339(probe.event_time?.as_ref())
}

fn classify(e: serde_json::Error, phase: Phase) -> SplitError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io => {
            let io = std::io::Error::from(e);
            match io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<LimitExceeded>())
            {
                Some(limit) => SplitError::TooLarge(limit.to_string()),
                None => SplitError::Decompress(io.to_string()),
            }
        }
        Category::Eof => SplitError::Truncated(e.to_string()),
        Category::Syntax => SplitError::Json(e.to_string()),
        Category::Data => match phase {
            Phase::Top => {
                SplitError::NotCloudTrail(format!("top level is not a JSON object ({e})"))
            }
            Phase::Records => SplitError::NotCloudTrail(format!("'Records' is not an array ({e})")),
            Phase::NoRecords => SplitError::NotCloudTrail("no 'Records' array".into()),
            Phase::Done => SplitError::Json(e.to_string()),
        },
    }
}

struct TopSeed<'c, 'f>(&'c mut Ctx<'f>);

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with a Records array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.0;
        let mut seen = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "Records" && !seen {
                seen = true;
                ctx.phase = Phase::Records;
                map.next_value_seed(RecordsSeed(&mut *ctx))?;
                ctx.phase = Phase::Top;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if seen {
            ctx.phase = Phase::Done;
            Ok(())
        } else {
            ctx.phase = Phase::NoRecords;
            Err(de::Error::custom("no Records"))
        }
    }
}

struct RecordsSeed<'c, 'f>(&'c mut Ctx<'f>);

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ctx = self.0;
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            if ctx.element(&raw).is_err() {
                ctx.stopped = true;
                return Err(de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FALLBACK: EventTime = match EventTime::from_parts(1_000, 0) {
        Some(t) => t,
        None => panic!(),
    };

    fn run(json: &str, skip: u64) -> (Vec<(u64, String, u32)>, SplitOutcome) {
        let mut got = Vec::new();
        let out = split(json.as_bytes(), skip, FALLBACK, |e| {
            got.push((e.index, e.json.get().to_string(), e.time.secs()));
            Ok(())
        });
        (got, out)
    }

    #[test]
    fn splits_records_keeping_the_text() {
        let (got, out) = run(
            r#"{"Records":[{"eventTime":"2023-07-10T11:42:36Z","b":1.50,"a":"\u00e9"},{"x":null}]}"#,
            0,
        );
        assert_eq!(out.error, None);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].1,
            r#"{"eventTime":"2023-07-10T11:42:36Z","b":1.50,"a":"\u00e9"}"#
        );
        assert_eq!(got[0].2, 1_688_989_356);
        assert_eq!(got[1], (1, r#"{"x":null}"#.to_string(), 1_000));
        assert_eq!(out.stats.fallback_time, 1);
        assert_eq!(out.stats.position, 2);
    }

    #[test]
    fn skip_resumes_after_shipped_events() {
        let (got, out) = run(r#"{"Records":[{"i":0},{"i":1},{"i":2}]}"#, 2);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![2]);
        assert_eq!(out.stats.position, 3);
        assert_eq!(out.stats.events, 1);
    }

    #[test]
    fn other_top_level_keys_and_non_objects() {
        let (got, out) = run(
            r#"{"Other":{"Records":5},"Records":[1,{"a":1},"s"],"z":[]}"#,
            0,
        );
        assert_eq!(out.error, None);
        assert_eq!(got.len(), 1);
        assert_eq!(out.stats.not_objects, 2);
        assert_eq!(out.stats.position, 3);
    }

    #[test]
    fn odd_event_times_fall_back() {
        let (got, out) = run(
            r#"{"Records":[{"eventTime":12},{"eventTime":"yesterday"},{"eventTime":"2023-07-10t11:42:36.25+00:00"}]}"#,
            0,
        );
        assert_eq!(out.stats.fallback_time, 2);
        assert_eq!(got[2].2, 1_688_989_356);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            (r#"{"Records":[{"a":1},{"b":"#, "truncated"),
            (r#"{"digestStartTime":"x"}"#, "no 'Records'"),
            (r#"{"Records":{}}"#, "not an array"),
            (r#"[1,2]"#, "top level"),
            (r#"{"Records":[]} junk"#, "invalid JSON"),
            ("", "truncated"),
        ];
        for (json, want) in cases {
            let (_, out) = run(json, 0);
            let err = out.error.expect(json).to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
        let (got, out) = run(r#"{"Records":[{"a":1},{"b":"#, 0);
        assert_eq!(
            got.len(),
            1,
            "events before the damage are still handed over"
        );
        assert_eq!(out.stats.position, 1);
    }

    #[test]
    fn callback_can_stop() {
        let mut n = 0;
        let out = split(&br#"{"Records":[{},{},{}]}"#[..], 0, FALLBACK, |_| {
            n += 1;
            if n == 2 { Err(Stop) } else { Ok(()) }
        });
        assert_eq!(out.error, Some(SplitError::Stopped));
        assert_eq!(out.stats.position, 2);
    }
}
