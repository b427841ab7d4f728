//! The SQS side's decisions, apart from the calls that carry them out: which objects of a
//! received message are claimed and what the message waits for ([`hold`]), what a commit
//! means for the messages held ([`after_commit`]), when a message may be deleted
//! ([`ready_to_settle`]), and whether a hybrid notification behind the listing is new
//! ([`behind_listing`]).
//!
//! They take the ledger and the tracker as arguments, so the seeded simulation
//! (`tests/it/simulation/notify.rs`) runs these same rules against its own queue and clock.

use std::collections::HashSet;
use std::time::Duration;

use crate::discover::sqs::{Received, Tracker, Verdict};
use crate::engine::handoff::{End, Mark};
use crate::ledger::{Claimable, Honour, Ledger, Status};
use crate::log::Logger;
use crate::object::ObjectRef;

/// A notified object, as [`hold`] takes it.
pub struct Candidate {
    pub object: ObjectRef,
    /// How it is forgotten once shipped (see `Core::forget_rule`).
    pub forget: Option<(String, u32)>,
}

/// Claims a message's objects that are not finished and holds the message in `tracker`
/// until they are; returns the objects claimed (for the workers), and the verdict when
/// nothing is left pending.
///
/// The caller holds the tracker's lock from before this first looks at the ledger until the
/// message is held: a commit updates the ledger before it tells the tracker, so no object
/// can finish unseen in between.
pub fn hold(
    ledger: &Ledger,
    tracker: &mut Tracker,
    log: &Logger,
    m: Received,
    candidates: Vec<Candidate>,
    max_receive_count: u32,
    now: u32,
) -> (Vec<ObjectRef>, Option<Verdict>) {
    let mut send = Vec::new();
    let mut pending = HashSet::new();
    let mut failed = Vec::new();
    let mut claimable = Vec::new();
    for Candidate { object, forget, .. } in &candidates {
        let entry = match ledger.entry(&object.id) {
            Ok(e) => e,
            Err(e) => {
                log.error(format_args!("{e}"));
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
                if let Err(e) = ledger.unfail(&object.id, now) {
                    log.error(format_args!("{e}"));
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
    let objects: Vec<&ObjectRef> = candidates.iter().map(|c| &c.object).collect();
    let mut elsewhere = Vec::new();
    match ledger.claim(&claimable, now, Honour::Redelivery) {
        Ok(claimed) => {
            let claimed: HashSet<&str> = claimed.iter().map(|s| &**s).collect();
            send.extend(
                objects
                    .iter()
                    .filter(|o| claimed.contains(&*o.id))
                    .map(|o| (*o).clone()),
            );
            // Shared ledger: an object another shipper holds a live lease on is that
            // shipper's to finish. The table answers for it (if that shipper dies, its
            // lease expires and a requeue here or elsewhere takes it over), so the message
            // need not wait: waiting would only climb its receive count.
            let mut unsettled = false;
            for o in &objects {
                if claimed.contains(&*o.id) || !pending.contains(&o.id) || ledger.is_inflight(&o.id)
                {
                    continue;
                }
                if ledger.held_elsewhere(&o.id) {
                    pending.remove(&o.id);
                    elsewhere.push((o.id.clone(), 0));
                    // Counted and logged at info with the message's verdict (entrusted).
                    log.debug(format_args!(
                        "sqs message {}: {} is being shipped by another shipper on the shared ledger, which answers for it: the message is not needed",
                        m.message_id, o.id
                    ));
                    continue;
                }
                // Neither claimed here nor held elsewhere: finished (by another shipper,
                // since it was looked at), or not claimable now (a failed read of the
                // ledger, a stop under way). Look again rather than wait for a commit that
                // will not come here.
                match ledger.entry(&o.id) {
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
                    ledger.let_go(&o.id);
                }
                log.info(format_args!(
                    "sqs message {}: an object could not be claimed now; the message goes back to the queue for another try",
                    m.message_id
                ));
                last_receive(
                    log,
                    &m,
                    max_receive_count,
                    &objects,
                    "its objects could not be claimed",
                );
                return (
                    Vec::new(),
                    Some(Tracker::hand_back(m.message_id, m.receipt, m.receive_count)),
                );
            }
        }
        Err(e) => {
            // Nothing was claimed, so nothing would ever finish the message: it goes back
            // to the queue instead of being held for good.
            log.error(format_args!(
                "sqs message {}: {e}; handed back to the queue for another try",
                m.message_id
            ));
            last_receive(log, &m, max_receive_count, &objects, &e.to_string());
            return (
                Vec::new(),
                Some(Tracker::hand_back(m.message_id, m.receipt, m.receive_count)),
            );
        }
    }
    log.debug(format_args!(
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

/// A message handed back although it has been received as often as the queue allows: the
/// next hand-back may be its last before SQS moves it to the dead-letter queue, so each
/// object it names is logged at error with the reason (nothing in the ledger says so when
/// the ledger is what fails).
fn last_receive(
    log: &Logger,
    m: &Received,
    max_receive_count: u32,
    objects: &[&ObjectRef],
    why: &str,
) {
    if m.receive_count < max_receive_count {
        return;
    }
    for o in objects {
        log.error(format_args!(
            "sqs message {}: received {} times and {why}: {} may go to the queue's dead-letter queue unshipped; redrive it from there once this is fixed",
            m.message_id, m.receive_count, o.id
        ));
    }
}

/// What a commit of `marks` (`committed`: the ledger took it) means for the messages held:
/// an object finished (shipped or failed for good) frees its messages; one abandoned
/// part-way waits in the ledger for its retry, from its position, so its messages do not
/// wait for it; one the ledger did not take lets its messages go back to the queue.
pub fn after_commit(
    tracker: &mut Tracker,
    ledger: &Ledger,
    marks: &[Mark],
    committed: bool,
    now: u32,
) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    for m in marks {
        match &m.end {
            Some(End::Done) if committed => verdicts.extend(tracker.finished(&m.id, None)),
            Some(End::Failed(reason)) if committed => {
                verdicts.extend(tracker.finished(&m.id, Some(reason)))
            }
            Some(End::Abandoned(_)) if committed => {
                let wait = match ledger.entry(&m.id) {
                    Ok(Some(e)) => e.not_before.saturating_sub(now),
                    _ => 0,
                };
                verdicts.extend(tracker.entrusted(&m.id, wait))
            }
            Some(_) => verdicts.extend(tracker.abandoned(&m.id)),
            None => {}
        }
    }
    verdicts
}

/// Verdicts made safe to carry out: a message is deleted with objects still to retry only
/// once the ledger has them on disk (a crash in between would lose them with the message).
/// When that write fails, each such message goes back to the queue instead.
pub fn ready_to_settle(ledger: &Ledger, log: &Logger, verdicts: Vec<Verdict>) -> Vec<Verdict> {
    if !verdicts.iter().any(|v| v.held().entrusted() > 0) {
        return verdicts;
    }
    let Err(e) = ledger.sync() else {
        return verdicts;
    };
    log.error(format_args!(
        "{e}; the SQS messages of objects waiting for a retry are handed back instead of deleted"
    ));
    verdicts
        .into_iter()
        .map(|v| match v {
            Verdict::Entrust(h) | Verdict::Quarantine(h) if h.entrusted() > 0 => {
                Verdict::Retry(h, Duration::from_secs(10))
            }
            v => v,
        })
        .collect()
}

/// Hybrid mode: a notified key the listing of its own bucket also walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behind {
    /// Not behind its prefix's listing horizon (or known to the ledger): the usual rules.
    No,
    /// Behind the horizon, unknown to the ledger, and announced recently: it landed late,
    /// behind the listing, which will never see it, so it ships from the notification.
    Late,
    /// Behind the horizon, unknown to the ledger, and announced longer ago than the
    /// lookback when the message was first received: the listing covered it (shipped and
    /// since forgotten); shipping it again would repeat it.
    Covered,
}

/// When a notification was made and first seen, in Unix seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dated {
    /// The notification's own time (S3's shape); CloudTrail's own notification has none.
    pub time: Option<u32>,
    /// When SQS took the message (`SentTimestamp`).
    pub sent: Option<u32>,
    /// When SQS first handed it to a consumer (`ApproximateFirstReceiveTimestamp`).
    pub first_received: Option<u32>,
    /// How often SQS has handed it out, this time included (`ApproximateReceiveCount`).
    pub receive_count: u32,
}

/// Whether a notified key lies behind its prefix's listing horizon, and if so whether it is
/// new. The notification is dated by its own time, else by when SQS took the message;
/// undated, it ships (a repeat, never a loss). Its age is judged at its first receive, not
/// now: a message first received in time whose claim a crash lost comes back older, and
/// must still ship (the simulation found that loss, `tests/it/simulation/notify.rs`). A
/// redelivery without that time ships too. (A message that keeps coming back for want of a
/// redrive policy may so ship an object the listing forgot again, once the ledger's hybrid
/// keeping, a lookback past the forget line, is over: a repeat, never a loss.)
pub fn behind_listing(
    ledger: &Ledger,
    bucket: &str,
    key: &str,
    lookback: u32,
    dated: Dated,
    now: u32,
) -> Behind {
    let below = crate::discover::bucket::below_horizon(ledger, bucket, key, lookback)
        .unwrap_or(false)
        && matches!(ledger.entry(&crate::object::s3_id(bucket, key)), Ok(None));
    if !below {
        return Behind::No;
    }
    let seen = match dated.first_received {
        Some(f) => f.min(now),
        None if dated.receive_count > 1 => return Behind::Late,
        None => now,
    };
    let recent = dated
        .time
        .or(dated.sent)
        .is_none_or(|t| t >= seen.saturating_sub(lookback));
    if recent {
        Behind::Late
    } else {
        Behind::Covered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u32 = 86_400;

    /// A ledger whose prefix's watermark is on day 20,000, so with a lookback of a day a
    /// key of day 19,990 lies behind the listing horizon.
    fn listed_far_ahead() -> (Ledger, String) {
        let now = 20_000 * DAY;
        let ledger = Ledger::open(None, Some("b"), now).unwrap();
        let region = "AWSLogs/111111111111/CloudTrail/us-east-1/";
        let prefix_id = crate::object::s3_id("b", region);
        let day = |d: i64| format!("{prefix_id}{}", crate::layout::day_path(d));
        ledger
            .advance(
                &prefix_id,
                &format!("{}/x.json.gz", day(20_000)),
                &day(19_999),
            )
            .unwrap();
        let key = format!("{region}{}/late.json.gz", crate::layout::day_path(19_990));
        (ledger, key)
    }

    #[test]
    fn a_notification_is_aged_at_its_first_receive() {
        let (ledger, key) = listed_far_ahead();
        let now = 20_000 * DAY;
        let sent = now - 2 * DAY;
        let at = |first_received| Dated {
            time: None,
            sent: Some(sent),
            first_received,
            receive_count: 2,
        };
        let judge = |d| behind_listing(&ledger, "b", &key, DAY, d, now);
        // First received an hour after it was sent: the object landed late and ships,
        // even on a redelivery two days on (a crash lost the first claim).
        assert_eq!(judge(at(Some(sent + 3600))), Behind::Late);
        // First received now, two days after it was sent: covered by the listing.
        assert_eq!(judge(at(Some(now))), Behind::Covered);
        let first = Dated {
            receive_count: 1,
            ..at(None)
        };
        assert_eq!(judge(first), Behind::Covered);
        // A redelivery whose first receive is unknown: shipped (a repeat, never a loss).
        assert_eq!(judge(at(None)), Behind::Late);
        // However often it came back: aged at its first receive.
        let cycling = Dated {
            receive_count: 60,
            ..at(Some(sent + 3600))
        };
        assert_eq!(judge(cycling), Behind::Late);
        // Undated: ships.
        assert_eq!(judge(Dated::default()), Behind::Late);
        // Known to the ledger, or not behind the horizon: the usual rules.
        let recent = crate::layout::day_path(19_999);
        let ahead = key.replace(&crate::layout::day_path(19_990), &recent);
        assert_eq!(
            behind_listing(&ledger, "b", &ahead, DAY, at(Some(now)), now),
            Behind::No
        );
    }
}
