//! The engine: discovery, download and split on a background runtime, feeding a bounded
//! queue that a front end drains.
//!
//! ```text
//!  scan (discover) ──► workers: fetch ─► decode ─► split ─► encode ─► Handoff queue
//!        ▲                                                              │ take()
//!        └──────────── Ledger (db) ◄── commit(marks) ◄── front end hands bytes to host
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

use crate::config::{Config, Source, StartTime};
use crate::discover::Discovery;
use crate::discover::bucket::BucketScan;
use crate::discover::folder::{self, FolderScan};
use crate::discover::listing::{S3Lister, SystemClock};
use crate::discover::sqs::{Queue, Received, Tracker, Verdict};
use crate::encode::Encoder;
use crate::engine::handoff::{Batch, Chunk, End, Handoff, Mark};
use crate::ledger::{Claimable, Honour, Ledger, LedgerError, Status};
use crate::log::Logger;
use crate::object::ObjectRef;
use crate::observe::Observe;
use crate::observe::metrics::{Metrics, Op, Outcome};
use crate::read::decode;
use crate::read::fetch::{FetchError, Opened, open};
use crate::read::split::{SplitError, SplitOptions, Stop, split};
use crate::timestamp::EventTime;

pub mod handoff;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] LedgerError),
    #[error("could not start the background runtime: {0}")]
    Runtime(std::io::Error),
    #[error("'metrics.listen': cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
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
    /// LIST requests made.
    pub list_calls: u64,
    /// Keys listed and LIST requests made by the last complete scan: what an idle scan
    /// costs once the listing has caught up.
    pub last_scan_keys_listed: u64,
    pub last_scan_list_calls: u64,
    /// Keys in SQS notifications that `path_expression` does not match.
    pub notices_unmatched: u64,
    /// SQS messages handed back to the queue (a transient failure of a whole message, a
    /// failed commit, a quarantine retry).
    pub sqs_returned: u64,
}

/// What the last complete scan cost.
#[derive(Default)]
struct LastScan {
    keys_listed: AtomicU64,
    list_calls: AtomicU64,
}

/// A scan that finds more objects than this starts a backfill: progress is logged every
/// [`PROGRESS_EVERY`] until they are shipped.
const BACKFILL: usize = 300;
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// A backfill in progress: what the scan found and where the counters stood.
struct Backfill {
    found: u64,
    finished_before: u64,
    events_before: u64,
    started: std::time::Instant,
}

/// How far a backfill has come.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackfillProgress {
    pub found: u64,
    /// Objects shipped or failed for good since the scan.
    pub finished: u64,
    pub events_per_sec: f64,
    /// Seconds left at the rate so far (`None` before the first object).
    pub eta_secs: Option<u64>,
}

/// First allocation of a chunk buffer.
const CHUNK_START: usize = 16 << 10;

struct Core {
    config: Config,
    queue: Handoff,
    ledger: Ledger,
    log: Logger,
    encoder: Arc<dyn Encoder>,
    client: Option<Client>,
    paused: watch::Sender<bool>,
    observe: Arc<Observe>,
    last_scan: LastScan,
    /// The backfill in progress, if a scan found many objects.
    backfill: Mutex<Option<Backfill>>,
    /// When an unmatched notification key was last logged (rate limit), in Unix seconds.
    unmatched_logged_at: AtomicU64,
    chunk_target: usize,
    /// SQS discovery, when configured; `tracker` holds its messages.
    sqs: Option<Arc<Queue>>,
    tracker: Mutex<Tracker>,
    /// The last receive returned nothing (for `is_idle`).
    sqs_idle: AtomicBool,
    /// Whether a listing runs (bucket or folder).
    listing: bool,
    /// SQS verdicts (deletes, visibility changes) sent and not answered yet.
    settling: Arc<watch::Sender<usize>>,
    /// Verdicts for the settler ([`settle_loop`]), which carries them out one call at a
    /// time, deletes in batches.
    settle_tx: mpsc::UnboundedSender<Verdict>,
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
        let now = EventTime::now().secs();
        let bucket = match &config.source {
            Source::S3(s3) => s3.bucket.clone(),
            Source::Dir(_) => None,
        };
        let ledger = Ledger::open(config.db.as_deref(), bucket.as_deref(), now)?;
        if config.db.is_none() {
            log.warn(format_args!(
                "no 'db' set: what was shipped is remembered in memory only, so a restart ships the start_time window again"
            ));
        }
        let first_start = ledger.first_start_or(now)?;
        let start = match config.start_time {
            StartTime::At(t) => t,
            StartTime::Before(d) => {
                let secs = i64::from(first_start) - i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                EventTime::new(secs.max(0), 0).unwrap_or(EventTime::now())
            }
        };
        let lookback = u32::try_from(config.lookback.as_secs()).unwrap_or(u32::MAX);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(config.workers + 4)
            .thread_name("cloudtrail-s3")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;

        let mut endpoints = String::new();
        let observe = Arc::new(Observe::new(
            u32::try_from(config.silence_alarm.as_secs()).unwrap_or(u32::MAX),
        ));
        // Freshness picks up where the last run left it: each prefix's watermark key names
        // the newest object finished there.
        for (_, mark) in ledger.watermarks()? {
            observe.freshness.seed(&mark);
        }
        // Bound before anything starts: an address in use stops start-up with its key.
        let metrics_listener = match &config.metrics_listen {
            None => None,
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr.as_str())
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|e| StartError::Listen {
                        addr: addr.clone(),
                        source: e,
                    })?;
                Some(l)
            }
        };
        let (client, discovery, sqs) = match &config.source {
            Source::S3(s3) => {
                let (client, sdk) = runtime.block_on(crate::aws::client::clients(s3));
                let aws = || {
                    format!(
                        "AWS ({})",
                        sdk.region()
                            .map_or("region from the SDK chain: none found", |r| r.as_ref())
                    )
                };
                endpoints = format!(
                    " s3 endpoint={}{}",
                    s3.endpoint.clone().unwrap_or_else(aws),
                    s3.sqs.as_ref().map_or(String::new(), |q| format!(
                        ", sqs endpoint={}",
                        q.endpoint.clone().unwrap_or_else(aws)
                    ))
                );
                let discovery = s3.bucket.as_ref().map(|bucket| {
                    Discovery::Bucket(BucketScan::new(
                        S3Lister {
                            client: client.clone(),
                            bucket: bucket.as_str().into(),
                            observe: observe.clone(),
                        },
                        SystemClock,
                        config.path_expression.clone(),
                        start,
                        lookback,
                        log.clone(),
                    ))
                });
                let sqs = s3.sqs.clone().map(|q| {
                    Arc::new(runtime.block_on(Queue::new(q, &sdk, log.clone(), observe.clone())))
                });
                (Some(client), discovery, sqs)
            }
            Source::Dir(root) => (
                None,
                Some(Discovery::Folder(FolderScan {
                    root: root.clone(),
                    clock: SystemClock,
                    expr: config.path_expression.clone(),
                    start,
                    lookback,
                    log: log.clone(),
                })),
                None,
            ),
        };
        log.info(format_args!(
            "started: {}{endpoints} path_expression={} start_time={} lookback={}s scan_interval={}s workers={} batch_bytes={}",
            match &config.source {
                Source::S3(s) => format!(
                    "bucket={} sqs.queue_url={}",
                    s.bucket.as_deref().unwrap_or("-"),
                    s.sqs.as_ref().map_or("-", |q| q.queue_url.as_str())
                ),
                Source::Dir(d) => format!("dir={}", d.display()),
            },
            config.path_expression,
            start.secs(),
            lookback,
            config.scan_interval.as_secs(),
            config.workers,
            config.batch_bytes,
        ));

        let chunk_target = (config.batch_bytes / 4).clamp(16 << 10, 1 << 20);
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let core = Arc::new(Core {
            queue: Handoff::new(config.buffer_bytes),
            ledger,
            log,
            encoder,
            client,
            paused: watch::Sender::new(false),
            observe,
            last_scan: LastScan::default(),
            backfill: Mutex::new(None),
            unmatched_logged_at: AtomicU64::new(0),
            chunk_target,
            tracker: Mutex::new(Tracker::new(
                sqs.as_ref().map_or(1, |q| q.config.max_receive_count),
                config.db.is_some(),
            )),
            sqs,
            sqs_idle: AtomicBool::new(false),
            listing: discovery.is_some(),
            settling: Arc::new(watch::Sender::new(0)),
            settle_tx,
            config,
        });
        let (stop, stop_rx) = watch::channel(false);
        if let Some(listener) = metrics_listener {
            let _guard = runtime.enter();
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(|e| StartError::Listen {
                    addr: core.config.metrics_listen.clone().unwrap_or_default(),
                    source: e,
                })?;
            let route_core = core.clone();
            runtime.spawn(crate::observe::serve::serve(
                listener,
                Arc::new(move |path: &str| route_core.answer(path)),
            ));
        }
        if let Some(queue) = &core.sqs {
            runtime.spawn(settle_loop(queue.clone(), settle_rx, core.settling.clone()));
        }
        runtime.spawn(watch_loop(core.clone(), stop_rx.clone()));
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
        let batch = self.core.queue.take(max_bytes, wait)?;
        if !batch.marks.is_empty() {
            self.core.observe.health.taken(EventTime::now().secs());
        }
        Some(batch)
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
        let core = &self.core;
        (!core.listing || core.observe.metrics.scans.load(Ordering::Acquire) > 0)
            && (core.sqs.is_none()
                || (core.sqs_idle.load(Ordering::Acquire) && core.tracker().is_empty()))
            && core.ledger.inflight_count() == 0
            && core.queue.is_empty()
    }

    pub fn stats(&self) -> Stats {
        let m = &self.core.observe.metrics;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            scans: get(&m.scans),
            objects_done: get(&m.objects_shipped),
            objects_failed: get(&m.objects_failed),
            events: get(&m.events_shipped),
            events_fallback_time: get(&m.events_fallback_time),
            events_unencodable: get(&m.events_unencodable),
            keys_listed: get(&m.keys_listed),
            list_calls: m.requests_of(Op::ListObjects),
            notices_unmatched: get(&m.notices_unmatched),
            sqs_returned: get(&m.sqs_returned),
            last_scan_keys_listed: get(&self.core.last_scan.keys_listed),
            last_scan_list_calls: get(&self.core.last_scan.list_calls),
        }
    }

    /// Objects the ledger holds open: found, not shipped yet (waiting out a backoff after a
    /// transient failure, or interrupted). Reads the whole ledger: for exit, not per batch.
    pub fn open_objects(&self) -> u64 {
        self.core.ledger.counts().map_or(0, |(open, _, _)| open)
    }

    /// The backfill in progress, when a scan found more than a few hundred objects.
    pub fn backfill(&self) -> Option<BackfillProgress> {
        self.core.backfill_progress()
    }

    pub fn logger(&self) -> &Logger {
        &self.core.log
    }

    /// What the engine observes, for a front end's output to add its own counts and health.
    pub fn observe(&self) -> &Arc<Observe> {
        &self.core.observe
    }

    /// Stops every thread of the engine and saves the state. Records still queued are
    /// dropped; their objects resume from the last committed position on the next start.
    pub fn shutdown(&mut self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.core.queue.close();
        self.stop.send_replace(true);
        if let (Some(rt), Some(queue)) = (&self.runtime, &self.core.sqs) {
            // Messages still held go back to the queue at once, for other consumers, and
            // the deletes of finished ones complete.
            let held = self.core.tracker().drain();
            let queue = queue.clone();
            let mut settling = self.core.settling.subscribe();
            let done = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), async {
                    for h in held {
                        queue.settle(Verdict::Retry(h, Duration::ZERO)).await;
                    }
                    let _ = settling.wait_for(|n| *n == 0).await;
                })
                .await
            });
            if done.is_err() {
                self.core.log.warn(format_args!(
                    "sqs: {} message deletes or hand-backs unanswered after 5 s at shutdown; those messages come back after their visibility timeout: this shipper skips them as shipped, another one on the queue would ship them again",
                    *self.core.settling.borrow()
                ));
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Core {
    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands verdicts on SQS messages to the runtime (commit runs on the host's thread).
    /// Shutdown waits for them: a delete dropped at exit would let the message come back
    /// to another consumer, which would ship its objects again.
    fn settle(&self, verdicts: Vec<Verdict>) {
        if self.sqs.is_some() {
            // A message is deleted with objects still to retry only once the ledger has
            // them on disk: a crash in between would lose them with the message.
            if verdicts.iter().any(|v| v.held().entrusted() > 0)
                && let Err(e) = self.ledger.sync()
            {
                self.log.error(format_args!(
                    "{e}; the SQS messages of objects waiting for a retry are handed back instead of deleted"
                ));
                self.settle_all(
                    verdicts
                        .into_iter()
                        .map(|v| match v {
                            Verdict::Entrust(h) => Verdict::Retry(h, Duration::from_secs(10)),
                            v => v,
                        })
                        .collect(),
                );
                return;
            }
            self.settle_all(verdicts);
        }
    }

    fn settle_all(&self, verdicts: Vec<Verdict>) {
        for v in verdicts {
            self.settling.send_modify(|n| *n += 1);
            if self.settle_tx.send(v).is_err() {
                self.settling.send_modify(|n| *n -= 1);
            }
        }
    }

    /// An object now waits in the ledger for a retry in `wait` seconds: its SQS messages
    /// stop waiting for it, so they do not take `max_messages_in_flight` slots while it
    /// stays denied or the store is down.
    fn entrust(&self, id: &str, wait: u32) {
        if self.sqs.is_some() {
            let verdicts = self.tracker().entrusted(id, wait);
            self.settle(verdicts);
        }
    }

    /// Counts happen here, at delivery, so the totals say what the host has. SQS messages
    /// are settled only after the ledger has the commit: a message deleted before would be
    /// lost with its objects if the process died in between.
    fn commit(&self, marks: &[Mark]) {
        if marks.is_empty() {
            return;
        }
        let m = &self.observe.metrics;
        let now = EventTime::now().secs();
        let started = std::time::Instant::now();
        let committed = self.ledger.commit(marks, now, self.config.retry_backoff);
        m.commit_seconds.observe(started.elapsed());
        let ok = match committed {
            Ok(done) => {
                Metrics::add(&m.events_shipped, done.events);
                Metrics::add(&m.objects_shipped, done.done);
                Metrics::add(&m.objects_failed, done.failed);
                self.observe.health.commit(now, Ok(()));
                for mark in marks {
                    match &mark.end {
                        Some(End::Done) => self.observe.health.object(now, true, None),
                        Some(End::Failed(_)) => self.observe.health.object(now, false, None),
                        _ => {}
                    }
                    // Events reached the host: the account and region delivered, whether
                    // the object ends shipped, damaged after them, or later.
                    if mark.events > 0 || mark.end == Some(End::Done) {
                        self.observe
                            .freshness
                            .record(&mark.id, mark.newest_event, mark.modified);
                    }
                }
                true
            }
            Err(e) => {
                self.observe.health.commit(now, Err(e.to_string()));
                // The host has the events, the ledger does not know: the objects are let
                // go, to be found again and shipped again (repeated, never lost).
                self.log.error(format_args!(
                    "{e}; the {} objects of this batch will be shipped again",
                    marks.len()
                ));
                for m in marks {
                    self.ledger.let_go(&m.id);
                }
                false
            }
        };
        if self.sqs.is_some() {
            let mut verdicts = Vec::new();
            let mut t = self.tracker();
            for m in marks {
                match &m.end {
                    Some(End::Done) if ok => verdicts.extend(t.finished(&m.id, None)),
                    Some(End::Failed(reason)) if ok => {
                        verdicts.extend(t.finished(&m.id, Some(reason)))
                    }
                    // Retried from the ledger, from its position, after its backoff.
                    Some(End::Abandoned(_)) if ok => {
                        let wait = match self.ledger.entry(&m.id) {
                            Ok(Some(e)) => e.not_before.saturating_sub(now),
                            _ => 0,
                        };
                        verdicts.extend(t.entrusted(&m.id, wait))
                    }
                    Some(_) => verdicts.extend(t.abandoned(&m.id)),
                    None => {}
                }
            }
            drop(t);
            self.settle(verdicts);
        }
    }

    async fn wait_unpaused(&self) {
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|paused| !paused).await;
    }

    /// Fetches and splits one object; every outcome ends in the queue or in a release.
    async fn process(self: &Arc<Self>, object: ObjectRef) {
        self.wait_unpaused().await;
        let opened = open(self.client.as_ref(), &object, self.config.max_object_bytes).await;
        if matches!(object.location, crate::object::Location::S3 { .. }) {
            let outcome = match &opened {
                Ok(_) => Outcome::Ok,
                Err(e) => Outcome::Failed(e.class()),
            };
            self.observe.metrics.request(Op::GetObject, outcome);
        }
        if let Err(e) = &opened {
            let denied = matches!(e, FetchError::Denied(_)).then(|| e.to_string());
            self.observe
                .health
                .object(EventTime::now().secs(), false, denied.as_deref());
        }
        let opened = match opened {
            Ok(opened) => opened,
            Err(e @ (FetchError::Transient(_) | FetchError::Denied(_))) => {
                let denied = matches!(e, FetchError::Denied(_));
                let (backoff, reason) = match e {
                    FetchError::Denied(r) => (self.config.denied_backoff, r),
                    FetchError::Transient(r) | FetchError::Permanent(r) => {
                        (self.config.retry_backoff, r)
                    }
                };
                match self
                    .ledger
                    .release(&object.id, &reason, backoff, EventTime::now().secs())
                {
                    Ok(wait) => {
                        // A denied read is a permission or setting to fix: error level.
                        if denied {
                            self.log
                                .error(format_args!("{object}: {reason}; tried again in {wait} s"));
                        } else {
                            self.log
                                .warn(format_args!("{object}: {reason}; tried again in {wait} s"));
                        }
                        // The ledger retries it; its SQS message does not wait.
                        self.entrust(&object.id, wait);
                    }
                    Err(e) => {
                        self.log.error(format_args!("{object}: {reason}; {e}"));
                        // The ledger may not know it: its messages go back to the queue.
                        if self.sqs.is_some() {
                            let verdicts = self.tracker().abandoned(&object.id);
                            self.settle(verdicts);
                        }
                    }
                }
                return;
            }
            Err(FetchError::Permanent(reason)) => {
                self.log
                    .error(format_args!("{object}: {reason}; object skipped"));
                let position = self.progress(&object);
                let _ = self.queue.push(Chunk {
                    bytes: Vec::new(),
                    events: 0,
                    mark: Mark {
                        id: object.id.clone(),
                        events: 0,
                        position,
                        end: Some(End::Failed(reason)),
                        newest_event: 0,
                        modified: object.last_modified.secs(),
                    },
                });
                return;
            }
        };
        let core = self.clone();
        let id = object.id.clone();
        if let Err(e) =
            tokio::task::spawn_blocking(move || core.split_object(&object, opened)).await
        {
            self.log
                .error(format_args!("s3 object {id}: split task failed: {e}"));
            self.ledger.let_go(&id);
        }
    }

    /// Decodes, splits and encodes on a blocking thread, pushing chunks as they fill.
    fn split_object(&self, object: &ObjectRef, opened: Opened) {
        let skip = self.progress(object);
        let fallback = opened.last_modified.unwrap_or(object.last_modified);
        let m = self.observe.clone();
        let downloaded = Counted {
            inner: opened.into_reader(),
            observe: m.clone(),
            decompressed: false,
        };
        let reader = Counted {
            inner: decode::open_stream(downloaded, self.config.max_object_bytes),
            observe: m,
            decompressed: true,
        };
        // Chunk buffers start small and grow by doubling: the queue's byte budget counts
        // lengths, so capacity must stay within 2x of them (objects are mostly small).
        let mut buf = Vec::with_capacity(CHUNK_START);
        let mut events = 0u64;
        let mut newest = 0u32;
        let options = SplitOptions {
            skip,
            fallback,
            max_event_bytes: self.config.max_event_bytes,
        };
        let outcome = split(reader, options, |event| {
            let before = buf.len();
            if let Err(e) = self.encoder.encode(&event, object, &mut buf) {
                buf.truncate(before);
                Metrics::add(&self.observe.metrics.events_unencodable, 1);
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
            let chunk = Chunk {
                bytes: std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_START)),
                events: n,
                mark: Mark {
                    id: object.id.clone(),
                    events: n,
                    position: event.index + 1,
                    end: None,
                    newest_event: std::mem::take(&mut newest),
                    modified: object.last_modified.secs(),
                },
            };
            self.queue.push(chunk).map_err(|_| Stop)
        });
        let stats = outcome.stats;
        Metrics::add(
            &self.observe.metrics.events_fallback_time,
            stats.fallback_time,
        );
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
        let _ = self.queue.push(Chunk {
            bytes: buf,
            events,
            mark: Mark {
                id: object.id.clone(),
                events,
                position: stats.position,
                end: Some(end),
                newest_event: newest,
                modified: object.last_modified.secs(),
            },
        });
    }
}

/// Feeds the workers from the listing and from SQS until told to stop.
async fn run(core: Arc<Core>, discovery: Option<Discovery>, mut stop: watch::Receiver<bool>) {
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
    if let Some(queue) = core.sqs.clone() {
        tokio::spawn(receive_loop(
            core.clone(),
            queue.clone(),
            tx.clone(),
            stop.clone(),
        ));
        tokio::spawn(heartbeat_loop(core.clone(), queue, stop.clone()));
        if discovery.is_none() {
            // No listing to re-queue them: objects that failed transiently are tried
            // again from the ledger once their backoff has passed.
            tokio::spawn(requeue_loop(core.clone(), tx.clone(), stop.clone()));
        }
    }
    let Some(mut discovery) = discovery else {
        return;
    };
    loop {
        tokio::select! {
            _ = core.wait_unpaused() => {}
            _ = stop.changed() => return,
        }
        let m = &core.observe.metrics;
        let (keys, calls) = (
            m.keys_listed.load(Ordering::Relaxed),
            m.requests_of(Op::ListObjects),
        );
        let found = discovery.scan(&core.ledger, &core.log).await;
        core.last_scan.keys_listed.store(
            m.keys_listed.load(Ordering::Relaxed) - keys,
            Ordering::Relaxed,
        );
        core.last_scan
            .list_calls
            .store(m.requests_of(Op::ListObjects) - calls, Ordering::Relaxed);
        core.start_backfill(found.len());
        core.log.debug(format_args!(
            "{discovery}: scan found {} new objects",
            found.len()
        ));
        for object in found {
            tokio::select! {
                sent = tx.send(object) => if sent.is_err() { return },
                _ = stop.changed() => return,
            }
        }
        core.observe.metrics.scans.fetch_add(1, Ordering::AcqRel);
        tokio::select! {
            _ = tokio::time::sleep(core.config.scan_interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// How often SQS-only discovery looks for objects due for another try.
const REQUEUE_EVERY: Duration = Duration::from_secs(2);

/// SQS alone: puts open objects whose backoff has passed back in line.
async fn requeue_loop(
    core: Arc<Core>,
    tx: mpsc::Sender<ObjectRef>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REQUEUE_EVERY) => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = core.wait_unpaused() => {}
            _ = stop.changed() => return,
        }
        let due = crate::discover::requeue(&core.ledger, EventTime::now().secs(), None, &core.log);
        for object in due {
            tokio::select! {
                sent = tx.send(object) => if sent.is_err() { return },
                _ = stop.changed() => return,
            }
        }
    }
}

/// Long-polls the queue while the host is not paused and fewer than the allowed number of
/// messages are held.
async fn receive_loop(
    core: Arc<Core>,
    queue: Arc<Queue>,
    tx: mpsc::Sender<ObjectRef>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0;
    loop {
        tokio::select! {
            _ = core.wait_unpaused() => {}
            _ = stop.changed() => return,
        }
        if core.tracker().len() >= queue.config.max_messages_in_flight {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                _ = stop.changed() => return,
            }
        }
        let received = tokio::select! {
            r = queue.receive() => r,
            _ = stop.changed() => return,
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(class) => {
                failures += 1;
                tokio::select! {
                    _ = tokio::time::sleep(crate::discover::sqs::receive_backoff(class, failures)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        failures = 0;
        core.sqs_idle.store(messages.is_empty(), Ordering::Release);
        for m in messages {
            let objects = core.take_message(&queue, m).await;
            for object in objects {
                tokio::select! {
                    sent = tx.send(object) => if sent.is_err() { return },
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// Carries out verdicts in the order they came, one SQS call at a time: deletes that are
/// ready together go in one `DeleteMessageBatch` (up to 10), which saves calls at a high
/// rate. Serial calls also keep the test server honest: moto rebuilds its message list
/// without a lock, so two deletes at once can bring one of the messages back.
async fn settle_loop(
    queue: Arc<Queue>,
    mut rx: mpsc::UnboundedReceiver<Verdict>,
    settling: Arc<watch::Sender<usize>>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < crate::discover::sqs::DELETE_BATCH {
            match rx.try_recv() {
                Ok(v) => batch.push(v),
                Err(_) => break,
            }
        }
        let n = batch.len();
        queue.settle_many(batch).await;
        settling.send_modify(|c| *c -= n);
    }
}

/// Extends the visibility of held messages at half the timeout.
async fn heartbeat_loop(core: Arc<Core>, queue: Arc<Queue>, mut stop: watch::Receiver<bool>) {
    let visibility = queue.config.visibility_timeout;
    let tick = (visibility / 4).max(Duration::from_millis(500));
    let mut last_forget = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        if last_forget.elapsed() >= Duration::from_secs(300) {
            core.forget_notified();
            last_forget = std::time::Instant::now();
        }
        let due = core.tracker().due(visibility / 2);
        for receipt in due {
            Metrics::add(&core.observe.metrics.sqs_extended, 1);
            queue.set_visibility(&receipt, visibility).await;
        }
    }
}

impl Core {
    /// Reads one message: claims its new objects (returned, for the workers) and holds it
    /// until they are shipped.
    async fn take_message(&self, queue: &Queue, m: Received) -> Vec<ObjectRef> {
        use crate::discover::notify::Notice;
        let announced = match crate::discover::notify::parse(&m.body) {
            Notice::Test => {
                self.log.debug(format_args!(
                    "sqs message {}: S3 test event, deleted",
                    m.message_id
                ));
                queue.delete(&m.message_id, &m.receipt).await;
                return Vec::new();
            }
            Notice::Unknown(reason) => {
                self.log.warn(format_args!(
                    "sqs message {}: {reason}; left in the queue for its redrive policy",
                    m.message_id
                ));
                return Vec::new();
            }
            Notice::Objects(list) => list,
        };
        let now = EventTime::now().secs();
        let lookback = u32::try_from(self.config.lookback.as_secs()).unwrap_or(u32::MAX);
        let listed_bucket = match &self.config.source {
            Source::S3(s3) if self.listing => s3.bucket.as_deref(),
            _ => None,
        };
        let mut candidates = Vec::new();
        for a in announced {
            if !self.config.path_expression.matches(&a.key)
                || a.key.contains(crate::discover::DIGEST_DIR)
            {
                self.unmatched(&m.message_id, &a.bucket, &a.key, now);
                continue;
            }
            Metrics::add(&self.observe.metrics.notices_matched, 1);
            // Hybrid: a key behind its prefix's listing horizon, unknown to the ledger, was
            // covered by the listing (shipped and since forgotten) when the notification is
            // old: shipping it again would repeat it. A recent notification means the object
            // landed late, behind the listing: the listing will never see it, so it ships.
            if listed_bucket == Some(a.bucket.as_str())
                && crate::discover::bucket::below_horizon(&self.ledger, &a.bucket, &a.key, lookback)
                    .unwrap_or(false)
                && matches!(
                    self.ledger.entry(&crate::object::s3_id(&a.bucket, &a.key)),
                    Ok(None)
                )
            {
                // CloudTrail's own notification carries no time: the message's SQS
                // `SentTimestamp` dates it. Undated, it ships: a repeat, never a loss.
                let recent = a
                    .time
                    .map(|t| t.secs())
                    .or(m.sent)
                    .is_none_or(|t| t >= now.saturating_sub(lookback));
                if !recent {
                    Metrics::add(&self.observe.metrics.notices_behind, 1);
                    self.log.warn(format_args!(
                        "sqs message {}: s3://{}/{} is behind the listing's horizon and its notification is older than the lookback: taken as shipped and forgotten, not shipped again",
                        m.message_id, a.bucket, a.key
                    ));
                    continue;
                }
                self.log.info(format_args!(
                    "sqs message {}: s3://{}/{} landed late, behind the listing's horizon: shipped from the notification",
                    m.message_id, a.bucket, a.key
                ));
            }
            let bucket: Arc<str> = a.bucket.as_str().into();
            let time = a.time.unwrap_or_else(EventTime::now);
            candidates.push(ObjectRef::s3(&bucket, a.key, a.size.unwrap_or(0), time));
        }
        let (send, verdict) = self.hold_message(m, candidates, queue.config.max_receive_count, now);
        self.settle(verdict.into_iter().collect());
        send
    }

    /// Claims a message's objects that are not finished and holds the message until they
    /// are; returns the objects claimed, and the verdict when nothing is left pending.
    fn hold_message(
        &self,
        m: Received,
        candidates: Vec<ObjectRef>,
        max_receive_count: u32,
        now: u32,
    ) -> (Vec<ObjectRef>, Option<Verdict>) {
        let mut send = Vec::new();
        let mut pending = std::collections::HashSet::new();
        let mut failed = Vec::new();
        // The tracker is locked from the first look at the ledger until the message is
        // held: a commit updates the ledger before it tells the tracker, so no object can
        // finish unseen in between.
        let mut tracker = self.tracker();
        // How each object is forgotten: a key the listing covers by the listing's own rule
        // (forgetting it sooner would let the listing ship it again), others by claim time.
        let forget: Vec<Option<(String, u32)>> = candidates
            .iter()
            .map(|o| self.forget_rule(o, now))
            .collect();
        let mut claimable = Vec::new();
        for (object, forget) in candidates.iter().zip(&forget) {
            let entry = match self.ledger.entry(&object.id) {
                Ok(e) => e,
                Err(e) => {
                    self.log.error(format_args!("{e}"));
                    // Not known to be shipped: treated as new (a repeat at worst).
                    None
                }
            };
            match entry.map(|e| (e.status, e.reason)) {
                Some((Status::Done, _)) => continue,
                Some((Status::Failed, reason)) => {
                    if m.receive_count >= max_receive_count {
                        failed.push((object.id.clone(), reason));
                        continue;
                    }
                    // Tried again from where it stopped: its good prefix is not repeated.
                    if let Err(e) = self.ledger.unfail(&object.id, now) {
                        self.log.error(format_args!("{e}"));
                    }
                }
                Some((Status::Open, _)) | None => {}
            }
            pending.insert(object.id.clone());
            claimable.push(Claimable {
                id: &object.id,
                size: object.size,
                modified: (object.last_modified.secs(), object.last_modified.nanos()),
                forget_by: forget.as_ref().map(|(g, t)| (g.as_str(), *t)),
            });
        }
        match self.ledger.claim(&claimable, now, Honour::Redelivery) {
            Ok(claimed) => {
                let claimed: std::collections::HashSet<&str> =
                    claimed.iter().map(|s| &**s).collect();
                send.extend(
                    candidates
                        .iter()
                        .filter(|o| claimed.contains(&*o.id))
                        .cloned(),
                );
            }
            Err(e) => {
                // Nothing was claimed, so nothing would ever finish the message: it goes
                // back to the queue instead of being held for good.
                self.log.error(format_args!(
                    "sqs message {}: {e}; handed back to the queue for another try",
                    m.message_id
                ));
                return (
                    Vec::new(),
                    Some(Tracker::hand_back(m.message_id, m.receipt, m.receive_count)),
                );
            }
        }
        self.log.debug(format_args!(
            "sqs message {}: {} objects announced, {} pending, {} claimed here, {} failed",
            m.message_id,
            candidates.len(),
            pending.len(),
            send.len(),
            failed.len()
        ));
        let verdict = tracker.hold(m.message_id, m.receipt, m.receive_count, pending, failed);
        (send, verdict)
    }

    /// Events of the object already committed. A store that cannot be read is logged and
    /// counts as none: the object is shipped again from its start (repeated, never lost).
    fn progress(&self, object: &ObjectRef) -> u64 {
        match self.ledger.entry(&object.id) {
            Ok(entry) => entry.map_or(0, |e| e.position),
            Err(e) => {
                self.log.error(format_args!(
                    "{object}: {e}; its progress is unknown, so it is shipped from its start"
                ));
                0
            }
        }
    }

    /// How a notified object is forgotten once shipped: `None` for a key under a prefix the
    /// listing walks (its watermark's forget line does it), the flat listing's group and
    /// time for a flat listing, else SQS's group by claim time.
    fn forget_rule(&self, object: &ObjectRef, now: u32) -> Option<(String, u32)> {
        let listed = match (&self.config.source, &object.location) {
            (Source::S3(s3), crate::object::Location::S3 { bucket, key }) if self.listing => {
                s3.bucket.as_deref() == Some(&**bucket) && self.config.path_expression.matches(key)
            }
            _ => false,
        };
        if !listed {
            return Some(("sqs".to_string(), now));
        }
        let crate::object::Location::S3 { bucket, key } = &object.location else {
            return Some(("sqs".to_string(), now));
        };
        if crate::discover::layout::base(&self.config.path_expression).is_some()
            && crate::discover::layout::region_prefix(key).is_some()
        {
            None
        } else {
            Some((
                crate::discover::bucket::flat_group(bucket, &self.config.path_expression),
                object.last_modified.secs(),
            ))
        }
    }

    /// A notification key that `path_expression` does not match: deleted with its message
    /// (the queue is this trail's; leaving them would only bring them back), counted, and
    /// logged at warn at most once a minute, saying plainly when nothing has matched yet.
    fn unmatched(&self, message_id: &str, bucket: &str, key: &str, now: u32) {
        let c = &self.observe.metrics;
        let n = c.notices_unmatched.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.unmatched_logged_at.load(Ordering::Relaxed);
        if last != 0 && u64::from(now) < last + 60 {
            self.log.debug(format_args!(
                "sqs message {message_id}: s3://{bucket}/{key} does not match path_expression"
            ));
            return;
        }
        self.unmatched_logged_at
            .store(u64::from(now).max(1), Ordering::Relaxed);
        let matched = c.notices_matched.load(Ordering::Relaxed);
        let hint = if matched == 0 {
            format!(
                "; none of the {n} keys received so far matches: 'path_expression' ({}) probably misses the trail's S3 key prefix (the default '{}' finds any prefix)",
                self.config.path_expression,
                crate::config::DEFAULT_PATH_EXPRESSION
            )
        } else {
            format!(" ({n} such keys so far, {matched} matched)")
        };
        self.log.warn(format_args!(
            "sqs message {message_id}: s3://{bucket}/{key} does not match path_expression, not shipped{hint}"
        ));
    }

    /// Forgets SQS-found objects finished more than `lookback` ago.
    fn forget_notified(&self) {
        let lookback = u32::try_from(self.config.lookback.as_secs()).unwrap_or(u32::MAX);
        let before = EventTime::now().secs().saturating_sub(lookback);
        if let Err(e) = self.ledger.forget_older("sqs", before) {
            self.log.error(format_args!("{e}"));
        }
    }
}

/// Counts the bytes read through it into the metrics: downloaded (compressed) or
/// decompressed.
struct Counted<R> {
    inner: R,
    observe: Arc<Observe>,
    decompressed: bool,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let m = &self.observe.metrics;
        let counter = if self.decompressed {
            &m.bytes_decompressed
        } else {
            &m.bytes_downloaded
        };
        Metrics::add(counter, n as u64);
        Ok(n)
    }
}

impl Core {
    /// Objects shipped or failed for good, so far.
    fn finished(&self) -> u64 {
        let m = &self.observe.metrics;
        m.objects_shipped.load(Ordering::Relaxed) + m.objects_failed.load(Ordering::Relaxed)
    }

    /// A scan found `n` objects: a backfill starts when they are many.
    fn start_backfill(&self, n: usize) {
        if n <= BACKFILL {
            return;
        }
        let mut b = self.backfill.lock().unwrap_or_else(PoisonError::into_inner);
        if b.is_some() {
            if let Some(b) = b.as_mut() {
                b.found += n as u64;
            }
            return;
        }
        self.log.info(format_args!(
            "backfill: {n} objects to ship; progress every {} s",
            PROGRESS_EVERY.as_secs()
        ));
        *b = Some(Backfill {
            found: n as u64,
            finished_before: self.finished(),
            events_before: self.observe.metrics.events_shipped.load(Ordering::Relaxed),
            started: std::time::Instant::now(),
        });
    }

    fn backfill_progress(&self) -> Option<BackfillProgress> {
        let b = self.backfill.lock().unwrap_or_else(PoisonError::into_inner);
        let b = b.as_ref()?;
        let finished = (self.finished() - b.finished_before).min(b.found);
        let secs = b.started.elapsed().as_secs_f64().max(0.001);
        let events = self.observe.metrics.events_shipped.load(Ordering::Relaxed) - b.events_before;
        let eta_secs = (finished > 0)
            .then(|| ((b.found - finished) as f64 * secs / finished as f64).round() as u64);
        Some(BackfillProgress {
            found: b.found,
            finished,
            events_per_sec: events as f64 / secs,
            eta_secs,
        })
    }

    /// Logs the backfill's progress, and its end.
    fn log_backfill(&self) {
        let Some(p) = self.backfill_progress() else {
            return;
        };
        if p.finished >= p.found {
            self.log.info(format_args!(
                "backfill: done, {} objects at {:.0} events/s",
                p.found, p.events_per_sec
            ));
            *self.backfill.lock().unwrap_or_else(PoisonError::into_inner) = None;
            return;
        }
        self.log.info(format_args!(
            "backfill: {} of {} objects, {:.0} events/s, {} left",
            p.finished,
            p.found,
            p.events_per_sec,
            p.eta_secs
                .map_or("time unknown".to_string(), |s| format!("about {s} s"))
        ));
    }

    /// What the HTTP endpoint answers.
    fn answer(&self, path: &str) -> crate::observe::serve::Answer {
        use crate::observe::metrics::gauge;
        use crate::observe::serve::Answer;
        match path {
            "/metrics" => {
                let mut out = String::with_capacity(8 << 10);
                self.observe.metrics.render(&mut out);
                self.observe.output.render(&mut out);
                gauge(
                    &mut out,
                    "objects_in_flight",
                    "objects claimed and not finished",
                    self.ledger.inflight_count(),
                );
                gauge(
                    &mut out,
                    "handoff_bytes",
                    "encoded bytes waiting for the host",
                    self.queue.bytes(),
                );
                gauge(
                    &mut out,
                    "sqs_messages_held",
                    "SQS messages received and not settled",
                    self.tracker().len(),
                );
                gauge(
                    &mut out,
                    "healthy",
                    "1 when /health answers 200",
                    u8::from(self.observe.health.reasons().is_empty()),
                );
                self.observe
                    .freshness
                    .render(EventTime::now().secs(), &mut out);
                Answer {
                    status: 200,
                    content_type: "text/plain; version=0.0.4",
                    body: out,
                }
            }
            "/health" => {
                let (status, body) = self.observe.health.answer();
                Answer {
                    status,
                    content_type: "application/json",
                    body,
                }
            }
            _ => Answer {
                status: 404,
                content_type: "text/plain",
                body: "/metrics or /health\n".into(),
            },
        }
    }
}

/// Every few seconds: silence checks, backfill progress.
async fn watch_loop(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let alarm = core.config.silence_alarm;
    let tick = if alarm.is_zero() {
        PROGRESS_EVERY
    } else {
        (alarm / 4).clamp(Duration::from_secs(1), PROGRESS_EVERY)
    };
    let mut last_progress = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        core.observe
            .freshness
            .check(EventTime::now().secs(), &core.log);
        if last_progress.elapsed() >= PROGRESS_EVERY {
            core.log_backfill();
            last_progress = std::time::Instant::now();
        }
    }
}
