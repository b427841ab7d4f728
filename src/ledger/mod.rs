//! What has been shipped, kept across restarts: the delivery ledger.
//!
//! One entry per object being worked on or recently finished ([`Entry`]), a low watermark per
//! listed prefix, and a time index for forgetting entries found through SQS or flat
//! listings. The promises it keeps and how are in `docs/delivery.md`.
//!
//! The store is a redb file (`db`): each commit is one write transaction over the entries
//! that changed, so its cost follows the batch, not the state, and a crash at any instant
//! leaves the last committed transaction whole. Without `db` the same tables live in memory.
//! A JSON state file of earlier releases is converted once at start (kept beside as
//! `<db>.v1.json`).
//!
//! This file holds the entries' API (claim, release, commit, retry, due); `store.rs` the file
//! and its transactions; `marks.rs` where listings stand (watermarks, forget lines, time
//! windows); `entry.rs` one entry's form.

mod ahead;
mod commit;
mod entry;
mod findings;
mod legacy;
pub mod mark;
mod marks;
pub mod shared;
mod store;

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

pub use entry::{Entry, Span, Status, holds_watermark};
use marks::time_key;
pub use store::CACHE_BYTES;

use mark::Mark;

/// Object id -> encoded [`Entry`].
const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// Ids of open entries, for re-queueing them without a scan of every entry.
const OPEN: TableDefinition<&str, ()> = TableDefinition::new("open");
/// Listed prefix id -> its low watermark (an object id).
const WATERMARKS: TableDefinition<&str, &str> = TableDefinition::new("watermarks");
/// `group \0 secs(10 digits) \0 id`: when entries of a group may be forgotten.
const TIMES: TableDefinition<&str, ()> = TableDefinition::new("times");
/// Id -> its key in [`TIMES`]: an entry forgotten by time, which a commit keeps even below
/// its prefix's forget line (a late object shipped from its notification, in hybrid mode:
/// a redelivered notification must find it done).
const TIMED: TableDefinition<&str, &str> = TableDefinition::new("timed");
/// Forget lines: listed prefix id -> the id below which done entries were forgotten, and
/// `time:GROUP` -> the time (10 digits) before which they were. Listings never start below
/// them again, whatever `lookback` or `start_time` become, so nothing forgotten is listed
/// (and shipped) again.
const FLOORS: TableDefinition<&str, &str> = TableDefinition::new("floors");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const FORMAT_VERSION: u64 = 2;

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state file {path} is not a state file of this program ({reason}); move it away to start over"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "state file {path} is in use by another running instance; give each instance its own 'db'"
    )]
    InUse { path: PathBuf },
    #[error("state file {path}: {reason}")]
    Store { path: PathBuf, reason: String },
    #[error("ledger table {table}: {reason}")]
    Shared { table: String, reason: String },
}

// The retry policy is a setting's value type; the ledger applies it.
pub use crate::config::Backoff;

/// Whether a claim waits out an open entry's backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Honour {
    /// Listings and re-queues: an object backing off is left alone until it is due.
    Backoff,
    /// An SQS redelivery: the queue's visibility timeout was the wait.
    Redelivery,
}

/// What a commit changed, for counters and SQS verdicts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Committed {
    pub done: u64,
    pub failed: u64,
    pub events: u64,
}

/// An object claimed from a listing or a notification.
#[derive(Debug, Clone)]
pub struct Claimable<'a> {
    pub id: &'a str,
    pub size: u64,
    pub modified: (u32, u32),
    /// The time group it is forgotten by (SQS, flat listings), with its time.
    pub forget_by: Option<(&'a str, u32)>,
}

/// The ledger: the store plus the claims of this run.
pub struct Ledger {
    db: Database,
    path: Option<PathBuf>,
    /// Objects claimed by this run and not finished (not persisted: open entries are).
    inflight: Mutex<HashSet<Arc<str>>>,
    _lock: Option<fs::File>,
    /// With `ledger.dynamodb_table`: the entries live in the shared table, and `db` holds
    /// only what a listing would keep (no listing runs with a shared ledger yet).
    shared: Option<shared::SharedLedger>,
    /// Hybrid mode ([`Ledger::keep_for_notifications`]): a done entry below its prefix's
    /// forget line is forgotten by time, not at once.
    notified: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .field("shared", &self.shared)
            .finish()
    }
}

impl Ledger {
    /// Hybrid mode: notifications name keys the listing also walks, and may come again
    /// (a duplicate, a message handed back at a stop) after the listing's forget line has
    /// passed the key. A done entry that a commit would forget at once because it lies
    /// below that line is kept instead, and forgotten with the `sqs` time group a lookback
    /// later, so such a notification finds it done rather than shipping it again.
    pub fn keep_for_notifications(&self) {
        self.notified
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn inflight(&self) -> MutexGuard<'_, HashSet<Arc<str>>> {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the first-start time if it is not set yet and returns the value in force.
    pub fn first_start_or(&self, now: u32) -> Result<u32, LedgerError> {
        if let Some(sh) = &self.shared {
            return sh.first_start_or(now);
        }
        self.write(|txn| {
            let mut meta = txn.open_table(META)?;
            let v = meta.get("first_start")?.map(|v| v.value());
            Ok(match v {
                Some(v) => u32::try_from(v).unwrap_or(now),
                None => {
                    meta.insert("first_start", u64::from(now))?;
                    now
                }
            })
        })
    }

    /// The entry of an object, if the ledger has one.
    pub fn entry(&self, id: &str) -> Result<Option<Entry>, LedgerError> {
        if let Some(sh) = &self.shared {
            return sh.entry(id);
        }
        self.read(|txn| {
            let t = txn.open_table(OBJECTS)?;
            Ok(t.get(id)?.and_then(|v| Entry::decode(v.value())))
        })
    }

    /// Events of the object already committed: a retry resumes after them.
    pub fn progress(&self, id: &str) -> u64 {
        self.entry(id).ok().flatten().map_or(0, |e| e.position)
    }

    /// Whether the object is done or failed for good.
    pub fn is_finished(&self, id: &str) -> bool {
        self.entry(id)
            .ok()
            .flatten()
            .is_some_and(|e| e.is_finished())
    }

    /// Objects claimed by this run and not finished.
    pub fn inflight_count(&self) -> usize {
        self.inflight().len()
    }

    pub fn is_inflight(&self, id: &str) -> bool {
        self.inflight().contains(id)
    }

    /// Claims objects for shipping, in one transaction: those not finished, not in flight
    /// and, when open, due (`now` past their backoff). Each gets an open entry, so a crash
    /// before it finishes finds it again in the ledger. Returns the ids claimed.
    pub fn claim(
        &self,
        objects: &[Claimable<'_>],
        now: u32,
        backoff: Honour,
    ) -> Result<Vec<Arc<str>>, LedgerError> {
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(sh) = &self.shared {
            // The set is not held across the table's requests (the host's commits need it);
            // two claims of one object at once here are told apart by the table, where the
            // second finds the row already this shipper's.
            let fresh: Vec<Claimable<'_>> = {
                let inflight = self.inflight();
                objects
                    .iter()
                    .filter(|o| !inflight.contains(o.id))
                    .cloned()
                    .collect()
            };
            let claimed = sh.claim(&fresh, now, backoff)?;
            self.inflight().extend(claimed.iter().cloned());
            return Ok(claimed);
        }
        let mut inflight = self.inflight();
        let claimed = self.write_lazy(|txn| {
            let mut table = txn.open_table(OBJECTS)?;
            let mut open = txn.open_table(OPEN)?;
            let mut times = txn.open_table(TIMES)?;
            let mut timed = txn.open_table(TIMED)?;
            let mut claimed = Vec::new();
            for o in objects {
                if inflight.contains(o.id) {
                    continue;
                }
                let existing = table.get(o.id)?.and_then(|v| Entry::decode(v.value()));
                match existing {
                    Some(e) if e.is_finished() => continue,
                    Some(e) if e.not_before > now && backoff == Honour::Backoff => continue,
                    Some(_) => {}
                    None => {
                        let e = Entry::open(o.size, o.modified, now);
                        table.insert(o.id, e.encode().as_slice())?;
                        open.insert(o.id, ())?;
                        if let Some((group, secs)) = o.forget_by {
                            // A row left by an earlier entry of this id (forgotten by another
                            // rule) would forget this one early.
                            let stale = timed.get(o.id)?.map(|v| v.value().to_string());
                            if let Some(stale) = stale {
                                times.remove(stale.as_str())?;
                            }
                            let key = time_key(group, secs, o.id);
                            times.insert(key.as_str(), ())?;
                            timed.insert(o.id, key.as_str())?;
                        }
                    }
                }
                claimed.push(Arc::<str>::from(o.id));
            }
            Ok(claimed)
        })?;
        inflight.extend(claimed.iter().cloned());
        Ok(claimed)
    }

    /// Makes every earlier change durable, the lazy ones ([`Ledger::release`], claims)
    /// included: an SQS message is deleted only after the ledger holds its objects' retries
    /// on disk.
    pub fn sync(&self) -> Result<(), LedgerError> {
        if self.shared.is_some() {
            // Every write to the shared table is durable when acknowledged.
            return Ok(());
        }
        self.write(|_| Ok(()))
    }

    /// Gives a claim back after a transient failure: the entry stays open, with the reason
    /// and a backoff before the next try.
    pub fn release(
        &self,
        id: &str,
        reason: &str,
        backoff: Backoff,
        now: u32,
    ) -> Result<u32, LedgerError> {
        if let Some(sh) = &self.shared {
            let wait = sh.release(id, reason, backoff, now);
            self.inflight().remove(id);
            return wait;
        }
        let wait = self.write_lazy(|txn| {
            let mut table = txn.open_table(OBJECTS)?;
            let mut e = table
                .get(id)?
                .and_then(|v| Entry::decode(v.value()))
                .unwrap_or_else(|| Entry::open(0, (0, 0), now));
            if e.is_finished() {
                return Ok(0);
            }
            let wait = e.back_off(reason, backoff, now);
            table.insert(id, e.encode().as_slice())?;
            txn.open_table(OPEN)?.insert(id, ())?;
            Ok(wait)
        });
        // Let go even when the store failed: the next scan or requeue finds it again.
        self.inflight().remove(id);
        wait
    }

    /// Records what the host now has, in one transaction: progress, objects done, failed
    /// (with the position reached, so a retry resumes) or stopped by a transient error.
    pub fn commit(
        &self,
        marks: &[Mark],
        now: u32,
        abandoned: Backoff,
    ) -> Result<Committed, LedgerError> {
        let mut out = Committed::default();
        if let Some(sh) = &self.shared {
            out = sh.commit(marks, now, abandoned)?;
        } else {
            self.commit_local(marks, now, abandoned, &mut out)?;
        }
        let mut inflight = self.inflight();
        for m in marks.iter().filter(|m| m.end.is_some()) {
            inflight.remove(&m.id);
        }
        Ok(out)
    }

    /// Puts failed objects back in line (status open, position kept, no backoff). `None`
    /// puts back every failed object. Returns how many.
    pub fn retry(&self, ids: Option<&[String]>, now: u32) -> Result<usize, LedgerError> {
        if let Some(sh) = &self.shared {
            return sh.retry(ids, now);
        }
        self.write(|txn| {
            let mut table = txn.open_table(OBJECTS)?;
            let mut open = txn.open_table(OPEN)?;
            let targets: Vec<String> = match ids {
                Some(ids) => ids.to_vec(),
                None => {
                    let mut all = Vec::new();
                    for row in table.iter()? {
                        let (k, v) = row?;
                        if Entry::decode(v.value()).is_some_and(|e| e.status == Status::Failed) {
                            all.push(k.value().to_string());
                        }
                    }
                    all
                }
            };
            let mut n = 0;
            for id in targets {
                let Some(mut e) = table
                    .get(id.as_str())?
                    .and_then(|v| Entry::decode(v.value()))
                else {
                    continue;
                };
                if !e.put_back(now) {
                    continue;
                }
                table.insert(id.as_str(), e.encode().as_slice())?;
                open.insert(id.as_str(), ())?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// Takes a failed object out of the failed state for another try (an SQS redelivery
    /// before its quarantine), keeping its position.
    pub fn unfail(&self, id: &str, now: u32) -> Result<(), LedgerError> {
        self.retry(Some(&[id.to_string()]), now).map(|_| ())
    }

    /// Open entries that are due and not in flight: transient failures whose backoff has
    /// passed, objects put back in line, and, after a crash, objects that were in flight.
    pub fn due(&self, now: u32, limit: usize) -> Result<Vec<(String, Entry)>, LedgerError> {
        if let Some(sh) = &self.shared {
            let inflight = self.inflight().clone();
            return sh.due(now, limit, &inflight);
        }
        let inflight = self.inflight();
        self.read(|txn| {
            let open = txn.open_table(OPEN)?;
            let table = txn.open_table(OBJECTS)?;
            let mut out = Vec::new();
            for row in open.iter()? {
                let (k, _) = row?;
                let id = k.value();
                if inflight.contains(id) {
                    continue;
                }
                let Some(e) = table.get(id)?.and_then(|v| Entry::decode(v.value())) else {
                    continue;
                };
                if e.status == Status::Open && e.not_before <= now {
                    out.push((id.to_string(), e));
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    /// Every entry under an id prefix, in id order (status, `retry --all-failed`, tests).
    pub fn entries_under(&self, id_prefix: &str) -> Result<Vec<(String, Entry)>, LedgerError> {
        if let Some(sh) = &self.shared {
            return sh.entries_under(id_prefix);
        }
        self.read(|txn| {
            let table = txn.open_table(OBJECTS)?;
            let mut out = Vec::new();
            for row in table.range(id_prefix..)? {
                let (k, v) = row?;
                if !k.value().starts_with(id_prefix) {
                    break;
                }
                if let Some(e) = Entry::decode(v.value()) {
                    out.push((k.value().to_string(), e));
                }
            }
            Ok(out)
        })
    }

    /// Statuses of the given ids (one read transaction), `None` where there is no entry.
    pub fn statuses(&self, ids: &[&str]) -> Result<Vec<Option<Status>>, LedgerError> {
        if self.shared.is_some() {
            return ids
                .iter()
                .map(|id| Ok(self.entry(id)?.map(|e| e.status)))
                .collect();
        }
        self.read(|txn| {
            let table = txn.open_table(OBJECTS)?;
            ids.iter()
                .map(|id| {
                    Ok(table
                        .get(*id)?
                        .and_then(|v| Entry::decode(v.value()))
                        .map(|e| e.status))
                })
                .collect()
        })
    }

    /// The entries of these objects, in order (`None`: unknown to the ledger).
    pub fn entries(&self, ids: &[&str]) -> Result<Vec<Option<Entry>>, LedgerError> {
        if self.shared.is_some() {
            return ids.iter().map(|id| self.entry(id)).collect();
        }
        self.read(|txn| {
            let table = txn.open_table(OBJECTS)?;
            ids.iter()
                .map(|id| Ok(table.get(*id)?.and_then(|v| Entry::decode(v.value()))))
                .collect()
        })
    }

    /// Open entries, from the index of them (cheap, unlike [`Ledger::counts`]).
    pub fn open_count(&self) -> Result<u64, LedgerError> {
        if let Some(sh) = &self.shared {
            return sh.open_count();
        }
        self.read(|txn| Ok(txn.open_table(OPEN)?.len()?))
    }

    /// Entries in the ledger, by status: (open, done, failed).
    pub fn counts(&self) -> Result<(u64, u64, u64), LedgerError> {
        if self.shared.is_some() {
            let mut c = (0, 0, 0);
            for (_, e) in self.entries_under("")? {
                match e.status {
                    Status::Open => c.0 += 1,
                    Status::Done => c.1 += 1,
                    Status::Failed => c.2 += 1,
                }
            }
            return Ok(c);
        }
        self.read(|txn| {
            let table = txn.open_table(OBJECTS)?;
            let mut c = (0, 0, 0);
            for row in table.iter()? {
                let (_, v) = row?;
                match Entry::decode(v.value()).map(|e| e.status) {
                    Some(Status::Open) => c.0 += 1,
                    Some(Status::Done) => c.1 += 1,
                    Some(Status::Failed) => c.2 += 1,
                    None => {}
                }
            }
            Ok(c)
        })
    }

    /// Lets a claim go without writing anything (a commit that failed, a task that died):
    /// the object is found again by the next scan or redelivery.
    pub fn let_go(&self, id: &str) {
        if let Some(sh) = &self.shared {
            // Not given up, the lease expires by the lease time instead.
            let _ = sh.let_go(id);
        }
        self.inflight().remove(id);
    }

    /// The shared ledger, when this one is.
    pub fn shared(&self) -> Option<&shared::SharedLedger> {
        self.shared.as_ref()
    }

    /// Whether the object is being shipped by another shipper on the shared ledger (its
    /// last claim here found a live lease).
    pub fn held_elsewhere(&self, id: &str) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|sh| !self.is_inflight(id) && sh.held_elsewhere(id))
    }

    /// Drops this run's claims (a simulated crash in tests; the process dying does the same).
    pub fn forget_claims(&self) {
        if let Some(sh) = &self.shared {
            sh.forget_claims();
        }
        self.inflight().clear();
    }
}

#[cfg(test)]
mod tests;
