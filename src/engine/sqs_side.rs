//! The SQS side of the engine: receiving and reading messages, holding them while their
//! objects ship, the heartbeat, and settling each message (delete, hand back, quarantine)
//! in order.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::Core;
use crate::config::Source;
use crate::discover::sqs::{Queue, Received, Tracker, Verdict};
use crate::ledger::{Claimable, Honour, Status};
use crate::object::ObjectRef;
use crate::observe::metrics::Metrics;
use crate::timestamp::EventTime;

impl Core {
    pub(super) fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands verdicts on SQS messages to the runtime (commit runs on the host's thread).
    /// Shutdown waits for them: a delete dropped at exit would let the message come back
    /// to another consumer, which would ship its objects again.
    pub(super) fn settle(&self, verdicts: Vec<Verdict>) {
        if self.sqs.is_some() {
            // A message is deleted with objects still to retry only once the ledger has
            // them on disk: a crash in between would lose them with the message.
            if verdicts.iter().any(|v| v.held().entrusted() > 0)
                && let Err(e) = self.ledger.sync()
            {
                self.log.error(format_args!(
                    "{e}; the SQS messages of objects waiting for a retry are handed back instead of deleted"
                ));
                // No message with such objects is deleted (an entrusted one, or a
                // quarantined one with `delete_quarantined`): each goes back to the queue.
                self.settle_all(
                    verdicts
                        .into_iter()
                        .map(|v| match v {
                            Verdict::Entrust(h) | Verdict::Quarantine(h) if h.entrusted() > 0 => {
                                Verdict::Retry(h, Duration::from_secs(10))
                            }
                            v => v,
                        })
                        .collect(),
                );
                return;
            }
            self.settle_all(verdicts);
        }
    }

    pub(super) fn settle_all(&self, verdicts: Vec<Verdict>) {
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
    pub(super) fn entrust(&self, id: &str, wait: u32) {
        if self.sqs.is_some() {
            let verdicts = self.tracker().entrusted(id, wait);
            self.settle(verdicts);
        }
    }
}

/// Long-polls the queue while the host is not paused and fewer than the allowed number of
/// messages are held. `sqs.receivers` of these run side by side: each receive returns at
/// most 10 messages a round trip. Reading messages at once is safe: `hold_message` looks
/// at the ledger and holds the message under the tracker's lock, and claims are the
/// ledger's, so an object announced twice is claimed once.
pub(super) async fn receive_loop(
    core: Arc<Core>,
    queue: Arc<Queue>,
    tx: mpsc::Sender<ObjectRef>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0;
    let mut polled = false;
    let mut busy = false;
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
        if !polled {
            polled = true;
            core.sqs_polled.fetch_add(1, Ordering::AcqRel);
        }
        let got = !messages.is_empty();
        if busy != got {
            busy = got;
            if busy {
                core.sqs_busy.fetch_add(1, Ordering::AcqRel);
            } else {
                core.sqs_busy.fetch_sub(1, Ordering::AcqRel);
            }
        }
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
pub(super) async fn settle_loop(
    queue: Arc<Queue>,
    mut rx: mpsc::UnboundedReceiver<Verdict>,
    settling: Arc<watch::Sender<usize>>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < crate::discover::sqs::BATCH_LIMIT {
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
pub(super) async fn heartbeat_loop(
    core: Arc<Core>,
    queue: Arc<Queue>,
    mut stop: watch::Receiver<bool>,
) {
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
        for receipts in due.chunks(crate::discover::sqs::BATCH_LIMIT) {
            Metrics::add(&core.observe.metrics.sqs_extended, receipts.len() as u64);
            queue.extend_batch(receipts, visibility).await;
        }
    }
}

impl Core {
    /// Reads one message: claims its new objects (returned, for the workers) and holds it
    /// until they are shipped.
    pub(super) async fn take_message(&self, queue: &Queue, m: Received) -> Vec<ObjectRef> {
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
            if !self.config.selection.matches(&a.key) || a.key.contains(crate::discover::DIGEST_DIR)
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
    pub(super) fn hold_message(
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
        let mut elsewhere = Vec::new();
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
                // Shared ledger: an object another shipper holds a live lease on is that
                // shipper's to finish. The table answers for it (if that shipper dies,
                // its lease expires and a requeue here or elsewhere takes it over), so
                // the message need not wait: waiting would only climb its receive count.
                let mut unsettled = false;
                for o in &candidates {
                    if claimed.contains(&*o.id)
                        || !pending.contains(&o.id)
                        || self.ledger.is_inflight(&o.id)
                    {
                        continue;
                    }
                    if self.ledger.held_elsewhere(&o.id) {
                        pending.remove(&o.id);
                        elsewhere.push((o.id.clone(), 0));
                        // Counted and logged at info with the message's verdict (entrusted).
                        self.log.debug(format_args!(
                            "sqs message {}: {} is being shipped by another shipper on the shared ledger, which answers for it: the message is not needed",
                            m.message_id, o.id
                        ));
                        continue;
                    }
                    // Neither claimed here nor held elsewhere: finished (by another shipper,
                    // since it was looked at), or not claimable now (a failed read of the
                    // ledger, a stop under way). Look again rather than wait for a commit
                    // that will not come here.
                    match self.ledger.entry(&o.id) {
                        Ok(Some(e)) if e.status == Status::Done => {
                            pending.remove(&o.id);
                        }
                        Ok(Some(e)) if e.status == Status::Failed => {
                            pending.remove(&o.id);
                            failed.push((o.id.clone(), e.reason));
                        }
                        _ => unsettled = true,
                    }
                }
                if unsettled {
                    for o in &send {
                        self.ledger.let_go(&o.id);
                    }
                    self.log.info(format_args!(
                        "sqs message {}: an object could not be claimed now; the message goes back to the queue for another try",
                        m.message_id
                    ));
                    self.last_receive(
                        &m,
                        max_receive_count,
                        &candidates,
                        "its objects could not be claimed",
                    );
                    return (
                        Vec::new(),
                        Some(Tracker::hand_back(m.message_id, m.receipt, m.receive_count)),
                    );
                }
            }
            Err(e) => {
                // Nothing was claimed, so nothing would ever finish the message: it goes
                // back to the queue instead of being held for good.
                self.log.error(format_args!(
                    "sqs message {}: {e}; handed back to the queue for another try",
                    m.message_id
                ));
                self.last_receive(&m, max_receive_count, &candidates, &e.to_string());
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
        let verdict = tracker.hold_entrusting(
            m.message_id,
            m.receipt,
            m.receive_count,
            pending,
            failed,
            elsewhere,
        );
        (send, verdict)
    }

    /// A message handed back although it has been received as often as the queue allows:
    /// the next hand-back may be its last before SQS moves it to the dead-letter queue, so
    /// each object it names is logged at error with the reason (nothing in the ledger says
    /// so when the ledger is what fails).
    fn last_receive(&self, m: &Received, max_receive_count: u32, objects: &[ObjectRef], why: &str) {
        if m.receive_count < max_receive_count {
            return;
        }
        for o in objects {
            self.log.error(format_args!(
                "sqs message {}: received {} times and {why}: {} may go to the queue's dead-letter queue unshipped; redrive it from there once this is fixed",
                m.message_id, m.receive_count, o.id
            ));
        }
    }

    /// How a notified object is forgotten once shipped: `None` for a key under a prefix the
    /// listing walks (its watermark's forget line does it), the flat listing's group and
    /// time for a flat listing, else SQS's group by claim time.
    pub(super) fn forget_rule(&self, object: &ObjectRef, now: u32) -> Option<(String, u32)> {
        let listed = match (&self.config.source, &object.location) {
            (Source::S3(s3), crate::object::Location::S3 { bucket, key }) if self.listing => {
                s3.bucket.as_deref() == Some(&**bucket) && self.config.selection.matches(key)
            }
            _ => false,
        };
        if !listed {
            return Some(("sqs".to_string(), now));
        }
        let crate::object::Location::S3 { bucket, key } = &object.location else {
            return Some(("sqs".to_string(), now));
        };
        if crate::layout::base(self.config.selection.expr()).is_some()
            && crate::layout::region_prefix(key).is_some()
        {
            None
        } else {
            Some((
                crate::discover::bucket::flat_group(bucket, self.config.selection.expr()),
                object.last_modified.secs(),
            ))
        }
    }

    /// A notification key that `path_expression` does not match: deleted with its message
    /// (the queue is this trail's; leaving them would only bring them back), counted, and
    /// logged at warn at most once a minute, saying plainly when nothing has matched yet.
    pub(super) fn unmatched(&self, message_id: &str, bucket: &str, key: &str, now: u32) {
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
        let left_out = self.config.selection.left_out_kind(key);
        let hint = if let Some(kind) = left_out {
            format!(
                ": a {}/ file, which 'event_kinds' ({}) leaves out ({n} unmatched keys so far, {matched} matched)",
                kind.folder(),
                self.config.selection.kinds()
            )
        } else if matched == 0 {
            format!(
                "; none of the {n} keys received so far matches: 'path_expression' ({}) probably misses the trail's S3 key prefix (the default '{}' finds any prefix)",
                self.config.selection.as_str(),
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
    pub(super) fn forget_notified(&self) {
        let lookback = u32::try_from(self.config.lookback.as_secs()).unwrap_or(u32::MAX);
        let before = EventTime::now().secs().saturating_sub(lookback);
        if let Err(e) = self.ledger.forget_older("sqs", before) {
            self.log.error(format_args!("{e}"));
        }
    }
}
