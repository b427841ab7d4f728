//! Finding objects to ship: S3 listings, local folders and SQS notifications.
//!
//! Every path claims what it finds in the ledger first, so an object is worked on by one
//! worker at a time and, once finished, is not shipped again while the ledger remembers it.
//! How long that is, and why nothing wanted is passed over, is in `docs/delivery.md`.

use std::path::Path;

use crate::ledger::{Claimable, Honour, Ledger};
use crate::log::Logger;
use crate::object::ObjectRef;
use crate::timestamp::EventTime;

pub mod bucket;
pub mod folder;
pub mod listing;
pub mod notify;
pub mod sink;
pub mod sqs;
mod window;

use bucket::{BucketScan, ScanOutcome};
use folder::FolderScan;
use listing::{S3Lister, SystemClock};
pub use sink::Sink;

/// A listing that failed; the scan goes on with the other prefixes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("listing {location}: {reason}")]
pub struct DiscoverError {
    pub location: String,
    pub reason: String,
}

/// Digest files are never fetched, whatever the expression says.
pub const DIGEST_DIR: &str = "/CloudTrail-Digest/";

/// How many open entries one scan puts back in line at most.
const REQUEUE_LIMIT: usize = 1000;

/// What the engine scans.
pub enum Discovery {
    Bucket(BucketScan<S3Lister, SystemClock>),
    Folder(FolderScan<SystemClock>),
}

impl std::fmt::Display for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Discovery::Bucket(b) => write!(f, "s3://{}", b.lister.bucket),
            Discovery::Folder(d) => write!(f, "{}", d.root.display()),
        }
    }
}

impl Discovery {
    /// One scan, then the open entries that are due (transient failures whose backoff has
    /// passed, objects put back in line, objects in flight at a crash), into `sink`.
    pub async fn scan(
        &mut self,
        ledger: &Ledger,
        log: &Logger,
        sink: &mut Sink<'_>,
    ) -> ScanOutcome {
        let outcome = match self {
            Discovery::Bucket(b) => b.scan_into(ledger, sink).await,
            Discovery::Folder(d) => {
                sink.put(d.scan(ledger).await).await;
                ScanOutcome::default()
            }
        };
        let root = match self {
            Discovery::Folder(d) => Some(d.root.as_path()),
            Discovery::Bucket(_) => None,
        };
        if !sink.is_closed() {
            sink.put(requeue(ledger, EventTime::now().secs(), root, log))
                .await;
        }
        outcome
    }
}

pub(crate) use crate::ledger::holds_watermark;

/// Claims the open entries that are due and not in flight, for another try.
pub fn requeue(ledger: &Ledger, now: u32, root: Option<&Path>, log: &Logger) -> Vec<ObjectRef> {
    let due = match ledger.due(now, REQUEUE_LIMIT) {
        Ok(d) => d,
        Err(e) => {
            log.error(format_args!("{e}"));
            return Vec::new();
        }
    };
    let objects: Vec<ObjectRef> = due
        .iter()
        .filter_map(|(id, e)| {
            let modified = EventTime::new(i64::from(e.modified.0), e.modified.1)
                .unwrap_or_else(EventTime::now);
            ObjectRef::from_id(id, e.size, modified, root)
        })
        .collect();
    let claimable: Vec<Claimable<'_>> = objects
        .iter()
        .map(|o| Claimable {
            id: &o.id,
            size: o.size,
            modified: (o.last_modified.secs(), o.last_modified.nanos()),
            forget_by: None,
        })
        .collect();
    match ledger.claim(&claimable, now, Honour::Backoff) {
        Ok(claimed) => {
            let claimed: std::collections::HashSet<&str> = claimed.iter().map(|s| &**s).collect();
            objects
                .into_iter()
                .filter(|o| claimed.contains(&*o.id))
                .collect()
        }
        Err(e) => {
            log.error(format_args!("{e}"));
            Vec::new()
        }
    }
}
