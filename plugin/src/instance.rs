//! One `[INPUT]` instance: its engine, the batch the host is copying, the batches waiting
//! to be committed, and its log lines.
//!
//! Fluent Bit gives an input no delivery acknowledgement. The cleanup callback is NOT it:
//! the host calls cleanup once the batch is copied into the instance's ring buffer, and its
//! engine thread moves it into a chunk (memory or filesystem storage) up to 250 ms later
//! (ABI doc 3.5 and 4.1: a SIGKILL in that window lost about 200 of 2,900 events when the
//! plugin committed in cleanup). So a batch's marks wait in `copied` after cleanup and are
//! committed at the first collect that comes at least [`COMMIT_DELAY`] after it (the host's
//! timer makes that the next collect, about a second later). A crash then repeats at most
//! the batches not yet committed. At Exit the host has already drained the ring buffer
//! (it pauses the input, flushes during the grace period, then calls Exit: measured on
//! 5.1.1 and 4.1.2), so Exit commits what is waiting and a graceful stop repeats nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cloudtrail_s3::engine::handoff::{Batch, Mark};
use cloudtrail_s3::log::{Level, LogSink, Logger};
use cloudtrail_s3::{Engine, Settings};

use cloudtrail_s3::encode::msgpack::MsgpackEncoder;

use crate::trim::AfterBacklog;

/// Log lines waiting to be printed on the instance thread: Fluent Bit only routes lines
/// from its own threads to `log_file`, so engine threads queue them here.
struct LogQueue {
    max_level: Level,
    lines: Mutex<(VecDeque<(Level, String)>, u64)>,
}

const MAX_QUEUED_LINES: usize = 10_000;

/// How long after its cleanup a batch waits before it counts as stored: twice the period at
/// which Fluent Bit's engine drains an input's ring buffer into storage (250 ms).
pub const COMMIT_DELAY: Duration = Duration::from_millis(500);

/// A batch the host has copied (cleanup came) but may not have stored yet.
struct Copied {
    marks: Vec<Mark>,
    at: Instant,
}

impl LogSink for LogQueue {
    fn max_level(&self) -> Level {
        self.max_level
    }
    fn write(&self, level: Level, message: &str) {
        let mut g = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if g.0.len() >= MAX_QUEUED_LINES {
            g.0.pop_front();
            g.1 += 1;
        }
        g.0.push_back((level, message.to_string()));
    }
}

/// Where the test hook of the panic boundary fires (property `debug.panic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PanicAt {
    Init,
    FirstCollect,
}

/// What an instance needs from its host: property lookup and logging. In Fluent Bit that is
/// `ffi::Host`, over the host's API table; a trait, so this file never reaches into the FFI
/// layer (which holds the instances) and the dependency runs one way.
pub trait HostServices {
    /// A property's value; `None` when unset or empty.
    fn property(&self, key: &str) -> Option<String>;
    /// The most verbose level the instance's `log_level` lets through.
    fn max_level(&self) -> Level;
    /// Prints one line through the host's logger.
    fn log(&self, level: Level, message: &str);
}

pub struct Instance {
    host: Box<dyn HostServices>,
    logs: Arc<LogQueue>,
    engine: Engine,
    /// The batch whose bytes the host holds between collect and cleanup.
    handed: Option<Batch>,
    /// Batches copied by the host, oldest first, not yet committed.
    copied: VecDeque<Copied>,
    panic_at: Option<PanicAt>,
    /// When to give free memory back (see `trim`).
    trim: AfterBacklog,
}

impl Instance {
    /// Reads and validates the properties and starts the engine. The error is the message
    /// for the user; it has already been printed.
    pub fn init(host: Box<dyn HostServices>) -> Result<Box<Instance>, String> {
        let logs = Arc::new(LogQueue {
            max_level: host.max_level(),
            lines: Mutex::default(),
        });
        let panic_at = match host.property("debug.panic").as_deref() {
            Some("init") => Some(PanicAt::Init),
            Some("collect") => Some(PanicAt::FirstCollect),
            _ => None,
        };
        if panic_at == Some(PanicAt::Init) {
            panic!("debug.panic=init");
        }
        let config = Settings::from_properties(|k| host.property(k))
            .and_then(Settings::validate)
            .map_err(|e| {
                let msg = format!("configuration error: {e}");
                host.log(Level::Error, &msg);
                msg
            })?;
        let encoder = Arc::new(MsgpackEncoder {
            metadata_key: config.metadata_key.clone(),
        });
        let engine = Engine::start(config, encoder, Logger::new(logs.clone()));
        let mut instance = match engine {
            Ok(engine) => Box::new(Instance {
                host,
                logs,
                engine,
                handed: None,
                copied: VecDeque::new(),
                panic_at,
                trim: AfterBacklog::default(),
            }),
            Err(e) => {
                let msg = format!("cannot start: {e}");
                host.log(Level::Error, &msg);
                return Err(msg);
            }
        };
        instance.flush_logs();
        Ok(instance)
    }

    /// Prints queued log lines through the host.
    fn flush_logs(&mut self) {
        let (lines, dropped) = {
            let mut g = self
                .logs
                .lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            (std::mem::take(&mut g.0), std::mem::take(&mut g.1))
        };
        if dropped > 0 {
            self.host.log(
                Level::Warn,
                &format!("{dropped} log lines dropped (too many at once)"),
            );
        }
        for (level, line) in lines {
            self.host.log(level, &line);
        }
    }

    /// The next buffer for the host, or `None` when nothing is ready. Never waits.
    pub fn collect(&mut self) -> Option<&[u8]> {
        if self.panic_at == Some(PanicAt::FirstCollect) {
            self.panic_at = None;
            panic!("debug.panic=collect");
        }
        self.flush_logs();
        if let Some(previous) = self.handed.take() {
            // The host appends whenever a buffer is returned; only the cleanup call went
            // missing, so the batch is the host's from now on.
            self.copied(previous.marks);
        }
        self.commit_stored(Instant::now());
        loop {
            let Some(batch) = self.engine.take_paced() else {
                if self.trim.quiet() {
                    crate::trim::give_back_free_memory();
                    self.engine.logger().debug(format_args!(
                        "backlog over: free memory given back to the system (malloc_trim)"
                    ));
                }
                return None;
            };
            if batch.bytes.is_empty() {
                // Only object endings without records (failed or empty objects). They wait
                // behind the batches before them: a failed object's earlier records may
                // still be in the host's ring buffer.
                self.copied(batch.marks);
                continue;
            }
            self.trim.handed(batch.bytes.len());
            return Some(&self.handed.insert(batch).bytes);
        }
    }

    fn copied(&mut self, marks: Vec<Mark>) {
        self.copied.push_back(Copied {
            marks,
            at: Instant::now(),
        });
    }

    /// Commits, in order, the batches copied at least [`COMMIT_DELAY`] before `now`.
    fn commit_stored(&mut self, now: Instant) {
        let mut marks = Vec::new();
        while let Some(c) = self.copied.front() {
            if now.duration_since(c.at) < COMMIT_DELAY {
                break;
            }
            marks.extend(self.copied.pop_front().map(|c| c.marks).unwrap_or_default());
        }
        if !marks.is_empty() {
            self.engine.commit(&marks);
        }
    }

    /// Commits everything the host has (Exit: its ring buffer is drained by then).
    fn commit_all(&mut self) {
        if let Some(previous) = self.handed.take() {
            self.copied(previous.marks);
        }
        let marks: Vec<Mark> = self.copied.drain(..).flat_map(|c| c.marks).collect();
        if !marks.is_empty() {
            self.engine.commit(&marks);
        }
    }

    /// The host copied the buffer at `buf` into its ring buffer; it is stored a little later.
    pub fn cleanup(&mut self, buf: *const std::ffi::c_void) {
        match self.handed.take() {
            Some(batch) if batch.bytes.as_ptr().cast() == buf => self.copied(batch.marks),
            other => {
                self.handed = other;
                self.host.log(
                    Level::Warn,
                    "cleanup called with a buffer this instance did not hand out",
                );
            }
        }
    }

    pub fn pause(&mut self) {
        self.engine.pause();
        self.engine
            .logger()
            .debug(format_args!("paused by the host"));
        // Printed now: no collect runs while paused to flush the queue.
        self.flush_logs();
    }

    pub fn resume(&mut self) {
        self.engine.resume();
        self.engine
            .logger()
            .debug(format_args!("resumed by the host"));
        self.flush_logs();
    }

    /// Stops the engine, joining its threads, and prints the last log lines.
    pub fn exit(&mut self) {
        self.commit_all();
        self.engine.shutdown();
        let s = self.engine.stats();
        self.engine.logger().info(format_args!(
            "stopped: {} objects shipped, {} failed, {} events",
            s.objects_done, s.objects_failed, s.events
        ));
        self.flush_logs();
    }
}
