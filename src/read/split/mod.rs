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
//!
//! `scan.rs` finds where strings and values end; `event_time.rs` reads an event's time and
//! says why the fallback was used; this file runs the split over a window of the stream.

use std::io::{self, Read};

mod event_time;
mod scan;

use event_time::event_time;
pub use event_time::{FallbackReason, FallbackReasons};
use scan::{Scan, punct, skip_ws, string_end, ws_value};

use crate::read::decode::LimitExceeded;
use crate::timestamp::EventTime;

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
#[derive(Debug, Clone)]
pub struct SplitOptions {
    /// Elements before this position are scanned but not handed over (they were shipped
    /// before a restart).
    pub skip: u64,
    /// Ranges `(from, to)` of elements past `skip` whose events were delivered already
    /// (acknowledged ahead of an earlier batch at a graceful stop): scanned, not handed over.
    pub passed: Vec<(u64, u64)>,
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
            let passed = || {
                self.options
                    .passed
                    .iter()
                    .any(|&(from, to)| from <= index && index < to)
            };
            if index >= self.options.skip && !passed() {
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
mod tests;
