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
use crate::ledger::{Claimable, Honour};
use crate::object::ObjectRef;
use crate::timestamp::EventTime;

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
    loop {
        tokio::select! {
            _ = core.wait_unpaused() => {}
            _ = stop.changed() => return,
        }
        let now = EventTime::now();
        let pass = audit.pass(Some(&core.ledger), start, now, now).await;
        // A finding is remembered for as long as a pass may read its digest again (passes
        // after a restart read from `start`), and a day more.
        let keep = u32::try_from(
            u64::from(now.secs().saturating_sub(start.secs())).max(core.config.lookback.as_secs()),
        )
        .unwrap_or(u32::MAX)
        .saturating_add(86_400);
        for finding in &pass.findings {
            match core.ledger.first_report(finding, now.secs(), keep) {
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
            if finding.contains("not shipped: ") && finding.contains("is in the bucket") {
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
            "digest: pass over s3://{} done: {} digests tracked, {} findings, {} files to ship",
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
                        sent = tx.send(object) => if sent.is_err() { return },
                        _ = stop.changed() => return,
                    }
                }
                // Claimed meanwhile by a notification or a listing: it ships from there.
                Ok(_) => {}
                Err(e) => core.log.error(format_args!("digest: {}: {e}", object.id)),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.every) => {}
            _ = stop.changed() => return,
        }
    }
}
