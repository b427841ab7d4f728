//! The engine: discovery, download and split on a background runtime, feeding a bounded
//! queue that a front end drains.
//!
//! ```text
//!  scan (discover) ──► workers: fetch ─► decode ─► split ─► encode ─► Handoff queue
//!        ▲                                                              │ take()
//!        └──────────── Ledger (db) ◄── commit(marks) ◄── front end hands bytes to host
//! ```
//!
//! The front end owns the only two calls on the hot path: `take` (non-blocking, or with a
//! bounded wait) and `commit` once the host has the bytes. Everything that can block or
//! fail slowly runs on the engine's own threads.
//!
//! One job per file: this one holds the engine's state and its front-end API;
//! `wiring` starts it up; `worker` fetches, splits and encodes objects and commits what
//! the host has; `sqs_side` receives messages, holds them while their objects ship, and
//! settles them in order; `progress` reports backfills and runs the periodic checks;
//! `answer` serves `/metrics` and `/health`; [`handoff`] is the bounded queue between the
//! workers and the front end; `ahead` records, at a graceful stop, what a destination
//! acknowledged behind a batch it left unanswered.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_s3::Client;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::discover::sqs::{Queue, Tracker, Verdict};
use crate::encode::Encoder;
use crate::engine::handoff::{Batch, Handoff, Mark};
use crate::ledger::{Ledger, LedgerError};
use crate::log::Logger;
use crate::observe::Observe;
use crate::observe::metrics::Op;
use crate::timestamp::EventTime;

mod ahead;
mod answer;
mod digests;
pub mod handoff;
pub mod pace;
mod progress;
pub mod reading;
pub mod sqs_rules;
mod sqs_side;
mod wiring;
mod worker;

pub use ahead::Unsettled;
use progress::Backfill;
pub use progress::BackfillProgress;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] LedgerError),
    #[error("could not start the background runtime: {0}")]
    Runtime(std::io::Error),
    #[error("'metrics.listen': cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Running totals, for logs, the CLI's progress line and tests. Objects and events count
/// when delivered (committed), not when read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub scans: u64,
    pub objects_done: u64,
    pub objects_failed: u64,
    pub events: u64,
    pub events_fallback_time: u64,
    pub events_unencodable: u64,
    /// Keys returned by S3 listings: shows how much each scan re-lists.
    pub keys_listed: u64,
    /// LIST requests made.
    pub list_calls: u64,
    /// Keys listed and LIST requests made by the last complete scan: what an idle scan
    /// costs once the listing has caught up.
    pub last_scan_keys_listed: u64,
    pub last_scan_list_calls: u64,
    /// Wanted keys the last complete scan left past its claim limits, for the next.
    pub last_scan_left: u64,
    /// Keys in SQS notifications that `path_expression` does not match.
    pub notices_unmatched: u64,
    /// SQS messages handed back to the queue (a transient failure of a whole message, a
    /// failed commit, a quarantine retry).
    pub sqs_returned: u64,
}

/// What the last complete scan cost.
#[derive(Default)]
struct LastScan {
    keys_listed: AtomicU64,
    list_calls: AtomicU64,
    /// Keys left past the claim limits: the scans are not done with what they found.
    left: AtomicU64,
}

/// First allocation of a chunk buffer.
const CHUNK_START: usize = 16 << 10;

struct Core {
    config: Config,
    queue: Handoff,
    ledger: Ledger,
    log: Logger,
    encoder: Arc<dyn Encoder>,
    client: Option<Client>,
    paused: watch::Sender<bool>,
    observe: Arc<Observe>,
    last_scan: LastScan,
    /// The backfill in progress, if a scan found many objects.
    backfill: Mutex<Option<Backfill>>,
    /// When an unmatched notification key was last logged (rate limit), in Unix seconds.
    unmatched_logged_at: AtomicU64,
    chunk_target: usize,
    /// SQS discovery, when configured; `tracker` holds its messages.
    sqs: Option<Arc<Queue>>,
    tracker: Mutex<Tracker>,
    /// Receivers whose last long poll returned messages (for `is_idle`: none).
    sqs_busy: AtomicUsize,
    /// Receivers that have polled at least once (for `is_idle`: all of them).
    sqs_polled: AtomicUsize,
    /// Whether a listing runs (bucket or folder).
    listing: bool,
    /// SQS verdicts (deletes, visibility changes) sent and not answered yet.
    settling: Arc<watch::Sender<usize>>,
    /// Verdicts for the settler ([`settle_loop`]), which carries them out one call at a
    /// time, deletes in batches.
    settle_tx: mpsc::UnboundedSender<Verdict>,
    /// The digest audit's counters, with `digest.validate`.
    digest_counts: Option<Arc<crate::digest::audit::Counts>>,
    /// Integrity per account and region as the digest passes settled it, with
    /// `digest.validate` (shown by `GET /status`).
    integrity: Option<crate::digest::integrity::Integrity>,
    /// Findings sent as records and not committed yet: a pass meanwhile does not send
    /// them again.
    findings_in_flight: Mutex<std::collections::HashSet<String>>,
    /// Digest keys SQS notifications announced, for the digest loop (`digest.validate`).
    digests_announced: Arc<digests::Announced>,
}

impl Core {
    fn findings_in_flight(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.findings_in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running engine. Dropping it shuts it down.
pub struct Engine {
    core: Arc<Core>,
    runtime: Option<Runtime>,
    stop: watch::Sender<bool>,
    closed: AtomicBool,
    /// The bytes per collect for [`Engine::take_paced`].
    pace: Mutex<pace::BatchSize>,
}

impl Engine {
    /// Takes up to `max_bytes` of encoded records, waiting at most `wait` for the first.
    /// The batch's marks go back through [`Engine::commit`] once the bytes are delivered.
    pub fn take(&self, max_bytes: usize, wait: Duration) -> Option<Batch> {
        let batch = self.core.queue.take(max_bytes, wait)?;
        if !batch.marks.is_empty() {
            self.core.observe.health.taken(EventTime::now().secs());
        }
        Some(batch)
    }

    /// Takes a host's collect: up to the current [`pace::BatchSize`], without waiting. A
    /// batch of records, or nothing ready, moves the size (and the queue's budget with it);
    /// a batch of object endings alone does not count as a collect.
    pub fn take_paced(&self) -> Option<Batch> {
        let mut pace = self.pace.lock().unwrap_or_else(PoisonError::into_inner);
        let before = pace.current();
        let batch = self.take(before, Duration::ZERO);
        let taken = match &batch {
            Some(b) if b.bytes.is_empty() => return batch,
            Some(b) => b.bytes.len(),
            None => 0,
        };
        let size = pace.after_take(taken, self.core.queue.producers_waited());
        if size != before {
            self.core
                .queue
                .set_capacity(size.max(self.core.config.buffer_bytes));
            self.core.log.debug(format_args!(
                "batch size {} -> {} bytes per collect ({})",
                before,
                size,
                if size > before {
                    "downloads wait for the host"
                } else {
                    "caught up"
                }
            ));
        }
        batch
    }

    /// Records that a taken batch was delivered, and saves the state.
    pub fn commit(&self, marks: &[Mark]) {
        self.core.commit(marks)
    }

    /// Stops starting new downloads and scans (Fluent Bit paused the input).
    pub fn pause(&self) {
        self.core.paused.send_replace(true);
        if let Some(shared) = self.core.ledger.shared() {
            shared.set_paused(true);
        }
    }

    pub fn resume(&self) {
        // Downloads that waited for room while the host had paused the input were waiting
        // on the host, not on a backlog: that must not grow the next batch while the host
        // is short of memory.
        self.core.queue.producers_waited();
        self.core.paused.send_replace(false);
        if let Some(shared) = self.core.ledger.shared() {
            shared.set_paused(false);
        }
    }

    /// True when a scan has finished and everything it found is delivered or given up on.
    pub fn is_idle(&self) -> bool {
        let core = &self.core;
        (!core.listing
            || (core.observe.metrics.scans.load(Ordering::Acquire) > 0
                && core.last_scan.left.load(Ordering::Acquire) == 0))
            && (core.sqs.is_none()
                || (core.sqs_busy.load(Ordering::Acquire) == 0
                    && core.sqs.as_ref().is_some_and(|q| {
                        core.sqs_polled.load(Ordering::Acquire) >= q.config.receivers
                    })
                    && core.tracker().is_empty()))
            && core.ledger.inflight_count() == 0
            && core.queue.is_empty()
    }

    pub fn stats(&self) -> Stats {
        let m = &self.core.observe.metrics;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            scans: get(&m.scans),
            objects_done: get(&m.objects_shipped),
            objects_failed: get(&m.objects_failed),
            events: get(&m.events_shipped),
            events_fallback_time: get(&m.events_fallback_time),
            events_unencodable: get(&m.events_unencodable),
            keys_listed: get(&m.keys_listed),
            list_calls: m.requests_of(Op::ListObjects),
            notices_unmatched: get(&m.notices_unmatched),
            sqs_returned: get(&m.sqs_returned),
            last_scan_keys_listed: get(&self.core.last_scan.keys_listed),
            last_scan_list_calls: get(&self.core.last_scan.list_calls),
            last_scan_left: get(&self.core.last_scan.left),
        }
    }

    /// Objects the ledger holds open: found, not shipped yet (waiting out a backoff after a
    /// transient failure, or interrupted). Reads the whole ledger: for exit, not per batch.
    pub fn open_objects(&self) -> u64 {
        if let Some(shared) = self.core.ledger.shared() {
            // A shared table's open rows held by other live shippers are theirs: count the
            // ones nobody else holds (released here for a retry, or given up).
            return shared
                .open_unheld()
                .unwrap_or(self.core.ledger.inflight_count() as u64);
        }
        self.core.ledger.counts().map_or(0, |(open, _, _)| open)
    }

    /// The backfill in progress, when a scan found more than a few hundred objects.
    pub fn backfill(&self) -> Option<BackfillProgress> {
        self.core.backfill_progress()
    }

    pub fn logger(&self) -> &Logger {
        &self.core.log
    }

    /// What the engine observes, for a front end's output to add its own counts and health.
    pub fn observe(&self) -> &Arc<Observe> {
        &self.core.observe
    }

    /// Stops every thread of the engine and saves the state. Records still queued are
    /// dropped; their objects resume from the last committed position on the next start.
    pub fn shutdown(&mut self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.core.queue.close();
        self.stop.send_replace(true);
        if let Some(shared) = self.core.ledger.shared() {
            // Leases given up before the messages go back: the shipper that receives them
            // next resumes from the committed position at once, without waiting out the
            // lease time.
            let kept = shared.let_go_all();
            if kept > 0 {
                self.core.log.warn(format_args!(
                    "{kept} leases could not be given up at stop; other shippers take those objects over after the lease time"
                ));
            }
        }
        if let (Some(rt), Some(queue)) = (&self.runtime, &self.core.sqs) {
            // Messages still held go back to the queue at once, for other consumers, and
            // the deletes of finished ones complete.
            let held = self.core.tracker().drain();
            let queue = queue.clone();
            let mut settling = self.core.settling.subscribe();
            let done = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), async {
                    for h in held {
                        queue.settle(Verdict::Retry(h, Duration::ZERO)).await;
                    }
                    let _ = settling.wait_for(|n| *n == 0).await;
                })
                .await
            });
            if done.is_err() {
                self.core.log.warn(format_args!(
                    "sqs: {} message deletes or hand-backs unanswered after 5 s at shutdown; those messages come back after their visibility timeout: this shipper skips what it shipped and retries the rest, another one on the queue would ship them again",
                    *self.core.settling.borrow()
                ));
            }
            // Objects whose messages were deleted while they wait for a retry live only in
            // this ledger now: say so, so the file is kept (or the objects retried by hand).
            if let Some(shared) = &self.core.config.shared_ledger {
                // Open rows in a shared table are the other shippers' to take over.
                self.core.log.debug(format_args!(
                    "ledger: open objects stay in DynamoDB table {}, for the other shippers and the next start",
                    shared.table
                ));
            } else if let Ok(open) = self.core.ledger.open_count()
                && open > 0
            {
                let db = self.core.config.db.as_ref().map_or_else(
                    || "the ledger (in memory only: lost at exit)".to_string(),
                    |p| p.display().to_string(),
                );
                self.core.log.warn(format_args!(
                    "{open} objects are open in {db}, waiting for a retry or interrupted; those whose SQS messages were deleted are known only there, so keep it for the next start (`cloudtrail-s3 status --db` lists them)"
                ));
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
