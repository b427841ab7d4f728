//! `digest.validate`: a pass over CloudTrail's digests every `digest.every`, each finding
//! logged once (at error, or at warn for a file shipped from its digest; once across
//! restarts and across the shippers of a shared table, as the ledger remembers it), and
//! each file a digest lists that nothing else found within `digest.grace` claimed and
//! shipped here.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::Core;
use crate::digest::audit::{Audit, S3Reader};
use crate::digest::keys::CloudTrailKeys;
use crate::discover::listing::S3Lister;
use crate::engine::handoff::{Chunk, FindingMark, Mark};
use crate::ledger::{Claimable, Honour};
use crate::object::ObjectRef;
use crate::timestamp::EventTime;

/// Digest keys announced by SQS notifications, for the digest loop to read at once
/// (between its listing passes). Bounded: past [`Announced::MAX`] keys waiting, more are
/// left to the next listing pass, which finds every digest anyway.
#[derive(Default)]
pub(super) struct Announced {
    keys: std::sync::Mutex<Vec<String>>,
    bell: tokio::sync::Notify,
}

impl Announced {
    const MAX: usize = 100_000;

    /// Adds a digest key; `false` when too many wait already (left to a listing pass).
    pub(super) fn push(&self, key: String) -> bool {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if keys.len() >= Self::MAX {
            return false;
        }
        keys.push(key);
        drop(keys);
        self.bell.notify_one();
        true
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .keys
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// An integrity finding as a record on the output, beside the events: a JSON object with
/// the finding's time in `eventTime`, as CloudTrail's events have it.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct FindingRecord<'a> {
    event_source: &'static str,
    event_type: &'static str,
    event_time: String,
    severity: &'static str,
    digest_bucket: &'a str,
    finding: &'a str,
}

/// Queues `record` for the output, its mark carrying the finding for its commit. `false`
/// when the engine is stopping.
async fn send_finding(
    core: &Arc<Core>,
    record: &FindingRecord<'_>,
    now: EventTime,
    keep: u32,
) -> bool {
    let json = match serde_json::to_string(record) {
        Ok(json) => json,
        Err(e) => {
            core.log.error(format_args!(
                "digest: cannot write a finding as a record: {e}"
            ));
            return true;
        }
    };
    let bucket: Arc<str> = record.digest_bucket.into();
    let object = ObjectRef::s3(&bucket, String::new(), 0, now);
    let mut bytes = Vec::with_capacity(json.len() + 64);
    let event = crate::read::split::Event {
        index: 0,
        json: &json,
        time: now,
    };
    if let Err(e) = core.encoder.encode(&event, &object, &mut bytes) {
        core.log.error(format_args!(
            "digest: cannot encode a finding as a record: {e}"
        ));
        return true;
    }
    core.findings_in_flight().insert(record.finding.to_string());
    let chunk = Chunk {
        bytes,
        events: 1,
        mark: Mark {
            id: "~finding".into(),
            finding: Some(Arc::new(FindingMark {
                text: record.finding.to_string(),
                keep,
            })),
            ..Mark::default()
        },
    };
    // The queue's push waits while it is full (the host is behind): off the runtime.
    let pushed = {
        let core = core.clone();
        tokio::task::spawn_blocking(move || core.queue.push(chunk)).await
    };
    matches!(pushed, Ok(Ok(())))
}

/// The audit the engine runs.
pub type EngineAudit = Audit<S3Lister, S3Reader, CloudTrailKeys>;

/// Passes read the digests that end after `start` (the shipper's `start_time`): each
/// folder is listed from a day before its newest digest, so a pass costs one LIST per
/// folder and a GET per new digest, not the whole range again.
pub(super) async fn digest_loop(
    core: Arc<Core>,
    (mut audit, start): (EngineAudit, EventTime),
    tx: mpsc::Sender<ObjectRef>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(config) = core.config.digest.clone() else {
        return;
    };
    let announced = core.digests_announced.clone();
    loop {
        tokio::select! {
            _ = core.wait_unpaused() => {}
            _ = stop.changed() => return,
        }
        let now = EventTime::now();
        let pass = audit.pass(Some(&core.ledger), start, now, now).await;
        if !settle_pass(&core, &mut audit, pass, true, (start, now), &tx, &mut stop).await {
            return;
        }
        // Until the next listing pass, digests announced by notifications are read as
        // they come.
        let next = tokio::time::Instant::now() + config.every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => break,
                _ = announced.bell.notified() => {}
                _ = stop.changed() => return,
            }
            tokio::select! {
                _ = core.wait_unpaused() => {}
                _ = stop.changed() => return,
            }
            let keys = announced.take();
            if keys.is_empty() {
                continue;
            }
            let now = EventTime::now();
            let pass = audit
                .announced(Some(&core.ledger), &keys, start, now, now)
                .await;
            if !settle_pass(&core, &mut audit, pass, false, (start, now), &tx, &mut stop).await {
                return;
            }
        }
    }
}

/// Reports a pass's findings (logged, and sent as records when asked) and hands the files
/// found through digests to the workers; `listed` for a listing pass, not one over
/// announced digests. `false` when the engine is stopping.
async fn settle_pass(
    core: &Arc<Core>,
    audit: &mut EngineAudit,
    pass: crate::digest::audit::PassOutcome,
    listed: bool,
    (start, now): (EventTime, EventTime),
    tx: &mpsc::Sender<ObjectRef>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let Some(config) = &core.config.digest else {
        return true;
    };
    // A finding is remembered for as long as a pass may read its digest again (passes
    // after a restart read from `start`), and a day more.
    let keep = u32::try_from(
        u64::from(now.secs().saturating_sub(start.secs())).max(core.config.lookback.as_secs()),
    )
    .unwrap_or(u32::MAX)
    .saturating_add(86_400);
    for finding in &pass.findings {
        // Sent as a record, a finding counts as reported once the host has it (at its
        // commit); until then a later pass leaves it alone.
        let first = if config.findings_as_records {
            if core.findings_in_flight().contains(finding) {
                continue;
            }
            core.ledger.reported_before(finding).map(|before| !before)
        } else {
            core.ledger.first_report(finding, now.secs(), keep)
        };
        match first {
            Ok(true) => {}
            Ok(false) => {
                core.log
                    .debug(format_args!("digest: reported before: {finding}"));
                continue;
            }
            // Said twice rather than not at all.
            Err(e) => core.log.warn(format_args!(
                "digest: {e}; cannot tell whether this finding was reported before"
            )),
        }
        let healed = finding.contains("not shipped: ") && finding.contains("is in the bucket");
        if config.findings_as_records {
            let severity = if healed && config.ship_missing {
                "warning"
            } else {
                "error"
            };
            let record = FindingRecord {
                event_source: "cloudtrail-s3",
                event_type: "IntegrityFinding",
                event_time: now.to_rfc3339(),
                severity,
                digest_bucket: &config.bucket,
                finding,
            };
            if !send_finding(core, &record, now, keep).await {
                return false;
            }
        }
        if healed {
            if config.ship_missing {
                core.log.warn(format_args!(
                    "digest: {finding}: found through its digest, shipping it now"
                ));
            } else {
                core.log.error(format_args!(
                    "digest: {finding}: found through its digest (not shipped from here: digest.ship_missing is off)"
                ));
            }
        } else {
            core.log.error(format_args!("digest: {finding}"));
        }
    }
    if let Some(integrity) = &core.integrity {
        integrity.record(&pass.hours);
    }
    for e in &pass.errors {
        core.log.warn(format_args!(
            "digest: could not check, tried again next pass: {e}"
        ));
    }
    core.log.debug(format_args!(
        "digest: {} s3://{} done: {} digests tracked, {} findings, {} files to ship",
        if listed {
            "pass over"
        } else {
            "announced digests of"
        },
        config.bucket,
        pass.hours.len(),
        pass.findings.len(),
        pass.heal.len()
    ));
    for (location, size) in pass.heal {
        let bucket: Arc<str> = location.bucket.as_str().into();
        let object = ObjectRef::s3(&bucket, location.key, size, now);
        // Forgotten as a notified object is, or by the listing's forget line.
        let forget = core.forget_rule(&object, now.secs());
        let claim = Claimable {
            id: &object.id,
            size,
            modified: (now.secs(), 0),
            forget_by: forget.as_ref().map(|(g, t)| (g.as_str(), *t)),
        };
        match core.ledger.claim(&[claim], now.secs(), Honour::Backoff) {
            Ok(claimed) if !claimed.is_empty() => {
                audit
                    .counts
                    .shipped_from_digests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::select! {
                    sent = tx.send(object) => if sent.is_err() { return false },
                    _ = stop.changed() => return false,
                }
            }
            // Claimed meanwhile by a notification or a listing: it ships from there.
            Ok(_) => {}
            Err(e) => core.log.error(format_args!("digest: {}: {e}", object.id)),
        }
    }
    true
}
