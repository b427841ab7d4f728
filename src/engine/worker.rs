//! The workers: fetch, decode, split and encode each object into the handoff queue, and the
//! commit that records in the ledger what the host now has.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::Core;
use super::reading::ObjectReader;
use super::sqs_side::{heartbeat_loop, receive_loop};
use crate::discover::{Discovery, Sink};
use crate::engine::handoff::{Chunk, End, Mark};
use crate::ledger::Span;
use crate::object::ObjectRef;
use crate::observe::Observe;
use crate::observe::metrics::{Metrics, Op, Outcome};
use crate::read::decode;
use crate::read::fetch::{FetchError, Opened, open};
use crate::read::split::Stop;
use crate::timestamp::EventTime;

impl Core {
    /// Counts happen here, at delivery, so the totals say what the host has. SQS messages
    /// are settled only after the ledger has the commit: a message deleted before would be
    /// lost with its objects if the process died in between.
    pub(super) fn commit(&self, marks: &[Mark]) {
        // Findings sent as records are not objects: the host has them, so they count as
        // reported from now on.
        if marks.iter().any(|m| m.finding.is_some()) {
            let now = EventTime::now().secs();
            for f in marks.iter().filter_map(|m| m.finding.as_deref()) {
                if let Err(e) = self.ledger.first_report(&f.text, now, f.keep) {
                    self.log.warn(format_args!(
                        "digest: {e}; a finding sent as a record may be sent again: {}",
                        f.text
                    ));
                }
                self.findings_in_flight().remove(&f.text);
            }
            let objects: Vec<Mark> = marks
                .iter()
                .filter(|m| m.finding.is_none())
                .cloned()
                .collect();
            return self.commit(&objects);
        }
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
                    "{e}; of this batch's {} objects, those it finished are let go and shipped again from their last committed position, the others go on and their next commit covers this batch",
                    marks.len()
                ));
                // Only the finished ones: an object whose worker is still splitting keeps its
                // claim (and a shared ledger's lease), so nobody else ships it meanwhile; its
                // next commit carries the position on.
                for m in marks.iter().filter(|m| m.end.is_some()) {
                    self.ledger.let_go(&m.id);
                }
                false
            }
        };
        if self.sqs.is_some() {
            let verdicts =
                super::sqs_rules::after_commit(&mut self.tracker(), &self.ledger, marks, ok, now);
            self.settle(verdicts);
        }
    }

    pub(super) async fn wait_unpaused(&self) {
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|paused| !paused).await;
    }

    /// Fetches and splits one object; every outcome ends in the queue or in a release.
    pub(super) async fn process(self: &Arc<Self>, object: ObjectRef) {
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
                        sha256: None,
                        finding: None,
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
    pub(super) fn split_object(&self, object: &ObjectRef, opened: Opened) {
        let resume = self.resume_at(object);
        let fallback = opened.last_modified.unwrap_or(object.last_modified);
        let m = self.observe.clone();
        let downloaded = Counted {
            inner: opened.into_reader(),
            observe: m.clone(),
            decompressed: false,
        };
        let decoded = Counted {
            inner: decode::open_stream(downloaded, self.config.max_object_bytes),
            observe: m,
            decompressed: true,
        };
        let reader = ObjectReader {
            encoder: &*self.encoder,
            log: &self.log,
            max_event_bytes: self.config.max_event_bytes,
            chunk_target: self.chunk_target,
            // The SHA-256 the digests name costs a fifth of this thread's time
            // (scripts/bench: engine-msgpack-sha256), so it is kept only when digests are
            // checked.
            hash: self.config.digest.is_some(),
        };
        let counts = reader.read(object, decoded, resume, fallback, |chunk| {
            self.queue.push(chunk).map_err(|_| Stop)
        });
        if let Some(c) = counts {
            let metrics = &self.observe.metrics;
            Metrics::add(&metrics.events_unencodable, c.unencodable);
            Metrics::add(&metrics.events_fallback_time, c.fallback_time);
        }
    }
}

impl Core {
    /// Events of the object already committed. A store that cannot be read is logged and
    /// counts as none: the object is shipped again from its start (repeated, never lost).
    pub(super) fn progress(&self, object: &ObjectRef) -> u64 {
        self.resume_at(object).0
    }

    /// Where a read of the object resumes: its committed position, and the ranges past it
    /// delivered ahead (passed, not sent again).
    fn resume_at(&self, object: &ObjectRef) -> (u64, Vec<Span>) {
        match self.ledger.entry(&object.id) {
            Ok(entry) => entry.map_or((0, Vec::new()), |e| (e.position, e.ahead)),
            Err(e) => {
                self.log.error(format_args!(
                    "{object}: {e}; its progress is unknown, so it is shipped from its start"
                ));
                (0, Vec::new())
            }
        }
    }
}

/// Feeds the workers from the listing and from SQS until told to stop.
pub(super) async fn run(
    core: Arc<Core>,
    discovery: Option<Discovery>,
    audit: Option<(super::digests::EngineAudit, EventTime)>,
    mut stop: watch::Receiver<bool>,
) {
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
    if let Some(audit) = audit {
        tokio::spawn(super::digests::digest_loop(
            core.clone(),
            audit,
            tx.clone(),
            stop.clone(),
        ));
    }
    if let Some(queue) = core.sqs.clone() {
        for _ in 0..queue.config.receivers {
            tokio::spawn(receive_loop(
                core.clone(),
                queue.clone(),
                tx.clone(),
                stop.clone(),
            ));
        }
        tokio::spawn(heartbeat_loop(core.clone(), queue, stop.clone()));
        if core.ledger.shared().is_some() {
            tokio::spawn(lease_loop(core.clone(), stop.clone()));
        }
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
        // The objects go to the workers while the scan goes on (a backfill's first object
        // ships before its last prefix is listed); the progress counts from here.
        let since = core.progress_mark();
        let mut sink = Sink::feed(&tx);
        let outcome = tokio::select! {
            o = discovery.scan(&core.ledger, &core.log, &mut sink) => o,
            _ = stop.changed() => return,
        };
        if sink.is_closed() {
            return;
        }
        let found = sink.count();
        core.last_scan.keys_listed.store(
            m.keys_listed.load(Ordering::Relaxed) - keys,
            Ordering::Relaxed,
        );
        core.last_scan
            .list_calls
            .store(m.requests_of(Op::ListObjects) - calls, Ordering::Relaxed);
        core.last_scan
            .left
            .store(outcome.left as u64, Ordering::Release);
        core.start_backfill(found, outcome.left, since);
        core.log.debug(format_args!(
            "{discovery}: scan found {found} new objects, left {} for the next",
            outcome.left
        ));
        core.observe.metrics.scans.fetch_add(1, Ordering::AcqRel);
        // A scan that claimed objects and left keys past its limits is followed by the
        // next as soon as half of what is in flight has finished; any other after
        // `scan_interval` (one that claimed nothing waits on objects in flight elsewhere:
        // other shippers' claims, or the queue's).
        tokio::select! {
            () = until_half_finished(&core), if outcome.left > 0 && found > 0 => {}
            _ = tokio::time::sleep(core.config.scan_interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// How often the scan loop looks whether a backfill's stretch is half finished.
const STRETCH_POLL: Duration = Duration::from_millis(250);

/// Waits until half of the objects in flight now have finished (at least one; none if
/// they all have already, the stretch shipped while slower prefixes were still listed).
///
/// After a scan that claimed a stretch and left keys past its claim limit: the next claims
/// the following stretch while the workers still have the rest of this one, so they never
/// wait on a listing, and the listings are not repeated faster than the objects finish.
async fn until_half_finished(core: &Core) {
    let now = core.ledger.inflight_count();
    while now > 0 && core.ledger.inflight_count() > now / 2 {
        tokio::time::sleep(STRETCH_POLL).await;
    }
}

/// How often SQS-only discovery looks for objects due for another try.
pub(super) const REQUEUE_EVERY: Duration = Duration::from_secs(2);

/// SQS alone: puts open objects whose backoff has passed back in line.
pub(super) async fn requeue_loop(
    core: Arc<Core>,
    tx: mpsc::Sender<ObjectRef>,
    mut stop: watch::Receiver<bool>,
) {
    // A shared table's open rows are every shipper's objects in flight: read them less
    // often (each read pages through all of them), at half the lease time.
    let every = core
        .config
        .shared_ledger
        .as_ref()
        .map_or(REQUEUE_EVERY, |s| (s.lease_time / 2).max(REQUEUE_EVERY));
    // The first pass at once: a short run (`--once`) must see what waits in the ledger.
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
        first = false;
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

/// Shared ledger: renews this shipper's leases before another shipper may judge them
/// expired (at a third of the lease time), and says when one was taken over anyway.
pub(super) async fn lease_loop(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let Some(lease_time) = core.config.shared_ledger.as_ref().map(|s| s.lease_time) else {
        return;
    };
    let Some(tick) = core.ledger.shared().map(|s| s.renew_every()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        let Some(shared) = core.ledger.shared() else {
            return;
        };
        match shared.renew() {
            Ok(lost) => {
                for id in lost {
                    core.log.warn(format_args!(
                        "{id}: another shipper took this object over (its lease was not renewed within {}s here); it resumes from the shared progress, and events this shipper sends after that may repeat",
                        lease_time.as_secs()
                    ));
                }
            }
            Err(e) => core.log.error(format_args!(
                "{e}; leases not renewed: another shipper may take these objects over after {}s",
                lease_time.as_secs()
            )),
        }
    }
}

/// Counts the bytes read through it into the metrics: downloaded (compressed) or
/// decompressed.
pub(super) struct Counted<R> {
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
