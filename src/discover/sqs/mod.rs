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

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageSystemAttributeName;

mod tracker;

pub use tracker::{Held, Tracker, Verdict};

use crate::aws::error::{ErrorClass, Operation, describe};
use crate::config::SqsConfig;
use crate::log::{Level, Logger};
use crate::observe::Observe;
use crate::observe::metrics::{Metrics, Op, Outcome};

/// The most entries one batch call takes (`DeleteMessageBatch`,
/// `ChangeMessageVisibilityBatch`): SQS's limit.
pub const BATCH_LIMIT: usize = 10;

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
    /// When SQS first handed the message to a consumer (`ApproximateFirstReceiveTimestamp`),
    /// in Unix seconds: a redelivered notification's age is judged then.
    pub first_received: Option<u32>,
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
        let mut queue = Self {
            client: Client::from_conf(b.build()),
            config,
            log,
            observe,
        };
        queue.within_redrive().await;
        queue
    }

    /// Reads the queue's redrive policy: when SQS would move a message to the dead-letter
    /// queue before `sqs.max_receive_count` receives, a failing message is quarantined at
    /// the queue's threshold instead, so it is logged with its objects and reasons (and
    /// recorded in the ledger) before SQS moves it in silence.
    async fn within_redrive(&mut self) {
        use aws_sdk_sqs::types::QueueAttributeName;
        let got = self
            .client
            .get_queue_attributes()
            .queue_url(&self.config.queue_url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await;
        let policy = match got {
            Ok(out) => out
                .attributes()
                .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
                .cloned(),
            Err(e) => {
                let (_, text) = describe(self.op(), &e);
                self.log.warn(format_args!(
                    "sqs: the queue's redrive policy could not be read ({text}); failing messages are quarantined after sqs.max_receive_count ({}) receives, which must not exceed the queue's own threshold",
                    self.config.max_receive_count
                ));
                return;
            }
        };
        let Some(threshold) = policy.as_deref().and_then(redrive_threshold) else {
            return;
        };
        if threshold < self.config.max_receive_count {
            self.log.warn(format_args!(
                "sqs: the queue moves a message to its dead-letter queue after {threshold} receives, before sqs.max_receive_count ({}): failing messages are quarantined after {threshold} receives instead, so each is logged with its reason first",
                self.config.max_receive_count
            ));
            self.config.max_receive_count = threshold;
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
            .message_system_attribute_names(
                MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
            )
            .send()
            .await;
        let now = crate::timestamp::EventTime::now().secs();
        match result {
            Ok(out) => {
                let m = &self.observe.metrics;
                m.request(Op::ReceiveMessage, Outcome::Ok);
                Metrics::add(&m.sqs_received, out.messages().len() as u64);
                self.observe.health.receive(now, Ok(()));
                // The id list is built only when debug lines are kept.
                if !out.messages().is_empty() && self.log.enabled(Level::Debug) {
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
                            sent: unix_secs(m, MessageSystemAttributeName::SentTimestamp),
                            first_received: unix_secs(
                                m,
                                MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
                            ),
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
                if text.contains("43200") || text.contains("beyond the limit") {
                    // SQS's cap: a message is invisible for at most 12 hours from its receive.
                    self.log.warn(format_args!(
                        "sqs: a message held for 12 hours (SQS's cap) cannot be extended again: it comes back to the queue when its visibility timeout ends, and whichever shipper receives it resumes from the committed position ({text})"
                    ));
                } else {
                    self.log
                        .debug(format_args!("sqs: visibility change failed: {text}"));
                }
            }
        }
    }

    /// Extends the visibility of up to [`BATCH_LIMIT`] held messages in one call (the
    /// heartbeat: an organisation's backlog holds hundreds at once, and one call each would
    /// take a round trip each); entries the batch could not change are tried one by one.
    pub async fn extend_batch(&self, receipts: &[String], after: Duration) {
        use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
        if let [one] = receipts {
            return self.set_visibility(one, after).await;
        }
        let secs = after.as_secs().min(43_200) as i32;
        let entries: Vec<_> = receipts
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .visibility_timeout(secs)
                    .build()
                    .ok()
            })
            .collect();
        let built = entries.len();
        let result = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.config.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        let m = &self.observe.metrics;
        let retry: Vec<usize> = match result {
            Ok(out) if built == receipts.len() => {
                m.request(Op::ChangeMessageVisibility, Outcome::Ok);
                out.failed()
                    .iter()
                    .filter_map(|f| f.id().parse().ok())
                    .collect()
            }
            Ok(_) => {
                m.request(Op::ChangeMessageVisibility, Outcome::Ok);
                (0..receipts.len()).collect()
            }
            Err(e) => {
                let (class, text) = describe(self.op(), &e);
                m.request(Op::ChangeMessageVisibility, Outcome::Failed(class));
                self.log.debug(format_args!(
                    "sqs: visibility change of {} messages failed ({text}); one by one",
                    receipts.len()
                ));
                (0..receipts.len()).collect()
            }
        };
        for i in retry {
            if let Some(r) = receipts.get(i) {
                self.set_visibility(r, after).await;
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

    /// Deletes up to [`BATCH_LIMIT`] messages in one call; the ones it could not delete
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

/// A message's time attribute (milliseconds since the epoch) in Unix seconds.
fn unix_secs(m: &aws_sdk_sqs::types::Message, name: MessageSystemAttributeName) -> Option<u32> {
    m.attributes()?
        .get(&name)?
        .parse::<u64>()
        .ok()
        .and_then(|ms| u32::try_from(ms / 1000).ok())
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

/// `maxReceiveCount` of a queue's `RedrivePolicy` (a JSON document; the count is a string
/// or a number).
fn redrive_threshold(policy: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(policy).ok()?;
    let n = v.get("maxReceiveCount")?;
    let n = n.as_u64().or_else(|| n.as_str()?.parse().ok())?;
    u32::try_from(n).ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_redrive_threshold_is_read_in_either_form() {
        let arn = "arn:aws:sqs:us-east-1:1:dlq";
        let policy = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"3"}}"#);
        assert_eq!(super::redrive_threshold(&policy), Some(3));
        let policy = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":4}}"#);
        assert_eq!(super::redrive_threshold(&policy), Some(4));
        assert_eq!(super::redrive_threshold("{}"), None);
        assert_eq!(super::redrive_threshold("not json"), None);
    }
}
