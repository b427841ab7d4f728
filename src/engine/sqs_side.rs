//! The SQS side of the engine: receiving and reading messages, holding them while their
//! objects ship, the heartbeat, and settling each message (delete, hand back, quarantine)
//! in order.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{Core, sqs_rules};
use crate::config::Source;
use crate::discover::sqs::{Queue, Received, Tracker, Verdict};
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
            self.settle_all(sqs_rules::ready_to_settle(
                &self.ledger,
                &self.log,
                verdicts,
            ));
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
    // Once at start too: a shipper restarted more often than every five minutes would
    // otherwise never forget.
    core.forget_notified();
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
            // A digest of the bucket `digest.validate` checks: read by the digest loop at
            // once. The message goes with the others: the next listing pass finds the
            // digest anyway if this shipper stops before reading it.
            if a.key.contains(crate::discover::DIGEST_DIR)
                && let Some(d) = &self.config.digest
                && d.bucket == a.bucket
            {
                Metrics::add(&self.observe.metrics.notices_matched, 1);
                if !self.digests_announced.push(a.key) {
                    self.log.debug(format_args!(
                        "sqs message {}: too many announced digests waiting; left to the next digest pass",
                        m.message_id
                    ));
                }
                continue;
            }
            if !self.config.selection.matches(&a.key) || a.key.contains(crate::discover::DIGEST_DIR)
            {
                self.unmatched(&m.message_id, &a.bucket, &a.key, now);
                continue;
            }
            Metrics::add(&self.observe.metrics.notices_matched, 1);
            // Hybrid: a key behind its prefix's listing horizon (see `sqs_rules::Behind`).
            if listed_bucket == Some(a.bucket.as_str()) {
                let dated = sqs_rules::Dated {
                    time: a.time.map(|t| t.secs()),
                    sent: m.sent,
                    first_received: m.first_received,
                    receive_count: m.receive_count,
                };
                match sqs_rules::behind_listing(
                    &self.ledger,
                    &a.bucket,
                    &a.key,
                    lookback,
                    dated,
                    now,
                ) {
                    sqs_rules::Behind::No => {}
                    sqs_rules::Behind::Covered => {
                        Metrics::add(&self.observe.metrics.notices_behind, 1);
                        self.log.warn(format_args!(
                            "sqs message {}: s3://{}/{} is behind the listing's horizon and its notification is older than the lookback: taken as shipped and forgotten, not shipped again",
                            m.message_id, a.bucket, a.key
                        ));
                        continue;
                    }
                    sqs_rules::Behind::Late => self.log.info(format_args!(
                        "sqs message {}: s3://{}/{} landed late, behind the listing's horizon: shipped from the notification",
                        m.message_id, a.bucket, a.key
                    )),
                }
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
    /// are (`sqs_rules::hold`); returns the objects claimed, and the verdict when nothing is
    /// left pending.
    pub(super) fn hold_message(
        &self,
        m: Received,
        candidates: Vec<ObjectRef>,
        max_receive_count: u32,
        now: u32,
    ) -> (Vec<ObjectRef>, Option<Verdict>) {
        // How each object is forgotten: a key the listing covers by the listing's own rule
        // (forgetting it sooner would let the listing ship it again), others a lookback
        // after they finish (the `sqs` group; the claim's time stands until then).
        let candidates = candidates
            .into_iter()
            .map(|object| sqs_rules::Candidate {
                forget: self.forget_rule(&object, now),
                object,
            })
            .collect();
        let mut tracker = self.tracker();
        sqs_rules::hold(
            &self.ledger,
            &mut tracker,
            &self.log,
            m,
            candidates,
            max_receive_count,
            now,
        )
    }

    /// How a notified object is forgotten once shipped: `None` for a key under a prefix the
    /// listing walks (its watermark's forget line does it), the flat listing's group and
    /// time for a flat listing, else SQS's group (forgotten a lookback after the finish).
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
