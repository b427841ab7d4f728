//! The simulation's SQS queue, and the engine's SQS side run against it.
//!
//! Each object gets a notification when it appears (S3's shape, dated, or CloudTrail's
//! own, undated), after a delay; some are sent twice, some name two objects. The queue
//! keeps SQS's rules: a received message is invisible for the visibility timeout and comes
//! back after it with its receive count raised; only the receipt of the latest receive
//! deletes it or changes its visibility (an older one does nothing); the queue outlives
//! every stop and crash. The shipper's side is the engine's own rules
//! (`cloudtrail_s3::engine::sqs_rules`): `hold` on receive, `after_commit` on commit,
//! `ready_to_settle` before a delete, `behind_listing` in hybrid mode, and the real
//! `Tracker`; the schedule carries out their verdicts some steps later (the engine's settle
//! loop), so a crash can fall between a decision and its SQS call.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cloudtrail_s3::discover::sqs::{Received, Verdict};
use cloudtrail_s3::engine::sqs_rules::{self, Behind};
use cloudtrail_s3::object::{ObjectRef, s3_id};
use cloudtrail_s3::timestamp::EventTime;

use super::{BUCKET, Mutation, Run, Schedule};

/// Where the schedule's objects are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// Listings alone (the engine's `bucket` mode).
    Listing,
    /// SQS notifications alone, with the ledger's own retries.
    Sqs,
    /// Listings and notifications of the same bucket.
    Hybrid,
    /// A local folder laid out like the bucket ([`super::folder`]).
    Folder,
}

/// One SQS message.
#[derive(Debug)]
struct Message {
    keys: Vec<String>,
    /// S3's shape carries the object's time; CloudTrail's own notification none.
    dated: bool,
    /// `SentTimestamp`.
    sent: u32,
    visible_at: u32,
    receive_count: u32,
    /// `ApproximateFirstReceiveTimestamp`.
    first_received: Option<u32>,
    /// The receive whose receipt is current.
    receipt: u64,
}

/// The queue: it lives outside the shipper and survives its stops and crashes.
pub(super) struct SimQueue {
    messages: BTreeMap<String, Message>,
    next_id: u64,
    next_receipt: u64,
    visibility: u32,
    pub(super) max_in_flight: usize,
    max_receive_count: u32,
    delete_quarantined: bool,
    /// Objects whose notification has been sent.
    announced: HashMap<String, ()>,
    /// For each object, the youngest age its notification was first received at: in
    /// hybrid mode a notification older than the lookback is rightly taken as covered by
    /// the listing.
    pub(super) received_age: HashMap<String, u32>,
    pub(super) deleted: u64,
    /// Messages whose deletion was decided and not carried out (still in the settle loop,
    /// or lost in a crash): the SQS counterpart of events delivered and not committed.
    undeleted: HashSet<String>,
}

impl SimQueue {
    pub(super) fn new(rng: &mut crate::simulation::rng::Rng) -> Self {
        Self {
            messages: BTreeMap::new(),
            next_id: 0,
            next_receipt: 0,
            visibility: [60, 300, 1800][rng.below(3) as usize],
            max_in_flight: [2, 4, 100][rng.below(3) as usize],
            max_receive_count: 5,
            delete_quarantined: rng.chance(500),
            announced: HashMap::new(),
            received_age: HashMap::new(),
            deleted: 0,
            undeleted: HashSet::new(),
        }
    }

    fn send(&mut self, keys: Vec<String>, dated: bool, sent: u32, visible_at: u32) {
        self.next_id += 1;
        self.messages.insert(
            format!("m{:05}", self.next_id),
            Message {
                keys,
                dated,
                sent,
                visible_at,
                receive_count: 0,
                first_received: None,
                receipt: 0,
            },
        );
    }

    /// The message a receipt belongs to, when that receipt is still the current one.
    fn current(&mut self, receipt: &str) -> Option<(String, &mut Message)> {
        let (id, n) = receipt.split_once('#')?;
        let n: u64 = n.parse().ok()?;
        let m = self.messages.get_mut(id)?;
        (m.receipt == n).then(|| (id.to_string(), m))
    }
}

impl Schedule {
    /// Sends the notifications of the objects that have appeared (S3 announces each at
    /// least once, after a delay, sometimes twice).
    pub(super) fn announce(&mut self) {
        let Some(q) = self.queue.as_mut() else {
            return;
        };
        let now = self.sim.world().now;
        let fresh: Vec<(String, u32)> = self
            .sim
            .world()
            .objects
            .values()
            .filter(|o| o.appears <= now && !q.announced.contains_key(&o.key))
            .map(|o| (o.key.clone(), o.appears))
            .collect();
        let mut i = 0;
        while i < fresh.len() {
            let (key, appears) = &fresh[i];
            q.announced.insert(key.clone(), ());
            let mut keys = vec![key.clone()];
            // CloudTrail's notification may name several files at once.
            if i + 1 < fresh.len() && self.rng.chance(100) {
                i += 1;
                q.announced.insert(fresh[i].0.clone(), ());
                keys.push(fresh[i].0.clone());
            }
            let dated = self.rng.chance(500);
            // S3 sends it when the object lands, and after a long pause it has waited in
            // the queue since then; or (drawn) it was sent just now (a notification
            // delayed upstream, an object copied in late).
            let sent = if self.rng.chance(200) {
                *appears
            } else {
                (*appears).max(now.saturating_sub(60))
            };
            let delay = self.rng.below(120) as u32;
            q.send(keys.clone(), dated, sent, sent + delay);
            if self.verbose {
                let line = format!("t={now} m{:05}: {keys:?} sent at {sent}", q.next_id);
                self.out.trace.push(line);
            }
            if self.rng.chance(50) {
                let later = self.rng.below(3600) as u32;
                q.send(keys, dated, sent, sent + later);
            }
            i += 1;
        }
    }

    /// The engine's receive: while fewer than `max_in_flight` messages are held, up to 10
    /// visible messages in any order, each read through `sqs_rules::hold`.
    pub(super) fn receive(&mut self, run: &mut Run) {
        self.announce();
        let now = self.now();
        let lookback = self.lookback;
        let Some(q) = self.queue.as_mut() else {
            return;
        };
        if run.tracker.len() >= q.max_in_flight {
            return;
        }
        let mut visible: Vec<String> = q
            .messages
            .iter()
            .filter(|(_, m)| m.visible_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut batch = Vec::new();
        while !visible.is_empty() && batch.len() < 10 {
            let i = self.rng.below(visible.len() as u64) as usize;
            batch.push(visible.swap_remove(i));
        }
        for id in batch {
            let q = self.queue.as_mut().unwrap();
            q.next_receipt += 1;
            let receipt = q.next_receipt;
            let visibility = q.visibility;
            let max_receive_count = q.max_receive_count;
            let m = q.messages.get_mut(&id).unwrap();
            m.receive_count += 1;
            m.receipt = receipt;
            let first_received = *m.first_received.get_or_insert(now);
            // Back although its deletion was decided: what it names may have been finished
            // and forgotten since, and may ship again, as events delivered and not committed
            // do after a crash.
            let came_back = q.undeleted.remove(&id);
            m.visible_at = now + visibility;
            let (keys, dated, sent, receive_count) =
                (m.keys.clone(), m.dated, m.sent, m.receive_count);
            for k in &keys {
                let age = now.saturating_sub(sent);
                q.received_age
                    .entry(k.clone())
                    .and_modify(|a| *a = (*a).min(age))
                    .or_insert(age);
            }
            let mut candidates = Vec::new();
            for key in &keys {
                if !self.expr.matches(key) || key.contains(cloudtrail_s3::discover::DIGEST_DIR) {
                    continue;
                }
                let forget = match self.source {
                    // The listing's forget line covers keys under the prefixes it walks.
                    Source::Hybrid => None,
                    _ => Some(("sqs".to_string(), now)),
                };
                if self.source == Source::Hybrid {
                    let time = dated.then_some(sent);
                    let mut dated = sqs_rules::Dated {
                        time,
                        sent: Some(sent),
                        first_received: Some(first_received),
                        receive_count,
                    };
                    match self.mutation {
                        // The planted bug: an undated notification taken as ancient.
                        Some(Mutation::UndatedNoticeOld) if time.is_none() => {
                            dated.time = Some(0);
                        }
                        // The planted bug: the age judged now, not at the first receive.
                        Some(Mutation::AgedAtThisReceive) => dated.first_received = Some(now),
                        _ => {}
                    }
                    let behind =
                        sqs_rules::behind_listing(&run.ledger, BUCKET, key, lookback, dated, now);
                    if behind == Behind::Covered {
                        self.note(|| format!("{id}: {key} taken as covered by the listing"));
                        continue;
                    }
                }
                let size = self.sim.world().objects[key].events;
                let id = s3_id(BUCKET, key);
                let finished_long_ago = self
                    .out
                    .finished_at
                    .get(key)
                    .is_some_and(|t| *t + lookback <= now);
                if (finished_long_ago || came_back) && run.ledger.entry(&id).unwrap().is_none() {
                    // Shipped a lookback ago or more, and forgotten since: a notification
                    // received that much later (a duplicate that waited in the queue) ships
                    // it again, a repeat `docs/delivery.md` states (never a loss).
                    for i in 0..size {
                        *self.out.repeat_budget.entry((id.clone(), i)).or_default() += 1;
                    }
                    self.note(|| format!("{id}: forgotten, announced again"));
                }
                let bucket: Arc<str> = BUCKET.into();
                let time = EventTime::new(i64::from(sent), 0).unwrap();
                candidates.push(sqs_rules::Candidate {
                    object: ObjectRef::s3(&bucket, key.clone(), size, time),
                    forget,
                });
            }
            let received = Received {
                message_id: id.clone(),
                receipt: format!("{id}#{receipt}"),
                body: String::new(),
                receive_count,
                sent: Some(sent),
                first_received: Some(first_received),
            };
            let (send, verdict) = sqs_rules::hold(
                &run.ledger,
                &mut run.tracker,
                &self.log,
                received,
                candidates,
                max_receive_count,
                now,
            );
            self.note(|| {
                format!(
                    "{id} (receive {receive_count}): {} claimed, verdict {:?}",
                    send.len(),
                    verdict.as_ref().map(verdict_name)
                )
            });
            if self.mutation == Some(Mutation::DeleteOnReceive) && !send.is_empty() {
                // The planted bug: the message is deleted as soon as its objects are
                // claimed, before they are shipped.
                self.queue.as_mut().unwrap().messages.remove(&id);
            }
            run.work.extend(send);
            self.decided(run, verdict.into_iter().collect());
        }
    }

    /// Verdicts the engine decided: made ready (`ready_to_settle`), then carried out by a
    /// later [`Schedule::settle`] step.
    pub(super) fn decided(&mut self, run: &mut Run, verdicts: Vec<Verdict>) {
        if verdicts.is_empty() {
            return;
        }
        if let Some(q) = self.queue.as_mut() {
            for v in &verdicts {
                let deletes = match v {
                    Verdict::Delete(_) | Verdict::Entrust(_) => true,
                    Verdict::Quarantine(_) => q.delete_quarantined,
                    Verdict::Retry(..) => false,
                };
                if deletes {
                    q.undeleted.insert(v.held().message_id.clone());
                }
            }
        }
        let verdicts = if self.mutation == Some(Mutation::EntrustedUnsynced) {
            // The planted bug: messages of objects left to the ledger's retry are deleted
            // without first making the ledger's record of them durable.
            verdicts
        } else {
            sqs_rules::ready_to_settle(&run.ledger, &self.log, verdicts)
        };
        run.settling.extend(verdicts);
    }

    /// The engine's settle loop: carries out some of the verdicts decided, in order.
    pub(super) fn settle(&mut self, run: &mut Run, all: bool) {
        let n = if all {
            run.settling.len()
        } else {
            (1 + self.rng.below(4) as usize).min(run.settling.len())
        };
        let now = self.now();
        for v in run.settling.drain(..n).collect::<Vec<_>>() {
            self.carry_out(v, now);
        }
    }

    fn carry_out(&mut self, v: Verdict, now: u32) {
        let Some(q) = self.queue.as_mut() else {
            return;
        };
        let delete_quarantined = q.delete_quarantined;
        let name = verdict_name(&v);
        let held = v.held();
        let Some((id, m)) = q.current(held.receipt()) else {
            // A stale receipt (the message came back and was received again): SQS does
            // nothing with it.
            return;
        };
        match &v {
            Verdict::Delete(_) | Verdict::Entrust(_) => {
                q.messages.remove(&id);
                q.undeleted.remove(&id);
                q.deleted += 1;
            }
            Verdict::Quarantine(_) if delete_quarantined => {
                q.messages.remove(&id);
                q.undeleted.remove(&id);
                q.deleted += 1;
            }
            Verdict::Quarantine(_) => {}
            Verdict::Retry(_, after) => m.visible_at = now + after.as_secs() as u32,
        }
        self.note(|| format!("{id}: {name} carried out"));
    }

    /// The heartbeat: every held message's visibility is extended.
    pub(super) fn heartbeat(&mut self, run: &mut Run) {
        let now = self.now();
        let Some(q) = self.queue.as_mut() else {
            return;
        };
        let visibility = q.visibility;
        for receipt in run.tracker.due(Duration::ZERO) {
            // SQS refuses to extend a message whose visibility has lapsed
            // (`MessageNotInflight`): it is back in the queue for anyone.
            if let Some((_, m)) = q.current(&receipt)
                && m.visible_at > now
            {
                m.visible_at = now + visibility;
            }
        }
    }

    /// A graceful stop's SQS part: the decided verdicts are carried out (shutdown waits
    /// for them), then every held message goes back to the queue at once.
    pub(super) fn hand_back(&mut self, run: &mut Run) {
        if self.queue.is_none() {
            return;
        }
        self.settle(run, true);
        let now = self.now();
        for h in run.tracker.drain() {
            if let Some(q) = self.queue.as_mut()
                && let Some((_, m)) = q.current(h.receipt())
            {
                m.visible_at = now;
            }
        }
    }

    /// An object waits in the ledger for its retry: its messages stop waiting for it
    /// (`Core::entrust`).
    pub(super) fn entrust(&mut self, run: &mut Run, id: &str, wait: u32) {
        if self.queue.is_none() || self.mutation == Some(Mutation::DeniedHoldsMessage) {
            // The planted bug (when set): the message keeps waiting for an object the
            // ledger retries, taking an in-flight slot.
            return;
        }
        let verdicts = run.tracker.entrusted(id, wait);
        self.decided(run, verdicts);
    }

    /// After a commit: what it means for the messages held (`Core::commit`).
    pub(super) fn committed(&mut self, run: &mut Run, marks: &[super::Mark]) {
        if self.queue.is_none() {
            return;
        }
        let now = self.now();
        let verdicts = sqs_rules::after_commit(&mut run.tracker, &run.ledger, marks, true, now);
        self.decided(run, verdicts);
    }

    /// Nothing left for the SQS side to do: no message held or being settled, and every
    /// message in the queue is quarantined and left for the queue's redrive policy.
    pub(super) fn queue_idle(&self, run: &Run) -> bool {
        let Some(q) = &self.queue else {
            return true;
        };
        run.tracker.is_empty()
            && run.settling.is_empty()
            && q.messages
                .values()
                .all(|m| self.left_for_redrive(q, run, m))
    }

    /// A message quarantined (received `max_receive_count` times and naming an object
    /// failed for good) that stays for the queue's redrive policy.
    fn left_for_redrive(&self, q: &SimQueue, run: &Run, m: &Message) -> bool {
        !q.delete_quarantined
            && m.receive_count >= q.max_receive_count
            && m.keys.iter().any(|k| {
                run.ledger
                    .entry(&s3_id(BUCKET, k))
                    .unwrap()
                    .is_some_and(|e| e.status == cloudtrail_s3::ledger::Status::Failed)
            })
    }

    /// Messages left in the queue after the calm that should not be (any but those
    /// [`Schedule::left_for_redrive`]), and messages still held.
    pub(super) fn check_queue(&self, run: &Run) -> Result<(), String> {
        let Some(q) = &self.queue else {
            return Ok(());
        };
        if !run.tracker.is_empty() {
            return Err(format!(
                "{} messages still held after the calm (stalled)",
                run.tracker.len()
            ));
        }
        for (id, m) in &q.messages {
            if !self.left_for_redrive(q, run, m) {
                return Err(format!(
                    "message {id} for {:?} still in the queue after the calm",
                    m.keys
                ));
            }
        }
        Ok(())
    }
}

fn verdict_name(v: &Verdict) -> &'static str {
    match v {
        Verdict::Delete(_) => "delete",
        Verdict::Retry(..) => "retry",
        Verdict::Quarantine(_) => "quarantine",
        Verdict::Entrust(_) => "entrust",
    }
}
