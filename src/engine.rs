//! The engine: discovery, download and split on a background runtime, feeding a bounded
//! queue that a front end drains.
//!
//! ```text
//!  scan (discover) ──► workers: fetch ─► decode ─► split ─► encode ─► Handoff queue
//!        ▲                                                              │ take()
//!        └──────────── Store (state file) ◄── commit(marks) ◄── front end hands bytes to host
//! ```
//!
//! The front end owns the only two calls on the hot path: `take` (non-blocking, or with a
//! bounded wait) and `commit` once the host has the bytes. Everything that can block or
//! fail slowly runs on the engine's own threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aws_sdk_s3::Client;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use crate::checkpoint::{CheckpointError, Store};
use crate::config::{Config, Source, StartTime};
use crate::decode;
use crate::discover::{Discovery, Origin};
use crate::fetch::{FetchError, fetch};
use crate::handoff::{Batch, Chunk, End, Handoff, Mark};
use crate::log::Logger;
use crate::object::ObjectRef;
use crate::split::{Event, SplitError, SplitOptions, Stop, split};
use crate::timestamp::EventTime;

/// Turns one event into the front end's wire format (msgpack for Fluent Bit, a JSON line
/// for the CLI), appending to `out`. Runs on worker threads, once per event.
pub trait Encoder: Send + Sync + 'static {
    /// On error `out` may hold a partial record; the engine cuts it off and logs the event.
    fn encode(
        &self,
        event: &Event<'_>,
        object: &ObjectRef,
        out: &mut Vec<u8>,
    ) -> Result<(), String>;
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] CheckpointError),
    #[error("could not start the background runtime: {0}")]
    Runtime(std::io::Error),
}

/// Running totals, for logs, the CLI's progress line and tests. Objects and events count
/// when delivered (committed), not when read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub scans: u64,
    pub objects_done: u64,
    pub objects_failed: u64,
    pub events: u64,
    pub events_fallback_time: u64,
    pub events_unencodable: u64,
    /// Keys returned by S3 listings: shows how much each scan re-lists.
    pub keys_listed: u64,
}

#[derive(Default)]
struct Counters {
    scans: AtomicU64,
    objects_done: AtomicU64,
    objects_failed: AtomicU64,
    events: AtomicU64,
    events_fallback_time: AtomicU64,
    events_unencodable: AtomicU64,
}

struct Core {
    config: Config,
    queue: Handoff,
    store: Mutex<Store>,
    log: Logger,
    encoder: Arc<dyn Encoder>,
    client: Option<Client>,
    paused: watch::Sender<bool>,
    counters: Counters,
    keys_listed: Arc<AtomicU64>,
    chunk_target: usize,
}

/// A running engine. Dropping it shuts it down.
pub struct Engine {
    core: Arc<Core>,
    runtime: Option<Runtime>,
    stop: watch::Sender<bool>,
    closed: AtomicBool,
}

impl Engine {
    /// Opens the state, builds the client and starts scanning.
    pub fn start(
        config: Config,
        encoder: Arc<dyn Encoder>,
        log: Logger,
    ) -> Result<Self, StartError> {
        let mut store = Store::open(config.db.as_deref())?;
        if config.db.is_none() {
            log.warn(format_args!(
                "no 'db' set: what was shipped is remembered in memory only, so a restart ships the start_time window again"
            ));
        }
        let first_start = store.first_start_or(EventTime::now().secs());
        let start = match config.start_time {
            StartTime::At(t) => t,
            StartTime::Before(d) => {
                let secs = i64::from(first_start) - i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                EventTime::new(secs.max(0), 0).unwrap_or(EventTime::now())
            }
        };
        store.save()?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(config.workers + 4)
            .thread_name("cloudtrail-s3")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;

        let (client, origin) = match &config.source {
            Source::S3(s3) => {
                let client = runtime.block_on(crate::client::s3_client(s3));
                let origin = Origin::S3 {
                    client: client.clone(),
                    bucket: s3.bucket.as_str().into(),
                };
                (Some(client), origin)
            }
            Source::Dir(root) => (None, Origin::Dir { root: root.clone() }),
        };
        let keys_listed = Arc::new(AtomicU64::new(0));
        let discovery = Discovery {
            origin,
            expr: config.path_expression.clone(),
            start,
            log: log.clone(),
            keys_listed: keys_listed.clone(),
        };
        log.info(format_args!(
            "started: {} path_expression={} start_time={} scan_interval={}s workers={} batch_bytes={}",
            match &config.source {
                Source::S3(s) => format!("bucket={}", s.bucket),
                Source::Dir(d) => format!("dir={}", d.display()),
            },
            config.path_expression,
            start.secs(),
            config.scan_interval.as_secs(),
            config.workers,
            config.batch_bytes,
        ));

        let chunk_target = (config.batch_bytes / 4).clamp(16 << 10, 1 << 20);
        let core = Arc::new(Core {
            queue: Handoff::new(config.buffer_bytes),
            store: Mutex::new(store),
            log,
            encoder,
            client,
            paused: watch::Sender::new(false),
            counters: Counters::default(),
            keys_listed,
            chunk_target,
            config,
        });
        let (stop, stop_rx) = watch::channel(false);
        runtime.spawn(run(core.clone(), discovery, stop_rx));
        Ok(Self {
            core,
            runtime: Some(runtime),
            stop,
            closed: AtomicBool::new(false),
        })
    }

    /// Takes up to `max_bytes` of encoded records, waiting at most `wait` for the first.
    /// The batch's marks go back through [`Engine::commit`] once the bytes are delivered.
    pub fn take(&self, max_bytes: usize, wait: Duration) -> Option<Batch> {
        self.core.queue.take(max_bytes, wait)
    }

    /// Records that a taken batch was delivered, and saves the state.
    pub fn commit(&self, marks: &[Mark]) {
        self.core.commit(marks)
    }

    /// Stops starting new downloads and scans (Fluent Bit paused the input).
    pub fn pause(&self) {
        self.core.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.core.paused.send_replace(false);
    }

    /// True when a scan has finished and everything it found is delivered or given up on.
    pub fn is_idle(&self) -> bool {
        self.core.counters.scans.load(Ordering::Acquire) > 0
            && self.core.store().inflight() == 0
            && self.core.queue.is_empty()
    }

    pub fn stats(&self) -> Stats {
        let c = &self.core.counters;
        Stats {
            scans: c.scans.load(Ordering::Relaxed),
            objects_done: c.objects_done.load(Ordering::Relaxed),
            objects_failed: c.objects_failed.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            events_fallback_time: c.events_fallback_time.load(Ordering::Relaxed),
            events_unencodable: c.events_unencodable.load(Ordering::Relaxed),
            keys_listed: self.core.keys_listed.load(Ordering::Relaxed),
        }
    }

    pub fn logger(&self) -> &Logger {
        &self.core.log
    }

    /// Stops every thread of the engine and saves the state. Records still queued are
    /// dropped; their objects resume from the last committed position on the next start.
    pub fn shutdown(&mut self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.core.queue.close();
        self.stop.send_replace(true);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        if let Err(e) = self.core.store().save() {
            self.core
                .log
                .error(format_args!("saving state at shutdown: {e}"));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Core {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts happen here, at delivery, so the totals say what the host has.
    fn commit(&self, marks: &[Mark]) {
        let c = &self.counters;
        let mut s = self.store();
        for m in marks {
            c.events.fetch_add(m.events, Ordering::Relaxed);
            match &m.end {
                None => s.record_progress(&m.id, m.position),
                Some(End::Done) => {
                    c.objects_done.fetch_add(1, Ordering::Relaxed);
                    s.record_done(&m.id)
                }
                Some(End::Failed(reason)) => {
                    c.objects_failed.fetch_add(1, Ordering::Relaxed);
                    s.record_failed(&m.id, reason)
                }
            }
        }
        if let Err(e) = s.save() {
            self.log
                .error(format_args!("{e} (will retry on the next batch)"));
        }
    }

    async fn wait_unpaused(&self) {
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|paused| !paused).await;
    }

    /// Fetches and splits one object; every outcome ends in the queue or in a release.
    async fn process(self: &Arc<Self>, object: ObjectRef) {
        self.wait_unpaused().await;
        let bytes = match fetch(self.client.as_ref(), &object, self.config.max_object_bytes).await {
            Ok(bytes) => bytes,
            Err(FetchError::Transient(reason)) => {
                self.log.warn(format_args!("{object}: {reason}"));
                self.store().release(&object.id);
                return;
            }
            Err(FetchError::Permanent(reason)) => {
                self.log
                    .error(format_args!("{object}: {reason}; object skipped"));
                let position = self.store().progress(&object.id);
                let _ = self.queue.push(Chunk {
                    bytes: Vec::new(),
                    events: 0,
                    mark: Mark {
                        id: object.id.clone(),
                        events: 0,
                        position,
                        end: Some(End::Failed(reason)),
                    },
                });
                return;
            }
        };
        let core = self.clone();
        let id = object.id.clone();
        if let Err(e) =
            tokio::task::spawn_blocking(move || core.split_object(&object, &bytes)).await
        {
            self.log
                .error(format_args!("s3 object {id}: split task failed: {e}"));
            self.store().release(&id);
        }
    }

    /// Decodes, splits and encodes on a blocking thread, pushing chunks as they fill.
    fn split_object(&self, object: &ObjectRef, bytes: &[u8]) {
        let skip = self.store().progress(&object.id);
        let reader = decode::open(bytes, self.config.max_object_bytes);
        let mut buf = Vec::with_capacity(self.chunk_target + (64 << 10));
        let mut events = 0u64;
        let options = SplitOptions {
            skip,
            fallback: object.last_modified,
            max_event_bytes: self.config.max_event_bytes,
        };
        let outcome = split(reader, options, |event| {
            let before = buf.len();
            if let Err(e) = self.encoder.encode(&event, object, &mut buf) {
                buf.truncate(before);
                self.counters
                    .events_unencodable
                    .fetch_add(1, Ordering::Relaxed);
                self.log.error(format_args!(
                    "{object}: event {} left out: {e}",
                    event.index
                ));
                return Ok(());
            }
            events += 1;
            if buf.len() < self.chunk_target {
                return Ok(());
            }
            let n = std::mem::take(&mut events);
            let chunk = Chunk {
                bytes: std::mem::replace(
                    &mut buf,
                    Vec::with_capacity(self.chunk_target + (64 << 10)),
                ),
                events: n,
                mark: Mark {
                    id: object.id.clone(),
                    events: n,
                    position: event.index + 1,
                    end: None,
                },
            };
            self.queue.push(chunk).map_err(|_| Stop)
        });
        let stats = outcome.stats;
        let c = &self.counters;
        c.events_fallback_time
            .fetch_add(stats.fallback_time, Ordering::Relaxed);
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
        let end = match outcome.error {
            None => {
                self.log
                    .debug(format_args!("{object}: {} events", stats.events));
                End::Done
            }
            Some(SplitError::Stopped) => return,
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
        let _ = self.queue.push(Chunk {
            bytes: buf,
            events,
            mark: Mark {
                id: object.id.clone(),
                events,
                position: stats.position,
                end: Some(end),
            },
        });
    }
}

/// Scans on every interval and feeds the workers until told to stop.
async fn run(core: Arc<Core>, discovery: Discovery, mut stop: watch::Receiver<bool>) {
    let (tx, rx) = mpsc::channel::<ObjectRef>(core.config.workers * 2);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    for _ in 0..core.config.workers {
        let core = core.clone();
        let rx = rx.clone();
        tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                match next {
                    Some(object) => core.process(object).await,
                    None => return,
                }
            }
        });
    }
    loop {
        tokio::select! {
            _ = core.wait_unpaused() => {}
            _ = stop.changed() => return,
        }
        let found = discovery.scan(&core.store).await;
        if !found.is_empty() {
            core.log
                .debug(format_args!("scan found {} new objects", found.len()));
        }
        for object in found {
            tokio::select! {
                sent = tx.send(object) => if sent.is_err() { return },
                _ = stop.changed() => return,
            }
        }
        core.counters.scans.fetch_add(1, Ordering::AcqRel);
        tokio::select! {
            _ = tokio::time::sleep(core.config.scan_interval) => {}
            _ = stop.changed() => return,
        }
    }
}
