//! Event-driven discovery: S3 notifications through SQS.
//!
//! Each received message is held until every object it names has been handed to the host
//! (committed), and only then deleted; while it is held, a heartbeat keeps extending its
//! visibility timeout, so a slow or paused host does not make SQS hand the message to
//! another consumer. That is also what lets many shippers share one queue: SQS gives each
//! message to one consumer at a time.
//!
//! Outcomes of a message:
//! * every object shipped (now or before, by this or another path): deleted;
//! * an object failed for good (corrupt, denied): the message is let go, to come back after
//!   a backoff and be tried again, until it has been received `max_receive_count` times;
//!   then it is quarantined (logged with bucket, key and reason, kept in the state) and
//!   deleted only if `delete_quarantined` is set, else left for the queue's redrive policy;
//! * an object that will be retried (throttling, a timeout, access denied): the ledger owns
//!   its retry, on its backoff, so the message does not wait for it. With a ledger file the
//!   message is deleted once the ledger has the object durably ("entrusted"): a held message
//!   takes one of `max_messages_in_flight` slots, so holding messages for objects that stay
//!   denied (one account's KMS key) would stall every other account on the queue. With the
//!   ledger in memory only, the message is parked instead: handed back with a visibility
//!   timeout as long as the object's backoff, so it comes back when the retry is due;
//! * an unknown body: logged with its message id and left alone (redrive policy).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageSystemAttributeName;

use crate::aws::error::{ErrorClass, Operation, describe};
use crate::config::SqsConfig;
use crate::log::Logger;
use crate::observe::Observe;
use crate::observe::metrics::{Metrics, Op, Outcome};

/// A message being worked on.
#[derive(Debug)]
pub struct Held {
    pub message_id: String,
    receipt: String,
    /// Objects not finished yet.
    pending: HashSet<Arc<str>>,
    /// Objects that failed for good, with the reason.
    failed: Vec<(Arc<str>, String)>,
    /// Objects the ledger retries on its own (a transient failure or a denied read), with
    /// the seconds until their next try.
    entrusted: Vec<(Arc<str>, u32)>,
    receive_count: u32,
    extended_at: Instant,
}

impl Held {
    /// Objects the ledger retries on its own, which the message no longer waits for.
    pub fn entrusted(&self) -> usize {
        self.entrusted.len()
    }
}

/// What to do with a message whose objects are all finished (or one was abandoned).
#[derive(Debug)]
pub enum Verdict {
    Delete(Held),
    /// Let it come back after this long (retry).
    Retry(Held, Duration),
    /// Received too often with failures: quarantine.
    Quarantine(Held),
    /// Some objects wait in the ledger for a retry, the rest are shipped: make the ledger's
    /// record of them durable, then delete the message.
    Entrust(Held),
}

impl Verdict {
    pub fn held(&self) -> &Held {
        match self {
            Verdict::Delete(h)
            | Verdict::Retry(h, _)
            | Verdict::Quarantine(h)
            | Verdict::Entrust(h) => h,
        }
    }
}

/// The messages held by this consumer, by the objects they wait for.
#[derive(Debug, Default)]
pub struct Tracker {
    held: HashMap<String, Held>,
    max_receive_count: u32,
    /// Whether the ledger survives a restart (a file): only then may a message whose
    /// objects wait for a retry be deleted.
    durable_ledger: bool,
}

impl Tracker {
    pub fn new(max_receive_count: u32, durable_ledger: bool) -> Self {
        Self {
            held: HashMap::new(),
            max_receive_count,
            durable_ledger,
        }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Starts holding a message; returns its verdict at once when nothing is pending.
    pub fn hold(
        &mut self,
        message_id: String,
        receipt: String,
        receive_count: u32,
        pending: HashSet<Arc<str>>,
        failed: Vec<(Arc<str>, String)>,
    ) -> Option<Verdict> {
        let held = Held {
            message_id: message_id.clone(),
            receipt,
            pending,
            failed,
            entrusted: Vec::new(),
            receive_count,
            extended_at: Instant::now(),
        };
        if held.pending.is_empty() {
            return Some(self.verdict(held));
        }
        self.held.insert(message_id, held);
        None
    }

    /// A message that cannot be held (its objects could not be claimed): straight back to
    /// the queue, to be tried again.
    pub fn hand_back(message_id: String, receipt: String, receive_count: u32) -> Verdict {
        let held = Held {
            message_id,
            receipt,
            pending: HashSet::new(),
            failed: Vec::new(),
            entrusted: Vec::new(),
            receive_count,
            extended_at: Instant::now(),
        };
        Verdict::Retry(held, Duration::from_secs(10))
    }

    fn verdict(&self, held: Held) -> Verdict {
        let waiting = held.entrusted.iter().map(|(_, wait)| *wait).max();
        match (held.failed.is_empty(), waiting) {
            (true, None) => Verdict::Delete(held),
            (false, _) if held.receive_count < self.max_receive_count => {
                let backoff = Duration::from_secs(10 * u64::from(held.receive_count).min(30));
                Verdict::Retry(held, backoff)
            }
            (false, _) => Verdict::Quarantine(held),
            (true, Some(_)) if self.durable_ledger => Verdict::Entrust(held),
            (true, Some(wait)) => {
                Verdict::Retry(held, Duration::from_secs(u64::from(wait.max(10))))
            }
        }
    }

    /// An object was handed over (`failed: None`) or given up on: the messages it
    /// completes.
    pub fn finished(&mut self, object: &str, failed: Option<&str>) -> Vec<Verdict> {
        self.resolve(object, |held, key| {
            if let Some(reason) = failed {
                held.failed.push((key, reason.to_string()));
            }
        })
    }

    /// An object waits in the ledger for a retry after `wait` seconds (a transient failure,
    /// a denied read): its messages stop waiting for it. Returns the messages it completes.
    pub fn entrusted(&mut self, object: &str, wait: u32) -> Vec<Verdict> {
        self.resolve(object, |held, key| held.entrusted.push((key, wait)))
    }

    /// Takes `object` off the pending set of every message waiting for it (`note` records
    /// how it ended) and returns the verdicts of the messages left with nothing pending.
    fn resolve(&mut self, object: &str, note: impl Fn(&mut Held, Arc<str>)) -> Vec<Verdict> {
        let done: Vec<String> = self
            .held
            .iter_mut()
            .filter_map(|(id, h)| {
                let key = h.pending.iter().find(|p| &***p == object)?.clone();
                h.pending.remove(&key);
                note(h, key);
                h.pending.is_empty().then(|| id.clone())
            })
            .collect();
        let resolved: Vec<Held> = done.iter().filter_map(|id| self.held.remove(id)).collect();
        resolved.into_iter().map(|h| self.verdict(h)).collect()
    }

    /// An object will not finish now (transient failure): its messages are let go, to
    /// come back and be retried.
    pub fn abandoned(&mut self, object: &str) -> Vec<Verdict> {
        let ids: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.pending.iter().any(|p| &**p == object))
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| self.held.remove(&id))
            .map(|h| Verdict::Retry(h, Duration::from_secs(10)))
            .collect()
    }

    /// Receipts whose visibility was last extended more than `every` ago (marked now).
    pub fn due(&mut self, every: Duration) -> Vec<String> {
        let now = Instant::now();
        self.held
            .values_mut()
            .filter(|h| now.duration_since(h.extended_at) >= every)
            .map(|h| {
                h.extended_at = now;
                h.receipt.clone()
            })
            .collect()
    }

    /// Every held message, for a fast hand-back at shutdown.
    pub fn drain(&mut self) -> Vec<Held> {
        self.held.drain().map(|(_, h)| h).collect()
    }
}

/// The most messages one `DeleteMessageBatch` call takes (SQS's limit).
pub const DELETE_BATCH: usize = 10;

/// The SQS side: receiving, deleting, extending.
pub struct Queue {
    pub client: Client,
    pub config: SqsConfig,
    pub log: Logger,
    pub observe: Arc<Observe>,
}

/// One received message.
pub struct Received {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    pub receive_count: u32,
    /// When SQS took the message (`SentTimestamp`), in Unix seconds: dates a notification
    /// that carries no time of its own (CloudTrail's).
    pub sent: Option<u32>,
}

impl Queue {
    pub async fn new(
        config: SqsConfig,
        sdk: &aws_config::SdkConfig,
        log: Logger,
        observe: Arc<Observe>,
    ) -> Self {
        let mut b = aws_sdk_sqs::config::Builder::from(sdk);
        if let Some(e) = &config.endpoint {
            b = b.endpoint_url(e);
        }
        Self {
            client: Client::from_conf(b.build()),
            config,
            log,
            observe,
        }
    }

    /// One long poll. A failure is logged (a permission or setting problem at ERROR, with
    /// what to change; anything else at WARN) and returned as its class, for the caller's
    /// backoff ([`receive_backoff`]).
    pub async fn receive(&self) -> Result<Vec<Received>, ErrorClass> {
        let result = self
            .client
            .receive_message()
            .queue_url(&self.config.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(self.config.wait_time.as_secs() as i32)
            .visibility_timeout(self.config.visibility_timeout.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await;
        let now = crate::timestamp::EventTime::now().secs();
        match result {
            Ok(out) => {
                let m = &self.observe.metrics;
                m.request(Op::ReceiveMessage, Outcome::Ok);
                Metrics::add(&m.sqs_received, out.messages().len() as u64);
                self.observe.health.receive(now, Ok(()));
                if !out.messages().is_empty() {
                    self.log.debug(format_args!(
                        "sqs: received {}",
                        out.messages()
                            .iter()
                            .filter_map(|m| m.message_id())
                            .collect::<Vec<_>>()
                            .join(" ")
                    ));
                }
                Ok(out
                    .messages()
                    .iter()
                    .filter_map(|m| {
                        Some(Received {
                            message_id: m.message_id()?.to_string(),
                            receipt: m.receipt_handle()?.to_string(),
                            body: m.body().unwrap_or("").to_string(),
                            receive_count: m
                                .attributes()
                                .and_then(|a| {
                                    a.get(&MessageSystemAttributeName::ApproximateReceiveCount)
                                })
                                .and_then(|c| c.parse().ok())
                                .unwrap_or(1),
                            sent: m
                                .attributes()
                                .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                                .and_then(|ms| ms.parse::<u64>().ok())
                                .and_then(|ms| u32::try_from(ms / 1000).ok()),
                        })
                    })
                    .collect())
            }
            Err(e) => {
                let (class, text) = describe(self.op(), &e);
                let queue = &self.config.queue_url;
                self.observe
                    .metrics
                    .request(Op::ReceiveMessage, Outcome::Failed(class));
                self.observe
                    .health
                    .receive(now, Err(&format!("{queue}: {text}")));
                match class {
                    ErrorClass::Denied | ErrorClass::Permanent => self
                        .log
                        .error(format_args!("sqs {queue}: receive failed: {text}")),
                    ErrorClass::Transient => self
                        .log
                        .warn(format_args!("sqs {queue}: receive failed: {text}")),
                }
                Err(class)
            }
        }
    }

    fn op(&self) -> Operation<'_> {
        Operation::Sqs {
            queue_url: &self.config.queue_url,
        }
    }

    /// Deletes a message, trying a transient failure (throttling, a timeout on a loaded
    /// host) again a few times: a delete that never happens brings the message back, to
    /// this shipper (which skips its shipped objects) or to another on the queue (which
    /// would ship them again).
    pub async fn delete(&self, message_id: &str, receipt: &str) {
        const ATTEMPTS: u32 = 4;
        for attempt in 1..=ATTEMPTS {
            let result = self
                .client
                .delete_message()
                .queue_url(&self.config.queue_url)
                .receipt_handle(receipt)
                .send()
                .await;
            let m = &self.observe.metrics;
            let Err(e) = result else {
                m.request(Op::DeleteMessage, Outcome::Ok);
                Metrics::add(&m.sqs_deleted, 1);
                self.log
                    .debug(format_args!("sqs message {message_id}: deleted"));
                return;
            };
            let (class, text) = describe(self.op(), &e);
            m.request(Op::DeleteMessage, Outcome::Failed(class));
            if class == ErrorClass::Transient && attempt < ATTEMPTS {
                self.log.debug(format_args!(
                    "sqs message {message_id}: delete failed ({text}); trying again"
                ));
                tokio::time::sleep(crate::read::fetch::backoff(attempt)).await;
                continue;
            }
            self.log.warn(format_args!(
                "sqs message {message_id}: delete failed ({text}); it will come back and be skipped as shipped"
            ));
            return;
        }
    }

    pub async fn set_visibility(&self, receipt: &str, after: Duration) {
        let secs = after.as_secs().min(43_200) as i32;
        let result = self
            .client
            .change_message_visibility()
            .queue_url(&self.config.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await;
        let m = &self.observe.metrics;
        match result {
            Ok(_) => m.request(Op::ChangeMessageVisibility, Outcome::Ok),
            Err(e) => {
                let (class, text) = describe(self.op(), &e);
                m.request(Op::ChangeMessageVisibility, Outcome::Failed(class));
                self.log
                    .debug(format_args!("sqs: visibility change failed: {text}"));
            }
        }
    }

    /// Carries out verdicts in order; the messages to delete go in one batch call.
    pub async fn settle_many(&self, verdicts: Vec<Verdict>) {
        let mut deletes = Vec::new();
        for v in verdicts {
            match v {
                Verdict::Delete(h) => deletes.push(h),
                Verdict::Entrust(h) => {
                    self.entrusted(&h);
                    deletes.push(h)
                }
                v => self.settle(v).await,
            }
        }
        match deletes.as_slice() {
            [] => {}
            [one] => self.delete(&one.message_id, &one.receipt).await,
            many => self.delete_batch(many).await,
        }
    }

    /// Deletes up to [`DELETE_BATCH`] messages in one call; the ones it could not delete
    /// (the whole call failed, or SQS refused some entries) are deleted one by one, with
    /// [`Queue::delete`]'s retries and logs.
    async fn delete_batch(&self, held: &[Held]) {
        use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
        // Both fields are set, so building cannot fail; an entry that did would be deleted
        // one by one below, never counted as deleted.
        let mut unbuilt = Vec::new();
        let mut entries = Vec::new();
        for (i, h) in held.iter().enumerate() {
            match DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&h.receipt)
                .build()
            {
                Ok(e) => entries.push(e),
                Err(_) => unbuilt.push(i),
            }
        }
        let result = self
            .client
            .delete_message_batch()
            .queue_url(&self.config.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        let m = &self.observe.metrics;
        let refused: Vec<usize> = match result {
            Ok(out) => {
                m.request(Op::DeleteMessage, Outcome::Ok);
                let mut refused: Vec<usize> = out
                    .failed()
                    .iter()
                    .filter_map(|f| f.id().parse().ok())
                    .collect();
                refused.extend(&unbuilt);
                for (i, h) in held.iter().enumerate() {
                    if !refused.contains(&i) {
                        Metrics::add(&m.sqs_deleted, 1);
                        self.log
                            .debug(format_args!("sqs message {}: deleted", h.message_id));
                    }
                }
                refused
            }
            Err(e) => {
                let (class, text) = describe(self.op(), &e);
                m.request(Op::DeleteMessage, Outcome::Failed(class));
                self.log.debug(format_args!(
                    "sqs: batch delete of {} messages failed ({text}); deleting them one by one",
                    held.len()
                ));
                (0..held.len()).collect()
            }
        };
        for i in refused {
            if let Some(h) = held.get(i) {
                self.delete(&h.message_id, &h.receipt).await;
            }
        }
    }

    fn entrusted(&self, h: &Held) {
        Metrics::add(&self.observe.metrics.sqs_entrusted, 1);
        self.log.info(format_args!(
            "sqs message {}: {} of its objects wait in the ledger for their retry (`status` lists them); the message is deleted",
            h.message_id,
            h.entrusted.len()
        ));
    }

    /// Carries out a verdict.
    pub async fn settle(&self, verdict: Verdict) {
        match verdict {
            Verdict::Delete(h) => self.delete(&h.message_id, &h.receipt).await,
            Verdict::Entrust(h) => {
                self.entrusted(&h);
                self.delete(&h.message_id, &h.receipt).await
            }
            Verdict::Retry(h, after) => {
                Metrics::add(&self.observe.metrics.sqs_returned, 1);
                self.set_visibility(&h.receipt, after).await
            }
            Verdict::Quarantine(h) => {
                Metrics::add(&self.observe.metrics.objects_quarantined, 1);
                for (object, reason) in &h.failed {
                    self.log.error(format_args!(
                        "sqs message {} quarantined after {} receives: {object}: {reason}{}",
                        h.message_id,
                        h.receive_count,
                        if self.config.delete_quarantined {
                            "; message deleted (sqs.delete_quarantined)"
                        } else {
                            "; message left for the queue's redrive policy"
                        }
                    ));
                }
                if self.config.delete_quarantined {
                    self.delete(&h.message_id, &h.receipt).await;
                }
            }
        }
    }
}

/// How long to wait after the `failures`-th failed receive in a row: short and growing for
/// transient failures (up to 5 s), long for a permission or setting problem (10 s, 20 s,
/// 40 s, then every 60 s), which takes a person to fix.
pub fn receive_backoff(class: ErrorClass, failures: u32) -> Duration {
    match class {
        ErrorClass::Transient => crate::read::fetch::backoff(failures),
        ErrorClass::Denied | ErrorClass::Permanent => {
            Duration::from_secs((5u64 << failures.clamp(1, 4)).min(60))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> HashSet<Arc<str>> {
        ids.iter().map(|i| Arc::from(*i)).collect()
    }

    #[test]
    fn deleted_once_every_object_is_shipped() {
        let mut t = Tracker::new(3, true);
        assert!(
            t.hold("m1".into(), "r1".into(), 1, set(&["a", "b"]), vec![])
                .is_none()
        );
        assert!(t.finished("a", None).is_empty());
        let v = t.finished("b", None);
        assert!(matches!(v.as_slice(), [Verdict::Delete(h)] if h.message_id == "m1"));
        assert!(t.is_empty());
    }

    #[test]
    fn failures_retry_then_quarantine() {
        let mut t = Tracker::new(3, true);
        t.hold("m1".into(), "r1".into(), 1, set(&["a"]), vec![]);
        assert!(matches!(
            t.finished("a", Some("gzip")).as_slice(),
            [Verdict::Retry(..)]
        ));
        t.hold("m1".into(), "r2".into(), 3, set(&["a"]), vec![]);
        assert!(matches!(
            t.finished("a", Some("gzip")).as_slice(),
            [Verdict::Quarantine(_)]
        ));
        let v = t.hold(
            "m2".into(),
            "r".into(),
            4,
            set(&[]),
            vec![("x".into(), "denied".into())],
        );
        assert!(matches!(v, Some(Verdict::Quarantine(_))));
    }

    #[test]
    fn denied_receives_back_off_long() {
        let denied: Vec<u64> = (1..=6)
            .map(|n| receive_backoff(ErrorClass::Denied, n).as_secs())
            .collect();
        assert_eq!(denied, [10, 20, 40, 60, 60, 60]);
        for n in 1..10 {
            assert!(receive_backoff(ErrorClass::Transient, n) <= Duration::from_secs(5));
        }
    }

    #[test]
    fn abandoned_objects_let_their_messages_go_and_heartbeat_marks() {
        let mut t = Tracker::new(3, true);
        t.hold("m1".into(), "r1".into(), 1, set(&["a"]), vec![]);
        t.hold("m2".into(), "r2".into(), 1, set(&["a", "b"]), vec![]);
        t.hold("m3".into(), "r3".into(), 1, set(&["c"]), vec![]);
        assert_eq!(t.due(Duration::ZERO).len(), 3);
        assert!(t.due(Duration::from_secs(60)).is_empty());
        assert_eq!(t.abandoned("a").len(), 2);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn objects_left_to_the_ledger_free_their_message() {
        let mut t = Tracker::new(3, true);
        t.hold("m1".into(), "r1".into(), 1, set(&["denied"]), vec![]);
        t.hold(
            "m2".into(),
            "r2".into(),
            1,
            set(&["denied", "good"]),
            vec![],
        );
        let v = t.entrusted("denied", 300);
        assert!(
            matches!(v.as_slice(), [Verdict::Entrust(h)] if h.message_id == "m1" && h.entrusted() == 1),
            "{v:?}"
        );
        assert_eq!(t.len(), 1, "m2 still waits for its other object");
        let v = t.finished("good", None);
        assert!(matches!(v.as_slice(), [Verdict::Entrust(h)] if h.message_id == "m2"));
        assert!(t.is_empty());
    }

    #[test]
    fn with_the_ledger_in_memory_a_message_comes_back_when_its_retry_is_due() {
        let mut t = Tracker::new(3, false);
        t.hold("m1".into(), "r1".into(), 1, set(&["a", "b"]), vec![]);
        assert!(t.entrusted("a", 300).is_empty());
        let v = t.entrusted("b", 40);
        assert!(
            matches!(v.as_slice(), [Verdict::Retry(_, after)] if *after == Duration::from_secs(300)),
            "{v:?}"
        );
    }

    #[test]
    fn a_failure_outranks_an_entrusted_object() {
        let mut t = Tracker::new(3, true);
        t.hold("m1".into(), "r1".into(), 1, set(&["a", "b"]), vec![]);
        t.entrusted("a", 300);
        assert!(matches!(
            t.finished("b", Some("gzip")).as_slice(),
            [Verdict::Retry(..)]
        ));
    }
}
