//! Reading one object into chunks: split its decoded bytes from where the ledger says it
//! resumes (the committed position, passing the ranges delivered ahead), encode each event,
//! cut a chunk at the target size, and close with a chunk that carries the object's end.
//!
//! The workers run it over a download (`worker.rs`); the seeded simulation runs the same
//! code over bytes it made (`tests/it/simulation/`), so its resume-from-position path is
//! the engine's own.

use std::io::Read;

use crate::digest::Sha256;
use crate::discover::folder;
use crate::encode::Encoder;
use crate::engine::CHUNK_START;
use crate::engine::handoff::{Chunk, End, Mark};
use crate::ledger::Span;
use crate::log::Logger;
use crate::object::ObjectRef;
use crate::read::split::{SplitError, SplitOptions, Stop, split};
use crate::timestamp::EventTime;

/// What reading needs besides the object and its bytes.
pub struct ObjectReader<'a> {
    pub encoder: &'a dyn Encoder,
    pub log: &'a Logger,
    /// Largest single event.
    pub max_event_bytes: usize,
    /// A chunk is closed at the first event that takes it to this many bytes.
    pub chunk_target: usize,
    /// Keep the SHA-256 of the decoded bytes (CloudTrail's digests name it).
    pub hash: bool,
}

/// Counts a read leaves for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadCounts {
    /// Valid events the encoder could not take (logged each).
    pub unencodable: u64,
    /// Events without a usable `eventTime`, stamped with the fallback.
    pub fallback_time: u64,
}

impl ObjectReader<'_> {
    /// Reads `decoded` (the object's bytes after decompression) from `resume`, handing each
    /// chunk to `push`; the last carries the object's end. `None` when `push` refused one
    /// (the engine is stopping): the object is then left as its commits leave it.
    pub fn read(
        &self,
        object: &ObjectRef,
        decoded: impl Read,
        resume: (u64, Vec<Span>),
        fallback: EventTime,
        mut push: impl FnMut(Chunk) -> Result<(), Stop>,
    ) -> Option<ReadCounts> {
        let (skip, passed) = resume;
        let mut counts = ReadCounts::default();
        let mut reader = Hashing {
            inner: decoded,
            hash: self.hash.then(Sha256::default),
        };
        // Chunk buffers start small and grow by doubling: the queue's byte budget counts
        // lengths, so capacity must stay within 2x of them (objects are mostly small).
        let mut buf = Vec::with_capacity(CHUNK_START);
        let mut events = 0u64;
        let mut newest = 0u32;
        let options = SplitOptions {
            skip,
            passed,
            fallback,
            max_event_bytes: self.max_event_bytes,
        };
        let outcome = split(&mut reader, options, |event| {
            let before = buf.len();
            if let Err(e) = self.encoder.encode(&event, object, &mut buf) {
                buf.truncate(before);
                counts.unencodable += 1;
                self.log.error(format_args!(
                    "{object}: event {} left out: {e}",
                    event.index
                ));
                return Ok(());
            }
            events += 1;
            newest = newest.max(event.time.secs());
            if buf.len() < self.chunk_target {
                return Ok(());
            }
            let n = std::mem::take(&mut events);
            push(Chunk {
                bytes: std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_START)),
                events: n,
                mark: Mark {
                    id: object.id.clone(),
                    events: n,
                    position: event.index + 1,
                    end: None,
                    newest_event: std::mem::take(&mut newest),
                    modified: object.last_modified.secs(),
                    sha256: None,
                    finding: None,
                },
            })
        });
        let stats = outcome.stats;
        counts.fallback_time = stats.fallback_time;
        if stats.fallback_time > 0 {
            self.log.debug(format_args!(
                "{object}: {} events had no usable eventTime and carry the object's LastModified",
                stats.fallback_time
            ));
        }
        if stats.not_objects > 0 {
            self.log.warn(format_args!(
                "{object}: {} elements of Records are not JSON objects (or not UTF-8) and were left out",
                stats.not_objects
            ));
        }
        let mut sha256 = None;
        let end = match outcome.error {
            None => {
                self.log
                    .debug(format_args!("{object}: {} events", stats.events));
                // The hash CloudTrail's digest names covers every byte, those after
                // `Records` too: the split reads to the end already (nothing may follow the
                // JSON), and draining here keeps the hash whole whatever it does. A read
                // failing now leaves the hash unknown.
                match std::io::copy(&mut reader, &mut std::io::sink()) {
                    Ok(_) => sha256 = reader.hash.map(Sha256::finish),
                    Err(e) => self.log.debug(format_args!(
                        "{object}: its last bytes could not be read for its SHA-256: {e}"
                    )),
                }
                End::Done
            }
            Some(SplitError::Stopped) => return None,
            Some(SplitError::Download(reason)) => {
                self.log.warn(format_args!(
                    "{object}: {reason}; {} events so far are shipped, the rest follows on a later try",
                    skip + stats.events
                ));
                End::Abandoned(reason)
            }
            Some(e) if !folder::unchanged(object) => {
                self.log.warn(format_args!(
                    "{object}: {e}, and the file changed while it was read; tried again later"
                ));
                End::Abandoned(format!("changed while read: {e}"))
            }
            Some(e) => {
                if e.is_not_cloudtrail() {
                    self.log.warn(format_args!("{object}: skipped, {e}"));
                } else {
                    self.log.error(format_args!(
                        "{object}: {e}; {} events before the damage were shipped, the rest is skipped",
                        skip + stats.events
                    ));
                }
                End::Failed(e.to_string())
            }
        };
        buf.shrink_to_fit();
        // The engine may be stopping: the end is then left to the next start.
        let _ = push(Chunk {
            bytes: buf,
            events,
            mark: Mark {
                id: object.id.clone(),
                events,
                position: stats.position,
                end: Some(end),
                newest_event: newest,
                modified: object.last_modified.secs(),
                sha256,
                finding: None,
            },
        });
        Some(counts)
    }
}

/// A reader that hashes what passes through it (an object's decompressed bytes), when
/// it has a hash to keep.
struct Hashing<R> {
    inner: R,
    hash: Option<Sha256>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hash {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}
