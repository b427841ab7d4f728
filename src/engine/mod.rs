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

use crate::config::{Config, Source, StartTime};
use crate::discover::sqs::{Queue, Received, Tracker, Verdict};
use crate::discover::{Discovery, Origin};
use crate::encode::Encoder;
use crate::engine::handoff::{Batch, Chunk, End, Handoff, Mark};
use crate::ledger::{CheckpointError, Store};
use crate::log::Logger;
use crate::object::ObjectRef;
use crate::read::decode;
use crate::read::fetch::{FetchError, Opened, open};
use crate::read::split::{SplitError, SplitOptions, Stop, split};
use crate::timestamp::EventTime;

pub mod handoff;

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

/// First allocation of a chunk buffer.
const CHUNK_START: usize = 16 << 10;

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
    /// SQS discovery, when configured; `tracker` holds its messages.
    sqs: Option<Arc<Queue>>,
    tracker: Mutex<Tracker>,
    /// The last receive returned nothing (for `is_idle`).
    sqs_idle: AtomicBool,
    /// Whether a listing runs (bucket or folder).
    listing: bool,
    /// SQS verdicts (deletes, visibility changes) sent and not answered yet.
    settling: Arc<watch::Sender<usize>>,
    runtime: tokio::runtime::Handle,
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

        let mut endpoints = String::new();
        let (client, origin, sqs) = match &config.source {
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
                let origin = s3.bucket.as_ref().map(|bucket| Origin::S3 {
                    client: client.clone(),
                    bucket: bucket.as_str().into(),
                });
                let sqs = s3
                    .sqs
                    .clone()
                    .map(|q| Arc::new(runtime.block_on(Queue::new(q, &sdk, log.clone()))));
                (Some(client), origin, sqs)
            }
            Source::Dir(root) => (None, Some(Origin::Dir { root: root.clone() }), None),
        };
        let keys_listed = Arc::new(AtomicU64::new(0));
        let discovery = origin.map(|origin| Discovery {
            origin,
            expr: config.path_expression.clone(),
            start,
            log: log.clone(),
            keys_listed: keys_listed.clone(),
        });
        log.info(format_args!(
            "started: {}{endpoints} path_expression={} start_time={} scan_interval={}s workers={} batch_bytes={}",
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
            tracker: Mutex::new(Tracker::new(
                sqs.as_ref().map_or(1, |q| q.config.max_receive_count),
            )),
            sqs,
            sqs_idle: AtomicBool::new(false),
            listing: discovery.is_some(),
            settling: Arc::new(watch::Sender::new(0)),
            runtime: runtime.handle().clone(),
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
        let core = &self.core;
        (!core.listing || core.counters.scans.load(Ordering::Acquire) > 0)
            && (core.sqs.is_none()
                || (core.sqs_idle.load(Ordering::Acquire) && core.tracker().is_empty()))
            && core.store().inflight() == 0
            && core.queue.is_empty()
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

    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands verdicts on SQS messages to the runtime (commit runs on the host's thread).
    /// Shutdown waits for them: a delete dropped at exit would let the message come back
    /// to another consumer, which would ship its objects again.
    fn settle(&self, verdicts: Vec<Verdict>) {
        if let Some(queue) = &self.sqs {
            for v in verdicts {
                let queue = queue.clone();
                let settling = self.settling.clone();
                settling.send_modify(|n| *n += 1);
                self.runtime.spawn(async move {
                    queue.settle(v).await;
                    settling.send_modify(|n| *n -= 1);
                });
            }
        }
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
                Some(End::Abandoned) => {
                    s.record_progress(&m.id, m.position);
                    s.release(&m.id);
                }
            }
        }
        if let Err(e) = s.save() {
            self.log
                .error(format_args!("{e} (will retry on the next batch)"));
        }
        drop(s);
        if self.sqs.is_some() {
            let mut verdicts = Vec::new();
            let mut t = self.tracker();
            for m in marks {
                match &m.end {
                    Some(End::Done) => verdicts.extend(t.finished(&m.id, None)),
                    Some(End::Failed(reason)) => verdicts.extend(t.finished(&m.id, Some(reason))),
                    Some(End::Abandoned) => verdicts.extend(t.abandoned(&m.id)),
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
        let opened = match open(self.client.as_ref(), &object, self.config.max_object_bytes).await {
            Ok(opened) => opened,
            Err(FetchError::Transient(reason) | FetchError::Denied(reason)) => {
                self.log.warn(format_args!("{object}: {reason}"));
                self.store().release(&object.id);
                let verdicts = self.tracker().abandoned(&object.id);
                self.settle(verdicts);
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
            tokio::task::spawn_blocking(move || core.split_object(&object, opened)).await
        {
            self.log
                .error(format_args!("s3 object {id}: split task failed: {e}"));
            self.store().release(&id);
        }
    }

    /// Decodes, splits and encodes on a blocking thread, pushing chunks as they fill.
    fn split_object(&self, object: &ObjectRef, opened: Opened) {
        let skip = self.store().progress(&object.id);
        let fallback = opened.last_modified.unwrap_or(object.last_modified);
        let reader = decode::open_stream(opened.into_reader(), self.config.max_object_bytes);
        // Chunk buffers start small and grow by doubling: the queue's byte budget counts
        // lengths, so capacity must stay within 2x of them (objects are mostly small).
        let mut buf = Vec::with_capacity(CHUNK_START);
        let mut events = 0u64;
        let options = SplitOptions {
            skip,
            fallback,
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
                bytes: std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_START)),
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
            Some(SplitError::Download(reason)) => {
                self.log.warn(format_args!(
                    "{object}: {reason}; {} events so far are shipped, the rest follows on a later try",
                    skip + stats.events
                ));
                End::Abandoned
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
    }
    let Some(discovery) = discovery else { return };
    loop {
        tokio::select! {
            _ = core.wait_unpaused() => {}
            _ = stop.changed() => return,
        }
        let found = discovery.scan(&core.store).await;
        core.log.debug(format_args!(
            "{}: scan found {} new objects",
            discovery.origin,
            found.len()
        ));
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

/// Extends the visibility of held messages at half the timeout.
async fn heartbeat_loop(core: Arc<Core>, queue: Arc<Queue>, mut stop: watch::Receiver<bool>) {
    let visibility = queue.config.visibility_timeout;
    let tick = (visibility / 4).max(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        let due = core.tracker().due(visibility / 2);
        for receipt in due {
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
        let mut send = Vec::new();
        let mut pending = std::collections::HashSet::new();
        let mut failed = Vec::new();
        let verdict = {
            let mut s = self.store();
            for a in announced {
                if !self.config.path_expression.matches(&a.key)
                    || a.key.contains(crate::discover::DIGEST_DIR)
                {
                    self.log.debug(format_args!(
                        "sqs message {}: s3://{}/{} does not match path_expression",
                        m.message_id, a.bucket, a.key
                    ));
                    continue;
                }
                let bucket: Arc<str> = a.bucket.as_str().into();
                let time = a.time.unwrap_or_else(EventTime::now);
                let object = ObjectRef::s3(&bucket, a.key, a.size.unwrap_or(0), time);
                if s.is_done(&object.id) {
                    continue;
                }
                if let Some(reason) = s.failed_reason(&object.id).map(String::from) {
                    if m.receive_count >= queue.config.max_receive_count {
                        failed.push((object.id.clone(), reason));
                        continue;
                    }
                    s.unfail(&object.id);
                }
                pending.insert(object.id.clone());
                if s.claim(&object.id) {
                    send.push(object);
                }
            }
            // Held under the store's lock, so no object can finish unseen in between.
            self.tracker()
                .hold(m.message_id, m.receipt, m.receive_count, pending, failed)
        };
        if let Some(v) = verdict {
            queue.settle(v).await;
        }
        send
    }
}
