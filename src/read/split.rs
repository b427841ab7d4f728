//! Splitting one CloudTrail object into events, as a stream.
//!
//! The object is `{"Records":[event, ...]}` (other top-level keys are skipped). Decompressed
//! bytes flow through a window; a structural scan (strings skipped with `memchr`, brackets
//! counted) finds where each element of `Records` ends, and the element's bytes are handed
//! on as they are, so key order, number forms and escapes survive to the encoder. Memory
//! follows the largest event (capped by `max_event_bytes`), not the object. The scan checks
//! structure, not every detail of JSON syntax: encoders parse the event fully and refuse an
//! invalid one.
//!
//! The event's own `eventTime` becomes its time (an aggregated event, which has none, uses
//! the start of its `timeWindow`, `timeWindow.windowStart`); when it is missing, unreadable, or outside
//! what Fluent Bit can carry (before 1970, or from 2106-02-07T06:28:14Z on, where its u32
//! seconds end and its group markers live), the caller's fallback (the object's
//! LastModified) is used and counted by reason. Errors after some events were handed over
//! still report how many were: the caller ships those and records why the rest could not be
//! read.

use std::io::{self, Read};

use crate::read::decode::LimitExceeded;
use crate::timestamp::{EventTime, TimeError};

/// One event of an object, borrowed for the duration of the callback.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// Position in `Records`, counting from 0 (also counting elements that were skipped).
    pub index: u64,
    /// The event object's JSON text, exactly as in the source (valid UTF-8; a JSON object
    /// as far as the structural scan can tell).
    pub json: &'a str,
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
    /// Events stamped with the fallback time (no usable `eventTime`): the sum of `fallback`.
    pub fallback_time: u64,
    /// The same events, by why their `eventTime` was not used.
    pub fallback: FallbackReasons,
    /// Elements of `Records` that were not JSON objects (or not UTF-8) and were left out.
    pub not_objects: u64,
}

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

    fn count(&mut self, reason: FallbackReason) {
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

/// Why an object could not be read to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("an event is larger than max_event_bytes ({0} bytes)")]
    EventTooLarge(usize),
    #[error("JSON ends early (truncated object) after {0} bytes")]
    Truncated(u64),
    #[error("invalid JSON at byte {offset}: {what}")]
    Json { offset: u64, what: &'static str },
    #[error("not a CloudTrail log file: {0}")]
    NotCloudTrail(&'static str),
    /// The download broke off for good: not a fault of the object, it is retried later.
    #[error("download failed: {0}")]
    Download(String),
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

/// How to split.
#[derive(Debug, Clone, Copy)]
pub struct SplitOptions {
    /// Elements before this position are scanned but not handed over (they were shipped
    /// before a restart).
    pub skip: u64,
    /// Time for events without a usable `eventTime`.
    pub fallback: EventTime,
    /// Largest single event (and largest skipped top-level value).
    pub max_event_bytes: usize,
}

/// Splits the object read from `reader`.
pub fn split<R, F>(reader: R, options: SplitOptions, on_event: F) -> SplitOutcome
where
    R: Read,
    F: FnMut(Event<'_>) -> Result<(), Stop>,
{
    let mut s = Splitter {
        win: Window::new(reader, options.max_event_bytes),
        options,
        on_event,
        stats: SplitStats::default(),
    };
    let error = s.run().err();
    SplitOutcome {
        stats: s.stats,
        error,
    }
}

/// Bytes read from the decompressor, of which `buf[pos..end]` are not consumed yet.
struct Window<R> {
    reader: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    eof: bool,
    /// Bytes dropped from the front of `buf` so far: `offset + pos` is the stream offset.
    offset: u64,
    max: usize,
}

const READ_CHUNK: usize = 256 << 10;

impl<R: Read> Window<R> {
    fn new(reader: R, max: usize) -> Self {
        Self {
            reader,
            buf: Vec::new(),
            pos: 0,
            end: 0,
            eof: false,
            offset: 0,
            max,
        }
    }

    fn rest(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    fn at(&self) -> u64 {
        self.offset + self.pos as u64
    }

    /// Reads more; `Ok(false)` at the end of the stream. Keeps `buf[pos..end]`.
    fn fill(&mut self) -> Result<bool, SplitError> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.offset += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.end > self.max {
            return Err(SplitError::EventTooLarge(self.max));
        }
        if self.buf.len() < self.end + READ_CHUNK {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        loop {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(e)),
            }
        }
    }

    /// Runs `scan` on the unconsumed bytes, reading more while it needs more, and consumes
    /// what it used.
    fn take<T>(&mut self, scan: impl Fn(&[u8], bool) -> Scan<T>) -> Result<T, SplitError> {
        loop {
            match scan(self.rest(), self.eof) {
                Scan::Done(v, used) => {
                    self.pos += used;
                    return Ok(v);
                }
                Scan::More => {
                    if !self.fill()? {
                        return Err(SplitError::Truncated(self.offset + self.end as u64));
                    }
                }
                Scan::Bad(what) => {
                    return Err(SplitError::Json {
                        offset: self.at(),
                        what,
                    });
                }
            }
        }
    }
}

fn io_error(e: io::Error) -> SplitError {
    if let Some(limit) = find_inner::<LimitExceeded>(&e) {
        return SplitError::TooLarge(limit.to_string());
    }
    if let Some(d) = find_inner::<crate::read::fetch::DownloadError>(&e) {
        return SplitError::Download(d.0.clone());
    }
    SplitError::Decompress(e.to_string())
}

/// Our error types travel inside `io::Error`, and the decompressor may wrap that again.
fn find_inner<T: std::error::Error + 'static>(e: &io::Error) -> Option<&T> {
    let inner = e.get_ref()?;
    inner
        .downcast_ref::<T>()
        .or_else(|| inner.downcast_ref::<io::Error>().and_then(find_inner::<T>))
        .or_else(|| {
            let mut source = inner.source();
            while let Some(s) = source {
                if let Some(t) = s.downcast_ref::<T>() {
                    return Some(t);
                }
                source = s.source();
            }
            None
        })
}

enum Scan<T> {
    /// The value and how many bytes it used.
    Done(T, usize),
    /// The input ends inside the token.
    More,
    Bad(&'static str),
}

fn skip_ws(b: &[u8]) -> usize {
    b.iter()
        .position(|c| !matches!(c, b' ' | b'\n' | b'\r' | b'\t'))
        .unwrap_or(b.len())
}

/// After optional white space, one of `expected`: returns which byte it was.
fn punct(expected: &'static [u8], what: &'static str) -> impl Fn(&[u8], bool) -> Scan<u8> {
    move |b, _eof| {
        let i = skip_ws(b);
        match b.get(i) {
            None => Scan::More,
            Some(c) if expected.contains(c) => Scan::Done(*c, i + 1),
            Some(_) => Scan::Bad(what),
        }
    }
}

/// The end of a string that starts at `b[0] == '"'`: the index after the closing quote.
#[inline]
fn string_end(b: &[u8]) -> Option<usize> {
    // Most strings in CloudTrail events are short: eight bytes at a time (a word-wide test
    // for '"' or '\\') finds their end before a vectorized search would have been set up;
    // longer ones and escapes go to `memchr2`.
    let mut i = 1;
    while i + 8 <= b.len().min(65) {
        let word = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let hits = has_byte(word, b'"') | has_byte(word, b'\\');
        if hits != 0 {
            let at = i + (hits.trailing_zeros() / 8) as usize;
            return if b[at] == b'"' {
                Some(at + 1)
            } else {
                string_end_long(b, at)
            };
        }
        i += 8;
    }
    string_end_long(b, i)
}

/// High bit set in each byte of `word` equal to `byte`; the lowest set bit is exact.
#[inline]
fn has_byte(word: u64, byte: u8) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let x = word ^ (LO * u64::from(byte));
    x.wrapping_sub(LO) & !x & HI
}

fn string_end_long(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let j = memchr::memchr2(b'"', b'\\', &b[i..])?;
        if b[i + j] == b'"' {
            return Some(i + j + 1);
        }
        i += j + 2;
        if i > b.len() {
            return None;
        }
    }
}

/// The length of the JSON value at `b[0]` (not white space), by structure.
fn value_len(b: &[u8], eof: bool) -> Scan<usize> {
    match b.first() {
        None => Scan::More,
        Some(b'"') => match string_end(b) {
            Some(n) => Scan::Done(n, n),
            None => Scan::More,
        },
        Some(b'{' | b'[') => {
            // One bit per open bracket (1 = object), so a `]` cannot close a `{`: 128
            // levels, as deep as the encoders' parser goes anyway.
            let mut kinds: u128 = 0;
            let mut depth = 0u32;
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'"' => match string_end(&b[i..]) {
                        Some(n) => {
                            i += n;
                            continue;
                        }
                        None => return Scan::More,
                    },
                    open @ (b'{' | b'[') => {
                        if depth == 128 {
                            return Scan::Bad("nested deeper than 128 levels");
                        }
                        kinds = (kinds << 1) | u128::from(open == b'{');
                        depth += 1;
                    }
                    close @ (b'}' | b']') => {
                        if (kinds & 1 == 1) != (close == b'}') {
                            return Scan::Bad("mismatched brackets");
                        }
                        kinds >>= 1;
                        depth -= 1;
                        if depth == 0 {
                            return Scan::Done(i + 1, i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Scan::More
        }
        Some(c) if c.is_ascii_digit() || matches!(c, b'-' | b't' | b'f' | b'n') => {
            match b
                .iter()
                .position(|c| matches!(c, b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t'))
            {
                Some(n) => Scan::Done(n, n),
                None if eof => Scan::Done(b.len(), b.len()),
                None => Scan::More,
            }
        }
        Some(_) => Scan::Bad("expected a value"),
    }
}

/// After optional white space, a whole value: `(start, len)` relative to the scan input.
fn ws_value(b: &[u8], eof: bool) -> Scan<(usize, usize)> {
    let i = skip_ws(b);
    if i == b.len() {
        return Scan::More;
    }
    match value_len(&b[i..], eof) {
        Scan::Done(n, _) => Scan::Done((i, n), i + n),
        Scan::More => Scan::More,
        Scan::Bad(w) => Scan::Bad(w),
    }
}

/// The time of an event: its `eventTime`, or for an aggregated event (CloudTrail's
/// `AwsAggregatedEvent`, a summary of a window of data events, which has no `eventTime`)
/// the start of its window, `timeWindow.windowStart`.
fn event_time(json: &str) -> Result<EventTime, FallbackReason> {
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

struct Splitter<R, F> {
    win: Window<R>,
    options: SplitOptions,
    on_event: F,
    stats: SplitStats,
}

impl<R: Read, F: FnMut(Event<'_>) -> Result<(), Stop>> Splitter<R, F> {
    fn run(&mut self) -> Result<(), SplitError> {
        match self.win.take(|b, _| {
            let i = skip_ws(b);
            match b.get(i) {
                None => Scan::More,
                Some(b'{') => Scan::Done((), i + 1),
                Some(_) => Scan::Bad("top level is not a JSON object"),
            }
        }) {
            Err(SplitError::Json { .. }) => {
                return Err(SplitError::NotCloudTrail("top level is not a JSON object"));
            }
            Err(SplitError::Truncated(0)) => return Err(SplitError::Truncated(0)),
            other => other?,
        }
        let mut seen_records = false;
        let mut first = true;
        loop {
            if !first {
                let c = self
                    .win
                    .take(punct(b",}", "expected ',' or '}' after a value"))?;
                if c == b'}' {
                    break;
                }
            }
            let key_or_end = self.win.take(|b, _| {
                let i = skip_ws(b);
                match b.get(i) {
                    None => Scan::More,
                    Some(b'}') if first => Scan::Done(None, i + 1),
                    Some(b'"') => match string_end(&b[i..]) {
                        Some(n) => Scan::Done(Some(&b[i + 1..i + n - 1] == b"Records"), i + n),
                        None => Scan::More,
                    },
                    Some(_) => Scan::Bad("expected a key"),
                }
            })?;
            let Some(is_records) = key_or_end else { break };
            first = false;
            self.win.take(punct(b":", "expected ':' after a key"))?;
            if is_records && !seen_records {
                seen_records = true;
                self.records()?;
            } else {
                self.win.take(ws_value)?;
            }
        }
        self.win
            .take(|b, eof| {
                let i = skip_ws(b);
                if i < b.len() {
                    Scan::Bad("data after the top-level object")
                } else if eof {
                    Scan::Done((), i)
                } else {
                    Scan::More
                }
            })
            .or_else(|e| match e {
                SplitError::Truncated(_) => Ok(()),
                e => Err(e),
            })?;
        if seen_records {
            Ok(())
        } else {
            Err(SplitError::NotCloudTrail("no 'Records' array"))
        }
    }

    /// `[event, ...]` after the `"Records":` key.
    fn records(&mut self) -> Result<(), SplitError> {
        let open = self.win.take(|b, _| {
            let i = skip_ws(b);
            match b.get(i) {
                None => Scan::More,
                Some(b'[') => Scan::Done(true, i + 1),
                Some(_) => Scan::Done(false, 0),
            }
        })?;
        if !open {
            return Err(SplitError::NotCloudTrail("'Records' is not an array"));
        }
        if self.win.take(|b, _| {
            let i = skip_ws(b);
            match b.get(i) {
                None => Scan::More,
                Some(b']') => Scan::Done(true, i + 1),
                Some(_) => Scan::Done(false, i),
            }
        })? {
            return Ok(());
        }
        loop {
            let (start, len) = self.win.take(ws_value)?;
            let end = self.win.pos;
            let bytes = &self.win.buf[end - len..end];
            let _ = start;
            let index = self.stats.position;
            self.stats.position += 1;
            if index >= self.options.skip {
                match std::str::from_utf8(bytes) {
                    Ok(json) if json.starts_with('{') => {
                        let parsed = event_time(json);
                        let time = match parsed {
                            Ok(t) => t,
                            Err(reason) => {
                                self.stats.fallback_time += 1;
                                self.stats.fallback.count(reason);
                                self.options.fallback
                            }
                        };
                        self.stats.events += 1;
                        if (self.on_event)(Event { index, json, time }).is_err() {
                            return Err(SplitError::Stopped);
                        }
                    }
                    _ => self.stats.not_objects += 1,
                }
            }
            if self
                .win
                .take(punct(b",]", "expected ',' or ']' in Records"))?
                == b']'
            {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FALLBACK: EventTime = match EventTime::from_parts(1_000, 0) {
        Some(t) => t,
        None => panic!(),
    };

    fn opts(skip: u64) -> SplitOptions {
        SplitOptions {
            skip,
            fallback: FALLBACK,
            max_event_bytes: 1 << 20,
        }
    }

    fn run(json: &str, skip: u64) -> (Vec<(u64, String, u32)>, SplitOutcome) {
        let mut got = Vec::new();
        let out = split(json.as_bytes(), opts(skip), |e| {
            got.push((e.index, e.json.to_string(), e.time.secs()));
            Ok(())
        });
        (got, out)
    }

    /// A reader that returns one byte per read: every token crosses a window boundary.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.split_first() {
                Some((c, rest)) if !buf.is_empty() => {
                    buf[0] = *c;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn splits_records_keeping_the_text() {
        let (got, out) = run(
            r#" {"Records" : [ {"eventTime":"2023-07-10T11:42:36Z","b":1.50,"a":"\u00e9"} , {"x":null}]}
"#,
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
    fn the_same_events_whatever_the_read_sizes() {
        let json = r#"{"a":{"b":"]}\"["},"Records":[{"k":"v\\","eventTime":"2023-07-10T11:42:36Z","n":[1,{"x":"}"}]},{"eventTime":"x"},7,true]}"#;
        let (want, _) = run(json, 0);
        let mut got = Vec::new();
        let out = split(Trickle(json.as_bytes()), opts(0), |e| {
            got.push((e.index, e.json.to_string(), e.time.secs()));
            Ok(())
        });
        assert_eq!(out.error, None);
        assert_eq!(got, want);
        assert_eq!(got.len(), 2);
        assert_eq!(out.stats.not_objects, 2);
    }

    #[test]
    fn string_ends_at_every_length_and_escape_position() {
        for len in 0usize..80 {
            for esc in [None, Some(0), Some(len / 2), Some(len.saturating_sub(1))] {
                let mut body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                if let Some(at) = esc.filter(|_| len > 0) {
                    body.splice(at..at, *b"\\\"");
                }
                let mut text = vec![b'"'];
                text.extend_from_slice(&body);
                text.extend_from_slice(b"\",\"next\"");
                assert_eq!(
                    string_end(&text),
                    Some(body.len() + 2),
                    "{}",
                    String::from_utf8_lossy(&text)
                );
                // Cut anywhere before the closing quote: not found yet.
                for cut in 1..body.len() + 1 {
                    assert_eq!(string_end(&text[..cut]), None);
                }
            }
        }
    }

    #[test]
    fn skip_resumes_after_shipped_events() {
        let (got, out) = run(r#"{"Records":[{"i":0},{"i":1},{"i":2}]}"#, 2);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![2]);
        assert_eq!(out.stats.position, 3);
        assert_eq!(out.stats.events, 1);
    }

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
    fn times_the_host_cannot_carry_take_the_fallback_with_their_reason() {
        let (got, out) = run(
            r#"{"Records":[{"eventTime":"2106-02-07T06:28:14Z"},{"eventTime":"2106-02-07T06:28:15Z"},{"eventTime":"2200-01-01T00:00:00Z"},{"eventTime":"1969-12-31T23:59:59Z"},{"eventTime":"2023-07-10T11:42:36Z"},{"eventTime":"soon"},{"x":1}]}"#,
            0,
        );
        assert_eq!(out.error, None);
        let secs: Vec<u32> = got.iter().map(|g| g.2).collect();
        assert_eq!(
            secs,
            [1_000, 1_000, 1_000, 1_000, 1_688_989_356, 1_000, 1_000]
        );
        assert_eq!(
            out.stats.fallback,
            FallbackReasons {
                missing: 1,
                unreadable: 1,
                before_1970: 1,
                beyond_host: 3,
            }
        );
        assert_eq!(out.stats.fallback_time, out.stats.fallback.total());
        assert_eq!(
            out.stats.fallback.to_string(),
            "1 without eventTime, 1 with an unreadable eventTime, 1 with an eventTime before \
             1970, 3 with an eventTime from 2106-02-07T06:28:14Z on (beyond Fluent Bit's range)"
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            (r#"{"Records":[{"a":1},{"b":"#, "truncated"),
            (r#"{"digestStartTime":"x"}"#, "no 'Records'"),
            (r#"{"Records":{}}"#, "not an array"),
            (r#"[1,2]"#, "top level"),
            (r#"{"Records":[]} junk"#, "invalid JSON"),
            (r#"{"Records":[{}] "x":1}"#, "invalid JSON"),
            // Found by the fuzzer: a `]` closing an object was taken for the event's end.
            (r#"{"Records":[{"a":[1}]]}"#, "mismatched brackets"),
            (r#"{"Records":[{"a":1]]}"#, "mismatched brackets"),
            ("", "truncated"),
            ("{}", "no 'Records'"),
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
    fn nesting_is_bounded() {
        let deep = format!(r#"{{"Records":[{}{}]}}"#, "[".repeat(200), "]".repeat(200));
        let (_, out) = run(&deep, 0);
        assert!(
            out.error
                .unwrap()
                .to_string()
                .contains("nested deeper than 128")
        );
        let ok = format!(
            r#"{{"Records":[{{"a":{}1{}}}]}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        let (got, out) = run(&ok, 0);
        assert_eq!((got.len(), out.error), (1, None));
    }

    #[test]
    fn event_larger_than_the_limit_is_an_error() {
        let big = format!(r#"{{"Records":[{{"a":"{}"}}]}}"#, "x".repeat(2 << 20));
        let out = split(big.as_bytes(), opts(0), |_| Ok(()));
        assert_eq!(out.error, Some(SplitError::EventTooLarge(1 << 20)));
    }

    #[test]
    fn callback_can_stop() {
        let mut n = 0;
        let out = split(&br#"{"Records":[{},{},{}]}"#[..], opts(0), |_| {
            n += 1;
            if n == 2 { Err(Stop) } else { Ok(()) }
        });
        assert_eq!(out.error, Some(SplitError::Stopped));
        assert_eq!(out.stats.position, 2);
    }
}
